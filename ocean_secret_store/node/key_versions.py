"""A key server's answer to the key-versions query of another node of its cluster
(``GET /admin/key_versions/...``, :mod:`ocean_secret_store.protocol.key_versions`): which version of
each key this node holds, for ``ocean-secret-store node verify`` on that other node."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiohttp import web

from ..exceptions import AccessDenied, KeyServerError
from ..metrics import ROUTE
from ..protocol import http as codec
from ..protocol import key_versions as kv
from .cluster import ClusterCore
from .storage import KeyStorage

__all__ = ["answer", "serve"]


def _page(storage: KeyStorage, after: bytes, requester: bytes) -> tuple[list[kv.PeerKey], bool]:
    """Blocking: the keys above ``after`` (one page) as the requester is told of them."""
    ids = storage.key_page(after, kv.PAGE + 1)
    keys = []
    for key_id in ids[:kv.PAGE]:
        share = storage.get(key_id)
        if share is None:  # removed since it was listed
            continue
        active = share.last_version if share.usable else None
        keys.append(kv.PeerKey(key_id, share.threshold, None if active is None else active.hash,
                               0 if active is None else active.epoch, share.max_epoch,
                               active is not None and requester in active.id_numbers,
                               share.common_point is not None))
    return keys, len(ids) > kv.PAGE


async def answer(core: ClusterCore, request: kv.KeyVersionsRequest, now: float) -> kv.KeyVersionsPage:
    """The page ``request`` asks for.

    :raises AccessDenied: a bad or expired signature, or a requester that is not in this node's
        address book or servers set.
    :raises DatabaseError: a record cannot be read (the node's own damage; ``node verify`` on it says which).
    """
    requester = request.requester(core.node_id, now)
    if requester not in set(core.peer_states()) | set(core.nodes):
        raise AccessDenied("the key-versions request is not signed by a node of this cluster")
    keys, more = await asyncio.to_thread(_page, core.storage, request.after, requester)
    return kv.KeyVersionsPage(core.node_id, core.servers_set, tuple(keys), more)


async def serve(core: ClusterCore, request: web.Request, clock: Callable[[], float] = time.time
                ) -> web.Response | None:
    """``GET /admin/key_versions/...``: the answer (JSON), Parity's empty 400 for a malformed path,
    its 403 ``Access denied`` for a refused signer; None for any other request."""
    if not request.rel_url.path.startswith(kv.PREFIX):
        return None
    request[ROUTE] = kv.ROUTE
    if request.method != "GET":
        return web.Response(status=codec.BAD_REQUEST_STATUS)
    try:
        parsed = kv.parse_path(request.rel_url.path)
    except kv.KeyVersionsError:
        return web.Response(status=codec.BAD_REQUEST_STATUS)
    if parsed is None:
        return None
    try:
        page = await answer(core, parsed, clock())
    except KeyServerError as exc:
        status, body = codec.error_response(exc)
        return web.Response(status=status, body=body, headers={"Content-Type": codec.CONTENT_TYPE_JSON})
    return web.json_response(kv.encode_page(page))
