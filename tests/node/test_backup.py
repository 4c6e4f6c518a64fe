"""node backup / restore / verify on a key database (node/backup.py) and through the command line:
an online copy while another connection writes, sealed under the node secret; a restore that
refuses another node's backup, another secret's, a damaged one and a running node, and keeps the
database it replaces; a corrupted backup reported by ``verify``; key versions compared with peers."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocean_secret_store.cli import main
from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.node import backup
from ocean_secret_store.node.backup import BackupError, Finding, compare_versions
from ocean_secret_store.node.storage import (
    DB_FILENAME,
    META_SERVERS_SET,
    KeyShare,
    KeySummary,
    KeyVersion,
    SqliteKeyStorage,
    backup_mac,
)
from ocean_secret_store.protocol.key_versions import KeyVersionsPage, PeerKey

SECRET = random_scalar()
NODE = Point.generator_mul(SECRET).to_bytes()
PEER = Point.generator_mul(random_scalar()).to_bytes()


def share(epoch: int = 0, holders: tuple[bytes, ...] = (NODE, PEER)) -> KeyShare:
    ids = {node: random_scalar() for node in holders}
    return KeyShare(author=os.urandom(20), threshold=1, public=Point.generator_mul(random_scalar()),
                    common_point=None, encrypted_point=None,
                    versions=(KeyVersion.new(ids, random_scalar(), epoch=epoch),))


def fill(data_dir: Path, count: int, secret: int = SECRET) -> dict[bytes, KeyShare]:
    records = {os.urandom(32): share() for _ in range(count)}
    data_dir.mkdir(parents=True, exist_ok=True)
    with SqliteKeyStorage(data_dir, secret) as db:
        for key_id, record in records.items():
            db.insert(key_id, record)
        db.put_meta(META_SERVERS_SET, [NODE.hex(), PEER.hex()])
    return records


def contents(data_dir: Path, secret: int = SECRET) -> dict[bytes, KeyShare | None]:
    with SqliteKeyStorage(data_dir, secret) as db:
        return {key_id: db.get(key_id) for key_id in db.key_ids()}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Path, dict[bytes, KeyShare]]]:
    data_dir = tmp_path / "data"
    yield data_dir, fill(data_dir, 20)


def flip_in_record(path: Path, key_id: bytes) -> None:
    """Change one byte of the record of ``key_id`` in the file's bytes, as a bad sector would.

    The byte is in the key's public key (these keys have no version commitments, so their compact
    record holds it, compressed, after the 24-byte head), which only this record holds (a page SQLite
    freed may hold an old copy too): each copy is changed.
    """
    with sqlite3.connect(path) as db:
        record = bytes(db.execute("SELECT record FROM keys WHERE key_id = ?", (key_id,)).fetchone()[0])
    needle = record[25:57]  # the public key's x, after its SEC1 prefix byte
    raw = path.read_bytes()
    assert needle in raw
    flipped = needle[:5] + bytes([needle[5] ^ 0x01]) + needle[6:]
    path.write_bytes(raw.replace(needle, flipped))


# -- backup ---------------------------------------------------------------------------------------


def test_a_backup_is_one_private_sealed_file_that_restores_every_record(
        node: tuple[Path, dict[bytes, KeyShare]], tmp_path: Path) -> None:
    data_dir, records = node
    out = tmp_path / "node.backup"
    made = backup.make_backup(data_dir / DB_FILENAME, SECRET, out)
    assert made.manifest.keys == 20 and made.manifest.node_id == NODE and not made.damaged
    assert out.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "node.backup"]  # no partial file left
    raw = out.read_bytes()
    for record in records.values():  # the shares are on disk only sealed
        assert f"{record.versions[0].secret_share:064x}".encode() not in raw
    manifest, check = backup.read_backup(out, SECRET)
    assert manifest == made.manifest and check.ok and len(check.keys) == 20
    with pytest.raises(BackupError, match="never overwrites"):
        backup.make_backup(data_dir / DB_FILENAME, SECRET, out)

    fresh = tmp_path / "fresh" / DB_FILENAME  # a node that lost its data directory
    restored = backup.restore_backup(fresh, SECRET, out)
    assert restored.kept is None
    assert contents(fresh.parent) == records
    with sqlite3.connect(fresh) as db:  # the manifest stays with the backup file
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'backup_manifest'").fetchone() is None


def test_a_backup_taken_while_another_connection_writes_is_consistent(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    fill(data_dir, 50)
    stop = threading.Event()
    written: list[bytes] = []

    def writer() -> None:  # the node, inserting keys throughout
        with SqliteKeyStorage(data_dir, SECRET) as db:
            while not stop.is_set():
                key_id = os.urandom(32)
                db.insert(key_id, share())
                written.append(key_id)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 20:
            time.sleep(0.01)
        made = backup.make_backup(data_dir / DB_FILENAME, SECRET, tmp_path / "b")
    finally:
        stop.set()
        thread.join()
    _, check = backup.read_backup(tmp_path / "b", SECRET)
    assert check.ok and len(check.keys) == made.manifest.keys
    assert 50 + 20 <= made.manifest.keys < 50 + len(written)  # a snapshot within the writes


def test_a_backup_under_another_secret_is_refused_and_leaves_nothing(
        node: tuple[Path, dict[bytes, KeyShare]], tmp_path: Path) -> None:
    data_dir, _ = node
    with pytest.raises(BackupError, match="different node secret"):
        backup.make_backup(data_dir / DB_FILENAME, random_scalar(), tmp_path / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    with pytest.raises(BackupError, match="no database"):
        backup.make_backup(tmp_path / "nowhere" / DB_FILENAME, SECRET, tmp_path / "b")


# -- restore --------------------------------------------------------------------------------------


def test_restore_refuses_another_nodes_backup_another_secret_and_an_altered_manifest(
        node: tuple[Path, dict[bytes, KeyShare]], tmp_path: Path) -> None:
    data_dir, records = node
    out = tmp_path / "b"
    backup.make_backup(data_dir / DB_FILENAME, SECRET, out)
    other = random_scalar()
    with pytest.raises(BackupError, match=r"is a backup of node 0x.*this config is node"):
        backup.restore_backup(tmp_path / "other" / DB_FILENAME, other, out)
    assert not (tmp_path / "other" / DB_FILENAME).exists()

    altered = tmp_path / "altered"  # the manifest says 21 keys: it no longer authenticates
    altered.write_bytes(out.read_bytes())
    with sqlite3.connect(altered) as db:
        raw = db.execute("SELECT manifest FROM backup_manifest").fetchone()[0]
        db.execute("UPDATE backup_manifest SET manifest = ?", (bytes(raw).replace(b'"keys":20', b'"keys":21'),))
    with pytest.raises(BackupError, match="manifest fails authentication"):
        backup.restore_backup(data_dir / DB_FILENAME, SECRET, altered)

    # A database of another node secret behind a manifest that names this node and authenticates:
    # the database's own check value still refuses it.
    forged_dir = tmp_path / "forged"
    fill(forged_dir, 3, secret=other)
    forged = tmp_path / "forged.backup"
    backup.make_backup(forged_dir / DB_FILENAME, other, forged)
    manifest = backup.Manifest(NODE, 5, "2030-01-01T00:00:00Z", 3, 0).encode()
    with sqlite3.connect(forged) as db:
        db.execute("UPDATE backup_manifest SET manifest = ?, mac = ?", (manifest, backup_mac(SECRET, manifest)))
    with pytest.raises(BackupError, match="written under a different node secret"):
        backup.restore_backup(data_dir / DB_FILENAME, SECRET, forged)
    assert contents(data_dir) == records  # nothing changed by any refusal


def test_restore_refuses_a_running_node_and_keeps_the_database_it_replaces(
        node: tuple[Path, dict[bytes, KeyShare]], tmp_path: Path) -> None:
    data_dir, records = node
    out = tmp_path / "b"
    backup.make_backup(data_dir / DB_FILENAME, SECRET, out)
    newer = fill(data_dir, 5)  # keys made after the backup
    holder = subprocess.Popen(  # a "node": another process with the database open
        [sys.executable, "-c", ("import os, time\nfrom ocean_secret_store.node.storage import SqliteKeyStorage\n"
                                f"db = SqliteKeyStorage({str(data_dir)!r}, int(os.environ['TEST_SECRET']))\n"
                                "print('open', flush=True)\ntime.sleep(60)")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "TEST_SECRET": str(SECRET)})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(BackupError, match="in use by another process: stop the node first"):
            backup.restore_backup(data_dir / DB_FILENAME, SECRET, out)
    finally:
        holder.kill()
        holder.wait()
    assert contents(data_dir) == {**records, **newer}

    restored = backup.restore_backup(data_dir / DB_FILENAME, SECRET, out, clock=lambda: 1_900_000_000.0)
    assert restored.kept == data_dir / f"{DB_FILENAME}.before-restore-20300317T174640Z"
    assert contents(data_dir) == records
    kept = tmp_path / "kept"  # the replaced database, whole: the newer keys are there
    kept.mkdir()
    os.replace(restored.kept, kept / DB_FILENAME)
    assert contents(kept) == {**records, **newer}
    assert sorted(p.name for p in data_dir.iterdir() if p.name.startswith(".")) == []


# -- verify ---------------------------------------------------------------------------------------


def test_a_corrupted_backup_is_reported_by_verify_and_refused_by_restore(
        node: tuple[Path, dict[bytes, KeyShare]], tmp_path: Path) -> None:
    data_dir, records = node
    out = tmp_path / "b"
    backup.make_backup(data_dir / DB_FILENAME, SECRET, out)
    victim = sorted(records)[7]
    flip_in_record(out, victim)
    _, check = backup.read_backup(out, SECRET)
    assert [(d.kind, d.name) for d in check.damaged] == [("key", "0x" + victim.hex())]
    assert "fails authentication" in check.damaged[0].problem
    assert len(check.keys) == 19
    with pytest.raises(BackupError, match=f"is damaged \\(1 part\\(s\\), e.g. key 0x{victim.hex()}"):
        backup.restore_backup(data_dir / DB_FILENAME, SECRET, out)
    assert contents(data_dir) == records


def test_verify_reports_a_tampered_record_pending_and_meta_entry(
        node: tuple[Path, dict[bytes, KeyShare]]) -> None:
    data_dir, records = node
    key_id = min(records)
    with sqlite3.connect(data_dir / DB_FILENAME) as db:
        db.execute("UPDATE keys SET mac = zeroblob(32) WHERE key_id = ?", (key_id,))
        db.execute("UPDATE meta SET value = CAST('[]' AS BLOB) || zeroblob(32) WHERE name = 'servers_set'")
    check = backup.verify_database(data_dir / DB_FILENAME, SECRET)
    assert [(d.kind, d.name) for d in check.damaged] == [("key", "0x" + key_id.hex()), ("meta", "servers_set")]
    with pytest.raises(BackupError, match="different node secret"):
        backup.verify_database(data_dir / DB_FILENAME, random_scalar())


def _summary(key_id: bytes, epoch: int, version: bytes, *older: bytes, document_key: bool = True) -> KeySummary:
    return KeySummary(key_id, 1, version, epoch, epoch, (*older, version), document_key)


def _page(node: bytes, *keys: PeerKey) -> KeyVersionsPage:
    return KeyVersionsPage(node, (NODE, node), tuple(keys), False)


def test_compare_versions_names_what_is_missing_stale_ahead_or_held_alone() -> None:
    k = [bytes([i]) * 32 for i in range(9)]
    v = [bytes([0x40 + i]) * 32 for i in range(9)]
    local = [
        _summary(k[0], 0, v[0]),  # as the peers: fine
        _summary(k[1], 0, v[1]),  # stale: the peers are at epoch 2
        _summary(k[2], 3, v[2]),  # ahead of the peers
        _summary(k[3], 1, v[3], v[4]),  # the peers' version held, not active yet: stale
        _summary(k[5], 0, v[5]),  # no peer has it: only here
        _summary(k[6], 0, v[6]),  # the peers moved it to a version without this node
        _summary(k[8], 0, v[8], document_key=False),  # backed up before its document key was stored
    ]
    peer_a, peer_b = PEER, Point.generator_mul(random_scalar()).to_bytes()
    pages = [
        _page(peer_a, PeerKey(k[0], 1, v[0], 0, 0, True), PeerKey(k[1], 1, v[7], 2, 2, True),
              PeerKey(k[2], 1, v[6], 1, 1, True), PeerKey(k[3], 1, v[4], 0, 1, True),
              PeerKey(k[4], 1, v[3], 1, 1, True), PeerKey(k[6], 1, v[1], 1, 1, False),
              PeerKey(k[7], 1, v[2], 0, 0, False), PeerKey(k[8], 1, v[8], 0, 0, True, False)),
        _page(peer_b, PeerKey(k[1], 1, v[5], 1, 1, True), PeerKey(k[4], 1, None, 0, 2, True),
              PeerKey(k[8], 1, v[8], 0, 0, True, True)),
    ]
    findings = compare_versions(local, pages)
    assert findings == (
        Finding(k[1], "stale", 0, 2, peer_a),
        Finding(k[2], "ahead", 3, 1, peer_a),
        Finding(k[3], "stale", 1, 0, peer_a),
        Finding(k[4], "missing", None, 1, peer_a),
        Finding(k[5], "only here", 0, None, None),
        Finding(k[6], "not a holder", 0, 1, peer_a),
        Finding(k[8], "no document key", 0, 0, peer_b),  # peer_b holds it (peer_a lacks it too)
    )  # k[7]: a key whose version does not name this node, and it has none: nothing to say
    assert compare_versions(local, []) == ()
    assert [f.key_id for f in compare_versions(local, pages, damaged=[k[4], k[5]])] == [k[1], k[2], k[3], k[6], k[8]]


# -- the command line -----------------------------------------------------------------------------


def _config(tmp_path: Path, data_dir: Path, secret: int = SECRET) -> Path:
    public = "0x" + Point.generator_mul(secret).to_bytes().hex()
    path = tmp_path / f"node-{public[2:10]}.toml"
    path.write_text(f'[node]\nsecret = "0x{secret:064x}"\nlisten = "127.0.0.1:1"\nhttp_listen = "127.0.0.1:2"\n'
                    f'data_dir = "{data_dir}"\n[cluster]\n"{public}" = "127.0.0.1:1"\n[acl]\nkind = "none"\n')
    path.chmod(0o600)
    return path


def test_the_node_database_commands(node: tuple[Path, dict[bytes, KeyShare]], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    data_dir, records = node
    config = _config(tmp_path, data_dir)
    out = tmp_path / "b"
    assert main(["--json", "node", "backup", "--config", str(config), "--out", str(out)]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["keys"] == 20 and made["node_id"] == "0x" + NODE.hex() and made["bytes"] == out.stat().st_size

    assert main(["--json", "node", "verify", "--config", str(config)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["keys"] == 20 and report["damaged"] == [] and report["peers"] == {}

    victim = sorted(records)[3]
    flip_in_record(out, victim)
    assert main(["node", "--config", str(config), "verify", "--backup", str(out)]) == 1
    text = capsys.readouterr().out
    assert f"key 0x{victim.hex()}: the record of key 0x{victim.hex()} fails authentication" in text
    assert f"{SECRET:064x}" not in text
    assert main(["node", "restore", "--config", str(config), "--from", str(out)]) == 1
    assert "is damaged" in capsys.readouterr().err

    other = _config(tmp_path, tmp_path / "other", random_scalar())
    assert main(["node", "restore", "--config", str(other), "--from", str(out)]) == 1
    assert "a backup is restored only on its own node" in capsys.readouterr().err

    clean = tmp_path / "clean"
    assert main(["node", "backup", "--config", str(config), "--out", str(clean)]) == 0
    assert "backup of node 0x" in capsys.readouterr().out
    assert main(["--json", "node", "restore", "--config", str(config), "--from", str(clean)]) == 0
    restored = json.loads(capsys.readouterr().out)
    assert restored["restored"]["keys"] == 20 and Path(restored["kept"]).is_file()
    assert contents(data_dir) == records

    assert main(["node", "backup", "--out", str(tmp_path / "x")]) == 2  # usage: --config is needed
    assert main(["node", "verify", "--config", str(config), "--peer", "http://127.0.0.1:9"]) == 1
    assert "peers: 0 answered, 1 unreachable" in capsys.readouterr().out


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_a_restore_run_as_root_leaves_the_database_to_the_nodes_user(
        node: tuple[Path, dict[bytes, KeyShare]], tmp_path: Path) -> None:
    data_dir, records = node
    out = tmp_path / "b"
    backup.make_backup(data_dir / DB_FILENAME, SECRET, out)
    for path in (data_dir, *data_dir.iterdir()):  # the node's files belong to its own user (a container's)
        os.chown(path, 10001, 10001)
    backup.restore_backup(data_dir / DB_FILENAME, SECRET, out)
    assert ((data_dir / DB_FILENAME).stat().st_uid, (data_dir / DB_FILENAME).stat().st_gid) == (10001, 10001)
    assert contents(data_dir) == records
