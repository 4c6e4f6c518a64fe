"""The cluster core of one key server: request/reply plumbing between nodes, the session
tables, and the public operations (generation, storing, retrieval, signing) the HTTP API calls.

Transport-agnostic: it talks to peers through a :class:`Net` (the real encrypted TCP
transport, or an in-memory bus in tests) and never opens a socket itself. The multi-round
logic of each operation lives in :mod:`ocean_secret_store.node.sessions`; this module owns
what they share: request ids, reply futures, timeouts, peer loss, session expiry.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, Protocol, TypeVar, cast

from ..crypto.curve import Point, Rng, default_rng
from ..crypto.hashes import address_of, servers_set_hash
from ..exceptions import (
    KEY_SERVER_ERRORS,
    AccessDenied,
    ConsensusTemporaryUnreachable,
    DuplicateSessionId,
    InternalError,
    InvalidMessage,
    KeyServerError,
    NodeDisconnected,
)
from ..metrics import NodeMetrics
from ..protocol import bound as b
from ..protocol import messages as m
from ..protocol.admin import AdminRequest, verify_status
from .acl import AccessChecker, Decision
from .audit import Audit, NullAudit
from .liveness import Liveness
from .quotas import WIRE_NAME, SessionCap, TooManyRequests
from .sessions import (
    batch,
    decryption,
    delegation,
    ecdsa,
    genbatch,
    generation,
    migration,
    negotiation,
    signing,
    storing,
)
from .sessions.base import (
    AdminSession,
    Maintenance,
    OnewayHandler,
    Requester,
    RequestHandler,
    SessionState,
    StateT,
    TableKey,
)
from .storage import META_ADMIN_SESSION, META_SERVERS_SET, KeyShare, KeyStorage

log = logging.getLogger(__name__)

#: The result of a public operation (a point, a blob, a shadow result, nothing).
ResultT = TypeVar("ResultT")
#: The reply type a request expects.
ReplyT = TypeVar("ReplyT", bound=m.Message)
ItemT = TypeVar("ItemT")
HandlerT = TypeVar("HandlerT")


class Net(Protocol):
    """What the core needs from a transport."""

    async def send(self, peer: bytes, payload: bytes) -> None: ...

    def connected_peers(self) -> frozenset[bytes]: ...

    def connection_states(self) -> Mapping[bytes, str]:
        """Every peer: ``connected``, ``connecting`` (not known either way yet) or ``missing``."""
        ...

    async def wait_connected(self, peers: Iterable[bytes] | None = None, timeout: float | None = None) -> bool: ...

    def last_received(self, peer: bytes) -> float | None:
        """Loop time of the last frame from ``peer`` (keep-alive pongs included); None if not connected."""
        ...

    def probe(self, peer: bytes) -> None:
        """Ping ``peer`` now (its pong shows in :meth:`last_received`)."""
        ...

    def keepalive_rtt(self, peer: bytes) -> float | None:
        """Seconds of the last keep-alive round trip with ``peer`` (None: not connected, or none yet)."""
        ...


class PeerTimeout(NodeDisconnected):
    """A peer did not answer a request in time (reported as NodeDisconnected)."""


def _dispatch(*tables: Mapping[type[m.Message], HandlerT]) -> Mapping[type[m.Message], HandlerT]:
    out: dict[type[m.Message], HandlerT] = {}
    for table in tables:
        for cls, handler in table.items():
            if cls in out:
                raise TypeError(f"two session handlers for {cls.KIND}")
            out[cls] = handler
    return MappingProxyType(out)


#: Handlers of requests (answered, run as tasks) and of one-way messages (run inline, in order).
REQUEST_HANDLERS: Final[Mapping[type[m.Message], RequestHandler]] = _dispatch(
    generation.REQUEST_HANDLERS, storing.REQUEST_HANDLERS, negotiation.REQUEST_HANDLERS,
    decryption.REQUEST_HANDLERS, signing.REQUEST_HANDLERS, delegation.REQUEST_HANDLERS, migration.REQUEST_HANDLERS,
    ecdsa.REQUEST_HANDLERS, batch.REQUEST_HANDLERS, genbatch.REQUEST_HANDLERS,
)
ONEWAY_HANDLERS: Final[Mapping[type[m.Message], OnewayHandler]] = _dispatch(generation.ONEWAY_HANDLERS,
                                                                            migration.ONEWAY_HANDLERS,
                                                                            ecdsa.ONEWAY_HANDLERS,
                                                                            genbatch.ONEWAY_HANDLERS)
#: Background loops of the session modules, started with the core (e.g. resolving unfinished stores).
MAINTENANCE: Final[tuple[Maintenance, ...]] = storing.MAINTENANCE
#: Requests that open a session on a member: refused while the node runs its maximum of sessions.
#: A later message of a session already admitted never is, so no admitted session is cut halfway;
#: a store is the tail of a generate-and-store and is not refused either.
SESSION_OPENERS: Final = frozenset({m.GenInit, m.DecryptRequest, m.SchnorrNonceRequest, m.DelegateRequest,
                                   m.EcdsaStart, m.DecryptBatchRequest, m.GenBatchInit})
#: Member work that counts as a running session while its handler runs (a metadata probe does not).
SESSION_WORK: Final = frozenset(REQUEST_HANDLERS) - {m.KeyInfoRequest}


def _owner_reason(owner: bytes | None) -> str:
    """The audit reason of a generation that names an owner-to-be (a public address)."""
    return "" if owner is None else f"owner-to-be 0x{owner.hex()}"


class ClusterCore:
    """One node's view of the cluster: its secret, its peers, its storage and access checker."""

    def __init__(
        self,
        *,
        node_secret: int,
        nodes: Iterable[bytes],
        net: Net,
        storage: KeyStorage,
        acl: AccessChecker,
        session_timeout: float = 5.0,
        rng: Rng | None = None,
        audit: Audit | None = None,
        max_sessions: int = 0,
        require_bound: Iterable[str] = (),
        keepalive: float = 1.0,
        hedge_max: float = 0.5,
        min_ready_peers: int | None = None,
        admin_public: Point | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.node_secret = node_secret
        #: What /metrics shows of this node (a registry of its own unless the process gives one).
        self.metrics = metrics if metrics is not None else NodeMetrics()
        self.node_id = Point.generator_mul(node_secret).to_bytes()
        self.net = net
        self.storage = storage
        #: The administrator's key (``[node] admin_public``): admin sessions need its signatures.
        self.admin_public = admin_public
        # The servers set: the configured nodes until an admin session commits another (persisted).
        stored_set = storage.get_meta(META_SERVERS_SET)
        configured = set(nodes) | {self.node_id}
        self._servers_set: tuple[bytes, ...] = tuple(sorted(
            configured if stored_set is None else {bytes.fromhex(n) for n in stored_set}))
        stored_admin = storage.get_meta(META_ADMIN_SESSION)
        self._admin_session: AdminSession | None = (
            None if stored_admin is None else AdminSession.from_json(stored_admin))
        #: What ``GET /admin/status`` shows of the admin session this node runs or ran last as master.
        self.admin_progress: dict[str, Any] = {}
        self.acl = acl
        self.session_timeout = session_timeout
        self.rng: Rng = rng or default_rng
        self.audit: Audit = audit or NullAudit()
        self._random = random.SystemRandom()
        self._rids = itertools.count(1)
        self._pending: dict[int, tuple[bytes, asyncio.Future[m.Message]]] = {}
        #: Round trips and suspicion of every peer (a peer silent for two keep-alive intervals is suspected).
        self.liveness = Liveness(last_heard=net.last_received, max_hedge=max(min(hedge_max, session_timeout / 4), 0.02),
                                 silence=2 * keepalive)
        #: Connected, unsuspected peers this node needs to answer ready (default: the majority
        #: threshold t = (n-1)//2 of the cluster, what a key of that threshold needs besides this node).
        self.min_ready_peers = (len(self.nodes) - 1) // 2 if min_ready_peers is None else min_ready_peers
        self._tasks: set[asyncio.Task[Any]] = set()
        #: per-kind session tables, created by the session modules: name -> {session id -> state}
        self.sessions: dict[str, dict[bytes, SessionState]] = {}
        self._reaper: asyncio.Task[None] | None = None
        self.store_lock = asyncio.Lock()
        # Decrypted key records of recent keys: a SQLite read plus its authenticated decryption
        # costs ~0.35 ms and a thread hop, on every node of every retrieval. Every write goes
        # through this object, so the cache cannot go stale.
        self._keys: OrderedDict[bytes, KeyShare] = OrderedDict()
        self.key_cache_size = 4096
        # Batch generation sessions this node runs at once as master, over every request.
        self._batch_sessions = asyncio.Semaphore(genbatch.CONCURRENT_SESSIONS)
        #: Sessions this node runs at once, as entry and as member ([quotas] max_sessions; 0: no cap).
        self.session_cap = SessionCap(max_sessions)
        #: Operations for which this node refuses a bare key-id signature ([security] in the config).
        self.require_bound: frozenset[str] = frozenset(require_bound)
        # The bound-signature nonces this node accepted, each until its expiry (bounded).
        self.nonces = b.NonceCache()
        self.stats = {"requests_in": 0, "requests_out": 0, "errors_out": 0, "invalid_messages": 0}
        #: When the link to each peer was last lost (``time.monotonic()``): the status page tells a
        #: peer being re-dialed after a loss (down) from one not reached yet since start.
        self.links_lost: dict[bytes, float] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_sessions())
        for job in MAINTENANCE:  # background loops of the session modules (they pace themselves)
            self.spawn(job(self))

    async def stop(self) -> None:
        if self._reaper:
            self._reaper.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *([self._reaper] if self._reaper else []), return_exceptions=True)
        for _, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(NodeDisconnected("node is stopping"))

    async def _reap_sessions(self) -> None:
        # Sessions of a failed master or a lost peer must not linger: every entry carries its
        # creation time and is dropped once it is older than the session timeout.
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, self.session_timeout / 2))
            now = loop.time()
            for table in self.sessions.values():
                for sid in [sid for sid, state in table.items() if now - state.created > self.session_timeout * 2]:
                    table.pop(sid).expire()

    def table(self, key: TableKey[StateT]) -> dict[bytes, StateT]:
        # A table is only ever reached through its TableKey, which fixes the type of its entries.
        return cast("dict[bytes, StateT]", self.sessions.setdefault(key.name, {}))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- servers set and admin sessions ----------------------------------------------------------

    @property
    def servers_set(self) -> tuple[bytes, ...]:
        return self._servers_set

    @property
    def nodes(self) -> tuple[bytes, ...]:
        """The nodes this node works with: the servers set (with itself), and during an admin
        session the new set too (a store then reaches the new holders as well)."""
        nodes = {*self._servers_set, self.node_id}
        if self._admin_session is not None:
            nodes |= set(self._admin_session.request.new_set)
        return tuple(sorted(nodes))

    @property
    def admin_session(self) -> AdminSession | None:
        return self._admin_session

    async def begin_admin(self, session: AdminSession) -> None:
        await self.storage_call(None, lambda s: s.put_meta(META_ADMIN_SESSION, session.to_json()))
        self._admin_session = session
        log.info("admin session %s (%s) begins, master 0x%s..", session.session.hex()[:16], session.request.operation,
                 session.master.hex()[:16], extra={"operation": f"admin_{session.request.operation}",
                                                   "role": "entry" if session.master == self.node_id else "member"})

    async def end_admin(self, commit: bool) -> None:
        session = self._admin_session
        if session is None:
            return
        if commit:
            new_set = session.request.new_set
            await self.storage_call(None, lambda s: s.put_meta(META_SERVERS_SET, [n.hex() for n in new_set]))
            self._servers_set = tuple(sorted(new_set))
        await self.storage_call(None, lambda s: s.put_meta(META_ADMIN_SESSION, None))
        self._admin_session = None
        log.info("admin session %s %s", session.session.hex()[:16], "committed" if commit else "cancelled",
                 extra={"operation": f"admin_{session.request.operation}"})

    def old_set_view(self, operation: str = "change") -> tuple[bytes, ...]:
        """The old set an administrator signs for this node as master (``migration.old_set_view``)."""
        return migration.old_set_view(self, operation)

    async def admin(self, request: AdminRequest, force: bool = False) -> dict[str, Any]:
        """Run an admin session as its master (it goes on if the HTTP request that asked for it goes away)."""
        operation = f"admin_{request.operation}"
        subject = servers_set_hash(request.new_set)  # the audit's "key id" of an admin session: the new set's hash
        admin = None if self.admin_public is None else address_of(self.admin_public)
        task = self.spawn(migration.run(self, request, force=force))
        try:
            with self.metrics.session(operation):
                report = await asyncio.shield(task)
        except KeyServerError as exc:
            self.audit.record(operation, subject, admin, "entry", "refused" if exc.status in (400, 403, 409) else
                              "failed", f"{exc.parity_name}: {exc.detail}" if exc.detail else exc.parity_name)
            raise
        counts = f"{report.get('done', 0)} moved, {report.get('skipped', 0)} skipped of {report.get('total', 0)}"
        self.audit.record(operation, subject, admin, "entry", "ok", counts)
        return report

    def admin_status(self, expiry: int | None = None, signature: bytes | None = None) -> dict[str, Any]:
        """``GET /admin/status``: the servers set, the admin session this node takes part in, and the
        progress of the one it runs (or ran last) as master, with counts only of the keys it left
        behind (``lost``) and of its errors (which name keys). With the administrator's signature over
        this node and ``expiry`` (``GET /admin/status/{expiry}/{signature}``, protocol/admin.py), the
        progress in full: those keys and errors too.

        :raises AccessDenied: a signature that is not the administrator's, expired, or no admin key here.
        """
        full = signature is not None
        if signature is not None:
            if expiry is None:
                raise AccessDenied("a signed status request names its expiry")
            verify_status(signature, self.node_id, expiry, self.admin_public, time.time())
        connected = self.reachable()
        session = self._admin_session
        progress = dict(self.admin_progress)
        if progress:
            progress["lost_count"] = len(progress.get("lost") or ())
            progress["error_count"] = len(progress.get("errors") or ())
        if not full:
            progress.pop("lost", None)
            progress.pop("errors", None)
        return {
            "view": "admin" if full else "public",
            "node_id": "0x" + self.node_id.hex(),
            "servers_set": ["0x" + n.hex() for n in self._servers_set],
            "connected": ["0x" + n.hex() for n in sorted(connected | {self.node_id})],
            "admin_session": None if session is None else {
                "session": "0x" + session.session.hex(), "operation": session.request.operation,
                "master": "0x" + session.master.hex(), "new_set": ["0x" + n.hex() for n in session.request.new_set],
            },
            "progress": progress,
        }

    # -- peers ---------------------------------------------------------------------------------

    @property
    def others(self) -> tuple[bytes, ...]:
        return tuple(n for n in self.nodes if n != self.node_id)

    def connected_others(self) -> frozenset[bytes]:
        return self.net.connected_peers() & frozenset(self.others)

    def reachable(self) -> frozenset[bytes]:
        """Every peer connected now, in the servers set or not (a node an admin session adds)."""
        return self.net.connected_peers() - {self.node_id}

    def peer_states(self) -> Mapping[bytes, str]:
        """Every peer's connection: ``connected``, ``connecting`` or ``missing`` (the transport's view)."""
        return self.net.connection_states()

    def running_sessions(self) -> int:
        return self.session_cap.active

    def storage_figures(self) -> tuple[int, int]:
        """(keys held, database bytes on disk); blocking: for :meth:`NodeMetrics.refresh`, in a thread."""
        return self.storage.key_count(), self.storage.disk_bytes()

    def require_all_connected(self) -> None:
        """For operations that need every node (generation, storing): refuse at once, rather than
        wait out the session timeout, when one is disconnected or suspected."""
        connected = self.net.connected_peers()
        now = asyncio.get_running_loop().time()
        if any(n not in connected or self.liveness.is_suspected(n, now) for n in self.others):
            raise NodeDisconnected()

    def suspected(self) -> frozenset[bytes]:
        """Peers suspected now (an operation hedged around them, or silent for too long)."""
        now = asyncio.get_running_loop().time()
        connected = self.net.connected_peers()
        return frozenset(n for n in self.others if self.liveness.is_suspected(n, now, n in connected))

    def candidates(self, nodes: Iterable[bytes]) -> list[bytes]:
        """``nodes`` that may be asked now, best first: connected and unsuspected, then still
        connecting, then suspected; each tier in a random order; peers known to be down are left out."""
        states = self.net.connection_states()
        suspected = self.suspected()
        tiers: tuple[list[bytes], list[bytes], list[bytes]] = ([], [], [])
        for node in nodes:
            state = states.get(node)
            if node in suspected and state != "missing":
                tiers[2].append(node)
            elif state == "connected":
                tiers[0].append(node)
            elif state == "connecting":
                tiers[1].append(node)
        return [node for tier in tiers for node in self.shuffled(tier)]

    def hedge_delay(self, peers: Iterable[bytes]) -> float:
        return self.liveness.hedge_delay(peers)

    def suspect(self, peers: Iterable[bytes]) -> None:
        now = asyncio.get_running_loop().time()
        for peer in peers:
            if self.liveness.suspect(peer, now):
                log.info("suspecting 0x%s..: no answer within the hedge delay", peer.hex()[:16])
                self.net.probe(peer)  # a live peer answers the ping at once and is cleared

    def readiness(self) -> dict[str, Any]:
        """``GET /ready``: ready once no peer is still connecting and at least ``min_ready_peers``
        are connected and unsuspected; lists the missing, connecting and suspected peers."""
        states = self.net.connection_states()
        suspected = self.suspected()
        by_state: dict[str, list[str]] = {"connected": [], "connecting": [], "missing": []}
        for node in self.others:
            by_state[states.get(node, "missing")].append("0x" + node.hex())
        usable = [n for n in self.others if states.get(n) == "connected" and n not in suspected]
        return {
            "ready": not by_state["connecting"] and len(usable) >= self.min_ready_peers,
            "node_id": "0x" + self.node_id.hex(),
            "usable_peers": len(usable),
            "min_ready_peers": self.min_ready_peers,
            "connecting": by_state["connecting"],
            "missing": by_state["missing"],
            "suspected": ["0x" + n.hex() for n in self.others if n in suspected],
        }

    def shuffled(self, items: Iterable[ItemT]) -> list[ItemT]:
        """``items`` in a uniformly random order (from the system CSPRNG)."""
        out = list(items)
        self._random.shuffle(out)
        return out

    def on_peer_disconnected(self, peer: bytes) -> None:
        """Fail every request waiting on ``peer`` at once, so sessions fail over without waiting.
        A suspicion outlives the link: it ends when a new connection brings a frame."""
        self.links_lost[peer] = time.monotonic()
        for target, fut in list(self._pending.values()):
            if target == peer and not fut.done():
                fut.set_exception(NodeDisconnected())
        for table in self.sessions.values():
            for state in list(table.values()):
                state.peer_lost(peer)

    # -- messaging -----------------------------------------------------------------------------

    async def send(self, peer: bytes, body: m.Message) -> None:
        await self.net.send(peer, m.encode(m.Envelope(body)))

    async def request(self, peer: bytes, body: m.Message, reply: type[ReplyT], timeout: float | None = None, *,
                      sample: bool = True) -> ReplyT:
        """Send ``body`` to ``peer`` and wait for its reply of type ``reply``.

        A remote error is re-raised here; an answer of another type is the peer's InvalidMessage.
        ``sample=False``: the answer's time is no round-trip sample of the peer (a batch's answer
        takes the members' work on many keys).
        """
        rid = next(self._rids)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[m.Message] = loop.create_future()
        self.stats["requests_out"] += 1
        try:
            async with asyncio.timeout(timeout if timeout is not None else self.session_timeout):
                if peer not in self.net.connected_peers():
                    await self._await_connection(peer)
                self._pending[rid] = (peer, fut)
                sent = loop.time()
                await self.net.send(peer, m.encode(m.Envelope(body, rid=rid)))
                answer = await fut
                if sample:
                    self.liveness.observe(peer, loop.time() - sent)
        except TimeoutError as exc:
            raise PeerTimeout() from exc
        finally:
            self._pending.pop(rid, None)
        if isinstance(answer, m.ErrorReply):
            raise error_from_reply(answer)
        if not isinstance(answer, reply):
            raise InvalidMessage(f"{body.KIND} was answered with {answer.KIND}, not {reply.KIND}")
        return answer

    async def _await_connection(self, peer: bytes) -> None:
        # A peer still connecting (it just restarted, or this node did) is worth the wait: the
        # caller's hedging asks others meanwhile if it takes too long. One known down is not.
        if self.net.connection_states().get(peer) != "connecting" or not await self.net.wait_connected([peer]):
            raise NodeDisconnected()

    async def on_message(self, peer: bytes, payload: bytes) -> None:
        """Entry point for every frame a peer sends; never raises."""
        try:
            envelope = m.decode(payload)
        except InvalidMessage as exc:
            self.stats["invalid_messages"] += 1
            log.warning("dropping malformed message from %s: %s", peer.hex()[:16], exc.detail or exc)
            # A request or reply this node cannot read (a peer of another version): its requester,
            # or our own request it answers, fails now instead of waiting out its timeout.
            rid, reply_to = m.envelope_ids(payload)
            entry = None if reply_to is None else self._pending.get(reply_to)
            if entry and entry[0] == peer and not entry[1].done():
                entry[1].set_exception(InvalidMessage(f"unreadable answer: {exc.detail or exc}"))
            elif rid is not None and reply_to is None:
                await self._reply(peer, rid, m.ErrorReply(error="InvalidMessage", detail=None))
            return
        body = envelope.body
        if envelope.reply_to is not None:
            entry = self._pending.get(envelope.reply_to)
            if entry and entry[0] == peer and not entry[1].done():
                entry[1].set_result(body)
            return
        if envelope.rid is not None:
            handler = REQUEST_HANDLERS.get(type(body))
            if handler is None:
                await self._reply(peer, envelope.rid, m.ErrorReply(error="InvalidMessage", detail=None))
                return
            self.stats["requests_in"] += 1
            if type(body) in SESSION_OPENERS and self.session_cap.full:
                # Refused at once, before any work: the entry node reports it (429) or replaces us.
                refusal = self.session_cap.refusal(f"key server 0x{self.node_id.hex()[:16]}..")
                self.metrics.member_request(body.KIND, refusal)
                self.metrics.quota_refused(refusal.quota)
                await self._reply(peer, envelope.rid, m.ErrorReply(error=WIRE_NAME, detail=refusal.detail))
                return
            self.spawn(self._serve(handler, peer, envelope.rid, body))
            return
        oneway = ONEWAY_HANDLERS.get(type(body))
        if oneway is None:
            self.stats["invalid_messages"] += 1
            return
        try:
            oneway(self, peer, body)
        except KeyServerError as exc:
            log.info("one-way %s from %s refused: %s", body.KIND, peer.hex()[:16], exc)
        except Exception:  # a peer's message must never take the node down
            log.exception("one-way handler for %s failed", body.KIND)

    async def _serve(self, handler: RequestHandler, peer: bytes, rid: int, body: m.Message) -> None:
        try:
            if type(body) in SESSION_WORK:
                with self.session_cap.hold():
                    reply = await handler(self, peer, body)
            else:
                reply = await handler(self, peer, body)
            out: m.Message = reply if reply is not None else m.Ack()
            self.metrics.member_request(body.KIND, None)
        except KeyServerError as exc:
            self.stats["errors_out"] += 1
            self.metrics.member_request(body.KIND, exc)
            out = m.ErrorReply(error=exc.parity_name, detail=exc.detail)
        except asyncio.CancelledError as exc:
            self.metrics.member_request(body.KIND, exc)
            raise
        except Exception as exc:
            log.exception("handler for %s failed", body.KIND)
            self.metrics.member_request(body.KIND, exc)
            out = m.ErrorReply(error="Internal", detail="unexpected error while processing the request")
        await self._reply(peer, rid, out)

    async def _reply(self, peer: bytes, rid: int, body: m.Message) -> None:
        try:
            await self.net.send(peer, m.encode(m.Envelope(body, reply_to=rid)))
        except KeyServerError as exc:
            log.info("could not answer %s: %s", peer.hex()[:16], exc)

    # -- storage (blocking SQLite calls run off the event loop) ---------------------------------

    def _remember(self, key_id: bytes, share: KeyShare) -> None:
        self._keys[key_id] = share
        self._keys.move_to_end(key_id)
        while len(self._keys) > self.key_cache_size:
            self._keys.popitem(last=False)

    async def load_key(self, key_id: bytes) -> KeyShare | None:
        share = self._keys.get(key_id)
        if share is not None:
            self._keys.move_to_end(key_id)
            return share
        share = await asyncio.to_thread(self.storage.get, key_id)
        if share is not None:
            self._remember(key_id, share)
        return share

    async def has_key(self, key_id: bytes) -> bool:
        """Whether this node stores ``key_id`` (without decrypting the record)."""
        return key_id in self._keys or await asyncio.to_thread(self.storage.contains, key_id)

    async def usable_key(self, key_id: bytes) -> bool:
        """Whether this node holds an active version of ``key_id`` (else a holder runs the operation)."""
        share = await self.load_key(key_id)
        return share is not None and share.usable

    async def insert_key(self, key_id: bytes, share: KeyShare) -> None:
        await asyncio.to_thread(self.storage.insert, key_id, share)
        self._remember(key_id, share)

    async def storage_call(self, key_id: bytes | None, fn: Callable[[KeyStorage], ItemT]) -> ItemT:
        """Run ``fn(storage)`` off the event loop for a write or read that the typed helpers do not
        cover; the cached record of ``key_id`` (None: a call about no single key) is dropped, so it is
        read back next time."""
        try:
            return await asyncio.to_thread(fn, self.storage)
        finally:
            if key_id is not None:
                self._keys.pop(key_id, None)

    async def update_key(self, key_id: bytes, share: KeyShare) -> None:
        try:
            await asyncio.to_thread(self.storage.update, key_id, share)
        except BaseException:
            self._keys.pop(key_id, None)  # the write's outcome is unknown: read it back next time
            raise
        self._remember(key_id, share)

    # -- access --------------------------------------------------------------------------------

    async def access(self, requester: Requester, key_id: bytes, author: bytes, owner: bytes | None = None) -> Decision:
        """This node's own access decision for a key of ``author`` and owner-to-be ``owner`` (as this
        node stored them); a checker that fails counts as a refusal."""
        try:
            decision = await self.acl.decide(requester.address, key_id, author, owner)
        except Exception as exc:  # noqa: BLE001 -- whatever breaks in a checker (chain down, a bug) is a refusal, never an allow
            log.warning("access check failed for key %s: %s", key_id.hex()[:16], exc,
                        extra={"key_id": key_id, "requester": requester.address, "decision": "failed",
                               "reason": "access check failed"})
            self.metrics.access_check("failed")
            return Decision(False, f"access check failed: {exc}"[:300])
        self.metrics.access_check("allowed" if decision.allowed else "denied")
        return decision

    # -- bound signatures ----------------------------------------------------------------------

    def bound_required(self, operation: str) -> bool:
        """Whether this node refuses a bare key-id signature for ``operation``.

        ``generate_document_key`` stores a document key too: requiring bound stores requires it.
        """
        if operation in self.require_bound:
            return True
        return operation == "generate_document_key" and "store_document_key" in self.require_bound

    def check_bound(self, operation: str, key_id: bytes, signer: bytes, arguments: bytes,
                    bound: b.Bound | None) -> None:
        """Accept the request's bound signature (or its absence, where not required) and claim its nonce.

        :raises BoundSignatureError: required and missing; wrong, expired, or a nonce seen before.
        """
        if bound is None:
            if self.bound_required(operation):
                raise b.BoundSignatureError(
                    f"this node requires a bound signature for {operation} "
                    f"(headers {b.HEADER} and {b.SIGNATURE_HEADER})")
            return
        now = time.time()
        b.verify(bound, operation, key_id, arguments, signer=signer, now=now)
        self.nonces.claim(signer, bound, now)

    # -- public operations (each bounded by the session timeout) --------------------------------

    async def _bounded(self, coro: Awaitable[ResultT], on_timeout: type[KeyServerError]) -> ResultT:
        try:
            async with asyncio.timeout(self.session_timeout):
                return await coro
        except TimeoutError as exc:
            raise on_timeout() from exc

    async def _entry(self, operation: str, key_id: bytes, signature: bytes,
                     run: Callable[[Requester], Awaitable[ResultT]], on_timeout: type[KeyServerError],
                     bound: b.Bound | None = None, arguments: bytes = b"", ok_reason: str = "") -> ResultT:
        """Run one public operation as the entry node: recover the requester, check its bound
        signature, bound the run in time, audit it (``ok_reason`` with a success), count it."""
        with self.metrics.session(operation):
            return await self._audited_entry(operation, key_id, signature, run, on_timeout, bound, arguments,
                                             ok_reason)

    async def _audited_entry(self, operation: str, key_id: bytes, signature: bytes,
                             run: Callable[[Requester], Awaitable[ResultT]], on_timeout: type[KeyServerError],
                             bound: b.Bound | None, arguments: bytes, ok_reason: str) -> ResultT:
        try:
            requester = Requester.from_signature(signature, key_id)
        except KeyServerError as exc:
            self.audit.record(operation, key_id, None, "entry", "refused", exc.parity_name)
            raise
        try:
            self.check_bound(operation, key_id, requester.address, arguments, bound)
        except KeyServerError as exc:
            reason = f"{exc.parity_name}: {exc.detail}"
            self.audit.record(operation, key_id, requester.address, "entry", "refused", reason)
            raise
        try:
            self.session_cap.admit()
            with self.session_cap.hold():
                result = await self._bounded(run(requester), on_timeout)
        except TooManyRequests as exc:  # this node's session cap, or a member's
            self.audit.record(operation, key_id, requester.address, "entry", "refused", f"{WIRE_NAME}: {exc.detail}")
            raise
        except KeyServerError as exc:
            decision = "refused" if exc.status in (400, 403, 404) else "failed"
            # A fixed-text variant (a refusal's "Consensus unreachable") carries this node's reason
            # as its detail: audited here, never sent to the client.
            reason = f"{exc.parity_name}: {exc.detail}" if exc.text and exc.detail else exc.parity_name
            self.audit.record(operation, key_id, requester.address, "entry", decision, reason)
            raise
        except BaseException:
            self.audit.record(operation, key_id, requester.address, "entry", "failed", "Internal")
            raise
        self.audit.record(operation, key_id, requester.address, "entry", "ok", ok_reason)
        return result

    def audit_member(self, operation: str, key_id: bytes, requester: bytes | None, decision: str,
                     reason: str = "") -> None:
        self.audit.record(operation, key_id, requester, "member", decision, reason)

    async def generate_server_key(self, key_id: bytes, signature: bytes, threshold: int,
                                  bound: b.Bound | None = None, owner: bytes | None = None) -> Point:
        return await self._entry("generate_server_key", key_id, signature,
                                 lambda r: generation.run(self, key_id, r.address, threshold, owner), NodeDisconnected,
                                 bound, b.threshold_arguments(threshold, owner), _owner_reason(owner))

    async def generate_server_keys(
        self, requests: Sequence[tuple[bytes, bytes, int, bytes | None]],
        admit: Callable[[bytes | None], None] | None = None,
    ) -> list[Point | KeyServerError]:
        """``POST /server_key_batch`` (ours): generate every ``(key id, signature, threshold,
        owner-to-be)``; each key's public or its own error, in order (:mod:`.sessions.genbatch`).

        Each key is checked and audited as a single generation is (its signature over the key id
        makes its requester the author; a batch carries no bound signature, so where one is required
        its keys are refused); a key id that comes twice is refused the second time. ``admit`` (the
        HTTP layer's quotas) is called with each key's requester (None: its signature does not
        recover) and may refuse it (raising TooManyRequests). The keys run
        in batch sessions of one threshold (each under the session cap and the session timeout), a
        few at once; a session that fails fails its keys only.
        """
        operation = "generate_server_key"
        results: list[Point | KeyServerError | None] = [None] * len(requests)
        by_threshold: dict[int, list[tuple[int, genbatch.BatchKey]]] = {}
        seen: set[bytes] = set()
        for index, (key_id, signature, threshold, owner) in enumerate(requests):
            if index % genbatch.YIELD_EVERY == genbatch.YIELD_EVERY - 1:
                await asyncio.sleep(0)  # a signature recovery a key: a long batch does not hold the event loop
            try:
                requester = Requester.from_signature(signature, key_id)
            except KeyServerError as exc:
                refusal: KeyServerError = exc
                try:  # as for the single route: the quotas count it (its address) before the core refuses it
                    if admit is not None:
                        admit(None)
                except TooManyRequests as over:
                    self.metrics.quota_refused(over.quota)
                    refusal = over
                self.audit.record(operation, key_id, None, "entry", "refused", refusal.parity_name)
                results[index] = refusal
                continue
            try:
                if key_id in seen:
                    raise DuplicateSessionId()
                self.check_bound(operation, key_id, requester.address, b.threshold_arguments(threshold, owner), None)
                if admit is not None:
                    admit(requester.address)
            except KeyServerError as exc:
                if isinstance(exc, TooManyRequests):
                    self.metrics.quota_refused(exc.quota)
                reason = f"{exc.parity_name}: {exc.detail}" if exc.detail else exc.parity_name
                self.audit.record(operation, key_id, requester.address, "entry", "refused", reason)
                results[index] = exc
                continue
            seen.add(key_id)
            by_threshold.setdefault(threshold, []).append((index, genbatch.BatchKey(key_id, requester.address, owner)))

        async def session(threshold: int, part: list[tuple[int, genbatch.BatchKey]]) -> None:
            async with self._batch_sessions:  # this node's batch sessions as master, whatever the requests
                try:
                    with self.metrics.session("generate_server_key_batch"):
                        self.session_cap.admit()
                        with self.session_cap.hold():
                            async with asyncio.timeout(self.session_timeout + genbatch.SECONDS_PER_KEY * len(part)):
                                outcomes = await genbatch.run_session(self, [key for _, key in part], threshold)
                except TimeoutError:
                    outcomes = {key.key_id: NodeDisconnected() for _, key in part}
                except KeyServerError as exc:  # the session failed as a whole: each of its keys gets the error
                    outcomes = {key.key_id: exc for _, key in part}
            for index, key in part:
                outcome = outcomes.get(key.key_id, InternalError("a batch key was left without a result"))
                results[index] = outcome
                if isinstance(outcome, KeyServerError):
                    decision = "refused" if outcome.status in (400, 403, 404) else "failed"
                    reason = (f"{outcome.parity_name}: {outcome.detail}" if outcome.text and outcome.detail
                              else outcome.parity_name)
                    self.audit.record(operation, key.key_id, key.author, "entry", decision, reason)
                else:
                    self.audit.record(operation, key.key_id, key.author, "entry", "ok",
                                      "batch" if key.owner is None else f"batch; {_owner_reason(key.owner)}")

        sessions = []
        for threshold, keys in by_threshold.items():
            size = m.gen_batch_size(threshold)
            sessions += [session(threshold, keys[start:start + size]) for start in range(0, len(keys), size)]
        await asyncio.gather(*sessions)
        return [r if r is not None else InternalError("no result") for r in results]

    async def store_document_key(
        self, key_id: bytes, signature: bytes, common_point: Point, encrypted_point: Point,
        bound: b.Bound | None = None,
    ) -> None:
        await self._entry("store_document_key", key_id, signature,
                          lambda r: storing.run(self, key_id, signature, r, common_point, encrypted_point, bound),
                          NodeDisconnected, bound, b.store_arguments(common_point, encrypted_point))

    async def generate_document_key(self, key_id: bytes, signature: bytes, threshold: int,
                                    bound: b.Bound | None = None, owner: bytes | None = None) -> bytes:
        return await self._entry("generate_document_key", key_id, signature,
                                 lambda r: storing.generate_and_store(self, key_id, signature, r, threshold, bound,
                                                                      owner),
                                 NodeDisconnected, bound, b.threshold_arguments(threshold, owner), _owner_reason(owner))

    async def retrieve_server_key(self, key_id: bytes, signature: bytes, bound: b.Bound | None = None) -> Point:
        return await self._entry("retrieve_server_key", key_id, signature,
                                 lambda r: negotiation.server_key(self, key_id, r), ConsensusTemporaryUnreachable,
                                 bound, b.no_arguments())

    async def _local_or_stale(self, key_id: bytes, local: Callable[[], Awaitable[ResultT]]) -> ResultT | None:
        """``local()`` if this node holds an active version of ``key_id``; None when it holds none,
        or when its version is stale (its peers moved on to a newer one: a node restored from an old
        backup, or one an admin session could not reach), so that a holder runs the operation."""
        if not await self.usable_key(key_id):
            return None
        try:
            return await local()
        except ConsensusTemporaryUnreachable:
            share = await self.load_key(key_id)
            newer = await delegation.newer_version(self, key_id, share)
            if newer is None:
                raise
            log.warning("key %s: this node's version is stale (its peers hold 0x%s..); delegating. Repair this "
                        "node (docs/operators.md)", key_id.hex()[:16], newer.hex()[:16],
                        extra={"key_id": key_id, "reason": "stale version"})
            return None

    async def _blob(self, operation: str, key_id: bytes, signature: bytes, local: Callable[[], Awaitable[bytes]],
                    message_hash: bytes | None = None) -> bytes:
        """``local()`` if this node holds a usable share of ``key_id``, else the same through a holder."""
        result = await self._local_or_stale(key_id, local)
        if result is not None:
            return result
        reply = await delegation.forward(self, operation, key_id, signature, message_hash)
        if not isinstance(reply, m.DelegatedBlob):
            raise InvalidMessage(f"a delegated {operation} came back as {reply.KIND}")
        return reply.blob

    async def _shadow(self, key_id: bytes, signature: bytes, requester: Requester) -> decryption.ShadowResult:
        result = await self._local_or_stale(key_id, lambda: decryption.retrieve_shadow(self, key_id, signature,
                                                                                       requester))
        if result is not None:
            return result
        reply = await delegation.forward(self, "shadow", key_id, signature)
        if not isinstance(reply, m.DelegatedShadow):
            raise InvalidMessage(f"a delegated shadow retrieval came back as {reply.KIND}")
        return decryption.ShadowResult(reply.decrypted_secret, reply.common_point, reply.decrypt_shadows)

    async def retrieve_document_key(self, key_id: bytes, signature: bytes, bound: b.Bound | None = None) -> bytes:
        return await self._entry(
            "retrieve_document_key", key_id, signature,
            lambda r: self._blob("plain", key_id, signature,
                                 lambda: decryption.retrieve_plain(self, key_id, signature, r)),
            ConsensusTemporaryUnreachable, bound, b.no_arguments())

    async def retrieve_document_key_shadow(self, key_id: bytes, signature: bytes,
                                           bound: b.Bound | None = None) -> decryption.ShadowResult:
        return await self._entry("retrieve_document_key_shadow", key_id, signature,
                                 lambda r: self._shadow(key_id, signature, r),
                                 ConsensusTemporaryUnreachable, bound, b.no_arguments())

    async def retrieve_document_key_shadows(
        self, requests: Sequence[tuple[bytes, bytes]],
    ) -> list[decryption.ShadowResult | KeyServerError]:
        """``POST /shadow_batch`` (ours): each ``(key id, signature)``'s shadow retrieval result or
        error, in order (:mod:`.sessions.batch`). Each key is checked, audited and answered as a
        single retrieval; the batch runs as one session (one place under the session cap).

        :raises TooManyRequests: this node runs its maximum of sessions (the whole batch is refused).
        """
        operation = "retrieve_document_key_shadow"
        results: list[decryption.ShadowResult | KeyServerError | None] = [None] * len(requests)
        entries: list[batch.BatchEntry] = []
        positions: list[int] = []
        for index, (key_id, signature) in enumerate(requests):
            try:
                requester = Requester.from_signature(signature, key_id)
            except KeyServerError as exc:
                self.audit.record(operation, key_id, None, "entry", "refused", exc.parity_name)
                results[index] = exc
                continue
            try:  # a batch carries no bound signatures: where they are required, its keys are refused
                self.check_bound(operation, key_id, requester.address, b.no_arguments(), None)
            except KeyServerError as exc:
                self.audit.record(operation, key_id, requester.address, "entry", "refused",
                                  f"{exc.parity_name}: {exc.detail}")
                results[index] = exc
                continue
            entries.append(batch.BatchEntry(key_id, signature, requester))
            positions.append(index)
        with self.metrics.session("retrieve_document_key_shadow_batch"):
            self.session_cap.admit()
            with self.session_cap.hold():
                try:
                    outcomes: list[decryption.ShadowResult | KeyServerError] = await self._bounded(
                        batch.retrieve_shadows(self, entries, self._shadow), ConsensusTemporaryUnreachable)
                except KeyServerError as exc:  # the batch ran out of time: every key left gets the error
                    outcomes = [exc] * len(entries)
        for index, entry, outcome in zip(positions, entries, outcomes, strict=True):
            results[index] = outcome
            if isinstance(outcome, KeyServerError):
                decision = "refused" if outcome.status in (400, 403, 404) else "failed"
                reason = (f"{outcome.parity_name}: {outcome.detail}" if outcome.text and outcome.detail
                          else outcome.parity_name)
                self.audit.record(operation, entry.key_id, entry.requester.address, "entry", decision, reason)
            else:
                self.audit.record(operation, entry.key_id, entry.requester.address, "entry", "ok", "batch")
        return [r if r is not None else InternalError("no result") for r in results]

    async def schnorr_sign(self, key_id: bytes, signature: bytes, message_hash: bytes,
                           bound: b.Bound | None = None) -> bytes:
        return await self._entry(
            "schnorr_sign", key_id, signature,
            lambda r: self._blob("schnorr", key_id, signature,
                                 lambda: signing.run(self, key_id, signature, r, message_hash), message_hash),
            ConsensusTemporaryUnreachable, bound, b.message_hash_arguments(message_hash))

    async def ecdsa_sign(self, key_id: bytes, signature: bytes, message_hash: bytes,
                         bound: b.Bound | None = None) -> bytes:
        """``GET /ecdsa/{key}/{sig}/{hash}``: ``ECIES(Q, r || s || v)`` from 2t+1 holders (t = 0: this one)."""
        return await self._entry(
            "ecdsa_sign", key_id, signature,
            lambda r: self._blob("ecdsa", key_id, signature,
                                 lambda: ecdsa.run(self, key_id, signature, r, message_hash), message_hash),
            ConsensusTemporaryUnreachable, bound, b.message_hash_arguments(message_hash))

    def health(self) -> dict[str, Any]:
        connected = self.connected_others()
        return {
            "status": "ok" if len(connected) == len(self.others) else "degraded",
            "node_id": "0x" + self.node_id.hex(),
            "nodes": len(self.nodes),
            "connected_peers": len(connected),
            "disconnected_peers": ["0x" + n.hex() for n in self.others if n not in connected],
            "suspected_peers": ["0x" + n.hex() for n in sorted(self.suspected())],
            "round_trips": {"0x" + n.hex(): self.liveness.describe(n) for n in self.others},
            "active_sessions": {name: len(t) for name, t in self.sessions.items()},
            "sessions": {"running": self.session_cap.active, "limit": self.session_cap.limit,
                         "refused": self.session_cap.refused},
            "stats": dict(self.stats),
        }


def error_from_reply(reply: m.ErrorReply) -> KeyServerError:
    if reply.error == WIRE_NAME:  # a member over its session cap (not a Parity variant)
        return TooManyRequests(reply.detail, quota="peer_sessions")
    cls = KEY_SERVER_ERRORS.get(reply.error, InternalError)
    if cls.text:
        return cls()
    return cls(reply.detail if reply.detail is not None else reply.error)

