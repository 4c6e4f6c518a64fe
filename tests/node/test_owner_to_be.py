"""The key's owner-to-be (issue 13, docs/security.md finding 1): the opt-in header and its refusals,
the bound signature's arguments, the GenInit field, the share record and its schema migration, and
members deciding on the owner they stored themselves."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from eth_account import Account

from ocean_secret_store.client.client import SecretStoreClient
from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.crypto.document import generate_document_key
from ocean_secret_store.crypto.hashes import address_of
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.exceptions import DatabaseError, InvalidMessage, KeyServerError, MalformedHex
from ocean_secret_store.node.acl import Decision
from ocean_secret_store.node.storage import DB_FILENAME, SCHEMA_VERSION, KeyShare, KeyVersion, SqliteKeyStorage
from ocean_secret_store.protocol import bound as b
from ocean_secret_store.protocol import http as codec
from ocean_secret_store.protocol import messages as m
from ocean_secret_store.protocol import owner as ow

from .memnet import make_cluster
from .records import make_old_schema, write_record
from .records import stored as _raw
from .test_http_api import run_with_node

OWNER = bytes.fromhex("5a" * 20)
NODE_SECRET = random_scalar()
MALFORMED_TEXT = ("Insufficient requester data: X-Secret-Store-Owner must be 0x and 40 hex digits "
                  "(the owner-to-be's address)")
#: Parity's body for it: the display text in literal quotes, JSON-encoded (protocol/http.py error_response).
MALFORMED_BODY = json.dumps(f'"{MALFORMED_TEXT}"', ensure_ascii=False)


# -- the header --------------------------------------------------------------------------------


def test_the_header_parses_an_address_in_either_case() -> None:
    assert ow.parse_header(None) is None
    assert ow.parse_header("0x" + OWNER.hex()) == OWNER
    assert ow.parse_header("0x" + OWNER.hex().upper()) == OWNER
    assert ow.header_value(OWNER) == "0x" + OWNER.hex()


@pytest.mark.parametrize("value", ["", "5a" * 20, "0x" + "5a" * 19, "0x" + "5a" * 21, "0x" + "5g" * 20,
                                   "0x" + "5a" * 20 + ",0x" + "5a" * 20, "0X" + "5a" * 20])
def test_a_malformed_header_is_insufficient_requester_data(value: str) -> None:
    with pytest.raises(ow.OwnerHeaderError) as raised:
        ow.parse_header(value)
    assert raised.value.status == 400
    assert str(raised.value) == MALFORMED_TEXT


def test_the_zero_address_is_refused() -> None:
    with pytest.raises(ow.OwnerHeaderError, match="zero address"):
        ow.parse_header("0x" + "00" * 20)


def test_bound_arguments_include_the_owner_and_stay_as_they_were_without_one() -> None:
    assert b.threshold_arguments(1) == (1).to_bytes(8, "big")  # signatures made before owners stay valid
    assert b.threshold_arguments(1, OWNER) == (1).to_bytes(8, "big") + OWNER
    with pytest.raises(b.BoundSignatureError):
        b.threshold_arguments(1, OWNER[:19])


# -- the node's HTTP API -------------------------------------------------------------------------


def test_the_node_records_the_owner_and_refuses_a_malformed_or_misplaced_header(tmp_path: Path) -> None:
    async def scenario(node: Any) -> None:
        base = f"http://127.0.0.1:{node.http_port}"
        secret = random_scalar()
        async with aiohttp.ClientSession() as http:
            async def post(path: str, headers: dict[str, str]) -> tuple[int, str]:
                async with http.post(base + path, headers=headers) as response:
                    return response.status, await response.text()

            # malformed: 400 with Parity's quoted text, and no key
            key_id = os.urandom(32)
            path = codec.server_key_generation_path(key_id, sign_raw_hash(secret, key_id), 0)
            assert await post(path, {ow.HEADER: "0x1234"}) == (400, MALFORMED_BODY)
            assert not node.storage.contains(key_id)
            # well-formed: recorded with the share, audited
            assert (await post(path, {ow.HEADER: "0x" + OWNER.hex()}))[0] == 200
            assert node.storage.get(key_id).owner == OWNER
            assert f"owner-to-be 0x{OWNER.hex()}" in (node.config.data_dir / "audit.jsonl").read_text()
            # Parity's request, no header: no owner, the record in Parity's layout
            plain = os.urandom(32)
            assert (await post(codec.server_key_generation_path(plain, sign_raw_hash(secret, plain), 0), {}))[0] == 200
            assert node.storage.get(plain).owner is None
            # the combined endpoint takes it too
            both = os.urandom(32)
            path = codec.server_and_document_key_generation_path(both, sign_raw_hash(secret, both), 0)
            assert (await post(path, {ow.HEADER: "0x" + OWNER.hex()}))[0] == 200
            stored = node.storage.get(both)
            assert stored.owner == OWNER and stored.common_point is not None
            # on any other request the header is refused, not ignored
            async with http.get(base + codec.document_key_shadow_retrieval_path(both, sign_raw_hash(secret, both)),
                                headers={ow.HEADER: "0x" + OWNER.hex()}) as response:
                assert response.status == 400
                assert "taken only by key generation" in await response.text()

    run_with_node(tmp_path, scenario)


def test_a_bound_signature_covers_the_owner(tmp_path: Path) -> None:
    async def scenario(node: Any) -> None:
        base = f"http://127.0.0.1:{node.http_port}"
        secret = random_scalar()
        async with aiohttp.ClientSession() as http:
            async def generate(owner: bytes | None, signed_owner: bytes | None) -> tuple[int, str, bytes]:
                key_id = os.urandom(32)
                bound = b.sign(secret, "generate_server_key", key_id, b.threshold_arguments(0, signed_owner),
                               nonce=os.urandom(16), expiry=int(time.time()) + 30)
                headers = bound.headers()
                if owner is not None:
                    headers[ow.HEADER] = ow.header_value(owner)
                path = codec.server_key_generation_path(key_id, sign_raw_hash(secret, key_id), 0)
                async with http.post(base + path, headers=headers) as response:
                    return response.status, await response.text(), key_id

            status, _, key_id = await generate(OWNER, OWNER)
            assert status == 200 and node.storage.get(key_id).owner == OWNER
            status, _, key_id = await generate(None, None)  # a bound signature made before owners existed
            assert status == 200 and node.storage.get(key_id).owner is None
            # an owner added to a request signed without one (or another owner) is refused
            for signed in (None, bytes.fromhex("77" * 20)):
                status, text, key_id = await generate(OWNER, signed)
                assert status == 400 and "not for this generate_server_key request" in text, text
                assert not node.storage.contains(key_id)

    run_with_node(tmp_path, scenario)


def test_the_client_sends_the_owner(tmp_path: Path) -> None:
    async def scenario(node: Any) -> None:
        account = Account.create()
        key_id = os.urandom(32)

        def publish() -> str:
            with SecretStoreClient([f"http://127.0.0.1:{node.http_port}"], account) as client:
                encrypted = client.publish_document(key_id.hex(), "[1]", 0, owner="0x" + OWNER.hex())
                return client.decrypt_document(key_id.hex(), encrypted)

        assert await asyncio.to_thread(publish) == "[1]"
        assert node.storage.get(key_id).owner == OWNER

    run_with_node(tmp_path, scenario)


def test_the_client_checks_the_owner() -> None:
    client = SecretStoreClient(["http://127.0.0.1:1"], Account.create())
    with pytest.raises(codec.BadRequest):
        client.generate_server_key(os.urandom(32), 0, owner=b"\x01" * 19)
    with pytest.raises(MalformedHex):
        client.generate_server_key(os.urandom(32), 0, owner="0x12")


# -- GenInit -------------------------------------------------------------------------------------

IDS = {Point.generator_mul(5).to_bytes(): 3, Point.generator_mul(6).to_bytes(): 4}


def _gen_init(payload: bytes) -> m.GenInit:
    body = m.decode(payload).body
    if not isinstance(body, m.GenInit):
        raise TypeError(type(body).__name__)
    return body


def test_gen_init_carries_the_owner_and_an_earlier_nodes_message_has_none() -> None:
    with_owner = m.GenInit(session=b"\x01" * 32, author=b"\x02" * 20, threshold=1, id_numbers=IDS, owner=OWNER)
    wire = json.loads(m.encode(m.Envelope(with_owner, rid=1)))
    assert wire["owner"] == "0x" + OWNER.hex()
    assert _gen_init(m.encode(m.Envelope(with_owner, rid=1))).owner == OWNER
    del wire["owner"]  # what a node before owners-to-be sends
    decoded = _gen_init(json.dumps(wire).encode())
    assert decoded.owner is None and decoded.author == b"\x02" * 20
    wire["owner"] = None
    assert _gen_init(json.dumps(wire).encode()).owner is None
    for bad in ("0x" + "12" * 19, "12" * 20, 5):
        wire["owner"] = bad
        with pytest.raises(InvalidMessage) as raised:
            m.decode(json.dumps(wire).encode())
        assert "GenInit.owner" in (raised.value.detail or "")


# -- the record and the schema --------------------------------------------------------------------


def _share(owner: bytes | None = None) -> KeyShare:
    version = KeyVersion.new({Point.generator_mul(random_scalar()).to_bytes(): random_scalar()}, random_scalar())
    return KeyShare(author=os.urandom(20), threshold=0, public=Point.generator_mul(random_scalar()),
                    common_point=None, encrypted_point=None, versions=(version,), owner=owner)


def _stored(store: SqliteKeyStorage, key_id: bytes) -> KeyShare:
    share = store.get(key_id)
    if share is None:
        raise KeyError(key_id.hex())
    return share


def test_the_owner_is_stored_beside_parity_fields_and_authenticated(tmp_path: Path) -> None:
    key_id, plain_id = os.urandom(32), os.urandom(32)
    share = _share(OWNER)
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        store.insert(key_id, share)
        store.insert(plain_id, _share())
        # a document key stored later keeps the owner
        store.update(key_id, share.with_document_key(Point.generator_mul(2), Point.generator_mul(3)))
    assert list(_raw(tmp_path, key_id)) == ["author", "threshold", "public", "common_point", "encrypted_point",
                                            "versions", "owner"]
    assert _raw(tmp_path, key_id)["owner"] == "0x" + OWNER.hex()
    assert "owner" not in _raw(tmp_path, plain_id)  # no owner: Parity's layout exactly
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        assert _stored(store, key_id).owner == OWNER
        assert _stored(store, plain_id).owner is None
    # the owner drives access decisions: editing it (or adding one) on disk breaks the record's MAC
    for target, owner in ((key_id, "0x" + "66" * 20), (plain_id, "0x" + "66" * 20)):
        record = _raw(tmp_path, target)
        record["owner"] = owner
        write_record(tmp_path, target, record)  # under the MAC of the record as it was
        with SqliteKeyStorage(tmp_path, NODE_SECRET) as store, pytest.raises(DatabaseError, match="authentication"):
            store.get(target)


def test_a_version_2_database_is_migrated_and_its_records_read_without_an_owner(tmp_path: Path) -> None:
    key_id = os.urandom(32)
    share = _share()
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        store.insert(key_id, share)
    # What version 2 wrote: a V3 JSON record without "owner", user_version 2.
    make_old_schema(tmp_path, NODE_SECRET, 2)
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        (record,) = db.execute("SELECT record FROM keys").fetchone()
    assert "owner" not in json.loads(record)
    with SqliteKeyStorage(tmp_path, NODE_SECRET) as store:
        assert _stored(store, key_id) == share and _stored(store, key_id).owner is None
        other = os.urandom(32)
        store.insert(other, _share(OWNER))
        assert _stored(store, other).owner == OWNER
        while not store.migrate_step().done:  # what the node does in the background
            pass
    with sqlite3.connect(tmp_path / DB_FILENAME) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
        (migrated,) = db.execute("SELECT record FROM keys WHERE key_id = ?", (key_id,)).fetchone()
    assert migrated[0] == 1  # rewritten in the compact form of schema 6
    assert "owner" not in _raw(tmp_path, key_id)


def test_a_share_checks_its_owner() -> None:
    with pytest.raises(Exception, match="owner address is 20 bytes"):
        _share(b"\x01" * 19)


# -- members decide on what they stored ----------------------------------------------------------


class OwnerOnly:
    """Serves the owner-to-be a member recorded, nobody else (records what each member was asked)."""

    def __init__(self) -> None:
        self.asked: list[tuple[bytes, bytes | None]] = []

    async def decide(self, requester: bytes, key_id: bytes, author: bytes,
                     owner: bytes | None = None) -> Decision:
        self.asked.append((author, owner))
        return Decision(requester == owner, "owner-to-be" if requester == owner else "not the owner-to-be")

    async def close(self) -> None:
        return None


def test_every_member_records_the_owner_and_decides_on_its_own_record() -> None:
    async def scenario() -> None:
        _, cores = await make_cluster(3, acl_factory=OwnerOnly)
        try:
            author, owner = random_scalar(), random_scalar()
            owner_address = address_of(Point.generator_mul(owner))
            key_id = os.urandom(32)
            public = await cores[0].generate_server_key(key_id, sign_raw_hash(author, key_id), 1, owner=owner_address)
            _, common, encrypted = generate_document_key(public)
            await cores[0].store_document_key(key_id, sign_raw_hash(author, key_id), common, encrypted)
            for core in cores:
                stored = await core.load_key(key_id)
                assert stored is not None and stored.owner == owner_address
            # the owner-to-be retrieves through any entry node
            for core in cores:
                await core.retrieve_document_key_shadow(key_id, sign_raw_hash(owner, key_id))
            # two members lose the owner from their records: the entry node's record cannot speak for
            # them, and with t + 1 = 2 approvals needed the retrieval is refused
            for core in cores[1:]:
                stored = await core.load_key(key_id)
                assert stored is not None
                await core.update_key(key_id, KeyShare(stored.author, stored.threshold, stored.public,
                                                       stored.common_point, stored.encrypted_point, stored.versions))
            with pytest.raises(KeyServerError):
                await cores[0].retrieve_document_key_shadow(key_id, sign_raw_hash(owner, key_id))
        finally:
            for core in cores:
                await core.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))
