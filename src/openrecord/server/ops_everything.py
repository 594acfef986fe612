"""`Patient/[id]/$everything` (R4 OperationDefinition Patient-everything).

The patient's compartment — every resource the Patient CompartmentDefinition puts in
it, and the Patient — as a searchset, with the resources those refer to
(Practitioner, Organization, Medication, Location…) as `include` entries. It is one
compartment search through the record service with the caller's context, so the
access layer and the patient's consents apply as to any search: a patient-level
token reaches only its own patient (403 otherwise) and, because patient-level grants
do not reach types outside the compartment, gets the compartment without the
referenced Practitioners and Organizations; user- and system-level tokens get both.
The audit trail records one `operation` event for the whole call.

Parameters: `start`/`end` (dates) keep the resources whose `date` search parameter
(the clinical date, where the type has one) overlaps [start, end], and every resource
without one; `_since` (instant) those changed since then (`_lastUpdated`); `_type`
(comma-separated) only these types; `_count` the page size (default 50, at most
1000), with `next` links carrying the search's keyset cursor. AuditEvents are not
part of the record (`_type=AuditEvent` asks for them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.responses import Response

from openrecord.fhir.outcome import FHIRError
from openrecord.fhir.search_common import date_range
from openrecord.fhir.search_values import DateValue
from openrecord.server.bundling import searchset
from openrecord.server.http import fhir_response, parse_int, read_json_body, wants_pretty
from openrecord.server.operations import OperationCall, operation
from openrecord.service.clock import parse_instant
from openrecord.service.context import SecurityContext
from openrecord.service.records import RecordService
from openrecord.store.base import StoredVersion

__all__: list[str] = []

DEFINITION = "http://hl7.org/fhir/OperationDefinition/Patient-everything"
_DEFAULT_COUNT = 50
_MAX_COUNT = 1000
_MAX_PARAMETERS_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class EverythingQuery:
    start: tuple[int, int] | None = None  # date ranges, microseconds UTC
    end: tuple[int, int] | None = None
    since: str | None = None
    types: tuple[str, ...] = ()
    count: int = _DEFAULT_COUNT
    cursor: str | None = None
    raw: tuple[tuple[str, str], ...] = ()  # as asked, without _cursor (for page links)


@dataclass(frozen=True, slots=True)
class Everything:
    resources: list[StoredVersion]
    included: list[StoredVersion]
    total: int | None
    next_cursor: str | None


def parse_query(records: RecordService, pairs: list[tuple[str, str]]) -> EverythingQuery:
    """400 with the parameter's name for anything unreadable."""
    values: dict[str, str] = {}
    for key, value in pairs:
        if key in ("start", "end", "_since", "_type", "_count", "_cursor"):
            if key in values and key != "_type":
                raise FHIRError.of(400, "invalid", f"{key} may be given once", key)
            values[key] = f"{values[key]},{value}" if key in values else value
        elif key not in ("_format", "_pretty"):
            raise FHIRError.of(400, "not-supported", f"$everything has no parameter {key!r}", key)
    start = end = None
    for key in ("start", "end"):
        if key in values:
            found = date_range(values[key], records.tz)
            if found is None:
                raise FHIRError.of(
                    400, "invalid", f"{key} must be a date, not {values[key]!r}", key
                )
            if key == "start":
                start = found
            else:
                end = found
    since = values.get("_since")
    if since is not None:
        try:
            parse_instant(since)
        except ValueError:
            raise FHIRError.of(
                400,
                "invalid",
                f"_since must be an instant with a time zone, not {since!r}",
                "_since",
            ) from None
    types = tuple(dict.fromkeys(t.strip() for t in values.get("_type", "").split(",") if t.strip()))
    for name in types:
        if name not in records.defs.resource_types:
            raise FHIRError.of(400, "invalid", f"_type: {name!r} is not a resource type", "_type")
    count = _DEFAULT_COUNT
    if "_count" in values:
        count = max(1, min(_MAX_COUNT, parse_int(values["_count"], "_count")))
    raw = tuple((k, v) for k, v in pairs if k not in ("_cursor", "_format", "_pretty"))
    return EverythingQuery(start, end, since, types, count, values.get("_cursor"), raw)


def everything(
    records: RecordService, ctx: SecurityContext, id: str, query: EverythingQuery
) -> Everything:
    """One page of the patient's record, as `ctx` may see it."""
    text = f"Patient/{id}/$everything"
    if query.raw:
        text += "?" + urlencode(query.raw)
    with records.audit.recording(
        ctx, "operation", type="Patient", id=id, query=text, patients=[id]
    ):
        records.read(ctx, "Patient", id)  # 404 when it is not there or not the caller's
        members = set(records.defs.compartments.get("Patient", {})) | {"Patient"}
        searched = [t for t in query.types if t in members]
        params: list[tuple[str, str]] = [("_include", "*"), ("_count", str(query.count))]
        if searched:
            params.append(("_type", ",".join(searched)))
        if query.since is not None:
            params.append(("_lastUpdated", f"ge{query.since}"))
        if query.cursor is not None:
            params.append(("_cursor", query.cursor))
        if query.start is None and query.end is None:
            params.append(("_total", "accurate"))
        result = records.search(ctx, None, params, compartment=("Patient", id))
        resources = result.resources
        if query.types and not searched:
            resources = []  # only referenced types were asked for
        if query.start is not None or query.end is not None:
            resources = [r for r in resources if _in_period(records, r, query)]
        included = result.included
        if query.types:
            included = [r for r in included if r.type in query.types]
        total = result.total if query.start is None and query.end is None else None
        if query.types and not searched:
            total = None
        return Everything(resources, included, total, result.next_cursor)


def _in_period(records: RecordService, version: StoredVersion, query: EverythingQuery) -> bool:
    """The resource's clinical date (its `date` parameter) overlaps [start, end]; a
    resource without one is kept (the spec leaves undated resources in)."""
    if version.data is None or records.defs.search_param(version.type, "date") is None:
        return True
    dates = [
        e.value
        for e in records.indexer.extract(orjson.loads(version.data))
        if e.param == "date" and isinstance(e.value, DateValue)
    ]
    if not dates:
        return True
    low = query.start[0] if query.start else None
    high = query.end[1] if query.end else None
    return any((low is None or d.high >= low) and (high is None or d.low <= high) for d in dates)


async def _pairs(call: OperationCall) -> list[tuple[str, str]]:
    pairs = list(call.request.query_params.multi_items())
    if call.request.method != "POST":
        return pairs
    body = await read_json_body(call.request, _MAX_PARAMETERS_BYTES)
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FHIRError.of(400, "invalid", "POST $everything takes a Parameters resource")
    for part in body.get("parameter") or []:
        name = part.get("name") if isinstance(part, dict) else None
        value = _value(part) if name else None
        if not isinstance(name, str) or value is None:
            raise FHIRError.of(
                400, "invalid", "each parameter needs a name and a value", "Parameters.parameter"
            )
        pairs.append((name, value))
    return pairs


def _value(part: dict[str, Any]) -> str | None:
    for key, value in part.items():
        if (
            key.startswith("value")
            and isinstance(value, (str, int))
            and not isinstance(value, bool)
        ):
            return str(value)
    return None


@operation(
    "everything",
    level="instance",
    types=("Patient",),
    methods=("GET", "POST"),
    definition=DEFINITION,
)
async def patient_everything(call: OperationCall) -> Response:
    records = call.api.records
    assert call.id is not None
    query = parse_query(records, await _pairs(call))
    page = await call.blocking(everything, records, call.ctx, call.id, query)
    base = call.api.base_url(call.request)
    self_url = f"{base}/Patient/{call.id}/$everything"
    params = list(query.raw) + ([("_cursor", query.cursor)] if query.cursor else [])
    bundle = searchset(
        base=base,
        self_url=self_url,
        params=params,
        resources=page.resources,
        bodies=[r.data for r in page.resources if r.data is not None],
        total=page.total,
        next_cursor=page.next_cursor,
        previous_cursor=None,
        warnings=[],
        included=[(r, r.data) for r in page.included if r.data is not None],
    )
    return fhir_response(bundle, pretty=wants_pretty(call.request))
