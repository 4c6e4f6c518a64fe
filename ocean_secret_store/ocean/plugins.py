"""The Ocean pipeline's plugin manager, and the choice by configured name of the encryptor and access backend.

Plugins are found through entry points in the group ``ocean`` (this package's own,
:mod:`.hookimpls`, among them, so it is chosen exactly as a third party would be). Each
``ocean_*`` hook returns lists of named objects; the config names the one to use:

* ``config.encryptor`` (default ``"secret-store"``) picks the encryptor. If it is ``"none"``,
  or no plugin offers an encryptor of that name under this config (for ours: the Secret Store
  is disabled, or no key server URL or provider key is configured), publishing is refused with
  :class:`~..exceptions.EncryptorUnavailable`: file URLs are never published in clear.
* ``config.provider_backend`` (default ``"secret-store"``) picks the provider's access backend.

When several plugins offer the same name, a third-party object wins over this package's
built-in one (installing a plugin and naming it replaces ours); two third-party objects with the
same name are refused as ambiguous rather than chosen by installation order.

Plugins can be switched off by entry-point name with ``blocked=`` or the environment variable
``OCEAN_DISABLED_PLUGINS`` (comma-separated), as pluggy's ``set_blocked``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Final, TypeVar, cast

import pluggy

from ..exceptions import EncryptorUnavailable, OceanError
from . import hookspecs
from .encryptors import Encryptor
from .hookspecs import PROJECT_NAME

if TYPE_CHECKING:
    from .config import OceanConfig
    from .provider.backends import AccessBackend

__all__ = [
    "DISABLED_PLUGINS_ENV",
    "available_access_backends",
    "available_encryptors",
    "get_plugin_manager",
    "select_access_backend",
    "select_encryptor",
]

#: Environment variable listing entry-point names of plugins not to load (comma-separated).
DISABLED_PLUGINS_ENV: Final = "OCEAN_DISABLED_PLUGINS"
#: ``config.encryptor`` values that switch encryption off (so publishing is refused).
NO_ENCRYPTOR: Final = frozenset({"none", "off", "disabled"})
_BUILTIN_PREFIX: Final = "ocean_secret_store."

T = TypeVar("T")


def get_plugin_manager(
    *,
    load_entrypoints: bool = True,
    blocked: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> pluggy.PluginManager:
    """A new plugin manager with the ``ocean`` hookspecs and the installed plugins registered.

    :param load_entrypoints: load the plugins registered in the entry-point group ``ocean``
        (``False``: an empty manager, for hosts and tests that register plugins themselves).
    :param blocked: entry-point names not to load, in addition to those in
        ``$OCEAN_DISABLED_PLUGINS``.
    :param environ: where ``OCEAN_DISABLED_PLUGINS`` is read (default ``os.environ``).
    :raises OceanError: if a plugin implements a hook that does not exist or with arguments
        the spec does not have.
    """
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    env = os.environ if environ is None else environ
    names = [*blocked, *(part.strip() for part in env.get(DISABLED_PLUGINS_ENV, "").split(","))]
    for name in names:
        if name:
            pm.set_blocked(name)
    try:
        if load_entrypoints:
            pm.load_setuptools_entrypoints(PROJECT_NAME)
        # A hookimpl whose name matches no spec is almost surely a typo (or a hook of a newer
        # version): refuse it now rather than let the plugin silently do nothing.
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        plugin = getattr(exc.plugin, "__name__", None) or type(exc.plugin).__name__
        raise OceanError(f"the ocean plugin {plugin} is invalid: {exc}") from None
    return pm


def _flatten(results: Sequence[object], hook: str) -> list[object]:
    """One list from the per-plugin lists a hook returned; each object must have a str ``name``."""
    found: list[object] = []
    for result in results:
        if not isinstance(result, (list, tuple)):
            raise OceanError(f"an {hook} hook returned {type(result).__name__}; it must return a list")
        for item in result:
            if not isinstance(getattr(item, "name", None), str):
                raise OceanError(f"an {hook} hook returned a {type(item).__name__} without a str name")
            found.append(item)
    return found


def _is_builtin(item: object) -> bool:
    return type(item).__module__.startswith(_BUILTIN_PREFIX)


def _pick(candidates: Iterable[T], name: str, kind: str) -> T | None:
    matches = [item for item in candidates if getattr(item, "name", None) == name]
    if not matches:
        return None
    third_party = [item for item in matches if not _is_builtin(item)]
    if len(third_party) > 1:
        kinds = ", ".join(f"{type(item).__module__}.{type(item).__qualname__}" for item in third_party)
        raise OceanError(f"{len(third_party)} plugins offer an {kind} named {name!r} ({kinds}): "
                         "block all but one (OCEAN_DISABLED_PLUGINS)")
    return third_party[0] if third_party else matches[0]


def _names(items: Iterable[object]) -> str:
    return ", ".join(sorted({str(getattr(item, "name", "?")) for item in items})) or "none"


def available_encryptors(pm: pluggy.PluginManager, config: OceanConfig) -> list[Encryptor]:
    """Every encryptor the plugins offer under ``config`` (``ocean_encryptors``, flattened)."""
    # The hookspec promises encryptors; select_encryptor checks the one it picks.
    return cast("list[Encryptor]", _flatten(pm.hook.ocean_encryptors(config=config), "ocean_encryptors"))


def available_access_backends(pm: pluggy.PluginManager, config: OceanConfig) -> list[AccessBackend]:
    """Every access backend the plugins offer under ``config`` (``ocean_access_backends``, flattened)."""
    results = pm.hook.ocean_access_backends(config=config)
    # The hookspec promises access backends; select_access_backend checks the one it picks.
    return cast("list[AccessBackend]", _flatten(results, "ocean_access_backends"))


def _refusal(name: str, config: OceanConfig) -> str:
    """Why the encryptor ``name`` is not on offer, as far as this package's own plugin tells."""
    if name == "secret-store" and not config.secret_store_enabled:
        return "the Secret Store is disabled ([secret-store] enabled = false)"
    if name == "secret-store" and not config.cluster_urls:
        return ("no key server URL is configured "
                "([secret-store] cluster_urls or [keeper-contracts] secret_store.url)")
    if name == "provider-key" and not config.provider_public_key:
        return "no provider public key is configured ([provider] provider.public_key)"
    return "no installed ocean plugin offers it"


def select_encryptor(pm: pluggy.PluginManager, config: OceanConfig) -> Encryptor:
    """The encryptor named by ``config.encryptor``.

    :raises EncryptorUnavailable: if encryption is switched off or no plugin offers that name;
        publishing must stop, because file URLs are never published in clear.
    :raises OceanError: if two third-party plugins offer that name, or the object offered is
        not an encryptor.
    """
    name = config.encryptor
    if name.lower() in NO_ENCRYPTOR:
        raise EncryptorUnavailable(
            f"publishing refused: encryption is switched off ([secret-store] encryptor = {name}); "
            "file URLs are never published in clear"
        )
    candidates = available_encryptors(pm, config)
    chosen = _pick(candidates, name, "encryptor")
    if chosen is None:
        raise EncryptorUnavailable(
            f"publishing refused: no encryptor named {name!r} is available ({_refusal(name, config)}; "
            f"available: {_names(candidates)}); file URLs are never published in clear"
        )
    if not isinstance(chosen, Encryptor):
        kind = type(chosen).__qualname__
        raise OceanError(f"the encryptor {name!r} ({kind}) has no encrypt/decrypt methods")
    return chosen


def select_access_backend(pm: pluggy.PluginManager, config: OceanConfig) -> AccessBackend:
    """The access backend named by ``config.provider_backend``.

    :raises OceanError: if no plugin offers that name (the message lists those that exist), two
        third-party plugins do, or the object offered has no ``file_urls`` method.
    """
    name = config.provider_backend
    candidates = available_access_backends(pm, config)
    chosen = _pick(candidates, name, "access backend")
    if chosen is None:
        hint = ""
        if name == "secret-store" and not (config.secret_store_enabled and config.cluster_urls):
            hint = " (the Secret Store is disabled or no key server URL is configured)"
        raise OceanError(
            f"no access backend named {name!r} is available{hint}; available: {_names(candidates)}"
        )
    if not callable(getattr(chosen, "file_urls", None)):
        raise OceanError(f"the access backend {name!r} ({type(chosen).__qualname__}) has no file_urls method")
    return chosen
