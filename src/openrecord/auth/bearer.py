"""Bearer-token enforcement on the FHIR API: `Authorization: Bearer <JWT>` → SecurityContext.

A token is accepted when it is one of ours (our key by `kid`, ES256 only — `alg=none`,
HMAC and every other algorithm are refused before any key is used), unexpired,
issued for this FHIR base (`aud`) and its `jti` row in `auth_access` is not revoked.
The signature check (~0.2 ms) is done once per token and remembered — a signature,
unlike a revocation, cannot change — while expiry, audience and the revocation row
are checked on every request (one primary-key lookup), so revocation is immediate.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jws import extract_compact

from openrecord.auth.common import now
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
        rows = self.store.query("SELECT revoked FROM auth_access WHERE jti = ?", (jti,))
        return not rows or rows[0][0] != 0

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
