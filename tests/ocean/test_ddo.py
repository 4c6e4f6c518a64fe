"""build_ddo: OEP-8 shape, files encrypted, URLs gone; verify_ddo: catches changes to main or id."""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from ocean_secret_store.exceptions import DidMismatch, InvalidDid, OceanError
from ocean_secret_store.ocean.ddo import DDO, build_ddo, files_from_plaintext, verify_ddo
from ocean_secret_store.ocean.did import checksum, did_from_checksums, did_to_id

PUBLISHER = Account.create()
SS_URL = "http://127.0.0.1:12001"
PROVIDER_URL = "http://127.0.0.1:8030/api/v1/brizo/services/consume"
AQUARIUS = "http://127.0.0.1:5000"
TEMPLATE_ID = "0x" + "ab" * 32


def sample_metadata() -> dict[str, Any]:
    return {
        "main": {
            "name": "ddo test " + os.urandom(4).hex(), "type": "dataset",
            "dateCreated": "2019-12-01T00:00:00Z",
            "author": "tests", "license": "CC0",
            "files": [
                {"url": "https://example.org/data/a.csv", "contentType": "text/csv", "name": "a.csv"},
                {"url": "file:///srv/data/b.json", "contentType": "application/json", "contentLength": "12"},
            ],
        },
        "additionalInformation": {"description": "two files", "tags": ["test"]},
    }


class Recorder:
    """An encrypt/sign pair that records what build_ddo handed it."""

    def __init__(self) -> None:
        self.encrypted: list[tuple[str, str]] = []
        self.signed: list[bytes] = []

    def encrypt(self, did: str, text: str) -> str:
        self.encrypted.append((did, text))
        return "0x" + text.encode().hex()[::-1]  # opaque but distinct from the plaintext

    def sign(self, data: bytes) -> str:
        self.signed.append(data)
        return "0x" + bytes(PUBLISHER.sign_message(encode_defunct(primitive=data)).signature).hex()


def make(metadata: dict[str, Any] | None = None, recorder: Recorder | None = None, **overrides: Any) -> DDO:
    recorder = recorder or Recorder()
    kwargs: dict[str, Any] = {
        "publisher": PUBLISHER.address, "secret_store_url": SS_URL, "provider_url": PROVIDER_URL,
        "metadata_url": AQUARIUS, "template_id": TEMPLATE_ID, "price": 10**18, "timeout": 3600,
        "encrypt": recorder.encrypt, "sign": recorder.sign,
    }
    kwargs.update(overrides)
    return build_ddo(metadata or sample_metadata(), **kwargs)


def keys_named(obj: Any, name: str) -> list[Any]:
    if isinstance(obj, dict):
        found = [v for k, v in obj.items() if k == name]
        return found + [x for v in obj.values() for x in keys_named(v, name)]
    if isinstance(obj, list):
        return [x for v in obj for x in keys_named(v, name)]
    return []


# -- build_ddo ---------------------------------------------------------------------------------


def test_build_ddo_oep8_shape() -> None:
    ddo = make()
    doc = ddo.as_dict()
    assert doc["@context"] == "https://w3id.org/did/v1"
    assert [(s["type"], s["index"]) for s in doc["service"]] == [
        ("metadata", 0), ("authorization", 1), ("access", 2)]

    auth = ddo.authorization_service
    assert auth["service"] == "SecretStore" and auth["serviceEndpoint"] == SS_URL
    assert auth["attributes"] == {"main": {}}

    meta = ddo.metadata_service
    assert meta["serviceEndpoint"] == f"{AQUARIUS}/api/v1/aquarius/assets/ddo/{ddo.did}"
    assert meta["attributes"]["encryptedFiles"] == ddo.encrypted_files and ddo.encrypted_files
    assert "encryptedFiles" not in meta["attributes"]["main"]
    assert meta["attributes"]["additionalInformation"]["description"] == "two files"

    access = ddo.access_service
    assert access["serviceEndpoint"] == PROVIDER_URL and access["templateId"] == TEMPLATE_ID
    main = access["attributes"]["main"]
    assert main["name"] == "dataAssetAccessServiceAgreement" and main["creator"] == PUBLISHER.address
    assert main["price"] == str(10**18) and main["timeout"] == 3600
    template = access["attributes"]["serviceAgreementTemplate"]
    assert template["contractName"] == "EscrowAccessSecretStoreTemplate"
    assert [c["name"] for c in template["conditions"]] == ["lockReward", "accessSecretStore", "escrowReward"]
    document_id = template["conditions"][1]["parameters"][0]
    assert document_id == {"name": "_documentId", "type": "bytes32", "value": "0x" + ddo.asset_id.hex()}

    assert ddo.price == 10**18 and ddo.timeout == 3600 and ddo.publisher == PUBLISHER.address
    assert doc["publicKey"] == [{"id": ddo.did, "type": "EthereumECDSAKey", "owner": PUBLISHER.address}]
    assert doc["authentication"] == [{"type": "RsaSignatureAuthentication2018", "publicKey": ddo.did}]
    assert doc["proof"]["type"] == "DDOIntegritySignature" and doc["proof"]["creator"] == PUBLISHER.address


def test_published_ddo_has_no_url_and_indexed_files() -> None:
    ddo = make()
    assert keys_named(ddo.as_dict(), "url") == []
    assert "example.org" not in ddo.to_json() and "/srv/data" not in ddo.to_json()
    assert [f["index"] for f in ddo.files] == [0, 1]
    assert [f["contentType"] for f in ddo.files] == ["text/csv", "application/json"]


def test_encrypt_gets_did_and_files_with_urls_sign_gets_asset_id() -> None:
    metadata = sample_metadata()
    recorder = Recorder()
    ddo = make(metadata, recorder)
    assert len(recorder.encrypted) == 1
    did, text = recorder.encrypted[0]
    assert did == ddo.did
    files = json.loads(text)
    assert [f["url"] for f in files] == [f["url"] for f in metadata["main"]["files"]]
    assert [f["index"] for f in files] == [0, 1]
    assert files_from_plaintext(text) == files
    assert recorder.signed == [ddo.asset_id] and len(ddo.asset_id) == 32
    assert ddo.proof["signatureValue"] == recorder.sign(ddo.asset_id)
    # the caller's metadata is left as it was (urls still there, no index added)
    assert "index" not in metadata["main"]["files"][0] and metadata["main"]["files"][0]["url"]


def test_did_is_computed_from_the_published_main() -> None:
    ddo = make()
    checksums = {str(s["index"]): checksum(s["attributes"]["main"]) for s in ddo.services}
    assert ddo.proof["checksum"] == checksums
    assert ddo.did == did_from_checksums(checksums)
    assert ddo.asset_id == did_to_id(ddo.did)


def test_same_metadata_different_price_gives_different_did() -> None:
    metadata = sample_metadata()
    assert make(metadata, price=1).did != make(metadata, price=2).did


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m["main"].update(type="movie"), "main.type"),
    (lambda m: m["main"].update(files=[]), "main.files"),
    (lambda m: m["main"]["files"][1].pop("url"), r"files\[1\] has no url"),
    (lambda m: m.pop("main"), "no 'main'"),
])
def test_build_ddo_rejects_bad_metadata(change: Any, message: str) -> None:
    metadata = sample_metadata()
    change(metadata)
    recorder = Recorder()
    with pytest.raises(OceanError, match=message):
        make(metadata, recorder)
    assert recorder.encrypted == []  # nothing encrypted for a refused asset


#: EIP-55's own example address with the case of one letter flipped: mixed case, wrong checksum.
BAD_CHECKSUM = "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


@pytest.mark.parametrize("overrides", [
    {"publisher": "not an address"}, {"publisher": PUBLISHER.address[:-1]}, {"publisher": None},
    {"publisher": BAD_CHECKSUM},
    {"template_id": "0x1234"}, {"template_id": b"\x01" * 31}, {"price": -1}, {"timeout": "10"},
    {"encrypt": lambda did, text: ""},
])
def test_build_ddo_rejects_bad_parameters(overrides: dict[str, Any]) -> None:
    with pytest.raises(OceanError):
        make(**overrides)


@pytest.mark.parametrize("spelling", [str.lower, str.upper, lambda a: a[2:]])
def test_publisher_is_stored_in_eip55_form(spelling: Any) -> None:
    text = spelling(PUBLISHER.address)
    if text.startswith("0X"):
        text = "0x" + text[2:]
    ddo = make(publisher=text, template_id=bytes.fromhex(TEMPLATE_ID[2:]))
    assert ddo.publisher == PUBLISHER.address and ddo.access_service["templateId"] == TEMPLATE_ID.lower()


def test_metadata_url_with_did_placeholder() -> None:
    ddo = make(metadata_url="https://meta.example/ddo/{did}")
    assert ddo.metadata_service["serviceEndpoint"] == f"https://meta.example/ddo/{ddo.did}"


# -- verify_ddo ---------------------------------------------------------------------------------


def test_fresh_ddo_verifies() -> None:
    verify_ddo(make())


def _altered(ddo: DDO, change: Any) -> DDO:
    doc = ddo.as_dict()
    change(doc)
    return DDO.from_dict(doc)


@pytest.mark.parametrize(("change", "named"), [
    (lambda d: d["service"][2]["attributes"]["main"].update(price="1"), r"service 2 \(access\)"),
    (lambda d: d["service"][0]["attributes"]["main"]["files"][0].update(contentType="text/plain"),
     r"service 0 \(metadata\)"),
    (lambda d: d["service"][0]["attributes"]["main"]["files"][0].update(url="https://evil.example/"),
     r"service 0 \(metadata\)"),
    (lambda d: d["service"][1]["attributes"]["main"].update(extra=True), r"service 1 \(authorization\)"),
    (lambda d: d["service"][2]["attributes"]["main"].update(timeout=1), r"service 2 \(access\)"),
])
def test_altered_main_is_detected(change: Any, named: str) -> None:
    ddo = make()
    with pytest.raises(DidMismatch, match=named) as info:
        verify_ddo(_altered(ddo, change))
    assert "altered after publishing" in str(info.value) and ddo.did in str(info.value)


def test_altered_main_with_rewritten_checksums_still_fails_on_the_did() -> None:
    ddo = make()

    def change(doc: dict[str, Any]) -> None:
        doc["service"][2]["attributes"]["main"]["price"] = "1"
        doc["proof"]["checksum"]["2"] = checksum(doc["service"][2]["attributes"]["main"])

    with pytest.raises(DidMismatch, match="is not the DID of the services"):
        verify_ddo(_altered(ddo, change))


def test_changed_id_is_detected() -> None:
    ddo = make()
    other = "did:op:" + os.urandom(32).hex()
    with pytest.raises(DidMismatch, match=f"id {other} is not the DID"):
        verify_ddo(_altered(ddo, lambda d: d.update(id=other)))


def test_removed_service_is_detected() -> None:
    ddo = make()
    with pytest.raises(DidMismatch, match="no such service"):
        verify_ddo(_altered(ddo, lambda d: d["service"].pop(1)))


def test_parts_outside_main_do_not_change_the_did() -> None:
    ddo = make()
    verify_ddo(_altered(ddo, lambda d: d["service"][0]["attributes"].update(encryptedFiles="0x00")))
    verify_ddo(_altered(ddo, lambda d: d["service"][2].update(serviceEndpoint="http://elsewhere/")))


# -- DDO object -------------------------------------------------------------------------------


def test_json_round_trip() -> None:
    ddo = make()
    again = DDO.from_json(ddo.to_json())
    assert again == ddo and again.as_dict() == ddo.as_dict()
    verify_ddo(again)
    assert DDO.from_dict(json.loads(ddo.to_json(indent=2))) == ddo


def test_ddo_is_not_changed_through_its_accessors() -> None:
    ddo = make()
    before = ddo.as_dict()
    ddo.as_dict()["id"] = "x"
    ddo.services[0]["attributes"]["main"]["name"] = "changed"
    ddo.files[0]["contentType"] = "changed"
    ddo.proof["checksum"]["0"] = "00"
    assert ddo.as_dict() == before
    verify_ddo(ddo)


def test_service_lookup() -> None:
    ddo = make()
    assert ddo.service(2) == ddo.access_service and ddo.service("metadata")["index"] == 0
    with pytest.raises(OceanError, match="compute"):
        ddo.service("compute")
    with pytest.raises(OceanError, match="index 7"):
        ddo.service(7)


@pytest.mark.parametrize("bad", ["{", "[]", '{"id": 1, "service": []}', '{"id": "did:op:12", "service": []}',
                                 '{"id": "did:op:' + "00" * 32 + '"}'])
def test_malformed_documents_are_refused(bad: str) -> None:
    with pytest.raises(OceanError):
        DDO.from_json(bad)


def test_malformed_id_raises_invalid_did() -> None:
    with pytest.raises(InvalidDid):
        DDO.from_dict({"id": "did:op:xyz", "service": []})


# -- files_from_plaintext --------------------------------------------------------------------------


def test_files_from_plaintext_assigns_missing_indexes() -> None:
    files = files_from_plaintext(json.dumps([{"url": "https://a/1"}, {"url": "https://a/2"}]))
    assert [(f["url"], f["index"]) for f in files] == [("https://a/1", 0), ("https://a/2", 1)]


@pytest.mark.parametrize("text", ["not json", "{}", "[]", '[{"name": "x"}]', '["https://a/1"]',
                                  '[{"url": "https://a/1", "index": -1}]'])
def test_files_from_plaintext_rejects(text: str) -> None:
    with pytest.raises(OceanError) as info:
        files_from_plaintext(text)
    assert "https://a/1" not in str(info.value)  # the URLs are never quoted back


def test_metadata_copy_is_independent() -> None:
    metadata = sample_metadata()
    snapshot = copy.deepcopy(metadata)
    make(metadata)
    assert metadata == snapshot
