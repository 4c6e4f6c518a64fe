"""ocean-secret-store: threshold key custody for Ocean, compatible with the Parity Secret Store.

The curated public API is below; everything heavier than the exception tree (web3, aiohttp,
requests) is imported lazily on first use, so ``import ocean_secret_store.crypto`` stays small.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .exceptions import SecretStoreError

if TYPE_CHECKING:
    from .client.client import SecretStoreClient
    from .ocean.encryptors import SecretStoreEncryptor
    from .ocean.host import Ocean

__version__ = "0.1.0"
__all__ = ["Ocean", "SecretStoreClient", "SecretStoreEncryptor", "SecretStoreError", "__version__"]

_LAZY = {
    "Ocean": "ocean_secret_store.ocean.host",
    "SecretStoreClient": "ocean_secret_store.client.client",
    "SecretStoreEncryptor": "ocean_secret_store.ocean.encryptors",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ocean_secret_store' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
