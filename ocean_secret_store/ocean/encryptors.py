"""Encryptors: named objects that encrypt an asset's files list for a DID when publishing, and decrypt it.

The files list (JSON with the URLs) is the one secret of a published asset: the DDO carries
it only as ``attributes.encryptedFiles``, a ``0x``-hex string made by an encryptor. Two ship
with this package, offered through the ``ocean_encryptors`` hook (:mod:`.hookimpls`):

* :class:`SecretStoreEncryptor` (``"secret-store"``), what squid-py did (ocean.md §1.3, §2):
  the publisher generates a server key on the Secret Store cluster with the DID's 32 bytes as
  key id, generates the document key locally, stores it with the cluster and encrypts the text
  with AES-128-CTR (``ciphertext || iv``). Decryption is a shadow retrieval: the cluster asks
  the ACL contract whether the requester may read the DID, so consumers and the DID's
  providers can, others cannot.
* :class:`ProviderKeyEncryptor` (``"provider-key"``), Ocean V3's way (ocean.md §3.4): Parity
  ECIES (auth data ``00 00``) to the provider's public key. No cluster; only the provider's
  private key decrypts, so only the provider's account can use :meth:`ProviderKeyEncryptor.decrypt`.

Errors never contain the plaintext, the URLs or any key material.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..client import local
from ..client.client import SecretStoreClient
from ..crypto import document, ecies
from ..crypto.curve import Point
from ..crypto.hashes import address_of, checksum_address
from ..exceptions import DecryptionFailed, InvalidThreshold, OceanError, SecretStoreError
from ..protocol.hexcodec import parse_hex, to_hex
from .did import did_to_id

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = ["Encryptor", "ProviderKeyEncryptor", "SecretStoreEncryptor", "check_threshold"]


@runtime_checkable
class Encryptor(Protocol):
    """What the ``ocean_encryptors`` hook returns: encrypts and decrypts an asset's files list for a DID."""

    #: The name ``config.encryptor`` selects it by (``[secret-store] encryptor``).
    name: str

    def encrypt(self, did: str, content: str, account: LocalAccount, threshold: int | None) -> str:
        """Encrypt ``content`` for ``did`` on behalf of the publisher ``account``.

        :param threshold: the Secret Store threshold (``None``: the encryptor's default);
            encryptors without a threshold ignore it.
        :return: a ``0x`` hex string, stored as the DDO's ``attributes.encryptedFiles``.
        """
        ...

    def decrypt(self, did: str, encrypted: str, account: LocalAccount) -> str:
        """Decrypt what :meth:`encrypt` returned for ``did``, as ``account`` (consumer or provider)."""
        ...


def check_threshold(threshold: object, cluster_size: int) -> int:
    """``threshold`` if ``0 <= threshold < cluster_size``, else :class:`InvalidThreshold`.

    Parity's threshold ``t`` means ``t + 1`` key servers must take part in every session, so a
    cluster of ``n`` nodes supports ``t <= n - 1``; a larger one fails only after the request
    reached the cluster ("not enough nodes for passed threshold", barge issue #43).
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise InvalidThreshold(f"the threshold must be an int, got {type(threshold).__name__}")
    if threshold < 0:
        raise InvalidThreshold(f"the threshold must be >= 0, got {threshold}")
    if threshold >= cluster_size:
        raise InvalidThreshold(
            f"threshold {threshold} needs {threshold + 1} key servers but the cluster has {cluster_size}; "
            f"use a threshold of at most {cluster_size - 1}"
        )
    return threshold


def _key_id_hex(did: str) -> str:
    # The server key id is the DID's 32 bytes: what DIDRegistry and the ACL contract key on too.
    return did_to_id(did).hex()


class SecretStoreEncryptor:
    """Encrypt files lists with a document key kept by a Secret Store cluster (squid-py's way).

    :param cluster_urls: the cluster's node URLs (equivalent entry points; one is enough to
        reach the cluster).
    :param threshold: the default threshold of the server keys generated at publish time.
    :param timeout: seconds per HTTP request to a node (server key generation is a cluster
        session, slower than a plain request).
    :param cluster_size: the number of key servers in the cluster, when ``cluster_urls`` lists
        fewer of them; by default the number of URLs.
    :raises InvalidThreshold: if ``threshold`` is not below the cluster size.
    :raises OceanError: for no URL or a cluster size below 1.
    """

    name = "secret-store"

    def __init__(
        self,
        cluster_urls: Sequence[str] | str,
        threshold: int = 0,
        *,
        timeout: float = 30.0,
        cluster_size: int | None = None,
        ca_file: str | None = None,
    ) -> None:
        urls = [cluster_urls] if isinstance(cluster_urls, str) else list(cluster_urls)
        if not urls:
            raise OceanError("the secret-store encryptor needs at least one key server URL")
        #: The PEM CA bundle https key servers are checked against (None: the system CAs).
        self.ca_file = ca_file
        size = len(urls) if cluster_size is None else cluster_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise OceanError(f"the cluster size must be a positive int, got {size!r}")
        self.cluster_urls: tuple[str, ...] = tuple(urls)
        self.cluster_size = size
        self.threshold = check_threshold(threshold, size)
        self.timeout = timeout

    def _threshold(self, threshold: int | None) -> int:
        return self.threshold if threshold is None else check_threshold(threshold, self.cluster_size)

    def encrypt(self, did: str, content: str, account: LocalAccount, threshold: int | None = None) -> str:
        """Generate the DID's server key (``threshold``), store a fresh document key, return the ciphertext.

        The threshold is checked against the cluster size before any request is made. The DID's
        key id can be published once: a second publish of the same DID fails with
        ``ServerKeyAlreadyGenerated``.
        """
        t = self._threshold(threshold)
        key_id = _key_id_hex(did)
        with SecretStoreClient(list(self.cluster_urls), account, timeout=self.timeout,
                               verify=self.ca_file or True) as client:
            return client.publish_document(key_id, content, t)

    def decrypt(self, did: str, encrypted: str, account: LocalAccount) -> str:
        """Shadow-retrieve the DID's document key as ``account`` and decrypt ``encrypted``.

        :raises AccessDenied: if the cluster's ACL does not let ``account`` read the DID.
        """
        key_id = _key_id_hex(did)
        with SecretStoreClient(list(self.cluster_urls), account, timeout=self.timeout,
                               verify=self.ca_file or True) as client:
            return client.decrypt_document(key_id, encrypted)

    def decrypt_many(self, documents: Sequence[tuple[str, str]],
                     account: LocalAccount) -> list[str | SecretStoreError]:
        """Each ``(did, encrypted)``'s plaintext or error, in order, the document keys fetched in
        batches (``POST /shadow_batch``, one request per 100 DIDs) instead of one retrieval each."""
        parsed = [(did_to_id(did), parse_hex(encrypted, "encryptedFiles", prefix=None, error=OceanError))
                  for did, encrypted in documents]
        with SecretStoreClient(list(self.cluster_urls), account, timeout=self.timeout,
                               verify=self.ca_file or True) as client:
            keys = client.recover_many([key_id for key_id, _ in parsed])
        out: list[str | SecretStoreError] = []
        for (_, data), key in zip(parsed, keys, strict=True):
            if isinstance(key, SecretStoreError):
                out.append(key)
                continue
            try:
                out.append(document.decrypt_document(key, data).decode("utf-8"))
            except UnicodeDecodeError:
                out.append(DecryptionFailed("the decrypted document is not UTF-8: wrong document key or corrupted "
                                            "ciphertext"))
        return out

    def __repr__(self) -> str:
        return (f"SecretStoreEncryptor({list(self.cluster_urls)!r}, threshold={self.threshold}, "
                f"cluster_size={self.cluster_size})")


class ProviderKeyEncryptor:
    """Encrypt files lists with Parity ECIES to the provider's public key (Ocean V3's way).

    :param provider_public: the provider's 64-byte public key, as the provider publishes it on
        its info endpoint (``GET /api/v1/brizo``).
    """

    name = "provider-key"

    def __init__(self, provider_public: Point) -> None:
        if not isinstance(provider_public, Point):
            raise OceanError(f"the provider public key must be a Point, got {type(provider_public).__name__}")
        self.provider_public = provider_public
        self.provider_address = checksum_address(address_of(provider_public))

    @classmethod
    def from_hex(cls, public_hex: str) -> ProviderKeyEncryptor:
        """From ``0x`` + 128 hex digits (``X || Y``), or 130 with the SEC1 ``04`` prefix."""
        text = public_hex.strip() if isinstance(public_hex, str) else public_hex
        raw = parse_hex(text, "the provider public key", prefix=None)
        if len(raw) == 65 and raw[0] == 4:
            raw = raw[1:]
        return cls(Point.from_bytes(raw))

    def encrypt(self, did: str, content: str, account: LocalAccount, threshold: int | None = None) -> str:
        """ECIES-encrypt ``content`` to the provider; ``account`` and ``threshold`` play no part.

        The key is the provider's alone, so there is no threshold to apply: the host passes its
        configured one to every encryptor and this one ignores it.
        """
        did_to_id(did)  # a malformed DID is refused here as by every encryptor
        if not isinstance(content, str):
            raise OceanError(f"the content to encrypt must be a str, got {type(content).__name__}")
        return to_hex(ecies.encrypt(self.provider_public, content.encode("utf-8")))

    def decrypt(self, did: str, encrypted: str, account: LocalAccount) -> str:
        """Decrypt with ``account``'s key, which must be the provider's.

        :raises OceanError: if ``account`` is not the provider this encryptor encrypts to.
        :raises DecryptionFailed: if ``encrypted`` was not made for this provider or was altered.
        """
        did_to_id(did)
        public = local.account_public(account)  # also refuses an account without a valid .key
        if public != self.provider_public:
            raise OceanError(
                "provider-key encrypted files can only be decrypted by the provider "
                f"{self.provider_address}; "
                f"account {checksum_address(address_of(public))} is not that provider"
            )
        data = parse_hex(encrypted, "encryptedFiles", prefix=None)
        plain = ecies.decrypt(local.account_secret(account), data)
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptionFailed("the decrypted files list is not UTF-8") from None

    def __repr__(self) -> str:
        return f"ProviderKeyEncryptor(provider={self.provider_address})"
