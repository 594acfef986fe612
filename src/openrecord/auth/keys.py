"""The server's signing keys: generated on first start, rotatable, published as JWKS.

Two active keys: ES256 signs access tokens, RS256 signs id_tokens (OpenID Connect
requires RS256 support). Keys live in `auth_key` (private JWK as JSON: whoever can read
the database can mint tokens — protect it like the data it guards). `rotate_keys` adds
new keys and retires the old ones, which stay in the JWKS and keep verifying for
`RETAIN_SECONDS`, longer than any token they signed lives.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import ECKey, RSAKey

from openrecord.auth.common import dumps, loads, now
from openrecord.store.base import Store, WriteTx

__all__ = ["ACCESS_ALG", "ID_TOKEN_ALG", "RETAIN_SECONDS", "KeyRing", "SigningKey", "rotate_keys"]

ACCESS_ALG = "ES256"
ID_TOKEN_ALG = "RS256"
RETAIN_SECONDS = 2 * 24 * 3600  # > the longest token lifetime (id_token: 1 hour)

Key = ECKey | RSAKey


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    alg: str
    key: Key
    retired_at: int | None


def _generate(alg: str) -> Key:
    key: Key
    if alg == "ES256":
        key = ECKey.generate_key("P-256", auto_kid=True)
    else:
        key = RSAKey.generate_key(2048, auto_kid=True)
    return key


def _insert_new(tx: WriteTx, algs: tuple[str, ...]) -> list[str]:
    kids = []
    for alg in algs:
        key = _generate(alg)
        tx.execute(
            "INSERT INTO auth_key (kid, alg, private_jwk, created_at) VALUES (?, ?, ?, ?)",
            (key.kid, alg, dumps(key.as_dict(private=True)), now()),
        )
        kids.append(str(key.kid))
    return kids


def rotate_keys(store: Store, *, drop_old: bool = False) -> list[str]:
    """New active keys (their kids); the previous ones are retired, still verifying —
    or, with `drop_old` (a key was compromised), deleted: every token they signed is
    refused once the server restarts."""
    with store.write() as tx:
        tx.lock("openrecord-auth-keys")
        if drop_old:
            tx.execute("DELETE FROM auth_key")
        else:
            tx.execute("UPDATE auth_key SET retired_at = ? WHERE retired_at IS NULL", (now(),))
        return _insert_new(tx, (ACCESS_ALG, ID_TOKEN_ALG))


class KeyRing:
    """The keys of one process, loaded from the database; a kid not seen yet (another
    process rotated) reloads them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._keys: dict[str, SigningKey] = {}
        self._reloaded = 0.0
        self.ensure()

    def ensure(self) -> None:
        """Create the active keys when the database has none (first start; workers
        racing here serialize on the lock and only the first creates them)."""
        with self.store.write() as tx:
            tx.lock("openrecord-auth-keys")
            active = {r[0] for r in tx.execute("SELECT alg FROM auth_key WHERE retired_at IS NULL")}
            missing = tuple(a for a in (ACCESS_ALG, ID_TOKEN_ALG) if a not in active)
            if missing:
                _insert_new(tx, missing)
        self.reload()

    def reload(self) -> None:
        cutoff = now() - RETAIN_SECONDS
        rows = self.store.query(
            "SELECT kid, alg, private_jwk, retired_at FROM auth_key"
            " WHERE retired_at IS NULL OR retired_at > ? ORDER BY created_at",
            (cutoff,),
        )
        keys = {}
        for kid, alg, jwk, retired in rows:
            data = loads(jwk)
            key: Key = ECKey.import_key(data) if alg == "ES256" else RSAKey.import_key(data)
            keys[kid] = SigningKey(kid, alg, key, None if retired is None else int(retired))
        with self._lock:
            self._keys = keys
            self._reloaded = time.monotonic()

    def signing(self, alg: str) -> SigningKey:
        """The newest active key for `alg` (keys are re-read every minute, so that a
        rotation reaches every worker process)."""
        if time.monotonic() - self._reloaded > 60:
            self.reload()
        for _ in range(2):
            active = [k for k in self._keys.values() if k.alg == alg and k.retired_at is None]
            if active:
                return active[-1]
            self.reload()  # rotated by another process meanwhile
        self.ensure()
        return self.signing(alg)

    def verifying(self, kid: str) -> SigningKey | None:
        """The key `kid` names, if it is ours and not retired too long ago."""
        key = self._keys.get(kid)
        if key is None and time.monotonic() - self._reloaded > 1.0:
            # another process may have rotated; at most once a second, so that tokens
            # with made-up kids cannot turn every request into a key reload
            self.reload()
            key = self._keys.get(kid)
        if (
            key is not None
            and key.retired_at is not None
            and key.retired_at < now() - RETAIN_SECONDS
        ):
            return None
        return key

    def jwks(self) -> dict[str, Any]:
        """The public keys, active and retired-but-retained (RFC 7517 JWK Set)."""
        self.reload()
        keys = []
        for k in self._keys.values():
            public = dict(k.key.as_dict(private=False))
            public.update({"kid": k.kid, "alg": k.alg, "use": "sig"})
            keys.append(public)
        return {"keys": keys}
