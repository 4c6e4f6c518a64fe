"""Key servers holding many keys: retrieval latency, node RSS, disk per key and start time as the
key table grows (issue 18 item 1).

    .venv/bin/python bench/scale.py --keys 1000,100000 [--nodes 3] [--threshold 1] [--quick]

Starts its own devnet in a temporary directory (ACL none), stops its key servers, and fills every
node's database with ``--keys`` keys (cumulative: each size adds to the one before) with a
*bench-only loader*, not through the cluster: per key, a dealer-side Shamir sharing of a random
server key ``s`` (``f(0) = s``, degree t, a random distinct id number ``x_j`` per node, as a
generation's master draws them) and a random document key stored under it (``C``, ``E``,
crypto.document), written to each node's storage through ``SqliteKeyStorage.insert_many``: the
record a generation and a document key store leave (one version, epoch 0, its hash, the
commitments ``D_k = a_k·G``, the share sealed under that node's secret, the record MAC). Only the
DKG differs (one dealer instead of every node): the shares are what the cluster uses, so a
retrieval through the cluster gives back the document key, which a sample checks end to end.

Then, at each size: the key servers' start time (spawn to a complete mesh on ``/ready``), each
node's RSS (``VmRSS``, after the retrievals), the database bytes per key per node (after
``PRAGMA wal_checkpoint(TRUNCATE)``), how long a ``SELECT COUNT(*)`` of the key table takes, and
shadow retrieval latency through the SDK (``SecretStoreClient.retrieve_document_key_shadow``,
concurrency 1): random keys never asked before (cold for the nodes' key caches) and a small hot
set asked again and again. Before each restart the database files are dropped from the OS page
cache (``--keep-cache`` keeps them), so cold keys are read from the disk. The load average is
printed with each size (2 shared cores).

Disk is checked first: a run that could not finish is refused with the bytes it needs.
``--quick``: 1000 keys, few samples (seconds).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import pct, wait_ready
from eth_account import Account
from eth_account.signers.local import LocalAccount

from ocean_secret_store import SecretStoreClient, devnet
from ocean_secret_store.crypto import document, sharing
from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.node.config import load_config
from ocean_secret_store.node.storage import KeyShare, KeyVersion, SqliteKeyStorage

READY_TIMEOUT = 120.0
#: Disk per key per node assumed before a size is measured (today's record spills to an overflow
#: page: about 4.7 KB for 5 nodes, t = 2), and the margin the check asks on top.
ASSUMED_BYTES_PER_KEY = 5000
DISK_MARGIN = 1.5
CHUNK = 2000  # keys per transaction of the loader


@dataclass
class Node:
    """What the loader needs of one key server: its database and its secret (never printed)."""

    node_id: bytes
    path: Path
    secret: int


@dataclass
class Figures:
    keys: int
    load_rate: float
    start: float
    rss_mib: list[float]
    bytes_per_key: float
    count_seconds: float
    cold: list[float]
    hot: list[float]
    verified: tuple[int, int]
    load: tuple[float, float, float]


def key_id_of(seed: bytes, index: int) -> bytes:
    """The ``index``-th key id of this run (drawn again for sampling; no list of a million ids)."""
    return hashlib.sha256(seed + index.to_bytes(8, "big")).digest()


def deal(nodes: Sequence[Node], threshold: int, author: bytes) -> tuple[list[KeyShare], Point]:
    """One key's records, one per node (in ``nodes`` order), and its document key ``M``."""
    xs: set[int] = set()
    while len(xs) < len(nodes):
        xs.add(random_scalar())
    id_numbers = dict(zip((n.node_id for n in nodes), xs, strict=True))
    f = sharing.random_polynomial(threshold)
    commitments = sharing.feldman_commitments(f)  # D_0 = s·G = Y
    public = commitments[0]
    document_key, common, encrypted = document.generate_document_key(public)
    records = [
        KeyShare(author=author, threshold=threshold, public=public, common_point=common, encrypted_point=encrypted,
                 versions=(KeyVersion.new(id_numbers, sharing.evaluate(f, id_numbers[n.node_id]), commitments),))
        for n in nodes
    ]
    return records, document_key


def fill(nodes: Sequence[Node], threshold: int, author: bytes, seed: bytes, start: int, stop: int,
         sample: set[int]) -> dict[bytes, Point]:
    """Write keys ``start..stop-1`` into every node's database; the document keys of ``sample``."""
    stores = [SqliteKeyStorage(n.path, n.secret) for n in nodes]
    kept: dict[bytes, Point] = {}
    try:
        for low in range(start, stop, CHUNK):
            batches: list[list[tuple[bytes, KeyShare]]] = [[] for _ in nodes]
            for index in range(low, min(stop, low + CHUNK)):
                key_id = key_id_of(seed, index)
                records, document_key = deal(nodes, threshold, author)
                for batch, record in zip(batches, records, strict=True):
                    batch.append((key_id, record))
                if index in sample:
                    kept[key_id] = document_key
            for store, batch in zip(stores, batches, strict=True):
                store.insert_many(batch)
    finally:
        for store in stores:
            store.close()
    return kept


def checkpointed_size(path: Path, drop_cache: bool) -> int:
    """The database's bytes once its write-ahead log is folded in and truncated; with
    ``drop_cache``, its pages are then synced and dropped from the OS page cache (no root needed:
    ``posix_fadvise(DONTNEED)``), so that the first reads after the restart go to the disk."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    total = 0
    for suffix in ("", "-wal"):
        if os.path.exists(f"{path}{suffix}"):
            total += os.stat(f"{path}{suffix}").st_size
    if drop_cache:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return total


def count_seconds(path: Path) -> float:
    """How long ``SELECT COUNT(*)`` over the key table takes (what a key count without a kept total costs)."""
    with sqlite3.connect(path) as db:
        started = time.perf_counter()
        db.execute("SELECT COUNT(*) FROM keys").fetchone()
        return time.perf_counter() - started


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def disk_needed(keys: int, nodes: int, per_key: float) -> int:
    return int(keys * nodes * per_key * DISK_MARGIN)


def check_disk(where: Path, needed: int) -> None:
    free = shutil.disk_usage(where).free
    if free < needed:
        sys.exit(f"refused: {needed / 2**20:,.0f} MiB of free disk needed in {where} (keys x nodes x "
                 f"bytes per key x {DISK_MARGIN}), {free / 2**20:,.0f} MiB free; ask for fewer keys or free some space")


def timed(samples: list[float], fn: Callable[..., object], *args: object) -> object:
    start = time.perf_counter()
    result = fn(*args)
    samples.append(time.perf_counter() - start)
    return result


def cold_indices(keys: int, count: int, used: set[int]) -> Iterator[int]:
    """``count`` random key indices below ``keys`` never asked before in this run."""
    found = 0
    while found < min(count, keys - len(used)):
        index = random.randrange(keys)
        if index not in used:
            used.add(index)
            found += 1
            yield index


def measure(state_dir: Path, nodes: Sequence[Node], seed: bytes, keys: int, kept: dict[bytes, Point],
            samples: int, used: set[int], account: LocalAccount) -> tuple[float, list[float], list[float], list[float],
                                                                   tuple[int, int]]:
    state = devnet.DevnetState.require(state_dir)
    started = time.perf_counter()
    devnet.restart_nodes(state_dir, list(range(len(nodes))), timeout=READY_TIMEOUT)
    state = devnet.DevnetState.require(state_dir)
    urls = [n.http_url for n in state.nodes]
    wait_ready(urls, len(urls) - 1, READY_TIMEOUT)
    start_time = time.perf_counter() - started
    client = SecretStoreClient(urls, account, timeout=30.0)
    try:
        cold: list[float] = []
        for index in cold_indices(keys, samples, used):
            timed(cold, client.retrieve_document_key_shadow, key_id_of(seed, index))
        hot_ids = [key_id_of(seed, i) for i in range(min(keys, 16))]
        for key_id in hot_ids:
            client.retrieve_document_key_shadow(key_id)
        hot: list[float] = []
        for round_ in range(samples):
            timed(hot, client.retrieve_document_key_shadow, hot_ids[round_ % len(hot_ids)])
        right = sum(client.recover_document_key(key_id) == document_key for key_id, document_key in kept.items())
    finally:
        client.close()
    rss = [rss_mib(n.pid) for n in state.nodes if n.pid is not None]
    return start_time, rss, cold, hot, (right, len(kept))


def stop_nodes(state_dir: Path, count: int) -> None:
    for index in range(count):
        devnet.stop_node(state_dir, index)


def ms(samples: list[float]) -> str:
    return "/".join(f"{pct(samples, q) * 1e3:.1f}" for q in (0.5, 0.9, 0.99)) if samples else "-"


def report(rows: list[Figures]) -> None:
    print()
    print(f"{'keys':>9} {'load keys/s':>11} {'start s':>8} {'RSS MiB (max)':>13} {'B/key/node':>10} {'COUNT(*) s':>10} "
          f"{'cold p50/p90/p99 ms':>21} {'hot p50/p90/p99 ms':>20} {'verified':>9} {'load avg':>15}")
    for r in rows:
        print(f"{r.keys:>9,} {r.load_rate:>11,.0f} {r.start:>8.2f} {max(r.rss_mib):>13.1f} "
              f"{r.bytes_per_key:>10,.0f} {r.count_seconds:>10.2f} "
              f"{ms(r.cold):>21} {ms(r.hot):>20} {f'{r.verified[0]}/{r.verified[1]}':>9} "
              f"{' '.join(f'{x:.2f}' for x in r.load):>15}")
    right = sum(r.verified[0] for r in rows)
    total = sum(r.verified[1] for r in rows)
    print(f"verified end to end (recovered document key = the one loaded)   {right} of {total} right")
    if rows and rows[0].cold:
        base = pct(rows[0].cold, 0.5)
        for r in rows[1:]:
            print(f"cold p50 at {r.keys:,} keys / at {rows[0].keys:,} keys: {pct(r.cold, 0.5) / base:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", default="1000,100000", help="comma-separated sizes, each a cumulative total")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--threshold", type=int, default=None, help="default: (nodes - 1) // 2")
    parser.add_argument("--samples", type=int, default=None, help="cold and hot retrievals per size")
    parser.add_argument("--verify", type=int, default=10, help="keys per size recovered and checked end to end")
    parser.add_argument("--keep-cache", action="store_true",
                        help="leave the databases in the OS page cache (else dropped before each restart)")
    parser.add_argument("--quick", action="store_true", help="1000 keys, few samples (seconds)")
    args = parser.parse_args()
    sizes = [1000] if args.quick else sorted({int(s.replace("_", "")) for s in args.keys.split(",")})
    if not sizes or sizes[0] < 16:
        parser.error("--keys: sizes of at least 16 keys")
    threshold = args.threshold if args.threshold is not None else (args.nodes - 1) // 2
    samples = args.samples or (30 if args.quick else 300)
    tmp = Path(tempfile.gettempdir())
    check_disk(tmp, disk_needed(sizes[-1], args.nodes, ASSUMED_BYTES_PER_KEY))
    state_dir = Path(tempfile.mkdtemp(prefix="oss-bench-scale-"))
    load = os.getloadavg()
    print(f"{args.nodes} nodes, threshold {threshold}, sizes {', '.join(f'{s:,}' for s in sizes)}, {samples} samples, "
          f"{os.cpu_count()} cores, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    account = Account.create()
    author = bytes.fromhex(account.address[2:])
    seed = os.urandom(16)
    rows: list[Figures] = []
    try:
        state = devnet.up(state_dir, args.nodes, acl="none", timeout=READY_TIMEOUT)
        nodes = []
        for entry in state.nodes:
            config = load_config(entry.config)
            nodes.append(Node(config.node_id, config.storage_path, config.node_secret))
        stop_nodes(state_dir, len(nodes))
        done = 0
        used: set[int] = set()
        for size in sizes:
            if rows:  # the disk a measured key takes, for the sizes still to come
                check_disk(tmp, disk_needed(size - done, args.nodes, rows[-1].bytes_per_key))
            sample = set(random.sample(range(done, size), min(args.verify, size - done)))
            started = time.perf_counter()
            kept = fill(nodes, threshold, author, seed, done, size, sample)
            rate = (size - done) / (time.perf_counter() - started)
            done = size
            scan = count_seconds(nodes[0].path)
            per_key = sum(checkpointed_size(n.path, not args.keep_cache) for n in nodes) / len(nodes) / size
            used |= sample
            start_time, rss, cold, hot, verified = measure(state_dir, nodes, seed, size, kept, samples, used, account)
            rows.append(Figures(size, rate, start_time, rss, per_key, scan, cold, hot, verified, os.getloadavg()))
            print(f"{size:,} keys: loaded at {rate:,.0f} keys/s, start {start_time:.2f} s, RSS "
                  f"{', '.join(f'{r:.0f}' for r in rss)} MiB, {per_key:,.0f} B/key/node, cold p50 "
                  f"{pct(cold, 0.5) * 1e3:.1f} ms, verified {verified[0]}/{verified[1]}", flush=True)
            stop_nodes(state_dir, len(nodes))
    finally:
        devnet.down(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)
    report(rows)
    load = os.getloadavg()
    print(f"load after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if any(r.verified[0] != r.verified[1] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
