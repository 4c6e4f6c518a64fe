"""Bad input at every door of the key server HTTP API, table-driven, against a real devnet with the
on-chain access checker: each gets its documented answer, nothing is stored, the node stays up."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount

from ocean_secret_store import devnet
from ocean_secret_store.chain.keeper import Keeper
from ocean_secret_store.crypto import document
from ocean_secret_store.crypto.curve import P, Point
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.protocol import http as codec
from ocean_secret_store.testing.devnets import running_devnet

pytestmark = pytest.mark.integration


@dataclass
class Net:
    state_dir: Path
    state: devnet.DevnetState
    keeper: Keeper
    http: requests.Session
    publisher: LocalAccount

    def url(self, index: int = 0) -> str:
        return self.state.nodes[index].http_url

    def sign(self, key_id: bytes, account: LocalAccount | None = None) -> bytes:
        return sign_raw_hash(int.from_bytes(bytes((account or self.publisher).key), "big"), key_id)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    state_dir = tmp_path_factory.mktemp("bad-input")
    with running_devnet(state_dir, 3, acl="contract", session_timeout=2.0) as state:
        yield Net(state_dir, state, Keeper(state.chain_url, state.contracts), requests.Session(),
                  Account.from_key(state.accounts["publisher"].private_key))


@pytest.fixture(scope="module")
def canary(net: Net) -> tuple[bytes, Point, Point]:
    """A published key whose document key must survive every bad request unchanged."""
    key_id = os.urandom(32)
    net.keeper.register_did(net.publisher, key_id)
    sig = net.sign(key_id)
    public = codec.decode_point_response(
        net.http.post(net.url() + "/" + codec.server_key_generation_path(key_id, sig, 1)).content)
    m, c, e = document.generate_document_key(public)
    assert net.http.post(net.url() + "/" + codec.document_key_storing_path(key_id, sig, c, e)).status_code == 200
    return key_id, public, m


def off_curve() -> bytes:
    x = 5
    while True:  # an x whose y^2 is not a square, so (x, 1) is certainly off the curve
        if pow((x**3 + 7) % P, (P - 1) // 2, P) != 1:
            return x.to_bytes(32, "big") + (1).to_bytes(32, "big")
        x += 1


Case = tuple[str, str, str, bytes, int, str | None]


def cases(key_id: bytes, sig: bytes, other_sig: bytes, good_c: Point, good_e: Point) -> list[Case]:
    """(name, method, path, body, expected status, expected error text or None for an empty body)."""
    k, s = key_id.hex(), sig.hex()
    fresh = os.urandom(32).hex()
    c, e = good_c.to_bytes().hex(), good_e.to_bytes().hex()
    bad_point = off_curve().hex()
    v27 = s[:-2] + "1b"
    return [
        ("malformed hex in key id", "GET", f"/shadow/{'zz' + k[2:]}/{s}", b"", 400, None),
        ("malformed hex in signature", "GET", f"/shadow/{k}/{'g' + s[1:]}", b"", 400, None),
        ("short key id", "GET", f"/shadow/{k[:-2]}/{s}", b"", 400, None),
        ("long signature", "GET", f"/shadow/{k}/{s}00", b"", 400, None),
        ("0x in a path segment", "GET", f"/shadow/0x{k[2:]}/{s}", b"", 400, None),
        ("0x signature", "POST", f"/shadow/{fresh}/0x{s[2:]}/1", b"", 400, None),
        ("negative threshold", "POST", f"/shadow/{fresh}/{s}/-1", b"", 400, None),
        ("threshold not a number", "POST", f"/shadow/{fresh}/{s}/one", b"", 400, None),
        ("threshold >= N", "POST", f"/shadow/{fresh}/{s}/3", b"", 500, "not enough nodes for passed threshold"),
        ("huge threshold", "POST", f"/shadow/{fresh}/{s}/{2**70}", b"", 400, None),
        ("reused key id", "POST", f"/shadow/{k}/{s}/1", b"", 400, "Server key with this ID is already generated"),
        ("reused key id, combined", "POST", f"/{k}/{s}/1", b"", 400, "Server key with this ID is already generated"),
        ("document key stored twice", "POST", f"/shadow/{k}/{s}/{c}/{e}", b"", 400,
         "Document key with this ID is already stored"),
        ("common point not on the curve", "POST", f"/shadow/{k}/{s}/{bad_point}/{e}", b"", 400, "Serialization error"),
        ("encrypted point not on the curve", "POST", f"/shadow/{k}/{s}/{c}/{bad_point}", b"", 400,
         "Serialization error"),
        ("v = 27", "GET", f"/shadow/{k}/{v27}", b"", 400, "Insufficient requester data: bad signature"),
        ("v = 27 on generation", "POST", f"/shadow/{fresh}/{v27}/1", b"", 400, "Insufficient requester data"),
        ("signature made for another key id", "GET", f"/shadow/{k}/{other_sig.hex()}", b"", 403,
         "Consensus unreachable"),
        ("signature for another key id, store", "POST", f"/shadow/{k}/{other_sig.hex()}/{c}/{e}", b"", 403,
         "Access denied"),
        ("signature for another key id, /server", "GET", f"/server/{k}/{other_sig.hex()}", b"", 403, "Access denied"),
        ("unknown key", "GET", f"/shadow/{fresh}/{s}", b"", 404, "Server key with this ID is not found"),
        ("unknown key, schnorr", "GET", f"/schnorr/{fresh}/{s}/{k}", b"", 404, "Server key with this ID is not found"),
        ("schnorr hash too short", "GET", f"/schnorr/{k}/{s}/{k[:-2]}", b"", 400, None),
        ("oversized path", "GET", f"/shadow/{k}/{s}/" + "a" * 5000, b"", 400, None),
        ("oversized body", "POST", f"/admin/servers_set_change/{s}/{s}", b"[" + b'"0x00",' * 20000 + b"]", 400, None),
        ("unknown method", "PUT", f"/shadow/{k}/{s}", b"", 400, None),
        ("DELETE", "DELETE", f"/{k}/{s}", b"", 400, None),
        ("unknown prefix", "GET", f"/nope/{k}/{s}", b"", 400, None),
        ("unknown path", "GET", "/", b"", 400, None),
        ("trailing slash", "GET", f"/shadow/{k}/{s}/", b"", 400, None),
        ("too many segments", "GET", f"/shadow/{k}/{s}/{k}/{k}/{k}", b"", 400, None),
        # signed by a requester, not the devnet's administrator (Parity's AccessDenied, protocol.md §1.4.9)
        ("admin session not signed by the administrator", "POST", f"/admin/servers_set_change/{s}/{s}", b"[]", 403,
         "Access denied"),
    ]


def test_every_bad_request_gets_its_documented_answer(net: Net, canary: tuple[bytes, Point, Point]) -> None:
    key_id, public, document_key = canary
    other = os.urandom(32)
    _, c, e = document.generate_document_key(public)
    table = cases(key_id, net.sign(key_id), net.sign(other), c, e)
    failures = []
    for index, (name, method, path, body, status, text) in enumerate(table):
        node = index % 3
        response = net.http.request(method, net.url(node) + path, data=body, timeout=30)
        got_text = codec.decode_error_body(response.content) if response.content else None
        ok = response.status_code == status and (
            (text is None and (response.content == b"" or status == 500))
            or (text is not None and got_text and got_text.startswith(text)))
        if not ok:
            failures.append(f"{name}: got {response.status_code} {got_text!r}, want {status} {text!r}")
    assert not failures, "\n".join(failures)

    # nothing was stored or changed, and every node is up and serving the canary
    for node in range(3):
        health = net.http.get(net.url(node) + "/health", timeout=10).json()
        assert health["status"] == "ok"
        shadow = codec.decode_shadow_response(net.http.get(
            net.url(node) + "/" + codec.document_key_shadow_retrieval_path(key_id, net.sign(key_id))).content)
        from ocean_secret_store.crypto.shadows import recover_document_key

        recovered = recover_document_key(shadow.decrypted_secret, shadow.common_point, shadow.decrypt_shadows,
                                         int.from_bytes(bytes(net.publisher.key), "big"))
        assert recovered == document_key
    for name, method, path, *_ in table:
        if method == "POST" and path.startswith("/shadow/") and key_id.hex() not in path:
            new_key = bytes.fromhex(path.split("/")[2]) if len(path.split("/")[2]) == 64 else None
            if new_key is not None:
                response = net.http.get(net.url() + "/" + codec.server_key_retrieval_path(new_key, net.sign(new_key)))
                assert response.status_code == 404, name
