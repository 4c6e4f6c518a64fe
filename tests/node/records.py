"""White-box access to the stored key records of a SQLite key database, for tests that read or
edit a record on disk: a record shown and edited in Parity's V3 JSON layout (with the sealed
share, as schema <= 5 stored it), written back in the compact form of schema 6."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from ocean_secret_store.node import storage
from ocean_secret_store.node.storage import DB_FILENAME

__all__ = ["raw_row", "stored", "write_record", "write_row"]


def _db(path: Path) -> Path:
    return path / DB_FILENAME if path.is_dir() else path


def _nodes(db: sqlite3.Connection) -> dict[int, bytes]:
    return {int(i): bytes(n) for i, n in db.execute("SELECT idx, node_id FROM nodes")}


def raw_row(path: Path, key_id: bytes) -> tuple[bytes, bytes]:
    """The stored ``(record, mac)`` bytes of ``key_id``."""
    with sqlite3.connect(_db(path)) as db:
        record, mac = db.execute("SELECT record, mac FROM keys WHERE key_id = ?", (key_id,)).fetchone()
    return bytes(record), bytes(mac)


def write_row(path: Path, key_id: bytes, record: bytes, mac: bytes) -> None:
    with sqlite3.connect(_db(path)) as db:
        db.execute("UPDATE keys SET record = ?, mac = ? WHERE key_id = ?", (record, mac, key_id))


def stored(path: Path, key_id: bytes) -> dict[str, Any]:
    """The stored record of ``key_id`` in V3 JSON layout, each version's ``secret_share`` sealed."""
    record, _ = raw_row(path, key_id)
    with sqlite3.connect(_db(path)) as db:
        parsed = storage._parse(record, _nodes(db))
    return _with_sealed_shares(parsed)


def _with_sealed_shares(record: storage._RawRecord) -> dict[str, Any]:
    """The V3 layout with each version's sealed ``secret_share``, in the field order of schema 5
    (``hash``, ``id_numbers``, ``secret_share``, then ``commitments``, ``epoch``, ``inactive``)."""
    layout = storage._v3_layout(record)
    versions = []
    for entry, version in zip(layout["versions"], record.versions, strict=True):
        versions.append({"hash": entry.pop("hash"), "id_numbers": entry.pop("id_numbers"),
                         "secret_share": {"aes256gcm": "0x" + version.sealed.hex()}, **entry})
    layout["versions"] = versions
    return layout


def write_record(path: Path, key_id: bytes, layout: dict[str, Any], mac: bytes | None = None,
                 node_secret: int | None = None) -> bytes:
    """Store ``layout`` (as :func:`stored` gives it, edited) as the compact record of ``key_id``,
    under ``mac`` (default: the row's MAC as it is), or re-authenticated under ``node_secret``
    (then only the checks inside the record can catch an edit). Its node ids must be in the node
    table. Each version's hash is recomputed (the compact form stores none). :returns: the record."""
    for entry in layout["versions"]:
        ids = {bytes.fromhex(n[2:]): int(x, 16) for n, x in entry["id_numbers"].items()}
        entry["hash"] = "0x" + storage.epoch_version_hash(ids, entry.get("epoch", 0)).hex()
    parsed = storage._parse_v3(json.dumps(layout).encode())
    with sqlite3.connect(_db(path)) as db:
        index = {node: i for i, node in _nodes(db).items()}
    packed = storage._pack(parsed, index)
    if mac is None:
        mac = raw_row(path, key_id)[1] if node_secret is None else storage._Keys(node_secret).record_mac(key_id, packed)
    write_row(path, key_id, packed, mac)
    return packed


def v3_record(node_secret: int, key_id: bytes, share: storage.KeyShare) -> tuple[bytes, bytes]:
    """``(record, mac)`` of ``share`` as schema <= 5 wrote it: V3 JSON (compact separators), shares sealed."""
    keys = storage._Keys(node_secret)
    layout = _with_sealed_shares(storage._sealed_record(keys, key_id, share))
    raw = json.dumps(layout, separators=(",", ":")).encode()
    return raw, keys.record_mac(key_id, raw)


def make_old_schema(path: Path, node_secret: int, version: int) -> None:
    """Turn the schema-6 database ``path`` into one of schema ``version`` (2-5): its records in V3
    JSON, no node table (the records must all read)."""
    with sqlite3.connect(_db(path)) as db:
        rows = [(bytes(k),) for (k,) in db.execute("SELECT key_id FROM keys")]
    with storage.SqliteKeyStorage(path, node_secret) as store:
        shares = {key_id: store.get(key_id) for (key_id,) in rows}
    with sqlite3.connect(_db(path)) as db:
        for key_id, share in shares.items():
            assert share is not None
            raw, mac = v3_record(node_secret, key_id, share)
            db.execute("UPDATE keys SET record = ?, mac = ? WHERE key_id = ?", (raw.decode(), mac, key_id))
        db.execute("DROP TABLE nodes")
        db.execute(f"PRAGMA user_version = {version}")
