"""Batch retrieval through real key server processes whose every node asks the chain: anvil with
Ocean's keeper contracts, a 3-node devnet with the contract ACL. One ``retrieve_many`` over 21 DIDs
the provider may read and one it may not: each key is decided on chain per key, on the entry node
and on the member, and audited per key."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from ocean_secret_store import devnet
from ocean_secret_store.chain.keeper import Keeper
from ocean_secret_store.client.client import DocumentKeyShadow, SecretStoreClient
from ocean_secret_store.exceptions import ConsensusUnreachable, ServerKeyIsNotFound
from ocean_secret_store.testing.devnets import running_devnet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devnet.DevnetState]:
    with running_devnet(tmp_path_factory.mktemp("batch-chain-devnet"), 3, acl="contract",
                        session_timeout=5.0) as state:
        yield state


def account(net: devnet.DevnetState, role: str) -> LocalAccount:
    return Account.from_key(net.accounts[role].private_key)


def test_a_batch_is_decided_per_key_on_chain(net: devnet.DevnetState) -> None:
    keeper = Keeper(net.chain_url, net.contracts)
    publisher, provider = account(net, "publisher"), account(net, "provider")
    urls = [n.http_url for n in net.nodes]
    with SecretStoreClient(urls, publisher) as owner:
        keys = {}
        for i in range(21):
            did = os.urandom(32)
            # the last DID does not list the provider: no permission on chain for it
            keeper.register_did(publisher, did, providers=[provider.address] if i < 20 else [],
                                value="http://metadata.example/ddo")
            keys[did] = owner.generate_server_and_document_key(did, 1)
    ids = list(keys)
    denied = ids[-1]
    unknown = os.urandom(32)
    with SecretStoreClient(urls, provider) as reader:
        results = reader.recover_many([*ids, unknown], batch_size=50)
        assert results[:20] == [keys[did] for did in ids[:20]]
        assert isinstance(results[20], ConsensusUnreachable)
        assert isinstance(results[21], ServerKeyIsNotFound)
        # the publisher (the keys' author) is served every key, the denied one too
        with SecretStoreClient(urls, publisher) as author:
            assert author.recover_many(ids) == list(keys.values())
        shadows = reader.retrieve_many(ids[:3])
        assert all(isinstance(s, DocumentKeyShadow) for s in shadows)

    # one audit line per key: the entry node's decision for each, and the member's for each served key
    lines = [json.loads(line) for node in net.nodes
             for line in (Path(node.data_dir) / "audit.jsonl").read_text().splitlines()]
    provider_hex = provider.address.lower()
    batch_entries = [e for e in lines if e["requester"] == provider_hex and e["role"] == "entry"
                     and e["operation"] == "retrieve_document_key_shadow"]
    by_key = {e["key_id"]: e for e in batch_entries}
    assert set(by_key) >= {"0x" + did.hex() for did in ids}
    assert by_key["0x" + denied.hex()]["decision"] == "refused"
    assert all(by_key["0x" + did.hex()]["decision"] == "ok" for did in ids[:20])
    members = [e for e in lines if e["requester"] == provider_hex and e["role"] == "member"
               and e["operation"] == "shadow_decryption" and e["decision"] == "allowed"]
    assert {e["key_id"] for e in members} >= {"0x" + did.hex() for did in ids[:20]}
    assert not any(e["key_id"] == "0x" + denied.hex() and e["decision"] == "allowed" for e in members)
