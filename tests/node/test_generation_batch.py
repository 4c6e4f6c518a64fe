"""Batch server key generation (``POST /server_key_batch``, node/sessions/genbatch.py) over the in-memory
bus: every key usable through the single routes from any entry node with the same record a single
generation stores; per-key refusals (a key id twice, a stored key, a bad signature, one in a
concurrent single generation) that do not sink the others; a node dropping at each phase leaves no
key claimed; a cheating dealer is named; admin sessions move batch keys; and the route's quotas,
limits and SDK method."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import ClientSession
from eth_account import Account as EthAccount

from ocean_secret_store.client.client import SecretStoreClient
from ocean_secret_store.crypto.curve import N, Point
from ocean_secret_store.crypto.document import generate_document_key
from ocean_secret_store.crypto.resharing import public_share_at
from ocean_secret_store.exceptions import (
    DuplicateSessionId,
    InsufficientRequesterData,
    InvalidMessage,
    KeyServerError,
    NodeDisconnected,
    ServerKeyAlreadyGenerated,
)
from ocean_secret_store.node.http_api import make_app
from ocean_secret_store.node.quotas import GenerationQuota, QuotaSettings, TooManyRequests
from ocean_secret_store.node.sessions import genbatch
from ocean_secret_store.node.storage import MemoryKeyStorage
from ocean_secret_store.protocol import generation_batch as gb
from ocean_secret_store.protocol import messages as m
from ocean_secret_store.protocol.admin import sign_request
from ocean_secret_store.testing.servers import ServerThread

from .memnet import make_cluster
from .test_migration import ADMIN, ADMIN_PUBLIC, change, check_groups, ids
from .test_sessions import Account, run, shadow_key, stored

TIMEOUT = 3.0


def requests_for(author: Account, count: int, threshold: int) -> list[tuple[bytes, bytes, int, bytes | None]]:
    out = []
    for _ in range(count):
        key_id = os.urandom(32)
        out.append((key_id, author.sign(key_id), threshold, None))
    return out


@pytest.mark.parametrize(("n", "t", "count"), [(1, 0, 3), (3, 1, 40), (5, 2, 12)])
def test_batch_keys_are_as_single_keys_on_every_node(n: int, t: int, count: int) -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(n, session_timeout=TIMEOUT)
        try:
            author = Account()
            requests = requests_for(author, count, t)
            publics = await cores[0].generate_server_keys(requests)
            assert all(isinstance(p, Point) for p in publics)
            for (key_id, _, _, _), public in zip(requests, publics, strict=True):
                records = [stored(c, key_id) for c in cores]
                assert {r.public for r in records} == {public}
                assert {r.author for r in records} == {author.address}
                assert {r.threshold for r in records} == {t}
                assert {r.owner for r in records} == {None}
                assert len({r.last_version.secret_share for r in records}) == n
                for record in records:  # one epoch-0 version whose commitments give every public share
                    (version,) = record.versions
                    assert version.epoch == 0 and version.commitments[0] == public
                    for x in version.id_numbers.values():
                        assert public_share_at(x, version.commitments) in {
                            Point.generator_mul(r.last_version.secret_share) for r in records}
            # usable through the single routes from every entry node
            for index, (key_id, _, _, _) in enumerate(requests[:3]):
                entry = cores[index % n]
                assert await entry.retrieve_server_key(key_id, author.sign(key_id)) == publics[index]
                public = publics[index]
                assert isinstance(public, Point)
                document_key, common, encrypted = generate_document_key(public)
                await entry.store_document_key(key_id, author.sign(key_id), common, encrypted)
                for core in cores:
                    assert await shadow_key(core, key_id, author) == document_key
            assert not any(c.sessions.get("generation_batch") or c.sessions.get("generation_batch_claims")
                           for c in cores)
        finally:
            await hub.stop()

    run(scenario)


def test_each_refused_key_gets_its_own_error_and_the_others_are_generated() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=TIMEOUT)
        try:
            author = Account()
            existing = os.urandom(32)
            await cores[1].generate_server_key(existing, author.sign(existing), 1)
            fresh = requests_for(author, 4, 1)
            twice = fresh[1]
            bad_signature = (os.urandom(32), b"\x00" * 65, 1, None)
            too_high = (*requests_for(author, 1, 3)[0][:2], 3, None)
            batch = [fresh[0], (existing, author.sign(existing), 1, None), twice, bad_signature, twice, fresh[2],
                     too_high, fresh[3]]
            results = await cores[0].generate_server_keys(batch)
            assert isinstance(results[1], ServerKeyAlreadyGenerated)
            assert isinstance(results[3], InsufficientRequesterData)
            assert isinstance(results[4], DuplicateSessionId)
            assert isinstance(results[6], KeyServerError) and not isinstance(results[6], Point)
            for index in (0, 2, 5, 7):
                assert isinstance(results[index], Point), results[index]
                assert all(c.storage.contains(batch[index][0]) for c in cores)
            assert not any(c.storage.contains(too_high[0]) or c.storage.contains(bad_signature[0]) for c in cores)
            # a key refused by a member only (stored there alone) is refused; the rest go on
            lonely = os.urandom(32)
            cores[2].storage.insert(lonely, stored(cores[1], existing))
            more = requests_for(author, 2, 1)
            results = await cores[0].generate_server_keys([more[0], (lonely, author.sign(lonely), 1, None), more[1]])
            assert isinstance(results[1], ServerKeyAlreadyGenerated)
            assert isinstance(results[0], Point) and isinstance(results[2], Point)
            assert not cores[0].storage.contains(lonely)
        finally:
            await hub.stop()

    run(scenario)


def test_a_key_in_a_concurrent_single_generation_is_refused_in_the_batch() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=TIMEOUT)
        try:
            author = Account()
            requests = requests_for(author, 30, 1)
            key_id = requests[7][0]
            single = asyncio.ensure_future(cores[1].generate_server_key(key_id, author.sign(key_id), 1))
            await asyncio.sleep(0)
            batch, single_result = await asyncio.gather(cores[0].generate_server_keys(requests), single,
                                                        return_exceptions=True)
            assert isinstance(batch, list)
            # at most one of the two generated the key (the one that reserved it everywhere first; as
            # with two single generations from two entry nodes, both may be refused), never both
            outcomes = [batch[7], single_result]
            assert sum(isinstance(o, Point) for o in outcomes) <= 1, outcomes
            assert all(isinstance(o, Point | DuplicateSessionId) for o in outcomes), outcomes
            held = {c.storage.contains(key_id) for c in cores}
            assert held == {any(isinstance(o, Point) for o in outcomes)}
            assert all(isinstance(p, Point) for i, p in enumerate(batch) if i != 7)
        finally:
            await hub.stop()

    run(scenario)


def test_a_large_batch_runs_as_several_sessions() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=TIMEOUT * 3)
        try:
            author = Account()
            requests = requests_for(author, m.gen_batch_size(1) + 10, 1)
            results = await cores[2].generate_server_keys(requests)
            sent = [kind for _, _, kind in hub.sent]
            assert all(isinstance(r, Point) for r in results)
            assert sent.count("GenBatchInit") == 2 * 2  # two sessions, to two members each
            assert sent.count("GenBatchDealing") == 2 * 3 * 2  # per session, every node to every other
            assert all(c.storage.key_count() == len(requests) for c in cores)
        finally:
            await hub.stop()

    run(scenario)


BATCH_PHASES = ["GenBatchInit", "GenBatchStart", "GenBatchDealing", "GenBatchPublics", "GenBatchReady",
                "GenBatchCommit"]


@pytest.mark.parametrize("phase", BATCH_PHASES)
def test_a_node_dropping_at_each_phase_fails_the_session_and_leaves_no_key_half_made(phase: str) -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(4, session_timeout=TIMEOUT)
        fired = hub.isolate_at(phase, cores[2].node_id)
        try:
            author = Account()
            requests = requests_for(author, 20, 1)
            loop = asyncio.get_running_loop()
            started = loop.time()
            results = await cores[0].generate_server_keys(requests)
            assert all(isinstance(r, KeyServerError) for r in results), results
            assert loop.time() - started <= TIMEOUT * 1.5
            assert fired.is_set()
            key_ids = [r[0] for r in requests]
            for core in cores:  # each node holds all of the batch or none (one transaction)
                held = {core.storage.contains(k) for k in key_ids}
                assert len(held) == 1
            if phase != "GenBatchCommit":
                assert not any(c.storage.contains(k) for c in cores for k in key_ids)
            await asyncio.sleep(0.05)
            assert not cores[0].sessions.get("generation_batch")
            assert not cores[0].sessions.get("generation_batch_claims")
        finally:
            await hub.stop()

    run(scenario)


@pytest.mark.parametrize("kind", ["secret1", "secret2", "publics"])
def test_a_cheating_dealer_is_named_and_no_key_is_stored(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    failures: dict[bytes, KeyServerError] = {}
    deal_and_verify = genbatch._deal_and_verify

    async def spy(core: Any, state: genbatch.BatchState) -> tuple[list[Point], bytes]:
        try:
            return await deal_and_verify(core, state)
        except KeyServerError as exc:
            failures[core.node_id] = exc
            raise

    monkeypatch.setattr(genbatch, "_deal_and_verify", spy)

    async def scenario() -> None:
        hub, cores = await make_cluster(4, session_timeout=TIMEOUT)
        dealer, victim = cores[1].node_id, cores[2].node_id

        def forge(src: bytes, dst: bytes, env: m.Envelope) -> m.Envelope:
            body = env.body
            if src != dealer or dst != victim:
                return env
            if isinstance(body, m.GenBatchDealing) and kind != "publics":
                values = list(getattr(body, kind))
                values[5] = (values[5] + 1) % N  # one share of one key of the batch
                return m.Envelope(dataclasses.replace(body, **{kind: tuple(values)}))
            if isinstance(body, m.GenBatchPublics) and kind == "publics":
                coefficients = list(body.coefficients)
                coefficients[7] = coefficients[7] + Point.generator_mul(1)
                return m.Envelope(dataclasses.replace(body, coefficients=tuple(coefficients)))
            return env

        hub.tamper = forge
        try:
            author = Account()
            requests = requests_for(author, 10, 1)
            loop = asyncio.get_running_loop()
            started = loop.time()
            results = await cores[0].generate_server_keys(requests)
            assert all(isinstance(r, KeyServerError) for r in results)
            assert loop.time() - started < TIMEOUT  # the failure ends the session at once on every node
            assert not any(c.storage.contains(r[0]) for c in cores for r in requests)
            what = ("batch dealing of node 0x{}.. fails its commitments" if kind != "publics" else
                    "batch share of node 0x{}.. does not match its public coefficients").format(dealer.hex()[:16])
            error = failures[victim]
            assert isinstance(error, InvalidMessage) and error.detail == what
        finally:
            await hub.stop()

    run(scenario)


def test_a_batch_while_a_node_is_away_is_refused_at_once() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=TIMEOUT)
        try:
            hub.isolate(cores[2].node_id)
            results = await cores[0].generate_server_keys(requests_for(Account(), 3, 1))
            assert all(isinstance(r, NodeDisconnected) for r in results)
        finally:
            await hub.stop()

    run(scenario)


def test_memory_storage_insert_many_is_all_or_none() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(1, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id = os.urandom(32)
            await cores[0].generate_server_key(key_id, author.sign(key_id), 0)
            share = stored(cores[0], key_id)
            storage = MemoryKeyStorage()
            a, b = os.urandom(32), os.urandom(32)
            assert storage.insert_many([(a, share), (b, share)]) == 2
            with pytest.raises(ServerKeyAlreadyGenerated):
                storage.insert_many([(os.urandom(32), share), (a, share)])
            c = os.urandom(32)
            with pytest.raises(ServerKeyAlreadyGenerated):
                storage.insert_many([(c, share), (c, share)])
            assert sorted(storage.key_ids()) == sorted([a, b])
        finally:
            await hub.stop()

    run(scenario)


# -- the HTTP route and the SDK ------------------------------------------------------------------


class Served:
    """An in-memory cluster with its first node behind the HTTP API (with these quotas)."""

    def __init__(self, settings: QuotaSettings) -> None:
        self.thread = ServerThread()
        self.hub, self.cores = self.thread.run(make_cluster(3, session_timeout=TIMEOUT))
        self.url = self.thread.start(make_app(self.cores[0], quota=GenerationQuota(settings)))

    def close(self) -> None:
        self.thread.stop_all()
        self.thread.run(self.hub.stop())
        self.thread.close()


@pytest.fixture
def served() -> Iterator[Served]:
    cluster = Served(QuotaSettings(requester_burst=5, requester_rate=0.001, refusal_delay=0.0))
    try:
        yield cluster
    finally:
        cluster.close()


def post(url: str, body: bytes) -> tuple[int, Any]:
    async def go() -> tuple[int, Any]:
        async with ClientSession() as http, http.post(url + gb.PATH, data=body) as response:
            return response.status, json.loads(await response.read())

    return asyncio.run(go())


def test_the_route_counts_each_key_against_the_requesters_quota(served: Served) -> None:
    author, other = Account(), Account()
    items = [gb.GenerationItem(k, s, t, o) for k, s, t, o in requests_for(author, 7, 1)]
    items.append(gb.GenerationItem(*requests_for(other, 1, 1)[0][:3]))
    status, body = post(served.url, gb.encode_generation_request(items))
    assert status == 200
    results = body["results"]
    assert [r["key_id"] for r in results] == ["0x" + i.key_id.hex() for i in items]
    assert all("ok" in r for r in results[:5]) and "ok" in results[7]
    for refused in results[5:7]:  # the requester's burst of 5 is spent: one 429 error per key
        assert refused["error"]["status"] == 429 and refused["error"]["message"].startswith("Too many requests")
    assert not any(c.storage.contains(items[5].key_id) for c in served.cores)


def test_the_route_refuses_a_batch_that_does_not_parse_with_400(served: Served) -> None:
    author = Account()
    oversized = [gb.GenerationItem(k, s, t) for k, s, t, _ in requests_for(author, gb.MAX_BATCH + 1, 1)]
    status, body = post(served.url, gb.encode_generation_request(oversized))
    assert status == 400 and f"at most {gb.MAX_BATCH}" in body
    status, body = post(served.url, b'{"requests": []}')
    assert status == 400 and "no entry" in body
    status, body = post(served.url, b"x" * (gb.MAX_BATCH_BODY + 1))
    assert status == 400 and "exceeds" in body
    assert served.cores[0].storage.key_count() == 0


def test_the_sdk_generates_many_keys_and_names_each_failure(served: Served) -> None:
    account = EthAccount.create()
    with SecretStoreClient([served.url], account) as client:
        key_ids = [os.urandom(32) for _ in range(4)]
        results = client.generate_server_keys([*key_ids, key_ids[0]], 1)
        assert all(isinstance(r, Point) for r in results[:4])
        assert isinstance(results[4], DuplicateSessionId)
        for key_id, public in zip(key_ids, results[:4], strict=True):
            assert client.retrieve_server_key(key_id) == public
        again = client.generate_server_keys([key_ids[1]], 1, batch_size=1)
        assert isinstance(again[0], ServerKeyAlreadyGenerated)
        results = client.generate_server_keys([os.urandom(32)], 1)  # over the requester's burst of 5
        assert isinstance(results[0], KeyServerError) and "Too many requests" in str(results[0])


def test_the_core_maps_a_quota_refusal_to_that_key_only() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=TIMEOUT)
        try:
            author = Account()
            requests = [*requests_for(author, 3, 1), (os.urandom(32), b"\x00" * 65, 1, None),
                        (os.urandom(32), b"\x00" * 65, 1, None)]
            refused = {requests[1][0]}
            seen: list[bytes | None] = []

            def admit(requester: bytes | None) -> None:
                seen.append(requester)
                if len(seen) in (2, 5):
                    raise TooManyRequests("over", quota="requester_rate")

            results = await cores[0].generate_server_keys(requests, admit)
            # a key whose signature does not recover still counts (as the single route's quotas count it)
            assert seen == [author.address] * 3 + [None, None]
            assert isinstance(results[1], TooManyRequests) and isinstance(results[4], TooManyRequests)
            assert isinstance(results[3], InsufficientRequesterData)
            assert isinstance(results[0], Point) and isinstance(results[2], Point)
            assert not any(c.storage.contains(k) for c in cores for k in refused)
        finally:
            await hub.stop()

    run(scenario)


def test_admin_sessions_take_batch_keys_as_any_other_key() -> None:
    """A servers-set change (3 to 5 nodes) and then a refresh move every batch-generated key: each
    is recovered afterwards through groups that need the new nodes."""
    async def scenario() -> None:
        hub, cores = await make_cluster(5, servers=3, admin_public=ADMIN_PUBLIC, session_timeout=TIMEOUT)
        try:
            author = Account()
            requests = requests_for(author, 12, 1)
            publics = await cores[0].generate_server_keys(requests)
            documents = {}
            for (key_id, _, _, _), public in zip(requests[:4], publics[:4], strict=True):
                assert isinstance(public, Point)
                document_key, common, encrypted = generate_document_key(public)
                await cores[1].store_document_key(key_id, author.sign(key_id), common, encrypted)
                documents[key_id] = document_key
            report = await change(cores[0], cores)
            assert report["state"] == "done" and report["done"] == 12 and report["failed"] == 0
            refresh = sign_request(ADMIN, "refresh", ids(cores), ids(cores))
            report = await cores[2].admin(refresh)
            assert report["done"] == 12 and report["failed"] == 0
            for key_id, document_key in documents.items():
                for core in cores:
                    (version,) = stored(core, key_id).versions
                    assert version.epoch == 2 and set(version.id_numbers) == set(ids(cores))
                await check_groups(hub, cores[4], cores, key_id, 1, document_key, author, [cores[3]])
            for (key_id, _, _, _), public in zip(requests, publics, strict=True):
                assert await cores[3].retrieve_server_key(key_id, author.sign(key_id)) == public
        finally:
            await hub.stop()

    run(scenario)
