"""The deployment commands on the command line: ``tools install-anvil`` and ``cluster init``'s
options, usage errors and help texts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ocean_secret_store import cluster_init
from ocean_secret_store.cli import main
from ocean_secret_store.tools import ANVIL_VERSION, platform_package
from tests.test_tools import _fake_npm


def test_help_lists_the_deploy_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "tools" in out and "cluster" in out


def test_cluster_init_help_states_the_modules_defaults(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # The options default to None (no import of cluster_init for --help), so the help text spells the
    # defaults out: they must be cluster_init's.
    monkeypatch.setenv("COLUMNS", "1000")  # argparse would break ocean-secret-store:latest at its hyphen
    assert main(["cluster", "init", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for value in (cluster_init.DEFAULT_HTTP_PORT, cluster_init.DEFAULT_CLUSTER_PORT, cluster_init.DEFAULT_TLS_DAYS,
                  cluster_init.DEFAULT_PASSWORD_ENV, cluster_init.DEFAULT_ADMIN_PASSWORD_ENV,
                  cluster_init.DEFAULT_IMAGE):
        assert f"default {value}" in out, value


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--hosts", "a,b"], "--acl contract (the default) needs --chain-url URL and --acl-contract"),
        (["--hosts", "a,b", "--acl", "none", "--nodes", "3"], "--nodes 3 but --hosts names 2 host(s)"),
        (["--hosts", "a", "--hosts", "a", "--acl", "none"], "nodes 0 and 1 both use a port 8082"),
        (["--hosts", "a", "--acl", "none", "--chain-url", "http://x:1"], "are for --acl contract"),
    ],
)
def test_cluster_init_usage_errors(args: list[str], problem: str, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cluster", "init", "--threshold-max", "0", "--out", str(tmp_path / "c"), *args]) == 2
    assert problem in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_cluster_init_without_a_password_fails_naming_the_variable(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCEAN_SS_NODE_PASSWORD", raising=False)
    assert main(["cluster", "init", "--threshold-max", "0", "--out", str(tmp_path / "c"), "--hosts", "a",
                 "--acl", "none"]) == 1
    assert "environment variable OCEAN_SS_NODE_PASSWORD" in capsys.readouterr().err


def test_cluster_init_with_a_contract_acl(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCEAN_SS_NODE_PASSWORD", "p")
    monkeypatch.setenv("OCEAN_SS_ADMIN_PASSWORD", "a")
    contract = "0x" + "ab" * 20
    assert main(["--json", "cluster", "init", "--threshold-max", "1", "--out", str(tmp_path / "c"),
                 "--hosts", "ss0,ss1", "--chain-url", "http://chain:8545", "--acl-contract", contract,
                 "--kdf", "pbkdf2", "--http-port", "9000", "--cluster-port", "9001"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["secret_store_urls"] == ["http://ss0:9000", "http://ss1:9000"]
    toml = (tmp_path / "c" / "node1" / "node.toml").read_text()
    assert 'kind = "contract"' in toml and 'chain_url = "http://chain:8545"' in toml
    assert 'listen = "0.0.0.0:9001"' in toml


def test_tools_install_anvil(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_npm(tmp_path / "bin", tmp_path / "npm.log")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["--json", "tools", "install-anvil"]) == 0
    answer = json.loads(capsys.readouterr().out)
    expected = (tmp_path / "cache" / "ocean-secret-store" / "anvil" / ANVIL_VERSION / "node_modules" / "@foundry-rs"
                / platform_package() / "bin" / "anvil")
    assert answer == {"anvil": str(expected), "version": ANVIL_VERSION}
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert main(["tools", "install-anvil", "--version", "0.0.1"]) == 1
    assert "npm not found on PATH" in capsys.readouterr().err
