"""The Parity Secret Store HTTP API on the wire (protocol.md §1): paths, bodies and errors.

Pure: no sockets, no aiohttp. The node's HTTP adapter calls :func:`parse_request` and the
``encode_*`` / :func:`error_response` helpers; clients call the path builders (or
:func:`encode_request`) and the ``decode_*`` / :func:`error_from_response` helpers. Which
``Origin`` a node serves is node policy (:mod:`ocean_secret_store.node.cors`).

Parsing follows Parity 2.5.10 … OE 3.0 (``secret-store/src/listener/http_listener.rs``) byte for
byte: percent-decode the path as UTF-8, ignore the query, strip leading ``/``, split on ``/``,
dispatch on ``admin`` or an optional prefix (``shadow``, ``schnorr``, ``ecdsa``, ``server``), then
match exactly on (prefix, argument count, method). Any failure is :class:`BadRequest`, which the
node answers with ``400`` and an empty body. Hex arguments follow rustc-hex (either case, the
four ASCII whitespace characters space, CR, LF and tab are skipped, ``0x`` is rejected) and the
threshold follows Rust's ``usize::from_str`` (ASCII digits with an optional ``+``, at most 2^64 - 1).

Requester signatures are *not* recovered here: a 130-hex signature always parses, and the node's
recovery turns a bad one into Parity's ``400 "Insufficient requester data: bad signature: …"``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final, TypeAlias
from urllib.parse import unquote_to_bytes

from ..crypto.curve import Point
from ..exceptions import (
    KEY_SERVER_ERRORS,
    InternalError,
    InvalidPoint,
    KeyServerError,
    SecretStoreError,
    SerializationError,
    TooManyRequests,
)
from .hexcodec import parse_hex

__all__ = [
    "BAD_REQUEST_STATUS",
    "CONTENT_TYPE_JSON",
    "CORS_REJECTED_STATUS",
    "ENCRYPTED_DOCUMENT_KEY_SIZE",
    "ENCRYPTED_ECDSA_SIGNATURE_SIZE",
    "ENCRYPTED_SCHNORR_SIGNATURE_SIZE",
    "ENCRYPTED_SHADOW_SIZE",
    "GET",
    "MAX_BODY_LENGTH",
    "MAX_PATH_LENGTH",
    "POST",
    "USIZE_MAX",
    "AdminRefresh",
    "AdminRepair",
    "AdminStatus",
    "BadRequest",
    "BadResponse",
    "DocumentKeyShadow",
    "EcdsaSign",
    "EncodedRequest",
    "GenerateDocumentKey",
    "GenerateServerKey",
    "Request",
    "RetrieveDocumentKey",
    "RetrieveDocumentKeyShadow",
    "RetrieveServerKey",
    "SchnorrSign",
    "ServersSetChange",
    "StoreDocumentKey",
    "decode_bytes_response",
    "decode_error_body",
    "decode_point_response",
    "decode_shadow_response",
    "document_key_retrieval_path",
    "document_key_shadow_retrieval_path",
    "document_key_storing_path",
    "ecdsa_signing_path",
    "encode_bytes",
    "encode_point",
    "encode_request",
    "encode_shadow",
    "error_from_response",
    "error_from_text",
    "error_response",
    "parse_request",
    "parse_rust_uint",
    "schnorr_signing_path",
    "server_and_document_key_generation_path",
    "server_key_generation_path",
    "server_key_retrieval_path",
    "servers_set_change_body",
    "servers_set_change_path",
    "too_many_requests",
]

GET: Final = "GET"
POST: Final = "POST"

#: Content type of every JSON body Parity sends, success or error (protocol.md §1.5, §1.6).
CONTENT_TYPE_JSON: Final = "application/json; charset=utf-8"
#: Status of an unparseable request; its body is empty.
BAD_REQUEST_STATUS: Final = 400
#: Status of a request whose Origin the CORS policy rejects; its body is empty.
CORS_REJECTED_STATUS: Final = 404

#: Longest request target we read. The longest valid one (document key storing) is 461
#: characters; Parity has no limit, but nothing legitimate comes near this.
MAX_PATH_LENGTH: Final = 2048
#: Longest request body a node reads, whatever its framing (Content-Length or chunked); a longer
#: one is an unparseable request. Only the servers-set-change body matters (about 135 bytes per
#: node id); Parity has no limit, but nothing legitimate comes near this.
MAX_BODY_LENGTH: Final = 64 * 1024
#: Parity's threshold is a ``usize`` on a 64-bit build.
USIZE_MAX: Final = 2**64 - 1

_KEY_ID_SIZE: Final = 32
_SIGNATURE_SIZE: Final = 65
_POINT_SIZE: Final = 64
_MESSAGE_HASH_SIZE: Final = 32

#: Parity ECIES adds 65 (ephemeral key) + 16 (IV) + 32 (tag) bytes to the plaintext (§2.2).
_ECIES_OVERHEAD: Final = 65 + 16 + 32
#: ``ECIES(Q, M)`` of a 64-byte document key point (endpoints 3 and 5).
ENCRYPTED_DOCUMENT_KEY_SIZE: Final = _ECIES_OVERHEAD + 64
#: ``ECIES(Q, c || s)`` (endpoint 7).
ENCRYPTED_SCHNORR_SIGNATURE_SIZE: Final = _ECIES_OVERHEAD + 64
#: ``ECIES(Q, r || s || v)`` (endpoint 8).
ENCRYPTED_ECDSA_SIGNATURE_SIZE: Final = _ECIES_OVERHEAD + 65
#: ``ECIES(Q, ε_i)`` of one 32-byte decrypt shadow (endpoint 6).
ENCRYPTED_SHADOW_SIZE: Final = _ECIES_OVERHEAD + 32


class BadRequest(SecretStoreError, ValueError):
    """A request Parity's listener would not parse (answer ``400`` with an empty body), or
    arguments from which no such request can be built."""


class BadResponse(SecretStoreError):
    """A key server's response body does not have the shape Parity gives it."""


# -- requests ---------------------------------------------------------------------------------


def _check_bytes(value: object, size: int, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise BadRequest(f"{what} must be {size} bytes, got {got}")


def _check_threshold(value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= USIZE_MAX:
        raise BadRequest("threshold must be an integer in [0, 2**64 - 1]")


def _check_point(value: object, what: str) -> None:
    if not isinstance(value, Point):
        raise BadRequest(f"{what} must be a Point, got {type(value).__name__}")


# The request types share their fields through three private bases; every public type is its own
# class (not a subclass of another public one), so isinstance and match tell them apart and two
# requests of different kinds never compare equal.


@dataclass(frozen=True, slots=True)
class _KeyRequest:
    """What every request but the admin one carries: a server key id and the requester's signature."""

    key_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_bytes(self.key_id, _KEY_ID_SIZE, "key_id")
        _check_bytes(self.signature, _SIGNATURE_SIZE, "signature")


@dataclass(frozen=True, slots=True)
class _ThresholdRequest(_KeyRequest):
    threshold: int

    def __post_init__(self) -> None:
        # Named base, not super(): slots=True rebuilds the class, which breaks zero-argument super().
        _KeyRequest.__post_init__(self)
        _check_threshold(self.threshold)


@dataclass(frozen=True, slots=True)
class _SigningRequest(_KeyRequest):
    message_hash: bytes

    def __post_init__(self) -> None:
        _KeyRequest.__post_init__(self)
        _check_bytes(self.message_hash, _MESSAGE_HASH_SIZE, "message_hash")


@dataclass(frozen=True, slots=True)
class GenerateServerKey(_ThresholdRequest):
    """``POST /shadow/{key_id}/{signature}/{threshold}``: server key generation (§1.4.1)."""

    method: ClassVar[str] = POST


@dataclass(frozen=True, slots=True)
class StoreDocumentKey(_KeyRequest):
    """Document key storing (§1.4.2).

    ``POST /shadow/{key_id}/{signature}/{common_point}/{encrypted_point}``
    """

    method: ClassVar[str] = POST
    common_point: Point
    encrypted_point: Point

    def __post_init__(self) -> None:
        _KeyRequest.__post_init__(self)
        _check_point(self.common_point, "common_point")
        _check_point(self.encrypted_point, "encrypted_point")


@dataclass(frozen=True, slots=True)
class GenerateDocumentKey(_ThresholdRequest):
    """``POST /{key_id}/{signature}/{threshold}``: server *and* document key generation (§1.4.3)."""

    method: ClassVar[str] = POST


@dataclass(frozen=True, slots=True)
class RetrieveServerKey(_KeyRequest):
    """``GET /server/{key_id}/{signature}``: server public key retrieval, author only (§1.4.4)."""

    method: ClassVar[str] = GET


@dataclass(frozen=True, slots=True)
class RetrieveDocumentKey(_KeyRequest):
    """``GET /{key_id}/{signature}``: document key retrieval, the node reconstructs ``M`` (§1.4.5)."""

    method: ClassVar[str] = GET


@dataclass(frozen=True, slots=True)
class RetrieveDocumentKeyShadow(_KeyRequest):
    """``GET /shadow/{key_id}/{signature}``: document key shadow retrieval (§1.4.6)."""

    method: ClassVar[str] = GET


@dataclass(frozen=True, slots=True)
class SchnorrSign(_SigningRequest):
    """``GET /schnorr/{key_id}/{signature}/{message_hash}``: threshold Schnorr signing (§1.4.7)."""

    method: ClassVar[str] = GET


@dataclass(frozen=True, slots=True)
class EcdsaSign(_SigningRequest):
    """``GET /ecdsa/{key_id}/{signature}/{message_hash}``: threshold ECDSA signing (§1.4.8)."""

    method: ClassVar[str] = GET


@dataclass(frozen=True, slots=True)
class ServersSetChange:
    """``POST /admin/servers_set_change/{old_set_signature}/{new_set_signature}`` + JSON body (§1.4.9).

    ``new_servers_set`` is a set, as Parity's ``BTreeSet<NodeId>``: it is stored without
    duplicates and sorted by the 64-byte ids, whatever order it was given in.
    """

    method: ClassVar[str] = POST
    old_set_signature: bytes
    new_set_signature: bytes
    new_servers_set: tuple[Point, ...]

    def __post_init__(self) -> None:
        _check_bytes(self.old_set_signature, _SIGNATURE_SIZE, "old_set_signature")
        _check_bytes(self.new_set_signature, _SIGNATURE_SIZE, "new_set_signature")
        nodes = tuple(self.new_servers_set)
        for node in nodes:
            _check_point(node, "a new servers set entry")
        object.__setattr__(self, "new_servers_set", tuple(sorted(set(nodes), key=Point.to_bytes)))


@dataclass(frozen=True, slots=True)
class AdminRefresh:
    """``POST /admin/refresh/{set_signature}/{refresh_signature}`` (ours, not Parity's): new shares
    of every key on the same set (protocol/admin.py says what is signed)."""

    method: ClassVar[str] = POST
    set_signature: bytes
    refresh_signature: bytes

    def __post_init__(self) -> None:
        _check_bytes(self.set_signature, _SIGNATURE_SIZE, "set_signature")
        _check_bytes(self.refresh_signature, _SIGNATURE_SIZE, "refresh_signature")


@dataclass(frozen=True, slots=True)
class AdminRepair:
    """``POST /admin/repair/{set_signature}/{repair_signature}/{node_id}`` (ours): give ``node`` back
    its shares of every key whose active version it lacks."""

    method: ClassVar[str] = POST
    set_signature: bytes
    repair_signature: bytes
    node: Point

    def __post_init__(self) -> None:
        _check_bytes(self.set_signature, _SIGNATURE_SIZE, "set_signature")
        _check_bytes(self.repair_signature, _SIGNATURE_SIZE, "repair_signature")
        _check_point(self.node, "the node to repair")


@dataclass(frozen=True, slots=True)
class AdminStatus:
    """``GET /admin/status`` (ours): the servers set, the admin session, its progress with counts only
    (JSON); ``GET /admin/status/{expiry}/{signature}``, signed by the administrator (protocol/admin.py),
    the same with the key ids of the keys an admin session left behind or failed to move."""

    method: ClassVar[str] = GET
    expiry: int | None = None
    signature: bytes | None = None

    def __post_init__(self) -> None:
        if (self.expiry is None) != (self.signature is None):
            raise BadRequest("a signed admin status names both its expiry and its signature")
        if self.signature is not None:
            _check_bytes(self.signature, _SIGNATURE_SIZE, "signature")
            if not isinstance(self.expiry, int) or isinstance(self.expiry, bool) or not 0 <= self.expiry <= USIZE_MAX:
                raise BadRequest("expiry must be a unix time in [0, 2**64 - 1]")

    @property
    def signed(self) -> bool:
        return self.signature is not None


Request: TypeAlias = (
    GenerateServerKey
    | StoreDocumentKey
    | GenerateDocumentKey
    | RetrieveServerKey
    | RetrieveDocumentKey
    | RetrieveDocumentKeyShadow
    | SchnorrSign
    | EcdsaSign
    | ServersSetChange
    | AdminRefresh
    | AdminRepair
    | AdminStatus
)


@dataclass(frozen=True, slots=True)
class EncodedRequest:
    """A request as it goes on the wire: method, origin-form path, body."""

    method: str
    path: str
    body: bytes


# -- building requests (clients) -------------------------------------------------------------


def _path(*segments: str) -> str:
    return "/" + "/".join(segments)


def server_key_generation_path(key_id: bytes, signature: bytes, threshold: int) -> str:
    """``/shadow/{key_id}/{signature}/{threshold}`` (POST)."""
    return encode_request(GenerateServerKey(key_id, signature, threshold)).path


def document_key_storing_path(
    key_id: bytes, signature: bytes, common_point: Point, encrypted_point: Point
) -> str:
    """``/shadow/{key_id}/{signature}/{common_point}/{encrypted_point}`` (POST)."""
    return encode_request(StoreDocumentKey(key_id, signature, common_point, encrypted_point)).path


def server_and_document_key_generation_path(key_id: bytes, signature: bytes, threshold: int) -> str:
    """``/{key_id}/{signature}/{threshold}`` (POST)."""
    return encode_request(GenerateDocumentKey(key_id, signature, threshold)).path


def server_key_retrieval_path(key_id: bytes, signature: bytes) -> str:
    """``/server/{key_id}/{signature}`` (GET)."""
    return encode_request(RetrieveServerKey(key_id, signature)).path


def document_key_retrieval_path(key_id: bytes, signature: bytes) -> str:
    """``/{key_id}/{signature}`` (GET)."""
    return encode_request(RetrieveDocumentKey(key_id, signature)).path


def document_key_shadow_retrieval_path(key_id: bytes, signature: bytes) -> str:
    """``/shadow/{key_id}/{signature}`` (GET)."""
    return encode_request(RetrieveDocumentKeyShadow(key_id, signature)).path


def schnorr_signing_path(key_id: bytes, signature: bytes, message_hash: bytes) -> str:
    """``/schnorr/{key_id}/{signature}/{message_hash}`` (GET)."""
    return encode_request(SchnorrSign(key_id, signature, message_hash)).path


def ecdsa_signing_path(key_id: bytes, signature: bytes, message_hash: bytes) -> str:
    """``/ecdsa/{key_id}/{signature}/{message_hash}`` (GET)."""
    return encode_request(EcdsaSign(key_id, signature, message_hash)).path


def servers_set_change_path(old_set_signature: bytes, new_set_signature: bytes) -> str:
    """``/admin/servers_set_change/{old_set_signature}/{new_set_signature}`` (POST)."""
    return encode_request(ServersSetChange(old_set_signature, new_set_signature, ())).path


def servers_set_change_body(new_servers_set: Iterable[Point]) -> bytes:
    """The JSON array of ``"0x"+128 hex`` node ids, sorted and without duplicates."""
    return encode_request(
        ServersSetChange(bytes(_SIGNATURE_SIZE), bytes(_SIGNATURE_SIZE), tuple(new_servers_set))
    ).body


def encode_request(request: Request) -> EncodedRequest:
    """The method, path (bare lowercase hex, no ``0x``) and body that carry ``request``."""
    if isinstance(request, ServersSetChange):
        old, new = request.old_set_signature.hex(), request.new_set_signature.hex()
        node_ids = ["0x" + node.to_bytes().hex() for node in request.new_servers_set]
        body = json.dumps(node_ids, separators=(",", ":")).encode("ascii")
        return EncodedRequest(request.method, _path("admin", "servers_set_change", old, new), body)
    if isinstance(request, AdminRefresh):
        return EncodedRequest(request.method, _path("admin", "refresh", request.set_signature.hex(),
                                                    request.refresh_signature.hex()), b"")
    if isinstance(request, AdminRepair):
        return EncodedRequest(request.method, _path("admin", "repair", request.set_signature.hex(),
                                                    request.repair_signature.hex(), request.node.to_bytes().hex()),
                              b"")
    if isinstance(request, AdminStatus):
        if request.signature is None:
            return EncodedRequest(request.method, _path("admin", "status"), b"")
        return EncodedRequest(request.method, _path("admin", "status", str(request.expiry), request.signature.hex()),
                              b"")
    if not isinstance(request, _KeyRequest):
        raise BadRequest(f"not a Secret Store request: {type(request).__name__}")
    key_id, signature = request.key_id.hex(), request.signature.hex()
    match request:
        case GenerateServerKey(threshold=threshold):
            path = _path("shadow", key_id, signature, str(threshold))
        case StoreDocumentKey(common_point=common_point, encrypted_point=encrypted_point):
            points = (common_point.to_bytes().hex(), encrypted_point.to_bytes().hex())
            path = _path("shadow", key_id, signature, *points)
        case GenerateDocumentKey(threshold=threshold):
            path = _path(key_id, signature, str(threshold))
        case RetrieveServerKey():
            path = _path("server", key_id, signature)
        case RetrieveDocumentKey():
            path = _path(key_id, signature)
        case RetrieveDocumentKeyShadow():
            path = _path("shadow", key_id, signature)
        case SchnorrSign(message_hash=message_hash):
            path = _path("schnorr", key_id, signature, message_hash.hex())
        case EcdsaSign(message_hash=message_hash):
            path = _path("ecdsa", key_id, signature, message_hash.hex())
        case _:
            raise BadRequest(f"not a Secret Store request: {type(request).__name__}")
    return EncodedRequest(request.method, path, b"")


# -- parsing requests (node) -----------------------------------------------------------------

_PREFIXES: Final = frozenset({"shadow", "schnorr", "ecdsa", "server"})
# rustc-hex skips exactly these four bytes, nothing else (not form feed, not Unicode spaces).
_RUSTC_HEX_WHITESPACE: Final = str.maketrans("", "", " \r\n\t")
_HEX_DIGITS: Final = re.compile(r"[0-9a-fA-F]*")
# Rust's unsigned from_str: an optional '+', then one or more ASCII digits.
_RUST_UINT: Final = re.compile(r"\+?[0-9]+")
# A request target must be visible ASCII; hyper refuses anything else before the handler runs.
_VISIBLE_ASCII: Final = re.compile(r"[\x21-\x7e]*")
_ABSOLUTE_FORM: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/?#]*")


def _rustc_hex(text: str) -> bytes | None:
    """rustc-hex ``FromHex``: either case, ASCII whitespace skipped, even digit count, no ``0x``."""
    digits = text.translate(_RUSTC_HEX_WHITESPACE)
    if len(digits) % 2 or not _HEX_DIGITS.fullmatch(digits):
        return None
    return bytes.fromhex(digits)


def parse_rust_uint(text: str, maximum: int) -> int | None:
    """Rust's unsigned ``from_str`` (an optional ``+``, ASCII digits) up to ``maximum``; None otherwise."""
    if not _RUST_UINT.fullmatch(text):
        return None
    value = int(text)
    return value if value <= maximum else None


def _fixed_hex(text: str, size: int, what: str) -> bytes:
    """Parity's ``H256``/``H512``/``Signature`` ``FromStr``: rustc-hex, then an exact length."""
    value = _rustc_hex(text)
    if value is None or len(value) != size:
        raise BadRequest(f"{what} is not {size} bytes of hex")
    return value


def _threshold(text: str) -> int:
    value = parse_rust_uint(text, USIZE_MAX)
    if value is None:
        raise BadRequest("threshold is not a decimal usize")
    return value


def _on_curve(raw: bytes, what: str) -> Point:
    # Parity parses points as raw 64 bytes (H512) and never checks them: an off-curve point
    # parses, is stored, and breaks later maths. We check it, but only after the whole request
    # has matched, so a request Parity would refuse still gets Parity's empty 400. The error is
    # Serde (HTTP 400 with a JSON error body), the closest Parity variant for "bad value".
    try:
        return Point.from_bytes(raw)
    except InvalidPoint as exc:
        raise SerializationError(f"{what} is not a point on secp256k1") from exc


def _origin_form_path(raw_path: str, max_path: int) -> str:
    if len(raw_path) > max_path:
        raise BadRequest(f"request target longer than {max_path} characters")
    if not _VISIBLE_ASCII.fullmatch(raw_path):
        raise BadRequest("request target is not visible ASCII")
    absolute = _ABSOLUTE_FORM.match(raw_path)
    if absolute is not None:
        # hyper's Uri::path() of an absolute-form target is its path alone ("/" if empty).
        raw_path = raw_path[absolute.end() :]
    # The query (and a fragment, which clients should not send) are not part of the path.
    path = re.split(r"[?#]", raw_path, maxsplit=1)[0]
    if absolute is not None and not path:
        path = "/"
    if not path.startswith("/"):
        raise BadRequest("request target is neither origin-form nor absolute-form")
    return path


def parse_request(
    method: str,
    raw_path: str,
    body: bytes,
    *,
    max_path: int = MAX_PATH_LENGTH,
    max_body: int = MAX_BODY_LENGTH,
) -> Request:
    """Parse one request exactly as Parity's HTTP listener does (protocol.md §1.1, §1.2, §1.4).

    :param method: the HTTP method, case-sensitive (``"GET"``, ``"POST"``; anything else fails).
    :param raw_path: the request target as received, still percent-encoded (aiohttp's
        ``request.raw_path``); the query string is ignored.
    :param body: the whole request body; only the servers-set-change request reads it.
    :raises BadRequest: the request does not parse; answer ``400`` with an empty body.
    :raises SerializationError: the request parses but a point in it (store's common or
        encrypted point, a new servers set entry) is not on secp256k1; answer with
        :func:`error_response` (``400`` and Parity's quoted error text). Parity itself accepts
        such points unchecked.
    """
    if len(body) > max_body:
        raise BadRequest(f"request body longer than {max_body} bytes")
    path = _origin_form_path(raw_path, max_path)
    try:
        # percent_decode(...).decode_utf8(): malformed escapes stay literal, bad UTF-8 fails.
        decoded = unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("percent-decoded path is not UTF-8") from exc
    # Splitting happens after decoding, so an encoded "%2F" separates segments, as in Parity.
    segments = decoded.lstrip("/").split("/")
    if segments[0] == "admin":
        return _parse_admin(method, segments, body)

    return _parse_key_request(method, segments)


def _parse_key_request(method: str, segments: list[str]) -> Request:
    """Every request but the admin one: ``[prefix/]{key_id}/{signature}[/...]``, matched exactly."""
    prefix = segments[0] if segments[0] in _PREFIXES else ""
    args = segments[1:] if prefix else segments
    if len(args) < 2 or not args[0] or not args[1]:
        raise BadRequest("a key id and a signature are required")
    key_id = _fixed_hex(args[0], _KEY_ID_SIZE, "server key id")
    signature = _fixed_hex(args[1], _SIGNATURE_SIZE, "signature")
    match (prefix, len(args), method):
        case ("shadow", 3, "POST"):
            return GenerateServerKey(key_id, signature, _threshold(args[2]))
        case ("shadow", 4, "POST"):
            common_point = _fixed_hex(args[2], _POINT_SIZE, "common point")
            encrypted_point = _fixed_hex(args[3], _POINT_SIZE, "encrypted point")
            return StoreDocumentKey(
                key_id,
                signature,
                _on_curve(common_point, "common_point"),
                _on_curve(encrypted_point, "encrypted_point"),
            )
        case ("", 3, "POST"):
            return GenerateDocumentKey(key_id, signature, _threshold(args[2]))
        case ("server", 2, "GET"):
            return RetrieveServerKey(key_id, signature)
        case ("", 2, "GET"):
            return RetrieveDocumentKey(key_id, signature)
        case ("shadow", 2, "GET"):
            return RetrieveDocumentKeyShadow(key_id, signature)
        case ("schnorr", 3, "GET"):
            return SchnorrSign(key_id, signature, _fixed_hex(args[2], _MESSAGE_HASH_SIZE, "message hash"))
        case ("ecdsa", 3, "GET"):
            return EcdsaSign(key_id, signature, _fixed_hex(args[2], _MESSAGE_HASH_SIZE, "message hash"))
    raise BadRequest(f"no endpoint for {method} with prefix {prefix!r} and {len(args)} arguments")


def _parse_admin(method: str, segments: list[str],
                 body: bytes) -> ServersSetChange | AdminRefresh | AdminRepair | AdminStatus:
    match (segments[1] if len(segments) > 1 else "", len(segments), method):
        case ("status", 2, "GET"):
            return AdminStatus()
        case ("status", 4, "GET"):
            expiry = parse_rust_uint(segments[2], USIZE_MAX)
            if expiry is None:
                raise BadRequest("expiry is not a decimal unix time")
            return AdminStatus(expiry, _fixed_hex(segments[3], _SIGNATURE_SIZE, "status signature"))
        case ("refresh", 4, "POST"):
            return AdminRefresh(_fixed_hex(segments[2], _SIGNATURE_SIZE, "set signature"),
                                _fixed_hex(segments[3], _SIGNATURE_SIZE, "refresh signature"))
        case ("repair", 5, "POST"):
            node = _fixed_hex(segments[4], _POINT_SIZE, "node id")
            return AdminRepair(_fixed_hex(segments[2], _SIGNATURE_SIZE, "set signature"),
                               _fixed_hex(segments[3], _SIGNATURE_SIZE, "repair signature"),
                               _on_curve(node, "the node to repair"))
    if method != POST or len(segments) != 4 or segments[1] != "servers_set_change":
        raise BadRequest("the admin requests are POST /admin/servers_set_change/{old}/{new}, "
                         "POST /admin/refresh/{set}/{refresh}, POST /admin/repair/{set}/{repair}/{node}, "
                         "GET /admin/status[/{expiry}/{signature}]")
    old_set_signature = _fixed_hex(segments[2], _SIGNATURE_SIZE, "old set signature")
    new_set_signature = _fixed_hex(segments[3], _SIGNATURE_SIZE, "new set signature")
    node_ids = _node_id_set(body)
    new_servers_set = tuple(_on_curve(raw, "a new servers set entry") for raw in node_ids)
    return ServersSetChange(old_set_signature, new_set_signature, new_servers_set)


def _node_id_set(body: bytes) -> list[bytes]:
    """serde_json ``BTreeSet<SerializablePublic>``: a JSON array of ``"0x"``-prefixed H512 strings."""
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadRequest("servers set change body is not JSON") from exc
    if not isinstance(value, list):
        raise BadRequest("servers set change body is not a JSON array")
    node_ids = set()
    for item in value:
        # SerializablePublic: starts with "0x", even *byte* length overall, then H512::from_str.
        if not isinstance(item, str) or not item.startswith("0x") or len(item.encode("utf-8")) % 2:
            raise BadRequest("a new servers set entry is not a 0x-prefixed hex string")
        node_ids.add(_fixed_hex(item[2:], _POINT_SIZE, "a new servers set entry"))
    return sorted(node_ids)


# -- responses (node) ------------------------------------------------------------------------


def _hex_string(blob: bytes) -> str:
    return "0x" + blob.hex()


def encode_point(point: Point) -> bytes:
    """A point response body: the JSON string ``"0x"`` + 128 lowercase hex (endpoints 1 and 4)."""
    return json.dumps(_hex_string(point.to_bytes())).encode("ascii")


def encode_bytes(blob: bytes) -> bytes:
    """A bytes response body: the JSON string ``"0x"`` + lowercase hex (endpoints 3, 5, 7, 8)."""
    return json.dumps(_hex_string(blob)).encode("ascii")


def encode_shadow(decrypted_secret: Point, common_point: Point, decrypt_shadows: Sequence[bytes]) -> bytes:
    """The shadow retrieval body (endpoint 6), compact, fields in Parity's order (§1.4.6)."""
    document = {
        "decrypted_secret": _hex_string(decrypted_secret.to_bytes()),
        "common_point": _hex_string(common_point.to_bytes()),
        "decrypt_shadows": [_hex_string(shadow) for shadow in decrypt_shadows],
    }
    return json.dumps(document, separators=(",", ":")).encode("ascii")


def error_response(error: KeyServerError) -> tuple[int, bytes]:
    """Status and body of Parity's error response (§1.6); the content type is :data:`CONTENT_TYPE_JSON`.

    The body is ``serde_json::to_vec(&format!("\\"{}\\"", error))``: the display text wrapped in
    literal quotes, then JSON-encoded, e.g. ``"\\"Access denied\\""``. serde_json and
    ``json.dumps(ensure_ascii=False)`` escape the same characters (quote, backslash, controls).
    """
    # Rust strings cannot hold lone surrogates; replace any so the body is valid UTF-8.
    text = str(error).encode("utf-8", "replace").decode("utf-8")
    return error.status, json.dumps(f'"{text}"', ensure_ascii=False).encode("utf-8")


# -- responses (clients) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DocumentKeyShadow:
    """A decoded shadow retrieval response (§1.4.6); each shadow is ``ECIES(Q, ε_i)``."""

    decrypted_secret: Point
    common_point: Point
    decrypt_shadows: tuple[bytes, ...]


def _json_value(body: bytes, what: str) -> object:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadResponse(f"{what} is not JSON") from exc


def _strict_point(value: object, what: str) -> Point:
    try:
        return Point.from_bytes(parse_hex(value, what, _POINT_SIZE, error=BadResponse))
    except InvalidPoint as exc:
        raise BadResponse(f"{what} is not a point on secp256k1") from exc


def decode_point_response(body: bytes) -> Point:
    """Decode a point response (server key generation or retrieval).

    :raises BadResponse: not a JSON ``"0x"`` + 128-hex string, or not a curve point.
    """
    return _strict_point(_json_value(body, "point response"), "point response")


def decode_bytes_response(body: bytes, size: int | None = None) -> bytes:
    """Decode a ``"0x…"`` bytes response; ``size`` (e.g. :data:`ENCRYPTED_DOCUMENT_KEY_SIZE`) is enforced.

    :raises BadResponse: not a JSON ``"0x"``-prefixed hex string of the expected size.
    """
    return parse_hex(_json_value(body, "bytes response"), "bytes response", size, error=BadResponse)


_SHADOW_FIELDS: Final = ("decrypted_secret", "common_point", "decrypt_shadows")


def decode_shadow_response(body: bytes) -> DocumentKeyShadow:
    """Decode a shadow retrieval response: two points and at least one 145-byte encrypted shadow.

    :raises BadResponse: missing or extra fields, wrong sizes, or points not on the curve.
    """
    value = _json_value(body, "shadow response")
    if not isinstance(value, dict) or sorted(value) != sorted(_SHADOW_FIELDS):
        raise BadResponse(f"shadow response must be an object with exactly {', '.join(_SHADOW_FIELDS)}")
    shadows = value["decrypt_shadows"]
    if not isinstance(shadows, list) or not shadows:
        raise BadResponse("decrypt_shadows must be a non-empty array")
    return DocumentKeyShadow(
        decrypted_secret=_strict_point(value["decrypted_secret"], "decrypted_secret"),
        common_point=_strict_point(value["common_point"], "common_point"),
        decrypt_shadows=tuple(
            parse_hex(item, "decrypt shadow", ENCRYPTED_SHADOW_SIZE, error=BadResponse) for item in shadows
        ),
    )


def decode_error_body(body: bytes) -> str:
    """The display text inside an error body: JSON-decode, then strip one pair of literal quotes.

    :raises BadResponse: the body is not a JSON string.
    """
    value = _json_value(body, "error body")
    if not isinstance(value, str):
        raise BadResponse("error body is not a JSON string")
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        return value[1:-1]
    return value


_BY_TEXT: Final = {cls.text: cls for cls in KEY_SERVER_ERRORS.values() if cls.text}
_BY_PREFIX: Final = {cls.prefix: cls for cls in KEY_SERVER_ERRORS.values() if not cls.text}


def error_from_text(text: str) -> KeyServerError:
    """The :class:`KeyServerError` whose display text is ``text``.

    Variants with a payload (``Insufficient requester data: …``, ``Internal error: …``, …) keep
    the part after ``": "`` as their detail. Texts of variants we do not model (``cryptographic
    error …``, ``IO error: …``) become :class:`InternalError` with the whole text as detail.
    """
    exact = _BY_TEXT.get(text)
    if exact is not None:
        return exact()
    for prefix, cls in _BY_PREFIX.items():
        if text == prefix:
            return cls()
        if text.startswith(prefix + ": "):
            return cls(text[len(prefix) + 2 :])
    if text.startswith(TooManyRequests.prefix + ": "):  # ours (a quota): not a Parity variant
        return too_many_requests(text[len(TooManyRequests.prefix) + 2 :])
    return InternalError(text)


_RETRY_IN: Final = re.compile(r"retry in (\d+(?:\.\d+)?) s")


def too_many_requests(detail: str, retry_after: str | None = None) -> TooManyRequests:
    """A quota's refusal read back by a client: its wait from the ``Retry-After`` header (whole
    seconds), or else from the text's "retry in <s> s", or else 1 s."""
    wait: float | None = None
    if retry_after is not None and retry_after.strip().isdigit():
        wait = float(retry_after.strip())
    elif (found := _RETRY_IN.search(detail)) is not None:
        wait = float(found.group(1))
    return TooManyRequests(detail, 1.0 if wait is None else wait, "unknown")


_EMPTY_BODY_HINTS: Final = {
    BAD_REQUEST_STATUS: " (the key server could not parse the request)",
    CORS_REJECTED_STATUS: " (the key server rejected the request's Origin)",
}


def error_from_response(status: int, body: bytes, retry_after: str | None = None) -> KeyServerError:
    """The error a key server reported with a non-2xx ``status`` and ``body`` (§1.6), for clients.

    Parity's quoted-text bodies map back to their class (:func:`error_from_text`); a quota's 429
    to :class:`TooManyRequests`, its ``retry_after`` from the answer's ``Retry-After`` header
    (``retry_after``) when there is one. The empty bodies of an unparseable request (400) or a
    rejected Origin (404), and bodies that are not Parity's (a proxy's HTML page), become
    :class:`InternalError` naming the status.
    """
    if not body:
        return InternalError(f"HTTP {status} with an empty body{_EMPTY_BODY_HINTS.get(status, '')}")
    try:
        text = decode_error_body(body)
    except BadResponse:
        size = len(body)
        return InternalError(f"HTTP {status} with a body that is not a Secret Store error ({size} bytes)")
    if status == TooManyRequests.status and text.startswith(TooManyRequests.prefix + ": "):
        return too_many_requests(text[len(TooManyRequests.prefix) + 2 :], retry_after)
    return error_from_text(text)
