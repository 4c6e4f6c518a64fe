"""The node's access checkers: the contract checker turns every chain failure into AccessCheckFailed
(a node error, a refusal for the core), and the wiring picks the checker the config names."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from ocean_secret_store.chain.acl import (
    AGREEMENT_STORE_MANAGER_SLOT,
    DID_ATTRIBUTE_REGISTERED_TOPIC,
    GET_DID_REGISTRY_SELECTOR,
)
from ocean_secret_store.exceptions import ConfigError, InternalError
from ocean_secret_store.node.acl import (
    AccessCheckFailed,
    AllowAll,
    ContractAccessChecker,
    Decision,
    StaticAllowList,
)
from ocean_secret_store.node.app import build_access_checker
from ocean_secret_store.node.config import AclConfig
from ocean_secret_store.testing.servers import closed_port_url

ADDRESS = bytes.fromhex("11" * 20)
OTHER = bytes.fromhex("33" * 20)
AUTHOR = bytes.fromhex("44" * 20)
KEY_ID = bytes.fromhex("22" * 32)
MANAGER = bytes.fromhex("77" * 20)
REGISTRY = bytes.fromhex("88" * 20)


def test_node_acl_does_not_import_web3() -> None:
    code = (
        "import sys, ocean_secret_store.node.acl, ocean_secret_store.node.app\n"
        "assert not any(m == 'web3' or m.startswith(('web3.', 'eth_abi')) for m in sys.modules), 'web3 imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_contract_checker_config_is_checked() -> None:
    with pytest.raises(ConfigError) as raised:
        ContractAccessChecker("ws://127.0.0.1:8546", ADDRESS)
    assert raised.value.key == "acl.chain_url"
    with pytest.raises(ConfigError) as raised:
        ContractAccessChecker("http://127.0.0.1:8545", ADDRESS[:10])
    assert raised.value.key == "acl.contract"


def test_wiring_builds_the_configured_checker() -> None:
    assert isinstance(build_access_checker(AclConfig("none")), AllowAll)
    assert isinstance(build_access_checker(AclConfig("allow_list", frozenset({ADDRESS}))), StaticAllowList)
    checker = build_access_checker(AclConfig("contract", chain_url="http://127.0.0.1:8545", contract=ADDRESS))
    assert isinstance(checker, ContractAccessChecker)
    assert "0x" + ADDRESS.hex() in repr(checker)
    with pytest.raises(ConfigError):
        build_access_checker(AclConfig("contract", chain_url="http://127.0.0.1:8545"))


def test_static_allow_list() -> None:
    async def scenario() -> list[bool]:
        checker = StaticAllowList([ADDRESS], {KEY_ID: [OTHER]})
        answers = [await checker.decide(ADDRESS, b"\x00" * 32, AUTHOR), await checker.decide(OTHER, KEY_ID, AUTHOR),
                   await checker.decide(OTHER, b"\x00" * 32, AUTHOR),
                   await checker.decide(AUTHOR, b"\x00" * 32, AUTHOR)]  # Parity: no rights of its own
        return [d.allowed for d in answers]

    assert asyncio.run(scenario()) == [True, True, False, False]


def test_allow_all_allows_anyone() -> None:
    decision = asyncio.run(AllowAll().decide(OTHER, KEY_ID, AUTHOR))
    assert decision.allowed
    assert "disabled" in decision.reason


def _word(value: bytes) -> str:
    return "0x" + value.rjust(32, b"\x00").hex()


@dataclass
class FakeChain:
    """Answers the checker's four reads from plain data: who has permission on which DID, the
    DIDRegistry's DIDAttributeRegistered logs (block, log index, owner) per DID, and where the ACL
    contract's AgreementStoreManager and the registry are. Counts the calls of every method."""

    permitted: set[tuple[bytes, bytes]] = field(default_factory=set)
    registrations: dict[bytes, list[tuple[int, int, bytes]]] = field(default_factory=dict)
    manager_slot: bytes = MANAGER
    registry: bytes = REGISTRY
    calls: Counter[str] = field(default_factory=Counter)

    def answer(self, method: str, params: list[Any]) -> Any:
        self.calls[method] += 1
        if method == "eth_getStorageAt":
            assert params[:2] == ["0x" + ADDRESS.hex(), hex(AGREEMENT_STORE_MANAGER_SLOT)]
            return _word(self.manager_slot)
        if method == "eth_call" and params[0]["to"] == "0x" + MANAGER.hex():
            assert params[0]["data"] == "0x" + GET_DID_REGISTRY_SELECTOR.hex()
            return _word(self.registry)
        if method == "eth_call":
            data = bytes.fromhex(params[0]["data"][10:])
            return _word(bytes([(data[12:32], data[32:]) in self.permitted]))
        if method == "eth_getCode":
            return "0x6080" if params[0] == "0x" + REGISTRY.hex() else "0x"
        if method == "eth_getLogs":
            (query,) = params
            assert query["address"] == "0x" + self.registry.hex()
            assert query["topics"][0] == "0x" + DID_ATTRIBUTE_REGISTERED_TOPIC.hex()
            did = bytes.fromhex(query["topics"][1][2:])
            return [{"blockNumber": hex(block), "logIndex": hex(index), "removed": False,
                     "topics": ["0x" + DID_ATTRIBUTE_REGISTERED_TOPIC.hex(), "0x" + did.hex(), _word(owner),
                                _word(did)]}
                    for block, index, owner in self.registrations.get(did, [])]
        raise AssertionError(f"unexpected {method}")


async def _with_chain(chain: FakeChain | object, body: Callable[[ContractAccessChecker], Awaitable[None]],
                      **options: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        payload = await request.json()
        result = chain.answer(payload["method"], payload["params"]) if isinstance(chain, FakeChain) else chain
        return web.json_response({"jsonrpc": "2.0", "id": payload["id"], "result": result})

    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    checker = ContractAccessChecker(f"http://127.0.0.1:{runner.addresses[0][1]}", ADDRESS, **options)
    try:
        await body(checker)
    finally:
        await checker.close()
        await runner.cleanup()


def test_the_author_is_served_its_own_key_without_asking_the_chain() -> None:
    chain = FakeChain()

    async def body(checker: ContractAccessChecker) -> None:
        decision = await checker.decide(AUTHOR, KEY_ID, AUTHOR)
        assert decision.allowed
        assert decision.reason == "the key's author"

    asyncio.run(_with_chain(chain, body))
    assert not chain.calls


def test_no_permission_on_chain_is_a_refusal_without_a_log_query() -> None:
    chain = FakeChain(registrations={KEY_ID: [(5, 0, AUTHOR)]})

    async def body(checker: ContractAccessChecker) -> None:
        assert await checker.decide(OTHER, KEY_ID, AUTHOR) == Decision(False, "no permission on chain")

    asyncio.run(_with_chain(chain, body))
    assert chain.calls == Counter({"eth_call": 1})


def test_a_grantee_of_a_did_its_author_registered_first_is_served_and_the_registrant_cached() -> None:
    # registered by the author, then re-registered (an attribute update) after a transfer to OTHER
    chain = FakeChain(permitted={(OTHER, KEY_ID)}, registrations={KEY_ID: [(9, 0, OTHER), (5, 3, AUTHOR)]})

    async def body(checker: ContractAccessChecker) -> None:
        for _ in range(3):
            decision = await checker.decide(OTHER, KEY_ID, AUTHOR)
            assert decision.allowed, decision.reason

    asyncio.run(_with_chain(chain, body))
    # the registry is found once, the first registrant asked once; the permission every time
    assert chain.calls == Counter({"eth_call": 4, "eth_getStorageAt": 1, "eth_getCode": 1, "eth_getLogs": 1})


def test_a_did_first_registered_by_someone_else_serves_nobody_but_the_author() -> None:
    hijacker = bytes.fromhex("66" * 20)
    chain = FakeChain(permitted={(hijacker, KEY_ID), (OTHER, KEY_ID)},
                      registrations={KEY_ID: [(7, 1, AUTHOR), (7, 0, hijacker)]})  # same block, earlier log

    async def body(checker: ContractAccessChecker) -> None:
        for requester in (hijacker, OTHER):
            decision = await checker.decide(requester, KEY_ID, AUTHOR)
            assert not decision.allowed
            assert decision.reason == (f"the DID was first registered by 0x{hijacker.hex()}, "
                                       f"not by the key's author 0x{AUTHOR.hex()}")
        assert (await checker.decide(AUTHOR, KEY_ID, AUTHOR)).allowed

    asyncio.run(_with_chain(chain, body))


# -- the owner-to-be: named by the author at generation (a provider publishing for a publisher) ----

OWNER = bytes.fromhex("55" * 20)


def test_a_grantee_of_a_did_its_owner_to_be_registered_first_is_served() -> None:
    chain = FakeChain(permitted={(OTHER, KEY_ID)}, registrations={KEY_ID: [(5, 0, OWNER)]})

    async def body(checker: ContractAccessChecker) -> None:
        decision = await checker.decide(OTHER, KEY_ID, AUTHOR, OWNER)
        assert decision == Decision(True, "permission on chain; the DID's first registrant is the key's owner-to-be")
        # without the owner-to-be recorded, the same registration serves nobody but the author
        assert not (await checker.decide(OTHER, KEY_ID, AUTHOR)).allowed

    asyncio.run(_with_chain(chain, body))


def test_the_authors_first_registration_still_serves_when_an_owner_to_be_is_named() -> None:
    chain = FakeChain(permitted={(OTHER, KEY_ID)}, registrations={KEY_ID: [(5, 0, AUTHOR)]})

    async def body(checker: ContractAccessChecker) -> None:
        assert (await checker.decide(OTHER, KEY_ID, AUTHOR, OWNER)).allowed

    asyncio.run(_with_chain(chain, body))


def test_the_owner_to_be_is_served_like_the_author_without_asking_the_chain() -> None:
    chain = FakeChain()

    async def body(checker: ContractAccessChecker) -> None:
        decision = await checker.decide(OWNER, KEY_ID, AUTHOR, OWNER)
        assert decision == Decision(True, "the key's owner-to-be, named by its author")
        assert (await checker.decide(AUTHOR, KEY_ID, AUTHOR, OWNER)).allowed  # the author keeps its key
        # an owner-to-be not recorded for this key is nobody special: no permission, refused
        assert not (await checker.decide(OWNER, KEY_ID, AUTHOR)).allowed

    asyncio.run(_with_chain(chain, body))
    assert chain.calls == Counter({"eth_call": 1})


def test_a_first_registrant_who_is_neither_author_nor_owner_to_be_serves_nobody_else() -> None:
    hijacker = bytes.fromhex("66" * 20)  # front-ran the publisher's registration
    chain = FakeChain(permitted={(hijacker, KEY_ID), (OTHER, KEY_ID)},
                      registrations={KEY_ID: [(7, 1, OWNER), (7, 0, hijacker)]})

    async def body(checker: ContractAccessChecker) -> None:
        for requester in (hijacker, OTHER):  # the hijacker, and its grantee
            decision = await checker.decide(requester, KEY_ID, AUTHOR, OWNER)
            assert not decision.allowed
            assert decision.reason == (f"the DID was first registered by 0x{hijacker.hex()}, not by the key's "
                                       f"author 0x{AUTHOR.hex()} or its owner-to-be 0x{OWNER.hex()}")
        assert (await checker.decide(OWNER, KEY_ID, AUTHOR, OWNER)).allowed
        assert (await checker.decide(AUTHOR, KEY_ID, AUTHOR, OWNER)).allowed

    asyncio.run(_with_chain(chain, body))


def test_allow_lists_and_none_ignore_the_owner_to_be() -> None:
    async def scenario() -> list[bool]:
        allow_list = StaticAllowList([ADDRESS])
        return [(await allow_list.decide(OWNER, KEY_ID, AUTHOR, OWNER)).allowed,  # Parity: no rights of its own
                (await allow_list.decide(ADDRESS, KEY_ID, AUTHOR, OWNER)).allowed,
                (await AllowAll().decide(OTHER, KEY_ID, AUTHOR, OWNER)).allowed]

    assert asyncio.run(scenario()) == [False, True, True]


def test_not_registered_yet_is_a_refusal_that_is_not_cached() -> None:
    chain = FakeChain(permitted={(OTHER, KEY_ID)})

    async def body(checker: ContractAccessChecker) -> None:
        assert await checker.decide(OTHER, KEY_ID, AUTHOR) == Decision(False, "the DID is not registered on chain")
        chain.registrations[KEY_ID] = [(3, 0, AUTHOR)]
        assert (await checker.decide(OTHER, KEY_ID, AUTHOR)).allowed

    asyncio.run(_with_chain(chain, body))
    assert chain.calls["eth_getLogs"] == 2


def test_a_named_registry_is_not_looked_up() -> None:
    chain = FakeChain(permitted={(OTHER, KEY_ID)}, registrations={KEY_ID: [(3, 0, AUTHOR)]})

    async def body(checker: ContractAccessChecker) -> None:
        assert (await checker.decide(OTHER, KEY_ID, AUTHOR)).allowed

    asyncio.run(_with_chain(chain, body, did_registry=REGISTRY))
    assert chain.calls == Counter({"eth_call": 1, "eth_getLogs": 1})


@pytest.mark.parametrize(("manager_slot", "registry", "message"), [
    (b"", REGISTRY, "agreementStoreManager .storage slot 104. is the zero address"),
    (MANAGER, b"", "getDIDRegistryAddress.. of 0x7777.* is the zero address"),
    (MANAGER, bytes.fromhex("99" * 20), "no contract code at 0x9999"),
])
def test_a_registry_that_cannot_be_found_is_an_access_check_failure(manager_slot: bytes, registry: bytes,
                                                                     message: str) -> None:
    chain = FakeChain(permitted={(OTHER, KEY_ID)}, manager_slot=manager_slot, registry=registry)

    async def body(checker: ContractAccessChecker) -> None:
        with pytest.raises(AccessCheckFailed, match=message):
            await checker.decide(OTHER, KEY_ID, AUTHOR)

    asyncio.run(_with_chain(chain, body))


def test_a_malformed_chain_answer_is_an_access_check_failure() -> None:
    async def body(checker: ContractAccessChecker) -> None:
        with pytest.raises(AccessCheckFailed, match="not a boolean") as raised:
            await checker.decide(ADDRESS, KEY_ID, AUTHOR)
        assert isinstance(raised.value, InternalError)

    asyncio.run(_with_chain("0x" + "00" * 31 + "02", body))


def test_an_unreachable_chain_is_an_access_check_failure() -> None:
    chain_url = closed_port_url()

    async def scenario() -> None:
        checker = ContractAccessChecker(chain_url, ADDRESS, timeout=1.0)
        try:
            with pytest.raises(AccessCheckFailed, match="chain unreachable"):
                await checker.decide(ADDRESS, KEY_ID, AUTHOR)
        finally:
            await checker.close()

    asyncio.run(scenario())
