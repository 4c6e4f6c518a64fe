"""Known-answer tests: protocol.md §10.1, §10.2, §10.5 and §10.6 against the crypto core."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from ocean_secret_store.crypto import ecies
from ocean_secret_store.crypto.curve import G, Point, ecdh_x
from ocean_secret_store.crypto.document import decrypt_document, document_aes_key, encrypt_document
from ocean_secret_store.crypto.hashes import address_of, key_version_hash, servers_set_hash
from ocean_secret_store.crypto.signatures import recover_address, recover_public, sign_raw_hash
from ocean_secret_store.exceptions import DecryptionFailed

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def load(name: str) -> dict[str, Any]:
    with open(VECTORS / name, encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data


def secret(hex_value: str) -> int:
    return int(hex_value, 16)


def point(hex_value: str) -> Point:
    return Point.from_bytes(bytes.fromhex(hex_value))


def address(hex_value: str) -> bytes:
    assert hex_value.startswith("0x")
    return bytes.fromhex(hex_value[2:])


RPC = load("parity_rpc.json")
SIGS = load("requester_signatures.json")
DERIVED = load("derived.json")


def test_every_vector_file_states_its_provenance() -> None:
    for name in ("parity_rpc.json", "requester_signatures.json", "derived.json"):
        assert load(name)["provenance"].strip()


# -- §10.1 secretstore_shadowDecrypt ---------------------------------------------------------

SD = RPC["shadow_decrypt"]


def test_shadow_decrypt_account_address() -> None:
    assert address_of(Point.generator_mul(secret(SD["account_secret"]))) == address(SD["account_address"])


def test_shadow_decrypt_shadow_unwraps_to_epsilon() -> None:
    for blob, plain in zip(SD["decrypt_shadows"], SD["decrypt_shadows_plain"], strict=True):
        raw = bytes.fromhex(blob)
        assert len(raw) == 145  # a 32-byte scalar under ECIES
        got = ecies.decrypt(secret(SD["account_secret"]), raw, bytes.fromhex(SD["ecies_auth_data"]))
        assert got == bytes.fromhex(plain)


def test_shadow_decrypt_document_key_from_formula() -> None:
    # M = D + (sum of epsilons)·C' (protocol.md §2.7), done here with the bare group operations.
    epsilon = sum(int(e, 16) for e in SD["decrypt_shadows_plain"])
    recovered = point(SD["decrypted_secret"]) + epsilon * point(SD["common_point"])
    assert recovered == point(SD["document_key"])


def test_shadow_decrypt_document() -> None:
    plain = decrypt_document(point(SD["document_key"]), bytes.fromhex(SD["encrypted_document"]))
    assert plain == bytes.fromhex(SD["document"])


def test_shadow_decrypt_document_reencrypts_identically_with_its_iv() -> None:
    blob = bytes.fromhex(SD["encrypted_document"])
    assert encrypt_document(point(SD["document_key"]), bytes.fromhex(SD["document"]), iv=blob[-16:]) == blob


# -- §10.2 key blob -----------------------------------------------------------------------------

KB = RPC["key_blob"]


def test_key_blob_account_address() -> None:
    assert address_of(Point.generator_mul(secret(KB["account_secret"]))) == address(KB["account_address"])


def test_key_blob_unwraps_to_a_valid_document_key() -> None:
    raw = bytes.fromhex(KB["key"])
    assert len(raw) == 177
    plain = ecies.decrypt(secret(KB["account_secret"]), raw, bytes.fromhex(KB["ecies_auth_data"]))
    assert plain == bytes.fromhex(KB["document_key"])
    assert Point.from_bytes(plain).to_bytes() == plain


def test_key_blob_needs_the_default_auth_data() -> None:
    with pytest.raises(DecryptionFailed):
        ecies.decrypt(secret(KB["account_secret"]), bytes.fromhex(KB["key"]), b"")


# -- §10.5 requester signatures --------------------------------------------------------------


@pytest.mark.parametrize("vector", SIGS["vectors"], ids=lambda v: v["server_key_id"][-2:])
def test_requester_signature_recovers_to_address(vector: dict[str, str]) -> None:
    signature = bytes.fromhex(vector["signature"])
    assert signature[64] in (0, 1)
    assert recover_address(signature, bytes.fromhex(vector["server_key_id"])) == address(vector["address"])


def test_requester_signature_reproduced_by_signing() -> None:
    [vector] = [v for v in SIGS["vectors"] if "signer_secret" in v]
    key_id = bytes.fromhex(vector["server_key_id"])
    signature = sign_raw_hash(secret(vector["signer_secret"]), key_id)
    assert signature == bytes.fromhex(vector["signature"])
    assert recover_public(signature, key_id) == Point.generator_mul(secret(vector["signer_secret"]))


# -- §10.6 derived ------------------------------------------------------------------------------


def test_address_of_generator() -> None:
    vector = DERIVED["address_of_generator"]
    assert Point.generator_mul(secret(vector["secret"])) == G
    assert address_of(G) == address(vector["address"])


EC = DERIVED["ecies"]


def ecies_vector_encrypt(auth_data: bytes) -> bytes:
    recipient = Point.generator_mul(secret(EC["recipient_secret"]))
    return ecies.encrypt(
        recipient,
        bytes.fromhex(EC["plaintext"]),
        auth_data,
        ephemeral=secret(EC["ephemeral_secret"]),
        iv=bytes.fromhex(EC["iv"]),
    )


def test_ecies_ecdh_x_and_kdf() -> None:
    recipient = Point.generator_mul(secret(EC["recipient_secret"]))
    shared = ecdh_x(secret(EC["ephemeral_secret"]), recipient)
    assert shared.hex().startswith(EC["ecdh_x_prefix"]) and shared.hex().endswith(EC["ecdh_x_suffix"])
    # ECDH is symmetric: the recipient derives the same x from the ephemeral public key.
    assert ecdh_x(secret(EC["recipient_secret"]), Point.generator_mul(secret(EC["ephemeral_secret"]))) == shared
    kdf = hashlib.sha256(b"\x00\x00\x00\x01" + shared).digest()
    assert kdf == bytes.fromhex(EC["kdf"])
    # The module's key split: ek = K[:16], mk = SHA256(K[16:]).
    assert ecies._keys(shared) == (kdf[:16], hashlib.sha256(kdf[16:]).digest())


def test_ecies_fixed_ephemeral_and_iv() -> None:
    blob = ecies_vector_encrypt(bytes.fromhex(EC["auth_data"]))
    assert blob == bytes.fromhex(EC["ciphertext"])
    assert ecies.decrypt(secret(EC["recipient_secret"]), blob) == bytes.fromhex(EC["plaintext"])


def test_ecies_empty_auth_data_changes_only_the_tag() -> None:
    vector = EC["empty_auth_data"]
    blob = ecies_vector_encrypt(bytes.fromhex(vector["auth_data"]))
    full = bytes.fromhex(EC["ciphertext"])
    assert blob[:81] == full[:81]  # prefix, ephemeral point, IV
    assert blob[81:-32] == bytes.fromhex(vector["encrypted_body"])
    assert blob[-32:] == bytes.fromhex(vector["tag"])
    assert ecies.decrypt(secret(EC["recipient_secret"]), blob, b"") == bytes.fromhex(EC["plaintext"])


DOC = DERIVED["document_encryption"]


def test_document_encryption_vector() -> None:
    document_key = Point.generator_mul(secret(DOC["document_key_secret"]))
    assert document_key.to_bytes().hex().startswith(DOC["document_key_prefix"])
    assert document_key.to_bytes().hex().endswith(DOC["document_key_suffix"])
    assert document_aes_key(document_key) == document_key.to_bytes()[:16]
    iv = bytes.fromhex(DOC["iv"])
    blob = encrypt_document(document_key, DOC["document_utf8"].encode(), iv=iv)
    assert blob == bytes.fromhex(DOC["ciphertext"]) + iv
    assert decrypt_document(document_key, blob) == DOC["document_utf8"].encode()


def test_servers_set_hash_of_g_and_2g() -> None:
    [by_secrets, _] = DERIVED["servers_set_hash"]
    ids = [Point.generator_mul(secret(s)) for s in by_secrets["node_id_secrets"]]
    assert ids == [G, 2 * G]
    assert servers_set_hash(ids) == bytes.fromhex(by_secrets["hash"])
    # A set: order and duplicates do not matter.
    assert servers_set_hash([ids[1], ids[0], ids[1]]) == bytes.fromhex(by_secrets["hash"])


def test_servers_set_hash_of_the_rpc_ids() -> None:
    [_, rpc_ids] = DERIVED["servers_set_hash"]
    assert rpc_ids["node_ids"] == [SD["decrypted_secret"], SD["common_point"]]
    raw = [bytes.fromhex(h) for h in rpc_ids["node_ids"]]
    assert servers_set_hash(raw) == bytes.fromhex(rpc_ids["hash"])
    assert servers_set_hash([Point.from_bytes(r) for r in reversed(raw)]) == bytes.fromhex(rpc_ids["hash"])


def test_key_version_hash() -> None:
    vector = DERIVED["key_version_hash"]
    id_numbers = {
        Point.generator_mul(secret(entry["node_id_secret"])).to_bytes(): secret(entry["id_number"])
        for entry in vector["id_numbers"]
    }
    assert id_numbers == {G.to_bytes(): 1}
    assert key_version_hash(id_numbers) == bytes.fromhex(vector["hash"])
