"""Key servers upgraded on schema-5 databases (issue 18 item 2): the start to ``/ready``, the
background migration's rate, and retrieval latency while it runs and after.

    .venv/bin/python bench/migration.py --keys 100000 [--nodes 3] [--threshold 1] [--quick]

Starts its own devnet in a temporary directory (ACL none), stops its key servers and replaces each
node's database with a schema-5 one of ``--keys`` keys (V3 JSON records, written as the schema-5
code wrote them: ocean_secret_store/testing/schema5.py; the keys dealt as bench/scale.py's loader
deals them, each with a document key). Then it starts the key servers again and measures: spawn to
a complete mesh on ``/ready`` on every node; document key shadow retrievals through the SDK
(concurrency 1, random keys) while any node still reports ``records_to_migrate`` > 0 in
``/status.json``, and as many after; the migration's rate per node, from its log line at the end
(records converted / seconds since the migration began, the start included). A sample of keys is
recovered end to end before and after. The load average is printed with each phase (2 shared cores).
``--quick``: 2,000 keys.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests
from benchlib import pct, wait_ready
from eth_account import Account
from eth_account.signers.local import LocalAccount
from scale import READY_TIMEOUT, Node, deal, key_id_of, storage_nodes

from ocean_secret_store import SecretStoreClient, devnet
from ocean_secret_store.crypto.curve import Point
from ocean_secret_store.testing.schema5 import Schema5Writer

DONE = re.compile(r"(\d+) converted, (\d+) kept .*?, ([\d.]+) s since the migration began")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def ms(samples: list[float]) -> str:
    return "/".join(f"{pct(samples, q) * 1e3:.1f}" for q in (0.5, 0.9, 0.99)) if samples else "-"


def to_migrate(urls: list[str]) -> list[int | None]:
    out: list[int | None] = []
    for url in urls:
        try:
            out.append(requests.get(url + "/status.json", timeout=10).json()["records_to_migrate"])
        except (requests.RequestException, ValueError, KeyError):
            out.append(None)
    return out


@dataclass
class Run:
    ready: float = 0.0
    migrated: float = 0.0
    load_during: str = ""
    during: list[float] = field(default_factory=list)
    after: list[float] = field(default_factory=list)
    right: tuple[int, int] = (0, 0)
    rates: list[tuple[int, float]] = field(default_factory=list)


def write_databases(nodes: list[Node], keys: int, threshold: int, author: bytes, seed: bytes,
                    verify: int) -> dict[bytes, Point]:
    """Every node's database replaced by a schema-5 one of ``keys`` keys; the document keys of a sample."""
    sample = set(random.sample(range(keys), min(verify, keys)))
    kept: dict[bytes, Point] = {}
    writers = []
    for node in nodes:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{node.path}{suffix}").unlink(missing_ok=True)
        writers.append(Schema5Writer(node.path, node.secret))
    try:
        for index in range(keys):
            records, document_key = deal(nodes, threshold, author)
            key_id = key_id_of(seed, index)
            for writer, record in zip(writers, records, strict=True):
                writer.add(key_id, record)
            if index in sample:
                kept[key_id] = document_key
    finally:
        for writer in writers:
            writer.close()
    return kept


def retrievals(client: SecretStoreClient, seed: bytes, keys: int, samples: list[float], count: int) -> None:
    for _ in range(count):
        key_id = key_id_of(seed, random.randrange(keys))
        begin = time.perf_counter()
        client.retrieve_document_key_shadow(key_id)
        samples.append(time.perf_counter() - begin)


def measure(state_dir: Path, nodes: list[Node], account: LocalAccount, seed: bytes, keys: int,
            kept: dict[bytes, Point], after_samples: int) -> Run:
    run = Run()
    spawned = time.perf_counter()
    devnet.restart_nodes(state_dir, list(range(len(nodes))), timeout=READY_TIMEOUT, mesh=False)
    state = devnet.DevnetState.require(state_dir)
    urls = [n.http_url for n in state.nodes]
    wait_ready(urls, len(urls) - 1, READY_TIMEOUT)
    run.ready = time.perf_counter() - spawned
    print(f"start to /ready on every node: {run.ready:.2f} s; records_to_migrate then: {to_migrate(urls)}; "
          f"load {load()}", flush=True)
    with SecretStoreClient(urls, account, timeout=30.0) as client:
        polled = time.perf_counter()
        while True:  # retrievals until every node reports 0, polled every half second
            if time.perf_counter() - polled >= 0.5:
                polled = time.perf_counter()
                if to_migrate(urls) == [0] * len(urls):
                    break
            retrievals(client, seed, keys, run.during, 1)
        run.migrated = time.perf_counter() - spawned
        run.load_during = load()
        right_during = sum(client.recover_document_key(k) == m for k, m in kept.items())
        retrievals(client, seed, keys, run.after, after_samples)
        right_after = sum(client.recover_document_key(k) == m for k, m in kept.items())
    run.right = (right_during, right_after)
    for entry in state.nodes:
        found = DONE.findall(Path(entry.log).read_text())
        if found:
            converted, _, seconds = found[-1]
            run.rates.append((int(converted), float(seconds)))
    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--threshold", type=int, default=None, help="default: (nodes - 1) // 2")
    parser.add_argument("--after", type=int, default=300, help="retrievals after the migration")
    parser.add_argument("--verify", type=int, default=10, help="keys recovered end to end, during and after")
    parser.add_argument("--quick", action="store_true", help="2,000 keys, 50 retrievals after")
    args = parser.parse_args()
    keys = 2000 if args.quick else args.keys
    threshold = args.threshold if args.threshold is not None else (args.nodes - 1) // 2
    state_dir = Path(tempfile.mkdtemp(prefix="oss-bench-migration-"))
    print(f"{args.nodes} nodes, threshold {threshold}, {keys:,} schema-5 keys, {os.cpu_count()} cores, "
          f"load {load()}", flush=True)
    account = Account.create()
    seed = os.urandom(16)
    try:
        state = devnet.up(state_dir, args.nodes, acl="none", timeout=READY_TIMEOUT)
        nodes = storage_nodes(state)
        for index in range(len(nodes)):
            devnet.stop_node(state_dir, index)
        started = time.perf_counter()
        kept = write_databases(nodes, keys, threshold, bytes.fromhex(account.address[2:]), seed, args.verify)
        size = sum(n.path.stat().st_size for n in nodes) / len(nodes)
        print(f"written in {time.perf_counter() - started:.0f} s: {size / 1e6:,.1f} MB a node "
              f"({size / keys:,.0f} B/key), load {load()}", flush=True)
        run = measure(state_dir, nodes, account, seed, keys, kept, 50 if args.quick else args.after)
        size_after = sum(n.path.stat().st_size for n in nodes) / len(nodes)
    finally:
        devnet.down(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)
    print()
    print(f"start to /ready (every node, mesh complete)       {run.ready:.2f} s")
    print(f"migration done on every node (from spawn)         {run.migrated:.1f} s, load {run.load_during}")
    for converted, seconds in run.rates:
        print(f"  a node: {converted:,} records in {seconds:.1f} s since its migration began: "
              f"{converted / seconds:,.0f} keys/s")
    print(f"retrieval p50/p90/p99 ms during the migration     {ms(run.during)} ({len(run.during)} retrievals)")
    print(f"retrieval p50/p90/p99 ms after                    {ms(run.after)} ({len(run.after)} retrievals), "
          f"load {load()}")
    print(f"file a node: {size / 1e6:,.1f} MB before, {size_after / 1e6:,.1f} MB after (free pages kept, reused)")
    print(f"verified end to end (recovered document key = the one written)   during {run.right[0]} of {len(kept)}, "
          f"after {run.right[1]} of {len(kept)} right")
    if run.right != (len(kept), len(kept)) or len(run.rates) != len(nodes):
        sys.exit(1)


if __name__ == "__main__":
    main()
