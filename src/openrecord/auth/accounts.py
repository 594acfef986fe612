"""User accounts: who may sign in, linked to the FHIR resource they are (`fhirUser`).

A user is a `Patient`, a `Practitioner`, a `RelatedPerson` (someone acting for a
patient: a parent, a carer) or a `Person` (one human with several of those records).
Passwords are argon2id hashes (`auth/passwords.py`); the second factor is a TOTP
secret (`auth/totp.py`), stored encrypted (`auth/secret_box.py`, the user id as
associated data), or passkeys (`auth/webauthn.py`). Sign-in attempts go through
`auth/throttle.py`. Password reset is by one-time token: 256 random bits given to the
user once, stored as a SHA-256 hash, single use, expiring.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass

from openrecord.auth import passwords, totp
from openrecord.auth.secret_box import SecretBox, SecretKeyError
from openrecord.auth.throttle import Refusal, Throttle, now_ms
from openrecord.store.base import Store

__all__ = [
    "FHIR_USER_TYPES",
    "RESET_SECONDS",
    "AccountError",
    "Accounts",
    "LoginResult",
    "SealReport",
    "User",
]

FHIR_USER_TYPES = ("Patient", "Practitioner", "RelatedPerson", "Person")
RESET_SECONDS = 3600
_TOTP = "totp_secret"  # the sealed column, named in the associated data
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,99}$")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # FHIR id


class AccountError(ValueError):
    """A request about accounts that cannot be honoured (message fit for the user)."""


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    fhir_user: str  # "Patient/123", "RelatedPerson/7", …
    totp_enabled: bool
    disabled: bool

    @property
    def fhir_type(self) -> str:
        return self.fhir_user.split("/", 1)[0]


@dataclass(frozen=True, slots=True)
class SealReport:
    sealed: int  # plaintext or old-key secrets now sealed under the current key
    current: int  # already sealed under it
    unreadable: list[str]  # why each secret that does not open failed


@dataclass(frozen=True, slots=True)
class LoginResult:
    user: User | None
    refusal: str | None  # the message shown when `user` is None
    outcome: str = "ok"  # ok, failed (checked, wrong), throttled or locked (not checked)


def normalize_username(username: str) -> str:
    return username.strip().casefold()


def check_fhir_user(reference: str) -> str:
    """`Type/id` with a type a user can be; AccountError otherwise."""
    type, _, id = reference.partition("/")
    if type not in FHIR_USER_TYPES or not _ID.match(id):
        raise AccountError(
            f"fhirUser {reference!r} must be Patient/, Practitioner/, RelatedPerson/ or"
            " Person/ followed by a FHIR id"
        )
    return reference


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


_COLUMNS = "id, username, fhir_user, totp_secret IS NOT NULL, disabled"


def _user(row: tuple[object, ...]) -> User:
    id, username, fhir_user, has_totp, disabled = row
    return User(str(id), str(username), str(fhir_user), bool(has_totp), bool(disabled))


class Accounts:
    def __init__(
        self, store: Store, throttle: Throttle | None = None, box: SecretBox | None = None
    ) -> None:
        self.store = store
        self.throttle = throttle or Throttle(store)
        self._box = box

    @property
    def box(self) -> SecretBox:
        """The key TOTP secrets are sealed with (from the environment when not given)."""
        if self._box is None:
            self._box = SecretBox.from_env()
        return self._box

    # -- users -------------------------------------------------------------------------

    def create_user(self, username: str, password: str, fhir_user: str) -> User:
        name = normalize_username(username)
        if not _USERNAME.match(name):
            raise AccountError(
                "a username is 1 to 100 letters, digits or . _ @ + - (starting with a"
                " letter or digit)"
            )
        problem = passwords.password_problem(password)
        if problem:
            raise AccountError(problem)
        check_fhir_user(fhir_user)
        if self.find(name) is not None:
            raise AccountError(f"the username {name!r} is taken")
        user_id = str(uuid.uuid4())
        t = int(time.time())
        with self.store.write() as tx:
            tx.lock(f"account_user:{name}")
            if tx.execute("SELECT 1 FROM account_user WHERE username = ?", (name,)):
                raise AccountError(f"the username {name!r} is taken")
            tx.execute(
                "INSERT INTO account_user (id, username, password_hash, fhir_user, totp_secret,"
                " totp_last_step, disabled, created_at, password_changed_at)"
                " VALUES (?, ?, ?, ?, NULL, NULL, 0, ?, ?)",
                (user_id, name, passwords.hash_password(password), fhir_user, t, t),
            )
        return User(user_id, name, fhir_user, False, False)

    def find(self, username: str) -> User | None:
        rows = self.store.query(
            f"SELECT {_COLUMNS} FROM account_user WHERE username = ?",
            (normalize_username(username),),
        )
        return _user(rows[0]) if rows else None

    def get(self, user_id: str) -> User | None:
        rows = self.store.query(f"SELECT {_COLUMNS} FROM account_user WHERE id = ?", (user_id,))
        return _user(rows[0]) if rows else None

    # -- password sign-in --------------------------------------------------------------

    def login(self, username: str, password: str, ip: str | None) -> LoginResult:
        """Check a password under throttling: the user, or why not (never saying
        whether the username exists)."""
        name = normalize_username(username)[:200]
        key, ip_key = f"login:{name}", (f"ip:{ip}" if ip else None)
        refusal = self.throttle.admit(key, ip_key)
        if refusal is not None:
            kind = "locked" if refusal.kind == "locked" else "throttled"
            return LoginResult(None, refusal.message(now_ms()), kind)
        rows = self.store.query(
            f"SELECT {_COLUMNS}, password_hash FROM account_user WHERE username = ?", (name,)
        )
        stored = str(rows[0][5]) if rows else None
        ok = passwords.verify(stored, password)
        user = _user(rows[0][:5]) if rows else None
        if ok and user is not None and not user.disabled:
            self.throttle.succeeded(key)
            if stored is not None and passwords.needs_rehash(stored):
                self._store_password(user.id, password, changed=False)
            return LoginResult(user, None)
        after = self.throttle.failed(key, ip_key)
        locked = after is not None and after.kind == "locked"
        return LoginResult(None, self._failure_message(after), "locked" if locked else "failed")

    @staticmethod
    def _failure_message(after: Refusal | None) -> str:
        if after is not None and after.kind == "locked":
            return after.message(now_ms())
        return "The username or password is not right."

    def _store_password(self, user_id: str, password: str, *, changed: bool = True) -> None:
        with self.store.write() as tx:
            tx.execute(
                "UPDATE account_user SET password_hash = ?"
                + (", password_changed_at = ?" if changed else "")
                + " WHERE id = ?",
                (
                    passwords.hash_password(password),
                    *((int(time.time()),) if changed else ()),
                    user_id,
                ),
            )

    def set_password(self, user_id: str, password: str) -> None:
        problem = passwords.password_problem(password)
        if problem:
            raise AccountError(problem)
        self._store_password(user_id, password)

    # -- TOTP --------------------------------------------------------------------------

    def enable_totp(self, user_id: str, secret: str, code: str) -> bool:
        """Store `secret` as the user's TOTP key if `code` proves the app has it."""
        step = totp.verify(secret, code, time.time())
        if step is None:
            return False
        sealed = self.box.seal(secret, _TOTP, user_id)
        with self.store.write() as tx:
            tx.execute(
                "UPDATE account_user SET totp_secret = ?, totp_last_step = ? WHERE id = ?",
                (sealed, step, user_id),
            )
        return True

    def set_totp_secret(self, user_id: str, secret: str | None) -> None:
        """Operator path (`admin create-user --totp`): store a secret without a code."""
        sealed = None if secret is None else self.box.seal(secret, _TOTP, user_id)
        with self.store.write() as tx:
            tx.execute(
                "UPDATE account_user SET totp_secret = ?, totp_last_step = NULL WHERE id = ?",
                (sealed, user_id),
            )

    def seal_totp_secrets(self) -> SealReport:
        """Seal every plaintext or old-key TOTP secret under the current key (at start
        and by `admin seal-secrets`). If any secret does not open, nothing is changed
        (a wrong key must not seal the plaintext ones under itself) and they are reported."""
        box, opened, current, unreadable = self.box, [], 0, []
        rows = self.store.query(
            "SELECT id, totp_secret FROM account_user WHERE totp_secret IS NOT NULL"
        )
        for user_id, stored in rows:
            try:
                plain = box.open(str(stored), _TOTP, str(user_id))
            except SecretKeyError as err:
                unreadable.append(str(err))
                continue
            if box.needs_seal(str(stored)):
                opened.append((str(user_id), str(stored), plain))
            else:
                current += 1
        if unreadable:
            return SealReport(0, current, unreadable)
        for user_id, stored, plain in opened:
            with self.store.write() as tx:  # unless it changed meanwhile
                tx.execute(
                    "UPDATE account_user SET totp_secret = ? WHERE id = ? AND totp_secret = ?",
                    (box.seal(plain, _TOTP, user_id), user_id, stored),
                )
        return SealReport(len(opened), current, unreadable)

    def check_totp(self, user_id: str, code: str, ip: str | None) -> str | None:
        """None when `code` is the user's current one (each code works once); else why not.
        Throttled like passwords, under the key `mfa:<user id>`. A secret that does not
        decrypt raises SecretKeyError (never a pass); a plaintext one is sealed here."""
        key, ip_key = f"mfa:{user_id}", (f"ip:{ip}" if ip else None)
        refusal = self.throttle.admit(key, ip_key)
        if refusal is not None:
            return refusal.message(now_ms())
        ok = False
        with self.store.write() as tx:
            rows = tx.execute(
                "SELECT totp_secret, totp_last_step FROM account_user WHERE id = ?", (user_id,)
            )
            if rows and rows[0][0]:
                stored, last = str(rows[0][0]), rows[0][1]
                secret = self.box.open(stored, _TOTP, user_id)
                if self.box.needs_seal(stored):
                    tx.execute(
                        "UPDATE account_user SET totp_secret = ? WHERE id = ?",
                        (self.box.seal(secret, _TOTP, user_id), user_id),
                    )
                step = totp.verify(
                    secret, code, time.time(), last_step=None if last is None else int(last)
                )
                if step is not None:
                    # the step is claimed in the same transaction that read it: a code
                    # replayed concurrently finds it taken
                    tx.execute(
                        "UPDATE account_user SET totp_last_step = ? WHERE id = ?",
                        (step, user_id),
                    )
                    ok = True
        if ok:
            self.throttle.succeeded(key)
            return None
        after = self.throttle.failed(key, ip_key)
        if after is not None and after.kind == "locked":
            return after.message(now_ms())
        return "That code is not right (or was already used). Enter the current code."

    # -- password reset ----------------------------------------------------------------

    def issue_reset(self, user_id: str, seconds: int = RESET_SECONDS) -> str:
        """A one-time reset token for `user_id` (shown once; only its hash is kept)."""
        token = secrets.token_urlsafe(32)
        t = int(time.time())
        with self.store.write() as tx:
            tx.execute("DELETE FROM account_reset WHERE expires_at <= ?", (t,))
            tx.execute(
                "INSERT INTO account_reset (token_hash, user_id, expires_at, used_at)"
                " VALUES (?, ?, ?, NULL)",
                (_digest(token), user_id, t + seconds),
            )
        return token

    def reset_token_user(self, token: str) -> User | None:
        """The user a live, unused token is for."""
        rows = self.store.query(
            "SELECT user_id FROM account_reset WHERE token_hash = ? AND used_at IS NULL"
            " AND expires_at > ?",
            (_digest(token), int(time.time())),
        )
        return self.get(str(rows[0][0])) if rows else None

    def reset_password(self, token: str, password: str) -> User:
        """Spend the token (once, atomically) and set the new password; the account's
        lockout is lifted. AccountError when the token is unknown, used or expired."""
        problem = passwords.password_problem(password)
        if problem:
            raise AccountError(problem)
        new_hash = passwords.hash_password(password)
        t = int(time.time())
        with self.store.write() as tx:
            rows = tx.execute(
                "UPDATE account_reset SET used_at = ? WHERE token_hash = ? AND used_at IS NULL"
                " AND expires_at > ? RETURNING user_id",
                (t, _digest(token), t),
            )
            if not rows:
                raise AccountError("this reset link is not valid: it expired or was used")
            user_id = str(rows[0][0])
            tx.execute(
                "UPDATE account_user SET password_hash = ?, password_changed_at = ? WHERE id = ?",
                (new_hash, t, user_id),
            )
        user = self.get(user_id)
        assert user is not None
        self.throttle.clear((f"login:{user.username}", f"mfa:{user.id}"))
        return user
