"""Servers-set change benchmark (issue 14): how fast a real devnet moves its keys when one key
server is replaced, and how fast it refreshes them all.

    .venv/bin/python bench/reshare.py [--nodes 5] [--keys 1000] [--thresholds 1,2,3] [--concurrency 16]
                                      [--alive] [--replace INDEX] [--verify 100] [--state-dir DIR] [--keep]
                                      [--quick]

Starts its own devnet (ACL none, quotas off so one requester can make every key) in a temporary
directory unless ``--state-dir`` names a running one, then:

1. makes ``--keys`` keys, each a server key with its document key (``POST /{key_id}/{sig}/{t}``,
   the node generates both), thresholds cycling over ``--thresholds``, ``--concurrency`` requests
   in flight (aiohttp, entry nodes in rotation); prints keys/s and the request latency, as context.
   A 429 (a devnet of ``--state-dir`` with its quotas on) is waited out and retried;
2. kills node ``--replace`` (SIGKILL; default the last node: the issue's scenario, a dead node is
   replaced) or, with ``--alive``, leaves it running, and replaces it by a new key server with
   ``devnet.replace_node`` (start the newcomer, one servers-set change from the current set to
   set - old + new, stop the old node). Prints the keys moved, skipped and failed, the session's
   seconds (its ``started``/``finished`` in ``GET /admin/status``) and **keys/s** (the headline;
   the issue's target is >= 100 keys/s for 1,000 keys on 5 nodes), the wall time of the call split
   into the newcomer's start, the session's planning and moving phases and what follows, and the
   moving rate sampled every 100 ms from the master's ``GET /admin/status`` ``ready`` (p50/p90/max),
   and the CPU seconds the key servers used meanwhile with the machine's idle share (Linux: is the
   session CPU-bound, and does something else on the machine take the cores?);
3. retrieves ``--verify`` keys at random through the new node only (shadow retrieval, combined
   locally: ``SecretStoreClient.recover_document_key``) and compares them with the document keys of
   step 1; failures must be 0;
4. refreshes every key on the new set (``AdminClient.refresh``, signed with ``accounts.admin``),
   with the same figures, and verifies the same sample again;
5. stops its own devnet and removes its directory, unless ``--keep`` (then it prints where it is).
   A devnet of ``--state-dir`` is left running, with its node replaced.

Keys that were in a ``--state-dir`` devnet before are moved too, and counted in the session's figures.
``--quick`` (what the docs test runs) makes at most 30 keys and verifies at most 10: seconds, not minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import requests
from eth_account import Account

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import pct, spread, wait_ready

from ocean_secret_store import devnet
from ocean_secret_store.client.admin import AdminClient
from ocean_secret_store.client.client import SecretStoreClient
from ocean_secret_store.crypto import ecies
from ocean_secret_store.crypto.curve import Point
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.exceptions import SecretStoreError
from ocean_secret_store.node.sessions.migration import DEFAULT_CONCURRENCY
from ocean_secret_store.protocol import http as codec

#: Every quota off (node/config.py [quotas]): one requester makes all the keys as fast as the nodes go.
NO_QUOTAS = {"quotas": {"requester_burst": 0, "address_burst": 0, "requester_generations": 0, "max_sessions": 0}}
#: Seconds between two samples of the master's ``GET /admin/status``.
SAMPLE_INTERVAL = 0.1
#: Seconds for the mesh to be whole (a devnet of --state-dir may still be connecting).
READY_TIMEOUT = 30.0
#: The issue's target for moving keys.
TARGET = "target >= 100 keys/s (1,000 keys, 5 nodes)"


@dataclass
class Key:
    key_id: bytes
    threshold: int
    document_key: Point


# -- step 1: the keys -----------------------------------------------------------------------------


async def make_keys(urls: list[str], secret: int, count: int, thresholds: list[int],
                    concurrency: int) -> tuple[list[Key], list[float], Counter[str], int]:
    """``count`` server and document keys; the keys, the latency of each success, failures by text, 429s."""
    keys: list[Key] = []
    latency: list[float] = []
    failures: Counter[str] = Counter()
    throttled = 0
    semaphore = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=60)

    async def one(index: int, http: aiohttp.ClientSession) -> None:
        nonlocal throttled
        url, threshold = urls[index % len(urls)], thresholds[index % len(thresholds)]
        key_id = os.urandom(32)
        path = codec.server_and_document_key_generation_path(key_id, sign_raw_hash(secret, key_id), threshold)
        async with semaphore:
            while True:
                start = time.perf_counter()
                try:
                    async with http.post(f"{url}/{path}", timeout=timeout) as response:
                        body = await response.read()
                        if response.status == 429:
                            throttled += 1
                            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                            continue
                        if response.status != 200:
                            text = codec.decode_error_body(body) if body else ""
                            failures[f"HTTP {response.status}: {text}"[:100]] += 1
                            return
                except (aiohttp.ClientError, TimeoutError) as exc:
                    failures[f"{type(exc).__name__}: {exc}"[:100]] += 1
                    return
                latency.append(time.perf_counter() - start)
                break
        blob = codec.decode_bytes_response(body, codec.ENCRYPTED_DOCUMENT_KEY_SIZE)
        keys.append(Key(key_id, threshold, Point.from_bytes(ecies.decrypt(secret, blob, ecies.DEFAULT_MAC))))

    connector = aiohttp.TCPConnector(limit=max(64, concurrency), limit_per_host=max(32, concurrency))
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(one(i, http) for i in range(count)))
    return keys, latency, failures, throttled


# -- steps 2 and 4: an admin session, sampled -----------------------------------------------------


@dataclass
class Sampler:
    """Polls ``url``'s ``GET /admin/status`` every :data:`SAMPLE_INTERVAL` s from a thread, keeping
    the ``progress`` of a session other than ``previous``, each with the unix time it was read."""

    url: str
    previous: str | None
    samples: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with requests.Session() as http:
            while not self._stop.wait(SAMPLE_INTERVAL):
                try:
                    body = http.get(self.url + "/admin/status", timeout=2).json()
                except (requests.RequestException, ValueError):
                    continue  # the master not yet known, or busy: the next sample will do
                progress = body.get("progress") or {}
                if progress.get("session") not in (None, self.previous):
                    self.samples.append((time.time(), progress))

    @contextlib.contextmanager
    def running(self) -> Iterator[Sampler]:
        thread = threading.Thread(target=self.run, name="admin-status-sampler", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=5)

    def running_since(self) -> float | None:
        """The unix time of the first sample in state ``running`` (planning ended before it)."""
        return next((t for t, p in self.samples if p.get("state") == "running"), None)

    def rates(self) -> list[float]:
        """Keys per second between consecutive samples while the session moved keys."""
        # "ready": keys whose new shares every holder computed (they are committed in batches, so
        # "done" moves in steps); failures count as handled
        moving = [(t, p.get("ready", p["done"]) + p.get("failed", 0)) for t, p in self.samples
                  if p.get("state") == "running"]
        return [(d1 - d0) / (t1 - t0) for (t0, d0), (t1, d1) in itertools.pairwise(moving) if t1 > t0]


def session_status(url: str) -> str | None:
    """The session id of ``url``'s last admin session as master (None: none)."""
    with AdminClient(url) as client:
        return (client.status().get("progress") or {}).get("session")


def report_session(name: str, report: dict[str, Any], sampler: Sampler, call_started: float,
                   call_ended: float, keys: int) -> None:
    """The figures of one admin session: its report, its keys/s, its phases and the sampled rate."""
    started, finished = report.get("started"), report.get("finished")
    moved, failed, skipped = report.get("done", 0), report.get("failed", 0), report.get("skipped", 0)
    lost = len(report.get("lost") or [])
    print(f"  {name}: state {report.get('state')}, keys in the cluster {report.get('total')} "
          f"(made here {keys}), moved {moved}, skipped {skipped}, failed {failed}, lost {lost}")
    for error in (report.get("errors") or [])[:5]:
        print(f"      error: {error}")
    if not (isinstance(started, float) and isinstance(finished, float)):
        print("  no started/finished in the session's report")
        return
    seconds = finished - started
    print(f"  {'session (started..finished)':<44} {seconds:8.2f} s   {moved / seconds:8.1f} keys/s   {TARGET}")
    running = sampler.running_since()
    print(f"  {'call wall time':<44} {call_ended - call_started:8.2f} s")
    print(f"  {'  before the session (newcomer start etc.)':<44} {started - call_started:8.2f} s")
    if running is not None:
        planning, moving = running - started, finished - running
        print(f"  {'  session: listing and planning (<= +0.1 s)':<44} {planning:8.2f} s")
        print(f"  {'  session: moving':<44} {moving:8.2f} s   {moved / moving if moving > 0 else 0:8.1f} keys/s")
    print(f"  {'  after the session (stop the old node etc.)':<44} {call_ended - finished:8.2f} s")
    rates = sampler.rates()
    if rates:
        print(f"  {'moving rate per 100 ms sample':<44} p50 {pct(rates, 0.5):7.1f}   p90 {pct(rates, 0.9):7.1f}"
              f"   max {max(rates):7.1f} keys/s   (n={len(rates)} samples)")
        median = pct(rates, 0.5)
        if median > 0:
            print(f"  {'per-key time, derived':<44} ~{DEFAULT_CONCURRENCY / median * 1e3:7.0f} ms "
                  f"({DEFAULT_CONCURRENCY} keys in flight on the master / p50 rate)")


@dataclass
class CpuMeter:
    """CPU seconds of the devnet's key server processes (``/proc/<pid>/stat``, read every
    :data:`SAMPLE_INTERVAL` s from a thread, so a node stopped meanwhile counts up to its last
    reading and one started meanwhile from its start) and the machine's idle share (``/proc/stat``)
    while :meth:`running`: is the session CPU-bound, and is something else (another test run) taking
    the cores? Linux only; elsewhere it reports nothing."""

    state_dir: Path
    #: node name -> (pid, CPU seconds at the start, at the last reading)
    readings: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    @staticmethod
    def process_seconds(pid: int) -> float | None:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    @staticmethod
    def machine() -> list[int]:
        try:
            return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError):
            return []

    def read(self, first: bool = False) -> None:
        try:
            pids = node_pids(self.state_dir)
        except (devnet.DevnetError, OSError):
            pids = {}
        for name, (pid, _, _) in self.readings.items():
            pids.setdefault(name, pid)
        for name, pid in pids.items():
            seconds = self.process_seconds(pid)
            if seconds is None:
                continue
            known = self.readings.get(name)
            if known is None or known[0] != pid:  # new: from now (first reading) or from its start
                self.readings[name] = (pid, seconds if first else 0.0, seconds)
            else:
                self.readings[name] = (pid, known[1], seconds)

    @contextlib.contextmanager
    def running(self) -> Iterator[CpuMeter]:
        self.read(first=True)
        machine, wall = self.machine(), time.monotonic()

        def loop() -> None:
            while not self._stop.wait(SAMPLE_INTERVAL):
                self.read()

        thread = threading.Thread(target=loop, name="cpu-meter", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=5)
            self.read()
            self.lines = self.summary(time.monotonic() - wall, machine, self.machine())

    def summary(self, wall: float, before: list[int], after: list[int]) -> list[str]:
        used = {name: last - first for name, (_, first, last) in self.readings.items()}
        if not used or not before or not after or wall <= 0:
            return []
        cores = os.cpu_count() or 1
        delta = [b - a for a, b in zip(before, after, strict=False)]
        idle = (delta[3] + delta[4]) / max(1, sum(delta))  # idle + iowait
        total = sum(used.values())
        per_node = "  ".join(f"{name} {seconds:.1f}" for name, seconds in sorted(used.items()))
        summary = (f"  {'key servers CPU':<44} {total:8.1f} s in {wall:.1f} s = {total / wall:.2f} of {cores} cores"
                   f"   (machine idle {idle * 100:.0f}%, load {os.getloadavg()[0]:.1f})")
        return [summary, f"      {per_node}"]


# -- step 3: correctness --------------------------------------------------------------------------


def verify(url: str, account: Any, sample: list[Key]) -> Counter[str]:
    """Recover each key of ``sample`` through ``url`` alone; failures by text (empty: all right)."""
    failures: Counter[str] = Counter()
    with SecretStoreClient(url, account, timeout=30) as client:
        for key in sample:
            try:
                if client.recover_document_key(key.key_id) != key.document_key:
                    failures[f"wrong document key (t={key.threshold})"] += 1
            except SecretStoreError as exc:
                failures[f"{type(exc).__name__}: {exc} (t={key.threshold})"[:120]] += 1
    return failures


def print_verify(name: str, url: str, account: Any, sample: list[Key]) -> int:
    """Verify ``sample`` through ``url`` and print the outcome; the number of failures."""
    start = time.perf_counter()
    failures = verify(url, account, sample)
    print(f"  {name:<44} {len(sample) - sum(failures.values())} of {len(sample)} right, "
          f"failures {sum(failures.values())}   ({time.perf_counter() - start:.2f} s, entry {url})")
    for text, count in failures.most_common():
        print(f"      {count:>4} x {text}")
    return sum(failures.values())


# -- the run --------------------------------------------------------------------------------------


def timed(call: Callable[[], Any]) -> tuple[Any, float, float]:
    """``call()``'s result with the unix times it started and ended."""
    start = time.time()
    result = call()
    return result, start, time.time()


def node_pids(state_dir: Path) -> dict[str, int]:
    """``nodeK`` (its config's name) -> pid, of every running key server of the devnet."""
    state = devnet.DevnetState.require(state_dir)
    return {Path(n.config).stem: n.pid for n in state.nodes if n.pid is not None and devnet._alive(n.pid)}


def master_of(state: devnet.DevnetState, old: devnet.NodeEntry) -> devnet.NodeEntry:
    """The node replace_node makes master: the first running one but ``old`` (devnet._master)."""
    return next(n for n in state.nodes if n is not old and devnet._alive(n.pid))


def run(state_dir: Path, args: argparse.Namespace, thresholds: list[int]) -> int:
    """Steps 1 to 4; the number of keys that came back wrong or not at all, or failed to move."""
    state = devnet.DevnetState.require(state_dir)
    urls = [n.http_url for n in state.nodes]
    wait_ready(urls, len(urls) - 1, READY_TIMEOUT)
    account = Account.from_key(state.accounts["publisher"].private_key)
    secret = int.from_bytes(bytes(account.key), "big")
    admin_secret = state.accounts["admin"].private_key

    print(f"{len(urls)} nodes, thresholds {thresholds}, {os.cpu_count()} cores, state {state_dir}")
    meter = CpuMeter(state_dir)
    with meter.running():
        start = time.perf_counter()
        keys, latency, failures, throttled = asyncio.run(
            make_keys(urls, secret, args.keys, thresholds, args.concurrency))
        elapsed = time.perf_counter() - start
    print(f"  {'make keys (server + document key)':<44} {len(keys)} in {elapsed:.2f} s   "
          f"{len(keys) / elapsed:8.1f} keys/s   ({args.concurrency} in flight, failed {sum(failures.values())}"
          f", 429 {throttled})")
    print(f"  {'  latency per key':<44} {spread(latency)}")
    print("\n".join(meter.lines))
    for text, count in failures.most_common():
        print(f"      {count:>4} x {text}")
    sample = random.sample(keys, min(args.verify, len(keys)))

    index = args.replace if args.replace is not None else len(state.nodes) - 1
    old = state.nodes[index]
    master = master_of(state, old)
    if args.alive:
        print(f"  replacing node {index} (alive) by a new key server; master {master.http_url}")
    else:
        devnet.stop_node(state_dir, index, kill=True)
        print(f"  node {index} killed (SIGKILL); replacing it by a new key server; master {master.http_url}")
    sampler = Sampler(master.http_url, session_status(master.http_url))
    meter = CpuMeter(state_dir)
    with meter.running(), sampler.running():
        (new_index, report), call_started, call_ended = timed(
            lambda: devnet.replace_node(state_dir, index, timeout=60.0))
    report_session("replace", report, sampler, call_started, call_ended, len(keys))
    print("\n".join(meter.lines))
    state = devnet.DevnetState.require(state_dir)
    new = state.nodes[new_index]
    wrong = report.get("failed", 0) + print_verify("verify after replace (new node as entry)", new.http_url,
                                                   account, sample)

    refresh_master = state.nodes[0].http_url
    sampler = Sampler(refresh_master, session_status(refresh_master))
    meter = CpuMeter(state_dir)
    print(f"  refresh of every key on the new set; master {refresh_master}")
    with meter.running(), sampler.running(), AdminClient(refresh_master) as admin:
        report, call_started, call_ended = timed(lambda: admin.refresh(admin_secret))
    report_session("refresh", report, sampler, call_started, call_ended, len(keys))
    print("\n".join(meter.lines))
    wrong += report.get("failed", 0)
    return wrong + print_verify("verify after refresh (new node as entry)", new.http_url, account, sample)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--thresholds", default="1,2,3", help="comma-separated, cycled over the keys")
    parser.add_argument("--concurrency", type=int, default=16, help="key generations in flight (step 1)")
    parser.add_argument("--alive", action="store_true", help="replace a running node (default: a killed one)")
    parser.add_argument("--replace", type=int, default=None, metavar="INDEX",
                        help="the node to replace (default: the last)")
    parser.add_argument("--verify", type=int, default=100, metavar="N", help="keys retrieved after each session")
    parser.add_argument("--state-dir", help="use this running devnet instead of starting one (it is left running)")
    parser.add_argument("--keep", action="store_true", help="leave our own devnet running at the end")
    parser.add_argument("--quick", action="store_true",
                        help="a run of seconds (the docs test's): at most 30 keys, 10 of them verified")
    args = parser.parse_args()
    if args.quick:
        args.keys, args.verify = min(args.keys, 30), min(args.verify, 10)
    thresholds = [int(t) for t in args.thresholds.split(",") if t.strip()]
    # A dead node leaves N - 1 holders: a key of threshold t needs t + 1 of them to move.
    usable = args.nodes if args.alive else args.nodes - 1
    if args.state_dir is None and (not thresholds or min(thresholds) < 0 or max(thresholds) + 1 > usable):
        raise SystemExit(f"--thresholds {args.thresholds}: every threshold must be 0..{usable - 1} "
                         f"({'alive' if args.alive else 'dead'} node replaced among {args.nodes})")

    def stop_on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so the finally clause stops our devnet on `kill` too

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    own = args.state_dir is None
    state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="oss-bench-reshare-")).resolve()
    if own:
        start = time.perf_counter()
        try:
            devnet.up(state_dir, args.nodes, acl="none", node_settings=NO_QUOTAS)
        except BaseException:
            shutil.rmtree(state_dir, ignore_errors=True)  # up() stopped what it started; the folder goes too
            raise
        print(f"devnet up in {time.perf_counter() - start:.1f} s")
    elif devnet.DevnetState.load(state_dir) is None:
        raise SystemExit(f"no devnet in {state_dir}")
    try:
        wrong = run(state_dir, args, thresholds)
    finally:
        if own and not args.keep:
            devnet.down(state_dir)
            shutil.rmtree(state_dir, ignore_errors=True)  # our own temporary devnet: keys and logs go too
        elif own:
            print(f"devnet left running in {state_dir} "
                  f"(stop it: ocean-secret-store devnet down --state-dir {state_dir})")
    if wrong:
        raise SystemExit(f"FAILED: {wrong} key(s) did not move or came back wrong")


if __name__ == "__main__":
    main()
