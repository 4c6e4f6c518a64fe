"""Version commitments and epochs (issue 14, slice 2a): every node stores, with the key's version,
``D_k = Σ_i a_ik·G`` over all dealers (``D_0 = Y``) and the version's epoch, so that every
holder's public share ``s_j·G = public_share_at(x_j, D)`` is known from generation on."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from ocean_secret_store.crypto.curve import N, Point, random_scalar
from ocean_secret_store.crypto.hashes import key_version_hash
from ocean_secret_store.crypto.resharing import public_share_at, version_hash
from ocean_secret_store.crypto.sharing import evaluate, random_polynomial
from ocean_secret_store.exceptions import DatabaseError, InternalError, InvalidMessage
from ocean_secret_store.node.storage import DB_FILENAME, SCHEMA_VERSION, KeyShare, KeyVersion, SqliteKeyStorage
from ocean_secret_store.protocol import messages as m

from .memnet import make_cluster
from .records import stored as _raw
from .records import write_record
from .test_sessions import TIMEOUT, Account, run, stored

NODE_SECRET = 0x5EC7E7  # the node secret tests/fixtures/schema3/keys.sqlite3 was written under
SCHEMA3_DB = Path(__file__).parents[1] / "fixtures" / "schema3" / "keys.sqlite3"


# -- generation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "t"), [(1, 0), (3, 1), (4, 3), (5, 2)])
def test_generation_stores_identical_version_commitments_that_give_every_public_share(n: int, t: int) -> None:
    async def scenario() -> None:
        hub, cores = await make_cluster(n, session_timeout=TIMEOUT)
        try:
            author = Account()
            key_id = os.urandom(32)
            server_public = await cores[n - 1].generate_server_key(key_id, author.sign(key_id), t)
            records = [stored(core, key_id) for core in cores]
            versions = [record.last_version for record in records]
            commitments = versions[0].commitments
            assert len(commitments) == t + 1
            assert commitments[0] == server_public
            for core, record, version in zip(cores, records, versions, strict=True):
                assert version.commitments == commitments  # identical on every node
                assert record.public == server_public == version.commitments[0]
                assert version.epoch == 0
                # the version hash is still Parity's §2.11 hash
                assert version.hash == key_version_hash(version.id_numbers) == version_hash(version.id_numbers, 0)
                x = version.id_numbers[core.node_id]
                assert public_share_at(x, commitments) == Point.generator_mul(version.secret_share)
            # and every node's commitments give every other node's public share
            for core, version in zip(cores, versions, strict=True):
                for other in versions:
                    assert public_share_at(other.id_numbers[core.node_id], other.commitments) == Point.generator_mul(
                        version.secret_share)
        finally:
            await hub.stop()

    run(scenario)


def test_a_dealer_showing_different_commitments_to_different_nodes_stops_the_generation() -> None:
    """The keys agree (same constants), the higher commitments do not: GenReady's digest catches it."""

    async def scenario() -> None:
        hub, cores = await make_cluster(4, session_timeout=TIMEOUT)
        try:
            dealer, victim = cores[1].node_id, cores[2].node_id
            xs: dict[bytes, int] = {}

            def tamper(src: bytes, dst: bytes, env: m.Envelope) -> m.Envelope:
                body = env.body
                if isinstance(body, m.GenInit):
                    xs.update(body.id_numbers)
                if isinstance(body, m.GenPublics) and src == dealer and dst == victim:
                    # C'_1 = C_1 - x·d·G, C'_2 = C_2 + d·G: the victim's share still verifies, Y is unchanged
                    x, delta = xs[victim], 12345
                    c = list(body.coefficients)
                    c[1] = c[1] + Point.generator_mul((-x * delta) % N)
                    c[2] = c[2] + Point.generator_mul(delta)
                    return m.Envelope(m.GenPublics(session=body.session, coefficients=tuple(c)), env.rid,
                                      env.reply_to)
                return env

            hub.tamper = tamper
            key_id = os.urandom(32)
            author = Account()
            with pytest.raises(InvalidMessage, match="invalid message"):
                await cores[0].generate_server_key(key_id, author.sign(key_id), 2)
            assert all(core.storage.get(key_id) is None for core in cores)  # nobody stored it
            assert xs  # the tamper saw the generation
        finally:
            await hub.stop()

    run(scenario)


# -- the record ----------------------------------------------------------------------------------


def _dealt(t: int = 2, epoch: int = 0) -> tuple[KeyShare, KeyShare]:
    """The same key twice: its version with commitments (and ``epoch``), and without (schema 3)."""
    poly = random_polynomial(t)
    commitments = tuple(Point.generator_mul(a) for a in poly)
    ids = {Point.generator_mul(random_scalar()).to_bytes(): random_scalar() for _ in range(t + 1)}
    x = next(iter(ids.values()))
    share = evaluate(poly, x)
    assert public_share_at(x, commitments) == Point.generator_mul(share)

    def record(version: KeyVersion) -> KeyShare:
        return KeyShare(author=os.urandom(20), threshold=t, public=commitments[0], common_point=None,
                        encrypted_point=None, versions=(version,))

    return (record(KeyVersion.new(ids, share, commitments, epoch)), record(KeyVersion.new(ids, share)))


def test_commitments_and_epoch_are_stored_beside_parity_layout_and_authenticated(tmp_path: Path) -> None:
    with_commitments, plain = _dealt()
    refreshed, _ = _dealt(epoch=3)
    ids = {name: os.urandom(32) for name in ("commitments", "plain", "refreshed")}
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        store.insert(ids["commitments"], with_commitments)
        store.insert(ids["plain"], plain)
        store.insert(ids["refreshed"], refreshed)
    raw = {name: _raw(tmp_path, key_id)["versions"][0] for name, key_id in ids.items()}
    assert list(raw["plain"]) == ["hash", "id_numbers", "secret_share"]  # Parity's layout exactly
    assert list(raw["commitments"]) == ["hash", "id_numbers", "secret_share", "commitments"]  # epoch 0: not written
    assert list(raw["refreshed"]) == ["hash", "id_numbers", "secret_share", "commitments", "epoch"]
    assert raw["refreshed"]["epoch"] == 3
    assert raw["commitments"]["commitments"] == [
        "0x" + c.to_bytes().hex() for c in with_commitments.last_version.commitments]
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        assert store.get(ids["commitments"]) == with_commitments
        assert store.get(ids["plain"]) == plain
        assert store.get(ids["refreshed"]) == refreshed
        reread = store.get(ids["refreshed"])
        assert reread is not None and reread.last_version.epoch == 3
        assert reread.last_version.hash == version_hash(reread.last_version.id_numbers, 3)
        assert reread.last_version.hash != key_version_hash(reread.last_version.id_numbers)
    # both drive public-share checks: editing them (or adding them) on disk breaks the record's MAC
    edits = (
        ("commitments", "commitments", lambda v: [v[0], v[2], v[1]]),  # D_0 is the public key: kept
        ("refreshed", "epoch", lambda v: 4),
        ("plain", "epoch", lambda v: 1),
        ("plain", "commitments", lambda v: raw["commitments"]["commitments"]),
    )
    for name, field_name, edit in edits:
        record = _raw(tmp_path, ids[name])
        version = record["versions"][0]
        version[field_name] = edit(version.get(field_name))
        write_record(tmp_path, ids[name], record)  # under the MAC of the record as it was
        with SqliteKeyStorage(tmp_path, NODE_SECRET) as store, pytest.raises(DatabaseError, match="authentication"):
            store.get(ids[name])


def test_a_version_checks_its_commitments_and_epoch() -> None:
    with_commitments, _ = _dealt()
    version = with_commitments.last_version
    with pytest.raises(InternalError, match="D_0"):
        KeyShare(author=os.urandom(20), threshold=2, public=Point.generator_mul(random_scalar()), common_point=None,
                 encrypted_point=None, versions=(version,))
    for epoch in (-1, 2**64, True):
        with pytest.raises(InternalError, match="epoch"):
            KeyVersion(version.hash, dict(version.id_numbers), version.secret_share, version.commitments, epoch)
    with pytest.raises(InternalError, match="points"):
        KeyVersion(version.hash, dict(version.id_numbers), version.secret_share, (b"\x01" * 64,))  # type: ignore[arg-type]  # bytes on purpose
    # the epoch and the commitments are part of a version's identity
    same = KeyVersion(version.hash, dict(version.id_numbers), version.secret_share, version.commitments)
    assert same == version
    assert KeyVersion(version.hash, dict(version.id_numbers), version.secret_share) != version
    assert "commitments=3, epoch=0" in repr(version)


# -- the schema ----------------------------------------------------------------------------------


def test_a_database_written_by_schema_3_opens_and_reads_with_no_commitments(tmp_path: Path) -> None:
    # tests/fixtures/schema3/keys.sqlite3 was written by the schema 3 code (commit a91b1ba): two keys
    # under NODE_SECRET, 0x11.. (threshold 1) and 0x22.. (threshold 2, a document key, an owner-to-be).
    shutil.copy(SCHEMA3_DB, tmp_path / DB_FILENAME)
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
        before = dict(db.execute("SELECT key_id, record || hex(mac) FROM keys").fetchall())
    nodes = [Point.generator_mul(1001 + i).to_bytes() for i in range(3)]
    ids = {node: 7 + i for i, node in enumerate(nodes)}
    first, second = b"\x11" * 32, b"\x22" * 32
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        assert sorted(store.key_ids()) == [first, second]
        one, two = store.get(first), store.get(second)
        assert one is not None and two is not None
        assert one.threshold == 1 and one.public == Point.generator_mul(42) and one.owner is None
        assert two.threshold == 2 and two.owner == b"\xcc" * 20 and two.common_point == Point.generator_mul(2)
        assert one.last_version == KeyVersion.new(ids, 123456789)
        assert two.last_version == KeyVersion.new(ids, 987654321)
        for record in (one, two):
            version = record.last_version
            assert version.commitments == () and version.epoch == 0
            assert version.hash == key_version_hash(ids)
        # an old key can be given commitments later (a redistribution's new version)
        with_commitments, _ = _dealt(t=1, epoch=1)
        store.insert(os.urandom(32), with_commitments)
        assert store.migrating  # the old records were read as they are; the node converts them in the background
        while not store.migrate_step().done:
            pass
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
        after = {bytes(k): bytes(r) for k, r in db.execute("SELECT key_id, record FROM keys WHERE key_id IN (?, ?)",
                                                           (first, second))}
    assert set(after) == set(before) and all(r[0] == 1 for r in after.values())  # rewritten compact
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:  # and read the same after the migration
        assert store.get(first) == one and store.get(second) == two


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    shutil.copy(SCHEMA3_DB, tmp_path / DB_FILENAME)
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(DatabaseError, match=f"schema version {SCHEMA_VERSION + 1}"):
        SqliteKeyStorage(tmp_path, NODE_SECRET)
