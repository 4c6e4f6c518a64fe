"""Admin sessions: servers-set change (add, remove, replace nodes), proactive refresh and repair,
all by verifiable share redistribution per key (protocol.md §1.4.9, §2.10, §2.11; the math is
:mod:`ocean_secret_store.crypto.resharing`; operators' guide: docs/operators.md).

**The admin session.** The master (the node that got the signed request) checks the two
administrator signatures, that the old set is what it sees (its servers set, as far as connected,
itself included: Parity's rule) and that every node of the new set is connected, then sends
``AdminInit`` to every node of both sets. Each node checks the signatures itself and persists the
session: until it ends, that node refuses key generation and any other admin session
(``ExclusiveSessionActive``; a session already generating keys refuses the admin session with
``HasActiveSessions``), and its servers set includes the new nodes (so stores reach them).
Retrieval, signing and storing keep running, each key on its *active* version.

The master lists every key of the cluster (``AdminKeysRequest`` pages from every node, Parity's
unknown-sessions round), probes the keys on every node a page at a time (``ReshareProbes``) and
plans each (:func:`plan_key`). A key that would end with fewer than ``t + 1`` shares (fewer than
``t + 1`` live holders of its version, or a new set smaller than ``t + 1``) is reported before
anything changes, and the session is cancelled (``KeysWouldBeLost``) unless forced; forced, such
keys are left as they are. Then keys move with bounded concurrency, each on its own.

**One key** (the master goes on only when every participant answered):

1. ``ReshareInit`` to each of the ``t + 1`` dealers (live holders of the key's active version) and,
   at the same time, ``ReshareReceive`` to each receiver (the new version's holders), with the new
   id numbers (old nodes keep theirs) and the new epoch, above every epoch any node holds of the
   key, so no later version can share a version hash with an earlier one
   (:func:`~ocean_secret_store.crypto.resharing.version_hash`). A dealer checks it holds that
   version and sends every receiver ``ReshareDealing`` (``h_i(x_j)``, its Feldman commitments, and
   the key's public record for new holders); a dealing that comes before its ``ReshareReceive`` is
   kept until it does (bounded).
2. Each receiver, once it has every dealing, checks every subshare against its dealer's
   commitments, that every dealer sent the same public record (and, if it holds the version, that
   it is its own), each dealer's constant against the dealer's public share (from its stored
   version commitments, when it has them) and always ``Σ λ_i·A_i0 = Y``; combines its new share and
   answers the digest of the new version commitments ``D``. The master requires one digest from
   all: every new share then lies on the one polynomial ``D`` commits to, with ``D_0 = Y``.
Keys whose new shares every receiver computed alike are finished in batches of up to :data:`BATCH`
(one message per node per page, at least every :data:`FINISH_AFTER` seconds):

3. ``ReshareCommits`` (each key's session and digest): each receiver stores the new version
   *inactive*. The old version stays active everywhere: the key works as before.
4. ``ReshareFinish`` ``activate``, for the keys committed on every receiver: each now uses the new
   version. An entry node that activated asks members for the new version, which all of them hold;
   one that has not yet uses the old version, which nobody has dropped.
5. ``ReshareFinish`` ``prune``, for the keys activated on every holder, to every node of both sets:
   drop every other version; a node the session removes deletes the key.

A key interrupted anywhere keeps working: before step 4 on its old version (inactive versions of an
abandoned attempt are dropped by the next commit or prune), after it on the new one. Resuming (the
same signed request again) re-plans every key from what the nodes hold: a key already on the new
set is skipped or only pruned, one committed everywhere is only activated and pruned, any other is
redistributed again at a higher epoch. Once every key is done the master sends ``AdminDone`` and
every node makes the new set its servers set.

A refresh redistributes every key to its own holders with their own id numbers (new shares of the
same secret, new epoch); a repair does the same without the node being repaired among the dealers,
for every key whose active version that node lacks (it lost its database, or was restored from a
backup and holds an older version).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, TypeVar

from ...crypto.curve import Point
from ...crypto.resharing import (
    CheatingDealer,
    ReceivedShare,
    deal_redistribution,
    new_id_numbers,
    public_share_at,
    receive_redistribution,
    subshare_for,
    version_digest,
    version_hash,
)
from ...exceptions import (
    AccessDenied,
    AdminSessionIncomplete,
    ConsensusTemporaryUnreachable,
    DuplicateSessionId,
    ExclusiveSessionActive,
    HasActiveSessions,
    InternalError,
    InvalidMessage,
    InvalidNodeForRequest,
    InvalidStateForRequest,
    KeyServerError,
    KeysWouldBeLost,
    KeyVersionNotFound,
    NoActiveSessionWithId,
    NodeDisconnected,
)
from ...protocol import messages as m
from ...protocol.admin import AdminRequest, AdminRequestError
from ..storage import KeyShare, KeyVersion
from . import generation
from .base import (
    AdminSession,
    Core,
    EarlyMessages,
    OnewayHandlers,
    RequestHandlers,
    TableKey,
    close_early,
    gather_settled,
    keep_early,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Keys an admin session moves at once.
DEFAULT_CONCURRENCY: Final = 16
#: Key ids per ``AdminKeys`` page.
PAGE: Final = 512
#: Keys per ``ReshareProbes``, ``ReshareCommits`` and ``ReshareFinish`` page, and at most per batch
#: of keys finished together (committed, activated, pruned).
BATCH: Final = 256
#: A batch is finished once its first key has waited this long (seconds), full or not: receivers
#: keep a key's new share in memory until its commit (for at most two session timeouts).
FINISH_AFTER: Final = 1.0
_ZERO: Final = bytes(32)


def _short(value: bytes) -> str:
    return "0x" + value.hex()[:16]


# -- one node's state in one key's redistribution -------------------------------------------------


@dataclass(eq=False, repr=False)
class ReshareState:
    """One node's part in one key's redistribution (secrets inside: never logged or printed)."""

    session: bytes
    admin: bytes
    key_id: bytes
    master: bytes
    version: bytes
    dealers: dict[bytes, int]
    id_numbers: dict[bytes, int]
    epoch: int
    created: float
    dealings: dict[bytes, m.ReshareDealing] = field(default_factory=dict)
    complete: asyncio.Event = field(default_factory=asyncio.Event)
    failure: KeyServerError | None = None
    received: ReceivedShare | None = None
    digest: bytes | None = None
    record: m.ReshareDealing | None = None

    def fail(self, error: KeyServerError) -> None:
        if self.failure is None:
            self.failure = error
        self.complete.set()

    def peer_lost(self, peer: bytes) -> None:
        if self.received is None and (peer == self.master or peer in self.dealers):
            self.fail(NodeDisconnected())

    def expire(self) -> None:
        self.fail(NodeDisconnected())


TABLE: Final[TableKey[ReshareState]] = TableKey("reshare")


def redistributing(core: Core, key_id: bytes) -> bool:
    """Whether this node takes part in a redistribution of ``key_id`` now (a store of it waits)."""
    return any(state.key_id == key_id for state in core.table(TABLE).values())


def _admin(core: Core, sender: bytes, session: bytes) -> AdminSession:
    admin = core.admin_session
    if admin is None or admin.session != session:
        raise InvalidStateForRequest("no such admin session on this node")
    if sender != admin.master:
        raise InvalidNodeForRequest()
    return admin


def _state(core: Core, sender: bytes, session: bytes, *, from_master: bool = True) -> ReshareState:
    state = core.table(TABLE).get(session)
    if state is None:
        raise NoActiveSessionWithId()
    if from_master and sender != state.master:
        raise InvalidNodeForRequest()
    return state


# -- admin session: member handlers ---------------------------------------------------------------


def _request_of(msg: m.AdminInit) -> AdminRequest:
    try:
        return AdminRequest(msg.operation, msg.old_set, msg.new_set, msg.old_signature, msg.new_signature, msg.target)
    except AdminRequestError as exc:
        raise InvalidMessage(str(exc)) from exc


async def _on_admin_init(core: Core, sender: bytes, msg: m.AdminInit) -> None:
    request = _request_of(msg)
    request.verify(core.admin_public)
    members = set(request.old_set) | set(request.new_set)
    if core.node_id not in members or sender not in members:
        raise InvalidNodeForRequest()
    current = core.admin_session
    if current is not None and not current.request.same_session(request):
        # Another session is marked here. Forced, the administrator replaces it (one that stopped
        # and cannot be resumed, e.g. a node of its new set is gone for good), unless it is
        # visibly running here: a key of it in flight, or this node its running master.
        progress = core.admin_progress
        mastering = progress.get("session") == "0x" + current.session.hex()
        running = any(state.admin == current.session for state in core.table(TABLE).values()) or (
            mastering and progress.get("state") in ("planning", "running"))
        if not msg.force or running:
            raise ExclusiveSessionActive()
        log.warning("admin session %s supersedes the unfinished session %s (forced)", _short(msg.session),
                    _short(current.session))
    if current is None and core.table(generation.TABLE):
        raise HasActiveSessions()
    await core.begin_admin(AdminSession(msg.session, sender, request))
    # A resume: what this node still holds of the interrupted session's keys is abandoned (nothing
    # of it was committed by this node, or the new session's plan sees it).
    table = core.table(TABLE)
    for session in [s for s, state in table.items() if state.admin != msg.session]:
        table.pop(session).fail(NodeDisconnected())
    core.table(EARLY).clear()


async def _on_admin_keys(core: Core, sender: bytes, msg: m.AdminKeysRequest) -> m.AdminKeys:
    _admin(core, sender, msg.session)
    page = await core.storage_call(None, lambda s: s.key_page(msg.after, PAGE))
    return m.AdminKeys(key_ids=tuple(page), more=len(page) == PAGE)


async def _on_admin_done(core: Core, sender: bytes, msg: m.AdminDone) -> None:
    _admin(core, sender, msg.session)
    await core.end_admin(commit=True)


async def _on_admin_cancel(core: Core, sender: bytes, msg: m.AdminCancel) -> None:
    _admin(core, sender, msg.session)
    await core.end_admin(commit=False)


# -- one key: member handlers ----------------------------------------------------------------------


def _info(share: KeyShare | None) -> m.ReshareInfo:
    if share is None:
        return m.ReshareInfo(found=False, threshold=0, public=None, active=None, epoch=0, id_numbers=None,
                             max_epoch=0, others=(), document_key=False)
    active = share.last_version if share.usable else None
    return m.ReshareInfo(
        found=True, threshold=share.threshold, public=share.public,
        active=None if active is None else active.hash, epoch=0 if active is None else active.epoch,
        id_numbers=None if active is None else dict(active.id_numbers), max_epoch=share.max_epoch,
        others=tuple(v.hash for v in share.versions if v is not active)[-32:],
        document_key=share.common_point is not None,
    )


async def _on_probes(core: Core, sender: bytes, msg: m.ReshareProbes) -> m.ReshareInfos:
    _admin(core, sender, msg.session)
    return m.ReshareInfos(infos=tuple([_info(await core.load_key(key_id)) for key_id in msg.key_ids]))


def _check_plan(core: Core, admin: AdminSession, msg: m.ReshareInit | m.ReshareReceive) -> None:
    if not set(msg.id_numbers) <= set(admin.request.new_set):
        raise InvalidMessage("the new version's holders are not in the admin session's new set")
    if admin.request.operation == "change" and set(msg.id_numbers) != set(admin.request.new_set):
        raise InvalidMessage("a servers-set change moves every key to the whole new set")
    if msg.epoch == 0:
        raise InvalidMessage("a redistribution makes a new version at an epoch >= 1")


def _check_old_version(share: KeyShare, msg: m.ReshareInit | m.ReshareReceive) -> None:
    """Dealers' and continuing holders' id numbers are those of the version being redistributed."""
    old = next((v for v in share.versions if v.hash == msg.version and v.active), None)
    if old is None:
        return
    for node, x in old.id_numbers.items():
        if node in msg.id_numbers and msg.id_numbers[node] != x:
            raise InvalidMessage("a node of the old version must keep its id number")
        if node in msg.dealers and msg.dealers[node] != x:
            raise InvalidMessage("a dealer's id number is not its id number in the old version")


#: Dealings that came before their ``ReshareReceive`` (the dealers deal while the receivers are asked).
EARLY: Final[TableKey[EarlyMessages[m.ReshareDealing]]] = TableKey("reshare-early")


def _accept_dealing(state: ReshareState, dealer: bytes, msg: m.ReshareDealing) -> None:
    if dealer not in state.dealers:
        state.fail(InvalidNodeForRequest())
        return
    if dealer in state.dealings:
        state.fail(InvalidMessage("duplicate dealing"))
        return
    state.dealings[dealer] = msg
    if len(state.dealings) == len(state.dealers):
        state.complete.set()


def _deliver(core: Core, dealer: bytes, msg: m.ReshareDealing) -> None:
    state = core.table(TABLE).get(msg.session)
    if state is not None:
        _accept_dealing(state, dealer, msg)
        return
    keep_early(core, EARLY, msg.session, dealer, msg)


def _on_dealing(core: Core, sender: bytes, msg: m.ReshareDealing) -> None:
    _deliver(core, sender, msg)


async def _on_init(core: Core, sender: bytes, msg: m.ReshareInit) -> None:
    """A dealer: check, then deal to every receiver at once (they may not be asked yet: they keep it)."""
    admin = _admin(core, sender, msg.admin)
    me = core.node_id
    if me not in msg.dealers:
        raise InvalidNodeForRequest()
    _check_plan(core, admin, msg)
    share = await core.load_key(msg.key_id)
    if share is None or not share.usable or share.last_version.hash != msg.version:
        raise InvalidStateForRequest("this dealer does not hold the key's version as its active one")
    _check_old_version(share, msg)
    version = share.last_version
    dealing = deal_redistribution(version.secret_share, share.threshold, core.rng)
    for node, x in msg.id_numbers.items():
        out = m.ReshareDealing(
            session=msg.session, subshare=subshare_for(dealing, x), commitments=dealing.commitments,
            author=share.author, threshold=share.threshold, public=share.public, common_point=share.common_point,
            encrypted_point=share.encrypted_point, owner=share.owner)
        if node == me:
            _deliver(core, me, out)
        else:
            await core.send(node, out)


def _public_record(dealing: m.ReshareDealing) -> tuple[Any, ...]:
    return (dealing.author, dealing.threshold, dealing.public, dealing.common_point, dealing.encrypted_point,
            dealing.owner)


def _holds(share: KeyShare | None, version: bytes) -> bool:
    return share is not None and any(v.hash == version for v in share.versions)


def _lacks_only_the_document_key(share: KeyShare, dealing: m.ReshareDealing) -> bool:
    """Whether ``share`` is the dealers' record but for the document key, which it lacks and they
    hold (a node restored from a backup taken between the key's generation and its store)."""
    return share.common_point is None and dealing.common_point is not None and (
        share.author, share.threshold, share.public, share.owner) == (
        dealing.author, dealing.threshold, dealing.public, dealing.owner)


def _check_records(state: ReshareState, share: KeyShare | None) -> m.ReshareDealing:
    """Every dealer sent the same public record of the key, and it is this node's own if it holds
    the version being redistributed (a node being repaired, whose record is missing or stale, takes
    the record all ``t + 1`` dealers agree on)."""
    dealings = list(state.dealings.values())
    first = dealings[0]
    if any(_public_record(d) != _public_record(first) for d in dealings[1:]):
        raise InvalidMessage("the dealers sent different public records of the key")
    if share is not None and _holds(share, state.version) and _public_record(first) != (
            share.author, share.threshold, share.public, share.common_point, share.encrypted_point, share.owner
    ) and not _lacks_only_the_document_key(share, first):
        raise InvalidMessage("the dealers' public record of the key is not this node's")
    if len(state.dealers) != first.threshold + 1:
        raise InvalidMessage("a redistribution has exactly t+1 dealers")
    return first


async def _register(core: Core, sender: bytes, msg: m.ReshareReceive) -> ReshareState:
    admin = _admin(core, sender, msg.admin)
    if core.node_id not in msg.id_numbers:
        raise InvalidNodeForRequest()
    _check_plan(core, admin, msg)
    table = core.table(TABLE)
    if msg.session in table:
        raise DuplicateSessionId()
    async with core.store_lock:  # against a store of this key being prepared here at the same time
        if redistributing(core, msg.key_id):
            raise ExclusiveSessionActive()
        share = await core.load_key(msg.key_id)
        if share is not None:
            if msg.epoch <= share.max_epoch:
                raise InvalidStateForRequest("this node holds a version of this key at this epoch or later")
            if await core.storage_call(msg.key_id, lambda s: s.get_pending(msg.key_id)) is not None:
                raise ConsensusTemporaryUnreachable("a document key of this key is being stored")
            _check_old_version(share, msg)
        state = table[msg.session] = ReshareState(
            session=msg.session, admin=msg.admin, key_id=msg.key_id, master=sender, version=msg.version,
            dealers=dict(msg.dealers), id_numbers=dict(msg.id_numbers), epoch=msg.epoch,
            created=asyncio.get_running_loop().time())
    early = core.table(EARLY).pop(msg.session, None)
    for dealer, dealing in ({} if early is None else early.messages).items():
        _accept_dealing(state, dealer, dealing)
    return state


async def _on_receive(core: Core, sender: bytes, msg: m.ReshareReceive) -> m.ReshareReceived:
    """A receiver: wait for every dealing, verify them all, compute the new share; the digest of ``D``."""
    state = await _register(core, sender, msg)
    try:
        async with asyncio.timeout(core.session_timeout):
            await state.complete.wait()
    except TimeoutError as exc:
        raise NodeDisconnected() from exc
    if state.failure is not None:
        raise state.failure
    me = core.node_id
    share = await core.load_key(state.key_id)
    record = _check_records(state, share)
    old = None if share is None else next((v for v in share.versions if v.hash == state.version), None)

    def receive(public_shares: Mapping[bytes, Point] | None) -> ReceivedShare:
        return receive_redistribution(
            state.id_numbers[me], record.threshold, state.dealers,
            {d: dealing.subshare for d, dealing in state.dealings.items()},
            {d: dealing.commitments for d, dealing in state.dealings.items()},
            record.public, public_shares)

    try:
        try:
            # The sum check alone guarantees the key; the dealers' public shares (t+1 more
            # multiplications each) are computed only to name a culprit once it fails.
            received = receive(None)
        except CheatingDealer as exc:
            if len(exc.dealers) < 2 or old is None or not old.commitments:
                raise
            receive({d: public_share_at(x, old.commitments) for d, x in state.dealers.items()})
            raise  # (the naming check raises first; if it did not, the group-wide failure stands)
    except CheatingDealer as exc:
        names = ", ".join(_short(d) for d in exc.dealers if isinstance(d, bytes))
        log.warning("redistribution of key %s: refused the dealing of %s: %s", _short(state.key_id), names, exc,
                    extra={"key_id": state.key_id, "decision": "refused", "reason": "cheating dealer"})
        failure = InternalError(f"cheating dealer(s) {names}: {exc}")  # Internal keeps the detail on the wire
        state.fail(failure)
        raise failure from exc
    state.received, state.record = received, record
    state.digest = version_digest(received.version_commitments)
    return m.ReshareReceived(digest=state.digest)


async def _on_commits(core: Core, sender: bytes, msg: m.ReshareCommits) -> m.ReshareFinished:
    """Commit a batch of keys; the sessions that failed here are named in the answer."""
    failed = []
    for session, digest in zip(msg.sessions, msg.digests, strict=True):
        try:
            await _commit(core, sender, session, digest)
        except KeyServerError as exc:
            log.warning("redistribution %s: commit failed: %s", _short(session), exc)
            failed.append(session)
    return m.ReshareFinished(failed=tuple(failed))


async def _commit(core: Core, sender: bytes, session: bytes, digest: bytes) -> None:
    state = _state(core, sender, session)
    received, record = state.received, state.record
    if received is None or record is None or state.digest is None:
        raise InvalidStateForRequest("commit before this node computed its new share")
    if digest != state.digest:
        raise InvalidMessage("the receivers computed different version commitments: a dealer cheated")
    version = KeyVersion.new(state.id_numbers, received.share, received.version_commitments, state.epoch,
                             active=False)
    async with core.store_lock:
        share = await core.load_key(state.key_id)
        if share is None:
            await core.insert_key(state.key_id, KeyShare(
                author=record.author, threshold=record.threshold, public=record.public,
                common_point=record.common_point, encrypted_point=record.encrypted_point, versions=(version,),
                owner=record.owner))
        else:
            if state.epoch <= share.max_epoch:
                raise InvalidStateForRequest("this node holds a version of this key at this epoch or later")
            if not _holds(share, state.version):  # repaired: the dealers' record replaces a stale one
                share = replace(share, author=record.author, threshold=record.threshold, public=record.public,
                                common_point=record.common_point, encrypted_point=record.encrypted_point,
                                owner=record.owner, versions=())
            elif share.common_point is None and record.common_point is not None and record.encrypted_point:
                # repaired: it lacked the document key its co-holders store (_check_records allowed it)
                share = share.with_document_key(record.common_point, record.encrypted_point)
            await core.update_key(state.key_id, share.with_committed(version))
    core.table(TABLE).pop(state.session, None)


async def _finish_one(core: Core, admin: AdminSession, stage: str, key_id: bytes, version: bytes) -> None:
    share = await core.load_key(key_id)
    if stage == "activate":
        if share is None:
            raise KeyVersionNotFound(f"key version 0x{version.hex()} is not found")
        if not share.version(version).active:
            await core.update_key(key_id, share.activated(version))
        return
    if share is None:
        return
    if any(v.hash == version and v.active for v in share.versions):
        if len(share.versions) > 1:
            await core.update_key(key_id, share.pruned(version))
        return
    if core.node_id in admin.request.new_set:
        raise KeyVersionNotFound(f"key version 0x{version.hex()} is not active on this node")
    await core.storage_call(key_id, lambda s: s.remove(key_id))  # this node leaves the set
    log.info("key %s: share dropped (this node is not in the new servers set)", _short(key_id),
             extra={"key_id": key_id})


async def _on_finish(core: Core, sender: bytes, msg: m.ReshareFinish) -> m.ReshareFinished:
    """Activate (or prune) a page of keys; the ones that failed here are named in the answer."""
    admin = _admin(core, sender, msg.session)
    failed = []
    for key_id, version in zip(msg.key_ids, msg.versions, strict=True):
        try:
            async with core.store_lock:  # per key: a page must not hold up this node's stores
                await _finish_one(core, admin, msg.stage, key_id, version)
        except KeyServerError as exc:
            log.warning("key %s: %s failed: %s", _short(key_id), msg.stage, exc,
                        extra={"key_id": key_id, "decision": "failed", "reason": exc.parity_name})
            failed.append(key_id)
    return m.ReshareFinished(failed=tuple(failed))


def _on_abort(core: Core, sender: bytes, msg: m.ReshareAbort) -> None:
    state = core.table(TABLE).get(msg.session)
    if state is None:  # a dealing still on its way must not wait here for a Receive never to come
        admin = core.admin_session
        if admin is not None and sender == admin.master:
            close_early(core, EARLY, msg.session, sender)
    if state is not None and state.master == sender:
        core.table(TABLE).pop(msg.session, None)
        state.fail(NodeDisconnected())


REQUEST_HANDLERS: Final[RequestHandlers] = {
    m.AdminInit: _on_admin_init, m.AdminKeysRequest: _on_admin_keys, m.AdminDone: _on_admin_done,
    m.AdminCancel: _on_admin_cancel, m.ReshareProbes: _on_probes, m.ReshareInit: _on_init,
    m.ReshareReceive: _on_receive, m.ReshareCommits: _on_commits, m.ReshareFinish: _on_finish,
}
ONEWAY_HANDLERS: Final[OnewayHandlers] = {m.ReshareDealing: _on_dealing, m.ReshareAbort: _on_abort}


# -- planning (pure) -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyPlan:
    """What an admin session does with one key.

    ``action``: ``move`` (redistribute ``version`` from ``dealers`` to ``id_numbers`` at ``epoch``),
    ``activate`` (the new version is committed on every holder, ``version_holders``: activate and
    prune), ``prune``
    (already done: only drop other versions), ``skip`` (nothing to do), ``lost`` (cannot keep
    ``t + 1`` shares: ``reason`` says why), ``missing`` (no node answered with a usable version).
    """

    key_id: bytes
    action: str
    threshold: int = 0
    version: bytes = b""
    version_holders: tuple[bytes, ...] = ()
    dealers: Mapping[bytes, int] = field(default_factory=dict)
    id_numbers: Mapping[bytes, int] = field(default_factory=dict)
    epoch: int = 0
    reason: str = ""


def plan_key(key_id: bytes, request: AdminRequest, infos: Mapping[bytes, m.ReshareInfo],
             choose: Callable[[list[bytes], int], list[bytes]], fresh_ids: Callable[[Mapping[bytes, int],
                                                                                      Sequence[bytes]],
                                                                             dict[bytes, int]]) -> KeyPlan:
    """Plan one key from what every live node of both sets holds of it (``infos``).

    ``choose(candidates, k)`` picks ``k`` dealers; ``fresh_ids(old_map, nodes)`` makes the new id
    numbers (old nodes keep theirs). Pure apart from those two.
    """
    actives = {node: info for node, info in infos.items() if info.found and info.active is not None}
    if not actives:
        return KeyPlan(key_id, "missing", reason="no live node holds an active version of the key")
    newest = max(actives.values(), key=lambda info: info.epoch)
    version, threshold, old_map = newest.active, newest.threshold, newest.id_numbers
    if version is None or old_map is None:  # actives has both by construction
        raise InternalError("an active version without its hash or id numbers")
    holders = {node for node, info in actives.items() if info.active == version}
    committed = holders | {node for node, info in infos.items() if info.found and version in info.others}
    targets = set(request.new_set) if request.operation == "change" else set(old_map) & set(request.new_set)
    max_epoch = max(info.max_epoch for info in infos.values() if info.found)

    def planned(action: str, reason: str = "", dealers: Mapping[bytes, int] | None = None,
                id_numbers: Mapping[bytes, int] | None = None, epoch: int = 0,
                version_holders: set[bytes] | None = None) -> KeyPlan:
        return KeyPlan(key_id, action, threshold, version, tuple(sorted(holders if version_holders is None
                                                                        else version_holders)),
                       dealers or {}, id_numbers or {}, epoch, reason)

    if set(old_map) == targets and request.operation == "change":
        if committed >= targets and holders < targets:
            return planned("activate", version_holders=committed)
        if holders >= targets:
            leftovers = any(info.found and (info.others or info.active != version or node not in targets)
                            for node, info in infos.items())
            return planned("prune" if leftovers else "skip")
    if request.operation == "repair" and request.target in holders and (
            actives[request.target].document_key or not any(actives[n].document_key for n in holders)):
        return planned("skip")  # (a target without the document key its co-holders hold is repaired)
    if len(targets) < threshold + 1:
        return planned("lost", f"the new set keeps {len(targets)} of its holders; t+1 = {threshold + 1} are needed")
    candidates = sorted(n for n in holders if n != request.target)
    with_document = [n for n in candidates if actives[n].document_key]
    if len(with_document) >= threshold + 1:  # dealers send their record: one with the document key
        candidates = with_document
    if len(candidates) < threshold + 1:
        return planned("lost", f"{len(candidates)} live holders of its version; t+1 = {threshold + 1} are needed "
                               "to move it")
    dealers = {node: old_map[node] for node in choose(candidates, threshold + 1)}
    return planned("move", dealers=dealers, id_numbers=fresh_ids(old_map, sorted(targets)), epoch=max_epoch + 1)


# -- the master ------------------------------------------------------------------------------------


async def _ask(core: Core, node: bytes, body: m.Message, reply: type[T], handler: Callable[..., Awaitable[Any]],
               ) -> T:
    """``body`` to ``node``, or straight to ``handler`` when the node is this one."""
    if node == core.node_id:
        answer = await handler(core, node, body)
        result: Any = m.Ack() if answer is None else answer
    else:
        result = await core.request(node, body, reply)
    if not isinstance(result, reply):
        raise InvalidMessage(f"{body.KIND} was answered with {type(result).__name__}")
    return result


async def _all(core: Core, nodes: Sequence[bytes], body: m.Message, reply: type[T],
               handler: Callable[..., Awaitable[Any]]) -> dict[bytes, T]:
    """Ask every node; the first failure (by node order) is raised after all have settled."""
    results = await gather_settled([_ask(core, n, body, reply, handler) for n in nodes])
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return {node: result for node, result in zip(nodes, results, strict=True)
            if not isinstance(result, BaseException)}


def _participants(core: Core, request: AdminRequest) -> list[bytes]:
    """Every node of both sets this master can reach, itself first."""
    connected = core.reachable()
    others = sorted(n for n in set(request.old_set) | set(request.new_set) if n != core.node_id and n in connected)
    return [core.node_id, *others]


async def _probe_page(core: Core, admin: AdminSession, nodes: Sequence[bytes],
                      key_ids: Sequence[bytes]) -> dict[bytes, dict[bytes, m.ReshareInfo]]:
    """What every node holds of each key of one page (a node that does not answer tells nothing)."""
    probe = m.ReshareProbes(session=admin.session, key_ids=tuple(key_ids))
    results = await gather_settled([_ask(core, n, probe, m.ReshareInfos, _on_probes) for n in nodes])
    out: dict[bytes, dict[bytes, m.ReshareInfo]] = {key_id: {} for key_id in key_ids}
    for node, result in zip(nodes, results, strict=True):
        if isinstance(result, BaseException) or len(result.infos) != len(key_ids):
            log.warning("admin session %s: no key information from %s", _short(admin.session), _short(node))
            continue
        for key_id, info in zip(key_ids, result.infos, strict=True):
            out[key_id][node] = info
    return out


async def _move(core: Core, admin: AdminSession, plan: KeyPlan) -> _Finishing:
    """Steps 1-4 for one key (deal, receive, commit); what is left to finish it."""
    session = core.rng(32)
    dealers, receivers = sorted(plan.dealers), sorted(plan.id_numbers)
    fields: dict[str, Any] = {"session": session, "admin": admin.session, "key_id": plan.key_id,
                              "version": plan.version, "dealers": dict(plan.dealers),
                              "id_numbers": dict(plan.id_numbers), "epoch": plan.epoch}
    # The receivers are asked while the dealers deal: a dealing that comes first waits for its receiver.
    receiving = asyncio.ensure_future(_all(core, receivers, m.ReshareReceive(**fields), m.ReshareReceived,
                                           _on_receive))
    try:
        try:
            await _all(core, dealers, m.ReshareInit(**fields), m.Ack, _on_init)
            digests = await receiving
        finally:
            receiving.cancel()
        if len({reply.digest for reply in digests.values()}) != 1:
            raise InvalidMessage("the receivers computed different version commitments: a dealer cheated")
    except BaseException:
        await _abort(core, session, sorted(set(dealers) | set(receivers)))
        raise
    digest = next(iter(digests.values())).digest
    return _Finishing(plan.key_id, version_hash(plan.id_numbers, plan.epoch), tuple(receivers), session, digest)


async def _abort(core: Core, session: bytes, nodes: Sequence[bytes]) -> None:
    core.table(TABLE).pop(session, None)
    close_early(core, EARLY, session, core.node_id)
    for node in nodes:
        if node != core.node_id and node in core.reachable():
            with contextlib.suppress(KeyServerError):  # best effort: the member's session expires
                await core.send(node, m.ReshareAbort(session=session))


@dataclass(frozen=True, slots=True)
class _Finishing:
    """A key whose new ``version`` ``holders`` computed alike (to commit, in ``session`` with
    ``digest``) or already committed (``session`` None); no holders: only a prune is left."""

    key_id: bytes
    version: bytes
    holders: tuple[bytes, ...]
    session: bytes | None = None
    digest: bytes | None = None


async def _finish_stage(core: Core, admin: AdminSession, stage: str, items: Mapping[bytes, Sequence[_Finishing]],
                        ) -> dict[bytes, str]:
    """``ReshareFinish`` of ``stage`` to each node for its keys, in pages; the keys that failed, with why."""
    failed: dict[bytes, str] = {}

    async def node_pages(node: bytes, keys: Sequence[_Finishing]) -> None:
        for i in range(0, len(keys), BATCH):
            page = keys[i:i + BATCH]
            request = m.ReshareFinish(session=admin.session, stage=stage, key_ids=tuple(k.key_id for k in page),
                                      versions=tuple(k.version for k in page))
            try:
                reply = await _ask(core, node, request, m.ReshareFinished, _on_finish)
            except KeyServerError as exc:
                failed.update({k.key_id: f"{stage} on {_short(node)}: {exc}" for k in page})
                continue
            failed.update({key_id: f"{stage} on {_short(node)} failed" for key_id in reply.failed})

    await asyncio.gather(*(node_pages(node, keys) for node, keys in items.items()))
    return failed


async def _commit_batch(core: Core, holders: Mapping[bytes, Sequence[_Finishing]]) -> dict[bytes, str]:
    """Step 3 for a batch: ``ReshareCommits`` to every holder, a page per message; the keys that failed
    on any holder (their sessions are aborted: a later attempt drops what they left inactive)."""
    failed: dict[bytes, str] = {}
    items = {item.session: item for node_items in holders.values() for item in node_items if item.session}

    async def node_pages(node: bytes, keys: Sequence[_Finishing]) -> None:
        todo = [k for k in keys if k.session is not None and k.digest is not None]
        for i in range(0, len(todo), BATCH):
            page = todo[i:i + BATCH]
            request = m.ReshareCommits(sessions=tuple(k.session for k in page if k.session),
                                       digests=tuple(k.digest for k in page if k.digest))
            try:
                reply = await _ask(core, node, request, m.ReshareFinished, _on_commits)
            except KeyServerError as exc:
                failed.update({k.key_id: f"commit on {_short(node)}: {exc}" for k in page})
                continue
            failed.update({items[s].key_id: f"commit on {_short(node)} failed" for s in reply.failed if s in items})

    await asyncio.gather(*(node_pages(node, keys) for node, keys in holders.items()))
    for item in items.values():
        if item.key_id in failed and item.session is not None:
            await _abort(core, item.session, item.holders)
    return failed


async def _finish(core: Core, admin: AdminSession, batch: Sequence[_Finishing]) -> None:
    """Steps 3 to 5 for a batch of keys: commit each key's new version on its holders, activate it
    where every holder committed, then, for the keys activated everywhere, prune on every node of
    both sets; counts them in the progress."""
    progress = core.admin_progress
    holders: dict[bytes, list[_Finishing]] = {}
    for item in batch:
        for node in item.holders:
            holders.setdefault(node, []).append(item)
    failed = await _commit_batch(core, holders)
    holders = {node: [item for item in items if item.key_id not in failed] for node, items in holders.items()}
    failed.update(await _finish_stage(core, admin, "activate", holders))
    prunable = [item for item in batch if item.key_id not in failed]
    failed.update(await _finish_stage(core, admin, "prune",
                                      dict.fromkeys(_participants(core, admin.request), prunable)))
    for key_id, why in failed.items():
        progress["errors"] = [*progress["errors"], f"0x{key_id.hex()}: {why}"][-20:]
    progress["failed"] += len(failed)
    progress["done"] += len(batch) - len(failed)


async def _list_keys(core: Core, admin: AdminSession, nodes: Sequence[bytes]) -> list[bytes]:
    found: set[bytes] = set()

    async def pages(node: bytes) -> None:
        after = _ZERO
        while True:
            page = await _ask(core, node, m.AdminKeysRequest(session=admin.session, after=after), m.AdminKeys,
                              _on_admin_keys)
            found.update(page.key_ids)
            if not page.more or not page.key_ids:
                return
            after = page.key_ids[-1]

    await _all_settled_raise(gather_settled([pages(n) for n in nodes]))
    return sorted(found)


async def _all_settled_raise(results: Awaitable[list[Any]]) -> None:
    for result in await results:
        if isinstance(result, BaseException):
            raise result


def _progress_start(core: Core, admin: AdminSession, total: int) -> dict[str, Any]:
    progress = core.admin_progress
    progress.clear()
    progress.update({
        "session": "0x" + admin.session.hex(), "operation": admin.request.operation, "state": "planning",
        "total": total, "ready": 0, "done": 0, "failed": 0, "skipped": 0, "lost": [], "errors": [],
        "started": time.time(), "finished": None,
    })
    return progress


def old_set_view(core: Core, operation: str) -> tuple[bytes, ...]:
    """The old set the administrator signs for this node as master. A change: the servers set
    members connected to it, itself included (Parity's rule, so a dead node can be replaced). A
    refresh or repair keeps the set, so it is the whole servers set: each of its nodes must be
    connected, or it would be left out of every refreshed key (and then of the set)."""
    if operation == "change":
        connected = core.reachable()
        return tuple(sorted({n for n in core.servers_set if n in connected} | {core.node_id}))
    return tuple(sorted(set(core.servers_set) | {core.node_id}))


async def run(core: Core, request: AdminRequest, *, force: bool = False,
              concurrency: int = DEFAULT_CONCURRENCY) -> dict[str, Any]:
    """Master side of an admin session; returns its final progress report.

    :raises AccessDenied: no administrator key, a signature that is not the administrator's, or an
        old set that is not this node's view (:func:`old_set_view`).
    :raises NodeDisconnected: a node of the new set is not connected.
    :raises ExclusiveSessionActive: another admin session is marked on a node (forced, an unfinished
        one that is not running is superseded).
    :raises KeysWouldBeLost: some keys cannot keep t+1 shares and ``force`` is not set (nothing changed).
    :raises AdminSessionIncomplete: some keys failed to move (run the same request again to resume).
    """
    request.verify(core.admin_public)
    if request.old_set != old_set_view(core, request.operation):
        raise AccessDenied("the old set is not the servers set as this node sees it")
    connected = core.reachable()
    if any(n != core.node_id and n not in connected for n in request.new_set):
        raise NodeDisconnected()
    current = core.admin_session
    if core.admin_progress.get("state") in ("planning", "running"):
        raise ExclusiveSessionActive()
    if current is not None and not current.request.same_session(request) and not force:
        raise ExclusiveSessionActive()
    admin = AdminSession(core.rng(32), core.node_id, request)
    nodes = _participants(core, request)
    init = m.AdminInit(session=admin.session, operation=request.operation, old_set=request.old_set,
                       new_set=request.new_set, target=request.target, old_signature=request.old_signature,
                       new_signature=request.new_signature, force=force)
    progress = _progress_start(core, admin, 0)
    try:
        try:
            await _all(core, nodes, init, m.Ack, _on_admin_init)
        except KeyServerError:
            await _cancel(core, admin, nodes)
            raise
        key_ids = await _list_keys(core, admin, nodes)
        progress["total"] = len(key_ids)
        plans = await _plan_all(core, admin, request, nodes, key_ids)
        lost = [p for p in plans if p.action in ("lost", "missing")]
        progress["lost"] = [{"key_id": "0x" + p.key_id.hex(), "threshold": p.threshold, "reason": p.reason}
                            for p in lost]
        if lost and not force:
            await _cancel(core, admin, nodes)
            sample = "; ".join(f"0x{p.key_id.hex()} (t={p.threshold}): {p.reason}" for p in lost[:5])
            raise KeysWouldBeLost(f"{len(lost)} key(s) would end with fewer than t+1 shares, nothing changed "
                                  f"(force to leave them behind): {sample}")
        progress["state"] = "running"
        progress["skipped"] = len(lost) + sum(p.action == "skip" for p in plans)
        await _execute(core, admin, [p for p in plans if p.action not in ("lost", "missing", "skip")], concurrency)
        if progress["failed"]:
            raise AdminSessionIncomplete(f"{progress['failed']} of {len(plans)} keys did not move; the session "
                                         "stays open: send the same request again to resume it")
        await _all(core, _participants(core, request), m.AdminDone(session=admin.session), m.Ack, _on_admin_done)
        progress["state"] = "done"
    except BaseException as exc:
        if progress["state"] != "cancelled":
            progress["state"] = "failed"
        progress["errors"] = [*progress["errors"], str(exc) if isinstance(exc, KeyServerError) else "interrupted"][-20:]
        raise
    finally:
        progress["finished"] = time.time()
    return dict(progress)


async def _cancel(core: Core, admin: AdminSession, nodes: Sequence[bytes]) -> None:
    core.admin_progress["state"] = "cancelled"
    results = await gather_settled([_ask(core, n, m.AdminCancel(session=admin.session), m.Ack, _on_admin_cancel)
                                    for n in nodes])
    for node, result in zip(nodes, results, strict=True):
        if isinstance(result, BaseException):
            log.warning("admin session %s: cancel on %s failed: %s", _short(admin.session), _short(node), result)


async def _plan_all(core: Core, admin: AdminSession, request: AdminRequest, nodes: Sequence[bytes],
                    key_ids: Sequence[bytes]) -> list[KeyPlan]:

    def choose(candidates: list[bytes], k: int) -> list[bytes]:
        # this node first when it is a holder (fewer messages), the rest at random
        ordered = ([core.node_id] if core.node_id in candidates else []) + core.shuffled(
            [c for c in candidates if c != core.node_id])
        return ordered[:k]

    def fresh(old: Mapping[bytes, int], targets: Sequence[bytes]) -> dict[bytes, int]:
        return new_id_numbers(old, targets, core.rng)

    plans: list[KeyPlan] = []
    for i in range(0, len(key_ids), BATCH):
        page = key_ids[i:i + BATCH]
        infos = await _probe_page(core, admin, nodes, page)
        plans.extend(plan_key(key_id, request, infos[key_id], choose, fresh) for key_id in page)
    return plans


async def _execute(core: Core, admin: AdminSession, plans: Sequence[KeyPlan], concurrency: int) -> None:
    """Move keys ``concurrency`` at a time; finish them (activate, prune) in batches as they commit."""
    progress = core.admin_progress
    limit = asyncio.Semaphore(concurrency)
    ready: list[_Finishing] = []
    finishing = asyncio.Lock()

    async def finish() -> None:
        async with finishing:
            batch = ready[:]
            del ready[:]
            if batch:
                await _finish(core, admin, batch)

    oldest: list[float] = []  # when the oldest key waiting to be finished was ready

    async def one(plan: KeyPlan) -> None:
        async with limit:
            try:
                if plan.action == "move":
                    item = await _move(core, admin, plan)
                else:  # activate (committed everywhere) or prune (active everywhere)
                    item = _Finishing(plan.key_id, plan.version,
                                      plan.version_holders if plan.action == "activate" else ())
            except KeyServerError as exc:
                progress["failed"] += 1
                progress["errors"] = [*progress["errors"], f"0x{plan.key_id.hex()}: {exc}"][-20:]
                log.warning("admin session %s: key %s did not move: %s", _short(admin.session),
                            _short(plan.key_id), exc, extra={"operation": f"admin_{admin.request.operation}",
                                                             "key_id": plan.key_id, "decision": "failed",
                                                             "reason": exc.parity_name})
                return
        progress["ready"] += 1
        now = asyncio.get_running_loop().time()
        if not ready:
            oldest[:] = [now]
        ready.append(item)
        if len(ready) >= BATCH or now - oldest[0] > FINISH_AFTER:
            await finish()

    await asyncio.gather(*(one(p) for p in plans))
    await finish()
