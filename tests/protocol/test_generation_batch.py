"""Batch server key generation on the wire: the bodies of ``POST /server_key_batch``
(protocol/generation_batch.py) — what parses, what is refused and why, the client's strict reading
of the answer — and the node-to-node messages' own checks and limits (protocol/messages.py)."""

from __future__ import annotations

import json

import pytest

from ocean_secret_store.crypto.curve import Point
from ocean_secret_store.exceptions import InvalidMessage, ServerKeyAlreadyGenerated
from ocean_secret_store.node.quotas import TooManyRequests
from ocean_secret_store.protocol import generation_batch as gb
from ocean_secret_store.protocol import messages as m
from ocean_secret_store.protocol.http import BadResponse

KEY1, KEY2 = b"\x01" * 32, b"\x02" * 32
SIG = b"\x07" * 65
OWNER = b"\x09" * 20
P = Point.generator_mul(3)
NODE1, NODE2 = Point.generator_mul(5).to_bytes(), Point.generator_mul(6).to_bytes()


def entry(**fields: object) -> dict[str, object]:
    return {"key_id": "0x" + KEY1.hex(), "signature": "0x" + SIG.hex(), **fields}


def test_requests_round_trip_with_one_threshold_or_one_each() -> None:
    same = [gb.GenerationItem(KEY1, SIG, 1), gb.GenerationItem(KEY2, SIG, 1, OWNER)]
    body = gb.encode_generation_request(same)
    assert json.loads(body)["threshold"] == 1 and "threshold" not in json.loads(body)["requests"][0]
    assert gb.parse_generation_request(body) == same
    mixed = [gb.GenerationItem(KEY1, SIG, 0), gb.GenerationItem(KEY2, SIG, 2)]
    assert gb.parse_generation_request(gb.encode_generation_request(mixed)) == mixed
    # an entry's own threshold wins over the batch's
    body = json.dumps({"threshold": 1, "requests": [entry(threshold=2), entry()]}).encode()
    assert [i.threshold for i in gb.parse_generation_request(body)] == [2, 1]


@pytest.mark.parametrize(("body", "problem"), [
    (b"\xff", "not JSON"),
    (b"[]", "object"),
    (json.dumps({"requests": [], "x": 1}).encode(), "object"),
    (json.dumps({"threshold": 1, "requests": []}).encode(), "no entry"),
    (json.dumps({"threshold": 1, "requests": [entry()] * (gb.MAX_BATCH + 1)}).encode(), "at most 1000"),
    (json.dumps({"requests": [entry()]}).encode(), "entry 0: no threshold"),
    (json.dumps({"threshold": -1, "requests": [entry()]}).encode(), "threshold must be"),
    (json.dumps({"threshold": True, "requests": [entry()]}).encode(), "threshold must be"),
    (json.dumps({"threshold": 1, "requests": [entry(), entry(threshold=256)]}).encode(), "entry 1: threshold"),
    (json.dumps({"threshold": 1, "requests": [entry(), {"key_id": "0x" + KEY1.hex()}]}).encode(), "entry 1: "),
    (json.dumps({"threshold": 1, "requests": [entry(key_id="0x" + "01" * 31)]}).encode(), "entry 0: key_id"),
    (json.dumps({"threshold": 1, "requests": [entry(owner="0x" + "00" * 20)]}).encode(), "zero address"),
    (json.dumps({"threshold": 1, "requests": [entry(owner="0x12")]}).encode(), "entry 0: owner"),
    (json.dumps({"threshold": 1, "requests": [entry(extra=1)]}).encode(), "entry 0: expected"),
])
def test_malformed_requests_are_refused_with_the_reason(body: bytes, problem: str) -> None:
    with pytest.raises(gb.BadGenerationBatch, match=problem):
        gb.parse_generation_request(body)


def test_a_full_batch_fits_the_body_limit() -> None:
    full = [gb.GenerationItem(bytes([i % 256]) * 32, SIG, 1, OWNER) for i in range(gb.MAX_BATCH)]
    body = gb.encode_generation_request(full)
    assert len(body) < gb.MAX_BATCH_BODY
    assert len(json.dumps(json.loads(body), indent=2).encode()) < gb.MAX_BATCH_BODY


def test_results_round_trip_each_key_its_public_or_its_error() -> None:
    refusal = TooManyRequests("key generation rate for this requester exceeded; retry in 0.4 s")
    body = gb.encode_generation_results([KEY1, KEY2, KEY1], [P, ServerKeyAlreadyGenerated(), refusal])
    items = json.loads(body)["results"]
    assert items[0] == {"key_id": "0x" + KEY1.hex(), "ok": "0x" + P.to_bytes().hex()}
    assert items[1]["error"]["name"] == "ServerKeyAlreadyGenerated" and items[2]["error"]["status"] == 429
    decoded = gb.decode_generation_response(body, [KEY1, KEY2, KEY1])
    assert decoded[0] == P
    assert isinstance(decoded[1], ServerKeyAlreadyGenerated)
    assert isinstance(decoded[2], TooManyRequests) and str(decoded[2]) == str(refusal)  # a client can wait and retry
    assert decoded[2].retry_after == pytest.approx(0.4)  # the text's "retry in", the only wait an entry carries


@pytest.mark.parametrize(("body", "problem"), [
    (b"{", "not JSON"),
    (b'{"results": 1}', "object"),
    (json.dumps({"results": []}).encode(), "0 results for 1 keys"),
    (json.dumps({"results": [{"key_id": "0x" + KEY2.hex(), "ok": "0x" + P.to_bytes().hex()}]}).encode(), "not for"),
    (json.dumps({"results": [{"key_id": "0x" + KEY1.hex(), "ok": "0x" + "11" * 64}]}).encode(), "not a point"),
    (json.dumps({"results": [{"key_id": "0x" + KEY1.hex()}]}).encode(), "neither"),
])
def test_a_malformed_answer_is_refused(body: bytes, problem: str) -> None:
    with pytest.raises(BadResponse, match=problem):
        gb.decode_generation_response(body, [KEY1])


# -- the cluster messages ----------------------------------------------------------------------


def test_a_session_carries_at_most_the_keys_its_messages_hold() -> None:
    assert m.gen_batch_size(1) == m.MAX_GEN_BATCH
    for threshold in (0, 1, 7, 24, 100, 255):
        size = m.gen_batch_size(threshold)
        assert 1 <= size <= m.MAX_GEN_BATCH and size * (threshold + 1) <= max(m.MAX_GEN_BATCH_POINTS, threshold + 1)
    # a full session's largest message (a dealing at t = 1) stays well inside a channel frame (1 MiB)
    size = m.gen_batch_size(1)
    dealing = m.GenBatchDealing(session=KEY1, keys=KEY2, secret1=(5,) * size, secret2=(6,) * size,
                                commitments=(P,) * (2 * size))
    assert len(m.encode(m.Envelope(dealing))) < 512 * 1024


def test_an_init_without_keys_or_with_a_key_twice_is_refused() -> None:
    key = m.GenBatchKey(key_id=KEY1, author=b"\x03" * 20, owner=None)
    with pytest.raises(InvalidMessage) as raised:
        m.GenBatchInit(session=KEY2, threshold=1, id_numbers={NODE1: 3, NODE2: 4}, keys=())
    assert "no key" in (raised.value.detail or "")
    with pytest.raises(InvalidMessage) as raised:
        m.GenBatchInit(session=KEY2, threshold=1, id_numbers={NODE1: 3, NODE2: 4}, keys=(key, key))
    assert "twice" in (raised.value.detail or "")
    wire = json.loads(m.encode(m.Envelope(m.GenBatchInit(session=KEY2, threshold=1, id_numbers={NODE1: 3, NODE2: 4},
                                                         keys=(key,)), rid=1)))
    wire["keys"] = wire["keys"] * 2
    with pytest.raises(InvalidMessage) as raised:
        m.decode(json.dumps(wire).encode())
    assert "twice" in (raised.value.detail or "")
    wire["keys"] = wire["keys"][:1] * (m.MAX_GEN_BATCH + 1)
    with pytest.raises(InvalidMessage) as raised:
        m.decode(json.dumps(wire).encode())
    assert "bounded" in (raised.value.detail or "")


def test_an_answer_names_one_error_per_refused_key() -> None:
    with pytest.raises(InvalidMessage) as raised:
        m.GenBatchAccepted(refused=(KEY1,), errors=())
    assert "one error per refused key" in (raised.value.detail or "")
    wire = json.loads(m.encode(m.Envelope(m.GenBatchAccepted(refused=(KEY1,), errors=("DuplicateSessionId",)),
                                          reply_to=1)))
    wire["errors"] = []
    with pytest.raises(InvalidMessage):
        m.decode(json.dumps(wire).encode())


def test_the_batch_digest_depends_on_the_keys_and_their_order() -> None:
    assert m.gen_batch_digest([KEY1, KEY2]) != m.gen_batch_digest([KEY2, KEY1])
    assert m.gen_batch_digest([KEY1]) != m.gen_batch_digest([KEY1, KEY1])
    assert len(m.gen_batch_digest([KEY1])) == 32
