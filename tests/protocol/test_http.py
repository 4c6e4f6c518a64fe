"""Tests for the Parity HTTP API wire format: requests, responses and error bodies."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocean_secret_store import exceptions
from ocean_secret_store.crypto.curve import G, N, Point
from ocean_secret_store.exceptions import KEY_SERVER_ERRORS, KeyServerError, SerializationError
from ocean_secret_store.protocol import http
from ocean_secret_store.protocol.http import (
    BadRequest,
    BadResponse,
    EcdsaSign,
    GenerateDocumentKey,
    GenerateServerKey,
    RetrieveDocumentKey,
    RetrieveDocumentKeyShadow,
    RetrieveServerKey,
    SchnorrSign,
    ServersSetChange,
    StoreDocumentKey,
    parse_request,
)

# Values from Parity's own listener tests (secret-store/src/listener/http_listener.rs,
# parse_request_successful / parse_request_failed); key 00..01 with this signature is also the
# protocol.md §10.5 "HTTP test" vector.
KEY = "00" * 31 + "01"
SIG = (
    "a199fb39e11eefb61c78a4074a53c0d4424600a3e74aad4fb9d93a26c30d067e"
    "1d4d29936de0c73f19827394a1dd049480a0d581aee7ae7546968da7d3d1c2fd01"
)
SIG_B = "b" + SIG[1:]
COMMON = (
    "b486d3840218837b035c66196ecb15e6b067ca20101e11bd5e626288ab6806ec"
    "c70b8307012626bd512bad1559112d11d21025cef48cc7a1d2f3976da08f36c8"
)
ENCRYPTED = (
    "1395568277679f7f583ab7c0992da35f26cde57149ee70e524e49bdae62db3e1"
    "8eb96122501e7cbb798b784395d7bb5a499edead0706638ad056d886e56cf8fb"
)
MESSAGE = "281b6bf43cb86d0dc7b98e1b7def4a80f3ce16d28d2308f934f116767306f06c"
# protocol.md §10.1 (Parity's RPC secretstore_shadowDecrypt test): two node ids / shadow points
# and one 145-byte encrypted decrypt shadow.
NODE1 = (
    "843645726384530ffb0c52f175278143b5a93959af7864460f5a4fec9afd1450"
    "cfb8aef63dec90657f43f55b13e0a73c7524d4e9a13c051b4e5f1e53f39ecd91"
)
NODE2 = (
    "07230e34ebfe41337d3ed53b186b3861751f2401ee74b988bba55694e2a6f60c"
    "757677e194be2e53c3523cc8548694e636e6acb35c4e8fdc5e29d28679b9b2f3"
)
SHADOW = (
    "049ce50bbadb6352574f2c59742f78df83333975cbd5cbb151c6e8628749a33dc1fa93bb6dffae5994e3eb98ae859ed5"
    "5ee82937538e6adb054d780d1e89ff140f121529eeadb1161562af9d3342db0008919ca280a064305e5a4e518e93279d"
    "e7a9396fe5136a9658e337e8e276221248c381c5384cd1ad28e5921f46ff058d5fbcf8a388fc881d0dd29421c218d51761"
)
OFF_CURVE = "00" * 64
ADMIN_BODY = f'["0x{NODE1}",\n "0x{NODE2}"]'.encode()
ADMIN = f"/admin/servers_set_change/{SIG}/{SIG_B}"


REQUEST_TYPES = (
    GenerateServerKey, StoreDocumentKey, GenerateDocumentKey, RetrieveServerKey, RetrieveDocumentKey,
    RetrieveDocumentKeyShadow, SchnorrSign, EcdsaSign, ServersSetChange,
)


def b(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text)


def pt(hex_text: str) -> Point:
    return Point.from_bytes(b(hex_text))


# -- parsing: every endpoint ------------------------------------------------------------------

VALID = [
    ("POST", f"/shadow/{KEY}/{SIG}/2", b"", GenerateServerKey(b(KEY), b(SIG), 2)),
    (
        "POST",
        f"/shadow/{KEY}/{SIG}/{COMMON}/{ENCRYPTED}",
        b"",
        StoreDocumentKey(b(KEY), b(SIG), pt(COMMON), pt(ENCRYPTED)),
    ),
    ("POST", f"/{KEY}/{SIG}/2", b"", GenerateDocumentKey(b(KEY), b(SIG), 2)),
    ("GET", f"/server/{KEY}/{SIG}", b"", RetrieveServerKey(b(KEY), b(SIG))),
    ("GET", f"/{KEY}/{SIG}", b"", RetrieveDocumentKey(b(KEY), b(SIG))),
    ("GET", f"/shadow/{KEY}/{SIG}", b"", RetrieveDocumentKeyShadow(b(KEY), b(SIG))),
    ("GET", f"/schnorr/{KEY}/{SIG}/{MESSAGE}", b"", SchnorrSign(b(KEY), b(SIG), b(MESSAGE))),
    ("GET", f"/ecdsa/{KEY}/{SIG}/{MESSAGE}", b"", EcdsaSign(b(KEY), b(SIG), b(MESSAGE))),
    ("POST", ADMIN, ADMIN_BODY, ServersSetChange(b(SIG), b(SIG_B), (pt(NODE1), pt(NODE2)))),
]


@pytest.mark.parametrize(("method", "path", "body", "expected"), VALID,
                         ids=[type(v[3]).__name__ for v in VALID])
def test_parses_every_endpoint(method: str, path: str, body: bytes, expected: http.Request) -> None:
    assert parse_request(method, path, body) == expected
    assert type(expected).method == method


# Quirks Parity accepts: each parses to the same request as the plain path.
DOC = RetrieveDocumentKey(b(KEY), b(SIG))
SHD = RetrieveDocumentKeyShadow(b(KEY), b(SIG))
T_MAX = 2**64 - 1
LENIENT = [
    # Parity's own test: percent-decoding happens before hex parsing.
    ("percent-encoded hex digit", "GET", f"/%30{KEY[1:]}/{SIG}", DOC),
    ("uppercase hex", "GET", f"/{KEY.upper()}/{SIG.upper()}", DOC),
    ("query string ignored", "GET", f"/shadow/{KEY}/{SIG}?a=1&b=/x/", SHD),
    ("leading slashes stripped", "GET", f"///shadow/{KEY}/{SIG}", SHD),
    ("encoded slash splits", "GET", f"/shadow%2F{KEY}%2f{SIG}", SHD),
    ("whitespace in hex skipped", "GET", f"/{KEY[:10]}%20%09%0A%0D{KEY[10:]}/{SIG}", DOC),
    ("whitespace inside a byte", "GET", f"/{KEY[:63]}%20{KEY[63:]}/{SIG}", DOC),
    ("threshold with plus", "POST", f"/shadow/{KEY}/{SIG}/+2", GenerateServerKey(b(KEY), b(SIG), 2)),
    ("threshold leading zeros", "POST", f"/{KEY}/{SIG}/007", GenerateDocumentKey(b(KEY), b(SIG), 7)),
    ("threshold zero", "POST", f"/{KEY}/{SIG}/0", GenerateDocumentKey(b(KEY), b(SIG), 0)),
    ("threshold usize max", "POST", f"/{KEY}/{SIG}/{T_MAX}", GenerateDocumentKey(b(KEY), b(SIG), T_MAX)),
    # v = 27 is not a valid recovery id, but parsing does not look at it: the node's recovery
    # turns it into 400 "Insufficient requester data: bad signature".
    ("signature with v=27", "GET", f"/{KEY}/{SIG[:-2]}1b", RetrieveDocumentKey(b(KEY), b(SIG[:-2] + "1b"))),
    ("absolute-form target", "GET", f"http://127.0.0.1:8082/{KEY}/{SIG}", DOC),
    ("malformed escape kept literally", "GET", f"/{KEY}/{SIG}?%zz", DOC),
]


@pytest.mark.parametrize(("method", "path", "expected"), [c[1:] for c in LENIENT],
                         ids=[c[0] for c in LENIENT])
def test_accepts_what_parity_accepts(method: str, path: str, expected: http.Request) -> None:
    assert parse_request(method, path, b"") == expected


def test_body_of_non_admin_request_is_ignored() -> None:
    assert parse_request("POST", f"/{KEY}/{SIG}/1", b"anything") == GenerateDocumentKey(b(KEY), b(SIG), 1)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"[]", ()),
        (f'["0x{NODE2}","0x{NODE1}"]'.encode(), (pt(NODE2), pt(NODE1))),
        (f'["0x{NODE1}","0x{NODE1.upper()}"]'.encode(), (pt(NODE1),)),
        (f' \n["0x{NODE1}" , "0x{NODE1}"]\t'.encode(), (pt(NODE1),)),
        # An even total length with whitespace inside still parses: rustc-hex skips it.
        (f'["0x{NODE1[:64]}  {NODE1[64:]}"]'.encode(), (pt(NODE1),)),
    ],
    ids=["empty", "reordered", "duplicate by case", "json whitespace", "hex whitespace"],
)
def test_admin_body_is_a_set(body: bytes, expected: tuple[Point, ...]) -> None:
    request = parse_request("POST", ADMIN, body)
    assert isinstance(request, ServersSetChange)
    assert request.new_servers_set == tuple(sorted(expected, key=Point.to_bytes))


# -- parsing: failures with an empty 400 ----------------------------------------------------

MALFORMED = [
    # Parity's parse_request_failed cases.
    ("empty target", "GET", "", b""),
    ("only prefix", "GET", "/shadow", b""),
    ("empty arguments", "GET", "///2", b""),
    ("empty arguments after prefix", "GET", "/shadow///2", b""),
    ("key only", "GET", f"/{KEY}", b""),
    ("key with trailing slash", "GET", f"/{KEY}/", b""),
    ("non-hex arguments", "GET", "/a/b", b""),
    ("schnorr extra segment", "GET", f"/schnorr/{KEY}/{SIG}/{MESSAGE}/{MESSAGE}", b""),
    ("ecdsa extra segment", "GET", f"/ecdsa/{KEY}/{SIG}/{MESSAGE}/{MESSAGE}", b""),
    ("admin bad signatures", "POST", "/admin/servers_set_change/xxx/yyy", ADMIN_BODY),
    ("admin empty body", "POST", ADMIN, b""),
    # 0x prefixes: rustc-hex rejects the 'x'.
    ("0x key", "GET", f"/0x{KEY}/{SIG}", b""),
    ("0x signature", "GET", f"/{KEY}/0x{SIG}", b""),
    ("0x common point", "POST", f"/shadow/{KEY}/{SIG}/0x{COMMON}/{ENCRYPTED}", b""),
    ("0x message hash", "GET", f"/schnorr/{KEY}/{SIG}/0x{MESSAGE}", b""),
    ("percent-encoded 0x", "GET", f"/%30%78{KEY}/{SIG}", b""),
    # Lengths and characters.
    ("odd key", "GET", f"/{KEY[:-1]}/{SIG}", b""),
    ("short key", "GET", f"/{KEY[:-2]}/{SIG}", b""),
    ("long key", "GET", f"/{KEY}00/{SIG}", b""),
    ("non-hex key", "GET", f"/{KEY[:-1]}g/{SIG}", b""),
    ("unicode digit in key", "GET", f"/{KEY[:-1]}%D9%A1/{SIG}", b""),
    ("form feed is not skipped", "GET", f"/{KEY}%0C/{SIG}", b""),
    ("short signature", "GET", f"/{KEY}/{SIG[:-2]}", b""),
    ("long signature", "GET", f"/{KEY}/{SIG}00", b""),
    ("short common point", "POST", f"/shadow/{KEY}/{SIG}/{COMMON[:-2]}/{ENCRYPTED}", b""),
    ("long encrypted point", "POST", f"/shadow/{KEY}/{SIG}/{COMMON}/{ENCRYPTED}00", b""),
    ("short message hash", "GET", f"/ecdsa/{KEY}/{SIG}/{MESSAGE[:-2]}", b""),
    # Trailing slashes and extra segments.
    ("trailing slash generate", "POST", f"/shadow/{KEY}/{SIG}/2/", b""),
    ("trailing slash retrieve", "GET", f"/{KEY}/{SIG}/", b""),
    ("trailing slash server", "GET", f"/server/{KEY}/{SIG}/", b""),
    ("encoded trailing slash", "GET", f"/{KEY}/{SIG}%2F", b""),
    ("extra segment generate", "POST", f"/{KEY}/{SIG}/2/3", b""),
    ("extra segment server", "GET", f"/server/{KEY}/{SIG}/{MESSAGE}", b""),
    # Methods.
    ("GET generate", "GET", f"/shadow/{KEY}/{SIG}/2", b""),
    ("POST retrieve", "POST", f"/{KEY}/{SIG}", b""),
    ("POST shadow retrieve", "POST", f"/shadow/{KEY}/{SIG}", b""),
    ("POST schnorr", "POST", f"/schnorr/{KEY}/{SIG}/{MESSAGE}", b""),
    ("POST server", "POST", f"/server/{KEY}/{SIG}", b""),
    ("GET store", "GET", f"/shadow/{KEY}/{SIG}/{COMMON}/{ENCRYPTED}", b""),
    ("PUT", "PUT", f"/{KEY}/{SIG}", b""),
    ("HEAD", "HEAD", f"/{KEY}/{SIG}", b""),
    ("DELETE", "DELETE", f"/{KEY}/{SIG}", b""),
    ("lowercase method", "get", f"/{KEY}/{SIG}", b""),
    ("OPTIONS pre-flight", "OPTIONS", f"/{KEY}/{SIG}", b""),
    ("OPTIONS star", "OPTIONS", "*", b""),
    # Prefixes are exact and case-sensitive.
    ("unknown prefix", "GET", f"/document/{KEY}/{SIG}", b""),
    ("capitalised prefix", "GET", f"/Shadow/{KEY}/{SIG}", b""),
    ("server with threshold", "POST", f"/server/{KEY}/{SIG}/1", b""),
    ("schnorr without hash", "GET", f"/schnorr/{KEY}/{SIG}", b""),
    ("store without prefix", "POST", f"/{KEY}/{SIG}/{COMMON}/{ENCRYPTED}", b""),
    # Thresholds: usize::from_str.
    ("negative threshold", "POST", f"/shadow/{KEY}/{SIG}/-1", b""),
    ("negative zero threshold", "POST", f"/shadow/{KEY}/{SIG}/-0", b""),
    ("fractional threshold", "POST", f"/shadow/{KEY}/{SIG}/1.0", b""),
    ("hex threshold", "POST", f"/{KEY}/{SIG}/0x1", b""),
    ("exponent threshold", "POST", f"/{KEY}/{SIG}/1e3", b""),
    ("plus only threshold", "POST", f"/{KEY}/{SIG}/+", b""),
    ("empty threshold", "POST", f"/{KEY}/{SIG}/", b""),
    ("space before threshold", "POST", f"/{KEY}/{SIG}/%201", b""),
    ("underscore threshold", "POST", f"/{KEY}/{SIG}/1_0", b""),
    ("unicode digit threshold", "POST", f"/{KEY}/{SIG}/%D9%A1", b""),
    ("threshold overflow", "POST", f"/{KEY}/{SIG}/{2**64}", b""),
    ("malformed escape as threshold", "POST", f"/{KEY}/{SIG}/%zz", b""),
    # Encoding of the target itself.
    ("invalid utf-8", "GET", f"/%ff{KEY}/{SIG}", b""),
    ("truncated utf-8", "GET", f"/{KEY}/{SIG}%c3", b""),
    ("raw non-ascii", "GET", f"/ключ/{SIG}", b""),
    ("raw space", "GET", f"/{KEY} /{SIG}", b""),
    ("relative target", "GET", f"{KEY}/{SIG}", b""),
    ("absolute-form without path", "GET", "http://127.0.0.1:8082?x=1", b""),
    ("oversized target", "GET", f"/{KEY}/{SIG}?" + "a" * 2048, b""),
    # Whitespace that rustc-hex would skip still counts towards the size guard.
    ("oversized but otherwise valid", "GET", f"/{KEY}" + "%20" * 700 + f"/{SIG}", b""),
    ("oversized body", "POST", f"/{KEY}/{SIG}/1", b"x" * (http.MAX_BODY_LENGTH + 1)),
    # Admin request shape.
    ("admin GET", "GET", ADMIN, ADMIN_BODY),
    ("admin other action", "POST", f"/admin/servers_set/{SIG}/{SIG_B}", ADMIN_BODY),
    ("admin three segments", "POST", f"/admin/servers_set_change/{SIG}", ADMIN_BODY),
    ("admin trailing slash", "POST", ADMIN + "/", ADMIN_BODY),
    ("admin 0x signature", "POST", f"/admin/servers_set_change/0x{SIG}/{SIG_B}", ADMIN_BODY),
    # Admin body: serde_json BTreeSet<SerializablePublic>.
    ("admin body object", "POST", ADMIN, f'{{"a":"0x{NODE1}"}}'.encode()),
    ("admin body string", "POST", ADMIN, f'"0x{NODE1}"'.encode()),
    ("admin body null", "POST", ADMIN, b"null"),
    ("admin element number", "POST", ADMIN, b"[1]"),
    ("admin element NaN", "POST", ADMIN, b"[NaN]"),
    ("admin element nested", "POST", ADMIN, f'[["0x{NODE1}"]]'.encode()),
    ("admin element without 0x", "POST", ADMIN, f'["{NODE1}"]'.encode()),
    ("admin element with 0X", "POST", ADMIN, f'["0X{NODE1}"]'.encode()),
    ("admin element odd length", "POST", ADMIN, f'["0x{NODE1} "]'.encode()),
    ("admin element short", "POST", ADMIN, f'["0x{NODE1[:-2]}"]'.encode()),
    ("admin element long", "POST", ADMIN, f'["0x{NODE1}00"]'.encode()),
    ("admin trailing comma", "POST", ADMIN, f'["0x{NODE1}",]'.encode()),
    ("admin trailing garbage", "POST", ADMIN, f'["0x{NODE1}"]x'.encode()),
    ("admin unterminated", "POST", ADMIN, b"["),
    ("admin invalid utf-8", "POST", ADMIN, b'["\xff"]'),
    ("admin utf-8 bom", "POST", ADMIN, b"\xef\xbb\xbf[]"),
    ("admin deep nesting", "POST", ADMIN, b"[" * 20000),
]


@pytest.mark.parametrize(("method", "path", "body"), [c[1:] for c in MALFORMED],
                         ids=[c[0] for c in MALFORMED])
def test_malformed_requests_are_bad_requests(method: str, path: str, body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_request(method, path, body)


def test_size_limits_are_configurable() -> None:
    path = f"/{KEY}/{SIG}/1"
    assert parse_request("POST", path, b"12345", max_body=5) == GenerateDocumentKey(b(KEY), b(SIG), 1)
    with pytest.raises(BadRequest):
        parse_request("POST", path, b"123456", max_body=5)
    with pytest.raises(BadRequest):
        parse_request("POST", path, b"", max_path=len(path) - 1)


# -- parsing: off-curve points give an error body, not an empty 400 ---------------------------

OFF_CURVE_REQUESTS = [
    ("common point", "POST", f"/shadow/{KEY}/{SIG}/{OFF_CURVE}/{ENCRYPTED}", b""),
    ("encrypted point", "POST", f"/shadow/{KEY}/{SIG}/{COMMON}/{OFF_CURVE}", b""),
    ("node id", "POST", ADMIN, f'["0x{NODE1}","0x{OFF_CURVE}"]'.encode()),
]


@pytest.mark.parametrize(
    ("method", "path", "body"), [c[1:] for c in OFF_CURVE_REQUESTS], ids=[c[0] for c in OFF_CURVE_REQUESTS]
)
def test_off_curve_points_are_serialization_errors(method: str, path: str, body: bytes) -> None:
    with pytest.raises(SerializationError) as caught:
        parse_request(method, path, body)
    status, error_body = http.error_response(caught.value)
    assert status == 400
    assert decoded_text(error_body).startswith("Serialization error: ")


def test_request_shape_is_checked_before_points() -> None:
    # Parity refuses these before it would ever look at a point, so they stay empty 400s.
    with pytest.raises(BadRequest):
        parse_request("GET", f"/shadow/{KEY}/{SIG}/{OFF_CURVE}/{ENCRYPTED}", b"")
    with pytest.raises(BadRequest):
        parse_request("POST", f"/shadow/{KEY}/{SIG}/{OFF_CURVE}/{ENCRYPTED[:-2]}", b"")


@given(
    method=st.sampled_from(["GET", "POST", "PUT", "OPTIONS"]),
    path=st.text(max_size=300),
    body=st.binary(max_size=200),
)
def test_parse_request_fails_only_with_its_documented_errors(method: str, path: str, body: bytes) -> None:
    try:
        result = parse_request(method, path, body)
    except (BadRequest, SerializationError):
        return
    assert isinstance(result, REQUEST_TYPES)


# -- building requests ------------------------------------------------------------------------

BUILDERS = [
    (http.server_key_generation_path(b(KEY), b(SIG), 2), f"/shadow/{KEY}/{SIG}/2"),
    (
        http.document_key_storing_path(b(KEY), b(SIG), pt(COMMON), pt(ENCRYPTED)),
        f"/shadow/{KEY}/{SIG}/{COMMON}/{ENCRYPTED}",
    ),
    (http.server_and_document_key_generation_path(b(KEY), b(SIG), 2), f"/{KEY}/{SIG}/2"),
    (http.server_key_retrieval_path(b(KEY), b(SIG)), f"/server/{KEY}/{SIG}"),
    (http.document_key_retrieval_path(b(KEY), b(SIG)), f"/{KEY}/{SIG}"),
    (http.document_key_shadow_retrieval_path(b(KEY), b(SIG)), f"/shadow/{KEY}/{SIG}"),
    (http.schnorr_signing_path(b(KEY), b(SIG), b(MESSAGE)), f"/schnorr/{KEY}/{SIG}/{MESSAGE}"),
    (http.ecdsa_signing_path(b(KEY), b(SIG), b(MESSAGE)), f"/ecdsa/{KEY}/{SIG}/{MESSAGE}"),
    (http.servers_set_change_path(b(SIG), b(SIG_B)), ADMIN),
]


@pytest.mark.parametrize(("built", "expected"), BUILDERS, ids=[e for _, e in BUILDERS])
def test_path_builders(built: str, expected: str) -> None:
    assert built == expected


def test_servers_set_change_body_is_sorted_compact_json() -> None:
    body = http.servers_set_change_body([pt(NODE1), pt(NODE2), pt(NODE1)])
    assert body == f'["0x{NODE2}","0x{NODE1}"]'.encode()


@pytest.mark.parametrize(
    "make",
    [
        lambda: GenerateServerKey(b(KEY)[:31], b(SIG), 1),
        lambda: GenerateServerKey(b(KEY), b(SIG)[:64], 1),
        lambda: GenerateServerKey(b(KEY), b(SIG), -1),
        lambda: GenerateDocumentKey(b(KEY), b(SIG), 2**64),
        lambda: GenerateDocumentKey(b(KEY), b(SIG), True),
        lambda: RetrieveDocumentKey(KEY, b(SIG)),  # type: ignore[arg-type]  # bad input on purpose
        lambda: SchnorrSign(b(KEY), b(SIG), b(MESSAGE)[:31]),
        lambda: StoreDocumentKey(b(KEY), b(SIG), b(COMMON), pt(ENCRYPTED)),  # type: ignore[arg-type]  # bad input on purpose
        lambda: ServersSetChange(b(SIG), b(SIG_B), (b(NODE1),)),  # type: ignore[arg-type]  # bad input on purpose
        lambda: http.encode_request(object()),  # type: ignore[arg-type]  # bad input on purpose
    ],
    ids=["short key", "short sig", "negative t", "t overflow", "bool t", "str key", "short hash", "raw point",
         "raw node", "not a request"],
)
def test_requests_that_cannot_go_on_the_wire(make: object) -> None:
    with pytest.raises(BadRequest):
        make()  # type: ignore[operator]  # the parameters are zero-argument lambdas


key_ids = st.binary(min_size=32, max_size=32)
signatures = st.binary(min_size=65, max_size=65)
thresholds = st.integers(min_value=0, max_value=2**64 - 1)
points = st.integers(min_value=1, max_value=N - 1).map(Point.generator_mul)
requests = st.one_of(
    st.builds(GenerateServerKey, key_ids, signatures, thresholds),
    st.builds(StoreDocumentKey, key_ids, signatures, points, points),
    st.builds(GenerateDocumentKey, key_ids, signatures, thresholds),
    st.builds(RetrieveServerKey, key_ids, signatures),
    st.builds(RetrieveDocumentKey, key_ids, signatures),
    st.builds(RetrieveDocumentKeyShadow, key_ids, signatures),
    st.builds(SchnorrSign, key_ids, signatures, key_ids),
    st.builds(EcdsaSign, key_ids, signatures, key_ids),
    st.builds(ServersSetChange, signatures, signatures, st.lists(points, max_size=5).map(tuple)),
)


@given(requests)
def test_build_then_parse_round_trips(request: http.Request) -> None:
    encoded = http.encode_request(request)
    assert encoded.method == type(request).method
    assert parse_request(encoded.method, encoded.path, encoded.body) == request


_WORDS = frozenset({"shadow", "schnorr", "ecdsa", "server", "admin", "servers_set_change"})
_RUSTC_HEX_WHITESPACE = ["%20", "%09", "%0A", "%0D"]


@given(requests, st.data())
def test_escapes_hex_case_and_whitespace_do_not_change_the_request(
    request: http.Request, data: st.DataObject
) -> None:
    # Parity percent-decodes the whole path before splitting it (so even '/' may be escaped),
    # reads hex in either case and skips ASCII whitespace inside hex; prefixes stay case-sensitive
    # and the decimal threshold takes no whitespace.
    encoded = http.encode_request(request)
    path = ""
    for segment in encoded.path[1:].split("/"):
        # An origin-form target must start with a literal '/'; later separators may be escaped.
        path += data.draw(st.sampled_from(["/", "%2F", "%2f"])) if path else "/"
        hex_segment = segment not in _WORDS and not segment.isdigit()
        for char in segment:
            if hex_segment and data.draw(st.booleans()):
                path += data.draw(st.sampled_from(_RUSTC_HEX_WHITESPACE))
            choice = data.draw(st.sampled_from(["keep", "upper", "escape"]))
            if choice == "escape":
                path += f"%{ord(char):02x}"
            elif choice == "upper" and hex_segment:
                path += char.upper()
            else:
                path += char
    assert parse_request(encoded.method, path, encoded.body, max_path=10_000) == request


# -- responses --------------------------------------------------------------------------------


def test_encode_point_is_a_compact_json_string() -> None:
    assert http.encode_point(G) == (
        b'"0x79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798'
        b'483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8"'
    )
    assert http.decode_point_response(http.encode_point(G)) == G


def test_encode_bytes() -> None:
    assert http.encode_bytes(b"\x01\x02\x03\x04") == b'"0x01020304"'  # Parity's serialization test
    assert http.encode_bytes(b"") == b'"0x"'


def test_shadow_body_is_byte_exact() -> None:
    body = http.encode_shadow(pt(NODE1), pt(NODE2), [b(SHADOW)])
    assert body == (
        f'{{"decrypted_secret":"0x{NODE1}","common_point":"0x{NODE2}","decrypt_shadows":["0x{SHADOW}"]}}'
    ).encode()
    decoded = http.decode_shadow_response(body)
    assert decoded == http.DocumentKeyShadow(pt(NODE1), pt(NODE2), (b(SHADOW),))


def test_shadow_decoding_ignores_field_order_and_whitespace() -> None:
    body = json.dumps(
        {"decrypt_shadows": ["0x" + SHADOW, "0x" + SHADOW.upper()], "common_point": "0x" + NODE2,
         "decrypted_secret": "0x" + NODE1},
        indent=2,
    ).encode()
    assert http.decode_shadow_response(body).decrypt_shadows == (b(SHADOW), b(SHADOW))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b'"0x' + NODE1.encode(),
        NODE1.encode(),
        b'"' + NODE1.encode() + b'"',
        b'"0X' + NODE1.encode() + b'"',
        b'"0x' + NODE1[:-2].encode() + b'"',
        b'"0x' + NODE1.encode() + b'00"',
        b'"0x' + NODE1[:-1].encode() + b'g"',
        b'"0x' + OFF_CURVE.encode() + b'"',
        b'["0x' + NODE1.encode() + b'"]',
        b"\xff",
    ],
)
def test_decode_point_response_is_strict(body: bytes) -> None:
    with pytest.raises(BadResponse):
        http.decode_point_response(body)


def test_decode_bytes_response_checks_size() -> None:
    blob = bytes(range(177))
    body = http.encode_bytes(blob)
    assert http.decode_bytes_response(body) == blob
    assert http.decode_bytes_response(body, http.ENCRYPTED_DOCUMENT_KEY_SIZE) == blob
    with pytest.raises(BadResponse):
        http.decode_bytes_response(body, http.ENCRYPTED_ECDSA_SIGNATURE_SIZE)
    for bad in (b'"0x0"', b'"01"', b"1", b'"0x 00"'):
        with pytest.raises(BadResponse):
            http.decode_bytes_response(bad)


def _shadow_doc(**changes: object) -> bytes:
    doc: dict[str, object] = {
        "decrypted_secret": "0x" + NODE1,
        "common_point": "0x" + NODE2,
        "decrypt_shadows": ["0x" + SHADOW],
    }
    doc.update(changes)
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


@pytest.mark.parametrize(
    "body",
    [
        _shadow_doc(decrypted_secret=None),
        _shadow_doc(extra="x"),
        _shadow_doc(decrypt_shadows=[]),
        _shadow_doc(decrypt_shadows="0x" + SHADOW),
        _shadow_doc(decrypt_shadows=["0x" + SHADOW[:-2]]),
        _shadow_doc(decrypt_shadows=[SHADOW]),
        _shadow_doc(common_point="0x" + OFF_CURVE),
        _shadow_doc(decrypted_secret=NODE1),
        b'["0x' + NODE1.encode() + b'"]',
        b"{",
    ],
    ids=["missing field", "extra field", "no shadows", "shadows not a list", "short shadow",
         "shadow without 0x", "off-curve point", "point without 0x", "not an object", "not json"],
)
def test_decode_shadow_response_is_strict(body: bytes) -> None:
    with pytest.raises(BadResponse):
        http.decode_shadow_response(body)


# -- errors -----------------------------------------------------------------------------------


def decoded_text(body: bytes) -> str:
    return http.decode_error_body(body)


DISCONNECTED = b'"\\"node required for this operation is currently disconnected\\""'
ERROR_BODIES = [
    (exceptions.AccessDenied(), 403, b'"\\"Access denied\\""'),
    (exceptions.ConsensusUnreachable(), 403, b'"\\"Consensus unreachable\\""'),
    (exceptions.ServerKeyIsNotFound(), 404, b'"\\"Server key with this ID is not found\\""'),
    (exceptions.DocumentKeyAlreadyStored(), 400, b'"\\"Document key with this ID is already stored\\""'),
    (
        exceptions.InsufficientRequesterData("bad signature: InvalidSignature"),
        400,
        b'"\\"Insufficient requester data: bad signature: InvalidSignature\\""',
    ),
    (exceptions.NodeDisconnected(), 500, DISCONNECTED),
    (exceptions.InternalError("KeyServer is already destroyed"), 500,
     b'"\\"Internal error: KeyServer is already destroyed\\""'),
    # serde_json escapes quote, backslash and control characters, and writes non-ASCII as UTF-8.
    (exceptions.InternalError('say "hi" \\ now\n\t\x01\x7f é'), 500,
     b'"\\"Internal error: say \\"hi\\" \\\\ now\\n\\t\\u0001\x7f \xc3\xa9\\""'),
]


@pytest.mark.parametrize(("error", "status", "body"), ERROR_BODIES,
                         ids=[str(e[0])[:30] for e in ERROR_BODIES])
def test_error_bodies_are_byte_exact(error: KeyServerError, status: int, body: bytes) -> None:
    assert http.error_response(error) == (status, body)


def test_error_body_of_lone_surrogate_is_valid_utf8() -> None:
    _, body = http.error_response(exceptions.InternalError("bad \udc80 text"))
    assert decoded_text(body) == "Internal error: bad ? text"


VARIANTS = sorted(KEY_SERVER_ERRORS.items())


@pytest.mark.parametrize(("name", "cls"), VARIANTS, ids=[name for name, _ in VARIANTS])
def test_every_variant_round_trips_through_http(name: str, cls: type[KeyServerError]) -> None:
    details: list[str | None] = [None] if cls.text else [None, "x", 'bad signature: "quoted": \\ \n é', ""]
    for detail in details:
        error = cls(detail) if detail is not None else cls()
        status, body = http.error_response(error)
        assert status == cls.status
        decoded = http.error_from_response(status, body)
        assert type(decoded) is cls
        assert decoded.parity_name == name
        assert str(decoded) == str(error)
        assert decoded.detail == error.detail


@given(st.text())
def test_payload_variants_keep_any_detail(detail: str) -> None:
    for cls in (exceptions.InsufficientRequesterData, exceptions.InternalError, exceptions.DatabaseError):
        error = cls(detail)
        decoded = http.error_from_response(*http.error_response(error))
        assert type(decoded) is cls
        assert decoded.detail == detail.encode("utf-8", "replace").decode("utf-8")


@pytest.mark.parametrize(
    ("status", "body", "expected_text"),
    [
        # Parity 1.x texts and variants we do not model become InternalError carrying the text.
        (500, b'"\\"cryptographic error InvalidSecret\\""',
         "Internal error: cryptographic error InvalidSecret"),
        (500, b'"\\"IO error: broken pipe\\""', "Internal error: IO error: broken pipe"),
        (500, b'"\\"Internal error: session with the same id is already registered\\""',
         "Internal error: session with the same id is already registered"),
        (500, b'"unquoted"', "Internal error: unquoted"),
        (400, b"",
         "Internal error: HTTP 400 with an empty body (the key server could not parse the request)"),
        (404, b"",
         "Internal error: HTTP 404 with an empty body (the key server rejected the request's Origin)"),
        (502, b"", "Internal error: HTTP 502 with an empty body"),
        (502, b"<html>Bad Gateway</html>",
         "Internal error: HTTP 502 with a body that is not a Secret Store error (24 bytes)"),
        (500, b'{"error": "x"}',
         "Internal error: HTTP 500 with a body that is not a Secret Store error (14 bytes)"),
    ],
)
def test_unknown_error_bodies_become_internal_errors(status: int, body: bytes, expected_text: str) -> None:
    error = http.error_from_response(status, body)
    assert type(error) is exceptions.InternalError
    assert str(error) == expected_text


def test_decode_error_body() -> None:
    assert http.decode_error_body(b'"\\"Access denied\\""') == "Access denied"
    assert http.decode_error_body(b'"\\"\\""') == ""
    assert http.decode_error_body(b'"\\"a\\"\\""') == 'a"'  # only one pair is stripped
    with pytest.raises(BadResponse):
        http.decode_error_body(b'["Access denied"]')
    with pytest.raises(BadResponse):
        http.decode_error_body(b"Access denied")
