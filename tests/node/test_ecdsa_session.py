"""Threshold ECDSA signing over the in-memory bus: every entry node signs what ecrecover accepts for
the key's address; Parity's consensus errors; members that refuse, drop out, freeze or cheat at
every phase; attempts forgotten everywhere. The crypto core's own vectors are tests/crypto/test_ecdsa.py,
the real processes tests/integration/test_ecdsa.py."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from typing import Any, cast

import pytest
from coincurve import PrivateKey, PublicKey
from eth_account import Account as EthAccount

from ocean_secret_store.crypto import ecies
from ocean_secret_store.crypto.curve import N, Point
from ocean_secret_store.crypto.hashes import address_of
from ocean_secret_store.exceptions import (
    ConsensusTemporaryUnreachable,
    ConsensusUnreachable,
    InternalError,
    ServerKeyIsNotFound,
)
from ocean_secret_store.node.acl import AllowAll
from ocean_secret_store.node.cluster import ClusterCore
from ocean_secret_store.protocol import messages as m

from .memnet import DenyList, make_cluster
from .test_sessions import Account, Recorded, publish, run, stored

TIMEOUT = 1.0
LOGGER = "ocean_secret_store.node.sessions.ecdsa"


async def sign(core: ClusterCore, key_id: bytes, account: Account, message_hash: bytes) -> bytes:
    """``r || s || v`` as the requester decrypts it from the entry node's answer."""
    blob = await core.ecdsa_sign(key_id, account.sign(key_id), message_hash)
    signature = ecies.decrypt(account.secret, blob)
    assert len(signature) == 65
    return signature


def check(signature: bytes, message_hash: bytes, public: Point) -> None:
    """What Ethereum accepts: low-S, v in {0, 1} (+27 for ecrecover), recovering to the key's address."""
    assert signature[64] in (0, 1)
    assert int.from_bytes(signature[32:64], "big") <= N // 2
    recovered = PublicKey.from_signature_and_message(signature, message_hash, hasher=None)
    assert Point(recovered) == public
    ethereum = signature[:64] + bytes([signature[64] + 27])
    assert EthAccount._recover_hash(message_hash, signature=ethereum).lower() == "0x" + address_of(public).hex()


def ecdsa_tables_empty(cores: list[ClusterCore]) -> bool:
    """No node keeps anything of any attempt: no state, no waiting dealing."""
    return all(not core.sessions.get("ecdsa") and not any(
        e.messages for e in cast("dict[bytes, Any]", core.sessions.get("ecdsa-early", {})).values())
        for core in cores)


async def settle(cores: list[ClusterCore]) -> None:
    for _ in range(100):
        if ecdsa_tables_empty(cores):
            return
        await asyncio.sleep(0.01)


# -- signatures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "t"), [(1, 0), (3, 0), (3, 1), (4, 1), (5, 1), (5, 2), (7, 3)])
def test_every_entry_node_signs_what_ecrecover_accepts_for_the_key(n: int, t: int) -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(n, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, public, _ = await publish(cores, author, t)
            for core in cores:
                message_hash = os.urandom(32)
                check(await sign(core, key_id, author, message_hash), message_hash, public)
            await settle(cores)
            assert ecdsa_tables_empty(cores)
        finally:
            await hub.stop()

    run(scenario)


def test_nonces_are_fresh_for_t_at_least_1_and_rfc6979_for_t_0() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(5, session_timeout=TIMEOUT)
        try:
            author = Account()
            message_hash = bytes(range(32))
            for t in (1, 2):
                key_id, public, _ = await publish(cores, author, t)
                first, second = [await sign(cores[i], key_id, author, message_hash) for i in (0, 0)]
                check(first, message_hash, public)
                check(second, message_hash, public)
                assert first[:32] != second[:32]  # a new nonce k, so a new r
            key_id, public, _ = await publish(cores, author, 0)
            signatures = {await sign(core, key_id, author, message_hash) for core in cores}
            # t = 0: every share is the key, and the entry node signs as libsecp256k1 does (RFC 6979)
            share = stored(cores[0], key_id).last_version.secret_share
            expected = PrivateKey(share.to_bytes(32, "big")).sign_recoverable(message_hash, hasher=None)
            assert signatures == {expected}
        finally:
            await hub.stop()

    run(scenario)


@pytest.mark.parametrize(("n", "t"), [(3, 1), (4, 1), (5, 1), (5, 2), (6, 2), (7, 3)])
def test_any_2t_plus_1_live_holders_sign_and_2t_do_not(n: int, t: int) -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(n, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, public, _ = await publish(cores, author, t)
            down = cores[2 * t + 1:]
            for core in down:
                hub.isolate(core.node_id)
            message_hash = os.urandom(32)
            check(await sign(cores[-1 - len(down)], key_id, author, message_hash), message_hash, public)
            hub.isolate(cores[1].node_id)  # 2t left
            started = time.monotonic()
            with pytest.raises(ConsensusTemporaryUnreachable):
                await sign(cores[0], key_id, author, message_hash)
            assert time.monotonic() - started < TIMEOUT
        finally:
            await hub.stop()

    run(scenario)


# -- Parity's errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "t"), [(2, 1), (3, 2), (4, 2), (5, 3)])
def test_a_key_with_2t_at_least_n_is_consensus_unreachable_at_once(n: int, t: int) -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(n, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, _, _ = await publish(cores, author, t)
            for core in cores:
                started = time.monotonic()
                with pytest.raises(ConsensusUnreachable) as refused:
                    await sign(core, key_id, author, os.urandom(32))
                assert str(refused.value) == "Consensus unreachable"
                assert time.monotonic() - started < 0.2
            assert not any(kind.startswith("Ecdsa") for _, _, kind in hub.sent)  # nobody was asked
        finally:
            await hub.stop()

    run(scenario)


def test_no_permission_is_consensus_unreachable_and_a_refusing_member_is_replaced() -> None:
    async def scenario() -> None:
        denials: list[DenyList] = []

        def deny_list() -> DenyList:
            denials.append(DenyList())
            return denials[-1]

        hub, cores = await make_cluster(5, session_timeout=TIMEOUT, acl_factory=deny_list)
        audits = [Recorded() for _ in cores]
        for core, audit in zip(cores, audits, strict=True):
            core.audit = audit
        try:
            author, stranger = Account(), Account()
            key_id, public, _ = await publish(cores, author, 1)
            for acl in denials:
                acl.prohibit(stranger.address, key_id)
            with pytest.raises(ConsensusUnreachable):
                await sign(cores[0], key_id, stranger, os.urandom(32))
            # one member refuses the author: a spare takes its place, from every entry node
            denials[4].prohibit(author.address, key_id)
            cores[0].suspect([cores[2].node_id, cores[3].node_id])  # so the first group is {0, 1, 4}
            message_hash = os.urandom(32)
            check(await sign(cores[0], key_id, author, message_hash), message_hash, public)
            assert ("ecdsa_signing", author.address, "member", "refused", "prohibited") in audits[4].lines
            for core in cores[:4]:
                check(await sign(core, key_id, author, message_hash), message_hash, public)
        finally:
            await hub.stop()

    run(scenario)


def test_members_refusing_on_their_own_make_it_consensus_unreachable() -> None:
    """An entry node that lets anyone in gets nothing: the members ask their own checkers."""

    async def scenario() -> None:
        checkers: list[DenyList] = []

        def checker() -> DenyList | AllowAll:
            if not checkers:
                checkers.append(DenyList())
                return AllowAll()  # cores[0] trusts everyone
            checkers.append(DenyList())
            return checkers[-1]

        hub, cores = await make_cluster(5, session_timeout=TIMEOUT, acl_factory=checker)
        try:
            author, stranger = Account(), Account()
            key_id, _, _ = await publish(cores, author, 1)
            for acl in checkers[1:]:
                acl.prohibit(stranger.address, key_id)
            with pytest.raises(ConsensusUnreachable):
                await sign(cores[0], key_id, stranger, os.urandom(32))
            await settle(cores)
            assert ecdsa_tables_empty(cores)
        finally:
            await hub.stop()

    run(scenario)


def test_an_unknown_key_is_not_found() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=TIMEOUT)
        try:
            author, unknown = Account(), os.urandom(32)
            with pytest.raises(ServerKeyIsNotFound):
                await sign(cores[0], unknown, author, os.urandom(32))
        finally:
            await hub.stop()

    run(scenario)


# -- members that fail ----------------------------------------------------------------------------


PHASES = ["EcdsaStart", "EcdsaDealing", "EcdsaDealt", "EcdsaPartial", "EcdsaPartialReply"]


@pytest.mark.parametrize("kind", PHASES)
@pytest.mark.parametrize("mode", ["disconnect", "silent"])
def test_signing_survives_a_member_dropping_at_each_phase(kind: str, mode: str) -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(5, session_timeout=TIMEOUT)
        entry = cores[0].node_id
        try:
            author = Account()
            key_id, public, _ = await publish(cores, author, 1)
            fired: list[bytes] = []

            def drop(src: bytes, dst: bytes, env: m.Envelope) -> bool:
                if kind == env.body.KIND and not fired:
                    victim = dst if kind in ("EcdsaStart", "EcdsaPartial") else src
                    if victim == entry:
                        victim = dst
                    fired.append(victim)
                    if mode == "disconnect":
                        hub.isolate(victim)
                    return True
                return False

            hub.drop = drop
            message_hash = os.urandom(32)
            started = time.monotonic()
            check(await sign(cores[0], key_id, author, message_hash), message_hash, public)
            assert time.monotonic() - started < TIMEOUT
            assert fired
            hub.drop = lambda src, dst, env: False
            await settle([c for c in cores if c.node_id not in hub.down])
            assert ecdsa_tables_empty([c for c in cores if c.node_id not in hub.down])
        finally:
            await hub.stop()

    run(scenario)


def test_a_member_that_sees_another_member_go_first_is_not_replaced_for_it() -> None:
    """Found on real processes: a member that noticed a killed member's disconnect before the entry
    node did used to fail its part, and was replaced with the dead one; with 2t+1 live holders
    left, the operation then had too few."""

    async def scenario() -> None:
        hub, cores = await make_cluster(4, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, public, _ = await publish(cores, author, 1)
            witness, victim = cores[1], cores[2]
            cores[0].suspect([cores[3].node_id])  # the first group is {0, 1, 2}, node 3 the one spare
            cores[0].liveness.min_hedge = 0.3  # no hedge before the entry node sees the victim go
            fired: list[bool] = []

            def drop(src: bytes, dst: bytes, env: m.Envelope) -> bool:
                if (src, dst) == (victim.node_id, witness.node_id) and isinstance(env.body, m.EcdsaDealing):
                    fired.append(True)
                    witness.on_peer_disconnected(victim.node_id)  # the witness sees it go first
                    asyncio.get_running_loop().call_later(0.05, hub.isolate, victim.node_id)
                    return True
                return False

            hub.drop = drop
            message_hash = os.urandom(32)
            check(await sign(cores[0], key_id, author, message_hash), message_hash, public)
            assert fired
            starts = [dst for src, dst, kind in hub.sent if src == cores[0].node_id and kind == "EcdsaStart"]
            assert set(starts[2:]) == {witness.node_id, cores[3].node_id}
        finally:
            await hub.stop()

    run(scenario)


def test_a_frozen_member_is_hedged_around_and_one_down_beside_it_changes_nothing() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(5, session_timeout=2.0)
        try:
            author = Account()
            key_id, public, _ = await publish(cores, author, 1)
            hub.freeze(cores[1].node_id)
            cores[0].suspect([cores[3].node_id, cores[4].node_id])  # entry 0's first group holds the frozen one
            for entries in ((0, 2, 3, 4), (0, 2, 3)):
                for entry in entries:
                    message_hash = os.urandom(32)
                    started = time.monotonic()
                    check(await sign(cores[entry], key_id, author, message_hash), message_hash, public)
                    assert time.monotonic() - started < 1.0  # hedged at the delay, not the session timeout
                hub.isolate(cores[4].node_id)  # then one frozen and one down: 3 = 2t+1 left
            assert any(dst == cores[1].node_id and kind == "EcdsaStart" for _, dst, kind in hub.sent)
        finally:
            hub.thaw(cores[1].node_id)
            await hub.stop()

    run(scenario)


def test_with_2t_live_holders_the_session_timeout_bounds_the_refusal() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(5, session_timeout=0.5)
        try:
            author = Account()
            key_id, public, _ = await publish(cores, author, 1)
            for index in (2, 3, 4):
                hub.freeze(cores[index].node_id)
            started = time.monotonic()
            with pytest.raises(ConsensusTemporaryUnreachable):
                await sign(cores[0], key_id, author, os.urandom(32))
            assert time.monotonic() - started < 0.5 + 0.3
            for index in (2, 3, 4):
                hub.thaw(cores[index].node_id)
            message_hash = os.urandom(32)
            check(await sign(cores[1], key_id, author, message_hash), message_hash, public)
        finally:
            for core in cores:
                hub.thaw(core.node_id)
            await hub.stop()

    run(scenario)


# -- members that cheat ----------------------------------------------------------------------------


def _tampered_dealing(env: m.Envelope, **changes: Any) -> m.Envelope:
    return m.Envelope(dataclasses.replace(cast("m.EcdsaDealing", env.body), **changes), env.rid, env.reply_to)


@pytest.mark.parametrize("victim", ["member", "entry"])
def test_a_cheating_dealer_is_named_and_the_attempt_replaced(victim: str, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(5, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, public, _ = await publish(cores, author, 1)
            entry, honest, cheater = cores[0].node_id, cores[1].node_id, cores[2].node_id
            target = entry if victim == "entry" else honest

            def tamper(src: bytes, dst: bytes, env: m.Envelope) -> m.Envelope:
                if src == cheater and dst == target and isinstance(env.body, m.EcdsaDealing):
                    return _tampered_dealing(env, nonce1=(env.body.nonce1 + 1) % N)
                return env

            hub.tamper = tamper
            cores[0].suspect([cores[3].node_id, cores[4].node_id])  # the first group is {0, 1, 2}
            message_hash = os.urandom(32)
            with caplog.at_level(logging.WARNING, logger=LOGGER):
                check(await sign(cores[0], key_id, author, message_hash), message_hash, public)
            named = [r.getMessage() for r in caplog.records if "0x" + cheater.hex()[:16] in r.getMessage()]
            assert named, caplog.text
            starts = [dst for src, dst, kind in hub.sent if src == entry and kind == "EcdsaStart"]
            assert set(starts[:2]) == {honest, cheater}  # the first attempt's group
            second = set(starts[2:])
            assert cheater not in second  # the cheater is out of the operation
            if victim == "member":
                assert honest not in second  # an accusation the entry cannot check takes both out
            else:
                assert honest in second  # the entry trusts its own check: only the cheater leaves
        finally:
            await hub.stop()

    run(scenario)


def test_commitments_shown_differently_to_two_members_take_both_out() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(5, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, public, _ = await publish(cores, author, 1)
            honest, cheater = cores[1].node_id, cores[2].node_id

            def tamper(src: bytes, dst: bytes, env: m.Envelope) -> m.Envelope:
                # the nonce's public share is not covered by the pairs' check: only the digests see it
                if src == cheater and dst == honest and isinstance(env.body, m.EcdsaDealing):
                    return _tampered_dealing(env, nonce_public_share=Point.generator_mul(12345))
                return env

            hub.tamper = tamper
            cores[0].suspect([cores[3].node_id, cores[4].node_id])
            message_hash = os.urandom(32)
            check(await sign(cores[0], key_id, author, message_hash), message_hash, public)
            starts = [dst for src, dst, kind in hub.sent if src == cores[0].node_id and kind == "EcdsaStart"]
            assert set(starts[:2]) == {honest, cheater}
            assert set(starts[2:]) == {cores[3].node_id, cores[4].node_id}
        finally:
            await hub.stop()

    run(scenario)


@pytest.mark.parametrize("kind", ["EcdsaDealt", "EcdsaPartialReply"])
def test_a_wrong_inversion_share_or_partial_never_yields_a_signature(kind: str) -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, _, _ = await publish(cores, author, 1)

            def tamper(src: bytes, dst: bytes, env: m.Envelope) -> m.Envelope:
                body = env.body
                if isinstance(body, m.EcdsaDealt) and kind == "EcdsaDealt":
                    body = dataclasses.replace(body, coeff_share=(body.coeff_share + 1) % N)
                elif isinstance(body, m.EcdsaPartialReply) and kind == "EcdsaPartialReply":
                    body = dataclasses.replace(body, partial=(body.partial + 1) % N)
                else:
                    return env
                return m.Envelope(body, env.rid, env.reply_to)

            hub.tamper = tamper
            with pytest.raises(InternalError, match="does not verify"):
                await sign(cores[0], key_id, author, os.urandom(32))
        finally:
            await hub.stop()

    run(scenario)


# -- forgetting, delegation ------------------------------------------------------------------------


def test_a_cancelled_attempt_is_forgotten_even_before_it_began_at_a_member() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=TIMEOUT)
        try:
            session, member, entry = os.urandom(32), cores[1], cores[0]
            author = Account()
            key_id, public, _ = await publish(cores, author, 1)
            # a dealing waits for its EcdsaStart; the master's cancel drops it and refuses the start
            dealing = m.EcdsaDealing(session=session, nonce1=1, nonce2=2, inversion1=3, inversion2=4, zero1=5,
                                     zero2=6, mask1=7, mask2=8, nonce_commitments=(), inversion_commitments=(),
                                     zero_commitments=(), mask_commitments=(), nonce_public_share=public)
            await cores[2].send(member.node_id, dealing)
            await asyncio.sleep(0.01)
            assert member.sessions["ecdsa-early"][session].messages
            await entry.send(member.node_id, m.EcdsaCancel(session))
            await asyncio.sleep(0.01)
            assert not member.sessions["ecdsa-early"][session].messages
            version = stored(entry, key_id).last_version
            start = m.EcdsaStart(session=session, key_id=key_id, signature=author.sign(key_id), version=version.hash,
                                 group=tuple(sorted(c.node_id for c in cores)), message_hash=os.urandom(32))
            with pytest.raises(Exception, match="no active session"):
                await entry.request(member.node_id, start, m.EcdsaDealt)
            assert not member.sessions.get("ecdsa")
        finally:
            await hub.stop()

    run(scenario)


def test_members_that_lose_the_entry_node_forget_the_attempt() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, _, _ = await publish(cores, author, 1)
            entry = cores[0]

            def drop(src: bytes, dst: bytes, env: m.Envelope) -> bool:
                if isinstance(env.body, m.EcdsaPartial):  # every member holds its shares, waiting
                    asyncio.get_running_loop().call_soon(hub.isolate, entry.node_id)
                    return True
                return False

            hub.drop = drop
            with pytest.raises(ConsensusTemporaryUnreachable):
                await sign(entry, key_id, author, os.urandom(32))
            for member in cores[1:]:
                states = list(member.sessions.get("ecdsa", {}).values())
                assert states  # still in the table until it expires, but with nothing secret left
                assert all(s.shares is None and not s.dealings for s in states)
        finally:
            await hub.stop()

    run(scenario)


def test_an_entry_node_without_a_share_delegates_ecdsa_signing() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(5, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, public, _ = await publish(cores, author, 1)
            cores[0].storage.remove(key_id)
            cores[0]._keys.pop(key_id, None)
            message_hash = os.urandom(32)
            check(await sign(cores[0], key_id, author, message_hash), message_hash, public)
            assert any(kind == "Delegate" and src == cores[0].node_id for src, _, kind in hub.sent)
        finally:
            await hub.stop()

    run(scenario)
