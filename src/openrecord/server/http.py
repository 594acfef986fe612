"""HTTP details of the FHIR REST API: media types, bodies, Prefer, responses."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from openrecord.fhir.outcome import FHIRError, Issue, operation_outcome

__all__ = [
    "FHIR_JSON",
    "fhir_response",
    "negotiate",
    "outcome_response",
    "parse_int",
    "prefer",
    "read_json_body",
]

FHIR_JSON = "application/fhir+json; charset=utf-8"
_JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir", "text/json")
_FORMAT_JSON = {"json", "application/json", "application/fhir+json", "application/json+fhir"}
_FORMAT_XML = {"xml", "application/xml", "application/fhir+xml", "text/xml", "application/xml+fhir"}


def negotiate(request: Request) -> None:
    """Only JSON is served: `_format` or `Accept` asking for anything else gets 406."""
    fmt = request.query_params.get("_format")
    if fmt is not None:
        base = fmt.split(";")[0].strip().lower()
        if base in _FORMAT_JSON:
            return
        if base in _FORMAT_XML or "xml" in base:
            raise FHIRError.of(406, "not-supported", "XML is not supported; use _format=json")
        raise FHIRError.of(406, "not-supported", f"_format {fmt!r} is not supported", "_format")
    accept = request.headers.get("accept")
    if not accept:
        return
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if (
            media in _JSON_TYPES
            or media in ("*/*", "application/*", "text/*", "")
            or media.endswith("+json")
        ):
            return
    raise FHIRError.of(
        406,
        "not-supported",
        f"cannot answer with {accept!r}; this server speaks application/fhir+json",
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing early with 413 when it exceeds `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise FHIRError.of(413, "too-costly", f"the body exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise FHIRError.of(413, "too-costly", f"the body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_body(
    request: Request, limit: int, accepted: tuple[str, ...] = _JSON_TYPES
) -> Any:
    """Parse a JSON body of an accepted media type: 415 for others, 400 for bad JSON."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and ctype not in accepted:
        raise FHIRError.of(
            415,
            "not-supported",
            f"content type {ctype!r} is not supported; send {accepted[0]}",
        )
    body = await read_body(request, limit)
    if not body.strip():
        raise FHIRError.of(400, "required", "the request has no body")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise FHIRError.of(400, "structure", f"the body is not valid JSON: {err}") from None


def prefer(request: Request) -> dict[str, str]:
    """The Prefer header's preferences, e.g. {"return": "minimal", "handling": "strict"}."""
    out: dict[str, str] = {}
    for header in request.headers.getlist("prefer"):
        for part in header.split(","):
            for token in part.split(";"):
                key, _, value = token.strip().partition("=")
                if key:
                    out[key.strip().lower()] = value.strip().strip('"').lower()
    return out


def fhir_response(
    content: Any,
    status: int = 200,
    headers: dict[str, str] | None = None,
    *,
    pretty: bool = False,
) -> Response:
    """A FHIR JSON response; `content` may be bytes already serialized."""
    body = content if isinstance(content, bytes) else orjson.dumps(content)
    if pretty:
        body = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2)
    return Response(body, status, headers, media_type=FHIR_JSON)


def outcome_response(
    status: int, issues: list[Issue], headers: dict[str, str] | None = None, *, pretty: bool = False
) -> Response:
    return fhir_response(operation_outcome(issues), status, headers, pretty=pretty)


def wants_pretty(request: Request) -> bool:
    return request.query_params.get("_pretty", "").lower() == "true"


def parse_int(raw: str, name: str) -> int:
    """An integer request parameter, or 400 naming it."""
    try:
        return int(raw)
    except ValueError:
        raise FHIRError.of(
            400, "invalid", f"{name} must be an integer, not {raw!r}", name
        ) from None
