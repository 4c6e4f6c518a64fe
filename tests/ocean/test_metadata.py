"""Metadata stores: SQLite (publish/resolve/list, duplicates, reopen) and Aquarius against a tiny fake."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ocean_secret_store.exceptions import AssetNotFound, DidMismatch, InvalidDid, OceanError
from ocean_secret_store.ocean.ddo import DDO, verify_ddo
from ocean_secret_store.ocean.metadata import (
    AquariusMetadataStore,
    MetadataStore,
    SqliteMetadataStore,
    open_metadata_store,
)

from .test_ddo import make


def fresh_ddo() -> DDO:
    return make()  # a random name in the metadata, so a fresh DID each time


# -- SQLite ------------------------------------------------------------------------------------


def test_sqlite_publish_resolve_list(tmp_path: Path) -> None:
    store = SqliteMetadataStore(tmp_path / "meta" / "ddo.db")
    assert isinstance(store, MetadataStore)
    assert store.list_dids() == []
    first, second = fresh_ddo(), fresh_ddo()
    store.publish(first)
    store.publish(second)
    assert store.resolve(first.did) == first
    assert store.resolve("0x" + second.asset_id.hex()) == second  # any DID spelling resolves
    assert store.resolve(second.did.upper().replace("DID:OP:", "did:op:")) == second
    assert store.list_dids() == [first.did, second.did]
    verify_ddo(store.resolve(first.did))


def test_sqlite_refuses_duplicates(tmp_path: Path) -> None:
    store = SqliteMetadataStore(tmp_path / "ddo.db")
    ddo = fresh_ddo()
    store.publish(ddo)
    with pytest.raises(OceanError, match="already published"):
        store.publish(ddo)
    assert store.list_dids() == [ddo.did]


def test_sqlite_unknown_and_malformed(tmp_path: Path) -> None:
    store = SqliteMetadataStore(tmp_path / "ddo.db")
    unknown = "did:op:" + os.urandom(32).hex()
    with pytest.raises(AssetNotFound, match=unknown):
        store.resolve(unknown)
    with pytest.raises(InvalidDid):
        store.resolve("did:op:nothex")


def test_sqlite_survives_reopen_and_shares_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ddo.db"
    ddo = fresh_ddo()
    SqliteMetadataStore(path).publish(ddo)
    reopened = SqliteMetadataStore(path)
    assert reopened.resolve(ddo.did) == ddo and reopened.list_dids() == [ddo.did]
    other = SqliteMetadataStore(path)
    later = fresh_ddo()
    other.publish(later)
    assert reopened.resolve(later.did) == later  # a second store object on the same file sees it


def test_sqlite_concurrent_publishers(tmp_path: Path) -> None:
    store = SqliteMetadataStore(tmp_path / "ddo.db")
    ddos = [fresh_ddo() for _ in range(8)]
    errors: list[BaseException] = []

    def publish(ddo: DDO) -> None:
        try:
            store.publish(ddo)
        except BaseException as exc:  # noqa: BLE001 -- any failure is collected and checked in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(d,)) for d in ddos]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(store.list_dids()) == sorted(d.did for d in ddos)


def test_open_metadata_store_picks_by_location(tmp_path: Path) -> None:
    assert isinstance(open_metadata_store(str(tmp_path / "x.db")), SqliteMetadataStore)
    assert isinstance(open_metadata_store("http://127.0.0.1:5000"), AquariusMetadataStore)
    assert isinstance(open_metadata_store("https://aquarius.example/"), AquariusMetadataStore)
    with pytest.raises(OceanError):
        open_metadata_store("  ")


# -- Aquarius ----------------------------------------------------------------------------------


class FakeAquarius:
    """Aquarius v1's three routes on 127.0.0.1, port chosen by the OS, served from a background loop."""

    def __init__(self) -> None:
        self.ddos: dict[str, dict[str, Any]] = {}
        self.swap: dict[str, str] = {}  # did -> did whose DDO to answer with (a lying store)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.url = ""

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v1/aquarius/assets/ddo", self.register)
        app.router.add_get("/api/v1/aquarius/assets/ddo/{did}", self.get)
        app.router.add_get("/api/v1/aquarius/assets", self.ids)
        return app

    async def register(self, request: web.Request) -> web.Response:
        data = await request.json()
        if data["id"] in self.ddos:
            return web.Response(status=400, text=f"Asset {data['id']} already exists")
        self.ddos[data["id"]] = data
        return web.json_response(data, status=201)

    async def get(self, request: web.Request) -> web.Response:
        did = self.swap.get(request.match_info["did"], request.match_info["did"])
        if did not in self.ddos:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(self.ddos[did])

    async def ids(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.ddos))

    async def _start(self) -> str:
        self.runner = web.AppRunner(self._app())
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeAquarius:
        self.thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@pytest.fixture()
def aquarius() -> Iterator[FakeAquarius]:
    fake = FakeAquarius().start()
    try:
        yield fake
    finally:
        fake.stop()


def test_aquarius_publish_resolve_list(aquarius: FakeAquarius) -> None:
    store = open_metadata_store(aquarius.url + "/")
    assert isinstance(store, AquariusMetadataStore) and isinstance(store, MetadataStore)
    ddo = fresh_ddo()
    store.publish(ddo)
    assert aquarius.ddos[ddo.did] == json.loads(ddo.to_json())  # the DDO JSON went over as is
    resolved = store.resolve(ddo.did)
    assert resolved == ddo
    verify_ddo(resolved)
    assert store.list_dids() == [ddo.did]


def test_aquarius_refuses_duplicates_and_unknown(aquarius: FakeAquarius) -> None:
    store = AquariusMetadataStore(aquarius.url)
    ddo = fresh_ddo()
    store.publish(ddo)
    with pytest.raises(OceanError, match="already published"):
        store.publish(ddo)
    unknown = "did:op:" + os.urandom(32).hex()
    with pytest.raises(AssetNotFound, match=unknown):
        store.resolve(unknown)


def test_aquarius_answer_for_another_did_is_refused(aquarius: FakeAquarius) -> None:
    store = AquariusMetadataStore(aquarius.url)
    real, other = fresh_ddo(), fresh_ddo()
    store.publish(real)
    aquarius.swap[other.did] = real.did
    with pytest.raises(DidMismatch, match=other.did):
        store.resolve(other.did)


def test_aquarius_unreachable(aquarius: FakeAquarius) -> None:
    url = aquarius.url
    aquarius.stop()  # the port is closed now: nothing answers there
    store = AquariusMetadataStore(url, timeout=5)
    with pytest.raises(OceanError, match="did not answer"):
        store.resolve("did:op:" + "00" * 32)
