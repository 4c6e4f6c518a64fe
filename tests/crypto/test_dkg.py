"""ECDKG maths: the Parity (t, n) grid checked against the joint secret, VSS checks, zero-secret dealings."""

from __future__ import annotations

import random
from itertools import combinations
from typing import Any

import pytest

from ocean_secret_store.crypto.curve import G, N, Point, random_scalar
from ocean_secret_store.crypto.dkg import (
    LocalKey,
    combine_secret_share,
    contribute_derived_point,
    deal,
    dealing_for,
    joint_public,
    run_local_dkg,
    verify_dealing,
)
from ocean_secret_store.crypto.sharing import evaluate, lagrange_coefficients_at_zero
from ocean_secret_store.exceptions import InvalidPoint, InvalidScalar, InvalidShare, InvalidThreshold
from tests.crypto.reference import PARITY_GRID, interpolate_at_zero


def seeded(seed: int) -> Any:
    return random.Random(seed).randbytes


def some_h() -> Point:
    return Point.generator_mul(random_scalar())


def joint_secret(key: LocalKey) -> int:
    """The joint secret ``y`` from the first ``t+1`` shares, with the package's Lagrange coefficients.

    No node ever forms ``y``; tests do, to check ``y·G == Y`` as Parity's math tests do.
    """
    members = list(key.shares)[: key.threshold + 1]
    coefficients = lagrange_coefficients_at_zero([key.id_numbers[m] for m in members])
    return sum(c * key.shares[m] for c, m in zip(coefficients, members, strict=True)) % N


@pytest.mark.parametrize(("t", "n"), PARITY_GRID)
def test_parity_grid_dkg(t: int, n: int) -> None:
    key = run_local_dkg(t, n)
    assert key.threshold == t
    assert list(key.shares) == list(key.id_numbers) == list(range(n))
    assert len(set(key.id_numbers.values())) == n
    points = [(key.id_numbers[i], key.shares[i]) for i in range(n)]
    # Cross-check as Parity's math tests do: the joint secret, interpolated independently, is Y's.
    y = interpolate_at_zero(points[: t + 1])
    assert y * G == key.public
    assert joint_secret(key) == y
    # Every t+1 of the shares lie on the same degree-t polynomial (a few subsets suffice for n = 10).
    for subset in list(combinations(points, t + 1))[:6]:
        assert interpolate_at_zero(list(subset)) == y
    assert interpolate_at_zero(points) == y  # n > t+1 points still describe the degree-t polynomial
    if t > 0:
        assert interpolate_at_zero(points[:t]) != y


def test_run_local_dkg_is_reproducible_with_an_injected_rng() -> None:
    first, second = run_local_dkg(2, 4, seeded(7)), run_local_dkg(2, 4, seeded(7))
    assert first.public == second.public
    assert first.shares == second.shares
    assert run_local_dkg(2, 4, seeded(8)).public != first.public


def test_unverified_run_gives_a_consistent_key() -> None:
    key = run_local_dkg(3, 6, verify=False)
    assert joint_secret(key) * G == key.public


@pytest.mark.parametrize(("t", "n"), [(2, 2), (3, 2), (-1, 3), (0, 0)])
def test_threshold_must_be_below_the_number_of_nodes(t: int, n: int) -> None:
    with pytest.raises(InvalidThreshold):
        run_local_dkg(t, n)


def test_derived_point_contribution_multiplies_by_a_fresh_scalar() -> None:
    h = some_h()
    stream = random.Random(3).randbytes
    expected_k = int.from_bytes(random.Random(3).randbytes(32), "big")
    assert 0 < expected_k < N  # so random_scalar accepts the first draw
    assert contribute_derived_point(h, stream) == h * expected_k
    assert contribute_derived_point(h) != contribute_derived_point(h)


# -- one node's steps ---------------------------------------------------------------------------


def test_dealing_verifies_at_every_receiver() -> None:
    t, h = 2, some_h()
    dealing = deal(t, h)
    assert len(dealing.f) == len(dealing.g) == len(dealing.commitments) == t + 1
    assert dealing.threshold == t and not dealing.is_zero
    assert dealing.secret_coeff == dealing.f[0]
    assert dealing.public_share == dealing.f[0] * G
    for _ in range(4):
        x = random_scalar()
        secret1, secret2 = dealing_for(dealing, x)
        assert (secret1, secret2) == (evaluate(dealing.f, x), evaluate(dealing.g, x))
        verify_dealing(x, secret1, secret2, dealing.commitments, h, t)


def test_tampered_dealings_are_refused() -> None:
    t, h, x = 3, some_h(), random_scalar()
    dealing = deal(t, h)
    secret1, secret2 = dealing_for(dealing, x)
    with pytest.raises(InvalidShare):
        verify_dealing(x, (secret1 + 1) % N, secret2, dealing.commitments, h, t)
    with pytest.raises(InvalidShare):
        verify_dealing(x, secret1, (secret2 + 1) % N, dealing.commitments, h, t)
    for k in range(t + 1):
        commitments = list(dealing.commitments)
        commitments[k] = commitments[k] + G
        with pytest.raises(InvalidShare):
            verify_dealing(x, secret1, secret2, commitments, h, t)
    # Another dealer's commitments, or the pair meant for another node.
    with pytest.raises(InvalidShare):
        verify_dealing(x, secret1, secret2, deal(t, h).commitments, h, t)
    with pytest.raises(InvalidShare):
        verify_dealing(x, *dealing_for(dealing, (x + 1) % N), dealing.commitments, h, t)


def test_commitments_of_the_wrong_length_are_refused() -> None:
    t, h, x = 2, some_h(), random_scalar()
    dealing = deal(t, h)
    secret1, secret2 = dealing_for(dealing, x)
    for commitments in (dealing.commitments[:-1], (*dealing.commitments, G), ()):
        with pytest.raises(InvalidShare, match="commitments"):
            verify_dealing(x, secret1, secret2, commitments, h, t)
    # Right length for another threshold is still the wrong length for this one.
    with pytest.raises(InvalidShare):
        verify_dealing(x, secret1, secret2, dealing.commitments, h, t + 1)


def test_bad_thresholds_and_id_numbers() -> None:
    h = some_h()
    with pytest.raises(InvalidThreshold):
        deal(-1, h)
    with pytest.raises(InvalidThreshold):
        verify_dealing(1, 1, 1, (), h, -1)
    dealing = deal(1, h)
    for x in (0, N):
        with pytest.raises(InvalidScalar):
            dealing_for(dealing, x)


def test_zero_secret_dealings_share_zero() -> None:
    t, n, h = 2, 5, some_h()
    xs = [random_scalar() for _ in range(n)]
    dealings = [deal(t, h, is_zero=True) for _ in range(n)]
    for dealing in dealings:
        assert dealing.is_zero and dealing.secret_coeff == 0
        assert dealing.commitments == () and dealing.public_share is None
    shares = []
    for x in xs:
        received = [dealing_for(d, x) for d in dealings]
        for secret1, secret2 in received:
            verify_dealing(x, secret1, secret2, (), h, t, is_zero=True)  # Parity: nothing to check
        shares.append(combine_secret_share(s1 for s1, _ in received))
    assert all(0 < s < N for s in shares)  # the shares are random, their secret is zero
    for subset in combinations(range(n), t + 1):
        assert interpolate_at_zero([(xs[i], shares[i]) for i in subset]) == 0


def test_zero_secret_dealing_with_commitments_is_checked() -> None:
    # A zero-secret dealing carries no publics in Parity; if one is given it must still match.
    from ocean_secret_store.crypto.sharing import pedersen_commitments

    t, h, x = 1, some_h(), random_scalar()
    dealing = deal(t, h, is_zero=True)
    commitments = pedersen_commitments(dealing.f, dealing.g, h)
    secret1, secret2 = dealing_for(dealing, x)
    verify_dealing(x, secret1, secret2, commitments, h, t, is_zero=True)
    with pytest.raises(InvalidShare):
        verify_dealing(x, secret1 + 1, secret2, commitments, h, t, is_zero=True)
    with pytest.raises(InvalidShare):
        verify_dealing(x, secret1, secret2, (), h, t)  # not announced as zero-secret: publics required


def test_combination_helpers() -> None:
    assert combine_secret_share([N - 1, 2]) == 1
    with pytest.raises(InvalidThreshold):
        combine_secret_share([])
    assert joint_public([G, G, G]) == 3 * G
    with pytest.raises(InvalidPoint):
        joint_public([])


def test_secrets_stay_out_of_reprs() -> None:
    dealing = deal(2, some_h())
    key = run_local_dkg(1, 3)
    text = repr(dealing) + str(dealing) + repr(key) + str(key)
    for value in (*dealing.f, *dealing.g, *key.shares.values(), joint_secret(key)):
        assert str(value) not in text
        assert f"{value:x}" not in text
        assert f"{value:064x}" not in text
    assert "threshold=2" in repr(dealing)
    # Dealings compare by identity, never by (timing-leaky) value comparison of their secrets.
    assert dealing == dealing and dealing != deal(2, some_h())  # noqa: PLR0124 -- equality is identity
