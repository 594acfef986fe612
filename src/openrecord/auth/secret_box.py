"""Secrets at rest (TOTP keys): AES-256-GCM under a key that is not in the database.

A database dump or backup alone then does not give away anyone's second factor. The
key comes from `OPENRECORD_SECRET_KEY` (32 bytes as hex or base64), else from the file
`OPENRECORD_SECRET_KEY_FILE` names, else from `secret.key` in the data folder
(`$OPENRECORD_HOME` or the user data directory), created there with mode 0600 on first
use. Earlier keys, for rotation, are listed in `OPENRECORD_SECRET_KEY_PREVIOUS`.

Sealed values read `v1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`: the key id (a
hash of the key, 8 hex digits) lets a wrong key be named instead of failing vaguely,
and the associated data (purpose and row id) keeps a value from being moved to another
row. Values without the `v1:` prefix are plaintext from before encryption.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from platformdirs import user_data_dir

__all__ = [
    "KEY_ENV",
    "KEY_FILE_ENV",
    "PREVIOUS_ENV",
    "SecretBox",
    "SecretKeyError",
    "default_key_path",
    "is_sealed",
    "parse_key",
]

KEY_ENV = "OPENRECORD_SECRET_KEY"
KEY_FILE_ENV = "OPENRECORD_SECRET_KEY_FILE"
PREVIOUS_ENV = "OPENRECORD_SECRET_KEY_PREVIOUS"
_PREFIX = "v1:"
_NONCE = 12

log = logging.getLogger("openrecord.auth")


class SecretKeyError(RuntimeError):
    """The secret key is missing, malformed, or not the one a value was sealed with."""


def parse_key(text: str, where: str) -> bytes:
    """32 bytes from 64 hex digits or base64 (standard or URL-safe, padding optional)."""
    text = text.strip()
    try:
        if len(text) == 64:
            return bytes.fromhex(text)
        padded = text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4)
        key = base64.b64decode(padded, validate=True)
    except (ValueError, binascii.Error):
        key = b""
    if len(key) != 32:
        raise SecretKeyError(
            f"{where} must hold a 32-byte key as 64 hex digits or base64 (for example the"
            " output of `openssl rand -base64 32`)"
        )
    return key


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"openrecord secret key id\0" + key).hexdigest()[:8]


def default_key_path() -> Path:
    return Path(os.environ.get("OPENRECORD_HOME") or user_data_dir("openrecord")) / "secret.key"


def _create_key_file(path: Path) -> None:
    """Write a fresh key to `path` unless it exists; atomic, so processes starting at
    once all end up with the same key (the first link wins)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temp, path)
            log.warning("openrecord: created the secret key file %s: back it up", path)
        except FileExistsError:
            pass
    finally:
        temp.unlink(missing_ok=True)


def _read_key_file(path: Path, create: bool) -> bytes:
    if create and not path.exists():
        _create_key_file(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as err:
        raise SecretKeyError(f"cannot read the secret key file {path}: {err.strerror}") from err
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("openrecord: the secret key file %s is readable by others (chmod 600)", path)
    return parse_key(text, f"the secret key file {path}")


def is_sealed(stored: str) -> bool:
    return stored.startswith(_PREFIX)


class SecretBox:
    """Seals and opens short secrets; `where` says where the key came from (messages)."""

    def __init__(self, key: bytes, previous: Sequence[bytes] = (), where: str = "") -> None:
        if len(key) != 32:
            raise SecretKeyError("the secret key must be 32 bytes")
        self.key_id = key_id(key)
        self.where = where or "the configured key"
        self._keys = {key_id(k): AESGCM(k) for k in previous}
        self._keys[self.key_id] = AESGCM(key)

    @classmethod
    def from_env(cls, *, create: bool = True) -> SecretBox:
        """The configured key (see the module docstring); `create`: make the default
        key file when there is none."""
        env = os.environ
        previous = [
            parse_key(k, PREVIOUS_ENV) for k in env.get(PREVIOUS_ENV, "").split(",") if k.strip()
        ]
        if env.get(KEY_ENV):
            return cls(parse_key(env[KEY_ENV], KEY_ENV), previous, KEY_ENV)
        if env.get(KEY_FILE_ENV):
            path = Path(env[KEY_FILE_ENV])
            return cls(_read_key_file(path, create=False), previous, f"{KEY_FILE_ENV} ({path})")
        path = default_key_path()
        return cls(_read_key_file(path, create=create), previous, f"the key file {path}")

    def seal(self, plaintext: str, purpose: str, row: str) -> str:
        nonce = secrets.token_bytes(_NONCE)
        sealed = self._keys[self.key_id].encrypt(nonce, plaintext.encode(), _aad(purpose, row))
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{_PREFIX}{self.key_id}:{body}"

    def open(self, stored: str, purpose: str, row: str) -> str:
        """The plaintext of a sealed value (a plaintext one as it is); SecretKeyError
        when it was sealed under another key, for another row, or was altered."""
        if not is_sealed(stored):
            if ":" in stored:  # never in base32: a format this version does not know
                raise SecretKeyError(f"the {purpose} of {row} has an unknown format")
            return stored
        kid, _, body = stored[len(_PREFIX) :].partition(":")
        aead = self._keys.get(kid)
        if aead is None:
            raise SecretKeyError(
                f"the {purpose} of {row} was encrypted under key {kid}, but {self.where} is"
                f" key {self.key_id}: configure the key it was encrypted with (or list it in"
                f" {PREVIOUS_ENV})"
            )
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return aead.decrypt(raw[:_NONCE], raw[_NONCE:], _aad(purpose, row)).decode()
        except (InvalidTag, ValueError, binascii.Error) as err:
            raise SecretKeyError(
                f"the {purpose} of {row} does not decrypt: altered, or moved from another row"
            ) from err

    def needs_seal(self, stored: str) -> bool:
        """Plaintext, or sealed under a previous key."""
        return not stored.startswith(f"{_PREFIX}{self.key_id}:")


def _aad(purpose: str, row: str) -> bytes:
    return f"openrecord\0{purpose}\0{row}".encode()
