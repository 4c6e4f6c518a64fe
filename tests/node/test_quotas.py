"""Quotas (node/quotas.py): token buckets and counts with an injected clock, bounded state, the
[quotas] config section, and the session cap over the in-memory bus (entry and member refusals)."""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.crypto.document import generate_document_key
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.exceptions import ConfigError, ConsensusTemporaryUnreachable
from ocean_secret_store.node.cluster import error_from_reply
from ocean_secret_store.node.config import NodeConfig, dump_config
from ocean_secret_store.node.quotas import (
    RETRY_AFTER_COUNT,
    WIRE_NAME,
    GenerationQuota,
    KeyedBuckets,
    QuotaSettings,
    SessionCap,
    TooManyRequests,
    retry_after_header,
)
from ocean_secret_store.protocol import http as codec
from ocean_secret_store.protocol import messages as m

from .memnet import make_cluster

ALICE = b"\xaa" * 20
BOB = b"\xbb" * 20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def quota(clock: Clock, **settings: Any) -> GenerationQuota:
    defaults: dict[str, Any] = {"requester_burst": 0, "address_burst": 0, "requester_generations": 0}
    return GenerationQuota(QuotaSettings(**(defaults | settings)), clock)


def test_requester_bucket_burst_then_refill() -> None:
    clock = Clock()
    q = quota(clock, requester_burst=3, requester_rate=2.0)
    for _ in range(3):
        q.admit(ALICE, "10.0.0.1")
    with pytest.raises(TooManyRequests) as refused:
        q.admit(ALICE, "10.0.0.1")
    assert refused.value.status == 429
    assert str(refused.value) == "Too many requests: key generation rate for this requester exceeded; retry in 0.5 s"
    assert refused.value.retry_after == pytest.approx(0.5)
    assert retry_after_header(refused.value) == "1"
    q.admit(BOB, "10.0.0.1")  # another requester is not affected
    clock.now += 0.25
    with pytest.raises(TooManyRequests, match=r"retry in 0\.2 s"):
        q.admit(ALICE, "10.0.0.1")
    clock.now += 0.25
    q.admit(ALICE, "10.0.0.1")  # one token refilled after 1 / rate seconds
    with pytest.raises(TooManyRequests):
        q.admit(ALICE, "10.0.0.1")
    clock.now += 100
    for _ in range(3):  # refilled up to the burst, never beyond
        q.admit(ALICE, "10.0.0.1")
    with pytest.raises(TooManyRequests):
        q.admit(ALICE, "10.0.0.1")
    assert (q.admitted, q.refused) == (8, 4)


def test_a_refusal_spends_nothing() -> None:
    clock = Clock()
    q = quota(clock, requester_burst=1, requester_rate=1.0, address_burst=1, address_rate=1.0)
    q.admit(ALICE, "10.0.0.1")
    for _ in range(50):  # a flood of refused requests does not push the next token further away
        with pytest.raises(TooManyRequests):
            q.admit(ALICE, "10.0.0.2")
    clock.now += 1.0
    q.admit(ALICE, "10.0.0.2")  # the refused requests spent no token of 10.0.0.2 either
    clock.now += 1.0
    q.admit(BOB, "10.0.0.2")


def test_address_bucket_covers_every_requester_behind_it() -> None:
    clock = Clock()
    q = quota(clock, address_burst=2, address_rate=0.5)
    q.admit(ALICE, "192.0.2.1")
    q.admit(BOB, "192.0.2.1")
    with pytest.raises(TooManyRequests, match=r"rate for this client address exceeded; retry in 2\.0 s$"):
        q.admit(b"\xcc" * 20, "192.0.2.1")
    q.admit(b"\xcc" * 20, "192.0.2.2")
    q.admit(None, "192.0.2.3")  # an unrecoverable signature still costs its address (the core refuses it)
    q.admit(ALICE, None)  # an unknown address: only the requester's limits apply


def test_count_per_requester() -> None:
    clock = Clock()
    q = quota(clock, requester_generations=2)
    q.admit(ALICE, "10.0.0.1")
    q.admit(ALICE, "10.0.0.2")
    with pytest.raises(TooManyRequests, match="this requester has had its 2 key generations") as refused:
        q.admit(ALICE, "10.0.0.3")
    assert refused.value.retry_after == RETRY_AFTER_COUNT
    clock.now += 10_000  # a count does not refill
    with pytest.raises(TooManyRequests):
        q.admit(ALICE, "10.0.0.3")
    q.admit(BOB, "10.0.0.1")


def test_the_administrator_passes_every_generation_limit_unless_switched_off() -> None:
    admin = b"\xad" * 20
    clock = Clock()
    q = GenerationQuota(QuotaSettings(requester_burst=1, requester_rate=0.0, address_burst=1, address_rate=0.0,
                                      requester_generations=1), clock, admin=admin)
    for _ in range(1000):  # a bulk load: no bucket or count spent, the address's included
        q.admit(admin, "10.0.0.1")
    q.admit(ALICE, "10.0.0.1")  # so the address still has its token for another requester
    with pytest.raises(TooManyRequests):
        q.admit(ALICE, "10.0.0.1")
    with pytest.raises(TooManyRequests):
        q.admit(None, "10.0.0.1")  # an unrecoverable signature is nobody's, not the administrator's
    assert (q.admitted, q.refused) == (1001, 2)
    off = GenerationQuota(QuotaSettings(requester_burst=1, requester_rate=0.0, address_burst=0,
                                        admin_exempt=False), clock, admin=admin)
    off.admit(admin, "10.0.0.1")
    with pytest.raises(TooManyRequests, match="rate for this requester exceeded"):
        off.admit(admin, "10.0.0.1")
    assert off.admin is None


def test_burst_without_refill_says_so() -> None:
    buckets: KeyedBuckets[str] = KeyedBuckets(burst=1, rate=0.0, capacity=4)
    buckets.take("a", 0.0)
    assert buckets.wait("a", 1e9) == math.inf
    q = GenerationQuota(QuotaSettings(requester_burst=1, requester_rate=0.0, address_burst=0), Clock())
    q.admit(ALICE, None)
    with pytest.raises(TooManyRequests) as refused:
        q.admit(ALICE, None)
    assert retry_after_header(refused.value) == str(int(RETRY_AFTER_COUNT))


def test_state_is_bounded_and_drops_the_least_recent() -> None:
    clock = Clock()
    q = quota(clock, requester_burst=1, requester_rate=0.001, address_burst=1000, address_rate=1.0,
              requester_generations=5, tracked=100)
    for i in range(10_000):
        q.admit(i.to_bytes(20, "big"), f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
    assert len(q.requesters) == len(q.addresses) == len(q.counts) == 100
    # The most recent requester is still remembered; the first one was dropped (full bucket again).
    with pytest.raises(TooManyRequests):
        q.admit((9_999).to_bytes(20, "big"), "10.0.0.1")
    q.admit((0).to_bytes(20, "big"), "10.0.0.1")


def test_disabled_quota_admits_everything() -> None:
    q = GenerationQuota(QuotaSettings.unlimited(), Clock())
    for _ in range(10_000):
        q.admit(ALICE, "10.0.0.1")
    assert len(q.requesters) == len(q.addresses) == len(q.counts) == 0


def test_defaults_leave_the_bench_alone() -> None:
    """bench/cluster.py: 100 sequential generations of one requester, from one address, on 3 nodes
    in rotation (34 on one node, at most ~20 per second): never refused."""
    clock = Clock()
    q = GenerationQuota(QuotaSettings(), clock)
    for _ in range(34):
        q.admit(ALICE, "127.0.0.1")
        clock.now += 0.01
    defaults = QuotaSettings()
    assert defaults.requester_generations == 0
    assert defaults.max_sessions >= 16 * 2


def test_too_many_requests_body_is_parity_style_and_crosses_the_node_wire() -> None:
    error = TooManyRequests("key generation rate for this requester exceeded; retry in 0.4 s", 0.4)
    status, body = codec.error_response(error)
    assert status == 429
    assert body == b'"\\"Too many requests: key generation rate for this requester exceeded; retry in 0.4 s\\""'
    assert codec.decode_error_body(body) == str(error)
    relayed = error_from_reply(m.ErrorReply(error=WIRE_NAME, detail="busy; retry in 1.0 s"))
    assert isinstance(relayed, TooManyRequests)
    assert str(relayed) == "Too many requests: busy; retry in 1.0 s"


def test_session_cap_counts_and_refuses() -> None:
    cap = SessionCap(2)
    cap.admit()
    with cap.hold(), cap.hold():
        assert cap.full
        with pytest.raises(TooManyRequests, match="running its limit of 2 concurrent sessions"):
            cap.admit()
    assert cap.active == 0
    assert cap.refused == 1
    unlimited = SessionCap(0)
    with unlimited.hold():
        unlimited.admit()
    assert not unlimited.full


# -- config --------------------------------------------------------------------------------------


def _config(tmp_path: Path, quotas: dict[str, Any] | None) -> NodeConfig:
    secret = random_scalar()
    mapping: dict[str, Any] = {
        "node": {"secret": f"0x{secret:064x}", "listen": "127.0.0.1:0", "http_listen": "127.0.0.1:0",
                 "data_dir": "n"},
        "cluster": {"0x" + Point.generator_mul(secret).to_bytes().hex(): "127.0.0.1:1"},
        "acl": {"kind": "none"},
    }
    if quotas is not None:
        mapping["quotas"] = quotas
    return NodeConfig.from_mapping(mapping, tmp_path)


def test_config_defaults_round_trip_and_refusals(tmp_path: Path) -> None:
    assert _config(tmp_path, None).quotas == QuotaSettings()
    config = _config(tmp_path, {"requester_burst": 5, "requester_rate": 0.5, "address_rate": 0,
                                "requester_generations": 1000, "max_sessions": 0, "tracked": 50,
                                "admin_exempt": False})
    assert config.quotas == QuotaSettings(requester_burst=5, requester_rate=0.5, address_rate=0.0,
                                          requester_generations=1000, max_sessions=0, tracked=50,
                                          admin_exempt=False)
    assert "[quotas]" in dump_config(config)
    assert NodeConfig.from_mapping(config.to_mapping(), tmp_path).quotas == config.quotas
    for bad, key in [({"requester_rate": -1}, "quotas.requester_rate"), ({"max_sessions": 1.5}, "quotas.max_sessions"),
                     ({"tracked": 0}, "quotas.tracked"), ({"requester_rate": "fast"}, "quotas.requester_rate"),
                     ({"burst": 1}, "quotas.burst"), ({"admin_exempt": 1}, "quotas.admin_exempt")]:
        with pytest.raises(ConfigError) as refused:
            _config(tmp_path, bad)
        assert refused.value.key == key


# -- the session cap in the cluster core (in-memory bus) ----------------------------------------


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(coro_fn(), 30))


def _requester() -> Callable[[bytes], bytes]:
    secret = random_scalar()
    return lambda key_id: sign_raw_hash(secret, key_id)


def test_entry_over_its_cap_refuses_and_a_member_over_its_cap_fails_cleanly() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(5, session_timeout=1.0)
        try:
            sign = _requester()
            key_id = os.urandom(32)
            public = await cores[0].generate_server_key(key_id, sign(key_id), 1)
            _, common, encrypted = generate_document_key(public)
            await cores[0].store_document_key(key_id, sign(key_id), common, encrypted)
            for core in cores:
                core.session_cap.limit = 1

            # The entry node is at its cap: refused before any work.
            with cores[0].session_cap.hold():
                with pytest.raises(TooManyRequests, match="running its limit of 1 concurrent sessions"):
                    await cores[0].retrieve_document_key_shadow(key_id, sign(key_id))
                fresh = os.urandom(32)
                with pytest.raises(TooManyRequests):
                    await cores[0].generate_server_key(fresh, sign(fresh), 1)
            assert cores[0].session_cap.active == 0

            # A member is at its cap: a generation (all nodes) fails as 429 and stores nothing ...
            fresh = os.urandom(32)
            with cores[3].session_cap.hold():
                with pytest.raises(TooManyRequests, match=r"key server 0x[0-9a-f]{16}\.\. is running its limit"):
                    await cores[0].generate_server_key(fresh, sign(fresh), 1)
                for _ in range(100):  # the entry aborts the members that had accepted, without waiting
                    if not any(core.sessions.get("generation") for core in cores):
                        break
                    await asyncio.sleep(0.01)
                for core in cores:
                    assert core.storage.get(fresh) is None
                    assert not core.sessions.get("generation")
                # ... a retrieval replaces the busy member by a spare ...
                result = await cores[0].retrieve_document_key_shadow(key_id, sign(key_id))
                assert len(result.decrypt_shadows) == 2
                # ... and with every other node busy, it is Parity's temporary consensus failure.
                with (cores[1].session_cap.hold(), cores[2].session_cap.hold(), cores[4].session_cap.hold(),
                      pytest.raises(ConsensusTemporaryUnreachable)):
                    await cores[0].retrieve_document_key_shadow(key_id, sign(key_id))
            assert cores[3].session_cap.refused >= 2
            # Below the cap again, the refused key id is free: generating it works.
            assert await cores[0].generate_server_key(fresh, sign(fresh), 1)
            assert cores[0].health()["sessions"] == {"running": 0, "limit": 1, "refused": 2}
        finally:
            for core in cores:
                await core.stop()
            await hub.stop()

    run(scenario)
