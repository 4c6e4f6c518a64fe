"""Bound requester signatures: the format, its canonical encoding, verification and the nonce cache.

Pure: no sockets, no clock (callers pass ``now``), no randomness (callers pass the nonce).

Parity's requester signature signs only the key id, so anyone who sees one request (the
generation URL) can reuse its signature for another operation on the same key id, such as
storing a document key of their own. A *bound* signature signs, besides the key id, the
operation, its arguments, a random nonce and an expiry. It travels in two HTTP headers beside
Parity's path, which stays as it is (the path signature is still checked)::

    X-Secret-Store-Bound: 1;<nonce: 32 hex digits>;<expiry: unix seconds, decimal>
    X-Secret-Store-Bound-Signature: <r || s || v: 130 hex digits, no 0x, v 0 or 1>

The signature is ECDSA over the raw 32-byte digest (as the path signature, protocol.md §1.3)::

    digest = keccak256(
        DOMAIN                                  # b"ocean-secret-store/bound-request\\x00" (33 bytes)
        || u8(version)                          # 1
        || u8(len(operation)) || operation      # ASCII, e.g. b"store_document_key"
        || key_id                               # 32 bytes
        || u16(len(arguments)) || arguments     # see below
        || nonce                                # 16 bytes
        || u64(expiry)                          # unix seconds
    )                                           # integers big-endian

``arguments`` per operation: ``generate_server_key`` and ``generate_document_key``: the threshold as
``u64``, followed by the 20-byte owner-to-be when the request names one (``X-Secret-Store-Owner``,
:mod:`ocean_secret_store.protocol.owner`); ``store_document_key``: the common point ``C`` then the
encrypted point ``E`` (64 bytes each, ``x || y``); ``schnorr_sign`` and ``ecdsa_sign``: the 32-byte
message hash; the retrievals (``retrieve_server_key``, ``retrieve_document_key``,
``retrieve_document_key_shadow``): empty. The operation is never in the header: the node derives it
(and the arguments) from the request it serves, so a signature made for one request verifies for no
other. It must recover to the same address as the path signature, and the expiry must be in the
future and at most :data:`MAX_LIFETIME` seconds ahead; a node accepts a nonce once per signer until
the expiry (:class:`NonceCache`).

Every refusal is :class:`BoundSignatureError`, which answers as Parity's
``400 "Insufficient requester data: <what is wrong>"``; its text never holds a signature.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass
from typing import Final

from coincurve import PrivateKey

from ..crypto.curve import Point
from ..crypto.hashes import address_of, keccak256
from ..crypto.signatures import recover_public, sign_raw_hash
from ..exceptions import InsufficientRequesterData, InvalidSignature

__all__ = [
    "DOMAIN",
    "HEADER",
    "MAX_LIFETIME",
    "NONCE_SIZE",
    "OPERATIONS",
    "SIGNATURE_HEADER",
    "VERSION",
    "Bound",
    "BoundSignatureError",
    "NonceCache",
    "digest",
    "encode",
    "message_hash_arguments",
    "no_arguments",
    "parse_headers",
    "sign",
    "store_arguments",
    "threshold_arguments",
    "verify",
]

#: The header with the bound fields, and the one with the signature over them.
HEADER: Final = "X-Secret-Store-Bound"
SIGNATURE_HEADER: Final = "X-Secret-Store-Bound-Signature"
#: The format version, first in the header and in the signed encoding.
VERSION: Final = 1
#: Prefix of every signed encoding: no other message this package signs starts with it.
DOMAIN: Final = b"ocean-secret-store/bound-request\x00"
NONCE_SIZE: Final = 16
#: Longest time, in seconds, a bound signature may be valid ahead of the node's clock.
MAX_LIFETIME: Final = 60
#: Every operation a bound signature can name (Parity's endpoints but the admin one).
OPERATIONS: Final = frozenset({
    "generate_server_key",
    "store_document_key",
    "generate_document_key",
    "retrieve_server_key",
    "retrieve_document_key",
    "retrieve_document_key_shadow",
    "schnorr_sign",
    "ecdsa_sign",
})

_KEY_ID_SIZE: Final = 32
_SIGNATURE_HEX: Final = re.compile(r"[0-9a-fA-F]{130}")
_HEADER_VALUE: Final = re.compile(r"([0-9]{1,3});([0-9a-fA-F]{32});([0-9]{1,20})")
_U64_MAX: Final = 2**64 - 1


class BoundSignatureError(InsufficientRequesterData):
    """A bound signature is missing where required, malformed, wrong, expired or replayed (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class Bound:
    """The bound fields of one request and the signature over them (the signature is a credential:
    never logged; ``repr`` leaves it out)."""

    nonce: bytes
    expiry: int
    signature: bytes
    version: int = VERSION

    def __repr__(self) -> str:
        return f"Bound(version={self.version}, nonce=0x{self.nonce.hex()}, expiry={self.expiry})"

    def header_value(self) -> str:
        """The value of :data:`HEADER`."""
        return f"{self.version};{self.nonce.hex()};{self.expiry}"

    def headers(self) -> dict[str, str]:
        """Both headers, ready for an HTTP request."""
        return {HEADER: self.header_value(), SIGNATURE_HEADER: self.signature.hex()}


# -- arguments --------------------------------------------------------------------------------


def threshold_arguments(threshold: int, owner: bytes | None = None) -> bytes:
    """The arguments of ``generate_server_key`` and ``generate_document_key``: the threshold as
    ``u64``, then the 20-byte owner-to-be when the request names one (``X-Secret-Store-Owner``).
    Without an owner the arguments are the threshold alone, as before owners existed, so a bound
    signature made then still verifies, and one made without an owner fails for a request with one."""
    if not 0 <= threshold <= _U64_MAX:
        raise BoundSignatureError("bound signature: the threshold does not fit in 64 bits")
    if owner is None:
        return threshold.to_bytes(8, "big")
    if len(owner) != 20:
        raise BoundSignatureError("bound signature: an owner-to-be is a 20-byte address")
    return threshold.to_bytes(8, "big") + bytes(owner)


def store_arguments(common_point: Point, encrypted_point: Point) -> bytes:
    """The arguments of ``store_document_key``: ``C || E``."""
    return common_point.to_bytes() + encrypted_point.to_bytes()


def message_hash_arguments(message_hash: bytes) -> bytes:
    """The arguments of ``schnorr_sign`` and ``ecdsa_sign``."""
    if len(message_hash) != 32:
        raise BoundSignatureError("bound signature: the message hash must be 32 bytes")
    return bytes(message_hash)


def no_arguments() -> bytes:
    """The arguments of the retrievals."""
    return b""


# -- encoding ---------------------------------------------------------------------------------


def encode(operation: str, key_id: bytes, arguments: bytes, nonce: bytes, expiry: int,
           version: int = VERSION) -> bytes:
    """The canonical encoding that :func:`digest` hashes (see the module docstring)."""
    if operation not in OPERATIONS:
        raise BoundSignatureError(f"bound signature: unknown operation {operation!r}")
    if len(key_id) != _KEY_ID_SIZE:
        raise BoundSignatureError("bound signature: the key id must be 32 bytes")
    if len(nonce) != NONCE_SIZE:
        raise BoundSignatureError(f"bound signature: the nonce must be {NONCE_SIZE} bytes")
    if not 0 <= expiry <= _U64_MAX:
        raise BoundSignatureError("bound signature: the expiry does not fit in 64 bits")
    if len(arguments) > 0xFFFF:
        raise BoundSignatureError("bound signature: the arguments are too long")
    op = operation.encode("ascii")
    return b"".join((
        DOMAIN,
        version.to_bytes(1, "big"),
        len(op).to_bytes(1, "big"), op,
        bytes(key_id),
        len(arguments).to_bytes(2, "big"), bytes(arguments),
        bytes(nonce),
        expiry.to_bytes(8, "big"),
    ))


def digest(operation: str, key_id: bytes, arguments: bytes, nonce: bytes, expiry: int,
           version: int = VERSION) -> bytes:
    """The 32 bytes the requester signs: ``keccak256`` of :func:`encode`."""
    return keccak256(encode(operation, key_id, arguments, nonce, expiry, version))


def sign(secret: int | bytes | PrivateKey, operation: str, key_id: bytes, arguments: bytes, *, nonce: bytes,
         expiry: int) -> Bound:
    """A bound signature by ``secret`` (the requester's private key, or its coincurve key) for one request."""
    signed = digest(operation, key_id, arguments, nonce, expiry)
    return Bound(nonce=bytes(nonce), expiry=expiry, signature=sign_raw_hash(secret, signed))


# -- parsing and verification -----------------------------------------------------------------


def parse_headers(value: str | None, signature: str | None) -> Bound | None:
    """The bound fields of a request from its two header values; None when both are absent.

    :raises BoundSignatureError: only one header, a malformed one, or an unknown version.
    """
    if value is None and signature is None:
        return None
    if value is None or signature is None:
        raise BoundSignatureError(f"bound signature: send both {HEADER} and {SIGNATURE_HEADER}")
    match = _HEADER_VALUE.fullmatch(value.strip())
    if match is None:
        raise BoundSignatureError(f"bound signature: {HEADER} must be <version>;<32 hex nonce>;<unix expiry>")
    version, nonce, expiry = int(match[1]), bytes.fromhex(match[2]), int(match[3])
    if version != VERSION:
        raise BoundSignatureError(f"bound signature: unsupported version {version} (this node speaks {VERSION})")
    if expiry > _U64_MAX:
        raise BoundSignatureError("bound signature: the expiry does not fit in 64 bits")
    text = signature.strip()
    if _SIGNATURE_HEX.fullmatch(text) is None:
        raise BoundSignatureError(f"bound signature: {SIGNATURE_HEADER} must be 130 hex digits (r || s || v)")
    return Bound(nonce=nonce, expiry=expiry, signature=bytes.fromhex(text), version=version)


def verify(bound: Bound, operation: str, key_id: bytes, arguments: bytes, *, signer: bytes, now: float) -> None:
    """Check ``bound`` for this request: in time, and signed by ``signer`` (a 20-byte address).

    The nonce is not checked here: that is the caller's :class:`NonceCache`.

    :raises BoundSignatureError: expired, too far ahead, unrecoverable or by another signer.
    """
    if bound.expiry < now:
        raise BoundSignatureError("bound signature expired")
    if bound.expiry > now + MAX_LIFETIME:
        raise BoundSignatureError(f"bound signature: the expiry is more than {MAX_LIFETIME} s ahead")
    signed = digest(operation, key_id, arguments, bound.nonce, bound.expiry, bound.version)
    try:
        recovered = address_of(recover_public(bound.signature, signed))
    except InvalidSignature as exc:
        raise BoundSignatureError(f"bad bound signature: {exc}") from None
    if recovered != signer:
        raise BoundSignatureError(
            f"the bound signature is not by the path signature's signer, or not for this {operation} request"
        )


class NonceCache:
    """The (signer, nonce) pairs a node has accepted, each kept until its expiry; bounded.

    A full cache (``capacity`` live entries: more than a node serves in a minute) refuses new
    nonces rather than forgetting live ones, which would let them be replayed.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("a nonce cache needs room for at least one nonce")
        self.capacity = capacity
        self._expiries: dict[tuple[bytes, bytes], int] = {}
        self._heap: list[tuple[int, tuple[bytes, bytes]]] = []

    def __len__(self) -> int:
        return len(self._expiries)

    def _purge(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            expiry, key = heapq.heappop(self._heap)
            if self._expiries.get(key) == expiry:
                del self._expiries[key]

    def claim(self, signer: bytes, bound: Bound, now: float) -> None:
        """Record the nonce of ``bound`` for ``signer``, or refuse it if seen before.

        :raises BoundSignatureError: the nonce was used already, or the cache is full.
        """
        self._purge(now)
        key = (bytes(signer), bound.nonce)
        if key in self._expiries:
            raise BoundSignatureError("bound signature: this nonce was used already (a replayed request)")
        if len(self._expiries) >= self.capacity:
            raise BoundSignatureError("bound signature: too many recent requests on this node; retry shortly")
        self._expiries[key] = bound.expiry
        heapq.heappush(self._heap, (bound.expiry, key))
