"""A key server's ``GET /metrics``: three real nodes in this process (the real transport, SQLite, audit
log and HTTP API on loopback, run from one background loop), a known workload through node 0, and
every counter and histogram checked to have moved by exactly that workload."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.crypto.hashes import address_of, checksum_address
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.metrics import METRICS_PATH, PREFIX, UNMATCHED
from ocean_secret_store.node.app import AUDIT_FILE, RunningNode
from ocean_secret_store.node.http_api import ROUTES
from ocean_secret_store.node.storage import DB_FILENAME
from ocean_secret_store.protocol import http as codec
from ocean_secret_store.protocol import messages as m
from ocean_secret_store.testing.metrics import Samples, scrape
from ocean_secret_store.testing.nodes import in_process_cluster
from ocean_secret_store.testing.servers import ServerThread

HOST = "127.0.0.1"
NODES = 3
GENERATE = ROUTES[codec.GenerateDocumentKey]
SHADOW = ROUTES[codec.RetrieveDocumentKeyShadow]
#: The requester the ACL allows, and one it does not.
ALLOWED, DENIED = random_scalar(), random_scalar()


def address(secret: int) -> bytes:
    return address_of(Point.generator_mul(secret))


@dataclass
class Cluster:
    server: ServerThread
    nodes: list[RunningNode]

    def url(self, index: int) -> str:
        return f"http://{HOST}:{self.nodes[index].http_port}"

    def scrape(self, index: int) -> Samples:
        return scrape(self.url(index))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three nodes, threshold keys up to 1, an allow-list ACL that knows ``ALLOWED`` only; a requester
    may start three key generations, then one a thousand seconds (the fourth is a quota refusal)."""
    root = tmp_path_factory.mktemp("metrics")
    acl = {"kind": "allow_list", "allowed": [checksum_address(address(ALLOWED))]}
    quotas = {"requester_burst": 3, "requester_rate": 0.001, "refusal_delay": 0.0}
    with in_process_cluster(root, NODES, lambda _: {"acl": acl, "quotas": quotas}) as (server, nodes):
        yield Cluster(server, nodes)


def audit_lines(node: RunningNode) -> int:
    return len((node.config.data_dir / AUDIT_FILE).read_bytes().splitlines())


def on_disk(node: RunningNode) -> int:
    db = node.config.data_dir / DB_FILENAME
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists())


@dataclass
class Workload:
    key_ids: list[bytes]
    signatures: list[bytes]


def run_workload(cluster: Cluster) -> Workload:
    """Through node 0: three document key generations (threshold 1) and a fourth refused by the
    quota (429), five shadow retrievals by the allowed requester, two by the denied one (Parity's
    403 "Consensus unreachable"), one with a signature that does not recover (400)."""
    url = cluster.url(0)
    key_ids = [random_scalar().to_bytes(32, "big") for _ in range(4)]
    signatures: list[bytes] = []

    def call(method: str, path: str, status: int) -> None:
        response = requests.request(method, url + path, timeout=30)
        assert response.status_code == status, (path, response.status_code, response.text)

    for key_id in key_ids[:3]:
        signatures.append(sign_raw_hash(ALLOWED, key_id))
        call("POST", codec.server_and_document_key_generation_path(key_id, signatures[-1], 1), 200)
    signatures.append(sign_raw_hash(ALLOWED, key_ids[3]))
    call("POST", codec.server_and_document_key_generation_path(key_ids[3], signatures[-1], 1), 429)
    for index in range(5):
        call("GET", codec.document_key_shadow_retrieval_path(key_ids[index % 3], signatures[index % 3]), 200)
    for key_id in key_ids[:2]:
        signatures.append(sign_raw_hash(DENIED, key_id))
        call("GET", codec.document_key_shadow_retrieval_path(key_id, signatures[-1]), 403)
    unrecoverable = bytes(64) + b"\x1b"  # r = s = 0, v = 27: parses, recovers nobody
    call("GET", codec.document_key_shadow_retrieval_path(key_ids[0], unrecoverable), 400)
    return Workload(key_ids, signatures)


@pytest.fixture(scope="module")
def scrapes(cluster: Cluster) -> tuple[list[Samples], list[Samples], Workload, list[int]]:
    before = [cluster.scrape(i) for i in range(NODES)]
    lines = [audit_lines(node) for node in cluster.nodes]
    workload = run_workload(cluster)
    after = [cluster.scrape(i) for i in range(NODES)]
    new_lines = [audit_lines(node) - was for node, was in zip(cluster.nodes, lines, strict=True)]
    return before, after, workload, new_lines


def test_http_requests_and_latency_moved_by_the_workload(scrapes: tuple[list[Samples], list[Samples], Workload,
                                                                         list[int]]) -> None:
    (before, *_), (after, *_), _, _ = scrapes
    requests_total = f"{PREFIX}_http_requests_total"
    assert after.delta(before, requests_total, route=GENERATE, method="POST", status="200") == 3
    assert after.delta(before, requests_total, route=GENERATE, method="POST", status="429") == 1
    assert after.delta(before, requests_total, route=SHADOW, method="GET", status="200") == 5
    assert after.delta(before, requests_total, route=SHADOW, method="GET", status="403") == 2
    assert after.delta(before, requests_total, route=SHADOW, method="GET", status="400") == 1
    # Everything else that moved is the scrape of `before` itself.
    assert after.delta(before, requests_total) == 3 + 1 + 5 + 2 + 1 + 1
    assert after.delta(before, requests_total, route=METRICS_PATH, status="200") == 1
    latency = f"{PREFIX}_http_request_duration_seconds"
    assert after.delta(before, latency + "_count", route=GENERATE) == 4
    assert after.delta(before, latency + "_count", route=SHADOW) == 8
    assert after.delta(before, latency + "_bucket", route=SHADOW, le="+Inf") == 8
    assert after.delta(before, latency + "_sum", route=GENERATE) > 0


def test_sessions_by_kind_and_outcome(scrapes: tuple[list[Samples], list[Samples], Workload, list[int]]) -> None:
    (before, *_), (after, *_), _, _ = scrapes
    sessions = f"{PREFIX}_sessions_total"
    assert after.delta(before, sessions, kind="generate_document_key", outcome="ok") == 3
    assert after.delta(before, sessions, kind="generate_document_key") == 3  # the 429 never became a session
    assert after.delta(before, sessions, kind="retrieve_document_key_shadow", outcome="ok") == 5
    # Parity reports the entry node's ACL refusal as "Consensus unreachable"
    assert after.delta(before, sessions, kind="retrieve_document_key_shadow", outcome="consensus_unreachable") == 2
    assert after.delta(before, sessions, kind="retrieve_document_key_shadow", outcome="bad_request") == 1
    assert after.delta(before, sessions) == 3 + 5 + 2 + 1
    duration = f"{PREFIX}_session_duration_seconds_count"
    assert after.delta(before, duration, kind="generate_document_key") == 3
    assert after.delta(before, duration, kind="retrieve_document_key_shadow") == 8


def test_access_checks_quota_refusals_and_audit_writes(
        scrapes: tuple[list[Samples], list[Samples], Workload, list[int]]) -> None:
    before, after, _, new_lines = scrapes
    checks = f"{PREFIX}_access_checks_total"
    # The entry node checks each retrieval itself first; a denied one goes no further.
    assert after[0].delta(before[0], checks, outcome="allowed") == 5
    assert after[0].delta(before[0], checks, outcome="denied") == 2
    assert after[0].delta(before[0], checks, outcome="failed") == 0
    # Each allowed retrieval asked one other holder (threshold 1), which checked it too.
    members = [after[i].delta(before[i], checks, outcome="allowed") for i in (1, 2)]
    assert sum(members) >= 5
    served = sum(after[i].delta(before[i], f"{PREFIX}_member_requests_total", kind=m.DecryptRequest.KIND,
                                outcome="ok") for i in (1, 2))
    assert served == sum(members)
    assert after[0].delta(before[0], f"{PREFIX}_quota_refusals_total", quota="requester_rate") == 1
    assert after[0].delta(before[0], f"{PREFIX}_quota_refusals_total") == 1
    writes = f"{PREFIX}_audit_writes_total"
    for index in range(NODES):
        assert after[index].delta(before[index], writes) == new_lines[index] > 0
    assert after[0].delta(before[0], writes, role="entry", decision="ok") == 3 + 5
    assert after[0].delta(before[0], writes, role="entry", decision="refused") == 2 + 1
    assert after[0].total(f"{PREFIX}_audit_write_failures_total") == 0


def test_state_gauges(cluster: Cluster, scrapes: tuple[list[Samples], list[Samples], Workload, list[int]]) -> None:
    for index, node in enumerate(cluster.nodes):
        samples = cluster.scrape(index)
        assert samples.total(f"{PREFIX}_keys") == 3
        assert samples.total(f"{PREFIX}_database_bytes") == on_disk(node) > 0
        assert samples.total(f"{PREFIX}_peers", state="connected") == NODES - 1
        assert samples.total(f"{PREFIX}_peers", state="missing") == 0
        assert samples.total(f"{PREFIX}_peers", state="suspected") == 0
        assert samples.total(f"{PREFIX}_ready") == 1
        assert samples.total(f"{PREFIX}_servers_set_nodes") == NODES
        assert samples.total(f"{PREFIX}_running_sessions") == 0
        assert samples.total("process_resident_memory_bytes") > 0  # the library's process collector


def test_no_key_id_signature_or_address_in_any_label_or_value(
        cluster: Cluster, scrapes: tuple[list[Samples], list[Samples], Workload, list[int]]) -> None:
    _, _, workload, _ = scrapes
    secrets = [*workload.key_ids, *workload.signatures, address(ALLOWED), address(DENIED),
               *(node.config.node_id for node in cluster.nodes)]
    forbidden = {value.hex() for value in secrets} | {checksum_address(address(ALLOWED))[2:],
                                                      checksum_address(address(DENIED))[2:]}
    for index in range(NODES):
        samples = cluster.scrape(index)
        text = samples.text.lower()
        for value in forbidden:
            assert value.lower()[:16] not in text
        assert not re.search(r"[0-9a-f]{40}", text), "a long hex string in the exposition"
        routes = samples.label_values("route", PREFIX)
        assert routes <= {*ROUTES.values(), "/health", "/ready", METRICS_PATH, UNMATCHED}


def test_requests_that_match_no_route_are_unmatched_and_metrics_obey_cors(cluster: Cluster) -> None:
    url = cluster.url(1)
    before = cluster.scrape(1)
    assert requests.get(url + "/no/such/thing", timeout=10).status_code == codec.BAD_REQUEST_STATUS
    # A cross origin the node does not admit (the default: none) is refused /metrics as the API.
    assert requests.get(url + METRICS_PATH, headers={"Origin": "http://elsewhere.example"},
                        timeout=10).status_code == codec.CORS_REJECTED_STATUS
    after = cluster.scrape(1)
    total = f"{PREFIX}_http_requests_total"
    assert after.delta(before, total, route=UNMATCHED, status=str(codec.BAD_REQUEST_STATUS)) == 1
    assert after.delta(before, total, route=METRICS_PATH, status=str(codec.CORS_REJECTED_STATUS)) == 1
    assert "no/such" not in after.text
