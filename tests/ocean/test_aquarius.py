"""The Aquarius-compatible service: every route with Aquarius 1.0.x's status codes and bodies, the
paging fields, the query keys, refusals with a clear status and message, and our own client
(AquariusMetadataStore) against it."""

from __future__ import annotations

import asyncio
import copy
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web

from ocean_secret_store.exceptions import AssetNotFound, OceanError
from ocean_secret_store.ocean.aquarius import (
    BadRequest,
    compile_query,
    make_aquarius_app,
    metadata_errors,
    paginate,
    sort_documents,
)
from ocean_secret_store.ocean.ddo import DDO, verify_ddo
from ocean_secret_store.ocean.metadata import AquariusMetadataStore, SqliteMetadataStore, open_metadata_store

from .test_ddo import make, sample_metadata

ASSETS = "/api/v1/aquarius/assets"
DDO_PATH = ASSETS + "/ddo"


class Served:
    """The service's app over a SQLite store in ``tmp_path``, on 127.0.0.1 (OS-chosen port), in a
    background loop."""

    def __init__(self, db: Path, ssl_context: ssl.SSLContext | None = None) -> None:
        self.store = SqliteMetadataStore(db)
        self.ssl_context = ssl_context
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner = web.AppRunner(make_aquarius_app(self.store), shutdown_timeout=1.0, access_log=None)
        self.url = ""
        self.http = requests.Session()

    async def _start(self) -> str:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        return f"{'https' if self.ssl_context else 'http'}://{host}:{port}"

    def start(self) -> Served:
        self.thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    def stop(self) -> None:
        self.http.close()  # no kept-alive connection for the cleanup to wait for
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.http.request(method, self.url + path, timeout=10, **kwargs)

    def post_ddo(self, ddo: DDO | dict[str, Any]) -> requests.Response:
        body = ddo.to_json() if isinstance(ddo, DDO) else json.dumps(ddo)
        return self.request("POST", DDO_PATH, data=body, headers={"content-type": "application/json"})


@pytest.fixture()
def aquarius(tmp_path: Path) -> Iterator[Served]:
    served = Served(tmp_path / "metadata.sqlite").start()
    try:
        yield served
    finally:
        served.stop()


def asset(name: str, **main: Any) -> DDO:
    metadata = sample_metadata()
    metadata["main"].update(name=name, **main)
    return make(metadata)


# -- the routes -------------------------------------------------------------------------------


def test_root_and_health(aquarius: Served) -> None:
    root = aquarius.request("GET", "/")
    assert root.status_code == 200 and root.json()["software"] == "Aquarius" and root.json()["version"].startswith("1.")
    assert aquarius.request("GET", "/health").status_code == 200


def test_register_get_list_update_retire(aquarius: Served) -> None:
    ddo = asset("weather")
    posted = aquarius.post_ddo(ddo)
    assert posted.status_code == 201 and posted.json() == ddo.as_dict()  # stored as posted: checksums hold
    got = aquarius.request("GET", f"{DDO_PATH}/{ddo.did}")
    assert got.status_code == 200 and got.headers["content-type"].startswith("application/json")
    verify_ddo(DDO.from_dict(got.json()))
    assert aquarius.request("GET", f"{DDO_PATH}/0x{ddo.asset_id.hex()}").json()["id"] == ddo.did  # any DID spelling
    assert aquarius.request("GET", ASSETS).json() == {"ids": [ddo.did]}
    assert aquarius.request("GET", DDO_PATH).json() == {ddo.did: ddo.as_dict()}
    metadata = aquarius.request("GET", f"{ASSETS}/metadata/{ddo.did}")
    assert metadata.status_code == 200 and metadata.json()["type"] == "metadata"
    assert metadata.json()["attributes"]["main"]["name"] == "weather"

    changed = ddo.as_dict()
    changed["updated"] = "2030-01-01T00:00:00Z"
    put = aquarius.request("PUT", f"{DDO_PATH}/{ddo.did}", json=changed)
    assert put.status_code == 200 and put.json()["updated"] == "2030-01-01T00:00:00Z"
    assert aquarius.request("GET", f"{DDO_PATH}/{ddo.did}").json()["updated"] == "2030-01-01T00:00:00Z"

    other = asset("new by put")
    assert aquarius.request("PUT", f"{DDO_PATH}/{other.did}", json=other.as_dict()).status_code == 201
    assert aquarius.request("GET", ASSETS).json()["ids"] == [ddo.did, other.did]  # publication order kept

    retired = aquarius.request("DELETE", f"{DDO_PATH}/{ddo.did}")
    assert (retired.status_code, retired.text) == (200, "Succesfully deleted")  # Aquarius' spelling
    gone = aquarius.request("GET", f"{DDO_PATH}/{ddo.did}")
    assert gone.status_code == 404 and ddo.did in gone.text
    again = aquarius.request("DELETE", f"{DDO_PATH}/{ddo.did}")
    assert (again.status_code, again.text) == (404, "This asset DID is not in OceanDB")
    assert aquarius.request("GET", f"{ASSETS}/metadata/{ddo.did}").status_code == 404

    all_gone = aquarius.request("DELETE", DDO_PATH)
    assert (all_gone.status_code, all_gone.text) == (200, "All ddo successfully deleted")
    assert aquarius.request("GET", ASSETS).json() == {"ids": []}


def test_a_duplicate_is_500_as_aquarius_and_squid_expect(aquarius: Served) -> None:
    ddo = asset("twice")
    assert aquarius.post_ddo(ddo).status_code == 201
    duplicate = aquarius.post_ddo(ddo)
    assert duplicate.status_code == 500 and "already registered" in duplicate.text and ddo.did in duplicate.text


def test_unlisted_assets_are_left_out_of_the_listings(aquarius: Served) -> None:
    listed, hidden = asset("listed"), asset("hidden")
    document = hidden.as_dict()
    document["service"][0]["attributes"]["curation"] = {"rating": 0, "numVotes": 0, "isListed": False}
    aquarius.post_ddo(listed)
    aquarius.post_ddo(document)
    assert aquarius.request("GET", ASSETS).json() == {"ids": [listed.did]}
    assert list(aquarius.request("GET", DDO_PATH).json()) == [listed.did]
    assert aquarius.request("GET", f"{DDO_PATH}/{hidden.did}").status_code == 200  # still resolvable


# -- search and paging --------------------------------------------------------------------------


def test_text_search_pages_as_aquarius(aquarius: Served) -> None:
    ddos = [asset(f"white noise {i}", price=str(10 + i)) for i in range(12)]
    ddos.append(asset("red herring"))
    for ddo in ddos:
        assert aquarius.post_ddo(ddo).status_code == 201
    query = DDO_PATH + "/query"
    first = aquarius.request("GET", query, params={"text": "WHITE", "offset": 5, "page": 1}).json()
    assert (first["page"], first["total_pages"], first["total_results"], len(first["results"])) == (1, 3, 12, 5)
    third = aquarius.request("GET", query, params={"text": "white", "offset": 5, "page": 3}).json()
    assert (third["page"], len(third["results"])) == (3, 2)
    beyond = aquarius.request("GET", query, params={"text": "white", "offset": 5, "page": 4}).json()
    assert (beyond["page"], beyond["results"], beyond["total_results"]) == (4, [], 12)
    # squid-py's defaults (offset 100, page 1); sort by a path, descending
    by_price = aquarius.request("GET", query, params={
        "text": "white", "sort": json.dumps({"service.attributes.main.price": -1})}).json()
    assert [r["service"][0]["attributes"]["main"]["price"] for r in by_price["results"]][:3] == ["21", "20", "19"]
    # a DID finds its asset; no words match everything
    did = ddos[-1].did
    assert [r["id"] for r in aquarius.request("GET", query, params={"text": did}).json()["results"]] == [did]
    assert aquarius.request("GET", query).json()["total_results"] == 13


def test_query_keys(aquarius: Served) -> None:
    cheap = asset("cheap uk weather", price="15", license="CC-BY", dateCreated="2016-02-08T16:02:20Z")
    dear = asset("ocean vision paper", price="99", license="Public domain", dateCreated="2019-01-01T00:00:00Z")
    for ddo in (cheap, dear):
        aquarius.post_ddo(ddo)

    def ids(body: dict[str, Any]) -> list[str]:
        answer = aquarius.request("POST", DDO_PATH + "/query", json=body)
        assert answer.status_code == 200, answer.text
        assert set(answer.json()) == {"results", "page", "total_pages", "total_results"}
        return [r["id"] for r in answer.json()["results"]]

    assert ids({"query": {}}) == [cheap.did, dear.did]
    assert ids({}) == [cheap.did, dear.did]
    assert ids({"query": {"text": "UK"}}) == [cheap.did]
    assert ids({"query": {"text": ["uk", "oceAN"]}}) == [cheap.did, dear.did]
    assert ids({"query": {"price": ["14", "16"]}}) == [cheap.did]
    assert ids({"query": {"price": [99]}}) == [dear.did]
    assert ids({"query": {"license": ["Public domain"]}}) == [dear.did]
    assert ids({"query": {"dateCreated": ["2016-02-07T16:02:20Z", "2016-02-09T16:02:20Z"]}}) == [cheap.did]
    assert ids({"query": {"type": ["access"]}}) == [cheap.did, dear.did]
    assert ids({"query": {"tags": ["test"], "price": ["90", "100"]}}) == [dear.did]  # every key must match
    assert ids({"query": {"service.attributes.main.name": ["vision"]}}) == [dear.did]
    assert ids({"query": {}, "sort": {"service.attributes.main.price": -1}}) == [dear.did, cheap.did]
    assert ids({"query": {}, "offset": 1, "page": 2}) == [dear.did]


@pytest.mark.parametrize(("body", "message"), [
    ({"query": []}, "query must be a JSON object"),
    ({"query": {"price": ["cheap"]}}, "is not a number"),
    ({"query": {"price": [1, 2, 3]}}, "give one value"),
    ({"query": {"created": ["2016-02-07"]}}, "give two dates"),
    ({"query": {"created": ["yesterday", "today"]}}, "is not a date"),
    ({"query": {"text": 5}}, "text must be a string"),
    ({"query": {"a..b": ["x"]}}, "is not a dotted path"),
    ({"query": {}, "sort": {"x": 2}}, "sort must be a JSON object"),
    ({"query": {}, "page": 0}, "page must be an integer >= 1"),
    ({"query": {}, "offset": "many"}, "offset must be an integer >= 1"),
    ({"query": {}, "offset": 10**6}, "offset must be at most"),
    ([1, 2], "the body must be a JSON object"),
])
def test_bad_queries_are_400_with_the_reason(aquarius: Served, body: Any, message: str) -> None:
    answer = aquarius.request("POST", DDO_PATH + "/query", json=body)
    assert answer.status_code == 400 and message in answer.text


def test_bad_text_search_parameters(aquarius: Served) -> None:
    for params, message in (({"page": "0"}, "page must be"), ({"offset": "x"}, "offset must be"),
                            ({"sort": "{not json"}, "sort must be JSON")):
        answer = aquarius.request("GET", DDO_PATH + "/query", params=params)
        assert answer.status_code == 400 and message in answer.text, params


# -- refusals -------------------------------------------------------------------------------------


def _without(document: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != key}


def test_register_refuses_bad_input_with_the_reason(aquarius: Served) -> None:
    good = asset("good").as_dict()
    with_url = copy.deepcopy(good)
    with_url["service"][0]["attributes"]["main"]["files"][0]["url"] = "https://example.org/secret.csv"
    bad_date = {**good, "created": "01/02/2020"}
    no_metadata = {**good, "service": [s for s in good["service"] if s["type"] != "metadata"]}
    cases = [
        (b"{not json", "the body is not JSON"),
        (b"[]", "the body must be a JSON object"),
        (b"{}", "payload seems empty."),
        (json.dumps(_without(good, "proof")).encode(), '"proof" is required in the call to register'),
        (json.dumps({**good, "id": "did:op:1234"}).encode(), "not a DID"),
        (json.dumps(with_url).encode(), "url is not allowed in files"),
        (json.dumps(bad_date).encode(), "Incorrect data format, should be '%Y-%m-%dT%H:%M:%SZ'"),
        (json.dumps(no_metadata).encode(), "no metadata service"),
    ]
    for body, message in cases:
        answer = aquarius.request("POST", DDO_PATH, data=body, headers={"content-type": "application/json"})
        assert answer.status_code == 400, (body[:40], answer.text)
        assert message in answer.text, (message, answer.text)
        assert "secret.csv" not in answer.text  # a file's URL is never echoed
    assert aquarius.request("GET", ASSETS).json() == {"ids": []}


def test_update_and_paths_refuse_bad_input(aquarius: Served) -> None:
    ddo, other = asset("one"), asset("two")
    aquarius.post_ddo(ddo)
    wrong = aquarius.request("PUT", f"{DDO_PATH}/{other.did}", json=ddo.as_dict())
    assert wrong.status_code == 400 and f"the DDO of {ddo.did}, not of {other.did}" in wrong.text
    missing = aquarius.request("PUT", f"{DDO_PATH}/{ddo.did}", json=_without(ddo.as_dict(), "service"))
    assert missing.status_code == 400 and '"service" is required in the call to update' in missing.text
    for method in ("GET", "PUT", "DELETE"):
        answer = aquarius.request(method, f"{DDO_PATH}/did:op:nothex", json=ddo.as_dict())
        assert answer.status_code == 400 and "not a DID" in answer.text, method
    too_big = aquarius.request("POST", DDO_PATH, data=b"x" * (2 << 20), headers={"content-type": "application/json"})
    assert too_big.status_code == 413


def test_validate_answers_true_or_the_errors(aquarius: Served) -> None:
    valid = {"main": {"name": "x", "type": "dataset", "dateCreated": "2020-01-01T00:00:00Z", "author": "a",
                      "license": "CC0", "price": "0",
                      "files": [{"index": 0, "contentType": "text/csv", "url": "https://example.org/a"}]}}
    answer = aquarius.request("POST", DDO_PATH + "/validate", json=valid)
    assert (answer.status_code, answer.content) == (200, b"true\n")  # what ocean-utils compares with
    empty = aquarius.request("POST", DDO_PATH + "/validate", json={})
    assert empty.json() == [{"message": "'main' is a required property", "path": ""}]
    assert metadata_errors({"main": {**valid["main"], "type": "film"}}) == [
        {"message": '"film" is not one of [\'dataset\', \'algorithm\']', "path": "main/type"}]


# -- the pure parts and our own client ----------------------------------------------------------------


def test_paginate_and_sort_edges() -> None:
    docs = [{"id": str(i), "n": i % 3} for i in range(7)]
    assert paginate(docs, None, None)["total_pages"] == 1
    assert paginate([], 5, 1) == {"results": [], "page": 1, "total_pages": 0, "total_results": 0}
    assert [d["id"] for d in sort_documents([*docs, {"id": "none"}], {"n": 1})][:3] == ["0", "3", "6"]
    assert sort_documents(docs, {"n": -1})[-1]["n"] == 0 and sort_documents(docs, None) == docs
    with pytest.raises(BadRequest):
        compile_query({"price": []})


def test_our_client_publishes_and_resolves_through_it(aquarius: Served) -> None:
    client = AquariusMetadataStore(aquarius.url)
    ddo = asset("through the client")
    client.publish(ddo)
    assert client.resolve(ddo.did) == ddo and client.list_dids() == [ddo.did]
    with pytest.raises(OceanError, match="already published"):
        client.publish(ddo)
    with pytest.raises(AssetNotFound):
        client.resolve("did:op:" + "00" * 32)


def test_store_put_delete_documents(tmp_path: Path) -> None:
    store = SqliteMetadataStore(tmp_path / "m.sqlite")
    first, second = asset("a"), asset("b")
    assert store.put(first) is True and store.put(second) is True
    assert store.put(first) is False  # replaced in place
    assert [d.did for d in store.documents()] == [first.did, second.did]
    assert store.delete(first.did) is True and store.delete(first.did) is False
    assert store.delete_all() == 1 and store.documents() == []


def test_our_client_checks_an_https_aquarius_against_the_ca_it_is_given(tmp_path: Path) -> None:
    from ocean_secret_store.localca import issue_certificate, make_local_ca

    ca = make_local_ca(tmp_path / "tls")
    served = Served(tmp_path / "m.sqlite", issue_certificate(ca, tmp_path / "tls", "aquarius").context()).start()
    try:
        ddo = asset("over https")
        served.store.publish(ddo)
        assert open_metadata_store(served.url, verify=str(ca.cert)).resolve(ddo.did) == ddo
        with pytest.raises(OceanError, match="did not answer: SSLError"):  # the system CAs do not know it
            AquariusMetadataStore(served.url).resolve(ddo.did)
    finally:
        served.stop()
