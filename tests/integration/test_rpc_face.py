"""Issue 11, finding 3, against a real devnet: the JSON-RPC face no longer forwards the chain's cheat
codes or signs with the chain's unlocked accounts, refuses unlocks unless enabled, still serves its
keystore accounts (a transaction sent with ``personal_sendTransaction`` is mined) and the chain
reads, and slows down password guessing.

Before the fix, ``anvil_setCode`` through the face replaced the ACL contract's code,
``eth_sendTransaction`` from anvil's accounts was mined, and 30 wrong passwords took 0.4 s.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from ocean_secret_store import devnet
from ocean_secret_store.client import rpc
from ocean_secret_store.testing.devnets import running_devnet

pytestmark = pytest.mark.integration

#: "Always allow": PUSH1 1, PUSH1 0, MSTORE, PUSH1 32, PUSH1 0, RETURN (what the attacker installed).
ALWAYS_TRUE = "0x600160005260206000f3"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devnet.DevnetState]:
    with running_devnet(tmp_path_factory.mktemp("rpc-face"), 3, acl="contract") as state:
        yield state


class Face:
    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.ids = iter(range(1, 1_000_000))

    def call(self, method: str, params: list[Any]) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "id": next(self.ids), "method": method, "params": params}
        reply = self.session.post(self.url, json=body, timeout=30)
        assert reply.status_code == 200, reply.text
        answer: dict[str, Any] = reply.json()
        return answer

    def result(self, method: str, params: list[Any]) -> Any:
        answer = self.call(method, params)
        assert "error" not in answer, (method, answer)
        return answer["result"]

    def error(self, method: str, params: list[Any]) -> dict[str, Any]:
        answer = self.call(method, params)
        assert "result" not in answer, (method, answer)
        failure: dict[str, Any] = answer["error"]
        return failure


@pytest.fixture(scope="module")
def face(net: devnet.DevnetState) -> Face:
    return Face(str(net.rpc_url))


def _chain(net: devnet.DevnetState, method: str, params: list[Any]) -> Any:
    """Straight to anvil (the test's own view of the chain, not through the face)."""
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    return requests.post(net.chain_url, json=body, timeout=30).json()["result"]


def _keystore_account(net: devnet.DevnetState, role: str) -> devnet.RpcAccount:
    return next(account for account in net.rpc_accounts if account.role == role)


def test_cheat_codes_are_refused_and_the_acl_contract_keeps_its_code(net: devnet.DevnetState, face: Face) -> None:
    acl = net.contracts["AccessSecretStoreCondition"]
    code_before = _chain(net, "eth_getCode", [acl, "latest"])
    assert len(code_before) > 2
    for method, params in [
        ("anvil_setCode", [acl, ALWAYS_TRUE]),
        ("hardhat_setCode", [acl, ALWAYS_TRUE]),
        ("anvil_setStorageAt", [acl, "0x0", "0x" + "00" * 32]),
        ("anvil_impersonateAccount", [net.accounts["deployer"].address]),
        ("anvil_setBalance", [net.accounts["consumer"].address, "0xffffffffffffffffffff"]),
        ("evm_snapshot", []),
        ("evm_mine", []),
        ("debug_traceTransaction", ["0x" + "00" * 32]),
        ("admin_nodeInfo", []),
        ("personal_newAccount", ["pw"]),
        ("eth_signTransaction", [{"from": net.accounts["deployer"].address}]),
    ]:
        failure = face.error(method, params)
        assert failure["code"] == rpc.METHOD_NOT_FOUND, (method, failure)
        assert method in failure["message"] and "not forwarded to the chain" in failure["message"]
    # through the face the code reads the same, and anvil agrees
    assert face.result("eth_getCode", [acl, "latest"]) == code_before == _chain(net, "eth_getCode", [acl, "latest"])


def test_no_signing_for_accounts_the_face_does_not_hold(net: devnet.DevnetState, face: Face) -> None:
    deployer = net.accounts["deployer"].address  # unlocked on anvil, not in the face's keystore
    assert deployer not in face.result("eth_accounts", [])
    nonce_before = _chain(net, "eth_getTransactionCount", [deployer, "latest"])
    transfer = {"from": deployer, "to": net.accounts["consumer"].address, "value": hex(10**18)}
    for method, params in [
        ("eth_sendTransaction", [transfer]),
        ("personal_sendTransaction", [transfer, ""]),
        ("eth_sign", [deployer, "0x" + "ab" * 32]),
        ("personal_sign", ["0x" + "ab" * 32, deployer, ""]),
    ]:
        failure = face.error(method, params)
        assert failure["code"] == rpc.ACCOUNT_ERROR, (method, failure)
        assert "only for its keystore accounts" in failure["message"]
    # and a keystore account with no unlock cannot send without its password either
    publisher = _keystore_account(net, "publisher")
    locked = face.error("eth_sendTransaction", [{"from": publisher.address, "to": deployer, "value": "0x1"}])
    assert locked["code"] == rpc.ACCOUNT_LOCKED
    assert _chain(net, "eth_getTransactionCount", [deployer, "latest"]) == nonce_before
    assert _chain(net, "eth_getTransactionCount", [publisher.address, "pending"]) == face.result(
        "eth_getTransactionCount", [publisher.address, "pending"])


def test_unlock_is_refused_by_default(net: devnet.DevnetState, face: Face) -> None:
    publisher = _keystore_account(net, "publisher")
    failure = face.error("personal_unlockAccount", [publisher.address, publisher.password, 60])
    assert failure["code"] == rpc.METHOD_NOT_FOUND and "--allow-unlock" in failure["message"]
    assert publisher.password not in failure["message"]
    assert face.error("eth_sign", [publisher.address, "0x00"])["code"] == rpc.ACCOUNT_LOCKED


def test_personal_send_transaction_of_a_keystore_account_is_mined(net: devnet.DevnetState, face: Face) -> None:
    consumer = _keystore_account(net, "consumer")
    recipient = "0x" + "5a" * 20
    value = 12345
    before = int(face.result("eth_getBalance", [recipient, "latest"]), 16)
    # what ocean-keeper 0.3.5 sends: from/to/value, the rest left to the node, and the passphrase
    tx_hash = face.result("personal_sendTransaction",
                          [{"from": consumer.address, "to": recipient, "value": hex(value)}, consumer.password])
    receipt = face.result("eth_getTransactionReceipt", [tx_hash])
    assert receipt is not None and int(receipt["status"], 16) == 1
    assert receipt["from"].lower() == consumer.address.lower()
    assert int(face.result("eth_getBalance", [recipient, "latest"]), 16) == before + value
    # a second one right after takes the next nonce
    second = face.result("personal_sendTransaction",
                         [{"from": consumer.address, "to": recipient, "value": "0x1"}, consumer.password])
    transaction = face.result("eth_getTransactionByHash", [second])
    assert int(transaction["nonce"], 16) == int(face.result("eth_getTransactionByHash", [tx_hash])["nonce"], 16) + 1


def test_chain_reads_are_still_forwarded(net: devnet.DevnetState, face: Face) -> None:
    assert int(face.result("eth_chainId", []), 16) == net.chain_id
    assert face.result("net_version", []) == str(net.chain_id)
    block = face.result("eth_getBlockByNumber", ["latest", False])
    assert int(block["number"], 16) == int(face.result("eth_blockNumber", []), 16) >= 1
    assert face.result("eth_getBlockByHash", [block["hash"], False])["hash"] == block["hash"]
    assert int(face.result("eth_gasPrice", []), 16) > 0
    registry = net.contracts["DIDRegistry"]
    logs = face.result("eth_getLogs", [{"fromBlock": "0x0", "toBlock": "latest", "address": registry}])
    assert isinstance(logs, list)
    filter_id = face.result("eth_newBlockFilter", [])
    assert isinstance(face.result("eth_getFilterChanges", [filter_id]), list)
    assert face.result("eth_uninstallFilter", [filter_id]) is True
    # checkPermissions(address, bytes32) through eth_call: nobody has access to an unknown document
    data = "0xb36a9a7c" + "00" * 12 + net.accounts["consumer"].address[2:].lower() + "11" * 32
    answer = face.result("eth_call", [{"to": net.contracts["AccessSecretStoreCondition"], "data": data}, "latest"])
    assert int(answer, 16) == 0


def test_wrong_password_guessing_is_slowed_down(net: devnet.DevnetState, face: Face) -> None:
    publisher = _keystore_account(net, "publisher")
    window = 1.5
    delays: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < window:
        failure = face.error("secretstore_signRawHash", [publisher.address, f"guess{len(delays)}", "0x" + "11" * 32])
        assert failure["code"] == rpc.PASSWORD_INVALID
        match = re.search(r"answered after ([0-9.]+) s", failure["message"])
        assert match is not None, failure
        delays.append(float(match.group(1)))
    elapsed = time.perf_counter() - start
    # before: ~350 guesses a second; now the delays double from 0.25 s (0.25 + 0.5 + 1 > 1.5)
    assert len(delays) <= 4, delays
    assert delays[:3] == [0.25, 0.5, 1.0] and elapsed >= 0.9 * sum(delays)
    print(f"\n{len(delays)} wrong passwords answered in {elapsed:.2f} s (delays {delays})")
    # the right password, sent after the last answer, is not delayed
    start = time.perf_counter()
    face.result("secretstore_signRawHash", [publisher.address, publisher.password, "0x" + "11" * 32])
    assert time.perf_counter() - start < 0.25
