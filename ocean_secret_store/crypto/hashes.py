"""Hashes with Ethereum's and Parity's meanings: keccak-256, addresses, servers-set and key-version hashes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from Crypto.Hash import keccak

from ..exceptions import InvalidPoint
from .curve import Point, scalar_bytes


def keccak256(data: bytes) -> bytes:
    """Original Keccak-256 (Ethereum's), not NIST SHA3-256."""
    return keccak.new(digest_bits=256, data=data).digest()


def address_of(public: Point) -> bytes:
    """Ethereum address (20 bytes) of a public key: ``keccak256(X || Y)[12:]``."""
    return keccak256(public.to_bytes())[12:]


def checksum_address(address: bytes) -> str:
    """EIP-55 mixed-case ``0x`` form of a 20-byte address."""
    if len(address) != 20:
        raise ValueError(f"an address is 20 bytes, got {len(address)}")
    lower = address.hex()
    digest = keccak256(lower.encode("ascii")).hex()
    return "0x" + "".join(c.upper() if int(d, 16) >= 8 else c for c, d in zip(lower, digest[:40], strict=True))


def _node_id_bytes(node_id: Point | bytes) -> bytes:
    raw = node_id.to_bytes() if isinstance(node_id, Point) else bytes(node_id)
    if len(raw) != 64:
        raise InvalidPoint(f"a node id must be 64 bytes, got {len(raw)}")
    return raw


def servers_set_hash(node_ids: Iterable[Point | bytes]) -> bytes:
    """``keccak256(concat(sorted unique 64-byte node ids))`` (protocol.md §2.11, §3.4)."""
    unique = sorted({_node_id_bytes(n) for n in node_ids})
    return keccak256(b"".join(unique))


def key_version_hash(id_numbers: Mapping[bytes, int] | Mapping[Point, int]) -> bytes:
    """``keccak256(concat over node ids ascending: node_id(64) || x(32))`` (protocol.md §2.11)."""
    entries = sorted((_node_id_bytes(node), x) for node, x in id_numbers.items())
    return keccak256(b"".join(node + scalar_bytes(x) for node, x in entries))
