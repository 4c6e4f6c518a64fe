"""Find (and install) the external tools the devnet runs: the anvil binary of the npm package
``@foundry-rs/anvil``, in a checkout or in an installed wheel.

Where anvil is looked for, first match wins:

1. ``$OCEAN_SS_ANVIL``: the path of an anvil binary (nothing else is tried when it is set);
2. a checkout's ``tools/node_modules`` (``make setup`` installs it there);
3. the user cache, ``$XDG_CACHE_HOME`` (default ``~/.cache``) ``/ocean-secret-store/anvil/<version>``,
   where ``ocean-secret-store tools install-anvil`` puts it;
4. ``anvil`` on ``PATH`` (foundryup's binary, or an npm install: its Node wrapper is swapped for the
   platform binary beside it, because the wrapper forwards only some signals).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from .exceptions import SecretStoreError

#: The npm package and the version pinned in the checkout's tools/package.json (a test keeps them equal).
ANVIL_PACKAGE: Final = "@foundry-rs/anvil"
ANVIL_VERSION: Final = "1.7.1"
#: The environment variable naming an anvil binary; it overrides every other place.
ANVIL_ENV: Final = "OCEAN_SS_ANVIL"

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
_SYSTEM = {"windows": "win32"}  # npm's platform names, where Python's differ


class ToolNotFound(SecretStoreError):
    """A tool the command needs is in none of the places it is looked for (the message names them)."""


def project_root() -> Path:
    """The folder that holds the package: the checkout, or site-packages when installed from a wheel."""
    return Path(__file__).resolve().parent.parent


def checkout_root() -> Path | None:
    """The checkout the package runs from, or None when it runs installed (no pyproject.toml beside it)."""
    root = project_root()
    return root if (root / "pyproject.toml").is_file() and (root / "ocean_secret_store").is_dir() else None


def user_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/ocean-secret-store`` (default ``~/.cache/ocean-secret-store``)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(base).expanduser() / "ocean-secret-store"


def anvil_cache_dir(version: str = ANVIL_VERSION, environ: Mapping[str, str] | None = None) -> Path:
    """Where ``tools install-anvil`` installs the npm package: its ``node_modules`` is inside."""
    return user_cache_dir(environ) / "anvil" / version


def platform_package() -> str:
    """The npm package holding this platform's anvil binary, e.g. ``anvil-linux-amd64``."""
    system = platform.system().lower()
    arch = _ARCH.get(platform.machine().lower(), platform.machine().lower())
    return f"anvil-{_SYSTEM.get(system, system)}-{arch}"


def _exe() -> str:
    return "anvil.exe" if platform.system().lower() == "windows" else "anvil"


def binary_in(node_modules: Path) -> Path:
    """The platform binary inside a ``node_modules`` folder that holds ``@foundry-rs/anvil``: the
    platform package's, or the one the package's postinstall downloads when npm skipped that package
    (the platform package's path when neither is there)."""
    primary = node_modules / "@foundry-rs" / platform_package() / "bin" / _exe()
    fallback = node_modules / "@foundry-rs" / "anvil" / _exe()
    return fallback if not primary.is_file() and fallback.is_file() else primary


def _platform_binary_for(found: Path) -> Path:
    """``found`` itself, unless it is the npm package's Node wrapper: then the platform binary beside
    it (hoisted, or nested in the wrapper's package), if there is one."""
    real = found.resolve()
    if real.suffix not in (".mjs", ".js") or real.parent.name != "anvil" or real.parent.parent.name != "@foundry-rs":
        return found
    package = real.parent
    for candidate in (binary_in(package.parent.parent), binary_in(package / "node_modules")):
        if candidate.is_file():
            return candidate
    return found  # the wrapper still starts anvil; its process group is signalled as a whole


def anvil_places(environ: Mapping[str, str] | None = None) -> list[tuple[str, Path | None]]:
    """Every place anvil is looked for, in order, as ``(description, path or None)``."""
    env = os.environ if environ is None else environ
    override = env.get(ANVIL_ENV)
    if override:
        return [(f"${ANVIL_ENV}", Path(override).expanduser())]
    places: list[tuple[str, Path | None]] = []
    checkout = checkout_root()
    if checkout is not None:
        places.append(("the checkout (`make setup`)", binary_in(checkout / "tools" / "node_modules")))
    places.append(("the user cache (`ocean-secret-store tools install-anvil`)",
                   binary_in(anvil_cache_dir(environ=env) / "node_modules")))
    on_path = shutil.which("anvil", path=env.get("PATH"))
    places.append(("anvil on PATH", _platform_binary_for(Path(on_path)) if on_path else None))
    return places


def missing_anvil_message(places: list[tuple[str, Path | None]], environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    if env.get(ANVIL_ENV):
        path = places[0][1]
        return (f"anvil not found at {path} (${ANVIL_ENV}): set {ANVIL_ENV} to the path of an anvil binary, "
                "or unset it to look in the usual places")
    looked = "; ".join(f"{what}: {path if path is not None else 'no anvil'}" for what, path in places)
    return (f"anvil not found (looked in {looked}). Install it with `ocean-secret-store tools install-anvil` "
            f"(needs npm: {ANVIL_PACKAGE}@{ANVIL_VERSION} into the user cache), or `make setup` in a checkout, "
            f"or set {ANVIL_ENV} to an anvil binary, or put anvil on PATH (foundryup)")


def anvil_path(environ: Mapping[str, str] | None = None) -> Path:
    """The anvil binary to run: the platform binary of ``@foundry-rs/anvil`` (not the Node wrapper,
    which forwards only SIGINT/SIGTERM), looked for as the module docstring says.

    :raises ToolNotFound: in none of the places; the message names every one and how to fill it.
    """
    places = anvil_places(environ)
    for _, path in places:
        if path is not None and path.is_file():
            return path
    raise ToolNotFound(missing_anvil_message(places, environ))


def install_anvil(version: str = ANVIL_VERSION, *, force: bool = False, environ: Mapping[str, str] | None = None,
                  say: Callable[[str], None] = lambda _: None, timeout: float = 600.0) -> Path:
    """Install ``@foundry-rs/anvil@version`` with npm into the user cache; return its platform binary.

    An install lands in a scratch folder and is renamed into place only once its binary is there, so
    a half-done install is never found. ``force`` reinstalls over an existing one.

    :raises ToolNotFound: npm is not on PATH.
    :raises SecretStoreError: npm failed, or installed no binary for this platform.
    """
    env = dict(os.environ if environ is None else environ)
    target = anvil_cache_dir(version, env)
    binary = binary_in(target / "node_modules")
    if binary.is_file() and not force:
        say(f"anvil {version} is already installed: {binary}")
        return binary
    npm = shutil.which("npm", path=env.get("PATH"))
    if npm is None:
        raise ToolNotFound(f"npm not found on PATH: install Node.js (npm) to install {ANVIL_PACKAGE}, or get "
                           f"anvil with foundryup and set {ANVIL_ENV} to its path")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
    try:
        say(f"installing {ANVIL_PACKAGE}@{version} into {target} (npm)")
        command = [npm, "install", "--prefix", str(scratch), "--no-save", "--no-audit", "--no-fund",
                   "--loglevel=error", f"{ANVIL_PACKAGE}@{version}"]
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise SecretStoreError(f"npm install {ANVIL_PACKAGE}@{version} took more than {timeout:.0f} s") from None
        if done.returncode != 0:
            tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise SecretStoreError(f"npm install {ANVIL_PACKAGE}@{version} exited with {done.returncode}: {tail}")
        if not binary_in(scratch / "node_modules").is_file():
            raise SecretStoreError(f"npm installed {ANVIL_PACKAGE}@{version} but no {platform_package()} binary: "
                                   "is this platform one anvil ships for?")
        if target.exists():
            shutil.rmtree(target)
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    say(f"installed {binary}")
    return binary
