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
from typing import Protocol


class Audit(Protocol):
    def record(self, operation: str, key_id: bytes, requester: bytes | None, role: str, decision: str,
               reason: str = "") -> None: ...


class NullAudit:
    def record(self, operation: str, key_id: bytes, requester: bytes | None, role: str, decision: str,
               reason: str = "") -> None:
        return None


class AuditLog:
    """Appends to ``path`` (created 0600, opened O_APPEND so lines are never interleaved or rewritten)."""

    def __init__(self, path: Path, node_address: bytes) -> None:
        self.path = path
        self._node = "0x" + node_address.hex()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "a", buffering=1, encoding="utf-8")  # line-buffered
        self._lock = threading.Lock()

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
        with self._lock:
            self._file.write(line + "\n")

    def close(self) -> None:
        with self._lock:
            self._file.close()
