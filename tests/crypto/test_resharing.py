"""Verifiable redistribution and proactive refresh: the secret survives, cheaters are named, versions move on."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocean_secret_store.crypto.curve import G, N, Point, random_scalar
from ocean_secret_store.crypto.dkg import LocalKey, run_local_dkg
from ocean_secret_store.crypto.document import generate_document_key
from ocean_secret_store.crypto.hashes import key_version_hash
from ocean_secret_store.crypto.resharing import (
    VERSION_EPOCH_LABEL,
    CheatingDealer,
    ReceivedShare,
    deal_redistribution,
    new_id_numbers,
    next_version,
    public_share_at,
    receive_redistribution,
    subshare_for,
    verify_subshare,
    version_digest,
    version_hash,
)
from ocean_secret_store.crypto.shadows import combine_shadow_points, node_shadow, shadow_point
from ocean_secret_store.crypto.sharing import lagrange_coefficients_at_zero
from ocean_secret_store.exceptions import InvalidScalar, InvalidShare, InvalidThreshold
from tests.crypto.reference import interpolate_at_zero


def node_id(name: int) -> bytes:
    """A stand-in 64-byte node id (a real one is a public key; the hash only needs 64 bytes)."""
    return name.to_bytes(64, "big")


def secret_of(xs: Mapping[Any, int], shares: Mapping[Any, int], members: Sequence[Any]) -> int:
    return interpolate_at_zero([(xs[m], shares[m]) for m in members])


def redistribute(
    xs: Mapping[Any, int],
    shares: Mapping[Any, int],
    group: Sequence[Any],
    new_nodes: Sequence[Any],
    new_threshold: int,
    public: Point,
    public_shares: Mapping[Any, Point] | None = None,
) -> tuple[dict[Any, int], dict[Any, ReceivedShare]]:
    """One whole redistribution in process: every dealer of ``group`` deals, every new node receives."""
    new_xs = new_id_numbers(xs, new_nodes)
    dealings = {d: deal_redistribution(shares[d], new_threshold) for d in group}
    commitments = {d: dealing.commitments for d, dealing in dealings.items()}
    received = {
        j: receive_redistribution(
            new_xs[j],
            new_threshold,
            {d: xs[d] for d in group},
            {d: subshare_for(dealing, new_xs[j]) for d, dealing in dealings.items()},
            commitments,
            public,
            public_shares,
        )
        for j in new_nodes
    }
    return new_xs, received


def decrypt_with(
    xs: Mapping[Any, int], shares: Mapping[Any, int], members: Sequence[Any], t: int, common: Point, encrypted: Point
) -> Point:
    """Plain-mode threshold decryption (§2.7) by the group ``members`` (exactly t+1)."""
    group = [xs[m] for m in members]
    access_key = random_scalar()
    points = [
        shadow_point(node_shadow(shares[m], group[i], group[:i] + group[i + 1 :]), access_key, common)
        for i, m in enumerate(members)
    ]
    return combine_shadow_points(points, access_key, encrypted, t)


# -- redistribution keeps the secret ----------------------------------------------------------------


@st.composite
def set_changes(draw: st.DrawFn) -> tuple[int, int, int, int, list[int], list[int]]:
    """``(t, n, t_new, kept, group, new_nodes)``: a key of n nodes moved to a grown, shrunk or replaced set."""
    n = draw(st.integers(1, 6))
    t = draw(st.integers(0, min(4, n - 1)))
    group = draw(st.permutations(range(n)))[: t + 1]
    kept = draw(st.integers(0, n))
    added = draw(st.integers(0 if kept else 1, 6 - kept))
    new_nodes = [*draw(st.permutations(range(n)))[:kept], *range(100, 100 + added)]
    t_new = draw(st.integers(0, min(4, len(new_nodes) - 1)))
    return t, n, t_new, kept, group, new_nodes


@given(set_changes())
def test_redistribution_keeps_the_secret_and_the_document_key(change: tuple[Any, ...]) -> None:
    t, n, t_new, _kept, group, new_nodes = change
    key = run_local_dkg(t, n, verify=False)
    y = secret_of(key.id_numbers, key.shares, list(range(t + 1)))
    document_key, common, encrypted = generate_document_key(key.public)

    new_xs, received = redistribute(key.id_numbers, key.shares, group, new_nodes, t_new, key.public)
    assert set(new_xs) == set(new_nodes)
    for node in new_nodes:
        if node in key.id_numbers:
            assert new_xs[node] == key.id_numbers[node]  # old nodes keep their x
    assert len(set(new_xs.values()) | set(key.id_numbers.values())) == len(
        set(new_xs) | set(key.id_numbers)
    )  # fresh x's collide with no x, old or new
    new_shares = {j: r.share for j, r in received.items()}
    rng = random.Random(t * 100 + n)
    for _ in range(3):
        members = rng.sample(new_nodes, t_new + 1)
        assert secret_of(new_xs, new_shares, members) * G == key.public
        assert decrypt_with(new_xs, new_shares, members, t_new, common, encrypted) == document_key
        if t_new:
            assert secret_of(new_xs, new_shares, members[:t_new]) != y  # t_new shares do not determine y

    # Every receiver derived the same version commitments, and they give every new public share.
    first = received[new_nodes[0]].version_commitments
    assert first[0] == key.public and len(first) == t_new + 1
    for j, outcome in received.items():
        assert outcome.version_commitments == first
        assert public_share_at(new_xs[j], first) == outcome.share * G


def test_grow_shrink_replace_chain_with_named_public_shares() -> None:
    """3 -> 5 (t 1 -> 2) -> 3 (t -> 1) -> replace one: the second and later moves check per-holder public shares."""
    key = run_local_dkg(1, 3, verify=False)
    xs, shares = dict(key.id_numbers), dict(key.shares)
    document_key, common, encrypted = generate_document_key(key.public)
    commitments: tuple[Point, ...] | None = None
    for group, new_nodes, t_new in (
        ([0, 2], [0, 1, 2, 3, 4], 2),
        ([1, 3, 4], [1, 3, 4], 1),
        ([3, 4], [1, 3, 9], 1),
    ):
        publics = None if commitments is None else {d: public_share_at(xs[d], commitments) for d in group}
        xs, received = redistribute(xs, shares, group, new_nodes, t_new, key.public, publics)
        shares = {j: r.share for j, r in received.items()}
        commitments = received[new_nodes[0]].version_commitments
        for members in combinations(new_nodes, t_new + 1):
            assert decrypt_with(xs, shares, list(members), t_new, common, encrypted) == document_key


# -- cheating dealers ----------------------------------------------------------------------------------


def _setup(t: int = 2, n: int = 4, t_new: int = 2) -> tuple[LocalKey, list[int], dict[int, int], dict[Any, Any]]:
    key = run_local_dkg(t, n, verify=False)
    group = list(range(t + 1))
    new_xs = new_id_numbers(key.id_numbers, [*range(n), 7])
    dealings = {d: deal_redistribution(key.shares[d], t_new) for d in group}
    return key, group, new_xs, dealings


def _receive(
    key: LocalKey,
    group: list[int],
    x: int,
    subshares: dict[int, int],
    commitments: dict[int, Any],
    t_new: int = 2,
    public_shares: Mapping[int, Point] | None = None,
) -> ReceivedShare:
    return receive_redistribution(
        x, t_new, {d: key.id_numbers[d] for d in group}, subshares, commitments, key.public, public_shares
    )


def test_errors_that_cancel_in_the_combination_leave_the_share_exact() -> None:
    """The combined check accepts what cannot hurt: two subshares wrong by amounts that cancel in
    Σ λ_i·h_i(x) give exactly the honest share (a single wrong one never passes: the test below)."""
    key, group, new_xs, dealings = _setup()
    x = new_xs[7]
    subshares = {d: subshare_for(dealing, x) for d, dealing in dealings.items()}
    commitments = {d: dealing.commitments for d, dealing in dealings.items()}
    honest = _receive(key, group, x, subshares, commitments)
    lambdas = dict(zip(group, lagrange_coefficients_at_zero([key.id_numbers[d] for d in group]), strict=True))
    delta = 12345
    tweaked = {**subshares,
               0: (subshares[0] + delta * pow(lambdas[0], -1, N)) % N,
               1: (subshares[1] - delta * pow(lambdas[1], -1, N)) % N}
    assert _receive(key, group, x, tweaked, commitments).share == honest.share


def test_a_wrong_subshare_is_detected_and_named() -> None:
    key, group, new_xs, dealings = _setup()
    x = new_xs[7]
    subshares = {d: subshare_for(dealing, x) for d, dealing in dealings.items()}
    commitments = {d: dealing.commitments for d, dealing in dealings.items()}
    _receive(key, group, x, subshares, commitments)  # honest: accepted
    subshares[1] = (subshares[1] + 1) % N
    with pytest.raises(CheatingDealer, match="dealer 1 sent a subshare") as caught:
        _receive(key, group, x, subshares, commitments)
    assert caught.value.dealers == (1,)
    assert isinstance(caught.value, InvalidShare)


def test_a_wrong_constant_is_detected_by_the_key_and_named_by_public_shares() -> None:
    key, group, new_xs, dealings = _setup()
    # Dealer 2 deals s_2 + 1: every subshare is consistent with its (honest-looking) commitments.
    dealings[2] = deal_redistribution((key.shares[2] + 1) % N, 2)
    commitments = {d: dealing.commitments for d, dealing in dealings.items()}
    for j in (0, 7):
        subshares = {d: subshare_for(dealing, new_xs[j]) for d, dealing in dealings.items()}
        # Without per-holder public shares: detected, the group is named.
        with pytest.raises(CheatingDealer, match="public key") as caught:
            _receive(key, group, new_xs[j], subshares, commitments)
        assert caught.value.dealers == tuple(group)
        # With them (here from the shares; in a cluster from the version commitments): the culprit is named.
        publics = {d: key.shares[d] * G for d in group}
        with pytest.raises(CheatingDealer, match="dealer 2 dealt") as caught:
            _receive(key, group, new_xs[j], subshares, commitments, public_shares=publics)
        assert caught.value.dealers == (2,)


def test_bad_commitment_lists_and_dealer_sets_are_refused() -> None:
    key, group, new_xs, dealings = _setup()
    x = new_xs[7]
    subshares = {d: subshare_for(dealing, x) for d, dealing in dealings.items()}
    commitments: dict[int, Any] = {d: dealing.commitments for d, dealing in dealings.items()}
    with pytest.raises(CheatingDealer, match="dealer 0 sent 2 commitments") as caught:
        _receive(key, group, x, subshares, {**commitments, 0: commitments[0][:-1]})
    assert caught.value.dealers == (0,)
    with pytest.raises(CheatingDealer, match="dealer 1"):
        _receive(key, group, x, subshares, {**commitments, 1: (commitments[1][0] + G, *commitments[1][1:])})
    with pytest.raises(InvalidShare, match="missing"):
        _receive(key, group, x, {d: subshares[d] for d in group[:-1]}, commitments)
    with pytest.raises(InvalidShare, match="not in the group"):
        _receive(key, group, x, {**subshares, 3: 1}, commitments)
    label = node_id(5)
    with pytest.raises(CheatingDealer, match="0x" + label.hex()):
        verify_subshare(x, 1, commitments[0], 2, dealer=label)
    with pytest.raises(InvalidShare):
        receive_redistribution(x, 2, {}, {}, {}, key.public)


def test_version_digest_binds_every_commitment_and_their_order() -> None:
    commitments = deal_redistribution(5, 2).commitments
    digest = version_digest(commitments)
    assert digest == version_digest(tuple(commitments))
    assert version_digest(commitments[::-1]) != digest
    assert version_digest(commitments[:-1]) != digest
    assert version_digest((commitments[0], commitments[1], deal_redistribution(6, 2).commitments[2])) != digest


def test_input_checks() -> None:
    with pytest.raises(InvalidScalar):
        deal_redistribution(0, 1)
    with pytest.raises(InvalidThreshold):
        deal_redistribution(1, -1)
    with pytest.raises(InvalidScalar):
        subshare_for(deal_redistribution(1, 1), 0)
    with pytest.raises(InvalidShare):
        new_id_numbers({1: 5}, [])
    with pytest.raises(InvalidShare):
        public_share_at(1, ())


# -- proactive refresh -----------------------------------------------------------------------------


@given(st.integers(1, 4).flatmap(lambda t: st.tuples(st.just(t), st.integers(t + 1, 6))))
def test_refresh_keeps_the_secret_and_old_and_new_shares_do_not_mix(tn: tuple[int, int]) -> None:
    t, n = tn
    key = run_local_dkg(t, n, verify=False)
    xs, old = dict(key.id_numbers), dict(key.shares)
    # The version commitments of a Feldman-committed version (a redistribution's outcome).
    _xs, received = redistribute(xs, old, list(range(t + 1)), list(range(n)), t, key.public)
    old = {j: r.share for j, r in received.items()}
    commitments = received[0].version_commitments
    y = secret_of(xs, old, list(range(t + 1)))
    assert y * G == key.public

    # A refresh: t+1 holders redistribute to every holder, same id numbers.
    dealers = list(range(n))[-(t + 1):]  # not the group that dealt the version before
    same_xs, refreshed = redistribute(xs, old, dealers, list(range(n)), t, key.public,
                                      {d: public_share_at(xs[d], commitments) for d in dealers})
    assert same_xs == xs
    new = {j: r.share for j, r in refreshed.items()}
    new_commitments = refreshed[0].version_commitments
    assert new_commitments[0] == key.public and new_commitments != commitments
    for j, x in xs.items():
        assert new[j] != old[j]
        assert public_share_at(x, new_commitments) == new[j] * G
    for members in list(combinations(range(n), t + 1))[:5]:
        assert secret_of(xs, new, list(members)) == y  # t+1 new shares reconstruct
        # t stolen before, the rest after: any mix of old and new shares gives a wrong secret.
        for cut in range(1, t + 1):
            mixed = {m: (old if i < cut else new)[m] for i, m in enumerate(members)}
            assert secret_of(xs, mixed, list(members)) != y

    # Version hashes: the refreshed version has the same id numbers but a new hash.
    ids = {node_id(j): x for j, x in xs.items()}
    epoch, refreshed = next_version(ids, 0)
    assert epoch == 1 and refreshed != version_hash(ids, 0) == key_version_hash(ids)
    assert next_version(ids, epoch)[1] not in {refreshed, key_version_hash(ids)}


def test_version_hash_rules() -> None:
    ids = {node_id(1): 11, node_id(2): 22}
    assert version_hash(ids) == key_version_hash(ids)  # epoch 0: Parity's hash
    hashes = {version_hash(ids, e) for e in range(5)}
    assert len(hashes) == 5
    from ocean_secret_store.crypto.hashes import keccak256

    assert version_hash(ids, 3) == keccak256(VERSION_EPOCH_LABEL + (3).to_bytes(8, "big") + key_version_hash(ids))
    for bad in (-1, 2**64):
        with pytest.raises(InvalidThreshold):
            version_hash(ids, bad)


def test_secrets_stay_out_of_reprs() -> None:
    dealing = deal_redistribution(123456789, 2)
    text = repr(dealing)
    for value in dealing.coefficients:
        assert str(value) not in text and f"{value:x}" not in text


def test_a_shrink_back_repeats_an_id_map_so_the_epoch_is_needed() -> None:
    """Grow 3 -> 5, shrink back to the first 3: same id numbers, new shares; only the epoch tells them apart."""
    key = run_local_dkg(1, 3, verify=False)
    grown_xs, grown = redistribute(key.id_numbers, key.shares, [0, 1], [0, 1, 2, 3, 4], 2, key.public)
    back_xs, back = redistribute(grown_xs, {j: r.share for j, r in grown.items()}, [1, 2, 3], [0, 1, 2], 1, key.public)
    assert back_xs == dict(key.id_numbers)
    assert any(back[j].share != key.shares[j] for j in range(3))
    ids = {node_id(j): x for j, x in back_xs.items()}
    assert key_version_hash(ids) == version_hash({node_id(j): x for j, x in key.id_numbers.items()})
    epoch, grown_hash = next_version({node_id(j): x for j, x in grown_xs.items()}, 0)
    assert next_version(ids, epoch)[1] not in {grown_hash, version_hash(ids, 0)}
