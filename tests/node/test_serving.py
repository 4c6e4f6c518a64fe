"""The connection guard every HTTP server of ours runs under (ocean_secret_store.serving), on a
loopback aiohttp server with real sockets: header-read timeout, per-address cap, and what must
not be cut (kept-alive idle connections, slow bodies)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest
import requests
import uvloop
from aiohttp import web

from ocean_secret_store.lifecycle import bound_port
from ocean_secret_store.serving import GuardedAppRunner, ServingLimits
from ocean_secret_store.testing.servers import ServerThread

TIMEOUT = 0.4
CAP = 4


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.Response(text=f"{request.method} {len(body)}")


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    """The guarded server, on asyncio's loop and on uvloop's (the services run on uvloop, whose
    transports are not asyncio.Transport subclasses)."""
    app = web.Application()
    app.router.add_route("*", "/", _echo)
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "uvloop":
            patch.setattr(asyncio, "new_event_loop", uvloop.new_event_loop)
        thread = ServerThread()
    with thread:
        runner = GuardedAppRunner(app, ServingLimits(TIMEOUT, CAP), access_log=None, handle_signals=False)

        async def start() -> int:
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            return bound_port(runner)

        yield thread.run(start())
        thread.run(runner.cleanup())


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (a timeout fails the test)."""
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_dripped_head_is_closed_with_408_within_the_timeout(port: int) -> None:
    with _connect(port) as sock:
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        closed = False
        answer = b""
        while time.monotonic() - started < 5 * TIMEOUT:
            try:
                sock.sendall(b"X")  # one byte of a header line at a time, never the end of the head
            except OSError:
                closed = True
                break
            sock.settimeout(0.05)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            answer += chunk
            if not chunk:
                closed = True
                break
        elapsed = time.monotonic() - started
    assert closed, "the slow head was not closed"
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + 0.5
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_a_silent_connection_is_closed_without_a_word(port: int) -> None:
    with _connect(port) as sock:
        started = time.monotonic()
        assert _read_all(sock) == b""
        assert time.monotonic() - started < TIMEOUT + 0.5


def test_kept_alive_connection_idle_between_requests_and_a_slow_body_are_not_cut(port: int) -> None:
    with requests.Session() as session:
        for _ in range(2):
            assert session.get(f"http://127.0.0.1:{port}/", timeout=5).text == "GET 0"
            time.sleep(TIMEOUT * 1.5)  # idle between requests: aiohttp's keep-alive timeout rules
    with _connect(port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nConnection: close\r\n\r\n")
        for byte in b"123456":  # the body takes twice the header timeout
            time.sleep(TIMEOUT / 3)
            sock.sendall(bytes([byte]))
        assert _read_all(sock).endswith(b"POST 6")


def test_a_second_request_dripped_on_a_kept_alive_connection_is_closed(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).endswith(b"GET 0")
        time.sleep(TIMEOUT * 1.5)  # idle is fine
        sock.sendall(b"GET / HTTP/1.1\r\n")
        started = time.monotonic()
        assert _read_all(sock) == b""  # after a finished request: closed, no stray status line
        assert time.monotonic() - started < TIMEOUT + 0.5


def test_connections_over_the_per_address_cap_are_closed_at_once(port: int) -> None:
    held = [_connect(port) for _ in range(CAP)]
    try:
        time.sleep(0.05)
        with _connect(port) as over:
            started = time.monotonic()
            try:  # closed at once: an empty read, or a reset if the request raced the close
                over.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert _read_all(over) == b""
            except ConnectionResetError:
                pass
            assert time.monotonic() - started < TIMEOUT / 2
        # the held ones still work, and a freed slot is usable again
        held[0].sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _read_all(held[0]).endswith(b"GET 0")
        held[0].close()
        time.sleep(0.05)
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).text == "GET 0"
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize(
    ("timeout", "cap"), [(0, 1), (-1.0, 1), (float("inf"), 1), (True, 1), ("5", 1), (1.0, 0), (1.0, 2.5)]
)
def test_bad_limits_are_refused(timeout: object, cap: object) -> None:
    with pytest.raises(ValueError, match=r"header_timeout|max_connections_per_address"):
        ServingLimits(timeout, cap)  # type: ignore[arg-type] # wrong types on purpose
