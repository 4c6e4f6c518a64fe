"""What every long-running process of the package shares: the port its aiohttp site bound, and
waiting for SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from aiohttp import web


def bound_port(runner: web.AppRunner) -> int:
    """The TCP port the runner's first site listens on (useful after binding port 0)."""
    site = next(iter(runner.sites))
    server = site._server  # aiohttp keeps the bound socket here
    assert server is not None and server.sockets  # type: ignore[union-attr]
    return int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]


async def wait_for_stop_signal() -> None:
    """Return once the process receives SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
