"""Transactions of keystore accounts for the JSON-RPC face: a request checked, completed from the chain, signed.

``eth_sendTransaction`` and ``personal_sendTransaction`` take an ``eth_sendTransaction``-style
object (``from``, ``to``, ``gas``, ``gasPrice`` or ``maxFeePerGas``/``maxPriorityFeePerGas``,
``value``, ``data``/``input``, ``nonce``, ``chainId``, ``type``, ``accessList``; quantities as
``0x``-hex or JSON numbers, as web3 4.5 and later send them). What the caller leaves out is filled
in from the chain, as a Parity node did from its own state: the nonce from
``eth_getTransactionCount(from, "pending")``, the gas from ``eth_estimateGas``, the gas price from
``eth_gasPrice`` (EIP-1559 fees from ``eth_maxPriorityFeePerGas`` and the latest block's base fee
when the request names a fee cap or ``type`` 2), the chain id from ``eth_chainId``. The face then
signs with eth-account and sends the raw transaction; no unlocked account on the chain is involved.

Unknown fields are refused (Parity's request types denied them too), so a typo is an error rather
than a transaction sent without the field.
"""

from __future__ import annotations

import string
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ..crypto.hashes import checksum_address
from ..exceptions import ChainError, MalformedHex, SecretStoreError
from ..protocol.hexcodec import parse_hex, to_hex

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = ["InvalidTransaction", "TransactionRequest", "complete_transaction", "parse_transaction", "sign_transaction"]

_QUANTITIES: Final = ("gas", "gasPrice", "maxFeePerGas", "maxPriorityFeePerGas", "value", "nonce", "chainId")
_FIELDS: Final = frozenset({"from", "to", "data", "input", "type", "accessList", *_QUANTITIES})
_MAX_QUANTITY: Final = 2**256 - 1

#: ``ChainCall(method, params)``: the chain's ``result``; raises for a JSON-RPC error.
ChainCall = Callable[[str, list[Any]], Awaitable[Any]]


class InvalidTransaction(SecretStoreError):
    """The transaction object is malformed; the message names the field (never a key or password)."""


def _quantity(value: object, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value[:2] in ("0x", "0X") and len(value) > 2:
        # int() alone would also take underscores and surrounding blanks.
        if not all(char in string.hexdigits for char in value[2:]):
            raise InvalidTransaction(f"{name} is not a hex quantity")
        number = int(value, 0)
    else:
        raise InvalidTransaction(f"{name} must be a 0x-hex quantity or a JSON number")
    if not 0 <= number <= _MAX_QUANTITY:
        raise InvalidTransaction(f"{name} is out of range")
    return number


def _bytes(value: object, name: str, size: int | None = None) -> bytes:
    try:
        return parse_hex(value, name, size)
    except MalformedHex as exc:
        raise InvalidTransaction(str(exc)) from None


@dataclass(frozen=True)
class TransactionRequest:
    """A checked request: the sender and the eth-account fields given so far."""

    sender: bytes
    fields: dict[str, Any]

    @property
    def dynamic_fee(self) -> bool:
        return self.fields.get("type") == 2


def parse_transaction(value: object) -> TransactionRequest:
    """Check an ``eth_sendTransaction`` object; raises :class:`InvalidTransaction` naming the field."""
    if not isinstance(value, dict):
        raise InvalidTransaction("the transaction must be a JSON object")
    unknown = sorted(str(key) for key in value if key not in _FIELDS)
    if unknown:
        raise InvalidTransaction(f"unknown transaction field {unknown[0][:40]!r}")
    if value.get("from") is None:
        raise InvalidTransaction("the transaction has no from address")
    sender = _bytes(value["from"], "from", 20)
    fields: dict[str, Any] = {
        name: _quantity(value[name], name) for name in _QUANTITIES if value.get(name) is not None
    }
    if value.get("to") is not None:
        fields["to"] = checksum_address(_bytes(value["to"], "to", 20))  # eth-account takes no other form
    data = {name: _bytes(value[name], name) for name in ("data", "input") if value.get(name) is not None}
    if len(data) == 2 and data["data"] != data["input"]:
        raise InvalidTransaction("data and input differ; give one of them")
    fields["data"] = next(iter(data.values()), b"")
    kind = _quantity(value["type"], "type") if value.get("type") is not None else None
    dynamic = "maxFeePerGas" in fields or "maxPriorityFeePerGas" in fields
    if kind not in (None, 0, 2):
        raise InvalidTransaction("type must be 0x0 (legacy) or 0x2 (EIP-1559)")
    if dynamic and kind == 0:
        raise InvalidTransaction("maxFeePerGas/maxPriorityFeePerGas need type 0x2")
    if dynamic or kind == 2:
        if "gasPrice" in fields:
            raise InvalidTransaction("give either gasPrice or maxFeePerGas/maxPriorityFeePerGas, not both")
        fields["type"] = 2
        if value.get("accessList") is not None:
            if not isinstance(value["accessList"], list):
                raise InvalidTransaction("accessList must be a JSON array")
            fields["accessList"] = value["accessList"]
    elif value.get("accessList"):
        raise InvalidTransaction("accessList needs type 0x2")
    return TransactionRequest(sender, fields)


def _answer_quantity(value: object, method: str) -> int:
    try:
        return _quantity(value, method)
    except InvalidTransaction:
        raise ChainError(f"the chain answered {method} with no quantity") from None


async def complete_transaction(request: TransactionRequest, chain: ChainCall) -> dict[str, Any]:
    """The eth-account transaction dict: the request's fields plus those the chain supplies."""
    tx = dict(request.fields)
    sender = to_hex(request.sender)
    if "chainId" not in tx:
        tx["chainId"] = _answer_quantity(await chain("eth_chainId", []), "eth_chainId")
    if "value" not in tx:
        tx["value"] = 0
    if request.dynamic_fee:
        if "maxPriorityFeePerGas" not in tx:
            tx["maxPriorityFeePerGas"] = _answer_quantity(
                await chain("eth_maxPriorityFeePerGas", []), "eth_maxPriorityFeePerGas")
        if "maxFeePerGas" not in tx:
            block = await chain("eth_getBlockByNumber", ["latest", False])
            base_fee = block.get("baseFeePerGas") if isinstance(block, Mapping) else None
            tx["maxFeePerGas"] = 2 * _answer_quantity(base_fee, "eth_getBlockByNumber") + tx["maxPriorityFeePerGas"]
    elif "gasPrice" not in tx:
        tx["gasPrice"] = _answer_quantity(await chain("eth_gasPrice", []), "eth_gasPrice")
    if "gas" not in tx:
        estimate: dict[str, Any] = {"from": sender, "value": hex(tx["value"]), "data": to_hex(tx["data"])}
        if "to" in tx:
            estimate["to"] = tx["to"]
        tx["gas"] = _answer_quantity(await chain("eth_estimateGas", [estimate]), "eth_estimateGas")
    if "nonce" not in tx:
        tx["nonce"] = _answer_quantity(
            await chain("eth_getTransactionCount", [sender, "pending"]), "eth_getTransactionCount")
    return tx


def sign_transaction(account: LocalAccount, tx: Mapping[str, Any]) -> str:
    """The signed raw transaction, 0x-hex, ready for ``eth_sendRawTransaction``."""
    try:
        signed = account.sign_transaction(dict(tx))
    except (TypeError, ValueError) as exc:
        # eth-account names the offending field; the message holds no key material.
        raise InvalidTransaction(f"eth-account cannot sign this transaction: {exc}") from None
    return to_hex(bytes(signed.raw_transaction))
