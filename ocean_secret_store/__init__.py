"""ocean-secret-store: threshold key custody for Ocean, compatible with the Parity Secret Store.

Heavy parts (web3, the node, the client) are imported lazily so that ``import
ocean_secret_store.crypto`` stays small.
"""

from __future__ import annotations

from .exceptions import SecretStoreError

__version__ = "0.1.0"
__all__ = ["SecretStoreError", "__version__"]
