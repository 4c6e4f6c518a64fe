"""The administrator's signed status request (``GET /admin/status/{expiry}/{signature}``): what is signed,
what a node accepts (this node, the administrator, not expired, at most a minute ahead), and the path
on the wire; the unsigned ``GET /admin/status`` parses as before."""

from __future__ import annotations

import pytest

from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.crypto.hashes import keccak256
from ocean_secret_store.exceptions import AccessDenied
from ocean_secret_store.protocol import http as codec
from ocean_secret_store.protocol.admin import (
    MAX_STATUS_LIFETIME,
    STATUS_LABEL,
    AdminRequestError,
    sign_status,
    status_hash,
    verify_status,
)

ADMIN = random_scalar()
ADMIN_PUBLIC = Point.generator_mul(ADMIN)
NODE = Point.generator_mul(random_scalar()).to_bytes()
OTHER_NODE = Point.generator_mul(random_scalar()).to_bytes()
NOW = 1_800_000_000.0


def test_what_is_signed() -> None:
    expiry = int(NOW) + 30
    assert status_hash(NODE, expiry) == keccak256(STATUS_LABEL + NODE + expiry.to_bytes(8, "big"))
    with pytest.raises(AdminRequestError):
        status_hash(NODE[:63], expiry)
    with pytest.raises(AdminRequestError):
        status_hash(NODE, -1)


def test_a_node_accepts_its_administrators_fresh_signature_only() -> None:
    expiry = int(NOW) + 30
    signature = sign_status(ADMIN, NODE, expiry)
    verify_status(signature, NODE, expiry, ADMIN_PUBLIC, NOW)
    refusals = [
        (signature, NODE, expiry, None, NOW),  # no administrator key configured
        (signature, OTHER_NODE, expiry, ADMIN_PUBLIC, NOW),  # made for another node
        (signature, NODE, expiry + 1, ADMIN_PUBLIC, NOW),  # another expiry than signed
        (signature, NODE, expiry, ADMIN_PUBLIC, expiry + 0.5),  # expired
        (sign_status(random_scalar(), NODE, expiry), NODE, expiry, ADMIN_PUBLIC, NOW),  # not the administrator
        (bytes(64) + b"\x1b", NODE, expiry, ADMIN_PUBLIC, NOW),  # does not recover
    ]
    far = int(NOW) + MAX_STATUS_LIFETIME + 5
    refusals.append((sign_status(ADMIN, NODE, far), NODE, far, ADMIN_PUBLIC, NOW))  # valid for too long
    for args in refusals:
        with pytest.raises(AccessDenied):
            verify_status(*args)


def test_the_paths_on_the_wire() -> None:
    signature = sign_status(ADMIN, NODE, 1_800_000_030)
    signed = codec.AdminStatus(1_800_000_030, signature)
    path = codec.encode_request(signed).path
    assert path == f"/admin/status/1800000030/{signature.hex()}"
    assert codec.parse_request("GET", path, b"") == signed and signed.signed
    assert codec.parse_request("GET", "/admin/status", b"") == codec.AdminStatus()
    assert codec.encode_request(codec.AdminStatus()).path == "/admin/status"
    assert not codec.AdminStatus().signed


@pytest.mark.parametrize("path", [
    "/admin/status/1800000030",
    f"/admin/status/soon/{'00' * 65}",
    f"/admin/status/-1/{'00' * 65}",
    f"/admin/status/1800000030/{'00' * 64}",
    f"/admin/status/1800000030/{'00' * 65}/more",
])
def test_malformed_signed_status_paths_are_bad_requests(path: str) -> None:
    with pytest.raises(codec.BadRequest):
        codec.parse_request("GET", path, b"")
    with pytest.raises(codec.BadRequest):
        codec.parse_request("POST", f"/admin/status/1800000030/{'00' * 65}", b"")


def test_a_signed_status_names_both_fields() -> None:
    with pytest.raises(codec.BadRequest):
        codec.AdminStatus(1_800_000_030, None)
    with pytest.raises(codec.BadRequest):
        codec.AdminStatus(None, bytes(65))
