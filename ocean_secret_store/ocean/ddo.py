"""OEP-8 DDOs of the squid-py era: building one to publish (files encrypted, URLs removed), verifying its DID.

Shape (ocean.md §8): ``@context``, ``id``, ``created``/``updated``, ``publicKey``,
``authentication``, ``proof`` and three services — ``metadata`` (index 0, the asset's
``attributes.main`` with the files listed WITHOUT their URLs, plus ``attributes.encryptedFiles``),
``authorization`` (index 1, ``service: "SecretStore"``, the cluster URL) and ``access``
(index 2, the provider's consume endpoint and the escrow-access agreement terms).

Unlike squid-py, which hashed ``main`` while the URLs were still in it, the checksums here are
computed over the PUBLISHED ``attributes.main`` of every service, so anyone holding only the
DDO can recompute them and the DID (:func:`verify_ddo`). ``encryptedFiles`` sits beside ``main``,
not in it, so the DID is known before the files are encrypted under it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from ..crypto.hashes import checksum_address
from ..exceptions import DidMismatch, OceanError
from ..protocol.hexcodec import parse_hex, to_hex
from .did import checksum, did_from_checksums, did_to_id, normalize_did

#: The asset types OEP-8 metadata allows in ``main.type``.
ASSET_TYPES = ("dataset", "algorithm")

CONTEXT = "https://w3id.org/did/v1"

#: Aquarius v1 routes, relative to its base URL: the asset list, and DDOs (``/ddo`` to register,
#: ``/ddo/{did}`` to resolve: the metadata service endpoint).
AQUARIUS_ASSETS_PATH = "/api/v1/aquarius/assets"
AQUARIUS_DDO_PATH = AQUARIUS_ASSETS_PATH + "/ddo"

#: Service indexes, in squid-py's ``ServiceFactory`` order.
METADATA_INDEX, AUTHORIZATION_INDEX, ACCESS_INDEX = 0, 1, 2


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class DDO:
    """A DID document: a JSON dict with typed accessors for the parts the pipeline reads.

    The wrapped dict is copied in and out, so a ``DDO`` never changes behind its holder's back.
    """

    __slots__ = ("_doc",)

    def __init__(self, document: Mapping[str, Any]) -> None:
        if not isinstance(document, Mapping):
            raise OceanError(f"a DDO must be a JSON object, got {type(document).__name__}")
        doc = copy.deepcopy(dict(document))
        if not isinstance(doc.get("id"), str):
            raise OceanError("the DDO has no string 'id'")
        did_to_id(doc["id"])  # InvalidDid for a malformed id
        services = doc.get("service")
        if not isinstance(services, list) or not all(isinstance(s, dict) for s in services):
            raise OceanError(f"the DDO of {doc['id']} has no 'service' list of objects")
        self._doc = doc

    # -- (de)serialisation -----------------------------------------------------------------------

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> DDO:
        return cls(document)

    @classmethod
    def from_json(cls, text: str | bytes) -> DDO:
        try:
            document = json.loads(text)
        except (ValueError, TypeError) as exc:
            raise OceanError(f"the DDO is not valid JSON: {exc}") from None
        return cls(document)

    def as_dict(self) -> dict[str, Any]:
        """A deep copy of the JSON document."""
        return copy.deepcopy(self._doc)

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self._doc, indent=indent, sort_keys=indent is not None)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DDO) and self._doc == other._doc

    def __hash__(self) -> int:
        return hash(self.did)

    def __repr__(self) -> str:
        return f"DDO({self.did!r})"

    # -- accessors --------------------------------------------------------------------------------

    @property
    def did(self) -> str:
        return str(self._doc["id"])

    @property
    def asset_id(self) -> bytes:
        """The DID's 32 bytes: Secret Store key id, ``DIDRegistry`` ``_did`` and ACL ``_documentId``."""
        return did_to_id(self.did)

    @property
    def services(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self._doc["service"])

    @property
    def proof(self) -> dict[str, Any]:
        proof = self._doc.get("proof")
        return copy.deepcopy(proof) if isinstance(proof, dict) else {}

    def service(self, type_or_index: str | int) -> dict[str, Any]:
        """The service with this ``type`` (a str) or ``index`` (an int).

        :raises OceanError: no such service.
        """
        key = "index" if isinstance(type_or_index, int) and not isinstance(type_or_index, bool) else "type"
        for service in self._doc["service"]:
            if service.get(key) == type_or_index:
                return copy.deepcopy(service)
        raise OceanError(f"the DDO of {self.did} has no service with {key} {type_or_index!r}")

    @property
    def metadata_service(self) -> dict[str, Any]:
        return self.service("metadata")

    @property
    def authorization_service(self) -> dict[str, Any]:
        return self.service("authorization")

    @property
    def access_service(self) -> dict[str, Any]:
        return self.service("access")

    def _main(self, service_type: str) -> dict[str, Any]:
        main = self.service(service_type).get("attributes", {}).get("main")
        if not isinstance(main, dict):
            raise OceanError(f"the {service_type} service of {self.did} has no attributes.main")
        return main

    @property
    def encrypted_files(self) -> str | None:
        """``attributes.encryptedFiles`` of the metadata service (the encrypted files list), or None."""
        value = self.metadata_service.get("attributes", {}).get("encryptedFiles")
        return value if isinstance(value, str) and value else None

    @property
    def publisher(self) -> str:
        """The publisher's address (``proof.creator``)."""
        creator = self.proof.get("creator")
        if not isinstance(creator, str):
            raise OceanError(f"the DDO of {self.did} has no proof.creator")
        return creator

    @property
    def price(self) -> int:
        """The access price in token base units (access service ``attributes.main.price``)."""
        value = self._main("access").get("price")
        try:
            price = int(str(value))
        except ValueError:
            raise OceanError(f"the access price of {self.did} is not an integer: {value!r}") from None
        if price < 0:
            raise OceanError(f"the access price of {self.did} is negative: {price}")
        return price

    @property
    def timeout(self) -> int:
        """The access timeout in seconds (access service ``attributes.main.timeout``; 0 = none)."""
        value = self._main("access").get("timeout", 0)
        try:
            return int(str(value))
        except ValueError:
            raise OceanError(f"the access timeout of {self.did} is not an integer: {value!r}") from None

    @property
    def files(self) -> list[dict[str, Any]]:
        """The published files list (``index``, ``contentType``, ... but no ``url``)."""
        files = self._main("metadata").get("files")
        if not isinstance(files, list):
            raise OceanError(f"the metadata of {self.did} has no files list")
        return files


# -- building ------------------------------------------------------------------------------------


def _validated_main(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Checks squid-py made before publishing; returns a deep copy of ``main``."""
    if not isinstance(metadata, Mapping):
        raise OceanError(f"metadata must be a JSON object, got {type(metadata).__name__}")
    main = metadata.get("main")
    if not isinstance(main, Mapping):
        raise OceanError("metadata has no 'main' object")
    if main.get("type") not in ASSET_TYPES:
        raise OceanError(f"metadata main.type must be one of {', '.join(ASSET_TYPES)}, "
                         f"got {main.get('type')!r}")
    files = main.get("files")
    if not isinstance(files, list) or not files:
        raise OceanError("metadata main.files must be a non-empty list")
    for position, entry in enumerate(files):
        if not isinstance(entry, Mapping):
            raise OceanError(f"metadata main.files[{position}] is not an object")
        # The URL itself is never named in messages: it is the asset's secret.
        if not isinstance(entry.get("url"), str) or not entry["url"]:
            raise OceanError(f"metadata main.files[{position}] has no url")
    return copy.deepcopy(dict(main))


def _metadata_endpoint(metadata_url: str, did: str) -> str:
    if "{did}" in metadata_url:
        return metadata_url.replace("{did}", did)
    if metadata_url.startswith(("http://", "https://")) and AQUARIUS_DDO_PATH not in metadata_url:
        # An Aquarius base URL, as squid-py's config gave it: point at the DDO itself.
        return f"{metadata_url.rstrip('/')}{AQUARIUS_DDO_PATH}/{did}"
    return metadata_url


def _template_id(template_id: str | bytes) -> str:
    if isinstance(template_id, (bytes, bytearray)):
        raw = bytes(template_id)
        if len(raw) != 32:
            raise OceanError(f"template_id must be 32 bytes (0x + 64 hex), got {len(raw)} bytes")
    else:
        raw = parse_hex(template_id, "template_id", 32, prefix=None, error=OceanError)
    return to_hex(raw)


def _checksummed(address: object, what: str) -> str:
    """The EIP-55 form of a 20-byte hex address; a mixed-case address must already be that form.

    EIP-55 makes mixed case a checksum: a typo in a mixed-case address is caught here rather than
    published. All-lower or all-upper hex carries no checksum and is accepted.
    """
    raw = parse_hex(address, what, 20, prefix=None, error=OceanError)
    checksummed = checksum_address(raw)
    digits = str(address)[-40:]
    if digits not in (digits.lower(), digits.upper(), checksummed[2:]):
        raise OceanError(f"{what} {address} fails its EIP-55 checksum")
    return checksummed


def _non_negative(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise OceanError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _agreement_template(asset_id: bytes, publisher: str, price: int) -> dict[str, Any]:
    """``attributes.serviceAgreementTemplate`` of the access service (ocean.md §8).

    Contract addresses (the lock condition's ``_rewardAddress`` = EscrowReward) are left empty:
    they are per chain and the keeper resolves them; the values that identify the deal are set.
    """

    def handler(module: str, function: str) -> dict[str, str]:
        return {"moduleName": module, "functionName": function, "version": "0.1"}

    def param(name: str, kind: str, value: Any) -> dict[str, Any]:
        return {"name": name, "type": kind, "value": value}

    amount = str(price)
    document_id = to_hex(asset_id)
    return {
        "contractName": "EscrowAccessSecretStoreTemplate",
        "events": [{"name": "AgreementCreated", "actorType": "consumer",
                    "handler": handler("escrowAccessSecretStoreTemplate", "fulfillLockRewardCondition")}],
        "fulfillmentOrder": ["lockReward.fulfill", "accessSecretStore.fulfill", "escrowReward.fulfill"],
        "conditionDependency": {"lockReward": [], "accessSecretStore": [],
                                "escrowReward": ["lockReward", "accessSecretStore"]},
        "conditions": [
            {"name": "lockReward", "timelock": 0, "timeout": 0,
             "contractName": "LockRewardCondition", "functionName": "fulfill",
             "parameters": [param("_rewardAddress", "address", ""), param("_amount", "uint256", amount)],
             "events": [{"name": "Fulfilled", "actorType": "publisher",
                         "handler": handler("lockRewardCondition", "fulfillAccessSecretStoreCondition")}]},
            {"name": "accessSecretStore", "timelock": 0, "timeout": 0,
             "contractName": "AccessSecretStoreCondition", "functionName": "fulfill",
             "parameters": [param("_documentId", "bytes32", document_id), param("_grantee", "address", "")],
             "events": [{"name": "Fulfilled", "actorType": "publisher",
                         "handler": handler("accessSecretStore", "fulfillEscrowRewardCondition")},
                        {"name": "TimedOut", "actorType": "consumer",
                         "handler": handler("accessSecretStore", "refundReward")}]},
            {"name": "escrowReward", "timelock": 0, "timeout": 0,
             "contractName": "EscrowReward", "functionName": "fulfill",
             "parameters": [param("_amount", "uint256", amount), param("_receiver", "address", publisher),
                            param("_sender", "address", ""), param("_lockCondition", "bytes32", ""),
                            param("_releaseCondition", "bytes32", "")],
             "events": [{"name": "Fulfilled", "actorType": "publisher",
                         "handler": handler("escrowRewardCondition", "verifyRewardTokens")}]},
        ],
    }


def build_ddo(
    metadata: Mapping[str, Any],
    *,
    publisher: str,
    secret_store_url: str,
    provider_url: str,
    metadata_url: str,
    template_id: str,
    price: int,
    timeout: int,
    encrypt: Callable[[str, str], str],
    sign: Callable[[bytes], str],
) -> DDO:
    """Build the DDO of a new asset: files encrypted under its DID, URLs gone from the published part.

    :param metadata: OEP-8 metadata: ``main`` (``type`` dataset/algorithm, ``files`` each with a
        ``url``, ...) and optional siblings (``additionalInformation``, ``curation``, ...).
    :param publisher: the publisher's address (``proof.creator``, ``publicKey.owner``).
    :param secret_store_url: the cluster URL of the ``authorization`` service.
    :param provider_url: the provider's consume endpoint (the ``access`` service endpoint).
    :param metadata_url: where the DDO will be served: a URL with ``{did}``, an Aquarius base
        URL (the DDO path is appended) or any other label, stored as given.
    :param template_id: the access agreement template id (0x + 64 hex).
    :param price: access price in token base units; ``timeout``: access timeout in seconds.
    :param encrypt: ``encrypt(did, files_json)`` -> ``encryptedFiles``; ``files_json`` is the files
        list WITH URLs and indexes. Called once the DID is known, before the DDO exists anywhere.
    :param sign: ``sign(asset_id_32_bytes)`` -> the publisher's signature (``proof.signatureValue``).
    :raises OceanError: invalid metadata or parameters, or an empty ``encrypt`` result.
    """
    main = _validated_main(metadata)
    publisher = _checksummed(publisher, "publisher")
    template = _template_id(template_id)
    price = _non_negative("price", price)
    timeout = _non_negative("timeout", timeout)
    created = _now()

    plain_files = []
    published_files = []
    for index, entry in enumerate(main["files"]):
        with_url = {**entry, "index": index}
        plain_files.append(with_url)
        published_files.append({k: v for k, v in with_url.items() if k != "url"})
    files_json = json.dumps(plain_files, separators=(",", ":"))
    main["files"] = published_files
    main.setdefault("datePublished", created)

    metadata_attributes = {k: copy.deepcopy(v) for k, v in metadata.items()
                           if k not in ("main", "encryptedFiles")}
    metadata_attributes["main"] = main
    services: list[dict[str, Any]] = [
        {"type": "metadata", "index": METADATA_INDEX, "serviceEndpoint": metadata_url,
         "attributes": metadata_attributes},
        {"type": "authorization", "index": AUTHORIZATION_INDEX, "service": "SecretStore",
         "serviceEndpoint": secret_store_url, "attributes": {"main": {}}},
        {"type": "access", "index": ACCESS_INDEX, "serviceEndpoint": provider_url, "templateId": template,
         "attributes": {"main": {"name": "dataAssetAccessServiceAgreement", "creator": publisher,
                                 "datePublished": created, "price": str(price), "timeout": timeout}}},
    ]

    checksums = {str(s["index"]): checksum(s["attributes"]["main"]) for s in services}
    did = did_from_checksums(checksums)
    asset_id = did_to_id(did)

    # Everything below lies outside attributes.main: it cannot change the DID just computed.
    services[METADATA_INDEX]["serviceEndpoint"] = _metadata_endpoint(metadata_url, did)
    access_attributes = services[ACCESS_INDEX]["attributes"]
    access_attributes["serviceAgreementTemplate"] = _agreement_template(asset_id, publisher, price)
    encrypted = encrypt(did, files_json)
    if not isinstance(encrypted, str) or not encrypted:
        raise OceanError(f"the encryptor returned no encryptedFiles for {did}: publishing refused "
                         "(file URLs are never published in clear)")
    metadata_attributes["encryptedFiles"] = encrypted
    signature = sign(asset_id)

    document = {
        "@context": CONTEXT,
        "id": did,
        "created": created,
        "updated": created,
        "publicKey": [{"id": did, "type": "EthereumECDSAKey", "owner": publisher}],
        "authentication": [{"type": "RsaSignatureAuthentication2018", "publicKey": did}],
        "proof": {"type": "DDOIntegritySignature", "created": created, "creator": publisher,
                  "signatureValue": signature, "checksum": checksums},
        "service": services,
    }
    return DDO(document)


# -- verifying -----------------------------------------------------------------------------------


def verify_ddo(ddo: DDO) -> None:
    """Check that ``ddo``'s DID is the one its services' ``attributes.main`` give.

    Recomputes every service's checksum and the DID from them, and compares with
    ``proof.checksum`` and ``id``. Does not check ``proof.signatureValue``.

    :raises DidMismatch: naming every service whose ``main`` differs from its recorded checksum,
        and the id when it is not the DID of the services as they are.
    """
    problems: list[str] = []
    recomputed: dict[str, str] = {}
    for position, service in enumerate(ddo.services):
        label = f"service {service.get('index', f'#{position}')} ({service.get('type', '?')})"
        index = service.get("index")
        if isinstance(index, bool) or not isinstance(index, int):
            problems.append(f"{label} has no integer index")
            continue
        attributes = service.get("attributes")
        main = attributes.get("main") if isinstance(attributes, dict) else None
        if not isinstance(main, dict):
            problems.append(f"{label} has no attributes.main")
            continue
        if str(index) in recomputed:
            problems.append(f"{label} repeats index {index}")
            continue
        recomputed[str(index)] = checksum(main)

    recorded = ddo.proof.get("checksum")
    if not isinstance(recorded, dict):
        problems.append("proof.checksum is missing")
        recorded = {}
    by_index = {str(s.get("index")): s.get("type", "?") for s in ddo.services}
    for key in sorted(set(recomputed) | set(recorded), key=lambda k: (len(k), k)):
        label = f"service {key} ({by_index.get(key, 'absent')})"
        if key not in recorded:
            problems.append(f"{label} has no proof.checksum entry")
        elif key not in recomputed:
            problems.append(f"proof.checksum lists {label} but the DDO has no such service")
        elif recorded[key] != recomputed[key]:
            problems.append(f"{label}: attributes.main does not match proof.checksum[{key!r}] "
                            "(altered after publishing)")

    expected = did_from_checksums(recomputed)
    if normalize_did(ddo.did) != expected:
        problems.append(f"id {ddo.did} is not the DID of the services' attributes.main ({expected})")
    if problems:
        raise DidMismatch(f"DDO {ddo.did} does not verify: " + "; ".join(problems))


def files_from_plaintext(text: str) -> list[dict[str, Any]]:
    """The files list (each with ``url`` and ``index``) from the decrypted ``encryptedFiles`` text.

    Lists without indexes (as squid-py encrypted them) get their positions.

    :raises OceanError: not a JSON list of objects with URLs. The text is never quoted: it holds the URLs.
    """
    try:
        files = json.loads(text)
    except (ValueError, TypeError):
        raise OceanError("the decrypted files list is not JSON") from None
    if not isinstance(files, list) or not files:
        raise OceanError("the decrypted files list is not a non-empty JSON list")
    result = []
    for position, entry in enumerate(files):
        if not isinstance(entry, dict):
            raise OceanError(f"entry {position} of the decrypted files list is not an object")
        if not isinstance(entry.get("url"), str) or not entry["url"]:
            raise OceanError(f"entry {position} of the decrypted files list has no url")
        index = entry.get("index", position)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise OceanError(f"entry {position} of the decrypted files list has an invalid index")
        result.append({**entry, "index": index})
    return result
