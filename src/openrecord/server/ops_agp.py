"""`Patient/[id]/$agp`: the Ambulatory Glucose Profile report as SVG, PDF or a FHIR
DiagnosticReport carrying the PDF (HL7 CGM IG `cgm-summary-pdf`).

    GET  [base]/Patient/[id]/$agp?start=&end=[&_format=svg|pdf|json][&unit=mmol/L][&page=letter]
    POST [base]/Patient/[id]/$agp?start=&end=&store=true

The format is `_format` (svg, pdf, json), else the Accept header (image/svg+xml,
application/pdf), else the DiagnosticReport as FHIR JSON. The DiagnosticReport holds
the CGM summary Observations as contained resources; with POST and `store=true` they
and the report are written in one transaction instead (201, the stored report).
Everything is read and written through the record service with the caller's context.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

import orjson
from starlette.responses import Response

from openrecord.care.glucose.agp import agp_data, diagnostic_report
from openrecord.care.glucose.agp_draw import PAGE_SIZES, Page, agp_pages
from openrecord.care.glucose.agp_pdf import render_pdf
from openrecord.care.glucose.agp_svg import render_svg
from openrecord.care.glucose.fhir import PROFILE_BASE, days_of_wear, summary_observations
from openrecord.care.glucose.metrics import PeriodSummary
from openrecord.care.glucose.readings import us_to_datetime
from openrecord.fhir.outcome import FHIRError
from openrecord.server.http import fhir_response, wants_pretty
from openrecord.server.operations import OperationCall, operation
from openrecord.service.bundles import BundleProcessor
from openrecord.service.clock import now_micros
from openrecord.service.context import SecurityContext
from openrecord.service.glucose import cgm_summary, parse_bound
from openrecord.service.records import RecordService

__all__ = ["AgpReport", "agp_report", "report_format", "store_report"]

_FORMATS = {
    "svg": "svg",
    "image/svg+xml": "svg",
    "pdf": "pdf",
    "application/pdf": "pdf",
    "json": "json",
    "fhir": "json",
    "application/json": "json",
    "application/fhir+json": "json",
}
_MEMBER_KEYS = ("mean", "times-in-ranges", "gmi", "cv", "days-of-wear", "sensor-active")


@dataclass(frozen=True, slots=True)
class AgpReport:
    """A patient's AGP, drawn; rendered to SVG, PDF or a DiagnosticReport on demand."""

    patient: str
    summary: PeriodSummary
    wear_days: int
    zone: tzinfo
    pages: list[Page]

    def svg(self) -> bytes:
        return render_svg(self.pages)

    def pdf(self) -> bytes:
        return render_pdf(self.pages)

    def observations(self) -> list[dict[str, Any]]:
        """The CGM summary Observation (id "summary") and its members (ids by metric)."""
        ids = {key: key for key in ("summary", *_MEMBER_KEYS)}
        return summary_observations(self.summary, self.patient, ids, self.wear_days)

    def diagnostic_report(self, result: str | None = "#summary") -> dict[str, Any]:
        """The cgm-summary-pdf DiagnosticReport; with the default `result` the summary
        Observations are contained, otherwise `result` references a stored one."""
        observations = self.observations()
        has_summary = bool(observations) and observations[0]["id"] == "summary"
        issued = us_to_datetime(now_micros()).strftime("%Y-%m-%dT%H:%M:%SZ")
        reference = result if has_summary else None
        body = diagnostic_report(
            self.patient, self.summary, self.pdf(), reference, self.zone, issued
        )
        report: dict[str, Any] = {
            "resourceType": "DiagnosticReport",
            "meta": {"profile": [PROFILE_BASE + "cgm-summary-pdf"]},
        }
        if has_summary and result == "#summary":
            report["contained"] = [_local(o) for o in observations]
        report.update((k, v) for k, v in body.items() if k != "resourceType")
        return report


def _local(observation: dict[str, Any]) -> dict[str, Any]:
    """A contained copy: `hasMember` points at the contained siblings."""
    out = dict(observation)
    if "hasMember" in out:
        out["hasMember"] = [
            {"reference": "#" + m["reference"].split("/", 1)[1]} for m in out["hasMember"]
        ]
    return out


def _name(patient: dict[str, Any]) -> str | None:
    for name in patient.get("name") or []:
        if not isinstance(name, dict):
            continue
        if isinstance(name.get("text"), str):
            return str(name["text"])
        given = " ".join(g for g in name.get("given") or [] if isinstance(g, str))
        family = name.get("family") if isinstance(name.get("family"), str) else ""
        text = f"{given} {family}".strip()
        if text:
            return text
    return None


def agp_report(
    records: RecordService,
    ctx: SecurityContext,
    patient: str,
    start_us: int,
    end_us: int,
    *,
    zone: tzinfo,
    unit: str = "mg/dL",
    page: str = "a4",
) -> AgpReport:
    """The AGP of the patient's readings in [start, end): 404 for an unknown patient or a
    period without readings, 400 for a bad period."""
    found = cgm_summary(records, ctx, patient, start_us, end_us)
    summary = found.summary
    if not found.readings:
        raise FHIRError.of(
            404,
            "not-found",
            f"Patient/{patient} has no CGM readings from start to end; an AGP needs readings",
        )
    stored = records.read(ctx, "Patient", patient)
    name = _name(orjson.loads(stored.data)) if stored.data is not None else None
    wear = days_of_wear(summary, (r.time_us for r in found.readings))
    data = agp_data(patient, name, summary, found.readings, wear, zone)
    return AgpReport(patient, summary, wear, zone, agp_pages(data, unit, page))


def store_report(records: RecordService, ctx: SecurityContext, found: AgpReport) -> dict[str, Any]:
    """Write the summary Observations and the DiagnosticReport in one transaction; the
    stored DiagnosticReport."""
    observations = found.observations()
    urls = {o["id"]: f"urn:uuid:{uuid.uuid4()}" for o in observations}
    entries: list[dict[str, Any]] = []
    for observation in observations:
        resource = {k: v for k, v in observation.items() if k != "id"}
        if "hasMember" in resource:
            resource["hasMember"] = [
                {"reference": urls[m["reference"].split("/", 1)[1]]} for m in resource["hasMember"]
            ]
        entries.append(
            {
                "fullUrl": urls[observation["id"]],
                "resource": resource,
                "request": {"method": "POST", "url": "Observation"},
            }
        )
    entries.append(
        {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "resource": found.diagnostic_report(urls.get("summary")),
            "request": {"method": "POST", "url": "DiagnosticReport"},
        }
    )
    answer = BundleProcessor(records).process(
        ctx,
        {"resourceType": "Bundle", "type": "transaction", "entry": entries},
        returning="representation",
    )
    stored: dict[str, Any] = answer["entry"][-1]["resource"]
    return stored


def report_format(fmt: str | None, accept: str | None) -> str:
    """svg, pdf or json from `_format`, else Accept, else json; 400 for another `_format`."""
    if fmt is not None:
        wanted = _FORMATS.get(fmt.split(";")[0].strip().lower())
        if wanted is None:
            raise FHIRError.of(
                400, "value", f"_format must be svg, pdf or json, not {fmt!r}", "_format"
            )
        return wanted
    if not accept:
        return "json"
    media = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    for kind in media:
        if kind in ("image/svg+xml", "application/pdf"):
            return _FORMATS[kind]
    if any(kind in _FORMATS or kind.endswith(("/*", "+json")) or not kind for kind in media):
        return "json"
    raise FHIRError.of(
        406,
        "not-supported",
        f"cannot answer with {accept!r}: image/svg+xml, application/pdf or application/fhir+json",
    )


@operation("agp", level="instance", types=("Patient",), methods=("GET", "POST"), negotiates=True)
async def agp_operation(call: OperationCall) -> Response:
    """`Patient/[id]/$agp?start=&end=`: the AGP report of [start, end)."""
    q = call.request.query_params
    records = call.api.records
    start = parse_bound(q.get("start"), "start", records.tz)
    end = parse_bound(q.get("end"), "end", records.tz)
    fmt = report_format(q.get("_format"), call.request.headers.get("accept"))
    unit = q.get("unit", "mg/dL")
    if unit not in ("mg/dL", "mmol/L"):
        raise FHIRError.of(400, "value", f"unit must be mg/dL or mmol/L, not {unit!r}", "unit")
    page = q.get("page", "a4").lower()
    if page not in PAGE_SIZES:
        raise FHIRError.of(400, "value", f"page must be a4 or letter, not {page!r}", "page")
    store = q.get("store", "false").lower()
    if store not in ("true", "false"):
        raise FHIRError.of(400, "value", f"store must be true or false, not {store!r}", "store")
    if store == "true" and call.request.method != "POST":
        raise FHIRError.of(400, "value", "store=true writes resources: use POST", "store")
    assert call.id is not None
    found = await call.blocking(
        lambda: agp_report(
            records, call.ctx, call.id or "", start, end, zone=records.tz, unit=unit, page=page
        )
    )
    if store == "true":
        stored = await call.blocking(store_report, records, call.ctx, found)
        return fhir_response(stored, 201, pretty=wants_pretty(call.request))
    # Health data: not cached; the SVG may not load or run anything if opened directly.
    headers = {
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    }
    if fmt == "svg":
        svg = await call.blocking(found.svg)
        return Response(svg, 200, headers, media_type="image/svg+xml")
    if fmt == "pdf":
        headers["Content-Disposition"] = 'inline; filename="agp.pdf"'
        pdf = await call.blocking(found.pdf)
        return Response(pdf, 200, headers, media_type="application/pdf")
    report = await call.blocking(found.diagnostic_report)
    return fhir_response(report, pretty=wants_pretty(call.request))
