"""Document key retrieval (protocol.md §1.4.5-1.4.6, §2.7): plain and shadow decryption.

Parity negotiated key versions with every node and then ran a separate consensus round
before the partial decryptions. Here the entry node, which holds the key's metadata, picks
``t`` holders (connected and unsuspected first, at random) and sends each one ``Decrypt``
carrying the group, the access key and the requester's signature: consensus and partial
decryption in one round trip, ``2t`` messages. Every member recovers the requester from the
signature and asks its own access checker, about the key's author as this member stored it,
before computing anything. A member that refuses or fails is replaced by a spare holder, and
one that is slow is hedged around (:mod:`.groups`): a new attempt with a new group and a new
access key (the shadow coefficients depend on the group, so every member recomputes).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

from ...crypto import ecies, shadows
from ...crypto.curve import Point, random_scalar
from ...exceptions import (
    AccessDenied,
    ConsensusUnreachable,
    DocumentKeyIsNotFound,
    InvalidMessage,
    InvalidNodeForRequest,
    ServerKeyIsNotFound,
)
from ...protocol import messages as m
from ..storage import KeyShare, KeyVersion
from .base import Core, Requester, RequestHandlers
from .groups import Attempt, Group, MemberFailures, hedged, requests_away


@dataclass(frozen=True, slots=True)
class ShadowResult:
    """What ``GET /shadow/{key}/{sig}`` returns: nothing here reveals the document key."""

    decrypted_secret: Point
    common_point: Point
    decrypt_shadows: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, repr=False)
class _Document:
    """A key share that holds a document key, with its two points known to be there."""

    share: KeyShare
    common_point: Point
    encrypted_point: Point


def _validate_group(core: Core, sender: bytes, share: KeyShare, version: KeyVersion, group: tuple[bytes, ...]) -> None:
    if len(group) != share.threshold + 1 or len(set(group)) != len(group):
        raise InvalidMessage("the group must have exactly t+1 distinct members")
    if core.node_id not in group or sender not in group:
        raise InvalidNodeForRequest()
    if any(node not in version.id_numbers for node in group):
        raise InvalidNodeForRequest()


def _compute(
    core: Core, document: _Document, version: KeyVersion, group: tuple[bytes, ...], access_key: int,
    requester: Requester, shadow: bool, encryptor: ecies.Encryptor | None = None,
) -> m.DecryptResponse:
    """This node's part of one key's decryption; in shadow mode its decrypt shadow is sealed to the
    requester, by ``encryptor`` when given (a batch answer's one encryptor for that requester)."""
    x_self = version.id_numbers[core.node_id]
    x_others = [version.id_numbers[n] for n in group if n != core.node_id]
    node_shadow = shadows.node_shadow(version.secret_share, x_self, x_others)
    common = document.common_point
    if shadow:
        point, blob = shadows.shadow_decryption(node_shadow, access_key, common,
                                                requester.public if encryptor is None else encryptor, core.rng)
        return m.DecryptResponse(shadow_point=point, decrypt_shadow=blob)
    return m.DecryptResponse(shadow_point=shadows.shadow_point(node_shadow, access_key, common), decrypt_shadow=None)


async def _document(core: Core, key_id: bytes) -> _Document:
    share = await core.load_key(key_id)
    if share is None:
        raise ServerKeyIsNotFound()
    if share.common_point is None or share.encrypted_point is None:
        raise DocumentKeyIsNotFound()
    return _Document(share, share.common_point, share.encrypted_point)


async def _on_decrypt(core: Core, sender: bytes, msg: m.DecryptRequest) -> m.DecryptResponse:
    document = await _document(core, msg.key_id)
    share = document.share
    version = next((v for v in reversed(share.versions) if v.hash == msg.version), None)
    if version is None:
        raise InvalidMessage("unknown key version")
    _validate_group(core, sender, share, version, msg.group)
    requester = Requester.from_signature(msg.signature, msg.key_id)
    operation = "shadow_decryption" if msg.shadow else "decryption"
    decision = await core.access(requester, msg.key_id, share.author, share.owner)
    if not decision.allowed:
        core.audit_member(operation, msg.key_id, requester.address, "refused", decision.reason)
        raise AccessDenied()
    core.audit_member(operation, msg.key_id, requester.address, "allowed", decision.reason)
    return _compute(core, document, version, msg.group, msg.access_key, requester, msg.shadow)


async def _attempt(
    core: Core, document: _Document, version: KeyVersion, key_id: bytes, signature: bytes, requester: Requester,
    shadow: bool, attempt: Attempt,
) -> tuple[tuple[bytes, ...], dict[bytes, m.DecryptResponse], int]:
    """One attempt with one group and its own fresh access key."""
    access_key = random_scalar(core.rng)
    group = tuple(sorted([core.node_id, *attempt.chosen]))
    request = m.DecryptRequest(key_id=key_id, signature=signature, version=version.hash, access_key=access_key,
                               group=group, shadow=shadow)
    # A task now, so the requests are on their way during _compute.
    pending = asyncio.ensure_future(
        attempt.round({n: core.request(n, request, m.DecryptResponse) for n in attempt.chosen}))
    try:
        await requests_away()  # then this node's own part, while the members compute theirs
        own = _compute(core, document, version, group, access_key, requester, shadow)
        responses = await pending
    finally:
        pending.cancel()
    malformed = {n: InvalidMessage("a shadow decryption came without its decrypt shadow")
                 for n, response in responses.items() if shadow and response.decrypt_shadow is None}
    if malformed:
        raise MemberFailures(malformed)  # that member's failure, like any other: replace it
    responses[core.node_id] = own
    return group, responses, access_key


async def _decrypt(
    core: Core, key_id: bytes, signature: bytes, requester: Requester, shadow: bool
) -> tuple[_Document, tuple[bytes, ...], dict[bytes, m.DecryptResponse], int]:
    document = await _document(core, key_id)
    decision = await core.access(requester, key_id, document.share.author, document.share.owner)
    if not decision.allowed:
        # Parity reports an ACL refusal as "Consensus unreachable"; the reason is only audited.
        raise ConsensusUnreachable(decision.reason)
    version = document.share.last_version
    members = Group.pick(core, version.id_numbers, document.share.threshold)
    group, responses, access_key = await hedged(
        core, members, lambda attempt: _attempt(core, document, version, key_id, signature, requester, shadow, attempt))
    return document, group, responses, access_key


def _combine(document: _Document, group: tuple[bytes, ...], responses: dict[bytes, m.DecryptResponse],
             access_key: int) -> Point:
    return shadows.combine_shadow_points(
        [responses[n].shadow_point for n in group], access_key, document.encrypted_point, document.share.threshold
    )


async def retrieve_shadow(core: Core, key_id: bytes, signature: bytes, requester: Requester) -> ShadowResult:
    """``GET /shadow/{key}/{sig}``: no node, this one included, learns the document key."""
    document, group, responses, access_key = await _decrypt(core, key_id, signature, requester, shadow=True)
    blobs = []
    for n in group:
        blob = responses[n].decrypt_shadow
        if blob is None:  # _decrypt replaced every member that answered without one
            raise InvalidMessage("a shadow decryption came without its decrypt shadow")
        blobs.append(blob)
    return ShadowResult(
        decrypted_secret=_combine(document, group, responses, access_key),
        common_point=shadows.requester_common_point(document.common_point, document.share.threshold),
        decrypt_shadows=tuple(blobs),
    )


async def retrieve_plain(core: Core, key_id: bytes, signature: bytes, requester: Requester) -> bytes:
    """``GET /{key}/{sig}``: the entry node reconstructs M and returns ECIES(Q, M) (Parity semantics)."""
    document, group, responses, access_key = await _decrypt(core, key_id, signature, requester, shadow=False)
    document_key = _combine(document, group, responses, access_key)
    return ecies.encrypt(requester.public, document_key.to_bytes(), rng=core.rng)


REQUEST_HANDLERS: Final[RequestHandlers] = {m.DecryptRequest: _on_decrypt}
