"""Service logging (lifecycle.configure_logging): ``--log-format json`` writes one JSON object per line
with the audit's field names, rotated like the text log; every long-running command takes it."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocean_secret_store.cli import build_parser
from ocean_secret_store.lifecycle import JsonFormatter, configure_logging


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def test_json_lines_carry_the_audit_fields_and_rotate_like_text(tmp_path: Path, restored_logging: None) -> None:
    log_file = tmp_path / "node.log"
    configure_logging(log_file=log_file, max_bytes=2000, backups=2, log_format="json",
                      fields={"service": "node", "node": b"\x11" * 20})
    log = logging.getLogger("ocean_secret_store.node.cluster")
    key_id = bytes(range(32))
    for i in range(40):
        log.warning("key %s: line %d\nwith a break", key_id.hex()[:16], i,
                    extra={"key_id": key_id, "operation": "retrieve_document_key", "decision": "failed",
                           "time": "not this"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    files = [log_file, tmp_path / "node.log.1", tmp_path / "node.log.2"]
    assert all(p.exists() and p.stat().st_mode & 0o777 == 0o600 and p.stat().st_size <= 2000 for p in files)
    assert not (tmp_path / "node.log.3").exists()
    events = [json.loads(line) for p in reversed(files) for line in p.read_text().splitlines()]
    assert events[-1]["message"] == "failed" and "ValueError: boom" in events[-1]["exception"]
    event = events[-2]
    assert event["message"] == f"key {key_id.hex()[:16]}: line 39\nwith a break"
    assert event["level"] == "WARNING" and event["logger"] == "ocean_secret_store.node.cluster"
    assert event["service"] == "node" and event["node"] == "0x" + "11" * 20
    # the audit's names and forms: full 0x key id, operation, decision; the fixed time wins
    assert (event["key_id"], event["operation"], event["decision"]) == (
        "0x" + key_id.hex(), "retrieve_document_key", "failed")
    assert event["time"].endswith("Z") and event["time"][:4].isdigit() and len(event["time"]) == 24
    with pytest.raises(ValueError, match="log format"):
        configure_logging(log_format="xml")


def test_the_formatter_makes_any_extra_value_json() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m %s", ("a",), None)
    record.peers = {b"\x01": [b"\x02", 3, None]}
    record.other = object()
    event = json.loads(JsonFormatter({"service": "rpc"}).format(record))
    assert event["message"] == "m a" and event["peers"] == {"b'\\x01'": ["0x02", 3, None]}
    assert event["other"].startswith("<object")


@pytest.mark.parametrize("command", ["node", "rpc", "provider", "files", "aquarius"])
def test_every_long_running_command_takes_log_format(command: str) -> None:
    args = build_parser().parse_args([command, "--log-format", "json"] + (["--keystore", "k"] if command == "rpc" else
                                     ["--dir", "d"] if command == "files" else ["--db", "d"] if command == "aquarius"
                                     else []))
    assert args.log_format == "json"
    assert build_parser().parse_args([command] + (["--keystore", "k"] if command == "rpc" else ["--dir", "d"]
                                     if command == "files" else ["--db", "d"] if command == "aquarius" else [])
                                     ).log_format == "text"


def test_a_service_process_writes_parseable_json_lines(tmp_path: Path) -> None:
    """A real process: the Aquarius-compatible service with --log-format json and a log file."""
    log_file, port_file = tmp_path / "aquarius.log", tmp_path / "port"
    process = subprocess.Popen(
        [sys.executable, "-m", "ocean_secret_store.cli", "aquarius", "--db", str(tmp_path / "m.sqlite"),
         "--listen", "127.0.0.1:0", "--port-file", str(port_file), "--log-format", "json", "--log-file",
         str(log_file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (port_file.exists() and log_file.exists() and log_file.stat().st_size):
            assert process.poll() is None and time.monotonic() < deadline, "the service did not start"
            time.sleep(0.05)
    finally:
        process.terminate()
        assert process.wait(20) == 0
    events = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert any("listening on http://127.0.0.1:" in e["message"] for e in events)
    assert all({"time", "level", "logger", "message"} <= e.keys() and e["service"] == "aquarius" for e in events)
