"""Two-phase document key storing over the in-memory bus: prepare, commit and abort, a holder's
refresh and refusal, aborts that remove only their own transaction, the resolution of pending
document keys (commit, drop, keep), and concurrent stores of one key through two entry nodes."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

import pytest

from ocean_secret_store.crypto.curve import Point
from ocean_secret_store.crypto.document import generate_document_key
from ocean_secret_store.exceptions import (
    ConsensusTemporaryUnreachable,
    DocumentKeyAlreadyStored,
    KeyServerError,
    NodeDisconnected,
)
from ocean_secret_store.node.cluster import ClusterCore
from ocean_secret_store.node.sessions import storing
from ocean_secret_store.node.storage import PendingDocumentKey
from ocean_secret_store.protocol import messages as m

from .memnet import Hub, make_cluster
from .test_sessions import Account, run, shadow_key

TIMEOUT = 1.0


async def new_key(cores: list[ClusterCore], author: Account, threshold: int = 1) -> tuple[bytes, Point]:
    key_id = os.urandom(32)
    return key_id, await cores[0].generate_server_key(key_id, author.sign(key_id), threshold)


def committed(core: ClusterCore, key_id: bytes) -> tuple[Point, Point] | None:
    share = core.storage.get(key_id)
    if share is None or share.common_point is None or share.encrypted_point is None:
        return None
    return share.common_point, share.encrypted_point


def pending(core: ClusterCore, key_id: bytes) -> PendingDocumentKey | None:
    return core.storage.get_pending(key_id)


async def eventually(what: str, predicate: Callable[[], bool], timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)


def prepare(key_id: bytes, author: Account, points: tuple[Point, Point], tx: bytes | None = None) -> m.StorePrepare:
    return m.StorePrepare(key_id=key_id, tx=tx or os.urandom(32), signature=author.sign(key_id),
                          common_point=points[0], encrypted_point=points[1])


def drop_kind(hub: Hub, kind: type[m.Message], *, to: set[bytes] | None = None,
              src: set[bytes] | None = None, also: tuple[type[m.Message], ...] = ()) -> None:
    """Lose every ``kind`` message (from ``src`` to ``to``), and every message of the kinds ``also``."""
    def drop(s: bytes, d: bytes, env: m.Envelope) -> bool:
        if isinstance(env.body, also):
            return True
        return isinstance(env.body, kind) and (to is None or d in to) and (src is None or s in src)

    hub.drop = drop


def test_a_store_prepares_then_commits_everywhere_and_leaves_no_pending() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(4, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, public = await new_key(cores, author)
            document_key, common, encrypted = generate_document_key(public)
            hub.sent.clear()
            await cores[1].store_document_key(key_id, author.sign(key_id), common, encrypted)
            assert all(committed(c, key_id) == (common, encrypted) and pending(c, key_id) is None for c in cores)
            kinds = [kind for _, _, kind in hub.sent]
            assert kinds.count("StorePrepare") == kinds.count("StoreCommit") == 3
            assert kinds.count("StorePrepared") == 3 and "StoreAbort" not in kinds
            for core in cores:
                assert await shadow_key(core, key_id, author) == document_key
        finally:
            await hub.stop()

    run(scenario)


def test_a_holder_refreshes_the_same_document_key_and_refuses_another_as_temporary() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, public = await new_key(cores, author)
            points = generate_document_key(public)[1:]
            other_points = generate_document_key(public)[1:]
            member = cores[2]
            tx1, tx2 = os.urandom(32), os.urandom(32)
            answer = await cores[0].request(member.node_id, prepare(key_id, author, points, tx1), m.StorePrepared)
            assert answer.holder
            first = pending(member, key_id)
            assert first is not None and first.txs == (tx1,) and first.coordinator == cores[0].node_id
            assert first.expiry == pytest.approx(time.time() + 3 * TIMEOUT, abs=0.5)
            await asyncio.sleep(0.05)
            await cores[1].request(member.node_id, prepare(key_id, author, points, tx2), m.StorePrepared)
            second = pending(member, key_id)
            assert second is not None and second.txs == (tx1, tx2) and second.expiry > first.expiry
            with pytest.raises(ConsensusTemporaryUnreachable):
                await cores[1].request(member.node_id, prepare(key_id, author, other_points), m.StorePrepared)
            assert pending(member, key_id) == second  # the refusal changed nothing
            # the member's status shows the pending points and no committed ones
            status = await cores[0].request(member.node_id, m.StoreStatusRequest(key_id), m.StoreStatus)
            assert status.holder and status.committed_common is None
            assert (status.pending_common, status.pending_encrypted) == points
            # through an entry node, the conflicting store is refused and aborted where it was prepared
            with pytest.raises(ConsensusTemporaryUnreachable):
                await cores[0].store_document_key(key_id, author.sign(key_id), *other_points)
            assert pending(cores[0], key_id) is None and pending(cores[1], key_id) is None
            assert pending(member, key_id) == second
            assert all(committed(c, key_id) is None for c in cores)
            # a node holding no share answers that it is no holder, and records nothing
            stranger = os.urandom(32)
            answer = await cores[0].request(member.node_id, prepare(stranger, author, points), m.StorePrepared)
            assert not answer.holder and pending(member, stranger) is None
        finally:
            await hub.stop()

    run(scenario)


def test_a_holder_takes_at_most_sixteen_transactions_of_one_document_key() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(2, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, public = await new_key(cores, author)
            points = generate_document_key(public)[1:]
            txs = [os.urandom(32) for _ in range(16)]
            for tx in txs:
                await cores[0].request(cores[1].node_id, prepare(key_id, author, points, tx), m.StorePrepared)
            with pytest.raises(ConsensusTemporaryUnreachable):
                await cores[0].request(cores[1].node_id, prepare(key_id, author, points), m.StorePrepared)
            await cores[0].request(cores[1].node_id, prepare(key_id, author, points, txs[3]), m.StorePrepared)
            record = pending(cores[1], key_id)
            assert record is not None and record.txs == tuple(txs)
        finally:
            await hub.stop()

    run(scenario)


def test_a_coordinator_past_its_deadline_commits_nothing_and_aborts(monkeypatch: pytest.MonkeyPatch) -> None:
    timeout = 0.3

    def stall(name: str) -> None:
        if name == storing.FP_COORDINATOR_PREPARED:
            time.sleep(timeout + 0.1)  # the entry node's event loop stalls between prepare and commit

    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=timeout)
        try:
            author = Account()
            key_id, public = await new_key(cores, author)
            document_key, common, encrypted = generate_document_key(public)
            with monkeypatch.context() as patch:
                patch.setattr(storing.failpoints, "hit", stall)
                with pytest.raises(NodeDisconnected):
                    await cores[0].store_document_key(key_id, author.sign(key_id), common, encrypted)
            assert all(committed(c, key_id) is None for c in cores)
            await eventually("aborted everywhere", lambda: all(pending(c, key_id) is None for c in cores),
                             timeout=1.0)  # by the aborts, long before the pendings would expire
            await cores[0].store_document_key(key_id, author.sign(key_id), common, encrypted)
            assert await shadow_key(cores[1], key_id, author) == document_key
        finally:
            await hub.stop()

    run(scenario)


def test_an_abort_removes_only_its_own_transaction() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, public = await new_key(cores, author)
            points = generate_document_key(public)[1:]
            member = cores[2]
            tx1, tx2 = os.urandom(32), os.urandom(32)
            for tx in (tx1, tx2):
                await cores[0].request(member.node_id, prepare(key_id, author, points, tx), m.StorePrepared)
            await cores[0].request(member.node_id, m.StoreAbort(key_id=key_id, tx=tx2), m.Ack)
            left = pending(member, key_id)
            assert left is not None and left.txs == (tx1,)
            await cores[0].request(member.node_id, m.StoreCommit(key_id=key_id, tx=tx1), m.Ack)
            assert committed(member, key_id) == points and pending(member, key_id) is None
        finally:
            await hub.stop()

    run(scenario)


def test_a_retry_through_the_node_that_missed_the_commit_cannot_abort_the_committed_transaction() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, public = await new_key(cores, author)
            document_key, common, encrypted = generate_document_key(public)
            lagging = cores[2]
            # its commit is lost, and resolution is held back until the end
            drop_kind(hub, m.StoreCommit, to={lagging.node_id}, also=(m.StoreStatusRequest,))
            await cores[0].store_document_key(key_id, author.sign(key_id), common, encrypted)  # decided by cores[0]
            first = pending(lagging, key_id)
            assert first is not None and committed(lagging, key_id) is None
            # The author retries the same store through the lagging node: it refreshes its pending,
            # the others refuse (stored already), and the abort takes only the retry's transaction.
            with pytest.raises(DocumentKeyAlreadyStored):
                await lagging.store_document_key(key_id, author.sign(key_id), common, encrypted)
            left = pending(lagging, key_id)
            assert left is not None and left.txs == first.txs
            hub.drop = lambda s, d, env: False
            await eventually("resolution commits the lagging node",
                             lambda: committed(lagging, key_id) == (common, encrypted))
            assert pending(lagging, key_id) is None
            assert await shadow_key(lagging, key_id, author) == document_key
        finally:
            await hub.stop()

    run(scenario)


def test_resolution_commits_a_pending_document_key_another_holder_committed() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(5, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, public = await new_key(cores, author, 2)
            document_key, common, encrypted = generate_document_key(public)
            behind = {cores[3].node_id, cores[4].node_id}
            drop_kind(hub, m.StoreCommit, to=behind, also=(m.StoreStatusRequest,))
            await cores[0].store_document_key(key_id, author.sign(key_id), common, encrypted)
            assert committed(cores[3], key_id) is None and pending(cores[3], key_id) is not None
            hub.drop = lambda s, d, env: False
            # within a round or two (min(1 s, T / 2) apart), long before the pendings expire
            await eventually("every holder committed", lambda: all(committed(c, key_id) == (common, encrypted)
                                                                   for c in cores), timeout=2 * TIMEOUT)
            assert all(pending(c, key_id) is None for c in cores)
            for core in cores[3:]:
                assert await shadow_key(core, key_id, author) == document_key
        finally:
            await hub.stop()

    run(scenario)


def test_resolution_drops_an_expired_pending_nobody_committed_and_a_new_store_then_passes() -> None:
    timeout = 0.3

    async def scenario() -> None:
        hub, cores = await make_cluster(4, session_timeout=timeout)
        try:
            author = Account()
            key_id, public = await new_key(cores, author)
            points = generate_document_key(public)[1:]
            # A coordinator that prepared everywhere and vanished before any commit.
            tx = os.urandom(32)
            for core in cores[1:]:
                await cores[0].request(core.node_id, prepare(key_id, author, points, tx), m.StorePrepared)
            assert all(pending(c, key_id) is not None for c in cores[1:])
            document_key, common, encrypted = generate_document_key(public)
            with pytest.raises(ConsensusTemporaryUnreachable):  # another document key is pending
                await cores[0].store_document_key(key_id, author.sign(key_id), common, encrypted)
            started = time.monotonic()
            await eventually("every pending dropped", lambda: all(pending(c, key_id) is None for c in cores))
            assert time.monotonic() - started >= 3 * timeout - 0.2  # not before the expiry
            assert all(committed(c, key_id) is None for c in cores)
            await cores[0].store_document_key(key_id, author.sign(key_id), common, encrypted)
            assert all(committed(c, key_id) == (common, encrypted) for c in cores)
            assert await shadow_key(cores[2], key_id, author) == document_key
        finally:
            await hub.stop()

    run(scenario)


def test_resolution_keeps_an_expired_pending_while_a_holder_does_not_answer() -> None:
    timeout = 0.3

    async def scenario() -> None:
        hub, cores = await make_cluster(4, session_timeout=timeout)
        try:
            author = Account()
            key_id, public = await new_key(cores, author)
            points = generate_document_key(public)[1:]
            tx = os.urandom(32)
            for core in cores[1:]:
                await cores[0].request(core.node_id, prepare(key_id, author, points, tx), m.StorePrepared)
            silent = cores[3]
            # The silent holder takes requests and never answers: it might have committed.
            drop_kind(hub, m.StoreStatus, src={silent.node_id})
            await asyncio.sleep(3 * timeout + 0.8)  # expired, and several resolution rounds later
            # The silent holder itself hears every other holder say that nobody committed: it drops
            # its own pending; the others cannot know what it did, and keep theirs.
            assert pending(silent, key_id) is None
            assert all(pending(c, key_id) is not None for c in cores[1:3])
            record = pending(cores[1], key_id)
            assert record is not None and time.time() > record.expiry
            assert await storing.resolve_one(cores[1], record) == "kept"
            hub.drop = lambda s, d, env: False
            await eventually("dropped once every holder answered", lambda: all(pending(c, key_id) is None
                                                                                for c in cores))
            assert all(committed(c, key_id) is None for c in cores)
        finally:
            await hub.stop()

    run(scenario)


def test_resolution_drops_a_pending_that_differs_from_a_committed_document_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=10.0)  # rounds 1 s apart; this test drives one
        try:
            author = Account()
            key_id, public = await new_key(cores, author)
            points = generate_document_key(public)[1:]
            other = generate_document_key(public)[1:]
            for core in cores[:2]:  # the others committed another document key (by whatever mistake)
                share = await core.load_key(key_id)
                assert share is not None
                await core.update_key(key_id, share.with_document_key(*other))
            member = cores[2]
            await cores[0].request(member.node_id, prepare(key_id, author, points), m.StorePrepared)
            record = pending(member, key_id)
            assert record is not None
            with caplog.at_level(logging.ERROR, logger=storing.__name__):
                outcome = await storing.resolve_one(member, record)
            assert outcome == "dropped" or pending(member, key_id) is None
            assert pending(member, key_id) is None and committed(member, key_id) is None
            if outcome == "dropped":
                assert "committed a different document key" in caplog.text
        finally:
            await hub.stop()

    run(scenario)


# Measured over the bus: at 0 both stores are refused (each entry node prepared itself first), at
# 0.5 ms one wins and the other is refused as temporary, from 1 ms on the second finds it stored.
def test_the_resolution_loop_outlives_a_failing_record(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    real = storing.resolve_one
    broken: set[bytes] = set()

    async def flaky(core: ClusterCore, record: PendingDocumentKey) -> str:
        if record.key_id in broken:
            raise RuntimeError("a bug in one record's resolution")
        return await real(core, record)

    monkeypatch.setattr(storing, "resolve_one", flaky)

    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=0.4)
        try:
            author = Account()
            keys = [await new_key(cores, author) for _ in range(2)]
            stores = [generate_document_key(public) for _, public in keys]
            broken.add(keys[0][0])
            drop_kind(hub, m.StoreCommit, to={cores[2].node_id}, also=(m.StoreStatusRequest,))
            for (key_id, _), (_, common, encrypted) in zip(keys, stores, strict=True):
                await cores[0].store_document_key(key_id, author.sign(key_id), common, encrypted)
            with caplog.at_level(logging.ERROR, logger=storing.__name__):
                hub.drop = lambda s, d, env: False
                good_key, (_, common, encrypted) = keys[1][0], stores[1]
                await eventually("the healthy record is resolved",
                                 lambda: committed(cores[2], good_key) == (common, encrypted))
                await asyncio.sleep(0.5)  # more rounds: the loop keeps running, the broken record stays
            assert pending(cores[2], keys[0][0]) is not None
            assert caplog.text.count("a bug in one record's resolution") >= 2
            broken.clear()
            _, common, encrypted = stores[0]
            await eventually("and the other, once it can be", lambda: committed(cores[2], keys[0][0]) == (common,
                                                                                                          encrypted))
        finally:
            await hub.stop()

    run(scenario)


@pytest.mark.parametrize("stagger", [0.0, 0.0002, 0.0005, 0.001, 0.05])
def test_concurrent_stores_of_one_key_through_two_entry_nodes_never_split(stagger: float) -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(5, session_timeout=TIMEOUT)
        try:
            author = Account()
            for _ in range(4):
                key_id, public = await new_key(cores, author, 2)
                stores = [generate_document_key(public) for _ in range(2)]

                async def store(entry: int, delay: float, key_id: bytes, common: Point, encrypted: Point) -> None:
                    await asyncio.sleep(delay)
                    await cores[entry].store_document_key(key_id, author.sign(key_id), common, encrypted)

                outcomes = await asyncio.gather(store(0, 0.0, key_id, *stores[0][1:]),
                                                store(3, stagger, key_id, *stores[1][1:]), return_exceptions=True)
                for outcome in outcomes:
                    assert outcome is None or isinstance(outcome, (ConsensusTemporaryUnreachable,
                                                                   DocumentKeyAlreadyStored)), outcome
                winners = [i for i, outcome in enumerate(outcomes) if outcome is None]
                assert len(winners) <= 1
                held = {committed(c, key_id) for c in cores}
                assert all(pending(c, key_id) is None for c in cores)  # every loser aborted cleanly
                if winners:
                    document_key, common, encrypted = stores[winners[0]]
                    assert held == {(common, encrypted)}
                else:  # both refused: nothing anywhere, and a retry passes
                    assert held == {None}
                    document_key, common, encrypted = stores[1]
                    await cores[3].store_document_key(key_id, author.sign(key_id), common, encrypted)
                    assert {committed(c, key_id) for c in cores} == {(common, encrypted)}
                assert await shadow_key(cores[4], key_id, author) == document_key
        finally:
            await hub.stop()

    run(scenario)


@pytest.mark.parametrize("stagger", [0.0, 0.0005, 0.05])
def test_concurrent_stores_of_the_same_document_key_both_count(stagger: float) -> None:
    """The same (C, E) through two entry nodes: the second refreshes the first's pending; whichever
    commits first decides, and the other's commit finds the same key stored."""

    async def scenario() -> None:
        hub, cores = await make_cluster(5, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, public = await new_key(cores, author, 2)
            document_key, common, encrypted = generate_document_key(public)

            async def store(entry: int, delay: float) -> None:
                await asyncio.sleep(delay)
                await cores[entry].store_document_key(key_id, author.sign(key_id), common, encrypted)

            outcomes = await asyncio.gather(store(0, 0.0), store(3, stagger), return_exceptions=True)
            assert outcomes[0] is None
            assert outcomes[1] is None or isinstance(outcomes[1], DocumentKeyAlreadyStored), outcomes[1]
            assert {committed(c, key_id) for c in cores} == {(common, encrypted)}
            assert all(pending(c, key_id) is None for c in cores)
            assert await shadow_key(cores[1], key_id, author) == document_key
        finally:
            await hub.stop()

    run(scenario)


def test_a_decided_store_answers_success_when_a_members_commit_outlasts_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The entry node committed: the request's timeout fires while a member's commit is still
    awaited (it is lost), and the answer is the truth, success; resolution completes the member."""
    timeout = 0.4
    monkeypatch.setattr(storing, "_query_timeout", lambda core: 30.0)  # the lost commit is awaited long

    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=timeout)
        try:
            author = Account()
            key_id, public = await new_key(cores, author)
            document_key, common, encrypted = generate_document_key(public)
            drop_kind(hub, m.StoreCommit, to={cores[2].node_id})
            started = time.monotonic()
            await cores[0].store_document_key(key_id, author.sign(key_id), common, encrypted)
            assert time.monotonic() - started < timeout + 0.3  # the request's own bound, not the commit's
            assert committed(cores[0], key_id) == committed(cores[1], key_id) == (common, encrypted)
            hub.drop = lambda s, d, env: False
            await eventually("the member committed", lambda: committed(cores[2], key_id) == (common, encrypted))
            assert await shadow_key(cores[2], key_id, author) == document_key
        finally:
            await hub.stop()

    run(scenario)


def test_a_lost_prepare_answer_fails_the_store_and_leaves_it_retryable() -> None:
    timeout = 0.4

    async def scenario() -> None:
        hub, cores = await make_cluster(4, session_timeout=timeout)
        try:
            author = Account()
            key_id, public = await new_key(cores, author)
            document_key, common, encrypted = generate_document_key(public)
            mute = cores[2]
            drop_kind(hub, m.StorePrepared, src={mute.node_id})
            with pytest.raises(NodeDisconnected):
                await cores[0].store_document_key(key_id, author.sign(key_id), common, encrypted)
            hub.drop = lambda s, d, env: False
            await eventually("no pending left", lambda: all(pending(c, key_id) is None for c in cores))
            assert all(committed(c, key_id) is None for c in cores)
            await cores[1].store_document_key(key_id, author.sign(key_id), common, encrypted)
            assert await shadow_key(mute, key_id, author) == document_key
        finally:
            await hub.stop()

    run(scenario)


def test_storing_for_a_key_nobody_holds_succeeds_and_stores_nothing() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(3, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id = os.urandom(32)
            common, encrypted = Point.generator_mul(3), Point.generator_mul(4)
            hub.sent.clear()
            await cores[0].store_document_key(key_id, author.sign(key_id), common, encrypted)
            assert all(not c.storage.contains(key_id) and pending(c, key_id) is None for c in cores)
            assert "StoreCommit" not in [kind for _, _, kind in hub.sent]
        finally:
            await hub.stop()

    run(scenario)


def test_a_commit_for_an_unknown_transaction_is_refused_unless_the_key_is_committed() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(2, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id, public = await new_key(cores, author)
            with pytest.raises(KeyServerError, match="invalid state"):
                await cores[0].request(cores[1].node_id, m.StoreCommit(key_id=key_id, tx=os.urandom(32)), m.Ack)
            _, common, encrypted = generate_document_key(public)
            await cores[0].store_document_key(key_id, author.sign(key_id), common, encrypted)
            # a late duplicate of a commit: the key is committed, nothing to do
            await cores[0].request(cores[1].node_id, m.StoreCommit(key_id=key_id, tx=os.urandom(32)), m.Ack)
            assert committed(cores[1], key_id) == (common, encrypted)
        finally:
            await hub.stop()

    run(scenario)
