"""Throttling and lockout against guessing (passwords, one-time codes).

Failures are counted per key — `login:<username>` (known or not, so a lockout says
nothing about which usernames exist), `mfa:<user id>`, `ip:<address>` — in the
`account_throttle` table, so every worker process sees the same counts. After a few
free failures each further one doubles the wait before the next attempt; after
`lockout_after` failures an account key is locked for `lockout_ms`. Address keys are
slowed but never locked (many people can share one address). An admitted attempt
reserves its account key while the password is checked, so parallel guesses cannot
slip through between the check and the count.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from openrecord.store.base import Store, WriteTx

__all__ = ["Refusal", "Throttle", "ThrottlePolicy", "now_ms"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    free_failures: int = 2  # failures before any delay (typing mistakes)
    delay_ms: int = 1000  # the first delay; doubled with each failure after it
    max_delay_ms: int = 300_000
    lockout_after: int = 10  # failures that lock an account key
    lockout_ms: int = 900_000
    ip_free_failures: int = 20
    window_ms: int = 3_600_000  # failures older than this (with none since) are forgotten
    reserve_ms: int = 5_000  # how long an admitted attempt holds its account key

    @classmethod
    def from_env(cls) -> ThrottlePolicy:
        """The defaults, or `OPENRECORD_LOGIN_DELAY_MS`, `OPENRECORD_LOGIN_LOCKOUT_AFTER`
        and `OPENRECORD_LOGIN_LOCKOUT_SECONDS` when set."""
        env, default = os.environ, cls()
        return cls(
            delay_ms=int(env.get("OPENRECORD_LOGIN_DELAY_MS") or default.delay_ms),
            lockout_after=int(env.get("OPENRECORD_LOGIN_LOCKOUT_AFTER") or default.lockout_after),
            lockout_ms=1000
            * int(env.get("OPENRECORD_LOGIN_LOCKOUT_SECONDS") or default.lockout_ms // 1000),
        )

    def delay(self, failures: int, free: int) -> int:
        """The wait after the `failures`-th failure of a key allowing `free` ones."""
        if failures <= free:
            return 0
        return int(min(self.delay_ms * 2 ** (failures - free - 1), self.max_delay_ms))


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an attempt is not even checked: `locked` (until `until_ms`) or `wait`."""

    kind: str  # "locked" | "wait"
    until_ms: int

    def message(self, now: int) -> str:
        seconds = max(1, -(-(self.until_ms - now) // 1000))
        if self.kind == "locked":
            minutes = max(1, -(-seconds // 60))
            return (
                "Too many failed attempts: this account is locked for "
                f"{minutes} more minute{'s' if minutes != 1 else ''}. "
                "Try again later or reset your password."
            )
        return (
            f"Too many failed attempts. Wait {seconds} second{'s' if seconds != 1 else ''}"
            " before trying again."
        )


class Throttle:
    def __init__(self, store: Store, policy: ThrottlePolicy | None = None) -> None:
        self.store = store
        self.policy = policy or ThrottlePolicy()

    def _row(self, tx: WriteTx, key: str) -> tuple[int, int, int, int] | None:
        rows = tx.execute(
            "SELECT failures, next_attempt_ms, locked_until_ms, updated_ms"
            " FROM account_throttle WHERE key = ?",
            (key,),
        )
        if not rows:
            return None
        f, n, lock, u = rows[0]
        return int(f), int(n), int(lock), int(u)

    def _put(self, tx: WriteTx, key: str, failures: int, next_ms: int, lock: int, now: int) -> None:
        tx.execute("DELETE FROM account_throttle WHERE key = ?", (key,))
        tx.execute(
            "INSERT INTO account_throttle (key, failures, next_attempt_ms, locked_until_ms,"
            " updated_ms) VALUES (?, ?, ?, ?, ?)",
            (key, failures, next_ms, lock, now),
        )

    def admit(self, account_key: str, ip_key: str | None, now: int | None = None) -> Refusal | None:
        """Refuse an attempt on a locked or waiting key; otherwise reserve the account
        key (until `failed` or `succeeded`) and admit it."""
        now = now_ms() if now is None else now
        with self.store.write() as tx:
            tx.lock(account_key)
            for key in (account_key, ip_key):
                row = self._row(tx, key) if key else None
                if row is None:
                    continue
                _, next_ms, lock, _ = row
                if lock > now:
                    return Refusal("locked", lock)
                if next_ms > now:
                    return Refusal("wait", next_ms)
            row = self._row(tx, account_key)
            failures, _, _, updated = row or (0, 0, 0, now)
            if now - updated > self.policy.window_ms:
                failures = 0
            self._put(tx, account_key, failures, now + self.policy.reserve_ms, 0, updated)
        return None

    def failed(
        self, account_key: str, ip_key: str | None, now: int | None = None
    ) -> Refusal | None:
        """Count a failure on both keys; the refusal the next attempt will meet."""
        now = now_ms() if now is None else now
        p = self.policy
        refusal = None
        with self.store.write() as tx:
            tx.lock(account_key)
            if ip_key is not None:
                tx.lock(ip_key)  # always after the account key: no lock-order cycle
            for key, free, lockable in (
                (account_key, p.free_failures, True),
                (ip_key, p.ip_free_failures, False),
            ):
                if key is None:
                    continue
                row = self._row(tx, key)
                failures = 0 if row is None or now - row[3] > p.window_ms else row[0]
                failures += 1
                lock = now + p.lockout_ms if lockable and failures >= p.lockout_after else 0
                next_ms = now + p.delay(failures, free)
                self._put(tx, key, failures, next_ms, lock, now)
                if key == account_key:
                    if lock:
                        refusal = Refusal("locked", lock)
                    elif next_ms > now:
                        refusal = Refusal("wait", next_ms)
        return refusal

    def succeeded(self, account_key: str) -> None:
        """Forget the account key's failures (the address keeps its count)."""
        self.clear((account_key,))

    def clear(self, keys: Sequence[str]) -> None:
        with self.store.write() as tx:
            for key in keys:
                tx.execute("DELETE FROM account_throttle WHERE key = ?", (key,))

    def failures(self, key: str) -> int:
        rows = self.store.query("SELECT failures FROM account_throttle WHERE key = ?", (key,))
        return int(rows[0][0]) if rows else 0
