"""Threshold decryption: the Parity (t, n) grid in plain and shadow mode, any t+1 of n recover M, t do not."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocean_secret_store.crypto import ecies
from ocean_secret_store.crypto.curve import G, N, Point, random_scalar
from ocean_secret_store.crypto.dkg import LocalKey, run_local_dkg
from ocean_secret_store.crypto.shadows import (
    access_key_inverses,
    combine_shadow_points,
    node_shadow,
    recover_document_key,
    requester_common_point,
    shadow_decryption,
    shadow_point,
)
from ocean_secret_store.exceptions import DecryptionFailed, InvalidScalar, InvalidShare, InvalidThreshold
from tests.crypto.reference import PARITY_GRID, interpolate_at_zero
from tests.crypto.strategies import key_and_group

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def encrypt_secret(document_key: Point, server_public: Point) -> tuple[Point, Point, int]:
    """protocol.md §2.6 (document.py has the real one): ``C = k·G``, ``E = M + k·Y``; also returns k."""
    k = random_scalar()
    return k * G, document_key + k * server_public, k


def node_shadows(key: LocalKey, members: Sequence[int]) -> list[int]:
    xs = [key.id_numbers[m] for m in members]
    return [node_shadow(key.shares[m], xs[i], xs[:i] + xs[i + 1 :]) for i, m in enumerate(members)]


def plain_decrypt(
    key: LocalKey, members: Sequence[int], threshold: int, common: Point, encrypted: Point
) -> Point:
    access_key = random_scalar()
    points = [shadow_point(ns, access_key, common) for ns in node_shadows(key, members)]
    return combine_shadow_points(points, access_key, encrypted, threshold)


def shadow_decrypt(
    key: LocalKey,
    members: Sequence[int],
    threshold: int,
    common: Point,
    encrypted: Point,
    requester_secret: int,
) -> tuple[Point, Point, list[bytes]]:
    """What the master returns for a shadow retrieval: ``(decrypted_secret, C', decrypt_shadows)``."""
    access_key = random_scalar()
    requester = requester_secret * G
    results = [shadow_decryption(ns, access_key, common, requester) for ns in node_shadows(key, members)]
    decrypted = combine_shadow_points([p for p, _ in results], access_key, encrypted, threshold)
    return decrypted, requester_common_point(common, threshold), [blob for _, blob in results]


@pytest.mark.parametrize(("t", "n"), PARITY_GRID)
def test_parity_grid_encrypt_decrypt(t: int, n: int) -> None:
    key = run_local_dkg(t, n)
    members = list(range(t + 1))  # the first t+1 shares, as Parity's math tests use
    y = interpolate_at_zero([(key.id_numbers[m], key.shares[m]) for m in members])
    assert y * G == key.public

    document_key = random_scalar() * G
    common, encrypted, _k = encrypt_secret(document_key, key.public)
    assert encrypted - y * common == document_key  # the joint secret decrypts directly
    # Σ ns_i = (−1)^t·y: the sign convention every rule below rests on.
    assert sum(node_shadows(key, members)) % N == (y if t % 2 == 0 else N - y)

    assert plain_decrypt(key, members, t, common, encrypted) == document_key

    requester_secret = random_scalar()
    decrypted, common_r, blobs = shadow_decrypt(key, members, t, common, encrypted, requester_secret)
    assert decrypted != document_key  # blinded by the δ_i
    assert common_r == (common if t % 2 == 0 else -common)
    assert [len(b) for b in blobs] == [32 + ecies.OVERHEAD] * (t + 1)
    assert recover_document_key(decrypted, common_r, blobs, requester_secret) == document_key


@given(key_and_group())
def test_any_t_plus_1_shares_recover_and_t_do_not(case: tuple[LocalKey, list[int]]) -> None:
    key, members = case
    t = key.threshold
    document_key = random_scalar() * G
    common, encrypted, _ = encrypt_secret(document_key, key.public)
    requester_secret = random_scalar()

    decrypted, common_r, blobs = shadow_decrypt(key, members, t, common, encrypted, requester_secret)
    assert recover_document_key(decrypted, common_r, blobs, requester_secret) == document_key
    assert plain_decrypt(key, members, t, common, encrypted) == document_key

    if t == 0:
        return
    fewer = members[:t]
    # t holders combining as a group of t (the only consistent way they can) get a different
    # point, in both modes, and neither sign fixes it.
    assert plain_decrypt(key, fewer, t - 1, common, encrypted) != document_key
    decrypted, common_r, blobs = shadow_decrypt(key, fewer, t - 1, common, encrypted, requester_secret)
    assert recover_document_key(decrypted, common_r, blobs, requester_secret) != document_key
    guess = sum(node_shadows(key, fewer)) % N
    for candidate in (encrypted - guess * common, encrypted + guess * common):
        assert candidate != document_key


# -- Parity's vector and edge cases ---------------------------------------------------------------


def test_parity_shadow_decrypt_vector() -> None:
    """protocol.md §10.1 (Parity's secretstore_shadowDecrypt mocked test) from tests/vectors/parity_rpc.json."""
    vector = json.loads((VECTORS / "parity_rpc.json").read_text(encoding="utf-8"))["shadow_decrypt"]
    document_key = recover_document_key(
        Point.from_bytes(bytes.fromhex(vector["decrypted_secret"])),
        Point.from_bytes(bytes.fromhex(vector["common_point"])),
        [bytes.fromhex(blob) for blob in vector["decrypt_shadows"]],
        int(vector["account_secret"], 16),
    )
    assert document_key.to_bytes().hex() == vector["document_key"]


def test_epsilons_summing_to_zero_leave_d_unchanged() -> None:
    requester_secret = random_scalar()
    requester = requester_secret * G
    e = random_scalar()
    blobs = [ecies.encrypt(requester, value.to_bytes(32, "big")) for value in (e, N - e)]
    decrypted, common = random_scalar() * G, random_scalar() * G
    assert recover_document_key(decrypted, common, blobs, requester_secret) == decrypted


def test_epsilons_sum_modulo_n() -> None:
    requester_secret = random_scalar()
    requester = requester_secret * G
    e1, e2 = N - 1, N - 2  # the integer sum exceeds n; only Σ mod n = n − 3 is meaningful
    blobs = [ecies.encrypt(requester, e.to_bytes(32, "big")) for e in (e1, e2)]
    decrypted, common = random_scalar() * G, random_scalar() * G
    assert recover_document_key(decrypted, common, blobs, requester_secret) == decrypted + (N - 3) * common


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_a_shadow_must_hold_exactly_32_bytes(size: int) -> None:
    requester_secret = random_scalar()
    blob = ecies.encrypt(requester_secret * G, b"\x01" * size)
    with pytest.raises(DecryptionFailed):
        recover_document_key(G, G, [blob], requester_secret)


def test_foreign_or_tampered_shadows_fail() -> None:
    key = run_local_dkg(1, 3)
    document_key = random_scalar() * G
    common, encrypted, _ = encrypt_secret(document_key, key.public)
    requester_secret = random_scalar()
    decrypted, common_r, blobs = shadow_decrypt(key, [0, 2], 1, common, encrypted, requester_secret)
    with pytest.raises(DecryptionFailed):
        recover_document_key(decrypted, common_r, blobs, random_scalar())
    tampered = bytearray(blobs[1])
    tampered[90] ^= 1
    with pytest.raises(DecryptionFailed):
        recover_document_key(decrypted, common_r, [blobs[0], bytes(tampered)], requester_secret)
    with pytest.raises(DecryptionFailed):  # a shadow encrypted with the wrong auth data
        recover_document_key(
            decrypted,
            common_r,
            [blobs[0], ecies.encrypt(requester_secret * G, bytes(32), b"")],
            requester_secret,
        )
    with pytest.raises(InvalidThreshold):
        recover_document_key(decrypted, common_r, [], requester_secret)


def test_combination_needs_exactly_t_plus_1_points() -> None:
    points = [random_scalar() * G for _ in range(3)]
    encrypted = random_scalar() * G
    combine_shadow_points(points, 5, encrypted, 2)
    for threshold in (1, 3, -1):
        with pytest.raises(InvalidThreshold):
            combine_shadow_points(points, 5, encrypted, threshold)
    for access_key in (0, N):
        with pytest.raises(InvalidScalar):
            combine_shadow_points(points, access_key, encrypted, 2)


def test_node_shadow_refuses_duplicate_id_numbers() -> None:
    with pytest.raises(InvalidShare):
        node_shadow(random_scalar(), 7, [8, 7])


def test_shadow_point_is_a_times_ns_times_c() -> None:
    ns, a, c = random_scalar(), random_scalar(), random_scalar()
    assert shadow_point(ns, a, c * G) == (ns * a * c % N) * G



@given(st.lists(st.integers(1, N - 1), max_size=20))
def test_access_key_inverses_are_each_keys_inverse(access_keys: list[int]) -> None:
    assert access_key_inverses(access_keys) == [pow(a, -1, N) for a in access_keys]


@pytest.mark.parametrize("bad", [0, N, -1])
def test_access_key_inverses_refuse_a_bad_key(bad: int) -> None:
    with pytest.raises(InvalidScalar):
        access_key_inverses([5, bad])


def test_combination_with_a_known_inverse_is_the_same_and_checked() -> None:
    key = run_local_dkg(2, 5)
    members = [0, 2, 4]
    document_key = random_scalar() * G
    common, encrypted, _k = encrypt_secret(document_key, key.public)
    access_key = random_scalar()
    points = [shadow_point(ns, access_key, common) for ns in node_shadows(key, members)]
    inverse = access_key_inverses([access_key])[0]
    assert combine_shadow_points(points, access_key, encrypted, 2, inverse) == document_key
    assert combine_shadow_points(points, access_key, encrypted, 2) == document_key
    with pytest.raises(InvalidScalar, match="not its inverse"):
        combine_shadow_points(points, access_key, encrypted, 2, inverse + 1)
