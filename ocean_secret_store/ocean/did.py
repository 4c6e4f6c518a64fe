"""Ocean DIDs of the squid-py era: ``did:op:`` + SHA3-256 over the DDO's service checksums (ocean.md §1.3).

The 32 bytes after ``did:op:`` are the asset id: the Secret Store server key id, the
``DIDRegistry`` ``_did`` and the ACL's ``_documentId`` all use them unchanged, so no
translation is ever needed between the DDO, the chain and the key servers.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..exceptions import InvalidDid
from ..protocol.hexcodec import parse_hex

DID_PREFIX = "did:op:"


def did_to_id(did: str) -> bytes:
    """The 32-byte asset id of ``did`` (``did:op:<64 hex>``, ``0x<64 hex>`` or ``<64 hex>``).

    :raises InvalidDid: anything else (wrong prefix, length or digits).
    """
    if not isinstance(did, str):
        raise InvalidDid(f"a DID must be a string, got {type(did).__name__}")
    text = did.strip()
    has_prefix = text.startswith(DID_PREFIX)

    def refuse(problem: str) -> InvalidDid:
        # Show only a bounded prefix: the value is public, but may be arbitrarily long garbage.
        shown = did if len(did) <= 80 else did[:77] + "..."
        return InvalidDid(f"not a DID: {shown!r} ({problem}; expected did:op:<64 hex>, 0x<64 hex> or <64 hex>)")

    # After did:op: come bare digits only; otherwise 0x is optional.
    body = text.removeprefix(DID_PREFIX)
    return parse_hex(body, "the asset id", 32, prefix=False if has_prefix else None, error=refuse)


def id_to_did(asset_id: bytes) -> str:
    """``did:op:`` + the lower-case hex of the 32-byte ``asset_id``.

    :raises InvalidDid: ``asset_id`` is not 32 bytes.
    """
    if not isinstance(asset_id, (bytes, bytearray, memoryview)):
        raise InvalidDid(f"an asset id must be 32 bytes, got {type(asset_id).__name__}")
    raw = bytes(asset_id)
    if len(raw) != 32:
        raise InvalidDid(f"an asset id must be 32 bytes, got {len(raw)}")
    return DID_PREFIX + raw.hex()


def normalize_did(did: str) -> str:
    """The canonical spelling of ``did`` (``did:op:`` + lower-case hex), whatever form it came in."""
    return id_to_did(did_to_id(did))


def checksum(obj: Any) -> str:
    """Hex (no ``0x``) SHA3-256 of ``obj`` as sorted-key, space-free JSON (ocean_utils' ``checksum``)."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha3_256(canonical.encode("utf-8")).hexdigest()


def did_from_checksums(checksums: dict[str, str]) -> str:
    """The DID of a DDO whose ``proof.checksum`` is ``checksums`` (service index as a string -> checksum)."""
    return DID_PREFIX + checksum(checksums)
