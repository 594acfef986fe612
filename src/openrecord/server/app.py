"""The ASGI application: the FHIR API mounted at its base, plus a health check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, tzinfo

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from openrecord.auth.oauth_endpoints import AuthConfig, AuthServer
from openrecord.auth.pages import auth_page_routes
from openrecord.fhir.definitions import definitions
from openrecord.runtime import settle_heap
from openrecord.server.nightscout import nightscout_routes
from openrecord.server.rest import FHIRApi, RestConfig
from openrecord.service.audit_chain import background_catch_up
from openrecord.service.notifications import background_delivery
from openrecord.service.packages import activate_packages
from openrecord.service.profile_policy import ProfilePolicy
from openrecord.service.records import RecordService
from openrecord.store import open_store
from openrecord.store.base import Store

__all__ = ["Application", "ServerConfig", "create_app"]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    database: str
    base_path: str = "/fhir"
    max_body_bytes: int = 64 * 1024 * 1024
    tz: tzinfo = UTC
    debug_search: bool = False  # `_explain=true` answers SQL and plan (never on in production)
    profiles: ProfilePolicy = "warn"  # declared meta.profile checks on writes
    open: bool = False  # no authorization (`serve --open`, development on loopback only)
    auth: AuthConfig = field(default_factory=AuthConfig)  # authorization server settings


def create_app(config: ServerConfig, store: Store | None = None) -> Application:
    """Build the application; the store is opened here (per worker process)."""
    store = store or open_store(config.database)
    records = RecordService(store, defs=definitions(), tz=config.tz, profiles=config.profiles)
    records.warm_up()
    activate_packages(records)  # loaded packages' profiles and terminology (every worker)
    settle_heap()
    api = FHIRApi(
        records,
        RestConfig(
            base_path=config.base_path,
            max_body_bytes=config.max_body_bytes,
            inline_reads=store.inline_reads,
            debug_search=config.debug_search,
        ),
    )

    auth_routes: list[Route] = []
    if not config.open:  # authorization is on unless explicitly turned off
        auth = AuthServer(store, config.auth, config.base_path)
        api.authenticate, api.security = auth.request_context, auth.security
        auth_routes = auth.routes()
        auth_routes += auth_page_routes(records)  # login, MFA, picker, consent, account

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def root(request: Request) -> Response:
        return RedirectResponse(f"{config.base_path}/metadata")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with (
            background_delivery(records),  # alert webhooks, stale-data check
            background_catch_up(store),  # AuditEvent resources from the audit chain
        ):
            yield
        store.close()

    app = Starlette(
        routes=[Route("/", root), Route("/healthz", health), *nightscout_routes(api), *auth_routes],
        lifespan=lifespan,
    )
    return Application(api, app, config.base_path)


_CORS_AUTH_PATHS = frozenset(
    {"/auth/token", "/auth/register", "/auth/revoke", "/auth/introspect", "/auth/jwks"}
)
_CORS_REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "Accept",
    "Prefer",
    "If-Match",
    "If-None-Match",
    "If-None-Exist",
    "If-Modified-Since",
)
_CORS_EXPOSED_HEADERS = (
    "Location",
    "Content-Location",
    "ETag",
    "Last-Modified",
    "WWW-Authenticate",
)


class Application:
    """The FHIR base (`POST /fhir` included) goes to the FHIR API; the rest to Starlette."""

    def __init__(self, api: FHIRApi, other: Starlette, base_path: str) -> None:
        self.api = api
        self.other = other
        self.base = base_path.rstrip("/")
        # Browser apps (SMART JS client) on other origins call the FHIR API, discovery
        # and the token endpoints with bearer tokens, never cookies: CORS for any
        # origin without credentials. The interactive pages get no CORS.
        self.cors = CORSMiddleware(
            self.route,
            allow_origins=["*"],
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=list(_CORS_REQUEST_HEADERS),
            expose_headers=list(_CORS_EXPOSED_HEADERS),
            max_age=600,
        )

    @property
    def records(self) -> RecordService:
        return self.api.records

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (
            path == self.base
            or path.startswith((self.base + "/", "/.well-known/"))
            or path in _CORS_AUTH_PATHS
        ):
            await self.cors(scope, receive, send)
        else:
            await self.route(scope, receive, send)

    async def route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] == "http"
            and (path == self.base or path.startswith(self.base + "/"))
            and not path.startswith(self.base + "/.well-known/")  # SMART discovery
        ):
            await self.api(scope, receive, send)
        else:
            await self.other(scope, receive, send)
