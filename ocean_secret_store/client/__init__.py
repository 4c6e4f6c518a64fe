"""Client side of the secret store: the HTTP client, the local ``secretstore_*`` helpers and their JSON-RPC face.

Nothing is imported eagerly here, so ``import ocean_secret_store.client.local`` pulls in only
the crypto core and the hex codec; heavier parts (HTTP, aiohttp, eth-account) are imported by
the modules that need them (:mod:`.client`, :mod:`.rpc`, :mod:`.keystore`).
"""
