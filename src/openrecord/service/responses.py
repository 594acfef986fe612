"""Bundle and entry shapes the service hands back (searchset, history, batch responses)."""

from __future__ import annotations

from typing import Any

import orjson

from openrecord.service.clock import instant
from openrecord.store.base import StoredVersion

__all__ = ["STATUS_TEXT", "entry_response", "history_entry", "status_line"]

STATUS_TEXT = {
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
}


def status_line(status: int) -> str:
    return f"{status} {STATUS_TEXT.get(status, '')}".strip()


def entry_response(version: StoredVersion, status: int) -> dict[str, Any]:
    """The `response` element of a batch/transaction entry for a write or read."""
    return {
        "status": status_line(status),
        "location": f"{version.type}/{version.id}/_history/{version.version}",
        "etag": f'W/"{version.version}"',
        "lastModified": instant(version.last_updated),
    }


def history_entry(version: StoredVersion, base: str) -> dict[str, Any]:
    """One entry of a history Bundle: the version (or its deletion) and the request that made it."""
    full_url = f"{base}/{version.type}/{version.id}"
    entry: dict[str, Any] = {"fullUrl": full_url}
    if version.data is not None:
        entry["resource"] = orjson.Fragment(version.data)
    method = version.method
    url = version.type if method == "POST" else f"{version.type}/{version.id}"
    entry["request"] = {"method": method, "url": url}
    entry["response"] = {
        "status": status_line(201 if version.version == 1 and method != "DELETE" else 200),
        "etag": f'W/"{version.version}"',
        "lastModified": instant(version.last_updated),
    }
    return entry
