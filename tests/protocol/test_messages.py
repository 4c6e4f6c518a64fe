"""The node-to-node message codec: every kind round-trips; malformed input only ever raises
InvalidMessage (including the fuzzer's finding: a non-string ``kind``)."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocean_secret_store.crypto.curve import N, Point
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.exceptions import InvalidMessage
from ocean_secret_store.protocol import messages as m

P1, P2 = Point.generator_mul(5), Point.generator_mul(6)
NODE1, NODE2 = P1.to_bytes(), P2.to_bytes()
SIG = sign_raw_hash(7, b"\x02" * 32)

EXAMPLES: list[m.Message] = [
    m.Ack(),
    m.ErrorReply("AccessDenied", None),
    m.ErrorReply("Internal", "detail"),
    m.GenInit(b"\x01" * 32, b"\x02" * 20, 1, {NODE1: 3, NODE2: 4}),
    m.GenStart(b"\x01" * 32),
    m.GenDealing(b"\x01" * 32, 0, N - 1, (P1, P2)),
    m.GenPublics(b"\x01" * 32, (P1,)),
    m.GenReady(P2),
    m.GenCommit(b"\x01" * 32),
    m.GenAbort(b"\x01" * 32),
    m.StoreRequest(b"\x01" * 32, SIG, P1, P2),
    m.KeyInfoRequest(b"\x01" * 32),
    m.KeyInfo(True, 2, b"\x03" * 20, P1, True, (b"\x04" * 32,), (NODE1, NODE2)),
    m.KeyInfo(False, 0, None, None, False, (), ()),
    m.DecryptRequest(b"\x01" * 32, SIG, b"\x05" * 32, 9, (NODE1, NODE2), True),
    m.DecryptResponse(P1, os.urandom(145)),
    m.DecryptResponse(P1, None),
    m.SchnorrNonceRequest(b"\x06" * 32, b"\x01" * 32, SIG, b"\x05" * 32, b"\x07" * 32),
    m.SchnorrNonceReply(P2),
    m.SchnorrPartialRequest(b"\x06" * 32, (NODE1,), 11),
    m.SchnorrPartialReply(0),
    m.SchnorrCancel(b"\x06" * 32),
]


def test_every_registered_kind_has_an_example() -> None:
    assert {type(e) for e in EXAMPLES} == set(m.REGISTRY.values())


@pytest.mark.parametrize("body", EXAMPLES, ids=lambda b: b.KIND)
def test_round_trip(body: m.Message) -> None:
    for envelope in (m.Envelope(body, rid=5), m.Envelope(body, reply_to=7), m.Envelope(body)):
        decoded = m.decode(m.encode(envelope))
        assert type(decoded.body) is type(body)
        assert (decoded.rid, decoded.reply_to) == (envelope.rid, envelope.reply_to)
        for name in body.SCHEMA:
            assert getattr(decoded.body, name) == getattr(body, name)


def test_reprs_do_not_show_secret_fields() -> None:
    assert "13" not in repr(m.GenDealing(b"\x01" * 32, 13 * 10**30, 1, ()))


def _mutated(body: m.Message, field: str, value: object) -> bytes:
    obj = json.loads(m.encode(m.Envelope(body, rid=1)))
    obj[field] = value
    return json.dumps(obj).encode()


BAD = [
    (b"", "not JSON"), (b"\xff\xfe", "not JSON"), (b"[]", "not a JSON object"),
    (b'{"kind": {}}', "unknown message kind"), (b'{"kind": ["GenStart"]}', "unknown message kind"),
    (b'{"kind": "Nope"}', "unknown message kind"), (b'{"kind": "GenStart", "rid": 1}', "lacks field"),
    (_mutated(m.GenStart(b"\x01" * 32), "rid", -1), "request ids"),
    (_mutated(m.GenStart(b"\x01" * 32), "rid", "1"), "request ids"),
    (_mutated(m.GenStart(b"\x01" * 32), "session", "0x" + "00" * 31), "32 bytes"),
    (_mutated(m.GenStart(b"\x01" * 32), "session", "01" * 33), "32 bytes"),
    (_mutated(m.GenReady(P1), "public", "0x" + "11" * 64), "not on secp256k1"),
    (_mutated(m.GenDealing(b"\x01" * 32, 1, 1, ()), "secret1", "0x" + "ff" * 32), "curve order"),
    (_mutated(m.DecryptRequest(b"\x01" * 32, SIG, b"\x05" * 32, 9, (), True), "access_key", "0x" + "00" * 32), "zero"),
    (_mutated(m.GenInit(b"\x01" * 32, b"\x02" * 20, 1, {NODE1: 3}), "id_numbers",
              {"0x" + NODE1.hex(): "0x" + "00" * 31 + "03", "0x" + NODE2.hex(): "0x" + "00" * 31 + "03"}), "distinct"),
    (_mutated(m.GenInit(b"\x01" * 32, b"\x02" * 20, 1, {NODE1: 3}), "threshold", 2**40), "small"),
    (_mutated(m.DecryptRequest(b"\x01" * 32, SIG, b"\x05" * 32, 9, (), True), "shadow", 1), "boolean"),
    (_mutated(m.GenPublics(b"\x01" * 32, ()), "coefficients", ["0x" + P1.to_bytes().hex()] * 300), "bounded"),
]


@pytest.mark.parametrize(("payload", "reason"), BAD)
def test_malformed_messages_raise_invalid_message(payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage) as raised:
        m.decode(payload)
    # str() is Parity's fixed text (it goes on the wire); the detail says what was wrong
    assert str(raised.value) == "invalid message is received"
    assert reason in (raised.value.detail or "")


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
), st.sampled_from(sorted(m.REGISTRY)))
def test_arbitrary_json_only_raises_invalid_message(value: object, kind: str) -> None:
    for payload in ({"kind": value}, {"kind": kind, "rid": 1, **({"x": value})},
                    {**json.loads(m.encode(m.Envelope(EXAMPLES[3], rid=1))), "id_numbers": value}):
        try:
            m.decode(json.dumps(payload).encode())
        except InvalidMessage:
            pass
