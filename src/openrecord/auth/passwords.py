"""Password hashing: argon2id (RFC 9106) through argon2-cffi, with OWASP's parameters.

Hashes carry their own parameters and salt (PHC string), so the cost can be raised
later: `needs_rehash` tells the login to store a fresh hash. `verify` takes as long
for an unknown user as for a known one (it checks a dummy hash), so response times do
not reveal which usernames exist.
"""

from __future__ import annotations

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = [
    "MAX_PASSWORD",
    "MIN_PASSWORD",
    "hash_password",
    "needs_rehash",
    "password_problem",
    "verify",
]

# OWASP's argon2id baseline (19 MiB, 2 passes, 1 lane): sized for a small self-hosted
# server, where each sign-in costs one hash on one core.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, type=Type.ID)
_DUMMY: list[str] = []  # made on first use: importing the module stays cheap

MIN_PASSWORD = 10  # NIST SP 800-63B: at least 8; we ask for a little more
MAX_PASSWORD = 256  # long enough for passphrases, short enough to bound hashing work


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None when it is acceptable."""
    if len(password) < MIN_PASSWORD:
        return f"a password needs at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"a password has at most {MAX_PASSWORD} characters"
    if len(set(password)) < 4:
        return "a password needs more than three different characters"
    return None


def hash_password(password: str) -> str:
    """An argon2id PHC string for `password`, with a fresh random salt."""
    return _HASHER.hash(password)


def verify(stored: str | None, password: str) -> bool:
    """Whether `password` matches `stored` (None: no such user, checked against a dummy
    hash so that the answer takes the same time)."""
    if len(password) > MAX_PASSWORD:
        password = password[: MAX_PASSWORD + 1]  # still checked, still wrong
    if stored is None and not _DUMMY:
        _DUMMY.append(_HASHER.hash("an unguessable placeholder for unknown users"))
    try:
        return _HASHER.verify(stored or _DUMMY[0], password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """Whether `stored` was made with weaker parameters than today's."""
    try:
        return _HASHER.check_needs_rehash(stored)
    except InvalidHashError:
        return True
