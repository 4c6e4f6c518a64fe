"""The Parity Secret Store HTTP API of a node (protocol.md §1) over aiohttp, plus ``GET /health``.

A thin adapter: the pure codec in :mod:`ocean_secret_store.protocol.http` parses paths and
encodes bodies byte for byte as Parity does; this module routes a parsed request to the
cluster core and maps :class:`KeyServerError` to Parity's status and quoted-string body.
"""

from __future__ import annotations

import logging

from aiohttp import web

from ..exceptions import KeyServerError
from ..protocol import http as codec
from .cluster import ClusterCore

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(status=status, body=body, headers={"Content-Type": codec.CONTENT_TYPE_JSON})


async def dispatch(core: ClusterCore, request: codec.Request) -> web.Response:
    if isinstance(request, codec.GenerateServerKey):
        return _json(codec.encode_point(await core.generate_server_key(request.key_id, request.signature, request.threshold)))
    if isinstance(request, codec.StoreDocumentKey):
        await core.store_document_key(request.key_id, request.signature, request.common_point, request.encrypted_point)
        return web.Response(status=200)
    if isinstance(request, codec.GenerateDocumentKey):
        return _json(codec.encode_bytes(await core.generate_document_key(request.key_id, request.signature, request.threshold)))
    if isinstance(request, codec.RetrieveServerKey):
        return _json(codec.encode_point(await core.retrieve_server_key(request.key_id, request.signature)))
    if isinstance(request, codec.RetrieveDocumentKey):
        return _json(codec.encode_bytes(await core.retrieve_document_key(request.key_id, request.signature)))
    if isinstance(request, codec.RetrieveDocumentKeyShadow):
        result = await core.retrieve_document_key_shadow(request.key_id, request.signature)
        return _json(codec.encode_shadow(result.decrypted_secret, result.common_point, result.decrypt_shadows))
    if isinstance(request, codec.SchnorrSign):
        return _json(codec.encode_bytes(await core.schnorr_sign(request.key_id, request.signature, request.message_hash)))
    # ECDSA signing and servers-set change are not implemented yet: Parity's generic 500.
    raise _not_supported(type(request).__name__)


def _not_supported(name: str) -> KeyServerError:
    from ..exceptions import InternalError

    return InternalError(f"{name} is not supported by this key server yet")


def make_app(core: ClusterCore, cors: str = "none") -> web.Application:
    policy = codec.CorsPolicy.parse(cors)

    async def health(_: web.Request) -> web.Response:
        return web.json_response(core.health())

    async def handle(request: web.Request) -> web.Response:
        if request.method == "GET" and request.rel_url.path == "/health":
            return await health(request)
        decision = policy.decide(request.headers.get("Origin"), request.headers.get("Host"))
        if decision.rejected:
            return web.Response(status=404)
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.Response(status=400)
        body = await request.read()
        try:
            parsed = codec.parse_request(request.method, request.raw_path, body)
        except codec.BadRequest:
            return web.Response(status=400)
        except KeyServerError as exc:  # parses, but a value in it is unusable (a point off the curve)
            status, payload = codec.error_response(exc)
            return _json(payload, status)
        try:
            response = await dispatch(core, parsed)
        except KeyServerError as exc:
            status, payload = codec.error_response(exc)
            log.info("%s %s -> %d %s", request.method, type(parsed).__name__, status, exc.parity_name)
            return _json(payload, status)
        except Exception:
            log.exception("unexpected failure serving %s", type(parsed).__name__)
            from ..exceptions import InternalError

            status, payload = codec.error_response(InternalError("unexpected server failure"))
            return _json(payload, status)
        if decision.allow_origin:
            response.headers["Access-Control-Allow-Origin"] = decision.allow_origin
        return response

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


