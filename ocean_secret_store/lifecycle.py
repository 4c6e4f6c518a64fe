"""What every long-running process of the package shares: the port its aiohttp site bound, and
waiting for SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from aiohttp import web

__all__ = ["bound_port", "wait_for_stop_signal"]


def bound_port(runner: web.AppRunner) -> int:
    """The TCP port the runner's first listening socket is bound to (useful after binding port 0).

    :raises RuntimeError: the runner has no started TCP site (a bug in the caller).
    """
    # AppRunner.addresses is aiohttp's public list of every started site's socket name:
    # (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6, a path for a Unix socket.
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2 and isinstance(address[1], int):
            return address[1]
    raise RuntimeError("the runner has no started TCP site")


async def wait_for_stop_signal() -> None:
    """Return once the process receives SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
