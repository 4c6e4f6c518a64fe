"""Parity-compatible JSON-RPC face: ``secretstore_*`` and keystore signing here, chain reads forwarded.

Parity-era programs (Ocean's ``secret-store-client-py``, squid-py, Brizo, ocean-keeper) expected
an Ethereum node that also answered Parity's ``secretstore_*`` helpers (protocol.md §3) for
accounts in its keystore. This aiohttp server is that node's face (method list: docs/rpc.md):

* served here, for accounts from a directory of v3 keystore files (:mod:`.keystore`): the six
  ``secretstore_*`` methods with Parity's parameter order, ``0x``-hex formats and result shapes,
  each call unlocked by the password it carries (cached after the first unlock, so a call costs
  microseconds, not a KDF); ``personal_sign``; ``personal_sendTransaction`` (ocean-keeper sends
  its transactions with a ``passphrase``) and ``eth_sendTransaction``, signed here and sent to the
  chain as ``eth_sendRawTransaction`` (:mod:`.transactions`); ``eth_sign``; ``eth_accounts``,
  ``personal_listAccounts`` and ``web3_clientVersion``;
* forwarded verbatim to the chain's JSON-RPC URL over a kept-alive connection: only
  :data:`FORWARDED_METHODS`, the chain reads and filters plus ``eth_sendRawTransaction``;
* refused with :data:`METHOD_NOT_FOUND` and a message saying why: everything else, in particular
  the chain's cheat codes (``anvil_*``, ``evm_*``, ``hardhat_*``), ``debug_*``, ``admin_*``, other
  ``personal_*`` methods; signing for an account the keystore does not hold is refused with
  :data:`ACCOUNT_ERROR` and never forwarded (the chain's own unlocked accounts stay out of reach).

``personal_unlockAccount`` (and so ``eth_sign``/``eth_sendTransaction``, which need an unlocked
account) is refused unless the operator enables it (``allow_unlock``, ``rpc --allow-unlock``);
an unlock is then, as Parity's, global: every client of the face can sign as that account until
the duration given in the call runs out. Wrong passwords are answered after a growing delay per
account and per client address (:mod:`.throttle`).

Errors are JSON-RPC 2.0 error objects (HTTP 200): the standard codes for malformed requests and
parameters, Parity's application codes for account problems (:data:`ACCOUNT_LOCKED`,
:data:`PASSWORD_INVALID`, :data:`ACCOUNT_ERROR`, :data:`ENCRYPTION_ERROR`), :data:`LIMIT_EXCEEDED`
for too many password checks in flight from one address. Messages name the method, the parameter
or the account; they never contain passwords, keys or documents, and nothing but method names and
error codes is logged.

Like Parity's ``jsonrpc-http-server``, requests must be ``Content-Type: application/json``: this
keeps browsers from reaching the account methods with a CORS-free "simple" request.

``GET /metrics`` is the face's Prometheus metrics (:mod:`ocean_secret_store.metrics`,
docs/metrics.md): calls by method and outcome (a method name outside the served and forwarded
ones counts as ``other``), HTTP requests by route and status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import aiohttp
from aiohttp import web

from ..crypto.curve import Point
from ..crypto.hashes import checksum_address
from ..exceptions import ChainError, CryptoError, InvalidPoint, MalformedHex, SecretStoreError
from ..keyfile import KeystoreError
from ..lifecycle import wait_for_stop_signal
from ..metrics import METRICS_PATH, RpcMetrics, metrics_handler, service_registry
from ..protocol.hexcodec import parse_hex, to_hex
from ..serving import GuardedAppRunner, ServingLimits, TlsFiles, guarded_site
from . import local
from .keystore import Keystore, UnknownAccount
from .throttle import PasswordThrottle, TooManyAttempts, WrongPasswordDelayed
from .transactions import (
    InvalidTransaction,
    TransactionRequest,
    complete_transaction,
    parse_transaction,
    sign_transaction,
)

if TYPE_CHECKING:
    import os

    from eth_account.signers.local import LocalAccount
    from prometheus_client import CollectorRegistry

__all__ = [
    "ACCOUNT_ERROR",
    "ACCOUNT_LOCKED",
    "ENCRYPTION_ERROR",
    "FORWARDED_METHODS",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "LIMIT_EXCEEDED",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "PASSWORD_INVALID",
    "JsonRpcError",
    "make_rpc_app",
    "serve_rpc",
]

log = logging.getLogger(__name__)

# JSON-RPC 2.0 codes.
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
# Parity's application codes (rpc/src/v1/helpers/errors.rs), kept so old clients classify them alike.
ACCOUNT_LOCKED: Final = -32020
PASSWORD_INVALID: Final = -32021
ACCOUNT_ERROR: Final = -32023
ENCRYPTION_ERROR: Final = -32055
#: EIP-1474's "limit exceeded": too many password checks in flight from one client address.
LIMIT_EXCEEDED: Final = -32005

#: What the face forwards to the chain, verbatim: reads, filters, and already signed transactions.
#: Anything else that is not served here is refused (never the chain's cheat codes, its admin and
#: debug methods, or signing with the chain's own unlocked accounts).
FORWARDED_METHODS: Final = frozenset({
    "eth_blockNumber", "eth_call", "eth_chainId", "eth_estimateGas", "eth_feeHistory", "eth_gasPrice",
    "eth_getBalance", "eth_getBlockByHash", "eth_getBlockByNumber", "eth_getBlockTransactionCountByHash",
    "eth_getBlockTransactionCountByNumber", "eth_getCode", "eth_getLogs", "eth_getProof", "eth_getStorageAt",
    "eth_getTransactionByBlockHashAndIndex", "eth_getTransactionByBlockNumberAndIndex",
    "eth_getTransactionByHash", "eth_getTransactionCount", "eth_getTransactionReceipt",
    "eth_maxPriorityFeePerGas", "eth_protocolVersion", "eth_syncing", "net_listening", "net_peerCount",
    "net_version", "web3_sha3",
    "eth_getFilterChanges", "eth_getFilterLogs", "eth_newBlockFilter", "eth_newFilter",
    "eth_newPendingTransactionFilter", "eth_uninstallFilter",
    "eth_sendRawTransaction",
})

#: The outcome label of each error code in the calls metric (docs/metrics.md); any other code is ``error``.
OUTCOMES: Final = {
    PARSE_ERROR: "parse_error", INVALID_REQUEST: "invalid_request", METHOD_NOT_FOUND: "method_not_found",
    INVALID_PARAMS: "invalid_params", INTERNAL_ERROR: "internal_error", ACCOUNT_LOCKED: "account_locked",
    PASSWORD_INVALID: "password_invalid", ACCOUNT_ERROR: "account_error", ENCRYPTION_ERROR: "encryption_error",
    LIMIT_EXCEEDED: "limit_exceeded",
}

#: Parity's default ``--jsonrpc-max-payload`` is 5 MiB; documents travel hex-encoded, so allow more.
MAX_REQUEST_BYTES: Final = 16 * 1024 * 1024
#: ``personal_unlockAccount`` without a duration unlocks for this long (geth's default).
DEFAULT_UNLOCK_SECONDS: Final = 300
#: Upper bound for a forwarded call (the chain is local; this only bounds a hung endpoint).
CHAIN_TIMEOUT_SECONDS: Final = 60.0
DEFAULT_LISTEN: Final = "127.0.0.1:8545"
#: ``web3_clientVersion``: answered here, so the chain's software and version are not advertised.
CLIENT_VERSION: Final = "OceanSecretStore/rpc-face/Parity-compatible"

JsonObject: TypeAlias = dict[str, Any]


class JsonRpcError(SecretStoreError):
    """A JSON-RPC error object to answer with: ``code`` and a message that names the problem."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{message} ({code})")

    def to_json(self) -> JsonObject:
        return {"code": self.code, "message": self.message}


def _error(request_id: object, code: int, message: str) -> JsonObject:
    return {"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": request_id}


def _short(name: str) -> str:
    # Method names are echoed in messages; a client's garbage should not fill the log or the reply.
    return name if len(name) <= 64 else name[:61] + "..."


# -- parameters ----------------------------------------------------------------------------------


def _positional(method: str, params: object, names: Sequence[str], optional: int = 0) -> list[Any]:
    """The parameter list, checked for its length; ``optional`` trailing parameters may be left out."""
    if params is None:
        params = []
    if not isinstance(params, list):
        raise JsonRpcError(INVALID_PARAMS, f"Invalid params: {method} takes its parameters as a JSON array")
    required = len(names) - optional
    if not required <= len(params) <= len(names):
        expected = str(len(names)) if not optional else f"{required} to {len(names)}"
        listed = f" [{', '.join(names)}]" if names else ""
        raise JsonRpcError(
            INVALID_PARAMS,
            f"Invalid params: {method} expects {expected} parameters{listed}, got {len(params)}",
        )
    return params + [None] * (len(names) - len(params))


def _invalid_params(message: str) -> JsonRpcError:
    return JsonRpcError(INVALID_PARAMS, f"Invalid params: {message}")


def _hex(value: object, name: str, size: int | None = None) -> bytes:
    return parse_hex(value, name, size, error=_invalid_params)


def _address(value: object, name: str) -> bytes:
    return _hex(value, name, 20)


def _password(value: object, name: str = "password") -> str:
    if not isinstance(value, str):
        raise JsonRpcError(
            INVALID_PARAMS, f"Invalid params: {name} must be a string, got {type(value).__name__}"
        )
    return value


def _point(value: object, name: str) -> None:
    try:
        Point.from_bytes(_hex(value, name, 64))
    except InvalidPoint:
        raise JsonRpcError(INVALID_PARAMS, f"Invalid params: {name} is not a point on secp256k1") from None


def _hex_list(value: object, name: str, size: int | None = None) -> None:
    if not isinstance(value, list):
        raise JsonRpcError(
            INVALID_PARAMS, f"Invalid params: {name} must be a JSON array of 0x-prefixed hex strings"
        )
    for index, item in enumerate(value):
        _hex(item, f"{name}[{index}]", size)


def _duration(value: object) -> float | None:
    """Seconds to stay unlocked (None: until the server stops), from a number or a 0x-hex quantity."""
    if value is None:
        return float(DEFAULT_UNLOCK_SECONDS)
    seconds: int
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and value.startswith("0x") and len(value) > 2:
        try:
            seconds = int(value, 0)  # the 0x prefix was checked: base 16
        except ValueError:
            raise JsonRpcError(INVALID_PARAMS, "Invalid params: duration is not a hex quantity") from None
    else:
        raise JsonRpcError(
            INVALID_PARAMS, "Invalid params: duration must be a number of seconds or a 0x-hex quantity"
        )
    if seconds < 0:
        raise JsonRpcError(INVALID_PARAMS, "Invalid params: duration must not be negative")
    return None if seconds == 0 else float(seconds)


def _transaction(value: object) -> TransactionRequest:
    try:
        return parse_transaction(value)
    except InvalidTransaction as exc:
        raise _invalid_params(f"transaction: {exc}") from None


def _personal_sign(account: LocalAccount, data: bytes) -> str:
    """EIP-191 ``personal_sign``/``eth_sign`` (version ``E``), v = 27/28 as Parity answers."""
    from eth_account.messages import encode_defunct  # noqa: PLC0415 -- ~0.3 s; the face answers before any unlock

    return to_hex(bytes(account.sign_message(encode_defunct(primitive=data)).signature))


# -- the service ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unlocked:
    account: LocalAccount
    expires: float | None  # time.monotonic() deadline; None: until the server stops


Handler: TypeAlias = Callable[[object, str], Awaitable[Any]]
_FORWARD: Final = object()
_UNKNOWN_CLIENT: Final = "unknown"


def _not_served(method: str) -> str:
    return (
        f"Method not found: {_short(method)} is not served by this JSON-RPC face and not forwarded to the chain "
        "(it forwards only chain reads, filters and eth_sendRawTransaction; see docs/rpc.md)"
    )


class RpcService:
    """The request handling behind :func:`make_rpc_app` (one per app; owns the chain session)."""

    def __init__(self, keystore: Keystore, chain_url: str | None, *, allow_unlock: bool = False,
                 throttle: PasswordThrottle | None = None, registry: CollectorRegistry | None = None) -> None:
        self.keystore = keystore
        self.chain_url = chain_url or None
        self.allow_unlock = allow_unlock
        self.throttle = throttle if throttle is not None else PasswordThrottle()
        self._session: aiohttp.ClientSession | None = None
        self._unlocked: dict[bytes, _Unlocked] = {}
        self._senders: dict[bytes, asyncio.Lock] = {}
        self._methods: dict[str, Handler] = {
            "secretstore_generateDocumentKey": self._generate_document_key,
            "secretstore_encrypt": self._encrypt,
            "secretstore_decrypt": self._decrypt,
            "secretstore_shadowDecrypt": self._shadow_decrypt,
            "secretstore_serversSetHash": self._servers_set_hash,
            "secretstore_signRawHash": self._sign_raw_hash,
            "eth_accounts": self._eth_accounts,
            "personal_listAccounts": self._eth_accounts,
            "web3_clientVersion": self._client_version,
            "eth_sign": self._eth_sign,
            "eth_sendTransaction": self._eth_send_transaction,
            "personal_sign": self._personal_sign,
            "personal_sendTransaction": self._personal_send_transaction,
            "personal_unlockAccount": self._personal_unlock_account,
        }
        #: Calls by method (the names above and the forwarded ones; others are ``other``) and outcome.
        self.metrics = RpcMetrics(self._methods.keys() | FORWARDED_METHODS, OUTCOMES, registry)

    async def start(self) -> None:
        if self.chain_url is not None and self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CHAIN_TIMEOUT_SECONDS))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- accounts --

    async def _unlock(self, address: bytes, password: str, client: str) -> LocalAccount:
        """The keystore account for ``password``; wrong passwords are slowed down (:mod:`.throttle`)."""
        self._keystore_account(address)

        async def check() -> LocalAccount:
            account = self.keystore.unlock_cached(address, password)
            if account is None:
                # A first unlock runs the keystore KDF: keep it off the event loop.
                account = await asyncio.to_thread(self.keystore.unlock, address, password)
            return account

        try:
            return await self.throttle.attempt(address, client, check)
        except UnknownAccount:
            raise JsonRpcError(ACCOUNT_ERROR, self._unknown(address)) from None
        except WrongPasswordDelayed as exc:
            raise JsonRpcError(
                PASSWORD_INVALID,
                f"Account password is invalid: wrong password for account {checksum_address(address)} "
                f"(answered after {exc.delay:.2f} s: wrong passwords are slowed down per account and per client)",
            ) from None
        except TooManyAttempts as exc:
            raise JsonRpcError(LIMIT_EXCEEDED, f"Limit exceeded: {exc}; wait for the answers") from None
        except KeystoreError as exc:
            raise JsonRpcError(ACCOUNT_ERROR, f"Account error: {exc}") from None

    @staticmethod
    def _unknown(address: bytes) -> str:
        return f"Unknown account {checksum_address(address)}: no keystore file holds it"

    def _keystore_account(self, address: bytes) -> None:
        """Return if the keystore holds ``address``: the face signs for nobody else, and never asks the chain to."""
        if address not in self.keystore:
            raise JsonRpcError(
                ACCOUNT_ERROR,
                f"{self._unknown(address)} (this face signs only for its keystore accounts, never through the chain)",
            )

    def _unlocked_account(self, address: bytes, how: str) -> LocalAccount:
        """The account unlocked with ``personal_unlockAccount``; ``how`` names the password-taking alternative."""
        self._keystore_account(address)
        entry = self._unlocked.get(address)
        if entry is not None and entry.expires is not None and time.monotonic() >= entry.expires:
            del self._unlocked[address]
            entry = None
        if entry is None:
            unlock = "with personal_unlockAccount, " if self.allow_unlock else ""
            raise JsonRpcError(
                ACCOUNT_LOCKED,
                f"Your account is locked: unlock {checksum_address(address)} {unlock}or use {how} with its password",
            )
        return entry.account

    # -- secretstore_* (protocol.md §3) --

    async def _generate_document_key(self, params: object, client: str) -> JsonObject:
        values = _positional(
            "secretstore_generateDocumentKey", params, ("account", "password", "server_key_public")
        )
        address, password = _address(values[0], "account"), _password(values[1])
        _point(values[2], "server_key_public")
        account = await self._unlock(address, password, client)
        return local.rpc_generate_document_key(account, values[2])

    async def _encrypt(self, params: object, client: str) -> str:
        return await self._with_key_and_data("secretstore_encrypt", params, client, local.rpc_encrypt)

    async def _decrypt(self, params: object, client: str) -> str:
        return await self._with_key_and_data("secretstore_decrypt", params, client, local.rpc_decrypt)

    async def _with_key_and_data(self, method: str, params: object, client: str,
                                 operation: Callable[[LocalAccount, str, str], str]) -> str:
        """``[account, password, key, data]``: the two methods differ only in what they do with them."""
        values = _positional(method, params, ("account", "password", "key", "data"))
        address, password = _address(values[0], "account"), _password(values[1])
        _hex(values[2], "key")
        _hex(values[3], "data")
        account = await self._unlock(address, password, client)
        return operation(account, values[2], values[3])

    async def _shadow_decrypt(self, params: object, client: str) -> str:
        names = ("account", "password", "decrypted_secret", "common_point", "decrypt_shadows", "data")
        values = _positional("secretstore_shadowDecrypt", params, names)
        address, password = _address(values[0], "account"), _password(values[1])
        _point(values[2], "decrypted_secret")
        _point(values[3], "common_point")
        _hex_list(values[4], "decrypt_shadows")
        _hex(values[5], "data")
        account = await self._unlock(address, password, client)
        return local.rpc_shadow_decrypt(account, values[2], values[3], values[4], values[5])

    async def _servers_set_hash(self, params: object, _client: str) -> str:
        (servers_set,) = _positional("secretstore_serversSetHash", params, ("servers_set",))
        # Parity hashes the 64-byte ids without checking that they are points; so do we.
        _hex_list(servers_set, "servers_set", 64)
        return local.rpc_servers_set_hash(servers_set)

    async def _sign_raw_hash(self, params: object, client: str) -> str:
        values = _positional("secretstore_signRawHash", params, ("account", "password", "raw_hash"))
        address, password = _address(values[0], "account"), _password(values[1])
        _hex(values[2], "raw_hash", 32)
        account = await self._unlock(address, password, client)
        return local.rpc_sign_raw_hash(account, values[2])

    # -- eth_* / personal_* / web3_* for keystore accounts --

    async def _eth_accounts(self, params: object, _client: str) -> list[str]:
        _positional("eth_accounts", params, ())
        return self.keystore.addresses()

    async def _client_version(self, params: object, _client: str) -> str:
        _positional("web3_clientVersion", params, ())
        return CLIENT_VERSION

    async def _eth_sign(self, params: object, _client: str) -> str:
        values = _positional("eth_sign", params, ("address", "data"))
        address = _address(values[0], "address")
        data = _hex(values[1], "data")
        return _personal_sign(self._unlocked_account(address, "personal_sign"), data)

    async def _personal_sign(self, params: object, client: str) -> str:
        values = _positional("personal_sign", params, ("data", "address", "password"))
        data = _hex(values[0], "data")
        address = _address(values[1], "address")
        password = _password(values[2])
        return _personal_sign(await self._unlock(address, password, client), data)

    async def _personal_unlock_account(self, params: object, client: str) -> bool:
        if not self.allow_unlock:
            raise JsonRpcError(
                METHOD_NOT_FOUND,
                "Method not found: personal_unlockAccount is disabled on this face (an unlock would let every "
                "client sign as the account; the operator enables it with rpc --allow-unlock). Methods that take "
                "the password (personal_sign, personal_sendTransaction, secretstore_*) need no unlock",
            )
        values = _positional(
            "personal_unlockAccount", params, ("address", "password", "duration"), optional=1
        )
        address = _address(values[0], "address")
        password = _password(values[1])
        duration = _duration(values[2])
        account = await self._unlock(address, password, client)
        expires = None if duration is None else time.monotonic() + duration
        self._unlocked[address] = _Unlocked(account, expires)
        return True

    async def _eth_send_transaction(self, params: object, _client: str) -> str:
        (transaction,) = _positional("eth_sendTransaction", params, ("transaction",))
        request = _transaction(transaction)
        return await self._send(request, self._unlocked_account(request.sender, "personal_sendTransaction"))

    async def _personal_send_transaction(self, params: object, client: str) -> str:
        transaction, password = _positional("personal_sendTransaction", params, ("transaction", "password"))
        request = _transaction(transaction)
        password = _password(password)
        return await self._send(request, await self._unlock(request.sender, password, client))

    async def _send(self, request: TransactionRequest, account: LocalAccount) -> str:
        """Complete, sign and send as ``eth_sendRawTransaction``; the chain's transaction hash."""
        if self.chain_url is None:
            raise JsonRpcError(
                METHOD_NOT_FOUND, "Method not found: sending a transaction needs a chain URL, and none is configured"
            )
        # One transaction of an account at a time: each takes the nonce after the previous one's.
        sender = request.sender
        lock = self._senders.setdefault(sender, asyncio.Lock())  # one per keystore account: bounded
        async with lock:
            try:
                tx = await complete_transaction(request, self._chain_call)
                raw = sign_transaction(account, tx)
            except InvalidTransaction as exc:
                raise _invalid_params(str(exc)) from None
            result = await self._chain_call("eth_sendRawTransaction", [raw])
        log.info("sent a transaction of %s", checksum_address(sender))
        return str(result)

    # -- dispatch --

    async def call(self, item: object, client: str = _UNKNOWN_CLIENT) -> JsonObject | object | None:
        """One request object -> its response object, None for a notification, or ``_FORWARD``; counted."""
        started = time.perf_counter()
        answer = await self._answer(item, client)
        method = item.get("method") if isinstance(item, dict) else None
        if answer is _FORWARD:
            self.metrics.forwarded(method)
        elif isinstance(answer, dict):
            error = answer.get("error")
            code = error.get("code") if isinstance(error, dict) else None
            self.metrics.answered(method, code, time.perf_counter() - started)
        else:
            self.metrics.notified(method)
        return answer

    async def _answer(self, item: object, client: str) -> JsonObject | object | None:
        if not isinstance(item, dict):
            return _error(None, INVALID_REQUEST, "Invalid request: a request must be a JSON object")
        has_id = "id" in item
        request_id = item.get("id")
        if request_id is not None and (
            isinstance(request_id, bool) or not isinstance(request_id, (str, int, float))
        ):
            return _error(None, INVALID_REQUEST, "Invalid request: id must be a string, a number or null")
        if "jsonrpc" in item and item["jsonrpc"] != "2.0":
            return _error(request_id, INVALID_REQUEST, 'Invalid request: jsonrpc must be "2.0"')
        method = item.get("method")
        if not isinstance(method, str):
            return _error(request_id, INVALID_REQUEST, "Invalid request: method must be a string")
        handler = self._methods.get(method)
        response: JsonObject
        if handler is None:
            if method not in FORWARDED_METHODS:
                log.info("refused %s", _short(method))
                response = _error(request_id, METHOD_NOT_FOUND, _not_served(method))
            elif self.chain_url is not None:
                return _FORWARD
            else:
                response = _error(
                    request_id,
                    METHOD_NOT_FOUND,
                    f"Method not found: {method} (not answered here, and no chain URL is configured)",
                )
        else:
            try:
                result = await handler(item.get("params"), client)
            except JsonRpcError as exc:
                log.debug("%s -> error %d", method, exc.code)
                response = _error(request_id, exc.code, exc.message)
            except MalformedHex as exc:
                response = _error(request_id, INVALID_PARAMS, f"Invalid params: {exc}")
            except CryptoError as exc:
                # Our crypto errors name lengths and positions, never secret values (exceptions.py).
                log.debug("%s -> encryption error %s", method, type(exc).__name__)
                response = _error(request_id, ENCRYPTION_ERROR, f"Encryption error: {exc}")
            except ChainError as exc:
                log.warning("%s: the chain's answer was unusable: %s", method, exc)
                response = _error(request_id, INTERNAL_ERROR, f"Internal error: {exc}")
            except Exception as exc:  # noqa: BLE001 - a request must get an answer, whatever broke
                log.error("%s failed: %s", method, type(exc).__name__)
                response = _error(request_id, INTERNAL_ERROR, f"Internal error while handling {method}")
            else:
                response = {"jsonrpc": "2.0", "result": result, "id": request_id}
        return response if has_id else None

    async def _post_chain(self, body: bytes) -> tuple[int, str, bytes]:
        if self._session is None:
            await self.start()
        if self.chain_url is None or self._session is None:
            raise RuntimeError("a call was forwarded although no chain URL is configured")
        async with self._session.post(
            self.chain_url, data=body, headers={"Content-Type": "application/json"}
        ) as response:
            return response.status, response.content_type, await response.read()

    async def _chain_call(self, method: str, params: list[Any]) -> Any:
        """The chain's ``result`` for a call the face makes itself; its error object becomes ours."""
        request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        try:
            _, _, body = await self._post_chain(json.dumps(request).encode("utf-8"))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            failure = self._chain_failed(None, exc)["error"]
            raise JsonRpcError(failure["code"], failure["message"]) from None
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
            error = answer["error"]
            code = error.get("code")
            message = error.get("message")
            raise JsonRpcError(
                code if isinstance(code, int) and not isinstance(code, bool) else INTERNAL_ERROR,
                f"{method}: {message if isinstance(message, str) else 'the chain answered with an error'}",
            )
        if not isinstance(answer, dict) or "result" not in answer:
            raise ChainError(f"the chain answered {method} with no JSON-RPC result")
        return answer["result"]

    @staticmethod
    def _chain_failed(request_id: object, exc: BaseException) -> JsonObject:
        # The URL may carry an API key in its path; name only the failure kind.
        log.warning("chain JSON-RPC endpoint failed: %s", type(exc).__name__)
        return _error(
            request_id,
            INTERNAL_ERROR,
            f"Internal error: the chain JSON-RPC endpoint did not answer ({type(exc).__name__})",
        )

    async def forward_item(self, item: JsonObject) -> JsonObject | None:
        """Forward one request of a batch; the chain's response object (None for a notification)."""
        request_id = item.get("id")
        try:
            status, _, body = await self._post_chain(json.dumps(item).encode("utf-8"))
            answer = json.loads(body)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return self._chain_failed(request_id, exc) if "id" in item else None
        except ValueError:
            answer = None
            status = -1
        if "id" not in item:
            return None
        if not isinstance(answer, dict):
            return _error(
                request_id,
                INTERNAL_ERROR,
                f"Internal error: the chain answered with no JSON-RPC object (HTTP {status})",
            )
        return answer

    async def handle(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return web.Response(
                status=415,
                text="Supplied content type is not allowed. Content-Type: application/json is required\n",
            )
        client = request.remote or _UNKNOWN_CLIENT
        body = await request.read()
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            self.metrics.answered(None, PARSE_ERROR)
            return web.json_response(
                _error(None, PARSE_ERROR, "Parse error: the request body is not valid JSON")
            )
        if isinstance(payload, list):
            if not payload:
                self.metrics.answered(None, INVALID_REQUEST)
                return web.json_response(_error(None, INVALID_REQUEST, "Invalid request: empty batch"))
            answers = await asyncio.gather(*(self._batch_item(item, client) for item in payload))
            responses = [answer for answer in answers if answer is not None]
            return web.json_response(responses) if responses else web.Response(status=204)
        answer = await self.call(payload, client)
        if answer is _FORWARD:
            # A single forwarded request goes through byte for byte, and so does the chain's reply.
            try:
                status, content_type, reply = await self._post_chain(body)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                return web.json_response(self._chain_failed(payload.get("id"), exc))
            return web.Response(status=status, body=reply, content_type=content_type or "application/json")
        if answer is None:
            return web.Response(status=204)
        return web.json_response(answer)

    async def _batch_item(self, item: object, client: str) -> JsonObject | None:
        answer = await self.call(item, client)
        if answer is _FORWARD and isinstance(item, dict):  # call() forwards only request objects
            return await self.forward_item(item)
        if answer is None or isinstance(answer, dict):
            return answer
        raise RuntimeError("an RPC call answered with neither a response object nor a forward")


SERVICE_KEY: Final = web.AppKey("ocean_secret_store.rpc", RpcService)


def make_rpc_app(keystore: Keystore, chain_url: str | None, *, allow_unlock: bool = False,
                 throttle: PasswordThrottle | None = None,
                 registry: CollectorRegistry | None = None) -> web.Application:
    """The JSON-RPC app (``POST /``): keystore accounts answered here, chain reads forwarded to ``chain_url``;
    ``GET /metrics``: its Prometheus metrics (docs/metrics.md).

    ``allow_unlock`` enables ``personal_unlockAccount`` (off: refused); ``throttle`` paces wrong
    passwords (default: :class:`PasswordThrottle` with its documented defaults); ``registry`` holds
    the metrics (default: a new one with the process metrics).
    """
    service = RpcService(keystore, chain_url, allow_unlock=allow_unlock, throttle=throttle,
                         registry=registry if registry is not None else service_registry())
    app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[service.metrics.http.middleware])
    app[SERVICE_KEY] = service
    app.router.add_post("/", service.handle)
    app.router.add_get(METRICS_PATH, metrics_handler(service.metrics.registry))

    async def on_startup(_: web.Application) -> None:
        await service.start()

    async def on_cleanup(_: web.Application) -> None:
        await service.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


async def serve_rpc(
    keystore_dir: str | os.PathLike[str],
    host: str,
    port: int,
    chain_url: str | None,
    *,
    ready: Callable[[str], None] | None = None,
    allow_unlock: bool = False,
    throttle: PasswordThrottle | None = None,
    limits: ServingLimits | None = None,
    tls: TlsFiles | None = None,
) -> None:
    """Serve the JSON-RPC face until SIGTERM/SIGINT (or cancelled); ``ready`` gets the URL once listening
    (port 0 picks a free port). ``allow_unlock`` and ``throttle`` as for :func:`make_rpc_app`; ``limits``:
    the header-read timeout and connections per client address (default :class:`ServingLimits`); ``tls``:
    serve https with this certificate and key (default: plain http).

    :raises ConfigError: ``tls`` names a missing file or a key that does not match the certificate.
    """
    ssl_context = tls.context("rpc") if tls is not None else None
    app = make_rpc_app(Keystore(keystore_dir), chain_url, allow_unlock=allow_unlock, throttle=throttle)
    runner = GuardedAppRunner(app, limits, access_log=None)
    await runner.setup()
    try:
        site = guarded_site(runner, host, port, ssl_context=ssl_context)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        url = f"{'https' if tls is not None else 'http'}://{shown}:{bound_port}"
        log.info("JSON-RPC face listening on %s", url)
        if ready is not None:
            ready(url)
        await wait_for_stop_signal()
    finally:
        await runner.cleanup()
