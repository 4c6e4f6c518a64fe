"""Keeper wrappers against real contracts: DID registration, permissions, the OEP-11 agreement flow."""

from __future__ import annotations

import os

import pytest

from ocean_secret_store.chain.keeper import (
    FULFILLED,
    UNFULFILLED,
    Keeper,
    to_address,
    to_bytes32,
)
from ocean_secret_store.exceptions import ChainError, ChainUnreachable, ContractReverted

from .conftest import Chain

pytestmark = pytest.mark.integration

PRICE = 5 * 10**18


def _registered_did(chain: Chain) -> bytes:
    did = os.urandom(32)
    chain.keeper.register_did(
        chain.publisher.key, did, providers=[chain.provider.address], value="http://aquarius/ddo"
    )
    return did


def test_register_did_sets_owner_and_provider(chain: Chain) -> None:
    k = chain.keeper
    did = _registered_did(chain)
    assert k.did_owner(did) == chain.publisher.address
    assert k.is_did_provider(did, chain.provider.address)
    assert not k.is_did_provider(did, chain.stranger.address)
    event = k.wait_for_event("DIDRegistry", "DIDAttributeRegistered", {"_did": did}, timeout=5)
    assert event["args"]["_owner"] == chain.publisher.address
    assert event["args"]["_value"] == "http://aquarius/ddo"


def test_the_owner_adds_a_provider_who_then_may_read(chain: Chain) -> None:
    k = chain.keeper
    did = _registered_did(chain)
    assert k.check_permissions(chain.spare[0].address, did) is False
    k.add_did_provider(chain.publisher.key, did, chain.spare[0].address)
    assert k.is_did_provider(did, chain.spare[0].address)
    assert k.check_permissions(chain.spare[0].address, did) is True


def test_owner_and_provider_allowed_stranger_refused(chain: Chain) -> None:
    k = chain.keeper
    did = _registered_did(chain)
    assert k.check_permissions(chain.publisher.address, did) is True
    assert k.check_permissions(chain.provider.address, did) is True
    assert k.check_permissions(chain.stranger.address, did) is False
    assert k.check_permissions(chain.consumer.address, did) is False
    unregistered = os.urandom(32)
    assert k.check_permissions(chain.publisher.address, unregistered) is False


def test_condition_ids_local_match_contract_views(chain: Chain) -> None:
    k = chain.keeper
    for _ in range(3):
        agreement, did, price = os.urandom(32), os.urandom(32), int.from_bytes(os.urandom(8), "big")
        local = k.agreement_condition_ids(agreement, did, chain.consumer.address, chain.publisher.address, price)
        onchain = k.agreement_condition_ids_onchain(
            agreement, did, chain.consumer.address, chain.publisher.address, price
        )
        assert local == onchain
        assert len(set(local)) == 3


def test_full_access_flow(chain: Chain) -> None:
    k, consumer, publisher, provider = chain.keeper, chain.consumer, chain.publisher, chain.provider
    did = _registered_did(chain)
    agreement = os.urandom(32)
    assert k.check_permissions(consumer.address, did) is False

    k.request_tokens(consumer.key, 10)
    assert k.token_balance(consumer.address) >= PRICE
    publisher_before = k.token_balance(publisher.address)

    ids = k.create_access_agreement(
        consumer.key, agreement, did, consumer=consumer.address, publisher=publisher.address,
        provider=provider.address, price=PRICE,
    )
    assert k.agreement_conditions(agreement) == tuple(ids)
    assert k.condition_states(agreement) == (UNFULFILLED,) * 3
    assert k.check_permissions(consumer.address, did) is False

    k.lock_reward(consumer.key, agreement, PRICE)
    assert k.condition_states(agreement) == (FULFILLED, UNFULFILLED, UNFULFILLED)
    assert k.check_permissions(consumer.address, did) is False  # paying alone grants nothing

    k.fulfill_access(provider.key, agreement, did, consumer.address)
    assert k.check_permissions(consumer.address, did) is True
    fulfilled = k.wait_for_event("AccessSecretStoreCondition", "Fulfilled", {"_agreementId": agreement}, timeout=5)
    assert fulfilled["args"]["_grantee"] == consumer.address
    assert bytes(fulfilled["args"]["_conditionId"]) == ids.access

    k.fulfill_escrow(provider.key, agreement, PRICE, publisher.address, consumer.address, ids.lock, ids.access)
    assert k.condition_states(agreement) == (FULFILLED,) * 3
    assert k.token_balance(publisher.address) - publisher_before == PRICE


def test_access_grant_then_renounce(chain: Chain) -> None:
    k = chain.keeper
    did = _registered_did(chain)
    grantee = chain.spare[3].address
    k.grant_permission(chain.publisher.key, did, grantee)
    assert k.check_permissions(grantee, did) is True
    k.renounce_permission(chain.provider.key, did, grantee)  # a provider may renounce too
    assert k.check_permissions(grantee, did) is False


def test_registry_grant_then_revoke(chain: Chain) -> None:
    k = chain.keeper
    did = _registered_did(chain)
    grantee = chain.spare[3].address
    k.registry_grant_permission(chain.publisher.key, did, grantee)
    assert k.registry_permission(did, grantee) is True
    assert k.check_permissions(grantee, did) is True
    k.registry_revoke_permission(chain.publisher.key, did, grantee)
    assert k.registry_permission(did, grantee) is False
    assert k.check_permissions(grantee, did) is False


def test_revert_names_contract_function_and_reason(chain: Chain) -> None:
    k = chain.keeper
    did = _registered_did(chain)
    with pytest.raises(ContractReverted) as info:
        k.register_did(chain.stranger.key, did)
    err = info.value
    assert (err.contract, err.function) == ("DIDRegistry", "registerAttribute")
    assert "owner" in err.reason.lower()
    assert str(err).startswith("DIDRegistry.registerAttribute reverted: ")

    with pytest.raises(ContractReverted) as info:
        k.grant_permission(chain.stranger.key, did, chain.stranger.address)
    assert (info.value.contract, info.value.function) == ("AccessSecretStoreCondition", "grantPermission")
    assert k.check_permissions(chain.stranger.address, did) is False

    with pytest.raises(ContractReverted, match=r"EscrowReward\.fulfill reverted"):
        # No such agreement / lock: the escrow refuses.
        k.fulfill_escrow(chain.provider.key, os.urandom(32), PRICE, chain.publisher.address,
                         chain.consumer.address, os.urandom(32), os.urandom(32))


def test_agreement_on_unregistered_did_reverts(chain: Chain) -> None:
    k = chain.keeper
    agreement, did = os.urandom(32), os.urandom(32)
    with pytest.raises(ContractReverted, match=r"^AgreementStoreManager\.createAgreement"):
        k.create_access_agreement(
            chain.consumer.key, agreement, did, consumer=chain.consumer.address,
            publisher=chain.publisher.address, provider=chain.provider.address, price=PRICE,
        )
    assert k.condition_states(agreement) == ()


def test_bad_inputs_and_dead_chain(chain: Chain) -> None:
    with pytest.raises(ChainError, match="32 bytes"):
        to_bytes32(b"\x01" * 31, "did")
    with pytest.raises(ChainError, match="20 bytes"):
        to_address("0x1234")
    with pytest.raises(ChainError, match="20 bytes"):
        to_address(b"\x01" * 19)
    with pytest.raises(ChainError, match="not hex digits"):
        to_address("0x" + "zz" * 20)
    with pytest.raises(ChainError, match="32 bytes"):
        to_bytes32("0x" + "ab" * 31, "did")
    lower = chain.publisher.address.lower()
    assert to_address(lower) == to_address(lower[2:]) == to_address(bytes.fromhex(lower[2:])) == chain.publisher.address
    assert to_bytes32("did:op:" + "ab" * 32) == bytes.fromhex("ab" * 32)

    from ocean_secret_store.chain.anvil import free_port

    dead = Keeper(f"http://127.0.0.1:{free_port()}", chain.deployment.addresses, request_timeout=2)
    with pytest.raises(ChainUnreachable) as info:
        dead.check_permissions(chain.publisher.address, os.urandom(32))
    assert "AccessSecretStoreCondition.checkPermissions" in str(info.value)
    assert info.value.url is not None and info.value.url.startswith("http://127.0.0.1:")
