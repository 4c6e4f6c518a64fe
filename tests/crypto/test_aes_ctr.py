"""ECIES's AES-128-CTR (through ``cryptography``) gives pycryptodome's bytes: the full 16-byte IV as
the initial counter block, incremented big-endian over all 128 bits, wrapping at the top."""

from __future__ import annotations

import os

import pytest
from Crypto.Cipher import AES

from ocean_secret_store.crypto.ecies import aes128_ctr
from ocean_secret_store.exceptions import CryptoError


@pytest.mark.parametrize("iv", [bytes(16), b"\xff" * 16, b"\x00" * 8 + b"\xff" * 8, os.urandom(16)])
@pytest.mark.parametrize("size", [0, 1, 16, 32, 33, 1000])
def test_the_same_bytes_as_pycryptodome(iv: bytes, size: int) -> None:
    key, data = os.urandom(16), os.urandom(size)
    expected = AES.new(key, AES.MODE_CTR, nonce=b"", initial_value=iv).encrypt(data)
    assert aes128_ctr(key, iv, data) == expected
    assert aes128_ctr(key, iv, expected) == data


def test_only_aes_128_keys() -> None:
    with pytest.raises(CryptoError):
        aes128_ctr(os.urandom(32), bytes(16), b"x")
