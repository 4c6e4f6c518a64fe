"""Drive a Docker compose stack made by ``ocean-secret-store stack init`` (tests/docker/ and
``bench/faults.py --docker``): bring it up, wait for health, and inflict real faults on its
containers: a partition (``docker network disconnect`` from the internal network: alive, reachable
from the host, cut off from its peers), a freeze (``docker pause``), a kill and a restart; and
replace a node by a new container (:func:`~ocean_secret_store.stack.replace_node`).

Nodes are addressed by their index in ``devnet.json``'s ``nodes``; the service of node ``i`` is
``node<i>`` until a replacement puts another service (``node<k>``, a new k) in its place.

Every command runs ``docker`` / ``docker-compose`` as a subprocess with a bound; a failure raises
:class:`ComposeError` with the command and the tail of its output.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import stack as _stack
from ..devnet import DevnetState, readiness, wait_for_mesh
from ..stack import StackError, compose_program, run_docker

__all__ = ["ComposeError", "ComposeStack", "compose_command", "engine_answers"]

#: The compose file and environment ``stack init`` writes into its folder.
COMPOSE_FILE = "compose.yaml"
#: The internal network's name in the compose file (the project prefixes it).
CLUSTER_NETWORK = "cluster"


#: A docker or docker-compose command failed or outlived its bound (the stack's own error).
ComposeError = StackError
_run = run_docker
#: ``docker-compose`` (v1, Debian's) when installed, else the v2 plugin ``docker compose``.
compose_command = compose_program


def engine_answers(timeout: float = 20.0) -> str | None:
    """None when a Docker engine answers ``docker info``; otherwise why not (for a skip reason)."""
    if shutil.which("docker") is None:
        return "the docker client is not installed"
    try:
        _run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout)
    except ComposeError as exc:
        return str(exc)
    return None


@dataclass
class ComposeStack:
    """The compose project ``project`` of the stack folder ``folder`` (``stack init --out``)."""

    folder: Path
    project: str
    command: list[str] = field(default_factory=compose_command)
    _ids: dict[str, str] = field(default_factory=dict)

    @property
    def compose_file(self) -> Path:
        return self.folder / COMPOSE_FILE

    @property
    def network(self) -> str:
        return f"{self.project}_{CLUSTER_NETWORK}"

    def compose(self, *args: str, timeout: float = 300.0, env: Mapping[str, str] | None = None) -> str:
        """``docker-compose -f FOLDER/compose.yaml -p PROJECT ARGS``; ``env`` overrides the folder's
        ``.env`` (compose takes the shell's variables first)."""
        # The folder is the project directory: compose reads its .env (ports, image, passwords) there.
        return _run([*self.command, "-f", str(self.compose_file), "-p", self.project, *args], timeout,
                    cwd=self.folder, env=env)

    def state(self) -> DevnetState:
        return DevnetState.require(self.folder)

    def node_service(self, index: int) -> str:
        """The compose service of node ``index`` of ``devnet.json`` (``node<i>``, from its config's folder)."""
        return _stack.node_name(_stack.node_index(self.state().nodes[index]))

    def node_services(self) -> list[str]:
        return [_stack.node_name(_stack.node_index(node)) for node in self.state().nodes]

    def cluster_host(self, index: int) -> str:
        """Node ``index``'s name on the internal network (its peers' address book), from cluster.json."""
        cluster = json.loads((self.folder / "cluster" / "cluster.json").read_text(encoding="utf-8"))
        service = self.node_service(index)
        return str(next(node["host"] for node in cluster["nodes"] if node["name"] == service))

    def container(self, service: str) -> str:
        if service not in self._ids:
            found = self.compose("ps", "-q", service, timeout=60).strip()
            if not found:
                raise ComposeError(f"service {service} has no container")
            self._ids[service] = found.splitlines()[0]
        return self._ids[service]

    def forget(self, service: str) -> None:
        """Look the container of ``service`` up again next time (after it was recreated)."""
        self._ids.pop(service, None)

    def docker(self, *args: str, timeout: float = 60.0) -> str:
        return _run(["docker", *args], timeout)

    def health(self, service: str) -> str:
        """The container's health status (``healthy``, ``starting``, ``unhealthy``), or its state when
        it has no health check (``running``, ``exited``...)."""
        out = self.docker("inspect", "-f", "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                          self.container(service))
        status, _, health = out.strip().partition(" ")
        return health or status

    def image_id(self, service: str) -> str:
        return self.docker("inspect", "-f", "{{.Image}}", self.container(service)).strip()

    def services(self) -> list[str]:
        return self.compose("config", "--services", timeout=60).split()

    def wait_healthy(self, services: Sequence[str], timeout: float = 120.0) -> float:
        """Wait until every service in ``services`` is healthy (or running, without a health check);
        the seconds it took."""
        started = time.monotonic()
        pending = list(services)
        while pending:
            pending = [s for s in pending if self.health(s) not in ("healthy", "running")]
            if not pending:
                break
            if time.monotonic() - started > timeout:
                states = {s: self.health(s) for s in pending}
                raise ComposeError(f"not healthy within {timeout:.0f} s: {states}; logs:\n{self.logs(*pending)}")
            time.sleep(0.5)
        return time.monotonic() - started

    def logs(self, *services: str, lines: int = 20) -> str:
        with contextlib.suppress(ComposeError):
            return self.compose("logs", "--no-color", "--tail", str(lines), *services, timeout=60)
        return "(no logs)"

    def node_urls(self) -> list[str]:
        return [node.http_url for node in self.state().nodes]

    def wait_for_mesh(self, timeout: float = 60.0) -> None:
        """Every key server ready and connected to every other (through the published ports)."""
        urls = self.node_urls()
        wait_for_mesh(urls, len(urls) - 1, timeout=timeout)

    def ready(self, index: int) -> bool:
        return readiness(self.node_urls()[index]) is not None

    # -- faults -------------------------------------------------------------------------------

    def disconnect(self, index: int) -> None:
        """Cut node ``index`` off the internal network: it runs on, its HTTP API stays published,
        but no peer can reach it nor it them (its name no longer resolves there)."""
        self.docker("network", "disconnect", self.network, self.container(self.node_service(index)))

    def connect(self, index: int) -> None:
        """Put node ``index`` back on the internal network under its cluster name."""
        self.docker("network", "connect", "--alias", self.cluster_host(index), self.network,
                    self.container(self.node_service(index)))

    @contextlib.contextmanager
    def partitioned(self, *indices: int) -> Iterator[None]:
        """Nodes ``indices`` cut off for the block, reconnected however it ends."""
        done: list[int] = []
        try:
            for index in indices:
                self.disconnect(index)
                done.append(index)
            yield
        finally:
            for index in done:
                self.connect(index)

    @contextlib.contextmanager
    def paused(self, *indices: int) -> Iterator[None]:
        """Nodes ``indices`` frozen (``docker pause``: the cgroup freezer) for the block."""
        done: list[str] = []
        try:
            for index in indices:
                container = self.container(self.node_service(index))
                self.docker("pause", container)
                done.append(container)
            yield
        finally:
            for container in done:
                self.docker("unpause", container)

    def kill(self, index: int) -> None:
        self.docker("kill", self.container(self.node_service(index)))

    def start(self, index: int) -> None:
        self.docker("start", self.container(self.node_service(index)))

    def replace(self, index: int, **options: Any) -> dict[str, Any]:
        """Replace node ``index`` by a new container in one servers-set change (stack.replace_node, in
        this project); its result."""
        old = self.node_service(index)
        try:
            return _stack.replace_node(self.folder, index, project=self.project, **options)
        finally:
            self.forget(old)

    def restart(self, index: int, grace: int = 10) -> None:
        """A graceful restart (SIGTERM, then start the same container: same data volume)."""
        self.docker("restart", "-t", str(grace), self.container(self.node_service(index)), timeout=grace + 60)
