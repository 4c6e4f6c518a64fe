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


# -- what the Parity-era Ocean stack finds on the devnet (issue 13: Aquarius, every contract, gas) ------


def test_devnet_json_names_what_parity_era_clients_need(net: devnet.DevnetState) -> None:
    import configparser
    import json
    from pathlib import Path

    recorded = json.loads(net.path.read_text())
    for field in ("aquarius_url", "keeper_artifacts", "squid_config", "files_dir", "files_url"):
        assert recorded[field], field
    assert Path(recorded["keeper_artifacts"]).is_dir() and Path(recorded["files_dir"]).is_dir()
    # squid-py 0.9.3's own sections and keys (squid_py/config.py), readable by Python 3.7's configparser
    squid = configparser.ConfigParser()
    squid.read(recorded["squid_config"])
    keeper, resources = squid["keeper-contracts"], squid["resources"]
    assert keeper["keeper.url"] == net.chain_url and keeper["keeper.path"] == recorded["keeper_artifacts"]
    assert keeper["secret_store.url"] == net.secret_store_url and keeper["parity.url"] == net.rpc_url
    publisher = next(a for a in net.rpc_accounts if a.role == "publisher")
    assert (keeper["parity.address"], keeper["parity.password"]) == (publisher.address, publisher.password)
    assert resources["aquarius.url"] == net.aquarius_url and resources["brizo.url"] == net.provider_url
    assert oct(Path(recorded["squid_config"]).stat().st_mode & 0o777) == "0o600"  # it holds a password
    # Ocean(...) and the provider read DDOs through the devnet's Aquarius
    ocean_ini = configparser.ConfigParser(interpolation=None)
    ocean_ini.read(str(net.ocean_config))
    assert ocean_ini["resources"]["metadata.store"] == net.aquarius_url


def test_keeper_artifacts_load_with_web3_and_every_contract_answers(net: devnet.DevnetState) -> None:
    import json
    from pathlib import Path

    from web3 import Web3

    from ocean_secret_store.chain.deploy import ALL_CONTRACTS
    from ocean_secret_store.chain.keeper import KEEPER_LIBRARIES

    w3 = Web3(Web3.HTTPProvider(net.chain_url))
    folder = Path(str(net.keeper_artifacts))
    # ocean-keeper 0.3.5 looks for <Contract>.<network>.json, network "development" for chain ids it does not know
    names = {p.name.removesuffix(".development.json") for p in folder.glob("*.development.json")}
    assert names == {*ALL_CONTRACTS, *KEEPER_LIBRARIES}
    for name in names:
        artifact = json.loads((folder / f"{name}.development.json").read_text())
        assert {"address", "abi", "version"} <= set(artifact) and artifact["address"] == net.contracts[name]
        assert len(w3.eth.get_code(artifact["address"])) > 0, name
        if name in KEEPER_LIBRARIES:
            continue
        contract = w3.eth.contract(address=artifact["address"], abi=artifact["abi"])
        assert contract.functions.owner().call() == net.accounts["deployer"].address, name
    templates = w3.eth.contract(address=net.contracts["TemplateStoreManager"],
                                abi=json.loads((folder / "TemplateStoreManager.development.json").read_text())["abi"])
    for template in ("EscrowAccessSecretStoreTemplate", "EscrowComputeExecutionTemplate"):
        assert templates.functions.isTemplateIdApproved(templates.functions.generateId(template).call()).call()


def test_a_legacy_transaction_at_1_gwei_is_mined(net: devnet.DevnetState) -> None:
    # ocean-keeper 0.3.5 signs web3 4.5 legacy transactions with no chain id and a fixed 1 gwei gas price
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(net.chain_url))
    sender = Account.from_key(net.accounts["minter"].private_key)
    nonce = w3.eth.get_transaction_count(sender.address)
    hashes = []
    for offset in range(3):
        tx = {"to": net.accounts["consumer"].address, "value": 1, "gas": 21_000, "gasPrice": 10**9,
              "nonce": nonce + offset}
        hashes.append(w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction))
    for tx_hash in hashes:
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        assert receipt["status"] == 1 and receipt["effectiveGasPrice"] == 10**9
    assert w3.eth.get_block("latest")["baseFeePerGas"] == 0  # and it stays there


def test_aquarius_serves_published_ddos_and_the_provider_reads_them_from_it(
        net: devnet.DevnetState, tmp_path_factory: pytest.TempPathFactory) -> None:
    import os
    from pathlib import Path

    from ocean_secret_store.ocean.ddo import verify_ddo
    from ocean_secret_store.ocean.host import Ocean
    from ocean_secret_store.ocean.provider.app import consume_params

    data = os.urandom(4096)
    (Path(str(net.files_dir)) / "aquarius.bin").write_bytes(data)
    ocean = Ocean(str(net.ocean_config))
    keys = {role: Account.from_key(key.private_key) for role, key in net.accounts.items()}
    consumer = keys["consumer"]
    metadata = {"main": {"type": "dataset", "name": "via aquarius " + os.urandom(4).hex(), "author": "a",
                         "license": "CC0", "dateCreated": "2026-11-23T00:00:00Z", "price": "0",
                         "files": [{"url": f"{net.files_url}/aquarius.bin", "contentType": "application/octet-stream",
                                    "name": "aquarius.bin"}]}}
    ddo = ocean.assets.create(metadata, keys["publisher"], providers=[keys["provider"].address])
    served = requests.get(f"{net.aquarius_url}/api/v1/aquarius/assets/ddo/{ddo.did}", timeout=10)
    assert served.status_code == 200 and served.json() == ddo.as_dict()
    verify_ddo(ocean.assets.resolve(ddo.did))
    assert ddo.metadata_service["serviceEndpoint"] == f"{net.aquarius_url}/api/v1/aquarius/assets/ddo/{ddo.did}"
    assert ddo.did in requests.get(f"{net.aquarius_url}/api/v1/aquarius/assets", timeout=10).json()["ids"]

    agreement = ocean.assets.order(ddo.did, 2, consumer)
    folder = ocean.assets.consume(agreement, ddo.did, 2, consumer, tmp_path_factory.mktemp("aquarius-consume"))
    assert (folder / "aquarius.bin").read_bytes() == data

    # With the Aquarius stopped, the provider cannot read the DDO; back on its old port, it serves again.
    endpoint = ddo.access_service["serviceEndpoint"]
    params = consume_params(consumer, bytes.fromhex(agreement[2:]), 0)
    devnet.stop_aquarius(net.state_dir)
    try:
        down = requests.get(endpoint, params=params, timeout=30)
        assert down.status_code == 503 and "metadata store" in down.json()["error"]
    finally:
        restarted = devnet.restart_aquarius(net.state_dir)
    assert restarted.aquarius_url == net.aquarius_url
    again = requests.get(endpoint, params=consume_params(consumer, bytes.fromhex(agreement[2:]), 0), timeout=30)
    assert again.status_code == 200 and again.content == data
