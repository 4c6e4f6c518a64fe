"""AdminClient against a key server's admin endpoints on loopback (an aiohttp stand-in that parses
with the real codec and checks the administrator's signatures as a node does): what is signed,
what is sent, how refusals and progress come back. Real admin sessions: tests/integration/test_devnet_nodes.py."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from ocean_secret_store.client.admin import FORCE_HEADER, AdminClient, parse_node_id
from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.exceptions import (
    AccessDenied,
    AdminSessionIncomplete,
    BadAdminRequest,
    ClientError,
    KeyServerError,
    KeysWouldBeLost,
    NodeDisconnected,
    NodeUnreachable,
)
from ocean_secret_store.protocol import http as codec
from ocean_secret_store.protocol.admin import AdminRequest, verify_status
from ocean_secret_store.testing.servers import ServerThread, closed_port_url

ADMIN = random_scalar()
NODES = [Point.generator_mul(random_scalar()).to_bytes() for _ in range(4)]


def hexid(node: bytes) -> str:
    return "0x" + node.hex()


@dataclass
class FakeNode:
    """An entry node's admin endpoints: NODES[0] itself, servers set NODES[:3], of which ``connected``
    are connected (NODES[3] is connected and in no set). A session takes ``steps`` status polls'
    worth of time and answers ``refusal`` if set."""

    servers_set: list[bytes] = field(default_factory=lambda: NODES[:3])
    connected: list[bytes] = field(default_factory=lambda: NODES[1:])
    refusal: KeyServerError | None = None
    steps: int = 0
    step_seconds: float = 0.05
    requests: list[tuple[AdminRequest, bool]] = field(default_factory=list)
    progress: dict[str, Any] = field(default_factory=lambda: {"session": "0x01", "state": "done", "total": 9,
                                                              "done": 9, "failed": 0, "skipped": 0, "lost": [],
                                                              "errors": []})

    def status(self, signed: bool = False) -> dict[str, Any]:
        """As a node: the key ids in ``lost`` and ``errors`` to the administrator's signature only."""
        progress = dict(self.progress)
        if not signed:
            progress = {k: v for k, v in progress.items() if k not in ("lost", "errors")}
            progress.update(lost_count=len(self.progress.get("lost", [])), error_count=len(self.progress.get(
                "errors", [])))
        return {"view": "admin" if signed else "public", "node_id": hexid(NODES[0]),
                "servers_set": [hexid(n) for n in self.servers_set],
                "connected": [hexid(n) for n in sorted([NODES[0], *self.connected])], "admin_session": None,
                "progress": progress}

    def view(self) -> tuple[bytes, ...]:
        return tuple(sorted(n for n in self.servers_set if n == NODES[0] or n in self.connected))

    async def handle(self, request: web.Request) -> web.Response:
        parsed = codec.parse_request(request.method, request.raw_path, await request.read())
        if isinstance(parsed, codec.AdminStatus):
            if parsed.signature is not None and parsed.expiry is not None:
                try:
                    verify_status(parsed.signature, NODES[0], parsed.expiry, Point.generator_mul(ADMIN), time.time())
                except KeyServerError as exc:
                    return self.error(exc)
            return web.json_response(self.status(parsed.signed))
        view = self.view()
        match parsed:
            case codec.ServersSetChange():
                admin = AdminRequest("change", view, tuple(p.to_bytes() for p in parsed.new_servers_set),
                                     parsed.old_set_signature, parsed.new_set_signature)
            case codec.AdminRefresh():
                admin = AdminRequest("refresh", view, view, parsed.set_signature, parsed.refresh_signature)
            case codec.AdminRepair():
                admin = AdminRequest("repair", view, view, parsed.set_signature, parsed.repair_signature,
                                     parsed.node.to_bytes())
            case _:
                return web.Response(status=400)
        try:
            admin.verify(Point.generator_mul(ADMIN))
        except KeyServerError as exc:
            return self.error(exc)
        self.requests.append((admin, request.headers.get(FORCE_HEADER) == "1"))
        if self.refusal is not None:
            return self.error(self.refusal)
        self.progress = {"session": "0x02", "state": "running", "total": self.steps, "done": 0, "failed": 0,
                         "skipped": 0, "lost": [LOST] if request.headers.get(FORCE_HEADER) else [], "errors": []}
        for _ in range(self.steps):
            await asyncio.sleep(self.step_seconds)
            self.progress["done"] += 1
        self.progress["state"] = "done"
        if isinstance(parsed, codec.ServersSetChange):
            self.servers_set = list(admin.new_set)
            return web.Response(status=200)
        return web.json_response({**self.progress, "operation": admin.operation})

    @staticmethod
    def error(exc: KeyServerError) -> web.Response:
        status, body = codec.error_response(exc)
        return web.Response(status=status, body=body, content_type="application/json")


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread() as thread:
        yield thread


@pytest.fixture
def node(server: ServerThread) -> Iterator[tuple[FakeNode, str]]:
    fake = FakeNode()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    yield fake, server.start(app)
    server.stop_all()


def test_status_and_the_old_set_are_the_entry_nodes_view(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    fake.connected = [NODES[2], NODES[3]]  # NODES[1] is down; NODES[3] is in no set
    with AdminClient(url) as client:
        assert client.status()["servers_set"] == [hexid(n) for n in NODES[:3]]
        assert client.old_set() == tuple(sorted([NODES[0], NODES[2]]))


LOST = {"key_id": "0x" + "ab" * 32, "threshold": 3, "reason": "3 live holders of its version; t+1 = 4 are needed"}


def test_only_the_administrators_signed_status_names_keys(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    fake.progress = {**fake.progress, "lost": [LOST], "errors": [f"{LOST['key_id']}: commit failed"]}
    with AdminClient(url) as client:
        public = client.status()
        signed = client.status(ADMIN)
        with pytest.raises(AccessDenied):
            client.status(random_scalar())  # not the administrator
    assert public["view"] == "public" and "ab" * 32 not in str(public)
    assert (public["progress"]["lost_count"], public["progress"]["error_count"]) == (1, 1)
    assert signed["view"] == "admin" and signed["progress"]["lost"] == [LOST]
    assert signed["servers_set"] == public["servers_set"]


def test_servers_set_change_signs_the_view_and_the_new_set(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    new_set = [hexid(NODES[3]), NODES[0], Point.from_bytes(NODES[1]), NODES[2]]  # any spelling of an id
    with AdminClient(url) as client:
        report = client.servers_set_change(new_set, ADMIN)
    (admin, force), = fake.requests
    assert admin.operation == "change" and not force
    assert admin.old_set == tuple(sorted(NODES[:3])) and admin.new_set == tuple(sorted(NODES))
    assert report["state"] == "done" and report["session"] == "0x02"  # read back from /admin/status
    assert fake.servers_set == sorted(NODES)


def test_a_forced_change_reports_the_keys_it_left_behind(node: tuple[FakeNode, str]) -> None:
    _, url = node
    with AdminClient(url) as client:
        report = client.servers_set_change(NODES, ADMIN, force=True)  # Parity's answer is empty:
        public = client.status()["progress"]
    assert report["lost"] == [LOST]  # read back with the administrator's signed status
    assert "lost" not in public and public["lost_count"] == 1


def test_force_and_the_secret_in_every_form(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    with AdminClient(url) as client:
        client.refresh(ADMIN.to_bytes(32, "big"), force=True)
        client.refresh("0x" + ADMIN.to_bytes(32, "big").hex())
        client.refresh(ADMIN.to_bytes(32, "big").hex(), True)
    assert [(a.operation, f) for a, f in fake.requests] == [("refresh", True), ("refresh", False), ("refresh", True)]


def test_refresh_and_repair_return_the_nodes_report(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    fake.steps = 2
    with AdminClient(url) as client:
        assert client.refresh(ADMIN)["done"] == 2
        report = client.repair(hexid(NODES[1]), ADMIN)
    assert report["operation"] == "repair" and report["state"] == "done"
    assert fake.requests[-1][0].target == NODES[1]


@pytest.mark.parametrize(("refusal", "kind", "status"), [
    (KeysWouldBeLost("2 key(s) would end with fewer than t+1 shares"), KeysWouldBeLost, 409),
    (BadAdminRequest("the node to repair is not in the servers set"), BadAdminRequest, 400),
    (AdminSessionIncomplete("1 of 3 keys did not move"), AdminSessionIncomplete, 500),
    (NodeDisconnected(), NodeDisconnected, 500),
])
def test_a_refusal_is_the_sdks_error_with_the_nodes_message(node: tuple[FakeNode, str], refusal: KeyServerError,
                                                              kind: type[KeyServerError], status: int) -> None:
    fake, url = node
    fake.refusal = refusal
    with AdminClient(url) as client, pytest.raises(kind) as caught:
        client.servers_set_change(NODES, ADMIN)
    assert str(caught.value) == str(refusal) and caught.value.status == status


def test_a_wrong_admin_key_is_access_denied_and_not_echoed(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    other = random_scalar()
    with AdminClient(url) as client, pytest.raises(AccessDenied) as caught:
        client.refresh(other)
    assert not fake.requests
    assert f"{other:x}" not in str(caught.value) and f"{other:x}" not in repr(client)


def test_progress_is_polled_while_the_session_runs(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    fake.steps, fake.step_seconds = 8, 0.1
    seen: list[dict[str, Any]] = []
    threads: set[str] = set()

    def on_progress(status: dict[str, Any]) -> None:
        seen.append(status["progress"])
        threads.add(threading.current_thread().name)

    with AdminClient(url, poll_interval=0.05) as client:
        client.refresh(ADMIN, on_progress=on_progress)
    assert seen, "no progress was reported during an 0.8 s session"
    # only the new session (not the one the node ran before), as it advances
    assert {p["session"] for p in seen} == {"0x02"}
    assert [p["done"] for p in seen] == sorted(p["done"] for p in seen)
    assert threads == {"admin-progress"}


def test_the_post_has_no_read_timeout_by_default(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    fake.steps, fake.step_seconds = 3, 0.25  # longer than the status timeout below
    with AdminClient(url, timeout=0.5) as client:
        assert client.refresh(ADMIN)["done"] == 3
    with AdminClient(url, timeout=0.5, session_timeout=0.2) as client, pytest.raises(NodeUnreachable) as caught:
        client.refresh(ADMIN)
    assert "may still run on the node" in str(caught.value)


def test_an_unreachable_node_and_bad_ids() -> None:
    url = closed_port_url()
    with AdminClient(url) as client, pytest.raises(NodeUnreachable, match="connection failed"):
        client.status()
    with pytest.raises(ClientError):
        parse_node_id("0x" + "00" * 64)  # not a point
    with pytest.raises(ClientError):
        parse_node_id("0x1234")
    assert parse_node_id(hexid(NODES[0]).upper().replace("0X", "0x")) == NODES[0]


def test_a_status_that_is_not_one(server: ServerThread) -> None:
    async def not_a_status(_: web.Request) -> web.Response:
        return web.json_response(["not", "a", "status"])

    app = web.Application()
    app.router.add_get("/admin/status", not_a_status)
    url = server.start(app)
    try:
        with AdminClient(url) as client, pytest.raises(KeyServerError, match="did not answer an admin status"):
            client.status()
    finally:
        server.stop_all()
