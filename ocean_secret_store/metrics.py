"""Every Prometheus metric our servers export (the key servers, the JSON-RPC face, the provider), the
aiohttp middleware that counts and times HTTP requests, and ``GET /metrics`` in the Prometheus text
format, made by the prometheus-client library (``generate_latest``), never by hand.

Each service instance owns a :class:`~prometheus_client.CollectorRegistry` (never the library's
global one: tests run several key servers in one process) and passes it explicitly to the metrics it
defines. The services record into the classes below; which value each metric takes, and what to
alert on, is in docs/metrics.md.

Cardinality is bounded by construction. An HTTP route label is the route's pattern
(``/shadow/{key_id}/{signature}``), never the raw path: a key server's paths carry key ids and
requester signatures, the provider's queries carry consume signatures. A request that matched no
route is ``unmatched``. Every other label takes its values from a fixed set named here (session
kinds, outcomes, quotas, JSON-RPC method names); anything outside a set becomes ``other``. No key
id, address, signature, password or secret is ever a label or a value.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from .exceptions import (
    AccessDenied,
    ConsensusTemporaryUnreachable,
    ConsensusUnreachable,
    DocumentKeyAlreadyStored,
    DocumentKeyIsNotFound,
    KeyServerError,
    NodeDisconnected,
    ServerKeyAlreadyGenerated,
    ServerKeyIsNotFound,
)

__all__ = [
    "LATENCY_BUCKETS",
    "METRICS_PATH",
    "OTHER",
    "PREFIX",
    "ROUTE",
    "UNMATCHED",
    "CountingAudit",
    "HttpMetrics",
    "NodeMetrics",
    "ProviderMetrics",
    "RecentOperations",
    "RpcMetrics",
    "bounded",
    "exposition",
    "metrics_handler",
    "outcome_of",
    "service_registry",
]

log = logging.getLogger(__name__)

#: The namespace of every metric name.
PREFIX: Final = "ocean_secret_store"
METRICS_PATH: Final = "/metrics"
#: The route label of a request that matched no route (or was refused before it was parsed).
UNMATCHED: Final = "unmatched"
#: A label value outside its fixed set.
OTHER: Final = "other"
#: The status label of a request whose client went away before it was answered (nginx's convention).
CLIENT_CLOSED: Final = "499"
#: Seconds: a loopback probe takes a millisecond, a DKG or a consume tens to hundreds, a session
#: gives up at its timeout (5 s by default), a proxied download may take a minute.
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                          60.0)

HTTP_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})

#: The route a handler names for its request, where the router's pattern says nothing (the key
#: server serves Parity's API from one catch-all route and parses the path itself).
ROUTE: Final = web.RequestKey("ocean_secret_store.metrics.route", str)

Refresh = Callable[[], Awaitable[None]]


def service_registry(*, process: bool = True) -> CollectorRegistry:
    """A registry for one service instance; with ``process``, the library's process (CPU, memory,
    open files), Python platform and garbage collector metrics too (a process runs one service)."""
    registry = CollectorRegistry()
    if process:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry


def bounded(value: str, allowed: Collection[str], other: str = OTHER) -> str:
    """``value`` if it is one of ``allowed``, else ``other``: a label never takes a caller's free text."""
    return value if value in allowed else other


def exposition(registry: CollectorRegistry) -> web.Response:
    """The registry's samples in the Prometheus text format."""
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def metrics_handler(registry: CollectorRegistry,
                    refresh: Refresh | None = None) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The ``GET /metrics`` handler; ``refresh`` first sets the gauges read from the service's state."""

    async def handle(request: web.Request) -> web.Response:
        if refresh is not None:
            await refresh()
        return exposition(registry)

    return handle


# -- HTTP, every service --------------------------------------------------------------------------


def route_of(request: web.Request) -> str:
    """The route label: what the handler named (:data:`ROUTE`), else the router's pattern."""
    named = request.get(ROUTE)
    if named is not None:
        return named
    resource = request.match_info.route.resource
    return UNMATCHED if resource is None else resource.canonical


class _Children:
    """``metric.labels(*values)``, remembered: every label value comes from a fixed set (``bounded``,
    route patterns, message kinds), so there are few; prometheus_client's ``labels`` takes a lock and
    checks and builds its key on each call, several times a request on the hot path."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class HttpMetrics:
    """Requests by route pattern, method and status, and their latency by route."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(f"{PREFIX}_http_requests", "HTTP requests answered, by route pattern, method and "
                                "status", ("route", "method", "status"), registry=registry)
        self.latency = Histogram(f"{PREFIX}_http_request_duration_seconds", "Time from a request's head to its "
                                 "answer (for a streamed answer: to its end), by route pattern", ("route",),
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self._requests, self._latency = _Children(self.requests), _Children(self.latency)

    def observe(self, route: str, method: str, status: str, seconds: float) -> None:
        self._requests(route, bounded(method, HTTP_METHODS), status).inc()
        self._latency(route).observe(seconds)

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        started = time.perf_counter()
        status = "500"
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            status = str(exc.status)
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        else:
            # A FileResponse not yet sent reads 200 here, also if it will answer 206 to a Range.
            status = str(response.status)
            return response
        finally:
            self.observe(route_of(request), request.method, status, time.perf_counter() - started)


# -- the key server -------------------------------------------------------------------------------

#: The public operations a key server runs as entry node (the audit log's operation names).
SESSION_KINDS: Final = frozenset({
    "generate_server_key", "store_document_key", "generate_document_key", "retrieve_server_key",
    "retrieve_document_key", "retrieve_document_key_shadow", "retrieve_document_key_shadow_batch", "schnorr_sign",
    "generate_server_key_batch",
    "ecdsa_sign",
    "admin_change", "admin_refresh", "admin_repair",
})
#: How a session (or a member's part in one) ended. ``consensus_unreachable`` is also how Parity
#: reports the entry node's own ACL refusal of a retrieval or signing (the access checks count
#: the refusals as such); ``access_denied`` is a member's refusal or an author check.
OUTCOMES: Final = ("ok", "access_denied", "consensus_unreachable", "temporary_unreachable", "timeout",
                   "node_disconnected", "too_many_requests", "not_found", "already_exists", "bad_request", "error",
                   "cancelled")
#: The quotas of a key server (node/quotas.py) whose refusals are counted.
QUOTAS: Final = ("requester_generations", "address_rate", "requester_rate", "sessions", "peer_sessions")
ACCESS_OUTCOMES: Final = ("allowed", "denied", "failed")
PEER_STATES: Final = ("connected", "connecting", "missing", "suspected")
AUDIT_ROLES: Final = frozenset({"entry", "member"})
AUDIT_DECISIONS: Final = frozenset({"ok", "allowed", "refused", "failed"})
_TOO_MANY_REQUESTS: Final = 429


def outcome_of(exc: BaseException | None) -> str:
    """The outcome label of a session or member request that ended with ``exc`` (None: it succeeded)."""
    if exc is None:
        return "ok"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if not isinstance(exc, KeyServerError):
        return "error"
    if isinstance(exc.__cause__, TimeoutError):  # the session timeout, or a member's request timeout
        return "timeout"
    by_class: tuple[tuple[type[KeyServerError] | tuple[type[KeyServerError], ...], str], ...] = (
        (AccessDenied, "access_denied"),
        (ConsensusUnreachable, "consensus_unreachable"),
        (ConsensusTemporaryUnreachable, "temporary_unreachable"),
        (NodeDisconnected, "node_disconnected"),
        ((ServerKeyIsNotFound, DocumentKeyIsNotFound), "not_found"),
        ((ServerKeyAlreadyGenerated, DocumentKeyAlreadyStored), "already_exists"),
    )
    for classes, outcome in by_class:
        if isinstance(exc, classes):
            return outcome
    if exc.status == _TOO_MANY_REQUESTS:
        return "too_many_requests"
    return "bad_request" if exc.status == 400 else "error"


#: The public operations whose latency the status page shows: the retrievals.
RETRIEVALS: Final = ("retrieve_server_key", "retrieve_document_key", "retrieve_document_key_shadow")


@dataclass(slots=True)
class _Minute:
    """One minute of :class:`RecentOperations`: counts by (kind, outcome), sampled retrieval latencies."""

    index: int
    counts: Tally[tuple[str, str]] = field(default_factory=Tally)
    latencies: list[float] = field(default_factory=list)
    retrievals: int = 0


def _percentile(ordered: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile of a sorted, non-empty sequence."""
    rank = max(math.ceil(percent / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def _latency_figures(latencies: list[float]) -> dict[str, float | int | None]:
    ordered = sorted(latencies)
    if not ordered:
        return {"samples": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}
    return {"samples": len(ordered), "p50_ms": round(_percentile(ordered, 50) * 1e3, 3),
            "p95_ms": round(_percentile(ordered, 95) * 1e3, 3), "max_ms": round(ordered[-1] * 1e3, 3)}


class RecentOperations:
    """The public operations a key server ran in the last minutes, for its status page (``GET /status``).

    One bucket per minute, the last ``minutes`` kept: counts by kind and outcome (both from the fixed
    sets above: nothing a requester chose), and the durations of the retrievals that succeeded, at
    most ``samples_per_minute`` of them per minute (a uniform sample beyond that), so that memory is
    bounded whatever the request rate. Never a key id, an address or a signature: there is no place
    for one.
    """

    def __init__(self, minutes: int = 15, samples_per_minute: int = 2048,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.minutes = minutes
        self.samples_per_minute = samples_per_minute
        self._clock = clock  # buckets follow this one (it never jumps); ``wall`` only dates them
        self._wall = wall
        self._buckets: deque[_Minute] = deque()
        self._random = random.Random()  # which latencies a busy minute keeps: sampling, not cryptography

    def _current(self) -> _Minute:
        index = int(self._clock() // 60)
        if not self._buckets or self._buckets[-1].index != index:
            self._buckets.append(_Minute(index))
        while self._buckets[0].index <= index - self.minutes:
            self._buckets.popleft()
        return self._buckets[-1]

    def record(self, kind: str, outcome: str, seconds: float) -> None:
        """One operation ended (``kind`` and ``outcome`` already bounded to their sets)."""
        bucket = self._current()
        bucket.counts[kind, outcome] += 1
        if kind in RETRIEVALS and outcome == "ok":
            bucket.retrievals += 1
            if len(bucket.latencies) < self.samples_per_minute:
                bucket.latencies.append(seconds)
            else:  # reservoir sampling: each retrieval of the minute kept with the same chance
                slot = self._random.randrange(bucket.retrievals)
                if slot < self.samples_per_minute:
                    bucket.latencies[slot] = seconds

    def summary(self, latency_minutes: int = 5) -> dict[str, Any]:
        """Counts of the last :attr:`minutes` by kind and outcome, and the successful retrievals'
        latency (milliseconds) in each of the last ``latency_minutes`` minutes (newest first, each
        with the unix time it began) and over them all."""
        now = self._current().index
        into_minute = self._clock() - now * 60
        wall = self._wall()
        operations: dict[str, dict[str, int]] = {}
        for bucket in self._buckets:
            for (kind, outcome), count in bucket.counts.items():
                by_outcome = operations.setdefault(kind, {})
                by_outcome[outcome] = by_outcome.get(outcome, 0) + count
        by_index = {bucket.index: bucket for bucket in self._buckets}
        per_minute = []
        pooled: list[float] = []
        for age in range(latency_minutes):
            minute = by_index.get(now - age, _Minute(now - age))
            pooled += minute.latencies
            per_minute.append({"minutes_ago": age, "started": round(wall - into_minute - 60 * age, 3),
                               "retrievals": minute.retrievals, **_latency_figures(minute.latencies)})
        return {
            "window_minutes": self.minutes,
            "total": sum(sum(by_outcome.values()) for by_outcome in operations.values()),
            "by_kind": {kind: dict(sorted(by_outcome.items())) for kind, by_outcome in sorted(operations.items())},
            "retrieval_latency": {"window_minutes": latency_minutes, "minutes": per_minute,
                                  "overall": {"retrievals": sum(m["retrievals"] for m in per_minute),
                                              **_latency_figures(pooled)}},
        }


class NodeState(Protocol):
    """What :meth:`NodeMetrics.refresh` reads of a key server at each scrape (the cluster core)."""

    @property
    def others(self) -> tuple[bytes, ...]: ...

    @property
    def servers_set(self) -> tuple[bytes, ...]: ...

    def peer_states(self) -> Mapping[bytes, str]:
        """Every peer: ``connected``, ``connecting`` or ``missing``."""
        ...

    def suspected(self) -> frozenset[bytes]: ...

    def readiness(self) -> Mapping[str, object]: ...

    def running_sessions(self) -> int: ...

    def storage_figures(self) -> tuple[int, int]:
        """(keys held, database bytes on disk); blocking (a SQLite count): run off the event loop."""
        ...


class NodeMetrics:
    """A key server's metrics: HTTP, sessions as entry node and as member, access checks, quota
    refusals, audit writes; and, set at each scrape, peers, readiness, keys held and database size."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.http = HttpMetrics(r)
        self.sessions = Counter(f"{PREFIX}_sessions", "Public operations this node ran as entry node, by kind "
                                "and outcome (refusals before any session included)", ("kind", "outcome"), registry=r)
        self.session_latency = Histogram(f"{PREFIX}_session_duration_seconds", "Time of the public operations this "
                                         "node ran as entry node, by kind", ("kind",), buckets=LATENCY_BUCKETS,
                                         registry=r)
        self.member_requests = Counter(f"{PREFIX}_member_requests", "Requests of other nodes this node served as "
                                       "a session member, by message kind and outcome", ("kind", "outcome"),
                                       registry=r)
        self.access_checks = Counter(f"{PREFIX}_access_checks", "This node's access checker decisions: allowed, "
                                     "denied, or failed (the checker could not decide: a refusal)", ("outcome",),
                                     registry=r)
        self.quota_refusals = Counter(f"{PREFIX}_quota_refusals", "Requests refused with 429 by a quota, by quota",
                                      ("quota",), registry=r)
        self.audit_writes = Counter(f"{PREFIX}_audit_writes", "Lines written to the audit log, by role and "
                                    "decision", ("role", "decision"), registry=r)
        self.audit_failures = Counter(f"{PREFIX}_audit_write_failures", "Audit lines that could not be written",
                                      registry=r)
        self.peers = Gauge(f"{PREFIX}_peers", "Peers of this node by connection state; suspected: connected or "
                           "not, hedged around or silent (counted in their connection state too)", ("state",),
                           registry=r)
        self.ready = Gauge(f"{PREFIX}_ready", "1 when GET /ready answers 200 (enough usable peers), else 0",
                           registry=r)
        self.servers_set = Gauge(f"{PREFIX}_servers_set_nodes", "Nodes in the servers set as this node sees it",
                                 registry=r)
        self.running_sessions = Gauge(f"{PREFIX}_running_sessions", "Sessions this node runs now, as entry and "
                                      "as member", registry=r)
        self.keys = Gauge(f"{PREFIX}_keys", "Server keys this node holds a share of", registry=r)
        self.database_bytes = Gauge(f"{PREFIX}_database_bytes", "Size of the key database on disk (with its "
                                    "write-ahead log), bytes", registry=r)
        self.records_to_migrate = Gauge(f"{PREFIX}_records_to_migrate", "Records of a schema <= 5 database the "
                                        "background migration has still to convert (0: none)", registry=r)
        #: The last minutes of sessions by kind and outcome, for the status page (not exported).
        self.recent = RecentOperations()
        self._sessions, self._session_latency = _Children(self.sessions), _Children(self.session_latency)
        self._member_requests, self._access_checks = _Children(self.member_requests), _Children(self.access_checks)
        self._audit_writes = _Children(self.audit_writes)
        for outcome in ACCESS_OUTCOMES:
            self.access_checks.labels(outcome)
        for quota in QUOTAS:
            self.quota_refusals.labels(quota)

    @contextmanager
    def session(self, kind: str) -> Iterator[None]:
        """Count and time the session run in the block, by how it ends."""
        started = time.perf_counter()
        label = bounded(kind, SESSION_KINDS)
        outcome = "ok"
        try:
            yield
        except BaseException as exc:
            outcome = outcome_of(exc)
            raise
        finally:
            seconds = time.perf_counter() - started
            self._sessions(label, outcome).inc()
            self._session_latency(label).observe(seconds)
            self.recent.record(label, outcome, seconds)

    def member_request(self, kind: str, exc: BaseException | None) -> None:
        """A member's part ended (``kind``: the message kind, from the fixed set of request messages)."""
        self._member_requests(kind, outcome_of(exc)).inc()

    def access_check(self, outcome: str) -> None:
        self._access_checks(bounded(outcome, ACCESS_OUTCOMES)).inc()

    def quota_refused(self, quota: str) -> None:
        self.quota_refusals.labels(bounded(quota, QUOTAS)).inc()

    def audit_written(self, role: str, decision: str) -> None:
        self._audit_writes(bounded(role, AUDIT_ROLES), bounded(decision, AUDIT_DECISIONS)).inc()

    async def refresh(self, node: NodeState) -> None:
        """Set the gauges from ``node``'s state now (before a scrape)."""
        states = node.peer_states()
        counts = dict.fromkeys(PEER_STATES, 0)
        for peer in node.others:
            counts[states.get(peer, "missing")] += 1
        counts["suspected"] = len(node.suspected())
        for state, count in counts.items():
            self.peers.labels(state).set(count)
        self.ready.set(1 if node.readiness().get("ready") else 0)
        self.servers_set.set(len(node.servers_set))
        self.running_sessions.set(node.running_sessions())
        keys: float
        size: float
        try:
            keys, size = await asyncio.to_thread(node.storage_figures)
        except Exception as exc:  # noqa: BLE001 -- a broken database must not blind the scrape: NaN says "unknown"
            log.warning("metrics: the key storage could not be read: %s", type(exc).__name__)
            keys = size = math.nan
        self.keys.set(keys)
        self.database_bytes.set(size)


class _Audit(Protocol):
    """A key server's audit log (node/audit.py's ``Audit``)."""

    def record(self, operation: str, key_id: bytes, requester: bytes | None, role: str, decision: str,
               reason: str = "") -> None: ...


class CountingAudit:
    """An audit log that counts each line written by role and decision, and each write that failed."""

    def __init__(self, inner: _Audit, metrics: NodeMetrics) -> None:
        self.inner = inner
        self.metrics = metrics

    def record(self, operation: str, key_id: bytes, requester: bytes | None, role: str, decision: str,
               reason: str = "") -> None:
        try:
            self.inner.record(operation, key_id, requester, role, decision, reason)
        except BaseException:
            self.metrics.audit_failures.inc()
            raise
        self.metrics.audit_written(role, decision)


# -- the JSON-RPC face ----------------------------------------------------------------------------

#: The method label of a request whose method could not be read.
INVALID_METHOD: Final = "invalid"


class RpcMetrics:
    """The JSON-RPC face's metrics: HTTP, and calls by method and outcome with their latency.

    ``methods`` are the method names that may be labels (served and forwarded ones); any other
    method a client sends is ``other``. ``outcomes`` names the JSON-RPC error codes (the face's
    own): an answer with one of them counts as that outcome, with another code as ``error``.
    """

    def __init__(self, methods: Collection[str], outcomes: Mapping[int, str],
                 registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.methods = frozenset(methods)
        self.outcomes = dict(outcomes)
        self.http = HttpMetrics(self.registry)
        self.calls = Counter(f"{PREFIX}_rpc_calls", "JSON-RPC calls by method and outcome (forwarded: passed to "
                             "the chain as they are)", ("method", "outcome"), registry=self.registry)
        self.latency = Histogram(f"{PREFIX}_rpc_call_duration_seconds", "Time of the JSON-RPC calls answered here "
                                 "(not forwarded), by method", ("method",), buckets=LATENCY_BUCKETS,
                                 registry=self.registry)

    def method_label(self, method: object) -> str:
        return bounded(method, self.methods) if isinstance(method, str) else INVALID_METHOD

    def forwarded(self, method: object) -> None:
        self.calls.labels(self.method_label(method), "forwarded").inc()

    def notified(self, method: object) -> None:
        """A notification (no id) was handled: nothing was answered, whatever its outcome."""
        self.calls.labels(self.method_label(method), "notification").inc()

    def answered(self, method: object, error_code: int | None, seconds: float | None = None) -> None:
        """A call answered here: ``error_code`` None for a result; ``seconds`` None when not timed."""
        label = self.method_label(method)
        outcome = "ok" if error_code is None else self.outcomes.get(error_code, "error")
        self.calls.labels(label, outcome).inc()
        if seconds is not None:
            self.latency.labels(label).observe(seconds)


# -- the provider ---------------------------------------------------------------------------------

#: Consume outcomes by the HTTP status of the refusal (anything else: ``error``).
CONSUME_OUTCOMES: Final[Mapping[int, str]] = {
    400: "bad_request", 401: "refused", 403: "not_an_asset_file", 404: "unknown_asset", 502: "upstream_failed",
    503: "unavailable", int(CLIENT_CLOSED): "client_gone",
}
#: Publish outcomes likewise.
PUBLISH_OUTCOMES: Final[Mapping[int, str]] = {
    400: "bad_request", 401: "bad_signature", 403: "not_the_owner", 409: "key_exists", 501: "not_supported",
    502: "key_servers_failed", 503: "unavailable", int(CLIENT_CLOSED): "client_gone",
}


class ProviderMetrics:
    """The provider's metrics: HTTP, and consumes and publishes by outcome."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.http = HttpMetrics(self.registry)
        self.consumes = Counter(f"{PREFIX}_provider_consumes", "Consume requests by outcome (served, or why "
                                "refused)", ("outcome",), registry=self.registry)
        self.publishes = Counter(f"{PREFIX}_provider_publishes", "Publish (encrypt for a publisher) requests by "
                                 "outcome", ("outcome",), registry=self.registry)

    def consumed(self, status: int | None) -> None:
        """A consume ended: ``status`` None when served, else the refusal's HTTP status."""
        self.consumes.labels("served" if status is None else CONSUME_OUTCOMES.get(status, "error")).inc()

    def published(self, status: int | None) -> None:
        self.publishes.labels("ok" if status is None else PUBLISH_OUTCOMES.get(status, "error")).inc()
