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
