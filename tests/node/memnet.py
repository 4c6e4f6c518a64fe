"""An in-memory cluster for session tests: N cluster cores wired by a lossless bus with fault hooks.

No sockets, no encryption: messages are delivered in order per (sender, receiver) pair through
asyncio queues, like the real transport. Faults: a node can be cut off (its links drop and
every peer sees it disconnected), frozen (its links stay up but nothing reaches it or leaves it
until it is thawed: a SIGSTOPped process), a ``drop`` predicate can swallow chosen messages, and a
``tamper`` function can replace a message in flight (a lying or buggy peer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ocean_secret_store.crypto.curve import Point
from ocean_secret_store.exceptions import NodeDisconnected
from ocean_secret_store.node.acl import AccessChecker, AllowAll, Decision
from ocean_secret_store.node.cluster import ClusterCore
from ocean_secret_store.node.storage import MemoryKeyStorage
from ocean_secret_store.protocol import messages as m


class Hub:
    def __init__(self) -> None:
        self.cores: dict[bytes, ClusterCore] = {}
        self.down: set[bytes] = set()
        self.drop: Callable[[bytes, bytes, m.Envelope], bool] = lambda src, dst, env: False
        self.tamper: Callable[[bytes, bytes, m.Envelope], m.Envelope] = lambda src, dst, env: env
        self.sent: list[tuple[bytes, bytes, str]] = []
        self._queues: dict[tuple[bytes, bytes], asyncio.Queue[bytes]] = {}
        self._pumps: list[asyncio.Task[None]] = []
        self.last_delivered: dict[tuple[bytes, bytes], float] = {}
        self.created = time.monotonic()  # the loop's clock: links count as heard from at creation
        self._thawed: dict[bytes, asyncio.Event] = {}

    def _running(self, node: bytes) -> asyncio.Event:
        event = self._thawed.get(node)
        if event is None:
            event = self._thawed[node] = asyncio.Event()
            event.set()
        return event

    def freeze(self, node: bytes) -> None:
        self._running(node).clear()

    def thaw(self, node: bytes) -> None:
        self._running(node).set()

    def connected(self, a: bytes, b: bytes) -> bool:
        return a not in self.down and b not in self.down

    async def deliver(self, src: bytes, dst: bytes, payload: bytes) -> None:
        if not self.connected(src, dst):
            raise NodeDisconnected()
        envelope = m.decode(payload)
        self.sent.append((src, dst, envelope.body.KIND))
        if self.drop(src, dst, envelope):
            return
        tampered = self.tamper(src, dst, envelope)
        if tampered is not envelope:
            payload = m.encode(tampered)
        key = (src, dst)
        if key not in self._queues:
            self._queues[key] = asyncio.Queue()
            self._pumps.append(asyncio.create_task(self._pump(src, dst, self._queues[key])))
        self._queues[key].put_nowait(payload)

    async def _pump(self, src: bytes, dst: bytes, queue: asyncio.Queue[bytes]) -> None:
        while True:
            payload = await queue.get()
            await self._running(src).wait()
            await self._running(dst).wait()
            if self.connected(src, dst):
                self.last_delivered[(src, dst)] = asyncio.get_running_loop().time()
                await self.cores[dst].on_message(src, payload)

    def isolate(self, node: bytes) -> None:
        self.down.add(node)
        for other, core in self.cores.items():
            if other != node:
                core.on_peer_disconnected(node)
        for other in self.cores:
            if other != node:
                self.cores[node].on_peer_disconnected(other)

    def isolate_at(self, kind: str, node: bytes) -> asyncio.Event:
        """Drop the first message of ``kind`` to or from ``node`` and isolate ``node`` then (a node
        lost at that phase of a session); the event is set once it happened."""
        fired = asyncio.Event()

        def drop(src: bytes, dst: bytes, envelope: m.Envelope) -> bool:
            if kind == envelope.body.KIND and node in (src, dst) and not fired.is_set():
                fired.set()
                self.isolate(node)
                return True
            return False

        self.drop = drop
        return fired

    def restore(self, node: bytes) -> None:
        self.down.discard(node)

    async def stop(self) -> None:
        for task in self._pumps:
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        for core in self.cores.values():
            await core.stop()


class MemoryNet:
    def __init__(self, hub: Hub, node_id: bytes) -> None:
        self.hub, self.node_id = hub, node_id

    async def send(self, peer: bytes, payload: bytes) -> None:
        await self.hub.deliver(self.node_id, peer, payload)

    def connected_peers(self) -> frozenset[bytes]:
        if self.node_id in self.hub.down:
            return frozenset()
        return frozenset(n for n in self.hub.cores if n != self.node_id and n not in self.hub.down)

    def connection_states(self) -> dict[bytes, str]:
        connected = self.connected_peers()
        return {n: "connected" if n in connected else "missing" for n in self.hub.cores if n != self.node_id}

    async def wait_connected(self, peers: object = None, timeout: float | None = None) -> bool:
        return False  # the bus has no connecting state: a peer is up or down

    def last_received(self, peer: bytes) -> float | None:
        if peer not in self.connected_peers():
            return None
        return self.hub.last_delivered.get((peer, self.node_id), self.hub.created)

    def probe(self, peer: bytes) -> None:
        return None  # no keep-alives on the bus: a frozen peer stays suspected until it answers

    def keepalive_rtt(self, peer: bytes) -> float | None:
        return None  # no keep-alives on the bus


class DenyList:
    """Permissive except for explicit (address, key) prohibitions: Parity's DummyAclStorage."""

    def __init__(self) -> None:
        self._prohibited: set[tuple[bytes, bytes]] = set()

    def prohibit(self, requester: bytes, key_id: bytes) -> None:
        self._prohibited.add((requester, key_id))

    async def decide(self, requester: bytes, key_id: bytes, author: bytes,
                     owner: bytes | None = None) -> Decision:
        if (requester, key_id) in self._prohibited:
            return Decision(False, "prohibited")
        return Decision(True, "not prohibited")

    async def close(self) -> None:
        return None


async def make_cluster(
    n: int, *, session_timeout: float = 2.0, acl_factory: Callable[[], AccessChecker] = AllowAll,
    servers: int | None = None, admin_public: Point | None = None,
) -> tuple[Hub, list[ClusterCore]]:
    """``n`` cores on one bus; the first ``servers`` (default all) are the servers set, the others
    are connected but hold nothing (nodes an admin session may add)."""
    hub = Hub()
    secrets = list(range(1001, 1001 + n))
    ids = [Point.generator_mul(s).to_bytes() for s in secrets]
    servers_set = ids[: n if servers is None else servers]
    for secret, node_id in zip(secrets, ids, strict=True):
        core = ClusterCore(
            node_secret=secret,
            nodes=servers_set if node_id in servers_set else [*servers_set, node_id],
            admin_public=admin_public,
            net=MemoryNet(hub, node_id),
            storage=MemoryKeyStorage(),
            acl=acl_factory(),
            session_timeout=session_timeout,
        )
        hub.cores[node_id] = core
        await core.start()
    return hub, [hub.cores[i] for i in ids]
