"""Artifacts come from the installed keeper-contracts package; deployment and setup on a real anvil."""

from __future__ import annotations

import json
from importlib.metadata import distribution
from pathlib import Path

import pytest

from ocean_secret_store.chain import artifacts
from ocean_secret_store.chain.deploy import (
    ALL_CONTRACTS,
    OTHER_CONDITIONS,
    Deployment,
    create_address,
    deploy_keeper_contracts,
    planned_addresses,
)
from ocean_secret_store.chain.keeper import ESCROW_ACCESS_TEMPLATE_ID, KEEPER_CONTRACTS, Keeper, to_address
from ocean_secret_store.crypto.hashes import keccak256
from ocean_secret_store.exceptions import ArtifactError, ChainError
from ocean_secret_store.tools import project_root

from .conftest import Chain

# -- artifacts (no chain needed) -------------------------------------------------------------


def test_artifacts_dir_is_the_installed_distributions() -> None:
    dist = distribution("keeper-contracts")
    installed = {Path(str(dist.locate_file(f))).resolve() for f in dist.files or () if f.name.endswith(".json")}
    loaded = artifacts.load_artifact("DIDRegistry")
    assert loaded.path.resolve() in installed
    assert loaded.version == "v0.13.2"


def test_repository_holds_no_contract_bytecode() -> None:
    root = project_root()
    for folder in ("ocean_secret_store", "tests"):
        found = [p for p in (root / folder).rglob("*.json") if "bytecode" in p.read_text(errors="replace")]
        assert found == []


def test_networks_and_names() -> None:
    nets = artifacts.networks()
    assert {"development", "nile", "mainnet"} <= set(nets)
    names = artifacts.contract_names("development")
    assert set(KEEPER_CONTRACTS) | {"EpochLibrary", "DIDRegistryLibrary"} <= set(names)


def test_missing_artifact_is_a_clear_error() -> None:
    with pytest.raises(ArtifactError, match=r"NoSuchContract\.development\.json"):
        artifacts.load_artifact("NoSuchContract")
    with pytest.raises(ArtifactError, match="networks there"):
        artifacts.load_artifact("DIDRegistry", "nonet")


def test_linking_replaces_every_placeholder() -> None:
    registry = artifacts.load_artifact("DIDRegistry")
    assert registry.link_references == {"DIDRegistryLibrary"}
    assert artifacts.load_artifact("ConditionStoreManager").link_references == {"EpochLibrary"}
    linked = registry.linked_bytecode({"DIDRegistryLibrary": "0x" + "ab" * 20})
    assert "__" not in linked and "ab" * 20 in linked and len(linked) == len(registry.bytecode)
    with pytest.raises(ArtifactError, match="needs library DIDRegistryLibrary"):
        registry.linked_bytecode({})
    with pytest.raises(ArtifactError, match="must be 20 bytes"):
        registry.linked_bytecode({"DIDRegistryLibrary": "0x1234"})


def test_create_address_matches_anvils_first_deployment() -> None:
    # Well-known: the first contract of anvil/hardhat account 0 lands at 0x5FbDB...aa3.
    deployer, first = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    assert create_address(deployer, 0) == create_address(deployer.lower(), 0) == first


def test_planned_addresses_follow_the_deployers_nonces() -> None:
    deployer = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    plan = planned_addresses(deployer)
    assert list(plan)[-len(ALL_CONTRACTS):] == list(ALL_CONTRACTS)
    assert list(plan.values()) == [create_address(deployer, nonce) for nonce in range(len(plan))]
    assert planned_addresses(deployer, 3) == dict(zip(plan, [create_address(deployer, n + 3) for n in range(len(plan))],
                                                      strict=True))


# -- deployment on anvil ---------------------------------------------------------------------


@pytest.mark.integration
def test_a_fresh_chain_gets_exactly_the_planned_addresses(chain: Chain) -> None:
    # The session's deployment was the deployer's first transactions on a fresh anvil.
    assert dict(chain.deployment.addresses) == planned_addresses(chain.deployer.address)
    assert list(chain.deployment.addresses) == list(planned_addresses(chain.deployer.address))


@pytest.mark.integration
def test_every_contract_has_code(chain: Chain) -> None:
    w3 = chain.keeper.w3
    for name, address in chain.deployment.addresses.items():
        assert len(w3.eth.get_code(to_address(address))) > 0, name


@pytest.mark.integration
def test_template_is_approved_with_the_right_conditions(chain: Chain) -> None:
    k, d = chain.keeper, chain.deployment
    assert d.template_id == ESCROW_ACCESS_TEMPLATE_ID == keccak256(b"EscrowAccessSecretStoreTemplate")
    assert bytes(k.call("TemplateStoreManager", "generateId", "EscrowAccessSecretStoreTemplate")) == d.template_id
    assert k.call("TemplateStoreManager", "isTemplateIdApproved", d.template_id) is True
    template = k.call("TemplateStoreManager", "getTemplate", d.template_id)
    assert list(template[4]) == [d["LockRewardCondition"], d["AccessSecretStoreCondition"], d["EscrowReward"]]
    assert [bytes(t) for t in template[5]] == [d.actor_types["provider"], d.actor_types["consumer"]]
    for actor, type_id in d.actor_types.items():
        assert bytes(k.call("TemplateStoreManager", "getTemplateActorTypeId", actor)) == type_id


@pytest.mark.integration
def test_every_release_contract_is_initialised_and_both_templates_approved(chain: Chain) -> None:
    # As keeper-contracts 0.13.2's migrations did: every contract of its contracts.json, and both templates.
    k, d = chain.keeper, chain.deployment
    assert set(ALL_CONTRACTS) == set(KEEPER_CONTRACTS) | set(OTHER_CONDITIONS) <= set(d.addresses)
    w3 = k.w3
    for name in ALL_CONTRACTS:  # an implementation deployed without its initialize has no owner
        contract = w3.eth.contract(address=to_address(d[name]), abi=artifacts.load_artifact(name).abi)
        assert contract.functions.owner().call() == d.owner, name
    assert d.template_ids == {"EscrowAccessSecretStoreTemplate": ESCROW_ACCESS_TEMPLATE_ID,
                              "EscrowComputeExecutionTemplate": keccak256(b"EscrowComputeExecutionTemplate")}
    compute = d.template_ids["EscrowComputeExecutionTemplate"]
    assert k.call("TemplateStoreManager", "isTemplateIdApproved", compute) is True
    template = k.call("TemplateStoreManager", "getTemplate", compute)
    assert list(template[4]) == [d["LockRewardCondition"], d["ComputeExecutionCondition"], d["EscrowReward"]]


@pytest.mark.integration
def test_roles(chain: Chain) -> None:
    k, d = chain.keeper, chain.deployment
    token_owner = k.call("OceanToken", "owner")
    assert token_owner == d.owner == chain.deployer.address
    assert token_owner != d.minter == chain.minter.address
    assert k.call("OceanToken", "isMinter", d.minter) is True
    assert k.call("OceanToken", "isMinter", d["Dispenser"]) is True
    assert k.call("OceanToken", "isMinter", chain.stranger.address) is False
    assert k.call("ConditionStoreManager", "getCreateRole") == d["AgreementStoreManager"]
    assert k.call("AgreementStoreManager", "getDIDRegistryAddress") == d["DIDRegistry"]
    assert k.call("Dispenser", "oceanToken") == d["OceanToken"]


@pytest.mark.integration
def test_ownership_can_go_to_another_account(chain: Chain) -> None:
    new_owner = chain.spare[0]
    second = deploy_keeper_contracts(
        chain.anvil.url, chain.spare[1].key, minter=chain.minter.address, owner=new_owner.address
    )
    print(f"\nsecond deployment (with ownership transfer) took {second.seconds:.2f} s")
    keeper = Keeper(chain.anvil.url, second.addresses)
    for name in KEEPER_CONTRACTS:
        assert keeper.call(name, "owner") == new_owner.address, name
    for name in OTHER_CONDITIONS:
        contract = keeper.w3.eth.contract(address=to_address(second[name]), abi=artifacts.load_artifact(name).abi)
        assert contract.functions.owner().call() == new_owner.address, name
    assert keeper.call("OceanToken", "isMinter", new_owner.address) is True
    assert keeper.call("OceanToken", "isMinter", chain.spare[1].address) is False
    assert keeper.call("TemplateStoreManager", "isTemplateIdApproved", second.template_id) is True


@pytest.mark.integration
def test_minter_must_differ_from_owner(chain: Chain) -> None:
    with pytest.raises(ChainError, match="minter must differ"):
        deploy_keeper_contracts(chain.anvil.url, chain.spare[2].key, minter=chain.spare[2].address)


@pytest.mark.integration
def test_written_artifacts_serve_from_network(chain: Chain, tmp_path: Path) -> None:
    d = chain.deployment
    assert Deployment.from_json(json.loads(json.dumps(d.to_json()))) == d
    d.write_artifacts(tmp_path, network="anvil")
    assert artifacts.networks(tmp_path) == ["anvil"]
    keeper = Keeper.from_network(chain.anvil.url, "anvil", artifacts_directory=str(tmp_path))
    assert keeper.addresses["AccessSecretStoreCondition"] == d["AccessSecretStoreCondition"]
    assert keeper.call("TemplateStoreManager", "isTemplateIdApproved", d.template_id) is True


def test_deployment_from_json_refuses_a_malformed_id() -> None:
    record = {
        "chain_id": 1, "contracts": {}, "template_id": "0x" + "ab" * 31, "actor_types": {},
        "deployer": "0x", "owner": "0x", "minter": "0x",
    }
    with pytest.raises(ChainError, match="template_id must be 32 bytes"):
        Deployment.from_json(record)
    with pytest.raises(ChainError, match="provider"):
        Deployment.from_json({**record, "template_id": "0x" + "ab" * 32, "actor_types": {"provider": "0xzz"}})
