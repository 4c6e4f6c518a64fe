"""Document key retrieval (protocol.md §1.4.5-1.4.6, §2.7): plain and shadow decryption.

Parity negotiated key versions with every node and then ran a separate consensus round
before the partial decryptions. Here the entry node, which holds the key's metadata, picks
``t`` connected holders at random and sends each one ``Decrypt`` carrying the group, the
access key and the requester's signature: consensus and partial decryption in one round
trip, ``2t`` messages. Every member recovers the requester from the signature and asks its
own access checker before computing anything. A member that refuses, fails or does not answer
within its share of the timeout is replaced by a spare holder and the group is asked again
(the shadow coefficients depend on the group, so every member recomputes).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ...crypto import ecies, shadows
from ...crypto.curve import Point, random_scalar
from ...exceptions import (
    AccessDenied,
    ConsensusTemporaryUnreachable,
    ConsensusUnreachable,
    DocumentKeyIsNotFound,
    InvalidMessage,
    InvalidNodeForRequest,
    KeyServerError,
    ServerKeyIsNotFound,
)
from ...protocol import messages as m
from ..cluster import ClusterCore, Requester, gather_settled, request_handler
from ..storage import KeyShare, KeyVersion


@dataclass(frozen=True, slots=True)
class ShadowResult:
    """What ``GET /shadow/{key}/{sig}`` returns: nothing here reveals the document key."""

    decrypted_secret: Point
    common_point: Point
    decrypt_shadows: tuple[bytes, ...]


def _validate_group(core: ClusterCore, sender: bytes, share: KeyShare, version: KeyVersion, group: tuple[bytes, ...]) -> None:
    if len(group) != share.threshold + 1 or len(set(group)) != len(group):
        raise InvalidMessage("the group must have exactly t+1 distinct members")
    if core.node_id not in group or sender not in group:
        raise InvalidNodeForRequest()
    if any(node not in version.id_numbers for node in group):
        raise InvalidNodeForRequest()


def _compute(
    core: ClusterCore, share: KeyShare, version: KeyVersion, group: tuple[bytes, ...], access_key: int,
    requester: Requester, shadow: bool,
) -> m.DecryptResponse:
    assert share.common_point is not None
    x_self = version.id_numbers[core.node_id]
    x_others = [version.id_numbers[n] for n in group if n != core.node_id]
    node_shadow = shadows.node_shadow(version.secret_share, x_self, x_others)
    if shadow:
        point, blob = shadows.shadow_decryption(node_shadow, access_key, share.common_point, requester.public, core.rng)
        return m.DecryptResponse(point, blob)
    return m.DecryptResponse(shadows.shadow_point(node_shadow, access_key, share.common_point), None)


async def _document_share(core: ClusterCore, key_id: bytes) -> KeyShare:
    share = await core.load_key(key_id)
    if share is None:
        raise ServerKeyIsNotFound()
    if share.common_point is None or share.encrypted_point is None:
        raise DocumentKeyIsNotFound()
    return share


@request_handler(m.DecryptRequest)
async def _on_decrypt(core: ClusterCore, sender: bytes, msg: m.DecryptRequest) -> m.DecryptResponse:
    share = await _document_share(core, msg.key_id)
    version = next((v for v in reversed(share.versions) if v.hash == msg.version), None)
    if version is None:
        raise InvalidMessage("unknown key version")
    _validate_group(core, sender, share, version, msg.group)
    requester = Requester.from_signature(msg.signature, msg.key_id)
    operation = "shadow_decryption" if msg.shadow else "decryption"
    if not await core.allowed(requester, msg.key_id):
        core.audit_member(operation, msg.key_id, requester.address, "refused", "access checker said no")
        raise AccessDenied()
    core.audit_member(operation, msg.key_id, requester.address, "allowed", "access checker said yes")
    return _compute(core, share, version, msg.group, msg.access_key, requester, msg.shadow)


def unreachable(total_holders: int, threshold: int, fatal: int, rejects: int) -> KeyServerError:
    """Parity's choice between a lasting and a temporary consensus failure (protocol.md §6.10)."""
    if total_holders < threshold + 1 or (rejects and fatal * 2 >= rejects):
        return ConsensusUnreachable()
    return ConsensusTemporaryUnreachable()


async def _decrypt(
    core: ClusterCore, key_id: bytes, signature: bytes, requester: Requester, shadow: bool
) -> tuple[KeyShare, tuple[bytes, ...], dict[bytes, m.DecryptResponse], int]:
    share = await _document_share(core, key_id)
    if not await core.allowed(requester, key_id):
        raise ConsensusUnreachable()  # Parity reports an ACL refusal as "Consensus unreachable"
    version = share.last_version
    t = share.threshold
    holders = [n for n in version.id_numbers if n != core.node_id]
    candidates = core.shuffled(n for n in holders if n in core.connected_others())
    if len(candidates) < t:
        raise unreachable(len(version.id_numbers), t, 0, 0)
    chosen, spares = candidates[:t], candidates[t:]
    access_key = random_scalar(core.rng)
    attempt_timeout = max(core.session_timeout / 3, 0.05)
    fatal = rejects = 0
    while True:
        group = tuple(sorted([core.node_id, *chosen]))
        request = m.DecryptRequest(key_id, signature, version.hash, access_key, group, shadow)
        pending = asyncio.gather(*(core.request(n, request, attempt_timeout) for n in chosen), return_exceptions=True)
        await asyncio.sleep(0)  # let the requests reach the sockets, then work while peers do
        own = _compute(core, share, version, group, access_key, requester, shadow)
        replies = await pending
        failed = [n for n, r in zip(chosen, replies, strict=True) if not isinstance(r, m.DecryptResponse)]
        if not failed:
            responses = dict(zip(chosen, replies, strict=True))
            responses[core.node_id] = own
            return share, group, responses, access_key  # type: ignore[return-value]
        for n, r in zip(chosen, replies, strict=True):
            if n in failed:
                rejects += 1
                fatal += isinstance(r, AccessDenied)
        chosen, spares = replace_failed(core, chosen, set(failed), spares, t, len(version.id_numbers), fatal, rejects)


def replace_failed(
    core: ClusterCore, chosen: list[bytes], failed: set[bytes], spares: list[bytes], t: int, holders: int,
    fatal: int, rejects: int,
) -> tuple[list[bytes], list[bytes]]:
    """The next group: the members that answered, topped up from spares still connected; or Parity's
    consensus error when too few remain."""
    chosen = [n for n in chosen if n not in failed]
    connected = core.connected_others()
    spares = [n for n in spares if n in connected]
    while len(chosen) < t and spares:
        chosen.append(spares.pop(0))
    if len(chosen) < t:
        raise unreachable(holders, t, fatal, rejects)
    return chosen, spares


def _combine(share: KeyShare, group: tuple[bytes, ...], responses: dict[bytes, m.DecryptResponse], access_key: int) -> Point:
    assert share.encrypted_point is not None
    return shadows.combine_shadow_points(
        [responses[n].shadow_point for n in group], access_key, share.encrypted_point, share.threshold
    )


async def retrieve_shadow(core: ClusterCore, key_id: bytes, signature: bytes, requester: Requester) -> ShadowResult:
    """``GET /shadow/{key}/{sig}``: no node, this one included, learns the document key."""
    share, group, responses, access_key = await _decrypt(core, key_id, signature, requester, shadow=True)
    assert share.common_point is not None
    blobs = []
    for n in group:
        blob = responses[n].decrypt_shadow
        if blob is None:
            raise InvalidMessage("a shadow decryption came without its decrypt shadow")
        blobs.append(blob)
    return ShadowResult(
        decrypted_secret=_combine(share, group, responses, access_key),
        common_point=shadows.requester_common_point(share.common_point, share.threshold),
        decrypt_shadows=tuple(blobs),
    )


async def retrieve_plain(core: ClusterCore, key_id: bytes, signature: bytes, requester: Requester) -> bytes:
    """``GET /{key}/{sig}``: the entry node reconstructs M and returns ECIES(Q, M) (Parity semantics)."""
    share, group, responses, access_key = await _decrypt(core, key_id, signature, requester, shadow=False)
    document_key = _combine(share, group, responses, access_key)
    return ecies.encrypt(requester.public, document_key.to_bytes(), rng=core.rng)
