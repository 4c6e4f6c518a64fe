"""OceanConfig: squid-py style INI, environment overrides, precedence, defaults, and errors naming the key."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.exceptions import ConfigError
from ocean_secret_store.ocean.config import ENVIRONMENT, OceanConfig, load_config

ADDRESS_A = "0x" + "ab" * 20
ADDRESS_B = "0x" + "cd" * 20
NODES = ["http://127.0.0.1:12001", "http://127.0.0.1:12002", "http://127.0.0.1:12003"]


def write_ini(directory: Path, text: str, name: str = "config.ini") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def public_hex() -> str:
    return "0x" + Point.generator_mul(random_scalar()).to_bytes().hex()


FULL = """
[keeper-contracts]
keeper.url = http://127.0.0.1:8545
keeper.network = spree
contracts.file = chain/devnet.json
contract.AccessSecretStoreCondition = {address_b}
secret_store.url = http://127.0.0.1:12001
parity.url = http://127.0.0.1:8550
parity.address = {address_a}
parity.password = p%ss;word

[secret-store]
enabled = yes
threshold = 2
cluster_urls = {nodes}
encryptor = provider-key

[resources]
metadata.store = assets.db
provider.url = http://127.0.0.1:8030/
provider.address = {address_a}
downloads.path = downloads

[provider]
backend = provider-key
account.key_env = PROVIDER_KEY
account.keystore = keys/provider.json
account.password_env = PROVIDER_PASSWORD
listen = 0.0.0.0:9030
provider.public_key = {public}
file_root = files
"""


def test_full_ini_is_read_into_every_field(tmp_path: Path) -> None:
    (tmp_path / "chain").mkdir()
    (tmp_path / "chain" / "devnet.json").write_text(json.dumps(
        {"chain_url": "ignored",
         "contracts": {"DIDRegistry": ADDRESS_A, "AccessSecretStoreCondition": ADDRESS_A}}
    ))
    public = public_hex()
    path = write_ini(tmp_path, FULL.format(address_a=ADDRESS_A, address_b=ADDRESS_B, nodes=", ".join(NODES),
                                           public=public))

    config = load_config(path, environ={})

    assert config.keeper_url == "http://127.0.0.1:8545"
    assert config.keeper_network == "spree"
    # contract.<Name> overrides the file, and the name keeps its case.
    assert config.contracts == {"DIDRegistry": ADDRESS_A, "AccessSecretStoreCondition": ADDRESS_B}
    assert config.secret_store_url == "http://127.0.0.1:12001"
    assert config.parity_url == "http://127.0.0.1:8550"
    assert config.parity_address == ADDRESS_A
    # No interpolation ("%") and ";" only starts a comment after whitespace.
    assert config.parity_password == "p%ss;word"
    assert config.secret_store_enabled is True
    assert config.threshold == 2
    assert config.cluster_urls == tuple(NODES)
    assert config.encryptor == "provider-key"
    assert config.metadata_store == str(tmp_path / "assets.db")
    assert config.provider_url == "http://127.0.0.1:8030"
    assert config.provider_address == ADDRESS_A
    assert config.downloads_path == str(tmp_path / "downloads")
    assert config.provider_backend == "provider-key"
    assert config.provider_key_env == "PROVIDER_KEY"
    assert config.provider_keystore == str(tmp_path / "keys" / "provider.json")
    assert config.provider_password_env == "PROVIDER_PASSWORD"
    assert config.provider_listen == "0.0.0.0:9030"
    assert config.provider_public_key == public
    assert config.provider_file_root == str(tmp_path / "files")
    assert config.source == str(path)


def test_defaults_without_a_file() -> None:
    config = load_config(None, environ={})
    assert config == OceanConfig()
    assert config.keeper_url == "http://localhost:8545"
    assert config.keeper_network == "development"
    assert config.contracts == {}
    assert config.secret_store_url is None
    assert config.cluster_urls == ()
    assert config.known_cluster_size is None
    assert config.secret_store_enabled is True
    assert config.threshold == 0
    assert config.encryptor == "secret-store"
    assert config.provider_backend == "secret-store"
    assert config.provider_listen == "127.0.0.1:8030"
    assert config.metadata_store is None
    assert config.provider_public_key is None


def test_an_empty_value_means_the_default(tmp_path: Path) -> None:
    # squid-py's config_defaults write secret_store.url = '' and so on.
    path = write_ini(tmp_path,
                     "[keeper-contracts]\nsecret_store.url =\nkeeper.url =\n[secret-store]\nthreshold =\n")
    config = load_config(path, environ={})
    assert config.secret_store_url is None
    assert config.keeper_url == "http://localhost:8545"
    assert config.threshold == 0


def test_the_config_is_frozen_and_hides_the_parity_password() -> None:
    config = OceanConfig(parity_password="hunter2")
    with pytest.raises(AttributeError):
        config.threshold = 1  # type: ignore[misc]  # frozen: the point of the test
    assert "hunter2" not in repr(config)


# -- environment overrides -------------------------------------------------------------------


def test_squid_environment_variables_override_the_file(tmp_path: Path) -> None:
    path = write_ini(tmp_path, f"""
[keeper-contracts]
keeper.url = http://127.0.0.1:1
secret_store.url = http://127.0.0.1:2
parity.url = http://127.0.0.1:3
parity.address = {ADDRESS_A}
parity.password = from-file
[resources]
provider.address = {ADDRESS_A}
""")
    environ = {
        "KEEPER_URL": "http://10.0.0.1:8545",
        "SECRET_STORE_URL": "http://10.0.0.2:12001",
        "PARITY_URL": "http://10.0.0.3:8545",
        "PARITY_ADDRESS": ADDRESS_B,
        "PARITY_PASSWORD": "from-env",
        "PROVIDER_ADDRESS": ADDRESS_B,
    }
    config = load_config(path, environ=environ)
    assert config.keeper_url == "http://10.0.0.1:8545"
    assert config.secret_store_url == "http://10.0.0.2:12001"
    assert config.cluster_urls == ("http://10.0.0.2:12001",)
    assert config.parity_url == "http://10.0.0.3:8545"
    assert config.parity_address == ADDRESS_B
    assert config.parity_password == "from-env"
    assert config.provider_address == ADDRESS_B


def test_our_environment_variables_override_the_secret_store_section(tmp_path: Path) -> None:
    path = write_ini(tmp_path, f"[secret-store]\nthreshold = 0\nencryptor = secret-store\nenabled = true\n"
                               f"cluster_urls = {NODES[0]}\n")
    environ = {
        "OCEAN_SS_THRESHOLD": "2",
        "OCEAN_SS_ENCRYPTOR": "vault",
        "OCEAN_SS_ENABLED": "false",
        "OCEAN_SS_CLUSTER_URLS": ",".join(NODES),
    }
    config = load_config(path, environ=environ)
    assert (config.threshold, config.encryptor, config.secret_store_enabled) == (2, "vault", False)
    assert config.cluster_urls == tuple(NODES)


def test_every_documented_environment_variable_is_honoured() -> None:
    # Each variable given alone must change the field behind its key.
    values = {
        "KEEPER_URL": ("http://10.1.1.1:1", "keeper_url"),
        "SECRET_STORE_URL": ("http://10.1.1.2:2", "secret_store_url"),
        "PARITY_URL": ("http://10.1.1.3:3", "parity_url"),
        "PARITY_ADDRESS": (ADDRESS_B, "parity_address"),
        "PARITY_PASSWORD": ("secret", "parity_password"),
        "PROVIDER_ADDRESS": (ADDRESS_A, "provider_address"),
        "OCEAN_SS_THRESHOLD": ("3", "threshold"),
        "OCEAN_SS_ENCRYPTOR": ("vault", "encryptor"),
        "OCEAN_SS_ENABLED": ("off", "secret_store_enabled"),
        "OCEAN_SS_CLUSTER_URLS": (" ".join(NODES), "cluster_urls"),
    }
    assert set(values) == set(ENVIRONMENT)
    expected = {"threshold": 3, "secret_store_enabled": False, "cluster_urls": tuple(NODES)}
    for variable, (value, field_name) in values.items():
        config = load_config(None, environ={variable: value})
        assert getattr(config, field_name) == expected.get(field_name, value), variable


def test_an_empty_environment_variable_clears_the_file_value(tmp_path: Path) -> None:
    # As squid-py: a variable that is set wins, even when empty.
    path = write_ini(tmp_path, "[keeper-contracts]\nsecret_store.url = http://127.0.0.1:12001\n")
    config = load_config(path, environ={"SECRET_STORE_URL": ""})
    assert config.secret_store_url is None
    assert config.cluster_urls == ()


def test_load_config_reads_os_environ_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPER_URL", "http://10.9.9.9:8545")
    path = write_ini(tmp_path, "[keeper-contracts]\nkeeper.url = http://127.0.0.1:8545\n")
    assert load_config(path).keeper_url == "http://10.9.9.9:8545"
    # A mapping is taken as given unless an environment is passed.
    given = OceanConfig.from_mapping({"keeper-contracts": {"keeper.url": "http://127.0.0.1:1"}})
    assert given.keeper_url == "http://127.0.0.1:1"
    assert OceanConfig.from_mapping({}, dict(os.environ)).keeper_url == "http://10.9.9.9:8545"


# -- precedence between keys -----------------------------------------------------------------


def test_cluster_urls_take_precedence_over_secret_store_url() -> None:
    config = OceanConfig.from_mapping({
        "keeper-contracts": {"secret_store.url": "http://127.0.0.1:9999"},
        "secret-store": {"cluster_urls": "\n".join(NODES)},
    })
    assert config.cluster_urls == tuple(NODES)
    # The advertised URL stays the one configured.
    assert config.secret_store_url == "http://127.0.0.1:9999"


def test_secret_store_url_alone_is_the_cluster_and_cluster_urls_alone_give_the_url() -> None:
    alone = OceanConfig.from_mapping({"keeper-contracts": {"secret_store.url": NODES[1] + "/"}})
    assert alone.cluster_urls == (NODES[1],)
    assert alone.known_cluster_size == 1
    listed = OceanConfig.from_mapping({"secret-store": {"cluster_urls": ",".join(NODES)}})
    assert listed.secret_store_url == NODES[0]
    assert listed.known_cluster_size == 3


def test_secret_store_url_from_the_environment_does_not_replace_listed_cluster_urls() -> None:
    config = OceanConfig.from_mapping(
        {"secret-store": {"cluster_urls": ",".join(NODES)}}, {"SECRET_STORE_URL": "http://10.0.0.9:12001"}
    )
    assert config.secret_store_url == "http://10.0.0.9:12001"
    assert config.cluster_urls == tuple(NODES)


def test_metadata_store_and_provider_url_fall_back_to_squid_keys(tmp_path: Path) -> None:
    squid = OceanConfig.from_mapping({"resources": {"aquarius.url": "http://127.0.0.1:5000",
                                                    "brizo.url": "http://127.0.0.1:8030"}})
    assert squid.metadata_store == "http://127.0.0.1:5000"
    assert squid.provider_url == "http://127.0.0.1:8030"
    both = {"aquarius.url": "http://127.0.0.1:5000", "metadata.store": "meta.db",
            "brizo.url": "http://127.0.0.1:8030", "provider.url": "http://127.0.0.1:9000"}
    ours = OceanConfig.from_mapping({"resources": both}, base_dir=tmp_path)
    assert ours.metadata_store == str(tmp_path / "meta.db")
    assert ours.provider_url == "http://127.0.0.1:9000"
    http_store = OceanConfig.from_mapping({"resources": {"metadata.store": "https://aquarius.example/"}})
    assert http_store.metadata_store == "https://aquarius.example"


def test_contracts_file_may_be_a_plain_mapping_and_absolute_paths_stay(tmp_path: Path) -> None:
    table = tmp_path / "addresses.json"
    table.write_text(json.dumps({"DIDRegistry": ADDRESS_A}))
    config = OceanConfig.from_mapping({"keeper-contracts": {"contracts.file": str(table)}},
                                      base_dir=tmp_path / "elsewhere")
    assert config.contracts == {"DIDRegistry": ADDRESS_A}


# -- threshold validation --------------------------------------------------------------------


def test_threshold_below_the_cluster_size_is_accepted() -> None:
    config = OceanConfig.from_mapping({"secret-store": {"threshold": "2", "cluster_urls": ",".join(NODES)}})
    assert config.threshold == 2


@pytest.mark.parametrize("threshold", [3, 4])
def test_threshold_not_below_the_number_of_cluster_urls_is_refused(threshold: int) -> None:
    with pytest.raises(ConfigError) as caught:
        OceanConfig.from_mapping({"secret-store": {"threshold": str(threshold),
                                                   "cluster_urls": ",".join(NODES)}})
    assert caught.value.key == "secret-store.threshold"
    message = str(caught.value)
    assert "threshold" in message and f"{threshold + 1} key servers" in message and "has 3" in message
    assert "[secret-store] threshold in the configuration" in message


def test_threshold_from_the_environment_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        OceanConfig.from_mapping({"keeper-contracts": {"secret_store.url": NODES[0]}},
                                 {"OCEAN_SS_THRESHOLD": "2"})
    assert caught.value.key == "secret-store.threshold"
    assert "OCEAN_SS_THRESHOLD" in str(caught.value)
    assert "cluster_urls" in str(caught.value)  # says how to fix it


def test_cluster_size_makes_a_larger_threshold_valid_behind_one_url() -> None:
    config = OceanConfig.from_mapping({"keeper-contracts": {"secret_store.url": NODES[0]},
                                       "secret-store": {"threshold": "2", "cluster_size": "3"}})
    assert config.known_cluster_size == 3
    with pytest.raises(ConfigError) as caught:
        OceanConfig.from_mapping({"keeper-contracts": {"secret_store.url": NODES[0]},
                                  "secret-store": {"threshold": "3", "cluster_size": "3"}})
    assert caught.value.key == "secret-store.threshold"


def test_cluster_size_smaller_than_the_urls_listed_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        OceanConfig.from_mapping({"secret-store": {"cluster_size": "2", "cluster_urls": ",".join(NODES)}})
    assert caught.value.key == "secret-store.cluster_size"


def test_threshold_is_not_checked_when_the_secret_store_is_disabled_or_the_size_unknown() -> None:
    disabled = OceanConfig.from_mapping({"secret-store": {"enabled": "false", "threshold": "5",
                                                          "cluster_urls": NODES[0]}})
    assert disabled.threshold == 5
    unknown = OceanConfig.from_mapping({"secret-store": {"threshold": "5"}})
    assert unknown.known_cluster_size is None


def test_direct_construction_is_validated_and_derives_the_cluster() -> None:
    config = OceanConfig(secret_store_url=NODES[0], threshold=0)
    assert config.cluster_urls == (NODES[0],)
    with pytest.raises(ConfigError) as caught:
        OceanConfig(cluster_urls=tuple(NODES), threshold=3)
    assert caught.value.key == "secret-store.threshold"
    with pytest.raises(ConfigError):
        OceanConfig(threshold=-1)


# -- errors naming the key -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "value", "dotted"),
    [
        ("secret-store", "threshold", "two", "secret-store.threshold"),
        ("secret-store", "threshold", "-1", "secret-store.threshold"),
        ("secret-store", "enabled", "maybe", "secret-store.enabled"),
        ("secret-store", "cluster_size", "0", "secret-store.cluster_size"),
        ("secret-store", "cluster_urls", "http://127.0.0.1:1, ftp://x", "secret-store.cluster_urls"),
        ("secret-store", "encryptor", "no spaces please", "secret-store.encryptor"),
        ("keeper-contracts", "keeper.url", "localhost:8545", "keeper-contracts.keeper.url"),
        ("keeper-contracts", "secret_store.url", "127.0.0.1:12001", "keeper-contracts.secret_store.url"),
        ("keeper-contracts", "parity.address", "0x1234", "keeper-contracts.parity.address"),
        ("keeper-contracts", "contract.DIDRegistry", "0xnothex", "keeper-contracts.contract.DIDRegistry"),
        ("keeper-contracts", "contracts.file", "missing.json", "keeper-contracts.contracts.file"),
        ("resources", "provider.address", "provider", "resources.provider.address"),
        ("resources", "brizo.url", "brizo", "resources.brizo.url"),
        ("provider", "listen", "8030", "provider.listen"),
        ("provider", "backend", "", None),
        ("provider", "provider.public_key", "0x" + "00" * 64, "provider.provider.public_key"),
        ("provider", "provider.public_key", "0x1234", "provider.provider.public_key"),
    ],
)
def test_invalid_values_raise_config_error_naming_the_key(
    tmp_path: Path, section: str, key: str, value: str, dotted: str | None
) -> None:
    path = write_ini(tmp_path, f"[{section}]\n{key} = {value}\n")
    if dotted is None:  # an empty value is the default, not an error
        assert load_config(path, environ={}).provider_backend == "secret-store"
        return
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.key == dotted
    assert f"[{section}] {key}" in str(caught.value)
    assert str(path) in str(caught.value)


def test_invalid_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={"OCEAN_SS_ENABLED": "sometimes"})
    assert caught.value.key == "secret-store.enabled"
    assert "environment variable OCEAN_SS_ENABLED" in str(caught.value)


def test_contracts_file_that_is_not_a_table_of_addresses(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps({"contracts": {"DIDRegistry": 5}}))
    (tmp_path / "d.json").write_text("not json")
    for name in ("c.json", "d.json"):
        with pytest.raises(ConfigError) as caught:
            OceanConfig.from_mapping({"keeper-contracts": {"contracts.file": name}}, base_dir=tmp_path)
        assert caught.value.key == "keeper-contracts.contracts.file"
        assert name in str(caught.value)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as missing:
        load_config(tmp_path / "absent.ini", environ={})
    assert "absent.ini" in str(missing.value) and missing.value.key is None
    broken = write_ini(tmp_path, "keeper.url = http://x\n")  # a key before any section
    with pytest.raises(ConfigError) as malformed:
        load_config(broken, environ={})
    assert "not a valid INI file" in str(malformed.value)


def test_public_key_with_sec1_prefix_is_normalised() -> None:
    public = public_hex()
    config = OceanConfig.from_mapping({"provider": {"provider.public_key": "0x04" + public[2:]}})
    assert config.provider_public_key == public
