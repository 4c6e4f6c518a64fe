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
from typing import Any, Self

from ocean_secret_store.crypto.curve import scalar_bytes
from ocean_secret_store.node import storage
from ocean_secret_store.node.storage import DB_FILENAME, KeyShare
from ocean_secret_store.protocol.hexcodec import to_hex

__all__ = ["Schema5Writer", "v3_record", "write_schema5"]

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


class Schema5Writer:
    """A new schema-5 database being written: :meth:`add` records, :meth:`close` (or the end of a
    ``with`` block) commits the last ones. Several can be fed side by side (one per node of a key)."""

    def __init__(self, path: Path, node_secret: int, *, chunk: int = 2000) -> None:
        if path.is_dir():
            path = path / DB_FILENAME
        if path.exists():
            raise FileExistsError(path)
        self.path = path
        self.written = 0
        self._keys = storage._Keys(node_secret)
        self._chunk = chunk
        self._rows: list[tuple[bytes, str, bytes]] = []
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("BEGIN")
        for statement in _CREATE:
            self._db.execute(statement)
        self._db.execute("INSERT INTO meta VALUES ('key_check', ?)",
                         (self._keys.record_mac(b"", storage._KEY_CHECK),))
        self._db.execute("PRAGMA user_version = 5")
        self._db.execute("COMMIT")

    def add(self, key_id: bytes, share: KeyShare) -> None:
        raw = v3_record(self._keys, key_id, share)
        self._rows.append((key_id, raw.decode("utf-8"), self._keys.record_mac(key_id, raw)))
        if len(self._rows) >= self._chunk:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO keys (key_id, record, mac) VALUES (?, ?, ?)", self._rows)
            self._db.execute("COMMIT")
            self.written += len(self._rows)
            self._rows.clear()

    def close(self) -> None:
        try:
            self._flush()
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_schema5(path: Path, node_secret: int, records: Iterable[tuple[bytes, KeyShare]], *,
                  chunk: int = 2000) -> int:
    """Create the schema-5 database ``path`` (a directory: :data:`DB_FILENAME` inside it; the file
    must not exist) holding ``records`` under ``node_secret``, ``chunk`` records a transaction.

    :returns: how many records were written.
    """
    with Schema5Writer(path, node_secret, chunk=chunk) as writer:
        for key_id, share in records:
            writer.add(key_id, share)
    return writer.written
