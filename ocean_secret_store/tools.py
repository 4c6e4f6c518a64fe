"""Locate project-local tools installed by `make setup` (the anvil binary from the npm package)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from .exceptions import SecretStoreError

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def anvil_path() -> Path:
    """The platform binary of ``@foundry-rs/anvil`` (not the Node wrapper, which eats signals).

    ``OCEAN_SS_ANVIL`` overrides the location.
    """
    override = os.environ.get("OCEAN_SS_ANVIL")
    if override:
        path = Path(override)
    else:
        system = platform.system().lower()
        arch = _ARCH.get(platform.machine().lower(), platform.machine().lower())
        exe = "anvil.exe" if system == "windows" else "anvil"
        path = project_root() / "tools" / "node_modules" / "@foundry-rs" / f"anvil-{system}-{arch}" / "bin" / exe
    if not path.exists():
        hint = "OCEAN_SS_ANVIL names no file" if override else "run `make setup`"
        raise SecretStoreError(f"anvil not found at {path}: {hint}")
    return path
