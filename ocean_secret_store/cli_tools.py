"""Helpers of the command line that are not argument parsing: accounts from keystores or the
environment (never from a bare argument), cluster URLs, key ids, node ids, streams and progress
(of a stream, or of an admin session)."""

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


def admin_secret_from_env(name: str | None) -> int:
    """The administrator's private key from ``$NAME`` (64 hex digits, ``0x`` optional); never echoed."""
    from .crypto.curve import N  # noqa: PLC0415 -- coincurve only for the admin commands
    if not name:
        raise UsageError("give --admin-key-env VAR: the environment variable holding the admin private key (hex)")
    value = os.environ.get(name, "").strip()
    if not value:
        raise UsageError(f"environment variable {name} (the admin private key) is not set")
    secret = int.from_bytes(parse_hex(value, name, 32, prefix=None, error=UsageError), "big")
    if not 0 < secret < N:
        raise UsageError(f"{name} does not hold a valid secp256k1 private key")
    return secret


def admin_secret(key_env: str | None, keystore: Path | None, password_env: str | None) -> int:
    """The administrator's private key: from ``$KEY_ENV`` (hex), or from a v3 keystore (``cluster init``
    writes one) unlocked with the password in ``$PASSWORD_ENV``; never echoed."""
    if keystore is None:
        return admin_secret_from_env(key_env)
    if not password_env or password_env not in os.environ:
        raise UsageError("--admin-keystore needs --admin-password-env naming the variable that holds its password")
    try:
        return int.from_bytes(unlock_file(keystore, os.environ[password_env]), "big")
    except KeystoreError as exc:  # its message names the file, never the password
        raise UsageError(f"cannot unlock the admin keystore: {exc}") from None


def node_ids(values: list[str] | None) -> list[bytes]:
    """Node ids (``0x`` + 128 hex each) from repeated and comma-separated options."""
    from .client.admin import parse_node_id  # noqa: PLC0415 -- requests and the client only for admin commands
    from .exceptions import ClientError  # noqa: PLC0415 -- beside the import it belongs to

    out = []
    for text in split_urls(values):
        try:
            out.append(parse_node_id(text))
        except ClientError as exc:
            raise UsageError(f"{text[:20]}..: {exc}") from None
    if not out:
        raise UsageError("give the new servers set: --nodes 0x<128 hex>,0x<128 hex>,...")
    return out


class AdminProgress:
    """An admin session's progress on stderr while it runs: ``done + failed + skipped`` of ``total``
    keys, redrawn in place on a terminal, else one line whenever the numbers change."""

    def __init__(self, label: str, *, stream: IO[str] | None = None, width: int = 30) -> None:
        self.label, self.width = label, width
        self.stream = sys.stderr if stream is None else stream
        self.tty = self.stream.isatty()
        self._last: tuple[Any, ...] | None = None
        self.drawn = False

    def __call__(self, status: dict[str, Any]) -> None:
        progress = status.get("progress") or {}
        total = int(progress.get("total") or 0)
        counts = [int(progress.get(k) or 0) for k in ("done", "failed", "skipped")]
        state = str(progress.get("state", "?"))
        key = (state, total, *counts)
        if key == self._last:
            return
        self._last = key
        finished = min(sum(counts), total)
        filled = self.width * finished // total if total else 0
        bar = "#" * filled + "." * (self.width - filled)
        line = (f"{self.label}: [{bar}] {finished}/{total} keys ({state}; done {counts[0]}, failed {counts[1]}, "
                f"skipped {counts[2]})")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()
        self.drawn = True

    def finish(self) -> None:
        if self.drawn and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def admin_summary(report: dict[str, Any]) -> str:
    """One line of an admin session's final progress: ``done: 5 keys, done 5, failed 0, skipped 0, lost 0``."""
    lost = report.get("lost") or []
    return (f"{report.get('state', '?')}: {report.get('total', 0)} keys, done {report.get('done', 0)}, "
            f"failed {report.get('failed', 0)}, skipped {report.get('skipped', 0)}, lost {len(lost)}")
