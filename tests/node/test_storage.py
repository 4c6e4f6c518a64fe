"""Key share records and storages: round trips, uniqueness, persistence, sealing at rest, crash safety."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ocean_secret_store.crypto.curve import Point, random_scalar, scalar_bytes
from ocean_secret_store.crypto.hashes import key_version_hash
from ocean_secret_store.exceptions import (
    DatabaseError,
    InternalError,
    KeyVersionNotFound,
    ServerKeyAlreadyGenerated,
    ServerKeyIsNotFound,
)
from ocean_secret_store.node.backup import verify_database
from ocean_secret_store.node.storage import (
    DB_FILENAME,
    SCHEMA_VERSION,
    KeyShare,
    KeyStorage,
    KeyVersion,
    MemoryKeyStorage,
    SqliteKeyStorage,
    _Keys,
    dump_records,
)

from .records import raw_row, stored, write_record, write_row

REPO = Path(__file__).resolve().parents[2]
NODE_SECRET = random_scalar()


def _version(nodes: int = 3, share: int | None = None) -> KeyVersion:
    ids = {Point.generator_mul(random_scalar()).to_bytes(): random_scalar() for _ in range(nodes)}
    return KeyVersion.new(ids, random_scalar() if share is None else share)


def _share(versions: int = 1, document_key: bool = False) -> KeyShare:
    share = KeyShare(
        author=os.urandom(20),
        threshold=1,
        public=Point.generator_mul(random_scalar()),
        common_point=None,
        encrypted_point=None,
        versions=tuple(_version() for _ in range(versions)),
    )
    if document_key:
        share = share.with_document_key(Point.generator_mul(random_scalar()), Point.generator_mul(random_scalar()))
    return share


# -- records ------------------------------------------------------------------------------------


def test_version_hash_is_parity_key_version_hash() -> None:
    version = _version()
    assert version.hash == key_version_hash(dict(version.id_numbers))


def test_version_lookup_searches_newest_first() -> None:
    old = _version()
    same_nodes_newer = KeyVersion.new(dict(old.id_numbers), random_scalar())
    other = _version()
    share = _share().with_version(old).with_version(other).with_version(same_nodes_newer)
    assert share.version(old.hash) is same_nodes_newer
    assert share.version(other.hash) is other
    assert share.last_version is same_nodes_newer
    with pytest.raises(KeyVersionNotFound):
        share.version(os.urandom(32))


def test_last_version_of_an_empty_record_raises() -> None:
    empty = KeyShare(os.urandom(20), 0, Point.generator_mul(3), None, None, ())
    with pytest.raises(KeyVersionNotFound):
        _ = empty.last_version


def test_with_helpers_return_new_records() -> None:
    share = _share()
    c, e = Point.generator_mul(7), Point.generator_mul(8)
    stored = share.with_document_key(c, e)
    assert (stored.common_point, stored.encrypted_point) == (c, e)
    assert share.common_point is None and share.encrypted_point is None
    extra = _version()
    grown = stored.with_version(extra)
    assert grown.versions == (*stored.versions, extra)
    assert len(stored.versions) == 1


def test_version_ids_are_read_only() -> None:
    ids = {Point.generator_mul(5).to_bytes(): 9}
    version = KeyVersion.new(ids, 11)
    ids[Point.generator_mul(6).to_bytes()] = 10
    assert len(version.id_numbers) == 1
    with pytest.raises(TypeError):
        version.id_numbers[b"x" * 64] = 1  # type: ignore[index]  # read-only mapping: the write must fail


def test_reprs_hide_the_share() -> None:
    secret = random_scalar()
    version = _version(share=secret)
    share = _share().with_version(version)
    for text in (repr(version), repr(share), str(share)):
        assert str(secret) not in text
        assert scalar_bytes(secret).hex() not in text
        assert "<secret>" in text


def test_versions_compare_by_value() -> None:
    version = _version()
    assert version == KeyVersion(version.hash, dict(version.id_numbers), version.secret_share)
    assert version != KeyVersion(version.hash, dict(version.id_numbers), (version.secret_share + 1))


# -- both storages ------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStorage]:
    store: KeyStorage = MemoryKeyStorage() if request.param == "memory" else SqliteKeyStorage(tmp_path, NODE_SECRET)
    yield store
    store.close()


def test_round_trip_with_versions_and_document_key(storage: KeyStorage) -> None:
    key_id = os.urandom(32)
    share = _share(versions=3, document_key=True)
    storage.insert(key_id, share)
    assert storage.get(key_id) == share
    assert storage.contains(key_id)


def test_update_replaces_the_record(storage: KeyStorage) -> None:
    key_id = os.urandom(32)
    share = _share()
    storage.insert(key_id, share)
    updated = share.with_document_key(Point.generator_mul(2), Point.generator_mul(3)).with_version(_version())
    storage.update(key_id, updated)
    assert storage.get(key_id) == updated


def test_insert_twice_is_already_generated(storage: KeyStorage) -> None:
    key_id = os.urandom(32)
    first = _share()
    storage.insert(key_id, first)
    with pytest.raises(ServerKeyAlreadyGenerated):
        storage.insert(key_id, _share())
    assert storage.get(key_id) == first


def test_update_of_a_missing_key_is_not_found(storage: KeyStorage) -> None:
    key_id = os.urandom(32)
    with pytest.raises(ServerKeyIsNotFound):
        storage.update(key_id, _share())
    assert not storage.contains(key_id)


def test_missing_key_and_remove(storage: KeyStorage) -> None:
    key_id = os.urandom(32)
    assert storage.get(key_id) is None
    storage.insert(key_id, _share())
    storage.remove(key_id)
    assert storage.get(key_id) is None
    assert not storage.contains(key_id)
    storage.remove(key_id)  # removing an absent key is not an error


def test_key_ids_lists_every_key(storage: KeyStorage) -> None:
    ids = {os.urandom(32) for _ in range(5)}
    for key_id in ids:
        storage.insert(key_id, _share())
    assert set(storage.key_ids()) == ids


def test_concurrent_writers_from_threads(storage: KeyStorage) -> None:
    ids = [os.urandom(32) for _ in range(40)]
    shares = {key_id: _share() for key_id in ids}
    errors: list[BaseException] = []

    def work(chunk: list[bytes]) -> None:
        try:
            for key_id in chunk:
                storage.insert(key_id, shares[key_id])
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(ids[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {key_id: storage.get(key_id) for key_id in ids} == shares


def test_key_id_must_be_32_bytes(storage: KeyStorage) -> None:
    with pytest.raises(InternalError, match="32 bytes"):
        storage.insert(b"short", _share())


# -- SQLite specifics ---------------------------------------------------------------------------


def test_reopen_after_close_serves_keys(tmp_path: Path) -> None:
    stored = {os.urandom(32): _share(versions=2, document_key=True) for _ in range(3)}
    store = SqliteKeyStorage(tmp_path, NODE_SECRET)
    for key_id, share in stored.items():
        store.insert(key_id, share)
    store.close()
    reopened = SqliteKeyStorage(tmp_path / DB_FILENAME, NODE_SECRET)
    try:
        assert set(reopened.key_ids()) == set(stored)
        assert {k: reopened.get(k) for k in stored} == stored
    finally:
        reopened.close()


def test_connection_settings_and_schema(tmp_path: Path) -> None:
    store = SqliteKeyStorage(tmp_path, NODE_SECRET)
    try:
        db = store._db
        assert db is not None
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        store.close()
    assert (tmp_path / DB_FILENAME).stat().st_mode & 0o777 == 0o600


def _five_nodes_share() -> KeyShare:
    """A key of 5 nodes, t = 2, with commitments, a document key and an owner: the largest usual record."""
    coefficients = [random_scalar() for _ in range(3)]
    ids = {Point.generator_mul(random_scalar()).to_bytes(): random_scalar() for _ in range(5)}
    commitments = tuple(Point.generator_mul(a) for a in coefficients)
    return KeyShare(os.urandom(20), 2, commitments[0], Point.generator_mul(random_scalar()),
                    Point.generator_mul(random_scalar()), (KeyVersion.new(ids, random_scalar(), commitments),),
                    owner=os.urandom(20))


def test_record_is_compact_and_reads_in_parity_v3_layout(tmp_path: Path) -> None:
    key_id, big_id = os.urandom(32), os.urandom(32)
    share = _share(versions=2, document_key=True)
    big = _five_nodes_share()
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        store.insert(key_id, share)
        store.insert(big_id, big)
    raw, mac = raw_row(tmp_path, big_id)
    assert raw[0] == 1 and len(mac) == 32  # the compact format, not JSON
    # key id, record and MAC inside the 1,002 bytes a WITHOUT ROWID leaf keeps of a row (4 KiB pages)
    # with room for SQLite's record header: no overflow page
    assert 32 + len(raw) + 32 + 16 <= 1002, len(raw)
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        assert db.execute("SELECT COUNT(*) FROM dbstat WHERE name = 'keys' AND pagetype = 'overflow'"
                          ).fetchone()[0] == 0
        nodes = {bytes(n) for (n,) in db.execute("SELECT node_id FROM nodes")}
    assert nodes == {n for s in (share, big) for v in s.versions for n in v.id_numbers}  # each node id once
    record = stored(tmp_path, key_id)
    assert list(record) == ["author", "threshold", "public", "common_point", "encrypted_point", "versions"]
    assert record["author"] == "0x" + share.author.hex()
    assert record["threshold"] == share.threshold
    assert record["public"] == "0x" + share.public.to_bytes().hex()
    assert share.common_point is not None
    assert record["common_point"] == "0x" + share.common_point.to_bytes().hex()
    versions = record["versions"]
    assert isinstance(versions, list)
    for entry, version in zip(versions, share.versions, strict=True):
        assert entry["hash"] == "0x" + version.hash.hex()
        assert entry["id_numbers"] == {
            "0x" + node.hex(): "0x" + scalar_bytes(x).hex() for node, x in version.id_numbers.items()
        }
        assert list(entry["secret_share"]) == ["aes256gcm"]
    # node dump's view: the same layout without the sealed shares
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        dumped = dict(dump_records(db, NODE_SECRET))
    for entry in versions:
        del entry["secret_share"]
    assert dumped[key_id] == record
    assert dumped[big_id]["owner"] == "0x" + big.owner.hex()  # type: ignore[index, union-attr]  # a layout
    assert dumped[big_id]["versions"][0]["commitments"] == [  # type: ignore[index]  # a layout
        "0x" + c.to_bytes().hex() for c in big.last_version.commitments]


def test_database_files_never_contain_the_share(tmp_path: Path) -> None:
    versions = [_version() for _ in range(3)]
    share = _share().with_version(versions[0]).with_version(versions[1]).with_version(versions[2])
    secrets = [v.secret_share for v in share.versions]
    needles = []
    for secret in secrets:
        raw = scalar_bytes(secret)
        needles += [raw, raw.hex().encode(), raw.hex().upper().encode(), str(secret).encode()]
    store = SqliteKeyStorage(tmp_path, NODE_SECRET)
    store.insert(os.urandom(32), share)

    def scan() -> None:
        files = [p for p in tmp_path.iterdir() if p.is_file()]
        assert files
        for path in files:
            content = path.read_bytes()
            assert not any(needle in content for needle in needles), path.name

    scan()  # while open: the data sits in the WAL file
    store.close()
    scan()  # after the checkpoint on close


def test_wrong_node_secret_is_refused(tmp_path: Path) -> None:
    key_id = os.urandom(32)
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        store.insert(key_id, _share())
    with pytest.raises(DatabaseError, match="different node secret"):
        SqliteKeyStorage(tmp_path, NODE_SECRET + 1)


def test_row_copied_into_another_nodes_database_is_refused(tmp_path: Path) -> None:
    key_id = os.urandom(32)
    other_secret = random_scalar()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with SqliteKeyStorage(tmp_path / "a", NODE_SECRET) as store:
        store.insert(key_id, _share())
    with SqliteKeyStorage(tmp_path / "b", other_secret) as other:
        other.insert(key_id, _share())
    record, mac = raw_row(tmp_path / "a", key_id)
    write_row(tmp_path / "b", key_id, record, mac)
    with (
        SqliteKeyStorage(tmp_path / "b", other_secret) as other,
        pytest.raises(DatabaseError, match="fails authentication"),
    ):
        other.get(key_id)


def test_tampered_public_field_is_detected(tmp_path: Path) -> None:
    key_id = os.urandom(32)
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        store.insert(key_id, _share())
    record = stored(tmp_path, key_id)
    record["author"] = "0x" + os.urandom(20).hex()
    write_record(tmp_path, key_id, record)  # under the MAC of the record as it was
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store, pytest.raises(DatabaseError, match="fails authentication"):
        store.get(key_id)


def test_tampered_share_ciphertext_is_detected(tmp_path: Path) -> None:
    key_id = os.urandom(32)
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        store.insert(key_id, _share())
        record = stored(tmp_path, key_id)
        sealed = record["versions"][0]["secret_share"]["aes256gcm"]
        flipped = sealed[:40] + ("0" if sealed[40] != "0" else "1") + sealed[41:]
        record["versions"][0]["secret_share"]["aes256gcm"] = flipped
        # re-authenticated (white box): only the share's own AEAD can catch the change
        write_record(tmp_path, key_id, record, node_secret=NODE_SECRET)
        with pytest.raises(DatabaseError, match="secret share fails authentication"):
            store.get(key_id)


def test_every_edited_byte_of_a_record_fails_its_mac(tmp_path: Path) -> None:
    key_id = os.urandom(32)
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        store.insert(key_id, _five_nodes_share())
    record, mac = raw_row(tmp_path, key_id)
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        for at in range(len(record)):
            write_row(tmp_path, key_id, record[:at] + bytes([record[at] ^ 0x01]) + record[at + 1:], mac)
            with pytest.raises(DatabaseError, match="fails authentication"):
                store.get(key_id)
        write_row(tmp_path, key_id, record, mac)
        assert store.get(key_id) is not None


# The compact record of _share() (3 nodes, no commitments, no owner, no document key): head (24
# bytes), public (33), versions (2), the version's head (4), its first holder's node index (2), ...
_PUBLIC_AT, _FIRST_HOLDER_AT = 24, 24 + 33 + 2 + 4


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda r: b"\x02" + r[1:], "unknown record format"),
        (lambda r: r[:1] + b"\x80" + r[2:], "unknown record format"),  # an unknown flag
        (lambda r: r[:-1], "truncated"),
        (lambda r: r + b"\x00", "trailing bytes"),
        (lambda r: r[:_PUBLIC_AT] + b"\x05" + r[_PUBLIC_AT + 1:], "public is not a curve point"),
        (lambda r: r[:_FIRST_HOLDER_AT] + b"\xff\xff" + r[_FIRST_HOLDER_AT + 2:],
         "node index 65535 is not in the node table"),
    ],
)
def test_malformed_compact_record_under_a_valid_mac_is_reported_corrupt(
    tmp_path: Path, edit: Any, problem: str
) -> None:
    key_id = os.urandom(32)
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        store.insert(key_id, _share())
        record = edit(raw_row(tmp_path, key_id)[0])
        write_row(tmp_path, key_id, record, store._keys.record_mac(key_id, record))  # white box: re-authenticated
        with pytest.raises(DatabaseError, match=f"is corrupt: {problem}"):
            store.get(key_id)


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("author", "ab" * 20, "author must be a 0x-prefixed hex string"),
        ("author", "0x" + "zz" * 20, "author contains characters that are not hex digits"),
        ("author", "0x" + "ab" * 19, "author must be 20 bytes"),
        ("public", "0x" + "ab", "public must be 64 bytes"),
        ("public", "0x" + "00" * 64, "public is not a curve point"),
        ("common_point", 7, "common_point must be a hex string, got int"),
    ],
)
def test_malformed_v3_record_under_a_valid_mac_is_reported_corrupt(
    tmp_path: Path, field: str, value: object, problem: str
) -> None:
    # A V3 JSON record (schema <= 5: an old backup, or one the migration kept) is still read, and checked.
    key_id = os.urandom(32)
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        store.insert(key_id, _share())
        record = stored(tmp_path, key_id)
        assert store.get(key_id) is not None
        raw = json.dumps(record, separators=(",", ":")).encode()
        write_row(tmp_path, key_id, raw, store._keys.record_mac(key_id, raw))
        assert store.get(key_id) is not None  # the V3 form of the same record reads
        record[field] = value
        raw = json.dumps(record, separators=(",", ":")).encode()
        write_row(tmp_path, key_id, raw, store._keys.record_mac(key_id, raw))
        with pytest.raises(DatabaseError, match=f"is corrupt: {problem}"):
            store.get(key_id)


def test_share_moved_between_records_is_detected(tmp_path: Path) -> None:
    first, second = os.urandom(32), os.urandom(32)
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        store.insert(first, _share())
        store.insert(second, _share())
        source = stored(tmp_path, first)
        target = stored(tmp_path, second)
        # Move the whole version (ids and sealed share): only the key id in the AAD differs.
        target["versions"] = source["versions"]
        write_record(tmp_path, second, target, node_secret=NODE_SECRET)
        with pytest.raises(DatabaseError, match="secret share fails authentication"):
            store.get(second)


def test_share_moved_between_versions_is_detected(tmp_path: Path) -> None:
    key_id = os.urandom(32)
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        store.insert(key_id, _share(versions=2))
        record = stored(tmp_path, key_id)
        versions = record["versions"]
        versions[1]["secret_share"] = versions[0]["secret_share"]
        write_record(tmp_path, key_id, record, node_secret=NODE_SECRET)
        with pytest.raises(DatabaseError, match="secret share fails authentication"):
            store.get(key_id)


def test_a_record_written_by_another_connection_reads(tmp_path: Path) -> None:
    # Never while a node runs (it is its database's only writer), but a tool may write beside a reader.
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as reader, SqliteKeyStorage(tmp_path, NODE_SECRET) as writer:
        key_id, share = os.urandom(32), _share()  # three node ids the reader has not seen
        writer.insert(key_id, share)
        assert reader.get(key_id) == share
        other, more = os.urandom(32), _share(versions=2)
        writer.insert(other, more)
        assert reader.commit_pending(other) is None and reader.get(other) == more
        key, again = os.urandom(32), _share()
        reader.insert(key, again)  # new node ids get the next free indexes, whoever wrote before
        assert writer.get(key) == again and reader.get(key_id) == share
        last = os.urandom(32)  # node ids the reader added, which the writer has not read yet
        writer.insert(last, KeyShare(os.urandom(20), 1, again.public, None, None, again.versions))
        assert reader.get(last) is not None


def test_an_edited_node_table_is_detected(tmp_path: Path) -> None:
    key_id = os.urandom(32)
    share = _share()
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        store.insert(key_id, share)
        store.insert(os.urandom(32), _share())
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        rows = db.execute("SELECT idx, node_id, mac FROM nodes ORDER BY idx").fetchall()
        assert len(rows) == 6
        # swap two node ids (of two keys), each then under the other's MAC: both rows fail
        (i, a), (j, b) = rows[0][:2], rows[3][:2]
        db.execute("UPDATE nodes SET node_id = ? WHERE idx = ?", (b"\x00" * 64, i))  # (node_id is unique)
        db.execute("UPDATE nodes SET node_id = ? WHERE idx = ?", (a, j))
        db.execute("UPDATE nodes SET node_id = ? WHERE idx = ?", (b, i))
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        with pytest.raises(DatabaseError, match="node index 1 is not"):
            store.get(key_id)
        # a new record naming such a node is refused as what it is, not as a duplicate key
        with pytest.raises(DatabaseError, match=r"node table row of node 0x[0-9a-f]+\.\. fails authentication"):
            store.insert(os.urandom(32), share)
        assert store.key_count() == 2
    check = verify_database(tmp_path / DB_FILENAME, NODE_SECRET)
    assert {(d.kind, d.name) for d in check.damaged if d.kind == "meta"} == {("meta", f"node {i}"),
                                                                           ("meta", f"node {j}")}
    # swapped and re-authenticated (white box): the version hash the share is sealed under changes
    keys = _Keys(NODE_SECRET)
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        db.execute("UPDATE nodes SET mac = ? WHERE idx = ?", (keys.node_mac(i, b), i))
        db.execute("UPDATE nodes SET mac = ? WHERE idx = ?", (keys.node_mac(j, a), j))
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store, pytest.raises(DatabaseError, match="fails authentication"):
        store.get(key_id)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    SqliteKeyStorage(tmp_path, NODE_SECRET).close()
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(DatabaseError, match="schema version"):
        SqliteKeyStorage(tmp_path, NODE_SECRET)


def test_closed_storage_raises(tmp_path: Path) -> None:
    store = SqliteKeyStorage(tmp_path, NODE_SECRET)
    store.close()
    store.close()
    with pytest.raises(DatabaseError, match="closed"):
        store.get(os.urandom(32))


def test_errors_and_reprs_do_not_leak_the_derived_keys(tmp_path: Path) -> None:
    store = SqliteKeyStorage(tmp_path, NODE_SECRET)
    try:
        keys = (store._keys.share, store._keys.mac)
        texts = [repr(store), repr(store._keys), repr(vars(store))]
        try:
            SqliteKeyStorage(tmp_path, NODE_SECRET + 1)
        except DatabaseError as exc:
            texts.append(str(exc))
        for text in texts:
            for key in keys:
                assert key.hex() not in text and repr(key) not in text
            assert f"{NODE_SECRET:x}" not in text
    finally:
        store.close()


# -- crash safety -------------------------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from ocean_secret_store.crypto.curve import Point
    from ocean_secret_store.node.storage import KeyShare, KeyVersion, SqliteKeyStorage

    path, secret, key_id = Path(sys.argv[1]), int(sys.argv[2]), bytes.fromhex(sys.argv[3])
    nodes = [Point.generator_mul(k).to_bytes() for k in range(2, 12)]
    store = SqliteKeyStorage(path, secret)

    def record(i):
        # Self-describing: threshold i, and every version's share is i + 1, so a mixed record shows.
        versions = tuple(KeyVersion.new({n: j + 1 + (i % 7) for j, n in enumerate(nodes)}, i + 1)
                         for _ in range(1 + i % 5))
        return KeyShare(b"\\x11" * 20, i, Point.generator_mul(i + 1), None, None, versions)

    start = store.get(key_id).threshold + 1 if store.contains(key_id) else 0
    if start == 0:
        store.insert(key_id, record(0))
        start = 1
    print("ready", flush=True)
    i = start
    while True:
        store.update(key_id, record(i))
        i += 1
    """
)


@pytest.mark.parametrize("attempt", range(3))
def test_kill_9_mid_write_leaves_old_or_new_record(tmp_path: Path, attempt: int) -> None:
    key_id = bytes.fromhex("ab" * 32)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    last_seen = -1
    for _ in range(2):  # kill, recover, and kill again over the same database
        child = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), str(NODE_SECRET), key_id.hex()],
            stdout=subprocess.PIPE, env=env, cwd=REPO,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == b"ready"
            threading.Event().wait(random.uniform(0.0, 0.15))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        assert child.returncode == -signal.SIGKILL
        with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
            share = store.get(key_id)
            assert share is not None
            i = share.threshold
            assert i >= max(last_seen, 0)
            assert share.public == Point.generator_mul(i + 1)
            assert len(share.versions) == 1 + i % 5
            assert all(v.secret_share == i + 1 for v in share.versions)
            last_seen = i
