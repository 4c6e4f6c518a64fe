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
    assert run_demo(nodes=3, threshold=1, say=lines.append)
    assert lines[-1] == "demo succeeded"
    assert any("asks before ordering: refused (ConsensusUnreachable" in line for line in lines)
    assert any("cluster refuses (ConsensusTemporaryUnreachable" in line for line in lines)
