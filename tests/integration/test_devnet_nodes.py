"""Servers-set change on a real devnet (issue 14): ``devnet add-node``, ``remove-node`` and
``replace-node`` move every key's shares between real key server processes, and the documents stay
decryptable through every node, the new ones as entry nodes included. A key that cannot keep t+1
shares is refused until forced, and the refusal changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from ocean_secret_store import devnet
from ocean_secret_store.client.admin import AdminClient
from ocean_secret_store.client.client import SecretStoreClient
from ocean_secret_store.exceptions import KeysWouldBeLost
from ocean_secret_store.testing.devnets import running_devnet

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "ocean_secret_store.cli"]
NODES = 3
#: threshold 1 survives one dead node of three; the threshold 2 key needs every node of three.
THRESHOLDS = (1, 1, 1, 2)


@dataclass
class Net:
    state_dir: Path
    account: Any
    #: document id -> (threshold, encrypted document, plaintext)
    documents: dict[str, tuple[int, str, str]]

    @property
    def state(self) -> devnet.DevnetState:
        return devnet.DevnetState.require(self.state_dir)

    def decrypt(self, url: str, max_threshold: int = 2) -> None:
        """Every document of threshold <= ``max_threshold``, entered through ``url`` only."""
        with SecretStoreClient(url, self.account) as client:
            for document_id, (threshold, encrypted, plain) in self.documents.items():
                if threshold <= max_threshold:
                    assert client.decrypt_document(document_id, encrypted) == plain, (url, threshold)

    def servers_set(self, url: str) -> set[str]:
        with AdminClient(url) as client:
            return set(client.status()["servers_set"])

    def publics(self) -> set[str]:
        return {node.public for node in self.state.nodes}

    def cluster_lists(self) -> list[set[str]]:
        out = []
        for node in self.state.nodes:
            with open(node.config, "rb") as f:
                out.append(set(tomllib.load(f)["cluster"]))
        return out


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    state_dir = tmp_path_factory.mktemp("nodes")
    with running_devnet(state_dir, NODES, acl="none") as state:
        account = Account.from_key(state.accounts["publisher"].private_key)
        documents = {}
        with SecretStoreClient([n.http_url for n in state.nodes], account) as client:
            for i, threshold in enumerate(THRESHOLDS):
                document_id, plain = os.urandom(32).hex(), f"document {i} (t={threshold})"
                documents[document_id] = (threshold, client.publish_document(document_id, plain, threshold), plain)
        yield Net(state_dir, account, documents)


def test_devnet_json_names_the_admin_and_every_node_its_key(net: Net) -> None:
    state = net.state
    admin = state.accounts["admin"]
    assert admin.address not in {state.accounts[r].address for r in devnet.ROLES if r != "admin"}
    for node in state.nodes:
        with open(node.config, "rb") as f:
            assert tomllib.load(f)["node"]["admin_public"] == devnet._admin_public(state)


def test_add_node_moves_every_key_to_the_new_set(net: Net) -> None:
    before = net.publics()
    started = time.monotonic()
    index, report = devnet.add_node(net.state_dir)
    assert time.monotonic() - started < 30
    state = net.state
    new = state.nodes[index]
    assert index == NODES and net.publics() == before | {new.public}
    assert (report["state"], report["done"], report["failed"], report["lost"]) == ("done", len(THRESHOLDS), 0, [])
    # every node, the new one too, lists every node and agrees on the servers set
    assert all(listed == net.publics() for listed in net.cluster_lists())
    for node in state.nodes:
        assert net.servers_set(node.http_url) == net.publics()
    net.decrypt(new.http_url)  # the new node as the entry node
    net.decrypt(state.nodes[0].http_url)


def test_remove_node_through_the_cli(net: Net) -> None:
    removed = net.state.nodes[0]
    out = subprocess.run([*CLI, "--json", "devnet", "remove-node", "0", "--state-dir", str(net.state_dir)],
                         capture_output=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr.decode()
    answer = json.loads(out.stdout)
    assert answer["removed"] == 0 and answer["public"] == removed.public
    assert answer["report"]["done"] == len(THRESHOLDS) and answer["report"]["failed"] == 0
    state = net.state
    assert removed.public not in net.publics() and len(state.nodes) == NODES
    assert removed.pid not in state.running_pids()
    assert all(listed == net.publics() for listed in net.cluster_lists())
    assert state.secret_store_url == state.nodes[0].http_url
    # `admin status` (the CLI) on every remaining node shows the new servers set
    for node in state.nodes:
        status = subprocess.run([*CLI, "admin", "status", "--node", node.http_url], capture_output=True,
                                timeout=60, check=True)
        shown = json.loads(status.stdout)
        assert set(shown["servers_set"]) == net.publics() and shown["admin_session"] is None
        net.decrypt(node.http_url)


def test_the_new_node_holds_real_shares(net: Net) -> None:
    # Kill one of the two original nodes left: threshold-1 keys then need the new node's share.
    state = net.state
    original = next(i for i, n in enumerate(state.nodes) if n.public != state.nodes[-1].public)
    devnet.stop_node(net.state_dir, original, kill=True)
    for node in state.nodes:
        if node is not state.nodes[original]:
            net.decrypt(node.http_url, max_threshold=1)


def test_replacing_a_dead_node_is_refused_until_forced(net: Net) -> None:
    state = net.state
    dead = next(i for i, n in enumerate(state.nodes) if n.pid not in state.running_pids())
    before_nodes, before_lists = [n.public for n in state.nodes], net.cluster_lists()
    configs = sorted(net.state_dir.glob("node*.toml"))
    with pytest.raises(devnet.DevnetError, match=f"node {dead} is not running"):  # the new set would lack it
        devnet.add_node(net.state_dir)
    # the threshold-2 key has 2 live holders: t+1 = 3 are needed to move it, so nothing changes
    with pytest.raises(KeysWouldBeLost, match="1 key"):
        devnet.replace_node(net.state_dir, dead)
    assert [n.public for n in net.state.nodes] == before_nodes and net.cluster_lists() == before_lists
    assert sorted(net.state_dir.glob("node*.toml")) == configs  # the refused newcomer's config is gone
    live = [n for n in net.state.nodes if n.pid in net.state.running_pids()]
    assert all(net.servers_set(n.http_url) == set(before_nodes) for n in live)
    net.decrypt(live[0].http_url, max_threshold=1)

    index, report = devnet.replace_node(net.state_dir, dead, force=True)
    assert index == dead
    assert (report["done"], report["failed"], len(report["lost"])) == (len(THRESHOLDS) - 1, 0, 1)
    state = net.state
    assert before_nodes[dead] not in net.publics() and len(state.nodes) == NODES
    assert all(n.pid in state.running_pids() for n in state.nodes)
    assert all(listed == net.publics() for listed in net.cluster_lists())
    for node in state.nodes:
        assert net.servers_set(node.http_url) == net.publics()
        net.decrypt(node.http_url, max_threshold=1)
