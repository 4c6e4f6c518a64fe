"""Access checkers: may a requester address use a server key id? (protocol.md §4.1)

Every consensus node asks its own checker. A checker that cannot decide (chain unreachable,
malformed answer) raises :class:`AccessCheckFailed`; callers treat that as a refusal, never as
an allow. :class:`ContractAccessChecker` adapts the chain layer's raw ``checkPermissions`` query.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from ..chain.acl import PermissionQuery
from ..exceptions import ChainError, ConfigError, InternalError
from ..protocol.hexcodec import to_hex


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


class ContractAccessChecker:
    """AccessChecker backed by ``checkPermissions`` on an ACL contract (AccessSecretStoreCondition).

    ``chain_url`` (http or https JSON-RPC) and ``contract`` (20-byte address) are the node's
    ``acl.chain_url`` and ``acl.contract``. Every check asks the chain afresh.
    """

    def __init__(self, chain_url: str, contract: bytes, *, timeout: float = 2.0) -> None:
        if not chain_url.startswith(("http://", "https://")):
            raise ConfigError(f"acl.chain_url {chain_url!r}: the contract checker speaks JSON-RPC over http(s)",
                              key="acl.chain_url")
        if len(contract) != 20:
            raise ConfigError(f"acl.contract must be a 20-byte address, got {len(contract)} bytes", key="acl.contract")
        self.query = PermissionQuery(chain_url, contract, timeout=timeout)

    def __repr__(self) -> str:
        return f"ContractAccessChecker({self.query.chain_url!r}, {to_hex(self.query.contract)})"

    async def check(self, requester: bytes, key_id: bytes) -> bool:
        try:
            return await self.query.check_permissions(requester, key_id)
        except ChainError as exc:
            raise AccessCheckFailed(str(exc)) from exc

    async def close(self) -> None:
        await self.query.close()
