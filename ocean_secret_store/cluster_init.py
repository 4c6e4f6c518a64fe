"""``cluster init``: everything an operator copies to N machines to run N key servers there.

For each node: a secp256k1 node key in an Ethereum v3 keystore (its password comes from an
environment variable the operator names, and is never written anywhere), a TOML config whose
``[cluster]`` address book lists every node at its host, and a compose file. Besides: the
administrator's key (its own keystore; its public key is every node's ``admin_public``), with
``tls`` a certificate authority and one certificate per node naming its host and its container,
``cluster.json`` (no secrets: what clients need) and ``README.txt`` (which folder goes where).

Layout of ``out``::

    README.txt  cluster.json  compose.yaml (all nodes on one Docker host; only for named hosts)
    admin/keystore/UTC--...      the administrator key: keep it off the key servers
    ca/ca.pem  ca/ca.key         with tls: the CA (ca.key stays with the operator)
    node<i>/node.toml  node<i>/keystore/UTC--...  node<i>/tls/  node<i>/compose.yaml  node<i>/data/
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import re
import shutil
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from .client.keystore import PARITY_PBKDF2_ROUNDS, write_keystore
from .crypto.curve import N, Point, random_scalar
from .crypto.hashes import address_of, checksum_address
from .exceptions import ConfigError
from .localca import issue_certificate, make_local_ca
from .node.config import NodeConfig, dump_config
from .protocol.addresses import HostPort, parse_host_port
from .protocol.hexcodec import to_hex
from .serving import TlsFiles

__all__ = [
    "ClusterPlan", "HostSpec", "NodePlan", "add_node", "compose_for_all", "compose_for_node", "init_cluster",
    "new_folder", "node_service", "parse_hosts", "set_peer", "to_yaml",
]

#: Parity's default ports: the HTTP API (``--secretstore-http-port``) and node-to-node (``--secretstore-port``).
DEFAULT_HTTP_PORT: Final = 8082
DEFAULT_CLUSTER_PORT: Final = 8083
DEFAULT_PASSWORD_ENV: Final = "OCEAN_SS_NODE_PASSWORD"
DEFAULT_ADMIN_PASSWORD_ENV: Final = "OCEAN_SS_ADMIN_PASSWORD"
#: A cluster's certificates outlive a devnet's week; renewing means another ``issue_certificate``.
DEFAULT_TLS_DAYS: Final = 365
#: eth-account's scrypt cost (about 0.7 s per unlock, paid once at a node's start).
SCRYPT_N: Final = 2**18
#: Where a node's folder is mounted in its container (the config's relative paths resolve there).
CONTAINER_DIR: Final = "/node"
DEFAULT_IMAGE: Final = "ocean-secret-store:latest"

_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PORTS_SUFFIX: Final = re.compile(r"(?P<host>.+):(?P<http>\d+):(?P<cluster>\d+)")
_INDEX: Final = "{i}"

Kdf = Literal["scrypt", "pbkdf2"]


@dataclass(frozen=True)
class HostSpec:
    """Where one node runs: its host (DNS name or IP address, IPv6 without brackets) and its two ports."""

    host: str
    http_port: int
    cluster_port: int

    @property
    def is_name(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return True
        return False

    @property
    def cluster_address(self) -> HostPort:
        return HostPort(self.host, self.cluster_port)

    @property
    def http_address(self) -> HostPort:
        return HostPort(self.host, self.http_port)


@dataclass(frozen=True)
class NodePlan:
    """One generated node: what ``cluster.json`` and the README say about it (no secrets)."""

    index: int
    spec: HostSpec
    public: Point
    folder: Path
    config: Path
    keystore: Path
    password_env: str
    tls: TlsFiles | None

    @property
    def name(self) -> str:
        return f"node{self.index}"

    def to_json(self, out: Path, scheme: str) -> dict[str, Any]:
        """Its entry in ``cluster.json`` (paths relative to the cluster folder ``out``)."""
        return {
            "index": self.index, "name": self.name, "host": self.spec.host, "public": to_hex(self.public.to_bytes()),
            "address": checksum_address(address_of(self.public)),
            "http_url": f"{scheme}://{self.spec.http_address}", "cluster_address": str(self.spec.cluster_address),
            "folder": str(self.folder.relative_to(out)), "config": str(self.config.relative_to(out)),
            "password_env": self.password_env,
        }


@dataclass(frozen=True)
class ClusterPlan:
    """What ``init_cluster`` wrote into ``out``."""

    out: Path
    threshold_max: int
    nodes: tuple[NodePlan, ...]
    admin_public: Point
    admin_keystore: Path
    admin_password_env: str
    scheme: str
    tls_ca: Path | None
    compose_all: Path | None

    def to_json(self) -> dict[str, Any]:
        """``cluster.json``: public keys, addresses and URLs; paths relative to ``out``."""
        def rel(path: Path | None) -> str | None:
            return None if path is None else str(path.relative_to(self.out))

        nodes = [n.to_json(self.out, self.scheme) for n in self.nodes]
        return {
            "secret_store_url": nodes[0]["http_url"],
            "secret_store_urls": [n["http_url"] for n in nodes],
            "threshold_max": self.threshold_max,
            "nodes": nodes,
            "admin_public": to_hex(self.admin_public.to_bytes()),
            "admin_address": checksum_address(address_of(self.admin_public)),
            "admin_keystore": rel(self.admin_keystore),
            "admin_password_env": self.admin_password_env,
            "tls_ca": rel(self.tls_ca),
        }


# -- the hosts ---------------------------------------------------------------------------------


def _host(text: str, entry: str) -> str:
    """A bare host: a DNS name or an IP address (IPv6 with or without brackets)."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    elif ":" in text:  # an unbracketed IPv6 address
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise ConfigError(f"--hosts {entry!r}: not HOST or HOST:HTTP_PORT:CLUSTER_PORT", key="hosts") from None
        return text
    try:
        parse_host_port(f"[{text}]:1" if ":" in text else f"{text}:1")
    except ValueError as exc:
        raise ConfigError(f"--hosts {entry!r}: {exc}", key="hosts") from None
    return text


def parse_hosts(entries: Sequence[str], http_port: int = DEFAULT_HTTP_PORT,
                cluster_port: int = DEFAULT_CLUSTER_PORT) -> list[HostSpec]:
    """``HOST`` (the default ports) or ``HOST:HTTP_PORT:CLUSTER_PORT`` per node, e.g. ``ss0.example.org``
    or ``127.0.0.1:8082:8083``; IPv6 in brackets when ports follow.

    :raises ConfigError: a malformed entry, or two nodes on the same host and port.
    """
    specs = []
    for entry in entries:
        match = _PORTS_SUFFIX.fullmatch(entry)
        if match and (":" not in match["host"] or match["host"].startswith("[")):
            ports = int(match["http"]), int(match["cluster"])
            specs.append(HostSpec(_host(match["host"], entry), *ports))
        else:
            specs.append(HostSpec(_host(entry, entry), http_port, cluster_port))
    taken: dict[tuple[str, int], int] = {}
    for i, spec in enumerate(specs):
        for port in (spec.http_port, spec.cluster_port):
            if not 1 <= port <= 65535:
                raise ConfigError(f"--hosts: node {i} ({spec.host}): port {port} is not in 1..65535", key="hosts")
            if (spec.host, port) in taken:
                raise ConfigError(
                    f"--hosts: nodes {taken[(spec.host, port)]} and {i} both use {spec.host} port {port} (give "
                    "distinct ports as HOST:HTTP_PORT:CLUSTER_PORT for nodes sharing a host)", key="hosts")
            taken[(spec.host, port)] = i
    return specs


# -- secrets from the environment ----------------------------------------------------------------


def password_env_name(template: str, index: int) -> str:
    """The password variable of node ``index``: ``template`` with ``{i}`` replaced (one shared
    variable when it has no ``{i}``)."""
    return template.replace(_INDEX, str(index))


def _password(name: str, environ: Mapping[str, str], whose: str) -> str:
    if not _ENV_NAME.fullmatch(name):
        raise ConfigError(f"{name!r} is not an environment variable name ({whose})", key="password_env")
    value = environ.get(name)
    if not value:
        raise ConfigError(f"environment variable {name} ({whose}'s keystore password) is not set or empty",
                          key="password_env")
    return value


# -- writing -----------------------------------------------------------------------------------


def _write_text(path: Path, text: str, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _keystore(directory: Path, secret: int, password: str, kdf: Kdf) -> Path:
    rounds = SCRYPT_N if kdf == "scrypt" else PARITY_PBKDF2_ROUNDS
    return write_keystore(directory, secret.to_bytes(32, "big"), password, kdf=kdf, iterations=rounds)


def _node_mapping(plan: NodePlan, specs: Sequence[HostSpec], publics: Sequence[Point], admin: Point,
                  threshold_max: int, bind: str, acl: Mapping[str, Any]) -> dict[str, Any]:
    def listen(port: int) -> str:
        return str(HostPort(bind, port))

    mapping: dict[str, Any] = {
        "node": {
            "keystore": str(plan.keystore.relative_to(plan.folder)),
            "password_env": plan.password_env,
            "listen": listen(plan.spec.cluster_port),
            "http_listen": listen(plan.spec.http_port),
            "data_dir": "data",
            # Ready once it reaches threshold_max peers: then it serves every key of threshold <= T.
            "min_ready_peers": threshold_max,
            "admin_public": to_hex(admin.to_bytes()),
        },
        "cluster": {to_hex(p.to_bytes()): str(s.cluster_address) for p, s in zip(publics, specs, strict=True)},
        "acl": dict(acl),
        "http": {"cors": "none"},
    }
    if plan.tls is not None:
        mapping["http"].update(tls_cert=str(plan.tls.cert.relative_to(plan.folder)),
                               tls_key=str(plan.tls.key.relative_to(plan.folder)))
    return mapping


def _check_mapping(mapping: Mapping[str, Any], folder: Path, secret: int) -> None:
    """Validate a generated config with the node's own parser, the secret inline (no slow unlock)."""
    node = {k: v for k, v in mapping["node"].items() if k not in ("keystore", "password_env")}
    NodeConfig.from_mapping({**mapping, "node": {**node, "secret": f"0x{secret:064x}"}}, folder, environ={})


def _write_node(out: Path, index: int, spec: HostSpec, secret: int, password: str, *, password_env: str, kdf: Kdf,
                image: str, ca: TlsFiles | None, tls_days: int, header: str,
                mapping: Callable[[NodePlan], dict[str, Any]]) -> NodePlan:
    """Write ``out/node<index>``: data/, the keystore of ``secret``, with ``ca`` tls/, the config
    ``mapping(plan)`` (checked by the node's parser first) under a ``# header`` line, compose.yaml."""
    folder = out / f"node{index}"
    folder.mkdir(mode=0o700)
    (folder / "data").mkdir(mode=0o700)
    keystore = _keystore(folder / "keystore", secret, password, kdf)
    node_tls = None
    if ca is not None:
        (folder / "tls").mkdir(mode=0o700)
        node_tls = issue_certificate(ca, folder / "tls", "node", days=tls_days, hosts=[spec.host, f"node{index}"])
        shutil.copyfile(ca.cert, folder / "tls" / "ca.pem")
    node = NodePlan(index=index, spec=spec, public=Point.generator_mul(secret), folder=folder,
                    config=folder / "node.toml", keystore=keystore, password_env=password_env_name(password_env, index),
                    tls=node_tls)
    table = mapping(node)
    _check_mapping(table, folder, secret)
    _write_text(node.config, f"# {header}\n" + dump_config(table))
    _write_text(folder / "compose.yaml", _compose_one_text(node, image))
    return node


def to_yaml(document: Mapping[str, Any], comment: str = "") -> str:
    """Block-style YAML of a document of mappings, lists, strings, ints and bools; every string is
    double-quoted (JSON's string syntax is valid YAML), so no value is ever read as another type."""
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]

    def scalar(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        return json.dumps(str(value))

    def emit(value: Any, indent: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if isinstance(item, Mapping | list) and item:
                    lines.append(f"{indent}{key}:")
                    emit(item, indent + "  ")
                else:
                    lines.append(f"{indent}{key}: {_empty(item) if isinstance(item, Mapping | list) else scalar(item)}")
        else:
            for item in value:
                if isinstance(item, Mapping | list):
                    raise ConfigError("to_yaml: nested collections in a list are not supported")
                lines.append(f"{indent}- {scalar(item)}")

    emit(document, "")
    return "\n".join(lines) + "\n"


def _empty(value: Mapping[str, Any] | list[Any]) -> str:
    return "{}" if isinstance(value, Mapping) else "[]"


def node_service(name: str, password_env: str, mount_from: str, *, image: str = DEFAULT_IMAGE,
                 tls: bool = False) -> dict[str, Any]:
    """One compose service running node ``name`` from its folder ``mount_from`` (as compose reads it),
    mounted at ``CONTAINER_DIR``; its keystore password in the variable ``password_env``."""
    return {
        "image": f"${{OCEAN_SS_IMAGE:-{image}}}",
        "entrypoint": ["ocean-secret-store"],
        "command": ["node", "--config", f"{CONTAINER_DIR}/node.toml"],
        # Compose passes the operator's variable through; it refuses to start while it is unset.
        "environment": {password_env: f"${{{password_env}:?set {password_env} to the keystore password of {name}}}"},
        "volumes": [f"{mount_from}/node.toml:{CONTAINER_DIR}/node.toml:ro",
                    f"{mount_from}/keystore:{CONTAINER_DIR}/keystore:ro",
                    *([f"{mount_from}/tls:{CONTAINER_DIR}/tls:ro"] if tls else []),
                    f"{mount_from}/data:{CONTAINER_DIR}/data"],
        "restart": "unless-stopped",
    }


def _service(plan: NodePlan, image: str, mount_from: str) -> dict[str, Any]:
    return node_service(plan.name, plan.password_env, mount_from, image=image, tls=plan.tls is not None)


def compose_for_node(plan: NodePlan, image: str = DEFAULT_IMAGE) -> dict[str, Any]:
    """The compose document of one node on its own machine: both ports published."""
    spec = plan.spec
    service = _service(plan, image, ".")
    service["ports"] = [f"{spec.http_port}:{spec.http_port}", f"{spec.cluster_port}:{spec.cluster_port}"]
    return {"services": {plan.name: service}}


def compose_for_all(plans: Sequence[NodePlan], image: str = DEFAULT_IMAGE) -> dict[str, Any]:
    """Every node on one Docker host: the cluster traffic on an internal network, where each node
    answers to its host name; each HTTP API published on 127.0.0.1 (an ephemeral port)."""
    services = {}
    for plan in plans:
        service = _service(plan, image, f"./{plan.name}")
        service["ports"] = [f"127.0.0.1::{plan.spec.http_port}"]
        service["networks"] = {"cluster": {"aliases": [plan.spec.host]}, "clients": {}}
        services[plan.name] = service
    return {"services": services, "networks": {"cluster": {"internal": True}, "clients": {}}}


def _compose_one_text(plan: NodePlan, image: str) -> str:
    spec = plan.spec
    return to_yaml(compose_for_node(plan, image), comment=(
        f"Key server {plan.name} of an ocean-secret-store cluster (`ocean-secret-store cluster init`).\n"
        f"On {spec.host}, in this folder: export {plan.password_env}=...; docker compose up -d\n"
        f"It publishes the HTTP API on port {spec.http_port} and the node-to-node port {spec.cluster_port}:\n"
        "open the latter to the other key servers only."))


def _compose_all_text(plans: Sequence[NodePlan], image: str) -> str:
    return to_yaml(compose_for_all(plans, image), comment=(
        "Every key server of the cluster on one Docker host (`ocean-secret-store cluster init`): each\n"
        "container answers to its host name on the internal network `cluster`; the HTTP APIs are\n"
        "published on 127.0.0.1 through the network `clients` (see `docker compose port`)."))


def _readme(plan: ClusterPlan) -> str:
    first = plan.nodes[0]
    admin_keystore = plan.admin_keystore.relative_to(plan.out)
    lines = [
        f"An ocean-secret-store cluster of {len(plan.nodes)} key servers (made by `ocean-secret-store cluster init`).",
        f"Keys of threshold t <= {plan.threshold_max} are served by any t+1 of them; generating a key needs all.",
        "",
        "Which files go to which machine:",
        "",
    ]
    for node in plan.nodes:
        lines += [
            f"  {node.name}/  ->  {node.spec.host}",
            (f"      HTTP API {plan.scheme}://{node.spec.http_address} (clients), node-to-node port "
             f"{node.spec.cluster_port} (open to the other key servers only)"),
            f"      start: export {node.password_env}=<its keystore password>; then either",
            f"             ocean-secret-store node --config {node.name}/node.toml   (the folder can live anywhere)",
            f"             or, in the folder: docker compose up -d   ({node.name}/compose.yaml)",
        ]
    lines += [
        "",
        "Each folder holds the node's encrypted keystore (keystore/), its config (node.toml: no secret, only",
        "the name of the password variable)" + (", its TLS certificate and key (tls/)" if plan.tls_ca else "")
        + " and its data folder (data/, the key shares: back it up).",
        "The password of each keystore is the value the variable had when `cluster init` ran; it is written",
        "nowhere. Copy each folder to its machine only (scp -r, or any secure channel).",
        "",
        "admin/  ->  the administrator's machine, NOT the key servers: the administrator key (a keystore,",
        f"      password in ${plan.admin_password_env}); its public key is every node's admin_public, so",
        "      servers-set change, refresh and repair need its signature:",
        (f"      ocean-secret-store admin refresh --node URL --admin-keystore {admin_keystore}"
         f" --admin-password-env {plan.admin_password_env}"),
    ]
    if plan.tls_ca is not None:
        lines += [
            "",
            "ca/  ->  ca.pem to every client (their --ca-file), ca.key stays with the operator (it signs new",
            "      certificates); each node's certificate names its host and its container name.",
        ]
    lines += [
        "",
        "cluster.json: the cluster as clients see it (node ids, URLs, threshold_max): no secrets.",
    ]
    if plan.compose_all is not None:
        lines += ["compose.yaml: every node on one Docker host (tests, demos): docker compose up -d here."]
    cacert = "--cacert ca/ca.pem " if plan.tls_ca is not None else ""
    lines += ["", f"Check a node: curl {cacert}{plan.scheme}://{first.spec.http_address}/ready"]
    return "\n".join(lines) + "\n"


def init_cluster(out: Path, hosts: Sequence[HostSpec], threshold_max: int, *,
                 password_env: str = DEFAULT_PASSWORD_ENV, admin_password_env: str = DEFAULT_ADMIN_PASSWORD_ENV,
                 tls: bool = False, tls_days: int = DEFAULT_TLS_DAYS, bind: str = "0.0.0.0",
                 acl: Mapping[str, Any] | None = None, kdf: Kdf = "scrypt", image: str = DEFAULT_IMAGE,
                 environ: Mapping[str, str] | None = None, admin_secret: int | None = None,
                 say: Callable[[str], None] = lambda _: None) -> ClusterPlan:
    """Generate a cluster of ``len(hosts)`` nodes into ``out`` (which must not exist or be empty).

    ``password_env`` names the variable holding the nodes' keystore password; with ``{i}`` in it, each
    node has its own (``NODE{i}_PASSWORD``: ``NODE0_PASSWORD``, ...). ``acl`` is the ``[acl]`` table
    (default ``{"kind": "none"}``). ``admin_secret`` is the administrator's private key (default: a new
    one), e.g. a devnet account's. Nothing is written before every password and setting checked out;
    a failure while writing removes ``out`` again.

    :raises ConfigError: a bad setting or an unset password variable (named, never its value).
    """
    env = os.environ if environ is None else environ
    count = len(hosts)
    if count < 1:
        raise ConfigError("a cluster needs at least one host", key="hosts")
    if not 0 <= threshold_max < count:
        raise ConfigError(f"--threshold-max must be in 0..{count - 1} (t+1 of the {count} nodes serve a key)",
                          key="threshold_max")
    if tls_days < 1:
        raise ConfigError("--tls-days must be at least 1", key="tls_days")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty folder: choose a new one", key="out")
    passwords = [_password(password_env_name(password_env, i), env, f"node{i}") for i in range(count)]
    admin_password = _password(admin_password_env, env, "the administrator")
    acl_table = dict(acl or {"kind": "none"})
    if admin_secret is not None and not 0 < admin_secret < N:
        raise ConfigError("the administrator key is not a valid secp256k1 private key", key="admin_secret")
    with new_folder(out):
        return _write_cluster(out, hosts, threshold_max, passwords, admin_password, password_env=password_env,
                              admin_password_env=admin_password_env, tls=tls, tls_days=tls_days, bind=bind,
                              acl=acl_table, kdf=kdf, image=image, admin_secret=admin_secret, say=say)


@contextlib.contextmanager
def new_folder(out: Path) -> Iterator[None]:
    """Make ``out`` (mode 0700; it must not exist or be empty) for the block to fill; if the block
    fails, remove what it wrote: ``out`` itself when the block made it, else everything in it."""
    created = not out.exists()
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    try:
        yield
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for child in out.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        raise


def _write_cluster(out: Path, hosts: Sequence[HostSpec], threshold_max: int, passwords: Sequence[str],
                   admin_password: str, *, password_env: str, admin_password_env: str, tls: bool, tls_days: int,
                   bind: str, acl: Mapping[str, Any], kdf: Kdf, image: str, admin_secret: int | None,
                   say: Callable[[str], None]) -> ClusterPlan:
    count = len(hosts)
    say(f"generating {count} node keys and the administrator key ({kdf} keystores)")
    if admin_secret is None:
        admin_secret = random_scalar()
    admin_public = Point.generator_mul(admin_secret)
    (out / "admin").mkdir(mode=0o700)
    admin_keystore = _keystore(out / "admin" / "keystore", admin_secret, admin_password, kdf)
    ca = make_local_ca(out / "ca", "ocean-secret-store cluster CA", days=tls_days) if tls else None
    secrets_ = [random_scalar() for _ in range(count)]
    publics = [Point.generator_mul(s) for s in secrets_]
    plans = []
    for i, (spec, secret) in enumerate(zip(hosts, secrets_, strict=True)):
        node = _write_node(
            out, i, spec, secret, passwords[i], password_env=password_env, kdf=kdf, image=image, ca=ca,
            tls_days=tls_days, header=f"node{i} of {count}, on {spec.host} (ocean-secret-store cluster init)",
            mapping=lambda plan: _node_mapping(plan, hosts, publics, admin_public, threshold_max, bind, acl))
        plans.append(node)
        say(f"{node.name}: {spec.host} http {spec.http_port}, cluster {spec.cluster_port}")
    names = [p.spec.host for p in plans]
    compose_all = None
    if all(p.spec.is_name for p in plans) and len(set(names)) == len(names):
        compose_all = out / "compose.yaml"
        _write_text(compose_all, _compose_all_text(plans, image))
    plan = ClusterPlan(out=out, threshold_max=threshold_max, nodes=tuple(plans), admin_public=admin_public,
                       admin_keystore=admin_keystore, admin_password_env=admin_password_env,
                       scheme="https" if tls else "http", tls_ca=ca.cert if ca is not None else None,
                       compose_all=compose_all)
    _write_text(out / "cluster.json", json.dumps(plan.to_json(), indent=2) + "\n")
    _write_text(out / "README.txt", _readme(plan))
    return plan


# -- a node for a running cluster ----------------------------------------------------------------


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the node config {path}: {exc}", key="config") from None


def _keystore_kdf(path: Path) -> Kdf:
    try:
        kdf = json.loads(path.read_text(encoding="utf-8"))["crypto"]["kdf"]
    except (OSError, ValueError, KeyError, TypeError):
        return "scrypt"
    return "pbkdf2" if kdf == "pbkdf2" else "scrypt"


def add_node(out: Path, index: int, spec: HostSpec, like: Path, *, password_env: str | None = None,
             environ: Mapping[str, str] | None = None, image: str = DEFAULT_IMAGE) -> NodePlan:
    """Generate ``out/node<index>``, a new key server for a cluster that runs: a fresh key in a keystore
    of the same kind as ``like``'s (the password in ``password_env``, default ``like``'s variable),
    and a config like ``like``'s (another node's node.toml: ``admin_public``, ``min_ready_peers`` and
    every other section) but with its own keystore and ports (``spec``, bound where ``like`` binds)
    and ``[cluster]`` = ``like``'s plus itself. The new node is in no one's address book (:func:`set_peer`)
    and no servers set yet (an admin session admits it). ``cluster.json`` is not changed.

    :raises ConfigError: ``out/node<index>`` exists, an unset password variable, an unreadable
        ``like``, or a cluster with TLS (not supported yet).
    """
    env = os.environ if environ is None else environ
    template = _read_toml(like)
    node_table = dict(template.get("node", {}))
    if "tls_cert" in template.get("http", {}):
        raise ConfigError("adding a node to a cluster with TLS is not supported yet: issue its certificate from "
                          "the cluster's CA and write its config by hand (docs/operators.md)", key="tls")
    name = f"node{index}"
    if (out / name).exists():
        raise ConfigError(f"{out / name} exists already: choose another index", key="index")
    template_env = str(node_table.get("password_env") or DEFAULT_PASSWORD_ENV)
    variable = password_env_name(password_env or template_env, index)
    password = _password(variable, env, name)
    try:
        bind = parse_host_port(str(node_table["listen"])).host
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{like}: [node] listen is missing or malformed ({exc})", key="config") from None
    kdf = _keystore_kdf(like.parent / str(node_table.get("keystore", "")))

    def mapping(plan: NodePlan) -> dict[str, Any]:
        table = {key: value for key, value in template.items() if key not in ("node", "cluster")}
        node = {key: value for key, value in node_table.items() if key not in ("secret", "secret_file")}
        node.update(keystore=str(plan.keystore.relative_to(plan.folder)), password_env=plan.password_env,
                    listen=str(HostPort(bind, spec.cluster_port)), http_listen=str(HostPort(bind, spec.http_port)),
                    data_dir="data")
        cluster = {**template.get("cluster", {}), to_hex(plan.public.to_bytes()): str(spec.cluster_address)}
        return {"node": node, "cluster": cluster, **table}

    return _write_node(out, index, spec, random_scalar(), password, password_env=variable, kdf=kdf, image=image,
                       ca=None, tls_days=DEFAULT_TLS_DAYS, mapping=mapping,
                       header=f"{name}, on {spec.host}, added to a running cluster (ocean-secret-store)")


def set_peer(config: Path, public: str, address: str | None) -> bool:
    """List the node ``public`` (``0x`` + 128 hex) at ``address`` (``host:port``; None: unlist it) in the
    ``[cluster]`` address book of the node config ``config``; whether that changed the file. The
    file is rewritten in place, so it keeps its owner, its mode and its inode (a container that has
    it bind-mounted sees the new text), and its leading comment lines; the node rereads it on SIGHUP.
    """
    mapping = _read_toml(config)
    cluster = mapping.setdefault("cluster", {})
    if cluster.get(public) == address:  # listed there already, or not listed and to be unlisted
        return False
    if address is None:
        del cluster[public]
    else:
        cluster[public] = address
    lines = config.read_text(encoding="utf-8").splitlines(keepends=True)
    header = "".join(line for line in itertools.takewhile(lambda line: line.startswith("#"), lines))
    text = header + dump_config(mapping)
    with open(config, "r+", encoding="utf-8") as f:
        f.write(text)
        f.truncate()
    return True
