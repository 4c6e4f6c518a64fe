"""On-chain permissions through the real cluster: anvil with Ocean's keeper contracts, a 3-node
devnet whose every key server asks ``AccessSecretStoreCondition.checkPermissions`` itself."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from ocean_secret_store import devnet
from ocean_secret_store.chain.keeper import Keeper
from ocean_secret_store.client.client import SecretStoreClient
from ocean_secret_store.crypto.curve import Point
from ocean_secret_store.exceptions import ConsensusUnreachable, KeyServerError
from ocean_secret_store.testing.devnets import running_devnet

pytestmark = pytest.mark.integration

PRICE = 5


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devnet.DevnetState]:
    with running_devnet(tmp_path_factory.mktemp("chain-devnet"), 3, acl="contract", session_timeout=2.0) as state:
        yield state


@pytest.fixture(scope="module")
def keeper(net: devnet.DevnetState) -> Keeper:
    return Keeper(net.chain_url, net.contracts)


def account(net: devnet.DevnetState, role: str) -> LocalAccount:
    return Account.from_key(net.accounts[role].private_key)


def client(net: devnet.DevnetState, who: LocalAccount) -> SecretStoreClient:
    return SecretStoreClient([n.http_url for n in net.nodes], who)


def published(net: devnet.DevnetState, keeper: Keeper) -> tuple[bytes, Point]:
    """A DID registered on chain by the publisher (provider listed) and its document key stored."""
    did = os.urandom(32)
    publisher, provider = account(net, "publisher"), account(net, "provider")
    keeper.register_did(publisher, did, providers=[provider.address], value="http://metadata.example/ddo")
    owner = client(net, publisher)
    document_key = owner.generate_server_and_document_key(did, 1)
    return did, document_key


def test_permissions_follow_the_chain(net: devnet.DevnetState, keeper: Keeper) -> None:
    did, document_key = published(net, keeper)
    publisher, provider, consumer = account(net, "publisher"), account(net, "provider"), account(net, "consumer")
    stranger = Account.create()

    # a random account is refused; the DID owner and a DID provider are allowed
    with pytest.raises(ConsensusUnreachable):
        client(net, stranger).recover_document_key(did)
    assert client(net, publisher).recover_document_key(did) == document_key
    assert client(net, provider).recover_document_key(did) == document_key

    # the consumer: refused before the agreement, allowed after create -> lock reward -> fulfil access
    with pytest.raises(ConsensusUnreachable):
        client(net, consumer).recover_document_key(did)
    keeper.request_tokens(consumer, PRICE)
    agreement_id = os.urandom(32)
    ids = keeper.create_access_agreement(
        consumer, agreement_id, did, consumer=consumer.address, publisher=publisher.address,
        provider=provider.address, price=PRICE * 10**18,
    )
    keeper.lock_reward(consumer, agreement_id, PRICE * 10**18)
    with pytest.raises(ConsensusUnreachable):  # paying is not enough: the provider grants access
        client(net, consumer).recover_document_key(did)
    keeper.fulfill_access(provider, agreement_id, did, consumer.address)
    assert client(net, consumer).recover_document_key(did) == document_key
    keeper.fulfill_escrow(provider, agreement_id, PRICE * 10**18, publisher.address, consumer.address,
                          ids.lock, ids.access)
    assert keeper.condition_states(agreement_id) == (2, 2, 2)

    # a revoked grant is refused again
    keeper.renounce_permission(publisher, did, consumer.address)
    with pytest.raises(ConsensusUnreachable):
        client(net, consumer).recover_document_key(did)
    assert client(net, provider).recover_document_key(did) == document_key


def test_chain_down_means_refusal_and_nothing_changes(net: devnet.DevnetState, keeper: Keeper) -> None:
    did, document_key = published(net, keeper)
    publisher, provider = account(net, "publisher"), account(net, "provider")
    state_dir = net.state_dir
    devnet.stop_chain(state_dir)
    try:
        started = time.monotonic()
        with pytest.raises(KeyServerError) as refused:
            client(net, provider).recover_document_key(did)
        assert isinstance(refused.value, ConsensusUnreachable)
        assert time.monotonic() - started < 5
        # the refusal is explained in the key servers' logs
        logs = "".join((state_dir / f"node{i}.log").read_text() for i in range(3))
        assert "access check failed" in logs
        # the key's author needs no chain to be served its own key
        assert client(net, publisher).recover_document_key(did) == document_key
    finally:
        net.anvil_pid = devnet.restart_chain(state_dir).anvil_pid
    # chain state survived the restart (anvil dumps and reloads it) and the key is served again
    assert client(net, provider).recover_document_key(did) == document_key
