"""Brizo's consume forms as squid-py 0.9.3 sends them, against a real devnet's provider (issue 13,
slice 3): the ``url=`` form served only for the asset's own files, to a consumer with access, under
the provider's fetch policy; and a ``Content-Disposition`` that squid-py saves under the right name.

Facts reproduced here (read in squid-py 0.9.3's wheel, ``squid_py/brizo/brizo.py``):

* the default ``assets.consume(...)`` (no ``index``) calls ``Brizo.consume_service``, which for each
  decrypted file sends ``GET <access serviceEndpoint>?url=<file url>&serviceAgreementId=<agreement
  id>&consumerAddress=<consumer address>`` through a plain ``requests`` session (``stream=True``, no
  extra headers, no signature). The URL is pasted in unencoded (an f-string); a URL starting with a
  quote loses its first and last character first (``_create_consume_url``);
* the saved file's name is ``re.match(r'attachment;filename=(.+)', content_disposition)[1]``
  (``_get_file_name``), joined to the asset folder with ``os.path.join``; ``file-<i>`` when the
  pattern does not match (url= form), ``None`` and a crash in the index form.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from ocean_secret_store import devnet
from ocean_secret_store.chain.keeper import Keeper
from ocean_secret_store.exceptions import ConsensusUnreachable
from ocean_secret_store.ocean.ddo import build_ddo
from ocean_secret_store.ocean.did import did_to_id
from ocean_secret_store.ocean.host import Ocean
from ocean_secret_store.ocean.metadata import open_metadata_store
from ocean_secret_store.ocean.provider.app import EXPIRY_PARAM, consume_params, make_provider_app
from ocean_secret_store.ocean.provider.backends import SecretStoreBackend
from ocean_secret_store.ocean.provider.fetch import FetchPolicy
from ocean_secret_store.testing.devnets import running_devnet
from ocean_secret_store.testing.servers import ServerThread

pytestmark = pytest.mark.integration

PRICE = 10**18
#: squid-py 0.9.3's file-name pattern (``Brizo._get_file_name``), as a fact: the pattern string.
SQUID_FILE_NAME = r"attachment;filename=(.+)"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devnet.DevnetState]:
    with running_devnet(tmp_path_factory.mktemp("brizo-forms"), 3) as state:
        yield state


@pytest.fixture(scope="module")
def data(net: devnet.DevnetState) -> dict[str, bytes]:
    """Files in the devnet's file server (its provider's one allowed loopback origin)."""
    files = {"data.bin": os.urandom(50_000), "other.bin": os.urandom(1_000)}
    for name, content in files.items():
        (Path(str(net.files_dir)) / name).write_bytes(content)
    return files


def accounts(net: devnet.DevnetState) -> dict[str, LocalAccount]:
    return {role: Account.from_key(key.private_key) for role, key in net.accounts.items()}


def bought(net: devnet.DevnetState, files: list[dict[str, Any]]) -> tuple[Ocean, Any, str]:
    """An asset of ``files`` published (provider listed), ordered and granted: (ocean, ddo, agreement id)."""
    ocean = Ocean(str(net.ocean_config))
    roles = accounts(net)
    ocean.keeper.request_tokens(roles["consumer"], 2)
    meta = {"main": {"type": "dataset", "name": "brizo forms " + os.urandom(4).hex(), "author": "a",
                     "license": "CC0", "dateCreated": "2026-12-01T00:00:00Z", "price": str(PRICE),
                     "files": [{"contentType": "application/octet-stream", **f} for f in files]}}
    ddo = ocean.assets.create(meta, roles["publisher"], providers=[roles["provider"].address])
    agreement = ocean.assets.order(ddo.did, 2, roles["consumer"])
    ocean.assets.wait_for_access(ddo.did, roles["consumer"])
    return ocean, ddo, agreement


def squid_get(endpoint: str, url: str, agreement: str, consumer: str) -> requests.Response:
    """The request squid-py 0.9.3's ``_create_consume_url`` builds for one file, sent as it sends it."""
    if url.startswith(('"', "'")):
        url = url[1:-1]
    response = requests.get(f"{endpoint}?url={url}&serviceAgreementId={agreement}&consumerAddress={consumer}",
                            stream=True, timeout=30)
    return response


def squid_file_name(response: requests.Response) -> str | None:
    match = re.match(SQUID_FILE_NAME, response.headers.get("content-disposition", ""))
    return match[1] if match else None


def refusal(response: requests.Response, status: int, *secrets: str) -> str:
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    for secret in secrets:  # a refusal never echoes the URL it refused
        assert secret not in response.text, response.text
    return str(body["error"])


def test_squid_url_form_serves_the_assets_own_files(net: devnet.DevnetState, data: dict[str, bytes]) -> None:
    base = str(net.files_url)
    files = [
        {"url": f"{base}/data.bin", "name": "data.bin"},
        # a URL with its own query: squid-py sends it unencoded, so it arrives split into parameters
        {"url": f"{base}/other.bin?a=1&b=two", "name": "../../.ssh/authorized_keys"},
        # a quoted URL, which squid-py unquotes before sending
        {"url": f'"{base}/data.bin?quoted=1"', "name": 'evil";\r\nSet-Cookie: x=1'},
    ]
    _ocean, ddo, agreement = bought(net, files)
    endpoint, consumer = ddo.access_service["serviceEndpoint"], accounts(net)["consumer"].address
    expected = [(data["data.bin"], "data.bin"), (data["other.bin"], "authorized_keys"),
                (data["data.bin"], "evil____Set-Cookie__x_1")]
    for entry, (content, name) in zip(files, expected, strict=True):
        served = squid_get(endpoint, entry["url"], agreement, consumer)
        assert served.status_code == 200, served.text[:300]
        assert served.content == content
        assert "Set-Cookie" not in served.headers
        assert squid_file_name(served) == name
        assert os.path.basename(os.path.join("/downloads", name)) == name  # what squid-py writes to
    # the index form gives the same names (squid-py crashes on a name its pattern misses)
    indexed = requests.get(endpoint, params=consume_params(accounts(net)["consumer"], bytes.fromhex(agreement[2:]), 1),
                           timeout=30)
    assert indexed.status_code == 200 and squid_file_name(indexed) == "authorized_keys"
    # the url= form may carry the consumer's expiring signature too; a wrong signer is refused
    params = consume_params(accounts(net)["consumer"], bytes.fromhex(agreement[2:]), 0)
    del params["index"]
    params["url"] = files[0]["url"]
    assert requests.get(endpoint, params=params, timeout=30).content == data["data.bin"]
    forged = {**params, "signature": consume_params(Account.create(), bytes.fromhex(agreement[2:]), 0)["signature"]}
    assert "does not recover" in refusal(requests.get(endpoint, params=forged, timeout=30), 401, base)


def test_url_form_refusals(net: devnet.DevnetState, data: dict[str, bytes]) -> None:
    """403 for a URL not among the asset's files (another file of the same origin, another asset's
    file, a key server's API, a private or a metadata address); 401 for a consumer without access;
    502 when the asset's own file points at another local service; 400 for a malformed request."""
    base = str(net.files_url)
    node_health = f"{net.nodes[0].http_url}/health"
    node_port = str(urlsplit(net.nodes[0].http_url).port)
    _ocean, ddo, agreement = bought(net, [{"url": f"{base}/data.bin"}, {"url": node_health},
                                          {"url": "http://10.20.30.40:8080/private.csv"}])
    _other_ocean, other, _ = bought(net, [{"url": f"{base}/other.bin"}])
    endpoint, roles = ddo.access_service["serviceEndpoint"], accounts(net)
    consumer = roles["consumer"].address

    # 403: not one of this agreement's asset's files, whatever the origin
    for url in (f"{base}/other.bin", f"{base}/data.bin?x=1", f"{base}/DATA.BIN", f"{base}/data.bin/",
                f"{net.provider_url}/api/v1/brizo", f"http://localhost:{node_port}/health",
                "http://169.254.169.254/latest/meta-data/", "file:///etc/passwd"):
        message = refusal(squid_get(endpoint, url, agreement, consumer), 403, url, urlsplit(url).path or url)
        assert message.startswith("url is not one of the files"), message
    assert other.did != ddo.did

    # 401: a consumer without access, whatever the URL; before the URL is looked at
    stranger = Account.create().address
    assert "is not the consumer" in refusal(squid_get(endpoint, f"{base}/data.bin", agreement, stranger), 401, base)
    unknown = "0x" + os.urandom(32).hex()
    assert "does not exist" in refusal(squid_get(endpoint, f"{base}/data.bin", unknown, consumer), 401, base)
    assert "is not the consumer" in refusal(squid_get(endpoint, "http://10.0.0.1/", agreement, stranger), 401,
                                            "10.0.0.1")

    # 502: the asset's own file on another local service or a private address, refused as in the index form
    assert "allowed_origins" in refusal(squid_get(endpoint, node_health, agreement, consumer), 502, node_port)
    assert "private" in refusal(squid_get(endpoint, "http://10.20.30.40:8080/private.csv", agreement, consumer), 502,
                                "10.20.30.40")
    assert squid_get(endpoint, node_health, agreement, consumer).json()["rule"] == "address"

    # 400: malformed url= requests
    both = requests.get(endpoint, params={"url": f"{base}/data.bin", "index": "0", "serviceAgreementId": agreement,
                                          "consumerAddress": consumer}, timeout=30)
    assert "not both" in refusal(both, 400, base)
    twice = requests.get(endpoint, params=[("url", f"{base}/data.bin"), ("url", f"{base}/other.bin"),
                                           ("serviceAgreementId", agreement), ("consumerAddress", consumer)],
                         timeout=30)
    assert "one url" in refusal(twice, 400, base)
    unsigned_expiry = requests.get(endpoint, params={"url": f"{base}/data.bin", "serviceAgreementId": agreement,
                                                     "consumerAddress": consumer, EXPIRY_PARAM: "1"}, timeout=30)
    assert "with signature" in refusal(unsigned_expiry, 400, base)

    # a revoked grant is refused again (401), and so the asset's own URL is no longer served
    Ocean(str(net.ocean_config)).keeper.renounce_permission(roles["publisher"], ddo.asset_id, consumer)
    assert "no access permission" in refusal(squid_get(endpoint, f"{base}/data.bin", agreement, consumer), 401, base)


def test_a_provider_requiring_signature_expiry_refuses_the_unsigned_url_form(net: devnet.DevnetState,
                                                                               data: dict[str, bytes]) -> None:
    _ocean, _ddo, agreement = bought(net, [{"url": f"{net.files_url}/data.bin"}])
    app = make_provider_app(keeper=Keeper(net.chain_url, net.contracts),
                            metadata=open_metadata_store(str(net.metadata_store)),
                            backend=SecretStoreBackend([n.http_url for n in net.nodes]),
                            provider_account=accounts(net)["provider"],
                            fetch_policy=FetchPolicy.allowing([str(net.files_url)]), require_signature_expiry=True)
    consumer = accounts(net)["consumer"]
    with ServerThread() as server:
        endpoint = server.start(app) + "/api/v1/brizo/services/consume"
        url = f"{net.files_url}/data.bin"
        message = refusal(squid_get(endpoint, url, agreement, consumer.address), 401, url)
        assert "requires signature" in message
        params = consume_params(consumer, bytes.fromhex(agreement[2:]), 0)
        del params["index"]
        signed = requests.get(endpoint, params={**params, "url": url}, timeout=30)
        assert signed.status_code == 200 and signed.content == data["data.bin"]


# -- Brizo's services/publish (squid-py's assets.create(..., use_secret_store=False)) ----------------


def squid_publish(provider_url: str, asset_id: str, files: list[dict[str, Any]], publisher: LocalAccount,
                  signer: LocalAccount | None = None) -> requests.Response:
    """What squid-py 0.9.3's ``Brizo.encrypt_files_dict`` posts: a JSON text body with ``signedDocumentId``,
    the publisher's ``sign_hash(add_ethereum_prefix_and_hash_msg(asset_id))``, i.e. its personal
    signature of the asset id's text."""
    signed = (signer or publisher).sign_message(encode_defunct(text=asset_id)).signature
    payload = json.dumps({"documentId": asset_id, "signedDocumentId": "0x" + bytes(signed).hex(),
                          "document": json.dumps(files), "publisherAddress": publisher.address})
    return requests.post(f"{provider_url}/api/v1/brizo/services/publish", data=payload,
                         headers={"content-type": "application/json"}, timeout=30)


def proof_signature(publisher: LocalAccount, asset_id: bytes) -> str:
    """The DDO's ``proof.signatureValue``: the publisher's personal signature of the 32 DID bytes."""
    return "0x" + bytes(publisher.sign_message(encode_defunct(primitive=asset_id)).signature).hex()


def test_squid_publish_form_encrypts_for_the_publisher(net: devnet.DevnetState, data: dict[str, bytes],
                                                       tmp_path: Path) -> None:
    ocean = Ocean(str(net.ocean_config))
    roles = accounts(net)
    publisher, consumer, provider = roles["publisher"], roles["consumer"], roles["provider"]
    provider_url = str(net.provider_url)
    files = [{"url": f"{net.files_url}/data.bin", "contentType": "application/octet-stream", "name": "data.bin"}]
    asset_ids: list[str] = []

    def via_provider(did: str, text: str) -> str:
        asset_ids.append("0x" + did_to_id(did).hex())
        response = squid_publish(provider_url, asset_ids[-1], json.loads(text), publisher)
        assert response.status_code == 201, response.text
        return response.text

    meta = {"main": {"type": "dataset", "name": "published by the provider " + os.urandom(4).hex(), "author": "a",
                     "license": "CC0", "dateCreated": "2026-12-01T00:00:00Z", "price": str(PRICE), "files": files}}
    ddo = build_ddo(meta, publisher=publisher.address, secret_store_url=net.nodes[0].http_url,
                    provider_url=provider_url + "/api/v1/brizo/services/consume", metadata_url="sqlite:",
                    template_id="0x" + ocean.keeper.template_id.hex(), price=PRICE, timeout=3600,
                    encrypt=via_provider,
                    sign=lambda b: proof_signature(publisher, b))
    assert (ddo.encrypted_files or "").startswith("0x") and "data.bin" not in (ddo.encrypted_files or "")
    # the publisher, named as the key's owner-to-be, is served like its author, registered or not
    urls = [f["url"] for f in files]
    decrypted = ocean.secret_store.decrypt_document(ddo.did, ddo.encrypted_files or "", publisher)
    assert [f["url"] for f in json.loads(decrypted)] == urls
    ocean.keeper.register_did(publisher, ddo.asset_id, providers=[provider.address])
    ocean.metadata.publish(ddo)
    ocean.keeper.request_tokens(consumer, 2)
    agreement = ocean.assets.order(ddo.did, 2, consumer)
    ocean.assets.wait_for_access(ddo.did, consumer)
    # the provider, the key's author, decrypts it for a consumer with access: both consume forms serve
    folder = ocean.assets.consume(agreement, ddo.did, 2, consumer, tmp_path / "through-provider")
    assert (folder / "data.bin").read_bytes() == data["data.bin"]
    served = squid_get(ddo.access_service["serviceEndpoint"], files[0]["url"], agreement, consumer.address)
    assert served.status_code == 200 and served.content == data["data.bin"]
    # and the consumer decrypts it itself (squid-py's default consume): the key's author is the
    # provider, its owner-to-be the publisher, and the DID's first registrant is that owner-to-be
    decrypted = ocean.secret_store.decrypt_document(ddo.did, ddo.encrypted_files or "", consumer)
    assert [f["url"] for f in json.loads(decrypted)] == urls
    # a stranger with neither permission nor a role is refused
    with pytest.raises(ConsensusUnreachable):
        ocean.secret_store.decrypt_document(ddo.did, ddo.encrypted_files or "", Account.create())

    # 409: a key exists already under that id (the same request again)
    again = squid_publish(provider_url, asset_ids[0], files, publisher)
    assert again.status_code == 409 and "already exists" in again.json()["error"]


def test_publish_refusals(net: devnet.DevnetState) -> None:
    roles = accounts(net)
    publisher, consumer = roles["publisher"], roles["consumer"]
    provider_url = str(net.provider_url)
    secret_url = f"{net.files_url}/secret-name.bin"
    files = [{"url": secret_url}]

    def fresh() -> str:
        return "0x" + os.urandom(32).hex()

    # 401: a signature by someone else, or of another text (the raw 32 bytes, not the id's text)
    forged = squid_publish(provider_url, fresh(), files, publisher, signer=Account.create())
    assert "does not recover" in refusal(forged, 401, secret_url)
    asset_id = fresh()
    raw = publisher.sign_message(encode_defunct(primitive=bytes.fromhex(asset_id[2:]))).signature
    body = {"documentId": asset_id, "signature": "0x" + bytes(raw).hex(), "document": json.dumps(files),
            "publisherAddress": publisher.address}
    endpoint = f"{provider_url}/api/v1/brizo/services/publish"
    assert "does not recover" in refusal(requests.post(endpoint, json=body, timeout=30), 401, secret_url)
    # 403: the DID is registered on chain to another account (a hijacker, or a late publisher)
    taken = fresh()
    Ocean(str(net.ocean_config)).keeper.register_did(consumer, bytes.fromhex(taken[2:]), providers=[])
    assert "another account" in refusal(squid_publish(provider_url, taken, files, publisher), 403, secret_url)
    # 400: malformed bodies, never echoing the document
    for bad in ({**body, "document": json.dumps({"url": secret_url})}, {**body, "document": "[" + secret_url},
                {**body, "document": json.dumps([{"name": secret_url}])}, {**body, "documentId": "did:op:12"},
                {k: v for k, v in body.items() if k != "signature"}, {**body, "publisherAddress": "0x12"}):
        refusal(requests.post(endpoint, json=bad, timeout=30), 400, secret_url)
    refusal(requests.post(endpoint, data=b"not json", timeout=30), 400)
    refusal(requests.post(endpoint, json=[body], timeout=30), 400, secret_url)


def test_a_front_runner_of_a_provider_published_did_gets_nothing(net: devnet.DevnetState,
                                                                 data: dict[str, bytes]) -> None:
    """The provider generated the key naming the publisher as owner-to-be; someone who registers the
    DID before the publisher (seeing its id) owns it on chain and passes ``checkPermissions``, but is
    neither the key's author nor its owner-to-be: every key server refuses it, and its grantees. The
    publisher (owner-to-be) and the provider (author) keep the key."""
    ocean = Ocean(str(net.ocean_config))
    roles = accounts(net)
    publisher, provider = roles["publisher"], roles["provider"]
    hijacker = roles["consumer"]
    asset_id = "0x" + os.urandom(32).hex()
    files = [{"url": f"{net.files_url}/data.bin"}]
    response = squid_publish(str(net.provider_url), asset_id, files, publisher)
    assert response.status_code == 201, response.text
    encrypted, did = response.text, "did:op:" + asset_id[2:]
    ocean.keeper.register_did(hijacker, bytes.fromhex(asset_id[2:]), providers=[hijacker.address])
    with pytest.raises(ConsensusUnreachable):
        ocean.secret_store.decrypt_document(did, encrypted, hijacker)
    assert json.loads(ocean.secret_store.decrypt_document(did, encrypted, publisher)) == files
    assert json.loads(ocean.secret_store.decrypt_document(did, encrypted, provider)) == files
