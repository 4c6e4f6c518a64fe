"""The node's contract-backed access checker: a raw ``eth_call`` of ``checkPermissions(address,bytes32)`` (protocol.md §4.1).

No web3 here: the calldata is two 32-byte words after the selector, encoded by hand, and the call
goes over one kept-alive aiohttp session (about 0.8 ms on loopback against 4.4 ms for a web3
contract call; architecture.md "Decisions already measured"). Every answer is asked for afresh:
a positive answer is never cached, and anything but a clean 0 or 1 raises AccessCheckFailed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import aiohttp

from ..exceptions import ConfigError
from ..node.acl import AccessCheckFailed

#: keccak256("checkPermissions(address,bytes32)")[:4] — AccessSecretStoreCondition's Parity ACL hook.
CHECK_PERMISSIONS_SELECTOR = bytes.fromhex("b36a9a7c")
_ZERO_PAD = bytes(12)


def check_permissions_calldata(requester: bytes, key_id: bytes) -> str:
    """``0x`` hex calldata of checkPermissions(requester, key_id): selector ‖ left-padded address ‖ bytes32."""
    if len(requester) != 20:
        raise AccessCheckFailed(f"requester address must be 20 bytes, got {len(requester)}")
    if len(key_id) != 32:
        raise AccessCheckFailed(f"server key id must be 32 bytes, got {len(key_id)}")
    return "0x" + (CHECK_PERMISSIONS_SELECTOR + _ZERO_PAD + requester + key_id).hex()


def decode_bool_word(result: Any) -> bool:
    """The ABI bool in an eth_call result: exactly one 32-byte word equal to 0 or 1, else AccessCheckFailed."""
    if not isinstance(result, str) or not result.startswith("0x"):
        raise AccessCheckFailed(f"checkPermissions answer is not 0x hex: {str(result)[:80]!r}")
    body = result[2:]
    if len(body) != 64:
        raise AccessCheckFailed(
            f"checkPermissions answer is {len(body) / 2:g} bytes, expected one 32-byte word"
            + (" (no contract code at that address?)" if not body else "")
        )
    try:
        value = int(body, 16)
    except ValueError as exc:
        raise AccessCheckFailed(f"checkPermissions answer is not hex: {result[:80]!r}") from exc
    if value not in (0, 1):
        raise AccessCheckFailed(f"checkPermissions answer {result[:18]}... is not a boolean (0 or 1)")
    return value == 1


class ContractAccessChecker:
    """AccessChecker backed by ``checkPermissions`` on an ACL contract (AccessSecretStoreCondition).

    The aiohttp session is created lazily inside the running loop and reused; ``close()`` ends it.
    """

    def __init__(self, chain_url: str, contract: bytes, *, timeout: float = 2.0) -> None:
        if not chain_url.startswith(("http://", "https://")):
            raise ConfigError(f"acl.chain_url {chain_url!r}: the contract checker speaks JSON-RPC over http(s)",
                              key="acl.chain_url")
        if len(contract) != 20:
            raise ConfigError(f"acl.contract must be a 20-byte address, got {len(contract)} bytes", key="acl.contract")
        self.chain_url = chain_url
        self.contract = contract
        self.timeout = timeout
        self._to = "0x" + contract.hex()
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"ContractAccessChecker({self.chain_url!r}, 0x{self.contract.hex()})"

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            # A session belongs to the loop it was made in; a checker reused under a new loop
            # (tests, restarts) gets a fresh one rather than a broken connector.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=32, keepalive_timeout=60),
                headers={"Content-Type": "application/json"},
            )
            self._session_loop = loop
        return self._session

    async def check(self, requester: bytes, key_id: bytes) -> bool:
        """True iff the contract says ``requester`` may use ``key_id`` on the latest block."""
        payload = json.dumps({
            "jsonrpc": "2.0", "id": next(self._ids), "method": "eth_call",
            "params": [{"to": self._to, "data": check_permissions_calldata(requester, key_id)}, "latest"],
        }).encode()
        where = f"checkPermissions at {self._to} via {self.chain_url}"
        try:
            async with self._client().post(self.chain_url, data=payload) as response:
                body = await response.read()
                if response.status != 200:
                    raise AccessCheckFailed(f"{where}: HTTP {response.status} {response.reason or ''}".rstrip())
        except AccessCheckFailed:
            raise
        except TimeoutError as exc:
            raise AccessCheckFailed(f"{where}: no answer within {self.timeout:g} s") from exc
        except aiohttp.ClientError as exc:
            raise AccessCheckFailed(f"{where}: chain unreachable ({type(exc).__name__}: {exc})") from exc
        except OSError as exc:
            raise AccessCheckFailed(f"{where}: chain unreachable ({exc})") from exc
        try:
            answer = json.loads(body)
        except ValueError as exc:
            raise AccessCheckFailed(f"{where}: answer is not JSON: {body[:80]!r}") from exc
        if not isinstance(answer, dict):
            raise AccessCheckFailed(f"{where}: answer is not a JSON-RPC object")
        if answer.get("error") is not None:
            error = answer["error"]
            detail = f"{error.get('code')}: {error.get('message')}" if isinstance(error, dict) else str(error)
            raise AccessCheckFailed(f"{where}: JSON-RPC error {detail}"[:300])
        if "result" not in answer:
            raise AccessCheckFailed(f"{where}: JSON-RPC answer has neither result nor error")
        try:
            return decode_bool_word(answer["result"])
        except AccessCheckFailed as exc:
            raise AccessCheckFailed(f"{where}: {exc.detail}") from None

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
