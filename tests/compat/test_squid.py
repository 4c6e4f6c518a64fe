"""The real squid-py 0.9.3 (with ocean-keeper 0.3.5, ocean-utils 0.3.7, ocean-secret-store-client
0.0.2 and web3 4.5.0), unmodified on Python 3.7, through Ocean's whole flow against a devnet:
``Ocean(config)`` from the ``config.ini`` that ``devnet up`` wrote (its ``keeper.path`` the
artifacts folder ``devnet up`` wrote), ``assets.create`` encrypting through the Secret Store and
publishing to the devnet's Aquarius, ``resolve``, ``order`` (the provider's events handler grants),
and ``consume`` in both of Brizo's forms, the bytes saved equal to the bytes published; the same for
an asset whose files the provider encrypted (``use_secret_store=False``, the publisher named as the
key's owner-to-be).

The test supplies only the asset: its files, put into the devnet's ``files_dir`` and listed at
``files_url`` as the devnet documents, and its metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ocean_secret_store import devnet
from tests.compat.conftest import Driver, StackError

pytestmark = [pytest.mark.integration, pytest.mark.compat]

#: The contracts squid-py 0.9.3's Ocean() loads (squid_py/ocean/ocean.py).
SQUID_CONTRACTS = {"DIDRegistry", "Dispenser", "TemplateStoreManager", "OceanToken", "ConditionStoreManager",
                   "AgreementStoreManager", "AccessSecretStoreCondition", "LockRewardCondition", "HashLockCondition",
                   "SignCondition", "EscrowReward"}
PRICE = 2 * 10**18  # base units: 2 OCEAN


@pytest.fixture(scope="module")
def asset_files(drive: Driver, net: devnet.DevnetState) -> dict[str, bytes]:
    """Two files of an asset in the devnet's files folder: bytes that are not text, and a small CSV."""
    assert net.files_dir, "devnet up wrote no files_dir"
    tag = os.urandom(4).hex()
    files = {f"data-{tag}.bin": os.urandom(3000) + bytes(range(256)), f"table-{tag}.csv": b"a,b\n1,2\n3,\xc3\xa9\n"}
    for name, data in files.items():
        (Path(net.files_dir) / name).write_bytes(data)
    return files


def metadata(net: devnet.DevnetState, files: dict[str, bytes], name: str = "compat suite asset") -> dict[str, Any]:
    """squid-py's metadata of an asset of ``files`` (its DID is a hash of this and the services)."""
    return {"main": {
        "name": name, "type": "dataset", "dateCreated": "2026-12-01T10:00:00Z",
        "author": "tests/compat", "license": "CC0", "price": str(PRICE),
        "files": [{"index": i, "url": f"{net.files_url}/{name}", "contentType": "application/octet-stream",
                   "contentLength": str(len(data)), "checksum": hashlib.sha256(data).hexdigest()}
                  for i, (name, data) in enumerate(files.items())],
    }}


@pytest.fixture(scope="module")
def published(drive: Driver, net: devnet.DevnetState, asset_files: dict[str, bytes]) -> Iterator[dict[str, Any]]:
    yield drive("squid_publish", metadata=metadata(net, asset_files))


@pytest.fixture(scope="module")
def ordered(drive: Driver, published: dict[str, Any]) -> dict[str, Any]:
    return drive("squid_order", did=published["did"])


def service(ddo: dict[str, Any], kind: str) -> dict[str, Any]:
    (found,) = [s for s in ddo["service"] if s["type"] == kind]
    return found


def test_ocean_is_configured_by_the_devnets_files_alone(drive: Driver, net: devnet.DevnetState) -> None:
    config = drive("squid_config")
    assert config["keeper_path"] == net.keeper_artifacts
    assert config["network"] == "development"
    assert config["keeper_url"] == net.chain_url
    assert (config["secret_store_url"], config["parity_url"]) == (net.secret_store_url, net.rpc_url)
    assert config["aquarius_url"] == net.aquarius_url
    # every contract squid-py loads, at the address the devnet deployed it to
    assert set(config["contracts"]) >= SQUID_CONTRACTS
    assert {name: config["contracts"][name] for name in SQUID_CONTRACTS} == {
        name: net.contracts[name] for name in SQUID_CONTRACTS}


def test_create_encrypts_through_the_secret_store_and_resolve_finds_it(
        drive: Driver, net: devnet.DevnetState, published: dict[str, Any], asset_files: dict[str, bytes]) -> None:
    did, ddo = published["did"], published["ddo"]
    main = service(ddo, "metadata")["attributes"]["main"]
    assert [f.get("url") for f in main["files"]] == [None, None]  # squid-py strips the URLs before publishing
    encrypted = service(ddo, "metadata")["attributes"]["encryptedFiles"]
    assert service(ddo, "authorization")["serviceEndpoint"] == net.secret_store_url
    assert service(ddo, "access")["serviceEndpoint"].startswith(str(net.provider_url))
    # the file list was encrypted by the Secret Store under the DID: the publisher's key decrypts it
    files = drive("ssc_decrypt", account="publisher", document_id=did.removeprefix("did:op:"), encrypted=encrypted)
    assert [f["url"] for f in json.loads(files)] == [f"{net.files_url}/{name}" for name in asset_files]

    resolved = drive("squid_resolve", did=did)
    assert resolved["id"] == did
    assert service(resolved, "metadata")["attributes"]["encryptedFiles"] == encrypted
    assert [s["type"] for s in resolved["service"]] == [s["type"] for s in ddo["service"]]


def test_search_and_query_find_the_asset(drive: Driver, published: dict[str, Any]) -> None:
    found = drive("squid_search", text="compat suite asset")
    assert published["did"] in found["search"]
    assert published["did"] in found["query"]
    assert drive("squid_search", text="no-such-words-anywhere") == {"search": [], "query": []}


def test_a_consumer_without_access_is_refused(
        drive: Driver, published: dict[str, Any], tmp_path: Path) -> None:
    # never ordered: squid-py decrypts the file list with the consumer's key first, and the key servers refuse
    with pytest.raises(StackError) as refused:
        drive("squid_consume", did=published["did"], agreement_id="0x" + os.urandom(32).hex(),
              destination=str(tmp_path / "downloads"))
    assert refused.value.type == "RPCError"
    assert "Failed to retrieve decryption keys" in refused.value.message
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_order_grants_access_through_the_provider(ordered: dict[str, Any]) -> None:
    assert ordered["agreement_id"].startswith("0x")
    # lock reward (the consumer's squid-py), access (the provider's events handler), escrow (the same)
    assert ordered["status"]["conditions"]["lockReward"] == 2
    assert ordered["status"]["conditions"]["accessSecretStore"] == 2


def test_default_consume_downloads_every_file(drive: Driver, published: dict[str, Any], ordered: dict[str, Any],
                                              asset_files: dict[str, bytes], tmp_path: Path) -> None:
    # no index: squid-py decrypts the URLs itself and sends Brizo's url= form, one request per file
    got = drive("squid_consume", did=published["did"], agreement_id=ordered["agreement_id"],
                service_index=ordered["service_index"], destination=str(tmp_path / "downloads"))
    assert {name: bytes.fromhex(data) for name, data in got["files"].items()} == asset_files
    assert Path(got["folder"]).parent == tmp_path / "downloads"


@pytest.mark.parametrize("index", [0, 1])
def test_consume_with_index_downloads_that_file(drive: Driver, published: dict[str, Any], ordered: dict[str, Any],
                                                asset_files: dict[str, bytes], tmp_path: Path, index: int) -> None:
    # index: the consumer signs the agreement id and the provider decrypts the URL itself
    got = drive("squid_consume", did=published["did"], agreement_id=ordered["agreement_id"],
                service_index=ordered["service_index"], destination=str(tmp_path / "downloads"), index=index)
    name = list(asset_files)[index]
    assert {n: bytes.fromhex(d) for n, d in got["files"].items()} == {name: asset_files[name]}


@pytest.fixture(scope="module")
def provider_published(drive: Driver, net: devnet.DevnetState, asset_files: dict[str, bytes]) -> dict[str, Any]:
    # use_secret_store=False: squid-py posts the files list to Brizo's services/publish with the
    # publisher's signature; the provider generates the key with its own account and names the
    # publisher as the key's owner-to-be (docs/provider.md)
    return drive("squid_publish", metadata=metadata(net, asset_files, "published through the provider"),
                 use_secret_store=False)


@pytest.fixture(scope="module")
def provider_ordered(drive: Driver, provider_published: dict[str, Any]) -> dict[str, Any]:
    return drive("squid_order", did=provider_published["did"])


def test_publish_through_the_providers_encrypt_endpoint(drive: Driver, net: devnet.DevnetState,
                                                        provider_published: dict[str, Any],
                                                        asset_files: dict[str, bytes]) -> None:
    did = provider_published["did"]
    encrypted = service(provider_published["ddo"], "metadata")["attributes"]["encryptedFiles"]
    assert encrypted.startswith("0x")
    assert drive("squid_resolve", did=did)["id"] == did
    urls = [f"{net.files_url}/{name}" for name in asset_files]
    document_id = did.removeprefix("did:op:")
    # the provider (the key's author) and the publisher (its owner-to-be, the DID's first registrant)
    # decrypt the list with secret-store-client; a consumer that has not ordered is refused
    for account in ("provider", "publisher"):
        files = drive("ssc_decrypt", account=account, document_id=document_id, encrypted=encrypted)
        assert [f["url"] for f in json.loads(files)] == urls
    with pytest.raises(StackError):
        drive("ssc_decrypt", account="consumer", document_id=document_id, encrypted=encrypted)


def test_an_asset_published_through_the_provider_is_ordered_and_consumed(
        drive: Driver, provider_published: dict[str, Any], provider_ordered: dict[str, Any],
        asset_files: dict[str, bytes], tmp_path: Path) -> None:
    # squid-py decrypts the files list with the consumer's key before it calls the provider, in both
    # forms: the key servers serve it because the DID's first registrant is the key's owner-to-be
    assert provider_ordered["status"]["conditions"]["accessSecretStore"] == 2
    did, agreement, index = provider_published["did"], provider_ordered["agreement_id"], \
        provider_ordered["service_index"]
    got = drive("squid_consume", did=did, agreement_id=agreement, service_index=index,
                destination=str(tmp_path / "default"))
    assert {name: bytes.fromhex(data) for name, data in got["files"].items()} == asset_files
    for file_index, name in enumerate(asset_files):
        got = drive("squid_consume", did=did, agreement_id=agreement, service_index=index,
                    destination=str(tmp_path / f"index-{file_index}"), index=file_index)
        assert {n: bytes.fromhex(d) for n, d in got["files"].items()} == {name: asset_files[name]}
