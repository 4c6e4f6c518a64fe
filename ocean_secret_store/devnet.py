"""The embedded default: an N-node key server cluster on loopback with its chain, JSON-RPC face and
provider, started and stopped as architecture.md's devnet contract says, with its state in one
JSON file (:class:`DevnetState`).

``up`` generates node keys and configs (mode 0600, dev only), starts one OS process per node
in its own process group, waits until every node is connected to every other, and writes
``DIR/devnet.json``. ``down`` stops every process group (SIGTERM, then SIGKILL). ``status``
reports each process and its health. A stale state dir (processes gone) is restarted with the
same keys and data unless ``fresh`` is asked for.

Ports: the JSON-RPC face and the provider bind port 0 and report the port they bound through a
port file, so nothing can take it between a probe and their bind. Key servers must know each
other's node-to-node ports before any starts, so theirs are probed; if a port is taken between
the probe and a node's bind, ``up`` moves every node to freshly probed ports and starts again.

The provider is configured only through ``DIR/ocean.ini`` (``[provider] backend``): its access
backend is chosen by the plugin manager, so ``OCEAN_DISABLED_PLUGINS`` applies to it.

The devnet's file server (``ocean-secret-store files``, :func:`ocean_secret_store.serving.serve_files`) serves
``DIR/files`` (``files_dir``) at ``files_url``, the one loopback origin the devnet's provider may
fetch from (``[provider] allowed_origins``): a publisher on the devnet puts its files there and
lists ``files_url + "/<name>"``. Like the provider, it comes back on its old port after a restart,
because published DDOs name its URLs.

The devnet's Aquarius (``ocean-secret-store aquarius``, :mod:`ocean_secret_store.ocean.aquarius`)
serves the SQLite metadata store (``metadata_store``) at ``aquarius_url``; ``ocean.ini`` names it as
the metadata store, so ``Ocean(...)`` publishes there and the provider resolves DDOs there. It comes
back on its old port after a restart, because published DDOs and ``DIDRegistry`` name its URL.

For the Parity-era clients as they are, ``up`` also writes an ocean-keeper artifacts folder
(``keeper_artifacts``: ``<Contract>.development.json`` with this chain's addresses, for every
contract deployed) and a squid-py ``config.ini`` (``squid_config``: ``keeper.url``, ``keeper.path``,
``secret_store.url``, ``parity.*`` of the publisher's keystore account on the JSON-RPC face,
``aquarius.url``, ``brizo.url``). The chain's base fee is fixed at 0, so ocean-keeper's fixed
1 gwei gas price is always enough.

TLS (``up(tls=True)``, ``devnet up --tls``; off by default, as Parity-era clients speak plain HTTP):
a local CA and one certificate per service for 127.0.0.1 and localhost in ``DIR/tls`` (ECDSA
P-256, a week valid, mode 0600); every key server's HTTP API, the JSON-RPC face, the provider and
the file server speak https; ``tls_ca`` in ``devnet.json`` and ``[resources] ca_file`` in
``ocean.ini`` name the CA, which the devnet's own probes, the provider's fetch and its key server
client trust. A devnet keeps the choice it was made with across restarts.
"""

from __future__ import annotations

import configparser
import contextlib
import functools
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import requests

from .chain.anvil import AnvilProcess, start_anvil
from .chain.deploy import deploy_keeper_contracts, write_artifacts
from .chain.keeper import to_address
from .client.keystore import write_keystore
from .crypto.curve import Point, random_scalar
from .crypto.hashes import address_of, checksum_address
from .exceptions import SecretStoreError
from .localca import issue_certificate, make_local_ca
from .node.config import dump_config
from .protocol.hexcodec import to_hex
from .serving import TlsFiles

STATE_FILE: Final = "devnet.json"
#: The folder of the local CA and the services' certificates (``--tls``), under the state dir.
TLS_DIR: Final = "tls"
#: The folder the devnet's file server serves, under the state dir.
FILES_DIR: Final = "files"
OCEAN_CONFIG_FILE: Final = "ocean.ini"
#: squid-py 0.9.3's config file, under the state dir.
SQUID_CONFIG_FILE: Final = "config.ini"
#: The ocean-keeper artifacts folder (``<Contract>.development.json``), under the state dir.
KEEPER_ARTIFACTS_DIR: Final = "artifacts"
#: The network name ocean-keeper 0.3.5 gives every chain id it does not know, anvil's among them.
KEEPER_NETWORK: Final = "development"
CONTRACTS_FILE: Final = "contracts.json"
DEV_ONLY: Final = "DEV ONLY: holds private keys of a local development network; never use them elsewhere"
#: Funded anvil accounts by role (anvil's dev accounts, in this order). ``admin`` signs admin
#: sessions (servers-set change): every node's config names its public key as ``admin_public``.
ROLES: Final = ("deployer", "minter", "publisher", "consumer", "provider", "admin")
#: Roles whose accounts also get a keystore for the Parity-compatible JSON-RPC face.
RPC_ROLES: Final = ("publisher", "consumer", "provider")
#: The provider's private key travels in this variable of its environment, never on its command line.
PROVIDER_KEY_ENV: Final = "OCEAN_SS_PROVIDER_KEY"
#: Starts of the key servers when a probed port turns out to be taken.
PORT_ATTEMPTS: Final = 3
LOOPBACK: Final = "127.0.0.1"


class DevnetError(SecretStoreError):
    """The devnet could not be started, stopped or inspected."""


class _StartFailed(DevnetError):
    """A child process exited during start-up; ``port_taken`` if it could not bind its port."""

    def __init__(self, message: str, port_taken: bool) -> None:
        super().__init__(message)
        self.port_taken = port_taken


# -- the state file ------------------------------------------------------------------------------


@dataclass
class NodeEntry:
    """One key server in ``devnet.json``'s ``nodes``."""

    public: str
    address: str
    http_url: str
    pid: int | None
    config: str
    data_dir: str
    log: str


@dataclass
class AccountKey:
    """A funded chain account of one role (``accounts``)."""

    address: str
    private_key: str = field(repr=False)


@dataclass
class RpcAccount:
    """A keystore account of the JSON-RPC face (``rpc_accounts``)."""

    role: str
    address: str
    password: str = field(repr=False)
    keystore: str


def _url_port(url: str) -> int:
    port = urlsplit(url).port
    if port is None:
        raise DevnetError(f"{url} names no port")
    return port


@dataclass
class DevnetState:
    """``DIR/devnet.json``: every URL, address, account and process of a devnet (architecture.md's
    devnet contract; field names and meanings are fixed). Fields this version does not know are
    kept in ``extra`` and written back unchanged."""

    state_dir: Path
    acl: str
    nodes: list[NodeEntry]
    chain_url: str
    chain_id: int
    anvil_pid: int | None
    anvil_log: str
    contracts: dict[str, str]
    template_id: str
    accounts: dict[str, AccountKey]
    rpc_accounts: list[RpcAccount]
    metadata_store: str
    provider_address: str
    provider_backend: str = "secret-store"
    rpc_url: str | None = None
    rpc_pid: int | None = None
    provider_url: str | None = None
    provider_pid: int | None = None
    secret_store_url: str | None = None
    threshold_max: int | None = None
    ocean_config: str | None = None
    files_dir: str | None = None
    files_url: str | None = None
    files_pid: int | None = None
    aquarius_url: str | None = None
    aquarius_pid: int | None = None
    keeper_artifacts: str | None = None
    squid_config: str | None = None
    #: Origins beyond ``files_url`` the provider may fetch from on loopback (:func:`restart_provider`).
    provider_allowed_origins: list[str] = field(default_factory=list)
    #: The local CA's PEM certificate when the devnet speaks https (``--tls``), else None.
    tls_ca: str | None = None
    dev_only: str = DEV_ONLY
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.state_dir / STATE_FILE

    @classmethod
    def load(cls, state_dir: Path) -> DevnetState | None:
        """The state in ``state_dir`` (None if it holds no ``devnet.json``).

        :raises DevnetError: the file is not a devnet state file.
        """
        state_dir = state_dir.resolve()
        path = state_dir / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise DevnetError(f"cannot read {path}: {exc}") from None
        try:
            return cls.from_json(state_dir, data)
        except (KeyError, TypeError, ValueError) as exc:
            raise DevnetError(f"{path} is not a devnet state file ({type(exc).__name__}: {exc})") from None

    @classmethod
    def require(cls, state_dir: Path) -> DevnetState:
        """Like :meth:`load`, but a missing state is an error."""
        state = cls.load(state_dir)
        if state is None:
            raise DevnetError(f"no devnet in {state_dir}")
        return state

    @classmethod
    def from_json(cls, state_dir: Path, data: Mapping[str, Any]) -> DevnetState:
        known = {name for name in cls.__dataclass_fields__ if name not in ("state_dir", "extra")}
        values = {name: data[name] for name in known if name in data}
        values["nodes"] = [NodeEntry(**node) for node in data["nodes"]]
        values["accounts"] = {role: AccountKey(**key) for role, key in data["accounts"].items()}
        values["rpc_accounts"] = [RpcAccount(**account) for account in data.get("rpc_accounts", [])]
        extra = {name: value for name, value in data.items() if name not in known}
        return cls(state_dir=state_dir, extra=extra, **values)

    def to_json(self) -> dict[str, Any]:
        """The ``devnet.json`` object (the contract's field names and shapes)."""
        return {
            "dev_only": self.dev_only,
            "acl": self.acl,
            "nodes": [vars(node).copy() for node in self.nodes],
            "chain_url": self.chain_url,
            "chain_id": self.chain_id,
            "anvil_pid": self.anvil_pid,
            "anvil_log": self.anvil_log,
            "contracts": dict(self.contracts),
            "template_id": self.template_id,
            "accounts": {role: vars(key).copy() for role, key in self.accounts.items()},
            "rpc_url": self.rpc_url,
            "rpc_accounts": [vars(account).copy() for account in self.rpc_accounts],
            "provider_url": self.provider_url,
            "provider_address": self.provider_address,
            "provider_backend": self.provider_backend,
            "metadata_store": self.metadata_store,
            "rpc_pid": self.rpc_pid,
            "provider_pid": self.provider_pid,
            "secret_store_url": self.secret_store_url,
            "threshold_max": self.threshold_max,
            "ocean_config": self.ocean_config,
            "files_dir": self.files_dir,
            "files_url": self.files_url,
            "files_pid": self.files_pid,
            "aquarius_url": self.aquarius_url,
            "aquarius_pid": self.aquarius_pid,
            "keeper_artifacts": self.keeper_artifacts,
            "squid_config": self.squid_config,
            "provider_allowed_origins": list(self.provider_allowed_origins),
            **({"tls_ca": self.tls_ca} if self.tls_ca else {}),  # the contract's field "when --tls is on"
            **self.extra,
        }

    def save(self) -> None:
        """Write ``devnet.json`` (mode 0600: it holds private keys and passwords)."""
        _write_private(self.path, json.dumps(self.to_json(), indent=2) + "\n")

    def pids(self) -> list[int | None]:
        """Every process of the devnet, in the order to stop them (the reverse of their start)."""
        return [self.provider_pid, self.rpc_pid, self.aquarius_pid, self.files_pid, *(node.pid for node in self.nodes),
                self.anvil_pid]

    def running_pids(self) -> list[int]:
        return [pid for pid in self.pids() if pid is not None and _alive(pid)]

    @property
    def scheme(self) -> str:
        return "https" if self.tls_ca else "http"

    @property
    def verify(self) -> bool | str:
        """What a client of this devnet checks certificates against (requests' ``verify``)."""
        return self.tls_ca or True

    def tls_files(self, service: str) -> TlsFiles | None:
        """The certificate and key of ``service`` (``node0``, ``rpc``, ``provider``, ``files``, ``aquarius``)
        under ``--tls``."""
        if not self.tls_ca:
            return None
        folder = self.state_dir / TLS_DIR
        return TlsFiles(folder / f"{service}.pem", folder / f"{service}.key")


# -- processes -----------------------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    # Distinct ports that were free a moment ago: every socket stays open until all are chosen, so
    # one call never hands out a port twice. A port may still be taken before the child binds it.
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
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
    # So does a zombie that is not ours (started by another `devnet` command): it has exited, and
    # only its reaping is left to pid 1, which can be slow (seen here: seconds per process).
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    # "pid (comm) S ...": the state follows the last ")", since comm may itself hold ")".
    return stat[stat.rindex(")") + 2 :].startswith("Z")


@dataclass(frozen=True)
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    log_offset: int  # the log's size at the start: only what this run wrote tells why it failed

    @property
    def pid(self) -> int:
        return self.process.pid


def _spawn(name: str, args: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> _Child:
    """Start ``ocean-secret-store ARGS`` in its own process group (``down`` stops it and nothing
    else), its output appended to ``log``.

    Every child is a service: it logs to ``log`` itself (``--log-file``), rotated by size, so the
    file does not grow for as long as the devnet runs. Its stdout and stderr (the listening line, a
    start-up error) are appended there too; after a rotation that descriptor writes to ``log.1``.
    """
    with open(log, "ab") as out:  # the child keeps its own descriptor
        offset = out.tell()
        process = subprocess.Popen(
            [sys.executable, "-m", "ocean_secret_store.cli", *args, "--log-file", str(log)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    return _Child(name, process, log, offset)


#: What a child's one-line error says when it cannot bind its port: the OS's words (an aiohttp
#: site) or the node transport's.
_BIND_FAILURES: Final = (b"address already in use", b"cannot listen on")


def _port_taken(child: _Child) -> bool:
    """Whether the child's start-up failed because it could not bind its port."""
    with contextlib.suppress(OSError), open(child.log, "rb") as f:
        f.seek(child.log_offset)
        written = f.read().lower()
        return any(failure in written for failure in _BIND_FAILURES)
    return False


def _stop_children(children: Sequence[_Child]) -> None:
    _stop_groups([child.pid for child in children])


def _wait_until(what: str, ready: Callable[[], bool], children: Sequence[_Child], timeout: float) -> None:
    """Poll ``ready`` until it holds; fail if a child exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        for child in children:
            if child.process.poll() is not None:
                raise _StartFailed(
                    f"the {child.name} exited with code {child.process.returncode} during start-up; see {child.log}",
                    _port_taken(child),
                )
        if ready():
            return
        if time.monotonic() > deadline:
            raise DevnetError(f"{what} within {timeout:.0f} s")
        time.sleep(0.05)


def _health(url: str, timeout: float = 1.0, verify: bool | str = True) -> dict[str, Any] | None:
    try:
        response = requests.get(url + "/health", timeout=timeout, verify=verify)
        return response.json() if response.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None


def readiness(url: str, timeout: float = 1.0, verify: bool | str = True) -> dict[str, Any] | None:
    """A key server's ``GET /ready`` answer (ready or not: 200 or 503), None if it does not answer."""
    try:
        response = requests.get(url + "/ready", timeout=timeout, verify=verify)
        return response.json() if response.status_code in (200, 503) else None
    except (requests.RequestException, ValueError):
        return None


def _answers(url: str, verify: bool | str = True) -> bool:
    try:
        return requests.get(url, timeout=1.0, verify=verify).status_code == 200
    except requests.RequestException:
        return False


def _responds(url: str, verify: bool | str = True) -> bool:
    """Any HTTP answer (the file server has no health route: every path is a file's)."""
    try:
        requests.get(url + "/", timeout=1.0, verify=verify)
    except requests.RequestException:
        return False
    return True


def _rpc_answers(url: str, verify: bool | str = True) -> bool:
    try:
        answer = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_accounts", "params": []},
                               timeout=1.0, verify=verify)
        return answer.status_code == 200 and "result" in answer.json()
    except (requests.RequestException, ValueError):
        return False


def _reported_port(port_file: Path) -> int | None:
    try:
        return int(port_file.read_text().strip())
    except (OSError, ValueError):
        return None  # not written yet (the child writes it atomically once it listens)


def wait_for_mesh(http_urls: Sequence[str], expected_peers: int, timeout: float,
                  children: Sequence[_Child] = (), *, verify: bool | str = True) -> None:
    """Wait until every key server answers ``GET /ready`` with ready and ``expected_peers`` usable
    (connected, unsuspected) peers; ``verify``: the CA bundle of https nodes (requests' ``verify``)."""
    pending = list(http_urls)

    def connected() -> bool:
        pending[:] = [u for u in pending if (r := readiness(u, verify=verify)) is None
                      or not r.get("ready") or r.get("usable_peers") != expected_peers]
        return not pending

    _wait_until("key servers not fully connected", connected, children, timeout)


def _stop_group(pid: int, grace: float = 5.0) -> None:
    _stop_groups([pid], grace)


def _stop_groups(pids: Sequence[int], grace: float = 5.0) -> None:
    """SIGTERM every process group at once, then SIGKILL those still running after ``grace``."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline + grace:
        time.sleep(0.05)


# -- the parts of a devnet -------------------------------------------------------------------------


def _write_node_configs(state: DevnetState, secrets_: Sequence[int], session_timeout: float,
                        acl: Mapping[str, Any], node_settings: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """(Re)write every node's config on freshly probed ports; the nodes keep their keys.

    ``node_settings``: more settings by section, e.g. ``{"http": {"header_timeout": 1.0}}``.
    """
    ports = _free_ports(2 * len(secrets_))
    cluster = {node.public: f"{LOOPBACK}:{ports[2 * i]}" for i, node in enumerate(state.nodes)}
    for i, (secret, node) in enumerate(zip(secrets_, state.nodes, strict=True)):
        mapping: dict[str, dict[str, Any]] = {
            "node": {
                "secret": to_hex(secret.to_bytes(32, "big")),
                "listen": cluster[node.public],
                "http_listen": f"{LOOPBACK}:{ports[2 * i + 1]}",
                "data_dir": node.data_dir,
                **({"admin_public": admin} if (admin := _admin_public(state)) else {}),
            },
            "cluster": cluster,
            "timeouts": {"session": session_timeout, "connect": 2.0, "keepalive": 1.0},
            "acl": dict(acl),
            "http": {"cors": "none"},
        }
        tls = state.tls_files(f"node{i}")
        if tls is not None:
            mapping["http"].update(tls_cert=str(tls.cert), tls_key=str(tls.key))
        for section, settings in (node_settings or {}).items():
            mapping[section] = {**mapping.get(section, {}), **settings}
        _write_private(Path(node.config), f"# {DEV_ONLY}\n" + dump_config(mapping))
        node.http_url = f"{state.scheme}://{LOOPBACK}:{ports[2 * i + 1]}"


def _admin_public(state: DevnetState) -> str | None:
    """``0x`` + 128 hex of ``accounts.admin``'s public key, every node's ``admin_public`` (None for a
    devnet made before the admin account: its nodes take part in no admin session)."""
    admin = state.accounts.get("admin")
    if admin is None:
        return None
    return to_hex(Point.generator_mul(int(admin.private_key, 16)).to_bytes())


def _new_nodes(state_dir: Path, count: int) -> tuple[list[int], list[NodeEntry]]:
    keys = [random_scalar() for _ in range(count)]
    nodes = []
    for i, secret in enumerate(keys):
        public = Point.generator_mul(secret)
        (state_dir / f"node{i}").mkdir(exist_ok=True)
        nodes.append(NodeEntry(
            public=to_hex(public.to_bytes()),
            address=checksum_address(address_of(public)),
            http_url="",
            pid=None,
            config=str(state_dir / f"node{i}.toml"),
            data_dir=str(state_dir / f"node{i}"),
            log=str(state_dir / f"node{i}.log"),
        ))
    return keys, nodes


def _all_answer(state: DevnetState, indices: Sequence[int]) -> bool:
    return all(_health(state.nodes[i].http_url, verify=state.verify) is not None for i in indices)


def _start_nodes(state: DevnetState, indices: Sequence[int], timeout: float,
                 move_ports: Callable[[], None] | None = None, *, mesh: bool = True) -> list[_Child]:
    """Start the nodes ``indices`` and wait for the full mesh (``mesh`` False: only until each of
    them answers ``/health``). If a node cannot bind a probed port and ``move_ports`` is given, stop
    them, move every node to new ports and try again."""
    for attempt in range(PORT_ATTEMPTS):
        children = []
        for index in indices:
            node = state.nodes[index]
            child = _spawn(f"key server {index}", ["node", "--config", node.config], Path(node.log))
            node.pid = child.pid
            children.append(child)
        try:
            if mesh:
                wait_for_mesh([n.http_url for n in state.nodes], len(state.nodes) - 1, timeout, children,
                              verify=state.verify)
            else:
                _wait_until("key servers not answering", functools.partial(_all_answer, state, indices),
                            children, timeout)
        except BaseException as exc:
            _stop_children(children)
            for index in indices:
                state.nodes[index].pid = None
            if not isinstance(exc, _StartFailed) or not exc.port_taken or move_ports is None:
                raise
            if attempt == PORT_ATTEMPTS - 1:
                raise
            move_ports()
        else:
            return children
    raise DevnetError("unreachable: the last attempt raises")  # for the type checker


def _start_service(state: DevnetState, name: str, args: Sequence[str], answers: Callable[..., bool],
                   timeout: float, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """Start a service that writes the port it bound into ``--port-file`` and wait until
    ``answers(url)``; its pid and URL. A failed start leaves no process behind."""
    child, port_file = _spawn_service(state, name, args, env)
    return child.pid, _await_service(state, child, port_file, answers, timeout)


def _spawn_service(state: DevnetState, name: str, args: Sequence[str],
                   env: Mapping[str, str] | None = None) -> tuple[_Child, Path]:
    port_file = state.state_dir / f".{name}.port"
    port_file.unlink(missing_ok=True)
    child = _spawn(f"the {name}", [*args, "--port-file", str(port_file)], state.state_dir / f"{name}.log", env)
    return child, port_file


def _await_service(state: DevnetState, child: _Child, port_file: Path, answers: Callable[..., bool],
                   timeout: float) -> str:
    """The URL of a spawned service once it reported its port and ``answers(url, verify=...)``;
    stopped if it does not."""
    try:
        _wait_until(f"{child.name} did not report its port", lambda: _reported_port(port_file) is not None,
                    [child], timeout)
        url = f"{state.scheme}://{LOOPBACK}:{_reported_port(port_file)}"
        _wait_until(f"{child.name} at {url} did not answer", lambda: answers(url, verify=state.verify), [child],
                    timeout)
    except BaseException:
        _stop_children([child])
        raise
    return url


def _spawn_rpc(state: DevnetState) -> tuple[_Child, Path]:
    """The JSON-RPC face needs only the chain and the keystores: it starts beside the key servers."""
    args = ["rpc", "--keystore", str(state.state_dir / "keystore"), "--listen", f"{LOOPBACK}:0",
            "--chain-url", state.chain_url, *_tls_args(state, "rpc")]
    child, port_file = _spawn_service(state, "rpc", args)
    state.rpc_pid = child.pid
    return child, port_file


def _spawn_files(state: DevnetState) -> tuple[_Child, Path]:
    """The file server needs nothing else: it starts beside the key servers, on its old port if it had one."""
    files_dir = Path(state.files_dir) if state.files_dir else state.state_dir / FILES_DIR
    files_dir.mkdir(exist_ok=True)
    state.files_dir = str(files_dir)
    port = _url_port(state.files_url) if state.files_url else 0
    child, port_file = _spawn_service(state, "files", ["files", "--dir", str(files_dir),
                                                       "--listen", f"{LOOPBACK}:{port}", *_tls_args(state, "files")])
    state.files_pid = child.pid
    return child, port_file


def _spawn_aquarius(state: DevnetState) -> tuple[_Child, Path]:
    """The Aquarius-compatible service needs only the metadata store: it starts beside the key
    servers, on its old port if it had one (DDOs and the DID registry name its URL)."""
    tls = state.tls_files("aquarius")
    if tls is not None and not tls.cert.exists():  # a --tls devnet made before the devnet ran an Aquarius
        folder = state.state_dir / TLS_DIR
        issue_certificate(TlsFiles(folder / "ca.pem", folder / "ca.key"), folder, "aquarius")
    port = _url_port(state.aquarius_url) if state.aquarius_url else 0
    child, port_file = _spawn_service(state, "aquarius", ["aquarius", "--db", state.metadata_store,
                                                          "--listen", f"{LOOPBACK}:{port}",
                                                          *_tls_args(state, "aquarius")])
    state.aquarius_pid = child.pid
    return child, port_file


def _tls_args(state: DevnetState, service: str) -> list[str]:
    tls = state.tls_files(service)
    return [] if tls is None else ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]


def _make_certificates(state: DevnetState) -> None:
    """The local CA and a certificate per service (``--tls``), in ``DIR/tls``, mode 0600."""
    folder = state.state_dir / TLS_DIR
    ca = make_local_ca(folder)
    for service in [*(f"node{i}" for i in range(len(state.nodes))), "rpc", "provider", "files", "aquarius"]:
        issue_certificate(ca, folder, service)
    state.tls_ca = str(ca.cert)


def _start_provider(state: DevnetState, timeout: float) -> None:
    """Start the provider from ``ocean.ini`` alone (backend chosen by the plugin manager)."""
    state.provider_pid = None
    config = _write_ocean_config(state)
    state.provider_pid, state.provider_url = _start_service(
        state, "provider", ["provider", "--config", str(config), "--poll-interval", "0.2"],
        lambda url, verify: _answers(url + "/api/v1/brizo", verify=verify), timeout,
        env={PROVIDER_KEY_ENV: state.accounts["provider"].private_key})
    # Pin the bound port in the config: DDOs published from now on name this URL, so a restarted
    # provider must come back on it.
    _write_ocean_config(state)


def _threshold(nodes: int) -> int:
    return min(2, nodes - 1) if nodes >= 5 else (nodes - 1) // 2


def _write_ocean_config(state: DevnetState) -> Path:
    """A squid-py style INI for the pipeline host (``Ocean(DIR/ocean.ini)``) and the provider."""
    config = configparser.ConfigParser(interpolation=None)
    config.optionxform = str  # type: ignore[assignment,method-assign] # keys keep their case, as load_config reads them
    keeper = {"keeper.url": state.chain_url, "contracts.file": CONTRACTS_FILE}
    if state.secret_store_url:
        keeper["secret_store.url"] = state.secret_store_url
    if state.rpc_url:
        keeper["parity.url"] = state.rpc_url
    config["keeper-contracts"] = keeper
    config["secret-store"] = {
        "enabled": "true",
        "threshold": str(_threshold(len(state.nodes))),
        "cluster_urls": ", ".join(node.http_url for node in state.nodes),
    }
    # Through the devnet's Aquarius when it runs: DDOs then name its URL, which any client can read
    # (under --tls checked against the devnet's CA, [resources] ca_file, like every other service).
    resources = {"metadata.store": state.aquarius_url or Path(state.metadata_store).name}
    if state.aquarius_url:
        resources["aquarius.url"] = state.aquarius_url
    if state.provider_url:
        resources["provider.url"] = state.provider_url
    resources.update({"provider.address": state.provider_address, "downloads.path": "downloads"})
    if state.tls_ca:
        resources["ca_file"] = state.tls_ca
    config["resources"] = resources
    listen = f"{LOOPBACK}:{_url_port(state.provider_url) if state.provider_url else 0}"
    provider = {"backend": state.provider_backend, "account.key_env": PROVIDER_KEY_ENV, "listen": listen}
    # The devnet's file server, and what a test added: the only loopback origins the provider fetches from.
    origins = [*([state.files_url] if state.files_url else []), *state.provider_allowed_origins]
    if origins:
        provider["allowed_origins"] = ", ".join(origins)
    tls = state.tls_files("provider")
    if tls is not None:
        provider.update(tls_cert=str(tls.cert), tls_key=str(tls.key))
    config["provider"] = provider
    text = io.StringIO()
    config.write(text)
    path = state.state_dir / OCEAN_CONFIG_FILE
    _write_private(path, f"; {DEV_ONLY}\n" + text.getvalue())
    state.ocean_config = str(path)
    return path


#: The devnet chain's base fee (wei): fixed at 0, so Parity-era clients' fixed 1 gwei gas price is always enough.
BASE_FEE: Final = 0


def _write_squid_config(state: DevnetState) -> Path:
    """squid-py 0.9.3's ``config.ini`` for this devnet, used as is by the real squid-py: its
    ``[keeper-contracts]`` and ``[resources]`` keys (squid_py/config.py, squid_py/brizo/brizo.py),
    with the publisher's keystore account on the JSON-RPC face as ``parity.address``/``password``."""
    publisher = next(a for a in state.rpc_accounts if a.role == "publisher")
    config = configparser.ConfigParser(interpolation=None)
    keeper = {"keeper.url": state.chain_url, "keeper.path": str(state.keeper_artifacts)}
    if state.secret_store_url:
        keeper["secret_store.url"] = state.secret_store_url
    if state.rpc_url:
        keeper["parity.url"] = state.rpc_url
    keeper.update({"parity.address": publisher.address, "parity.password": publisher.password})
    config["keeper-contracts"] = keeper
    resources = {"aquarius.url": state.aquarius_url or "", "brizo.url": state.provider_url or "",
                 "provider.address": state.provider_address,
                 "storage.path": str(state.state_dir / "squid_py.db")}
    config["resources"] = {key: value for key, value in resources.items() if value}
    text = io.StringIO()
    config.write(text)
    path = state.state_dir / SQUID_CONFIG_FILE
    _write_private(path, f"; {DEV_ONLY}\n" + text.getvalue())
    state.squid_config = str(path)
    return path


def _write_keeper_artifacts(state: DevnetState) -> Path:
    """``<Contract>.development.json`` (address and ABI) for every contract the devnet deployed."""
    folder = write_artifacts(state.contracts, state.state_dir / KEEPER_ARTIFACTS_DIR, network=KEEPER_NETWORK)
    state.keeper_artifacts = str(folder)
    return folder


def _start_chain(state_dir: Path, port: int = 0) -> AnvilProcess:
    return start_anvil(port, state_path=state_dir / "chain-state.json", log_path=state_dir / "anvil.log",
                       base_fee=BASE_FEE)


def _write_keystores(state_dir: Path, accounts: Mapping[str, AccountKey]) -> list[RpcAccount]:
    out = []
    for role in RPC_ROLES:
        password = secrets.token_urlsafe(12)
        path = write_keystore(state_dir / "keystore", accounts[role].private_key, password)
        out.append(RpcAccount(role=role, address=accounts[role].address, password=password, keystore=str(path)))
    return out


def _new_state(state_dir: Path, anvil: AnvilProcess, acl: str, nodes: int, provider_backend: str,
               say: Callable[[str], None]) -> tuple[DevnetState, list[int]]:
    keys = anvil.private_keys
    accounts = {role: AccountKey(address=anvil.addresses[i], private_key=keys[i]) for i, role in enumerate(ROLES)}
    deployment = deploy_keeper_contracts(anvil.url, keys[0], minter=to_address(accounts["minter"].address))
    say(f"deployed keeper-contracts 0.13.2 from the installed artifacts in {deployment.seconds:.1f} s")
    contracts = dict(deployment.addresses)
    _write_private(state_dir / CONTRACTS_FILE, json.dumps({"contracts": contracts}, indent=2))
    say(f"generating {nodes} node keys and configs in {state_dir}")
    node_keys, entries = _new_nodes(state_dir, nodes)
    state = DevnetState(
        state_dir=state_dir, acl=acl, nodes=entries, chain_url=anvil.url, chain_id=anvil.chain_id,
        anvil_pid=anvil.pid, anvil_log=str(anvil.log_path), contracts=contracts,
        template_id=to_hex(bytes(deployment.template_id)), accounts=accounts,
        rpc_accounts=_write_keystores(state_dir, accounts), metadata_store=str(state_dir / "metadata.sqlite"),
        provider_address=accounts["provider"].address, provider_backend=provider_backend,
    )
    return state, node_keys


def _node_acl(state: DevnetState) -> dict[str, Any]:
    if state.acl == "contract":
        return {"kind": "contract", "chain_url": state.chain_url,
                "contract": state.contracts["AccessSecretStoreCondition"]}
    return {"kind": "none"}


# -- the public operations -----------------------------------------------------------------------


def up(
    state_dir: Path,
    nodes: int = 5,
    *,
    acl: str = "contract",
    provider_backend: str = "secret-store",
    fresh: bool = False,
    session_timeout: float = 5.0,
    node_settings: Mapping[str, Mapping[str, Any]] | None = None,
    tls: bool = False,
    timeout: float = 60.0,
    say: Callable[[str], None] = lambda _: None,
) -> DevnetState:
    """Start the devnet in ``state_dir``: anvil with the keeper contracts, N key servers, the
    JSON-RPC face and the provider (whose access backend the plugin manager picks by
    ``provider_backend``).

    ``acl="contract"`` (the default) configures every key server with the on-chain
    ``AccessSecretStoreCondition.checkPermissions``; ``acl="none"`` lets everyone in (benchmarks).
    ``node_settings`` adds settings to every new node's TOML config, by section (node/config.py),
    e.g. ``{"http": {"header_timeout": 1.0}, "audit": {"max_bytes": 4096}}``.
    ``tls`` makes a new devnet speak https (a local CA in ``DIR/tls``, ``tls_ca`` in the state); a
    stopped devnet restarts as it was made, and asking ``tls`` of one made without it is an error.
    """
    state_dir = state_dir.resolve()
    if acl not in ("none", "contract"):
        raise DevnetError(f"unknown --acl {acl!r}: use 'contract' or 'none'")
    if nodes < 1:
        raise DevnetError("a devnet needs at least one node")
    existing = DevnetState.load(state_dir)
    if existing is not None and existing.running_pids():
        raise DevnetError(f"a devnet is still running in {state_dir}: run `devnet down --state-dir {state_dir}` first")
    if existing is not None and fresh:
        shutil.rmtree(state_dir)
        existing = None
    if existing is not None and tls and not existing.tls_ca:
        raise DevnetError(f"the devnet in {state_dir} was made without --tls: add --fresh to make a new one with it")
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)

    anvil: AnvilProcess | None = None
    state: DevnetState | None = None
    try:
        move_ports: Callable[[], None] | None = None
        if existing is None:
            say("starting anvil (local chain)")
            anvil = _start_chain(state_dir)
            state, node_keys = _new_state(state_dir, anvil, acl, nodes, provider_backend, say)
            if tls:
                say(f"making a local CA and certificates for 127.0.0.1/localhost in {state_dir / TLS_DIR}")
                _make_certificates(state)
            # Nodes are moved only while new: an old devnet's URLs are written in its DDOs.
            move_ports = functools.partial(_write_node_configs, state, node_keys, session_timeout, _node_acl(state),
                                           node_settings)
            move_ports()
        else:
            say(f"restarting the stopped devnet in {state_dir} (same keys, data and chain state)")
            state = existing
            for node in state.nodes:  # stale pids may belong to other processes by now
                node.pid = None
            state.rpc_pid = state.provider_pid = state.files_pid = state.aquarius_pid = None
            anvil = _start_chain(state_dir, _url_port(state.chain_url))
            state.anvil_pid = anvil.pid
        rpc, rpc_port_file = _spawn_rpc(state)
        files, files_port_file = _spawn_files(state)
        aquarius, aquarius_port_file = _spawn_aquarius(state)
        _write_keeper_artifacts(state)
        say(f"starting {len(state.nodes)} key servers; waiting until each node is connected to every other")
        _start_nodes(state, range(len(state.nodes)), timeout, move_ports)
        state.secret_store_url = state.nodes[0].http_url
        state.threshold_max = len(state.nodes) - 1
        state.rpc_url = _await_service(state, rpc, rpc_port_file, _rpc_answers, timeout)
        state.files_url = _await_service(state, files, files_port_file, _responds, timeout)
        state.aquarius_url = _await_service(state, aquarius, aquarius_port_file, _answers, timeout)
        _start_provider(state, timeout)
        say(f"provider (Brizo-shaped, {state.provider_backend} backend) at {state.provider_url}, "
            f"Aquarius at {state.aquarius_url}")
        _write_squid_config(state)
    except BaseException:
        pids = [anvil.pid] if anvil is not None else []
        pids += [pid for pid in (state.pids() if state is not None else []) if pid is not None]
        _stop_groups(list(dict.fromkeys(pids)))
        raise
    state.save()
    return state


def down(state_dir: Path) -> list[int]:
    """Stop every process of the devnet; the pids stopped."""
    state = DevnetState.require(state_dir)
    stopped = state.running_pids()
    # The services first, all at once; the chain last, so none of them sees it vanish mid-request.
    _stop_groups([pid for pid in stopped if pid != state.anvil_pid])
    _stop_groups([pid for pid in stopped if pid == state.anvil_pid])
    for node in state.nodes:
        node.pid = None
    state.anvil_pid = state.rpc_pid = state.provider_pid = state.files_pid = state.aquarius_pid = None
    state.save()
    return stopped


def status(state_dir: Path) -> dict[str, Any]:
    """Each process of the devnet: running, and for key servers healthy and connected peers."""
    state = DevnetState.require(state_dir)
    nodes = []
    for i, node in enumerate(state.nodes):
        running = _alive(node.pid)
        health = _health(node.http_url, verify=state.verify) if running else None
        nodes.append({
            "node": i,
            "pid": node.pid,
            "running": running,
            "http_url": node.http_url,
            "healthy": bool(health and health.get("status") == "ok"),
            "connected_peers": health.get("connected_peers") if health else None,
        })
    services = {
        name: {"pid": pid, "url": url, "running": _alive(pid)}
        for name, pid, url in (("chain", state.anvil_pid, state.chain_url), ("rpc", state.rpc_pid, state.rpc_url),
                               ("files", state.files_pid, state.files_url),
                               ("aquarius", state.aquarius_pid, state.aquarius_url),
                               ("provider", state.provider_pid, state.provider_url))
        if url
    }
    up_services = all(s["running"] for s in services.values())
    return {"state_dir": str(state.state_dir), "nodes": nodes, "services": services,
            "chain": services.get("chain"),
            "running": up_services and all(n["running"] for n in nodes),
            "healthy": up_services and all(n["healthy"] for n in nodes)}


def restart_nodes(state_dir: Path, indices: list[int], timeout: float = 30.0, *, mesh: bool = True) -> DevnetState:
    """Start stopped nodes again (after a crash or a kill) and wait until the mesh is complete
    (``mesh`` False: only until each restarted node answers ``/health``, still connecting maybe)."""
    state = DevnetState.require(state_dir)
    for index in indices:
        node = state.nodes[index]
        if _alive(node.pid):
            raise DevnetError(f"node {index} is still running (pid {node.pid})")
    try:
        _start_nodes(state, indices, timeout, mesh=mesh)
    finally:
        state.save()
    return state


def stop_node(state_dir: Path, index: int, *, kill: bool = False) -> None:
    """Stop node ``index``: SIGKILL if ``kill`` (a crash), else a graceful SIGTERM."""
    pid = DevnetState.require(state_dir).nodes[index].pid
    if pid is None or not _alive(pid):
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
    state = DevnetState.require(state_dir)
    if state.anvil_pid is not None and _alive(state.anvil_pid):
        _stop_group(state.anvil_pid)


def restart_chain(state_dir: Path) -> DevnetState:
    """Start the devnet's anvil again on its old port, with the state it dumped when stopped."""
    state = DevnetState.require(state_dir)
    if _alive(state.anvil_pid):
        raise DevnetError(f"anvil is still running (pid {state.anvil_pid})")
    state.anvil_pid = _start_chain(state.state_dir, _url_port(state.chain_url)).pid
    state.save()
    return state


def stop_aquarius(state_dir: Path) -> None:
    """Stop the devnet's Aquarius-compatible service (``restart_aquarius`` brings it back)."""
    state = DevnetState.require(state_dir)
    if state.aquarius_pid is not None and _alive(state.aquarius_pid):
        _stop_group(state.aquarius_pid)


def restart_aquarius(state_dir: Path, timeout: float = 30.0) -> DevnetState:
    """Start the Aquarius-compatible service again (stopping it first if it runs), on its old port."""
    state = DevnetState.require(state_dir)
    if state.aquarius_pid is not None and _alive(state.aquarius_pid):
        _stop_group(state.aquarius_pid)
    try:
        child, port_file = _spawn_aquarius(state)
        state.aquarius_url = _await_service(state, child, port_file, _answers, timeout)
    except BaseException:
        state.aquarius_pid = None
        raise
    finally:
        state.save()
    return state


def restart_provider(state_dir: Path, backend: str | None = None, timeout: float = 30.0, *,
                     allowed_origins: Sequence[str] | None = None) -> DevnetState:
    """Restart the provider, optionally with another access-control backend (``secret-store`` or
    ``provider-key``, or a plugin's): written into ``ocean.ini``, the provider swaps backends by
    configuration alone, and comes back on its old port.

    ``allowed_origins`` (``scheme://host:port`` texts) replaces the origins the provider may fetch
    from on loopback or private addresses besides ``files_url`` (``[]``: only ``files_url``;
    None: as before)."""
    state = DevnetState.require(state_dir)
    if state.provider_pid is not None and _alive(state.provider_pid):
        _stop_group(state.provider_pid)
    if backend is not None:
        state.provider_backend = backend
    if allowed_origins is not None:
        state.provider_allowed_origins = list(allowed_origins)
    try:
        _start_provider(state, timeout)
    finally:
        state.save()
    return state


# -- servers-set change: add, remove and replace key servers of a running devnet -------------------


def _admin_secret(state: DevnetState) -> str:
    admin = state.accounts.get("admin")
    if admin is None or _admin_public(state) is None:
        raise DevnetError(f"the devnet in {state.state_dir} has no admin account (made before servers-set change): "
                          "make a new one with `devnet up --fresh`")
    return admin.private_key


def _read_config(path: str | Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        return tomllib.load(f)


def _edit_config(path: str | Path, change: Callable[[dict[str, Any]], None]) -> None:
    mapping = _read_config(path)
    change(mapping)
    _write_private(Path(path), f"# {DEV_ONLY}\n" + dump_config(mapping))


def _reload(node: NodeEntry) -> None:
    """SIGHUP a running node: it rereads its config's ``[cluster]`` address book (docs/http-api.md)."""
    if node.pid is not None and _alive(node.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.pid, signal.SIGHUP)


def _set_peer(state: DevnetState, nodes: Sequence[NodeEntry], public: str, listen: str | None) -> None:
    """List ``public`` at ``listen`` (None: remove it) in the ``[cluster]`` of ``nodes``, and reload them."""
    for node in nodes:
        def change(mapping: dict[str, Any]) -> None:
            cluster = mapping.setdefault("cluster", {})
            if listen is None:
                cluster.pop(public, None)
            else:
                cluster[public] = listen
        _edit_config(node.config, change)
        _reload(node)


def _next_name(state: DevnetState) -> str:
    """``nodeK`` for the first K whose config, data dir and log are all unused (removed nodes keep theirs)."""
    taken = {Path(n.config).stem for n in state.nodes}
    k = 0
    while (f"node{k}" in taken or (state.state_dir / f"node{k}.toml").exists()
           or (state.state_dir / f"node{k}").exists()):
        k += 1
    return f"node{k}"


def _running(state: DevnetState) -> list[NodeEntry]:
    return [node for node in state.nodes if _alive(node.pid)]


def _start_newcomer(state: DevnetState, timeout: float) -> NodeEntry:
    """Make a new key server (fresh key, free ports, data dir, a config listing every node and
    itself, ``admin_public``), list it in every node's config and SIGHUP the running ones, start it
    and wait until it is connected to every running node. It is in no servers set yet."""
    running = _running(state)
    if not running:
        raise DevnetError(f"no key server of the devnet in {state.state_dir} is running")
    name = _next_name(state)
    secret = random_scalar()
    public = Point.generator_mul(secret)
    listen_port, http_port = _free_ports(2)
    listen = f"{LOOPBACK}:{listen_port}"
    entry = NodeEntry(public=to_hex(public.to_bytes()), address=checksum_address(address_of(public)),
                      http_url=f"{state.scheme}://{LOOPBACK}:{http_port}", pid=None,
                      config=str(state.state_dir / f"{name}.toml"), data_dir=str(state.state_dir / name),
                      log=str(state.state_dir / f"{name}.log"))
    mapping = _read_config(running[0].config)  # timeouts, acl, http and the rest as the cluster has them
    mapping["node"] = {
        "secret": to_hex(secret.to_bytes(32, "big")), "listen": listen, "http_listen": f"{LOOPBACK}:{http_port}",
        "data_dir": entry.data_dir, "admin_public": _admin_public(state),
    }
    mapping["cluster"] = {**mapping.get("cluster", {}), entry.public: listen}
    if state.tls_ca:
        folder = state.state_dir / TLS_DIR
        issue_certificate(TlsFiles(folder / "ca.pem", folder / "ca.key"), folder, name)
        tls = state.tls_files(name)
        if tls is not None:
            mapping.setdefault("http", {}).update(tls_cert=str(tls.cert), tls_key=str(tls.key))
    Path(entry.data_dir).mkdir(exist_ok=True)
    _write_private(Path(entry.config), f"# {DEV_ONLY}\n" + dump_config(mapping))
    _set_peer(state, state.nodes, entry.public, listen)
    child = _spawn(f"key server {name}", ["node", "--config", entry.config], Path(entry.log))
    entry.pid = child.pid
    try:
        wait_for_mesh([entry.http_url], len(running), timeout, [child], verify=state.verify)
    except BaseException:
        _stop_children([child])
        _set_peer(state, state.nodes, entry.public, None)
        raise
    return entry


def _change(state: DevnetState, master: NodeEntry, add: Sequence[NodeEntry], remove: Sequence[NodeEntry],
            force: bool, on_progress: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    """One servers-set change through ``master``: its servers set plus ``add`` minus ``remove``; the
    session's final progress."""
    from .client.admin import AdminClient  # noqa: PLC0415 -- only the servers-set commands need the client

    with AdminClient(master.http_url, verify=state.verify) as client:
        current = {str(n).lower() for n in client.status()["servers_set"]}
        new_set = (current | {n.public for n in add}) - {n.public for n in remove}
        return client.servers_set_change(sorted(new_set), _admin_secret(state), force, on_progress=on_progress)


def _admin_status(state: DevnetState, node: NodeEntry) -> dict[str, Any] | None:
    """``node``'s ``GET /admin/status``, None if it does not answer one."""
    from .client.admin import AdminClient  # noqa: PLC0415 -- as in _change

    try:
        with AdminClient(node.http_url, verify=state.verify) as client:
            return client.status()
    except SecretStoreError:
        return None


def _update_urls(state: DevnetState) -> None:
    """After the node list changed: ``secret_store_url``, ``threshold_max``, ``ocean.ini`` and squid-py's
    ``config.ini`` follow it, and a running provider rereads its key server list (SIGHUP)."""
    state.secret_store_url = state.nodes[0].http_url if state.nodes else None
    state.threshold_max = len(state.nodes) - 1
    if state.ocean_config:
        _write_ocean_config(state)
        if state.provider_pid is not None and _alive(state.provider_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(state.provider_pid, signal.SIGHUP)
    if state.squid_config and state.keeper_artifacts:
        _write_squid_config(state)


def _require_running(state: DevnetState, besides: NodeEntry | None = None) -> None:
    """Every node of the new set must be connected to the master: refuse early, naming the node."""
    for index, node in enumerate(state.nodes):
        if node is not besides and not _alive(node.pid):
            raise DevnetError(f"node {index} is not running: restart it (restart_nodes) or replace it "
                              f"(`devnet replace-node {index}`) first")


def _master(state: DevnetState, besides: NodeEntry | None = None) -> NodeEntry:
    for node in state.nodes:
        if node is not besides and _alive(node.pid):
            return node
    raise DevnetError(f"no running key server in {state.state_dir} can run the servers-set change")


def _admit_through(state: DevnetState, master: NodeEntry, newcomer: NodeEntry, remove: Sequence[NodeEntry],
                   force: bool, on_progress: Callable[[dict[str, Any]], None] | None, *, undo: Callable[[], None],
                   keep: Callable[[], str]) -> dict[str, Any]:
    """Run the change through ``master`` that admits ``newcomer`` (and drops ``remove``); the session's
    final progress. On a refusal that changed nothing (``master`` runs no session, ``newcomer`` is in
    no servers set) ``undo()`` takes the newcomer away again and the error goes on; otherwise the
    session may have moved keys to it: ``keep()`` keeps it (and says where) and a :class:`DevnetError`
    says how to resume. Shared by the devnet and the compose stack (stack.replace_node)."""
    try:
        return _change(state, master, [newcomer], remove, force, on_progress)
    except BaseException as exc:
        status = _admin_status(state, master)
        if status is not None and status.get("admin_session") is None \
                and newcomer.public not in status["servers_set"]:
            undo()
            raise
        where = keep()
        if not isinstance(exc, Exception):
            raise
        session = (status or {}).get("admin_session") or {}
        nodes = ",".join(session.get("new_set", [])) or "..."
        raise DevnetError(f"the servers-set change did not finish ({exc}); {where}. Resume the change with "
                          f"`ocean-secret-store admin servers-set-change --node {master.http_url} --nodes {nodes} "
                          "--admin-key-env VAR` (VAR holding accounts.admin's private key)") from exc


def _admit(state: DevnetState, newcomer: NodeEntry, remove: Sequence[NodeEntry], force: bool,
           on_progress: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    """Run the change that admits ``newcomer`` (and drops ``remove``); on a refusal that changed
    nothing the newcomer is stopped and unlisted again, else it stays in the devnet to be resumed."""
    master = _master(state, besides=remove[0] if remove else None)

    def undo() -> None:  # refused before anything changed: the newcomer goes away again
        if newcomer.pid is not None:
            _stop_group(newcomer.pid)
        _set_peer(state, state.nodes, newcomer.public, None)
        Path(newcomer.config).unlink(missing_ok=True)  # it holds the node secret
        shutil.rmtree(newcomer.data_dir, ignore_errors=True)

    def keep() -> str:  # the session may have moved keys to it: it stays, so that `down` stops it
        state.nodes.append(newcomer)
        _update_urls(state)
        state.save()
        return f"{Path(newcomer.config).stem} stays in the devnet as node {len(state.nodes) - 1}"

    return _admit_through(state, master, newcomer, remove, force, on_progress, undo=undo, keep=keep)


def add_node(state_dir: Path, *, force: bool = False, timeout: float = 60.0,
             on_progress: Callable[[dict[str, Any]], None] | None = None,
             say: Callable[[str], None] = lambda _: None) -> tuple[int, dict[str, Any]]:
    """Add a key server to the running devnet: start it (connected to every node, which reload
    their address books on SIGHUP), then a servers-set change, signed by ``accounts.admin``, to the
    current set plus it. ``force``: go on although some keys cannot keep t+1 shares.

    Returns the new node's index in ``nodes`` and the session's final progress (``done``,
    ``failed``, ``skipped``, ``lost``).
    """
    state = DevnetState.require(state_dir)
    _admin_secret(state)
    _require_running(state)
    say("starting a new key server and listing it in every node's [cluster] (SIGHUP)")
    newcomer = _start_newcomer(state, timeout)
    say(f"{newcomer.public[:18]}.. connected at {newcomer.http_url}; servers-set change to add it")
    report = _admit(state, newcomer, [], force, on_progress)
    state.nodes.append(newcomer)
    _update_urls(state)
    state.save()
    return len(state.nodes) - 1, report


def _drop(state: DevnetState, node: NodeEntry) -> None:
    """Stop ``node`` if it runs, unlist it from every other config (SIGHUP) and from the state."""
    if node.pid is not None and _alive(node.pid):
        _stop_group(node.pid)
    node.pid = None
    state.nodes.remove(node)
    _set_peer(state, state.nodes, node.public, None)


def _node(state: DevnetState, index: int) -> NodeEntry:
    if not 0 <= index < len(state.nodes):
        raise DevnetError(f"no node {index}: the devnet has nodes 0..{len(state.nodes) - 1}")
    return state.nodes[index]


def remove_node(state_dir: Path, index: int, *, force: bool = False,
                on_progress: Callable[[dict[str, Any]], None] | None = None,
                say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Remove node ``index``: a servers-set change to the set without it, then stop it and unlist it
    from every config (SIGHUP) and from ``devnet.json``; the session's final progress."""
    state = DevnetState.require(state_dir)
    _admin_secret(state)
    node = _node(state, index)
    if len(state.nodes) < 2:
        raise DevnetError("the devnet's last key server cannot be removed")
    _require_running(state, besides=node)
    say(f"servers-set change without node {index} ({node.public[:18]}..)")
    report = _change(state, _master(state, besides=node), [], [node], force, on_progress)
    _drop(state, node)
    _update_urls(state)
    state.save()
    return report


def replace_node(state_dir: Path, index: int, *, force: bool = False, timeout: float = 60.0,
                 on_progress: Callable[[dict[str, Any]], None] | None = None,
                 say: Callable[[str], None] = lambda _: None) -> tuple[int, dict[str, Any]]:
    """Replace node ``index`` (running or not) by a new key server in one servers-set change: start
    the new one as :func:`add_node` does, change the set to (set - node + new), stop the old node if
    it still runs and unlist it. The new node takes the old one's place in ``nodes``; returns its
    index and the session's final progress."""
    state = DevnetState.require(state_dir)
    _admin_secret(state)
    old = _node(state, index)
    _require_running(state, besides=old)
    say("starting a new key server and listing it in every node's [cluster] (SIGHUP)")
    newcomer = _start_newcomer(state, timeout)
    say(f"{newcomer.public[:18]}.. connected at {newcomer.http_url}; servers-set change to replace node {index}")
    report = _admit(state, newcomer, [old], force, on_progress)
    state.nodes.insert(index, newcomer)
    _drop(state, old)
    _update_urls(state)
    state.save()
    return state.nodes.index(newcomer), report
