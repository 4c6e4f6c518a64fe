"""The permission query of the chain: a raw ``eth_call`` of ``checkPermissions(address,bytes32)`` on an
ACL contract (AccessSecretStoreCondition, protocol.md §4.1).

No web3 here: the calldata is two 32-byte words after the selector, encoded by hand, and the call
goes over one kept-alive aiohttp session (about 0.8 ms on loopback against 4.4 ms for a web3
contract call; architecture.md "Decisions already measured"). Every answer is asked for afresh: a
positive answer is never cached. A chain that does not answer raises
:class:`~ocean_secret_store.exceptions.ChainUnreachable`, and anything but a clean 0 or 1 raises
:class:`PermissionQueryFailed`; the node's access checker (``node.acl``) turns both into a refusal.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import aiohttp

from ..exceptions import ChainError, ChainUnreachable
from ..protocol.hexcodec import to_hex

#: keccak256("checkPermissions(address,bytes32)")[:4] — AccessSecretStoreCondition's Parity ACL hook.
CHECK_PERMISSIONS_SELECTOR = bytes.fromhex("b36a9a7c")
#: The selector and the 12 zero bytes that left-pad the address word: the fixed head of every call.
_CALLDATA_HEAD = "0x" + (CHECK_PERMISSIONS_SELECTOR + bytes(12)).hex()


class PermissionQueryFailed(ChainError):
    """``checkPermissions`` gave no usable answer: bad arguments, a JSON-RPC error, or not a boolean."""


def check_permissions_calldata(requester: bytes, key_id: bytes) -> str:
    """``0x`` hex calldata of checkPermissions(requester, key_id): selector ‖ left-padded address ‖ bytes32."""
    if len(requester) != 20:
        raise PermissionQueryFailed(f"requester address must be 20 bytes, got {len(requester)}")
    if len(key_id) != 32:
        raise PermissionQueryFailed(f"server key id must be 32 bytes, got {len(key_id)}")
    return _CALLDATA_HEAD + (requester + key_id).hex()


def decode_bool_word(result: Any) -> bool:
    """The ABI bool in an eth_call result: exactly one 32-byte word equal to 0 or 1, else PermissionQueryFailed."""
    if not isinstance(result, str) or not result.startswith("0x"):
        raise PermissionQueryFailed(f"checkPermissions answer is not 0x hex: {str(result)[:80]!r}")
    body = result[2:]
    if len(body) != 64:
        raise PermissionQueryFailed(
            f"checkPermissions answer is {len(body) / 2:g} bytes, expected one 32-byte word"
            + (" (no contract code at that address?)" if not body else "")
        )
    try:
        value = int(body, 16)
    except ValueError as exc:
        raise PermissionQueryFailed(f"checkPermissions answer is not hex: {result[:80]!r}") from exc
    if value not in (0, 1):
        raise PermissionQueryFailed(f"checkPermissions answer {result[:18]}... is not a boolean (0 or 1)")
    return value == 1


class PermissionQuery:
    """``checkPermissions`` of the contract at the 20-byte address ``contract``, asked over JSON-RPC
    (an ``http(s)://`` ``chain_url``).

    The aiohttp session is created lazily inside the running loop and reused; ``close()`` ends it.
    """

    def __init__(self, chain_url: str, contract: bytes, *, timeout: float = 2.0) -> None:
        self.chain_url = chain_url
        self.contract = contract
        self.timeout = timeout
        self._to = to_hex(contract)
        self._where = f"checkPermissions at {self._to} via {chain_url}"
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"PermissionQuery({self.chain_url!r}, {self._to})"

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            # A session belongs to the loop it was made in; a query reused under a new loop
            # (tests, restarts) gets a fresh one rather than a broken connector.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=32, keepalive_timeout=60),
                headers={"Content-Type": "application/json"},
            )
            self._session_loop = loop
        return self._session

    async def _post(self, payload: bytes) -> bytes:
        where = self._where
        try:
            async with self._client().post(self.chain_url, data=payload) as response:
                body = await response.read()
                if response.status != 200:
                    raise PermissionQueryFailed(f"{where}: HTTP {response.status} {response.reason or ''}".rstrip())
                return body
        except TimeoutError as exc:
            raise ChainUnreachable(f"{where}: no answer within {self.timeout:g} s", url=self.chain_url) from exc
        except aiohttp.ClientError as exc:
            raise ChainUnreachable(f"{where}: chain unreachable ({type(exc).__name__}: {exc})",
                                   url=self.chain_url) from exc
        except OSError as exc:
            raise ChainUnreachable(f"{where}: chain unreachable ({exc})", url=self.chain_url) from exc

    async def check_permissions(self, requester: bytes, key_id: bytes) -> bool:
        """True iff the contract says ``requester`` may use ``key_id`` on the latest block."""
        payload = json.dumps({
            "jsonrpc": "2.0", "id": next(self._ids), "method": "eth_call",
            "params": [{"to": self._to, "data": check_permissions_calldata(requester, key_id)}, "latest"],
        }).encode()
        body = await self._post(payload)
        where = self._where
        try:
            answer = json.loads(body)
        except ValueError as exc:
            raise PermissionQueryFailed(f"{where}: answer is not JSON: {body[:80]!r}") from exc
        if not isinstance(answer, dict):
            raise PermissionQueryFailed(f"{where}: answer is not a JSON-RPC object")
        if answer.get("error") is not None:
            error = answer["error"]
            detail = f"{error.get('code')}: {error.get('message')}" if isinstance(error, dict) else str(error)
            raise PermissionQueryFailed(f"{where}: JSON-RPC error {detail}"[:300])
        if "result" not in answer:
            raise PermissionQueryFailed(f"{where}: JSON-RPC answer has neither result nor error")
        try:
            return decode_bool_word(answer["result"])
        except PermissionQueryFailed as exc:
            raise PermissionQueryFailed(f"{where}: {exc}") from None

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
