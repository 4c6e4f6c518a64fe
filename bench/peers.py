"""Our shadow retrieval beside its peers' nearest equivalents, measured in one run (issue 18, item 6).

    .venv/bin/pip install -e '.[bench]'    # the peers: nucypher-core (TACo's ferveo), umbral-pre
    .venv/bin/python bench/peers.py [--nodes 5] [--threshold 2] [--rounds 200] [--quick]
                                    [--pyumbral-python PATH]

One process, one devnet, the operations interleaved: every round runs each operation once, in a
fresh random order, so a change in the machine's load (printed before and after) falls on all of
them alike; the DKGs likewise, in rounds of their own. What is measured:

* **ours, end to end**: ``SecretStoreClient.recover_document_key`` against a devnet of ``--nodes``
  key server processes on loopback (ACL none; started in a temporary directory, removed at the
  end): the signed HTTP request, the cluster session across ``t+1`` nodes, the ECIES answers and
  the client-side combination; and the server key generation (our DKG) through the SDK;
* **ours, crypto alone** (in process, no I/O): the per-request work of protocol.md §2.7 for ``t+1``
  shares of a key from a local DKG: each node's shadow (Lagrange coefficient, blinded shadow point,
  ECIES of its ``ε`` to the requester), the master's combination and the requester's recovery of
  the document key (ECIES decryption of the ``t+1`` shadows);
* **ferveo** (TACo's threshold decryption, BLS12-381, from ``nucypher-core``): the DKG of ``N``
  validators (each dealer's PVSS transcript, one validator's aggregation and its verification,
  serially in this process), then per request: ``t+1`` decryption shares (each validator's
  ``Dkg`` and aggregated transcript are built beforehand, as a node keeps them) combined, and the
  ciphertext decrypted with the shared secret; the "simple" variant (any ``t+1``) and the
  "precomputed" one (the selected ``t+1`` are fixed in each share);
* **Umbral** (proxy re-encryption, secp256k1, rust-umbral's binding ``umbral-pre``): encryption,
  the grant (``N`` kfrags, ``t+1`` needed: done once by the data owner), and per request: ``t+1``
  re-encryptions and Bob's decryption; Bob's check of the ``t+1`` cfrags (parsed from bytes,
  verified) apart;
* **pyUmbral** (``umbral`` 0.3.0 on PyPI, pure Python): the same operations, with
  ``--pyumbral-python PATH``, an interpreter where it is installed; it needs ``cryptography~=3.0``,
  which cannot share our environment (we need ``>=43``), so it runs this file in that interpreter
  as a child process (``--umbral-worker``, which imports nothing of ours), after the others, not
  interleaved with them::

      python3 -m venv /tmp/pyumbral && /tmp/pyumbral/bin/pip install umbral==0.3.0 'cryptography~=3.0' pynacl

Same shape everywhere: ``N`` holders, ``t+1`` of them needed (Parity's threshold ``t``; ferveo's
``security_threshold`` and Umbral's kfrag threshold are therefore ``t+1``). A peer whose package
is missing is skipped with the reason (exit 0), so ``--quick`` runs our rows without the extra.
Each operation is warmed up first (``rounds / 10`` calls, at least 3); the table gives p50, p90,
p99 (nearest rank) and the mean in ms, then ratios of the p50s.

Not the same work, only the nearest:

* ferveo is pairing-based threshold decryption over BLS12-381, ours ElGamal shadows over secp256k1;
  ferveo's "crypto alone" leaves out everything TACo adds per request (the request and the
  shares encrypted to and from each node, condition evaluation, the network), ours end to end
  includes HTTP, the cluster session and the consensus on the ``t+1`` members;
* ferveo ends by decrypting its ciphertext's 32-byte payload (symmetric, authenticated) with the
  shared secret; ours ends with the document key (a point), the document's own AES is not in it;
* neither ours nor ferveo's simple combination checks the shares; Umbral's cfrag check is the
  separate row;
* ferveo's DKG here is the crypto of one machine doing every dealer's part in turn; in TACo each
  dealer runs on its node and the transcripts go through the Coordinator contract (not measured).
  Ours end to end is the whole cluster session over loopback;
* Umbral is delegation, not custody: the data owner grants each reader (kfrags) ahead of time.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Operation name -> a call doing it once (prepared: keys, ciphertexts and DKGs made beforehand).
Ops = dict[str, Callable[[], object]]
Samples = dict[str, list[float]]


def interleaved(ops: Ops, rounds: int, warmup: int) -> Samples:
    """Seconds of ``rounds`` calls of each operation, after ``warmup`` untimed ones of each; every
    round calls each operation once, in a random order."""
    names = list(ops)
    for _ in range(warmup):
        for name in names:
            ops[name]()
    samples: Samples = {name: [] for name in names}
    for _ in range(rounds):
        random.shuffle(names)
        for name in names:
            start = time.perf_counter()
            ops[name]()
            samples[name].append(time.perf_counter() - start)
    return samples


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min), {os.cpu_count()} cores"


# -- ours ---------------------------------------------------------------------------------------


def ours_crypto(nodes: int, threshold: int) -> Ops:
    """The per-request crypto of a shadow retrieval for ``t+1`` of ``nodes`` shares, in process,
    and the document key generation."""
    from ocean_secret_store.crypto import dkg, document, shadows
    from ocean_secret_store.crypto.curve import Point, random_scalar

    key = dkg.run_local_dkg(threshold, nodes)
    document_key, common, encrypted = document.generate_document_key(key.public)
    members = list(key.id_numbers)[: threshold + 1]
    xs = [key.id_numbers[m] for m in members]
    requester_secret = random_scalar()
    requester = Point.generator_mul(requester_secret)

    def request() -> Point:
        access_key = random_scalar()
        points, blobs = [], []
        for i, member in enumerate(members):  # each of the t+1 nodes
            node_shadow = shadows.node_shadow(key.shares[member], xs[i], xs[:i] + xs[i + 1:])
            point, blob = shadows.shadow_decryption(node_shadow, access_key, common, requester)
            points.append(point)
            blobs.append(blob)
        decrypted = shadows.combine_shadow_points(points, access_key, encrypted, threshold)  # the master
        common_r = shadows.requester_common_point(common, threshold)
        return shadows.recover_document_key(decrypted, common_r, blobs, requester_secret)  # the requester

    if request() != document_key:
        raise RuntimeError("our shadow crypto did not recover the document key")
    return {"crypto": request, "encrypt": lambda: document.generate_document_key(key.public)}


def ours_end_to_end(client: Any, threshold: int) -> tuple[Ops, Ops]:
    """Through the SDK: a shadow retrieval of a stored document key (checked once first), and a
    server key generation (a DKG of the whole cluster)."""
    from ocean_secret_store.crypto import document

    def generate() -> Any:
        return client.generate_server_key(os.urandom(32), threshold)

    key_id = os.urandom(32)
    public = client.generate_server_key(key_id, threshold)
    document_key, common, encrypted = document.generate_document_key(public)
    client.store_document_key(key_id, common, encrypted)
    if client.recover_document_key(key_id) != document_key:
        raise RuntimeError("the cluster returned a wrong document key")
    return {"e2e": lambda: client.recover_document_key(key_id)}, {"e2e dkg": generate}


# -- ferveo (nucypher-core) -----------------------------------------------------------------------


def ferveo_ops(nodes: int, threshold: int) -> tuple[Ops, Ops]:
    """TACo's threshold decryption for ``t+1`` of ``nodes`` validators, crypto alone: the
    per-request operations and the DKG."""
    from nucypher_core import ferveo

    needed = threshold + 1
    tau = 1  # the ritual's id

    def dkg() -> tuple[list[Any], list[Any], list[Any]]:
        keypairs = [ferveo.Keypair.random() for _ in range(nodes)]
        validators = [ferveo.Validator("0x" + os.urandom(20).hex(), kp.public_key(), i)
                      for i, kp in enumerate(keypairs)]
        messages = []
        for validator in validators:  # every dealer's transcript
            dealer = ferveo.Dkg(tau=tau, shares_num=nodes, security_threshold=needed,
                                validators=validators, me=validator)
            messages.append(ferveo.ValidatorMessage(validator, dealer.generate_transcript()))
        me = ferveo.Dkg(tau=tau, shares_num=nodes, security_threshold=needed, validators=validators,
                        me=validators[0])
        if not me.aggregate_transcripts(messages).verify(nodes, messages):
            raise RuntimeError("ferveo's aggregated transcript does not verify")
        return keypairs, validators, messages

    keypairs, validators, messages = dkg()
    # What each validator keeps after the ritual: its Dkg and the aggregated transcript.
    holders = []
    for validator in validators[:needed]:
        mine = ferveo.Dkg(tau=tau, shares_num=nodes, security_threshold=needed, validators=validators,
                          me=validator)
        holders.append((mine, mine.aggregate_transcripts(messages)))
    public_key = holders[0][1].public_key
    aad, plaintext = b"conditions", os.urandom(32)
    ciphertext = ferveo.encrypt(plaintext, aad, public_key)
    selected = validators[:needed]

    def simple() -> bytes:
        shares = [aggregate.create_decryption_share_simple(mine, ciphertext.header, aad, keypairs[i])
                  for i, (mine, aggregate) in enumerate(holders)]
        secret = ferveo.combine_decryption_shares_simple(shares)
        return bytes(ferveo.decrypt_with_shared_secret(ciphertext, aad, secret))

    def precomputed() -> bytes:
        shares = [aggregate.create_decryption_share_precomputed(mine, ciphertext.header, aad, keypairs[i], selected)
                  for i, (mine, aggregate) in enumerate(holders)]
        secret = ferveo.combine_decryption_shares_precomputed(shares)
        return bytes(ferveo.decrypt_with_shared_secret(ciphertext, aad, secret))

    if simple() != plaintext or precomputed() != plaintext:
        raise RuntimeError("ferveo's threshold decryption did not return the plaintext")
    return ({"ferveo": simple, "ferveo precomputed": precomputed,
             "ferveo encrypt": lambda: ferveo.encrypt(plaintext, aad, public_key)},
            {"ferveo dkg": dkg})


# -- Umbral (umbral-pre in process; pyUmbral in its own interpreter) ------------------------------


def umbral_ops(module: str, nodes: int, threshold: int) -> Ops:
    """Umbral's operations with ``module`` (``umbral_pre`` or pyUmbral's ``umbral``: the same API)."""
    pre = importlib.import_module(module)
    alice, bob, signing = pre.SecretKey.random(), pre.SecretKey.random(), pre.SecretKey.random()
    signer = pre.Signer(signing)
    needed = threshold + 1
    plaintext = os.urandom(32)
    capsule, ciphertext = pre.encrypt(alice.public_key(), plaintext)

    def grant() -> list[Any]:
        return pre.generate_kfrags(alice, bob.public_key(), signer, needed, nodes, True, True)

    kfrags = grant()[:needed]

    def request() -> bytes:
        cfrags = [pre.reencrypt(capsule, kfrag) for kfrag in kfrags]  # each of the t+1 proxies
        return bytes(pre.decrypt_reencrypted(bob, alice.public_key(), capsule, cfrags, ciphertext))

    wire = [bytes(pre.reencrypt(capsule, kfrag)) for kfrag in kfrags]

    def check() -> None:
        for blob in wire:
            pre.CapsuleFrag.from_bytes(blob).verify(capsule, signing.public_key(), alice.public_key(),
                                                    bob.public_key())

    if request() != plaintext:
        raise RuntimeError(f"{module} did not return the plaintext")
    return {"request": request, "check": check, "encrypt": lambda: pre.encrypt(alice.public_key(), plaintext),
            "grant": grant}


def pyumbral_samples(python: str, nodes: int, threshold: int, rounds: int, warmup: int) -> Samples:
    """pyUmbral's :func:`umbral_ops` measured by ``python`` (its own environment) running this file."""
    command = [python, __file__, "--umbral-worker", "umbral", "--nodes", str(nodes), "--threshold", str(threshold),
               "--rounds", str(rounds), "--warmup", str(warmup)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    result: Samples = json.loads(done.stdout)
    return result


# -- the table ----------------------------------------------------------------------------------


class Table:
    def __init__(self) -> None:
        self.rows: dict[str, list[float]] = {}

    def add(self, name: str, samples: list[float]) -> None:
        self.rows[name] = samples

    def p50(self, name: str) -> float | None:
        samples = self.rows.get(name)
        return statistics.median(samples) if samples else None

    def print(self) -> None:
        print(f"{'operation':<62} {'p50':>9} {'p90':>9} {'p99':>9} {'mean':>9} {'n':>5}   (ms)")
        for name, s in self.rows.items():
            print(f"{name:<62} {statistics.median(s) * 1e3:9.3f} {quantile(s, 0.9) * 1e3:9.3f} "
                  f"{quantile(s, 0.99) * 1e3:9.3f} {statistics.fmean(s) * 1e3:9.3f} {len(s):5d}")

    def ratio(self, text: str, ours: str, theirs: str) -> bool:
        """Print ``ours``' p50 over ``theirs``'; False (nothing printed) if either row is missing."""
        a, b = self.p50(ours), self.p50(theirs)
        if a is None or b is None:
            return False
        print(f"  {text:<66} x{a / b:7.2f}")
        return True


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=None, help="N holders (default 5; 3 with --quick)")
    parser.add_argument("--threshold", type=int, default=None,
                        help="Parity's t, t+1 needed (default 2; 1 with --quick)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="timed rounds per operation (default 200; 20 with --quick)")
    parser.add_argument("--dkg-rounds", type=int, default=None, help="timed DKGs (default 20; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a run of seconds: 3 nodes, t=1, few rounds")
    parser.add_argument("--pyumbral-python", metavar="PATH",
                        help="an interpreter with umbral==0.3.0 (pyUmbral) installed, to measure it too")
    parser.add_argument("--umbral-worker", metavar="MODULE", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.nodes = args.nodes or (3 if args.quick else 5)
    if args.threshold is None:
        args.threshold = 1 if args.quick else 2
    args.rounds = args.rounds or (20 if args.quick else 200)
    args.dkg_rounds = args.dkg_rounds or (3 if args.quick else 20)
    if args.warmup is None:
        args.warmup = max(args.rounds // 10, 3)
    if not 0 <= args.threshold < args.nodes:
        parser.error(f"--threshold {args.threshold}: needs 0 <= t < N = {args.nodes}")
    return args


UMBRAL_ROWS = {
    "request": "{impl}: {t1} reencrypt + decrypt_reencrypted",
    "check": "{impl}: Bob checks {t1} cfrags (parse + verify)",
    "encrypt": "{impl}: encrypt 32 B",
    "grant": "{impl}: grant, {n} kfrags ({t1} needed)",
}


def rows(n: int, t1: int) -> dict[str, str]:
    """Operation key -> its row in the table, in the table's order."""
    return {
        "e2e": f"ours: shadow retrieval end to end (SDK, {n}-node devnet)",
        "crypto": f"ours: shadow crypto alone, {t1} shares + combine + recover",
        "encrypt": "ours: document key generation (C, E)",
        "ferveo": f"ferveo: crypto alone, {t1} shares simple + combine + decrypt",
        "ferveo precomputed": f"ferveo: crypto alone, {t1} shares precomputed + combine + decrypt",
        "ferveo encrypt": "ferveo: encrypt 32 B",
        **{f"umbral-pre {key}": name.format(impl="umbral-pre", t1=t1, n=n) for key, name in UMBRAL_ROWS.items()},
        "e2e dkg": f"ours: server key generation end to end (DKG, {n} nodes)",
        "ferveo dkg": f"ferveo: DKG, {n} dealers + aggregate + verify (one process)",
        **{f"pyUmbral {key}": name.format(impl="pyUmbral", t1=t1, n=n) for key, name in UMBRAL_ROWS.items()},
    }


def measure(args: argparse.Namespace, client: Any, skipped: list[str]) -> Samples:
    """Every operation whose package is installed, interleaved: the per-request ones, then the DKGs."""
    n, t = args.nodes, args.threshold
    per_request, dkgs = ours_end_to_end(client, t)
    per_request.update(ours_crypto(n, t))
    try:
        ferveo_request, ferveo_dkg = ferveo_ops(n, t)
    except ImportError as exc:
        skipped.append(f"ferveo (nucypher-core): not installed ({exc}); pip install -e '.[bench]'")
    else:
        per_request.update(ferveo_request)
        dkgs.update(ferveo_dkg)
    try:
        per_request.update({f"umbral-pre {key}": op for key, op in umbral_ops("umbral_pre", n, t).items()})
    except ImportError as exc:
        skipped.append(f"Umbral (umbral-pre): not installed ({exc}); pip install -e '.[bench]'")
    samples = interleaved(per_request, args.rounds, args.warmup)
    samples.update(interleaved(dkgs, args.dkg_rounds, 1))
    return samples


def main() -> None:
    args = parse_args()
    if args.umbral_worker:  # the child of --pyumbral-python: JSON samples on stdout
        ops = umbral_ops(args.umbral_worker, args.nodes, args.threshold)
        print(json.dumps(interleaved(ops, args.rounds, args.warmup)))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchlib import wait_ready
    from eth_account import Account

    from ocean_secret_store.client.client import SecretStoreClient
    from ocean_secret_store.testing.devnets import running_devnet

    n, t1 = args.nodes, args.threshold + 1
    print(f"N = {n} holders, t + 1 = {t1} needed, {args.rounds} rounds ({args.warmup} warm-up), "
          f"{args.dkg_rounds} DKGs; {load()}", flush=True)
    skipped: list[str] = []
    state_dir = Path(tempfile.mkdtemp(prefix="oss-bench-peers-"))
    try:
        with running_devnet(state_dir, n, acl="none") as state:
            urls = [node.http_url for node in state.nodes]
            wait_ready(urls, len(urls) - 1, 30.0)
            with SecretStoreClient(urls, Account.create(), timeout=30.0) as client:
                samples = measure(args, client, skipped)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    if args.pyumbral_python:
        try:
            pyumbral = pyumbral_samples(args.pyumbral_python, n, args.threshold, args.rounds, args.warmup)
        except (OSError, RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
            skipped.append(f"pyUmbral ({args.pyumbral_python}): {exc}")
        else:
            samples.update({f"pyUmbral {key}": s for key, s in pyumbral.items()})
    else:
        skipped.append("pyUmbral (umbral 0.3.0): not measured without --pyumbral-python PATH")
    report(samples, rows(n, t1), t1, skipped)


def report(samples: Samples, names: dict[str, str], t1: int, skipped: list[str]) -> None:
    table = Table()
    for key, name in names.items():
        if key in samples:
            table.add(name, samples[key])
    print()
    table.print()
    print("\nratios of the p50s:")
    printed = [
        table.ratio("ours end to end / ferveo crypto alone", names["e2e"], names["ferveo"]),
        table.ratio("ours crypto alone / ferveo crypto alone", names["crypto"], names["ferveo"]),
        table.ratio("ours DKG end to end / ferveo DKG crypto alone", names["e2e dkg"], names["ferveo dkg"]),
    ]
    for impl in ("umbral-pre", "pyUmbral"):
        name = names[f"{impl} request"]
        printed.append(table.ratio(f"ours end to end / {impl} {t1} reencrypt + decrypt", names["e2e"], name))
        printed.append(table.ratio(f"ours crypto alone / {impl} {t1} reencrypt + decrypt", names["crypto"], name))
    if not any(printed):
        print("  none: no peer measured")
    for line in skipped:
        print(f"skipped: {line}")
    print(load())


def stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so running_devnet stops the devnet on `kill` too


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    main()
