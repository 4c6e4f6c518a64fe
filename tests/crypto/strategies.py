"""Hypothesis strategies the threshold-crypto tests share."""

from __future__ import annotations

from hypothesis import strategies as st

from ocean_secret_store.crypto.dkg import LocalKey, run_local_dkg


@st.composite
def key_and_group(draw: st.DrawFn) -> tuple[LocalKey, list[int]]:
    """A fresh ``(t, n)`` key (1 <= n <= 15) and a random group of ``t + 1`` of its nodes."""
    n = draw(st.integers(1, 15))
    t = draw(st.integers(0, n - 1))
    members = draw(st.permutations(range(n)))[: t + 1]
    return run_local_dkg(t, n), members
