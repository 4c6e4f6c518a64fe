"""Finding anvil (``$OCEAN_SS_ANVIL``, the checkout, the user cache, PATH) and installing it into the
user cache with npm (a fake npm here: no registry is needed)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from ocean_secret_store import tools
from ocean_secret_store.exceptions import SecretStoreError
from ocean_secret_store.tools import (
    ANVIL_ENV,
    ANVIL_PACKAGE,
    ANVIL_VERSION,
    ToolNotFound,
    anvil_path,
    anvil_places,
    binary_in,
    install_anvil,
    platform_package,
)

ROOT = Path(__file__).resolve().parents[1]


def _executable(path: Path, text: str = "#!/bin/sh\necho anvil 0.0.0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _fake_npm_install(node_modules: Path) -> Path:
    """What ``npm install @foundry-rs/anvil`` leaves: the Node wrapper, its .bin link, the platform binary."""
    wrapper = _executable(node_modules / "@foundry-rs" / "anvil" / "bin.mjs", "#!/usr/bin/env node\n")
    (node_modules / ".bin").mkdir(parents=True, exist_ok=True)
    (node_modules / ".bin" / "anvil").symlink_to(wrapper)
    return _executable(node_modules / "@foundry-rs" / platform_package() / "bin" / "anvil")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment with an empty cache and an empty PATH (no anvil anywhere but the checkout)."""
    (tmp_path / "empty-bin").mkdir()
    return {"XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": str(tmp_path / "empty-bin"), "HOME": str(tmp_path)}


def test_the_pinned_version_is_the_checkouts() -> None:
    # A wheel has no tools/package.json: the version it installs is the constant, kept equal here.
    package = json.loads((ROOT / "tools" / "package.json").read_text())
    assert package["dependencies"] == {ANVIL_PACKAGE: ANVIL_VERSION}


def test_the_override_wins_and_names_itself_when_missing(tmp_path: Path, env: dict[str, str]) -> None:
    binary = _executable(tmp_path / "my-anvil")
    assert anvil_path({**env, ANVIL_ENV: str(binary)}) == binary
    with pytest.raises(ToolNotFound, match=rf"anvil not found at .*no-anvil \(\${ANVIL_ENV}\)"):
        anvil_path({**env, ANVIL_ENV: str(tmp_path / "no-anvil")})


def test_the_checkout_comes_before_the_cache_and_path(env: dict[str, str]) -> None:
    places = anvil_places(env)
    assert [what for what, _ in places] == [
        "the checkout (`make setup`)", "the user cache (`ocean-secret-store tools install-anvil`)", "anvil on PATH"]
    assert anvil_path(env) == binary_in(ROOT / "tools" / "node_modules")


def test_outside_a_checkout_the_cache_then_path(tmp_path: Path, env: dict[str, str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools, "checkout_root", lambda: None)
    with pytest.raises(ToolNotFound) as missing:
        anvil_path(env)
    message = str(missing.value)
    # Every place and every way to fill one, in one message.
    for words in ("the user cache", str(tmp_path / "cache" / "ocean-secret-store" / "anvil" / ANVIL_VERSION),
                  "anvil on PATH: no anvil", "ocean-secret-store tools install-anvil", "make setup", ANVIL_ENV,
                  "foundryup"):
        assert words in message

    # npm's global bin (the Node wrapper) on PATH: the platform binary beside it is what runs.
    global_modules = tmp_path / "npm-global" / "lib" / "node_modules"
    platform_binary = _fake_npm_install(global_modules)
    bin_dir = tmp_path / "npm-global" / "bin"
    bin_dir.mkdir()
    (bin_dir / "anvil").symlink_to(global_modules / "@foundry-rs" / "anvil" / "bin.mjs")
    on_path = {**env, "PATH": str(bin_dir)}
    assert anvil_path(on_path) == platform_binary

    # A real binary on PATH (foundryup's) is taken as it is.
    foundry = _executable(tmp_path / "foundry" / "anvil")
    assert anvil_path({**env, "PATH": str(foundry.parent)}) == foundry

    # The user cache comes before PATH.
    cached = _fake_npm_install(tmp_path / "cache" / "ocean-secret-store" / "anvil" / ANVIL_VERSION / "node_modules")
    assert anvil_path(on_path) == cached


def _fake_npm(bin_dir: Path, log: Path, *, fail: bool = False, binary: bool = True) -> None:
    """An ``npm`` that records its arguments and makes what ``npm install --prefix DIR`` makes."""
    package = f'"$prefix/node_modules/@foundry-rs/{platform_package()}/bin"'
    lines = ["#!/bin/sh", f'echo "$@" >> {log}']
    if fail:
        lines.append("echo 'npm ERR! network unreachable' >&2; exit 1")
    lines += ['prefix=""', 'while [ $# -gt 0 ]; do [ "$1" = "--prefix" ] && prefix="$2"; shift; done',
              f'mkdir -p "$prefix/node_modules/@foundry-rs/anvil" {package}',
              "echo '#!/usr/bin/env node' > \"$prefix/node_modules/@foundry-rs/anvil/bin.mjs\""]
    if binary:
        lines += [f"printf '#!/bin/sh\\necho anvil 9.9.9\\n' > {package}/anvil", f"chmod +x {package}/anvil"]
    _executable(bin_dir / "npm", "\n".join(lines) + "\n")


def test_install_anvil_puts_the_package_into_the_user_cache(tmp_path: Path, env: dict[str, str]) -> None:
    bin_dir, log = tmp_path / "bin", tmp_path / "npm.log"
    _fake_npm(bin_dir, log)
    env = {**env, "PATH": f"{bin_dir}{os.pathsep}/bin{os.pathsep}/usr/bin"}
    said: list[str] = []
    binary = install_anvil(environ=env, say=said.append)
    target = tmp_path / "cache" / "ocean-secret-store" / "anvil" / ANVIL_VERSION
    assert binary == binary_in(target / "node_modules") and binary.is_file()
    assert f"{ANVIL_PACKAGE}@{ANVIL_VERSION}" in log.read_text()
    assert "--prefix" in log.read_text() and str(target) not in log.read_text()  # a scratch folder, renamed
    assert [p.name for p in target.parent.iterdir()] == [ANVIL_VERSION]  # no scratch left
    assert said[-1] == f"installed {binary}"
    # Installed once: a second call finds it and runs no npm; --force reinstalls.
    assert install_anvil(environ=env) == binary
    assert len(log.read_text().splitlines()) == 1
    install_anvil(environ=env, force=True)
    assert len(log.read_text().splitlines()) == 2


def test_install_anvil_failures_leave_nothing_behind(tmp_path: Path, env: dict[str, str]) -> None:
    bin_dir, log = tmp_path / "bin", tmp_path / "npm.log"
    with pytest.raises(ToolNotFound, match="npm not found on PATH"):
        install_anvil(environ=env)
    env = {**env, "PATH": f"{bin_dir}{os.pathsep}/bin{os.pathsep}/usr/bin"}
    _fake_npm(bin_dir, log, fail=True)
    with pytest.raises(SecretStoreError, match="exited with 1: npm ERR! network unreachable"):
        install_anvil(environ=env)
    _fake_npm(bin_dir, log, binary=False)
    with pytest.raises(SecretStoreError, match=f"no {platform_package()} binary"):
        install_anvil(environ=env)
    cache = tmp_path / "cache" / "ocean-secret-store" / "anvil"
    assert list(cache.iterdir()) == []
