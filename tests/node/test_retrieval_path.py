"""The retrieval path's shortcuts (issue 18 item 5) keep its results: a requester remembered by its
signature is the one recovery gives, a bad signature is refused every time, and a round's requests
are written before the entry node computes its own part."""

from __future__ import annotations

import asyncio
import dataclasses
import os

import pytest

from ocean_secret_store.crypto.curve import G, N, random_scalar
from ocean_secret_store.crypto.hashes import address_of
from ocean_secret_store.crypto.sharing import shadow_coefficient
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.exceptions import InsufficientRequesterData, InvalidShare
from ocean_secret_store.node.sessions.base import Requester
from ocean_secret_store.node.sessions.groups import Attempt, requests_away
from ocean_secret_store.protocol import messages as m


def test_a_remembered_requester_is_the_recovered_one() -> None:
    secret, key_id = random_scalar(), os.urandom(32)
    signature = sign_raw_hash(secret, key_id)
    first = Requester.from_signature(signature, key_id)
    again = Requester.from_signature(bytearray(signature), key_id)
    assert first == again == Requester(G * secret, address_of(G * secret))
    # The same signature over another key id: remembered by both, so another requester.
    assert Requester.from_signature(signature, os.urandom(32)) != first


def test_a_bad_signature_is_refused_every_time() -> None:
    key_id = os.urandom(32)
    bad = bytes(64) + b"\x00"  # r = s = 0
    for _ in range(2):
        with pytest.raises(InsufficientRequesterData, match="bad signature"):
            Requester.from_signature(bad, key_id)


def test_a_remembered_coefficient_is_the_computed_one_and_a_bad_set_still_fails() -> None:
    expected = 5 * 7 * pow((3 - 5) * (3 - 7), -1, N) % N
    assert shadow_coefficient(3, [5, 7]) == shadow_coefficient(3, iter((5, 7))) == expected
    for _ in range(2):
        with pytest.raises(InvalidShare):
            shadow_coefficient(3, [5, 3])


def test_a_rounds_requests_are_written_before_the_callers_own_part() -> None:
    order: list[str] = []

    async def request(node: bytes) -> bytes:
        order.append(f"sent {node.hex()}")  # what core.request does before its first wait: the write
        await asyncio.sleep(0.01)
        return node

    async def entry() -> dict[bytes, bytes]:
        attempt = Attempt((b"\x01", b"\x02"))
        pending = asyncio.ensure_future(attempt.round({n: request(n) for n in attempt.chosen}))
        await requests_away()
        order.append("own part")
        return await pending

    assert asyncio.run(entry()) == {b"\x01": b"\x01", b"\x02": b"\x02"}
    assert order == ["sent 01", "sent 02", "own part"]


def test_one_body_sent_to_several_members_keeps_each_request_id() -> None:
    body = m.DecryptRequest(key_id=os.urandom(32), signature=os.urandom(65), version=os.urandom(32),
                            access_key=12345, group=tuple(os.urandom(64) for _ in range(3)), shadow=True)
    first, second = m.encode(m.Envelope(body, rid=1)), m.encode(m.Envelope(body, rid=2))
    assert m.decode(first) == m.Envelope(body, rid=1) and m.decode(second) == m.Envelope(body, rid=2)
    assert first.replace(b'"rid":1,', b'"rid":2,', 1) == second
    other = dataclasses.replace(body, access_key=54321)  # another body: encoded afresh
    assert m.decode(m.encode(m.Envelope(other, rid=3))).body == other
