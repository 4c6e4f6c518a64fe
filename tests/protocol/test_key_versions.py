"""The key-versions query's path, signature and answer (protocol/key_versions.py): a signature serves
one node, for a bounded time, and recovers to the asking node; answers parse strictly."""

from __future__ import annotations

import os

import pytest

from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.exceptions import AccessDenied
from ocean_secret_store.protocol import key_versions as kv

NOW = 1_800_000_000.0


def test_a_request_recovers_to_its_signer_for_its_audience_until_it_expires() -> None:
    secret, audience, after = random_scalar(), Point.generator_mul(random_scalar()).to_bytes(), os.urandom(32)
    path = kv.request_path(secret, audience, after, int(NOW) + 60)
    request = kv.parse_path(path)
    assert request is not None and request.after == after and request.expiry == int(NOW) + 60
    assert request.requester(audience, NOW) == Point.generator_mul(secret).to_bytes()
    other = Point.generator_mul(random_scalar()).to_bytes()
    assert request.requester(other, NOW) != Point.generator_mul(secret).to_bytes()  # another node: another signer
    with pytest.raises(AccessDenied):
        request.requester(audience, NOW + 61)  # expired
    too_long = kv.parse_path(kv.request_path(secret, audience, after, int(NOW) + kv.MAX_LIFETIME + 1))
    assert too_long is not None
    with pytest.raises(AccessDenied):
        too_long.requester(audience, NOW)


@pytest.mark.parametrize("path", [
    "/admin/key_versions/", "/admin/key_versions/00/1/00", "/admin/key_versions/" + "00" * 32 + "/x/" + "00" * 65,
    "/admin/key_versions/" + "00" * 32 + "/1/" + "00" * 64,
])
def test_malformed_paths_of_the_route_are_refused_and_other_routes_ignored(path: str) -> None:
    with pytest.raises(kv.KeyVersionsError):
        kv.parse_path(path)
    assert kv.parse_path("/admin/status") is None


def test_an_answer_round_trips_and_a_wrong_one_is_refused() -> None:
    node = Point.generator_mul(random_scalar()).to_bytes()
    page = kv.KeyVersionsPage(node, (node,), (
        kv.PeerKey(os.urandom(32), 1, os.urandom(32), 2, 3, True, False),
        kv.PeerKey(os.urandom(32), 0, None, 0, 1, False, True)),
        True)
    assert kv.decode_page(kv.encode_page(page)) == page
    good = kv.encode_page(page)
    for bad in ({**good, "extra": 1}, {**good, "more": "yes"}, {**good, "node_id": "0x" + "00" * 64},
                {**good, "keys": [{**good["keys"][0], "epoch": -1}]},
                {**good, "keys": [{**good["keys"][0], "holder": 1}]},
                {**good, "keys": [{k: v for k, v in good["keys"][0].items() if k != "document_key"}]},
                {**good, "keys": [good["keys"][0]] * (kv.PAGE + 1)}):
        with pytest.raises(kv.KeyVersionsError):
            kv.decode_page(bad)
