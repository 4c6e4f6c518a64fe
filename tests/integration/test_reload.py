"""A running key server reloads its ``[cluster]`` address book on SIGHUP (issue 14: a new key
server joins a running cluster without a restart): real node processes on loopback, and the
reload itself (``RunningNode.reload``) on an in-process node."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from ocean_secret_store import devnet
from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.exceptions import ConfigError
from ocean_secret_store.node.app import start_node
from ocean_secret_store.node.channel import short_id
from ocean_secret_store.node.config import NodeConfig, dump_config
from ocean_secret_store.testing.devnets import running_devnet
from ocean_secret_store.testing.servers import free_port

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
NODES = 3
#: Bound of every wait for a node to act on a signal.
WAIT = 10.0


def read_toml(path: str | Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        return tomllib.load(f)


def write_config(path: str | Path, mapping: dict[str, Any]) -> None:
    # Node configs hold the node secret: owner-only, as the devnet writes them.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(dump_config(mapping))


def wait_until(what: str, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:.0f} s")
        time.sleep(0.05)


def health(url: str) -> dict[str, Any]:
    answer = requests.get(url + "/health", timeout=5)
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


@dataclass
class Newcomer:
    """A key server process started after the cluster, whose config lists every node."""

    public: str
    url: str
    config: Path
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def node_id(self) -> bytes:
        return bytes.fromhex(self.public[2:])


@dataclass
class Cluster:
    state: devnet.DevnetState
    newcomer: Newcomer
    #: What each running node logged for the reload that added the newcomer (once it did).
    joined: list[str] | None = None

    def join(self) -> list[str]:
        """Once: list the newcomer in every running node's config and send each SIGHUP; what
        each logged for that reload. Returns when the newcomer is connected to every node."""
        if self.joined is None:
            listen = str(read_toml(self.newcomer.config)["node"]["listen"])
            counts = []
            for index in range(NODES):
                self.rewrite(index, lambda m: m["cluster"].update({self.newcomer.public: listen}))
                counts.append(self.sighup(index))
            added = f"peers added {short_id(self.newcomer.node_id)}"
            self.joined = [self.wait_reloaded(index, counts[index], added) for index in range(NODES)]
        devnet.wait_for_mesh([self.newcomer.url], NODES, timeout=WAIT)
        return self.joined

    def log(self, index: int) -> str:
        return Path(self.state.nodes[index].log).read_text(errors="replace")

    def pid(self, index: int) -> int:
        pid = self.state.nodes[index].pid
        assert pid is not None
        return pid

    def rewrite(self, index: int, change: Callable[[dict[str, Any]], None]) -> None:
        """Edit node ``index``'s config file in place."""
        path = self.state.nodes[index].config
        mapping = read_toml(path)
        change(mapping)
        write_config(path, mapping)

    def sighup(self, index: int) -> int:
        """Send node ``index`` SIGHUP; how many reloads its log reported before (to wait for the next)."""
        before = self.reloads(index)
        os.kill(self.pid(index), signal.SIGHUP)
        return before

    def reloads(self, index: int) -> int:
        return self.log(index).count("SIGHUP: reloading")

    def wait_reloaded(self, index: int, before: int, expected: str) -> str:
        """Wait until node ``index`` logged ``expected`` for the reload after the first ``before``
        ones; what it logged for that reload."""

        def logged() -> str:
            after = self.log(index).split("SIGHUP: reloading")[before + 1:]
            return after[0] if after else ""

        wait_until(f"node {index} never logged {expected!r} for its reload", lambda: expected in logged())
        return logged()


def start_newcomer(state_dir: Path, template: str | Path) -> Newcomer:
    secret = random_scalar()
    public = "0x" + Point.generator_mul(secret).to_bytes().hex()
    mapping = read_toml(template)
    listen, http_port = f"{HOST}:{free_port()}", free_port()
    mapping["node"].update(secret=f"0x{secret:064x}", listen=listen, http_listen=f"{HOST}:{http_port}",
                           data_dir=str(state_dir / "newcomer"))
    mapping["cluster"][public] = listen
    config, log = state_dir / "newcomer.toml", state_dir / "newcomer.log"
    write_config(config, mapping)
    process = subprocess.Popen(
        [sys.executable, "-m", "ocean_secret_store.cli", "node", "--config", str(config), "--log-file", str(log)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    return Newcomer(public, f"http://{HOST}:{http_port}", config, log, process)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state_dir = tmp_path_factory.mktemp("reload")
    with running_devnet(state_dir, NODES, acl="none") as state:
        newcomer = start_newcomer(state_dir, state.nodes[0].config)
        try:
            yield Cluster(state, newcomer)
        finally:
            newcomer.process.terminate()
            newcomer.process.wait(10)


def test_running_nodes_connect_to_a_new_node_after_sighup(cluster: Cluster) -> None:
    newcomer = cluster.newcomer
    assert cluster.joined is None, "this test runs first: it shows the newcomer alone before the reloads"
    # Before: the newcomer runs and lists everyone, but no running node knows its id.
    wait_until("the newcomer never found its peers missing",
               lambda: (r := devnet.readiness(newcomer.url)) is not None and not r["connecting"])
    before = health(newcomer.url)
    assert before["nodes"] == NODES + 1 and before["connected_peers"] == 0
    for lines in cluster.join():
        assert "reloaded" in lines and "refused" not in lines and "needs a restart" not in lines
    # The newcomer is connected to every running node, which all stay fully connected to each other.
    assert health(newcomer.url)["status"] == "ok"
    devnet.wait_for_mesh([n.http_url for n in cluster.state.nodes], NODES - 1, timeout=WAIT)
    linked = f"connected to {short_id(newcomer.node_id)}"
    wait_until("a running node never logged its link to the newcomer",
               lambda: all(linked in cluster.log(index) for index in range(NODES)))


def test_a_bad_or_foreign_config_on_sighup_leaves_the_node_running_unchanged(cluster: Cluster) -> None:
    cluster.join()
    path = Path(cluster.state.nodes[0].config)
    good = path.read_text()
    try:
        # An invalid value: the file does not load.
        cluster.rewrite(0, lambda m: m["timeouts"].update(session=-1.0))
        lines = cluster.wait_reloaded(0, cluster.sighup(0), "refused")
        assert "timeouts.session" in lines
        # Another node's config (another secret): refused, nothing applied.
        path.write_text(Path(cluster.state.nodes[1].config).read_text())
        lines = cluster.wait_reloaded(0, cluster.sighup(0), "refused")
        assert "node.secret" in lines
        # Still running, serving, and connected to everyone, the newcomer included.
        assert cluster.state.nodes[0].pid in cluster.state.running_pids()
        assert health(cluster.state.nodes[0].http_url)["status"] == "ok"
        devnet.wait_for_mesh([cluster.state.nodes[0].http_url], NODES - 1, timeout=WAIT)
        devnet.wait_for_mesh([cluster.newcomer.url], NODES, timeout=WAIT)
    finally:
        path.write_text(good)
    for index in range(NODES):  # nothing a reload logged holds a node secret
        secret = str(read_toml(cluster.state.nodes[index].config)["node"]["secret"])
        assert all(secret[2:].lower() not in cluster.log(i).lower() for i in range(NODES))


def test_a_removed_node_is_disconnected_and_other_changes_are_reported(cluster: Cluster) -> None:
    cluster.join()
    newcomer = cluster.newcomer

    def drop_newcomer(mapping: dict[str, Any]) -> None:
        del mapping["cluster"][newcomer.public]
        mapping["timeouts"]["session"] = 7.0

    cluster.rewrite(0, drop_newcomer)
    lines = cluster.wait_reloaded(0, cluster.sighup(0), "[timeouts] session changed: not applied")
    assert f"peers removed {short_id(newcomer.node_id)}" in lines
    node0 = cluster.state.nodes[0].public.lower()
    wait_until("the newcomer never lost node 0", lambda: node0 in health(newcomer.url)["disconnected_peers"])
    time.sleep(0.5)  # several re-dials (or dials awaited) later: still apart
    assert health(newcomer.url)["connected_peers"] == NODES - 1
    assert health(cluster.state.nodes[0].http_url)["status"] == "ok"


# -- RunningNode.reload in process ---------------------------------------------------------------


def node_mapping(secret: int, cluster: dict[str, str], **sections: dict[str, Any]) -> dict[str, Any]:
    return {
        "node": {"secret": f"0x{secret:064x}", "listen": f"{HOST}:0", "http_listen": f"{HOST}:0", "data_dir": "node"},
        "cluster": cluster,
        "acl": {"kind": "none"},
        **sections,
    }


def test_reload_applies_the_address_book_and_reports_the_rest(tmp_path: Path) -> None:
    secret, peer_secret, stranger = random_scalar(), random_scalar(), random_scalar()
    me, peer, other = ("0x" + Point.generator_mul(s).to_bytes().hex() for s in (secret, peer_secret, stranger))
    config = NodeConfig.from_mapping(node_mapping(secret, {me: f"{HOST}:1"}), tmp_path)
    grown = NodeConfig.from_mapping(
        node_mapping(secret, {me: f"{HOST}:1", peer: f"{HOST}:{free_port()}"}, timeouts={"keepalive": 2.0},
                     http={"cors": "*"}), tmp_path)
    # Another node's config: its secret, a cluster listing it.
    foreign = NodeConfig.from_mapping(node_mapping(stranger, {me: f"{HOST}:1", other: f"{HOST}:3"}), tmp_path)

    async def scenario() -> None:
        node = await start_node(config)
        try:
            assert node.reload(config) == []
            notes = node.reload(grown)
            assert notes == ["[http] cors changed: not applied (needs a restart)",
                             "[timeouts] keepalive changed: not applied (needs a restart)"]
            assert node.core.servers_set == (bytes.fromhex(me[2:]),)  # an admin session changes it, not a reload
            peer_id = bytes.fromhex(peer[2:])
            assert set(node.transport.connection_states()) == {peer_id}
            assert node.config.cluster == grown.cluster and node.config.timeouts == config.timeouts
            with pytest.raises(ConfigError) as refused:
                node.reload(foreign)
            assert refused.value.key == "node.secret" and f"{stranger:064x}" not in str(refused.value)
            assert set(node.transport.connection_states()) == {peer_id}  # nothing applied
            assert node.config.cluster == grown.cluster
            assert node.reload(config) == []  # back to the servers set the sessions use
            assert node.transport.connection_states() == {}
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))
