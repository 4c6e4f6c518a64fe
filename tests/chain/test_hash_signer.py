"""Transactions from an account whose key is elsewhere (the key servers' threshold ECDSA): the raw
transaction a HashSigner produces is the one eth-account signs with the key, and the chain mines it."""

from __future__ import annotations

from typing import Any

import pytest
from coincurve import PrivateKey
from eth_account import Account

from ocean_secret_store.chain.keeper import HashSigner, sign_transaction, to_address
from ocean_secret_store.exceptions import ChainError

from .conftest import Chain

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
TXS: list[dict[str, Any]] = [
    {"to": "0x3535353535353535353535353535353535353535", "value": 10**18, "gas": 21000, "gasPrice": 10**9,
     "nonce": 9, "chainId": 1, "data": b""},
    {"to": "0x3535353535353535353535353535353535353535", "value": 7, "gas": 50000, "maxFeePerGas": 3 * 10**9,
     "maxPriorityFeePerGas": 10**9, "nonce": 0, "chainId": 8996, "data": b"\x01\x02", "type": 2},
]


def local_signer(key: bytes) -> HashSigner:
    """What the key servers do, with the key here: RFC 6979 over the raw hash, r || s || recovery id."""
    private = PrivateKey(key)
    return HashSigner(to_address(Account.from_key(key).address), lambda h: private.sign_recoverable(h, hasher=None))


@pytest.mark.parametrize("tx", TXS, ids=["legacy-eip155", "dynamic-fee"])
def test_the_raw_transaction_is_the_one_eth_account_signs(tx: dict[str, Any]) -> None:
    assert sign_transaction(local_signer(KEY), tx) == bytes(Account.sign_transaction(tx, KEY).raw_transaction)


def test_a_signature_by_another_key_is_refused() -> None:
    impostor = HashSigner(to_address(Account.from_key(KEY).address),
                          lambda h: PrivateKey(b"\x07" * 32).sign_recoverable(h, hasher=None))
    with pytest.raises(ChainError, match="does not recover"):
        sign_transaction(impostor, TXS[0])
    with pytest.raises(ChainError, match="65-byte"):
        sign_transaction(HashSigner(impostor.address, lambda h: b"\x00" * 64), TXS[0])


@pytest.mark.integration
def test_the_chain_mines_a_token_transfer_from_a_hash_signer(chain: Chain) -> None:
    keeper, w3 = chain.keeper, chain.keeper.w3
    key = PrivateKey().secret
    signer = local_signer(key)
    keeper.request_tokens(chain.publisher.key, 5)
    keeper.transfer_tokens(chain.publisher.key, signer.address, 5 * 10**18)
    funding = Account.from_key(chain.publisher.key)
    w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction(
        {"from": funding.address, "to": signer.address, "value": 10**17}))
    before = keeper.token_balance(chain.consumer.address)
    receipt = keeper.transfer_tokens(signer, chain.consumer.address, 3 * 10**18)
    assert receipt["status"] == 1 and receipt["from"] == signer.address
    assert keeper.token_balance(chain.consumer.address) - before == 3 * 10**18
    assert keeper.token_balance(signer.address) == 2 * 10**18
