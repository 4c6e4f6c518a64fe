"""Node-to-node message types of our cluster protocol and their strict JSON codec.

The wire format is ours (architecture.md): each message is one compact JSON object
``{"kind": <name>, "rid": <request id or null>, "reply_to": <request id or null>, ...fields}``
carried inside an authenticated, encrypted transport frame. Field values follow Parity's JSON
conventions (protocol.md §6.5): ``0x``-prefixed lowercase hex of fixed width for hashes,
scalars, points, addresses and signatures. Decoding validates every field (length, curve
membership, ranges) and raises :class:`~ocean_secret_store.exceptions.InvalidMessage`, so a
peer's malformed message can never reach a session.

Message semantics follow Parity's sessions (protocol.md §6.11) where they are sound; the
differences (one-round-trip consensus, Feldman-verified public shares, explicit commit) are
described in ``docs/cluster-protocol.md``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from ..crypto.curve import N, Point
from ..exceptions import InvalidMessage, InvalidPoint

# -- field codecs --------------------------------------------------------------------------------

_Enc = Callable[[Any], Any]
_Dec = Callable[[Any], Any]


def _hex_field(value: Any, size: int) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 2 + 2 * size:
        raise InvalidMessage(f"expected 0x-prefixed hex of {size} bytes")
    try:
        return bytes.fromhex(value[2:])
    except ValueError as exc:
        raise InvalidMessage("invalid hex digits") from exc


def _fixed(size: int) -> tuple[_Enc, _Dec]:
    def enc(v: bytes) -> str:
        if len(v) != size:
            raise InvalidMessage(f"field must be {size} bytes, got {len(v)}")
        return "0x" + v.hex()

    return enc, lambda v: _hex_field(v, size)


def _enc_point(p: Point) -> str:
    return "0x" + p.to_bytes().hex()


def _dec_point(v: Any) -> Point:
    try:
        return Point.from_bytes(_hex_field(v, 64))
    except InvalidPoint as exc:
        raise InvalidMessage("a point field is not on secp256k1") from exc


def _enc_scalar(x: int) -> str:
    return "0x" + (x % N).to_bytes(32, "big").hex()


def _dec_scalar(v: Any) -> int:
    x = int.from_bytes(_hex_field(v, 32), "big")
    if x >= N:
        raise InvalidMessage("a scalar field is not below the curve order")
    return x


def _dec_nonzero_scalar(v: Any) -> int:
    x = _dec_scalar(v)
    if x == 0:
        raise InvalidMessage("a secret scalar field is zero")
    return x


def _dec_int(v: Any) -> int:
    if type(v) is not int or v < 0 or v > 2**31:
        raise InvalidMessage("expected a small non-negative integer")
    return v


def _dec_bool(v: Any) -> bool:
    if type(v) is not bool:
        raise InvalidMessage("expected a boolean")
    return v


def _dec_str(v: Any) -> str:
    if not isinstance(v, str) or len(v) > 1024:
        raise InvalidMessage("expected a short string")
    return v


def _enc_blob(b: bytes) -> str:
    return "0x" + b.hex()


def _dec_blob(v: Any) -> bytes:
    if not isinstance(v, str) or not v.startswith("0x") or len(v) % 2:
        raise InvalidMessage("expected 0x-prefixed hex")
    try:
        return bytes.fromhex(v[2:])
    except ValueError as exc:
        raise InvalidMessage("invalid hex digits") from exc


def _list(enc: _Enc, dec: _Dec, limit: int = 256) -> tuple[_Enc, _Dec]:
    def dec_list(v: Any) -> tuple[Any, ...]:
        if not isinstance(v, list) or len(v) > limit:
            raise InvalidMessage("expected a bounded list")
        return tuple(dec(item) for item in v)

    return (lambda xs: [enc(x) for x in xs]), dec_list


def _optional(enc: _Enc, dec: _Dec) -> tuple[_Enc, _Dec]:
    return (lambda v: None if v is None else enc(v)), (lambda v: None if v is None else dec(v))


_H256 = _fixed(32)
_NODE = _fixed(64)
_ADDRESS = _fixed(20)
_SIGNATURE = _fixed(65)


def _dec_id_map(v: Any) -> dict[bytes, int]:
    if not isinstance(v, dict) or not v or len(v) > 256:
        raise InvalidMessage("expected a non-empty map of node ids to id numbers")
    out = {_NODE[1](k): _dec_nonzero_scalar(x) for k, x in v.items()}
    if len(set(out.values())) != len(out):
        raise InvalidMessage("id numbers must be distinct")
    return out


def _enc_id_map(m: Mapping[bytes, int]) -> dict[str, str]:
    return {"0x" + k.hex(): _enc_scalar(x) for k, x in sorted(m.items())}


CODECS: dict[str, tuple[_Enc, _Dec]] = {
    "h256": _H256,
    "node": _NODE,
    "address": _ADDRESS,
    "signature": _SIGNATURE,
    "point": (_enc_point, _dec_point),
    "scalar": (_enc_scalar, _dec_scalar),
    "secret": (_enc_scalar, _dec_nonzero_scalar),
    "int": (lambda v: v, _dec_int),
    "bool": (lambda v: v, _dec_bool),
    "str": (lambda v: v, _dec_str),
    "blob": (_enc_blob, _dec_blob),
    "opt_blob": _optional(_enc_blob, _dec_blob),
    "opt_point": _optional(_enc_point, _dec_point),
    "opt_address": _optional(*_ADDRESS),
    "opt_str": _optional(lambda v: v, _dec_str),
    "points": _list(_enc_point, _dec_point),
    "nodes": _list(*_NODE),
    "h256s": _list(*_H256, limit=32),
    "id_map": (_enc_id_map, _dec_id_map),
}

# -- messages ---------------------------------------------------------------------------------------

REGISTRY: dict[str, type[Message]] = {}
M = TypeVar("M", bound="type[Message]")


class Message:
    """Base of every cluster message; subclasses are frozen dataclasses registered by name."""

    KIND: ClassVar[str] = ""
    #: field name -> codec name in CODECS
    SCHEMA: ClassVar[dict[str, str]] = {}


def message(kind: str, **schema: str) -> Callable[[M], M]:
    def wrap(cls: M) -> M:
        names = [f.name for f in dataclasses.fields(cls)]
        if names != list(schema):
            raise TypeError(f"{cls.__name__}: schema {list(schema)} does not match fields {names}")
        unknown = set(schema.values()) - CODECS.keys()
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown codecs {unknown}")
        cls.KIND = kind
        cls.SCHEMA = dict(schema)
        REGISTRY[kind] = cls
        return cls

    return wrap


def _frozen(cls: type) -> Any:
    # repr=False: several messages carry secret shares; nothing here may be printed by accident.
    return dataclasses.dataclass(frozen=True, slots=True, repr=False)(cls)


# Generic replies.
@message("Ack")
@_frozen
class Ack(Message):
    pass


@message("Error", error="str", detail="opt_str")
@_frozen
class ErrorReply(Message):
    error: str
    detail: str | None


# Server key generation (DKG, protocol.md §2.5 with Feldman-verified public shares).
@message("GenInit", session="h256", author="address", threshold="int", id_numbers="id_map")
@_frozen
class GenInit(Message):
    session: bytes
    author: bytes
    threshold: int
    id_numbers: dict[bytes, int]


@message("GenStart", session="h256")
@_frozen
class GenStart(Message):
    session: bytes


@message("GenDealing", session="h256", secret1="scalar", secret2="scalar", commitments="points")
@_frozen
class GenDealing(Message):
    session: bytes
    secret1: int
    secret2: int
    commitments: tuple[Point, ...]


@message("GenPublics", session="h256", coefficients="points")
@_frozen
class GenPublics(Message):
    session: bytes
    coefficients: tuple[Point, ...]


@message("GenReady", public="point")
@_frozen
class GenReady(Message):
    public: Point


@message("GenCommit", session="h256")
@_frozen
class GenCommit(Message):
    session: bytes


@message("GenAbort", session="h256")
@_frozen
class GenAbort(Message):
    session: bytes


# Document key storing.
@message("Store", key_id="h256", signature="signature", common_point="point", encrypted_point="point")
@_frozen
class StoreRequest(Message):
    key_id: bytes
    signature: bytes
    common_point: Point
    encrypted_point: Point


# Key metadata (negotiation when the entry node holds no share).
@message("KeyInfoRequest", key_id="h256")
@_frozen
class KeyInfoRequest(Message):
    key_id: bytes


@message("KeyInfo", found="bool", threshold="int", author="opt_address", public="opt_point",
         has_document_key="bool", versions="h256s", holders="nodes")
@_frozen
class KeyInfo(Message):
    found: bool
    threshold: int
    author: bytes | None
    public: Point | None
    has_document_key: bool
    versions: tuple[bytes, ...]
    holders: tuple[bytes, ...]


# Decryption: consensus and partial decryption in one round trip (protocol.md §2.7).
@message("Decrypt", key_id="h256", signature="signature", version="h256", access_key="secret",
         group="nodes", shadow="bool")
@_frozen
class DecryptRequest(Message):
    key_id: bytes
    signature: bytes
    version: bytes
    access_key: int
    group: tuple[bytes, ...]
    shadow: bool


@message("Decrypted", shadow_point="point", decrypt_shadow="opt_blob")
@_frozen
class DecryptResponse(Message):
    shadow_point: Point
    decrypt_shadow: bytes | None


# Schnorr signing (protocol.md §2.8): nonce round, then partial signatures.
@message("SchnorrNonce", session="h256", key_id="h256", signature="signature", version="h256",
         message_hash="h256")
@_frozen
class SchnorrNonceRequest(Message):
    session: bytes
    key_id: bytes
    signature: bytes
    version: bytes
    message_hash: bytes


@message("SchnorrNonceReply", nonce_public="point")
@_frozen
class SchnorrNonceReply(Message):
    nonce_public: Point


@message("SchnorrPartial", session="h256", group="nodes", challenge="secret")
@_frozen
class SchnorrPartialRequest(Message):
    session: bytes
    group: tuple[bytes, ...]
    challenge: int


@message("SchnorrPartialReply", partial="scalar")
@_frozen
class SchnorrPartialReply(Message):
    partial: int


@message("SchnorrCancel", session="h256")
@_frozen
class SchnorrCancel(Message):
    session: bytes


# -- envelope -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Envelope:
    """A message plus its request id (for requests) or the id it answers (for replies)."""

    body: Message
    rid: int | None = None
    reply_to: int | None = None


def encode(envelope: Envelope) -> bytes:
    body = envelope.body
    out: dict[str, Any] = {"kind": body.KIND, "rid": envelope.rid, "reply_to": envelope.reply_to}
    for name, codec in body.SCHEMA.items():
        out[name] = CODECS[codec][0](getattr(body, name))
    return json.dumps(out, separators=(",", ":")).encode()


def decode(payload: bytes) -> Envelope:
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidMessage("message is not JSON") from exc
    if not isinstance(obj, dict):
        raise InvalidMessage("message is not a JSON object")
    kind = obj.get("kind")
    cls = REGISTRY.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InvalidMessage("unknown message kind")
    rid, reply_to = obj.get("rid"), obj.get("reply_to")
    for ref in (rid, reply_to):
        if ref is not None and (type(ref) is not int or ref < 0):
            raise InvalidMessage("request ids are non-negative integers")
    values = {}
    for name, codec in cls.SCHEMA.items():
        if name not in obj:
            raise InvalidMessage(f"{cls.KIND} lacks field {name}")
        values[name] = CODECS[codec][1](obj[name])
    return Envelope(cls(**values), rid, reply_to)
