"""Slows down password guessing on the JSON-RPC face: a growing delay per account and per client address.

Every method of the face that takes a password (``secretstore_*``, ``personal_sign``,
``personal_unlockAccount``, ``personal_sendTransaction``) checks it through
:meth:`PasswordThrottle.attempt`. A wrong password is answered only after a delay that doubles
with each consecutive failure on the same account or from the same client address (by default
0.25 s, 0.5 s, 1 s, ... up to 4 s), and no further password of that account or that client is
checked before the delay has passed, so concurrent or batched guesses wait their turn instead of
multiplying the rate. The right password resets both counters and is never delayed by its own
account's history when the client waited for its previous answer (a mistyped password costs the
person who mistyped it one delay). It is a delay, not a lockout: nobody is ever refused for
having guessed wrong, only slowed down, so an attacker cannot lock a user out for long; while an
attack on an account is under way its user's calls wait for the same gate (at most the cap per
queued guess).

Memory is bounded: counters are forgotten ``forget_after`` seconds after their last failure, at
most ``max_entries`` are kept (the oldest dropped first), and a client address may have at most
``max_waiting`` password checks in flight (more are refused at once with :class:`TooManyAttempts`
rather than queued).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Final, TypeVar

from ..keyfile import WrongPassword

__all__ = [
    "DEFAULT_FIRST_DELAY",
    "DEFAULT_MAX_DELAY",
    "PasswordThrottle",
    "TooManyAttempts",
    "WrongPasswordDelayed",
]

#: The delay after a first wrong password, in seconds; it doubles with each further one.
DEFAULT_FIRST_DELAY: Final = 0.25
#: The longest delay, in seconds.
DEFAULT_MAX_DELAY: Final = 4.0
#: Counters are forgotten this long after their last failure.
DEFAULT_FORGET_AFTER: Final = 600.0
#: At most this many counters are kept (accounts plus client addresses).
DEFAULT_MAX_ENTRIES: Final = 10_000
#: Password checks one client address may have in flight (a Parity-era client makes one at a time).
DEFAULT_MAX_WAITING: Final = 16

T = TypeVar("T")


class WrongPasswordDelayed(WrongPassword):
    """A wrong password, answered after ``delay`` seconds; the next check waits as long."""

    def __init__(self, message: str, address: str | None, delay: float) -> None:
        super().__init__(message, address)
        self.delay = delay


class TooManyAttempts(Exception):
    """The client address already has the maximum number of password checks in flight."""


@dataclass
class _Counter:
    failures: int = 0
    not_before: float = 0.0  # time.monotonic(): no password of this key is checked earlier
    last_failure: float = 0.0


class PasswordThrottle:
    """Per-account and per-client backoff for password checks (one per RPC app; event-loop bound)."""

    def __init__(
        self,
        first_delay: float = DEFAULT_FIRST_DELAY,
        max_delay: float = DEFAULT_MAX_DELAY,
        *,
        forget_after: float = DEFAULT_FORGET_AFTER,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_waiting: int = DEFAULT_MAX_WAITING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if first_delay < 0 or max_delay < first_delay:
            raise ValueError("the wrong-password delays must satisfy 0 <= first delay <= maximum delay")
        if max_entries < 1 or max_waiting < 1:
            raise ValueError("max_entries and max_waiting must be at least 1")
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_entries = max_entries
        self.max_waiting = max_waiting
        self._clock = clock
        self._counters: OrderedDict[Hashable, _Counter] = OrderedDict()
        self._locks: dict[bytes, tuple[asyncio.Lock, int]] = {}
        self._waiting: dict[str, int] = {}

    def delay_for(self, failures: int) -> float:
        """The delay after ``failures`` consecutive wrong passwords (0 for none)."""
        if failures <= 0:
            return 0.0
        return min(self.max_delay, self.first_delay * 2.0 ** min(failures - 1, 64))

    def __len__(self) -> int:
        return len(self._counters)

    def _get(self, key: Hashable) -> _Counter | None:
        counter = self._counters.get(key)
        if counter is not None and self._clock() - counter.last_failure > self.forget_after:
            del self._counters[key]
            return None
        return counter

    def _fail(self, key: Hashable, now: float) -> float:
        counter = self._get(key)
        if counter is None:
            counter = self._counters[key] = _Counter()
        self._counters.move_to_end(key)
        counter.failures += 1
        counter.last_failure = now
        delay = self.delay_for(counter.failures)
        counter.not_before = max(counter.not_before, now + delay)
        while len(self._counters) > self.max_entries:
            self._counters.popitem(last=False)
        return counter.not_before - now

    def _gate(self, keys: tuple[Hashable, ...]) -> float:
        """Seconds until every key allows a check (0: now)."""
        now = self._clock()
        waits = [counter.not_before - now for key in keys if (counter := self._get(key)) is not None]
        return max([0.0, *waits])

    async def attempt(self, account: bytes, client: str, check: Callable[[], Awaitable[T]]) -> T:
        """Run ``check`` (a password check of ``account`` asked by ``client``) when the throttle allows.

        ``check`` raises :class:`WrongPassword` for a wrong password: that is re-raised as
        :class:`WrongPasswordDelayed` once its delay has passed. Raises :class:`TooManyAttempts`
        at once if ``client`` already has ``max_waiting`` checks in flight.
        """
        waiting = self._waiting.get(client, 0)
        if waiting >= self.max_waiting:
            raise TooManyAttempts(
                f"too many password checks in flight from this client address (at most {self.max_waiting})"
            )
        self._waiting[client] = waiting + 1
        lock, users = self._locks.get(account) or (asyncio.Lock(), 0)
        self._locks[account] = (lock, users + 1)
        keys: tuple[Hashable, ...] = (("account", account), ("client", client))
        try:
            # One check per account at a time, each after the gate: guesses sent together are
            # checked one by one, at the pace of the delays, whatever the client's concurrency.
            async with lock:
                while (wait := self._gate(keys)) > 0:
                    await asyncio.sleep(wait)
                client_counter = self._get(keys[1])
                if client_counter is not None and client_counter.failures:
                    # Reserve the client's next slot now: its checks of other accounts wait too.
                    now = self._clock()
                    client_counter.not_before = now + self.delay_for(client_counter.failures)
                try:
                    result = await check()
                except WrongPassword as exc:
                    now = self._clock()
                    delay = max(self._fail(key, now) for key in keys)
                    failure: WrongPasswordDelayed | None = WrongPasswordDelayed(str(exc), exc.address, delay)
                else:
                    failure = None
                    for key in keys:
                        self._counters.pop(key, None)
            if failure is not None:
                # Hold the answer for the delay: a client that waits for it finds the gate open.
                await asyncio.sleep(failure.delay)
                raise failure
            return result
        finally:
            left = self._waiting[client] - 1
            if left:
                self._waiting[client] = left
            else:
                del self._waiting[client]
            lock, users = self._locks[account]
            if users > 1:
                self._locks[account] = (lock, users - 1)
            else:
                del self._locks[account]
