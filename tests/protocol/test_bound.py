"""Bound signatures (protocol/bound.py): the canonical encoding, the headers, verification, the nonce cache."""

from __future__ import annotations

import pytest

from ocean_secret_store.crypto.curve import Point
from ocean_secret_store.crypto.hashes import address_of, keccak256
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.exceptions import InsufficientRequesterData, InvalidMessage
from ocean_secret_store.protocol import bound as b
from ocean_secret_store.protocol import messages as m

SECRET = 0x1234
SIGNER = address_of(Point.generator_mul(SECRET))
KEY_ID = bytes(range(32))
NONCE = bytes.fromhex("00112233445566778899aabbccddeeff")
NOW = 1_800_000_000
C = Point.generator_mul(7)
E = Point.generator_mul(11)


def test_the_encoding_is_exactly_as_documented() -> None:
    encoded = b.encode("store_document_key", KEY_ID, b.store_arguments(C, E), NONCE, NOW + 30)
    expected = (
        b"ocean-secret-store/bound-request\x00\x01"
        + bytes([18]) + b"store_document_key"
        + KEY_ID
        + (128).to_bytes(2, "big") + C.to_bytes() + E.to_bytes()
        + NONCE
        + (NOW + 30).to_bytes(8, "big")
    )
    assert encoded == expected
    assert b.digest("store_document_key", KEY_ID, b.store_arguments(C, E), NONCE, NOW + 30) == keccak256(expected)


def test_arguments_of_each_operation() -> None:
    assert b.threshold_arguments(1) == (1).to_bytes(8, "big")
    assert b.message_hash_arguments(b"\x05" * 32) == b"\x05" * 32
    assert b.no_arguments() == b""
    with pytest.raises(b.BoundSignatureError):
        b.message_hash_arguments(b"\x05" * 31)
    with pytest.raises(b.BoundSignatureError):
        b.threshold_arguments(2**64)


def test_a_pinned_vector() -> None:
    # Pinned so that a change of the encoding cannot pass unnoticed (other clients implement it).
    signed = b.digest("generate_server_key", KEY_ID, b.threshold_arguments(1), NONCE, 1_800_000_030)
    assert signed.hex() == keccak256(
        b"ocean-secret-store/bound-request\x00\x01\x13generate_server_key" + KEY_ID
        + b"\x00\x08" + (1).to_bytes(8, "big") + NONCE + (1_800_000_030).to_bytes(8, "big")
    ).hex()


def test_the_operations_are_separated() -> None:
    digests = {b.digest(op, KEY_ID, b"", NONCE, NOW) for op in b.OPERATIONS}
    assert len(digests) == len(b.OPERATIONS)
    with pytest.raises(b.BoundSignatureError, match="unknown operation"):
        b.encode("drop_everything", KEY_ID, b"", NONCE, NOW)


def test_headers_round_trip_and_the_signature_is_not_in_the_repr() -> None:
    bound = b.sign(SECRET, "retrieve_document_key", KEY_ID, b"", nonce=NONCE, expiry=NOW + 30)
    headers = bound.headers()
    assert headers[b.HEADER] == f"1;{NONCE.hex()};{NOW + 30}"
    assert len(headers[b.SIGNATURE_HEADER]) == 130
    assert b.parse_headers(headers[b.HEADER], headers[b.SIGNATURE_HEADER]) == bound
    assert b.parse_headers(headers[b.HEADER], headers[b.SIGNATURE_HEADER].upper()) == bound
    assert headers[b.SIGNATURE_HEADER] not in repr(bound)
    assert b.parse_headers(None, None) is None


@pytest.mark.parametrize(("value", "signature", "problem"), [
    ("1;00;1", None, "send both"),
    (None, "00" * 65, "send both"),
    ("1;" + "00" * 16, "00" * 65, "must be <version>"),
    ("1;" + "00" * 15 + ";5", "00" * 65, "must be <version>"),
    ("1;" + "zz" * 16 + ";5", "00" * 65, "must be <version>"),
    ("2;" + "00" * 16 + ";5", "00" * 65, "unsupported version 2"),
    ("1;" + "00" * 16 + ";" + "9" * 20, "00" * 65, "64 bits"),
    ("1;" + "00" * 16 + ";5", "0x" + "00" * 64, "130 hex digits"),
    ("1;" + "00" * 16 + ";5", "00" * 64, "130 hex digits"),
])
def test_malformed_headers_are_refused(value: str | None, signature: str | None, problem: str) -> None:
    with pytest.raises(b.BoundSignatureError, match=problem) as caught:
        b.parse_headers(value, signature)
    # Parity's 400 "Insufficient requester data: ..."
    assert isinstance(caught.value, InsufficientRequesterData)
    assert caught.value.status == 400
    assert str(caught.value).startswith("Insufficient requester data: ")


def test_verify_accepts_the_request_it_was_made_for() -> None:
    bound = b.sign(SECRET, "store_document_key", KEY_ID, b.store_arguments(C, E), nonce=NONCE, expiry=NOW + 30)
    b.verify(bound, "store_document_key", KEY_ID, b.store_arguments(C, E), signer=SIGNER, now=NOW)


@pytest.mark.parametrize(("operation", "key_id", "arguments"), [
    ("generate_server_key", KEY_ID, b.store_arguments(C, E)),   # another operation
    ("store_document_key", bytes(32), b.store_arguments(C, E)),  # another key id
    ("store_document_key", KEY_ID, b.store_arguments(E, C)),     # other arguments
])
def test_verify_refuses_any_other_request(operation: str, key_id: bytes, arguments: bytes) -> None:
    bound = b.sign(SECRET, "store_document_key", KEY_ID, b.store_arguments(C, E), nonce=NONCE, expiry=NOW + 30)
    with pytest.raises(b.BoundSignatureError, match="not by the path signature's signer"):
        b.verify(bound, operation, key_id, arguments, signer=SIGNER, now=NOW)


def test_verify_refuses_another_signer_expired_too_long_and_garbage() -> None:
    bound = b.sign(SECRET, "retrieve_document_key", KEY_ID, b"", nonce=NONCE, expiry=NOW + 30)
    with pytest.raises(b.BoundSignatureError, match="not by the path signature's signer"):
        b.verify(bound, "retrieve_document_key", KEY_ID, b"", signer=b"\x01" * 20, now=NOW)
    with pytest.raises(b.BoundSignatureError, match="expired"):
        b.verify(bound, "retrieve_document_key", KEY_ID, b"", signer=SIGNER, now=NOW + 31)
    far = b.sign(SECRET, "retrieve_document_key", KEY_ID, b"", nonce=NONCE, expiry=NOW + b.MAX_LIFETIME + 1)
    with pytest.raises(b.BoundSignatureError, match="more than 60 s ahead"):
        b.verify(far, "retrieve_document_key", KEY_ID, b"", signer=SIGNER, now=NOW)
    # the bare key-id signature is no bound signature
    bare = b.Bound(nonce=NONCE, expiry=NOW + 30, signature=sign_raw_hash(SECRET, KEY_ID))
    with pytest.raises(b.BoundSignatureError):
        b.verify(bare, "retrieve_document_key", KEY_ID, b"", signer=SIGNER, now=NOW)
    broken = b.Bound(nonce=NONCE, expiry=NOW + 30, signature=b"\x00" * 65)
    with pytest.raises(b.BoundSignatureError, match="bad bound signature"):
        b.verify(broken, "retrieve_document_key", KEY_ID, b"", signer=SIGNER, now=NOW)


def test_the_nonce_cache_refuses_a_reuse_until_the_expiry_and_stays_bounded() -> None:
    cache = b.NonceCache(capacity=2)
    first = b.Bound(nonce=NONCE, expiry=NOW + 10, signature=b"")
    cache.claim(SIGNER, first, NOW)
    with pytest.raises(b.BoundSignatureError, match="used already"):
        cache.claim(SIGNER, first, NOW + 5)
    cache.claim(b"\x02" * 20, first, NOW)  # the same nonce of another signer is another entry
    with pytest.raises(b.BoundSignatureError, match="too many"):
        cache.claim(SIGNER, b.Bound(nonce=b"\x01" * 16, expiry=NOW + 10, signature=b""), NOW)
    # after the expiry the entries are gone (a replay then fails on the expiry instead)
    cache.claim(SIGNER, b.Bound(nonce=b"\x01" * 16, expiry=NOW + 30, signature=b""), NOW + 11)
    assert len(cache) == 1


def test_the_store_message_carries_the_bound_fields() -> None:
    bound = b.sign(SECRET, "store_document_key", KEY_ID, b.store_arguments(C, E), nonce=NONCE, expiry=NOW + 30)
    store = m.StorePrepare(key_id=KEY_ID, tx=b"\x02" * 32, signature=b"\x01" * 65, common_point=C,
                           encrypted_point=E, operation="store_document_key", bound=bound)
    decoded = m.decode(m.encode(m.Envelope(store, rid=3))).body
    assert isinstance(decoded, m.StorePrepare)
    assert decoded.bound == bound and decoded.operation == "store_document_key"
    # a node of an earlier version sends neither field
    bare = m.StorePrepare(key_id=KEY_ID, tx=b"\x02" * 32, signature=b"\x01" * 65, common_point=C, encrypted_point=E)
    wire = m.encode(m.Envelope(bare, rid=3)).replace(b',"operation":null,"bound":null', b"")
    assert b'"bound"' not in wire
    old = m.decode(wire).body
    assert isinstance(old, m.StorePrepare)
    assert old.bound is None and old.operation is None
    with pytest.raises(InvalidMessage) as caught:
        m.decode(m.encode(m.Envelope(store, rid=3)).replace(b'"bound":["1;', b'"bound":["7;'))
    assert caught.value.detail is not None
    assert caught.value.detail.startswith("StorePrepare.bound: bound signature: unsupported version 7")
