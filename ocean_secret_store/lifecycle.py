"""What every long-running process of the package shares: its logging (to stderr, or to a file
rotated by size; as text or as one JSON object per line), the port its aiohttp site bound, waiting
for SIGTERM/SIGINT, and SIGHUP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import logging.handlers
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from aiohttp import web

__all__ = [
    "DEFAULT_LOG_BACKUPS",
    "DEFAULT_LOG_MAX_BYTES",
    "LOG_FORMATS",
    "JsonFormatter",
    "bound_port",
    "configure_logging",
    "on_reload_signal",
    "wait_for_stop_signal",
]

#: A service's log file is rotated at this size, and this many rotated files are kept.
DEFAULT_LOG_MAX_BYTES: Final = 10 * 1024 * 1024
DEFAULT_LOG_BACKUPS: Final = 5
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: ``--log-format``: ``text`` (:data:`LOG_FORMAT`, the default) or ``json`` (:class:`JsonFormatter`).
LOG_FORMATS: Final = ("text", "json")
# What every LogRecord has of its own: any other attribute came with ``extra=``.
_RECORD_FIELDS: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


def _iso_time(now: float) -> str:
    """UTC, ISO 8601, milliseconds: the audit log's ``time`` (node/audit.py)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def _field(value: object) -> Any:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()  # key ids, addresses, node ids: as the audit writes them
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _field(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_field(v) for v in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (a message with line breaks stays one line): ``time`` (UTC, ISO 8601
    with milliseconds, as the audit log's), ``level``, ``logger``, ``message``; then the process's own
    ``fields`` (``service``, and a key server's ``node`` address: the audit's ``node``); then what the
    call passed with ``extra=``, under the audit's names where they overlap (``operation``,
    ``key_id``, ``requester``, ``role``, ``decision``, ``reason``; bytes as ``0x`` hex); and a
    traceback under ``exception``. The fixed fields win over an ``extra`` of the same name.
    """

    def __init__(self, fields: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.fields = {str(k): _field(v) for k, v in (fields or {}).items()}

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {"time": _iso_time(record.created), "level": record.levelname,
                                 "logger": record.name, "message": record.getMessage(), **self.fields}
        for name, value in vars(record).items():
            if name not in _RECORD_FIELDS and name not in event and not name.startswith("_"):
                event[name] = _field(value)
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            event["stack"] = self.formatStack(record.stack_info)
        return json.dumps(event, separators=(",", ":"))


def configure_logging(*, debug: bool = False, log_file: str | Path | None = None,
                      max_bytes: int = DEFAULT_LOG_MAX_BYTES, backups: int = DEFAULT_LOG_BACKUPS,
                      log_format: str = "text", fields: Mapping[str, Any] | None = None) -> None:
    """Log at INFO (DEBUG with ``debug``) to stderr, or, given ``log_file``, to that file only,
    rotated by size: ``FILE`` becomes ``FILE.1`` (``.1`` becomes ``.2`` ...) once a record would
    take it past ``max_bytes``, and ``backups`` rotated files are kept. The file is created 0600
    (logs name clients and keys; they are nobody else's business). ``log_format`` ``json`` writes
    one JSON object per line (:class:`JsonFormatter`, with ``fields`` on every line), rotated alike.

    :raises ValueError: ``max_bytes`` < 1 or ``backups`` < 1 (a size limit needs somewhere to rotate
        to), or an unknown ``log_format``.
    :raises OSError: the file cannot be opened.
    """
    if max_bytes < 1 or backups < 1:
        raise ValueError("log rotation: the size must be >= 1 byte and the rotated files kept >= 1")
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format: {log_format!r}, expected one of {', '.join(LOG_FORMATS)}")
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
    handler.setFormatter(JsonFormatter(fields) if log_format == "json" else logging.Formatter(LOG_FORMAT))
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
