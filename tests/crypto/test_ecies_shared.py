"""One ECIES ephemeral key for many messages (ecies.Encryptor / ecies.Decryptor, the batch answers'
decrypt shadows): each message is a plain Parity ECIES blob that ecies.decrypt opens alone, one
message tampered fails that one only, every recipient and every encryptor has its own ephemeral
point, counter blocks never repeat, and the decryptor does one ECDH per ephemeral point."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocean_secret_store.crypto import ecies, shadows
from ocean_secret_store.crypto.curve import G, N, Point, random_scalar
from ocean_secret_store.crypto.dkg import LocalKey, run_local_dkg
from ocean_secret_store.exceptions import CryptoError, DecryptionFailed, InvalidScalar
from tests.crypto.strategies import key_and_group

SECRET = 0x3C9A4B1F6E2D8A7C5B4E3F2A1D0C9B8A7F6E5D4C3B2A19081726354453627181
PUBLIC = Point.generator_mul(SECRET)
OTHER_SECRET = 0x1D0C9B8A7F6E5D4C3B2A190817263544536271813C9A4B1F6E2D8A7C5B4E3F2A
OTHER = Point.generator_mul(OTHER_SECRET)

plains = st.lists(st.binary(max_size=80), min_size=1, max_size=12)


def ivs(*values: int) -> Iterator[bytes]:
    return (v.to_bytes(16, "big") for v in values)


@given(plains, st.binary(max_size=4))
def test_each_message_opens_alone_with_plain_decrypt(messages: list[bytes], auth_data: bytes) -> None:
    encryptor = ecies.Encryptor(PUBLIC)
    blobs = [encryptor.encrypt(plain, auth_data) for plain in messages]
    for plain, blob in zip(messages, blobs, strict=True):
        assert len(blob) == ecies.OVERHEAD + len(plain)
        assert blob[0] == 4 and blob[1:65] == encryptor.ephemeral_point
        assert ecies.decrypt(SECRET, blob, auth_data) == plain
    opener = ecies.Decryptor(SECRET)
    assert [opener.decrypt(blob, auth_data) for blob in blobs] == messages


@given(st.lists(st.binary(min_size=1, max_size=64), min_size=2, max_size=40))
def test_ivs_are_distinct(messages: list[bytes]) -> None:
    encryptor = ecies.Encryptor(PUBLIC)
    seen = [encryptor.encrypt(plain)[65:81] for plain in messages]
    assert len(set(seen)) == len(seen)


@given(plains, st.data())
def test_tampering_one_message_fails_that_one_only(messages: list[bytes], data: st.DataObject) -> None:
    encryptor = ecies.Encryptor(PUBLIC)
    blobs = [encryptor.encrypt(plain) for plain in messages]
    victim = data.draw(st.integers(0, len(blobs) - 1))
    index = data.draw(st.integers(1, len(blobs[victim]) - 1))  # byte 0: Parity reads 2, 3 and 4 alike
    mask = data.draw(st.integers(1, 255))
    tampered = bytearray(blobs[victim])
    tampered[index] ^= mask
    blobs[victim] = bytes(tampered)
    opener = ecies.Decryptor(SECRET)
    for position, (plain, blob) in enumerate(zip(messages, blobs, strict=True)):
        if position == victim:
            with pytest.raises(DecryptionFailed):
                ecies.decrypt(SECRET, blob)
            with pytest.raises(DecryptionFailed):
                opener.decrypt(blob)
        else:  # before and after the tampered one, through the same decryptor's remembered keys
            assert ecies.decrypt(SECRET, blob) == plain
            assert opener.decrypt(blob) == plain


def test_different_requesters_and_answers_get_different_ephemeral_points() -> None:
    first, second, again = ecies.Encryptor(PUBLIC), ecies.Encryptor(OTHER), ecies.Encryptor(PUBLIC)
    points = {first.ephemeral_point, second.ephemeral_point, again.ephemeral_point}
    assert len(points) == 3
    blob = second.encrypt(b"for the other one")
    with pytest.raises(DecryptionFailed, match="authentication tag"):
        ecies.decrypt(SECRET, blob)
    assert ecies.decrypt(OTHER_SECRET, blob) == b"for the other one"


def test_byte_for_byte_the_single_format() -> None:
    ephemeral, iv = 0xE1E1E1, bytes(range(16, 32))
    encryptor = ecies.Encryptor(PUBLIC, ephemeral=ephemeral, rng=lambda n: iv)
    plain = b"a decrypt shadow of 32 bytes...."
    assert encryptor.encrypt(plain) == ecies.encrypt(PUBLIC, plain, ephemeral=ephemeral, iv=iv)


def test_counter_blocks_never_overlap() -> None:
    # a 32-byte message uses the counter blocks iv and iv + 1: an IV that would reuse either is redrawn
    draws = ivs(1000, 1001, 999, 1002, 5000)
    encryptor = ecies.Encryptor(PUBLIC, ephemeral=7, rng=lambda n: next(draws))
    first = encryptor.encrypt(bytes(32))
    second = encryptor.encrypt(bytes(32))
    assert first[65:81] == (1000).to_bytes(16, "big")
    assert second[65:81] == (1002).to_bytes(16, "big")  # 1001 and 999 overlap 1000..1001
    assert ecies.decrypt(SECRET, second) == bytes(32)


def test_counter_blocks_wrap_around() -> None:
    top = (1 << 128) - 1
    draws = ivs(top, 0, 1)
    encryptor = ecies.Encryptor(PUBLIC, ephemeral=7, rng=lambda n: next(draws))
    encryptor.encrypt(bytes(20))  # blocks top and 0
    assert encryptor.encrypt(bytes(16))[65:81] == (1).to_bytes(16, "big")


def test_a_repeating_random_source_is_refused() -> None:
    encryptor = ecies.Encryptor(PUBLIC, ephemeral=7, rng=bytes)
    encryptor.encrypt(b"first")
    with pytest.raises(CryptoError, match="repeats"):
        encryptor.encrypt(b"second")


def test_short_iv_from_the_random_source_is_refused() -> None:
    encryptor = ecies.Encryptor(PUBLIC, ephemeral=7, rng=lambda n: bytes(15))
    with pytest.raises(CryptoError, match="16 bytes"):
        encryptor.encrypt(b"x")


def test_decryptor_does_one_ecdh_per_ephemeral_point(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [ecies.Encryptor(PUBLIC) for _ in range(3)]
    blobs = [a.encrypt(bytes([i]) * 32) for i in range(10) for a in answers]
    calls = itertools.count()
    real = ecies.ecdh_x

    def counted(secret: int, point: Point) -> bytes:
        next(calls)
        return real(secret, point)

    monkeypatch.setattr(ecies, "ecdh_x", counted)
    opener = ecies.Decryptor(SECRET)
    assert [opener.decrypt(b) for b in blobs] == [bytes([i]) * 32 for i in range(10) for _ in answers]
    assert next(calls) == 3


def test_decryptor_cache_is_bounded_and_still_correct() -> None:
    opener = ecies.Decryptor(SECRET, cache_size=2)
    blobs = [ecies.encrypt(PUBLIC, bytes([i])) for i in range(5)]
    assert [opener.decrypt(b) for b in blobs * 2] == [bytes([i]) for i in range(5)] * 2


@pytest.mark.parametrize("mangle", [
    lambda b: b[:112],
    lambda b: b"\x05" + b[1:],
    lambda b: b[:1] + (1).to_bytes(32, "big") * 2 + b[65:],
    lambda b: b[:-1] + bytes([b[-1] ^ 1]),
])
def test_decryptor_errors_are_those_of_decrypt(mangle: Callable[[bytes], bytes]) -> None:
    blob = mangle(ecies.encrypt(PUBLIC, b"payload"))
    with pytest.raises(DecryptionFailed) as plain:
        ecies.decrypt(SECRET, blob)
    with pytest.raises(DecryptionFailed) as cached:
        ecies.Decryptor(SECRET).decrypt(blob)
    assert str(cached.value) == str(plain.value)


@pytest.mark.parametrize("secret", [0, N, -1])
def test_decryptor_refuses_a_bad_secret(secret: int) -> None:
    with pytest.raises(InvalidScalar):
        ecies.Decryptor(secret)


def test_reprs_show_no_key_material() -> None:
    encryptor = ecies.Encryptor(PUBLIC, ephemeral=0xABCDEF0123)
    opener = ecies.Decryptor(SECRET)
    opener.decrypt(encryptor.encrypt(b"x"))
    texts = repr(encryptor) + repr(opener)
    for secret_form in (format(SECRET, "x"), format(0xABCDEF0123, "x"), SECRET.to_bytes(32, "big").hex()):
        assert secret_form not in texts
    assert "<keys>" in repr(encryptor) and "<secret>" in repr(opener)


@given(key_and_group(), st.integers(1, 6))
def test_a_batch_of_shadows_under_one_encryptor_recovers_each_document_key(
        setup: tuple[LocalKey, list[int]], keys: int) -> None:
    key, members = setup
    requester = random_scalar()
    threshold = len(members) - 1
    xs = [key.id_numbers[m] for m in members]
    node_shadows = [shadows.node_shadow(key.shares[m], xs[i], xs[:i] + xs[i + 1:]) for i, m in enumerate(members)]
    encryptors = [ecies.Encryptor(requester * G) for _ in members]  # one per member's answer
    documents = []
    for _ in range(keys):
        document_key, k = random_scalar() * G, random_scalar()
        common, encrypted = k * G, document_key + k * key.public
        access_key = random_scalar()
        parts = [shadows.shadow_decryption(ns, access_key, common, e) for ns, e in zip(node_shadows, encryptors,
                                                                                       strict=True)]
        decrypted = shadows.combine_shadow_points([p for p, _ in parts], access_key, encrypted, threshold)
        documents.append((document_key, decrypted, shadows.requester_common_point(common, threshold),
                          [blob for _, blob in parts]))
    opener = ecies.Decryptor(requester)
    for document_key, decrypted, common, blobs in documents:
        assert shadows.recover_document_key(decrypted, common, blobs, requester) == document_key
        assert shadows.recover_document_key(decrypted, common, blobs, opener) == document_key


def test_a_shadow_under_one_encryptor_is_the_single_format_with_its_ephemeral() -> None:
    key = run_local_dkg(1, 3)
    xs = [key.id_numbers[0], key.id_numbers[1]]
    ns = shadows.node_shadow(key.shares[0], xs[0], xs[1:])
    encryptor = ecies.Encryptor(PUBLIC, rng=random.Random(3).randbytes)
    _, blob = shadows.shadow_decryption(ns, 5, G, encryptor)
    assert blob[1:65] == encryptor.ephemeral_point and len(blob) == ecies.OVERHEAD + 32
    assert len(ecies.decrypt(SECRET, blob)) == 32
