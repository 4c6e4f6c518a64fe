"""The real ocean-secret-store-client 0.0.2 (what squid-py 0.9.3 and Brizo 0.9 encrypt and decrypt
with), unmodified on Python 3.7, against a devnet: its ``secretstore_*`` JSON-RPC calls go to the
devnet's JSON-RPC face (the "Parity node", ``rpc_url`` and ``rpc_accounts``), its Secret Store
HTTP calls to the key servers, and the key servers ask the chain who may decrypt.

The on-chain steps a publisher and a provider take in Ocean's flow (register the DID, order, grant)
are done here with the project's own keeper wrapper, as in tests/integration/test_chain_acl.py.
"""

from __future__ import annotations

import json
import os

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from ocean_secret_store import devnet
from ocean_secret_store.chain.keeper import Keeper
from ocean_secret_store.client.client import SecretStoreClient
from tests.compat.conftest import Driver, StackError

pytestmark = [pytest.mark.integration, pytest.mark.compat]

PRICE = 3
# A files list as squid-py encrypts it, with text outside ASCII: the client sends UTF-8 bytes as hex.
DOCUMENT = json.dumps([{"index": 0, "url": "https://example.org/data.csv", "contentType": "text/csv"},
                       {"index": 1, "url": "https://example.org/notes-ü€.txt"}], ensure_ascii=False)


def account(net: devnet.DevnetState, role: str) -> LocalAccount:
    return Account.from_key(net.accounts[role].private_key)


def publish(drive: Driver, net: devnet.DevnetState, threshold: int = 0) -> tuple[str, str]:
    """Squid-py's order: the publisher encrypts under a fresh DID hash, then registers the DID on chain
    with the provider listed. ``(document_id, encrypted)``."""
    document_id = os.urandom(32).hex()
    encrypted = drive("ssc_publish", account="publisher", document_id=document_id, document=DOCUMENT,
                      threshold=threshold)
    Keeper(net.chain_url, net.contracts).register_did(account(net, "publisher"), document_id,
                                                      providers=[net.provider_address],
                                                      value="http://aquarius.invalid/api/v1/aquarius/assets/ddo")
    return document_id, encrypted


def test_the_stack_is_the_real_parity_era_one(drive: Driver) -> None:
    versions = drive("versions")
    assert versions.pop("python").startswith("3.7.")
    assert versions == {"squid-py": "0.9.3", "ocean-keeper": "0.3.5", "ocean-utils": "0.3.7",
                        "ocean-secret-store-client": "0.0.2", "web3": "4.5.0", "requests": "2.23.0",
                        "eth-account": "0.3.0"}


@pytest.mark.parametrize("threshold", [0, 2], ids=["squid-default-0", "threshold-max"])
def test_publish_and_decrypt_round_trip(drive: Driver, net: devnet.DevnetState, threshold: int) -> None:
    assert threshold <= (net.threshold_max or 0)
    document_id, encrypted = publish(drive, net, threshold)
    # Parity's format: "0x" + hex of ciphertext || 16-byte IV
    assert encrypted.startswith("0x")
    assert len(encrypted) == 2 + 2 * (len(DOCUMENT.encode()) + 16)
    assert DOCUMENT.encode().hex() not in encrypted
    # the publisher, through another entry node; the provider (listed on the DID), as Brizo decrypts
    assert drive("ssc_decrypt", account="publisher", document_id=document_id, encrypted=encrypted, node=2) == DOCUMENT
    assert drive("ssc_decrypt", account="provider", document_id=document_id, encrypted=encrypted) == DOCUMENT


def test_interoperates_with_this_projects_sdk(drive: Driver, net: devnet.DevnetState) -> None:
    document_id, encrypted = publish(drive, net)
    ours = SecretStoreClient([n.http_url for n in net.nodes], account(net, "provider"))
    assert ours.decrypt_document(document_id, encrypted) == DOCUMENT
    # and the other way: our SDK publishes, the Parity-era client decrypts
    other_id = os.urandom(32).hex()
    publisher = SecretStoreClient([n.http_url for n in net.nodes], account(net, "publisher"))
    other = publisher.publish_document(other_id, DOCUMENT, threshold=1)
    Keeper(net.chain_url, net.contracts).register_did(account(net, "publisher"), other_id,
                                                      providers=[net.provider_address])
    assert drive("ssc_decrypt", account="provider", document_id=other_id, encrypted=other) == DOCUMENT


def test_consumer_refused_until_granted_on_chain(drive: Driver, net: devnet.DevnetState) -> None:
    document_id, encrypted = publish(drive, net, threshold=1)
    # the consumer never ordered: the key servers refuse, as Parity's did, and the client raises
    with pytest.raises(StackError) as refused:
        drive("ssc_decrypt", account="consumer", document_id=document_id, encrypted=encrypted)
    assert refused.value.type == "RPCError"
    assert "Failed to retrieve decryption keys" in refused.value.message

    # Ocean's order: the consumer creates the agreement and locks the reward; still refused until the
    # provider fulfils the access condition (what the events handler does)
    keeper = Keeper(net.chain_url, net.contracts)
    publisher, consumer, provider = account(net, "publisher"), account(net, "consumer"), account(net, "provider")
    keeper.request_tokens(consumer, PRICE)
    agreement_id = os.urandom(32)
    keeper.create_access_agreement(consumer, agreement_id, bytes.fromhex(document_id), consumer=consumer.address,
                                   publisher=publisher.address, provider=provider.address, price=PRICE * 10**18)
    keeper.lock_reward(consumer, agreement_id, PRICE * 10**18)
    with pytest.raises(StackError, match="Failed to retrieve decryption keys"):
        drive("ssc_decrypt", account="consumer", document_id=document_id, encrypted=encrypted)
    keeper.fulfill_access(provider, agreement_id, bytes.fromhex(document_id), consumer.address)
    assert drive("ssc_decrypt", account="consumer", document_id=document_id, encrypted=encrypted) == DOCUMENT


def test_wrong_password_is_an_rpc_error(drive: Driver, net: devnet.DevnetState) -> None:
    document_id, encrypted = publish(drive, net)
    with pytest.raises(StackError) as refused:
        drive("ssc_decrypt", account="publisher", password="not-the-password", document_id=document_id,
              encrypted=encrypted)
    assert refused.value.type == "RPCError"
    assert "Failed to sign the document" in refused.value.message
