"""Locate project-local tools installed by `make setup` (the anvil binary from the npm package)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
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
        return Path(override)
    system = platform.system().lower()
    arch = _ARCH.get(platform.machine().lower(), platform.machine().lower())
    exe = "anvil.exe" if system == "windows" else "anvil"
    path = project_root() / "tools" / "node_modules" / "@foundry-rs" / f"anvil-{system}-{arch}" / "bin" / exe
    if not path.exists():
        raise SecretStoreError(f"anvil not found at {path}: run `make setup`")
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] != ["anvil-path"]:
        print("usage: python -m ocean_secret_store.tools anvil-path [--check]", file=sys.stderr)
        return 2
    path = anvil_path()
    if "--check" in args:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=True, timeout=30)
        print(out.stdout.strip().splitlines()[0])
    else:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
