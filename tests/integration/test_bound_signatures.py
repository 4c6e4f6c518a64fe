"""Bound signatures (issue 11, finding 2) against a real devnet whose nodes require them for
generation and storing.

Parity's requester signature signs only the key id: whoever saw the generation URL could store
a document key of their own choosing under it. A node configured with ``[security]
require_bound_signatures`` refuses the bare signature for those operations; a bound signature
(operation, arguments, nonce, expiry) verifies for one request only, once, until it expires —
checked by the entry node and, for a store, by every member. Our SDK signs bound by default.
Parity-era clients against nodes without the setting: tests/integration/test_parity_era.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount

from ocean_secret_store import devnet
from ocean_secret_store.client.client import SecretStoreClient
from ocean_secret_store.crypto.curve import Point
from ocean_secret_store.crypto.document import generate_document_key
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.exceptions import InsufficientRequesterData
from ocean_secret_store.protocol import bound as b
from ocean_secret_store.protocol import http as codec
from ocean_secret_store.testing.devnets import running_devnet

pytestmark = pytest.mark.integration

REQUIRED = ["generate_server_key", "store_document_key", "generate_document_key"]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devnet.DevnetState]:
    settings = {"security": {"require_bound_signatures": REQUIRED}}
    with running_devnet(tmp_path_factory.mktemp("bound"), 3, acl="none", node_settings=settings) as state:
        yield state


def urls(net: devnet.DevnetState) -> list[str]:
    return [node.http_url for node in net.nodes]


def refusal(reply: requests.Response) -> str:
    """The text of a 400 refusal, Parity's quoted string: Insufficient requester data: <why>."""
    assert reply.status_code == 400, (reply.status_code, reply.text)
    assert reply.json().startswith('"Insufficient requester data: ')
    error = codec.error_from_response(reply.status_code, reply.content)
    assert isinstance(error, InsufficientRequesterData)
    return str(error)


def bound_headers(who: LocalAccount, operation: str, key_id: bytes, arguments: bytes,
                  expiry: int | None = None) -> dict[str, str]:
    expiry = int(time.time()) + 30 if expiry is None else expiry
    return b.sign(who.key, operation, key_id, arguments, nonce=os.urandom(b.NONCE_SIZE), expiry=expiry).headers()


def test_a_replayed_generation_signature_cannot_store_a_document_key(net: devnet.DevnetState) -> None:
    author: LocalAccount = Account.create()
    attacker_common, attacker_encrypted = Point.generator_mul(5), Point.generator_mul(6)
    key_id = os.urandom(32)
    owner = SecretStoreClient(urls(net), author)
    server_key = owner.generate_server_key(key_id, 1)

    # What an eavesdropper saw: the generation URL (its path signature) and its bound headers.
    seen_signature = owner.sign_key_id(key_id)
    seen_headers = bound_headers(author, "generate_server_key", key_id, b.threshold_arguments(1))
    store_path = codec.document_key_storing_path(key_id, seen_signature, attacker_common, attacker_encrypted)
    for url in urls(net):
        bare = requests.post(url + store_path, timeout=10)
        assert "requires a bound signature for store_document_key" in refusal(bare)
        replayed = requests.post(url + store_path, headers=seen_headers, timeout=10)
        assert "not by the path signature's signer, or not for this store_document_key request" in refusal(replayed)
        # and no signature reaches the refusal's text
        assert seen_signature.hex() not in bare.text + replayed.text

    # The author's own store (bound, by the SDK) still works, and the author's key is the one served.
    document_key, common, encrypted = generate_document_key(server_key)
    owner.store_document_key(key_id, common, encrypted)
    for url in urls(net):
        assert SecretStoreClient(url, author).recover_document_key(key_id) == document_key


def test_bare_generation_is_refused_and_retrieval_is_not_required(net: devnet.DevnetState) -> None:
    author: LocalAccount = Account.create()
    key_id = os.urandom(32)
    signature = sign_raw_hash(author.key, key_id)
    for path, operation in ((codec.server_key_generation_path(key_id, signature, 1), "generate_server_key"),
                            (codec.server_and_document_key_generation_path(key_id, signature, 1),
                             "generate_document_key")):
        reply = requests.post(net.nodes[0].http_url + path, timeout=10)
        assert f"requires a bound signature for {operation}" in refusal(reply)
    with pytest.raises(InsufficientRequesterData, match="requires a bound signature"):
        SecretStoreClient(urls(net), author, bound_signatures=False).generate_server_key(key_id, 1)
    # Nothing was generated, so the SDK's bound generation succeeds; a bare retrieval (not required) works.
    server_key = SecretStoreClient(urls(net), author).generate_server_key(key_id, 1)
    reply = requests.get(net.nodes[1].http_url + codec.server_key_retrieval_path(key_id, signature), timeout=10)
    assert reply.status_code == 200
    assert codec.decode_point_response(reply.content) == server_key


def test_a_replayed_bound_request_is_refused_by_the_entry_node_and_by_every_member(net: devnet.DevnetState) -> None:
    author: LocalAccount = Account.create()
    key_id = os.urandom(32)
    server_key = SecretStoreClient(urls(net), author).generate_server_key(key_id, 1)
    _, common, encrypted = generate_document_key(server_key)
    signature = sign_raw_hash(author.key, key_id)
    path = codec.document_key_storing_path(key_id, signature, common, encrypted)
    headers = bound_headers(author, "store_document_key", key_id, b.store_arguments(common, encrypted))
    assert requests.post(net.nodes[0].http_url + path, headers=headers, timeout=10).status_code == 200
    # The same request again: the entry node saw the nonce; so did every member, which checked the store.
    for url in urls(net):
        assert "nonce was used already" in refusal(requests.post(url + path, headers=headers, timeout=10))

    # A retrieval replayed to the node that served it.
    get_path = codec.document_key_shadow_retrieval_path(key_id, signature)
    get_headers = bound_headers(author, "retrieve_document_key_shadow", key_id, b.no_arguments())
    assert requests.get(net.nodes[2].http_url + get_path, headers=get_headers, timeout=10).status_code == 200
    assert "nonce was used already" in refusal(requests.get(net.nodes[2].http_url + get_path, headers=get_headers,
                                                            timeout=10))


def test_an_expired_or_too_long_bound_signature_is_refused(net: devnet.DevnetState) -> None:
    author: LocalAccount = Account.create()
    key_id = os.urandom(32)
    path = codec.server_key_generation_path(key_id, sign_raw_hash(author.key, key_id), 1)
    now = int(time.time())
    expired = bound_headers(author, "generate_server_key", key_id, b.threshold_arguments(1), expiry=now - 1)
    assert refusal(requests.post(net.nodes[0].http_url + path, headers=expired, timeout=10)).endswith(
        "bound signature expired")
    too_long = bound_headers(author, "generate_server_key", key_id, b.threshold_arguments(1), expiry=now + 600)
    assert "more than 60 s ahead" in refusal(requests.post(net.nodes[0].http_url + path, headers=too_long,
                                                             timeout=10))
    # a bound signature for another threshold does not verify for this one
    other = bound_headers(author, "generate_server_key", key_id, b.threshold_arguments(0))
    assert "not for this generate_server_key request" in refusal(
        requests.post(net.nodes[0].http_url + path, headers=other, timeout=10))
    malformed = {b.HEADER: "1;nonce;soon", b.SIGNATURE_HEADER: "00" * 65}
    assert f"{b.HEADER} must be" in refusal(requests.post(net.nodes[0].http_url + path, headers=malformed,
                                                          timeout=10))


def test_the_sdk_publish_and_retrieve_flow_works(net: devnet.DevnetState) -> None:
    author: LocalAccount = Account.create()
    document_id = os.urandom(32).hex()
    with SecretStoreClient(urls(net), author) as client:
        encrypted = client.publish_document(document_id, "bound and delivered", threshold=1)
        assert client.decrypt_document(document_id, encrypted) == "bound and delivered"
        assert client.generate_server_and_document_key(os.urandom(32), 1) is not None
