"""The container health check (ocean_secret_store.healthcheck) against a real HTTP server on loopback."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocean_secret_store import healthcheck
from ocean_secret_store.localca import issue_certificate, make_local_ca

ROOT = Path(__file__).resolve().parents[1]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = {"/ready": 200, "/busy": 503, "/gone": 404}.get(self.path, 500)
        body = b'{"ready": true}' if status == 200 else b"x" * 5000  # a long body must not reach stderr
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ready_is_healthy(server: str) -> None:
    assert healthcheck.check({healthcheck.URL_ENV: f"{server}/ready"}) is None


def test_503_is_unhealthy_and_says_so_briefly(server: str) -> None:
    reason = healthcheck.check({healthcheck.URL_ENV: f"{server}/busy"})
    assert reason is not None
    assert "503" in reason
    assert "xxxx" not in reason


def test_other_statuses_are_unhealthy(server: str) -> None:
    reason = healthcheck.check({healthcheck.URL_ENV: f"{server}/gone"})
    assert reason is not None
    assert "404" in reason


def test_connection_refused_is_unhealthy() -> None:
    reason = healthcheck.check({healthcheck.URL_ENV: f"http://127.0.0.1:{_free_port()}/ready"})
    assert reason is not None
    assert "refused" in reason.lower()


def test_none_is_always_healthy() -> None:
    assert healthcheck.check({healthcheck.URL_ENV: "none"}) is None
    assert healthcheck.check({healthcheck.URL_ENV: "NONE"}) is None


def test_default_url_is_the_key_servers_readiness_route() -> None:
    assert healthcheck.DEFAULT_URL == "http://127.0.0.1:8082/ready"


def test_not_an_http_url_is_unhealthy() -> None:
    reason = healthcheck.check({healthcheck.URL_ENV: "ftp://127.0.0.1/ready"})
    assert reason is not None
    assert healthcheck.URL_ENV in reason


def test_silent_server_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts the connection in the kernel, never answers
        reason = healthcheck.check({healthcheck.URL_ENV: f"http://127.0.0.1:{listener.getsockname()[1]}/ready"},
                                   timeout=0.3)
    assert reason is not None
    assert "timed out" in reason.lower()


def test_https_with_the_ca(tmp_path: Path) -> None:
    import ssl

    (tmp_path / "ca").mkdir()
    (tmp_path / "tls").mkdir()
    ca = make_local_ca(tmp_path / "ca", "healthcheck test CA", days=1)
    cert = issue_certificate(ca, tmp_path / "tls", "node", days=1, hosts=["node0"])
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert, cert.key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{httpd.server_address[1]}/ready"
        # The CA verifies the chain; on loopback the name (node0, not 127.0.0.1) is not checked.
        assert healthcheck.check({healthcheck.URL_ENV: url, healthcheck.CA_ENV: str(ca.cert)}) is None
        # Without the CA the system trust store does not know the certificate.
        reason = healthcheck.check({healthcheck.URL_ENV: url})
        assert reason is not None
        assert "certificate" in reason.lower()
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize(("path", "code"), [("/ready", 0), ("/busy", 1)])
def test_module_exit_code_and_stderr(server: str, path: str, code: int) -> None:
    env = {**os.environ, healthcheck.URL_ENV: f"{server}{path}"}
    result = subprocess.run([sys.executable, "-m", "ocean_secret_store.healthcheck"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == code
    assert result.stdout == ""
    if code:
        assert result.stderr.count("\n") == 1
        assert result.stderr.startswith("unhealthy: ")
    else:
        assert result.stderr == ""
