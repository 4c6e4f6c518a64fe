"""The project's image (docker/Dockerfile, built by docker/build.py) on a real engine: who it runs as,
its entry point, anvil inside, the package's version, the health check, a key server that becomes
healthy in it, and no secret in its layers or config.

Skipped, with the reason, where no Docker engine answers (tests/docker/conftest.py).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ocean_secret_store.cluster_init import init_cluster, parse_hosts
from ocean_secret_store.tools import ANVIL_VERSION

from .conftest import BUILD_SCRIPT, ROOT, docker

UID = 10001
HEALTHY_WITHIN = 60.0
HEALTHCHECK = ["CMD", "python", "-m", "ocean_secret_store.healthcheck"]


def _name(kind: str = "") -> str:
    return f"ocss-test-{kind}{secrets.token_hex(4)}"


def _run(image: dict[str, Any], *args: str, entrypoint: str | None = None, env: dict[str, str] | None = None,
         user: str | None = None, check: bool = True) -> Any:
    """``docker run --rm`` of the image under test, on no network; the result of the client."""
    name = _name()
    cmd = ["run", "--rm", "--name", name, "--network", "none", *(["--user", user] if user else [])]
    for key, value in (env or {}).items():
        cmd += ["-e", f"{key}={value}"]
    if entrypoint is not None:
        cmd += ["--entrypoint", entrypoint]
    try:
        return docker(*cmd, image["id"], *args, timeout=120, check=check)
    finally:
        docker("rm", "-f", name, check=False)


@pytest.fixture(scope="module")
def config(ocean_image: dict[str, Any]) -> dict[str, Any]:
    """The image's config (``docker image inspect``)."""
    found = json.loads(docker("image", "inspect", ocean_image["id"]).stdout)
    assert len(found) == 1
    image_config: dict[str, Any] = found[0]["Config"]
    return image_config


def test_image_size_and_build_times_are_reported(ocean_image: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                                 record_property: Any) -> None:
    size = int(ocean_image["size_bytes"])
    record_property("image_size_bytes", size)
    with capsys.disabled():
        print(f"\n[docker image] {ocean_image['image']} {ocean_image['id'][:19]} {size / 1e6:.0f} MB, "
              f"base {ocean_image['base_image']} ({ocean_image['base_source']}), steps {ocean_image['seconds']}")
    assert size > 0


def test_runs_as_uid_10001_not_root(ocean_image: dict[str, Any], config: dict[str, Any]) -> None:
    assert config["User"] == f"{UID}:{UID}"
    ids = _run(ocean_image, "-c", "id -u; id -g; id -un", entrypoint="sh").stdout.split()
    assert ids == [str(UID), str(UID), "ocean"]


def test_entrypoint_is_the_command_line(ocean_image: dict[str, Any], config: dict[str, Any]) -> None:
    assert config["Entrypoint"] == ["ocean-secret-store"]
    assert config["Cmd"] == ["--help"]
    for args in ((), ("--help",)):
        out = _run(ocean_image, *args).stdout
        assert out.startswith("usage: ocean-secret-store")
        assert " node," in out or "{node," in out


def test_anvil_runs_and_is_found(ocean_image: dict[str, Any], config: dict[str, Any]) -> None:
    assert "OCEAN_SS_ANVIL=/usr/local/bin/anvil" in config["Env"]
    version = _run(ocean_image, "--version", entrypoint="anvil").stdout
    assert f"anvil Version: {ANVIL_VERSION}" in version
    found = json.loads(_run(ocean_image, "--json", "anvil-path", "--check").stdout)
    assert found["anvil"] == "/usr/local/bin/anvil"
    assert ANVIL_VERSION in found["version"]


def test_installed_version_is_the_projects(ocean_image: dict[str, Any], config: dict[str, Any]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    installed = _run(ocean_image, "-c", "import importlib.metadata as m; print(m.version('ocean-secret-store'))",
                     entrypoint="python").stdout.strip()
    assert installed == project
    assert config["Labels"]["org.opencontainers.image.version"] == project


def test_healthcheck_is_set_and_answers(ocean_image: dict[str, Any], config: dict[str, Any]) -> None:
    assert config["Healthcheck"]["Test"] == HEALTHCHECK
    refused = _run(ocean_image, "-m", "ocean_secret_store.healthcheck", entrypoint="python", check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith("unhealthy: http://127.0.0.1:8082/ready")
    assert refused.stderr.count("\n") == 1
    one_shot = _run(ocean_image, "-m", "ocean_secret_store.healthcheck", entrypoint="python",
                    env={"OCEAN_SS_HEALTH_URL": "none"}, check=False)
    assert (one_shot.returncode, one_shot.stderr) == (0, "")


def test_environment_and_directories(ocean_image: dict[str, Any], config: dict[str, Any]) -> None:
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PATH"].startswith("/opt/ocean-secret-store/bin:")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    listing = _run(ocean_image, "-c", "stat -c '%n %u %g %a' /node /node/data /stack /chain /files /data",
                   entrypoint="sh").stdout.splitlines()
    owners = {line.split()[0]: line.split()[1:] for line in listing}
    assert all(uid == gid == str(UID) for uid, gid, _ in owners.values()), owners
    assert owners["/node/data"][2] == "700"


# -- a key server in the image ---------------------------------------------------------------------


@pytest.fixture
def node_container(ocean_image: dict[str, Any], tmp_path: Path) -> Iterator[tuple[str, str]]:
    """One key server (a one-node cluster from ``cluster init``) running in the image: its folder
    bind-mounted as the cluster's compose file mounts it, its data on a named volume. Yields the
    container's name and the keystore password (a fresh random one)."""
    password = secrets.token_urlsafe(24)
    environ = {"OCEAN_SS_NODE_PASSWORD": password, "OCEAN_SS_ADMIN_PASSWORD": secrets.token_urlsafe(24)}
    plan = init_cluster(tmp_path / "cluster", parse_hosts(["node0"]), 0, kdf="pbkdf2", environ=environ)
    node = plan.nodes[0]
    # cluster init writes 0700 folders and 0600 files for the operator; the container runs as 10001.
    for path in (node.folder, node.config, node.keystore.parent, node.keystore):
        if os.geteuid() == 0:
            os.chown(path, UID, UID)
        else:
            path.chmod(0o755 if path.is_dir() else 0o644)  # a throwaway test key: readable is fine
    name = _name("node-")
    docker("volume", "create", name)
    try:
        docker("run", "-d", "--name", name, "--network", "none", "--health-interval", "2s",
               "-e", "OCEAN_SS_NODE_PASSWORD",  # the value comes from the client's environment, not argv
               "-v", f"{node.config}:/node/node.toml:ro", "-v", f"{node.keystore.parent}:/node/keystore:ro",
               "-v", f"{name}:/node/data", ocean_image["id"], "node", "--config", "/node/node.toml",
               env={**os.environ, "OCEAN_SS_NODE_PASSWORD": password})
        yield name, password
    finally:
        docker("rm", "-f", "-v", name, check=False)
        docker("volume", "rm", "-f", name, check=False)


def _state(name: str) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(docker("inspect", "--format", "{{json .State}}", name).stdout)
    return state


def test_a_key_server_becomes_healthy(node_container: tuple[str, str]) -> None:
    name, password = node_container
    deadline = time.monotonic() + HEALTHY_WITHIN
    state = _state(name)
    while time.monotonic() < deadline:
        state = _state(name)
        if not state["Running"] or state.get("Health", {}).get("Status") == "healthy":
            break
        time.sleep(0.5)
    logs = docker("logs", "--tail", "30", name, check=False)
    output = logs.stdout + logs.stderr
    assert password not in output
    assert state["Running"], f"the node exited ({state.get('ExitCode')}):\n{output}"
    assert state["Health"]["Status"] == "healthy", (state["Health"], output)
    # The health check itself, run by hand; and the named volume started out owned by ocean.
    assert docker("exec", name, "python", "-m", "ocean_secret_store.healthcheck").returncode == 0
    assert docker("exec", name, "stat", "-c", "%u %a", "/node/data").stdout.split() == [str(UID), "700"]
    assert docker("exec", name, "ls", "-A", "/node/data").stdout.split(), "the node wrote nothing to its data volume"
    # Stops cleanly on SIGTERM (docker stop), as compose does it.
    docker("stop", "--time", "20", name, timeout=60)
    assert _state(name)["ExitCode"] == 0


# -- no secret in the image --------------------------------------------------------------------------

_SECRET_ENV = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|PRIVATE|_KEY)[A-Z_]*=", re.IGNORECASE)
#: A 32-byte key in hex, not a content digest (``sha256:<hex>``, and ``COPY file:<hex>`` in the history).
_PRIVATE_KEY_HEX = re.compile(r"(?<![0-9a-fA-F:])(?:0x)?[0-9a-fA-F]{64}(?![0-9a-fA-F])")


def test_no_secret_in_layers_or_config(ocean_image: dict[str, Any], node_container: tuple[str, str]) -> None:
    """What built the image and its config name no password or key: not the test node's password
    (given to a container of this image), no secret-looking variable, no 64-hex key outside a digest,
    no PEM key; and the image's own folders hold no keystore, config or .env."""
    _, password = node_container
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}} {{.Comment}}", ocean_image["id"]).stdout
    inspected = docker("image", "inspect", ocean_image["id"]).stdout
    assert password not in history
    assert password not in inspected
    image_config = json.loads(inspected)[0]["Config"]
    # What the image carries into every container: environment, labels, commands (not the engine's
    # own ids and paths, which inspect shows beside them).
    carried = json.dumps({k: v for k, v in image_config.items() if k != "Image"})
    for text in (history, carried):
        assert "PRIVATE KEY" not in text
        assert not _PRIVATE_KEY_HEX.findall(text), "a 64-hex value outside a digest"
    env_names = [item.split("=", 1)[0] + "=" for item in image_config["Env"]]
    assert not [n for n in env_names if _SECRET_ENV.search(n)], env_names
    files = _run(ocean_image, "-c", "find /node /stack /chain /files /data /tmp -mindepth 1 2>/dev/null; "
                 "find / -xdev \\( -name '.env' -o -name 'UTC--*' -o -name 'node.toml' \\) 2>/dev/null; exit 0",
                 entrypoint="sh", user="0").stdout.split()
    assert files == ["/node/data"], files


def _build_module() -> Any:
    spec = importlib.util.spec_from_file_location("docker_build", BUILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_builds_prune_older_content_tags_and_untagged_images_of_ours(ocean_image: dict[str, Any]) -> None:
    """docker/build.py keeps the newest --keep content tags (the new one included) and removes this
    project's untagged images, so repeated builds do not fill the engine's disk."""
    build = _build_module()
    repository = f"ocss-prune-{secrets.token_hex(4)}"
    tags = [f"{repository}:{secrets.token_hex(6)}" for _ in range(5)]
    for tag in tags:
        docker("tag", ocean_image["id"], tag)
    untagged = subprocess.run(["docker", "build", "-q", "-"], input=f"FROM {ocean_image['id']}\nLABEL "
                              f"org.ocean-secret-store.test={secrets.token_hex(8)}\n", text=True, check=True,
                              capture_output=True, timeout=300).stdout.strip()
    try:
        removed = build.prune_images(repository, tags[0], 3)
        left = docker("image", "ls", repository, "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        assert tags[0] in left and len(left) == 3, left
        assert sorted(r for r in removed if r.startswith(repository)) == sorted(set(tags) - set(left))
        assert untagged in removed and docker("image", "inspect", untagged, check=False).returncode != 0
        assert docker("image", "inspect", ocean_image["id"], check=False).returncode == 0  # tagged: kept
    finally:
        for tag in tags:
            docker("rmi", tag, check=False)
        docker("rmi", untagged, check=False)
