"""OAuth clients: registration (operator or RFC 7591) and authentication at the endpoints.

Client kinds: public (`none`: PKCE alone protects the code), confidential symmetric
(`client_secret_basic`/`client_secret_post`; the secret is shown once and stored
hashed) and confidential asymmetric (`private_key_jwt`, RFC 7523 assertions signed
RS384 or ES384 with a key from the client's `jwks` or `jwks_uri`). An assertion's
`jti` is recorded until it expires, so a replayed assertion is refused. `system/`
scopes are never granted by a client to itself: only an operator
(`openrecord admin add-client`) or a software statement signed by a configured
trusted issuer can register them.
"""

from __future__ import annotations

import base64
import hmac
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote_plus, urlsplit

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from openrecord.auth.common import OAuthError, digest, dumps, loads, now, random_token
from openrecord.auth.scopes import ScopeError, parse_scope, parse_scopes

__all__ = [
    "ASSERTION_ALGS",
    "ASSERTION_TYPE",
    "AUTH_METHODS",
    "Client",
    "authenticate_client",
    "key_set",
    "load_client",
    "register_client",
    "scopes_covered",
]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGS = ("RS384", "ES384")  # SMART Backend Services: both SHALL be supported
AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post", "private_key_jwt")
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
MAX_ASSERTION_SECONDS = 5 * 60  # SMART: exp no more than five minutes in the future
JWKS_URI_SECONDS = 5 * 60


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    name: str
    auth_method: str
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    scopes: tuple[str, ...]  # what it may be granted; empty: any non-system scope
    source: str  # "operator" or "dynamic"
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    secret_hash: str | None = field(default=None, repr=False)
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def public(self) -> bool:
        return self.auth_method == "none"


def key_set(jwks: dict[str, Any]) -> KeySet:
    """A JWK Set from its JSON (validated by the caller)."""
    return KeySet.import_key_set(cast(Any, jwks))


def _invalid(description: str) -> OAuthError:
    return OAuthError("invalid_client_metadata", description)


def _check_redirect_uri(uri: str) -> None:
    """Absolute, no fragment; https, or http only on a loopback host (native apps,
    RFC 8252 §7.3), or a private-use scheme with a dot (RFC 8252 §7.1)."""
    parts = urlsplit(uri)
    if not parts.scheme or parts.fragment or uri != uri.strip():
        raise OAuthError("invalid_redirect_uri", f"{uri!r}: an absolute URI without fragment")
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1"):
        return
    if parts.scheme not in ("http", "https", "javascript", "data", "file") and "." in parts.scheme:
        return
    raise OAuthError("invalid_redirect_uri", f"{uri!r}: use https (http only for loopback)")


def _public_jwks(jwks: Any) -> dict[str, Any]:
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise _invalid("jwks must be a JWK Set with keys")
    for key in jwks["keys"]:
        if not isinstance(key, dict) or key.get("kty") not in ("RSA", "EC"):
            raise _invalid("jwks keys must be RSA or EC keys")
        if "d" in key:
            raise _invalid("jwks must hold public keys only (a private key was sent)")
    try:
        key_set(jwks)
    except (JoseError, ValueError, TypeError) as err:
        raise _invalid(f"jwks: {err}") from err
    return jwks


def scopes_covered(requested: Sequence[str], allowed: Sequence[str]) -> list[str]:
    """The requested clinical scopes that no allowed scope covers (same level, type `*`
    or equal, permissions a superset, no query or the same one)."""
    allowed_grants = [g for g in (parse_scope(s) for s in allowed) if g is not None]
    missing = []
    for scope in requested:
        grant = parse_scope(scope)
        if grant is None:
            continue
        if not any(
            a.level == grant.level
            and a.type in ("*", grant.type)
            and grant.permissions <= a.permissions
            and (not a.query or a.query == grant.query)
            for a in allowed_grants
        ):
            missing.append(scope)
    return missing


def register_client(
    store: Any,
    metadata: Mapping[str, Any],
    *,
    source: str,
    allow_system: bool = False,
) -> tuple[Client, dict[str, Any]]:
    """Validate RFC 7591 client metadata and store the client; the client and the
    registration response (with `client_secret` for secret-based methods, shown once)."""
    meta = dict(metadata)
    name = meta.get("client_name") or "unnamed app"
    if not isinstance(name, str) or len(name) > 200:
        raise _invalid("client_name must be a string of at most 200 characters")
    grant_types = meta.get("grant_types") or ["authorization_code"]
    if not isinstance(grant_types, list) or any(g not in GRANT_TYPES for g in grant_types):
        raise _invalid(f"grant_types must be among {', '.join(GRANT_TYPES)}")
    code_flow = "authorization_code" in grant_types
    backend = "client_credentials" in grant_types
    if code_flow and backend:
        raise _invalid("register an app and a backend service as two clients")
    if code_flow and "refresh_token" not in grant_types:
        grant_types = [*grant_types, "refresh_token"]
    method = meta.get("token_endpoint_auth_method") or (
        "private_key_jwt" if backend else "client_secret_basic"
    )
    if method not in AUTH_METHODS:
        raise _invalid(f"token_endpoint_auth_method must be one of {', '.join(AUTH_METHODS)}")
    if backend and method != "private_key_jwt":
        raise _invalid("client_credentials clients authenticate with private_key_jwt")
    redirect_uris = meta.get("redirect_uris") or []
    if not isinstance(redirect_uris, list) or not all(isinstance(u, str) for u in redirect_uris):
        raise _invalid("redirect_uris must be a list of URIs")
    if code_flow and not redirect_uris:
        raise OAuthError("invalid_redirect_uri", "authorization_code clients need redirect_uris")
    for uri in redirect_uris:
        _check_redirect_uri(uri)
    response_types = meta.get("response_types") or (["code"] if code_flow else [])
    if response_types not in ([], ["code"]):
        raise _invalid("response_types: only code is supported")
    jwks, jwks_uri = meta.get("jwks"), meta.get("jwks_uri")
    if method == "private_key_jwt":
        if (jwks is None) == (jwks_uri is None):
            raise _invalid("private_key_jwt needs exactly one of jwks and jwks_uri")
        if jwks is not None:
            jwks = _public_jwks(jwks)
        else:
            uri = urlsplit(str(jwks_uri))
            loopback = uri.scheme == "http" and uri.hostname in ("127.0.0.1", "localhost")
            if uri.scheme != "https" and not (loopback and source == "operator"):
                raise _invalid("jwks_uri must be https")
    elif jwks is not None or jwks_uri is not None:
        raise _invalid("jwks and jwks_uri are for private_key_jwt clients")
    raw_scope = meta.get("scope") or ""
    if not isinstance(raw_scope, str):
        raise _invalid("scope must be a space-separated string")
    scopes = raw_scope.split()
    try:
        policy = parse_scopes(scopes)
    except ScopeError as err:
        raise _invalid(str(err)) from err
    system = [g.scope for g in policy.grants if g.level == "system"]
    if system and not allow_system:
        raise _invalid(
            f"system scopes ({' '.join(system)}) are not self-granted: an operator registers"
            " backend services (openrecord admin add-client) or a trusted issuer signs them"
        )
    if backend and (not scopes or any(g.level != "system" for g in policy.grants)):
        raise _invalid("a backend service client needs system/ scopes (and only those)")
    if code_flow and system:
        raise _invalid("system scopes are for client_credentials clients")
    client_id = random_token(16)
    secret = random_token(32) if method.startswith("client_secret") else None
    stored = {
        "client_name": name,
        "redirect_uris": redirect_uris,
        "grant_types": grant_types,
        "response_types": response_types,
        "token_endpoint_auth_method": method,
        **({"scope": " ".join(scopes)} if scopes else {}),
        **({"jwks": jwks} if jwks is not None else {}),
        **({"jwks_uri": jwks_uri} if jwks_uri is not None else {}),
        **{k: meta[k] for k in ("software_id", "software_version") if isinstance(meta.get(k), str)},
    }
    issued = now()
    with store.write() as tx:
        tx.execute(
            "INSERT INTO auth_client (client_id, metadata, secret_hash, source, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (client_id, dumps(stored), digest(secret) if secret else None, source, issued),
        )
    client = _client(client_id, stored, digest(secret) if secret else None, source)
    response: dict[str, Any] = {"client_id": client_id, "client_id_issued_at": issued, **stored}
    if secret:
        response |= {"client_secret": secret, "client_secret_expires_at": 0}
    return client, response


def _client(client_id: str, meta: dict[str, Any], secret_hash: str | None, source: str) -> Client:
    return Client(
        client_id=client_id,
        name=meta.get("client_name") or client_id,
        auth_method=meta["token_endpoint_auth_method"],
        redirect_uris=tuple(meta.get("redirect_uris") or ()),
        grant_types=tuple(meta.get("grant_types") or ()),
        scopes=tuple((meta.get("scope") or "").split()),
        source=source,
        jwks=meta.get("jwks"),
        jwks_uri=meta.get("jwks_uri"),
        secret_hash=secret_hash,
        metadata=meta,
    )


def load_client(store: Any, client_id: str) -> Client | None:
    rows = store.query(
        "SELECT metadata, secret_hash, source FROM auth_client WHERE client_id = ?", (client_id,)
    )
    if not rows:
        return None
    meta, secret_hash, source = rows[0]
    return _client(client_id, loads(meta), secret_hash, source)


# -- authentication at the token, introspection and revocation endpoints ----------------

_jwks_cache: dict[str, tuple[float, dict[str, Any]]] = {}
_jwks_lock = threading.Lock()


def _fetch_jwks(uri: str, *, fresh: bool) -> dict[str, Any]:
    with _jwks_lock:
        cached = _jwks_cache.get(uri)
    if cached and not fresh and cached[0] > time.monotonic():
        return cached[1]
    try:
        response = httpx.get(uri, timeout=5, follow_redirects=False)
        response.raise_for_status()
        data = _public_jwks(response.json())
    except (httpx.HTTPError, ValueError, OAuthError) as err:
        raise OAuthError(
            "invalid_client", f"the client's jwks_uri could not be read: {err}", 401
        ) from err
    with _jwks_lock:
        _jwks_cache[uri] = (time.monotonic() + JWKS_URI_SECONDS, data)
    return data


def _unverified_claims(assertion: str) -> dict[str, Any]:
    try:
        payload = assertion.split(".")[1]
        claims = loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as err:
        raise OAuthError("invalid_client", "the client assertion is not a JWT", 401) from err
    if not isinstance(claims, dict):
        raise OAuthError("invalid_client", "the client assertion is not a JWT", 401)
    return claims


def _verify_assertion(store: Any, assertion: str, token_url: str) -> Client:
    """RFC 7523 §3 / SMART Backend Services: signature by one of the client's keys
    (RS384/ES384), iss = sub = client_id, aud = the token endpoint, exp within five
    minutes, a `jti` never seen before."""
    client_id = _unverified_claims(assertion).get("iss")
    client = load_client(store, client_id) if isinstance(client_id, str) else None
    if client is None or client.auth_method != "private_key_jwt":
        raise OAuthError("invalid_client", "unknown client or not a private_key_jwt client", 401)
    token = None
    for fresh in (False, True):
        jwks = client.jwks or _fetch_jwks(str(client.jwks_uri), fresh=fresh)
        try:
            token = jwt.decode(assertion, key_set(jwks), algorithms=ASSERTION_ALGS)
            break
        except (JoseError, ValueError) as err:
            if fresh or client.jwks is not None:
                raise OAuthError(
                    "invalid_client", f"the client assertion's signature is invalid: {err}", 401
                ) from err
    assert token is not None
    claims = token.claims
    t = now()
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    exp = claims.get("exp")
    jti = claims.get("jti")
    problem = None
    if claims.get("sub") != client.client_id:
        problem = "iss and sub must both be the client_id"
    elif token_url not in audiences:
        problem = f"aud must be the token endpoint {token_url}"
    elif not isinstance(exp, int) or exp <= t:
        problem = "the assertion has expired (or has no exp)"
    elif exp > t + MAX_ASSERTION_SECONDS + 60:
        problem = "exp must be at most five minutes ahead"
    elif not isinstance(jti, str) or not jti or len(jti) > 255:
        problem = "the assertion needs a jti"
    if problem:
        raise OAuthError("invalid_client", problem, 401)
    with store.write() as tx:
        tx.execute("DELETE FROM auth_jti WHERE expires_at < ?", (t - 60,))
        fresh_jti = tx.execute(
            "INSERT INTO auth_jti (client_id, jti, expires_at) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING RETURNING jti",
            (client.client_id, jti, exp),
        )
    if not fresh_jti:
        raise OAuthError("invalid_client", "the assertion's jti was used before (replay)", 401)
    return client


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode()
        user, secret = raw.split(":", 1)
    except ValueError as err:
        raise OAuthError("invalid_client", "malformed Basic credentials", 401) from err
    return unquote_plus(user), unquote_plus(secret)  # RFC 6749 §2.3.1: form-encoded


def authenticate_client(
    store: Any, form: Mapping[str, str], authorization: str | None, token_url: str
) -> Client:
    """The client making this request, by the one method it registered."""
    basic = _basic_credentials(authorization)
    if form.get("client_assertion") or form.get("client_assertion_type"):
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise OAuthError("invalid_client", f"client_assertion_type must be {ASSERTION_TYPE}")
        client = _verify_assertion(store, form.get("client_assertion", ""), token_url)
        if form.get("client_id") not in (None, client.client_id):
            raise OAuthError("invalid_client", "client_id does not match the assertion", 401)
        return client
    if basic is not None:
        client_id, secret = basic
        method = "client_secret_basic"
    else:
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        method = "client_secret_post" if secret else "none"
    found = load_client(store, client_id) if client_id else None
    if found is None:
        raise OAuthError("invalid_client", "unknown client", 401)
    client = found
    if client.auth_method != method:
        raise OAuthError(
            "invalid_client", f"this client authenticates with {client.auth_method}", 401
        )
    if method != "none" and not (
        client.secret_hash and hmac.compare_digest(client.secret_hash, digest(secret))
    ):
        raise OAuthError("invalid_client", "wrong client credentials", 401)
    return client
