"""A key database of schema 5 (records in Parity's V3 JSON layout, shares sealed), written as the
schema-5 code wrote it (commit 6e09403: the same tables, the same JSON bytes, the same MACs), for
tests and benches of the migration to schema 6 with more keys than tests/fixtures/schema5 holds.
Today's storage writes only schema 6; this writer exists for that test data alone."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ocean_secret_store.crypto.curve import scalar_bytes
from ocean_secret_store.node import storage
from ocean_secret_store.node.storage import DB_FILENAME, KeyShare
from ocean_secret_store.protocol.hexcodec import to_hex

__all__ = ["v3_record", "write_schema5"]

_CREATE = (
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
    ("CREATE TABLE keys (key_id BLOB PRIMARY KEY CHECK (length(key_id) = 32), record TEXT NOT NULL,"
     " mac BLOB NOT NULL) WITHOUT ROWID"),
    ("CREATE TABLE pending (key_id BLOB PRIMARY KEY CHECK (length(key_id) = 32), record TEXT NOT NULL,"
     " mac BLOB NOT NULL) WITHOUT ROWID"),
)


def v3_record(keys: Any, key_id: bytes, share: KeyShare) -> bytes:
    """The schema-5 record of ``share``: V3 JSON (field order and 0x-hex as protocol.md §5.2),
    every share sealed (AES-256-GCM, key id and version hash as associated data), compact UTF-8."""
    record: dict[str, Any] = {
        "author": to_hex(share.author),
        "threshold": share.threshold,
        "public": to_hex(share.public.to_bytes()),
        "common_point": None if share.common_point is None else to_hex(share.common_point.to_bytes()),
        "encrypted_point": None if share.encrypted_point is None else to_hex(share.encrypted_point.to_bytes()),
        "versions": [
            {
                "hash": to_hex(v.hash),
                "id_numbers": {to_hex(node): to_hex(scalar_bytes(x)) for node, x in sorted(v.id_numbers.items())},
                "secret_share": {"aes256gcm": to_hex(storage._seal_share(keys, key_id, v))},
                **({"commitments": [to_hex(c.to_bytes()) for c in v.commitments]} if v.commitments else {}),
                **({"epoch": v.epoch} if v.epoch else {}),
                **({} if v.active else {"inactive": True}),
            }
            for v in share.versions
        ],
    }
    if share.owner is not None:
        record["owner"] = to_hex(share.owner)
    return json.dumps(record, separators=(",", ":")).encode("utf-8")


def write_schema5(path: Path, node_secret: int, records: Iterable[tuple[bytes, KeyShare]], *,
                  chunk: int = 2000) -> int:
    """Create the schema-5 database ``path`` (a directory: :data:`DB_FILENAME` inside it; the file
    must not exist) holding ``records`` under ``node_secret``, ``chunk`` records a transaction.

    :returns: how many records were written.
    """
    if path.is_dir():
        path = path / DB_FILENAME
    if path.exists():
        raise FileExistsError(path)
    keys = storage._Keys(node_secret)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    db = sqlite3.connect(path, isolation_level=None)
    written = 0
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("BEGIN")
        for statement in _CREATE:
            db.execute(statement)
        db.execute("INSERT INTO meta VALUES ('key_check', ?)", (keys.record_mac(b"", storage._KEY_CHECK),))
        db.execute("PRAGMA user_version = 5")
        db.execute("COMMIT")
        rows: list[tuple[bytes, str, bytes]] = []
        for key_id, share in records:
            raw = v3_record(keys, key_id, share)
            rows.append((key_id, raw.decode("utf-8"), keys.record_mac(key_id, raw)))
            if len(rows) >= chunk:
                written += _insert(db, rows)
        written += _insert(db, rows)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    return written


def _insert(db: sqlite3.Connection, rows: list[tuple[bytes, str, bytes]]) -> int:
    count = len(rows)
    if rows:
        db.execute("BEGIN")
        db.executemany("INSERT INTO keys (key_id, record, mac) VALUES (?, ?, ?)", rows)
        db.execute("COMMIT")
        rows.clear()
    return count
