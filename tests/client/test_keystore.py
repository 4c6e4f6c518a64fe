"""The keystore directory: v3 files written and read, unlock by password, the hot-path cache, its limits."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
from eth_account import Account

from ocean_secret_store.client.keystore import (
    PARITY_PBKDF2_ROUNDS,
    Keystore,
    KeystoreError,
    UnknownAccount,
    WrongPassword,
    parse_address,
    write_keystore,
)
from ocean_secret_store.crypto.hashes import checksum_address
from ocean_secret_store.exceptions import InvalidScalar, MalformedHex, SecretStoreError

#: Light KDF for tests; the timing test uses Parity's real 10,240 rounds.
LIGHT = 16
SECRET_A = "0x" + "a1" * 32
SECRET_B = "0x" + "b2" * 32
ADDRESS_A = Account.from_key(SECRET_A).address
ADDRESS_B = Account.from_key(SECRET_B).address


def bump_mtime(directory: Path) -> None:
    # Make a directory change visible even if it happened within the file system's timestamp tick.
    later = time.time() + 5
    os.utime(directory, (later, later))


def test_write_keystore_writes_a_private_parity_style_v3_file(tmp_path: Path) -> None:
    path = write_keystore(tmp_path / "keys", SECRET_A, "pw", iterations=LIGHT)
    assert path.parent == tmp_path / "keys"
    assert path.name.startswith("UTC--") and path.name.endswith("--" + ADDRESS_A[2:].lower())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    keyfile = json.loads(path.read_text())
    assert keyfile["version"] == 3
    assert keyfile["address"] == ADDRESS_A[2:].lower()
    assert keyfile["crypto"]["kdf"] == "pbkdf2"
    assert keyfile["crypto"]["kdfparams"]["c"] == LIGHT
    assert keyfile["crypto"]["kdfparams"]["prf"] == "hmac-sha256"
    assert "a1" * 32 not in path.read_text()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temporary file left behind"


def test_default_kdf_is_parity_pbkdf2_10240(tmp_path: Path) -> None:
    keyfile = json.loads(write_keystore(tmp_path, SECRET_A, "pw").read_text())
    assert PARITY_PBKDF2_ROUNDS == 10240
    assert keyfile["crypto"]["kdfparams"]["c"] == 10240


def test_scrypt_keystore_with_small_n(tmp_path: Path) -> None:
    path = write_keystore(tmp_path, SECRET_B, "pw", kdf="scrypt", iterations=16)
    assert json.loads(path.read_text())["crypto"]["kdf"] == "scrypt"
    assert Keystore(tmp_path).unlock(ADDRESS_B, "pw").key == bytes.fromhex(SECRET_B[2:])


def test_write_keystore_refuses_a_second_file_for_an_address(tmp_path: Path) -> None:
    write_keystore(tmp_path, SECRET_A, "pw", iterations=LIGHT)
    with pytest.raises(KeystoreError, match=ADDRESS_A):
        write_keystore(tmp_path, SECRET_A, "other", iterations=LIGHT)
    assert len(list(tmp_path.iterdir())) == 1


def test_load_index_and_unlock(tmp_path: Path) -> None:
    write_keystore(tmp_path, SECRET_A, "pw-a", iterations=LIGHT)
    write_keystore(tmp_path, SECRET_B, "pw-b", iterations=LIGHT)
    keystore = Keystore(tmp_path)
    assert len(keystore) == 2
    assert keystore.addresses() == sorted([ADDRESS_A, ADDRESS_B], key=str.lower)
    assert all(a == checksum_address(parse_address(a)) for a in keystore.addresses())
    assert ADDRESS_A in keystore and ADDRESS_A.lower() in keystore and ADDRESS_A[2:] in keystore
    assert "0x" + "00" * 20 not in keystore and "nonsense" not in keystore
    assert keystore.path_of(ADDRESS_B).name.endswith(ADDRESS_B[2:].lower())
    account = keystore.unlock(ADDRESS_A.lower(), "pw-a")
    assert account.address == ADDRESS_A
    assert account.key == bytes.fromhex(SECRET_A[2:])
    assert keystore.unlock(parse_address(ADDRESS_B), "pw-b").address == ADDRESS_B
    assert "pw-a" not in repr(keystore)


def test_wrong_password_fails_before_and_after_a_right_one(tmp_path: Path) -> None:
    write_keystore(tmp_path, SECRET_A, "correct horse", iterations=LIGHT)
    keystore = Keystore(tmp_path)
    with pytest.raises(WrongPassword) as first:
        keystore.unlock(ADDRESS_A, "battery staple")
    assert keystore.unlock(ADDRESS_A, "correct horse").address == ADDRESS_A
    for wrong in ("battery staple", "", "correct horse ", "Correct horse"):
        with pytest.raises(WrongPassword) as again:
            keystore.unlock(ADDRESS_A, wrong)
        assert keystore.unlock_cached(ADDRESS_A, wrong) is None
    for error in (first.value, again.value):
        assert isinstance(error, KeystoreError) and isinstance(error, SecretStoreError)
        assert error.address == ADDRESS_A and ADDRESS_A in str(error)
        assert "staple" not in str(error) and "horse" not in str(error)
    # The right password still works (and is still served from the cache).
    assert keystore.unlock_cached(ADDRESS_A, "correct horse") is not None


def test_unknown_account(tmp_path: Path) -> None:
    write_keystore(tmp_path, SECRET_A, "pw", iterations=LIGHT)
    keystore = Keystore(tmp_path)
    with pytest.raises(UnknownAccount, match=ADDRESS_B) as caught:
        keystore.unlock(ADDRESS_B, "pw")
    assert caught.value.address == ADDRESS_B
    with pytest.raises(UnknownAccount):
        keystore.path_of(ADDRESS_B)
    with pytest.raises(MalformedHex):
        keystore.unlock("0x1234", "pw")


def test_cache_is_per_account_and_forgettable(tmp_path: Path) -> None:
    write_keystore(tmp_path, SECRET_A, "same", iterations=LIGHT)
    write_keystore(tmp_path, SECRET_B, "same", iterations=LIGHT)
    keystore = Keystore(tmp_path)
    assert keystore.unlock_cached(ADDRESS_A, "same") is None
    first = keystore.unlock(ADDRESS_A, "same")
    assert keystore.unlock_cached(ADDRESS_A, "same") is first
    # Same password, other account: not unlocked by A's entry.
    assert keystore.unlock_cached(ADDRESS_B, "same") is None
    keystore.forget(ADDRESS_A)
    assert keystore.unlock_cached(ADDRESS_A, "same") is None
    keystore.unlock(ADDRESS_A, "same")
    keystore.unlock(ADDRESS_B, "same")
    keystore.forget()
    assert (
        keystore.unlock_cached(ADDRESS_A, "same") is None
        and keystore.unlock_cached(ADDRESS_B, "same") is None
    )


def test_repeated_unlock_is_served_from_the_cache(tmp_path: Path) -> None:
    write_keystore(tmp_path, SECRET_A, "pw", iterations=PARITY_PBKDF2_ROUNDS)
    # Let the directory's mtime age past the keystore's "same clock tick" window, so the numbers
    # show the steady state (right after a change the directory is re-read on every call).
    time.sleep(0.06)
    keystore = Keystore(tmp_path)
    start = time.perf_counter()
    first = keystore.unlock(ADDRESS_A, "pw")
    first_seconds = time.perf_counter() - start
    rounds = 1000
    start = time.perf_counter()
    for _ in range(rounds):
        again = keystore.unlock(ADDRESS_A, "pw")
    cached_seconds = (time.perf_counter() - start) / rounds
    assert again is first
    start = time.perf_counter()
    with pytest.raises(WrongPassword):
        keystore.unlock(ADDRESS_A, "not it")
    wrong_seconds = time.perf_counter() - start
    print(
        f"\nunlock (pbkdf2, {PARITY_PBKDF2_ROUNDS} rounds): first {first_seconds * 1e3:.2f} ms, "
        f"cached {cached_seconds * 1e6:.1f} us, wrong password {wrong_seconds * 1e3:.2f} ms"
    )


def test_files_that_are_not_v3_keystores_are_skipped(tmp_path: Path) -> None:
    write_keystore(tmp_path, SECRET_A, "pw", iterations=LIGHT)
    (tmp_path / "README.txt").write_text("not json")
    (tmp_path / "address_book.json").write_text("{}")
    (tmp_path / "broken.json").write_text('{"version": 3, ')
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "v1.json").write_text(json.dumps({"version": 1, "address": ADDRESS_B[2:], "crypto": {}}))
    (tmp_path / "subdir").mkdir()
    no_address = dict(Account.encrypt(bytes.fromhex(SECRET_B[2:]), "pw", kdf="pbkdf2", iterations=LIGHT))
    del no_address["address"]
    (tmp_path / "UTC--no-address").write_text(json.dumps(no_address))
    (tmp_path / ".hidden").write_text(
        json.dumps(Account.encrypt(bytes.fromhex(SECRET_B[2:]), "pw", kdf="pbkdf2", iterations=LIGHT))
    )
    keystore = Keystore(tmp_path)
    assert keystore.addresses() == [ADDRESS_A]


def test_parity_and_geth_spellings_are_read(tmp_path: Path) -> None:
    # Old geth wrote "Crypto"; Parity writes the address in lower case without 0x; some tools add 0x.
    keyfile = dict(Account.encrypt(bytes.fromhex(SECRET_A[2:]), "pw", kdf="pbkdf2", iterations=LIGHT))
    keyfile["Crypto"] = keyfile.pop("crypto")
    keyfile["address"] = "0x" + ADDRESS_A[2:].upper()
    (tmp_path / "some-name.json").write_text(json.dumps(keyfile))
    keystore = Keystore(tmp_path)
    assert keystore.addresses() == [ADDRESS_A]
    assert keystore.unlock(ADDRESS_A, "pw").key == bytes.fromhex(SECRET_A[2:])


def test_a_file_claiming_another_address_is_refused(tmp_path: Path) -> None:
    keyfile = dict(Account.encrypt(bytes.fromhex(SECRET_A[2:]), "pw", kdf="pbkdf2", iterations=LIGHT))
    keyfile["address"] = ADDRESS_B[2:].lower()
    (tmp_path / "liar").write_text(json.dumps(keyfile))
    keystore = Keystore(tmp_path)
    with pytest.raises(KeystoreError, match="another account") as caught:
        keystore.unlock(ADDRESS_B, "pw")
    assert not isinstance(caught.value, WrongPassword)
    assert keystore.unlock_cached(ADDRESS_B, "pw") is None


def test_unsupported_kdf_is_a_keystore_error(tmp_path: Path) -> None:
    keyfile = dict(Account.encrypt(bytes.fromhex(SECRET_A[2:]), "pw", kdf="pbkdf2", iterations=LIGHT))
    keyfile["crypto"] = dict(keyfile["crypto"], kdf="argon2")
    (tmp_path / "odd").write_text(json.dumps(keyfile))
    with pytest.raises(KeystoreError, match="argon2") as caught:
        Keystore(tmp_path).unlock(ADDRESS_A, "pw")
    assert not isinstance(caught.value, WrongPassword)


def test_files_added_later_are_found(tmp_path: Path) -> None:
    write_keystore(tmp_path, SECRET_A, "pw", iterations=LIGHT)
    keystore = Keystore(tmp_path)
    assert ADDRESS_B not in keystore
    write_keystore(tmp_path, SECRET_B, "pw-b", iterations=LIGHT)
    bump_mtime(tmp_path)
    assert ADDRESS_B in keystore
    assert keystore.unlock(ADDRESS_B, "pw-b").address == ADDRESS_B
    assert keystore.addresses() == sorted([ADDRESS_A, ADDRESS_B], key=str.lower)


def test_a_replaced_keystore_drops_the_cached_password(tmp_path: Path) -> None:
    old = write_keystore(tmp_path, SECRET_A, "old", iterations=LIGHT)
    keystore = Keystore(tmp_path)
    keystore.unlock(ADDRESS_A, "old")
    old.unlink()
    write_keystore(tmp_path, SECRET_A, "new", iterations=LIGHT)
    bump_mtime(tmp_path)
    assert keystore.unlock_cached(ADDRESS_A, "old") is None
    with pytest.raises(WrongPassword):
        keystore.unlock(ADDRESS_A, "old")
    assert keystore.unlock(ADDRESS_A, "new").address == ADDRESS_A


def test_removed_file_makes_the_account_unknown(tmp_path: Path) -> None:
    path = write_keystore(tmp_path, SECRET_A, "pw", iterations=LIGHT)
    keystore = Keystore(tmp_path)
    keystore.unlock(ADDRESS_A, "pw")
    path.unlink()
    bump_mtime(tmp_path)
    assert keystore.unlock_cached(ADDRESS_A, "pw") is None
    with pytest.raises(UnknownAccount):
        keystore.unlock(ADDRESS_A, "pw")


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="does not exist"):
        Keystore(tmp_path / "nope")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0x" + "ab" * 20, bytes.fromhex("ab" * 20)),
        ("AB" * 20, bytes.fromhex("ab" * 20)),
        (bytes(20), bytes(20)),
    ],
)
def test_parse_address(value: str | bytes, expected: bytes) -> None:
    assert parse_address(value) == expected


@pytest.mark.parametrize("value", ["0x" + "ab" * 19, "0x" + "zz" * 20, "ab" * 21, 42, bytes(19), None])
def test_parse_address_rejects(value: object) -> None:
    with pytest.raises(MalformedHex):
        parse_address(value)


def test_write_keystore_accepts_hex_without_0x_and_rejects_bad_keys(tmp_path: Path) -> None:
    path = write_keystore(tmp_path, SECRET_B[2:], "pw", iterations=LIGHT)
    assert path.name.endswith(ADDRESS_B[2:].lower())
    for bad in ("0x1234", "zz" * 32, bytes(31)):
        with pytest.raises(MalformedHex):
            write_keystore(tmp_path / "bad", bad, "pw", iterations=LIGHT)
    for out_of_range in (bytes(32), b"\xff" * 32):
        with pytest.raises(InvalidScalar):
            write_keystore(tmp_path / "bad", out_of_range, "pw", iterations=LIGHT)
    assert not (tmp_path / "bad").exists()
