"""ECDKG maths (Pedersen-VSS variant, protocol.md §2.5) as pure per-node steps for a sans-I/O session.

One node's part of a key generation, in order:

1. :func:`contribute_derived_point` — its turn in deriving the second generator ``H``;
2. :func:`deal` — random ``f_i``, ``g_i`` of degree ``t`` and the commitments
   ``C_ik = a_ik·G + b_ik·H``; :func:`dealing_for` gives the pair ``(f_i(x_j), g_i(x_j))``
   sent to node ``j``;
3. :func:`verify_dealings` — check every received pair against its dealer's commitments, all
   dealers at once (:func:`verify_dealing` checks one); after the Feldman round
   :func:`verify_feldman_shares` checks every ``f_i(x_j)`` against ``a_ik·G`` the same way;
4. :func:`combine_secret_share` — its share ``s_j = Σ_i f_i(x_j)``;
5. :func:`joint_public` — ``Y = Σ_i a_i0·G`` from everybody's ``public_share``.

:func:`run_local_dkg` runs the whole protocol for all nodes in one process (tests, benchmarks,
demo); the joint secret is never formed.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from coincurve import PublicKey

from ..exceptions import InvalidPoint, InvalidScalar, InvalidShare, InvalidThreshold
from .curve import N, Point, Rng, default_rng, point_sum, random_scalar
from .resharing import CheatingDealer, dealer_label
from .sharing import (
    evaluate,
    key_sum,
    pedersen_commitments,
    random_polynomial,
    same_key,
    verify_feldman_share,
    verify_pedersen_share,
)

D = TypeVar("D", bound=Hashable)

__all__ = [
    "Dealing",
    "LocalKey",
    "combine_secret_share",
    "contribute_derived_point",
    "deal",
    "deal_with_publics",
    "dealing_for",
    "joint_public",
    "run_local_dkg",
    "verify_dealing",
    "verify_dealing_batches",
    "verify_dealings",
    "verify_feldman_share_batches",
    "verify_feldman_shares",
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


def deal_with_publics(threshold: int, H: Point, rng: Rng | None = None) -> tuple[Dealing, tuple[Point, ...]]:
    """:func:`deal` and the dealing's Feldman commitments ``A_k = a_k·G`` at once: each ``A_k`` is
    computed once and ``C_k = A_k + b_k·H`` from it (what :func:`deal` and
    ``sharing.feldman_commitments(dealing.f)`` give, for two generator multiplications less a
    coefficient).

    :raises InvalidThreshold: for a negative threshold.
    :raises InvalidPoint: if a commitment would be the point at infinity.
    """
    f = random_polynomial(threshold, rng)
    g = random_polynomial(threshold, rng)
    publics = tuple(Point.generator_mul(a) for a in f)
    h_key = H.coincurve
    commitments = []
    for a_point, b in zip(publics, g, strict=True):
        key = key_sum([a_point.coincurve, *([h_key.multiply((b % N).to_bytes(32, "big"))] if b % N else [])])
        if key is None:
            raise InvalidPoint("a Pedersen commitment is the point at infinity")
        commitments.append(Point(key))
    return Dealing(f, g, tuple(commitments), publics[0]), publics


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


# -- batched checks: one random linear combination over every dealer --------------------------

#: ``λ``, the cube root of unity mod n behind secp256k1's endomorphism (``λ·(x, y) = (β·x, y)``).
_LAMBDA: Final = 0x5363AD4CC05C30E0A5261C028812645A122E22EA20816678DF02967C1B23BD72


def batch_weight(rng: Rng | None = None) -> int:
    """A random non-zero weight ``w = u + λ·v mod n`` with ``0 <= u, v < 2^64``.

    There are ``2^128 - 1`` such weights, all distinct (two would differ by ``u' + λ·v' ≡ 0`` with
    ``|u'|, |v'| < 2^64``, but the shortest such vectors are about ``2^128`` long), so a random
    linear combination with them lets a non-zero error through with probability at most
    ``2^-128``. libsecp256k1 splits a scalar along ``λ`` before multiplying (GLV), and this one
    splits into two 64-bit halves: a multiplication by it costs about 60 % of a full-width one.
    """
    draw = rng or default_rng
    while True:
        raw = draw(16)
        u, v = int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big")
        if u or v:
            return (u + _LAMBDA * v) % N


def _weighted_vectors_at(x: int, weights: Sequence[int], vectors: Sequence[Sequence[Point]]) -> PublicKey | None:
    """``Σ_k x^k·(Σ_i w_i·V_ik)``: one cheap multiplication per point, ``t`` full ones."""
    terms: list[PublicKey] = []
    raw_weights = [w.to_bytes(32, "big") for w in weights]
    power = 1
    for k in range(len(vectors[0])):
        column = key_sum([v[k].coincurve.multiply(w) for w, v in zip(raw_weights, vectors, strict=True)])
        if column is not None:
            terms.append(column if power == 1 else column.multiply(power.to_bytes(32, "big")))
        power = power * x % N
    return key_sum(terms)


def _g_plus_h(s_g: int, s_h: int, h: Point | None) -> PublicKey | None:
    terms = []
    if s_g % N:
        terms.append(PublicKey.from_valid_secret((s_g % N).to_bytes(32, "big")))
    if h is not None and s_h % N:
        terms.append(h.coincurve.multiply((s_h % N).to_bytes(32, "big")))
    return key_sum(terms)


def _check_batch_inputs(x_self: int, threshold: int, vectors: Mapping[D, Sequence[Point]], what: str) -> None:
    if threshold < 0:
        raise InvalidThreshold(f"a threshold must be >= 0, got {threshold}")
    if not 0 < x_self < N:
        raise InvalidScalar("an id number must satisfy 1 <= x < n")
    if not vectors:
        raise InvalidShare("there is no dealing to check")
    for dealer, vector in vectors.items():
        if len(vector) != threshold + 1:
            raise CheatingDealer(
                f"dealer {dealer_label(dealer)} sent {len(vector)} {what} for threshold {threshold}, "
                f"not {threshold + 1}",
                [dealer],
            )


def verify_dealings(
    x_self: int,
    dealings: Mapping[D, tuple[int, int, Sequence[Point]]],
    H: Point,
    threshold: int,
    rng: Rng | None = None,
) -> None:
    """Check every dealer's pair against its Pedersen commitments at once (§2.5 step 3).

    With fresh random weights ``w_i`` (:func:`batch_weight`) it checks
    ``(Σ w_i·s1_i)·G + (Σ w_i·s2_i)·H == Σ_k x^k·(Σ_i w_i·C_ik)``: one cheap multiplication per
    commitment instead of one full one, and ``t + 2`` full ones. It passes whenever every pair
    matches (:func:`verify_dealing`); when any does not it fails except with probability
    ``2^-128``, errors of several dealers that cancel included, and then every dealing is
    checked alone to name the first culprit.

    :param dealings: dealer -> ``(secret1, secret2, commitments)``.
    :raises CheatingDealer: naming the dealer whose pair does not match its commitments or who
        sent the wrong number of commitments.
    """
    _check_batch_inputs(x_self, threshold, {d: c for d, (_, _, c) in dealings.items()}, "commitments")
    dealers = list(dealings)
    weights = [batch_weight(rng) for _ in dealers]
    s_g = sum(w * dealings[d][0] for w, d in zip(weights, dealers, strict=True))
    s_h = sum(w * dealings[d][1] for w, d in zip(weights, dealers, strict=True))
    rhs = _weighted_vectors_at(x_self, weights, [dealings[d][2] for d in dealers])
    if same_key(_g_plus_h(s_g, s_h, H), rhs):
        return
    for dealer in dealers:
        secret1, secret2, commitments = dealings[dealer]
        try:
            verify_pedersen_share(x_self, secret1, secret2, commitments, H)
        except InvalidShare as exc:
            raise CheatingDealer(
                f"the dealing of {dealer_label(dealer)} does not match its Pedersen commitments", [dealer]
            ) from exc
    raise CheatingDealer("the dealings do not match their commitments", dealers)  # unreachable: see above


def verify_feldman_shares(
    x_self: int,
    shares: Mapping[D, int],
    coefficients: Mapping[D, Sequence[Point]],
    threshold: int,
    rng: Rng | None = None,
) -> None:
    """Check every dealer's ``f_i(x_self)`` against its Feldman commitments ``a_ik·G`` at once.

    The same random linear combination as :func:`verify_dealings`:
    ``(Σ w_i·s_i)·G == Σ_k x^k·(Σ_i w_i·A_ik)``, then one dealer at a time to name the culprit.

    :raises CheatingDealer: naming the dealer whose share does not match its commitments or who
        sent the wrong number of them.
    :raises InvalidShare: unless ``shares`` and ``coefficients`` have the same dealers.
    """
    if set(shares) != set(coefficients):
        raise InvalidShare("shares and public coefficients must come from the same dealers")
    _check_batch_inputs(x_self, threshold, coefficients, "public coefficients")
    dealers = list(coefficients)
    weights = [batch_weight(rng) for _ in dealers]
    s_g = sum(w * shares[d] for w, d in zip(weights, dealers, strict=True))
    rhs = _weighted_vectors_at(x_self, weights, [coefficients[d] for d in dealers])
    if same_key(_g_plus_h(s_g, 0, None), rhs):
        return
    for dealer in dealers:
        try:
            verify_feldman_share(x_self, shares[dealer], coefficients[dealer])
        except InvalidShare as exc:
            raise CheatingDealer(
                f"the share of {dealer_label(dealer)} does not match its public coefficients", [dealer]
            ) from exc
    raise CheatingDealer("the shares do not match their public coefficients", dealers)  # unreachable


# -- batched checks over many keys: one random linear combination over every key and dealer ------


def verify_dealing_batches(
    x_self: int,
    batches: Sequence[tuple[Point, Mapping[D, tuple[int, int, Sequence[Point]]]]],
    threshold: int,
    rng: Rng | None = None,
) -> None:
    """:func:`verify_dealings` for many keys generated together (a batch generation), at once.

    Each batch is one key's ``(H, dealings)``: its own second generator and every dealer's pair and
    commitments. With fresh weights ``w_ki`` for every key ``k`` and dealer ``i`` it checks
    ``(Σ w·s1)·G + Σ_k (Σ_i w_ki·s2_ki)·H_k == Σ_j x^j·(Σ_ki w_ki·C_kij)``: one cheap
    multiplication per commitment and one full one per key (its ``H``), instead of ``t + 2`` full
    ones per key. It passes whenever every pair of every key matches; when one does not, it fails
    except with probability ``2^-128`` and each key is then checked alone (:func:`verify_dealings`)
    to name the first culprit.

    :raises CheatingDealer: naming the dealer (and, in its message, the key's index in ``batches``)
        whose pair does not match its commitments or who sent the wrong number of commitments.
    """
    if not batches:
        raise InvalidShare("there is no key to check")
    for _, dealings in batches:
        _check_batch_inputs(x_self, threshold, {d: c for d, (_, _, c) in dealings.items()}, "commitments")
    weights: list[int] = []
    vectors: list[Sequence[Point]] = []
    s_g = 0
    h_terms: list[PublicKey] = []
    for h, dealings in batches:
        s_h = 0
        for secret1, secret2, commitments in dealings.values():
            w = batch_weight(rng)
            weights.append(w)
            vectors.append(commitments)
            s_g += w * secret1
            s_h += w * secret2
        if s_h % N:
            h_terms.append(h.coincurve.multiply((s_h % N).to_bytes(32, "big")))
    lhs_g = _g_plus_h(s_g, 0, None)
    lhs = key_sum([*([lhs_g] if lhs_g is not None else []), *h_terms])
    if same_key(lhs, _weighted_vectors_at(x_self, weights, vectors)):
        return
    for index, (h, dealings) in enumerate(batches):
        try:
            verify_dealings(x_self, dealings, h, threshold, rng)
        except CheatingDealer as exc:
            raise CheatingDealer(f"key {index} of the batch: {exc}", exc.dealers) from exc
    raise CheatingDealer("the dealings do not match their commitments",  # unreachable: see above
                         [d for _, dealings in batches for d in dealings])


def verify_feldman_share_batches(
    x_self: int,
    batches: Sequence[tuple[Mapping[D, int], Mapping[D, Sequence[Point]]]],
    threshold: int,
    rng: Rng | None = None,
) -> None:
    """:func:`verify_feldman_shares` for many keys at once: each batch is one key's ``(shares,
    coefficients)``; ``(Σ w·s)·G == Σ_j x^j·(Σ_ki w_ki·A_kij)`` over every key and dealer, then
    key by key to name the culprit.

    :raises CheatingDealer: naming the dealer whose share does not match its commitments.
    :raises InvalidShare: unless each key's shares and coefficients have the same dealers.
    """
    if not batches:
        raise InvalidShare("there is no key to check")
    weights: list[int] = []
    vectors: list[Sequence[Point]] = []
    s_g = 0
    for shares, coefficients in batches:
        if set(shares) != set(coefficients):
            raise InvalidShare("shares and public coefficients must come from the same dealers")
        _check_batch_inputs(x_self, threshold, coefficients, "public coefficients")
        for dealer, vector in coefficients.items():
            w = batch_weight(rng)
            weights.append(w)
            vectors.append(vector)
            s_g += w * shares[dealer]
    if same_key(_g_plus_h(s_g, 0, None), _weighted_vectors_at(x_self, weights, vectors)):
        return
    for index, (shares, coefficients) in enumerate(batches):
        try:
            verify_feldman_shares(x_self, shares, coefficients, threshold, rng)
        except CheatingDealer as exc:
            raise CheatingDealer(f"key {index} of the batch: {exc}", exc.dealers) from exc
    raise CheatingDealer("the shares do not match their public coefficients",  # unreachable
                         [d for _, coefficients in batches for d in coefficients])


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
    every node checks every dealing it receives (:func:`verify_dealings`, ``n`` batched checks of ``n`` dealings) —
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
            verify_dealings(
                xs[j],
                {i: (s1, s2, d.commitments) for i, (d, (s1, s2)) in enumerate(zip(dealings, received, strict=True))},
                derived,
                threshold,
                rng,
            )
        shares[j] = combine_secret_share(secret1 for secret1, _ in received)
    public = joint_public(d.public_share for d in dealings if d.public_share is not None)
    return LocalKey(threshold, dict(zip(nodes, xs, strict=True)), shares, public, derived)

