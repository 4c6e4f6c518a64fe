"""Server key generation: a Pedersen-VSS DKG over all N nodes with Feldman-verified public shares.

Rounds, driven by the entry node (the master):

1. ``GenInit`` (master -> every node, answered): id numbers, threshold, author and the optional
   owner-to-be the author named (recorded with every share: the ACL's author binding). Each node
   refuses a key id it already stores or is already generating.
2. ``GenStart`` (master -> every node, answered with ``GenReady(Y)``): each node deals its
   polynomials, sending ``GenDealing`` (f_i(x_j), g_i(x_j), Pedersen commitments) straight to
   every other node; verifies every dealing it receives against the Pedersen commitments;
   then broadcasts ``GenPublics`` (Feldman commitments a_ik·G) and verifies its share of
   every dealer against them (each round's checks batched into one random linear combination over
   all dealers, crypto.dkg.verify_dealings / verify_feldman_shares: a cheating dealer is still
   named). That binds each public share a_i0·G to the dealt polynomial
   (Parity does not check public shares at all, protocol.md §8), so every node computes the
   same, verified ``Y = Σ a_i0·G``. Each node also sums the dealers' commitments into the
   version commitments ``D_k = Σ_i a_ik·G`` (k = 0..t), checks ``D_0 = Y`` and its own share
   against them (``s_j·G = Σ_k x_j^k·D_k``), and stores them with the key's version (epoch 0),
   so every holder's public share is known from generation on (issue 14). ``GenReady`` carries
   ``Y`` and a digest of ``D``: the master refuses to commit unless every node computed both alike.
3. ``GenCommit`` (master -> every node, answered): every node stores its share; the master
   stores last and returns ``Y``.

The second generator ``H`` is hashed to the curve from the key id (crypto.nums) instead of
Parity's sequential derivation round. No node ever holds the joint secret.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from ...crypto import dkg, sharing
from ...crypto.curve import N, Point, point_sum, random_scalar
from ...crypto.hashes import key_version_hash
from ...crypto.nums import pedersen_h
from ...crypto.resharing import CheatingDealer, public_share_at, version_digest
from ...exceptions import (
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


@dataclass(eq=False, repr=False)
class GenerationState:
    """One node's state in one key generation (secrets inside: never logged or printed)."""

    key_id: bytes
    master: bytes
    author: bytes
    threshold: int
    id_numbers: dict[bytes, int]
    created: float
    h: Point
    owner: bytes | None = None
    dealings: dict[bytes, tuple[int, int, tuple[Point, ...]]] = field(default_factory=dict)
    publics: dict[bytes, tuple[Point, ...]] = field(default_factory=dict)
    dealings_done: asyncio.Event = field(default_factory=asyncio.Event)
    publics_done: asyncio.Event = field(default_factory=asyncio.Event)
    failure: KeyServerError | None = None
    share: int | None = None
    public: Point | None = None
    commitments: tuple[Point, ...] = ()

    @property
    def participants(self) -> int:
        return len(self.id_numbers)

    def fail(self, error: KeyServerError) -> None:
        if self.failure is None:
            self.failure = error
        self.dealings_done.set()
        self.publics_done.set()

    def peer_lost(self, peer: bytes) -> None:
        if peer in self.id_numbers and self.share is None:
            self.fail(NodeDisconnected())

    def expire(self) -> None:
        self.fail(NodeDisconnected())


TABLE: Final[TableKey[GenerationState]] = TableKey("generation")


@dataclass(eq=False, repr=False)
class BatchClaim:
    """The key ids one batch generation (:mod:`.genbatch`) reserved on this node, by its session id:
    a generation of any of them, single or batch, is refused meanwhile."""

    created: float
    key_ids: set[bytes]

    def expire(self) -> None:
        return None

    def peer_lost(self, peer: bytes) -> None:
        return None


CLAIMS: Final[TableKey[BatchClaim]] = TableKey("generation_batch_claims")


def reserved(core: Core, key_id: bytes) -> bool:
    """Whether a generation of ``key_id`` runs on this node (single, or in a batch)."""
    return key_id in core.table(TABLE) or any(key_id in claim.key_ids for claim in core.table(CLAIMS).values())


def _validate_init(core: Core, master: bytes, msg: m.GenInit) -> None:
    if core.admin_session is not None:  # the servers set is changing: no new key until it has
        raise ExclusiveSessionActive()
    nodes = set(msg.id_numbers)
    if core.node_id not in nodes or master not in nodes:
        raise InvalidNodeForRequest()
    if not nodes <= set(core.nodes):
        raise InvalidNodeForRequest()
    if not 0 <= msg.threshold < len(nodes):
        raise NotEnoughNodesForThreshold()


async def _create(core: Core, master: bytes, msg: m.GenInit) -> GenerationState:
    _validate_init(core, master, msg)
    table = core.table(TABLE)
    if reserved(core, msg.session):
        raise DuplicateSessionId()
    # Reserve the id before the storage look-up so two concurrent generations cannot both pass.
    state = GenerationState(
        key_id=msg.session,
        master=master,
        author=msg.author,
        threshold=msg.threshold,
        id_numbers=dict(msg.id_numbers),
        created=asyncio.get_running_loop().time(),
        h=pedersen_h(msg.session),
        owner=msg.owner,
    )
    table[msg.session] = state
    try:
        if await core.has_key(msg.session):
            raise ServerKeyAlreadyGenerated()
    except BaseException:
        table.pop(msg.session, None)
        raise
    return state


def _state_for(core: Core, sender: bytes, session: bytes, *, from_master: bool) -> GenerationState:
    state = core.table(TABLE).get(session)
    if state is None:
        raise NoActiveSessionWithId()
    if from_master and sender != state.master:
        raise InvalidNodeForRequest()
    if sender not in state.id_numbers:
        raise InvalidNodeForRequest()
    return state


async def _on_init(core: Core, sender: bytes, msg: m.GenInit) -> None:
    await _create(core, sender, msg)


def _on_dealing(core: Core, sender: bytes, msg: m.GenDealing) -> None:
    state = _state_for(core, sender, msg.session, from_master=False)
    if sender in state.dealings:
        state.fail(InvalidMessage("duplicate dealing"))
        return
    state.dealings[sender] = (msg.secret1, msg.secret2, msg.commitments)
    if len(state.dealings) == state.participants:
        state.dealings_done.set()


def _on_publics(core: Core, sender: bytes, msg: m.GenPublics) -> None:
    state = _state_for(core, sender, msg.session, from_master=False)
    if sender in state.publics:
        state.fail(InvalidMessage("duplicate public coefficients"))
        return
    state.publics[sender] = msg.coefficients
    if len(state.publics) == state.participants:
        state.publics_done.set()


async def _wait(state: GenerationState, event: asyncio.Event) -> None:
    await event.wait()
    if state.failure is not None:
        raise state.failure


async def _deal_and_verify(core: Core, state: GenerationState) -> Point:
    """Phase 2 at one node: deal, verify dealings, exchange and verify Feldman commitments."""
    me = core.node_id
    others = [n for n in state.id_numbers if n != me]
    dealing = dkg.deal(state.threshold, state.h, core.rng)
    for node in others:
        secret1, secret2 = dkg.dealing_for(dealing, state.id_numbers[node])
        await core.send(node, m.GenDealing(session=state.key_id, secret1=secret1, secret2=secret2,
                                           commitments=dealing.commitments))
    own1, own2 = dkg.dealing_for(dealing, state.id_numbers[me])
    _on_dealing_local(state, me, (own1, own2, dealing.commitments))
    await _wait(state, state.dealings_done)

    x_self = state.id_numbers[me]
    try:  # all dealers in one random linear combination; the culprit is named only on failure
        dkg.verify_dealings(x_self, state.dealings, state.h, state.threshold, core.rng)
    except InvalidShare as exc:
        raise InvalidMessage(f"dealing of node 0x{_culprit(exc)}.. fails its commitments") from exc

    feldman = sharing.feldman_commitments(dealing.f)
    for node in others:
        await core.send(node, m.GenPublics(session=state.key_id, coefficients=feldman))
    state.publics[me] = feldman
    if len(state.publics) == state.participants:
        state.publics_done.set()
    await _wait(state, state.publics_done)

    if any(len(coefficients) != state.threshold + 1 for coefficients in state.publics.values()):
        raise InvalidMessage("wrong number of public coefficients")
    try:
        dkg.verify_feldman_shares(x_self, {d: state.dealings[d][0] for d in state.publics}, state.publics,
                                  state.threshold, core.rng)
    except InvalidShare as exc:
        raise InvalidMessage(f"share of node 0x{_culprit(exc)}.. does not match its public coefficients") from exc
    share = sum(d[0] for d in state.dealings.values()) % N
    public = dkg.joint_public([c[0] for c in state.publics.values()])
    commitments = _version_commitments(state)
    if commitments[0] != public:
        raise InvalidMessage("the version commitment D_0 is not the joint public key")
    if share == 0 or public_share_at(x_self, commitments) != Point.generator_mul(share):
        raise InvalidMessage("this node's share does not match the version commitments")
    state.share, state.public, state.commitments = share, public, commitments
    return public


def _culprit(exc: InvalidShare) -> str:
    """The first 16 hex digits of the dealer a batched check named (a CheatingDealer's first)."""
    dealers = exc.dealers if isinstance(exc, CheatingDealer) else ()
    dealer = dealers[0] if dealers else b""
    return dealer.hex()[:16] if isinstance(dealer, bytes) else "?"


def _version_commitments(state: GenerationState) -> tuple[Point, ...]:
    """``D_k = Σ_i a_ik·G`` over every dealer, k = 0..t."""
    try:
        return tuple(point_sum(c[k] for c in state.publics.values()) for k in range(state.threshold + 1))
    except InvalidPoint as exc:  # negligible for honest dealers: a sum at infinity
        raise InvalidMessage("a version commitment is the point at infinity") from exc


def _on_dealing_local(state: GenerationState, me: bytes, dealing: tuple[int, int, tuple[Point, ...]]) -> None:
    state.dealings[me] = dealing
    if len(state.dealings) == state.participants:
        state.dealings_done.set()


async def _on_start(core: Core, sender: bytes, msg: m.GenStart) -> m.GenReady:
    state = _state_for(core, sender, msg.session, from_master=True)
    try:
        public = await _deal_and_verify(core, state)
        return m.GenReady(public=public, digest=version_digest(state.commitments))
    except KeyServerError as exc:
        state.fail(exc)
        core.table(TABLE).pop(msg.session, None)
        raise


def _key_share(state: GenerationState) -> KeyShare:
    if state.share is None or state.public is None:
        raise InternalError("a generation was committed before its share was computed")
    version = KeyVersion(
        hash=key_version_hash(state.id_numbers),  # epoch 0: Parity's §2.11 hash
        id_numbers=dict(state.id_numbers),
        secret_share=state.share,
        commitments=state.commitments,
        epoch=0,
    )
    return KeyShare(
        author=state.author,
        threshold=state.threshold,
        public=state.public,
        common_point=None,
        encrypted_point=None,
        versions=(version,),
        owner=state.owner,
    )


async def _on_commit(core: Core, sender: bytes, msg: m.GenCommit) -> None:
    state = _state_for(core, sender, msg.session, from_master=True)
    core.table(TABLE).pop(msg.session, None)
    if state.share is None or state.failure is not None:
        raise InvalidMessage("commit before the key was computed")
    await core.insert_key(state.key_id, _key_share(state))
    reason = "share stored" if state.owner is None else f"share stored; owner-to-be 0x{state.owner.hex()}"
    core.audit_member("generate_server_key", state.key_id, state.author, "ok", reason)


def _on_abort(core: Core, sender: bytes, msg: m.GenAbort) -> None:
    state = core.table(TABLE).get(msg.session)
    if state is not None and state.master == sender:
        core.table(TABLE).pop(msg.session, None)
        state.fail(NodeDisconnected())


async def _broadcast_abort(core: Core, key_id: bytes, nodes: tuple[bytes, ...]) -> None:
    for node in nodes:
        if node in core.connected_others():
            # Best effort: a node that misses the abort drops the session when it expires.
            with contextlib.suppress(KeyServerError):
                await core.send(node, m.GenAbort(session=key_id))


def _first_error(results: Sequence[object]) -> BaseException | None:
    errors = [r for r in results if isinstance(r, BaseException)]
    if not errors:
        return None
    # The most telling error wins: "already generated" explains the others.
    for preferred in (ServerKeyAlreadyGenerated, DuplicateSessionId):
        for err in errors:
            if isinstance(err, preferred):
                return err
    return errors[0]


async def run(core: Core, key_id: bytes, author: bytes, threshold: int, owner: bytes | None = None) -> Point:
    """Master side: generate the server key ``key_id`` for ``author`` (and its owner-to-be ``owner``,
    if named) over every configured node."""
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
    init = m.GenInit(session=key_id, author=author, threshold=threshold, id_numbers=id_numbers, owner=owner)
    others = core.others
    state = await _create(core, core.node_id, init)
    try:
        error = _first_error(await gather_settled([core.request(n, init, m.Ack) for n in others]))
        if error:
            raise error
        start = m.GenStart(session=key_id)
        readies, own = await asyncio.gather(
            gather_settled([core.request(n, start, m.GenReady) for n in others]),
            gather_settled([_deal_and_verify(core, state)]),
        )
        error = _first_error([*readies, *own])
        if error:
            raise error
        public = own[0]
        if not isinstance(public, Point):  # _first_error saw no exception
            raise InternalError("generation finished without a public key")
        if any(isinstance(r, m.GenReady) and r.public != public for r in readies):
            raise InvalidMessage("nodes computed different joint public keys")
        digest = version_digest(state.commitments)
        if any(isinstance(r, m.GenReady) and r.digest != digest for r in readies):
            # a dealer showed different Feldman commitments to different nodes (the keys agree, the
            # public shares would not): no node stores this key
            raise InvalidMessage("nodes computed different version commitments")
        commit = m.GenCommit(session=key_id)
        error = _first_error(await gather_settled([core.request(n, commit, m.Ack) for n in others]))
        if error:
            raise error
        await core.insert_key(key_id, _key_share(state))
        return public
    except BaseException as exc:
        state.fail(exc if isinstance(exc, KeyServerError) else NodeDisconnected())
        # Spawned, not awaited: this path also runs when the session is being cancelled.
        core.spawn(_broadcast_abort(core, key_id, others))
        raise
    finally:
        core.table(TABLE).pop(key_id, None)


REQUEST_HANDLERS: Final[RequestHandlers] = {m.GenInit: _on_init, m.GenStart: _on_start, m.GenCommit: _on_commit}
ONEWAY_HANDLERS: Final[OnewayHandlers] = {m.GenDealing: _on_dealing, m.GenPublics: _on_publics, m.GenAbort: _on_abort}
