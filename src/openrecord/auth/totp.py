"""Time-based one-time passwords: HOTP (RFC 4226) and TOTP (RFC 6238).

Secrets are random 160-bit keys, shown to the user in base32 (the `otpauth://` URI
that authenticator apps read). A code is accepted in the current 30-second step or
one step either side (clock drift), and each step at most once per account: the
caller stores the step `verify` returns and passes it back as `last_step`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from urllib.parse import quote, urlencode

__all__ = [
    "DIGITS",
    "STEP_SECONDS",
    "hotp",
    "new_secret",
    "otpauth_uri",
    "secret_bytes",
    "totp",
    "verify",
]

STEP_SECONDS = 30
DIGITS = 6
_DIGESTS = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}


def hotp(key: bytes, counter: int, digits: int = DIGITS, algorithm: str = "SHA1") -> str:
    """RFC 4226 section 5.3: HMAC of the 8-byte counter, dynamically truncated."""
    mac = hmac.new(key, struct.pack(">Q", counter), _DIGESTS[algorithm]).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def totp(
    key: bytes,
    at: float,
    *,
    digits: int = DIGITS,
    step: int = STEP_SECONDS,
    algorithm: str = "SHA1",
) -> str:
    """RFC 6238: HOTP of the number of `step`-second periods since the epoch."""
    return hotp(key, int(at // step), digits, algorithm)


def new_secret() -> str:
    """A fresh 160-bit secret (RFC 4226's recommended length), base32 without padding."""
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii").rstrip("=")


def secret_bytes(secret: str) -> bytes:
    """The key of a base32 secret (any case, spaces and padding ignored)."""
    text = secret.replace(" ", "").upper().rstrip("=")
    return base64.b32decode(text + "=" * (-len(text) % 8))


def verify(
    secret: str, code: str, at: float, *, last_step: int | None = None, window: int = 1
) -> int | None:
    """The time step `code` is valid for (within `window` steps of `at`, and after
    `last_step`), or None. Every candidate is compared in constant time."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return None
    key = secret_bytes(secret)
    now = int(at // STEP_SECONDS)
    found = None
    for step in range(now - window, now + window + 1):
        if hmac.compare_digest(hotp(key, step), code) and found is None:
            found = step
    if found is None or (last_step is not None and found <= last_step):
        return None
    return found


def otpauth_uri(secret: str, account: str, issuer: str = "openrecord") -> str:
    """The Key Uri Format authenticator apps import (otpauth://totp/Issuer:account?…)."""
    label = quote(f"{issuer}:{account}", safe=":@")
    query = urlencode(
        {
            "secret": secret,
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": DIGITS,
            "period": STEP_SECONDS,
        }
    )
    return f"otpauth://totp/{label}?{query}"
