"""Parity ECIES: round trips, sizes, injected randomness, and every kind of tampering raising DecryptionFailed."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocean_secret_store.crypto import ecies
from ocean_secret_store.crypto.curve import N, Point, Rng
from ocean_secret_store.exceptions import CryptoError, DecryptionFailed, InvalidPoint, SecretStoreError

SECRET = 0x3C9A4B1F6E2D8A7C5B4E3F2A1D0C9B8A7F6E5D4C3B2A19081726354453627181
PUBLIC = Point.generator_mul(SECRET)
PLAIN = b"the document key travels here.."


def seeded(seed: int) -> Rng:
    generator = random.Random(seed)
    return generator.randbytes


def blob() -> bytes:
    return ecies.encrypt(PUBLIC, PLAIN, rng=seeded(1))


@given(st.binary(max_size=300), st.binary(max_size=8))
def test_round_trip(plain: bytes, auth_data: bytes) -> None:
    encrypted = ecies.encrypt(PUBLIC, plain, auth_data)
    assert len(encrypted) == ecies.OVERHEAD + len(plain)
    assert encrypted[0] == 4
    assert ecies.decrypt(SECRET, encrypted, auth_data) == plain


@pytest.mark.parametrize(("size", "expected"), [(0, 113), (32, 145), (64, 177), (65, 178)])
def test_sizes(size: int, expected: int) -> None:
    assert len(ecies.encrypt(PUBLIC, bytes(size))) == expected


def test_default_auth_data_is_two_zero_bytes() -> None:
    assert ecies.DEFAULT_MAC == b"\x00\x00"
    encrypted = ecies.encrypt(PUBLIC, PLAIN)
    assert ecies.decrypt(SECRET, encrypted, b"\x00\x00") == PLAIN


def test_injected_rng_makes_it_deterministic() -> None:
    assert blob() == blob()
    assert ecies.encrypt(PUBLIC, PLAIN, rng=seeded(2)) != blob()


def test_randomised_by_default() -> None:
    assert ecies.encrypt(PUBLIC, PLAIN) != ecies.encrypt(PUBLIC, PLAIN)


def test_ephemeral_and_iv_are_where_the_format_says() -> None:
    ephemeral, iv = 0xE1E1E1, bytes(range(16, 32))
    encrypted = ecies.encrypt(PUBLIC, PLAIN, ephemeral=ephemeral, iv=iv)
    assert encrypted[1:65] == Point.generator_mul(ephemeral).to_bytes()
    assert encrypted[65:81] == iv


@pytest.mark.parametrize("prefix", [2, 3, 4])
def test_accepted_prefixes(prefix: int) -> None:
    # Parity accepts 2, 3 and 4 and reads X || Y whatever the byte says.
    encrypted = bytearray(blob())
    encrypted[0] = prefix
    assert ecies.decrypt(SECRET, bytes(encrypted)) == PLAIN


@pytest.mark.parametrize("prefix", [0, 1, 5, 0x30, 0xFF])
def test_rejected_prefixes(prefix: int) -> None:
    encrypted = bytearray(blob())
    encrypted[0] = prefix
    with pytest.raises(DecryptionFailed, match="starts with 0x04"):
        ecies.decrypt(SECRET, bytes(encrypted))


@pytest.mark.parametrize("length", [0, 1, 64, 112])
def test_too_short(length: int) -> None:
    with pytest.raises(DecryptionFailed, match=f"at least 113 bytes, got {length}"):
        ecies.decrypt(SECRET, blob()[:length])


def test_empty_plaintext_is_exactly_the_overhead() -> None:
    encrypted = ecies.encrypt(PUBLIC, b"")
    assert len(encrypted) == 113
    assert ecies.decrypt(SECRET, encrypted) == b""


REGIONS = {"ephemeral": (1, 65), "iv": (65, 81), "ciphertext": (81, 81 + len(PLAIN)), "tag": (81 + len(PLAIN), None)}


@pytest.mark.parametrize("region", sorted(REGIONS))
def test_tampering_each_region(region: str) -> None:
    start, stop = REGIONS[region]
    encrypted = bytearray(blob())
    end = stop if stop is not None else len(encrypted)
    for index in (start, (start + end) // 2, end - 1):
        tampered = bytearray(encrypted)
        tampered[index] ^= 0x01
        with pytest.raises(DecryptionFailed):
            ecies.decrypt(SECRET, bytes(tampered))


@given(st.data())
def test_tampering_any_byte(data: st.DataObject) -> None:
    encrypted = blob()
    index = data.draw(st.integers(min_value=0, max_value=len(encrypted) - 1))
    mask = data.draw(st.integers(min_value=1, max_value=255))
    tampered = bytearray(encrypted)
    tampered[index] ^= mask
    if index == 0 and tampered[0] in (2, 3):
        assert ecies.decrypt(SECRET, bytes(tampered)) == PLAIN
        return
    with pytest.raises(DecryptionFailed):
        ecies.decrypt(SECRET, bytes(tampered))


def test_ephemeral_not_on_curve() -> None:
    encrypted = bytearray(blob())
    encrypted[1:65] = (1).to_bytes(32, "big") * 2
    with pytest.raises(DecryptionFailed, match="not a curve point"):
        ecies.decrypt(SECRET, bytes(encrypted))


def test_ephemeral_replaced_by_another_valid_point() -> None:
    encrypted = bytearray(blob())
    encrypted[1:65] = Point.generator_mul(99).to_bytes()
    with pytest.raises(DecryptionFailed, match="authentication tag"):
        ecies.decrypt(SECRET, bytes(encrypted))


@pytest.mark.parametrize("auth_data", [b"", b"\x00", b"\x00\x01", b"\x00\x00\x00"])
def test_wrong_auth_data(auth_data: bytes) -> None:
    with pytest.raises(DecryptionFailed, match="authentication tag"):
        ecies.decrypt(SECRET, blob(), auth_data)


def test_node_channel_auth_data_round_trip() -> None:
    encrypted = ecies.encrypt(PUBLIC, PLAIN, b"")
    assert ecies.decrypt(SECRET, encrypted, b"") == PLAIN
    with pytest.raises(DecryptionFailed):
        ecies.decrypt(SECRET, encrypted)


def test_wrong_key_message_has_no_secret_material() -> None:
    with pytest.raises(DecryptionFailed) as info:
        ecies.decrypt(SECRET + 1, blob())
    text = str(info.value)
    for secret_form in (format(SECRET, "x"), format(SECRET + 1, "x"), (SECRET + 1).to_bytes(32, "big").hex(),
                        PLAIN.hex(), PLAIN.decode()):
        assert secret_form not in text


@pytest.mark.parametrize("secret", [0, N])
def test_zero_secret_is_a_typed_error(secret: int) -> None:
    with pytest.raises(CryptoError):
        ecies.decrypt(secret, blob())


def test_encrypt_to_zero_ephemeral_is_a_typed_error() -> None:
    with pytest.raises(InvalidPoint):
        ecies.encrypt(PUBLIC, PLAIN, ephemeral=0)


def test_wrong_iv_length_is_a_typed_error() -> None:
    with pytest.raises(CryptoError):
        ecies.encrypt(PUBLIC, PLAIN, iv=bytes(15))


def test_errors_belong_to_one_tree() -> None:
    assert issubclass(DecryptionFailed, CryptoError) and issubclass(DecryptionFailed, SecretStoreError)
