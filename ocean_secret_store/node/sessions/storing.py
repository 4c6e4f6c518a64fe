"""Document key storing (Parity's encryption session, protocol.md §1.4.2, §6.11), and the
combined server + document key generation of endpoint 3 (§1.4.3).

Every configured node must be connected. Each node checks on its own that the requester is
the key's author and that no document key is stored yet, and, when the request carried a bound
signature (protocol/bound.py) or the node requires one, checks that too and claims its nonce.
Parity's quirk is kept: storing for a key id nobody holds succeeds and stores nothing.
"""

from __future__ import annotations

from typing import Final

from ...crypto import document, ecies
from ...crypto.curve import Point
from ...exceptions import AccessDenied, DocumentKeyAlreadyStored, InvalidMessage, KeyServerError
from ...protocol import bound as b
from ...protocol import messages as m
from . import generation
from .base import Core, Maintenance, Requester, RequestHandlers, gather_settled


async def _store_locally(core: Core, key_id: bytes, requester: Requester, common: Point, encrypted: Point) -> None:
    # Check-then-write must not interleave with another store on this node (stores are rare).
    async with core.store_lock:
        share = await core.load_key(key_id)
        if share is None:
            return  # Parity: nothing to store, and not an error
        if share.author != requester.address:
            raise AccessDenied()
        if share.common_point is not None:
            raise DocumentKeyAlreadyStored()
        await core.update_key(key_id, share.with_document_key(common, encrypted))


async def _check_bound(core: Core, msg: m.StoreRequest, requester: Requester) -> None:
    """A member's own check of the requester's bound signature (the entry node checked it too)."""
    # A store from a node of an earlier version names no operation: it is a plain store.
    operation = msg.operation or "store_document_key"
    if operation == "store_document_key":
        arguments = b.store_arguments(msg.common_point, msg.encrypted_point)
    elif operation == "generate_document_key":
        # Endpoint 3: the client signed the threshold, which this node stored with its share.
        share = await core.load_key(msg.key_id)
        if share is None:
            return  # nothing to store here (Parity's quirk), so nothing to authorize
        arguments = b.threshold_arguments(share.threshold)
    else:
        raise InvalidMessage(f"a document key store for operation {operation!r}")
    core.check_bound(operation, msg.key_id, requester.address, arguments, msg.bound)


async def _on_store(core: Core, sender: bytes, msg: m.StoreRequest) -> None:
    requester = Requester.from_signature(msg.signature, msg.key_id)
    try:
        await _check_bound(core, msg, requester)
        await _store_locally(core, msg.key_id, requester, msg.common_point, msg.encrypted_point)
    except KeyServerError as exc:
        core.audit_member("store_document_key", msg.key_id, requester.address, "refused", exc.parity_name)
        raise
    core.audit_member("store_document_key", msg.key_id, requester.address, "ok")


async def run(
    core: Core, key_id: bytes, signature: bytes, requester: Requester, common: Point, encrypted: Point,
    bound: b.Bound | None = None, operation: str = "store_document_key",
) -> None:
    """Entry side: store on every node, this one last (the entry node checked ``bound`` already)."""
    share = await core.load_key(key_id)
    if share is not None:
        if share.author != requester.address:
            raise AccessDenied()
        if share.common_point is not None:
            raise DocumentKeyAlreadyStored()
    core.require_all_connected()
    request = m.StoreRequest(key_id=key_id, signature=signature, common_point=common, encrypted_point=encrypted,
                             operation=operation, bound=bound)
    results = await gather_settled([core.request(n, request, m.Ack) for n in core.others])
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        # The most telling error wins: a refusal explains the others.
        for preferred in (AccessDenied, DocumentKeyAlreadyStored, KeyServerError):
            for err in errors:
                if isinstance(err, preferred):
                    raise err
        raise errors[0]
    await _store_locally(core, key_id, requester, common, encrypted)


async def generate_and_store(
    core: Core, key_id: bytes, signature: bytes, requester: Requester, threshold: int, bound: b.Bound | None = None
) -> bytes:
    """Endpoint 3: generate the server key, then a document key for it; returns ECIES(Q, M)."""
    public = await generation.run(core, key_id, requester.address, threshold)
    document_key, common, encrypted = document.generate_document_key(public, core.rng)
    await run(core, key_id, signature, requester, common, encrypted, bound, "generate_document_key")
    return ecies.encrypt(requester.public, document_key.to_bytes(), rng=core.rng)


REQUEST_HANDLERS: Final[RequestHandlers] = {m.StoreRequest: _on_store}
MAINTENANCE: Final[tuple[Maintenance, ...]] = ()
