"""The node-to-node connection manager: one authenticated channel to every configured peer.

Dials, accepts, re-dials and keeps alive the secure channels of
:mod:`ocean_secret_store.node.channel`, and keeps the table of connected peers. Parity's TCP
rules (protocol.md §6.2) are the guide for the connection policy: the node with the bytewise
lower id dials, the higher one only accepts, and a silent peer is dropped and re-dialed. The
set of peers may change while the transport runs (:meth:`Transport.set_peers`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, Final, Self

from ..crypto.curve import Point
from ..exceptions import InternalError, InvalidNodeId, InvalidPoint, NodeDisconnected, SecretStoreError
from .channel import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_FRAME,
    Channel,
    HandshakeFailed,
    NodeSecret,
    abort_writer,
    accept_channel,
    check_max_frame,
    check_payload_size,
    describe_error,
    node_secret_value,
    open_channel,
    short_id,
)

__all__ = [
    "DEFAULT_KEEPALIVE_INTERVAL",
    "KEEPALIVE_MISSES",
    "MessageHandler",
    "PeerHandler",
    "Transport",
]

logger = logging.getLogger(__name__)

DEFAULT_KEEPALIVE_INTERVAL: Final = 1.0
#: A peer silent for this many keep-alive intervals is dropped (and re-dialed).
KEEPALIVE_MISSES: Final = 3
#: Longest pause between two dials of a peer that is down: a restarted peer is reached this fast.
DEFAULT_BACKOFF_MAX: Final = 0.25

MessageHandler = Callable[[bytes, bytes], Awaitable[None] | None]
PeerHandler = Callable[[bytes], Awaitable[None] | None]


class Transport:
    """Keeps one authenticated channel to every configured peer and dispatches their messages.

    The node with the bytewise lower id dials (and re-dials with jittered backoff until
    :meth:`stop`); the higher one only accepts, so there is one connection per pair. Messages
    from a peer reach ``on_message(peer_id, payload)`` in order, from one reader task per
    connection; a handler that raises is logged and the link stays up. A slow handler delays
    that peer's reading (back-pressure), including its keep-alive answers.
    Addresses of lower-id peers are never dialed. :meth:`set_peers` replaces the peers at any time.
    """

    def __init__(
        self,
        node_secret: NodeSecret,
        *,
        listen: tuple[str, int] | None = ("127.0.0.1", 0),
        peers: Mapping[bytes, tuple[str, int]],
        on_message: MessageHandler,
        on_connected: PeerHandler | None = None,
        on_disconnected: PeerHandler | None = None,
        keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL,
        connect_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_frame: int = DEFAULT_MAX_FRAME,
        backoff_initial: float = 0.1,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        max_pending_handshakes: int = 64,
    ) -> None:
        check_max_frame(max_frame)
        self._secret = node_secret_value(node_secret)
        self._id = Point.generator_mul(self._secret).to_bytes()
        self._peers: dict[bytes, tuple[str, int]] = {}
        self._dial_targets: list[bytes] = []
        self._inbound_allowed: frozenset[bytes] = frozenset()
        self._use_peers(self._checked_peers(peers))
        self._listen = listen
        self._on_message = on_message
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._keepalive_interval = keepalive_interval
        self._connect_timeout = connect_timeout
        self._max_frame = max_frame
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._max_pending_handshakes = max_pending_handshakes
        self._pending_handshakes = 0
        self._channels: dict[bytes, Channel] = {}
        # Peers whose connection state is known since start or since their last disconnection:
        # connected, or found unreachable (a dial failed; an inbound-only peer did not dial us
        # within the grace). The others are still "connecting" (see connection_states).
        self._settled: set[bytes] = set()
        self._unsettled_since: dict[bytes, float] = {}
        self._probes: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # The running dial loop of each higher-id peer (set_peers cancels and replaces them).
        self._dialers: dict[bytes, asyncio.Task[None]] = {}
        # on_disconnected calls for links that set_peers closed; stop() lets them finish.
        self._notices: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._changed: asyncio.Event | None = None
        self._started = False
        self._stopping = False

    def __repr__(self) -> str:
        return f"Transport(node={short_id(self._id)}, connected={len(self._channels)}/{len(self._peers)})"

    # -- properties ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound listening port (useful with ``listen=(host, 0)``)."""
        if self._server is None or not self._server.sockets:
            raise InternalError("the transport is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    def connected_peers(self) -> frozenset[bytes]:
        return frozenset(self._channels)

    def is_connected(self, peer: bytes) -> bool:
        return peer in self._channels

    def last_received(self, peer: bytes) -> float | None:
        """Loop time of the last frame (keep-alive pongs included) from ``peer``; None if not connected."""
        channel = self._channels.get(peer)
        return channel.last_received if channel is not None else None

    def keepalive_rtt(self, peer: bytes) -> float | None:
        """Seconds of the last keep-alive round trip with ``peer``; None if not connected or none yet."""
        channel = self._channels.get(peer)
        return channel.ping_rtt if channel is not None else None

    @property
    def inbound_grace(self) -> float:
        """How long a peer that dials us may take to do so before it counts as missing."""
        return 2 * self._backoff_max + min(self._connect_timeout, 1.0)

    def connection_states(self) -> dict[bytes, str]:
        """Every configured peer: ``connected``, ``connecting`` (not yet known either way since start
        or since its link was lost) or ``missing`` (a dial failed, or it did not dial us in time)."""
        now = asyncio.get_running_loop().time()
        out = {}
        for peer in self._peers:
            if peer in self._channels:
                out[peer] = "connected"
            elif peer in self._settled or (
                    peer in self._inbound_allowed and now - self._unsettled_since.get(peer, now) > self.inbound_grace):
                out[peer] = "missing"
            else:
                out[peer] = "connecting"
        return out

    def probe(self, peer: bytes) -> None:
        """Send ``peer`` a keep-alive ping now (its pong updates :meth:`last_received`); no-op if not connected."""
        channel = self._channels.get(peer)
        if channel is None:
            return

        async def ping() -> None:
            try:
                async with asyncio.timeout(max(self._keepalive_interval, 0.1)):
                    await channel.ping()
            except (TimeoutError, SecretStoreError):
                return  # the keep-alive drops a peer that stays silent

        task = asyncio.get_running_loop().create_task(ping(), name=f"probe {short_id(peer)}")
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen (if configured) and start dialing every higher-id peer (again after a stop)."""
        if self._started:
            raise InternalError("the transport is already started")
        self._started = True
        self._stopping = False
        self._changed = asyncio.Event()
        self._settled.clear()
        now = asyncio.get_running_loop().time()
        self._unsettled_since = dict.fromkeys(self._peers, now)
        if self._listen is not None:
            host, port = self._listen
            try:
                self._server = await asyncio.start_server(self._on_inbound, host, port)
            except OSError as exc:
                self._started = False
                raise InternalError(f"cannot listen on {host}:{port}") from exc
        for peer in self._dial_targets:
            self._start_dialing(peer)

    async def stop(self) -> None:
        """Stop listening and dialing, close every channel and wait for every task."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        if self._server is not None:
            self._server.close()
        # Every channel belongs to a dialer or inbound task whose cleanup aborts it.
        tasks = [*self._tasks, *self._probes]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*self._notices, return_exceptions=True)
        for channel in list(self._channels.values()):
            channel.abort()
        self._channels.clear()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self._started = False
        self._notify()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- public operations --------------------------------------------------------------------

    def set_peers(self, peers: Mapping[bytes, tuple[str, int]]) -> None:
        """Replace the configured peers (our own id, if listed, is ignored); safe while running.

        Call it from the transport's event loop. A new peer is treated as a configured peer is at
        :meth:`start`: dialed if its id is higher than ours, else accepted when it dials us, and
        ``connecting`` in :meth:`connection_states` until that is known. A removed peer's link is
        closed at once (``on_disconnected`` follows), its dial loop ends, and it is refused from
        then on. A higher-id peer whose address changed is re-dialed at the new address (its open
        link is closed first); a lower-id peer's address is never dialed, so its link stays.
        Before :meth:`start` or after :meth:`stop` only the table changes.

        :raises InvalidNodeId: a peer id is not a public key (nothing is changed then).
        """
        new = self._checked_peers(peers)
        old = self._peers
        removed = [p for p in old if p not in new]
        added = [p for p in new if p not in old]
        moved = [p for p in new if p in old and new[p] != old[p] and p > self._id]
        self._use_peers(new)
        if not self._started or self._stopping:
            return
        now = asyncio.get_running_loop().time()
        for peer in removed:
            logger.info("%s is no longer a peer", short_id(peer))
            self._stop_dialing(peer)
            self._close_link(peer)
            self._settled.discard(peer)
            self._unsettled_since.pop(peer, None)
        for peer in (*added, *moved):
            if peer in moved:
                host, port = new[peer]
                logger.info("%s moved to %s:%s: re-dialing it there", short_id(peer), host, port)
                self._stop_dialing(peer)
                self._close_link(peer)
            else:
                logger.info("%s is a new peer", short_id(peer))
            self._settled.discard(peer)
            self._unsettled_since[peer] = now
            if peer > self._id:
                self._start_dialing(peer)
        self._notify()

    async def send(self, peer_id: bytes, payload: bytes) -> None:
        """Send one message; FrameTooLarge if oversized, NodeDisconnected if ``peer_id`` is not connected."""
        check_payload_size(payload, self._max_frame)
        channel = self._channels.get(peer_id)
        if channel is None:
            raise NodeDisconnected(f"node {short_id(peer_id)} is not connected")
        await channel.send(payload)

    async def wait_connected(
        self, peers: Iterable[bytes] | None = None, timeout: float | None = None
    ) -> bool:
        """Wait until every one of ``peers`` (default: all configured, as :meth:`set_peers` changes
        them) is connected.

        False on timeout or when the transport is stopped meanwhile. ``timeout=None`` waits
        without bound (an id that is not a configured peer then never connects).
        """
        wanted = None if peers is None else set(peers)
        try:
            async with asyncio.timeout(timeout):
                while not (self._peers.keys() if wanted is None else wanted) <= self._channels.keys():
                    if self._changed is None or self._stopping or not self._started:
                        return False
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True

    # -- internals ----------------------------------------------------------------------------

    def _checked_peers(self, peers: Mapping[bytes, tuple[str, int]]) -> dict[bytes, tuple[str, int]]:
        for peer in peers:
            try:
                Point.from_bytes(peer)
            except InvalidPoint as exc:
                raise InvalidNodeId(f"peer id {bytes(peer)[:4].hex()}… is not a public key") from exc
        return {bytes(p): addr for p, addr in peers.items() if bytes(p) != self._id}

    def _use_peers(self, peers: dict[bytes, tuple[str, int]]) -> None:
        # Replaced, never mutated: a handshake in flight keeps the inbound set it started with,
        # and _run_connection checks the peer against the current table.
        self._peers = peers
        self._dial_targets = sorted(p for p in peers if p > self._id)
        self._inbound_allowed = frozenset(p for p in peers if p < self._id)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _start_dialing(self, peer: bytes) -> None:
        task = self._spawn(self._dial_loop(peer), f"dial {short_id(peer)}")
        self._dialers[peer] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._dialers.get(peer) is done:
                del self._dialers[peer]

        task.add_done_callback(forget)

    def _stop_dialing(self, peer: bytes) -> None:
        task = self._dialers.pop(peer, None)
        if task is not None:
            task.cancel()  # its connection, if any, ends in _run_connection's cleanup

    def _close_link(self, peer: bytes) -> None:
        """Drop ``peer``'s link now; the application hears of it (``on_disconnected``) right after."""
        channel = self._channels.pop(peer, None)
        if channel is None:
            return
        # Out of the table first, so the connection's own cleanup leaves the notice to us.
        channel.abort()
        task = asyncio.get_running_loop().create_task(
            self._invoke("on_disconnected", self._on_disconnected, peer), name=f"disconnected {short_id(peer)}")
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    def _settle(self, peer: bytes) -> None:
        if peer not in self._settled:
            self._settled.add(peer)
            self._notify()

    def _notify(self) -> None:
        # Wake every waiter on the current event, then give later waiters a fresh one.
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    async def _invoke(
        self, what: str, callback: Callable[..., Awaitable[None] | None] | None, *args: bytes
    ) -> None:
        if callback is None:
            return
        try:
            result = callback(*args)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("%s handler raised for peer %s; the connection stays up",
                             what, short_id(args[0]))

    async def _dial_loop(self, peer: bytes) -> None:
        delay = self._backoff_initial
        last_failure = ""
        while not self._stopping:
            address = self._peers.get(peer)
            if address is None:
                return  # no longer a peer (set_peers also cancels this loop)
            host, port = address
            try:
                channel = await open_channel(
                    host, port, node_secret=self._secret, allowed_peers=(peer,), expected_peer=peer,
                    timeout=self._connect_timeout, max_frame=self._max_frame,
                )
            except SecretStoreError as exc:
                reason = describe_error(exc)
                # Refusals matter to an operator; a peer that is simply down is routine. Repeats
                # of the same reason stay at debug so a long outage does not flood the log.
                notable = isinstance(exc, HandshakeFailed) and reason != last_failure
                level = logging.WARNING if notable else logging.DEBUG
                logger.log(level, "cannot reach %s at %s:%s: %s", short_id(peer), host, port, reason)
                last_failure = reason
                self._settle(peer)
            except Exception:
                # A bug must not silently end the re-dialing of this peer for the process's life.
                logger.exception("unexpected error while dialing %s", short_id(peer))
            else:
                delay = self._backoff_initial
                last_failure = ""
                await self._run_connection(channel)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._backoff_max)

    async def _on_inbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            if self._stopping:
                abort_writer(writer)
                return
            if self._pending_handshakes >= self._max_pending_handshakes:
                # Unauthenticated sockets cost a task each until their deadline: bound them.
                logger.warning("refused inbound connection from %s: too many pending handshakes",
                               writer.get_extra_info("peername"))
                abort_writer(writer)
                return
            self._pending_handshakes += 1
            try:
                channel = await accept_channel(
                    reader, writer, node_secret=self._secret, allowed_peers=self._inbound_allowed,
                    timeout=self._connect_timeout, max_frame=self._max_frame,
                )
            except SecretStoreError as exc:
                logger.warning("refused inbound connection from %s: %s",
                               writer.get_extra_info("peername"), describe_error(exc))
                return
            finally:
                self._pending_handshakes -= 1
            await self._run_connection(channel)
        except asyncio.CancelledError:
            # Only stop() cancels this task, which asyncio's server owns; Python 3.11's server
            # callback logs a cancelled handler as an error, so end normally instead.
            return
        except Exception:
            abort_writer(writer)
            logger.exception("unexpected error on an inbound connection")
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _run_connection(self, channel: Channel) -> None:
        peer = channel.peer_id
        if self._stopping or peer not in self._peers:
            if not self._stopping:
                # Its handshake began before set_peers removed it.
                logger.info("closed a new connection from %s: no longer a peer", short_id(peer))
            channel.abort()
            await channel.wait_closed()
            return
        # A new connection from a peer we think is connected means the old one is dead (the peer
        # restarted): replace it, telling the application the old link is gone first.
        try:
            while (previous := self._channels.pop(peer, None)) is not None:
                logger.info("replacing the connection to %s", short_id(peer))
                previous.abort()
                self._notify()
                await self._invoke("on_disconnected", self._on_disconnected, peer)
        except BaseException:
            channel.abort()  # cancelled (stop, set_peers) before this link was in the table
            raise
        if peer not in self._peers:  # removed while the old link's on_disconnected ran
            channel.abort()
            return
        self._channels[peer] = channel
        self._settle(peer)
        self._notify()
        logger.info("connected to %s", short_id(peer))
        keepalive = asyncio.get_running_loop().create_task(self._keepalive(channel), name="keep-alive")
        try:
            await self._invoke("on_connected", self._on_connected, peer)
            while True:
                payload = await channel.recv()
                await self._invoke("on_message", self._on_message, peer, payload)
        except SecretStoreError as exc:
            logger.info("connection to %s closed: %s", short_id(peer), describe_error(exc))
        except Exception:
            logger.exception("unexpected error on the connection to %s", short_id(peer))
        finally:
            # Bookkeeping first and synchronously: a cancellation (stop) may land on any await below.
            keepalive.cancel()
            channel.abort()
            current = self._channels.get(peer) is channel
            if current:
                del self._channels[peer]
                # Known again only once re-dialed (or, for a peer that dials us, after the grace).
                self._settled.discard(peer)
                if peer in self._peers:
                    self._unsettled_since[peer] = asyncio.get_running_loop().time()
                self._notify()
            try:
                await asyncio.gather(keepalive, return_exceptions=True)
                await channel.wait_closed()
            finally:
                if current:
                    await self._invoke("on_disconnected", self._on_disconnected, peer)

    async def _keepalive(self, channel: Channel) -> None:
        # Ticks at half the interval, so a live idle link is never silent much beyond one interval
        # (the cluster core suspects a peer silent for twice that).
        interval = self._keepalive_interval
        loop = asyncio.get_running_loop()
        tick = loop.time()
        while not channel.is_closed:
            await asyncio.sleep(interval / 2)
            now, previous, tick = loop.time(), tick, loop.time()
            silent = now - channel.last_received
            if now - previous > interval:
                # This process itself was paused (SIGSTOP, a stalled VM): the peer's silence is ours.
                # Ask it for a sign of life instead of dropping it, and judge at the next tick.
                channel.last_received = max(channel.last_received, now - interval)
                silent = interval
            if silent >= KEEPALIVE_MISSES * interval:
                logger.warning("dropping %s: silent for %.1f s", short_id(channel.peer_id), silent)
                channel.abort()
                return
            if silent >= interval / 2:
                # Bounded: a ping stuck behind a blocked send must not stall silence detection.
                try:
                    await asyncio.wait_for(channel.ping(), interval)
                except TimeoutError:
                    continue
                except SecretStoreError:
                    return
