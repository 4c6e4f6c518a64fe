"""A black-holing TCP proxy for node-to-node links (bench/faults.py, scenario ``blackhole``).

There is no iptables here, and a netem qdisc on ``lo`` would hit every connection on the machine, so
a link is black-holed in user space instead: the dialling node's config names a :class:`LinkProxy`
as the address of its higher-id peer, and the proxy forwards both directions until it is told to
black-hole. From then on it keeps both TCP connections open and reads and discards every byte in
both directions, so neither node sees a reset, a close or an error: the channel just goes silent,
as behind a router that drops packets (the kernel still acknowledges what it receives, so the
senders' writes never block; only the application's own timeouts can notice). A connection made
while black-holed is accepted and held the same way, never forwarded. :meth:`LinkProxy.heal`
closes the connections whose bytes were discarded (their encrypted streams lost frames and cannot
resume) and forwards again, so the dialling node reconnects through the proxy.

:class:`ProxyThread` runs the proxies of a campaign on one asyncio loop in a daemon thread and
offers blocking calls to the synchronous campaign.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

CHUNK = 65536


@dataclass(eq=False)  # kept in a set: hashed by identity
class _Connection:
    """One proxied TCP connection: the dialler's side and, unless accepted while black-holed, the target's."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None
    discarded: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


@dataclass
class LinkStats:
    connections: int = 0
    forwarded: int = 0
    discarded: int = 0
    closed_on_heal: int = 0


class LinkProxy:
    """Forwards one link (a listening port on loopback to ``target``), or black-holes it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.blackholed = False
        self.stats = LinkStats()
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1") -> int:
        """Listen on a free port of ``host``; the port."""
        self._server = await asyncio.start_server(self._accept, host, 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for connection in list(self._connections):
            connection.close()
        self._connections.clear()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def blackhole(self) -> None:
        self.blackholed = True

    def heal(self) -> None:
        """Forward again; connections that lost bytes are closed (the dialler reconnects)."""
        self.blackholed = False
        for connection in list(self._connections):
            if connection.discarded or connection.upstream is None:
                connection.close()
                self._connections.discard(connection)
                self.stats.closed_on_heal += 1

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        upstream_reader: asyncio.StreamReader | None = None
        upstream: asyncio.StreamWriter | None = None
        if not self.blackholed:
            try:
                upstream_reader, upstream = await asyncio.open_connection(*self.target)
            except OSError:
                writer.transport.abort()  # the target is down: the dialler sees what it would see directly
                return
        connection = _Connection(writer, upstream)
        self._connections.add(connection)
        connection.tasks.append(asyncio.create_task(self._pump(reader, upstream, connection)))
        if upstream_reader is not None:
            connection.tasks.append(asyncio.create_task(self._pump(upstream_reader, writer, connection)))
        try:
            await asyncio.gather(*connection.tasks)
        except asyncio.CancelledError:
            pass
        finally:
            connection.close()
            self._connections.discard(connection)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter | None,
                    connection: _Connection) -> None:
        """Copy ``source`` to ``sink`` until EOF; while black-holed (or with no sink) read and drop."""
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(CHUNK):
                if self.blackholed or sink is None:
                    connection.discarded += len(data)
                    self.stats.discarded += len(data)
                    continue
                sink.write(data)
                self.stats.forwarded += len(data)
                await sink.drain()
        # EOF from one side: pass it on only while forwarding (a black hole shows nothing).
        if sink is not None and not self.blackholed:
            connection.close()
        else:
            await asyncio.Event().wait()  # hold the connection open until healed or stopped


class ProxyThread:
    """Link proxies on one event loop in a daemon thread, driven by blocking calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.links: dict[Any, LinkProxy] = {}
        self._thread = threading.Thread(target=self.loop.run_forever, name="blackhole-proxies", daemon=True)
        self._thread.start()

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def add(self, name: Any, target: tuple[str, int]) -> int:
        """A new proxy named ``name`` forwarding to ``target``; the port it listens on."""
        proxy = LinkProxy(target)
        port = self._call(proxy.start())
        self.links[name] = proxy
        return port

    def blackhole(self, name: Any) -> None:
        """Black-hole the link ``name``; in effect when this returns."""
        async def blackhole() -> None:
            self.links[name].blackhole()

        self._call(blackhole())

    def heal(self, name: Any) -> None:
        async def heal() -> None:
            self.links[name].heal()

        self._call(heal())

    def close(self) -> None:
        async def stop_all() -> None:
            for proxy in self.links.values():
                await proxy.stop()

        with contextlib.suppress(Exception):  # closing at exit: a proxy that does not stop must not mask the cause
            self._call(stop_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
