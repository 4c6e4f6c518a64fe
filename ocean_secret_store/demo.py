"""The in-process crypto demo: a document encrypted under a threshold key, recovered from t+1
shadows and not from t. (Replaced by the end-to-end devnet demo once the cluster runs.)"""

from __future__ import annotations

import os
import http.server
import itertools
from collections.abc import Callable

from .crypto import document, dkg, shadows
from .crypto.curve import Point, random_scalar


def run_crypto_demo(threshold: int = 2, nodes: int = 5, say: Callable[[str], None] = print) -> bool:
    say(f"1. distributed key generation among {nodes} simulated nodes, threshold t = {threshold}")
    key = dkg.run_local_dkg(threshold, nodes)
    say(f"   server public key Y = 0x{key.public.to_bytes().hex()[:32]}...")

    say("2. the publisher makes a document key for Y and encrypts a document with it")
    document_key, common, encrypted = document.generate_document_key(key.public)
    plaintext = b"ocean dataset: https://example.org/private/data.csv"
    ciphertext = document.encrypt_document(document_key, plaintext)
    say(f"   {len(plaintext)} bytes -> {len(ciphertext)} bytes (AES-128-CTR, IV appended)")

    requester_secret = random_scalar()
    requester = Point.generator_mul(requester_secret)
    node_ids = list(key.id_numbers)

    def recover(members: list[bytes], t: int) -> Point:
        access_key = random_scalar()
        xs = [key.id_numbers[n] for n in members]
        points, blobs = [], []
        for i, node in enumerate(members):
            ns = shadows.node_shadow(key.shares[node], xs[i], xs[:i] + xs[i + 1 :])
            point, blob = shadows.shadow_decryption(ns, access_key, common, requester)
            points.append(point)
            blobs.append(blob)
        decrypted = shadows.combine_shadow_points(points, access_key, encrypted, t)
        return shadows.recover_document_key(
            decrypted, shadows.requester_common_point(common, t), blobs, requester_secret
        )

    chosen = sorted(node_ids, key=lambda _: os.urandom(4))[: threshold + 1]
    say(f"3. {threshold + 1} of {nodes} nodes each compute a decryption shadow for the requester")
    recovered = recover(chosen, threshold)
    ok = recovered == document_key and document.decrypt_document(recovered, ciphertext) == plaintext
    say(f"   requester combined the shadows and decrypted the document: {'OK' if ok else 'FAILED'}")

    say(f"4. only {threshold} nodes try the same")
    refused = recover(chosen[:threshold], threshold - 1) if threshold > 0 else None
    ok_refused = refused != document_key
    say(f"   with t shares the document key is {'NOT recovered (as it must be)' if ok_refused else 'RECOVERED (bug!)'}")
    return ok and ok_refused


class _Steps:
    """Numbered steps with their timing, and a spinner while a step runs on a terminal."""

    def __init__(self, say: Callable[[str], None], interactive: bool) -> None:
        self.say, self.interactive, self.number = say, interactive, 0

    def run(self, title: str, fn: Callable[[], object]) -> object:
        import sys
        import threading
        import time

        self.number += 1
        done = threading.Event()
        if self.interactive:
            def spin() -> None:
                for frame in itertools.cycle("|/-\\"):
                    if done.wait(0.1):
                        break
                    sys.stderr.write(f"\r   {frame} {title} ...")
                    sys.stderr.flush()
                sys.stderr.write("\r" + " " * (len(title) + 10) + "\r")

            spinner = threading.Thread(target=spin, daemon=True)
            spinner.start()
        started = time.perf_counter()
        try:
            result = fn()
        finally:
            done.set()
            if self.interactive:
                spinner.join()
        self.say(f"{self.number:>2}. {title} [{(time.perf_counter() - started) * 1e3:.0f} ms]")
        return result


def run_demo(nodes: int = 5, say: Callable[[str], None] = print, interactive: bool | None = None) -> bool:
    """The main job: the embedded devnet and Ocean's publish -> order -> consume, end to end.

    anvil with keeper-contracts 0.13.2, N key server processes checking
    AccessSecretStoreCondition on chain, the JSON-RPC face and the Brizo-shaped provider with its
    events handler. A publisher publishes an asset whose file is served from loopback (its URL
    encrypted under a threshold key tied to the DID); a consumer is refused, orders, and
    consumes through the provider and by decrypting itself; token balances before and after;
    then t+1 live key servers suffice and t do not. The devnet is stopped at the end, also on
    Ctrl-C or failure.
    """
    import functools
    import http.server
    import shutil
    import sys
    import tempfile
    import threading
    from pathlib import Path

    from eth_account import Account

    from . import devnet
    from .exceptions import KeyServerError, OceanError
    from .ocean.did import did_to_id
    from .ocean.host import Ocean

    interactive = sys.stderr.isatty() if interactive is None else interactive
    steps = _Steps(say, interactive)
    work = Path(tempfile.mkdtemp(prefix="oss-demo-"))
    state_dir = work / "devnet"
    files_dir = work / "files"
    files_dir.mkdir()
    dataset = b"station,temperature\n" + b"".join(f"s{i},{i % 40}\n".encode() for i in range(20000))
    (files_dir / "weather.csv").write_bytes(dataset)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0),
        functools.partial(_QuietHandler, directory=str(files_dir)),
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    file_url = f"http://127.0.0.1:{server.server_address[1]}/weather.csv"
    ok = False
    try:
        state = steps.run(f"devnet up: anvil + keeper-contracts 0.13.2, {nodes} key servers, RPC face, provider",
                          lambda: devnet.up(state_dir, nodes))
        assert isinstance(state, dict)
        say(f"    key servers {', '.join(n['http_url'] for n in state['nodes'])}")
        say(f"    chain {state['chain_url']}, provider {state['provider_url']}, state in {state_dir}")
        ocean = Ocean(state["ocean_config"])
        roles = {role: Account.from_key(v["private_key"]) for role, v in state["accounts"].items()}
        publisher, consumer, provider = roles["publisher"], roles["consumer"], roles["provider"]
        keeper = ocean.keeper
        price = 10 * 10**18
        metadata = {"main": {"type": "dataset", "name": "Weather stations", "author": "Demo Met Office",
                             "license": "CC-BY", "dateCreated": "2026-11-23T00:00:00Z", "price": str(price),
                             "files": [{"url": file_url, "contentType": "text/csv", "name": "weather.csv",
                                        "contentLength": str(len(dataset))}]}}
        ddo = steps.run(f"publisher {publisher.address[:10]}.. publishes: DDO, file URL encrypted under a "
                        f"t = {ocean.config.threshold} threshold key for the DID, DID registered on chain",
                        lambda: ocean.assets.create(metadata, publisher, providers=[provider.address]))
        did = ddo.did
        say(f"    {did}; the published DDO holds no URL, only attributes.encryptedFiles")
        steps.run("anyone can verify the DDO: its DID is the hash of its checksums", lambda: ocean.assets.resolve(did))

        def refused_directly() -> str:
            try:
                ocean.secret_store.decrypt_document(did, ddo.encrypted_files or "", consumer)
            except KeyServerError as exc:
                return f"{type(exc).__name__}: {exc}"
            raise OceanError("the consumer decrypted without permission")

        reason = steps.run("consumer asks the key servers before ordering", refused_directly)
        say(f"    refused by the key servers ({reason})")
        steps.run("consumer gets 20 OCEAN from the dispenser", lambda: keeper.request_tokens(consumer, 20))
        before = {r: keeper.token_balance(roles[r].address) for r in ("publisher", "consumer")}
        agreement = steps.run("consumer orders: agreement created, 10 OCEAN locked",
                              lambda: ocean.assets.order(did, 2, consumer))
        steps.run("provider's events handler fulfils access on chain",
                  lambda: ocean.assets.wait_for_access(did, consumer))
        folder = steps.run("consumer downloads through the provider (agreement, signature, permission checked)",
                           lambda: ocean.assets.consume(str(agreement), did, 2, consumer, work / "via-provider"))
        assert isinstance(folder, Path)
        via_provider = (folder / "weather.csv").read_bytes() == dataset
        direct = steps.run("consumer decrypts the file list itself through shadows and downloads",
                           lambda: ocean.assets.consume(str(agreement), did, 2, consumer, work / "direct", direct=True))
        assert isinstance(direct, Path)
        via_shadow = (direct / "weather.csv").read_bytes() == dataset
        say(f"    {len(dataset)} bytes both ways: provider {'OK' if via_provider else 'MISMATCH'}, "
            f"direct {'OK' if via_shadow else 'MISMATCH'}")

        def paid() -> tuple[int, ...]:
            for _ in range(100):
                states = keeper.condition_states(bytes.fromhex(str(agreement)[2:]))
                if states == (2, 2, 2):
                    return states
                import time

                time.sleep(0.1)
            return states

        states = steps.run("provider releases the escrow to the publisher", paid)
        after = {r: keeper.token_balance(roles[r].address) for r in ("publisher", "consumer")}
        for role in ("publisher", "consumer"):
            say(f"    {role:<9} {before[role] / 10**18:6.1f} OCEAN -> {after[role] / 10**18:6.1f} OCEAN")
        balances_ok = after["publisher"] - before["publisher"] == price and before["consumer"] - after["consumer"] == price

        nodes_total = len(state["nodes"])
        t = ocean.config.threshold
        for index in range(t + 1, nodes_total):
            devnet.stop_node(state_dir, index)

        def still_decrypts() -> bool:
            return bool(ocean.secret_store.decrypt_document(did, ddo.encrypted_files or "", consumer))

        survived = steps.run(f"stopped {nodes_total - t - 1} key servers: t+1 = {t + 1} live ones still serve",
                             still_decrypts)
        devnet.stop_node(state_dir, t)

        def with_t() -> str:
            try:
                ocean.secret_store.decrypt_document(did, ddo.encrypted_files or "", consumer)
            except KeyServerError as exc:
                return f"{type(exc).__name__}"
            return "decrypted (bug!)"

        refusal = steps.run(f"stopped one more: t = {t} key servers cannot", with_t)
        say(f"    refused: {refusal}")
        ok = (via_provider and via_shadow and states == (2, 2, 2) and balances_ok and bool(survived)
              and refusal == "ConsensusTemporaryUnreachable")
    except KeyboardInterrupt:
        say("interrupted")
    finally:
        server.shutdown()
        if (state_dir / devnet.STATE_FILE).exists():
            devnet.down(state_dir)
            say("devnet stopped")
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"logs kept in {work}")
    say("demo " + ("succeeded" if ok else "FAILED"))
    return ok


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """The loopback file server of the demo's dataset, without request logging on stderr."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        return None
