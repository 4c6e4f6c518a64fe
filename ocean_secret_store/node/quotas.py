"""The quotas of one key server: how fast and how often a requester or a client address may have
keys generated here, and how many sessions the node runs at once; a request over a limit is
refused with HTTP 429 (Too Many Requests), a Parity-style quoted text and a ``Retry-After``.

Key generation is the one operation anybody may ask for (no ACL applies to a new key id), and
every key costs every node a DKG and disk for good: so each node rate-limits the generations it
is the entry node for, per requester (the address recovered from the signature) and per client
address, with token buckets (a burst, then a steady refill), and can cap the generations one
requester may start on it. The session cap bounds everything the node works on at once, as entry
and as member: over it, the entry node answers 429 and a member refuses to open a session, which
its entry node reports as 429 (generation, storing) or replaces like any failed member
(retrieval, signing).

State is in memory and bounded: at most ``tracked`` requesters and as many client addresses are
remembered, the least recently seen dropped first (a dropped bucket had usually refilled anyway,
and a dropped count starts again at zero). Counts are since the node started.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from ..exceptions import TooManyRequests

__all__ = [
    "RETRY_AFTER_COUNT",
    "TOO_MANY_REQUESTS_STATUS",
    "WIRE_NAME",
    "GenerationQuota",
    "KeyedBuckets",
    "QuotaSettings",
    "SessionCap",
    "TooManyRequests",
    "retry_after_header",
]

TOO_MANY_REQUESTS_STATUS: Final = TooManyRequests.status
#: The error name a member puts in its ErrorReply when it refuses a session over its cap (our
#: nodes only: Parity's enum has no such variant, so it is not in KEY_SERVER_ERRORS).
WIRE_NAME: Final = "TooManyRequests"
#: Retry-After of a refusal that waiting does not lift (a requester's generation count is spent).
RETRY_AFTER_COUNT: Final = 3600.0
#: Retry-After of a refusal over the session cap: sessions last at most the session timeout.
RETRY_AFTER_SESSIONS: Final = 1.0

KeyT = TypeVar("KeyT")
Clock = Callable[[], float]


def retry_after_header(error: TooManyRequests) -> str:
    """The ``Retry-After`` value: whole seconds (RFC 9110 delay-seconds), at least 1."""
    return str(max(1, math.ceil(error.retry_after)))


def _seconds(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


@dataclass(frozen=True)
class QuotaSettings:
    """The ``[quotas]`` settings of a node (the defaults leave benches and the test suite alone).

    A burst of 0 switches that rate limit off; a count or cap of 0 means unlimited.
    """

    #: key generations one requester may start on this node at once, then ``requester_rate`` per second
    requester_burst: int = 40
    requester_rate: float = 1.0
    #: the same for one client address (all requesters behind it)
    address_burst: int = 400
    address_rate: float = 10.0
    #: key generations one requester may start on this node in all (since start; 0: unlimited)
    requester_generations: int = 0
    #: sessions this node runs at once, as entry and as member (0: unlimited)
    max_sessions: int = 256
    #: requesters (and, separately, client addresses) whose buckets and counts are remembered
    tracked: int = 10_000
    #: seconds a refused generation is held before its 429 (at most its Retry-After): a client that
    #: ignores Retry-After slows itself down instead of costing the node a refusal per round trip
    refusal_delay: float = 1.0
    #: the administrator's generations (signed by ``[node] admin_public``) pass the rate limits and
    #: counts: the operator's bulk loads (``POST /server_key_batch`` naming each key's owner-to-be)
    admin_exempt: bool = True

    @classmethod
    def unlimited(cls) -> QuotaSettings:
        """No quota at all (for comparison runs)."""
        return cls(requester_burst=0, address_burst=0, requester_generations=0, max_sessions=0)


class KeyedBuckets(Generic[KeyT]):
    """Token buckets by key: ``burst`` tokens, refilled at ``rate`` per second; one token per request.

    At most ``capacity`` buckets are kept, the least recently used dropped first; a key without a
    bucket has a full one, so only a key that was busy within the last ``burst / rate`` seconds
    loses anything when dropped.
    """

    def __init__(self, burst: int, rate: float, capacity: int) -> None:
        if burst < 0 or rate < 0 or capacity < 1:
            raise ValueError("burst and rate must be >= 0 and capacity >= 1")
        self.burst = burst
        self.rate = rate
        self.capacity = capacity
        self._buckets: OrderedDict[KeyT, tuple[float, float]] = OrderedDict()  # key -> (tokens, as of)

    @property
    def enabled(self) -> bool:
        return self.burst > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: KeyT, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return float(self.burst)
        tokens, stamp = entry
        return min(float(self.burst), tokens + max(0.0, now - stamp) * self.rate)

    def wait(self, key: KeyT, now: float) -> float:
        """Seconds until ``key`` has a token (0: it has one now; ``inf``: never, a burst without refill)."""
        if not self.enabled:
            return 0.0
        missing = 1.0 - self._tokens(key, now)
        if missing <= 0:
            return 0.0
        return missing / self.rate if self.rate > 0 else math.inf

    def take(self, key: KeyT, now: float) -> None:
        """Spend one token of ``key`` (call after :meth:`wait` said 0)."""
        if not self.enabled:
            return
        self._buckets[key] = (self._tokens(key, now) - 1.0, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.capacity:
            self._buckets.popitem(last=False)


class _Counts(Generic[KeyT]):
    """Counters by key, at most ``capacity`` of them (least recently counted dropped first)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._counts: OrderedDict[KeyT, int] = OrderedDict()

    def get(self, key: KeyT) -> int:
        return self._counts.get(key, 0)

    def add(self, key: KeyT) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1
        self._counts.move_to_end(key)
        while len(self._counts) > self.capacity:
            self._counts.popitem(last=False)

    def __len__(self) -> int:
        return len(self._counts)


class GenerationQuota:
    """Admits or refuses one key generation for which this node is the entry node."""

    def __init__(self, settings: QuotaSettings, clock: Clock = time.monotonic, admin: bytes | None = None) -> None:
        self.settings = settings
        self._clock = clock
        #: the administrator's address when its generations pass (``admin_exempt``), else None
        self.admin = admin if settings.admin_exempt else None
        self.requesters: KeyedBuckets[bytes] = KeyedBuckets(settings.requester_burst, settings.requester_rate,
                                                            settings.tracked)
        self.addresses: KeyedBuckets[str] = KeyedBuckets(settings.address_burst, settings.address_rate,
                                                         settings.tracked)
        self.counts: _Counts[bytes] = _Counts(settings.tracked)
        self.admitted = 0
        self.refused = 0

    def admit(self, requester: bytes | None, address: str | None) -> None:
        """Spend one generation of ``requester`` (None: its signature does not recover, the core
        refuses it) from client ``address`` (None: unknown), or raise :class:`TooManyRequests`.

        Nothing is spent when the request is refused, so a refused flood does not push the
        requester's own retry further away. The administrator (``admin_exempt``) is admitted
        without spending anything, its client address's bucket included: its signature names it.
        """
        if requester is not None and requester == self.admin:
            self.admitted += 1
            return
        now = self._clock()
        try:
            self._check(requester, address, now)
        except TooManyRequests:
            self.refused += 1
            raise
        if address is not None:
            self.addresses.take(address, now)
        if requester is not None:
            self.requesters.take(requester, now)
            if self.settings.requester_generations:
                self.counts.add(requester)
        self.admitted += 1

    async def admit_or_hold(self, requester: bytes | None, address: str | None) -> None:
        """:meth:`admit`, but a refusal is raised only after ``refusal_delay`` (at most its Retry-After).

        A request costs the node its parsing and one signature recovery, refused or not; a flood
        that does not wait for Retry-After would keep the node busy refusing. Held, each of the
        flood's connections makes at most one request per delay, at the cost of a sleeping task.
        """
        try:
            self.admit(requester, address)
        except TooManyRequests as exc:
            await asyncio.sleep(min(exc.retry_after, self.settings.refusal_delay))
            raise

    def _check(self, requester: bytes | None, address: str | None, now: float) -> None:
        limit = self.settings.requester_generations
        if requester is not None and limit and self.counts.get(requester) >= limit:
            raise TooManyRequests(
                f"this requester has had its {limit} key generations on this key server", RETRY_AFTER_COUNT,
                "requester_generations",
            )
        if address is not None:
            wait = self.addresses.wait(address, now)
            if wait > 0:
                raise TooManyRequests(
                    f"key generation rate for this client address exceeded; retry in {_seconds(wait)} s",
                    min(wait, RETRY_AFTER_COUNT), "address_rate",
                )
        if requester is not None:
            wait = self.requesters.wait(requester, now)
            if wait > 0:
                raise TooManyRequests(
                    f"key generation rate for this requester exceeded; retry in {_seconds(wait)} s",
                    min(wait, RETRY_AFTER_COUNT), "requester_rate",
                )


class SessionCap:
    """How many sessions this node runs at once, as entry and as member; ``limit`` 0: no cap."""

    def __init__(self, limit: int = 0) -> None:
        if limit < 0:
            raise ValueError("the session cap must be >= 0")
        self.limit = limit
        self.active = 0
        self.refused = 0

    @property
    def full(self) -> bool:
        return bool(self.limit) and self.active >= self.limit

    def refusal(self, who: str = "this key server") -> TooManyRequests:
        """The error of a session refused over the cap (counted); ``who`` names the node for a peer."""
        self.refused += 1
        return TooManyRequests(
            f"{who} is running its limit of {self.limit} concurrent sessions; "
            f"retry in {_seconds(RETRY_AFTER_SESSIONS)} s",
            RETRY_AFTER_SESSIONS,
        )

    def admit(self) -> None:
        """Raise :class:`TooManyRequests` if a new session would exceed the cap."""
        if self.full:
            raise self.refusal()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Count one running session for the length of the block (admitted or not: see :meth:`admit`)."""
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
