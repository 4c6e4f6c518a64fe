"""Run a devnet for the length of a ``with`` block (a module fixture, one test), so no test leaves
anvil or key server processes behind."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ocean_secret_store import devnet

__all__ = ["frozen", "heal", "running_devnet"]


@contextlib.contextmanager
def running_devnet(state_dir: Path, nodes: int, **up_kwargs: Any) -> Iterator[devnet.DevnetState]:
    """Start a devnet in ``state_dir`` with ``devnet.up(state_dir, nodes, **up_kwargs)``, yield its
    state, and stop it with ``devnet.down(state_dir)`` however the block ends.

    A failing ``devnet.up`` stops what it started itself and raises; there is nothing to take down then.
    """
    state = devnet.up(state_dir, nodes, **up_kwargs)
    try:
        yield state
    finally:
        devnet.down(state_dir)


@contextlib.contextmanager
def frozen(state: devnet.DevnetState, *indices: int) -> Iterator[None]:
    """SIGSTOP the key servers ``indices`` for the block (their connections stay open, nothing
    answers: a stalled process), SIGCONT them however it ends."""
    pids = []
    for index in indices:
        pid = state.nodes[index].pid
        if pid is None:
            raise devnet.DevnetError(f"node {index} has no process to freeze")
        pids.append(pid)
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def heal(state_dir: Path, timeout: float = 30.0) -> devnet.DevnetState:
    """Every key server running again (the killed ones restarted) and the mesh complete; the state."""
    state = devnet.DevnetState.require(state_dir)
    running = set(state.running_pids())  # a killed child is a zombie until reaped: not running
    down = [i for i, node in enumerate(state.nodes) if node.pid not in running]
    if down:
        state = devnet.restart_nodes(state_dir, down)
    devnet.wait_for_mesh([n.http_url for n in state.nodes], len(state.nodes) - 1, timeout=timeout)
    return state
