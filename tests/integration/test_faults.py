"""A short fault campaign (bench/faults.py) as a test: kills, freezes, restarts and link cuts on a
real devnet, with the campaign's own invariant checks; under a minute."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench" / "faults.py"


def test_short_fault_campaign_has_no_violations() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--rounds", "10", "--nodes", "4", "--seed", "7", "--keys", "2",
                          "--max-minutes", "2"], capture_output=True, text=True, timeout=240, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[-1] == "violations: 0"
    table = next(line for line in lines if line.strip().startswith("10 |"))
    for fault in ("cut=", "freeze=", "kill=", "restart="):
        assert fault in table, table
    sockets_destroyed = int(table.split("|")[2])
    assert sockets_destroyed > 0, "link cuts destroyed no connection: " + table
