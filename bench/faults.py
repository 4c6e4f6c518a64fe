"""Fault campaign on a live devnet: kill, freeze, restart key servers and cut their links while a
mixed load runs, then check the cluster's invariants after every round.

    .venv/bin/python bench/faults.py --rounds 1000 --seed 1 [--nodes 5] [--max-minutes 40] [--quick]
    .venv/bin/python bench/faults.py --rounds 20 --scenarios freeze-quorum,freeze-kill,restart-freeze,blackhole

``--quick`` (what the docs test runs) cuts any campaign to 2 rounds of each scenario and 2 keys.

``--scenarios`` (a comma list, or ``all``) picks what runs, each for ``--rounds`` rounds, in the
order given; without it only ``mixed`` runs, the campaign below (tests/integration/test_faults.py
runs it so). The devnet is the real one (anvil, keeper contracts, N key server processes with the
on-chain access checker).

``mixed``: faults, one or two per round, chosen from the seed:

* ``kill``    SIGKILL a key server, restart it at the end of the round;
* ``freeze``  SIGSTOP a key server, SIGCONT it at the end of the round;
* ``restart`` graceful SIGTERM and start again at the end of the round;
* ``cut``     sever a node-to-node link: its TCP connections are destroyed (``ss -K``) again and
  again for the whole round, so the pair stays apart until the round heals it. A kernel socket
  kill is used instead of network namespaces or a proxy because every node listens on loopback
  and the dialling side reconnects by itself: the cut exercises exactly the reconnect path.

During the fault: shadow and plain retrievals of acknowledged keys, Schnorr signatures, and now
and then a generation + store (which needs every node, so it is refused while one is down).
After healing, the invariants (a breach is a *violation*):

1. every acknowledged key checked this round is retrievable again and equals its document key;
2. no retrieval ever returns a wrong key, no Schnorr signature fails to verify;
3. no request outlives the session timeout plus a fixed slack;
4. no key server process died other than by the campaign's hand;
5. the mesh is complete again within a bound (reconnection is automatic);
6. every 50 rounds: no session state lingers on any node (sessions of a stopped node are cleaned up).

Prints a table every 25 rounds and at the end.

The liveness scenarios (issue 12: a member that stalls without closing its connections) retrieve
shadow document keys through one entry node at a time (no client failover), at least
``--per-entry`` times per entry node and round, and go on retrieving while the fault lasts: a
random time up to ``--hold`` s (default 4: the nodes suspect a peer silent for 2 s, so rounds end
before, during and after suspicion). Then they heal (SIGCONT, restart, link restored), wait for the
mesh and check one key as above:

* ``freeze-quorum``  exactly N - t - 1 members SIGSTOPped (2 of 5), retrieving through EVERY live node;
* ``freeze-kill``    one member SIGKILLed (restarted at the end of the round) and one SIGSTOPped at
  the same time, retrieving through the live ones;
* ``restart-freeze`` a node SIGKILLed and started again (not waiting for its mesh); as soon as it
  answers (``/health`` and then one retrieval through it worked), two other nodes are SIGSTOPped
  and the retrievals go through the restarted node;
* ``blackhole``      a node-to-node link that drops every byte without closing: the dialling node
  of every link (the lower id dials) is restarted once on a copy of its config that names a
  black-holing proxy (bench/blackhole.py) as its higher-id peers' address; each round one link
  goes silent in both directions with both TCP connections kept open, and every node is an entry.

A retrieval refused while fewer than t + 1 holders are live for its entry (not frozen, not
killed, link to the entry intact) is an *expected* refusal; any failure while at least t + 1 are
live, a wrong key, or an answer later than the session timeout plus the slack is a *violation*, as
is a mesh not whole again after healing. At the end a table per scenario: rounds, retrievals, ok,
expected refusals, violations, latency p50/p99/max (of every retrieval, failed ones included),
then the failures by kind. Last line ``violations: N``; exits 1 when N > 0.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests
import tomli_w

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import NotReady, freeze, spread, start_node, thaw, thaw_all, wait_ready
from blackhole import ProxyThread
from eth_account import Account

from ocean_secret_store import devnet
from ocean_secret_store.chain.keeper import Keeper
from ocean_secret_store.client.client import SecretStoreClient
from ocean_secret_store.crypto import document, schnorr
from ocean_secret_store.crypto.curve import Point
from ocean_secret_store.exceptions import KeyServerError, NodeUnreachable, SecretStoreError
from ocean_secret_store.node.config import load_config

SESSION_TIMEOUT = 3.0
SLACK = 3.0
MESH_BOUND = 20.0
SESSION_CLEANUP_BOUND = 2 * SESSION_TIMEOUT + 4.0
#: The campaign of random faults, then the liveness scenarios (issue 12).
SCENARIOS = ("mixed", "freeze-quorum", "freeze-kill", "restart-freeze", "blackhole")


@dataclass
class Key:
    key_id: bytes
    public: Point
    document_key: Point


@dataclass
class Stats:
    rounds: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    sockets_destroyed: int = 0


@dataclass
class ScenarioStats:
    """One liveness scenario's tally (the table at the end)."""

    name: str
    rounds: int = 0
    retrievals: int = 0
    ok: int = 0
    expected: int = 0
    violations: int = 0
    latency: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    #: restart-freeze: seconds from the restart until the node served its first retrieval.
    first_served: list[float] = field(default_factory=list)
    note: str = ""


def failure_text(exc: SecretStoreError) -> str:
    """A failed retrieval in brief: HTTP status and Parity's variant and text, or why nothing answered."""
    if isinstance(exc, KeyServerError):
        return f"HTTP {exc.status} {exc.parity_name}: {str(exc)[:70]}"
    if isinstance(exc, NodeUnreachable):
        return "no answer: " + str(exc).split(" (", 1)[-1].rstrip(")")[:70]
    return f"{type(exc).__name__}: {str(exc)[:70]}"


class Campaign:
    #: The key servers' session timeout: a request answered later than this plus SLACK is a violation.
    session_timeout = SESSION_TIMEOUT
    #: The faults that take their victim out for the round (the load avoids it); a ``cut`` not listed
    #: here severs one link between two running nodes instead.
    out_kinds: tuple[str, ...] = ("kill", "freeze", "restart")

    def __init__(self, state_dir: Path, nodes: int, threshold: int, rng: random.Random, per_entry: int = 3,
                 max_hold: float = 0.0) -> None:
        self.state_dir, self.n, self.t, self.rng = state_dir, nodes, threshold, rng
        self.per_entry, self.max_hold, self.hold = per_entry, max_hold, 0.0
        self.state = self.start()
        self.urls = [e["http_url"] for e in self.state["nodes"]]
        self.publisher = Account.from_key(self.state["accounts"]["publisher"]["private_key"])
        self.keeper = Keeper(self.state["chain_url"], self.state["contracts"])
        self.ids = [bytes.fromhex(e["public"][2:]) for e in self.state["nodes"]]
        self.ledger: list[Key] = []
        self.stats = Stats()
        self.http = requests.Session()
        self.scenario: ScenarioStats | None = None  # the liveness scenario running, if any
        self.entry_clients: dict[int, SecretStoreClient] = {}
        self.proxies: ProxyThread | None = None
        self.results: list[ScenarioStats] = []

    def start(self) -> dict:
        """Bring the cluster up; its devnet.json."""
        return devnet.up(self.state_dir, self.n, acl="contract", session_timeout=SESSION_TIMEOUT).to_json()

    def stop(self) -> None:
        thaw_all(self.state_dir)  # a frozen node cannot take SIGTERM
        devnet.down(self.state_dir)

    @property
    def bound(self) -> float:
        return self.session_timeout + SLACK

    @functools.cached_property
    def listen_ports(self) -> list[int]:
        return [load_config(e["config"]).listen.port for e in self.state["nodes"]]

    # -- helpers -------------------------------------------------------------------------------

    def pid(self, i: int) -> int:
        return int(self.state["nodes"][i]["pid"])

    def client(self, live: list[int]) -> SecretStoreClient:
        order = self.rng.sample(live, len(live))
        return SecretStoreClient([self.urls[i] for i in order], self.publisher, timeout=self.bound)

    def timed(self, kind: str, fn: object) -> object:
        self.stats.requests += 1
        started = time.monotonic()
        try:
            result = fn()  # type: ignore[operator]  # fn is a zero-argument callable; typed object to take any result
        except SecretStoreError as exc:
            self.stats.failures[type(exc).__name__] += 1
            result = None
        else:
            self.stats.ok += 1
        elapsed = time.monotonic() - started
        if elapsed > self.bound:
            self.violation(f"{kind} took {elapsed:.1f} s (> {self.bound:.0f} s)")
        return result

    def violation(self, text: str) -> None:
        where = f"{self.scenario.name} round {self.scenario.rounds}" if self.scenario else f"round {self.stats.rounds}"
        if self.scenario:
            self.scenario.violations += 1
        self.stats.violations.append(f"{where}: {text}")
        print(f"VIOLATION {where}: {text}", flush=True)

    def publish(self, live: list[int]) -> None:
        key_id = os.urandom(32)
        self.keeper.register_did(self.publisher, key_id)  # the ACL contract decides who may read
        client = self.client(live)

        def run() -> Key:
            public = client.generate_server_key(key_id, self.t)
            m, c, e = document.generate_document_key(public)
            client.store_document_key(key_id, c, e)
            return Key(key_id, public, m)

        key = self.timed("generation+store", run)
        if isinstance(key, Key):
            self.ledger.append(key)

    def check_key(self, key: Key, live: list[int], kind: str = "shadow") -> bool:
        client = self.client(live)
        if kind == "shadow":
            got = self.timed("shadow retrieval", lambda: client.recover_document_key(key.key_id))
        else:
            got = self.timed("plain retrieval", lambda: client.retrieve_document_key(key.key_id))
        if got is None:
            return False
        if got != key.document_key:
            self.violation(f"{kind} retrieval of 0x{key.key_id.hex()[:12]} returned a wrong key")
            return False
        return True

    def sign(self, key: Key, live: list[int]) -> None:
        client = self.client(live)
        digest = os.urandom(32)
        sig = self.timed("schnorr", lambda: client.schnorr_sign(key.key_id, digest))
        if sig is not None:
            try:
                schnorr.verify(key.public, sig, digest)  # type: ignore[arg-type]  # timed() returns object; sig is the bytes of schnorr_sign
            except SecretStoreError:
                self.violation(f"schnorr signature for 0x{key.key_id.hex()[:12]} does not verify")

    def health(self, i: int) -> dict | None:
        try:
            response = self.http.get(self.urls[i] + "/health", timeout=2)
            return response.json() if response.status_code == 200 else None
        except (requests.RequestException, ValueError):
            return None

    def wait_mesh(self) -> None:
        try:
            wait_ready(self.urls, self.n - 1, MESH_BOUND, http=self.http)
        except NotReady as exc:
            self.violation(f"mesh not complete {MESH_BOUND:.0f} s after healing ({exc})")

    def wait_sessions_clean(self) -> None:
        deadline = time.monotonic() + SESSION_CLEANUP_BOUND
        while time.monotonic() < deadline:
            lingering = {i: h["active_sessions"] for i in range(self.n)
                         if (h := self.health(i)) and any(h["active_sessions"].values())}
            if not lingering:
                return
            time.sleep(0.2)
        self.violation(f"sessions still active {SESSION_CLEANUP_BOUND:.0f} s after the load stopped: {lingering}")

    def cut(self, a: int, b: int) -> None:
        """Destroy the TCP connection of the link between nodes a and b, and only that one."""
        ids = [bytes.fromhex(self.state["nodes"][i]["public"][2:]) for i in (a, b)]
        dialer, target = (a, b) if ids[0] < ids[1] else (b, a)  # the lower node id dials
        listing = subprocess.run(["ss", "-tnpH", "state", "established", f"( dport = :{self.listen_ports[target]} )"],
                                 capture_output=True, text=True, check=False).stdout
        marker = f"pid={self.pid(dialer)},"
        for line in listing.splitlines():
            if marker in line:
                local_port = line.split()[2].rsplit(":", 1)[1]
                out = subprocess.run(["ss", "-K", "-tn", "state", "established",
                                      f"( sport = :{local_port} or dport = :{local_port} )"],
                                     capture_output=True, text=True, check=False)
                # ss lists what it destroyed under a header line; counting it makes a cut that
                # cannot work here (no CAP_NET_ADMIN, no SOCK_DESTROY in the kernel) show in the table.
                self.stats.sockets_destroyed += max(0, len(out.stdout.splitlines()) - 1)

    # -- rounds --------------------------------------------------------------------------------

    def round(self) -> None:
        self.stats.rounds += 1
        kinds = ["kill", "freeze", "restart", "cut"]
        faults = [self.rng.choice(kinds)]
        if self.rng.random() < 0.3:
            faults.append(self.rng.choice(kinds))
        # at most n - t - 1 key servers out at once, so t + 1 holders stay up during the round
        victims = self.rng.sample(range(self.n), min(len(faults), self.n - self.t - 1))
        by_kind: dict[str, list[int]] = {kind: [] for kind in kinds}
        for fault, victim in zip(faults, victims, strict=False):
            self.stats.faults[fault] += 1
            self.inject(fault, victim)
            by_kind[fault].append(victim)
        killed, frozen, stopped = by_kind["kill"], by_kind["freeze"], by_kind["restart"]
        down = {victim for kind in self.out_kinds for victim in by_kind[kind]}
        live = [i for i in range(self.n) if i not in down]
        # a cut severs a link between two running nodes (a link to a dead node is already cut)
        cuts = [] if "cut" in self.out_kinds else [
            (a, self.rng.choice([i for i in live if i != a])) for a in by_kind["cut"] if a in live and len(live) > 1]
        try:
            self.load_during_faults(live, cuts)
        finally:
            self.heal(killed, frozen, stopped)
        self.check_after_healing()

    def inject(self, fault: str, victim: int) -> None:
        """Start one fault on ``victim`` (a cut is made, and kept up, by the load of the round)."""
        if fault == "kill":
            os.killpg(self.pid(victim), signal.SIGKILL)
        elif fault == "freeze":
            os.kill(self.pid(victim), signal.SIGSTOP)
        elif fault == "restart":
            devnet.stop_node(self.state_dir, victim)

    def load_during_faults(self, live: list[int], cuts: list[tuple[int, int]]) -> None:
        for a, b in cuts:
            self.cut(a, b)
        if self.ledger:
            for _ in range(2):
                self.check_key(self.rng.choice(self.ledger), live)
                for a, b in cuts:
                    self.cut(a, b)
            self.check_key(self.rng.choice(self.ledger), live, "plain")
            self.sign(self.rng.choice(self.ledger), live)
        if self.stats.rounds % 10 == 0:
            self.publish(live)  # refused while a node is out: generation needs all N

    def heal(self, killed: list[int], frozen: list[int], stopped: list[int]) -> None:
        for victim in frozen:
            os.kill(self.pid(victim), signal.SIGCONT)
        for victim in killed:
            while devnet._alive(self.pid(victim)):
                time.sleep(0.01)
        if killed or stopped:
            self.state = devnet.restart_nodes(self.state_dir, killed + stopped).to_json()
        for i in range(self.n):
            if i not in killed and i not in stopped and not devnet._alive(self.pid(i)):
                self.violation(f"key server {i} died without being killed")
                self.state = devnet.restart_nodes(self.state_dir, [i]).to_json()

    def check_after_healing(self) -> None:
        self.wait_mesh()
        if self.stats.rounds % 5 == 0:
            self.publish(list(range(self.n)))  # healed: generation and storing work again
        # after healing, keys must be retrievable again (one random key each round)
        if self.ledger:
            key = self.rng.choice(self.ledger)
            if not self.check_key(key, list(range(self.n))):
                self.violation(f"acknowledged key 0x{key.key_id.hex()[:12]} not retrievable after healing")
        if self.stats.rounds % 50 == 0:
            self.wait_sessions_clean()
            for key in self.ledger:
                if not self.check_key(key, list(range(self.n))):
                    self.violation(f"acknowledged key 0x{key.key_id.hex()[:12]} not retrievable after healing")

    # -- liveness scenarios (issue 12) -----------------------------------------------------------

    def reload(self) -> None:
        """Read devnet.json again (after a node was started with a new pid)."""
        state = devnet.DevnetState.require(self.state_dir)
        self.state = state.to_json()

    @property
    def current(self) -> ScenarioStats:
        if self.scenario is None:
            raise RuntimeError("no liveness scenario is running")
        return self.scenario

    def entry_client(self, i: int) -> SecretStoreClient:
        """A client of node ``i`` alone: no failover, so a refusal is that entry node's answer."""
        if i not in self.entry_clients:
            self.entry_clients[i] = SecretStoreClient([self.urls[i]], self.publisher,
                                                      timeout=SESSION_TIMEOUT + SLACK)
        return self.entry_clients[i]

    def retrieve_via(self, entry: int, down: set[int], cut: frozenset[tuple[int, int]] = frozenset()) -> None:
        """One shadow retrieval of a random acknowledged key through ``entry``, classified: ok, an
        expected refusal (fewer than t + 1 holders live for this entry) or a violation."""
        scenario = self.current
        key = self.rng.choice(self.ledger)
        live = [j for j in range(self.n) if j not in down and (min(entry, j), max(entry, j)) not in cut]
        started = time.monotonic()
        failure = None
        try:
            if self.entry_client(entry).recover_document_key(key.key_id) != key.document_key:
                failure = "wrong document key"
        except SecretStoreError as exc:
            failure = failure_text(exc)
        elapsed = time.monotonic() - started
        scenario.retrievals += 1
        scenario.latency.append(elapsed)
        self.stats.requests += 1
        bound = SESSION_TIMEOUT + SLACK
        if failure is None and elapsed <= bound:
            scenario.ok += 1
            self.stats.ok += 1
            return
        what = f"retrieval through node {entry} ({len(live)} holders live for it, down {sorted(down)}"
        what += f", cut {sorted(cut)})" if cut else ")"
        if failure is not None and failure != "wrong document key" and elapsed <= bound and len(live) < self.t + 1:
            scenario.expected += 1
            scenario.failures[f"expected: {failure}"] += 1
            return
        verdict = f"took {elapsed:.1f} s (> {bound:.0f} s)" if elapsed > bound else f"after {elapsed:.2f} s"
        scenario.failures[f"violation: {failure or 'slow answer'}"] += 1
        self.violation(f"{what} {verdict}: {failure or 'ok but late'}")

    def load_through(self, entries: list[int], down: set[int], sweeps: int | None = None,
                     cut: frozenset[tuple[int, int]] = frozenset()) -> None:
        """Sweeps of one retrieval through each of ``entries`` (shuffled): at least ``sweeps``
        (default ``--per-entry``), and more until the round's hold time has passed."""
        started = time.monotonic()
        done = 0
        while done < (sweeps or self.per_entry) or time.monotonic() - started < self.hold:
            for entry in self.rng.sample(entries, len(entries)):
                self.retrieve_via(entry, down, cut)
            done += 1

    def kill(self, i: int) -> None:
        os.killpg(self.pid(i), signal.SIGKILL)
        while devnet._alive(self.pid(i)):
            time.sleep(0.01)

    def restart_killed(self, killed: list[int]) -> None:
        try:
            self.state = devnet.restart_nodes(self.state_dir, killed, timeout=MESH_BOUND).to_json()
        except devnet.DevnetError as exc:
            self.violation(f"key servers {killed} not back in the mesh after a restart: {exc}")
            self.reload()

    def heal_scenario_round(self) -> None:
        """After a scenario round: no process died unbidden, the mesh is whole, one key is retrievable."""
        for i in range(self.n):
            if not devnet._alive(self.pid(i)):
                self.violation(f"key server {i} died without being killed")
                self.restart_killed([i])
        self.wait_mesh()
        key = self.rng.choice(self.ledger)
        if not self.check_key(key, list(range(self.n))):
            self.violation(f"acknowledged key 0x{key.key_id.hex()[:12]} not retrievable after healing")

    def round_freeze_quorum(self) -> None:
        frozen = self.rng.sample(range(self.n), self.n - self.t - 1)
        live = [i for i in range(self.n) if i not in frozen]
        try:
            for i in frozen:
                freeze(self.pid(i))
            self.load_through(live, set(frozen))
        finally:
            for i in frozen:
                thaw(self.pid(i))

    def round_freeze_kill(self) -> None:
        killed, frozen = self.rng.sample(range(self.n), 2)
        live = [i for i in range(self.n) if i not in (killed, frozen)]
        try:
            self.kill(killed)
            freeze(self.pid(frozen))
            self.load_through(live, {killed, frozen})
        finally:
            thaw(self.pid(frozen))
            self.restart_killed([killed])

    def first_served(self, i: int) -> float | None:
        """Seconds until node ``i`` (just started) answers ``/health`` and then serves one retrieval
        (None: not within ``MESH_BOUND``); the attempts are not counted as retrievals."""
        started = time.monotonic()
        deadline = started + MESH_BOUND
        while self.health(i) is None:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)
        key = self.rng.choice(self.ledger)
        while time.monotonic() < deadline:
            try:
                if self.entry_client(i).recover_document_key(key.key_id) == key.document_key:
                    return time.monotonic() - started
            except SecretStoreError:
                time.sleep(0.02)
        return None

    def round_restart_freeze(self) -> None:
        restarted, *frozen = self.rng.sample(range(self.n), 3)
        self.kill(restarted)
        start_node(self.state_dir, restarted)
        self.reload()
        served = self.first_served(restarted)
        if served is None:
            self.violation(f"restarted key server {restarted} served no retrieval within {MESH_BOUND:.0f} s")
            return
        self.current.first_served.append(served)
        try:
            for i in frozen:
                freeze(self.pid(i))
            self.load_through([restarted], set(frozen), sweeps=3 * self.per_entry)
        finally:
            for i in frozen:
                thaw(self.pid(i))

    def links(self) -> list[tuple[int, int]]:
        """Every node-to-node link as (dialler, target): the bytewise lower node id dials."""
        return [(a, b) if self.ids[a] < self.ids[b] else (b, a)
                for a in range(self.n) for b in range(a + 1, self.n)]

    def proxied_config(self, dialler: int, ports: dict[int, int]) -> Path:
        """A copy of the dialler's config whose [cluster] names a proxy for each peer in ``ports``."""
        source = Path(self.state["nodes"][dialler]["config"])
        data = tomllib.loads(source.read_text(encoding="utf-8"))
        by_id = {key.lower().removeprefix("0x"): key for key in data["cluster"]}
        for target, port in ports.items():
            data["cluster"][by_id[self.ids[target].hex()]] = f"127.0.0.1:{port}"
        path = source.with_name(f"{source.stem}.blackhole.toml")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the node secret
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"# {devnet.DEV_ONLY}\n# {source.name} with its links through bench/blackhole.py\n")
            f.write(tomli_w.dumps(data))
        return path

    def restart_on(self, configs: dict[int, Path | None], what: str) -> None:
        """Stop the nodes and start each on its config (None: its own), then wait for the mesh."""
        for i in configs:
            devnet.stop_node(self.state_dir, i)
        for i, config in configs.items():
            start_node(self.state_dir, i, config)
        self.reload()
        try:
            wait_ready(self.urls, self.n - 1, MESH_BOUND, http=self.http)
        except NotReady as exc:
            self.violation(f"key servers {sorted(configs)} restarted {what}: mesh not complete ({exc})")

    def blackhole_setup(self) -> None:
        """Every link through a proxy: each dialling node restarted once on a proxied copy of its config."""
        self.proxies = ProxyThread()
        ports: dict[int, dict[int, int]] = {}
        for dialler, target in self.links():
            port = self.proxies.add((dialler, target), ("127.0.0.1", self.listen_ports[target]))
            ports.setdefault(dialler, {})[target] = port
        self.restart_on({d: self.proxied_config(d, targets) for d, targets in ports.items()}, "through the proxies")

    def blackhole_teardown(self) -> None:
        """The dialling nodes back on their own configs, the proxies stopped."""
        if self.proxies is None:
            return
        try:
            self.restart_on(dict.fromkeys({d for d, _ in self.links()}), "back on their own configs")
        finally:
            self.proxies.close()
            self.proxies = None

    def round_blackhole(self) -> None:
        proxies = self.proxies
        if proxies is None:
            raise RuntimeError("the blackhole scenario's proxies are not set up")
        link = self.rng.choice(self.links())
        cut = frozenset({(min(link), max(link))})
        try:
            proxies.blackhole(link)
            self.load_through(list(range(self.n)), set(), cut=cut)
        finally:
            proxies.heal(link)

    def run_scenario(self, name: str, rounds: int, stop_at: float) -> None:
        """``rounds`` rounds of the liveness scenario ``name`` (its tally joins :attr:`results` at once)."""
        self.scenario = stats = ScenarioStats(name)
        self.results.append(stats)
        if not self.ledger:
            self.violation("no acknowledged key to retrieve: the scenario cannot run")
            self.scenario = None
            return
        step = {"freeze-quorum": self.round_freeze_quorum, "freeze-kill": self.round_freeze_kill,
                "restart-freeze": self.round_restart_freeze, "blackhole": self.round_blackhole}[name]
        try:
            if name == "blackhole":
                self.blackhole_setup()
            for _ in range(rounds):
                if time.monotonic() > stop_at:
                    print(f"{name}: stopping, --max-minutes reached")
                    break
                stats.rounds += 1
                self.hold = self.rng.uniform(0, self.max_hold)
                step()
                self.heal_scenario_round()
                if stats.rounds % 10 and stats.rounds != rounds:
                    continue
                print(f"  {name:<15} round {stats.rounds:>4}: {stats.retrievals:>5} retrievals {stats.ok:>5} ok "
                      f"{stats.expected:>4} expected {stats.violations:>4} violations", flush=True)
            if self.proxies is not None:
                links = self.proxies.links
                total = {name: sum(getattr(proxy.stats, name) for proxy in links.values())
                         for name in ("connections", "forwarded", "discarded", "closed_on_heal")}
                stats.note = (f"{len(links)} link proxies: {total['connections']} connections, {total['forwarded']} "
                              f"bytes forwarded, {total['discarded']} discarded, {total['closed_on_heal']} silent "
                              "connections closed on healing")
                self.blackhole_teardown()
        finally:
            if self.proxies is not None:  # interrupted: the devnet is stopped next, its nodes with their configs
                self.proxies.close()
                self.proxies = None
            self.scenario = None

    def table(self) -> None:
        s = self.stats
        faults = " ".join(f"{k}={v}" for k, v in sorted(s.faults.items()))
        failures = " ".join(f"{k}={v}" for k, v in sorted(s.failures.items())) or "-"
        print(f"{s.rounds:>6} | {faults:<40} | {s.sockets_destroyed:>5} | {s.requests:>6} {s.ok:>6} | "
              f"{failures:<60} | {len(s.violations)}", flush=True)


def scenario_table(results: list[ScenarioStats]) -> None:
    print(f"{'scenario':<15} | {'rounds':>6} | {'retrievals':>10} | {'ok':>6} | {'expected':>8} | {'violations':>10} | "
          "latency of every retrieval")
    for r in results:
        print(f"{r.name:<15} | {r.rounds:>6} | {r.retrievals:>10} | {r.ok:>6} | {r.expected:>8} | {r.violations:>10} | "
              f"{spread(r.latency)}")
    for r in results:
        for text, count in r.failures.most_common(8):
            print(f"  {r.name}: {count} x {text}")
        if r.first_served:
            print(f"  {r.name}: the restarted node served its first retrieval {spread(r.first_served)}"
                  " after its start")
        if r.note:
            print(f"  {r.name}: {r.note}")


def selected_scenarios(text: str) -> list[str]:
    names = list(SCENARIOS) if text == "all" else [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown or not names:
        raise SystemExit(f"--scenarios: unknown {unknown or text!r}; choose from {', '.join(SCENARIOS)} or all")
    return names


def run_mixed(campaign: Campaign, rounds: int, stop_at: float) -> None:
    print(f"{'round':>6} | {'faults injected':<40} | {'socks':>5} | {'reqs':>6} {'ok':>6} | "
          f"{'failures by kind':<60} | viol")
    for _ in range(rounds):
        if time.monotonic() > stop_at:
            print("stopping: --max-minutes reached")
            break
        campaign.round()
        if campaign.stats.rounds % 25 == 0:
            campaign.table()
    if campaign.stats.rounds % 25:
        campaign.table()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100, help="rounds of each scenario")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--threshold", type=int, default=None)
    parser.add_argument("--max-minutes", type=float, default=60.0, help="stop after this long, whatever the round")
    parser.add_argument("--keys", type=int, default=4, help="keys acknowledged before the first fault")
    parser.add_argument("--scenarios", default="mixed",
                        help=f"comma list of {', '.join(SCENARIOS)}, or all (default: mixed)")
    parser.add_argument("--per-entry", type=int, default=3,
                        help="liveness scenarios: retrievals through each entry node per round, at least")
    parser.add_argument("--hold", type=float, default=4.0, metavar="SECONDS",
                        help="liveness scenarios: each round keeps its fault and its retrievals going for a "
                             "random time up to this long (the nodes suspect a silent peer after 2 s)")
    parser.add_argument("--docker", action="store_true",
                        help="run the campaign against the compose stack (bench/faults_docker.py) instead of "
                             "processes on loopback: partitions instead of socket cuts")
    parser.add_argument("--image", default=None,
                        help="with --docker: the image to run (default: build it with docker/build.py)")
    parser.add_argument("--quick", action="store_true",
                        help="a run of seconds (the docs test's): at most 2 rounds of each scenario and 2 keys")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.keys = min(args.rounds, 2), min(args.keys, 2)
    scenarios = selected_scenarios(args.scenarios)
    threshold = args.threshold if args.threshold is not None else (args.nodes - 1) // 2
    rng = random.Random(args.seed)

    def stop_on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so the finally below stops the devnet on `kill` too

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    state_dir = Path(tempfile.mkdtemp(prefix="oss-faults-"))
    started = time.monotonic()
    stop_at = started + args.max_minutes * 60
    campaign = None
    try:
        if args.docker:
            from faults_docker import DockerCampaign, check_docker_scenarios

            check_docker_scenarios(scenarios)
            campaign = DockerCampaign(state_dir, args.nodes, threshold, rng, args.per_entry, args.hold,
                                      image=args.image)
        else:
            campaign = Campaign(state_dir, args.nodes, threshold, rng, args.per_entry, args.hold)
        for _ in range(args.keys):
            campaign.publish(list(range(args.nodes)))
        print(f"{args.nodes} nodes, t = {threshold}, seed {args.seed}, {len(campaign.ledger)} keys acknowledged, "
              f"state {state_dir}")
        for name in scenarios:
            if name == "mixed":
                run_mixed(campaign, args.rounds, stop_at)
            else:
                campaign.run_scenario(name, args.rounds, stop_at)
        campaign.wait_sessions_clean()
        for key in campaign.ledger:
            if not campaign.check_key(key, list(range(args.nodes))):
                campaign.violation(f"acknowledged key 0x{key.key_id.hex()[:12]} not retrievable at the end")
    except KeyboardInterrupt:
        print("interrupted")
    finally:
        if campaign is not None:
            campaign.stop()
        elif not args.docker and (state_dir / devnet.STATE_FILE).exists():
            thaw_all(state_dir)  # a frozen node cannot take SIGTERM
            devnet.down(state_dir)
    violations = campaign.stats.violations if campaign else ["campaign did not start"]
    if campaign and campaign.results:
        scenario_table(campaign.results)
    rounds = (campaign.stats.rounds + sum(r.rounds for r in campaign.results)) if campaign else 0
    print(f"rounds: {rounds}, {time.monotonic() - started:.0f} s, "
          f"keys acknowledged: {len(campaign.ledger) if campaign else 0}")
    for text in violations[:20]:
        print("  " + text)
    print(f"violations: {len(violations)}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
