"""Bound signatures at the members of a store (issue 11, finding 2), over the in-memory bus: every
member checks the store's bound signature itself and claims its nonce, whatever the entry node did."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.crypto.document import generate_document_key
from ocean_secret_store.crypto.signatures import sign_raw_hash
from ocean_secret_store.exceptions import InsufficientRequesterData
from ocean_secret_store.protocol import bound as b
from ocean_secret_store.protocol import messages as m

from .memnet import make_cluster


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(coro_fn(), 30))


def test_members_requiring_bound_signatures_refuse_a_bare_store_whatever_the_entry_node_requires() -> None:
    async def scenario() -> None:
        _, cores = await make_cluster(3, session_timeout=1.0)
        try:
            for core in cores[1:]:
                core.require_bound = frozenset({"store_document_key"})
            secret = random_scalar()
            key_id = os.urandom(32)
            public = await cores[0].generate_server_key(key_id, sign_raw_hash(secret, key_id), 1)
            _, common, encrypted = generate_document_key(public)
            # cores[0] requires nothing and forwards the bare store; the members refuse it.
            with pytest.raises(InsufficientRequesterData, match="requires a bound signature for store_document_key"):
                await cores[0].store_document_key(key_id, sign_raw_hash(secret, key_id), common, encrypted)
            shares = [await core.load_key(key_id) for core in cores]
            assert all(share is not None and share.common_point is None for share in shares)

            # A store message with a bound signature made for other points: a member refuses it itself.
            other_common, other_encrypted = Point.generator_mul(3), Point.generator_mul(4)
            wrong = b.sign(secret, "store_document_key", key_id, b.store_arguments(other_common, other_encrypted),
                           nonce=os.urandom(16), expiry=int(time.time()) + 30)
            store = m.StorePrepare(key_id=key_id, tx=os.urandom(32), signature=sign_raw_hash(secret, key_id),
                                   common_point=common, encrypted_point=encrypted, operation="store_document_key",
                                   bound=wrong)
            with pytest.raises(InsufficientRequesterData):
                await cores[0].request(cores[1].node_id, store, m.StorePrepared)
            assert cores[1].storage.get_pending(key_id) is None

            # The right bound signature goes through every member, which then knows its nonce.
            right = b.sign(secret, "store_document_key", key_id, b.store_arguments(common, encrypted),
                           nonce=os.urandom(16), expiry=int(time.time()) + 30)
            await cores[0].store_document_key(key_id, sign_raw_hash(secret, key_id), common, encrypted, right)
            assert all(len(core.nonces) == 1 for core in cores)
        finally:
            for core in cores:
                await core.stop()

    run(scenario)
