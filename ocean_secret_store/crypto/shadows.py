"""Threshold decryption of a document key (protocol.md §2.7): node shadows, their combination, recovery.

A document key ``M`` is stored as ``(C, E) = (k·G, M + k·Y)``. A consensus group ``S`` of
exactly ``t+1`` nodes and an access key ``a`` (the session's sub-session id) are chosen:

* node side — :func:`node_shadow` ``ns_i = λ'_i·s_i``, then :func:`shadow_point` (plain
  mode, ``P_i = (a·ns_i)·C``) or :func:`shadow_decryption` (shadow mode, ``P_i`` blinded by
  a random ``δ_i`` and ``ε_i = (δ_i − 1)·ns_i`` sent ECIES-encrypted to the requester);
* master side — :func:`combine_shadow_points` ``D = E ± a⁻¹·Σ P_i`` (``+`` for odd ``t``),
  which is ``M`` itself in plain mode, and :func:`requester_common_point` ``C'``;
* requester side — :func:`recover_document_key` ``M = D + (Σ ε_i)·C'``.

The sign rules come from Parity's ``λ'`` (protocol.md §2.3): ``Σ ns_i = (−1)^t·y``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..exceptions import DecryptionFailed, InvalidScalar, InvalidThreshold
from . import ecies
from .curve import N, Point, Rng, point_sum, random_scalar
from .sharing import shadow_coefficient

__all__ = [
    "access_key_inverses",
    "combine_shadow_points",
    "node_shadow",
    "recover_document_key",
    "requester_common_point",
    "shadow_decryption",
    "shadow_point",
]


def node_shadow(share: int, x_self: int, x_others: Iterable[int]) -> int:
    """``ns_i = λ'_i·s_i mod n`` over the group ``{x_self} ∪ x_others``.

    :raises InvalidScalar: for an id number outside ``1 <= x < n``.
    :raises InvalidShare: for a repeated id number.
    """
    return shadow_coefficient(x_self, x_others) * share % N


def shadow_point(node_shadow: int, access_key: int, common_point: Point) -> Point:
    """Plain mode: ``P_i = (a·ns_i)·C``.

    :raises InvalidPoint: if ``a·ns_i ≡ 0`` (the point at infinity).
    """
    return common_point * (access_key * node_shadow % N)


def shadow_decryption(
    node_shadow: int,
    access_key: int,
    common_point: Point,
    requester_public: Point | ecies.Encryptor,
    rng: Rng | None = None,
) -> tuple[Point, bytes]:
    """Shadow mode: ``(P_i, ECIES(Q, ε_i, ad=00 00))``, ``P_i = (a·ns_i·δ)·C``, ``ε_i = (δ−1)·ns_i``.

    ``δ`` is fresh and random, so ``P_i`` alone reveals nothing and only the requester
    (holder of ``Q``'s secret) can remove the blinding. Costs one multiplication for ``P_i``
    plus the ECIES encryption (one fixed-base, one variable-base multiplication), or, given an
    :class:`~.ecies.Encryptor` for ``Q`` (a batch answer's keys for one requester), the
    multiplication for ``P_i`` and that encryptor's symmetric work only.
    """
    delta = random_scalar(rng)
    point = common_point * (access_key * node_shadow % N * delta % N)
    epsilon = ((delta - 1) * node_shadow % N).to_bytes(32, "big")
    if isinstance(requester_public, ecies.Encryptor):
        return point, requester_public.encrypt(epsilon, ecies.DEFAULT_MAC)
    return point, ecies.encrypt(requester_public, epsilon, ecies.DEFAULT_MAC, rng=rng)


def access_key_inverses(access_keys: Sequence[int]) -> list[int]:
    """``a⁻¹ mod n`` of every access key, with ONE modular inversion (Montgomery's trick: prefix
    products, one inversion, a backward pass), for :func:`combine_shadow_points` over a batch: a
    modular inversion costs about as much as a point multiplication, three products far less.

    :raises InvalidScalar: for an access key outside ``1 <= a < n``.
    """
    if any(not 0 < a < N for a in access_keys):
        raise InvalidScalar("the access key must satisfy 1 <= a < n")
    prefix = []
    running = 1
    for a in access_keys:
        prefix.append(running)
        running = running * a % N
    inverse = pow(running, -1, N)  # of the product of all of them
    out = [0] * len(access_keys)
    for i in range(len(access_keys) - 1, -1, -1):
        out[i] = inverse * prefix[i] % N
        inverse = inverse * access_keys[i] % N
    return out


def combine_shadow_points(
    shadow_points: Sequence[Point], access_key: int, encrypted_point: Point, threshold: int,
    access_key_inverse: int | None = None,
) -> Point:
    """The master's ``D``: ``J = Σ P_i``, ``T = a⁻¹·J``, ``D = E + T`` if ``t`` is odd else ``E − T``.

    In plain mode ``D`` is the document key ``M``; in shadow mode it is ``decrypted_secret``.
    Exactly ``t+1`` shadow points are needed because the sign rule assumes ``|S| = t+1``.
    ``access_key_inverse``: ``a⁻¹`` when already known (:func:`access_key_inverses`), checked.

    :raises InvalidThreshold: for a number of shadow points other than ``threshold + 1``.
    :raises InvalidScalar: for an access key outside ``1 <= a < n``, or an ``access_key_inverse``
        that is not its inverse.
    :raises InvalidPoint: if an intermediate sum is the point at infinity.
    """
    if threshold < 0 or len(shadow_points) != threshold + 1:
        raise InvalidThreshold(
            f"threshold {threshold} needs exactly {threshold + 1} shadow points, got {len(shadow_points)}"
        )
    if not 0 < access_key < N:
        raise InvalidScalar("the access key must satisfy 1 <= a < n")
    if access_key_inverse is None:
        access_key_inverse = pow(access_key, -1, N)
    elif access_key * access_key_inverse % N != 1:
        raise InvalidScalar("the access key's inverse given is not its inverse")
    t_point = point_sum(shadow_points) * access_key_inverse
    return encrypted_point + t_point if threshold % 2 else encrypted_point - t_point


def requester_common_point(common_point: Point, threshold: int) -> Point:
    """``C'`` of a shadow result: ``C`` if ``t`` is even, ``−C`` if odd (protocol.md §2.7)."""
    return -common_point if threshold % 2 else common_point


def recover_document_key(
    decrypted_secret: Point,
    common_point: Point,
    decrypt_shadows: Sequence[bytes],
    requester_secret: int | ecies.Decryptor,
) -> Point:
    """The requester's ``M = D + (Σ ε_i mod n)·C'`` (what ``secretstore_shadowDecrypt`` does).

    ``common_point`` is ``C'`` as returned with the shadow result (already sign-adjusted).
    ``requester_secret`` may be an :class:`~.ecies.Decryptor` for it, kept over the keys of a batch
    answer: one ECDH per ephemeral point there instead of one per decrypt shadow.

    :raises DecryptionFailed: if a shadow does not decrypt (ad ``00 00``) to exactly 32 bytes.
    :raises InvalidThreshold: if there are no shadows.
    """
    if not decrypt_shadows:
        raise InvalidThreshold("a shadow result carries at least one decrypt shadow")
    opener = requester_secret if isinstance(requester_secret, ecies.Decryptor) else ecies.Decryptor(requester_secret)
    epsilon = 0
    for position, blob in enumerate(decrypt_shadows):
        plain = opener.decrypt(blob, ecies.DEFAULT_MAC)
        if len(plain) != 32:
            raise DecryptionFailed(
                f"decrypt shadow {position} holds {len(plain)} bytes, expected a 32-byte scalar"
            )
        epsilon += int.from_bytes(plain, "big")
    epsilon %= N
    if epsilon == 0:  # Σε ≡ 0 (e.g. every δ_i = 1): nothing to add, and 0·C' has no Point
        return decrypted_secret
    return decrypted_secret + common_point * epsilon
