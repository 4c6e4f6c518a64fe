"""The key-versions query (ours, not Parity's): one key server tells another node of its cluster
which version of each key it holds, a page at a time, so that ``ocean-secret-store node verify``
can find what a node lacks or holds stale (docs/operators.md, *Verifying a node*). Pure: no I/O.

``GET /admin/key_versions/{after}/{expiry}/{signature}``, where ``after`` is the last key id of the
previous page (64 zero hex digits for the first), ``expiry`` a unix time in decimal, and
``signature`` the asking node's signature with its node key over

    ``keccak256(LABEL || audience || after || expiry as 8 bytes big-endian)``

with ``audience`` the 64-byte id of the node asked (a signature serves one node only). The node
asked answers only a node of its address book or servers set, and only before ``expiry``, which
may lie at most :data:`MAX_LIFETIME` seconds ahead; anything else is Parity's 403 ``Access denied``.
The answer (JSON)::

    {"node_id": "0x<128 hex>", "servers_set": ["0x..", ...], "more": false,
     "keys": [{"key_id": "0x<64 hex>", "threshold": 1, "version": "0x<64 hex>" or null,
               "epoch": 0, "max_epoch": 0, "holder": true, "document_key": true}, ...]}

one entry per key the node holds above ``after``, ascending, at most :data:`PAGE`: its active
version (hash and epoch; null when it has none active), the highest epoch of any version it holds,
whether the asking node is one of that active version's holders, and whether this node holds the
key's document key. Key ids, version hashes and node ids are public identifiers; no share, document
key or secret is ever in it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..crypto.curve import Point
from ..crypto.hashes import keccak256
from ..crypto.signatures import recover_public, sign_raw_hash
from ..exceptions import AccessDenied, InvalidSignature, SecretStoreError
from .hexcodec import parse_hex

__all__ = [
    "LABEL",
    "MAX_LIFETIME",
    "PAGE",
    "ROUTE",
    "KeyVersionsError",
    "KeyVersionsPage",
    "KeyVersionsRequest",
    "PeerKey",
    "decode_page",
    "encode_page",
    "parse_path",
    "request_path",
    "signed_hash",
]

LABEL: Final = b"ocean-secret-store/key-versions/v1"
#: Keys per page.
PAGE: Final = 256
#: Seconds a signature may be valid for, at most (a clock ahead by more is refused too).
MAX_LIFETIME: Final = 300
#: The route's pattern (the metrics label of its requests).
ROUTE: Final = "/admin/key_versions/{after}/{expiry}/{signature}"
PREFIX: Final = "/admin/key_versions/"
_PATH: Final = re.compile(r"/admin/key_versions/(?:0x)?([0-9a-fA-F]{64})/([0-9]{1,12})/(?:0x)?([0-9a-fA-F]{130})")


class KeyVersionsError(SecretStoreError, ValueError):
    """A key-versions request or answer that does not parse."""


def signed_hash(audience: bytes, after: bytes, expiry: int) -> bytes:
    """What the asking node signs (the module doc)."""
    if len(audience) != 64 or len(after) != 32 or not 0 <= expiry < 2**64:
        raise KeyVersionsError("audience is a 64-byte node id, after a 32-byte key id, expiry a unix time")
    return keccak256(LABEL + audience + after + expiry.to_bytes(8, "big"))


def request_path(node_secret: int, audience: bytes, after: bytes, expiry: int) -> str:
    """The request's path, signed with ``node_secret`` (the asking node's key)."""
    signature = sign_raw_hash(node_secret, signed_hash(audience, after, expiry))
    return f"{PREFIX}{after.hex()}/{expiry}/{signature.hex()}"


@dataclass(frozen=True)
class KeyVersionsRequest:
    after: bytes
    expiry: int
    signature: bytes

    def requester(self, audience: bytes, now: float) -> bytes:
        """The asking node's id, once the signature and its expiry check out for ``audience``.

        :raises AccessDenied: expired, valid for too long, or a signature that does not recover.
        """
        if not now < self.expiry <= now + MAX_LIFETIME:
            raise AccessDenied("the key-versions request has expired or is valid for too long")
        try:
            return recover_public(self.signature, signed_hash(audience, self.after, self.expiry)).to_bytes()
        except InvalidSignature:
            raise AccessDenied("the key-versions request's signature does not recover") from None


def parse_path(path: str) -> KeyVersionsRequest | None:
    """The request of ``path``; None for a path of another route.

    :raises KeyVersionsError: a path of this route that does not parse.
    """
    if not path.startswith(PREFIX):
        return None
    match = _PATH.fullmatch(path)
    if match is None:
        raise KeyVersionsError("expected /admin/key_versions/{after}/{expiry}/{signature}")
    return KeyVersionsRequest(bytes.fromhex(match[1]), int(match[2]), bytes.fromhex(match[3]))


@dataclass(frozen=True)
class PeerKey:
    """One key as a node holds it (the answer's ``keys``)."""

    key_id: bytes
    threshold: int
    version: bytes | None
    epoch: int
    max_epoch: int
    holder: bool
    document_key: bool = True


@dataclass(frozen=True)
class KeyVersionsPage:
    node_id: bytes
    servers_set: tuple[bytes, ...]
    keys: tuple[PeerKey, ...]
    more: bool


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def encode_page(page: KeyVersionsPage) -> dict[str, Any]:
    return {
        "node_id": _hex(page.node_id),
        "servers_set": [_hex(n) for n in page.servers_set],
        "keys": [{"key_id": _hex(k.key_id), "threshold": k.threshold,
                  "version": None if k.version is None else _hex(k.version), "epoch": k.epoch,
                  "max_epoch": k.max_epoch, "holder": k.holder, "document_key": k.document_key}
                 for k in page.keys],
        "more": page.more,
    }


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise KeyVersionsError(f"{what} is not a non-negative integer")
    return value


def _node(value: object) -> bytes:
    raw = parse_hex(value, "a node id", 64, error=KeyVersionsError)
    try:
        return Point.from_bytes(raw).to_bytes()
    except ValueError:
        raise KeyVersionsError("a node id is not a secp256k1 public key") from None


def decode_page(data: object) -> KeyVersionsPage:
    """:raises KeyVersionsError: not an answer of this route."""
    if not isinstance(data, Mapping) or set(data) != {"node_id", "servers_set", "keys", "more"}:
        raise KeyVersionsError("not a key-versions answer")
    servers_set, keys, more = data["servers_set"], data["keys"], data["more"]
    if not isinstance(servers_set, list) or not isinstance(keys, list) or not isinstance(more, bool):
        raise KeyVersionsError("not a key-versions answer")
    if len(keys) > PAGE:
        raise KeyVersionsError(f"more than {PAGE} keys in one page")
    return KeyVersionsPage(_node(data["node_id"]), tuple(_node(n) for n in servers_set),
                           tuple(_peer_key(k) for k in keys), more)


def _peer_key(item: object) -> PeerKey:
    fields = {"key_id", "threshold", "version", "epoch", "max_epoch", "holder", "document_key"}
    if not isinstance(item, Mapping) or set(item) != fields or not isinstance(item["holder"], bool) \
            or not isinstance(item["document_key"], bool):
        raise KeyVersionsError("not a key entry")
    version = item["version"]
    return PeerKey(parse_hex(item["key_id"], "a key id", 32, error=KeyVersionsError),
                   _int(item["threshold"], "threshold"),
                   None if version is None else parse_hex(version, "a version hash", 32, error=KeyVersionsError),
                   _int(item["epoch"], "epoch"), _int(item["max_epoch"], "max_epoch"), item["holder"],
                   item["document_key"])

