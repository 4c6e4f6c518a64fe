"""``cluster init`` (issue 16, item 2): what it writes for N machines loads as N node configs that
agree on the cluster, with keystores that unlock from the environment, the administrator's key,
certificates naming each host, and no password anywhere on disk."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509

from ocean_secret_store.cluster_init import (
    HostSpec,
    compose_for_all,
    compose_for_node,
    init_cluster,
    parse_hosts,
    password_env_name,
    to_yaml,
)
from ocean_secret_store.crypto.curve import Point
from ocean_secret_store.exceptions import ConfigError
from ocean_secret_store.keyfile import unlock_file
from ocean_secret_store.node.config import load_config
from ocean_secret_store.protocol.addresses import HostPort

PASSWORDS = {"NODE0_PW": "correct horse 0", "NODE1_PW": "battery staple 1", "NODE2_PW": "node two's own",
             "ADMIN_PW": "the admin's password"}
HOSTS = ["ss0.example.org", "ss1", "10.1.2.3"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("init") / "cluster"
    init_cluster(out, parse_hosts(HOSTS), 1, password_env="NODE{i}_PW", admin_password_env="ADMIN_PW", tls=True,
                 kdf="pbkdf2", environ=PASSWORDS)
    return out


def test_every_config_loads_and_the_address_books_agree(generated: Path) -> None:
    configs = [load_config(generated / f"node{i}" / "node.toml", environ=PASSWORDS) for i in range(3)]
    expected = {c.node_id: HostPort(host, 8083) for c, host in zip(configs, HOSTS, strict=True)}
    assert len(expected) == 3
    for i, config in enumerate(configs):
        assert dict(config.cluster) == expected
        assert config.listen == HostPort("0.0.0.0", 8083) and config.http_listen == HostPort("0.0.0.0", 8082)
        assert config.password_env == f"NODE{i}_PW"
        assert config.keystore is not None and config.keystore.parent == generated / f"node{i}" / "keystore"
        assert config.data_dir == generated / f"node{i}" / "data" and config.data_dir.is_dir()
        assert config.min_ready_peers == 1  # threshold_max: ready once it can serve every key of t <= 1
        assert config.acl.kind == "none"
    # Each keystore opens only with its own node's password.
    with pytest.raises(ConfigError, match="does not decrypt"):
        load_config(generated / "node1" / "node.toml", environ={**PASSWORDS, "NODE1_PW": PASSWORDS["NODE0_PW"]})
    summary = json.loads((generated / "cluster.json").read_text())
    assert [n["public"] for n in summary["nodes"]] == ["0x" + c.node_id.hex() for c in configs]
    assert summary["threshold_max"] == 1
    assert summary["secret_store_urls"] == ["https://ss0.example.org:8082", "https://ss1:8082", "https://10.1.2.3:8082"]


def test_the_admin_key_is_its_own_keystore_and_every_nodes_admin_public(generated: Path) -> None:
    (keystore,) = (generated / "admin" / "keystore").iterdir()
    secret = int.from_bytes(unlock_file(keystore, PASSWORDS["ADMIN_PW"]), "big")
    admin = Point.generator_mul(secret)
    for i in range(3):
        assert load_config(generated / f"node{i}" / "node.toml", environ=PASSWORDS).admin_public == admin
    assert json.loads((generated / "cluster.json").read_text())["admin_public"] == "0x" + admin.to_bytes().hex()
    assert not any((generated / f"node{i}" / "keystore" / keystore.name).exists() for i in range(3))


def test_certificates_name_each_host_and_container(generated: Path) -> None:
    ca = x509.load_pem_x509_certificate((generated / "ca" / "ca.pem").read_bytes())
    for i, host in enumerate(HOSTS):
        config = load_config(generated / f"node{i}" / "node.toml", environ=PASSWORDS)
        assert config.tls is not None
        cert = x509.load_pem_x509_certificate(config.tls.cert.read_bytes())
        cert.verify_directly_issued_by(ca)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = names.get_values_for_type(x509.DNSName)
        ips = [str(a) for a in names.get_values_for_type(x509.IPAddress)]
        assert host in dns + ips and f"node{i}" in dns
        assert "localhost" not in dns and "127.0.0.1" not in ips  # a deployment's, not the devnet's
        assert (generated / f"node{i}" / "tls" / "ca.pem").read_bytes() == (generated / "ca" / "ca.pem").read_bytes()


def test_no_password_is_written_and_secrets_are_private(generated: Path) -> None:
    files = [p for p in generated.rglob("*") if p.is_file()]
    for path in files:
        data = path.read_bytes()
        assert not any(password.encode() in data for password in PASSWORDS.values()), path
    private = [p for p in files if p.parent.name == "keystore" or p.suffix == ".key"]
    assert len(private) == 3 + 1 + 3 + 1  # node and admin keystores, node and CA keys
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in private)
    assert stat.S_IMODE(generated.stat().st_mode) == 0o700


def test_the_readme_says_which_folder_goes_where(generated: Path) -> None:
    readme = (generated / "README.txt").read_text()
    for i, host in enumerate(HOSTS):
        assert f"node{i}/  ->  {host}" in readme
        assert f"export NODE{i}_PW=" in readme
    assert "admin/  ->  the administrator's machine, NOT the key servers" in readme
    assert "ca.key stays with the operator" in readme
    # An IP address cannot be a container's name: no all-in-one compose file for these hosts.
    assert not (generated / "compose.yaml").exists()


def test_compose_files(generated: Path, tmp_path: Path) -> None:
    text = (generated / "node1" / "compose.yaml").read_text()
    assert "export NODE1_PW=...; docker compose up -d" in text
    assert '    environment:\n      NODE1_PW: "${NODE1_PW:?set NODE1_PW to the keystore password of node1}"' in text
    assert '      - "./tls:/node/tls:ro"\n      - "./data:/node/data"' in text

    out = init_cluster(tmp_path / "c", parse_hosts(["ss0", "ss1"]), 0, kdf="pbkdf2",
                       environ={"OCEAN_SS_NODE_PASSWORD": "p", "OCEAN_SS_ADMIN_PASSWORD": "a"})
    assert out.compose_all is not None and out.compose_all.is_file()
    every = compose_for_all(out.nodes)
    assert list(every["services"]) == ["node0", "node1"]
    node1 = every["services"]["node1"]
    assert node1["networks"] == {"cluster": {"aliases": ["ss1"]}, "clients": {}}
    assert node1["ports"] == ["127.0.0.1::8082"] and "./node1/data:/node/data" in node1["volumes"]
    assert every["networks"]["cluster"] == {"internal": True}
    assert compose_for_node(out.nodes[0])["services"]["node0"]["ports"] == ["8082:8082", "8083:8083"]
    assert out.compose_all.read_text().endswith("\n" + to_yaml(every))


def test_to_yaml_quotes_every_string() -> None:
    doc = {"a": {"b": ["x: y", "${V:-1}"], "c": True, "d": 3, "e": {}, "f": "no"}}
    assert to_yaml(doc, comment="head") == (
        '# head\na:\n  b:\n    - "x: y"\n    - "${V:-1}"\n  c: true\n  d: 3\n  e: {}\n  f: "no"\n')


def test_default_keystores_use_scrypt(tmp_path: Path) -> None:
    plan = init_cluster(tmp_path / "c", [HostSpec("ss0", 8082, 8083)], 0,
                        environ={"OCEAN_SS_NODE_PASSWORD": "p", "OCEAN_SS_ADMIN_PASSWORD": "a"})
    assert json.loads(plan.nodes[0].keystore.read_text())["crypto"]["kdf"] == "scrypt"
    assert json.loads(plan.admin_keystore.read_text())["crypto"]["kdf"] == "scrypt"


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (["a.example", "10.0.0.1"], [HostSpec("a.example", 8082, 8083), HostSpec("10.0.0.1", 8082, 8083)]),
        (["127.0.0.1:9001:9002", "127.0.0.1:9003:9004"],
         [HostSpec("127.0.0.1", 9001, 9002), HostSpec("127.0.0.1", 9003, 9004)]),
        (["[::1]:9001:9002", "fe80::1:2:3", "[::2]"],
         [HostSpec("::1", 9001, 9002), HostSpec("fe80::1:2:3", 8082, 8083), HostSpec("::2", 8082, 8083)]),
    ],
)
def test_parse_hosts(entries: list[str], expected: list[HostSpec]) -> None:
    assert parse_hosts(entries) == expected


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        (["a", "a"], "nodes 0 and 1 both use a port 8082"),
        (["a:1:2", "a:2:3"], "nodes 0 and 1 both use a port 2"),
        (["bad_host"], "bad host"),
        (["a:1"], "not HOST or HOST:HTTP_PORT:CLUSTER_PORT"),
        (["a:0:8"], "port 0 is not in 1..65535"),
    ],
)
def test_parse_hosts_refuses(entries: list[str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_hosts(entries)


def test_init_refuses_before_writing_anything(tmp_path: Path) -> None:
    hosts = parse_hosts(["a", "b"])
    env = {"OCEAN_SS_NODE_PASSWORD": "p", "OCEAN_SS_ADMIN_PASSWORD": "a"}
    with pytest.raises(ConfigError, match=r"environment variable NODE1_PW .* is not set"):
        init_cluster(tmp_path / "x", hosts, 1, password_env="NODE{i}_PW", environ={**env, "NODE0_PW": "p"})
    with pytest.raises(ConfigError, match="OCEAN_SS_ADMIN_PASSWORD"):
        init_cluster(tmp_path / "x", hosts, 1, environ={"OCEAN_SS_NODE_PASSWORD": "p"})
    with pytest.raises(ConfigError, match=r"--threshold-max must be in 0\.\.1"):
        init_cluster(tmp_path / "x", hosts, 2, environ=env)
    assert not (tmp_path / "x").exists()
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "something").write_text("")
    with pytest.raises(ConfigError, match="not an empty folder"):
        init_cluster(tmp_path / "x", hosts, 1, environ=env)
    # A bad [acl] is caught by the node's own parser, and what was written is removed again.
    with pytest.raises(ConfigError, match=r"acl\.chain_url"):
        init_cluster(tmp_path / "y", hosts, 1, acl={"kind": "contract", "chain_url": "nope",
                                                     "contract": "0x" + "11" * 20}, kdf="pbkdf2", environ=env)
    assert not (tmp_path / "y").exists()
    assert password_env_name("NODE{i}_PW", 7) == "NODE7_PW" and password_env_name("ONE", 7) == "ONE"
