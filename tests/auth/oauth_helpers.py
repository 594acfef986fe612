"""What an OAuth/SMART client does, written from the specs for the auth tests.

PKCE (RFC 7636 §4.1-4.2), client assertions (RFC 7523 §3, SMART Backend Services),
the authorization-code exchange. The user's part of an authorization (login, consent)
is completed in-process on the server's own database with `complete_authorization`,
the interface the login/consent pages call.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from openrecord.auth.authorization import complete_authorization
from openrecord.store import open_store
from tests.shared_data import require_shared

REDIRECT = "http://127.0.0.1:9/callback"  # never contacted: tests read the Location


def root_of(base: str) -> str:
    return base.rsplit("/fhir", 1)[0]


def pkce() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge) computed as RFC 7636 §4.2 says."""
    verifier = base64.urlsafe_b64encode(secrets.token_bytes(48)).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def example_key(alg: str) -> tuple[dict[str, Any], ECKey | RSAKey]:
    """The SMART App Launch IG's published example key pair (test use only): its
    public JWK Set and the private key."""
    folder = require_shared("smart", "smart-app-launch-2.2.0", "example-keys")
    public = orjson.loads((folder / f"{alg}.public.json").read_bytes())
    private = next(
        k for k in orjson.loads((folder / f"{alg}.private.json").read_bytes())["keys"] if "d" in k
    )
    key: ECKey | RSAKey = (
        ECKey.import_key(private) if alg == "ES384" else RSAKey.import_key(private)
    )
    return public, key


def assertion(client_id: str, token_url: str, key: ECKey | RSAKey, alg: str, **over: Any) -> str:
    """A client assertion as SMART Backend Services describes it."""
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "exp": int(time.time()) + 240,
        "jti": uuid.uuid4().hex,
        **over,
    }
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[alg])


def backend_token(
    base: str, client_id: str, key: ECKey | RSAKey, alg: str, scope: str
) -> httpx.Response:
    token_url = f"{root_of(base)}/auth/token"
    return httpx.post(
        token_url,
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion(client_id, token_url, key, alg),
        },
    )


def register(base: str, **metadata: Any) -> dict[str, Any]:
    response = httpx.post(f"{root_of(base)}/auth/register", json=metadata)
    assert response.status_code == 201, response.text
    return dict(response.json())


def register_app(base: str, **extra: Any) -> dict[str, Any]:
    """A public patient-facing app (RFC 7591)."""
    metadata: dict[str, Any] = {
        "client_name": "Test app",
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
    }
    return register(base, **(metadata | extra))


@dataclass
class Authorization:
    location: str  # where the server sent the browser
    verifier: str
    state: str

    @property
    def request_id(self) -> str | None:
        query = parse_qs(urlsplit(self.location).query)
        return query["request"][0] if urlsplit(self.location).path == "/auth/login" else None

    @property
    def error(self) -> str | None:
        return parse_qs(urlsplit(self.location).query).get("error", [None])[0]


def authorize(base: str, client_id: str, scope: str, **over: str | None) -> Authorization:
    """GET /auth/authorize as an app's browser would; `over` replaces parameters
    (None drops one)."""
    verifier, challenge = pkce()
    state = secrets.token_urlsafe(12)
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": state,
        "aud": base,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **over,
    }
    query = {k: v for k, v in params.items() if v is not None}
    response = httpx.get(f"{root_of(base)}/auth/authorize", params=query)
    assert response.status_code in (302, 303), response.text
    return Authorization(response.headers["location"], verifier, state)


def approve(
    database: str,
    request_id: str,
    *,
    patient: str | None,
    scopes: list[str],
    user: str = "user-1",
) -> dict[str, str]:
    """The user logs in and consents (the pages' call); the redirect's query."""
    store = open_store(database)
    try:
        url = complete_authorization(
            store,
            request_id,
            user_id=user,
            fhir_user=f"Patient/{patient}" if patient else None,
            patient=patient,
            granted_scopes=scopes,
        )
    finally:
        store.close()
    assert url.startswith(REDIRECT + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def exchange(base: str, client_id: str, code: str, verifier: str, **over: str) -> httpx.Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": client_id,
        "code_verifier": verifier,
        **over,
    }
    return httpx.post(f"{root_of(base)}/auth/token", data=data)


def patient_login(
    base: str, database: str, client_id: str, patient: str, scope: str
) -> dict[str, Any]:
    """A full standalone launch for `patient`: the token response."""
    auth = authorize(base, client_id, scope)
    assert auth.request_id, auth.location
    redirect = approve(database, auth.request_id, patient=patient, scopes=scope.split())
    assert redirect["state"] == auth.state
    response = exchange(base, client_id, redirect["code"], auth.verifier)
    assert response.status_code == 200, response.text
    return dict(response.json())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
