"""Vital-sign operations: `Patient/[id]/$weight-summary` and `Patient/[id]/$bp-summary`."""

from __future__ import annotations

from starlette.responses import Response

from openrecord.care.vitals.summaries import bp_parameters, weight_parameters
from openrecord.fhir.outcome import FHIRError
from openrecord.server.http import fhir_response, wants_pretty
from openrecord.server.operations import OperationCall, operation
from openrecord.service.glucose import parse_bound
from openrecord.service.vitals import bp_summary, weight_summary

__all__: list[str] = []


def _period(call: OperationCall) -> tuple[str, int, int]:
    q = call.request.query_params
    zone = call.api.records.tz
    start = parse_bound(q.get("start"), "start", zone)
    end = parse_bound(q.get("end"), "end", zone)
    assert call.id is not None
    return call.id, start, end


@operation("weight-summary", level="instance", types=("Patient",), methods=("GET",))
async def weight_summary_operation(call: OperationCall) -> Response:
    """Trend, % change over 4/12/26 weeks, BMI and goal progress of [start, end)."""
    patient, start, end = _period(call)
    found = await call.blocking(weight_summary, call.api.records, call.ctx, patient, start, end)
    return fhir_response(weight_parameters(found), pretty=wants_pretty(call.request))


@operation("bp-summary", level="instance", types=("Patient",), methods=("GET",))
async def bp_summary_operation(call: OperationCall) -> Response:
    """Home average, ACC/AHA 2017 category and the ≥ 135/85 flag of [start, end)."""
    patient, start, end = _period(call)
    raw = call.request.query_params.get("drop-first-day", "false")
    if raw not in ("true", "false"):
        raise FHIRError.of(400, "value", "drop-first-day must be true or false", "drop-first-day")
    found = await call.blocking(
        lambda: bp_summary(
            call.api.records, call.ctx, patient, start, end, drop_first_day=raw == "true"
        )
    )
    return fhir_response(bp_parameters(found), pretty=wants_pretty(call.request))
