"""A key server node's configuration: a typed, validated :class:`NodeConfig` read from (and written as) TOML.

The file (every setting; unknown keys are errors, so a typo never silently means a default)::

    [node]
    secret = "0x<64 hex>"                   # dev only; or the two lines below
    # keystore = "keys/node0.json"          # Ethereum v3 keystore, relative to this file
    # password_env = "NODE0_PASSWORD"       # environment variable holding its password
    listen = "127.0.0.1:12000"              # node-to-node listener (port 0: any free port)
    http_listen = "127.0.0.1:12001"         # public HTTP API (Parity's, protocol.md §1)
    data_dir = "node0"                      # relative to this file
    # min_ready_peers = 2                   # GET /ready needs this many usable peers (default (n-1)//2)
    # admin_public = "0x<128 hex>"          # the administrator's public key: admin sessions need its
                                            # signatures (servers-set change, refresh, repair)

    [cluster]                               # every node this one talks to, itself included; the servers
                                            # set starts as these and then follows admin sessions
    "0x<128 hex public key>" = "127.0.0.1:12000"

    [timeouts]                              # seconds, > 0 (these are the defaults)
    session = 5.0
    connect = 2.0
    keepalive = 1.0                         # ping an idle peer; silent 2x this: suspected; 3x: dropped
    hedge = 0.5                             # most a member is waited for before a spare is asked

    [acl]
    kind = "allow_list"                     # "none" | "allow_list" | "contract"
    allowed = ["0x<40 hex>"]                # allow_list: addresses allowed for every key
    [acl.keys]                              # allow_list: per-key grants
    "0x<64 hex key id>" = ["0x<40 hex>"]
    # kind = "contract": chain_url = "http://127.0.0.1:8545" and contract = "0x<40 hex>"

    [http]
    cors = "none"                           # "none" | "*" / "all" / "any" | "origin1,origin2"
    header_timeout = 10.0                   # s to send a whole request head (slow-loris guard)
    max_connections_per_address = 256       # open connections per client address; more are closed
    # tls_cert = "tls/node0.pem"            # https: PEM certificate chain and its PEM key, relative to
    # tls_key = "tls/node0.key"             # this file (both or neither; default: plain http)

    [audit]                                 # data_dir/audit.jsonl rotates by size (these are the defaults)
    max_bytes = 67108864                    # 64 MiB: then audit.jsonl -> audit.jsonl.1 -> .2 ...
    backups = 10                            # rotated files kept (0: keep every one)

    [quotas]                                # per node; over a limit: HTTP 429 (these are the defaults)
    requester_burst = 40                    # key generations one requester may start at once (0: no limit)
    requester_rate = 1.0                    # ... and then per second
    address_burst = 400                     # the same per client address (0: no limit)
    address_rate = 10.0
    requester_generations = 0               # key generations per requester in all (0: unlimited)
    max_sessions = 256                      # sessions run at once, as entry and member (0: unlimited)
    tracked = 10000                         # requesters (and addresses) remembered, least recent dropped
    refusal_delay = 1.0                     # s a refused generation waits for its 429 (0: answer at once)
    admin_exempt = true                     # generations signed by [node] admin_public pass the limits

    [security]
    require_bound_signatures = []           # operations refused with a bare key-id signature
                                            # (docs/http-api.md), e.g. ["store_document_key",
                                            # "generate_server_key"], or "all"; default: none

Every error is a :class:`~ocean_secret_store.exceptions.ConfigError` whose ``key`` names the
setting; no message ever contains the node secret or the keystore password.

:data:`SETTINGS` declares every setting once (section, key, type, default, meaning): the parser
takes each section's keys from it, its defaults are the value types' own, and
docs/configuration.md is rendered from it (``tools/gen_config_doc.py``; a test keeps them equal).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

import tomli_w

from ..crypto.curve import N, Point
from ..crypto.hashes import address_of, checksum_address
from ..exceptions import ConfigError, InvalidPoint
from ..keyfile import KeystoreError, WrongPassword, unlock_file
from ..protocol.addresses import HostPort, parse_host_port
from ..protocol.bound import OPERATIONS as BOUND_OPERATIONS
from ..protocol.hexcodec import parse_hex
from ..serving import ServingLimits, TlsFiles
from .audit import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES
from .cors import CorsPolicy
from .quotas import QuotaSettings
from .storage import DB_FILENAME

__all__ = [
    "ACL_KINDS",
    "SETTINGS",
    "AclConfig",
    "AuditSettings",
    "NodeConfig",
    "Setting",
    "Timeouts",
    "dump_config",
    "load_config",
]

AclKind = Literal["none", "allow_list", "contract"]
ACL_KINDS: Final[tuple[str, ...]] = ("none", "allow_list", "contract")

_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CHAIN_URL: Final = re.compile(r"(https?|wss?)://[^\s/]+(/\S*)?")
_SECRET_SIZE: Final = 32
_NODE_ID_SIZE: Final = 64
_KEY_ID_SIZE: Final = 32
_ADDRESS_SIZE: Final = 20


# -- value types --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeouts:
    """Seconds: a whole session, one connection attempt, the keep-alive interval (a peer silent for
    two is suspected, for three dropped), and the ceiling of the hedge delay (docs/cluster-protocol.md)."""

    session: float = 5.0
    connect: float = 2.0
    keepalive: float = 1.0
    hedge: float = 0.5


@dataclass(frozen=True)
class AuditSettings:
    """Size rotation of the audit log (see :class:`~.audit.AuditLog`): bytes per file, rotated files kept."""

    max_bytes: int = DEFAULT_MAX_BYTES
    backups: int = DEFAULT_BACKUPS


@dataclass(frozen=True)
class AclConfig:
    """Which access checker the node runs; the checkers themselves live in ``node.acl``.

    ``allowed`` and ``keys`` (20-byte addresses; key id -> addresses) are for ``allow_list``,
    ``chain_url`` and ``contract`` (20-byte address) for ``contract``.
    """

    kind: AclKind = "none"
    allowed: frozenset[bytes] = frozenset()
    keys: Mapping[bytes, frozenset[bytes]] = field(default_factory=lambda: MappingProxyType({}))
    chain_url: str | None = None
    contract: bytes | None = None


# -- the schema: every setting of the file, once ---------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One setting of the node's TOML file.

    ``key`` is the literal key, or, for a table keyed by ids (``[cluster]``, ``[acl.keys]``), a
    placeholder in angle brackets that stands for any key. ``default`` is what a missing key means
    (the value types' own default); ``default_text`` says it in words where it is not one value.
    """

    section: str
    key: str
    type: str
    meaning: str
    default: Any = None
    required: bool = False
    default_text: str | None = None

    @property
    def any_key(self) -> bool:
        return self.key.startswith("<")


_QUOTAS: Final = QuotaSettings()
_SERVING: Final = ServingLimits()

#: Every setting, in the order the file documents them (docs/configuration.md is rendered from this).
SETTINGS: Final[tuple[Setting, ...]] = (
    Setting("node", "secret", '"0x" + 64 hex', "The node's secp256k1 private key, inline: development only, the "
            "file then holds a key. Give it, or `keystore` with `password_env`, not both. Its public key is the "
            "node's id.", default_text="(one of the two forms is required)"),
    Setting("node", "keystore", "path", "An Ethereum v3 keystore file holding the node key (relative to this file); "
            "`cluster init` writes one per node.", default_text="none"),
    Setting("node", "password_env", "environment variable name", "The variable holding the keystore's password, "
            "read when the node starts; the password is never written to the file.", default_text="none"),
    Setting("node", "listen", '"host:port"', "The node-to-node listener (port 0: any free port). Open it to the "
            "other key servers only.", required=True),
    Setting("node", "http_listen", '"host:port"', "The HTTP API: Parity's endpoints, `/health`, `/ready`, "
            "`/metrics`, `/status` and the admin routes (docs/http-api.md).", required=True),
    Setting("node", "data_dir", "path", "The key database (`keys.sqlite3`) and the audit log (`audit.jsonl`), "
            "relative to this file. Back it up (docs/operators.md, *Backups*).", required=True),
    Setting("node", "min_ready_peers", "integer >= 0, at most the other nodes", "Peers that must be connected and "
            "not suspected for `GET /ready` to answer 200.", default_text="(n-1)//2, n the nodes of `[cluster]`"),
    Setting("node", "admin_public", '"0x" + 128 hex', "The administrator's public key, the same on every node: "
            "admin sessions (servers-set change, refresh, repair) need its signatures. Without it the node "
            "takes part in none (`Access denied`).", default_text="none"),
    Setting("cluster", "<node id>", '"0x" + 128 hex = "host:port"', "Every node this one connects to and "
            "accepts, itself included, at its node-to-node address. The servers set starts as these nodes and "
            "then follows admin sessions. Reread on SIGHUP.", required=True),
    Setting("timeouts", "session", "seconds > 0", "A whole public operation, every attempt included; then "
            "Parity's error.", default=Timeouts.session),
    Setting("timeouts", "connect", "seconds > 0", "One connection attempt to a peer.", default=Timeouts.connect),
    Setting("timeouts", "keepalive", "seconds > 0", "An idle peer is pinged this often; silent for twice this it "
            "is suspected, for three times dropped.", default=Timeouts.keepalive),
    Setting("timeouts", "hedge", "seconds > 0", "The most a slow member is waited for before a spare holder is "
            "asked as well (docs/cluster-protocol.md, *Liveness*).", default=Timeouts.hedge),
    Setting("acl", "kind", " | ".join(f'"{kind}"' for kind in ACL_KINDS), "Who may use a key: `none` lets every "
            "requester in (tests, demos); `allow_list` the addresses below; `contract` asks "
            "`AccessSecretStoreCondition.checkPermissions` on chain, every key bound to its author "
            "(docs/security.md, finding 1).", required=True),
    Setting("acl", "allowed", "list of addresses", "`allow_list` only: addresses allowed for every key.",
            default=[]),
    Setting("acl.keys", "<key id>", '"0x" + 64 hex = list of addresses', "`allow_list` only: addresses allowed "
            "for that key.", default_text="none"),
    Setting("acl", "chain_url", "http(s):// or ws(s):// URL", "`contract` only (required there): the chain's "
            "JSON-RPC endpoint.", default_text="none"),
    Setting("acl", "contract", "address", "`contract` only (required there): the `AccessSecretStoreCondition` "
            "contract.", default_text="none"),
    Setting("http", "cors", '"none" | "*" | "origin1,origin2"', "Browser origins admitted to the API, "
            "`/metrics` and the status page (`all` and `any` mean `*`); a refused origin gets 404.",
            default=str(CorsPolicy())),
    Setting("http", "header_timeout", "seconds > 0", "Time a client has to send a whole request head, and the "
            "TLS handshake (slow-loris guard).", default=_SERVING.header_timeout),
    Setting("http", "max_connections_per_address", "integer >= 1", "Open connections per client address; more are "
            "closed.", default=_SERVING.max_connections_per_address),
    Setting("http", "tls_cert", "path", "Serve https: the PEM certificate chain (relative to this file); with "
            "`tls_key`, both or neither. TLS 1.2 or later.", default_text="none (plain http)"),
    Setting("http", "tls_key", "path", "The PEM key of `tls_cert`.", default_text="none"),
    Setting("audit", "max_bytes", "integer >= 1", "The audit log `data_dir/audit.jsonl` is rotated past this size "
            "(`audit.jsonl` -> `audit.jsonl.1` -> ...).", default=DEFAULT_MAX_BYTES),
    Setting("audit", "backups", "integer >= 0", "Rotated audit files kept (0: every one).", default=DEFAULT_BACKUPS),
    Setting("quotas", "requester_burst", "integer >= 0", "Key generations one requester (the signature's address) "
            "may start on this node at once (0: no rate limit; docs/quotas.md).", default=_QUOTAS.requester_burst),
    Setting("quotas", "requester_rate", "number >= 0", "... and then per second (a token bucket).",
            default=_QUOTAS.requester_rate),
    Setting("quotas", "address_burst", "integer >= 0", "The same for one client address, every requester behind "
            "it (0: no rate limit).", default=_QUOTAS.address_burst),
    Setting("quotas", "address_rate", "number >= 0", "... per second.", default=_QUOTAS.address_rate),
    Setting("quotas", "requester_generations", "integer >= 0", "Key generations one requester may start on this "
            "node in all, since it started (0: unlimited).", default=_QUOTAS.requester_generations),
    Setting("quotas", "max_sessions", "integer >= 0", "Sessions this node runs at once, as entry and as member "
            "(0: no cap).", default=_QUOTAS.max_sessions),
    Setting("quotas", "tracked", "integer >= 1", "Requesters (and, apart, client addresses) whose buckets and "
            "counts are remembered; the least recent are dropped.", default=_QUOTAS.tracked),
    Setting("quotas", "refusal_delay", "number >= 0", "Seconds a refused generation is held before its 429 "
            "(0: answer at once).", default=_QUOTAS.refusal_delay),
    Setting("quotas", "admin_exempt", "boolean", "Key generations signed by the administrator (`[node] "
            "admin_public`) pass the rate limits and counts: the operator's bulk loads (docs/quotas.md).",
            default=_QUOTAS.admin_exempt),
    Setting("security", "require_bound_signatures", '"all" or a list of operations', "Operations refused with a "
            "bare key-id signature (docs/http-api.md, bound signatures); the operations: "
            + ", ".join(f"`{name}`" for name in sorted(BOUND_OPERATIONS)) + ".", default=[]),
)


def _section_keys(section: str) -> tuple[str, ...]:
    """The literal keys of ``section`` in :data:`SETTINGS`, and the names of its sub-tables."""
    keys = [s.key for s in SETTINGS if s.section == section and not s.any_key]
    keys += [s.section.rsplit(".", 1)[1] for s in SETTINGS if s.section.startswith(section + ".")]
    return tuple(dict.fromkeys(keys))


#: The top-level tables of the file, in the documented order.
_SECTIONS: Final = tuple(dict.fromkeys(s.section.split(".")[0] for s in SETTINGS))
_QUOTA_KEYS: Final = _section_keys("quotas")
_TIMEOUT_KEYS: Final = _section_keys("timeouts")


@dataclass(frozen=True)
class NodeConfig:
    """One node's validated configuration. ``node_secret`` never appears in the repr.

    ``keystore``/``password_env`` record where the secret came from (None for an inline secret),
    so that :func:`dump_config` writes the keystore reference back rather than the key.
    """

    node_secret: int = field(repr=False)
    node_public: Point
    listen: HostPort
    http_listen: HostPort
    data_dir: Path
    cluster: Mapping[bytes, HostPort]
    timeouts: Timeouts = Timeouts()
    acl: AclConfig = AclConfig()
    cors: CorsPolicy = field(default_factory=CorsPolicy)
    serving: ServingLimits = field(default_factory=ServingLimits)
    audit: AuditSettings = AuditSettings()
    #: ``[quotas]``: key generation rates and counts, the session cap (node/quotas.py).
    quotas: QuotaSettings = field(default_factory=QuotaSettings)
    #: ``[security] require_bound_signatures``: operations that need a bound signature (docs/http-api.md).
    require_bound_signatures: frozenset[str] = frozenset()
    #: ``[http] tls_cert``/``tls_key``: serve the HTTP API over https (None: plain http).
    tls: TlsFiles | None = None
    keystore: Path | None = None
    password_env: str | None = None
    #: ``[node] min_ready_peers``: usable peers ``GET /ready`` needs (None: (n-1)//2).
    min_ready_peers: int | None = None
    #: ``[node] admin_public``: the administrator's key; None: this node takes part in no admin session.
    admin_public: Point | None = None

    @property
    def node_id(self) -> bytes:
        """This node's 64-byte id (its public key), as the cluster core uses it."""
        return self.node_public.to_bytes()

    @property
    def address(self) -> bytes:
        return address_of(self.node_public)

    @property
    def storage_path(self) -> Path:
        """The SQLite key database inside :attr:`data_dir`."""
        return self.data_dir / DB_FILENAME

    @property
    def peers(self) -> dict[bytes, HostPort]:
        """The cluster without this node."""
        return {node: addr for node, addr in self.cluster.items() if node != self.node_id}

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], base_dir: Path | str, environ: Mapping[str, str] | None = None
    ) -> NodeConfig:
        """Validate a parsed TOML document; relative paths are resolved against ``base_dir``.

        :param environ: where ``password_env`` is looked up (default ``os.environ``).
        :raises ConfigError: naming the first bad setting.
        """
        return _Parser(Path(base_dir), os.environ if environ is None else environ).config(data)

    def to_mapping(self) -> dict[str, Any]:
        """The TOML document of this config (paths absolute). Contains the secret if it was inline.

        :raises ConfigError: a contract ACL without its chain URL or contract address.
        """
        node: dict[str, Any] = {}
        if self.keystore is not None:
            node["keystore"] = str(self.keystore)
            node["password_env"] = self.password_env
        else:
            node["secret"] = f"0x{self.node_secret:064x}"
        node.update(listen=str(self.listen), http_listen=str(self.http_listen), data_dir=str(self.data_dir))
        if self.min_ready_peers is not None:
            node["min_ready_peers"] = self.min_ready_peers
        if self.admin_public is not None:
            node["admin_public"] = "0x" + self.admin_public.to_bytes().hex()
        acl: dict[str, Any] = {"kind": self.acl.kind}
        if self.acl.kind == "allow_list":
            acl["allowed"] = [checksum_address(a) for a in sorted(self.acl.allowed)]
            acl["keys"] = {
                "0x" + k.hex(): [checksum_address(a) for a in sorted(v)] for k, v in sorted(self.acl.keys.items())
            }
        elif self.acl.kind == "contract":
            if self.acl.chain_url is None or self.acl.contract is None:
                raise ConfigError("acl: a contract checker needs chain_url and contract", key="acl")
            acl["chain_url"] = self.acl.chain_url
            acl["contract"] = checksum_address(self.acl.contract)
        return {
            "node": node,
            "cluster": {"0x" + n.hex(): str(a) for n, a in sorted(self.cluster.items())},
            "timeouts": {
                "session": self.timeouts.session,
                "connect": self.timeouts.connect,
                "keepalive": self.timeouts.keepalive,
                "hedge": self.timeouts.hedge,
            },
            "acl": acl,
            "http": {
                "cors": str(self.cors),
                "header_timeout": self.serving.header_timeout,
                "max_connections_per_address": self.serving.max_connections_per_address,
                **({"tls_cert": str(self.tls.cert), "tls_key": str(self.tls.key)} if self.tls is not None else {}),
            },
            "audit": {"max_bytes": self.audit.max_bytes, "backups": self.audit.backups},
            "quotas": {name: getattr(self.quotas, name) for name in _QUOTA_KEYS},
            "security": {"require_bound_signatures": sorted(self.require_bound_signatures)},
        }


def load_config(path: Path | str, environ: Mapping[str, str] | None = None) -> NodeConfig:
    """Read and validate a node's TOML config file.

    :raises ConfigError: the file cannot be read, is not TOML, or a setting is invalid.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return NodeConfig.from_mapping(data, path.resolve().parent, environ)


# -- parsing ------------------------------------------------------------------------------------

_Section = Mapping[str, Any]


class _Parser:
    """Validates one document; every failure is a ConfigError naming the dotted key."""

    def __init__(self, base_dir: Path, environ: Mapping[str, str]) -> None:
        self.base_dir = base_dir
        self.environ = environ

    @staticmethod
    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{key}: {problem}", key=key)

    def table(self, data: _Section, name: str, allowed: tuple[str, ...] | None, required: bool = True) -> _Section:
        value = data.get(name.rsplit(".", 1)[-1])
        if value is None:
            if required:
                raise self.fail(name, "missing table")
            value = {}
        if not isinstance(value, Mapping):
            raise self.fail(name, "must be a table")
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    raise self.fail(f"{name}.{key}", f"unknown setting (expected one of: {', '.join(allowed)})")
        return value

    def optional_string(self, section: _Section, prefix: str, key: str) -> str | None:
        value = section.get(key)
        if value is not None and not isinstance(value, str):
            raise self.fail(f"{prefix}.{key}", "must be a string")
        return value

    def string(self, section: _Section, prefix: str, key: str) -> str:
        value = self.optional_string(section, prefix, key)
        if value is None:
            raise self.fail(f"{prefix}.{key}", "missing")
        return value

    def hex_value(self, text: str, key: str, what: str, size: int) -> bytes:
        """``0x`` + exactly ``2 * size`` hex digits; the message names ``what``, never the value."""
        return parse_hex(text, what, size, error=lambda problem: self.fail(key, problem))

    def config(self, data: Mapping[str, Any]) -> NodeConfig:
        if not isinstance(data, Mapping):
            raise self.fail("(document)", "must be a table")
        for key in data:
            if key not in _SECTIONS:
                raise self.fail(key, f"unknown section (expected one of: {', '.join(_SECTIONS)})")
        node = self.table(data, "node", _section_keys("node"))
        secret, keystore, password_env = self.secret(node)
        public = Point.generator_mul(secret)
        cluster = self.cluster(self.table(data, "cluster", None))
        if public.to_bytes() not in cluster:
            raise self.fail("cluster", f"does not list this node (0x{public.to_bytes().hex()})")
        data_dir = self.string(node, "node", "data_dir")
        if not data_dir:
            raise self.fail("node.data_dir", "must not be empty")
        http = self.table(data, "http", _section_keys("http"), required=False)
        return NodeConfig(
            node_secret=secret,
            node_public=public,
            listen=self.endpoint(node, "node", "listen", allow_zero=True),
            http_listen=self.endpoint(node, "node", "http_listen", allow_zero=True),
            data_dir=self.base_dir / Path(data_dir).expanduser(),
            cluster=MappingProxyType(cluster),
            timeouts=self.timeouts(self.table(data, "timeouts", _TIMEOUT_KEYS, required=False)),
            acl=self.acl(self.table(data, "acl", _section_keys("acl"))),
            cors=self.cors(http),
            serving=self.serving(http),
            tls=self.tls(http),
            audit=self.audit(self.table(data, "audit", _section_keys("audit"), required=False)),
            quotas=self.quotas(self.table(data, "quotas", _QUOTA_KEYS, required=False)),
            require_bound_signatures=self.bound_operations(
                self.table(data, "security", _section_keys("security"), required=False)),
            keystore=keystore,
            password_env=password_env,
            min_ready_peers=self.min_ready_peers(node, len(cluster)),
            admin_public=self.admin_public(node),
        )

    def admin_public(self, node: _Section) -> Point | None:
        text = self.optional_string(node, "node", "admin_public")
        if text is None:
            return None
        raw = self.hex_value(text, "node.admin_public", "the administrator public key", 64)
        try:
            return Point.from_bytes(raw)
        except InvalidPoint as exc:
            raise self.fail("node.admin_public", "is not a point on secp256k1") from exc

    # -- [node] -----------------------------------------------------------------------------

    def secret(self, node: _Section) -> tuple[int, Path | None, str | None]:
        inline = self.optional_string(node, "node", "secret")
        keystore = self.optional_string(node, "node", "keystore")
        password_env = self.optional_string(node, "node", "password_env")
        if inline is not None:
            if keystore is not None or password_env is not None:
                key = "node.keystore" if keystore is not None else "node.password_env"
                raise self.fail(key, "give either node.secret or node.keystore with node.password_env, not both")
            # The value is never echoed: it is the node's private key.
            value = int.from_bytes(self.hex_value(inline, "node.secret", "the node secret", _SECRET_SIZE), "big")
            if not 0 < value < N:
                raise self.fail("node.secret", "is not a valid secp256k1 private key (must be 1 <= s < n)")
            return value, None, None
        if keystore is None:
            raise self.fail("node.secret", "missing (give node.secret, or node.keystore with node.password_env)")
        if password_env is None:
            raise self.fail("node.password_env", "missing (names the environment variable with the keystore password)")
        if not _ENV_NAME.fullmatch(password_env):
            raise self.fail("node.password_env", f"{password_env!r} is not an environment variable name")
        password = self.environ.get(password_env)
        if password is None:
            raise self.fail("node.password_env", f"environment variable {password_env} is not set")
        path = self.base_dir / Path(keystore).expanduser()
        # keyfile's rules, as for the CLI and the RPC face; its messages never hold the password.
        try:
            raw = unlock_file(path, password)
        except WrongPassword:
            raise self.fail(
                "node.password_env", f"the password in ${password_env} does not decrypt {path} (MAC mismatch)"
            ) from None
        except KeystoreError as exc:
            raise self.fail("node.keystore", str(exc)) from None
        return int.from_bytes(raw, "big"), path, password_env

    def endpoint(self, section: _Section, prefix: str, key: str, allow_zero: bool = False) -> HostPort:
        text = self.string(section, prefix, key)
        try:
            return parse_host_port(text, allow_zero=allow_zero)
        except ValueError as exc:
            raise self.fail(f"{prefix}.{key}", f"{text!r}: {exc}") from None

    # -- [cluster] --------------------------------------------------------------------------

    def cluster(self, section: _Section) -> dict[bytes, HostPort]:
        nodes: dict[bytes, HostPort] = {}
        if not section:
            raise self.fail("cluster", "must list at least this node")
        for key, value in section.items():
            name = f'cluster."{key}"'
            raw = self.hex_value(key, name, "a node id (a public key)", _NODE_ID_SIZE)
            try:
                node = Point.from_bytes(raw).to_bytes()
            except InvalidPoint:
                raise self.fail(name, "is not a point on secp256k1") from None
            if node in nodes:
                raise self.fail(name, "is listed twice (hex case differs)")
            if not isinstance(value, str):
                raise self.fail(name, 'must be a "host:port" string')
            try:
                nodes[node] = parse_host_port(value)
            except ValueError as exc:
                raise self.fail(name, f"{value!r}: {exc}") from None
        return nodes

    def min_ready_peers(self, section: _Section, nodes: int) -> int | None:
        if "min_ready_peers" not in section:
            return None
        value = self.integer(section, "node", "min_ready_peers", 0)
        if value > nodes - 1:
            raise self.fail("node.min_ready_peers", f"must be at most the number of other nodes ({nodes - 1})")
        return value

    # -- [timeouts] -------------------------------------------------------------------------

    def timeouts(self, section: _Section) -> Timeouts:
        values: dict[str, float] = {}
        for key in _TIMEOUT_KEYS:
            if key in section:
                values[key] = self.seconds(section, "timeouts", key)
        return Timeouts(**values)

    def seconds(self, section: _Section, prefix: str, key: str) -> float:
        value = section[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"{prefix}.{key}", "must be a number of seconds")
        if not math.isfinite(value) or value <= 0:
            raise self.fail(f"{prefix}.{key}", "must be a finite number of seconds > 0")
        return float(value)

    def integer(self, section: _Section, prefix: str, key: str, minimum: int) -> int:
        value = section[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(f"{prefix}.{key}", f"must be an integer >= {minimum}")
        return value

    # -- [acl] ------------------------------------------------------------------------------

    def acl(self, section: _Section) -> AclConfig:
        kind = self.string(section, "acl", "kind")
        if kind not in ACL_KINDS:
            raise self.fail("acl.kind", f"{kind!r}: expected one of {', '.join(ACL_KINDS)}")
        own = {"none": (), "allow_list": ("allowed", "keys"), "contract": ("chain_url", "contract")}[kind]
        for key in ("allowed", "keys", "chain_url", "contract"):
            if key in section and key not in own:
                raise self.fail(f"acl.{key}", f"not a setting of acl.kind = {kind!r}")
        if kind == "allow_list":
            allowed = self.addresses(section.get("allowed", []), "acl.allowed")
            keys_section = self.table(section, "acl.keys", None, required=False)
            grants: dict[bytes, frozenset[bytes]] = {}
            for key_id, addresses in keys_section.items():
                name = f'acl.keys."{key_id}"'
                raw = self.hex_value(key_id, name, "a server key id", _KEY_ID_SIZE)
                if raw in grants:
                    raise self.fail(name, "is listed twice (hex case differs)")
                grants[raw] = self.addresses(addresses, name)
            return AclConfig("allow_list", allowed, MappingProxyType(grants))
        if kind == "contract":
            url = self.string(section, "acl", "chain_url")
            if not _CHAIN_URL.fullmatch(url):
                raise self.fail("acl.chain_url", f"{url!r}: expected an http(s):// or ws(s):// URL")
            contract = self.string(section, "acl", "contract")
            return AclConfig("contract", chain_url=url, contract=self.address(contract, "acl.contract"))
        return AclConfig("none")

    def addresses(self, value: object, key: str) -> frozenset[bytes]:
        if not isinstance(value, list):
            raise self.fail(key, "must be a list of 0x addresses")
        result = set()
        for item in value:
            if not isinstance(item, str):
                raise self.fail(key, "must be a list of 0x addresses")
            result.add(self.address(item, key))
        return frozenset(result)

    def address(self, text: str, key: str) -> bytes:
        raw = self.hex_value(text, key, f"address {text!r}", _ADDRESS_SIZE)
        # Mixed case claims an EIP-55 checksum: a mismatch is a mistyped address.
        body = text[2:]
        if body not in (body.lower(), body.upper()) and checksum_address(raw) != text:
            raise self.fail(key, f"{text!r}: EIP-55 checksum mismatch")
        return raw

    # -- [http] and [audit] -----------------------------------------------------------------

    def serving(self, section: _Section) -> ServingLimits:
        defaults = ServingLimits()
        return ServingLimits(
            header_timeout=self.seconds(section, "http", "header_timeout")
            if "header_timeout" in section else defaults.header_timeout,
            max_connections_per_address=self.integer(section, "http", "max_connections_per_address", 1)
            if "max_connections_per_address" in section else defaults.max_connections_per_address,
        )

    def tls(self, section: _Section) -> TlsFiles | None:
        cert = self.optional_string(section, "http", "tls_cert")
        key = self.optional_string(section, "http", "tls_key")
        if cert is None and key is None:
            return None
        if cert is None or key is None:
            missing = "http.tls_cert" if cert is None else "http.tls_key"
            raise self.fail(missing, "missing (https needs both http.tls_cert and http.tls_key)")
        files = TlsFiles(self.base_dir / Path(cert).expanduser(), self.base_dir / Path(key).expanduser())
        files.context("http")  # loaded once here: a missing or mismatched file fails at load, not at start
        return files

    def bound_operations(self, section: _Section) -> frozenset[str]:
        key = "security.require_bound_signatures"
        value = section.get("require_bound_signatures", [])
        if value == "all":
            return BOUND_OPERATIONS
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.fail(key, 'must be "all" or a list of operation names')
        unknown = sorted(set(value) - BOUND_OPERATIONS)
        if unknown:
            raise self.fail(key, f"unknown operation {unknown[0]!r} (expected: {', '.join(sorted(BOUND_OPERATIONS))})")
        return frozenset(value)

    def audit(self, section: _Section) -> AuditSettings:
        defaults = AuditSettings()
        return AuditSettings(
            max_bytes=self.integer(section, "audit", "max_bytes", 1) if "max_bytes" in section else defaults.max_bytes,
            backups=self.integer(section, "audit", "backups", 0) if "backups" in section else defaults.backups,
        )

    def quotas(self, section: _Section) -> QuotaSettings:
        values: dict[str, Any] = {}
        for key in _QUOTA_KEYS:
            if key not in section:
                continue
            if key == "admin_exempt":
                if not isinstance(section[key], bool):
                    raise self.fail("quotas.admin_exempt", "must be true or false")
                values[key] = section[key]
            elif key.endswith(("_rate", "_delay")):
                value = section[key]
                if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                        or value < 0:
                    raise self.fail(f"quotas.{key}", "must be a finite number >= 0")
                values[key] = float(value)
            else:
                values[key] = self.integer(section, "quotas", key, 1 if key == "tracked" else 0)
        return QuotaSettings(**values)

    def cors(self, section: _Section) -> CorsPolicy:
        text = self.optional_string(section, "http", "cors")
        if text is None:
            return CorsPolicy()
        try:
            return CorsPolicy.parse(text)
        except ValueError as exc:
            raise self.fail("http.cors", f"{text!r}: {exc}") from None


# -- writing ------------------------------------------------------------------------------------


def _toml_ready(value: Any, where: str) -> Any:
    """``value`` with None entries left out of tables and paths as strings, for tomli-w."""
    if isinstance(value, Mapping):
        ready = {}
        for key, item in value.items():
            name = f"{where}.{key}" if where else str(key)
            if not isinstance(key, str):
                raise ConfigError(f"{name}: TOML keys are strings", key=name)
            if item is not None:
                ready[key] = _toml_ready(item, name)
        return ready
    if isinstance(value, list | tuple):
        return [_toml_ready(item, where) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def dump_config(config: NodeConfig | Mapping[str, Any]) -> str:
    """TOML text for a config or a config-shaped mapping (None values are left out).

    The result of dumping a :class:`NodeConfig` loads back to an equal config. It holds the node
    secret when that was given inline: write it to a file of mode 0600.

    :raises ConfigError: a value TOML cannot hold.
    """
    data = config.to_mapping() if isinstance(config, NodeConfig) else config
    try:
        return tomli_w.dumps(_toml_ready(data, ""))
    except TypeError as exc:  # tomli-w's error for an unsupported value type
        raise ConfigError(f"cannot write the config as TOML: {exc}") from exc
