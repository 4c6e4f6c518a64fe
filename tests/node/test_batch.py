"""Batch shadow retrieval (``POST /shadow_batch``, node/sessions/batch.py) over the in-memory bus:
per-key results as single retrievals give them, every member's access check per key, one
exchange per member for the whole batch, members down and frozen; the HTTP route's refusals; and
the SDK's ``retrieve_many`` / ``recover_many`` against a real in-memory cluster behind the API."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator

import pytest
from aiohttp import ClientSession
from eth_account import Account as EthAccount

from ocean_secret_store.client.client import DocumentKeyShadow, SecretStoreClient
from ocean_secret_store.crypto import ecies, shadows
from ocean_secret_store.crypto.curve import Point
from ocean_secret_store.crypto.document import generate_document_key
from ocean_secret_store.exceptions import (
    ConsensusTemporaryUnreachable,
    ConsensusUnreachable,
    DocumentKeyIsNotFound,
    InsufficientRequesterData,
    KeyServerError,
    ServerKeyIsNotFound,
)
from ocean_secret_store.node.acl import Decision
from ocean_secret_store.node.cluster import ClusterCore
from ocean_secret_store.node.http_api import make_app
from ocean_secret_store.node.sessions import decryption
from ocean_secret_store.protocol import batch as bt
from ocean_secret_store.protocol import messages as m
from ocean_secret_store.testing.servers import ServerThread

from .memnet import DenyList, Hub, make_cluster
from .test_sessions import Account, publish, run

TIMEOUT = 2.0


class SpyAcl(DenyList):
    """A deny list that counts every decision it is asked for, by (requester, key)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: Counter[tuple[bytes, bytes]] = Counter()

    async def decide(self, requester: bytes, key_id: bytes, author: bytes,
                     owner: bytes | None = None) -> Decision:
        self.asked[(requester, key_id)] += 1
        return await super().decide(requester, key_id, author, owner)


async def spied_cluster(n: int) -> tuple[Hub, list[ClusterCore], list[SpyAcl]]:
    spies: list[SpyAcl] = []

    def factory() -> SpyAcl:
        spies.append(SpyAcl())
        return spies[-1]

    hub, cores = await make_cluster(n, session_timeout=TIMEOUT, acl_factory=factory)
    return hub, cores, spies


def recovered(result: decryption.ShadowResult | KeyServerError, account: Account) -> Point:
    assert isinstance(result, decryption.ShadowResult), result
    return shadows.recover_document_key(result.decrypted_secret, result.common_point, list(result.decrypt_shadows),
                                        account.secret)


def test_mixed_batch_answers_each_key_as_a_single_retrieval_would() -> None:
    async def scenario() -> None:
        hub, cores, spies = await spied_cluster(5)
        try:
            author, stranger = Account(), Account()
            keys = [await publish(cores, author, 2) for _ in range(6)]
            denied_everywhere = keys[4][0]
            for spy in spies:
                spy.prohibit(stranger.address, denied_everywhere)
            # one member refuses the author one key: a single retrieval replaces it, and so does the batch
            one_view = keys[5][0]
            spies[3].prohibit(author.address, one_view)
            unknown = os.urandom(32)
            bare = os.urandom(32)
            await cores[0].generate_server_key(bare, author.sign(bare), 2)
            bad = bytearray(author.sign(keys[0][0]))
            bad[64] = 27
            requests = [(k, author.sign(k)) for k, _, _ in keys[:4]]
            requests += [(denied_everywhere, stranger.sign(denied_everywhere)), (one_view, author.sign(one_view)),
                         (unknown, author.sign(unknown)), (bare, author.sign(bare)), (keys[0][0], bytes(bad)),
                         (keys[1][0], stranger.sign(keys[1][0]))]
            hub.sent.clear()
            results = await cores[0].retrieve_document_key_shadows(requests)
            assert len(results) == len(requests)
            for (_, _, document_key), result in zip(keys[:4], results[:4], strict=True):
                assert recovered(result, author) == document_key
            assert isinstance(results[4], ConsensusUnreachable)
            assert recovered(results[5], author) == keys[5][2]
            assert isinstance(results[6], ServerKeyIsNotFound)
            assert isinstance(results[7], DocumentKeyIsNotFound)
            assert isinstance(results[8], InsufficientRequesterData)
            assert recovered(results[9], stranger) == keys[1][2]  # another requester in the same batch
            # one exchange per member for the whole batch (t = 2 members; a member the hedge delay
            # found slow on a loaded host may be replaced by a spare, which gets its one exchange too),
            # plus at most a single retrieval for the key one member refused
            batches = [target for _, target, kind in hub.sent if kind == "DecryptBatch"]
            assert 2 <= len(batches) <= 4 and len(set(batches)) == len(batches), batches
            assert sum(kind == "Decrypt" for _, _, kind in hub.sent) <= 4
        finally:
            await hub.stop()

    run(scenario)


def test_every_member_checks_each_keys_requester() -> None:
    async def scenario() -> None:
        hub, cores, spies = await spied_cluster(5)
        try:
            author, grantee = Account(), Account()
            keys = [await publish(cores, author, 2) for _ in range(5)]
            requests = [(k, (author if i % 2 else grantee).sign(k)) for i, (k, _, _) in enumerate(keys)]
            for spy in spies:
                spy.asked.clear()
            results = await cores[1].retrieve_document_key_shadows(requests)
            for i, ((key_id, _, document_key), result) in enumerate(zip(keys, results, strict=True)):
                requester = author if i % 2 else grantee
                assert recovered(result, requester) == document_key
                asked = [spy.asked[(requester.address, key_id)] for spy in spies]
                # the entry node and exactly t = 2 members, each once, for this key's requester
                assert sorted(asked) == [0, 0, 1, 1, 1]
                assert spies[1].asked[(requester.address, key_id)] == 1
        finally:
            await hub.stop()

    run(scenario)


def test_each_answer_seals_its_shadows_under_one_ephemeral_key_per_requester() -> None:
    async def scenario() -> None:
        hub, cores, _ = await spied_cluster(5)
        try:
            author, grantee = Account(), Account()
            keys = [await publish(cores, author, 2) for _ in range(8)]
            requester = [author if i % 2 else grantee for i in range(len(keys))]
            results = await cores[0].retrieve_document_key_shadows(
                [(k, who.sign(k)) for (k, _, _), who in zip(keys, requester, strict=True)])
            # 8 keys: one exchange, one group, each decrypt shadow in group order (the entry's among them)
            points: dict[tuple[int, bytes], set[bytes]] = {}
            for (_, _, document_key), who, result in zip(keys, requester, results, strict=True):
                assert isinstance(result, decryption.ShadowResult)
                assert len(result.decrypt_shadows) == 3
                for position, blob in enumerate(result.decrypt_shadows):
                    assert len(ecies.decrypt(who.secret, blob)) == 32  # each opens alone, as a single's
                    points.setdefault((position, who.address), set()).add(blob[1:65])
                assert recovered(result, who) == document_key
            # each answer (position) has ONE ephemeral point per requester, and no point is shared
            # between answers or between requesters
            assert all(len(found) == 1 for found in points.values()), points
            assert len({next(iter(found)) for found in points.values()}) == 2 * 3
            ivs = [blob[65:81] for r in results if isinstance(r, decryption.ShadowResult) for blob in r.decrypt_shadows]
            assert len(set(ivs)) == len(ivs)
        finally:
            await hub.stop()

    run(scenario)


def test_members_down_make_each_key_temporarily_unreachable() -> None:
    async def scenario() -> None:
        hub, cores, _ = await spied_cluster(5)
        try:
            author = Account()
            keys = [await publish(cores, author, 2) for _ in range(3)]
            for core in cores[2:]:
                hub.isolate(core.node_id)  # t = 2 and only one other holder left
            results = await cores[0].retrieve_document_key_shadows([(k, author.sign(k)) for k, _, _ in keys])
            assert all(isinstance(r, ConsensusTemporaryUnreachable) for r in results), results
        finally:
            await hub.stop()

    run(scenario)


def test_a_frozen_member_is_hedged_around_for_the_whole_batch() -> None:
    async def scenario() -> None:
        hub, cores, _ = await spied_cluster(5)
        try:
            author = Account()
            keys = [await publish(cores, author, 2) for _ in range(20)]
            hub.freeze(cores[4].node_id)
            hub.freeze(cores[3].node_id)
            results = await cores[0].retrieve_document_key_shadows([(k, author.sign(k)) for k, _, _ in keys])
            for (_, _, document_key), result in zip(keys, results, strict=True):
                assert recovered(result, author) == document_key
            hub.thaw(cores[4].node_id)
            hub.thaw(cores[3].node_id)
        finally:
            await hub.stop()

    run(scenario)


def test_keys_this_node_does_not_hold_are_delegated() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(4, session_timeout=TIMEOUT, servers=3)
        try:
            author = Account()
            keys = [await publish(cores, author, 1) for _ in range(3)]
            results = await cores[3].retrieve_document_key_shadows([(k, author.sign(k)) for k, _, _ in keys])
            for (_, _, document_key), result in zip(keys, results, strict=True):
                assert recovered(result, author) == document_key
        finally:
            await hub.stop()

    run(scenario)


def test_batch_message_codec_round_trip_and_limits() -> None:
    item = m.DecryptBatchItem(key_id=b"\x01" * 32, signature=b"\x02" * 65, version=b"\x03" * 32, access_key=7)
    request = m.DecryptBatchRequest(group=(Point.generator_mul(5).to_bytes(),), items=(item,) * m.MAX_DECRYPT_BATCH)
    decoded = m.decode(m.encode(m.Envelope(request, rid=3))).body
    assert isinstance(decoded, m.DecryptBatchRequest)
    assert decoded.items[-1].access_key == 7 and len(decoded.items) == m.MAX_DECRYPT_BATCH
    too_many = json.loads(m.encode(m.Envelope(request, rid=3)))
    too_many["items"].append(too_many["items"][0])
    with pytest.raises(KeyServerError):
        m.decode(json.dumps(too_many).encode())


# -- HTTP -----------------------------------------------------------------------------------------


def test_http_route_answers_in_order_and_refuses_malformed_batches() -> None:
    async def scenario() -> None:
        from aiohttp.test_utils import TestServer

        hub, cores = await make_cluster(3, session_timeout=TIMEOUT)
        server = TestServer(make_app(cores[0]))
        await server.start_server()
        try:
            author = Account()
            key_id, _, document_key = await publish(cores, author, 1)
            unknown = os.urandom(32)
            url = str(server.make_url(bt.PATH))
            async with ClientSession() as http:
                body = bt.encode_batch_request([(key_id, author.sign(key_id)), (unknown, author.sign(unknown))])
                async with http.post(url, data=body) as response:
                    assert response.status == 200
                    raw = await response.read()
                results = bt.decode_batch_response(raw, [key_id, unknown])
                shadow = results[0]
                assert isinstance(shadow, DocumentKeyShadow)
                assert shadows.recover_document_key(shadow.decrypted_secret, shadow.common_point,
                                                    list(shadow.decrypt_shadows), author.secret) == document_key
                assert isinstance(results[1], ServerKeyIsNotFound)
                assert json.loads(raw)["results"][1]["error"] == {
                    "status": 404, "name": "ServerKeyIsNotFound", "message": "Server key with this ID is not found"}
                too_many = bt.encode_batch_request([(key_id, author.sign(key_id))] * (bt.MAX_BATCH + 1))
                async with http.post(url, data=too_many) as response:
                    assert response.status == 400
                    assert "at most 256" in await response.json()
                entries = json.loads(body)
                entries["requests"][1]["signature"] = "0x12"
                async with http.post(url, data=json.dumps(entries)) as response:
                    assert response.status == 400
                    assert (await response.json()).startswith("entry 1: ")
                for bad in (b"", b"[]", b'{"requests": []}', b"not json"):
                    async with http.post(url, data=bad) as response:
                        assert response.status == 400
                async with http.post(url, data=b"x" * (bt.MAX_BATCH_BODY + 1)) as response:
                    assert response.status == 400
        finally:
            await server.close()
            await hub.stop()

    run(scenario)


# -- SDK ------------------------------------------------------------------------------------------


@pytest.fixture
def served_cluster() -> Iterator[list[str]]:
    """A 5-node in-memory cluster, two of its nodes behind the HTTP API: their URLs."""
    thread = ServerThread()
    hub, cores = thread.run(make_cluster(5, session_timeout=TIMEOUT))
    try:
        urls = [thread.start(make_app(core)) for core in cores[:2]]
        yield urls
    finally:
        thread.stop_all()
        thread.run(hub.stop())
        thread.close()


def test_sdk_retrieve_many_and_recover_many(served_cluster: list[str]) -> None:
    urls = served_cluster
    account = EthAccount.create()
    published = {}
    with SecretStoreClient(urls, account, timeout=5.0) as publisher:
        for _ in range(7):
            key_id = os.urandom(32)
            document_key, common, encrypted = generate_document_key(publisher.generate_server_key(key_id, 2))
            publisher.store_document_key(key_id, common, encrypted)
            published[key_id] = document_key
    with SecretStoreClient(["http://127.0.0.1:1", *urls], account, timeout=5.0) as client:
        unknown = os.urandom(32)
        ids = [*published, unknown]
        results = client.recover_many(ids, batch_size=3)  # three requests, the dead URL failed over
        assert results[:-1] == list(published.values())
        assert isinstance(results[-1], ServerKeyIsNotFound)
        shadows_only = client.retrieve_many(ids[:4])
        assert all(isinstance(r, DocumentKeyShadow) for r in shadows_only)
        # one batch, one requester: each of the t + 1 answers sealed its 4 shadows under one ephemeral key
        blobs = [blob for r in shadows_only if isinstance(r, DocumentKeyShadow) for blob in r.decrypt_shadows]
        assert len(blobs) == 12 and len({blob[1:65] for blob in blobs}) == 3
        assert len({blob[65:81] for blob in blobs}) == 12
        assert client.retrieve_many([]) == []
        with pytest.raises(Exception, match="batch_size"):
            client.retrieve_many(ids, batch_size=0)


def test_a_larger_batch_is_spread_over_disjoint_groups() -> None:
    async def scenario() -> None:
        hub, cores, _ = await spied_cluster(5)
        try:
            author = Account()
            keys = [await publish(cores, author, 2) for _ in range(40)]
            hub.sent.clear()
            results = await cores[0].retrieve_document_key_shadows([(k, author.sign(k)) for k, _, _ in keys])
            for (_, _, document_key), result in zip(keys, results, strict=True):
                assert recovered(result, author) == document_key
            exchanges = [(src, dst) for src, dst, kind in hub.sent if kind == "DecryptBatch"]
            # two exchanges of 20 keys, each with t = 2 members, no member in both
            assert len(exchanges) == 4
            assert len({dst for _, dst in exchanges}) == 4
            assert all(src == cores[0].node_id for src, _ in exchanges)
        finally:
            await hub.stop()

    run(scenario)
