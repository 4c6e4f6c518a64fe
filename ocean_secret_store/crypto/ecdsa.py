"""Threshold ECDSA (protocol.md §2.9): verified sub-sharings, inversion, partial signatures, combination.

A key of threshold ``t`` held by ``N > 2t`` nodes signs a 32-byte hash ``m`` with a group ``S``
of exactly ``2t+1`` holders (the master among them), all working at the key's id numbers
``x_i``. Every member plays every step; the master also combines. In order:

1. **Sub-sharings** (one round, every member deals to every member, itself included):
   :func:`deal_signing` draws four Pedersen-VSS sharings (protocol.md §2.5), the nonce ``k`` and
   the inversion helper ``alpha`` of degree ``t``, and two sharings of zero of degree ``2t``: ``z``
   (Parity's) and ``w`` (ours, see below). :func:`subshares_for` is the private message to member
   ``j``, :attr:`SigningDealing.commitments` the broadcast. :func:`receive_signing_dealings`
   verifies every dealing (naming a cheating dealer, :class:`~.resharing.CheatingDealer`) and
   gives the member its :class:`SigningShares` ``k_i, alpha_i, z_i, w_i`` and ``R = k·G``.
2. **Inversion** (member → master): :func:`inversed_nonce_coeff_share` ``u_i = k_i·alpha_i + z_i``,
   a point of a degree-``2t`` polynomial with ``u(0) = k·alpha``; the master's
   :func:`inversed_nonce_coeff` is ``u⁻¹ = (Σ λ'_i·u_i)⁻¹`` over all ``2t+1``.
3. **Partial signatures** (master sends ``u⁻¹`` and ``m``; member → master):
   :func:`partial_signature` ``ς_i = u⁻¹·alpha_i·(m + r·s_i) + w_i`` with ``r = R.x mod n``.
4. **Combination** (master): :func:`combine_signature` ``s = Σ λ'_i·ς_i = k⁻¹·(m + r·y)``,
   low-S normalisation and the recovery id (:func:`serialize_signature`), then the signature is
   checked against the server key by public-key recovery (:func:`verify_signature`): a wrong
   partial, a lying dealer that verification cannot see (an inconsistent ``R`` share, different
   commitments to different members) or a missing partial ends in :class:`InvalidSignature`,
   never in a signature that does not verify.

With ``t = 0`` the master signs alone with its share (:func:`sign_locally`, RFC 6979 as
libsecp256k1). Both paths return Parity's 65 bytes ``r ‖ s ‖ v`` (§1.4.8): low-S, ``v`` the
recovery id (``R.y`` odd → 1, ``R.x ≥ n`` → +2, bit 0 flipped with ``s``); Ethereum's
``ecrecover`` wants ``v + 27``. Over ``2t+1`` members Parity's ``λ'`` *is* the standard
Lagrange coefficient (``(−1)^{2t} = 1``), so no sign rule applies.

**Where this departs from Parity, and why.**

* The mask ``w``. Parity's partial is ``ς_i = κ_i·m + κ_i·s_i·r`` with ``κ_i = u⁻¹·alpha_i``: the
  ``2t+1`` partials the master receives are the values of *one* polynomial of degree ``2t``,
  ``P(x) = u⁻¹·alpha(x)·(m + r·s(x))``, which the master can interpolate and factor over ``F_n``
  (polynomial time). One factor of degree ``t`` is ``m + r·s(x)`` up to a constant, the master's
  own share fixes the constant, and ``s(0) = y`` is the server key: one signing session gives
  the master the private key (for ``t = 1`` a square root mod n suffices;
  ``tests/crypto/test_ecdsa.py`` does it). Adding ``w_i``, a share of a fresh zero-sharing of
  degree ``2t``, makes the partials a uniformly random degree-``2t`` sharing of ``s``, as ``z``
  already does for ``u``: the master learns ``s`` and nothing else. It costs one more dealing in
  the same round.
* The zero-sharings are verified. Parity sends no commitments for a zero-secret sharing and
  checks nothing, so a dealer could share any constant. Here ``f(0) = g(0) = 0`` and the dealer
  commits to the other coefficients only, ``C_k = a_k·G + b_k·H`` for ``k = 1..2t``; a member
  checks ``f(x)·G + g(x)·H == Σ_{k≥1} x^k·C_k``, which no non-zero constant passes
  (:func:`verify_zero_dealing`). Hiding is as Pedersen's.
* ``m`` is the hash modulo n, zero allowed, as libsecp256k1 reads it (Parity's ``to_scalar``
  refuses a hash ≡ 0, probability 2⁻²⁵⁶), so both paths sign the same ``m``.

What verification does not cover (a member's shares of ``R``, ``u_i`` and ``ς_i`` carry no proof,
as in Parity) only stops a signature from being produced: the final check catches it. Every value
here is an int mod n or a coincurve point; nothing does I/O.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from coincurve import PublicKey

from ..exceptions import CryptoError, InvalidScalar, InvalidShare, InvalidSignature, InvalidThreshold
from .curve import N, Point, Rng, random_scalar
from .dkg import Dealing, LocalKey, deal, dealing_for, joint_public, verify_dealing
from .resharing import CheatingDealer, check_id_number, dealer_label
from .sharing import commitment_sum, key_sum, pedersen_commitments, random_polynomial, same_key, shadow_coefficients
from .signatures import sign_raw_hash, verify_raw_hash

__all__ = [
    "SIGNATURE_LENGTH",
    "SigningCommitments",
    "SigningDealing",
    "SigningShares",
    "SigningSubshares",
    "check_key_threshold",
    "check_message_hash",
    "check_signing_group",
    "combine_partial_signatures",
    "combine_signature",
    "deal_signing",
    "deal_zero",
    "inversed_nonce_coeff",
    "inversed_nonce_coeff_share",
    "message_scalar",
    "partial_signature",
    "receive_signing_dealings",
    "run_local_signing",
    "serialize_signature",
    "sign_locally",
    "signature_r",
    "subshares_for",
    "verify_signature",
    "verify_signing_dealing",
    "verify_zero_dealing",
]

D = TypeVar("D", bound=Hashable)

#: ``r(32) ‖ s(32) ‖ v(1)``.
SIGNATURE_LENGTH = 65

_HALF_N = N // 2


# -- validation -------------------------------------------------------------------------------


def check_message_hash(message_hash: bytes) -> None:
    """:raises CryptoError: unless the message hash is exactly 32 bytes."""
    if len(message_hash) != 32:
        raise CryptoError(f"a message hash must be 32 bytes, got {len(message_hash)}")


def check_key_threshold(threshold: int, key_nodes: int) -> None:
    """Can a key of threshold ``t`` held by ``key_nodes`` nodes sign ECDSA? It needs ``2t < N``.

    :raises InvalidThreshold: unless ``0 <= t`` and ``2t < N`` (a group of ``2t+1`` holders).
    """
    if threshold < 0:
        raise InvalidThreshold(f"a threshold must be >= 0, got {threshold}")
    if 2 * threshold >= key_nodes:
        raise InvalidThreshold(
            f"ECDSA signing needs 2t+1 = {2 * threshold + 1} key holders, "
            f"the key (t = {threshold}) has {key_nodes}: it needs 2t < N"
        )


def check_signing_group(threshold: int, group_size: int) -> None:
    """:raises InvalidThreshold: unless the group has exactly ``2t+1`` members (``t >= 1``)."""
    if threshold < 1:
        raise InvalidThreshold(f"a threshold ECDSA group needs t >= 1 (t = 0 signs locally), got {threshold}")
    if group_size != 2 * threshold + 1:
        raise InvalidThreshold(
            f"a threshold-{threshold} ECDSA group has exactly {2 * threshold + 1} members, got {group_size}"
        )


def message_scalar(message_hash: bytes) -> int:
    """``m``: the hash as an integer mod n, as libsecp256k1 reads it (zero allowed)."""
    check_message_hash(message_hash)
    return int.from_bytes(message_hash, "big") % N


def signature_r(nonce_public: Point) -> int:
    """``r = R.x mod n``.

    :raises InvalidSignature: if ``r = 0`` (probability ~2⁻²⁵⁶: sign again with fresh sub-sharings).
    """
    r = nonce_public.x % N
    if r == 0:
        raise InvalidSignature("the nonce's x coordinate is a multiple of n: sign again")
    return r


def _aligned(group: Mapping[D, int], values: Mapping[D, int], what: str) -> tuple[list[int], list[int]]:
    """The group's id numbers and ``values`` in one order; ``values`` must come from exactly the group."""
    missing = [d for d in group if d not in values]
    extra = [d for d in values if d not in group]
    if missing or extra:
        raise InvalidShare(
            f"{what} must come from exactly the group: {len(missing)} missing, {len(extra)} not in the group"
        )
    members = list(group)
    return [group[d] for d in members], [values[d] % N for d in members]


# -- zero-sharings with commitments ----------------------------------------------------------


def deal_zero(threshold: int, H: Point, rng: Rng | None = None) -> Dealing:
    """A verifiable sharing of zero: ``f(0) = g(0) = 0``, commitments ``C_1..C_t`` (no ``C_0``).

    :raises InvalidThreshold: unless ``threshold >= 1``.
    """
    if threshold < 1:
        raise InvalidThreshold(f"a verifiable zero-sharing needs a degree >= 1, got {threshold}")
    f = random_polynomial(threshold, rng, constant=0)
    g = random_polynomial(threshold, rng, constant=0)
    return Dealing(f, g, pedersen_commitments(f[1:], g[1:], H), None)


def _pair(s_g: int, s_h: int, H: Point) -> PublicKey | None:
    """``s_g·G + s_h·H``, or None for the point at infinity."""
    keys = []
    if s_g % N:
        keys.append(PublicKey.from_valid_secret((s_g % N).to_bytes(32, "big")))
    if s_h % N:
        keys.append(H.coincurve.multiply((s_h % N).to_bytes(32, "big")))
    return key_sum(keys)


def verify_zero_dealing(
    x_self: int, secret1: int, secret2: int, commitments: Sequence[Point], H: Point, threshold: int
) -> None:
    """Check a pair of a zero-sharing: ``secret1·G + secret2·H == Σ_{k=1..t} x^k·C_k``.

    :raises InvalidShare: for commitments not of length ``threshold`` or a pair that does not
        match them (which includes any dealing whose constant is not zero).
    """
    check_id_number(x_self)
    if threshold < 1:
        raise InvalidThreshold(f"a verifiable zero-sharing needs a degree >= 1, got {threshold}")
    if len(commitments) != threshold:
        raise InvalidShare(
            f"a zero-sharing of degree {threshold} carries {threshold} commitments, got {len(commitments)}"
        )
    if not same_key(_pair(secret1, secret2, H), commitment_sum(x_self, commitments, 1)):
        raise InvalidShare("the share pair does not match the dealer's zero-sharing commitments")


# -- step 1: the sub-sharings ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SigningCommitments:
    """What a dealer broadcasts to the group (public).

    ``nonce`` and ``inversion``: ``t+1`` Pedersen commitments each; ``zero`` and ``mask``: ``2t``
    each (no ``C_0``); ``nonce_public_share``: the dealer's ``a_0·G`` of the nonce, ``R = Σ`` of
    them (unverified, as in Parity: a wrong one only makes the final check fail).
    """

    nonce: tuple[Point, ...]
    inversion: tuple[Point, ...]
    zero: tuple[Point, ...]
    mask: tuple[Point, ...]
    nonce_public_share: Point

    def __repr__(self) -> str:
        return f"SigningCommitments(threshold={len(self.nonce) - 1})"


@dataclass(frozen=True, eq=False, repr=False, slots=True)
class SigningDealing:
    """One member's four sub-sharings (secret: no repr, compared by identity)."""

    nonce: Dealing
    inversion: Dealing
    zero: Dealing
    mask: Dealing

    @property
    def threshold(self) -> int:
        return self.nonce.threshold

    @property
    def commitments(self) -> SigningCommitments:
        public_share = self.nonce.public_share
        if public_share is None:  # deal() gives every non-zero dealing a public share
            raise InvalidShare("a nonce dealing has no public share")
        return SigningCommitments(
            self.nonce.commitments, self.inversion.commitments, self.zero.commitments,
            self.mask.commitments, public_share,
        )

    def __repr__(self) -> str:
        return f"SigningDealing(threshold={self.threshold})"


@dataclass(frozen=True, eq=False, repr=False, slots=True)
class SigningSubshares:
    """What a dealer sends privately to one member: ``(f(x_j), g(x_j))`` of each sub-sharing (secret)."""

    nonce: tuple[int, int]
    inversion: tuple[int, int]
    zero: tuple[int, int]
    mask: tuple[int, int]

    def __repr__(self) -> str:
        return "SigningSubshares(<secret>)"


@dataclass(frozen=True, eq=False, repr=False, slots=True)
class SigningShares:
    """A member's outcome of step 1: ``k_i``, ``alpha_i``, ``z_i``, ``w_i`` (secret) and ``R`` (public)."""

    nonce_share: int
    inversion_share: int
    zero_share: int
    mask_share: int
    nonce_public: Point

    def __repr__(self) -> str:
        return f"SigningShares(nonce_public={self.nonce_public!r})"


def deal_signing(threshold: int, H: Point, rng: Rng | None = None) -> SigningDealing:
    """This member's four sub-sharings: ``k``, ``alpha`` of degree ``t``; ``z``, ``w`` of zero, degree ``2t``.

    ``H`` is the sub-sharings' Pedersen generator, the same at every member (for example
    :func:`~.nums.pedersen_h` of the signing session's id).

    :raises InvalidThreshold: unless ``threshold >= 1``.
    """
    if threshold < 1:
        raise InvalidThreshold(f"threshold ECDSA needs t >= 1 (t = 0 signs locally), got {threshold}")
    nonce, inversion = deal(threshold, H, rng), deal(threshold, H, rng)
    return SigningDealing(nonce, inversion, deal_zero(2 * threshold, H, rng), deal_zero(2 * threshold, H, rng))


def subshares_for(dealing: SigningDealing, x_j: int) -> SigningSubshares:
    """The private message of ``dealing`` to the member with id number ``x_j`` (itself included).

    :raises InvalidScalar: for an id number outside ``1 <= x < n``.
    """
    return SigningSubshares(
        dealing_for(dealing.nonce, x_j), dealing_for(dealing.inversion, x_j),
        dealing_for(dealing.zero, x_j), dealing_for(dealing.mask, x_j),
    )


def verify_signing_dealing(
    x_self: int, threshold: int, H: Point, subshares: SigningSubshares, commitments: SigningCommitments,
    *, dealer: Hashable,
) -> None:
    """Check the four pairs one dealer sent this member against its broadcast commitments.

    :raises CheatingDealer: naming ``dealer``, if any pair or commitment list is wrong.
    """
    checks = (
        ("nonce", subshares.nonce, commitments.nonce, threshold, False),
        ("inversion", subshares.inversion, commitments.inversion, threshold, False),
        ("zero", subshares.zero, commitments.zero, 2 * threshold, True),
        ("mask", subshares.mask, commitments.mask, 2 * threshold, True),
    )
    for name, (secret1, secret2), points, degree, is_zero in checks:
        try:
            if is_zero:
                verify_zero_dealing(x_self, secret1, secret2, points, H, degree)
            else:
                verify_dealing(x_self, secret1, secret2, points, H, degree)
        except InvalidShare as exc:
            raise CheatingDealer(f"dealer {dealer_label(dealer)}: {name} sub-sharing: {exc}", [dealer]) from exc


def receive_signing_dealings(
    x_self: int,
    threshold: int,
    H: Point,
    subshares: Mapping[D, SigningSubshares],
    commitments: Mapping[D, SigningCommitments],
) -> SigningShares:
    """Verify every member's dealing and form this member's shares and ``R`` (end of step 1).

    :param subshares: dealer -> what it sent this member; :param commitments: dealer -> what it
        broadcast. The dealers must be the whole group of ``2t+1`` (this member included).
    :raises CheatingDealer: naming the first dealer whose pairs do not match its commitments.
    :raises InvalidShare: if the two maps name different dealers.
    :raises InvalidThreshold: unless there are exactly ``2t+1`` dealers.
    """
    check_id_number(x_self)
    dealers = list(commitments)
    check_signing_group(threshold, len(dealers))
    if set(subshares) != set(dealers):
        raise InvalidShare("subshares and commitments must come from the same dealers")
    for dealer in dealers:
        verify_signing_dealing(x_self, threshold, H, subshares[dealer], commitments[dealer], dealer=dealer)
    return _combine_received([subshares[d] for d in dealers], [commitments[d] for d in dealers])


def _combine_received(received: Sequence[SigningSubshares], commitments: Sequence[SigningCommitments]) -> SigningShares:
    return SigningShares(
        nonce_share=sum(s.nonce[0] for s in received) % N,
        inversion_share=sum(s.inversion[0] for s in received) % N,
        zero_share=sum(s.zero[0] for s in received) % N,
        mask_share=sum(s.mask[0] for s in received) % N,
        nonce_public=joint_public(c.nonce_public_share for c in commitments),
    )


# -- step 2: the inversion ---------------------------------------------------------------------


def inversed_nonce_coeff_share(shares: SigningShares) -> int:
    """``u_i = k_i·alpha_i + z_i``: what a member sends the master (Parity's ``inversed_nonce_coeff_share``)."""
    return (shares.nonce_share * shares.inversion_share + shares.zero_share) % N


def inversed_nonce_coeff(threshold: int, group: Mapping[D, int], coeff_shares: Mapping[D, int]) -> int:
    """The master's ``u⁻¹ = (Σ λ'_i·u_i)⁻¹`` over the whole group (``u = k·alpha``).

    :param group: member -> its id number; :param coeff_shares: member -> its ``u_i``.
    :raises InvalidThreshold: unless the group has exactly ``2t+1`` members.
    :raises InvalidShare: if the shares do not come from exactly the group, or ``u = 0``
        (``alpha = 0`` or ``k = 0``, probability ~2⁻²⁵⁵, or a wrong share: sign again).
    """
    check_signing_group(threshold, len(group))
    xs, values = _aligned(group, coeff_shares, "inversed nonce coefficient shares")
    u = sum(lam * u_i for lam, u_i in zip(shadow_coefficients(xs), values, strict=True)) % N
    if u == 0:
        raise InvalidShare("the inversed nonce coefficient is zero: sign again with fresh sub-sharings")
    return pow(u, -1, N)


# -- step 3: partial signatures ------------------------------------------------------------------


def partial_signature(shares: SigningShares, key_share: int, inversed_nonce_coeff: int, message_hash: bytes) -> int:
    """``ς_i = u⁻¹·alpha_i·(m + r·s_i) + w_i``: what a member sends the master.

    :raises CryptoError: for a message hash that is not 32 bytes.
    :raises InvalidScalar: for a key share or ``u⁻¹`` outside ``1 <= v < n``.
    :raises InvalidSignature: if ``r = 0``.
    """
    if not 0 < key_share < N:
        raise InvalidScalar("a key share must satisfy 1 <= s < n")
    if not 0 < inversed_nonce_coeff < N:
        raise InvalidScalar("the inversed nonce coefficient must satisfy 1 <= v < n")
    m = message_scalar(message_hash)
    r = signature_r(shares.nonce_public)
    kappa = inversed_nonce_coeff * shares.inversion_share % N  # a share of k⁻¹
    return (kappa * ((m + r * key_share) % N) + shares.mask_share) % N


# -- step 4: the combination ---------------------------------------------------------------------


def combine_partial_signatures(threshold: int, group: Mapping[D, int], partials: Mapping[D, int]) -> int:
    """``s = Σ λ'_i·ς_i`` over the whole group, before low-S normalisation.

    :raises InvalidThreshold: unless the group has exactly ``2t+1`` members.
    :raises InvalidShare: if the partials do not come from exactly the group.
    """
    check_signing_group(threshold, len(group))
    xs, values = _aligned(group, partials, "partial signatures")
    return sum(lam * p for lam, p in zip(shadow_coefficients(xs), values, strict=True)) % N


def serialize_signature(nonce_public: Point, s: int) -> bytes:
    """Parity's ``r ‖ s ‖ v``: ``r = R.x mod n``, low-S, ``v = (R.y odd) | (R.x ≥ n) << 1``, bit 0
    flipped when ``s`` is replaced by ``n − s``.

    :raises InvalidSignature: if ``r`` or ``s`` is zero (or ``s`` is not below n).
    """
    r = signature_r(nonce_public)
    if not 0 < s < N:
        raise InvalidSignature("an ECDSA signature needs 1 <= s < n: sign again")
    v = (nonce_public.y & 1) | (2 if nonce_public.x >= N else 0)
    if s > _HALF_N:
        s = N - s
        v ^= 1
    return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v])


def verify_signature(public: Point, signature: bytes, message_hash: bytes) -> None:
    """Recover the signer of ``message_hash`` from the 65-byte signature and compare it with ``public``.

    :raises InvalidSignature: if the signature is malformed, not low-S or made by another key.
    :raises CryptoError: for a message hash that is not 32 bytes.
    """
    check_message_hash(message_hash)
    try:
        verify_raw_hash(public, signature, message_hash)
    except InvalidSignature as exc:
        raise InvalidSignature(
            f"the ECDSA signature does not verify against the server key ({exc}): "
            "a partial signature or a sub-sharing was wrong"
        ) from exc


def combine_signature(
    threshold: int,
    group: Mapping[D, int],
    partials: Mapping[D, int],
    nonce_public: Point,
    message_hash: bytes,
    public: Point,
) -> bytes:
    """The master's last step: combine, normalise, serialise and verify against the server key ``public``.

    :raises InvalidSignature: if the result does not verify (never returns a bad signature).
    :raises InvalidThreshold: unless the group has exactly ``2t+1`` members.
    :raises InvalidShare: if the partials do not come from exactly the group.
    """
    check_message_hash(message_hash)
    signature = serialize_signature(nonce_public, combine_partial_signatures(threshold, group, partials))
    verify_signature(public, signature, message_hash)
    return signature


def sign_locally(share: int, message_hash: bytes, public: Point) -> bytes:
    """The ``t = 0`` path: the master signs with its share (which is the key), RFC 6979 as
    libsecp256k1, and checks the result against the server key ``public``.

    :raises CryptoError: for a message hash that is not 32 bytes.
    :raises InvalidScalar: for a share outside ``1 <= s < n``.
    :raises InvalidSignature: if the share is not the key of ``public``.
    """
    check_message_hash(message_hash)
    if not 0 < share < N:
        raise InvalidScalar("a key share must satisfy 1 <= s < n")
    signature = sign_raw_hash(share, message_hash)
    verify_signature(public, signature, message_hash)
    return signature


# -- the whole protocol in one process ---------------------------------------------------------


def run_local_signing(
    key: LocalKey, members: Sequence[int], message_hash: bytes, rng: Rng | None = None, *, verify: bool = True
) -> bytes:
    """Sign ``message_hash`` with the group ``members`` of a :func:`~.dkg.run_local_dkg` key, in-process.

    ``members[0]`` is the master. Every step is the per-node function a session calls; with
    ``verify`` (the default) every member checks every dealing it receives. Tests and benches.

    :raises InvalidThreshold: unless ``2t < N`` and the group has ``2t+1`` members (1 for t = 0).
    """
    t = key.threshold
    check_key_threshold(t, len(key.shares))
    if t == 0:
        if len(members) != 1:
            raise InvalidThreshold(f"a threshold-0 key signs with its master alone, got {len(members)} members")
        return sign_locally(key.shares[members[0]], message_hash, key.public)
    check_signing_group(t, len(members))
    group = {m: key.id_numbers[m] for m in members}
    H = Point.generator_mul(random_scalar(rng))
    dealings = {m: deal_signing(t, H, rng) for m in members}
    commitments = {m: d.commitments for m, d in dealings.items()}
    shares: dict[int, SigningShares] = {}
    for j in members:
        received = {m: subshares_for(d, group[j]) for m, d in dealings.items()}
        if verify:
            shares[j] = receive_signing_dealings(group[j], t, H, received, commitments)
        else:
            shares[j] = _combine_received([received[m] for m in members], [commitments[m] for m in members])
    u_inv = inversed_nonce_coeff(t, group, {j: inversed_nonce_coeff_share(shares[j]) for j in members})
    partials = {j: partial_signature(shares[j], key.shares[j], u_inv, message_hash) for j in members}
    return combine_signature(t, group, partials, shares[members[0]].nonce_public, message_hash, key.public)
