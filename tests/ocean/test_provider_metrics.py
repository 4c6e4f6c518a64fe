"""The provider's ``GET /metrics``: requests by route pattern (never the query, which carries the consume
signature) and status, consumes and publishes by outcome. Only the refusals that come before any chain
read are driven here, so the app runs without a chain (the keeper and metadata store are never asked)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, cast

import pytest
import requests
from eth_account import Account
from eth_account.messages import encode_defunct

from ocean_secret_store.chain.keeper import Keeper
from ocean_secret_store.metrics import METRICS_PATH, PREFIX, UNMATCHED
from ocean_secret_store.ocean.metadata import MetadataStore
from ocean_secret_store.ocean.provider.app import CONSUME_PATH, INFO_PATH, PUBLISH_PATH, make_provider_app
from ocean_secret_store.testing.metrics import scrape
from ocean_secret_store.testing.servers import ServerThread

CONSUMER = Account.from_key("0x" + "3c" * 32)
STRANGER = Account.from_key("0x" + "5a" * 32)
PROVIDER = Account.from_key("0x" + "7e" * 32)
AGREEMENT = "0x" + os.urandom(32).hex()
HTTP = f"{PREFIX}_http_requests_total"


class _Backend:
    name = "stand-in"

    def file_urls(self, ddo: Any, provider_account: Any) -> list[dict[str, Any]]:
        raise AssertionError("no consume in this test gets as far as the files")


class _Unreachable:
    """The keeper and the metadata store: every refusal driven here comes before either is asked."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"{name} was used")


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    app = make_provider_app(keeper=cast("Keeper", _Unreachable()), metadata=cast("MetadataStore", _Unreachable()),
                            backend=_Backend(), provider_account=PROVIDER)
    with ServerThread() as thread:
        yield thread.start(app)


def consume_query(signer: Any) -> dict[str, str]:
    signature = signer.sign_message(encode_defunct(text=AGREEMENT)).signature.hex()
    return {"serviceAgreementId": AGREEMENT, "consumerAddress": CONSUMER.address,
            "signature": "0x" + signature.removeprefix("0x"), "index": "0"}


def test_requests_consumes_and_publishes_are_counted(provider: str) -> None:
    before = scrape(provider)
    assert requests.get(provider + "/health", timeout=10).status_code == 200
    assert requests.get(provider + INFO_PATH, timeout=10).json()["backend"] == "stand-in"
    assert requests.get(provider + CONSUME_PATH, params={"index": "0"}, timeout=10).status_code == 400
    query = consume_query(STRANGER)  # signed by someone else than consumerAddress
    for _ in range(2):
        assert requests.get(provider + CONSUME_PATH, params=query, timeout=10).status_code == 401
    assert requests.post(provider + PUBLISH_PATH, data=b"not json", timeout=10).status_code == 400
    publish = {"documentId": AGREEMENT, "publisherAddress": CONSUMER.address, "document": '[{"url": "x"}]',
               "signature": "0x" + STRANGER.sign_message(encode_defunct(text=AGREEMENT)).signature.hex()
               .removeprefix("0x")}
    assert requests.post(provider + PUBLISH_PATH, json=publish, timeout=10).status_code == 401
    assert requests.get(provider + "/api/v1/brizo/nothing", params=query, timeout=10).status_code == 404
    after = scrape(provider)

    consumes, publishes = f"{PREFIX}_provider_consumes_total", f"{PREFIX}_provider_publishes_total"
    assert after.delta(before, consumes, outcome="bad_request") == 1
    assert after.delta(before, consumes, outcome="refused") == 2
    assert after.delta(before, consumes) == 3
    assert after.delta(before, publishes, outcome="bad_request") == 1
    assert after.delta(before, publishes, outcome="bad_signature") == 1
    assert after.delta(before, publishes) == 2
    assert after.delta(before, HTTP, route="/health", method="GET", status="200") == 1
    assert after.delta(before, HTTP, route=INFO_PATH, method="GET", status="200") == 1
    assert after.delta(before, HTTP, route=CONSUME_PATH, method="GET", status="400") == 1
    assert after.delta(before, HTTP, route=CONSUME_PATH, method="GET", status="401") == 2
    assert after.delta(before, HTTP, route=PUBLISH_PATH, method="POST", status="400") == 1
    assert after.delta(before, HTTP, route=PUBLISH_PATH, method="POST", status="401") == 1
    assert after.delta(before, HTTP, route=UNMATCHED, method="GET", status="404") == 1
    assert after.delta(before, HTTP, route=METRICS_PATH) == 1
    assert after.delta(before, f"{PREFIX}_http_request_duration_seconds_count", route=CONSUME_PATH) == 3
    assert after.label_values("route", PREFIX) <= {"/health", INFO_PATH, CONSUME_PATH, PUBLISH_PATH, METRICS_PATH,
                                                   UNMATCHED}
    # Nothing of the queries or bodies: no agreement id, address or signature.
    text = after.text.lower()
    for value in (AGREEMENT, CONSUMER.address, STRANGER.address, query["signature"], "nothing"):
        assert value.lower()[2:18] not in text
