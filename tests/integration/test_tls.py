"""TLS on a real devnet (issue 11, build item 2): ``devnet up --tls`` makes a local CA, and every
client-facing server (the key servers' HTTP API, the JSON-RPC face, the provider, the file server)
speaks https; a client with the CA works, one without is refused by certificate verification,
and plain HTTP to a TLS port gets nothing. The pipeline works end to end through ``ocean.ini``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from eth_account import Account

from ocean_secret_store import devnet
from ocean_secret_store.client.client import SecretStoreClient
from ocean_secret_store.exceptions import NodeUnreachable
from ocean_secret_store.ocean.host import Ocean
from ocean_secret_store.testing.devnets import running_devnet

pytestmark = pytest.mark.integration

PRICE = 5


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devnet.DevnetState]:
    with running_devnet(tmp_path_factory.mktemp("tls"), 3, acl="none", tls=True) as state:
        yield state


def test_every_client_facing_url_is_https_and_the_state_names_the_ca(net: devnet.DevnetState) -> None:
    assert net.tls_ca is not None and Path(net.tls_ca).is_file()
    saved = json.loads(net.path.read_text())
    assert saved["tls_ca"] == net.tls_ca
    urls = [node.http_url for node in net.nodes] + [net.rpc_url, net.provider_url, net.files_url,
                                                   net.secret_store_url]
    assert all(str(url).startswith("https://127.0.0.1:") for url in urls), urls
    ini = Path(str(net.ocean_config)).read_text()
    assert f"ca_file = {net.tls_ca}" in ini and "http://127.0.0.1" not in ini.replace(net.chain_url, "")


def test_the_sdk_round_trips_a_document_over_https_with_the_ca(net: devnet.DevnetState) -> None:
    account = Account.from_key(net.accounts["publisher"].private_key)
    urls = [node.http_url for node in net.nodes]
    key_id = os.urandom(32).hex()
    with SecretStoreClient(urls, account, verify=net.tls_ca) as client:
        encrypted = client.publish_document(key_id, "over tls", threshold=1)
    with SecretStoreClient(list(reversed(urls)), account, verify=str(net.tls_ca)) as client:
        assert client.decrypt_document(key_id, encrypted) == "over tls"


def test_a_client_without_the_ca_is_refused_by_certificate_verification(net: devnet.DevnetState) -> None:
    account = Account.from_key(net.accounts["consumer"].private_key)
    with SecretStoreClient([node.http_url for node in net.nodes], account) as client, \
            pytest.raises(NodeUnreachable, match="CERTIFICATE_VERIFY_FAILED") as caught:
        client.generate_server_key(key_id := os.urandom(32), 1)
    # the message names the node and the reason, never the request path with its signature
    assert urlsplit(net.nodes[0].http_url).netloc in str(caught.value) and key_id.hex() not in str(caught.value)
    with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        requests.get(str(net.provider_url) + "/api/v1/brizo", timeout=5)


def test_plain_http_to_a_tls_port_gets_no_answer(net: devnet.DevnetState) -> None:
    for url in (net.nodes[0].http_url, net.rpc_url, net.provider_url, net.files_url):
        plain = str(url).replace("https://", "http://", 1)
        with pytest.raises(requests.ConnectionError):
            requests.get(plain + "/health", timeout=5)
    # and the node is fine afterwards
    health = requests.get(net.nodes[0].http_url + "/health", verify=net.tls_ca, timeout=5).json()
    assert health["status"] == "ok" and health["connected_peers"] == 2


def test_the_rpc_face_and_the_provider_answer_over_https(net: devnet.DevnetState) -> None:
    answer = requests.post(str(net.rpc_url), json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
                           verify=net.tls_ca, timeout=10).json()
    assert int(answer["result"], 16) == net.chain_id
    info = requests.get(str(net.provider_url) + "/api/v1/brizo", verify=net.tls_ca, timeout=10).json()
    assert info["providerAddress"].lower() == net.provider_address.lower()
    status = devnet.status(net.state_dir)  # the devnet's own probes trust its CA
    assert status["healthy"] and all(node["connected_peers"] == 2 for node in status["nodes"])


def test_publish_order_consume_over_tls(net: devnet.DevnetState, tmp_path: Path) -> None:
    """The provider fetches from the https file server and decrypts through the https key servers,
    both with the CA; the consumer downloads from the https provider; all from ``ocean.ini``."""
    data = os.urandom(50_000)
    (Path(str(net.files_dir)) / "tls.bin").write_bytes(data)
    ocean = Ocean(str(net.ocean_config))
    publisher, consumer, provider = (Account.from_key(net.accounts[r].private_key)
                                     for r in ("publisher", "consumer", "provider"))
    metadata = {"main": {"type": "dataset", "name": "tls " + os.urandom(4).hex(), "author": "a", "license": "CC0",
                         "dateCreated": "2026-11-23T00:00:00Z", "price": str(PRICE),
                         "files": [{"url": f"{net.files_url}/tls.bin", "name": "tls.bin",
                                    "contentType": "application/octet-stream"}]}}
    ddo = ocean.assets.create(metadata, publisher, providers=[provider.address])
    assert ddo.access_service["serviceEndpoint"].startswith("https://")
    ocean.keeper.request_tokens(consumer, PRICE)
    agreement = ocean.assets.order(ddo.did, 2, consumer)
    folder = ocean.assets.consume(agreement, ddo.did, 2, consumer, tmp_path / "provider")
    assert (folder / "tls.bin").read_bytes() == data


def test_the_cli_takes_the_ca_from_the_devnet(net: devnet.DevnetState, tmp_path: Path) -> None:
    env = {**os.environ, "TLS_TEST_KEY": net.accounts["publisher"].private_key}
    cli = [sys.executable, "-m", "ocean_secret_store.cli", "--json"]
    key_id = os.urandom(32).hex()
    (tmp_path / "plain.txt").write_text("cli over tls")
    subprocess.run([*cli, "encrypt", "--key-id", key_id, "--devnet", str(net.state_dir), "--threshold", "1",
                    "--in", str(tmp_path / "plain.txt"), "--out", str(tmp_path / "enc"), "--key-env", "TLS_TEST_KEY"],
                   env=env, check=True, capture_output=True, timeout=60)
    subprocess.run([*cli, "decrypt", "--key-id", key_id, "--devnet", str(net.state_dir),
                    "--in", str(tmp_path / "enc"), "--out", str(tmp_path / "dec"), "--key-env", "TLS_TEST_KEY"],
                   env=env, check=True, capture_output=True, timeout=60)
    assert (tmp_path / "dec").read_text() == "cli over tls"


def test_every_service_serves_its_metrics_over_https(net: devnet.DevnetState) -> None:
    """The one real-process check of issue 17's metrics: each key server, the RPC face and the
    provider answer ``GET /metrics`` over https (the CA checked), parsed by prometheus-client's own
    parser; an SDK round trip moves the key servers' session counters by exactly its operations."""
    from ocean_secret_store.metrics import PREFIX
    from ocean_secret_store.testing.metrics import scrape

    urls = [node.http_url for node in net.nodes]
    before = [scrape(url, verify=net.tls_ca) for url in urls]
    account = Account.from_key(net.accounts["consumer"].private_key)
    key_id = os.urandom(32).hex()
    with SecretStoreClient(urls, account, verify=net.tls_ca) as client:
        encrypted = client.publish_document(key_id, "metrics over tls", threshold=1)
        assert client.decrypt_document(key_id, encrypted) == "metrics over tls"
    after = [scrape(url, verify=net.tls_ca) for url in urls]
    sessions = f"{PREFIX}_sessions_total"
    moved = {kind: sum(a.delta(b, sessions, kind=kind, outcome="ok") for a, b in zip(after, before, strict=True))
             for kind in ("generate_server_key", "store_document_key", "retrieve_document_key_shadow")}
    assert moved == {"generate_server_key": 1, "store_document_key": 1, "retrieve_document_key_shadow": 1}
    for samples in after:
        assert samples.total(f"{PREFIX}_ready") == 1
        assert samples.total(f"{PREFIX}_peers", state="connected") == len(urls) - 1
        assert key_id[:16] not in samples.text
    rpc = scrape(str(net.rpc_url), verify=net.tls_ca)
    provider = scrape(str(net.provider_url), verify=net.tls_ca)
    assert f"{PREFIX}_rpc_calls" in rpc.families
    assert f"{PREFIX}_provider_consumes" in provider.families
    assert rpc.total("process_resident_memory_bytes") > 0 and provider.total("process_resident_memory_bytes") > 0
