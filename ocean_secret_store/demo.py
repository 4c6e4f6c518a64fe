"""The in-process crypto demo: a document encrypted under a threshold key, recovered from t+1
shadows and not from t. (Replaced by the end-to-end devnet demo once the cluster runs.)"""

from __future__ import annotations

import os
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


def run_demo(nodes: int = 5, threshold: int = 2, say: Callable[[str], None] = print) -> bool:
    """The cluster demo: real key server processes on loopback, Parity's HTTP API, local crypto.

    Publishes a document under a threshold key, retrieves it through shadows from several entry
    nodes, shows that t+1 live nodes suffice and t do not, then stops everything.
    """
    import tempfile
    import time
    from pathlib import Path

    import requests

    from . import devnet
    from .crypto import ecies
    from .crypto.signatures import sign_raw_hash
    from .protocol import http as codec

    state_dir = Path(tempfile.mkdtemp(prefix="oss-demo-"))
    say(f"1. starting a devnet: {nodes} key server processes on loopback (state in {state_dir})")
    state = devnet.up(state_dir, nodes)
    urls = [n["http_url"] for n in state["nodes"]]
    http = requests.Session()
    ok = True
    try:
        publisher = random_scalar()
        key_id = os.urandom(32)
        signature = sign_raw_hash(publisher, key_id)

        def call(index: int, method: str, path: str) -> requests.Response:
            return http.request(method, f"{urls[index]}/{path}", timeout=30)

        started = time.perf_counter()
        response = call(0, "POST", codec.server_key_generation_path(key_id, signature, threshold))
        server_public = codec.decode_point_response(response.content)
        say(f"2. distributed key generation (t = {threshold}) via node 0 took "
            f"{(time.perf_counter() - started) * 1e3:.0f} ms; every node keeps only its own share")
        document_key, common, encrypted = document.generate_document_key(server_public)
        plaintext = b'{"files": [{"url": "https://example.org/private/data.csv"}]}'
        ciphertext = document.encrypt_document(document_key, plaintext)
        call(1, "POST", codec.document_key_storing_path(key_id, signature, common, encrypted)).raise_for_status()
        say(f"3. the publisher encrypted its file list locally ({len(ciphertext)} bytes) and stored the"
            " encrypted document key via node 1")

        def consume(index: int) -> tuple[int, bytes | None, str]:
            r = call(index, "GET", codec.document_key_shadow_retrieval_path(key_id, signature))
            if r.status_code != 200:
                return r.status_code, None, codec.decode_error_body(r.content)
            shadow = codec.decode_shadow_response(r.content)
            key = shadows.recover_document_key(shadow.decrypted_secret, shadow.common_point,
                                               shadow.decrypt_shadows, publisher)
            return 200, document.decrypt_document(key, ciphertext), ""

        for index in range(nodes):
            status, plain, _ = consume(index)
            ok &= status == 200 and plain == plaintext
        say(f"4. shadow retrieval through each of the {nodes} nodes: "
            f"{'all decrypted the document' if ok else 'FAILED'} (no node saw the document key)")

        raw = call(2, "GET", codec.document_key_retrieval_path(key_id, signature)).content
        plain_key = Point.from_bytes(ecies.decrypt(publisher, codec.decode_bytes_response(raw)))
        ok &= plain_key == document_key
        for index in range(threshold + 1, nodes):
            devnet.stop_node(state_dir, index)
        time.sleep(0.3)
        status, plain, _ = consume(0)
        ok &= status == 200 and plain == plaintext
        say(f"5. stopped {nodes - threshold - 1} nodes; with t+1 = {threshold + 1} live nodes retrieval "
            f"{'still works' if status == 200 else 'FAILED'}")
        devnet.stop_node(state_dir, threshold)
        time.sleep(0.3)
        status, plain, error = consume(0)
        ok &= status == 403 and plain is None
        say(f"6. stopped one more; with only t = {threshold} live nodes the cluster refuses: HTTP {status} {error!r}")
    finally:
        devnet.down(state_dir)
        say("7. devnet stopped")
        if ok:
            import shutil

            shutil.rmtree(state_dir, ignore_errors=True)
    say("demo " + ("succeeded" if ok else "FAILED"))
    return ok
