"""Key metadata across the cluster: what a node that holds no share learns from those that do
(a lean form of Parity's key version negotiation, protocol.md §6.9), and ``GET /server``."""

from __future__ import annotations

from ...crypto.curve import Point
from ...exceptions import AccessDenied, ServerKeyIsNotFound
from ...protocol import messages as m
from ..cluster import ClusterCore, Requester, gather_settled, request_handler


@request_handler(m.KeyInfoRequest)
async def _on_key_info(core: ClusterCore, sender: bytes, msg: m.KeyInfoRequest) -> m.KeyInfo:
    share = await core.load_key(msg.key_id)
    if share is None:
        return m.KeyInfo(False, 0, None, None, False, (), ())
    version = share.last_version
    return m.KeyInfo(
        True,
        share.threshold,
        share.author,
        share.public,
        share.common_point is not None,
        tuple(v.hash for v in reversed(share.versions))[:32],
        tuple(sorted(version.id_numbers)),
    )


async def find_key(core: ClusterCore, key_id: bytes) -> list[tuple[bytes, m.KeyInfo]]:
    """Ask every connected peer about ``key_id``; returns the holders' answers."""
    peers = sorted(core.connected_others())
    replies = await gather_settled([core.request(p, m.KeyInfoRequest(key_id)) for p in peers])
    return [(p, r) for p, r in zip(peers, replies, strict=True) if isinstance(r, m.KeyInfo) and r.found]


async def server_key(core: ClusterCore, key_id: bytes, requester: Requester) -> Point:
    """``GET /server/{key}/{sig}``: the server public key, for the key's author only (no ACL call)."""
    share = await core.load_key(key_id)
    if share is not None:
        author, public = share.author, share.public
    else:
        found = await find_key(core, key_id)
        if not found:
            raise ServerKeyIsNotFound()
        info = found[0][1]
        assert info.author is not None and info.public is not None
        author, public = info.author, info.public
    if author != requester.address:
        raise AccessDenied()
    return public
