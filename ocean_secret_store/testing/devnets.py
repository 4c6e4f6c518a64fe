"""Run a devnet for the length of a ``with`` block (a module fixture, one test), so no test leaves
anvil or key server processes behind."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ocean_secret_store import devnet

__all__ = ["running_devnet"]


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
