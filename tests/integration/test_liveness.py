"""Liveness with exactly t+1 live holders (issue 12): real key server processes on loopback, some
frozen with SIGSTOP (their TCP connections stay open, as in a GC pause or a swapped-out VM),
some SIGKILLed, one restarted a moment before. Every shadow retrieval through every live node
must succeed within the session timeout.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import requests

from ocean_secret_store import devnet
from ocean_secret_store.crypto import document, shadows
from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.node.config import load_config
from ocean_secret_store.protocol import http as codec
from ocean_secret_store.testing import devnets
from ocean_secret_store.testing.devnets import running_devnet

pytestmark = pytest.mark.integration

SESSION_TIMEOUT = 3.0
NODES, THRESHOLD = 5, 2
PER_ENTRY = 100


class Cluster:
    def __init__(self, state_dir: Path, state: devnet.DevnetState) -> None:
        self.state_dir, self.state = state_dir, state
        self.http = requests.Session()
        self.secret = random_scalar()
        self.key_id, self.document_key = self._publish()

    def url(self, index: int) -> str:
        return self.state.nodes[index].http_url

    def pid(self, index: int) -> int:
        pid = self.state.nodes[index].pid
        assert pid is not None
        return pid

    def _publish(self) -> tuple[bytes, Point]:
        key_id = os.urandom(32)
        signature = sign_raw_hash(self.secret, key_id)
        answer = self.http.post(self.url(0) + "/" + codec.server_key_generation_path(key_id, signature, THRESHOLD),
                                timeout=30)
        assert answer.status_code == 200, answer.text
        public = codec.decode_point_response(answer.content)
        document_key, common, encrypted = document.generate_document_key(public)
        stored = self.http.post(self.url(0) + "/" + codec.document_key_storing_path(key_id, signature, common,
                                                                                    encrypted), timeout=30)
        assert stored.status_code == 200, stored.text
        return key_id, document_key

    def retrieve(self, entry: int) -> tuple[int, float, str]:
        """One shadow retrieval through ``entry``: (status, seconds, what went wrong or "")."""
        path = codec.document_key_shadow_retrieval_path(self.key_id, sign_raw_hash(self.secret, self.key_id))
        started = time.monotonic()
        answer = self.http.get(self.url(entry) + "/" + path, timeout=SESSION_TIMEOUT + 10)
        elapsed = time.monotonic() - started
        if answer.status_code != 200:
            return answer.status_code, elapsed, answer.text
        result = codec.decode_shadow_response(answer.content)
        recovered = shadows.recover_document_key(result.decrypted_secret, result.common_point,
                                                 result.decrypt_shadows, self.secret)
        return 200, elapsed, "" if recovered == self.document_key else "wrong document key"

    def retrieve_many(self, entries: list[int]) -> tuple[list[str], list[float]]:
        """``PER_ENTRY`` retrievals through each of ``entries`` (interleaved): the failures and the times."""
        failures, times = [], []
        for round_ in range(PER_ENTRY):
            for entry in entries:
                status, elapsed, problem = self.retrieve(entry)
                times.append(elapsed)
                if problem or elapsed > SESSION_TIMEOUT:
                    failures.append(f"retrieval {round_} through node {entry}: {status} {problem} ({elapsed:.2f} s)")
        return failures, times

    def frozen(self, *indices: int) -> AbstractContextManager[None]:
        return devnets.frozen(self.state, *indices)

    def heal(self) -> None:
        """Every node running and the mesh complete again."""
        self.state = devnets.heal(self.state_dir)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state_dir = tmp_path_factory.mktemp("liveness")
    with running_devnet(state_dir, NODES, acl="none", session_timeout=SESSION_TIMEOUT) as state:
        yield Cluster(state_dir, state)


def test_two_frozen_members_every_live_node_serves_every_retrieval(cluster: Cluster) -> None:
    with cluster.frozen(3, 4):
        failures, times = cluster.retrieve_many([0, 1, 2])
    cluster.heal()
    assert failures == []
    assert len(times) == 3 * PER_ENTRY


def test_one_killed_and_one_frozen_member(cluster: Cluster) -> None:
    devnet.stop_node(cluster.state_dir, 4, kill=True)
    try:
        with cluster.frozen(2):
            failures, times = cluster.retrieve_many([0, 1, 3])
    finally:
        cluster.heal()
    assert failures == []
    assert len(times) == 3 * PER_ENTRY


def test_a_node_restarted_a_moment_ago_serves_with_two_others_frozen(cluster: Cluster) -> None:
    # The finding: a restarted node said "ok" before it was connected to its peers and then
    # never tried the live peer it was still connecting to.
    devnet.stop_node(cluster.state_dir, 2, kill=True)
    cluster.state = devnet.restart_nodes(cluster.state_dir, [2], mesh=False)  # returns once it answers
    try:
        with cluster.frozen(0, 4):
            failures, times = cluster.retrieve_many([2])
    finally:
        cluster.heal()
    assert failures == []
    assert len(times) == PER_ENTRY


def test_readiness_lists_the_missing_and_the_suspected(cluster: Cluster) -> None:
    ready = requests.get(cluster.url(0) + "/ready", timeout=5)
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    assert ready.json()["missing"] == ready.json()["suspected"] == ready.json()["connecting"] == []
    frozen_id = cluster.state.nodes[1].public.lower()
    with cluster.frozen(1):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # silent for two keep-alive intervals: suspected
            body = requests.get(cluster.url(0) + "/ready", timeout=5).json()
            if frozen_id in body["suspected"] or frozen_id in body["missing"]:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"a frozen peer was never suspected: {body}")
        assert requests.get(cluster.url(0) + "/health", timeout=5).status_code == 200  # alive all along
    cluster.heal()
    assert requests.get(cluster.url(0) + "/ready", timeout=5).json()["suspected"] == []


def test_a_node_that_lost_its_data_delegates_to_the_holders(cluster: Cluster) -> None:
    devnet.stop_node(cluster.state_dir, 1, kill=True)
    database = Path(load_config(cluster.state.nodes[1].config).storage_path)
    for path in database.parent.glob(database.name + "*"):  # the database with its WAL: data loss
        path.unlink()
    cluster.state = devnet.restart_nodes(cluster.state_dir, [1])
    status, _, problem = cluster.retrieve(1)
    assert (status, problem) == (200, "")
    unknown = os.urandom(32)
    path = codec.document_key_shadow_retrieval_path(unknown, sign_raw_hash(cluster.secret, unknown))
    assert cluster.http.get(cluster.url(1) + "/" + path, timeout=30).status_code == 404  # nobody holds it
