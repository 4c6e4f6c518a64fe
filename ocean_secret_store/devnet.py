"""The embedded default: an N-node key server cluster on loopback, started and stopped as
architecture.md's devnet contract says, with its state in one JSON file.

``up`` generates node keys and configs (mode 0600, dev only), starts one OS process per node
in its own process group, waits until every node is connected to every other, and writes
``DIR/devnet.json``. ``down`` stops every process group (SIGTERM, then SIGKILL). ``status``
reports each process and its health. A stale state dir (processes gone) is restarted with the
same keys and data unless ``fresh`` is asked for.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from .crypto.curve import Point, random_scalar
from .crypto.hashes import address_of, checksum_address
from .exceptions import SecretStoreError
from .node.config import dump_config

STATE_FILE = "devnet.json"
DEV_ONLY = "DEV ONLY: holds private keys of a local development network; never use them elsewhere"


class DevnetError(SecretStoreError):
    """The devnet could not be started, stopped or inspected."""


def _free_ports(count: int) -> list[int]:
    # Ask the kernel for distinct ephemeral ports; all sockets stay open until every port is
    # chosen, so one call never hands out the same port twice.
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def load_state(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def running_pids(state: dict[str, Any]) -> list[int]:
    pids = [n.get("pid") for n in state.get("nodes", [])]
    pids += [state.get(k) for k in ("anvil_pid", "rpc_pid", "provider_pid")]
    return [p for p in pids if p and _alive(p)]


def _node_configs(state_dir: Path, nodes: int, session_timeout: float, acl: dict[str, Any]) -> list[dict[str, Any]]:
    secrets = [random_scalar() for _ in range(nodes)]
    publics = [Point.generator_mul(s) for s in secrets]
    ports = _free_ports(2 * nodes)
    cluster = {"0x" + p.to_bytes().hex(): f"127.0.0.1:{ports[2 * i]}" for i, p in enumerate(publics)}
    out = []
    for i, (secret, public) in enumerate(zip(secrets, publics, strict=True)):
        mapping = {
            "node": {
                "secret": "0x" + secret.to_bytes(32, "big").hex(),
                "listen": f"127.0.0.1:{ports[2 * i]}",
                "http_listen": f"127.0.0.1:{ports[2 * i + 1]}",
                "data_dir": str(state_dir / f"node{i}"),
            },
            "cluster": cluster,
            "timeouts": {"session": session_timeout, "connect": 2.0, "keepalive": 5.0},
            "acl": dict(acl),
            "http": {"cors": "none"},
        }
        out.append({"mapping": mapping, "public": public, "http_port": ports[2 * i + 1]})
    return out


def _start_node(config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - the child keeps it
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "ocean_secret_store.cli", "node", "--config", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: `down` stops it and nothing else
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        log.close()


def _health(url: str, timeout: float = 1.0) -> dict[str, Any] | None:
    try:
        response = requests.get(url + "/health", timeout=timeout)
        return response.json() if response.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None


def wait_for_mesh(http_urls: list[str], expected_peers: int, timeout: float, procs: list[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    pending = list(http_urls)
    while pending:
        if procs:
            for i, proc in enumerate(procs):
                if proc is not None and proc.poll() is not None:
                    raise DevnetError(f"key server {i} exited with code {proc.returncode} during start-up; see its log")
        pending = [u for u in pending if (h := _health(u)) is None or h.get("connected_peers") != expected_peers]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise DevnetError(f"key servers not fully connected after {timeout:.0f} s: {', '.join(pending)}")
        time.sleep(0.1)


#: Roles whose accounts also get a keystore for the Parity-compatible JSON-RPC face.
RPC_ROLES = ("publisher", "consumer", "provider")


def _write_keystores(state_dir: Path, accounts: dict[str, Any]) -> list[dict[str, str]]:
    import secrets as _secrets

    from .client.keystore import write_keystore

    directory = state_dir / "keystore"
    out = []
    for role in RPC_ROLES:
        password = _secrets.token_urlsafe(12)
        path = write_keystore(directory, accounts[role]["private_key"], password)
        out.append({"role": role, "address": accounts[role]["address"], "password": password, "keystore": str(path)})
    return out


def _start_rpc(state_dir: Path, port: int, chain_url: str) -> subprocess.Popen[bytes]:
    log = open(state_dir / "rpc.log", "ab")  # noqa: SIM115 - the child keeps it
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "ocean_secret_store.client.rpc", "--keystore", str(state_dir / "keystore"),
             "--listen", f"127.0.0.1:{port}", "--chain-url", chain_url],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        log.close()


def _wait_rpc(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise DevnetError(f"the JSON-RPC face exited with code {proc.returncode} during start-up; see rpc.log")
        try:
            answer = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_accounts", "params": []},
                                   timeout=1.0)
            if answer.status_code == 200 and "result" in answer.json():
                return
        except (requests.RequestException, ValueError):
            pass
        if time.monotonic() > deadline:
            raise DevnetError(f"the JSON-RPC face at {url} did not answer within {timeout:.0f} s")
        time.sleep(0.05)


def _start_provider(state_dir: Path, state: dict[str, Any], backend: str) -> subprocess.Popen[bytes]:
    log = open(state_dir / "provider.log", "ab")  # noqa: SIM115 - the child keeps it
    port = int(state["provider_url"].rsplit(":", 1)[1])
    args = [sys.executable, "-m", "ocean_secret_store.cli", "provider",
            "--chain-url", state["chain_url"], "--contracts-json", str(state_dir / "contracts.json"),
            "--metadata-store", state["metadata_store"], "--backend", backend,
            "--secret-store-url", ",".join(n["http_url"] for n in state["nodes"]),
            "--listen", f"127.0.0.1:{port}", "--key-env", "OCEAN_SS_PROVIDER_KEY", "--poll-interval", "0.2"]
    try:
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            # the key travels in the child's environment, never on its command line
            env={**os.environ, "PYTHONUNBUFFERED": "1",
                 "OCEAN_SS_PROVIDER_KEY": state["accounts"]["provider"]["private_key"]},
        )
    finally:
        log.close()


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise DevnetError(f"the {what} exited with code {proc.returncode} during start-up; see its log")
        try:
            if requests.get(url, timeout=1.0).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise DevnetError(f"the {what} at {url} did not answer within {timeout:.0f} s")
        time.sleep(0.05)


def _write_ocean_config(state_dir: Path, state: dict[str, Any]) -> Path:
    """A squid-py style INI for the pipeline host (``Ocean(DIR/ocean.ini)``) pointing at this devnet."""
    urls = ", ".join(n["http_url"] for n in state["nodes"])
    threshold = min(2, len(state["nodes"]) - 1) if len(state["nodes"]) >= 5 else (len(state["nodes"]) - 1) // 2
    text = (
        f"; {DEV_ONLY}\n"
        "[keeper-contracts]\n"
        f"keeper.url = {state['chain_url']}\n"
        "contracts.file = contracts.json\n"
        f"secret_store.url = {state['secret_store_url']}\n"
        f"parity.url = {state['rpc_url']}\n\n"
        "[secret-store]\n"
        "enabled = true\n"
        f"threshold = {threshold}\n"
        f"cluster_urls = {urls}\n\n"
        "[resources]\n"
        "metadata.store = metadata.sqlite\n"
        f"provider.url = {state['provider_url']}\n"
        f"provider.address = {state['provider_address']}\n"
        "downloads.path = downloads\n"
    )
    path = state_dir / "ocean.ini"
    _write_private(path, text)
    return path


#: Funded anvil accounts by role (anvil's dev accounts, in this order).
ROLES = ("deployer", "minter", "publisher", "consumer", "provider")


def _start_chain(state_dir: Path, port: int = 0) -> Any:
    from .chain.anvil import start_anvil

    return start_anvil(port, state_path=state_dir / "chain-state.json", log_path=state_dir / "anvil.log")


def _deploy(anvil: Any, say: Callable[[str], None]) -> dict[str, Any]:
    from .chain.deploy import deploy_keeper_contracts
    from .chain.keeper import to_address

    keys = anvil.private_keys
    accounts = {role: {"address": anvil.addresses[i], "private_key": keys[i]} for i, role in enumerate(ROLES)}
    deployment = deploy_keeper_contracts(anvil.url, keys[0], minter=to_address(accounts["minter"]["address"]))
    say(f"deployed keeper-contracts 0.13.2 from the installed artifacts in {deployment.seconds:.1f} s")
    return {
        "chain_url": anvil.url,
        "chain_id": anvil.chain_id,
        "anvil_pid": anvil.pid,
        "anvil_log": str(anvil.log_path),
        "contracts": dict(deployment.addresses),
        "template_id": "0x" + bytes(deployment.template_id).hex(),
        "accounts": accounts,
    }


def up(
    state_dir: Path,
    nodes: int = 5,
    *,
    acl: str = "contract",
    provider_backend: str = "secret-store",
    fresh: bool = False,
    session_timeout: float = 5.0,
    timeout: float = 60.0,
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Start the devnet in ``state_dir``: anvil with the keeper contracts, then N key servers.

    ``acl="contract"`` (the default) configures every key server with the on-chain
    ``AccessSecretStoreCondition.checkPermissions``; ``acl="none"`` lets everyone in (benchmarks).
    """
    state_dir = state_dir.resolve()
    if acl not in ("none", "contract"):
        raise DevnetError(f"unknown --acl {acl!r}: use 'contract' or 'none'")
    if nodes < 1:
        raise DevnetError("a devnet needs at least one node")
    existing = load_state(state_dir)
    if existing is not None and running_pids(existing):
        raise DevnetError(f"a devnet is still running in {state_dir}: run `devnet down --state-dir {state_dir}` first")
    if existing is not None and fresh:
        shutil.rmtree(state_dir)
        existing = None
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)

    started: list[int] = []
    try:
        if existing is None:
            say("starting anvil (local chain)")
            anvil = _start_chain(state_dir)
            started.append(anvil.pid)
            chain = _deploy(anvil, say)
            node_acl: dict[str, Any] = {"kind": "none"}
            if acl == "contract":
                node_acl = {"kind": "contract", "chain_url": chain["chain_url"],
                            "contract": chain["contracts"]["AccessSecretStoreCondition"]}
            say(f"generating {nodes} node keys and configs in {state_dir}")
            entries = []
            for i, spec in enumerate(_node_configs(state_dir, nodes, session_timeout, node_acl)):
                config_path = state_dir / f"node{i}.toml"
                _write_private(config_path, f"# {DEV_ONLY}\n" + dump_config(spec["mapping"]))
                (state_dir / f"node{i}").mkdir(exist_ok=True)
                public: Point = spec["public"]
                entries.append({
                    "public": "0x" + public.to_bytes().hex(),
                    "address": checksum_address(address_of(public)),
                    "http_url": f"http://127.0.0.1:{spec['http_port']}",
                    "pid": None,
                    "config": str(config_path),
                    "data_dir": str(state_dir / f"node{i}"),
                    "log": str(state_dir / f"node{i}.log"),
                })
            state: dict[str, Any] = {"dev_only": DEV_ONLY, "acl": acl, "nodes": entries, **chain}
            rpc_port, provider_port = _free_ports(2)
            state["rpc_url"] = f"http://127.0.0.1:{rpc_port}"
            state["rpc_accounts"] = _write_keystores(state_dir, chain["accounts"])
            state["provider_url"] = f"http://127.0.0.1:{provider_port}"
            state["provider_address"] = chain["accounts"]["provider"]["address"]
            state["provider_backend"] = provider_backend
            state["metadata_store"] = str(state_dir / "metadata.sqlite")
            _write_private(state_dir / "contracts.json", json.dumps({"contracts": chain["contracts"]}, indent=2))
        else:
            say(f"restarting the stopped devnet in {state_dir} (same keys, data and chain state)")
            state = existing
            port = int(state["chain_url"].rsplit(":", 1)[1])
            anvil = _start_chain(state_dir, port)
            started.append(anvil.pid)
            state["anvil_pid"] = anvil.pid

        entries = state["nodes"]
        procs: list[subprocess.Popen[bytes] | None] = []
        for entry in entries:
            proc = _start_node(Path(entry["config"]), Path(entry["log"]))
            entry["pid"] = proc.pid
            started.append(proc.pid)
            procs.append(proc)
        rpc = _start_rpc(state_dir, int(state["rpc_url"].rsplit(":", 1)[1]), state["chain_url"])
        state["rpc_pid"] = rpc.pid
        started.append(rpc.pid)
        say(f"started {len(entries)} key servers and the JSON-RPC face; waiting until each node is connected to every other")
        wait_for_mesh([e["http_url"] for e in entries], len(entries) - 1, timeout, procs)
        _wait_rpc(state["rpc_url"], rpc, timeout)
        provider = _start_provider(state_dir, state, state.get("provider_backend", provider_backend))
        state["provider_pid"] = provider.pid
        started.append(provider.pid)
        _wait_http(state["provider_url"] + "/api/v1/brizo", provider, "provider", timeout)
        say(f"provider (Brizo-shaped, {state.get('provider_backend', provider_backend)} backend) at {state['provider_url']}")
    except BaseException:
        for pid in started:
            _stop_group(pid)
        raise
    state["secret_store_url"] = entries[0]["http_url"]
    state["threshold_max"] = len(entries) - 1
    state["ocean_config"] = str(_write_ocean_config(state_dir, state))
    _write_private(state_dir / STATE_FILE, json.dumps(state, indent=2) + "\n")
    return state


def _stop_group(pid: int, grace: float = 5.0) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        while _alive(pid) and time.monotonic() < deadline + grace:
            time.sleep(0.05)


def down(state_dir: Path) -> list[int]:
    state = load_state(state_dir.resolve())
    if state is None:
        raise DevnetError(f"no devnet in {state_dir}")
    stopped = running_pids(state)
    for pid in stopped:
        _stop_group(pid)
    for entry in state["nodes"]:
        entry["pid"] = None
    state["anvil_pid"] = None
    state["rpc_pid"] = None
    state["provider_pid"] = None
    _write_private(state_dir.resolve() / STATE_FILE, json.dumps(state, indent=2) + "\n")
    return stopped


def status(state_dir: Path) -> dict[str, Any]:
    state = load_state(state_dir.resolve())
    if state is None:
        raise DevnetError(f"no devnet in {state_dir}")
    nodes = []
    for i, entry in enumerate(state["nodes"]):
        health = _health(entry["http_url"]) if _alive(entry.get("pid")) else None
        nodes.append({
            "node": i,
            "pid": entry.get("pid"),
            "running": _alive(entry.get("pid")),
            "http_url": entry["http_url"],
            "healthy": bool(health and health.get("status") == "ok"),
            "connected_peers": health.get("connected_peers") if health else None,
        })
    services = {
        name: {"pid": state.get(pid_key), "url": state.get(url_key), "running": _alive(state.get(pid_key))}
        for name, pid_key, url_key in (("chain", "anvil_pid", "chain_url"), ("rpc", "rpc_pid", "rpc_url"),
                                       ("provider", "provider_pid", "provider_url"))
        if state.get(url_key)
    }
    up_services = all(s["running"] for s in services.values())
    return {"state_dir": str(state_dir.resolve()), "nodes": nodes, "services": services,
            "chain": services.get("chain"),
            "running": up_services and all(n["running"] for n in nodes),
            "healthy": up_services and all(n["healthy"] for n in nodes)}


def restart_nodes(state_dir: Path, indices: list[int], timeout: float = 30.0) -> dict[str, Any]:
    """Start stopped nodes again (after a crash or a kill) and wait until the mesh is complete."""
    state_dir = state_dir.resolve()
    state = load_state(state_dir)
    if state is None:
        raise DevnetError(f"no devnet in {state_dir}")
    procs = []
    for index in indices:
        entry = state["nodes"][index]
        if _alive(entry.get("pid")):
            raise DevnetError(f"node {index} is still running (pid {entry['pid']})")
        proc = _start_node(Path(entry["config"]), Path(entry["log"]))
        entry["pid"] = proc.pid
        procs.append(proc)
    _write_private(state_dir / STATE_FILE, json.dumps(state, indent=2) + "\n")
    wait_for_mesh([n["http_url"] for n in state["nodes"]], len(state["nodes"]) - 1, timeout, procs)
    return state


def stop_node(state_dir: Path, index: int, *, kill: bool = False) -> None:
    """Stop node ``index``: SIGKILL if ``kill`` (a crash), else a graceful SIGTERM."""
    state = load_state(state_dir.resolve())
    if state is None:
        raise DevnetError(f"no devnet in {state_dir}")
    pid = state["nodes"][index].get("pid")
    if not _alive(pid):
        return
    if kill:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.02)
    else:
        _stop_group(pid)


def stop_chain(state_dir: Path) -> None:
    """Stop the devnet's anvil (SIGTERM: it dumps its state to be reloaded by ``restart_chain``)."""
    state = load_state(state_dir.resolve())
    if state is None:
        raise DevnetError(f"no devnet in {state_dir}")
    if _alive(state.get("anvil_pid")):
        _stop_group(state["anvil_pid"])


def restart_chain(state_dir: Path) -> dict[str, Any]:
    """Start the devnet's anvil again on its old port, with the state it dumped when stopped."""
    state_dir = state_dir.resolve()
    state = load_state(state_dir)
    if state is None:
        raise DevnetError(f"no devnet in {state_dir}")
    if _alive(state.get("anvil_pid")):
        raise DevnetError(f"anvil is still running (pid {state['anvil_pid']})")
    anvil = _start_chain(state_dir, int(state["chain_url"].rsplit(":", 1)[1]))
    state["anvil_pid"] = anvil.pid
    _write_private(state_dir / STATE_FILE, json.dumps(state, indent=2) + "\n")
    return state


def restart_provider(state_dir: Path, backend: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
    """Restart the provider, optionally with another access-control backend (``secret-store`` or
    ``provider-key``): the provider swaps backends by configuration alone."""
    state_dir = state_dir.resolve()
    state = load_state(state_dir)
    if state is None:
        raise DevnetError(f"no devnet in {state_dir}")
    if _alive(state.get("provider_pid")):
        _stop_group(state["provider_pid"])
    if backend is not None:
        state["provider_backend"] = backend
    proc = _start_provider(state_dir, state, state["provider_backend"])
    state["provider_pid"] = proc.pid
    _write_private(state_dir / STATE_FILE, json.dumps(state, indent=2) + "\n")
    _wait_http(state["provider_url"] + "/api/v1/brizo", proc, "provider", timeout)
    return state
