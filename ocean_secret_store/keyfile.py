"""Ethereum v3 keystore files: reading and unlocking them, with one set of error rules for every
caller (the node config, the command line, the JSON-RPC face).

The errors name the file and the account, never the password or the key. eth-account is imported
lazily: it pulls in a large dependency tree that an inline-secret node never needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .crypto.curve import N
from .exceptions import SecretStoreError

PRIVATE_KEY_SIZE = 32


class KeystoreError(SecretStoreError):
    """A keystore directory or file is unusable, or an account cannot be unlocked.

    ``address`` is the checksummed account address concerned, or None.
    """

    def __init__(self, message: str, address: str | None = None) -> None:
        self.address = address
        super().__init__(message)


class WrongPassword(KeystoreError):
    """The password does not decrypt the account's keystore file (its MAC does not match)."""


def read_keyfile(path: Path) -> dict[str, Any]:
    """The parsed JSON of a v3 keystore file, checked for its ``crypto`` section.

    :raises KeystoreError: unreadable, not JSON, or not shaped like a v3 keystore.
    """
    try:
        keyfile = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KeystoreError(f"cannot read keystore file {path} ({exc.strerror or exc})") from None
    except ValueError:
        raise KeystoreError(f"keystore file {path} is not JSON") from None
    if not isinstance(keyfile, dict) or not isinstance(keyfile.get("crypto", keyfile.get("Crypto")), dict):
        raise KeystoreError(f"{path} is not an Ethereum v3 keystore")
    return keyfile


def decrypt_keyfile(keyfile: dict[str, Any], password: str, name: str, address: str | None = None) -> bytes:
    """The 32-byte private key inside a parsed v3 keystore; ``name`` labels the file in errors.

    :raises WrongPassword: the password does not decrypt it (MAC mismatch).
    :raises KeystoreError: an unsupported or malformed keystore, or not a valid secp256k1 key.
    """
    from eth_account import Account  # noqa: PLC0415 -- eth-account costs ~0.4 s at import; inline-secret nodes never unlock

    try:
        raw = bytes(Account.decrypt(keyfile, password))
    except ValueError as exc:
        # eth-account says "MAC mismatch" for a wrong password; other ValueErrors mean a bad file.
        if "MAC" in str(exc):
            raise WrongPassword(f"the password does not decrypt {name} (MAC mismatch)", address) from None
        raise KeystoreError(f"cannot decrypt {name}: unsupported or malformed keystore", address) from None
    except (KeyError, TypeError, NotImplementedError) as exc:
        # eth-keyfile's texts here are about the file's format (e.g. an unsupported KDF), never the key.
        raise KeystoreError(
            f"cannot decrypt {name}: not a usable v3 keystore ({type(exc).__name__}: {exc})", address
        ) from None
    if len(raw) != PRIVATE_KEY_SIZE or not 0 < int.from_bytes(raw, "big") < N:
        raise KeystoreError(f"{name} does not hold a valid secp256k1 private key", address)
    return raw


def unlock_file(path: Path, password: str) -> bytes:
    """Read and decrypt the keystore file at ``path``: its 32-byte private key."""
    return decrypt_keyfile(read_keyfile(path), password, str(path))
