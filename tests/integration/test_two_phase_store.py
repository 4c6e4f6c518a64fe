"""Two-phase document key storing against real crashes: a 5-node devnet (``--acl none``), one key
server restarted with a crash point armed (``OSS_FAILPOINTS``, ocean_secret_store/failpoints.py),
a store through HTTP that crashes it mid-way, the node restarted without it; then every holder's
SQLite database must hold the same ``(C, E)`` or none at all (and nothing pending), and the store
can be retried and the document key retrieved. One devnet for every crash point."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from ocean_secret_store import devnet, failpoints
from ocean_secret_store.crypto import document, shadows
from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.node.config import load_config
from ocean_secret_store.node.sessions import storing
from ocean_secret_store.node.storage import SqliteKeyStorage
from ocean_secret_store.protocol import http as codec
from ocean_secret_store.testing.devnets import running_devnet

pytestmark = pytest.mark.integration

#: Short, so that a prepared store expires (3 x 1 s) and is resolved within seconds.
SESSION_TIMEOUT = 1.0
NODES = 5
THRESHOLD = 2
ENTRY = 0
MEMBER = 2
#: The bound on resolution after the restart: an expiry (3 s), the restarted node's mesh, rounds.
SETTLE = 20.0

DocumentKey = tuple[Point, Point]


@dataclass
class Cluster:
    state_dir: Path
    state: devnet.DevnetState
    http: requests.Session

    def post(self, index: int, path: str) -> requests.Response:
        return self.http.post(self.state.nodes[index].http_url + path, timeout=30)

    def holdings(self, key_id: bytes) -> list[tuple[DocumentKey | None, bool]]:
        """Every node's committed (C, E) of ``key_id`` and whether it has a pending one, read from
        its database (the node keeps running)."""
        out: list[tuple[DocumentKey | None, bool]] = []
        for node in self.state.nodes:
            config = load_config(node.config)
            with SqliteKeyStorage(config.storage_path, config.node_secret) as storage:
                share = storage.get(key_id)
                assert share is not None, f"{node.http_url} holds no share of the key"
                points = None
                if share.common_point is not None and share.encrypted_point is not None:
                    points = (share.common_point, share.encrypted_point)
                out.append((points, storage.get_pending(key_id) is not None))
        return out

    def settled(self, key_id: bytes) -> DocumentKey | None:
        """Wait until every holder agrees and nothing is pending; the (C, E) they agree on."""
        deadline = time.monotonic() + SETTLE
        while True:
            holdings = self.holdings(key_id)
            agreed = {points for points, _ in holdings}
            if len(agreed) == 1 and not any(busy for _, busy in holdings):
                return agreed.pop()
            if time.monotonic() > deadline:
                raise AssertionError(f"not settled within {SETTLE} s: {holdings}")
            time.sleep(0.2)

    def wait_exited(self, index: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while devnet.status(self.state_dir)["nodes"][index]["running"]:
            assert time.monotonic() < deadline, f"node {index} did not crash at its failpoint"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state_dir = tmp_path_factory.mktemp("two-phase")
    with running_devnet(state_dir, NODES, acl="none", session_timeout=SESSION_TIMEOUT) as state:
        http = requests.Session()
        try:
            yield Cluster(state_dir, state, http)
        finally:
            http.close()


def shadow_key(cluster: Cluster, index: int, key_id: bytes, secret: int) -> Point:
    path = codec.document_key_shadow_retrieval_path(key_id, sign_raw_hash(secret, key_id))
    response = cluster.http.get(cluster.state.nodes[index].http_url + path, timeout=30)
    assert response.status_code == 200, (response.status_code, response.content)
    result = codec.decode_shadow_response(response.content)
    return shadows.recover_document_key(result.decrypted_secret, result.common_point, result.decrypt_shadows, secret)


# (failpoint, node that crashes, how the store ends, what the crashed node / the others hold while
# it is down, what every holder holds once it is back)
CASES = [
    (storing.FP_MEMBER_PREPARED, MEMBER, "refused", ("pending", "none"), "none"),
    (storing.FP_COORDINATOR_PREPARED, ENTRY, "no answer", ("pending", "pending"), "none"),
    (storing.FP_COORDINATOR_COMMITTED_SELF, ENTRY, "no answer", ("stored", "pending"), "stored"),
    (storing.FP_MEMBER_COMMITTED, MEMBER, "ok", ("stored", "stored"), "stored"),
]


def _state(holding: tuple[DocumentKey | None, bool]) -> str:
    points, busy = holding
    if busy:
        return "pending" if points is None else "stored and pending"
    return "none" if points is None else "stored"


@pytest.mark.parametrize(("point", "target", "answer", "while_down", "outcome"), CASES, ids=[c[0] for c in CASES])
def test_a_crash_at_every_step_of_a_store_leaves_one_document_key_or_none(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, point: str, target: int, answer: str,
    while_down: tuple[str, str], outcome: str,
) -> None:
    secret = random_scalar()
    key_id = os.urandom(32)
    signature = sign_raw_hash(secret, key_id)
    response = cluster.post(ENTRY, codec.server_key_generation_path(key_id, signature, THRESHOLD))
    assert response.status_code == 200, response.content
    public = codec.decode_point_response(response.content)

    # The target comes back with the crash point armed (only in its own environment).
    devnet.stop_node(cluster.state_dir, target)
    with monkeypatch.context() as env:
        env.setenv(failpoints.ENV, f"{point}=exit")
        cluster.state = devnet.restart_nodes(cluster.state_dir, [target])
    assert failpoints.ENV not in os.environ

    document_key, common, encrypted = document.generate_document_key(public)
    try:
        response = cluster.post(ENTRY, codec.document_key_storing_path(key_id, signature, common, encrypted))
        got = "ok" if response.status_code == 200 else "refused"
        if got == "refused":
            assert response.status_code == 500 and b"disconnected" in response.content, response.content
    except requests.ConnectionError:
        got = "no answer"  # the entry node died before answering
    assert got == answer
    cluster.wait_exited(target)
    log = Path(cluster.state.nodes[target].log).read_text(errors="replace")
    assert f"failpoint {point}: exiting the process now" in log
    # What the crash left: the live holders cannot settle it without the crashed one.
    states = [_state(h) for h in cluster.holdings(key_id)]
    assert states[target] == while_down[0]
    assert {s for i, s in enumerate(states) if i != target} == {while_down[1]}, states
    cluster.state = devnet.restart_nodes(cluster.state_dir, [target])

    held = cluster.settled(key_id)
    if outcome == "stored":
        assert held == (common, encrypted)
        # the retry finds the key stored; the stored key is the one served
        retry = cluster.post(ENTRY, codec.document_key_storing_path(key_id, signature, common, encrypted))
        assert retry.status_code == 400 and b"already stored" in retry.content, retry.content
    else:
        assert held is None  # cleanly absent: nothing committed, nothing pending anywhere
        # a retry passes, even with another document key (no pending of the first blocks it)
        document_key, common, encrypted = document.generate_document_key(public)
        retry = cluster.post(ENTRY, codec.document_key_storing_path(key_id, signature, common, encrypted))
        assert retry.status_code == 200, retry.content
        assert cluster.settled(key_id) == (common, encrypted)
    for index in (ENTRY, MEMBER, 4):
        assert shadow_key(cluster, index, key_id, secret) == document_key
