"""What every HTTP server of ours shares: a header-read timeout and a per-client-address connection
cap, kept at the asyncio protocol level around aiohttp's own protocol factory.

aiohttp (3.14) has no header-read timeout: a connection that drips the bytes of a request head is
closed only by the keep-alive timeout (75 s by default), so a few thousand such sockets from one
host hold as many file descriptors and handler objects. :class:`GuardedAppRunner` is an
``aiohttp.web.AppRunner`` whose sites (``web.TCPSite`` and the others ask ``runner.server`` for
their protocol factory) serve every connection through :class:`_Guard`, which

* closes a connection that has not sent a complete request head within ``header_timeout``
  seconds: from the moment it connects, and again from the first byte of each later request (an
  idle keep-alive connection between requests is left to aiohttp's keep-alive timeout; a slow body
  upload is not timed: the head is complete by then);
* refuses, by closing at once, a connection from an address that already holds
  ``max_connections_per_address`` connections to this server.

"The head is complete" is learned from aiohttp itself: a middleware runs when aiohttp has parsed a
request head and calls the app's handler, before any of the body is read.

TLS (off unless a certificate and key are configured): :func:`server_ssl_context` loads them into
an ``ssl.SSLContext`` (TLS 1.2 or later, no client certificates) that :func:`guarded_site` serves
with; the guard then wraps the decrypted stream, so its timeout and cap hold for https as for http.
The guard sees a TLS connection only once its handshake is done, so the handshake has its own
limit: ``header_timeout`` as well (asyncio's default is 60 s, time enough for a slow-loris).
:func:`client_ssl_context` trusts a CA bundle (aiohttp clients). The devnet's local CA is in
:mod:`ocean_secret_store.localca`. :func:`serve_files` is the devnet's static file server.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

from aiohttp import web

from .exceptions import ConfigError
from .lifecycle import bound_port, wait_for_stop_signal

__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS_PER_ADDRESS",
    "GuardedAppRunner",
    "ServingLimits",
    "TlsFiles",
    "client_ssl_context",
    "guarded_site",
    "serve_files",
    "server_ssl_context",
]

log = logging.getLogger(__name__)

DEFAULT_HEADER_TIMEOUT: Final = 10.0
#: Generous: the benches keep 16 requests in flight from one address and the fault campaign more.
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: Final = 256

#: Sent to a client that began a request head and did not finish it in time, before closing.
_REQUEST_TIMEOUT: Final = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 48\r\n\r\n"
    b"the request head was not complete in time (408)\n"
)
#: After the 408, how long the client's further bytes are read and dropped before the socket is
#: closed: closing with unread bytes would send a reset, which may discard the 408 at the client.
_LINGER: Final = 1.0
#: The refusals are logged at most this often (seconds), with a count: a flood must not flood the log.
_LOG_EVERY: Final = 60.0

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ServingLimits:
    """Per-server limits on connections (see the module docstring).

    :raises ValueError: a timeout that is not a finite number > 0, or a cap < 1.
    """

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_connections_per_address: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS

    def __post_init__(self) -> None:
        timeout = self.header_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout) \
                or timeout <= 0:
            raise ValueError("header_timeout must be a finite number of seconds > 0")
        cap = self.max_connections_per_address
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ValueError("max_connections_per_address must be an integer >= 1")


class _Throttled:
    """Counts an event and logs it at most once per :data:`_LOG_EVERY` seconds."""

    def __init__(self, message: str) -> None:
        self._message = message
        self._count = 0
        self._next = 0.0

    def __call__(self, address: str | None) -> None:
        self._count += 1
        now = time.monotonic()
        if now >= self._next:
            log.warning("%s (%d since the last report; the last from %s)", self._message, self._count, address)
            self._count = 0
            self._next = now + _LOG_EVERY


class _Guards:
    """The state one server's guards share: connections per address, and each live guard by its
    aiohttp handler (the middleware finds the guard of a request through ``request.protocol``)."""

    def __init__(self, limits: ServingLimits) -> None:
        self.limits = limits
        self.per_address: dict[str, int] = {}
        self.by_handler: dict[object, _Guard] = {}
        self.log_timeout = _Throttled(
            f"closed connections that sent no complete request head within {limits.header_timeout:g} s")
        self.log_refused = _Throttled(
            f"refused connections over the cap of {limits.max_connections_per_address} per client address")

    def admit(self, address: str | None) -> bool:
        if address is None:  # not an IP connection (a Unix socket): nothing to count by
            return True
        count = self.per_address.get(address, 0)
        if count >= self.limits.max_connections_per_address:
            self.log_refused(address)
            return False
        self.per_address[address] = count + 1
        return True

    def release(self, address: str | None) -> None:
        if address is None:
            return
        count = self.per_address.get(address, 0) - 1
        if count > 0:
            self.per_address[address] = count
        else:
            self.per_address.pop(address, None)

    @web.middleware
    async def middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        guard = self.by_handler.get(request.protocol)
        if guard is None:  # served by another runner's site: not ours to time
            return await handler(request)
        guard.head_complete()
        try:
            return await handler(request)
        finally:
            guard.request_done()


class _Guard(asyncio.Protocol):
    """Wraps one connection's aiohttp protocol: forwards every event, times the request heads."""

    __slots__ = ("_address", "_admitted", "_busy", "_expired", "_guards", "_head_bytes", "_inner", "_make_inner",
                 "_requests", "_timer", "_transport")

    def __init__(self, guards: _Guards, make_inner: Callable[[], web.RequestHandler]) -> None:
        self._guards = guards
        self._make_inner = make_inner
        self._inner: web.RequestHandler | None = None
        self._transport: asyncio.Transport | None = None
        self._address: str | None = None
        self._admitted = False
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False  # a request's head is parsed and its handler runs
        self._head_bytes = False  # bytes of a request head arrived since the timer was armed
        self._requests = 0
        self._expired = False  # timed out: what the client still sends is dropped

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport subclasses, so no isinstance check).
        self._transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if isinstance(peer, tuple) and peer else None
        if not self._guards.admit(self._address):
            transport.abort()  # over the cap: closed at once, before aiohttp sees it
            return
        self._admitted = True
        # The handler is made only for an admitted connection: a refused one costs no parser.
        self._inner = inner = self._make_inner()
        self._guards.by_handler[inner] = self
        self._arm()
        inner.connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._disarm()
        self._guards.release(self._address)
        if self._inner is not None:
            self._guards.by_handler.pop(self._inner, None)
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is None or self._expired:
            return
        if not self._busy:
            # Outside a request, bytes are the head of the next one: its clock starts now.
            self._head_bytes = True
            if self._timer is None:
                self._arm()
        self._inner.data_received(data)

    def eof_received(self) -> None:
        # aiohttp's handler returns None: the transport closes itself once the client half-closes.
        if self._inner is not None and not self._expired:
            self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # -- the clock ----------------------------------------------------------------------------

    def head_complete(self) -> None:
        self._busy = True
        self._disarm()

    def request_done(self) -> None:
        self._busy = False
        self._head_bytes = False
        self._requests += 1

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guards.limits.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        transport = self._transport
        if self._busy or transport is None or transport.is_closing():
            return
        self._guards.log_timeout(self._address)
        if self._head_bytes and self._requests == 0:
            # A client that began its first request is told why; a connection that sent nothing,
            # or a kept-alive one after a finished request, is closed without a word (a client
            # could take a stray status line for the answer to its next request).
            self._expired = True
            transport.write(_REQUEST_TIMEOUT)
            if transport.can_write_eof():
                transport.write_eof()
            self._timer = asyncio.get_running_loop().call_later(_LINGER, transport.abort)
        else:
            transport.abort()


class _GuardedFactory:
    """The protocol factory a site serves: a :class:`_Guard` around aiohttp's own handler."""

    __slots__ = ("_guards", "_server")

    def __init__(self, guards: _Guards, server: web.Server) -> None:
        self._guards = guards
        self._server = server

    def __call__(self) -> _Guard:
        return _Guard(self._guards, self._server)


class GuardedAppRunner(web.AppRunner):
    """An ``aiohttp.web.AppRunner`` whose sites serve each connection under ``limits``.

    Use it as the runner it replaces (``setup()``, a ``web.TCPSite``, ``cleanup()``); it adds one
    middleware to ``app``, so build the app first and give it to one runner only.
    """

    def __init__(self, app: web.Application, limits: ServingLimits | None = None, **kwargs: Any) -> None:
        self._guards = _Guards(limits if limits is not None else ServingLimits())
        app.middlewares.append(self._guards.middleware)
        super().__init__(app, **kwargs)

    @property
    def limits(self) -> ServingLimits:
        return self._guards.limits

    @property
    def server(self) -> _GuardedFactory | None:  # type: ignore[override] # a site only calls it, as its protocol factory
        inner = super().server
        return None if inner is None else _GuardedFactory(self._guards, inner)


# -- TLS ----------------------------------------------------------------------------------------


class _TlsSite(web.TCPSite):
    """A ``web.TCPSite`` whose TLS handshakes must finish within ``handshake_timeout`` seconds.

    ``TCPSite.start`` passes no ``ssl_handshake_timeout`` to ``create_server``; this start is the
    same call with it (aiohttp 3.9-3.14 keep the site's settings in these attributes).
    """

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, ssl_context: ssl.SSLContext,
                 handshake_timeout: float, reuse_address: bool | None = None) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, reuse_address=reuse_address)
        self._handshake_timeout = handshake_timeout

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner, as TCPSite.start does
        server = self._runner.server
        if server is None:
            raise RuntimeError("the runner is not set up: call runner.setup() before starting a site")
        self._server = await asyncio.get_running_loop().create_server(
            server, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
            ssl_handshake_timeout=self._handshake_timeout)
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


def guarded_site(runner: GuardedAppRunner, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
                 reuse_address: bool | None = None) -> web.TCPSite:
    """The site a service of ours listens with: plain ``web.TCPSite``, or with ``ssl_context`` a TLS
    site whose handshakes get ``runner.limits.header_timeout`` seconds."""
    if ssl_context is None:
        return web.TCPSite(runner, host, port, reuse_address=reuse_address)
    return _TlsSite(runner, host, port, ssl_context=ssl_context, handshake_timeout=runner.limits.header_timeout,
                    reuse_address=reuse_address)


@dataclass(frozen=True)
class TlsFiles:
    """A server's PEM certificate (chain) and private key: the ``tls_cert``/``tls_key`` settings."""

    cert: Path
    key: Path

    def context(self, setting: str = "tls") -> ssl.SSLContext:
        """:func:`server_ssl_context` of these files; ``setting`` names them in errors."""
        return server_ssl_context(self.cert, self.key, setting=setting)


def server_ssl_context(cert: str | os.PathLike[str], key: str | os.PathLike[str], *,
                       setting: str = "tls") -> ssl.SSLContext:
    """A server-side context: TLS 1.2 or later, the certificate chain ``cert`` with its key ``key``.

    :raises ConfigError: a file is missing or unreadable, is not PEM, or the key does not match the
        certificate (``key`` of the error: ``setting``.tls_cert or ``setting``.tls_key).
    """
    cert_path, key_path = Path(cert), Path(key)
    for name, path in (("tls_cert", cert_path), ("tls_key", key_path)):
        if not path.is_file():
            raise ConfigError(f"{setting}.{name}: {path} does not exist or is not a file", key=f"{setting}.{name}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_path, key_path)
    except (ssl.SSLError, OSError) as exc:
        # ssl's reason only (e.g. KEY_VALUES_MISMATCH, PEM_lib): never the key's bytes.
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
        raise ConfigError(f"{setting}.tls_cert/tls_key: cannot load {cert_path} with {key_path} ({reason}): "
                          "expected a PEM certificate and its matching PEM private key", key=f"{setting}.tls_key") \
            from None
    return context


def client_ssl_context(ca_file: str | os.PathLike[str] | None) -> ssl.SSLContext:
    """A client-side context verifying servers (hostname included) against the system CAs and, if
    given, the PEM bundle ``ca_file`` as well (the provider fetches from the internet and the devnet).

    :raises ConfigError: ``ca_file`` cannot be read or holds no PEM certificate.
    """
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=os.fspath(ca_file))
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
            raise ConfigError(f"ca_file: cannot load {ca_file} as a PEM CA bundle ({reason})", key="ca_file") \
                from None
    return context


async def serve_files(directory: Path, host: str, port: int, *, limits: ServingLimits | None = None,
                      ready: Callable[[str], None] | None = None, tls: TlsFiles | None = None) -> None:
    """Serve the files under ``directory`` (GET/HEAD, ``Range`` honoured, no listing, no symlinks
    out of it) until SIGTERM or SIGINT, under the connection ``limits`` every server of ours has,
    over https with ``tls`` if given; ``ready`` gets the base URL once it listens. (The devnet's
    file server: here rather than in the devnet module, whose imports cost the start 0.7 s of CPU.)

    :raises ConfigError: ``tls`` names a missing file or a key that does not match the certificate.
    """
    ssl_context = tls.context("files") if tls is not None else None
    app = web.Application()
    app.router.add_static("/", directory, follow_symlinks=False)
    runner = GuardedAppRunner(app, limits, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await guarded_site(runner, host, port, reuse_address=True, ssl_context=ssl_context).start()
        if ready is not None:
            ready(f"{'https' if tls is not None else 'http'}://{host}:{bound_port(runner)}")
        await wait_for_stop_signal()
    finally:
        await runner.cleanup()
