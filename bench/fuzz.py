"""Bounded fuzzing of the two parsers that take bytes from strangers: the Parity HTTP request parser
and the node-to-node message codec (hypothesis-driven, structure-aware mutations of valid inputs).

    .venv/bin/python bench/fuzz.py [--seconds 60] [--seed 1] [--quick]

Each target may only raise its documented errors (``BadRequest`` / a ``KeyServerError`` for the
HTTP parser, ``InvalidMessage`` for the codec); anything else is a finding, printed with the input
that caused it, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ocean_secret_store.crypto.curve import Point
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.exceptions import InvalidMessage, KeyServerError
from ocean_secret_store.protocol import http as codec
from ocean_secret_store.protocol import messages as m

ALPHABET = "0123456789abcdefABCDEFxz/%-+ .\t\n\x00é"


def http_seeds() -> list[tuple[str, str, bytes]]:
    key = os.urandom(32)
    sig = sign_raw_hash(5, key)
    c, e = Point.generator_mul(3), Point.generator_mul(4)
    return [
        ("POST", "/" + codec.server_key_generation_path(key, sig, 1), b""),
        ("POST", "/" + codec.document_key_storing_path(key, sig, c, e), b""),
        ("POST", "/" + codec.server_and_document_key_generation_path(key, sig, 2), b""),
        ("GET", "/" + codec.server_key_retrieval_path(key, sig), b""),
        ("GET", "/" + codec.document_key_retrieval_path(key, sig), b""),
        ("GET", "/" + codec.document_key_shadow_retrieval_path(key, sig), b""),
        ("GET", "/" + codec.schnorr_signing_path(key, sig, key), b""),
        ("GET", "/" + codec.ecdsa_signing_path(key, sig, key), b""),
        ("POST", "/" + codec.servers_set_change_path(sig, sig), codec.servers_set_change_body([c, e])),
    ]


def message_seeds() -> list[bytes]:
    p = Point.generator_mul(9)
    node = p.to_bytes()
    bodies: list[m.Message] = [
        m.GenInit(os.urandom(32), os.urandom(20), 1, {node: 5, Point.generator_mul(2).to_bytes(): 7}),
        m.GenDealing(os.urandom(32), 11, 12, (p, p)),
        m.GenPublics(os.urandom(32), (p,)),
        m.DecryptRequest(os.urandom(32), sign_raw_hash(3, b"\x01" * 32), os.urandom(32), 5, (node,), True),
        m.DecryptResponse(p, os.urandom(145)),
        m.SchnorrPartialRequest(os.urandom(32), (node,), 9),
        m.KeyInfo(True, 1, os.urandom(20), p, True, (os.urandom(32),), (node,)),
        m.ErrorReply("AccessDenied", None),
        m.GenBatchInit(os.urandom(32), 1, {node: 5, Point.generator_mul(2).to_bytes(): 7},
                       (m.GenBatchKey(os.urandom(32), os.urandom(20), None),
                        m.GenBatchKey(os.urandom(32), os.urandom(20), os.urandom(20)))),
        m.GenBatchAccepted((os.urandom(32),), ("ServerKeyAlreadyGenerated",)),
        m.GenBatchDealing(os.urandom(32), os.urandom(32), (11, 12), (13, 14), (p, p, p, p)),
        m.GenBatchReady((p, p), os.urandom(32)),
    ]
    return [m.encode(m.Envelope(b, rid=3)) for b in bodies]


def mutate(data: str, rng: random.Random) -> str:
    chars = list(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        pos = rng.randrange(len(chars) + 1)
        if op < 0.3 and chars:
            del chars[min(pos, len(chars) - 1)]
        elif op < 0.6:
            chars.insert(pos, rng.choice(ALPHABET))
        elif chars:
            chars[min(pos, len(chars) - 1)] = rng.choice(ALPHABET)
        if rng.random() < 0.05:
            chars = chars[: rng.randrange(len(chars) + 1)]
    return "".join(chars)


def mutate_json(payload: bytes, rng: random.Random) -> bytes:
    obj = json.loads(payload)
    key = rng.choice(list(obj))
    choice = rng.random()
    if choice < 0.25:
        obj[key] = rng.choice([None, 0, -1, 2**80, True, "", "0x", [], {}, "0x" + "ff" * 64, [1, 2], {"a": 1}])
    elif choice < 0.5:
        del obj[key]
    elif choice < 0.75 and isinstance(obj[key], str):
        obj[key] = mutate(obj[key], rng)
    else:
        return mutate(payload.decode(errors="replace"), rng).encode()
    return json.dumps(obj).encode()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a run of seconds (the docs test's): at most 2 s")
    args = parser.parse_args()
    if args.quick:
        args.seconds = min(args.seconds, 2.0)
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.seconds
    http_inputs, message_inputs = http_seeds(), message_seeds()
    counts = {"http": 0, "http_accepted": 0, "codec": 0, "codec_accepted": 0}
    findings: list[str] = []
    while time.monotonic() < deadline:
        for _ in range(500):
            method, path, body = rng.choice(http_inputs)
            if rng.random() < 0.1:
                method = rng.choice(["GET", "POST", "PUT", "OPTIONS", "get", ""])
            mutated = mutate(path, rng)
            if rng.random() < 0.2:
                body = mutate(body.decode(), rng).encode()
            counts["http"] += 1
            try:
                codec.parse_request(method, mutated, body)
                counts["http_accepted"] += 1
            except (codec.BadRequest, KeyServerError):
                pass
            except Exception as exc:  # noqa: BLE001 -- any other exception is exactly the finding the fuzzer hunts for
                findings.append(f"http {method} {mutated!r} body {body[:80]!r}: {type(exc).__name__}: {exc}")

            payload = mutate_json(rng.choice(message_inputs), rng)
            counts["codec"] += 1
            try:
                m.decode(payload)
                counts["codec_accepted"] += 1
            except InvalidMessage:
                pass
            except Exception as exc:  # noqa: BLE001 -- any other exception is exactly the finding the fuzzer hunts for
                findings.append(f"codec {payload[:200]!r}: {type(exc).__name__}: {exc}")
        if len(findings) > 20:
            break
    print(f"fuzzed for {args.seconds:.0f} s (seed {args.seed}): {counts['http']} HTTP requests "
          f"({counts['http_accepted']} parsed), {counts['codec']} messages ({counts['codec_accepted']} decoded)")
    for finding in findings[:20]:
        print("FINDING", finding)
    print(f"findings: {len(findings)}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
