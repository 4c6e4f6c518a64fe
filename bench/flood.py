"""Generation flood against a real devnet (issue 11, finding 4): how much one requester flooding the
cluster with key generations slows another requester's retrievals, with the nodes' quotas on.

    .venv/bin/python bench/flood.py [--nodes 3] [--flooders 8] [--no-quotas] [--quick]

Starts its own devnet (ACL none) in a temporary directory unless ``--state-dir`` names a running
one, publishes one document key for a victim requester, then measures the victim's shadow
retrieval latency (concurrency 1, entry nodes in rotation, the local combination included):

* quiet: nothing else runs;
* during: a separate process runs ``--flooders`` concurrent clients that generate server keys as
  fast as they can, all with one requester key, aimed at every node, never waiting for
  ``Retry-After`` (an attacker does not). The flood first spends the requester's burst on every
  node (those retrievals are printed apart, "during the flood's burst"; without quotas the burst
  phase lasts at most 10 s); "during" is what the flood keeps up after that.

Prints both p50/p99, their ratio (target: during within 2x of quiet) and how many flood requests
were refused with 429 and how many generated a key. ``--no-quotas`` starts the devnet with every
quota off, for contrast (it cannot be combined with ``--state-dir``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import expect, pct

from ocean_secret_store import devnet
from ocean_secret_store.crypto import document, shadows
from ocean_secret_store.crypto.curve import random_scalar
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.protocol import http as codec

#: Every quota off (the [quotas] section of node/config.py), for the contrast run.
NO_QUOTAS = {"quotas": {"requester_burst": 0, "address_burst": 0, "requester_generations": 0, "max_sessions": 0}}



def line(name: str, samples: list[float]) -> str:
    return (f"  {name:<36} p50 {statistics.median(samples) * 1e3:8.2f} ms   p99 {pct(samples, 0.99) * 1e3:8.2f} ms"
            f"   (n={len(samples)})")



# -- the flood (its own process, so its event loop does not delay the victim's) ----------------


async def _flood(urls: list[str], secret: int, flooders: int, threshold: int, stop: Event, started: Event,
                 saturated: Event) -> dict[str, Any]:
    outcomes: Counter[str] = Counter()
    refused_by: set[str] = set()
    connector = aiohttp.TCPConnector(limit=0)

    async def client(index: int, http: aiohttp.ClientSession) -> None:
        url = urls[index % len(urls)]
        while not stop.is_set():
            key_id = os.urandom(32)
            path = codec.server_key_generation_path(key_id, sign_raw_hash(secret, key_id), threshold)
            try:
                async with http.post(f"{url}/{path}") as response:
                    await response.read()
                    outcomes[str(response.status)] += 1
                started.set()
                if response.status == 429:
                    refused_by.add(url)
                    if len(refused_by) == len(urls):  # every node has spent this requester's burst
                        saturated.set()
            except aiohttp.ClientError as exc:
                outcomes[type(exc).__name__] += 1

    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
        await asyncio.gather(*(client(i, http) for i in range(flooders)))
    return {"outcomes": dict(outcomes), "seconds": time.perf_counter() - start}


def flood_process(urls: list[str], secret: int, flooders: int, threshold: int, events: tuple[Event, Event, Event],
                  results: multiprocessing.Queue[dict[str, Any]]) -> None:
    results.put(asyncio.run(_flood(urls, secret, flooders, threshold, *events)))


# -- the victim --------------------------------------------------------------------------------


async def measure(urls: list[str], threshold: int, retrievals: int, flooders: int, burst_seconds: float) -> None:
    secret = random_scalar()
    entries = itertools.cycle(urls)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as http:
        key_id = os.urandom(32)
        async with http.post(f"{urls[0]}/" + codec.server_key_generation_path(
                key_id, sign_raw_hash(secret, key_id), threshold)) as r:
            public = codec.decode_point_response(await expect(r))
        document_key, common, encrypted = document.generate_document_key(public)
        async with http.post(f"{urls[0]}/" + codec.document_key_storing_path(
                key_id, sign_raw_hash(secret, key_id), common, encrypted)) as r:
            await expect(r)

        async def retrieve() -> float:
            start = time.perf_counter()
            signature = sign_raw_hash(secret, key_id)
            async with http.get(next(entries) + "/" + codec.document_key_shadow_retrieval_path(key_id, signature)) as r:
                result = codec.decode_shadow_response(await expect(r))
            if shadows.recover_document_key(result.decrypted_secret, result.common_point, result.decrypt_shadows,
                                            secret) != document_key:
                raise RuntimeError("wrong document key")
            return time.perf_counter() - start

        for _ in range(max(10, retrievals // 10)):  # warm the connections and the nodes' key caches
            await retrieve()
        quiet = [await retrieve() for _ in range(retrievals)]
        print(line("quiet: shadow retrieval", quiet))

        context = multiprocessing.get_context("spawn")
        stop, started, saturated = context.Event(), context.Event(), context.Event()
        results: multiprocessing.Queue[dict[str, Any]] = context.Queue()
        events = (stop, started, saturated)
        flooder = context.Process(target=flood_process, daemon=True,
                                  args=(urls, random_scalar(), flooders, threshold, events, results))
        flooder.start()
        burst: list[float] = []
        try:
            if not await asyncio.to_thread(started.wait, 60):
                raise RuntimeError("the flood process did not start")
            # First the flood spends the requester's burst on every node (without quotas: for a while).
            deadline = time.monotonic() + burst_seconds
            while not saturated.is_set() and time.monotonic() < deadline:
                burst.append(await retrieve())
            during = [await retrieve() for _ in range(retrievals)]
        finally:
            stop.set()
        flood = await asyncio.to_thread(results.get, True, 60)
        await asyncio.to_thread(flooder.join, 10)
        if burst:
            print(line("during the flood's burst", burst))
        print(line(f"during a flood ({flooders} clients)", during))
        ratio50 = statistics.median(during) / statistics.median(quiet)
        ratio99 = pct(during, 0.99) / pct(quiet, 0.99)
        print(f"  {'during / quiet':<36} p50 {ratio50:8.2f} x    p99 {ratio99:8.2f} x     target <= 2x")
        outcomes: dict[str, int] = flood["outcomes"]
        total = sum(outcomes.values())
        print(f"  {'flood':<36} {total} requests in {flood['seconds']:.1f} s: {outcomes.get('200', 0)} generated, "
              f"{outcomes.get('429', 0)} refused with 429"
              + "".join(f", {n} {k}" for k, n in sorted(outcomes.items()) if k not in ("200", "429")))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--threshold", type=int, default=None, help="default: (nodes - 1) // 2")
    parser.add_argument("--flooders", type=int, default=8, help="concurrent flooding clients (one requester key)")
    parser.add_argument("--state-dir", help="use this running devnet instead of starting one")
    parser.add_argument("--no-quotas", action="store_true", help="start the devnet with every quota off")
    parser.add_argument("--quick", action="store_true", help="a run of seconds: 50 retrievals each")
    args = parser.parse_args()
    if args.no_quotas and args.state_dir:
        parser.error("--no-quotas configures the devnet this bench starts; it cannot change a running one")
    threshold = args.threshold if args.threshold is not None else (args.nodes - 1) // 2
    retrievals, burst_seconds = (50, 3.0) if args.quick else (500, 10.0)

    own = args.state_dir is None
    state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="oss-flood-"))
    state = (devnet.up(state_dir, args.nodes, acl="none", node_settings=NO_QUOTAS if args.no_quotas else None)
             if own else devnet.DevnetState.load(state_dir))
    if state is None:
        raise SystemExit(f"no devnet in {state_dir}")
    urls = [n.http_url for n in state.nodes]
    quotas = "off" if args.no_quotas else ("as configured" if not own else "defaults")
    print(f"{len(urls)} nodes, threshold {threshold}, {os.cpu_count()} cores, quotas {quotas}, state {state_dir}")
    try:
        asyncio.run(measure(urls, threshold, retrievals, args.flooders, burst_seconds))
    finally:
        if own:
            devnet.down(state_dir)
            shutil.rmtree(state_dir, ignore_errors=True)  # our own temporary devnet: keys and logs go too


if __name__ == "__main__":
    main()
