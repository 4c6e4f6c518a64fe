"""Metadata stores for published DDOs: an embedded SQLite file (default) or an Aquarius-compatible service.

Stores are deliberately dumb: they keep and return DDOs by DID, refuse to overwrite one, and
never judge content — whoever resolves a DDO verifies it (``ddo.verify_ddo``), because a remote
store cannot be trusted anyway. They do check that what comes back is the DDO that was asked for.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import requests

from ..exceptions import AssetNotFound, DidMismatch, OceanError
from .ddo import AQUARIUS_ASSETS_PATH, AQUARIUS_DDO_PATH, DDO
from .did import normalize_did

_SCHEMA_VERSION = 1


@runtime_checkable
class MetadataStore(Protocol):
    """Where DDOs are published and resolved, keyed by DID."""

    def publish(self, ddo: DDO) -> None:
        """Store ``ddo``; raises :class:`OceanError` when its DID is already published."""

    def resolve(self, did: str) -> DDO:
        """The DDO of ``did``; raises :class:`AssetNotFound` when there is none."""

    def list_dids(self) -> list[str]:
        """Every published DID, oldest first."""


def _checked(did: str, ddo: DDO) -> DDO:
    if normalize_did(ddo.did) != did:
        raise DidMismatch(f"the metadata store answered {did} with the DDO of {ddo.did}")
    return ddo


class SqliteMetadataStore:
    """DDOs in one SQLite file (WAL), a JSON row per DID.

    A connection is opened per operation, so one store object can be shared between threads
    and several objects or processes can use the same file.
    """

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self._timeout = timeout
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                # WAL lets the provider read while the publisher writes.
                db.execute("PRAGMA journal_mode=WAL")
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, _SCHEMA_VERSION):
                    raise OceanError(f"metadata store {self.path} has schema version {version}, "
                                     f"this code reads version {_SCHEMA_VERSION}")
                db.execute(
                    "CREATE TABLE IF NOT EXISTS ddo ("
                    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                    " did TEXT NOT NULL UNIQUE,"
                    " document TEXT NOT NULL)"
                )
                db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise OceanError(f"cannot open the metadata store {self.path}: {exc}") from None

    def __repr__(self) -> str:
        return f"SqliteMetadataStore({str(self.path)!r})"

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=self._timeout)
        try:
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    def publish(self, ddo: DDO) -> None:
        did = normalize_did(ddo.did)
        try:
            with self._lock, self._connect() as db:
                db.execute("INSERT INTO ddo (did, document) VALUES (?, ?)", (did, ddo.to_json()))
        except sqlite3.IntegrityError:
            raise OceanError(f"asset {did} is already published in {self.path}") from None
        except sqlite3.Error as exc:
            raise OceanError(f"cannot store {did} in the metadata store {self.path}: {exc}") from None

    def resolve(self, did: str) -> DDO:
        did = normalize_did(did)
        try:
            with self._connect() as db:
                row = db.execute("SELECT document FROM ddo WHERE did = ?", (did,)).fetchone()
        except sqlite3.Error as exc:
            raise OceanError(f"cannot read {did} from the metadata store {self.path}: {exc}") from None
        if row is None:
            raise AssetNotFound(f"asset {did} is not in the metadata store {self.path}")
        return _checked(did, DDO.from_json(row[0]))

    def list_dids(self) -> list[str]:
        try:
            with self._connect() as db:
                return [row[0] for row in db.execute("SELECT did FROM ddo ORDER BY seq")]
        except sqlite3.Error as exc:
            raise OceanError(f"cannot list the metadata store {self.path}: {exc}") from None


    # -- what the Aquarius-compatible service needs beyond publish/resolve (ocean/aquarius.py) -----

    def put(self, ddo: DDO) -> bool:
        """Store ``ddo``, replacing the DDO of its DID if there is one (keeping its place in the
        publication order); True if it was new."""
        did = normalize_did(ddo.did)
        try:
            with self._lock, self._connect() as db:
                replaced = db.execute("UPDATE ddo SET document = ? WHERE did = ?", (ddo.to_json(), did)).rowcount
                if not replaced:
                    db.execute("INSERT INTO ddo (did, document) VALUES (?, ?)", (did, ddo.to_json()))
        except sqlite3.Error as exc:
            raise OceanError(f"cannot store {did} in the metadata store {self.path}: {exc}") from None
        return not replaced

    def delete(self, did: str) -> bool:
        """Remove the DDO of ``did``; False if there was none."""
        did = normalize_did(did)
        try:
            with self._lock, self._connect() as db:
                return bool(db.execute("DELETE FROM ddo WHERE did = ?", (did,)).rowcount)
        except sqlite3.Error as exc:
            raise OceanError(f"cannot delete {did} from the metadata store {self.path}: {exc}") from None

    def delete_all(self) -> int:
        """Remove every DDO; how many there were."""
        try:
            with self._lock, self._connect() as db:
                return int(db.execute("DELETE FROM ddo").rowcount)
        except sqlite3.Error as exc:
            raise OceanError(f"cannot empty the metadata store {self.path}: {exc}") from None

    def documents(self) -> list[DDO]:
        """Every stored DDO, oldest first."""
        try:
            with self._connect() as db:
                rows = db.execute("SELECT did, document FROM ddo ORDER BY seq").fetchall()
        except sqlite3.Error as exc:
            raise OceanError(f"cannot list the metadata store {self.path}: {exc}") from None
        return [_checked(did, DDO.from_json(document)) for did, document in rows]


class AquariusMetadataStore:
    """An Aquarius v1 compatible HTTP store.

    ``POST {base}/api/v1/aquarius/assets/ddo`` registers a DDO (201), ``GET .../ddo/{did}``
    returns it (200, 404 when unknown), ``GET {base}/api/v1/aquarius/assets`` lists the DIDs.
    """

    def __init__(self, base_url: str, session: requests.Session | None = None, *,
                 timeout: float = 30.0, verify: bool | str = True) -> None:
        """``verify``: what an https Aquarius is checked against (requests' ``verify``: a CA bundle
        path, e.g. the devnet's ``tls_ca``, or True for the system CAs)."""
        if not base_url.startswith(("http://", "https://")):
            raise OceanError(f"an Aquarius URL must be http(s)://..., got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        self._timeout = timeout
        self._verify = verify

    def __repr__(self) -> str:
        return f"AquariusMetadataStore({self.base_url!r})"

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self.session.request(method, self.base_url + path, timeout=self._timeout, verify=self._verify,
                                        **kwargs)
        except requests.RequestException as exc:
            raise OceanError(f"the metadata store at {self.base_url} did not answer: "
                             f"{type(exc).__name__}") from None

    @staticmethod
    def _reason(response: requests.Response) -> str:
        return f"HTTP {response.status_code}: {response.text[:200]}"

    def _json(self, response: requests.Response, failed: str, not_json: str) -> Any:
        """The JSON body of a 200 answer; ``failed``/``not_json`` complete the error for anything else."""
        if response.status_code != 200:
            raise OceanError(f"the metadata store at {self.base_url} failed to {failed}: {self._reason(response)}")
        try:
            return response.json()
        except ValueError:
            raise OceanError(f"the metadata store at {self.base_url} {not_json} as non-JSON") from None

    def publish(self, ddo: DDO) -> None:
        did = normalize_did(ddo.did)
        # Aquarius versions differ in how they answer a duplicate; ask first, as squid-py did.
        if self._get(did) is not None:
            raise OceanError(f"asset {did} is already published at {self.base_url}")
        response = self._request("POST", AQUARIUS_DDO_PATH, data=ddo.to_json(),
                                 headers={"Content-Type": "application/json"})
        if response.status_code != 201:
            raise OceanError(f"the metadata store at {self.base_url} refused {did}: {self._reason(response)}")

    def _get(self, did: str) -> DDO | None:
        response = self._request("GET", f"{AQUARIUS_DDO_PATH}/{did}")
        if response.status_code == 404:
            return None
        document = self._json(response, f"resolve {did}", f"answered {did}")
        return _checked(did, DDO.from_dict(document))

    def resolve(self, did: str) -> DDO:
        did = normalize_did(did)
        ddo = self._get(did)
        if ddo is None:
            raise AssetNotFound(f"asset {did} is not in the metadata store at {self.base_url}")
        return ddo

    def list_dids(self) -> list[str]:
        response = self._request("GET", AQUARIUS_ASSETS_PATH)
        body = self._json(response, "list assets", "listed assets")
        # Aquarius answers a bare list of DIDs; accept {"ids": [...]} too.
        ids = body.get("ids") if isinstance(body, dict) else body
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise OceanError(f"the metadata store at {self.base_url} listed assets in an unknown shape")
        return ids


def open_metadata_store(location: str | Path, *, verify: bool | str = True) -> MetadataStore:
    """``http(s)://...`` -> :class:`AquariusMetadataStore` (checked against ``verify``, requests'
    meaning); anything else is a SQLite file path."""
    text = str(location).strip()
    if not text:
        raise OceanError("no metadata store location given")
    if text.startswith(("http://", "https://")):
        return AquariusMetadataStore(text, verify=verify)
    return SqliteMetadataStore(text)
