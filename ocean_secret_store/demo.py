"""The end-to-end demo (``ocean-secret-store demo``): the embedded devnet and Ocean's publish ->
order -> consume, each step timed, then t+1 key servers enough and t refused."""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from eth_account import Account

from . import devnet
from .chain.keeper import HashSigner, to_address
from .client.client import SecretStoreClient
from .crypto.hashes import address_of, checksum_address
from .exceptions import KeyServerError, OceanError
from .ocean.ddo import ACCESS_INDEX
from .ocean.host import Ocean

T = TypeVar("T")


class _Steps:
    """Numbered steps with their timing, and a spinner while a step runs on a terminal."""

    def __init__(self, say: Callable[[str], None], interactive: bool) -> None:
        self.say, self.interactive, self.number = say, interactive, 0

    def run(self, title: str, fn: Callable[[], T]) -> T:
        self.number += 1
        done = threading.Event()
        if self.interactive:
            def spin() -> None:
                for frame in itertools.cycle("|/-\\"):
                    if done.wait(0.1):
                        break
                    sys.stderr.write(f"\r   {frame} {title} ...")
                    sys.stderr.flush()
                sys.stderr.write("\r" + " " * (len(title) + 10) + "\r")

            spinner = threading.Thread(target=spin, daemon=True)
            spinner.start()
        started = time.perf_counter()
        try:
            result = fn()
        finally:
            done.set()
            if self.interactive:
                spinner.join()
        self.say(f"{self.number:>2}. {title} [{(time.perf_counter() - started) * 1e3:.0f} ms]")
        return result


def run_demo(nodes: int = 5, say: Callable[[str], None] = print, interactive: bool | None = None) -> bool:
    """The main job: the embedded devnet and Ocean's publish -> order -> consume, end to end.

    anvil with keeper-contracts 0.13.2, N key server processes checking
    AccessSecretStoreCondition on chain, the JSON-RPC face and the Brizo-shaped provider with its
    events handler. A publisher publishes an asset whose file the devnet's file server serves
    (``files_url``, the one loopback origin its provider fetches from; the URL encrypted under a
    threshold key tied to the DID); a consumer is refused, orders, and consumes through the
    provider and by decrypting itself; token balances before and after; then t+1 live key
    servers suffice and t do not. The devnet is stopped at the end, also on
    Ctrl-C or failure.
    """
    interactive = sys.stderr.isatty() if interactive is None else interactive
    steps = _Steps(say, interactive)
    work = Path(tempfile.mkdtemp(prefix="oss-demo-"))
    state_dir = work / "devnet"
    dataset = b"station,temperature\n" + b"".join(f"s{i},{i % 40}\n".encode() for i in range(20000))
    ok = False
    try:
        state = steps.run(f"devnet up: anvil + keeper-contracts 0.13.2, {nodes} key servers, RPC face, file "
                          "server, Aquarius, provider", lambda: devnet.up(state_dir, nodes))
        say(f"    key servers {', '.join(node.http_url for node in state.nodes)}")
        say(f"    chain {state.chain_url}, provider {state.provider_url}, files {state.files_url}, "
            f"Aquarius {state.aquarius_url}, state in {state_dir}")
        if state.files_dir is None or state.files_url is None:
            raise OceanError(f"the devnet in {state_dir} has no file server")
        (Path(state.files_dir) / "weather.csv").write_bytes(dataset)
        ok = _Story(steps, state, work, dataset).run(f"{state.files_url}/weather.csv")
    except KeyboardInterrupt:
        say("interrupted")
    finally:
        if (state_dir / devnet.STATE_FILE).exists():
            devnet.down(state_dir)
            say("devnet stopped")
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"logs kept in {work}")
    say("demo " + ("succeeded" if ok else "FAILED"))
    return ok


class _Story:
    """The demo's steps on a running devnet: publish, refuse, order, consume, pay; then the threshold."""

    PRICE = 10 * 10**18

    def __init__(self, steps: _Steps, state: devnet.DevnetState, work: Path, dataset: bytes) -> None:
        self.steps, self.say, self.state, self.work, self.dataset = steps, steps.say, state, work, dataset
        if state.ocean_config is None:
            raise OceanError(f"the devnet in {state.state_dir} wrote no ocean.ini")
        self.ocean = Ocean(state.ocean_config)
        self.roles = {role: Account.from_key(key.private_key) for role, key in state.accounts.items()}

    def run(self, file_url: str) -> bool:
        steps, say, ocean, keeper = self.steps, self.say, self.ocean, self.ocean.keeper
        publisher, consumer, provider = self.roles["publisher"], self.roles["consumer"], self.roles["provider"]
        metadata = {"main": {"type": "dataset", "name": "Weather stations", "author": "Demo Met Office",
                             "license": "CC-BY", "dateCreated": "2026-11-23T00:00:00Z", "price": str(self.PRICE),
                             "files": [{"url": file_url, "contentType": "text/csv", "name": "weather.csv",
                                        "contentLength": str(len(self.dataset))}]}}
        ddo = steps.run(f"publisher {publisher.address[:10]}.. publishes: DDO, file URL encrypted under a "
                        f"t = {ocean.config.threshold} threshold key for the DID, DID registered on chain",
                        lambda: ocean.assets.create(metadata, publisher, providers=[provider.address]))
        did, encrypted = ddo.did, ddo.encrypted_files or ""
        say(f"    {did}; the published DDO holds no URL, only attributes.encryptedFiles")
        steps.run("anyone can verify the DDO: its DID is the hash of its checksums", lambda: ocean.assets.resolve(did))

        def refused_directly() -> str:
            try:
                ocean.secret_store.decrypt_document(did, encrypted, consumer)
            except KeyServerError as exc:
                return f"{type(exc).__name__}: {exc}"
            raise OceanError("the consumer decrypted without permission")

        reason = steps.run("consumer asks the key servers before ordering", refused_directly)
        say(f"    refused by the key servers ({reason})")
        steps.run("consumer gets 20 OCEAN from the dispenser", lambda: keeper.request_tokens(consumer, 20))
        before = self._balances()
        agreement = steps.run("consumer orders: agreement created, 10 OCEAN locked",
                              lambda: ocean.assets.order(did, ACCESS_INDEX, consumer))
        steps.run("provider's events handler fulfils access on chain",
                  lambda: ocean.assets.wait_for_access(did, consumer))
        folder = steps.run("consumer downloads through the provider (agreement, signature, permission checked)",
                           lambda: ocean.assets.consume(agreement, did, ACCESS_INDEX, consumer,
                                                        self.work / "via-provider"))
        via_provider = (folder / "weather.csv").read_bytes() == self.dataset
        direct = steps.run("consumer decrypts the file list itself through shadows and downloads",
                           lambda: ocean.assets.consume(agreement, did, ACCESS_INDEX, consumer, self.work / "direct",
                                                        direct=True))
        via_shadow = (direct / "weather.csv").read_bytes() == self.dataset
        say(f"    {len(self.dataset)} bytes both ways: provider {'OK' if via_provider else 'MISMATCH'}, "
            f"direct {'OK' if via_shadow else 'MISMATCH'}")
        states = steps.run("provider releases the escrow to the publisher", lambda: self._settled(agreement))
        after = self._balances()
        for role in ("publisher", "consumer"):
            say(f"    {role:<9} {before[role] / 10**18:6.1f} OCEAN -> {after[role] / 10**18:6.1f} OCEAN")
        balances_ok = (after["publisher"] - before["publisher"] == self.PRICE
                       and before["consumer"] - after["consumer"] == self.PRICE)
        return (via_provider and via_shadow and states == (2, 2, 2) and balances_ok
                and self._cluster_signs() and self._threshold(did, encrypted))

    def _cluster_signs(self) -> bool:
        """A threshold key's address receives OCEAN; a transaction the key servers sign moves it."""
        steps, say, keeper = self.steps, self.say, self.ocean.keeper
        publisher, consumer = self.roles["publisher"], self.roles["consumer"]
        t = min(self.ocean.config.threshold, (len(self.state.nodes) - 1) // 2)  # ECDSA needs 2t+1 <= N
        key_id = os.urandom(32)
        with SecretStoreClient([node.http_url for node in self.state.nodes], publisher) as client:
            public = steps.run(f"publisher makes a t = {t} server key: an Ethereum account nobody holds the key of",
                               lambda: client.generate_server_key(key_id, t))
            signer = HashSigner(to_address(checksum_address(address_of(public))),
                                lambda digest: client.sign_ecdsa(key_id, digest, server_key=public))
            say(f"    its address {signer.address}")
            steps.run("publisher sends it 4 OCEAN and 0.1 ETH for gas", lambda: self._fund(signer.address))
            before = keeper.token_balance(consumer.address)
            receipt = steps.run(f"the key servers sign a transfer of 3 OCEAN to the consumer ({2 * t + 1} of them "
                                "per signature, threshold ECDSA); the chain mines it",
                                lambda: keeper.transfer_tokens(signer, consumer.address, 3 * 10**18))
        moved = keeper.token_balance(consumer.address) - before
        left = keeper.token_balance(signer.address)
        tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()
        say(f"    tx {tx_hash} from {receipt['from']}: consumer +{moved / 10**18:.1f} OCEAN, "
            f"the cluster's account keeps {left / 10**18:.1f} OCEAN")
        return receipt["from"] == signer.address and moved == 3 * 10**18 and left == 10**18

    def _fund(self, address: str) -> None:
        publisher, keeper = self.roles["publisher"], self.ocean.keeper
        keeper.transfer_tokens(publisher, address, 4 * 10**18)
        w3 = keeper.w3
        tx = {"to": address, "value": 10**17, "gas": 21000, "gasPrice": w3.eth.gas_price,
              "nonce": w3.eth.get_transaction_count(publisher.address, "pending"), "chainId": keeper.chain_id}
        w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(
            publisher.sign_transaction(tx).raw_transaction), timeout=30)

    def _balances(self) -> dict[str, int]:
        return {role: self.ocean.keeper.token_balance(self.roles[role].address) for role in ("publisher", "consumer")}

    def _settled(self, agreement: str) -> tuple[int, ...]:
        for _ in range(100):
            states = self.ocean.keeper.condition_states(bytes.fromhex(agreement[2:]))
            if states == (2, 2, 2):
                break
            time.sleep(0.1)
        return states

    def _threshold(self, did: str, encrypted: str) -> bool:
        """Stop key servers down to t+1 (still served), then to t (refused)."""
        consumer, secret_store = self.roles["consumer"], self.ocean.secret_store
        nodes_total = len(self.state.nodes)
        t = self.ocean.config.threshold
        for index in range(t + 1, nodes_total):
            devnet.stop_node(self.state.state_dir, index)
        survived = self.steps.run(
            f"stopped {nodes_total - t - 1} key servers: t+1 = {t + 1} live ones still serve",
            lambda: bool(secret_store.decrypt_document(did, encrypted, consumer)))
        devnet.stop_node(self.state.state_dir, t)

        def with_t() -> str:
            try:
                secret_store.decrypt_document(did, encrypted, consumer)
            except KeyServerError as exc:
                return f"{type(exc).__name__}"
            return "decrypted (bug!)"

        refusal = self.steps.run(f"stopped one more: t = {t} key servers cannot", with_t)
        self.say(f"    refused: {refusal}")
        return survived and refusal == "ConsensusTemporaryUnreachable"

