"""``stack init`` and ``stack deploy``: the whole devnet as a Docker compose project, each service in
its own container, with a ``devnet.json`` through which host clients use it as they use ``devnet up``'s.

``init_stack`` writes, into a new folder ``OUT``::

    compose.yaml     the services (the text of docker/compose.yaml for 5 nodes; no secret in it)
    .env             what compose fills in: OCEAN_SS_STACK (= OUT), the published ports, the image,
                     the owner's uid/gid, and dev secrets (node keystore password, the deployer's
                     and the provider's anvil keys): mode 0600, dev only
    devnet.json      DevnetState for host clients: every URL on 127.0.0.1 at its published port
    ocean.ini  config.ini  contracts.json  artifacts/  keystore/     as ``devnet up`` writes them
    cluster/         ``cluster init``'s output: node<i>/ (node.toml, keystore/, data/) ...
    stack/           mounted read-only at /stack: provider.ini (container URLs), contracts.json,
                     stack.json (the deployment's plan)
    chain/           anvil's state (``--state``), metadata/ Aquarius' SQLite store, files/ the file
                     server's folder: every piece of state is a folder of OUT (bind mounts), so
                     ``docker-compose down -v`` keeps it and a new ``up`` finds it; ``rm -rf OUT`` ends it

The contracts are known before the chain runs: the deployer (anvil's account 0) deploys them from
nonce 0 on a fresh chain, so :func:`~.chain.deploy.planned_addresses` gives their addresses, which
the node configs (the ACL contract), ``devnet.json`` and the provider's config name at once. The
one-shot ``deploy`` container runs :func:`deploy_stack` at ``up``: it deploys there, or finds the
contracts already there and exits at once.

The key servers answer on the internal network ``cluster`` only, to ``keyserver<i>`` (their peers'
address book), not to their service names ``node<i>``: compose makes a service name resolve on
every network of the container, and each node is also on ``clients``, which publishes its port on
127.0.0.1. So ``docker network disconnect <project>_cluster <node container>`` is a real partition:
the node runs and answers the host, but neither reaches its peers nor is reached by them.

``replace_node`` (``stack replace-node``) replaces a key server, dead or alive, by a new container
``node<k>`` (``keyserver<k>``, its own folder ``cluster/node<k>`` and published port) through one
servers-set change signed with ``accounts.admin``, and rewrites compose.yaml, .env, devnet.json and
the configs that name the nodes; node ``i`` of devnet.json is then no longer service ``node<i>``
(:func:`node_index`).

Files: containers run as uid/gid 10001 (the image's user). Run as root, ``init_stack`` gives the
folders the containers write or read privately (the node folders, keystore/, chain/, metadata/)
to 10001; run as another user, ``.env`` makes the containers run as that user instead.
"""

from __future__ import annotations

import configparser
import contextlib
import io
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from . import cluster_init
from .chain.anvil import DEFAULT_CHAIN_ID, dev_accounts, rpc_call
from .chain.deploy import deploy_keeper_contracts, planned_addresses, write_artifacts
from .chain.keeper import ESCROW_ACCESS_TEMPLATE_ID, ESCROW_COMPUTE_TEMPLATE_ID
from .crypto.curve import Point
from .crypto.hashes import address_of, checksum_address, keccak256
from .devnet import (
    CONTRACTS_FILE,
    DEV_ONLY,
    FILES_DIR,
    KEEPER_ARTIFACTS_DIR,
    KEEPER_NETWORK,
    ROLES,
    AccountKey,
    DevnetError,
    DevnetState,
    NodeEntry,
    readiness,
    wait_for_mesh,
)

# The devnet's own writers, so that the stack's ocean.ini, config.ini and keystores are the devnet's.
from .devnet import _admin_secret as admin_secret
from .devnet import _admit_through as admit_through
from .devnet import _free_ports as free_ports
from .devnet import _threshold as encryptor_threshold
from .devnet import _write_keystores as write_keystores
from .devnet import _write_ocean_config as write_ocean_config
from .devnet import _write_private as write_private
from .devnet import _write_squid_config as write_squid_config
from .exceptions import ChainError, ConfigError
from .ocean.config import load_config
from .protocol.hexcodec import to_hex

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from .cluster_init import ClusterPlan

__all__ = ["StackError", "StackPlan", "deploy_stack", "init_stack", "read_plan", "render_compose", "replace_node",
           "stack_status"]

COMPOSE_FILE: Final = "compose.yaml"
ENV_FILE: Final = ".env"
CLUSTER_DIR: Final = "cluster"
#: Mounted read-only at /stack in the deploy and provider containers.
STACK_DIR: Final = "stack"
PLAN_FILE: Final = "stack.json"
PROVIDER_CONFIG: Final = "provider.ini"
KEYSTORE_DIR: Final = "keystore"
CHAIN_DIR: Final = "chain"
METADATA_DIR: Final = "metadata"
DEFAULT_IMAGE: Final = cluster_init.DEFAULT_IMAGE
DEFAULT_NODES: Final = 5
#: The image's user; the folders its containers write belong to it (run as root) ...
CONTAINER_UID: Final = 10001
#: ... and these variables of .env make the containers run as the folder's owner instead (not root).
UID_ENV: Final = "OCEAN_SS_UID"
GID_ENV: Final = "OCEAN_SS_GID"
STACK_ENV: Final = "OCEAN_SS_STACK"
IMAGE_ENV: Final = "OCEAN_SS_IMAGE"
# Names of the stack's own, so that a variable of the same purpose in the caller's shell (which
# compose prefers to .env) cannot replace them by accident.
PASSWORD_ENV: Final = "OCEAN_SS_STACK_NODE_PASSWORD"
ADMIN_PASSWORD_ENV: Final = "OCEAN_SS_STACK_ADMIN_PASSWORD"
PROVIDER_KEY_ENV: Final = "OCEAN_SS_STACK_PROVIDER_KEY"
#: The deploy container's key (anvil's account 0): from the environment, never on a command line.
DEPLOYER_KEY_ENV: Final = "OCEAN_SS_DEPLOYER_KEY"
HEALTH_URL_ENV: Final = "OCEAN_SS_HEALTH_URL"

# Inside the containers: every service on its usual port, addressed by name on the network `cluster`.
CHAIN_PORT: Final = 8545
RPC_PORT: Final = 8545
PROVIDER_PORT: Final = 8030
AQUARIUS_PORT: Final = 5000
FILES_PORT: Final = 8000
NODE_HTTP_PORT: Final = cluster_init.DEFAULT_HTTP_PORT
NODE_CLUSTER_PORT: Final = cluster_init.DEFAULT_CLUSTER_PORT
CHAIN_URL: Final = f"http://chain:{CHAIN_PORT}"
AQUARIUS_URL: Final = f"http://aquarius:{AQUARIUS_PORT}"
FILES_URL: Final = f"http://files:{FILES_PORT}"
PROVIDER_URL: Final = f"http://provider:{PROVIDER_PORT}"
RPC_URL: Final = f"http://rpc:{RPC_PORT}"
ANVIL: Final = "/usr/local/bin/anvil"
#: anvil dumps its state this often (s) besides at exit, so a killed chain container loses at most this.
STATE_INTERVAL: Final = 2
LOOPBACK: Final = "127.0.0.1"
#: The services published on 127.0.0.1 besides the key servers.
SERVICES: Final = ("chain", "rpc", "provider", "aquarius", "files")
#: Characters that would break .env, a volume spec or compose's interpolation in OUT's path.
_UNSAFE_PATH: Final = re.compile(r"[:$\"'\s#\\]")
_PROJECT: Final = re.compile(r"[a-z0-9][a-z0-9_-]*")

_IMAGE_REF: Final = f"${{{IMAGE_ENV}:-{DEFAULT_IMAGE}}}"
_USER_REF: Final = f"${{{UID_ENV}:-{CONTAINER_UID}}}:${{{GID_ENV}:-{CONTAINER_UID}}}"
_STACK_REF: Final = f"${{{STACK_ENV}:?run ocean-secret-store stack init and use its .env}}"

#: Health of the services the image's check (a GET for a 2xx) cannot judge: anvil and the RPC face
#: answer JSON-RPC POSTs only, the file server has no route of its own (any HTTP answer will do).
#: Standard library only: ``python PROBE URL (ok | any | <JSON-RPC method>)``.
_PROBE: Final = (
    "import json,sys,urllib.request as r\n"
    "url,how=sys.argv[1:3]\n"
    "body=None if how in ('ok','any') else json.dumps({'jsonrpc':'2.0','id':1,'method':how,'params':[]}).encode()\n"
    "try:\n"
    " answer=r.urlopen(r.Request(url,body,{'Content-Type':'application/json'}),timeout=3)\n"
    " ok=body is None or 'result' in json.load(answer)\n"
    "except (OSError,ValueError) as exc:\n"
    " ok=how=='any' and hasattr(exc,'code')\n"
    "sys.exit(0 if ok else 1)\n"
)
#: Seconds between health checks: the first comes this long after a start. Each check is a process
#: in the container (about 80 ms of CPU), so ten services at 3 s cost about a quarter of a core.
HEALTH_INTERVAL: Final = 3


def node_name(index: int) -> str:
    """The compose service of key server ``index``."""
    return f"node{index}"


def node_host(index: int) -> str:
    """Key server ``index``'s name on the internal network (its peers' address book)."""
    return f"keyserver{index}"


def node_indices(nodes: int | Sequence[int]) -> list[int]:
    """The key servers of a stack: ``nodes`` of them (0..nodes-1), or these indices (after a replacement)."""
    return list(range(nodes)) if isinstance(nodes, int) else list(nodes)


def node_index(node: NodeEntry) -> int:
    """The index ``i`` of a stack's node in ``devnet.json`` (service ``node<i>``, host ``keyserver<i>``),
    from its config's folder ``cluster/node<i>``; not its position in ``nodes`` once one was replaced."""
    name = Path(node.config).parent.name
    if not (name.startswith("node") and name[4:].isdigit()):
        raise ConfigError(f"{node.config}: not a stack node's config (cluster/node<i>/node.toml)", key="nodes")
    return int(name[4:])


def published(nodes: int | Sequence[int]) -> tuple[str, ...]:
    """Every service whose port is published on 127.0.0.1, in the order of ``.env``."""
    return ("chain", *(node_name(i) for i in node_indices(nodes)), *SERVICES[1:])


def port_env(service: str) -> str:
    """The ``.env`` variable holding ``service``'s published port, e.g. ``OCEAN_SS_NODE0_PORT``."""
    return f"OCEAN_SS_{service.upper()}_PORT"


# -- compose.yaml ----------------------------------------------------------------------------------


def _health(test: list[str], start_period: int = 60) -> dict[str, Any]:
    return {"test": test, "interval": f"{HEALTH_INTERVAL}s", "timeout": "5s", "retries": 3,
            "start_period": f"{start_period}s"}


def _probe(url: str, how: str) -> dict[str, Any]:
    return _health(["CMD", "python", "-c", _PROBE, url, how])


def _image_check(url: str, start_period: int = 60) -> tuple[dict[str, str], dict[str, Any]]:
    """The image's own health check (``python -m ocean_secret_store.healthcheck``) on ``url``."""
    return {HEALTH_URL_ENV: url}, _health(["CMD", "python", "-m", "ocean_secret_store.healthcheck"], start_period)


def _ports(service: str, inside: int) -> list[str]:
    return [f"{LOOPBACK}:${{{port_env(service)}:?run ocean-secret-store stack init and use its .env}}:{inside}"]


def _secret(name: str, what: str) -> str:
    return f"${{{name}:?set {name} to {what} (stack init writes it into .env)}}"


_LOGGING: Final = {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}
_BOTH: Final[dict[str, dict[str, Any]]] = {"cluster": {}, "clients": {}}
_INTERNAL: Final[dict[str, dict[str, Any]]] = {"cluster": {}}


def _service(command: list[str], *, volumes: Sequence[str] = (), environment: Mapping[str, str] | None = None,
             healthcheck: Mapping[str, Any], ports: list[str] | None = None,
             depends_on: Mapping[str, str] | None = None, restart: str = "unless-stopped") -> dict[str, Any]:
    service: dict[str, Any] = {"image": _IMAGE_REF, "user": _USER_REF, "entrypoint": ["ocean-secret-store"],
                               "command": command}
    if environment:
        service["environment"] = dict(environment)
    if volumes:
        service["volumes"] = list(volumes)
    if ports:
        service["ports"] = ports
    service["networks"] = _BOTH if ports else _INTERNAL
    if depends_on:
        service["depends_on"] = {name: {"condition": condition} for name, condition in depends_on.items()}
    service.update(healthcheck=dict(healthcheck), restart=restart, logging=_LOGGING)
    return service


def _chain_service() -> dict[str, Any]:
    service = _service([
        "--host", "0.0.0.0", "--port", str(CHAIN_PORT), "--chain-id", str(DEFAULT_CHAIN_ID), "--accounts", "10",
        # As the devnet's chain (devnet._start_chain): the base fee fixed at 0, for Parity-era clients.
        "--block-base-fee-per-gas", "0", "--state", "/chain/state.json", "--state-interval", str(STATE_INTERVAL),
    ], volumes=[f"{_STACK_REF}/{CHAIN_DIR}:/chain"], ports=_ports("chain", CHAIN_PORT),
        healthcheck=_probe(f"http://{LOOPBACK}:{CHAIN_PORT}", "eth_chainId"))
    service["entrypoint"] = [ANVIL]
    service["init"] = True  # anvil as pid 1 would not get SIGTERM, and dumps its state only on a signal
    return service


def _node_service(index: int) -> dict[str, Any]:
    """cluster init's service of a node (cluster_init.node_service), on this stack's networks."""
    name = node_name(index)
    service = cluster_init.node_service(name, PASSWORD_ENV, f"{_STACK_REF}/{CLUSTER_DIR}/{name}", image=DEFAULT_IMAGE)
    health_env, health = _image_check(f"http://{LOOPBACK}:{NODE_HTTP_PORT}/ready", start_period=120)
    service["user"] = _USER_REF
    service["environment"].update(health_env)
    service["ports"] = _ports(name, NODE_HTTP_PORT)
    service["networks"] = {"cluster": {"aliases": [node_host(index)]}, "clients": {}}
    service.update(healthcheck=health, logging=_LOGGING)
    return service


def compose_document(nodes: int | Sequence[int]) -> dict[str, Any]:
    """The compose document of a stack of ``nodes`` key servers (a number, or the indices of their
    services ``node<i>``; no secret, no path: ``.env`` has them)."""
    indices = node_indices(nodes)
    if not indices:
        raise ConfigError("a stack needs at least one key server", key="nodes")
    aquarius_env, aquarius_health = _image_check(f"http://{LOOPBACK}:{AQUARIUS_PORT}/health")
    provider_env, provider_health = _image_check(f"http://{LOOPBACK}:{PROVIDER_PORT}/api/v1/brizo")
    deploy = _service(
        ["stack", "deploy", "--chain-url", CHAIN_URL, "--stack-dir", "/stack", "--timeout", "120"],
        environment={DEPLOYER_KEY_ENV: _secret(DEPLOYER_KEY_ENV, "the deployer's private key")},
        volumes=[f"{_STACK_REF}/{STACK_DIR}:/stack:ro"], healthcheck={"disable": True},
        depends_on={"chain": "service_healthy"}, restart="no")
    services: dict[str, Any] = {
        "chain": _chain_service(),
        "deploy": deploy,
        **{node_name(i): _node_service(i) for i in indices},
        "rpc": _service(["rpc", "--keystore", "/keystore", "--listen", f"0.0.0.0:{RPC_PORT}", "--chain-url", CHAIN_URL],
                        volumes=[f"{_STACK_REF}/{KEYSTORE_DIR}:/keystore:ro"], ports=_ports("rpc", RPC_PORT),
                        healthcheck=_probe(f"http://{LOOPBACK}:{RPC_PORT}", "eth_accounts")),
        "aquarius": _service(["aquarius", "--db", "/data/metadata.sqlite", "--listen", f"0.0.0.0:{AQUARIUS_PORT}"],
                             environment=aquarius_env, volumes=[f"{_STACK_REF}/{METADATA_DIR}:/data"],
                             ports=_ports("aquarius", AQUARIUS_PORT), healthcheck=aquarius_health),
        "files": _service(["files", "--dir", "/files", "--listen", f"0.0.0.0:{FILES_PORT}"],
                          volumes=[f"{_STACK_REF}/{FILES_DIR}:/files:ro"], ports=_ports("files", FILES_PORT),
                          healthcheck=_probe(f"http://{LOOPBACK}:{FILES_PORT}/", "any")),
        "provider": _service(
            ["provider", "--config", f"/stack/{PROVIDER_CONFIG}"],
            environment={PROVIDER_KEY_ENV: _secret(PROVIDER_KEY_ENV, "the provider's private key"), **provider_env},
            volumes=[f"{_STACK_REF}/{STACK_DIR}:/stack:ro"], ports=_ports("provider", PROVIDER_PORT),
            healthcheck=provider_health,
            depends_on={"deploy": "service_completed_successfully", "aquarius": "service_healthy"}),
    }
    # `cluster` carries every connection between the containers and reaches nothing else; `clients`
    # exists only to publish ports on 127.0.0.1 (an internal network cannot publish).
    return {"services": services, "networks": {"cluster": {"internal": True}, "clients": {}}}


def render_compose(nodes: int | Sequence[int] = DEFAULT_NODES) -> str:
    """``compose.yaml`` of a stack of ``nodes`` key servers (docker/compose.yaml is this for 5)."""
    return cluster_init.to_yaml(compose_document(nodes), comment=(
        f"The whole ocean-secret-store devnet in Docker, {len(node_indices(nodes))} key servers "
        "(`ocean-secret-store stack init`):\n"
        "chain (anvil), contract deployment (one-shot), the key servers, the JSON-RPC face, the provider\n"
        "with its events handler, Aquarius and the file server, each in its own container.\n"
        "Generated; do not edit. `ocean-secret-store stack init --out DIR [--nodes N]` writes it into DIR\n"
        "with DIR/.env (published ports, image, dev keys and passwords; mode 0600) and DIR/devnet.json\n"
        "(the URLs for host clients, as `devnet up` writes them). Then:\n"
        "  docker-compose --env-file DIR/.env -f DIR/compose.yaml -p NAME up -d\n"
        "Containers talk only on the internal network `cluster`, where key server i answers to\n"
        "keyserver<i> (not to node<i>, which resolves on every network of the container); `clients`\n"
        "publishes the ports on 127.0.0.1. Every state is a folder of DIR: `down -v` keeps it."))


# -- the plan of the deployment (stack/stack.json) -----------------------------------------------


@dataclass(frozen=True)
class DeploymentPlan:
    """``stack/stack.json``: who deploys the contracts, on which chain, and where they land."""

    chain_id: int
    deployer: str
    minter: str
    contracts: Mapping[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"chain_id": self.chain_id, "deployer": self.deployer, "minter": self.minter,
                "contracts": dict(self.contracts)}


def read_plan(stack_dir: Path) -> DeploymentPlan:
    """The deployment plan in ``stack_dir`` (``stack/stack.json`` of a stack folder).

    :raises ConfigError: it is missing or malformed.
    """
    path = stack_dir / PLAN_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return DeploymentPlan(chain_id=int(data["chain_id"]), deployer=str(data["deployer"]),
                              minter=str(data["minter"]), contracts=dict(data["contracts"]))
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: --stack-dir must be a stack's {STACK_DIR}/ folder",
                          key="stack_dir") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a stack's deployment plan ({type(exc).__name__}: {exc})",
                          key="stack_dir") from None


# -- stack init ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StackPlan:
    """What :func:`init_stack` wrote into ``out``."""

    out: Path
    project: str
    ports: Mapping[str, int]
    state: DevnetState
    cluster: ClusterPlan

    @property
    def compose_file(self) -> Path:
        return self.out / COMPOSE_FILE

    @property
    def env_file(self) -> Path:
        return self.out / ENV_FILE

    def compose_command(self, *args: str) -> list[str]:
        """``docker-compose --env-file OUT/.env -f OUT/compose.yaml -p PROJECT ARGS``."""
        return ["docker-compose", "--env-file", str(self.env_file), "-f", str(self.compose_file), "-p", self.project,
                *args]

    def up_command(self) -> list[str]:
        return self.compose_command("up", "-d")


def _choose_ports(nodes: int, ports: Mapping[str, int] | None) -> dict[str, int]:
    names = published(nodes)
    given = dict(ports or {})
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ConfigError(f"no published service named {', '.join(unknown)}: the services are {', '.join(names)}",
                          key="ports")
    for name, port in given.items():
        if not 1 <= port <= 65535:
            raise ConfigError(f"the port of {name} must be in 1..65535, got {port}", key="ports")
    free = iter(free_ports(len(names)))
    chosen = {name: given[name] if name in given else next(free) for name in names}
    counts: dict[int, list[str]] = {}
    for name, port in chosen.items():
        counts.setdefault(port, []).append(name)
    clashes = [names_ for names_ in counts.values() if len(names_) > 1]
    if clashes:
        raise ConfigError(f"{' and '.join(clashes[0])} would be published on the same port", key="ports")
    return chosen


def _project_name(out: Path, project: str | None) -> str:
    if project is None:
        # compose's own default: the folder's name, lower case, letters and digits only.
        return re.sub(r"[^a-z0-9]", "", out.name.lower()) or "oceansecretstore"
    if not _PROJECT.fullmatch(project):
        raise ConfigError(f"--project {project!r}: lower-case letters, digits, '_' and '-', starting with a "
                          "letter or digit", key="project")
    return project


def _accounts() -> dict[str, AccountKey]:
    """The devnet's roles on anvil's default accounts 0..5 (devnet.ROLES), as ``devnet up`` has them."""
    keys = dev_accounts(len(ROLES))
    return {role: AccountKey(address=checksum_address(address_of(Point.generator_mul(int(key, 16)))),
                             private_key=key) for role, key in zip(ROLES, keys, strict=True)}


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text, encoding="utf-8")
    os.chmod(path, mode)


def _container_node_urls(state: DevnetState) -> list[str]:
    """The key servers' URLs on the internal network, in the order of ``devnet.json``'s ``nodes``."""
    return [f"http://{node_host(node_index(node))}:{NODE_HTTP_PORT}" for node in state.nodes]


def _provider_config(state: DevnetState, threshold: int) -> str:
    """The provider container's INI: the other containers by name, its key in an environment variable."""
    nodes = _container_node_urls(state)
    config = configparser.ConfigParser(interpolation=None)
    config.optionxform = str  # type: ignore[assignment,method-assign] # keys keep their case
    config["keeper-contracts"] = {"keeper.url": CHAIN_URL, "contracts.file": CONTRACTS_FILE,
                                  "secret_store.url": nodes[0]}
    config["secret-store"] = {"enabled": "true", "threshold": str(threshold), "cluster_urls": ", ".join(nodes)}
    config["resources"] = {"metadata.store": AQUARIUS_URL, "aquarius.url": AQUARIUS_URL,
                           "provider.address": state.provider_address}
    # The file server's container is on a private address: the one origin the provider fetches from there.
    config["provider"] = {"backend": state.provider_backend, "account.key_env": PROVIDER_KEY_ENV,
                          "listen": f"0.0.0.0:{PROVIDER_PORT}", "allowed_origins": FILES_URL}
    text = io.StringIO()
    config.write(text)
    return ("; The provider container of an ocean-secret-store stack (`stack init`): no secret here, its key is\n"
            f"; in ${PROVIDER_KEY_ENV} (the stack's .env).\n" + text.getvalue())


def _env_text(values: Mapping[str, str]) -> str:
    lines = [f"# {DEV_ONLY}.", "# docker-compose reads this file (ports, image, owner, dev passwords and keys)."]
    return "\n".join([*lines, *(f"{name}={value}" for name, value in values.items())]) + "\n"


def _chown(paths: Sequence[Path], uid: int, gid: int) -> None:
    for top in paths:
        os.chown(top, uid, gid)
        for root, dirs, files in os.walk(top):
            for name in (*dirs, *files):
                os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def init_stack(out: Path, *, nodes: int = DEFAULT_NODES, threshold_max: int | None = None,
               image: str = DEFAULT_IMAGE, tls: bool = False, ports: Mapping[str, int] | None = None,
               project: str | None = None, say: Callable[[str], None] = lambda _: None) -> StackPlan:
    """Write a compose stack of ``nodes`` key servers into the new (or empty) folder ``out``.

    ``threshold_max`` (default ``nodes - 1``): the highest key threshold served; a node is healthy
    once connected to that many peers. ``ports``: the published port of a service (``chain``,
    ``node0``, ..., ``rpc``, ``provider``, ``aquarius``, ``files``), the others free ports of
    127.0.0.1 (free now: taken by another program before ``up``, ``up`` fails). ``project``: the
    compose project name ``.env`` gives (default: the folder's name, as compose would).

    :raises ConfigError: a bad setting, a folder that is not new, or ``tls`` (not supported yet).
    """
    if tls:
        raise ConfigError("stack init --tls is not supported yet: the stack speaks plain HTTP (use `devnet up "
                          "--tls`, or `cluster init --tls` for key servers alone)", key="tls")
    out = out.resolve()
    if _UNSAFE_PATH.search(str(out)):
        raise ConfigError(f"{out}: the stack folder's path must not contain whitespace, quotes, ':', '$', '#' or "
                          "'\\' (compose reads it from .env into volume specs)", key="out")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty folder: choose a new one", key="out")
    if nodes < 1:
        raise ConfigError("a stack needs at least one key server", key="nodes")
    threshold_max = nodes - 1 if threshold_max is None else threshold_max
    if not 0 <= threshold_max < nodes:
        raise ConfigError(f"--threshold-max must be in 0..{nodes - 1} (t+1 of the {nodes} nodes serve a key)",
                          key="threshold_max")
    chosen = _choose_ports(nodes, ports)
    name = _project_name(out, project)
    with cluster_init.new_folder(out):
        return _write_stack(out, nodes, threshold_max, image, chosen, name, say)


def _write_stack(out: Path, nodes: int, threshold_max: int, image: str, ports: Mapping[str, int], project: str,
                 say: Callable[[str], None]) -> StackPlan:
    accounts = _accounts()
    contracts: dict[str, str] = dict(planned_addresses(accounts["deployer"].address))
    secrets_ = {PASSWORD_ENV: secrets.token_urlsafe(18), ADMIN_PASSWORD_ENV: secrets.token_urlsafe(18)}
    say(f"cluster init: {nodes} key servers as keyserver0..{nodes - 1} in {out / CLUSTER_DIR}")
    hosts = [cluster_init.HostSpec(node_host(i), NODE_HTTP_PORT, NODE_CLUSTER_PORT) for i in range(nodes)]
    cluster = cluster_init.init_cluster(
        out / CLUSTER_DIR, hosts, threshold_max, password_env=PASSWORD_ENV, admin_password_env=ADMIN_PASSWORD_ENV,
        acl={"kind": "contract", "chain_url": CHAIN_URL, "contract": contracts["AccessSecretStoreCondition"]},
        # Parity's light keystores, as the devnet's: five nodes unlock at once on a start.
        kdf="pbkdf2", image=image, environ=secrets_, admin_secret=int(accounts["admin"].private_key, 16), say=say)
    for folder in (FILES_DIR, CHAIN_DIR, METADATA_DIR, STACK_DIR):
        (out / folder).mkdir(mode=0o755)
        os.chmod(out / folder, 0o755)  # whatever the umask: the containers' user reads them

    def url(service: str) -> str:
        return f"http://{LOOPBACK}:{ports[service]}"

    state = DevnetState(
        state_dir=out, acl="contract",
        nodes=[NodeEntry(public=to_hex(n.public.to_bytes()), address=checksum_address(address_of(n.public)),
                         http_url=url(node_name(n.index)), pid=None, config=str(n.config),
                         data_dir=str(n.folder / "data"), log="") for n in cluster.nodes],
        chain_url=url("chain"), chain_id=DEFAULT_CHAIN_ID, anvil_pid=None, anvil_log="", contracts=contracts,
        template_id=to_hex(ESCROW_ACCESS_TEMPLATE_ID), accounts=accounts,
        rpc_accounts=write_keystores(out, accounts), metadata_store=str(out / METADATA_DIR / "metadata.sqlite"),
        provider_address=accounts["provider"].address, rpc_url=url("rpc"), provider_url=url("provider"),
        secret_store_url=url(node_name(0)), threshold_max=threshold_max, files_dir=str(out / FILES_DIR),
        files_url=url("files"), aquarius_url=url("aquarius"),
    )
    write_private(out / CONTRACTS_FILE, json.dumps({"contracts": contracts}, indent=2))
    state.keeper_artifacts = str(write_artifacts(contracts, out / KEEPER_ARTIFACTS_DIR, network=KEEPER_NETWORK))
    write_ocean_config(state)
    write_squid_config(state)
    state.extra["stack"] = {
        "project": project, "compose_file": str(out / COMPOSE_FILE), "env_file": str(out / ENV_FILE),
        "cluster": str(cluster.out), "image": image, "ports": dict(ports),
        # The same services as the containers see them (e.g. file URLs for the provider to fetch).
        "container_urls": {"chain": CHAIN_URL, "rpc": RPC_URL, "provider": PROVIDER_URL, "aquarius": AQUARIUS_URL,
                           "files": FILES_URL,
                           "nodes": _container_node_urls(state)},
    }
    state.save()

    stack_dir = out / STACK_DIR
    threshold = min(encryptor_threshold(nodes), threshold_max)
    _write(stack_dir / CONTRACTS_FILE, json.dumps({"contracts": contracts}, indent=2) + "\n")
    _write(stack_dir / PROVIDER_CONFIG, _provider_config(state, threshold))
    load_config(stack_dir / PROVIDER_CONFIG, environ={})  # the provider's own parser: fail here, not at `up`
    plan = DeploymentPlan(chain_id=DEFAULT_CHAIN_ID, deployer=accounts["deployer"].address,
                          minter=accounts["minter"].address, contracts=contracts)
    _write(stack_dir / PLAN_FILE, json.dumps(plan.to_json(), indent=2) + "\n")
    _write(out / COMPOSE_FILE, render_compose(nodes))

    root = os.geteuid() == 0
    uid, gid = (CONTAINER_UID, CONTAINER_UID) if root else (os.getuid(), os.getgid())
    env = {"COMPOSE_PROJECT_NAME": project, STACK_ENV: str(out), IMAGE_ENV: image, UID_ENV: str(uid),
           GID_ENV: str(gid), **{port_env(service): str(port) for service, port in ports.items()},
           **secrets_, DEPLOYER_KEY_ENV: accounts["deployer"].private_key,
           PROVIDER_KEY_ENV: accounts["provider"].private_key}
    write_private(out / ENV_FILE, _env_text(env))
    if root:  # the containers' user must own what they write, and read their private keystores
        _chown([*(n.folder for n in cluster.nodes), out / KEYSTORE_DIR, out / CHAIN_DIR, out / METADATA_DIR],
               CONTAINER_UID, CONTAINER_UID)
    say(f"stack: {COMPOSE_FILE}, {ENV_FILE} and devnet.json in {out}")
    return StackPlan(out=out, project=project, ports=dict(ports), state=state, cluster=cluster)


# -- stack deploy ----------------------------------------------------------------------------------

#: keccak256("isTemplateIdApproved(bytes32)")[:4]: the last step of a deployment approves both templates.
_IS_TEMPLATE_APPROVED: Final = keccak256(b"isTemplateIdApproved(bytes32)")[:4]


def _wait_for_chain(chain_url: str, chain_id: int, timeout: float, say: Callable[[str], None]) -> None:
    deadline = time.monotonic() + timeout
    said = False
    while True:
        try:
            answer = rpc_call(chain_url, "eth_chainId", timeout=2.0)
        except (OSError, ValueError):
            answer = None
        if answer is not None:
            if (found := int(str(answer), 16)) != chain_id:
                raise ChainError(f"{chain_url} is chain {found}, the stack's plan is for chain {chain_id}")
            return
        if time.monotonic() > deadline:
            raise ChainError(f"no chain answered at {chain_url} within {timeout:.0f} s")
        if not said:
            say(f"waiting for the chain at {chain_url}")
            said = True
        time.sleep(0.5)


def _templates_approved(chain_url: str, manager: str) -> bool:
    for template_id in (ESCROW_ACCESS_TEMPLATE_ID, ESCROW_COMPUTE_TEMPLATE_ID):
        data = to_hex(_IS_TEMPLATE_APPROVED + template_id)
        answer = str(rpc_call(chain_url, "eth_call", [{"to": manager, "data": data}, "latest"], timeout=10.0))
        if int(answer, 16) != 1:
            return False
    return True


def deploy_stack(chain_url: str, stack_dir: Path, deployer: LocalAccount, *, timeout: float = 120.0,
                 say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Deploy the keeper contracts where the stack's plan says (``stack_dir/stack.json``), or find them
    there: wait for the chain, then deploy if no contract of the plan has code, do nothing if every
    one has and the setup finished; anything between is a partial deployment, an error.

    :raises ConfigError: no plan, or ``deployer`` is not the plan's deployer.
    :raises ChainError: no chain within ``timeout``, another chain, a partial deployment, or a
        deployer that has sent transactions on this chain already (its contracts would land elsewhere).
    """
    plan = read_plan(stack_dir)
    if deployer.address != plan.deployer:
        raise ConfigError(f"the deployer key is not the key of the plan's deployer {plan.deployer}", key="deployer")
    if planned_addresses(deployer.address) != dict(plan.contracts):
        raise ConfigError(f"{stack_dir / PLAN_FILE}: the contracts are not where {plan.deployer}'s first "
                          "transactions put them", key="contracts")
    started = time.monotonic()
    _wait_for_chain(chain_url, plan.chain_id, timeout, say)
    try:
        present = [name for name, address in plan.contracts.items()
                   if str(rpc_call(chain_url, "eth_getCode", [address, "latest"], timeout=10.0)) not in ("0x", "")]
        complete = len(present) == len(plan.contracts) and _templates_approved(
            chain_url, plan.contracts["TemplateStoreManager"])
        nonce = int(str(rpc_call(chain_url, "eth_getTransactionCount", [plan.deployer, "pending"], timeout=10.0)), 16)
    except (OSError, ValueError) as exc:
        raise ChainError(f"cannot read the contracts at {chain_url}: {exc}") from None
    summary = {"chain_url": chain_url, "contracts": dict(plan.contracts)}
    if complete:
        say(f"the keeper contracts are deployed already ({len(present)} at their planned addresses)")
        return {**summary, "deployed": False, "seconds": round(time.monotonic() - started, 3)}
    if present or nonce != 0:
        raise ChainError(
            f"the chain at {chain_url} holds a partial or foreign deployment ({len(present)} of {len(plan.contracts)} "
            f"planned contracts have code, the deployer has sent {nonce} transaction(s)): the stack needs a fresh "
            "chain; stop it and remove its chain state (chain/state.json in the stack folder) to start again")
    say(f"deploying keeper-contracts 0.13.2 from {plan.deployer}")
    deployment = deploy_keeper_contracts(chain_url, deployer, minter=plan.minter)
    if dict(deployment.addresses) != dict(plan.contracts):  # deploy_keeper_contracts checks each already
        raise ChainError("the contracts were not deployed at their planned addresses")
    say(f"deployed {len(deployment.addresses)} contracts in {deployment.seconds:.1f} s")
    return {**summary, "deployed": True, "seconds": round(time.monotonic() - started, 3)}


# -- stack status ----------------------------------------------------------------------------------


def _answers(url: str, method: str | None = None) -> bool:
    import requests  # noqa: PLC0415 -- only the status command probes

    try:
        if method is None:
            response = requests.get(url, timeout=2.0)
            return response.status_code < 500
        response = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": []}, timeout=2.0)
        return response.status_code == 200 and "result" in response.json()
    except (requests.RequestException, ValueError):
        return False


def stack_status(out: Path) -> dict[str, Any]:
    """The health of a stack as its host clients see it, through the published ports: each key
    server's readiness (``GET /ready``) and whether each service answers. (``devnet status`` judges
    a devnet by its processes, which a stack's ``devnet.json`` does not name.)"""
    state = DevnetState.require(out)
    nodes: list[dict[str, Any]] = []
    for i, node in enumerate(state.nodes):
        ready = readiness(node.http_url, timeout=2.0)
        nodes.append({"node": i, "http_url": node.http_url, "answers": ready is not None,
                      "ready": bool(ready and ready.get("ready")),
                      "usable_peers": ready.get("usable_peers") if ready else None})
    services: dict[str, dict[str, Any]] = {
        "chain": {"url": state.chain_url, "answers": _answers(state.chain_url, "eth_chainId")},
        "rpc": {"url": state.rpc_url, "answers": bool(state.rpc_url) and _answers(str(state.rpc_url), "eth_accounts")},
        "provider": {"url": state.provider_url,
                     "answers": bool(state.provider_url) and _answers(f"{state.provider_url}/api/v1/brizo")},
        "aquarius": {"url": state.aquarius_url,
                     "answers": bool(state.aquarius_url) and _answers(f"{state.aquarius_url}/health")},
        "files": {"url": state.files_url, "answers": bool(state.files_url) and _answers(f"{state.files_url}/")},
    }
    return {"state_dir": str(state.state_dir), "nodes": nodes, "services": services,
            "healthy": all(n["ready"] for n in nodes) and all(s["answers"] for s in services.values())}


# -- stack replace-node ----------------------------------------------------------------------------

#: The bound of one docker or docker-compose command (a container's start or stop included).
DOCKER_TIMEOUT: Final = 120.0


class StackError(DevnetError):
    """A docker or docker-compose command of a stack operation failed, or the stack is not as it needs."""


def compose_program() -> list[str]:
    """``docker-compose`` (v1, Debian's) when installed, else the v2 plugin ``docker compose``."""
    return ["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]


def run_docker(args: Sequence[str], timeout: float = DOCKER_TIMEOUT, cwd: Path | None = None,
               env: Mapping[str, str] | None = None) -> str:
    """Run a docker or docker-compose command (``env`` added to this process's environment); its
    stdout. A failure, a missing program or no end within ``timeout`` raises StackError with the
    command and the tail of its output."""
    environ = None if env is None else {**os.environ, **env}
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, cwd=cwd, env=environ,
                              check=False)
    except subprocess.TimeoutExpired:
        raise StackError(f"{' '.join(args)}: no answer within {timeout:.0f} s") from None
    except FileNotFoundError:
        raise StackError(f"{args[0]}: not installed") from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise StackError(f"{' '.join(args)} exited with {done.returncode}: {tail}")
    return done.stdout


@dataclass(frozen=True)
class _Project:
    """The compose project ``name`` of the stack folder ``out``: the folder is its project directory,
    where compose reads ``.env``."""

    out: Path
    name: str

    def compose(self, *args: str) -> str:
        return run_docker([*compose_program(), "-f", str(self.out / COMPOSE_FILE), "-p", self.name, *args],
                          cwd=self.out)

    def running(self) -> dict[str, str]:
        """The running containers of the project by service (``docker ps`` by compose's labels: it
        answers in milliseconds where ``docker-compose ps`` takes half a second)."""
        listed = run_docker(["docker", "ps", "--filter", f"label=com.docker.compose.project={self.name}",
                       "--format", '{{.Label "com.docker.compose.service"}} {{.ID}}'])
        return dict(line.split(" ", 1) for line in listed.splitlines() if " " in line)

    def reload(self, services: Sequence[str]) -> None:
        """SIGHUP each running container of ``services``: a node rereads its ``[cluster]``, the provider
        its key server list (a stopped one reads them when it starts)."""
        running = self.running()
        for service in services:
            if (container := running.get(service)) is None:
                continue
            try:
                run_docker(["docker", "kill", "-s", "HUP", container])
            except StackError:
                if service in self.running():  # not just stopped meanwhile
                    raise

    def remove(self, service: str) -> None:
        """Stop and remove ``service``'s containers (while compose.yaml still has the service)."""
        self.compose("rm", "--stop", "--force", service)


def _stack_info(state: DevnetState) -> dict[str, Any]:
    info = state.extra.get("stack")
    if not isinstance(info, dict):
        raise ConfigError(f"{state.path} is not a stack's (no `stack` entry): `stack init` makes one; for a "
                          "devnet of processes use `devnet replace-node`", key="stack_dir")
    return info


def env_values(path: Path) -> dict[str, str]:
    """The variables of a stack's ``.env``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def update_env(path: Path, changes: Mapping[str, str | None]) -> None:
    """Set (a value) or drop (None) variables of a stack's ``.env``; the other lines stay as they are."""
    lines, done = [], set()
    for line in path.read_text(encoding="utf-8").splitlines():
        name, sep, _ = line.partition("=")
        if sep and not line.startswith("#") and name in changes:
            done.add(name)
            if changes[name] is None:
                continue
            line = f"{name}={changes[name]}"
        lines.append(line)
    lines += [f"{name}={value}" for name, value in changes.items() if value is not None and name not in done]
    write_private(path, "\n".join(lines) + "\n")


def _rewrite(path: Path, text: str) -> None:
    """Write ``text`` into the existing file ``path`` in place: it keeps its owner and mode."""
    with open(path, "r+", encoding="utf-8") as f:
        f.write(text)
        f.truncate()


def _next_index(out: Path, state: DevnetState) -> int:
    """The first ``k`` free for a new node: no node of ``devnet.json``, no folder ``cluster/node<k>``
    (a replaced node's folder stays)."""
    taken = {node_index(node) for node in state.nodes}
    k = 0
    while k in taken or (out / CLUSTER_DIR / node_name(k)).exists():
        k += 1
    return k


def _free_port(taken: set[int]) -> int:
    for _ in range(50):
        if (port := free_ports(1)[0]) not in taken:
            return port
    raise StackError("no free port of 127.0.0.1 for the new key server")


def _set_peer(project: _Project, nodes: Sequence[NodeEntry], public: str, address: str | None) -> None:
    """List ``public`` at ``address`` (None: unlist it) in every ``[cluster]`` of ``nodes``; SIGHUP them."""
    for node in nodes:
        cluster_init.set_peer(Path(node.config), public, address)
    project.reload([node_name(node_index(node)) for node in nodes])


def _write_host_files(state: DevnetState, added: cluster_init.NodePlan) -> None:
    """After the node list changed (``added`` came): devnet.json, ocean.ini, config.ini, the provider's
    provider.ini (read when the provider starts) and cluster.json follow it."""
    out = state.state_dir
    info = _stack_info(state)
    info["container_urls"]["nodes"] = _container_node_urls(state)
    state.secret_store_url = state.nodes[0].http_url
    write_ocean_config(state)
    if state.squid_config:
        write_squid_config(state)
    threshold = min(encryptor_threshold(len(state.nodes)), state.threshold_max or len(state.nodes) - 1)
    _rewrite(out / STACK_DIR / PROVIDER_CONFIG, _provider_config(state, threshold))
    cluster_file = out / CLUSTER_DIR / "cluster.json"
    if cluster_file.exists():
        cluster = json.loads(cluster_file.read_text(encoding="utf-8"))
        by_name = {entry["name"]: entry for entry in cluster["nodes"]}
        by_name[added.name] = added.to_json(out / CLUSTER_DIR, "http")
        cluster["nodes"] = [by_name[node_name(node_index(node))] for node in state.nodes]
        cluster["secret_store_urls"] = [entry["http_url"] for entry in cluster["nodes"]]
        cluster["secret_store_url"] = cluster["secret_store_urls"][0]
        _rewrite(cluster_file, json.dumps(cluster, indent=2) + "\n")
    state.save()


def _new_node(state: DevnetState, like: Path, env: Mapping[str, str],
              say: Callable[[str], None]) -> tuple[cluster_init.NodePlan, NodeEntry, int]:
    """The folder ``cluster/node<k>`` of a new node (the first free k) with a config like ``like``'s, its
    ``devnet.json`` entry and its published port (free, and no port of ``.env``)."""
    out = state.state_dir
    k = _next_index(out, state)
    port = _free_port({int(value) for name, value in env.items() if name.endswith("_PORT") and value.isdigit()})
    say(f"{node_name(k)}: a new key server, {node_host(k)} on the internal network, {LOOPBACK}:{port} for the host")
    spec = cluster_init.HostSpec(node_host(k), NODE_HTTP_PORT, NODE_CLUSTER_PORT)
    plan = cluster_init.add_node(out / CLUSTER_DIR, k, spec, like, password_env=PASSWORD_ENV, environ=env,
                                 image=str(_stack_info(state).get("image", DEFAULT_IMAGE)))
    if os.geteuid() == 0:  # as init_stack: the containers' user owns the node folders
        _chown([plan.folder], int(env.get(UID_ENV, CONTAINER_UID)), int(env.get(GID_ENV, CONTAINER_UID)))
    entry = NodeEntry(public=to_hex(plan.public.to_bytes()), address=checksum_address(address_of(plan.public)),
                      http_url=f"http://{LOOPBACK}:{port}", pid=None, config=str(plan.config),
                      data_dir=str(plan.folder / "data"), log="")
    return plan, entry, port


def replace_node(out: Path, index: int, *, project: str | None = None, force: bool = False, timeout: float = 120.0,
                 on_progress: Callable[[dict[str, Any]], None] | None = None,
                 say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Replace key server ``index`` of ``devnet.json``'s ``nodes`` (running or dead) by a new
    container, in one servers-set change signed with ``accounts.admin``.

    The new node ``node<k>`` (the first free k) gets a folder ``cluster/node<k>`` as ``cluster init``
    makes them (a fresh key in a keystore with the stack's node password from ``.env``, a config
    like the others'), the host name ``keyserver<k>`` on the internal network and a free port of
    127.0.0.1 (``.env``). Every node lists it in its ``[cluster]`` (node.toml edited in place, the
    running containers sent SIGHUP), compose.yaml is rendered again with its service, compose
    starts it (``up -d --no-deps``), and once it is connected to every running node the change
    (servers set - node ``index`` + the new one) runs through another node. Then the old container
    is stopped and removed, every ``[cluster]`` unlists it (SIGHUP) and compose.yaml, ``.env``,
    ``devnet.json`` (the new node takes place ``index``), ``ocean.ini``, ``config.ini``,
    ``stack/provider.ini`` and ``cluster/cluster.json`` follow, and the provider rereads its key server
    list from provider.ini (SIGHUP). The old node's folder stays (its key and stale shares:
    remove it). ``project``: the compose project (default: ``.env``'s). ``force``: go on although
    some keys cannot keep t+1 shares.

    A refusal that changed nothing removes the new node again (container, folder, address books);
    a change that did not finish keeps it in the stack, to be resumed (the error says how).

    Returns ``index``, the new node's ``service``, ``public``, ``http_url`` and ``port``, the old
    node's ``replaced`` (service, public), the session's ``report`` and the ``seconds`` it all took.

    :raises ConfigError: not a stack, or no node ``index``.
    :raises StackError: a node that would stay does not answer, or a docker command failed.
    """
    started = time.monotonic()
    out = out.resolve()
    state = DevnetState.require(out)
    info = _stack_info(state)
    if not 0 <= index < len(state.nodes):
        raise ConfigError(f"no node {index}: the stack has nodes 0..{len(state.nodes) - 1}", key="index")
    admin_secret(state)  # refuse at once a stack without an administrator
    old = state.nodes[index]
    old_service = node_name(node_index(old))
    compose = _Project(out, project or str(info["project"]))
    live = [node for node in state.nodes if readiness(node.http_url, timeout=2.0) is not None]
    for i, node in enumerate(state.nodes):
        if node is not old and node not in live:
            raise StackError(f"node {i} ({node_name(node_index(node))}) does not answer at {node.http_url}: start "
                             f"it, or replace it first (every other node is in the new servers set)")
    master = next((node for node in live if node is not old), None)
    if master is None:
        raise StackError("no other key server runs the servers-set change: the stack's last node cannot be "
                         "replaced")

    env_file = out / ENV_FILE
    plan, newcomer, port = _new_node(state, Path(master.config), env_values(env_file), say)
    service, spec = plan.name, plan.spec
    indices = sorted(node_index(node) for node in state.nodes)  # compose.yaml lists the services in order

    def undo() -> None:  # nothing moved: the new node goes away again
        with contextlib.suppress(StackError):
            compose.remove(service)
        _set_peer(compose, state.nodes, newcomer.public, None)
        _rewrite(out / COMPOSE_FILE, render_compose(indices))
        update_env(env_file, {port_env(service): None})
        shutil.rmtree(plan.folder, ignore_errors=True)  # it holds the node key

    def keep() -> str:  # the session may have moved keys to it: it stays, to be resumed
        state.nodes.append(newcomer)
        info["ports"][service] = port
        _write_host_files(state, plan)
        return f"{service} stays in the stack as node {len(state.nodes) - 1} of devnet.json"

    try:
        update_env(env_file, {port_env(service): str(port)})
        _rewrite(out / COMPOSE_FILE, render_compose(sorted([*indices, plan.index])))
        say(f"listing {service} in every node's [cluster] (SIGHUP) and starting it")
        _set_peer(compose, state.nodes, newcomer.public, str(spec.cluster_address))
        compose.compose("up", "-d", "--no-deps", service)
        wait_for_mesh([newcomer.http_url], len(live), timeout)
    except BaseException:
        undo()
        raise
    say(f"{service} ({newcomer.public[:18]}..) is connected; servers-set change without {old_service} through "
        f"{master.http_url}")
    report = admit_through(state, master, newcomer, [old], force, on_progress, undo=undo, keep=keep)

    state.nodes[index] = newcomer
    info["ports"][service] = port
    info["ports"].pop(old_service, None)
    _write_host_files(state, plan)
    say(f"stopping and removing {old_service}; unlisting it from every [cluster] (SIGHUP)")
    compose.remove(old_service)
    _set_peer(compose, state.nodes, old.public, None)
    _rewrite(out / COMPOSE_FILE, render_compose(sorted(node_index(node) for node in state.nodes)))
    update_env(env_file, {port_env(old_service): None})
    say("the provider rereads its key server list (SIGHUP)")
    compose.reload(["provider"])
    return {"index": index, "service": service, "public": newcomer.public, "http_url": newcomer.http_url,
            "port": port, "replaced": {"service": old_service, "public": old.public}, "report": report,
            "seconds": round(time.monotonic() - started, 1)}
