"""``POST /shadow_batch`` (ours, beyond Parity; docs/http-api.md, "Batch shadow retrieval"): the
pure codec of its request and answer bodies, for the key server and for clients.

Request: ``{"requests": [{"key_id": "0x<64 hex>", "signature": "0x<130 hex>"}, ...]}``, 1 to
:data:`MAX_BATCH` entries, each signature over its own key id (requesters may differ). Answer
(200): ``{"results": [...]}`` in request order, each ``{"key_id": ..., "ok": {<the single shadow
answer's three fields>}}`` or ``{"key_id": ..., "error": {"status": ..., "name": <Parity's variant>,
"message": <Parity's display text>}}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

from ..crypto.curve import Point
from ..exceptions import InvalidPoint, KeyServerError, SecretStoreError
from .hexcodec import parse_hex, to_hex
from .http import ENCRYPTED_SHADOW_SIZE, BadResponse, DocumentKeyShadow, error_from_text

__all__ = ["MAX_BATCH", "MAX_BATCH_BODY", "PATH", "BadBatch", "decode_batch_response", "decode_results",
           "encode_batch_request", "encode_batch_results", "encode_results", "parse_batch_request"]

T = TypeVar("T")

#: The route (POST).
PATH: Final = "/shadow_batch"
#: The most keys one request carries; more are a 400.
MAX_BATCH: Final = 256
#: The largest request body: a full batch is about 52 KB of compact JSON (203 bytes an entry),
#: pretty-printed up to about 80 KB.
MAX_BATCH_BODY: Final = 128 * 1024

_KEY_ID_SIZE: Final = 32
_SIGNATURE_SIZE: Final = 65
_ENTRY_FIELDS: Final = frozenset({"key_id", "signature"})
_POINT_SIZE: Final = 64
_SHADOW_FIELDS: Final = frozenset({"decrypted_secret", "common_point", "decrypt_shadows"})


class BadBatch(SecretStoreError, ValueError):
    """A batch request that does not parse; its message names the entry (by index) when one is at fault."""


def encode_batch_request(pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The request body for ``(key id, signature)`` pairs."""
    return json.dumps({"requests": [{"key_id": to_hex(k), "signature": to_hex(s)} for k, s in pairs]},
                      separators=(",", ":")).encode("ascii")


def parse_batch_request(body: bytes) -> list[tuple[bytes, bytes]]:
    """The ``(key id, signature)`` pairs of a request body.

    :raises BadBatch: not JSON, not the expected object, no entry or more than :data:`MAX_BATCH`, or
        an entry without exactly a 32-byte key id and a 65-byte signature as ``0x`` hex.
    """
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadBatch("the body is not JSON") from None
    if not isinstance(value, dict) or set(value) != {"requests"} or not isinstance(value["requests"], list):
        raise BadBatch('the body must be an object {"requests": [...]}')
    entries = value["requests"]
    if not entries:
        raise BadBatch("the batch has no entry")
    if len(entries) > MAX_BATCH:
        raise BadBatch(f"the batch has {len(entries)} entries, at most {MAX_BATCH} are taken")
    out = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != _ENTRY_FIELDS:
            raise BadBatch(f"entry {index}: expected an object with exactly key_id and signature")
        try:
            key_id = parse_hex(entry["key_id"], "key_id", _KEY_ID_SIZE, error=BadBatch)
            signature = parse_hex(entry["signature"], "signature", _SIGNATURE_SIZE, error=BadBatch)
        except BadBatch as exc:
            raise BadBatch(f"entry {index}: {exc}") from None
        out.append((key_id, signature))
    return out


def _hex(point: Point) -> str:
    return to_hex(point.to_bytes())


def encode_results(key_ids: Sequence[bytes], results: Sequence[T | KeyServerError],
                   ok: Callable[[T], object]) -> bytes:
    """A batch route's 200 answer: ``{"results": [...]}``, each key's ``ok`` (``ok(result)``) or its
    ``error`` (status, Parity name, text), in order. Shared by batch retrieval and batch generation."""
    out: list[dict[str, object]] = []
    for key_id, result in zip(key_ids, results, strict=True):
        if isinstance(result, KeyServerError):
            text = str(result).encode("utf-8", "replace").decode("utf-8")
            out.append({"key_id": to_hex(key_id),
                        "error": {"status": result.status, "name": result.parity_name, "message": text}})
        else:
            out.append({"key_id": to_hex(key_id), "ok": ok(result)})
    return json.dumps({"results": out}, separators=(",", ":")).encode("utf-8")


def decode_results(body: bytes, key_ids: Sequence[bytes], what: str,
                   ok: Callable[[object, int], T]) -> list[T | KeyServerError]:
    """Each key's ``ok(value, index)`` or error from a batch route's answer (``what`` names it in
    errors), in the order of ``key_ids``, which the answer must repeat.

    :raises BadResponse: not the expected shape, another number of results, or another key order.
    """
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadResponse(f"{what} is not JSON") from exc
    if not isinstance(value, dict) or not isinstance(value.get("results"), list):
        raise BadResponse(f'{what} must be an object {{"results": [...]}}')
    results = value["results"]
    if len(results) != len(key_ids):
        raise BadResponse(f"{what} has {len(results)} results for {len(key_ids)} keys")
    out: list[T | KeyServerError] = []
    for index, (item, key_id) in enumerate(zip(results, key_ids, strict=True)):
        if not isinstance(item, dict) or parse_hex(item.get("key_id"), "key_id", _KEY_ID_SIZE,
                                                   error=BadResponse) != key_id:
            raise BadResponse(f"batch result {index} is not for the key asked")
        if set(item) == {"key_id", "ok"}:
            out.append(ok(item["ok"], index))
        elif set(item) == {"key_id", "error"} and isinstance(item["error"], dict) \
                and isinstance(item["error"].get("message"), str):
            out.append(error_from_text(item["error"]["message"]))
        else:
            raise BadResponse(f"batch result {index} has neither ok nor error")
    return out


def encode_batch_results(key_ids: Sequence[bytes],
                         results: Sequence[tuple[Point, Point, Sequence[bytes]] | KeyServerError]) -> bytes:
    """The 200 answer: each key's shadow answer ``(decrypted_secret, common_point, decrypt_shadows)``
    or its error, in order."""
    def shadow(result: tuple[Point, Point, Sequence[bytes]]) -> object:
        secret, common, blobs = result
        return {"decrypted_secret": _hex(secret), "common_point": _hex(common),
                "decrypt_shadows": [to_hex(blob) for blob in blobs]}

    return encode_results(key_ids, results, shadow)


def _point(value: object, what: str) -> Point:
    try:
        return Point.from_bytes(parse_hex(value, what, _POINT_SIZE, error=BadResponse))
    except InvalidPoint as exc:
        raise BadResponse(f"{what} is not a point on secp256k1") from exc


def _shadow(value: object, index: int) -> DocumentKeyShadow:
    """One ``ok``: the single answer's three fields, as strictly as :func:`.http.decode_shadow_response`."""
    if not isinstance(value, dict) or set(value) != _SHADOW_FIELDS:
        raise BadResponse(f"batch result {index}: ok must have exactly {', '.join(sorted(_SHADOW_FIELDS))}")
    blobs = value["decrypt_shadows"]
    if not isinstance(blobs, list) or not blobs:
        raise BadResponse(f"batch result {index}: decrypt_shadows must be a non-empty array")
    return DocumentKeyShadow(
        decrypted_secret=_point(value["decrypted_secret"], "decrypted_secret"),
        common_point=_point(value["common_point"], "common_point"),
        decrypt_shadows=tuple(parse_hex(b, "decrypt shadow", ENCRYPTED_SHADOW_SIZE, error=BadResponse) for b in blobs),
    )


def decode_batch_response(body: bytes, key_ids: Sequence[bytes]) -> list[DocumentKeyShadow | KeyServerError]:
    """Each key's shadow or error, in the order of ``key_ids`` (which the answer must repeat).

    :raises BadResponse: not the expected shape, another number of results, or another key order.
    """
    return decode_results(body, key_ids, "batch response", _shadow)

