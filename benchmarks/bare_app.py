"""The floor for read-by-id: a bare Starlette endpoint returning the stored blob.

Same database file, same row, same uvicorn settings as `openrecord serve`; no FHIR
routing, no headers beyond the content type. Used by read_by_id.py only.
"""

from __future__ import annotations

import os
import sqlite3
import threading

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_local = threading.local()


def connection() -> sqlite3.Connection:
    db = getattr(_local, "db", None)
    if db is None:
        path = os.environ["BARE_SQLITE_PATH"]
        db = _local.db = sqlite3.connect(path, check_same_thread=False)
    return db


async def read(request: Request) -> Response:
    row = (
        connection()
        .execute(
            "SELECT h.data FROM resource r JOIN history h ON h.rid = r.rid AND h.version = r.version"
            " WHERE r.type = ? AND r.id = ?",
            (request.path_params["type"], request.path_params["id"]),
        )
        .fetchone()
    )
    if row is None:
        return Response(status_code=404)
    return Response(row[0], media_type="application/fhir+json")


app = Starlette(routes=[Route("/fhir/{type}/{id}", read)])
