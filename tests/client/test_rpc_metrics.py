"""The JSON-RPC face's ``GET /metrics``: calls by method and outcome, HTTP requests by route, parsed with
prometheus-client's own parser; no password, key or account in the exposition."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web
from eth_account import Account

from ocean_secret_store.client import rpc
from ocean_secret_store.client.keystore import Keystore, write_keystore
from ocean_secret_store.client.throttle import PasswordThrottle
from ocean_secret_store.crypto.curve import Point
from ocean_secret_store.metrics import METRICS_PATH, OTHER, PREFIX, UNMATCHED
from ocean_secret_store.testing.metrics import scrape
from ocean_secret_store.testing.servers import ServerThread

SECRET = "0x" + "4d" * 32
PASSWORD = "metrics password"
ACCOUNT = Account.from_key(SECRET).address
RAW_HASH = "0x" + "ab" * 32
NODE_IDS = ["0x" + Point.generator_mul(s).to_bytes().hex() for s in (11, 12)]
CALLS = f"{PREFIX}_rpc_calls_total"
HTTP = f"{PREFIX}_http_requests_total"


@dataclass
class Face:
    url: str
    chain_bodies: list[bytes]


@pytest.fixture(scope="module")
def face(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Face]:
    directory = tmp_path_factory.mktemp("keystore")
    write_keystore(directory, SECRET, PASSWORD, iterations=64)
    bodies: list[bytes] = []

    async def chain(request: web.Request) -> web.Response:
        body = await request.read()
        bodies.append(body)
        return web.json_response({"jsonrpc": "2.0", "result": "0x2a", "id": json.loads(body).get("id")})

    chain_app = web.Application()
    chain_app.router.add_post("/", chain)
    with ServerThread() as thread:
        chain_url = thread.start(chain_app)
        app = rpc.make_rpc_app(Keystore(directory), chain_url, throttle=PasswordThrottle(0.01, 0.05))
        yield Face(thread.start(app), bodies)


def post(url: str, body: Any, status: int = 200) -> Any:
    response = requests.post(url, data=json.dumps(body) if not isinstance(body, bytes) else body,
                             headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == status, response.text
    return response.json() if status == 200 else None


def one(method: str, params: list[Any], request_id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params, "id": request_id}


def test_calls_by_method_and_outcome(face: Face) -> None:
    before = scrape(face.url)
    for _ in range(2):
        assert "result" in post(face.url, one("secretstore_serversSetHash", [NODE_IDS]))
    assert "result" in post(face.url, one("secretstore_signRawHash", [ACCOUNT, PASSWORD, RAW_HASH]))
    assert post(face.url, one("secretstore_signRawHash", [ACCOUNT, "wrong", RAW_HASH]))["error"]["code"] == \
        rpc.PASSWORD_INVALID
    assert post(face.url, one("anvil_mine", []))["error"]["code"] == rpc.METHOD_NOT_FOUND
    for _ in range(2):
        assert post(face.url, one("eth_blockNumber", []))["result"] == "0x2a"
    post(face.url, {"jsonrpc": "2.0", "method": "web3_clientVersion", "params": []}, status=204)  # a notification
    batch = post(face.url, [one("secretstore_serversSetHash", [NODE_IDS], 7), one("eth_blockNumber", [], 8)])
    assert len(batch) == 2
    assert post(face.url, b"{not json")["error"]["code"] == rpc.PARSE_ERROR
    assert requests.get(face.url + "/no/such/page", timeout=10).status_code == 404
    after = scrape(face.url)

    assert after.delta(before, CALLS, method="secretstore_serversSetHash", outcome="ok") == 3
    assert after.delta(before, CALLS, method="secretstore_signRawHash", outcome="ok") == 1
    assert after.delta(before, CALLS, method="secretstore_signRawHash", outcome="password_invalid") == 1
    assert after.delta(before, CALLS, method=OTHER, outcome="method_not_found") == 1  # anvil_mine is not a label
    assert after.delta(before, CALLS, method="eth_blockNumber", outcome="forwarded") == 3
    assert after.delta(before, CALLS, method="web3_clientVersion", outcome="notification") == 1
    assert after.delta(before, CALLS, method="invalid", outcome="parse_error") == 1
    assert after.delta(before, CALLS) == 3 + 2 + 1 + 3 + 1 + 1
    assert len(face.chain_bodies) == 3
    duration = f"{PREFIX}_rpc_call_duration_seconds_count"
    assert after.delta(before, duration, method="secretstore_serversSetHash") == 3
    assert after.delta(before, duration, method="eth_blockNumber") == 0  # forwarded: not timed here

    assert after.delta(before, HTTP, route="/", method="POST", status="200") == 9
    assert after.delta(before, HTTP, route="/", method="POST", status="204") == 1
    assert after.delta(before, HTTP, route=UNMATCHED, method="GET", status="404") == 1
    assert after.delta(before, HTTP, route=METRICS_PATH, method="GET", status="200") == 1
    assert after.delta(before, f"{PREFIX}_http_request_duration_seconds_count", route="/") == 10
    assert after.label_values("method", CALLS) <= {*rpc.FORWARDED_METHODS, "secretstore_serversSetHash",
                                                    "secretstore_signRawHash", "web3_clientVersion", OTHER, "invalid"}


def test_no_secret_in_the_exposition(face: Face) -> None:
    post(face.url, one("secretstore_signRawHash", [ACCOUNT, PASSWORD, RAW_HASH]))
    text = scrape(face.url).text.lower()
    for value in (PASSWORD, "wrong", SECRET[2:], ACCOUNT[2:], RAW_HASH[2:], "anvil_mine", "no/such"):
        assert value.lower() not in text


def test_each_app_has_its_own_registry(tmp_path: Path) -> None:
    # Two faces in one process: no clash in the library's global registry, no shared counts.
    with ServerThread() as thread:
        first = thread.start(rpc.make_rpc_app(Keystore(tmp_path), None))
        second = thread.start(rpc.make_rpc_app(Keystore(tmp_path), None))
        post(first, one("secretstore_serversSetHash", [NODE_IDS]))
        counts = [scrape(url).total(CALLS) for url in (first, second)]
    assert counts == [1, 0]
