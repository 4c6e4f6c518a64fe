"""The Ocean pipeline end to end on the real devnet: the host, the plugin's encryptors, the key
servers with the on-chain checker, the provider with its events handler, both backends; and what
the devnet's provider refuses to fetch (issue 11, finding 5: loopback, private and metadata
addresses, redirects to them) and to replay (an expired consume signature)."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from aiohttp import web
from eth_account import Account
from eth_account.signers.local import LocalAccount

from ocean_secret_store import devnet
from ocean_secret_store.exceptions import ConsensusUnreachable, DidMismatch
from ocean_secret_store.ocean.host import Ocean
from ocean_secret_store.ocean.provider.app import EXPIRY_PARAM, consume_params
from ocean_secret_store.testing.devnets import running_devnet
from ocean_secret_store.testing.servers import ServerThread

pytestmark = pytest.mark.integration

PRICE = 3 * 10**18


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devnet.DevnetState]:
    with running_devnet(tmp_path_factory.mktemp("pipeline"), 3) as state:
        yield state


@pytest.fixture(scope="module")
def files(net: devnet.DevnetState) -> tuple[str, bytes]:
    """A file served by the devnet's own file server: the one loopback origin its provider fetches from."""
    data = os.urandom(100_000)
    (Path(str(net.files_dir)) / "data.bin").write_bytes(data)
    return f"{net.files_url}/data.bin", data


def accounts(net: devnet.DevnetState) -> dict[str, LocalAccount]:
    return {role: Account.from_key(key.private_key) for role, key in net.accounts.items()}


def metadata(*urls: str) -> dict:
    # a unique name: the DID is the hash of the content, so equal content means the same asset
    return {"main": {"type": "dataset", "name": "test " + os.urandom(4).hex(), "author": "a", "license": "CC0",
                     "dateCreated": "2026-11-23T00:00:00Z", "price": str(PRICE),
                     "files": [{"url": url, "contentType": "application/octet-stream", "name": "data.bin"}
                               for url in urls]}}


def consume_url(ddo_endpoint: str, params: dict) -> requests.Response:
    return requests.get(ddo_endpoint, params=params, timeout=30)


def test_publish_order_consume_through_the_provider_and_directly(net: devnet.DevnetState, files: tuple[str, bytes],
                                                                 tmp_path: Path) -> None:
    url, data = files
    ocean = Ocean(str(net.ocean_config))
    roles = accounts(net)
    publisher, consumer, provider = roles["publisher"], roles["consumer"], roles["provider"]
    ddo = ocean.assets.create(metadata(url), publisher, providers=[provider.address])
    assert url not in ddo.to_json()
    assert ddo.authorization_service["service"] == "SecretStore"

    # before any agreement: refused by the key servers and by the provider
    with pytest.raises(ConsensusUnreachable):
        ocean.secret_store.decrypt_document(ddo.did, ddo.encrypted_files or "", consumer)
    refused = consume_url(ddo.access_service["serviceEndpoint"], consume_params(consumer, os.urandom(32), 0))
    assert refused.status_code == 401 and refused.json()["error"]

    ocean.keeper.request_tokens(consumer, 5)
    publisher_before = ocean.keeper.token_balance(publisher.address)
    agreement = ocean.assets.order(ddo.did, 2, consumer)

    # a forged signature (another account signs for the consumer) is refused with 401
    forged = consume_params(Account.create(), bytes.fromhex(agreement[2:]), 0)
    forged["consumerAddress"] = consumer.address
    response = consume_url(ddo.access_service["serviceEndpoint"], forged)
    assert response.status_code == 401 and "signature" in response.json()["error"]

    folder = ocean.assets.consume(agreement, ddo.did, 2, consumer, tmp_path / "provider")
    assert (folder / "data.bin").read_bytes() == data
    direct = ocean.assets.consume(agreement, ddo.did, 2, consumer, tmp_path / "direct", direct=True)
    assert (direct / "data.bin").read_bytes() == data
    # a Range request through the provider
    params = consume_params(consumer, bytes.fromhex(agreement[2:]), 0)
    partial = requests.get(ddo.access_service["serviceEndpoint"], params=params,
                           headers={"Range": "bytes=10-19"}, timeout=30)
    assert partial.status_code == 206 and partial.content == data[10:20]

    # the events handler granted access and pays the publisher
    for _ in range(100):
        if ocean.keeper.condition_states(bytes.fromhex(agreement[2:])) == (2, 2, 2):
            break
        import time

        time.sleep(0.1)
    assert ocean.keeper.condition_states(bytes.fromhex(agreement[2:])) == (2, 2, 2)
    assert ocean.keeper.token_balance(publisher.address) - publisher_before == PRICE


def test_an_altered_ddo_fails_did_verification(net: devnet.DevnetState, files: tuple[str, bytes]) -> None:
    ocean = Ocean(str(net.ocean_config))
    roles = accounts(net)
    ddo = ocean.assets.create(metadata(files[0]), roles["publisher"], providers=[roles["provider"].address])
    # a tamperer with write access to the metadata store makes the asset look cheaper
    with sqlite3.connect(net.metadata_store) as db:
        (text,) = db.execute("SELECT document FROM ddo WHERE did = ?", (ddo.did,)).fetchone()
        document = json.loads(text)
        document["service"][0]["attributes"]["main"]["price"] = "1"
        db.execute("UPDATE ddo SET document = ? WHERE did = ?", (json.dumps(document), ddo.did))
    with pytest.raises(DidMismatch, match="metadata"):
        ocean.assets.resolve(ddo.did)


def test_the_provider_swaps_backends_by_config_and_both_serve(net: devnet.DevnetState, files: tuple[str, bytes],
                                                              tmp_path: Path) -> None:
    url, data = files
    roles = accounts(net)
    publisher, consumer, provider = roles["publisher"], roles["consumer"], roles["provider"]
    state_dir = net.state_dir
    ocean = Ocean(str(net.ocean_config))
    ocean.keeper.request_tokens(consumer, 10)

    # 1. secret-store backend: an asset encrypted under a threshold key
    threshold_asset = ocean.assets.create(metadata(url), publisher, providers=[provider.address])
    agreement = ocean.assets.order(threshold_asset.did, 2, consumer)
    folder = ocean.assets.consume(agreement, threshold_asset.did, 2, consumer, tmp_path / "ss")
    assert (folder / "data.bin").read_bytes() == data

    # 2. the same provider restarted with the provider-key backend (Ocean V3 style); the publisher
    #    takes the provider's public key from its info endpoint and encrypts to it
    devnet.restart_provider(state_dir, "provider-key")
    try:
        info = requests.get(f"{net.provider_url}/api/v1/brizo", timeout=10).json()
        assert info["backend"] == "provider-key"
        v3 = Ocean(dataclasses.replace(Ocean(str(net.ocean_config)).config, encryptor="provider-key",
                                       provider_public_key=info["providerPublicKey"]))
        key_asset = v3.assets.create(metadata(url), publisher, providers=[provider.address])
        assert (key_asset.encrypted_files or "").startswith("0x04")  # Parity ECIES, not a threshold key
        agreement = v3.assets.order(key_asset.did, 2, consumer)
        folder = v3.assets.consume(agreement, key_asset.did, 2, consumer, tmp_path / "pk")
        assert (folder / "data.bin").read_bytes() == data
    finally:
        devnet.restart_provider(state_dir, "secret-store")


def test_the_devnet_provider_takes_its_backend_from_the_plugins(
    net: devnet.DevnetState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider is started from ocean.ini alone: a plugin blocked by OCEAN_DISABLED_PLUGINS offers
    no backend to it (the devnet used to bypass the plugin manager with --backend)."""
    log = net.state_dir / "provider.log"
    before = log.stat().st_size
    monkeypatch.setenv("OCEAN_DISABLED_PLUGINS", "secret_store")  # this package's entry point
    try:
        with pytest.raises(devnet.DevnetError, match="provider exited"):
            devnet.restart_provider(net.state_dir)
        assert "no access backend named 'secret-store' is available" in log.read_text()[before:]
    finally:
        monkeypatch.delenv("OCEAN_DISABLED_PLUGINS")
        restarted = devnet.restart_provider(net.state_dir)
    assert restarted.provider_url == net.provider_url  # back on its old port: published DDOs name it
    assert requests.get(f"{restarted.provider_url}/api/v1/brizo", timeout=10).json()["backend"] == "secret-store"


def test_publishing_without_an_encryptor_is_refused(net: devnet.DevnetState, files: tuple[str, bytes]) -> None:
    from ocean_secret_store.exceptions import EncryptorUnavailable

    roles = accounts(net)
    disabled = Ocean(dataclasses.replace(Ocean(str(net.ocean_config)).config, secret_store_enabled=False))
    with pytest.raises(EncryptorUnavailable, match="never published in clear"):
        disabled.assets.create(metadata(files[0]), roles["publisher"])


# -- issue 11, finding 5: what the provider fetches, and replayed consume URLs ----------------------


def _bought(net: devnet.DevnetState, *urls: str) -> tuple[str, bytes]:
    """An asset of ``urls`` published, ordered and granted to the consumer: (endpoint, agreement id)."""
    ocean = Ocean(str(net.ocean_config))
    roles = accounts(net)
    ocean.keeper.request_tokens(roles["consumer"], 5)
    ddo = ocean.assets.create(metadata(*urls), roles["publisher"], providers=[roles["provider"].address])
    agreement = ocean.assets.order(ddo.did, 2, roles["consumer"])
    ocean.assets.wait_for_access(ddo.did, roles["consumer"])
    return ddo.access_service["serviceEndpoint"], bytes.fromhex(agreement[2:])


def _fetch(net: devnet.DevnetState, endpoint: str, agreement: bytes, index: int) -> requests.Response:
    return requests.get(endpoint, params=consume_params(accounts(net)["consumer"], agreement, index), timeout=30)


def _refused(response: requests.Response, rule: str, *secrets: str) -> str:
    assert response.status_code == 502, (response.status_code, response.text[:200])
    body: dict[str, Any] = response.json()
    assert body["rule"] == rule, body
    for secret in secrets:  # the URL is what the provider keeps from the consumer
        assert secret not in response.text
    assert "connected_peers" not in response.text and "providerPublicKey" not in response.text
    return str(body["error"])


def test_the_provider_refuses_loopback_private_and_metadata_urls(net: devnet.DevnetState,
                                                                 files: tuple[str, bytes]) -> None:
    """A publisher's file URL pointing at a key server's API, the provider's own API, a private or a
    cloud metadata address is refused; the devnet's file server (an allowed origin) still serves."""
    node = urlsplit(net.nodes[0].http_url)
    files_port = urlsplit(str(net.files_url)).port
    cases = [  # (url, rule, a part of the URL that must not be echoed)
        (f"{net.nodes[0].http_url}/health", "address", str(node.port)),
        (f"{net.provider_url}/api/v1/brizo", "address", "/api/v1/brizo"),
        (f"http://localhost:{node.port}/health", "address", "localhost"),  # a name that resolves to loopback
        (f"http://[::ffff:127.0.0.1]:{node.port}/health", "address", "ffff"),
        ("http://10.20.30.40:8080/private.csv", "address", "10.20.30.40"),
        ("http://169.254.169.254/latest/meta-data/iam/", "address", "169.254"),
        (f"https://127.0.0.1:{files_port}/data.bin", "address", "data.bin"),  # allowed is http, not https
        ("gopher://127.0.0.1:70/x", "scheme", "127.0.0.1"),
    ]
    endpoint, agreement = _bought(net, files[0], *(url for url, _, _ in cases))
    served = _fetch(net, endpoint, agreement, 0)
    assert served.status_code == 200 and served.content == files[1]
    for index, (_url, rule, secret) in enumerate(cases, start=1):
        message = _refused(_fetch(net, endpoint, agreement, index), rule, secret)
        assert "allowed_origins" in message or rule == "scheme", message
    assert "link-local" in _refused(_fetch(net, endpoint, agreement, 6), "address")
    assert "private" in _refused(_fetch(net, endpoint, agreement, 5), "address")


def test_a_redirect_from_an_allowed_origin_is_checked_on_every_hop(net: devnet.DevnetState,
                                                                   files: tuple[str, bytes]) -> None:
    node_health = f"{net.nodes[0].http_url}/health"

    async def to_node(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(node_health)

    async def to_files(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect(files[0])

    async def around(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/around")  # relative, forever

    app = web.Application()
    app.router.add_get("/to-node", to_node)
    app.router.add_get("/to-files", to_files)
    app.router.add_get("/around", around)
    with ServerThread() as server:
        origin = server.start(app)
        devnet.restart_provider(net.state_dir, allowed_origins=[origin])
        try:
            endpoint, agreement = _bought(net, f"{origin}/to-node", f"{origin}/to-files", f"{origin}/around")
            _refused(_fetch(net, endpoint, agreement, 0), "address", node_health)
            followed = _fetch(net, endpoint, agreement, 1)  # from one allowed origin to another
            assert followed.status_code == 200 and followed.content == files[1]
            assert "more than 5" in _refused(_fetch(net, endpoint, agreement, 2), "redirects")
        finally:
            devnet.restart_provider(net.state_dir, allowed_origins=[])


def test_a_replayed_consume_is_refused_once_its_signature_expired(net: devnet.DevnetState,
                                                                  files: tuple[str, bytes]) -> None:
    consumer = accounts(net)["consumer"]
    endpoint, agreement = _bought(net, files[0])
    params = consume_params(consumer, agreement, 0, lifetime=1)  # what the SDK sends, with a short life
    first = requests.get(endpoint, params=params, timeout=30)
    assert first.status_code == 200 and first.content == files[1]
    while int(time.time()) <= int(params[EXPIRY_PARAM]):  # bounded: at most 2 s
        time.sleep(0.1)
    replayed = requests.get(endpoint, params=params, timeout=30)
    assert replayed.status_code == 401 and "expired" in replayed.json()["error"]
    # dropping the expiry does not turn it into squid-py's form: that message was never signed
    stripped = {k: v for k, v in params.items() if k != EXPIRY_PARAM}
    assert "does not recover" in requests.get(endpoint, params=stripped, timeout=30).json()["error"]
    # nor does a signature for the far future pass
    far = requests.get(endpoint, params=consume_params(consumer, agreement, 0, lifetime=10**6), timeout=30)
    assert far.status_code == 401 and "ahead" in far.json()["error"]
    # squid-py's form (the agreement id alone) keeps working where it is not required otherwise
    squid = requests.get(endpoint, params=consume_params(consumer, agreement, 0, lifetime=None), timeout=30)
    assert squid.status_code == 200 and squid.content == files[1]
