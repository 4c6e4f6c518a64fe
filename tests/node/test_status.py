"""A key server's status page, ``GET /status`` and ``GET /status.json``: three real nodes in this process
(the real transport, SQLite and HTTP API on loopback; node 0 over https with a cross origin allowed), a
workload with known key ids, signatures and requesters, and then: every peer listed with its state and
round trips, operations counted by kind and outcome, retrieval latency, and none of those key ids,
signatures or addresses anywhere in the page or its JSON; the page's Content-Security-Policy admits
exactly its own inline style and script; CORS as for ``/metrics``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import requests

from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.crypto.hashes import address_of, checksum_address
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.localca import issue_certificate, make_local_ca
from ocean_secret_store.metrics import PREFIX
from ocean_secret_store.node import status
from ocean_secret_store.node.app import RunningNode
from ocean_secret_store.node.cluster import ClusterCore
from ocean_secret_store.protocol import http as codec
from ocean_secret_store.testing.metrics import scrape
from ocean_secret_store.testing.nodes import in_process_cluster
from ocean_secret_store.testing.servers import ServerThread

HOST = "127.0.0.1"
NODES = 3
ALLOWED_ORIGIN = "http://dashboard.example"
ALLOWED, DENIED = random_scalar(), random_scalar()


def address(secret: int) -> bytes:
    return address_of(Point.generator_mul(secret))


@dataclass
class Cluster:
    server: ServerThread
    nodes: list[RunningNode]
    ca: Path

    def url(self, index: int) -> str:
        scheme = "https" if index == 0 else "http"
        return f"{scheme}://{HOST}:{self.nodes[index].http_port}"

    def get(self, path: str, index: int = 0, **kwargs: Any) -> requests.Response:
        return requests.get(self.url(index) + path, timeout=10, verify=str(self.ca), **kwargs)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("status")
    ca = make_local_ca(root / "tls")
    leaf = issue_certificate(ca, root / "tls", "node0")
    acl = {"kind": "allow_list", "allowed": [checksum_address(address(ALLOWED))]}
    tls = {"cors": ALLOWED_ORIGIN, "tls_cert": str(leaf.cert), "tls_key": str(leaf.key)}
    with in_process_cluster(root, NODES, lambda index: {"acl": acl, "http": tls if index == 0 else {}}) \
            as (server, nodes):
        yield Cluster(server, nodes, ca.cert)


@dataclass
class Workload:
    #: Every hex string the page must never show (key ids, signatures, requester addresses).
    secrets: list[str]


@pytest.fixture(scope="module")
def workload(cluster: Cluster) -> Workload:
    """Through node 0: two document key generations (threshold 1), four shadow retrievals by the
    allowed requester, one by a requester the ACL refuses."""
    key_ids = [random_scalar().to_bytes(32, "big") for _ in range(2)]
    signatures = [sign_raw_hash(ALLOWED, key_id) for key_id in key_ids]
    denied = sign_raw_hash(DENIED, key_ids[0])

    def call(method: str, path: str, expected: int) -> None:
        response = requests.request(method, cluster.url(0) + path, timeout=30, verify=str(cluster.ca))
        assert response.status_code == expected, (response.status_code, response.text)

    for key_id, signature in zip(key_ids, signatures, strict=True):
        call("POST", codec.server_and_document_key_generation_path(key_id, signature, 1), 200)
    for index in range(4):
        call("GET", codec.document_key_shadow_retrieval_path(key_ids[index % 2], signatures[index % 2]), 200)
    call("GET", codec.document_key_shadow_retrieval_path(key_ids[0], denied), 403)
    hexes = [*(k.hex() for k in key_ids), *(s.hex() for s in [*signatures, denied])]
    for secret in (ALLOWED, DENIED):
        hexes += [address(secret).hex(), checksum_address(address(secret))[2:]]
    return Workload(hexes)


def _hex_runs(text: str) -> set[str]:
    return {m.lower() for m in re.findall(r"[0-9a-fA-F]{40,}", text)}


def test_every_peer_is_listed_with_its_state_and_round_trips(cluster: Cluster, workload: Workload) -> None:
    others = {"0x" + node.core.node_id.hex() for node in cluster.nodes[1:]}
    deadline = time.monotonic() + 10
    while True:  # a keep-alive round trip needs an idle half interval first
        snapshot = cluster.get(status.STATUS_JSON_PATH).json()
        peers = {p["id"]: p for p in snapshot["peers"]}
        if all(p["keepalive_rtt_ms"] is not None for p in peers.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert set(peers) == others
    for peer in peers.values():
        assert (peer["state"], peer["connection"], peer["suspected"], peer["in_servers_set"]) == (
            "connected", "connected", False, True)
        assert 0 < peer["keepalive_rtt_ms"] < 1000
        assert peer["silent_ms"] is not None and peer["silent_ms"] < 2000
        assert peer["link_lost_s_ago"] is None
    # the generations' DKG asked every peer: request round trips too
    assert all(p["samples"] > 0 and p["srtt_ms"] > 0 for p in peers.values())
    assert snapshot["peer_states"] == {"connected": 2, "connecting": 0, "suspected": 0, "disconnected": 0}
    assert snapshot["node_id"] == "0x" + cluster.nodes[0].core.node_id.hex()
    assert snapshot["ready"] is True and snapshot["servers_set"] == NODES and snapshot["in_servers_set"] is True
    assert snapshot["keys"] == 2 and snapshot["version"] == status.package_version() != "unknown"
    assert snapshot["uptime_s"] > 0 and snapshot["admin_session"] is None


def test_operations_are_counted_by_kind_and_outcome_with_retrieval_latency(cluster: Cluster,
                                                                           workload: Workload) -> None:
    operations = cluster.get(status.STATUS_JSON_PATH).json()["operations"]
    assert operations["by_kind"] == {
        "generate_document_key": {"ok": 2},
        # the entry node's own ACL refusal is Parity's "Consensus unreachable"
        "retrieve_document_key_shadow": {"ok": 4, "consensus_unreachable": 1},
    }
    assert operations["total"] == 7 and operations["window_minutes"] == 15
    latency = operations["retrieval_latency"]
    assert [m["minutes_ago"] for m in latency["minutes"]] == list(range(latency["window_minutes"]))
    overall = latency["overall"]
    assert overall["retrievals"] == overall["samples"] == 4  # the successful ones only
    assert 0 < overall["p50_ms"] <= overall["p95_ms"] <= overall["max_ms"] < 30_000
    # the other nodes ran no operation as entry node: members' work is not theirs to show
    assert cluster.get(status.STATUS_JSON_PATH, 1).json()["operations"]["total"] == 0


def test_no_key_id_signature_or_address_is_shown(cluster: Cluster, workload: Workload) -> None:
    page = cluster.get(status.STATUS_PATH).text
    snapshot = cluster.get(status.STATUS_JSON_PATH).text
    for text in (page, snapshot):
        for secret in workload.secrets:
            assert secret.lower() not in text.lower()
    # the only long hex strings are node ids (public keys): this node's and its peers'
    node_ids = {node.core.node_id.hex() for node in cluster.nodes}
    assert _hex_runs(snapshot) == node_ids
    assert _hex_runs(page) == set()  # the page itself carries no data at all: its script fetches it
    # nor a peer's network address
    for node in cluster.nodes[1:]:
        assert f":{node.config.listen.port}" not in snapshot


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_the_page_is_self_contained_and_its_policy_admits_only_its_own_style_and_script(cluster: Cluster) -> None:
    response = cluster.get(status.STATUS_PATH)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Frame-Options"] == "DENY"
    policy = dict(part.strip().split(" ", 1) for part in response.headers["Content-Security-Policy"].split(";"))
    page = response.text
    styles = re.findall(r"<style>(.*?)</style>", page, re.DOTALL)
    scripts = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    assert len(styles) == len(scripts) == 1
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == _sha256(scripts[0])
    assert policy["style-src"] == _sha256(styles[0])
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    # nothing from elsewhere: no URL, no src, no style attribute, no inline handler
    assert not re.search(r"https?://|//[a-z]", page.replace("http-equiv", ""))
    assert not re.search(r"\s(src|style|on[a-z]+)=", page)
    assert re.findall(r"\shref=\"([^\"]*)\"", page) == ["data:,"]  # the empty favicon: no request for one


def test_the_status_json_is_json_and_not_cached(cluster: Cluster) -> None:
    response = cluster.get(status.STATUS_JSON_PATH)
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.json()["poll_seconds"] == status.POLL_SECONDS


@pytest.mark.parametrize("path", [status.STATUS_PATH, status.STATUS_JSON_PATH])
def test_cors_is_the_apis(cluster: Cluster, path: str) -> None:
    allowed = cluster.get(path, headers={"Origin": ALLOWED_ORIGIN})
    assert allowed.status_code == 200 and allowed.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    refused = cluster.get(path, headers={"Origin": "http://elsewhere.example"})
    assert (refused.status_code, refused.content) == (codec.CORS_REJECTED_STATUS, b"")
    own = cluster.get(path, headers={"Origin": cluster.url(0)})  # same origin: no CORS needed
    assert own.status_code == 200 and "Access-Control-Allow-Origin" not in own.headers
    plain = cluster.get(path, 1, headers={"Origin": ALLOWED_ORIGIN})  # node 1 admits no cross origin
    assert plain.status_code == codec.CORS_REJECTED_STATUS


def test_the_routes_are_counted_by_their_path(cluster: Cluster) -> None:
    before = scrape(cluster.url(1))
    for path in (status.STATUS_PATH, status.STATUS_JSON_PATH, status.STATUS_JSON_PATH):
        cluster.get(path, 1)
    after = scrape(cluster.url(1))
    name = f"{PREFIX}_http_requests_total"
    assert after.delta(before, name, route="/status", status="200") == 1
    assert after.delta(before, name, route="/status.json", status="200") == 2
    assert requests.post(cluster.url(1) + "/status", timeout=10).status_code == codec.BAD_REQUEST_STATUS


@pytest.mark.parametrize(("connection", "suspected", "lost", "state"), [
    ("connected", False, False, "connected"),
    ("connected", True, True, "suspected"),
    ("connecting", False, False, "connecting"),
    ("connecting", True, False, "connecting"),
    ("connecting", False, True, "disconnected"),  # re-dialed after a loss: down until it answers
    ("missing", False, False, "disconnected"),
    ("missing", True, True, "disconnected"),
])
def test_the_state_of_a_peer(connection: str, suspected: bool, lost: bool, state: str) -> None:
    assert status.peer_state(connection, suspected, lost) == state


def test_the_keys_held_are_counted_at_most_every_few_seconds_and_a_broken_database_is_unknown(
        monkeypatch: pytest.MonkeyPatch) -> None:
    counts: list[int] = []

    class Storage:
        def key_count(self) -> int:
            counts.append(1)
            if len(counts) == 1:
                raise sqlite3.DatabaseError("database disk image is malformed")
            return 7

    page = status.StatusPage(cast("ClusterCore", SimpleNamespace(storage=Storage())))
    assert asyncio.run(page._keys_held()) is None  # the page stays up, the count is unknown
    assert asyncio.run(page._keys_held()) is None and len(counts) == 1  # reused, not counted again
    monkeypatch.setattr(status, "KEYS_TTL", 0.0)
    assert asyncio.run(page._keys_held()) == 7 and len(counts) == 2
