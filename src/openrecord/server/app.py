"""The ASGI application: the FHIR API mounted at its base, plus a health check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, tzinfo

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from openrecord.fhir.definitions import definitions
from openrecord.runtime import settle_heap
from openrecord.server.rest import FHIRApi, RestConfig
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


def create_app(config: ServerConfig, store: Store | None = None) -> Application:
    """Build the application; the store is opened here (per worker process)."""
    store = store or open_store(config.database)
    records = RecordService(store, defs=definitions(), tz=config.tz, profiles=config.profiles)
    records.warm_up()
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

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def root(request: Request) -> Response:
        return RedirectResponse(f"{config.base_path}/metadata")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        store.close()

    app = Starlette(routes=[Route("/", root), Route("/healthz", health)], lifespan=lifespan)
    return Application(api, app, config.base_path)


class Application:
    """The FHIR base (`POST /fhir` included) goes to the FHIR API; the rest to Starlette."""

    def __init__(self, api: FHIRApi, other: Starlette, base_path: str) -> None:
        self.api = api
        self.other = other
        self.base = base_path.rstrip("/")

    @property
    def records(self) -> RecordService:
        return self.api.records

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == self.base or path.startswith(self.base + "/")):
            await self.api(scope, receive, send)
        else:
            await self.other(scope, receive, send)
