"""Document keys and document encryption: one-shot vs streaming identity, stream helpers, bad input."""

from __future__ import annotations

import io
import random
from itertools import pairwise

import pytest
from Crypto.Cipher import AES
from hypothesis import given
from hypothesis import strategies as st

from ocean_secret_store.crypto.curve import G, N, Point, Rng
from ocean_secret_store.crypto.document import (
    DocumentDecryptor,
    DocumentEncryptor,
    decrypt_document,
    decrypt_stream,
    document_aes_key,
    encrypt_document,
    encrypt_secret,
    encrypt_stream,
    generate_document_key,
)
from ocean_secret_store.exceptions import CryptoError, DecryptionFailed, InvalidPoint

KEY_SECRET = 0x6B1D3A5F7E9C2B4D6F8A1C3E5B7D9F2A4C6E8B1D3F5A7C9E2B4D6F8A1C3E5B7D
KEY = Point.generator_mul(KEY_SECRET)
IV = bytes(range(100, 116))
SIZES = [0, 1, 15, 16, 17, 31, 32, 33, 1000]
BIG = (3 << 20) + 5  # crosses the default 1 MiB chunk size three times, not on a block boundary


def seeded(seed: int) -> Rng:
    return random.Random(seed).randbytes


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


def reference(data: bytes, iv: bytes = IV) -> bytes:
    # Independent statement of the format: AES-128-CTR under M[:16], full-block counter, IV appended.
    cipher = AES.new(KEY.to_bytes()[:16], AES.MODE_CTR, nonce=b"", initial_value=iv)
    return cipher.encrypt(data) + iv


# -- document keys -----------------------------------------------------------------------------


def test_encrypt_secret_is_elgamal_to_the_server_key() -> None:
    server_secret = 0x5E2E2
    server_public = Point.generator_mul(server_secret)
    common, encrypted = encrypt_secret(KEY, server_public, rng=seeded(3))
    assert encrypted - server_secret * common == KEY


def test_encrypt_secret_uses_the_injected_rng_for_k() -> None:
    draw = (77).to_bytes(32, "big")
    common, encrypted = encrypt_secret(KEY, G, rng=lambda n: draw[:n])
    assert common == Point.generator_mul(77)
    assert encrypted == KEY + Point.generator_mul(77)


@given(st.integers(min_value=1, max_value=N - 1), st.integers(min_value=0, max_value=2**32))
def test_generate_document_key_decrypts_with_the_server_secret(server_secret: int, seed: int) -> None:
    server_public = Point.generator_mul(server_secret)
    m, common, encrypted = generate_document_key(server_public, rng=seeded(seed))
    assert encrypted - server_secret * common == m
    assert generate_document_key(server_public, rng=seeded(seed)) == (m, common, encrypted)


def test_generate_document_key_is_random_by_default() -> None:
    first, second = generate_document_key(G), generate_document_key(G)
    assert first[0] != second[0] and first[1] != second[1]


def test_document_aes_key() -> None:
    assert document_aes_key(KEY) == KEY.to_bytes()[:16] == KEY.x_bytes[:16]
    assert document_aes_key(KEY.to_bytes()) == document_aes_key(KEY)
    # Parity checks only the length of a raw key (it never parses it as a point).
    assert document_aes_key(b"\x01" * 64) == b"\x01" * 16


@pytest.mark.parametrize("length", [0, 16, 32, 63, 65])
def test_document_key_wrong_length(length: int) -> None:
    with pytest.raises(InvalidPoint, match=f"invalid public key length.*got {length}"):
        encrypt_document(b"\x01" * length, b"data")


def test_document_key_wrong_type() -> None:
    with pytest.raises(InvalidPoint):
        document_aes_key("00" * 64)  # type: ignore[arg-type]  # bad input on purpose


# -- one-shot ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [*SIZES, BIG])
def test_one_shot_layout_and_round_trip(size: int) -> None:
    data = payload(size)
    blob = encrypt_document(KEY, data, iv=IV)
    assert len(blob) == size + 16
    assert blob[-16:] == IV
    assert blob == reference(data)
    assert decrypt_document(KEY, blob) == data
    assert decrypt_document(KEY, bytearray(blob)) == data
    assert decrypt_document(KEY, memoryview(blob)) == data


def test_one_shot_random_iv_from_rng() -> None:
    blob = encrypt_document(KEY, b"abc", rng=seeded(9))
    assert blob[-16:] == seeded(9)(16)
    assert encrypt_document(KEY, b"abc") != encrypt_document(KEY, b"abc")


def test_counter_wraps_like_a_128_bit_integer() -> None:
    data = payload(48)
    iv = b"\xff" * 16
    blob = encrypt_document(KEY, data, iv=iv)
    ecb = AES.new(KEY.to_bytes()[:16], AES.MODE_ECB)
    stream = ecb.encrypt(b"\xff" * 16) + ecb.encrypt(bytes(16)) + ecb.encrypt(bytes(15) + b"\x01")
    assert blob[:-16] == bytes(a ^ b for a, b in zip(data, stream, strict=True))


@pytest.mark.parametrize("length", [0, 1, 15])
def test_decrypt_too_short(length: int) -> None:
    with pytest.raises(DecryptionFailed, match=f"at least 16 bytes.*got {length}"):
        decrypt_document(KEY, bytes(length))


def test_exactly_an_iv_is_the_empty_document() -> None:
    assert decrypt_document(KEY, IV) == b""


@pytest.mark.parametrize("iv", [b"", bytes(15), bytes(17)])
def test_wrong_iv_length(iv: bytes) -> None:
    with pytest.raises(CryptoError, match="16 bytes"):
        encrypt_document(KEY, b"x", iv=iv)
    with pytest.raises(CryptoError, match="16 bytes"):
        DocumentEncryptor(KEY, iv=iv)
    with pytest.raises(DecryptionFailed, match="16 bytes"):
        DocumentDecryptor(KEY, iv)


def test_wrong_key_gives_garbage_not_an_error() -> None:
    # The format has no MAC (protocol.md §3.3): decryption with another key "succeeds".
    blob = encrypt_document(KEY, b"secret text", iv=IV)
    assert decrypt_document(Point.generator_mul(KEY_SECRET + 1), blob) != b"secret text"


# -- streaming = one-shot ----------------------------------------------------------------------


@given(st.binary(max_size=2000), st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
def test_streaming_encryption_equals_one_shot(data: bytes, cuts: list[int]) -> None:
    encryptor = DocumentEncryptor(KEY, iv=IV)
    streamed = b"".join(encryptor.update(chunk) for chunk in split(data, cuts)) + encryptor.finalize()
    assert streamed == encrypt_document(KEY, data, iv=IV)


@given(st.binary(max_size=2000), st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
def test_streaming_decryption_equals_one_shot(data: bytes, cuts: list[int]) -> None:
    blob = encrypt_document(KEY, data, iv=IV)
    decryptor = DocumentDecryptor(KEY, blob[-16:])
    assert b"".join(decryptor.update(chunk) for chunk in split(blob[:-16], cuts)) == data


@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=700))
def test_stream_helpers_equal_one_shot(data: bytes, chunk_size: int) -> None:
    dst = io.BytesIO()
    written = encrypt_stream(KEY, io.BytesIO(data), dst, chunk_size=chunk_size, iv=IV)
    assert dst.getvalue() == encrypt_document(KEY, data, iv=IV)
    assert written == len(data) + 16
    out = io.BytesIO()
    assert decrypt_stream(KEY, io.BytesIO(dst.getvalue()), out, chunk_size=chunk_size) == len(data)
    assert out.getvalue() == data


@pytest.mark.parametrize("size", [*SIZES, BIG])
def test_stream_helpers_default_chunk_size(size: int) -> None:
    data = payload(size, seed=size)
    dst = io.BytesIO()
    assert encrypt_stream(KEY, io.BytesIO(data), dst, rng=seeded(size)) == size + 16
    assert dst.getvalue() == encrypt_document(KEY, data, rng=seeded(size))
    out = io.BytesIO()
    src = io.BytesIO(dst.getvalue())
    assert decrypt_stream(KEY, src, out) == size
    assert out.getvalue() == data
    assert src.tell() == size + 16


def test_encryptor_update_into_and_iv_property() -> None:
    data = payload(100)
    encryptor = DocumentEncryptor(KEY, rng=seeded(4))
    out = bytearray(100)
    encryptor.update_into(data, out)
    assert bytes(out) + encryptor.finalize() == encrypt_document(KEY, data, iv=encryptor.iv)
    assert encryptor.iv == seeded(4)(16)


def test_update_after_finalize_is_refused() -> None:
    encryptor = DocumentEncryptor(KEY, iv=IV)
    encryptor.update(b"abc")
    assert encryptor.finalize() == IV
    with pytest.raises(CryptoError, match="finalized"):
        encryptor.update(b"more")
    with pytest.raises(CryptoError, match="finalized"):
        encryptor.update_into(b"more", bytearray(4))


def test_reprs_do_not_show_the_key() -> None:
    key_hex = KEY.to_bytes()[:16].hex()
    for obj in (DocumentEncryptor(KEY, iv=IV), DocumentDecryptor(KEY, IV)):
        assert key_hex not in repr(obj)
        assert "secret" in repr(obj)


def test_decrypt_stream_starts_at_the_current_position() -> None:
    data = payload(50)
    prefix = b"HEADER"
    src = io.BytesIO(prefix + encrypt_document(KEY, data, iv=IV))
    src.seek(len(prefix))
    out = io.BytesIO()
    assert decrypt_stream(KEY, src, out, chunk_size=7) == 50
    assert out.getvalue() == data


@pytest.mark.parametrize("length", [0, 1, 15])
def test_decrypt_stream_too_short(length: int) -> None:
    with pytest.raises(DecryptionFailed, match="at least 16 bytes"):
        decrypt_stream(KEY, io.BytesIO(bytes(length)), io.BytesIO())


def test_decrypt_stream_of_exactly_an_iv() -> None:
    out = io.BytesIO()
    assert decrypt_stream(KEY, io.BytesIO(IV), out) == 0
    assert out.getvalue() == b""


@pytest.mark.parametrize("chunk_size", [0, -1])
def test_bad_chunk_size(chunk_size: int) -> None:
    with pytest.raises(CryptoError, match="chunk_size"):
        encrypt_stream(KEY, io.BytesIO(b"x"), io.BytesIO(), chunk_size=chunk_size)
    with pytest.raises(CryptoError, match="chunk_size"):
        decrypt_stream(KEY, io.BytesIO(bytes(20)), io.BytesIO(), chunk_size=chunk_size)


class Trickle:
    """A reader without readinto that returns at most 3 bytes per read, and a writer taking 2 per write."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = data
        self.pos = 0
        self.written = bytearray()

    def read(self, n: int = -1) -> bytes:
        chunk = self.data[self.pos : self.pos + min(n, 3)]
        self.pos += len(chunk)
        return chunk

    def write(self, view: bytes) -> int:
        self.written += bytes(view[:2])
        return min(2, len(view))


def test_stream_helpers_handle_short_reads_and_short_writes() -> None:
    data = payload(101)
    src, dst = Trickle(data), Trickle()
    assert encrypt_stream(KEY, src, dst, chunk_size=10, iv=IV) == 117  # type: ignore[arg-type]  # duck-typed streams
    assert bytes(dst.written) == encrypt_document(KEY, data, iv=IV)


def test_streaming_buffers_are_reused_not_kept() -> None:
    # Each chunk's output must be consumed before the next chunk overwrites the buffer: a writer
    # that copies (as io's contract requires) sees the right bytes.
    data = payload(5000)
    chunks: list[bytes] = []

    class Collect(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, view: bytes) -> int:  # type: ignore[override]  # narrower than RawIOBase on purpose
            chunks.append(bytes(view))
            return len(view)

    encrypt_stream(KEY, io.BytesIO(data), Collect(), chunk_size=64, iv=IV)  # type: ignore[arg-type]  # a raw writer
    assert len(chunks) == 5000 // 64 + 2
    assert b"".join(chunks) == encrypt_document(KEY, data, iv=IV)
