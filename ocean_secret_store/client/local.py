"""Parity's ``secretstore_*`` JSON-RPC methods as local library functions (protocol.md §3).

Parity runs these inside an Ethereum node with an unlocked account and its password; here the
account is an eth-account ``LocalAccount`` (or anything with a 32-byte ``.key``) and nothing
talks to a node or a key server. Two faces:

* bytes/Point functions (:func:`generate_document_key`, :func:`encrypt`, :func:`decrypt`,
  :func:`shadow_decrypt`, :func:`servers_set_hash`, :func:`sign_raw_hash`);
* ``rpc_*`` wrappers taking and returning exactly the JSON-RPC parameter and result shapes
  (``"0x"``-hex strings, the ``generateDocumentKey`` object), so a JSON-RPC server is a thin
  adapter over them. Hex is parsed strictly: ``"0x"`` required
  (:func:`~..protocol.hexcodec.parse_hex`, the package's one hex codec).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from ..crypto import document as _document
from ..crypto import ecies, hashes, shadows, signatures
from ..crypto.curve import Point, Rng, Scalar
from ..exceptions import InvalidPoint, InvalidScalar, MalformedHex
from ..protocol.hexcodec import parse_hex, to_hex

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = [
    "GeneratedDocumentKey",
    "HasKey",
    "account_public",
    "account_secret",
    "decrypt",
    "encrypt",
    "generate_document_key",
    "rpc_decrypt",
    "rpc_encrypt",
    "rpc_generate_document_key",
    "rpc_servers_set_hash",
    "rpc_shadow_decrypt",
    "rpc_sign_raw_hash",
    "servers_set_hash",
    "shadow_decrypt",
    "sign_raw_hash",
]

#: Size of a document key (a 64-byte point, Parity's ``Public``).
DOCUMENT_KEY_LENGTH: Final = 64


class HasKey(Protocol):
    """Anything holding a raw 32-byte secp256k1 private key as ``.key`` (e.g. eth-account's LocalAccount)."""

    @property
    def key(self) -> bytes: ...


def account_secret(account: LocalAccount | HasKey) -> int:
    """The account's private key as a scalar; :class:`InvalidScalar` (naming no value) if ``.key`` is not one.

    The one place the package reads an account's key, so every caller refuses a bad account alike.
    """
    key = getattr(account, "key", None)
    if not isinstance(key, (bytes, bytearray)):
        raise InvalidScalar(
            f"the account must carry its private key as 32 bytes in .key (got {type(key).__name__})"
        )
    return Scalar.from_bytes(bytes(key)).value


def account_public(account: LocalAccount | HasKey) -> Point:
    """The account's 64-byte public key (the ECIES recipient of ``encrypted_key`` and shadows)."""
    return Point.generator_mul(account_secret(account))


# -- bytes / Point face ------------------------------------------------------------------------


def sign_raw_hash(account: LocalAccount | HasKey, raw_hash: bytes) -> bytes:
    """``secretstore_signRawHash``: ECDSA over the 32 raw bytes, ``r || s || v`` with v in {0, 1}."""
    return signatures.sign_raw_hash(account_secret(account), raw_hash)


@dataclass(frozen=True, repr=False)
class GeneratedDocumentKey:
    """Result of ``secretstore_generateDocumentKey``.

    ``common_point``/``encrypted_point`` go to the key servers (HTTP endpoint 2, document key
    storing); ``encrypted_key`` is the document key ECIES-encrypted to the account, for
    :func:`encrypt`. None of the three reveals the document key.
    """

    common_point: Point
    encrypted_point: Point
    encrypted_key: bytes

    def to_json(self) -> dict[str, str]:
        """Parity's result object: ``{"common_point", "encrypted_point", "encrypted_key"}`` as 0x-hex."""
        return {
            "common_point": to_hex(self.common_point.to_bytes()),
            "encrypted_point": to_hex(self.encrypted_point.to_bytes()),
            "encrypted_key": to_hex(self.encrypted_key),
        }

    def __repr__(self) -> str:
        return (
            f"GeneratedDocumentKey(common_point={self.common_point!r}, "
            f"encrypted_point={self.encrypted_point!r}, encrypted_key=<{len(self.encrypted_key)} bytes>)"
        )


def generate_document_key(
    account: LocalAccount | HasKey, server_key_public: Point, rng: Rng | None = None
) -> GeneratedDocumentKey:
    """``secretstore_generateDocumentKey`` (§3.1): a random ``M``, ``(C, E)`` to ``Y`` and ``ECIES(account, M)``."""
    public = account_public(account)
    document_key, common_point, encrypted_point = _document.generate_document_key(server_key_public, rng)
    encrypted_key = ecies.encrypt(public, document_key.to_bytes(), ecies.DEFAULT_MAC, rng=rng)
    return GeneratedDocumentKey(common_point, encrypted_point, encrypted_key)


def _unwrap_document_key(account: LocalAccount | HasKey, key: bytes) -> bytes:
    # Parity checks only the length of the unwrapped key; only its first 16 bytes are used.
    plain = ecies.decrypt(account_secret(account), key, ecies.DEFAULT_MAC)
    if len(plain) != DOCUMENT_KEY_LENGTH:
        raise InvalidPoint(
            f"invalid public key length: the key blob holds {len(plain)} bytes, a document key is 64"
        )
    return plain


def encrypt(account: LocalAccount | HasKey, key: bytes, data: bytes, rng: Rng | None = None) -> bytes:
    """``secretstore_encrypt``: unwrap the ECIES key blob, return ``AES-CTR(M[:16], iv, data) || iv``."""
    return _document.encrypt_document(_unwrap_document_key(account, key), data, rng=rng)


def decrypt(account: LocalAccount | HasKey, key: bytes, data: bytes) -> bytes:
    """``secretstore_decrypt``: unwrap the ECIES key blob and decrypt a ``ciphertext || iv`` document."""
    return _document.decrypt_document(_unwrap_document_key(account, key), data)


def shadow_decrypt(
    account: LocalAccount | HasKey,
    decrypted_secret: Point,
    common_point: Point,
    decrypt_shadows: Sequence[bytes],
    data: bytes,
) -> bytes:
    """``secretstore_shadowDecrypt`` (§2.7, §3.3): ``M = D + (Σ ε_i)·C'``, then decrypt ``data``."""
    document_key = shadows.recover_document_key(
        decrypted_secret, common_point, decrypt_shadows, account_secret(account)
    )
    return _document.decrypt_document(document_key, data)


def servers_set_hash(node_ids: Iterable[Point | bytes]) -> bytes:
    """``secretstore_serversSetHash``: keccak256 of the sorted, de-duplicated 64-byte node ids."""
    return hashes.servers_set_hash(node_ids)


# -- JSON-RPC face -----------------------------------------------------------------------------

def _parse_point(value: object, name: str) -> Point:
    return Point.from_bytes(parse_hex(value, name, 64))


def rpc_sign_raw_hash(account: LocalAccount | HasKey, hash_hex: str) -> str:
    """``secretstore_signRawHash`` params ``[.., raw_hash: H256]`` -> ``Bytes`` (65 B)."""
    return to_hex(sign_raw_hash(account, parse_hex(hash_hex, "raw_hash", 32)))


def rpc_generate_document_key(
    account: LocalAccount | HasKey, server_key_public_hex: str, rng: Rng | None = None
) -> dict[str, str]:
    """``secretstore_generateDocumentKey`` params ``[.., server_key_public: H512]`` -> result object."""
    server_key_public = _parse_point(server_key_public_hex, "server_key_public")
    return generate_document_key(account, server_key_public, rng).to_json()


def rpc_encrypt(account: LocalAccount | HasKey, key_hex: str, data_hex: str, rng: Rng | None = None) -> str:
    """``secretstore_encrypt`` params ``[.., key: Bytes, data: Bytes]`` -> ``Bytes``."""
    key = parse_hex(key_hex, "key")
    data = parse_hex(data_hex, "data")
    return to_hex(encrypt(account, key, data, rng))


def rpc_decrypt(account: LocalAccount | HasKey, key_hex: str, data_hex: str) -> str:
    """``secretstore_decrypt`` params ``[.., key: Bytes, data: Bytes]`` -> ``Bytes``."""
    key = parse_hex(key_hex, "key")
    data = parse_hex(data_hex, "data")
    return to_hex(decrypt(account, key, data))


def rpc_shadow_decrypt(
    account: LocalAccount | HasKey,
    decrypted_secret_hex: str,
    common_point_hex: str,
    decrypt_shadows_hex: Sequence[str],
    data_hex: str,
) -> str:
    """``secretstore_shadowDecrypt`` params ``[.., H512, H512, [Bytes], Bytes]`` -> ``Bytes``."""
    decrypted_secret = _parse_point(decrypted_secret_hex, "decrypted_secret")
    common_point = _parse_point(common_point_hex, "common_point")
    if isinstance(decrypt_shadows_hex, (str, bytes)) or not isinstance(decrypt_shadows_hex, Sequence):
        raise MalformedHex("decrypt_shadows must be a list of 0x-prefixed hex strings")
    decrypt_shadows = [
        parse_hex(item, f"decrypt_shadows[{index}]") for index, item in enumerate(decrypt_shadows_hex)
    ]
    data = parse_hex(data_hex, "data")
    return to_hex(shadow_decrypt(account, decrypted_secret, common_point, decrypt_shadows, data))


def rpc_servers_set_hash(node_ids_hex: Sequence[str]) -> str:
    """``secretstore_serversSetHash`` params ``[[H512, ...]]`` -> ``H256``.

    Like Parity, the ids are hashed as 64-byte values without checking they are curve points.
    """
    if isinstance(node_ids_hex, (str, bytes)) or not isinstance(node_ids_hex, Sequence):
        raise MalformedHex("the servers set must be a list of 0x-prefixed hex strings")
    node_ids = [parse_hex(item, f"servers_set[{index}]", 64) for index, item in enumerate(node_ids_hex)]
    return to_hex(servers_set_hash(node_ids))
