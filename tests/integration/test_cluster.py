"""The key server cluster as separate OS processes on loopback, driven over Parity's HTTP API.

Each devnet here is started by the project's own ``devnet up`` code (real node processes, real
sockets, SQLite on disk) and torn down at the end of the module.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ocean_secret_store import devnet
from ocean_secret_store.crypto import document, ecies, schnorr, shadows
from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.crypto.hashes import address_of
from ocean_secret_store.crypto.sharing import shadow_coefficients
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.node.config import load_config
from ocean_secret_store.node.storage import KeyShare, SqliteKeyStorage
from ocean_secret_store.protocol import http as codec
from ocean_secret_store.testing.devnets import running_devnet

pytestmark = pytest.mark.integration

SESSION_TIMEOUT = 2.0


class Requester:
    def __init__(self) -> None:
        self.secret = random_scalar()
        self.address = address_of(Point.generator_mul(self.secret))

    def sign(self, key_id: bytes) -> bytes:
        return sign_raw_hash(self.secret, key_id)


class Cluster:
    def __init__(self, state_dir: Path, state: devnet.DevnetState) -> None:
        self.state_dir = state_dir
        self.state = state
        self.http = requests.Session()

    @property
    def urls(self) -> list[str]:
        return [n.http_url for n in self.state.nodes]

    def call(self, index: int, method: str, path: str) -> requests.Response:
        return self.http.request(method, self.urls[index] + "/" + path.lstrip("/"), timeout=30)

    def ok(self, index: int, method: str, path: str) -> bytes:
        response = self.call(index, method, path)
        assert response.status_code == 200, (response.status_code, response.content)
        return response.content

    def publish(self, author: Requester, threshold: int, entry: int = 0) -> tuple[bytes, Point, Point]:
        key_id = os.urandom(32)
        sig = author.sign(key_id)
        generation = codec.server_key_generation_path(key_id, sig, threshold)
        public = codec.decode_point_response(self.ok(entry, "POST", generation))
        document_key, common, encrypted = document.generate_document_key(public)
        body = self.ok(entry, "POST", codec.document_key_storing_path(key_id, sig, common, encrypted))
        assert body == b""
        return key_id, public, document_key

    def shadow_key(self, index: int, key_id: bytes, requester: Requester) -> Point:
        raw = self.ok(index, "GET", codec.document_key_shadow_retrieval_path(key_id, requester.sign(key_id)))
        result = codec.decode_shadow_response(raw)
        return shadows.recover_document_key(
            result.decrypted_secret, result.common_point, result.decrypt_shadows, requester.secret
        )

    def plain_key(self, index: int, key_id: bytes, requester: Requester) -> Point:
        raw = self.ok(index, "GET", codec.document_key_retrieval_path(key_id, requester.sign(key_id)))
        return Point.from_bytes(ecies.decrypt(requester.secret, codec.decode_bytes_response(raw)))

    def healthy(self, index: int) -> bool:
        return self.call(index, "GET", "/health").json()["status"] == "ok"


def stored(storage: SqliteKeyStorage, key_id: bytes) -> KeyShare:
    share = storage.get(key_id)
    assert share is not None, "the node stored no share of this key"
    return share


def _start(tmp_path_factory: pytest.TempPathFactory, nodes: int) -> Iterator[Cluster]:
    state_dir = tmp_path_factory.mktemp(f"devnet{nodes}")
    with running_devnet(state_dir, nodes, acl="none", session_timeout=SESSION_TIMEOUT) as state:
        yield Cluster(state_dir, state)


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from _start(tmp_path_factory, 3)


@pytest.fixture(scope="module")
def cluster5(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from _start(tmp_path_factory, 5)


def _full_round(cluster: Cluster, threshold: int) -> None:
    author = Requester()
    key_id, public, document_key = cluster.publish(author, threshold)
    for index in range(len(cluster.urls)):
        assert cluster.shadow_key(index, key_id, author) == document_key
        assert cluster.plain_key(index, key_id, author) == document_key
        server = cluster.ok(index, "GET", codec.server_key_retrieval_path(key_id, author.sign(key_id)))
        assert codec.decode_point_response(server) == public
        digest = os.urandom(32)
        raw = cluster.ok(index, "GET", codec.schnorr_signing_path(key_id, author.sign(key_id), digest))
        signature = schnorr.parse_signature(ecies.decrypt(author.secret, codec.decode_bytes_response(raw)))
        schnorr.verify(public, signature, digest)
    # every node stored its own share of this key
    for entry in cluster.state.nodes:
        assert Path(entry.data_dir).exists()


def test_three_nodes_every_operation_from_every_entry_node(cluster3: Cluster) -> None:
    _full_round(cluster3, 1)


def test_five_nodes_every_operation_from_every_entry_node(cluster5: Cluster) -> None:
    _full_round(cluster5, 2)


def test_combined_generation_from_any_node(cluster5: Cluster) -> None:
    author = Requester()
    key_id = os.urandom(32)
    raw = cluster5.ok(3, "POST", codec.server_and_document_key_generation_path(key_id, author.sign(key_id), 2))
    document_key = Point.from_bytes(ecies.decrypt(author.secret, codec.decode_bytes_response(raw)))
    assert cluster5.shadow_key(1, key_id, author) == document_key


def test_parity_errors_change_nothing_and_the_node_stays_up(cluster3: Cluster) -> None:
    author, other = Requester(), Requester()
    key_id, public, document_key = cluster3.publish(author, 1)
    sig = author.sign(key_id)

    # unparseable: bad hex, wrong length, 0x in a segment -> 400 with an empty body
    for path in (f"shadow/{key_id.hex()}/zz{sig.hex()[2:]}", f"shadow/{key_id.hex()}/{sig.hex()[:-2]}",
                 f"shadow/0x{key_id.hex()[2:]}/{sig.hex()}", f"shadow/{key_id.hex()}/{sig.hex()}/"):
        response = cluster3.call(0, "GET", path)
        assert (response.status_code, response.content) == (400, b"")

    # unrecoverable signature (v = 27) -> 400 with Parity's error body
    bad = sig[:64] + bytes([27])
    response = cluster3.call(1, "GET", codec.document_key_shadow_retrieval_path(key_id, bad))
    assert response.status_code == 400
    assert codec.decode_error_body(response.content).startswith("Insufficient requester data: bad signature")

    # a valid signature of an account that may not act -> 403
    _, common, encrypted = document.generate_document_key(public)
    response = cluster3.call(2, "POST", codec.document_key_storing_path(key_id, other.sign(key_id), common, encrypted))
    assert response.status_code == 403
    assert response.content == b'"\\"Access denied\\""'
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    response = cluster3.call(0, "GET", codec.server_key_retrieval_path(key_id, other.sign(key_id)))
    assert response.status_code == 403

    # an unknown key -> 404
    unknown = os.urandom(32)
    response = cluster3.call(0, "GET", codec.document_key_shadow_retrieval_path(unknown, author.sign(unknown)))
    assert response.status_code == 404
    assert codec.decode_error_body(response.content) == "Server key with this ID is not found"

    # an existing key id -> Parity's 400 "already generated"; storing twice -> 400 "already stored"
    response = cluster3.call(2, "POST", codec.server_key_generation_path(key_id, sig, 1))
    assert response.status_code == 400
    assert codec.decode_error_body(response.content) == "Server key with this ID is already generated"
    response = cluster3.call(1, "POST", codec.document_key_storing_path(key_id, sig, common, encrypted))
    assert response.status_code == 400
    assert codec.decode_error_body(response.content) == "Document key with this ID is already stored"

    # threshold >= N -> Parity's 500 "not enough nodes"
    fresh = os.urandom(32)
    response = cluster3.call(0, "POST", codec.server_key_generation_path(fresh, author.sign(fresh), 3))
    assert response.status_code == 500
    assert codec.decode_error_body(response.content) == "not enough nodes for passed threshold"

    # nothing changed, every node still serves the original key
    for index in range(3):
        assert cluster3.healthy(index)
        assert cluster3.shadow_key(index, key_id, author) == document_key


def test_any_t_plus_one_live_nodes_suffice_and_t_do_not(cluster5: Cluster) -> None:
    author = Requester()
    key_id, _, document_key = cluster5.publish(author, 2)
    try:
        devnet.stop_node(cluster5.state_dir, 3)
        devnet.stop_node(cluster5.state_dir, 4)
        time.sleep(0.2)
        for index in range(3):
            assert cluster5.shadow_key(index, key_id, author) == document_key

        devnet.stop_node(cluster5.state_dir, 2)
        started = time.monotonic()
        response = cluster5.call(0, "GET", codec.document_key_shadow_retrieval_path(key_id, author.sign(key_id)))
        elapsed = time.monotonic() - started
        assert response.status_code == 403
        assert codec.decode_error_body(response.content) in ("Consensus temporary unreachable", "Consensus unreachable")
        assert elapsed <= SESSION_TIMEOUT + 1.0
    finally:
        cluster5.state = devnet.restart_nodes(cluster5.state_dir, [2, 3, 4])
    assert cluster5.shadow_key(4, key_id, author) == document_key


def test_a_frozen_node_costs_at_most_the_timeout(cluster5: Cluster) -> None:
    author = Requester()
    key_id, _, document_key = cluster5.publish(author, 2)
    pids = [int(cluster5.state.nodes[i].pid or 0) for i in (2, 3, 4)]
    assert all(pids)
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        response = cluster5.call(0, "GET", codec.document_key_shadow_retrieval_path(key_id, author.sign(key_id)))
        elapsed = time.monotonic() - started
        assert response.status_code == 403
        assert elapsed <= SESSION_TIMEOUT + 1.0
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    time.sleep(0.2)
    assert cluster5.shadow_key(0, key_id, author) == document_key


def test_a_node_killed_with_sigkill_serves_its_keys_after_restart(cluster5: Cluster) -> None:
    author = Requester()
    # t = 4 on 5 nodes: every retrieval needs the restarted node.
    key_id, _, document_key = cluster5.publish(author, 4)
    devnet.stop_node(cluster5.state_dir, 2, kill=True)
    response = cluster5.call(0, "GET", codec.document_key_shadow_retrieval_path(key_id, author.sign(key_id)))
    assert response.status_code == 403
    cluster5.state = devnet.restart_nodes(cluster5.state_dir, [2])
    for index in range(5):
        assert cluster5.shadow_key(index, key_id, author) == document_key


def test_no_database_alone_nor_t_of_them_reproduce_a_document_key(cluster5: Cluster) -> None:
    """The attacker here holds t nodes' databases AND their node secrets."""
    author = Requester()
    key_id, public, document_key = cluster5.publish(author, 2)
    records = []
    for entry in cluster5.state.nodes:
        config = load_config(entry.config)
        storage = SqliteKeyStorage(config.storage_path, config.node_secret)
        try:
            records.append((config.node_id, stored(storage, key_id)))
        finally:
            storage.close()
    common, encrypted = records[0][1].common_point, records[0][1].encrypted_point
    assert common is not None and encrypted is not None
    raw = b"".join((Path(e.data_dir) / "keys.sqlite3").read_bytes() for e in cluster5.state.nodes)
    for _, record in records:
        share = record.last_version.secret_share
        assert share.to_bytes(32, "big") not in raw
        assert share.to_bytes(32, "big").hex().encode() not in raw
    for subset in ([0], [3], [0, 1], [2, 4], [1, 3]):
        xs = [records[i][1].last_version.id_numbers[records[i][0]] for i in subset]
        guess = sum(c * records[i][1].last_version.secret_share
                    for c, i in zip(shadow_coefficients(xs), subset, strict=True))
        assert Point.generator_mul(guess) != public
        for sign in (1, -1):
            assert encrypted - (sign * guess) * common != document_key
    # and t + 1 of them do: the test above is not vacuous
    subset = [0, 2, 4]
    xs = [records[i][1].last_version.id_numbers[records[i][0]] for i in subset]
    secret = sum(c * records[i][1].last_version.secret_share
                 for c, i in zip(shadow_coefficients(xs), subset, strict=True))
    assert encrypted - secret * common == document_key  # t = 2 is even: Σλ'·s = +y


def test_health_never_shows_secrets(cluster3: Cluster) -> None:
    body = cluster3.call(0, "GET", "/health").text
    health = json.loads(body)
    assert health["status"] == "ok" and health["connected_peers"] == 2
    for entry in cluster3.state.nodes:
        secret_hex = load_config(entry.config).node_secret.to_bytes(32, "big").hex()
        assert secret_hex not in body


def test_cors_as_parity_without_an_allow_list(cluster3: Cluster) -> None:
    author = Requester()
    key_id, _, _ = cluster3.publish(author, 1)
    path = codec.server_key_retrieval_path(key_id, author.sign(key_id))
    url = cluster3.urls[0] + "/" + path
    # a foreign origin with the default "none" policy: 404 with an empty body, nothing served
    response = cluster3.http.get(url, headers={"Origin": "http://elsewhere.example"}, timeout=10)
    assert (response.status_code, response.content) == (404, b"")
    # no Origin, or the node's own host as origin: served, no CORS header added
    for headers in ({}, {"Origin": cluster3.urls[0]}):
        response = cluster3.http.get(url, headers=headers, timeout=10)
        assert response.status_code == 200
        assert "Access-Control-Allow-Origin" not in response.headers
    # pre-flight is not supported by Parity: 400
    assert cluster3.http.options(url, timeout=10).status_code == 400


def test_audit_log_records_every_key_operation_and_no_secret(cluster3: Cluster) -> None:
    author, stranger = Requester(), Requester()
    key_id, _, document_key = cluster3.publish(author, 1)
    cluster3.shadow_key(1, key_id, author)
    cluster3.plain_key(2, key_id, author)
    cluster3.ok(0, "GET", codec.schnorr_signing_path(key_id, author.sign(key_id), os.urandom(32)))
    _, common, encrypted = document.generate_document_key(Point.generator_mul(7))
    assert cluster3.call(0, "POST", codec.document_key_storing_path(
        key_id, stranger.sign(key_id), common, encrypted)).status_code == 403
    time.sleep(0.2)
    records = []
    for entry in cluster3.state.nodes:
        audit = Path(entry.data_dir) / "audit.jsonl"
        assert audit.stat().st_mode & 0o777 == 0o600
        records += [json.loads(line) for line in audit.read_text().splitlines()]
    mine = [r for r in records if r["key_id"] == "0x" + key_id.hex()]
    operations = {(r["operation"], r["role"], r["decision"]) for r in mine}
    for expected in [("generate_server_key", "entry", "ok"), ("generate_server_key", "member", "ok"),
                     ("store_document_key", "entry", "ok"), ("store_document_key", "member", "ok"),
                     ("retrieve_document_key_shadow", "entry", "ok"), ("shadow_decryption", "member", "allowed"),
                     ("retrieve_document_key", "entry", "ok"), ("schnorr_sign", "entry", "ok"),
                     ("store_document_key", "entry", "refused")]:
        assert expected in operations, expected
    refused = next(r for r in mine if r["decision"] == "refused")
    assert refused["requester"] == "0x" + stranger.address.hex() and refused["reason"] == "AccessDenied"
    assert all(set(r) == {"time", "node", "operation", "key_id", "requester", "role", "decision", "reason"}
               for r in records)

    # the secrets scan: no share, document key or node secret in any log or audit file
    secrets: list[bytes] = [document_key.to_bytes()]
    for entry in cluster3.state.nodes:
        config = load_config(entry.config)
        secrets.append(config.node_secret.to_bytes(32, "big"))
        storage = SqliteKeyStorage(config.storage_path, config.node_secret)
        try:
            secrets.extend(stored(storage, stored_key).last_version.secret_share.to_bytes(32, "big")
                           for stored_key in storage.key_ids())
        finally:
            storage.close()
    files = [Path(e.log) for e in cluster3.state.nodes]
    files += [Path(e.data_dir) / "audit.jsonl" for e in cluster3.state.nodes]
    blob = b"".join(f.read_bytes() for f in files)
    assert len(blob) > 1000
    for secret in secrets:
        for form in (secret, secret.hex().encode(), secret.hex().upper().encode()):
            assert form not in blob
