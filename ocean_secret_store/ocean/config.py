"""The Ocean pipeline's configuration: a squid-py style INI file plus environment overrides (OceanConfig).

The file keeps squid-py's sections and keys (ocean.md §1.2) and adds ``[secret-store]`` and
``[provider]``::

    [keeper-contracts]
    keeper.url = http://localhost:8545          ; env KEEPER_URL
    keeper.network = development
    contracts.file = devnet.json                ; JSON {"contracts": {name: address}} or {name: address}
    contract.DIDRegistry = 0x...                ; one address, overrides contracts.file
    secret_store.url = http://localhost:12001   ; env SECRET_STORE_URL
    parity.url = http://localhost:8545          ; env PARITY_URL
    parity.address = 0x...                      ; env PARITY_ADDRESS
    parity.password = ...                       ; env PARITY_PASSWORD

    [secret-store]
    enabled = true                              ; env OCEAN_SS_ENABLED
    threshold = 2                               ; env OCEAN_SS_THRESHOLD
    cluster_urls = http://127.0.0.1:12001, http://127.0.0.1:12002, http://127.0.0.1:12003
                                                ; env OCEAN_SS_CLUSTER_URLS (commas or whitespace)
    cluster_size = 3                            ; only if cluster_urls lists fewer nodes than there are
    encryptor = secret-store                    ; env OCEAN_SS_ENCRYPTOR

    [resources]
    metadata.store = ocean.db                   ; SQLite path or http(s) URL of an Aquarius
    aquarius.url = http://localhost:5000        ; squid-py's; used when metadata.store is absent
    provider.url = http://localhost:8030        ; squid-py's brizo.url is used when absent
    provider.address = 0x...                    ; env PROVIDER_ADDRESS
    downloads.path = downloads
    ca_file = tls/ca.pem                        ; PEM CA bundle for https key servers and provider
                                                ; (devnet --tls: its tls_ca); default: system CAs

    [provider]
    backend = secret-store
    account.key_env = PROVIDER_KEY              ; the variable holding the provider's private key
    account.keystore = provider.json            ; or a v3 keystore ...
    account.password_env = PROVIDER_PASSWORD    ; ... and the variable holding its password
    listen = 127.0.0.1:8030
    provider.public_key = 0x<128 hex>           ; for the provider-key encryptor (publisher side)
    file_root = files                           ; the only directory file:// URLs may point into
    allowed_origins = http://127.0.0.1:8000     ; origins fetched even on loopback/private addresses
                                                ; (exact scheme://host:port, commas or whitespace)
    max_file_bytes = 4294967296                 ; bytes proxied from an origin per request
    fetch_connect_timeout = 10                  ; seconds to resolve and connect to an origin
    fetch_read_timeout = 60                     ; seconds an origin may stay silent while sending
    fetch_total_timeout = 3600                  ; seconds for one request to an origin
    max_redirects = 5                           ; redirects followed, each checked
    require_signature_expiry = false            ; refuse squid-py's replayable consume signature
    max_signature_lifetime = 3600               ; how far ahead a consume signatureExpiry may be
    tls_cert = tls/provider.pem                 ; serve https: PEM certificate chain ...
    tls_key = tls/provider.key                  ; ... and its PEM key (both or neither)

Precedence, strongest first:

1. ``overrides`` (the command line's options, ``{section: {key: value}}``), then environment
   variables, each replacing the one key it names (squid-py's names: KEEPER_URL,
   SECRET_STORE_URL, PARITY_URL, PARITY_ADDRESS, PARITY_PASSWORD, PROVIDER_ADDRESS; ours:
   OCEAN_SS_THRESHOLD, OCEAN_SS_ENCRYPTOR, OCEAN_SS_ENABLED, OCEAN_SS_CLUSTER_URLS). A variable
   that is set, even to the empty string, wins over the file (as in squid-py);
2. the INI file;
3. the defaults of :class:`OceanConfig`.

Then, between keys: the cluster is ``[secret-store] cluster_urls`` if given, else the single
``secret_store.url``; ``secret_store_url`` (advertised in the DDO's authorization service) is
``secret_store.url`` if given, else the first cluster URL; the metadata store is
``metadata.store``, else ``aquarius.url``; the provider URL is ``provider.url``, else
``brizo.url``; explicit ``contract.<Name>`` keys override ``contracts.file``.

``parity.url``/``parity.address``/``parity.password`` are kept for the legacy path: a Parity-era
program that signs through a node's JSON-RPC ``secretstore_*`` methods with a keystore account
(our JSON-RPC face, ``devnet`` ``rpc_url``) selects that account by address and password. The
Python pipeline itself signs with eth-account ``LocalAccount`` objects and does not use them.

The provider's fetch policy (what the ``[provider]`` fetch keys mean, and the refusals) is in
:mod:`.provider.fetch`; the signature forms in :mod:`.provider.app`.

Relative paths (``contracts.file``, ``metadata.store``, ``downloads.path``, ``ca_file``,
``account.keystore``, ``file_root``, ``tls_cert``, ``tls_key``) are taken relative to the INI file's directory.

Validation happens at load: a malformed value raises :class:`~..exceptions.ConfigError` whose
``key`` is the setting's dotted name (``"secret-store.threshold"``) and whose message names
the key and where the value came from (file or environment variable). A threshold that is not
below the cluster size (``cluster_size``, else the number of cluster URLs) is refused while the
Secret Store is enabled.

:data:`SETTINGS` lists every key the reader takes, with its type, default and meaning;
docs/configuration.md is rendered from it (``tools/gen_config_doc.py``), and a test checks it
against the keys :class:`_Reader` reads and the defaults :class:`OceanConfig` gets.
"""

from __future__ import annotations

import configparser
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Final

from ..crypto.curve import Point
from ..exceptions import ConfigError, CryptoError
from ..protocol.addresses import parse_host_port
from ..protocol.hexcodec import parse_hex
from .provider.policy import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_REDIRECTS,
    DEFAULT_MAX_SIGNATURE_LIFETIME,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_TOTAL_TIMEOUT,
    parse_origin,
)

__all__ = ["ENVIRONMENT", "SETTINGS", "IniSetting", "OceanConfig", "load_config"]

KEEPER: Final = "keeper-contracts"
SECRET_STORE: Final = "secret-store"
RESOURCES: Final = "resources"
PROVIDER: Final = "provider"

#: Environment variable -> (section, key) it overrides.
ENVIRONMENT: Final[Mapping[str, tuple[str, str]]] = {
    "KEEPER_URL": (KEEPER, "keeper.url"),
    "SECRET_STORE_URL": (KEEPER, "secret_store.url"),
    "PARITY_URL": (KEEPER, "parity.url"),
    "PARITY_ADDRESS": (KEEPER, "parity.address"),
    "PARITY_PASSWORD": (KEEPER, "parity.password"),
    "PROVIDER_ADDRESS": (RESOURCES, "provider.address"),
    "OCEAN_SS_THRESHOLD": (SECRET_STORE, "threshold"),
    "OCEAN_SS_ENCRYPTOR": (SECRET_STORE, "encryptor"),
    "OCEAN_SS_ENABLED": (SECRET_STORE, "enabled"),
    "OCEAN_SS_CLUSTER_URLS": (SECRET_STORE, "cluster_urls"),
}

_ADDRESS: Final = re.compile(r"0x[0-9a-fA-F]{40}")
_CONTRACT_PREFIX: Final = "contract."


def _dotted(section: str, key: str) -> str:
    return f"{section}.{key}"


@dataclass(frozen=True)
class OceanConfig:
    """Everything the Ocean host, its plugins and the provider read from the configuration.

    Build it with :func:`load_config` (INI file + environment) or :meth:`from_mapping`; direct
    construction is validated the same way (the derived cluster fields are filled in).
    """

    #: ``[keeper-contracts] keeper.url``: the chain's JSON-RPC URL.
    keeper_url: str = "http://localhost:8545"
    #: ``[keeper-contracts] keeper.network``: the keeper-contracts network name.
    keeper_network: str = "development"
    #: Contract name -> address (``contracts.file`` and ``contract.<Name>`` keys).
    contracts: dict[str, str] = field(default_factory=dict, hash=False)
    #: ``[keeper-contracts] secret_store.url``: the cluster URL advertised in DDOs.
    secret_store_url: str | None = None
    parity_url: str | None = None
    parity_address: str | None = None
    parity_password: str | None = field(default=None, repr=False)
    #: ``[secret-store] enabled``: whether the Secret Store encryptor and backend are offered.
    secret_store_enabled: bool = True
    #: ``[secret-store] threshold``: server keys need ``threshold + 1`` nodes to decrypt.
    threshold: int = 0
    #: ``[secret-store] cluster_urls``, else ``(secret_store_url,)``.
    cluster_urls: tuple[str, ...] = ()
    #: ``[secret-store] cluster_size``: the number of key servers when more than the URLs listed.
    cluster_size: int | None = None
    #: ``[secret-store] encryptor``: the name of the encryptor used to publish.
    encryptor: str = "secret-store"
    #: ``[resources] metadata.store`` (or ``aquarius.url``): SQLite path or Aquarius URL.
    metadata_store: str | None = None
    #: ``[resources] provider.url`` (or ``brizo.url``): the provider's base URL.
    provider_url: str | None = None
    #: ``[resources] provider.address``: the provider listed on the DIDs published.
    provider_address: str | None = None
    downloads_path: str | None = None
    #: ``[resources] ca_file``: the PEM CA bundle that https key servers and the provider are checked
    #: against (the SDK's clients use it instead of the system CAs; the provider's fetch adds it to them).
    ca_file: str | None = None
    #: ``[provider] backend``: the name of the provider's access backend.
    provider_backend: str = "secret-store"
    provider_keystore: str | None = None
    provider_password_env: str | None = None
    provider_key_env: str | None = None
    #: ``[provider] listen``: ``host:port`` the provider serves on.
    provider_listen: str = "127.0.0.1:8030"
    #: ``[provider] provider.public_key``: ``0x`` + 128 hex, for the provider-key encryptor.
    provider_public_key: str | None = None
    provider_file_root: str | None = None
    #: ``[provider] allowed_origins``: ``scheme://host:port`` origins fetched whatever they resolve to.
    provider_allowed_origins: tuple[str, ...] = ()
    #: ``[provider] max_file_bytes``: bytes proxied from an origin for one consume request.
    provider_max_file_bytes: int = DEFAULT_MAX_BYTES
    provider_fetch_connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    provider_fetch_read_timeout: float = DEFAULT_READ_TIMEOUT
    provider_fetch_total_timeout: float = DEFAULT_TOTAL_TIMEOUT
    provider_max_redirects: int = DEFAULT_MAX_REDIRECTS
    #: ``[provider] require_signature_expiry``: refuse consume signatures without ``signatureExpiry``.
    provider_require_signature_expiry: bool = False
    provider_max_signature_lifetime: int = DEFAULT_MAX_SIGNATURE_LIFETIME
    #: ``[provider] tls_cert`` and ``tls_key``: the provider serves https with them (both or neither).
    provider_tls_cert: str | None = None
    provider_tls_key: str | None = None
    #: Where the values came from (the INI path), for messages only.
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        urls = tuple(self.cluster_urls)
        if not urls and self.secret_store_url:
            urls = (self.secret_store_url,)
        object.__setattr__(self, "cluster_urls", urls)
        if not self.secret_store_url and urls:
            object.__setattr__(self, "secret_store_url", urls[0])
        if self.cluster_size is not None and (isinstance(self.cluster_size, bool) or self.cluster_size < 1):
            raise ConfigError(f"[secret-store] cluster_size must be at least 1, got {self.cluster_size}",
                              "secret-store.cluster_size")
        if self.cluster_size is not None and self.cluster_size < len(urls):
            raise ConfigError(
                f"[secret-store] cluster_size {self.cluster_size} is smaller than the "
                f"{len(urls)} cluster URLs",
                "secret-store.cluster_size",
            )
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int) or self.threshold < 0:
            raise ConfigError(f"[secret-store] threshold must be an integer >= 0, got {self.threshold!r}",
                              "secret-store.threshold")
        if (self.provider_tls_cert is None) != (self.provider_tls_key is None):
            missing = "tls_cert" if self.provider_tls_cert is None else "tls_key"
            raise ConfigError(f"[provider] {missing} is missing: https needs both tls_cert and tls_key",
                              f"provider.{missing}")
        size = self.known_cluster_size
        if self.secret_store_enabled and size is not None and self.threshold >= size:
            raise ConfigError(
                f"[secret-store] threshold {self.threshold} needs {self.threshold + 1} key servers but the "
                f"cluster has {size} ({'cluster_size' if self.cluster_size else 'number of cluster URLs'}); "
                f"use at most {size - 1}, or list every node in [secret-store] cluster_urls",
                "secret-store.threshold",
            )

    @property
    def known_cluster_size(self) -> int | None:
        """``cluster_size`` if given, else the number of cluster URLs; ``None`` without any URL."""
        return self.cluster_size if self.cluster_size is not None else (len(self.cluster_urls) or None)

    @classmethod
    def from_mapping(
        cls,
        sections: Mapping[str, Mapping[str, object]],
        environ: Mapping[str, str] | None = None,
        *,
        base_dir: str | Path | None = None,
        source: str | None = None,
        overrides: Mapping[str, Mapping[str, str]] | None = None,
    ) -> OceanConfig:
        """Read ``{section: {key: value}}`` (an INI file's shape), ``environ`` and ``overrides``.

        ``environ`` defaults to none: a mapping is taken as given (:func:`load_config` passes
        ``os.environ``). ``base_dir`` anchors relative paths of the file (default: the current
        directory). ``overrides`` (same shape as ``sections``: command-line options) win over both;
        their paths should be absolute, as they are not relative to the file.
        """
        anchor = Path(base_dir) if base_dir is not None else None
        return _Reader(sections, environ or {}, anchor, source, overrides or {}).config()



# -- the schema: every key the reader takes ------------------------------------------------------


@dataclass(frozen=True)
class IniSetting:
    """One key of the Ocean INI file. ``attribute`` names the :class:`OceanConfig` field it fills,
    whose default is the key's (None for a key that only stands in for another); ``default_text``
    says the default in words where it is not that field's value."""

    section: str
    key: str
    type: str
    meaning: str
    attribute: str | None = None
    default_text: str | None = None

    @property
    def default(self) -> object:
        """The :class:`OceanConfig` field's default (None: none, or not one value)."""
        if self.attribute is None:
            return None
        spec = next(f for f in fields(OceanConfig) if f.name == self.attribute)
        return None if spec.default is MISSING else spec.default

    @property
    def environment(self) -> str | None:
        """The environment variable that overrides this key, if any (:data:`ENVIRONMENT`)."""
        return next((name for name, where in ENVIRONMENT.items() if where == (self.section, self.key)), None)


#: Every key the reader takes, in the order docs/configuration.md lists them.
SETTINGS: Final[tuple[IniSetting, ...]] = (
    IniSetting(KEEPER, "keeper.url", "http(s):// URL", "The chain's JSON-RPC endpoint.", "keeper_url"),
    IniSetting(KEEPER, "keeper.network", "name", "The keeper-contracts network name (squid-py's).",
               "keeper_network"),
    IniSetting(KEEPER, "contracts.file", "path", "A JSON file of contract addresses, `{name: address}` or "
               '`{"contracts": {name: address}}` (a devnet.json does).', default_text="none"),
    IniSetting(KEEPER, "contract.<Name>", "address", "One contract's address (`contract.DIDRegistry = 0x...`); "
               "wins over `contracts.file`.", default_text="none"),
    IniSetting(KEEPER, "secret_store.url", "http(s):// URL", "The key server URL advertised in the DDOs' "
               "authorization service, and the cluster when `[secret-store] cluster_urls` is absent.",
               "secret_store_url", default_text="the first of `cluster_urls`"),
    IniSetting(KEEPER, "parity.url", "http(s):// URL", "Kept for Parity-era programs that sign through a node's "
               "`secretstore_*` JSON-RPC methods (our JSON-RPC face); the Python pipeline does not use it.",
               "parity_url"),
    IniSetting(KEEPER, "parity.address", "address", "Their keystore account, as `parity.url`.", "parity_address"),
    IniSetting(KEEPER, "parity.password", "text", "Its password, as `parity.url`.", "parity_password"),
    IniSetting(SECRET_STORE, "enabled", "boolean", "Offer the Secret Store encryptor and access backend.",
               "secret_store_enabled"),
    IniSetting(SECRET_STORE, "threshold", "integer >= 0", "The threshold of the keys published: t+1 key servers "
               "are needed to decrypt. Below the cluster size.", "threshold"),
    IniSetting(SECRET_STORE, "cluster_urls", "URLs (commas or whitespace)", "The key servers' HTTP URLs, "
               "equivalent entry points.", "cluster_urls", default_text="`secret_store.url` alone"),
    IniSetting(SECRET_STORE, "cluster_size", "integer >= 1", "The number of key servers, when `cluster_urls` "
               "lists fewer (the threshold is checked against it).", "cluster_size",
               default_text="the number of cluster URLs"),
    IniSetting(SECRET_STORE, "encryptor", "plugin name", "The encryptor that publishes (docs/hooks.md): "
               "`secret-store`, `provider-key`, a plugin's, or `none` (publishing refused).", "encryptor"),
    IniSetting(RESOURCES, "metadata.store", "path or http(s):// URL", "The metadata store: a SQLite file, or an "
               "Aquarius URL.", "metadata_store", default_text="`aquarius.url`"),
    IniSetting(RESOURCES, "aquarius.url", "http(s):// URL", "squid-py's Aquarius URL; the metadata store when "
               "`metadata.store` is absent.", default_text="none"),
    IniSetting(RESOURCES, "provider.url", "http(s):// URL", "The provider's base URL (put into the DDOs' access "
               "service).", "provider_url", default_text="`brizo.url`"),
    IniSetting(RESOURCES, "brizo.url", "http(s):// URL", "squid-py's name for `provider.url`, used when that is "
               "absent.", default_text="none"),
    IniSetting(RESOURCES, "provider.address", "address", "The provider listed on the DIDs published (and so "
               "allowed to decrypt their files).", "provider_address"),
    IniSetting(RESOURCES, "downloads.path", "path", "squid-py's download folder; read and checked, but this "
               "package's consumers name their folder themselves (`consume --dest`, `Ocean.assets.consume`).",
               "downloads_path"),
    IniSetting(RESOURCES, "ca_file", "path", "The PEM CA bundle https key servers, the provider and the metadata "
               "service are checked against (a devnet made with `--tls`: its `tls_ca`).", "ca_file",
               default_text="the system CAs"),
    IniSetting(PROVIDER, "backend", "plugin name", "The provider's access backend (docs/hooks.md): "
               "`secret-store`, `provider-key` or a plugin's.", "provider_backend"),
    IniSetting(PROVIDER, "account.key_env", "environment variable name", "The variable holding the provider "
               "account's private key (hex).", "provider_key_env"),
    IniSetting(PROVIDER, "account.keystore", "path", "Or the provider account as a v3 keystore ...",
               "provider_keystore"),
    IniSetting(PROVIDER, "account.password_env", "environment variable name", "... and the variable holding its "
               "password.", "provider_password_env"),
    IniSetting(PROVIDER, "listen", '"host:port"', "Where the provider serves (port 0: any free port).",
               "provider_listen"),
    IniSetting(PROVIDER, "provider.public_key", '"0x" + 128 hex', "The provider's public key, for the "
               "`provider-key` encryptor on the publisher's side.", "provider_public_key"),
    IniSetting(PROVIDER, "file_root", "path", "The only directory `file://` file URLs may point into.",
               "provider_file_root", default_text="none (`file://` refused)"),
    IniSetting(PROVIDER, "allowed_origins", "origins (commas or whitespace)", "Exact `scheme://host:port` origins "
               "fetched even on loopback, private or link-local addresses (docs/provider.md).",
               "provider_allowed_origins", default_text="none"),
    IniSetting(PROVIDER, "max_file_bytes", "integer >= 1", "Bytes proxied from an origin for one request.",
               "provider_max_file_bytes"),
    IniSetting(PROVIDER, "fetch_connect_timeout", "seconds > 0", "To resolve and connect to an origin.",
               "provider_fetch_connect_timeout"),
    IniSetting(PROVIDER, "fetch_read_timeout", "seconds > 0", "An origin may stay silent this long while sending.",
               "provider_fetch_read_timeout"),
    IniSetting(PROVIDER, "fetch_total_timeout", "seconds > 0", "One request to an origin, in all.",
               "provider_fetch_total_timeout"),
    IniSetting(PROVIDER, "max_redirects", "integer >= 0", "Redirects followed, each target checked.",
               "provider_max_redirects"),
    IniSetting(PROVIDER, "require_signature_expiry", "boolean", "Refuse consume requests without "
               "`signatureExpiry` (squid-py's replayable signature, and the unsigned url= form).",
               "provider_require_signature_expiry"),
    IniSetting(PROVIDER, "max_signature_lifetime", "integer >= 1", "Seconds ahead a consume `signatureExpiry` may "
               "be.", "provider_max_signature_lifetime"),
    IniSetting(PROVIDER, "tls_cert", "path", "Serve https: the PEM certificate chain; with `tls_key`, both or "
               "neither.", "provider_tls_cert", default_text="none (plain http)"),
    IniSetting(PROVIDER, "tls_key", "path", "The PEM key of `tls_cert`.", "provider_tls_key"),
)


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] = os.environ,
    *,
    overrides: Mapping[str, Mapping[str, str]] | None = None,
) -> OceanConfig:
    """Load a squid-py style INI file (``None``: defaults only), then apply ``environ`` and
    ``overrides`` (``{section: {key: value}}``, e.g. from command-line options).

    :raises ConfigError: if the file cannot be read or parsed, or a setting is invalid
        (``.key`` names it).
    """
    if path is None:
        return OceanConfig.from_mapping({}, environ, overrides=overrides)
    file = Path(path)
    # No interpolation: passwords may contain "%". Keys keep their case for contract.<Name>.
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    parser.optionxform = str  # type: ignore[assignment,method-assign] # typeshed calls it a method; assigning str is the documented way
    try:
        with file.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {file}: {exc.strerror or exc}") from None
    except configparser.Error as exc:
        raise ConfigError(f"the config file {file} is not a valid INI file: {exc.message}") from None
    sections = {name: dict(parser.items(name, raw=True)) for name in parser.sections()}
    return OceanConfig.from_mapping(sections, environ, base_dir=file.resolve().parent, source=str(file),
                                    overrides=overrides)


class _Reader:
    """Looks keys up case-insensitively, remembers where each value came from, and converts them."""

    def __init__(self, sections: Mapping[str, Mapping[str, object]], environ: Mapping[str, str],
                 base_dir: Path | None, source: str | None,
                 overrides: Mapping[str, Mapping[str, str]]) -> None:
        self.base_dir = base_dir
        self.source = source
        where = f"in {source}" if source else "in the configuration"
        #: (section, lowercased key) -> (value, origin)
        self.values: dict[tuple[str, str], tuple[str, str]] = {}
        #: contract name (case kept) -> (address, origin)
        self.contract_keys: dict[str, tuple[str, str]] = {}
        for section, entries in sections.items():
            for key, value in entries.items():
                text = "" if value is None else str(value).strip()
                origin = f"[{section}] {key} {where}"
                lowered = key.lower()
                if section == KEEPER and lowered.startswith(_CONTRACT_PREFIX) and lowered != "contracts.file":
                    self.contract_keys[key[len(_CONTRACT_PREFIX):]] = (text, origin)
                else:
                    self.values[(section, key.lower())] = (text, origin)
        for variable, (section, key) in ENVIRONMENT.items():
            if variable in environ:
                self.values[(section, key)] = (environ[variable].strip(), f"environment variable {variable}")
        for section, entries in overrides.items():
            for key, value in entries.items():
                origin = f"[{section}] {key} from the command line"
                if section == KEEPER and key.lower().startswith(_CONTRACT_PREFIX) and key.lower() != "contracts.file":
                    self.contract_keys[key[len(_CONTRACT_PREFIX):]] = (value.strip(), origin)
                else:
                    self.values[(section, key.lower())] = (value.strip(), origin)

    # -- typed getters --------------------------------------------------------------------------

    def raw(self, section: str, key: str) -> tuple[str, str] | None:
        return self.values.get((section, key))

    def text(self, section: str, key: str, default: str | None = None) -> str | None:
        found = self.raw(section, key)
        return found[0] if found is not None and found[0] != "" else default

    def fail(self, section: str, key: str, problem: str) -> ConfigError:
        found = self.raw(section, key)
        origin = found[1] if found is not None else f"[{section}] {key}"
        return ConfigError(f"{origin}: {problem}", _dotted(section, key))

    def boolean(self, section: str, key: str, default: bool) -> bool:
        value = self.text(section, key)
        if value is None:
            return default
        state = configparser.ConfigParser.BOOLEAN_STATES.get(value.lower())
        if state is None:
            raise self.fail(section, key, f"must be true or false (or yes/no, on/off, 1/0), got {value!r}")
        return state

    def integer(self, section: str, key: str, default: int | None, minimum: int) -> int | None:
        value = self.text(section, key)
        if value is None:
            return default
        try:
            number = int(value, 10)
        except ValueError:
            raise self.fail(section, key, f"must be an integer, got {value!r}") from None
        if number < minimum:
            raise self.fail(section, key, f"must be at least {minimum}, got {number}")
        return number

    def url(self, section: str, key: str, default: str | None = None) -> str | None:
        value = self.text(section, key, default)
        if value is not None and not _is_http_url(value):
            raise self.fail(section, key, f"must be an http(s):// URL, got {value!r}")
        return value.rstrip("/") if value is not None else None

    def urls(self, section: str, key: str) -> tuple[str, ...]:
        value = self.text(section, key)
        if value is None:
            return ()
        items = [item.rstrip("/") for item in re.split(r"[,\s]+", value) if item]
        bad = [item for item in items if not _is_http_url(item)]
        if bad:
            raise self.fail(section, key, f"every URL must be http(s)://host[:port], got {bad[0]!r}")
        return tuple(items)

    def seconds(self, section: str, key: str, default: float) -> float:
        value = self.text(section, key)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise self.fail(section, key, f"must be a number of seconds, got {value!r}") from None
        if not math.isfinite(number) or number <= 0:
            raise self.fail(section, key, f"must be a number of seconds > 0, got {value!r}")
        return number

    def origins(self, section: str, key: str) -> tuple[str, ...]:
        value = self.text(section, key)
        if value is None:
            return ()
        try:
            return tuple(str(parse_origin(item)) for item in re.split(r"[,\s]+", value) if item)
        except ValueError as exc:
            raise self.fail(section, key, f"every origin must be scheme://host[:port]: {exc}") from None

    def address(self, section: str, key: str) -> str | None:
        value = self.text(section, key)
        if value is not None and not _ADDRESS.fullmatch(value):
            raise self.fail(section, key, f"must be an address (0x + 40 hex digits), got {value!r}")
        return value

    def path(self, section: str, key: str) -> str | None:
        value = self.text(section, key)
        if value is None:
            return None
        return str(self._anchor(Path(value).expanduser()))

    def _anchor(self, path: Path) -> Path:
        return path if path.is_absolute() or self.base_dir is None else self.base_dir / path

    def name(self, section: str, key: str, default: str) -> str:
        value = self.text(section, key) or default
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise self.fail(section, key,
                            f"must be a plugin name (letters, digits, '.', '_', '-'), got {value!r}")
        return value

    def listen(self) -> str:
        value = self.text(PROVIDER, "listen") or "127.0.0.1:8030"
        try:
            return str(parse_host_port(value, allow_zero=True))  # port 0: the kernel picks one
        except ValueError as exc:
            raise self.fail(PROVIDER, "listen", f"must be host:port ({exc}), got {value!r}") from None

    def public_key(self) -> str | None:
        value = self.text(PROVIDER, "provider.public_key")
        if value is None:
            return None
        try:
            raw = parse_hex(value, "provider.public_key", prefix=None, error=ValueError)
        except ValueError:
            raw = b""
        if len(raw) == 65 and raw[0] == 4:
            raw = raw[1:]
        if len(raw) != 64:
            raise self.fail(PROVIDER, "provider.public_key",
                            "must be 0x + 128 hex digits (the 64-byte X || Y)")
        try:
            Point.from_bytes(raw)
        except CryptoError:
            raise self.fail(PROVIDER, "provider.public_key", "is not a point on secp256k1") from None
        return "0x" + raw.hex()

    # -- the contracts --------------------------------------------------------------------------

    def contracts(self) -> dict[str, str]:
        found: dict[str, str] = {}
        file = self.path(KEEPER, "contracts.file")
        if file is not None:
            found.update(self._contracts_file(Path(file)))
        for name, (address, origin) in self.contract_keys.items():
            if not _ADDRESS.fullmatch(address):
                raise ConfigError(f"{origin}: must be an address (0x + 40 hex digits), got {address!r}",
                                  _dotted(KEEPER, _CONTRACT_PREFIX + name))
            found[name] = address
        return found

    def _contracts_file(self, file: Path) -> dict[str, str]:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise self.fail(KEEPER, "contracts.file", f"cannot read {file}: {exc.strerror or exc}") from None
        except ValueError:
            raise self.fail(KEEPER, "contracts.file", f"{file} is not JSON") from None
        table = data.get("contracts", data) if isinstance(data, dict) else None
        if not isinstance(table, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and _ADDRESS.fullmatch(v) for k, v in table.items()
        ):
            raise self.fail(KEEPER, "contracts.file",
                            f"{file} must hold {{name: address}} or {{\"contracts\": {{name: address}}}}")
        return dict(table)

    # -- the whole ------------------------------------------------------------------------------

    def config(self) -> OceanConfig:
        secret_store_url = self.url(KEEPER, "secret_store.url")
        cluster_urls = self.urls(SECRET_STORE, "cluster_urls")
        metadata = self.text(RESOURCES, "metadata.store")
        if metadata is None:
            metadata = self.url(RESOURCES, "aquarius.url")
        elif _is_http_url(metadata):
            metadata = metadata.rstrip("/")
        else:
            metadata = self.path(RESOURCES, "metadata.store")
        values: dict[str, Any] = {
            "keeper_url": self.url(KEEPER, "keeper.url", "http://localhost:8545"),
            "keeper_network": self.text(KEEPER, "keeper.network", "development"),
            "contracts": self.contracts(),
            "secret_store_url": secret_store_url,
            "parity_url": self.url(KEEPER, "parity.url"),
            "parity_address": self.address(KEEPER, "parity.address"),
            "parity_password": self.text(KEEPER, "parity.password"),
            "secret_store_enabled": self.boolean(SECRET_STORE, "enabled", True),
            "threshold": self.integer(SECRET_STORE, "threshold", 0, minimum=0),
            "cluster_urls": cluster_urls,
            "cluster_size": self.integer(SECRET_STORE, "cluster_size", None, minimum=1),
            "encryptor": self.name(SECRET_STORE, "encryptor", "secret-store"),
            "metadata_store": metadata,
            "provider_url": self.url(RESOURCES, "provider.url") or self.url(RESOURCES, "brizo.url"),
            "provider_address": self.address(RESOURCES, "provider.address"),
            "downloads_path": self.path(RESOURCES, "downloads.path"),
            "ca_file": self.path(RESOURCES, "ca_file"),
            "provider_backend": self.name(PROVIDER, "backend", "secret-store"),
            "provider_keystore": self.path(PROVIDER, "account.keystore"),
            "provider_password_env": self.text(PROVIDER, "account.password_env"),
            "provider_key_env": self.text(PROVIDER, "account.key_env"),
            "provider_listen": self.listen(),
            "provider_public_key": self.public_key(),
            "provider_file_root": self.path(PROVIDER, "file_root"),
            "provider_allowed_origins": self.origins(PROVIDER, "allowed_origins"),
            "provider_max_file_bytes": self.integer(PROVIDER, "max_file_bytes", DEFAULT_MAX_BYTES, minimum=1),
            "provider_fetch_connect_timeout": self.seconds(PROVIDER, "fetch_connect_timeout", DEFAULT_CONNECT_TIMEOUT),
            "provider_fetch_read_timeout": self.seconds(PROVIDER, "fetch_read_timeout", DEFAULT_READ_TIMEOUT),
            "provider_fetch_total_timeout": self.seconds(PROVIDER, "fetch_total_timeout", DEFAULT_TOTAL_TIMEOUT),
            "provider_max_redirects": self.integer(PROVIDER, "max_redirects", DEFAULT_MAX_REDIRECTS, minimum=0),
            "provider_require_signature_expiry": self.boolean(PROVIDER, "require_signature_expiry", False),
            "provider_max_signature_lifetime": self.integer(PROVIDER, "max_signature_lifetime",
                                                            DEFAULT_MAX_SIGNATURE_LIFETIME, minimum=1),
            "provider_tls_cert": self.path(PROVIDER, "tls_cert"),
            "provider_tls_key": self.path(PROVIDER, "tls_key"),
            "source": self.source,
        }
        try:
            return OceanConfig(**values)
        except ConfigError as exc:
            # Say where the offending value came from (file or environment variable).
            section, _, key = (exc.key or "").partition(".")
            found = self.raw(section, key)
            if found is None or exc.key is None:
                raise
            raise ConfigError(f"{exc} (set by {found[1]})", exc.key) from None


def _is_http_url(value: str) -> bool:
    return re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value) is not None
