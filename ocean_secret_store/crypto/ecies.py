"""Parity ECIES (ethkey ``crypto::ecies``, protocol.md §2.2).

``0x04 || R.x || R.y || iv(16) || AES-128-CTR(ek, iv, plain) || HMAC-SHA256(mk, iv || ct || ad)``
with ``K = SHA256(00000001 || ecdh_x(r, P))``, ``ek = K[:16]``, ``mk = SHA256(K[16:])``.
Results for clients use the auth data ``00 00`` (:data:`DEFAULT_MAC`); the node-to-node
channel uses empty auth data.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from Crypto.Cipher import AES

from ..exceptions import CryptoError, DecryptionFailed, InvalidPoint
from .curve import Point, Rng, default_rng, ecdh_x, random_scalar

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
    ct = aes128_ctr(ek, iv, plain)
    tag = hmac.new(mk, iv + ct + auth_data, hashlib.sha256).digest()
    return b"\x04" + Point.generator_mul(r).to_bytes() + iv + ct + tag


def decrypt(secret: int, blob: bytes, auth_data: bytes = DEFAULT_MAC) -> bytes:
    """Decrypt a Parity ECIES blob with ``secret``; any tampering raises DecryptionFailed."""
    if len(blob) < OVERHEAD:
        raise DecryptionFailed(f"an ECIES ciphertext is at least {OVERHEAD} bytes, got {len(blob)}")
    if blob[0] not in (2, 3, 4):
        raise DecryptionFailed(f"an ECIES ciphertext starts with 0x04, got 0x{blob[0]:02x}")
    try:
        ephemeral = Point.from_bytes(blob[1:65])
    except InvalidPoint as exc:
        raise DecryptionFailed("the ECIES ephemeral key is not a curve point") from exc
    iv, ct, tag = blob[65:81], blob[81:-32], blob[-32:]
    ek, mk = _keys(ecdh_x(secret, ephemeral))
    expected = hmac.new(mk, iv + ct + auth_data, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, tag):
        raise DecryptionFailed("the ECIES authentication tag does not match (wrong key, auth data or tampered)")
    return aes128_ctr(ek, iv, ct)
