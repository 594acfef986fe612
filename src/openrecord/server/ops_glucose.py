"""Glucose operations: `Patient/[id]/$cgm-summary`."""

from __future__ import annotations

from starlette.responses import Response

from openrecord.care.glucose.fhir import summary_parameters
from openrecord.server.http import fhir_response, wants_pretty
from openrecord.server.operations import OperationCall, operation
from openrecord.service.glucose import cgm_summary, parse_bound

__all__: list[str] = []


@operation("cgm-summary", level="instance", types=("Patient",), methods=("GET",))
async def cgm_summary_operation(call: OperationCall) -> Response:
    """`Patient/[id]/$cgm-summary?start=&end=`: the consensus CGM metrics of [start, end)."""
    q = call.request.query_params
    records = call.api.records
    start = parse_bound(q.get("start"), "start", records.tz)
    end = parse_bound(q.get("end"), "end", records.tz)
    assert call.id is not None
    found = await call.blocking(cgm_summary, records, call.ctx, call.id, start, end)
    return fhir_response(summary_parameters(found.summary), pretty=wants_pretty(call.request))
