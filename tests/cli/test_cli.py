"""The command line as a user runs it: a separate process, against a real devnet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from eth_account import Account

from ocean_secret_store.chain.keeper import KEEPER_CONTRACTS
from ocean_secret_store.cli import main
from ocean_secret_store.testing.devnets import running_devnet

CLI = [sys.executable, "-m", "ocean_secret_store.cli"]


def run(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None
        ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, timeout=120, check=False,
                          env={**os.environ, **(env or {})})


def test_help_lists_every_command() -> None:
    out = run("--help")
    assert out.returncode == 0
    for command in ("node", "devnet", "keys", "encrypt", "decrypt", "rpc", "provider", "files", "aquarius", "demo",
                    "anvil-path"):
        assert command.encode() in out.stdout


def test_anvil_path_runs_the_installed_binary(tmp_path: Path) -> None:
    # `make setup` checks its anvil through this command; a missing binary is a one-line failure.
    out = run("--json", "anvil-path", "--check")
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert Path(answer["anvil"]).is_file()
    assert answer["version"].startswith("anvil")
    missing = run("anvil-path", env={"OCEAN_SS_ANVIL": str(tmp_path / "no-anvil")})
    assert missing.returncode == 1
    assert missing.stderr.decode().startswith("error: anvil not found at")


def test_rpc_and_provider_are_ordinary_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("rpc", "provider"):
        assert main([command, "--help"]) == 0
        assert f"usage: ocean-secret-store {command}" in capsys.readouterr().out
    assert main(["rpc", "--no-such-option"]) == 2
    assert main(["--json", "provider", "--no-such-option"]) == 2


def _provider_config(tmp_path: Path, backend: str = "provider-key") -> Path:
    """A provider INI that needs no chain to start (the events handler stays off)."""
    contracts = {name: "0x" + os.urandom(20).hex() for name in KEEPER_CONTRACTS}
    (tmp_path / "contracts.json").write_text(json.dumps({"contracts": contracts}))
    config = tmp_path / "provider.ini"
    config.write_text(
        "[keeper-contracts]\nkeeper.url = http://127.0.0.1:9\ncontracts.file = contracts.json\n"
        "[secret-store]\ncluster_urls = http://127.0.0.1:9\n"
        "[resources]\nmetadata.store = ddo.db\n"
        f"[provider]\nbackend = {backend}\naccount.key_env = TEST_PROVIDER_KEY\nlisten = 127.0.0.1:0\n"
    )
    return config


def test_provider_exit_codes(tmp_path: Path) -> None:
    config = _provider_config(tmp_path, backend="secret-store")
    env = {"TEST_PROVIDER_KEY": Account.create().key.hex(), "OCEAN_DISABLED_PLUGINS": "secret_store"}
    # this package's plugin is blocked: no backend is on offer, whatever the config names (exit 1, one line)
    blocked = run("provider", "--config", str(config), "--no-events", env=env)
    assert blocked.returncode == 1, blocked.stderr
    assert blocked.stderr.count(b"\n") == 1 and b"no access backend named 'secret-store'" in blocked.stderr
    debug = run("--debug", "provider", "--config", str(config), "--no-events", env=env)
    assert debug.returncode == 1 and b"Traceback" in debug.stderr
    # a missing key variable is bad usage (exit 2)
    assert run("provider", "--config", str(config), env={"TEST_PROVIDER_KEY": ""}).returncode == 2


def test_provider_serves_with_json_and_a_port_file(tmp_path: Path) -> None:
    config = _provider_config(tmp_path)
    port_file = tmp_path / "provider.port"
    process = subprocess.Popen(
        [*CLI, "--json", "provider", "--config", str(config), "--no-events", "--port-file", str(port_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "TEST_PROVIDER_KEY": "0x" + "11" * 32},
    )
    try:
        assert process.stdout is not None
        url = json.loads(process.stdout.readline())["url"]
        assert url == f"http://127.0.0.1:{int(port_file.read_text())}"
        info = requests.get(url + "/api/v1/brizo", timeout=10).json()
        assert info["backend"] == "provider-key"
        assert info["providerAddress"] == Account.from_key("0x" + "11" * 32).address
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=20)
    assert code == 0  # SIGINT and SIGTERM are a service's normal stop


def test_aquarius_serves_a_sqlite_store_with_json_and_a_port_file(tmp_path: Path) -> None:
    assert main(["aquarius", "--db", str(tmp_path / "absent" / "m.sqlite")]) == 2  # its folder must exist
    port_file = tmp_path / "aquarius.port"
    process = subprocess.Popen(
        [*CLI, "--json", "aquarius", "--db", str(tmp_path / "m.sqlite"), "--listen", "127.0.0.1:0",
         "--port-file", str(port_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None
        url = json.loads(process.stdout.readline())["url"]
        assert url == f"http://127.0.0.1:{int(port_file.read_text())}"
        assert requests.get(url + "/api/v1/aquarius/assets", timeout=10).json() == {"ids": []}
        assert (tmp_path / "m.sqlite").is_file()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
    assert code == 0


def test_keys_generate_and_show(tmp_path: Path) -> None:
    out = run("--json", "keys", "generate", "--out", str(tmp_path / "node.key"))
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert (tmp_path / "node.key").stat().st_mode & 0o777 == 0o600
    secret = (tmp_path / "node.key").read_text().strip()
    assert secret[2:] not in out.stdout.decode()  # the private key is never printed
    shown = run("--json", "keys", "show", "--key-env", "NODE_KEY", env={"NODE_KEY": secret})
    assert json.loads(shown.stdout) == {"public": info["public"], "address": info["address"]}
    # refuses to overwrite, and a missing variable is a usage error with one readable line
    assert run("keys", "generate", "--out", str(tmp_path / "node.key")).returncode == 1
    missing = run("keys", "show", "--key-env", "NOT_SET_ANYWHERE")
    assert missing.returncode == 2 and missing.stderr.count(b"\n") == 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state_dir = tmp_path_factory.mktemp("cli-devnet")
    with running_devnet(state_dir, 3, acl="none"):
        yield state_dir


@pytest.mark.integration
def test_encrypt_decrypt_round_trip_through_the_cli(cluster: Path, tmp_path: Path) -> None:
    env = {"ACCOUNT_KEY": "0x" + os.urandom(32).hex()}
    key_id = os.urandom(32).hex()
    plain = os.urandom(200_000)
    (tmp_path / "plain.bin").write_bytes(plain)
    enc = run("--json", "encrypt", "--key-id", key_id, "--devnet", str(cluster), "--key-env", "ACCOUNT_KEY",
              "--threshold", "1", "--in", str(tmp_path / "plain.bin"), "--out", str(tmp_path / "doc.enc"), env=env)
    assert enc.returncode == 0, enc.stderr
    report = json.loads(enc.stdout)
    assert report["key_id"] == "0x" + key_id and report["bytes_written"] == len(plain) + 16
    # decrypt from a pipe to stdout
    dec = run("decrypt", "--key-id", key_id, "--devnet", str(cluster), "--key-env", "ACCOUNT_KEY",
              env=env, stdin=(tmp_path / "doc.enc").read_bytes())
    assert dec.returncode == 0, dec.stderr
    assert dec.stdout == plain
    # another account may not store under the same key id; an unknown key id is a failure (exit 1)
    again = run("encrypt", "--key-id", key_id, "--devnet", str(cluster), "--key-env", "ACCOUNT_KEY",
                "--in", str(tmp_path / "plain.bin"), "--out", str(tmp_path / "x"), env=env)
    assert again.returncode == 1 and b"already generated" in again.stderr
    unknown = run("decrypt", "--key-id", os.urandom(32).hex(), "--devnet", str(cluster), "--key-env",
                  "ACCOUNT_KEY", env=env, stdin=b"x" * 20)
    assert unknown.returncode == 1 and b"not found" in unknown.stderr
    assert b"Traceback" not in unknown.stderr
    bad = run("decrypt", "--key-id", "0x1234", "--devnet", str(cluster), "--key-env", "ACCOUNT_KEY", env=env)
    assert bad.returncode == 2


@pytest.mark.integration
def test_sign_prints_what_ecrecover_takes_for_the_key_address(cluster: Path) -> None:
    from ocean_secret_store.client.client import SecretStoreClient
    from ocean_secret_store.crypto.hashes import address_of, checksum_address
    from ocean_secret_store.devnet import DevnetState

    account = Account.create()
    env = {"ACCOUNT_KEY": account.key.hex()}
    state = DevnetState.require(cluster)
    key_id, other = os.urandom(32), os.urandom(32)
    with SecretStoreClient([n.http_url for n in state.nodes], account) as client:
        address = checksum_address(address_of(client.generate_server_key(key_id, 1)))  # 2t+1 = 3 nodes sign
        client.generate_server_key(other, 2)  # 2t >= N: cannot sign
    message_hash = os.urandom(32)
    common = ["sign", "--key-id", "0x" + key_id.hex(), "--hash", "0x" + message_hash.hex(), "--devnet", str(cluster),
              "--key-env", "ACCOUNT_KEY"]
    out = run("--json", *common, "--address", address, env=env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["signer"] == address and report["v"] in (0, 1)
    signature = bytes.fromhex(report["signature"][2:])
    assert len(signature) == 65 and report["r"][2:] + report["s"][2:] == signature[:64].hex()
    ethereum = run(*common, "--ethereum", "--node", state.nodes[1].http_url, env=env)
    assert ethereum.returncode == 0, ethereum.stderr
    signed = bytes.fromhex(ethereum.stdout.decode().strip()[2:])
    assert signed[64] in (27, 28) and signed[:32] != signature[:32]  # a new signature: a new nonce
    assert Account._recover_hash(message_hash, signature=signed) == address
    wrong = run(*common, "--address", "0x" + os.urandom(20).hex(), env=env)
    assert wrong.returncode == 1 and b"does not recover to the key's address" in wrong.stderr
    refused = run("sign", "--key-id", other.hex(), "--hash", message_hash.hex(), "--devnet", str(cluster),
                  "--key-env", "ACCOUNT_KEY", env=env)
    assert refused.returncode == 1 and b"Consensus unreachable" in refused.stderr
    bad = run("sign", "--key-id", key_id.hex(), "--hash", "0x1234", "--devnet", str(cluster), "--key-env",
              "ACCOUNT_KEY", env=env)
    assert bad.returncode == 2 and b"--hash" in bad.stderr


@pytest.mark.integration
def test_devnet_status_json(cluster: Path) -> None:
    out = run("--json", "devnet", "status", "--state-dir", str(cluster))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["healthy"] and len(report["nodes"]) == 3 and report["chain"]["running"]


@pytest.mark.integration
def test_devnet_up_json_keeps_secrets_in_the_state_file(tmp_path: Path) -> None:
    state_dir = tmp_path / "dn"
    out = run("--json", "devnet", "up", "--nodes", "1", "--acl", "none", "--state-dir", str(state_dir))
    try:
        assert out.returncode == 0, out.stderr
        printed = json.loads(out.stdout)
        state = json.loads((state_dir / "devnet.json").read_text())
        assert printed["secret_store_url"] == state["secret_store_url"]
        assert (state_dir / "devnet.json").stat().st_mode & 0o777 == 0o600
        for role in state["accounts"].values():
            assert role["private_key"][2:] not in out.stdout.decode()
        for account in state["rpc_accounts"]:
            assert account["password"] not in out.stdout.decode()
    finally:
        assert run("devnet", "down", "--state-dir", str(state_dir)).returncode == 0


@pytest.mark.integration
def test_publish_and_consume_through_the_cli(tmp_path: Path) -> None:
    state_dir = tmp_path / "dn"
    with running_devnet(state_dir, 3) as state:
        # the devnet's file server: the one loopback origin its provider fetches from
        (Path(str(state.files_dir)) / "a.txt").write_bytes(b"hello ocean\n" * 100)
        metadata: dict[str, Any] = {"main": {"type": "dataset", "name": "cli", "author": "a", "license": "CC0",
                             "dateCreated": "2026-11-23T00:00:00Z", "price": "0",
                             "files": [{"url": f"{state.files_url}/a.txt",
                                        "contentType": "text/plain", "name": "a.txt"}]}}
        (tmp_path / "meta.json").write_text(json.dumps(metadata))
        env = {"PUB": state.accounts["publisher"].private_key, "CON": state.accounts["consumer"].private_key}
        published = run("--json", "publish", "--devnet", str(state_dir), "--metadata", str(tmp_path / "meta.json"),
                        "--provider", state.provider_address, "--key-env", "PUB", env=env)
        assert published.returncode == 0, published.stderr
        ddo = json.loads(published.stdout)
        assert ddo["id"].startswith("did:op:")
        assert metadata["main"]["files"][0]["url"] not in published.stdout.decode()  # never in clear
        # consuming without an agreement is a usage error; with --order it orders, waits and downloads
        unordered = run("consume", "--devnet", str(state_dir), "--did", ddo["id"], "--key-env", "CON", env=env)
        assert unordered.returncode == 2
        consumed = run("--json", "consume", "--devnet", str(state_dir), "--did", ddo["id"], "--order",
                       "--dest", str(tmp_path / "dl"), "--key-env", "CON", env=env)
        assert consumed.returncode == 0, consumed.stderr
        files = json.loads(consumed.stdout)["files"]
        assert [Path(f).read_bytes() for f in files] == [b"hello ocean\n" * 100]
