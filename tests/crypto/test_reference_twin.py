"""curve.py's libsecp256k1-backed Point against the slow pure-Python twin in tests/crypto/reference.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocean_secret_store.crypto.curve import G, N, Point, ecdh_x, point_sum
from ocean_secret_store.exceptions import InvalidPoint
from tests.crypto import reference as ref

# Edge scalars first: hypothesis tries sampled_from's elements early, so n−1, 1 and 2 are always hit.
EDGE_SCALARS = [1, 2, 3, N - 1, N - 2, (N - 1) // 2, (N + 1) // 2]
scalars = st.one_of(st.sampled_from(EDGE_SCALARS), st.integers(1, N - 1))


def twin(point: Point) -> ref.Affine:
    return (point.x, point.y)


def point_of(k: int) -> Point:
    return Point.generator_mul(k)


def test_twin_is_secp256k1() -> None:
    assert ref.on_curve(ref.G)
    assert ref.mul(N, ref.G) is None
    assert ref.add(ref.G, ref.neg(ref.G)) is None
    assert twin(G) == ref.G


@given(scalars)
def test_generator_mul(k: int) -> None:
    assert twin(Point.generator_mul(k)) == ref.mul(k, ref.G)


@given(scalars, scalars)
def test_mul(a: int, k: int) -> None:
    assert twin(point_of(a) * k) == ref.mul(k, ref.mul(a, ref.G))
    assert k * point_of(a) == point_of(a) * k


@given(scalars, scalars)
def test_add_and_sub(a: int, b: int) -> None:
    p, q = point_of(a), point_of(b)
    expected_sum = ref.add(twin(p), twin(q))
    if expected_sum is None:
        with pytest.raises(InvalidPoint):
            p + q
    else:
        assert twin(p + q) == expected_sum
    expected_difference = ref.sub(twin(p), twin(q))
    if expected_difference is None:
        with pytest.raises(InvalidPoint):
            p - q
    else:
        assert twin(p - q) == expected_difference


@given(scalars)
def test_doubling_through_add(a: int) -> None:
    p = point_of(a)
    assert twin(p + p) == ref.mul(2, twin(p)) == ref.add(twin(p), twin(p))


@given(scalars)
def test_neg(a: int) -> None:
    p = point_of(a)
    negated = -p
    assert twin(negated) == ref.neg(twin(p))
    assert -negated == p
    assert (-p).to_bytes() == ref.to_bytes(ref.neg(twin(p)))


@given(scalars, scalars)
def test_ecdh_x(secret: int, a: int) -> None:
    p = point_of(a)
    assert ecdh_x(secret, p) == ref.ecdh_x(secret, twin(p))


@given(st.lists(scalars, min_size=1, max_size=6))
def test_point_sum(ks: list[int]) -> None:
    expected: ref.Affine = None
    for k in ks:
        expected = ref.add(expected, ref.mul(k, ref.G))
    points = [point_of(k) for k in ks]
    if expected is None:
        with pytest.raises(InvalidPoint):
            point_sum(points)
    else:
        assert twin(point_sum(points)) == expected


@given(st.binary(min_size=64, max_size=64))
def test_parsing_accepts_exactly_the_curve_points(data: bytes) -> None:
    x, y = int.from_bytes(data[:32], "big"), int.from_bytes(data[32:], "big")
    if ref.on_curve((x, y)):
        assert Point.from_bytes(data).to_bytes() == data
    else:
        with pytest.raises(InvalidPoint):
            Point.from_bytes(data)


@given(scalars)
def test_parsing_round_trips_twin_points(a: int) -> None:
    raw = ref.to_bytes(ref.mul(a, ref.G))
    assert Point.from_bytes(raw) == point_of(a)


# -- the point at infinity ----------------------------------------------------------------------


@given(scalars)
def test_p_plus_minus_p_is_infinity(a: int) -> None:
    p = point_of(a)
    assert ref.add(twin(p), twin(-p)) is None
    with pytest.raises(InvalidPoint):
        p + (-p)
    with pytest.raises(InvalidPoint):
        p - p
    with pytest.raises(InvalidPoint):
        point_sum([p, point_of(a + 1), -p, -point_of(a + 1)] if (a + 1) % N else [p, -p])


@pytest.mark.parametrize("k", [0, N, 2 * N])
def test_multiples_of_the_order_are_infinity(k: int) -> None:
    assert ref.mul(k, ref.G) is None
    with pytest.raises(InvalidPoint):
        Point.generator_mul(k)
    with pytest.raises(InvalidPoint):
        G * k


def test_empty_sum_is_infinity() -> None:
    with pytest.raises(InvalidPoint):
        point_sum([])
