"""A Parity-era program, unmodified but for its URLs: exactly the calls Ocean's secret-store-client-py
made (ocean.md §2.1/§2.2): JSON-RPC to a "Parity node" for signing and the document key crypto,
HTTP to the Secret Store for key generation, storing and shadow retrieval. Here the "Parity node"
is our JSON-RPC face and the Secret Store is our devnet; the program knows only two URLs and an
account with its password."""

from __future__ import annotations

from collections.abc import Iterator
from hashlib import sha256
from typing import Any

import pytest
import requests
from eth_account import Account

from ocean_secret_store import devnet
from ocean_secret_store.chain.keeper import Keeper
from ocean_secret_store.testing.devnets import running_devnet

pytestmark = pytest.mark.integration


class RPCError(Exception):
    pass


class ParityEraClient:
    """What secret-store-client-py 0.0.2 did, call for call (written from its documented behaviour)."""

    def __init__(self, secret_store_url: str, parity_client_url: str, address: str, password: str) -> None:
        self.ss, self.parity, self.address, self.password = secret_store_url, parity_client_url, address, password

    def _rpc(self, method: str, params: list[Any]) -> Any:
        reply = requests.post(self.parity, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                              timeout=30)
        body = reply.json()
        if reply.status_code != 200 or "error" in body:
            raise RPCError(body.get("error"))
        return body["result"]

    def publish_document(self, document_id: str, document: str, threshold: int = 0) -> str:
        signature = self._rpc("secretstore_signRawHash", [self.address, self.password, "0x" + document_id])[2:]
        reply = requests.post(f"{self.ss}/shadow/{document_id}/{signature}/{threshold}", timeout=30)
        if reply.status_code != 200:
            raise RPCError(reply.text)
        server_key = reply.json()
        generated = self._rpc("secretstore_generateDocumentKey", [self.address, self.password, server_key])
        encrypted = self._rpc("secretstore_encrypt", [self.address, self.password, generated["encrypted_key"],
                                                      "0x" + document.encode().hex()])
        reply = requests.post(f"{self.ss}/shadow/{document_id}/{signature}/{generated['common_point'][2:]}/"
                              f"{generated['encrypted_point'][2:]}", timeout=30)
        if reply.status_code != 200:
            raise RPCError(reply.text)
        return encrypted

    def decrypt_document(self, document_id: str, encrypted_document: str) -> str:
        signature = self._rpc("secretstore_signRawHash", [self.address, self.password, "0x" + document_id])[2:]
        reply = requests.get(f"{self.ss}/shadow/{document_id}/{signature}", timeout=30)
        if reply.status_code != 200:
            raise RPCError(reply.text)
        shadow = reply.json()
        plain = self._rpc("secretstore_shadowDecrypt", [
            self.address, self.password, shadow["decrypted_secret"], shadow["common_point"],
            shadow["decrypt_shadows"], encrypted_document])
        return bytes.fromhex(plain[2:]).decode()


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devnet.DevnetState]:
    with running_devnet(tmp_path_factory.mktemp("parity-era"), 3, acl="contract") as state:
        yield state


def test_parity_era_program_round_trips_a_document(net: devnet.DevnetState) -> None:
    publisher = next(a for a in net.rpc_accounts if a.role == "publisher")
    consumer = next(a for a in net.rpc_accounts if a.role == "consumer")
    document = '[{"url": "https://example.org/data.csv", "index": 0}]'
    document_id = sha256(document.encode()).hexdigest()  # the README's choice of id
    # The ACL contract decides who may decrypt: register the id as a DID owned by the publisher.
    Keeper(net.chain_url, net.contracts).register_did(
        Account.from_key(net.accounts["publisher"].private_key), bytes.fromhex(document_id))

    client = ParityEraClient(str(net.secret_store_url), str(net.rpc_url), publisher.address, publisher.password)
    encrypted = client.publish_document(document_id, document, threshold=1)
    assert encrypted.startswith("0x") and len(encrypted) == 2 + 2 * (len(document) + 16)
    # another entry node, same program
    other = ParityEraClient(net.nodes[2].http_url, str(net.rpc_url), publisher.address, publisher.password)
    assert other.decrypt_document(document_id, encrypted) == document

    # the consumer has no permission: the Secret Store refuses, as Parity's did
    stranger = ParityEraClient(str(net.secret_store_url), str(net.rpc_url), consumer.address, consumer.password)
    with pytest.raises(RPCError, match="Consensus unreachable"):
        stranger.decrypt_document(document_id, encrypted)
    # and a wrong password is an RPC error that changes nothing
    wrong = ParityEraClient(str(net.secret_store_url), str(net.rpc_url), publisher.address, "not-the-password")
    with pytest.raises(RPCError):
        wrong.decrypt_document(document_id, encrypted)
    assert client.decrypt_document(document_id, encrypted) == document


def test_rpc_face_proxies_chain_methods(net: devnet.DevnetState) -> None:
    reply = requests.post(str(net.rpc_url), json={"jsonrpc": "2.0", "id": 7, "method": "eth_chainId", "params": []},
                          timeout=10).json()
    assert int(reply["result"], 16) == net.chain_id
    accounts = requests.post(str(net.rpc_url), json={"jsonrpc": "2.0", "id": 8, "method": "eth_accounts",
                                                   "params": []}, timeout=10).json()["result"]
    assert {a.address for a in net.rpc_accounts} <= set(accounts)
