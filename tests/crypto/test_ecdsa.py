"""Threshold ECDSA (protocol.md §2.9): t = 0 against libsecp256k1, eth-keys and eth-account; the
threshold protocol over Parity's grid against ecrecover and plain ECDSA; what the master's check
and the dealing checks catch; and why partial signatures carry a mask."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey, PublicKey
from eth_account import Account
from eth_keys import KeyAPI
from eth_keys.backends import NativeECCBackend
from hypothesis import given, settings
from hypothesis import strategies as st

from ocean_secret_store.crypto import ecdsa
from ocean_secret_store.crypto.curve import G, N, Point, random_scalar
from ocean_secret_store.crypto.dkg import Dealing, LocalKey, dealing_for, run_local_dkg
from ocean_secret_store.crypto.hashes import address_of, checksum_address
from ocean_secret_store.crypto.resharing import CheatingDealer
from ocean_secret_store.crypto.sharing import evaluate, pedersen_commitments, random_polynomial, shadow_coefficients
from ocean_secret_store.exceptions import (
    CryptoError,
    InvalidPoint,
    InvalidScalar,
    InvalidShare,
    InvalidSignature,
    InvalidThreshold,
)
from tests.crypto.reference import interpolate_at_zero

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "ecdsa_rfc6979.json").read_text("utf-8"))
NATIVE = KeyAPI(NativeECCBackend)  # eth-keys' pure-Python RFC 6979 signer: shares no code with libsecp256k1

#: The (t, N) cases of Parity's own ECDSA math test (math.rs, full_ecdsa_signature_math_session).
PARITY_ECDSA_GRID = ((2, 5), (2, 6), (3, 11), (4, 11))


def seeded(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def digest() -> bytes:
    return random_scalar().to_bytes(32, "big")


def ecrecover_address(signature: bytes, message_hash: bytes) -> str:
    """What Ethereum's ecrecover says (through eth-account), with v + 27 as it wants."""
    assert signature[64] in (0, 1)
    address: str = Account._recover_hash(message_hash, signature=signature[:64] + bytes([signature[64] + 27]))
    return address


def joint_secret(key: LocalKey) -> int:
    members = list(key.shares)[: key.threshold + 1]
    return interpolate_at_zero([(key.id_numbers[m], key.shares[m]) for m in members])


# -- t = 0: a local, deterministic signature ------------------------------------------------------


def test_the_vector_file_states_its_provenance() -> None:
    assert "RFC 6979" in VECTORS["provenance"]
    assert len(VECTORS["vectors"]) == 5


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["message"][:16])
def test_rfc6979_known_answers(vector: dict[str, str]) -> None:
    secret, k = int(vector["secret"], 16), int(vector["k"], 16)
    message_hash = hashlib.sha256(vector["message"].encode()).digest()
    signature = ecdsa.sign_locally(secret, message_hash, secret * G)
    assert signature[:64].hex() == vector["r"] + vector["s"]
    # v from the published nonce: R.y's parity, flipped if s was replaced by n - s.
    nonce_public = k * G
    raw_s = pow(k, -1, N) * (int.from_bytes(message_hash, "big") + int(vector["r"], 16) * secret) % N
    assert nonce_public.x % N == int(vector["r"], 16)
    assert signature[64] == (nonce_public.y & 1) ^ (raw_s != int(vector["s"], 16))


@pytest.mark.parametrize("seed", range(6))
def test_local_signature_agrees_with_libsecp256k1_eth_keys_and_eth_account(seed: int) -> None:
    rng = random.Random(seed)
    secret = rng.randrange(1, N)
    message_hash = rng.randbytes(32)
    public = secret * G
    signature = ecdsa.sign_locally(secret, message_hash, public)
    raw = secret.to_bytes(32, "big")
    assert signature == PrivateKey(raw).sign_recoverable(message_hash, hasher=None)
    assert signature == NATIVE.PrivateKey(raw).sign_msg_hash(message_hash).to_bytes()
    eth = Account.unsafe_sign_hash(message_hash, raw)
    assert signature[:64] + bytes([signature[64] + 27]) == bytes(eth.signature)
    assert ecrecover_address(signature, message_hash) == checksum_address(address_of(public))
    assert int.from_bytes(signature[32:64], "big") <= N // 2


def test_sign_locally_checks_its_share_and_inputs() -> None:
    secret, h = random_scalar(), digest()
    with pytest.raises(InvalidSignature, match="does not verify against the server key"):
        ecdsa.sign_locally(secret, h, random_scalar() * G)
    for bad in (0, N, -1):
        with pytest.raises(InvalidScalar):
            ecdsa.sign_locally(bad, h, secret * G)
    for bad_hash in (b"", bytes(31), bytes(33)):
        with pytest.raises(CryptoError):
            ecdsa.sign_locally(secret, bad_hash, secret * G)


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("t", "n", "ok"),
    [(0, 1, True), (1, 3, True), (2, 5, True), (3, 7, True), (4, 11, True),
     (1, 2, False), (2, 4, False), (3, 6, False), (1, 1, False), (-1, 3, False)],
)
def test_a_key_signs_ecdsa_only_if_2t_is_below_n(t: int, n: int, ok: bool) -> None:
    if ok:
        ecdsa.check_key_threshold(t, n)
    else:
        with pytest.raises(InvalidThreshold):
            ecdsa.check_key_threshold(t, n)


def test_a_signing_group_has_exactly_2t_plus_1_members() -> None:
    ecdsa.check_signing_group(1, 3)
    ecdsa.check_signing_group(3, 7)
    for t, size in ((1, 2), (1, 4), (2, 4), (0, 1), (-1, 1)):
        with pytest.raises(InvalidThreshold):
            ecdsa.check_signing_group(t, size)


def test_message_hash_is_32_bytes_and_read_as_libsecp256k1_reads_it() -> None:
    ecdsa.check_message_hash(bytes(32))
    for bad in (b"", bytes(31), bytes(33), bytes(64)):
        with pytest.raises(CryptoError):
            ecdsa.check_message_hash(bad)
        with pytest.raises(CryptoError):
            ecdsa.message_scalar(bad)
    assert ecdsa.message_scalar(bytes(32)) == 0
    assert ecdsa.message_scalar(N.to_bytes(32, "big")) == 0
    assert ecdsa.message_scalar((N + 5).to_bytes(32, "big")) == 5


# -- serialisation: low-S and the recovery id ----------------------------------------------------


def key_for(nonce_public: Point, s: int, message_hash: bytes) -> Point:
    """The public key for which ``(R.x mod n, s)`` is a valid signature of the hash: ``r⁻¹·(s·R − m·G)``."""
    r = nonce_public.x % N
    return pow(r, -1, N) * (s * nonce_public - int.from_bytes(message_hash, "big") % N * G)


def point_with_x_at_least_n() -> Point:
    x = N + 1  # x = N itself is a point, but its r would be 0
    while True:
        try:
            return Point.from_sec1(b"\x02" + x.to_bytes(32, "big"))
        except InvalidPoint:
            x += 1


@pytest.mark.parametrize("high_s", [False, True])
@pytest.mark.parametrize("large_x", [False, True])
def test_serialization_normalises_s_and_sets_v_as_recovery_needs(high_s: bool, large_x: bool) -> None:
    h = digest()
    nonce_public = point_with_x_at_least_n() if large_x else random_scalar() * G
    for odd in (0, 1):
        if nonce_public.y & 1 != odd:
            nonce_public = -nonce_public
        s = random_scalar() % (N // 2) + 1
        if high_s:
            s = N - s
        public = key_for(nonce_public, s, h)
        signature = ecdsa.serialize_signature(nonce_public, s)
        r, s_out, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
        assert int.from_bytes(r, "big") == nonce_public.x % N
        assert s_out == (N - s if high_s else s) <= N // 2
        assert v == (odd ^ high_s) | (2 if large_x else 0)
        assert Point(PublicKey.from_signature_and_message(signature, h, hasher=None)) == public
        ecdsa.verify_signature(public, signature, h)


def test_serialization_refuses_a_zero_or_out_of_range_s() -> None:
    nonce_public = random_scalar() * G
    for bad in (0, N, N + 1, -1):
        with pytest.raises(InvalidSignature):
            ecdsa.serialize_signature(nonce_public, bad)


def test_verify_signature_refuses_another_key_a_high_s_and_garbage() -> None:
    secret, h = random_scalar(), digest()
    signature = ecdsa.sign_locally(secret, h, secret * G)
    with pytest.raises(InvalidSignature):
        ecdsa.verify_signature(random_scalar() * G, signature, h)
    high_s = (N - int.from_bytes(signature[32:64], "big")).to_bytes(32, "big")
    high = signature[:32] + high_s + bytes([signature[64] ^ 1])
    assert Point(PublicKey.from_signature_and_message(high, h, hasher=None)) == secret * G  # valid, but high-S
    with pytest.raises(InvalidSignature, match="low-S"):
        ecdsa.verify_signature(secret * G, high, h)
    for bad in (signature[:64], signature + b"\x00", signature[:64] + b"\x1b", bytes(65)):
        with pytest.raises(InvalidSignature):
            ecdsa.verify_signature(secret * G, bad, h)


# -- the threshold protocol, step by step ---------------------------------------------------------


@dataclass
class Run:
    """One in-process signing attempt, every intermediate kept for the checks (and the tampering)."""

    key: LocalKey
    members: list[int]
    message_hash: bytes
    H: Point = field(default_factory=lambda: random_scalar() * G)
    dealings: dict[int, ecdsa.SigningDealing] = field(default_factory=dict)
    shares: dict[int, ecdsa.SigningShares] = field(default_factory=dict)
    coeff_shares: dict[int, int] = field(default_factory=dict)
    inversed_nonce_coeff: int = 0
    partials: dict[int, int] = field(default_factory=dict)

    @property
    def t(self) -> int:
        return self.key.threshold

    @property
    def group(self) -> dict[int, int]:
        return {m: self.key.id_numbers[m] for m in self.members}

    @property
    def nonce_public(self) -> Point:
        return self.shares[self.members[0]].nonce_public

    @property
    def nonce(self) -> int:
        """The joint nonce ``k = Σ a_i0`` (no node forms it)."""
        return sum(d.nonce.secret_coeff for d in self.dealings.values()) % N

    def deal(self) -> None:
        self.dealings = {m: ecdsa.deal_signing(self.t, self.H) for m in self.members}

    def receive(self, j: int) -> ecdsa.SigningShares:
        x_j = self.key.id_numbers[j]
        received = {m: ecdsa.subshares_for(d, x_j) for m, d in self.dealings.items()}
        commitments = {m: d.commitments for m, d in self.dealings.items()}
        return ecdsa.receive_signing_dealings(x_j, self.t, self.H, received, commitments)

    def sign_until_partials(self) -> None:
        self.deal()
        self.shares = {j: self.receive(j) for j in self.members}
        self.coeff_shares = {j: ecdsa.inversed_nonce_coeff_share(self.shares[j]) for j in self.members}
        self.inversed_nonce_coeff = ecdsa.inversed_nonce_coeff(self.t, self.group, self.coeff_shares)
        self.partials = {
            j: ecdsa.partial_signature(self.shares[j], self.key.shares[j], self.inversed_nonce_coeff, self.message_hash)
            for j in self.members
        }

    def combine(self, partials: dict[int, int] | None = None) -> bytes:
        return ecdsa.combine_signature(
            self.t, self.group, self.partials if partials is None else partials,
            self.nonce_public, self.message_hash, self.key.public,
        )


@st.composite
def ecdsa_key_and_group(draw: st.DrawFn) -> tuple[LocalKey, list[int]]:
    """A key with 1 <= t <= 3 and 2t+1 <= N <= 7, and a random group of 2t+1 of its holders."""
    t = draw(st.integers(1, 3))
    n = draw(st.integers(2 * t + 1, 7))
    members = draw(st.permutations(range(n)))[: 2 * t + 1]
    return run_local_dkg(t, n, verify=False), members


def plain_ecdsa(secret: int, nonce: int, message_hash: bytes) -> bytes:
    """Textbook ECDSA with a given nonce, serialised as Parity does (an independent line of sums)."""
    nonce_public = nonce * G
    r = nonce_public.x % N
    s = pow(nonce, -1, N) * (int.from_bytes(message_hash, "big") + r * secret) % N
    v = nonce_public.y & 1
    if s > N // 2:
        s, v = N - s, v ^ 1
    return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v])


@settings(max_examples=10)
@given(ecdsa_key_and_group())
def test_threshold_signature_is_plain_ecdsa_with_the_joint_nonce(case: tuple[LocalKey, list[int]]) -> None:
    key, members = case
    run = Run(key, members, digest())
    run.sign_until_partials()
    signature = run.combine()
    assert len(signature) == ecdsa.SIGNATURE_LENGTH
    assert ecrecover_address(signature, run.message_hash) == checksum_address(address_of(key.public))
    assert int.from_bytes(signature[32:64], "big") <= N // 2
    assert run.nonce_public == run.nonce * G
    assert signature == plain_ecdsa(joint_secret(key), run.nonce, run.message_hash)
    # Every member formed the same R.
    assert {s.nonce_public for s in run.shares.values()} == {run.nonce_public}

    # Only 2t partials: the master refuses, and their interpolation is not the signature.
    short = dict(list(run.partials.items())[: 2 * key.threshold])
    with pytest.raises(InvalidShare, match="1 missing"):
        run.combine(short)
    xs = [key.id_numbers[m] for m in short]
    with pytest.raises(InvalidThreshold):
        ecdsa.combine_partial_signatures(key.threshold, dict(zip(short, xs, strict=True)), short)
    s = sum(lam * p for lam, p in zip(shadow_coefficients(xs), short.values(), strict=True)) % N
    with pytest.raises(InvalidSignature):
        ecdsa.verify_signature(key.public, ecdsa.serialize_signature(run.nonce_public, s), run.message_hash)

    # One wrong partial: the master's check catches it.
    liar = members[-1]
    with pytest.raises(InvalidSignature, match="does not verify against the server key"):
        run.combine({**run.partials, liar: (run.partials[liar] + 1) % N})


@settings(max_examples=6)
@given(ecdsa_key_and_group())
def test_two_signatures_of_one_hash_use_different_nonces(case: tuple[LocalKey, list[int]]) -> None:
    key, members = case
    h = digest()
    first, second = ecdsa.run_local_signing(key, members, h), ecdsa.run_local_signing(key, members, h)
    assert first[:32] != second[:32]
    for signature in (first, second):
        assert ecrecover_address(signature, h) == checksum_address(address_of(key.public))


@pytest.mark.parametrize(("t", "n"), PARITY_ECDSA_GRID)
def test_parity_ecdsa_grid(t: int, n: int) -> None:
    key = run_local_dkg(t, n)
    members = random.sample(range(n), 2 * t + 1)
    h = digest()
    signature = ecdsa.run_local_signing(key, members, h)
    assert ecrecover_address(signature, h) == checksum_address(address_of(key.public))
    assert NATIVE.Signature(signature).recover_public_key_from_msg_hash(h).to_bytes() == key.public.to_bytes()


def test_run_local_signing_with_t_0_signs_deterministically() -> None:
    key = run_local_dkg(0, 3)
    h = digest()
    signature = ecdsa.run_local_signing(key, [1], h)
    assert signature == PrivateKey(key.shares[1].to_bytes(32, "big")).sign_recoverable(h, hasher=None)
    assert ecdsa.run_local_signing(key, [2], h) == signature  # every share of a t = 0 key is the key
    with pytest.raises(InvalidThreshold):
        ecdsa.run_local_signing(key, [0, 1], h)


def test_run_local_signing_refuses_a_key_or_group_that_cannot_sign() -> None:
    h = digest()
    with pytest.raises(InvalidThreshold):
        ecdsa.run_local_signing(run_local_dkg(1, 2, verify=False), [0, 1], h)
    key = run_local_dkg(1, 4, verify=False)
    for members in ([0, 1], [0, 1, 2, 3]):
        with pytest.raises(InvalidThreshold):
            ecdsa.run_local_signing(key, members, h)
    ecdsa.run_local_signing(key, [3, 0, 2], h, seeded(1), verify=False)


# -- what the checks catch ----------------------------------------------------------------------

SHARINGS = ("nonce", "inversion", "zero", "mask")


@settings(max_examples=12)
@given(ecdsa_key_and_group(), st.sampled_from(SHARINGS), st.integers(0, 1), st.data())
def test_a_cheating_dealer_is_named_by_the_member_it_cheats(
    case: tuple[LocalKey, list[int]], sharing: str, which: int, data: st.DataObject
) -> None:
    key, members = case
    run = Run(key, members, digest())
    run.deal()
    dealer, victim = data.draw(st.sampled_from(members)), data.draw(st.sampled_from(members))
    x_v = key.id_numbers[victim]
    received = {m: ecdsa.subshares_for(d, x_v) for m, d in run.dealings.items()}
    commitments = {m: d.commitments for m, d in run.dealings.items()}
    honest = received[dealer]
    pair = list(getattr(honest, sharing))
    pair[which] = (pair[which] + 1) % N
    fields = {name: getattr(honest, name) for name in SHARINGS} | {sharing: tuple(pair)}
    received[dealer] = ecdsa.SigningSubshares(**fields)
    with pytest.raises(CheatingDealer, match=sharing) as caught:
        ecdsa.receive_signing_dealings(x_v, run.t, run.H, received, commitments)
    assert caught.value.dealers == (dealer,)
    # Every other member is unaffected.
    for j in members:
        if j != victim:
            run.receive(j)


def zero_dealing_with_constant(threshold: int, H: Point, constant: int) -> Dealing:
    """A dealer that shares ``constant`` instead of zero and commits honestly to everything else."""
    f = random_polynomial(threshold, constant=constant)
    g = random_polynomial(threshold, constant=0)
    return Dealing(f, g, pedersen_commitments(f[1:], g[1:], H), None)


@pytest.mark.parametrize("sharing", ["zero", "mask"])
def test_a_zero_sharing_of_a_non_zero_constant_fails_at_every_member(sharing: str) -> None:
    key = run_local_dkg(2, 6, verify=False)
    run = Run(key, [5, 0, 3, 1, 2], digest())
    run.deal()
    cheater = 3
    bad = zero_dealing_with_constant(2 * run.t, run.H, random_scalar())
    honest = run.dealings[cheater]
    fields: dict[str, Any] = {name: getattr(honest, name) for name in SHARINGS} | {sharing: bad}
    run.dealings[cheater] = ecdsa.SigningDealing(**fields)
    for j in run.members:
        with pytest.raises(CheatingDealer, match=sharing) as caught:
            run.receive(j)
        assert caught.value.dealers == (cheater,)


def test_zero_dealing_checks() -> None:
    H = random_scalar() * G
    dealing = ecdsa.deal_zero(4, H)
    assert dealing.is_zero and dealing.threshold == 4 and dealing.f[0] == dealing.g[0] == 0
    assert len(dealing.commitments) == 4
    x = random_scalar()
    secret1, secret2 = dealing_for(dealing, x)
    ecdsa.verify_zero_dealing(x, secret1, secret2, dealing.commitments, H, 4)
    for args in ((secret1 + 1, secret2), (secret1, secret2 + 1)):
        with pytest.raises(InvalidShare):
            ecdsa.verify_zero_dealing(x, *args, dealing.commitments, H, 4)
    with pytest.raises(InvalidShare):
        ecdsa.verify_zero_dealing(x, secret1, secret2, dealing.commitments[:3], H, 4)
    with pytest.raises(InvalidShare):
        ecdsa.verify_zero_dealing(x, secret1, secret2, dealing.commitments, random_scalar() * G, 4)
    with pytest.raises(InvalidScalar):
        ecdsa.verify_zero_dealing(0, secret1, secret2, dealing.commitments, H, 4)
    # Five zero-sharing points of a degree-4 polynomial interpolate to zero.
    xs = [random_scalar() for _ in range(5)]
    assert interpolate_at_zero([(x, evaluate(dealing.f, x)) for x in xs]) == 0
    for degree in (0, -1):
        with pytest.raises(InvalidThreshold):
            ecdsa.deal_zero(degree, H)
        with pytest.raises(InvalidThreshold):
            ecdsa.verify_zero_dealing(x, 0, 0, (), H, degree)


@pytest.mark.parametrize("what", ["nonce public share", "coefficient share", "inversed coefficient"])
def test_what_verification_cannot_see_still_fails_at_the_master(what: str) -> None:
    key = run_local_dkg(1, 3, verify=False)
    run = Run(key, [2, 0, 1], digest())
    run.deal()
    if what == "nonce public share":  # a dealer broadcasts an R share unrelated to its nonce dealing
        d = run.dealings[0]
        bad = ecdsa.SigningCommitments(d.nonce.commitments, d.inversion.commitments, d.zero.commitments,
                                       d.mask.commitments, random_scalar() * G)
        run.shares = {}
        for j in run.members:
            x_j = key.id_numbers[j]
            received = {m: ecdsa.subshares_for(dl, x_j) for m, dl in run.dealings.items()}
            commitments = {m: dl.commitments for m, dl in run.dealings.items()} | {0: bad}
            run.shares[j] = ecdsa.receive_signing_dealings(x_j, 1, run.H, received, commitments)
    else:
        run.shares = {j: run.receive(j) for j in run.members}
    coeff_shares = {j: ecdsa.inversed_nonce_coeff_share(run.shares[j]) for j in run.members}
    if what == "coefficient share":
        coeff_shares[1] = (coeff_shares[1] + 1) % N
    u_inv = ecdsa.inversed_nonce_coeff(1, run.group, coeff_shares)
    partials = {}
    for j in run.members:
        sent = (u_inv + 1) % N if what == "inversed coefficient" and j == 0 else u_inv
        partials[j] = ecdsa.partial_signature(run.shares[j], key.shares[j], sent, run.message_hash)
    with pytest.raises(InvalidSignature, match="does not verify against the server key"):
        run.combine(partials)


# -- argument checks -----------------------------------------------------------------------------


def test_steps_refuse_malformed_arguments() -> None:
    key = run_local_dkg(1, 4, verify=False)
    run = Run(key, [0, 1, 2], digest())
    run.sign_until_partials()
    with pytest.raises(InvalidThreshold):
        ecdsa.deal_signing(0, run.H)
    x0 = key.id_numbers[0]
    received = {m: ecdsa.subshares_for(d, x0) for m, d in run.dealings.items()}
    commitments = {m: d.commitments for m, d in run.dealings.items()}
    with pytest.raises(InvalidShare):  # subshares from another set of dealers
        ecdsa.receive_signing_dealings(x0, 1, run.H, {**received, 3: received[0]}, commitments)
    with pytest.raises(InvalidThreshold):  # a dealer missing
        ecdsa.receive_signing_dealings(x0, 1, run.H, {0: received[0], 1: received[1]},
                                       {0: commitments[0], 1: commitments[1]})
    c1 = commitments[1]
    short = ecdsa.SigningCommitments(c1.nonce, c1.inversion, c1.zero, c1.mask[:1], c1.nonce_public_share)
    with pytest.raises(CheatingDealer, match="mask"):  # commitments of another degree
        ecdsa.receive_signing_dealings(x0, 1, run.H, received, {**commitments, 1: short})
    with pytest.raises(InvalidScalar):
        ecdsa.subshares_for(run.dealings[0], 0)
    other_group = {0: key.id_numbers[0], 1: key.id_numbers[1], 3: key.id_numbers[3]}
    with pytest.raises(InvalidShare):
        ecdsa.inversed_nonce_coeff(1, other_group, run.coeff_shares)
    with pytest.raises(InvalidShare):
        ecdsa.combine_partial_signatures(1, other_group, run.partials)
    with pytest.raises(InvalidThreshold):
        ecdsa.inversed_nonce_coeff(2, run.group, run.coeff_shares)
    with pytest.raises(InvalidShare):  # u = 0
        ecdsa.inversed_nonce_coeff(1, run.group, dict.fromkeys(run.members, 0))
    shares = run.shares[0]
    for bad_share, bad_coeff in ((0, 1), (N, 1), (1, 0), (1, N)):
        with pytest.raises(InvalidScalar):
            ecdsa.partial_signature(shares, bad_share, bad_coeff, run.message_hash)
    with pytest.raises(CryptoError):
        ecdsa.partial_signature(shares, key.shares[0], run.inversed_nonce_coeff, bytes(31))
    with pytest.raises(CryptoError):
        ecdsa.combine_signature(1, run.group, run.partials, run.nonce_public, bytes(33), key.public)
    assert ecdsa.signature_r(run.nonce_public) == run.nonce_public.x % N


def test_reprs_show_no_secret() -> None:
    key = run_local_dkg(1, 3, verify=False)
    run = Run(key, [0, 1, 2], digest())
    run.sign_until_partials()
    dealing = run.dealings[0]
    subshares = ecdsa.subshares_for(dealing, key.id_numbers[1])
    shares = run.shares[0]
    secrets = {
        *dealing.nonce.f, *dealing.nonce.g, *dealing.inversion.f, *dealing.zero.f[1:], *dealing.mask.f[1:],
        *subshares.nonce, *subshares.inversion, *subshares.zero, *subshares.mask,
        shares.nonce_share, shares.inversion_share, shares.zero_share, shares.mask_share,
    }
    for obj in (dealing, subshares, shares, dealing.commitments):
        text = repr(obj) + str(obj)
        for value in secrets:
            assert str(value) not in text
            assert f"{value:064x}" not in text.lower()
    assert "nonce_public" in repr(shares)


# -- why the partial signatures carry a mask ------------------------------------------------------


def sqrt_mod_n(a: int) -> int | None:
    """A square root mod n (Tonelli-Shanks; n ≡ 1 mod 4), or None for a non-residue."""
    a %= N
    if a == 0:
        return 0
    if pow(a, (N - 1) // 2, N) != 1:
        return None
    q, e = N - 1, 0
    while q % 2 == 0:
        q, e = q // 2, e + 1
    z = next(c for c in range(2, 1000) if pow(c, (N - 1) // 2, N) == N - 1)
    m, c, t, root = e, pow(z, q, N), pow(a, q, N), pow(a, (q + 1) // 2, N)
    while t != 1:
        i, t2 = 0, t
        while t2 != 1:
            t2, i = t2 * t2 % N, i + 1
        b = pow(c, 1 << (m - i - 1), N)
        m, c, t, root = i, b * b % N, t * b * b % N, root * b % N
    return root


def quadratic_through(points: list[tuple[int, int]]) -> tuple[int, int, int]:
    """Coefficients ``(c0, c1, c2)`` mod n of the polynomial of degree <= 2 through three points."""
    c0 = c1 = c2 = 0
    for i, (x_i, y_i) in enumerate(points):
        a, b = (x for j, (x, _) in enumerate(points) if j != i)
        w = y_i * pow((x_i - a) * (x_i - b), -1, N) % N
        c2, c1, c0 = (c2 + w) % N, (c1 - w * (a + b)) % N, (c0 + w * a * b) % N
    return c0, c1, c2


def master_attack(run: Run, partials: dict[int, int]) -> int | None:
    """What a curious master of a t = 1 group can do with the three partials: interpolate, factor,
    and use its own share to pin ``m + r·s(x)`` down. Returns the server secret if that works."""
    c0, c1, c2 = quadratic_through([(run.key.id_numbers[j], p) for j, p in partials.items()])
    root = sqrt_mod_n(c1 * c1 - 4 * c2 * c0)
    if root is None or c2 == 0:
        return None
    master = run.members[0]
    x_m, s_m = run.key.id_numbers[master], run.key.shares[master]
    m = int.from_bytes(run.message_hash, "big") % N
    r = run.nonce_public.x % N
    for rho in ((-c1 + root) * pow(2 * c2, -1, N) % N, (-c1 - root) * pow(2 * c2, -1, N) % N):
        if rho == x_m:
            continue
        c = (m + r * s_m) * pow(x_m - rho, -1, N) % N  # m + r·s(x) = c·(x − rho)
        candidate = (-c * rho - m) * pow(r, -1, N) % N
        if candidate and candidate * G == run.key.public:
            return candidate
    return None


@pytest.mark.parametrize("seed", range(3))
def test_unmasked_partials_give_the_master_the_key_and_masked_ones_do_not(seed: int) -> None:
    key = run_local_dkg(1, 4, seeded(seed), verify=False)
    run = Run(key, [0, 2, 3], digest())
    run.sign_until_partials()
    parity_partials = {
        j: (p - run.shares[j].mask_share) % N for j, p in run.partials.items()
    }  # Parity's ς_i = u⁻¹·alpha_i·(m + r·s_i), without w_i
    # Both sign: the mask is a sharing of zero, so it does not change s ...
    assert run.combine(parity_partials) == run.combine()
    # ... but without it the partials are one polynomial u⁻¹·alpha(x)·(m + r·s(x)) that factors.
    assert master_attack(run, parity_partials) == joint_secret(key)
    assert master_attack(run, run.partials) is None
