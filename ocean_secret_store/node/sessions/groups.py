"""Consensus groups: which holders an operation asks, and hedging around the slow ones.

An operation that needs ``t`` other holders (decryption, Schnorr signing; ECDSA signing needs
``2t``) runs *attempts*. An attempt is one complete run with one fixed group and fresh secrets of
its own (a new access key, new nonces, new sub-sharings): the group's Lagrange coefficients are
inside what every member returns, and for shadow decryption inside blobs encrypted to the
requester, so a member's answer is valid for its group only and answers of two groups never mix.
:func:`hedged` starts the first attempt and then:

* a member that **fails** (refuses, errors, disconnects) ends its attempt at once; it is dropped
  and a new attempt starts with a spare in its place;
* a member that is **slow** (has not answered within the hedge delay, an estimate of its round
  trip: :mod:`ocean_secret_store.node.liveness`) is suspected, and a new attempt starts beside
  the running one, with spares in place of the slow members;
* the first attempt to complete wins; the others are cancelled (members forget their state of a
  cancelled attempt: nonces are cancelled, late answers are dropped).

The operation's session timeout bounds the whole run, all attempts together. The tally of
refusals that Parity's consensus error is chosen from (protocol.md §6.10) is kept across attempts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ...exceptions import AccessDenied, ConsensusTemporaryUnreachable, KeyServerError
from .base import Core, unreachable

T = TypeVar("T")
ResultT = TypeVar("ResultT")


class MemberFailures(Exception):
    """Members of an attempt failed; the attempt is over."""

    def __init__(self, failures: Mapping[bytes, BaseException]) -> None:
        super().__init__(f"{len(failures)} member(s) failed")
        self.failures = dict(failures)


@dataclass(eq=False)
class Attempt:
    """One run with one fixed group: ``chosen`` are the other members (the entry node is the last)."""

    chosen: tuple[bytes, ...]
    answered: set[bytes] = field(default_factory=set)
    round_started: float = 0.0
    #: Members that did their part of the current round but whose answer is still out (it waits on
    #: other members: an ECDSA member that dealt waits for every other member's dealing).
    progressed: set[bytes] = field(default_factory=set)

    @property
    def waiting(self) -> list[bytes]:
        """The members the current round still waits for: those that did not even do their part
        yet, if any (they are the slow ones), else every member whose answer is still out."""
        pending = [n for n in self.chosen if n not in self.answered]
        behind = [n for n in pending if n not in self.progressed]
        return behind or pending

    def progress(self, node: bytes) -> None:
        """``node`` did its part of the current round; its answer may still wait on others."""
        self.progressed.add(node)

    async def _mark(self, node: bytes, answer: Awaitable[T]) -> T:
        result = await answer
        self.answered.add(node)
        return result

    async def round(self, requests: Mapping[bytes, Awaitable[T]]) -> dict[bytes, T]:
        """Await one request per member; the first failure ends the round (MemberFailures), the
        requests still out are abandoned."""
        self.answered = set()
        self.progressed = set()
        self.round_started = asyncio.get_running_loop().time()
        if not requests:
            return {}  # threshold 0: the entry node alone
        tasks = {asyncio.ensure_future(self._mark(node, answer)): node for node, answer in requests.items()}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failures = {tasks[t]: exc for t in done if (exc := t.exception()) is not None}
            if failures:
                raise MemberFailures(failures)
            return {tasks[t]: t.result() for t in done}
        finally:
            for task in tasks:
                task.cancel()


async def requests_away() -> None:
    """Yield until the requests of a round just started as a task (``ensure_future(attempt.round(…))``)
    are written to their sockets, so that the caller's own part runs while the members work.

    Two loop iterations: in the first the round's task starts one task per member, in the second
    each of those writes its request. (After one, the caller's part ran before any request had
    left, and its time was added to the round trip.)
    """
    for _ in range(2):
        await asyncio.sleep(0)


@dataclass(slots=True)
class Group:
    """The ``t`` other members an operation asks next, the spares that may replace them, and the
    tally of refusals Parity's consensus error is chosen from."""

    chosen: list[bytes]
    spares: list[bytes]
    threshold: int
    holders: int
    fatal: int = 0
    rejects: int = 0

    @classmethod
    def pick(cls, core: Core, holders: Iterable[bytes], threshold: int) -> Group:
        """``threshold`` holders (this node excluded), preferring connected and unsuspected ones
        (at random among equals), the rest as spares; peers still connecting are candidates too."""
        holders = list(holders)
        candidates = core.candidates(n for n in holders if n != core.node_id)
        if len(candidates) < threshold:
            raise unreachable(len(holders), threshold, 0, 0)
        return cls(candidates[:threshold], candidates[threshold:], threshold, len(holders))

    def _reorder_spares(self, core: Core) -> None:
        # Suspicion and connections change while an operation runs: best spares first, always.
        self.spares = core.candidates(self.spares)

    def replace(self, core: Core, failures: Mapping[bytes, BaseException]) -> None:
        """Drop the members that failed and top up from the spares; or raise Parity's consensus
        error when too few remain. An AccessDenied counts as a lasting refusal."""
        self.rejects += len(failures)
        self.fatal += sum(isinstance(err, AccessDenied) for err in failures.values())
        self.chosen = [n for n in self.chosen if n not in failures]
        self._reorder_spares(core)
        self.spares = [n for n in self.spares if n not in failures]
        while len(self.chosen) < self.threshold and self.spares:
            self.chosen.append(self.spares.pop(0))
        if len(self.chosen) < self.threshold:
            raise unreachable(self.holders, self.threshold, self.fatal, self.rejects)

    def hedge(self, core: Core, slow: Iterable[bytes]) -> bool:
        """Put spares in place of the ``slow`` members (they become the last spares); False if
        there is no spare to put in."""
        self._reorder_spares(core)
        slow = [n for n in slow if n in self.chosen]
        if not slow or not self.spares:
            return False
        fresh = list(self.spares)  # a slow member moved out now is never put back in by this hedge
        for node in slow:
            if not fresh:
                break
            spare = fresh.pop(0)
            self.spares.remove(spare)
            self.chosen[self.chosen.index(node)] = spare
            self.spares.append(node)
        return True


async def hedged(core: Core, group: Group, run: Callable[[Attempt], Coroutine[Any, Any, ResultT]], *,
                 extra_delay: float = 0.0) -> ResultT:
    """Run attempts of ``run`` over ``group`` until one completes (see the module's description).

    ``extra_delay``: seconds added to every hedge delay, for work a member does beyond a round trip
    (a batch of many keys)."""
    loop = asyncio.get_running_loop()
    running: dict[asyncio.Task[ResultT], Attempt] = {}

    def launch() -> Attempt:
        attempt = Attempt(tuple(group.chosen), round_started=loop.time())
        running[asyncio.ensure_future(run(attempt))] = attempt
        return attempt

    latest = launch()
    last_error: KeyServerError | None = None
    # The round a hedge could not help (no spare for its slow members): poll, never spin, until
    # something completes or the deadline.
    stuck: tuple[Attempt, float] | None = None
    try:
        while running:
            waiting = latest.waiting
            delay = core.hedge_delay(waiting or latest.chosen) + extra_delay
            can_hedge = waiting and group.spares and stuck != (latest, latest.round_started)
            timeout = max(latest.round_started + delay - loop.time(), 0.0) if can_hedge else delay
            done, _ = await asyncio.wait(running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                slow = latest.waiting
                if slow and loop.time() - latest.round_started >= delay:
                    core.suspect(slow)
                    if group.hedge(core, slow):
                        latest = launch()
                    else:
                        stuck = (latest, latest.round_started)
                continue
            for task in done:
                running.pop(task)
                exc = task.exception()
                if exc is None:
                    return task.result()
                if not isinstance(exc, MemberFailures):
                    raise exc
                try:
                    group.replace(core, exc.failures)
                except KeyServerError as error:
                    last_error = error  # too few left: unless a running attempt completes, this is the answer
                    continue
                if tuple(group.chosen) not in {a.chosen for a in running.values()}:
                    latest = launch()
            if running and latest not in running.values():
                latest = list(running.values())[-1]  # hedge around the newest attempt still running
        raise last_error or ConsensusTemporaryUnreachable()
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
