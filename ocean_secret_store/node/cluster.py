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
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..crypto.curve import Point, Rng, default_rng
from ..crypto.hashes import address_of
from ..crypto.signatures import recover_public
from ..exceptions import (
    KEY_SERVER_ERRORS,
    ConsensusTemporaryUnreachable,
    InsufficientRequesterData,
    InternalError,
    InvalidMessage,
    InvalidSignature,
    KeyServerError,
    NodeDisconnected,
)
from ..protocol import messages as m
from .acl import AccessChecker
from .audit import Audit, NullAudit
from .storage import KeyShare, KeyStorage

log = logging.getLogger(__name__)

T = TypeVar("T", bound=m.Message)


class Net(Protocol):
    """What the core needs from a transport."""

    async def send(self, peer: bytes, payload: bytes) -> None: ...

    def connected_peers(self) -> frozenset[bytes]: ...


class PeerTimeout(NodeDisconnected):
    """A peer did not answer a request in time (reported as NodeDisconnected)."""


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked: the public key recovered from the signature over the key id, and its address."""

    public: Point
    address: bytes

    @classmethod
    def from_signature(cls, signature: bytes, key_id: bytes) -> Requester:
        try:
            public = recover_public(signature, key_id)
        except InvalidSignature as exc:
            raise InsufficientRequesterData(f"bad signature: {exc}") from exc
        return cls(public, address_of(public))


Handler = Callable[["ClusterCore", bytes, Any], Awaitable[m.Message | None]]
#: Handlers of requests (answered, run as tasks) and of one-way messages (run inline, in order).
REQUEST_HANDLERS: dict[type[m.Message], Handler] = {}
ONEWAY_HANDLERS: dict[type[m.Message], Callable[[ClusterCore, bytes, Any], None]] = {}


def request_handler(cls: type[T]) -> Callable[[Handler], Handler]:
    def wrap(fn: Handler) -> Handler:
        REQUEST_HANDLERS[cls] = fn
        return fn

    return wrap


def oneway_handler(cls: type[T]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def wrap(fn: Callable[..., None]) -> Callable[..., None]:
        ONEWAY_HANDLERS[cls] = fn
        return fn

    return wrap


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
    ) -> None:
        self.node_secret = node_secret
        self.node_id = Point.generator_mul(node_secret).to_bytes()
        self.nodes: tuple[bytes, ...] = tuple(sorted(set(nodes) | {self.node_id}))
        self.net = net
        self.storage = storage
        self.acl = acl
        self.session_timeout = session_timeout
        self.rng: Rng = rng or default_rng
        self.audit: Audit = audit or NullAudit()
        self._random = random.SystemRandom()
        self._rids = itertools.count(1)
        self._pending: dict[int, tuple[bytes, asyncio.Future[m.Message]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        #: per-kind session tables, created by the session modules: name -> {session id -> state}
        self.sessions: dict[str, dict[bytes, Any]] = {}
        self._reaper: asyncio.Task[None] | None = None
        self.store_lock = asyncio.Lock()
        # Decrypted key records of recent keys: a SQLite read plus its authenticated decryption
        # costs ~0.35 ms and a thread hop, on every node of every retrieval. Every write goes
        # through this object, so the cache cannot go stale.
        self._keys: OrderedDict[bytes, KeyShare] = OrderedDict()
        self.key_cache_size = 4096
        _load_sessions()
        self.stats = {"requests_in": 0, "requests_out": 0, "errors_out": 0, "invalid_messages": 0}

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_sessions())

    async def stop(self) -> None:
        if self._reaper:
            self._reaper.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *( [self._reaper] if self._reaper else []), return_exceptions=True)
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
                    expired = table.pop(sid)
                    cancel = getattr(expired, "expire", None)
                    if cancel:
                        cancel()

    def table(self, name: str) -> dict[bytes, Any]:
        return self.sessions.setdefault(name, {})

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- peers ---------------------------------------------------------------------------------

    @property
    def others(self) -> tuple[bytes, ...]:
        return tuple(n for n in self.nodes if n != self.node_id)

    def connected_others(self) -> frozenset[bytes]:
        return self.net.connected_peers() & frozenset(self.others)

    def require_all_connected(self) -> None:
        missing = [n for n in self.others if n not in self.net.connected_peers()]
        if missing:
            raise NodeDisconnected()

    def shuffled(self, nodes: Iterable[bytes]) -> list[bytes]:
        out = list(nodes)
        self._random.shuffle(out)
        return out

    def on_peer_disconnected(self, peer: bytes) -> None:
        """Fail every request waiting on ``peer`` at once, so sessions fail over without waiting."""
        for rid, (target, fut) in list(self._pending.items()):
            if target == peer and not fut.done():
                fut.set_exception(NodeDisconnected())
        for table in self.sessions.values():
            for state in list(table.values()):
                lost = getattr(state, "peer_lost", None)
                if lost:
                    lost(peer)

    # -- messaging -----------------------------------------------------------------------------

    async def send(self, peer: bytes, body: m.Message) -> None:
        await self.net.send(peer, m.encode(m.Envelope(body)))

    async def request(self, peer: bytes, body: m.Message, timeout: float | None = None) -> m.Message:
        """Send ``body`` to ``peer`` and wait for its reply; a remote error is re-raised here."""
        rid = next(self._rids)
        fut: asyncio.Future[m.Message] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (peer, fut)
        self.stats["requests_out"] += 1
        try:
            async with asyncio.timeout(timeout if timeout is not None else self.session_timeout):
                await self.net.send(peer, m.encode(m.Envelope(body, rid=rid)))
                reply = await fut
        except TimeoutError as exc:
            raise PeerTimeout() from exc
        finally:
            self._pending.pop(rid, None)
        if isinstance(reply, m.ErrorReply):
            raise error_from_reply(reply)
        return reply

    async def on_message(self, peer: bytes, payload: bytes) -> None:
        """Entry point for every frame a peer sends; never raises."""
        try:
            envelope = m.decode(payload)
        except InvalidMessage as exc:
            self.stats["invalid_messages"] += 1
            log.warning("dropping malformed message from %s: %s", peer.hex()[:16], exc.detail or exc)
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
                await self._reply(peer, envelope.rid, m.ErrorReply("InvalidMessage", None))
                return
            self.stats["requests_in"] += 1
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

    async def _serve(self, handler: Handler, peer: bytes, rid: int, body: m.Message) -> None:
        try:
            reply = await handler(self, peer, body)
            out: m.Message = reply if reply is not None else m.Ack()
        except KeyServerError as exc:
            self.stats["errors_out"] += 1
            out = m.ErrorReply(exc.parity_name, exc.detail)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler for %s failed", body.KIND)
            out = m.ErrorReply("Internal", "unexpected error while processing the request")
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

    async def insert_key(self, key_id: bytes, share: KeyShare) -> None:
        await asyncio.to_thread(self.storage.insert, key_id, share)
        self._remember(key_id, share)

    async def update_key(self, key_id: bytes, share: KeyShare) -> None:
        try:
            await asyncio.to_thread(self.storage.update, key_id, share)
        except BaseException:
            self._keys.pop(key_id, None)  # the write's outcome is unknown: read it back next time
            raise
        self._remember(key_id, share)

    # -- access --------------------------------------------------------------------------------

    async def allowed(self, requester: Requester, key_id: bytes) -> bool:
        """This node's own access decision; a checker that fails counts as a refusal."""
        try:
            return bool(await self.acl.check(requester.address, key_id))
        except Exception as exc:  # chain unreachable, malformed answer, ...: never an allow
            log.warning("access check failed for key %s: %s", key_id.hex()[:16], exc)
            return False

    # -- public operations (each bounded by the session timeout) --------------------------------

    async def _bounded(self, coro: Awaitable[T], on_timeout: type[KeyServerError]) -> T:
        try:
            async with asyncio.timeout(self.session_timeout):
                return await coro
        except TimeoutError as exc:
            raise on_timeout() from exc

    async def _entry(self, operation: str, key_id: bytes, signature: bytes, run: Callable[[Requester], Awaitable[T]],
                     on_timeout: type[KeyServerError]) -> T:
        """Run one public operation as the entry node: recover the requester, bound it, audit it."""
        try:
            requester = Requester.from_signature(signature, key_id)
        except KeyServerError as exc:
            self.audit.record(operation, key_id, None, "entry", "refused", exc.parity_name)
            raise
        try:
            result = await self._bounded(run(requester), on_timeout)
        except KeyServerError as exc:
            decision = "refused" if exc.status in (400, 403, 404) else "failed"
            self.audit.record(operation, key_id, requester.address, "entry", decision, exc.parity_name)
            raise
        except BaseException:
            self.audit.record(operation, key_id, requester.address, "entry", "failed", "Internal")
            raise
        self.audit.record(operation, key_id, requester.address, "entry", "ok")
        return result

    def audit_member(self, operation: str, key_id: bytes, requester: bytes | None, decision: str, reason: str = "") -> None:
        self.audit.record(operation, key_id, requester, "member", decision, reason)

    async def generate_server_key(self, key_id: bytes, signature: bytes, threshold: int) -> Point:
        from .sessions import generation

        return await self._entry("generate_server_key", key_id, signature,
                                 lambda r: generation.run(self, key_id, r.address, threshold), NodeDisconnected)

    async def store_document_key(
        self, key_id: bytes, signature: bytes, common_point: Point, encrypted_point: Point
    ) -> None:
        from .sessions import storing

        await self._entry("store_document_key", key_id, signature,
                          lambda r: storing.run(self, key_id, signature, r, common_point, encrypted_point),
                          NodeDisconnected)

    async def generate_document_key(self, key_id: bytes, signature: bytes, threshold: int) -> bytes:
        from .sessions import storing

        return await self._entry("generate_document_key", key_id, signature,
                                 lambda r: storing.generate_and_store(self, key_id, signature, r, threshold),
                                 NodeDisconnected)

    async def retrieve_server_key(self, key_id: bytes, signature: bytes) -> Point:
        from .sessions import negotiation

        return await self._entry("retrieve_server_key", key_id, signature,
                                 lambda r: negotiation.server_key(self, key_id, r), ConsensusTemporaryUnreachable)

    async def retrieve_document_key(self, key_id: bytes, signature: bytes) -> bytes:
        from .sessions import decryption

        return await self._entry("retrieve_document_key", key_id, signature,
                                 lambda r: decryption.retrieve_plain(self, key_id, signature, r),
                                 ConsensusTemporaryUnreachable)

    async def retrieve_document_key_shadow(self, key_id: bytes, signature: bytes) -> Any:
        from .sessions import decryption

        return await self._entry("retrieve_document_key_shadow", key_id, signature,
                                 lambda r: decryption.retrieve_shadow(self, key_id, signature, r),
                                 ConsensusTemporaryUnreachable)

    async def schnorr_sign(self, key_id: bytes, signature: bytes, message_hash: bytes) -> bytes:
        from .sessions import signing

        return await self._entry("schnorr_sign", key_id, signature,
                                 lambda r: signing.run(self, key_id, signature, r, message_hash),
                                 ConsensusTemporaryUnreachable)

    def health(self) -> dict[str, Any]:
        connected = self.connected_others()
        return {
            "status": "ok" if len(connected) == len(self.others) else "degraded",
            "node_id": "0x" + self.node_id.hex(),
            "nodes": len(self.nodes),
            "connected_peers": len(connected),
            "disconnected_peers": ["0x" + n.hex() for n in self.others if n not in connected],
            "active_sessions": {name: len(t) for name, t in self.sessions.items()},
            "stats": dict(self.stats),
        }


def _load_sessions() -> None:
    # The session modules register their handlers on import; they import this module, so they
    # are loaded lazily, once, when the first core is built.
    from .sessions import decryption, generation, negotiation, signing, storing  # noqa: F401


def error_from_reply(reply: m.ErrorReply) -> KeyServerError:
    cls = KEY_SERVER_ERRORS.get(reply.error, InternalError)
    if cls.text:
        return cls()
    return cls(reply.detail if reply.detail is not None else reply.error)


async def gather_settled(coros: Sequence[Awaitable[T]]) -> list[T | BaseException]:
    """Await all, returning results and exceptions in order (cancellation still propagates)."""
    return await asyncio.gather(*coros, return_exceptions=True)
