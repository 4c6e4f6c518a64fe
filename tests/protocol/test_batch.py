"""The bodies of ``POST /shadow_batch`` (protocol/batch.py): what parses, what is refused and why,
and the client's strict reading of the answer."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from ocean_secret_store.crypto.curve import Point
from ocean_secret_store.exceptions import AccessDenied, ServerKeyIsNotFound
from ocean_secret_store.protocol import batch as bt
from ocean_secret_store.protocol.http import BadResponse, DocumentKeyShadow

KEY1, KEY2 = b"\x01" * 32, b"\x02" * 32
SIG = b"\x07" * 65
P = Point.generator_mul(3)
SHADOW = (P, -P, (b"\x04" + b"\x05" * 144,))


def test_requests_round_trip() -> None:
    assert bt.parse_batch_request(bt.encode_batch_request([(KEY1, SIG), (KEY2, SIG)])) == [(KEY1, SIG), (KEY2, SIG)]


@pytest.mark.parametrize(("body", "problem"), [
    (b"\xff", "not JSON"),
    (b"[]", "object"),
    (b'{"requests": [], "x": 1}', "object"),
    (b'{"requests": []}', "no entry"),
    (json.dumps({"requests": [{"key_id": "0x" + "01" * 32, "signature": "0x" + "07" * 65}] * 257}).encode(),
     "at most 256"),
    (json.dumps({"requests": [{"key_id": "0x" + "01" * 32, "signature": "0x" + "07" * 65},
                              {"key_id": "0x" + "01" * 32}]}).encode(), "entry 1: "),
    (json.dumps({"requests": [{"key_id": "0x" + "01" * 31, "signature": "0x" + "07" * 65}]}).encode(), "entry 0: "),
])
def test_malformed_requests_are_refused_with_the_reason(body: bytes, problem: str) -> None:
    with pytest.raises(bt.BadBatch, match=problem):
        bt.parse_batch_request(body)


def test_results_round_trip_in_order() -> None:
    body = bt.encode_batch_results([KEY1, KEY2], [SHADOW, ServerKeyIsNotFound()])
    results = bt.decode_batch_response(body, [KEY1, KEY2])
    assert results[0] == DocumentKeyShadow(*SHADOW)
    assert isinstance(results[1], ServerKeyIsNotFound)
    assert json.loads(body)["results"][1]["error"]["status"] == 404
    denied = bt.decode_batch_response(bt.encode_batch_results([KEY1], [AccessDenied()]), [KEY1])[0]
    assert isinstance(denied, AccessDenied)


@pytest.mark.parametrize("mutate", [
    lambda v: v["results"].pop(),
    lambda v: v["results"].reverse(),
    lambda v: v["results"][0]["ok"].pop("common_point"),
    lambda v: v["results"][0]["ok"].update(decrypt_shadows=[]),
    lambda v: v["results"][0]["ok"].update(common_point="0x" + "00" * 64),
    lambda v: v["results"][0].update(error={"message": "x"}),
    lambda v: v["results"][1].pop("error"),
])
def test_answers_not_for_the_keys_asked_are_refused(mutate: Callable[[dict[str, Any]], object]) -> None:
    value = json.loads(bt.encode_batch_results([KEY1, KEY2], [SHADOW, ServerKeyIsNotFound()]))
    mutate(value)  # each case edits the answer in place
    with pytest.raises(BadResponse):
        bt.decode_batch_response(json.dumps(value).encode(), [KEY1, KEY2])
