"""Node configuration: a valid file, every kind of bad setting named by its key, keystores, dump/load."""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_utils import to_checksum_address as checksum_address

from ocean_secret_store.crypto.curve import N, Point, random_scalar
from ocean_secret_store.crypto.hashes import address_of
from ocean_secret_store.exceptions import ConfigError
from ocean_secret_store.node.config import AuditSettings, NodeConfig, Timeouts, dump_config, load_config
from ocean_secret_store.node.cors import CorsPolicy
from ocean_secret_store.node.storage import DB_FILENAME
from ocean_secret_store.protocol.addresses import HostPort
from ocean_secret_store.serving import ServingLimits

SECRETS = [random_scalar() for _ in range(3)]
PUBLICS = [Point.generator_mul(s) for s in SECRETS]
USER = Point.generator_mul(random_scalar())
KEY_ID = "0x" + "ab" * 32


def _hex_public(i: int) -> str:
    return "0x" + PUBLICS[i].to_bytes().hex()


def _mapping() -> dict[str, Any]:
    return {
        "node": {
            "secret": f"0x{SECRETS[0]:064x}",
            "listen": "127.0.0.1:12000",
            "http_listen": "127.0.0.1:12001",
            "data_dir": "node0",
        },
        "cluster": {_hex_public(i): f"127.0.0.1:{12000 + 10 * i}" for i in range(3)},
        "timeouts": {"session": 3, "connect": 0.5},
        "acl": {
            "kind": "allow_list",
            "allowed": [checksum_address(address_of(USER))],
            "keys": {KEY_ID: ["0x" + "12" * 20]},
        },
        "http": {"cors": "http://a.example,null"},
    }


def _write(tmp_path: Path, text: str, name: str = "node.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_hand_written_config(tmp_path: Path) -> None:
    text = f"""
[node]
secret = "0x{SECRETS[0]:064x}"
listen = "127.0.0.1:12000"
http_listen = "0.0.0.0:12001"
data_dir = "data/node0"

[cluster]
"{_hex_public(0)}" = "127.0.0.1:12000"
"{_hex_public(1).upper().replace("0X", "0x")}" = "node1.local:12010"
"{_hex_public(2)}" = "[::1]:12020"

[timeouts]
session = 3
keepalive = 20.5

[acl]
kind = "allow_list"
allowed = ["{checksum_address(address_of(USER))}"]

[acl.keys]
"{KEY_ID}" = ["0x{"12" * 20}"]

[http]
cors = "*"
"""
    config = load_config(_write(tmp_path, text))
    assert config.node_secret == SECRETS[0]
    assert config.node_public == PUBLICS[0]
    assert config.node_id == PUBLICS[0].to_bytes()
    assert config.address == address_of(PUBLICS[0])
    assert config.listen == HostPort("127.0.0.1", 12000)
    assert config.http_listen == HostPort("0.0.0.0", 12001)
    assert config.data_dir == tmp_path.resolve() / "data" / "node0"
    assert config.storage_path == config.data_dir / DB_FILENAME
    assert dict(config.cluster) == {
        PUBLICS[0].to_bytes(): HostPort("127.0.0.1", 12000),
        PUBLICS[1].to_bytes(): HostPort("node1.local", 12010),
        PUBLICS[2].to_bytes(): HostPort("::1", 12020),
    }
    assert set(config.peers) == {PUBLICS[1].to_bytes(), PUBLICS[2].to_bytes()}
    assert config.timeouts == Timeouts(session=3.0, connect=2.0, keepalive=20.5)
    assert config.acl.kind == "allow_list"
    assert config.acl.allowed == {address_of(USER)}
    assert dict(config.acl.keys) == {bytes.fromhex("ab" * 32): frozenset({bytes.fromhex("12" * 20)})}
    assert config.cors == CorsPolicy(allow_all=True)
    assert config.keystore is None and config.password_env is None


def test_defaults_for_optional_tables(tmp_path: Path) -> None:
    data = _mapping()
    del data["timeouts"], data["http"]
    data["acl"] = {"kind": "none"}
    config = NodeConfig.from_mapping(data, tmp_path)
    assert config.timeouts == Timeouts(5.0, 2.0, 1.0, 0.5)
    assert config.cors == CorsPolicy(allow_all=False, origins=())
    assert config.serving == ServingLimits(header_timeout=10.0, max_connections_per_address=256)
    assert config.audit == AuditSettings(max_bytes=64 * 1024 * 1024, backups=10)
    assert config.acl.kind == "none"


def test_contract_acl(tmp_path: Path) -> None:
    data = _mapping()
    contract = "0x" + "cd" * 20
    data["acl"] = {"kind": "contract", "chain_url": "http://127.0.0.1:8545", "contract": contract}
    config = NodeConfig.from_mapping(data, tmp_path)
    assert (config.acl.kind, config.acl.chain_url, config.acl.contract) == (
        "contract", "http://127.0.0.1:8545", bytes.fromhex("cd" * 20)
    )


@pytest.mark.parametrize(
    ("setting", "policy"),
    [
        ("none", CorsPolicy()),
        ("*", CorsPolicy(allow_all=True)),
        ("all", CorsPolicy(allow_all=True)),
        ("any", CorsPolicy(allow_all=True)),
        ("http://a.example", CorsPolicy(origins=("http://a.example",))),
        ("http://a.example, null,*.b.example", CorsPolicy(origins=("http://a.example", "null", "*.b.example"))),
    ],
)
def test_cors_settings(setting: str, policy: CorsPolicy) -> None:
    assert CorsPolicy.parse(setting) == policy


def test_repr_hides_the_secret(tmp_path: Path) -> None:
    config = NodeConfig.from_mapping(_mapping(), tmp_path)
    text = repr(config)
    assert f"{SECRETS[0]:064x}" not in text and str(SECRETS[0]) not in text
    assert "node_secret" not in text


# -- bad configs --------------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _set(section: str, key: str, value: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        data.setdefault(section, {})[key] = value

    return mutate


def _delete(section: str, key: str | None = None) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        if key is None:
            del data[section]
        else:
            del data[section][key]

    return mutate


def _acl(**acl: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        data["acl"] = acl

    return mutate


def _drop_self(data: dict[str, Any]) -> None:
    del data["cluster"][_hex_public(0)]


def _off_curve(data: dict[str, Any]) -> None:
    data["cluster"]["0x" + "00" * 63 + "07"] = "127.0.0.1:1"


def _extra_section(data: dict[str, Any]) -> None:
    data["extra"] = {}


def _duplicate_case(data: dict[str, Any]) -> None:
    data["cluster"][_hex_public(1).upper().replace("0X", "0x")] = "127.0.0.1:2"


BAD = [
    (_set("node", "secret", "0x1234"), "node.secret"),
    (_set("node", "secret", "0x" + "00" * 32), "node.secret"),
    (_set("node", "secret", f"0x{N:064x}"), "node.secret"),
    (_set("node", "secret", 5), "node.secret"),
    (_delete("node", "secret"), "node.secret"),
    (_set("node", "keystore", "k.json"), "node.keystore"),
    (_set("node", "listen", "127.0.0.1"), "node.listen"),
    (_set("node", "listen", "127.0.0.1:70000"), "node.listen"),
    (_set("node", "listen", "::1:80"), "node.listen"),
    (_delete("node", "http_listen"), "node.http_listen"),
    (_set("node", "http_listen", "bad host:80"), "node.http_listen"),
    (_delete("node", "data_dir"), "node.data_dir"),
    (_set("node", "data_dir", ""), "node.data_dir"),
    (_set("node", "threshold", 1), "node.threshold"),
    (_delete("node"), "node"),
    (_extra_section, "extra"),
    (_delete("cluster"), "cluster"),
    (_drop_self, "cluster"),
    (_set("cluster", "0x1234", "127.0.0.1:1"), 'cluster."0x1234"'),
    (_off_curve, 'cluster."0x' + "00" * 63 + '07"'),
    (_set("cluster", _hex_public(1), "127.0.0.1:0"), f'cluster."{_hex_public(1)}"'),
    (_set("cluster", _hex_public(1), 12010), f'cluster."{_hex_public(1)}"'),
    (_duplicate_case, f'cluster."{_hex_public(1).upper().replace("0X", "0x")}"'),
    (_set("timeouts", "session", 0), "timeouts.session"),
    (_set("timeouts", "connect", -1.0), "timeouts.connect"),
    (_set("timeouts", "keepalive", float("inf")), "timeouts.keepalive"),
    (_set("timeouts", "session", "5"), "timeouts.session"),
    (_set("timeouts", "session", True), "timeouts.session"),
    (_set("timeouts", "idle", 1.0), "timeouts.idle"),
    (_delete("acl"), "acl"),
    (_acl(), "acl.kind"),
    (_acl(kind="maybe"), "acl.kind"),
    (_acl(kind="none", allowed=[]), "acl.allowed"),
    (_acl(kind="allow_list", allowed="0x" + "12" * 20), "acl.allowed"),
    (_acl(kind="allow_list", allowed=["0x12"]), "acl.allowed"),
    (_acl(kind="allow_list", allowed=["0x" + "aB" * 20]), "acl.allowed"),
    (_acl(kind="allow_list", keys={"0x12": []}), 'acl.keys."0x12"'),
    (_acl(kind="allow_list", keys={KEY_ID: ["nope"]}), f'acl.keys."{KEY_ID}"'),
    (_acl(kind="allow_list", keys=[]), "acl.keys"),
    (_acl(kind="allow_list", chain_url="http://x"), "acl.chain_url"),
    (_acl(kind="contract", contract="0x" + "12" * 20), "acl.chain_url"),
    (_acl(kind="contract", chain_url="ftp://x", contract="0x" + "12" * 20), "acl.chain_url"),
    (_acl(kind="contract", chain_url="http://x"), "acl.contract"),
    (_acl(kind="contract", chain_url="http://x", contract="0x12"), "acl.contract"),
    (_set("http", "cors", "a,,b"), "http.cors"),
    (_set("http", "cors", ""), "http.cors"),
    (_set("http", "cors", 1), "http.cors"),
    (_set("http", "origins", "*"), "http.origins"),
    (_set("http", "header_timeout", 0), "http.header_timeout"),
    (_set("http", "header_timeout", "10"), "http.header_timeout"),
    (_set("http", "header_timeout", float("nan")), "http.header_timeout"),
    (_set("http", "max_connections_per_address", 0), "http.max_connections_per_address"),
    (_set("http", "max_connections_per_address", 2.5), "http.max_connections_per_address"),
    (_set("http", "max_connections_per_address", True), "http.max_connections_per_address"),
    (_set("audit", "max_bytes", 0), "audit.max_bytes"),
    (_set("audit", "max_bytes", "64M"), "audit.max_bytes"),
    (_set("audit", "backups", -1), "audit.backups"),
    (_set("audit", "keep", 3), "audit.keep"),
]


@pytest.mark.parametrize(("mutate", "key"), BAD, ids=[f"{i}-{k}" for i, (_, k) in enumerate(BAD)])
def test_bad_setting_is_named(tmp_path: Path, mutate: Mutation, key: str) -> None:
    data = copy.deepcopy(_mapping())
    mutate(data)
    with pytest.raises(ConfigError) as info:
        NodeConfig.from_mapping(data, tmp_path)
    assert info.value.key == key
    assert str(info.value).startswith(key + ":")
    assert f"{SECRETS[0]:064x}" not in str(info.value)


def test_bad_secret_is_not_echoed(tmp_path: Path) -> None:
    data = _mapping()
    almost = f"0x{SECRETS[1]:064x}"[:-1] + "g"
    data["node"]["secret"] = almost
    with pytest.raises(ConfigError) as info:
        NodeConfig.from_mapping(data, tmp_path)
    assert almost not in str(info.value) and almost[2:-1] not in str(info.value)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read") as missing:
        load_config(tmp_path / "absent.toml")
    assert missing.value.key is None
    with pytest.raises(ConfigError, match="not valid TOML") as broken:
        load_config(_write(tmp_path, "[node\nsecret = 1\n"))
    assert broken.value.key is None


# -- keystores ----------------------------------------------------------------------------------


def _keystore(tmp_path: Path, secret: int, password: str) -> Path:
    # A light KDF: scrypt would cost most of a second per unlock (architecture.md, traps).
    keyfile = Account.encrypt(secret.to_bytes(32, "big"), password, kdf="pbkdf2", iterations=2)
    path = tmp_path / "keys" / "node0.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(keyfile), encoding="utf-8")
    return path


def _keystore_mapping() -> dict[str, Any]:
    data = _mapping()
    del data["node"]["secret"]
    data["node"].update(keystore="keys/node0.json", password_env="NODE0_PASSWORD")
    return data


def test_keystore_with_password_from_environment(tmp_path: Path) -> None:
    path = _keystore(tmp_path, SECRETS[0], "correct horse")
    config = NodeConfig.from_mapping(_keystore_mapping(), tmp_path, environ={"NODE0_PASSWORD": "correct horse"})
    assert config.node_secret == SECRETS[0]
    assert config.node_public == PUBLICS[0]
    assert config.keystore == path
    assert config.password_env == "NODE0_PASSWORD"


def test_keystore_password_from_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _keystore(tmp_path, SECRETS[0], "pw")
    monkeypatch.setenv("NODE0_PASSWORD", "pw")
    assert NodeConfig.from_mapping(_keystore_mapping(), tmp_path).node_secret == SECRETS[0]


def test_keystore_wrong_password(tmp_path: Path) -> None:
    _keystore(tmp_path, SECRETS[0], "right")
    with pytest.raises(ConfigError) as info:
        NodeConfig.from_mapping(_keystore_mapping(), tmp_path, environ={"NODE0_PASSWORD": "wrong-password"})
    assert info.value.key == "node.password_env"
    assert "wrong-password" not in str(info.value)


@pytest.mark.parametrize(
    ("prepare", "environ", "key"),
    [
        ("none", {"NODE0_PASSWORD": "pw"}, "node.keystore"),
        ("garbage", {"NODE0_PASSWORD": "pw"}, "node.keystore"),
        ("not-keystore", {"NODE0_PASSWORD": "pw"}, "node.keystore"),
        ("good", {}, "node.password_env"),
    ],
)
def test_keystore_problems_are_named(tmp_path: Path, prepare: str, environ: dict[str, str], key: str) -> None:
    if prepare == "good":
        _keystore(tmp_path, SECRETS[0], "pw")
    elif prepare != "none":
        (tmp_path / "keys").mkdir()
        content = "{not json" if prepare == "garbage" else json.dumps({"version": 3})
        (tmp_path / "keys" / "node0.json").write_text(content)
    with pytest.raises(ConfigError) as info:
        NodeConfig.from_mapping(_keystore_mapping(), tmp_path, environ=environ)
    assert info.value.key == key


def test_keystore_needs_password_env(tmp_path: Path) -> None:
    data = _keystore_mapping()
    del data["node"]["password_env"]
    with pytest.raises(ConfigError) as info:
        NodeConfig.from_mapping(data, tmp_path, environ={})
    assert info.value.key == "node.password_env"
    data["node"]["password_env"] = "NOT A NAME"
    with pytest.raises(ConfigError) as bad_name:
        NodeConfig.from_mapping(data, tmp_path, environ={})
    assert bad_name.value.key == "node.password_env"


# -- dump and load ------------------------------------------------------------------------------


def _round_trip(tmp_path: Path, config: NodeConfig, environ: dict[str, str] | None = None) -> NodeConfig:
    other_dir = tmp_path / "elsewhere"
    other_dir.mkdir(exist_ok=True)
    return load_config(_write(other_dir, dump_config(config)), environ=environ)


def test_dump_load_round_trip_inline_secret(tmp_path: Path) -> None:
    data = _mapping()
    data["cluster"][_hex_public(2)] = "[::1]:12020"
    data["http"].update(header_timeout=2, max_connections_per_address=16)
    data["audit"] = {"max_bytes": 4096, "backups": 0}
    config = load_config(_write(tmp_path, dump_config(data)))
    assert config.http_listen == HostPort("127.0.0.1", 12001)
    assert config.serving == ServingLimits(2.0, 16)
    assert config.audit == AuditSettings(4096, 0)
    assert _round_trip(tmp_path, config) == config


def test_dump_load_round_trip_keystore_and_contract(tmp_path: Path) -> None:
    _keystore(tmp_path, SECRETS[0], "pw")
    data = _keystore_mapping()
    data["acl"] = {"kind": "contract", "chain_url": "ws://127.0.0.1:8546/x", "contract": "0x" + "ef" * 20}
    data["http"] = {"cors": "none"}
    environ = {"NODE0_PASSWORD": "pw"}
    config = NodeConfig.from_mapping(data, tmp_path, environ=environ)
    text = dump_config(config)
    assert f"{SECRETS[0]:064x}" not in text
    assert _round_trip(tmp_path, config, environ) == config


def test_dump_of_a_mapping_quotes_strings(tmp_path: Path) -> None:
    data: dict[str, Any] = {
        "title": 'quote " backslash \\ tab \t newline \n bell \x07 del \x7f ünïcode',
        "flag": True,
        "count": 3,
        "ratio": 0.25,
        "tiny": 1e-5,
        "items": ["a", "b c", 1],
        "empty": {},
        "outer": {"x": 1, "inner table": {"dotted.key": "v", "rows": [{"a": 1}, {"b": "2"}]}},
        "skipped": None,
    }
    parsed = tomllib.loads(dump_config(data))
    del data["skipped"]
    assert parsed == data


def test_dump_rejects_unsupported_values() -> None:
    with pytest.raises(ConfigError):
        dump_config({"node": {"when": object()}})
