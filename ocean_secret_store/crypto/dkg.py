"""ECDKG maths (Pedersen-VSS variant, protocol.md §2.5) as pure per-node steps for a sans-I/O session.

One node's part of a key generation, in order:

1. :func:`contribute_derived_point` — its turn in deriving the second generator ``H``;
2. :func:`deal` — random ``f_i``, ``g_i`` of degree ``t`` and the commitments
   ``C_ik = a_ik·G + b_ik·H``; :func:`dealing_for` gives the pair ``(f_i(x_j), g_i(x_j))``
   sent to node ``j``;
3. :func:`verify_dealing` — check every received pair against its dealer's commitments;
4. :func:`combine_secret_share` — its share ``s_j = Σ_i f_i(x_j)``;
5. :func:`joint_public` — ``Y = Σ_i a_i0·G`` from everybody's ``public_share``.

:func:`run_local_dkg` runs the whole protocol for all nodes in one process (tests, benchmarks,
demo); the joint secret is never formed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..exceptions import InvalidScalar, InvalidShare, InvalidThreshold
from .curve import N, Point, Rng, point_sum, random_scalar
from .sharing import evaluate, pedersen_commitments, random_polynomial, verify_pedersen_share

__all__ = [
    "Dealing",
    "LocalKey",
    "combine_secret_share",
    "contribute_derived_point",
    "deal",
    "dealing_for",
    "joint_public",
    "run_local_dkg",
    "verify_dealing",
]


def contribute_derived_point(H: Point, rng: Rng | None = None) -> Point:
    """One node's step of the derived point: ``k·H`` for a fresh random ``k`` (§2.5 step 1)."""
    return H * random_scalar(rng)


@dataclass(frozen=True, eq=False, repr=False, slots=True)
class Dealing:
    """One node's contribution to a key generation (secret: never logged, compared by identity).

    ``f`` and ``g`` are the coefficient tuples ``(a_0..a_t)``, ``(b_0..b_t)``;
    ``commitments`` the Pedersen publics ``C_k`` (empty for a zero-secret dealing, as in
    Parity); ``public_share`` is ``a_0·G`` (None for a zero-secret dealing, whose ``a_0·G`` is
    the point at infinity).
    """

    f: tuple[int, ...]
    g: tuple[int, ...]
    commitments: tuple[Point, ...]
    public_share: Point | None

    @property
    def secret_coeff(self) -> int:
        """``a_0``, this node's additive part of the joint secret (Parity's ``secret_coeff``)."""
        return self.f[0]

    @property
    def threshold(self) -> int:
        return len(self.f) - 1

    @property
    def is_zero(self) -> bool:
        return self.public_share is None

    def __repr__(self) -> str:
        return (
            f"Dealing(threshold={self.threshold}, is_zero={self.is_zero}, "
            f"commitments={len(self.commitments)})"
        )


def deal(threshold: int, H: Point, rng: Rng | None = None, is_zero: bool = False) -> Dealing:
    """Pick ``f``, ``g`` of degree ``threshold`` and commit to them (§2.5 step 2).

    For a zero-secret dealing ``a_0 = 0`` and no commitments are made (Parity skips them).

    :raises InvalidThreshold: for a negative threshold.
    """
    f = random_polynomial(threshold, rng, constant=0 if is_zero else None)
    g = random_polynomial(threshold, rng)
    if is_zero:
        return Dealing(f, g, (), None)
    return Dealing(f, g, pedersen_commitments(f, g, H), Point.generator_mul(f[0]))


def dealing_for(dealing: Dealing, x_j: int) -> tuple[int, int]:
    """``(secret1, secret2) = (f(x_j), g(x_j))``, what the dealer sends to the node with id number ``x_j``.

    :raises InvalidScalar: for an id number outside ``1 <= x < n``.
    """
    if not 0 < x_j < N:
        raise InvalidScalar("an id number must satisfy 1 <= x < n")
    return evaluate(dealing.f, x_j), evaluate(dealing.g, x_j)


def verify_dealing(
    x_self: int,
    secret1: int,
    secret2: int,
    commitments: Sequence[Point],
    H: Point,
    threshold: int,
    *,
    is_zero: bool = False,
) -> None:
    """Check a received pair against its dealer's commitments (§2.5 step 3).

    A zero-secret dealing carries no commitments and is accepted unchecked, as in Parity; if
    it does carry some they are checked like any other.

    :raises InvalidShare: for commitments not of length ``threshold + 1`` or a pair that does
        not match them.
    :raises InvalidThreshold: for a negative threshold.
    """
    if threshold < 0:
        raise InvalidThreshold(f"a threshold must be >= 0, got {threshold}")
    if is_zero and not commitments:
        return
    if len(commitments) != threshold + 1:
        raise InvalidShare(
            f"a dealing for threshold {threshold} carries {threshold + 1} commitments, got {len(commitments)}"
        )
    verify_pedersen_share(x_self, secret1, secret2, commitments, H)


def combine_secret_share(received_secret1s: Iterable[int]) -> int:
    """This node's share ``s_j = Σ_i f_i(x_j) mod n`` over every dealer's ``secret1`` (its own included).

    :raises InvalidThreshold: if there is no dealing at all.
    """
    values = list(received_secret1s)
    if not values:
        raise InvalidThreshold("a secret share needs at least one dealing")
    return sum(values) % N


def joint_public(public_shares: Iterable[Point]) -> Point:
    """The server key ``Y = Σ_i a_i0·G`` (§2.5 step 5).

    :raises InvalidPoint: if there is no public share or the sum is the point at infinity.
    """
    return point_sum(public_shares)


# -- the whole protocol in one process --------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False, slots=True)
class LocalKey:
    """The outcome of :func:`run_local_dkg`: every node's id number and share, and ``Y``.

    Nodes are named ``0 .. n-1``; ``id_numbers[node]`` is its evaluation point ``x`` and
    ``shares[node]`` its secret share ``s``.
    """

    threshold: int
    id_numbers: Mapping[int, int]
    shares: Mapping[int, int]
    public: Point
    derived_point: Point

    def __repr__(self) -> str:
        return f"LocalKey(threshold={self.threshold}, nodes={len(self.shares)}, public={self.public!r})"


def _distinct_id_numbers(n: int, rng: Rng | None) -> list[int]:
    xs: list[int] = []
    while len(xs) < n:
        x = random_scalar(rng)
        if x not in xs:
            xs.append(x)
    return xs


def run_local_dkg(threshold: int, n: int, rng: Rng | None = None, *, verify: bool = True) -> LocalKey:
    """Simulate a full key generation among ``n`` nodes with threshold ``threshold`` in-process.

    Every step is the per-node function a real session calls; with ``verify`` (the default)
    every node checks every dealing it receives, which is ``n²`` Pedersen verifications —
    turn it off only where the dealings are checked elsewhere and speed matters.

    :raises InvalidThreshold: unless ``0 <= threshold < n``.
    """
    if not 0 <= threshold < n:
        raise InvalidThreshold(f"a threshold must satisfy 0 <= t < n, got t = {threshold} for n = {n}")
    nodes = range(n)
    xs = _distinct_id_numbers(n, rng)

    # Derived point: the master starts, every other node in turn multiplies, the master finishes.
    derived = Point.generator_mul(random_scalar(rng))
    for _ in nodes[1:]:
        derived = contribute_derived_point(derived, rng)
    derived = contribute_derived_point(derived, rng)

    dealings = [deal(threshold, derived, rng) for _ in nodes]
    shares: dict[int, int] = {}
    for j in nodes:
        received = [dealing_for(dealing, xs[j]) for dealing in dealings]
        if verify:
            for dealing, (secret1, secret2) in zip(dealings, received, strict=True):
                verify_dealing(xs[j], secret1, secret2, dealing.commitments, derived, threshold)
        shares[j] = combine_secret_share(secret1 for secret1, _ in received)
    public = joint_public(d.public_share for d in dealings if d.public_share is not None)
    return LocalKey(threshold, dict(zip(nodes, xs, strict=True)), shares, public, derived)

