"""``cluster init`` output deploys as it is (issue 16, item 2): three real node processes, each
started from its generated folder with only its password in the environment, connect to each other
over the generated address book, serve https with the generated certificates, and generate and
retrieve a key together."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ocean_secret_store.crypto import document, shadows
from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.devnet import readiness
from ocean_secret_store.protocol import http as codec
from ocean_secret_store.testing.servers import free_port

pytestmark = pytest.mark.integration

NODES = 3
PASSWORDS = {f"NODE{i}_PW": f"password of node {i}" for i in range(NODES)} | {"ADMIN_PW": "admin password"}
CLI = [sys.executable, "-m", "ocean_secret_store.cli"]


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    out = tmp_path_factory.mktemp("deploy") / "cluster"
    hosts = ",".join(f"127.0.0.1:{free_port()}:{free_port()}" for _ in range(NODES))
    env = {**os.environ, **PASSWORDS}
    made = subprocess.run([*CLI, "--json", "cluster", "init", "--nodes", str(NODES), "--threshold-max", "1",
                           "--hosts", hosts, "--out", str(out), "--tls", "--bind", "127.0.0.1", "--acl", "none",
                           "--kdf", "pbkdf2", "--password-env", "NODE{i}_PW", "--admin-password-env", "ADMIN_PW"],
                          env=env, capture_output=True, timeout=120, check=False)
    assert made.returncode == 0, made.stderr
    summary = json.loads(made.stdout)
    processes = []
    try:
        for i, node in enumerate(summary["nodes"]):
            # Each node sees only its own password, as on its own machine; it runs from its folder.
            own = dict(os.environ) | {f"NODE{i}_PW": PASSWORDS[f"NODE{i}_PW"]}
            folder = out / node["folder"]
            log = open(folder / "node.log", "wb")  # noqa: SIM115 -- the child keeps it; closed when the test ends
            processes.append(subprocess.Popen([*CLI, "node", "--config", "node.toml"], cwd=folder, env=own,
                                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            log.close()
        urls = [node["http_url"] for node in summary["nodes"]]
        _wait_connected(out, urls)
        yield out, urls
    finally:
        _stop(processes)


def _wait_connected(out: Path, urls: list[str], timeout: float = 30) -> None:
    """Every node ready with every other node usable: the address books and certificates work."""
    ca = str(out / "ca" / "ca.pem")
    deadline = time.monotonic() + timeout
    pending = list(urls)
    while pending and time.monotonic() < deadline:
        pending = [u for u in pending
                   if not ((r := readiness(u, verify=ca)) and r["ready"] and r["usable_peers"] == NODES - 1)]
        time.sleep(0.1)
    logs = {p.name: (p / "node.log").read_text(errors="replace")[-2000:] for p in sorted(out.glob("node*"))}
    assert not pending, f"not connected: {pending}\n{logs}"


def test_the_generated_nodes_connect_and_serve_https(cluster: tuple[Path, list[str]]) -> None:
    out, urls = cluster
    assert all(url.startswith("https://127.0.0.1:") for url in urls)
    # Without the generated CA, a client refuses the nodes' certificates.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(urls[0] + "/ready", timeout=5, verify=True)
    assert readiness(urls[0], verify=str(out / "node0" / "tls" / "ca.pem")) is not None


def test_the_generated_cluster_generates_and_retrieves_a_key(cluster: tuple[Path, list[str]]) -> None:
    out, urls = cluster
    ca = str(out / "ca" / "ca.pem")
    requester = random_scalar()
    key_id = os.urandom(32)
    signature = sign_raw_hash(requester, key_id)
    with requests.Session() as http:  # verify= on each call: a session's own loses to $REQUESTS_CA_BUNDLE
        answer = http.post(urls[0] + codec.server_key_generation_path(key_id, signature, 1), timeout=30, verify=ca)
        assert answer.status_code == 200, answer.text
        server_public = codec.decode_point_response(answer.content)
        document_key, common, encrypted = document.generate_document_key(server_public)
        stored = http.post(urls[1] + codec.document_key_storing_path(key_id, signature, common, encrypted),
                           timeout=30, verify=ca)
        assert stored.status_code == 200, stored.text
        raw = http.get(urls[2] + codec.document_key_shadow_retrieval_path(key_id, signature), timeout=30,
                       verify=ca)
        assert raw.status_code == 200, raw.text
    result = codec.decode_shadow_response(raw.content)
    recovered = shadows.recover_document_key(result.decrypted_secret, result.common_point, result.decrypt_shadows,
                                             requester)
    assert isinstance(recovered, Point) and recovered == document_key


def test_the_generated_admin_keystore_signs_admin_sessions(cluster: tuple[Path, list[str]]) -> None:
    # The administrator's machine: the admin folder and the CA; the nodes trust the key (admin_public).
    out, urls = cluster
    (keystore,) = (out / "admin" / "keystore").iterdir()
    refresh = subprocess.run([*CLI, "--json", "admin", "refresh", "--node", urls[0], "--ca-file",
                              str(out / "ca" / "ca.pem"), "--admin-keystore", str(keystore),
                              "--admin-password-env", "ADMIN_PW"],
                             env={**os.environ, "ADMIN_PW": PASSWORDS["ADMIN_PW"]}, capture_output=True,
                             timeout=120, check=False)
    assert refresh.returncode == 0, refresh.stderr
    report = json.loads(refresh.stdout)
    assert report["state"] == "done" and report["failed"] == 0, report
    wrong = subprocess.run([*CLI, "admin", "refresh", "--node", urls[0], "--admin-keystore", str(keystore),
                            "--admin-password-env", "ADMIN_PW"], env={**os.environ, "ADMIN_PW": "wrong"},
                           capture_output=True, timeout=120, check=False)
    assert wrong.returncode == 2
    assert b"cannot unlock the admin keystore" in wrong.stderr and b"wrong" not in wrong.stderr
