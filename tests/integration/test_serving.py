"""Issue 11, finding 6, against a real devnet: slow-loris sockets are closed within the header
timeout while kept-alive clients keep working, connections over the per-address cap are closed at
once, the audit file rotates without losing an entry, and a service's log file rotates."""

from __future__ import annotations

import http.client
import json
import os
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ocean_secret_store import devnet
from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.protocol import http as codec
from ocean_secret_store.testing.devnets import running_devnet

pytestmark = pytest.mark.integration

HEADER_TIMEOUT = 1.0
CAP = 12
AUDIT_MAX_BYTES = 2048
NODE_SETTINGS = {
    "http": {"header_timeout": HEADER_TIMEOUT, "max_connections_per_address": CAP},
    "audit": {"max_bytes": AUDIT_MAX_BYTES, "backups": 0},
}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devnet.DevnetState]:
    with running_devnet(tmp_path_factory.mktemp("serving"), 3, acl="none", node_settings=NODE_SETTINGS) as state:
        yield state


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _connect(url: str) -> socket.socket:
    sock = socket.create_connection(_host_port(url), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed the socket (reading what it sent before, e.g. a 408)."""
    sock.setblocking(False)
    try:
        while chunk := sock.recv(4096):
            del chunk
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)
    return True


def test_slow_loris_sockets_are_closed_within_the_header_timeout_and_keep_alive_still_works(
    net: devnet.DevnetState,
) -> None:
    url = net.nodes[0].http_url
    keep_alive = http.client.HTTPConnection(*_host_port(url), timeout=5)
    keep_alive.request("GET", "/health")
    assert keep_alive.getresponse().read() and keep_alive.sock is not None
    kept_socket = keep_alive.sock

    lorises = [_connect(url) for _ in range(8)]
    started = time.monotonic()
    for sock in lorises:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: ")
    open_ = list(lorises)
    while open_ and time.monotonic() - started < 4 * HEADER_TIMEOUT:
        time.sleep(0.25)
        for sock in list(open_):
            try:
                sock.sendall(b"a")  # one byte at a time, never the end of the head
            except OSError:
                open_.remove(sock)
                continue
            if _closed(sock):
                open_.remove(sock)
    elapsed = time.monotonic() - started
    for sock in lorises:
        sock.close()
    assert not open_, f"{len(open_)} of {len(lorises)} slow-loris sockets still open after {elapsed:.1f} s"
    assert elapsed < HEADER_TIMEOUT + 1.0

    # The kept-alive client, idle longer than the header timeout meanwhile, is served on its same socket.
    keep_alive.request("GET", "/health")
    response = keep_alive.getresponse()
    assert response.status == 200 and json.loads(response.read())["status"] == "ok"
    assert keep_alive.sock is kept_socket
    keep_alive.close()


def test_a_slow_loris_gets_a_408(net: devnet.DevnetState) -> None:
    with _connect(net.nodes[2].http_url) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sock.settimeout(HEADER_TIMEOUT + 2)
        assert sock.recv(4096).startswith(b"HTTP/1.1 408 ")


def test_connections_over_the_per_address_cap_are_closed_at_once(net: devnet.DevnetState) -> None:
    url = net.nodes[1].http_url
    held = [_connect(url) for _ in range(CAP)]
    try:
        over = _connect(url)
        with over:
            selector = selectors.DefaultSelector()
            selector.register(over, selectors.EVENT_READ)
            started = time.monotonic()
            assert selector.select(timeout=HEADER_TIMEOUT / 2), "the connection over the cap is still open"
            assert time.monotonic() - started < HEADER_TIMEOUT / 2
            assert _closed(over)
            selector.close()
        # the held ones are served
        held[0].sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        held[0].settimeout(5)
        assert held[0].recv(4096).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.1)  # the node sees the closes: its slots are free again
    assert requests.get(url + "/health", timeout=5).status_code == 200


def test_the_audit_file_rotates_and_keeps_every_entry(net: devnet.DevnetState) -> None:
    requester = random_scalar()
    key_ids = [os.urandom(32) for _ in range(12)]
    with requests.Session() as http_session:
        for key_id in key_ids:
            path = codec.server_key_generation_path(key_id, sign_raw_hash(requester, key_id), 1)
            response = http_session.post(net.nodes[0].http_url + path, timeout=30)
            assert response.status_code == 200, response.text
            Point.from_bytes(bytes.fromhex(response.json()[2:]))
    time.sleep(0.2)  # members record after answering
    wanted = {"0x" + k.hex() for k in key_ids}
    for index, node in enumerate(net.nodes):
        live = Path(node.data_dir) / "audit.jsonl"
        rotated = sorted(live.parent.glob("audit.jsonl.*"), key=lambda p: int(p.suffix[1:]), reverse=True)
        assert rotated, f"node {index}: the audit file did not rotate"
        records = []
        for path in [*rotated, live]:
            assert path.stat().st_mode & 0o777 == 0o600
            assert path.stat().st_size <= AUDIT_MAX_BYTES
            records += [json.loads(line) for line in path.read_text().splitlines()]  # no split line
        # One record per key on every node, none lost: the entry node's as "entry", the others' as "member".
        role = "entry" if index == 0 else "member"
        ours = [r["key_id"] for r in records if r["key_id"] in wanted and r["role"] == role
                and r["operation"] == "generate_server_key" and r["decision"] == "ok"]
        assert sorted(ours) == sorted(wanted), f"node {index}: audit records lost"


def test_a_services_log_file_rotates(net: devnet.DevnetState, tmp_path: Path) -> None:
    """The devnet's children log through --log-file; a node run with a small --log-max-bytes
    rotates its log while it serves (each refused request logs one line)."""
    for node in net.nodes:
        args = Path(f"/proc/{node.pid}/cmdline").read_bytes().split(b"\0")
        assert args[args.index(b"--log-file") + 1] == node.log.encode()
    devnet.stop_node(net.state_dir, 2)
    log = tmp_path / "node2.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "ocean_secret_store.cli", "node", "--config", net.nodes[2].config,
         "--log-file", str(log), "--log-max-bytes", "1000", "--log-backups", "2"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        devnet.wait_for_mesh([net.nodes[2].http_url], 2, timeout=30)
        requester = random_scalar()
        with requests.Session() as http_session:
            for _ in range(20):  # a key nobody generated: refused, one log line each
                key_id = os.urandom(32)
                path = codec.document_key_shadow_retrieval_path(key_id, sign_raw_hash(requester, key_id))
                assert http_session.get(net.nodes[2].http_url + path, timeout=10).status_code != 200
        assert (tmp_path / "node2.log.1").exists()
        files = [log, tmp_path / "node2.log.1", tmp_path / "node2.log.2"]
        assert not (tmp_path / "node2.log.3").exists()
        assert all(path.stat().st_size <= 1000 for path in files if path.exists())
        assert all(path.stat().st_mode & 0o777 == 0o600 for path in files if path.exists())
    finally:
        process.terminate()
        process.wait(10)
        devnet.restart_nodes(net.state_dir, [2])
