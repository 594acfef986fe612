"""Tokens: JWT access tokens, id_tokens, refresh-token families; introspection, revocation.

Access tokens are short-lived JWTs (ES256) naming the client, user, patient and scopes,
with a `jti` recorded in `auth_access`: revoking the token, its grant or its app flips
that row and the next request fails (bearer.py checks it every time). Refresh tokens
are opaque, stored hashed, rotated on every use; a refresh token used twice means it
was copied, so the whole family (the grant) is revoked (OAuth 2.0 Security BCP §4.14).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from joserfc import jwt

from openrecord.auth.authorization import RedeemedCode, grant_lock, revoke_grants_where
from openrecord.auth.clients import Client, scopes_covered
from openrecord.auth.common import (
    REVOKED_CHANNEL,
    OAuthError,
    digest,
    dumps,
    loads,
    now,
    random_token,
    s256,
)
from openrecord.auth.keys import ACCESS_ALG, ID_TOKEN_ALG, KeyRing
from openrecord.auth.scopes import ScopeError, parse_scopes
from openrecord.store.base import Store, WriteTx

__all__ = [
    "ACCESS_SECONDS",
    "ONLINE_REFRESH_SECONDS",
    "REFRESH_SECONDS",
    "TokenService",
]

ACCESS_SECONDS = 10 * 60
ID_TOKEN_SECONDS = 60 * 60
REFRESH_SECONDS = 120 * 24 * 3600  # offline_access: over 3 months (ONC § 170.315(g)(10))
ONLINE_REFRESH_SECONDS = 12 * 3600  # online_access: one working day


def _purge_expired(tx: WriteTx, t: int) -> None:
    """Rows nothing can use any more: access tokens and requests expired a day ago,
    refresh tokens expired (used ones are kept while their family may be replayed)."""
    day = 24 * 3600
    tx.execute("DELETE FROM auth_access WHERE expires_at < ?", (t - day,))
    tx.execute("DELETE FROM auth_request WHERE expires_at < ?", (t - day,))
    tx.execute("DELETE FROM auth_launch WHERE expires_at < ?", (t - day,))
    tx.execute("DELETE FROM auth_refresh WHERE expires_at < ?", (t - day,))


@dataclass(frozen=True, slots=True)
class GrantRow:
    id: str
    client_id: str
    user_id: str | None
    patient: str | None
    fhir_user: str | None
    scope: str
    context: dict[str, Any]


class TokenService:
    """Issues and revokes tokens for the FHIR base `audience` (also the issuer)."""

    def __init__(self, store: Store, keys: KeyRing) -> None:
        self.store = store
        self.keys = keys

    # -- issuing ---------------------------------------------------------------------

    def _access_token(
        self, issuer: str, aud: str, client_id: str, grant: GrantRow | None, scope: str
    ) -> tuple[str, int]:
        t = now()
        jti = random_token(18)
        claims: dict[str, Any] = {
            "iss": issuer,
            "aud": aud,
            "sub": (grant.user_id if grant else None) or client_id,
            "client_id": client_id,
            "scope": scope,
            "iat": t,
            "exp": t + ACCESS_SECONDS,
            "jti": jti,
        }
        if grant is not None:
            claims["gid"] = grant.id
            if grant.patient:
                claims["patient"] = grant.patient
            if grant.fhir_user:
                claims["fhirUser"] = grant.fhir_user
            if grant.context.get("encounter"):
                claims["encounter"] = grant.context["encounter"]
        key = self.keys.signing(ACCESS_ALG)
        token = jwt.encode({"alg": ACCESS_ALG, "kid": key.kid, "typ": "at+jwt"}, claims, key.key)
        with self.store.write() as tx:
            if secrets.randbelow(100) == 0:  # now and then, forget long-expired tokens
                _purge_expired(tx, t)
            if grant is not None:  # never hand out a token of a grant revoked meanwhile
                tx.lock(grant_lock(grant.id))
                revoked = tx.execute(
                    "SELECT 1 FROM auth_grant WHERE id = ? AND revoked_at IS NOT NULL",
                    (grant.id,),
                )
                if revoked:
                    raise OAuthError("invalid_grant", "the authorization was revoked")
            tx.execute(
                "INSERT INTO auth_access (jti, grant_id, client_id, expires_at, revoked)"
                " VALUES (?, ?, ?, ?, 0)",
                (jti, grant.id if grant else None, client_id, t + ACCESS_SECONDS),
            )
        return token, ACCESS_SECONDS

    def _id_token(self, issuer: str, grant: GrantRow, nonce: str | None) -> str:
        t = now()
        claims: dict[str, Any] = {
            "iss": issuer,
            "sub": grant.user_id,
            "aud": grant.client_id,
            "iat": t,
            "exp": t + ID_TOKEN_SECONDS,
            "auth_time": t,
        }
        if grant.fhir_user:
            claims["fhirUser"] = grant.fhir_user
        if nonce:
            claims["nonce"] = nonce
        key = self.keys.signing(ID_TOKEN_ALG)
        return jwt.encode({"alg": ID_TOKEN_ALG, "kid": key.kid, "typ": "JWT"}, claims, key.key)

    def _refresh_token(self, grant: GrantRow, scope: str) -> str | None:
        scopes = grant.scope.split()
        if "offline_access" in scopes:
            seconds = REFRESH_SECONDS
        elif "online_access" in scopes:
            seconds = ONLINE_REFRESH_SECONDS
        else:
            return None
        token = random_token(32)
        with self.store.write() as tx:
            tx.execute(
                "INSERT INTO auth_refresh (token_hash, grant_id, scope, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (digest(token), grant.id, scope, now() + seconds),
            )
        return token

    def _response(
        self,
        issuer: str,
        aud: str,
        grant: GrantRow,
        scope: str,
        refresh_scope: str,
        nonce: str | None = None,
    ) -> dict[str, Any]:
        access, expires_in = self._access_token(issuer, aud, grant.client_id, grant, scope)
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "scope": scope,
        }
        refresh = self._refresh_token(grant, refresh_scope)
        if refresh:
            body["refresh_token"] = refresh
        if "openid" in scope.split() and grant.user_id:
            body["id_token"] = self._id_token(issuer, grant, nonce)
        if grant.patient:
            body["patient"] = grant.patient
            body["need_patient_banner"] = grant.context.get("need_patient_banner", True)
        for key in ("encounter", "fhirContext"):
            if grant.context.get(key):
                body[key] = grant.context[key]
        return body

    def authorization_code(
        self,
        client: Client,
        code: RedeemedCode,
        *,
        redirect_uri: str,
        verifier: str,
        issuer: str,
        aud: str,
    ) -> dict[str, Any]:
        """Exchange a redeemed code (RFC 6749 §4.1.3 with PKCE, RFC 7636 §4.6)."""
        if redirect_uri != code.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request")
        if not verifier or not 43 <= len(verifier) <= 128:
            raise OAuthError("invalid_grant", "code_verifier (43 to 128 characters) is required")
        if s256(verifier) != code.code_challenge:
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        grant = GrantRow(
            id=random_token(18),
            client_id=client.client_id,
            user_id=code.user_id,
            patient=code.patient,
            fhir_user=code.fhir_user,
            scope=code.scope,
            context=code.context,
        )
        with self.store.write() as tx:
            tx.execute(
                "INSERT INTO auth_grant (id, client_id, user_id, patient, fhir_user, scope,"
                " context, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    grant.id,
                    grant.client_id,
                    grant.user_id,
                    grant.patient,
                    grant.fhir_user,
                    grant.scope,
                    dumps(grant.context),
                    now(),
                ),
            )
            attached = tx.execute(
                "UPDATE auth_request SET grant_id = ? WHERE id = ? AND status = 'used'"
                " RETURNING id",
                (grant.id, code.request_id),
            )
            if not attached:  # the code was replayed while we were redeeming it
                tx.execute("UPDATE auth_grant SET revoked_at = ? WHERE id = ?", (now(), grant.id))
        if not attached:
            raise OAuthError("invalid_grant", "the authorization code was used twice")
        return self._response(issuer, aud, grant, grant.scope, grant.scope, code.nonce)

    def _grant(self, grant_id: str) -> tuple[GrantRow, int | None] | None:
        rows = self.store.query(
            "SELECT client_id, user_id, patient, fhir_user, scope, context, revoked_at"
            " FROM auth_grant WHERE id = ?",
            (grant_id,),
        )
        if not rows:
            return None
        client_id, user_id, patient, fhir_user, scope, context, revoked = rows[0]
        row = GrantRow(grant_id, client_id, user_id, patient, fhir_user, scope, loads(context))
        return row, revoked

    def refresh(
        self, client: Client, token: str, requested: str | None, *, issuer: str, aud: str
    ) -> dict[str, Any]:
        """Rotate a refresh token (RFC 6749 §6): one use each; a reused one revokes
        its family. The scope may only narrow."""
        token_hash = digest(token)
        rows = self.store.query(
            "SELECT grant_id, scope, used_at, expires_at FROM auth_refresh WHERE token_hash = ?",
            (token_hash,),
        )
        if not rows:
            raise OAuthError("invalid_grant", "the refresh token is invalid")
        grant_id, token_scope, used_at, expires_at = rows[0]
        if used_at is not None:
            self._revoke_family(grant_id)
            raise OAuthError("invalid_grant", "the refresh token was already used")
        if int(expires_at) <= now():
            raise OAuthError("invalid_grant", "the refresh token has expired")
        found = self._grant(grant_id)
        if found is None or found[1] is not None:
            raise OAuthError("invalid_grant", "the authorization was revoked")
        grant = found[0]
        if grant.client_id != client.client_id:  # a stolen token presented by another client
            self._revoke_family(grant_id)
            raise OAuthError("invalid_grant", "the refresh token was issued to another client")
        scope = token_scope
        if requested:
            wanted = requested.split()
            extra = [s for s in wanted if s not in token_scope.split()]
            if extra:
                raise OAuthError("invalid_scope", f"a refresh cannot add scopes: {' '.join(extra)}")
            scope = " ".join(dict.fromkeys(wanted))
        with self.store.write() as tx:
            used = tx.execute(
                "UPDATE auth_refresh SET used_at = ? WHERE token_hash = ? AND used_at IS NULL"
                " RETURNING grant_id",
                (now(), token_hash),
            )
        if not used:  # used concurrently: one of the two is a copy
            self._revoke_family(grant_id)
            raise OAuthError("invalid_grant", "the refresh token was already used")
        return self._response(issuer, aud, grant, scope, token_scope)

    def _revoke_family(self, grant_id: str) -> None:
        with self.store.write() as tx:
            revoke_grants_where(tx, "id = ?", (grant_id,))

    def client_credentials(
        self, client: Client, requested: str | None, *, issuer: str, aud: str
    ) -> dict[str, Any]:
        """SMART Backend Services: system scopes the operator registered for the client."""
        if "client_credentials" not in client.grant_types:
            raise OAuthError("unauthorized_client", "this client may not use client_credentials")
        wanted = (requested or "").split()
        if not wanted:
            raise OAuthError("invalid_scope", "scope is required")
        try:
            policy = parse_scopes(wanted)
        except ScopeError as err:
            raise OAuthError("invalid_scope", str(err)) from err
        if policy.other or any(g.level != "system" for g in policy.grants):
            raise OAuthError("invalid_scope", "client_credentials grants system/ scopes only")
        missing = scopes_covered(wanted, client.scopes)
        if missing:
            raise OAuthError("invalid_scope", f"not registered for: {' '.join(missing)}")
        scope = " ".join(wanted)
        access, expires_in = self._access_token(issuer, aud, client.client_id, None, scope)
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "scope": scope,
        }

    # -- introspection and revocation ------------------------------------------------

    def introspect(self, client: Client, token: str, verify: Any) -> dict[str, Any]:
        """RFC 7662: active and the token's claims, only for the client's own tokens."""
        claims = verify(token)
        if claims is not None and claims.get("client_id") == client.client_id:
            public = {k: v for k, v in claims.items() if k != "gid"}  # internal grant id
            return {"active": True, "token_type": "Bearer", **public}
        rows = self.store.query(
            "SELECT r.grant_id, r.scope, r.expires_at FROM auth_refresh r"
            " JOIN auth_grant g ON g.id = r.grant_id WHERE r.token_hash = ?"
            " AND r.used_at IS NULL AND r.expires_at > ? AND g.revoked_at IS NULL"
            " AND g.client_id = ?",
            (digest(token), now(), client.client_id),
        )
        if rows:
            found = self._grant(rows[0][0])
            assert found is not None
            grant = found[0]
            body: dict[str, Any] = {
                "active": True,
                "token_type": "refresh_token",
                "client_id": client.client_id,
                "scope": rows[0][1],
                "exp": int(rows[0][2]),
            }
            if grant.user_id:
                body["sub"] = grant.user_id
            if grant.patient:
                body["patient"] = grant.patient
            return body
        return {"active": False}

    def revoke(self, client: Client, token: str, jti: str | None) -> None:
        """RFC 7009: a refresh token revokes its grant (and the grant's access tokens);
        an access token (its `jti`) itself. Unknown tokens are silently accepted."""
        with self.store.write() as tx:
            rows = tx.execute(
                "SELECT r.grant_id FROM auth_refresh r JOIN auth_grant g ON g.id = r.grant_id"
                " WHERE r.token_hash = ? AND g.client_id = ?",
                (digest(token), client.client_id),
            )
            if rows:
                revoke_grants_where(tx, "id = ?", (rows[0][0],))
            elif jti:
                tx.execute(
                    "UPDATE auth_access SET revoked = 1 WHERE jti = ? AND client_id = ?",
                    (jti, client.client_id),
                )
                tx.notify(REVOKED_CHANNEL)
