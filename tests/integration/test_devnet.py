"""The devnet itself: its state file keeps the contract's fields, and a port taken between the
probe and a child's bind no longer fails ``up``."""

from __future__ import annotations

import configparser
import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from ocean_secret_store import devnet

CONTRACT_FIELDS = {
    "secret_store_url", "threshold_max", "nodes", "chain_url", "chain_id", "anvil_pid", "contracts", "accounts",
    "rpc_url", "rpc_pid", "rpc_accounts", "provider_url", "provider_pid", "provider_address", "metadata_store",
    "files_dir", "files_url", "aquarius_url", "keeper_artifacts", "squid_config",
}


def _state_json(state_dir: Path) -> dict[str, object]:
    return {
        "dev_only": devnet.DEV_ONLY, "acl": "none",
        "nodes": [{"public": "0x" + "ab" * 64, "address": "0x" + "cd" * 20, "http_url": "http://127.0.0.1:1",
                   "pid": None, "config": str(state_dir / "node0.toml"), "data_dir": str(state_dir / "node0"),
                   "log": str(state_dir / "node0.log")}],
        "chain_url": "http://127.0.0.1:2", "chain_id": 31337, "anvil_pid": None, "anvil_log": "anvil.log",
        "contracts": {"DIDRegistry": "0x" + "01" * 20}, "template_id": "0x" + "02" * 32,
        "accounts": {"publisher": {"address": "0x" + "03" * 20, "private_key": "0x" + "04" * 32}},
        "rpc_url": "http://127.0.0.1:3",
        "rpc_accounts": [{"role": "publisher", "address": "0x" + "03" * 20, "password": "pw",
                          "keystore": "k"}],
        "provider_url": "http://127.0.0.1:4", "provider_address": "0x" + "05" * 20,
        "provider_backend": "secret-store", "metadata_store": "m.sqlite", "rpc_pid": None, "provider_pid": None,
        "secret_store_url": "http://127.0.0.1:1", "threshold_max": 0, "ocean_config": "ocean.ini",
        "files_dir": str(state_dir / "files"), "files_url": "http://127.0.0.1:6", "files_pid": None,
        "aquarius_url": "http://127.0.0.1:5", "aquarius_pid": None, "keeper_artifacts": str(state_dir / "artifacts"),
        "squid_config": str(state_dir / "config.ini"),
        "provider_allowed_origins": [],
        "admin_public": "0x" + "06" * 64,  # a field a later issue adds: kept as it is
    }


def test_state_file_round_trips_with_the_contract_fields(tmp_path: Path) -> None:
    data = _state_json(tmp_path)
    (tmp_path / devnet.STATE_FILE).write_text(json.dumps(data))
    state = devnet.DevnetState.require(tmp_path)
    assert state.nodes[0].http_url == "http://127.0.0.1:1" and state.extra == {"admin_public": "0x" + "06" * 64}
    state.save()
    written = json.loads((tmp_path / devnet.STATE_FILE).read_text())
    assert written == data
    assert set(written) >= CONTRACT_FIELDS
    assert (tmp_path / devnet.STATE_FILE).stat().st_mode & 0o777 == 0o600
    assert "04" * 32 not in repr(state) and "pw" not in repr(state.rpc_accounts)


def test_a_missing_or_broken_state_file(tmp_path: Path) -> None:
    assert devnet.DevnetState.load(tmp_path) is None
    with pytest.raises(devnet.DevnetError, match="no devnet"):
        devnet.down(tmp_path)
    (tmp_path / devnet.STATE_FILE).write_text('{"nodes": 3}')
    with pytest.raises(devnet.DevnetError, match="not a devnet state file"):
        devnet.DevnetState.load(tmp_path)


@pytest.mark.integration
def test_up_survives_a_port_taken_between_the_probe_and_the_bind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another program binds node 0's probed node-to-node port before node 0 does.
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    probe = devnet._free_ports
    probes: list[int] = []

    def racing_probe(count: int) -> list[int]:
        ports = probe(count)
        if not probes:
            ports[0] = taken
        probes.append(count)
        return ports

    monkeypatch.setattr(devnet, "_free_ports", racing_probe)
    try:
        state = devnet.up(tmp_path / "dn", 2, acl="none")
        try:
            assert len(probes) == 2  # the nodes were moved to new ports once
            assert f"127.0.0.1:{taken}" not in Path(state.nodes[0].config).read_text()
            assert f"cannot listen on 127.0.0.1:{taken}" in Path(state.nodes[0].log).read_text()
            report = devnet.status(state.state_dir)
            assert report["healthy"], report
            _the_file_server_is_the_providers_one_loopback_origin(state)
        finally:
            devnet.down(state.state_dir)
    finally:
        squatter.close()
    # Restarted, the file server comes back on its old origin: published DDOs name its URLs.
    restarted = devnet.up(tmp_path / "dn", 2, acl="none")
    try:
        assert restarted.files_url == state.files_url
        assert devnet.status(restarted.state_dir)["services"]["files"]["running"]
        assert requests.get(f"{restarted.files_url}/hello.txt", timeout=10).content == b"hello\n"
    finally:
        devnet.down(restarted.state_dir)


def _the_file_server_is_the_providers_one_loopback_origin(state: devnet.DevnetState) -> None:
    """files_dir is served at files_url (Range too), and ocean.ini allows exactly that origin."""
    assert state.files_dir == str(state.state_dir / "files") and state.files_url is not None
    (Path(state.files_dir) / "hello.txt").write_bytes(b"hello\n")
    assert requests.get(f"{state.files_url}/hello.txt", timeout=10).content == b"hello\n"
    part = requests.get(f"{state.files_url}/hello.txt", headers={"Range": "bytes=1-2"}, timeout=10)
    assert part.status_code == 206 and part.content == b"el"
    assert requests.get(f"{state.files_url}/../devnet.json", timeout=10).status_code in (403, 404)
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(str(state.ocean_config))
    assert ini["provider"]["allowed_origins"] == state.files_url
    saved = json.loads(state.path.read_text())
    assert (saved["files_dir"], saved["files_url"]) == (state.files_dir, state.files_url)


def test_an_exited_process_that_is_not_ours_counts_as_stopped() -> None:
    # `devnet down` runs in another process than `devnet up`: the key servers are not its children,
    # so once they exit they stay zombies until pid 1 reaps them, which here took seconds each and
    # made `down` take 15-25 s. A zombie has exited; waiting for its reaping is waiting for nothing.
    exited = subprocess.Popen(["true"])
    running = subprocess.Popen(["sleep", "30"])
    try:
        deadline = time.monotonic() + 10
        while not devnet._is_zombie(exited.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert devnet._is_zombie(exited.pid)
        assert not devnet._is_zombie(running.pid)
        assert devnet._alive(running.pid)
    finally:
        running.kill()
        running.wait()
        exited.wait()
    assert not devnet._is_zombie(exited.pid)  # reaped: no /proc entry left
