"""Recoverable ECDSA over a raw 32-byte hash, as Parity's requester and node signatures (protocol.md §1.3).

The signed message *is* the 32-byte digest (no EIP-191 prefix, no extra hashing) and the
65-byte encoding is ``r || s || v`` with ``v`` the raw recovery id (0 or 1, rarely 2 or 3);
Ethereum's 27/28 is refused, as Parity refuses it.
"""

from __future__ import annotations

from coincurve import PrivateKey, PublicKey

from ..exceptions import InvalidSignature
from .curve import N, Point, Scalar, private_key
from .hashes import address_of

SIGNATURE_LENGTH = 65


def sign_raw_hash(secret: int | Scalar | bytes | PrivateKey, message_hash: bytes) -> bytes:
    """Sign 32 raw bytes: deterministic (RFC 6979), low-S, ``r || s || v`` with v in {0, 1}.

    A signer that signs often passes its coincurve ``PrivateKey`` (:func:`~.curve.private_key`),
    made once: making one computes its public key, two multiplications, three times the signature.
    """
    if len(message_hash) != 32:
        raise InvalidSignature(f"the signed hash must be 32 bytes, got {len(message_hash)}")
    key = secret if isinstance(secret, PrivateKey) else private_key(secret)
    return key.sign_recoverable(message_hash, hasher=None)


def check_signature_encoding(signature: bytes) -> None:
    """Raise InvalidSignature unless ``signature`` is 65 bytes with 0 < r, s < n and v <= 3."""
    if len(signature) != SIGNATURE_LENGTH:
        raise InvalidSignature(f"a signature must be 65 bytes (r || s || v), got {len(signature)}")
    v = signature[64]
    if v > 3:
        raise InvalidSignature(
            f"bad signature: recovery id v must be 0 or 1 (got {v}; Ethereum's 27/28 is not accepted)"
        )
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    if not (0 < r < N and 0 < s < N):
        raise InvalidSignature("bad signature: r and s must be in [1, n-1]")


def recover_public(signature: bytes, message_hash: bytes) -> Point:
    """Public key that produced ``signature`` over the raw 32-byte ``message_hash``."""
    if len(message_hash) != 32:
        raise InvalidSignature(f"the signed hash must be 32 bytes, got {len(message_hash)}")
    check_signature_encoding(signature)
    try:
        key = PublicKey.from_signature_and_message(bytes(signature), bytes(message_hash), hasher=None)
    except (ValueError, TypeError) as exc:
        raise InvalidSignature("bad signature: no public key recovers from it") from exc
    return Point(key)


def recover_address(signature: bytes, message_hash: bytes) -> bytes:
    """20-byte Ethereum address of the signer of ``message_hash``."""
    return address_of(recover_public(signature, message_hash))


def verify_raw_hash(public: Point, signature: bytes, message_hash: bytes) -> None:
    """Raise InvalidSignature unless ``public`` signed ``message_hash`` with a low-S signature."""
    recovered = recover_public(signature, message_hash)
    if recovered != public:
        raise InvalidSignature("the signature was made by another key")
    if int.from_bytes(signature[32:64], "big") > N // 2:
        raise InvalidSignature("the signature is not low-S")
