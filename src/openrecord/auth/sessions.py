"""Server-side browser sessions for the sign-in and account pages.

The cookie holds 256 random bits; the table keeps only their SHA-256, so a copy of the
database does not let anyone take over a session. Each session carries a synchroniser
CSRF token that every form posts back. A session moves through stages —
`anonymous` (a login form shown), `password` (first factor done), `mfa` (both
factors, or a user-verified passkey alone: AAL2) — and gets a new id at each step
up, so an id planted before login (session fixation) is worthless after it. Sessions expire after `IDLE_SECONDS`
without use and `ABSOLUTE_SECONDS` after they were made.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from openrecord.store.base import Store

__all__ = [
    "ABSOLUTE_SECONDS",
    "IDLE_SECONDS",
    "Session",
    "SessionStore",
    "Stage",
    "cookie_name",
    "cookie_secure",
]

Stage = Literal["anonymous", "password", "mfa"]
IDLE_SECONDS = 30 * 60
ABSOLUTE_SECONDS = 12 * 3600


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode("ascii", "replace")).hexdigest()


def cookie_secure(scheme: str, hostname: str) -> bool:
    """Cookies are `Secure` except over plain HTTP to a loopback address (development),
    where a browser or client would not send them back."""
    if scheme == "https":
        return True
    if hostname == "localhost":
        return False
    try:
        return not ipaddress.ip_address(hostname.strip("[]")).is_loopback
    except ValueError:
        return True


def cookie_name(secure: bool) -> str:
    """`__Host-` binds a secure cookie to this exact host and path `/`."""
    return "__Host-openrecord-session" if secure else "openrecord-session"


@dataclass(slots=True)
class Session:
    id: str  # the cookie value; never stored
    csrf: str
    user_id: str | None
    stage: Stage
    data: dict[str, Any] = field(default_factory=dict)
    created_at: int = 0
    expires_at: int = 0

    def csrf_ok(self, token: str | None) -> bool:
        """The posted token equals the session's (constant-time)."""
        return token is not None and hmac.compare_digest(
            token.encode("utf-8", "replace"), self.csrf.encode("ascii")
        )


class SessionStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def load(self, cookie: str | None, now: int | None = None) -> Session | None:
        """The live session of a cookie value, or None (unknown or expired)."""
        if not cookie or len(cookie) > 100:
            return None
        now = int(time.time()) if now is None else now
        rows = self.store.query(
            "SELECT csrf, user_id, stage, data, created_at, expires_at FROM account_session"
            " WHERE id_hash = ?",
            (_hash(cookie),),
        )
        if not rows:
            return None
        csrf, user_id, stage, data, created, expires = rows[0]
        if int(expires) <= now or int(created) + ABSOLUTE_SECONDS <= now:
            return None
        return Session(cookie, csrf, user_id, stage, orjson.loads(data), int(created), int(expires))

    def create(self, data: dict[str, Any] | None = None) -> Session:
        now = int(time.time())
        session = Session(
            secrets.token_urlsafe(32),
            secrets.token_urlsafe(32),
            None,
            "anonymous",
            dict(data or {}),
            now,
            now + IDLE_SECONDS,
        )
        with self.store.write() as tx:
            # expired rows go as new ones come: the table stays the size of live use
            tx.execute("DELETE FROM account_session WHERE expires_at <= ?", (now,))
            self._insert(tx, session)
        return session

    def _insert(self, tx: Any, s: Session) -> None:
        tx.execute(
            "INSERT INTO account_session (id_hash, csrf, user_id, stage, data, created_at,"
            " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                _hash(s.id),
                s.csrf,
                s.user_id,
                s.stage,
                orjson.dumps(s.data).decode(),
                s.created_at,
                s.expires_at,
            ),
        )

    def promote(self, session: Session, *, user_id: str, stage: Stage) -> Session:
        """The session stepped up to `stage` for `user_id`, under a new id and CSRF
        token; the old id stops working at once."""
        now = int(time.time())
        fresh = Session(
            secrets.token_urlsafe(32),
            secrets.token_urlsafe(32),
            user_id,
            stage,
            dict(session.data),
            session.created_at if session.user_id == user_id else now,
            now + IDLE_SECONDS,
        )
        with self.store.write() as tx:
            tx.execute("DELETE FROM account_session WHERE id_hash = ?", (_hash(session.id),))
            self._insert(tx, fresh)
        return fresh

    def save(self, session: Session) -> None:
        """Store the session's data and extend its idle expiry."""
        session.expires_at = int(time.time()) + IDLE_SECONDS
        with self.store.write() as tx:
            tx.execute(
                "UPDATE account_session SET data = ?, expires_at = ? WHERE id_hash = ?",
                (orjson.dumps(session.data).decode(), session.expires_at, _hash(session.id)),
            )

    def take(self, session: Session, key: str) -> Any:
        """Remove `key` from the stored session data and return its value (None if it
        is not there): at most one of several concurrent requests of a session gets it
        (a one-time WebAuthn challenge)."""
        digest = _hash(session.id)
        value = None
        with self.store.write() as tx:
            tx.lock(f"account_session:{digest}")
            rows = tx.execute("SELECT data FROM account_session WHERE id_hash = ?", (digest,))
            if rows:
                data = orjson.loads(rows[0][0])
                value = data.pop(key, None)
                if value is not None:
                    tx.execute(
                        "UPDATE account_session SET data = ? WHERE id_hash = ?",
                        (orjson.dumps(data).decode(), digest),
                    )
        session.data.pop(key, None)
        return value

    def delete(self, session: Session) -> None:
        with self.store.write() as tx:
            tx.execute("DELETE FROM account_session WHERE id_hash = ?", (_hash(session.id),))

    def delete_for_user(self, user_id: str) -> None:
        """End every session of a user (password changed or reset)."""
        with self.store.write() as tx:
            tx.execute("DELETE FROM account_session WHERE user_id = ?", (user_id,))
