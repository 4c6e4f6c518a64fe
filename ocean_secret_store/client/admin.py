"""AdminClient: an administrator's client of one key server's admin endpoints (servers-set change,
refresh, repair, status; docs/http-api.md *Admin sessions*), signing locally with the admin key.

Every admin session goes to one node, its *master*, and is never retried: the old set the
administrator signs is what that node sees (its servers set, as far as connected to it, itself
included: Parity's rule), read from its ``GET /admin/status`` just before the request. The POST
returns once every key has moved, which may take long for many keys: by default it waits without
a read timeout, and ``on_progress`` is called from a thread with the node's status while it runs.

Refusals come back as the SDK's :class:`~..exceptions.KeyServerError` subclasses with the node's
message; the admin ones that are not Parity variants (:class:`~..exceptions.KeysWouldBeLost`,
:class:`~..exceptions.BadAdminRequest`, :class:`~..exceptions.AdminSessionIncomplete`) are told
apart by their text. The admin secret never reaches a log, repr or error message.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Final, Self, TypeAlias

import requests
from requests.adapters import HTTPAdapter

from ..crypto.curve import Point
from ..exceptions import (
    AdminSessionIncomplete,
    BadAdminRequest,
    ClientError,
    InternalError,
    KeyServerError,
    KeysWouldBeLost,
    NodeUnreachable,
)
from ..protocol import http as _http
from ..protocol import key_versions as _kv
from ..protocol.admin import AdminRequest, sign_request, sign_status
from ..protocol.hexcodec import parse_hex
from .client import _TRANSPORT_ERRORS, Timeout, _parse_node_url, _transport_failure

__all__ = ["FORCE_HEADER", "AdminClient", "NodeId", "Secret", "parse_node_id"]

log = logging.getLogger(__name__)

#: Go on although some keys cannot keep t+1 shares (they are reported and left as they are).
FORCE_HEADER: Final = "X-Secret-Store-Force"
#: A node id as the caller has it: 64 bytes, a point, or ``0x`` + 128 hex digits.
NodeId: TypeAlias = bytes | Point | str
#: The administrator's private key: an int, 32 bytes, or 64 hex digits (``0x`` optional).
Secret: TypeAlias = int | bytes | str
#: Seconds to connect for an admin POST; it then waits for the answer as long as the session runs.
_CONNECT_TIMEOUT: Final = 10.0
_ADMIN_ERRORS: Final = (KeysWouldBeLost, BadAdminRequest, AdminSessionIncomplete)


def parse_node_id(node: NodeId) -> bytes:
    """A node id's 64 bytes; a point off the curve or a malformed text raises :class:`ClientError`."""
    if isinstance(node, Point):
        return node.to_bytes()
    raw = parse_hex(node, "a node id", 64, error=ClientError) if isinstance(node, str) else bytes(node)
    try:
        return Point.from_bytes(raw).to_bytes()
    except ValueError:
        raise ClientError("a node id must be 64 bytes of a secp256k1 public key") from None


def _secret(secret: Secret) -> int:
    if isinstance(secret, int) and not isinstance(secret, bool):
        return secret
    raw = parse_hex(secret, "the admin key", 32, prefix=None, error=ClientError) if isinstance(secret, str) \
        else bytes(secret)
    if len(raw) != 32:
        raise ClientError("the admin key must be 32 bytes")
    return int.from_bytes(raw, "big")


def admin_error(status: int, body: bytes) -> KeyServerError:
    """The error of a refused admin request: as :func:`~..protocol.http.error_from_response`, with the
    admin refusals that travel as Parity's Internal variant given back their own class."""
    error = _http.error_from_response(status, body)
    if type(error) is InternalError and error.detail:
        for cls in _ADMIN_ERRORS:
            if error.detail == cls.prefix:
                return cls()
            if error.detail.startswith(cls.prefix + ": "):
                return cls(error.detail[len(cls.prefix) + 2:])
    return error


class AdminClient:
    """The administrator's client of one key server (the admin session's master).

    :param url: the node's base URL (``http(s)://host:port``).
    :param timeout: seconds for ``GET /admin/status`` (or ``(connect, read)``).
    :param session_timeout: seconds an admin POST may wait for its answer; None (the default)
        waits as long as the session runs, which grows with the number of keys.
    :param verify: for ``https://``: True (system CAs), a PEM CA bundle path (the devnet's
        ``tls_ca``), or False (tests only); as :class:`~.client.SecretStoreClient`.
    :param session: a ``requests.Session`` to use (the caller closes it); by default one of its own.
    :param poll_interval: seconds between two ``GET /admin/status`` of ``on_progress``.
    """

    def __init__(self, url: str, *, timeout: Timeout = 10.0, session_timeout: float | None = None,
                 verify: bool | str | os.PathLike[str] = True, session: requests.Session | None = None,
                 poll_interval: float = 0.5) -> None:
        self._base, self._display = _parse_node_url(url)
        self._timeout = timeout
        self._post_timeout: tuple[float, float | None] = (_connect_timeout(timeout), session_timeout)
        self._verify: bool | str = os.fspath(verify) if isinstance(verify, os.PathLike) else verify
        self._poll_interval = poll_interval
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(max_retries=0)  # an admin POST is never resent
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self._session = session

    @property
    def url(self) -> str:
        return self._display

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AdminClient({self._display!r})"

    # -- requests ----------------------------------------------------------------------------

    def status(self, admin_secret: Secret | None = None, *, lifetime: float = 30.0) -> dict[str, Any]:
        """``GET /admin/status``: ``servers_set``, ``connected`` (this node included), ``admin_session``
        (or None) and ``progress`` of the session this node runs or ran last as master, which counts
        the keys it left behind and its errors (``lost_count``, ``error_count``) without naming them.

        With ``admin_secret``, the administrator's signed ``GET /admin/status/{expiry}/{signature}``
        (valid ``lifetime`` seconds, for this node only; signed locally, the key is never sent): the
        progress names them too (``lost``: key id, threshold, reason; ``errors``).

        :raises AccessDenied: (signed) the node does not take the signature as its administrator's,
            or its clock is more than ``lifetime`` seconds ahead.
        """
        public = self._status(self._session)
        if admin_secret is None:
            return public
        node_id = parse_node_id(str(public.get("node_id", "")))
        expiry = int(time.time() + lifetime)
        signed = _http.AdminStatus(expiry, sign_status(_secret(admin_secret), node_id, expiry))
        return self._status(self._session, signed)

    def _status(self, session: requests.Session, request: _http.AdminStatus | None = None) -> dict[str, Any]:
        path = _http.encode_request(request or _http.AdminStatus()).path
        body = self._get(session, "admin status", path)
        try:
            value = json.loads(body)
        except ValueError:
            value = None
        if not isinstance(value, dict) or not isinstance(value.get("servers_set"), list):
            raise InternalError(f"{self._display}/admin/status did not answer an admin status")
        return value

    def old_set(self, status: dict[str, Any] | None = None, operation: str = "change") -> tuple[bytes, ...]:
        """The old set an administrator signs for this node: for a change its servers set members
        that are connected to it, itself included (Parity's rule); for a refresh or repair, which
        keep the set, the whole servers set (sorted)."""
        status = self.status() if status is None else status
        if operation != "change":
            return tuple(sorted(map(parse_node_id, status["servers_set"])))
        connected = {parse_node_id(n) for n in status.get("connected", [])}
        if "node_id" in status:
            connected.add(parse_node_id(status["node_id"]))
        return tuple(sorted(n for n in map(parse_node_id, status["servers_set"]) if n in connected))

    def servers_set_change(self, new_set: Iterable[NodeId], admin_secret: Secret, force: bool = False, *,
                           on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """``POST /admin/servers_set_change/{old_sig}/{new_sig}`` with ``new_set`` (Parity's endpoint).

        Returns the session's final progress (``done``/``failed``/``skipped``/``lost``) from the
        administrator's signed ``GET /admin/status/...``, since Parity's answer is an empty 200.

        :raises KeysWouldBeLost: (409) some keys cannot keep t+1 shares and ``force`` is not set;
            nothing changed.
        :raises AccessDenied: a signature that is not the administrator's, or the old set moved.
        :raises NodeDisconnected: a node of the new set is not connected to this node.
        :raises AdminSessionIncomplete: some keys did not move; the same call resumes the session.
        """
        nodes = tuple(parse_node_id(n) for n in new_set)
        status = self.status()
        request = sign_request(_secret(admin_secret), "change", self.old_set(status), nodes)
        encoded = _http.encode_request(_http.ServersSetChange(
            request.old_signature, request.new_signature, tuple(Point.from_bytes(n) for n in request.new_set)))
        self._run("servers set change", encoded, force, status, on_progress)
        return dict(self.status(admin_secret).get("progress") or {})

    def refresh(self, admin_secret: Secret, force: bool = False, *,
                on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """``POST /admin/refresh/...``: new shares of every key on the same servers set; the report."""
        status = self.status()
        view = self.old_set(status, "refresh")
        request = sign_request(_secret(admin_secret), "refresh", view, view)
        encoded = _http.encode_request(_http.AdminRefresh(request.old_signature, request.new_signature))
        return self._report(self._run("refresh", encoded, force, status, on_progress))

    def repair(self, node_id: NodeId, admin_secret: Secret, force: bool = False, *,
               on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """``POST /admin/repair/.../{node_id}``: give ``node_id`` back its shares of every key whose
        active version it lacks; the report."""
        target = parse_node_id(node_id)
        status = self.status()
        view = self.old_set(status, "repair")
        request: AdminRequest = sign_request(_secret(admin_secret), "repair", view, view, target)
        encoded = _http.encode_request(_http.AdminRepair(request.old_signature, request.new_signature,
                                                         Point.from_bytes(target)))
        return self._report(self._run("repair", encoded, force, status, on_progress))

    def key_versions(self, node_secret: Secret, *, lifetime: float = 60.0) -> _kv.KeyVersionsPage:
        """Every key this node holds, with its active version, as it tells them to the node whose key
        is ``node_secret`` (a node of its cluster: ``node verify``); pages of ``GET /admin/key_versions``
        put together (``more`` is False). Signed locally; the key is never sent or shown.

        :raises AccessDenied: the node does not count the signer as a node of its cluster.
        """
        secret = _secret(node_secret)
        audience = parse_node_id(str(self.status().get("node_id", "")))
        after = bytes(32)
        keys: list[_kv.PeerKey] = []
        while True:
            path = _kv.request_path(secret, audience, after, int(time.time() + lifetime))
            page = self._key_versions_page(path)
            if page.node_id != audience:
                raise InternalError(f"{self._display} answered key versions as another node")
            keys.extend(page.keys)
            if not page.more or not page.keys:
                return _kv.KeyVersionsPage(page.node_id, page.servers_set, tuple(keys), False)
            after = page.keys[-1].key_id

    def _key_versions_page(self, path: str) -> _kv.KeyVersionsPage:
        body = self._get(self._session, "key versions", path)
        try:
            return _kv.decode_page(json.loads(body))
        except (ValueError, _kv.KeyVersionsError):
            raise InternalError(f"{self._display} did not answer the key versions") from None

    def _get(self, session: requests.Session, what: str, path: str) -> bytes:
        """GET ``path`` of this node: the body of a 2xx answer; no answer is NodeUnreachable, another
        status the admin error it carries."""
        try:
            response = session.get(self._base + path, timeout=self._timeout, verify=self._verify,
                                   allow_redirects=False)
        except _TRANSPORT_ERRORS as exc:
            reason, _ = _transport_failure(exc, self._timeout)
            raise NodeUnreachable(f"{what}: no answer from {self._display} ({reason})", (self._display,)) from None
        except requests.RequestException as exc:
            raise ClientError(f"{what}: request to {self._display} failed ({type(exc).__name__})") from None
        if not 200 <= response.status_code < 300:
            raise admin_error(response.status_code, response.content)
        return bytes(response.content)

    def _report(self, body: bytes) -> dict[str, Any]:
        try:
            value = json.loads(body)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise InternalError(f"{self._display} answered an admin session without its JSON report")
        return value

    def _run(self, operation: str, encoded: _http.EncodedRequest, force: bool, before: dict[str, Any],
             on_progress: Callable[[dict[str, Any]], None] | None) -> bytes:
        """POST ``encoded`` once, polling the status meanwhile if asked; the body of a 2xx answer."""
        headers = {FORCE_HEADER: "1"} if force else {}
        previous = (before.get("progress") or {}).get("session")
        poller = None if on_progress is None else _Poller(self, previous, on_progress, self._poll_interval)
        try:
            response = self._session.request(
                encoded.method, self._base + encoded.path, data=encoded.body or None, headers=headers,
                timeout=self._post_timeout, verify=self._verify, allow_redirects=False)
        except _TRANSPORT_ERRORS as exc:
            connect, read = self._post_timeout
            reason, not_sent = _transport_failure(exc, (connect, float("inf") if read is None else read))
            outcome = "the request was not sent" if not_sent else (
                "the request was sent and the session may still run on the node (see admin status)")
            raise NodeUnreachable(f"{operation}: no answer from {self._display} ({reason}); {outcome}",
                                  (self._display,)) from None
        except requests.RequestException as exc:
            raise ClientError(f"{operation}: request to {self._display} failed ({type(exc).__name__})") from None
        finally:
            if poller is not None:
                poller.stop()
        log.debug("%s: %s answered HTTP %d", operation, self._display, response.status_code)
        if 200 <= response.status_code < 300:
            return response.content
        raise admin_error(response.status_code, response.content)


def _connect_timeout(timeout: Timeout) -> float:
    return timeout[0] if isinstance(timeout, tuple) else timeout


class _Poller:
    """Calls ``on_progress(status)`` from a thread every ``interval`` while an admin POST runs, once
    the node reports a session other than ``previous`` (the one it ran before)."""

    def __init__(self, client: AdminClient, previous: str | None, on_progress: Callable[[dict[str, Any]], None],
                 interval: float) -> None:
        self._client, self._previous, self._on_progress = client, previous, on_progress
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="admin-progress", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        with requests.Session() as session:  # a Session is not shared between threads
            session.mount("http://", HTTPAdapter(max_retries=0))
            session.mount("https://", HTTPAdapter(max_retries=0))
            while not self._stopped.wait(self._interval):
                try:
                    status = self._client._status(session)
                except (KeyServerError, ClientError) as exc:
                    log.debug("admin progress: %s", exc)
                    continue
                progress = status.get("progress") or {}
                if progress.get("session") not in (None, self._previous):
                    self._on_progress(status)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=self._interval + 15)
