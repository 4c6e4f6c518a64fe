"""``stack init`` (issue 16, item 3): the folder it writes for ``docker-compose`` (compose.yaml equal to
the checked-in docker/compose.yaml, .env, cluster init's key servers addressed as keyserver<i>, the
provider's container config, the deployment plan) and the devnet.json host clients load; and ``stack
deploy`` on a real anvil (deploys at the plan, then finds it; a used deployer is refused). No Docker
engine is needed here: tests/docker/test_stack.py brings the stack up."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from ocean_secret_store import stack
from ocean_secret_store.chain.anvil import DEFAULT_CHAIN_ID, dev_accounts
from ocean_secret_store.chain.deploy import ALL_CONTRACTS, planned_addresses
from ocean_secret_store.chain.keeper import ESCROW_ACCESS_TEMPLATE_ID
from ocean_secret_store.cli import main
from ocean_secret_store.cli_stack import DEPLOYER_KEY_ENV
from ocean_secret_store.cluster_init import HostSpec, add_node, init_cluster, set_peer
from ocean_secret_store.crypto.curve import Point
from ocean_secret_store.devnet import ROLES, DevnetState
from ocean_secret_store.exceptions import ChainError, ConfigError, KeysWouldBeLost
from ocean_secret_store.keyfile import unlock_file
from ocean_secret_store.node.config import load_config as load_node_config
from ocean_secret_store.ocean.config import load_config as load_ocean_config
from ocean_secret_store.protocol.hexcodec import to_hex

ROOT = Path(__file__).resolve().parents[1]
NODES = 5


def env_values(out: Path) -> dict[str, str]:
    lines = (out / ".env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> stack.StackPlan:
    return stack.init_stack(tmp_path_factory.mktemp("stack") / "demo", nodes=NODES, image="example/oss:1")


# -- compose.yaml ------------------------------------------------------------------------------


def test_checked_in_compose_file_is_the_rendering_for_five_nodes(made: stack.StackPlan) -> None:
    checked_in = (ROOT / "docker" / "compose.yaml").read_text(encoding="utf-8")
    # To renew it: .venv/bin/python -c "from ocean_secret_store.stack import render_compose;
    # open('docker/compose.yaml', 'w').write(render_compose(5))"
    assert checked_in == stack.render_compose(5)
    assert made.compose_file.read_text() == checked_in  # the image and paths live in .env, not here


def test_every_service_has_its_own_container_and_only_the_deploy_runs_once() -> None:
    services = stack.compose_document(NODES)["services"]
    assert list(services) == ["chain", "deploy", *(f"node{i}" for i in range(NODES)), "rpc", "aquarius", "files",
                              "provider"]
    assert services["deploy"]["restart"] == "no" and services["deploy"]["healthcheck"] == {"disable": True}
    assert all(s["restart"] == "unless-stopped" for name, s in services.items() if name != "deploy")
    assert services["provider"]["depends_on"] == {"deploy": {"condition": "service_completed_successfully"},
                                                  "aquarius": {"condition": "service_healthy"}}
    assert services["deploy"]["depends_on"] == {"chain": {"condition": "service_healthy"}}
    assert all("healthcheck" in s for s in services.values())
    assert all(s["user"] == "${OCEAN_SS_UID:-10001}:${OCEAN_SS_GID:-10001}" for s in services.values())


def test_the_chain_runs_as_the_devnets_does() -> None:
    chain = stack.compose_document(NODES)["services"]["chain"]
    assert chain["entrypoint"] == ["/usr/local/bin/anvil"] and chain["init"] is True
    args = chain["command"]
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert flags["--chain-id"] == str(DEFAULT_CHAIN_ID) and flags["--block-base-fee-per-gas"] == "0"
    assert flags["--accounts"] == "10" and "--mnemonic" not in flags  # anvil's default mnemonic: devnet's accounts
    assert flags["--host"] == "0.0.0.0" and flags["--state"] == "/chain/state.json"


def test_peers_are_keyservers_on_the_internal_network_only(made: stack.StackPlan) -> None:
    document = stack.compose_document(NODES)
    assert document["networks"] == {"cluster": {"internal": True}, "clients": {}}
    services = document["services"]
    for i in range(NODES):
        node = services[f"node{i}"]
        assert node["networks"] == {"cluster": {"aliases": [f"keyserver{i}"]}, "clients": {}}
        port = f"${{OCEAN_SS_NODE{i}_PORT:?run ocean-secret-store stack init and use its .env}}"
        assert node["ports"] == [f"127.0.0.1:{port}:8082"]
        config = tomllib.loads((made.out / "cluster" / f"node{i}" / "node.toml").read_text())
        assert sorted(config["cluster"].values()) == [f"keyserver{j}:8083" for j in range(NODES)]
        assert not any(f"node{j}" in address for address in config["cluster"].values() for j in range(NODES))
        assert config["acl"] == {"kind": "contract", "chain_url": "http://chain:8545",
                                 "contract": made.state.contracts["AccessSecretStoreCondition"]}
        assert config["node"]["listen"] == "0.0.0.0:8083" and config["node"]["http_listen"] == "0.0.0.0:8082"
    # Services without a published port are on the internal network alone.
    assert services["deploy"]["networks"] == {"cluster": {}}
    cluster = json.loads((made.out / "cluster" / "cluster.json").read_text())
    assert [n["host"] for n in cluster["nodes"]] == [f"keyserver{i}" for i in range(NODES)]


def test_no_secret_in_the_compose_file(made: stack.StackPlan) -> None:
    text = made.compose_file.read_text()
    secrets = [v for k, v in env_values(made.out).items() if k.endswith(("_KEY", "_PASSWORD"))]
    assert len(secrets) == 4
    secrets += [a.private_key for a in made.state.accounts.values()]
    secrets += [a.password for a in made.state.rpc_accounts]
    for secret in secrets:
        assert secret not in text and secret.removeprefix("0x") not in text
    assert not re.search(r"[0-9a-fA-F]{64}", text)
    assert str(made.out) not in text  # paths come from .env too


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_docker_compose_accepts_the_file_with_its_env(made: stack.StackPlan) -> None:
    # `config` needs no engine: it parses, interpolates .env and validates (depends_on conditions too).
    done = subprocess.run(["docker-compose", "-f", str(made.compose_file), "config"], capture_output=True, text=True,
                          cwd="/", timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    ports = env_values(made.out)
    assert f"127.0.0.1:{ports['OCEAN_SS_NODE3_PORT']}:8082" in done.stdout
    assert f"{made.out}/cluster/node3/data:/node/data" in done.stdout
    assert "image: example/oss:1" in done.stdout


# -- .env and the folder ---------------------------------------------------------------------------


def test_env_file_is_private_and_complete(made: stack.StackPlan) -> None:
    assert stat.S_IMODE(made.env_file.stat().st_mode) == 0o600
    values = env_values(made.out)
    assert values["OCEAN_SS_STACK"] == str(made.out) and values["OCEAN_SS_IMAGE"] == "example/oss:1"
    assert values["COMPOSE_PROJECT_NAME"] == "demo" == made.project
    services = ["chain", *(f"node{i}" for i in range(NODES)), "rpc", "provider", "aquarius", "files"]
    ports = [int(values[f"OCEAN_SS_{s.upper()}_PORT"]) for s in services]
    assert len(set(ports)) == len(ports) and dict(zip(services, ports, strict=True)) == made.ports
    assert values[DEPLOYER_KEY_ENV] == dev_accounts(1)[0]
    assert values["OCEAN_SS_STACK_PROVIDER_KEY"] == made.state.accounts["provider"].private_key
    assert len(values["OCEAN_SS_STACK_NODE_PASSWORD"]) >= 20
    assert DEPLOYER_KEY_ENV == stack.DEPLOYER_KEY_ENV


def test_node_keystores_unlock_with_the_password_in_env(made: stack.StackPlan) -> None:
    values = env_values(made.out)
    config = load_node_config(made.out / "cluster" / "node2" / "node.toml",
                              environ={"OCEAN_SS_STACK_NODE_PASSWORD": values["OCEAN_SS_STACK_NODE_PASSWORD"]})
    assert to_hex(config.node_public.to_bytes()) == made.state.nodes[2].public
    assert config.min_ready_peers == NODES - 1


@pytest.mark.skipif(os.geteuid() != 0, reason="only root gives the folders to the containers' user")
def test_as_root_the_containers_user_owns_what_it_writes(made: stack.StackPlan) -> None:
    owned = [*(made.out / "cluster" / f"node{i}" for i in range(NODES)), made.out / "cluster" / "node0" / "data",
             made.out / "cluster" / "node0" / "node.toml", made.out / "keystore", made.out / "chain",
             made.out / "metadata"]
    assert all(path.stat().st_uid == stack.CONTAINER_UID == path.stat().st_gid for path in owned)
    assert env_values(made.out)["OCEAN_SS_UID"] == "10001"
    assert (made.out / ".env").stat().st_uid == 0  # the host's files stay the host user's


def test_as_another_user_the_containers_run_as_that_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack.os, "geteuid", lambda: 1234)
    monkeypatch.setattr(stack.os, "getuid", lambda: 1234)
    monkeypatch.setattr(stack.os, "getgid", lambda: 4321)
    monkeypatch.setattr(stack.os, "chown", lambda *a, **k: pytest.fail("chown as a user"))
    plan = stack.init_stack(tmp_path / "mine", nodes=1)
    values = env_values(plan.out)
    assert (values["OCEAN_SS_UID"], values["OCEAN_SS_GID"]) == ("1234", "4321")


# -- devnet.json and the host clients' configs ------------------------------------------------------


def test_devnet_json_loads_as_a_devnet_state_with_the_published_urls(made: stack.StackPlan) -> None:
    state = DevnetState.load(made.out)
    assert state is not None and state.to_json() == made.state.to_json()
    assert stat.S_IMODE(state.path.stat().st_mode) == 0o600
    assert [n.http_url for n in state.nodes] == [f"http://127.0.0.1:{made.ports[f'node{i}']}" for i in range(NODES)]
    assert all(n.pid is None for n in state.nodes) and state.anvil_pid is None and state.running_pids() == []
    assert state.chain_url == f"http://127.0.0.1:{made.ports['chain']}" and state.chain_id == DEFAULT_CHAIN_ID
    for name in ("rpc", "provider", "aquarius", "files"):
        assert getattr(state, f"{name}_url") == f"http://127.0.0.1:{made.ports[name]}"
    assert state.secret_store_url == state.nodes[0].http_url and state.threshold_max == NODES - 1
    assert state.files_dir == str(made.out / "files") and Path(state.files_dir).is_dir()
    assert state.template_id == to_hex(ESCROW_ACCESS_TEMPLATE_ID)
    assert state.provider_address == state.accounts["provider"].address
    for i, node in enumerate(state.nodes):
        assert node.config == str(made.out / "cluster" / f"node{i}" / "node.toml") and Path(node.config).exists()
        assert node.data_dir == str(made.out / "cluster" / f"node{i}" / "data")
    urls = state.extra["stack"]["container_urls"]
    assert urls["files"] == "http://files:8000" and urls["nodes"][1] == "http://keyserver1:8082"


def test_accounts_are_the_devnets_roles_and_admin_signs_for_the_nodes(made: stack.StackPlan) -> None:
    keys = dev_accounts(len(ROLES))
    accounts = made.state.accounts
    assert list(accounts) == list(ROLES)
    for role, key in zip(ROLES, keys, strict=True):
        assert accounts[role].private_key == key and accounts[role].address == Account.from_key(key).address
    admin_public = to_hex(Point.generator_mul(int(accounts["admin"].private_key, 16)).to_bytes())
    for i in range(NODES):
        config = tomllib.loads((made.out / "cluster" / f"node{i}" / "node.toml").read_text())
        assert config["node"]["admin_public"] == admin_public
    admin_keystore = next((made.out / "cluster" / "admin" / "keystore").iterdir())
    password = env_values(made.out)["OCEAN_SS_STACK_ADMIN_PASSWORD"]
    assert "0x" + unlock_file(admin_keystore, password).hex() == accounts["admin"].private_key
    for account in made.state.rpc_accounts:
        assert unlock_file(Path(account.keystore), account.password).hex() == \
            accounts[account.role].private_key.removeprefix("0x")
        assert Path(account.keystore).parent == made.out / "keystore"


def test_contracts_are_planned_from_the_deployer_on_a_fresh_chain(made: stack.StackPlan) -> None:
    planned = planned_addresses(made.state.accounts["deployer"].address)
    assert made.state.contracts == planned and set(ALL_CONTRACTS) <= set(planned)
    plan = stack.read_plan(made.out / "stack")
    assert plan.contracts == planned and plan.chain_id == DEFAULT_CHAIN_ID
    assert (plan.deployer, plan.minter) == (made.state.accounts["deployer"].address,
                                           made.state.accounts["minter"].address)
    for name, address in planned.items():
        artifact = json.loads((made.out / "artifacts" / f"{name}.development.json").read_text())
        assert artifact["address"] == address
    assert json.loads((made.out / "stack" / "contracts.json").read_text())["contracts"] == planned


def test_ocean_ini_is_for_host_clients_and_provider_ini_for_the_container(made: stack.StackPlan) -> None:
    state = made.state
    host = load_ocean_config(str(state.ocean_config), environ={})
    assert host.keeper_url == state.chain_url and host.contracts == state.contracts
    assert host.cluster_urls == tuple(n.http_url for n in state.nodes) and host.threshold == 2
    assert host.metadata_store == state.aquarius_url and host.provider_url == state.provider_url
    squid = (made.out / "config.ini").read_text()
    assert f"keeper.url = {state.chain_url}" in squid and f"brizo.url = {state.provider_url}" in squid
    container = load_ocean_config(made.out / "stack" / "provider.ini", environ={})
    assert container.keeper_url == "http://chain:8545" and container.contracts == state.contracts
    assert container.cluster_urls == tuple(f"http://keyserver{i}:8082" for i in range(NODES))
    assert container.metadata_store == "http://aquarius:5000" and container.provider_listen == "0.0.0.0:8030"
    assert container.provider_allowed_origins == ("http://files:8000",)
    assert container.provider_key_env == "OCEAN_SS_STACK_PROVIDER_KEY"
    assert container.provider_address == state.provider_address and container.threshold == 2
    for name in ("provider.ini", "contracts.json", "stack.json"):
        text = (made.out / "stack" / name).read_text()
        assert not re.search(r"[0-9a-fA-F]{64}", text), name  # mounted into containers: no key in them


# -- refusals ----------------------------------------------------------------------------------------


def test_refusals_leave_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--tls is not supported yet"):
        stack.init_stack(tmp_path / "tls", tls=True)
    with pytest.raises(ConfigError, match=r"threshold-max must be in 0\.\.2"):
        stack.init_stack(tmp_path / "t", nodes=3, threshold_max=3)
    with pytest.raises(ConfigError, match="same port"):
        stack.init_stack(tmp_path / "p", ports={"node0": 18000, "files": 18000})
    with pytest.raises(ConfigError, match="no published service named deploy"):
        stack.init_stack(tmp_path / "q", ports={"deploy": 18000})
    with pytest.raises(ConfigError, match="must not contain"):
        stack.init_stack(tmp_path / "a:b")
    with pytest.raises(ConfigError, match="--project"):
        stack.init_stack(tmp_path / "r", project="Bad Name")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    with pytest.raises(ConfigError, match="not an empty folder"):
        stack.init_stack(tmp_path / "used")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["used"]


def test_given_ports_are_used(tmp_path: Path) -> None:
    plan = stack.init_stack(tmp_path / "s", nodes=2, ports={"node1": 18182, "chain": 18545}, project="mine")
    assert plan.ports["node1"] == 18182 and plan.ports["chain"] == 18545 and plan.project == "mine"
    assert plan.state.nodes[1].http_url == "http://127.0.0.1:18182"
    assert plan.up_command() == ["docker-compose", "--env-file", str(plan.env_file), "-f", str(plan.compose_file),
                                 "-p", "mine", "up", "-d"]


def test_cluster_init_takes_the_administrator_key(tmp_path: Path) -> None:
    hosts = [HostSpec("a", 8082, 8083)]
    env = {"OCEAN_SS_NODE_PASSWORD": "p", "OCEAN_SS_ADMIN_PASSWORD": "q"}
    plan = init_cluster(tmp_path / "c", hosts, 0, kdf="pbkdf2", environ=env, admin_secret=7)
    assert plan.admin_public == Point.generator_mul(7)
    with pytest.raises(ConfigError, match="not a valid secp256k1 private key"):
        init_cluster(tmp_path / "d", hosts, 0, kdf="pbkdf2", environ=env, admin_secret=0)


# -- the command line ------------------------------------------------------------------------------


def test_stack_init_command_prints_the_up_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["--json", "stack", "init", "--out", str(out), "--nodes", "3", "--port", "files=18800"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["up"] == ["docker-compose", "--env-file", str(out / ".env"), "-f", str(out / "compose.yaml"),
                             "-p", "cli", "up", "-d"]
    assert printed["ports"]["files"] == 18800 and DevnetState.require(out).files_url == "http://127.0.0.1:18800"
    assert main(["stack", "init", "--out", str(tmp_path / "x"), "--port", "files"]) == 2
    assert main(["stack", "init", "--out", str(tmp_path / "y"), "--nodes", "2", "--threshold-max", "2"]) == 2


def test_stack_deploy_command_needs_its_key_and_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(DEPLOYER_KEY_ENV, raising=False)
    args = ["stack", "deploy", "--chain-url", "http://127.0.0.1:9", "--stack-dir", str(tmp_path), "--timeout", "1"]
    assert main(args) == 2
    assert DEPLOYER_KEY_ENV in capsys.readouterr().err
    monkeypatch.setenv(DEPLOYER_KEY_ENV, dev_accounts(1)[0])
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "stack.json does not exist" in err and dev_accounts(1)[0] not in err


# -- stack deploy on a real chain ---------------------------------------------------------------------


@pytest.mark.integration
def test_deploy_lands_on_the_plan_then_finds_it(made: stack.StackPlan) -> None:
    from ocean_secret_store.chain.anvil import rpc_call, start_anvil

    deployer = Account.from_key(made.state.accounts["deployer"].private_key)
    with start_anvil(base_fee=0) as anvil:
        first = stack.deploy_stack(anvil.url, made.out / "stack", deployer, timeout=10)
        assert first["deployed"] is True and first["contracts"] == made.state.contracts
        code = anvil_code(anvil.url, made.state.contracts["AccessSecretStoreCondition"])
        assert len(code) > 2
        again = stack.deploy_stack(anvil.url, made.out / "stack", deployer, timeout=10)
        assert again["deployed"] is False
        # A contract gone (as after a deployment cut short): neither deployed again nor taken as done.
        rpc_call(anvil.url, "anvil_setCode", [made.state.contracts["Dispenser"], "0x"])
        with pytest.raises(ChainError, match=r"partial or foreign deployment \(15 of 16"):
            stack.deploy_stack(anvil.url, made.out / "stack", deployer, timeout=10)


@pytest.mark.integration
def test_deploy_refuses_a_chain_where_the_deployer_has_moved_on(made: stack.StackPlan) -> None:
    from ocean_secret_store.chain.anvil import start_anvil
    from ocean_secret_store.chain.keeper import connect

    deployer = Account.from_key(made.state.accounts["deployer"].private_key)
    with start_anvil(base_fee=0) as anvil:
        w3 = connect(anvil.url)
        signed = deployer.sign_transaction({"to": made.state.accounts["consumer"].address, "value": 1, "gas": 21000,
                                            "gasPrice": 10**9, "nonce": 0, "chainId": anvil.chain_id})
        w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))
        with pytest.raises(ChainError, match="partial or foreign deployment"):
            stack.deploy_stack(anvil.url, made.out / "stack", deployer, timeout=10)


def test_deploy_refuses_another_key_and_waits_for_the_chain_only_so_long(made: stack.StackPlan) -> None:
    other = Account.from_key(dev_accounts(3)[2])
    with pytest.raises(ConfigError, match="not the key of the plan's deployer"):
        stack.deploy_stack("http://127.0.0.1:9", made.out / "stack", other, timeout=1)
    deployer = Account.from_key(made.state.accounts["deployer"].private_key)
    with pytest.raises(ChainError, match="no chain answered"):
        stack.deploy_stack("http://127.0.0.1:9", made.out / "stack", deployer, timeout=0.5)


def anvil_code(url: str, address: str) -> str:
    from ocean_secret_store.chain.anvil import rpc_call

    return str(rpc_call(url, "eth_getCode", [address, "latest"]))


# -- replace-node: the file edits (docker and the nodes faked; tests/docker/test_stack.py runs it for real) ----


class FakeDocker:
    """``stack.run_docker`` without an engine: every command recorded; ``docker ps`` lists ``running``."""

    def __init__(self, running: list[str]) -> None:
        self.running = running
        self.calls: list[list[str]] = []

    def __call__(self, args: list[str], timeout: float = 0.0, cwd: Path | None = None,
                 env: object = None) -> str:
        args = list(args)
        self.calls.append(args)
        if args[:2] == ["docker", "ps"]:
            return "".join(f"{service} id-{service}\n" for service in self.running)
        if "-p" in args:  # docker-compose -f FILE -p PROJECT COMMAND...
            command = args[args.index("-p") + 2:]
            if command[0] == "up":
                self.running.append(command[-1])
            elif command[0] == "rm" and command[-1] in self.running:
                self.running.remove(command[-1])
        return ""

    def compose(self) -> list[list[str]]:
        return [args[args.index("-p") + 1:] for args in self.calls if "-p" in args]

    def hups(self) -> list[str]:
        return [args[-1].removeprefix("id-") for args in self.calls if args[:4] == ["docker", "kill", "-s", "HUP"]]


@dataclass
class Faked:
    docker: FakeDocker
    dead: set[str]
    meshes: list[tuple[list[str], int]]
    changes: list[dict[str, Any]]
    refuse: bool = False


@pytest.fixture
def faked(monkeypatch: pytest.MonkeyPatch) -> Faked:
    fake = Faked(FakeDocker(["chain", *(f"node{i}" for i in range(NODES)), "rpc", "provider"]), set(), [], [])

    def admit(state: DevnetState, master: Any, newcomer: Any, remove: list[Any], force: bool, on_progress: Any, *,
              undo: Any, keep: Any) -> dict[str, Any]:
        fake.changes.append({"master": master.http_url, "add": newcomer.public,
                             "remove": [node.public for node in remove], "force": force})
        if fake.refuse:
            undo()
            raise KeysWouldBeLost("1 key")
        return {"state": "done", "total": 6, "done": 6, "failed": 0, "skipped": 0, "lost": []}

    monkeypatch.setattr(stack, "run_docker", fake.docker)
    monkeypatch.setattr(stack, "readiness", lambda url, timeout=1.0: None if url in fake.dead else {"ready": True})
    monkeypatch.setattr(stack, "wait_for_mesh", lambda urls, peers, timeout: fake.meshes.append((list(urls), peers)))
    monkeypatch.setattr(stack, "admit_through", admit)
    return fake


def snapshot(out: Path) -> dict[str, str]:
    """The text of every file a replacement edits, by path relative to the stack folder."""
    paths = [".env", "compose.yaml", "devnet.json", "ocean.ini", "config.ini", "stack/provider.ini",
             "cluster/cluster.json", *(f"cluster/node{i}/node.toml" for i in range(NODES))]
    return {path: (out / path).read_text() for path in paths}


def peers(config: Path) -> dict[str, str]:
    return dict(tomllib.loads(config.read_text())["cluster"])


def test_replace_node_edits_every_file_of_the_stack(tmp_path: Path, faked: Faked) -> None:
    plan = stack.init_stack(tmp_path / "s", nodes=NODES)
    out, before = plan.out, DevnetState.require(plan.out)
    old = before.nodes[3]
    faked.dead.add(old.http_url)  # node 3's container was killed
    faked.docker.running.remove("node3")
    node0 = out / "cluster" / "node0" / "node.toml"
    node0_stat, env_before = node0.stat(), env_values(out)
    header = node0.read_text().splitlines()[0]

    said: list[str] = []
    result = stack.replace_node(out, 3, project="p", say=said.append)

    assert (result["index"], result["service"], result["replaced"]) == (3, "node5", {"service": "node3",
                                                                                    "public": old.public})
    port, public = result["port"], result["public"]
    url = f"http://127.0.0.1:{port}"
    assert result["http_url"] == url and result["report"]["state"] == "done" and said
    # one change through a surviving node: the set minus node 3 plus the new node, no --force
    assert faked.changes == [{"master": before.nodes[0].http_url, "add": public, "remove": [old.public],
                              "force": False}]
    assert faked.meshes == [([url], NODES - 1)]  # connected to every running node first
    # docker: the new service started alone, the old one stopped and removed; SIGHUP to the running nodes
    # when the new node is listed (not to the dead one), and again, the new one included, when node 3 is not;
    # last the provider, which rereads its key server list from provider.ini
    assert faked.docker.compose() == [["p", "up", "-d", "--no-deps", "node5"],
                                      ["p", "rm", "--stop", "--force", "node3"]]
    assert faked.docker.hups() == ["node0", "node1", "node2", "node4", "node0", "node1", "node2", "node5", "node4",
                                   "provider"]

    # compose.yaml: rendered for the nodes there are now; .env: the new port in, the old one out, the rest kept
    assert (out / "compose.yaml").read_text() == stack.render_compose([0, 1, 2, 4, 5])
    service = stack.compose_document([0, 1, 2, 4, 5])["services"]["node5"]
    assert service["networks"]["cluster"] == {"aliases": ["keyserver5"]}
    assert "OCEAN_SS_NODE5_PORT" in service["ports"][0]
    env = env_values(out)
    assert env.pop("OCEAN_SS_NODE5_PORT") == str(port) and env_before.pop("OCEAN_SS_NODE3_PORT")
    assert env == env_before and stat.S_IMODE((out / ".env").stat().st_mode) == 0o600
    assert port not in {int(v) for k, v in env.items() if k.endswith("_PORT")}

    # every remaining node's address book: the new node at keyserver5, node 3 gone; edited in place
    state = DevnetState.require(out)
    expected = {node.public: f"keyserver{stack.node_index(node)}:8083" for node in state.nodes}
    for node in state.nodes:
        assert peers(Path(node.config)) == expected
    after = node0.stat()
    assert (after.st_ino, after.st_uid, after.st_mode) == (node0_stat.st_ino, node0_stat.st_uid, node0_stat.st_mode)
    assert node0.read_text().splitlines()[0] == header
    assert (out / "cluster" / "node3").is_dir()  # the old folder stays for the operator to destroy

    # the new node's folder: as cluster init makes them, its key unlocking with the stack's password
    folder = out / "cluster" / "node5"
    password = {"OCEAN_SS_STACK_NODE_PASSWORD": env["OCEAN_SS_STACK_NODE_PASSWORD"]}
    config = load_node_config(folder / "node.toml", environ=password)
    reference = load_node_config(node0, environ=password)
    assert to_hex(config.node_public.to_bytes()) == public
    assert (config.admin_public, config.min_ready_peers, config.acl) == (reference.admin_public,
                                                                         reference.min_ready_peers, reference.acl)
    assert str(config.listen) == "0.0.0.0:8083" and str(config.http_listen) == "0.0.0.0:8082"
    if os.geteuid() == 0:
        assert all(p.stat().st_uid == stack.CONTAINER_UID for p in (folder, folder / "data", folder / "node.toml"))

    # devnet.json: the new node in place 3; ocean.ini, provider.ini and cluster.json follow
    assert [n.public for n in state.nodes] == [*(n.public for n in before.nodes[:3]), public, before.nodes[4].public]
    assert state.nodes[3].http_url == url and state.nodes[3].config == str(folder / "node.toml")
    assert state.nodes[3].data_dir == str(folder / "data") and state.nodes[3].pid is None
    info = state.extra["stack"]
    assert info["ports"]["node5"] == port and "node3" not in info["ports"]
    hosts = [f"http://keyserver{i}:8082" for i in (0, 1, 2, 5, 4)]
    assert info["container_urls"]["nodes"] == hosts
    assert load_ocean_config(str(state.ocean_config), environ={}).cluster_urls == tuple(n.http_url for n in state.nodes)
    provider = load_ocean_config(out / "stack" / "provider.ini", environ={})
    assert provider.cluster_urls == tuple(hosts) and provider.threshold == 2
    cluster = json.loads((out / "cluster" / "cluster.json").read_text())
    assert [n["name"] for n in cluster["nodes"]] == ["node0", "node1", "node2", "node5", "node4"]
    assert cluster["nodes"][3]["public"] == public and cluster["secret_store_urls"] == hosts

    # a second replacement, of node 0: node6 (node5's folder is taken), and the first URL moves
    faked.dead.clear()
    second = stack.replace_node(out, 0, project="p")
    state = DevnetState.require(out)
    assert second["service"] == "node6" and state.secret_store_url == state.nodes[0].http_url == second["http_url"]
    assert faked.meshes[-1] == ([second["http_url"]], NODES)  # node 0 still ran: the new node connects to it too
    assert (out / "compose.yaml").read_text() == stack.render_compose([1, 2, 4, 5, 6])
    assert f"secret_store.url = {second['http_url']}" in (out / "config.ini").read_text()


def test_a_refused_replacement_leaves_the_stack_as_it_was(tmp_path: Path, faked: Faked) -> None:
    plan = stack.init_stack(tmp_path / "s", nodes=NODES)
    before = snapshot(plan.out)
    faked.refuse = True
    with pytest.raises(KeysWouldBeLost, match="1 key"):
        stack.replace_node(plan.out, 2, project="p")
    assert snapshot(plan.out) == before
    assert not (plan.out / "cluster" / "node5").exists()  # its key is gone with it
    assert faked.docker.compose() == [["p", "up", "-d", "--no-deps", "node5"],
                                      ["p", "rm", "--stop", "--force", "node5"]]


def test_replace_node_refuses_before_touching_anything(tmp_path: Path, faked: Faked,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    plan = stack.init_stack(tmp_path / "s", nodes=3)
    before = snapshot_of(plan.out)
    faked.dead.add(plan.state.nodes[1].http_url)
    with pytest.raises(stack.StackError, match=r"node 1 \(node1\) does not answer"):
        stack.replace_node(plan.out, 2)
    with pytest.raises(ConfigError, match=r"no node 3: the stack has nodes 0\.\.2"):
        stack.replace_node(plan.out, 3)
    assert main(["stack", "replace-node", "7", "--stack-dir", str(plan.out)]) == 2
    assert "no node 7" in capsys.readouterr().err
    faked.dead.add(plan.state.nodes[0].http_url)
    faked.dead.add(plan.state.nodes[2].http_url)
    with pytest.raises(stack.StackError, match="does not answer"):
        stack.replace_node(plan.out, 1)
    assert snapshot_of(plan.out) == before and not (plan.out / "cluster" / "node3").exists()
    assert faked.docker.calls == [] and faked.changes == []
    state = DevnetState.require(plan.out)
    del state.extra["stack"]
    state.save()
    with pytest.raises(ConfigError, match="not a stack's"):
        stack.replace_node(plan.out, 0)


def snapshot_of(out: Path) -> dict[str, str]:
    """Every text file of the stack folder but the keystores."""
    return {str(path.relative_to(out)): path.read_text() for path in sorted(out.rglob("*"))
            if path.is_file() and (path.suffix in (".yaml", ".json", ".ini", ".toml") or path.name == ".env")}


def test_set_peer_edits_the_address_book_in_place(made: stack.StackPlan, tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    shutil.copyfile(made.out / "cluster" / "node1" / "node.toml", config)
    os.chmod(config, 0o640)
    inode, text = config.stat().st_ino, config.read_text()
    public = to_hex(Point.generator_mul(5).to_bytes())
    assert set_peer(config, public, "keyserver9:8083") is True
    assert peers(config)[public] == "keyserver9:8083" and len(peers(config)) == NODES + 1
    assert set_peer(config, public, "keyserver9:8083") is False  # already so: the file is not touched
    assert set_peer(config, public, None) is True and set_peer(config, public, None) is False
    assert config.read_text() == text  # the header comment kept, the rest as dump_config wrote it
    assert config.stat().st_ino == inode and stat.S_IMODE(config.stat().st_mode) == 0o640


def test_update_env_sets_and_drops_variables_and_keeps_the_rest(made: stack.StackPlan, tmp_path: Path) -> None:
    env = tmp_path / ".env"
    shutil.copyfile(made.env_file, env)
    lines = env.read_text().splitlines()
    stack.update_env(env, {"OCEAN_SS_NODE7_PORT": "18007", "OCEAN_SS_NODE1_PORT": None, "OCEAN_SS_IMAGE": "x:1"})
    changed = env.read_text().splitlines()
    assert changed[-1] == "OCEAN_SS_NODE7_PORT=18007" and "OCEAN_SS_IMAGE=x:1" in changed
    assert [line for line in lines if not line.startswith(("OCEAN_SS_NODE1_PORT=", "OCEAN_SS_IMAGE="))] == \
        [line for line in changed[:-1] if not line.startswith("OCEAN_SS_IMAGE=")]
    assert stat.S_IMODE(env.stat().st_mode) == 0o600


def test_add_node_refuses_a_taken_index_and_tls(made: stack.StackPlan, tmp_path: Path) -> None:
    like = made.out / "cluster" / "node0" / "node.toml"
    spec = HostSpec("keyserver1", 8082, 8083)
    with pytest.raises(ConfigError, match="exists already"):
        add_node(made.out / "cluster", 1, spec, like, environ={"OCEAN_SS_STACK_NODE_PASSWORD": "p"})
    with pytest.raises(ConfigError, match="OCEAN_SS_STACK_NODE_PASSWORD"):
        add_node(tmp_path, 1, spec, like, environ={})
    env = {"OCEAN_SS_NODE_PASSWORD": "p", "OCEAN_SS_ADMIN_PASSWORD": "q"}
    tls = init_cluster(tmp_path / "tls", [HostSpec("a", 8082, 8083)], 0, tls=True, kdf="pbkdf2", environ=env)
    with pytest.raises(ConfigError, match="TLS is not supported yet"):
        add_node(tls.out, 1, HostSpec("b", 8082, 8083), tls.nodes[0].config, environ=env)
    assert not (tls.out / "node1").exists() and not (tmp_path / "node1").exists()
