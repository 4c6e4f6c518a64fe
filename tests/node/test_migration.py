"""Admin sessions on the in-memory bus: servers-set change, refresh, repair (issue 14).

Every key is checked by retrieving its document key through groups that include the nodes the
session added (and the old survivors), never by reading shares only. Real processes: the
integration tests.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import pytest

from ocean_secret_store.crypto.curve import N, Point
from ocean_secret_store.crypto.hashes import key_version_hash
from ocean_secret_store.crypto.sharing import lagrange_coefficients_at_zero
from ocean_secret_store.exceptions import (
    AccessDenied,
    AdminSessionIncomplete,
    ExclusiveSessionActive,
    KeysWouldBeLost,
    NodeDisconnected,
)
from ocean_secret_store.node.cluster import ClusterCore
from ocean_secret_store.node.sessions import migration
from ocean_secret_store.node.storage import KeyShare, MemoryKeyStorage
from ocean_secret_store.protocol import messages as m
from ocean_secret_store.protocol.admin import sign_request, sign_status

from .memnet import Hub, make_cluster
from .test_sessions import Account, publish, run, shadow_key, stored

ADMIN = 0xAD317
ADMIN_PUBLIC = Point.generator_mul(ADMIN)


def ids(cores: list[ClusterCore]) -> tuple[bytes, ...]:
    return tuple(sorted(c.node_id for c in cores))


async def change(entry: ClusterCore, new_set: list[ClusterCore], *, force: bool = False,
                 secret: int = ADMIN, old: tuple[bytes, ...] | None = None) -> dict[str, Any]:
    request = sign_request(secret, "change", entry.old_set_view() if old is None else old, ids(new_set))
    return await entry.admin(request, force=force)


async def keys_with_documents(cores: list[ClusterCore], author: Account,
                              thresholds: list[int]) -> dict[bytes, tuple[int, Point]]:
    out = {}
    for t in thresholds:
        key_id, _, document_key = await publish(cores, author, t)
        out[key_id] = (t, document_key)
    return out


async def check_groups(hub: Hub, entry: ClusterCore, holders: list[ClusterCore], key_id: bytes, threshold: int,
                       document_key: Point, author: Account, needed: list[ClusterCore]) -> None:
    """Retrieve through ``entry`` with only t+1 holders reachable, ``needed`` among them."""
    rest = [c for c in holders if c not in needed and c is not entry]
    group = [*dict.fromkeys([entry, *needed, *rest])][: threshold + 1]
    cut = [c for c in holders if c not in group]
    for core in cut:
        hub.isolate(core.node_id)
    try:
        assert await shadow_key(entry, key_id, author) == document_key
    finally:
        for core in cut:
            hub.restore(core.node_id)


def versions_of(core: ClusterCore, key_id: bytes) -> list[tuple[bytes, int, bool]]:
    share = core.storage.get(key_id)
    return [] if share is None else [(v.hash, v.epoch, v.active) for v in share.versions]


def test_grow_three_to_five_moves_every_key_and_new_nodes_serve_it() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(5, servers=3, admin_public=ADMIN_PUBLIC)
        try:
            author = Account()
            keys = await keys_with_documents(cores[:3], author, [0, 1, 2, 1])
            assert all(cores[3].storage.get(k) is None for k in keys)
            report = await change(cores[0], cores)
            assert report["state"] == "done" and report["done"] == len(keys) and report["failed"] == 0
            for core in cores:
                assert core.servers_set == ids(cores) and core.admin_session is None
            for key_id, (t, document_key) in keys.items():
                for core in cores:
                    (version,) = stored(core, key_id).versions  # the old version is pruned everywhere
                    assert version.active and version.epoch == 1 and set(version.id_numbers) == set(ids(cores))
                # a group led by a new node, and one that needs both new nodes
                await check_groups(hub, cores[4], cores, key_id, t, document_key, author, [cores[3]])
                await check_groups(hub, cores[0], cores, key_id, t, document_key, author, cores[3:5])
            # new keys are generated over the new set
            key_id, _, document_key = await publish(cores, author, 4, entry=3)
            assert len(stored(cores[0], key_id).last_version.id_numbers) == 5
        finally:
            await hub.stop()

    run(scenario)


def test_shrink_drops_the_removed_nodes_shares_and_refuses_a_key_that_cannot_survive() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(5, admin_public=ADMIN_PUBLIC)
        try:
            author = Account()
            keys = await keys_with_documents(cores, author, [0, 1, 1])
            doomed = await keys_with_documents(cores, author, [3])
            before = {k: versions_of(c, k) for c in cores for k in [*keys, *doomed]}
            with pytest.raises(KeysWouldBeLost) as refused:
                await change(cores[0], cores[:3])
            assert refused.value.status == 409 and next(iter(doomed)).hex() in str(refused.value)
            assert {k: versions_of(c, k) for c in cores for k in [*keys, *doomed]} == before  # nothing changed
            assert all(c.admin_session is None for c in cores)
            report = await change(cores[0], cores[:3], force=True)
            assert report["skipped"] == 1 and len(report["lost"]) == 1 and report["done"] == len(keys)
            check_status_views(cores[0], doomed)
            for key_id, (t, document_key) in keys.items():
                assert all(c.storage.get(key_id) is None for c in cores[3:])  # removed nodes dropped it
                await check_groups(hub, cores[2], cores[:3], key_id, t, document_key, author, [])
            assert cores[3].servers_set == ids(cores[:3])
        finally:
            await hub.stop()

    run(scenario)


def test_replace_a_dead_node_with_t_plus_1_survivors() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(6, servers=5, admin_public=ADMIN_PUBLIC)
        try:
            author = Account()
            keys = await keys_with_documents(cores[:5], author, [1, 2, 3, 3])
            four = await keys_with_documents(cores[:5], author, [4])
            hub.isolate(cores[3].node_id)  # node 4 dies for good
            new_set = [cores[0], cores[1], cores[2], cores[4], cores[5]]
            with pytest.raises(KeysWouldBeLost):
                await change(cores[0], new_set)
            report = await change(cores[0], new_set, force=True)
            assert report["done"] == len(keys) and [x["key_id"] for x in report["lost"]] == ["0x" + k.hex()
                                                                                              for k in four]
            for key_id, (t, document_key) in keys.items():
                await check_groups(hub, cores[5], new_set, key_id, t, document_key, author, [])
                await check_groups(hub, cores[1], new_set, key_id, t, document_key, author, [cores[5]])
                survivors = [c for c in new_set if c is not cores[5]]
                await check_groups(hub, survivors[0], survivors, key_id, t, document_key, author, [])
        finally:
            await hub.stop()

    run(scenario)


def check_status_views(master: ClusterCore, lost: Iterable[bytes]) -> None:
    """``GET /admin/status`` counts the keys a session left behind; only the administrator's signed
    request names them."""
    lost_hex = {"0x" + k.hex() for k in lost}
    public = master.admin_status()
    assert public["view"] == "public" and not any(k[2:] in str(public) for k in lost_hex)
    assert "lost" not in public["progress"] and "errors" not in public["progress"]
    assert public["progress"]["lost_count"] == len(lost_hex) and public["progress"]["error_count"] == 0
    expiry = int(time.time()) + 30
    full = master.admin_status(expiry, sign_status(ADMIN, master.node_id, expiry))
    assert full["view"] == "admin" and {x["key_id"] for x in full["progress"]["lost"]} == lost_hex
    assert full["progress"]["lost_count"] == len(lost_hex)
    with pytest.raises(AccessDenied):
        master.admin_status(expiry, sign_status(ADMIN + 1, master.node_id, expiry))
    with pytest.raises(AccessDenied):
        master.admin_status(expiry - 60, sign_status(ADMIN, master.node_id, expiry - 60))


def _reconstruct(points: list[tuple[int, int]]) -> int:
    lambdas = lagrange_coefficients_at_zero([x for x, _ in points])
    return sum(lam * s for lam, (_, s) in zip(lambdas, points, strict=True)) % N


def test_refresh_old_and_new_shares_do_not_combine() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(5, admin_public=ADMIN_PUBLIC)
        try:
            author = Account()
            t = 2
            (key_id, (_, document_key)), = (await keys_with_documents(cores, author, [t])).items()
            public = stored(cores[0], key_id).public

            def shares() -> list[tuple[int, int]]:
                out = []
                for core in cores:
                    version = stored(core, key_id).last_version
                    out.append((version.id_numbers[core.node_id], version.secret_share))
                return out

            old = shares()
            assert Point.generator_mul(_reconstruct(old[: t + 1])) == public
            view = cores[0].old_set_view()
            report = await cores[0].admin(sign_request(ADMIN, "refresh", view, view))
            assert report["state"] == "done" and report["done"] == 1
            new = shares()
            assert [x for x, _ in new] == [x for x, _ in old]  # same id numbers, new shares
            assert all(a != b for (_, a), (_, b) in zip(old, new, strict=True))
            assert Point.generator_mul(_reconstruct(new[2:])) == public  # any t+1 new shares
            # t stolen before and t after (on other nodes, so the x are distinct): not the key
            for before in itertools.combinations(range(5), t):
                after = [i for i in range(5) if i not in before][:t]
                mixed = [old[i] for i in before] + [new[i] for i in after]
                for subset in itertools.combinations(mixed, t + 1):
                    assert Point.generator_mul(_reconstruct(list(subset))) != public
            assert stored(cores[0], key_id).last_version.epoch == 1
            assert await shadow_key(cores[3], key_id, author) == document_key
        finally:
            await hub.stop()

    run(scenario)


def test_repair_restores_a_wiped_node_and_a_stale_backup() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(5, admin_public=ADMIN_PUBLIC)
        try:
            author = Account()
            keys = await keys_with_documents(cores, author, [1, 2, 2])
            victim = cores[1]
            backup = {k: victim.storage.get(k) for k in keys}
            # refresh, then restore the victim's pre-refresh database: its versions are stale
            view = cores[0].old_set_view()
            await cores[0].admin(sign_request(ADMIN, "refresh", view, view))
            stale = MemoryKeyStorage()
            for key_id, share in backup.items():
                assert share is not None
                stale.insert(key_id, share)
            victim.storage = stale
            victim._keys.clear()  # the node restarts on the restored database
            for key_id, (_, document_key) in keys.items():
                # as a member it is never used (entries ask for the new version, which it lacks); as
                # an entry it finds its version stale and has a holder run the retrieval
                assert await shadow_key(cores[0], key_id, author) == document_key
                assert await shadow_key(victim, key_id, author) == document_key
            report = await cores[0].admin(sign_request(ADMIN, "repair", view, view, victim.node_id))
            assert report["done"] == len(keys)
            for key_id, (t, document_key) in keys.items():
                (version,) = stored(victim, key_id).versions
                assert version.epoch == 2 and version.active
                assert version.hash == stored(cores[4], key_id).last_version.hash
                await check_groups(hub, cores[0], cores, key_id, t, document_key, author, [victim])
            # wipe it entirely and repair again: same result, a record rebuilt from the dealers'
            victim.storage = MemoryKeyStorage()
            victim._keys.clear()
            await cores[2].admin(sign_request(ADMIN, "repair", view, view, victim.node_id))
            for key_id, (t, document_key) in keys.items():
                assert stored(victim, key_id).last_version.epoch == 3
                await check_groups(hub, victim, cores, key_id, t, document_key, author, [])
        finally:
            await hub.stop()

    run(scenario)


def test_repair_gives_a_restored_node_the_document_key_stored_after_its_backup() -> None:
    """A backup taken between a key's generation and its store holds the key's current version but
    no document key: the restored node is then no member of any retrieval of that key. The repair
    redistributes such a key as it does a stale one, and the node takes the record its dealers agree on."""

    async def scenario() -> None:
        hub, cores = await make_cluster(4, admin_public=ADMIN_PUBLIC)
        try:
            author = Account()
            keys = await keys_with_documents(cores, author, [1, 1, 2])
            victim = cores[1]
            restored = MemoryKeyStorage()  # its records as they were before the stores
            for key_id in keys:
                share = stored(victim, key_id)
                restored.insert(key_id, replace(share, common_point=None, encrypted_point=None))
            untouched = os.urandom(32)  # a key with no document key anywhere: nothing to give back
            await cores[0].generate_server_key(untouched, author.sign(untouched), 1)
            restored.insert(untouched, stored(victim, untouched))
            victim.storage = restored
            victim._keys.clear()
            view = cores[0].old_set_view()
            report = await cores[0].admin(sign_request(ADMIN, "repair", view, view, victim.node_id))
            assert (report["done"], report["skipped"], report["failed"]) == (len(keys), 1, 0)
            for key_id, (t, document_key) in keys.items():
                share = stored(victim, key_id)
                assert share.common_point == stored(cores[0], key_id).common_point is not None
                assert share.last_version.hash == stored(cores[3], key_id).last_version.hash
                await check_groups(hub, cores[0], cores, key_id, t, document_key, author, [victim])
            assert stored(victim, untouched).common_point is None
        finally:
            await hub.stop()

    run(scenario)


def test_refusals_change_nothing() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(4, servers=3, admin_public=ADMIN_PUBLIC)
        try:
            author = Account()
            keys = await keys_with_documents(cores[:3], author, [1])
            before = {k: versions_of(c, k) for c in cores for k in keys}
            with pytest.raises(AccessDenied):  # not the administrator
                await change(cores[0], cores, secret=ADMIN + 1)
            with pytest.raises(AccessDenied):  # signed over another old set
                await change(cores[0], cores, old=ids(cores[:2]))
            hub.isolate(cores[3].node_id)
            with pytest.raises(NodeDisconnected):  # a node of the new set is not connected
                await change(cores[0], cores)
            hub.restore(cores[3].node_id)
            no_admin = ClusterCore(node_secret=7, nodes=ids(cores), net=cores[0].net, storage=MemoryKeyStorage(),
                                   acl=cores[0].acl)
            with pytest.raises(AccessDenied):  # no administrator key configured
                await change(no_admin, cores, old=ids(cores[:3]))
            assert {k: versions_of(c, k) for c in cores for k in keys} == before
            assert all(c.admin_session is None for c in cores)
            assert all(c.servers_set == ids(cores[:3]) for c in cores[:3])
        finally:
            await hub.stop()

    run(scenario)


def test_a_cheating_dealer_is_named_and_the_key_keeps_its_old_version() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(4, servers=3, admin_public=ADMIN_PUBLIC)
        try:
            author = Account()
            keys = await keys_with_documents(cores[:3], author, [2, 2])  # t+1 = 3: every holder deals
            liar = cores[1].node_id

            def tamper(src: bytes, dst: bytes, env: m.Envelope) -> m.Envelope:
                body = env.body
                if src == liar and isinstance(body, m.ReshareDealing):
                    return m.Envelope(m.ReshareDealing(**{**{f: getattr(body, f) for f in body.SCHEMA},
                                                          "subshare": (body.subshare + 1) % N}), env.rid, env.reply_to)
                return env

            hub.tamper = tamper
            with pytest.raises(AdminSessionIncomplete):
                await change(cores[0], cores)
            errors = cores[0].admin_progress["errors"]
            assert errors and all("cheating dealer" in e and "0x" + liar.hex()[:16] in e for e in errors[:-1])
            await asyncio.sleep(0.05)  # dealings still on their way after the aborts
            # nothing of the aborted redistributions is kept, by the receivers or the master
            assert not any(core.table(migration.TABLE) for core in cores)
            assert not any(e.messages for core in cores for e in core.table(migration.EARLY).values())
            for key_id, (_, document_key) in keys.items():
                # still on the old version, through the old holders; the new node has nothing usable
                assert all(stored(c, key_id).last_version.hash == key_version_hash(
                    stored(cores[0], key_id).versions[0].id_numbers) for c in cores[:3])
                assert await shadow_key(cores[3], key_id, author) == document_key
            assert all(c.admin_session is not None for c in cores)  # open: resume it
            with pytest.raises(ExclusiveSessionActive):  # no key generation meanwhile
                await publish(cores[:3], author, 1)
            hub.tamper = lambda src, dst, env: env
            report = await change(cores[0], cores)  # the same request again resumes
            assert report["state"] == "done" and report["done"] == len(keys)
            for key_id, (t, document_key) in keys.items():
                # nothing was committed by the refused attempt: the resumed one is the first new version
                assert {stored(c, key_id).last_version.epoch for c in cores} == {1}
                await check_groups(hub, cores[0], cores, key_id, t, document_key, author, [cores[3]])
        finally:
            await hub.stop()

    run(scenario)


@pytest.mark.parametrize("lost", ["activation", "prune"])
def test_an_interrupted_activation_resumes_without_conflicting_versions(lost: str) -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(5, servers=3, admin_public=ADMIN_PUBLIC)
        try:
            author = Account()
            keys = await keys_with_documents(cores[:3], author, [0, 1, 2])
            victim = cores[2].node_id
            def finishing(env: m.Envelope, stage: str) -> bool:
                return isinstance(env.body, m.ReshareFinish) and env.body.stage == stage

            if lost == "activation":
                # the activations never reach node 2, prunes reach nobody: keys stop half-activated
                hub.drop = lambda src, dst, env: (finishing(env, "activate") and dst == victim
                                                  ) or finishing(env, "prune")
            else:  # every node activated; node 2 keeps its old version beside the new one
                hub.drop = lambda src, dst, env: finishing(env, "prune") and dst == victim
            with pytest.raises(AdminSessionIncomplete):
                await change(cores[0], cores)
            for key_id, (_, document_key) in keys.items():
                for entry in cores:
                    assert await shadow_key(entry, key_id, author) == document_key  # works from everywhere
            hub.drop = lambda src, dst, env: False
            report = await change(cores[1], cores)  # another master resumes
            assert report["state"] == "done"
            for key_id, (t, document_key) in keys.items():
                hashes = {versions_of(c, key_id)[0] for c in cores}
                assert len(hashes) == 1 and all(len(versions_of(c, key_id)) == 1 for c in cores)
                await check_groups(hub, cores[4], cores, key_id, t, document_key, author, [cores[3]])
        finally:
            await hub.stop()

    run(scenario)


def test_a_stored_record_round_trips_inactive_versions(tmp_path: Any) -> None:
    from ocean_secret_store.node.storage import KeyVersion, SqliteKeyStorage

    node = Point.generator_mul(5).to_bytes()
    with SqliteKeyStorage(tmp_path, 99) as db:
        key_id = os.urandom(32)
        share = KeyShare(b"\x01" * 20, 0, Point.generator_mul(3), None, None,
                         (KeyVersion.new({node: 4}, 3), KeyVersion.new({node: 4}, 3, epoch=1, active=False)))
        db.insert(key_id, share)
        assert db.get(key_id) == share
        assert db.get(key_id).last_version.epoch == 0  # type: ignore[union-attr]  # inserted just above
        db.update(key_id, share.activated(share.versions[1].hash).pruned(share.versions[1].hash))
        (version,) = db.get(key_id).versions  # type: ignore[union-attr]  # inserted just above
        assert version.active and version.epoch == 1
        db.put_meta("servers_set", ["ab"])
        assert db.get_meta("servers_set") == ["ab"]


def test_a_refresh_needs_every_node_of_the_set_and_never_changes_it() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(4, admin_public=ADMIN_PUBLIC)
        try:
            author = Account()
            keys = await keys_with_documents(cores, author, [1])
            view = cores[0].old_set_view("refresh")
            assert view == ids(cores)
            hub.isolate(cores[3].node_id)
            assert cores[0].old_set_view("change") == ids(cores[:3])  # a change may leave a dead node out
            with pytest.raises(NodeDisconnected):
                await cores[0].admin(sign_request(ADMIN, "refresh", view, view))
            connected_view = cores[0].old_set_view("change")
            with pytest.raises(AccessDenied):  # a refresh signed over the connected nodes only
                await cores[0].admin(sign_request(ADMIN, "refresh", connected_view, connected_view))
            hub.restore(cores[3].node_id)
            await cores[0].admin(sign_request(ADMIN, "refresh", view, view))
            for core in cores:
                assert core.servers_set == ids(cores)
            for key_id, (_, document_key) in keys.items():
                assert await shadow_key(cores[3], key_id, author) == document_key
        finally:
            await hub.stop()

    run(scenario)


def test_a_stuck_session_is_superseded_only_when_forced() -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(5, servers=3, admin_public=ADMIN_PUBLIC)
        try:
            author = Account()
            keys = await keys_with_documents(cores[:3], author, [1, 1, 2])
            # a change to add node 4 stops (its ReshareReceive answers never come), then node 4 dies
            doomed = cores[3].node_id
            hub.drop = lambda src, dst, env: dst == doomed and isinstance(env.body, m.ReshareReceive)
            with pytest.raises(AdminSessionIncomplete):
                await change(cores[0], cores[:4])
            hub.drop = lambda src, dst, env: False
            hub.isolate(doomed)
            with pytest.raises(NodeDisconnected):  # it cannot be resumed
                await change(cores[0], cores[:4], old=ids(cores[:3]))
            other = [cores[0], cores[1], cores[2], cores[4]]
            with pytest.raises(ExclusiveSessionActive):  # another change, not forced
                await change(cores[0], other)
            report = await change(cores[0], other, force=True)
            assert report["state"] == "done" and report["done"] == len(keys)
            for core in other:
                assert core.admin_session is None and core.servers_set == ids(other)
            for key_id, (t, document_key) in keys.items():
                await check_groups(hub, cores[4], other, key_id, t, document_key, author, [])
        finally:
            await hub.stop()

    run(scenario)


def test_a_dealer_dealing_a_wrong_constant_is_caught_by_the_key_and_named() -> None:
    """Subshares consistent with the commitments, but h(0) is not the dealer's share: only the key
    (Σ λ_i·A_i0 = Y) catches it, and the holders' stored public shares name the dealer."""

    async def scenario() -> None:
        hub, cores = await make_cluster(4, servers=3, admin_public=ADMIN_PUBLIC)
        try:
            author = Account()
            keys = await keys_with_documents(cores[:3], author, [2])  # t+1 = 3: every holder deals
            liar, shift = cores[2].node_id, 4242

            def tamper(src: bytes, dst: bytes, env: m.Envelope) -> m.Envelope:
                body = env.body
                if src == liar and isinstance(body, m.ReshareDealing):
                    fields = {f: getattr(body, f) for f in body.SCHEMA}
                    fields["subshare"] = (body.subshare + shift) % N
                    fields["commitments"] = (body.commitments[0] + Point.generator_mul(shift), *body.commitments[1:])
                    return m.Envelope(m.ReshareDealing(**fields), env.rid, env.reply_to)
                return env

            hub.tamper = tamper
            with pytest.raises(AdminSessionIncomplete):
                await change(cores[0], cores)
            errors = cores[0].admin_progress["errors"]
            assert any("0x" + liar.hex()[:16] in e and "constant is not its share" in e for e in errors), errors
            for key_id, (_, document_key) in keys.items():
                assert await shadow_key(cores[1], key_id, author) == document_key  # the old version still works
        finally:
            await hub.stop()

    run(scenario)
