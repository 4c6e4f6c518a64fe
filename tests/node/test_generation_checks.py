"""The generation's batched checks at a node (issue 18): one random linear combination over every
dealer per round, and a dealer that cheats the node is still named in the error."""

from __future__ import annotations

import dataclasses
import os

import pytest

from ocean_secret_store.crypto.curve import N, Point
from ocean_secret_store.exceptions import InvalidMessage, KeyServerError
from ocean_secret_store.node.sessions import generation
from ocean_secret_store.node.sessions.base import Core
from ocean_secret_store.protocol import messages as m

from .memnet import make_cluster
from .test_sessions import TIMEOUT, Account, run


@pytest.mark.parametrize("kind", ["secret1", "secret2", "publics"])
def test_a_dealer_cheating_one_node_among_many_is_named_and_nothing_is_stored(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dealer 5 sends node 3 a bad share (or bad public coefficients): node 3's batched check fails
    and names dealer 5, the master refuses the key and no node stores it."""
    failures: dict[bytes, BaseException] = {}
    deal_and_verify = generation._deal_and_verify

    async def spy(core: Core, state: generation.GenerationState) -> Point:
        try:
            return await deal_and_verify(core, state)
        except KeyServerError as exc:
            failures[core.node_id] = exc
            raise

    monkeypatch.setattr(generation, "_deal_and_verify", spy)

    async def scenario() -> None:
        hub, cores = await make_cluster(9, session_timeout=TIMEOUT)
        try:
            victim, dealer = cores[3].node_id, cores[5].node_id

            def tamper(src: bytes, dst: bytes, env: m.Envelope) -> m.Envelope:
                body = env.body
                if src != dealer or dst != victim:
                    return env
                if isinstance(body, m.GenDealing) and kind != "publics":
                    changed = dataclasses.replace(body, **{kind: (getattr(body, kind) + 1) % N})
                    return m.Envelope(changed, env.rid, env.reply_to)
                if isinstance(body, m.GenPublics) and kind == "publics":
                    c = list(body.coefficients)
                    c[3] = c[3] + Point.generator_mul(1)
                    return m.Envelope(m.GenPublics(session=body.session, coefficients=tuple(c)), env.rid,
                                      env.reply_to)
                return env

            hub.tamper = tamper
            key_id = os.urandom(32)
            author = Account()
            what = ("dealing of node 0x{}.. fails its commitments" if kind != "publics"
                    else "share of node 0x{}.. does not match its public coefficients").format(dealer.hex()[:16])
            with pytest.raises(KeyServerError):
                await cores[0].generate_server_key(key_id, author.sign(key_id), 4)
            assert all(core.storage.get(key_id) is None for core in cores)
            error = failures[victim]
            assert isinstance(error, InvalidMessage)
            assert error.detail == what
        finally:
            await hub.stop()

    run(scenario)
