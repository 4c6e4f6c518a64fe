"""The node's append-only audit log: one JSON line per key operation, never any secret.

Each line: ``time`` (UTC, ISO 8601, ms), ``node`` (this node's address), ``operation``,
``key_id``, ``requester`` (address recovered from the request's signature, when there is one),
``role`` (``entry`` for the node the client called, ``member`` for a node taking part),
``decision`` (``ok``, ``allowed``, ``refused`` or ``failed``) and ``reason`` (Parity's error
name, or the access checker's verdict). Shares, document keys, node secrets, signatures and
shadows are never written: only public identifiers.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Final, Protocol

#: Rotation defaults: a file of at most 64 MiB (about 250,000 entries), and ten rotated files kept.
DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
DEFAULT_BACKUPS: Final = 10


class Audit(Protocol):
    def record(self, operation: str, key_id: bytes, requester: bytes | None, role: str, decision: str,
               reason: str = "") -> None: ...


class NullAudit:
    def record(self, operation: str, key_id: bytes, requester: bytes | None, role: str, decision: str,
               reason: str = "") -> None:
        return None


class AuditLog:
    """Appends to ``path`` (created 0600, opened O_APPEND so lines are never interleaved or rewritten),
    one ``write`` per line.

    Rotation by size: before a line would take the file past ``max_bytes``, under the write lock,
    the file becomes ``<path>.1`` (``.1`` becomes ``.2`` and so on; beyond ``backups`` files the
    oldest is deleted; ``backups = 0`` keeps every file) and the line goes to a new, empty file. The
    new file is created 0600 under a temporary name first and renamed into place, so an entry is
    never written to a file of a wider mode, never split across two files, and ``path`` always
    exists. A single line longer than ``max_bytes`` gets a file of its own.
    """

    def __init__(self, path: Path, node_address: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 backups: int = DEFAULT_BACKUPS) -> None:
        if max_bytes < 1 or backups < 0:
            raise ValueError("audit rotation: max_bytes must be >= 1 and backups >= 0")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._node = "0x" + node_address.hex()
        self._lock = threading.Lock()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = os.fstat(self._fd).st_size

    def record(self, operation: str, key_id: bytes, requester: bytes | None, role: str, decision: str,
               reason: str = "") -> None:
        now = time.time()
        line = json.dumps({
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z",
            "node": self._node,
            "operation": operation,
            "key_id": "0x" + key_id.hex(),
            "requester": "0x" + requester.hex() if requester else None,
            "role": role,
            "decision": decision,
            "reason": reason,
        }, separators=(",", ":"))
        data = (line + "\n").encode()
        with self._lock:
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
            _write_all(self._fd, data)
            self._size += len(data)

    def rotated_files(self) -> list[Path]:
        """The rotated files that exist, newest first (``<path>.1``, ``<path>.2``, ...)."""
        return [path for _, path in self._numbered_files()]

    def _numbered_files(self) -> list[tuple[int, Path]]:
        numbered = []
        for candidate in self.path.parent.glob(self.path.name + ".*"):
            suffix = candidate.name[len(self.path.name) + 1:]
            if suffix.isdigit():
                numbered.append((int(suffix), candidate))
        return sorted(numbered)

    def _rotate(self) -> None:
        """Called with the lock held: every numbered file moves up one, the current one becomes ``.1``."""
        fresh = self.path.with_name(f".{self.path.name}.new")
        fresh.unlink(missing_ok=True)  # left by a crash between its creation and its rename
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            for number, path in reversed(self._numbered_files()):  # the highest first: nothing is overwritten
                if self.backups and number >= self.backups:
                    path.unlink(missing_ok=True)
                else:
                    os.replace(path, self._numbered(number + 1))
            os.replace(self.path, self._numbered(1))
            os.replace(fresh, self.path)
        except BaseException:
            os.close(fd)
            fresh.unlink(missing_ok=True)
            raise
        os.close(self._fd)
        self._fd, self._size = fd, 0

    def _numbered(self, number: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{number}")

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
