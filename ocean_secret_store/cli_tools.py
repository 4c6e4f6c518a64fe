"""Helpers of the command line that are not argument parsing: accounts from keystores or the
environment (never from a bare argument), cluster URLs, key ids, streams and progress."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .exceptions import SecretStoreError
from .keyfile import KeystoreError, unlock_file
from .ocean.did import did_to_id
from .protocol.hexcodec import parse_hex

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount


class UsageError(SecretStoreError):
    """The command line was given something it cannot use (exit code 2)."""


def load_account(key_env: str | None, keystore: str | None, password_env: str | None) -> LocalAccount:
    """An eth-account LocalAccount from ``$KEY_ENV`` (hex private key) or a v3 keystore file."""
    from eth_account import Account  # noqa: PLC0415 -- ~0.3 s of imports that `--help` and most errors never need

    if key_env:
        value = os.environ.get(key_env)
        if not value:
            raise UsageError(f"environment variable {key_env} (the account's private key) is not set")
        try:
            return Account.from_key(value)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{key_env} does not hold a valid private key (64 hex digits)") from exc
    if keystore:
        if not password_env or password_env not in os.environ:
            raise UsageError("a keystore needs --password-env naming the variable that holds its password")
        try:
            return Account.from_key(unlock_file(Path(keystore), os.environ[password_env]))
        except KeystoreError as exc:  # its message names the file, never the password
            raise UsageError(f"cannot unlock the keystore: {exc}") from None
    raise UsageError("no account: give --key-env VAR (private key in the environment) or --keystore FILE")


def split_urls(urls: list[str] | None) -> list[str]:
    """URLs from repeated and comma-separated options, without trailing slashes."""
    return [u.strip().rstrip("/") for item in urls or () for u in item.split(",") if u.strip()]


def cluster_urls(urls: list[str] | None, devnet_dir: str | None) -> list[str]:
    if urls:
        return split_urls(urls)
    from .devnet import DevnetState  # noqa: PLC0415 -- the devnet pulls in requests and the node config; only this path needs it

    state = DevnetState.load(Path(devnet_dir or ".devnet"))
    if state is not None:
        return [node.http_url for node in state.nodes]
    raise UsageError("no key servers: give --url (repeatable) or --devnet DIR with a devnet.json")


def key_id_from(key_id: str | None, did: str | None) -> bytes:
    if did:
        if key_id:
            raise UsageError("give exactly one of --key-id (64 hex) or --did (did:op:...)")
        return did_to_id(did)
    if not key_id:
        raise UsageError("give exactly one of --key-id (64 hex) or --did (did:op:...)")
    return parse_hex(key_id, "--key-id", 32, prefix=None, error=UsageError)


def open_in(path: str | None) -> IO[bytes]:
    if path is None or path == "-":
        return sys.stdin.buffer
    return open(path, "rb")  # the caller closes it (unless it is stdin)


def open_out(path: str | None) -> IO[bytes]:
    if path is None or path == "-":
        return sys.stdout.buffer
    return open(path, "wb")  # the caller closes it (unless it is stdout)


class Progress:
    """A byte-count progress line on stderr when it is a terminal (or when forced)."""

    def __init__(self, total: int | None, label: str, enabled: bool) -> None:
        self.total, self.label, self.enabled = total, label, enabled
        self.done = 0
        self._last = 0.0

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._last > 0.2:
            self._last = now
            self._draw()

    def _draw(self) -> None:
        if self.total:
            pct = 100 * self.done / self.total
            sys.stderr.write(f"\r{self.label}: {self.done / 2**20:8.1f} / {self.total / 2**20:.1f} MiB ({pct:5.1f}%)")
        else:
            sys.stderr.write(f"\r{self.label}: {self.done / 2**20:8.1f} MiB")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            self._draw()
            sys.stderr.write("\n")


class CountingReader:
    """Wraps a binary stream and reports every chunk read to a progress callback."""

    def __init__(self, raw: IO[bytes], progress: Progress) -> None:
        self.raw, self.progress = raw, progress

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)  # type: ignore[attr-defined] # open() and stdin give buffered readers, which have it
        self.progress(n or 0)
        return n or 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.progress(len(data))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)
