"""DID front-running (issue 11, finding 1) against a real devnet with the contract ACL.

The publish flow generates and stores a document key first and registers the DID last (squid-py's
order). Whoever learns the key id in between can register the DID first, become its owner on chain
and pass ``checkPermissions``. Every key server binds a DID key to its author: it is served only if
the author is the DID's first registrant (or to the author itself), so the hijack yields nothing to
the hijacker nor to anyone the hijacker lets in, through any node; the publisher's own flow and a
later ownership transfer keep working.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount

from ocean_secret_store import devnet
from ocean_secret_store.chain.keeper import Keeper
from ocean_secret_store.client.client import SecretStoreClient
from ocean_secret_store.crypto.curve import Point
from ocean_secret_store.crypto.document import generate_document_key
from ocean_secret_store.exceptions import ConsensusUnreachable, ContractReverted
from ocean_secret_store.testing.devnets import running_devnet

pytestmark = pytest.mark.integration

PRICE = 5


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devnet.DevnetState]:
    with running_devnet(tmp_path_factory.mktemp("front-running"), 3, acl="contract", session_timeout=2.0) as state:
        yield state


@pytest.fixture(scope="module")
def keeper(net: devnet.DevnetState) -> Keeper:
    return Keeper(net.chain_url, net.contracts)


def role(net: devnet.DevnetState, name: str) -> LocalAccount:
    return Account.from_key(net.accounts[name].private_key)


def funded(net: devnet.DevnetState) -> LocalAccount:
    """A fresh account with gas money (anvil's own port: the devnet chain, not the RPC face)."""
    who: LocalAccount = Account.create()
    reply = requests.post(net.chain_url, json={"jsonrpc": "2.0", "id": 1, "method": "anvil_setBalance",
                                               "params": [who.address, hex(10**18)]}, timeout=10)
    reply.raise_for_status()
    return who


def squid_py_publish(net: devnet.DevnetState, publisher: LocalAccount, did: bytes) -> Point:
    """squid-py's order, first half: generate the server key, store a locally made document key.
    The DID is not registered yet; returns the document key."""
    owner = SecretStoreClient([n.http_url for n in net.nodes], publisher)
    server_key = owner.generate_server_key(did, 1)
    document_key, common, encrypted = generate_document_key(server_key)
    owner.store_document_key(did, common, encrypted)
    return document_key


def nothing_through_any_node(net: devnet.DevnetState, who: LocalAccount, did: bytes) -> None:
    for node in net.nodes:
        client = SecretStoreClient(node.http_url, who)
        with pytest.raises(ConsensusUnreachable):
            client.recover_document_key(did)
        with pytest.raises(ConsensusUnreachable):
            client.retrieve_document_key(did)
        with pytest.raises(ConsensusUnreachable):
            client.schnorr_sign(did, os.urandom(32))


def served_through_every_node(net: devnet.DevnetState, who: LocalAccount, did: bytes, document_key: Point) -> None:
    for node in net.nodes:
        assert SecretStoreClient(node.http_url, who).recover_document_key(did) == document_key


def audit_lines(net: devnet.DevnetState) -> list[dict[str, str]]:
    lines = []
    for node in net.nodes:
        for path in sorted(Path(node.data_dir).glob("audit*.jsonl*")):
            lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines


def test_a_front_run_did_yields_nothing_to_the_hijacker(net: devnet.DevnetState, keeper: Keeper) -> None:
    publisher = role(net, "publisher")
    attacker, accomplice, granted = funded(net), Account.create(), Account.create()
    did = os.urandom(32)
    document_key = squid_py_publish(net, publisher, did)

    # the attacker saw the key id and registers the DID first, with an accomplice as its provider
    # and another one granted on the registry: all three pass checkPermissions
    keeper.register_did(attacker, did, providers=[accomplice.address], value="http://attacker.example/ddo")
    keeper.registry_grant_permission(attacker, did, granted.address)
    assert all(keeper.check_permissions(who.address, did) for who in (attacker, accomplice, granted))
    with pytest.raises(ContractReverted, match="Attributes must be registered by the DID owners"):
        keeper.register_did(publisher, did)

    for who in (attacker, accomplice, granted):
        nothing_through_any_node(net, who, did)
    # the author keeps its own key
    served_through_every_node(net, publisher, did, document_key)

    # every node refused on its own as the entry node, and its audit says why (the members' own
    # refusal, for an entry node that would let the request through, is tests/node/test_sessions.py's)
    reason = f"the DID was first registered by {attacker.address.lower()}, not by the key's author"
    refusals = [line for line in audit_lines(net)
                if line["key_id"] == "0x" + did.hex() and line["decision"] == "refused"]
    assert {line["node"] for line in refusals} == {n.address.lower() for n in net.nodes}
    assert all(line["reason"] == f"ConsensusUnreachable: {reason} {publisher.address.lower()}"
               for line in refusals)


def test_the_publishers_own_flow_still_works(net: devnet.DevnetState, keeper: Keeper) -> None:
    """squid-py's order, then an order: the consumer who got access is served by every node."""
    publisher, consumer, provider = role(net, "publisher"), role(net, "consumer"), role(net, "provider")
    did = os.urandom(32)
    document_key = squid_py_publish(net, publisher, did)
    keeper.register_did(publisher, did, providers=[provider.address], value="http://metadata.example/ddo")

    nothing_through_any_node(net, consumer, did)
    keeper.request_tokens(consumer, PRICE)
    agreement_id = os.urandom(32)
    keeper.create_access_agreement(consumer, agreement_id, did, consumer=consumer.address,
                                   publisher=publisher.address, provider=provider.address, price=PRICE * 10**18)
    keeper.lock_reward(consumer, agreement_id, PRICE * 10**18)
    keeper.fulfill_access(provider, agreement_id, did, consumer.address)
    served_through_every_node(net, consumer, did, document_key)
    served_through_every_node(net, provider, did, document_key)


def test_an_ownership_transfer_keeps_the_key_served(net: devnet.DevnetState, keeper: Keeper) -> None:
    publisher, new_owner = role(net, "publisher"), funded(net)
    grantee, stranger = Account.create(), Account.create()
    did = os.urandom(32)
    document_key = squid_py_publish(net, publisher, did)
    keeper.register_did(publisher, did)
    keeper.transact(publisher, "DIDRegistry", "transferDIDOwnership", did, new_owner.address)
    keeper.register_did(new_owner, did, value="updated by the new owner")  # not a first registration
    keeper.registry_grant_permission(new_owner, did, grantee.address)

    # the added cost: a node that serves a DID to someone other than its author for the first time
    # asks its chain for the DID's first registrant (one eth_getLogs); later retrievals find it
    # cached and cost what they did before (one checkPermissions per node)
    with requests.Session() as session:
        clients = [SecretStoreClient(node.http_url, grantee, session=session) for node in net.nodes]
        for node in net.nodes:  # open the connections first: only the key servers' work is timed
            session.get(f"{node.http_url}/health", timeout=10).raise_for_status()
        first = []
        for client in clients:  # each node is the entry once: its first look-up of this DID
            started = time.perf_counter()
            assert client.recover_document_key(did) == document_key
            first.append(time.perf_counter() - started)
        cached = []
        for client in clients * 4:
            started = time.perf_counter()
            assert client.recover_document_key(did) == document_key
            cached.append(time.perf_counter() - started)
    print(f"\nshadow retrieval by a grantee: first through each node {', '.join(f'{t * 1e3:.1f}' for t in first)} ms "
          f"(checkPermissions + one eth_getLogs per node not yet asked), "
          f"then median {statistics.median(cached) * 1e3:.1f} ms (first registrant cached)")

    served_through_every_node(net, new_owner, did, document_key)
    served_through_every_node(net, publisher, did, document_key)  # the author keeps its own key
    nothing_through_any_node(net, stranger, did)
