"""Helpers of the command line that are not argument parsing: accounts from keystores or the
environment (never from a bare argument), cluster URLs, key ids, streams and progress."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

from .exceptions import SecretStoreError


class UsageError(SecretStoreError):
    """The command line was given something it cannot use (exit code 2)."""


def load_account(key_env: str | None, keystore: str | None, password_env: str | None) -> Any:
    """An eth-account LocalAccount from ``$KEY_ENV`` (hex private key) or a v3 keystore file."""
    from eth_account import Account

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
            data = json.loads(Path(keystore).read_text())
            return Account.from_key(Account.decrypt(data, os.environ[password_env]))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot unlock keystore {keystore}: wrong password or not a v3 keystore") from exc
    raise UsageError("no account: give --key-env VAR (private key in the environment) or --keystore FILE")


def cluster_urls(urls: list[str] | None, devnet_dir: str | None) -> list[str]:
    if urls:
        return [u.rstrip("/") for item in urls for u in item.split(",") if u]
    state_file = Path(devnet_dir or ".devnet") / "devnet.json"
    if state_file.exists():
        return [n["http_url"] for n in json.loads(state_file.read_text())["nodes"]]
    raise UsageError("no key servers: give --url (repeatable) or --devnet DIR with a devnet.json")


def key_id_from(key_id: str | None, did: str | None) -> bytes:
    if bool(key_id) == bool(did):
        raise UsageError("give exactly one of --key-id (64 hex) or --did (did:op:...)")
    if did:
        from .ocean.did import did_to_id

        return did_to_id(did)
    text = key_id[2:] if key_id.startswith("0x") else key_id  # type: ignore[union-attr]
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise UsageError("--key-id must be 64 hex digits") from exc
    if len(raw) != 32:
        raise UsageError(f"--key-id must be 32 bytes (64 hex digits), got {len(raw)}")
    return raw


def open_in(path: str | None) -> IO[bytes]:
    return sys.stdin.buffer if path in (None, "-") else open(path, "rb")  # noqa: SIM115


def open_out(path: str | None) -> IO[bytes]:
    return sys.stdout.buffer if path in (None, "-") else open(path, "wb")  # noqa: SIM115


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
        n = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        self.progress(n or 0)
        return n or 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.progress(len(data))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)
