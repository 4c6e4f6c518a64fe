"""Parity-flavour EC-Schnorr (protocol.md §2.8): challenge, threshold partials, local sign and verify.

A signature is ``(c, s)`` with ``c = to_scalar(keccak256(h ‖ R.x))`` and ``s = k − c·y``; it
verifies iff ``to_scalar(keccak256(h ‖ (s·G + c·Y).x)) == c``. In the threshold version
every member of a group ``S`` of ``t+1`` nodes holds a nonce share ``k_i`` and a key share
``s_i`` and contributes ``σ_i = k_i ∓ c·λ'_i·s_i`` (``−`` for even ``t``), so that
``Σ σ_i = k − c·y`` with ``k = Σ k_i``.
"""

from __future__ import annotations

from collections.abc import Iterable

from coincurve import PublicKey

from ..exceptions import CryptoError, InvalidSignature, InvalidThreshold
from .curve import N, Point, Rng, random_scalar, to_scalar
from .hashes import keccak256
from .sharing import shadow_coefficient

__all__ = [
    "challenge",
    "combine_partial_signatures",
    "parse_signature",
    "partial_signature",
    "sign",
    "signature_bytes",
    "verify",
]


def _check_hash(message_hash: bytes) -> None:
    if len(message_hash) != 32:
        raise CryptoError(f"a message hash must be 32 bytes, got {len(message_hash)}")


def challenge(message_hash: bytes, nonce_public: Point) -> int:
    """``c = to_scalar(keccak256(message_hash ‖ R.x))``.

    :raises CryptoError: for a message hash that is not 32 bytes.
    :raises InvalidScalar: if the hash reduces to zero (probability ~2⁻²⁵⁶).
    """
    _check_hash(message_hash)
    return to_scalar(keccak256(message_hash + nonce_public.x_bytes))


def partial_signature(
    threshold: int, nonce_share: int, share: int, x_self: int, x_others: Iterable[int], challenge: int
) -> int:
    """``σ_i = k_i − c·λ'_i·s_i`` if ``t`` is even, ``k_i + c·λ'_i·s_i`` if odd (λ' over the group).

    :raises InvalidThreshold: unless the group ``{x_self} ∪ x_others`` has exactly ``t+1`` members.
    :raises InvalidShare: for a repeated id number.
    """
    others = list(x_others)
    if len(others) != threshold:
        raise InvalidThreshold(
            f"a threshold-{threshold} signature needs a group of {threshold + 1}, got {len(others) + 1}"
        )
    term = challenge * shadow_coefficient(x_self, others) % N * share % N
    return (nonce_share + term if threshold % 2 else nonce_share - term) % N


def combine_partial_signatures(partials: Iterable[int]) -> int:
    """``s = Σ σ_i mod n``.

    :raises InvalidThreshold: if there is no partial signature.
    """
    values = list(partials)
    if not values:
        raise InvalidThreshold("a signature needs at least one partial signature")
    return sum(values) % N


def sign(
    secret: int, message_hash: bytes, nonce: int | None = None, rng: Rng | None = None
) -> tuple[int, int]:
    """Sign locally with the whole secret: ``(c, s)`` with ``s = k − c·y``.

    ``nonce`` is for test vectors only; a reused nonce reveals the secret.
    """
    k = random_scalar(rng) if nonce is None else nonce
    c = challenge(message_hash, Point.generator_mul(k))
    return c, (k - c * secret) % N


def verify(public: Point, signature: tuple[int, int], message_hash: bytes) -> None:
    """Check ``to_scalar(keccak256(h ‖ (s·G + c·Y).x)) == c``.

    :raises InvalidSignature: if the signature is out of range or does not verify.
    :raises CryptoError: for a message hash that is not 32 bytes.
    """
    _check_hash(message_hash)
    c, s = signature
    if not (0 < c < N and 0 <= s < N):
        raise InvalidSignature("a Schnorr signature needs 1 <= c < n and 0 <= s < n")
    keys = [public.coincurve.multiply(c.to_bytes(32, "big"))]
    if s:
        keys.append(PublicKey.from_valid_secret(s.to_bytes(32, "big")))
    try:
        nonce_public = keys[0] if len(keys) == 1 else PublicKey.combine_keys(keys)
    except ValueError as exc:  # s·G + c·Y at infinity
        raise InvalidSignature("the Schnorr signature does not verify") from exc
    digest = keccak256(message_hash + nonce_public.format(compressed=False)[1:33])
    if int.from_bytes(digest, "big") % N != c:
        raise InvalidSignature("the Schnorr signature does not verify")


def signature_bytes(c: int, s: int) -> bytes:
    """The 64-byte ``c ‖ s`` form (what the HTTP API encrypts to the requester).

    :raises InvalidSignature: if ``c`` or ``s`` is not below n.
    """
    if not (0 <= c < N and 0 <= s < N):
        raise InvalidSignature("a Schnorr signature needs c, s < n")
    return c.to_bytes(32, "big") + s.to_bytes(32, "big")


def parse_signature(data: bytes) -> tuple[int, int]:
    """Parse 64 bytes ``c ‖ s``.

    :raises InvalidSignature: for a wrong length, ``c = 0`` or a value not below n.
    """
    if len(data) != 64:
        raise InvalidSignature(f"a Schnorr signature is 64 bytes (c || s), got {len(data)}")
    c, s = int.from_bytes(data[:32], "big"), int.from_bytes(data[32:], "big")
    if not (0 < c < N and s < N):
        raise InvalidSignature("a Schnorr signature needs 1 <= c < n and s < n")
    return c, s
