"""What every long-running process of the package shares: its logging (to stderr, or to a file
rotated by size), the port its aiohttp site bound, waiting for SIGTERM/SIGINT, and SIGHUP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Final

from aiohttp import web

__all__ = [
    "DEFAULT_LOG_BACKUPS",
    "DEFAULT_LOG_MAX_BYTES",
    "bound_port",
    "configure_logging",
    "on_reload_signal",
    "wait_for_stop_signal",
]

#: A service's log file is rotated at this size, and this many rotated files are kept.
DEFAULT_LOG_MAX_BYTES: Final = 10 * 1024 * 1024
DEFAULT_LOG_BACKUPS: Final = 5
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(*, debug: bool = False, log_file: str | Path | None = None,
                      max_bytes: int = DEFAULT_LOG_MAX_BYTES, backups: int = DEFAULT_LOG_BACKUPS) -> None:
    """Log at INFO (DEBUG with ``debug``) to stderr, or, given ``log_file``, to that file only,
    rotated by size: ``FILE`` becomes ``FILE.1`` (``.1`` becomes ``.2`` ...) once a record would
    take it past ``max_bytes``, and ``backups`` rotated files are kept. The file is created 0600
    (logs name clients and keys; they are nobody else's business).

    :raises ValueError: ``max_bytes`` < 1 or ``backups`` < 1 (a size limit needs somewhere to rotate to).
    :raises OSError: the file cannot be opened.
    """
    if max_bytes < 1 or backups < 1:
        raise ValueError("log rotation: the size must be >= 1 byte and the rotated files kept >= 1")
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler()
    else:
        path = Path(log_file)
        path.touch(mode=0o600, exist_ok=True)
        rotating = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups,
                                                        encoding="utf-8")
        rotating.rotator = _rotate_private
        handler = rotating
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=[handler], force=True)


def _rotate_private(source: str, dest: str) -> None:
    """The handler's rotation step (its public ``rotator`` hook): the file moves aside and its
    successor is created 0600 before the handler opens it for appending."""
    os.replace(source, dest)
    Path(source).touch(mode=0o600, exist_ok=True)


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


def on_reload_signal(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` on the running event loop each time the process receives SIGHUP (the
    conventional "reload your configuration"); returns a function that removes the handler.

    Where SIGHUP does not exist or the loop cannot handle signals, nothing is installed.
    """
    loop = asyncio.get_running_loop()
    sighup = getattr(signal, "SIGHUP", None)
    if sighup is None:
        return lambda: None
    try:
        loop.add_signal_handler(sighup, callback)
    except NotImplementedError:
        return lambda: None

    def remove() -> None:
        loop.remove_signal_handler(sighup)

    return remove
