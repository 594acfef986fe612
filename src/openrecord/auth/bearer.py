"""Bearer-token enforcement on the FHIR API: `Authorization: Bearer <JWT>` → SecurityContext.

A token is accepted when it is one of ours (our key by `kid`, ES256 only — `alg=none`,
HMAC and every other algorithm are refused before any key is used), unexpired,
issued for this FHIR base (`aud`) and its `jti` row in `auth_access` is not revoked.
The signature check (~0.2 ms) is done once per token and remembered — a signature,
unlike a revocation, cannot change — while expiry, audience and revocation are
checked on every request, so revocation is immediate: one primary-key lookup on
SQLite; on PostgreSQL the answer is remembered while the worker LISTENs to the
revocation channel that every revoking transaction notifies (looked up again
whenever that listening is not in place).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jws import extract_compact

from openrecord.auth.common import REVOKED_CHANNEL, now
from openrecord.auth.keys import ACCESS_ALG, KeyRing
from openrecord.auth.scopes import ScopeError
from openrecord.fhir.outcome import FHIRError, Issue
from openrecord.service.context import SecurityContext
from openrecord.store.base import Store

__all__ = ["BearerVerifier", "VerifiedToken", "unauthorized"]

_CACHE_MAX = 20_000


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    claims: dict[str, Any]
    exp: int
    aud: str
    jti: str
    context: SecurityContext


def unauthorized(error: str | None, description: str) -> FHIRError:
    """401 with the RFC 6750 §3 challenge and an OperationOutcome."""
    challenge = 'Bearer realm="openrecord"'
    if error:
        challenge += f', error="{error}", error_description="{description}"'
    return FHIRError(
        401,
        [Issue("login" if error is None else "security", description)],
        headers={"WWW-Authenticate": challenge},
    )


class BearerVerifier:
    def __init__(self, store: Store, keys: KeyRing) -> None:
        self.store = store
        self.keys = keys
        self._verified: dict[str, VerifiedToken] = {}
        self._lock = threading.Lock()
        # jti found not revoked, trusted only while the store's watch on revocations is
        # live (PostgreSQL LISTEN): every revoking transaction notifies, and then this
        # is forgotten. On SQLite (no watch) each request looks the row up (~20 µs).
        self._unrevoked: set[str] = set()
        self._generation = 0
        self._watch_live = store.watch(REVOKED_CHANNEL, self._forget)

    def known_context(self, authorization: str | None, audience: str) -> SecurityContext | None:
        """The context of a token this worker has already verified and knows to be
        unrevoked (no I/O: PostgreSQL workers answer it on the event loop); None when
        `context` must decide."""
        if not authorization or not self._watch_live():
            return None
        scheme, _, token = authorization.partition(" ")
        verified = self._verified.get(token.strip()) if scheme.lower() == "bearer" else None
        if (
            verified is None
            or verified.jti not in self._unrevoked
            or verified.exp <= now()
            or verified.aud.rstrip("/") != audience.rstrip("/")
        ):
            return None
        return verified.context

    def _forget(self) -> None:
        with self._lock:
            self._generation += 1
            self._unrevoked.clear()

    def claims(self, token: str) -> dict[str, Any] | None:
        """The claims of a valid, unexpired, unrevoked access token (any audience of
        ours), else None: what introspection reports."""
        try:
            verified = self._signature(token)
        except FHIRError:
            return None
        if verified.exp <= now() or self._revoked(verified.jti):
            return None
        return verified.claims

    def jti_of(self, token: str) -> str | None:
        """The `jti` of one of our access tokens (expired or not), for revocation."""
        try:
            return (self._verified.get(token) or self._signature(token)).jti
        except FHIRError:
            return None

    def context(self, authorization: str | None, audience: str) -> SecurityContext:
        """The security context of a request's Authorization header (401 otherwise)."""
        if not authorization:
            raise unauthorized(None, "this server requires a bearer token (SMART on FHIR)")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("invalid_request", "use Authorization: Bearer <access token>")
        verified = self._verified.get(token) or self._signature(token)
        if verified.exp <= now():
            raise unauthorized("invalid_token", "the access token has expired")
        if verified.aud.rstrip("/") != audience.rstrip("/"):
            raise unauthorized("invalid_token", "the access token is for another server (aud)")
        if self._revoked(verified.jti):
            raise unauthorized("invalid_token", "the access token was revoked")
        return verified.context

    def _revoked(self, jti: str) -> bool:
        live = self._watch_live()
        if live and jti in self._unrevoked:
            return False
        generation = self._generation
        rows = self.store.query("SELECT revoked FROM auth_access WHERE jti = ?", (jti,))
        revoked = not rows or rows[0][0] != 0
        if live and not revoked:
            with self._lock:  # unless a revocation arrived meanwhile
                if generation == self._generation and self._watch_live():
                    if len(self._unrevoked) >= _CACHE_MAX:
                        self._unrevoked.clear()
                    self._unrevoked.add(jti)
        return revoked

    def _signature(self, token: str) -> VerifiedToken:
        """Check the signature and the claims' shape; remembered per token."""
        bad = unauthorized("invalid_token", "the access token is not valid")
        try:
            header = extract_compact(token.encode()).protected
        except (JoseError, ValueError, UnicodeError) as err:
            raise bad from err
        if header.get("alg") != ACCESS_ALG or not isinstance(header.get("kid"), str):
            raise bad
        key = self.keys.verifying(header["kid"])
        if key is None or key.alg != ACCESS_ALG:
            raise bad
        try:
            claims = jwt.decode(token, key.key, algorithms=[ACCESS_ALG]).claims
        except (JoseError, ValueError) as err:
            raise bad from err
        exp, aud, jti = claims.get("exp"), claims.get("aud"), claims.get("jti")
        scope, client = claims.get("scope"), claims.get("client_id")
        if not (
            isinstance(exp, int)
            and isinstance(aud, str)
            and isinstance(jti, str)
            and isinstance(scope, str)
            and isinstance(client, str)
        ):
            raise bad
        try:
            context = SecurityContext(
                # The person as a FHIR reference (Patient/…, RelatedPerson/…) when the
                # token names one: consent and audit speak of people, not account ids.
                user=claims.get("fhirUser")
                or (claims.get("sub") if claims.get("sub") != client else None),
                client=client,
                patient=claims.get("patient"),
                scopes=frozenset(scope.split()),
            )
        except ScopeError as err:
            raise bad from err
        verified = VerifiedToken(claims, exp, aud, jti, context)
        with self._lock:
            if len(self._verified) >= _CACHE_MAX:
                self._verified.clear()
            self._verified[token] = verified
        return verified
