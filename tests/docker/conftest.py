"""Fixtures of the Docker tests: a real engine and the project's image, built once per session.

``docker_engine`` skips every test that uses it, with the engine's own error, when no Docker engine
answers (``docker/provision.sh`` starts one on CI machines); it never fakes a pass. ``ocean_image``
builds the image with ``docker/build.py --json`` (or takes ``$OCEAN_SS_DOCKER_IMAGE`` as it is): a
build that fails is an error of the test run, not a skip. Every test in this folder is marked
``docker``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BUILD_SCRIPT = ROOT / "docker" / "build.py"
#: An image to test instead of building one (its name or id); nothing is built then.
IMAGE_ENV = "OCEAN_SS_DOCKER_IMAGE"
#: A cold build (debootstrap base, wheels) takes about a minute here; a warm one seconds.
BUILD_TIMEOUT = 1800.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    del config
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.docker)


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def docker(*args: str, timeout: float = 60.0, check: bool = True,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the docker client; with ``check`` a failure fails the test with the command's output."""
    try:
        result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False,
                                env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"docker {' '.join(args[:4])} ...: no answer within {timeout:.0f} s")
    if check and result.returncode != 0:
        output = _tail(result.stderr + result.stdout)
        pytest.fail(f"docker {' '.join(args[:4])} ... exited {result.returncode}:\n{output}")
    return result


@pytest.fixture(scope="session")
def docker_engine() -> dict[str, str]:
    """The engine's server version and storage driver; skips (with the reason) when none answers."""
    if shutil.which("docker") is None:
        pytest.skip("no Docker engine: docker is not on PATH (docker/provision.sh installs and starts one)")
    try:
        result = subprocess.run(["docker", "info", "--format", "{{json .}}"], capture_output=True, text=True,
                                timeout=20, check=False)
    except subprocess.TimeoutExpired:
        pytest.skip("no Docker engine: docker info did not answer within 20 s")
    info: dict[str, Any] = {}
    if result.returncode == 0:
        try:
            info = json.loads(result.stdout)
        except ValueError:
            info = {}
    if result.returncode != 0 or not info.get("ServerVersion"):
        # The client prints its own half of the answer on stdout even then: the error is on stderr.
        reason = " ".join(_tail(result.stderr or result.stdout, 3).split()) or f"exit {result.returncode}"
        pytest.skip(f"no Docker engine: docker info: {reason}")
    return {"server_version": str(info["ServerVersion"]), "driver": str(info.get("Driver", ""))}


@pytest.fixture(scope="session")
def ocean_image(docker_engine: dict[str, str]) -> dict[str, Any]:
    """The image under test, as docker/build.py --json describes it (``image``, ``id``, ``content_tag``,
    ``version``, ``base_image``, ``base_source``, ``size_bytes``, ``seconds``)."""
    del docker_engine
    given = os.environ.get(IMAGE_ENV, "").strip()
    if given:
        found = docker("image", "inspect", "--format", "{{.Id}} {{.Size}}", given, check=False)
        if found.returncode != 0:
            pytest.fail(f"${IMAGE_ENV}={given}: the engine has no such image ({_tail(found.stderr, 2)})")
        image_id, size = found.stdout.split()
        return {"image": given, "id": image_id, "content_tag": None, "version": None, "base_image": None,
                "base_source": "given", "size_bytes": int(size), "seconds": {}}
    started = time.monotonic()
    try:
        result = subprocess.run([sys.executable, str(BUILD_SCRIPT), "--json"], capture_output=True, text=True,
                                timeout=BUILD_TIMEOUT, check=False, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(f"docker/build.py took more than {BUILD_TIMEOUT:.0f} s:\n{_tail(stderr)}")
    if result.returncode != 0:
        pytest.fail(f"docker/build.py failed (exit {result.returncode}):\n{_tail(result.stderr)}")
    built: dict[str, Any] = json.loads(result.stdout)
    built["build_wall_seconds"] = round(time.monotonic() - started, 1)
    return built
