"""PermissionQuery: raw eth_call of checkPermissions against a real chain, a dead one, and a lying one.

The node's adapter (``node.acl.ContractAccessChecker``) is tested in tests/node/test_acl.py."""

from __future__ import annotations

import asyncio
import inspect
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from ocean_secret_store.chain.acl import (
    DID_ATTRIBUTE_REGISTERED_TOPIC,
    GET_DID_REGISTRY_SELECTOR,
    FirstRegistrants,
    JsonRpcReader,
    PermissionQuery,
    PermissionQueryFailed,
    RegistryQueryFailed,
    check_permissions_calldata,
    decode_bool_word,
    first_registration_owner,
)
from ocean_secret_store.exceptions import ChainUnreachable

from .conftest import Chain

ADDRESS = bytes.fromhex("11" * 20)
KEY_ID = bytes.fromhex("22" * 32)


def _raw(address: str) -> bytes:
    return bytes.fromhex(address[2:])


# -- pure parts ------------------------------------------------------------------------------


def test_chain_acl_does_not_import_web3() -> None:
    code = (
        "import sys, ocean_secret_store.chain, ocean_secret_store.chain.acl\n"
        "assert not any(m == 'web3' or m.startswith(('web3.', 'eth_abi')) for m in sys.modules), 'web3 imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_calldata_layout() -> None:
    data = check_permissions_calldata(ADDRESS, KEY_ID)
    assert data == "0xb36a9a7c" + "00" * 12 + "11" * 20 + "22" * 32
    with pytest.raises(PermissionQueryFailed, match="20 bytes"):
        check_permissions_calldata(ADDRESS[:19], KEY_ID)
    with pytest.raises(PermissionQueryFailed, match="32 bytes"):
        check_permissions_calldata(ADDRESS, KEY_ID + b"\x00")


def test_calldata_matches_the_abi_encoder() -> None:
    from eth_abi import encode
    from eth_utils import function_signature_to_4byte_selector

    expected = function_signature_to_4byte_selector("checkPermissions(address,bytes32)") + encode(
        ["address", "bytes32"], ["0x" + ADDRESS.hex(), KEY_ID]
    )
    assert check_permissions_calldata(ADDRESS, KEY_ID) == "0x" + expected.hex()


@pytest.mark.parametrize(
    "result",
    ["0x", "0x" + "00" * 31, "0x" + "00" * 64, "0x" + "00" * 31 + "02", "0x" + "ff" * 32, "0x" + "zz" * 32,
     "00" * 32, 1, None],
)
def test_decode_rejects_anything_but_a_boolean_word(result: Any) -> None:
    with pytest.raises(PermissionQueryFailed):
        decode_bool_word(result)


def test_decode_accepts_zero_and_one() -> None:
    assert decode_bool_word("0x" + "00" * 32) is False
    assert decode_bool_word("0x" + "00" * 31 + "01") is True


# -- a fake chain that answers whatever the test says -----------------------------------------


async def _with_fake_chain(respond: Callable[[dict[str, Any]], web.Response | Awaitable[web.Response]],
                           body: Callable[[PermissionQuery], Awaitable[None]], *, timeout: float = 1.0) -> None:
    async def handler(request: web.Request) -> web.Response:
        answer = respond(await request.json())
        return await answer if inspect.isawaitable(answer) else answer

    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    query = PermissionQuery(f"http://127.0.0.1:{port}", ADDRESS, timeout=timeout)
    try:
        await body(query)
    finally:
        await query.close()
        await runner.cleanup()


def _rpc(payload: dict[str, Any], **fields: Any) -> web.Response:
    return web.json_response({"jsonrpc": "2.0", "id": payload["id"], **fields})


MALFORMED: dict[str, Callable[[dict[str, Any]], web.Response]] = {
    "empty result (no code)": lambda p: _rpc(p, result="0x"),
    "short word": lambda p: _rpc(p, result="0x" + "00" * 31),
    "two words": lambda p: _rpc(p, result="0x" + "00" * 63 + "01"),
    "not a boolean": lambda p: _rpc(p, result="0x" + "00" * 31 + "02"),
    "not hex": lambda p: _rpc(p, result="0x" + "g1" * 32),
    "no 0x": lambda p: _rpc(p, result="00" * 31 + "01"),
    "result missing": _rpc,
    "json-rpc error": lambda p: _rpc(p, error={"code": -32000, "message": "execution reverted"}),
    "http 500": lambda _: web.Response(status=500, text="boom"),
    "not json": lambda _: web.Response(text="<html>hi</html>"),
    "json list": lambda _: web.json_response([1, 2]),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_answers_fail_the_check(case: str) -> None:
    async def body(query: PermissionQuery) -> None:
        with pytest.raises(PermissionQueryFailed, match="checkPermissions at 0x1111"):
            await query.check_permissions(ADDRESS, KEY_ID)

    asyncio.run(_with_fake_chain(MALFORMED[case], body))


def test_positive_answers_are_never_cached() -> None:
    answers = iter(["0x" + "00" * 31 + "01", None, "0x" + "00" * 32])
    seen: list[dict[str, Any]] = []

    def respond(payload: dict[str, Any]) -> web.Response:
        seen.append(payload)
        result = next(answers)
        return _rpc(payload, result=result) if result else _rpc(payload, error={"code": -1, "message": "down"})

    async def body(query: PermissionQuery) -> None:
        assert await query.check_permissions(ADDRESS, KEY_ID) is True
        with pytest.raises(PermissionQueryFailed, match="JSON-RPC error -1: down"):
            await query.check_permissions(ADDRESS, KEY_ID)
        assert await query.check_permissions(ADDRESS, KEY_ID) is False

    asyncio.run(_with_fake_chain(respond, body))
    assert [p["params"][1] for p in seen] == ["latest"] * 3
    assert {p["params"][0]["to"] for p in seen} == {"0x" + ADDRESS.hex()}


def test_slow_chain_times_out() -> None:
    async def respond(payload: dict[str, Any]) -> web.Response:
        await asyncio.sleep(1.0)
        return _rpc(payload, result="0x" + "00" * 31 + "01")

    async def body(query: PermissionQuery) -> None:
        with pytest.raises(ChainUnreachable, match=r"no answer within 0\.2 s") as raised:
            await query.check_permissions(ADDRESS, KEY_ID)
        assert raised.value.url == query.chain_url

    asyncio.run(_with_fake_chain(respond, body, timeout=0.2))


# -- the real chain ----------------------------------------------------------------------------


@pytest.mark.integration
def test_allow_and_deny_match_check_permissions(chain: Chain) -> None:
    k = chain.keeper
    did = os.urandom(32)
    k.register_did(chain.publisher.key, did, providers=[chain.provider.address])
    k.grant_permission(chain.publisher.key, did, chain.spare[0].address)
    people = [chain.publisher, chain.provider, chain.consumer, chain.stranger, chain.spare[0]]
    expected = [k.check_permissions(p.address, did) for p in people]
    assert expected == [True, True, False, False, True]
    contract = _raw(chain.deployment["AccessSecretStoreCondition"])

    async def run() -> list[bool]:
        query = PermissionQuery(chain.anvil.url, contract)
        try:
            return [await query.check_permissions(_raw(p.address), did) for p in people]
        finally:
            await query.close()

    assert asyncio.run(run()) == expected

    # Renounced: the very next check says no (nothing cached).
    async def after_renounce() -> bool:
        query = PermissionQuery(chain.anvil.url, contract)
        try:
            assert await query.check_permissions(_raw(chain.spare[0].address), did) is True
            await asyncio.to_thread(k.renounce_permission, chain.publisher.key, did, chain.spare[0].address)
            return await query.check_permissions(_raw(chain.spare[0].address), did)
        finally:
            await query.close()

    assert asyncio.run(after_renounce()) is False


@pytest.mark.integration
def test_address_without_code_fails(chain: Chain) -> None:
    async def run() -> None:
        query = PermissionQuery(chain.anvil.url, bytes.fromhex("00" * 19 + "42"))
        try:
            with pytest.raises(PermissionQueryFailed, match="no contract code"):
                await query.check_permissions(_raw(chain.publisher.address), KEY_ID)
        finally:
            await query.close()

    asyncio.run(run())


@pytest.mark.integration
def test_stopped_chain_fails_with_clear_message(chain: Chain) -> None:
    from ocean_secret_store.chain.anvil import start_anvil

    second = start_anvil()
    contract = _raw(chain.deployment["AccessSecretStoreCondition"])

    async def run() -> None:
        query = PermissionQuery(second.url, contract)
        try:
            # Alive but without the contract: a clear failure, not a False.
            with pytest.raises(PermissionQueryFailed, match="no contract code"):
                await query.check_permissions(ADDRESS, KEY_ID)
            await asyncio.to_thread(second.stop)
            with pytest.raises(ChainUnreachable, match="chain unreachable") as info:
                await query.check_permissions(ADDRESS, KEY_ID)
            assert f"via {second.url}" in str(info.value)
        finally:
            await query.close()
            second.stop()

    asyncio.run(run())


@pytest.mark.integration
def test_check_latency_micro_measurement(chain: Chain) -> None:
    """Prints (does not assert) raw-eth_call latency next to a web3 contract .call()."""
    did = os.urandom(32)
    chain.keeper.register_did(chain.publisher.key, did)
    contract = _raw(chain.deployment["AccessSecretStoreCondition"])
    rounds = 200

    async def run() -> list[float]:
        query = PermissionQuery(chain.anvil.url, contract)
        try:
            assert await query.check_permissions(_raw(chain.publisher.address), did) is True  # warm the connection
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                await query.check_permissions(_raw(chain.publisher.address), did)
                times.append(time.perf_counter() - start)
            return times
        finally:
            await query.close()

    raw = asyncio.run(run())
    web3_times = []
    for _ in range(rounds // 4):
        start = time.perf_counter()
        chain.keeper.check_permissions(chain.publisher.address, did)
        web3_times.append(time.perf_counter() - start)
    print(
        f"\nACL check latency over {rounds}: raw eth_call median {statistics.median(raw) * 1e3:.2f} ms "
        f"(p90 {sorted(raw)[int(rounds * 0.9)] * 1e3:.2f} ms); "
        f"web3 .call() median {statistics.median(web3_times) * 1e3:.2f} ms"
    )


# -- the first registrant of a DID ---------------------------------------------------------------


def test_registry_constants_match_the_keeper_contracts_abi() -> None:
    from eth_utils import event_abi_to_log_topic, function_signature_to_4byte_selector

    from ocean_secret_store.chain.artifacts import DEVELOPMENT, load_artifact

    events = {e["name"]: e for e in load_artifact("DIDRegistry", DEVELOPMENT).abi if e["type"] == "event"}
    registered = events["DIDAttributeRegistered"]
    assert event_abi_to_log_topic(registered) == DID_ATTRIBUTE_REGISTERED_TOPIC
    # topic1 is the DID and topic2 the registering owner: the first two indexed inputs, in order
    assert [i["name"] for i in registered["inputs"] if i["indexed"]][:2] == ["_did", "_owner"]
    getters = {f["name"] for f in load_artifact("AgreementStoreManager", DEVELOPMENT).abi if f["type"] == "function"}
    assert "getDIDRegistryAddress" in getters
    assert function_signature_to_4byte_selector("getDIDRegistryAddress()") == GET_DID_REGISTRY_SELECTOR


def test_first_registration_owner_takes_the_earliest_log_and_skips_removed_ones() -> None:
    did, early, late, gone = KEY_ID, b"\x01" * 20, b"\x02" * 20, b"\x03" * 20

    def log(block: int, index: int, owner: bytes, removed: bool = False) -> dict[str, Any]:
        return {"blockNumber": hex(block), "logIndex": hex(index), "removed": removed,
                "topics": ["0x" + DID_ATTRIBUTE_REGISTERED_TOPIC.hex(), "0x" + did.hex(),
                           "0x" + owner.rjust(32, b"\0").hex(), "0x" + did.hex()]}

    assert first_registration_owner([], did) is None
    assert first_registration_owner([log(9, 0, late), log(8, 5, early), log(1, 0, gone, removed=True)], did) == early
    with pytest.raises(RegistryQueryFailed, match="another event or DID"):
        first_registration_owner([log(1, 0, early)], bytes(32))
    with pytest.raises(RegistryQueryFailed, match="not a list"):
        first_registration_owner({"result": []}, did)
    with pytest.raises(RegistryQueryFailed, match="upper 12 bytes"):
        first_registration_owner([{**log(1, 0, early), "topics": [*log(1, 0, early)["topics"][:2], "0x" + "ff" * 32,
                                                                  "0x" + did.hex()]}], did)


@pytest.mark.integration
def test_first_registrant_is_found_on_the_registry_the_acl_contract_uses(chain: Chain) -> None:
    """Registered by the publisher; ownership transferred to the consumer, who updates the
    attribute: the first registrant stays the publisher, found with one log query."""
    k = chain.keeper
    did = os.urandom(32)
    contract = _raw(chain.deployment["AccessSecretStoreCondition"])

    async def lookup(registrants: FirstRegistrants) -> bytes | None:
        return await registrants.first_registrant(did)

    async def run() -> None:
        registrants = FirstRegistrants(JsonRpcReader(chain.anvil.url), contract)
        try:
            assert await registrants.registry() == _raw(chain.deployment["DIDRegistry"])
            assert await lookup(registrants) is None  # not registered yet: asked again next time
            await asyncio.to_thread(k.register_did, chain.publisher.key, did)
            await asyncio.to_thread(k.transact, chain.publisher.key, "DIDRegistry", "transferDIDOwnership", did,
                                    chain.consumer.address)
            await asyncio.to_thread(k.register_did, chain.consumer.key, did, value="updated by the new owner")
            assert k.did_owner(did) == chain.consumer.address
            assert await lookup(registrants) == _raw(chain.publisher.address)
            assert await lookup(registrants) == _raw(chain.publisher.address)
            assert registrants.log_queries == 2
        finally:
            await registrants.close()

    asyncio.run(run())


@pytest.mark.integration
def test_a_contract_that_is_not_the_acl_of_0_13_2_fails_the_registry_lookup(chain: Chain) -> None:
    async def run() -> None:
        registrants = FirstRegistrants(JsonRpcReader(chain.anvil.url), _raw(chain.deployment["OceanToken"]))
        try:
            with pytest.raises(RegistryQueryFailed, match="AccessSecretStoreCondition"):
                await registrants.first_registrant(KEY_ID)
        finally:
            await registrants.close()

    asyncio.run(run())


@pytest.mark.integration
def test_first_registrant_cost_micro_measurement(chain: Chain) -> None:
    """Prints (does not assert) the added cost of the author binding per retrieval: one eth_getLogs
    the first time a node sees a DID, a dictionary look-up after."""
    dids = [os.urandom(32) for _ in range(50)]
    for did in dids:
        chain.keeper.register_did(chain.publisher.key, did)
    contract = _raw(chain.deployment["AccessSecretStoreCondition"])

    async def run() -> tuple[list[float], list[float]]:
        registrants = FirstRegistrants(JsonRpcReader(chain.anvil.url), contract)
        try:
            await registrants.registry()  # found once per node, not per retrieval
            first, cached = [], []
            for did in dids:
                start = time.perf_counter()
                await registrants.first_registrant(did)
                first.append(time.perf_counter() - start)
                start = time.perf_counter()
                await registrants.first_registrant(did)
                cached.append(time.perf_counter() - start)
            return first, cached
        finally:
            await registrants.close()

    first, cached = asyncio.run(run())
    print(f"\nfirst registrant over {len(dids)} DIDs ({chain.anvil.url}, block "
          f"{chain.keeper.w3.eth.block_number}): eth_getLogs median {statistics.median(first) * 1e3:.2f} ms "
          f"(max {max(first) * 1e3:.2f} ms); cached median {statistics.median(cached) * 1e6:.1f} µs")
