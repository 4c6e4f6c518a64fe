"""Schema 6, the compact key record: a database and a backup written by the schema-5 code (V3 JSON
records, tests/fixtures/schema5, made by its make.py at commit 6e09403) open, migrate and read every
key; a record that fails its check survives the migration as it was; a migration that breaks off
changes nothing; ``node dump`` shows any record in Parity's V3 layout, the same before and after."""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import replace
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
from ocean_secret_store.testing.schema5 import write_schema5

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


def _migrate(store: SqliteKeyStorage, limit: int = storage.MIGRATION_STEP) -> list[storage.MigrationStep]:
    steps = [store.migrate_step(limit)]
    while not steps[-1].done:
        steps.append(store.migrate_step(limit))
    return steps


def _marker(path: Path) -> Any:
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT value FROM meta WHERE name = ?", (storage.META_RECORDS_MIGRATION,)).fetchone()
    return None if row is None else json.loads(bytes(row[0])[:-32])


@pytest.mark.parametrize("limit", [200, 4, 1])
def test_a_schema_5_database_serves_at_once_and_is_migrated_in_steps(tmp_path: Path, limit: int) -> None:
    data_dir = _schema5(tmp_path)
    path = data_dir / DB_FILENAME
    before = _rows(path)
    assert all(r.startswith(b"{") for r in before.values())  # V3 JSON
    with SqliteKeyStorage(data_dir, SECRET) as store:
        assert store.migrating and store.records_to_migrate() is None  # not counted before the first step
        # the schema part is done: version 6, the new tables, the marker; not one record rewritten
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"meta", "keys", "nodes", "pending"}
        assert _rows(path) == before
        assert _marker(path)["visited"] == 0
    _reads_every_key(data_dir)  # the old format served (a second opening: the marker is kept)
    with SqliteKeyStorage(data_dir, SECRET) as store:
        steps = _migrate(store, limit)
        assert not store.migrating and store.records_to_migrate() == 0
        assert store.migrate_step(limit) == storage.MigrationStep(0, 0, True, 0)  # nothing left: a no-op
    assert sum(s.converted for s in steps) == 6 and not any(s.kept for s in steps)
    assert len(steps) == -(-6 // limit)  # the step that reads the last key ends it
    assert [s.remaining for s in steps] == [6 - limit * (i + 1) for i in range(len(steps) - 1)] + [0]
    assert _marker(path) is None
    after = _rows(path)
    assert set(after) == set(before)
    assert all(r[0] == 1 for r in after.values())  # compact
    assert sum(map(len, after.values())) * 3 < sum(map(len, before.values()))  # less than a third
    with sqlite3.connect(path) as db:
        nodes = {bytes(n) for (n,) in db.execute("SELECT node_id FROM nodes")}
    assert nodes == {bytes.fromhex(n) for r in EXPECTED["keys"].values() for v in r["versions"]
                     for n in v["id_numbers"]}
    check = backup.verify_database(path, SECRET)
    assert check.ok and check.schema_version == 6 and len(check.keys) == 6 and check.pending == 1
    assert storage.META_RECORDS_MIGRATION not in check.meta
    _reads_every_key(data_dir)  # and again, every record compact


def test_reads_while_half_migrated_and_a_close_between_steps_resumes(tmp_path: Path) -> None:
    data_dir = _schema5(tmp_path)
    path = data_dir / DB_FILENAME
    before = _rows(path)
    with SqliteKeyStorage(data_dir, SECRET) as store:
        step = store.migrate_step(2)
        assert step == storage.MigrationStep(2, 0, False, 4) and store.records_to_migrate() == 4
        for key_id, share in _expected().items():  # mixed: two compact records, four of V3 JSON
            assert store.get(key_id) == share
    mixed = _rows(path)
    first_two = sorted(before)[:2]
    assert {k for k, r in mixed.items() if r[0] == 1} == set(first_two)  # by key id, in order
    assert {k: r for k, r in mixed.items() if k not in first_two} == {k: before[k] for k in sorted(before)[2:]}
    marker = _marker(path)
    assert marker["after"] == first_two[1].hex() and marker["converted"] == 2 and marker["total"] == 6
    _reads_every_key(data_dir)  # closed and opened again between steps
    with SqliteKeyStorage(data_dir, SECRET) as store:
        assert store.migrating and store.records_to_migrate() == 4  # from the marker
        steps = _migrate(store, 3)
    assert [(s.converted, s.done) for s in steps] == [(3, False), (1, True)]  # resumed after the second key
    assert all(r[0] == 1 for r in _rows(path).values()) and _marker(path) is None
    _reads_every_key(data_dir)


def test_every_write_to_an_unconverted_key_is_compact_and_the_migration_passes_it_over(tmp_path: Path) -> None:
    data_dir = _schema5(tmp_path)
    path = data_dir / DB_FILENAME
    expected = _expected()
    pending_key = bytes.fromhex(EXPECTED["pending"]["key_id"])
    updated = next(k for k in sorted(expected) if k != pending_key)
    with SqliteKeyStorage(data_dir, SECRET) as store:
        share = expected[updated]
        changed = replace(share, owner=b"\x42" * 20)
        store.update(updated, changed)
        committed = store.commit_pending(pending_key)
        assert committed is not None and committed.common_point is not None
        rows = _rows(path)
        assert rows[updated][0] == 1 and rows[pending_key][0] == 1  # written compact
        assert sum(r[0] == 1 for r in rows.values()) == 2  # and nothing else yet
        assert store.get(updated) == changed and store.get(pending_key) == committed
        steps = _migrate(store)
        assert sum(s.converted for s in steps) == 4  # the two written are passed over
        assert store.get(updated) == changed and store.get(pending_key) == committed
    assert all(r[0] == 1 for r in _rows(path).values())


def test_a_record_that_fails_its_check_is_kept_as_it_was_and_reported(tmp_path: Path) -> None:
    data_dir = _schema5(tmp_path)
    victim = sorted(_expected())[2]
    with sqlite3.connect(data_dir / DB_FILENAME) as db:
        db.execute("UPDATE keys SET mac = zeroblob(32) WHERE key_id = ?", (victim,))
    before = _rows(data_dir / DB_FILENAME)
    with SqliteKeyStorage(data_dir, SECRET) as store:
        steps = _migrate(store, 2)
        assert [(s.converted, s.kept) for s in steps] == [(2, 0), (1, 1), (2, 0)]
        with pytest.raises(storage.DatabaseError, match="fails authentication"):
            store.get(victim)
        for key_id, share in _expected().items():
            if key_id != victim:
                assert store.get(key_id) == share
    after = _rows(data_dir / DB_FILENAME)
    assert after[victim] == before[victim]  # the same V3 JSON, under the same (bad) MAC: nothing laundered
    assert _marker(data_dir / DB_FILENAME) is None  # done: the kept record is not looked at again
    check = backup.verify_database(data_dir / DB_FILENAME, SECRET)
    assert [(d.kind, d.name) for d in check.damaged] == [("key", "0x" + victim.hex())] and len(check.keys) == 5


def test_a_step_that_breaks_off_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = _schema5(tmp_path)
    path = data_dir / DB_FILENAME
    with SqliteKeyStorage(data_dir, SECRET) as store:
        assert store.migrate_step(2).converted == 2
        rows, marker = _rows(path), _marker(path)
        packed = 0
        pack = storage._pack

        def failing(record: Any, index: Any) -> bytes:
            nonlocal packed
            packed += 1
            if packed == 2:
                raise OSError("the disk went away")
            return pack(record, index)

        monkeypatch.setattr(storage, "_pack", failing)
        with pytest.raises(OSError, match="went away"):
            store.migrate_step(3)
        assert _rows(path) == rows and _marker(path) == marker  # the step's first record undone too
        monkeypatch.setattr(storage, "_pack", pack)
        for key_id, share in _expected().items():
            assert store.get(key_id) == share
        assert sum(s.converted for s in _migrate(store, 3)) == 4
    _reads_every_key(data_dir)


def test_backup_restore_verify_and_dump_of_a_partly_migrated_database(tmp_path: Path) -> None:
    data_dir = _schema5(tmp_path)
    path = data_dir / DB_FILENAME
    dumped = _dump(path)
    with SqliteKeyStorage(data_dir, SECRET) as store:
        store.migrate_step(3)
    assert sum(r[0] == 1 for r in _rows(path).values()) == 3  # half compact, half V3 JSON
    check = backup.verify_database(path, SECRET)
    assert check.ok and len(check.keys) == 6 and check.schema_version == 6
    assert check.meta[storage.META_RECORDS_MIGRATION]["visited"] == 3
    lines = backup.Verification.of(bytes(64), path, check, None, {}).lines()
    assert any(line.startswith("records: converting to the compact format of schema 6") and "3 of 6" in line
               for line in lines)
    assert _dump(path) == dumped  # the same V3 layout from either format
    made = backup.make_backup(path, SECRET, tmp_path / "half.backup")
    assert made.manifest.keys == 6 and not made.damaged
    restored = tmp_path / "restored"
    backup.restore_backup(restored / DB_FILENAME, SECRET, tmp_path / "half.backup")
    assert _marker(restored / DB_FILENAME)["after"] == _marker(path)["after"]  # goes on where it was
    with SqliteKeyStorage(restored, SECRET) as store:
        assert store.records_to_migrate() == 3
        assert [s.converted for s in _migrate(store)] == [3]
    _reads_every_key(restored)
    again = tmp_path / "again.backup"
    backup.make_backup(restored / DB_FILENAME, SECRET, again)
    with sqlite3.connect(again) as db:
        assert db.execute("PRAGMA freelist_count").fetchone()[0] == 0  # a backup is written without free pages


def test_a_tampered_marker_starts_the_migration_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data_dir = _schema5(tmp_path)
    path = data_dir / DB_FILENAME
    with SqliteKeyStorage(data_dir, SECRET) as store:
        store.migrate_step(4)
    with sqlite3.connect(path) as db:  # skip the rest, says the edited marker: its MAC says no
        (value,) = db.execute("SELECT value FROM meta WHERE name = ?", (storage.META_RECORDS_MIGRATION,)).fetchone()
        edited = json.dumps({**_marker(path), "after": "ff" * 32}).encode() + bytes(value)[-32:]
        db.execute("UPDATE meta SET value = ? WHERE name = ?", (edited, storage.META_RECORDS_MIGRATION))
    check = backup.verify_database(path, SECRET)
    assert [(d.kind, d.name) for d in check.damaged] == [("meta", storage.META_RECORDS_MIGRATION)]
    with SqliteKeyStorage(data_dir, SECRET) as store:
        assert "fails authentication" in caplog.text and "starts over" in caplog.text
        steps = _migrate(store)
        assert [(s.converted, s.done) for s in steps] == [(2, True)]  # the four converted are passed over
    assert all(r[0] == 1 for r in _rows(path).values()) and _marker(path) is None
    assert backup.verify_database(path, SECRET).ok


def test_the_bench_and_test_writer_writes_schema_5_as_schema_5_did(tmp_path: Path) -> None:
    # ocean_secret_store/testing/schema5.py against the fixture the schema-5 code wrote: the same
    # tables, the same JSON (but the sealed shares' random nonces), and the node migrates it alike
    written = tmp_path / "written"
    written.mkdir()
    assert write_schema5(written, SECRET, _expected().items()) == 6
    with sqlite3.connect(written / DB_FILENAME) as db, sqlite3.connect(FIXTURE / "keys.sqlite3") as old:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 5
        tables = "SELECT name, sql FROM sqlite_master WHERE name IN ('meta', 'keys') ORDER BY name"
        assert [(n, "".join(q.replace("IF NOT EXISTS ", "").split())) for n, q in db.execute(tables)] == [
            (n, "".join(q.replace("IF NOT EXISTS ", "").split())) for n, q in old.execute(tables)]
        assert db.execute("SELECT value FROM meta WHERE name = 'key_check'").fetchone() == old.execute(
            "SELECT value FROM meta WHERE name = 'key_check'").fetchone()

        def unsealed(rows: Any) -> dict[bytes, Any]:
            out = {}
            for key_id, record in rows:
                assert isinstance(record, str)  # TEXT, as schema 5 stored it
                parsed = json.loads(record)
                for version in parsed["versions"]:
                    assert len(version.pop("secret_share")["aes256gcm"]) == 2 + 2 * 60
                out[bytes(key_id)] = parsed
            return out

        query = "SELECT key_id, record FROM keys"
        assert unsealed(db.execute(query)) == unsealed(old.execute(query))
    with SqliteKeyStorage(written, SECRET) as store:
        _migrate(store)
        for key_id, share in _expected().items():
            assert store.get(key_id) == share


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
    _reads_every_key(data_dir)  # the restored node's first start makes it schema 6, its records served as they are
    with SqliteKeyStorage(data_dir, SECRET) as store:
        _migrate(store)
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
