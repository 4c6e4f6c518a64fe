"""Start and stop a local anvil chain (the platform binary, in its own process group) for tests and the devnet."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from eth_account import Account

from ..crypto.hashes import checksum_address
from ..exceptions import ChainError
from ..protocol.hexcodec import parse_hex
from ..tools import anvil_path

#: anvil's (and hardhat's) default test mnemonic; its accounts are public knowledge: dev only.
DEFAULT_MNEMONIC = "test test test test test test test test test test test junk"
DEFAULT_CHAIN_ID = 31337

_BIND_ATTEMPTS = 5


@dataclass
class AnvilProcess:
    """A running anvil. ``private_keys`` are the funded dev accounts (``0x`` hex), in anvil's order."""

    url: str
    host: str
    port: int
    chain_id: int
    private_keys: tuple[str, ...] = field(repr=False)
    addresses: tuple[str, ...] = field(repr=False)  # checksum form
    process: subprocess.Popen[bytes] = field(repr=False)
    log_path: Path
    state_path: Path | None = None
    _scratch: Path | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the process group (anvil dumps ``--state`` on SIGTERM), SIGKILL after ``timeout``."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        return self.process.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # The child leads its own session, so its process group id is its pid; only ever signalled
    # while Popen still owns the (unreaped) child, so the id cannot have been reused.
    with contextlib.suppress(ProcessLookupError):  # it exited on its own: nothing left to signal
        os.killpg(pid, sig)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def rpc_call(url: str, method: str, params: list[object] | None = None, timeout: float = 2.0) -> object:
    """One blocking JSON-RPC call (stdlib only); raises OSError/ValueError on transport or RPC errors."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer = json.loads(response.read())
    if "error" in answer:
        raise ValueError(f"{method}: {answer['error']}")
    return answer["result"]


def dev_accounts(count: int, mnemonic: str = DEFAULT_MNEMONIC) -> list[str]:
    """Private keys (``0x`` hex) of the first ``count`` accounts of ``mnemonic`` (m/44'/60'/0'/0/i)."""
    Account.enable_unaudited_hdwallet_features()
    return [
        Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{i}").key.to_0x_hex() for i in range(count)
    ]


def start_anvil(
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    chain_id: int = DEFAULT_CHAIN_ID,
    accounts: int = 10,
    state_path: str | os.PathLike[str] | None = None,
    log_path: str | os.PathLike[str] | None = None,
    block_time: float | None = None,
    base_fee: int | None = None,
    extra_args: list[str] | None = None,
    startup_timeout: float = 20.0,
) -> AnvilProcess:
    """Start anvil and return once ``eth_chainId`` answers.

    ``port=0`` picks a free port and retries with another if anvil cannot bind it (another process
    took it in between). ``state_path`` is anvil's ``--state`` (loaded at start, dumped on SIGTERM);
    ``log_path`` receives anvil's output (a scratch file, removed on stop, otherwise).
    Without ``block_time`` anvil automines one block per transaction. ``base_fee`` (wei) is the
    blocks' base fee: 0 keeps it at 0 for good (anvil treats a zero base fee as fixed), so the
    legacy transactions of Parity-era clients, which pay a fixed 1 gwei, are always mined.
    """
    binary = anvil_path()
    scratch = Path(tempfile.mkdtemp(prefix="anvil-"))
    log_file = Path(log_path) if log_path is not None else scratch / "anvil.log"
    config_out = scratch / "config.json"
    attempts = _BIND_ATTEMPTS if port == 0 else 1
    last_error = ""
    try:
        for _ in range(attempts):
            chosen = port or free_port(host)
            args = [
                str(binary), "--host", host, "--port", str(chosen), "--chain-id", str(chain_id),
                "--accounts", str(accounts), "--config-out", str(config_out),
            ]
            if state_path is not None:
                args += ["--state", str(state_path)]
            if block_time is not None:
                args += ["--block-time", str(block_time)]
            if base_fee is not None:
                args += ["--block-base-fee-per-gas", str(base_fee)]
            args += extra_args or []
            config_out.unlink(missing_ok=True)
            with open(log_file, "ab") as log:
                process = subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            url = f"http://{host}:{chosen}"
            try:
                _wait_ready(process, url, chain_id, startup_timeout)
            except _Exited:
                last_error = _tail(log_file)
                continue  # most likely the port was taken between our probe and anvil's bind
            except BaseException:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
                raise
            keys, addresses = _read_accounts(config_out, accounts)
            return AnvilProcess(
                url=url, host=host, port=chosen, chain_id=chain_id, private_keys=keys, addresses=addresses,
                process=process, log_path=log_file, _scratch=scratch,
                state_path=Path(state_path) if state_path is not None else None,
            )
        raise ChainError(f"anvil did not start on {host} after {attempts} attempt(s): {last_error or 'no output'}")
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


class _Exited(Exception):
    pass


def _wait_ready(process: subprocess.Popen[bytes], url: str, chain_id: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if process.poll() is not None:
            raise _Exited()
        try:
            answer = rpc_call(url, "eth_chainId", timeout=1.0)
        except (OSError, ValueError):
            answer = None
        if answer is not None:
            if int(str(answer), 16) != chain_id:
                raise ChainError(
                    f"{url} answers with chain id {answer}, expected {chain_id}: another chain took the port"
                )
            return
        if time.monotonic() > deadline:
            raise ChainError(f"anvil at {url} did not answer eth_chainId within {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def _read_accounts(config_out: Path, accounts: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    # anvil writes --config-out before it serves; deriving the default mnemonic is the fallback.
    try:
        data = json.loads(config_out.read_text())
        keys = tuple(str(k) for k in data["private_keys"])
        addresses = tuple(
            checksum_address(parse_hex(a, "an anvil account address", 20)) for a in data["available_accounts"]
        )
        if len(keys) == len(addresses) == accounts:
            return keys, addresses
    except (OSError, ValueError, KeyError, TypeError):
        pass  # an unreadable or short file: derive the accounts below instead
    derived = tuple(dev_accounts(accounts))
    return derived, tuple(Account.from_key(k).address for k in derived)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])
