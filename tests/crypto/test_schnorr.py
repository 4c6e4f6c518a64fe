"""Parity-flavour Schnorr: the §10.6 vector, local sign/verify, threshold signing over the Parity grid."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given

from ocean_secret_store.crypto import schnorr
from ocean_secret_store.crypto.curve import G, N, Point, random_scalar
from ocean_secret_store.crypto.dkg import LocalKey, deal, joint_public, run_local_dkg
from ocean_secret_store.crypto.hashes import keccak256
from ocean_secret_store.exceptions import CryptoError, InvalidShare, InvalidSignature, InvalidThreshold
from tests.crypto.reference import PARITY_SCHNORR_GRID, interpolate_at_zero
from tests.crypto.strategies import key_and_group

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
VECTOR = json.loads((VECTORS / "derived.json").read_text("utf-8"))["schnorr"]


def digest() -> bytes:
    return random_scalar().to_bytes(32, "big")


def test_derived_vector() -> None:
    """protocol.md §10.6 (tests/vectors/derived.json): derived from the formulas, not from Parity's tests."""
    secret, nonce = int(VECTOR["secret"], 16), int(VECTOR["nonce"], 16)
    message_hash = bytes.fromhex(VECTOR["message_hash"])
    public = Point.from_bytes(bytes.fromhex(VECTOR["public"]))
    assert secret * G == public
    c, s = schnorr.sign(secret, message_hash, nonce=nonce)
    assert schnorr.signature_bytes(c, s).hex() == VECTOR["c"] + VECTOR["s"]
    assert c == schnorr.challenge(message_hash, nonce * G)
    schnorr.verify(public, (c, s), message_hash)
    assert schnorr.parse_signature(bytes.fromhex(VECTOR["c"] + VECTOR["s"])) == (c, s)


def test_challenge_is_keccak_of_hash_and_nonce_x() -> None:
    h, r = digest(), random_scalar() * G
    assert schnorr.challenge(h, r) == int.from_bytes(keccak256(h + r.to_bytes()[:32]), "big") % N
    assert schnorr.challenge(h, r) == schnorr.challenge(h, -r)  # only R.x is hashed
    for bad in (b"", bytes(31), bytes(33)):
        with pytest.raises(CryptoError):
            schnorr.challenge(bad, r)


def test_local_sign_and_verify() -> None:
    secret, h = random_scalar(), digest()
    public = secret * G
    c, s = schnorr.sign(secret, h)
    schnorr.verify(public, (c, s), h)
    assert schnorr.sign(secret, h) != (c, s)  # a fresh nonce each time
    with pytest.raises(InvalidSignature):
        schnorr.verify(public, (c, s), digest())
    with pytest.raises(InvalidSignature):
        schnorr.verify(random_scalar() * G, (c, s), h)
    with pytest.raises(InvalidSignature):
        schnorr.verify(public, (c, (s + 1) % N), h)
    with pytest.raises(InvalidSignature):
        schnorr.verify(public, (c % (N - 1) + 1, s), h)
    for out_of_range in ((0, s), (N, s), (c, N), (c, -1)):
        with pytest.raises(InvalidSignature):
            schnorr.verify(public, out_of_range, h)
    with pytest.raises(CryptoError):
        schnorr.verify(public, (c, s), bytes(31))


def test_signature_bytes_round_trip_and_parsing() -> None:
    c, s = schnorr.sign(random_scalar(), digest())
    raw = schnorr.signature_bytes(c, s)
    assert len(raw) == 64
    assert schnorr.parse_signature(raw) == (c, s)
    for bad in (raw[:63], raw + b"\x00", bytes(32) + raw[32:], N.to_bytes(32, "big") + raw[32:],
                raw[:32] + N.to_bytes(32, "big")):
        with pytest.raises(InvalidSignature):
            schnorr.parse_signature(bad)
    with pytest.raises(InvalidSignature):
        schnorr.signature_bytes(N, s)


# -- threshold signing ------------------------------------------------------------------------


def threshold_sign(
    key: LocalKey, members: Sequence[int], threshold: int, message_hash: bytes
) -> tuple[int, int, int]:
    """Parity's flow (§2.8): nonce DKG among the group, challenge, partials, sum. Returns (c, s, k)."""
    # The nonce generation session keeps each member's free coefficient k_i; R = Σ k_i·G.
    h = random_scalar() * G
    nonce_dealings = [deal(threshold, h) for _ in members]
    nonce_public = joint_public(d.public_share for d in nonce_dealings if d.public_share is not None)
    c = schnorr.challenge(message_hash, nonce_public)
    xs = [key.id_numbers[m] for m in members]
    partials = [
        schnorr.partial_signature(
            threshold, dealing.secret_coeff, key.shares[m], xs[i], xs[:i] + xs[i + 1 :], c
        )
        for i, (m, dealing) in enumerate(zip(members, nonce_dealings, strict=True))
    ]
    k = sum(d.secret_coeff for d in nonce_dealings) % N
    return c, schnorr.combine_partial_signatures(partials), k


@pytest.mark.parametrize(("t", "n"), PARITY_SCHNORR_GRID)
def test_parity_grid_threshold_signature(t: int, n: int) -> None:
    key = run_local_dkg(t, n)
    members = list(range(t + 1))
    y = interpolate_at_zero([(key.id_numbers[m], key.shares[m]) for m in members])
    assert y * G == key.public
    h = digest()
    c, s, k = threshold_sign(key, members, t, h)
    assert s == (k - c * y) % N  # the same as signing locally with the joint secret and nonce
    assert schnorr.sign(y, h, nonce=k) == (c, s)
    schnorr.verify(key.public, (c, s), h)


@given(key_and_group())
def test_any_t_plus_1_partials_combine_and_t_do_not(case: tuple[LocalKey, list[int]]) -> None:
    key, members = case
    t, h = key.threshold, digest()
    c, s, _ = threshold_sign(key, members, t, h)
    schnorr.verify(key.public, (c, s), h)
    if t == 0:
        return
    c, s, _ = threshold_sign(key, members[:t], t - 1, h)
    with pytest.raises(InvalidSignature):
        schnorr.verify(key.public, (c, s), h)


def test_partial_signature_needs_a_group_of_t_plus_1() -> None:
    xs = [random_scalar() for _ in range(3)]
    schnorr.partial_signature(2, 1, 1, xs[0], xs[1:], 1)
    for threshold in (1, 3):
        with pytest.raises(InvalidThreshold):
            schnorr.partial_signature(threshold, 1, 1, xs[0], xs[1:], 1)
    with pytest.raises(InvalidShare):
        schnorr.partial_signature(2, 1, 1, xs[0], [xs[1], xs[1]], 1)
    with pytest.raises(InvalidThreshold):
        schnorr.combine_partial_signatures([])


def test_partial_signature_sign_rule() -> None:
    # t even: σ = k − c·λ'·s; t odd: σ = k + c·λ'·s (protocol.md §2.8).
    k, share, c = random_scalar(), random_scalar(), random_scalar()
    for t in (0, 1, 2, 3):
        xs = [random_scalar() for _ in range(t + 1)]
        lam = 1
        for x_j in xs[1:]:
            lam = lam * x_j * pow(xs[0] - x_j, -1, N) % N
        expected = (k - c * lam * share) % N if t % 2 == 0 else (k + c * lam * share) % N
        assert schnorr.partial_signature(t, k, share, xs[0], xs[1:], c) == expected
