"""What the sessions share: the services they need from the cluster core (a Protocol, so that no
session imports :mod:`ocean_secret_store.node.cluster`), the shape of a session table entry, the
requester, and the group bookkeeping of the consensus sessions (decryption, signing).

Each session module exports its handlers as module constants (``REQUEST_HANDLERS``, and
``ONEWAY_HANDLERS`` where it has one-way messages); the cluster core imports the session modules
and builds its dispatch table from them. Nothing is registered by importing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Protocol, TypeVar

from ...crypto.curve import Point, Rng
from ...crypto.hashes import address_of
from ...crypto.signatures import recover_public
from ...exceptions import (
    ConsensusTemporaryUnreachable,
    ConsensusUnreachable,
    InsufficientRequesterData,
    InvalidSignature,
    KeyServerError,
)
from ...protocol import messages as m
from ...protocol.admin import AdminRequest
from ...protocol.bound import Bound
from ..acl import Decision
from ..storage import KeyShare, KeyStorage

log = logging.getLogger(__name__)

T = TypeVar("T")
ReplyT = TypeVar("ReplyT", bound=m.Message)


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked: the public key recovered from the signature over the key id, and its address."""

    public: Point
    address: bytes

    @classmethod
    def from_signature(cls, signature: bytes, key_id: bytes) -> Requester:
        try:
            return _recovered(bytes(signature), bytes(key_id))
        except InvalidSignature as exc:
            why = str(exc)  # said once: some of the checks' texts begin with it already
            raise InsufficientRequesterData(why if why.startswith("bad signature") else f"bad signature: {why}") \
                from exc


#: Requesters remembered by (signature, key id), LRU. Recovery is a pure function of the two, so a
#: remembered one is exactly what recovering again would give; it spares the entry node and every
#: member of a retrieval a public key recovery and a Keccak hash when a requester asks for a key
#: again (Parity's path signature is the same for every request of one requester and key). A
#: signature that does not recover raises and is not remembered.
REQUESTER_CACHE_SIZE: Final = 4096


@functools.lru_cache(maxsize=REQUESTER_CACHE_SIZE)
def _recovered(signature: bytes, key_id: bytes) -> Requester:
    public = recover_public(signature, key_id)
    return Requester(public, address_of(public))


@dataclass(frozen=True, slots=True)
class AdminSession:
    """The admin session a node takes part in (persisted: it survives a restart, and until it ends
    the node refuses key generation and any other admin session; docs/operators.md)."""

    session: bytes
    master: bytes
    request: AdminRequest

    def to_json(self) -> dict[str, Any]:
        r = self.request
        return {
            "session": self.session.hex(), "master": self.master.hex(), "operation": r.operation,
            "old_set": [n.hex() for n in r.old_set], "new_set": [n.hex() for n in r.new_set],
            "old_signature": r.old_signature.hex(), "new_signature": r.new_signature.hex(),
            "target": None if r.target is None else r.target.hex(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AdminSession:
        request = AdminRequest(
            data["operation"], tuple(bytes.fromhex(n) for n in data["old_set"]),
            tuple(bytes.fromhex(n) for n in data["new_set"]), bytes.fromhex(data["old_signature"]),
            bytes.fromhex(data["new_signature"]), None if data["target"] is None else bytes.fromhex(data["target"]))
        return cls(bytes.fromhex(data["session"]), bytes.fromhex(data["master"]), request)


class SessionState(Protocol):
    """An entry of a session table, as the core sees it."""

    #: event-loop time of creation; the core drops entries older than twice the session timeout
    created: float

    def expire(self) -> None:
        """The entry was dropped for its age: wake up whoever waits on it."""

    def peer_lost(self, peer: bytes) -> None:
        """``peer`` disconnected: fail at once if the session needs it."""


StateT = TypeVar("StateT", bound=SessionState)
MessageT = TypeVar("MessageT", bound=m.Message)

#: Sessions whose early messages one node keeps at once, per kind (more are dropped, logged).
MAX_EARLY: Final = 4096


@dataclass(eq=False, repr=False)
class EarlyMessages(Generic[MessageT]):
    """One-way messages of a session that came before the request opening it on this node (one per
    sender: peers send while the master is still asking this node), or the note that its master
    ended it (``closed_by``: nothing more is kept). The table's entry expires with the session table."""

    created: float
    messages: dict[bytes, MessageT] = field(default_factory=dict)
    closed_by: bytes | None = None

    def expire(self) -> None:
        return None

    def peer_lost(self, peer: bytes) -> None:
        return None


def _early_entry(core: Core, key: TableKey[EarlyMessages[MessageT]],
                 session: bytes) -> EarlyMessages[MessageT] | None:
    table = core.table(key)
    entry = table.get(session)
    if entry is None:
        if len(table) >= MAX_EARLY:
            log.warning("%s: too many sessions waiting for their opening request; dropping one", key.name)
            return None
        entry = table[session] = EarlyMessages(asyncio.get_running_loop().time())
    return entry


def keep_early(core: Core, key: TableKey[EarlyMessages[MessageT]], session: bytes, sender: bytes,
               message: MessageT) -> None:
    """Keep ``message`` of ``sender`` for ``session`` until it opens here (not once it was closed)."""
    entry = _early_entry(core, key, session)
    if entry is not None and entry.closed_by is None and sender not in entry.messages:
        entry.messages[sender] = message


def close_early(core: Core, key: TableKey[EarlyMessages[MessageT]], session: bytes, by: bytes) -> None:
    """``by`` (its master) ended ``session``: drop what was kept of it, and whatever comes later."""
    entry = _early_entry(core, key, session)
    if entry is not None:
        entry.closed_by = by
        entry.messages.clear()


@dataclass(frozen=True, slots=True)
class TableKey(Generic[StateT]):
    """Names one session table and fixes the type of its entries (``core.table(key)``)."""

    name: str


class Core(Protocol):
    """The services of the cluster core that sessions use (implemented by ``ClusterCore``)."""

    @property
    def node_id(self) -> bytes: ...

    @property
    def nodes(self) -> tuple[bytes, ...]: ...

    @property
    def others(self) -> tuple[bytes, ...]: ...

    @property
    def rng(self) -> Rng: ...

    @property
    def session_timeout(self) -> float: ...

    @property
    def store_lock(self) -> asyncio.Lock: ...

    @property
    def admin_public(self) -> Point | None:
        """The administrator's public key (``[node] admin_public``), None when not configured."""
        ...

    @property
    def admin_session(self) -> AdminSession | None:
        """The admin session this node takes part in, if any."""
        ...

    @property
    def servers_set(self) -> tuple[bytes, ...]:
        """The servers set: the nodes that hold keys and generate new ones (not an admin session's new nodes)."""
        ...

    async def begin_admin(self, session: AdminSession) -> None:
        """Persist ``session`` as this node's admin session (a resume replaces the same request's)."""
        ...

    async def end_admin(self, commit: bool) -> None:
        """End the admin session; with ``commit``, its new set becomes the servers set (persisted)."""
        ...

    @property
    def admin_progress(self) -> dict[str, Any]:
        """What ``GET /admin/status`` shows of the admin session this node runs as master (mutable)."""
        ...

    def connected_others(self) -> frozenset[bytes]: ...

    def reachable(self) -> frozenset[bytes]:
        """Every peer connected now, in the servers set or not."""
        ...

    def candidates(self, nodes: Iterable[bytes]) -> list[bytes]:
        """``nodes`` that may be asked now, best first: connected and unsuspected, then still
        connecting, then suspected (random order among equals); peers known to be down are left out."""
        ...

    def hedge_delay(self, peers: Iterable[bytes]) -> float:
        """How long to wait for ``peers`` before asking spares (from their measured round trips)."""
        ...

    def suspect(self, peers: Iterable[bytes]) -> None:
        """An operation hedged around ``peers``: choose them last until they are heard from again."""
        ...

    def require_all_connected(self) -> None: ...

    def shuffled(self, items: Iterable[T]) -> list[T]:
        """``items`` in a uniformly random order (from the system CSPRNG)."""
        ...

    def table(self, key: TableKey[StateT]) -> dict[bytes, StateT]: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...

    async def send(self, peer: bytes, body: m.Message) -> None: ...

    async def request(self, peer: bytes, body: m.Message, reply: type[ReplyT], timeout: float | None = None, *,
                      sample: bool = True) -> ReplyT:
        """Ask ``peer``; its error is raised here, and so is InvalidMessage for an answer of another type.
        ``sample=False``: the answer's time is no round-trip sample of the peer."""
        ...

    async def load_key(self, key_id: bytes) -> KeyShare | None: ...

    async def has_key(self, key_id: bytes) -> bool: ...

    async def insert_key(self, key_id: bytes, share: KeyShare) -> None: ...

    async def update_key(self, key_id: bytes, share: KeyShare) -> None: ...

    async def storage_call(self, key_id: bytes | None, fn: Callable[[KeyStorage], T]) -> T:
        """``fn(storage)`` off the event loop; the cached record of ``key_id`` (if any) is dropped afterwards."""
        ...

    def check_bound(self, operation: str, key_id: bytes, signer: bytes, arguments: bytes,
                    bound: Bound | None) -> None:
        """Accept a bound signature (or its absence where not required) and claim its nonce."""
        ...

    async def access(self, requester: Requester, key_id: bytes, author: bytes, owner: bytes | None = None) -> Decision:
        """This node's own access decision on a key of ``author`` and owner-to-be ``owner``; a failed
        check is a refusal."""
        ...

    def audit_member(self, operation: str, key_id: bytes, requester: bytes | None, decision: str,
                     reason: str = "") -> None: ...


#: A request handler: (core, sender, message) -> the reply, or None for a plain Ack.
RequestHandler = Callable[[Core, bytes, Any], Awaitable[m.Message | None]]
#: A one-way handler, run inline in arrival order.
OnewayHandler = Callable[[Core, bytes, Any], None]
RequestHandlers = Mapping[type[m.Message], RequestHandler]
OnewayHandlers = Mapping[type[m.Message], OnewayHandler]
#: A background loop of a session module, run for the core's life (it paces itself).
Maintenance = Callable[[Core], Coroutine[Any, Any, None]]


async def gather_settled(coros: Sequence[Awaitable[T]]) -> list[T | BaseException]:
    """Await all, returning results and exceptions in order (cancellation still propagates)."""
    return await asyncio.gather(*coros, return_exceptions=True)


def settled_by_node(
    nodes: Sequence[bytes], results: Sequence[T | BaseException]
) -> tuple[dict[bytes, T], dict[bytes, BaseException]]:
    """Split the settled results of one request per node into the answers and the failures."""
    answers: dict[bytes, T] = {}
    failures: dict[bytes, BaseException] = {}
    for node, result in zip(nodes, results, strict=True):
        if isinstance(result, BaseException):
            failures[node] = result
        else:
            answers[node] = result
    return answers, failures


def unreachable(total_holders: int, threshold: int, fatal: int, rejects: int) -> KeyServerError:
    """Parity's choice between a lasting and a temporary consensus failure (protocol.md §6.10)."""
    if total_holders < threshold + 1 or (rejects and fatal * 2 >= rejects):
        return ConsensusUnreachable()
    return ConsensusTemporaryUnreachable()
