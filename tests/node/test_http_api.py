"""The node's real aiohttp app over loopback: request bodies are bounded whatever their framing."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.node.app import RunningNode, start_node
from ocean_secret_store.node.config import NodeConfig
from ocean_secret_store.protocol import http as codec

HOST = "127.0.0.1"
#: Upper bound of every test, and of every single wait inside one.
TIMEOUT = 30.0
WAIT = 10.0
LIMIT = codec.MAX_BODY_LENGTH


@contextlib.asynccontextmanager
async def single_node(tmp_path: Path) -> AsyncIterator[RunningNode]:
    """A one-node cluster (threshold 0 keys need no peer) with its HTTP API on a free port."""
    secret = random_scalar()
    public = "0x" + Point.generator_mul(secret).to_bytes().hex()
    config = NodeConfig.from_mapping(
        {
            "node": {
                "secret": f"0x{secret:064x}",
                "listen": f"{HOST}:0",
                "http_listen": f"{HOST}:0",
                "data_dir": "node",
            },
            "cluster": {public: f"{HOST}:1"},
            "acl": {"kind": "none"},
        },
        tmp_path,
    )
    node = await start_node(config)
    try:
        yield node
    finally:
        await node.stop()


def chunked(body: bytes, chunk_size: int = 4096) -> bytes:
    """``body`` in HTTP/1.1 chunked transfer coding: no Content-Length announces its size."""
    pieces = [body[i : i + chunk_size] for i in range(0, len(body), chunk_size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


async def raw_request(port: int, head: bytes, body: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one request byte for byte; its response as (status, lowercased headers, body)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(head + body)
        # The server may answer, and stop reading, before everything we sent has arrived.
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        async with asyncio.timeout(WAIT):
            status_line = await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            content = await reader.readexactly(int(headers.get("content-length", "0")))
    finally:
        writer.close()
    return int(status_line.split()[1]), headers, content


def generation_request(node: RunningNode, key_id: bytes, framing: str, body: bytes) -> tuple[bytes, bytes]:
    """A server key generation request (threshold 0) carrying ``body`` framed as ``framing``."""
    path = codec.server_key_generation_path(key_id, sign_raw_hash(random_scalar(), key_id), 0)
    head = f"POST {path} HTTP/1.1\r\nHost: {HOST}:{node.http_port}\r\nConnection: close\r\n"
    if framing == "chunked":
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode(), chunked(body)
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode(), body


Scenario = Callable[[RunningNode], Coroutine[Any, Any, None]]


def run_with_node(tmp_path: Path, scenario: Scenario) -> None:
    async def main() -> None:
        async with single_node(tmp_path) as node:
            await scenario(node)

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_oversized_body_gets_parity_empty_400_and_stores_nothing(tmp_path: Path, framing: str) -> None:
    # Regression: a chunked body over the limit was answered 413 with aiohttp's text, because
    # only the Content-Length header was checked before aiohttp's own limit fired.
    async def scenario(node: RunningNode) -> None:
        key_id = os.urandom(32)
        status, _, content = await raw_request(
            node.http_port, *generation_request(node, key_id, framing, b"x" * (LIMIT + 1))
        )
        assert (status, content) == (codec.BAD_REQUEST_STATUS, b"")
        assert not node.storage.contains(key_id)
        # The node still serves, and the same request with a body at the limit generates the key:
        # only the size was refused.
        status, _, content = await raw_request(node.http_port, *generation_request(node, key_id, framing, b"x" * LIMIT))
        assert status == 200, content
        assert codec.decode_point_response(content)
        assert node.storage.contains(key_id)

    run_with_node(tmp_path, scenario)
