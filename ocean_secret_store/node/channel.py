"""The secure node-to-node channel: handshake, key derivation, framing and sealing of one TCP stream.

The wire format is ours (architecture.md). Which node dials whom, reconnecting and the peer
table belong to the connection manager in :mod:`ocean_secret_store.node.transport`; this module
turns one open stream pair into a mutually authenticated, encrypted :class:`Channel`.

Handshake (one deadline for the whole exchange, default 5 s)::

    hello     = "OSSN" || version u16 BE (= 2) || node_id (64) || ephemeral_public (64) || random (32)
    initiator -> responder   hello_I
    responder                refuses (closes) unless node_id is allowed and is not its own
    responder -> initiator   hello_R || auth_R
    initiator                refuses unless node_id is the expected peer; verifies auth_R
    initiator -> responder   auth_I                        (the responder verifies it)

    transcript = SHA-256(hello_I || hello_R)
    z          = ecdh_x(ephemeral_secret, peer_ephemeral_public)
    enc_IR, mac_IR, enc_RI, mac_RI
               = HKDF-SHA256(z, salt = transcript, info = KDF_INFO), four 32-byte keys
    auth_X     = the first frame of direction X: type AUTH || sign_raw_hash(node_secret,
                 SHA-256(role label of X || transcript))

Each signature covers both hellos (both node ids, both ephemerals, both randoms), so it cannot
be replayed into another connection or reflected into the other role.

Frames (after the handshake, both directions; encrypt-then-MAC)::

    length u32 BE || ciphertext || tag
    ciphertext = AES-256-CTR(enc key of the direction)(type (1) || payload)
    tag        = HMAC-SHA256(mac key of the direction, counter u64 BE || length || ciphertext)[:16]

Each direction has ONE AES-CTR keystream for the life of the channel (128-bit block counter
from 0): a frame is encrypted with the next ``len(ciphertext)`` keystream bytes, which TCP's
ordering keeps in step on both ends. The frame counter starts at 0 (the auth frame) and is
never sent. The tag is checked (constant time) BEFORE anything is decrypted, so a forged frame
never touches the receive keystream; a replayed, reordered, forged or truncated frame fails it
and the connection is closed. The length header is authenticated by the tag, and a header
above ``max_frame + FRAME_OVERHEAD`` closes the connection before the body is read.

Why not a per-frame AEAD: protocol v1 sealed each frame with AES-256-GCM under the counter as
nonce, and pycryptodome builds a fresh GCM object (key schedule and GHASH tables) per call, so
most of a frame's cost was cipher set-up (the cluster sends 4-8 frames per retrieval). Keeping
one CTR object per direction and copying a pre-keyed HMAC per frame took seal+open of a
300-byte frame from ~200 µs to ~14 µs, and a loopback round trip from ~0.52 to ~0.22 ms (p50),
measured on the 2-core development machine. Keys are fresh per connection and per direction
(ephemeral ECDH, both randoms in the salt), so no keystream is ever reused.

Frame types: DATA (delivered), PING (answered with PONG), PONG, AUTH (handshake only).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import struct
import time
from collections import deque
from collections.abc import Collection, Iterable
from typing import Final, NoReturn

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

from ..crypto.curve import Point, Rng, Scalar, ecdh_x, random_scalar
from ..crypto.signatures import SIGNATURE_LENGTH, sign_raw_hash, verify_raw_hash
from ..exceptions import (
    InternalError,
    InvalidMessage,
    InvalidPoint,
    InvalidSignature,
    NodeDisconnected,
    SecretStoreError,
    SerializationError,
)

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_MAX_FRAME",
    "FRAME_OVERHEAD",
    "Channel",
    "FrameRejected",
    "FrameTooLarge",
    "HandshakeFailed",
    "NodeSecret",
    "PeerRefused",
    "abort_writer",
    "accept_channel",
    "check_max_frame",
    "check_payload_size",
    "describe_error",
    "handshake",
    "node_secret_value",
    "open_channel",
    "short_id",
]

logger = logging.getLogger(__name__)

MAGIC: Final = b"OSSN"
#: 2: encrypt-then-MAC frames (AES-256-CTR + HMAC-SHA256); 1 was per-frame AES-256-GCM.
PROTOCOL_VERSION: Final = 2
_HELLO: Final = struct.Struct(">4sH64s64s32s")
HELLO_SIZE: Final = _HELLO.size
_LENGTH: Final = struct.Struct(">I")
_MAX_LENGTH: Final = 2**32 - 1
_TAG_SIZE: Final = 16  # HMAC-SHA256 truncated to 128 bits
_KEY_SIZE: Final = 32
_COUNTER: Final = struct.Struct(">Q")

#: Default largest payload of a data frame (bytes).
DEFAULT_MAX_FRAME: Final = 1 << 20
#: Bytes a frame body carries beyond its payload: the type byte and the MAC tag.
FRAME_OVERHEAD: Final = 1 + _TAG_SIZE
DEFAULT_HANDSHAKE_TIMEOUT: Final = 5.0

FRAME_DATA: Final = 0
FRAME_PING: Final = 1
FRAME_PONG: Final = 2
FRAME_AUTH: Final = 3
_AUTH_BODY: Final = FRAME_OVERHEAD + SIGNATURE_LENGTH
_MAX_COUNTER: Final = 2**64 - 1

KDF_INFO: Final = b"ocean-secret-store/node-channel/v2"
_LABEL_INITIATOR: Final = b"ocean-secret-store/node-auth/v1/initiator"
_LABEL_RESPONDER: Final = b"ocean-secret-store/node-auth/v1/responder"

NodeSecret = int | Scalar


# -- errors -------------------------------------------------------------------------------------
# Local refinements of the one tree (as node/acl.py does); each keeps its Parity variant, so
# the cluster layer sees NodeDisconnected / InvalidMessage / Serde as Parity would.


class HandshakeFailed(NodeDisconnected):
    """A channel could not be established: timeout, early close, malformed hello or bad signature."""


class PeerRefused(HandshakeFailed):
    """The peer's node id is not allowed, is not the expected peer, or is our own."""


class FrameRejected(InvalidMessage):
    """A frame failed authentication (forged, replayed, reordered, corrupted) or had an unknown type."""


class FrameTooLarge(SerializationError):
    """A payload or a received length header exceeds the channel's frame size limit."""


def describe_error(exc: BaseException) -> str:
    """Loggable text of one of our errors (KeyServerError's str() is Parity's fixed text)."""
    detail = getattr(exc, "detail", None)
    return str(detail) if detail else str(exc) or type(exc).__name__


def short_id(node_id: bytes) -> str:
    """Short printable form of a (public) node id for logs."""
    return "0x" + node_id[:4].hex() + "…"


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def node_secret_value(node_secret: NodeSecret) -> int:
    """The node key as an int, checked to be a valid secp256k1 private key."""
    if isinstance(node_secret, Scalar):
        return node_secret.value
    return Scalar(node_secret).value  # validates 1 <= s < n without echoing the value


def check_payload_size(payload: bytes, max_frame: int) -> None:
    """FrameTooLarge unless ``payload`` fits in one data frame of at most ``max_frame`` bytes."""
    if len(payload) > max_frame:
        raise FrameTooLarge(f"payload of {len(payload)} bytes exceeds the frame limit of {max_frame}")


def check_max_frame(max_frame: int) -> None:
    """InternalError unless ``max_frame`` is a frame size the length header can carry."""
    if not 0 < max_frame <= _MAX_LENGTH - FRAME_OVERHEAD:
        raise InternalError(f"max_frame must be in [1, {_MAX_LENGTH - FRAME_OVERHEAD}], got {max_frame}")


def abort_writer(writer: asyncio.StreamWriter) -> None:
    """Drop a stream at once, discarding anything buffered."""
    # abort(), not close(): nothing buffered for a refused or broken peer is worth flushing,
    # and close() could wait forever on a peer that stopped reading.
    transport = writer.transport
    if transport is not None:
        transport.abort()


class _FrameCipher:
    """Encrypt-then-MAC state of one direction: one AES-256-CTR keystream and one keyed HMAC.

    Both objects are built once per channel; per frame only the keystream advances and the
    pre-keyed HMAC is copied (no key schedule, no table set-up on the hot path).
    """

    __slots__ = ("_counter", "_dead", "_keystream", "_mac")

    def __init__(self, enc_key: bytes, mac_key: bytes) -> None:
        if len(enc_key) != _KEY_SIZE or len(mac_key) != _KEY_SIZE:
            raise InternalError(f"frame keys must be {_KEY_SIZE} bytes each")
        # nonce=b"" makes the whole 16-byte block the counter: 2**128 blocks before wrapping.
        self._keystream = AES.new(enc_key, AES.MODE_CTR, nonce=b"", initial_value=0)
        self._mac = hmac.new(mac_key, digestmod=hashlib.sha256)
        self._counter = 0
        self._dead = False

    def __repr__(self) -> str:
        return "_FrameCipher(<keys>)"

    def _check_counter(self) -> None:
        if self._counter > _MAX_COUNTER:
            raise FrameRejected("the frame counter is exhausted; the channel must be re-established")

    def _tag(self, header: bytes, ciphertext: bytes | memoryview) -> bytes:
        mac = self._mac.copy()
        mac.update(_COUNTER.pack(self._counter) + header)
        mac.update(ciphertext)
        return mac.digest()[:_TAG_SIZE]

    def seal(self, frame_type: int, payload: bytes) -> bytes:
        self._check_counter()
        header = _LENGTH.pack(len(payload) + FRAME_OVERHEAD)
        ciphertext = self._keystream.encrypt(bytes((frame_type,)) + payload)
        tag = self._tag(header, ciphertext)
        self._counter += 1
        return b"".join((header, ciphertext, tag))

    def open(self, header: bytes, body: bytes) -> tuple[int, bytes]:
        if self._dead:
            raise FrameRejected("the receive direction already rejected a frame")
        self._check_counter()
        view = memoryview(body)
        ciphertext = view[:-_TAG_SIZE]
        # MAC first, decrypt only if it verifies: a rejected frame never consumes keystream,
        # and the direction refuses everything after it (the channel is closed anyway).
        if len(body) < FRAME_OVERHEAD or not hmac.compare_digest(
            self._tag(header, ciphertext), view[-_TAG_SIZE:]
        ):
            self._dead = True
            raise FrameRejected("frame failed authentication (forged, replayed, reordered or corrupted)")
        plain = self._keystream.decrypt(ciphertext)
        self._counter += 1
        return plain[0], plain[1:]


# -- channel ------------------------------------------------------------------------------------


class Channel:
    """One established, mutually authenticated connection to ``peer_id``.

    ``send`` may be called from several tasks (frames are serialised by a lock); ``recv`` must
    have a single reader. Any protocol violation or I/O error closes the channel for good.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        peer_id: bytes,
        tx: _FrameCipher,
        rx: _FrameCipher,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._peer_id = peer_id
        self._tx = tx
        self._rx = rx
        self._max_frame = max_frame
        self._send_lock = asyncio.Lock()
        self._closed = False
        #: Loop time of the last authenticated frame received (any type); read by keep-alive.
        self.last_received = asyncio.get_running_loop().time()
        #: Seconds from the last answered keep-alive ping to its pong (None before the first); the
        #: status page's round trip of an idle link. Pongs answer pings in order (one TCP stream).
        self.ping_rtt: float | None = None
        self._pings: deque[float] = deque(maxlen=64)
        self._where = f"{short_id(peer_id)} at {writer.get_extra_info('peername')}"

    def __repr__(self) -> str:
        return f"Channel(peer={short_id(self._peer_id)}, closed={self._closed})"

    @property
    def peer_id(self) -> bytes:
        """The peer's authenticated 64-byte node id."""
        return self._peer_id

    @property
    def is_closed(self) -> bool:
        return self._closed

    # -- sending ------------------------------------------------------------------------------

    async def send(self, payload: bytes) -> None:
        """Send one data message; FrameTooLarge if too big, NodeDisconnected if the channel is gone."""
        check_payload_size(payload, self._max_frame)
        await self._send_frame(FRAME_DATA, payload)

    async def ping(self) -> None:
        """Send a keep-alive ping (the peer answers with a pong, never seen by its application)."""
        # Before sending: the pong may be read while we drain. perf_counter, not the loop's time,
        # which uvloop keeps in whole milliseconds as of the loop iteration's start.
        self._pings.append(time.perf_counter())
        await self._send_frame(FRAME_PING, b"")

    async def _send_frame(self, frame_type: int, payload: bytes) -> None:
        async with self._send_lock:
            if self._closed or self._writer.is_closing():
                raise NodeDisconnected(f"the channel to {self._where} is closed")
            frame = self._tx.seal(frame_type, payload)
            try:
                self._writer.write(frame)
                await self._writer.drain()
            except OSError as exc:
                self.abort()
                raise NodeDisconnected(f"writing to {self._where} failed") from exc

    # -- receiving ----------------------------------------------------------------------------

    async def recv(self) -> bytes:
        """The next data payload; pings are answered and pongs absorbed on the way.

        Raises NodeDisconnected when the peer closes (FrameRejected / FrameTooLarge on a
        protocol violation); the channel is closed in every error case.
        """
        while True:
            frame_type, payload = await self._read_frame()
            if frame_type == FRAME_DATA:
                return payload
            if frame_type == FRAME_PING:
                await self._send_frame(FRAME_PONG, b"")
            elif frame_type == FRAME_PONG:
                if self._pings:
                    self.ping_rtt = time.perf_counter() - self._pings.popleft()
            else:
                self._violation(FrameRejected(f"unexpected frame type {frame_type}"))

    def _violation(self, exc: SecretStoreError) -> NoReturn:
        # Warn with what happened and who; never with keys, counters' keys or frame contents.
        logger.warning("closing channel to %s: %s", self._where, describe_error(exc))
        self.abort()
        raise exc

    async def _read_frame(self) -> tuple[int, bytes]:
        if self._closed:
            raise NodeDisconnected(f"the channel to {self._where} is closed")
        header = b""
        try:
            header = await self._reader.readexactly(_LENGTH.size)
            (length,) = _LENGTH.unpack(header)
            if length > self._max_frame + FRAME_OVERHEAD:
                # Decided on the header alone: the body is never read nor allocated.
                self._violation(FrameTooLarge(
                    f"frame length {length} exceeds the limit of {self._max_frame} + {FRAME_OVERHEAD} bytes"
                ))
            if length < FRAME_OVERHEAD:
                self._violation(FrameRejected(f"frame length {length} is shorter than its overhead"))
            body = await self._reader.readexactly(length)
        except asyncio.IncompleteReadError as exc:
            if (header or exc.partial) and not self._closed:
                logger.warning("closing channel to %s: truncated frame before end of stream", self._where)
            self.abort()
            raise NodeDisconnected(f"{self._where} closed the connection") from exc
        except OSError as exc:
            self.abort()
            raise NodeDisconnected(f"reading from {self._where} failed") from exc
        try:
            result = self._rx.open(header, body)
        except FrameRejected as exc:
            self._violation(exc)
        self.last_received = asyncio.get_running_loop().time()
        return result

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close gracefully (buffered frames are flushed); a pending ``recv`` ends at once."""
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        self._reader.feed_eof()

    def abort(self) -> None:
        """Close at once, discarding anything still buffered."""
        self._closed = True
        abort_writer(self._writer)
        self._reader.feed_eof()

    async def wait_closed(self) -> None:
        """Wait until the socket is closed (after ``close`` or ``abort``)."""
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


# -- handshake ----------------------------------------------------------------------------------


def _parse_hello(data: bytes) -> tuple[bytes, Point, Point]:
    magic, version, node_id, ephemeral, _random = _HELLO.unpack(data)
    if magic != MAGIC:
        raise HandshakeFailed("the peer did not send an ocean-secret-store node hello")
    if version != PROTOCOL_VERSION:
        raise HandshakeFailed(f"unsupported node protocol version {version} (we speak {PROTOCOL_VERSION})")
    try:
        node_point = Point.from_bytes(node_id)
        ephemeral_point = Point.from_bytes(ephemeral)
    except InvalidPoint as exc:
        raise HandshakeFailed("the hello carries a public key that is not on secp256k1") from exc
    return node_id, node_point, ephemeral_point


def _check_peer(peer_id: bytes, own_id: bytes, allowed: Collection[bytes], expected: bytes | None) -> None:
    if peer_id == own_id:
        raise PeerRefused("the peer claims our own node id")
    if peer_id not in allowed:
        raise PeerRefused(f"node {short_id(peer_id)} is not in the allowed set")
    if expected is not None and peer_id != expected:
        raise PeerRefused(f"expected node {short_id(expected)} but reached {short_id(peer_id)}")


def _frame_ciphers(shared: bytes, transcript: bytes, *, initiator: bool) -> tuple[_FrameCipher, _FrameCipher]:
    """(send, receive) frame states of one side, from the key schedule in the module docstring."""
    keys = HKDF(shared, _KEY_SIZE, transcript, SHA256, num_keys=4, context=KDF_INFO)
    if isinstance(keys, bytes):  # pycryptodome returns a list, but bytes for num_keys=1
        raise InternalError("HKDF did not return four keys")
    enc_ir, mac_ir, enc_ri, mac_ri = keys
    initiator_to_responder = _FrameCipher(enc_ir, mac_ir)
    responder_to_initiator = _FrameCipher(enc_ri, mac_ri)
    if initiator:
        return initiator_to_responder, responder_to_initiator
    return responder_to_initiator, initiator_to_responder


async def _read_auth(
    reader: asyncio.StreamReader, rx: _FrameCipher, peer: Point, label: bytes, transcript: bytes
) -> None:
    header = await reader.readexactly(_LENGTH.size)
    if _LENGTH.unpack(header)[0] != _AUTH_BODY:
        raise HandshakeFailed("the authentication frame has the wrong length")
    body = await reader.readexactly(_AUTH_BODY)
    try:
        frame_type, signature = rx.open(header, body)
    except FrameRejected as exc:
        raise HandshakeFailed("the authentication frame failed authentication") from exc
    if frame_type != FRAME_AUTH:
        raise HandshakeFailed(f"expected an authentication frame, got type {frame_type}")
    try:
        verify_raw_hash(peer, signature, _sha256(label + transcript))
    except InvalidSignature as exc:
        raise HandshakeFailed("the peer's node-key signature over the handshake does not verify") from exc


async def _handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    node_secret: int,
    allowed: frozenset[bytes],
    initiator: bool,
    expected_peer: bytes | None,
    max_frame: int,
    rng: Rng,
) -> Channel:
    own_id = Point.generator_mul(node_secret).to_bytes()
    ephemeral_secret = random_scalar(rng)
    hello = _HELLO.pack(
        MAGIC, PROTOCOL_VERSION, own_id, Point.generator_mul(ephemeral_secret).to_bytes(), rng(32)
    )
    if initiator:
        writer.write(hello)
        await writer.drain()
    peer_hello = await reader.readexactly(HELLO_SIZE)
    peer_id, peer_point, peer_ephemeral = _parse_hello(peer_hello)
    # The responder refuses before any ECDH or signature work: an unknown dialer costs little.
    _check_peer(peer_id, own_id, allowed, expected_peer if initiator else None)
    transcript = _sha256(hello + peer_hello if initiator else peer_hello + hello)
    shared = ecdh_x(ephemeral_secret, peer_ephemeral)
    tx, rx = _frame_ciphers(shared, transcript, initiator=initiator)
    own_label, peer_label = _LABEL_INITIATOR, _LABEL_RESPONDER
    if not initiator:
        own_label, peer_label = peer_label, own_label
    own_auth = tx.seal(FRAME_AUTH, sign_raw_hash(node_secret, _sha256(own_label + transcript)))
    if initiator:
        await _read_auth(reader, rx, peer_point, peer_label, transcript)
        writer.write(own_auth)
        await writer.drain()
    else:
        writer.write(hello + own_auth)
        await writer.drain()
        await _read_auth(reader, rx, peer_point, peer_label, transcript)
    return Channel(reader, writer, peer_id=peer_id, tx=tx, rx=rx, max_frame=max_frame)


async def handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    node_secret: NodeSecret,
    allowed_peers: Iterable[bytes],
    initiator: bool,
    expected_peer: bytes | None = None,
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_frame: int = DEFAULT_MAX_FRAME,
    rng: Rng | None = None,
) -> Channel:
    """Run the handshake on an open stream pair and return the established Channel.

    On any failure the stream is aborted and HandshakeFailed (PeerRefused for an id that is
    not allowed, not ``expected_peer``, or our own) is raised.
    """
    where = writer.get_extra_info("peername")
    try:
        secret = node_secret_value(node_secret)
        allowed = frozenset(allowed_peers)
        check_max_frame(max_frame)
        async with asyncio.timeout(timeout):
            return await _handshake(
                reader, writer, node_secret=secret, allowed=allowed, initiator=initiator,
                expected_peer=expected_peer, max_frame=max_frame, rng=rng or secrets.token_bytes,
            )
    except HandshakeFailed:
        abort_writer(writer)
        raise
    except TimeoutError as exc:
        abort_writer(writer)
        raise HandshakeFailed(f"the handshake with {where} did not complete within {timeout} s") from exc
    except asyncio.IncompleteReadError as exc:
        abort_writer(writer)
        raise HandshakeFailed(f"{where} closed the connection during the handshake") from exc
    except OSError as exc:
        abort_writer(writer)
        raise HandshakeFailed(f"the connection to {where} failed during the handshake") from exc
    except BaseException:
        abort_writer(writer)  # cancellation included: never leave a half-open socket behind
        raise


async def open_channel(
    host: str,
    port: int,
    *,
    node_secret: NodeSecret,
    allowed_peers: Iterable[bytes],
    expected_peer: bytes | None = None,
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_frame: int = DEFAULT_MAX_FRAME,
) -> Channel:
    """Dial ``host:port`` and handshake as initiator; connect + handshake share ``timeout``.

    NodeDisconnected if the connection cannot be made, HandshakeFailed / PeerRefused otherwise.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:  # TimeoutError included
        raise NodeDisconnected(f"cannot connect to {host}:{port}") from exc
    return await handshake(
        reader, writer, node_secret=node_secret, allowed_peers=allowed_peers, initiator=True,
        expected_peer=expected_peer, timeout=max(deadline - loop.time(), 0.0), max_frame=max_frame,
    )


async def accept_channel(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    node_secret: NodeSecret,
    allowed_peers: Iterable[bytes],
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_frame: int = DEFAULT_MAX_FRAME,
) -> Channel:
    """Handshake as responder on an accepted connection (see :func:`handshake`)."""
    return await handshake(
        reader, writer, node_secret=node_secret, allowed_peers=allowed_peers, initiator=False,
        timeout=timeout, max_frame=max_frame,
    )

