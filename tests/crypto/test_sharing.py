"""Polynomials, Parity's shadow (Lagrange) coefficients, Feldman and Pedersen VSS."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocean_secret_store.crypto import sharing
from ocean_secret_store.crypto.curve import G, N, Point, random_scalar
from ocean_secret_store.crypto.sharing import (
    evaluate,
    feldman_commitments,
    lagrange_coefficients_at_zero,
    pedersen_commitments,
    random_polynomial,
    shadow_coefficient,
    shadow_coefficients,
    verify_feldman_share,
    verify_pedersen_share,
)
from ocean_secret_store.exceptions import InvalidPoint, InvalidScalar, InvalidShare, InvalidThreshold
from tests.crypto.reference import interpolate_at_zero

scalars = st.integers(1, N - 1)
id_sets = st.lists(scalars, min_size=1, max_size=12, unique=True)


def seeded(seed: int) -> Any:
    return random.Random(seed).randbytes


def other_generator() -> Point:
    return Point.generator_mul(random_scalar())


# -- polynomials ------------------------------------------------------------------------------


@given(st.lists(st.integers(0, N - 1), min_size=1, max_size=10), st.integers(0, N - 1))
def test_evaluate_is_the_sum_of_terms(coefficients: list[int], x: int) -> None:
    assert evaluate(coefficients, x) == sum(a * pow(x, k, N) for k, a in enumerate(coefficients)) % N


@pytest.mark.parametrize("degree", [0, 1, 5])
def test_random_polynomial_shape(degree: int) -> None:
    f = random_polynomial(degree)
    assert len(f) == degree + 1
    assert all(0 < a < N for a in f)
    assert random_polynomial(degree, constant=0)[0] == 0
    assert random_polynomial(degree, constant=7)[0] == 7


def test_random_polynomial_uses_the_injected_rng() -> None:
    assert random_polynomial(4, seeded(1)) == random_polynomial(4, seeded(1))
    assert random_polynomial(4, seeded(1)) != random_polynomial(4, seeded(2))


def test_random_polynomial_rejects_bad_input() -> None:
    with pytest.raises(InvalidThreshold):
        random_polynomial(-1)
    for constant in (-1, N):
        with pytest.raises(InvalidScalar):
            random_polynomial(2, constant=constant)


# -- shadow coefficients -------------------------------------------------------------------------


def naive_shadow_coefficient(x_i: int, others: list[int]) -> int:
    """λ'_i straight from protocol.md §2.3, one inversion per factor."""
    result = 1
    for x_j in others:
        result = result * x_j * pow(x_i - x_j, -1, N) % N
    return result


@given(id_sets)
def test_shadow_coefficients_match_the_definition(xs: list[int]) -> None:
    batched = shadow_coefficients(xs)
    for i, x_i in enumerate(xs):
        others = xs[:i] + xs[i + 1 :]
        expected = naive_shadow_coefficient(x_i, others)
        assert shadow_coefficient(x_i, others) == expected
        assert batched[i] == expected


@given(id_sets, st.data())
def test_shadow_coefficients_recover_the_secret_up_to_t_parity(xs: list[int], data: st.DataObject) -> None:
    t = len(xs) - 1
    f = [data.draw(scalars) for _ in range(t + 1)]
    combined = sum(c * evaluate(f, x) for c, x in zip(shadow_coefficients(xs), xs, strict=True)) % N
    # protocol.md §2.3: Σ λ'_i s_i = (−1)^t · s
    assert combined == (f[0] if t % 2 == 0 else (-f[0]) % N)
    standard = lagrange_coefficients_at_zero(xs)
    assert sum(c * evaluate(f, x) for c, x in zip(standard, xs, strict=True)) % N == f[0]
    assert f[0] == interpolate_at_zero([(x, evaluate(f, x)) for x in xs])


def test_single_member_coefficient_is_one() -> None:
    assert shadow_coefficient(5, []) == 1
    assert shadow_coefficients([5]) == [1]
    assert shadow_coefficients([]) == []


def test_batched_coefficients_invert_once(monkeypatch: pytest.MonkeyPatch) -> None:
    inversions = []

    def counting_pow(base: int, exponent: int, modulus: int | None = None) -> int:
        if exponent == -1:
            inversions.append(base)
        return pow(base, exponent, modulus)

    monkeypatch.setattr(sharing, "pow", counting_pow, raising=False)
    xs = [random_scalar() for _ in range(11)]
    shadow_coefficients(xs)
    assert len(inversions) == 1
    shadow_coefficient(xs[0], xs[1:])
    assert len(inversions) == 2


@pytest.mark.parametrize(
    "xs", [[1, 2, 1], [3, 3], [7, 8, 9, 8]], ids=["first-again", "pair", "middle-again"]
)
def test_duplicate_id_numbers_are_refused(xs: list[int]) -> None:
    with pytest.raises(InvalidShare):
        shadow_coefficients(xs)
    with pytest.raises(InvalidShare):
        shadow_coefficient(xs[0], [*xs[1:], xs[0]])


@pytest.mark.parametrize("bad", [0, N, N + 1, -1])
def test_id_numbers_must_be_non_zero_scalars(bad: int) -> None:
    with pytest.raises(InvalidScalar):
        shadow_coefficients([1, bad])
    with pytest.raises(InvalidScalar):
        shadow_coefficient(bad, [1, 2])
    with pytest.raises(InvalidScalar):
        shadow_coefficient(1, [bad])


# -- Feldman ------------------------------------------------------------------------------------


@given(st.integers(0, 6), st.lists(scalars, min_size=1, max_size=4, unique=True))
@settings(max_examples=20)
def test_feldman_shares_verify(t: int, xs: list[int]) -> None:
    f = random_polynomial(t)
    commitments = feldman_commitments(f)
    assert commitments == tuple(a * G for a in f)
    for x in xs:
        verify_feldman_share(x, evaluate(f, x), commitments)


def test_feldman_tampering_is_detected() -> None:
    t, x = 3, random_scalar()
    f = random_polynomial(t)
    commitments = feldman_commitments(f)
    share = evaluate(f, x)
    with pytest.raises(InvalidShare):
        verify_feldman_share(x, (share + 1) % N, commitments)
    with pytest.raises(InvalidShare):
        verify_feldman_share((x + 1) % N, share, commitments)
    for k in range(t + 1):
        tampered = list(commitments)
        tampered[k] = tampered[k] + G
        with pytest.raises(InvalidShare):
            verify_feldman_share(x, share, tampered)
    for wrong_length in (commitments[:-1], (*commitments, G), ()):
        with pytest.raises(InvalidShare):
            verify_feldman_share(x, share, wrong_length)


def test_feldman_commitment_to_zero_is_refused() -> None:
    with pytest.raises(InvalidPoint):
        feldman_commitments((0, 1))


# -- Pedersen -----------------------------------------------------------------------------------


@given(st.integers(0, 6), st.lists(scalars, min_size=1, max_size=4, unique=True), st.booleans())
@settings(max_examples=20)
def test_pedersen_shares_verify(t: int, xs: list[int], zero_secret: bool) -> None:
    h = other_generator()
    f = random_polynomial(t, constant=0 if zero_secret else None)
    g = random_polynomial(t)
    commitments = pedersen_commitments(f, g, h)
    assert len(commitments) == t + 1
    for (a, b), c in zip(zip(f, g, strict=True), commitments, strict=True):
        assert c == (b * h if a == 0 else a * G + b * h)
    for x in xs:
        verify_pedersen_share(x, evaluate(f, x), evaluate(g, x), commitments, h)


def test_pedersen_tampering_is_detected() -> None:
    t, x, h = 2, random_scalar(), other_generator()
    f, g = random_polynomial(t), random_polynomial(t)
    commitments = pedersen_commitments(f, g, h)
    secret1, secret2 = evaluate(f, x), evaluate(g, x)
    verify_pedersen_share(x, secret1, secret2, commitments, h)
    with pytest.raises(InvalidShare):
        verify_pedersen_share(x, (secret1 + 1) % N, secret2, commitments, h)
    with pytest.raises(InvalidShare):
        verify_pedersen_share(x, secret1, (secret2 - 1) % N, commitments, h)
    with pytest.raises(InvalidShare):
        verify_pedersen_share(x, secret2, secret1, commitments, h)
    with pytest.raises(InvalidShare):
        verify_pedersen_share(x, secret1, secret2, commitments, other_generator())
    for k in range(t + 1):
        tampered = list(commitments)
        tampered[k] = -tampered[k]
        with pytest.raises(InvalidShare):
            verify_pedersen_share(x, secret1, secret2, tampered, h)
    for wrong_length in (commitments[:-1], (*commitments, h), ()):
        with pytest.raises(InvalidShare):
            verify_pedersen_share(x, secret1, secret2, wrong_length, h)
    with pytest.raises(InvalidScalar):
        verify_pedersen_share(0, secret1, secret2, commitments, h)


def test_pedersen_polynomials_must_match_in_degree() -> None:
    with pytest.raises(InvalidThreshold):
        pedersen_commitments(random_polynomial(2), random_polynomial(3), other_generator())
