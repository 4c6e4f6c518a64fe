"""The wrong-password throttle: delays that double up to a cap, per account and per client, reset by the
right password; concurrent guesses checked one at a time; bounded memory and in-flight checks."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from ocean_secret_store.client.throttle import PasswordThrottle, TooManyAttempts, WrongPasswordDelayed
from ocean_secret_store.keyfile import WrongPassword

T = TypeVar("T")

ACCOUNT = b"\x01" * 20
OTHER_ACCOUNT = b"\x02" * 20


def checker(right: str, password: str, counter: list[float] | None = None) -> Callable[[], Awaitable[str]]:
    async def check() -> str:
        if counter is not None:
            counter.append(time.monotonic())
        if password != right:
            raise WrongPassword("wrong password for the account", "0xAccount")
        return "unlocked"

    return check


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def test_delays_double_up_to_the_cap() -> None:
    throttle = PasswordThrottle(0.25, 4.0)
    assert [throttle.delay_for(n) for n in range(8)] == [0, 0.25, 0.5, 1, 2, 4, 4, 4]
    assert throttle.delay_for(10_000) == 4.0
    with pytest.raises(ValueError, match="delays"):
        PasswordThrottle(1.0, 0.5)
    with pytest.raises(ValueError, match="at least 1"):
        PasswordThrottle(max_waiting=0)


def test_a_wrong_password_is_answered_after_the_delay_and_the_right_one_at_once() -> None:
    async def scenario() -> tuple[list[float], float]:
        throttle = PasswordThrottle(0.02, 0.08)
        delays = []
        for _ in range(4):
            start = time.monotonic()
            with pytest.raises(WrongPasswordDelayed) as caught:
                await throttle.attempt(ACCOUNT, "1.2.3.4", checker("right", "guess"))
            assert caught.value.address == "0xAccount" and "guess" not in str(caught.value)
            assert time.monotonic() - start >= caught.value.delay * 0.9
            delays.append(caught.value.delay)
        # the client waited for each answer: the right password is not delayed, and resets the counters
        start = time.monotonic()
        assert await throttle.attempt(ACCOUNT, "1.2.3.4", checker("right", "right")) == "unlocked"
        right_took = time.monotonic() - start
        assert len(throttle) == 0
        return delays, right_took

    delays, right_took = run(scenario())
    assert delays == pytest.approx([0.02, 0.04, 0.08, 0.08], abs=0.005)
    assert right_took < 0.02


def test_concurrent_guesses_are_checked_one_by_one() -> None:
    async def scenario() -> list[float]:
        throttle = PasswordThrottle(0.05, 0.05)
        checked: list[float] = []
        guesses = [throttle.attempt(ACCOUNT, f"10.0.0.{i}", checker("right", f"guess{i}", checked)) for i in range(6)]
        outcomes = await asyncio.gather(*guesses, return_exceptions=True)
        assert all(isinstance(outcome, WrongPasswordDelayed) for outcome in outcomes)
        return checked

    checked = run(scenario())
    # Six clients, one account: the first check is immediate, then one per delay.
    gaps = [later - earlier for earlier, later in itertools.pairwise(checked)]
    assert len(checked) == 6 and min(gaps) >= 0.045


def test_one_client_spraying_accounts_is_paced_too() -> None:
    async def scenario() -> list[float]:
        throttle = PasswordThrottle(0.05, 0.05)
        checked: list[float] = []
        for account in (ACCOUNT, OTHER_ACCOUNT):
            with pytest.raises(WrongPasswordDelayed):
                await throttle.attempt(account, "10.0.0.1", checker("right", "guess", checked))
        sprayed = [throttle.attempt(bytes([i]) * 20, "10.0.0.1", checker("right", "guess", checked))
                   for i in range(3, 7)]
        await asyncio.gather(*sprayed, return_exceptions=True)
        return checked

    checked = run(scenario())
    gaps = [later - earlier for earlier, later in itertools.pairwise(checked)]
    assert min(gaps) >= 0.045


def test_another_client_and_account_are_not_delayed() -> None:
    async def scenario() -> float:
        throttle = PasswordThrottle(0.2, 0.2)
        with pytest.raises(WrongPasswordDelayed):
            await throttle.attempt(ACCOUNT, "10.0.0.1", checker("right", "guess"))
        start = time.monotonic()
        await throttle.attempt(OTHER_ACCOUNT, "10.0.0.2", checker("right", "right"))
        return time.monotonic() - start

    assert run(scenario()) < 0.1


def test_too_many_checks_in_flight_from_one_client() -> None:
    async def scenario() -> list[str | BaseException]:
        throttle = PasswordThrottle(0.02, 0.02, max_waiting=3)
        guesses = [throttle.attempt(ACCOUNT, "10.0.0.1", checker("right", "guess")) for _ in range(5)]
        outcomes = await asyncio.gather(*guesses, return_exceptions=True)
        # and once they are answered, the client may try again
        with pytest.raises(WrongPasswordDelayed):
            await throttle.attempt(ACCOUNT, "10.0.0.1", checker("right", "guess"))
        assert not throttle._waiting and not throttle._locks  # nothing left behind
        return outcomes

    outcomes = run(scenario())
    assert sum(isinstance(o, TooManyAttempts) for o in outcomes) == 2
    assert sum(isinstance(o, WrongPasswordDelayed) for o in outcomes) == 3


def test_memory_is_bounded_and_counters_are_forgotten() -> None:
    now = [1000.0]
    throttle = PasswordThrottle(0.0, 0.0, forget_after=60, max_entries=10, clock=lambda: now[0])

    async def spray() -> None:
        for i in range(50):
            with pytest.raises(WrongPasswordDelayed):
                await throttle.attempt(i.to_bytes(20, "big"), f"10.0.{i}.1", checker("right", "guess"))

    run(spray())
    assert len(throttle) == 10
    now[0] += 61
    assert throttle._gate((("account", (49).to_bytes(20, "big")),)) == 0  # forgotten: no gate
