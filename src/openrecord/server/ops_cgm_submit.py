"""`POST [base]/$submit-cgm-bundle`: the HL7 CGM IG 1.0.0 data-submission operation.

The input (the body, or a Parameters' `resource`) is a `transaction` Bundle per the
IG's *CGM Data Submission Bundle* profile: `timestamp` and at least one entry. It is
checked whole before anything is written. Sensor-reading Observations (LOINC 99504-3
mg/dL, 105272-9 mmol/L) go to the compact reading store through
`service.glucose.import_readings`; every other entry (Patient, Device, summary
Observations, the PDF DiagnosticReport…) is one transaction through the record
service's Bundle processor, with references between entries resolved — `urn:uuid:`
full URLs, and relative references read against an absolute fullUrl's base as the
FHIR Bundle rules say (the IG's example does this). The answer is a
`transaction-response` Bundle in the submission's order, or an OperationOutcome when
the submission fails as a whole.

Deduplication: a reading is one per patient and instant, so resubmitting readings
answers `200 OK` for those already held; other entries are deduplicated by the
conditional create (`ifNoneExist`) the IG recommends, and a plain POST creates anew.
The non-reading transaction is committed before the readings are written (in their
own transactions); a failure in between leaves the first part stored, and resubmitting
the same Bundle then completes it without doubling readings.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.responses import Response

from openrecord.care.glucose.fhir import LOINC, READING_CODES, observation_to_reading
from openrecord.care.glucose.readings import Reading
from openrecord.care.glucose.storage import MAX_MG_DL, reading_id
from openrecord.fhir.outcome import FHIRError, Issue
from openrecord.server.http import fhir_response, read_json_body, wants_pretty
from openrecord.server.operations import OperationCall, operation
from openrecord.service.bundles import BundleProcessor
from openrecord.service.context import SecurityContext
from openrecord.service.glucose import import_readings, patient_readings, series_of
from openrecord.service.records import RecordService

__all__ = ["DEFINITION", "submit_cgm_bundle"]

DEFINITION = "http://hl7.org/fhir/uv/cgm/OperationDefinition/submit-cgm-bundle"
_ENTRY = re.compile(r"Bundle\.entry\[(\d+)\]")
_DIAGNOSTIC_ENTRY = re.compile(r"^entry (\d+): ")


def _bundle_of(body: Any) -> dict[str, Any]:
    """The submitted Bundle: the body itself or the Parameters' `resource`."""
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        found = [
            p.get("resource")
            for p in body.get("parameter") or []
            if isinstance(p, dict) and p.get("name") == "resource"
        ]
        if len(found) != 1 or not isinstance(found[0], dict):
            raise FHIRError.of(
                400,
                "required",
                "Parameters must hold exactly one 'resource' (the Bundle)",
                "Parameters.parameter",
            )
        body = found[0]
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise FHIRError.of(400, "invalid", "the input must be a Bundle", "Bundle")
    if body.get("type") != "transaction":
        raise FHIRError.of(
            400, "invalid", "a CGM data submission Bundle has type 'transaction'", "Bundle.type"
        )
    if not isinstance(body.get("timestamp"), str):
        raise FHIRError.of(
            400, "required", "a CGM data submission Bundle needs a timestamp", "Bundle.timestamp"
        )
    entries = body.get("entry")
    if not isinstance(entries, list) or not entries:
        raise FHIRError.of(400, "required", "the Bundle has no entries", "Bundle.entry")
    return body


def _is_reading(resource: Any) -> bool:
    if not isinstance(resource, dict) or resource.get("resourceType") != "Observation":
        return False
    codings = (resource.get("code") or {}).get("coding") or []
    return any(
        isinstance(c, dict) and c.get("system") == LOINC and c.get("code") in READING_CODES
        for c in codings
    )


def _base(full_url: Any) -> str | None:
    """The service base of an absolute RESTful fullUrl (`https://x/fhir/Type/id`)."""
    if not isinstance(full_url, str) or "://" not in full_url:
        return None
    parts = full_url.rstrip("/").rsplit("/", 2)
    return parts[0] + "/" if len(parts) == 3 else None


def _resolve_relative(value: Any, base: str, full_urls: set[str]) -> Any:
    """Relative references that name another entry (base + reference = its fullUrl) are
    rewritten to that fullUrl, which the Bundle processor maps to the stored id."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "reference" and isinstance(item, str) and base + item in full_urls:
                out[key] = base + item
            else:
                out[key] = _resolve_relative(item, base, full_urls)
        return out
    if isinstance(value, list):
        return [_resolve_relative(item, base, full_urls) for item in value]
    return value


def _relocated(err: FHIRError, mapping: list[int]) -> FHIRError:
    """An error of the sub-transaction, its entry numbers those of the submission."""

    def fix_expression(m: re.Match[str]) -> str:
        return f"Bundle.entry[{mapping[int(m.group(1))]}]"

    def fix_diagnostics(m: re.Match[str]) -> str:
        return f"entry {mapping[int(m.group(1))]}: "

    issues = [
        Issue(
            i.code,
            _DIAGNOSTIC_ENTRY.sub(fix_diagnostics, i.diagnostics),
            i.severity,
            None if i.expression is None else _ENTRY.sub(fix_expression, i.expression),
        )
        for i in err.issues
    ]
    return FHIRError(err.status, issues, err.headers)


def submit(
    records: RecordService,
    bundles: BundleProcessor,
    ctx: SecurityContext,
    submission: dict[str, Any],
    base: str,
) -> dict[str, Any]:
    """Check, store and answer a submission (runs in a worker)."""
    entries: list[Any] = submission["entry"]
    full_urls = {
        e["fullUrl"] for e in entries if isinstance(e, dict) and isinstance(e.get("fullUrl"), str)
    }
    patient_entries: dict[str, int] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise FHIRError.of(400, "structure", "entry is not an object", f"Bundle.entry[{index}]")
        resource = entry.get("resource")
        full_url = entry.get("fullUrl")
        is_patient = isinstance(resource, dict) and resource.get("resourceType") == "Patient"
        if is_patient and isinstance(full_url, str):
            patient_entries[full_url] = index
    # readings: (submission index, patient reference as written, reading)
    readings: list[tuple[int, str, Reading]] = []
    others: list[dict[str, Any]] = []
    mapping: list[int] = []
    for index, entry in enumerate(entries):
        where = f"Bundle.entry[{index}]"
        resource = entry.get("resource")
        base_url = _base(entry.get("fullUrl"))
        if base_url is not None and isinstance(resource, dict):
            resource = _resolve_relative(resource, base_url, full_urls)
        if not _is_reading(resource):
            others.append({**entry, "resource": resource} if resource is not None else entry)
            mapping.append(index)
            continue
        assert isinstance(resource, dict)
        method = (entry.get("request") or {}).get("method")
        if method not in ("POST", "PUT"):
            raise FHIRError.of(
                400,
                "invalid",
                "a sensor reading is submitted with POST or PUT",
                f"{where}.request.method",
            )
        try:
            records.checked(resource, "Observation")
        except FHIRError as err:
            raise _reindexed(err, where) from None
        reading = observation_to_reading(resource)
        if reading is None:
            raise FHIRError.of(
                400,
                "invalid",
                "a sensor reading needs status final, amended or corrected, an "
                "effectiveDateTime and a valueQuantity in mg/dL or mmol/L",
                f"{where}.resource",
            )
        if not 0 < reading.mg_dl <= MAX_MG_DL:
            raise FHIRError.of(
                400,
                "value",
                f"a glucose value of {reading.mg_dl:g} mg/dL is not plausible",
                f"{where}.resource.valueQuantity.value",
            )
        subject = (resource.get("subject") or {}).get("reference")
        if not isinstance(subject, str) or not (
            subject in patient_entries or subject.startswith("Patient/")
        ):
            raise FHIRError.of(
                400,
                "invalid",
                "a sensor reading's subject must be Patient/[id] or a Patient entry's fullUrl",
                f"{where}.resource.subject",
            )
        if subject.startswith("Patient/"):
            records.read(ctx, "Patient", subject.split("/", 2)[1])  # 404 before any write
        readings.append((index, subject, reading))

    answers: list[dict[str, Any] | None] = [None] * len(entries)
    located: dict[str, str] = {}
    if others:
        sub = {"resourceType": "Bundle", "type": "transaction", "entry": others}
        try:
            result = bundles.process(ctx, sub, returning="minimal", base=base)
        except FHIRError as err:
            raise _relocated(err, mapping) from None
        for at, answer in zip(mapping, result["entry"], strict=True):
            answers[at] = answer
            full_url = entries[at].get("fullUrl")
            location = str((answer.get("response") or {}).get("location", ""))
            if isinstance(full_url, str) and location:
                parts = location.split("/_history/")[0].rsplit("/", 2)
                located[full_url] = "/".join(parts[-2:])

    by_patient: dict[str, dict[int, Reading]] = {}
    targets: list[tuple[int, str, int]] = []  # (submission index, patient, instant)
    for index, subject, reading in readings:
        target = located.get(subject, subject)
        if not target.startswith("Patient/"):
            raise FHIRError.of(
                400,
                "invalid",
                "the reading's Patient entry was not stored",
                f"Bundle.entry[{index}].resource.subject",
            )
        patient = target.split("/", 2)[1]
        by_patient.setdefault(patient, {})[reading.time_us] = reading
        targets.append((index, patient, reading.time_us))
    held: set[tuple[str, int]] = set()
    for patient, found in by_patient.items():
        times = sorted(found)
        held.update(
            (patient, r.time_us)
            for r in patient_readings(records, ctx, patient, times[0], times[-1] + 1)
        )
        import_readings(records, ctx, patient, [found[t] for t in times])
    series = {patient: series_of(records.store, patient) for patient in by_patient}
    for index, patient, time_us in targets:
        sid = series[patient]
        assert sid is not None  # import_readings numbered the patient's series
        id = reading_id(sid, time_us)
        answers[index] = {
            "fullUrl": f"{base}/Observation/{id}",
            "response": {
                "status": "200 OK" if (patient, time_us) in held else "201 Created",
                "location": f"Observation/{id}",
            },
        }
    return {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [a if a is not None else {"response": {"status": "200 OK"}} for a in answers],
    }


def _reindexed(err: FHIRError, where: str) -> FHIRError:
    """A single resource's error, its expressions placed inside the submission entry."""
    issues = []
    for issue in err.issues:
        expr = issue.expression
        if expr is not None and not expr.startswith("Bundle."):
            expr = f"{where}.resource.{expr.split('.', 1)[1]}" if "." in expr else where
        issues.append(Issue(issue.code, issue.diagnostics, issue.severity, expr or where))
    return FHIRError(err.status, issues, err.headers)


@operation("submit-cgm-bundle", level="system", methods=("POST",), definition=DEFINITION)
async def submit_cgm_bundle(call: OperationCall) -> Response:
    """`POST [base]/$submit-cgm-bundle` with a CGM data submission Bundle."""
    api = call.api
    body = await read_json_body(call.request, api.config.max_body_bytes)
    submission = _bundle_of(body)
    await call.blocking(api.records.params.sync)
    answer = await call.blocking(
        submit, api.records, api.bundles, call.ctx, submission, api.base_url(call.request)
    )
    return fhir_response(answer, pretty=wants_pretty(call.request))
