"""Typed wrappers over the keeper contracts (DID registry, agreements, conditions, token).

Transactions are signed locally (eth-account) and sent raw; every web3 or transport exception is
translated into the package's :class:`~..exceptions.ChainError` tree at this boundary.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import requests
from eth_account import Account
from eth_account._utils.legacy_transactions import encode_transaction, serializable_unsigned_transaction_from_dict
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress, HexAddress, HexStr
from web3 import HTTPProvider, Web3
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception

from ..crypto.hashes import checksum_address, keccak256
from ..exceptions import ChainError, ChainUnreachable, ContractReverted
from ..protocol.hexcodec import parse_hex
from .artifacts import DEVELOPMENT, load_artifact

if TYPE_CHECKING:
    from web3.contract import Contract
    from web3.types import TxParams

#: A signing account: an eth-account ``LocalAccount`` or its private key (``0x`` hex or 32 bytes).
AccountLike: TypeAlias = LocalAccount | str | bytes
#: An address: checksum/lower ``0x`` hex or 20 bytes.
AddressLike: TypeAlias = str | bytes

#: The keeper contracts this layer deploys and wraps (ocean.md §4.4 step 1).
KEEPER_CONTRACTS: tuple[str, ...] = (
    "DIDRegistry", "OceanToken", "Dispenser", "ConditionStoreManager", "TemplateStoreManager",
    "AgreementStoreManager", "LockRewardCondition", "EscrowReward", "AccessSecretStoreCondition",
)
#: The libraries they link (truffle placeholders in DIDRegistry and ConditionStoreManager).
KEEPER_LIBRARIES: tuple[str, ...] = ("EpochLibrary", "DIDRegistryLibrary")

ESCROW_ACCESS_TEMPLATE = "EscrowAccessSecretStoreTemplate"
#: In 0.13 templates are ids: keccak256 of the template name (TemplateStoreManager.generateId).
ESCROW_ACCESS_TEMPLATE_ID: bytes = keccak256(ESCROW_ACCESS_TEMPLATE.encode())
ESCROW_COMPUTE_TEMPLATE = "EscrowComputeExecutionTemplate"
ESCROW_COMPUTE_TEMPLATE_ID: bytes = keccak256(ESCROW_COMPUTE_TEMPLATE.encode())

#: ConditionStoreManager condition states.
UNINITIALIZED, UNFULFILLED, FULFILLED, ABORTED = 0, 1, 2, 3

_REVERT_PREFIX = "execution reverted"


@dataclass(frozen=True)
class ConditionIds:
    """The three condition ids of one EscrowAccessSecretStoreTemplate agreement, in template order."""

    lock: bytes
    access: bytes
    escrow: bytes

    def __iter__(self) -> Iterator[bytes]:
        return iter((self.lock, self.access, self.escrow))


# -- conversions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HashSigner:
    """An account whose private key is not here: ``sign_hash(h)`` returns a 65-byte ``r || s || v``
    ECDSA signature over the raw 32-byte hash (``v`` the recovery id, 0 or 1), as the key servers'
    threshold ECDSA does (``GET /ecdsa/...``); :meth:`Keeper.transact` sends transactions from it."""

    address: ChecksumAddress
    sign_hash: Callable[[bytes], bytes]


def sign_transaction(signer: HashSigner, tx: Mapping[str, Any]) -> bytes:
    """The raw signed transaction ``tx`` (a legacy EIP-155 one, or a typed one), signed by ``signer``.

    :raises ChainError: the signature is malformed or does not recover to ``signer.address``.
    """
    fields = dict(tx)
    sender = fields.pop("from", None)
    if sender is not None and to_address(sender) != signer.address:
        raise ChainError(f"the transaction is from {sender}, not from the signer {signer.address}")
    unsigned = serializable_unsigned_transaction_from_dict(fields)
    signature = signer.sign_hash(bytes(unsigned.hash()))
    if len(signature) != 65 or signature[64] > 1:
        raise ChainError("the external signer answered no 65-byte r||s||v signature with v = 0 or 1")
    r, s, recovery = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big"), signature[64]
    typed = "gasPrice" not in tx or "type" in tx
    v = recovery if typed else recovery + 35 + 2 * int(tx["chainId"])
    raw = bytes(encode_transaction(unsigned, vrs=(v, r, s)))
    if Account.recover_transaction(raw) != signer.address:
        raise ChainError(f"the external signature does not recover to {signer.address}")
    return raw


def to_account(account: AccountLike) -> LocalAccount:
    """An eth-account LocalAccount from a LocalAccount or a private key."""
    if isinstance(account, (str, bytes)):
        try:
            return Account.from_key(account)
        except (ValueError, TypeError) as exc:
            raise ChainError("not a valid private key (value withheld)") from exc
    return account


def to_address(address: AddressLike) -> ChecksumAddress:
    """The EIP-55 form of an address given as 20 bytes or 40 hex digits (``0x`` optional, any case)."""
    if isinstance(address, bytes):
        if len(address) != 20:
            raise ChainError(f"an address is 20 bytes, got {len(address)}")
        raw = address
    else:
        raw = parse_hex(address, "an address", 20, prefix=None, error=ChainError)
    return ChecksumAddress(HexAddress(HexStr(checksum_address(raw))))


def to_bytes32(value: bytes | str, what: str = "value") -> bytes:
    """32 bytes from bytes, ``0x`` hex, bare hex or a ``did:op:`` DID."""
    if isinstance(value, bytes):
        raw = value
        if len(raw) != 32:
            raise ChainError(f"{what} must be 32 bytes, got {len(raw)}")
        return raw
    return parse_hex(value.removeprefix("did:op:"), what, 32, prefix=None, error=ChainError)


def connect(chain: Web3 | str, *, timeout: float = 10.0) -> Web3:
    """A Web3 for an HTTP JSON-RPC URL (a Web3 passes through)."""
    if isinstance(chain, str):
        return Web3(HTTPProvider(chain, request_kwargs={"timeout": timeout}))
    return chain


def _endpoint(w3: Web3) -> str:
    return str(getattr(w3.provider, "endpoint_uri", None) or w3.provider)


def revert_reason(exc: BaseException) -> str:
    """The revert reason of a web3 ContractLogicError (``"execution reverted: X"`` -> ``"X"``)."""
    message = str(getattr(exc, "message", None) or exc)
    if message.startswith(_REVERT_PREFIX):
        rest = message[len(_REVERT_PREFIX):].lstrip(": ").strip()
        return rest or "no reason given"
    return message or "no reason given"


@contextmanager
def translate_errors(w3: Web3, contract: str, function: str) -> Iterator[None]:
    """Translate web3/requests exceptions of one call into the package's ChainError tree."""
    try:
        yield
    except ContractLogicError as exc:
        raise ContractReverted(contract, function, revert_reason(exc)) from exc
    except (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError) as exc:
        url = _endpoint(w3)
        raise ChainUnreachable(f"{contract}.{function}: no answer from the chain at {url}: {exc}", url) from exc
    except TimeExhausted as exc:
        raise ChainError(f"{contract}.{function}: transaction not mined in time: {exc}") from exc
    except (Web3Exception, requests.RequestException) as exc:
        raise ChainError(f"{contract}.{function} failed: {exc}") from exc


def bind_contracts(
    w3: Web3, addresses: Mapping[str, str], *, network: str = DEVELOPMENT, artifacts_directory: str | None = None
) -> dict[str, Contract]:
    """Web3 contract objects for each named address, with the ABI from that network's artifacts."""
    return {
        name: w3.eth.contract(address=to_address(address), abi=load_artifact(name, network, artifacts_directory).abi)
        for name, address in addresses.items()
    }


def select_function(contract: Contract, function: str) -> Any:
    """A contract function by name, or by full signature ``name(type,...)`` for overloads."""
    if "(" in function:
        return contract.get_function_by_signature(function)
    return contract.functions[function]


# -- local condition ids (ocean.md §4.3) ------------------------------------------------------


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _addr(address: AddressLike) -> bytes:
    return bytes.fromhex(to_address(address)[2:])


def condition_id(agreement_id: bytes, condition_contract: AddressLike, value_hash: bytes) -> bytes:
    """Condition.generateId: keccak256(agreementId ‖ conditionContract ‖ valueHash) (packed)."""
    return keccak256(to_bytes32(agreement_id, "agreement id") + _addr(condition_contract) + value_hash)


def lock_reward_hash(reward_address: AddressLike, amount: int) -> bytes:
    """LockRewardCondition.hashValues(address, uint256), packed."""
    return keccak256(_addr(reward_address) + _word(amount))


def access_hash(document_id: bytes, grantee: AddressLike) -> bytes:
    """AccessSecretStoreCondition.hashValues(bytes32, address), packed."""
    return keccak256(to_bytes32(document_id, "document id") + _addr(grantee))


def escrow_hash(amount: int, receiver: AddressLike, sender: AddressLike, lock_id: bytes, release_id: bytes) -> bytes:
    """EscrowReward.hashValues(uint256, address, address, bytes32, bytes32), packed."""
    return keccak256(_word(amount) + _addr(receiver) + _addr(sender) + lock_id + release_id)


# -- the keeper -------------------------------------------------------------------------------


class Keeper:
    """The deployed keeper contracts on one chain.

    Amounts are token base units (10^-18 OCEAN) except :meth:`request_tokens`, which takes whole
    tokens as the Dispenser does. Transactions are signed locally, sent raw, and awaited; a revert
    raises :class:`ContractReverted` naming the contract, function and reason.
    """

    def __init__(
        self,
        chain: Web3 | str,
        addresses: Mapping[str, str],
        *,
        network: str = DEVELOPMENT,
        artifacts_directory: str | None = None,
        receipt_timeout: float = 30.0,
        request_timeout: float = 10.0,
    ) -> None:
        self.w3 = connect(chain, timeout=request_timeout)
        missing = [name for name in KEEPER_CONTRACTS if name not in addresses]
        if missing:
            raise ChainError(f"keeper addresses missing for {', '.join(missing)}")
        self.addresses = {name: to_address(addr) for name, addr in addresses.items()}
        self.contracts = bind_contracts(
            self.w3, {n: self.addresses[n] for n in KEEPER_CONTRACTS}, network=network,
            artifacts_directory=artifacts_directory,
        )
        self.receipt_timeout = receipt_timeout
        self._chain_id: int | None = None
        self._send_lock = threading.Lock()

    @classmethod
    def from_network(
        cls, chain: Web3 | str, network_name: str, *, artifacts_directory: str | None = None, **kwargs: Any
    ) -> Keeper:
        """A keeper at the addresses recorded in ``network_name``'s artifacts (e.g. ``nile``)."""
        addresses = {}
        for name in KEEPER_CONTRACTS:
            artifact = load_artifact(name, network_name, artifacts_directory)
            if artifact.address is None:
                raise ChainError(f"artifact {artifact.path.name} records no address")
            addresses[name] = artifact.address
        return cls(chain, addresses, network=network_name, artifacts_directory=artifacts_directory, **kwargs)

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            with translate_errors(self.w3, "chain", "eth_chainId"):
                self._chain_id = int(self.w3.eth.chain_id)
        return self._chain_id

    @property
    def template_id(self) -> bytes:
        return ESCROW_ACCESS_TEMPLATE_ID

    def address(self, name: str) -> str:
        return self.addresses[name]

    def call(self, contract: str, function: str, *args: Any) -> Any:
        """A view call on ``latest``; reverts raise ContractReverted."""
        fn = select_function(self.contracts[contract], function)
        with translate_errors(self.w3, contract, function):
            return fn(*args).call()

    def transact(self, account: AccountLike | HashSigner, contract: str, function: str, *args: Any,
                 value: int = 0) -> Any:
        """Sign and send one transaction from ``account`` (a key here, or a :class:`HashSigner` such as
        the key servers), wait for its receipt, and return it."""
        signer = account if isinstance(account, HashSigner) else to_account(account)
        fn = select_function(self.contracts[contract], function)(*args)
        with translate_errors(self.w3, contract, function):
            with self._send_lock:  # one nonce sequence per process
                nonce = self.w3.eth.get_transaction_count(signer.address, "pending")
                tx = fn.build_transaction(
                    {"from": signer.address, "nonce": nonce, "chainId": self.chain_id, "value": value}
                )
                # The estimate is made against the pending state; a call whose cost depends on the
                # block (Dispenser stores the block time) can need more when mined: keep a margin.
                tx["gas"] = int(tx["gas"] * 1.25) + 10_000
                raw = (sign_transaction(signer, tx) if isinstance(signer, HashSigner)
                       else signer.sign_transaction(tx).raw_transaction)
                tx_hash = self.w3.eth.send_raw_transaction(raw)
            receipt = self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=self.receipt_timeout, poll_latency=0.02
            )
        if receipt["status"] != 1:
            raise ContractReverted(contract, function, replay_reason(self.w3, tx, receipt["blockNumber"]))
        return receipt

    # -- DID registry ------------------------------------------------------------------------

    def register_did(
        self,
        account: AccountLike,
        did: bytes | str,
        checksum: bytes | str | None = None,
        providers: Sequence[AddressLike] = (),
        value: str = "",
    ) -> Any:
        """DIDRegistry.registerAttribute; the first registrant becomes the owner (checksum defaults to the DID)."""
        did32 = to_bytes32(did, "did")
        return self.transact(
            account, "DIDRegistry", "registerAttribute", did32,
            to_bytes32(checksum, "checksum") if checksum is not None else did32,
            [to_address(p) for p in providers], value,
        )

    def did_owner(self, did: bytes | str) -> str:
        return str(self.call("DIDRegistry", "getDIDOwner", to_bytes32(did, "did")))

    def is_did_provider(self, did: bytes | str, address: AddressLike) -> bool:
        return bool(self.call("DIDRegistry", "isDIDProvider", to_bytes32(did, "did"), to_address(address)))

    def add_did_provider(self, account: AccountLike, did: bytes | str, provider: AddressLike) -> Any:
        return self.transact(account, "DIDRegistry", "addDIDProvider", to_bytes32(did, "did"), to_address(provider))

    def registry_grant_permission(self, account: AccountLike, did: bytes | str, grantee: AddressLike) -> Any:
        """DIDRegistry.grantPermission (DID owner only)."""
        return self.transact(account, "DIDRegistry", "grantPermission", to_bytes32(did, "did"), to_address(grantee))

    def registry_revoke_permission(self, account: AccountLike, did: bytes | str, grantee: AddressLike) -> Any:
        """DIDRegistry.revokePermission (DID owner only)."""
        return self.transact(account, "DIDRegistry", "revokePermission", to_bytes32(did, "did"), to_address(grantee))

    def registry_permission(self, did: bytes | str, grantee: AddressLike) -> bool:
        return bool(self.call("DIDRegistry", "getPermission", to_bytes32(did, "did"), to_address(grantee)))

    # -- AccessSecretStoreCondition (the Secret Store ACL) ------------------------------------

    def grant_permission(self, account: AccountLike, did: bytes | str, grantee: AddressLike) -> Any:
        """AccessSecretStoreCondition.grantPermission (DID owner or provider only)."""
        return self.transact(
            account, "AccessSecretStoreCondition", "grantPermission", to_address(grantee), to_bytes32(did, "did")
        )

    def renounce_permission(self, account: AccountLike, did: bytes | str, grantee: AddressLike) -> Any:
        """AccessSecretStoreCondition.renouncePermission (DID owner or provider only)."""
        return self.transact(
            account, "AccessSecretStoreCondition", "renouncePermission", to_address(grantee), to_bytes32(did, "did")
        )

    def check_permissions(self, address: AddressLike, did: bytes | str) -> bool:
        """AccessSecretStoreCondition.checkPermissions: owner, provider, or granted (either contract)."""
        return bool(
            self.call("AccessSecretStoreCondition", "checkPermissions", to_address(address), to_bytes32(did, "did"))
        )

    # -- token -------------------------------------------------------------------------------

    def request_tokens(self, account: AccountLike, amount: int) -> Any:
        """Dispenser.requestTokens: mints ``amount`` whole OCEAN (amount·10^18 base units) to the caller."""
        return self.transact(account, "Dispenser", "requestTokens", amount)

    def transfer_tokens(self, account: AccountLike | HashSigner, to: AddressLike, amount: int) -> Any:
        """OceanToken.transfer of ``amount`` base units to ``to``."""
        return self.transact(account, "OceanToken", "transfer", to_address(to), amount)

    def token_balance(self, address: AddressLike) -> int:
        return int(self.call("OceanToken", "balanceOf", to_address(address)))

    def approve_tokens(self, account: AccountLike, spender: AddressLike, amount: int) -> Any:
        return self.transact(account, "OceanToken", "approve", to_address(spender), amount)

    # -- agreements --------------------------------------------------------------------------

    def agreement_condition_ids(
        self, agreement_id: bytes, did: bytes | str, consumer: AddressLike, publisher: AddressLike, price: int
    ) -> ConditionIds:
        """The (lock, access, escrow) condition ids of an access agreement, computed locally (ocean.md §4.3)."""
        agreement = to_bytes32(agreement_id, "agreement id")
        escrow = self.addresses["EscrowReward"]
        lock_id = condition_id(agreement, self.addresses["LockRewardCondition"], lock_reward_hash(escrow, price))
        access_id = condition_id(
            agreement, self.addresses["AccessSecretStoreCondition"], access_hash(to_bytes32(did, "did"), consumer)
        )
        escrow_id = condition_id(agreement, escrow, escrow_hash(price, publisher, consumer, lock_id, access_id))
        return ConditionIds(lock_id, access_id, escrow_id)

    def agreement_condition_ids_onchain(
        self, agreement_id: bytes, did: bytes | str, consumer: AddressLike, publisher: AddressLike, price: int
    ) -> ConditionIds:
        """The same ids via the contracts' hashValues/generateId views (a cross-check of the local formulas)."""
        agreement = to_bytes32(agreement_id, "agreement id")
        escrow = self.addresses["EscrowReward"]
        lock_hash = self.call("LockRewardCondition", "hashValues", escrow, price)
        lock_id = bytes(self.call("LockRewardCondition", "generateId", agreement, lock_hash))
        acc_hash = self.call("AccessSecretStoreCondition", "hashValues", to_bytes32(did, "did"), to_address(consumer))
        access_id = bytes(self.call("AccessSecretStoreCondition", "generateId", agreement, acc_hash))
        esc_hash = self.call(
            "EscrowReward", "hashValues", price, to_address(publisher), to_address(consumer), lock_id, access_id
        )
        escrow_id = bytes(self.call("EscrowReward", "generateId", agreement, esc_hash))
        return ConditionIds(lock_id, access_id, escrow_id)

    def create_agreement(
        self,
        account: AccountLike,
        agreement_id: bytes,
        did: bytes | str,
        template_id: bytes,
        condition_ids: Sequence[bytes],
        time_locks: Sequence[int],
        time_outs: Sequence[int],
        actors: Sequence[AddressLike],
    ) -> Any:
        """AgreementStoreManager.createAgreement (the 0.13 template-id overload; anyone may call)."""
        return self.transact(
            account, "AgreementStoreManager",
            "createAgreement(bytes32,bytes32,bytes32,bytes32[],uint256[],uint256[],address[])",
            to_bytes32(agreement_id, "agreement id"), to_bytes32(did, "did"), to_bytes32(template_id, "template id"),
            [to_bytes32(c, "condition id") for c in condition_ids], list(time_locks), list(time_outs),
            [to_address(a) for a in actors],
        )

    def create_access_agreement(
        self,
        account: AccountLike,
        agreement_id: bytes,
        did: bytes | str,
        *,
        consumer: AddressLike,
        publisher: AddressLike,
        provider: AddressLike,
        price: int,
        time_locks: Sequence[int] = (0, 0, 0),
        time_outs: Sequence[int] = (0, 0, 0),
    ) -> ConditionIds:
        """Create an EscrowAccessSecretStoreTemplate agreement (actors: provider, consumer).

        Returns its condition ids.
        """
        ids = self.agreement_condition_ids(agreement_id, did, consumer, publisher, price)
        self.create_agreement(
            account, agreement_id, did, self.template_id, list(ids), time_locks, time_outs, [provider, consumer]
        )
        return ids

    def lock_reward(self, account: AccountLike, agreement_id: bytes, amount: int) -> Any:
        """Approve LockRewardCondition for ``amount`` and fulfil the lock (tokens go to EscrowReward)."""
        self.approve_tokens(account, self.addresses["LockRewardCondition"], amount)
        return self.transact(
            account, "LockRewardCondition", "fulfill", to_bytes32(agreement_id, "agreement id"),
            self.addresses["EscrowReward"], amount,
        )

    def fulfill_access(self, account: AccountLike, agreement_id: bytes, did: bytes | str, grantee: AddressLike) -> Any:
        """AccessSecretStoreCondition.fulfill: grants ``grantee`` on the DID (caller: DID owner or provider)."""
        return self.transact(
            account, "AccessSecretStoreCondition", "fulfill", to_bytes32(agreement_id, "agreement id"),
            to_bytes32(did, "did"), to_address(grantee),
        )

    def fulfill_escrow(
        self,
        account: AccountLike,
        agreement_id: bytes,
        amount: int,
        receiver: AddressLike,
        sender: AddressLike,
        lock_id: bytes,
        access_id: bytes,
    ) -> Any:
        """EscrowReward.fulfill: pays ``receiver`` if access was fulfilled, refunds ``sender`` if aborted."""
        return self.transact(
            account, "EscrowReward", "fulfill", to_bytes32(agreement_id, "agreement id"), amount,
            to_address(receiver), to_address(sender),
            to_bytes32(lock_id, "lock id"), to_bytes32(access_id, "access id"),
        )

    def agreement_conditions(self, agreement_id: bytes) -> tuple[bytes, ...]:
        """The condition ids recorded for an agreement (empty if it does not exist)."""
        record = self.call("AgreementStoreManager", "getAgreement", to_bytes32(agreement_id, "agreement id"))
        return tuple(bytes(c) for c in record[3])

    def condition_states(self, agreement_id: bytes) -> tuple[int, ...]:
        """States of the agreement's conditions in template order (0 none, 1 unfulfilled, 2 fulfilled, 3 aborted)."""
        return tuple(
            int(self.call("ConditionStoreManager", "getConditionState", cid))
            for cid in self.agreement_conditions(agreement_id)
        )

    # -- events ------------------------------------------------------------------------------

    def events(
        self, contract: str, event: str, filters: Mapping[str, Any] | None = None, from_block: int = 0
    ) -> list[Any]:
        """Logs of ``contract.event`` from ``from_block`` to latest, filtered on indexed arguments."""
        with translate_errors(self.w3, contract, event):
            return list(
                self.contracts[contract].events[event]().get_logs(
                    argument_filters=dict(filters or {}), from_block=from_block, to_block="latest"
                )
            )

    def wait_for_event(
        self,
        contract: str,
        event: str,
        filters: Mapping[str, Any] | None = None,
        *,
        from_block: int = 0,
        timeout: float = 30.0,
        poll_interval: float = 0.1,
    ) -> Any:
        """The first ``contract.event`` log matching ``filters``; raises ChainError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(contract, event, filters, from_block)
            if found:
                return found[0]
            if time.monotonic() >= deadline:
                raise ChainError(f"no {contract}.{event} event matching {dict(filters or {})} within {timeout:g} s")
            time.sleep(poll_interval)


def replay_reason(w3: Web3, tx: Mapping[str, Any], block_number: int) -> str:
    """Why a mined transaction failed: re-run it as eth_call on the state before its block."""
    # The transaction's own fields, so the dict has TxParams' shape by construction.
    call = cast("TxParams", {k: tx[k] for k in ("from", "to", "data", "value", "gas") if tx.get(k) is not None})
    try:
        w3.eth.call(call, block_identifier=max(int(block_number) - 1, 0))
    except ContractLogicError as exc:
        return revert_reason(exc)
    except Web3Exception as exc:
        return f"status 0 ({exc})"
    return "status 0 (the replay did not revert; out of gas?)"
