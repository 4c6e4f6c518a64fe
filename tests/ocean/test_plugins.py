"""The ``ocean`` hooks: discovery through entry points, selection by configured name, replacement by a
third-party plugin, refusal to publish without an encryptor, and meta-tests (every hook documented and
tested).

Entry points are faked as pluggy's own tests do: ``importlib.metadata.distributions`` is
monkeypatched to return distribution objects whose entry points load in-memory plugins;
nothing is installed.
"""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from ocean_secret_store.client import local
from ocean_secret_store.exceptions import EncryptorUnavailable, OceanError
from ocean_secret_store.ocean import hookimpls, hookspecs
from ocean_secret_store.ocean.config import OceanConfig
from ocean_secret_store.ocean.encryptors import Encryptor, ProviderKeyEncryptor, SecretStoreEncryptor
from ocean_secret_store.ocean.hookspecs import hookimpl
from ocean_secret_store.ocean.plugins import (
    available_access_backends,
    available_encryptors,
    get_plugin_manager,
    select_access_backend,
    select_encryptor,
)

ROOT = Path(__file__).resolve().parents[2]
HOOKS_DOC = ROOT / "docs" / "hooks.md"
NODES = ("http://127.0.0.1:12001", "http://127.0.0.1:12002", "http://127.0.0.1:12003")
HOOK_NAMES = sorted(name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
                    if name.startswith("ocean_"))


# -- a third-party plugin, as another distribution would ship it -----------------------------------


class VaultEncryptor:
    """A test double of a third party's encryptor: reversible, not secure, never used outside these tests."""

    def __init__(self, name: str = "vault") -> None:
        self.name = name

    def encrypt(self, did: str, content: str, account: Any, threshold: int | None) -> str:
        return "0x" + content[::-1].encode().hex()

    def decrypt(self, did: str, encrypted: str, account: Any) -> str:
        return bytes.fromhex(encrypted[2:]).decode()[::-1]


class VaultBackend:
    name = "vault"

    def file_urls(self, ddo: Any, provider_account: Any) -> list[dict[str, Any]]:
        return [{"index": 0, "url": "https://vault.example/0"}]


class VaultPlugin:
    """Offers one encryptor and one backend, under ``name`` (default "vault")."""

    def __init__(self, name: str = "vault") -> None:
        self.name = name

    @hookimpl
    def ocean_encryptors(self, config: OceanConfig) -> list[Any]:
        return [VaultEncryptor(self.name)]

    @hookimpl
    def ocean_access_backends(self, config: OceanConfig) -> list[Any]:
        return [VaultBackend()]


class FakeEntryPoint:
    def __init__(self, name: str, plugin: object, group: str = "ocean") -> None:
        self.name = name
        self.group = group
        self.value = getattr(plugin, "__name__", type(plugin).__name__)
        self._plugin = plugin

    def load(self) -> object:
        return self._plugin


class FakeDistribution:
    def __init__(self, name: str, *entry_points: FakeEntryPoint) -> None:
        self.entry_points = entry_points
        self.metadata = {"name": name}
        self.version = "1.0"


OURS = FakeDistribution("ocean-secret-store", FakeEntryPoint("secret_store", hookimpls))


@pytest.fixture
def distributions(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Install fake distributions as the only ones ``importlib.metadata`` knows."""

    def install(*dists: FakeDistribution) -> None:
        monkeypatch.setattr(importlib.metadata, "distributions", lambda: iter(dists))

    return install


@pytest.fixture
def provider() -> Any:
    return Account.create()


def configured(**fields: Any) -> OceanConfig:
    fields.setdefault("cluster_urls", NODES)
    return OceanConfig(**fields)


def public_hex(account: Any) -> str:
    return "0x" + local.account_public(account).to_bytes().hex()


def backends_module() -> Any:
    try:
        from ocean_secret_store.ocean.provider import backends
    except ImportError as exc:  # engineer C's module is written in parallel
        pytest.skip(f"ocean_secret_store.ocean.provider.backends is not importable yet: {exc}")
    return backends


# -- discovery -------------------------------------------------------------------------------------


def test_entry_points_of_the_ocean_group_are_loaded(distributions: Callable[..., None]) -> None:
    unrelated = FakeDistribution("other", FakeEntryPoint("not_ours", VaultPlugin(), group="pytest11"))
    distributions(OURS, unrelated)

    pm = get_plugin_manager(environ={})

    assert pm.get_plugin("secret_store") is hookimpls
    assert pm.get_plugin("not_ours") is None
    assert [(plugin, dist.project_name) for plugin, dist in pm.list_plugin_distinfo()] == [
        (hookimpls, "ocean-secret-store")
    ]
    assert sorted(name for name in dir(pm.hook) if name.startswith("ocean_")) == HOOK_NAMES


def test_without_entry_points_the_manager_is_empty(distributions: Callable[..., None]) -> None:
    distributions(OURS)
    pm = get_plugin_manager(load_entrypoints=False, environ={})
    assert pm.get_plugins() == set()
    assert available_encryptors(pm, configured()) == []


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_plugins_can_be_blocked_by_entry_point_name(distributions: Callable[..., None], how: str) -> None:
    vault = VaultPlugin()
    distributions(OURS, FakeDistribution("vault", FakeEntryPoint("vault", vault)))
    if how == "argument":
        pm = get_plugin_manager(blocked=["secret_store"], environ={})
    else:
        pm = get_plugin_manager(environ={"OCEAN_DISABLED_PLUGINS": " secret_store , unknown"})
    assert pm.get_plugin("secret_store") is None
    assert pm.get_plugin("vault") is vault


def test_the_installed_package_registers_its_entry_point() -> None:
    ours = [ep for ep in importlib.metadata.entry_points(group="ocean") if ep.name == "secret_store"]
    if not ours:
        pytest.skip("the ocean entry point of this package is not installed yet (reinstall the package)")
    assert ours[0].value == "ocean_secret_store.ocean.hookimpls"
    pm = get_plugin_manager(environ={})
    assert pm.get_plugin("secret_store") is hookimpls
    assert any(plugin is hookimpls for plugin, _ in pm.list_plugin_distinfo())


def test_a_plugin_implementing_an_unknown_hook_is_refused(distributions: Callable[..., None]) -> None:
    class Typo:
        @hookimpl
        def ocean_encryptor(self, config: OceanConfig) -> list[Any]:  # singular: no such hook
            return []

    distributions(FakeDistribution("typo", FakeEntryPoint("typo", Typo())))
    with pytest.raises(OceanError) as caught:
        get_plugin_manager(environ={})
    assert "ocean_encryptor" in str(caught.value)


def test_a_hookimpl_asking_for_an_unknown_argument_is_refused(distributions: Callable[..., None]) -> None:
    class Greedy:
        @hookimpl
        def ocean_encryptors(self, config: OceanConfig, wallet: object) -> list[Any]:
            return []

    distributions(FakeDistribution("greedy", FakeEntryPoint("greedy", Greedy())))
    with pytest.raises(OceanError) as caught:
        get_plugin_manager(environ={})
    assert "wallet" in str(caught.value)


# -- ocean_encryptors ------------------------------------------------------------------------------


def test_ocean_encryptors_hook_offers_ours_by_config(
    distributions: Callable[..., None], provider: Any
) -> None:
    distributions(OURS)
    pm = get_plugin_manager(environ={})

    config = configured(threshold=2, provider_public_key=public_hex(provider))
    results = pm.hook.ocean_encryptors(config=config)

    assert len(results) == 1  # one list per plugin
    secret_store, provider_key = results[0]
    assert isinstance(secret_store, SecretStoreEncryptor) and isinstance(provider_key, ProviderKeyEncryptor)
    assert (secret_store.cluster_urls, secret_store.threshold, secret_store.cluster_size) == (NODES, 2, 3)
    assert provider_key.provider_address == provider.address
    # Nothing on offer without a cluster URL and a provider key, or with the Secret Store off.
    assert pm.hook.ocean_encryptors(config=OceanConfig()) == [[]]
    assert pm.hook.ocean_encryptors(config=configured(secret_store_enabled=False)) == [[]]


def test_select_encryptor_by_name(distributions: Callable[..., None], provider: Any) -> None:
    distributions(OURS)
    pm = get_plugin_manager(environ={})
    default = select_encryptor(pm, configured(provider_public_key=public_hex(provider)))
    assert isinstance(default, SecretStoreEncryptor)
    config = configured(encryptor="provider-key", provider_public_key=public_hex(provider))
    chosen = select_encryptor(pm, config)
    assert isinstance(chosen, ProviderKeyEncryptor)
    # The chosen one works: what it encrypts only the provider decrypts.
    did = "did:op:" + os.urandom(32).hex()
    assert chosen.decrypt(did, chosen.encrypt(did, "[]", Account.create(), None), provider) == "[]"


def test_a_third_party_encryptor_named_in_config_replaces_ours(distributions: Callable[..., None]) -> None:
    distributions(OURS, FakeDistribution("ocean-vault", FakeEntryPoint("vault", VaultPlugin())))
    pm = get_plugin_manager(environ={})

    chosen = select_encryptor(pm, configured(encryptor="vault"))

    assert isinstance(chosen, VaultEncryptor) and isinstance(chosen, Encryptor)
    assert sorted(e.name for e in available_encryptors(pm, configured())) == ["secret-store", "vault"]
    # With the default name ours is still the one used.
    assert isinstance(select_encryptor(pm, configured()), SecretStoreEncryptor)


def test_a_third_party_offering_our_name_wins_over_ours(distributions: Callable[..., None]) -> None:
    # Registered before ours and after ours: the third party wins either way.
    for order in ((OURS, "vault"), ("vault", OURS)):
        dists = [d if isinstance(d, FakeDistribution)
                 else FakeDistribution("ocean-vault", FakeEntryPoint("vault", VaultPlugin("secret-store")))
                 for d in order]
        distributions(*dists)
        chosen = select_encryptor(get_plugin_manager(environ={}), configured())
        assert isinstance(chosen, VaultEncryptor) and chosen.name == "secret-store"


def test_two_third_parties_with_the_same_name_are_ambiguous(distributions: Callable[..., None]) -> None:
    distributions(FakeDistribution("a", FakeEntryPoint("a", VaultPlugin())),
                  FakeDistribution("b", FakeEntryPoint("b", VaultPlugin())))
    with pytest.raises(OceanError) as caught:
        select_encryptor(get_plugin_manager(environ={}), configured(encryptor="vault"))
    assert "2 plugins" in str(caught.value) and "OCEAN_DISABLED_PLUGINS" in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"secret_store_enabled": False}, "enabled = false"),
        ({"cluster_urls": ()}, "no key server URL"),
        ({"encryptor": "none"}, "switched off"),
        ({"encryptor": "provider-key"}, "no provider public key"),
        ({"encryptor": "vault"}, "no installed ocean plugin offers it"),
    ],
)
def test_publishing_is_refused_without_an_encryptor(
    distributions: Callable[..., None], fields: dict[str, Any], reason: str
) -> None:
    distributions(OURS)
    with pytest.raises(EncryptorUnavailable) as caught:
        select_encryptor(get_plugin_manager(environ={}), configured(**fields))
    message = str(caught.value)
    assert message.startswith("publishing refused")
    assert reason in message
    assert "never published in clear" in message


def test_publishing_is_refused_when_no_plugin_is_installed(distributions: Callable[..., None]) -> None:
    distributions()
    with pytest.raises(EncryptorUnavailable) as caught:
        select_encryptor(get_plugin_manager(environ={}), configured())
    assert "available: none" in str(caught.value)


def test_the_host_refuses_to_publish_before_building_anything(distributions: Callable[..., None]) -> None:
    try:
        from ocean_secret_store.ocean.host import Ocean
    except ModuleNotFoundError as exc:  # the host's other modules are written in parallel
        if not (exc.name or "").startswith("ocean_secret_store.ocean."):
            raise
        pytest.skip(f"the Ocean host is not importable yet: {exc}")

    distributions(OURS)
    config = configured(secret_store_enabled=False)
    ocean = Ocean(config, plugin_manager=get_plugin_manager(environ={}))
    files = [{"url": "https://example.org/secret.csv"}]
    metadata = {"main": {"type": "dataset", "name": "x", "files": files}}
    # No chain or metadata store is configured: the refusal has to come first.
    with pytest.raises(EncryptorUnavailable):
        ocean.assets.create(metadata, Account.create())


def test_hook_results_must_be_lists_of_named_objects(distributions: Callable[..., None]) -> None:
    class NotAList:
        @hookimpl
        def ocean_encryptors(self, config: OceanConfig) -> Any:
            return VaultEncryptor()

    class Nameless:
        @hookimpl
        def ocean_encryptors(self, config: OceanConfig) -> Any:
            return [object()]

    for plugin, problem in ((NotAList(), "must return a list"), (Nameless(), "without a str name")):
        distributions(FakeDistribution("bad", FakeEntryPoint("bad", plugin)))
        with pytest.raises(OceanError) as caught:
            select_encryptor(get_plugin_manager(environ={}), configured(encryptor="vault"))
        assert problem in str(caught.value)


# -- ocean_access_backends -------------------------------------------------------------------------


def test_ocean_access_backends_hook_offers_both_of_ours(distributions: Callable[..., None]) -> None:
    backends = backends_module()
    distributions(OURS)
    pm = get_plugin_manager(environ={})

    results = pm.hook.ocean_access_backends(config=configured())

    assert [type(b) for b in results[0]] == [backends.SecretStoreBackend, backends.ProviderKeyBackend]
    assert results[0][0].cluster_urls == NODES
    disabled = pm.hook.ocean_access_backends(config=configured(secret_store_enabled=False))
    assert [type(b) for b in disabled[0]] == [backends.ProviderKeyBackend]


def test_select_access_backend_by_name(distributions: Callable[..., None]) -> None:
    backends = backends_module()
    distributions(OURS, FakeDistribution("ocean-vault", FakeEntryPoint("vault", VaultPlugin())))
    pm = get_plugin_manager(environ={})

    assert isinstance(select_access_backend(pm, configured()), backends.SecretStoreBackend)
    assert isinstance(select_access_backend(pm, configured(provider_backend="provider-key")),
                      backends.ProviderKeyBackend)
    assert isinstance(select_access_backend(pm, configured(provider_backend="vault")), VaultBackend)
    assert sorted(b.name for b in available_access_backends(pm, configured())) == [
        "provider-key", "secret-store", "vault"
    ]
    with pytest.raises(OceanError) as caught:
        select_access_backend(pm, configured(provider_backend="secret-store", secret_store_enabled=False))
    assert "Secret Store is disabled" in str(caught.value) and "provider-key" in str(caught.value)
    with pytest.raises(OceanError) as unknown:
        select_access_backend(pm, configured(provider_backend="s3"))
    assert "'s3'" in str(unknown.value)


# -- meta: every hook is documented and tested -----------------------------------------------------


def _signature(function: Callable[..., Any]) -> str:
    """``name(arg: Type, ...) -> Return`` from the spec's own (string) annotations."""
    parameters = inspect.signature(function).parameters
    arguments = ", ".join(f"{name}: {function.__annotations__[name]}" for name in parameters)
    return f"{function.__name__}({arguments}) -> {function.__annotations__['return']}"


def test_there_are_hooks() -> None:
    assert HOOK_NAMES == ["ocean_access_backends", "ocean_encryptors"]


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_every_hook_is_documented_with_its_exact_signature(name: str) -> None:
    doc = HOOKS_DOC.read_text(encoding="utf-8")
    spec = getattr(hookspecs, name)
    heading = f"### `{_signature(spec)}`"
    assert heading in doc, f"docs/hooks.md needs a section headed {heading}"
    section = doc.split(heading, 1)[1].split("\n### ", 1)[0]
    for part in ("**Called**", "**Returns**", "@hookimpl", "[project.entry-points.ocean]"):
        assert part in section, f"the section of {name} in docs/hooks.md lacks {part}"
    assert inspect.getdoc(spec), f"{name} has no docstring"


def _hook_calls_by_test() -> dict[str, set[str]]:
    """Hook name -> the tests of this module that call ``<manager>.hook.<name>(...)``."""
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    found: dict[str, set[str]] = {}
    for function in ast.walk(tree):
        if not (isinstance(function, ast.FunctionDef) and function.name.startswith("test_")):
            continue
        for node in ast.walk(function):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "hook"):
                found.setdefault(node.func.attr, set()).add(function.name)
    return found


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_every_hook_is_called_by_a_test(name: str) -> None:
    callers = _hook_calls_by_test().get(name, set())
    assert callers, f"no test in {Path(__file__).name} calls pm.hook.{name}(...)"


def test_every_hook_is_implemented_by_our_plugin() -> None:
    implemented = sorted(name for name in HOOK_NAMES if hasattr(getattr(hookimpls, name, None), "ocean_impl"))
    assert implemented == HOOK_NAMES


def _iter_hookimpl_names() -> Iterator[str]:
    for name, function in inspect.getmembers(hookimpls, inspect.isfunction):
        if hasattr(function, "ocean_impl"):
            yield name


def test_our_plugin_implements_only_specified_hooks() -> None:
    assert set(_iter_hookimpl_names()) <= set(HOOK_NAMES)
