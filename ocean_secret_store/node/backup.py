"""Backups of a key server's database, restoring one, and verifying a node: ``ocean-secret-store
node backup``, ``node restore`` and ``node verify`` (docs/operators.md, *Backups*, *Verifying a node*).

**A backup** is one SQLite file: a copy of ``data_dir/keys.sqlite3`` made with SQLite's online
backup API while the node runs (one read transaction of a WAL database: a consistent snapshot,
and the node goes on writing), plus a table ``backup_manifest``: this node's id, the schema
version, the time, the number of keys, authenticated by an HMAC under a key derived from the node
secret. It holds nothing the database does not, so it stays sealed under the node secret: every
share is AES-256-GCM under a key derived from it, every record, pending document key and meta
entry carries a MAC (node/storage.py); no node key, no config, no audit log. It is checked as it
is written (the node secret's check value, every record), created 0600 under a temporary name in
the target folder, synced, and renamed into place; an existing file is never overwritten.

**Restoring** checks everything before touching the node's data: the manifest names this node
(a backup of another node is refused) and authenticates under this node secret, the database's
check value does too (a backup under another secret is refused), every record authenticates (a
damaged backup is refused: ``node verify --backup`` says what is damaged). It then needs the
database not to be open in any other process (a running node holds it: refused), keeps the
current database beside it as ``keys.sqlite3.before-restore-<time>`` (never deleted), and moves
the restored copy into place. A restored node holds the versions of its backup's moment: the
keys generated since are missing, and any key an admin session moved since is stale. It never
serves those (docs/operators.md, *Repair*); ``admin repair`` gives them back.

**Verifying** checks a node's database (or a backup) under its node secret: SQLite's structure,
the schema version, the node-secret check value, every record's MAC and sealed shares, every
pending document key and meta entry; and, given the URLs of its peers, compares its key versions
with theirs (:mod:`ocean_secret_store.protocol.key_versions`, signed with this node's key) and
reports every key it lacks, holds stale, or holds alone.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..crypto.curve import Point
from ..exceptions import DatabaseError, SecretStoreError
from ..protocol.key_versions import KeyVersionsPage, PeerKey
from .storage import (
    META_RECORDS_MIGRATION,
    SCHEMA_VERSION,
    Damage,
    DatabaseCheck,
    KeySummary,
    backup_mac,
    check_database,
    dump_records,
)

__all__ = [
    "FORMAT",
    "BackupError",
    "BackupReport",
    "Finding",
    "Manifest",
    "RestoreReport",
    "Verification",
    "compare_versions",
    "dump_database",
    "make_backup",
    "read_backup",
    "restore_backup",
    "verify_database",
]

#: The manifest's ``format``: what this module writes and reads.
FORMAT: Final = "ocean-secret-store/node-backup/v1"
MANIFEST_TABLE: Final = "backup_manifest"
#: The suffix of the database a restore keeps aside (``keys.sqlite3.before-restore-20250101T120000Z``).
KEPT_SUFFIX: Final = ".before-restore-"
_SIDE_FILES: Final = ("-wal", "-shm", "-journal")


class BackupError(SecretStoreError):
    """A backup that cannot be made, read or restored; the message says why (never a secret)."""


def _short(node_id: bytes) -> str:
    return "0x" + node_id.hex()[:16] + ".."


def _utc(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


@dataclass(frozen=True)
class Manifest:
    """What a backup says of itself (authenticated under the node secret)."""

    node_id: bytes
    schema_version: int
    created: str
    keys: int
    pending: int

    def encode(self) -> bytes:
        return json.dumps({"format": FORMAT, "node_id": "0x" + self.node_id.hex(),
                           "schema_version": self.schema_version, "created": self.created, "keys": self.keys,
                           "pending": self.pending}, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Manifest:
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError("format")
            node = bytes.fromhex(str(data["node_id"]).removeprefix("0x"))
            manifest = cls(node, int(data["schema_version"]), str(data["created"]), int(data["keys"]),
                           int(data["pending"]))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise BackupError(f"not a backup of this program (its manifest is not {FORMAT})") from None
        if len(manifest.node_id) != 64:
            raise BackupError("the backup's manifest names no node")
        return manifest

    def to_json(self) -> dict[str, Any]:
        return {"node_id": "0x" + self.node_id.hex(), "schema_version": self.schema_version,
                "created": self.created, "keys": self.keys, "pending": self.pending}


def _connect(path: Path, *, write: bool = False, timeout: float = 10.0) -> sqlite3.Connection:
    """A connection to the existing database ``path`` (never created); read-only for SQL unless ``write``."""
    if not path.is_file():
        raise BackupError(f"no database at {path}")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, isolation_level=None, timeout=timeout)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {path}: {exc}") from exc
    if not write:
        db.execute("PRAGMA query_only = 1")
    return db


@contextlib.contextmanager
def _closing(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    try:
        yield db
    finally:
        db.close()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- backup -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupReport:
    path: Path
    manifest: Manifest
    size: int
    seconds: float
    damaged: tuple[Damage, ...]

    def to_json(self) -> dict[str, Any]:
        return {"backup": str(self.path), **self.manifest.to_json(), "bytes": self.size,
                "seconds": round(self.seconds, 3), "damaged": [_damage_json(d) for d in self.damaged]}


def make_backup(database: Path, node_secret: int, out: Path, *, clock: Callable[[], float] = time.time
                ) -> BackupReport:
    """Copy the key database ``database`` (the node may run) to the new file ``out`` (module doc).

    Damaged records are copied as they are and reported (``node verify`` tells the same).

    :raises BackupError: ``out`` exists or its folder does not; no database; a database of another
        node secret (the config is not this database's node's).
    """
    if out.exists() or out.is_symlink():
        raise BackupError(f"{out} exists: a backup never overwrites a file")
    if not out.parent.is_dir():
        raise BackupError(f"{out.parent} is not a folder")
    node_id = Point.generator_mul(node_secret).to_bytes()
    started = time.monotonic()
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")  # mode 0600
    os.close(fd)
    partial = Path(name)
    try:
        with _closing(_connect(database)) as source, _closing(sqlite3.connect(partial, isolation_level=None)) as copy:
            source.backup(copy)  # all pages in one step: one read transaction, a consistent snapshot
            copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
            # Without the free pages (the old records' after the migration to schema 6): a backup
            # restored with the node stopped is the way to give them back to the file system.
            copy.execute("VACUUM")
            try:
                check = check_database(copy, node_secret)
            except DatabaseError as exc:
                raise BackupError(f"{database}: {exc} (is the config this node's?)") from None
            rows = copy.execute("SELECT COUNT(*) FROM keys").fetchone()[0]
            manifest = Manifest(node_id, check.schema_version, _utc(clock()), int(rows), check.pending)
            raw = manifest.encode()
            copy.execute(f"CREATE TABLE {MANIFEST_TABLE} (manifest BLOB NOT NULL, mac BLOB NOT NULL)")
            copy.execute(f"INSERT INTO {MANIFEST_TABLE} VALUES (?, ?)", (raw, backup_mac(node_secret, raw)))
        _fsync(partial)
        os.replace(partial, out)
        _fsync(out.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return BackupReport(out, manifest, out.stat().st_size, time.monotonic() - started, check.damaged)


def read_backup(path: Path, node_secret: int) -> tuple[Manifest, DatabaseCheck]:
    """The manifest of the backup ``path`` and the check of its database under ``node_secret``.

    :raises BackupError: not a backup; a backup of another node; a manifest or a database that does
        not authenticate under ``node_secret`` (another node secret, or altered).
    """
    node_id = Point.generator_mul(node_secret).to_bytes()
    with _closing(_connect(path)) as db:
        try:
            row = db.execute(f"SELECT manifest, mac FROM {MANIFEST_TABLE}").fetchone()
        except sqlite3.DatabaseError:
            raise BackupError(f"{path} is not a backup of this program (no manifest)") from None
        if row is None:
            raise BackupError(f"{path} is not a backup of this program (empty manifest)")
        raw, mac = bytes(row[0]), bytes(row[1])
        manifest = Manifest.decode(raw)
        if manifest.node_id != node_id:
            raise BackupError(f"{path} is a backup of node {_short(manifest.node_id)}, and this config is node "
                              f"{_short(node_id)}: a backup is restored only on its own node")
        if not hmac.compare_digest(backup_mac(node_secret, raw), mac):
            raise BackupError(f"{path}: the manifest fails authentication under this node secret (made under "
                              "another one, or altered)")
        try:
            check = check_database(db, node_secret)
        except DatabaseError as exc:
            raise BackupError(f"{path}: {exc}") from None
    return manifest, check


# -- restore ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreReport:
    database: Path
    manifest: Manifest
    kept: Path | None

    def to_json(self) -> dict[str, Any]:
        return {"database": str(self.database), "restored": self.manifest.to_json(),
                "kept": None if self.kept is None else str(self.kept)}


def _settle_unused(database: Path) -> None:
    """Make sure no other process has ``database`` open (a running node keeps it open), and fold
    its write-ahead log into it, so that it is one self-contained file to move aside.

    :raises BackupError: another process has it open.
    """
    db = _connect(database, write=True, timeout=0.0)
    try:
        # In exclusive locking mode the first lock is kept until close: taken at once, or the
        # database is open elsewhere (in WAL mode every open connection holds a shared lock).
        db.execute("PRAGMA locking_mode = EXCLUSIVE")
        db.execute("BEGIN EXCLUSIVE")
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("PRAGMA journal_mode = DELETE")
    except sqlite3.OperationalError:
        raise BackupError(f"{database} is in use by another process: stop the node first (a restore replaces "
                          "the database of a stopped node only)") from None
    finally:
        db.close()


def _give_to_owner(path: Path, database: Path) -> None:
    """Run as root (a container's node runs as its own user), the restored file goes to the user that
    owns the database it replaces, or else its folder, so that the node can open it."""
    if os.geteuid() != 0:
        return
    owner = (database if database.exists() else database.parent).stat()
    os.chown(path, owner.st_uid, owner.st_gid)


def restore_backup(database: Path, node_secret: int, backup: Path, *, clock: Callable[[], float] = time.time
                   ) -> RestoreReport:
    """Put the backup ``backup`` in place of the key database ``database`` of a stopped node (module doc).

    :raises BackupError: the backup is another node's, of another node secret, or damaged; the
        node runs (its database is open); nothing was changed then.
    """
    manifest, check = read_backup(backup, node_secret)
    if not check.ok:
        first = check.damaged[0]
        raise BackupError(f"{backup} is damaged ({len(check.damaged)} part(s), e.g. {first.kind} {first.name}: "
                          f"{first.problem}); nothing restored (node verify --backup lists them)")
    if check.schema_version > SCHEMA_VERSION:  # check_database refuses it already; kept explicit
        raise BackupError(f"{backup} has schema {check.schema_version}, newer than this program's")
    database.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    incoming = database.with_name(f".{database.name}.restoring")
    incoming.unlink(missing_ok=True)  # left by an interrupted restore: never the live database
    fd = os.open(incoming, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out, backup.open("rb") as source:
            while chunk := source.read(1 << 20):
                out.write(chunk)
        with _closing(_connect(incoming, write=True)) as db:
            db.execute(f"DROP TABLE {MANIFEST_TABLE}")
        _give_to_owner(incoming, database)
        _fsync(incoming)
        kept = None
        if database.exists():
            # Checked last, right before the swap: the copy above may take a while.
            _settle_unused(database)
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock()))
            kept = database.with_name(f"{database.name}{KEPT_SUFFIX}{stamp}")
            if kept.exists():
                raise BackupError(f"{kept} exists: restore again in a second")
            os.replace(database, kept)
            for suffix in _SIDE_FILES:  # none after _settle_unused, unless SQLite left an empty one
                side = Path(f"{database}{suffix}")
                if side.exists():
                    os.replace(side, Path(f"{kept}{suffix}"))
        os.replace(incoming, database)
        _fsync(database.parent)
    except BaseException:
        incoming.unlink(missing_ok=True)
        raise
    return RestoreReport(database, manifest, kept)


# -- dump -----------------------------------------------------------------------------------------


def dump_database(database: Path, node_secret: int, key_ids: Sequence[bytes] | None = None
                  ) -> Iterator[tuple[bytes, dict[str, Any] | str]]:
    """The records of the key database (or backup) ``database`` in Parity's V3 JSON layout, without
    their secret shares (:func:`storage.dump_records`): ``(key_id, layout)`` or ``(key_id, problem)``.
    The node may run; nothing is written (a schema-5 file is read as it is, not migrated).

    :raises BackupError: no database, not one of ours, or written under another node secret.
    """
    with _closing(_connect(database)) as db:
        try:
            yield from dump_records(db, node_secret, key_ids)
        except DatabaseError as exc:
            raise BackupError(f"{database}: {exc}") from None


# -- verify -------------------------------------------------------------------------------------


def verify_database(database: Path, node_secret: int) -> DatabaseCheck:
    """Check the node's database ``database`` (the node may run) under ``node_secret``.

    :raises BackupError: no database, not one of ours, or written under another node secret.
    """
    with _closing(_connect(database)) as db:
        try:
            return check_database(db, node_secret)
        except DatabaseError as exc:
            raise BackupError(f"{database}: {exc}") from None


@dataclass(frozen=True)
class Finding:
    """One key on which this node and its peers disagree.

    :param problem: ``missing`` (a peer's version names this node a holder, and it has no record),
        ``stale`` (it holds an older version than the peers'), ``no document key`` (it holds the
        peers' version but not the document key they hold: a backup taken before the key's store),
        ``ahead`` (it holds a newer one: the peers are behind), ``differs`` (another version of the
        same epoch), ``not a holder`` (the peers' version no longer names this node, and it still
        holds the key), ``only here`` (no peer that answered holds it).
    :param peer: the node whose answer it compares with (the newest version among the peers').
    """

    key_id: bytes
    problem: str
    local_epoch: int | None
    peer_epoch: int | None
    peer: bytes | None

    def to_json(self) -> dict[str, Any]:
        return {"key_id": "0x" + self.key_id.hex(), "problem": self.problem, "local_epoch": self.local_epoch,
                "peer_epoch": self.peer_epoch, "peer": None if self.peer is None else "0x" + self.peer.hex()}


def _newest(pages: Sequence[KeyVersionsPage]) -> dict[bytes, tuple[PeerKey, bytes]]:
    """Each key's newest active version among the peers' answers, with the peer that told it."""
    newest: dict[bytes, tuple[PeerKey, bytes]] = {}
    for page in pages:
        for key in page.keys:
            if key.version is None:  # a holder whose first version is not active yet: says nothing
                continue
            best = newest.get(key.key_id)
            if best is None or (key.epoch, key.holder, key.document_key) > (
                    best[0].epoch, best[0].holder, best[0].document_key):
                newest[key.key_id] = (key, page.node_id)
    return newest


def _judge(own: KeySummary, peer: PeerKey) -> str | None:
    if own.active == peer.version:
        return "no document key" if peer.document_key and not own.document_key else None
    if not peer.holder:
        return "not a holder"
    if own.epoch < peer.epoch or peer.version in own.versions:  # older, or the peers' held but not active
        return "stale"
    return "ahead" if own.epoch > peer.epoch else "differs"


def compare_versions(local: Sequence[KeySummary], pages: Sequence[KeyVersionsPage],
                     damaged: Sequence[bytes] = ()) -> tuple[Finding, ...]:
    """What this node (its records ``local``) lacks or holds otherwise than its peers (their
    answers ``pages``); keys in ``damaged`` (reported as damaged already) are left out."""
    if not pages:
        return ()
    mine = {k.key_id: k for k in local}
    newest = _newest(pages)
    skip = set(damaged)
    findings = []
    for key_id in sorted((mine.keys() | newest.keys()) - skip):
        own, told = mine.get(key_id), newest.get(key_id)
        if told is None:
            if own is not None and not any(k.key_id == key_id for p in pages for k in p.keys):
                findings.append(Finding(key_id, "only here", own.epoch, None, None))
            continue
        peer, by = told
        if own is None:
            if peer.holder:
                findings.append(Finding(key_id, "missing", None, peer.epoch, by))
            continue
        problem = _judge(own, peer)
        if problem is not None:
            findings.append(Finding(key_id, problem, own.epoch, peer.epoch, by))
    return tuple(findings)


@dataclass(frozen=True)
class Verification:
    """What ``node verify`` found: the database's check, and the comparison with the peers that answered."""

    node_id: bytes
    source: Path
    check: DatabaseCheck
    manifest: Manifest | None = None
    peers: Mapping[str, str] = field(default_factory=dict)  # URL -> "0x<node id>" or "error: ..."
    answers: tuple[KeyVersionsPage, ...] = ()
    findings: tuple[Finding, ...] = ()

    @classmethod
    def of(cls, node_id: bytes, source: Path, check: DatabaseCheck, manifest: Manifest | None,
           peers: Mapping[str, KeyVersionsPage | str]) -> Verification:
        answers = tuple(v for v in peers.values() if isinstance(v, KeyVersionsPage))
        damaged = [bytes.fromhex(d.name[2:]) for d in check.damaged if d.kind == "key"]
        return cls(node_id, source, check, manifest,
                   {url: ("0x" + v.node_id.hex()) if isinstance(v, KeyVersionsPage) else f"error: {v}"
                    for url, v in peers.items()},
                   answers, compare_versions(check.keys, answers, damaged))

    @property
    def unreachable(self) -> list[str]:
        return [url for url, v in self.peers.items() if v.startswith("error: ")]

    @property
    def servers_set(self) -> tuple[bytes, ...] | None:
        stored = self.check.meta.get("servers_set")
        return None if stored is None else tuple(sorted(bytes.fromhex(n) for n in stored))

    @property
    def servers_set_differs(self) -> bool:
        """Whether the servers set stored here (if any) differs from one the peers agree on."""
        theirs = {tuple(sorted(a.servers_set)) for a in self.answers}
        mine = self.servers_set
        return mine is not None and len(theirs) == 1 and mine not in theirs

    @property
    def ok(self) -> bool:
        """Nothing damaged, nothing found, and every peer asked answered (else the comparison is partial)."""
        return self.check.ok and not self.findings and not self.servers_set_differs and not self.unreachable

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for finding in self.findings:
            out[finding.problem] = out.get(finding.problem, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "node_id": "0x" + self.node_id.hex(),
            "source": str(self.source),
            "backup": None if self.manifest is None else self.manifest.to_json(),
            "schema_version": self.check.schema_version,
            "keys": len(self.check.keys) + sum(d.kind == "key" for d in self.check.damaged),
            "pending": self.check.pending,
            "admin_session": self.check.meta.get("admin_session"),
            "records_migration": self.check.meta.get(META_RECORDS_MIGRATION),
            "free_bytes": self.check.free_bytes,
            "damaged": [_damage_json(d) for d in self.check.damaged],
            "peers": dict(self.peers),
            "servers_set_differs": self.servers_set_differs,
            "counts": self.counts(),
            "findings": [f.to_json() for f in self.findings],
        }

    def lines(self, limit: int = 10) -> list[str]:
        """The report as text: at most ``limit`` items of each list."""
        data = self.to_json()
        what = f"backup {self.source} (made {self.manifest.created})" if self.manifest else f"database {self.source}"
        out = [(f"node {_short(self.node_id)}: {what}: schema {data['schema_version']}, {data['keys']} keys, "
                f"{data['pending']} pending document keys")]
        if self.check.ok:
            out.append("integrity: every record, pending document key and meta entry authenticates under the node "
                       "secret")
        else:
            out.append(f"integrity: {len(self.check.damaged)} damaged")
            out += [f"  {d.kind} {d.name}: {d.problem}" for d in self.check.damaged[:limit]]
        if self.check.meta.get("admin_session") is not None:
            out.append("admin session: marked in this database (taken during an admin session; see docs/operators.md)")
        migration = self.check.meta.get(META_RECORDS_MIGRATION)
        if isinstance(migration, dict):
            out.append(f"records: converting to the compact format of schema 6 in the background, "
                       f"{migration.get('visited', 0)} of {migration.get('total') or 'all'} looked at (a node "
                       "goes on with it when it runs; every record reads in either format)")
        if self.check.free_bytes >= 1_000_000:
            out.append(f"free pages: {self.check.free_bytes / 1e6:.1f} MB, reused by new records (a backup holds "
                       "none: node backup, then node restore with the node stopped, gives a file without them)")
        if self.peers:
            out.append(f"peers: {len(self.answers)} answered, {len(self.unreachable)} unreachable")
            out += [f"  {url}: {state}" for url, state in self.peers.items() if state.startswith("error: ")]
            if self.servers_set_differs:
                out.append("servers set: this database's differs from the peers'")
            if not self.answers:
                out.append("versions: not compared (no peer answered)")
            elif not self.findings:
                out.append("versions: every key as the peers that answered hold it")
            for problem, count in sorted(self.counts().items()):
                items = [f for f in self.findings if f.problem == problem]
                out.append(f"{problem}: {count} key(s)")
                out += [f"  0x{f.key_id.hex()} (here epoch {_epoch(f.local_epoch)}, peers' {_epoch(f.peer_epoch)})"
                        for f in items[:limit]]
                if count > limit:
                    out.append(f"  ... and {count - limit} more (--json lists every one)")
        else:
            out.append("versions: not compared (give the peers' URLs with --peer)")
        return out


def _epoch(value: int | None) -> str:
    return "-" if value is None else str(value)


def _damage_json(damage: Damage) -> dict[str, str]:
    return {"kind": damage.kind, "name": damage.name, "problem": damage.problem}
