"""Sessions driven over the in-memory bus: every operation, its errors, and nodes dropping out at
every phase. No sockets; each test is bounded by the session timeout."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ocean_secret_store.crypto import ecies, schnorr, shadows
from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.crypto.document import generate_document_key
from ocean_secret_store.crypto.hashes import address_of
from ocean_secret_store.crypto.sharing import shadow_coefficients
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.exceptions import (
    AccessDenied,
    ConsensusTemporaryUnreachable,
    ConsensusUnreachable,
    DocumentKeyAlreadyStored,
    DocumentKeyIsNotFound,
    InsufficientRequesterData,
    InvalidMessage,
    InvalidPoint,
    KeyServerError,
    NodeDisconnected,
    NotEnoughNodesForThreshold,
    ServerKeyAlreadyGenerated,
    ServerKeyIsNotFound,
)
from ocean_secret_store.node.acl import AccessChecker, AllowAll, Decision
from ocean_secret_store.node.cluster import ClusterCore
from ocean_secret_store.node.storage import KeyShare
from ocean_secret_store.protocol import messages as m

from .memnet import DenyList, make_cluster

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


async def publish(
    cores: list[ClusterCore], author: Account, threshold: int, entry: int = 0
) -> tuple[bytes, Point, Point]:
    key_id = os.urandom(32)
    server_public = await cores[entry].generate_server_key(key_id, author.sign(key_id), threshold)
    document_key, common, encrypted = generate_document_key(server_public)
    await cores[entry].store_document_key(key_id, author.sign(key_id), common, encrypted)
    return key_id, server_public, document_key


def stored(core: ClusterCore, key_id: bytes) -> KeyShare:
    share = core.storage.get(key_id)
    if share is None:
        raise AssertionError(f"node 0x{core.node_id.hex()[:8]} holds no share of the key")
    return share


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
            shares = {stored(c, key_id).last_version.secret_share for c in cores}
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
        denials: list[DenyList] = []

        def deny_list() -> DenyList:
            denials.append(DenyList())
            return denials[-1]

        hub, cores = await make_cluster(3, session_timeout=TIMEOUT, acl_factory=deny_list)
        try:
            author, stranger = Account(), Account()
            key_id, _, document_key = await publish(cores, author, 1)
            for acl in denials:
                acl.prohibit(stranger.address, key_id)
            with pytest.raises(ConsensusUnreachable):
                await shadow_key(cores[0], key_id, stranger)
            with pytest.raises(ConsensusUnreachable):
                await cores[1].schnorr_sign(key_id, stranger.sign(key_id), os.urandom(32))
            # one node refusing is outvoted by the others (t + 1 = 2 of 3 suffice)
            denials[2].prohibit(author.address, key_id)
            for core in cores[:2]:
                assert await shadow_key(core, key_id, author) == document_key
        finally:
            await hub.stop()

    run(scenario)


class AuthorBound:
    """The contract checker's rule without a chain: the author, or a grantee of a DID whose first
    registrant is the author. Records the author every decision was asked about."""

    def __init__(self, first_registrant: dict[bytes, bytes], grantees: set[bytes]) -> None:
        self.first_registrant = first_registrant
        self.grantees = grantees
        self.authors_seen: list[bytes] = []

    async def decide(self, requester: bytes, key_id: bytes, author: bytes,
                     owner: bytes | None = None) -> Decision:
        self.authors_seen.append(author)
        if requester == author:
            return Decision(True, "the key's author")
        if requester in self.grantees and self.first_registrant.get(key_id) == author:
            return Decision(True, "granted")
        return Decision(False, "first registered by someone else")

    async def close(self) -> None:
        return None


class Recorded:
    def __init__(self) -> None:
        self.lines: list[tuple[str, bytes | None, str, str, str]] = []

    def record(self, operation: str, key_id: bytes, requester: bytes | None, role: str, decision: str,
               reason: str = "") -> None:
        self.lines.append((operation, requester, role, decision, reason))


def test_every_member_decides_on_the_author_it_stored_and_audits_why() -> None:
    """An entry node that lets a hijacker's grantee in (here: it allows everyone) gets nothing: the
    members bind the key to the author they stored at generation and refuse on their own."""

    async def scenario() -> None:
        author, grantee = Account(), Account()
        first: dict[bytes, bytes] = {}
        checkers: list[AuthorBound] = []

        def checker() -> AccessChecker:
            if not checkers:  # cores[0]'s checker: trusts everyone
                checkers.append(AuthorBound(first, set()))
                return AllowAll()
            checkers.append(AuthorBound(first, {grantee.address}))
            return checkers[-1]

        hub, cores = await make_cluster(3, session_timeout=TIMEOUT, acl_factory=checker)
        audits = [Recorded() for _ in cores]
        for core, audit in zip(cores, audits, strict=True):
            core.audit = audit
        try:
            key_id, _, document_key = await publish(cores, author, 2)  # t = 2: every node takes part
            first[key_id] = os.urandom(20)  # a hijacker registered the DID first
            with pytest.raises(ConsensusUnreachable):
                await shadow_key(cores[0], key_id, grantee)
            with pytest.raises(ConsensusUnreachable):
                await cores[0].schnorr_sign(key_id, grantee.sign(key_id), os.urandom(32))
            refusals = [line for audit in audits[1:] for line in audit.lines if line[3] == "refused"]
            assert refusals
            assert {(role, reason) for _, _, role, _, reason in refusals} == {
                ("member", "first registered by someone else")}
            # through a binding node, the entry's own refusal is audited with its reason; the
            # client sees Parity's text only
            with pytest.raises(ConsensusUnreachable) as refused:
                await shadow_key(cores[1], key_id, grantee)
            assert str(refused.value) == "Consensus unreachable"
            assert audits[1].lines[-1][2:] == (
                "entry", "refused", "ConsensusUnreachable: first registered by someone else")
            # the author keeps its key; once the author is the first registrant, the grantee is served
            assert await shadow_key(cores[0], key_id, author) == document_key
            first[key_id] = author.address
            assert await shadow_key(cores[0], key_id, grantee) == document_key
            assert {a for c in checkers[1:] for a in c.authors_seen} == {author.address}
        finally:
            await hub.stop()

    run(scenario)


GENERATION_PHASES = ["GenInit", "GenStart", "GenDealing", "GenPublics", "GenReady", "GenCommit"]


@pytest.mark.parametrize("phase", GENERATION_PHASES)
def test_generation_fails_cleanly_when_a_node_drops_at_each_phase(phase: str) -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(4, session_timeout=TIMEOUT)
        fired = hub.isolate_at(phase, cores[2].node_id)
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
                if kind == env.body.KIND and not fired:
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
                if kind == env.body.KIND and not fired:
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
            records = [stored(c, key_id) for c in cores]
            common, encrypted = records[0].common_point, records[0].encrypted_point
            assert common is not None and encrypted is not None
            for subset in ([0], [1], [0, 1], [2, 4], [3, 1]):
                chosen = [records[i].last_version for i in subset]
                xs = [v.id_numbers[cores[i].node_id] for v, i in zip(chosen, subset, strict=True)]
                # The best t holders can do: Lagrange-combine their shares as if they were t+1.
                guess_secret = 0
                coefficients = shadow_coefficients(xs)
                for v, c in zip(chosen, coefficients, strict=True):
                    guess_secret += c * v.secret_share
                for sign in (1, -1):
                    with contextlib.suppress(InvalidPoint):  # the point at infinity is no document key either
                        assert encrypted - (sign * guess_secret) * common != document_key
                assert Point.generator_mul(guess_secret) != server_public
        finally:
            await hub.stop()

    run(scenario)


# -- peers that answer with malformed or wrong-typed messages ------------------------------------------


def replies_from(liars: set[bytes], kind: type[m.Message], forge: Callable[[Any], m.Message]) -> Callable[
        [bytes, bytes, m.Envelope], m.Envelope]:
    """A tamper hook: replies of type ``kind`` sent by ``liars`` are replaced by ``forge(reply)``."""

    def tamper(src: bytes, dst: bytes, env: m.Envelope) -> m.Envelope:
        if src in liars and env.reply_to is not None and isinstance(env.body, kind):
            return m.Envelope(forge(env.body), reply_to=env.reply_to)
        return env

    return tamper


@pytest.mark.parametrize("liars", [1, 2])
def test_key_info_claiming_the_key_without_its_author_is_that_holders_failure(liars: int) -> None:
    """Regression: KeyInfo(found=True, author=None) from a peer gave a 500 Internal (an assert)."""

    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=TIMEOUT)
        entry = cores[0]
        entry.key_cache_size = 0  # the entry node must read its storage, which loses the key below
        try:
            author = Account()
            key_id, server_public, _ = await publish(cores, author, 1)
            entry.storage.remove(key_id)  # e.g. restored from a backup older than the key
            lying = {c.node_id for c in cores[1:1 + liars]}
            hub.tamper = replies_from(lying, m.KeyInfo, lambda info: dataclasses.replace(info, author=None))
            if liars < len(cores) - 1:
                # the next holder's well-formed answer is used
                assert await entry.retrieve_server_key(key_id, author.sign(key_id)) == server_public
            else:
                # no usable answer: the operation's own Parity error, as when the holders are unreachable
                with pytest.raises(ServerKeyIsNotFound):
                    await entry.retrieve_server_key(key_id, author.sign(key_id))
        finally:
            await hub.stop()

    run(scenario)


@pytest.mark.parametrize("forgery", ["wrong type", "shadow missing"])
def test_a_member_with_a_malformed_decryption_answer_is_replaced(forgery: str) -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(5, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, _, document_key = await publish(cores, author, 2)
            forged: list[m.DecryptResponse] = []

            def forge(response: m.DecryptResponse) -> m.Message:
                forged.append(response)
                if forgery == "wrong type":
                    return m.Ack()
                return dataclasses.replace(response, decrypt_shadow=None)

            # Two of the four other holders lie; t = 2 honest ones remain to replace them.
            hub.tamper = replies_from({cores[1].node_id, cores[2].node_id}, m.DecryptResponse, forge)
            for _ in range(20):  # members are picked at random: ask until a liar was among them
                assert await shadow_key(cores[0], key_id, author) == document_key
                if forged:
                    break
            assert forged
        finally:
            await hub.stop()

    run(scenario)


def test_a_node_answering_gen_start_with_the_wrong_message_fails_generation_cleanly() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id = os.urandom(32)
            hub.tamper = replies_from({cores[2].node_id}, m.GenReady, lambda ready: m.Ack())
            with pytest.raises(InvalidMessage):
                await cores[0].generate_server_key(key_id, author.sign(key_id), 1)
            await asyncio.sleep(0.05)
            assert not cores[0].storage.contains(key_id)
        finally:
            await hub.stop()

    run(scenario)


def test_an_unreadable_answer_fails_its_request_at_once_and_an_unreadable_request_is_answered() -> None:
    """A peer of another version: its answer that does not decode fails the request now (not after the
    timeout), and its request that does not decode gets InvalidMessage back."""

    async def scenario() -> None:
        hub, cores = await make_cluster(2, session_timeout=30.0)
        a, b = cores
        try:
            hub.drop = lambda src, dst, env: isinstance(env.body, m.KeyInfoRequest)
            pending = asyncio.ensure_future(a.request(b.node_id, m.KeyInfoRequest(key_id=bytes(32)), m.KeyInfo))
            await asyncio.sleep(0.05)
            (rid,) = list(a._pending)
            started = asyncio.get_running_loop().time()
            await a.on_message(b.node_id, json.dumps({"kind": "KeyInfo", "rid": None, "reply_to": rid}).encode())
            with pytest.raises(InvalidMessage):
                await pending
            assert asyncio.get_running_loop().time() - started < 1.0
            hub.drop = lambda src, dst, env: False
            replies: list[m.Envelope] = []
            hub.tamper = lambda src, dst, env: (replies.append(env), env)[1]
            await b.on_message(a.node_id, json.dumps({"kind": "KeyInfoRequest", "rid": 77, "reply_to": None,
                                                      "key_id": "0x12"}).encode())
            await asyncio.sleep(0.05)
            assert any(e.reply_to == 77 and isinstance(e.body, m.ErrorReply) and e.body.error == "InvalidMessage"
                       for e in replies)
        finally:
            await hub.stop()

    run(scenario)


@pytest.mark.parametrize("signature", [
    bytes(65),                                   # r = s = 0: the range check's own text says "bad signature"
    b"\x01" * 32 + b"\x01" * 32 + b"\x05",       # v out of range: likewise
    b"\x01" * 64,                                # 64 bytes: the length check's text does not
])
def test_a_bad_requester_signature_is_named_once(signature: bytes) -> None:
    from ocean_secret_store.node.sessions.base import Requester

    with pytest.raises(InsufficientRequesterData) as refused:
        Requester.from_signature(signature, os.urandom(32))
    text = str(refused.value)
    assert text.count("bad signature") == 1, text
