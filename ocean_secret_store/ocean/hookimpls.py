"""This package's own Ocean plugin (entry point ``secret_store``): its encryptors and access backends.

Registered like any third-party plugin, through ``[project.entry-points.ocean]`` in
pyproject.toml, so a host finds it only when the package is installed and can block it by
name (``secret_store``). What it offers depends on the config:

* encryptors: :class:`~.encryptors.SecretStoreEncryptor` when the Secret Store is enabled and a
  key server URL is configured; :class:`~.encryptors.ProviderKeyEncryptor` when a provider
  public key is configured;
* access backends: ``SecretStoreBackend`` under the same condition as the Secret Store
  encryptor, and ``ProviderKeyBackend`` always (it needs nothing but the provider's account).

The backends module is imported with the plugin: it needs nothing the encryptors do not already
import (the HTTP client and the crypto core), and the provider's server (aiohttp) stays apart in
:mod:`.provider.app`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .encryptors import Encryptor, ProviderKeyEncryptor, SecretStoreEncryptor
from .hookspecs import hookimpl
from .provider.backends import AccessBackend, ProviderKeyBackend, SecretStoreBackend

if TYPE_CHECKING:
    from .config import OceanConfig


def _secret_store_on(config: OceanConfig) -> bool:
    return bool(config.secret_store_enabled and config.cluster_urls)


@hookimpl
def ocean_encryptors(config: OceanConfig) -> list[Encryptor]:
    """The Secret Store encryptor (if enabled and configured) and the provider-key one (if a key is given)."""
    offered: list[Encryptor] = []
    if _secret_store_on(config):
        offered.append(
            SecretStoreEncryptor(list(config.cluster_urls), config.threshold, cluster_size=config.cluster_size,
                                 ca_file=config.ca_file)
        )
    if config.provider_public_key:
        offered.append(ProviderKeyEncryptor.from_hex(config.provider_public_key))
    return offered


@hookimpl
def ocean_access_backends(config: OceanConfig) -> list[AccessBackend]:
    """The Secret Store backend (if enabled and configured) and the provider-key backend."""
    offered: list[AccessBackend] = []
    if _secret_store_on(config):
        offered.append(SecretStoreBackend(list(config.cluster_urls), ca_file=config.ca_file))
    offered.append(ProviderKeyBackend())
    return offered
