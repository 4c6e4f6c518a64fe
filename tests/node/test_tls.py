"""TLS for our servers (issue 11, build item 2): the devnet's local CA and certificates, the
``[http] tls_cert``/``tls_key`` node settings and their refusals, and a guarded server over https."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from ocean_secret_store.crypto.curve import Point, random_scalar
from ocean_secret_store.exceptions import ConfigError
from ocean_secret_store.lifecycle import bound_port
from ocean_secret_store.localca import LOCAL_CERT_DAYS, issue_certificate, make_local_ca
from ocean_secret_store.node.config import NodeConfig, dump_config, load_config
from ocean_secret_store.serving import (
    GuardedAppRunner,
    ServingLimits,
    TlsFiles,
    client_ssl_context,
    guarded_site,
    server_ssl_context,
)
from ocean_secret_store.testing.servers import ServerThread

SECRET = random_scalar()
HANDSHAKE_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[TlsFiles, TlsFiles]:
    folder = tmp_path_factory.mktemp("tls")
    ca = make_local_ca(folder)
    return ca, issue_certificate(ca, folder, "node0")


def test_the_local_ca_and_a_server_certificate(pki: tuple[TlsFiles, TlsFiles]) -> None:
    ca_files, leaf_files = pki
    ca = x509.load_pem_x509_certificate(ca_files.cert.read_bytes())
    leaf = x509.load_pem_x509_certificate(leaf_files.cert.read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    for cert in (ca, leaf):
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr] # checked just above
        assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
        # short-lived: a devnet's week, not a deployment's years
        assert cert.not_valid_after_utc - now <= datetime.timedelta(days=LOCAL_CERT_DAYS)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert leaf.issuer == ca.subject
    leaf.verify_directly_issued_by(ca)
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    for path in (ca_files.cert, ca_files.key, leaf_files.cert, leaf_files.key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    context = server_ssl_context(leaf_files.cert, leaf_files.key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def _node_mapping(http: dict[str, Any]) -> dict[str, Any]:
    public = "0x" + Point.generator_mul(SECRET).to_bytes().hex()
    return {
        "node": {"secret": f"0x{SECRET:064x}", "listen": "127.0.0.1:12000", "http_listen": "127.0.0.1:12001",
                 "data_dir": "node0"},
        "cluster": {public: "127.0.0.1:12000"},
        "acl": {"kind": "none"},
        "http": http,
    }


def test_a_node_config_with_tls_loads_and_dumps_back(tmp_path: Path, pki: tuple[TlsFiles, TlsFiles]) -> None:
    _, leaf = pki
    config = NodeConfig.from_mapping(_node_mapping({"tls_cert": str(leaf.cert), "tls_key": str(leaf.key)}), tmp_path)
    assert config.tls == leaf
    path = tmp_path / "node.toml"
    path.write_text(dump_config(config), encoding="utf-8")
    assert load_config(path) == config
    assert NodeConfig.from_mapping(_node_mapping({}), tmp_path).tls is None  # default: plain http


@pytest.mark.parametrize(("http", "key", "words"), [
    ({"tls_cert": "node0.pem", "tls_key": "missing.key"}, "http.tls_key", "does not exist"),
    ({"tls_cert": "missing.pem", "tls_key": "node0.key"}, "http.tls_cert", "does not exist"),
    ({"tls_cert": "node0.pem"}, "http.tls_key", "needs both"),
    ({"tls_key": "node0.key"}, "http.tls_cert", "needs both"),
    ({"tls_cert": "node0.pem", "tls_key": "other.key"}, "http.tls_key", "matching PEM private key"),
    ({"tls_cert": "node0.key", "tls_key": "node0.key"}, "http.tls_key", "expected a PEM certificate"),
])
def test_bad_tls_settings_are_refused_at_load(tmp_path: Path, pki: tuple[TlsFiles, TlsFiles], http: dict[str, str],
                                              key: str, words: str) -> None:
    ca, leaf = pki
    for source in (leaf.cert, leaf.key):
        (tmp_path / source.name).write_bytes(source.read_bytes())
    (tmp_path / "other.key").write_bytes(ca.key.read_bytes())  # a key, not the certificate's
    with pytest.raises(ConfigError) as caught:
        NodeConfig.from_mapping(_node_mapping(http), tmp_path)
    assert caught.value.key == key
    assert words in str(caught.value) and key.split(".")[1] in str(caught.value)
    assert "PRIVATE KEY" not in str(caught.value)  # never a key's bytes


def test_a_guarded_server_over_https(pki: tuple[TlsFiles, TlsFiles]) -> None:
    """The guard wraps the decrypted stream: requests are served over TLS 1.2+, and a client that
    does not trust the CA, or speaks plain HTTP, gets nothing."""
    ca, leaf = pki

    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def build() -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/", hello)
        runner = GuardedAppRunner(app, ServingLimits(header_timeout=HANDSHAKE_TIMEOUT), access_log=None,
                                  handle_signals=False)
        await runner.setup()
        await guarded_site(runner, "127.0.0.1", 0, ssl_context=leaf.context()).start()
        return runner

    with ServerThread() as server:
        runner = server.run(build())
        server.runners.append(runner)  # stopped with the thread
        port = bound_port(runner)
        url = f"https://127.0.0.1:{port}/"
        assert requests.get(url, verify=str(ca.cert), timeout=5).text == "hello"
        assert requests.get(f"https://localhost:{port}/", verify=str(ca.cert), timeout=5).text == "hello"
        with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
            requests.get(url, timeout=5)
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/", timeout=5)
        # a connection that never completes its handshake (a slow-loris before TLS) is closed in time
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"\x16\x03\x01")  # the first bytes of a ClientHello, and nothing more
            assert raw.recv(1024) == b""
        assert time.monotonic() - started < HANDSHAKE_TIMEOUT + 2
    assert client_ssl_context(ca.cert).verify_mode == ssl.CERT_REQUIRED
