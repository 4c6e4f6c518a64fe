"""Cluster benchmarks against a real devnet (separate node processes on loopback, ACL none).

    .venv/bin/python bench/cluster.py [--nodes 5 --threshold 2] [--state-dir DIR] [--quick]

Starts its own devnet in a temporary directory unless ``--state-dir`` names a running one,
then measures, from one client process (aiohttp, kept-alive connections, entry nodes in
rotation):

* server key generation latency (sequential),
* shadow retrieval latency at concurrency 1, measured in the client with the requester
  signature and the local combination of the shadows included,
* shadow retrieval throughput with 16 requests in flight.
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
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import expect, pct

from ocean_secret_store import devnet
from ocean_secret_store.crypto import document, shadows
from ocean_secret_store.crypto.curve import random_scalar
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.protocol import http as codec


def report(name: str, samples: list[float], target: str = "") -> None:
    print(f"  {name:<44} p50 {statistics.median(samples) * 1e3:8.2f} ms   p99 {pct(samples, 0.99) * 1e3:8.2f} ms"
          f"   (n={len(samples)})  {target}")



async def bench(urls: list[str], threshold: int, generations: int, retrievals: int, burst: int, warmup: int) -> None:
    secret = random_scalar()
    entries = itertools.cycle(urls)
    connector = aiohttp.TCPConnector(limit=64, limit_per_host=32)
    async with aiohttp.ClientSession(connector=connector) as http:
        gen_times = []
        key_ids = []
        for _ in range(generations):
            key_id = os.urandom(32)
            start = time.perf_counter()
            async with http.post(next(entries) + "/" + codec.server_key_generation_path(
                    key_id, sign_raw_hash(secret, key_id), threshold)) as r:
                public = codec.decode_point_response(await expect(r))
            gen_times.append(time.perf_counter() - start)
            key_ids.append((key_id, public))
        report("server key generation", gen_times, "target p50 <= 50 ms (5 nodes), <= 200 ms (10 nodes)")

        key_id, public = key_ids[0]
        document_key, common, encrypted = document.generate_document_key(public)
        async with http.post(urls[0] + "/" + codec.document_key_storing_path(
                key_id, sign_raw_hash(secret, key_id), common, encrypted)) as r:
            await expect(r)

        async def retrieve() -> None:
            signature = sign_raw_hash(secret, key_id)
            async with http.get(next(entries) + "/" + codec.document_key_shadow_retrieval_path(key_id, signature)) as r:
                result = codec.decode_shadow_response(await expect(r))
            recovered = shadows.recover_document_key(
                result.decrypted_secret, result.common_point, result.decrypt_shadows, secret)
            if recovered != document_key:
                raise RuntimeError("wrong document key")

        for _ in range(warmup):  # warm the connections and the nodes' key caches
            await retrieve()
        latency = []
        for _ in range(retrievals):
            start = time.perf_counter()
            await retrieve()
            latency.append(time.perf_counter() - start)
        report("shadow retrieval, concurrency 1", latency, "target p50 <= 5 ms, p99 <= 15 ms (5 nodes)")

        total = retrievals * 2
        semaphore = asyncio.Semaphore(burst)
        burst_latency: list[float] = []

        async def limited() -> None:
            async with semaphore:
                start = time.perf_counter()
                await retrieve()
                burst_latency.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(limited() for _ in range(total)))
        elapsed = time.perf_counter() - start
        report(f"shadow retrieval, {burst} in flight", burst_latency)
        print(f"  {'throughput, ' + str(burst) + ' in flight':<44} {total / elapsed:8.1f} retrievals/s"
              f"   target >= 300/s (5 nodes)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--threshold", type=int, default=None, help="default: 2 for 5 nodes, 4 for 10")
    parser.add_argument("--state-dir", help="use this running devnet instead of starting one")
    parser.add_argument("--quick", action="store_true", help="a run of seconds: 5 generations, 50 retrievals")
    parser.add_argument("--burst", type=int, default=16)
    args = parser.parse_args()
    threshold = args.threshold if args.threshold is not None else (args.nodes - 1) // 2
    generations, retrievals, warmup = (5, 50, 10) if args.quick else (100, 1000, 50)

    own = args.state_dir is None
    state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="oss-bench-"))
    state = devnet.DevnetState.load(state_dir) if not own else devnet.up(state_dir, args.nodes, acl="none")
    if state is None:
        raise SystemExit(f"no devnet in {state_dir}")
    urls = [n.http_url for n in state.nodes]
    print(f"{len(urls)} nodes, threshold {threshold}, {os.cpu_count()} cores, state {state_dir}")
    try:
        asyncio.run(bench(urls, threshold, generations, retrievals, args.burst, warmup))
    finally:
        if own:
            devnet.down(state_dir)
            shutil.rmtree(state_dir, ignore_errors=True)  # our own temporary devnet: keys and logs go too


if __name__ == "__main__":
    main()
