"""Delegation: an entry node that holds no share of a key (it lost its data, or joined later)
forwards a retrieval or a signing to a holder instead of answering 404 (protocol.md §6.9).

The entry node asks its peers for the key's metadata (:func:`.negotiation.find_key`) and picks
the key version that at least ``t+1`` live holders report as their newest: a version that fewer
holders report may still be being written, or may have lost holders, and is never chosen (Parity's
rule (c) could pick it). It then sends ``Delegate`` to one of those holders, chosen at random
among the connected and unsuspected ones; the holder runs the operation as entry node (its own
access check, its own group, hedging) and answers with the result, which is already in the form
the requester gets (shadows, or blobs encrypted to the requester). A holder that fails is replaced
by the next one while the session timeout lasts.

Bound signatures: the entry node checked the requester's and claimed its nonce; the delegate
checks access itself, as every member does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Final

from ...exceptions import (
    AccessDenied,
    ConsensusTemporaryUnreachable,
    ConsensusUnreachable,
    DocumentKeyIsNotFound,
    InsufficientRequesterData,
    InvalidMessage,
    KeyServerError,
    ServerKeyIsNotFound,
)
from ...protocol import messages as m
from ..storage import KeyShare
from . import decryption, ecdsa, negotiation, signing
from .base import Core, Requester, RequestHandlers

#: The operations that may be delegated, by their name on the wire.
OPERATIONS: Final = frozenset({"shadow", "plain", "schnorr", "ecdsa"})


@dataclass(frozen=True, slots=True)
class _Choice:
    version: bytes
    holders: list[bytes]


def _choose(found: list[tuple[bytes, negotiation.KeyMetadata]]) -> _Choice | None:
    """The newest version with at least t+1 live holders among those that answered, if any."""
    newest = Counter(metadata.versions[0] for _, metadata in found)
    for version, _ in newest.most_common():
        holders = [peer for peer, metadata in found if metadata.versions[0] == version]
        threshold = next(metadata.threshold for _, metadata in found if metadata.versions[0] == version)
        if len(holders) >= threshold + 1:
            return _Choice(version, holders)
    return None


def _enough(found: list[tuple[bytes, negotiation.KeyMetadata]]) -> bool:
    return _choose(found) is not None


async def newer_version(core: Core, key_id: bytes, share: KeyShare | None) -> bytes | None:
    """The version t+1 live peers use for ``key_id`` when it is not this node's active one (this
    node's is stale), else None."""
    if share is None or not share.usable:
        return None
    choice = _choose(await negotiation.find_key(core, key_id, enough=_enough))
    if choice is None or choice.version == share.last_version.hash:
        return None
    return choice.version


async def forward(core: Core, operation: str, key_id: bytes, signature: bytes,
                  message_hash: bytes | None = None) -> m.DelegatedShadow | m.DelegatedBlob:
    """Run ``operation`` through a holder of ``key_id`` (this node holds no share of it)."""
    found = await negotiation.find_key(core, key_id, enough=_enough)
    if not found:
        raise ServerKeyIsNotFound()
    if operation not in ("schnorr", "ecdsa") and not any(metadata.has_document_key for _, metadata in found):
        raise DocumentKeyIsNotFound()
    choice = _choose(found)
    if choice is None:
        raise ConsensusTemporaryUnreachable()  # no version has t+1 live holders now
    request = m.DelegateRequest(operation=operation, key_id=key_id, signature=signature, version=choice.version,
                                message_hash=message_hash)
    reply_type: type[m.DelegatedShadow | m.DelegatedBlob] = (
        m.DelegatedShadow if operation == "shadow" else m.DelegatedBlob)
    last: KeyServerError = ConsensusTemporaryUnreachable()
    for holder in core.candidates(choice.holders):
        try:
            return await core.request(holder, request, reply_type)
        except (AccessDenied, ConsensusUnreachable, InsufficientRequesterData):
            raise  # the holder's refusal is the answer, not a failure
        except KeyServerError as exc:
            last = exc
    raise last


async def _on_delegate(core: Core, sender: bytes, msg: m.DelegateRequest) -> m.Message:
    if msg.operation not in OPERATIONS:
        raise InvalidMessage(f"cannot run {msg.operation!r} for another node")
    share = await core.load_key(msg.key_id)
    if share is None:
        raise ServerKeyIsNotFound()
    if share.last_version.hash != msg.version:
        raise ConsensusTemporaryUnreachable()  # our newest version is another: the entry asks someone else
    requester = Requester.from_signature(msg.signature, msg.key_id)
    try:
        if msg.operation == "shadow":
            result = await decryption.retrieve_shadow(core, msg.key_id, msg.signature, requester)
            reply: m.Message = m.DelegatedShadow(decrypted_secret=result.decrypted_secret,
                                                 common_point=result.common_point,
                                                 decrypt_shadows=result.decrypt_shadows)
        elif msg.operation == "plain":
            reply = m.DelegatedBlob(blob=await decryption.retrieve_plain(core, msg.key_id, msg.signature, requester))
        else:
            if msg.message_hash is None or len(msg.message_hash) != 32:
                raise InvalidMessage("a delegated signing needs a 32-byte message hash")
            sign = ecdsa.run if msg.operation == "ecdsa" else signing.run
            reply = m.DelegatedBlob(blob=await sign(core, msg.key_id, msg.signature, requester, msg.message_hash))
    except KeyServerError as exc:
        core.audit_member(f"delegated_{msg.operation}", msg.key_id, requester.address, "refused", exc.parity_name)
        raise
    core.audit_member(f"delegated_{msg.operation}", msg.key_id, requester.address, "ok")
    return reply


REQUEST_HANDLERS: Final[RequestHandlers] = {m.DelegateRequest: _on_delegate}
