"""Key share records (protocol.md §5.1), pending document keys, and their storage: in memory for
tests, SQLite on disk for nodes.

A record holds Parity's ``DocumentKeyShare`` (§5.1) with one deliberate difference: each
version's ``secret_share`` is sealed with AES-256-GCM under a key derived from the node secret,
its associated data binding it to the record's key id and version hash (a share cannot be copied
into another record or version). A second derived key authenticates the whole record
(HMAC-SHA256 over key id and stored bytes), so that the public fields that drive access decisions
(``author``, ``owner``, ``threshold``, the document key points) cannot be edited on disk either.
``owner`` (the key's owner-to-be, named by its author at generation, docs/security.md finding 1)
is one field beyond Parity's layout. Each version may carry two more: ``commitments``, the
version commitments ``D_k = Σ_i a_ik·G`` (k = 0..t, summed over every dealer of the generation;
``D_0`` is the key's public ``Y``), from which any holder's public share is
``s_j·G = public_share_at(x_j, D)`` (crypto.resharing); and ``epoch`` (0 for a generated key,
whose version hash is Parity's §2.11 hash; >= 1 for a redistributed or refreshed version, with the
hash of ``resharing.version_hash``). A version written before schema 4 has no commitments, epoch 0.

Since schema 6 the record is compact and binary (:func:`_pack`: fixed-size big-endian fields,
points in 33-byte compressed form, each holder's 64-byte node id replaced by a 2-byte index into
the database's ``nodes`` table, whose rows carry a MAC too), about 420 bytes for 5 nodes and
t = 2 instead of 2,195 of JSON, so that it stays inside its B-tree leaf page (a ``WITHOUT ROWID``
table keeps up to 1,002 bytes of a row in a 4 KiB leaf; a longer one spills into an overflow page,
a second page read and 4 KiB of disk). Nothing is stored that can be derived: a version hash is
recomputed from the id numbers and epoch (and bound by the share's associated data), the public
key is the first version commitment ``D_0`` when a version has commitments (checked against every
version's on reading). Schema <= 5 wrote Parity's V3 JSON layout (§5.2); such a record is still
read (an old backup, or a record the migration kept because it failed its check), and
:func:`dump_records` (``ocean-secret-store node dump``) prints any record in that layout, without
its shares.

Beside the records, a table of *pending* document keys: the ``(C, E)`` a two-phase store prepared
on this node and has not committed yet (``node/sessions/storing.py``, docs/cluster-protocol.md),
authenticated the same way under a third derived key, so the points cannot be edited on disk
before a commit copies them into the record. A commit is one transaction: the record takes the
pending's points and the pending row is deleted.

Every write is one SQLite transaction in WAL mode with ``synchronous=FULL``: after a crash the
row holds the old or the new record, never a mixture.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import math
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Protocol, Self

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

from .. import failpoints
from ..crypto.curve import N, Point, scalar_bytes
from ..crypto.resharing import version_hash as epoch_version_hash
from ..exceptions import (
    DatabaseError,
    DocumentKeyAlreadyStored,
    InternalError,
    InvalidPoint,
    InvalidScalar,
    KeyServerError,
    KeyVersionNotFound,
    ServerKeyAlreadyGenerated,
    ServerKeyIsNotFound,
)
from ..protocol.hexcodec import parse_hex, to_hex

__all__ = [
    "DB_FILENAME",
    "META_RECORDS_MIGRATION",
    "MIGRATION_STEP",
    "SCHEMA_VERSION",
    "Damage",
    "DatabaseCheck",
    "KeyShare",
    "KeyStorage",
    "KeySummary",
    "KeyVersion",
    "MemoryKeyStorage",
    "MigrationStep",
    "PendingDocumentKey",
    "SqliteKeyStorage",
    "backup_mac",
    "check_database",
    "dump_records",
]

log = logging.getLogger(__name__)

#: File name of the SQLite database inside a node's data directory.
DB_FILENAME: Final = "keys.sqlite3"
#: ``PRAGMA user_version`` of the schema this module writes (2: the pending document keys; 3: a
#: record may carry ``owner``). A version 1 database is migrated by adding the pending table, a
#: version 2 one by raising the number only: its records (without ``owner``) read as they are and
#: keep their MACs. The number rises so that an older program refuses a database whose records it
#: would misread as corrupt. 4: a version may carry ``commitments`` and ``epoch``; a version 2 or 3
#: database is migrated by raising the number only (its versions read with no commitments, epoch 0).
#: 5: a version may be ``inactive`` (committed by a redistribution, not in use yet), and the meta
#: table may hold the servers set and an unfinished admin session; raised from 2, 3 or 4 likewise.
#: 6: compact binary records (a third of the V3 JSON's size, so that a record fits in its B-tree
#: leaf page: one page read per key, 0.5-0.7 KB of disk per key instead of 4.7) and a ``nodes`` table
#: holding each node id once. A version 1-5 database gets the schema-6 tables on opening, in one
#: short transaction that also writes the :data:`META_RECORDS_MIGRATION` marker; its records are
#: then converted in the background, a few hundred per transaction
#: (:meth:`SqliteKeyStorage.migrate_step`), while the node serves: reads take either format.
SCHEMA_VERSION: Final = 6
#: At most this many transactions may share one pending document key (retries of one store).
MAX_PENDING_TXS: Final = 16

# Domain-separation labels for the three keys derived from the node secret (HKDF "info").
_SHARE_KEY_LABEL: Final = b"ocean-secret-store/storage/share-encryption/v1"
_RECORD_MAC_LABEL: Final = b"ocean-secret-store/storage/record-mac/v1"
_PENDING_MAC_LABEL: Final = b"ocean-secret-store/storage/pending-mac/v1"
_HKDF_SALT: Final = b"ocean-secret-store/storage"
# A MAC of this constant, stored once per database, tells a wrong node secret from a tampered row.
_KEY_CHECK: Final = b"ocean-secret-store/storage/key-check"
_NONCE_SIZE: Final = 12
_CREATE_KEYS: Final = (
    "CREATE TABLE IF NOT EXISTS keys ("
    " key_id BLOB PRIMARY KEY CHECK (length(key_id) = 32),"
    " record BLOB NOT NULL,"
    " mac BLOB NOT NULL) WITHOUT ROWID"
)
_CREATE_NODES: Final = (
    "CREATE TABLE IF NOT EXISTS nodes ("
    " idx INTEGER PRIMARY KEY,"
    " node_id BLOB NOT NULL UNIQUE CHECK (length(node_id) = 64),"
    " mac BLOB NOT NULL)"
)
#: Crash points of the migration (``OSS_FAILPOINTS``, ocean_secret_store/failpoints.py): a step's
#: records rewritten and its marker updated, not committed; and just after its commit.
FP_MIGRATION_STEP_WRITTEN: Final = "storage.migration_step_written"
FP_MIGRATION_STEP_COMMITTED: Final = "storage.migration_step_committed"
#: How many records one step of the background migration to schema 6 converts by default (one
#: short transaction under the storage lock: a few milliseconds, so retrievals wait little).
MIGRATION_STEP: Final = 200
_CREATE_PENDING: Final = (
    "CREATE TABLE IF NOT EXISTS pending ("
    " key_id BLOB PRIMARY KEY CHECK (length(key_id) = 32),"
    " record TEXT NOT NULL,"
    " mac BLOB NOT NULL) WITHOUT ROWID"
)
_TAG_SIZE: Final = 16
_VERSION_FIELDS: Final = frozenset({"hash", "id_numbers", "secret_share", "commitments", "epoch", "inactive"})
_META_MAC_LABEL: Final = b"ocean-secret-store/storage/meta-mac/v1"
# The key that authenticates a backup's manifest (node/backup.py): which node, when, how many keys.
_BACKUP_MAC_LABEL: Final = b"ocean-secret-store/storage/backup-manifest/v1"
#: Meta rows beyond the key check, each a JSON value authenticated like a record.
META_SERVERS_SET: Final = "servers_set"
META_ADMIN_SESSION: Final = "admin_session"
#: The marker of a database whose records are still (partly) in the V3 JSON format of schema <= 5:
#: written with the schema-6 tables, updated by every migration step (the last key id it passed,
#: how many it converted and kept), deleted by the step that finds no record left. Written only by
#: the storage itself (not :meth:`SqliteKeyStorage.put_meta`).
META_RECORDS_MIGRATION: Final = "records_migration"


# -- records ------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class KeyVersion:
    """One version of a key's sharing (Parity's ``DocumentKeyShareVersion``).

    :param hash: ``resharing.version_hash(id_numbers, epoch)``, 32 bytes: Parity's
        ``key_version_hash(id_numbers)`` (protocol.md §2.11) at epoch 0.
    :param id_numbers: every share holder's 64-byte node id -> its id number ``x_j``.
    :param secret_share: this node's share ``s_j`` (never shown in the repr).
    :param commitments: the version commitments ``D_0..D_t`` (``D_0 = Y``), empty when unknown
        (a version stored before schema 4). ``s_j·G = resharing.public_share_at(x_j, commitments)``.
    :param epoch: 0 for a generated key, incremented by every redistribution and refresh.
    :param active: False for a version a redistribution committed on this node and has not
        activated yet: this node serves it to an entry node that asks for it, but never chooses it
        itself (:attr:`KeyShare.last_version` is the newest *active* version).
    """

    hash: bytes
    id_numbers: Mapping[bytes, int]
    secret_share: int = field(repr=False)
    commitments: tuple[Point, ...] = ()
    epoch: int = 0
    active: bool = True

    def __post_init__(self) -> None:
        if len(self.hash) != 32:
            raise InternalError(f"a key version hash is 32 bytes, got {len(self.hash)}")
        for node, x in self.id_numbers.items():
            if len(node) != 64:
                raise InvalidPoint(f"a node id is 64 bytes, got {len(node)}")
            if not 0 < x < N:
                raise InvalidScalar("an id number must satisfy 1 <= x < n")
        if not 0 <= self.secret_share < N:
            raise InvalidScalar("a secret share must satisfy 0 <= s < n")
        if isinstance(self.epoch, bool) or not isinstance(self.epoch, int) or not 0 <= self.epoch < 2**64:
            raise InternalError("a key version epoch is an integer, 0 <= epoch < 2**64")
        if not isinstance(self.active, bool):
            raise InternalError("a key version is active or not")
        commitments = tuple(self.commitments)
        if not all(isinstance(c, Point) for c in commitments):
            raise InternalError("version commitments are curve points")
        object.__setattr__(self, "commitments", commitments)
        # A read-only copy: the record is shared between sessions and must not change under them.
        object.__setattr__(self, "id_numbers", MappingProxyType(dict(self.id_numbers)))

    @classmethod
    def new(
        cls, id_numbers: Mapping[bytes, int], secret_share: int, commitments: tuple[Point, ...] = (), epoch: int = 0,
        active: bool = True,
    ) -> KeyVersion:
        """A version whose hash is computed from ``id_numbers`` and ``epoch``."""
        return cls(epoch_version_hash(id_numbers, epoch), id_numbers, secret_share, commitments, epoch, active)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyVersion):
            return NotImplemented
        return (
            self.hash == other.hash
            and dict(self.id_numbers) == dict(other.id_numbers)
            and self.commitments == other.commitments
            and self.epoch == other.epoch
            and self.active == other.active
            and hmac.compare_digest(scalar_bytes(self.secret_share), scalar_bytes(other.secret_share))
        )

    __hash__ = None  # type: ignore[assignment]  # eq compares the share in constant time; never a dict key or set member

    def __repr__(self) -> str:
        nodes = ", ".join("0x" + node.hex()[:16] + "…" for node in sorted(self.id_numbers))
        return (
            f"KeyVersion(hash=0x{self.hash.hex()}, id_numbers=[{nodes}], secret_share=<secret>, "
            f"commitments={len(self.commitments)}, epoch={self.epoch}{'' if self.active else ', inactive'})"
        )


@dataclass(frozen=True)
class KeyShare:
    """This node's record of one server key (Parity's ``DocumentKeyShare``, protocol.md §5.1).

    :param author: 20-byte address of the generation requester.
    :param threshold: ``t``: ``t + 1`` shares are needed to use the key.
    :param public: the server public key ``Y``.
    :param common_point: ``C`` of the stored document key, or None until one is stored.
    :param encrypted_point: ``E`` of the stored document key, or None until one is stored.
    :param versions: oldest first; redistribution appends.
    :param owner: 20-byte address of the key's owner-to-be, named by the author at generation
        (None: none named). The contract access checker serves it like the author and accepts it
        as the DID's first registrant.
    """

    author: bytes
    threshold: int
    public: Point
    common_point: Point | None
    encrypted_point: Point | None
    versions: tuple[KeyVersion, ...]
    owner: bytes | None = None

    def __post_init__(self) -> None:
        if len(self.author) != 20:
            raise InternalError(f"an author address is 20 bytes, got {len(self.author)}")
        if self.owner is not None and len(self.owner) != 20:
            raise InternalError(f"an owner address is 20 bytes, got {len(self.owner)}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int) or self.threshold < 0:
            raise InternalError("a threshold is a non-negative integer")
        if (self.common_point is None) != (self.encrypted_point is None):
            raise InternalError("common_point and encrypted_point are set together or not at all")
        object.__setattr__(self, "versions", tuple(self.versions))
        for version in self.versions:
            if version.commitments and version.commitments[0] != self.public:
                raise InternalError("a version's first commitment D_0 is not the key's public Y")

    @property
    def last_version(self) -> KeyVersion:
        """The newest *active* version: the one this node uses as an entry node.

        :raises KeyVersionNotFound: the record has no active version (a new holder whose first
            version a redistribution committed and has not activated yet).
        """
        for candidate in reversed(self.versions):
            if candidate.active:
                return candidate
        raise KeyVersionNotFound("the key share has no active version")

    @property
    def usable(self) -> bool:
        """Whether the record has an active version (this node can take part as an entry node)."""
        return any(v.active for v in self.versions)

    @property
    def max_epoch(self) -> int:
        """The highest epoch of any version held, active or not (-1 with no version)."""
        return max((v.epoch for v in self.versions), default=-1)

    def with_committed(self, version: KeyVersion) -> KeyShare:
        """A copy with ``version`` (inactive) appended; inactive versions of abandoned attempts go."""
        if version.active:
            raise InternalError("a redistribution commits an inactive version")
        kept = tuple(v for v in self.versions if v.active)
        return replace(self, versions=(*kept, version))

    def activated(self, version_hash: bytes) -> KeyShare:
        """A copy with the version ``version_hash`` active (no change if it already is).

        :raises KeyVersionNotFound: no version has this hash.
        """
        self.version(version_hash)
        return replace(self, versions=tuple(replace(v, active=True) if v.hash == version_hash else v
                                            for v in self.versions))

    def pruned(self, version_hash: bytes) -> KeyShare:
        """A copy that keeps only the version ``version_hash`` (the others' shares are gone).

        :raises KeyVersionNotFound: no version has this hash.
        """
        return replace(self, versions=(self.version(version_hash),))

    def version(self, version_hash: bytes) -> KeyVersion:
        """The newest version with this hash.

        :raises KeyVersionNotFound: no version has this hash.
        """
        for candidate in reversed(self.versions):
            if candidate.hash == version_hash:
                return candidate
        raise KeyVersionNotFound(f"key version 0x{bytes(version_hash).hex()} is not found")

    def with_document_key(self, common_point: Point, encrypted_point: Point) -> KeyShare:
        """A copy with the document key's ``C`` and ``E`` set."""
        return replace(self, common_point=common_point, encrypted_point=encrypted_point)

    def with_version(self, version: KeyVersion) -> KeyShare:
        """A copy with ``version`` appended as the newest version."""
        return replace(self, versions=(*self.versions, version))


@dataclass(frozen=True)
class PendingDocumentKey:
    """A document key prepared on this node by a two-phase store and not committed yet.

    :param key_id: the server key id it belongs to.
    :param common_point: ``C`` of the document key.
    :param encrypted_point: ``E`` of the document key.
    :param coordinator: node id of the entry node that prepared it (first).
    :param txs: the transaction ids that prepared this same ``(C, E)``, oldest first; an abort
        removes its own, and the pending goes once none is left.
    :param expiry: wall-clock time (seconds since the epoch) after which the pending may be
        dropped, once every other holder confirmed that nobody committed it.
    """

    key_id: bytes
    common_point: Point
    encrypted_point: Point
    coordinator: bytes
    txs: tuple[bytes, ...]
    expiry: float

    def __post_init__(self) -> None:
        _check_key_id(self.key_id)
        if len(self.coordinator) != 64:
            raise InternalError(f"a node id is 64 bytes, got {len(self.coordinator)}")
        txs = tuple(self.txs)
        if not txs or len(set(txs)) != len(txs) or any(len(tx) != 32 for tx in txs):
            raise InternalError("a pending document key has distinct 32-byte transaction ids, at least one")
        if isinstance(self.expiry, bool) or not isinstance(self.expiry, int | float) or not math.isfinite(self.expiry):
            raise InternalError("a pending document key expires at a finite time")
        object.__setattr__(self, "txs", txs)
        object.__setattr__(self, "expiry", float(self.expiry))

    def same_document_key(self, common_point: Point, encrypted_point: Point) -> bool:
        """Whether this pending holds the document key ``(common_point, encrypted_point)``."""
        return self.common_point == common_point and self.encrypted_point == encrypted_point

    def refreshed(self, tx: bytes, expiry: float) -> PendingDocumentKey:
        """A copy that ``tx`` prepared too, expiring no earlier than ``expiry``."""
        txs = self.txs if tx in self.txs else (*self.txs, tx)
        return replace(self, txs=txs, expiry=max(self.expiry, expiry))

    def without(self, tx: bytes) -> PendingDocumentKey | None:
        """A copy without ``tx``, or None when no transaction would be left."""
        txs = tuple(t for t in self.txs if t != tx)
        return replace(self, txs=txs) if txs else None


# -- the port -----------------------------------------------------------------------------------


class KeyStorage(Protocol):
    """Where a node keeps its key shares. Methods block; the node calls them via ``asyncio.to_thread``."""

    def insert(self, key_id: bytes, share: KeyShare) -> None:
        """Store a new record. :raises ServerKeyAlreadyGenerated: ``key_id`` already has one."""
        ...

    def insert_many(self, items: Iterable[tuple[bytes, KeyShare]]) -> int:
        """Store new records all or none, in one transaction (a batch generation commits its keys so).
        :returns: how many were stored. :raises ServerKeyAlreadyGenerated: a key id has a record or
        comes twice (none is stored)."""
        ...

    def update(self, key_id: bytes, share: KeyShare) -> None:
        """Replace an existing record. :raises ServerKeyIsNotFound: ``key_id`` has none."""
        ...

    def get(self, key_id: bytes) -> KeyShare | None: ...

    def contains(self, key_id: bytes) -> bool: ...

    def remove(self, key_id: bytes) -> None:
        """Delete the record and its pending document key if there are any (no error otherwise)."""
        ...

    def key_ids(self) -> Iterator[bytes]: ...

    def key_page(self, after: bytes, limit: int) -> list[bytes]:
        """Up to ``limit`` key ids above ``after``, ascending (an admin session lists keys in pages)."""
        ...

    def key_count(self) -> int:
        """How many key records there are (the keys metric)."""
        ...

    def disk_bytes(self) -> int:
        """Bytes the storage takes on disk, its journal included (0 in memory; the database size metric)."""
        ...

    def records_to_migrate(self) -> int | None:
        """About how many records are still to be converted by the background migration to schema 6
        (0: none, the usual case; None: not counted yet, before its first step)."""
        ...

    def put_pending(self, pending: PendingDocumentKey) -> None:
        """Store or replace the pending document key of ``pending.key_id``.

        :raises ServerKeyIsNotFound: there is no record of the key.
        """
        ...

    def get_pending(self, key_id: bytes) -> PendingDocumentKey | None: ...

    def pending_documents(self) -> list[PendingDocumentKey]:
        """Every pending document key (a snapshot), by key id."""
        ...

    def commit_pending(self, key_id: bytes, tx: bytes | None = None) -> KeyShare | None:
        """In one transaction, set the record's document key to the pending's ``(C, E)`` and delete
        the pending; with ``tx``, only if the pending holds that transaction.

        :returns: the record as committed, or None when there is nothing to commit (no pending,
            or one without ``tx``).
        :raises DocumentKeyAlreadyStored: the record holds another document key (nothing changes).
        :raises ServerKeyIsNotFound: there is no record of the key.
        """
        ...

    def remove_pending_tx(self, key_id: bytes, tx: bytes) -> PendingDocumentKey | None:
        """Remove ``tx`` from the pending's transactions, and the pending itself once none is left.

        :returns: what is left of the pending (None: no pending any more).
        """
        ...

    def drop_pending(self, key_id: bytes, expected: PendingDocumentKey | None = None) -> bool:
        """Delete the pending document key, only if it still equals ``expected`` when given.

        :returns: whether one was deleted.
        """
        ...

    def get_meta(self, name: str) -> Any:
        """The JSON value stored under ``name`` (:data:`META_SERVERS_SET`, :data:`META_ADMIN_SESSION`), or None."""
        ...

    def put_meta(self, name: str, value: Any) -> None:
        """Store the JSON value ``value`` under ``name`` (None deletes it)."""
        ...

    def close(self) -> None: ...


def _check_meta_name(name: str) -> str:
    if name not in (META_SERVERS_SET, META_ADMIN_SESSION):
        raise InternalError(f"unknown meta entry {name!r}")
    return name


def _check_key_id(key_id: bytes) -> bytes:
    if not isinstance(key_id, bytes | bytearray) or len(key_id) != 32:
        raise InternalError("a server key id is 32 bytes")
    return bytes(key_id)


class MemoryKeyStorage:
    """A dict behind a lock: the storage of session tests and throw-away nodes."""

    def __init__(self) -> None:
        self._records: dict[bytes, KeyShare] = {}
        self._pending: dict[bytes, PendingDocumentKey] = {}
        self._meta: dict[str, str] = {}
        self._lock = threading.Lock()

    def insert(self, key_id: bytes, share: KeyShare) -> None:
        key_id = _check_key_id(key_id)
        with self._lock:
            if key_id in self._records:
                raise ServerKeyAlreadyGenerated()
            self._records[key_id] = share

    def insert_many(self, items: Iterable[tuple[bytes, KeyShare]]) -> int:
        rows = [(_check_key_id(key_id), share) for key_id, share in items]
        with self._lock:
            if len({k for k, _ in rows}) != len(rows) or any(k in self._records for k, _ in rows):
                raise ServerKeyAlreadyGenerated()
            self._records.update(rows)
        return len(rows)

    def update(self, key_id: bytes, share: KeyShare) -> None:
        key_id = _check_key_id(key_id)
        with self._lock:
            if key_id not in self._records:
                raise ServerKeyIsNotFound()
            self._records[key_id] = share

    def get(self, key_id: bytes) -> KeyShare | None:
        with self._lock:
            return self._records.get(bytes(key_id))

    def contains(self, key_id: bytes) -> bool:
        with self._lock:
            return bytes(key_id) in self._records

    def remove(self, key_id: bytes) -> None:
        with self._lock:
            self._records.pop(bytes(key_id), None)
            self._pending.pop(bytes(key_id), None)

    def key_ids(self) -> Iterator[bytes]:
        with self._lock:
            return iter(sorted(self._records))

    def key_page(self, after: bytes, limit: int) -> list[bytes]:
        with self._lock:
            return sorted(k for k in self._records if k > after)[:limit]

    def put_pending(self, pending: PendingDocumentKey) -> None:
        with self._lock:
            if pending.key_id not in self._records:
                raise ServerKeyIsNotFound()
            self._pending[pending.key_id] = pending

    def get_pending(self, key_id: bytes) -> PendingDocumentKey | None:
        with self._lock:
            return self._pending.get(bytes(key_id))

    def pending_documents(self) -> list[PendingDocumentKey]:
        with self._lock:
            return [self._pending[k] for k in sorted(self._pending)]

    def commit_pending(self, key_id: bytes, tx: bytes | None = None) -> KeyShare | None:
        key_id = _check_key_id(key_id)
        with self._lock:
            pending = self._pending.get(key_id)
            if pending is None or (tx is not None and tx not in pending.txs):
                return None
            share = self._records.get(key_id)
            if share is None:
                raise ServerKeyIsNotFound()
            committed = _committed(share, pending)
            self._records[key_id] = committed
            del self._pending[key_id]
            return committed

    def remove_pending_tx(self, key_id: bytes, tx: bytes) -> PendingDocumentKey | None:
        with self._lock:
            pending = self._pending.get(bytes(key_id))
            if pending is None:
                return None
            left = pending.without(tx)
            if left is None:
                del self._pending[bytes(key_id)]
            else:
                self._pending[bytes(key_id)] = left
            return left

    def drop_pending(self, key_id: bytes, expected: PendingDocumentKey | None = None) -> bool:
        with self._lock:
            pending = self._pending.get(bytes(key_id))
            if pending is None or (expected is not None and pending != expected):
                return False
            del self._pending[bytes(key_id)]
            return True

    def get_meta(self, name: str) -> Any:
        with self._lock:
            raw = self._meta.get(_check_meta_name(name))
        return None if raw is None else json.loads(raw)

    def put_meta(self, name: str, value: Any) -> None:
        with self._lock:
            if value is None:
                self._meta.pop(_check_meta_name(name), None)
            else:
                self._meta[_check_meta_name(name)] = json.dumps(value)

    def key_count(self) -> int:
        with self._lock:
            return len(self._records)

    def disk_bytes(self) -> int:
        return 0

    def records_to_migrate(self) -> int | None:
        return 0

    def close(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self._records)


def _committed(share: KeyShare, pending: PendingDocumentKey) -> KeyShare:
    """``share`` with the pending's document key (the same one again is no change)."""
    if share.common_point is not None and share.encrypted_point is not None:
        if pending.same_document_key(share.common_point, share.encrypted_point):
            return share
        raise DocumentKeyAlreadyStored()
    return share.with_document_key(pending.common_point, pending.encrypted_point)


# -- SQLite -------------------------------------------------------------------------------------


class _Keys:
    """The three keys derived from the node secret (share sealing, record MAC, pending MAC); the
    repr hides them."""

    __slots__ = ("backup", "mac", "meta", "pending", "share")

    def __init__(self, node_secret: int) -> None:
        if isinstance(node_secret, bool) or not isinstance(node_secret, int) or not 0 < node_secret < N:
            raise InvalidScalar("the node secret must satisfy 1 <= s < n")
        master = scalar_bytes(node_secret)
        self.share: bytes = HKDF(master, 32, _HKDF_SALT, SHA256, context=_SHARE_KEY_LABEL)  # type: ignore[assignment]  # one key asked: HKDF returns bytes, typeshed says bytes | tuple
        self.mac: bytes = HKDF(master, 32, _HKDF_SALT, SHA256, context=_RECORD_MAC_LABEL)  # type: ignore[assignment]  # as above
        self.pending: bytes = HKDF(master, 32, _HKDF_SALT, SHA256, context=_PENDING_MAC_LABEL)  # type: ignore[assignment]  # as above
        self.meta: bytes = HKDF(master, 32, _HKDF_SALT, SHA256, context=_META_MAC_LABEL)  # type: ignore[assignment]  # as above
        self.backup: bytes = HKDF(master, 32, _HKDF_SALT, SHA256, context=_BACKUP_MAC_LABEL)  # type: ignore[assignment]  # as above

    def __repr__(self) -> str:
        return "_Keys(<secret>)"

    def record_mac(self, key_id: bytes, record: bytes) -> bytes:
        return hmac.new(self.mac, key_id + record, "sha256").digest()

    def pending_mac(self, key_id: bytes, record: bytes) -> bytes:
        return hmac.new(self.pending, key_id + record, "sha256").digest()

    def meta_mac(self, name: str, value: bytes) -> bytes:
        return hmac.new(self.meta, name.encode("ascii") + b"\x00" + value, "sha256").digest()

    def node_mac(self, index: int, node: bytes) -> bytes:
        """A row of the node table: under the meta key, named so that no meta entry can collide."""
        return self.meta_mac(f"node/{index}", node)


def _seal_share(keys: _Keys, key_id: bytes, version: KeyVersion) -> bytes:
    """``nonce || ciphertext || tag`` (60 bytes): AES-256-GCM, the associated data key id and version hash."""
    nonce = os.urandom(_NONCE_SIZE)
    cipher = AES.new(keys.share, AES.MODE_GCM, nonce=nonce, mac_len=_TAG_SIZE)
    cipher.update(key_id + version.hash)
    ciphertext, tag = cipher.encrypt_and_digest(scalar_bytes(version.secret_share))
    return nonce + ciphertext + tag


class _Corrupt(Exception):
    """Internal: a stored record does not parse (turned into DatabaseError with the key id)."""


class _UnknownNode(_Corrupt):
    """Internal: a record names a node index the node table read so far does not hold."""


@dataclass(frozen=True)
class _RawVersion:
    """A version as stored: its share still sealed, its hash derived from ``id_numbers`` and ``epoch``."""

    hash: bytes
    id_numbers: Mapping[bytes, int]
    epoch: int
    active: bool
    commitments: tuple[Point, ...]
    sealed: bytes


@dataclass(frozen=True)
class _RawRecord:
    """A record as stored, either format: every field parsed, no share opened."""

    author: bytes
    threshold: int
    public: Point
    common_point: Point | None
    encrypted_point: Point | None
    versions: tuple[_RawVersion, ...]
    owner: bytes | None

    def node_ids(self) -> set[bytes]:
        return {node for v in self.versions for node in v.id_numbers}


def _sealed_record(keys: _Keys, key_id: bytes, share: KeyShare) -> _RawRecord:
    """``share`` with every share sealed (the costly part of a write, done outside the lock)."""
    return _RawRecord(share.author, share.threshold, share.public, share.common_point, share.encrypted_point,
                      tuple(_RawVersion(v.hash, v.id_numbers, v.epoch, v.active, v.commitments,
                                        _seal_share(keys, key_id, v)) for v in share.versions), share.owner)


# The compact record (schema 6): big-endian, fixed-size fields, points in 33-byte compressed form.
#   head     format (1) | flags (1) | threshold (2) | author (20)
#            [owner (20)] [public (33), only when no version has commitments: else it is D_0]
#            [common_point (33) | encrypted_point (33)] | versions (2)
#   version  flags (1) | commitments (1) | holders (2) | [epoch (8), only when not 0]
#            holders × (node index (2) | id number (32)) | commitments × point (33) | sealed share (60)
# A node index refers to the database's ``nodes`` table (each 64-byte node id stored once).
_COMPACT: Final = 1  # a record of schema <= 5 is V3 JSON and starts with "{"
_HAS_OWNER, _HAS_DOCUMENT_KEY, _HAS_PUBLIC = 1, 2, 4
_INACTIVE, _HAS_EPOCH = 1, 2
_HEAD: Final = struct.Struct(">BBH20s")
_VERSION_HEAD: Final = struct.Struct(">BBH")
_HOLDER: Final = struct.Struct(">H32s")
_U16: Final = struct.Struct(">H")
_U64: Final = struct.Struct(">Q")
_POINT: Final = 33
_SEALED: Final = _NONCE_SIZE + 32 + _TAG_SIZE


def _pack(record: _RawRecord, index: Mapping[bytes, int]) -> bytes:
    """The compact encoding of ``record``; ``index`` maps each of its node ids to its node index."""
    with_commitments = [v for v in record.versions if v.commitments]
    if with_commitments and with_commitments[0].commitments[0] != record.public:
        raise _Corrupt("a version's first commitment D_0 is not the key's public Y")
    if record.threshold > 0xFFFF or len(record.versions) > 0xFFFF:
        raise InternalError("a record holds a threshold and a number of versions below 65536")
    flags = ((_HAS_OWNER if record.owner is not None else 0) | (0 if with_commitments else _HAS_PUBLIC)
             | (_HAS_DOCUMENT_KEY if record.common_point is not None else 0))
    out = [_HEAD.pack(_COMPACT, flags, record.threshold, record.author)]
    if record.owner is not None:
        out.append(record.owner)
    if not with_commitments:
        out.append(record.public.to_sec1(compressed=True))
    if record.common_point is not None and record.encrypted_point is not None:
        out += [record.common_point.to_sec1(compressed=True), record.encrypted_point.to_sec1(compressed=True)]
    out.append(_U16.pack(len(record.versions)))
    for v in record.versions:
        if len(v.commitments) > 0xFF or len(v.id_numbers) > 0xFFFF:
            raise InternalError("a version holds fewer than 256 commitments and 65536 holders")
        out.append(_VERSION_HEAD.pack((0 if v.active else _INACTIVE) | (_HAS_EPOCH if v.epoch else 0),
                                      len(v.commitments), len(v.id_numbers)))
        if v.epoch:
            out.append(_U64.pack(v.epoch))
        out += [_HOLDER.pack(index[node], scalar_bytes(x)) for node, x in sorted(v.id_numbers.items())]
        out += [c.to_sec1(compressed=True) for c in v.commitments]
        if len(v.sealed) != _SEALED:
            raise _Corrupt("a sealed secret share is 60 bytes")
        out.append(v.sealed)
    return b"".join(out)


class _Reader:
    """Reads a compact record field by field; running past its end is :class:`_Corrupt`."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, size: int) -> bytes:
        if self.at + size > len(self.data):
            raise _Corrupt("truncated")
        self.at += size
        return self.data[self.at - size:self.at]

    def unpack(self, layout: struct.Struct) -> tuple[Any, ...]:
        return layout.unpack(self.take(layout.size))

    def point(self, what: str) -> Point:
        try:
            return Point.from_sec1(self.take(_POINT))
        except (InvalidPoint, ValueError) as exc:
            raise _Corrupt(f"{what} is not a curve point") from exc


def _unpack(data: bytes, nodes: Mapping[int, bytes]) -> _RawRecord:
    """A compact record; ``nodes`` maps node indexes to node ids. Only the canonical encoding is read."""
    reader = _Reader(data)
    fmt, flags, threshold, author = reader.unpack(_HEAD)
    if fmt != _COMPACT or flags & ~(_HAS_OWNER | _HAS_DOCUMENT_KEY | _HAS_PUBLIC):
        raise _Corrupt("unknown record format")
    owner = reader.take(20) if flags & _HAS_OWNER else None
    public = reader.point("public") if flags & _HAS_PUBLIC else None
    common_point = encrypted_point = None
    if flags & _HAS_DOCUMENT_KEY:
        common_point, encrypted_point = reader.point("common_point"), reader.point("encrypted_point")
    versions = []
    for _ in range(reader.unpack(_U16)[0]):
        vflags, n_commitments, n_holders = reader.unpack(_VERSION_HEAD)
        if vflags & ~(_INACTIVE | _HAS_EPOCH):
            raise _Corrupt("unknown version flags")
        epoch = reader.unpack(_U64)[0] if vflags & _HAS_EPOCH else 0
        if vflags & _HAS_EPOCH and epoch == 0:
            raise _Corrupt("bad epoch")  # written only when it is not 0
        id_numbers: dict[bytes, int] = {}
        for _ in range(n_holders):
            node_index, x = reader.unpack(_HOLDER)
            node = nodes.get(node_index)
            if node is None:
                raise _UnknownNode(f"node index {node_index} is not in the node table")
            if node in id_numbers:
                raise _Corrupt("a holder comes twice")
            id_numbers[node] = int.from_bytes(x, "big")
        commitments = tuple(reader.point("a version commitment") for _ in range(n_commitments))
        version_hash = epoch_version_hash(id_numbers, epoch)
        versions.append(_RawVersion(version_hash, id_numbers, epoch, not vflags & _INACTIVE, commitments,
                                    reader.take(_SEALED)))
    if reader.at != len(data):
        raise _Corrupt("trailing bytes")
    if public is None:
        public = next((v.commitments[0] for v in versions if v.commitments), None)
        if public is None:
            raise _Corrupt("no public key and no version commitments")
    elif any(v.commitments for v in versions):
        raise _Corrupt("public is stored beside version commitments")  # never written so
    return _RawRecord(author, threshold, public, common_point, encrypted_point, tuple(versions), owner)


def _unhex(value: object, what: str, size: int) -> bytes:
    return parse_hex(value, what, size, error=_Corrupt)


def _point(value: object, what: str) -> Point:
    try:
        return Point.from_bytes(_unhex(value, what, 64))
    except InvalidPoint as exc:
        raise _Corrupt(f"{what} is not a curve point") from exc


def _parse_v3(raw: bytes) -> _RawRecord:
    """A record of schema <= 5: Parity's V3 JSON (§5.2) with sealed shares and our extra fields."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Corrupt("not JSON") from exc
    fields = ("author", "threshold", "public", "common_point", "encrypted_point", "versions")
    if not isinstance(data, dict) or set(data) - {"owner"} != set(fields):
        raise _Corrupt("unexpected record fields")
    threshold = data["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
        raise _Corrupt("bad threshold")
    if not isinstance(data["versions"], list):
        raise _Corrupt("versions is not a list")
    versions = []
    for entry in data["versions"]:
        if not isinstance(entry, dict) or not (
            {"hash", "id_numbers", "secret_share"} <= set(entry) <= _VERSION_FIELDS
        ):
            raise _Corrupt("unexpected version fields")
        epoch = entry.get("epoch", 0)
        if "epoch" in entry and (isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 < epoch < 2**64):
            raise _Corrupt("bad epoch")  # written only when it is not 0
        raw_commitments = entry.get("commitments", [])
        if not isinstance(raw_commitments, list) or ("commitments" in entry and not raw_commitments):
            raise _Corrupt("bad commitments")
        commitments = tuple(_point(c, "a version commitment") for c in raw_commitments)
        if "inactive" in entry and entry["inactive"] is not True:
            raise _Corrupt("bad inactive flag")  # written only when the version is inactive
        version_hash = _unhex(entry["hash"], "a version hash", 32)
        if not isinstance(entry["id_numbers"], dict):
            raise _Corrupt("id_numbers is not a map")
        id_numbers = {
            _unhex(node, "a node id", 64): int.from_bytes(_unhex(x, "an id number", 32), "big")
            for node, x in entry["id_numbers"].items()
        }
        if not hmac.compare_digest(epoch_version_hash(id_numbers, epoch), version_hash):
            raise _Corrupt("a version hash does not match its id numbers and epoch")
        sealed = entry["secret_share"]
        if not isinstance(sealed, dict) or set(sealed) != {"aes256gcm"}:
            raise _Corrupt("secret_share is not a sealed share")
        versions.append(_RawVersion(version_hash, id_numbers, epoch, "inactive" not in entry, commitments,
                                    _unhex(sealed["aes256gcm"], "a sealed secret share", _SEALED)))
    return _RawRecord(
        author=_unhex(data["author"], "author", 20),
        threshold=threshold,
        public=_point(data["public"], "public"),
        common_point=None if data["common_point"] is None else _point(data["common_point"], "common_point"),
        encrypted_point=None if data["encrypted_point"] is None else _point(data["encrypted_point"], "encrypted_point"),
        versions=tuple(versions),
        owner=_unhex(data["owner"], "owner", 20) if "owner" in data else None,
    )


def _parse(raw: bytes, nodes: Mapping[int, bytes]) -> _RawRecord:
    """A stored record of either format: compact (schema 6), or V3 JSON (schema <= 5, or a record the
    migration to 6 kept as it was because it failed its check)."""
    return _parse_v3(raw) if raw[:1] == b"{" else _unpack(raw, nodes)


def _open_share(keys: _Keys, key_id: bytes, version: _RawVersion) -> int:
    blob = version.sealed
    nonce, ciphertext, tag = blob[:_NONCE_SIZE], blob[_NONCE_SIZE:-_TAG_SIZE], blob[-_TAG_SIZE:]
    cipher = AES.new(keys.share, AES.MODE_GCM, nonce=nonce, mac_len=_TAG_SIZE)
    cipher.update(key_id + version.hash)
    try:
        plain = cipher.decrypt_and_verify(ciphertext, tag)
    except ValueError as exc:
        raise _Corrupt("a secret share fails authentication (wrong node secret or tampered record)") from exc
    value = int.from_bytes(plain, "big")
    if value >= N:
        raise _Corrupt("a secret share is out of range")
    return value


def _opened(keys: _Keys, key_id: bytes, record: _RawRecord) -> KeyShare:
    """The record with every share opened."""
    versions = []
    for v in record.versions:
        share = _open_share(keys, key_id, v)
        try:
            versions.append(KeyVersion(v.hash, v.id_numbers, share, v.commitments, v.epoch, v.active))
        except (InvalidPoint, InvalidScalar, InternalError) as exc:
            raise _Corrupt("invalid version") from exc
    try:
        return KeyShare(record.author, record.threshold, record.public, record.common_point, record.encrypted_point,
                        tuple(versions), record.owner)
    except InternalError as exc:
        raise _Corrupt("inconsistent record") from exc


def _v3_layout(record: _RawRecord) -> dict[str, Any]:
    """Parity's V3 JSON layout of a record (field order and 0x-hex as §5.2, our extra fields when
    present), without any secret share: what ``node dump`` prints."""
    layout: dict[str, Any] = {
        "author": to_hex(record.author),
        "threshold": record.threshold,
        "public": to_hex(record.public.to_bytes()),
        "common_point": None if record.common_point is None else to_hex(record.common_point.to_bytes()),
        "encrypted_point": None if record.encrypted_point is None else to_hex(record.encrypted_point.to_bytes()),
        "versions": [
            {
                "hash": to_hex(v.hash),
                "id_numbers": {to_hex(node): to_hex(scalar_bytes(x)) for node, x in sorted(v.id_numbers.items())},
                **({"commitments": [to_hex(c.to_bytes()) for c in v.commitments]} if v.commitments else {}),
                **({"epoch": v.epoch} if v.epoch else {}),
                **({} if v.active else {"inactive": True}),
            }
            for v in record.versions
        ],
    }
    if record.owner is not None:
        layout["owner"] = to_hex(record.owner)
    return layout


def _encode_pending(pending: PendingDocumentKey) -> bytes:
    record = {
        "common_point": to_hex(pending.common_point.to_bytes()),
        "encrypted_point": to_hex(pending.encrypted_point.to_bytes()),
        "coordinator": to_hex(pending.coordinator),
        "txs": [to_hex(tx) for tx in pending.txs],
        "expiry": pending.expiry,
    }
    return json.dumps(record, separators=(",", ":")).encode("utf-8")


def _decode_pending(key_id: bytes, raw: bytes) -> PendingDocumentKey:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Corrupt("not JSON") from exc
    if not isinstance(data, dict) or set(data) != {"common_point", "encrypted_point", "coordinator", "txs", "expiry"}:
        raise _Corrupt("unexpected pending fields")
    if not isinstance(data["txs"], list):
        raise _Corrupt("txs is not a list")
    try:
        return PendingDocumentKey(
            key_id=key_id,
            common_point=_point(data["common_point"], "common_point"),
            encrypted_point=_point(data["encrypted_point"], "encrypted_point"),
            coordinator=_unhex(data["coordinator"], "coordinator", 64),
            txs=tuple(_unhex(tx, "a transaction id", 32) for tx in data["txs"]),
            expiry=data["expiry"],
        )
    except InternalError as exc:
        raise _Corrupt("inconsistent pending document key") from exc


def _fresh_marker(from_schema: int) -> dict[str, Any]:
    """A migration marker before the first step: no record looked at, none counted yet."""
    return {"from_schema": from_schema, "started": time.time(), "after": "", "total": None, "visited": 0,
            "converted": 0, "kept": 0}


@dataclass(frozen=True)
class MigrationStep:
    """What one :meth:`SqliteKeyStorage.migrate_step` did.

    :param converted: records rewritten in the compact format by this step.
    :param kept: records this step left as they were: they fail their check (MAC or format), reads
        report them as damaged as before, and ``node verify`` lists them.
    :param done: no record is left to look at: the marker is gone (also True when there was no migration).
    :param remaining: about how many records are still to be looked at (0 when done).
    """

    converted: int
    kept: int
    done: bool
    remaining: int


class SqliteKeyStorage:
    """Key shares in one SQLite file: WAL, ``synchronous=FULL``, one row per key, shares sealed.

    :param path: the database file, or a directory (then :data:`DB_FILENAME` inside it). Missing
        parent directories are created (mode 0700), the file with mode 0600.
    :param node_secret: the node's private key; the storage keys are derived from it with HKDF.
    :raises DatabaseError: the file cannot be opened, has a newer schema, or was written under a
        different node secret.
    """

    def __init__(self, path: Path | str, node_secret: int) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / DB_FILENAME
        self.path = path
        self._keys = _Keys(node_secret)
        self._lock = threading.Lock()
        # How many records there are: counted once (a scan of the whole table, seconds at a million
        # keys), then kept by this object's own writes; None: not counted yet, or a write's outcome
        # unknown. A node is its database's only writer while it runs.
        self._count: int | None = None
        # The node table (node/index), read at open, kept by this object's writes.
        self._nodes: dict[int, bytes] = {}
        self._index: dict[bytes, int] = {}
        # The records migration marker (META_RECORDS_MIGRATION) as last written, None: no migration.
        self._migration: dict[str, Any] | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Create the file ourselves so it (and the -wal/-shm files SQLite copies the mode to)
            # is private to the node's user from the first byte.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            self._db: sqlite3.Connection | None = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
        except (OSError, sqlite3.Error) as exc:
            raise DatabaseError(f"cannot open {path}: {exc.__class__.__name__}") from exc
        try:
            self._setup()
        except BaseException:
            self._db.close()
            self._db = None
            raise

    def __repr__(self) -> str:
        return f"SqliteKeyStorage({str(self.path)!r})"

    # -- schema -----------------------------------------------------------------------------

    def _setup(self) -> None:
        db = self._conn()
        check = self._keys.record_mac(b"", _KEY_CHECK)
        upgraded = 0
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise DatabaseError(f"{self.path}: cannot switch to WAL mode")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN IMMEDIATE")
            try:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)")
                    db.execute(_CREATE_KEYS)
                    db.execute(_CREATE_NODES)
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('key_check', ?)", (check,))
                    db.execute(_CREATE_PENDING)
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                elif version in (1, 2, 3, 4, 5):
                    # 1: before two-phase storing: add the pending document keys. 2-4: records without
                    # "owner", "commitments", "epoch" or "inactive" read as they are. 5: the V3 JSON
                    # records become compact ones, in the background (migrate_step), once the key
                    # check passed: here only the tables and the marker, in this short transaction.
                    row = db.execute("SELECT value FROM meta WHERE name = 'key_check'").fetchone()
                    if row is None or not hmac.compare_digest(bytes(row[0]), check):
                        raise DatabaseError(f"{self.path} was written under a different node secret")
                    db.execute(_CREATE_PENDING)
                    db.execute(_CREATE_NODES)
                    self._write_marker(db, _fresh_marker(version))
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    upgraded = version
                elif version != SCHEMA_VERSION:
                    raise DatabaseError(
                        f"{self.path}: schema version {version}, this program reads {SCHEMA_VERSION}"
                    )
                row = db.execute("SELECT value FROM meta WHERE name = 'key_check'").fetchone()
                self._migration = self._read_marker(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            if row is None or not hmac.compare_digest(bytes(row[0]), check):
                raise DatabaseError(f"{self.path} was written under a different node secret")
            if upgraded:
                log.info("%s: schema %d -> %d: the tables are ready; the records are converted to the compact "
                         "format in the background while the node serves", self.path, upgraded, SCHEMA_VERSION)
            elif self._migration is not None:
                log.info("%s: the conversion of the records to the compact format of schema %d goes on where it "
                         "stopped (%d records done so far)", self.path, SCHEMA_VERSION,
                         self._migration.get("visited", 0))
            self._nodes = _read_nodes(db, self._keys)
        except sqlite3.Error as exc:
            raise DatabaseError(f"{self.path}: {exc.__class__.__name__}: {exc}") from exc
        self._index = {node: index for index, node in self._nodes.items()}

    # -- the background migration to schema 6 -----------------------------------------------------

    def _read_marker(self, db: sqlite3.Connection) -> dict[str, Any] | None:
        """The migration marker; None without one. One that fails authentication or does not parse
        is logged and replaced by a fresh one (the migration starts over from the first key: a
        step converts only records still in the old format, so going over them again loses nothing).
        """
        row = db.execute("SELECT value FROM meta WHERE name = ?", (META_RECORDS_MIGRATION,)).fetchone()
        if row is None:
            return None
        blob = bytes(row[0])
        value = blob[:-32]
        try:
            if len(blob) < 32 or not hmac.compare_digest(self._keys.meta_mac(META_RECORDS_MIGRATION, value),
                                                         blob[-32:]):
                raise ValueError("fails authentication (tampered)")
            marker = json.loads(value)
            if not isinstance(marker, dict):
                raise ValueError("is corrupt")
            bytes.fromhex(marker["after"])
            int(marker["visited"]), int(marker["converted"]), int(marker["kept"])
            float(marker["started"])
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("%s: the stored %s %s: the conversion of the records starts over from the first key",
                        self.path, META_RECORDS_MIGRATION, exc if isinstance(exc, ValueError) else "is corrupt")
            return _fresh_marker(0)
        return marker

    def _write_marker(self, db: sqlite3.Connection, marker: dict[str, Any] | None) -> None:
        if marker is None:
            db.execute("DELETE FROM meta WHERE name = ?", (META_RECORDS_MIGRATION,))
            return
        raw = json.dumps(marker, separators=(",", ":")).encode("utf-8")
        db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                   (META_RECORDS_MIGRATION, raw + self._keys.meta_mac(META_RECORDS_MIGRATION, raw)))

    @property
    def migrating(self) -> bool:
        """Whether records of schema <= 5 may still wait for :meth:`migrate_step` (the marker is there)."""
        return self._migration is not None

    def records_to_migrate(self) -> int | None:
        """About how many records the background migration has still to look at: the records counted
        by its first step less those it passed, at least 1 until it is done (0: none; None: not
        counted yet, the first :meth:`migrate_step` counts them)."""
        marker = self._migration
        if marker is None:
            return 0
        if marker.get("total") is None:
            return None
        return max(int(marker["total"]) - int(marker["visited"]), 1)  # 0 only once done

    def migrate_step(self, limit: int = MIGRATION_STEP) -> MigrationStep:
        """Convert up to ``limit`` records of the V3 JSON format to the compact one, in one
        transaction under the storage lock, resuming after the last key id the previous step passed
        (kept in the marker, written in the same transaction: a crash between or inside steps loses
        nothing and repeats nothing). Records in the compact format already (a write since) are
        passed over. A record is authenticated (its MAC) and parsed; its sealed shares are copied as
        they are (their associated data, key id and version hash, does not change), so no share is
        opened. A record that fails is kept as it is, V3 JSON under its old MAC: reads report it as
        before, nothing is lost and nothing unauthenticated gets a new MAC. The step that finds no
        record left deletes the marker and logs the totals. The file is not vacuumed (that would
        hold the database for the length of a copy): the old records' pages are free pages that new
        records reuse (``node verify`` shows them).

        Usable without a node: call it until :attr:`MigrationStep.done`.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InternalError("a migration step converts at least one record")
        # The first step counts the records, on a connection of its own: a scan of the whole table
        # (seconds at a million keys) that holds neither the lock nor the write transaction.
        pending = self._migration
        counted = self._count_apart() if pending is not None and pending.get("total") is None else None
        with self._lock:
            if self._migration is None:
                return MigrationStep(0, 0, True, 0)
            db = self._conn()
            try:
                with self._writing(db):
                    marker = self._read_marker(db)
                    if marker is not None:  # else another connection finished it (nothing written)
                        step = self._migrate_rows(db, marker, limit, counted)
                        failpoints.hit(FP_MIGRATION_STEP_WRITTEN)
            except sqlite3.Error as exc:
                raise DatabaseError(f"{self.path}: a migration step failed: {exc.__class__.__name__}: {exc}") from exc
            if marker is None:
                self._migration = None
                return MigrationStep(0, 0, True, 0)
            failpoints.hit(FP_MIGRATION_STEP_COMMITTED)
            self._migration = None if step.done else marker
            if step.done:
                self._log_done(db, marker)
            return step

    def _count_apart(self) -> int | None:
        """The records counted on a read-only connection of its own (None: it could not)."""
        try:
            with contextlib.closing(sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True,
                                                    timeout=10.0)) as db:
                return int(db.execute("SELECT COUNT(*) FROM keys").fetchone()[0])
        except sqlite3.Error:
            return None

    def _migrate_rows(self, db: sqlite3.Connection, marker: dict[str, Any], limit: int,
                      counted: int | None = None) -> MigrationStep:
        """One step's work inside its transaction; updates ``marker`` (written, or deleted when done)."""
        if marker.get("total") is None:  # the first step: counted before, or here (as key_count does)
            marker["total"] = (counted if counted is not None
                               else int(db.execute("SELECT COUNT(*) FROM keys").fetchone()[0]))
            if self._count is None:
                self._count = marker["total"]
            log.info("%s: converting %d records to the compact format of schema %d in the background, %d a step",
                     self.path, marker["total"], SCHEMA_VERSION, limit)
        rows = db.execute("SELECT key_id, record, mac FROM keys WHERE key_id > ? ORDER BY key_id LIMIT ?",
                          (bytes.fromhex(marker["after"]), limit)).fetchall()
        converted = kept = 0
        for key_id, record, mac in rows:
            key_id = bytes(key_id)
            raw = record.encode("utf-8") if isinstance(record, str) else bytes(record)
            if raw[:1] != b"{":
                continue  # compact already: written since the migration began
            try:
                if not hmac.compare_digest(self._keys.record_mac(key_id, raw), bytes(mac)):
                    raise _Corrupt("fails authentication")
                packed, new_mac = self._row(db, key_id, _parse_v3(raw))
            except (_Corrupt, InternalError, DatabaseError) as exc:
                kept += 1
                log.warning("%s: the record of key 0x%s is kept in its old format: %s", self.path, key_id.hex(),
                            exc.detail if isinstance(exc, KeyServerError) else exc)
                continue
            db.execute("UPDATE keys SET record = ?, mac = ? WHERE key_id = ?", (packed, new_mac, key_id))
            converted += 1
        marker["visited"] = int(marker["visited"]) + len(rows)
        marker["converted"] = int(marker["converted"]) + converted
        marker["kept"] = int(marker["kept"]) + kept
        if rows:
            marker["after"] = bytes(rows[-1][0]).hex()
        done = len(rows) < limit or db.execute("SELECT 1 FROM keys WHERE key_id > ? LIMIT 1",
                                                 (bytes.fromhex(marker["after"]),)).fetchone() is None
        self._write_marker(db, None if done else marker)
        remaining = 0 if done else max(int(marker["total"]) - marker["visited"], 1)
        return MigrationStep(converted, kept, done, remaining)

    def _log_done(self, db: sqlite3.Connection, marker: Mapping[str, Any]) -> None:
        try:
            free = int(db.execute("PRAGMA freelist_count").fetchone()[0]) * int(
                db.execute("PRAGMA page_size").fetchone()[0])
        except sqlite3.Error:
            free = 0
        log.info("%s: the records are in the compact format of schema %d: %d converted, %d kept in the old format "
                 "(they fail their check: node verify lists them), %.1f s since the migration began; %.1f MB of "
                 "free pages stay in the file and are reused by new records", self.path, SCHEMA_VERSION,
                 marker["converted"], marker["kept"], time.time() - float(marker.get("started", time.time())),
                 free / 1e6)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise DatabaseError("the key storage is closed")
        return self._db

    # -- KeyStorage -------------------------------------------------------------------------

    def _node_indexes(self, db: sqlite3.Connection, records: Iterable[_RawRecord]) -> None:
        """Give every node id of ``records`` an index, adding the new ones to the node table (inside
        the caller's transaction: :meth:`_transaction` reloads the table if it rolls back)."""
        for record in records:
            for node in sorted(record.node_ids() - self._index.keys()):
                row = db.execute("SELECT idx, mac FROM nodes WHERE node_id = ?", (node,)).fetchone()
                if row is not None:  # another connection added it, or its row fails its MAC
                    if not hmac.compare_digest(self._keys.node_mac(row[0], node), bytes(row[1])):
                        raise DatabaseError(f"the node table row of node 0x{node.hex()[:16]}.. fails "
                                            "authentication (tampered; node verify lists it)")
                    self._nodes[row[0]] = node
                    self._index[node] = row[0]
                    continue
                index = int(db.execute("SELECT COALESCE(MAX(idx), 0) + 1 FROM nodes").fetchone()[0])
                if index > 0xFFFF:
                    raise DatabaseError("the node table is full (65535 node ids)")
                db.execute("INSERT INTO nodes (idx, node_id, mac) VALUES (?, ?, ?)",
                           (index, node, self._keys.node_mac(index, node)))
                self._nodes[index] = node
                self._index[node] = index

    def _row(self, db: sqlite3.Connection, key_id: bytes, record: _RawRecord) -> tuple[bytes, bytes]:
        """``(record, mac)`` of a compact record, its new node ids added to the node table."""
        self._node_indexes(db, (record,))
        packed = _pack(record, self._index)
        return packed, self._keys.record_mac(key_id, packed)

    def insert(self, key_id: bytes, share: KeyShare) -> None:
        key_id = _check_key_id(key_id)
        sealed = _sealed_record(self._keys, key_id, share)
        try:
            with self._transaction("insert", key_id) as db:
                db.execute("INSERT INTO keys (key_id, record, mac) VALUES (?, ?, ?)",
                           (key_id, *self._row(db, key_id, sealed)))
                if self._count is not None:  # under the lock; undone below if the commit fails
                    self._count += 1
        except DatabaseError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):  # nothing written: the count holds
                raise ServerKeyAlreadyGenerated() from exc
            self._count = None
            raise

    def insert_many(self, items: Iterable[tuple[bytes, KeyShare]]) -> int:
        """Store new records in one transaction (a bulk load: one fsync, not one per key); the
        records are encoded, sealed and authenticated exactly as :meth:`insert` does.

        :returns: how many were stored.
        :raises ServerKeyAlreadyGenerated: a key id already has a record (or comes twice): none is stored.
        """
        sealed = [(key_id, _sealed_record(self._keys, key_id, share))
                  for key_id, share in ((_check_key_id(k), s) for k, s in items)]
        if not sealed:
            return 0
        try:
            with self._transaction("bulk insert", sealed[0][0]) as db:
                rows = [(key_id, *self._row(db, key_id, record)) for key_id, record in sealed]
                db.executemany("INSERT INTO keys (key_id, record, mac) VALUES (?, ?, ?)", rows)
                if self._count is not None:  # under the lock; undone below if the commit fails
                    self._count += len(rows)
        except DatabaseError as exc:
            self._count = None
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise ServerKeyAlreadyGenerated() from exc
            raise
        return len(sealed)

    def update(self, key_id: bytes, share: KeyShare) -> None:
        key_id = _check_key_id(key_id)
        sealed = _sealed_record(self._keys, key_id, share)
        with self._transaction("update", key_id) as db:
            record, mac = self._row(db, key_id, sealed)
            updated = db.execute("UPDATE keys SET record = ?, mac = ? WHERE key_id = ?",
                                 (record, mac, key_id)).rowcount
            if updated == 0:
                raise ServerKeyIsNotFound()  # rolls back the node ids it may have added

    def get(self, key_id: bytes) -> KeyShare | None:
        key_id = bytes(key_id)
        with self._lock:
            try:
                row = self._conn().execute("SELECT record, mac FROM keys WHERE key_id = ?", (key_id,)).fetchone()
            except sqlite3.Error as exc:
                raise _database_error("read", key_id, exc) from exc
        if row is None:
            return None
        return self._open_record(key_id, row)

    def _open_record(self, key_id: bytes, row: Any, db: sqlite3.Connection | None = None) -> KeyShare:
        """The record of a row; ``db`` when the caller holds the lock. A node index this object has
        not seen (another process wrote to the database: never while a node runs it) makes it read
        the node table again, once."""
        try:
            return _open_record(self._keys, self._nodes, key_id, row)
        except DatabaseError as exc:
            if not isinstance(exc.__cause__, _UnknownNode):
                raise
        try:
            if db is None:
                with self._lock:
                    self._reload_nodes(self._conn())
            else:
                self._reload_nodes(db)
        except sqlite3.Error as exc:
            raise _database_error("read", key_id, exc) from exc
        return _open_record(self._keys, self._nodes, key_id, row)

    def contains(self, key_id: bytes) -> bool:
        with self._lock:
            try:
                row = self._conn().execute("SELECT 1 FROM keys WHERE key_id = ?", (bytes(key_id),)).fetchone()
            except sqlite3.Error as exc:
                raise _database_error("read", bytes(key_id), exc) from exc
        return row is not None

    def remove(self, key_id: bytes) -> None:
        key_id = bytes(key_id)
        try:
            with self._transaction("delete", key_id) as db:
                gone = db.execute("DELETE FROM keys WHERE key_id = ?", (key_id,)).rowcount
                db.execute("DELETE FROM pending WHERE key_id = ?", (key_id,))
                if self._count is not None:  # under the lock; undone below if the commit fails
                    self._count -= gone
        except BaseException:
            self._count = None
            raise

    def key_ids(self) -> Iterator[bytes]:
        # A snapshot: a live cursor must not outlive the lock or cross threads.
        with self._lock:
            try:
                rows = self._conn().execute("SELECT key_id FROM keys ORDER BY key_id").fetchall()
            except sqlite3.Error as exc:
                raise DatabaseError(f"cannot list keys: {exc.__class__.__name__}: {exc}") from exc
        return iter([bytes(r[0]) for r in rows])

    def key_page(self, after: bytes, limit: int) -> list[bytes]:
        with self._lock:
            try:
                rows = self._conn().execute(
                    "SELECT key_id FROM keys WHERE key_id > ? ORDER BY key_id LIMIT ?", (bytes(after), limit)
                ).fetchall()
            except sqlite3.Error as exc:
                raise DatabaseError(f"cannot list keys: {exc.__class__.__name__}: {exc}") from exc
        return [bytes(r[0]) for r in rows]

    def key_count(self) -> int:
        """Counted by a scan of the table the first time only, then kept by this object's writes
        (every metrics scrape and status page asks; a scan reads every leaf page of the table)."""
        with self._lock:
            if self._count is None:
                try:
                    row = self._conn().execute("SELECT COUNT(*) FROM keys").fetchone()
                except sqlite3.Error as exc:
                    raise DatabaseError(f"cannot count keys: {exc.__class__.__name__}: {exc}") from exc
                self._count = int(row[0])
            return self._count

    def disk_bytes(self) -> int:
        """The database file with its write-ahead log and shared-memory index (absent ones count 0)."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    # -- pending document keys ---------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, action: str, key_id: bytes) -> Iterator[sqlite3.Connection]:
        """One write transaction (taken at once, so a read inside it is not stale), under the lock."""
        with self._lock:
            db = self._conn()
            try:
                with self._writing(db):
                    yield db
            except sqlite3.Error as exc:
                raise _database_error(action, key_id, exc) from exc

    @contextlib.contextmanager
    def _writing(self, db: sqlite3.Connection) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` on ``db`` (the caller holds the lock); on any failure
        the transaction is rolled back and the node table read again (node ids it added are gone)."""
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._reload_nodes(db)
            raise

    def _reload_nodes(self, db: sqlite3.Connection) -> None:
        self._nodes = _read_nodes(db, self._keys)
        self._index = {node: index for index, node in self._nodes.items()}

    def _read_pending(self, db: sqlite3.Connection, key_id: bytes) -> PendingDocumentKey | None:
        row = db.execute("SELECT record, mac FROM pending WHERE key_id = ?", (key_id,)).fetchone()
        return None if row is None else _open_pending(self._keys, key_id, row)

    def _write_pending(self, db: sqlite3.Connection, pending: PendingDocumentKey) -> None:
        record = _encode_pending(pending)
        db.execute(
            "INSERT OR REPLACE INTO pending (key_id, record, mac) VALUES (?, ?, ?)",
            (pending.key_id, record.decode("utf-8"), self._keys.pending_mac(pending.key_id, record)),
        )

    def _read_record(self, db: sqlite3.Connection, key_id: bytes) -> KeyShare | None:
        row = db.execute("SELECT record, mac FROM keys WHERE key_id = ?", (key_id,)).fetchone()
        return None if row is None else self._open_record(key_id, row, db)

    def put_pending(self, pending: PendingDocumentKey) -> None:
        with self._transaction("prepare a document key of", pending.key_id) as db:
            if db.execute("SELECT 1 FROM keys WHERE key_id = ?", (pending.key_id,)).fetchone() is None:
                raise ServerKeyIsNotFound()
            self._write_pending(db, pending)

    def get_pending(self, key_id: bytes) -> PendingDocumentKey | None:
        key_id = bytes(key_id)
        with self._lock:
            try:
                return self._read_pending(self._conn(), key_id)
            except sqlite3.Error as exc:
                raise _database_error("read the pending document key of", key_id, exc) from exc

    def pending_documents(self) -> list[PendingDocumentKey]:
        with self._lock:
            db = self._conn()
            try:
                ids = [bytes(r[0]) for r in db.execute("SELECT key_id FROM pending ORDER BY key_id").fetchall()]
                found = [self._read_pending(db, key_id) for key_id in ids]
            except sqlite3.Error as exc:
                raise DatabaseError(f"cannot list pending document keys: {exc.__class__.__name__}: {exc}") from exc
        return [p for p in found if p is not None]

    def commit_pending(self, key_id: bytes, tx: bytes | None = None) -> KeyShare | None:
        key_id = _check_key_id(key_id)
        with self._transaction("commit the document key of", key_id) as db:
            pending = self._read_pending(db, key_id)
            if pending is None or (tx is not None and tx not in pending.txs):
                return None
            share = self._read_record(db, key_id)
            if share is None:
                raise ServerKeyIsNotFound()
            committed = _committed(share, pending)
            record, mac = self._row(db, key_id, _sealed_record(self._keys, key_id, committed))
            db.execute("UPDATE keys SET record = ?, mac = ? WHERE key_id = ?", (record, mac, key_id))
            db.execute("DELETE FROM pending WHERE key_id = ?", (key_id,))
            return committed

    def remove_pending_tx(self, key_id: bytes, tx: bytes) -> PendingDocumentKey | None:
        key_id = bytes(key_id)
        with self._transaction("abort a document key of", key_id) as db:
            pending = self._read_pending(db, key_id)
            if pending is None:
                return None
            left = pending.without(tx)
            if left is None:
                db.execute("DELETE FROM pending WHERE key_id = ?", (key_id,))
            elif left != pending:
                self._write_pending(db, left)
            return left

    def drop_pending(self, key_id: bytes, expected: PendingDocumentKey | None = None) -> bool:
        key_id = bytes(key_id)
        with self._transaction("drop the pending document key of", key_id) as db:
            if expected is not None and self._read_pending(db, key_id) != expected:
                return False
            return db.execute("DELETE FROM pending WHERE key_id = ?", (key_id,)).rowcount > 0

    def get_meta(self, name: str) -> Any:
        name = _check_meta_name(name)
        with self._lock:
            try:
                row = self._conn().execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
            except sqlite3.Error as exc:
                raise DatabaseError(f"cannot read {name}: {exc.__class__.__name__}: {exc}") from exc
        if row is None:
            return None
        blob = bytes(row[0])
        value, mac = blob[:-32], blob[-32:]
        if len(blob) < 32 or not hmac.compare_digest(self._keys.meta_mac(name, value), mac):
            raise DatabaseError(f"the stored {name} fails authentication (tampered)")
        try:
            return json.loads(value)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DatabaseError(f"the stored {name} is corrupt") from exc

    def put_meta(self, name: str, value: Any) -> None:
        name = _check_meta_name(name)
        with self._lock:
            try:
                if value is None:
                    self._conn().execute("DELETE FROM meta WHERE name = ?", (name,))
                else:
                    raw = json.dumps(value, separators=(",", ":")).encode("utf-8")
                    self._conn().execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                                         (name, raw + self._keys.meta_mac(name, raw)))
            except sqlite3.Error as exc:
                raise DatabaseError(f"cannot write {name}: {exc.__class__.__name__}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _authentic(keys: _Keys, nodes: Mapping[int, bytes], key_id: bytes, row: Any) -> _RawRecord:
    """The record of a ``(record, mac)`` row, authenticated and parsed (no share opened)."""
    record = row[0].encode("utf-8") if isinstance(row[0], str) else bytes(row[0])
    if not hmac.compare_digest(keys.record_mac(key_id, record), bytes(row[1])):
        raise DatabaseError(f"the record of key 0x{key_id.hex()} fails authentication (tampered)")
    try:
        return _parse(record, nodes)
    except _Corrupt as exc:
        raise DatabaseError(f"the record of key 0x{key_id.hex()} is corrupt: {exc}") from exc


def _open_record(keys: _Keys, nodes: Mapping[int, bytes], key_id: bytes, row: Any) -> KeyShare:
    """The record of a ``(record, mac)`` row, authenticated and decoded (every share opened)."""
    parsed = _authentic(keys, nodes, key_id, row)
    try:
        return _opened(keys, key_id, parsed)
    except _Corrupt as exc:
        raise DatabaseError(f"the record of key 0x{key_id.hex()} is corrupt: {exc}") from exc


def _read_nodes(db: sqlite3.Connection, keys: _Keys, damaged: list[Damage] | None = None) -> dict[int, bytes]:
    """The node table (index -> node id) of a schema-6 database, every row authenticated; a row that
    fails is left out (the records that name it fail then), and reported in ``damaged``."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'nodes'").fetchone() is None:
        return {}
    nodes: dict[int, bytes] = {}
    for index, node, mac in db.execute("SELECT idx, node_id, mac FROM nodes ORDER BY idx"):
        node = node.encode("utf-8") if isinstance(node, str) else bytes(node)
        if isinstance(index, int) and hmac.compare_digest(keys.node_mac(index, node), bytes(mac)):
            nodes[index] = node
        elif damaged is not None:
            damaged.append(Damage("meta", f"node {index}", "a node table row fails authentication (tampered)"))
    return nodes


def _open_pending(keys: _Keys, key_id: bytes, row: Any) -> PendingDocumentKey:
    record = row[0].encode("utf-8") if isinstance(row[0], str) else bytes(row[0])
    if not hmac.compare_digest(keys.pending_mac(key_id, record), bytes(row[1])):
        raise DatabaseError(f"the pending document key of key 0x{key_id.hex()} fails authentication (tampered)")
    try:
        return _decode_pending(key_id, record)
    except _Corrupt as exc:
        raise DatabaseError(f"the pending document key of key 0x{key_id.hex()} is corrupt: {exc}") from exc


def _database_error(action: str, key_id: bytes, exc: sqlite3.Error) -> KeyServerError:
    return DatabaseError(f"cannot {action} key 0x{key_id.hex()}: {exc.__class__.__name__}: {exc}")


# -- checking a database without opening it for use (node backup, restore, verify) -------------


@dataclass(frozen=True)
class Damage:
    """One part of a key database that fails its check.

    :param kind: ``key`` (a record), ``pending`` (a pending document key), ``meta`` (the servers set,
        the admin session mark) or ``database`` (SQLite's own structure).
    :param name: the key id (``0x`` hex: a public identifier), the meta entry, or ``sqlite``.
    :param problem: what is wrong; never any share or secret.
    """

    kind: str
    name: str
    problem: str


@dataclass(frozen=True)
class KeySummary:
    """What a comparison of key versions needs of one record, without its shares.

    :param active: the hash of the active version (None: the record has none yet).
    :param epoch: the active version's epoch (0 without one).
    :param max_epoch: the highest epoch of any version held, active or not.
    :param versions: the hash of every version held, oldest first.
    :param document_key: whether the record holds the key's document key.
    """

    key_id: bytes
    threshold: int
    active: bytes | None
    epoch: int
    max_epoch: int
    versions: tuple[bytes, ...]
    document_key: bool = False

    @classmethod
    def of(cls, key_id: bytes, share: KeyShare) -> KeySummary:
        active = share.last_version if share.usable else None
        return cls(key_id, share.threshold, None if active is None else active.hash,
                   0 if active is None else active.epoch, share.max_epoch, tuple(v.hash for v in share.versions),
                   share.common_point is not None)


@dataclass(frozen=True)
class DatabaseCheck:
    """The outcome of :func:`check_database`: every record that passed, and every part that did not."""

    schema_version: int
    keys: tuple[KeySummary, ...]
    pending: int
    #: The meta entries that pass (:data:`META_SERVERS_SET`, :data:`META_ADMIN_SESSION`,
    #: :data:`META_RECORDS_MIGRATION` while records wait for the background migration), as JSON values.
    meta: Mapping[str, Any]
    damaged: tuple[Damage, ...]
    #: Bytes of free pages in the file (the old records' after the migration to schema 6, deleted
    #: keys'): SQLite reuses them for new records; a backup holds none.
    free_bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.damaged


def backup_mac(node_secret: int, data: bytes) -> bytes:
    """HMAC-SHA256 of a backup's manifest under a key derived from the node secret (node/backup.py)."""
    return hmac.new(_Keys(node_secret).backup, data, "sha256").digest()


def check_database(db: sqlite3.Connection, node_secret: int) -> DatabaseCheck:
    """Check every row of an open key database under ``node_secret``, writing nothing (no
    migration either): SQLite's structure (``PRAGMA quick_check``), the schema version, the
    node-secret check value, and then every record (its MAC, and every share opened), every
    pending document key and every meta entry. Read in one transaction: a running node's
    database is checked as of one moment. A part that fails is reported, and the rest still checked.

    :raises DatabaseError: the file is not a key database, has a newer schema, or was written under
        another node secret: nothing else can be checked then.
    """
    keys = _Keys(node_secret)
    try:
        db.execute("BEGIN")
        try:
            return _check(db, keys)
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot read the key database: {exc.__class__.__name__}: {exc}") from exc


def _check_header(db: sqlite3.Connection, keys: _Keys) -> tuple[int, set[str]]:
    """The schema version and the tables, once the database is one of ours under this node secret."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if version == 0 or not {"meta", "keys"} <= tables:
        raise DatabaseError("not a key database (no schema)")
    if version > SCHEMA_VERSION:
        raise DatabaseError(f"schema version {version}, this program reads {SCHEMA_VERSION}")
    row = db.execute("SELECT value FROM meta WHERE name = 'key_check'").fetchone()
    if row is None:
        raise DatabaseError("no node-secret check value (not a key database, or a damaged one)")
    if not hmac.compare_digest(bytes(row[0]), keys.record_mac(b"", _KEY_CHECK)):
        raise DatabaseError("written under a different node secret")
    return version, tables


def _check_meta(db: sqlite3.Connection, keys: _Keys, damaged: list[Damage]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for name, value in db.execute("SELECT name, value FROM meta WHERE name != 'key_check' ORDER BY name"):
        blob = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if name not in (META_SERVERS_SET, META_ADMIN_SESSION, META_RECORDS_MIGRATION):
            damaged.append(Damage("meta", str(name), "an entry this program does not know"))
        elif len(blob) < 32 or not hmac.compare_digest(keys.meta_mac(name, blob[:-32]), blob[-32:]):
            damaged.append(Damage("meta", name, f"the stored {name} fails authentication (tampered)"))
        else:
            try:
                meta[name] = json.loads(blob[:-32])
            except (ValueError, UnicodeDecodeError):
                damaged.append(Damage("meta", name, f"the stored {name} is corrupt"))
    return meta


def _check(db: sqlite3.Connection, keys: _Keys) -> DatabaseCheck:
    version, tables = _check_header(db, keys)
    damaged: list[Damage] = []
    found = [str(r[0]) for r in db.execute("PRAGMA quick_check").fetchall()]
    if found != ["ok"]:
        damaged.append(Damage("database", "sqlite", "; ".join(found[:5])))
    free = int(db.execute("PRAGMA freelist_count").fetchone()[0]) * int(db.execute("PRAGMA page_size").fetchone()[0])
    summaries: list[KeySummary] = []
    pending = 0
    meta: dict[str, Any] = {}
    try:
        nodes = _read_nodes(db, keys, damaged)
        for key_id, record, mac in db.execute("SELECT key_id, record, mac FROM keys ORDER BY key_id"):
            key_id = bytes(key_id)
            try:
                summaries.append(KeySummary.of(key_id, _open_record(keys, nodes, key_id, (record, mac))))
            except DatabaseError as exc:
                damaged.append(Damage("key", "0x" + key_id.hex(), exc.detail or str(exc)))
        if "pending" in tables:
            for key_id, record, mac in db.execute("SELECT key_id, record, mac FROM pending ORDER BY key_id"):
                key_id = bytes(key_id)
                try:
                    _open_pending(keys, key_id, (record, mac))
                    pending += 1
                except DatabaseError as exc:
                    damaged.append(Damage("pending", "0x" + key_id.hex(), exc.detail or str(exc)))
        meta = _check_meta(db, keys, damaged)
    except sqlite3.DatabaseError as exc:  # a page SQLite cannot read: what was read so far is reported
        damaged.append(Damage("database", "sqlite", f"{exc.__class__.__name__}: {exc}"))
    return DatabaseCheck(version, tuple(summaries), pending, MappingProxyType(meta), tuple(damaged), free)


def dump_records(db: sqlite3.Connection, node_secret: int, key_ids: Iterable[bytes] | None = None
                 ) -> Iterator[tuple[bytes, dict[str, Any] | str]]:
    """Every record of an open key database (or those of ``key_ids``), by key id, in Parity's V3
    JSON layout (§5.2, with this program's extra fields) and without any secret share: the record
    as an operator may read it, whatever its format on disk. Each record is authenticated (its
    MAC) first; no share is opened. Read in one transaction, writing nothing.

    :returns: ``(key_id, layout)``, or ``(key_id, problem)`` for a record that fails or is absent.
    :raises DatabaseError: the file is not a key database, has a newer schema, or was written under
        another node secret.
    """
    keys = _Keys(node_secret)
    try:
        db.execute("BEGIN")
        try:
            _check_header(db, keys)
            nodes = _read_nodes(db, keys)
            if key_ids is None:
                rows: Iterable[Any] = db.execute("SELECT key_id, record, mac FROM keys ORDER BY key_id")
            else:
                rows = ((key_id, *(db.execute("SELECT record, mac FROM keys WHERE key_id = ?",
                                              (bytes(key_id),)).fetchone() or (None, None)))
                        for key_id in key_ids)
            for key_id, record, mac in rows:
                key_id = bytes(key_id)
                if record is None:
                    yield key_id, "no record of this key"
                    continue
                try:
                    yield key_id, _v3_layout(_authentic(keys, nodes, key_id, (record, mac)))
                except DatabaseError as exc:
                    yield key_id, exc.detail or str(exc)
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot read the key database: {exc.__class__.__name__}: {exc}") from exc
