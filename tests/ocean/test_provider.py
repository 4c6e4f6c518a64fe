"""The Brizo-shaped provider against a real devnet: anvil with the keeper contracts, 3 key servers
checking ``AccessSecretStoreCondition`` on chain, a file origin on loopback (allowed by the
provider's fetch policy), the events handler settling agreements, and consume refusing or
streaming; the fetch policy's size cap, and its rules in unit tests."""

from __future__ import annotations

import ipaddress
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web
from eth_account import Account
from eth_account.messages import encode_defunct

from ocean_secret_store import devnet
from ocean_secret_store.chain.keeper import KEEPER_CONTRACTS, Keeper
from ocean_secret_store.cli import main
from ocean_secret_store.client.client import SecretStoreClient
from ocean_secret_store.crypto import ecies
from ocean_secret_store.crypto.curve import Point
from ocean_secret_store.exceptions import ConfigError, OceanError
from ocean_secret_store.ocean.config import load_config
from ocean_secret_store.ocean.ddo import DDO, build_ddo
from ocean_secret_store.ocean.did import did_to_id
from ocean_secret_store.ocean.metadata import SqliteMetadataStore
from ocean_secret_store.ocean.provider.app import (
    CONSUME_PATH,
    INFO_PATH,
    ProviderSettings,
    consume_params,
    make_provider_app,
    settings_from_config,
    start_provider,
)
from ocean_secret_store.ocean.provider.backends import ProviderKeyBackend, SecretStoreBackend, encrypted_files_bytes
from ocean_secret_store.ocean.provider.events import EventsHandler
from ocean_secret_store.ocean.provider.fetch import FetchPolicy
from ocean_secret_store.ocean.provider.policy import DEFAULT_MAX_BYTES, Origin, address_kind, parse_origin
from ocean_secret_store.testing.devnets import running_devnet
from ocean_secret_store.testing.servers import ServerThread

pytestmark = pytest.mark.integration

PRICE = 3 * 10**18  # base units
MAX_PASSES = 20  # a bound on handler passes; one pass normally settles an agreement


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devnet.DevnetState]:
    with running_devnet(tmp_path_factory.mktemp("provider-devnet"), 3, acl="contract", session_timeout=2.0) as state:
        yield state


@pytest.fixture(scope="module")
def keeper(net: devnet.DevnetState) -> Keeper:
    keeper = Keeper(net.chain_url, net.contracts)
    # Fund the consumer once: Dispenser.requestTokens stores the block timestamp, so a second
    # request within the same second is estimated cheaper than it later costs when mined.
    keeper.request_tokens(account(net, "consumer"), 10 * PRICE // 10**18)
    return keeper


def account(net: devnet.DevnetState, role: str) -> Any:
    return Account.from_key(net.accounts[role].private_key)


def cluster(net: devnet.DevnetState) -> list[str]:
    return [n.http_url for n in net.nodes]


@pytest.fixture(scope="module")
def files_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("provider-files")
    (directory / "remote.bin").write_bytes(os.urandom(150_000))
    (directory / "local.csv").write_bytes(b"".join(b"row %d,%d\n" % (i, i * i) for i in range(5000)))
    return directory


async def _endless(request: web.Request) -> web.StreamResponse:
    """A body with no Content-Length that never ends (chunked)."""
    response = web.StreamResponse()
    await response.prepare(request)
    for _ in range(10_000):
        await response.write(b"x" * 65536)
    return response


@pytest.fixture(scope="module")
def origin(files_dir: Path) -> Iterator[str]:
    """A static file server on loopback (aiohttp's static route honours Range), and an endless body."""
    app = web.Application()
    app.router.add_static("/files", files_dir)
    app.router.add_get("/endless", _endless)
    with ServerThread() as server:
        yield server.start(app)


@pytest.fixture(scope="module")
def metadata(tmp_path_factory: pytest.TempPathFactory) -> SqliteMetadataStore:
    return SqliteMetadataStore(tmp_path_factory.mktemp("provider-meta") / "ddo.db")


def _provider(net: devnet.DevnetState, keeper: Keeper, metadata: Any, backend: Any, files_dir: Path,
              policy: FetchPolicy) -> Iterator[str]:
    app = make_provider_app(keeper=keeper, metadata=metadata, backend=backend,
                            provider_account=account(net, "provider"), file_root=files_dir, fetch_policy=policy)
    with ServerThread() as server:
        yield server.start(app)


@pytest.fixture(scope="module")
def provider(net: devnet.DevnetState, keeper: Keeper, metadata: Any, files_dir: Path, origin: str) -> Iterator[str]:
    yield from _provider(net, keeper, metadata, SecretStoreBackend(cluster(net)), files_dir,
                         FetchPolicy.allowing([origin]))


@pytest.fixture(scope="module")
def key_provider(net: devnet.DevnetState, keeper: Keeper, metadata: Any, files_dir: Path, origin: str
                 ) -> Iterator[str]:
    yield from _provider(net, keeper, metadata, ProviderKeyBackend(), files_dir, FetchPolicy.allowing([origin]))


@pytest.fixture(scope="module")
def capped_provider(net: devnet.DevnetState, keeper: Keeper, metadata: Any, files_dir: Path, origin: str
                    ) -> Iterator[str]:
    """Proxies at most 100 000 bytes per request (remote.bin has 150 000)."""
    yield from _provider(net, keeper, metadata, SecretStoreBackend(cluster(net)), files_dir,
                         FetchPolicy.allowing([origin], max_bytes=100_000, total_timeout=20.0))


@pytest.fixture(scope="module")
def handler(net: devnet.DevnetState, keeper: Keeper, metadata: Any) -> EventsHandler:
    return EventsHandler(keeper, metadata, account(net, "provider"))


# -- helpers ----------------------------------------------------------------------------------


def publish(
    net: devnet.DevnetState, keeper: Keeper, metadata: Any, provider_url: str, files: list[dict[str, Any]],
    *, encrypt: Callable[[str, str], str] | None = None, timeout: int = 86400,
) -> DDO:
    """The publisher's side: build the DDO (files encrypted), register the DID (provider listed), store the DDO."""
    publisher, provider_account = account(net, "publisher"), account(net, "provider")

    def secret_store_encrypt(did: str, text: str) -> str:
        # The DID exists on chain (provider listed) before its key is generated, as squid did it.
        keeper.register_did(publisher, did_to_id(did), providers=[provider_account.address])
        return SecretStoreClient(cluster(net), publisher).publish_document(did_to_id(did).hex(), text, 1)

    def sign(data: bytes) -> str:
        return "0x" + bytes(Account.sign_message(encode_defunct(primitive=data), publisher.key).signature).hex()

    # a fresh name, so a fresh DID (checksums cover attributes.main) per call
    meta = {"main": {"name": f"provider test asset {os.urandom(8).hex()}", "type": "dataset",
                     "dateCreated": "2020-01-01T00:00:00Z", "author": "tests", "license": "CC0", "files": files}}
    ddo = build_ddo(
        meta, publisher=publisher.address, secret_store_url=cluster(net)[0], provider_url=provider_url + CONSUME_PATH,
        metadata_url="sqlite:", template_id=net.template_id, price=PRICE, timeout=timeout,
        encrypt=encrypt or secret_store_encrypt, sign=sign,
    )
    if encrypt is not None:
        keeper.register_did(publisher, ddo.asset_id, providers=[provider_account.address])
    metadata.publish(ddo)
    return ddo


def order(net: devnet.DevnetState, keeper: Keeper, ddo: DDO, time_outs: tuple[int, int, int] = (0, 0, 0)) -> bytes:
    """The consumer's side: create the access agreement and lock the reward."""
    consumer = account(net, "consumer")
    agreement_id = os.urandom(32)
    keeper.create_access_agreement(
        consumer, agreement_id, ddo.asset_id, consumer=consumer.address, publisher=account(net, "publisher").address,
        provider=account(net, "provider").address, price=ddo.price, time_outs=time_outs,
    )
    keeper.lock_reward(consumer, agreement_id, ddo.price)
    return agreement_id


def settle(handler: EventsHandler, keeper: Keeper, agreement_id: bytes) -> tuple[int, ...]:
    """Run handler passes (bounded) until the agreement's escrow is no longer pending."""
    for _ in range(MAX_PASSES):
        handler.run_once()
        states = keeper.condition_states(agreement_id)
        if states[2] != 1:
            return states
    return keeper.condition_states(agreement_id)


def signed(who: Any, agreement_hex: str) -> str:
    return "0x" + bytes(Account.sign_message(encode_defunct(text=agreement_hex), who.key).signature).hex()


def consume(provider_url: str, agreement_id: bytes, who: Any, index: int, *, signer: Any = None,
            headers: dict[str, str] | None = None) -> requests.Response:
    agreement_hex = "0x" + agreement_id.hex()
    params = {"serviceAgreementId": agreement_hex, "consumerAddress": who.address,
              "signature": signed(signer or who, agreement_hex), "index": str(index)}
    return requests.get(provider_url + CONSUME_PATH, params=params, headers=headers or {}, timeout=30)


def refusal(response: requests.Response) -> str:
    assert response.status_code == 401, response.text
    return str(response.json()["error"])


# -- tests ------------------------------------------------------------------------------------


def test_paid_agreement_is_settled_then_files_stream(
    net: devnet.DevnetState, keeper: Keeper, metadata: Any, provider: str, origin: str, files_dir: Path,
    handler: EventsHandler,
) -> None:
    remote, local = (files_dir / "remote.bin").read_bytes(), (files_dir / "local.csv").read_bytes()
    ddo = publish(net, keeper, metadata, provider, [
        {"url": f"{origin}/files/remote.bin", "contentType": "application/octet-stream"},
        {"url": (files_dir / "local.csv").as_uri(), "contentType": "text/csv"},
        {"url": (files_dir.parent / "outside.txt").as_uri(), "contentType": "text/plain"},
    ])
    (files_dir.parent / "outside.txt").write_text("not the provider's to serve")
    consumer, publisher = account(net, "consumer"), account(net, "publisher")
    agreement_id = order(net, keeper, ddo)

    # paid but not yet granted: the provider refuses and says why
    assert "no access permission" in refusal(consume(provider, agreement_id, consumer, 0))

    before = keeper.token_balance(publisher.address)
    assert settle(handler, keeper, agreement_id) == (2, 2, 2)
    assert keeper.token_balance(publisher.address) - before == ddo.price
    assert "0x" + agreement_id.hex() not in handler.pending
    # a further pass finds nothing to do for it (idempotent)
    assert all(a.action == "settled" for a in handler.run_once() if a.agreement_id == "0x" + agreement_id.hex())

    whole = consume(provider, agreement_id, consumer, 0)
    assert whole.status_code == 200
    assert whole.content == remote
    part = consume(provider, agreement_id, consumer, 0, headers={"Range": "bytes=1000-2999"})
    assert part.status_code == 206
    assert part.content == remote[1000:3000]
    assert part.headers["Content-Range"] == f"bytes 1000-2999/{len(remote)}"

    assert consume(provider, agreement_id, consumer, 1).content == local
    # the package's own helper signs the same message eth-account's personal signature does
    helper = requests.get(provider + CONSUME_PATH, params=consume_params(consumer, agreement_id, 1), timeout=30)
    assert helper.content == local
    tail = consume(provider, agreement_id, consumer, 1, headers={"Range": "bytes=-100"})
    assert tail.status_code == 206
    assert tail.content == local[-100:]

    # a file:// URL outside the provider's file root is never read
    outside = consume(provider, agreement_id, consumer, 2)
    assert outside.status_code == 502
    assert "outside the provider's file root" in outside.json()["error"]

    out_of_range = consume(provider, agreement_id, consumer, 3)
    assert out_of_range.status_code == 400
    assert "out of range" in out_of_range.json()["error"]


def test_refusals(net: devnet.DevnetState, keeper: Keeper, metadata: Any, provider: str, origin: str,
                  handler: EventsHandler) -> None:
    ddo = publish(net, keeper, metadata, provider, [{"url": f"{origin}/files/remote.bin", "contentType": "x/y"}])
    consumer = account(net, "consumer")
    agreement_id = order(net, keeper, ddo)
    assert settle(handler, keeper, agreement_id) == (2, 2, 2)
    stranger = Account.create()

    # an account with no agreement of its own
    assert "does not exist" in refusal(consume(provider, os.urandom(32), stranger, 0))
    # someone else's agreement, correctly signed by the stranger
    assert "is not the consumer" in refusal(consume(provider, agreement_id, stranger, 0))
    # the consumer's address with a signature the consumer did not make
    assert "signature does not recover" in refusal(consume(provider, agreement_id, consumer, 0, signer=stranger))
    # a signature over the raw 32 bytes instead of the id's text is not the agreed message
    raw = "0x" + bytes(Account.sign_message(encode_defunct(primitive=agreement_id), consumer.key).signature).hex()
    params = {"serviceAgreementId": "0x" + agreement_id.hex(), "consumerAddress": consumer.address,
              "signature": raw, "index": "0"}
    assert "signature" in refusal(requests.get(provider + CONSUME_PATH, params=params, timeout=30))
    # malformed parameters are a 400
    params["signature"] = "0x1234"
    assert requests.get(provider + CONSUME_PATH, params=params, timeout=30).status_code == 400
    del params["index"]
    assert requests.get(provider + CONSUME_PATH, params=params, timeout=30).status_code == 400
    # a revoked grant is refused again
    keeper.renounce_permission(account(net, "publisher"), ddo.asset_id, consumer.address)
    assert "no access permission" in refusal(consume(provider, agreement_id, consumer, 0))


def test_expired_agreement_is_refused(net: devnet.DevnetState, keeper: Keeper, metadata: Any, provider: str,
                                      origin: str, handler: EventsHandler) -> None:
    ddo = publish(net, keeper, metadata, provider, [{"url": f"{origin}/files/remote.bin", "contentType": "x/y"}],
                  timeout=60)
    consumer = account(net, "consumer")
    agreement_id = order(net, keeper, ddo)
    assert settle(handler, keeper, agreement_id) == (2, 2, 2)
    assert consume(provider, agreement_id, consumer, 0).status_code == 200
    keeper.w3.provider.make_request("evm_increaseTime", [120])  # type: ignore[arg-type]  # anvil method, not in web3 RPCEndpoint
    keeper.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]  # anvil method, not in web3 RPCEndpoint
    assert "expired" in refusal(consume(provider, agreement_id, consumer, 0))


def test_timed_out_access_is_aborted_and_refunded(net: devnet.DevnetState, keeper: Keeper, metadata: Any,
                                                  provider: str, origin: str, handler: EventsHandler) -> None:
    ddo = publish(net, keeper, metadata, provider, [{"url": f"{origin}/files/remote.bin", "contentType": "x/y"}])
    consumer = account(net, "consumer")
    before = keeper.token_balance(consumer.address)
    # the access condition times out one block after the agreement; the lock is mined after it
    agreement_id = order(net, keeper, ddo, time_outs=(0, 1, 0))
    assert keeper.token_balance(consumer.address) == before - ddo.price  # locked in escrow
    for _ in range(2):
        keeper.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]  # anvil method, not in web3 RPCEndpoint
    assert settle(handler, keeper, agreement_id) == (2, 3, 2)
    # the consumer got the locked price back
    assert keeper.token_balance(consumer.address) == before
    assert "no access permission" in refusal(consume(provider, agreement_id, consumer, 0))


def test_provider_key_backend(net: devnet.DevnetState, keeper: Keeper, metadata: Any, key_provider: str,
                              files_dir: Path, handler: EventsHandler) -> None:
    info = requests.get(key_provider + INFO_PATH, timeout=10).json()
    provider_account = account(net, "provider")
    assert info["providerAddress"] == provider_account.address
    assert info["backend"] == "provider-key"
    assert info["software"] == "ocean-secret-store"
    public = Point.from_bytes(bytes.fromhex(info["providerPublicKey"][2:]))

    def to_provider(did: str, text: str) -> str:  # Ocean V3: ECIES to the provider's published key
        return "0x" + ecies.encrypt(public, text.encode()).hex()

    ddo = publish(net, keeper, metadata, key_provider,
                  [{"url": (files_dir / "local.csv").as_uri(), "contentType": "text/csv"}], encrypt=to_provider)
    consumer = account(net, "consumer")
    agreement_id = order(net, keeper, ddo)
    assert settle(handler, keeper, agreement_id) == (2, 2, 2)
    response = consume(key_provider, agreement_id, consumer, 0)
    assert response.status_code == 200
    assert response.content == (files_dir / "local.csv").read_bytes()


def test_provider_process_settles_with_its_events_task(
    net: devnet.DevnetState, keeper: Keeper, tmp_path: Path, origin: str, files_dir: Path
) -> None:
    """start_provider: the HTTP service and the events handler as a task of one loop, sharing a SQLite store."""
    store_path = tmp_path / "ddo.db"
    settings = ProviderSettings(
        chain_url=net.chain_url, contracts=net.contracts, metadata_location=str(store_path),
        account=account(net, "provider"), backend=SecretStoreBackend(cluster(net)), port=0,
        file_root=str(files_dir), fetch=FetchPolicy.allowing([origin]),
        poll_interval=0.05, from_block=int(keeper.w3.eth.block_number),
    )
    loop = ServerThread(timeout=30)
    running = loop.run(start_provider(settings))
    try:
        ddo = publish(net, keeper, SqliteMetadataStore(store_path), running.url,
                      [{"url": f"{origin}/files/remote.bin", "contentType": "x/y"}])
        agreement_id = order(net, keeper, ddo)
        for _ in range(400):  # bounded wait for the background task (a pass every 0.05 s)
            if keeper.condition_states(agreement_id)[2] != 1:
                break
            time.sleep(0.05)
        assert keeper.condition_states(agreement_id) == (2, 2, 2)
        response = consume(running.url, agreement_id, account(net, "consumer"), 0)
        assert response.content == (files_dir / "remote.bin").read_bytes()
        health = requests.get(running.url + "/health", timeout=10)
        assert health.json() == {"status": "ok"}
    finally:
        loop.run(running.stop())
        loop.close()


def test_provider_command_usage(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_PROVIDER_KEY", raising=False)
    assert main(["provider", "--chain-url", "http://127.0.0.1:1"]) == 2
    assert "--contracts-json" in capsys.readouterr().err
    assert main(["provider", "--key-env", "NO_SUCH_PROVIDER_KEY"]) == 2
    assert main(["provider", "--listen", "nowhere"]) == 2
    assert "--listen" in capsys.readouterr().err


def test_settings_from_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The INI path: B's config, the backend chosen by name through the plugin manager, the key from the env."""
    provider_account = Account.create()
    monkeypatch.setenv("TEST_PROVIDER_KEY", provider_account.key.hex())
    contracts = {name: "0x" + os.urandom(20).hex() for name in KEEPER_CONTRACTS}
    (tmp_path / "contracts.json").write_text(json.dumps({"contracts": contracts}))
    (tmp_path / "provider.ini").write_text(
        "[keeper-contracts]\nkeeper.url = http://127.0.0.1:8545\ncontracts.file = contracts.json\n"
        "[secret-store]\nenabled = false\n"
        "[resources]\nmetadata.store = ddo.db\n"
        "[provider]\nbackend = provider-key\naccount.key_env = TEST_PROVIDER_KEY\n"
        "listen = 127.0.0.1:8123\nfile_root = files\n"
        "allowed_origins = http://127.0.0.1:8000, HTTPS://Files.Example\nmax_file_bytes = 1000\n"
        "fetch_total_timeout = 2.5\nrequire_signature_expiry = yes\n"
    )
    config = load_config(tmp_path / "provider.ini")
    assert config.provider_key_env == "TEST_PROVIDER_KEY"  # the command line unlocks it (cli_tools)
    settings = settings_from_config(config, provider_account, poll_interval=0.1)
    assert settings.backend.name == "provider-key"
    assert settings.poll_interval == 0.1 and settings.events
    assert settings.account.address == provider_account.address
    assert (settings.host, settings.port) == ("127.0.0.1", 8123)
    assert settings.metadata_location == str(tmp_path / "ddo.db")
    assert settings.file_root == str(tmp_path / "files")
    assert settings.fetch.allowed_origins == {Origin("http", "127.0.0.1", 8000), Origin("https", "files.example", 443)}
    assert (settings.fetch.max_bytes, settings.fetch.total_timeout) == (1000, 2.5)
    assert settings.fetch.connect_timeout == 10.0 and settings.fetch.max_redirects == 5  # the defaults
    assert settings.require_signature_expiry and settings.max_signature_lifetime == 3600
    assert load_config(None).provider_max_file_bytes == DEFAULT_MAX_BYTES
    assert {k: v.lower() for k, v in settings.contracts.items()} == contracts


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("allowed_origins", "http://127.0.0.1:8000/files", "no path"),
    ("allowed_origins", "ftp://127.0.0.1", "only http and https"),
    ("allowed_origins", "http://127.0.0.1:99999", "malformed"),
    ("max_file_bytes", "0", "at least 1"),
    ("fetch_connect_timeout", "nan", "seconds > 0"),
    ("fetch_read_timeout", "soon", "number of seconds"),
    ("require_signature_expiry", "maybe", "true or false"),
])
def test_fetch_settings_are_checked_at_load(key: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        load_config(None, {}, overrides={"provider": {key: value}})
    assert caught.value.key == f"provider.{key}"


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fd00:ec2::254", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("100.100.100.200", "non-global"),
    ("8.8.8.8", None), ("2606:4700::1111", None),
])
def test_address_kinds(address: str, kind: str | None) -> None:
    assert address_kind(ipaddress.ip_address(address)) == kind


def test_origins_compare_as_scheme_host_port() -> None:
    assert parse_origin("http://LOCALHOST:80/") == parse_origin("http://localhost") == Origin("http", "localhost", 80)
    assert parse_origin("https://[::1]") == Origin("https", "::1", 443)
    assert str(Origin("https", "::1", 443)) == "https://[::1]:443"
    with pytest.raises(ValueError, match="credentials"):
        parse_origin("http://user:pw@127.0.0.1:8000")


@pytest.mark.parametrize("spelling", ["0xab01", "0Xab01", "ab01", ' {"encryptedDocument": "0xab01"} '])
def test_encrypted_files_spellings(spelling: str) -> None:
    assert encrypted_files_bytes(spelling) == b"\xab\x01"


@pytest.mark.parametrize("bad", ["0xab 01", "0xab0", "0xzz", '{"encryptedDocument": 5}', '{"other": "0x00"}'])
def test_encrypted_files_that_are_not_hex_are_refused(bad: str) -> None:
    # bytes.fromhex, used here before the one hex codec, let whitespace between bytes through.
    with pytest.raises(OceanError, match="encryptedFiles"):
        encrypted_files_bytes(bad)


def test_the_size_cap(net: devnet.DevnetState, keeper: Keeper, metadata: Any, capped_provider: str, origin: str,
                      files_dir: Path, handler: EventsHandler) -> None:
    """An origin announcing more than max_file_bytes is refused before anything is sent; one that sends
    more without announcing it is cut off at the cap (the consumer's connection dropped)."""
    ddo = publish(net, keeper, metadata, capped_provider, [
        {"url": f"{origin}/files/remote.bin", "contentType": "x/y"},
        {"url": f"{origin}/endless", "contentType": "x/y"},
        {"url": (files_dir / "local.csv").as_uri(), "contentType": "text/csv"},
    ])
    consumer = account(net, "consumer")
    agreement_id = order(net, keeper, ddo)
    assert settle(handler, keeper, agreement_id) == (2, 2, 2)
    announced = consume(capped_provider, agreement_id, consumer, 0)
    assert announced.status_code == 502 and announced.json()["rule"] == "size"
    assert "max_file_bytes" in announced.json()["error"]
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        consume(capped_provider, agreement_id, consumer, 1)
    assert time.monotonic() - started < 10  # cut at the cap, not at the time limit
    # a range the origin serves under the cap passes
    part = consume(capped_provider, agreement_id, consumer, 0, headers={"Range": "bytes=0-999"})
    assert part.status_code == 206 and part.content == (files_dir / "remote.bin").read_bytes()[:1000]
    # file:// under the root is not the fetch policy's business
    assert consume(capped_provider, agreement_id, consumer, 2).content == (files_dir / "local.csv").read_bytes()


def test_the_connection_goes_to_the_address_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: a name that resolves to a global address when checked and to loopback after is
    connected to at the checked address; nothing resolves it a second time."""
    import asyncio

    from ocean_secret_store.ocean.provider.fetch import open_origin

    async def secret(request: web.Request) -> web.Response:
        return web.Response(text="a loopback service's secret")

    app = web.Application()
    app.router.add_get("/", secret)
    with ServerThread() as server:
        port = int(server.start(app).rsplit(":", 1)[1])
        lookups: list[str] = []

        async def rebinding(self: Any, host: str, *args: Any, **kwargs: Any) -> list[Any]:
            lookups.append(host)
            address = "8.8.8.8" if len(lookups) == 1 else "127.0.0.1"
            return [(2, 1, 6, "", (address, port))]

        monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", rebinding)

        async def fetch() -> str:
            policy = FetchPolicy(connect_timeout=0.5, total_timeout=2.0)
            try:
                async with open_origin(policy, f"http://rebind.example:{port}/") as response:
                    return await response.text()
            except (OSError, TimeoutError) as exc:  # aiohttp's connection errors are OSErrors
                return type(exc).__name__

        answer = asyncio.run(fetch())
    assert "secret" not in answer
    assert lookups == ["rebind.example"]


def test_both_backends_encrypt_for_publishers_and_provider_key_reads_it_back() -> None:
    """The publish route's encryption (issue 13, slice 3): what the provider-key backend encrypts for
    a publisher, it decrypts with the provider's key and no other."""
    import types

    from ocean_secret_store.exceptions import DecryptionFailed
    from ocean_secret_store.ocean.provider.backends import EncryptingBackend

    provider_account = Account.create()
    backend = ProviderKeyBackend()
    text = json.dumps([{"url": "http://files.example/a.csv", "index": 0}], separators=(",", ":"))
    encrypted = backend.encrypt_files(b"\x01" * 32, text, provider_account, 0)
    assert encrypted.startswith("0x04") and "files.example" not in encrypted
    ddo: Any = types.SimpleNamespace(encrypted_files=encrypted, did="did:op:" + "01" * 32)
    assert backend.file_urls(ddo, provider_account)[0]["url"] == "http://files.example/a.csv"
    with pytest.raises(DecryptionFailed):
        backend.file_urls(ddo, Account.create())
    assert isinstance(backend, EncryptingBackend)
    assert isinstance(SecretStoreBackend("http://127.0.0.1:1"), EncryptingBackend)
