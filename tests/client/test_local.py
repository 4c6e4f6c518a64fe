"""The local ``secretstore_*`` functions: Parity's RPC vectors end to end, round trips, hex wrappers, bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from eth_account import Account
from hypothesis import given
from hypothesis import strategies as st

from ocean_secret_store.client import local
from ocean_secret_store.crypto import ecies
from ocean_secret_store.crypto.curve import G, N, Point, Rng
from ocean_secret_store.crypto.document import decrypt_document, encrypt_document
from ocean_secret_store.crypto.hashes import address_of
from ocean_secret_store.crypto.shadows import shadow_decryption
from ocean_secret_store.crypto.signatures import recover_address
from ocean_secret_store.exceptions import (
    CryptoError,
    DecryptionFailed,
    InvalidPoint,
    InvalidScalar,
    InvalidSignature,
    MalformedHex,
    SecretStoreError,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
with open(VECTORS / "parity_rpc.json", encoding="utf-8") as _handle:
    RPC: dict[str, Any] = json.load(_handle)
with open(VECTORS / "requester_signatures.json", encoding="utf-8") as _handle:
    SIGS: dict[str, Any] = json.load(_handle)
SD, KB = RPC["shadow_decrypt"], RPC["key_blob"]

SHADOW_ACCOUNT = Account.from_key("0x" + SD["account_secret"])
KEY_ACCOUNT = Account.from_key("0x" + KB["account_secret"])
SERVER_SECRET = 0x7A3F19C2E4B6D8A0F2C4E6A8B0D2F4A6C8E0A2B4D6F8A0C2E4B6D8A0F2C4E6A8
SERVER_PUBLIC = Point.generator_mul(SERVER_SECRET)


def seeded(seed: int) -> Rng:
    return random.Random(seed).randbytes


def h(hex_value: str) -> str:
    return "0x" + hex_value


# -- §10.1 secretstore_shadowDecrypt -----------------------------------------------------------


def test_eth_account_is_the_vector_account() -> None:
    assert SHADOW_ACCOUNT.address.lower() == SD["account_address"]
    assert address_of(local.account_public(SHADOW_ACCOUNT)).hex() == SD["account_address"][2:]


def test_shadow_decrypt_vector() -> None:
    plain = local.shadow_decrypt(
        SHADOW_ACCOUNT,
        Point.from_bytes(bytes.fromhex(SD["decrypted_secret"])),
        Point.from_bytes(bytes.fromhex(SD["common_point"])),
        [bytes.fromhex(s) for s in SD["decrypt_shadows"]],
        bytes.fromhex(SD["encrypted_document"]),
    )
    assert plain == bytes.fromhex(SD["document"])


def test_rpc_shadow_decrypt_vector() -> None:
    result = local.rpc_shadow_decrypt(
        SHADOW_ACCOUNT,
        h(SD["decrypted_secret"]),
        h(SD["common_point"]),
        [h(s) for s in SD["decrypt_shadows"]],
        h(SD["encrypted_document"]),
    )
    assert result == h(SD["document"])


def test_rpc_shadow_decrypt_accepts_upper_case_digits() -> None:
    result = local.rpc_shadow_decrypt(
        SHADOW_ACCOUNT,
        h(SD["decrypted_secret"].upper()),
        h(SD["common_point"]),
        [h(s.upper()) for s in SD["decrypt_shadows"]],
        h(SD["encrypted_document"].upper()),
    )
    assert result == h(SD["document"])


def test_shadow_decrypt_with_another_account_fails_typed() -> None:
    with pytest.raises(DecryptionFailed):
        local.rpc_shadow_decrypt(
            KEY_ACCOUNT, h(SD["decrypted_secret"]), h(SD["common_point"]),
            [h(s) for s in SD["decrypt_shadows"]], h(SD["encrypted_document"]),
        )


def test_shadow_decrypt_of_a_made_up_single_node_result() -> None:
    # t = 0, one node holding the whole server secret y: D = E - (a·ns·δ)/a·C = E - δ·y·C, C' = C,
    # ε = (δ-1)·y, so D + ε·C' = E - y·C = M.
    m, k = Point.generator_mul(11), 5
    common, encrypted = Point.generator_mul(k), m + SERVER_PUBLIC * k
    point, shadow = shadow_decryption(SERVER_SECRET, 3, common, local.account_public(KEY_ACCOUNT), rng=seeded(1))
    decrypted_secret = encrypted - point * pow(3, -1, N)
    data = encrypt_document(m, b"made up", rng=seeded(2))
    assert local.shadow_decrypt(KEY_ACCOUNT, decrypted_secret, common, [shadow], data) == b"made up"


# -- §10.2 encrypt / decrypt with a key blob ---------------------------------------------------


def test_key_blob_account() -> None:
    assert KEY_ACCOUNT.address.lower() == KB["account_address"]


@given(st.binary(max_size=500))
def test_encrypt_decrypt_round_trip_with_the_vector_blob(document: bytes) -> None:
    blob = bytes.fromhex(KB["key"])
    encrypted = local.encrypt(KEY_ACCOUNT, blob, document)
    assert len(encrypted) == len(document) + 16
    assert local.decrypt(KEY_ACCOUNT, blob, encrypted) == document
    # The blob holds the vector's document key M.
    assert decrypt_document(Point.from_bytes(bytes.fromhex(KB["document_key"])), encrypted) == document


def test_rpc_encrypt_decrypt_round_trip() -> None:
    encrypted = local.rpc_encrypt(KEY_ACCOUNT, h(KB["key"]), "0xdeadbeef", rng=seeded(5))
    assert encrypted.startswith("0x") and len(encrypted) == 2 + 2 * (4 + 16)
    assert encrypted == "0x" + encrypt_document(
        Point.from_bytes(bytes.fromhex(KB["document_key"])), bytes.fromhex("deadbeef"), rng=seeded(5)
    ).hex()
    assert local.rpc_decrypt(KEY_ACCOUNT, h(KB["key"]), encrypted) == "0xdeadbeef"
    assert local.rpc_decrypt(KEY_ACCOUNT, h(KB["key"]), local.rpc_encrypt(KEY_ACCOUNT, h(KB["key"]), "0x")) == "0x"


def test_decrypt_with_the_wrong_account() -> None:
    with pytest.raises(DecryptionFailed):
        local.decrypt(SHADOW_ACCOUNT, bytes.fromhex(KB["key"]), bytes(20))


@pytest.mark.parametrize("size", [0, 32, 63, 65])
def test_key_blob_must_hold_64_bytes(size: int) -> None:
    blob = ecies.encrypt(local.account_public(KEY_ACCOUNT), bytes(size))
    with pytest.raises(InvalidPoint, match=f"invalid public key length.*{size} bytes"):
        local.encrypt(KEY_ACCOUNT, blob, b"data")
    with pytest.raises(InvalidPoint, match="invalid public key length"):
        local.decrypt(KEY_ACCOUNT, blob, bytes(20))


def test_key_blob_with_empty_auth_data_is_refused() -> None:
    blob = ecies.encrypt(local.account_public(KEY_ACCOUNT), bytes.fromhex(KB["document_key"]), b"")
    with pytest.raises(DecryptionFailed):
        local.encrypt(KEY_ACCOUNT, blob, b"data")


def test_decrypt_document_shorter_than_an_iv() -> None:
    with pytest.raises(DecryptionFailed, match="at least 16 bytes"):
        local.rpc_decrypt(KEY_ACCOUNT, h(KB["key"]), "0x" + "00" * 15)


# -- secretstore_generateDocumentKey -----------------------------------------------------------


@given(st.integers(min_value=0, max_value=2**32))
def test_generate_document_key_round_trip(seed: int) -> None:
    generated = local.generate_document_key(KEY_ACCOUNT, SERVER_PUBLIC, rng=seeded(seed))
    assert len(generated.encrypted_key) == 177
    m = Point.from_bytes(ecies.decrypt(int.from_bytes(KEY_ACCOUNT.key, "big"), generated.encrypted_key))
    # The key servers recover M as E - y·C with the server secret y.
    assert generated.encrypted_point - SERVER_SECRET * generated.common_point == m
    # And the blob is usable with encrypt/decrypt.
    encrypted = local.encrypt(KEY_ACCOUNT, generated.encrypted_key, b"payload", rng=seeded(seed))
    assert decrypt_document(m, encrypted) == b"payload"
    assert local.decrypt(KEY_ACCOUNT, generated.encrypted_key, encrypted) == b"payload"


def test_generate_document_key_is_deterministic_with_an_injected_rng_and_random_without() -> None:
    first = local.generate_document_key(KEY_ACCOUNT, SERVER_PUBLIC, rng=seeded(8))
    assert first == local.generate_document_key(KEY_ACCOUNT, SERVER_PUBLIC, rng=seeded(8))
    assert local.generate_document_key(KEY_ACCOUNT, SERVER_PUBLIC) != local.generate_document_key(
        KEY_ACCOUNT, SERVER_PUBLIC
    )


def test_generated_document_key_json_shape() -> None:
    generated = local.generate_document_key(KEY_ACCOUNT, SERVER_PUBLIC, rng=seeded(9))
    as_json = generated.to_json()
    assert list(as_json) == ["common_point", "encrypted_point", "encrypted_key"]
    assert as_json == {
        "common_point": "0x" + generated.common_point.to_bytes().hex(),
        "encrypted_point": "0x" + generated.encrypted_point.to_bytes().hex(),
        "encrypted_key": "0x" + generated.encrypted_key.hex(),
    }
    assert [len(v) for v in as_json.values()] == [130, 130, 2 + 354]
    assert json.loads(json.dumps(as_json)) == as_json


def test_generated_document_key_is_frozen_and_its_repr_hides_the_key() -> None:
    generated = local.generate_document_key(KEY_ACCOUNT, SERVER_PUBLIC, rng=seeded(10))
    m = ecies.decrypt(int.from_bytes(KEY_ACCOUNT.key, "big"), generated.encrypted_key)
    text = repr(generated)
    assert m.hex() not in text and m[:16].hex() not in text
    assert KB["account_secret"] not in text
    assert generated.encrypted_key.hex() not in text
    assert "177 bytes" in text
    with pytest.raises(AttributeError):
        generated.encrypted_key = b""  # type: ignore[misc]  # frozen: the point of the test


def test_rpc_generate_document_key() -> None:
    result = local.rpc_generate_document_key(KEY_ACCOUNT, "0x" + SERVER_PUBLIC.to_bytes().hex(), rng=seeded(11))
    assert result == local.generate_document_key(KEY_ACCOUNT, SERVER_PUBLIC, rng=seeded(11)).to_json()
    # The Parity publish flow: the encrypted_key goes straight into secretstore_encrypt.
    encrypted = local.rpc_encrypt(KEY_ACCOUNT, result["encrypted_key"], "0x0102")
    assert local.rpc_decrypt(KEY_ACCOUNT, result["encrypted_key"], encrypted) == "0x0102"


def test_rpc_generate_document_key_rejects_a_point_off_the_curve() -> None:
    with pytest.raises(InvalidPoint):
        local.rpc_generate_document_key(KEY_ACCOUNT, "0x" + "00" * 63 + "01")


# -- secretstore_signRawHash and serversSetHash ------------------------------------------------


def test_sign_raw_hash_reproduces_the_wiki_signature() -> None:
    [vector] = [v for v in SIGS["vectors"] if v.get("signer_secret") == SD["account_secret"]]
    key_id = bytes.fromhex(vector["server_key_id"])
    assert local.sign_raw_hash(SHADOW_ACCOUNT, key_id) == bytes.fromhex(vector["signature"])
    assert local.rpc_sign_raw_hash(SHADOW_ACCOUNT, h(vector["server_key_id"])) == h(vector["signature"])


@given(st.binary(min_size=32, max_size=32))
def test_sign_raw_hash_is_a_requester_signature(key_id: bytes) -> None:
    signature = local.sign_raw_hash(KEY_ACCOUNT, key_id)
    assert signature[64] in (0, 1)
    assert recover_address(signature, key_id).hex() == KB["account_address"][2:]


def test_sign_raw_hash_wrong_length() -> None:
    with pytest.raises(InvalidSignature, match="32 bytes"):
        local.sign_raw_hash(KEY_ACCOUNT, bytes(31))
    with pytest.raises(MalformedHex, match="raw_hash must be 32 bytes"):
        local.rpc_sign_raw_hash(KEY_ACCOUNT, "0x" + "00" * 31)


def test_servers_set_hash() -> None:
    ids = [SD["decrypted_secret"], SD["common_point"]]
    expected = "0x67d808b1c7a0e5521d6e1b91c9604eaa303e5cd40149fc7af5731e0274845357"
    assert local.rpc_servers_set_hash([h(i) for i in ids]) == expected
    assert local.rpc_servers_set_hash([h(i) for i in reversed(ids)] + [h(ids[0])]) == expected
    assert local.servers_set_hash([Point.from_bytes(bytes.fromhex(i)) for i in ids]).hex() == expected[2:]
    # Like Parity, the ids are 64-byte values; they are not required to be curve points.
    assert local.rpc_servers_set_hash(["0x" + "00" * 64]).startswith("0x")
    assert local.servers_set_hash([G, 2 * G]) == local.servers_set_hash([(2 * G).to_bytes(), G.to_bytes()])


# -- accounts ----------------------------------------------------------------------------------


def test_any_object_with_a_key_works() -> None:
    duck = SimpleNamespace(key=bytes.fromhex(KB["account_secret"]))
    assert local.account_public(duck) == local.account_public(KEY_ACCOUNT)
    assert local.sign_raw_hash(duck, bytes(32)) == local.sign_raw_hash(KEY_ACCOUNT, bytes(32))


@pytest.mark.parametrize(
    "key", [None, "0x" + "11" * 32, b"\x11" * 31, b"\x11" * 33, bytes(32), N.to_bytes(32, "big")]
)
def test_bad_account_keys_are_typed_errors(key: object) -> None:
    with pytest.raises(InvalidScalar) as info:
        local.sign_raw_hash(SimpleNamespace(key=key), bytes(32))
    assert "11" * 8 not in str(info.value)
    assert format(N, "x") not in str(info.value).lower()


def test_account_without_key() -> None:
    with pytest.raises(InvalidScalar, match=r"\.key"):
        local.account_public(object())  # type: ignore[arg-type]  # bad input on purpose


# -- strict hex --------------------------------------------------------------------------------

GOOD_POINT = "0x" + SERVER_PUBLIC.to_bytes().hex()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (GOOD_POINT[2:], "0x-prefixed"),
        ("0X" + GOOD_POINT[2:], "0x-prefixed"),
        (" " + GOOD_POINT, "0x-prefixed"),
        (GOOD_POINT + "0", "even number"),
        (GOOD_POINT[:-2] + "zz", "not hex digits"),
        (GOOD_POINT[:66] + " " + GOOD_POINT[67:], "not hex digits"),
        (GOOD_POINT[:-2] + "\n0", "not hex digits"),
        (GOOD_POINT[:-2], "64 bytes"),
        (GOOD_POINT + "00", "64 bytes"),
        ("0x", "64 bytes"),
        (None, "got NoneType"),
        (bytes(64), "got bytes"),
        (12, "got int"),
    ],
)
def test_malformed_hex_is_refused(value: object, message: str) -> None:
    with pytest.raises(MalformedHex, match=message) as info:
        local.rpc_generate_document_key(KEY_ACCOUNT, value)  # type: ignore[arg-type]  # bad input on purpose
    assert "server_key_public" in str(info.value)


@pytest.mark.parametrize("value", ["deadbeef", "0xdeadbee", "0xdeadbeeg", "0x dead"])
def test_malformed_bytes_params(value: str) -> None:
    with pytest.raises(MalformedHex, match="data"):
        local.rpc_encrypt(KEY_ACCOUNT, h(KB["key"]), value)
    with pytest.raises(MalformedHex, match="key"):
        local.rpc_decrypt(KEY_ACCOUNT, value, "0x" + "00" * 20)


def test_malformed_shadow_decrypt_params() -> None:
    args: list[Any] = [h(SD["decrypted_secret"]), h(SD["common_point"]), [h(s) for s in SD["decrypt_shadows"]],
            h(SD["encrypted_document"])]
    for index, bad in [(0, SD["decrypted_secret"]), (1, "0x" + SD["common_point"][:-2]),
                       (2, h(SD["decrypt_shadows"][0])), (2, ["0x0"]), (2, [b"\x04"]), (3, "0xabc")]:
        call = list(args)
        call[index] = bad
        with pytest.raises(MalformedHex):
            local.rpc_shadow_decrypt(SHADOW_ACCOUNT, *call)


def test_malformed_servers_set() -> None:
    with pytest.raises(MalformedHex, match="list"):
        local.rpc_servers_set_hash("0x" + "00" * 64)
    with pytest.raises(MalformedHex, match=r"servers_set\[1\] must be 64 bytes"):
        local.rpc_servers_set_hash(["0x" + "00" * 64, "0x" + "00" * 32])


def test_malformed_hex_messages_do_not_echo_the_value() -> None:
    secret_hex = KB["account_secret"]
    with pytest.raises(MalformedHex) as info:
        local.rpc_sign_raw_hash(KEY_ACCOUNT, secret_hex + "zz")
    assert secret_hex not in str(info.value)


def test_params_take_either_case_and_results_are_lowercase_hex() -> None:
    # The codec is protocol.hexcodec's (tested there); this face must use its strict 0x form.
    node = SERVER_PUBLIC.to_bytes()
    result = local.rpc_servers_set_hash(["0x" + node.hex().upper()])
    assert result == local.rpc_servers_set_hash(["0x" + node.hex()])
    assert result == "0x" + result[2:].lower() and len(result) == 66


def test_errors_are_one_tree() -> None:
    assert issubclass(MalformedHex, CryptoError) and issubclass(MalformedHex, SecretStoreError)
    assert issubclass(MalformedHex, ValueError)
