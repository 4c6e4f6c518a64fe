"""The Parity Secret Store HTTP API of a node (protocol.md §1) over aiohttp, plus ``GET /health``
(liveness) and ``GET /ready`` (readiness: 200 or 503, docs/http-api.md).

A thin adapter: the pure codec in :mod:`ocean_secret_store.protocol.http` parses paths and
encodes bodies byte for byte as Parity does, :mod:`ocean_secret_store.node.cors` decides on the
``Origin``; this module routes a parsed request to the cluster core and maps
:class:`KeyServerError` to Parity's status and quoted-string body. A bound signature
(:mod:`ocean_secret_store.protocol.bound`) comes in two optional headers and goes to the core with
the request; a malformed one is answered ``400 "Insufficient requester data: …"``. So is a
malformed owner-to-be header (:mod:`ocean_secret_store.protocol.owner`), taken by the two key
generation requests only.

``GET /metrics`` (ours) is the node's Prometheus metrics (:mod:`ocean_secret_store.metrics`,
docs/metrics.md), under the same CORS rule as the API; every request is counted by its route's
pattern (:data:`ROUTES`), never by its path, which carries the key id and the signature. So are
``GET /status`` and ``GET /status.json``, the node's status page (:mod:`.status`), and the CORS rule
is theirs too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Final

from aiohttp import web

from ..crypto.curve import Point
from ..crypto.signatures import recover_address
from ..exceptions import BadAdminRequest, InternalError, InvalidSignature, KeyServerError
from ..metrics import METRICS_PATH, ROUTE, UNMATCHED, exposition
from ..protocol import batch as bt
from ..protocol import bound as b
from ..protocol import generation_batch as gb
from ..protocol import http as codec
from ..protocol import owner as ow
from ..protocol.admin import AdminRequest, AdminRequestError
from . import key_versions
from .cluster import ClusterCore
from .cors import CorsPolicy
from .quotas import GenerationQuota, TooManyRequests, retry_after_header
from .status import STATUS_JSON_PATH, STATUS_PATH, StatusPage

__all__ = ["HEALTH_PATH", "READY_PATH", "ROUTES", "dispatch", "make_app"]

log = logging.getLogger(__name__)

#: The route label of each request the API parses: its path pattern (docs/http-api.md).
ROUTES: Final[Mapping[type[codec.Request], str]] = {
    codec.GenerateServerKey: "/shadow/{key_id}/{signature}/{threshold}",
    codec.StoreDocumentKey: "/shadow/{key_id}/{signature}/{common_point}/{encrypted_point}",
    codec.GenerateDocumentKey: "/{key_id}/{signature}/{threshold}",
    codec.RetrieveServerKey: "/server/{key_id}/{signature}",
    codec.RetrieveDocumentKey: "/{key_id}/{signature}",
    codec.RetrieveDocumentKeyShadow: "/shadow/{key_id}/{signature}",
    codec.SchnorrSign: "/schnorr/{key_id}/{signature}/{message_hash}",
    codec.EcdsaSign: "/ecdsa/{key_id}/{signature}/{message_hash}",
    codec.ServersSetChange: "/admin/servers_set_change/{old_set_signature}/{new_set_signature}",
    codec.AdminRefresh: "/admin/refresh/{set_signature}/{refresh_signature}",
    codec.AdminRepair: "/admin/repair/{set_signature}/{repair_signature}/{node_id}",
    codec.AdminStatus: "/admin/status",
}
#: The route label of the administrator's signed status request (the same request type, signed).
SIGNED_ADMIN_STATUS: Final = "/admin/status/{expiry}/{signature}"
#: The probes (ours), answered before the CORS check: liveness and readiness.
HEALTH_PATH: Final = "/health"
READY_PATH: Final = "/ready"


def route_of(request: codec.Request) -> str:
    """The route label of a parsed request: its path pattern (docs/metrics.md)."""
    if isinstance(request, codec.AdminStatus) and request.signed:
        return SIGNED_ADMIN_STATUS
    return ROUTES.get(type(request), UNMATCHED)


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(status=status, body=body, headers={"Content-Type": codec.CONTENT_TYPE_JSON})


def _error(error: KeyServerError) -> web.Response:
    status, payload = codec.error_response(error)
    response = _json(payload, status)
    if isinstance(error, TooManyRequests):  # 429: when the same request may pass
        response.headers["Retry-After"] = retry_after_header(error)
    return response


#: The requests that create a key: anybody may ask for them, so they are what the quotas limit.
_GENERATIONS = (codec.GenerateServerKey, codec.GenerateDocumentKey)


def _signer(key_id: bytes, signature: bytes) -> bytes | None:
    """The requester's address, or None if the signature does not recover (the core refuses it)."""
    try:
        return recover_address(signature, key_id)
    except InvalidSignature:
        return None


def _bad_request() -> web.Response:
    """Parity's answer to a request its listener cannot parse: 400 with an empty body."""
    return web.Response(status=codec.BAD_REQUEST_STATUS)


#: ``X-Secret-Store-Force: 1`` on an admin request: go on although some keys cannot keep t+1 shares
#: (they are reported, and left as they are). Ours, not Parity's; the path stays Parity's.
FORCE_HEADER = "X-Secret-Store-Force"


def _report(report: dict[str, object]) -> web.Response:
    return web.json_response(report)


async def dispatch(core: ClusterCore, request: codec.Request, bound: b.Bound | None = None,  # noqa: PLR0911 -- one return per endpoint of Parity's API
                   owner: bytes | None = None, force: bool = False) -> web.Response:
    """Serve one parsed request; a failure is raised as the core's :class:`KeyServerError`.

    ``owner`` (the owner-to-be header) is taken by the two key generations only; ``force`` by the
    admin sessions.
    """
    if owner is not None and not isinstance(request, _GENERATIONS):
        raise ow.not_taken(type(request).__name__)
    match request:
        case codec.GenerateServerKey():
            point = await core.generate_server_key(request.key_id, request.signature, request.threshold, bound,
                                                   owner)
            return _json(codec.encode_point(point))
        case codec.StoreDocumentKey():
            await core.store_document_key(
                request.key_id, request.signature, request.common_point, request.encrypted_point, bound
            )
            return web.Response(status=200)
        case codec.GenerateDocumentKey():
            encrypted = await core.generate_document_key(request.key_id, request.signature, request.threshold, bound,
                                                         owner)
            return _json(codec.encode_bytes(encrypted))
        case codec.RetrieveServerKey():
            point = await core.retrieve_server_key(request.key_id, request.signature, bound)
            return _json(codec.encode_point(point))
        case codec.RetrieveDocumentKey():
            encrypted = await core.retrieve_document_key(request.key_id, request.signature, bound)
            return _json(codec.encode_bytes(encrypted))
        case codec.RetrieveDocumentKeyShadow():
            shadow = await core.retrieve_document_key_shadow(request.key_id, request.signature, bound)
            return _json(codec.encode_shadow(shadow.decrypted_secret, shadow.common_point, shadow.decrypt_shadows))
        case codec.SchnorrSign():
            signature = await core.schnorr_sign(request.key_id, request.signature, request.message_hash, bound)
            return _json(codec.encode_bytes(signature))
        case codec.EcdsaSign():
            signature = await core.ecdsa_sign(request.key_id, request.signature, request.message_hash, bound)
            return _json(codec.encode_bytes(signature))
        case codec.ServersSetChange() | codec.AdminRefresh() | codec.AdminRepair() | codec.AdminStatus():
            return await _dispatch_admin(core, request, force)
    # A request type without a route above: Parity's generic 500.
    raise InternalError(f"{type(request).__name__} is not supported by this key server yet")


async def _dispatch_admin(core: ClusterCore, request: codec.ServersSetChange | codec.AdminRefresh | codec.AdminRepair
                          | codec.AdminStatus, force: bool) -> web.Response:
    if isinstance(request, codec.AdminStatus):  # the key ids in it only to the administrator's signature
        return _report(core.admin_status(request.expiry, request.signature))
    # what the administrator must have signed as the old set (Parity's rule for a change)
    try:
        match request:
            case codec.ServersSetChange():
                new_set = tuple(p.to_bytes() for p in request.new_servers_set)
                admin = AdminRequest("change", core.old_set_view("change"), new_set, request.old_set_signature,
                                     request.new_set_signature)
            case codec.AdminRefresh():
                view = core.old_set_view("refresh")
                admin = AdminRequest("refresh", view, view, request.set_signature, request.refresh_signature)
            case codec.AdminRepair():
                view = core.old_set_view("repair")
                admin = AdminRequest("repair", view, view, request.set_signature, request.repair_signature,
                                     request.node.to_bytes())
    except AdminRequestError as exc:
        raise BadAdminRequest(str(exc)) from exc
    report = await core.admin(admin, force)
    if isinstance(request, codec.ServersSetChange):
        return web.Response(status=200)  # Parity: 200, empty body
    return _report(report)


async def _read_body(request: web.Request) -> bytes | None:
    """The request body, or None once it exceeds :data:`~codec.MAX_BODY_LENGTH`.

    Bounded while it is read, whatever the framing: a declared Content-Length is refused before
    any byte is read, and a chunked (or compressed) body stops being buffered at the limit, where
    aiohttp's ``client_max_size`` raises. Both become Parity's empty 400, not aiohttp's 413.
    """
    if request.content_length is not None and request.content_length > codec.MAX_BODY_LENGTH:
        return None
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return None


def _probe(core: ClusterCore, request: web.Request) -> web.Response | None:
    """``GET /health`` (liveness: the process answers) and ``GET /ready`` (readiness: connected to
    the peers it needs; 503 until then); None for any other request."""
    if request.method != "GET" or request.rel_url.path not in (HEALTH_PATH, READY_PATH):
        return None
    request[ROUTE] = request.rel_url.path
    if request.rel_url.path == HEALTH_PATH:
        return web.json_response(core.health())
    if request.rel_url.path == READY_PATH:
        readiness = core.readiness()
        return web.json_response(readiness, status=200 if readiness["ready"] else 503)
    return None


async def _read_batch_body(request: web.Request, limit: int = bt.MAX_BATCH_BODY) -> bytes | None:
    """A batch request's body, or None once it exceeds ``limit`` (read in chunks and bounded as it
    is read: aiohttp's ``client_max_size`` is the Parity routes' smaller limit)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _batch_refusal(message: str) -> web.Response:
    """400 for a batch that does not parse: a JSON string naming what is wrong (no key material)."""
    return web.json_response(message, status=codec.BAD_REQUEST_STATUS)


async def serve_batch(core: ClusterCore, request: web.Request) -> web.Response:
    """``POST /shadow_batch`` (ours; docs/http-api.md, "Batch shadow retrieval"): one shadow result
    or error per key, in request order; 400 for a body that does not parse."""
    body = await _read_batch_body(request)
    if body is None:
        return _batch_refusal(f"the body exceeds {bt.MAX_BATCH_BODY} bytes")
    try:
        pairs = bt.parse_batch_request(body)
    except bt.BadBatch as exc:
        return _batch_refusal(str(exc))
    results = await core.retrieve_document_key_shadows(pairs)
    encoded: list[tuple[Point, Point, tuple[bytes, ...]] | KeyServerError] = [
        r if isinstance(r, KeyServerError) else (r.decrypted_secret, r.common_point, r.decrypt_shadows)
        for r in results]
    return _json(bt.encode_batch_results([k for k, _ in pairs], encoded))


async def _batch(core: ClusterCore, request: web.Request) -> web.Response:
    try:
        return await serve_batch(core, request)
    except KeyServerError as exc:  # the whole batch refused (this node's session cap)
        if isinstance(exc, TooManyRequests):
            core.metrics.quota_refused(exc.quota)
        return _error(exc)
    except Exception:
        log.exception("unexpected failure serving a batch retrieval")
        return _error(InternalError("unexpected server failure"))


async def serve_generation_batch(core: ClusterCore, request: web.Request,
                                 quota: GenerationQuota | None) -> web.Response:
    """``POST /server_key_batch`` (ours; docs/http-api.md, "Batch server key generation"): one
    public or error per key, in request order; each key counts against the quotas as one
    generation (a key over them gets its 429 error); 400 for a body that does not parse."""
    body = await _read_batch_body(request, gb.MAX_BATCH_BODY)
    if body is None:
        return _batch_refusal(f"the body exceeds {gb.MAX_BATCH_BODY} bytes")
    try:
        items = gb.parse_generation_request(body)
    except gb.BadGenerationBatch as exc:
        return _batch_refusal(str(exc))
    address = request.remote
    results = await core.generate_server_keys(
        [(i.key_id, i.signature, i.threshold, i.owner) for i in items],
        None if quota is None else lambda requester: quota.admit(requester, address))
    refusals = [r for r in results if isinstance(r, TooManyRequests)]
    if quota is not None and refusals and len(refusals) == len(results):  # held as a single refusal is
        await asyncio.sleep(min(refusals[0].retry_after, quota.settings.refusal_delay))
    return _json(gb.encode_generation_results([i.key_id for i in items], results))


#: Our own read-only routes served after the CORS check, as the API: the metrics and the status page.
_OWN_PAGES: Final = frozenset({METRICS_PATH, STATUS_PATH, STATUS_JSON_PATH})


async def _scrape(core: ClusterCore, request: web.Request, policy: CorsPolicy,
                  status: StatusPage) -> web.Response | None:
    """``GET /metrics`` (the node's metrics, its gauges read now), ``GET /status`` and
    ``GET /status.json`` (its status page), under the API's CORS rule; None for any other request."""
    path = request.rel_url.path
    if request.method != "GET" or path not in _OWN_PAGES:
        return None
    request[ROUTE] = path
    decision = policy.decide(request.headers.get("Origin"), request.headers.get("Host"))
    if decision.rejected:
        return web.Response(status=codec.CORS_REJECTED_STATUS)
    if path == METRICS_PATH:
        await core.metrics.refresh(core)
        response = exposition(core.metrics.registry)
    elif path == STATUS_PATH:
        response = status.html_response()
    else:
        response = await status.json_response()
    if decision.allow_origin:
        response.headers["Access-Control-Allow-Origin"] = decision.allow_origin
    return response


def make_app(core: ClusterCore, cors: CorsPolicy | None = None,
             quota: GenerationQuota | None = None) -> web.Application:
    """The node's aiohttp application; ``cors`` defaults to admitting no cross origin, ``quota``
    (None: no limit) admits or refuses (429) each key generation before the cluster sees it."""
    policy = CorsPolicy() if cors is None else cors
    status = StatusPage(core)
    metrics = core.metrics

    async def generation_batch(request: web.Request) -> web.Response:
        try:
            return await serve_generation_batch(core, request, quota)
        except KeyServerError as exc:
            return _error(exc)
        except Exception:
            log.exception("unexpected failure serving a batch generation")
            return _error(InternalError("unexpected server failure"))

    async def handle(request: web.Request) -> web.Response:  # noqa: PLR0911 -- one return per kind of route and refusal
        request[ROUTE] = UNMATCHED  # until parsed: the raw path is never a label
        probe = _probe(core, request)
        if probe is None:
            probe = await _scrape(core, request, policy, status)
        if probe is None:  # a peer's key versions, for `node verify` (ours)
            probe = await key_versions.serve(core, request)
        if probe is not None:
            return probe
        decision = policy.decide(request.headers.get("Origin"), request.headers.get("Host"))
        if decision.rejected:
            return web.Response(status=codec.CORS_REJECTED_STATUS)
        if request.method == "POST" and request.rel_url.path in (bt.PATH, gb.PATH):  # ours: the batch routes
            request[ROUTE] = request.rel_url.path
            response = await (_batch(core, request) if request.rel_url.path == bt.PATH else generation_batch(request))
            if decision.allow_origin:
                response.headers["Access-Control-Allow-Origin"] = decision.allow_origin
            return response
        body = await _read_body(request)
        if body is None:
            return _bad_request()
        try:
            parsed = codec.parse_request(request.method, request.raw_path, body)
            bound = b.parse_headers(request.headers.get(b.HEADER), request.headers.get(b.SIGNATURE_HEADER))
            owner = ow.parse_header(request.headers.get(ow.HEADER))
            if owner is not None and not isinstance(parsed, _GENERATIONS):
                raise ow.not_taken(type(parsed).__name__)
        except codec.BadRequest:
            return _bad_request()
        except KeyServerError as exc:  # parses, but a value in it is unusable (a point off the curve)
            return _error(exc)
        request[ROUTE] = route_of(parsed)
        try:
            if quota is not None and isinstance(parsed, _GENERATIONS):  # refused (429) before any work
                await quota.admit_or_hold(_signer(parsed.key_id, parsed.signature), request.remote)
            force = request.headers.get(FORCE_HEADER, "").strip().lower() in ("1", "true", "yes")
            response = await dispatch(core, parsed, bound, owner, force)
        except KeyServerError as exc:
            if isinstance(exc, TooManyRequests):
                metrics.quota_refused(exc.quota)
            # A flood's refusals are counted (/health, /metrics), not logged one by one at info.
            level = logging.DEBUG if isinstance(exc, TooManyRequests) else logging.INFO
            log.log(level, "%s %s -> %d %s", request.method, type(parsed).__name__, exc.status, exc.parity_name)
            return _error(exc)
        except Exception:
            log.exception("unexpected failure serving %s", type(parsed).__name__)
            return _error(InternalError("unexpected server failure"))
        if decision.allow_origin:
            response.headers["Access-Control-Allow-Origin"] = decision.allow_origin
        return response

    # aiohttp stops buffering a body past this size (request.read() raises), chunked or not.
    app = web.Application(client_max_size=codec.MAX_BODY_LENGTH, middlewares=[metrics.http.middleware])
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
