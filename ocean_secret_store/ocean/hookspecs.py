"""The hook specifications of the Ocean pipeline (pluggy project ``"ocean"``, entry-point group ``ocean``).

A plugin is a module (or object) with functions decorated by :data:`hookimpl` and named like
the specs below; it is found through an entry point in the group ``ocean``::

    [project.entry-points.ocean]
    my_vault = "my_package.ocean_plugin"

Every hook receives the host's :class:`~.config.OceanConfig` as ``config`` (keyword-only, as
pluggy calls hooks) and returns a list of named objects, or ``None`` for nothing. pluggy
collects one list per plugin; :mod:`.plugins` flattens them and the config picks one by name.
A plugin may declare fewer arguments than the spec (pluggy's opt-in arguments), so adding an
argument here never breaks an existing plugin. docs/hooks.md is the long form of this file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .config import OceanConfig
    from .encryptors import Encryptor
    from .provider.backends import AccessBackend

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec", "ocean_access_backends", "ocean_encryptors"]

#: The pluggy project name and the entry-point group plugins register in.
PROJECT_NAME = "ocean"

#: Marks a function of this module as a hook specification.
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Decorator for plugin authors: marks a function as an implementation of an ``ocean_*`` hook.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -- publishing ------------------------------------------------------------------------------


@hookspec
def ocean_encryptors(config: OceanConfig) -> list[Encryptor] | None:
    """Return the encryptors this plugin offers under ``config``: named objects that encrypt an
    asset's files list for a DID at publish time and decrypt it at consume time.

    Called by :func:`~.plugins.select_encryptor` each time the host needs its encryptor (before
    anything is published). Results of all plugins are combined into one list; the host uses
    the encryptor whose ``name`` equals ``config.encryptor``. Return only what is usable with
    ``config`` (an empty list or ``None`` otherwise): an encryptor that is not offered cannot be
    selected, and with none selected publishing is refused.

    :param config: the host's configuration.
    :return: objects with ``name: str``, ``encrypt(did, content, account, threshold) -> str``
        and ``decrypt(did, encrypted, account) -> str`` (:class:`~.encryptors.Encryptor`).
    """


# -- providing -------------------------------------------------------------------------------


@hookspec
def ocean_access_backends(config: OceanConfig) -> list[AccessBackend] | None:
    """Return the access backends this plugin offers under ``config``: named objects that turn a
    DDO's ``encryptedFiles`` into the files list with URLs, using the provider's own account.

    Called by :func:`~.plugins.select_access_backend` when a provider starts. Results of all
    plugins are combined into one list; the provider uses the backend whose ``name`` equals
    ``config.provider_backend``.

    :param config: the host's (provider's) configuration.
    :return: objects with ``name: str`` and ``file_urls(ddo, provider_account) -> list[dict]``
        (:class:`~.provider.backends.AccessBackend`).
    """
