"""The README's main job, as a test: the demos run to success and say what they show."""

from __future__ import annotations

import pytest

from ocean_secret_store.demo import run_crypto_demo, run_demo


def test_crypto_demo_recovers_with_t_plus_one_and_not_with_t() -> None:
    lines: list[str] = []
    assert run_crypto_demo(threshold=2, nodes=5, say=lines.append)
    assert any("NOT recovered" in line for line in lines)


@pytest.mark.integration
def test_cluster_demo_end_to_end() -> None:
    lines: list[str] = []
    assert run_demo(nodes=3, say=lines.append, interactive=False)
    assert lines[-1] == "demo succeeded"
    text = "\n".join(lines)
    assert "refused by the key servers (ConsensusUnreachable" in text
    assert "provider OK, direct OK" in text
    assert "publisher    0.0 OCEAN ->   10.0 OCEAN" in text
    assert "refused: ConsensusTemporaryUnreachable" in text
    assert "devnet stopped" in text
