"""The Brizo-shaped provider service: the consume endpoint (agreement checks, then the file
streamed), the publish endpoint (files encrypted for a publisher), the info endpoint, and the
process that runs them with the events handler.

Routes (base ``/api/v1/brizo``, as Brizo 0.9; ocean.md §3.2):

``GET /api/v1/brizo/services/consume?serviceAgreementId=0x..&consumerAddress=0x..&signature=0x..&index=N``
``GET /api/v1/brizo/services/consume?url=<file URL>&serviceAgreementId=0x..&consumerAddress=0x..``
    Two forms, as Brizo 0.9 had them: the index form names the file by its position, the url=
    form by its URL (what squid-py 0.9.3's default ``assets.consume`` sends, the URL it decrypted
    itself pasted in unencoded; docs/provider.md). Missing or malformed parameters: 400 (both
    ``url`` and ``index``, or two ``url``, included). Then, each refusal a 401 JSON
    ``{"error": "..."}`` saying why:

    1. ``signature`` is the consumer's EIP-191 personal signature (``personal_sign``) of a text,
       in one of two forms; it must recover to ``consumerAddress``:

       * squid-py's form, no ``signatureExpiry`` parameter: the agreement id **as text**, the
         UTF-8 bytes of the ``serviceAgreementId`` parameter exactly as sent (``"0x"`` + 64 hex
         digits), hashed as ``keccak256("\\x19Ethereum Signed Message:\\n" + len + text)``. This
         is what squid-py signed (``add_ethereum_prefix_and_hash_msg(agreement_id)``) and Brizo
         verified (``personal_ec_recover``); with eth-account:
         ``Account.sign_message(encode_defunct(text=agreement_id_hex), key)``, checked here with
         ``Account.recover_message``. Such a URL works for as long as the agreement does: whoever
         sees it can replay it. A provider with ``[provider] require_signature_expiry = true``
         refuses this form.
       * the expiring form (what :func:`consume_params`, and so this package's SDK and CLI,
         send): the extra parameter ``signatureExpiry=<unix seconds>`` and the signed text
         ``"<serviceAgreementId> expires <signatureExpiry>"`` (one space each side of
         ``expires``; the parameters exactly as sent). Refused once the expiry is past, and when
         it is more than ``[provider] max_signature_lifetime`` seconds (default 3600) ahead of the
         provider's clock. Only the consumer can re-sign, so a seen URL dies at its expiry;
         stripping the parameter does not help, the bare-id message was not signed.
       * the url= form as squid-py sends it carries no signature at all; it may carry either
         signed form above (then checked the same way). A provider with ``[provider]
         require_signature_expiry = true`` refuses the unsigned url= form too.
    2. The agreement exists on chain and is an access (``EscrowAccessSecretStoreTemplate``) agreement.
    3. ``consumerAddress`` is the agreement's ``consumer`` actor (``getAgreementActors`` /
       ``getActorType``).
    4. ``AccessSecretStoreCondition.checkPermissions(consumer, did)`` is true (the provider's
       events handler grants it once the reward is locked).
    5. The agreement has not expired: the timestamp of its creation block plus the access
       service's ``timeout`` (seconds; 0 = never) is not past. "Now" is the later of this host's
       clock and the latest block's timestamp, so neither a stale dev chain nor a skewed clock
       extends an agreement.

    The DDO comes from the metadata store (404 if unknown). Then the access backend decrypts the
    files list with the provider's own account (502 if it cannot), and the file is chosen:
    ``files[index]`` (400 if out of range), or in the url= form the first of the asset's own
    files whose URL equals the one sent (squid-py's unquoting of a quoted URL applied to the
    asset's URLs; the URL as the query parses and as squid-py sent it unencoded both tried):
    any other URL, whatever its origin, is a 403 ``{"error": "url is not one of the files of
    this agreement's asset: ..."}`` that does not echo it. Access is checked first, so only a
    consumer with access learns whether a URL is one of the asset's. The file is
    streamed: ``http(s)://`` URLs are proxied under the provider's fetch
    policy (:mod:`.fetch`: no loopback, private, link-local or otherwise non-global address
    unless ``[provider] allowed_origins`` names the exact origin; the address checked after
    resolving is the one connected to; every redirect checked; size and time caps). A refusal by
    that policy is a 502 ``{"error": "...", "rule": "scheme" | "address" | "redirects" |
    "size"}`` whose message says what is wrong without the URL. The ``Range`` header is
    forwarded; 200/206 with ``Content-Range``/``Content-Length`` passed back; other origin
    answers become 502 ``{"error": ..., "rule": "origin"}``; a body that grows past
    ``max_file_bytes`` after the headers were sent is cut off (connection dropped).
    ``file://`` URLs are read from disk with ``Range`` support — only under the configured
    ``file_root`` (a publisher must not be able to make the provider serve its own key files),
    and refused when no root is configured. Brizo 0.9 fetched any URL the url= form named (an
    open proxy); here a URL is served only if it is one of the asset's own files, and then
    through the same fetch policy. Every response carries ``Content-Disposition:
    attachment;filename=<name>`` (:func:`attachment_name`: unquoted, one safe token, the name
    squid-py 0.9.3's pattern saves it under).

``POST /api/v1/brizo/services/publish``
    Brizo's encryption on a publisher's behalf (squid-py's ``assets.create(...,
    use_secret_store=False)``). A JSON body ``{"documentId", "signature" (or
    "signedDocumentId"), "document", "publisherAddress"}``: ``documentId`` the asset id
    (``0x`` + 64 hex digits as squid-py sends it, bare hex or ``did:op:...`` also taken);
    ``signature`` the publisher's personal signature of ``documentId`` **as text, exactly as sent**
    (what squid-py signs, ``add_ethereum_prefix_and_hash_msg(asset_id)``, and Brizo checked with
    ``personal_ec_recover``); ``document`` the JSON text of the files list. The list is
    re-serialised compactly (``separators=(",", ":")``, as Brizo) and encrypted by the access
    backend with the provider's account: the ``secret-store`` backend generates the server key
    ``documentId`` (``[secret-store] threshold``) and stores the document key, the provider being
    the key's author and the verified ``publisherAddress`` its owner-to-be (``X-Secret-Store-Owner``,
    recorded by every key server); ``provider-key`` encrypts to the provider's key. The key servers
    serve a key to a permitted consumer only if the DID's first registrant is the key's author or
    its owner-to-be (security.md, finding 1), and squid-py registers the DID as the publisher, so
    consumers with access decrypt the files list themselves too, as squid-py 0.9.3 does before
    every consume. 201 with the encrypted hex as
    the text body (squid-py reads ``response.text``). Refusals, JSON ``{"error"}``, never echoing
    the document: 400 malformed body or fields, or a document that is not a JSON list of file
    objects with URLs; 401 the signature does not recover to ``publisherAddress``; 403 the DID is
    registered on chain to another account; 409 a key already exists under ``documentId``; 501 the
    backend cannot encrypt; 502 the key servers failed; 503 the chain could not be read.

``GET /api/v1/brizo``
    ``{"providerAddress", "providerPublicKey": "0x<128 hex>", "backend", "software", "version"}``;
    the public key is what publishers encrypt to for the ``provider-key`` backend.

``GET /health``
    ``{"status": "ok"}``.

``GET /metrics``
    The provider's Prometheus metrics (:mod:`ocean_secret_store.metrics`, docs/metrics.md):
    requests by route pattern (never the query, which carries the consume signature) and status,
    consumes and publishes by outcome.

The access backend is always chosen through the plugin manager (:mod:`..plugins`) by the
config's ``[provider] backend``, so ``OCEAN_DISABLED_PLUGINS`` and third-party plugins apply to
every provider process. The command line (``ocean-secret-store provider``) lives in
:mod:`ocean_secret_store.cli`; this module offers it typed functions.

Blocking web3 and key server calls run in worker threads (``asyncio.to_thread``). Logs name
agreement ids and reasons, never signatures, keys or file URLs.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import aiohttp
from aiohttp import web
from eth_account import Account
from eth_account.messages import SignableMessage, encode_defunct
from eth_keys.exceptions import BadSignature
from multidict import MultiMapping

from ...chain.keeper import ESCROW_ACCESS_TEMPLATE_ID, Keeper, to_address, translate_errors
from ...client.local import account_public
from ...crypto.hashes import checksum_address
from ...exceptions import (
    AssetNotFound,
    ChainError,
    ConfigError,
    DocumentKeyAlreadyStored,
    OceanError,
    SecretStoreError,
    ServerKeyAlreadyGenerated,
)
from ...lifecycle import bound_port, on_reload_signal, wait_for_stop_signal
from ...metrics import CLIENT_CLOSED, METRICS_PATH, ProviderMetrics, metrics_handler, service_registry
from ...protocol.addresses import parse_host_port
from ...serving import GuardedAppRunner, ServingLimits, TlsFiles, guarded_site
from ..ddo import files_from_plaintext
from ..did import id_to_did
from ..metadata import open_metadata_store
from ..plugins import get_plugin_manager, select_access_backend
from .backends import EncryptingBackend
from .events import EventsHandler, read_agreement
from .fetch import FetchPolicy, open_origin
from .policy import DEFAULT_MAX_SIGNATURE_LIFETIME, FetchRefused, parse_origin

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from prometheus_client import CollectorRegistry

    from ..config import OceanConfig
    from ..ddo import DDO
    from ..metadata import MetadataStore
    from .backends import AccessBackend

__all__ = [
    "API_BASE",
    "CONSUME_PATH",
    "DEFAULT_MAX_SIGNATURE_LIFETIME",
    "DEFAULT_SIGNATURE_LIFETIME",
    "EXPIRY_PARAM",
    "INFO_PATH",
    "PUBLISH_PATH",
    "ProviderSettings",
    "RunningProvider",
    "attachment_name",
    "consume_params",
    "make_provider_app",
    "reload_key_servers",
    "serve_provider",
    "settings_from_config",
    "start_provider",
]


log = logging.getLogger(__name__)

API_BASE = "/api/v1/brizo"
INFO_PATH = API_BASE
CONSUME_PATH = API_BASE + "/services/consume"
PUBLISH_PATH = API_BASE + "/services/publish"
SOFTWARE = "ocean-secret-store"
try:
    # From the installed distribution, not the package root: that would import the whole public API.
    VERSION = importlib.metadata.version(SOFTWARE)
except importlib.metadata.PackageNotFoundError:  # a checkout that was never installed
    VERSION = "unknown"

_AGREEMENT_ID = re.compile(r"0x[0-9a-fA-F]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_SIGNATURE = re.compile(r"0x[0-9a-fA-F]{130}")
_INDEX = re.compile(r"[0-9]{1,9}")
_EXPIRY = re.compile(r"[0-9]{1,12}")
_DOCUMENT_ID = re.compile(r"(?:0x|did:op:)?([0-9a-fA-F]{64})")
_PUBLISH_SIGNATURE = re.compile(r"(?:0x)?([0-9a-fA-F]{130})")
#: The optional consume parameter of the expiring signature form (module docstring).
EXPIRY_PARAM = "signatureExpiry"
#: Seconds ahead that :func:`consume_params` signs for (a download starts right after signing).
DEFAULT_SIGNATURE_LIFETIME = 300
#: Response headers passed back from a proxied origin.
_PASSED_HEADERS = ("Content-Type", "Content-Length", "Content-Range", "Content-Encoding", "Accept-Ranges",
                   "ETag", "Last-Modified")

def _error(status: type[web.HTTPException], message: str) -> web.HTTPException:
    """An HTTP error whose body is ``{"error": message}``."""
    return status(text=json.dumps({"error": message}), content_type="application/json")


def _consume_message(agreement_id_text: str, expiry: str | None = None) -> SignableMessage:
    """What a consumer signs for ``consume``: the EIP-191 personal message of the agreement id text,
    followed by ``" expires <expiry>"`` in the expiring form."""
    return encode_defunct(text=agreement_id_text if expiry is None else f"{agreement_id_text} expires {expiry}")


def consume_params(account: LocalAccount, agreement_id: bytes, index: int, *,
                   lifetime: int | None = DEFAULT_SIGNATURE_LIFETIME) -> dict[str, str]:
    """The consume query parameters for ``account`` (the consumer), signature included.

    By default the expiring form, valid ``lifetime`` seconds from now; ``lifetime=None`` gives
    exactly what squid-py sent (a signature of the agreement id alone, replayable).
    """
    agreement_text = "0x" + agreement_id.hex()
    expiry = None if lifetime is None else str(int(time.time()) + lifetime)
    signature = bytes(account.sign_message(_consume_message(agreement_text, expiry)).signature)  # v = 27/28
    params = {"serviceAgreementId": agreement_text, "consumerAddress": to_address(account.address),
              "signature": "0x" + signature.hex(), "index": str(index)}
    if expiry is not None:
        params[EXPIRY_PARAM] = expiry
    return params


def _recover_signer(signature_hex: str, agreement_id_text: str, expiry: str | None) -> str | None:
    """The consume signature's signer (v may be 27/28 as wallets send it, or 0/1); None if unrecoverable."""
    try:
        signer = Account.recover_message(_consume_message(agreement_id_text, expiry), signature=signature_hex)
    except (BadSignature, ValueError):
        return None
    return checksum_address(bytes.fromhex(signer[2:]))


@dataclass
class _Provider:
    """What the handlers share."""

    keeper: Keeper
    metadata: MetadataStore
    backend: AccessBackend
    account: LocalAccount
    file_root: Path | None
    chunk_size: int
    fetch: FetchPolicy
    require_expiry: bool = False
    max_signature_lifetime: int = DEFAULT_MAX_SIGNATURE_LIFETIME
    public_key_hex: str = ""
    address: str = ""
    #: ``[secret-store] threshold`` of the server keys the publish route generates.
    publish_threshold: int = 0
    metrics: ProviderMetrics = field(default_factory=ProviderMetrics)


_STATE = web.AppKey("provider_state", _Provider)


@dataclass(frozen=True)
class _ConsumeRequest:
    agreement_text: str
    agreement_id: bytes
    consumer: str
    #: None only in the url= form, which squid-py sends unsigned.
    signature: str | None
    #: The file's position (index form), or None (url= form).
    index: int | None
    expiry: str | None = None
    #: The url= form: the file URL as parsed and as squid-py sent it (see :func:`_url_candidates`).
    urls: tuple[str, ...] = ()


#: The parameters a consume request may carry after ``url=`` (where an unencoded URL ends).
_AFTER_URL = ("serviceAgreementId", "consumerAddress", "signature", EXPIRY_PARAM, "index")


def _url_candidates(parsed: str, raw_query: str) -> tuple[str, ...]:
    """The file URL of a url= consume: as the query parses, and as squid-py 0.9.3 sent it.

    squid-py pastes the URL into the query unencoded (``?url=<url>&serviceAgreementId=..``), so a
    file URL with its own query (``?a=1&b=2``) arrives split into parameters, and one with ``%``
    escapes arrives decoded once too often. The raw query's text from ``url=`` up to the next
    consume parameter recovers it. Only exact matches with the asset's own files are ever served,
    so a wrong guess here can refuse, never widen, what is fetched.
    """
    candidates = [parsed]
    if raw_query.startswith("url="):
        rest = raw_query[len("url="):]
        ends = [found for name in _AFTER_URL if (found := rest.find(f"&{name}=")) >= 0]
        raw = rest[: min(ends)] if ends else rest
        candidates += [unquote(raw), raw]
    return tuple(dict.fromkeys(c for c in candidates if c))


def _parse_consume(query: MultiMapping[str], raw_query: str = "") -> _ConsumeRequest:
    """The consume parameters, either form (module docstring); 400 for anything malformed."""
    urls = query.getall("url", [])
    if len(urls) > 1:
        raise _error(web.HTTPBadRequest, "give one url parameter")
    url_form = bool(urls and urls[0])
    needed = ("serviceAgreementId", "consumerAddress") + (() if url_form else ("signature", "index"))
    missing = [name for name in needed if not query.get(name)]
    if missing:
        alternative = "" if url_form else " (or url= with one of the asset's file URLs instead of signature and index)"
        raise _error(web.HTTPBadRequest, f"missing query parameter(s): {', '.join(missing)}{alternative}")
    if url_form and query.get("index"):
        raise _error(web.HTTPBadRequest, "give either url or index, not both")
    agreement = query["serviceAgreementId"].strip()
    if not _AGREEMENT_ID.fullmatch(agreement):
        raise _error(web.HTTPBadRequest, "serviceAgreementId must be 0x followed by 64 hex digits")
    consumer = query["consumerAddress"].strip()
    if not _ADDRESS.fullmatch(consumer):
        raise _error(web.HTTPBadRequest, "consumerAddress must be 0x followed by 40 hex digits")
    signature = query.get("signature", "").strip() or None
    if signature is not None and not _SIGNATURE.fullmatch(signature):
        raise _error(web.HTTPBadRequest, "signature must be 0x followed by 130 hex digits (65 bytes r || s || v)")
    index = None
    if not url_form:
        text = query["index"].strip()
        if not _INDEX.fullmatch(text):
            raise _error(web.HTTPBadRequest, "index must be a non-negative integer")
        index = int(text)
    expiry = query.get(EXPIRY_PARAM)
    if expiry is not None and not _EXPIRY.fullmatch(expiry):
        raise _error(web.HTTPBadRequest, f"{EXPIRY_PARAM} must be a time in unix seconds (decimal digits)")
    if expiry is not None and signature is None:
        raise _error(web.HTTPBadRequest, f"{EXPIRY_PARAM} is signed: send it with signature")
    return _ConsumeRequest(agreement, bytes.fromhex(agreement[2:]), checksum_address(bytes.fromhex(consumer[2:])),
                           signature, index, expiry, _url_candidates(urls[0], raw_query) if url_form else ())


def _check_expiry(state: _Provider, req: _ConsumeRequest) -> None:
    """The expiring form's time window (module docstring, check 1); squid-py's forms unless required."""
    if req.signature is None:
        if state.require_expiry:
            raise _error(web.HTTPUnauthorized, f"this provider requires signature and {EXPIRY_PARAM} on the url= "
                         f"form too: sign '<serviceAgreementId> expires <{EXPIRY_PARAM}>'")
        return
    if req.expiry is None:
        if state.require_expiry:
            raise _error(web.HTTPUnauthorized, f"this provider requires {EXPIRY_PARAM}: sign "
                         f"'<serviceAgreementId> expires <{EXPIRY_PARAM}>' (the agreement id alone is replayable)")
        return
    now, expiry = int(time.time()), int(req.expiry)
    if now > expiry:
        raise _error(web.HTTPUnauthorized, f"the consume signature expired at {expiry} (now {now}); sign again")
    if expiry - now > state.max_signature_lifetime:
        raise _error(web.HTTPUnauthorized, f"{EXPIRY_PARAM} is {expiry - now} s ahead; this provider accepts "
                     f"at most {state.max_signature_lifetime} s")


def _authorize(state: _Provider, req: _ConsumeRequest) -> DDO:
    """Checks 2-5 of the module docstring (blocking: run in a thread); returns the asset's DDO."""
    keeper = state.keeper
    label = req.agreement_text.lower()
    info = read_agreement(keeper, req.agreement_id)
    if info is None:
        raise _error(web.HTTPUnauthorized, f"agreement {label} does not exist on chain")
    if info.template_id != ESCROW_ACCESS_TEMPLATE_ID:
        raise _error(web.HTTPUnauthorized, f"agreement {label} is not an access agreement")
    if info.consumer != req.consumer:
        raise _error(web.HTTPUnauthorized, f"{req.consumer} is not the consumer of agreement {label}")
    did = id_to_did(info.did)
    try:
        ddo = state.metadata.resolve(did)
    except AssetNotFound:
        raise _error(web.HTTPNotFound, f"the asset {did} of agreement {label} is not known to this provider") from None
    except OceanError as exc:
        log.warning("metadata store failed for %s: %s", did, exc)
        raise _error(web.HTTPServiceUnavailable, "the provider's metadata store cannot be read") from None
    if not keeper.check_permissions(req.consumer, info.did):
        raise _error(web.HTTPUnauthorized,
                     f"{req.consumer} has no access permission on {did} (access not granted yet or revoked)")
    timeout = int(ddo.timeout or 0)
    if timeout > 0:
        with translate_errors(keeper.w3, "chain", "eth_getBlockByNumber"):
            created = int(keeper.w3.eth.get_block(info.block_number)["timestamp"])
            now = max(int(time.time()), int(keeper.w3.eth.get_block("latest")["timestamp"]))
        if now > created + timeout:
            raise _error(web.HTTPUnauthorized,
                         f"agreement {label} expired: created at {created}, access timeout {timeout} s")
    return ddo


#: What a served file's name may hold: an RFC 7230 token's letters, digits and ``._+~-``, nothing
#: a shell, a path, a header or a Windows file system reads specially.
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._+~-]")
_NAME_MAX = 128
_WINDOWS_DEVICES = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                              *(f"LPT{i}" for i in range(1, 10))})


def attachment_name(entry: Mapping[str, Any], path: str, index: int) -> str:
    """The file name the provider gives a served file: safe to save under as it is.

    From the entry's ``name``, else the last segment of the URL's path (percent-decoded), else
    ``file-<index>`` (squid-py's own fallback). Only the last segment of a name holding ``/`` or
    ``\\`` is kept; every character outside ``[A-Za-z0-9._+~-]`` (quotes, ``;``, spaces, control
    and non-ASCII characters) becomes ``_``; leading dots go (no ``..``, no hidden file), so do
    trailing dots; at most 128 characters, the extension kept; a Windows device name gets a
    leading ``_``.
    """
    for raw in (entry.get("name"), unquote(path)):
        if not isinstance(raw, str):
            continue
        last = raw.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        name = _NAME_UNSAFE.sub("_", last).strip(".")
        if not name.strip("_"):
            continue
        if name.split(".", 1)[0].upper() in _WINDOWS_DEVICES:
            name = "_" + name
        if len(name) > _NAME_MAX:
            stem, dot, ext = name.rpartition(".")
            keep = dot and 0 < len(ext) < 16
            name = (stem[: _NAME_MAX - len(ext) - 1] + "." + ext) if keep else name[:_NAME_MAX].rstrip(".")
        return name
    return f"file-{index}"


def _content_disposition(entry: Mapping[str, Any], path: str, index: int) -> str:
    """``attachment;filename=<name>``, unquoted, no space after ``;``: squid-py 0.9.3 takes the file
    name with ``re.match(r'attachment;filename=(.+)', header)[1]``, quotes and all (Brizo sent
    it so); :func:`attachment_name` keeps the name a single safe token."""
    return f"attachment;filename={attachment_name(entry, path, index)}"


def _byte_range(header: str, total: int) -> tuple[int, int, int] | None:
    """One ``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` range as (start, end, total); None if unusable."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not match or total == 0 or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":
        start, end = max(0, total - int(last)), total - 1
    else:
        start, end = int(first), min(int(last), total - 1) if last else total - 1
    if start > end or start >= total:
        return None
    return start, end, total


def _refused(exc: FetchRefused) -> web.HTTPException:
    """A fetch-policy refusal as the consumer sees it: 502 ``{"error", "rule"}`` (no URL in it)."""
    return web.HTTPBadGateway(text=json.dumps({"error": str(exc), "rule": exc.rule}), content_type="application/json")


async def _relay(upstream: aiohttp.ClientResponse, response: web.StreamResponse,
                 window: tuple[int, int, int] | None, cap: int, chunk_size: int) -> None:
    """Copy the origin's body (or the ``window`` of it) to the consumer, at most ``cap`` bytes read."""
    offset = 0
    async for chunk in upstream.content.iter_chunked(chunk_size):
        if offset + len(chunk) > cap:  # more than announced, or announced nothing
            raise FetchRefused("size", f"the file's origin sent more than {cap} bytes ([provider] max_file_bytes)")
        if window:
            start, end, _ = window
            piece = chunk[max(0, start - offset): max(0, end + 1 - offset)]
            offset += len(chunk)
            if piece:
                await response.write(piece)
            if offset > end:
                break
        else:
            offset += len(chunk)
            await response.write(chunk)
    await response.write_eof()


async def _proxy(request: web.Request, state: _Provider, url: str, entry: Mapping[str, Any],
                 index: int, label: str) -> web.StreamResponse:
    headers = {}
    if "Range" in request.headers:
        headers["Range"] = request.headers["Range"]
    cap = state.fetch.max_bytes
    response: web.StreamResponse | None = None
    try:
        async with open_origin(state.fetch, url, headers) as upstream:
            if upstream.status == 416:
                raise web.HTTPRequestRangeNotSatisfiable(
                    headers={k: upstream.headers[k] for k in ("Content-Range",) if k in upstream.headers}
                )
            if upstream.status not in (200, 206):
                raise _refused(FetchRefused("origin", f"the file's origin answered HTTP {upstream.status}"))
            announced = upstream.headers.get("Content-Length", "")
            if announced.isdigit() and int(announced) > cap:
                raise FetchRefused("size", f"the file is larger ({announced} bytes) than this provider proxies "
                                           f"({cap} bytes: [provider] max_file_bytes)")
            # An origin that ignores Range (plain file servers do) still gets the consumer its slice.
            window = None
            if upstream.status == 200 and "Range" in request.headers and announced.isdigit():
                window = _byte_range(request.headers["Range"], int(announced))
            response = web.StreamResponse(status=206 if window else upstream.status)
            for name in _PASSED_HEADERS:
                if name in upstream.headers:
                    response.headers[name] = upstream.headers[name]
            if window:
                start, end, total = window
                response.headers["Content-Range"] = f"bytes {start}-{end}/{total}"
                response.headers["Content-Length"] = str(end - start + 1)
            response.headers["Content-Disposition"] = _content_disposition(entry, urlsplit(url).path, index)
            await response.prepare(request)
            await _relay(upstream, response, window, cap, state.chunk_size)
            return response
    except FetchRefused as exc:
        log.info("consume %s: the provider's fetch policy refused the file (rule %s): %s", label, exc.rule, exc)
        if response is not None and response.prepared:
            raise ConnectionResetError(str(exc)) from None
        raise _refused(exc) from None
    except (TimeoutError, aiohttp.ClientError) as exc:
        # aiohttp's messages contain the URL, which is the secret being protected: type name only.
        failure = f"could not fetch the file from its origin ({type(exc).__name__})"
        if response is not None and response.prepared:
            # Headers are gone: only a dropped connection tells the consumer the body is short.
            log.warning("%s while streaming; dropping the connection", failure)
            raise ConnectionResetError(failure) from None
        raise _refused(FetchRefused("origin", failure)) from None


def _local_file(state: _Provider, url: str) -> Path:
    if state.file_root is None:
        raise _error(web.HTTPBadGateway, "file:// URLs are not served by this provider (no file root configured)")
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise _error(web.HTTPBadGateway, "a file:// URL must name a local path")
    path = Path(url2pathname(unquote(parts.path))).resolve()
    if not path.is_relative_to(state.file_root):
        raise _error(web.HTTPBadGateway, "the asset's file is outside the provider's file root")
    if not path.is_file():
        raise _error(web.HTTPBadGateway, "the asset's file is missing on the provider")
    return path


def _squid_form(url: str) -> str:
    """A file URL as squid-py 0.9.3 sends it in the url= form: one surrounding quote pair removed."""
    return url[1:-1] if url[:1] in ("'", '"') else url


def _asset_file(files: list[dict[str, Any]], req: _ConsumeRequest, label: str) -> tuple[int, str]:
    """The position and URL of the file a consume names: ``files[index]``, or in the url= form the
    first of the asset's own files whose URL is exactly one the request names."""
    if req.index is not None:
        if req.index >= len(files):
            raise _error(web.HTTPBadRequest, f"index {req.index} is out of range: the asset has {len(files)} file(s)")
        return req.index, str(files[req.index].get("url") or "")
    for position, entry in enumerate(files):
        url = _squid_form(str(entry.get("url") or ""))
        if url and url in req.urls:
            return position, url
    log.info("consume %s refused (403): the url= form named none of the asset's %d file(s)", label, len(files))
    raise _error(web.HTTPForbidden, "url is not one of the files of this agreement's asset: this provider "
                 "serves an asset's own files only")


async def _consume(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    req = _parse_consume(request.query, request.rel_url.raw_query_string)
    label = req.agreement_text.lower()
    if req.signature is not None:
        signer = _recover_signer(req.signature, req.agreement_text, req.expiry)
        if signer != req.consumer:
            log.info("consume %s refused: bad signature", label)
            signed = ("serviceAgreementId text" if req.expiry is None
                      else f"'<serviceAgreementId> expires <{EXPIRY_PARAM}>'")
            raise _error(web.HTTPUnauthorized,
                         f"the signature does not recover to consumerAddress (expected: the consumer's personal "
                         f"signature of the {signed})")
    try:
        _check_expiry(state, req)
    except web.HTTPException as exc:
        log.info("consume %s refused (%d): %s", label, exc.status, exc.text)
        raise
    try:
        ddo = await asyncio.to_thread(_authorize, state, req)
    except web.HTTPException as exc:
        log.info("consume %s refused (%d): %s", label, exc.status, exc.text)
        raise
    except ChainError as exc:
        log.warning("consume %s: the chain could not be read: %s", label, exc)
        raise _error(web.HTTPServiceUnavailable, "the provider could not read the chain; try again later") from None
    try:
        files = await asyncio.to_thread(state.backend.file_urls, ddo, state.account)
    except SecretStoreError as exc:
        log.warning("consume %s: backend %s could not decrypt the files of %s: %s",
                    label, state.backend.name, ddo.did, type(exc).__name__)
        raise _error(web.HTTPBadGateway,
                     f"the provider could not decrypt the asset's files ({state.backend.name}): {exc}") from None
    index, url = _asset_file(files, req, label)
    entry = files[index]
    scheme = urlsplit(url).scheme.lower()
    form = "index" if req.index is not None else "url="
    log.info("consume %s: serving file %d of %s to %s (%s form)", label, index, ddo.did, req.consumer, form)
    if scheme in ("http", "https"):
        return await _proxy(request, state, url, entry, index, label)
    if scheme == "file":
        path = _local_file(state, url)
        return web.FileResponse(path, chunk_size=state.chunk_size,
                                headers={"Content-Disposition": _content_disposition(entry, path.name, index)})
    raise _refused(FetchRefused("scheme", f"the file's URL scheme {scheme or '(none)'!r} is not supported"))


def _publish_fields(data: object) -> tuple[str, bytes, str, str, str]:
    """(documentId as sent, its 32 bytes, publisher address, signature, compact document); 400 if malformed."""
    usage = "send a JSON object: documentId, signature (or signedDocumentId), document, publisherAddress"
    if not isinstance(data, dict):
        raise _error(web.HTTPBadRequest, f"the body is not a JSON object: {usage}")
    fields = {**data}
    if "signature" not in fields and "signedDocumentId" in fields:
        fields["signature"] = fields["signedDocumentId"]
    names = ("documentId", "signature", "document", "publisherAddress")
    missing = [name for name in names if not isinstance(fields.get(name), str) or not fields[name].strip()]
    if missing:
        raise _error(web.HTTPBadRequest, f"missing or not a string: {', '.join(missing)} ({usage})")
    document_text, publisher, signature = fields["documentId"], fields["publisherAddress"].strip(), fields["signature"]
    found = _DOCUMENT_ID.fullmatch(document_text.strip())
    if found is None:
        raise _error(web.HTTPBadRequest, "documentId must be the asset id: 0x followed by 64 hex digits")
    if not _ADDRESS.fullmatch(publisher):
        raise _error(web.HTTPBadRequest, "publisherAddress must be 0x followed by 40 hex digits")
    sig = _PUBLISH_SIGNATURE.fullmatch(signature.strip())
    if sig is None:
        raise _error(web.HTTPBadRequest, "signature must be 65 bytes (r || s || v) in hex")
    try:
        document = json.dumps(json.loads(fields["document"]), separators=(",", ":"))
        files_from_plaintext(document)
    except (ValueError, OceanError):
        # the messages of either never quote the document: it holds the URLs
        raise _error(web.HTTPBadRequest, "document must be the JSON text of the files list: a non-empty list of "
                     "objects, each with a url") from None
    return (document_text, bytes.fromhex(found.group(1)), checksum_address(bytes.fromhex(publisher[2:])),
            "0x" + sig.group(1), document)


def _check_owner(state: _Provider, document_id: bytes, publisher: str) -> None:
    """Blocking: the DID must be unregistered (squid-py registers it after encrypting) or the
    publisher's; 403 if another account's."""
    owner = state.keeper.did_owner(document_id)
    if int(owner, 16) and checksum_address(bytes.fromhex(owner[2:])) != publisher:
        raise _error(web.HTTPForbidden, f"{id_to_did(document_id)} is registered on chain to another account; "
                     "only its owner may have its files encrypted")


def _encrypt_for(state: _Provider, backend: EncryptingBackend, document_id: bytes, document: str,
                 publisher: str) -> str:
    """Blocking: the owner check, then the backend's encryption, naming the verified publisher as
    the key's owner-to-be (whom the key servers' author binding accepts as the DID's first
    registrant: squid-py registers the DID after this route answers)."""
    _check_owner(state, document_id, publisher)
    return backend.encrypt_files(document_id, document, state.account, state.publish_threshold, owner=publisher)


async def _publish(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise _error(web.HTTPBadRequest, "the body is not JSON: send documentId, signature (or signedDocumentId), "
                     "document, publisherAddress") from None
    document_text, document_id, publisher, signature, document = _publish_fields(data)
    did = id_to_did(document_id)
    try:
        signer = Account.recover_message(encode_defunct(text=document_text), signature=signature)
    except (BadSignature, ValueError):
        signer = None
    if signer is None or checksum_address(bytes.fromhex(signer[2:])) != publisher:
        log.info("publish %s refused: bad signature", did)
        raise _error(web.HTTPUnauthorized, "the signature does not recover to publisherAddress (expected: the "
                     "publisher's personal signature of documentId as sent)")
    backend = state.backend
    if not isinstance(backend, EncryptingBackend):
        raise _error(web.HTTPNotImplemented,
                     f"this provider's backend ({backend.name}) does not encrypt for publishers")
    try:
        encrypted = await asyncio.to_thread(_encrypt_for, state, backend, document_id, document, publisher)
    except web.HTTPException as exc:
        log.info("publish %s refused (%d): %s", did, exc.status, exc.text)
        raise
    except ChainError as exc:
        log.warning("publish %s: the chain could not be read: %s", did, exc)
        raise _error(web.HTTPServiceUnavailable, "the provider could not read the chain; try again later") from None
    except (ServerKeyAlreadyGenerated, DocumentKeyAlreadyStored) as exc:
        log.info("publish %s refused (409): %s", did, type(exc).__name__)
        raise _error(web.HTTPConflict, f"a key already exists under {did}: publish under a new id") from None
    except SecretStoreError as exc:
        log.warning("publish %s: backend %s could not encrypt: %s", did, backend.name, type(exc).__name__)
        raise _error(web.HTTPBadGateway, f"the provider could not encrypt the files ({backend.name}): "
                     f"{type(exc).__name__}") from None
    log.info("publish %s: files encrypted for %s (backend %s)", did, publisher, backend.name)
    return web.Response(status=201, text=encrypted, content_type="text/plain")


Outcome = Callable[[int | None], None]


async def _counted(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                   outcome: Outcome) -> web.StreamResponse:
    """``handler``'s answer, its outcome counted: None when it answered, else the refusal's status."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        outcome(exc.status)
        raise
    except asyncio.CancelledError:
        outcome(int(CLIENT_CLOSED))
        raise
    except Exception:
        outcome(500)
        raise
    outcome(None)
    return response


async def _consume_counted(request: web.Request) -> web.StreamResponse:
    return await _counted(request, _consume, request.app[_STATE].metrics.consumed)


async def _publish_counted(request: web.Request) -> web.StreamResponse:
    return await _counted(request, _publish, request.app[_STATE].metrics.published)


async def _info(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    return web.json_response({
        "providerAddress": state.address,
        "providerPublicKey": state.public_key_hex,
        "backend": state.backend.name,
        "software": SOFTWARE,
        "version": VERSION,
    })


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_provider_app(
    *,
    keeper: Keeper,
    metadata: MetadataStore,
    backend: AccessBackend,
    provider_account: LocalAccount,
    file_root: str | Path | None = None,
    chunk_size: int = 64 * 1024,
    fetch_policy: FetchPolicy | None = None,
    require_signature_expiry: bool = False,
    max_signature_lifetime: int = DEFAULT_MAX_SIGNATURE_LIFETIME,
    publish_threshold: int = 0,
    registry: CollectorRegistry | None = None,
) -> web.Application:
    """The provider's aiohttp application (routes in the module docstring).

    :param file_root: directory under which ``file://`` URLs are served; None refuses them.
    :param fetch_policy: what ``http(s)://`` files may be fetched, with the size and time caps
        (default: :class:`.fetch.FetchPolicy` defaults, no origin allowed beyond global addresses).
    :param require_signature_expiry: refuse squid-py's replayable signature form.
    :param max_signature_lifetime: the furthest ``signatureExpiry`` may be ahead, in seconds.
    :param publish_threshold: the threshold of the server keys the publish route generates.
    :param registry: where the metrics of ``GET /metrics`` are (default: a new one with the process metrics).
    """
    metrics = ProviderMetrics(registry if registry is not None else service_registry())
    state = _Provider(
        keeper=keeper, metadata=metadata, backend=backend, account=provider_account,
        file_root=Path(file_root).resolve() if file_root is not None else None,
        chunk_size=chunk_size, fetch=fetch_policy or FetchPolicy(),
        require_expiry=require_signature_expiry, max_signature_lifetime=max_signature_lifetime,
        public_key_hex="0x" + account_public(provider_account).to_bytes().hex(),
        address=to_address(provider_account.address), publish_threshold=publish_threshold, metrics=metrics,
    )
    app = web.Application(middlewares=[metrics.http.middleware])
    app[_STATE] = state
    app.router.add_get(CONSUME_PATH, _consume_counted)
    app.router.add_get(INFO_PATH, _info)
    app.router.add_post(PUBLISH_PATH, _publish_counted)
    app.router.add_get("/health", _health)
    app.router.add_get(METRICS_PATH, metrics_handler(metrics.registry))
    return app


# -- the process ---------------------------------------------------------------------------


@dataclass
class ProviderSettings:
    """Everything the provider process needs (see :func:`settings_from_config`)."""

    chain_url: str
    contracts: dict[str, str]
    metadata_location: str
    account: LocalAccount = field(repr=False)
    backend: AccessBackend
    host: str = "127.0.0.1"
    port: int = 8030
    file_root: str | None = None
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    #: The CA bundle an https metadata service (Aquarius) is checked against ([resources] ca_file).
    metadata_verify: bool | str = True
    require_signature_expiry: bool = False
    max_signature_lifetime: int = DEFAULT_MAX_SIGNATURE_LIFETIME
    #: ``[secret-store] threshold``: of the server keys the publish route generates.
    publish_threshold: int = 0
    events: bool = True
    poll_interval: float = 0.5
    from_block: int = 0
    #: Header-read timeout and connections per client address of the HTTP service.
    serving: ServingLimits = field(default_factory=ServingLimits)
    #: ``[provider] tls_cert``/``tls_key``: serve https (None: plain http).
    tls: TlsFiles | None = None


@dataclass
class RunningProvider:
    settings: ProviderSettings
    runner: web.AppRunner
    handler: EventsHandler | None

    @property
    def port(self) -> int:
        return bound_port(self.runner)

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.tls is not None else "http"
        return f"{scheme}://{self.settings.host}:{self.port}"

    async def stop(self) -> None:
        try:
            if self.handler is not None:
                await self.handler.stop()
        finally:
            await self.runner.cleanup()
            close = getattr(self.settings.backend, "close", None)
            if callable(close):
                close()


async def start_provider(settings: ProviderSettings) -> RunningProvider:
    """Start the HTTP service (and, unless disabled, the events handler task) on the running loop.

    :raises ConfigError: ``settings.tls`` names a missing file or a key that does not match its certificate.
    """
    ssl_context = settings.tls.context("provider") if settings.tls is not None else None
    keeper = Keeper(settings.chain_url, settings.contracts)
    metadata = open_metadata_store(settings.metadata_location, verify=settings.metadata_verify)
    app = make_provider_app(keeper=keeper, metadata=metadata, backend=settings.backend,
                            provider_account=settings.account, file_root=settings.file_root,
                            fetch_policy=settings.fetch, require_signature_expiry=settings.require_signature_expiry,
                            max_signature_lifetime=settings.max_signature_lifetime,
                            publish_threshold=settings.publish_threshold)
    runner = GuardedAppRunner(app, settings.serving, access_log=None, handle_signals=False)
    await runner.setup()
    site = guarded_site(runner, settings.host, settings.port, reuse_address=True, ssl_context=ssl_context)
    await site.start()
    handler = None
    if settings.events:
        handler = EventsHandler(keeper, metadata, settings.account, settings.poll_interval,
                                from_block=settings.from_block)
        handler.start()
    return RunningProvider(settings, runner, handler)


def settings_from_config(
    config: OceanConfig,
    account: LocalAccount,
    *,
    events: bool = True,
    poll_interval: float = 0.5,
    from_block: int = 0,
) -> ProviderSettings:
    """Provider settings from an :class:`~..config.OceanConfig` and the provider's account.

    The backend is selected through the plugin manager by ``[provider] backend`` (a third-party
    plugin offering that name replaces ours; a plugin blocked by ``OCEAN_DISABLED_PLUGINS`` offers
    nothing).

    :raises OceanError: no metadata store or contracts configured, or no plugin offers the backend.
    """
    if not config.metadata_store:
        raise OceanError("no metadata store configured ([resources] metadata.store or aquarius.url)")
    if not config.contracts:
        raise OceanError("no keeper contract addresses configured ([keeper-contracts] contracts.file)")
    try:
        listen = parse_host_port(config.provider_listen, allow_zero=True)
    except ValueError as exc:  # OceanConfig checked it already; a hand-built one may not be
        raise OceanError(f"[provider] listen {config.provider_listen!r}: {exc}") from None
    try:
        allowed = frozenset(parse_origin(origin) for origin in config.provider_allowed_origins)
    except ValueError as exc:  # OceanConfig checked them already; a hand-built one may not be
        raise OceanError(f"[provider] allowed_origins: {exc}") from None
    return ProviderSettings(
        chain_url=config.keeper_url, contracts=dict(config.contracts), metadata_location=config.metadata_store,
        metadata_verify=config.ca_file or True, account=account,
        backend=select_access_backend(get_plugin_manager(), config),
        host=listen.host, port=listen.port, file_root=config.provider_file_root,
        fetch=FetchPolicy(
            allowed_origins=allowed,
            max_bytes=config.provider_max_file_bytes, connect_timeout=config.provider_fetch_connect_timeout,
            read_timeout=config.provider_fetch_read_timeout, total_timeout=config.provider_fetch_total_timeout,
            max_redirects=config.provider_max_redirects, ca_file=config.ca_file,
        ),
        require_signature_expiry=config.provider_require_signature_expiry,
        max_signature_lifetime=config.provider_max_signature_lifetime,
        publish_threshold=config.threshold,
        events=events, poll_interval=poll_interval, from_block=from_block,
        tls=TlsFiles(Path(config.provider_tls_cert), Path(config.provider_tls_key))
        if config.provider_tls_cert is not None and config.provider_tls_key is not None else None,
    )


def reload_key_servers(backend: object, read_urls: Callable[[], Sequence[str]] | None) -> None:
    """SIGHUP: the key server URLs ``read_urls`` reads from the config again, for a backend that
    takes them (:meth:`~.backends.SecretStoreBackend.set_cluster_urls`). A config that does not
    read, or an empty list, is logged and the old list stays; so is a provider with no config file."""
    set_urls = getattr(backend, "set_cluster_urls", None)
    if read_urls is None:
        log.info("SIGHUP: started without a config file, nothing to reload")
        return
    if set_urls is None:
        log.info("SIGHUP: the %s backend has no key server list to reload", getattr(backend, "name", "?"))
        return
    try:
        urls = list(read_urls())
        changed = set_urls(urls)
    except (OceanError, ConfigError, OSError) as exc:
        log.error("SIGHUP: key server list not reloaded, the old one stays: %s", exc)
        return
    log.info("SIGHUP: key servers %s: %s", "now" if changed else "unchanged", ", ".join(urls))


async def serve_provider(settings: ProviderSettings, *, ready: Callable[[str], None] | None = None,
                         reload_urls: Callable[[], Sequence[str]] | None = None) -> None:
    """Run the provider (HTTP service + events handler) until SIGTERM or SIGINT.

    ``ready`` gets the provider's URL once it listens (with the bound port when the port was 0).
    ``reload_urls`` (reads the config's key server URLs again): on SIGHUP the backend takes them.
    """
    running = await start_provider(settings)
    remove = on_reload_signal(lambda: reload_key_servers(settings.backend, reload_urls))
    try:
        log.info("provider %s listening on %s (backend %s, events handler %s)", settings.account.address,
                 running.url, settings.backend.name, "on" if running.handler else "off")
        if ready is not None:
            ready(running.url)
        await wait_for_stop_signal()
        log.info("stopping")
    finally:
        remove()
        await running.stop()
