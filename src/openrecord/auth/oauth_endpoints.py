"""The authorization server's HTTP endpoints (SMART App Launch 2.2, RFC 6749/7636/7662/7009/7591).

`AuthServer` holds the keys and token service of one worker process, serves
discovery (`/.well-known/smart-configuration`, OpenID configuration, JWKS; the
documents are in `auth/discovery.py`),
`/auth/authorize`, `/auth/token`, `/auth/introspect`, `/auth/revoke` and
`/auth/register`, and turns a FHIR request's bearer token into its SecurityContext.
The interactive pages (login, MFA, patient picker, consent) live elsewhere and finish
a request through `auth/authorization.py`. Every endpoint but discovery is rate
limited (`auth/rate_limit.py`) before any other database work.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from joserfc import jwt
from joserfc.errors import JoseError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from openrecord.auth.authorization import load_launch, redeem_code, store_pending, with_query
from openrecord.auth.bearer import BearerVerifier
from openrecord.auth.clients import (
    Client,
    authenticate_client,
    key_set,
    load_client,
    register_client,
    scopes_covered,
)
from openrecord.auth.common import OAuthError, loads, now
from openrecord.auth.discovery import openid_configuration, smart_configuration
from openrecord.auth.keys import KeyRing
from openrecord.auth.rate_limit import RateLimited, RateLimiter, RateLimits, claimed_client_id
from openrecord.auth.scopes import ScopeError, parse_scopes
from openrecord.auth.tokens import TokenService
from openrecord.fhir.outcome import FHIRError
from openrecord.service.context import SecurityContext
from openrecord.store.base import Store

__all__ = ["AuthConfig", "AuthServer", "load_trusted_issuers"]

log = logging.getLogger("openrecord.auth")

LOGIN_PATH = "/auth/login"
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # BASE64URL of a SHA-256: 43 characters
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_MAX_FORM = 64 * 1024


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """`public_url`: the server's origin as apps see it (`https://records.example.org`);
    without it, each request's own Host names it (fine on loopback, set it in
    production). `trusted_issuers`: software-statement issuer → its JWK Set.
    `rate_limits`: of the endpoints (`auth/rate_limit.py`)."""

    public_url: str | None = None
    trusted_issuers: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    require_software_statement: bool = False
    rate_limits: RateLimits = field(default_factory=RateLimits)


def load_trusted_issuers(path: str | None) -> dict[str, dict[str, Any]]:
    """A JSON file `{"issuers": [{"iss": "...", "jwks": {...}}]}` (None: no issuers)."""
    if not path:
        return {}
    with open(path, "rb") as f:
        data = loads(f.read())
    return {entry["iss"]: entry["jwks"] for entry in data.get("issuers", [])}


def _oauth_error(err: OAuthError) -> JSONResponse:
    headers = dict(_NO_STORE)
    if err.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="openrecord"'
    if isinstance(err, RateLimited):
        headers["Retry-After"] = str(err.retry_after)  # RFC 6585 §4
    return JSONResponse(
        {"error": err.error, "error_description": err.description}, err.status, headers
    )


async def _form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body; repeated parameters are an error
    (RFC 6749 §3.1: parameters MUST NOT be included more than once)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    body = await request.body()
    if len(body) > _MAX_FORM:
        raise OAuthError("invalid_request", "the request is too large")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as err:
        raise OAuthError("invalid_request", "the body is not UTF-8") from err
    return _single(pairs)


def _single(pairs: list[tuple[str, str]]) -> dict[str, str]:
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise OAuthError("invalid_request", f"{key} appears more than once")
        form[key] = value
    return form


class AuthServer:
    """The authorization server of one worker process."""

    def __init__(self, store: Store, config: AuthConfig, base_path: str) -> None:
        self.store = store
        self.config = config
        self.base_path = base_path.rstrip("/")
        self.keys = KeyRing(store)
        self.tokens = TokenService(store, self.keys)
        self.verifier = BearerVerifier(store, self.keys)
        self.limiter = RateLimiter(store, config.rate_limits)
        self.inline = store.inline_reads

    # -- URLs ------------------------------------------------------------------------

    def root(self, request: Request) -> str:
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        return f"{request.url.scheme}://{request.url.netloc}"

    def fhir_base(self, request: Request) -> str:
        return self.root(request) + self.base_path

    def routes(self) -> list[Route]:
        routes = [
            Route("/.well-known/smart-configuration", self.smart_configuration),
            Route(f"{self.base_path}/.well-known/smart-configuration", self.smart_configuration),
            Route("/.well-known/openid-configuration", self.openid_configuration),
            Route(f"{self.base_path}/.well-known/openid-configuration", self.openid_configuration),
            Route("/auth/jwks", self.jwks),
            Route("/auth/authorize", self.authorize, methods=["GET", "POST"]),
            Route("/auth/token", self.token, methods=["POST"]),
            Route("/auth/introspect", self.introspect, methods=["POST"]),
            Route("/auth/revoke", self.revoke, methods=["POST"]),
            Route("/auth/register", self.register, methods=["POST"]),
        ]
        return routes

    # -- the FHIR API's side ---------------------------------------------------------

    async def request_context(self, request: Request) -> SecurityContext:
        """The bearer token's context (FHIRError 401 when there is no valid token)."""
        header = request.headers.get("authorization")
        audience = self.fhir_base(request)
        try:
            if self.inline:  # a local SQLite lookup: cheaper than a thread hop
                return self.verifier.context(header, audience)
            known = self.verifier.known_context(header, audience)
            if known is not None:  # verified before and known unrevoked: no I/O
                return known
            return await run_in_threadpool(self.verifier.context, header, audience)
        except FHIRError as err:
            detail = f"{request.method} {request.url.path}: {err.issues[0].diagnostics}"
            try:
                await run_in_threadpool(self.audit, request, "token-refused", 8, detail=detail)
            except Exception:
                log.error("a refused bearer token could not be audited")
                raise FHIRError.of(500, "exception", "the refusal could not be audited") from err
            raise

    def security(self, request: Request) -> dict[str, Any]:
        """CapabilityStatement.rest.security (SMART App Launch: conformance)."""
        root = self.root(request)
        return {
            "cors": True,  # server/app.py: browser apps on any origin, bearer tokens only
            "extension": [
                {
                    "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                    "extension": [
                        {"url": "authorize", "valueUri": f"{root}/auth/authorize"},
                        {"url": "token", "valueUri": f"{root}/auth/token"},
                        {"url": "register", "valueUri": f"{root}/auth/register"},
                        {"url": "revoke", "valueUri": f"{root}/auth/revoke"},
                        {"url": "introspect", "valueUri": f"{root}/auth/introspect"},
                    ],
                }
            ],
            "service": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                            "code": "SMART-on-FHIR",
                        }
                    ],
                    "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
                }
            ],
            "description": "SMART App Launch 2.2 authorization: every request needs a bearer"
            " token; see .well-known/smart-configuration",
        }

    # -- discovery -------------------------------------------------------------------

    async def smart_configuration(self, request: Request) -> Response:
        return JSONResponse(smart_configuration(self.root(request), self.fhir_base(request)))

    async def openid_configuration(self, request: Request) -> Response:
        return JSONResponse(openid_configuration(self.root(request), self.fhir_base(request)))

    async def jwks(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self.keys.jwks))

    # -- authorize -------------------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        try:
            if request.method == "POST":
                params = await _form(request)
            else:
                params = _single(list(request.query_params.multi_items()))
        except OAuthError as err:
            return _oauth_error(err)
        try:
            return await run_in_threadpool(self._authorize, request, params)
        except OAuthError as err:  # the refusal could not be audited
            return _oauth_error(err)

    def _audit_refusal(
        self, request: Request, client: str | None, detail: str, kind: str = "authorize-refused"
    ) -> None:
        try:
            self.audit(request, kind, 8, client=client, detail=detail)
        except Exception as err:
            raise OAuthError("server_error", "the refusal could not be audited", 500) from err

    def _authorize(self, request: Request, params: dict[str, str]) -> Response:
        try:
            self._limit(request, "authorize", params, None)
        except RateLimited as err:  # answered here: redirecting needs the client's lookup
            detail = f"{err.error}: {err.description}"
            self._audit_refusal(request, err.client_id, detail, "authorize-throttled")
            return _oauth_error(err)
        client_id = params.get("client_id", "")
        client = load_client(self.store, client_id) if client_id else None
        if client is None:
            self._audit_refusal(request, None, "unknown client_id")
            return _oauth_error(OAuthError("invalid_request", "unknown client_id"))
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            # never redirect to an unregistered URI (RFC 6749 §4.1.2.1)
            self._audit_refusal(request, client.client_id, "redirect_uri not registered")
            return _oauth_error(
                OAuthError("invalid_request", "redirect_uri is not registered for this client")
            )
        state = params.get("state")

        def refuse(error: str, description: str) -> Response:
            self._audit_refusal(request, client.client_id, f"{error}: {description}")
            out = {"error": error, "error_description": description}
            if state:
                out["state"] = state
            return RedirectResponse(with_query(redirect_uri, out), 302)

        if params.get("response_type") != "code":
            return refuse("unsupported_response_type", "response_type must be code")
        if "authorization_code" not in client.grant_types:
            return refuse("unauthorized_client", "this client may not use the code flow")
        if not state:
            return refuse("invalid_request", "state is required")
        challenge = params.get("code_challenge", "")
        if params.get("code_challenge_method") != "S256" or not _CHALLENGE.match(challenge):
            return refuse(
                "invalid_request",
                "PKCE is required: code_challenge with code_challenge_method S256",
            )
        aud = params.get("aud", "")
        if aud.rstrip("/") != self.fhir_base(request):
            return refuse(
                "invalid_request", f"aud must be this FHIR server: {self.fhir_base(request)}"
            )
        scopes = params.get("scope", "").split()
        try:
            policy = parse_scopes(scopes)
        except ScopeError as err:
            return refuse("invalid_scope", str(err))
        if not scopes:
            return refuse("invalid_scope", "scope is required")
        if any(g.level == "system" for g in policy.grants):
            return refuse("invalid_scope", "system scopes are not granted by a user")
        if client.scopes and scopes_covered(scopes, client.scopes):
            missing = scopes_covered(scopes, client.scopes)
            return refuse("invalid_scope", f"not registered for: {' '.join(missing)}")
        launch = None
        if "launch" in params:
            launch = load_launch(self.store, params["launch"])
            if launch is None:
                return refuse("invalid_request", "unknown or expired launch")
        request_id = store_pending(
            self.store,
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            scopes=scopes,
            state=state,
            aud=aud.rstrip("/"),
            code_challenge=challenge,
            launch=launch,
            nonce=params.get("nonce"),
        )
        return RedirectResponse(f"{self.root(request)}{LOGIN_PATH}?request={request_id}", 302)

    # -- token -----------------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        try:
            form = await self._limited_form(request, "token")
            body = await run_in_threadpool(self._token, request, form)
        except OAuthError as err:
            return await self._refused(request, "token-refused", err)
        return JSONResponse(body, headers=_NO_STORE)

    async def _limited_form(self, request: Request, endpoint: str) -> dict[str, str]:
        """The form; a malformed one still counts against the address's rate limit."""
        try:
            return await _form(request)
        except OAuthError:
            await run_in_threadpool(self._limit, request, endpoint, {}, None)
            raise

    def _limit(
        self, request: Request, endpoint: str, form: Mapping[str, str], authorization: str | None
    ) -> None:
        """Take this request from its rate-limit buckets, or raise RateLimited (429)."""
        client_id = claimed_client_id(form, authorization)
        ip = request.client.host if request.client else None
        refusal = self.limiter.check(endpoint, ip, client_id)
        if refusal is not None:
            raise refusal

    async def _refused(self, request: Request, kind: str, err: OAuthError) -> Response:
        """The OAuth error response, after auditing the refusal."""
        outcome = 4 if err.error in ("invalid_request", "unsupported_grant_type") else 8
        client = None
        if isinstance(err, RateLimited):
            kind, client = kind.replace("-refused", "-throttled"), err.client_id
        try:
            await run_in_threadpool(
                self.audit,
                request,
                kind,
                outcome,
                client=client,
                detail=f"{err.error}: {err.description}",
            )
        except Exception:
            return _oauth_error(OAuthError("server_error", "the refusal could not be audited", 500))
        return _oauth_error(err)

    def audit(
        self,
        request: Request,
        kind: str,
        outcome: int,
        *,
        user: str | None = None,
        client: str | None = None,
        patient: str | None = None,
        detail: str | None = None,
    ) -> None:
        """An authentication event in the audit trail (raises when it cannot be written:
        the caller then refuses)."""
        from openrecord.service.audit import record_auth_event

        record_auth_event(
            self.store,
            kind=kind,
            user=user,
            client=client,
            patient=patient,
            outcome=outcome,
            detail=detail,
            source_ip=request.client.host if request.client else None,
        )

    def _client(self, request: Request, form: Mapping[str, str]) -> Client:
        """The authenticated client; a failure counts against the client it names."""
        token_url = f"{self.root(request)}/auth/token"
        authorization = request.headers.get("authorization")
        try:
            return authenticate_client(self.store, form, authorization, token_url)
        except OAuthError as err:
            claimed = claimed_client_id(form, authorization)
            if err.error == "invalid_client" and claimed and load_client(self.store, claimed):
                self.limiter.authentication_failed(claimed)
            raise

    def _token(self, request: Request, form: dict[str, str]) -> dict[str, Any]:
        self._limit(request, "token", form, request.headers.get("authorization"))
        grant_type = form.get("grant_type")
        if grant_type not in ("authorization_code", "refresh_token", "client_credentials"):
            raise OAuthError(
                "unsupported_grant_type", f"grant_type {grant_type!r} is not supported"
            )
        client = self._client(request, form)
        if grant_type not in client.grant_types:
            raise OAuthError("unauthorized_client", f"this client may not use {grant_type}")
        body = self._issue(request, form, client, grant_type)
        try:
            self.audit(
                request,
                "token",
                0,
                user=body.get("_user"),
                client=client.client_id,
                patient=body.get("patient"),
                detail=f"{grant_type}: {body['scope']}",
            )
        except Exception as err:  # no unaudited access: the tokens are never handed out
            raise OAuthError("server_error", "the token could not be audited", 500) from err
        body.pop("_user", None)
        return body

    def _issue(
        self, request: Request, form: dict[str, str], client: Client, grant_type: str
    ) -> dict[str, Any]:
        issuer = aud = self.fhir_base(request)
        if grant_type == "client_credentials":
            return self.tokens.client_credentials(client, form.get("scope"), issuer=issuer, aud=aud)
        if grant_type == "refresh_token":
            refresh = form.get("refresh_token", "")
            if not refresh:
                raise OAuthError("invalid_request", "refresh_token is required")
            return self.tokens.refresh(client, refresh, form.get("scope"), issuer=issuer, aud=aud)
        code = form.get("code", "")
        if not code:
            raise OAuthError("invalid_request", "code is required")
        redeemed = redeem_code(self.store, code, client.client_id)
        body = self.tokens.authorization_code(
            client,
            redeemed,
            redirect_uri=form.get("redirect_uri", ""),
            verifier=form.get("code_verifier", ""),
            issuer=issuer,
            aud=aud,
        )
        return body | {"_user": redeemed.user_id}

    # -- introspection, revocation ---------------------------------------------------

    async def introspect(self, request: Request) -> Response:
        try:
            form = await self._limited_form(request, "introspect")
            body = await run_in_threadpool(self._introspect, request, form)
        except OAuthError as err:
            return await self._refused(request, "introspect-refused", err)
        return JSONResponse(body, headers=_NO_STORE)

    def _introspect(self, request: Request, form: dict[str, str]) -> dict[str, Any]:
        self._limit(request, "introspect", form, request.headers.get("authorization"))
        client = self._client(request, form)
        if client.public:
            raise OAuthError("invalid_client", "introspection needs client authentication", 401)
        token = form.get("token", "")
        if not token:
            raise OAuthError("invalid_request", "token is required")
        return self.tokens.introspect(client, token, self.verifier.claims)

    async def revoke(self, request: Request) -> Response:
        try:
            form = await self._limited_form(request, "revoke")
            await run_in_threadpool(self._revoke, request, form)
        except OAuthError as err:
            return await self._refused(request, "revoke-refused", err)
        return Response(status_code=200, headers=_NO_STORE)

    def _revoke(self, request: Request, form: dict[str, str]) -> None:
        self._limit(request, "revoke", form, request.headers.get("authorization"))
        client = self._client(request, form)
        token = form.get("token", "")
        if not token:
            raise OAuthError("invalid_request", "token is required")
        self.tokens.revoke(client, token, self.verifier.jti_of(token))
        self.audit(request, "revoke", 0, client=client.client_id, detail="RFC 7009 revocation")

    # -- dynamic registration --------------------------------------------------------

    async def register(self, request: Request) -> Response:
        try:
            await run_in_threadpool(self._limit, request, "register", {}, None)
            body = await request.body()
            if len(body) > _MAX_FORM:
                raise OAuthError("invalid_client_metadata", "the registration is too large")
            try:
                metadata = loads(body)
            except ValueError as err:
                raise OAuthError("invalid_client_metadata", "the body must be JSON") from err
            if not isinstance(metadata, dict):
                raise OAuthError("invalid_client_metadata", "the body must be a JSON object")
            _, response = await run_in_threadpool(self._register, metadata)
        except RateLimited as err:
            return await self._refused(request, "register-refused", err)
        except OAuthError as err:
            return _oauth_error(err)
        return JSONResponse(response, 201, headers=_NO_STORE)

    def _register(self, metadata: dict[str, Any]) -> tuple[Client, dict[str, Any]]:
        statement = metadata.pop("software_statement", None)
        allow_system = False
        if statement is not None:
            claims = self._software_statement(statement)
            # RFC 7591 §2.3: the statement's values take precedence
            metadata.update({k: v for k, v in claims.items() if k not in _JWT_CLAIMS})
            # system scopes only with the statement's own keys: statements are often
            # public, and a copy must not register someone else's key for them
            keyed = "jwks" in claims or "jwks_uri" in claims
            allow_system = keyed and isinstance(claims.get("scope"), str)  # its scope only
            if not keyed and "system/" in str(claims.get("scope", "")):
                raise OAuthError(
                    "invalid_software_statement",
                    "a statement granting system scopes must name the client's keys",
                )
        elif self.config.require_software_statement:
            raise OAuthError(
                "invalid_software_statement", "this server requires a signed software_statement"
            )
        return register_client(self.store, metadata, source="dynamic", allow_system=allow_system)

    def _software_statement(self, statement: Any) -> dict[str, Any]:
        if not isinstance(statement, str):
            raise OAuthError("invalid_software_statement", "software_statement must be a JWT")
        try:
            payload = statement.split(".")[1]
            issuer = loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))).get("iss")
        except (IndexError, ValueError, AttributeError) as err:
            raise OAuthError(
                "invalid_software_statement", "software_statement is not a JWT"
            ) from err
        jwks = self.config.trusted_issuers.get(issuer) if isinstance(issuer, str) else None
        if jwks is None:
            raise OAuthError(
                "unapproved_software_statement", "the statement's issuer is not trusted"
            )
        try:
            token = jwt.decode(
                statement,
                key_set(jwks),
                algorithms=["RS256", "RS384", "ES256", "ES384"],
            )
        except (JoseError, ValueError) as err:
            raise OAuthError("invalid_software_statement", f"bad signature: {err}") from err
        claims = dict(token.claims)
        exp = claims.get("exp")
        if exp is not None and (not isinstance(exp, int) or exp <= now()):
            raise OAuthError("invalid_software_statement", "the software statement has expired")
        return claims


_JWT_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "iat", "nbf", "jti"})
