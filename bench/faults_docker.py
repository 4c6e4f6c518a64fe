"""``bench/faults.py --docker``: the ``mixed`` fault campaign against the compose stack instead of
processes on loopback.

    .venv/bin/python bench/faults.py --docker --rounds 100 --seed 1 [--image ocean-secret-store:latest]

``stack init`` writes a five-node stack into a scratch folder and ``docker-compose up`` starts it
(chain, contract deployment, key servers with the on-chain access checker, RPC face, provider,
Aquarius, file server; the image is built with ``docker/build.py`` unless ``--image`` names one).
The faults act on containers:

* ``kill``    ``docker kill`` (SIGKILL), ``docker start`` at the end of the round (same data);
* ``freeze``  ``docker pause`` (the cgroup freezer), ``docker unpause`` at the end of the round;
* ``restart`` ``docker stop`` (SIGTERM, then SIGKILL after 10 s), started at the end of the round;
* ``cut``     a real partition: the node is disconnected from the internal network (alive, its
  published HTTP API answering, no route to any peer nor from them) and reconnected under its
  cluster name at the end of the round; no process restarts.

Loopback socket cuts (``ss -K``) and the liveness scenarios need the process devnet; they are
refused here. The invariants, the table and the exit code are those of bench/faults.py.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from faults import MESH_BOUND, Campaign

from ocean_secret_store.stack import init_stack
from ocean_secret_store.testing.compose import ComposeError, ComposeStack

#: The stack's key servers run cluster init's default session timeout.
STACK_SESSION_TIMEOUT = 5.0
HEALTH_BOUND = 180.0
BUILD = Path(__file__).resolve().parent.parent / "docker" / "build.py"


def check_docker_scenarios(scenarios: list[str]) -> None:
    if scenarios != ["mixed"]:
        raise SystemExit("--docker runs the mixed campaign only (the liveness scenarios drive processes on loopback)")


def build_image() -> str:
    """``docker/build.py --json``: the image tag it built (cached layers make a rebuild quick)."""
    done = subprocess.run([sys.executable, str(BUILD), "--json"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"docker/build.py failed:\n{done.stderr[-3000:]}")
    return str(json.loads(done.stdout)["image"])


class DockerCampaign(Campaign):
    session_timeout = STACK_SESSION_TIMEOUT
    #: A cut here partitions its victim from every peer: it is out for the round, like a kill.
    out_kinds = ("kill", "freeze", "restart", "cut")

    def __init__(self, state_dir: Path, nodes: int, threshold: int, rng: random.Random, per_entry: int = 3,
                 max_hold: float = 0.0, *, image: str | None = None) -> None:
        self.image = image
        self.compose: ComposeStack | None = None
        self.partitioned: set[int] = set()
        super().__init__(state_dir, nodes, threshold, rng, per_entry, max_hold)

    @property
    def stack(self) -> ComposeStack:
        if self.compose is None:
            raise RuntimeError("the stack is not up")
        return self.compose

    def start(self) -> dict:
        image = self.image or build_image()
        folder = self.state_dir / "stack"
        init_stack(folder, nodes=self.n, image=image)
        self.compose = ComposeStack(folder, f"ocssfaults{os.getpid()}")
        started = time.monotonic()
        try:
            self.compose.compose("up", "-d")
            self.compose.wait_healthy([f"node{i}" for i in range(self.n)], HEALTH_BOUND)
            self.compose.wait_for_mesh(HEALTH_BOUND)
        except BaseException:
            self.stop()
            raise
        print(f"compose stack up in {time.monotonic() - started:.1f} s ({image}, {folder})", flush=True)
        return self.compose.state().to_json()

    def stop(self) -> None:
        if self.compose is not None:
            try:
                self.compose.compose("down", "-v", "-t", "5")
            except ComposeError as exc:
                print(f"docker-compose down failed: {exc}", file=sys.stderr)

    # -- faults on containers -------------------------------------------------------------------

    def pid(self, i: int) -> int:
        raise RuntimeError("the docker campaign has no key server pids")

    def inject(self, fault: str, victim: int) -> None:
        if fault == "kill":
            self.stack.kill(victim)
        elif fault == "freeze":
            self.stack.docker("pause", self.stack.container(f"node{victim}"))
        elif fault == "restart":
            self.stack.docker("stop", "-t", "10", self.stack.container(f"node{victim}"), timeout=70)
        elif fault == "cut":
            self.stack.disconnect(victim)
            self.partitioned.add(victim)

    def heal(self, killed: list[int], frozen: list[int], stopped: list[int]) -> None:
        for victim in frozen:
            self.stack.docker("unpause", self.stack.container(f"node{victim}"))
        for victim in sorted(self.partitioned):
            self.stack.connect(victim)
        self.partitioned.clear()
        for victim in killed + stopped:
            self.stack.start(victim)
        for i in range(self.n):
            if i in killed or i in stopped:
                continue
            status = self.stack.health(f"node{i}")
            if status in ("exited", "dead", "restarting"):
                self.violation(f"key server {i} died without being killed ({status})")
                self.stack.start(i)
        try:
            self.stack.wait_healthy([f"node{i}" for i in killed + stopped], MESH_BOUND)
        except ComposeError as exc:
            self.violation(f"restarted key servers not healthy within {MESH_BOUND:.0f} s: {exc}")
