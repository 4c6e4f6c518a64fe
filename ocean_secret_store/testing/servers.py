"""Loopback HTTP endpoints for tests: aiohttp applications served from one asyncio loop in a
background thread (so synchronous code such as ``requests`` or the blocking client talks to them
over real HTTP), a directory served as static files, and ports that nothing listens on."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import socket
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from aiohttp import web

from ocean_secret_store.lifecycle import bound_port

__all__ = ["ServerThread", "closed_port_url", "free_port", "serving_files"]

T = TypeVar("T")

LOOPBACK = "127.0.0.1"


class ServerThread:
    """Host any number of aiohttp applications on 127.0.0.1, each on a free port, from one event
    loop running in a daemon thread.

    ``start`` serves an application and returns its base URL; ``run`` executes any coroutine on the
    loop (e.g. a service's own start function) and waits for its result; ``stop_all`` stops every
    application served so far and keeps the loop for more; ``close`` stops them and the loop.
    Usable as a context manager that closes on exit.
    """

    def __init__(self, timeout: float = 10.0) -> None:
        #: How long ``run`` waits for a coroutine unless told otherwise, in seconds.
        self.timeout = timeout
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runners: list[web.AppRunner] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and return its result (its exception propagates)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(self.timeout if timeout is None else timeout)

    def start(self, app: web.Application) -> str:
        """Serve ``app`` on 127.0.0.1 at a port the OS picks; its base URL, ``http://127.0.0.1:<port>``."""

        async def start() -> int:
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            try:
                await web.TCPSite(runner, LOOPBACK, 0).start()
            except BaseException:
                await runner.cleanup()
                raise
            self.runners.append(runner)
            return bound_port(runner)

        return f"http://{LOOPBACK}:{self.run(start())}"

    def stop_all(self) -> None:
        """Stop every application started so far; the loop keeps running for new ones."""

        async def stop() -> None:
            # Pop first, so an application whose cleanup fails is not cleaned up twice.
            while self.runners:
                await self.runners.pop().cleanup()

        self.run(stop())

    def close(self) -> None:
        """Stop every application, then the loop and its thread."""
        try:
            self.stop_all()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(self.timeout)
            self.loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def free_port() -> int:
    """A loopback TCP port that was free a moment ago: bound to port 0, read, and released.

    Another process may take it before the caller binds it; callers that start a server on it
    must expect that, and callers that want refused connections get them while nobody does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def closed_port_url() -> str:
    """``http://127.0.0.1:<port>`` for a port nothing listens on, so connections are refused."""
    return f"http://{LOOPBACK}:{free_port()}"


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    """The standard library's static file handler, without a log line on stderr per request."""

    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextlib.contextmanager
def serving_files(root: Path) -> Iterator[str]:
    """Serve the files under ``root`` on 127.0.0.1 (the standard library's server, a thread per
    request) for the length of the block; yields the base URL, ``http://127.0.0.1:<port>``."""
    handler = functools.partial(_QuietFiles, directory=str(root))
    with http.server.ThreadingHTTPServer((LOOPBACK, 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://{LOOPBACK}:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join()
