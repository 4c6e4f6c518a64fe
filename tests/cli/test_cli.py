"""The command line as a user runs it: a separate process, against a real devnet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocean_secret_store import devnet

CLI = [sys.executable, "-m", "ocean_secret_store.cli"]


def run(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_help_lists_every_command() -> None:
    out = run("--help")
    assert out.returncode == 0
    for command in ("node", "devnet", "keys", "encrypt", "decrypt", "rpc", "provider", "demo"):
        assert command.encode() in out.stdout


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
    devnet.up(state_dir, 3, acl="none")
    try:
        yield state_dir
    finally:
        devnet.down(state_dir)


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
    import functools
    import http.server
    import threading

    state_dir = tmp_path / "dn"
    state = devnet.up(state_dir, 3)
    root = tmp_path / "files"
    root.mkdir()
    (root / "a.txt").write_bytes(b"hello ocean\n" * 100)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        metadata = {"main": {"type": "dataset", "name": "cli", "author": "a", "license": "CC0",
                             "dateCreated": "2026-11-23T00:00:00Z", "price": "0",
                             "files": [{"url": f"http://127.0.0.1:{server.server_address[1]}/a.txt",
                                        "contentType": "text/plain", "name": "a.txt"}]}}
        (tmp_path / "meta.json").write_text(json.dumps(metadata))
        env = {"PUB": state["accounts"]["publisher"]["private_key"], "CON": state["accounts"]["consumer"]["private_key"]}
        published = run("--json", "publish", "--devnet", str(state_dir), "--metadata", str(tmp_path / "meta.json"),
                        "--provider", state["provider_address"], "--key-env", "PUB", env=env)
        assert published.returncode == 0, published.stderr
        ddo = json.loads(published.stdout)
        assert ddo["id"].startswith("did:op:")
        assert metadata["main"]["files"][0]["url"] not in published.stdout.decode()  # never in clear
        # consuming without an agreement is a usage error; with --order it orders, waits and downloads
        assert run("consume", "--devnet", str(state_dir), "--did", ddo["id"], "--key-env", "CON", env=env).returncode == 2
        consumed = run("--json", "consume", "--devnet", str(state_dir), "--did", ddo["id"], "--order",
                       "--dest", str(tmp_path / "dl"), "--key-env", "CON", env=env)
        assert consumed.returncode == 0, consumed.stderr
        files = json.loads(consumed.stdout)["files"]
        assert [Path(f).read_bytes() for f in files] == [b"hello ocean\n" * 100]
    finally:
        server.shutdown()
        devnet.down(state_dir)
