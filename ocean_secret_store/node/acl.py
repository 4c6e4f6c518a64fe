"""Access checkers: may a requester address use a server key id? (protocol.md §4.1)

Every consensus node asks its own checker. A checker that cannot decide (chain unreachable,
malformed answer) raises :class:`AccessCheckFailed`; callers treat that as a refusal, never as
an allow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from ..exceptions import InternalError


class AccessCheckFailed(InternalError):
    """The access checker could not reach a decision (reported as a refusal)."""


class AccessChecker(Protocol):
    async def check(self, requester: bytes, key_id: bytes) -> bool:
        """True if the 20-byte ``requester`` address may use ``key_id``."""
        ...

    async def close(self) -> None: ...


class AllowAll:
    """ACL disabled (Parity's ``acl_contract = "none"``): everyone is allowed."""

    async def check(self, requester: bytes, key_id: bytes) -> bool:
        return True

    async def close(self) -> None:
        return None


class StaticAllowList:
    """A fixed list: addresses allowed for every key, plus per-key grants (tests and demos)."""

    def __init__(self, everywhere: Iterable[bytes] = (), per_key: Mapping[bytes, Iterable[bytes]] | None = None):
        self._everywhere = frozenset(everywhere)
        self._per_key = {k: frozenset(v) for k, v in (per_key or {}).items()}

    async def check(self, requester: bytes, key_id: bytes) -> bool:
        return requester in self._everywhere or requester in self._per_key.get(key_id, frozenset())

    async def close(self) -> None:
        return None


class DenyList:
    """Permissive except for explicit (address, key) prohibitions: Parity's DummyAclStorage, for tests."""

    def __init__(self) -> None:
        self._prohibited: set[tuple[bytes, bytes]] = set()

    def prohibit(self, requester: bytes, key_id: bytes) -> None:
        self._prohibited.add((requester, key_id))

    async def check(self, requester: bytes, key_id: bytes) -> bool:
        return (requester, key_id) not in self._prohibited

    async def close(self) -> None:
        return None
