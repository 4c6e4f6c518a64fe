"""The chain reads of the contract access checker: a raw ``eth_call`` of
``checkPermissions(address,bytes32)`` on an ACL contract (AccessSecretStoreCondition, protocol.md
§4.1), and the first registrant of a DID in the DIDRegistry behind it (``eth_getLogs``).

No web3 here: calldata and topics are 32-byte words encoded by hand, and every call goes over one
kept-alive aiohttp session (about 0.8 ms on loopback against 4.4 ms for a web3 contract call;
architecture.md "Decisions already measured"). A permission is asked for afresh every time: a
positive answer is never cached. A DID's first registrant never changes once it is on chain, so
it is cached once found (and "not registered yet" never is). A chain that does not answer raises
:class:`~ocean_secret_store.exceptions.ChainUnreachable`, and anything but a well-formed answer
raises :class:`ChainQueryFailed`; the node's access checker (``node.acl``) turns both into a refusal.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import OrderedDict
from typing import Any

import aiohttp

from ..exceptions import ChainError, ChainUnreachable
from ..protocol.hexcodec import parse_hex, to_hex

#: keccak256("checkPermissions(address,bytes32)")[:4] — AccessSecretStoreCondition's Parity ACL hook.
CHECK_PERMISSIONS_SELECTOR = bytes.fromhex("b36a9a7c")
#: The selector and the 12 zero bytes that left-pad the address word: the fixed head of every call.
_CALLDATA_HEAD = "0x" + (CHECK_PERMISSIONS_SELECTOR + bytes(12)).hex()
#: keccak256("getDIDRegistryAddress()")[:4] — AgreementStoreManager's getter of its DIDRegistry.
GET_DID_REGISTRY_SELECTOR = bytes.fromhex("579e6e3f")
#: topic0 of DIDRegistry's ``DIDAttributeRegistered(bytes32 indexed _did, address indexed _owner,
#: bytes32 indexed _checksum, string _value, address _lastUpdatedBy, uint256 _blockNumberUpdated)``
#: (keeper-contracts 0.13.2): topic1 is the DID, topic2 the owner who registered.
DID_ATTRIBUTE_REGISTERED_TOPIC = bytes.fromhex("8f8b755e50eb4efaa1a82e62cbfe4c58d83374b2f20db5960764ba69e062ae43")
#: The storage slot of AccessSecretStoreCondition's private ``agreementStoreManager`` in
#: keeper-contracts 0.13.2: Initializable (2 bools + a 50-word gap: slots 0-50), Ownable (owner +
#: a 50-word gap: 51-101), Condition's conditionStoreManager (102), documentPermissions (103). The
#: contract has no getter for it; the same layout holds behind a zos proxy (the proxy's own fields
#: live in hashed slots).
AGREEMENT_STORE_MANAGER_SLOT = 104


class ChainQueryFailed(ChainError):
    """A chain read gave no usable answer: bad arguments, a JSON-RPC error, or a malformed result."""


class PermissionQueryFailed(ChainQueryFailed):
    """``checkPermissions`` gave no usable answer: bad arguments, a JSON-RPC error, or not a boolean."""


class RegistryQueryFailed(ChainQueryFailed):
    """The DID registry behind the ACL contract, or a DID's registrations, could not be read."""


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


def decode_address_word(result: Any, what: str) -> bytes:
    """The non-zero address in one 32-byte ABI word (12 zero bytes, then 20), else RegistryQueryFailed."""
    word = parse_hex(result, what, 32, error=RegistryQueryFailed)
    if any(word[:12]):
        raise RegistryQueryFailed(f"{what} is not an address (its upper 12 bytes are not zero)")
    if not any(word[12:]):
        raise RegistryQueryFailed(f"{what} is the zero address")
    return word[12:]


def _quantity(value: Any, what: str) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise RegistryQueryFailed(f"{what} is not a 0x quantity: {str(value)[:40]!r}")
    try:
        return int(value, 16)
    except ValueError as exc:
        raise RegistryQueryFailed(f"{what} is not a 0x quantity: {value[:40]!r}") from exc


def first_registration_owner(logs: Any, did: bytes) -> bytes | None:
    """The ``_owner`` of the earliest ``DIDAttributeRegistered`` log of ``did`` in an eth_getLogs
    result (ordered by block, then log index), or None when there is none."""
    if not isinstance(logs, list):
        raise RegistryQueryFailed("eth_getLogs answer is not a list")
    first: tuple[int, int, bytes] | None = None
    for entry in logs:
        if not isinstance(entry, dict):
            raise RegistryQueryFailed("an eth_getLogs entry is not an object")
        if entry.get("removed"):
            continue  # a log of a block that was reorganised away
        topics = entry.get("topics")
        if not isinstance(topics, list) or len(topics) != 4:
            raise RegistryQueryFailed("a DIDAttributeRegistered log must have 4 topics")
        if (parse_hex(topics[0], "topic0", 32, error=RegistryQueryFailed) != DID_ATTRIBUTE_REGISTERED_TOPIC
                or parse_hex(topics[1], "the _did topic", 32, error=RegistryQueryFailed) != did):
            raise RegistryQueryFailed("eth_getLogs answered with a log of another event or DID")
        owner = decode_address_word(topics[2], "the _owner topic")
        position = (_quantity(entry.get("blockNumber"), "blockNumber"), _quantity(entry.get("logIndex"), "logIndex"))
        if first is None or position < first[:2]:
            first = (*position, owner)
    return None if first is None else first[2]


class JsonRpcReader:
    """Read-only JSON-RPC calls to an ``http(s)://`` ``chain_url`` over one kept-alive aiohttp session.

    The session is created lazily inside the running loop and reused; ``close()`` ends it.
    """

    def __init__(self, chain_url: str, *, timeout: float = 2.0) -> None:
        self.chain_url = chain_url
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"JsonRpcReader({self.chain_url!r})"

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

    async def _post(self, payload: bytes, where: str, error: type[ChainQueryFailed]) -> bytes:
        try:
            async with self._client().post(self.chain_url, data=payload) as response:
                body = await response.read()
                if response.status != 200:
                    raise error(f"{where}: HTTP {response.status} {response.reason or ''}".rstrip())
                return body
        except TimeoutError as exc:
            raise ChainUnreachable(f"{where}: no answer within {self.timeout:g} s", url=self.chain_url) from exc
        except aiohttp.ClientError as exc:
            raise ChainUnreachable(f"{where}: chain unreachable ({type(exc).__name__}: {exc})",
                                   url=self.chain_url) from exc
        except OSError as exc:
            raise ChainUnreachable(f"{where}: chain unreachable ({exc})", url=self.chain_url) from exc

    async def call(self, method: str, params: list[Any], *, where: str,
                   error: type[ChainQueryFailed] = ChainQueryFailed) -> Any:
        """The ``result`` of one JSON-RPC call; ``where`` opens every error message, ``error`` is its class."""
        payload = json.dumps({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}).encode()
        body = await self._post(payload, where, error)
        try:
            answer = json.loads(body)
        except ValueError as exc:
            raise error(f"{where}: answer is not JSON: {body[:80]!r}") from exc
        if not isinstance(answer, dict):
            raise error(f"{where}: answer is not a JSON-RPC object")
        if answer.get("error") is not None:
            failure = answer["error"]
            detail = f"{failure.get('code')}: {failure.get('message')}" if isinstance(failure, dict) else str(failure)
            raise error(f"{where}: JSON-RPC error {detail}"[:300])
        if "result" not in answer:
            raise error(f"{where}: JSON-RPC answer has neither result nor error")
        return answer["result"]

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


class PermissionQuery:
    """``checkPermissions`` of the contract at the 20-byte address ``contract``, asked over JSON-RPC
    (an ``http(s)://`` ``chain_url``), through ``rpc`` (a reader of its own when not given).
    """

    def __init__(self, chain_url: str, contract: bytes, *, timeout: float = 2.0,
                 rpc: JsonRpcReader | None = None) -> None:
        self.rpc = rpc if rpc is not None else JsonRpcReader(chain_url, timeout=timeout)
        self.chain_url = chain_url
        self.contract = contract
        self._to = to_hex(contract)
        self._where = f"checkPermissions at {self._to} via {chain_url}"

    def __repr__(self) -> str:
        return f"PermissionQuery({self.chain_url!r}, {self._to})"

    async def check_permissions(self, requester: bytes, key_id: bytes) -> bool:
        """True iff the contract says ``requester`` may use ``key_id`` on the latest block."""
        result = await self.rpc.call(
            "eth_call", [{"to": self._to, "data": check_permissions_calldata(requester, key_id)}, "latest"],
            where=self._where, error=PermissionQueryFailed,
        )
        try:
            return decode_bool_word(result)
        except PermissionQueryFailed as exc:
            raise PermissionQueryFailed(f"{self._where}: {exc}") from None

    async def close(self) -> None:
        await self.rpc.close()


class FirstRegistrants:
    """Who registered each DID first in the DIDRegistry of keeper-contracts 0.13.2: the ``_owner``
    of the DID's earliest ``DIDAttributeRegistered`` event. A later ownership transfer or attribute
    update does not change it.

    The registry is the one the ACL contract ``acl_contract`` (an AccessSecretStoreCondition) itself
    consults, found on chain once (its AgreementStoreManager's ``getDIDRegistryAddress()``), unless
    ``registry`` names it. Logs are searched from ``from_block`` (the registry's deployment block,
    when known). A first registrant, once found, is cached (up to ``cache_size`` DIDs, least
    recently used first out); "not registered yet" is never cached.
    """

    def __init__(self, rpc: JsonRpcReader, acl_contract: bytes, *, registry: bytes | None = None,
                 from_block: int = 0, cache_size: int = 65536) -> None:
        if registry is not None and len(registry) != 20:
            raise RegistryQueryFailed(f"a DID registry address is 20 bytes, got {len(registry)}")
        self.rpc = rpc
        self.acl_contract = acl_contract
        self.from_block = from_block
        self.cache_size = cache_size
        self._registry = registry
        self._first: OrderedDict[bytes, bytes] = OrderedDict()
        #: eth_getLogs queries made (the cost of the binding: one per DID until its registrant is known)
        self.log_queries = 0

    def __repr__(self) -> str:
        registry = to_hex(self._registry) if self._registry else "not found yet"
        return f"FirstRegistrants(acl {to_hex(self.acl_contract)}, registry {registry})"

    async def registry(self) -> bytes:
        """The DIDRegistry's address, found once: ACL contract -> its AgreementStoreManager -> registry."""
        if self._registry is not None:
            return self._registry
        acl = to_hex(self.acl_contract)
        where = f"the DIDRegistry behind {acl} via {self.rpc.chain_url}"
        slot = await self.rpc.call("eth_getStorageAt", [acl, hex(AGREEMENT_STORE_MANAGER_SLOT), "latest"],
                                   where=where, error=RegistryQueryFailed)
        try:
            manager = decode_address_word(slot, f"{acl}'s agreementStoreManager (storage slot "
                                                f"{AGREEMENT_STORE_MANAGER_SLOT})")
            answer = await self.rpc.call(
                "eth_call", [{"to": to_hex(manager), "data": "0x" + GET_DID_REGISTRY_SELECTOR.hex()}, "latest"],
                where=where, error=RegistryQueryFailed)
            registry = decode_address_word(answer, f"getDIDRegistryAddress() of {to_hex(manager)}")
            code = await self.rpc.call("eth_getCode", [to_hex(registry), "latest"], where=where,
                                       error=RegistryQueryFailed)
        except RegistryQueryFailed as exc:
            message = str(exc) if str(exc).startswith(where) else f"{where}: {exc}"
            raise RegistryQueryFailed(
                f"{message} (is the ACL contract keeper-contracts 0.13.2's AccessSecretStoreCondition?)") from None
        if not isinstance(code, str) or code in ("0x", "0x0", ""):
            raise RegistryQueryFailed(f"{where}: no contract code at {to_hex(registry)}")
        self._registry = registry
        return registry

    async def first_registrant(self, did: bytes) -> bytes | None:
        """The 20-byte address that registered ``did`` first, or None if it is not registered (yet)."""
        if len(did) != 32:
            raise RegistryQueryFailed(f"a DID id is 32 bytes, got {len(did)}")
        cached = self._first.get(did)
        if cached is not None:
            self._first.move_to_end(did)
            return cached
        registry = to_hex(await self.registry())
        self.log_queries += 1
        logs = await self.rpc.call(
            "eth_getLogs",
            [{"address": registry, "fromBlock": hex(self.from_block), "toBlock": "latest",
              "topics": ["0x" + DID_ATTRIBUTE_REGISTERED_TOPIC.hex(), to_hex(did)]}],
            where=f"DIDAttributeRegistered logs of {registry} via {self.rpc.chain_url}", error=RegistryQueryFailed,
        )
        owner = first_registration_owner(logs, did)
        if owner is not None:
            self._first[did] = owner
            while len(self._first) > self.cache_size:
                self._first.popitem(last=False)
        return owner

    async def close(self) -> None:
        await self.rpc.close()
