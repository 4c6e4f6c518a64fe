"""SecretStoreClient against real local HTTP servers that emulate Parity key server nodes.

The fake nodes speak Parity's HTTP API (parsed with ``protocol.http.parse_request``, errors
answered with ``protocol.http.error_response``) and compute real results with the project's
crypto: the server secret ``y`` is kept whole, and shadow retrieval splits it over ``t+1``
virtual nodes so that the client's sign rules for even and odd ``t`` are exercised. Several
HTTP servers can front one :class:`FakeCluster` (equivalent entry points, as in a cluster).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
import requests
from aiohttp import web
from eth_account import Account
from eth_account.signers.local import LocalAccount

from ocean_secret_store.client.client import DocumentKeyShadow, SecretStoreClient
from ocean_secret_store.crypto import ecies, schnorr, shadows, signatures
from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.crypto.document import encrypt_secret
from ocean_secret_store.crypto.hashes import address_of, servers_set_hash
from ocean_secret_store.crypto.sharing import evaluate, random_polynomial
from ocean_secret_store.exceptions import (
    AccessDenied,
    ClientError,
    ConsensusUnreachable,
    DecryptionFailed,
    DocumentKeyAlreadyStored,
    DocumentKeyIsNotFound,
    InsufficientRequesterData,
    InternalError,
    InvalidScalar,
    InvalidSignature,
    KeyServerError,
    MalformedHex,
    NodeDisconnected,
    NodeUnreachable,
    NotEnoughNodesForThreshold,
    SecretStoreError,
    ServerKeyAlreadyGenerated,
    ServerKeyIsNotFound,
)
from ocean_secret_store.protocol import http as ss_http
from ocean_secret_store.testing.servers import ServerThread, closed_port_url

# -- the fake cluster ----------------------------------------------------------------------


@dataclass
class FakeKey:
    secret: int
    threshold: int
    author: bytes
    common_point: Point | None = None
    encrypted_point: Point | None = None

    @property
    def public(self) -> Point:
        return Point.generator_mul(self.secret)

    @property
    def document_key(self) -> Point:
        assert self.common_point is not None and self.encrypted_point is not None
        return self.encrypted_point - self.common_point * self.secret


@dataclass
class FakeCluster:
    """The state all fake nodes share, and Parity's per-endpoint rules (protocol.md §1.4)."""

    node_count: int = 3
    admin: Point | None = None
    keys: dict[bytes, FakeKey] = field(default_factory=dict)
    #: Requester addresses the ACL refuses (answered as Parity does: 403 Consensus unreachable).
    denied: set[bytes] = field(default_factory=set)
    node_ids: list[Point] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.node_ids = [Point.generator_mul(random_scalar()) for _ in range(self.node_count)]

    @staticmethod
    def _requester(request: ss_http.Request) -> Point:
        try:
            return signatures.recover_public(request.signature, request.key_id)  # type: ignore[union-attr]  # every request but ServersSetChange (handled first) has both
        except InvalidSignature as exc:
            raise InsufficientRequesterData(f"bad signature: {exc}") from exc

    def _generate(self, key_id: bytes, threshold: int, author: bytes) -> FakeKey:
        if threshold >= self.node_count:
            raise NotEnoughNodesForThreshold()
        if key_id in self.keys:
            raise ServerKeyAlreadyGenerated()
        key = FakeKey(random_scalar(), threshold, author)
        self.keys[key_id] = key
        return key

    def _key(self, key_id: bytes) -> FakeKey:
        key = self.keys.get(key_id)
        if key is None:
            raise ServerKeyIsNotFound()
        return key

    def _readable(self, key_id: bytes, requester: Point, need_document_key: bool) -> FakeKey:
        key = self._key(key_id)
        if need_document_key and key.common_point is None:
            raise DocumentKeyIsNotFound()
        if address_of(requester) in self.denied:
            raise ConsensusUnreachable()
        return key

    def _shadow_result(self, key: FakeKey, requester: Point) -> bytes:
        """Shadow-mode decryption by a consensus group of ``t+1`` virtual nodes (protocol.md §2.7)."""
        assert key.common_point is not None and key.encrypted_point is not None
        t = key.threshold
        polynomial = random_polynomial(t, constant=key.secret)
        xs = [random_scalar() for _ in range(t + 1)]
        access_key = random_scalar()
        points, blobs = [], []
        for i, x in enumerate(xs):
            node_shadow = shadows.node_shadow(evaluate(polynomial, x), x, xs[:i] + xs[i + 1 :])
            point, blob = shadows.shadow_decryption(node_shadow, access_key, key.common_point, requester)
            points.append(point)
            blobs.append(blob)
        decrypted_secret = shadows.combine_shadow_points(points, access_key, key.encrypted_point, t)
        common_point = shadows.requester_common_point(key.common_point, t)
        return ss_http.encode_shadow(decrypted_secret, common_point, blobs)

    def handle(self, request: ss_http.Request) -> bytes:
        if isinstance(request, ss_http.ServersSetChange):
            return self._servers_set_change(request)
        requester = self._requester(request)
        author = address_of(requester)
        match request:
            case ss_http.GenerateServerKey(key_id=key_id, threshold=t):
                reply = ss_http.encode_point(self._generate(key_id, t, author).public)
            case ss_http.StoreDocumentKey(key_id=key_id):
                self._store(request, author)
                reply = b""
            case ss_http.GenerateDocumentKey(key_id=key_id, threshold=t):
                key = self._generate(key_id, t, author)
                document_key = Point.generator_mul(random_scalar())
                key.common_point, key.encrypted_point = encrypt_secret(document_key, key.public)
                reply = ss_http.encode_bytes(ecies.encrypt(requester, document_key.to_bytes()))
            case ss_http.RetrieveServerKey(key_id=key_id):
                key = self._key(key_id)
                if key.author != author:
                    raise AccessDenied()
                reply = ss_http.encode_point(key.public)
            case ss_http.RetrieveDocumentKey(key_id=key_id):
                key = self._readable(key_id, requester, need_document_key=True)
                reply = ss_http.encode_bytes(ecies.encrypt(requester, key.document_key.to_bytes()))
            case ss_http.RetrieveDocumentKeyShadow(key_id=key_id):
                key = self._readable(key_id, requester, need_document_key=True)
                reply = self._shadow_result(key, requester)
            case ss_http.SchnorrSign(key_id=key_id, message_hash=message_hash):
                key = self._readable(key_id, requester, need_document_key=False)
                c, s = schnorr.sign(key.secret, message_hash)
                reply = ss_http.encode_bytes(ecies.encrypt(requester, schnorr.signature_bytes(c, s)))
            case ss_http.EcdsaSign(key_id=key_id, message_hash=message_hash):
                key = self._readable(key_id, requester, need_document_key=False)
                signature = signatures.sign_raw_hash(key.secret, message_hash)
                reply = ss_http.encode_bytes(ecies.encrypt(requester, signature))
            case _:
                raise AssertionError(f"unhandled request {request!r}")
        return reply

    def _store(self, request: ss_http.StoreDocumentKey, author: bytes) -> None:
        key = self.keys.get(request.key_id)
        if key is None:
            return  # Parity's quirk: storing for an unknown key "succeeds"
        if key.author != author:
            raise AccessDenied()
        if key.common_point is not None:
            raise DocumentKeyAlreadyStored()
        key.common_point, key.encrypted_point = request.common_point, request.encrypted_point

    def _servers_set_change(self, request: ss_http.ServersSetChange) -> bytes:
        if self.admin is None:
            raise AccessDenied()
        for signature, node_set in (
            (request.old_set_signature, self.node_ids),
            (request.new_set_signature, request.new_servers_set),
        ):
            try:
                signer = signatures.recover_public(signature, servers_set_hash(node_set))
            except InvalidSignature as exc:
                raise AccessDenied() from exc
            if signer != self.admin:
                raise AccessDenied()
        self.node_ids = list(request.new_servers_set)
        return b""


@dataclass
class FakeNode:
    """One HTTP entry point to a :class:`FakeCluster`; ``fail_with`` makes it answer only that error."""

    cluster: FakeCluster
    fail_with: KeyServerError | None = None
    #: Answer every request with 200 and a body that is not Parity's.
    garbage: bool = False
    seen: list[tuple[str, str]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((request.method, request.raw_path))
        if self.garbage:
            return web.Response(status=200, body=b"<html>proxy</html>")
        try:
            if self.fail_with is not None:
                raise self.fail_with
            parsed = ss_http.parse_request(request.method, request.raw_path, body)
            payload = self.cluster.handle(parsed)
        except ss_http.BadRequest:
            return web.Response(status=ss_http.BAD_REQUEST_STATUS)
        except KeyServerError as error:
            status, error_body = ss_http.error_response(error)
            headers = {"Content-Type": ss_http.CONTENT_TYPE_JSON}
            return web.Response(status=status, body=error_body, headers=headers)
        if not payload:
            return web.Response(status=200)
        return web.Response(status=200, body=payload, headers={"Content-Type": ss_http.CONTENT_TYPE_JSON})


def serve(server_thread: ServerThread, node: FakeNode) -> FakeNode:
    """Serve ``node`` on its own loopback port of ``server_thread``, every method and path to its handler."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", node.handle)
    node.url = server_thread.start(app)
    return node


@pytest.fixture(scope="module")
def server_thread() -> Iterator[ServerThread]:
    thread = ServerThread()
    yield thread
    thread.close()


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def start_node(server_thread: ServerThread, cluster: FakeCluster) -> Iterator[Callable[..., FakeNode]]:
    def start(**options: object) -> FakeNode:
        return serve(server_thread, FakeNode(cluster, **options))  # type: ignore[arg-type]  # options are FakeNode fields

    yield start
    server_thread.stop_all()


@pytest.fixture
def node(start_node: Callable[..., FakeNode]) -> FakeNode:
    return start_node()


@pytest.fixture
def dead_url() -> str:
    """A loopback port nobody listens on: connections are refused."""
    return closed_port_url()


@pytest.fixture
def hanging_url() -> Iterator[str]:
    """A port that accepts connections (in the kernel backlog) but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def author() -> LocalAccount:
    return Account.create()


@pytest.fixture
def client(node: FakeNode, author: LocalAccount) -> Iterator[SecretStoreClient]:
    with SecretStoreClient(node.url, author) as c:
        yield c


def new_key_id() -> bytes:
    return os.urandom(32)


# -- high level: Ocean's publish / decrypt -----------------------------------------------------


@pytest.mark.parametrize("threshold", [0, 1, 2])
def test_publish_then_decrypt_round_trip(node: FakeNode, cluster: FakeCluster, threshold: int) -> None:
    publisher, consumer = Account.create(), Account.create()
    document = f'{{"files": ["https://example.com/ü.csv"], "n": {threshold}}}'
    document_id = new_key_id().hex()
    with SecretStoreClient(node.url, publisher) as ours:
        encrypted = ours.publish_document(document_id, document, threshold)
    assert encrypted.startswith("0x") and encrypted == encrypted.lower()
    assert len(bytes.fromhex(encrypted[2:])) == len(document.encode("utf-8")) + 16
    key = cluster.keys[bytes.fromhex(document_id)]
    assert key.threshold == threshold and key.author == bytes.fromhex(publisher.address[2:])
    # Anyone the ACL admits decrypts; the id and the document are accepted with or without 0x.
    with SecretStoreClient([node.url], consumer) as theirs:
        assert theirs.decrypt_document("0x" + document_id, encrypted) == document
        assert theirs.decrypt_document(document_id.upper(), encrypted[2:]) == document


def test_decrypt_with_another_documents_key_fails(client: SecretStoreClient) -> None:
    first, second = new_key_id().hex(), new_key_id().hex()
    encrypted = client.publish_document(first, "x" * 200)
    client.publish_document(second, "y")
    with pytest.raises(DecryptionFailed, match="not UTF-8"):
        client.decrypt_document(second, encrypted)


@pytest.mark.parametrize(
    ("document_id", "message"),
    [
        ("ab" * 31, "32 bytes"),
        ("zz" * 32, "hex digits"),
        ("0x" + "a" * 63, "hex digits"),
        (b"\x01" * 32, "hex string"),
    ],
)
def test_publish_rejects_bad_document_ids(
    client: SecretStoreClient, node: FakeNode, document_id: object, message: str
) -> None:
    with pytest.raises(MalformedHex, match=message):
        client.publish_document(document_id, "doc")  # type: ignore[arg-type]  # bad input on purpose
    assert node.seen == []


def test_decrypt_rejects_bad_encrypted_document(client: SecretStoreClient, node: FakeNode) -> None:
    with pytest.raises(MalformedHex):
        client.decrypt_document(new_key_id().hex(), "0xabc")
    assert node.seen == []


# -- low level: one call per endpoint --------------------------------------------------------


def test_sign_key_id_is_a_raw_hash_signature(client: SecretStoreClient, author: LocalAccount) -> None:
    key_id = new_key_id()
    signature = client.sign_key_id(key_id)
    assert len(signature) == 65 and signature[64] in (0, 1)
    signer = signatures.recover_address(signature, key_id)
    assert signer == bytes.fromhex(author.address[2:])
    assert client.address == author.address
    with pytest.raises(ss_http.BadRequest):
        client.sign_key_id(key_id[:31])


def test_generate_and_retrieve_server_key(client: SecretStoreClient, cluster: FakeCluster) -> None:
    key_id = new_key_id()
    server_key = client.generate_server_key(key_id, 1)
    assert server_key == cluster.keys[key_id].public
    assert client.retrieve_server_key(key_id) == server_key


def test_store_then_retrieve_document_key_all_ways(client: SecretStoreClient, cluster: FakeCluster) -> None:
    key_id = new_key_id()
    server_key = client.generate_server_key(key_id, 2)
    document_key = Point.generator_mul(random_scalar())
    common_point, encrypted_point = encrypt_secret(document_key, server_key)
    client.store_document_key(key_id, common_point, encrypted_point)
    assert cluster.keys[key_id].document_key == document_key

    assert client.retrieve_document_key(key_id) == document_key
    shadow = client.retrieve_document_key_shadow(key_id)
    assert isinstance(shadow, DocumentKeyShadow)
    assert len(shadow.decrypt_shadows) == 3  # t + 1
    assert shadow.common_point == common_point  # t even: C' = C
    assert client.recover_document_key(key_id) == document_key


def test_generate_server_and_document_key(client: SecretStoreClient, cluster: FakeCluster) -> None:
    key_id = new_key_id()
    document_key = client.generate_server_and_document_key(key_id, 1)
    assert document_key == cluster.keys[key_id].document_key
    assert client.recover_document_key(key_id) == document_key


def test_schnorr_sign_is_verified_against_the_server_key(node: FakeNode, client: SecretStoreClient) -> None:
    key_id, message_hash = new_key_id(), os.urandom(32)
    server_key = client.generate_server_key(key_id, 0)
    c, s = client.schnorr_sign(key_id, message_hash)  # Y known from the generation
    schnorr.verify(server_key, (c, s), message_hash)

    with SecretStoreClient(node.url, Account.create()) as signer:
        # Not the author and Y not given: returned without verification.
        schnorr.verify(server_key, signer.schnorr_sign(key_id, message_hash), message_hash)
        assert len(signer.schnorr_sign(key_id, message_hash, server_key=server_key)) == 2
        with pytest.raises(InvalidSignature):
            signer.schnorr_sign(key_id, message_hash, server_key=Point.generator_mul(random_scalar()))


def test_ecdsa_sign_recovers_to_the_server_key(node: FakeNode, client: SecretStoreClient) -> None:
    key_id, message_hash = new_key_id(), os.urandom(32)
    server_key = client.generate_server_key(key_id, 0)
    signature = client.ecdsa_sign(key_id, message_hash)
    assert signatures.recover_public(signature, message_hash) == server_key
    with SecretStoreClient(node.url, Account.create()) as signer, pytest.raises(InvalidSignature):
        signer.ecdsa_sign(key_id, message_hash, server_key=Point.generator_mul(random_scalar()))


def test_sign_ecdsa_checks_the_key_and_gives_the_ethereum_form(node: FakeNode, client: SecretStoreClient) -> None:
    from ocean_secret_store.client.client import ethereum_signature

    key_id, message_hash = new_key_id(), os.urandom(32)
    server_key = client.generate_server_key(key_id, 0)
    address = address_of(server_key)
    raw = client.sign_ecdsa(key_id, message_hash)  # checked against the Y this client generated
    assert raw[64] in (0, 1)
    ethereum = client.sign_ecdsa(key_id, message_hash, ethereum=True)
    assert ethereum == ethereum_signature(raw) == raw[:64] + bytes([raw[64] + 27])
    assert Account._recover_hash(message_hash, signature=ethereum).lower() == "0x" + address.hex()
    with SecretStoreClient(node.url, Account.create()) as signer:
        # a signer who is not the author knows the key's address, not Y
        assert signer.sign_ecdsa(key_id, message_hash, address="0x" + address.hex()) == raw
        assert signer.sign_ecdsa(key_id, message_hash, address=address) == raw
        with pytest.raises(InvalidSignature, match="address"):
            signer.sign_ecdsa(key_id, message_hash, address=os.urandom(20))
        with pytest.raises(ss_http.BadRequest):
            signer.sign_ecdsa(key_id, message_hash[:31])
    with pytest.raises(InvalidSignature):
        ethereum_signature(raw[:64] + b"\x02")


def test_change_servers_set_is_signed_by_the_administrator(node: FakeNode, cluster: FakeCluster) -> None:
    admin = Account.create()
    cluster.admin = Point.generator_mul(int.from_bytes(admin.key, "big"))
    new_set = [*cluster.node_ids[:2], Point.generator_mul(random_scalar())]
    with SecretStoreClient(node.url, Account.create()) as stranger, pytest.raises(AccessDenied):
        stranger.change_servers_set(cluster.node_ids, new_set)
    with SecretStoreClient(node.url, admin) as ours:
        ours.change_servers_set(cluster.node_ids, new_set)
    assert sorted(p.to_bytes() for p in cluster.node_ids) == sorted(p.to_bytes() for p in new_set)


# -- Parity errors -> typed exceptions ---------------------------------------------------------


def test_access_denied_403_for_a_non_author(node: FakeNode, client: SecretStoreClient) -> None:
    key_id = new_key_id()
    client.generate_server_key(key_id, 0)
    with SecretStoreClient(node.url, Account.create()) as other, pytest.raises(AccessDenied) as caught:
        other.retrieve_server_key(key_id)
    assert caught.value.status == 403 and str(caught.value) == "Access denied"


def test_server_key_is_not_found_404(client: SecretStoreClient) -> None:
    with pytest.raises(ServerKeyIsNotFound) as caught:
        client.retrieve_server_key(new_key_id())
    assert caught.value.status == 404 and str(caught.value) == "Server key with this ID is not found"


def test_server_key_already_generated_400(client: SecretStoreClient) -> None:
    key_id = new_key_id()
    client.generate_server_key(key_id, 0)
    with pytest.raises(ServerKeyAlreadyGenerated) as caught:
        client.generate_server_key(key_id, 0)
    assert caught.value.status == 400


def test_document_key_errors(client: SecretStoreClient) -> None:
    key_id = new_key_id()
    server_key = client.generate_server_key(key_id, 0)
    with pytest.raises(DocumentKeyIsNotFound):
        client.recover_document_key(key_id)
    client.store_document_key(key_id, *encrypt_secret(Point.generator_mul(random_scalar()), server_key))
    with pytest.raises(DocumentKeyAlreadyStored):
        client.store_document_key(key_id, *encrypt_secret(Point.generator_mul(random_scalar()), server_key))


def test_not_enough_nodes_for_threshold_500(client: SecretStoreClient, cluster: FakeCluster) -> None:
    with pytest.raises(NotEnoughNodesForThreshold):
        client.generate_server_key(new_key_id(), cluster.node_count)


def test_unparseable_request_gives_internal_error_naming_the_status(node: FakeNode, author: LocalAccount) -> None:
    # A path prefix the node does not serve turns every request into Parity's empty 400.
    with SecretStoreClient(node.url + "/extra", author) as c, pytest.raises(InternalError, match="HTTP 400"):
        c.retrieve_server_key(new_key_id())


def test_a_200_that_is_not_parity_raises_bad_response(
    start_node: Callable[..., FakeNode], author: LocalAccount
) -> None:
    broken, good = start_node(garbage=True), start_node()
    with SecretStoreClient([broken.url, good.url], author) as c, pytest.raises(ss_http.BadResponse):
        c.retrieve_server_key(new_key_id())
    assert good.seen == []


# -- failover --------------------------------------------------------------------------------


def test_get_fails_over_from_a_refusing_node(
    dead_url: str, node: FakeNode, client: SecretStoreClient, author: LocalAccount
) -> None:
    key_id = new_key_id()
    server_key = client.generate_server_key(key_id, 0)
    with SecretStoreClient([dead_url, node.url], author) as c:
        assert c.retrieve_server_key(key_id) == server_key


def test_get_fails_over_on_5xx_and_sticks_to_the_node_that_answered(
    start_node: Callable[..., FakeNode], author: LocalAccount
) -> None:
    unable, good = start_node(fail_with=NodeDisconnected()), start_node()
    key_id = new_key_id()
    with SecretStoreClient([unable.url, good.url], author) as c:
        # POSTs go to one node: the first URL until another has answered.
        with pytest.raises(NodeDisconnected):
            c.generate_server_key(key_id, 0)
        assert len(unable.seen) == 1 and good.seen == []
        with pytest.raises(ServerKeyIsNotFound):
            c.retrieve_server_key(key_id)  # the 5xx node is skipped, the 404 is the cluster's answer
        assert len(unable.seen) == 2 and len(good.seen) == 1
        server_key = c.generate_server_key(key_id, 0)  # now sent to the node that answered
        assert c.retrieve_server_key(key_id) == server_key
    assert len(unable.seen) == 2 and len(good.seen) == 3


def test_get_fails_over_from_a_node_that_never_answers(
    hanging_url: str, node: FakeNode, author: LocalAccount
) -> None:
    with SecretStoreClient([hanging_url, node.url], author, timeout=0.5) as c, pytest.raises(ServerKeyIsNotFound):
        c.retrieve_server_key(new_key_id())
    assert len(node.seen) == 1


def test_all_nodes_unreachable_names_every_url(dead_url: str, hanging_url: str, author: LocalAccount) -> None:
    with SecretStoreClient([dead_url, hanging_url], author, timeout=0.3) as c, pytest.raises(NodeUnreachable) as caught:
        c.retrieve_document_key_shadow(new_key_id())
    assert caught.value.urls == (dead_url, hanging_url)
    message = str(caught.value)
    assert dead_url in message and hanging_url in message and "Connection refused" in message


def test_all_nodes_unable_raises_the_last_answer(start_node: Callable[..., FakeNode], author: LocalAccount) -> None:
    first = start_node(fail_with=NodeDisconnected())
    second = start_node(fail_with=InternalError("disk full"))
    with SecretStoreClient([first.url, second.url], author) as c, pytest.raises(InternalError, match="disk full"):
        c.retrieve_server_key(new_key_id())
    assert len(first.seen) == len(second.seen) == 1


def test_post_to_a_dead_node_is_not_retried(dead_url: str, node: FakeNode, author: LocalAccount) -> None:
    key_id = new_key_id()
    with SecretStoreClient([dead_url, node.url], author) as c:
        signature_hex = c.sign_key_id(key_id).hex()
        with pytest.raises(NodeUnreachable) as caught:
            c.generate_server_key(key_id, 0)
    assert caught.value.urls == (dead_url,)
    message = str(caught.value)
    assert dead_url in message and "not sent" in message and "not retried" in message
    # The path (with the bearer signature) is neither in the message nor chained.
    assert signature_hex not in message and key_id.hex() not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert author.key.hex() not in message
    assert node.seen == []


def test_post_to_a_silent_node_says_it_may_have_completed(
    hanging_url: str, node: FakeNode, author: LocalAccount
) -> None:
    with (
        SecretStoreClient([hanging_url, node.url], author, timeout=0.3) as c,
        pytest.raises(NodeUnreachable) as caught,
    ):
        c.store_document_key(new_key_id(), Point.generator_mul(2), Point.generator_mul(3))
    assert "may still complete" in str(caught.value) and hanging_url in str(caught.value)
    assert node.seen == []


@pytest.mark.parametrize("denial", ["acl", "author"])
def test_403_is_not_failed_over(
    start_node: Callable[..., FakeNode], cluster: FakeCluster, denial: str
) -> None:
    first, second = start_node(), start_node()
    publisher, reader = Account.create(), Account.create()
    document_id = new_key_id().hex()
    with SecretStoreClient(first.url, publisher) as ours:
        encrypted = ours.publish_document(document_id, "secret doc")
    cluster.denied.add(bytes.fromhex(reader.address[2:]))
    seen_before = len(first.seen)
    # ACL refusal (Parity's 403 ConsensusUnreachable) or an author-only endpoint (AccessDenied).
    expected: type[KeyServerError] = ConsensusUnreachable if denial == "acl" else AccessDenied
    with SecretStoreClient([first.url, second.url], reader) as theirs, pytest.raises(expected) as caught:
        if denial == "acl":
            theirs.decrypt_document(document_id, encrypted)
        else:
            theirs.retrieve_server_key(bytes.fromhex(document_id))
    assert caught.value.status == 403
    assert len(first.seen) == seen_before + 1 and second.seen == []


# -- construction and hygiene ----------------------------------------------------------------


@pytest.mark.parametrize("urls", [[], "ftp://host:1", "http://", "http://host:1/?a=b", "http://host:port"])
def test_bad_urls_are_refused(urls: object, author: LocalAccount) -> None:
    with pytest.raises(ClientError):
        SecretStoreClient(urls, author)  # type: ignore[arg-type]  # bad input on purpose


def test_account_without_a_key_is_refused() -> None:
    with pytest.raises(InvalidScalar):
        SecretStoreClient("http://127.0.0.1:1", SimpleNamespace(key=None, address="0x0"))


def test_repr_hides_credentials_and_key(author: LocalAccount) -> None:
    c = SecretStoreClient(["http://user:hunter2@127.0.0.1:8082/"], author)
    text = repr(c)
    assert "hunter2" not in text and author.key.hex() not in text
    assert "http://127.0.0.1:8082" in text and author.address in text
    assert c.urls == ("http://user:hunter2@127.0.0.1:8082",)
    c.close()


def test_a_callers_session_is_used_and_left_open(node: FakeNode, author: LocalAccount) -> None:
    calls: list[str] = []

    class CountingSession(requests.Session):
        def request(self, method, url, *args, **kwargs):  # type: ignore[no-untyped-def]  # passes requests' signature through
            calls.append(method)
            return super().request(method, url, *args, **kwargs)

    with CountingSession() as session:
        c = SecretStoreClient(node.url, author, session=session)
        key_id = new_key_id()
        c.generate_server_key(key_id, 0)
        c.close()
        # Still usable after the client closed: the caller owns it.
        assert c.retrieve_server_key(key_id) is not None
    assert calls == ["POST", "GET"]


def test_every_client_error_is_a_secret_store_error() -> None:
    assert issubclass(NodeUnreachable, ClientError) and issubclass(ClientError, SecretStoreError)
