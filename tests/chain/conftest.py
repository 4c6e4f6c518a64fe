"""Chain fixtures: one anvil and one keeper-contracts deployment shared by the whole test session."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from ocean_secret_store.exceptions import SecretStoreError

if TYPE_CHECKING:  # web3 is imported only when the fixture runs
    from ocean_secret_store.chain.anvil import AnvilProcess
    from ocean_secret_store.chain.deploy import Deployment
    from ocean_secret_store.chain.keeper import Keeper


@dataclass(frozen=True)
class Actor:
    address: str
    key: str


@dataclass(frozen=True)
class Chain:
    """A running anvil with the keeper contracts deployed, plus named dev accounts (dev only)."""

    anvil: AnvilProcess
    deployment: Deployment
    keeper: Keeper
    deployer: Actor
    minter: Actor
    publisher: Actor
    consumer: Actor
    provider: Actor
    stranger: Actor
    spare: tuple[Actor, ...]


@pytest.fixture(scope="session")
def chain() -> Iterator[Chain]:
    from ocean_secret_store.chain.anvil import start_anvil
    from ocean_secret_store.chain.deploy import deploy_keeper_contracts
    from ocean_secret_store.chain.keeper import Keeper

    try:
        anvil = start_anvil()
    except SecretStoreError as exc:
        if "make setup" in str(exc):
            pytest.skip(str(exc))
        raise
    try:
        actors = [Actor(a, k) for a, k in zip(anvil.addresses, anvil.private_keys, strict=True)]
        deployment = deploy_keeper_contracts(anvil.url, actors[0].key, minter=actors[1].address)
        print(f"\nkeeper contracts deployed in {deployment.seconds:.2f} s")
        yield Chain(
            anvil=anvil, deployment=deployment, keeper=Keeper(anvil.url, deployment.addresses),
            deployer=actors[0], minter=actors[1], publisher=actors[2], consumer=actors[3], provider=actors[4],
            stranger=actors[5], spare=tuple(actors[6:]),
        )
    finally:
        anvil.stop()
