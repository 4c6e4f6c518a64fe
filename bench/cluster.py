"""Cluster benchmarks against a real devnet (separate node processes on loopback, ACL none).

    .venv/bin/python bench/cluster.py [--nodes 5 --threshold 2] [--state-dir DIR] [--quick] [--freeze K]

Starts its own devnet in a temporary directory unless ``--state-dir`` names a running one,
then measures, from one client process (aiohttp, kept-alive connections, entry nodes in
rotation):

* server key generation latency (sequential),
* shadow retrieval latency at concurrency 1, measured in the client with the requester
  signature and the local combination of the shadows included,
* shadow retrieval throughput with 16 requests in flight;
* Schnorr and threshold ECDSA signing latency at concurrency 1 (ECDSA needs 2t < N);

with ``--retrieval`` instead only the shadow retrieval of one key (issue 18 item 5), each figure
``--repeat`` times:

* raw: a kept-alive ``GET /shadow/{key}/{sig}`` with the path made once, the answer's 200 checked
  and nothing decoded (the node's and the cluster's cost plus one loopback round trip);
* the SDK (``SecretStoreClient.recover_document_key``, requests, bound signatures on as by
  default, the document key recovered and checked) at concurrency 1, and from 16 threads sharing
  one client (latency and retrievals/s);

and with ``--freeze K`` (issue 12, liveness under stalls) then:

* a no-fault baseline: shadow retrievals at concurrency 1 through the N - K entry nodes that stay
  live, just before the freeze;
* the same with K other members SIGSTOPped (their TCP connections stay open, nothing answers),
  printed as the first 50 retrievals after the freeze ("before suspicion": the live nodes do not
  know yet) and the rest ("after suspicion"), each with p50/p99/max, its p99 as a multiple of the
  baseline's p99, and its failures by HTTP status and Parity's text (a request that outlives the
  session timeout plus 5 s is cut by the client and counted as a failure). Latencies include the
  failed requests. The frozen members get SIGCONT at the end, on Ctrl-C too; ``--quick`` measures
  100 retrievals frozen (50 + 50) instead of 50.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import itertools
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import describe, expect, freeze, pct, readiness, spread, thaw, thaw_all, wait_ready

from ocean_secret_store import devnet
from ocean_secret_store.client.client import SecretStoreClient
from ocean_secret_store.crypto import document, ecdsa, ecies, schnorr, shadows
from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.exceptions import SecretStoreError
from ocean_secret_store.node.config import load_config
from ocean_secret_store.protocol import http as codec

#: The first retrievals after the freeze, printed apart: the live nodes have not suspected the frozen ones yet.
BEFORE_SUSPICION = 50
#: A frozen-phase request is cut by the client this long after the session timeout.
CLIENT_SLACK = 5.0
#: Seconds for the mesh to be whole again (before the baseline, after the thaw).
READY_TIMEOUT = 30.0


def report(name: str, samples: list[float], target: str = "") -> None:
    print(f"  {name:<44} p50 {statistics.median(samples) * 1e3:8.2f} ms   p99 {pct(samples, 0.99) * 1e3:8.2f} ms"
          f"   (n={len(samples)})  {target}")


@dataclass
class Freeze:
    """The ``--freeze`` phase: which members to SIGSTOP (by index), and how many retrievals to make."""

    members: list[int]
    pids: list[int]
    retrievals: int
    session_timeout: float
    names: dict[str, str]  # node id (lower-case 0x hex) -> "node<i>", for the readiness lines


@dataclass
class Attempt:
    seconds: float
    failure: str | None  # None: the right document key came back


#: One shadow retrieval through an entry node (None: the next in rotation), with a client timeout.
Retrieve = Callable[[str | None, aiohttp.ClientTimeout | None], Awaitable[None]]


async def attempt(retrieve: Retrieve, entry: str, timeout: aiohttp.ClientTimeout) -> Attempt:
    """One timed retrieval through ``entry``; a failure is described by its HTTP status and Parity's text."""
    start = time.perf_counter()
    failure = None
    try:
        await retrieve(entry, timeout)
    except TimeoutError:
        failure = f"no answer within {timeout.total:.0f} s (client timeout)"
    except aiohttp.ClientError as exc:
        failure = f"{type(exc).__name__}: {exc}"[:100]
    except (RuntimeError, SecretStoreError) as exc:  # expect(): "<status>: <Parity's text>"; a bad answer
        failure = f"HTTP {exc}"[:100] if str(exc)[:3].isdigit() else str(exc)[:100]
    return Attempt(time.perf_counter() - start, failure)


def freeze_report(name: str, attempts: list[Attempt], baseline_p99: float | None = None) -> None:
    seconds = [a.seconds for a in attempts]
    failed = sum(1 for a in attempts if a.failure)
    ratio = f"   p99 x{pct(seconds, 0.99) / baseline_p99:6.1f}" if baseline_p99 and seconds else ""
    print(f"  {name:<36} {spread(seconds)}   (n={len(attempts)}, failed {failed}){ratio}")


def failure_lines(attempts: list[Attempt], offset: int = 0) -> None:
    """Failures by their text, each with how often and the first retrieval (1-based) it hit."""
    counts: Counter[str] = Counter()
    first: dict[str, int] = {}
    for number, a in enumerate(attempts, 1 + offset):
        if a.failure:
            counts[a.failure] += 1
            first.setdefault(a.failure, number)
    for text, count in counts.most_common():
        print(f"      {count:>4} x {text}   (first: retrieval {first[text]})")


async def freeze_phase(retrieve: Retrieve, urls: list[str], plan: Freeze, baseline_count: int) -> None:
    """Baseline through the live entry nodes, then the same with ``plan.members`` frozen; thawed in any case."""
    live = [url for i, url in enumerate(urls) if i not in plan.members]
    entries = itertools.cycle(live)
    timeout = aiohttp.ClientTimeout(total=plan.session_timeout + CLIENT_SLACK)
    waited = await asyncio.to_thread(wait_ready, urls, len(urls) - 1, READY_TIMEOUT)
    print(f"  --freeze {len(plan.members)}: members {plan.members} frozen (SIGSTOP), entries "
          f"{[i for i in range(len(urls)) if i not in plan.members]}, concurrency 1 (mesh ready after {waited:.2f} s)")
    baseline = [await attempt(retrieve, next(entries), timeout) for _ in range(baseline_count)]
    baseline_p99 = pct([a.seconds for a in baseline], 0.99)
    try:
        for pid in plan.pids:
            freeze(pid)
        frozen = [await attempt(retrieve, next(entries), timeout) for _ in range(plan.retrievals)]
        states = {i: readiness(url, len(urls) - 1) for i, url in enumerate(urls) if i not in plan.members}
    finally:
        for pid in plan.pids:
            thaw(pid)
    freeze_report("no fault, just before the freeze", baseline)
    failure_lines(baseline)
    freeze_report(f"frozen, first {BEFORE_SUSPICION} (before suspicion)", frozen[:BEFORE_SUSPICION], baseline_p99)
    failure_lines(frozen[:BEFORE_SUSPICION])
    freeze_report("frozen, the rest (after suspicion)", frozen[BEFORE_SUSPICION:], baseline_p99)
    failure_lines(frozen[BEFORE_SUSPICION:], BEFORE_SUSPICION)
    freeze_report("frozen, all", frozen, baseline_p99)
    print(f"  {'failures while frozen':<36} {sum(1 for a in frozen if a.failure)} of {len(frozen)}")
    for i, state in states.items():
        print(f"  {'node ' + str(i) + ' at the end of the freeze':<36} {describe(state, plan.names)}")
    try:
        healed = await asyncio.to_thread(wait_ready, urls, len(urls) - 1, READY_TIMEOUT)
        print(f"  {'mesh whole again after the thaw':<36} {healed:.2f} s")
    except TimeoutError as exc:
        print(f"  mesh NOT whole again after the thaw: {exc}")


async def bench(urls: list[str], threshold: int, generations: int, retrievals: int, burst: int, warmup: int,
                plan: Freeze | None = None) -> None:
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

        async def retrieve(entry: str | None = None, timeout: aiohttp.ClientTimeout | None = None) -> None:
            signature = sign_raw_hash(secret, key_id)
            path = codec.document_key_shadow_retrieval_path(key_id, signature)
            async with http.get((entry or next(entries)) + "/" + path, timeout=timeout) as r:
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

        await signing(http, urls, entries, secret, key_id, public, threshold, max(retrievals // 2, 10))

        if plan is not None:
            await freeze_phase(retrieve, urls, plan, retrievals)


async def signing(http: aiohttp.ClientSession, urls: list[str], entries: itertools.cycle[str], secret: int,
                  key_id: bytes, public: Point, threshold: int, count: int) -> None:
    """Schnorr and threshold ECDSA signing latency at concurrency 1, each signature decrypted and
    verified against the server key in the client (included in the time)."""
    schnorr_times, ecdsa_times = [], []
    for _ in range(count):
        message_hash = os.urandom(32)
        start = time.perf_counter()
        async with http.get(next(entries) + "/" + codec.schnorr_signing_path(
                key_id, sign_raw_hash(secret, key_id), message_hash)) as r:
            blob = codec.decode_bytes_response(await expect(r), codec.ENCRYPTED_SCHNORR_SIGNATURE_SIZE)
        schnorr.verify(public, schnorr.parse_signature(ecies.decrypt(secret, blob)), message_hash)
        schnorr_times.append(time.perf_counter() - start)
    report("Schnorr signing, concurrency 1", schnorr_times)
    if 2 * threshold >= len(urls):
        print(f"  ECDSA signing skipped: 2t = {2 * threshold} >= N = {len(urls)} (Parity refuses such a key)")
        return
    for _ in range(count):
        message_hash = os.urandom(32)
        start = time.perf_counter()
        async with http.get(next(entries) + "/" + codec.ecdsa_signing_path(
                key_id, sign_raw_hash(secret, key_id), message_hash)) as r:
            blob = codec.decode_bytes_response(await expect(r), codec.ENCRYPTED_ECDSA_SIGNATURE_SIZE)
        ecdsa.verify_signature(public, ecies.decrypt(secret, blob), message_hash)
        ecdsa_times.append(time.perf_counter() - start)
    report(f"ECDSA signing (2t+1 = {2 * threshold + 1} of {len(urls)}), concurrency 1", ecdsa_times,
           "target p50 <= 30 ms (5 nodes)")


class _Account:
    """The requester for the SDK (``.key``: the raw private key, all SecretStoreClient reads)."""

    def __init__(self, secret: int) -> None:
        self.key = secret.to_bytes(32, "big")


async def retrieval_only(urls: list[str], threshold: int, retrievals: int, burst: int, warmup: int,
                         repeat: int) -> None:
    """``--retrieval``: one key, then raw GET / SDK latency and SDK throughput, ``repeat`` times each."""
    secret = random_scalar()
    key_id = os.urandom(32)
    connector = aiohttp.TCPConnector(limit=64, limit_per_host=32)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.post(urls[0] + "/" + codec.server_key_generation_path(
                key_id, sign_raw_hash(secret, key_id), threshold)) as r:
            public = codec.decode_point_response(await expect(r))
        document_key, common, encrypted = document.generate_document_key(public)
        async with http.post(urls[0] + "/" + codec.document_key_storing_path(
                key_id, sign_raw_hash(secret, key_id), common, encrypted)) as r:
            await expect(r)
        paths = [url + "/" + codec.document_key_shadow_retrieval_path(key_id, sign_raw_hash(secret, key_id))
                 for url in urls]
        entries = itertools.cycle(paths)

        async def raw() -> None:
            async with http.get(next(entries)) as r:
                await expect(r)

        for _ in range(warmup):
            await raw()
        for run in range(repeat):
            latency = []
            for _ in range(retrievals):
                start = time.perf_counter()
                await raw()
                latency.append(time.perf_counter() - start)
            report(f"raw GET /shadow, concurrency 1 (run {run + 1})", latency, "target p50 <= 2.5 ms")

    with SecretStoreClient(urls, _Account(secret), timeout=30.0) as client:
        def recover() -> None:
            if client.recover_document_key(key_id) != document_key:
                raise RuntimeError("wrong document key")

        for _ in range(warmup):
            recover()
        for run in range(repeat):
            latency = []
            for _ in range(retrievals):
                start = time.perf_counter()
                recover()
                latency.append(time.perf_counter() - start)
            report(f"SDK retrieval, concurrency 1 (run {run + 1})", latency, "target p50 <= 3.5 ms, p99 <= 8 ms")
        for run in range(repeat):
            total = retrievals * 2
            burst_latency: list[float] = []

            def timed(samples: list[float] = burst_latency) -> None:
                start = time.perf_counter()
                recover()
                samples.append(time.perf_counter() - start)

            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(burst) as pool:
                for future in [pool.submit(timed) for _ in range(total)]:
                    future.result()
            elapsed = time.perf_counter() - start
            report(f"SDK retrieval, {burst} threads (run {run + 1})", burst_latency)
            print(f"  {'SDK throughput, ' + str(burst) + f' threads (run {run + 1})':<44} "
                  f"{total / elapsed:8.1f} retrievals/s   target >= 800/s    load {os.getloadavg()[0]:.2f}")


def freeze_plan(state: devnet.DevnetState, count: int, threshold: int, retrievals: int) -> Freeze | None:
    """The last ``count`` nodes frozen (the entry rotation keeps the others)."""
    n = len(state.nodes)
    if count <= 0:
        return None
    if count >= n:
        raise SystemExit(f"--freeze {count}: at least one of the {n} nodes must stay live as the entry")
    if n - count < threshold + 1:
        print(f"note: --freeze {count} leaves {n - count} live nodes, fewer than t + 1 = {threshold + 1}: "
              "every retrieval while frozen should be refused")
    members = list(range(n - count, n))
    pids = [state.nodes[i].pid for i in members]
    if any(pid is None for pid in pids):
        raise SystemExit(f"no pid recorded for the nodes {members} in devnet.json")
    session = load_config(state.nodes[0].config).timeouts.session
    names = {node.public.lower(): f"node{i}" for i, node in enumerate(state.nodes)}
    return Freeze(members, [pid for pid in pids if pid is not None], retrievals, session, names)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--threshold", type=int, default=None, help="default: 2 for 5 nodes, 4 for 10")
    parser.add_argument("--state-dir", help="use this running devnet instead of starting one")
    parser.add_argument("--quick", action="store_true", help="a run of seconds: 5 generations, 50 retrievals")
    parser.add_argument("--burst", type=int, default=16)
    parser.add_argument("--freeze", type=int, default=0, metavar="K",
                        help="then SIGSTOP K members and measure retrievals through the live nodes (issue 12)")
    parser.add_argument("--retrieval", action="store_true",
                        help="only shadow retrieval: raw GET and SDK latency, SDK throughput (issue 18 item 5)")
    parser.add_argument("--repeat", type=int, default=3, help="with --retrieval: runs of each figure")
    args = parser.parse_args()
    threshold = args.threshold if args.threshold is not None else (args.nodes - 1) // 2
    generations, retrievals, warmup = (5, 50, 10) if args.quick else (100, 1000, 50)

    def stop_on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so the finally clauses thaw frozen nodes and stop the devnet on `kill` too

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    own = args.state_dir is None
    state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="oss-bench-"))
    state = devnet.DevnetState.load(state_dir) if not own else devnet.up(state_dir, args.nodes, acl="none")
    if state is None:
        raise SystemExit(f"no devnet in {state_dir}")
    urls = [n.http_url for n in state.nodes]
    print(f"{len(urls)} nodes, threshold {threshold}, {os.cpu_count()} cores, state {state_dir}")
    try:
        plan = freeze_plan(state, args.freeze, threshold,
                           max(retrievals, 2 * BEFORE_SUSPICION) if args.quick else retrievals)
        wait_ready(urls, len(urls) - 1, READY_TIMEOUT)  # a devnet of --state-dir may still be connecting
        print(f"  load average {os.getloadavg()[0]:.2f}")
        if args.retrieval:
            asyncio.run(retrieval_only(urls, threshold, retrievals, args.burst, warmup, args.repeat))
        else:
            asyncio.run(bench(urls, threshold, generations, retrievals, args.burst, warmup, plan))
        print(f"  load average {os.getloadavg()[0]:.2f}")
    finally:
        with contextlib.suppress(Exception):  # never leave a node frozen, whatever failed above
            thaw_all(state_dir)
        if own:
            devnet.down(state_dir)
            shutil.rmtree(state_dir, ignore_errors=True)  # our own temporary devnet: keys and logs go too


if __name__ == "__main__":
    main()
