"""The owner-to-be header: an opt-in addition to Parity's key generation requests.

A generating requester (the key's author) may name another account as the key's *owner-to-be*::

    X-Secret-Store-Owner: 0x<40 hex digits>

on ``POST /shadow/{key_id}/{sig}/{threshold}`` and ``POST /{key_id}/{sig}/{threshold}``; Parity's
path and body stay byte for byte as they are. Every node records the owner with its share, and the
contract access checker serves the owner like the author and accepts it as the DID's first
registrant (docs/security.md, finding 1): a provider generating a key on a publisher's behalf names
the publisher. With a bound signature the owner is part of the signed arguments
(:func:`~ocean_secret_store.protocol.bound.threshold_arguments`).

A malformed header, or the header on any other request, is refused as Parity's
``400 "Insufficient requester data: <why>"``, so a request never silently loses its owner.
"""

from __future__ import annotations

import re
from typing import Final

from ..exceptions import InsufficientRequesterData

__all__ = ["HEADER", "OwnerHeaderError", "header_value", "not_taken", "parse_header"]

HEADER: Final = "X-Secret-Store-Owner"
_ADDRESS: Final = re.compile(r"0x[0-9a-fA-F]{40}")


class OwnerHeaderError(InsufficientRequesterData):
    """The owner-to-be header is malformed or sent where no key is generated (HTTP 400)."""


def parse_header(value: str | None) -> bytes | None:
    """The 20-byte owner-to-be of ``X-Secret-Store-Owner`` (None: no header).

    :raises OwnerHeaderError: not ``0x`` and 40 hex digits, or the zero address.
    """
    if value is None:
        return None
    if _ADDRESS.fullmatch(value.strip()) is None:
        raise OwnerHeaderError(f"{HEADER} must be 0x and 40 hex digits (the owner-to-be's address)")
    owner = bytes.fromhex(value.strip()[2:])
    if owner == bytes(20):
        raise OwnerHeaderError(f"{HEADER} must not be the zero address")
    return owner


def header_value(owner: bytes) -> str:
    """The header's value for a 20-byte address."""
    if len(owner) != 20:
        raise ValueError(f"an owner-to-be is a 20-byte address, got {len(owner)} bytes")
    return "0x" + owner.hex()


def not_taken(operation: str) -> OwnerHeaderError:
    """The refusal of the header on a request that generates no key."""
    return OwnerHeaderError(f"{HEADER} is taken only by key generation, not by {operation}")
