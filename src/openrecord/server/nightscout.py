"""The Nightscout-compatible API v1 (`/api/v1/...`) so xDrip+, AndroidAPS, Loop and
Nightscout followers can upload and read a patient's CGM readings.

Each API secret belongs to one patient (`openrecord glucose nightscout-secret`); the
server keeps only `lookup_key(sha1(secret))` with the patient in the
`nightscout_secret` table (migration 11). A request authenticates as Nightscout's do:
the `api-secret` header carrying the secret's SHA-1 (hex) — or the secret itself —,
`?secret=<sha1>`, or `?token=<secret>`; anything else is Nightscout's 401. Every read
and write runs through the record service with a context limited to that patient
(`patient/Observation.cruds patient/Patient.r`), sensor readings through
`service.glucose.import_readings` / `patient_readings`.

Routes: `POST /api/v1/entries[.json]`, `GET /api/v1/entries[.json]`,
`GET /api/v1/entries/{sgv|current}[.json]`, `GET /api/v1/status[.json]`,
`GET /api/v1/verifyauth`. Shapes and semantics: `care/glucose/nightscout.py`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openrecord.care.glucose.nightscout import (
    NightscoutError,
    ParsedEntries,
    lookup_key,
    meter_observation,
    meter_observation_id,
    new_secret,
    parse_entries,
    parse_entries_query,
    reading_entry,
    secret_sha1,
)
from openrecord.care.glucose.readings import Reading
from openrecord.fhir.outcome import FHIRError
from openrecord.server.http import read_body
from openrecord.service.clock import from_http_date, instant, now_micros
from openrecord.service.context import SecurityContext
from openrecord.service.glucose import import_readings, patient_readings
from openrecord.service.records import RecordService
from openrecord.store.base import Store

if TYPE_CHECKING:
    from openrecord.server.rest import FHIRApi

__all__ = [
    "MAX_UPLOAD_BYTES",
    "NIGHTSCOUT_SCOPES",
    "NIGHTSCOUT_VERSION",
    "issue_secret",
    "nightscout_routes",
    "revoke_secrets",
    "secret_patient",
]

MAX_UPLOAD_BYTES = 8 * 1024 * 1024
"""An upload's largest body (~30,000 entries as xDrip+ writes them; a backfill of
100 days of 5-minute readings); larger bodies get 413."""
NIGHTSCOUT_SCOPES = "patient/Observation.cruds patient/Patient.r"
NIGHTSCOUT_VERSION = "14.2.6"
"""The Nightscout release whose API v1 this one mirrors (reported by /status)."""

_SHA1_HEX = re.compile(r"^[0-9a-fA-F]{40}$")
_CONTEXT_US = 15 * 60_000_000  # readings before a window, for the first entry's direction
_MIN_US = 946_684_800_000_000
_MAX_US = 4_102_444_800_000_000


# -- secrets (state table of migration 11) ----------------------------------------------


def issue_secret(store: Store, patient: str) -> str:
    """A new random API secret for `patient`; only its lookup key is stored."""
    secret = new_secret()
    with store.write() as tx:
        tx.execute(
            "INSERT INTO nightscout_secret (lookup, patient, created) VALUES (?, ?, ?)",
            (lookup_key(secret_sha1(secret)), patient, now_micros()),
        )
    return secret


def revoke_secrets(store: Store, patient: str) -> int:
    """Revoke every API secret of `patient`; how many there were."""
    with store.write() as tx:
        rows = tx.execute("SELECT lookup FROM nightscout_secret WHERE patient = ?", (patient,))
        tx.execute("DELETE FROM nightscout_secret WHERE patient = ?", (patient,))
    return len(rows)


def secret_patient(store: Store, presented_sha1: str) -> str | None:
    """The patient whose secret has this SHA-1 (hex), or None."""
    rows = store.query(
        "SELECT patient FROM nightscout_secret WHERE lookup = ?", (lookup_key(presented_sha1),)
    )
    return str(rows[0][0]) if rows else None


def _presented(request: Request) -> str | None:
    """The SHA-1 a request authenticates with (Nightscout's three places), or None."""
    query = request.query_params
    for value in (request.headers.get("api-secret"), query.get("secret")):
        if value:
            value = value.strip()
            return value.lower() if _SHA1_HEX.match(value) else secret_sha1(value)
    token = query.get("token")
    return secret_sha1(token.strip()) if token else None


# -- responses ----------------------------------------------------------------------------


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status, headers, media_type="application/json")


def _status(status: int, message: str, description: str) -> Response:
    """Nightscout's error body (`sendJSONStatus`): {status, message, description}."""
    return _json({"status": status, "message": message, "description": description}, status)


_UNAUTHORIZED = {"status": 401, "message": "Unauthorized", "description": "Invalid/Missing"}
_TITLES = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Too Large"}


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _bad(description: str, status: int = 400) -> _Refused:
    return _Refused(_status(status, _TITLES.get(status, "Error"), description))


# -- the API ------------------------------------------------------------------------------


class NightscoutApi:
    """Handlers bound to the FHIR API's record service and worker pool."""

    def __init__(self, api: FHIRApi) -> None:
        self.api = api
        self.records: RecordService = api.records

    async def patient(self, request: Request) -> str:
        presented = _presented(request)
        found = None
        if presented is not None:
            found = await self.api.blocking(secret_patient, self.records.store, presented)
        if found is None:
            raise _Refused(_json(_UNAUTHORIZED, 401))
        return found

    def guarded(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except _Refused as refused:
                return refused.response
            except FHIRError as err:
                text = "; ".join(issue.diagnostics for issue in err.issues)
                return _status(err.status, _TITLES.get(err.status, "Error"), text)

        return run

    # -- entries ------------------------------------------------------------------------

    async def entries(self, request: Request) -> Response:
        if request.method == "POST":
            return await self.upload(request)
        spec = request.path_params.get("spec")
        model = None
        if spec is not None:
            model = spec.removesuffix(".json")
            if model == "current":
                return await self.listing(request, "sgv", newest_only=True)
            if model in ("", "txt", "csv", "tsv"):
                raise _bad("only JSON is supported", 405)
        return await self.listing(request, model)

    async def listing(
        self, request: Request, model: str | None, newest_only: bool = False
    ) -> Response:
        patient = await self.patient(request)
        params = [(k, v) for k, v in request.query_params.multi_items()]
        try:
            query = parse_entries_query(params, now_micros(), model=model)
        except NightscoutError as err:
            raise _bad(str(err)) from None
        if query.type not in (None, "sgv"):
            return _json([])  # only sensor readings are served as entries
        start, end = max(query.start_us, _MIN_US), min(query.end_us, _MAX_US)
        if start >= end:
            return _json([])
        ctx = SecurityContext.of(NIGHTSCOUT_SCOPES, patient=patient)
        readings: list[Reading] = await self.api.blocking(
            patient_readings, self.records, ctx, patient, start - _CONTEXT_US, end
        )
        count = 1 if newest_only else query.count
        out: list[dict[str, Any]] = []
        for i in range(len(readings) - 1, -1, -1):
            reading = readings[i]
            if reading.time_us < start:
                break
            entry = reading_entry(reading, readings[i - 1] if i else None, patient)
            if not query.sgv_low <= float(entry["sgv"]) <= query.sgv_high:
                continue  # compared as answered: a sensor limit as 39 / 401
            out.append(entry)
            if len(out) >= count:
                break
        headers = {}
        if out:
            newest = int(out[0]["date"])
            headers["Last-Modified"] = _http_date(newest)
            since = from_http_date(request.headers.get("if-modified-since", ""))
            if since is not None and newest // 1000 * 1000 <= since // 1000:
                return Response(status_code=304, headers=headers)  # no body, as HTTP says
        return _json(out, headers=headers)

    async def upload(self, request: Request) -> Response:
        patient = await self.patient(request)
        body = await read_body(request, MAX_UPLOAD_BYTES)
        if not body.strip():
            raise _bad("the request has no body: send a JSON array of entries")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as err:
            raise _bad(f"the body is not valid JSON: {err}") from None
        try:
            parsed = parse_entries(data)
        except NightscoutError as err:
            raise _bad(str(err)) from None
        if parsed.invalid:
            n = len(parsed.invalid)
            shown = "; ".join(str(p) for p in parsed.invalid[:10])
            tail = f" (and {n - 10} more)" if n > 10 else ""
            what = "1 malformed entry" if n == 1 else f"{n} malformed entries"
            raise _bad(f"{what}, nothing stored: {shown}{tail}")
        ctx = SecurityContext.of(NIGHTSCOUT_SCOPES, patient=patient)
        created = await self.api.blocking(_store_upload, self.records, ctx, patient, parsed)
        stored = [
            *(_meter_entry(r, patient) for r in parsed.mbg),
            *(
                reading_entry(r, parsed.sgv[i - 1] if i else None, patient)
                for i, r in enumerate(parsed.sgv)
            ),
        ]
        stored.sort(key=lambda e: -int(e["date"]))
        headers = {
            "X-Entries-Stored": str(len(parsed.sgv) + len(parsed.mbg)),
            "X-Entries-New": str(created),
            "X-Entries-Duplicate": str(parsed.duplicates),
            "X-Entries-Ignored": str(len(parsed.ignored)),
        }
        if parsed.ignored:
            reasons = "; ".join(str(p) for p in parsed.ignored[:5]).replace('"', "'")
            reasons = reasons.encode("ascii", "backslashreplace").decode()[:500]  # a header
            headers["Warning"] = f'199 openrecord "not stored: {reasons}"'
        return _json(stored, headers=headers)

    # -- status -------------------------------------------------------------------------

    async def status(self, request: Request) -> Response:
        if request.path_params.get("ext", "json") not in ("json", ""):
            raise _bad("only JSON is supported", 405)
        now = now_micros()
        return _json(
            {
                "status": "ok",
                "name": "openrecord",
                "version": NIGHTSCOUT_VERSION,
                "serverTime": instant(now),
                "serverTimeEpoch": now // 1000,
                "apiEnabled": True,
                "careportalEnabled": False,
                "boluscalcEnabled": False,
                "settings": {"units": "mg/dl", "enable": [], "authDefaultRoles": "denied"},
                "extendedSettings": {},
                "authorized": None,
            }
        )

    async def verifyauth(self, request: Request) -> Response:
        """Nightscout answers 200 either way; `message` says OK or UNAUTHORIZED."""
        try:
            await self.patient(request)
            ok = True
        except _Refused:
            ok = False
        answer = {
            "canRead": ok,
            "canWrite": ok,
            "isAdmin": False,
            "message": "OK" if ok else "UNAUTHORIZED",
            "rolefound": "FOUND" if ok else "NOTFOUND",
            "permissions": "ROLE" if ok else "DEFAULT",
        }
        return _json({"status": 200, "message": answer})


def _store_upload(
    records: RecordService, ctx: SecurityContext, patient: str, parsed: ParsedEntries
) -> int:
    """Write an upload's readings; how many were new (runs in a worker)."""
    created = 0
    if parsed.sgv:
        created += import_readings(records, ctx, patient, parsed.sgv).created
    for reading in parsed.mbg:
        observation = meter_observation(reading, patient)
        id = meter_observation_id(patient, reading.time_us)
        created += records.update(ctx, "Observation", id, observation).status == 201
    return created


def _meter_entry(reading: Reading, patient: str) -> dict[str, Any]:
    entry = reading_entry(reading, None, patient)
    entry.pop("sgv")
    entry.pop("direction")
    return {**entry, "type": "mbg", "mbg": round(reading.mg_dl)}


def _http_date(ms: int) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(ms / 1000))


def nightscout_routes(api: FHIRApi) -> list[Route]:
    """The `/api/v1` routes (listed in server/app.py)."""
    ns = NightscoutApi(api)
    entries = ns.guarded(ns.entries)
    both = ["GET", "POST"]
    return [
        Route("/api/v1/entries", entries, methods=both),
        Route("/api/v1/entries/", entries, methods=both),
        Route("/api/v1/entries.json", entries, methods=both),
        Route("/api/v1/entries/{spec}", entries, methods=["GET"]),
        Route("/api/v1/status", ns.guarded(ns.status), methods=["GET"]),
        Route("/api/v1/status.{ext}", ns.guarded(ns.status), methods=["GET"]),
        Route("/api/v1/verifyauth", ns.guarded(ns.verifyauth), methods=["GET"]),
    ]
