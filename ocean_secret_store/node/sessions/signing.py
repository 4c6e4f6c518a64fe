"""Threshold Schnorr signing (protocol.md §1.4.7, §2.8).

Two round trips among ``t+1`` holders, hedged around slow members like decryption
(:mod:`.groups`): ``SchnorrNonce`` (each member checks its access checker,
draws a fresh nonce ``k_i`` and answers ``R_i = k_i·G``), then ``SchnorrPartial`` with the group
and the challenge ``c = H(m || R.x)`` for ``R = Σ R_i``. Parity's nonce sub-DKG among the group
yields exactly ``Σ k_i`` as nonce, so the additive round is equivalent and cheaper. A nonce is
used for one partial signature only and then forgotten, so a master cannot ask twice with two
challenges. The combined signature is verified against the server key before it is returned.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Final

from ...crypto import ecies, schnorr
from ...crypto.curve import N, Point, point_sum, random_scalar
from ...exceptions import (
    AccessDenied,
    ConsensusUnreachable,
    InternalError,
    InvalidMessage,
    InvalidNodeForRequest,
    InvalidSignature,
    KeyServerError,
    NoActiveSessionWithId,
    ServerKeyIsNotFound,
)
from ...protocol import messages as m
from ..storage import KeyShare, KeyVersion
from .base import Core, Requester, RequestHandlers, TableKey
from .groups import Attempt, Group, hedged

log = logging.getLogger(__name__)


@dataclass(eq=False, repr=False)
class NonceState:
    """A member's single-use nonce for one signing attempt (secret)."""

    master: bytes
    key_id: bytes
    version: bytes
    created: float
    nonce: int

    def expire(self) -> None:
        return None  # nobody waits on a nonce; dropping it is all there is to do

    def peer_lost(self, peer: bytes) -> None:
        return None  # the master asks again or not at all; the nonce expires with the table


TABLE: Final[TableKey[NonceState]] = TableKey("schnorr")


async def _on_nonce(core: Core, sender: bytes, msg: m.SchnorrNonceRequest) -> m.SchnorrNonceReply:
    share = await core.load_key(msg.key_id)
    if share is None:
        raise ServerKeyIsNotFound()
    if not any(v.hash == msg.version for v in share.versions):
        raise InvalidMessage("unknown key version")
    requester = Requester.from_signature(msg.signature, msg.key_id)
    decision = await core.access(requester, msg.key_id, share.author, share.owner)
    if not decision.allowed:
        core.audit_member("schnorr_signing", msg.key_id, requester.address, "refused", decision.reason)
        raise AccessDenied()
    core.audit_member("schnorr_signing", msg.key_id, requester.address, "allowed", decision.reason)
    table = core.table(TABLE)
    if msg.session in table:
        raise InvalidMessage("signing session id reused")
    nonce = random_scalar(core.rng)
    table[msg.session] = NonceState(master=sender, key_id=msg.key_id, version=msg.version,
                                    created=asyncio.get_running_loop().time(), nonce=nonce)
    return m.SchnorrNonceReply(nonce_public=Point.generator_mul(nonce))


def _partial(core: Core, share: KeyShare, version: KeyVersion, group: tuple[bytes, ...], nonce: int,
             challenge: int) -> int:
    x_self = version.id_numbers[core.node_id]
    x_others = [version.id_numbers[n] for n in group if n != core.node_id]
    return schnorr.partial_signature(share.threshold, nonce, version.secret_share, x_self, x_others, challenge)


async def _on_partial(core: Core, sender: bytes, msg: m.SchnorrPartialRequest) -> m.SchnorrPartialReply:
    state = core.table(TABLE).pop(msg.session, None)  # single use, whatever happens next
    if state is None:
        raise NoActiveSessionWithId()
    if state.master != sender:
        raise InvalidNodeForRequest()
    share = await core.load_key(state.key_id)
    if share is None:
        raise ServerKeyIsNotFound()
    version = next((v for v in share.versions if v.hash == state.version), None)
    if version is None:
        raise InvalidMessage("unknown key version")
    group = msg.group
    if (len(group) != share.threshold + 1 or len(set(group)) != len(group) or core.node_id not in group
            or sender not in group or any(n not in version.id_numbers for n in group)):
        raise InvalidNodeForRequest()
    return m.SchnorrPartialReply(partial=_partial(core, share, version, group, state.nonce, msg.challenge))


async def _on_cancel(core: Core, sender: bytes, msg: m.SchnorrCancel) -> None:
    state = core.table(TABLE).get(msg.session)
    if state is not None and state.master == sender:
        core.table(TABLE).pop(msg.session, None)


async def run(core: Core, key_id: bytes, signature: bytes, requester: Requester, message_hash: bytes) -> bytes:
    """``GET /schnorr/{key}/{sig}/{hash}``: returns ECIES(Q, c || s)."""
    share = await core.load_key(key_id)
    if share is None:
        raise ServerKeyIsNotFound()
    decision = await core.access(requester, key_id, share.author, share.owner)
    if not decision.allowed:
        raise ConsensusUnreachable(decision.reason)  # Parity's text; the reason is only audited
    version = share.last_version
    members = Group.pick(core, version.id_numbers, share.threshold)
    return await hedged(core, members,
                        lambda attempt: _attempt(core, share, version, key_id, signature, requester, message_hash,
                                                 attempt))


async def _attempt(core: Core, share: KeyShare, version: KeyVersion, key_id: bytes, signature: bytes,
                   requester: Requester, message_hash: bytes, attempt: Attempt) -> bytes:
    """One attempt: its own session id and nonces, with one group; abandoned nonces are cancelled."""
    chosen = attempt.chosen
    session = core.rng(32)
    group = tuple(sorted([core.node_id, *chosen]))
    nonce_request = m.SchnorrNonceRequest(session=session, key_id=key_id, signature=signature,
                                          version=version.hash, message_hash=message_hash)
    done = False
    try:
        nonces = await attempt.round({n: core.request(n, nonce_request, m.SchnorrNonceReply) for n in chosen})
        own_nonce = random_scalar(core.rng)
        nonce_public = point_sum([Point.generator_mul(own_nonce), *(r.nonce_public for r in nonces.values())])
        challenge = schnorr.challenge(message_hash, nonce_public)
        partial_request = m.SchnorrPartialRequest(session=session, group=group, challenge=challenge)
        partials = await attempt.round({n: core.request(n, partial_request, m.SchnorrPartialReply) for n in chosen})
        done = True
    finally:
        if not done:
            # Forget this attempt's nonces everywhere (a member that used its nonce has none left).
            for n in chosen:
                core.spawn(_cancel(core, n, session))
    own = _partial(core, share, version, group, own_nonce, challenge)
    s = (own + sum(r.partial for r in partials.values())) % N
    try:
        schnorr.verify(share.public, (challenge, s), message_hash)
    except InvalidSignature as exc:
        raise InternalError("combined Schnorr signature does not verify") from exc
    return ecies.encrypt(requester.public, schnorr.signature_bytes(challenge, s), rng=core.rng)


async def _cancel(core: Core, node: bytes, session: bytes) -> None:
    try:
        await core.request(node, m.SchnorrCancel(session=session), m.Ack, timeout=1.0)
    except KeyServerError as exc:  # best effort: the nonce also expires with the session table
        log.debug("cancelling a signing nonce at 0x%s.. failed: %s", node.hex()[:16], exc)


REQUEST_HANDLERS: Final[RequestHandlers] = {
    m.SchnorrNonceRequest: _on_nonce,
    m.SchnorrPartialRequest: _on_partial,
    m.SchnorrCancel: _on_cancel,
}
