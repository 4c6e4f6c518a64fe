"""Encryptors: provider-key round trip, thresholds refused before any request, a devnet round trip."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from eth_account import Account

from ocean_secret_store.client import local
from ocean_secret_store.crypto import ecies
from ocean_secret_store.crypto.curve import Scalar
from ocean_secret_store.exceptions import (
    DecryptionFailed,
    InvalidDid,
    InvalidThreshold,
    MalformedHex,
    NodeUnreachable,
    OceanError,
    ServerKeyAlreadyGenerated,
)
from ocean_secret_store.ocean.did import id_to_did
from ocean_secret_store.ocean.encryptors import (
    Encryptor,
    ProviderKeyEncryptor,
    SecretStoreEncryptor,
    check_threshold,
)
from ocean_secret_store.testing.servers import closed_port_url

FILES = json.dumps([{"index": 0, "url": "https://example.org/data.csv", "contentType": "text/csv"},
                    {"index": 1, "url": "file:///srv/ünïcode.bin"}], separators=(",", ":"))


def new_did() -> str:
    return id_to_did(os.urandom(32))


# -- provider key --------------------------------------------------------------------------------


def test_provider_key_round_trip_only_for_the_provider() -> None:
    provider, publisher, stranger = Account.create(), Account.create(), Account.create()
    encryptor = ProviderKeyEncryptor(local.account_public(provider))
    assert isinstance(encryptor, Encryptor)
    did = new_did()

    encrypted = encryptor.encrypt(did, FILES, publisher, 2)  # the threshold plays no part

    assert encrypted.startswith("0x")
    assert "example.org" not in encrypted and FILES.encode().hex() not in encrypted
    assert encryptor.decrypt(did, encrypted, provider) == FILES
    # Parity ECIES with auth data 00 00: what the provider-key access backend decrypts.
    secret = Scalar.from_bytes(bytes(provider.key)).value
    assert ecies.decrypt(secret, bytes.fromhex(encrypted[2:]), ecies.DEFAULT_MAC).decode() == FILES
    with pytest.raises(OceanError) as caught:
        encryptor.decrypt(did, encrypted, stranger)
    assert provider.address in str(caught.value) and stranger.address in str(caught.value)
    assert "not that provider" in str(caught.value)


def test_provider_key_ciphertexts_are_fresh_and_tampering_is_detected() -> None:
    provider = Account.create()
    encryptor = ProviderKeyEncryptor(local.account_public(provider))
    did = new_did()
    first = encryptor.encrypt(did, FILES, provider, None)
    second = encryptor.encrypt(did, FILES, provider, None)
    assert first != second
    tampered = bytearray.fromhex(first[2:])
    tampered[70] ^= 1
    with pytest.raises(DecryptionFailed):
        encryptor.decrypt(did, "0x" + tampered.hex(), provider)
    with pytest.raises(MalformedHex):
        encryptor.decrypt(did, "0xabc", provider)


def test_provider_key_refuses_a_malformed_did_and_non_text_content() -> None:
    provider = Account.create()
    encryptor = ProviderKeyEncryptor(local.account_public(provider))
    with pytest.raises(InvalidDid):
        encryptor.encrypt("did:op:1234", FILES, provider, None)
    with pytest.raises(OceanError):
        encryptor.encrypt(new_did(), FILES.encode(), provider, None)  # type: ignore[arg-type]  # bad input on purpose


def test_provider_key_from_hex_accepts_raw_and_sec1_forms() -> None:
    provider = Account.create()
    public = local.account_public(provider)
    for text in ("0x" + public.to_bytes().hex(), public.to_bytes().hex(), "0x04" + public.to_bytes().hex()):
        assert ProviderKeyEncryptor.from_hex(text).provider_public == public
    assert ProviderKeyEncryptor.from_hex("0x" + public.to_bytes().hex()).provider_address == provider.address
    assert ProviderKeyEncryptor.from_hex(" 0X" + public.to_bytes().hex().upper() + "\n").provider_public == public
    for bad in ("0xzz", "0x" + public.to_bytes().hex()[1:], None):
        with pytest.raises(MalformedHex):
            ProviderKeyEncryptor.from_hex(bad)  # type: ignore[arg-type]  # None among them on purpose


# -- secret store: thresholds are checked before any request ----------------------------------


def test_check_threshold_bounds() -> None:
    assert check_threshold(0, 1) == 0
    assert check_threshold(2, 3) == 2
    for bad, size in ((3, 3), (-1, 3), (True, 3), ("1", 3)):
        with pytest.raises(InvalidThreshold):
            check_threshold(bad, size)


def test_secret_store_refuses_threshold_not_below_cluster_size_before_any_http_call() -> None:
    urls = [closed_port_url() for _ in range(3)]
    publisher = Account.create()
    did = new_did()
    # At construction: nothing to connect to is needed to refuse.
    with pytest.raises(InvalidThreshold) as caught:
        SecretStoreEncryptor(urls, 3)
    assert "4 key servers" in str(caught.value) and "has 3" in str(caught.value)
    # Per call: threshold 3 is refused without a request, while threshold 1 goes to the wire and
    # finds the closed port, proving the refusal above did not depend on any answer.
    encryptor = SecretStoreEncryptor(urls, 0, timeout=2.0)
    with pytest.raises(InvalidThreshold):
        encryptor.encrypt(did, FILES, publisher, 3)
    with pytest.raises(NodeUnreachable):
        encryptor.encrypt(did, FILES, publisher, 1)


def test_secret_store_cluster_size_overrides_the_number_of_urls() -> None:
    url = closed_port_url()
    encryptor = SecretStoreEncryptor([url], 2, cluster_size=3)
    assert (encryptor.threshold, encryptor.cluster_size) == (2, 3)
    with pytest.raises(InvalidThreshold):
        SecretStoreEncryptor(url, 3, cluster_size=3)
    with pytest.raises(OceanError):
        SecretStoreEncryptor([], 0)
    with pytest.raises(OceanError):
        SecretStoreEncryptor([url], 0, cluster_size=0)


def test_secret_store_refuses_a_malformed_did_before_any_http_call() -> None:
    encryptor = SecretStoreEncryptor([closed_port_url()], 0)
    with pytest.raises(InvalidDid):
        encryptor.encrypt("did:op:not-hex", FILES, Account.create(), None)
    with pytest.raises(InvalidDid):
        encryptor.decrypt("did:op:not-hex", "0x00", Account.create())


@pytest.mark.integration
def test_secret_store_round_trip_on_a_three_node_devnet(tmp_path: Path) -> None:
    from ocean_secret_store.testing.devnets import running_devnet  # only this test needs the devnet modules

    with running_devnet(tmp_path, 3, acl="none") as state:
        urls = [node.http_url for node in state.nodes]
        encryptor = SecretStoreEncryptor(urls, 2)
        assert isinstance(encryptor, Encryptor)
        publisher, consumer = Account.create(), Account.create()
        did = new_did()

        encrypted = encryptor.encrypt(did, FILES, publisher, None)

        assert encrypted.startswith("0x") and "example.org" not in encrypted
        # acl="none": any account may retrieve, here one that is not the publisher.
        assert encryptor.decrypt(did, encrypted, consumer) == FILES
        # Through another entry node only, with the key id being the DID's 32 bytes.
        assert SecretStoreEncryptor(urls[2:], 0).decrypt(did, encrypted, publisher) == FILES
        # A DID's server key is generated once.
        with pytest.raises(ServerKeyAlreadyGenerated):
            encryptor.encrypt(did, FILES, publisher, 1)
