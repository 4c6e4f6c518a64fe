"""Crypto core benchmarks: medians and percentiles of the hot operations, run on demand.

    .venv/bin/python bench/crypto.py [--quick] [--skip-stream]

Prints one table; the figures the foundation issue asks for are marked with their target.
Peak RSS of streaming a 1 GiB document is measured in a child process (so the parent's own
memory does not count) that encrypts a 1 GiB sparse file on disk to /dev/null.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from Crypto.Cipher import AES

from ocean_secret_store.crypto import dkg, document, ecdsa, ecies, schnorr, shadows
from ocean_secret_store.crypto.curve import N, Point, random_scalar
from ocean_secret_store.crypto.sharing import shadow_coefficients


def timings(fn: Callable[[], object], *, repeat: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def row(name: str, samples: list[float], target: str = "") -> None:
    samples = sorted(samples)

    def p(q: float) -> float:
        return samples[min(len(samples) - 1, int(q * len(samples)))]

    med = statistics.median(samples)
    print(f"{name:<52} {med * 1e3:9.3f} {p(0.9) * 1e3:9.3f} {p(0.99) * 1e3:9.3f}  {target}")


def throughput(name: str, fn: Callable[[], object], size: int, repeat: int) -> float:
    samples = timings(fn, repeat=repeat, warmup=1)
    med = statistics.median(samples)
    mbps = size / med / 1e6
    print(f"{name:<52} {mbps:9.1f} MB/s (median of {repeat})")
    return mbps


def stream_peak_rss(size: int) -> int:
    """Peak RSS of a fresh process that streams a ``size``-byte file (sparse, on disk) to /dev/null."""
    with tempfile.NamedTemporaryFile(prefix="oss-stream-", suffix=".bin") as src:
        src.truncate(size)
        code = textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
            from ocean_secret_store.crypto import document
            from ocean_secret_store.crypto.curve import Point
            with open({src.name!r}, "rb") as f, open("/dev/null", "wb") as out:
                written = document.encrypt_stream(Point.generator_mul(5), f, out)
            assert written == {size} + 16
            # VmHWM is this process image's own peak; ru_maxrss would also count the parent's
            # memory at fork time (Linux carries the maximum across exec).
            print(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")))
            """
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) * 1024


def bench_node_ops(requester_secret: int, requester: Point, repeat: int) -> None:
    blob32 = ecies.encrypt(requester, os.urandom(32))
    row("ECIES encrypt 32 B", timings(lambda: ecies.encrypt(requester, b"\x01" * 32), repeat=repeat))
    row("ECIES decrypt 32 B", timings(lambda: ecies.decrypt(requester_secret, blob32), repeat=repeat))

    # One node's shadow computation for t = 2 (group of 3), ECIES to the requester included.
    common = Point.generator_mul(random_scalar())
    access_key = random_scalar()
    xs = [random_scalar() for _ in range(3)]
    share = random_scalar()

    def node_work() -> None:
        ns = shadows.node_shadow(share, xs[0], xs[1:])
        shadows.shadow_decryption(ns, access_key, common, requester)

    row("node shadow computation (t=2, incl. ECIES)", timings(node_work, repeat=repeat), "<= 0.3 ms")


def bench_combine(group: int, requester_secret: int, requester: Point, repeat: int) -> None:
    """Master + requester work for a group of ``group`` shadows (t = group - 1), checked once first."""
    t = group - 1
    key = dkg.run_local_dkg(t, group)
    document_key, common_point, encrypted_point = document.generate_document_key(key.public)
    ids = list(key.id_numbers)[:group]
    xs = [key.id_numbers[i] for i in ids]
    a = random_scalar()
    points, blobs = [], []
    for i, node in enumerate(ids):
        ns = shadows.node_shadow(key.shares[node], xs[i], xs[:i] + xs[i + 1 :])
        p, b = shadows.shadow_decryption(ns, a, common_point, requester)
        points.append(p)
        blobs.append(b)
    common_r = shadows.requester_common_point(common_point, t)

    def combine() -> Point:
        d = shadows.combine_shadow_points(points, a, encrypted_point, t)
        return shadows.recover_document_key(d, common_r, blobs, requester_secret)

    if combine() != document_key:
        raise RuntimeError(f"combining {group} shadows did not recover the document key")
    target = "<= 0.5 ms" if group == 3 else ""
    row(f"combine {group} shadows (master + requester)", timings(combine, repeat=repeat // 2), target)


def bench_schnorr(repeat: int) -> None:
    """One partial signature (t = 2) and the combination of 3 partials."""
    key = dkg.run_local_dkg(2, 3)
    ids = list(key.id_numbers)
    xs3 = [key.id_numbers[i] for i in ids]
    nonces = [random_scalar() for _ in ids]
    nonce_public = Point.generator_mul(sum(nonces) % N)
    digest = os.urandom(32)
    c = schnorr.challenge(digest, nonce_public)
    row("Schnorr partial signature (t=2)",
        timings(lambda: schnorr.partial_signature(2, nonces[0], key.shares[ids[0]], xs3[0], xs3[1:], c), repeat=repeat))
    partials = [
        schnorr.partial_signature(2, nonces[i], key.shares[ids[i]], xs3[i], xs3[:i] + xs3[i + 1 :], c) for i in range(3)
    ]

    def combine_sig() -> None:
        s = schnorr.combine_partial_signatures(partials)
        schnorr.verify(key.public, (c, s), digest)

    row("Schnorr combine 3 partials + verify", timings(combine_sig, repeat=repeat))
    xs11 = [random_scalar() for _ in range(11)]
    row("Lagrange (shadow) coefficients, 11 nodes", timings(lambda: shadow_coefficients(xs11), repeat=repeat))


def bench_ecdsa(repeat: int) -> None:
    """Threshold ECDSA (§2.9): t = 0, then one member's and the master's cost per step and the
    whole protocol in-process for t=1, N=5 and t=3, N=7."""
    digest = os.urandom(32)
    key0 = dkg.run_local_dkg(0, 1)
    row("ECDSA t=0: local RFC 6979 sign + verify",
        timings(lambda: ecdsa.sign_locally(key0.shares[0], digest, key0.public), repeat=repeat))
    for t, n in ((1, 5), (3, 7)):
        bench_ecdsa_group(t, n, digest, repeat)


def bench_ecdsa_group(t: int, n: int, digest: bytes, repeat: int) -> None:
    """Every step once for a group of 2t+1 (checked: the signature must verify), then timed."""
    key = dkg.run_local_dkg(t, n)
    members = list(range(2 * t + 1))
    group = {m: key.id_numbers[m] for m in members}
    h_point = Point.generator_mul(random_scalar())
    dealings = {m: ecdsa.deal_signing(t, h_point) for m in members}
    commitments = {m: d.commitments for m, d in dealings.items()}
    received = {j: {m: ecdsa.subshares_for(d, group[j]) for m, d in dealings.items()} for j in members}
    shares = {j: ecdsa.receive_signing_dealings(group[j], t, h_point, received[j], commitments) for j in members}
    coeff_shares = {j: ecdsa.inversed_nonce_coeff_share(shares[j]) for j in members}
    u_inv = ecdsa.inversed_nonce_coeff(t, group, coeff_shares)
    partials = {j: ecdsa.partial_signature(shares[j], key.shares[j], u_inv, digest) for j in members}
    nonce_public = shares[0].nonce_public
    ecdsa.combine_signature(t, group, partials, nonce_public, digest, key.public)  # raises unless it verifies

    heavy = max(5, repeat // 10)
    size = 2 * t + 1
    row(f"ECDSA member: deal 4 sub-sharings (t={t})",
        timings(lambda: ecdsa.deal_signing(t, h_point), repeat=heavy, warmup=2))
    row(f"ECDSA member: subshares for {size} members (t={t})",
        timings(lambda: [ecdsa.subshares_for(dealings[0], x) for x in group.values()], repeat=repeat))
    row(f"ECDSA member: verify {size} dealings, form shares (t={t})",
        timings(lambda: ecdsa.receive_signing_dealings(group[0], t, h_point, received[0], commitments),
                repeat=heavy, warmup=2))
    row(f"ECDSA member: u_i + partial signature (t={t})",
        timings(lambda: (ecdsa.inversed_nonce_coeff_share(shares[0]),
                         ecdsa.partial_signature(shares[0], key.shares[0], u_inv, digest)), repeat=repeat))
    row(f"ECDSA master: u^-1 from {size} shares",
        timings(lambda: ecdsa.inversed_nonce_coeff(t, group, coeff_shares), repeat=repeat))
    row(f"ECDSA master: combine {size} partials + verify",
        timings(lambda: ecdsa.combine_signature(t, group, partials, nonce_public, digest, key.public), repeat=repeat))
    row(f"ECDSA whole protocol in-process (t={t}, N={n})",
        timings(lambda: ecdsa.run_local_signing(key, members, digest), repeat=max(5, repeat // 40), warmup=1))


def bench_aes(size: int) -> None:
    """Document encryption against raw pycryptodome AES-128-CTR on ``size`` random bytes."""
    doc_key = Point.generator_mul(random_scalar())
    data = os.urandom(size)
    raw_key, iv = os.urandom(16), os.urandom(16)
    reps = 20 if size <= 1 << 20 else 5
    raw = throughput(f"raw pycryptodome AES-128-CTR, {size >> 20} MiB",
                     lambda: AES.new(raw_key, AES.MODE_CTR, nonce=b"", initial_value=iv).encrypt(data), size, reps)
    ours = throughput(f"document encryption (one-shot), {size >> 20} MiB",
                      lambda: document.encrypt_document(doc_key, data), size, reps)
    print(f"{'  ratio document / raw':<52} {ours / raw:9.2f}       target >= 0.8")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true",
                        help="a run of seconds: few repetitions, groups of 3 and 5 only, skip 64 MiB and 1 GiB")
    parser.add_argument("--skip-stream", action="store_true", help="skip the 1 GiB streaming RSS check")
    args = parser.parse_args()
    repeat = 40 if args.quick else 2000

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; times in ms")
    print(f"{'operation':<52} {'median':>9} {'p90':>9} {'p99':>9}  target")
    requester_secret = random_scalar()
    requester = Point.generator_mul(requester_secret)
    bench_node_ops(requester_secret, requester, repeat)
    for group in (3, 5) if args.quick else (3, 5, 11):
        bench_combine(group, requester_secret, requester, repeat)
    bench_schnorr(repeat)
    bench_ecdsa(repeat)

    print()
    for size in [1 << 20] if args.quick else [1 << 20, 64 << 20]:
        bench_aes(size)

    if not (args.quick or args.skip_stream):
        rss = stream_peak_rss(1 << 30)
        print(f"{'streaming 1 GiB: peak RSS of the process':<52} {rss / 2**20:9.1f} MiB   target < 100 MiB")


if __name__ == "__main__":
    main()
