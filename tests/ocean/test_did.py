"""DIDs: did:op: + SHA3-256 over the checksums, and the DID <-> 32-byte asset id conversions."""

from __future__ import annotations

import hashlib
import os

import pytest

from ocean_secret_store.exceptions import InvalidDid, OceanError, SecretStoreError
from ocean_secret_store.ocean.did import (
    DID_PREFIX,
    checksum,
    did_from_checksums,
    did_to_id,
    id_to_did,
    normalize_did,
)


def test_checksum_is_sha3_256_of_sorted_compact_json() -> None:
    obj = {"b": [1, 2], "a": {"z": "x", "c": None}}
    text = '{"a":{"c":null,"z":"x"},"b":[1,2]}'
    assert checksum(obj) == hashlib.sha3_256(text.encode()).hexdigest()


def test_did_from_checksums_matches_hashlib() -> None:
    checksums = {"1": "bb" * 32, "0": "aa" * 32, "2": "cc" * 32}
    text = '{"0":"' + "aa" * 32 + '","1":"' + "bb" * 32 + '","2":"' + "cc" * 32 + '"}'
    expected = "did:op:" + hashlib.sha3_256(text.encode()).hexdigest()
    assert did_from_checksums(checksums) == expected
    # key order of the input does not matter
    assert did_from_checksums(dict(reversed(list(checksums.items())))) == expected


def test_id_round_trip_in_every_accepted_spelling() -> None:
    raw = os.urandom(32)
    did = id_to_did(raw)
    assert did == DID_PREFIX + raw.hex()
    spellings = (did, "0x" + raw.hex(), "0X" + raw.hex(), raw.hex(), raw.hex().upper(), "did:op:" + raw.hex().upper(),
                 f" {did}\n")
    for spelling in spellings:
        assert did_to_id(spelling) == raw
        assert normalize_did(spelling) == did


@pytest.mark.parametrize("bad", [
    "", "did:op:", "did:op:" + "ab" * 31, "did:op:" + "ab" * 33, "did:op:" + "zz" * 32,
    "did:eth:" + "ab" * 32, "0x" + "ab" * 20, "0x0x" + "ab" * 32, "did:op:0x" + "ab" * 32, "ab" * 31 + "a",
])
def test_did_to_id_rejects_malformed(bad: str) -> None:
    with pytest.raises(InvalidDid, match="not a DID"):
        did_to_id(bad)


def test_did_to_id_rejects_non_string() -> None:
    with pytest.raises(InvalidDid):
        did_to_id(b"\x00" * 32)  # type: ignore[arg-type]  # bad input on purpose


@pytest.mark.parametrize("bad", [b"", b"\x01" * 31, b"\x01" * 33])
def test_id_to_did_rejects_wrong_length(bad: bytes) -> None:
    with pytest.raises(InvalidDid, match=str(len(bad))):
        id_to_did(bad)


def test_invalid_did_is_in_the_tree() -> None:
    assert issubclass(InvalidDid, OceanError) and issubclass(OceanError, SecretStoreError)
