"""The migration of schema 1-5 records to schema 6 in the background, with real processes: a
process killed inside and after a migration step (crash points, ``os._exit`` as SIGKILL would
leave it) leaves a database that opens and goes on; a 3-node devnet whose databases are schema 5
(written as the schema-5 code wrote them, ocean_secret_store/testing/schema5.py) answers /ready
and serves its keys at once, whatever the background migration has done by then, and ends with
every record compact and the marker gone."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from eth_account import Account

from ocean_secret_store import SecretStoreClient, devnet, failpoints
from ocean_secret_store.crypto import document, sharing
from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.node import backup, storage
from ocean_secret_store.node.config import load_config
from ocean_secret_store.node.storage import DB_FILENAME, KeyShare, KeyVersion, SqliteKeyStorage
from ocean_secret_store.testing.devnets import running_devnet
from ocean_secret_store.testing.schema5 import write_schema5

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "schema5"
SECRET = int(json.loads((FIXTURE / "expected.json").read_text())["node_secret"], 16)
KEYS = 3000  # a few dozen steps of 200: the nodes serve while the first steps run
SETTLE = 120.0

_STEP = """
import sys
from ocean_secret_store.node.storage import SqliteKeyStorage
store = SqliteKeyStorage(sys.argv[1], int(sys.argv[2], 16))
print(store.migrate_step(2))
"""


def _rows(path: Path) -> dict[bytes, bytes]:
    with sqlite3.connect(path) as db:
        return {bytes(k): bytes(r) if isinstance(r, bytes) else r.encode() for k, r in
                db.execute("SELECT key_id, record FROM keys")}


def _marker(path: Path) -> Any:
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT value FROM meta WHERE name = ?", (storage.META_RECORDS_MIGRATION,)).fetchone()
    return None if row is None else json.loads(bytes(row[0])[:-32])


def _step_in_a_process(path: Path, point: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, failpoints.ENV: f"{point}=exit" if point else ""}
    return subprocess.run([sys.executable, "-c", _STEP, str(path), f"{SECRET:x}"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize("point", [storage.FP_MIGRATION_STEP_WRITTEN, storage.FP_MIGRATION_STEP_COMMITTED])
def test_a_process_killed_in_a_migration_step_leaves_a_database_that_goes_on(tmp_path: Path, point: str) -> None:
    path = tmp_path / DB_FILENAME
    shutil.copyfile(FIXTURE / "keys.sqlite3", path)
    before = _rows(path)
    done = _step_in_a_process(path, None)  # one step of two records, committed
    assert done.returncode == 0, done.stderr
    first = _rows(path)
    crashed = _step_in_a_process(path, point)  # the second step, killed inside or just after its commit
    assert crashed.returncode == failpoints.EXIT_STATUS, crashed.stderr
    after = _rows(path)
    compact = sorted(k for k, r in after.items() if r[0] == 1)
    if point == storage.FP_MIGRATION_STEP_WRITTEN:
        assert after == first and _marker(path)["visited"] == 2  # the killed step left nothing
    else:
        assert compact == sorted(before)[:4] and _marker(path)["visited"] == 4
    assert backup.verify_database(path, SECRET).ok  # a partly converted database checks out
    with SqliteKeyStorage(path, SECRET) as store:
        assert store.migrating
        for key_id in before:
            assert store.get(key_id) is not None
        while not store.migrate_step(2).done:
            pass
    assert all(r[0] == 1 for r in _rows(path).values()) and _marker(path) is None
    assert len(backup.verify_database(path, SECRET).keys) == 6


def _deal(node_ids: list[bytes], threshold: int, author: bytes) -> tuple[list[KeyShare], Point]:
    id_numbers = dict(zip(node_ids, (random_scalar() for _ in node_ids), strict=True))
    f = sharing.random_polynomial(threshold)
    commitments = sharing.feldman_commitments(f)
    document_key, common, encrypted = document.generate_document_key(commitments[0])
    return [KeyShare(author, threshold, commitments[0], common, encrypted,
                     (KeyVersion.new(id_numbers, sharing.evaluate(f, id_numbers[n]), commitments),))
            for n in node_ids], document_key


def _status(url: str) -> dict[str, Any]:
    response = requests.get(url + "/status.json", timeout=10)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def test_a_devnet_on_schema_5_databases_serves_at_once_and_migrates_in_the_background(tmp_path: Path) -> None:
    account = Account.create()
    author = bytes.fromhex(account.address[2:])
    state_dir = tmp_path / "devnet"
    with running_devnet(state_dir, 3, acl="none") as state:
        configs = [load_config(n.config) for n in state.nodes]
        threshold = 1
        for index in range(len(configs)):
            devnet.stop_node(state_dir, index)
        node_ids = [c.node_id for c in configs]
        records: list[list[tuple[bytes, KeyShare]]] = [[] for _ in configs]
        sample: dict[bytes, Point] = {}
        for number in range(KEYS):
            key_id = number.to_bytes(32, "big")
            shares, document_key = _deal(node_ids, threshold, author)
            for mine, share in zip(records, shares, strict=True):
                mine.append((key_id, share))
            if number % 997 == 0:
                sample[key_id] = document_key
        for config, mine in zip(configs, records, strict=True):
            for suffix in ("", "-wal", "-shm"):
                Path(f"{config.storage_path}{suffix}").unlink(missing_ok=True)
            assert write_schema5(config.storage_path, config.node_secret, mine) == KEYS

        state = devnet.restart_nodes(state_dir, [0, 1, 2])  # waits for the mesh: /ready on every node
        urls = [n.http_url for n in state.nodes]
        seen = [_status(url)["records_to_migrate"] for url in urls]
        assert all(n is None or 0 <= n <= KEYS for n in seen)  # None: before the first step counted them
        with SecretStoreClient(urls, account, timeout=30.0) as client:
            for key_id, document_key in sample.items():  # served in whatever state the migration is
                assert client.recover_document_key(key_id) == document_key
            deadline = time.monotonic() + SETTLE
            while any(_status(url)["records_to_migrate"] != 0 for url in urls):
                assert time.monotonic() < deadline, [_status(url)["records_to_migrate"] for url in urls]
                time.sleep(0.2)
            for config in configs:
                assert _marker(config.storage_path) is None
                assert all(r[0] == 1 for r in _rows(config.storage_path).values())
            for key_id, document_key in sample.items():
                assert client.recover_document_key(key_id) == document_key
        for url in urls:
            metrics = requests.get(url + "/metrics", timeout=10).text
            assert "ocean_secret_store_records_to_migrate 0.0" in metrics
        text = Path(state.nodes[0].log).read_text()
        assert f"converting {KEYS} records" in text and f"{KEYS} converted, 0 kept" in text
