"""Issue 14 on real key server processes (a devnet, ACL none): replace a dead node while retrievals
run, grow 3 -> 5 and shrink back, refusals that change nothing, an interrupted change resumed,
proactive refresh (t old + t new shares do not combine), a stale backup detected and repaired, a
wiped node repaired and then needed.

Every key is checked by recovering its document key through real HTTP requests and comparing it
with the one the generation returned; shares and versions are read from the nodes' own databases
(under their own node secrets) only to show what the protocol left on disk.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from eth_account import Account

from ocean_secret_store import devnet
from ocean_secret_store.client.admin import AdminClient
from ocean_secret_store.client.client import SecretStoreClient
from ocean_secret_store.crypto.curve import N, Point
from ocean_secret_store.crypto.sharing import lagrange_coefficients_at_zero
from ocean_secret_store.exceptions import AccessDenied, KeysWouldBeLost, NodeDisconnected, SecretStoreError
from ocean_secret_store.node.config import load_config
from ocean_secret_store.node.storage import KeyShare, SqliteKeyStorage
from ocean_secret_store.testing import devnets
from ocean_secret_store.testing.devnets import running_devnet

pytestmark = pytest.mark.integration

#: key id -> (threshold, document key)
Keys = dict[bytes, tuple[int, Point]]


# -- helpers ------------------------------------------------------------------------------------


def urls(state: devnet.DevnetState, indices: Sequence[int] | None = None) -> list[str]:
    return [n.http_url for i, n in enumerate(state.nodes) if indices is None or i in indices]


def node_id(state: devnet.DevnetState, index: int) -> bytes:
    return bytes.fromhex(state.nodes[index].public.removeprefix("0x"))


def admin_secret(state: devnet.DevnetState) -> str:
    return state.accounts["admin"].private_key


def make_keys(state: devnet.DevnetState, account: Account, thresholds: Sequence[int], entries: Sequence[str]) -> Keys:
    """One key per threshold, generated with its document key through the entries in turn (4 at once)."""

    def one(job: tuple[int, int]) -> tuple[bytes, tuple[int, Point]]:
        i, threshold = job
        key_id = os.urandom(32)
        with SecretStoreClient(entries[i % len(entries)], account) as client:
            return key_id, (threshold, client.generate_server_and_document_key(key_id, threshold))

    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(one, enumerate(thresholds)))


def recover(url: str, account: Account, key_id: bytes) -> Point:
    with SecretStoreClient(url, account, timeout=20.0) as client:
        return client.recover_document_key(key_id)


def check_all(keys: Keys, account: Account, entries: Sequence[str], max_threshold: int = 99) -> None:
    """Every key of threshold <= ``max_threshold`` recovers its document key, entries in turn."""
    jobs = [(key_id, document_key, entries[i % len(entries)])
            for i, (key_id, (t, document_key)) in enumerate(keys.items()) if t <= max_threshold]

    def one(job: tuple[bytes, Point, str]) -> tuple[bytes, str] | None:
        key_id, document_key, url = job
        return None if recover(url, account, key_id) == document_key else (key_id, url)

    with ThreadPoolExecutor(4) as pool:
        wrong = [r for r in pool.map(one, jobs) if r is not None]
    assert not wrong, f"{len(wrong)} keys recovered a wrong document key, e.g. {wrong[:3]}"


@contextlib.contextmanager
def retrieving(keys: Keys, account: Account, entries: Sequence[str], max_threshold: int) -> Iterator[dict[str, list]]:
    """Recover random keys through random entries in a background thread for the block's length;
    yields ``{"ok": [...], "failed": [...]}`` (a wrong document key is a failure too)."""
    stop = threading.Event()
    tally: dict[str, list] = {"ok": [], "failed": []}
    candidates = [(k, d) for k, (t, d) in keys.items() if t <= max_threshold]

    def loop() -> None:
        rng = random.Random(7)
        while not stop.is_set():
            key_id, document_key = rng.choice(candidates)
            url = rng.choice(entries)
            try:
                got = recover(url, account, key_id)
            except SecretStoreError as exc:
                tally["failed"].append((url, key_id.hex()[:16], str(exc)))
                continue
            (tally["ok"] if got == document_key else tally["failed"]).append((url, key_id.hex()[:16]))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield tally
    finally:
        stop.set()
        thread.join(30)


def records(state: devnet.DevnetState, index: int, key_ids: Sequence[bytes]) -> dict[bytes, KeyShare | None]:
    """What node ``index`` has on disk (read under its own node secret; the node may be running)."""
    node = state.nodes[index]
    with SqliteKeyStorage(Path(node.data_dir), load_config(node.config).node_secret) as db:
        return {key_id: db.get(key_id) for key_id in key_ids}


def assert_one_version(state: devnet.DevnetState, holders: Sequence[int], key_ids: Sequence[bytes]) -> None:
    """Every holder has exactly one (active) version of every key, the same one: none on two."""
    seen = [records(state, i, key_ids) for i in holders]
    for key_id in key_ids:
        versions = [r[key_id] for r in seen]
        described = [None if v is None else [(x.hash.hex()[:8], x.epoch, x.active) for x in v.versions]
                     for v in versions]
        assert all(v is not None and len(v.versions) == 1 and v.versions[0].active for v in versions), (
            key_id.hex(), described)
        assert len({v.versions[0].hash for v in versions if v is not None}) == 1, key_id.hex()


def reconstruct(points: Sequence[tuple[int, int]]) -> int:
    lambdas = lagrange_coefficients_at_zero([x for x, _ in points])
    return sum(lam * s for lam, (_, s) in zip(lambdas, points, strict=True)) % N


def shares_of(state: devnet.DevnetState, indices: Sequence[int], key_id: bytes) -> list[tuple[int, int]]:
    out = []
    for i in indices:
        record = records(state, i, [key_id])[key_id]
        assert record is not None
        version = record.last_version
        out.append((version.id_numbers[node_id(state, i)], version.secret_share))
    return out


def wait_done(client: AdminClient, at_least: int, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = client.status().get("progress") or {}
        if progress.get("state") == "running" and progress.get("ready", 0) >= at_least:
            return progress
        time.sleep(0.01)
    raise AssertionError(f"the session did not reach {at_least} keys: {progress}")


def db_files(state: devnet.DevnetState, index: int) -> list[Path]:
    data = Path(state.nodes[index].data_dir)
    return [p for p in data.iterdir() if p.name.startswith("keys.sqlite3")]


# -- replace a dead node while retrievals run ----------------------------------------------------


def test_replace_a_dead_node_while_retrievals_run(tmp_path_factory: pytest.TempPathFactory) -> None:
    state_dir = tmp_path_factory.mktemp("replace")
    with running_devnet(state_dir, 5, acl="none") as state:
        account = Account.from_key(state.accounts["publisher"].private_key)
        keys = make_keys(state, account, [1, 2, 3] * 66 + [1, 2] + [4, 4, 4], urls(state))
        assert len(keys) == 203
        doomed = {k for k, (t, _) in keys.items() if t == 4}
        devnet.stop_node(state_dir, 3, kill=True)  # node 4 dies for good
        survivors = urls(state, [0, 1, 2, 4])
        before = {i: records(state, i, list(keys)) for i in (0, 1, 2, 4)}
        with retrieving(keys, account, survivors, max_threshold=3) as tally:
            with pytest.raises(KeysWouldBeLost) as refused:
                devnet.replace_node(state_dir, 3)
            assert all(k.hex() in str(refused.value) for k in list(doomed)[:3]) or "3 key(s)" in str(refused.value)
            # nothing changed: same versions on disk, no admin session, the old servers set
            for i in (0, 1, 2, 4):
                assert records(state, i, list(keys)) == before[i]
                status = AdminClient(urls(state)[i]).status()
                assert status["admin_session"] is None and len(status["servers_set"]) == 5
            index, report = devnet.replace_node(state_dir, 3, force=True)
            time.sleep(1.0)  # retrievals go on a moment after the change as well
        assert report["done"] == 200 and report["failed"] == 0
        assert {bytes.fromhex(x["key_id"][2:]) for x in report["lost"]} == doomed
        assert not tally["failed"], tally["failed"][:5]
        assert len(tally["ok"]) >= 20, "the retrievals did not run throughout the change"
        state = devnet.DevnetState.require(state_dir)
        new_url = state.nodes[index].http_url
        # the running provider reread its key server list from ocean.ini (SIGHUP): the new node in it
        provider_log = state_dir / "provider.log"
        deadline = time.monotonic() + 10.0
        while not any("SIGHUP: key servers now" in line and new_url in line
                      for line in provider_log.read_text().splitlines()):
            assert time.monotonic() < deadline, "the provider did not reload its key server list"
            time.sleep(0.1)
        movable = {k: v for k, v in keys.items() if k not in doomed}
        # through the new node: it is the entry, so every group includes it
        check_all(movable, account, [new_url])
        assert_one_version(state, [0, 1, 2, 4, index], list(movable))
        # through the old survivors alone (the new node stopped)
        devnet.stop_node(state_dir, index)
        check_all(movable, account, survivors)


# -- grow, shrink, refusals ----------------------------------------------------------------------


def test_grow_three_to_five_shrink_back_and_refusals(tmp_path_factory: pytest.TempPathFactory) -> None:
    state_dir = tmp_path_factory.mktemp("grow")
    with running_devnet(state_dir, 3, acl="none") as state:
        account = Account.from_key(state.accounts["publisher"].private_key)
        secret = admin_secret(state)
        keys = make_keys(state, account, [0, 1, 1, 0, 1] * 4, urls(state))
        first, _ = devnet.add_node(state_dir)
        second, _ = devnet.add_node(state_dir)
        state = devnet.DevnetState.require(state_dir)
        assert len(state.nodes) == 5
        check_all(keys, account, urls(state, [first, second]))
        assert_one_version(state, range(5), list(keys))
        wide = make_keys(state, account, [3], urls(state))  # needs 4 of 5: cannot survive a shrink to 3
        entry = AdminClient(urls(state)[0])
        original = [node_id(state, i) for i in range(3)]
        everything = {i: records(state, i, [*keys, *wide]) for i in range(5)}

        # refusals: Parity's errors, nothing changed
        with pytest.raises(AccessDenied):  # not the administrator
            entry.servers_set_change(original, "0x" + "11" * 32)
        stale_view = tuple(node_id(state, i) for i in range(4))
        from ocean_secret_store.protocol import http as codec
        from ocean_secret_store.protocol.admin import sign_request

        wrong_old = sign_request(int(secret, 16), "change", stale_view, original)  # an old set it does not see
        response = requests.post(urls(state)[0] + codec.servers_set_change_path(wrong_old.old_signature,
                                                                                 wrong_old.new_signature),
                                 data=codec.servers_set_change_body([Point.from_bytes(n) for n in original]),
                                 timeout=30)
        assert (response.status_code, response.content) == codec.error_response(AccessDenied())  # Parity's bytes
        stranger = Point.generator_mul(0x5757).to_bytes()
        with pytest.raises(NodeDisconnected):  # a node of the new set that is not connected
            entry.servers_set_change([*original, stranger], secret)
        with pytest.raises(KeysWouldBeLost) as refused:  # the t = 3 key cannot survive 5 -> 3
            entry.servers_set_change(original, secret)
        assert next(iter(wide)).hex() in str(refused.value)
        assert {i: records(state, i, [*keys, *wide]) for i in range(5)} == everything
        assert all(AdminClient(u).status()["admin_session"] is None for u in urls(state))

        report = entry.servers_set_change(original, secret, force=True)
        assert report["state"] == "done" and report["done"] == len(keys) and len(report["lost"]) == 1
        for i in (3, 4):  # the removed nodes dropped their shares
            assert all(r is None for r in records(state, i, list(keys)).values())
        assert_one_version(state, range(3), list(keys))
        check_all(keys, account, urls(state, [0, 1, 2]))
        assert {AdminClient(u).status()["servers_set"].__len__() for u in urls(state, [0, 1, 2])} == {3}


# -- refresh, stale backup, repair, wipe, interruption --------------------------------------------


def test_refresh_repair_and_an_interrupted_change(tmp_path_factory: pytest.TempPathFactory) -> None:
    state_dir = tmp_path_factory.mktemp("refresh")
    with running_devnet(state_dir, 5, acl="none") as state:
        account = Account.from_key(state.accounts["publisher"].private_key)
        secret = admin_secret(state)
        keys = make_keys(state, account, [1, 2] * 100, urls(state))
        key_ids = list(keys)
        probe, (t, _) = next((k, v) for k, v in keys.items() if v[0] == 2)
        public = records(state, 0, [probe])[probe].public  # type: ignore[union-attr]  # the node holds it

        # a backup of node 3, taken before the refresh (stopped, so the copy is consistent)
        devnet.stop_node(state_dir, 3)
        backup = tmp_path_factory.mktemp("backup")
        for path in db_files(state, 3):
            shutil.copy2(path, backup / path.name)
        devnet.restart_nodes(state_dir, [3])

        old = shares_of(state, range(5), probe)
        report = AdminClient(urls(state)[1]).refresh(secret)
        assert report["state"] == "done" and report["done"] == len(keys)
        new = shares_of(state, range(5), probe)
        assert [x for x, _ in new] == [x for x, _ in old]
        assert all(a != b for (_, a), (_, b) in zip(old, new, strict=True))
        assert Point.generator_mul(reconstruct(new[2:])) == public  # t+1 new shares
        for before in itertools.combinations(range(5), t):  # t stolen before + t after, other nodes
            after = [i for i in range(5) if i not in before][:t]
            for subset in itertools.combinations([old[i] for i in before] + [new[i] for i in after], t + 1):
                assert Point.generator_mul(reconstruct(subset)) != public
        check_all(keys, account, urls(state))

        # restore node 3's pre-refresh database: its versions are stale, it is detected and never used
        devnet.stop_node(state_dir, 3)
        for path in db_files(state, 3):
            path.unlink()
        for path in backup.iterdir():
            shutil.copy2(path, Path(state.nodes[3].data_dir) / path.name)
        devnet.restart_nodes(state_dir, [3])
        check_all(keys, account, urls(state, [3]))  # as entry it delegates; as a member it is never asked
        assert "version is stale" in Path(state.nodes[3].log).read_text()
        report = AdminClient(urls(state)[0]).repair(node_id(state, 3), secret)
        assert report["done"] == len(keys)
        assert_one_version(state, range(5), key_ids)

        # wipe node 2's database, repair it, freeze two others: groups of 3 must include node 2
        devnet.stop_node(state_dir, 2)
        for path in db_files(state, 2):
            path.unlink()
        devnet.restart_nodes(state_dir, [2])
        report = AdminClient(urls(state)[4]).repair(node_id(state, 2), secret)
        assert report["done"] == len(keys)
        with devnets.frozen(devnet.DevnetState.require(state_dir), 0, 1):
            check_all(keys, account, urls(state, [2, 3, 4]))
        devnet.wait_for_mesh(urls(state), 4, 30.0)

        # a change (5 -> 4) interrupted: SIGKILL the master and one other node in the middle
        new_set = [node_id(state, i) for i in range(4)]
        master = AdminClient(urls(state)[0])
        outcome: list[BaseException | dict] = []
        worker = threading.Thread(target=lambda: outcome.append(_run_change(master, new_set, secret)), daemon=True)
        worker.start()
        progress = wait_done(master, 20)
        devnet.stop_node(state_dir, 0, kill=True)
        devnet.stop_node(state_dir, 2, kill=True)
        worker.join(30)
        assert progress["done"] < len(keys), "the change finished before it could be interrupted"
        assert progress["ready"] < len(keys), "every key was ready before the interruption"
        assert outcome and isinstance(outcome[0], SecretStoreError)  # the POST lost its node
        devnet.restart_nodes(state_dir, [0, 2])
        check_all(keys, account, urls(state))  # every key still works on some version meanwhile
        report = AdminClient(urls(state)[1]).servers_set_change(new_set, secret)  # the same change: a resume
        assert report["state"] == "done" and report["failed"] == 0
        assert_one_version(state, range(4), key_ids)
        assert all(r is None for r in records(state, 4, key_ids).values())
        check_all(keys, account, urls(state, range(4)))


def _run_change(client: AdminClient, new_set: list[bytes], secret: str) -> BaseException | dict:
    try:
        return client.servers_set_change(new_set, secret)
    except SecretStoreError as exc:
        return exc
