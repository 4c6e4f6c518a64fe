"""Failure detection and hedging: the estimator and suspicion rules (pure), then hedged operations
over the in-memory bus with members frozen (links up, nothing answered: a SIGSTOPped process).
The real-process evidence is tests/integration/test_liveness.py."""

from __future__ import annotations

import asyncio
import time
from typing import cast

import pytest

from ocean_secret_store.crypto import ecies, schnorr
from ocean_secret_store.exceptions import ConsensusTemporaryUnreachable, ConsensusUnreachable, ServerKeyIsNotFound
from ocean_secret_store.node.cluster import ClusterCore
from ocean_secret_store.node.liveness import Liveness
from ocean_secret_store.node.sessions.groups import Group

from .memnet import DenyList, Hub, make_cluster
from .test_sessions import Account, publish, run, shadow_key

A, B = b"a" * 64, b"b" * 64


class Clock:
    def __init__(self) -> None:
        self.heard: dict[bytes, float] = {}

    def last_heard(self, peer: bytes) -> float | None:
        return self.heard.get(peer)


# -- the estimator and suspicion ------------------------------------------------------------------


def test_the_hedge_delay_follows_the_measured_round_trips_within_its_bounds() -> None:
    liveness = Liveness(last_heard=Clock().last_heard, min_hedge=0.02, max_hedge=0.5)
    assert liveness.hedge_delay([A]) == pytest.approx(0.125)  # never measured: a quarter of the ceiling
    for _ in range(50):
        liveness.observe(A, 0.001)
    assert liveness.estimate(A) == pytest.approx(0.001, abs=1e-4)
    assert liveness.hedge_delay([A]) == 0.02  # the floor
    for _ in range(50):
        liveness.observe(B, 0.08)
    assert liveness.hedge_delay([A, B]) == pytest.approx(0.08, rel=0.05)  # the slowest of those waited for
    liveness.observe(B, 5.0)
    assert liveness.hedge_delay([B]) == 0.5  # the ceiling
    assert liveness.describe(B)["samples"] == 51


def test_variation_widens_the_delay_before_the_mean_moves() -> None:
    liveness = Liveness(last_heard=Clock().last_heard, min_hedge=0.0, max_hedge=10.0)
    for rtt in (0.01, 0.01, 0.01, 0.01):
        liveness.observe(A, rtt)
    steady = liveness.hedge_delay([A])
    liveness.observe(A, 0.05)
    assert liveness.hedge_delay([A]) > steady * 2


def test_a_suspicion_lasts_until_the_peer_is_heard_from_again() -> None:
    clock = Clock()
    liveness = Liveness(last_heard=clock.last_heard, silence=2.0)
    clock.heard[A] = 10.0
    assert not liveness.is_suspected(A, 10.5)
    assert liveness.suspect(A, 10.5) is True
    assert liveness.suspect(A, 10.6) is False  # already suspected
    assert liveness.is_suspected(A, 11.0)
    clock.heard[A] = 10.4  # a frame from before the suspicion clears nothing
    assert liveness.is_suspected(A, 11.0)
    clock.heard[A] = 10.7
    assert not liveness.is_suspected(A, 11.0)


def test_a_connected_peer_silent_for_too_long_is_suspected() -> None:
    clock = Clock()
    liveness = Liveness(last_heard=clock.last_heard, silence=2.0)
    clock.heard[A] = 0.0
    assert not liveness.is_suspected(A, 1.9)
    assert liveness.is_suspected(A, 2.1)
    assert not liveness.is_suspected(A, 2.1, connected=False)  # not connected: that is another state
    liveness.suspect(A, 3.0)
    del clock.heard[A]  # the link is gone: still suspected, not connected
    assert liveness.is_suspected(A, 4.0, connected=False)
    clock.heard[A] = 4.5  # a new connection's first frame
    assert not liveness.is_suspected(A, 5.0)


# -- hedged operations over the bus ---------------------------------------------------------------


async def _cluster(session_timeout: float = 3.0) -> tuple[Hub, list[ClusterCore]]:
    return await make_cluster(5, session_timeout=session_timeout)


def _to(hub: Hub, node: ClusterCore) -> int:
    return sum(1 for _, dst, _ in hub.sent if dst == node.node_id)


def test_two_frozen_members_are_hedged_around_then_avoided() -> None:
    async def scenario() -> None:
        hub, cores = await _cluster()
        try:
            author = Account()
            key_id, _, document_key = await publish(cores, author, 2)
            hub.freeze(cores[3].node_id)
            hub.freeze(cores[4].node_id)
            times = []
            for i in range(30):
                started = time.monotonic()
                assert await shadow_key(cores[i % 3], key_id, author) == document_key
                times.append(time.monotonic() - started)
            assert max(times) < 1.0  # hedged at the delay, not after the session timeout
            for entry in cores[:3]:
                assert {cores[3].node_id, cores[4].node_id} <= entry.suspected()
            sent = _to(hub, cores[3]) + _to(hub, cores[4])
            for i in range(30):
                assert await shadow_key(cores[i % 3], key_id, author) == document_key
            assert _to(hub, cores[3]) + _to(hub, cores[4]) == sent  # suspected: never chosen again
            hub.thaw(cores[3].node_id)
            hub.thaw(cores[4].node_id)
            await asyncio.sleep(0.05)  # their late answers arrive: heard from, suspicion over
            assert cores[0].suspected() == frozenset()
        finally:
            await hub.stop()

    run(scenario)


def test_schnorr_signing_is_hedged_around_a_frozen_member() -> None:
    async def scenario() -> None:
        hub, cores = await _cluster()
        try:
            author = Account()
            key_id, public, _ = await publish(cores, author, 2)
            hub.freeze(cores[1].node_id)
            message_hash = bytes(range(32))
            for entry in (0, 2, 3, 4):
                started = time.monotonic()
                blob = await cores[entry].schnorr_sign(key_id, author.sign(key_id), message_hash)
                assert time.monotonic() - started < 1.0
                signature = ecies.decrypt(author.secret, blob)
                schnorr.verify(public, schnorr.parse_signature(signature), message_hash)
        finally:
            await hub.stop()

    run(scenario)


def test_with_fewer_than_t_plus_1_live_holders_the_session_timeout_bounds_the_refusal() -> None:
    async def scenario() -> None:
        hub, cores = await _cluster(session_timeout=0.5)
        try:
            author = Account()
            key_id, _, _ = await publish(cores, author, 2)
            for frozen in cores[2:]:
                hub.freeze(frozen.node_id)
            started = time.monotonic()
            with pytest.raises(ConsensusTemporaryUnreachable):
                await cores[0].retrieve_document_key_shadow(key_id, author.sign(key_id))
            assert time.monotonic() - started < 0.5 + 0.3
        finally:
            for frozen in cores[2:]:
                hub.thaw(frozen.node_id)
            await hub.stop()

    run(scenario)


def test_groups_prefer_connected_unsuspected_holders_and_leave_out_the_missing() -> None:
    async def scenario() -> None:
        hub, cores = await _cluster()
        try:
            core = cores[0]
            others = [c.node_id for c in cores[1:]]
            hub.isolate(others[0])  # missing: never a candidate
            core.suspect([others[1]])  # suspected: last
            for _ in range(20):
                group = Group.pick(core, [core.node_id, *others], 2)
                assert others[0] not in group.chosen + group.spares
                assert others[1] not in group.chosen
                assert group.spares[-1] == others[1]
        finally:
            await hub.stop()

    run(scenario)


def test_a_hedge_with_more_slow_members_than_spares_never_puts_a_slow_one_back() -> None:
    async def scenario() -> None:
        hub, cores = await _cluster()
        try:
            core = cores[0]
            a, b, c, d = (x.node_id for x in cores[1:])
            group = Group([a, b, c], [d], 3, 5)
            assert group.hedge(core, [a, b])
            assert b in group.chosen and a not in group.chosen and d in group.chosen  # b stays: no spare left
            assert group.spares == [a]
        finally:
            await hub.stop()

    run(scenario)


def test_readiness_counts_usable_peers_and_names_the_rest() -> None:
    async def scenario() -> None:
        hub, cores = await _cluster()
        try:
            core = cores[0]
            assert core.readiness()["ready"] is True
            assert core.readiness()["usable_peers"] == 4
            hub.isolate(cores[1].node_id)
            core.suspect([cores[2].node_id])
            readiness = core.readiness()
            assert readiness["missing"] == ["0x" + cores[1].node_id.hex()]
            assert readiness["suspected"] == ["0x" + cores[2].node_id.hex()]
            assert readiness["usable_peers"] == 2
            assert readiness["ready"] is True  # min_ready_peers defaults to (5-1)//2 = 2
            core.suspect([cores[3].node_id])
            assert core.readiness()["ready"] is False
        finally:
            await hub.stop()

    run(scenario)


# -- delegation -----------------------------------------------------------------------------------


def _forget(core: ClusterCore, key_id: bytes) -> None:
    """The node lost its share (data loss): gone from disk and from its cache."""
    core.storage.remove(key_id)
    core._keys.pop(key_id, None)


@pytest.mark.parametrize("operation", ["shadow", "plain", "schnorr"])
def test_an_entry_node_without_a_share_delegates_to_a_holder(operation: str) -> None:
    async def scenario() -> None:
        hub, cores = await _cluster()
        try:
            author = Account()
            key_id, public, document_key = await publish(cores, author, 2)
            _forget(cores[0], key_id)
            if operation == "shadow":
                assert await shadow_key(cores[0], key_id, author) == document_key
            elif operation == "plain":
                blob = await cores[0].retrieve_document_key(key_id, author.sign(key_id))
                assert ecies.decrypt(author.secret, blob) == document_key.to_bytes()
            else:
                message_hash = bytes(range(32))
                blob = await cores[0].schnorr_sign(key_id, author.sign(key_id), message_hash)
                schnorr.verify(public, schnorr.parse_signature(ecies.decrypt(author.secret, blob)), message_hash)
            assert any(kind == "Delegate" and src == cores[0].node_id for src, _, kind in hub.sent)
        finally:
            await hub.stop()

    run(scenario)


def test_delegation_needs_a_version_with_t_plus_1_live_holders_and_keeps_refusals() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(5, session_timeout=1.0, acl_factory=DenyList)
        try:
            author, stranger = Account(), Account()
            key_id, _, _ = await publish(cores, author, 2)
            for core in cores:
                cast("DenyList", core.acl).prohibit(stranger.address, key_id)
            _forget(cores[0], key_id)
            _forget(cores[1], key_id)
            hub.isolate(cores[2].node_id)  # two holders left: fewer than t+1 = 3
            with pytest.raises(ConsensusTemporaryUnreachable):
                await cores[0].retrieve_document_key_shadow(key_id, author.sign(key_id))
            hub.restore(cores[2].node_id)
            # An ACL refusal at the holder is the answer, not a reason to try another.
            with pytest.raises(ConsensusUnreachable):
                await cores[0].retrieve_document_key_shadow(key_id, stranger.sign(key_id))
            with pytest.raises(ServerKeyIsNotFound):
                unknown = b"\x09" * 32
                await cores[0].retrieve_document_key_shadow(unknown, author.sign(unknown))
        finally:
            await hub.stop()

    run(scenario)
