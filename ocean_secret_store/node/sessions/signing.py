"""Threshold Schnorr signing (protocol.md §1.4.7, §2.8).

Two round trips among ``t+1`` holders: ``SchnorrNonce`` (each member checks its access checker,
draws a fresh nonce ``k_i`` and answers ``R_i = k_i·G``), then ``SchnorrPartial`` with the group
and the challenge ``c = H(m || R.x)`` for ``R = Σ R_i``. Parity's nonce sub-DKG among the group
yields exactly ``Σ k_i`` as nonce, so the additive round is equivalent and cheaper. A nonce is
used for one partial signature only and then forgotten, so a master cannot ask twice with two
challenges. The combined signature is verified against the server key before it is returned.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ...crypto import ecies, schnorr
from ...crypto.curve import N, Point, point_sum, random_scalar
from ...exceptions import (
    AccessDenied,
    ConsensusUnreachable,
    InternalError,
    InvalidMessage,
    InvalidNodeForRequest,
    InvalidSignature,
    NoActiveSessionWithId,
    ServerKeyIsNotFound,
)
from ...protocol import messages as m
from ..cluster import ClusterCore, Requester, gather_settled, request_handler
from ..storage import KeyShare, KeyVersion
from .decryption import replace_failed, unreachable

TABLE = "schnorr"


@dataclass(eq=False, repr=False)
class NonceState:
    """A member's single-use nonce for one signing attempt (secret)."""

    master: bytes
    key_id: bytes
    version: bytes
    created: float
    nonce: int


@request_handler(m.SchnorrNonceRequest)
async def _on_nonce(core: ClusterCore, sender: bytes, msg: m.SchnorrNonceRequest) -> m.SchnorrNonceReply:
    share = await core.load_key(msg.key_id)
    if share is None:
        raise ServerKeyIsNotFound()
    if not any(v.hash == msg.version for v in share.versions):
        raise InvalidMessage("unknown key version")
    requester = Requester.from_signature(msg.signature, msg.key_id)
    if not await core.allowed(requester, msg.key_id):
        core.audit_member("schnorr_signing", msg.key_id, requester.address, "refused", "access checker said no")
        raise AccessDenied()
    core.audit_member("schnorr_signing", msg.key_id, requester.address, "allowed", "access checker said yes")
    table = core.table(TABLE)
    if msg.session in table:
        raise InvalidMessage("signing session id reused")
    nonce = random_scalar(core.rng)
    table[msg.session] = NonceState(sender, msg.key_id, msg.version, asyncio.get_running_loop().time(), nonce)
    return m.SchnorrNonceReply(Point.generator_mul(nonce))


def _partial(core: ClusterCore, share: KeyShare, version: KeyVersion, group: tuple[bytes, ...], nonce: int, challenge: int) -> int:
    x_self = version.id_numbers[core.node_id]
    x_others = [version.id_numbers[n] for n in group if n != core.node_id]
    return schnorr.partial_signature(share.threshold, nonce, version.secret_share, x_self, x_others, challenge)


@request_handler(m.SchnorrPartialRequest)
async def _on_partial(core: ClusterCore, sender: bytes, msg: m.SchnorrPartialRequest) -> m.SchnorrPartialReply:
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
    return m.SchnorrPartialReply(_partial(core, share, version, group, state.nonce, msg.challenge))


@request_handler(m.SchnorrCancel)
async def _on_cancel(core: ClusterCore, sender: bytes, msg: m.SchnorrCancel) -> None:
    state = core.table(TABLE).get(msg.session)
    if state is not None and state.master == sender:
        core.table(TABLE).pop(msg.session, None)


async def run(core: ClusterCore, key_id: bytes, signature: bytes, requester: Requester, message_hash: bytes) -> bytes:
    """``GET /schnorr/{key}/{sig}/{hash}``: returns ECIES(Q, c || s)."""
    share = await core.load_key(key_id)
    if share is None:
        raise ServerKeyIsNotFound()
    if not await core.allowed(requester, key_id):
        raise ConsensusUnreachable()
    version = share.last_version
    t = share.threshold
    candidates = core.shuffled(n for n in version.id_numbers if n != core.node_id and n in core.connected_others())
    if len(candidates) < t:
        raise unreachable(len(version.id_numbers), t, 0, 0)
    chosen, spares = candidates[:t], candidates[t:]
    attempt_timeout = max(core.session_timeout / 4, 0.05)
    fatal = rejects = 0
    while True:
        session = core.rng(32)
        group = tuple(sorted([core.node_id, *chosen]))
        nonce_request = m.SchnorrNonceRequest(session, key_id, signature, version.hash, message_hash)
        replies = await gather_settled([core.request(n, nonce_request, attempt_timeout) for n in chosen])
        failed = {n for n, r in zip(chosen, replies, strict=True) if not isinstance(r, m.SchnorrNonceReply)}
        for n, r in zip(chosen, replies, strict=True):
            if n in failed:
                rejects += 1
                fatal += isinstance(r, AccessDenied)
        if not failed:
            own_nonce = random_scalar(core.rng)
            nonce_public = Point.generator_mul(own_nonce)
            nonce_public = point_sum([nonce_public, *(r.nonce_public for r in replies)])  # type: ignore[union-attr]
            challenge = schnorr.challenge(message_hash, nonce_public)
            partial_request = m.SchnorrPartialRequest(session, group, challenge)
            partials = await gather_settled([core.request(n, partial_request, attempt_timeout) for n in chosen])
            failed = {n for n, r in zip(chosen, partials, strict=True) if not isinstance(r, m.SchnorrPartialReply)}
            if not failed:
                own = _partial(core, share, version, group, own_nonce, challenge)
                s = (own + sum(r.partial for r in partials)) % N  # type: ignore[union-attr]
                try:
                    schnorr.verify(share.public, (challenge, s), message_hash)
                except InvalidSignature as exc:
                    raise InternalError("combined Schnorr signature does not verify") from exc
                return ecies.encrypt(requester.public, schnorr.signature_bytes(challenge, s), rng=core.rng)
            rejects += len(failed)
        # Forget the nonces of this attempt everywhere; a new attempt draws new ones.
        for n in chosen:
            if n not in failed:
                core.spawn(_cancel(core, n, session))
        chosen, spares = replace_failed(core, chosen, failed, spares, t, len(version.id_numbers), fatal, rejects)


async def _cancel(core: ClusterCore, node: bytes, session: bytes) -> None:
    try:
        await core.request(node, m.SchnorrCancel(session), timeout=1.0)
    except Exception:  # best effort: the nonce also expires with the session table
        pass
