"""Schema 6, the compact key record: a database and a backup written by the schema-5 code (V3 JSON
records, tests/fixtures/schema5, made by its make.py at commit 6e09403) open, migrate and read every
key; a record that fails its check survives the migration as it was; a migration that breaks off
changes nothing; ``node dump`` shows any record in Parity's V3 layout, the same before and after."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from ocean_secret_store.cli import main
from ocean_secret_store.crypto.curve import Point
from ocean_secret_store.node import backup, storage
from ocean_secret_store.node.storage import (
    DB_FILENAME,
    META_ADMIN_SESSION,
    META_SERVERS_SET,
    SCHEMA_VERSION,
    KeyShare,
    KeyVersion,
    PendingDocumentKey,
    SqliteKeyStorage,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "schema5"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
SECRET = int(EXPECTED["node_secret"], 16)


def _point(value: str | None) -> Point | None:
    return None if value is None else Point.from_bytes(bytes.fromhex(value))


def _expected() -> dict[bytes, KeyShare]:
    records = {}
    for key_id, r in EXPECTED["keys"].items():
        versions = tuple(
            KeyVersion(bytes.fromhex(v["hash"]), {bytes.fromhex(n): int(x, 16) for n, x in v["id_numbers"].items()},
                       int(v["secret_share"], 16), tuple(Point.from_bytes(bytes.fromhex(c)) for c in v["commitments"]),
                       v["epoch"], v["active"])
            for v in r["versions"])
        public = _point(r["public"])
        assert public is not None
        records[bytes.fromhex(key_id)] = KeyShare(
            bytes.fromhex(r["author"]), r["threshold"], public, _point(r["common_point"]),
            _point(r["encrypted_point"]), versions, None if r["owner"] is None else bytes.fromhex(r["owner"]))
    return records


def _schema5(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copyfile(FIXTURE / "keys.sqlite3", data_dir / DB_FILENAME)
    with sqlite3.connect(data_dir / DB_FILENAME) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 5
    return data_dir


def _rows(path: Path) -> dict[bytes, bytes]:
    with sqlite3.connect(path) as db:
        return {bytes(k): bytes(r) if isinstance(r, bytes) else r.encode() for k, r in
                db.execute("SELECT key_id, record FROM keys")}


def _reads_every_key(data_dir: Path) -> None:
    expected = _expected()
    assert len(expected) == 6
    pending = EXPECTED["pending"]
    with SqliteKeyStorage(data_dir, SECRET) as store:
        assert sorted(store.key_ids()) == sorted(expected)
        assert store.key_count() == 6
        for key_id, share in expected.items():
            assert store.get(key_id) == share, key_id.hex()
        assert store.pending_documents() == [PendingDocumentKey(
            bytes.fromhex(pending["key_id"]), Point.from_bytes(bytes.fromhex(pending["common_point"])),
            Point.from_bytes(bytes.fromhex(pending["encrypted_point"])), bytes.fromhex(pending["coordinator"]),
            tuple(bytes.fromhex(tx) for tx in pending["txs"]), pending["expiry"])]
        assert store.get_meta(META_SERVERS_SET) == EXPECTED["meta"][META_SERVERS_SET]
        assert store.get_meta(META_ADMIN_SESSION) == EXPECTED["meta"][META_ADMIN_SESSION]


@pytest.mark.parametrize("batch", [1000, 4, 1])
def test_a_schema_5_database_is_migrated_and_reads_every_key(tmp_path: Path, batch: int,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "_MIGRATION_BATCH", batch)  # read in batches of 1000 (4, 1: several)
    data_dir = _schema5(tmp_path)
    before = _rows(data_dir / DB_FILENAME)
    assert all(r.startswith(b"{") for r in before.values())  # V3 JSON
    _reads_every_key(data_dir)
    with sqlite3.connect(data_dir / DB_FILENAME) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"meta", "keys", "nodes", "pending"}
        assert db.execute("PRAGMA freelist_count").fetchone()[0] == 0  # vacuumed after the migration
        nodes = {bytes(n) for (n,) in db.execute("SELECT node_id FROM nodes")}
    after = _rows(data_dir / DB_FILENAME)
    assert set(after) == set(before)
    assert all(r[0] == 1 for r in after.values())  # compact
    assert sum(map(len, after.values())) * 3 < sum(map(len, before.values()))  # less than a third
    assert nodes == {bytes.fromhex(n) for r in EXPECTED["keys"].values() for v in r["versions"]
                     for n in v["id_numbers"]}
    check = backup.verify_database(data_dir / DB_FILENAME, SECRET)
    assert check.ok and check.schema_version == 6 and len(check.keys) == 6 and check.pending == 1
    _reads_every_key(data_dir)  # and again, opened as a schema-6 database


def test_a_record_that_fails_its_check_is_kept_as_it_was(tmp_path: Path) -> None:
    data_dir = _schema5(tmp_path)
    victim = sorted(_expected())[2]
    with sqlite3.connect(data_dir / DB_FILENAME) as db:
        db.execute("UPDATE keys SET mac = zeroblob(32) WHERE key_id = ?", (victim,))
    before = _rows(data_dir / DB_FILENAME)
    with SqliteKeyStorage(data_dir, SECRET) as store:
        with pytest.raises(storage.DatabaseError, match="fails authentication"):
            store.get(victim)
        for key_id, share in _expected().items():
            if key_id != victim:
                assert store.get(key_id) == share
    after = _rows(data_dir / DB_FILENAME)
    assert after[victim] == before[victim]  # the same V3 JSON, under the same (bad) MAC: nothing laundered
    check = backup.verify_database(data_dir / DB_FILENAME, SECRET)
    assert [(d.kind, d.name) for d in check.damaged] == [("key", "0x" + victim.hex())] and len(check.keys) == 5


def test_a_migration_that_breaks_off_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = _schema5(tmp_path)
    before = _rows(data_dir / DB_FILENAME)
    packed = 0
    pack = storage._pack

    def failing(record: Any, index: Any) -> bytes:
        nonlocal packed
        packed += 1
        if packed == 4:
            raise OSError("the disk went away")
        return pack(record, index)

    monkeypatch.setattr(storage, "_pack", failing)
    with pytest.raises(OSError, match="went away"):
        SqliteKeyStorage(data_dir, SECRET)
    with sqlite3.connect(data_dir / DB_FILENAME) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 5
        assert db.execute("SELECT name FROM sqlite_master WHERE name IN ('nodes', 'keys_v5')").fetchall() == []
    assert _rows(data_dir / DB_FILENAME) == before
    monkeypatch.setattr(storage, "_pack", pack)
    _reads_every_key(data_dir)  # the next start migrates


def test_a_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    data_dir = _schema5(tmp_path)
    with sqlite3.connect(data_dir / DB_FILENAME) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = _rows(data_dir / DB_FILENAME)
    with pytest.raises(storage.DatabaseError, match=f"schema version {SCHEMA_VERSION + 1}, this program reads 6"):
        SqliteKeyStorage(data_dir, SECRET)
    assert _rows(data_dir / DB_FILENAME) == before


def test_a_backup_taken_in_the_schema_5_format_restores_and_migrates(tmp_path: Path) -> None:
    old = tmp_path / "old.backup"
    shutil.copyfile(FIXTURE / "backup.sqlite3", old)
    manifest, check = backup.read_backup(old, SECRET)  # node verify --backup: read as it is
    assert manifest.schema_version == 5 and manifest.keys == 6 and check.ok and len(check.keys) == 6
    assert manifest.node_id == Point.generator_mul(SECRET).to_bytes()
    data_dir = tmp_path / "data"
    restored = backup.restore_backup(data_dir / DB_FILENAME, SECRET, old)
    assert restored.kept is None and restored.manifest == manifest
    _reads_every_key(data_dir)  # the restored node's first start migrates it
    new = tmp_path / "new.backup"
    made = backup.make_backup(data_dir / DB_FILENAME, SECRET, new)
    assert made.manifest.schema_version == 6 and made.manifest.keys == 6 and not made.damaged
    assert new.stat().st_size < old.stat().st_size
    again = tmp_path / "again"
    backup.restore_backup(again / DB_FILENAME, SECRET, new)
    _reads_every_key(again)


def _dump(path: Path) -> dict[bytes, Any]:
    return dict(backup.dump_database(path, SECRET))


def test_the_dump_is_parity_v3_layout_the_same_before_and_after_the_migration(tmp_path: Path) -> None:
    data_dir = _schema5(tmp_path)
    before = _dump(data_dir / DB_FILENAME)
    with sqlite3.connect(data_dir / DB_FILENAME) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 5  # the dump wrote nothing
        raw = {bytes(k): json.loads(r) for k, r in db.execute("SELECT key_id, record FROM keys")}
    for key_id, record in raw.items():  # the stored V3 JSON less its sealed shares
        for version in record["versions"]:
            del version["secret_share"]
        assert before[key_id] == record
    SqliteKeyStorage(data_dir, SECRET).close()
    assert _dump(data_dir / DB_FILENAME) == before
    secrets = {v["secret_share"] for r in EXPECTED["keys"].values() for v in r["versions"]}
    assert not any(s in json.dumps({k.hex(): v for k, v in before.items()}) for s in secrets)


def test_the_node_dump_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = _schema5(tmp_path)
    SqliteKeyStorage(data_dir, SECRET).close()
    public = "0x" + Point.generator_mul(SECRET).to_bytes().hex()
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nsecret = "0x{SECRET:064x}"\nlisten = "127.0.0.1:1"\nhttp_listen = "127.0.0.1:2"\n'
                      f'data_dir = "{data_dir}"\n[cluster]\n"{public}" = "127.0.0.1:1"\n[acl]\nkind = "none"\n')
    config.chmod(0o600)
    assert main(["node", "dump", "--config", str(config)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["key_id"] for line in lines] == sorted("0x" + k for k in EXPECTED["keys"])
    first = EXPECTED["keys"][lines[0]["key_id"][2:]]
    assert lines[0]["record"]["author"] == "0x" + first["author"]
    assert [v["hash"] for v in lines[0]["record"]["versions"]] == ["0x" + v["hash"] for v in first["versions"]]
    assert all("secret_share" not in v for line in lines for v in line["record"]["versions"])
    key = lines[1]["key_id"]
    assert main(["node", "dump", "--config", str(config), "--key", key[2:], "--key", "0x" + "00" * 32]) == 1
    picked = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert picked == [lines[1], {"key_id": "0x" + "00" * 32, "error": "no record of this key"}]
    assert main(["node", "dump", "--config", str(config), "--backup", str(FIXTURE / "backup.sqlite3")]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == lines
    assert main(["node", "dump", "--config", str(config), "--key", "0x12"]) == 2
    assert "--key must be 32 bytes" in capsys.readouterr().err
