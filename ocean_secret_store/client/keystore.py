"""A directory of Ethereum v3 keystore files, indexed by address, unlocked by password with a hot-path cache.

Parity's ``secretstore_*`` RPC methods take the account password in every call, so the RPC face
unlocks an account per request. A keystore KDF is deliberately slow (eth-account's default scrypt
costs about 0.7 s; Parity's pbkdf2 with 10,240 rounds a few milliseconds), so the first successful
unlock of an account is remembered: the private key is kept in memory together with an HMAC of
the password under a random per-process key, and a later unlock with the *same* password costs a
hash and a constant-time compare. Any other password misses the cache and goes through the full
KDF and keystore MAC check, so a wrong password always fails.

The directory is re-scanned when its modification time changes, so keystore files added while
a server runs are found; a cache entry is dropped when its file changes or disappears.
Files that are not v3 keystores (Parity's ``address_book.json``, READMEs, dot files) are skipped.

Errors are :class:`KeystoreError` (:class:`UnknownAccount`, :class:`WrongPassword`); their
messages name the account and the file, never the password or the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from ..crypto.curve import Scalar
from ..crypto.hashes import checksum_address
from ..exceptions import MalformedHex
from ..keyfile import KeystoreError, WrongPassword, decrypt_keyfile, read_keyfile
from ..protocol.hexcodec import parse_hex

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = [
    "Keystore",
    "KeystoreError",
    "UnknownAccount",
    "WrongPassword",
    "parse_address",
    "write_keystore",
]

log = logging.getLogger(__name__)

#: Parity's keystore KDF: pbkdf2-hmac-sha256 with 10,240 rounds (light enough for a devnet).
PARITY_PBKDF2_ROUNDS: Final = 10240

#: Coarser than any file system's timestamp tick (Linux stamps with the jiffy clock, 1-10 ms).
_MTIME_GRANULARITY_NS: Final = 50_000_000

_ADDRESS = re.compile(r"(?:0x)?([0-9a-fA-F]{40})")


class UnknownAccount(KeystoreError):
    """No keystore file in the directory holds this address."""


def parse_address(value: object) -> bytes:
    """The 20 bytes of an address given as 40 hex digits, with or without ``0x``, in any case."""
    if isinstance(value, (bytes, bytearray)):
        if len(value) != 20:
            raise MalformedHex(f"an address is 20 bytes, got {len(value)}")
        return bytes(value)
    if not isinstance(value, str):
        raise MalformedHex(f"an address must be a hex string, got {type(value).__name__}")
    match = _ADDRESS.fullmatch(value)
    if match is None:
        raise MalformedHex("an address must be 40 hex digits, optionally prefixed by 0x")
    return bytes.fromhex(match.group(1))


@dataclass(frozen=True)
class _Entry:
    address: bytes
    path: Path
    keyfile: dict[str, Any] = field(repr=False, compare=True)


@dataclass(frozen=True)
class _Unlocked:
    password_tag: bytes
    account: LocalAccount
    keyfile: dict[str, Any]


def _read_keyfile(path: Path) -> tuple[bytes, dict[str, Any]] | None:
    """``(address, keyfile)`` if ``path`` is a v3 keystore file naming its address, else None."""
    try:
        if path.stat().st_size > 64 * 1024:  # keystores are < 1 KB; don't parse anything large
            return None
        keyfile = read_keyfile(path)
    except (OSError, KeystoreError):
        return None  # not a keystore: a directory scan skips it (READMEs, address books)
    if keyfile.get("version") != 3:
        return None
    try:
        return parse_address(keyfile.get("address")), keyfile
    except MalformedHex:
        # Without an address the file can only be indexed by decrypting it: not worth a KDF at load.
        log.warning("skipping keystore file %s: it has no valid address field", path.name)
        return None


class Keystore:
    """The v3 keystore files of a directory by address; :meth:`unlock` gives an eth-account ``LocalAccount``.

    Thread-safe: :meth:`unlock` may run in worker threads (a first unlock is a KDF) while the
    event loop serves cached unlocks with :meth:`unlock_cached`.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self._directory = Path(directory)
        if not self._directory.is_dir():
            raise KeystoreError(f"keystore directory {self._directory} does not exist or is not a directory")
        self._lock = threading.Lock()
        self._entries: dict[bytes, _Entry] = {}
        self._unlocked: dict[bytes, _Unlocked] = {}
        self._scanned_mtime: int | None = None
        self._scanned_at = 0
        # Cache entries are keyed by an HMAC of the password under a key that never leaves the
        # process: the memory holds nothing a password guess could be checked against offline
        # more cheaply than the keystore file itself.
        self._tag_key = secrets.token_bytes(32)
        self.reload()

    @property
    def directory(self) -> Path:
        return self._directory

    def reload(self) -> None:
        """Re-read the directory; forget cached unlocks of files that changed or disappeared."""
        try:
            scanned_at = time.time_ns()
            mtime = self._directory.stat().st_mtime_ns
            names = sorted(os.listdir(self._directory))
        except OSError as exc:
            raise KeystoreError(f"cannot read keystore directory {self._directory}: {exc.strerror}") from exc
        entries: dict[bytes, _Entry] = {}
        for name in names:
            if name.startswith("."):
                continue
            path = self._directory / name
            if not path.is_file():
                continue
            found = _read_keyfile(path)
            if found is None:
                continue
            address, keyfile = found
            if address in entries:
                # Sorted names: with geth/Parity "UTC--<time>--<address>" names the newest file wins.
                log.warning(
                    "keystore files %s and %s both hold %s; using the latter",
                    entries[address].path.name,
                    name,
                    checksum_address(address),
                )
            entries[address] = _Entry(address, path, keyfile)
        with self._lock:
            self._entries = entries
            self._scanned_mtime = mtime
            self._scanned_at = scanned_at
            for address in list(self._unlocked):
                entry = entries.get(address)
                if entry is None or entry.keyfile != self._unlocked[address].keyfile:
                    del self._unlocked[address]

    def _refresh_if_changed(self) -> None:
        try:
            mtime = self._directory.stat().st_mtime_ns
        except OSError:
            return
        # File systems stamp mtimes with a coarse clock: a change in the same tick as our scan keeps
        # the old mtime, so a scan that close to the last change is not trusted until repeated.
        if mtime != self._scanned_mtime or self._scanned_at - mtime < _MTIME_GRANULARITY_NS:
            self.reload()

    def addresses(self) -> list[str]:
        """Checksummed addresses of every account in the directory, sorted by their bytes."""
        self._refresh_if_changed()
        return [checksum_address(address) for address in sorted(self._entries)]

    def __contains__(self, address: object) -> bool:
        try:
            raw = parse_address(address)
        except MalformedHex:
            return False
        self._refresh_if_changed()
        return raw in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def path_of(self, address: str | bytes) -> Path:
        """The keystore file of ``address``; raises :class:`UnknownAccount`."""
        return self._entry(parse_address(address)).path

    def _entry(self, address: bytes) -> _Entry:
        entry = self._entries.get(address)
        if entry is None:
            self._refresh_if_changed()
            entry = self._entries.get(address)
        if entry is None:
            raise UnknownAccount(
                f"unknown account {checksum_address(address)}: no keystore file holds it",
                checksum_address(address),
            )
        return entry

    def _password_tag(self, address: bytes, password: str) -> bytes:
        return hmac.new(self._tag_key, address + password.encode("utf-8"), hashlib.sha256).digest()

    def unlock_cached(self, address: str | bytes, password: str) -> LocalAccount | None:
        """The account if it was unlocked before with this very password, else None (a miss never raises)."""
        raw = parse_address(address)
        self._refresh_if_changed()  # one stat(): a replaced keystore file must not keep its old password
        cached = self._unlocked.get(raw)
        if cached is None:
            return None
        if not hmac.compare_digest(cached.password_tag, self._password_tag(raw, password)):
            return None
        return cached.account

    def unlock(self, address: str | bytes, password: str) -> LocalAccount:
        """Decrypt the account's keystore with ``password``.

        Raises :class:`UnknownAccount` if no file holds the address, :class:`WrongPassword` if the
        keystore MAC does not match, :class:`KeystoreError` for an unusable file.
        """
        raw = parse_address(address)
        if not isinstance(password, str):
            raise KeystoreError(f"the password must be a string, got {type(password).__name__}")
        account = self.unlock_cached(raw, password)
        if account is not None:
            return account
        entry = self._entry(raw)
        account = self._decrypt(entry, password)
        with self._lock:
            # Only cache against the file we decrypted: a reload meanwhile may have replaced it.
            current = self._entries.get(raw)
            if current is not None and current.keyfile == entry.keyfile:
                self._unlocked[raw] = _Unlocked(self._password_tag(raw, password), account, entry.keyfile)
        return account

    def forget(self, address: str | bytes | None = None) -> None:
        """Drop the cached key of ``address`` (of every account if None)."""
        with self._lock:
            if address is None:
                self._unlocked.clear()
            else:
                self._unlocked.pop(parse_address(address), None)

    @staticmethod
    def _decrypt(entry: _Entry, password: str) -> LocalAccount:
        from eth_account import Account  # noqa: PLC0415 -- ~0.3 s of imports, paid only once an account is unlocked

        name = checksum_address(entry.address)
        key = decrypt_keyfile(entry.keyfile, password, f"keystore file {entry.path.name} of {name}", name)
        account = Account.from_key(key)
        if parse_address(account.address) != entry.address:
            raise KeystoreError(
                f"keystore file {entry.path.name} claims address {name} but holds the key of another account",
                name,
            )
        return account

    def __repr__(self) -> str:
        return f"Keystore({str(self._directory)!r}, accounts={len(self._entries)})"


def write_keystore(
    directory: str | os.PathLike[str],
    private_key: bytes | str,
    password: str,
    *,
    kdf: Literal["pbkdf2", "scrypt"] = "pbkdf2",
    iterations: int = PARITY_PBKDF2_ROUNDS,
) -> Path:
    """Write a v3 keystore file ``UTC--<time>--<address>`` (mode 0600) into ``directory``; return its path.

    The default KDF is Parity's (pbkdf2-hmac-sha256, 10,240 rounds): light enough for a devnet
    where an unlock sits on a request path. ``kdf="scrypt"`` takes ``iterations`` as scrypt's n.
    Refuses to write a second file for an address the directory already holds.
    """
    from eth_account import Account  # noqa: PLC0415 -- ~0.3 s of imports, paid only when a keystore is written

    if isinstance(private_key, str):
        private_key = parse_hex(private_key, "the private key", 32, prefix=None)
    if len(private_key) != 32:
        raise MalformedHex(f"the private key must be 32 bytes, got {len(private_key)}")
    Scalar.from_bytes(private_key)  # InvalidScalar for 0 or >= n, before anything touches the disk
    keyfile = Account.encrypt(private_key, password, kdf=kdf, iterations=iterations)
    target = Path(directory)
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    address = parse_address(keyfile["address"])
    # Parity writes the address in lower case without 0x; geth and eth-account read either.
    keyfile["address"] = address.hex()
    for existing in target.iterdir():
        if existing.name.startswith(".") or not existing.is_file():
            continue
        found = _read_keyfile(existing)
        if found is not None and found[0] == address:
            raise KeystoreError(
                f"{target} already holds a keystore for {checksum_address(address)} ({existing.name})",
                checksum_address(address),
            )
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%S.%fZ")
    path = target / f"UTC--{stamp}--{address.hex()}"
    temporary = target / f".{path.name}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(keyfile, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
