"""Document key storing (Parity's encryption session, protocol.md §1.4.2, §6.11) in two phases, the
combined server + document key generation of endpoint 3 (§1.4.3), and the background resolution
of stores that a crash or a lost message left unfinished.

The entry node (the coordinator) needs every configured node connected. It sends ``StorePrepare``
with a fresh transaction id to every other node and prepares itself: each holder checks on its own
that the requester is the key's author, that no document key is stored yet and, when the request
carried a bound signature (protocol/bound.py) or the node requires one, that too (claiming its
nonce); then it records ``(C, E)`` as *pending*, which retrieval never sees. Once every node
prepared (or said it holds no share), the coordinator commits itself (within its deadline: that
first commit is the decision), then tells the others to commit; if any prepare failed it aborts
the transaction everywhere instead. A pending left behind is resolved by :func:`resolve_pending`,
which asks the other holders what they hold. The rules and their reasons are in
docs/cluster-protocol.md. Parity's quirk is kept: storing for a key id nobody holds succeeds and
stores nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from ... import failpoints
from ...crypto import document, ecies
from ...crypto.curve import Point
from ...exceptions import (
    AccessDenied,
    ConsensusTemporaryUnreachable,
    DocumentKeyAlreadyStored,
    InvalidMessage,
    InvalidStateForRequest,
    KeyServerError,
    NodeDisconnected,
)
from ...protocol import bound as b
from ...protocol import messages as m
from ..storage import MAX_PENDING_TXS, KeyShare, KeyStorage, PendingDocumentKey
from . import generation, migration
from .base import Core, Maintenance, Requester, RequestHandlers, gather_settled, settled_by_node

log = logging.getLogger(__name__)

#: A holder keeps a prepared document key for this many session timeouts before resolution may
#: drop it; the coordinator decides within one, so two are left for its commit to arrive.
EXPIRY_TIMEOUTS: Final = 3
#: The longest wait (s) for one holder's answer to a status query or an abort.
QUERY_TIMEOUT: Final = 1.0
#: Resolution steps run at once (each asks every other holder of its key).
RESOLVE_BATCH: Final = 16
#: The crash points of this module (``OSS_FAILPOINTS``, see ocean_secret_store/failpoints.py).
FP_MEMBER_PREPARED: Final = "store.member.prepared"
FP_COORDINATOR_PREPARED: Final = "store.coordinator.prepared"
FP_COORDINATOR_COMMITTED_SELF: Final = "store.coordinator.committed_self"
FP_MEMBER_COMMITTED: Final = "store.member.committed"


def _short(key_id: bytes) -> str:
    return "0x" + key_id.hex()[:16]


def _query_timeout(core: Core) -> float:
    return min(QUERY_TIMEOUT, core.session_timeout)


def _busy(detail: str) -> ConsensusTemporaryUnreachable:
    # Parity's temporary variant: the same request may pass once the other store has finished.
    return ConsensusTemporaryUnreachable(detail)


# -- one holder's steps (all under core.store_lock: a node's store steps never interleave) ---------


async def _prepare_locally(
    core: Core, key_id: bytes, tx: bytes, coordinator: bytes, requester: Requester, common: Point,
    encrypted: Point, check_bound: Callable[[KeyShare | None], None] | None,
) -> bool:
    """Record ``(C, E)`` as pending under ``tx``; False when this node holds no share of the key."""
    async with core.store_lock:
        if migration.redistributing(core, key_id):
            raise _busy("the key is being redistributed (admin session); try again in a moment")
        share = await core.load_key(key_id)
        if share is None:
            if check_bound is not None:
                check_bound(None)
            return False  # Parity: nothing to store, and not an error
        if share.author != requester.address:
            raise AccessDenied()
        if share.common_point is not None:
            raise DocumentKeyAlreadyStored()
        if check_bound is not None:
            check_bound(share)
        pending = await core.storage_call(key_id, lambda s: s.get_pending(key_id))
        expiry = time.time() + EXPIRY_TIMEOUTS * core.session_timeout
        if pending is None:
            prepared = PendingDocumentKey(key_id, common, encrypted, coordinator, (tx,), expiry)
        elif not pending.same_document_key(common, encrypted):
            # Even past its expiry: it may be committed on a holder we have not heard from, and only
            # resolution (which asks them all) may drop it.
            raise _busy("another document key of this key is being stored")
        elif tx not in pending.txs and len(pending.txs) >= MAX_PENDING_TXS:
            raise _busy("too many stores of this document key are in progress")
        else:
            prepared = pending.refreshed(tx, expiry)
        await core.storage_call(key_id, lambda s: s.put_pending(prepared))
    return True


async def _commit_locally(core: Core, key_id: bytes, tx: bytes | None) -> KeyShare | None:
    """Commit the pending document key (only if it holds ``tx``, when given); None: nothing to commit."""
    async with core.store_lock:
        return await core.storage_call(key_id, lambda s: s.commit_pending(key_id, tx))


async def _abort_locally(core: Core, key_id: bytes, tx: bytes) -> None:
    async with core.store_lock:
        await core.storage_call(key_id, lambda s: s.remove_pending_tx(key_id, tx))


# -- member handlers --------------------------------------------------------------------------------


def _check_bound(core: Core, msg: m.StorePrepare, requester: Requester, share: KeyShare | None) -> None:
    """A member's own check of the requester's bound signature (the entry node checked it too)."""
    # A prepare that names no operation is a plain store (the field is optional on the wire).
    operation = msg.operation or "store_document_key"
    if operation == "store_document_key":
        arguments = b.store_arguments(msg.common_point, msg.encrypted_point)
    elif operation == "generate_document_key":
        # Endpoint 3: the client signed the threshold, which this node stored with its share.
        if share is None:
            return  # nothing to store here (Parity's quirk), so nothing to authorize
        arguments = b.threshold_arguments(share.threshold)
    else:
        raise InvalidMessage(f"a document key store for operation {operation!r}")
    core.check_bound(operation, msg.key_id, requester.address, arguments, msg.bound)


async def _on_prepare(core: Core, sender: bytes, msg: m.StorePrepare) -> m.StorePrepared:
    requester = Requester.from_signature(msg.signature, msg.key_id)
    try:
        holder = await _prepare_locally(
            core, msg.key_id, msg.tx, sender, requester, msg.common_point, msg.encrypted_point,
            lambda share: _check_bound(core, msg, requester, share),
        )
    except KeyServerError as exc:
        core.audit_member("store_document_key", msg.key_id, requester.address, "refused", exc.parity_name)
        raise
    if holder:
        failpoints.hit(FP_MEMBER_PREPARED)
    core.audit_member("store_document_key", msg.key_id, requester.address, "ok")
    return m.StorePrepared(holder=holder)


async def _on_commit(core: Core, sender: bytes, msg: m.StoreCommit) -> None:
    share = await _commit_locally(core, msg.key_id, msg.tx)
    if share is None:
        current = await core.load_key(msg.key_id)
        if current is not None and current.common_point is not None:
            return  # committed already, by this transaction's resolution or an earlier one's
        raise InvalidStateForRequest(f"no pending document key of {_short(msg.key_id)} for this transaction")
    failpoints.hit(FP_MEMBER_COMMITTED)
    log.info("document key of key %s committed (coordinator %s)", _short(msg.key_id), _short(sender),
             extra={"operation": "store_document_key", "key_id": msg.key_id, "role": "member", "decision": "ok"})


async def _on_abort(core: Core, sender: bytes, msg: m.StoreAbort) -> None:
    await _abort_locally(core, msg.key_id, msg.tx)


async def _on_status(core: Core, sender: bytes, msg: m.StoreStatusRequest) -> m.StoreStatus:
    # Under the lock: an answer is given before or after a commit of this node, never during one,
    # which resolution's "nobody committed" relies on.
    async with core.store_lock:
        share = await core.load_key(msg.key_id)
        pending = None if share is None else await core.storage_call(msg.key_id, lambda s: s.get_pending(msg.key_id))
    return m.StoreStatus(
        holder=share is not None,
        committed_common=None if share is None else share.common_point,
        committed_encrypted=None if share is None else share.encrypted_point,
        pending_common=None if pending is None else pending.common_point,
        pending_encrypted=None if pending is None else pending.encrypted_point,
    )


# -- the coordinator --------------------------------------------------------------------------------


def _most_telling(errors: list[BaseException]) -> BaseException:
    """A refusal explains the others: AccessDenied, then DocumentKeyAlreadyStored, then any key server error."""
    for preferred in (AccessDenied, DocumentKeyAlreadyStored, KeyServerError):
        for err in errors:
            if isinstance(err, preferred):
                return err
    return errors[0]


async def _abort(core: Core, key_id: bytes, tx: bytes, members: list[bytes], local: bool) -> None:
    """Best effort: whatever does not arrive expires and is dropped by resolution."""
    abort = m.StoreAbort(key_id=key_id, tx=tx)
    timeout = _query_timeout(core)
    jobs: list[Awaitable[object]] = [core.request(n, abort, m.Ack, timeout=timeout) for n in members]
    if local:
        jobs.append(_abort_locally(core, key_id, tx))
    for node, result in zip([*members, core.node_id], await gather_settled(jobs), strict=False):
        if isinstance(result, BaseException):
            log.info("store of key %s: abort on node %s failed (%s); left to resolution",
                     _short(key_id), _short(node), type(result).__name__)


async def _commit_phase(
    core: Core, key_id: bytes, tx: bytes, members: list[bytes], local: bool, common: Point, encrypted: Point,
    deadline: float, decided: asyncio.Future[bool], abandoned: asyncio.Future[None],
) -> None:
    """Commit here first (the decision: within the deadline, and only while the request still
    waits), then on the members. ``decided`` becomes True as soon as one holder committed, False
    once none will; raises when none did."""
    try:
        await _commit_everywhere(core, key_id, tx, members, local, common, encrypted, deadline, decided, abandoned)
    finally:
        if not decided.done():
            decided.set_result(False)


async def _commit_everywhere(
    core: Core, key_id: bytes, tx: bytes, members: list[bytes], local: bool, common: Point, encrypted: Point,
    deadline: float, decided: asyncio.Future[bool], abandoned: asyncio.Future[None],
) -> None:
    loop = asyncio.get_running_loop()
    if local:
        async with core.store_lock:
            share = None
            if loop.time() <= deadline and not abandoned.done():
                share = await core.storage_call(key_id, lambda s: s.commit_pending(key_id, tx))
                if share is None:  # another transaction of the same document key committed it first
                    current = await core.load_key(key_id)
                    if current is not None and current.common_point == common and current.encrypted_point == encrypted:
                        share = current
        if share is None:
            decided.set_result(False)
            await _abort(core, key_id, tx, members, local=True)
            raise NodeDisconnected()  # out of time (or the pending is gone): nothing committed anywhere
        decided.set_result(True)
        failpoints.hit(FP_COORDINATOR_COMMITTED_SELF)
    elif loop.time() > deadline or abandoned.done():
        decided.set_result(False)
        await _abort(core, key_id, tx, members, local=False)
        raise NodeDisconnected()
    commit = m.StoreCommit(key_id=key_id, tx=tx)
    timeout = max(_query_timeout(core), deadline - loop.time())

    async def one(node: bytes) -> None:
        await core.request(node, commit, m.Ack, timeout=timeout)
        if not decided.done():
            decided.set_result(True)

    results = await gather_settled([one(n) for n in members])
    _, failures = settled_by_node(members, results)
    for node, exc in failures.items():
        log.warning("store of key %s: commit on node %s failed (%s); left to resolution",
                    _short(key_id), _short(node), type(exc).__name__)
    if not decided.done():
        raise NodeDisconnected()


def _retrieve_outcome(task: asyncio.Task[None]) -> None:
    # A commit phase left to finish on its own after its request was cancelled: its failure is
    # logged by the phase itself, and must not surface as "exception never retrieved".
    if not task.cancelled():
        task.exception()


async def run(
    core: Core, key_id: bytes, signature: bytes, requester: Requester, common: Point, encrypted: Point,
    bound: b.Bound | None = None, operation: str = "store_document_key",
) -> None:
    """Entry side: prepare everywhere, then commit or abort (the entry node checked ``bound`` already)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + core.session_timeout
    share = await core.load_key(key_id)
    if share is not None:
        if share.author != requester.address:
            raise AccessDenied()
        if share.common_point is not None:
            raise DocumentKeyAlreadyStored()
    core.require_all_connected()
    tx = core.rng(32)
    prepare = m.StorePrepare(key_id=key_id, tx=tx, signature=signature, common_point=common,
                             encrypted_point=encrypted, operation=operation, bound=bound)
    others = list(core.others)
    try:
        (local_result,), remote = await asyncio.gather(
            gather_settled([_prepare_locally(core, key_id, tx, core.node_id, requester, common, encrypted, None)]),
            gather_settled([core.request(n, prepare, m.StorePrepared) for n in others]),
        )
    except asyncio.CancelledError:
        core.spawn(_abort(core, key_id, tx, others, local=True))  # out of time: undo what arrived
        raise
    answers, failures = settled_by_node(others, remote)
    local = local_result is True
    members = [n for n, answer in answers.items() if answer.holder]
    errors = [*([local_result] if isinstance(local_result, BaseException) else []), *failures.values()]
    if errors:
        await _abort(core, key_id, tx, members, local)
        raise _most_telling(errors)
    if not members and not local:
        return  # nobody holds the key: Parity's quirk, success with nothing stored
    failpoints.hit(FP_COORDINATOR_PREPARED)
    # The commit phase runs to its end on its own: once a holder committed the store is decided, a
    # timeout of this request must not stop the others' commits, and the answer must say so.
    decided: asyncio.Future[bool] = loop.create_future()
    abandoned: asyncio.Future[None] = loop.create_future()
    phase = core.spawn(_commit_phase(core, key_id, tx, members, local, common, encrypted, deadline, decided,
                                     abandoned))
    phase.add_done_callback(_retrieve_outcome)
    try:
        await asyncio.shield(phase)
    except asyncio.CancelledError:
        abandoned.set_result(None)  # not decided yet: it will not be, unless the commit here is under way
        if local:
            # This node's commit decides and takes a moment (one SQLite write, or nothing now):
            # wait for it, so that the answer says what happened.
            committed = await asyncio.shield(decided)
        else:
            committed = decided.done() and decided.result()
        if committed:
            return  # stored: the members' commits go on in the background
        raise


async def generate_and_store(
    core: Core, key_id: bytes, signature: bytes, requester: Requester, threshold: int, bound: b.Bound | None = None,
    owner: bytes | None = None,
) -> bytes:
    """Endpoint 3: generate the server key (with the owner-to-be ``owner``, if named), then a
    document key for it; returns ECIES(Q, M)."""
    public = await generation.run(core, key_id, requester.address, threshold, owner)
    document_key, common, encrypted = document.generate_document_key(public, core.rng)
    await run(core, key_id, signature, requester, common, encrypted, bound, "generate_document_key")
    return ecies.encrypt(requester.public, document_key.to_bytes(), rng=core.rng)


# -- resolution -------------------------------------------------------------------------------------


def _holders(share: KeyShare) -> set[bytes]:
    return {node for version in share.versions for node in version.id_numbers}


async def _drop(core: Core, pending: PendingDocumentKey, *, only_if_expired: bool) -> bool:
    """Drop ``pending`` if it is still exactly what resolution looked at (and still expired)."""
    async with core.store_lock:
        current = await core.storage_call(pending.key_id, lambda s: s.get_pending(pending.key_id))
        if current != pending or (only_if_expired and time.time() < pending.expiry):
            return False
        return await core.storage_call(pending.key_id, lambda s: s.drop_pending(pending.key_id, pending))


async def resolve_one(core: Core, pending: PendingDocumentKey) -> str:
    """One resolution step for one pending document key; what was done (``committed``,
    ``dropped``, ``kept``), for the log and for tests."""
    key_id = pending.key_id
    share = await core.load_key(key_id)
    if share is None or share.common_point is not None or share.encrypted_point is not None:
        # The record is gone, or committed already: the pending has no use left.
        if share is not None and (share.common_point, share.encrypted_point) != (
                pending.common_point, pending.encrypted_point):
            log.error("key %s: a pending document key differs from the committed one; dropping it", _short(key_id))
        return "dropped" if await _drop(core, pending, only_if_expired=False) else "kept"
    expired = time.time() >= pending.expiry  # before asking: every answer then postdates the expiry
    holders = sorted(n for n in _holders(share) if n != core.node_id and n in core.nodes)
    query = m.StoreStatusRequest(key_id=key_id)
    timeout = _query_timeout(core)
    results = await gather_settled([core.request(n, query, m.StoreStatus, timeout=timeout) for n in holders])
    answers, failures = settled_by_node(holders, results)
    committed = {n: (a.committed_common, a.committed_encrypted) for n, a in answers.items()
                 if a.committed_common is not None and a.committed_encrypted is not None}
    if any(pending.same_document_key(c, e) for c, e in committed.values()):
        if len({(c.to_bytes(), e.to_bytes()) for c, e in committed.values()}) > 1:
            log.error("key %s: holders committed different document keys", _short(key_id))
        async with core.store_lock:
            current = await core.storage_call(key_id, lambda s: s.get_pending(key_id))
            if current is None or not current.same_document_key(pending.common_point, pending.encrypted_point):
                return "kept"
            await core.storage_call(key_id, lambda s: s.commit_pending(key_id))
        log.info("key %s: committed a pending document key another holder had committed", _short(key_id))
        return "committed"
    if committed:
        log.error("key %s: another holder committed a different document key; dropping the pending one",
                  _short(key_id))
        return "dropped" if await _drop(core, pending, only_if_expired=False) else "kept"
    if expired and not failures and await _drop(core, pending, only_if_expired=True):
        log.info("key %s: dropped an expired pending document key nobody committed", _short(key_id))
        return "dropped"
    return "kept"


async def resolve_pending(core: Core) -> None:
    """The background loop: every ~min(1 s, session timeout / 2), one resolution step per pending."""
    failpoints.armed()  # read the environment now, so a node's log says at boot that crash points are armed
    period = min(1.0, core.session_timeout / 2)
    while True:
        await asyncio.sleep(period)
        try:
            pendings = await core.storage_call(None, _list_pending)  # about no single key
        except Exception:  # the loop must outlive a storage hiccup: it tries again next round
            log.exception("listing pending document keys failed")
            continue
        # A few at a time: a frozen holder costs each step its query timeout, not every record in turn.
        for start in range(0, len(pendings), RESOLVE_BATCH):
            batch = pendings[start:start + RESOLVE_BATCH]
            outcomes = await gather_settled([resolve_one(core, pending) for pending in batch])
            for pending, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, Exception):  # one bad record must not stop the others' resolution
                    log.error("resolving the pending document key of key %s failed", _short(pending.key_id),
                              exc_info=outcome)


def _list_pending(storage: KeyStorage) -> list[PendingDocumentKey]:
    return storage.pending_documents()


REQUEST_HANDLERS: Final[RequestHandlers] = {
    m.StorePrepare: _on_prepare,
    m.StoreCommit: _on_commit,
    m.StoreAbort: _on_abort,
    m.StoreStatusRequest: _on_status,
}
MAINTENANCE: Final[tuple[Maintenance, ...]] = (resolve_pending,)
