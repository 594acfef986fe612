"""TOTP secrets encrypted at rest (AES-256-GCM, key outside the database), both backends.

Sealed values are opened here with `cryptography`'s AESGCM directly, following the
documented format (`v1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`, associated data
`openrecord\\0totp_secret\\0<user id>`), not through the code under test.
"""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from openrecord.auth import totp
from openrecord.auth.accounts import Accounts
from openrecord.auth.secret_box import SecretBox, SecretKeyError
from openrecord.store import open_store
from openrecord.store.base import Store

PASSWORD = "correct horse battery"
KEY_1 = bytes(range(32))
KEY_2 = bytes(range(100, 132))


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No key configured; the data folder is `tmp_path`/home."""
    for name in (
        "OPENRECORD_SECRET_KEY",
        "OPENRECORD_SECRET_KEY_FILE",
        "OPENRECORD_SECRET_KEY_PREVIOUS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENRECORD_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _stored(store: Store, user_id: str) -> str:
    return str(store.query("SELECT totp_secret FROM account_user WHERE id = ?", (user_id,))[0][0])


def _open_independently(stored: str, key: bytes, user_id: str) -> str:
    version, _, body = stored.split(":", 2)
    assert version == "v1"
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    aad = f"openrecord\0totp_secret\0{user_id}".encode()
    return AESGCM(key).decrypt(raw[:12], raw[12:], aad).decode()


def _user(accounts: Accounts, name: str) -> str:
    return accounts.create_user(name, PASSWORD, f"Patient/{name}").id


def _code(secret: str) -> str:
    return totp.totp(totp.secret_bytes(secret), time.time())


def test_secrets_are_stored_encrypted_and_still_work(store: Store) -> None:
    accounts = Accounts(store, box=SecretBox(KEY_1))
    user = _user(accounts, "alice")
    secret = totp.new_secret()
    accounts.set_totp_secret(user, secret)
    stored = _stored(store, user)
    assert stored.startswith("v1:") and secret not in stored
    assert _open_independently(stored, KEY_1, user) == secret
    # a fresh nonce each time: the same secret never looks the same twice
    accounts.set_totp_secret(user, secret)
    assert _stored(store, user) != stored
    assert accounts.get(user).totp_enabled  # type: ignore[union-attr]
    assert accounts.check_totp(user, _code(secret), "10.0.0.1") is None
    # enrolment through the app's code is sealed too
    other = _user(accounts, "bob")
    assert accounts.enable_totp(other, secret, _code(secret))
    assert _open_independently(_stored(store, other), KEY_1, other) == secret


def test_plaintext_secrets_keep_working_and_are_sealed_when_used(store: Store) -> None:
    accounts = Accounts(store, box=SecretBox(KEY_1))
    user = _user(accounts, "carol")
    secret = totp.new_secret()
    with store.write() as tx:  # as stored before encryption
        tx.execute("UPDATE account_user SET totp_secret = ? WHERE id = ?", (secret, user))
    assert accounts.check_totp(user, _code(secret), None) is None
    assert _open_independently(_stored(store, user), KEY_1, user) == secret
    # and by the start-up pass
    other = _user(accounts, "dave")
    with store.write() as tx:
        tx.execute("UPDATE account_user SET totp_secret = ? WHERE id = ?", (secret, other))
    report = accounts.seal_totp_secrets()
    assert (report.sealed, report.current, report.unreadable) == (1, 1, [])
    assert _open_independently(_stored(store, other), KEY_1, other) == secret


def test_a_wrong_key_is_an_error_never_a_pass(store: Store) -> None:
    user = _user(Accounts(store), "erin")
    secret = totp.new_secret()
    Accounts(store, box=SecretBox(KEY_1)).set_totp_secret(user, secret)
    wrong = Accounts(store, box=SecretBox(KEY_2))
    with pytest.raises(SecretKeyError, match="encrypted under key"):
        wrong.check_totp(user, _code(secret), None)
    report = wrong.seal_totp_secrets()
    assert report.sealed == 0 and len(report.unreadable) == 1
    assert _open_independently(_stored(store, user), KEY_1, user) == secret  # untouched


def test_a_secret_moved_to_another_row_does_not_open(store: Store) -> None:
    accounts = Accounts(store, box=SecretBox(KEY_1))
    victim, attacker = _user(accounts, "frank"), _user(accounts, "grace")
    accounts.set_totp_secret(victim, totp.new_secret())
    accounts.set_totp_secret(attacker, totp.new_secret())
    with store.write() as tx:
        tx.execute(
            "UPDATE account_user SET totp_secret = ? WHERE id = ?",
            (_stored(store, victim), attacker),
        )
    with pytest.raises(SecretKeyError, match="does not decrypt"):
        accounts.check_totp(attacker, "123456", None)


def test_rotation_opens_old_secrets_and_reseals_them(store: Store) -> None:
    old = Accounts(store, box=SecretBox(KEY_1))
    users = [_user(old, name) for name in ("heidi", "ivan")]
    secrets = {u: totp.new_secret() for u in users}
    for u in users:
        old.set_totp_secret(u, secrets[u])
    new = Accounts(store, box=SecretBox(KEY_2, previous=[KEY_1]))
    assert new.check_totp(users[0], _code(secrets[users[0]]), None) is None  # on use
    assert _open_independently(_stored(store, users[0]), KEY_2, users[0]) == secrets[users[0]]
    report = new.seal_totp_secrets()  # the rest
    assert (report.sealed, report.current) == (1, 1)
    only_new = Accounts(store, box=SecretBox(KEY_2))
    assert only_new.seal_totp_secrets().unreadable == []


def test_keys_from_the_environment(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # by default: a key file made on first use in the data folder, readable by its owner only
    first = SecretBox.from_env()
    path = clean_env / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(base64.b64decode(path.read_text().strip())) == 32
    assert SecretBox.from_env().key_id == first.key_id  # the same key again
    sealed = first.seal("JBSWY3DPEHPK3PXP", "totp_secret", "u1")
    assert _open_independently(sealed, base64.b64decode(path.read_text()), "u1")
    # 32 bytes as hex or base64 in OPENRECORD_SECRET_KEY
    monkeypatch.setenv("OPENRECORD_SECRET_KEY", KEY_1.hex())
    hex_box = SecretBox.from_env()
    monkeypatch.setenv("OPENRECORD_SECRET_KEY", base64.b64encode(KEY_1).decode())
    assert SecretBox.from_env().key_id == hex_box.key_id != first.key_id
    assert _open_independently(hex_box.seal("X", "totp_secret", "u"), KEY_1, "u") == "X"
    for bad in ("short", KEY_1.hex()[:-2], base64.b64encode(b"x" * 31).decode()):
        monkeypatch.setenv("OPENRECORD_SECRET_KEY", bad)
        with pytest.raises(SecretKeyError, match="32-byte key"):
            SecretBox.from_env()
    # a named key file must exist: it is never made up
    monkeypatch.delenv("OPENRECORD_SECRET_KEY")
    monkeypatch.setenv("OPENRECORD_SECRET_KEY_FILE", str(clean_env / "missing.key"))
    with pytest.raises(SecretKeyError, match="cannot read"):
        SecretBox.from_env()


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openrecord", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_serve_refuses_to_start_with_the_wrong_key(
    store_url: str, clean_env: Path, tmp_path: Path
) -> None:
    store = open_store(store_url)
    try:
        accounts = Accounts(store, box=SecretBox(KEY_1))
        sealed_user, plain_user = _user(accounts, "judy"), _user(accounts, "ken")
        accounts.set_totp_secret(sealed_user, totp.new_secret())
        with store.write() as tx:
            tx.execute(
                "UPDATE account_user SET totp_secret = ? WHERE id = ?", ("JBSWY3DP", plain_user)
            )
    finally:
        store.close()
    env = {**os.environ}
    env["OPENRECORD_SECRET_KEY"] = KEY_2.hex()
    done = _cli(env, "serve", "--database", store_url, "--port", "9")
    assert done.returncode == 2
    assert "cannot be decrypted" in done.stderr and "encrypted under key" in done.stderr
    store = open_store(store_url)
    try:  # nothing was sealed under the wrong key
        assert _stored(store, plain_user) == "JBSWY3DP"
    finally:
        store.close()
    # with the right key, `admin seal-secrets` seals the plaintext one (as serve would)
    env["OPENRECORD_SECRET_KEY"] = KEY_1.hex()
    done = _cli(env, "admin", "seal-secrets", "--database", store_url)
    assert done.returncode == 0, done.stderr
    assert "encrypted 1 TOTP key" in done.stderr
    store = open_store(store_url)
    try:
        assert _open_independently(_stored(store, plain_user), KEY_1, plain_user) == "JBSWY3DP"
    finally:
        store.close()
