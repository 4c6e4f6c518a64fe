"""Raw-hash recoverable ECDSA: round trips, v in {0,1}, low-S, and typed errors for every malformed input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocean_secret_store.crypto.curve import N, Point, Scalar
from ocean_secret_store.crypto.hashes import address_of
from ocean_secret_store.crypto.signatures import (
    check_signature_encoding,
    recover_address,
    recover_public,
    sign_raw_hash,
    verify_raw_hash,
)
from ocean_secret_store.exceptions import CryptoError, InvalidScalar, InvalidSignature, SecretStoreError

SECRET = 0x2F1E3D4C5B6A79880716253443526170EFDECDBCAB9A8978675645342312F0E1
PUBLIC = Point.generator_mul(SECRET)
KEY_ID = bytes.fromhex("ab" * 32)

scalars = st.integers(min_value=1, max_value=N - 1)
hashes32 = st.binary(min_size=32, max_size=32)


def signature() -> bytes:
    return sign_raw_hash(SECRET, KEY_ID)


def with_fields(r: int | None = None, s: int | None = None, v: int | None = None) -> bytes:
    base = signature()
    r_bytes = base[:32] if r is None else r.to_bytes(32, "big")
    s_bytes = base[32:64] if s is None else s.to_bytes(32, "big")
    return r_bytes + s_bytes + bytes([base[64] if v is None else v])


@given(scalars, hashes32)
def test_sign_recover_round_trip(secret: int, message_hash: bytes) -> None:
    sig = sign_raw_hash(secret, message_hash)
    assert len(sig) == 65
    assert sig[64] in (0, 1)
    assert int.from_bytes(sig[32:64], "big") <= N // 2  # low-S
    public = Point.generator_mul(secret)
    assert recover_public(sig, message_hash) == public
    assert recover_address(sig, message_hash) == address_of(public)
    verify_raw_hash(public, sig, message_hash)


def test_deterministic_rfc6979() -> None:
    assert signature() == signature()
    assert sign_raw_hash(Scalar(SECRET), KEY_ID) == sign_raw_hash(SECRET.to_bytes(32, "big"), KEY_ID) == signature()


def test_other_key_or_other_hash_does_not_verify() -> None:
    with pytest.raises(InvalidSignature, match="another key"):
        verify_raw_hash(Point.generator_mul(SECRET + 1), signature(), KEY_ID)
    with pytest.raises(InvalidSignature):
        verify_raw_hash(PUBLIC, signature(), bytes(31) + b"\x01")


def test_high_s_recovers_but_does_not_verify() -> None:
    sig = signature()
    s = int.from_bytes(sig[32:64], "big")
    high = with_fields(s=N - s, v=sig[64] ^ 1)
    # libsecp256k1 recovery accepts high S (as Parity's nodes do) ...
    assert recover_public(high, KEY_ID) == PUBLIC
    # ... but our verification insists on low S.
    with pytest.raises(InvalidSignature, match="low-S"):
        verify_raw_hash(PUBLIC, high, KEY_ID)


@pytest.mark.parametrize("v", [27, 28])
def test_ethereum_v_is_refused_with_a_helpful_message(v: int) -> None:
    with pytest.raises(InvalidSignature, match="27/28") as info:
        recover_public(with_fields(v=v), KEY_ID)
    assert "bad signature" in str(info.value)


@pytest.mark.parametrize("v", [4, 26, 255])
def test_out_of_range_v(v: int) -> None:
    with pytest.raises(InvalidSignature, match="recovery id"):
        recover_public(with_fields(v=v), KEY_ID)


@pytest.mark.parametrize(
    ("field", "value"), [("r", 0), ("s", 0), ("r", N), ("s", N), ("r", 2**256 - 1), ("s", N + 1)]
)
def test_r_and_s_out_of_range(field: str, value: int) -> None:
    sig = with_fields(**{field: value})
    with pytest.raises(InvalidSignature, match=r"r and s must be in \[1, n-1\]"):
        check_signature_encoding(sig)
    with pytest.raises(InvalidSignature):
        recover_public(sig, KEY_ID)


def test_unrecoverable_signature() -> None:
    # r = 0x0303..03 is below n but no curve point has that x coordinate (mod n), so recovery fails.
    sig = bytes([3]) * 32 + bytes([1]) * 32 + b"\x00"
    with pytest.raises(InvalidSignature, match="no public key recovers"):
        recover_public(sig, KEY_ID)


@pytest.mark.parametrize("length", [0, 64, 66, 130])
def test_signature_wrong_length(length: int) -> None:
    with pytest.raises(InvalidSignature, match=f"65 bytes.*got {length}"):
        recover_public((signature() * 3)[:length], KEY_ID)


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_hash_wrong_length(length: int) -> None:
    with pytest.raises(InvalidSignature, match=f"32 bytes, got {length}"):
        sign_raw_hash(SECRET, bytes(length))
    with pytest.raises(InvalidSignature, match=f"32 bytes, got {length}"):
        recover_public(signature(), bytes(length))


@pytest.mark.parametrize("secret", [0, N, N + 1, bytes(32), N.to_bytes(32, "big"), (2**256 - 1).to_bytes(32, "big")])
def test_bad_signing_secret(secret: int | bytes) -> None:
    with pytest.raises(InvalidScalar) as info:
        sign_raw_hash(secret, KEY_ID)
    text = str(info.value)
    value = secret if isinstance(secret, int) else int.from_bytes(secret, "big")
    if value:
        assert format(value, "x") not in text.lower()
        assert format(value, "064x") not in text.lower()


@pytest.mark.parametrize("length", [31, 33])
def test_signing_secret_wrong_length(length: int) -> None:
    with pytest.raises(InvalidScalar, match=f"32 bytes, got {length}"):
        sign_raw_hash(b"\x11" * length, KEY_ID)


def test_error_messages_never_contain_the_secret() -> None:
    secret_hex = SECRET.to_bytes(32, "big").hex()
    failures: list[SecretStoreError] = []
    for call in (
        lambda: sign_raw_hash(SECRET, bytes(31)),
        lambda: verify_raw_hash(Point.generator_mul(SECRET + 1), signature(), KEY_ID),
        lambda: recover_public(with_fields(v=27), KEY_ID),
    ):
        with pytest.raises(SecretStoreError) as info:
            call()
        failures.append(info.value)
    for error in failures:
        assert secret_hex not in str(error)
        assert format(SECRET, "x") not in str(error)


def test_one_exception_tree() -> None:
    for cls in (InvalidSignature, InvalidScalar):
        assert issubclass(cls, CryptoError) and issubclass(cls, SecretStoreError) and issubclass(cls, ValueError)
