"""Batch server key generation (ours, beyond Parity; docs/cluster-protocol.md, "Batch generation"):
many keys generated in one session, each exactly as :mod:`.generation` generates one.

Rounds, driven by the entry node (the master), for up to :func:`~...protocol.messages.gen_batch_size`
keys of one threshold (a larger request runs as several sessions, :func:`run`):

1. ``GenBatchInit`` (master -> every node, answered with ``GenBatchAccepted``): id numbers,
   threshold, and each key's id, author and owner-to-be. Each node reserves every key it neither
   stores nor generates already, and names the ones it refuses (with their error).
2. ``GenBatchStart`` (master -> every node, answered with ``GenBatchReady``): the keys no node
   refused, in order; the others are released. Each node deals its two polynomials for every key
   (``H`` hashed from each key id, as for one key) and sends ONE ``GenBatchDealing`` to every other
   node (every key's two shares and Pedersen commitments), checks every dealing of every key in
   one random linear combination (crypto.dkg.verify_dealing_batches: a culprit is still named),
   sends ONE ``GenBatchPublics`` (every key's Feldman commitments) to every node and checks its
   shares against them the same way. Then, per key, its share, ``Y = Σ a_i0·G`` and the version
   commitments ``D_k = Σ_i a_ik·G``, with ``D_0 = Y`` and its shares against ``D`` checked (in one
   combination over the keys). ``GenBatchReady`` carries every ``Y`` and one digest over every
   key's ``D``: the master refuses to commit unless every node computed all of them alike.
3. ``GenBatchCommit`` (master -> every node, answered): every node stores every key's share in
   ONE storage transaction (all of the batch's keys or none); the master stores last.

Each key's record is the one a single generation stores (epoch-0 version with its commitments,
author, owner-to-be), so every route and admin session treats it as any other key. A key that a
node refused gets its own error (``ServerKeyAlreadyGenerated``, ``DuplicateSessionId``) and the
others go on; a failure of the session as a whole (a node down, a cheating dealer, a timeout) fails
each of its keys. A node that fails its commit stores none of the batch's keys; as with a single
generation, the nodes that committed before it keep theirs (the key id is then taken).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

from ... import failpoints
from ...crypto import dkg
from ...crypto.curve import N, Point, point_sum, random_scalar
from ...crypto.hashes import key_version_hash
from ...crypto.nums import pedersen_h
from ...crypto.resharing import CheatingDealer, version_digest
from ...exceptions import (
    KEY_SERVER_ERRORS,
    DuplicateSessionId,
    ExclusiveSessionActive,
    InternalError,
    InvalidMessage,
    InvalidNodeForRequest,
    InvalidPoint,
    InvalidShare,
    KeyServerError,
    NoActiveSessionWithId,
    NodeDisconnected,
    NotEnoughNodesForThreshold,
    ServerKeyAlreadyGenerated,
)
from ...protocol import messages as m
from ..storage import KeyShare, KeyVersion
from .base import Core, OnewayHandlers, RequestHandlers, TableKey, gather_settled
from .generation import CLAIMS, BatchClaim, reserved

#: Batch sessions a node runs at once as master, over all requests (the nodes' CPU is the limit; two
#: overlap one session's round trips with another's work); more wait their turn.
CONCURRENT_SESSIONS: Final = 2
#: Seconds a batch session may take per key on top of the session timeout (a node's work is ~1.5 ms a
#: key for 3 nodes; the margin is for a loaded host). A full session of 256 keys is bounded at the
#: session timeout + 2.6 s, inside the members' own bound (twice the session timeout).
SECONDS_PER_KEY: Final = 0.01
#: Keys dealt or checked between two yields to the event loop (a session's work is long).
YIELD_EVERY: Final = 32
#: The audit's operation name of each key of a batch (the single route's).
OPERATION: Final = "generate_server_key"
#: The crash points of this module (``OSS_FAILPOINTS``, see ocean_secret_store/failpoints.py): a
#: member, or the master once every member committed, dies before writing the batch's keys.
FP_MEMBER_STORING: Final = "genbatch.member.storing"
FP_MASTER_STORING: Final = "genbatch.master.storing"


@dataclass(frozen=True, slots=True)
class BatchKey:
    """One key to generate: its id, its author (the requester) and its owner-to-be."""

    key_id: bytes
    author: bytes
    owner: bytes | None = None


@dataclass(eq=False, repr=False)
class BatchState:
    """One node's state in one batch generation (secrets inside: never logged or printed)."""

    session: bytes
    master: bytes
    threshold: int
    id_numbers: dict[bytes, int]
    keys: dict[bytes, m.GenBatchKey]
    created: float
    order: tuple[bytes, ...] = ()
    dealings: dict[bytes, m.GenBatchDealing] = field(default_factory=dict)
    publics: dict[bytes, m.GenBatchPublics] = field(default_factory=dict)
    dealings_done: asyncio.Event = field(default_factory=asyncio.Event)
    publics_done: asyncio.Event = field(default_factory=asyncio.Event)
    failure: KeyServerError | None = None
    shares: list[KeyShare] = field(default_factory=list)

    @property
    def participants(self) -> int:
        return len(self.id_numbers)

    def fail(self, error: KeyServerError) -> None:
        if self.failure is None:
            self.failure = error
        self.dealings_done.set()
        self.publics_done.set()

    def peer_lost(self, peer: bytes) -> None:
        if peer in self.id_numbers and not self.shares:
            self.fail(NodeDisconnected())

    def expire(self) -> None:
        self.fail(NodeDisconnected())


TABLE: Final[TableKey[BatchState]] = TableKey("generation_batch")


def _drop(core: Core, session: bytes) -> BatchState | None:
    core.table(CLAIMS).pop(session, None)
    return core.table(TABLE).pop(session, None)


def _validate(core: Core, master: bytes, msg: m.GenBatchInit) -> None:
    if core.admin_session is not None:  # the servers set is changing: no new key until it has
        raise ExclusiveSessionActive()
    nodes = set(msg.id_numbers)
    if core.node_id not in nodes or master not in nodes or not nodes <= set(core.nodes):
        raise InvalidNodeForRequest()
    if not 0 <= msg.threshold < len(nodes):
        raise NotEnoughNodesForThreshold()
    if len(msg.keys) > m.gen_batch_size(msg.threshold):
        raise InvalidMessage(f"a batch generation of threshold {msg.threshold} carries at most "
                             f"{m.gen_batch_size(msg.threshold)} keys")


async def _create(core: Core, master: bytes, msg: m.GenBatchInit) -> tuple[BatchState, dict[bytes, KeyServerError]]:
    """Reserve the batch's keys here: the state, and the keys refused (each with its error)."""
    _validate(core, master, msg)
    if msg.session in core.table(TABLE):
        raise DuplicateSessionId()
    refused: dict[bytes, KeyServerError] = {}
    claim = BatchClaim(asyncio.get_running_loop().time(), set())
    for key in msg.keys:  # claimed before the storage look-up, so that no concurrent generation passes too
        if reserved(core, key.key_id):
            refused[key.key_id] = DuplicateSessionId()
        else:
            claim.key_ids.add(key.key_id)
    state = BatchState(session=msg.session, master=master, threshold=msg.threshold, id_numbers=dict(msg.id_numbers),
                       keys={k.key_id: k for k in msg.keys if k.key_id in claim.key_ids}, created=claim.created)
    core.table(CLAIMS)[msg.session] = claim
    core.table(TABLE)[msg.session] = state
    try:
        candidates = sorted(claim.key_ids)
        held = await core.storage_call(None, lambda s: [s.contains(k) for k in candidates])
    except BaseException:
        _drop(core, msg.session)
        raise
    for key_id, stored in zip(candidates, held, strict=True):
        if stored:
            refused[key_id] = ServerKeyAlreadyGenerated()
            claim.key_ids.discard(key_id)
            state.keys.pop(key_id, None)
    return state, refused


def _state_for(core: Core, sender: bytes, session: bytes, *, from_master: bool) -> BatchState:
    state = core.table(TABLE).get(session)
    if state is None:
        raise NoActiveSessionWithId()
    if (from_master and sender != state.master) or sender not in state.id_numbers:
        raise InvalidNodeForRequest()
    return state


async def _on_init(core: Core, sender: bytes, msg: m.GenBatchInit) -> m.GenBatchAccepted:
    _, refused = await _create(core, sender, msg)
    return m.GenBatchAccepted(refused=tuple(refused), errors=tuple(e.parity_name for e in refused.values()))


M = TypeVar("M", m.GenBatchDealing, m.GenBatchPublics)


def _collect(state: BatchState, sender: bytes, received: dict[bytes, M], msg: M, done: asyncio.Event,
             what: str) -> None:
    """One node's message of a round: a second one fails the session; the last one sets ``done``."""
    if sender in received:
        state.fail(InvalidMessage(f"duplicate batch {what}"))
        return
    received[sender] = msg
    if len(received) == state.participants:
        done.set()


def _on_dealing(core: Core, sender: bytes, msg: m.GenBatchDealing) -> None:
    state = _state_for(core, sender, msg.session, from_master=False)
    _collect(state, sender, state.dealings, msg, state.dealings_done, "dealing")


def _on_publics(core: Core, sender: bytes, msg: m.GenBatchPublics) -> None:
    state = _state_for(core, sender, msg.session, from_master=False)
    _collect(state, sender, state.publics, msg, state.publics_done, "public coefficients")


async def _wait(state: BatchState, event: asyncio.Event) -> None:
    await event.wait()
    if state.failure is not None:
        raise state.failure


def _start(state: BatchState, key_ids: Sequence[bytes]) -> None:
    """Fix the batch's keys (those no node refused), in order; release the others here."""
    if not key_ids or len(set(key_ids)) != len(key_ids) or not set(key_ids) <= set(state.keys):
        raise InvalidMessage("a batch generation started with keys it did not reserve")
    state.order = tuple(key_ids)


def _release(core: Core, state: BatchState) -> None:
    claim = core.table(CLAIMS).get(state.session)
    if claim is not None:
        claim.key_ids.intersection_update(state.order)
    for key_id in [k for k in state.keys if k not in state.order]:
        del state.keys[key_id]


def _check_shape(state: BatchState, digest: bytes, msg: m.GenBatchDealing | m.GenBatchPublics) -> None:
    keys, width = len(state.order), state.threshold + 1
    if msg.keys != digest:
        raise InvalidMessage("a batch message names other keys")
    if isinstance(msg, m.GenBatchDealing):
        if len(msg.secret1) != keys or len(msg.secret2) != keys or len(msg.commitments) != keys * width:
            raise InvalidMessage("a batch dealing has the wrong number of shares or commitments")
    elif len(msg.coefficients) != keys * width:
        raise InvalidMessage("a batch has the wrong number of public coefficients")


def _culprit(exc: InvalidShare) -> str:
    dealers = exc.dealers if isinstance(exc, CheatingDealer) else ()
    dealer = dealers[0] if dealers else b""
    return dealer.hex()[:16] if isinstance(dealer, bytes) else "?"


async def _deal_and_verify(core: Core, state: BatchState) -> tuple[list[Point], bytes]:
    """Phase 2 at one node for every key of the batch: each key's ``Y`` and the digest of every
    key's version commitments."""
    me, t, order = core.node_id, state.threshold, state.order
    width = t + 1
    others = [n for n in state.id_numbers if n != me]
    digest = m.gen_batch_digest(order)
    hs = [pedersen_h(key_id) for key_id in order]
    dealings, feldman_parts = [], []
    for i, h in enumerate(hs):
        mine, feldman_part = dkg.deal_with_publics(t, h, core.rng)
        dealings.append(mine)
        feldman_parts.append(feldman_part)
        if i % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)
    commitments = tuple(c for d in dealings for c in d.commitments)
    for node in [*others, me]:
        pairs = [dkg.dealing_for(d, state.id_numbers[node]) for d in dealings]
        dealing = m.GenBatchDealing(session=state.session, keys=digest, secret1=tuple(p[0] for p in pairs),
                                    secret2=tuple(p[1] for p in pairs), commitments=commitments)
        if node == me:
            _on_dealing(core, me, dealing)
        else:
            await core.send(node, dealing)
    await _wait(state, state.dealings_done)

    x_self = state.id_numbers[me]
    for msg in state.dealings.values():
        _check_shape(state, digest, msg)
    received = state.dealings
    try:  # every key and every dealer in one random linear combination; the culprit named only on failure
        dkg.verify_dealing_batches(x_self, [
            (h, {d: (r.secret1[i], r.secret2[i], r.commitments[i * width:(i + 1) * width])
                 for d, r in received.items()})
            for i, h in enumerate(hs)], t, core.rng)
    except InvalidShare as exc:
        raise InvalidMessage(f"batch dealing of node 0x{_culprit(exc)}.. fails its commitments") from exc
    await asyncio.sleep(0)

    feldman = tuple(a for part in feldman_parts for a in part)
    publics = m.GenBatchPublics(session=state.session, keys=digest, coefficients=feldman)
    for node in others:
        await core.send(node, publics)
    _on_publics(core, me, publics)
    await _wait(state, state.publics_done)
    for sent in state.publics.values():
        _check_shape(state, digest, sent)
    coefficients = {d: p.coefficients for d, p in state.publics.items()}
    try:
        dkg.verify_feldman_share_batches(x_self, [
            ({d: received[d].secret1[i] for d in coefficients},
             {d: c[i * width:(i + 1) * width] for d, c in coefficients.items()}) for i in range(len(order))],
            t, core.rng)
    except InvalidShare as exc:
        raise InvalidMessage(f"batch share of node 0x{_culprit(exc)}.. does not match its public coefficients") \
            from exc
    await asyncio.sleep(0)
    return _finish(core, state, x_self, coefficients)


def _finish(core: Core, state: BatchState, x_self: int,
            coefficients: dict[bytes, tuple[Point, ...]]) -> tuple[list[Point], bytes]:
    """Each key's share, ``Y`` and version commitments (checked as a single generation checks them),
    kept as the records to store; returns every ``Y`` and the digest of every key's commitments."""
    t, width = state.threshold, state.threshold + 1
    version_hash = key_version_hash(state.id_numbers)  # epoch 0: Parity's §2.11 hash
    shares: dict[int, int] = {}
    versions: dict[int, tuple[Point, ...]] = {}
    publics: list[Point] = []
    overall = hashlib.sha256(b"ocean-secret-store/generation-batch-commitments/v1")
    for i in range(len(state.order)):
        share = sum(r.secret1[i] for r in state.dealings.values()) % N
        try:  # D_k = Σ_i a_ik·G over every dealer, k = 0..t
            commitments = tuple(point_sum(c[i * width + k] for c in coefficients.values()) for k in range(width))
            public = dkg.joint_public([c[i * width] for c in coefficients.values()])
        except InvalidPoint as exc:  # negligible for honest dealers: a sum at infinity
            raise InvalidMessage("a version commitment is the point at infinity") from exc
        if commitments[0] != public:
            raise InvalidMessage("the version commitment D_0 is not the joint public key")
        if share == 0:
            raise InvalidMessage("this node's share is zero")
        shares[i], versions[i] = share, commitments
        publics.append(public)
        overall.update(version_digest(commitments))
    try:  # s_j·G = Σ_k x_j^k·D_k for every key, in one combination
        dkg.verify_feldman_shares(x_self, shares, versions, t, core.rng)
    except InvalidShare as exc:
        raise InvalidMessage("this node's share does not match the version commitments") from exc
    state.shares = [
        KeyShare(
            author=state.keys[key_id].author,
            threshold=t,
            public=publics[i],
            common_point=None,
            encrypted_point=None,
            versions=(KeyVersion(hash=version_hash, id_numbers=dict(state.id_numbers), secret_share=shares[i],
                                 commitments=versions[i], epoch=0),),
            owner=state.keys[key_id].owner,
        )
        for i, key_id in enumerate(state.order)
    ]
    return publics, overall.digest()


async def _on_start(core: Core, sender: bytes, msg: m.GenBatchStart) -> m.GenBatchReady:
    state = _state_for(core, sender, msg.session, from_master=True)
    try:
        _start(state, msg.key_ids)
        _release(core, state)
        publics, digest = await _deal_and_verify(core, state)
        return m.GenBatchReady(publics=tuple(publics), digest=digest)
    except KeyServerError as exc:
        state.fail(exc)
        _drop(core, msg.session)
        raise


async def _store(core: Core, state: BatchState) -> None:
    """Every key of the batch in one storage transaction (all or none)."""
    if not state.shares or state.failure is not None:
        raise InvalidMessage("commit before the keys were computed")
    items = list(zip(state.order, state.shares, strict=True))
    await core.storage_call(None, lambda s: s.insert_many(items))


async def _on_commit(core: Core, sender: bytes, msg: m.GenBatchCommit) -> None:
    state = _state_for(core, sender, msg.session, from_master=True)
    _drop(core, msg.session)
    failpoints.hit(FP_MEMBER_STORING)
    await _store(core, state)
    for key_id in state.order:
        key = state.keys[key_id]
        reason = "share stored (batch)" + ("" if key.owner is None else f"; owner-to-be 0x{key.owner.hex()}")
        core.audit_member(OPERATION, key_id, key.author, "ok", reason)


def _on_abort(core: Core, sender: bytes, msg: m.GenBatchAbort) -> None:
    state = core.table(TABLE).get(msg.session)
    if state is not None and state.master == sender:
        _drop(core, msg.session)
        state.fail(NodeDisconnected())


async def _broadcast_abort(core: Core, session: bytes, nodes: Sequence[bytes]) -> None:
    for node in nodes:
        if node in core.connected_others():
            # Best effort: a node that misses the abort drops the session when it expires.
            with contextlib.suppress(KeyServerError):
                await core.send(node, m.GenBatchAbort(session=session))


def _first_error(results: Sequence[object]) -> BaseException | None:
    errors = [r for r in results if isinstance(r, BaseException)]
    return errors[0] if errors else None


def _named_error(name: str) -> KeyServerError:
    cls = KEY_SERVER_ERRORS.get(name, InternalError)
    return cls() if cls.text else cls(name)


Outcome = Point | KeyServerError


def _note_refusals(answers: Sequence[object], out: dict[bytes, Outcome]) -> None:
    """Each key some node refused gets that node's error (the first one's)."""
    for answer in answers:
        if isinstance(answer, m.GenBatchAccepted):
            for key_id, name in zip(answer.refused, answer.errors, strict=True):
                out.setdefault(key_id, _named_error(name))


def _check_readies(readies: Sequence[object], publics: Sequence[Point], digest: bytes) -> None:
    for ready in readies:
        if isinstance(ready, m.GenBatchReady) and tuple(ready.publics) != tuple(publics):
            raise InvalidMessage("nodes computed different joint public keys")
        if isinstance(ready, m.GenBatchReady) and ready.digest != digest:
            # a dealer showed different Feldman commitments to different nodes: no node stores a key
            raise InvalidMessage("nodes computed different version commitments")


async def run_session(core: Core, keys: Sequence[BatchKey], threshold: int) -> dict[bytes, Outcome]:
    """Master side of one batch session (at most ``gen_batch_size(threshold)`` distinct keys) over
    every configured node: each key's public or its own refusal.

    :raises KeyServerError: the session failed as a whole (no key of it was generated).
    """
    if core.admin_session is not None:
        raise ExclusiveSessionActive()
    nodes = core.nodes
    if not 0 <= threshold < len(nodes):
        raise NotEnoughNodesForThreshold()
    core.require_all_connected()
    xs: set[int] = set()
    while len(xs) < len(nodes):
        xs.add(random_scalar(core.rng))
    id_numbers = dict(zip(nodes, core.shuffled(xs), strict=True))
    session = core.rng(32)
    init = m.GenBatchInit(session=session, threshold=threshold, id_numbers=id_numbers,
                          keys=tuple(m.GenBatchKey(key_id=k.key_id, author=k.author, owner=k.owner) for k in keys))
    others = core.others
    state, refused = await _create(core, core.node_id, init)
    out: dict[bytes, Outcome] = dict(refused)
    try:
        answers = await gather_settled([core.request(n, init, m.GenBatchAccepted) for n in others])
        error = _first_error(answers)
        if error:
            raise error
        _note_refusals(answers, out)
        accepted = [k.key_id for k in keys if k.key_id not in out]
        if not accepted:
            core.spawn(_broadcast_abort(core, session, others))
            return out
        start = m.GenBatchStart(session=session, key_ids=tuple(accepted))
        _start(state, accepted)
        _release(core, state)

        async def ready(node: bytes) -> m.GenBatchReady:
            try:
                return await core.request(node, start, m.GenBatchReady, sample=False)
            except KeyServerError as exc:  # every node's part stops waiting for that node at once
                if state.failure is None:
                    state.fail(exc)
                    core.spawn(_broadcast_abort(core, session, others))
                raise

        readies, own = await asyncio.gather(
            gather_settled([ready(n) for n in others]),
            gather_settled([_deal_and_verify(core, state)]),
        )
        error = _first_error([*readies, *own])
        if error:
            raise error
        mine = own[0]
        if not isinstance(mine, tuple):  # _first_error saw no exception
            raise InternalError("a batch generation finished without its public keys")
        publics, digest = mine
        _check_readies(readies, publics, digest)
        commit = m.GenBatchCommit(session=session)
        error = _first_error(await gather_settled([core.request(n, commit, m.Ack, sample=False) for n in others]))
        if error:
            raise error
        failpoints.hit(FP_MASTER_STORING)
        await _store(core, state)
        out.update(zip(accepted, publics, strict=True))
        return out
    except BaseException as exc:
        state.fail(exc if isinstance(exc, KeyServerError) else NodeDisconnected())
        # Spawned, not awaited: this path also runs when the session is being cancelled.
        core.spawn(_broadcast_abort(core, session, others))
        raise
    finally:
        _drop(core, session)


REQUEST_HANDLERS: Final[RequestHandlers] = {m.GenBatchInit: _on_init, m.GenBatchStart: _on_start,
                                            m.GenBatchCommit: _on_commit}
ONEWAY_HANDLERS: Final[OnewayHandlers] = {m.GenBatchDealing: _on_dealing, m.GenBatchPublics: _on_publics,
                                          m.GenBatchAbort: _on_abort}
