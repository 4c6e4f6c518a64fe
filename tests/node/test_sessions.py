"""Sessions driven over the in-memory bus: every operation, its errors, and nodes dropping out at
every phase. No sockets; each test is bounded by the session timeout."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ocean_secret_store.crypto import ecies, schnorr, shadows
from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.crypto.document import generate_document_key
from ocean_secret_store.crypto.hashes import address_of
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.exceptions import (
    AccessDenied,
    ConsensusTemporaryUnreachable,
    ConsensusUnreachable,
    DocumentKeyAlreadyStored,
    DocumentKeyIsNotFound,
    InsufficientRequesterData,
    KeyServerError,
    NodeDisconnected,
    NotEnoughNodesForThreshold,
    ServerKeyAlreadyGenerated,
    ServerKeyIsNotFound,
)
from ocean_secret_store.node.acl import DenyList
from ocean_secret_store.node.cluster import ClusterCore

from .memnet import Hub, make_cluster

TIMEOUT = 1.0


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(coro_fn(), 30))


class Account:
    def __init__(self) -> None:
        self.secret = random_scalar()
        self.public = Point.generator_mul(self.secret)
        self.address = address_of(self.public)

    def sign(self, key_id: bytes) -> bytes:
        return sign_raw_hash(self.secret, key_id)


async def publish(cores: list[ClusterCore], author: Account, threshold: int, entry: int = 0) -> tuple[bytes, Point, Point]:
    key_id = os.urandom(32)
    server_public = await cores[entry].generate_server_key(key_id, author.sign(key_id), threshold)
    document_key, common, encrypted = generate_document_key(server_public)
    await cores[entry].store_document_key(key_id, author.sign(key_id), common, encrypted)
    return key_id, server_public, document_key


async def shadow_key(core: ClusterCore, key_id: bytes, account: Account) -> Point:
    result = await core.retrieve_document_key_shadow(key_id, account.sign(key_id))
    return shadows.recover_document_key(
        result.decrypted_secret, result.common_point, list(result.decrypt_shadows), account.secret
    )


@pytest.mark.parametrize(("n", "t"), [(1, 0), (2, 1), (3, 1), (3, 2), (5, 2), (5, 4)])
def test_every_operation_from_every_entry_node(n: int, t: int) -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(n, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, server_public, document_key = await publish(cores, author, t)
            for core in cores:
                assert await shadow_key(core, key_id, author) == document_key
                blob = await core.retrieve_document_key(key_id, author.sign(key_id))
                assert Point.from_bytes(ecies.decrypt(author.secret, blob)) == document_key
                assert await core.retrieve_server_key(key_id, author.sign(key_id)) == server_public
                digest = os.urandom(32)
                signed = ecies.decrypt(author.secret, await core.schnorr_sign(key_id, author.sign(key_id), digest))
                schnorr.verify(server_public, schnorr.parse_signature(signed), digest)
            # every node holds exactly one share of the key, and it is a different share
            shares = {c.storage.get(key_id).last_version.secret_share for c in cores}
            assert len(shares) == n
        finally:
            await hub.stop()

    run(scenario)


def test_combined_generation_returns_the_stored_document_key() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id = os.urandom(32)
            blob = await cores[1].generate_document_key(key_id, author.sign(key_id), 1)
            document_key = Point.from_bytes(ecies.decrypt(author.secret, blob))
            assert await shadow_key(cores[2], key_id, author) == document_key
        finally:
            await hub.stop()

    run(scenario)


def test_refusals_keep_parity_semantics_and_change_nothing() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=TIMEOUT)
        try:
            author, other = Account(), Account()
            key_id, public, document_key = await publish(cores, author, 1)
            with pytest.raises(ServerKeyAlreadyGenerated):
                await cores[2].generate_server_key(key_id, author.sign(key_id), 1)
            _, common, encrypted = generate_document_key(public)
            with pytest.raises(DocumentKeyAlreadyStored):
                await cores[0].store_document_key(key_id, author.sign(key_id), common, encrypted)
            with pytest.raises(AccessDenied):
                await cores[0].store_document_key(key_id, other.sign(key_id), common, encrypted)
            with pytest.raises(AccessDenied):
                await cores[1].retrieve_server_key(key_id, other.sign(key_id))
            bad = bytearray(author.sign(key_id))
            bad[64] = 27
            with pytest.raises(InsufficientRequesterData):
                await cores[0].retrieve_document_key_shadow(key_id, bytes(bad))
            unknown = os.urandom(32)
            with pytest.raises(ServerKeyIsNotFound):
                await cores[0].retrieve_document_key_shadow(unknown, author.sign(unknown))
            with pytest.raises(ServerKeyIsNotFound):
                await cores[0].retrieve_server_key(unknown, author.sign(unknown))
            with pytest.raises(NotEnoughNodesForThreshold):
                await cores[0].generate_server_key(unknown, author.sign(unknown), 3)
            bare = os.urandom(32)
            await cores[0].generate_server_key(bare, author.sign(bare), 1)
            with pytest.raises(DocumentKeyIsNotFound):
                await cores[1].retrieve_document_key_shadow(bare, author.sign(bare))
            # nothing changed: the original document key is still the one served
            assert await shadow_key(cores[2], key_id, author) == document_key
            assert not cores[0].storage.contains(unknown)
        finally:
            await hub.stop()

    run(scenario)


def test_acl_refusal_is_consensus_unreachable() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=TIMEOUT, acl_factory=DenyList)
        try:
            author, stranger = Account(), Account()
            key_id, _, document_key = await publish(cores, author, 1)
            for core in cores:
                core.acl.prohibit(stranger.address, key_id)
            with pytest.raises(ConsensusUnreachable):
                await shadow_key(cores[0], key_id, stranger)
            with pytest.raises(ConsensusUnreachable):
                await cores[1].schnorr_sign(key_id, stranger.sign(key_id), os.urandom(32))
            # one node refusing is outvoted by the others (t + 1 = 2 of 3 suffice)
            cores[2].acl.prohibit(author.address, key_id)
            for core in cores[:2]:
                assert await shadow_key(core, key_id, author) == document_key
        finally:
            await hub.stop()

    run(scenario)


GENERATION_PHASES = ["GenInit", "GenStart", "GenDealing", "GenPublics", "GenReady", "GenCommit"]


@pytest.mark.parametrize("phase", GENERATION_PHASES)
def test_generation_fails_cleanly_when_a_node_drops_at_each_phase(phase: str) -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(4, session_timeout=TIMEOUT)
        victim = cores[2].node_id
        fired = asyncio.Event()

        def drop(src: bytes, dst: bytes, env: Any) -> bool:
            if env.body.KIND == phase and victim in (src, dst) and not fired.is_set():
                fired.set()
                hub.isolate(victim)
                return True
            return False

        hub.drop = drop
        try:
            author = Account()
            key_id = os.urandom(32)
            loop = asyncio.get_running_loop()
            started = loop.time()
            if phase == "GenCommit":
                # Committing is the last step: the key may be stored on the nodes that got it,
                # but the master must not report success for a key a node does not hold.
                with pytest.raises(KeyServerError):
                    await cores[0].generate_server_key(key_id, author.sign(key_id), 1)
            else:
                with pytest.raises((NodeDisconnected, KeyServerError)):
                    await cores[0].generate_server_key(key_id, author.sign(key_id), 1)
                assert not any(c.storage.contains(key_id) for c in cores)
            assert loop.time() - started <= TIMEOUT * 1.5
            assert fired.is_set()
            await asyncio.sleep(0.05)
            assert not cores[0].sessions.get("generation")
        finally:
            await hub.stop()

    run(scenario)


@pytest.mark.parametrize("kind", ["Decrypt", "Decrypted"])
@pytest.mark.parametrize("mode", ["disconnect", "silent"])
def test_retrieval_survives_a_member_dropping_out(kind: str, mode: str) -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(5, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, _, document_key = await publish(cores, author, 2)
            fired: list[bytes] = []

            def drop(src: bytes, dst: bytes, env: Any) -> bool:
                if env.body.KIND == kind and not fired:
                    victim = dst if kind == "Decrypt" else src
                    fired.append(victim)
                    if mode == "disconnect":
                        hub.isolate(victim)
                    return True
                return False

            hub.drop = drop
            assert await shadow_key(cores[0], key_id, author) == document_key
            assert fired
        finally:
            await hub.stop()

    run(scenario)


def test_retrieval_with_only_t_live_nodes_fails_fast_and_changes_nothing() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(5, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, _, document_key = await publish(cores, author, 2)
            for core in cores[2:]:
                hub.isolate(core.node_id)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(ConsensusTemporaryUnreachable):
                await shadow_key(cores[0], key_id, author)
            with pytest.raises(ConsensusTemporaryUnreachable):
                await cores[1].schnorr_sign(key_id, author.sign(key_id), os.urandom(32))
            assert loop.time() - started <= TIMEOUT
            hub.restore(cores[2].node_id)
            assert await shadow_key(cores[0], key_id, author) == document_key
        finally:
            await hub.stop()

    run(scenario)


@pytest.mark.parametrize("kind", ["SchnorrNonce", "SchnorrNonceReply", "SchnorrPartial", "SchnorrPartialReply"])
def test_schnorr_survives_a_member_dropping_at_each_phase(kind: str) -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(5, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, server_public, _ = await publish(cores, author, 2)
            fired: list[bytes] = []

            def drop(src: bytes, dst: bytes, env: Any) -> bool:
                if env.body.KIND == kind and not fired:
                    victim = dst if kind in ("SchnorrNonce", "SchnorrPartial") else src
                    fired.append(victim)
                    hub.isolate(victim)
                    return True
                return False

            hub.drop = drop
            digest = os.urandom(32)
            signed = ecies.decrypt(author.secret, await cores[0].schnorr_sign(key_id, author.sign(key_id), digest))
            schnorr.verify(server_public, schnorr.parse_signature(signed), digest)
            assert fired
        finally:
            await hub.stop()

    run(scenario)


def test_generation_needs_every_node_connected() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=TIMEOUT)
        try:
            hub.isolate(cores[2].node_id)
            author = Account()
            key_id = os.urandom(32)
            with pytest.raises(NodeDisconnected):
                await cores[0].generate_server_key(key_id, author.sign(key_id), 1)
            assert not cores[0].storage.contains(key_id)
        finally:
            await hub.stop()

    run(scenario)


def test_malformed_peer_messages_are_dropped_and_the_node_keeps_serving() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, _, document_key = await publish(cores, author, 1)
            for junk in (b"", b"not json", b"[]", b'{"kind":"Nope"}', b'{"kind":"Decrypt","rid":1}',
                         b'{"kind":"GenDealing","rid":null,"reply_to":null,"session":"0x00"}'):
                await cores[0].on_message(cores[1].node_id, junk)
            assert cores[0].stats["invalid_messages"] >= 5
            assert await shadow_key(cores[0], key_id, author) == document_key
        finally:
            await hub.stop()

    run(scenario)


def test_no_single_node_and_no_t_nodes_reproduce_the_document_key() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(5, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, server_public, document_key = await publish(cores, author, 2)
            records = [c.storage.get(key_id) for c in cores]
            common, encrypted = records[0].common_point, records[0].encrypted_point
            for subset in ([0], [1], [0, 1], [2, 4], [3, 1]):
                chosen = [records[i].last_version for i in subset]
                xs = [v.id_numbers[cores[i].node_id] for v, i in zip(chosen, subset, strict=True)]
                # The best t holders can do: Lagrange-combine their shares as if they were t+1.
                guess_secret = 0
                from ocean_secret_store.crypto.sharing import shadow_coefficients

                coefficients = shadow_coefficients(xs)
                for v, c in zip(chosen, coefficients, strict=True):
                    guess_secret += c * v.secret_share
                for sign in (1, -1):
                    try:
                        guess = encrypted - (sign * guess_secret) * common
                    except Exception:
                        continue
                    assert guess != document_key
                assert Point.generator_mul(guess_secret) != server_public
        finally:
            await hub.stop()

    run(scenario)


_ = Hub
