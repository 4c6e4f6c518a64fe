"""The package as a user installs it (issue 16, item 7): a wheel built from this tree, installed into a
fresh venv, run from a folder outside the checkout, brings a devnet up and down; without anvil
anywhere it says where it looked and how to get one.

The fresh venv reuses the project venv's dependencies through a ``.pth`` line (a plain path: the
project venv's own ``.pth`` files, among them the editable install of this checkout, stay inactive),
so the wheel installs with ``--no-deps`` and no network. The wheel is built from a copy of the
tree, so the build leaves nothing in the checkout; without build isolation when the venv's
setuptools can build wheels, else with pip's isolated build (from the configured index).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import setuptools

from ocean_secret_store import devnet
from ocean_secret_store.tools import ANVIL_ENV, binary_in

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REPO_ANVIL = binary_in(ROOT / "tools" / "node_modules")


@dataclass(frozen=True)
class Installed:
    venv: Path
    outside: Path  # a working folder outside the checkout
    env: dict[str, str]

    @property
    def cli(self) -> Path:
        return self.venv / "bin" / "ocean-secret-store"

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.cli), *args], cwd=self.outside, env=env or self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)


def _can_build_wheels_here() -> bool:
    """setuptools builds wheels itself from 70.1 on; before that it needs the ``wheel`` package."""
    major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _build_wheel(tmp: Path) -> Path:
    source = tmp / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "ocean_secret_store", source / "ocean_secret_store",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    isolation = ["--no-build-isolation"] if _can_build_wheels_here() else []
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "--quiet",
                            "-w", str(tmp / "dist"), str(source)], capture_output=True, text=True, timeout=300,
                           check=False)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp / "dist").glob("ocean_secret_store-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(tmp)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "project-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, timeout=300)
    outside = tmp / "work"
    outside.mkdir()
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "VIRTUAL_ENV", ANVIL_ENV) and not key.startswith("PYTEST")}
    env.update(XDG_CACHE_HOME=str(tmp / "cache"), HOME=str(tmp), PATH=f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin")
    yield Installed(venv, outside, env)


def test_the_installed_package_runs_from_the_wheel(installed: Installed) -> None:
    probe = ("import json, importlib.metadata as m, ocean_secret_store as o, ocean_secret_store.tools as t; "
             "print(json.dumps([o.__file__, t.checkout_root() is None, "
             "sorted(e.name for e in m.entry_points(group='ocean'))]))")
    out = subprocess.run([str(installed.venv / "bin" / "python"), "-c", probe], cwd=installed.outside,
                         env=installed.env, capture_output=True, text=True, check=True)
    where, outside_checkout, plugins = json.loads(out.stdout)
    assert Path(where).is_relative_to(installed.venv), where
    assert outside_checkout
    assert plugins == ["secret_store"]


def test_without_anvil_the_error_names_every_way_to_get_it(installed: Installed) -> None:
    out = installed.run("devnet", "up", "--nodes", "2", "--acl", "none", "--state-dir", "state-missing")
    assert out.returncode == 1, out.stderr
    message = out.stderr.splitlines()[-1]
    assert message.startswith("error: anvil not found (looked in"), out.stderr
    for words in ("the user cache", "anvil on PATH: no anvil", "ocean-secret-store tools install-anvil",
                  "make setup", ANVIL_ENV, "foundryup"):
        assert words in message, message
    assert "site-packages/tools" not in message  # the old error pointed into the installed package


def test_anvil_on_path_is_found(installed: Installed, tmp_path: Path) -> None:
    (tmp_path / "anvil").symlink_to(REPO_ANVIL)
    env = {**installed.env, "PATH": f"{tmp_path}{os.pathsep}{installed.env['PATH']}"}
    out = installed.run("--json", "anvil-path", "--check", env=env)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["anvil"] == str(tmp_path / "anvil") and answer["version"].startswith("anvil")


def test_a_devnet_comes_up_from_the_installed_wheel(installed: Installed) -> None:
    env = {**installed.env, ANVIL_ENV: str(REPO_ANVIL)}
    state_dir = installed.outside / "state"
    up = installed.run("--json", "devnet", "up", "--nodes", "2", "--acl", "none", "--state-dir", str(state_dir),
                       env=env, timeout=180)
    try:
        assert up.returncode == 0, up.stderr
        state = devnet.DevnetState.require(state_dir)
        assert len(state.nodes) == 2
        for node in state.nodes:
            ready = devnet.readiness(node.http_url)
            assert ready is not None and ready["ready"] and ready["usable_peers"] == 1, ready
            # Every node process runs the wheel's interpreter, not the checkout's.
            cmdline = Path(f"/proc/{node.pid}/cmdline").read_bytes().split(b"\0")
            assert cmdline[0].decode().startswith(str(installed.venv)), cmdline
        status = installed.run("--json", "devnet", "status", "--state-dir", str(state_dir), env=env)
        assert status.returncode == 0, status.stdout + status.stderr
    finally:
        down = installed.run("--json", "devnet", "down", "--state-dir", str(state_dir), env=env)
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["stopped"]
