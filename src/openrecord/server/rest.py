"""The FHIR REST API (http.html): URL grammar, interactions, headers.

Every interaction calls the record service; this module only translates HTTP to
service calls and results back to HTTP.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from openrecord.fhir.outcome import FHIRError, Issue, operation_outcome
from openrecord.fhir.profiles import profile, validate_against
from openrecord.fhir.search_contained import contained_body
from openrecord.fhir.summary import SUMMARY_MODES, select_elements, summarize
from openrecord.server import ops as _feature_operations  # noqa: F401  (registers them)
from openrecord.server.bundling import history_bundle, searchset
from openrecord.server.capability import capability_statement
from openrecord.server.http import (
    fhir_response,
    negotiate,
    outcome_response,
    parse_int,
    prefer,
    read_body,
    read_json_body,
    wants_pretty,
)
from openrecord.server.operations import (
    Level,
    OperationCall,
    find_operation,
    negotiates_itself,
)
from openrecord.server.terminology import (
    TERMINOLOGY_OPERATIONS,
    expand_stored,
    operation_input,
    run_operation,
)
from openrecord.service.audit import AuditRecord
from openrecord.service.bundles import BundleProcessor, EntryUrl
from openrecord.service.clock import from_http_date, http_date, instant, now_micros, parse_instant
from openrecord.service.context import SecurityContext
from openrecord.service.records import RecordService, WriteResult
from openrecord.service.reindex import reindex, report_parameters
from openrecord.store.base import StoredVersion

__all__ = ["FHIRApi", "RestConfig"]

log = logging.getLogger("openrecord.server")
T = TypeVar("T")

_PATCH_JSON = ("application/json-patch+json",)
_PATCH_FHIRPATH = ("application/fhir+json", "application/json")
_MAX_COUNT = 1000


@dataclass(frozen=True, slots=True)
class RestConfig:
    base_path: str = "/fhir"
    max_body_bytes: int = 64 * 1024 * 1024
    inline_reads: bool = False  # answer reads on the event loop (cheap local stores)
    debug_search: bool = False  # `_explain=true` returns the search's SQL and plan


class FHIRApi:
    """ASGI app for everything under the FHIR base."""

    def __init__(self, records: RecordService, config: RestConfig) -> None:
        self.records = records
        self.config = config
        self.defs = records.defs
        self.bundles = BundleProcessor(records, self.bundle_read)
        self.started = instant(now_micros())
        self.open_context = SecurityContext.open()
        # Set by the authorization server (auth/oauth_endpoints.py) unless the server
        # runs --open: the request's bearer token → its context (401 otherwise), and
        # the CapabilityStatement's rest.security block.
        self.authenticate: Callable[[Request], Awaitable[SecurityContext]] | None = None
        self.security: Callable[[Request], dict[str, Any]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            if not negotiates_itself(request.url.path):
                negotiate(request)
            response = await self.dispatch(request)
        except FHIRError as err:
            response = outcome_response(
                err.status, err.issues, err.headers, pretty=wants_pretty(request)
            )
        except Exception as exc:
            # The exception's message and locals may quote health data: log only its type
            # and where it was raised (no query string, no body).
            frames = traceback.extract_tb(exc.__traceback__)
            where = "; ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in frames[-4:])
            log.error(
                "unhandled %s in %s %s at %s",
                type(exc).__name__,
                request.method,
                scope.get("path", ""),
                where,
            )
            response = outcome_response(
                500, [Issue("exception", "internal server error", severity="fatal")]
            )
        await response(scope, receive, send)

    # -- routing -------------------------------------------------------------------------

    async def dispatch(self, request: Request) -> Response:
        path = request.url.path[len(self.config.base_path) :]
        parts = [unquote(p) for p in path.split("/") if p]
        method = request.method
        ctx = self.open_context  # --open: every request is unrestricted
        if self.authenticate is not None and parts != ["metadata"]:
            ctx = await self.authenticate(request)
        n = len(parts)
        if n == 0:
            if method == "POST":
                return await self.bundle(request, ctx)
            if method == "GET":
                return await self.search(request, ctx, None)
        elif parts[0] == "metadata" and n == 1:
            if method == "GET":
                return await self.blocking(self.metadata, request)
        elif parts[0] == "_history" and n == 1:
            if method == "GET":
                return await self.history(request, ctx, None, None)
        elif parts[0] == "$reindex" and n == 1 and method == "POST":
            return await self.reindex(request, ctx, None)
        elif parts[0].startswith("$") and n == 1:
            return await self.operation(request, ctx, "system", None, None, parts[0])
        else:
            type = parts[0]
            self.records.require_type(type)
            if n == 1:
                return await self.type_level(request, ctx, type)
            second = parts[1]
            if n == 2 and second == "_search" and method == "POST":
                return await self.search(request, ctx, type)
            if n == 2 and second == "_history" and method == "GET":
                return await self.history(request, ctx, type, None)
            if n == 2 and second == "$reindex" and method == "POST":
                return await self.reindex(request, ctx, type)
            if n == 2 and second == "$validate" and method == "POST":
                return await self.validate(request, ctx, type, None)
            if n == 2 and (type, second) in TERMINOLOGY_OPERATIONS and method in ("GET", "POST"):
                return await self.terminology(request, type, second)
            if n == 2 and second.startswith("$"):
                return await self.operation(request, ctx, "type", type, None, second)
            if n == 2 and not second.startswith(("_", "$")):
                return await self.instance_level(request, ctx, type, second)
            if n == 3 and parts[2] == "_history" and method == "GET":
                return await self.history(request, ctx, type, second)
            if n == 3 and parts[2] == "$validate" and method == "POST":
                return await self.validate(request, ctx, type, second)
            if n == 4 and parts[2] == "_history" and method == "GET":
                return await self.read(request, ctx, type, second, parts[3])
            if n == 3 and (type, parts[2]) == ("ValueSet", "$expand") and method in ("GET", "POST"):
                return await self.expand_stored(request, ctx, second)
            if n == 3 and parts[2].startswith("$"):
                return await self.operation(request, ctx, "instance", type, second, parts[2])
            if n == 3 and method == "GET":
                return await self.search(request, ctx, parts[2], compartment=(type, second))
            if n <= 4:
                raise FHIRError(405, [Issue("not-supported", f"{method} is not allowed here")])
            raise FHIRError.of(404, "not-found", f"no such endpoint: {request.url.path}")
        raise FHIRError(405, [Issue("not-supported", f"{method} is not allowed on this URL")])

    async def type_level(self, request: Request, ctx: SecurityContext, type: str) -> Response:
        method = request.method
        if method == "GET":
            return await self.search(request, ctx, type)
        if method == "POST":
            body = await read_json_body(request, self.config.max_body_bytes)
            result = await self.blocking(
                self.records.create,
                ctx,
                type,
                body,
                if_none_exist=request.headers.get("if-none-exist"),
            )
            return self.write_response(request, result)
        criteria = request.url.query
        if method == "PUT":
            if not criteria:
                raise FHIRError.of(400, "required", "PUT on a type needs search criteria")
            body = await read_json_body(request, self.config.max_body_bytes)
            result = await self.blocking(
                self.records.conditional_update,
                ctx,
                type,
                criteria,
                body,
                if_match=request.headers.get("if-match"),
            )
            return self.write_response(request, result)
        if method == "DELETE":
            if not criteria:
                raise FHIRError.of(400, "required", "DELETE on a type needs search criteria")
            deleted = await self.blocking(self.records.conditional_delete, ctx, type, criteria)
            return self.delete_response(deleted)
        raise FHIRError(405, [Issue("not-supported", f"{method} is not allowed on a type")])

    async def instance_level(
        self, request: Request, ctx: SecurityContext, type: str, id: str
    ) -> Response:
        method = request.method
        if method in ("GET", "HEAD"):
            return await self.read(request, ctx, type, id, None)
        if_match = request.headers.get("if-match")
        if method == "PUT":
            body = await read_json_body(request, self.config.max_body_bytes)
            result = await self.blocking(
                self.records.update, ctx, type, id, body, if_match=if_match
            )
            return self.write_response(request, result)
        if method == "PATCH":
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            fhirpath = ctype in _PATCH_FHIRPATH
            accepted = _PATCH_FHIRPATH if fhirpath else _PATCH_JSON
            doc = await read_json_body(request, self.config.max_body_bytes, accepted)
            result = await self.blocking(
                self.records.patch, ctx, type, id, doc, fhirpath=fhirpath, if_match=if_match
            )
            return self.write_response(request, result)
        if method == "DELETE":
            deleted = await self.blocking(self.records.delete, ctx, type, id, if_match=if_match)
            return self.delete_response(deleted)
        raise FHIRError(405, [Issue("not-supported", f"{method} is not allowed on a resource")])

    # -- interactions --------------------------------------------------------------------

    async def read(
        self, request: Request, ctx: SecurityContext, type: str, id: str, version: str | None
    ) -> Response:
        if version is None:
            call = partial(self.records.read, ctx, type, id)
        else:
            call = partial(self.records.vread, ctx, type, id, version)
        if self.config.inline_reads and type != "AuditEvent":
            # on the event loop (a local read never waits); its audit event is appended
            # by the store's writer thread, awaited before answering
            deferred: list[AuditRecord] = []
            try:
                with self.records.audit.deferring(deferred):
                    found: StoredVersion = call()
            finally:
                await self.records.audit.appended(deferred)
        else:
            found = await run_in_threadpool(call)
        headers = version_headers(found)
        if version is None and not_modified(request, found):
            return Response(status_code=304, headers=headers)
        assert found.data is not None
        return fhir_response(
            self.shaped(request, found.data), headers=headers, pretty=wants_pretty(request)
        )

    def shaped(self, request: Request, data: bytes) -> bytes | dict[str, Any]:
        """The stored body, or its `_summary` / `_elements` subset."""
        summary = request.query_params.get("_summary")
        elements = request.query_params.get("_elements")
        if summary is None and elements is None:
            return data
        resource = orjson.loads(data)
        if summary is not None:
            if summary not in SUMMARY_MODES or summary == "count":
                raise FHIRError.of(
                    400, "invalid", f"_summary={summary!r} is not valid here", "_summary"
                )
            return summarize(resource, summary, self.defs)
        assert elements is not None
        return select_elements(resource, elements.split(","), self.defs)

    async def search(
        self,
        request: Request,
        ctx: SecurityContext,
        type: str | None,
        compartment: tuple[str, str] | None = None,
    ) -> Response:
        params = list(request.query_params.multi_items())
        if request.method == "POST":
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/x-www-form-urlencoded":
                raise FHIRError.of(415, "not-supported", "_search needs a form-encoded body")
            body = await read_body(request, self.config.max_body_bytes)
            params += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        compartment_type = None if type == "*" else type
        explain = self.config.debug_search and wants_explain(params)
        result = await self.blocking(
            self.records.search,
            ctx,
            compartment_type,
            [(k, v) for k, v in params if k != "_explain" or not self.config.debug_search],
            compartment=compartment,
            explain=explain,
            base=self.base_url(request),
        )
        parsed = result.parsed
        strict = prefer(request).get("handling") == "strict"
        if parsed.unknown and strict:
            raise FHIRError.of(
                400, "not-supported", f"unknown search parameter(s): {', '.join(parsed.unknown)}"
            )
        warnings = [
            Issue(
                "not-supported",
                f"search parameter {name!r} is not supported and was ignored",
                severity="warning",
            )
            for name in parsed.unknown
        ]
        if result.explain is not None:
            warnings.append(Issue("informational", result.explain, severity="information"))
        summary = parsed.summary
        resources = [] if summary == "count" else result.resources
        cids = result.contained_ids or ("",) * len(resources)
        bodies = [
            self.entry_body(contained_body(r.data, cid), summary, parsed.elements)
            for r, cid in zip(resources, cids, strict=True)
            if r.data
        ]
        base = self.base_url(request)
        bundle = searchset(
            base=base,
            self_url="/".join([base, *(compartment or ()), *([type] if type else [])]),
            params=params,
            resources=resources,
            bodies=bodies,
            total=result.total,
            next_cursor=result.next_cursor,
            previous_cursor=result.previous_cursor,
            warnings=warnings,
            fragments=result.contained_ids,
            included=[
                (r, self.entry_body(r.data, summary, parsed.elements))
                for r in result.included
                if r.data
            ],
        )
        return fhir_response(bundle, pretty=wants_pretty(request))

    def entry_body(
        self, data: bytes | None, summary: str | None, elements: list[str] | None
    ) -> bytes:
        assert data is not None
        if summary in (None, "false") and not elements:
            return data
        resource = orjson.loads(data)
        if summary not in (None, "false", "count"):
            resource = summarize(resource, summary, self.defs)
        if elements:
            resource = select_elements(resource, elements, self.defs)
        return orjson.dumps(resource)

    async def history(
        self, request: Request, ctx: SecurityContext, type: str | None, id: str | None
    ) -> Response:
        params = list(request.query_params.multi_items())
        q = request.query_params
        count = bounded_int(q.get("_count"), "_count", 20, 0, _MAX_COUNT)
        offset = bounded_int(q.get("_offset"), "_offset", 0, 0, 10**9)
        until = bounded_int(q.get("_until"), "_until", 0, 0, 2**62) or None
        since = time_param(q.get("_since"), "_since")
        at = time_param(q.get("_at"), "_at")
        page = await self.blocking(
            self.records.history,
            ctx,
            type,
            id,
            since=since,
            at=at,
            until=until,
            count=count,
            offset=offset,
        )
        base = self.base_url(request)
        self_url = "/".join(p for p in (base, type, id, "_history") if p)
        bundle = history_bundle(
            base=base,
            self_url=self_url,
            params=[(k, v) for k, v in params if k != "_offset"],
            page=page,
            offset=offset,
            count=count,
        )
        return fhir_response(bundle, pretty=wants_pretty(request))

    async def bundle(self, request: Request, ctx: SecurityContext) -> Response:
        body = await read_json_body(request, self.config.max_body_bytes)
        returning = prefer(request).get("return", "minimal")
        # entries re-check custom search parameters at most every second: check now
        await self.blocking(self.records.params.sync)
        result = await self.blocking(
            self.bundles.process, ctx, body, returning=returning, base=self.base_url(request)
        )
        return fhir_response(result, pretty=wants_pretty(request))

    def bundle_read(self, ctx: SecurityContext, url: str, entry: EntryUrl) -> tuple[int, Any]:
        """GET entries of a batch/transaction: read, vread or search (runs in a worker)."""
        if entry.id is not None and entry.query is None:
            if entry.version is not None:
                found = self.records.vread(ctx, entry.type, entry.id, entry.version)
            else:
                found = self.records.read(ctx, entry.type, entry.id)
            return 200, orjson.Fragment(found.data or b"{}")
        params = parse_qsl(entry.query or "", keep_blank_values=True)
        result = self.records.search(ctx, entry.type, params)
        return 200, {
            "resourceType": "Bundle",
            "type": "searchset",
            **({"total": result.total} if result.total is not None else {}),
            "entry": [
                {
                    "resource": orjson.Fragment(contained_body(r.data, cid)),
                    "search": {"mode": "match"},
                }
                for r, cid in zip(
                    result.resources,
                    result.contained_ids or ("",) * len(result.resources),
                    strict=True,
                )
                if r.data
            ],
        }

    async def validate(
        self, request: Request, ctx: SecurityContext, type: str, id: str | None
    ) -> Response:
        body = await read_json_body(request, self.config.max_body_bytes)
        mode = request.query_params.get("mode")
        profile_url = request.query_params.get("profile")
        resource = body
        if isinstance(body, dict) and body.get("resourceType") == "Parameters":
            resource = None
            for part in body.get("parameter") or []:
                if part.get("name") == "resource":
                    resource = part.get("resource")
                elif part.get("name") == "mode":
                    mode = part.get("valueCode") or part.get("valueString")
                elif part.get("name") == "profile":
                    profile_url = part.get("valueUri") or part.get("valueCanonical")
        if mode not in (None, "create", "update", "delete"):
            raise FHIRError.of(400, "invalid", f"$validate mode {mode!r} is not supported", "mode")
        if profile_url is not None and profile(profile_url) is None:
            raise FHIRError.of(
                400, "not-supported", f"profile {profile_url!r} is not known", "profile"
            )
        issues = await self.blocking(self.records.validate, ctx, type, resource, mode=mode, id=id)
        if profile_url is not None and mode != "delete" and isinstance(resource, dict):
            issues = issues + await self.blocking(validate_against, resource, profile_url)
        return fhir_response(operation_outcome(issues), pretty=wants_pretty(request))

    async def terminology(self, request: Request, type: str, operation: str) -> Response:
        """CodeSystem/$lookup, $subsumes; ValueSet/$expand, $validate-code (no store access)."""
        inputs = await operation_input(request, self.config.max_body_bytes)
        answer = await self.blocking(run_operation, type, operation, inputs)
        return fhir_response(answer, pretty=wants_pretty(request))

    async def expand_stored(self, request: Request, ctx: SecurityContext, id: str) -> Response:
        """`ValueSet/[id]/$expand`: the stored ValueSet's compose over the loaded code systems."""
        inputs = await operation_input(request, self.config.max_body_bytes)
        found = await self.blocking(self.records.read, ctx, "ValueSet", id)
        assert found.data is not None
        answer = await self.blocking(expand_stored, orjson.loads(found.data), inputs)
        return fhir_response(answer, pretty=wants_pretty(request))

    async def operation(
        self,
        request: Request,
        ctx: SecurityContext,
        level: Level,
        type: str | None,
        id: str | None,
        name: str,
    ) -> Response:
        """A registered feature operation (`server/operations.py`), or 404 / 405."""
        found = find_operation(level, type, name[1:])
        if not found:
            raise FHIRError.of(404, "not-supported", f"operation {name} is not supported")
        for op in found:
            if request.method in op.methods:
                return await op.handler(OperationCall(self, request, ctx, type, id))
        raise FHIRError(405, [Issue("not-supported", f"{request.method} is not allowed on {name}")])

    async def reindex(self, request: Request, ctx: SecurityContext, type: str | None) -> Response:
        """`$reindex`: the index of every current resource (of `type`), no new versions."""
        types = [type] if type is not None else []
        report = await self.blocking(reindex, self.records, ctx, types)
        return fhir_response(report_parameters(report), pretty=wants_pretty(request))

    def metadata(self, request: Request) -> Response:
        defs = self.records.params.sync().defs  # custom search parameters included
        security = self.security(request) if self.security is not None else None
        statement = capability_statement(defs, self.base_url(request), self.started, security)
        mode = request.query_params.get("mode")
        if mode not in (None, "full", "normative", "terminology"):
            raise FHIRError.of(400, "invalid", f"mode {mode!r} is not supported", "mode")
        return fhir_response(statement, pretty=wants_pretty(request))

    # -- responses -----------------------------------------------------------------------

    def write_response(self, request: Request, result: WriteResult) -> Response:
        version = result.version
        headers = version_headers(version)
        base = self.base_url(request)
        if result.status == 201:
            headers["Location"] = f"{base}/{version.type}/{version.id}/_history/{version.version}"
        wanted = prefer(request).get("return", "representation")
        if wanted == "minimal":
            return Response(status_code=result.status, headers=headers)
        if wanted == "operationoutcome":
            issues = result.issues or [
                Issue(
                    "informational",
                    f"{version.type}/{version.id} version {version.version}",
                    severity="information",
                )
            ]
            return outcome_response(result.status, issues, headers, pretty=wants_pretty(request))
        assert version.data is not None
        return fhir_response(version.data, result.status, headers, pretty=wants_pretty(request))

    def delete_response(self, result: WriteResult | None) -> Response:
        if result is None:
            return Response(status_code=204)
        return Response(status_code=204, headers={"ETag": f'W/"{result.version.version}"'})

    def base_url(self, request: Request) -> str:
        return f"{request.url.scheme}://{request.url.netloc}{self.config.base_path}"

    async def blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store-touching call off the event loop."""
        return await run_in_threadpool(fn, *args, **kwargs)


def version_headers(version: StoredVersion) -> dict[str, str]:
    return {
        "ETag": f'W/"{version.version}"',
        "Last-Modified": http_date(version.last_updated),
    }


def not_modified(request: Request, found: StoredVersion) -> bool:
    """Conditional read: If-None-Match naming this version, or If-Modified-Since not older."""
    none_match = request.headers.get("if-none-match")
    if none_match is not None:
        tags = {t.strip().removeprefix("W/").strip('"') for t in none_match.split(",")}
        return str(found.version) in tags or "*" in tags
    since = request.headers.get("if-modified-since")
    if since is not None:
        micros = from_http_date(since)
        # HTTP dates have whole seconds: compare at that precision.
        return micros is not None and found.last_updated // 1_000_000 <= micros // 1_000_000
    return False


def wants_explain(params: list[tuple[str, str]]) -> bool:
    """`_explain=true|false` (a debug-only parameter; other values are a 400)."""
    values = [v for k, v in params if k == "_explain"]
    for v in values:
        if v not in ("true", "false"):
            raise FHIRError.of(400, "value", f"_explain takes true or false, not {v!r}", "_explain")
    return "true" in values


def bounded_int(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    return max(low, min(high, parse_int(raw, name)))


def time_param(raw: str | None, name: str) -> int | None:
    if raw is None:
        return None
    try:
        return parse_instant(raw)
    except ValueError:
        raise FHIRError.of(
            400, "invalid", f"{name} must be an instant with a time zone, not {raw!r}", name
        ) from None
