"""An Aquarius v1 compatible metadata service over the SQLite metadata store (``ocean-secret-store aquarius``).

It answers the routes that squid-py 0.9.3 and ocean-utils 0.3.7 (``ocean_utils.aquarius.Aquarius``)
call, with Aquarius 1.0.x's status codes and body shapes, under ``/api/v1/aquarius/assets``:

=======  ======================  ==========================================================================
method   path                    answer
=======  ======================  ==========================================================================
GET      ``""``                  200 ``{"ids": [did, ...]}``: the listed assets, oldest first
GET      ``/ddo``                200 ``{did: ddo, ...}``: the listed assets' DDOs
POST     ``/ddo``                201 the stored DDO; 400 (text) bad input; 500 (text) the DID is registered
                                 already (squid-py reads 500 as "This Asset ID already exists")
DELETE   ``/ddo``                200 ``All ddo successfully deleted``
GET      ``/ddo/query``          200 text search: ``text``, ``sort`` (JSON), ``offset`` (page size), ``page``
POST     ``/ddo/query``          200 query: ``{"query": {...}, "sort": {...}, "offset": n, "page": n}``
POST     ``/ddo/validate``       200 ``true`` or ``[{"message": ..., "path": ...}, ...]`` (the metadata's errors)
GET      ``/ddo/{did}``          200 the DDO; 404 (text) unknown
PUT      ``/ddo/{did}``          200 the updated DDO; 201 when it was new; 400 bad input
DELETE   ``/ddo/{did}``          200 ``Succesfully deleted`` (Aquarius' spelling); 404 unknown
GET      ``/metadata/{did}``     200 the DDO's metadata service; 404 unknown
=======  ======================  ==========================================================================

plus ``GET /`` (``{"software", "version", "plugin"}``) and ``GET /health``. Searches answer
``{"results": [...], "page": p, "total_pages": n, "total_results": t}``, ``offset`` being the page
size (default 100) and ``page`` counting from 1, as Aquarius did.

Errors are plain text, as Aquarius' were, and say what was wrong: a body that is not a JSON
object, an attribute Aquarius required (``@context``, ``created``, ``id``, ``publicKey``,
``authentication``, ``proof``, ``service``), an id that is not a DID, no metadata service, a
file that still carries its ``url`` (URLs are published encrypted only), ``created`` not in
``%Y-%m-%dT%H:%M:%SZ``, a PUT whose body names another DID, a malformed query, sort, page or
offset.

Where this service differs from Aquarius, on purpose:

* The DDO is stored as posted. Aquarius rewrote ``attributes.main.datePublished`` and
  reformatted dates, which changes ``main`` and so breaks the DDO's checksums and DID
  (``ddo.verify_ddo``); it also ran the full metadata schema (plecos) at registration, which
  ``/ddo/validate`` does here. An asset is listed unless its metadata says
  ``curation.isListed: false``, as in Aquarius.
* Search runs over the SQLite store in Python (a devnet holds hundreds of assets, not millions),
  with Elasticsearch's meaning approximated: ``text`` matches any of its words, case-insensitive,
  anywhere in the DDO (``did:op:<hex>`` finds that asset); in a query, every key must match and a
  key matches if any of its values does: ``license``, ``categories``, ``tags``, ``type``
  (service types), ``metadata_type``, ``updateFrequency``, ``sample`` match words of those fields,
  ``created``/``dateCreated``/``datePublished`` take ``[from, to]`` dates, ``price``/``cost``
  one value (equal) or ``[min, max]``, and any other key is a dotted path into the DDO (numbers:
  equal or range; otherwise words). Results come oldest first unless ``sort`` (``{path: 1 | -1}``)
  says otherwise.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from ..exceptions import AssetNotFound, OceanError
from ..lifecycle import bound_port, wait_for_stop_signal
from ..serving import GuardedAppRunner, ServingLimits, TlsFiles, guarded_site
from .ddo import AQUARIUS_ASSETS_PATH, AQUARIUS_DDO_PATH, DDO
from .did import DID_PREFIX, normalize_did
from .metadata import SqliteMetadataStore

log = logging.getLogger(__name__)

SOFTWARE: Final = "Aquarius"
#: The Aquarius release whose HTTP API this service speaks.
API_VERSION: Final = "1.0.7"
DATETIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"
#: Attributes Aquarius required in a registered DDO, in its order.
REQUIRED_ATTRIBUTES: Final = ("@context", "created", "id", "publicKey", "authentication", "proof", "service")
#: ``offset`` (page size) when a search gives none, and the largest accepted (Elasticsearch's result window).
DEFAULT_OFFSET: Final = 100
MAX_OFFSET: Final = 10_000
#: Request bodies larger than this are refused with 413 (DDOs are a few kilobytes).
MAX_BODY: Final = 1 << 20

#: Query keys with a fixed meaning -> the DDO path they look at (the Elasticsearch driver's indexes).
_MATCH_KEYS: Final = {
    "license": "service.attributes.main.license",
    "categories": "service.attributes.additionalInformation.categories",
    "tags": "service.attributes.additionalInformation.tags",
    "type": "service.type",
    "service_type": "service.type",
    "metadata_type": "service.attributes.main.type",
    "updateFrequency": "service.attributes.additionalInformation.updateFrequency",
    "sample": "service.attributes.additionalInformation.links.type",
}
_DATE_KEYS: Final = {
    "created": "created",
    "dateCreated": "service.attributes.main.dateCreated",
    "datePublished": "service.attributes.main.datePublished",
}
_NUMBER_KEYS: Final = {"price": "service.attributes.main.price", "cost": "service.attributes.main.cost"}
#: Fields /ddo/validate requires in ``main`` (plecos' local schema of the squid-py era).
_MAIN_FIELDS: Final = ("name", "type", "dateCreated", "author", "license", "price", "files")

_WORD = re.compile(r"[0-9a-z]+")


class BadRequest(OceanError):
    """Input the service refuses with 400; the message says why."""


# -- searching (pure) --------------------------------------------------------------------------


def _values(node: Any, path: Sequence[str]) -> Iterator[Any]:
    """Every value at the dotted ``path`` below ``node``, lists flattened at each step."""
    if isinstance(node, list):
        for item in node:
            yield from _values(item, path)
        return
    if not path:
        yield node
        return
    if isinstance(node, dict) and path[0] in node:
        yield from _values(node[path[0]], path[1:])


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node
    elif isinstance(node, int | float) and not isinstance(node, bool):
        yield str(node)


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def _text_words(terms: Any) -> set[str]:
    if isinstance(terms, str):
        terms = [terms]
    if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
        raise BadRequest("text must be a string or a list of strings")
    words: set[str] = set()
    for term in terms:
        words |= _words(term.replace(DID_PREFIX, " "))
    return words


def matches_text(document: Mapping[str, Any], words: set[str]) -> bool:
    """Whether any of ``words`` is a word of the document (every string value, case-insensitive)."""
    if not words:
        return True
    found: set[str] = set()
    for text in _strings(document):
        found |= _words(text)
        if words & found:
            return True
    return False


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool):
        raise BadRequest(f"query {key}: {value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"query {key}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise BadRequest(f"query {key}: {value!r} is not a finite number")
    return number


def _date(value: Any, key: str) -> datetime:
    try:
        return datetime.strptime(str(value), DATETIME_FORMAT)
    except ValueError:
        raise BadRequest(f"query {key}: {value!r} is not a date in the format {DATETIME_FORMAT}") from None


def _field_number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and not isinstance(value, bool) else None


def _field_date(value: Any) -> datetime | None:
    try:
        return datetime.strptime(str(value), DATETIME_FORMAT)
    except ValueError:
        return None


Predicate = Callable[[Mapping[str, Any]], bool]


def _number_predicate(key: str, path: list[str], values: list[Any]) -> Predicate:
    if len(values) not in (1, 2):
        raise BadRequest(f"query {key}: give one value (equal) or two [min, max], got {len(values)}")
    bounds = [_number(v, key) for v in values]
    low, high = bounds[0], bounds[-1]

    def test(document: Mapping[str, Any]) -> bool:
        numbers = (_field_number(v) for v in _values(document, path))
        return any(n is not None and low <= n <= high for n in numbers)

    return test


def _date_predicate(key: str, path: list[str], values: list[Any]) -> Predicate:
    if len(values) != 2:
        raise BadRequest(f"query {key}: give two dates [from, to], got {len(values)} value(s)")
    low, high = _date(values[0], key), _date(values[1], key)

    def test(document: Mapping[str, Any]) -> bool:
        dates = (_field_date(v) for v in _values(document, path))
        return any(d is not None and low <= d <= high for d in dates)

    return test


def _match_predicate(key: str, path: list[str], values: list[Any]) -> Predicate:
    words: set[str] = set()
    for value in values:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise BadRequest(f"query {key}: {value!r} is not a string or number")
        words |= _words(str(value))

    def test(document: Mapping[str, Any]) -> bool:
        if not values:  # no value: every document (the driver's "retrieve all")
            return True
        return any(words & _words(text) for text in _strings(list(_values(document, path))))

    return test


def compile_query(query: Any) -> Predicate:
    """The test a document must pass for the POST ``/ddo/query`` ``query`` object (module docstring).

    :raises BadRequest: not an object, or a key with values it cannot take.
    """
    if not isinstance(query, dict):
        raise BadRequest("query must be a JSON object of field -> list of values")
    tests: list[Predicate] = []
    for key, raw in query.items():
        values = raw if isinstance(raw, list) else [raw]
        if key == "text":
            words = _text_words(raw)
            tests.append(functools.partial(matches_text, words=words))
        elif key in _DATE_KEYS:
            tests.append(_date_predicate(key, _DATE_KEYS[key].split("."), values))
        elif key in _NUMBER_KEYS:
            tests.append(_number_predicate(key, _NUMBER_KEYS[key].split("."), values))
        elif key in _MATCH_KEYS:
            tests.append(_match_predicate(key, _MATCH_KEYS[key].split("."), values))
        elif not key or any(not part for part in key.split(".")):
            raise BadRequest(f"query key {key!r} is not a dotted path")
        elif values and isinstance(values[0], int | float) and not isinstance(values[0], bool):
            tests.append(_number_predicate(key, key.split("."), values))
        else:
            tests.append(_match_predicate(key, key.split("."), values))

    def every(document: Mapping[str, Any]) -> bool:
        return all(test(document) for test in tests)

    return every


def _sort_key(value: Any) -> tuple[int, Any]:
    # Numbers before strings before anything else; documents without the field sort last.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value)
    if isinstance(value, str):
        number = _field_number(value)
        return (0, number) if number is not None else (1, value)
    return (2, json.dumps(value, sort_keys=True))


def _first_sort_key(pair: tuple[Any, dict[str, Any]]) -> tuple[int, Any]:
    return _sort_key(pair[0])


def sort_documents(documents: list[dict[str, Any]], sort: Any) -> list[dict[str, Any]]:
    """``documents`` ordered by ``sort`` (``{path: 1 | -1}``, the first key first); None keeps the order.

    :raises BadRequest: ``sort`` is not such an object.
    """
    if sort is None:
        return documents
    if not isinstance(sort, dict) or not all(isinstance(k, str) and k and v in (1, -1) for k, v in sort.items()):
        raise BadRequest('sort must be a JSON object of field path -> 1 (ascending) or -1 (descending), '
                         'e.g. {"service.attributes.main.name": 1}')
    ordered = list(documents)
    for key, direction in reversed(list(sort.items())):  # stable sorts, the least significant key first
        path = key.split(".")
        firsts = [(next(_values(d, path), None), d) for d in ordered]
        present = [(value, d) for value, d in firsts if value is not None]
        present.sort(key=_first_sort_key, reverse=direction == -1)
        ordered = [d for _, d in present] + [d for value, d in firsts if value is None]
    return ordered


def _positive_int(value: Any, name: str, default: int, maximum: int | None = None) -> int:
    if value is None:
        return default
    if isinstance(value, bool):
        raise BadRequest(f"{name} must be an integer >= 1, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be an integer >= 1, got {value!r}") from None
    if isinstance(value, float) and number != value:
        raise BadRequest(f"{name} must be an integer >= 1, got {value!r}")
    if number < 1:
        raise BadRequest(f"{name} must be an integer >= 1, got {value!r}")
    if maximum is not None and number > maximum:
        raise BadRequest(f"{name} must be at most {maximum}, got {value!r}")
    return number


def paginate(results: list[dict[str, Any]], offset: Any, page: Any) -> dict[str, Any]:
    """Aquarius' page of ``results``: ``offset`` is the page size, ``page`` counts from 1."""
    size = _positive_int(offset, "offset", DEFAULT_OFFSET, MAX_OFFSET)
    number = _positive_int(page, "page", 1)
    total = len(results)
    start = (number - 1) * size
    return {"results": results[start:start + size], "page": number,
            "total_pages": total // size + int(total % size > 0), "total_results": total}


def _is_listed(document: Mapping[str, Any]) -> bool:
    return all(flag is not False for flag in _values(document, ["service", "attributes", "curation", "isListed"]))


# -- checking what is posted ----------------------------------------------------------------------


def _metadata_service(services: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((s for s in services if s.get("type") == "metadata"), None)


def check_ddo(body: Any, method: str) -> DDO:
    """The DDO a register (``method`` "register") or update posts, checked as Aquarius did.

    :raises BadRequest: the reason, in Aquarius' words where it had them.
    """
    if not isinstance(body, dict) or not body:
        raise BadRequest("payload seems empty." if isinstance(body, dict) else "the body must be a JSON object (a DDO)")
    for attribute in REQUIRED_ATTRIBUTES:
        if attribute not in body:
            raise BadRequest(f'"{attribute}" is required in the call to {method}')
    try:
        ddo = DDO.from_dict(body)
    except OceanError as exc:
        raise BadRequest(str(exc)) from None
    metadata = _metadata_service(body["service"])
    main = metadata.get("attributes", {}).get("main") if metadata is not None else None
    if metadata is None or not isinstance(metadata.get("attributes"), dict) or not isinstance(main, dict):
        raise BadRequest(f"{method} request failed: the DDO has no metadata service with attributes.main")
    files = main.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
        raise BadRequest(f"{method} request failed: attributes.main.files must be a list of objects")
    if any("url" in f for f in files):
        raise BadRequest(f"{method} request failed: url is not allowed in files ")
    if _field_date(body["created"]) is None:
        raise BadRequest(f"Incorrect data format, should be '{DATETIME_FORMAT}'")
    return ddo


def metadata_errors(metadata: Any) -> list[dict[str, str]]:
    """What ``/ddo/validate`` reports of ``metadata`` (``{"main": {...}, ...}``): JSON-schema-like
    ``{"message", "path"}`` errors, empty when it is valid local (squid-side) metadata."""
    if not isinstance(metadata, dict):
        return [{"message": f"{json.dumps(metadata)} is not of type 'object'", "path": ""}]
    main = metadata.get("main")
    if not isinstance(main, dict):
        return [{"message": "'main' is a required property", "path": ""}]
    errors = [{"message": f"'{name}' is a required property", "path": "main"}
              for name in _MAIN_FIELDS if name not in main]
    if "type" in main and main["type"] not in ("dataset", "algorithm"):
        errors.append({"message": f"{json.dumps(main['type'])} is not one of ['dataset', 'algorithm']",
                       "path": "main/type"})
    files = main.get("files")
    if "files" in main and (not isinstance(files, list) or not files):
        errors.append({"message": "files must be a non-empty array", "path": "main/files"})
    elif isinstance(files, list):
        for position, entry in enumerate(files):
            if not isinstance(entry, dict):
                errors.append({"message": "a file must be an object", "path": f"main/files/{position}"})
                continue
            errors += [{"message": f"'{name}' is a required property", "path": f"main/files/{position}"}
                       for name in ("index", "contentType", "url") if name not in entry]
    return errors


# -- the HTTP service -----------------------------------------------------------------------------


_STORE = web.AppKey("aquarius_store", SqliteMetadataStore)


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain")


def _json(status: int, value: Any) -> web.Response:
    return web.Response(status=status, text=json.dumps(value), content_type="application/json")


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not JSON ({type(exc).__name__} at {getattr(exc, 'pos', '?')})") from None


def _did(request: web.Request) -> str:
    try:
        return normalize_did(request.match_info["did"])
    except OceanError as exc:
        raise BadRequest(str(exc)) from None


async def _run(request: web.Request, work: Callable[[SqliteMetadataStore], Any]) -> Any:
    """``work(store)`` in a worker thread: SQLite calls block."""
    return await asyncio.to_thread(work, request.app[_STORE])


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except BadRequest as exc:
        return _text(400, str(exc))
    except OceanError as exc:
        log.warning("%s %s failed: %s", request.method, request.path, exc)
        return _text(500, f"the metadata store failed: {exc}")
    return response


async def _version(request: web.Request) -> web.Response:
    return _json(200, {"software": SOFTWARE, "version": API_VERSION, "plugin": "sqlite",
                       "implementation": "ocean-secret-store"})


async def _health(request: web.Request) -> web.Response:
    await _run(request, lambda store: store.list_dids())
    return _text(200, "SQLite connected")


async def _listed(request: web.Request) -> list[dict[str, Any]]:
    documents = await _run(request, lambda store: store.documents())
    return [doc for doc in (d.as_dict() for d in documents) if _is_listed(doc)]


async def _asset_ids(request: web.Request) -> web.Response:
    return _json(200, {"ids": [doc["id"] for doc in await _listed(request)]})


async def _all_ddos(request: web.Request) -> web.Response:
    return _json(200, {doc["id"]: doc for doc in await _listed(request)})


async def _register(request: web.Request) -> web.Response:
    ddo = check_ddo(await _body(request), "register")
    try:
        await _run(request, lambda store: store.publish(ddo))
    except OceanError:
        if await _run(request, lambda store: _maybe(store, ddo.did)) is not None:
            # Aquarius answered a duplicate with 500, and squid-py 0.9.3 reads 500 as exactly that.
            return _text(500, f"{ddo.did} is already registered: update it with PUT .../ddo/{ddo.did}")
        raise
    log.info("registered %s", ddo.did)
    return _json(201, ddo.as_dict())


def _maybe(store: SqliteMetadataStore, did: str) -> DDO | None:
    try:
        return store.resolve(did)
    except AssetNotFound:
        return None


async def _get_ddo(request: web.Request) -> web.Response:
    did = _did(request)
    ddo = await _run(request, lambda store: _maybe(store, did))
    if ddo is None:
        return _text(404, f"{did} asset DID is not in OceanDB")
    return _json(200, ddo.as_dict())


async def _metadata(request: web.Request) -> web.Response:
    did = _did(request)
    ddo = await _run(request, lambda store: _maybe(store, did))
    if ddo is None:
        return _text(404, f"{did} asset DID is not in OceanDB")
    return _json(200, _metadata_service(ddo.services))


async def _update(request: web.Request) -> web.Response:
    did = _did(request)
    ddo = check_ddo(await _body(request), "update")
    if normalize_did(ddo.did) != did:
        raise BadRequest(f"the body is the DDO of {ddo.did}, not of {did}")
    created = await _run(request, lambda store: store.put(ddo))
    log.info("%s %s", "registered" if created else "updated", did)
    return _json(201 if created else 200, ddo.as_dict())


async def _retire(request: web.Request) -> web.Response:
    did = _did(request)
    if not await _run(request, lambda store: store.delete(did)):
        return _text(404, "This asset DID is not in OceanDB")
    log.info("retired %s", did)
    return _text(200, "Succesfully deleted")


async def _retire_all(request: web.Request) -> web.Response:
    count = await _run(request, lambda store: store.delete_all())
    log.info("retired all %d assets", count)
    return _text(200, "All ddo successfully deleted")


async def _search(request: web.Request, test: Predicate, sort: Any, offset: Any, page: Any) -> web.Response:
    documents = await _run(request, lambda store: store.documents())
    results = [doc for doc in (d.as_dict() for d in documents) if test(doc)]
    return _json(200, paginate(sort_documents(results, sort), offset, page))


async def _text_search(request: web.Request) -> web.Response:
    args = request.query
    words = _text_words(args.get("text", ""))
    sort: Any = None
    if args.get("sort"):
        try:
            sort = json.loads(args["sort"])
        except ValueError:
            raise BadRequest('sort must be JSON, e.g. {"service.attributes.main.name": 1}') from None
    return await _search(request, functools.partial(matches_text, words=words), sort,
                         args.get("offset"), args.get("page"))


async def _query(request: web.Request) -> web.Response:
    body = await _body(request)
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object: {"query": {...}, "sort": ..., "offset": n, "page": n}')
    test = compile_query(body.get("query") if body.get("query") is not None else {})
    return await _search(request, test, body.get("sort"), body.get("offset"), body.get("page"))


async def _validate(request: web.Request) -> web.Response:
    errors = metadata_errors(await _body(request))
    # ocean-utils compares the body with b"true\n" (Flask's jsonify ends with a newline).
    text = json.dumps(errors or True, separators=(",", ":")) + "\n"
    return web.Response(status=200, text=text, content_type="application/json")


def make_aquarius_app(store: SqliteMetadataStore) -> web.Application:
    """The service's aiohttp application over ``store`` (routes in the module docstring)."""
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_errors])
    app[_STORE] = store
    router = app.router
    router.add_get("/", _version)
    router.add_get("/health", _health)
    router.add_get(AQUARIUS_ASSETS_PATH, _asset_ids)
    router.add_get(AQUARIUS_DDO_PATH, _all_ddos)
    router.add_post(AQUARIUS_DDO_PATH, _register)
    router.add_delete(AQUARIUS_DDO_PATH, _retire_all)
    # The fixed paths before /ddo/{did}, which would take them otherwise.
    router.add_get(AQUARIUS_DDO_PATH + "/query", _text_search)
    router.add_post(AQUARIUS_DDO_PATH + "/query", _query)
    router.add_post(AQUARIUS_DDO_PATH + "/validate", _validate)
    router.add_get(AQUARIUS_DDO_PATH + "/{did}", _get_ddo)
    router.add_put(AQUARIUS_DDO_PATH + "/{did}", _update)
    router.add_delete(AQUARIUS_DDO_PATH + "/{did}", _retire)
    router.add_get(AQUARIUS_ASSETS_PATH + "/metadata/{did}", _metadata)
    return app


async def serve_aquarius(db: Path, host: str, port: int, *, limits: ServingLimits | None = None,
                         ready: Callable[[str], None] | None = None, tls: TlsFiles | None = None) -> None:
    """Serve the SQLite metadata store ``db`` as Aquarius until SIGTERM or SIGINT, under the connection
    ``limits`` every server of ours has, over https with ``tls`` if given; ``ready`` gets the base
    URL once it listens.

    :raises OceanError: ``db`` cannot be opened as a metadata store.
    :raises ConfigError: ``tls`` names a missing file or a key that does not match the certificate.
    """
    ssl_context = tls.context("aquarius") if tls is not None else None
    app = make_aquarius_app(SqliteMetadataStore(db))
    runner = GuardedAppRunner(app, limits, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await guarded_site(runner, host, port, reuse_address=True, ssl_context=ssl_context).start()
        url = f"{'https' if tls is not None else 'http'}://{host}:{bound_port(runner)}"
        log.info("Aquarius-compatible service for %s listening on %s", db, url)
        if ready is not None:
            ready(url)
        await wait_for_stop_signal()
    finally:
        await runner.cleanup()
