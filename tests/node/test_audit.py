"""The audit log's size rotation: every entry kept, none split across files, every file 0600."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocean_secret_store.node.audit import AuditLog

NODE = bytes(range(20))
REQUESTER = bytes(20)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """umask 0: a file created without an explicit mode would be world-readable."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _key(i: int) -> bytes:
    return i.to_bytes(32, "big")


def _entries(audit: AuditLog) -> list[dict[str, object]]:
    """Every entry, oldest first: the highest-numbered rotated file first, the live file last."""
    files = [*reversed(audit.rotated_files()), audit.path]
    entries = []
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o600, path
        text = path.read_text()
        assert text.endswith("\n") or not text
        entries += [json.loads(line) for line in text.splitlines()]  # a split line would not parse
    return entries


@pytest.mark.usefixtures("loose_umask")
def test_rotation_keeps_every_entry_in_order_in_0600_files(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl", NODE, max_bytes=1000, backups=0)
    for i in range(100):
        audit.record("generate", _key(i), REQUESTER, "entry", "ok")
    audit.close()
    entries = _entries(audit)
    assert [int(str(e["key_id"]), 16) for e in entries] == list(range(100))
    rotated = audit.rotated_files()
    assert len(rotated) >= 10  # ~250 bytes a line: 3 lines a file
    assert all(p.stat().st_size <= 1000 for p in [*rotated, audit.path])
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_backups_bound_the_rotated_files_and_the_oldest_go(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl", NODE, max_bytes=600, backups=3)
    for i in range(40):
        audit.record("retrieve", _key(i), None, "member", "refused", "AccessDenied")
    audit.close()
    assert [p.name for p in audit.rotated_files()] == ["audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3"]
    keys = [int(str(e["key_id"]), 16) for e in _entries(audit)]
    assert keys == list(range(keys[0], 40))  # the newest ones, contiguous


def test_concurrent_writers_lose_and_split_nothing(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl", NODE, max_bytes=2048, backups=0)

    def write(worker: int) -> None:
        for i in range(50):
            audit.record("store", _key(worker * 1000 + i), REQUESTER, "entry", "ok")

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    audit.close()
    keys = sorted(int(str(e["key_id"]), 16) for e in _entries(audit))
    assert keys == sorted(w * 1000 + i for w in range(8) for i in range(50))


def test_reopening_counts_what_the_file_holds_and_a_crash_leftover_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = AuditLog(path, NODE, max_bytes=700, backups=0)
    for i in range(2):
        first.record("generate", _key(i), REQUESTER, "entry", "ok")
    first.close()
    (tmp_path / ".audit.jsonl.new").write_text("half-made\n")  # a crash between create and rename
    again = AuditLog(path, NODE, max_bytes=700, backups=0)
    for i in range(2, 6):
        again.record("generate", _key(i), REQUESTER, "entry", "ok")
    again.close()
    assert [int(str(e["key_id"]), 16) for e in _entries(again)] == list(range(6))
    assert all(p.stat().st_size <= 700 for p in [*again.rotated_files(), path])
    assert "half-made" not in "".join(p.read_text() for p in tmp_path.iterdir())


def test_a_line_longer_than_the_limit_gets_a_file_of_its_own(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl", NODE, max_bytes=50, backups=0)
    for i in range(3):
        audit.record("generate", _key(i), REQUESTER, "entry", "ok")
    audit.close()
    assert len(audit.rotated_files()) == 2
    assert len(_entries(audit)) == 3


@pytest.mark.parametrize(("max_bytes", "backups"), [(0, 1), (100, -1)])
def test_bad_rotation_settings_are_refused(tmp_path: Path, max_bytes: int, backups: int) -> None:
    with pytest.raises(ValueError, match="audit rotation"):
        AuditLog(tmp_path / "audit.jsonl", NODE, max_bytes=max_bytes, backups=backups)
