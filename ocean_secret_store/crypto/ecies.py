"""Parity ECIES (ethkey ``crypto::ecies``, protocol.md §2.2).

``0x04 || R.x || R.y || iv(16) || AES-128-CTR(ek, iv, plain) || HMAC-SHA256(mk, iv || ct || ad)``
with ``K = SHA256(00000001 || ecdh_x(r, P))``, ``ek = K[:16]``, ``mk = SHA256(K[16:])``.
Results for clients use the auth data ``00 00`` (:data:`DEFAULT_MAC`); the node-to-node
channel uses empty auth data.

:func:`encrypt` draws a fresh ephemeral key per message. :class:`Encryptor` (batch answers) draws
one per recipient and seals many messages with it, each in exactly the format above (its own
random IV), so that any decoder, :func:`decrypt` included, opens each alone; :class:`Decryptor`
opens many messages for one secret and derives the keys once per ephemeral point.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from Crypto.Cipher import AES

from ..exceptions import CryptoError, DecryptionFailed, InvalidPoint, InvalidScalar
from .curve import N, Point, Rng, default_rng, ecdh_x, random_scalar

#: parity-crypto's ``DEFAULT_MAC``: the auth data of every ciphertext handed to a client.
DEFAULT_MAC: Final = b"\x00\x00"
#: Bytes ECIES adds to a plaintext: prefix, ephemeral point, IV and tag.
OVERHEAD: Final = 1 + 64 + 16 + 32


def _keys(shared_x: bytes) -> tuple[bytes, bytes]:
    derived = hashlib.sha256(b"\x00\x00\x00\x01" + shared_x).digest()
    return derived[:16], hashlib.sha256(derived[16:]).digest()


def aes128_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-128-CTR with ``iv`` as the full 128-bit big-endian initial counter block."""
    return AES.new(key, AES.MODE_CTR, nonce=b"", initial_value=iv).encrypt(data)


def encrypt(
    public: Point,
    plain: bytes,
    auth_data: bytes = DEFAULT_MAC,
    *,
    rng: Rng | None = None,
    ephemeral: int | None = None,
    iv: bytes | None = None,
) -> bytes:
    """Encrypt ``plain`` to ``public``. ``ephemeral``/``iv`` exist for test vectors only."""
    draw = rng or default_rng
    r = ephemeral if ephemeral is not None else random_scalar(draw)
    iv = iv if iv is not None else draw(16)
    if len(iv) != 16:
        raise CryptoError(f"the ECIES IV must be 16 bytes, got {len(iv)}")
    ek, mk = _keys(ecdh_x(r, public))
    return b"\x04" + Point.generator_mul(r).to_bytes() + _seal(ek, mk, iv, plain, auth_data)


def _seal(ek: bytes, mk: bytes, iv: bytes, plain: bytes, auth_data: bytes) -> bytes:
    ct = aes128_ctr(ek, iv, plain)
    return iv + ct + hmac.new(mk, iv + ct + auth_data, hashlib.sha256).digest()


def _split(blob: bytes) -> bytes:
    """The ephemeral point's 64 bytes of a well-formed blob (length and prefix checked)."""
    if len(blob) < OVERHEAD:
        raise DecryptionFailed(f"an ECIES ciphertext is at least {OVERHEAD} bytes, got {len(blob)}")
    if blob[0] not in (2, 3, 4):
        raise DecryptionFailed(f"an ECIES ciphertext starts with 0x04, got 0x{blob[0]:02x}")
    return blob[1:65]


def _ephemeral(raw: bytes) -> Point:
    try:
        return Point.from_bytes(raw)
    except InvalidPoint as exc:
        raise DecryptionFailed("the ECIES ephemeral key is not a curve point") from exc


def _open(ek: bytes, mk: bytes, blob: bytes, auth_data: bytes) -> bytes:
    iv, ct, tag = blob[65:81], blob[81:-32], blob[-32:]
    expected = hmac.new(mk, iv + ct + auth_data, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, tag):
        raise DecryptionFailed("the ECIES authentication tag does not match (wrong key, auth data or tampered)")
    return aes128_ctr(ek, iv, ct)


def decrypt(secret: int, blob: bytes, auth_data: bytes = DEFAULT_MAC) -> bytes:
    """Decrypt a Parity ECIES blob with ``secret``; any tampering raises DecryptionFailed."""
    ephemeral = _ephemeral(_split(blob))
    ek, mk = _keys(ecdh_x(secret, ephemeral))
    return _open(ek, mk, blob, auth_data)


#: Random IVs an :class:`Encryptor` draws for one message before it gives up on its random source
#: (a counter block already used is redrawn; with a real CSPRNG that never even happens once).
_IV_DRAWS: Final = 8
_COUNTER_SPACE: Final = 1 << 128


class Encryptor:
    """ECIES to one recipient for many messages under ONE ephemeral key: a batch answer's decrypt
    shadows for one requester (node/sessions/batch.py), one ECDH and one fixed-base multiplication
    for all of them instead of two multiplications each.

    Every message is ``0x04 || R || iv || AES-128-CTR(ek, iv, plain) || HMAC-SHA256(mk, iv || ct || ad)``
    exactly as :func:`encrypt` makes it, with the same ``R`` (hence ``ek``, ``mk``) and its own random
    IV: any Parity ECIES decoder opens each message alone.

    Why this is sound: ``ek`` and ``mk`` come from a fresh random ephemeral scalar ``r``, drawn here and
    held only by this object (never stored, logged or shown: the repr is opaque), for ONE recipient;
    an encryptor is made per answer and per recipient and dropped with the answer, so ``r`` is never
    reused across recipients or answers. AES-128-CTR under one key is a secure cipher for many
    messages as long as no counter block repeats: each message's counter blocks ``iv, iv+1, ...``
    start at an independent random 128-bit IV, and this object also remembers the blocks it used and
    redraws an IV that would touch one (so the keystream is never reused, not even by a 2^-128 chance).
    HMAC-SHA256 under one key is a PRF for any number of messages: each message's tag covers its own
    IV, ciphertext and auth data, so a message cannot be moved, spliced or altered without its tag
    failing, and tampering with one message fails that one only. What a recipient learns is what it
    would learn from separate ECIES messages, plus that they come from one sender's answer — which
    it knows anyway. Meant for short messages (32-byte shadows): it remembers each counter block.
    """

    __slots__ = ("_counters", "_draw", "_ek", "_mk", "_prefix", "recipient")

    def __init__(self, public: Point, *, rng: Rng | None = None, ephemeral: int | None = None) -> None:
        """``ephemeral`` exists for tests only: an encryptor draws its own."""
        self._draw = rng or default_rng
        r = ephemeral if ephemeral is not None else random_scalar(self._draw)
        self._ek, self._mk = _keys(ecdh_x(r, public))
        self._prefix = b"\x04" + Point.generator_mul(r).to_bytes()
        self._counters: set[int] = set()
        #: The recipient's public key: every message is for it alone.
        self.recipient = public

    @property
    def ephemeral_point(self) -> bytes:
        """``R``'s 64 bytes, the same in every message of this encryptor (public)."""
        return self._prefix[1:]

    def encrypt(self, plain: bytes, auth_data: bytes = DEFAULT_MAC) -> bytes:
        """One message to :attr:`recipient`, in :func:`encrypt`'s format, with a fresh random IV.

        :raises CryptoError: the random source gave IVs whose counter blocks were all used already.
        """
        blocks = -(-len(plain) // 16)
        for _ in range(_IV_DRAWS):
            iv = self._draw(16)
            if len(iv) != 16:
                raise CryptoError(f"the ECIES IV must be 16 bytes, got {len(iv)}")
            start = int.from_bytes(iv, "big")
            counters = {(start + i) % _COUNTER_SPACE for i in range(blocks)}
            if self._counters.isdisjoint(counters):
                self._counters |= counters
                return self._prefix + _seal(self._ek, self._mk, iv, plain, auth_data)
        raise CryptoError("the random source repeats: no fresh IV for an ECIES message")

    def __repr__(self) -> str:
        return f"Encryptor(recipient={self.recipient!r}, <keys>)"


class Decryptor:
    """Opens many ECIES messages for one secret: what :func:`decrypt` does, with ``(ek, mk)``
    derived once per ephemeral point (one ECDH for a whole :class:`Encryptor`'s messages, the
    client's side of a batch answer). Each message is still checked alone: its own length, prefix
    and tag; a message that fails leaves the others as they are. Keep one for one call (one batch
    of answers): it remembers at most ``cache_size`` ephemeral points' keys, and never shows them.
    """

    __slots__ = ("_cache_size", "_keys", "_secret")

    def __init__(self, secret: int, *, cache_size: int = 256) -> None:
        """:raises InvalidScalar: ``secret`` outside ``1 <= s < n``."""
        if not 0 < secret < N:
            raise InvalidScalar("an ECIES secret must satisfy 1 <= s < n")
        self._secret = secret
        self._cache_size = cache_size
        self._keys: dict[bytes, tuple[bytes, bytes]] = {}

    def decrypt(self, blob: bytes, auth_data: bytes = DEFAULT_MAC) -> bytes:
        """As :func:`decrypt` with this secret; any tampering raises DecryptionFailed."""
        raw = bytes(_split(blob))
        keys = self._keys.get(raw)
        if keys is None:
            keys = _keys(ecdh_x(self._secret, _ephemeral(raw)))
            if len(self._keys) < self._cache_size:
                self._keys[raw] = keys
        return _open(keys[0], keys[1], blob, auth_data)

    def __repr__(self) -> str:
        return "Decryptor(<secret>)"
