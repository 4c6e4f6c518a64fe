"""Deploy and set up keeper-contracts 0.13.2 from the installed artifacts on any dev chain (ocean.md §4.4 step 1).

Every contract of the release's ``contracts.json`` is deployed, initialised in the order of its
``initializeContracts.js`` and set up as its ``setupContracts.js`` did: both actor types, both
templates (``EscrowAccessSecretStoreTemplate`` and ``EscrowComputeExecutionTemplate``, which in
0.13 are ids in ``TemplateStoreManager``, not contracts) proposed and approved, the create role
delegated, the Dispenser made a minter. The two ``Escrow*Template`` artifacts of the release are
v0.12.7 template *contracts* that its migrations no longer deploy; they are not deployed here
either (ocean-keeper 0.3.5 treats them as optional and squid-py 0.9.3 uses the template ids).

Transactions go out pipelined: every nonce is assigned locally, contract addresses are derived from
(deployer, nonce), gas limits are fixed, and receipts are collected once per phase. The only
dependency that needs mined state (the actor type ids the template lists) splits two phases.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rlp

from ..crypto.hashes import keccak256
from ..exceptions import ChainError, ContractReverted
from ..protocol.hexcodec import parse_hex, to_hex
from .artifacts import DEVELOPMENT, load_artifact
from .keeper import (
    ESCROW_ACCESS_TEMPLATE,
    ESCROW_ACCESS_TEMPLATE_ID,
    ESCROW_COMPUTE_TEMPLATE,
    ESCROW_COMPUTE_TEMPLATE_ID,
    KEEPER_CONTRACTS,
    KEEPER_LIBRARIES,
    AccountLike,
    AddressLike,
    connect,
    replay_reason,
    select_function,
    to_account,
    to_address,
    translate_errors,
)

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from eth_typing import ChecksumAddress
    from hexbytes import HexBytes
    from web3 import Web3

# Measured creation gas is 0.16-1.73 M per contract and setup calls stay below 0.3 M; fixed
# limits with headroom replace eth_estimateGas, which cannot see not-yet-mined predecessors.
DEPLOY_GAS = 4_000_000
CALL_GAS = 1_000_000
ACTOR_TYPES = ("provider", "consumer")
#: The release's other conditions: deployed and initialised too, though the pipeline does not use them.
OTHER_CONDITIONS: tuple[str, ...] = (
    "SignCondition", "HashLockCondition", "ThresholdCondition", "WhitelistingCondition", "ComputeExecutionCondition",
)
#: Every contract a deployment holds (keeper-contracts 0.13.2's ``contracts.json`` plus the Dispenser).
ALL_CONTRACTS: tuple[str, ...] = (*KEEPER_CONTRACTS, *OTHER_CONDITIONS)
_OWNABLE = ALL_CONTRACTS  # every keeper contract is zos Ownable


@dataclass(frozen=True)
class Deployment:
    """Where the keeper contracts landed: contract name -> checksum address, plus the setup facts."""

    chain_id: int
    addresses: Mapping[str, str]
    template_id: bytes
    actor_types: Mapping[str, bytes]
    deployer: str
    owner: str
    minter: str
    network: str = DEVELOPMENT
    #: Every approved template by name (the access template's id is also ``template_id``).
    template_ids: Mapping[str, bytes] = field(default_factory=dict)
    seconds: float = field(default=0.0, compare=False)

    def __getitem__(self, name: str) -> str:
        return self.addresses[name]

    def to_json(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id, "contracts": dict(self.addresses), "template_id": to_hex(self.template_id),
            "actor_types": {k: to_hex(v) for k, v in self.actor_types.items()},
            "deployer": self.deployer, "owner": self.owner, "minter": self.minter, "network": self.network,
            "template_ids": {k: to_hex(v) for k, v in self.template_ids.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Deployment:
        """The inverse of :meth:`to_json`; a malformed id raises :class:`ChainError`."""
        return cls(
            chain_id=int(data["chain_id"]), addresses=dict(data["contracts"]),
            template_id=parse_hex(data["template_id"], "template_id", 32, error=ChainError),
            actor_types={
                k: parse_hex(v, f"actor_types[{k!r}]", 32, error=ChainError) for k, v in data["actor_types"].items()
            },
            deployer=str(data["deployer"]), owner=str(data["owner"]), minter=str(data["minter"]),
            network=str(data.get("network", DEVELOPMENT)),
            template_ids={
                k: parse_hex(v, f"template_ids[{k!r}]", 32, error=ChainError)
                for k, v in data.get("template_ids", {}).items()
            },
        )

    def write_artifacts(self, directory: str | os.PathLike[str], network: str = DEVELOPMENT) -> Path:
        """Write ``<Name>.<network>.json`` for every deployed contract (:func:`write_artifacts`)."""
        return write_artifacts(self.addresses, directory, network=network, source_network=self.network)


def write_artifacts(addresses: Mapping[str, str], directory: str | os.PathLike[str], *, network: str = DEVELOPMENT,
                    source_network: str = DEVELOPMENT, artifacts_directory: str | None = None) -> Path:
    """Write ``<Name>.<network>.json`` for every contract in ``addresses`` with ``address`` rewritten.

    Programs that read artifacts (ocean-keeper style, or :meth:`Keeper.from_network` with
    ``artifacts_directory``) then find this chain's addresses. Each file keeps the release's keys
    (``name``, ``abi``, ``bytecode``, ``version``) with ``address`` and ``implementation`` set to the
    deployed contract: ocean-keeper 0.3.5 reads ``address``, ``abi`` and ``version`` from
    ``<Name>.<network>.json``, and names every chain id it does not know (anvil's 31337 among
    them) ``development``. Files are replaced atomically, so a reader never sees half of one.
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    for name, address in addresses.items():
        source = load_artifact(name, source_network, artifacts_directory)
        data = json.loads(source.path.read_text(encoding="utf-8"))
        data["address"] = address
        data["implementation"] = address
        path = target / f"{name}.{network}.json"
        scratch = path.with_name(f".{path.name}.tmp")
        scratch.write_text(json.dumps(data), encoding="utf-8")
        os.replace(scratch, path)
    return target


def create_address(sender: str, nonce: int) -> ChecksumAddress:
    """The address a CREATE from ``sender`` at ``nonce`` deploys to: keccak256(rlp([sender, nonce]))[12:]."""
    sender_bytes = parse_hex(sender, "the sender address", 20, prefix=None, error=ChainError)
    return to_address(keccak256(rlp.encode([sender_bytes, nonce]))[12:])


#: What :func:`deploy_keeper_contracts` creates, in the order it creates them (one nonce each).
DEPLOY_ORDER: tuple[str, ...] = (*KEEPER_LIBRARIES, *ALL_CONTRACTS)


def planned_addresses(deployer: str, first_nonce: int = 0) -> dict[str, ChecksumAddress]:
    """Where :func:`deploy_keeper_contracts` run by ``deployer`` from nonce ``first_nonce`` puts every
    library and contract (a fresh chain: nonce 0), known before anything is sent; the deployment
    itself links against these addresses and checks that it landed on them."""
    return {name: create_address(deployer, first_nonce + i) for i, name in enumerate(DEPLOY_ORDER)}


class _Pipeline:
    """Signs and sends transactions with locally assigned nonces; checks all receipts on flush."""

    def __init__(self, w3: Web3, signer: LocalAccount, chain_id: int, gas_price: int, timeout: float) -> None:
        self.w3, self.signer, self.chain_id, self.gas_price, self.timeout = w3, signer, chain_id, gas_price, timeout
        with translate_errors(w3, "chain", "eth_getTransactionCount"):
            self.nonce = int(w3.eth.get_transaction_count(signer.address, "pending"))
        self.pending: list[tuple[str, str, dict[str, Any], HexBytes]] = []
        #: Creating transaction -> the address its contract must land on (checked on flush).
        self.creates: dict[HexBytes, str] = {}

    def _send(self, contract: str, function: str, tx: dict[str, Any]) -> HexBytes:
        tx.update(nonce=self.nonce, chainId=self.chain_id, gasPrice=self.gas_price)
        tx.setdefault("value", 0)
        signed = self.signer.sign_transaction(tx)
        with translate_errors(self.w3, contract, function):
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        self.pending.append((contract, function, tx, tx_hash))
        self.nonce += 1
        return tx_hash

    def deploy(self, name: str, bytecode: str, at: str) -> None:
        """Create ``name`` at the planned address ``at``: its nonce must give that address, and the
        receipt must name it (checked on flush)."""
        if create_address(self.signer.address, self.nonce) != at:
            raise ChainError(f"{name} would not land on its planned address {at}: the deployer's nonce is "
                             f"{self.nonce}, not the one the plan assumed")
        tx_hash = self._send(name, "<create>", {"data": bytecode, "gas": DEPLOY_GAS, "from": self.signer.address})
        self.creates[tx_hash] = at

    def call(self, contract: Any, name: str, function: str, *args: Any) -> None:
        fn = select_function(contract, function)(*args)
        tx = fn.build_transaction({
            "from": self.signer.address, "gas": CALL_GAS, "nonce": self.nonce, "chainId": self.chain_id,
            "gasPrice": self.gas_price, "value": 0,
        })
        self._send(name, function, dict(tx))

    def flush(self) -> None:
        """Wait for every pending transaction; the first failed one raises ContractReverted."""
        sent, self.pending = self.pending, []
        if not sent:
            return
        contract, function, _, last = sent[-1]
        with translate_errors(self.w3, contract, function):
            # Mined in nonce order: once the last is in, the others are fetched without polling.
            self.w3.eth.wait_for_transaction_receipt(last, timeout=self.timeout, poll_latency=0.02)
            receipts = [
                self.w3.eth.wait_for_transaction_receipt(h, timeout=self.timeout, poll_latency=0.02)
                for _, _, _, h in sent
            ]
        for (contract, function, tx, tx_hash), receipt in zip(sent, receipts, strict=True):
            if receipt["status"] != 1:
                raise ContractReverted(contract, function, replay_reason(self.w3, tx, receipt["blockNumber"]))
            planned = self.creates.pop(tx_hash, None)
            if planned is not None and receipt.get("contractAddress") != planned:
                raise ChainError(f"{contract} was created at {receipt.get('contractAddress')}, not at its planned "
                                 f"address {planned}")


def deploy_keeper_contracts(
    chain: Web3 | str,
    deployer_key: AccountLike,
    *,
    minter: AddressLike,
    owner: AddressLike | None = None,
    network: str = DEVELOPMENT,
    artifacts_directory: str | None = None,
    receipt_timeout: float = 60.0,
) -> Deployment:
    """Deploy, initialise and set up the keeper contracts; returns their addresses and the template id.

    ``deployer_key`` signs everything and owns the contracts during setup; ``owner`` (default: the
    deployer) receives ownership of every contract at the end. ``minter`` is OceanToken's initial
    minter and must differ from the token owner (OceanToken.initialize reverts otherwise).
    """
    started = time.perf_counter()
    w3 = connect(chain)
    signer = to_account(deployer_key)
    deployer = signer.address
    final_owner = to_address(owner) if owner is not None else deployer
    minter_address = to_address(minter)
    if minter_address == deployer:
        raise ChainError("the token minter must differ from the deployer, who is the token owner during setup")

    with translate_errors(w3, "chain", "eth_chainId"):
        chain_id = int(w3.eth.chain_id)
        # Double the current price so a rising base fee cannot strand the pipelined batch.
        gas_price = max(int(w3.eth.gas_price) * 2, 1)
    pipe = _Pipeline(w3, signer, chain_id, gas_price, receipt_timeout)

    artifacts = {name: load_artifact(name, network, artifacts_directory) for name in DEPLOY_ORDER}
    plan = planned_addresses(deployer, pipe.nonce)
    libraries = {name: plan[name] for name in KEEPER_LIBRARIES}
    for name in DEPLOY_ORDER:
        bytecode = artifacts[name].bytecode if name in libraries else artifacts[name].linked_bytecode(libraries)
        pipe.deploy(name, bytecode, at=plan[name])
    addresses = {name: plan[name] for name in ALL_CONTRACTS}
    contracts = {name: w3.eth.contract(address=addresses[name], abi=artifacts[name].abi) for name in ALL_CONTRACTS}

    def call(name: str, function: str, *args: Any) -> None:
        pipe.call(contracts[name], name, function, *args)

    a = addresses
    # Ocean's initializeContracts order; each initialize overload picked by its signature.
    call("DIDRegistry", "initialize(address)", deployer)
    call("OceanToken", "initialize(address,address)", deployer, minter_address)
    call("Dispenser", "initialize(address,address)", a["OceanToken"], deployer)
    call("ConditionStoreManager", "initialize(address)", deployer)
    call("TemplateStoreManager", "initialize(address)", deployer)
    for name in ("SignCondition", "HashLockCondition", "ThresholdCondition", "WhitelistingCondition"):
        call(name, "initialize(address,address)", deployer, a["ConditionStoreManager"])
    call("AgreementStoreManager", "initialize(address,address,address,address)",
         deployer, a["ConditionStoreManager"], a["TemplateStoreManager"], a["DIDRegistry"])
    call("LockRewardCondition", "initialize(address,address,address)",
         deployer, a["ConditionStoreManager"], a["OceanToken"])
    call("EscrowReward", "initialize(address,address,address)",
         deployer, a["ConditionStoreManager"], a["OceanToken"])
    call("AccessSecretStoreCondition", "initialize(address,address,address)",
         deployer, a["ConditionStoreManager"], a["AgreementStoreManager"])
    call("ComputeExecutionCondition", "initialize(address,address,address)",
         deployer, a["ConditionStoreManager"], a["AgreementStoreManager"])
    for actor in ACTOR_TYPES:
        call("TemplateStoreManager", "registerTemplateActorType", actor)
    call("ConditionStoreManager", "delegateCreateRole", a["AgreementStoreManager"])
    call("OceanToken", "addMinter", a["Dispenser"])
    pipe.flush()

    templates = contracts["TemplateStoreManager"]
    with translate_errors(w3, "TemplateStoreManager", "getTemplateActorTypeId"):
        actor_types = {
            actor: bytes(templates.functions.getTemplateActorTypeId(actor).call()) for actor in ACTOR_TYPES
        }
    template_ids = {ESCROW_ACCESS_TEMPLATE: ESCROW_ACCESS_TEMPLATE_ID,
                    ESCROW_COMPUTE_TEMPLATE: ESCROW_COMPUTE_TEMPLATE_ID}
    template_conditions = {ESCROW_ACCESS_TEMPLATE: "AccessSecretStoreCondition",
                           ESCROW_COMPUTE_TEMPLATE: "ComputeExecutionCondition"}
    for template, template_id in template_ids.items():
        call("TemplateStoreManager", "proposeTemplate(bytes32,address[],bytes32[],string)", template_id,
             [a["LockRewardCondition"], a[template_conditions[template]], a["EscrowReward"]],
             [actor_types[actor] for actor in ACTOR_TYPES], template)
        call("TemplateStoreManager", "approveTemplate", template_id)
    if final_owner != deployer:
        call("OceanToken", "addMinter", final_owner)
        call("OceanToken", "renounceMinter")
        for name in _OWNABLE:
            call(name, "transferOwnership", final_owner)
    pipe.flush()

    for template, template_id in template_ids.items():
        with translate_errors(w3, "TemplateStoreManager", "isTemplateIdApproved"):
            approved = templates.functions.isTemplateIdApproved(template_id).call()
        if not approved:
            raise ChainError(f"{template} is not approved after setup")
    return Deployment(
        chain_id=chain_id, addresses={**libraries, **addresses}, template_id=ESCROW_ACCESS_TEMPLATE_ID,
        actor_types=actor_types, deployer=deployer, owner=final_owner, minter=minter_address, network=network,
        template_ids=template_ids, seconds=time.perf_counter() - started,
    )
