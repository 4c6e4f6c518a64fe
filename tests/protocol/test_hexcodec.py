"""The one 0x-hex codec: round trips, prefix rules, sizes, and a property test against the plain
definition (a string of hex digits, nothing else) so that no lenient spelling slips through."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocean_secret_store.exceptions import InvalidMessage, MalformedHex
from ocean_secret_store.protocol.hexcodec import parse_hex, to_hex

HEX_DIGITS = re.compile(r"[0-9a-fA-F]*")


@given(st.binary(max_size=80))
def test_round_trip(data: bytes) -> None:
    assert parse_hex(to_hex(data), "v") == data
    assert parse_hex(to_hex(data).upper().replace("0X", "0x"), "v") == data
    assert parse_hex(data.hex(), "v", prefix=None) == data
    assert parse_hex(data.hex(), "v", prefix=False) == data


@given(st.text(alphabet=st.sampled_from("0123456789abcdefABCDEF \t\n\r\x0b\x0cxXg+-_é\u0661\u00a0"), max_size=24))
def test_accepts_exactly_even_runs_of_hex_digits(digits: str) -> None:
    expected = bytes.fromhex(digits) if HEX_DIGITS.fullmatch(digits) and len(digits) % 2 == 0 else None
    for text, prefix in ((f"0x{digits}", True), (digits, False)):
        if expected is None:
            with pytest.raises(MalformedHex):
                parse_hex(text, "v", prefix=prefix)
        else:
            assert parse_hex(text, "v", prefix=prefix) == expected


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        ("ab", {}, "must be a 0x-prefixed hex string"),
        ("0Xab", {}, "must be a 0x-prefixed hex string"),
        (5, {}, "must be a hex string, got int"),
        (b"0xab", {}, "must be a hex string, got bytes"),
        ("0xabc", {}, "even number of hex digits, got 3"),
        ("0xab  cd", {}, "not hex digits"),  # even length: only the digit check can refuse it
        ("0xab", {"size": 2}, "must be 2 bytes (4 hex digits), got 1"),
        ("0xab", {"prefix": False}, "not hex digits"),
    ],
)
def test_refusals_say_what_is_wrong_and_never_the_value(value: object, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(MalformedHex) as caught:
        parse_hex(value, "the thing", **kwargs)  # type: ignore[arg-type]  # mixed kwargs from the table
    assert str(caught.value).startswith("the thing ")
    assert message in str(caught.value)
    assert "0xab" not in str(caught.value)


def test_the_caller_chooses_the_error() -> None:
    with pytest.raises(InvalidMessage):
        parse_hex("0xzz", "field", error=InvalidMessage)
