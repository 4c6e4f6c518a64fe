"""``POST /server_key_batch`` (ours, beyond Parity; docs/http-api.md, "Batch server key generation"):
the pure codec of its request and answer bodies, for the key server and for clients.

Request: ``{"threshold": t, "requests": [{"key_id": "0x<64 hex>", "signature": "0x<130 hex>"}, ...]}``,
1 to :data:`MAX_BATCH` entries, each signature over its own key id (its signer becomes the key's
author, as with ``POST /shadow/{key_id}/{signature}/{threshold}``; requesters may differ). An entry
may carry its own ``"threshold"`` (then the top-level one may be left out) and an ``"owner"``: the
key's owner-to-be (``0x`` + 40 hex, as the ``X-Secret-Store-Owner`` header of the single route).
Answer (200): ``{"results": [...]}`` in request order, each ``{"key_id": ..., "ok": "0x<128 hex>"}``
(the server key's public) or ``{"key_id": ..., "error": {"status": ..., "name": <Parity's
variant>, "message": <Parity's display text>}}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ..crypto.curve import Point
from ..exceptions import InvalidPoint, KeyServerError, SecretStoreError
from .batch import decode_results, encode_results
from .hexcodec import parse_hex, to_hex
from .http import BadResponse

__all__ = ["MAX_BATCH", "MAX_BATCH_BODY", "MAX_THRESHOLD", "PATH", "BadGenerationBatch", "GenerationItem",
           "decode_generation_response", "encode_generation_request", "encode_generation_results",
           "parse_generation_request"]

#: The route (POST).
PATH: Final = "/server_key_batch"
#: The most keys one request carries; more are a 400.
MAX_BATCH: Final = 1000
#: The largest request body: a full batch with owners is about 330 KB of compact JSON.
MAX_BATCH_BODY: Final = 512 * 1024
#: The largest threshold an entry may name (a cluster needs more than t nodes anyway).
MAX_THRESHOLD: Final = 255

_KEY_ID_SIZE: Final = 32
_SIGNATURE_SIZE: Final = 65
_ADDRESS_SIZE: Final = 20
_POINT_SIZE: Final = 64
_REQUIRED: Final = frozenset({"key_id", "signature"})
_OPTIONAL: Final = frozenset({"threshold", "owner"})


class BadGenerationBatch(SecretStoreError, ValueError):
    """A batch generation request that does not parse; its message names the entry (by index) at fault."""


@dataclass(frozen=True, slots=True)
class GenerationItem:
    """One key to generate: its id, the requester's signature over it, its threshold and owner-to-be."""

    key_id: bytes
    signature: bytes
    threshold: int
    owner: bytes | None = None


def encode_generation_request(items: Sequence[GenerationItem]) -> bytes:
    """The request body (each entry with its own threshold; the top-level one when all agree)."""
    thresholds = {item.threshold for item in items}
    common = next(iter(thresholds)) if len(thresholds) == 1 else None
    entries: list[dict[str, object]] = []
    for item in items:
        entry: dict[str, object] = {"key_id": to_hex(item.key_id), "signature": to_hex(item.signature)}
        if common is None:
            entry["threshold"] = item.threshold
        if item.owner is not None:
            entry["owner"] = to_hex(item.owner)
        entries.append(entry)
    body: dict[str, object] = {"requests": entries}
    if common is not None:
        body["threshold"] = common
    return json.dumps(body, separators=(",", ":")).encode("ascii")


def _threshold(value: object, where: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_THRESHOLD:
        raise BadGenerationBatch(f"{where}threshold must be an integer from 0 to {MAX_THRESHOLD}")
    return value


def _entry(index: int, entry: object, default: int | None) -> GenerationItem:
    where = f"entry {index}: "
    if not isinstance(entry, dict) or not _REQUIRED <= set(entry) <= _REQUIRED | _OPTIONAL:
        raise BadGenerationBatch(f"{where}expected an object with key_id and signature (and optionally threshold "
                                 "and owner)")
    try:
        key_id = parse_hex(entry["key_id"], "key_id", _KEY_ID_SIZE, error=BadGenerationBatch)
        signature = parse_hex(entry["signature"], "signature", _SIGNATURE_SIZE, error=BadGenerationBatch)
        owner = None if entry.get("owner") is None else parse_hex(entry["owner"], "owner", _ADDRESS_SIZE,
                                                                  error=BadGenerationBatch)
    except BadGenerationBatch as exc:
        raise BadGenerationBatch(f"{where}{exc}") from None
    if owner is not None and not any(owner):
        raise BadGenerationBatch(f"{where}owner must not be the zero address")
    if "threshold" in entry:
        threshold = _threshold(entry["threshold"], where)
    elif default is None:
        raise BadGenerationBatch(f"{where}no threshold (neither its own nor the batch's)")
    else:
        threshold = default
    return GenerationItem(key_id, signature, threshold, owner)


def parse_generation_request(body: bytes) -> list[GenerationItem]:
    """The keys of a request body, in order (a key id may come twice: the node refuses the second).

    :raises BadGenerationBatch: not JSON, not the expected object, no entry or more than
        :data:`MAX_BATCH`, an entry without a 32-byte key id and a 65-byte signature as ``0x`` hex,
        or a threshold missing or out of range, or a malformed owner.
    """
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadGenerationBatch("the body is not JSON") from None
    if not isinstance(value, dict) or not {"requests"} <= set(value) <= {"requests", "threshold"} \
            or not isinstance(value["requests"], list):
        raise BadGenerationBatch('the body must be an object {"threshold": t, "requests": [...]}')
    default = _threshold(value["threshold"], "") if "threshold" in value else None
    entries = value["requests"]
    if not entries:
        raise BadGenerationBatch("the batch has no entry")
    if len(entries) > MAX_BATCH:
        raise BadGenerationBatch(f"the batch has {len(entries)} entries, at most {MAX_BATCH} are taken")
    return [_entry(index, entry, default) for index, entry in enumerate(entries)]


def encode_generation_results(key_ids: Sequence[bytes], results: Sequence[Point | KeyServerError]) -> bytes:
    """The 200 answer: each key's public or its error, in order."""
    return encode_results(key_ids, results, lambda public: to_hex(public.to_bytes()))


def _point(value: object, index: int) -> Point:
    try:
        return Point.from_bytes(parse_hex(value, f"batch result {index}", _POINT_SIZE, error=BadResponse))
    except InvalidPoint as exc:
        raise BadResponse(f"batch result {index} is not a point on secp256k1") from exc


def decode_generation_response(body: bytes, key_ids: Sequence[bytes]) -> list[Point | KeyServerError]:
    """Each key's public or error, in the order of ``key_ids`` (which the answer must repeat).

    :raises BadResponse: not the expected shape, another number of results, or another key order.
    """
    return decode_results(body, key_ids, "batch generation response", _point)
