"""SecretStoreClient: Parity's Secret Store HTTP API over kept-alive connections, all crypto done locally.

Parity's own clients needed an Ethereum node for the ``secretstore_*`` RPC helpers (signing the
key id, generating and unwrapping document keys, combining shadows) and sent the account
password to it. Here the account is an eth-account ``LocalAccount`` (or anything with a 32-byte
``.key``) and every such step runs in this process (:mod:`.local`, :mod:`..crypto`); only the
key servers' own endpoints (protocol.md §1.4) go over the wire.

Two layers:

* low-level, one method per endpoint, bytes and :class:`~..crypto.curve.Point` in and out
  (``generate_server_key``, ``store_document_key``, ``retrieve_document_key_shadow``, …);
* high-level :meth:`SecretStoreClient.publish_document` / :meth:`SecretStoreClient.decrypt_document`
  with the same meaning, arguments and ``0x``-hex formats as Ocean's ``secret-store-client-py``
  (ocean.md §2).

Failover (a cluster is several equivalent nodes):

* Retrievals and signing (GET) are read-only, so they try the nodes in turn, starting from the
  node that last answered, and move on only when a node gives no answer (connection refused or
  reset, timeout) or answers 5xx (the node is unable: disconnected from its peers, storage or
  internal error). A 4xx is the cluster's decision (access denied, key not found, bad request)
  and is raised at once: another node would decide the same.
* Bound signatures (docs/http-api.md): by default every request also carries a signature over
  its operation, arguments, a fresh nonce and a short expiry, in two headers beside Parity's
  path, so a request seen once cannot be reused for another operation or replayed. Nodes that
  do not know the headers (Parity) ignore them; ``bound_signatures=False`` leaves them out.
* Owner-to-be (docs/http-api.md): the generations take ``owner=``, an address sent in the opt-in
  header ``X-Secret-Store-Owner`` (and bound into the signature) that the key servers record as
  the key's owner-to-be: served like the author, and accepted as the DID's first registrant by
  the contract ACL. A provider publishing for a publisher names the publisher.
* Generation, storing and the servers-set change (POST) are not idempotent: they go to one node
  only (the node that last answered, initially the first URL) and are never retried; a node that
  cannot be reached raises :class:`~..exceptions.NodeUnreachable` naming its URL.

Nothing secret reaches logs or exception messages: not the account key, document keys or
shadows, and not the request path either, because it carries the requester signature, which
is a bearer credential for its key id (protocol.md §1.3). For the same reason the transport
exception of ``requests`` (whose text contains the path) is summarised, not chained.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final, Self, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

from ..crypto import document as _document
from ..crypto import ecies, schnorr, shadows, signatures
from ..crypto.curve import Point, private_key
from ..crypto.hashes import address_of, checksum_address, servers_set_hash
from ..exceptions import (
    ClientError,
    DecryptionFailed,
    InvalidSignature,
    KeyServerError,
    MalformedHex,
    NodeUnreachable,
    SecretStoreError,
)
from ..protocol import batch as _batch
from ..protocol import bound as _bound
from ..protocol import generation_batch as _generation_batch
from ..protocol import http as _http
from ..protocol import owner as _owner
from ..protocol.hexcodec import parse_hex, to_hex
from ..protocol.http import DocumentKeyShadow
from . import local

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = ["DocumentKeyShadow", "SecretStoreClient", "ethereum_signature"]

log = logging.getLogger(__name__)

#: A requests timeout: seconds for both phases, or ``(connect, read)``.
Timeout: TypeAlias = float | tuple[float, float]

#: Connections kept alive per node; more only matter for many threads sharing one client (a
#: thread that finds the pool empty opens a connection of its own, which is closed afterwards if
#: the pool is full: 32 keeps 16 threads on one node on kept-alive connections).
_POOL_MAXSIZE: Final = 32
#: Server public keys remembered for verifying signatures (public values; bounded, LRU).
_SERVER_KEY_CACHE_SIZE: Final = 1024
#: Key id signatures remembered (deterministic, RFC 6979, and public: they travel in the path; LRU).
_KEY_ID_SIGNATURE_CACHE_SIZE: Final = 1024
_KEY_ID_SIZE: Final = 32
#: Keys a batch retrieval request carries by default (:meth:`SecretStoreClient.retrieve_many`).
DEFAULT_BATCH_SIZE: Final = 100

# Failures after which nothing came back from the node: the next node may still answer.
# ChunkedEncodingError is a connection dropped while the body was read.
_TRANSPORT_ERRORS: Final = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


# -- helpers ---------------------------------------------------------------------------------


def _parse_node_url(url: str) -> tuple[str, str]:
    """``(base, display)``: the URL without trailing ``/``, and the same without credentials."""
    if not isinstance(url, str):
        raise ClientError(f"a key server URL must be a string, got {type(url).__name__}")
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port  # parses the port, which raises for a malformed one
    except ValueError:
        raise ClientError("a key server URL does not parse (expected http(s)://host[:port])") from None
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if port is not None:
        netloc += f":{port}"
    display = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"a key server URL must be http(s)://host[:port], got {display or 'an empty URL'}")
    if parts.query or parts.fragment:
        raise ClientError(f"a key server URL takes no query or fragment: {display}")
    return text.rstrip("/"), display


def _transport_failure(exc: requests.RequestException, timeout: Timeout) -> tuple[str, bool]:
    """A short description of a transport failure and whether the request surely never left.

    The description comes from the operating system error (``Connection refused``) or the
    exception type, never from the exception's text, which holds the request path.
    """
    if isinstance(exc, requests.ConnectTimeout):
        return f"connecting timed out after {_connect_timeout(timeout)} s", True
    if isinstance(exc, requests.ReadTimeout):
        return f"no response within {_read_timeout(timeout)} s", False
    not_sent = False
    detail = type(exc).__name__
    # requests wraps urllib3's MaxRetryError, whose .reason is the real failure; the OS error
    # is that failure's cause.
    seen: list[BaseException] = []
    pending: list[object] = [exc]
    while pending and len(seen) < 8:
        item = pending.pop()
        if not isinstance(item, BaseException) or item in seen:
            continue
        seen.append(item)
        if isinstance(item, NewConnectionError):
            not_sent = True
        if isinstance(item, OSError) and item.strerror:
            detail = item.strerror
            break
        pending.extend(item.args[:1])
        pending.extend(x for x in (getattr(item, "reason", None), item.__cause__, item.__context__) if x)
    return (f"connection failed: {detail}", not_sent)


def _connect_timeout(timeout: Timeout) -> float:
    return timeout[0] if isinstance(timeout, tuple) else timeout


def _read_timeout(timeout: Timeout) -> float:
    return timeout[1] if isinstance(timeout, tuple) else timeout


def _check_key_id(key_id: object) -> bytes:
    if not isinstance(key_id, (bytes, bytearray)) or len(key_id) != _KEY_ID_SIZE:
        got = f"{len(key_id)} bytes" if isinstance(key_id, (bytes, bytearray)) else type(key_id).__name__
        raise _http.BadRequest(f"a server key id must be {_KEY_ID_SIZE} bytes, got {got}")
    return bytes(key_id)


def _check_owner(owner: object) -> bytes | None:
    """An owner-to-be as 20 bytes: ``None``, 20 bytes, or ``0x`` and 40 hex digits (any case)."""
    if owner is None:
        return None
    if isinstance(owner, (bytes, bytearray)) and len(owner) == 20:
        return bytes(owner)
    if isinstance(owner, str):
        return parse_hex(owner, "owner", 20)
    got = f"{len(owner)} bytes" if isinstance(owner, (bytes, bytearray)) else type(owner).__name__
    raise _http.BadRequest(f"an owner-to-be is a 20-byte address or its 0x hex, got {got}")


def _check_address(address: object) -> bytes:
    """An Ethereum address as 20 bytes: 20 bytes, or ``0x`` and 40 hex digits (any case)."""
    if isinstance(address, (bytes, bytearray)) and len(address) == 20:
        return bytes(address)
    if isinstance(address, str):
        return parse_hex(address, "address", 20)
    got = f"{len(address)} bytes" if isinstance(address, (bytes, bytearray)) else type(address).__name__
    raise _http.BadRequest(f"an address is 20 bytes or its 0x hex, got {got}")


def ethereum_signature(signature: bytes) -> bytes:
    """A 65-byte ``r || s || v`` with the recovery id ``v`` (0 or 1, as the key servers answer) in
    Ethereum's form ``v + 27``, as ``ecrecover``, eth-account and web3 take it.

    :raises InvalidSignature: for a malformed signature, or ``v >= 2`` (``R.x >= n``, probability
        about 2^-128): Ethereum has no way to express it; sign again.
    """
    signatures.check_signature_encoding(signature)
    if signature[64] > 1:
        raise InvalidSignature("the recovery id is 2 or 3 (R.x >= n): Ethereum cannot express it, sign again")
    return bytes(signature[:64]) + bytes([signature[64] + 27])


# -- the client ------------------------------------------------------------------------------


class SecretStoreClient:
    """A client of one Parity-compatible key server cluster, acting for one account.

    :param urls: the cluster's node URLs (``http://host:port``, a path prefix is allowed), one
        string or several; they are equivalent entry points to the same cluster.
    :param account: an eth-account ``LocalAccount`` or anything with the 32-byte private key
        as ``.key``. It signs key ids and decrypts what the nodes encrypt to it; the key never
        leaves the process.
    :param timeout: seconds per HTTP request (or ``(connect, read)``). Parity cancels a stuck
        cluster session after about 60-70 s (protocol.md §1.8); a generation that needs longer
        than ``timeout`` raises :class:`NodeUnreachable` and may still complete on the cluster.
    :param session: a ``requests.Session`` to use as is (the caller owns and closes it);
        by default the client makes one with a kept-alive connection pool per node, no
        transport-level retries and closes it in :meth:`close`.
    :param verify: for ``https://`` nodes: True checks certificates against the system CAs, a path
        names the PEM CA bundle to check them against instead (the devnet's ``tls_ca``), False
        checks nothing (never do that outside a test); passed to requests, on the client's own
        session only (a given ``session`` keeps its own ``verify``).
    :param bound_signatures: send a bound signature with every request (docs/http-api.md);
        needed with nodes that require them, ignored by the others.
    :param bound_lifetime: seconds a bound signature stays valid, 1 to 60 (the nodes refuse more);
        the nodes' clocks may run this much behind the client's.
    :raises ClientError: for no URL or a URL that is not ``http(s)://host[:port]``, or a
        ``bound_lifetime`` out of range.
    :raises InvalidScalar: if the account has no valid 32-byte private key in ``.key``.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        account: LocalAccount | local.HasKey,
        *,
        timeout: Timeout = 10.0,
        session: requests.Session | None = None,
        verify: bool | str | os.PathLike[str] = True,
        bound_signatures: bool = True,
        bound_lifetime: int = 30,
    ) -> None:
        parsed = [_parse_node_url(url) for url in ([urls] if isinstance(urls, str) else list(urls))]
        if not parsed:
            raise ClientError("a SecretStoreClient needs at least one key server URL")
        self._bases = tuple(base for base, _ in parsed)
        self._displays = tuple(display for _, display in parsed)
        self._account = account
        # Parses .key now, so a wrong account fails here and not halfway through a publish.
        self._address = checksum_address(address_of(local.account_public(account)))
        self._timeout = timeout
        if not 1 <= bound_lifetime <= _bound.MAX_LIFETIME:
            raise ClientError(f"bound_lifetime must be 1 to {_bound.MAX_LIFETIME} seconds, got {bound_lifetime}")
        self._bound_signatures = bound_signatures
        self._bound_lifetime = bound_lifetime
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            hosts = {urlsplit(base).netloc for base in self._bases}
            # max_retries=0: urllib3 must not resend anything, least of all a POST; failover
            # between nodes is this class's decision.
            adapter = HTTPAdapter(pool_connections=len(hosts), pool_maxsize=_POOL_MAXSIZE, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        # Per request, not as session.verify: requests lets REQUESTS_CA_BUNDLE override a session's
        # verify, which would drop a given CA bundle. A caller's own session keeps its verify.
        self._verify: bool | str | None = (verify if isinstance(verify, bool) else os.fspath(verify)) \
            if self._owns_session else None
        self._session = session
        # What requests would merge from the environment into every request (proxies and their
        # no_proxy exceptions, REQUESTS_CA_BUNDLE): read once per node, not on each request, where
        # it scans the whole environment twice. Only for the client's own session; a caller's
        # session is asked through its own request(), which it may have overridden.
        self._send_settings: tuple[dict[str, object], ...] = tuple(
            session.merge_environment_settings(base, {}, None, self._verify, None) for base in self._bases
        ) if self._owns_session else ()
        self._key_id_signatures: OrderedDict[bytes, bytes] = OrderedDict()
        # The account's coincurve key for the bound signatures, made once (making one computes its
        # public key: two multiplications on every request otherwise). Read from the account as
        # every other use of its key (local.account_secret).
        self._signing_key = private_key(local.account_secret(account))
        # Index of the node that answered last: GETs start there, POSTs go there.
        self._preferred = 0
        self._server_keys: OrderedDict[bytes, Point] = OrderedDict()
        self._lock = threading.Lock()

    # -- lifecycle and introspection ---------------------------------------------------------

    @property
    def urls(self) -> tuple[str, ...]:
        """The node base URLs, in the order given."""
        return self._bases

    @property
    def address(self) -> str:
        """The requester's checksummed Ethereum address (what the ACL contract sees)."""
        return self._address

    def close(self) -> None:
        """Close the kept-alive connections (only if the client made its own session)."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SecretStoreClient(urls={list(self._displays)!r}, address={self._address!r})"

    # -- transport ---------------------------------------------------------------------------

    def _request(self, method: str, index: int, path: str, body: bytes = b"",
                 headers: dict[str, str] | None = None) -> requests.Response:
        # No redirects: the path carries the requester signature and must not be forwarded.
        url = self._bases[index] + path
        if not self._owns_session:
            return self._session.request(method, url, data=body or None, headers=headers, timeout=self._timeout,
                                         allow_redirects=False, verify=self._verify)
        # What Session.request does, with the environment's settings merged once (__init__).
        prepared = self._session.prepare_request(requests.Request(method, url, data=body or None, headers=headers))
        return self._session.send(prepared, timeout=self._timeout, allow_redirects=False,
                                  **self._send_settings[index])

    def _get(self, operation: str, path: str, headers: dict[str, str] | None = None, *, method: str = _http.GET,
             body: bytes = b"") -> bytes:
        """GET ``path`` with failover; the body of the first 2xx answer. ``method`` and ``body``: a
        read-only POST (the batch retrieval), failed over the same way."""
        count = len(self._bases)
        start = self._preferred
        tried: list[str] = []
        failures: list[str] = []
        last_answer: KeyServerError | None = None
        for offset in range(count):
            index = (start + offset) % count
            display = self._displays[index]
            tried.append(display)
            try:
                # The same bound signature to every node: each node claims its nonce on its own.
                response = self._request(method, index, path, body, headers=headers)
            except _TRANSPORT_ERRORS as exc:
                reason, _ = _transport_failure(exc, self._timeout)
                log.warning("%s: no answer from %s (%s); trying the next node", operation, display, reason)
                failures.append(f"{display} ({reason})")
                continue
            except requests.RequestException as exc:
                failure = type(exc).__name__
                raise ClientError(f"{operation}: request to {display} failed ({failure})") from None
            status = response.status_code
            log.debug("%s: %s answered HTTP %d", operation, display, status)
            if status < 500:
                # A success or the cluster's refusal: either way this node works, so start here next time.
                self._preferred = index
                if 200 <= status < 300:
                    return response.content
                raise _http.error_from_response(status, response.content, response.headers.get("Retry-After"))
            error = _http.error_from_response(status, response.content)
            log.warning(
                "%s: %s answered HTTP %d (%s); trying the next node", operation, display, status, error
            )
            failures.append(f"{display} (HTTP {status}: {error})")
            last_answer = error
        if last_answer is not None:
            # Some node answered: its error says more than the unreachable ones.
            raise last_answer
        raise NodeUnreachable(f"{operation}: no key server answered: {'; '.join(failures)}", tuple(tried))

    def _post(self, operation: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
        """POST ``path`` to one node, never retried; the body of a 2xx answer."""
        index = self._preferred
        display = self._displays[index]
        try:
            response = self._request(_http.POST, index, path, body, headers)
        except _TRANSPORT_ERRORS as exc:
            reason, not_sent = _transport_failure(exc, self._timeout)
            outcome = (
                "the request was not sent"
                if not_sent
                else "the request was sent and may still complete on the cluster"
            )
            raise NodeUnreachable(
                f"{operation}: no answer from {display} ({reason}); {outcome}; not retried on "
                "another node because generation and storing are not idempotent",
                (display,),
            ) from None
        except requests.RequestException as exc:
            raise ClientError(f"{operation}: request to {display} failed ({type(exc).__name__})") from None
        status = response.status_code
        log.debug("%s: %s answered HTTP %d", operation, display, status)
        if 200 <= status < 300:
            return response.content
        raise _http.error_from_response(status, response.content, response.headers.get("Retry-After"))

    # -- local crypto ------------------------------------------------------------------------

    def _secret(self) -> int:
        return local.account_secret(self._account)

    def _decrypt(self, blob: bytes) -> bytes:
        """Undo the nodes' ``ECIES(Q, ·)`` (auth data ``00 00``) with the account key."""
        return ecies.decrypt(self._secret(), blob, ecies.DEFAULT_MAC)

    def _remember_server_key(self, key_id: bytes, server_key: Point) -> None:
        with self._lock:
            self._server_keys[key_id] = server_key
            self._server_keys.move_to_end(key_id)
            while len(self._server_keys) > _SERVER_KEY_CACHE_SIZE:
                self._server_keys.popitem(last=False)

    def _known_server_key(self, key_id: bytes) -> Point | None:
        with self._lock:
            return self._server_keys.get(key_id)

    # -- low level: one method per endpoint --------------------------------------------------

    def sign_key_id(self, key_id: bytes) -> bytes:
        """The requester signature for ``key_id``: ECDSA over its raw 32 bytes, ``r || s || v`` (v 0/1)."""
        key_id = _check_key_id(key_id)
        with self._lock:
            signature = self._key_id_signatures.get(key_id)
            if signature is not None:
                self._key_id_signatures.move_to_end(key_id)
                return signature
        # RFC 6979, so the same as any cached one; with the key made once (__init__)
        signature = signatures.sign_raw_hash(self._signing_key, key_id)
        with self._lock:
            self._key_id_signatures[key_id] = signature
            while len(self._key_id_signatures) > _KEY_ID_SIGNATURE_CACHE_SIZE:
                self._key_id_signatures.popitem(last=False)
        return signature

    def bound_headers(self, operation: str, key_id: bytes, arguments: bytes) -> dict[str, str]:
        """The bound signature headers for one request (fresh nonce, expiry ``bound_lifetime`` ahead);
        empty when the client sends none."""
        if not self._bound_signatures:
            return {}
        bound = _bound.sign(self._signing_key, operation, _check_key_id(key_id), arguments,
                            nonce=secrets.token_bytes(_bound.NONCE_SIZE),
                            expiry=int(time.time()) + self._bound_lifetime)
        return bound.headers()

    def _generation_headers(self, operation: str, key_id: bytes, threshold: int,
                            owner: bytes | None) -> dict[str, str]:
        headers = self.bound_headers(operation, key_id, _bound.threshold_arguments(threshold, owner))
        if owner is not None:
            headers[_owner.HEADER] = _owner.header_value(owner)
        return headers

    def generate_server_key(self, key_id: bytes, threshold: int, *, owner: bytes | str | None = None) -> Point:
        """``POST /shadow/{key_id}/{sig}/{threshold}``: generate the server key; returns its public ``Y``.

        Sent to one node, never retried. ``t+1`` nodes will be needed to use the key. ``owner``
        names the key's owner-to-be (header ``X-Secret-Store-Owner``; docs/http-api.md).
        """
        key_id = _check_key_id(key_id)
        owner_bytes = _check_owner(owner)
        path = _http.server_key_generation_path(key_id, self.sign_key_id(key_id), threshold)
        headers = self._generation_headers("generate_server_key", key_id, threshold, owner_bytes)
        server_key = _http.decode_point_response(self._post("server key generation", path, headers=headers))
        self._remember_server_key(key_id, server_key)
        return server_key

    def store_document_key(self, key_id: bytes, common_point: Point, encrypted_point: Point) -> None:
        """``POST /shadow/{key_id}/{sig}/{C}/{E}``: store an externally generated document key.

        ``(C, E) = (k·G, M + k·Y)`` (protocol.md §2.6). Only the key's author may store, once.
        Sent to one node, never retried.
        """
        key_id = _check_key_id(key_id)
        signature = self.sign_key_id(key_id)
        path = _http.document_key_storing_path(key_id, signature, common_point, encrypted_point)
        arguments = _bound.store_arguments(common_point, encrypted_point)
        headers = self.bound_headers("store_document_key", key_id, arguments)
        self._post("document key storing", path, headers=headers)

    def generate_server_and_document_key(self, key_id: bytes, threshold: int, *,
                                         owner: bytes | str | None = None) -> Point:
        """``POST /{key_id}/{sig}/{threshold}``: the node generates both keys; returns the document key ``M``.

        The handling node learns ``M``; prefer :meth:`generate_server_key` with a locally
        generated document key (:meth:`publish_document`). Sent to one node, never retried.
        ``owner`` names the key's owner-to-be, as for :meth:`generate_server_key`.
        """
        key_id = _check_key_id(key_id)
        owner_bytes = _check_owner(owner)
        path = _http.server_and_document_key_generation_path(key_id, self.sign_key_id(key_id), threshold)
        headers = self._generation_headers("generate_document_key", key_id, threshold, owner_bytes)
        body = self._post("server and document key generation", path, headers=headers)
        blob = _http.decode_bytes_response(body, _http.ENCRYPTED_DOCUMENT_KEY_SIZE)
        return Point.from_bytes(self._decrypt(blob))

    def retrieve_server_key(self, key_id: bytes) -> Point:
        """``GET /server/{key_id}/{sig}``: the server public key ``Y`` (the key's author only)."""
        key_id = _check_key_id(key_id)
        path = _http.server_key_retrieval_path(key_id, self.sign_key_id(key_id))
        headers = self.bound_headers("retrieve_server_key", key_id, _bound.no_arguments())
        server_key = _http.decode_point_response(self._get("server key retrieval", path, headers))
        self._remember_server_key(key_id, server_key)
        return server_key

    def retrieve_document_key(self, key_id: bytes) -> Point:
        """``GET /{key_id}/{sig}``: the document key ``M``, reconstructed by the node (which learns it).

        Prefer :meth:`recover_document_key`, where no node learns ``M``.
        """
        key_id = _check_key_id(key_id)
        path = _http.document_key_retrieval_path(key_id, self.sign_key_id(key_id))
        blob = _http.decode_bytes_response(
            self._get("document key retrieval", path,
                      self.bound_headers("retrieve_document_key", key_id, _bound.no_arguments())),
            _http.ENCRYPTED_DOCUMENT_KEY_SIZE,
        )
        return Point.from_bytes(self._decrypt(blob))

    def retrieve_document_key_shadow(self, key_id: bytes) -> DocumentKeyShadow:
        """``GET /shadow/{key_id}/{sig}``: ``decrypted_secret``, ``common_point`` and the encrypted shadows.

        The shadows are still ECIES-encrypted to the account; :meth:`recover_document_key`
        combines them.
        """
        key_id = _check_key_id(key_id)
        path = _http.document_key_shadow_retrieval_path(key_id, self.sign_key_id(key_id))
        headers = self.bound_headers("retrieve_document_key_shadow", key_id, _bound.no_arguments())
        return _http.decode_shadow_response(self._get("document key shadow retrieval", path, headers))

    def retrieve_many(self, key_ids: Iterable[bytes], *,
                      batch_size: int = DEFAULT_BATCH_SIZE) -> list[DocumentKeyShadow | KeyServerError]:
        """``POST /shadow_batch`` (ours, beyond Parity: docs/http-api.md): the shadows of many keys,
        ``batch_size`` keys a request (at most :data:`~..protocol.batch.MAX_BATCH`), each key id
        signed by the account. One result per key, in order: its :class:`DocumentKeyShadow`, or the
        :class:`KeyServerError` the cluster answered for that key (what a single retrieval would
        raise). Failover as for the retrievals; a request that fails as a whole raises.

        :raises ClientError: ``batch_size`` out of range, or a key id that is not 32 bytes.
        """
        ids = [_check_key_id(key_id) for key_id in key_ids]
        if not 1 <= batch_size <= _batch.MAX_BATCH:
            raise ClientError(f"batch_size must be 1 to {_batch.MAX_BATCH}, got {batch_size}")
        out: list[DocumentKeyShadow | KeyServerError] = []
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            body = _batch.encode_batch_request([(key_id, self.sign_key_id(key_id)) for key_id in chunk])
            answer = self._get("batch shadow retrieval", _batch.PATH, {"Content-Type": _http.CONTENT_TYPE_JSON},
                               method=_http.POST, body=body)
            out.extend(_batch.decode_batch_response(answer, chunk))
        return out

    def recover_many(self, key_ids: Iterable[bytes], *,
                     batch_size: int = DEFAULT_BATCH_SIZE) -> list[Point | SecretStoreError]:
        """:meth:`retrieve_many`, then each document key recovered locally (no node learns one): one
        result per key, in order, its document key or its error. A node seals all the decrypt
        shadows of its answer to one requester under one ECIES ephemeral key, so one
        :class:`~..crypto.ecies.Decryptor` over the call does one ECDH per answer, not per shadow."""
        out: list[Point | SecretStoreError] = []
        opener = ecies.Decryptor(self._secret())
        for result in self.retrieve_many(key_ids, batch_size=batch_size):
            if isinstance(result, KeyServerError):
                out.append(result)
                continue
            try:
                out.append(shadows.recover_document_key(
                    result.decrypted_secret, result.common_point, result.decrypt_shadows, opener))
            except SecretStoreError as exc:
                out.append(exc)
        return out

    def generate_server_keys(self, key_ids: Iterable[bytes], threshold: int, *, owner: bytes | str | None = None,
                             batch_size: int = 500) -> list[Point | KeyServerError]:
        """``POST /server_key_batch`` (ours, beyond Parity: docs/http-api.md): generate many server
        keys, ``batch_size`` a request (at most :data:`~..protocol.generation_batch.MAX_BATCH`), each
        key id signed by the account (its author), all of threshold ``threshold`` and owner-to-be
        ``owner`` (if named). One result per key, in order: its public ``Y``, or the
        :class:`KeyServerError` the cluster answered for that key (a key id that exists or comes
        twice, a quota). Sent to one node, never retried (as :meth:`generate_server_key`): a request
        that fails as a whole raises, and the keys of the requests before it are generated. A node
        runs two sessions of up to 256 keys at once (1-3 s each on 3 nodes of a shared 2-core host):
        give the client a read timeout above the default 10 s for large batches on a busy cluster.

        :raises ClientError: ``batch_size`` out of range, or a key id that is not 32 bytes.
        """
        ids = [_check_key_id(key_id) for key_id in key_ids]
        owner_bytes = _check_owner(owner)
        if not 1 <= batch_size <= _generation_batch.MAX_BATCH:
            raise ClientError(f"batch_size must be 1 to {_generation_batch.MAX_BATCH}, got {batch_size}")
        out: list[Point | KeyServerError] = []
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            body = _generation_batch.encode_generation_request([
                _generation_batch.GenerationItem(key_id, self.sign_key_id(key_id), threshold, owner_bytes)
                for key_id in chunk])
            answer = self._post("batch server key generation", _generation_batch.PATH, body,
                                {"Content-Type": _http.CONTENT_TYPE_JSON})
            results = _generation_batch.decode_generation_response(answer, chunk)
            for key_id, result in zip(chunk, results, strict=True):
                if isinstance(result, Point):
                    self._remember_server_key(key_id, result)
            out.extend(results)
        return out

    def recover_document_key(self, key_id: bytes) -> Point:
        """Shadow retrieval, then ``M = D + (Σ ε_i)·C'`` locally (protocol.md §2.7); no node learns ``M``."""
        shadow = self.retrieve_document_key_shadow(key_id)
        return shadows.recover_document_key(
            shadow.decrypted_secret, shadow.common_point, shadow.decrypt_shadows, self._secret()
        )

    def schnorr_sign(
        self, key_id: bytes, message_hash: bytes, server_key: Point | None = None
    ) -> tuple[int, int]:
        """``GET /schnorr/{key_id}/{sig}/{message_hash}``: a threshold Schnorr signature ``(c, s)``.

        Verification: against ``server_key`` if given, else against the server key this client
        generated or retrieved for ``key_id`` earlier, else not at all. The client does not
        fetch ``Y`` for the check on its own: ``GET /server`` is for the key's author only, and
        signers usually are not the author (and it would cost a second round trip).

        :raises InvalidSignature: if the signature does not verify against the known ``Y``.
        """
        key_id = _check_key_id(key_id)
        path = _http.schnorr_signing_path(key_id, self.sign_key_id(key_id), message_hash)
        blob = _http.decode_bytes_response(
            self._get("Schnorr signing", path,
                      self.bound_headers("schnorr_sign", key_id, _bound.message_hash_arguments(message_hash))),
            _http.ENCRYPTED_SCHNORR_SIGNATURE_SIZE,
        )
        signature = schnorr.parse_signature(self._decrypt(blob))
        public = server_key if server_key is not None else self._known_server_key(key_id)
        if public is not None:
            schnorr.verify(public, signature, message_hash)
        return signature

    def sign_ecdsa(self, key_id: bytes, message_hash: bytes, *, server_key: Point | None = None,
                   address: bytes | str | None = None, ethereum: bool = False) -> bytes:
        """``GET /ecdsa/{key_id}/{sig}/{message_hash}``: the cluster's threshold ECDSA signature of a
        32-byte hash with the server key ``key_id`` (no key server holds the key; 2t+1 of them sign).

        Returns Parity's 65 bytes ``r || s || v``: low-S, ``v`` the recovery id, 0 or 1 (2 or 3 only
        when ``R.x >= n``, probability about 2^-128, which Ethereum cannot express). With
        ``ethereum=True``, ``v + 27`` as ``ecrecover`` and eth-account take it
        (:func:`ethereum_signature`). The hash is signed as it is: for an Ethereum transaction or an
        EIP-191 message, pass the digest that would be signed.

        Checked before it is returned: the signature must recover to ``server_key`` if given, else
        to ``address`` (the key's 20-byte Ethereum address, or its ``0x`` hex) if given, else to the
        server key this client generated or retrieved for ``key_id``; with none known it is returned
        as the nodes verified it. The requester needs the key's permission, as for a retrieval; a
        key generated with ``2t >= N`` cannot sign (403 ``Consensus unreachable``).

        :raises InvalidSignature: if the signature does not recover to the expected key, or
            ``ethereum`` is asked of a signature with ``v >= 2``.
        """
        key_id = _check_key_id(key_id)
        if len(message_hash) != 32:
            raise _http.BadRequest(f"a message hash must be 32 bytes, got {len(message_hash)}")
        expected_address = _check_address(address) if address is not None else None
        path = _http.ecdsa_signing_path(key_id, self.sign_key_id(key_id), message_hash)
        blob = _http.decode_bytes_response(
            self._get("ECDSA signing", path,
                      self.bound_headers("ecdsa_sign", key_id, _bound.message_hash_arguments(message_hash))),
            _http.ENCRYPTED_ECDSA_SIGNATURE_SIZE,
        )
        signature = self._decrypt(blob)
        public = server_key if server_key is not None else (
            None if expected_address is not None else self._known_server_key(key_id))
        if public is not None or expected_address is not None:
            recovered = signatures.recover_public(signature, message_hash)
            if public is not None and recovered != public:
                raise InvalidSignature("the ECDSA signature does not recover to the server key")
            if expected_address is not None and address_of(recovered) != expected_address:
                raise InvalidSignature("the ECDSA signature does not recover to the key's address")
        return ethereum_signature(signature) if ethereum else signature

    def ecdsa_sign(self, key_id: bytes, message_hash: bytes, server_key: Point | None = None) -> bytes:
        """``GET /ecdsa/{key_id}/{sig}/{message_hash}``: a threshold ECDSA signature ``r || s || v``
        (Parity's endpoint name; :meth:`sign_ecdsa` is the documented method and takes more options).

        ``v`` is the raw recovery id (add 27 for Ethereum's ``ecrecover``). Verified as in
        :meth:`schnorr_sign`: the signature must recover to ``server_key`` or the known ``Y``.

        :raises InvalidSignature: if it does not recover to the known ``Y``.
        """
        return self.sign_ecdsa(key_id, message_hash, server_key=server_key)

    def change_servers_set(self, old_servers_set: Iterable[Point], new_servers_set: Iterable[Point]) -> None:
        """``POST /admin/servers_set_change/{old_sig}/{new_sig}``, signed by this account as administrator.

        ``old_servers_set`` must be every node connected to the receiving node, itself included
        (protocol.md §1.4.9). Sent to one node, never retried.
        """
        old_set, new_set = list(old_servers_set), list(new_servers_set)
        secret = self._secret()
        old_signature = signatures.sign_raw_hash(secret, servers_set_hash(old_set))
        new_signature = signatures.sign_raw_hash(secret, servers_set_hash(new_set))
        path = _http.servers_set_change_path(old_signature, new_signature)
        self._post("servers set change", path, _http.servers_set_change_body(new_set))

    # -- high level: Ocean's secret-store-client-py ------------------------------------------

    def publish_document(self, document_id: str, document: str, threshold: int = 0, *,
                         owner: bytes | str | None = None) -> str:
        """Encrypt ``document`` under a fresh document key stored with the cluster under ``document_id``.

        As ``secret-store-client-py``: generate the server key (``threshold``), generate the
        document key (here locally), encrypt the UTF-8 document, store the key, and return the
        encrypted document as ``"0x"`` + lowercase hex (``ciphertext || iv``). ``document_id``
        is the 32-byte server key id as 64 hex digits, with or without ``0x``.

        If storing fails the server key exists without a document key and the ciphertext is
        lost (as in the original); the id cannot be reused. ``owner`` (ours) names the key's
        owner-to-be at generation (:meth:`generate_server_key`).
        """
        key_id = parse_hex(document_id, "document_id", _KEY_ID_SIZE, prefix=None)
        if not isinstance(document, str):
            raise MalformedHex(f"document must be a str, got {type(document).__name__}")
        server_key = self.generate_server_key(key_id, threshold, owner=owner)
        document_key, common_point, encrypted_point = _document.generate_document_key(server_key)
        encrypted = _document.encrypt_document(document_key, document.encode("utf-8"))
        self.store_document_key(key_id, common_point, encrypted_point)
        return to_hex(encrypted)

    def decrypt_document(self, document_id: str, encrypted_document: str) -> str:
        """Recover the document key by shadow retrieval and decrypt ``encrypted_document`` to text.

        As ``secret-store-client-py``: ``encrypted_document`` is the hex returned by
        :meth:`publish_document` (``0x`` optional); the result is the UTF-8 plaintext.

        :raises DecryptionFailed: if the plaintext is not UTF-8 (the format has no MAC, so a
            wrong key or a corrupted ciphertext shows only this way).
        """
        key_id = parse_hex(document_id, "document_id", _KEY_ID_SIZE, prefix=None)
        data = parse_hex(encrypted_document, "encrypted_document", prefix=None)
        document_key = self.recover_document_key(key_id)
        plain = _document.decrypt_document(document_key, data)
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptionFailed(
                "the decrypted document is not UTF-8: wrong document key or corrupted ciphertext"
            ) from None
