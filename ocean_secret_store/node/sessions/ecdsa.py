"""Threshold ECDSA signing (protocol.md §1.4.8, §2.9): a group of 2t+1 holders signs, nobody holds the key.

The maths is :mod:`ocean_secret_store.crypto.ecdsa`; this module runs it between nodes. The entry
node (the master) picks 2t other holders of the key's active version (connected and unsuspected
first, at random; :mod:`.groups`) and runs *attempts*, each with a fresh random session id, its
own Pedersen generator ``H = pedersen_h(session)`` and fresh sub-sharings:

1. ``EcdsaStart`` (master -> each member, with the group and the message hash). Each member
   checks the group, recovers the requester from the signature and asks its own access checker
   about the key's author and owner as it stored them (audited; a refusal is ``AccessDenied``).
   Then it deals its four sub-sharings (nonce ``k``, inversion helper ``alpha``, zero ``z``, mask
   ``w``) straight to every other member, ``EcdsaDealing`` one-way, as the master does with its
   own. A member that has all 2t+1 dealings verifies each against its dealer's commitments and
   answers ``EcdsaDealt`` with ``u_i = k_i·alpha_i + z_i`` and the digest of every dealer's
   commitments as it received them; or ``EcdsaComplaint`` naming a dealer whose pairs failed.
2. The master checks that every member saw the same commitments as it did (the same ``R``),
   computes ``u⁻¹`` and sends ``EcdsaPartial``; each member answers its masked partial
   signature ``EcdsaPartialReply`` and forgets the attempt (single use).
3. The master combines, normalises to low-S and verifies the signature against the server key
   before it encrypts ``r || s || v`` to the requester.

That is 2t + 2t(2t+1) + 4t messages and two round trips from the master's point of view (the
dealings travel between the members inside the first). A member that refuses, fails or
disconnects ends its attempt and a spare takes its place; one that is slow is hedged around. A
dispute nobody else can check (a member names a dealer as cheating; a member saw other
commitments of a dealer than the master) removes both of them from the operation, unless one of
them is the master, which trusts itself: a lying member can push out at most one honest holder
with itself. A cancelled or expired attempt is forgotten everywhere (``EcdsaCancel``); a member
that has given its partial has nothing left of it. With ``t = 0`` the entry node signs alone
(RFC 6979) after its own access check.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from ...crypto import ecdsa, ecies
from ...crypto.curve import Point
from ...crypto.nums import pedersen_h
from ...crypto.resharing import CheatingDealer
from ...exceptions import (
    AccessDenied,
    ConsensusUnreachable,
    DuplicateSessionId,
    InternalError,
    InvalidMessage,
    InvalidNodeForRequest,
    InvalidShare,
    InvalidSignature,
    InvalidStateForRequest,
    KeyServerError,
    NoActiveSessionWithId,
    NodeDisconnected,
    ServerKeyIsNotFound,
)
from ...protocol import messages as m
from ..storage import KeyShare, KeyVersion
from .base import Core, EarlyMessages, OnewayHandlers, Requester, RequestHandlers, TableKey, close_early, keep_early
from .groups import Attempt, Group, MemberFailures, hedged

log = logging.getLogger(__name__)

#: The operation's name in the members' audit lines.
OPERATION: Final = "ecdsa_signing"
_DIGEST_LABEL: Final = b"ocean-secret-store/ecdsa-commitments/v1"


@dataclass(eq=False, repr=False)
class SigningState:
    """One node's part in one signing attempt, the master's included (secrets inside: never logged)."""

    session: bytes
    master: bytes
    key_id: bytes
    threshold: int
    #: member -> its id number, in the group's order
    group: dict[bytes, int]
    message_hash: bytes
    key_share: int
    created: float
    h: Point
    #: this node is the attempt's master (the entry node), not a member it asked
    entry: bool = False
    #: called with each dealer whose dealing arrived (the master's attempt: that member did its part)
    heard: Callable[[bytes], None] | None = None
    dealings: dict[bytes, m.EcdsaDealing] = field(default_factory=dict)
    complete: asyncio.Event = field(default_factory=asyncio.Event)
    failure: KeyServerError | None = None
    #: the members a failure is due to, where known (a lost peer, dealings that never came)
    culprits: tuple[bytes, ...] = ()
    shares: ecdsa.SigningShares | None = None

    def fail(self, error: KeyServerError, culprits: tuple[bytes, ...] = ()) -> None:
        if self.failure is None:
            self.failure, self.culprits = error, culprits
        self.complete.set()

    def accept(self, dealer: bytes, dealing: m.EcdsaDealing) -> None:
        if dealer not in self.group or dealer in self.dealings:
            return  # not a dealer of this group, or a second dealing: the first one counts
        self.dealings[dealer] = dealing
        if self.heard is not None:
            self.heard(dealer)
        if len(self.dealings) == len(self.group):
            self.complete.set()

    def expire(self) -> None:
        self.fail(NodeDisconnected(), self.missing)

    def peer_lost(self, peer: bytes) -> None:
        # The master fails its attempt at once, naming the member it lost. A member fails only when
        # it loses the master: another member's loss is the master's to find out and act on (it
        # replaces that member and cancels this attempt), and a member that failed on it would be
        # replaced itself, although it is fine.
        if peer == self.master and not self.entry:
            self.shares = None  # nobody will ask for the partial: forget the attempt's secrets now
            self.dealings.clear()
            self.fail(NodeDisconnected(), (peer,))
        elif self.entry and peer in self.group and self.shares is None:
            self.fail(NodeDisconnected(), (peer,))

    @property
    def missing(self) -> tuple[bytes, ...]:
        """The members whose dealing has not arrived."""
        return tuple(n for n in self.group if n not in self.dealings)


TABLE: Final[TableKey[SigningState]] = TableKey("ecdsa")


#: Dealings that came before their ``EcdsaStart`` (members deal while others still check access), or
#: the master's cancel of an attempt that had not begun here.
EARLY: Final[TableKey[EarlyMessages[m.EcdsaDealing]]] = TableKey("ecdsa-early")


class _Complaint(InvalidMessage):
    """A member named dealers whose pairs failed their commitments (a dispute the master cannot check)."""

    def __init__(self, dealers: tuple[bytes, ...]) -> None:
        super().__init__("a member named cheating dealers")
        self.dealers = dealers


def _short(node: bytes) -> str:
    return f"0x{node.hex()[:16]}.."


# -- what every member does ---------------------------------------------------------------------


def _group(core: Core, sender: bytes, threshold: int, version: KeyVersion,
           nodes: tuple[bytes, ...]) -> dict[bytes, int]:
    if threshold < 1 or len(nodes) != 2 * threshold + 1 or len(set(nodes)) != len(nodes):
        raise InvalidMessage("an ECDSA signing group has exactly 2t+1 distinct members (t >= 1)")
    if core.node_id not in nodes or sender not in nodes:
        raise InvalidNodeForRequest()
    if any(n not in version.id_numbers for n in nodes):
        raise InvalidNodeForRequest()
    return {n: version.id_numbers[n] for n in nodes}


def _register(core: Core, master: bytes, session: bytes, key_id: bytes, threshold: int, group: dict[bytes, int],
              message_hash: bytes, key_share: int, heard: Callable[[bytes], None] | None = None) -> SigningState:
    table = core.table(TABLE)
    if session in table:
        raise DuplicateSessionId()
    early = core.table(EARLY).pop(session, None)
    if early is not None and early.closed_by == master:
        raise NoActiveSessionWithId()  # the master gave this attempt up before it began here
    state = table[session] = SigningState(
        session=session, master=master, key_id=key_id, threshold=threshold, group=group,
        message_hash=message_hash, key_share=key_share, created=asyncio.get_running_loop().time(),
        h=pedersen_h(session), entry=master == core.node_id, heard=heard)
    for dealer, dealing in ({} if early is None else early.messages).items():
        state.accept(dealer, dealing)
    return state


def _dealing_message(session: bytes, sub: ecdsa.SigningSubshares, c: ecdsa.SigningCommitments) -> m.EcdsaDealing:
    return m.EcdsaDealing(
        session=session, nonce1=sub.nonce[0], nonce2=sub.nonce[1], inversion1=sub.inversion[0],
        inversion2=sub.inversion[1], zero1=sub.zero[0], zero2=sub.zero[1], mask1=sub.mask[0], mask2=sub.mask[1],
        nonce_commitments=c.nonce, inversion_commitments=c.inversion, zero_commitments=c.zero,
        mask_commitments=c.mask, nonce_public_share=c.nonce_public_share)


def _subshares(d: m.EcdsaDealing) -> ecdsa.SigningSubshares:
    return ecdsa.SigningSubshares((d.nonce1, d.nonce2), (d.inversion1, d.inversion2), (d.zero1, d.zero2),
                                  (d.mask1, d.mask2))


def _commitments(d: m.EcdsaDealing) -> ecdsa.SigningCommitments:
    return ecdsa.SigningCommitments(d.nonce_commitments, d.inversion_commitments, d.zero_commitments,
                                    d.mask_commitments, d.nonce_public_share)


def _digest(d: m.EcdsaDealing) -> bytes:
    """SHA-256 of a dealer's commitments as received: equal digests mean the same commitments, the same ``R``."""
    digest = hashlib.sha256(_DIGEST_LABEL)
    for points in (d.nonce_commitments, d.inversion_commitments, d.zero_commitments, d.mask_commitments):
        digest.update(len(points).to_bytes(2, "big"))
        for point in points:
            digest.update(point.to_bytes())
    digest.update(d.nonce_public_share.to_bytes())
    return digest.digest()


def _digests(state: SigningState) -> tuple[bytes, ...]:
    return tuple(_digest(state.dealings[n]) for n in state.group)


async def _deal_and_verify(core: Core, state: SigningState) -> ecdsa.SigningShares:
    """Deal to every member, wait for every member's dealing, verify them all: this node's shares.

    :raises CheatingDealer: naming the first dealer whose pairs fail its commitments.
    """
    me = core.node_id
    dealing = ecdsa.deal_signing(state.threshold, state.h, core.rng)
    commitments = dealing.commitments
    for node, x in state.group.items():
        out = _dealing_message(state.session, ecdsa.subshares_for(dealing, x), commitments)
        if node == me:
            state.accept(me, out)
            continue
        try:
            await core.send(node, out)
        except KeyServerError as exc:
            if state.entry:
                state.fail(exc, (node,))
                raise
            # A member goes on: the master loses that member too, and replaces it (see peer_lost).
            log.debug("an ECDSA dealing to %s was not sent: %s", _short(node), exc)
    try:
        async with asyncio.timeout(core.session_timeout):
            await state.complete.wait()
    except TimeoutError as exc:
        state.fail(NodeDisconnected(), state.missing)
        raise NodeDisconnected() from exc
    if state.failure is not None:
        raise state.failure
    shares = ecdsa.receive_signing_dealings(
        state.group[me], state.threshold, state.h, {d: _subshares(x) for d, x in state.dealings.items()},
        {d: _commitments(x) for d, x in state.dealings.items()})
    state.shares = shares
    return shares


async def _on_start(core: Core, sender: bytes, msg: m.EcdsaStart) -> m.Message:
    share = await core.load_key(msg.key_id)
    if share is None:
        raise ServerKeyIsNotFound()
    version = next((v for v in reversed(share.versions) if v.hash == msg.version), None)
    if version is None:
        raise InvalidMessage("unknown key version")
    group = _group(core, sender, share.threshold, version, msg.group)
    requester = Requester.from_signature(msg.signature, msg.key_id)
    decision = await core.access(requester, msg.key_id, share.author, share.owner)
    if not decision.allowed:
        core.audit_member(OPERATION, msg.key_id, requester.address, "refused", decision.reason)
        raise AccessDenied()
    core.audit_member(OPERATION, msg.key_id, requester.address, "allowed", decision.reason)
    state = _register(core, sender, msg.session, msg.key_id, share.threshold, group, msg.message_hash,
                      version.secret_share)
    try:
        shares = await _deal_and_verify(core, state)
    except CheatingDealer as exc:
        core.table(TABLE).pop(msg.session, None)
        dealers = tuple(d for d in exc.dealers if isinstance(d, bytes))
        log.warning("ECDSA signing of key %s: %s", msg.key_id.hex()[:16], exc)
        return m.EcdsaComplaint(dealers=dealers)
    except BaseException:
        core.table(TABLE).pop(msg.session, None)
        raise
    return m.EcdsaDealt(coeff_share=ecdsa.inversed_nonce_coeff_share(shares), digests=_digests(state))


async def _on_partial(core: Core, sender: bytes, msg: m.EcdsaPartial) -> m.EcdsaPartialReply:
    table = core.table(TABLE)
    state = table.get(msg.session)
    if state is None:
        raise NoActiveSessionWithId()
    if state.master != sender:
        raise InvalidNodeForRequest()
    del table[msg.session]  # single use, whatever happens next
    if state.shares is None:
        raise InvalidStateForRequest()
    partial = ecdsa.partial_signature(state.shares, state.key_share, msg.inversed_nonce_coeff, state.message_hash)
    return m.EcdsaPartialReply(partial=partial)


def _on_dealing(core: Core, sender: bytes, msg: m.EcdsaDealing) -> None:
    state = core.table(TABLE).get(msg.session)
    if state is not None:
        state.accept(sender, msg)
        return
    keep_early(core, EARLY, msg.session, sender, msg)


def _on_cancel(core: Core, sender: bytes, msg: m.EcdsaCancel) -> None:
    table = core.table(TABLE)
    state = table.get(msg.session)
    if state is not None:
        if state.master == sender:
            del table[msg.session]
            state.fail(NoActiveSessionWithId())
        return
    # Its EcdsaStart may still be checking access here: remember the cancel, so that it is refused.
    close_early(core, EARLY, msg.session, sender)


# -- the master ------------------------------------------------------------------------------------


async def run(core: Core, key_id: bytes, signature: bytes, requester: Requester, message_hash: bytes) -> bytes:
    """``GET /ecdsa/{key}/{sig}/{hash}``: returns ``ECIES(Q, r || s || v)``."""
    ecdsa.check_message_hash(message_hash)
    share = await core.load_key(key_id)
    if share is None:
        raise ServerKeyIsNotFound()
    version = share.last_version
    threshold = share.threshold
    if 2 * threshold >= len(version.id_numbers):
        # Parity's lasting refusal: no group of 2t+1 holders exists; the reason is only audited.
        raise ConsensusUnreachable(f"ECDSA needs 2t+1 = {2 * threshold + 1} holders, the key has "
                                   f"{len(version.id_numbers)}")
    decision = await core.access(requester, key_id, share.author, share.owner)
    if not decision.allowed:
        raise ConsensusUnreachable(decision.reason)  # Parity's text; the reason is only audited
    if threshold == 0:
        signed = ecdsa.sign_locally(version.secret_share, message_hash, share.public)
        return ecies.encrypt(requester.public, signed, rng=core.rng)
    members = Group.pick(core, version.id_numbers, 2 * threshold)
    return await hedged(core, members,
                        lambda attempt: _attempt(core, share, version, key_id, signature, requester, message_hash,
                                                 attempt))


async def _start(core: Core, node: bytes, start: m.EcdsaStart) -> m.EcdsaDealt:
    answer = await core.request(node, start, m.Message)
    if isinstance(answer, m.EcdsaComplaint):
        raise _Complaint(answer.dealers)
    if not isinstance(answer, m.EcdsaDealt):
        raise InvalidMessage(f"{start.KIND} was answered with {answer.KIND}")
    return answer


def _blame(core: Core, key_id: bytes, failures: Mapping[bytes, BaseException]) -> MemberFailures:
    """The members' failures, with the dealers a member named as cheating beside it (not the master)."""
    out = dict(failures)
    for node, exc in failures.items():
        if isinstance(exc, _Complaint):
            for dealer in exc.dealers:
                log.warning("ECDSA signing of key %s: member %s names dealer %s as cheating; both leave the "
                            "operation", key_id.hex()[:16], _short(node), _short(dealer))
                if dealer != core.node_id:
                    out.setdefault(dealer, exc)
    return MemberFailures(out)


def _own_failure(core: Core, state: SigningState, exc: BaseException) -> BaseException:
    """The master's own dealing round failed: whose failure it is."""
    if isinstance(exc, CheatingDealer):
        dealers = [d for d in exc.dealers if isinstance(d, bytes) and d != core.node_id]
        for dealer in dealers:
            log.warning("ECDSA signing of key %s: the entry node names dealer %s as cheating: %s",
                        state.key_id.hex()[:16], _short(dealer), exc)
        return MemberFailures(dict.fromkeys(dealers, exc)) if dealers else InternalError(str(exc))
    culprits = [n for n in state.culprits if n != core.node_id]
    if isinstance(exc, KeyServerError) and culprits:
        return MemberFailures(dict.fromkeys(culprits, exc))
    return exc


def _check_digests(core: Core, state: SigningState, dealt: Mapping[bytes, m.EcdsaDealt]) -> None:
    """Every member received the commitments the master did, from every dealer (so the same ``R``)."""
    own = _digests(state)
    failures: dict[bytes, BaseException] = {}
    for node, answer in dealt.items():
        if len(answer.digests) != len(own):
            failures[node] = InvalidMessage("an EcdsaDealt must carry one digest per member")
            continue
        for dealer, theirs, mine in zip(state.group, answer.digests, own, strict=True):
            if theirs != mine:
                log.warning("ECDSA signing of key %s: member %s saw other commitments of dealer %s than the entry "
                            "node; both leave the operation", state.key_id.hex()[:16], _short(node), _short(dealer))
                failures[node] = InvalidMessage("saw other commitments than the entry node")
                if dealer != core.node_id:
                    failures.setdefault(dealer, InvalidMessage("showed members different commitments"))
    if failures:
        raise MemberFailures(failures)


async def _first_round(core: Core, state: SigningState, attempt: Attempt,
                       start: m.EcdsaStart) -> tuple[dict[bytes, m.EcdsaDealt], ecdsa.SigningShares]:
    """``EcdsaStart`` to every member while the master deals and verifies too."""
    starts = asyncio.ensure_future(attempt.round({n: _start(core, n, start) for n in attempt.chosen}))
    own = asyncio.ensure_future(_deal_and_verify(core, state))
    try:
        await asyncio.wait((starts, own), return_when=asyncio.FIRST_EXCEPTION)
        if starts.done() and (error := starts.exception()) is not None:
            raise _blame(core, state.key_id, error.failures) if isinstance(error, MemberFailures) else error
        if own.done() and (error := own.exception()) is not None:
            raise _own_failure(core, state, error)
        return starts.result(), own.result()
    finally:
        for task in (starts, own):
            task.cancel()
        await asyncio.gather(starts, own, return_exceptions=True)


async def _attempt(core: Core, share: KeyShare, version: KeyVersion, key_id: bytes, signature: bytes,
                   requester: Requester, message_hash: bytes, attempt: Attempt) -> bytes:
    """One attempt: its own session id, generator and sub-sharings, with one group of 2t+1."""
    me = core.node_id
    threshold = share.threshold
    session = core.rng(32)
    group = {n: version.id_numbers[n] for n in sorted([me, *attempt.chosen])}
    state = _register(core, me, session, key_id, threshold, group, message_hash, version.secret_share,
                      heard=attempt.progress)
    start = m.EcdsaStart(session=session, key_id=key_id, signature=signature, version=version.hash,
                         group=tuple(group), message_hash=message_hash)
    done = False
    try:
        dealt, shares = await _first_round(core, state, attempt, start)
        _check_digests(core, state, dealt)
        coeff_shares = {n: answer.coeff_share for n, answer in dealt.items()}
        coeff_shares[me] = ecdsa.inversed_nonce_coeff_share(shares)
        try:
            u_inv = ecdsa.inversed_nonce_coeff(threshold, group, coeff_shares)
        except InvalidShare as exc:  # u = 0: a member's share was wrong (or probability 2^-255)
            raise InternalError(f"the inversed nonce coefficient is unusable: {exc}") from exc
        partial_request = m.EcdsaPartial(session=session, inversed_nonce_coeff=u_inv)
        replies = await attempt.round({n: core.request(n, partial_request, m.EcdsaPartialReply)
                                       for n in attempt.chosen})
        done = True
    finally:
        core.table(TABLE).pop(session, None)
        if not done:
            # Forget this attempt everywhere (a member that gave its partial has nothing left of it),
            # here too: a member's dealing still on its way must not wait here for a Start never to come.
            close_early(core, EARLY, session, me)
            for n in attempt.chosen:
                core.spawn(_cancel(core, n, session))
    partials = {n: reply.partial for n, reply in replies.items()}
    partials[me] = ecdsa.partial_signature(shares, version.secret_share, u_inv, message_hash)
    try:
        signed = ecdsa.combine_signature(threshold, group, partials, shares.nonce_public, message_hash, share.public)
    except InvalidSignature as exc:
        raise InternalError("the combined ECDSA signature does not verify: a member's share of u or its partial "
                            "signature was wrong") from exc
    return ecies.encrypt(requester.public, signed, rng=core.rng)


async def _cancel(core: Core, node: bytes, session: bytes) -> None:
    try:
        await core.send(node, m.EcdsaCancel(session=session))
    except KeyServerError as exc:  # best effort: the attempt also expires with the session table
        log.debug("cancelling an ECDSA attempt at %s failed: %s", _short(node), exc)


REQUEST_HANDLERS: Final[RequestHandlers] = {m.EcdsaStart: _on_start, m.EcdsaPartial: _on_partial}
ONEWAY_HANDLERS: Final[OnewayHandlers] = {m.EcdsaDealing: _on_dealing, m.EcdsaCancel: _on_cancel}
