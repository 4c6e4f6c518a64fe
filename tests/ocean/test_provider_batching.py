"""The provider's secret-store backend coalesces concurrent consumes of different assets into batch
retrievals (``KeyBatcher`` over ``SecretStoreClient.recover_many``): each consume gets its own
files list or its own error."""

from __future__ import annotations

import json
import os
import threading
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest
from eth_account import Account

from ocean_secret_store.crypto.curve import Point
from ocean_secret_store.exceptions import OceanError, ServerKeyIsNotFound
from ocean_secret_store.node.http_api import make_app
from ocean_secret_store.ocean.provider.backends import KeyBatcher, SecretStoreBackend
from ocean_secret_store.testing.servers import ServerThread
from tests.node.memnet import make_cluster


def test_batcher_coalesces_concurrent_callers_and_keeps_their_results_apart() -> None:
    calls: list[list[bytes]] = []
    lock = threading.Lock()

    def fetch(ids: list[bytes]) -> list[Point | BaseException]:
        with lock:
            calls.append(ids)
        return [ServerKeyIsNotFound() if key_id[0] == 0xFF else Point.generator_mul(key_id[0] + 1) for key_id in ids]

    batcher = KeyBatcher(fetch, window=0.05, max_batch=16)
    ids = [bytes([i]) * 32 for i in range(40)] + [b"\xff" * 32]
    barrier = threading.Barrier(len(ids))

    def consume(key_id: bytes) -> Point | BaseException:
        barrier.wait()
        try:
            return batcher.get(key_id)
        except ServerKeyIsNotFound as exc:
            return exc

    with ThreadPoolExecutor(len(ids)) as pool:
        results = list(pool.map(consume, ids))
    for key_id, result in zip(ids[:-1], results[:-1], strict=True):
        assert result == Point.generator_mul(key_id[0] + 1)
    assert isinstance(results[-1], ServerKeyIsNotFound)
    assert sum(len(c) for c in calls) == len(ids)
    assert all(len(c) <= 16 for c in calls)
    assert len(calls) <= 8, [len(c) for c in calls]  # 41 keys in a handful of batches, not 41 requests
    assert batcher.batches == len(calls)


def test_batcher_gives_a_failed_batch_to_every_caller_and_dedupes_keys() -> None:
    seen: list[list[bytes]] = []

    def fetch(ids: list[bytes]) -> list[Point | BaseException]:
        seen.append(ids)
        raise OceanError("the cluster is down")

    batcher = KeyBatcher(fetch, window=0.05)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(batcher.get, b"\x01" * 32) for _ in range(4)]
        for future in futures:
            with pytest.raises(OceanError, match="down"):
                future.result()
    assert all(ids == [b"\x01" * 32] for ids in seen)
    with pytest.raises(OceanError):
        KeyBatcher(fetch, max_batch=0)


@pytest.fixture
def cluster_url() -> Iterator[str]:
    thread = ServerThread()
    hub, cores = thread.run(make_cluster(5, session_timeout=2.0))
    try:
        yield thread.start(make_app(cores[0]))
    finally:
        thread.stop_all()
        thread.run(hub.stop())
        thread.close()


def test_concurrent_consumes_of_different_assets_share_batches(cluster_url: str) -> None:
    provider = Account.create()
    backend = SecretStoreBackend(cluster_url, batch_window=0.05)
    try:
        ddos: list[Any] = []
        for i in range(12):
            key_id = os.urandom(32)
            text = json.dumps([{"url": f"http://files.example/{i}.csv", "index": 0}])
            encrypted = backend.encrypt_files(key_id, text, provider, 2)
            ddos.append(types.SimpleNamespace(asset_id=key_id, encrypted_files=encrypted, did="did:op:" + key_id.hex()))
        missing = os.urandom(32)
        ddos.append(types.SimpleNamespace(asset_id=missing, encrypted_files=ddos[0].encrypted_files,
                                          did="did:op:" + missing.hex()))
        barrier = threading.Barrier(len(ddos))

        def consume(ddo: Any) -> list[dict[str, Any]] | BaseException:
            barrier.wait()
            try:
                return backend.file_urls(ddo, provider)
            except ServerKeyIsNotFound as exc:
                return exc

        with ThreadPoolExecutor(len(ddos)) as pool:
            results = list(pool.map(consume, ddos))
        for i, files in enumerate(results[:-1]):
            assert not isinstance(files, BaseException)
            assert files[0]["url"] == f"http://files.example/{i}.csv"
        assert isinstance(results[-1], ServerKeyIsNotFound)
        batcher = backend._batcher(provider)
        assert batcher.keys == len(ddos)
        assert batcher.batches <= 4  # 13 consumes, a few batch requests
    finally:
        backend.close()


def test_a_consumer_decrypts_many_assets_in_one_batch(cluster_url: str) -> None:
    from ocean_secret_store.exceptions import DecryptionFailed
    from ocean_secret_store.ocean.encryptors import SecretStoreEncryptor
    from ocean_secret_store.ocean.host import OceanSecretStore

    publisher, stranger = Account.create(), Account.create()
    encryptor = SecretStoreEncryptor(cluster_url, threshold=2, cluster_size=5)
    documents = []
    for i in range(5):
        did = "did:op:" + os.urandom(32).hex()
        documents.append((did, encryptor.encrypt(did, f"files of asset {i}", publisher)))
    secret_store = OceanSecretStore(cast("Any", types.SimpleNamespace(encryptor=lambda: encryptor)))
    assert secret_store.decrypt_many(documents, publisher) == [f"files of asset {i}" for i in range(5)]
    # a ciphertext under another asset's key decrypts to garbage: that entry's error alone
    swapped = [documents[0], (documents[1][0], documents[2][1])]
    results = secret_store.decrypt_many(swapped, publisher)
    assert results[0] == "files of asset 0"
    assert isinstance(results[1], (DecryptionFailed, str)) and results[1] != "files of asset 2"
    # per key: an unknown DID is its own error (this in-memory cluster has no ACL: anyone reads)
    missing = ("did:op:" + os.urandom(32).hex(), documents[0][1])
    results = secret_store.decrypt_many([missing, documents[3]], stranger)
    assert isinstance(results[0], ServerKeyIsNotFound)
    assert results[1] == "files of asset 3"


def test_a_new_key_server_list_takes_effect_for_the_next_consume(cluster_url: str,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """The provider's SIGHUP reload (reload_key_servers): a backend that started with a dead URL
    only serves once the list read again names a live node; a list that does not read keeps the old."""
    from ocean_secret_store.exceptions import ConfigError, NodeUnreachable
    from ocean_secret_store.ocean.provider.app import reload_key_servers

    provider = Account.create()
    key_id = os.urandom(32)
    publisher = SecretStoreBackend(cluster_url, batch_window=0)
    encrypted = publisher.encrypt_files(key_id, json.dumps([{"url": "http://files.example/a.csv", "index": 0}]),
                                        provider, 2)
    publisher.close()
    ddo = types.SimpleNamespace(asset_id=key_id, encrypted_files=encrypted, did="did:op:" + key_id.hex())
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    backend = SecretStoreBackend([dead], batch_window=0.01, timeout=2.0)
    try:
        with pytest.raises(NodeUnreachable, match="no key server answered"):
            backend.file_urls(ddo, provider)

        def unreadable() -> list[str]:
            raise ConfigError("ocean.ini: no such file")

        with caplog.at_level("INFO", logger="ocean_secret_store.ocean.provider.app"):
            reload_key_servers(backend, unreadable)
            assert backend.cluster_urls == (dead,) and "the old one stays: ocean.ini: no such file" in caplog.text
            reload_key_servers(backend, list)  # an empty list
            assert backend.cluster_urls == (dead,)
            reload_key_servers(backend, lambda: [cluster_url])
            assert f"SIGHUP: key servers now: {cluster_url}" in caplog.text
        assert backend.cluster_urls == (cluster_url,)
        assert backend.file_urls(ddo, provider)[0]["url"] == "http://files.example/a.csv"
        assert backend.set_cluster_urls([cluster_url]) is False  # the same list again: no change
        with pytest.raises(OceanError, match="at least one key server URL"):
            backend.set_cluster_urls([])
    finally:
        backend.close()
