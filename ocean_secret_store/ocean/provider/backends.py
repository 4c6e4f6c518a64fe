"""Access backends of the provider: how it turns a DDO's ``encryptedFiles`` into the files list
(with URLs) using its own account.

Two backends, chosen by name in the provider's config and registered through the ``ocean``
hooks (``ocean_access_backends``):

* ``"secret-store"`` (:class:`SecretStoreBackend`): Brizo's way (ocean.md §3.1). The provider
  retrieves the document key from the Secret Store cluster with its own account; the cluster's
  ACL (``AccessSecretStoreCondition.checkPermissions``) lets it in because the publisher listed
  it as a DID provider.
* ``"provider-key"`` (:class:`ProviderKeyBackend`): Ocean V3's way (ocean.md §3.4). The files
  list was encrypted with Parity ECIES (auth data ``00 00``) to the provider's public key, which
  the provider publishes on its info endpoint; only the provider's private key decrypts it.

Both return the parsed files list; the caller picks ``files[index]["url"]``. Errors never
carry the decrypted text or the URLs.

Both also encrypt a files list on a publisher's behalf (:class:`EncryptingBackend`, Brizo's
``services/publish``): the Secret Store one generates the server key and stores the document key
with the provider's account as the key's author and the publisher named as its owner-to-be (so the
key servers serve consumers of the DID the publisher registers, docs/security.md finding 1); the
provider-key one encrypts to the provider's own public key. A third-party backend without
``encrypt_files`` serves consume only.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ...client.client import SecretStoreClient
from ...client.local import account_public
from ...crypto import document as _document
from ...crypto import ecies
from ...crypto.curve import Point, Scalar
from ...exceptions import DecryptionFailed, OceanError
from ...protocol.batch import MAX_BATCH
from ...protocol.hexcodec import parse_hex, to_hex
from ..ddo import files_from_plaintext

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from ..ddo import DDO

__all__ = ["AccessBackend", "EncryptingBackend", "KeyBatcher", "ProviderKeyBackend", "SecretStoreBackend",
           "encrypted_files_bytes"]


@runtime_checkable
class AccessBackend(Protocol):
    """What the provider asks for an asset's files (spec: engineer C's backends, registered via B's hook)."""

    name: str

    def file_urls(self, ddo: DDO, provider_account: LocalAccount) -> list[dict[str, Any]]:
        """The asset's files list with URLs, decrypted with the provider's own account."""
        ...


@runtime_checkable
class EncryptingBackend(AccessBackend, Protocol):
    """A backend that can also encrypt a files list for a publisher (the provider's publish route)."""

    def encrypt_files(self, document_id: bytes, document: str, provider_account: LocalAccount,
                      threshold: int, *, owner: str | None = None) -> str:
        """``document`` (the files list's JSON text) encrypted under the 32-byte ``document_id``
        with the provider's account, as the ``encryptedFiles`` hex the backend's ``file_urls`` reads;
        ``owner`` is the verified publisher's address, for a backend that can name it (the Secret
        Store's owner-to-be)."""
        ...


def _encrypted_text(ddo: DDO) -> str:
    encrypted = ddo.encrypted_files
    if not encrypted:
        raise OceanError(f"the DDO of {ddo.did} has no attributes.encryptedFiles: nothing to decrypt")
    return str(encrypted)


def encrypted_files_bytes(encrypted: str) -> bytes:
    """The ciphertext of an ``encryptedFiles`` value: ``0x`` hex, bare hex, or ocean-provider's
    JSON ``{"encryptedDocument": "0x..."}``."""
    text = encrypted.strip()
    if text.startswith("{"):
        try:
            text = str(json.loads(text)["encryptedDocument"])
        except (ValueError, KeyError, TypeError) as exc:
            raise OceanError("encryptedFiles is JSON without an encryptedDocument hex string") from exc
    return parse_hex(text, "encryptedFiles", prefix=None, error=OceanError)


@dataclass(eq=False, slots=True)
class _Waiter:
    key_id: bytes
    result: Point | BaseException | None = None
    done: bool = False


class KeyBatcher:
    """Coalesces concurrent document key recoveries (blocking callers, one per thread) into batches.

    A caller's key waits up to ``window`` seconds for others (or until ``max_batch`` are pending);
    one of the waiting callers then fetches them all in one call of ``fetch`` (the SDK's
    ``recover_many``: one request to the cluster, one exchange per member) and each caller gets its
    own result or error. The next batch gathers while one is fetched. ``window = 0`` fetches each
    key alone.
    """

    def __init__(self, fetch: Callable[[list[bytes]], Sequence[Point | BaseException]], *, window: float = 0.003,
                 max_batch: int = 100) -> None:
        if window < 0 or not 1 <= max_batch <= MAX_BATCH:
            raise OceanError(f"key batching: window must be >= 0 and max_batch 1 to {MAX_BATCH}")
        self.fetch = fetch
        self.window = window
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._pending: list[_Waiter] = []
        self._gathering = False
        #: Batches fetched and keys in them (for tests and logs).
        self.batches = 0
        self.keys = 0

    def get(self, key_id: bytes) -> Point:
        """The document key of ``key_id``, or the error the cluster answered for it (raised)."""
        waiter = _Waiter(key_id)
        with self._cond:
            self._pending.append(waiter)
            self._cond.notify_all()
        while True:
            with self._cond:
                while not waiter.done and (self._gathering or waiter not in self._pending):
                    self._cond.wait()
                if waiter.done:
                    break
                self._gathering = True  # this caller gathers and fetches the next batch
                deadline = time.monotonic() + self.window
                while len(self._pending) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
                batch = self._pending[:self.max_batch]
                del self._pending[:self.max_batch]
                self._gathering = False
                self._cond.notify_all()  # a caller still pending gathers the next batch meanwhile
            self._run(batch)
        if isinstance(waiter.result, BaseException):
            raise waiter.result
        if waiter.result is None:
            raise OceanError("a batched key recovery came back without a result")
        return waiter.result

    def _run(self, batch: list[_Waiter]) -> None:
        unique = list(dict.fromkeys(w.key_id for w in batch))
        try:
            fetched = list(self.fetch(unique))
            if len(fetched) != len(unique):
                raise OceanError("a batched key recovery returned another number of results")
            by_key: dict[bytes, Point | BaseException] = dict(zip(unique, fetched, strict=True))
        except Exception as exc:  # noqa: BLE001 -- the batch's failure is every caller's, raised in its own thread
            by_key = dict.fromkeys(unique, exc)
        with self._cond:
            self.batches += 1
            self.keys += len(unique)
            for waiter in batch:
                waiter.result = by_key[waiter.key_id]
                waiter.done = True
            self._cond.notify_all()


class SecretStoreBackend:
    """Decrypt ``encryptedFiles`` through the Secret Store cluster with the provider's account.

    Concurrent consumes of different assets are coalesced (:class:`KeyBatcher`): their document
    keys come from one batch retrieval (``batch_window`` seconds to gather, at most ``batch_max``
    keys; ``batch_window = 0`` asks for each key alone)."""

    name = "secret-store"

    def __init__(self, cluster_urls: Sequence[str] | str, *, timeout: float = 10.0, ca_file: str | None = None,
                 batch_window: float = 0.003, batch_max: int = 100) -> None:
        urls = [cluster_urls] if isinstance(cluster_urls, str) else list(cluster_urls)
        if not urls:
            raise OceanError("the secret-store access backend needs at least one key server URL")
        self.cluster_urls: tuple[str, ...] = tuple(urls)
        self.timeout = timeout
        #: The PEM CA bundle https key servers are checked against (None: the system CAs).
        self.ca_file = ca_file
        # One client (one kept-alive connection pool) per account; the provider has one account.
        self._clients: dict[str, SecretStoreClient] = {}
        self._batchers: dict[str, KeyBatcher] = {}
        self.batch_window = batch_window
        self.batch_max = batch_max
        self._lock = threading.Lock()

    def _client(self, account: LocalAccount) -> SecretStoreClient:
        with self._lock:
            client = self._clients.get(account.address)
            if client is None:
                client = SecretStoreClient(list(self.cluster_urls), account, timeout=self.timeout,
                                           verify=self.ca_file or True)
                self._clients[account.address] = client
            return client

    def _batcher(self, account: LocalAccount) -> KeyBatcher:
        client = self._client(account)
        with self._lock:
            batcher = self._batchers.get(account.address)
            if batcher is None:
                batcher = KeyBatcher(lambda ids: client.recover_many(ids, batch_size=self.batch_max),
                                     window=self.batch_window, max_batch=self.batch_max)
                self._batchers[account.address] = batcher
            return batcher

    def file_urls(self, ddo: DDO, provider_account: LocalAccount) -> list[dict[str, Any]]:
        encrypted = _encrypted_text(ddo)
        if self.batch_window <= 0:
            plain = self._client(provider_account).decrypt_document(ddo.asset_id.hex(), encrypted)
            return files_from_plaintext(plain)
        document_key = self._batcher(provider_account).get(ddo.asset_id)
        data = parse_hex(encrypted, "encryptedFiles", prefix=None, error=OceanError)
        try:
            plain = _document.decrypt_document(document_key, data).decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptionFailed(f"the decrypted files list of {ddo.did} is not UTF-8: wrong document key or "
                                   "corrupted ciphertext") from None
        return files_from_plaintext(plain)

    def encrypt_files(self, document_id: bytes, document: str, provider_account: LocalAccount,
                      threshold: int, *, owner: str | None = None) -> str:
        """Generate the server key ``document_id`` (``threshold``), encrypt, store the document key:
        the provider's account is the key's author (Brizo's ``do_secret_store_encrypt``) and
        ``owner`` (the publisher) its owner-to-be, sent as ``X-Secret-Store-Owner``."""
        return self._client(provider_account).publish_document(document_id.hex(), document, threshold, owner=owner)

    def set_cluster_urls(self, cluster_urls: Sequence[str]) -> bool:
        """Use ``cluster_urls`` from now on (a provider's SIGHUP after a key server was replaced);
        returns whether the list changed. Requests already under way finish on the old clients, which
        are left to close when they are dropped.

        :raises OceanError: an empty list (the old one stays).
        """
        urls = tuple(cluster_urls)
        if not urls:
            raise OceanError("the secret-store access backend needs at least one key server URL")
        with self._lock:
            if urls == self.cluster_urls:
                return False
            self.cluster_urls = urls
            self._clients, self._batchers = {}, {}
        return True

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __repr__(self) -> str:
        return f"SecretStoreBackend({list(self.cluster_urls)!r})"


class ProviderKeyBackend:
    """Decrypt ``encryptedFiles`` made with Parity ECIES to the provider's public key (Ocean V3 style)."""

    name = "provider-key"

    def file_urls(self, ddo: DDO, provider_account: LocalAccount) -> list[dict[str, Any]]:
        blob = encrypted_files_bytes(_encrypted_text(ddo))
        secret = Scalar.from_bytes(bytes(provider_account.key)).value
        try:
            plain = ecies.decrypt(secret, blob)
        except DecryptionFailed as exc:
            raise DecryptionFailed(
                f"encryptedFiles of {ddo.did} was not encrypted to this provider's key ({exc})"
            ) from None
        try:
            text = plain.decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptionFailed(f"the decrypted files list of {ddo.did} is not UTF-8") from None
        return files_from_plaintext(text)

    def encrypt_files(self, document_id: bytes, document: str, provider_account: LocalAccount,
                      threshold: int, *, owner: str | None = None) -> str:
        """Parity ECIES to the provider's own public key; ``document_id``, ``threshold`` and ``owner``
        play no part."""
        return to_hex(ecies.encrypt(account_public(provider_account), document.encode("utf-8")))

    def __repr__(self) -> str:
        return "ProviderKeyBackend()"
