"""The Ocean pipeline end to end on the real devnet: the host, the plugin's encryptors, the key
servers with the on-chain checker, the provider with its events handler, both backends."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount

from ocean_secret_store import devnet
from ocean_secret_store.exceptions import ConsensusUnreachable, DidMismatch
from ocean_secret_store.ocean.host import Ocean
from ocean_secret_store.ocean.provider.app import consume_params
from ocean_secret_store.testing.devnets import running_devnet
from ocean_secret_store.testing.servers import serving_files

pytestmark = pytest.mark.integration

PRICE = 3 * 10**18


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, bytes]]:
    root = tmp_path_factory.mktemp("files")
    data = os.urandom(100_000)
    (root / "data.bin").write_bytes(data)
    with serving_files(root) as url:
        yield f"{url}/data.bin", data


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devnet.DevnetState]:
    with running_devnet(tmp_path_factory.mktemp("pipeline"), 3) as state:
        yield state


def accounts(net: devnet.DevnetState) -> dict[str, LocalAccount]:
    return {role: Account.from_key(key.private_key) for role, key in net.accounts.items()}


def metadata(url: str) -> dict:
    # a unique name: the DID is the hash of the content, so equal content means the same asset
    return {"main": {"type": "dataset", "name": "test " + os.urandom(4).hex(), "author": "a", "license": "CC0",
                     "dateCreated": "2026-11-23T00:00:00Z", "price": str(PRICE),
                     "files": [{"url": url, "contentType": "application/octet-stream", "name": "data.bin"}]}}


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
