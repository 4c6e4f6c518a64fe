"""Batched DKG checks over many keys at once (a batch generation, crypto.dkg.verify_dealing_batches
and verify_feldman_share_batches): honest keys pass, one bad share of one key among many is caught
and its dealer named with the key, errors that cancel across keys are caught, and every key's own
``H`` counts (a pair valid under another key's ``H`` is not)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from ocean_secret_store.crypto.curve import N, Point, random_scalar
from ocean_secret_store.crypto.dkg import (
    deal,
    deal_with_publics,
    dealing_for,
    verify_dealing_batches,
    verify_feldman_share_batches,
)
from ocean_secret_store.crypto.nums import pedersen_h
from ocean_secret_store.crypto.resharing import CheatingDealer
from ocean_secret_store.crypto.sharing import feldman_commitments
from ocean_secret_store.exceptions import InvalidShare

Dealings = dict[int, tuple[int, int, tuple[Point, ...]]]


def seeded(seed: int) -> Any:
    return random.Random(seed).randbytes


def keys(count: int = 12, n: int = 3, t: int = 1, seed: int = 1) -> tuple[int, list[tuple[Point, Dealings]],
                                                                           list[dict[int, tuple[Point, ...]]]]:
    rng = seeded(seed)
    x = random_scalar(rng)
    batches, publics = [], []
    for k in range(count):
        h = pedersen_h(bytes([k]) * 32)
        dealt = [deal(t, h, rng) for _ in range(n)]
        batches.append((h, {i: (*dealing_for(d, x), d.commitments) for i, d in enumerate(dealt)}))
        publics.append({i: feldman_commitments(d.f) for i, d in enumerate(dealt)})
    return x, batches, publics


def feldman(batches: list[tuple[Point, Dealings]], publics: list[dict[int, tuple[Point, ...]]]) -> list[Any]:
    return [({i: r[0] for i, r in dealings.items()}, p) for (_, dealings), p in zip(batches, publics, strict=True)]


@pytest.mark.parametrize(("count", "n", "t"), [(1, 1, 0), (12, 3, 1), (5, 5, 2)])
def test_honest_keys_pass_both_checks(count: int, n: int, t: int) -> None:
    x, batches, publics = keys(count, n, t)
    verify_dealing_batches(x, batches, t)
    verify_feldman_share_batches(x, feldman(batches, publics), t)


@pytest.mark.parametrize(("key", "dealer", "part"), [(0, 0, 0), (7, 2, 1), (11, 1, 0)])
def test_one_bad_pair_of_one_key_is_caught_and_named(key: int, dealer: int, part: int) -> None:
    x, batches, _ = keys()
    _, dealings = batches[key]
    s1, s2, c = dealings[dealer]
    dealings[dealer] = ((s1 + 1) % N, s2, c) if part == 0 else (s1, (s2 + 1) % N, c)
    with pytest.raises(CheatingDealer, match=f"key {key} of the batch") as caught:
        verify_dealing_batches(x, batches, 1)
    assert caught.value.dealers == (dealer,)


def test_one_bad_feldman_share_of_one_key_is_caught_and_named() -> None:
    x, batches, publics = keys()
    checks = feldman(batches, publics)
    checks[4][0][2] = (checks[4][0][2] + 3) % N
    with pytest.raises(CheatingDealer, match="key 4 of the batch") as caught:
        verify_feldman_share_batches(x, checks, 1)
    assert caught.value.dealers == (2,)


def test_errors_that_cancel_across_keys_are_caught() -> None:
    """One dealer shifts a share of key 2 by +d and of key 9 by -d: every plain sum over the batch
    still holds, each key is wrong."""
    x, batches, publics = keys()
    d = random_scalar()
    for key, sign in ((2, 1), (9, -1)):
        s1, s2, c = batches[key][1][1]
        batches[key][1][1] = ((s1 + sign * d) % N, s2, c)
    for seed in range(10):
        with pytest.raises(CheatingDealer, match="key 2 of the batch"):
            verify_dealing_batches(x, batches, 1, seeded(seed))
        with pytest.raises(CheatingDealer, match="key 2 of the batch"):
            verify_feldman_share_batches(x, feldman(batches, publics), 1, seeded(seed))


def test_each_key_is_checked_under_its_own_second_generator() -> None:
    x, batches, _ = keys(2)
    swapped = [(batches[1][0], batches[0][1]), (batches[0][0], batches[1][1])]
    with pytest.raises(CheatingDealer, match="key 0 of the batch"):
        verify_dealing_batches(x, swapped, 1)


def test_wrong_counts_and_empty_batches_are_refused() -> None:
    x, batches, publics = keys(3)
    with pytest.raises(InvalidShare):
        verify_dealing_batches(x, [], 1)
    with pytest.raises(InvalidShare):
        verify_feldman_share_batches(x, [], 1)
    s1, s2, c = batches[1][1][0]
    batches[1][1][0] = (s1, s2, c[:1])
    with pytest.raises(CheatingDealer, match="for threshold 1"):
        verify_dealing_batches(x, batches, 1)
    checks = feldman(keys(3)[1], publics)
    del checks[2][0][1]
    with pytest.raises(InvalidShare, match="same dealers"):
        verify_feldman_share_batches(x, checks, 1)


def test_a_dealing_with_its_publics_is_a_dealing_and_its_feldman_commitments() -> None:
    h = pedersen_h(b"\x05" * 32)
    dealing, publics = deal_with_publics(2, h, seeded(3))
    assert publics == feldman_commitments(dealing.f)
    assert dealing.public_share == publics[0] and dealing.threshold == 2
    x = random_scalar()
    verify_dealing_batches(x, [(h, {0: (*dealing_for(dealing, x), dealing.commitments)})], 2)
