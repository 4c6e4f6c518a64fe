"""A key server answers the key-versions query (node/key_versions.py) over its real HTTP API: to a
node of its address book only, page by page, each key with its active version and whether the
asking node holds it; nobody else learns anything."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
import requests

from ocean_secret_store.client.admin import AdminClient
from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.exceptions import AccessDenied
from ocean_secret_store.node.app import start_node
from ocean_secret_store.node.config import NodeConfig
from ocean_secret_store.node.storage import KeyShare, KeyVersion
from ocean_secret_store.protocol import http as codec
from ocean_secret_store.protocol import key_versions as kv

HOST = "127.0.0.1"


def _share(holders: list[bytes], epoch: int = 0) -> KeyShare:
    return KeyShare(author=os.urandom(20), threshold=1, public=Point.generator_mul(random_scalar()),
                    common_point=None, encrypted_point=None,
                    versions=(KeyVersion.new({n: random_scalar() for n in holders}, random_scalar(), epoch=epoch),))


def test_a_node_tells_a_peer_its_key_versions_and_nobody_else(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kv, "PAGE", 4)  # three pages of ten keys
    secret, peer_secret = random_scalar(), random_scalar()
    me, peer = Point.generator_mul(secret).to_bytes(), Point.generator_mul(peer_secret).to_bytes()
    config = NodeConfig.from_mapping({
        "node": {"secret": f"0x{secret:064x}", "listen": f"{HOST}:0", "http_listen": f"{HOST}:0", "data_dir": "n"},
        "cluster": {"0x" + me.hex(): f"{HOST}:1", "0x" + peer.hex(): f"{HOST}:1"},  # the peer never connects
        "acl": {"kind": "none"},
    }, tmp_path)

    async def scenario() -> None:
        node = await start_node(config)
        try:
            shared = {os.urandom(32): _share([me, peer], epoch=i % 3) for i in range(7)}
            shared = {k: v if i % 2 else v.with_document_key(Point.generator_mul(3), Point.generator_mul(5))
                      for i, (k, v) in enumerate(shared.items())}
            alone = {os.urandom(32): _share([me, Point.generator_mul(random_scalar()).to_bytes()]) for _ in range(3)}
            for key_id, share in {**shared, **alone}.items():
                node.storage.insert(key_id, share)
            url = f"http://{HOST}:{node.http_port}"
            with AdminClient(url) as client:
                page = await asyncio.to_thread(client.key_versions, peer_secret)
                assert page.node_id == me and set(page.servers_set) == {me, peer} and not page.more
                assert [k.key_id for k in page.keys] == sorted([*shared, *alone])
                for key in page.keys:
                    record = {**shared, **alone}[key.key_id]
                    assert (key.version, key.epoch, key.holder, key.document_key) == (
                        record.versions[0].hash, record.versions[0].epoch, key.key_id in shared,
                        record.common_point is not None)
                with pytest.raises(AccessDenied):  # a key that is no node of the cluster
                    await asyncio.to_thread(client.key_versions, random_scalar())
            expired = kv.request_path(peer_secret, me, bytes(32), int(time.time()) - 1)
            answer = await asyncio.to_thread(requests.get, url + expired, timeout=10)
            assert (answer.status_code, answer.content) == codec.error_response(AccessDenied())
            malformed = await asyncio.to_thread(requests.get, url + "/admin/key_versions/00/1/00", timeout=10)
            assert (malformed.status_code, malformed.content) == (codec.BAD_REQUEST_STATUS, b"")
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))
