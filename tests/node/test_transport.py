"""Node-to-node channels and their connection manager over real loopback sockets: handshake, framing,
refusals, reconnection."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections import defaultdict
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Self

import pytest
from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.crypto.signatures import sign_raw_hash, verify_raw_hash
from ocean_secret_store.exceptions import InvalidNodeId, NodeDisconnected, SecretStoreError, SerializationError
from ocean_secret_store.node import channel as ch
from ocean_secret_store.node import transport as tr
from ocean_secret_store.node.channel import (
    FRAME_OVERHEAD,
    Channel,
    FrameTooLarge,
    HandshakeFailed,
    PeerRefused,
    accept_channel,
    handshake,
    open_channel,
)
from ocean_secret_store.node.transport import Transport

HOST = "127.0.0.1"
#: Placeholder address for lower-id peers, which are never dialed.
NEVER_DIALED = (HOST, 9)
#: Upper bound of every test (a hang fails the test instead of blocking the suite).
TEST_TIMEOUT = 30.0
#: Bound of every single wait inside a test.
WAIT = 10.0


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT))


def node_keys(n: int) -> list[tuple[int, bytes]]:
    """``n`` fresh (secret, node id) pairs sorted by id, so index 0 dials everyone else."""
    keys = []
    for _ in range(n):
        secret = random_scalar()
        keys.append((secret, Point.generator_mul(secret).to_bytes()))
    return sorted(keys, key=lambda k: k[1])


async def eventually(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


class Inbox:
    """An on_message handler recording (peer, payload) per peer."""

    def __init__(self) -> None:
        self.by_peer: dict[bytes, list[bytes]] = defaultdict(list)

    def __call__(self, peer: bytes, payload: bytes) -> None:
        self.by_peer[peer].append(payload)

    def total(self) -> int:
        return sum(len(v) for v in self.by_peer.values())


def seal_data_frame(channel: Channel, payload: bytes) -> bytes:
    """A data frame's wire bytes from ``channel``'s send direction, for the test to write (or tamper
    with) itself; the channel's send counter advances, so the test owns the stream from then on."""
    return channel._tx.seal(ch.FRAME_DATA, payload)


async def read_until_eof(reader: asyncio.StreamReader) -> None:
    """Drain a raw stream until the other side closes it (bounded)."""
    async with asyncio.timeout(WAIT):
        while await reader.read(65536):
            pass


class Server:
    """A listening Transport at the higher id and a lower-id client identity it accepts."""

    def __init__(self, **transport_options: Any) -> None:
        (self.client_secret, self.client_id), (self.secret, self.id) = node_keys(2)
        self.inbox = Inbox()
        self.transport = Transport(
            self.secret, listen=(HOST, 0), peers={self.client_id: NEVER_DIALED}, on_message=self.inbox,
            **transport_options,
        )

    async def __aenter__(self) -> Self:
        await self.transport.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.transport.stop()

    async def raw_client(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Channel]:
        """A client owning the raw stream after a real handshake with the module's own helpers."""
        reader, writer = await asyncio.open_connection(HOST, self.transport.port)
        channel = await handshake(
            reader, writer, node_secret=self.client_secret, allowed_peers={self.id}, initiator=True,
            expected_peer=self.id,
        )
        await eventually(lambda: self.transport.is_connected(self.client_id))
        return reader, writer, channel

    async def assert_still_serving(self) -> None:
        """A well-behaved client can still connect and be heard after whatever happened before."""
        await eventually(lambda: not self.transport.is_connected(self.client_id))
        before = len(self.inbox.by_peer[self.client_id])
        channel = await open_channel(
            HOST, self.transport.port, node_secret=self.client_secret, allowed_peers={self.id},
            expected_peer=self.id,
        )
        try:
            await channel.send(b"still serving")
            await eventually(lambda: len(self.inbox.by_peer[self.client_id]) > before)
            assert self.inbox.by_peer[self.client_id][-1] == b"still serving"
        finally:
            channel.abort()
            await channel.wait_closed()


async def start_mesh(
    keys: list[tuple[int, bytes]],
    handlers: Sequence[tr.MessageHandler],
    **options: Any,
) -> list[Transport]:
    """Start one Transport per key, highest id first so every dialed address is already bound."""
    transports: dict[int, Transport] = {}
    for index in reversed(range(len(keys))):
        peers = {
            node_id: (HOST, transports[j].port) if j > index else NEVER_DIALED
            for j, (_, node_id) in enumerate(keys) if j != index
        }
        transport = Transport(
            keys[index][0], listen=(HOST, 0), peers=peers, on_message=handlers[index], **options
        )
        await transport.start()
        transports[index] = transport
    return [transports[i] for i in range(len(keys))]


async def stop_all(transports: list[Transport]) -> None:
    await asyncio.gather(*(t.stop() for t in transports))


# -- a working cluster --------------------------------------------------------------------------


def test_three_node_mesh_exchanges_messages_both_ways_in_order() -> None:
    async def scenario() -> None:
        keys = node_keys(3)
        inboxes = [Inbox() for _ in keys]
        nodes = await start_mesh(keys, inboxes)
        try:
            for node in nodes:
                assert await node.wait_connected(timeout=WAIT)
            ids = [k[1] for k in keys]
            assert nodes[0].connected_peers() == frozenset(ids[1:])
            count = 40

            async def talk(i: int, j: int) -> None:
                for n in range(count):
                    await nodes[i].send(ids[j], f"{i}->{j} #{n}".encode())

            await asyncio.gather(*(talk(i, j) for i in range(3) for j in range(3) if i != j))
            await eventually(lambda: all(inbox.total() == 2 * count for inbox in inboxes))
            for j, inbox in enumerate(inboxes):
                for i in range(3):
                    if i != j:
                        assert inbox.by_peer[ids[i]] == [f"{i}->{j} #{n}".encode() for n in range(count)]
        finally:
            await stop_all(nodes)
        assert all(not node.connected_peers() for node in nodes)

    run(scenario())


def test_large_payload_up_to_the_limit_and_typed_error_above_it() -> None:
    async def scenario() -> None:
        keys = node_keys(2)
        inboxes = [Inbox(), Inbox()]
        nodes = await start_mesh(keys, inboxes, max_frame=4096)
        try:
            assert await nodes[0].wait_connected(timeout=WAIT)
            big = secrets.token_bytes(4096)
            await nodes[0].send(keys[1][1], big)
            await eventually(lambda: inboxes[1].total() == 1)
            assert inboxes[1].by_peer[keys[0][1]] == [big]
            with pytest.raises(FrameTooLarge) as info:
                await nodes[0].send(keys[1][1], big + b"x")
            assert isinstance(info.value, SerializationError)
            assert nodes[0].is_connected(keys[1][1])
        finally:
            await stop_all(nodes)

    run(scenario())


def test_send_to_a_peer_that_is_not_connected_raises_node_disconnected() -> None:
    async def scenario() -> None:
        (secret, _), (_, unreachable) = node_keys(2)
        closed_port = await _closed_port()
        node = Transport(secret, listen=None, peers={unreachable: (HOST, closed_port)}, on_message=Inbox())
        await node.start()
        try:
            assert not await node.wait_connected(timeout=0.3)
            with pytest.raises(NodeDisconnected):
                await node.send(unreachable, b"hello")
        finally:
            await node.stop()

    run(scenario())


async def _closed_port() -> int:
    server = await asyncio.start_server(lambda r, w: None, HOST, 0)
    port = int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()
    return port


def test_on_message_raising_does_not_kill_the_link(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        keys = node_keys(2)
        received: list[bytes] = []

        async def flaky(peer: bytes, payload: bytes) -> None:
            received.append(payload)
            if payload == b"boom":
                raise RuntimeError("handler failure")

        nodes = await start_mesh(keys, [Inbox(), flaky])
        try:
            assert await nodes[0].wait_connected(timeout=WAIT)
            for payload in (b"before", b"boom", b"after"):
                await nodes[0].send(keys[1][1], payload)
            await eventually(lambda: len(received) == 3)
            assert received == [b"before", b"boom", b"after"]
            assert nodes[0].is_connected(keys[1][1]) and nodes[1].is_connected(keys[0][1])
        finally:
            await stop_all(nodes)

    with caplog.at_level(logging.ERROR, logger=tr.__name__):
        run(scenario())
    assert any("on_message handler raised" in r.getMessage() for r in caplog.records)


def test_connect_and_disconnect_callbacks_and_idle_pings_stay_invisible() -> None:
    async def scenario() -> None:
        keys = node_keys(2)
        events: list[tuple[str, bytes]] = []
        inboxes = [Inbox(), Inbox()]
        nodes = await start_mesh(
            keys, inboxes, keepalive_interval=0.05,
            on_connected=lambda p: events.append(("up", p)),
            on_disconnected=lambda p: events.append(("down", p)),
        )
        try:
            assert await nodes[0].wait_connected(timeout=WAIT)
            await eventually(lambda: len(events) == 2)
            # Many keep-alive intervals of idleness: pings and pongs flow, the link stays, and
            # nothing reaches the application.
            await asyncio.sleep(0.5)
            assert nodes[0].is_connected(keys[1][1]) and nodes[1].is_connected(keys[0][1])
            assert inboxes[0].total() == inboxes[1].total() == 0
            assert sorted(events) == sorted([("up", keys[0][1]), ("up", keys[1][1])])
        finally:
            await stop_all(nodes)
        downs = sorted(e for e in events if e[0] == "down")
        assert downs == sorted([("down", keys[0][1]), ("down", keys[1][1])])

    run(scenario())


def test_lower_id_side_reconnects_after_the_peer_restarts_on_the_same_port() -> None:
    async def scenario() -> None:
        (low_secret, low_id), (high_secret, high_id) = node_keys(2)
        high_inbox, low_inbox = Inbox(), Inbox()
        high = Transport(high_secret, listen=(HOST, 0), peers={low_id: NEVER_DIALED}, on_message=high_inbox)
        await high.start()
        port = high.port
        low = Transport(low_secret, listen=(HOST, 0), peers={high_id: (HOST, port)}, on_message=low_inbox)
        await low.start()
        try:
            assert await low.wait_connected(timeout=WAIT)
            await high.stop()
            await eventually(lambda: not low.is_connected(high_id))
            with pytest.raises(NodeDisconnected):
                await low.send(high_id, b"lost")
            high = Transport(
                high_secret, listen=(HOST, port), peers={low_id: NEVER_DIALED}, on_message=high_inbox
            )
            await high.start()
            assert await low.wait_connected(timeout=WAIT)
            assert await high.wait_connected(timeout=WAIT)
            await low.send(high_id, b"after restart")
            await high.send(low_id, b"welcome back")
            await eventually(lambda: high_inbox.total() == 1 and low_inbox.total() == 1)
            assert high_inbox.by_peer[low_id] == [b"after restart"]
            assert low_inbox.by_peer[high_id] == [b"welcome back"]
        finally:
            await stop_all([low, high])

    run(scenario())


def test_silent_peer_is_dropped_after_three_keepalive_intervals() -> None:
    async def scenario() -> None:
        async with Server(keepalive_interval=0.1) as server:
            reader, writer, _ = await server.raw_client()
            # Read the raw stream without ever answering a ping: the server must give up on us.
            await read_until_eof(reader)
            await eventually(lambda: not server.transport.is_connected(server.client_id))
            assert server.inbox.total() == 0
            writer.close()
            await server.assert_still_serving()

    run(scenario())


# -- refusals during the handshake ---------------------------------------------------------------


def test_peer_not_in_the_allowed_set_is_refused() -> None:
    async def scenario() -> None:
        async with Server() as server:
            stranger = random_scalar()
            with pytest.raises(HandshakeFailed):
                await open_channel(
                    HOST, server.transport.port, node_secret=stranger, allowed_peers={server.id},
                    expected_peer=server.id,
                )
            assert not server.transport.connected_peers()
            await server.assert_still_serving()

    run(scenario())


async def _accept_once(
    secret: int, allowed: set[bytes]
) -> tuple[asyncio.Server, asyncio.Future[Channel]]:
    """A bare listener running accept_channel on its first connection; the outcome lands in a future."""
    outcome: asyncio.Future[Channel] = asyncio.get_running_loop().create_future()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            channel = await accept_channel(reader, writer, node_secret=secret, allowed_peers=allowed)
            outcome.set_result(channel)
        except SecretStoreError as exc:
            outcome.set_exception(exc)

    return await asyncio.start_server(on_connect, HOST, 0), outcome


@pytest.mark.parametrize("case", ["unknown", "own id"])
def test_accept_channel_refuses_unknown_ids_and_our_own_id(case: str) -> None:
    async def scenario() -> None:
        (server_secret, server_id), (_, known_id) = node_keys(2)
        dialer_secret = random_scalar() if case == "unknown" else server_secret
        server, outcome = await _accept_once(server_secret, {known_id})
        try:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(HandshakeFailed):
                await open_channel(HOST, port, node_secret=dialer_secret, allowed_peers={server_id, known_id})
            with pytest.raises(PeerRefused):
                await asyncio.wait_for(outcome, WAIT)
        finally:
            server.close()
            await server.wait_closed()

    run(scenario())


def test_dialer_expecting_one_peer_but_reaching_another_refuses() -> None:
    async def scenario() -> None:
        (dialer_secret, dialer_id), (_, expected_id), (reached_secret, reached_id) = node_keys(3)
        server, outcome = await _accept_once(reached_secret, {dialer_id})
        try:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(PeerRefused):
                await open_channel(
                    HOST, port, node_secret=dialer_secret, allowed_peers={expected_id, reached_id},
                    expected_peer=expected_id,
                )
            # The responder never sees a completed handshake either.
            with pytest.raises(HandshakeFailed):
                await asyncio.wait_for(outcome, WAIT)
        finally:
            server.close()
            await server.wait_closed()

    run(scenario())


def test_dialer_refuses_a_responder_outside_its_allowed_set() -> None:
    async def scenario() -> None:
        (dialer_secret, dialer_id), (_, other_id), (responder_secret, _) = node_keys(3)
        server, outcome = await _accept_once(responder_secret, {dialer_id})
        try:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(PeerRefused):
                await open_channel(HOST, port, node_secret=dialer_secret, allowed_peers={other_id})
            with pytest.raises(HandshakeFailed):  # the responder saw the dialer leave mid-handshake
                await asyncio.wait_for(outcome, WAIT)
        finally:
            server.close()
            await server.wait_closed()

    run(scenario())


def _bad_hellos() -> dict[str, bytes]:
    ephemeral = Point.generator_mul(random_scalar()).to_bytes()
    node_id = Point.generator_mul(random_scalar()).to_bytes()
    return {
        "random bytes": secrets.token_bytes(ch.HELLO_SIZE),
        "http request": b"GET / HTTP/1.1\r\nHost: node\r\n\r\n",
        "wrong version": ch._HELLO.pack(ch.MAGIC, 99, node_id, ephemeral, bytes(32)),
        "id off the curve": ch._HELLO.pack(ch.MAGIC, ch.PROTOCOL_VERSION, b"\x01" * 64, ephemeral, bytes(32)),
        "nothing at all": b"",
    }


@pytest.mark.parametrize("name", list(_bad_hellos()))
def test_garbage_hello_is_refused(name: str) -> None:
    async def scenario() -> None:
        async with Server(connect_timeout=0.5) as server:
            reader, writer = await asyncio.open_connection(HOST, server.transport.port)
            writer.write(_bad_hellos()[name])
            await writer.drain()
            # A short hello stays open until the handshake deadline; a full bad one closes at once.
            await read_until_eof(reader)
            writer.close()
            assert not server.transport.connected_peers()
            await server.assert_still_serving()

    run(scenario())


class SpecDirection:
    """One frame direction written from the module docstring alone, independently of _FrameCipher.

    The keystream of frame n is rebuilt from its byte offset in the direction's single AES-CTR
    stream (a fresh cipher per frame, started at block offset // 16), which checks that the
    module really keeps one continuous keystream across frames of any length.
    """

    def __init__(self, enc_key: bytes, mac_key: bytes) -> None:
        self.enc_key, self.mac_key = enc_key, mac_key
        self.counter = 0
        self.offset = 0

    def _crypt(self, data: bytes) -> bytes:
        skip = self.offset % 16
        cipher = AES.new(self.enc_key, AES.MODE_CTR, nonce=b"", initial_value=self.offset // 16)
        out = cipher.encrypt(bytes(skip) + data)[skip:]
        self.offset += len(data)
        return out

    def _tag(self, header: bytes, ciphertext: bytes) -> bytes:
        message = self.counter.to_bytes(8, "big") + header + ciphertext
        return hmac.digest(self.mac_key, message, "sha256")[:16]

    def seal(self, frame_type: int, payload: bytes) -> bytes:
        header = (1 + len(payload) + 16).to_bytes(4, "big")
        ciphertext = self._crypt(bytes([frame_type]) + payload)
        tag = self._tag(header, ciphertext)
        self.counter += 1
        return header + ciphertext + tag

    async def read(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        header = await reader.readexactly(4)
        body = await reader.readexactly(int.from_bytes(header, "big"))
        ciphertext, tag = body[:-16], body[-16:]
        assert hmac.compare_digest(self._tag(header, ciphertext), tag)
        plain = self._crypt(ciphertext)
        self.counter += 1
        return plain[0], plain[1:]


async def spec_initiator(
    server: Server, claimed_id: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes, SpecDirection, SpecDirection]:
    """Send a hello claiming ``claimed_id`` and derive both directions as the docstring specifies."""
    reader, writer = await asyncio.open_connection(HOST, server.transport.port)
    ephemeral = random_scalar()
    hello = ch._HELLO.pack(
        ch.MAGIC, ch.PROTOCOL_VERSION, claimed_id, Point.generator_mul(ephemeral).to_bytes(),
        secrets.token_bytes(32),
    )
    writer.write(hello)
    peer_hello = await reader.readexactly(ch.HELLO_SIZE)
    transcript = hashlib.sha256(hello + peer_hello).digest()
    shared = (Point.from_bytes(peer_hello[70:134]) * ephemeral).x_bytes
    keys = HKDF(shared, 32, transcript, SHA256, num_keys=4, context=ch.KDF_INFO)
    assert not isinstance(keys, bytes)
    enc_ir, mac_ir, enc_ri, mac_ri = keys
    return reader, writer, transcript, SpecDirection(enc_ir, mac_ir), SpecDirection(enc_ri, mac_ri)


def test_frames_follow_the_documented_encrypt_then_mac_construction() -> None:
    async def scenario() -> None:
        async with Server() as server:
            reader, writer, transcript, tx, rx = await spec_initiator(server, server.client_id)
            frame_type, signature = await rx.read(reader)  # the responder's auth frame
            assert frame_type == ch.FRAME_AUTH
            responder_hash = hashlib.sha256(ch._LABEL_RESPONDER + transcript).digest()
            verify_raw_hash(Point.from_bytes(server.id), signature, responder_hash)
            initiator_hash = hashlib.sha256(ch._LABEL_INITIATOR + transcript).digest()
            own = sign_raw_hash(server.client_secret, initiator_hash)
            writer.write(tx.seal(ch.FRAME_AUTH, own))
            await eventually(lambda: server.transport.is_connected(server.client_id))
            # Lengths that leave the keystream mid-block between frames.
            payloads = [b"", b"a", secrets.token_bytes(20), secrets.token_bytes(33), secrets.token_bytes(100)]
            for payload in payloads:
                writer.write(tx.seal(ch.FRAME_DATA, payload))
            await eventually(lambda: server.inbox.total() == len(payloads))
            assert server.inbox.by_peer[server.client_id] == payloads
            for payload in payloads:
                await server.transport.send(server.client_id, payload)
            assert [await rx.read(reader) for _ in payloads] == [(ch.FRAME_DATA, p) for p in payloads]
            writer.close()
            await server.assert_still_serving()

    run(scenario())


def test_impostor_claiming_an_allowed_id_without_its_key_is_refused() -> None:
    async def scenario() -> None:
        async with Server() as server:
            # Somebody else's id, correct channel keys, but no node key to sign with.
            reader, writer, transcript, tx, _ = await spec_initiator(server, server.client_id)
            forged = sign_raw_hash(random_scalar(), hashlib.sha256(ch._LABEL_INITIATOR + transcript).digest())
            writer.write(tx.seal(ch.FRAME_AUTH, forged))
            await read_until_eof(reader)
            writer.close()
            assert not server.transport.connected_peers()
            await server.assert_still_serving()

    run(scenario())


def test_handshake_that_never_starts_times_out() -> None:
    async def scenario() -> None:
        async with Server(connect_timeout=0.2) as server:
            reader, writer = await asyncio.open_connection(HOST, server.transport.port)
            await read_until_eof(reader)  # we send nothing; the server's deadline closes the socket
            writer.close()
            await server.assert_still_serving()

    run(scenario())


# -- bad frames after a real handshake -----------------------------------------------------------


def test_replayed_frame_closes_the_connection() -> None:
    async def scenario() -> None:
        async with Server() as server:
            reader, writer, channel = await server.raw_client()
            frame = seal_data_frame(channel, b"pay once")
            writer.write(frame)
            writer.write(frame)
            await read_until_eof(reader)
            await eventually(lambda: not server.transport.is_connected(server.client_id))
            assert server.inbox.by_peer[server.client_id] == [b"pay once"]
            writer.close()
            await server.assert_still_serving()

    run(scenario())


def test_reordered_frames_close_the_connection() -> None:
    async def scenario() -> None:
        async with Server() as server:
            reader, writer, channel = await server.raw_client()
            first = seal_data_frame(channel, b"first")
            second = seal_data_frame(channel, b"second")
            writer.write(second + first)
            await read_until_eof(reader)
            assert server.inbox.total() == 0
            writer.close()
            await server.assert_still_serving()

    run(scenario())


@pytest.mark.parametrize("position", ["length header", "type byte", "payload", "tag"])
def test_forged_frame_closes_the_connection(position: str) -> None:
    async def scenario() -> None:
        async with Server() as server:
            reader, writer, channel = await server.raw_client()
            frame = bytearray(seal_data_frame(channel, b"transfer 10 tokens"))
            if position == "length header":
                # One byte shorter: the body then ends inside the tag, and the header is MACed.
                frame[:4] = (int.from_bytes(frame[:4], "big") - 1).to_bytes(4, "big")
            else:
                index = {"type byte": 4, "payload": 10, "tag": len(frame) - 1}[position]
                frame[index] ^= 0x01
            writer.write(bytes(frame))
            await read_until_eof(reader)
            assert server.inbox.total() == 0
            writer.close()
            await server.assert_still_serving()

    run(scenario())


def test_truncated_frame_then_eof_closes_the_connection() -> None:
    async def scenario() -> None:
        async with Server() as server:
            reader, writer, channel = await server.raw_client()
            frame = seal_data_frame(channel, b"x" * 100)
            writer.write(frame[: len(frame) // 2])
            writer.write_eof()
            await read_until_eof(reader)
            await eventually(lambda: not server.transport.is_connected(server.client_id))
            assert server.inbox.total() == 0
            writer.close()
            await server.assert_still_serving()

    run(scenario())


@pytest.mark.parametrize("length", [2**32 - 1, 1024 + FRAME_OVERHEAD + 1])
def test_oversized_length_header_closes_before_any_body_is_sent(length: int) -> None:
    async def scenario() -> None:
        async with Server(max_frame=1024) as server:
            reader, writer, _ = await server.raw_client()
            # Only the header: if the server waited for (or allocated) the body, no EOF would come.
            writer.write(length.to_bytes(4, "big"))
            await read_until_eof(reader)
            await eventually(lambda: not server.transport.is_connected(server.client_id))
            writer.close()
            await server.assert_still_serving()

    run(scenario())


def test_channel_refuses_to_send_an_oversized_payload() -> None:
    async def scenario() -> None:
        async with Server(max_frame=1024) as server:
            channel = await open_channel(
                HOST, server.transport.port, node_secret=server.client_secret, allowed_peers={server.id},
                expected_peer=server.id, max_frame=1024,
            )
            try:
                with pytest.raises(FrameTooLarge):
                    await channel.send(b"\0" * 1025)
                await channel.send(b"\0" * 1024)
                await eventually(lambda: server.inbox.total() == 1)
            finally:
                channel.abort()
                await channel.wait_closed()

    run(scenario())


def test_pending_handshakes_are_bounded() -> None:
    async def scenario() -> None:
        async with Server(max_pending_handshakes=1) as server:
            idle_reader, idle_writer = await asyncio.open_connection(HOST, server.transport.port)
            await eventually(lambda: server.transport._pending_handshakes == 1)
            reader, writer = await asyncio.open_connection(HOST, server.transport.port)
            await read_until_eof(reader)  # refused at once, while the idle one is still pending
            writer.close()
            assert server.transport._pending_handshakes == 1
            idle_writer.close()
            await read_until_eof(idle_reader)
            await eventually(lambda: server.transport._pending_handshakes == 0)
            await server.assert_still_serving()

    run(scenario())


class RecordingKeystream:
    """Stands in for a direction's AES-CTR object and records every use."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def decrypt(self, data: bytes) -> bytes:
        self.calls += 1
        return bytes(self.inner.decrypt(data))


def test_a_frame_failing_its_mac_never_touches_the_receive_keystream() -> None:
    keys = [secrets.token_bytes(32) for _ in range(2)]
    tx, rx = ch._FrameCipher(*keys), ch._FrameCipher(*keys)
    spy = RecordingKeystream(rx._keystream)
    rx._keystream = spy  # type: ignore[assignment]  # a recording stand-in for the CTR object
    good = tx.seal(ch.FRAME_DATA, b"first")
    assert rx.open(good[:4], good[4:]) == (ch.FRAME_DATA, b"first")
    assert spy.calls == 1
    second = bytearray(tx.seal(ch.FRAME_DATA, b"second"))
    second[-1] ^= 0x80
    with pytest.raises(ch.FrameRejected):
        rx.open(bytes(second[:4]), bytes(second[4:]))
    assert spy.calls == 1  # MAC checked first: no keystream consumed by the forgery
    # The direction stays dead: not even the genuine frame is accepted afterwards.
    second[-1] ^= 0x80
    with pytest.raises(ch.FrameRejected):
        rx.open(bytes(second[:4]), bytes(second[4:]))
    assert spy.calls == 1


def test_directions_derived_by_the_two_sides_match_and_differ_from_each_other() -> None:
    shared, transcript = secrets.token_bytes(32), secrets.token_bytes(32)
    i_tx, i_rx = ch._frame_ciphers(shared, transcript, initiator=True)
    r_tx, r_rx = ch._frame_ciphers(shared, transcript, initiator=False)
    for sender, receiver in ((i_tx, r_rx), (r_tx, i_rx)):
        frame = sender.seal(ch.FRAME_DATA, b"hello")
        assert receiver.open(frame[:4], frame[4:]) == (ch.FRAME_DATA, b"hello")
    # A frame reflected back to its sender is not accepted in the other direction.
    reflected = i_tx.seal(ch.FRAME_DATA, b"echo")
    with pytest.raises(ch.FrameRejected):
        i_rx.open(reflected[:4], reflected[4:])


# -- changing the peers of a running transport ---------------------------------------------------


class Events:
    """on_connected / on_disconnected handlers recording ("up" | "down", peer) in order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, bytes]] = []

    def up(self, peer: bytes) -> None:
        self.log.append(("up", peer))

    def down(self, peer: bytes) -> None:
        self.log.append(("down", peer))

    def of(self, peer: bytes) -> list[str]:
        return [event for event, p in self.log if p == peer]


def test_a_peer_added_at_run_time_on_both_sides_connects_and_talks() -> None:
    async def scenario() -> None:
        # The newcomer's id lies between the two running nodes': it dials one and is dialed by the other.
        keys = node_keys(3)
        ids = [k[1] for k in keys]
        inboxes = [Inbox() for _ in keys]
        events = [Events() for _ in keys]
        low = Transport(keys[0][0], listen=(HOST, 0), peers={}, on_message=inboxes[0],
                        on_connected=events[0].up, on_disconnected=events[0].down)
        high = Transport(keys[2][0], listen=(HOST, 0), peers={}, on_message=inboxes[2],
                         on_connected=events[2].up, on_disconnected=events[2].down)
        nodes = [low, high]
        try:
            await high.start()
            await low.start()
            low.set_peers({ids[2]: (HOST, high.port)})
            high.set_peers({ids[0]: NEVER_DIALED})
            assert await low.wait_connected(timeout=WAIT)
            # The newcomer lists everyone; the running nodes learn of it only later.
            newcomer = Transport(keys[1][0], listen=(HOST, 0), peers={ids[0]: NEVER_DIALED, ids[2]: (HOST, high.port)},
                                 on_message=inboxes[1], on_connected=events[1].up, on_disconnected=events[1].down)
            nodes.append(newcomer)
            await newcomer.start()
            # Its dial to the high node is refused (unknown id) until that node is told of it.
            await eventually(lambda: newcomer.connection_states()[ids[2]] == "missing")
            assert not newcomer.connected_peers()
            own = {ids[2]: (HOST, 9)}  # our own id in the map is ignored
            high.set_peers({ids[0]: NEVER_DIALED, ids[1]: NEVER_DIALED, **own})
            low.set_peers({ids[1]: (HOST, newcomer.port), ids[2]: (HOST, high.port)})
            # Known either way only once connected (or found unreachable), as at start.
            assert low.connection_states() == {ids[1]: "connecting", ids[2]: "connected"}
            assert high.connection_states() == {ids[0]: "connected", ids[1]: "connecting"}
            for node in nodes:
                assert await node.wait_connected(timeout=WAIT)
            assert newcomer.connected_peers() == {ids[0], ids[2]}
            by_key = {0: low, 1: newcomer, 2: high}
            for i, j in ((0, 1), (1, 0), (1, 2), (2, 1)):
                await by_key[i].send(ids[j], f"{i}->{j}".encode())
            await eventually(lambda: inboxes[1].total() == 2 and inboxes[0].total() == inboxes[2].total() == 1)
            assert inboxes[1].by_peer == {ids[0]: [b"0->1"], ids[2]: [b"2->1"]}
            assert inboxes[0].by_peer[ids[1]] == [b"1->0"] and inboxes[2].by_peer[ids[1]] == [b"1->2"]
            # The link between the running nodes was never touched.
            assert low.is_connected(ids[2]) and events[0].of(ids[2]) == ["up"] == events[2].of(ids[0])
            assert events[0].of(ids[1]) == events[2].of(ids[1]) == ["up"]
        finally:
            await stop_all(nodes)

    run(scenario())


def test_a_removed_peer_is_disconnected_and_refused() -> None:
    async def scenario() -> None:
        keys = node_keys(3)
        ids = [k[1] for k in keys]
        events = Events()
        nodes = await start_mesh(keys, [Inbox() for _ in keys], on_disconnected=events.down)
        try:
            for node in nodes:
                assert await node.wait_connected(timeout=WAIT)
            middle = nodes[1]  # dialed by node 0, dials node 2
            middle.set_peers({})
            # At once: no link, no state, no sending.
            assert middle.connected_peers() == frozenset() and middle.connection_states() == {}
            with pytest.raises(NodeDisconnected):
                await middle.send(ids[0], b"gone")
            # Both links are closed: each other side notices and hears on_disconnected.
            await eventually(lambda: not nodes[0].is_connected(ids[1]) and not nodes[2].is_connected(ids[1]))
            await eventually(lambda: sorted(p for e, p in events.log) == sorted([ids[0], ids[1], ids[1], ids[2]]))
            assert set(events.log) == {("down", ids[0]), ("down", ids[1]), ("down", ids[2])}
            # Node 0 keeps dialing: refused. Node 2 is no longer dialed: after the grace, missing for it.
            await eventually(lambda: nodes[0].connection_states()[ids[1]] == "missing")
            await eventually(lambda: nodes[2].connection_states()[ids[1]] == "missing")
            await asyncio.sleep(4 * tr.DEFAULT_BACKOFF_MAX)  # several re-dials of node 0
            assert not middle.connected_peers() and not nodes[0].is_connected(ids[1])
            with pytest.raises(HandshakeFailed):
                await open_channel(HOST, middle.port, node_secret=keys[0][0], allowed_peers={ids[1]},
                                   expected_peer=ids[1])
            assert not middle._dialers  # its dial loop to node 2 ended
            # The rest of the mesh is untouched.
            assert nodes[0].is_connected(ids[2]) and nodes[2].is_connected(ids[0])
            assert len(events.log) == 4
        finally:
            await stop_all(nodes)

    run(scenario())


def test_a_peer_that_moved_is_redialed_at_its_new_address() -> None:
    async def scenario() -> None:
        (low_secret, low_id), (high_secret, high_id) = node_keys(2)
        events = Events()
        old_inbox, new_inbox = Inbox(), Inbox()
        low = Transport(low_secret, listen=None, peers={}, on_message=Inbox(),
                        on_connected=events.up, on_disconnected=events.down)
        old_place = Transport(high_secret, listen=(HOST, 0), peers={low_id: NEVER_DIALED}, on_message=old_inbox)
        new_place = Transport(high_secret, listen=(HOST, 0), peers={low_id: NEVER_DIALED}, on_message=new_inbox)
        nodes = [old_place, new_place, low]
        try:
            await old_place.start()
            await new_place.start()
            low.set_peers({high_id: (HOST, old_place.port)})  # before start: the table only
            await low.start()
            assert await low.wait_connected(timeout=WAIT) and await old_place.wait_connected(timeout=WAIT)
            low.set_peers({high_id: (HOST, new_place.port)})
            assert not low.is_connected(high_id)  # the old link is closed at once
            assert low.connection_states() == {high_id: "connecting"}
            assert await new_place.wait_connected(timeout=WAIT) and await low.wait_connected(timeout=WAIT)
            await low.send(high_id, b"at the new address")
            await eventually(lambda: new_inbox.total() == 1)
            await eventually(lambda: not old_place.connected_peers())
            await asyncio.sleep(4 * tr.DEFAULT_BACKOFF_MAX)
            assert not old_place.connected_peers() and old_inbox.total() == 0  # never re-dialed
            assert events.of(high_id) == ["up", "down", "up"]
        finally:
            await stop_all(nodes)

    run(scenario())


def test_set_peers_refuses_an_id_that_is_not_a_public_key_and_changes_nothing() -> None:
    async def scenario() -> None:
        (secret, _), (_, peer) = node_keys(2)
        node = Transport(secret, listen=(HOST, 0), peers={peer: NEVER_DIALED}, on_message=Inbox())
        async with node:
            with pytest.raises(InvalidNodeId):
                node.set_peers({peer: NEVER_DIALED, b"\x01" * 64: NEVER_DIALED})
            assert list(node.connection_states()) == [peer]

    run(scenario())
