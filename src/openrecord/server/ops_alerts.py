"""Alert operations: `Patient/[id]/$alert-settings` (GET, POST) and
`Communication/[id]/$mark-read` (POST)."""

from __future__ import annotations

from starlette.responses import Response

from openrecord.care.alerts.settings import settings_parameters
from openrecord.server.http import fhir_response, read_json_body, wants_pretty
from openrecord.server.operations import OperationCall, operation
from openrecord.service.alerts import alert_settings, mark_read, update_alert_settings

__all__: list[str] = []


@operation("alert-settings", level="instance", types=("Patient",), methods=("GET", "POST"))
async def alert_settings_operation(call: OperationCall) -> Response:
    """GET: the patient's thresholds, disabled alerts and running snoozes. POST a
    Parameters resource with the ones to change (and `snooze` parts)."""
    assert call.id is not None
    records = call.api.records
    if call.request.method == "POST":
        body = await read_json_body(call.request, call.api.config.max_body_bytes)
        settings, snoozes = await call.blocking(
            update_alert_settings, records, call.ctx, call.id, body
        )
    else:
        settings, snoozes = await call.blocking(alert_settings, records, call.ctx, call.id)
    return fhir_response(settings_parameters(settings, snoozes), pretty=wants_pretty(call.request))


@operation("mark-read", level="instance", types=("Communication",), methods=("POST",))
async def mark_read_operation(call: OperationCall) -> Response:
    """Set the Communication's `received` to now (once) and answer the Communication."""
    assert call.id is not None
    result = await call.blocking(mark_read, call.api.records, call.ctx, call.id)
    assert result.version.data is not None
    return fhir_response(
        result.version.data,
        headers={"ETag": f'W/"{result.version.version}"'},
        pretty=wants_pretty(call.request),
    )
