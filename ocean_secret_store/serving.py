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
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, cast

from aiohttp import web

__all__ = ["DEFAULT_HEADER_TIMEOUT", "DEFAULT_MAX_CONNECTIONS_PER_ADDRESS", "GuardedAppRunner", "ServingLimits"]

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
