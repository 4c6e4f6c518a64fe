"""bench/peers.py --quick: our rows always, a peer's rows where its package is installed (the
`bench` extra), a skip line naming it where not; exit 0 either way."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "peers.py"


@pytest.mark.integration
def test_peers_quick() -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=180,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for row in ("ours: shadow retrieval end to end (SDK, 3-node devnet)", "ours: server key generation end to end",
                "ours: shadow crypto alone, 2 shares + combine + recover"):
        assert row in out, out
    if importlib.util.find_spec("nucypher_core"):
        assert "ferveo: crypto alone, 2 shares simple + combine + decrypt" in out, out
        assert "ours end to end / ferveo crypto alone" in out, out
    else:
        assert "skipped: ferveo (nucypher-core): not installed" in out, out
    if importlib.util.find_spec("umbral_pre"):
        assert "umbral-pre: 2 reencrypt + decrypt_reencrypted" in out, out
    else:
        assert "skipped: Umbral (umbral-pre): not installed" in out, out
    assert "skipped: pyUmbral (umbral 0.3.0): not measured without --pyumbral-python" in out, out
