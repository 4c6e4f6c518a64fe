"""Fault campaign on a live devnet: kill, freeze, restart key servers and cut their links while a
mixed load runs, then check the cluster's invariants after every round.

    .venv/bin/python bench/faults.py --rounds 1000 --seed 1 [--nodes 5] [--max-minutes 40]

The devnet is the real one (anvil, keeper contracts, N key server processes with the on-chain
access checker). Faults, one or two per round, chosen from the seed:

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

Prints a table every 25 rounds and at the end, then ``violations: N``; exits 1 when N > 0.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eth_account import Account

from ocean_secret_store import devnet
from ocean_secret_store.chain.keeper import Keeper
from ocean_secret_store.client.client import SecretStoreClient
from ocean_secret_store.crypto import document, schnorr
from ocean_secret_store.crypto.curve import Point
from ocean_secret_store.exceptions import SecretStoreError
from ocean_secret_store.node.config import load_config

SESSION_TIMEOUT = 3.0
SLACK = 3.0
MESH_BOUND = 20.0
SESSION_CLEANUP_BOUND = 2 * SESSION_TIMEOUT + 4.0


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


class Campaign:
    def __init__(self, state_dir: Path, nodes: int, threshold: int, rng: random.Random) -> None:
        self.state_dir, self.n, self.t, self.rng = state_dir, nodes, threshold, rng
        self.state = devnet.up(state_dir, nodes, acl="contract", session_timeout=SESSION_TIMEOUT).to_json()
        self.urls = [e["http_url"] for e in self.state["nodes"]]
        self.listen_ports = [load_config(e["config"]).listen.port for e in self.state["nodes"]]
        self.publisher = Account.from_key(self.state["accounts"]["publisher"]["private_key"])
        self.keeper = Keeper(self.state["chain_url"], self.state["contracts"])
        self.ledger: list[Key] = []
        self.stats = Stats()
        self.http = requests.Session()

    # -- helpers -------------------------------------------------------------------------------

    def pid(self, i: int) -> int:
        return int(self.state["nodes"][i]["pid"])

    def client(self, live: list[int]) -> SecretStoreClient:
        order = self.rng.sample(live, len(live))
        return SecretStoreClient([self.urls[i] for i in order], self.publisher, timeout=SESSION_TIMEOUT + SLACK)

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
        if elapsed > SESSION_TIMEOUT + SLACK:
            self.violation(f"{kind} took {elapsed:.1f} s (> {SESSION_TIMEOUT + SLACK:.0f} s)")
        return result

    def violation(self, text: str) -> None:
        self.stats.violations.append(f"round {self.stats.rounds}: {text}")
        print(f"VIOLATION round {self.stats.rounds}: {text}", flush=True)

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
        deadline = time.monotonic() + MESH_BOUND
        while time.monotonic() < deadline:
            if all((h := self.health(i)) and h["connected_peers"] == self.n - 1 for i in range(self.n)):
                return
            time.sleep(0.05)
        self.violation(f"mesh not complete {MESH_BOUND:.0f} s after healing")

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
        down = set(killed) | set(frozen) | set(stopped)
        live = [i for i in range(self.n) if i not in down]
        # a cut severs a link between two running nodes (a link to a dead node is already cut)
        cuts = [(a, self.rng.choice([i for i in live if i != a]))
                for a in by_kind["cut"] if a in live and len(live) > 1]
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

    def table(self) -> None:
        s = self.stats
        faults = " ".join(f"{k}={v}" for k, v in sorted(s.faults.items()))
        failures = " ".join(f"{k}={v}" for k, v in sorted(s.failures.items())) or "-"
        print(f"{s.rounds:>6} | {faults:<40} | {s.sockets_destroyed:>5} | {s.requests:>6} {s.ok:>6} | "
              f"{failures:<60} | {len(s.violations)}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--threshold", type=int, default=None)
    parser.add_argument("--max-minutes", type=float, default=60.0, help="stop after this long, whatever the round")
    parser.add_argument("--keys", type=int, default=4, help="keys acknowledged before the first fault")
    args = parser.parse_args()
    threshold = args.threshold if args.threshold is not None else (args.nodes - 1) // 2
    rng = random.Random(args.seed)

    def stop_on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so the finally below stops the devnet on `kill` too

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    state_dir = Path(tempfile.mkdtemp(prefix="oss-faults-"))
    started = time.monotonic()
    campaign = None
    try:
        campaign = Campaign(state_dir, args.nodes, threshold, rng)
        for _ in range(args.keys):
            campaign.publish(list(range(args.nodes)))
        print(f"{args.nodes} nodes, t = {threshold}, seed {args.seed}, {len(campaign.ledger)} keys acknowledged")
        print(f"{'round':>6} | {'faults injected':<40} | {'socks':>5} | {'reqs':>6} {'ok':>6} | "
              f"{'failures by kind':<60} | viol")
        for _ in range(args.rounds):
            if time.monotonic() - started > args.max_minutes * 60:
                print(f"stopping: --max-minutes {args.max_minutes} reached")
                break
            campaign.round()
            if campaign.stats.rounds % 25 == 0:
                campaign.table()
        if campaign.stats.rounds % 25:
            campaign.table()
        campaign.wait_sessions_clean()
        for key in campaign.ledger:
            if not campaign.check_key(key, list(range(args.nodes))):
                campaign.violation(f"acknowledged key 0x{key.key_id.hex()[:12]} not retrievable at the end")
    except KeyboardInterrupt:
        print("interrupted")
    finally:
        if (state_dir / devnet.STATE_FILE).exists():
            state = devnet.DevnetState.load(state_dir)
            for entry in (state.to_json() if state else {}).get("nodes", []):  # a frozen node cannot take SIGTERM
                if entry.get("pid") and devnet._alive(entry["pid"]):
                    os.kill(entry["pid"], signal.SIGCONT)
            devnet.down(state_dir)
    violations = campaign.stats.violations if campaign else ["campaign did not start"]
    print(f"rounds: {campaign.stats.rounds if campaign else 0}, {time.monotonic() - started:.0f} s, "
          f"keys acknowledged: {len(campaign.ledger) if campaign else 0}")
    for text in violations[:20]:
        print("  " + text)
    print(f"violations: {len(violations)}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
