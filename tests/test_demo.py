"""The README's main job, as a test: the demo runs to success and says what it shows; and the
threshold property it ends on, in-process (t+1 shadows recover the document key, t do not)."""

from __future__ import annotations

import random

import pytest

from ocean_secret_store.crypto import dkg, document, shadows
from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.demo import run_demo


def _recover(key: dkg.LocalKey, members: list[int], t: int, common: Point, encrypted: Point) -> Point:
    """The document key as a requester combines it from the shadows of ``members`` (threshold ``t``)."""
    requester_secret = random_scalar()
    requester = Point.generator_mul(requester_secret)
    access_key = random_scalar()
    xs = [key.id_numbers[node] for node in members]
    points, blobs = [], []
    for i, node in enumerate(members):
        node_shadow = shadows.node_shadow(key.shares[node], xs[i], xs[:i] + xs[i + 1:])
        point, blob = shadows.shadow_decryption(node_shadow, access_key, common, requester)
        points.append(point)
        blobs.append(blob)
    decrypted = shadows.combine_shadow_points(points, access_key, encrypted, t)
    return shadows.recover_document_key(decrypted, shadows.requester_common_point(common, t), blobs, requester_secret)


def test_t_plus_one_shadows_recover_the_document_and_t_do_not() -> None:
    threshold, nodes = 2, 5
    key = dkg.run_local_dkg(threshold, nodes)
    document_key, common, encrypted = document.generate_document_key(key.public)
    plaintext = b"ocean dataset: https://example.org/private/data.csv"
    ciphertext = document.encrypt_document(document_key, plaintext)
    chosen = random.sample(sorted(key.id_numbers), threshold + 1)

    recovered = _recover(key, chosen, threshold, common, encrypted)
    assert recovered == document_key
    assert document.decrypt_document(recovered, ciphertext) == plaintext
    assert _recover(key, chosen[:threshold], threshold - 1, common, encrypted) != document_key


@pytest.mark.integration
def test_cluster_demo_end_to_end() -> None:
    lines: list[str] = []
    assert run_demo(nodes=3, say=lines.append, interactive=False)
    assert lines[-1] == "demo succeeded"
    text = "\n".join(lines)
    assert "refused by the key servers (ConsensusUnreachable" in text
    assert "provider OK, direct OK" in text
    assert "publisher    0.0 OCEAN ->   10.0 OCEAN" in text
    assert "consumer +3.0 OCEAN, the cluster's account keeps 1.0 OCEAN" in text  # threshold ECDSA on chain
    assert "refused: ConsensusTemporaryUnreachable" in text
    assert "devnet stopped" in text
