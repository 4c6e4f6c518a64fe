"""The pipeline host in squid-py's shape: ``Ocean(config)`` with ``ocean.assets`` (create, resolve,
order, consume) and ``ocean.secret_store`` (encrypt_document, decrypt_document).

squid-py cannot be installed on Python 3.11 with a current web3 (ocean.md §6), so this is the
host Ocean users know, rebuilt on our own parts: the keeper wrappers for the chain, a metadata
store for DDOs, and encryptors found through pluggy (entry-point group ``ocean``) and chosen by
config. With no encryptor available, publishing is refused: file URLs are never published in
clear.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy
import requests

from ..exceptions import OceanError, SecretStoreError
from ..protocol.hexcodec import parse_hex, to_hex
from .config import OceanConfig, load_config
from .ddo import DDO, build_ddo, files_from_plaintext, verify_ddo
from .did import did_to_id
from .encryptors import Encryptor
from .metadata import MetadataStore, open_metadata_store
from .plugins import get_plugin_manager, select_encryptor

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from ..chain.keeper import Keeper

#: Default access timeout of an agreement (seconds) when the metadata does not give one.
DEFAULT_TIMEOUT = 3600


def _personal_sign(account: LocalAccount, data: bytes) -> str:
    """EIP-191 ``personal_sign`` of ``data`` (the DDO proof, as squid-py signed it)."""
    # eth-account costs ~0.4 s at import and resolving or decrypting never signs; a caller holding a
    # LocalAccount has imported it already, so here it is free.
    from eth_account.messages import encode_defunct  # noqa: PLC0415 -- keeps eth-account off the resolve path

    return to_hex(bytes(account.sign_message(encode_defunct(primitive=data)).signature))


class Ocean:
    """``Ocean(config)``: ``config`` is an :class:`OceanConfig` or the path of a squid-py style INI file."""

    def __init__(
        self, config: OceanConfig | str | Path | None = None, *, plugin_manager: pluggy.PluginManager | None = None
    ) -> None:
        self.config = config if isinstance(config, OceanConfig) else load_config(config)
        self._keeper: Keeper | None = None
        self._metadata: MetadataStore | None = None
        self.plugins = plugin_manager or get_plugin_manager()
        self.assets = OceanAssets(self)
        self.secret_store = OceanSecretStore(self)

    @property
    def keeper(self) -> Keeper:
        if self._keeper is None:
            # web3 costs ~0.6 s at import; encrypting, decrypting and resolving never need the chain.
            from ..chain.keeper import Keeper  # noqa: PLC0415 -- web3 is imported only when the chain is used

            if not self.config.contracts:
                raise OceanError("no keeper contract addresses configured ([keeper-contracts] contracts.file)")
            self._keeper = Keeper(self.config.keeper_url, self.config.contracts)
        return self._keeper

    @property
    def metadata(self) -> MetadataStore:
        if self._metadata is None:
            if not self.config.metadata_store:
                raise OceanError("no metadata store configured ([resources] metadata.store)")
            ca_file = self.config.ca_file
            self._metadata = open_metadata_store(self.config.metadata_store,
                                                 verify=ca_file if ca_file is not None else True)
        return self._metadata

    def encryptor(self) -> Encryptor:
        """The encryptor ``config.encryptor`` names, among those the plugins offer."""
        return select_encryptor(self.plugins, self.config)


class OceanSecretStore:
    """``ocean.secret_store``: encrypt and decrypt documents tied to a DID with the configured encryptor."""

    def __init__(self, ocean: Ocean) -> None:
        self._ocean = ocean

    def encrypt_document(self, did: str, content: str, threshold: int | None = None,
                         account: LocalAccount | None = None) -> str:
        """Encrypt ``content`` under ``did``'s key; returns the ``0x`` hex stored as ``encryptedFiles``.

        ``account`` is the publisher (squid-py used the config's parity account: pass it here).
        """
        if account is None:
            raise OceanError("encrypt_document needs the publisher's account")
        return self._ocean.encryptor().encrypt(did, content, account, self._threshold(threshold))

    def decrypt_document(self, did: str, encrypted: str, account: LocalAccount) -> str:
        return self._ocean.encryptor().decrypt(did, encrypted, account)

    def decrypt_many(self, documents: Sequence[tuple[str, str]],
                     account: LocalAccount) -> list[str | SecretStoreError]:
        """Each ``(did, encrypted)``'s plaintext or its error, in order: a consumer fetching many
        assets at once. The secret-store encryptor fetches the document keys in batches
        (``POST /shadow_batch``); an encryptor without ``decrypt_many`` decrypts one by one."""
        encryptor = self._ocean.encryptor()
        many = getattr(encryptor, "decrypt_many", None)
        if many is not None:
            return list(many(documents, account))
        out: list[str | SecretStoreError] = []
        for did, encrypted in documents:
            try:
                out.append(encryptor.decrypt(did, encrypted, account))
            except SecretStoreError as exc:
                out.append(exc)
        return out

    def _threshold(self, threshold: int | None) -> int:
        return self._ocean.config.threshold if threshold is None else threshold


class OceanAssets:
    """``ocean.assets``: publish, resolve, order and consume assets."""

    def __init__(self, ocean: Ocean) -> None:
        self._ocean = ocean

    # -- publish ------------------------------------------------------------------------------

    def create(self, metadata: dict[str, Any], publisher_account: LocalAccount, providers: list[str] | None = None,
               threshold: int | None = None) -> DDO:
        """Publish: build the DDO, encrypt the file list under the DID, register the DID, store the DDO."""
        ocean = self._ocean
        config = ocean.config
        encryptor = ocean.encryptor()  # refuses before anything else when none is enabled
        t = config.threshold if threshold is None else threshold
        if providers is None:
            providers = [config.provider_address] if config.provider_address else []
        main = metadata.get("main", {})
        price = int(main.get("price", 0))
        timeout = int(main.get("timeout", DEFAULT_TIMEOUT))
        provider_url = (config.provider_url or "").rstrip("/") + "/api/v1/brizo/services/consume"
        metadata_url = config.metadata_store or ""
        ddo = build_ddo(
            metadata,
            publisher=publisher_account.address,
            secret_store_url=config.secret_store_url or "",
            provider_url=provider_url,
            metadata_url=metadata_url,
            template_id=to_hex(ocean.keeper.template_id),
            price=price,
            timeout=timeout,
            encrypt=lambda did, text: encryptor.encrypt(did, text, publisher_account, t),
            sign=lambda data: _personal_sign(publisher_account, data),
        )
        ocean.keeper.register_did(publisher_account, did_to_id(ddo.did), providers=providers, value=metadata_url)
        ocean.metadata.publish(ddo)
        return ddo

    def resolve(self, did: str) -> DDO:
        """The DDO of ``did``, verified: its checksums and DID must match its content."""
        ddo = self._ocean.metadata.resolve(did)
        verify_ddo(ddo)
        return ddo

    # -- order ------------------------------------------------------------------------------------

    def order(self, did: str, service_index: int, consumer_account: LocalAccount) -> str:
        """Create an access agreement for ``did`` and lock its price; returns the agreement id (``0x`` hex)."""
        ocean = self._ocean
        keeper = ocean.keeper
        ddo = self.resolve(did)
        service = ddo.service(service_index)
        if service.get("type") != "access":
            raise OceanError(f"service {service_index} of {did} is a {service.get('type')!r} service, not access")
        price = ddo.price
        balance = keeper.token_balance(consumer_account.address)
        if balance < price:
            raise OceanError(f"the consumer holds {balance} OCEAN base units but the asset costs {price}")
        provider = self._provider_of(ddo)
        agreement_id = os.urandom(32)
        keeper.create_access_agreement(
            consumer_account, agreement_id, did_to_id(did), consumer=consumer_account.address,
            publisher=ddo.publisher, provider=provider, price=price,
        )
        keeper.lock_reward(consumer_account, agreement_id, price)
        return to_hex(agreement_id)

    def _provider_of(self, ddo: DDO) -> str:
        """The first DID provider on chain (squid-py's choice), else the publisher."""
        register = self._ocean.keeper.call("DIDRegistry", "getDIDRegister", did_to_id(ddo.did))
        providers = list(register[4]) if len(register) > 4 else []
        return providers[0] if providers else ddo.publisher

    # -- consume ------------------------------------------------------------------------------------

    def wait_for_access(self, did: str, consumer_account: LocalAccount, timeout: float = 30.0) -> None:
        """Wait until the provider's events handler granted ``consumer`` access to ``did`` on chain."""
        deadline = time.monotonic() + timeout
        while not self._ocean.keeper.check_permissions(consumer_account.address, did_to_id(did)):
            if time.monotonic() > deadline:
                raise OceanError(f"access to {did} was not granted within {timeout:.0f} s")
            time.sleep(0.2)

    def consume(self, agreement_id: str, did: str, service_index: int, consumer_account: LocalAccount,
                destination: str | Path, index: int | None = None, *, direct: bool = False,
                wait: float = 30.0) -> Path:
        """Download the asset's files into ``destination/<asset id>/``; returns that folder.

        Through the provider (default): the provider checks the agreement and serves the file.
        ``direct=True``: the consumer decrypts ``encryptedFiles`` itself (its own account must be
        permitted on chain) and fetches the URLs.
        """
        # The provider app pulls in aiohttp and its server; only consuming signs its request parameters.
        from .provider.app import consume_params  # noqa: PLC0415 -- aiohttp is not a publisher's dependency

        agreement = parse_hex(agreement_id, "agreement_id", 32, error=OceanError)
        ddo = self.resolve(did)
        self.wait_for_access(did, consumer_account, wait)
        folder = Path(destination) / did_to_id(did).hex()
        folder.mkdir(parents=True, exist_ok=True)
        indexes = [index] if index is not None else [f["index"] for f in ddo.files]
        if direct:
            plain = self._ocean.secret_store.decrypt_document(did, ddo.encrypted_files or "", consumer_account)
            files = {f["index"]: f for f in files_from_plaintext(plain)}
            for i in indexes:
                self._download(files[i]["url"], folder / _file_name(files[i], i), {}, self._verify())
        else:
            endpoint = ddo.access_service["serviceEndpoint"]
            for i in indexes:
                params = consume_params(consumer_account, agreement, i)
                entry = next((f for f in ddo.files if f.get("index") == i), {})
                self._download(endpoint, folder / _file_name(entry, i), params, self._verify())
        return folder

    def _verify(self) -> bool | str:
        """What requests checks an https download against: ``[resources] ca_file``, else the system CAs."""
        ca_file = self._ocean.config.ca_file
        return ca_file if ca_file is not None else True

    @staticmethod
    def _download(url: str, target: Path, params: dict[str, str], verify: bool | str = True) -> None:
        if url.startswith("file://"):
            target.write_bytes(Path(url[len("file://"):]).read_bytes())
            return
        with requests.get(url, params=params, stream=True, timeout=60, verify=verify) as response:
            if response.status_code != 200:
                try:
                    reason = response.json().get("error", response.text)
                except ValueError:
                    reason = response.text
                raise OceanError(f"download refused ({response.status_code}): {reason}")
            with open(target, "wb") as out:
                out.writelines(response.iter_content(1 << 20))


def _file_name(entry: dict[str, Any], index: int) -> str:
    name = entry.get("name") or f"file{index}"
    return Path(str(name)).name or f"file{index}"
