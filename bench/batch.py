"""Batch shadow retrieval against single retrievals, on a real devnet (issue 18 item 4).

    .venv/bin/python bench/batch.py [--nodes 5 --threshold 2] [--batch 100] [--rounds N] [--quick]

Starts its own devnet in a temporary directory (separate node processes on loopback, ACL none, TLS
off, default quotas, hedging on), publishes ``--batch`` keys, then measures from one client process
(aiohttp, kept-alive connections, entry nodes in rotation), each key's document key recovered
locally and checked in both cases (the signature over each key id, the ECIES decryptions of its
shadows and their combination are in the client's time too, with the signing key made once, as
a client that signs often keeps it; a batch answer's decrypt shadows are
opened with one :class:`~ocean_secret_store.crypto.ecies.Decryptor`, as the SDK's ``recover_many``
does, one ECDH per member's ephemeral key instead of one per shadow):

* single: ``GET /shadow/{key}/{sig}`` for each key in turn, concurrency 1: time per key;
* batch: ``POST /shadow_batch`` with all ``--batch`` keys, concurrency 1: wall time per batch, and
  per key (wall time / keys);
* throughput: singles with 16 in flight against batches with 4 in flight (keys/s).

Prints p50/p99 of each and the ratio of the per-key medians. ``--quick``: 3 rounds of each (seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import expect, pct, spread, wait_ready

from ocean_secret_store import devnet
from ocean_secret_store.crypto import document, ecies, shadows
from ocean_secret_store.crypto.curve import Point, private_key, random_scalar
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.protocol import batch as bt
from ocean_secret_store.protocol import http as codec

READY_TIMEOUT = 60.0


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by ``pids`` (the node processes) and this process."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    own = os.times()
    return total + own.user + own.system


def line(name: str, samples: list[float]) -> None:
    print(f"  {name:<44} {spread(samples)}   (n={len(samples)})")


async def publish(http: aiohttp.ClientSession, urls: list[str], secret: int, threshold: int,
                  count: int) -> dict[bytes, Point]:
    keys: dict[bytes, Point] = {}
    semaphore = asyncio.Semaphore(4)

    async def one(entry: str) -> None:
        async with semaphore:
            key_id = os.urandom(32)
            signature = sign_raw_hash(secret, key_id)
            async with http.post(entry + "/" + codec.server_key_generation_path(key_id, signature, threshold)) as r:
                public = codec.decode_point_response(await expect(r))
            document_key, common, encrypted = document.generate_document_key(public)
            async with http.post(entry + "/" + codec.document_key_storing_path(key_id, signature, common,
                                                                                encrypted)) as r:
                await expect(r)
            keys[key_id] = document_key

    await asyncio.gather(*(one(urls[i % len(urls)]) for i in range(count)))
    return keys


async def compare(single: Callable[[bytes, bool], Awaitable[None]], batched: Callable[[bool], Awaitable[None]],
                  pids: list[int], ids: list[bytes], rounds: int, recover: bool) -> None:
    """Rounds of every key singly then all in one batch, at concurrency 1: time and CPU per key."""
    batch = len(ids)
    per_single: list[float] = []
    per_batch: list[float] = []
    cpu_single = cpu_batch = 0.0
    for _ in range(rounds):  # interleaved, so that a load change on the shared host hits both alike
        cpu = cpu_seconds(pids)
        for key_id in ids:
            start = time.perf_counter()
            await single(key_id, recover)
            per_single.append(time.perf_counter() - start)
        cpu_single += cpu_seconds(pids) - cpu
        cpu = cpu_seconds(pids)
        start = time.perf_counter()
        await batched(recover)
        per_batch.append(time.perf_counter() - start)
        cpu_batch += cpu_seconds(pids) - cpu
    per_key = [t / batch for t in per_batch]
    print("retrieval with the local recovery of each document key:" if recover else
          "retrieval (signing, request, answer decoded; no local recovery):")
    line("single retrieval, concurrency 1 (per key)", per_single)
    line(f"batch of {batch}, concurrency 1 (per batch)", per_batch)
    line(f"batch of {batch}, concurrency 1 (per key)", per_key)
    ratio = statistics.median(per_single) / statistics.median(per_key)
    print(f"  {'per-key cost, single / batch (medians)':<44} {ratio:8.1f} x   target >= 5 x")
    print(f"  {'per-key cost, p99 single / p99 batch':<44} "
          f"{pct(per_single, 0.99) / pct(per_key, 0.99):8.1f} x")
    keys_done = rounds * batch
    print(f"  {'CPU per key (nodes + client), single':<44} {cpu_single / keys_done * 1e3:8.2f} ms")
    print(f"  {'CPU per key (nodes + client), batch':<44} {cpu_batch / keys_done * 1e3:8.2f} ms"
          f"   ({cpu_single / cpu_batch:.1f} x less)")


async def bench(urls: list[str], pids: list[int], threshold: int, batch: int, rounds: int) -> None:
    secret = random_scalar()
    signer = private_key(secret)  # made once, as a client that signs often keeps it (signatures.sign_raw_hash)
    entries = itertools.cycle(urls)
    connector = aiohttp.TCPConnector(limit=64, limit_per_host=32)
    async with aiohttp.ClientSession(connector=connector) as http:
        print("throughput and the rest: with the local recovery")
        keys = await publish(http, urls, secret, threshold, batch)
        ids = list(keys)

        async def single(key_id: bytes, recover: bool = True) -> None:
            path = codec.document_key_shadow_retrieval_path(key_id, sign_raw_hash(signer, key_id))
            async with http.get(next(entries) + "/" + path) as r:
                result = codec.decode_shadow_response(await expect(r))
            if recover and shadows.recover_document_key(result.decrypted_secret, result.common_point,
                                                        result.decrypt_shadows, secret) != keys[key_id]:
                raise RuntimeError("wrong document key")

        async def batched(recover: bool = True) -> None:
            body = bt.encode_batch_request([(key_id, sign_raw_hash(signer, key_id)) for key_id in ids])
            async with http.post(next(entries) + bt.PATH, data=body) as r:
                results = bt.decode_batch_response(await expect(r), ids)
            opener = ecies.Decryptor(secret)  # as the SDK's recover_many: one ECDH per ephemeral point
            for key_id, result in zip(ids, results, strict=True):
                if isinstance(result, Exception):
                    raise RuntimeError(f"a key of the batch failed: {result}")
                if recover and shadows.recover_document_key(result.decrypted_secret, result.common_point,
                                                            result.decrypt_shadows, opener) != keys[key_id]:
                    raise RuntimeError("wrong document key")

        for key_id in ids[:20]:  # warm the connections and the nodes' key caches
            await single(key_id)
        await batched()

        for recover in (False, True):
            await compare(single, batched, pids, ids, rounds, recover)

        async def flight(count: int, width: int, run: object) -> float:
            semaphore = asyncio.Semaphore(width)

            async def one(i: int) -> None:
                async with semaphore:
                    if run == "single":
                        await single(ids[i % len(ids)])
                    else:
                        await batched()

            start = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(count)))
            return time.perf_counter() - start

        single_count = batch * max(rounds // 2, 1)
        elapsed = await flight(single_count, 16, "single")
        single_rate = single_count / elapsed
        batches = max(rounds, 4)
        elapsed = await flight(batches, 4, "batch")
        batch_rate = batches * batch / elapsed
        print(f"  {'throughput, singles 16 in flight':<44} {single_rate:8.1f} keys/s")
        print(f"  {'throughput, batches 4 in flight':<44} {batch_rate:8.1f} keys/s"
              f"   ({batch_rate / single_rate:.1f} x)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--threshold", type=int, default=None, help="default: (nodes - 1) // 2")
    parser.add_argument("--batch", type=int, default=100, help=f"keys per batch, at most {bt.MAX_BATCH}")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of (every key singly, one batch)")
    parser.add_argument("--quick", action="store_true", help="a run of seconds: 3 rounds")
    args = parser.parse_args()
    threshold = args.threshold if args.threshold is not None else (args.nodes - 1) // 2
    rounds = args.rounds or (3 if args.quick else 20)
    state_dir = Path(tempfile.mkdtemp(prefix="oss-bench-batch-"))
    load = os.getloadavg()
    print(f"{args.nodes} nodes, threshold {threshold}, batch {args.batch}, {rounds} rounds, {os.cpu_count()} cores, "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    try:
        state = devnet.up(state_dir, args.nodes, acl="none")
        urls = [n.http_url for n in state.nodes]
        wait_ready(urls, len(urls) - 1, READY_TIMEOUT)
        pids = [n.pid for n in state.nodes if n.pid is not None]
        asyncio.run(bench(urls, pids, threshold, args.batch, rounds))
    finally:
        if devnet.DevnetState.load(state_dir) is not None:  # else up failed before it started anything
            devnet.down(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)
        load = os.getloadavg()
        print(f"load after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
