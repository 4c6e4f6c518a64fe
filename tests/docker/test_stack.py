"""The whole stack in Docker, on a real engine: ``stack init`` (which runs ``cluster init``) writes
the folder, pytest-docker brings ``compose.yaml`` up (chain, contract deployment, five key servers,
RPC face, provider, Aquarius, file server, each in its own container on an internal network), and
the tests drive it from the host through the published ports while they inflict real faults:
network partitions (``docker network disconnect``), ``docker pause``, ``docker kill``, a rolling
restart under load, an upgrade to a newly built image, and a node replaced through servers-set
change.

Skipped, with the reason, where no Docker engine answers (tests/docker/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import pytest
import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount

from ocean_secret_store.chain.keeper import Keeper
from ocean_secret_store.client.admin import AdminClient
from ocean_secret_store.client.client import SecretStoreClient
from ocean_secret_store.crypto.curve import Point
from ocean_secret_store.devnet import DevnetState
from ocean_secret_store.exceptions import SecretStoreError
from ocean_secret_store.ocean.config import load_config as load_ocean_config
from ocean_secret_store.ocean.host import Ocean
from ocean_secret_store.stack import init_stack
from ocean_secret_store.testing.compose import ComposeStack, compose_command

pytestmark = [pytest.mark.integration]

NODES = 5
#: The stack's encryptor threshold (ocean.ini) and the keys made here: any 3 of the 5 serve a key.
THRESHOLD = 2
PRICE = 3


# -- pytest-docker: the compose file stack init wrote, brought up once for this module ----------


@pytest.fixture(scope="module")
def stack_folder(ocean_image: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docker-stack") / "stack"
    init_stack(out, nodes=NODES, image=str(ocean_image["image"]))
    return out


@pytest.fixture(scope="module")
def docker_compose_file(stack_folder: Path) -> str:
    return str(stack_folder / "compose.yaml")


@pytest.fixture(scope="module")
def docker_compose_command() -> str:
    return " ".join(compose_command())


@pytest.fixture(scope="module")
def docker_compose_project_name() -> str:
    return f"ocss{os.getpid()}"


@pytest.fixture(scope="module")
def docker_setup(stack_folder: Path) -> list[str]:
    # docker-compose 1.29 has no --wait: the stack fixture waits for health itself.
    STARTED["at"] = time.monotonic()
    return ["up -d"]


@pytest.fixture(scope="module")
def docker_cleanup() -> list[str]:
    return ["down -v -t 5"]


STARTED: dict[str, float] = {}


@pytest.fixture(scope="module")
def stack(docker_services: Any, stack_folder: Path, docker_compose_project_name: str) -> Iterator[ComposeStack]:
    compose = ComposeStack(stack_folder, docker_compose_project_name)
    seconds = compose.wait_healthy([f"node{i}" for i in range(NODES)] + ["provider", "aquarius", "rpc"], 180)
    compose.wait_for_mesh(60)
    print(f"\nstack start: {time.monotonic() - STARTED['at']:.1f} s from `up -d` to every container healthy "
          f"and the mesh complete ({seconds:.1f} s of it waiting for health)")
    yield compose


@pytest.fixture(scope="session")
def rebuilt_image(ocean_image: dict[str, Any], docker_engine: Any) -> Iterator[dict[str, Any]]:
    """A newly built image of the same code: the stack's image with a new build label, so it has its
    own id, as a redeploy of the same release would."""
    tag = f"ocean-secret-store:upgrade-{os.urandom(4).hex()}"
    dockerfile = f"FROM {ocean_image['image']}\nLABEL org.ocean-secret-store.build={os.urandom(8).hex()}\n"
    subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=dockerfile, text=True, check=True,
                   capture_output=True, timeout=300)
    image_id = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", tag], check=True, text=True,
                              capture_output=True, timeout=60).stdout.strip()
    yield {"tag": tag, "id": image_id}
    subprocess.run(["docker", "rmi", "-f", tag], check=False, capture_output=True, timeout=120)


@dataclass
class Published:
    """Keys of DIDs the publisher registered on chain and stored through the cluster."""

    keys: dict[bytes, Point] = field(default_factory=dict)


def role(state: DevnetState, name: str) -> LocalAccount:
    return Account.from_key(state.accounts[name].private_key)


def client(urls: list[str], who: LocalAccount, timeout: float = 15.0) -> SecretStoreClient:
    return SecretStoreClient(urls, who, timeout=timeout)


@pytest.fixture(scope="module")
def published(stack: ComposeStack) -> Published:
    """Six DIDs on chain, each with a document key of threshold 2 generated and stored by the cluster."""
    state = stack.state()
    keeper = Keeper(state.chain_url, state.contracts)
    publisher, provider = role(state, "publisher"), role(state, "provider")
    out = Published()
    owner = client(stack.node_urls(), publisher)
    for _ in range(6):
        did = os.urandom(32)
        keeper.register_did(publisher, did, providers=[provider.address], value="http://aquarius:5000/ddo")
        out.keys[did] = owner.generate_server_and_document_key(did, THRESHOLD)
    return out


def check_all(stack: ComposeStack, published: Published, urls: list[str] | None = None) -> None:
    owner = client(urls or stack.node_urls(), role(stack.state(), "publisher"))
    for did, key in published.keys.items():
        assert owner.recover_document_key(did) == key


class Load:
    """Retrievals of the published keys, one after another, for as long as the block lasts: every
    outcome counted, every failure kept with its error."""

    def __init__(self, stack: ComposeStack, published: Published, urls: list[str] | None = None) -> None:
        self.client = client(urls or stack.node_urls(), role(stack.state(), "publisher"))
        self.keys = list(published.keys.items())
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            did, key = self.keys[i % len(self.keys)]
            i += 1
            try:
                got = self.client.recover_document_key(did)
            except SecretStoreError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            if got != key:
                self.failures.append("a wrong document key")
            else:
                self.ok += 1

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


# -- the tests --------------------------------------------------------------------------------


def test_publish_order_consume_across_containers(stack: ComposeStack) -> None:
    """Ocean's pipeline from the host: the DDO in the Aquarius container, the document key in the key
    server containers, the agreement on the chain container, the file fetched by the provider
    container from the file server container."""
    state = stack.state()
    data = os.urandom(50_000)
    (Path(str(state.files_dir)) / "data.bin").write_bytes(data)
    ocean = Ocean(str(state.ocean_config))
    publisher, consumer = role(state, "publisher"), role(state, "consumer")
    provider = role(state, "provider")
    meta = {"main": {"type": "dataset", "name": "docker " + os.urandom(4).hex(), "author": "a", "license": "CC0",
                     "dateCreated": "2026-12-01T00:00:00Z", "price": str(PRICE * 10**18),
                     "files": [{"url": "http://files:8000/data.bin", "contentType": "application/octet-stream",
                                "name": "data.bin"}]}}
    ddo = ocean.assets.create(meta, publisher, providers=[provider.address])
    assert "files:8000" not in ddo.to_json()
    ocean.keeper.request_tokens(consumer, PRICE + 2)
    publisher_before = ocean.keeper.token_balance(publisher.address)
    agreement = ocean.assets.order(ddo.did, 2, consumer)
    folder = ocean.assets.consume(agreement, ddo.did, 2, consumer, stack.folder / "downloads")
    assert (folder / "data.bin").read_bytes() == data
    # the events handler in the provider container granted access and paid the publisher
    deadline = time.monotonic() + 30
    while ocean.keeper.condition_states(bytes.fromhex(agreement[2:])) != (2, 2, 2) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ocean.keeper.condition_states(bytes.fromhex(agreement[2:])) == (2, 2, 2)
    assert ocean.keeper.token_balance(publisher.address) - publisher_before == PRICE * 10**18


def test_partition_of_one_and_of_two_nodes(stack: ComposeStack, published: Published) -> None:
    """N-t-1 = 2 nodes cut off the internal network: every retrieval through the majority side
    succeeds; an isolated node refuses cleanly; healed, it rejoins without a restart."""
    urls = stack.node_urls()
    majority = urls[:3]
    for isolated in ((4,), (3, 4)):
        with stack.partitioned(*isolated):
            with Load(stack, published, majority) as load:
                time.sleep(4)
            assert load.failures == [] and load.ok > 0, load.failures[:3]
            check_all(stack, published, majority)
            # The isolated node answers its clients (its API is published) but serves nothing.
            started = time.monotonic()
            lone = client([urls[isolated[-1]]], role(stack.state(), "publisher"), timeout=30)
            with pytest.raises(SecretStoreError) as refused:
                lone.recover_document_key(next(iter(published.keys)))
            assert time.monotonic() - started < 15, "the isolated node's refusal took too long"
            print(f"isolated node {isolated[-1]} refused: {refused.value}")
        stack.wait_for_mesh(60)  # healed: connected again, no container restarted
        for index in isolated:
            assert client([urls[index]], role(stack.state(), "publisher")).recover_document_key(
                next(iter(published.keys))) == next(iter(published.keys.values()))


def test_paused_node_is_hedged_around(stack: ComposeStack, published: Published) -> None:
    with stack.paused(2):
        with Load(stack, published, [stack.node_urls()[0]]) as load:
            time.sleep(4)
        assert load.failures == [] and load.ok > 0, load.failures[:3]
    stack.wait_for_mesh(60)


def test_killed_node_restarts_with_its_shares(stack: ComposeStack, published: Published) -> None:
    stack.kill(1)
    check_all(stack, published, [stack.node_urls()[0]])  # 4 of 5 serve every key of threshold 2
    stack.start(1)
    stack.wait_healthy(["node1"], 60)
    stack.wait_for_mesh(60)
    check_all(stack, published, [stack.node_urls()[1]])  # through the restarted node: its shares survived


def test_rolling_restart_under_load(stack: ComposeStack, published: Published) -> None:
    with Load(stack, published) as load:
        for index in range(NODES):
            stack.restart(index)
            stack.wait_healthy([f"node{index}"], 60)
            stack.wait_for_mesh(60)
    print(f"rolling restart: {load.ok} retrievals, {len(load.failures)} failed")
    assert load.failures == [], load.failures[:3]
    assert load.ok > 0


def test_upgrade_to_a_new_image_keeps_every_key(stack: ComposeStack, published: Published,
                                                 rebuilt_image: dict[str, Any]) -> None:
    before = {i: stack.image_id(f"node{i}") for i in range(NODES)}
    services = [f"node{i}" for i in range(NODES)]
    stack.compose("up", "-d", "--no-deps", "--force-recreate", *services,
                  env={"OCEAN_SS_IMAGE": str(rebuilt_image["tag"])})
    for service in services:
        stack.forget(service)
    stack.wait_healthy(services, 120)
    stack.wait_for_mesh(60)
    after = {i: stack.image_id(f"node{i}") for i in range(NODES)}
    assert all(after[i] != before[i] for i in range(NODES))
    assert set(after.values()) == {rebuilt_image["id"]}
    check_all(stack, published)


def test_ready_through_every_published_port(stack: ComposeStack) -> None:
    for url in stack.node_urls():
        answer = requests.get(url + "/ready", timeout=5)
        assert answer.status_code == 200 and answer.json()["ready"] is True


# Last in the module: from here on node 3 of devnet.json is another service (node5, keyserver5).
def test_dead_node_replaced_by_a_new_container(stack: ComposeStack, published: Published) -> None:
    """Node 3's container killed for good, then replaced through stack.replace_node: a new container
    (its own folder, key, host name and published port) joins every node's address book (SIGHUP),
    and one servers-set change signed by accounts.admin deals every key to the survivors and to it.
    A retrieval load through the majority side runs all along and never fails."""
    before = stack.state()
    old, old_service = before.nodes[3], stack.node_service(3)
    old_container = stack.container(old_service)
    stack.kill(3)
    majority = [node.http_url for i, node in enumerate(before.nodes) if i != 3][:3]
    with Load(stack, published, majority) as load:
        time.sleep(1)
        result = stack.replace(3, timeout=120)
        time.sleep(1)
    report = result["report"]
    print(f"replace node 3 ({old_service}) by {result['service']}: {result['seconds']:.1f} s, {report['total']} keys "
          f"moved; {load.ok} retrievals meanwhile, {len(load.failures)} failed")
    assert "a wrong document key" not in load.failures
    assert load.failures == [] and load.ok > 0, load.failures[:3]
    assert (report["state"], report["failed"]) == ("done", 0)
    assert not report.get("lost") and not report.get("lost_count")  # (the unsigned status counts, not names)
    assert report["done"] == report["total"] >= len(published.keys)

    state = stack.state()
    new = state.nodes[3]
    assert new.public == result["public"] != old.public and new.http_url == result["http_url"]
    assert stack.node_service(3) == result["service"] != old_service
    # every key through the new node alone: it holds real shares of each
    check_all(stack, published, [new.http_url])
    # the old container is gone, the new one runs in the project, healthy, in the full mesh again
    assert subprocess.run(["docker", "inspect", old_container], capture_output=True, check=False).returncode != 0
    services = stack.services()
    assert result["service"] in services and old_service not in services
    stack.wait_healthy(stack.node_services(), 60)
    stack.wait_for_mesh(60)
    # every node's servers set has the newcomer and not the old node; no session left behind
    publics = {node.public.lower() for node in state.nodes}
    for node in state.nodes:
        with AdminClient(node.http_url) as admin:
            status = admin.status()
        assert {str(n).lower() for n in status["servers_set"]} == publics, node.http_url
        assert status["admin_session"] is None
    # host clients follow: ocean.ini's cluster lists the new node's URL, not the old one's
    urls = load_ocean_config(str(state.ocean_config), environ={}).cluster_urls
    assert new.http_url in urls and old.http_url not in urls
    # and the provider container reread provider.ini (SIGHUP): the new node's container name in its list
    logs = subprocess.run(["docker", "logs", stack.container("provider")], capture_output=True, text=True,
                          timeout=60, check=True)
    reloaded = [line for line in (logs.stdout + logs.stderr).splitlines() if "SIGHUP: key servers now" in line]
    host = result["service"].replace("node", "keyserver")
    assert reloaded and host in reloaded[-1] and old_service.replace("node", "keyserver") not in reloaded[-1]

