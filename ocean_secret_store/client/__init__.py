"""Client side of the secret store: the local ``secretstore_*`` helpers (:mod:`.local`) and, later, the HTTP client.

Nothing is imported eagerly here, so ``import ocean_secret_store.client.local`` pulls in only
the crypto core; heavier parts (HTTP, eth-account) are imported by the modules that need them.
"""
