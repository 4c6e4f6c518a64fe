"""Key metadata across the cluster: what a node that holds no share learns from those that do
(a lean form of Parity's key version negotiation, protocol.md §6.9), and ``GET /server``.

A holder's answer is checked before it is used: one that claims the key but lacks its author or
public key, versions or holders counts as that holder's failure, like a holder that does not
answer, and the next holder's answer is used.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ...crypto.curve import Point
from ...exceptions import AccessDenied, KeyServerError, ServerKeyIsNotFound
from ...protocol import messages as m
from .base import Core, Requester, RequestHandlers

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KeyMetadata:
    """The public metadata of a key, as one holder reported it."""

    threshold: int
    author: bytes
    public: Point
    has_document_key: bool
    versions: tuple[bytes, ...]
    holders: tuple[bytes, ...]

    @classmethod
    def from_reply(cls, info: m.KeyInfo) -> KeyMetadata | None:
        """The metadata in a holder's ``KeyInfo``; None if it claims no share or is inconsistent."""
        if not info.found:
            return None
        if info.author is None or info.public is None or not info.versions or not info.holders:
            return None
        if not 0 <= info.threshold < len(info.holders):
            return None
        return cls(info.threshold, info.author, info.public, info.has_document_key, info.versions, info.holders)


async def _on_key_info(core: Core, sender: bytes, msg: m.KeyInfoRequest) -> m.KeyInfo:
    share = await core.load_key(msg.key_id)
    if share is None:
        return m.KeyInfo(found=False, threshold=0, author=None, public=None, has_document_key=False, versions=(),
                         holders=())
    return m.KeyInfo(
        found=True,
        threshold=share.threshold,
        author=share.author,
        public=share.public,
        has_document_key=share.common_point is not None,
        # the active version first: it is the one entry nodes choose
        versions=(share.last_version.hash,
                  *(v.hash for v in reversed(share.versions) if v is not share.last_version))[:32],
        holders=tuple(sorted(share.last_version.id_numbers)),
    )


async def find_key(core: Core, key_id: bytes,
                   enough: Callable[[list[tuple[bytes, KeyMetadata]]], bool] = lambda found: False,
                   ) -> list[tuple[bytes, KeyMetadata]]:
    """Ask every connected peer about ``key_id``; returns the holders' well-formed answers, once all
    peers answered or failed, or as soon as the answers so far are ``enough`` (a frozen peer is then
    not waited for)."""
    request = m.KeyInfoRequest(key_id=key_id)

    async def ask(peer: bytes) -> tuple[bytes, m.KeyInfo | None]:
        try:
            return peer, await core.request(peer, request, m.KeyInfo)
        except KeyServerError:
            return peer, None  # a peer that fails or does not answer tells us nothing

    tasks = [asyncio.ensure_future(ask(p)) for p in core.candidates(core.connected_others())]
    found: list[tuple[bytes, KeyMetadata]] = []
    try:
        for next_done in asyncio.as_completed(tasks):
            peer, reply = await next_done
            if reply is None:
                continue
            metadata = KeyMetadata.from_reply(reply)
            if metadata is not None:
                found.append((peer, metadata))
                if enough(found):
                    break
            elif reply.found:
                log.warning("ignoring malformed key metadata from 0x%s..", peer.hex()[:16])
    finally:
        for task in tasks:
            task.cancel()
    return found


async def server_key(core: Core, key_id: bytes, requester: Requester) -> Point:
    """``GET /server/{key}/{sig}``: the server public key, for the key's author only (no ACL call)."""
    share = await core.load_key(key_id)
    if share is not None:
        author, public = share.author, share.public
    else:
        found = await find_key(core, key_id, enough=bool)
        if not found:
            raise ServerKeyIsNotFound()
        metadata = found[0][1]
        author, public = metadata.author, metadata.public
    if author != requester.address:
        raise AccessDenied()
    return public


REQUEST_HANDLERS: Final[RequestHandlers] = {m.KeyInfoRequest: _on_key_info}
