"""The real provider side against our key servers: Brizo 0.9.7 (``ocean-brizo``, served by gunicorn
as its Docker image serves it) and the events handler 0.4.7 (``ocean-events-handler``, started by
events37.py), unmodified on Python 3.7 in their own environment (env37.py ``brizo``), in place of
the devnet's own provider; then squid-py 0.9.3's flow (driver37.py) with ``brizo.url`` pointing at
the real Brizo: publish through the Secret Store, order (the real events handler fulfils
``AccessSecretStoreCondition``), consume in both of Brizo's forms (the url= form, and the index form
in which Brizo decrypts the file list through the Secret Store with the provider's account), the
bytes saved equal to the bytes published.

What the test gives Brizo beyond the devnet's files: the devnet's squid-py ``config.ini`` (every key
Brizo and the events handler read: ``keeper.url``, ``keeper.path``, ``secret_store.url``,
``parity.url``, ``aquarius.url``, ``brizo.url``) plus an empty ``[osmosis]`` section, which Brizo's
file-URL layer (osmosis-driver-interface) requires to exist, and ``[resources] storage.path`` set to
the events handler's own database (the devnet's names squid-py's); the provider's keystore account
from ``devnet.json`` in Brizo's ``PROVIDER_ADDRESS``/``PROVIDER_PASSWORD``/``PROVIDER_KEYFILE``; and
a ``.bumpversion.cfg`` in Brizo's working folder (its ``/`` route reads its version from there, as
in its repository). Brizo listens on the port of the devnet's provider, which the test stops first,
so the devnet's ``config.ini`` and ``devnet.json`` stay as ``devnet up`` wrote them.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from ocean_secret_store import devnet
from tests.compat.conftest import Driver, StackError
from tests.compat.test_squid import metadata

pytestmark = [pytest.mark.integration, pytest.mark.compat]

EVENTS37 = Path(__file__).resolve().parent / "events37.py"
START_TIMEOUT = 60.0


@dataclass
class RealProvider:
    url: str
    brizo_log: Path
    events_log: Path

    def logs(self) -> str:
        return (f"--- brizo ({self.brizo_log}):\n{_tail(self.brizo_log)}\n"
                f"--- events handler ({self.events_log}):\n{_tail(self.events_log)}")


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(pid: int, grace: float = 5.0) -> None:
    """SIGTERM the process group ``pid`` leads (one this test or the devnet started), SIGKILL after ``grace``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + grace
        while _alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        if not _alive(pid):
            return


def _wait(what: str, ready: Callable[[], bool], process: subprocess.Popen[bytes], provider: RealProvider) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode} during start-up\n{provider.logs()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not ready after {START_TIMEOUT} s\n{provider.logs()}")
        time.sleep(0.2)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _provider_config(net: devnet.DevnetState, folder: Path) -> Path:
    """The devnet's squid-py config.ini plus what Brizo and the events handler need besides (module docstring)."""
    assert net.squid_config
    config = configparser.ConfigParser(interpolation=None)
    config.read(net.squid_config, encoding="utf-8")
    config["resources"]["storage.path"] = str(folder / "provider-events-monitor.db")
    config["osmosis"] = {}
    path = folder / "config.ini"
    with open(path, "w", encoding="utf-8") as handle:
        config.write(handle)
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def real_provider(brizo_python37: Path, net: devnet.DevnetState,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealProvider]:
    assert net.provider_url and net.provider_pid
    # the devnet's provider and its events handler (one process) go: nothing of ours grants or serves
    _stop(net.provider_pid)
    state = devnet.DevnetState.require(net.state_dir)
    state.provider_pid = None
    state.save()

    folder = tmp_path_factory.mktemp("real-brizo")
    (folder / ".bumpversion.cfg").write_text("[bumpversion]\ncurrent_version = 0.9.7\n", encoding="utf-8")
    (account,) = [a for a in net.rpc_accounts if a.role == "provider"]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(CONFIG_FILE=str(_provider_config(net, folder)), PROVIDER_ADDRESS=account.address,
               PROVIDER_PASSWORD=account.password, PROVIDER_KEYFILE=account.keystore)
    provider = RealProvider(net.provider_url, folder / "brizo.log", folder / "events.log")
    bind = urlsplit(net.provider_url).netloc
    started: list[subprocess.Popen[bytes]] = []
    try:
        with open(provider.brizo_log, "wb") as log:
            brizo = subprocess.Popen([str(brizo_python37.parent / "gunicorn"), "-b", bind, "-w", "1", "-t", "120",
                                      "brizo.run:app"], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        started.append(brizo)
        with open(provider.events_log, "wb") as log:
            events = subprocess.Popen([str(brizo_python37), "-I", str(EVENTS37)], cwd=folder, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        started.append(events)
        _wait("Brizo", lambda: _answers(provider.url + "/"), brizo, provider)
        _wait("the events handler", lambda: "events37: watching agreements" in _tail(provider.events_log),
              events, provider)
        yield provider
    finally:
        for process in started:
            _stop(process.pid)
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def asset_files(net: devnet.DevnetState) -> dict[str, bytes]:
    assert net.files_dir
    tag = os.urandom(4).hex()
    files = {f"brizo-{tag}.bin": os.urandom(3000) + bytes(range(256)), f"brizo-{tag}.csv": b"a,b\n1,2\n3,\xc3\xa9\n"}
    for name, data in files.items():
        (Path(net.files_dir) / name).write_bytes(data)
    return files


@pytest.fixture(scope="module")
def published(drive: Driver, net: devnet.DevnetState, real_provider: RealProvider,
              asset_files: dict[str, bytes]) -> dict[str, Any]:
    return drive("squid_publish", metadata=metadata(net, asset_files, "served by the real Brizo"))


@pytest.fixture(scope="module")
def ordered(drive: Driver, published: dict[str, Any]) -> dict[str, Any]:
    return drive("squid_order", did=published["did"])


def test_the_real_brizo_serves_the_devnets_chain_with_the_providers_account(
        net: devnet.DevnetState, real_provider: RealProvider) -> None:
    info = requests.get(real_provider.url + "/", timeout=10).json()
    assert (info["software"], info["version"]) == ("Brizo", "0.9.7")
    assert info["provider-address"] == net.provider_address
    assert (info["keeper-url"], info["network"]) == (net.chain_url, "development")
    assert info["contracts"] == {name: net.contracts[name] for name in info["contracts"]}


def test_publish_names_the_real_brizo_and_the_secret_store(
        net: devnet.DevnetState, real_provider: RealProvider, published: dict[str, Any]) -> None:
    services = {s["type"]: s for s in published["ddo"]["service"]}
    assert services["authorization"]["serviceEndpoint"] == net.secret_store_url
    assert services["access"]["serviceEndpoint"].startswith(real_provider.url + "/")


def test_the_real_events_handler_grants_access(real_provider: RealProvider, ordered: dict[str, Any]) -> None:
    assert ordered["status"]["conditions"]["lockReward"] == 2
    assert ordered["status"]["conditions"]["accessSecretStore"] == 2
    assert f"Done AccessSecretStoreCondition.fulfill for agreement {ordered['agreement_id']}" in \
        real_provider.events_log.read_text(encoding="utf-8", errors="replace"), real_provider.logs()


def test_default_consume_through_the_real_brizo(drive: Driver, real_provider: RealProvider,
                                                published: dict[str, Any], ordered: dict[str, Any],
                                                asset_files: dict[str, bytes], tmp_path: Path) -> None:
    # squid-py decrypts the URLs with the consumer's key, then Brizo's url= form, one request per file
    got = drive("squid_consume", did=published["did"], agreement_id=ordered["agreement_id"],
                service_index=ordered["service_index"], destination=str(tmp_path / "downloads"))
    assert {name: bytes.fromhex(data) for name, data in got["files"].items()} == asset_files
    log = real_provider.brizo_log.read_text(encoding="utf-8", errors="replace")
    assert log.count(f"agreementId {ordered['agreement_id']}") >= len(asset_files), real_provider.logs()


@pytest.mark.parametrize("index", [0, 1])
def test_consume_with_index_through_the_real_brizo(drive: Driver, published: dict[str, Any],
                                                   ordered: dict[str, Any], asset_files: dict[str, bytes],
                                                   tmp_path: Path, index: int) -> None:
    # the consumer signs the agreement id; Brizo decrypts the file list through the Secret Store
    # (secret-store-client with the provider's keystore account on the devnet's JSON-RPC face)
    got = drive("squid_consume", did=published["did"], agreement_id=ordered["agreement_id"],
                service_index=ordered["service_index"], destination=str(tmp_path / "downloads"), index=index)
    name = list(asset_files)[index]
    assert {n: bytes.fromhex(d) for n, d in got["files"].items()} == {name: asset_files[name]}


def test_an_asset_encrypted_by_the_real_brizos_publish_is_refused_to_consumers(
        drive: Driver, net: devnet.DevnetState, real_provider: RealProvider, asset_files: dict[str, bytes],
        tmp_path: Path) -> None:
    # use_secret_store=False: Brizo 0.9.7's services/publish generates the key with the provider's
    # account and names no owner-to-be (it predates them), while the publisher registers the DID: its
    # first registrant is neither the key's author nor its owner-to-be, so the key servers serve the
    # author alone (docs/security.md, finding 1), and squid-py, which decrypts the file list with the
    # consumer's account before it calls Brizo, is refused even after the order is granted.
    published = drive("squid_publish", metadata=metadata(net, asset_files, "encrypted by the real Brizo"),
                      use_secret_store=False)
    did = published["did"]
    encrypted = {s["type"]: s for s in published["ddo"]["service"]}["metadata"]["attributes"]["encryptedFiles"]
    files = drive("ssc_decrypt", account="provider", document_id=did.removeprefix("did:op:"), encrypted=encrypted)
    assert [f["url"] for f in json.loads(files)] == [f"{net.files_url}/{name}" for name in asset_files]
    ordered = drive("squid_order", did=did)
    assert ordered["status"]["conditions"]["accessSecretStore"] == 2
    with pytest.raises(StackError) as refused:
        drive("squid_consume", did=did, agreement_id=ordered["agreement_id"],
              service_index=ordered["service_index"], destination=str(tmp_path / "downloads"), index=0)
    assert refused.value.type == "RPCError"
    assert "Failed to retrieve decryption keys" in refused.value.message
