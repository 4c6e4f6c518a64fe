"""The key storage at scale (issue 18): bulk insertion in one transaction, and a key count that does
not scan the whole table on every metrics scrape."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.exceptions import ServerKeyAlreadyGenerated
from ocean_secret_store.node.storage import DB_FILENAME, KeyShare, KeyVersion, SqliteKeyStorage

NODE_SECRET = random_scalar()


def _share() -> KeyShare:
    ids = {Point.generator_mul(random_scalar()).to_bytes(): random_scalar() for _ in range(3)}
    return KeyShare(author=os.urandom(20), threshold=1, public=Point.generator_mul(random_scalar()),
                    common_point=None, encrypted_point=None, versions=(KeyVersion.new(ids, random_scalar()),))


def test_insert_many_stores_records_as_insert_does(tmp_path: Path) -> None:
    items = [(os.urandom(32), _share()) for _ in range(50)]
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        assert store.insert_many(items) == 50
        assert store.insert_many([]) == 0
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:  # read back after a reopen: sealed and MACed alike
        assert all(store.get(key_id) == share for key_id, share in items)
        assert store.key_count() == 50


def test_insert_many_with_a_known_key_stores_none(tmp_path: Path) -> None:
    known = os.urandom(32)
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        store.insert(known, _share())
        fresh = [(os.urandom(32), _share()) for _ in range(5)]
        with pytest.raises(ServerKeyAlreadyGenerated):
            store.insert_many([*fresh, (known, _share())])
        assert not any(store.contains(key_id) for key_id, _ in fresh)
        assert store.key_count() == 1
        twice = os.urandom(32)
        with pytest.raises(ServerKeyAlreadyGenerated):
            store.insert_many([(twice, _share()), (twice, _share())])
        assert store.key_count() == 1


def test_key_count_scans_once_then_follows_the_writes(tmp_path: Path) -> None:
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        first = [(os.urandom(32), _share()) for _ in range(3)]
        store.insert_many(first)
        statements: list[str] = []
        store._conn().set_trace_callback(statements.append)  # what reaches SQLite from here on
        assert store.key_count() == 3
        store.insert(os.urandom(32), _share())
        with pytest.raises(ServerKeyAlreadyGenerated):
            store.insert(first[0][0], _share())
        store.insert_many([(os.urandom(32), _share()) for _ in range(4)])
        store.remove(first[1][0])
        store.remove(os.urandom(32))  # nothing there: no change
        store.update(first[0][0], _share())
        statements.clear()
        assert [store.key_count() for _ in range(3)] == [7, 7, 7]
        assert not statements, "the count is kept, not scanned again"
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        assert db.execute("SELECT COUNT(*) FROM keys").fetchone()[0] == 7


def test_a_failed_write_makes_the_count_scan_again(tmp_path: Path) -> None:
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        store.insert(os.urandom(32), _share())
        assert store.key_count() == 1
        store._count = None  # as a write whose outcome is unknown leaves it
        assert store.key_count() == 1
        store.insert(os.urandom(32), _share())
        assert store.key_count() == 2
