"""``ocean-secret-store admin ...`` and ``devnet add-node/remove-node/replace-node``: arguments, the
admin key from the environment (never printed), progress on stderr, exit codes and the node's
message on a refusal. Against the stand-in admin node of tests/client/test_admin.py; the real
sessions run in tests/integration/test_devnet_nodes.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from ocean_secret_store.cli import main
from ocean_secret_store.exceptions import AccessDenied, KeyServerError, KeysWouldBeLost
from ocean_secret_store.testing.servers import ServerThread, closed_port_url
from tests.client.test_admin import ADMIN, LOST, NODES, FakeNode, hexid
from tests.integration.test_devnet import _state_json

KEY_HEX = f"{ADMIN:064x}"
ALL = ",".join(hexid(n) for n in NODES)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread() as thread:
        yield thread


@pytest.fixture
def node(server: ServerThread, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeNode, str]]:
    monkeypatch.setenv("ADMIN_KEY", KEY_HEX)
    fake = FakeNode()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    yield fake, server.start(app)
    server.stop_all()


def secret_shown(captured: pytest.CaptureResult[str]) -> bool:
    return KEY_HEX in captured.out + captured.err


def test_help_lists_the_admin_and_devnet_node_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "admin" in capsys.readouterr().out
    assert main(["admin", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("status", "servers-set-change", "refresh", "repair"))
    assert main(["devnet", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("add-node", "remove-node", "replace-node"))


def test_status_prints_the_nodes_json(node: tuple[FakeNode, str], capsys: pytest.CaptureFixture[str]) -> None:
    _, url = node
    assert main(["admin", "status", "--node", url]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["servers_set"] == [hexid(n) for n in NODES[:3]] and status["progress"]["state"] == "done"


def test_status_with_the_admin_key_names_the_keys_left_behind(node: tuple[FakeNode, str],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    fake, url = node
    fake.progress = {**fake.progress, "lost": [LOST]}
    assert main(["admin", "status", "--node", url]) == 0
    public = capsys.readouterr()
    assert LOST["key_id"] not in public.out and json.loads(public.out)["progress"]["lost_count"] == 1
    assert main(["admin", "status", "--node", url, "--admin-key-env", "ADMIN_KEY"]) == 0
    signed = capsys.readouterr()
    assert json.loads(signed.out)["progress"]["lost"] == [LOST] and not secret_shown(signed)


def test_servers_set_change_with_progress_and_a_summary(node: tuple[FakeNode, str],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    fake, url = node
    fake.steps, fake.step_seconds = 6, 0.3
    # ids comma-separated and repeated; the key with 0x or without
    code = main(["admin", "servers-set-change", "--node", url, "--nodes", ",".join(hexid(n) for n in NODES[:2]),
                 "--nodes", ",".join(hexid(n) for n in NODES[2:]), "--admin-key-env", "ADMIN_KEY"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (admin, force), = fake.requests
    assert admin.operation == "change" and admin.new_set == tuple(sorted(NODES)) and not force
    assert "servers-set-change done: 6 keys, done 6, failed 0, skipped 0, lost 0" in captured.out
    bars = [line for line in captured.err.splitlines() if line.startswith("servers-set-change: [")]
    # not a terminal: one line per change of the numbers, as the session advances, and where it ended
    assert len(bars) >= 3 and all("/6 keys (running; done" in line for line in bars[:-1])
    assert bars[-1].endswith("6/6 keys (done; done 6, failed 0, skipped 0)")
    assert [int(line.split("] ")[1].split("/")[0]) for line in bars] == sorted(
        int(line.split("] ")[1].split("/")[0]) for line in bars)
    assert not secret_shown(captured)


def test_force_json_refresh_and_repair(node: tuple[FakeNode, str], capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fake, url = node
    monkeypatch.setenv("ADMIN_KEY", "0x" + KEY_HEX)
    assert main(["--json", "admin", "refresh", "--node", url, "--admin-key-env", "ADMIN_KEY", "--force"]) == 0
    assert json.loads(capsys.readouterr().out)["operation"] == "refresh"
    assert main(["admin", "repair", "--node", url, "--target", hexid(NODES[2]), "--admin-key-env", "ADMIN_KEY"]) == 0
    assert "repair done" in capsys.readouterr().out
    assert [(a.operation, a.target, f) for a, f in fake.requests] == [("refresh", None, True),
                                                                      ("repair", NODES[2], False)]


@pytest.mark.parametrize(("refusal", "text"), [
    (KeysWouldBeLost("1 key(s) would end with fewer than t+1 shares, nothing changed"),
     "error: Keys would be lost: 1 key(s) would end with fewer than t+1 shares, nothing changed"),
    (AccessDenied(), "error: Access denied"),
])
def test_a_refusal_exits_1_with_the_nodes_message(node: tuple[FakeNode, str], capsys: pytest.CaptureFixture[str],
                                                  refusal: KeyServerError, text: str) -> None:
    fake, url = node
    fake.refusal = refusal
    assert main(["admin", "servers-set-change", "--node", url, "--nodes", ALL, "--admin-key-env", "ADMIN_KEY"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1] == text
    assert not secret_shown(captured)


def test_the_admin_key_comes_from_the_environment_only(node: tuple[FakeNode, str],
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fake, url = node
    base = ["admin", "refresh", "--node", url]
    assert main(base) == 2  # --admin-key-env is required
    assert "--admin-key-env" in capsys.readouterr().err
    monkeypatch.delenv("ADMIN_KEY")
    assert main([*base, "--admin-key-env", "ADMIN_KEY"]) == 2
    assert "ADMIN_KEY (the admin private key) is not set" in capsys.readouterr().err
    for bad in ("12" * 31, "zz" * 32, "00" * 32):
        monkeypatch.setenv("ADMIN_KEY", bad)
        assert main([*base, "--admin-key-env", "ADMIN_KEY"]) == 2
        assert bad not in capsys.readouterr().err
    assert not fake.requests


def test_bad_node_ids_are_usage_errors(node: tuple[FakeNode, str], capsys: pytest.CaptureFixture[str]) -> None:
    fake, url = node
    change = ["admin", "servers-set-change", "--node", url, "--admin-key-env", "ADMIN_KEY"]
    assert main(change) == 2  # --nodes is required
    assert main([*change, "--nodes", hexid(NODES[0]) + ",0x1234"]) == 2
    assert "a node id" in capsys.readouterr().err
    assert main([*change, "--nodes", "0x" + "00" * 64]) == 2  # not a point
    assert main([*change, "--nodes", " , "]) == 2
    assert main(["admin", "repair", "--node", url, "--admin-key-env", "ADMIN_KEY", "--target", "node1"]) == 2
    assert main(["admin", "repair", "--node", url, "--admin-key-env", "ADMIN_KEY"]) == 2  # --target is required
    assert not fake.requests


def test_an_unreachable_node_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["admin", "status", "--node", closed_port_url()]) == 1
    assert "no answer from" in capsys.readouterr().err
    assert main(["admin", "status", "--node", "ftp://example"]) == 1


def test_devnet_node_commands_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devnet", "remove-node", "--state-dir", str(tmp_path)]) == 2  # N is required
    assert main(["devnet", "replace-node", "one", "--state-dir", str(tmp_path)]) == 2
    assert main(["devnet", "add-node", "7", "--state-dir", str(tmp_path)]) == 2  # add-node takes no N
    capsys.readouterr()
    for command in (["add-node"], ["remove-node", "0"], ["replace-node", "0", "--force"]):
        assert main(["devnet", *command, "--state-dir", str(tmp_path)]) == 1
        assert f"no devnet in {tmp_path}" in capsys.readouterr().err


def test_a_devnet_made_before_the_admin_account(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # an older devnet.json (no accounts.admin) still loads; its nodes have no admin_public, so no change is tried
    (tmp_path / "devnet.json").write_text(json.dumps(_state_json(tmp_path)))
    for command in (["add-node"], ["remove-node", "0"], ["replace-node", "0"]):
        assert main(["devnet", *command, "--state-dir", str(tmp_path)]) == 1
        assert "has no admin account (made before servers-set change)" in capsys.readouterr().err
