"""Pending document keys of two-phase storing in both storages: put, refresh, abort one transaction,
commit in one transaction, authentication on disk, and the migration of a version 1 database."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.exceptions import DatabaseError, DocumentKeyAlreadyStored, InternalError, ServerKeyIsNotFound
from ocean_secret_store.node.storage import (
    DB_FILENAME,
    SCHEMA_VERSION,
    KeyShare,
    KeyStorage,
    KeyVersion,
    MemoryKeyStorage,
    PendingDocumentKey,
    SqliteKeyStorage,
)

from .records import v3_record

NODE_SECRET = random_scalar()
COORDINATOR = Point.generator_mul(77).to_bytes()


def _share() -> KeyShare:
    ids = {Point.generator_mul(random_scalar()).to_bytes(): random_scalar() for _ in range(3)}
    return KeyShare(os.urandom(20), 1, Point.generator_mul(random_scalar()), None, None,
                    (KeyVersion.new(ids, random_scalar()),))


def _points() -> tuple[Point, Point]:
    return Point.generator_mul(random_scalar()), Point.generator_mul(random_scalar())


def _pending(key_id: bytes, tx: bytes | None = None, expiry: float | None = None,
             points: tuple[Point, Point] | None = None) -> PendingDocumentKey:
    common, encrypted = points or _points()
    return PendingDocumentKey(key_id, common, encrypted, COORDINATOR, (tx or os.urandom(32),),
                              time.time() + 30 if expiry is None else expiry)


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStorage]:
    store: KeyStorage = MemoryKeyStorage() if request.param == "memory" else SqliteKeyStorage(tmp_path, NODE_SECRET)
    yield store
    store.close()


# -- the record type ------------------------------------------------------------------------------


def test_pending_values_are_checked() -> None:
    key_id, tx = os.urandom(32), os.urandom(32)
    c, e = _points()
    with pytest.raises(InternalError):
        PendingDocumentKey(key_id, c, e, COORDINATOR, (), 1.0)
    with pytest.raises(InternalError):
        PendingDocumentKey(key_id, c, e, COORDINATOR, (tx, tx), 1.0)
    with pytest.raises(InternalError):
        PendingDocumentKey(key_id, c, e, b"\x01" * 20, (tx,), 1.0)
    with pytest.raises(InternalError):
        PendingDocumentKey(key_id, c, e, COORDINATOR, (tx,), math.inf)
    with pytest.raises(InternalError):
        PendingDocumentKey(b"short", c, e, COORDINATOR, (tx,), 1.0)


def test_refresh_adds_the_transaction_and_never_shortens_the_expiry() -> None:
    first, second = os.urandom(32), os.urandom(32)
    pending = _pending(os.urandom(32), first, expiry=100.0)
    refreshed = pending.refreshed(second, 50.0)
    assert refreshed.txs == (first, second) and refreshed.expiry == 100.0
    assert refreshed.refreshed(second, 200.0).txs == (first, second)
    assert refreshed.refreshed(second, 200.0).expiry == 200.0
    assert refreshed.without(first) == PendingDocumentKey(pending.key_id, pending.common_point,
                                                          pending.encrypted_point, COORDINATOR, (second,), 100.0)
    assert pending.without(first) is None


# -- both storages --------------------------------------------------------------------------------


def test_put_get_list_and_replace(storage: KeyStorage) -> None:
    ids = sorted(os.urandom(32) for _ in range(3))
    for key_id in ids:
        storage.insert(key_id, _share())
    pendings = [_pending(key_id) for key_id in ids]
    for pending in reversed(pendings):
        storage.put_pending(pending)
    assert storage.get_pending(ids[0]) == pendings[0]
    assert storage.pending_documents() == pendings
    replaced = pendings[1].refreshed(os.urandom(32), pendings[1].expiry + 5)
    storage.put_pending(replaced)
    assert storage.get_pending(ids[1]) == replaced
    assert storage.get_pending(os.urandom(32)) is None
    # a pending never changes what the record says: retrieval sees only committed document keys
    assert [share.common_point for share in map(storage.get, ids) if share is not None] == [None] * len(ids)


def test_a_pending_needs_the_record(storage: KeyStorage) -> None:
    with pytest.raises(ServerKeyIsNotFound):
        storage.put_pending(_pending(os.urandom(32)))
    assert storage.pending_documents() == []


def test_abort_removes_only_its_transaction(storage: KeyStorage) -> None:
    key_id, first, second = os.urandom(32), os.urandom(32), os.urandom(32)
    storage.insert(key_id, _share())
    pending = _pending(key_id, first).refreshed(second, 0)
    storage.put_pending(pending)
    assert storage.remove_pending_tx(key_id, os.urandom(32)) == pending  # not ours: nothing changes
    left = storage.remove_pending_tx(key_id, second)
    assert left is not None and left.txs == (first,)
    assert storage.get_pending(key_id) == left
    assert storage.remove_pending_tx(key_id, first) is None
    assert storage.get_pending(key_id) is None
    assert storage.remove_pending_tx(key_id, first) is None


def test_commit_copies_the_pending_points_into_the_record(storage: KeyStorage) -> None:
    key_id, tx = os.urandom(32), os.urandom(32)
    share = _share()
    storage.insert(key_id, share)
    pending = _pending(key_id, tx)
    storage.put_pending(pending)
    assert storage.commit_pending(key_id, os.urandom(32)) is None  # another transaction: nothing
    assert storage.get_pending(key_id) == pending
    committed = storage.commit_pending(key_id, tx)
    assert committed == share.with_document_key(pending.common_point, pending.encrypted_point)
    assert storage.get(key_id) == committed
    assert storage.get_pending(key_id) is None
    assert storage.commit_pending(key_id, tx) is None  # nothing left to commit


def test_commit_without_a_transaction_commits_any_and_the_same_key_again_is_no_change(storage: KeyStorage) -> None:
    key_id = os.urandom(32)
    points = _points()
    share = _share().with_document_key(*points)
    storage.insert(key_id, share)
    storage.put_pending(_pending(key_id, points=points))
    assert storage.commit_pending(key_id) == share
    assert storage.get_pending(key_id) is None


def test_commit_over_another_document_key_is_refused_and_changes_nothing(storage: KeyStorage) -> None:
    key_id = os.urandom(32)
    share = _share().with_document_key(*_points())
    storage.insert(key_id, share)
    pending = _pending(key_id)
    storage.put_pending(pending)
    with pytest.raises(DocumentKeyAlreadyStored):
        storage.commit_pending(key_id)
    assert storage.get(key_id) == share
    assert storage.get_pending(key_id) == pending


def test_drop_only_what_was_looked_at(storage: KeyStorage) -> None:
    key_id = os.urandom(32)
    storage.insert(key_id, _share())
    pending = _pending(key_id)
    storage.put_pending(pending)
    refreshed = pending.refreshed(os.urandom(32), pending.expiry + 10)
    storage.put_pending(refreshed)
    assert not storage.drop_pending(key_id, pending)  # changed since: kept
    assert storage.get_pending(key_id) == refreshed
    assert storage.drop_pending(key_id, refreshed)
    assert not storage.drop_pending(key_id)
    storage.put_pending(pending)
    assert storage.drop_pending(key_id)
    assert storage.get_pending(key_id) is None


def test_removing_a_key_removes_its_pending(storage: KeyStorage) -> None:
    key_id = os.urandom(32)
    storage.insert(key_id, _share())
    storage.put_pending(_pending(key_id))
    storage.remove(key_id)
    assert storage.get_pending(key_id) is None and storage.pending_documents() == []


# -- SQLite specifics -----------------------------------------------------------------------------


def _raw_pending(path: Path, key_id: bytes) -> tuple[dict[str, object], bytes]:
    with sqlite3.connect(path / DB_FILENAME) as db:
        record, mac = db.execute("SELECT record, mac FROM pending WHERE key_id = ?", (key_id,)).fetchone()
    return json.loads(record), mac


def _write_pending(path: Path, key_id: bytes, record: dict[str, object], mac: bytes) -> None:
    with sqlite3.connect(path / DB_FILENAME) as db:
        db.execute("INSERT OR REPLACE INTO pending (key_id, record, mac) VALUES (?, ?, ?)",
                   (key_id, json.dumps(record, separators=(",", ":")), mac))


def test_pending_survives_a_reopen(tmp_path: Path) -> None:
    key_id = os.urandom(32)
    pending = _pending(key_id).refreshed(os.urandom(32), time.time() + 60.123456789)
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        store.insert(key_id, _share())
        store.put_pending(pending)
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        assert store.get_pending(key_id) == pending  # the expiry too, to the last bit


def test_edited_points_of_a_pending_are_detected(tmp_path: Path) -> None:
    key_id, other_id = os.urandom(32), os.urandom(32)
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        share = _share()
        store.insert(key_id, share)
        store.insert(other_id, _share())
        store.put_pending(_pending(key_id))
        store.put_pending(_pending(other_id))
        record, mac = _raw_pending(tmp_path, key_id)
        record["common_point"] = "0x" + Point.generator_mul(5).to_bytes().hex()
        _write_pending(tmp_path, key_id, record, mac)
        with pytest.raises(DatabaseError, match=r"pending document key of key 0x[0-9a-f]+ fails authentication"):
            store.get_pending(key_id)
        with pytest.raises(DatabaseError, match="fails authentication"):
            store.commit_pending(key_id)
        assert store.get(key_id) == share  # nothing was committed from the edited row
        with pytest.raises(DatabaseError, match="fails authentication"):
            store.pending_documents()
        # A genuine row of another key does not verify under this key id either.
        other_record, other_mac = _raw_pending(tmp_path, other_id)
        _write_pending(tmp_path, key_id, other_record, other_mac)
        with pytest.raises(DatabaseError, match="fails authentication"):
            store.get_pending(key_id)
        # Nor does a row authenticated under the record MAC's key: the labels differ.
        record_mac = store._keys.record_mac(key_id, json.dumps(record, separators=(",", ":")).encode())
        _write_pending(tmp_path, key_id, record, record_mac)
        with pytest.raises(DatabaseError, match="fails authentication"):
            store.get_pending(key_id)


def test_malformed_pending_under_a_valid_mac_is_reported_corrupt(tmp_path: Path) -> None:
    key_id = os.urandom(32)
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        store.insert(key_id, _share())
        store.put_pending(_pending(key_id))
        record, _ = _raw_pending(tmp_path, key_id)
        record["txs"] = []
        raw = json.dumps(record, separators=(",", ":")).encode()
        _write_pending(tmp_path, key_id, record, store._keys.pending_mac(key_id, raw))
        with pytest.raises(DatabaseError, match="is corrupt: inconsistent pending document key"):
            store.get_pending(key_id)


def test_commit_is_one_transaction(tmp_path: Path) -> None:
    """A commit that fails at its last statement (deleting the pending) leaves the record as it was."""
    key_id, tx = os.urandom(32), os.urandom(32)
    share = _share()
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        store.insert(key_id, share)
        pending = _pending(key_id, tx)
        store.put_pending(pending)
        with sqlite3.connect(tmp_path / DB_FILENAME) as db:
            db.execute("CREATE TRIGGER no_delete BEFORE DELETE ON pending BEGIN SELECT RAISE(ABORT, 'boom'); END")
        with pytest.raises(DatabaseError, match="cannot commit the document key of key"):
            store.commit_pending(key_id, tx)
        assert store.get(key_id) == share  # the record's update was rolled back with the failed delete
        assert store.get_pending(key_id) == pending
        with sqlite3.connect(tmp_path / DB_FILENAME) as db:
            db.execute("DROP TRIGGER no_delete")
        assert store.commit_pending(key_id, tx) == share.with_document_key(pending.common_point,
                                                                           pending.encrypted_point)


#: The schema of version 1, as the code before two-phase storing created it.
V1_SCHEMA = [
    ("CREATE TABLE keys ( key_id BLOB PRIMARY KEY CHECK (length(key_id) = 32), record TEXT NOT NULL,"
     " mac BLOB NOT NULL) WITHOUT ROWID"),
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
]


def test_a_version_1_database_is_migrated(tmp_path: Path) -> None:
    key_id = os.urandom(32)
    share = _share().with_document_key(*_points())
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        store.insert(key_id, share)
    # Turn it into exactly what version 1 wrote: the same tables and key check, no pending table.
    raw, mac = v3_record(NODE_SECRET, key_id, share)  # its record as version 1 wrote it: V3 JSON
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        for table in ("pending", "nodes", "keys"):
            db.execute(f"DROP TABLE {table}")
        db.execute(V1_SCHEMA[0])
        db.execute("INSERT INTO keys VALUES (?, ?, ?)", (key_id, raw.decode(), mac))
        db.execute("PRAGMA user_version = 1")
        tables = sorted(" ".join(sql.split()) for (sql,) in db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table'"))
    assert tables == V1_SCHEMA
    other = os.urandom(32)
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        assert store.get(key_id) == share
        assert store.pending_documents() == []
        store.insert(other, _share())
        pending = _pending(other)
        store.put_pending(pending)
        assert store.get_pending(other) == pending
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:  # a migrated database opens as a new one
        assert store.get_pending(other) == pending
        assert store.get(key_id) == share
