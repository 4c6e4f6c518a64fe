"""Batched DKG checks (issue 18): one random linear combination over every dealer, the culprit named
only when it fails; a single bad share among many is caught, and so are errors that cancel in a sum."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

from ocean_secret_store.crypto.curve import N, Point, random_scalar
from ocean_secret_store.crypto.dkg import (
    batch_weight,
    deal,
    dealing_for,
    verify_dealings,
    verify_feldman_shares,
)
from ocean_secret_store.crypto.resharing import CheatingDealer
from ocean_secret_store.crypto.sharing import feldman_commitments
from ocean_secret_store.exceptions import InvalidScalar, InvalidShare, InvalidThreshold

LAMBDA = 0x5363AD4CC05C30E0A5261C028812645A122E22EA20816678DF02967C1B23BD72


def seeded(seed: int) -> Any:
    return random.Random(seed).randbytes


Received = dict[int, tuple[int, int, tuple[Point, ...]]]


def setting(n: int = 9, t: int = 4, seed: int = 1) -> tuple[int, Point, list[Any], Received]:
    rng = seeded(seed)
    h = Point.generator_mul(random_scalar(rng))
    x = random_scalar(rng)
    dealings = [deal(t, h, rng) for _ in range(n)]
    received = {i: (*dealing_for(d, x), d.commitments) for i, d in enumerate(dealings)}
    return x, h, dealings, received


def publics(dealings: Sequence[Any]) -> dict[int, tuple[Point, ...]]:
    return {i: feldman_commitments(d.f) for i, d in enumerate(dealings)}


def test_honest_dealings_pass_both_batched_checks() -> None:
    x, h, dealings, received = setting()
    verify_dealings(x, received, h, 4)
    verify_feldman_shares(x, {i: r[0] for i, r in received.items()}, publics(dealings), 4)


@pytest.mark.parametrize("culprit", [0, 4, 8])
@pytest.mark.parametrize("part", [0, 1])
def test_one_bad_pair_among_many_is_caught_and_named(culprit: int, part: int) -> None:
    x, h, _, received = setting()
    s1, s2, commitments = received[culprit]
    received[culprit] = ((s1 + 1) % N, s2, commitments) if part == 0 else (s1, (s2 + 1) % N, commitments)
    with pytest.raises(CheatingDealer, match="Pedersen commitments") as caught:
        verify_dealings(x, received, h, 4)
    assert caught.value.dealers == (culprit,)


def test_one_bad_commitment_is_caught_and_named() -> None:
    x, h, _, received = setting()
    s1, s2, commitments = received[3]
    received[3] = (s1, s2, (*commitments[:2], commitments[2] + Point.generator_mul(1), *commitments[3:]))
    with pytest.raises(CheatingDealer) as caught:
        verify_dealings(x, received, h, 4)
    assert caught.value.dealers == (3,)


@pytest.mark.parametrize("culprit", [0, 5, 8])
def test_one_bad_feldman_share_among_many_is_caught_and_named(culprit: int) -> None:
    x, _, dealings, received = setting()
    shares = {i: r[0] for i, r in received.items()}
    shares[culprit] = (shares[culprit] + 7) % N
    with pytest.raises(CheatingDealer, match="public coefficients") as caught:
        verify_feldman_shares(x, shares, publics(dealings), 4)
    assert caught.value.dealers == (culprit,)


def test_errors_that_cancel_in_a_plain_sum_do_not_pass_the_random_combination() -> None:
    """Dealers 2 and 6 shift their pairs by +d and -d: Σ s_i and every sum check still hold, each
    dealing is wrong. A combination with random weights misses it with probability 2^-128 at most;
    over many fresh draws it never does, and it names the first dealer that fails alone."""
    x, h, dealings, received = setting()
    d1, d2 = random_scalar(), random_scalar()
    for dealer, sign in ((2, 1), (6, -1)):
        s1, s2, c = received[dealer]
        received[dealer] = ((s1 + sign * d1) % N, (s2 + sign * d2) % N, c)
    assert sum(r[0] for r in received.values()) % N == sum(dealing_for(d, x)[0] for d in dealings) % N
    for seed in range(20):
        with pytest.raises(CheatingDealer) as caught:
            verify_dealings(x, received, h, 4, seeded(seed))
        assert caught.value.dealers == (2,)
    shares = {i: r[0] for i, r in received.items()}
    for seed in range(20):
        with pytest.raises(CheatingDealer) as caught:
            verify_feldman_shares(x, shares, publics(dealings), 4, seeded(seed))
        assert caught.value.dealers == (2,)


def test_all_equal_weights_would_let_cancelling_errors_through() -> None:
    """Why the weights are random: with every weight 1 (a rigged source of randomness whose draws
    are all the same) the batched check is the plain sum, and the cancelling errors pass."""
    x, _, dealings, received = setting()
    shares = {i: r[0] for i, r in received.items()}
    shares[1], shares[7] = (shares[1] + 5) % N, (shares[7] - 5) % N
    verify_feldman_shares(x, shares, publics(dealings), 4, lambda n: b"\x00" * (n - 1) + b"\x01")
    with pytest.raises(CheatingDealer):
        verify_feldman_shares(x, shares, publics(dealings), 4)


def test_wrong_counts_and_inputs_are_refused() -> None:
    x, h, dealings, received = setting()
    s1, s2, c = received[5]
    received[5] = (s1, s2, c[:-1])
    with pytest.raises(CheatingDealer, match="for threshold 4") as caught:
        verify_dealings(x, received, h, 4)
    assert caught.value.dealers == (5,)
    coefficients = publics(dealings)
    shares = {i: r[0] for i, r in received.items()}
    coefficients[2] = (*coefficients[2], coefficients[2][0])
    with pytest.raises(CheatingDealer) as caught:
        verify_feldman_shares(x, shares, coefficients, 4)
    assert caught.value.dealers == (2,)
    with pytest.raises(InvalidShare, match="same dealers"):
        verify_feldman_shares(x, {0: 1}, publics(dealings), 4)
    with pytest.raises(InvalidShare, match="no dealing"):
        verify_dealings(x, {}, h, 4)
    with pytest.raises(InvalidThreshold):
        verify_dealings(x, received, h, -1)
    with pytest.raises(InvalidScalar):
        verify_dealings(0, received, h, 4)


def test_batch_weights_are_non_zero_split_along_lambda_and_distinct() -> None:
    rng = seeded(3)
    weights = {batch_weight(rng) for _ in range(2000)}
    assert len(weights) == 2000 and 0 not in weights
    raw = seeded(4)(16)
    u, v = int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big")
    assert batch_weight(seeded(4)) == (u + LAMBDA * v) % N
    assert pow(LAMBDA, 3, N) == 1
    draws = iter([b"\x00" * 16, raw])
    assert batch_weight(lambda n: next(draws)) == (u + LAMBDA * v) % N  # a zero weight is drawn again
