"""Slow, independent pure-Python secp256k1 and Lagrange, to cross-check the crypto core (tests only).

Written from the curve's textbook definition (short Weierstrass ``y² = x³ + 7`` over ``F_p``)
and shares no code with the package: points are ``(x, y)`` int tuples and ``None`` is the
point at infinity, which this twin, unlike :class:`~ocean_secret_store.crypto.curve.Point`,
can represent.
"""

from __future__ import annotations

from typing import Final

#: Field prime, group order and generator of secp256k1 (SEC 2, §2.4.1).
P: Final = 2**256 - 2**32 - 977
N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
GX: Final = 0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798
GY: Final = 0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8

Affine = tuple[int, int] | None
_Jacobian = tuple[int, int, int]  # (X, Y, Z) with x = X/Z², y = Y/Z³; Z = 0 is infinity

G: Final[Affine] = (GX, GY)
_INFINITY: Final[_Jacobian] = (1, 1, 0)


def on_curve(point: Affine) -> bool:
    if point is None:
        return True
    x, y = point
    return 0 <= x < P and 0 <= y < P and (y * y - x * x * x - 7) % P == 0


def _to_jacobian(point: Affine) -> _Jacobian:
    return _INFINITY if point is None else (point[0], point[1], 1)


def _to_affine(point: _Jacobian) -> Affine:
    x, y, z = point
    if z % P == 0:
        return None
    z_inv = pow(z, -1, P)
    z_inv2 = z_inv * z_inv % P
    return x * z_inv2 % P, y * z_inv2 * z_inv % P


def _double(point: _Jacobian) -> _Jacobian:
    x, y, z = point
    if z == 0 or y == 0:
        return _INFINITY
    yy = y * y % P
    s = 4 * x * yy % P
    m = 3 * x * x % P  # a = 0 for secp256k1
    x3 = (m * m - 2 * s) % P
    y3 = (m * (s - x3) - 8 * yy * yy) % P
    z3 = 2 * y * z % P
    return x3, y3, z3


def _add(p1: _Jacobian, p2: _Jacobian) -> _Jacobian:
    x1, y1, z1 = p1
    x2, y2, z2 = p2
    if z1 == 0:
        return p2
    if z2 == 0:
        return p1
    z1z1, z2z2 = z1 * z1 % P, z2 * z2 % P
    u1, u2 = x1 * z2z2 % P, x2 * z1z1 % P
    s1, s2 = y1 * z2 * z2z2 % P, y2 * z1 * z1z1 % P
    if u1 == u2:
        return _double(p1) if s1 == s2 else _INFINITY
    h = (u2 - u1) % P
    r = (s2 - s1) % P
    hh = h * h % P
    hhh = h * hh % P
    v = u1 * hh % P
    x3 = (r * r - hhh - 2 * v) % P
    y3 = (r * (v - x3) - s1 * hhh) % P
    z3 = h * z1 * z2 % P
    return x3, y3, z3


def add(p1: Affine, p2: Affine) -> Affine:
    return _to_affine(_add(_to_jacobian(p1), _to_jacobian(p2)))


def neg(point: Affine) -> Affine:
    return None if point is None else (point[0], (-point[1]) % P)


def sub(p1: Affine, p2: Affine) -> Affine:
    return add(p1, neg(p2))


def mul(k: int, point: Affine) -> Affine:
    """``k·P`` by left-to-right double-and-add (not constant time: tests only)."""
    k %= N
    result = _INFINITY
    base = _to_jacobian(point)
    for bit in f"{k:b}" if k else "":
        result = _double(result)
        if bit == "1":
            result = _add(result, base)
    return _to_affine(result)


def ecdh_x(secret: int, point: Affine) -> bytes:
    """The 32-byte x coordinate of ``secret·point`` (raw ECDH)."""
    shared = mul(secret, point)
    if shared is None:
        raise ValueError("ECDH result at infinity")
    return shared[0].to_bytes(32, "big")


def to_bytes(point: Affine) -> bytes:
    if point is None:
        raise ValueError("the point at infinity has no 64-byte encoding")
    return point[0].to_bytes(32, "big") + point[1].to_bytes(32, "big")


def from_bytes(data: bytes) -> Affine:
    point = (int.from_bytes(data[:32], "big"), int.from_bytes(data[32:], "big"))
    if len(data) != 64 or not on_curve(point):
        raise ValueError("not a 64-byte curve point")
    return point


# -- reference scalar maths (naive, one inversion per term, standard Lagrange) ----------------


def interpolate_at_zero(points: list[tuple[int, int]]) -> int:
    """``f(0) mod n`` of the polynomial through ``(x_i, y_i)`` by textbook Lagrange interpolation."""
    total = 0
    for i, (x_i, y_i) in enumerate(points):
        term = y_i
        for j, (x_j, _) in enumerate(points):
            if j != i:
                term = term * x_j * pow(x_j - x_i, -1, N) % N
        total += term
    return total % N


#: The (t, n) pairs Parity's math tests run full DKG + encryption/decryption over
#: (key_server_cluster/math.rs, protocol.md §7); its Schnorr tests add (0, 1).
PARITY_GRID: Final = (
    (0, 2), (1, 2), (1, 3), (2, 3), (1, 4), (2, 4), (3, 4), (1, 5), (2, 5), (3, 5), (4, 5),
    *((t, 10) for t in range(1, 10)),
)
PARITY_SCHNORR_GRID: Final = ((0, 1), *PARITY_GRID)
