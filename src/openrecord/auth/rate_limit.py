"""Rate limits of the OAuth endpoints: a token bucket per key, shared by every worker.

Each bucket is kept as one number in the `auth_rate` table: its GCRA "theoretical
arrival time" (the moment the bucket would be full again), updated by a single
conditional UPSERT, so workers and processes on one database share the counts and a
request costs one small write transaction. A limit `COUNT/SECONDS` lets `COUNT`
requests through at once and refills at `COUNT` per `SECONDS`. Refused requests consume
nothing (the transaction rolls back): a script that keeps hammering gets exactly the
sustained rate, never a growing penalty.

Keys are the endpoint with the client address and, where the request names one, the
client_id. Failed client authentication is charged to a separate, much smaller bucket
per client (`client-auth-failures`); while it is empty every authentication of that
client is refused unchecked, so its secret cannot be guessed. Refusals are HTTP 429
with `Retry-After` and the OAuth error `temporarily_unavailable` (RFC 6749 §4.1.2.1:
"temporarily overloaded", the registered code for "try again later").
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from openrecord.auth.common import OAuthError, loads
from openrecord.store.base import Store, WriteTx

__all__ = [
    "DEFAULT_LIMITS",
    "Limit",
    "RateLimited",
    "RateLimiter",
    "RateLimits",
    "claimed_client_id",
    "parse_limits",
]

RATE_ERROR = "temporarily_unavailable"


@dataclass(frozen=True, slots=True)
class Limit:
    """`count` requests at once, refilled at `count` per `seconds`."""

    count: int
    seconds: float

    @property
    def interval_us(self) -> int:
        return max(1, math.ceil(self.seconds * 1_000_000 / self.count))

    @property
    def burst_us(self) -> int:
        return self.interval_us * self.count

    def __str__(self) -> str:
        return f"{self.count}/{self.seconds:g}"


# Per client address (`token`) and per client_id (`token-client`). Normal use stays far
# below: an app's backend refreshing for all its users from one address, a resource
# server introspecting, a hospital's browsers launching apps behind one NAT address.
DEFAULT_LIMITS: Mapping[str, Limit | None] = {
    "token": Limit(300, 60),
    "token-client": Limit(600, 60),
    "introspect": Limit(600, 60),
    "introspect-client": Limit(600, 60),
    "revoke": Limit(120, 60),
    "revoke-client": Limit(120, 60),
    "authorize": Limit(120, 60),
    "authorize-client": Limit(600, 60),
    "register": Limit(60, 3600),
    # failed client authentications: 10, then one more a minute
    "client-auth-failures": Limit(10, 600),
}


def parse_limits(
    text: str, base: Mapping[str, Limit | None] = DEFAULT_LIMITS
) -> dict[str, Limit | None]:
    """`name=COUNT/SECONDS` (or `name=off`), comma-separated, over `base`. ValueError
    names what is wrong."""
    out = dict(base)
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in DEFAULT_LIMITS:
            raise ValueError(
                f"rate limit {item!r}: expected NAME=COUNT/SECONDS or NAME=off with NAME one"
                f" of {', '.join(DEFAULT_LIMITS)}"
            )
        value = value.strip()
        if value == "off":
            out[name] = None
            continue
        count, slash, seconds = value.partition("/")
        try:
            limit = Limit(int(count), float(seconds))
        except ValueError:
            slash = ""
        if not slash or limit.count < 1 or not 0 < limit.seconds <= 86_400 * 7:
            raise ValueError(
                f"rate limit {item!r}: COUNT/SECONDS needs a count of at least 1 and"
                " 0 < SECONDS <= 604800"
            )
        out[name] = limit
    return out


@dataclass(frozen=True, slots=True)
class RateLimits:
    limits: Mapping[str, Limit | None] = field(default_factory=lambda: dict(DEFAULT_LIMITS))

    @classmethod
    def from_env(cls) -> RateLimits:
        """The defaults, changed by `OPENRECORD_RATE_LIMITS` (`token=300/60,register=off`)."""
        return cls(parse_limits(os.environ.get("OPENRECORD_RATE_LIMITS", "")))

    def get(self, name: str) -> Limit | None:
        return self.limits.get(name)


class RateLimited(OAuthError):
    """429 with `Retry-After` (whole seconds, at least 1); `client_id` as claimed."""

    def __init__(self, description: str, retry_after_us: int, client_id: str | None) -> None:
        super().__init__(RATE_ERROR, description, 429)
        self.retry_after = max(1, math.ceil(retry_after_us / 1_000_000))
        self.client_id = client_id


class _Refused(Exception):
    def __init__(self, refusal: RateLimited) -> None:
        self.refusal = refusal


def _now_us() -> int:
    return time.time_ns() // 1000


def _key(name: str, value: str) -> str:
    if len(value) > 128 or not value.isprintable():
        value = "sha256:" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()
    return f"{name}:{value}"


# A GCRA step: admitted when the bucket has room (its tat, less one interval, within
# the burst of now); the new tat is max(tat, now) + interval. No row returned: refused.
_MAX_TAT = "(CASE WHEN auth_rate.tat_us > ? THEN auth_rate.tat_us ELSE ? END)"
_TAKE = (
    "INSERT INTO auth_rate (key, tat_us) VALUES (?, ?)"
    f" ON CONFLICT (key) DO UPDATE SET tat_us = {_MAX_TAT} + ? WHERE {_MAX_TAT} <= ?"
    " RETURNING tat_us"
)
_CHARGE = (
    "INSERT INTO auth_rate (key, tat_us) VALUES (?, ?) ON CONFLICT (key) DO UPDATE"
    f" SET tat_us = {_MAX_TAT} + ?"
)
_CLEAN_ONE_IN = 512  # requests; rows whose bucket is full again are dropped then


@dataclass(frozen=True, slots=True)
class _Take:
    key: str
    limit: Limit
    what: str  # for the refusal's description

    def last(self, now: int) -> int:
        """The latest tat at which one more request still fits."""
        return now + self.limit.burst_us - self.limit.interval_us


class RateLimiter:
    """Token buckets in the store, for the endpoints of `auth/oauth_endpoints.py`."""

    def __init__(self, store: Store, limits: RateLimits | None = None) -> None:
        self.store = store
        self.limits = limits or RateLimits()

    def check(
        self, endpoint: str, ip: str | None, client_id: str | None, now_us: int | None = None
    ) -> RateLimited | None:
        """Take one request from the endpoint's address and client buckets, refusing
        (and taking nothing) if either is empty or the client's authentication-failure
        bucket is."""
        now = _now_us() if now_us is None else now_us
        takes = []
        if ip and (limit := self.limits.get(endpoint)):
            takes.append(_Take(_key(endpoint, ip), limit, "from this address"))
        if client_id and (limit := self.limits.get(f"{endpoint}-client")):
            takes.append(_Take(_key(f"{endpoint}-client", client_id), limit, "for this client"))
        failures = self.limits.get("client-auth-failures") if client_id else None
        guard = None
        if client_id and failures is not None:
            guard = _Take(_key("client-auth-failures", client_id), failures, "")
        if not takes and guard is None:
            return None
        try:
            with self.store.write() as tx:
                if guard is not None:
                    self._guard(tx, guard, now, client_id)
                for take in takes:
                    self._take(tx, take, now, client_id)
                if random.randrange(_CLEAN_ONE_IN) == 0:
                    tx.execute("DELETE FROM auth_rate WHERE tat_us < ?", (now,))
        except _Refused as refused:
            return refused.refusal
        return None

    @staticmethod
    def _tat(tx: WriteTx, key: str) -> int | None:
        rows = tx.execute("SELECT tat_us FROM auth_rate WHERE key = ?", (key,))
        return int(rows[0][0]) if rows else None

    def _guard(self, tx: WriteTx, guard: _Take, now: int, client_id: str | None) -> None:
        tat = self._tat(tx, guard.key)
        if tat is not None and tat > guard.last(now):
            raise _Refused(
                RateLimited(
                    "too many failed client authentications: try again later",
                    tat - guard.last(now),
                    client_id,
                )
            )

    def _take(self, tx: WriteTx, take: _Take, now: int, client_id: str | None) -> None:
        interval, last = take.limit.interval_us, take.last(now)
        params = (take.key, now + interval, now, now, interval, now, now, last)
        if tx.execute(_TAKE, params):
            return
        tat = self._tat(tx, take.key)
        raise _Refused(
            RateLimited(
                f"too many requests {take.what} (limit {take.limit} s)",
                (last if tat is None else tat) - last,
                client_id,
            )
        )

    def authentication_failed(self, client_id: str, now_us: int | None = None) -> None:
        """Charge a failed authentication of an existing client to its failure bucket."""
        limit = self.limits.get("client-auth-failures")
        if limit is None:
            return
        now = _now_us() if now_us is None else now_us
        with self.store.write() as tx:
            tx.execute(
                _CHARGE,
                (
                    _key("client-auth-failures", client_id),
                    now + limit.interval_us,
                    now,
                    now,
                    limit.interval_us,
                ),
            )


def claimed_client_id(form: Mapping[str, str], authorization: str | None) -> str | None:
    """The client_id a token-endpoint request names, before it is authenticated: the
    form's `client_id`, the Basic user (RFC 6749 §2.3.1: form-urlencoded) or the
    assertion's `sub` (RFC 7523 §3: the client_id), unverified."""
    if authorization and authorization[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            return unquote(decoded.partition(":")[0].replace("+", " ")) or None
        except (ValueError, UnicodeDecodeError):
            pass
    if form.get("client_id"):
        return form["client_id"]
    assertion = form.get("client_assertion", "")
    parts = assertion.split(".")
    if len(parts) == 3:
        try:
            claims = loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (ValueError, TypeError):
            return None
        sub = claims.get("sub") if isinstance(claims, dict) else None
        return sub if isinstance(sub, str) and sub else None
    return None
