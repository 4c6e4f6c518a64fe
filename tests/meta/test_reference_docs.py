"""The reference pages cannot drift from the code they describe.

* docs/configuration.md is exactly what ``tools/gen_config_doc.py`` renders from the two
  configuration schemas, and each schema is checked against its loader: the node's defaults are
  what its parser gives, the Ocean INI keys are the keys its reader reads, with the defaults
  ``OceanConfig`` gets;
* docs/http-api.md lists every route a key server serves (Parity's and ours) in its *Every route*
  table, and nothing else, and every error text a key server can answer in its *Errors* table,
  under that error's status;
* docs/integrators.md gives every hook, and the methods of the objects the hooks return, with
  their exact signatures, and names every public method of the SDK's two clients.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ocean_secret_store import exceptions
from ocean_secret_store.client.admin import AdminClient
from ocean_secret_store.client.client import SecretStoreClient
from ocean_secret_store.crypto.curve import Point
from ocean_secret_store.exceptions import KEY_SERVER_ERRORS, ConfigError
from ocean_secret_store.metrics import METRICS_PATH
from ocean_secret_store.node import config as node_config
from ocean_secret_store.node import http_api
from ocean_secret_store.node.quotas import TooManyRequests
from ocean_secret_store.node.status import STATUS_JSON_PATH, STATUS_PATH
from ocean_secret_store.ocean import config as ocean_config
from ocean_secret_store.ocean import encryptors, hookspecs
from ocean_secret_store.ocean.provider import backends
from ocean_secret_store.protocol import batch, generation_batch, key_versions

ROOT = Path(__file__).resolve().parents[2]


def section(doc: str, heading: str) -> str:
    """The text of ``## heading`` up to the next heading of the same or a higher level."""
    text = (ROOT / "docs" / doc).read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


# -- docs/configuration.md ----------------------------------------------------------------------


def generator() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_doc", ROOT / "tools" / "gen_config_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_md_is_what_the_generator_writes() -> None:
    assert (ROOT / "docs" / "configuration.md").read_text() == generator().render(), (
        "docs/configuration.md differs from the schemas: run .venv/bin/python tools/gen_config_doc.py")


def minimal_node(tmp_path: Path, **extra: dict[str, Any]) -> dict[str, Any]:
    secret = 7
    node_id = "0x" + Point.generator_mul(secret).to_bytes().hex()
    document: dict[str, Any] = {
        "node": {"secret": f"0x{secret:064x}", "listen": "127.0.0.1:0", "http_listen": "127.0.0.1:0",
                 "data_dir": str(tmp_path)},
        "cluster": {node_id: "127.0.0.1:1"},
        "acl": {"kind": "allow_list"},
    }
    for name, values in extra.items():
        document.setdefault(name, {}).update(values)
    return document


def test_node_schema_defaults_are_what_the_parser_gives(tmp_path: Path) -> None:
    # A config that names only what is required is written back with every default filled in.
    written = node_config.NodeConfig.from_mapping(minimal_node(tmp_path), tmp_path).to_mapping()
    checked = 0
    for setting in node_config.SETTINGS:
        if setting.required or setting.default_text is not None:
            continue
        assert written[setting.section][setting.key] == setting.default, f"[{setting.section}] {setting.key}"
        checked += 1
    assert checked >= 15


def test_node_schema_lists_every_key_the_parser_takes(tmp_path: Path) -> None:
    documented = {(s.section, s.key) for s in node_config.SETTINGS if not s.any_key}
    optional = {"min_ready_peers": 0, "admin_public": "0x" + Point.generator_mul(3).to_bytes().hex()}
    config = node_config.NodeConfig.from_mapping(minimal_node(tmp_path, node=optional), tmp_path)
    for name, values in config.to_mapping().items():
        if name == "cluster":
            continue
        for key, value in values.items():
            if isinstance(value, dict):  # a sub-table ([acl.keys])
                assert any(s.section == f"{name}.{key}" for s in node_config.SETTINGS), f"[{name}.{key}]"
            else:
                assert (name, key) in documented, f"the node writes [{name}] {key}, which SETTINGS does not list"
    # and the parser refuses what the schema does not list
    for name in ("node", "timeouts", "http", "quotas"):
        with pytest.raises(ConfigError) as refused:
            node_config.NodeConfig.from_mapping(minimal_node(tmp_path, **{name: {"no_such_key": 1}}), tmp_path)
        assert refused.value.key == f"{name}.no_such_key"


def read_ini_keys() -> set[tuple[str, str]]:
    """Every (section, key) the INI reader looks up while it builds a config from nothing."""
    seen: set[tuple[str, str]] = set()

    class Recording(ocean_config._Reader):
        def raw(self, section: str, key: str) -> tuple[str, str] | None:
            seen.add((section, key))
            return super().raw(section, key)

    Recording({}, {}, None, None, {}).config()
    return seen


def test_ini_schema_is_the_keys_the_reader_reads() -> None:
    documented = {(s.section, s.key) for s in ocean_config.SETTINGS if "<" not in s.key}
    assert read_ini_keys() == documented


def test_ini_schema_defaults_are_the_configs() -> None:
    config = ocean_config.OceanConfig.from_mapping({})
    checked = 0
    for setting in ocean_config.SETTINGS:
        if setting.attribute is None or setting.default_text is not None:
            continue
        assert getattr(config, setting.attribute) == setting.default, f"[{setting.section}] {setting.key}"
        checked += 1
    assert checked >= 20
    environment = {s.environment for s in ocean_config.SETTINGS if s.environment}
    assert environment == set(ocean_config.ENVIRONMENT)


# -- docs/http-api.md ---------------------------------------------------------------------------


def node_routes() -> set[tuple[str, str]]:
    """``(method, pattern)`` of every request a key server serves."""
    routes = {(request.method, pattern) for request, pattern in http_api.ROUTES.items()}
    routes.add(("GET", http_api.SIGNED_ADMIN_STATUS))
    routes.add(("GET", key_versions.ROUTE))
    routes |= {("GET", path) for path in (http_api.HEALTH_PATH, http_api.READY_PATH, METRICS_PATH, STATUS_PATH,
                                          STATUS_JSON_PATH)}
    routes.add(("POST", batch.PATH))
    routes.add(("POST", generation_batch.PATH))
    return routes


def test_every_route_of_a_node_is_in_the_route_table() -> None:
    table = set(re.findall(r"^\| `(GET|POST) ([^`]+)` \|", section("http-api.md", "Every route"), re.MULTILINE))
    assert table, "docs/http-api.md has no route table"
    assert sorted(node_routes() - table) == [], "routes the node serves that docs/http-api.md does not list"
    assert sorted(table - node_routes()) == [], "routes docs/http-api.md lists that the node does not serve"


def error_texts() -> list[tuple[int, str]]:
    """``(status, text)`` of every error a key server answers: Parity's variants and ours."""
    ours = (TooManyRequests, exceptions.KeysWouldBeLost, exceptions.BadAdminRequest,
            exceptions.AdminSessionIncomplete)
    return [(cls.status, cls.text or f"{cls.prefix}: …") for cls in (*KEY_SERVER_ERRORS.values(), *ours)]


def test_every_error_a_node_answers_is_in_the_errors_table() -> None:
    rows = [line for line in section("http-api.md", "Errors").splitlines() if line.startswith("| ")]
    for status, text in error_texts():
        row = next((line for line in rows if f"`{text}`" in line), None)
        assert row is not None, f"docs/http-api.md, Errors: no row for {text!r}"
        assert row.startswith(f"| {status} |"), f"{text!r} is answered with {status}: {row}"


# -- docs/integrators.md ------------------------------------------------------------------------


def signature_text(name: str, function: Callable[..., Any]) -> str:
    """``name(a: T, *, b: U = d) -> R`` as the source writes it (annotations are strings here)."""
    parts: list[str] = []
    star = False
    for parameter in inspect.signature(function).parameters.values():
        if parameter.name == "self":
            continue
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        text = f"{parameter.name}: {parameter.annotation}"
        if parameter.default is not inspect.Parameter.empty:
            text += f" = {parameter.default!r}"
        parts.append(text)
    return f"{name}({', '.join(parts)}) -> {inspect.signature(function).return_annotation}"


def test_every_hook_and_its_objects_methods_are_given_with_their_exact_signatures() -> None:
    # In a Markdown table a pipe inside code is written \|; it renders as |.
    text = (ROOT / "docs" / "integrators.md").read_text().replace("\\|", "|")
    hooks = [name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "ocean_spec")]
    assert sorted(hooks) == ["ocean_access_backends", "ocean_encryptors"]
    methods = [(name, getattr(hookspecs, name)) for name in hooks]
    methods += [(name, getattr(encryptors.Encryptor, name)) for name in ("encrypt", "decrypt")]
    methods += [("file_urls", backends.AccessBackend.file_urls),
                ("encrypt_files", backends.EncryptingBackend.encrypt_files)]
    for name, function in methods:
        expected = signature_text(name, function)
        assert f"`{expected}`" in text, f"docs/integrators.md does not give {expected}"


@pytest.mark.parametrize("client", [SecretStoreClient, AdminClient])
def test_every_public_method_of_the_sdk_clients_is_named(client: type) -> None:
    text = (ROOT / "docs" / "integrators.md").read_text()
    public = [name for name, _ in inspect.getmembers(client, callable) if not name.startswith("_")]
    missing = [name for name in public if f"{name}(" not in text]
    assert not missing, f"docs/integrators.md does not name {client.__name__}.{missing}"


# -- docs/architecture.md -----------------------------------------------------------------------


def test_the_layer_table_is_the_one_the_import_test_enforces() -> None:
    from tests.meta import test_imports

    text = section("architecture.md", "The layers")
    spans = re.compile(r"`([\w.]+)`")
    core_line = next(line for line in text.splitlines() if line.startswith("Two groups"))
    services_line = next(line for line in text.splitlines() if line.startswith("*services* ="))
    core = frozenset(spans.findall(core_line.split("*core* =", 1)[1]))
    services = core | frozenset(spans.findall(services_line))
    assert (core, services) == (test_imports._CORE, test_imports._SERVICES)
    documented: dict[str, frozenset[str]] = {}
    for row in re.findall(r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \|$", text, re.MULTILINE):
        component, imports = row
        allowed = frozenset(spans.findall(imports))
        allowed |= core if "*core*" in imports else frozenset()
        allowed |= services if "*services*" in imports else frozenset()
        documented[component] = allowed
    assert documented == test_imports.LAYERS
