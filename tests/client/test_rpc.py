"""The JSON-RPC face over real HTTP: Parity's §10.1/§10.2 vectors, round trips, signing, transactions,
errors, the forwarding allowlist, wrong-password delays.

Every call is a plain JSON-RPC POST made with ``requests``, as Parity-era clients made them. The
servers (the RPC face with and without a chain URL, with and without ``personal_unlockAccount``,
and a fake upstream chain) run in one asyncio loop in a background thread; keystores are written
from the vector accounts with a light KDF, and wrong passwords are delayed milliseconds, not seconds.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web
from eth_account import Account
from eth_account.messages import encode_defunct

from ocean_secret_store.client import rpc
from ocean_secret_store.client.keystore import Keystore, write_keystore
from ocean_secret_store.client.throttle import PasswordThrottle
from ocean_secret_store.crypto import ecies
from ocean_secret_store.crypto.curve import Point
from ocean_secret_store.crypto.document import decrypt_document, encrypt_document
from ocean_secret_store.crypto.hashes import checksum_address, keccak256
from ocean_secret_store.crypto.signatures import recover_address
from ocean_secret_store.testing.servers import ServerThread, closed_port_url

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
RPC_VECTORS: dict[str, Any] = json.loads((VECTORS / "parity_rpc.json").read_text(encoding="utf-8"))
DERIVED: dict[str, Any] = json.loads((VECTORS / "derived.json").read_text(encoding="utf-8"))
SD, KB = RPC_VECTORS["shadow_decrypt"], RPC_VECTORS["key_blob"]

SD_PASSWORD = "shadow password"
KB_PASSWORD = "key-blob password"
OTHER_SECRET = "0x" + "5e" * 32
OTHER_PASSWORD = "other"
OTHER_ADDRESS = Account.from_key(OTHER_SECRET).address
SD_ACCOUNT = Account.from_key("0x" + SD["account_secret"])
KB_ACCOUNT = Account.from_key("0x" + KB["account_secret"])
STRANGER = "0x" + "77" * 20
SERVER_SECRET = 0x5F1B3C2D4E6A7988AABBCCDDEEFF00112233445566778899AABBCCDDEEFF0011
LIGHT = 64  # pbkdf2 rounds: the tests don't need Parity's 10,240
CHAIN_ID = 1337
GAS_PRICE = 1_000_000_000
GAS_ESTIMATE = 21_000
PENDING_NONCE = 7


def fast_throttle() -> PasswordThrottle:
    """Wrong passwords delayed 10 ms, 20 ms, 40 ms, 50 ms, ... so the suite stays fast."""
    return PasswordThrottle(0.01, 0.05)


def h(hex_value: str) -> str:
    return "0x" + hex_value


def shadow_decrypt_params() -> list[Any]:
    """The §10.1 vector's ``secretstore_shadowDecrypt`` parameters, in Parity's order."""
    return [
        SD["account_address"],
        SD_PASSWORD,
        h(SD["decrypted_secret"]),
        h(SD["common_point"]),
        [h(s) for s in SD["decrypt_shadows"]],
        h(SD["encrypted_document"]),
    ]


# -- servers ---------------------------------------------------------------------------------------


class FakeChain:
    """An upstream JSON-RPC server that records raw bodies and answers a few methods (and would sign
    for anyone, as anvil's unlocked accounts do: the face must never let a call reach those)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.raw_transactions: list[str] = []

    def methods(self) -> list[str]:
        return [json.loads(body)["method"] for body in self.bodies if body.startswith(b"{")]

    def answer(self, item: dict[str, Any]) -> dict[str, Any]:
        method = item.get("method")
        params = item.get("params")
        failing = params == ["upstream fails"] or (
            method == "eth_estimateGas" and params and isinstance(params[0], dict) and params[0].get("data") == "0xfe"
        )
        if failing:
            return {
                "jsonrpc": "2.0",
                "error": {"code": -32000, "message": "upstream says no"},
                "id": item.get("id"),
            }
        if method == "eth_sendRawTransaction" and params:
            self.raw_transactions.append(params[0])
            return {"jsonrpc": "2.0", "result": h(keccak256(bytes.fromhex(params[0][2:])).hex()), "id": item["id"]}
        result: Any = {
            "eth_blockNumber": "0x2a",
            "personal_sign": "0x" + "ee" * 65,
            "eth_sign": "0x" + "dd" * 65,
            "eth_sendTransaction": "0x" + "cc" * 32,
            "eth_chainId": hex(CHAIN_ID),
            "eth_gasPrice": hex(GAS_PRICE),
            "eth_estimateGas": hex(GAS_ESTIMATE),
            "eth_getTransactionCount": hex(PENDING_NONCE),
            "eth_maxPriorityFeePerGas": hex(2),
            "eth_getBlockByNumber": {"number": "0x2a", "baseFeePerGas": hex(100)},
        }.get(str(method), {"echo": method, "params": params})
        return {"jsonrpc": "2.0", "result": result, "id": item.get("id")}

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            self.bodies.append(body)
            payload = json.loads(body)
            if isinstance(payload, list):
                return web.json_response([self.answer(item) for item in payload])
            return web.json_response(self.answer(payload))

        app = web.Application()
        app.router.add_post("/", handle)
        return app


class Servers:
    def __init__(
        self, chain_url: str, rpc_url: str, lone_url: str, unlock_url: str, chain: FakeChain, keystore_dir: Path
    ) -> None:
        self.chain_url = chain_url
        self.rpc_url = rpc_url  # forwards to the fake chain
        self.lone_url = lone_url  # no chain URL
        self.unlock_url = unlock_url  # forwards to the fake chain, personal_unlockAccount enabled
        self.chain = chain
        self.keystore_dir = keystore_dir


@pytest.fixture(scope="module")
def keystore_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keystore")
    write_keystore(directory, h(SD["account_secret"]), SD_PASSWORD, iterations=LIGHT)
    write_keystore(directory, h(KB["account_secret"]), KB_PASSWORD, iterations=LIGHT)
    write_keystore(directory, OTHER_SECRET, OTHER_PASSWORD, iterations=LIGHT)
    (directory / "address_book.json").write_text("{}")  # Parity keeps this beside the keys
    return directory


@pytest.fixture(scope="module")
def servers(keystore_dir: Path) -> Iterator[Servers]:
    thread = ServerThread()
    chain = FakeChain()
    chain_url = thread.start(chain.app())
    rpc_url = thread.start(rpc.make_rpc_app(Keystore(keystore_dir), chain_url, throttle=fast_throttle()))
    lone_url = thread.start(rpc.make_rpc_app(Keystore(keystore_dir), None, throttle=fast_throttle()))
    unlock_url = thread.start(
        rpc.make_rpc_app(Keystore(keystore_dir), chain_url, allow_unlock=True, throttle=fast_throttle()))
    yield Servers(chain_url, rpc_url, lone_url, unlock_url, chain, keystore_dir)
    thread.close()


@pytest.fixture(scope="module")
def url(servers: Servers) -> str:
    return servers.lone_url


_ids = iter(range(1, 1_000_000))


def call(url: str, method: str, params: Any = None, **extra: Any) -> dict[str, Any]:
    """One plain JSON-RPC POST; the decoded response object."""
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": next(_ids), **extra}
    if params is not None:
        body["params"] = params
    response = requests.post(url, json=body, timeout=10)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["jsonrpc"] == "2.0" and answer["id"] == body["id"]
    return answer


def result(url: str, method: str, params: Any = None) -> Any:
    answer = call(url, method, params)
    assert "error" not in answer, answer
    return answer["result"]


def error(url: str, method: str, params: Any = None) -> dict[str, Any]:
    answer = call(url, method, params)
    assert "result" not in answer, answer
    assert set(answer["error"]) <= {"code", "message", "data"}
    return answer["error"]


# -- §10.1 and §10.2 through plain JSON-RPC ------------------------------------------------------------


def test_vector_10_1_shadow_decrypt(url: str) -> None:
    assert result(url, "secretstore_shadowDecrypt", shadow_decrypt_params()) == h(SD["document"])


def test_vector_10_2_key_blob_encrypt_and_decrypt(url: str) -> None:
    document_key = bytes.fromhex(KB["document_key"])
    document = b"Parity-era document \x00\xff"
    encrypted = result(
        url, "secretstore_encrypt", [KB["account_address"], KB_PASSWORD, h(KB["key"]), h(document.hex())]
    )
    raw = bytes.fromhex(encrypted[2:])
    assert len(raw) == len(document) + 16  # ciphertext || iv
    # The key inside the §10.2 blob is the vector's M: an independent decryption agrees.
    assert decrypt_document(document_key, raw) == document
    decrypted = result(
        url, "secretstore_decrypt", [KB["account_address"], KB_PASSWORD, h(KB["key"]), encrypted]
    )
    assert decrypted == h(document.hex())
    # And a document encrypted locally under M decrypts through the RPC with the §10.2 blob.
    local_ct = encrypt_document(document_key, b"deadbeef", rng=random.Random(7).randbytes)
    assert result(
        url, "secretstore_decrypt", [KB["account_address"], KB_PASSWORD, h(KB["key"]), h(local_ct.hex())]
    ) == (h(b"deadbeef".hex()))


def test_servers_set_hash_vectors(url: str) -> None:
    for vector in DERIVED["servers_set_hash"]:
        if "node_ids" in vector:
            ids = [h(i) for i in vector["node_ids"]]
        else:
            ids = [h(Point.generator_mul(int(s, 16)).to_bytes().hex()) for s in vector["node_id_secrets"]]
        assert result(url, "secretstore_serversSetHash", [ids]) == h(vector["hash"])
        # A set: order and duplicates do not matter.
        assert result(url, "secretstore_serversSetHash", [list(reversed(ids)) + ids]) == h(vector["hash"])


# -- round trips -------------------------------------------------------------------------------------


def test_generate_document_key_round_trip(url: str) -> None:
    server_public = Point.generator_mul(SERVER_SECRET)
    generated = result(
        url,
        "secretstore_generateDocumentKey",
        [OTHER_ADDRESS, OTHER_PASSWORD, h(server_public.to_bytes().hex())],
    )
    assert set(generated) == {"common_point", "encrypted_point", "encrypted_key"}
    common_point = Point.from_bytes(bytes.fromhex(generated["common_point"][2:]))
    encrypted_point = Point.from_bytes(bytes.fromhex(generated["encrypted_point"][2:]))
    encrypted_key = bytes.fromhex(generated["encrypted_key"][2:])
    assert len(encrypted_key) == 177
    assert all(
        v == v.lower() and len(v) == 2 + 128
        for v in (generated["common_point"], generated["encrypted_point"])
    )
    document_key = ecies.decrypt(int(OTHER_SECRET, 16), encrypted_key, ecies.DEFAULT_MAC)
    assert encrypted_point - common_point * SERVER_SECRET == Point.from_bytes(document_key)  # E - y·C = M
    document = os.urandom(100)
    encrypted = result(
        url,
        "secretstore_encrypt",
        [OTHER_ADDRESS, OTHER_PASSWORD, generated["encrypted_key"], h(document.hex())],
    )
    assert decrypt_document(document_key, bytes.fromhex(encrypted[2:])) == document
    decrypted = result(
        url, "secretstore_decrypt", [OTHER_ADDRESS, OTHER_PASSWORD, generated["encrypted_key"], encrypted]
    )
    assert decrypted == h(document.hex())


def test_encrypt_decrypt_empty_document(url: str) -> None:
    encrypted = result(url, "secretstore_encrypt", [KB["account_address"], KB_PASSWORD, h(KB["key"]), "0x"])
    assert len(encrypted) == 2 + 32
    assert (
        result(url, "secretstore_decrypt", [KB["account_address"], KB_PASSWORD, h(KB["key"]), encrypted])
        == "0x"
    )


def test_sign_raw_hash_recovers_to_the_account(url: str) -> None:
    raw_hash = keccak256(b"some key id")
    signature = result(
        url, "secretstore_signRawHash", [SD["account_address"], SD_PASSWORD, h(raw_hash.hex())]
    )
    raw = bytes.fromhex(signature[2:])
    assert len(raw) == 65 and raw[64] in (0, 1)
    assert "0x" + recover_address(raw, raw_hash).hex() == SD["account_address"]


# -- eth_* / personal_* --------------------------------------------------------------------------------


def test_eth_accounts(url: str) -> None:
    accounts = result(url, "eth_accounts", [])
    expected = sorted([SD_ACCOUNT.address, KB_ACCOUNT.address, OTHER_ADDRESS], key=str.lower)
    assert accounts == expected
    assert result(url, "eth_accounts") == expected  # params may be left out


def test_personal_sign_is_eip191(url: str) -> None:
    data = b"hello from a Parity-era client"
    signature = result(url, "personal_sign", [h(data.hex()), OTHER_ADDRESS, OTHER_PASSWORD])
    expected = Account.sign_message(encode_defunct(primitive=data), OTHER_SECRET).signature
    assert signature == h(bytes(expected).hex())
    assert bytes.fromhex(signature[2:])[64] in (27, 28)
    assert Account.recover_message(encode_defunct(primitive=data), signature=signature) == OTHER_ADDRESS


@pytest.fixture(scope="module")
def unlock_url(servers: Servers) -> str:
    return servers.unlock_url


def test_unlock_is_refused_unless_enabled(url: str) -> None:
    refused = error(url, "personal_unlockAccount", [KB["account_address"], KB_PASSWORD, 60])
    assert refused["code"] == rpc.METHOD_NOT_FOUND
    assert "personal_unlockAccount is disabled" in refused["message"] and "--allow-unlock" in refused["message"]
    assert KB_PASSWORD not in refused["message"]
    locked = error(url, "eth_sign", [KB["account_address"], "0x00"])
    assert locked["code"] == rpc.ACCOUNT_LOCKED
    assert "personal_unlockAccount" not in locked["message"] and "personal_sign" in locked["message"]


def test_eth_sign_needs_an_unlocked_account(unlock_url: str) -> None:
    url = unlock_url
    data = b"\x00\x01binary"
    locked = error(url, "eth_sign", [KB["account_address"], h(data.hex())])
    assert locked["code"] == rpc.ACCOUNT_LOCKED and "personal_unlockAccount" in locked["message"]
    wrong = error(url, "personal_unlockAccount", [KB["account_address"], "nope", 60])
    assert wrong["code"] == rpc.PASSWORD_INVALID
    assert error(url, "eth_sign", [KB["account_address"], h(data.hex())])["code"] == rpc.ACCOUNT_LOCKED
    assert result(url, "personal_unlockAccount", [KB["account_address"], KB_PASSWORD, 60]) is True
    signature = result(url, "eth_sign", [KB["account_address"], h(data.hex())])
    assert signature == result(url, "personal_sign", [h(data.hex()), KB["account_address"], KB_PASSWORD])
    assert Account.recover_message(encode_defunct(primitive=data), signature=signature) == KB_ACCOUNT.address


def test_unlock_expires(unlock_url: str) -> None:
    url = unlock_url
    assert result(url, "personal_unlockAccount", [SD["account_address"], SD_PASSWORD, "0x1"]) is True
    assert result(url, "eth_sign", [SD["account_address"], "0x00"]).startswith("0x")
    time.sleep(1.1)
    assert error(url, "eth_sign", [SD["account_address"], "0x00"])["code"] == rpc.ACCOUNT_LOCKED


@pytest.mark.parametrize("duration", [-1, "soon", "0xzz", True, 1.5])
def test_unlock_duration_must_be_a_quantity(unlock_url: str, duration: object) -> None:
    failure = error(unlock_url, "personal_unlockAccount", [OTHER_ADDRESS, OTHER_PASSWORD, duration])
    assert failure["code"] == rpc.INVALID_PARAMS and "duration" in failure["message"]


# -- errors ------------------------------------------------------------------------------------------


def test_unknown_account(url: str) -> None:
    for method, params in [
        ("secretstore_signRawHash", [STRANGER, "pw", h("00" * 32)]),
        ("secretstore_generateDocumentKey", [STRANGER, "pw", h(Point.generator_mul(5).to_bytes().hex())]),
        ("personal_sign", ["0x00", STRANGER, "pw"]),
        ("eth_sign", [STRANGER, "0x00"]),
    ]:
        failure = error(url, method, params)
        assert failure["code"] == rpc.ACCOUNT_ERROR
        assert "unknown account" in failure["message"].lower() and STRANGER[2:] in failure["message"].lower()


def test_wrong_password_never_echoes_it(url: str) -> None:
    secret_guess = "hunter2-wrong-guess"
    failure = error(url, "secretstore_signRawHash", [OTHER_ADDRESS, secret_guess, h("11" * 32)])
    assert failure["code"] == rpc.PASSWORD_INVALID
    assert "password" in failure["message"].lower() and OTHER_ADDRESS in failure["message"]
    assert secret_guess not in json.dumps(failure)


def test_wrong_password_after_a_right_one_still_fails(url: str) -> None:
    params = [KB["account_address"], KB_PASSWORD, h("22" * 32)]
    assert result(url, "secretstore_signRawHash", params)
    for wrong in ("", KB_PASSWORD + " ", KB_PASSWORD.upper()):
        failure = error(url, "secretstore_signRawHash", [KB["account_address"], wrong, h("22" * 32)])
        assert failure["code"] == rpc.PASSWORD_INVALID
    assert result(url, "secretstore_signRawHash", params)


MALFORMED = [
    ("secretstore_signRawHash", [SD["account_address"][2:], SD_PASSWORD, h("00" * 32)], "account"),
    ("secretstore_signRawHash", [SD["account_address"], SD_PASSWORD, h("00" * 31)], "raw_hash"),
    ("secretstore_signRawHash", [SD["account_address"], SD_PASSWORD, "0x123"], "raw_hash"),
    ("secretstore_signRawHash", [SD["account_address"], 1234, h("00" * 32)], "password"),
    (
        "secretstore_generateDocumentKey",
        [SD["account_address"], SD_PASSWORD, h("01" * 64)],
        "server_key_public",
    ),
    (
        "secretstore_generateDocumentKey",
        [SD["account_address"], SD_PASSWORD, h("01" * 33)],
        "server_key_public",
    ),
    ("secretstore_encrypt", [KB["account_address"], KB_PASSWORD, h(KB["key"]), "0xdeadbeeg"], "data"),
    ("secretstore_encrypt", [KB["account_address"], KB_PASSWORD, KB["key"], "0x00"], "key"),
    ("secretstore_decrypt", [KB["account_address"], KB_PASSWORD, h(KB["key"]), 17], "data"),
    (
        "secretstore_shadowDecrypt",
        [
            SD["account_address"],
            SD_PASSWORD,
            h(SD["decrypted_secret"]),
            h(SD["common_point"]),
            h(SD["decrypt_shadows"][0]),
            "0x",
        ],
        "decrypt_shadows",
    ),
    (
        "secretstore_shadowDecrypt",
        [
            SD["account_address"],
            SD_PASSWORD,
            h(SD["decrypted_secret"]),
            h(SD["common_point"]),
            ["0x0g"],
            "0x",
        ],
        "decrypt_shadows[0]",
    ),
    (
        "secretstore_shadowDecrypt",
        [SD["account_address"], SD_PASSWORD, h(SD["decrypted_secret"][:-2]), h(SD["common_point"]), [], "0x"],
        "decrypted_secret",
    ),
    (
        "secretstore_shadowDecrypt",
        [SD["account_address"], SD_PASSWORD, h(SD["decrypted_secret"]), "0x" + "ff" * 64, [], "0x"],
        "common_point",
    ),
    ("secretstore_serversSetHash", [[h("00" * 63)]], "servers_set[0]"),
    ("secretstore_serversSetHash", [h("00" * 64)], "servers_set"),
    ("eth_sign", [OTHER_ADDRESS, "deadbeef"], "data"),
    ("personal_sign", ["0x00", "0x1234", OTHER_PASSWORD], "address"),
]


@pytest.mark.parametrize(("method", "params", "name"), MALFORMED, ids=[f"{m}-{n}" for m, _, n in MALFORMED])
def test_malformed_params_name_the_parameter(url: str, method: str, params: list[Any], name: str) -> None:
    failure = error(url, method, params)
    assert failure["code"] == rpc.INVALID_PARAMS
    assert failure["message"].startswith("Invalid params: ")
    assert name in failure["message"]
    assert SD_PASSWORD not in failure["message"] and KB_PASSWORD not in failure["message"]


ARITY = {
    "secretstore_generateDocumentKey": 3,
    "secretstore_encrypt": 4,
    "secretstore_decrypt": 4,
    "secretstore_shadowDecrypt": 6,
    "secretstore_serversSetHash": 1,
    "secretstore_signRawHash": 3,
    "eth_sign": 2,
    "personal_sign": 3,
}


@pytest.mark.parametrize("method", sorted(ARITY))
def test_wrong_parameter_count(url: str, method: str) -> None:
    count = ARITY[method]
    for given in (count - 1, count + 1):
        failure = error(url, method, ["0x"] * given)
        assert failure["code"] == rpc.INVALID_PARAMS
        assert (
            f"{method} expects {count} parameters" in failure["message"]
            and f"got {given}" in failure["message"]
        )


def test_parameter_count_of_optional_and_empty_signatures(url: str, unlock_url: str) -> None:
    failure = error(unlock_url, "personal_unlockAccount", [OTHER_ADDRESS])
    assert failure["code"] == rpc.INVALID_PARAMS and "expects 2 to 3 parameters" in failure["message"]
    failure = error(url, "eth_accounts", [1])
    assert failure["code"] == rpc.INVALID_PARAMS and "expects 0 parameters" in failure["message"]


def test_params_must_be_an_array(url: str) -> None:
    failure = error(url, "secretstore_signRawHash", {"account": SD["account_address"]})
    assert failure["code"] == rpc.INVALID_PARAMS and "JSON array" in failure["message"]


def test_key_blob_for_another_account_is_an_encryption_error(url: str) -> None:
    failure = error(
        url, "secretstore_decrypt", [SD["account_address"], SD_PASSWORD, h(KB["key"]), "0x" + "00" * 20]
    )
    assert failure["code"] == rpc.ENCRYPTION_ERROR and failure["message"].startswith("Encryption error")
    # A shadow that is not ECIES for this account either.
    failure = error(
        url,
        "secretstore_shadowDecrypt",
        [
            KB["account_address"],
            KB_PASSWORD,
            h(SD["decrypted_secret"]),
            h(SD["common_point"]),
            [h(s) for s in SD["decrypt_shadows"]],
            h(SD["encrypted_document"]),
        ],
    )
    assert failure["code"] == rpc.ENCRYPTION_ERROR
    # Document shorter than its IV.
    failure = error(url, "secretstore_decrypt", [KB["account_address"], KB_PASSWORD, h(KB["key"]), "0x00"])
    assert failure["code"] == rpc.ENCRYPTION_ERROR


def test_unknown_method_without_a_chain(url: str) -> None:
    failure = error(url, "eth_blockNumber", [])
    assert failure["code"] == rpc.METHOD_NOT_FOUND and "eth_blockNumber" in failure["message"]


def post_raw(url: str, body: bytes | str, content_type: str = "application/json") -> requests.Response:
    return requests.post(url, data=body, headers={"Content-Type": content_type}, timeout=10)


def test_invalid_json(url: str) -> None:
    response = post_raw(url, b'{"jsonrpc": "2.0", "method": ')
    assert response.status_code == 200
    assert response.json() == {
        "jsonrpc": "2.0",
        "error": {"code": rpc.PARSE_ERROR, "message": response.json()["error"]["message"]},
        "id": None,
    }
    assert "Parse error" in response.json()["error"]["message"]
    assert post_raw(url, b"\xff\xfe").json()["error"]["code"] == rpc.PARSE_ERROR


@pytest.mark.parametrize(
    ("body", "expected_id"),
    [
        (42, None),
        ("eth_accounts", None),
        ({"jsonrpc": "2.0", "id": 5}, 5),
        ({"jsonrpc": "2.0", "method": 7, "id": 6}, 6),
        ({"jsonrpc": "1.0", "method": "eth_accounts", "id": 7}, 7),
        ({"jsonrpc": "2.0", "method": "eth_accounts", "id": {"a": 1}}, None),
        ([], None),
    ],
)
def test_invalid_request(url: str, body: object, expected_id: object) -> None:
    answer = post_raw(url, json.dumps(body)).json()
    assert answer["error"]["code"] == rpc.INVALID_REQUEST
    assert answer["error"]["message"].startswith("Invalid request")
    assert answer["id"] == expected_id


def test_content_type_must_be_json(url: str) -> None:
    body = json.dumps({"jsonrpc": "2.0", "method": "eth_accounts", "id": 1})
    assert post_raw(url, body, "text/plain").status_code == 415
    assert requests.get(url, timeout=10).status_code == 405


def test_batch(url: str) -> None:
    ids = [h(Point.generator_mul(k).to_bytes().hex()) for k in (1, 2)]
    batch = [
        {"jsonrpc": "2.0", "method": "secretstore_serversSetHash", "params": [ids], "id": 1},
        {"jsonrpc": "2.0", "method": "eth_accounts", "params": []},  # notification: no answer
        {"jsonrpc": "2.0", "method": "no_such_method", "params": [], "id": "x"},
        17,
        {
            "jsonrpc": "2.0",
            "method": "secretstore_signRawHash",
            "params": [OTHER_ADDRESS, "bad", h("00" * 32)],
            "id": 3,
        },
        {"jsonrpc": "2.0", "method": "eth_accounts", "id": 4},
    ]
    answers = post_raw(url, json.dumps(batch)).json()
    assert isinstance(answers, list) and len(answers) == 5
    by_id = {a["id"]: a for a in answers if a["id"] is not None}
    assert by_id[1]["result"] == h(DERIVED["servers_set_hash"][0]["hash"])
    assert by_id["x"]["error"]["code"] == rpc.METHOD_NOT_FOUND
    assert by_id[3]["error"]["code"] == rpc.PASSWORD_INVALID
    assert len(by_id[4]["result"]) == 3
    assert [a["error"]["code"] for a in answers if a["id"] is None] == [rpc.INVALID_REQUEST]


def test_notifications_only(url: str) -> None:
    single = post_raw(url, json.dumps({"jsonrpc": "2.0", "method": "eth_accounts"}))
    assert single.status_code == 204 and single.content == b""
    batch = post_raw(url, json.dumps([{"jsonrpc": "2.0", "method": "eth_accounts"}] * 2))
    assert batch.status_code == 204 and batch.content == b""


# -- proxying ------------------------------------------------------------------------------------------


def test_other_methods_are_forwarded_verbatim(servers: Servers) -> None:
    body = b'{"jsonrpc":"2.0",  "method":"eth_blockNumber","params":[],"id":99}'
    response = post_raw(servers.rpc_url, body)
    assert response.status_code == 200
    assert response.json() == {"jsonrpc": "2.0", "result": "0x2a", "id": 99}
    assert servers.chain.bodies[-1] == body  # byte for byte
    failure = error(servers.rpc_url, "eth_call", ["upstream fails"])
    assert failure == {"code": -32000, "message": "upstream says no"}
    echoed = result(servers.rpc_url, "eth_getBalance", {"named": "params go through as well"})
    assert echoed == {"echo": "eth_getBalance", "params": {"named": "params go through as well"}}


def test_local_methods_are_not_forwarded(servers: Servers) -> None:
    before = len(servers.chain.bodies)
    assert len(result(servers.rpc_url, "eth_accounts", [])) == 3
    result(servers.rpc_url, "secretstore_signRawHash", [OTHER_ADDRESS, OTHER_PASSWORD, h("33" * 32)])
    assert (
        error(servers.rpc_url, "secretstore_signRawHash", [STRANGER, "pw", h("33" * 32)])["code"]
        == rpc.ACCOUNT_ERROR
    )
    result(servers.rpc_url, "personal_sign", ["0x00", OTHER_ADDRESS, OTHER_PASSWORD])
    assert len(servers.chain.bodies) == before


def test_signing_for_chain_accounts_is_refused_not_forwarded(servers: Servers) -> None:
    before = len(servers.chain.bodies)
    transaction = {"from": STRANGER, "to": OTHER_ADDRESS, "value": "0x1"}
    for url in (servers.rpc_url, servers.unlock_url):
        for method, params in [
            ("personal_sign", ["0x00", STRANGER, "pw"]),
            ("eth_sign", [STRANGER, "0x00"]),
            ("eth_sendTransaction", [transaction]),
            ("personal_sendTransaction", [transaction, "pw"]),
            ("personal_unlockAccount", [STRANGER, "pw", 60]),
        ]:
            failure = error(url, method, params)
            expected = rpc.METHOD_NOT_FOUND if method == "personal_unlockAccount" and url == servers.rpc_url \
                else rpc.ACCOUNT_ERROR
            assert failure["code"] == expected, (method, failure)
            if expected == rpc.ACCOUNT_ERROR:
                assert "only for its keystore accounts" in failure["message"]
                assert STRANGER[2:] in failure["message"].lower()
    assert len(servers.chain.bodies) == before


CHEAT_CODES = [
    ("anvil_setCode", [STRANGER, "0x00"]),
    ("anvil_setBalance", [STRANGER, "0xffff"]),
    ("anvil_impersonateAccount", [STRANGER]),
    ("evm_mine", []),
    ("evm_snapshot", []),
    ("hardhat_setCode", [STRANGER, "0x00"]),
    ("debug_traceTransaction", ["0x" + "00" * 32]),
    ("admin_addPeer", ["enode://x"]),
    ("personal_newAccount", ["pw"]),
    ("personal_importRawKey", ["00" * 32, "pw"]),
    ("eth_signTransaction", [{"from": STRANGER}]),
    ("eth_signTypedData_v4", [STRANGER, "{}"]),
    ("eth_coinbase", []),
    ("txpool_content", []),
    ("ots_getApiLevel", []),
    ("no_such_method", []),
]


@pytest.mark.parametrize(("method", "params"), CHEAT_CODES, ids=[m for m, _ in CHEAT_CODES])
def test_methods_outside_the_allowlist_are_refused_not_forwarded(
    servers: Servers, method: str, params: list[Any]
) -> None:
    before = len(servers.chain.bodies)
    for url in (servers.rpc_url, servers.unlock_url, servers.lone_url):
        failure = error(url, method, params)
        assert failure["code"] == rpc.METHOD_NOT_FOUND
        assert method in failure["message"] and "not forwarded to the chain" in failure["message"]
    batch = [{"jsonrpc": "2.0", "method": method, "params": params, "id": 1},
             {"jsonrpc": "2.0", "method": "eth_blockNumber", "params": [], "id": 2}]
    by_id = {a["id"]: a for a in post_raw(servers.rpc_url, json.dumps(batch)).json()}
    assert by_id[1]["error"]["code"] == rpc.METHOD_NOT_FOUND and by_id[2]["result"] == "0x2a"
    assert servers.chain.methods()[before:] == ["eth_blockNumber"]


def test_the_allowlist_is_forwarded(servers: Servers) -> None:
    before = len(servers.chain.bodies)
    for method in sorted(rpc.FORWARDED_METHODS):
        answer = call(servers.rpc_url, method, [])
        assert "error" not in answer, (method, answer)
    assert servers.chain.methods()[before:] == sorted(rpc.FORWARDED_METHODS)
    assert not {"eth_sign", "eth_sendTransaction", "eth_accounts"} & rpc.FORWARDED_METHODS
    assert not [m for m in rpc.FORWARDED_METHODS if m.split("_")[0] not in ("eth", "net", "web3")]


def test_client_version_and_accounts_are_answered_here(servers: Servers) -> None:
    before = len(servers.chain.bodies)
    assert result(servers.rpc_url, "web3_clientVersion", []) == rpc.CLIENT_VERSION
    assert result(servers.rpc_url, "personal_listAccounts", []) == result(servers.rpc_url, "eth_accounts", [])
    assert len(servers.chain.bodies) == before


# -- transactions --------------------------------------------------------------------------------------


def _signed_locally(secret: str, **fields: Any) -> str:
    tx = {"chainId": CHAIN_ID, "value": 0, "data": b"", **fields}
    return h(bytes(Account.sign_transaction(tx, secret).raw_transaction).hex())


def test_personal_send_transaction_signs_here_and_sends_raw(servers: Servers) -> None:
    chain = servers.chain
    recipient = "0x" + "ab" * 20  # lower case, as web3 4.5 sends it
    transaction = {"from": OTHER_ADDRESS, "to": recipient, "value": "0x2a", "data": "0x1234"}
    tx_hash = result(servers.rpc_url, "personal_sendTransaction", [transaction, OTHER_PASSWORD])
    raw = chain.raw_transactions[-1]
    assert tx_hash == h(keccak256(bytes.fromhex(raw[2:])).hex())
    # The nonce, gas, gas price and chain id came from the chain, as a Parity node filled them in.
    assert raw == _signed_locally(OTHER_SECRET, to=checksum_address(bytes.fromhex("ab" * 20)),
                                  value=42, data=bytes.fromhex("1234"),
                                  nonce=PENDING_NONCE, gas=GAS_ESTIMATE, gasPrice=GAS_PRICE)
    assert Account.recover_transaction(raw) == OTHER_ADDRESS
    assert chain.methods()[-5:] == ["eth_chainId", "eth_gasPrice", "eth_estimateGas", "eth_getTransactionCount",
                                    "eth_sendRawTransaction"]
    estimate = json.loads(chain.bodies[-3])["params"][0]
    assert estimate == {"from": OTHER_ADDRESS.lower(), "to": checksum_address(bytes.fromhex("ab" * 20)),
                        "value": "0x2a", "data": "0x1234"}
    assert json.loads(chain.bodies[-2])["params"] == [OTHER_ADDRESS.lower(), "pending"]
    # web3 4.5 style: JSON numbers, every field given, a contract creation (no "to"), "input" for the code.
    given = {"from": OTHER_ADDRESS, "gas": 100_000, "gasPrice": 5, "nonce": 3, "value": 0, "input": "0x6000",
             "chainId": CHAIN_ID}
    count = len(chain.bodies)
    result(servers.rpc_url, "personal_sendTransaction", [given, OTHER_PASSWORD])
    assert chain.methods()[count:] == ["eth_sendRawTransaction"]
    assert chain.raw_transactions[-1] == _signed_locally(OTHER_SECRET, gas=100_000, gasPrice=5, nonce=3,
                                                         data=bytes.fromhex("6000"))


def test_eip1559_transactions(servers: Servers) -> None:
    given = {"from": OTHER_ADDRESS, "to": STRANGER, "maxFeePerGas": "0x64", "maxPriorityFeePerGas": "0x1",
             "gas": "0x5208", "nonce": "0x0"}
    result(servers.rpc_url, "personal_sendTransaction", [given, OTHER_PASSWORD])
    assert servers.chain.raw_transactions[-1] == _signed_locally(
        OTHER_SECRET, type=2, to=STRANGER, maxFeePerGas=100, maxPriorityFeePerGas=1, gas=21_000, nonce=0)
    # type 2 with the fees left out: the tip from eth_maxPriorityFeePerGas, the cap 2 x base fee + tip
    result(servers.rpc_url, "personal_sendTransaction",
           [{"from": OTHER_ADDRESS, "to": STRANGER, "type": "0x2", "gas": "0x5208", "nonce": "0x1"}, OTHER_PASSWORD])
    assert servers.chain.raw_transactions[-1] == _signed_locally(
        OTHER_SECRET, type=2, to=STRANGER, maxFeePerGas=202, maxPriorityFeePerGas=2, gas=21_000, nonce=1)


def test_eth_send_transaction_needs_an_unlock(servers: Servers) -> None:
    transaction = {"from": OTHER_ADDRESS, "to": STRANGER, "value": "0x1"}
    sent = len(servers.chain.raw_transactions)
    for url in (servers.rpc_url, servers.unlock_url):
        locked = error(url, "eth_sendTransaction", [transaction])
        assert locked["code"] == rpc.ACCOUNT_LOCKED and "personal_sendTransaction" in locked["message"]
    assert len(servers.chain.raw_transactions) == sent
    assert result(servers.unlock_url, "personal_unlockAccount", [OTHER_ADDRESS, OTHER_PASSWORD, 60]) is True
    result(servers.unlock_url, "eth_sendTransaction", [transaction])
    assert Account.recover_transaction(servers.chain.raw_transactions[-1]) == OTHER_ADDRESS
    # the unlock belongs to that face only
    assert error(servers.rpc_url, "eth_sendTransaction", [transaction])["code"] == rpc.ACCOUNT_LOCKED


BAD_TRANSACTIONS = [
    ({"to": STRANGER}, "from"),
    ({"from": OTHER_ADDRESS, "gasLimit": "0x1"}, "gasLimit"),
    ({"from": OTHER_ADDRESS, "value": "0x1_0"}, "value"),
    ({"from": OTHER_ADDRESS, "value": "12"}, "value"),
    ({"from": OTHER_ADDRESS, "value": -1}, "value"),
    ({"from": OTHER_ADDRESS, "value": True}, "value"),
    ({"from": OTHER_ADDRESS, "to": "0x1234"}, "to"),
    ({"from": OTHER_ADDRESS, "data": "0x12", "input": "0x34"}, "input"),
    ({"from": OTHER_ADDRESS, "gasPrice": "0x1", "maxFeePerGas": "0x2"}, "gasPrice"),
    ({"from": OTHER_ADDRESS, "type": "0x1"}, "type"),
    ({"from": OTHER_ADDRESS, "type": "0x0", "maxFeePerGas": "0x2"}, "type 0x2"),
    ({"from": OTHER_ADDRESS, "accessList": [{"address": STRANGER, "storageKeys": []}]}, "accessList"),
    ("not an object", "JSON object"),
]


@pytest.mark.parametrize(("transaction", "named"), BAD_TRANSACTIONS, ids=[n for _, n in BAD_TRANSACTIONS])
def test_malformed_transactions_are_refused(servers: Servers, transaction: object, named: str) -> None:
    sent = len(servers.chain.raw_transactions)
    failure = error(servers.rpc_url, "personal_sendTransaction", [transaction, OTHER_PASSWORD])
    assert failure["code"] == rpc.INVALID_PARAMS and named in failure["message"], failure
    assert OTHER_PASSWORD not in failure["message"]
    assert len(servers.chain.raw_transactions) == sent


def test_chain_errors_while_sending_are_passed_on(servers: Servers, keystore_dir: Path) -> None:
    sent = len(servers.chain.raw_transactions)
    failure = error(servers.rpc_url, "personal_sendTransaction",
                    [{"from": OTHER_ADDRESS, "to": STRANGER, "data": "0xfe"}, OTHER_PASSWORD])
    assert failure == {"code": -32000, "message": "eth_estimateGas: upstream says no"}
    wrong = error(servers.rpc_url, "personal_sendTransaction", [{"from": OTHER_ADDRESS}, "wrong"])
    assert wrong["code"] == rpc.PASSWORD_INVALID
    assert len(servers.chain.raw_transactions) == sent
    lone = error(servers.lone_url, "personal_sendTransaction", [{"from": OTHER_ADDRESS}, OTHER_PASSWORD])
    assert lone["code"] == rpc.METHOD_NOT_FOUND and "chain URL" in lone["message"]


def test_batch_mixing_local_and_forwarded(servers: Servers) -> None:
    batch = [
        {"jsonrpc": "2.0", "method": "eth_blockNumber", "params": [], "id": 1},
        {"jsonrpc": "2.0", "method": "eth_accounts", "params": [], "id": 2},
        {"jsonrpc": "2.0", "method": "net_version", "params": [], "id": 3},
        {"jsonrpc": "2.0", "method": "eth_blockNumber", "params": []},
    ]
    answers = post_raw(servers.rpc_url, json.dumps(batch)).json()
    by_id = {a["id"]: a for a in answers}
    assert set(by_id) == {1, 2, 3}
    assert by_id[1]["result"] == "0x2a"
    assert len(by_id[2]["result"]) == 3
    assert by_id[3]["result"] == {"echo": "net_version", "params": []}


def test_unreachable_chain(keystore_dir: Path) -> None:
    thread = ServerThread()
    try:
        dead = thread.start(rpc.make_rpc_app(Keystore(keystore_dir), closed_port_url() + "/secret-api-key"))
        failure = error(dead, "eth_blockNumber", [])
        assert failure["code"] == rpc.INTERNAL_ERROR and "chain" in failure["message"]
        assert "secret-api-key" not in failure["message"]
        answers = post_raw(dead, json.dumps([{"jsonrpc": "2.0", "method": "eth_chainId", "id": 1}])).json()
        assert answers[0]["error"]["code"] == rpc.INTERNAL_ERROR
    finally:
        thread.close()


# -- the hot path ------------------------------------------------------------------------------------


def test_repeated_unlock_is_cached(keystore_dir: Path) -> None:
    # A fresh app, so the first call really runs the KDF.
    thread = ServerThread()
    try:
        fresh = thread.start(rpc.make_rpc_app(Keystore(keystore_dir), None))
        session = requests.Session()
        params = [SD["account_address"], SD_PASSWORD, h("44" * 32)]
        body: dict[str, Any] = {
            "jsonrpc": "2.0",
            "method": "secretstore_signRawHash",
            "params": params,
            "id": 1,
        }
        start = time.perf_counter()
        first = session.post(fresh, json=body, timeout=10).json()
        first_ms = (time.perf_counter() - start) * 1e3
        rounds = 50
        start = time.perf_counter()
        for _ in range(rounds):
            again = session.post(fresh, json=body, timeout=10).json()
        cached_ms = (time.perf_counter() - start) * 1e3 / rounds
        assert again["result"] == first["result"]
        wrong = session.post(
            fresh, json={**body, "params": [SD["account_address"], "x", h("44" * 32)]}, timeout=10
        ).json()
        assert wrong["error"]["code"] == rpc.PASSWORD_INVALID
        print(
            f"\nsecretstore_signRawHash over HTTP (pbkdf2 {LIGHT} rounds): "
            f"first {first_ms:.2f} ms, cached {cached_ms:.2f} ms"
        )
    finally:
        thread.close()


def _reported_delay(failure: dict[str, Any]) -> float:
    assert failure["code"] == rpc.PASSWORD_INVALID
    match = re.search(r"answered after ([0-9.]+) s", failure["message"])
    assert match is not None, failure
    return float(match.group(1))


def test_wrong_passwords_are_slowed_down(keystore_dir: Path) -> None:
    thread = ServerThread()
    try:
        url = thread.start(rpc.make_rpc_app(Keystore(keystore_dir), None, throttle=PasswordThrottle(0.05, 0.2)))
        wrong = [KB["account_address"], "guess", h("55" * 32)]
        start = time.perf_counter()
        delays = [_reported_delay(error(url, "secretstore_signRawHash", wrong)) for _ in range(4)]
        sequential = time.perf_counter() - start
        assert delays == [0.05, 0.1, 0.2, 0.2] and sequential >= 0.9 * sum(delays)
        # a batch (or parallel connections) does not multiply the rate: the guesses are checked one by one
        batch = [{"jsonrpc": "2.0", "method": "personal_sign", "params": ["0x00", KB["account_address"], f"g{i}"],
                  "id": i} for i in range(5)]
        start = time.perf_counter()
        answers = post_raw(url, json.dumps(batch)).json()
        assert all(a["error"]["code"] == rpc.PASSWORD_INVALID for a in answers)
        assert time.perf_counter() - start >= 0.9 * 5 * 0.2
        # the right password (the client waited for its last answer) is not delayed, and resets the count
        start = time.perf_counter()
        result(url, "secretstore_signRawHash", [KB["account_address"], KB_PASSWORD, h("55" * 32)])
        assert time.perf_counter() - start < 0.15
        assert _reported_delay(error(url, "secretstore_signRawHash", wrong)) == 0.05
    finally:
        thread.close()


def test_default_wrong_password_delays(keystore_dir: Path) -> None:
    app = rpc.make_rpc_app(Keystore(keystore_dir), None)
    throttle = app[rpc.SERVICE_KEY].throttle
    assert (throttle.first_delay, throttle.max_delay) == (0.25, 4.0)
    assert app[rpc.SERVICE_KEY].allow_unlock is False


# -- command line --------------------------------------------------------------------------------------


def _serve(keystore_dir: Path, *global_options: str, port_file: Path | None = None) -> subprocess.Popen[str]:
    reporting = ["--port-file", str(port_file)] if port_file else []
    return subprocess.Popen(
        [sys.executable, "-m", "ocean_secret_store.cli", *global_options, "rpc", "--keystore", str(keystore_dir),
         "--listen", "127.0.0.1:0", *reporting],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )


def _stop(process: subprocess.Popen[str]) -> int:
    process.terminate()
    try:
        return process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def test_the_cli_serves(keystore_dir: Path) -> None:
    process = _serve(keystore_dir)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line
        served = line.rsplit(" ", 1)[1].strip()
        assert len(result(served, "eth_accounts", [])) == 3
        assert result(served, "secretstore_shadowDecrypt", shadow_decrypt_params()) == h(SD["document"])
    finally:
        code = _stop(process)
    assert code == 0  # SIGTERM is the normal way to stop a service
    assert SD_PASSWORD not in (process.stderr.read() if process.stderr else "")


def test_the_cli_serves_with_json_and_a_port_file(keystore_dir: Path, tmp_path: Path) -> None:
    port_file = tmp_path / "rpc.port"
    process = _serve(keystore_dir, "--json", port_file=port_file)
    try:
        assert process.stdout is not None
        url = json.loads(process.stdout.readline())["url"]
        assert url == f"http://127.0.0.1:{int(port_file.read_text())}"
        assert len(result(url, "eth_accounts", [])) == 3
    finally:
        assert _stop(process) == 0


def test_the_cli_rejects_bad_rpc_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ocean_secret_store.cli import main

    assert main(["rpc", "--keystore", str(tmp_path / "missing"), "--listen", "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and err.count("\n") == 1
    assert main(["rpc", "--keystore", str(tmp_path), "--listen", "no-port"]) == 2
    assert "--listen" in capsys.readouterr().err
    assert main(["rpc"]) == 2  # --keystore is required
    capsys.readouterr()
    assert main(["rpc", "--keystore", str(tmp_path), "--wrong-password-delay", "5"]) == 2
    assert "--wrong-password-delay" in capsys.readouterr().err


def test_the_cli_enables_unlock_only_when_asked(keystore_dir: Path) -> None:
    for options, code in (([], rpc.METHOD_NOT_FOUND), (["--allow-unlock"], None)):
        process = subprocess.Popen(
            [sys.executable, "-m", "ocean_secret_store.cli", "--json", "rpc", "--keystore", str(keystore_dir),
             "--listen", "127.0.0.1:0", *options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2],
        )
        try:
            assert process.stdout is not None
            served = json.loads(process.stdout.readline())["url"]
            answer = call(served, "personal_unlockAccount", [OTHER_ADDRESS, OTHER_PASSWORD, 1])
            assert answer.get("error", {}).get("code") == code, answer
        finally:
            assert _stop(process) == 0
