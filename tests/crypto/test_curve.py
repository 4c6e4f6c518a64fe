"""Point and Scalar value types: strict parsing, group laws against a slow pure-Python twin, opaque secrets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocean_secret_store.crypto.curve import (
    G,
    N,
    P,
    Point,
    Scalar,
    ecdh_x,
    point_sum,
    private_key,
    random_scalar,
    scalar_bytes,
    to_scalar,
)
from ocean_secret_store.exceptions import CryptoError, InvalidPoint, InvalidScalar, SecretStoreError

scalars = st.integers(min_value=1, max_value=N - 1)

GX = 0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798
GY = 0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8


# -- slow reference twin (tests only): affine secp256k1 arithmetic on Python ints -------------

Affine = tuple[int, int] | None


def ref_add(a: Affine, b: Affine) -> Affine:
    if a is None:
        return b
    if b is None:
        return a
    if a[0] == b[0] and (a[1] + b[1]) % P == 0:
        return None
    doubling = a == b
    numerator, denominator = (3 * a[0] * a[0], 2 * a[1]) if doubling else (b[1] - a[1], b[0] - a[0])
    slope = numerator * pow(denominator, -1, P) % P
    x = (slope * slope - a[0] - b[0]) % P
    return x, (slope * (a[0] - x) - a[1]) % P


def ref_mul(k: int, a: Affine) -> Affine:
    result: Affine = None
    while k:
        if k & 1:
            result = ref_add(result, a)
        a = ref_add(a, a)
        k >>= 1
    return result


def as_affine(p: Point) -> Affine:
    return p.x, p.y


# -- parsing -----------------------------------------------------------------------------------


def test_generator_coordinates() -> None:
    assert (G.x, G.y) == (GX, GY)
    assert G.to_bytes() == GX.to_bytes(32, "big") + GY.to_bytes(32, "big")


@pytest.mark.parametrize("length", [0, 1, 32, 33, 63, 65, 128])
def test_point_wrong_length(length: int) -> None:
    with pytest.raises(InvalidPoint, match=f"64 bytes.*got {length}"):
        Point.from_bytes(bytes(length))


def test_point_not_on_curve() -> None:
    with pytest.raises(InvalidPoint, match="not a point on secp256k1"):
        Point.from_bytes((1).to_bytes(32, "big") + (1).to_bytes(32, "big"))
    # G with a flipped last bit of y is off the curve.
    bad = bytearray(G.to_bytes())
    bad[-1] ^= 1
    with pytest.raises(InvalidPoint):
        Point.from_bytes(bytes(bad))


def test_point_at_infinity_encoding_is_rejected() -> None:
    with pytest.raises(InvalidPoint):
        Point.from_bytes(bytes(64))


def test_point_coordinates_outside_the_field() -> None:
    with pytest.raises(InvalidPoint, match="field elements"):
        Point.from_xy(GX + P, GY)
    with pytest.raises(InvalidPoint):
        Point.from_xy(-1, GY)


def test_sec1_round_trip_and_garbage() -> None:
    assert Point.from_sec1(G.to_sec1(compressed=True)) == G
    assert Point.from_sec1(G.to_sec1()) == G
    with pytest.raises(InvalidPoint):
        Point.from_sec1(b"\x05" + G.to_bytes())


@given(scalars)
def test_bytes_round_trip(k: int) -> None:
    p = Point.generator_mul(k)
    assert Point.from_bytes(p.to_bytes()) == p
    assert hash(Point.from_bytes(p.to_bytes())) == hash(p)
    assert Point.from_xy(p.x, p.y) == p


# -- group laws --------------------------------------------------------------------------------


@given(scalars)
def test_generator_mul_matches_reference(k: int) -> None:
    assert as_affine(Point.generator_mul(k)) == ref_mul(k, (GX, GY))


@given(scalars, scalars)
def test_addition_matches_reference(a: int, b: int) -> None:
    pa, pb = Point.generator_mul(a), Point.generator_mul(b)
    if (a + b) % N == 0:
        with pytest.raises(InvalidPoint):
            pa + pb
        return
    assert as_affine(pa + pb) == ref_add(as_affine(pa), as_affine(pb))
    assert pa + pb == Point.generator_mul(a + b)


@given(scalars, scalars)
def test_scalar_mul_composes(a: int, b: int) -> None:
    assert b * Point.generator_mul(a) == Point.generator_mul(a * b)
    assert Point.generator_mul(a) * b == Point.generator_mul(a * b)


@given(scalars)
def test_negation(k: int) -> None:
    p = Point.generator_mul(k)
    assert (-p).x == p.x and (-p).y == P - p.y
    negated = -p
    assert negated == Point.generator_mul(N - k)
    assert -negated == p


@given(scalars, scalars)
def test_subtraction(a: int, b: int) -> None:
    if a == b:
        return
    assert Point.generator_mul(a) - Point.generator_mul(b) == Point.generator_mul(a - b)


def test_point_at_infinity_results_raise() -> None:
    p = Point.generator_mul(7)
    with pytest.raises(InvalidPoint, match="infinity"):
        p + (-p)
    with pytest.raises(InvalidPoint, match="infinity"):
        p - p
    with pytest.raises(InvalidPoint, match="infinity"):
        0 * p
    with pytest.raises(InvalidPoint, match="infinity"):
        N * p
    with pytest.raises(InvalidPoint, match="infinity"):
        Point.generator_mul(0)
    with pytest.raises(InvalidPoint, match="infinity"):
        Point.generator_mul(N)
    with pytest.raises(InvalidPoint, match="infinity"):
        point_sum([])
    with pytest.raises(InvalidPoint, match="infinity"):
        point_sum([p, G, -p, -G])


def test_point_sum() -> None:
    points = [Point.generator_mul(k) for k in (1, 2, 3, 4)]
    assert point_sum(points) == Point.generator_mul(10)
    assert point_sum(points[:1]) == points[0]


def test_point_operations_reject_other_types() -> None:
    with pytest.raises(TypeError):
        G + 1  # type: ignore[operator]  # bad operand on purpose
    with pytest.raises(TypeError):
        G * 1.5  # type: ignore[operator]  # bad operand on purpose


# -- scalars -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, N, N + 1, 2**256 - 1])
def test_scalar_from_bytes_out_of_range(value: int) -> None:
    with pytest.raises(InvalidScalar) as info:
        Scalar.from_bytes(value.to_bytes(32, "big"))
    # The message says what is wrong, never which value it was.
    assert value.to_bytes(32, "big").hex() not in str(info.value)
    assert format(value, "x") not in str(info.value)


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_scalar_wrong_length(length: int) -> None:
    with pytest.raises(InvalidScalar, match=f"32 bytes, got {length}"):
        Scalar.from_bytes(b"\x01" * length)


@pytest.mark.parametrize("value", [0, N, -1])
def test_scalar_constructor_range(value: int) -> None:
    with pytest.raises(InvalidScalar):
        Scalar(value)


def test_scalar_edges_accepted() -> None:
    assert Scalar.from_bytes((1).to_bytes(32, "big")).value == 1
    assert int(Scalar.from_bytes((N - 1).to_bytes(32, "big"))) == N - 1
    assert Scalar(N - 1).public() == -G


def test_scalar_repr_and_str_are_opaque() -> None:
    value = 0x1234567890ABCDEF1234567890ABCDEF
    s = Scalar(value)
    for text in (repr(s), str(s), f"{s!r}", repr([s])):
        assert "secret" in text
        assert format(value, "x") not in text.lower()
        assert str(value) not in text


def test_scalar_equality_and_hash() -> None:
    assert Scalar(5) == Scalar.from_bytes((5).to_bytes(32, "big"))
    assert Scalar(5) != Scalar(6)
    assert hash(Scalar(5)) == hash(Scalar(5))
    assert Scalar(5).to_bytes() == (5).to_bytes(32, "big")


def test_to_scalar() -> None:
    assert to_scalar((N + 5).to_bytes(32, "big")) == 5
    with pytest.raises(InvalidScalar, match="zero"):
        to_scalar(N.to_bytes(32, "big"))
    with pytest.raises(InvalidScalar, match="zero"):
        to_scalar(bytes(32))
    with pytest.raises(InvalidScalar, match="32 bytes"):
        to_scalar(bytes(31))


def test_scalar_bytes_reduces() -> None:
    assert scalar_bytes(N + 1) == (1).to_bytes(32, "big")
    assert scalar_bytes(-1) == (N - 1).to_bytes(32, "big")


def test_random_scalar_rejection_sampling_with_injected_rng() -> None:
    draws = [bytes(32), N.to_bytes(32, "big"), (2**256 - 1).to_bytes(32, "big"), (42).to_bytes(32, "big")]
    calls: list[int] = []

    def rng(n: int) -> bytes:
        calls.append(n)
        return draws.pop(0)

    assert random_scalar(rng) == 42
    assert calls == [32, 32, 32, 32]


def test_private_key_inputs() -> None:
    expected = private_key(7).public_key.format(compressed=False)[1:]
    assert expected == Point.generator_mul(7).to_bytes()
    assert private_key(Scalar(7)).secret == private_key((7).to_bytes(32, "big")).secret
    for bad in (0, N, bytes(32), N.to_bytes(32, "big"), b"\x07" * 31):
        with pytest.raises(InvalidScalar):
            private_key(bad)


def test_ecdh_x_is_symmetric() -> None:
    a, b = 0xA11CE, 0xB0B
    assert ecdh_x(a, Point.generator_mul(b)) == ecdh_x(b, Point.generator_mul(a))
    assert ecdh_x(a, Point.generator_mul(b)) == Point.generator_mul(a * b).x_bytes


def test_ecdh_with_zero_scalar_is_a_typed_error() -> None:
    with pytest.raises(InvalidPoint):
        ecdh_x(0, G)


def test_one_exception_tree() -> None:
    for cls in (InvalidPoint, InvalidScalar):
        assert issubclass(cls, CryptoError)
        assert issubclass(cls, SecretStoreError)
        assert issubclass(cls, ValueError)
