"""The metrics module on its own: outcome labels, bounded labels, the HTTP middleware's route and status,
a session's count and time, the counting audit log, the gauges set at a scrape, the exposition, and the
recent operations of the status page."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping

import pytest
import requests
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ocean_secret_store import exceptions as e
from ocean_secret_store.metrics import (
    METRICS_PATH,
    OTHER,
    PREFIX,
    ROUTE,
    UNMATCHED,
    CountingAudit,
    HttpMetrics,
    NodeMetrics,
    ProviderMetrics,
    RecentOperations,
    RpcMetrics,
    bounded,
    exposition,
    metrics_handler,
    outcome_of,
    service_registry,
)
from ocean_secret_store.node.quotas import TooManyRequests
from ocean_secret_store.testing.metrics import Samples, scrape
from ocean_secret_store.testing.servers import ServerThread


def samples(registry: CollectorRegistry) -> Samples:
    return Samples(generate_latest(registry).decode())


def timed_out(error: e.KeyServerError) -> e.KeyServerError:
    try:
        try:
            raise TimeoutError
        except TimeoutError as exc:
            raise error from exc
    except e.KeyServerError as caught:
        return caught


@pytest.mark.parametrize(("error", "outcome"), [
    (None, "ok"),
    (e.AccessDenied(), "access_denied"),
    (e.ConsensusUnreachable("not on the allow list"), "consensus_unreachable"),
    (e.ConsensusTemporaryUnreachable(), "temporary_unreachable"),
    (timed_out(e.ConsensusTemporaryUnreachable()), "timeout"),
    (timed_out(e.NodeDisconnected()), "timeout"),
    (e.NodeDisconnected(), "node_disconnected"),
    (e.ServerKeyIsNotFound(), "not_found"),
    (e.DocumentKeyIsNotFound(), "not_found"),
    (e.ServerKeyAlreadyGenerated(), "already_exists"),
    (e.DocumentKeyAlreadyStored(), "already_exists"),
    (e.InsufficientRequesterData("bad signature"), "bad_request"),
    (TooManyRequests("cap", quota="sessions"), "too_many_requests"),
    (e.InternalError("boom"), "error"),
    (e.KeysWouldBeLost("3 keys"), "error"),
    (RuntimeError("a bug"), "error"),
    (asyncio.CancelledError(), "cancelled"),
])
def test_outcome_of(error: BaseException | None, outcome: str) -> None:
    assert outcome_of(error) == outcome


def test_bounded_labels() -> None:
    assert bounded("GET", {"GET"}) == "GET"
    assert bounded("0x" + "ab" * 20, {"GET"}) == OTHER
    metrics = NodeMetrics()
    metrics.quota_refused("a requester's own text")
    metrics.access_check("maybe")
    metrics.audit_written("owner", "0xdead")
    with pytest.raises(RuntimeError), metrics.session("retrieve_everything"):
        raise RuntimeError
    found = samples(metrics.registry)
    assert found.total(f"{PREFIX}_quota_refusals_total", quota=OTHER) == 1
    assert found.total(f"{PREFIX}_access_checks_total", outcome=OTHER) == 1
    assert found.total(f"{PREFIX}_audit_writes_total", role=OTHER, decision=OTHER) == 1
    assert found.total(f"{PREFIX}_sessions_total", kind=OTHER, outcome="error") == 1
    rpc = RpcMetrics({"eth_call"}, {-32601: "method_not_found"})
    rpc.answered("anvil_setBalance", -32601)
    rpc.answered(["not", "a", "name"], -1)
    rpc.forwarded("eth_call")
    found = samples(rpc.registry)
    assert found.total(f"{PREFIX}_rpc_calls_total", method=OTHER, outcome="method_not_found") == 1
    assert found.total(f"{PREFIX}_rpc_calls_total", method="invalid", outcome="error") == 1
    assert found.total(f"{PREFIX}_rpc_calls_total", method="eth_call", outcome="forwarded") == 1
    provider = ProviderMetrics()
    for status in (None, 401, 418):
        provider.consumed(status)
    found = samples(provider.registry)
    assert {s.labels["outcome"] for s in found if s.name == f"{PREFIX}_provider_consumes_total"} == \
        {"served", "refused", "error"}


def test_a_session_is_counted_and_timed_by_how_it_ends() -> None:
    metrics = NodeMetrics()
    with metrics.session("schnorr_sign"):
        pass
    with pytest.raises(e.AccessDenied), metrics.session("schnorr_sign"):
        raise e.AccessDenied()
    found = samples(metrics.registry)
    assert found.total(f"{PREFIX}_sessions_total", kind="schnorr_sign", outcome="ok") == 1
    assert found.total(f"{PREFIX}_sessions_total", kind="schnorr_sign", outcome="access_denied") == 1
    assert found.total(f"{PREFIX}_session_duration_seconds_count", kind="schnorr_sign") == 2


def test_the_counting_audit_counts_lines_and_failures() -> None:
    lines: list[tuple[str, str]] = []

    class Log:
        def record(self, operation: str, key_id: bytes, requester: bytes | None, role: str, decision: str,
                   reason: str = "") -> None:
            if decision == "failed":
                raise OSError("disk full")
            lines.append((role, decision))

    metrics = NodeMetrics()
    audit = CountingAudit(Log(), metrics)
    audit.record("schnorr_sign", bytes(32), None, "entry", "ok")
    audit.record("schnorr_sign", bytes(32), None, "member", "refused", "not on the allow list")
    with pytest.raises(OSError, match="disk full"):
        audit.record("schnorr_sign", bytes(32), None, "entry", "failed")
    found = samples(metrics.registry)
    assert lines == [("entry", "ok"), ("member", "refused")]
    assert found.total(f"{PREFIX}_audit_writes_total") == 2
    assert found.total(f"{PREFIX}_audit_writes_total", role="member", decision="refused") == 1
    assert found.total(f"{PREFIX}_audit_write_failures_total") == 1


class _Node:
    others = (b"a", b"b", b"c", b"d")
    servers_set = (b"a", b"b", b"c", b"d", b"me")

    def peer_states(self) -> Mapping[bytes, str]:
        return {b"a": "connected", b"b": "connected", b"c": "connecting"}  # d: not known at all

    def suspected(self) -> frozenset[bytes]:
        return frozenset({b"b"})

    def readiness(self) -> Mapping[str, object]:
        return {"ready": False}

    def running_sessions(self) -> int:
        return 7

    def storage_figures(self) -> tuple[int, int]:
        return 12, 4096


def test_refresh_sets_the_gauges_from_the_state() -> None:
    metrics = NodeMetrics()
    asyncio.run(metrics.refresh(_Node()))
    found = samples(metrics.registry)
    assert {s.labels["state"]: s.value for s in found if s.name == f"{PREFIX}_peers"} == \
        {"connected": 2, "connecting": 1, "missing": 1, "suspected": 1}
    assert found.total(f"{PREFIX}_ready") == 0
    assert found.total(f"{PREFIX}_servers_set_nodes") == 5
    assert found.total(f"{PREFIX}_running_sessions") == 7
    assert found.total(f"{PREFIX}_keys") == 12
    assert found.total(f"{PREFIX}_database_bytes") == 4096


def test_a_storage_that_cannot_be_read_leaves_the_scrape_working() -> None:
    class Broken(_Node):
        def storage_figures(self) -> tuple[int, int]:
            raise e.DatabaseError("the key storage is closed")

    metrics = NodeMetrics()
    asyncio.run(metrics.refresh(Broken()))
    found = samples(metrics.registry)
    assert math.isnan(found.total(f"{PREFIX}_keys")) and math.isnan(found.total(f"{PREFIX}_database_bytes"))
    assert found.total(f"{PREFIX}_running_sessions") == 7  # the rest was read


def test_the_middleware_labels_routes_by_pattern_and_statuses_as_answered() -> None:
    registry = service_registry()
    http = HttpMetrics(registry)

    async def item(request: web.Request) -> web.Response:
        if request.match_info["name"] == "missing":
            raise web.HTTPNotFound()
        if request.match_info["name"] == "bug":
            raise RuntimeError("a bug")
        return web.Response(text="ok")

    async def named(request: web.Request) -> web.Response:
        request[ROUTE] = "/named/{what}"
        return web.Response(status=202)

    app = web.Application(middlewares=[http.middleware])
    app.router.add_get("/items/{name}", item)
    app.router.add_route("*", "/named/{tail:.*}", named)
    app.router.add_get(METRICS_PATH, metrics_handler(registry))
    with ServerThread() as thread:
        url = thread.start(app)
        before = scrape(url)
        statuses = [requests.get(url + path, timeout=10).status_code
                    for path in ("/items/0xsecret", "/items/missing", "/items/bug", "/named/x/y", "/nowhere")]
        assert requests.post(url + "/items/1", timeout=10).status_code == 405
        after = scrape(url)
    assert statuses == [200, 404, 500, 202, 404]
    total = f"{PREFIX}_http_requests_total"
    assert after.delta(before, total, route="/items/{name}", method="GET", status="200") == 1
    assert after.delta(before, total, route="/items/{name}", method="GET", status="404") == 1
    assert after.delta(before, total, route="/items/{name}", method="GET", status="500") == 1
    assert after.delta(before, total, route="/named/{what}", method="GET", status="202") == 1
    assert after.delta(before, total, route=UNMATCHED, method="GET", status="404") == 1
    assert after.delta(before, total, route=UNMATCHED, method="POST", status="405") == 1
    assert after.delta(before, f"{PREFIX}_http_request_duration_seconds_count", route="/items/{name}") == 3
    assert "0xsecret" not in after.text
    assert after.total("process_open_fds") > 0  # service_registry() brings the process collector


def test_the_exposition_is_the_libraries_text_format() -> None:
    metrics = NodeMetrics()
    response = exposition(metrics.registry)
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert isinstance(response.body, bytes)
    assert f"{PREFIX}_access_checks" in Samples(response.body.decode()).families  # a counter family drops _total
    # Two nodes in one process: separate registries, no clash.
    NodeMetrics()


# -- the recent operations of the status page -------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_is_remembered_among_the_recent_operations() -> None:
    metrics = NodeMetrics()
    with metrics.session("retrieve_document_key"):
        pass
    with pytest.raises(e.AccessDenied), metrics.session("retrieve_document_key"):
        raise e.AccessDenied()
    with metrics.session("a kind nobody knows"):
        pass
    summary = metrics.recent.summary()
    assert summary["by_kind"] == {"other": {"ok": 1}, "retrieve_document_key": {"access_denied": 1, "ok": 1}}
    assert summary["total"] == 3
    assert summary["retrieval_latency"]["overall"]["retrievals"] == 1  # the refusal is no latency sample


def test_recent_operations_keep_their_window_by_the_minute() -> None:
    clock = _Clock()

    def wall() -> float:
        return 1_800_000_000.0 + clock.now

    recent = RecentOperations(minutes=3, clock=clock, wall=wall)
    recent.record("schnorr_sign", "ok", 0.01)
    clock.now += 60
    recent.record("retrieve_document_key_shadow", "ok", 0.002)
    recent.record("retrieve_document_key_shadow", "timeout", 5.0)
    clock.now += 60
    assert recent.summary()["by_kind"] == {"retrieve_document_key_shadow": {"ok": 1, "timeout": 1},
                                           "schnorr_sign": {"ok": 1}}
    clock.now += 60  # the first minute falls out of the window
    summary = recent.summary(latency_minutes=3)
    assert summary["by_kind"] == {"retrieve_document_key_shadow": {"ok": 1, "timeout": 1}}
    minutes = summary["retrieval_latency"]["minutes"]
    assert [(m["minutes_ago"], m["retrievals"], m["p50_ms"]) for m in minutes] == [(0, 0, None), (1, 0, None),
                                                                                   (2, 1, 2.0)]
    this_minute = wall() - clock.now % 60  # when the current minute began, by the wall clock
    assert [m["started"] for m in minutes] == [this_minute, this_minute - 60, this_minute - 120]
    clock.now += 3600  # an idle hour: nothing left, nothing kept
    assert recent.summary()["total"] == 0
    assert len(recent._buckets) == 1


def test_retrieval_latency_percentiles_and_a_bounded_sample() -> None:
    clock = _Clock()
    clock.now = 60.0 * 1000  # at the start of a minute
    recent = RecentOperations(samples_per_minute=50, clock=clock)
    for ms in range(1, 101):  # 1 .. 100 ms, 100 retrievals
        recent.record("retrieve_document_key", "ok", ms / 1000)
    minute = recent.summary()["retrieval_latency"]["minutes"][0]
    assert minute["retrievals"] == 100 and minute["samples"] == 50  # a uniform sample of 50 kept
    assert 1 <= minute["p50_ms"] <= minute["p95_ms"] <= minute["max_ms"] <= 100
    exact = RecentOperations(clock=clock)
    for ms in range(1, 101):
        exact.record("retrieve_server_key", "ok", ms / 1000)
    overall = exact.summary()["retrieval_latency"]["overall"]
    assert (overall["p50_ms"], overall["p95_ms"], overall["max_ms"]) == (50.0, 95.0, 100.0)  # nearest rank
