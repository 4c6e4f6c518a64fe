"""Nothing-up-my-sleeve points: a second generator H with unknown discrete log, per session.

Parity derives Pedersen's ``H`` with one sequential round through every node (protocol.md
§2.5 step 1), which costs N network hops per key generation. Hashing to the curve gives a
point whose discrete logarithm nobody knows, with no round at all: try-and-increment on
``keccak256(label || session || counter)`` as an x coordinate, even y (libsecp256k1 does the
square root while parsing the compressed encoding).
"""

from __future__ import annotations

from ..exceptions import InvalidPoint
from .curve import P, Point
from .hashes import keccak256

PEDERSEN_LABEL = b"ocean-secret-store/pedersen-H/v1"


def hash_to_point(label: bytes, data: bytes) -> Point:
    """The first valid ``x = keccak256(label || data || counter)`` (even y) for counter = 0, 1, ..."""
    for counter in range(256):
        x = keccak256(label + data + counter.to_bytes(4, "big"))
        if int.from_bytes(x, "big") >= P:
            continue
        try:
            return Point.from_sec1(b"\x02" + x)
        except InvalidPoint:
            continue
    raise InvalidPoint("no curve point found in 256 attempts")  # probability 2**-256


def pedersen_h(session: bytes) -> Point:
    """The Pedersen second generator of one key generation session."""
    return hash_to_point(PEDERSEN_LABEL, session)
