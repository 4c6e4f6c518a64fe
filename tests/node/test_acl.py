"""The node's access checkers: the contract checker turns every chain failure into AccessCheckFailed
(a node error, a refusal for the core), and the wiring picks the checker the config names."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from ocean_secret_store.exceptions import ConfigError, InternalError
from ocean_secret_store.node.acl import AccessCheckFailed, AllowAll, ContractAccessChecker, StaticAllowList
from ocean_secret_store.node.app import build_access_checker
from ocean_secret_store.node.config import AclConfig
from ocean_secret_store.testing.servers import closed_port_url

ADDRESS = bytes.fromhex("11" * 20)
OTHER = bytes.fromhex("33" * 20)
KEY_ID = bytes.fromhex("22" * 32)
TRUE_WORD = "0x" + "00" * 31 + "01"


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
        return [await checker.check(ADDRESS, b"\x00" * 32), await checker.check(OTHER, KEY_ID),
                await checker.check(OTHER, b"\x00" * 32)]

    assert asyncio.run(scenario()) == [True, True, False]


async def _with_chain(result: object, body: Callable[[ContractAccessChecker], Awaitable[None]]) -> None:
    async def handler(request: web.Request) -> web.Response:
        payload = await request.json()
        return web.json_response({"jsonrpc": "2.0", "id": payload["id"], "result": result})

    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    checker = ContractAccessChecker(f"http://127.0.0.1:{runner.addresses[0][1]}", ADDRESS)
    try:
        await body(checker)
    finally:
        await checker.close()
        await runner.cleanup()


def test_contract_checker_answers_the_contracts_boolean() -> None:
    async def body(checker: ContractAccessChecker) -> None:
        assert await checker.check(ADDRESS, KEY_ID) is True

    asyncio.run(_with_chain(TRUE_WORD, body))


def test_a_malformed_chain_answer_is_an_access_check_failure() -> None:
    async def body(checker: ContractAccessChecker) -> None:
        with pytest.raises(AccessCheckFailed, match="not a boolean") as raised:
            await checker.check(ADDRESS, KEY_ID)
        assert isinstance(raised.value, InternalError)

    asyncio.run(_with_chain("0x" + "00" * 31 + "02", body))


def test_an_unreachable_chain_is_an_access_check_failure() -> None:
    chain_url = closed_port_url()

    async def scenario() -> None:
        checker = ContractAccessChecker(chain_url, ADDRESS, timeout=1.0)
        try:
            with pytest.raises(AccessCheckFailed, match="chain unreachable"):
                await checker.check(ADDRESS, KEY_ID)
        finally:
            await checker.close()

    asyncio.run(scenario())
