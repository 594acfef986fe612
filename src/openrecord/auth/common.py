"""Small shared pieces of the authorization server: time, random secrets, hashes, errors."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any

import orjson

__all__ = [
    "REVOKED_CHANNEL",
    "OAuthError",
    "digest",
    "dumps",
    "loads",
    "now",
    "random_token",
    "s256",
]

# Notified (`WriteTx.notify`) by every transaction that revokes access tokens: each
# worker's BearerVerifier forgets the tokens it knew to be valid.
REVOKED_CHANNEL = "openrecord_auth_revoked"


def now() -> int:
    """Epoch seconds (every time in the auth tables)."""
    return int(time.time())


def random_token(nbytes: int = 32) -> str:
    """A URL-safe random secret (codes, refresh tokens, ids): 256 bits by default."""
    return secrets.token_urlsafe(nbytes)


def digest(secret: str) -> str:
    """What the database keeps of a secret: its SHA-256, hex. A stolen table cannot be
    replayed; secrets are 256-bit random so no salt or slow hash is needed."""
    return hashlib.sha256(secret.encode()).hexdigest()


def s256(verifier: str) -> str:
    """PKCE S256 (RFC 7636 §4.2): BASE64URL(SHA256(ASCII(code_verifier)))."""
    raw = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(text: str | bytes) -> Any:
    return orjson.loads(text)


class OAuthError(Exception):
    """An OAuth error response (RFC 6749 §5.2): `error` code, description, HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
