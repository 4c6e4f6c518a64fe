"""Shamir polynomials mod n, Lagrange coefficients in Parity's sign convention, Feldman and Pedersen VSS.

Parity never uses the standard Lagrange-at-zero coefficient ``λ_i = Π x_j / (x_j − x_i)``
but its "shadow coefficient" ``λ'_i = Π x_j / (x_i − x_j) = (−1)^{|S|−1} λ_i`` and fixes the
sign afterwards with the parity of ``t`` (protocol.md §2.3). Every partial value that crosses
the wire (shadow points, partial signatures) is computed with ``λ'``, so this module offers
``λ'`` first and the standard coefficient only as a convenience.

Id numbers (the evaluation points ``x``) must be scalars ``1 <= x < n`` and pairwise
distinct: ``x = 0`` would hand out the secret itself and a repeated ``x`` makes the Lagrange
denominators vanish.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

from coincurve import PublicKey

from ..exceptions import InvalidPoint, InvalidScalar, InvalidShare, InvalidThreshold
from .curve import G, N, Point, Rng, random_scalar

__all__ = [
    "evaluate",
    "feldman_commitments",
    "lagrange_coefficients_at_zero",
    "pedersen_commitments",
    "random_polynomial",
    "shadow_coefficient",
    "shadow_coefficients",
    "verify_feldman_share",
    "verify_pedersen_share",
]


# -- polynomials ------------------------------------------------------------------------------


def random_polynomial(degree: int, rng: Rng | None = None, constant: int | None = None) -> tuple[int, ...]:
    """Coefficients ``(a_0, …, a_degree)`` mod n of a random polynomial.

    :param constant: fixes ``a_0`` (``0`` for a zero-secret sharing); random otherwise.
    :raises InvalidThreshold: for a negative degree.
    :raises InvalidScalar: for a constant outside ``0 <= a_0 < n``.
    """
    if degree < 0:
        raise InvalidThreshold(f"a polynomial degree (threshold) must be >= 0, got {degree}")
    if constant is None:
        constant = random_scalar(rng)
    elif not 0 <= constant < N:
        raise InvalidScalar("a polynomial's constant term must satisfy 0 <= a0 < n")
    return (constant, *(random_scalar(rng) for _ in range(degree)))


def evaluate(coefficients: Sequence[int], x: int) -> int:
    """``f(x) mod n`` by Horner's rule."""
    result = 0
    for coefficient in reversed(coefficients):
        result = (result * x + coefficient) % N
    return result


# -- Lagrange coefficients ------------------------------------------------------------------


def _check_id_numbers(xs: Sequence[int]) -> None:
    for x in xs:
        if not 0 < x < N:
            raise InvalidScalar("an id number must satisfy 1 <= x < n")
    if len(set(xs)) != len(xs):
        raise InvalidShare(f"the {len(xs)} id numbers of a participant set must be distinct")


def shadow_coefficient(x_self: int, x_others: Iterable[int]) -> int:
    """Parity's ``λ'_i = Π_{j≠i} x_j / (x_i − x_j) mod n`` (protocol.md §2.3), one inversion.

    :raises InvalidScalar: for an id number outside ``1 <= x < n``.
    :raises InvalidShare: if ``x_self`` or any other id number occurs twice.
    """
    return _shadow_coefficient(x_self, tuple(x_others))


#: Id numbers are public and a cluster's groups few (a node's coefficient depends on the other
#: members only), so the coefficients are remembered: each costs a modular inversion (~15 µs),
#: paid on every retrieval and signature otherwise. A set that is refused raises and is not kept.
@functools.lru_cache(maxsize=4096)
def _shadow_coefficient(x_self: int, others: tuple[int, ...]) -> int:
    _check_id_numbers([x_self, *others])
    numerator = denominator = 1
    for x_j in others:
        numerator = numerator * x_j % N
        denominator = denominator * (x_self - x_j) % N
    return numerator * pow(denominator, -1, N) % N


def shadow_coefficients(xs: Sequence[int]) -> list[int]:
    """``λ'_i`` for every member of the set ``xs`` (same order), with ONE modular inversion.

    ``λ'_i = X / (x_i · Π_{j≠i}(x_i − x_j))`` with ``X = Π x_j``; the ``|S|`` denominators are
    inverted together by Montgomery's trick (prefix products, one inversion, a backward pass).

    :raises InvalidScalar: for an id number outside ``1 <= x < n``.
    :raises InvalidShare: for a repeated id number.
    """
    xs = list(xs)
    _check_id_numbers(xs)
    if not xs:
        return []
    product = 1
    for x in xs:
        product = product * x % N
    denominators = []
    for i, x_i in enumerate(xs):
        d = x_i
        for j, x_j in enumerate(xs):
            if j != i:
                d = d * (x_i - x_j) % N
        denominators.append(d)
    # prefix[i] = d_0 · … · d_{i-1}
    prefix = [1] * len(xs)
    running = 1
    for i, d in enumerate(denominators):
        prefix[i] = running
        running = running * d % N
    inverse = pow(running, -1, N)  # (d_0 · … · d_{k-1})^{-1}
    coefficients = [0] * len(xs)
    for i in range(len(xs) - 1, -1, -1):
        coefficients[i] = product * inverse * prefix[i] % N  # inverse·prefix[i] = d_i^{-1}
        inverse = inverse * denominators[i] % N
    return coefficients


def lagrange_coefficients_at_zero(xs: Sequence[int]) -> list[int]:
    """Standard Lagrange-at-zero coefficients ``λ_i = (−1)^{|S|−1} λ'_i``: ``Σ λ_i f(x_i) = f(0)``."""
    coefficients = shadow_coefficients(xs)
    if len(xs) % 2 == 0:
        coefficients = [(N - c) % N for c in coefficients]
    return coefficients


# -- linear combinations of points ------------------------------------------------------------
# These work on coincurve keys directly: wrapping every intermediate in a Point would serialise it.


def key_sum(keys: Sequence[PublicKey]) -> PublicKey | None:
    """The sum of the keys, or None for the point at infinity (which libsecp256k1 refuses).
    Shared with :mod:`.resharing`."""
    if not keys:
        return None
    if len(keys) == 1:
        return keys[0]
    try:
        return PublicKey.combine_keys(list(keys))
    except ValueError:
        return None


def _pair(s_g: int, s_h: int, h_key: PublicKey) -> PublicKey | None:
    """``s_g·G + s_h·H`` (zero scalars skipped), or None for infinity."""
    keys = []
    if s_g % N:
        keys.append(PublicKey.from_valid_secret((s_g % N).to_bytes(32, "big")))
    if s_h % N:
        keys.append(h_key.multiply((s_h % N).to_bytes(32, "big")))
    return key_sum(keys)


def commitment_sum(x: int, commitments: Sequence[Point], first_power: int = 0) -> PublicKey | None:
    """``Σ_k x^(k + first_power)·C_k`` (None: the point at infinity): one multiplication per
    commitment (none for an ``x^0`` term), one addition call. Shared with :mod:`.resharing`."""
    if not commitments:
        return None
    power = pow(x, first_power, N)  # never zero: x is a non-zero scalar and n is prime
    keys = []
    for commitment in commitments:
        keys.append(commitment.coincurve if power == 1 else commitment.coincurve.multiply(power.to_bytes(32, "big")))
        power = power * x % N
    return key_sum(keys)


def same_key(a: PublicKey | None, b: PublicKey | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.format(compressed=False) == b.format(compressed=False)


def _check_commitments(x: int, commitments: Sequence[Point]) -> None:
    if not commitments:
        raise InvalidShare("a share cannot be verified against an empty list of commitments")
    if not 0 < x < N:
        raise InvalidScalar("an id number must satisfy 1 <= x < n")


# -- Feldman VSS ------------------------------------------------------------------------------


def feldman_commitments(coefficients: Sequence[int]) -> tuple[Point, ...]:
    """Feldman's ``A_k = a_k·G`` for every coefficient.

    :raises InvalidPoint: for a zero coefficient (its commitment would be the point at infinity).
    """
    return tuple(Point.generator_mul(a) for a in coefficients)


def verify_feldman_share(x: int, share: int, commitments: Sequence[Point]) -> None:
    """Check ``share·G == Σ_k x^k·A_k``.

    :raises InvalidShare: if the share does not match the commitments (or there are none).
    """
    _check_commitments(x, commitments)
    if not same_key(_pair(share, 0, G.coincurve), commitment_sum(x, commitments)):
        raise InvalidShare("the share does not match the dealer's Feldman commitments")


# -- Pedersen VSS -----------------------------------------------------------------------------


def pedersen_commitments(f: Sequence[int], g: Sequence[int], H: Point) -> tuple[Point, ...]:
    """Pedersen's ``C_k = a_k·G + b_k·H`` for the coefficient pairs of ``f`` and ``g``.

    :raises InvalidThreshold: if ``f`` and ``g`` differ in degree.
    :raises InvalidPoint: if a commitment would be the point at infinity.
    """
    if len(f) != len(g):
        raise InvalidThreshold(f"f and g must have the same degree, got {len(f) - 1} and {len(g) - 1}")
    h_key = H.coincurve
    out = []
    for a_k, b_k in zip(f, g, strict=True):
        key = _pair(a_k, b_k, h_key)
        if key is None:
            raise InvalidPoint("a Pedersen commitment is the point at infinity")
        out.append(Point(key))
    return tuple(out)


def verify_pedersen_share(
    x: int, secret1: int, secret2: int, commitments: Sequence[Point], H: Point
) -> None:
    """Check ``secret1·G + secret2·H == Σ_k x^k·C_k`` (protocol.md §2.5 step 3).

    Costs one fixed-base and ``len(commitments)`` variable-base multiplications and two
    additions in libsecp256k1.

    :raises InvalidShare: if the pair does not match the commitments (or there are none).
    """
    _check_commitments(x, commitments)
    if not same_key(_pair(secret1, secret2, H.coincurve), commitment_sum(x, commitments)):
        raise InvalidShare("the share pair does not match the dealer's Pedersen commitments")
