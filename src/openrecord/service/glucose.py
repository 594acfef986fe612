"""CGM readings through the record service: import as sensor-reading Observations, and
the consensus metrics of a patient's period (`$cgm-summary`).

For now every reading is one FHIR Observation (HL7 CGM IG sensor reading); the compact
storage issue 6 asks for comes later and will sit behind these same functions. Every
access goes through `RecordService` with the caller's `SecurityContext`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

import orjson

from openrecord.care.glucose.fhir import (
    LOINC,
    READING_CODES,
    observation_to_reading,
    reading_id,
    reading_observation,
)
from openrecord.care.glucose.metrics import PeriodSummary, summarize
from openrecord.care.glucose.readings import Reading
from openrecord.fhir.definitions import definitions
from openrecord.fhir.outcome import FHIRError
from openrecord.fhir.search_common import date_range
from openrecord.service.bundles import BundleProcessor
from openrecord.service.context import SecurityContext
from openrecord.service.records import RecordService

__all__ = [
    "CgmSummary",
    "ReadingsImport",
    "cgm_summary",
    "import_readings",
    "parse_bound",
    "patient_readings",
]

_PAGE = 1000


@dataclass(frozen=True, slots=True)
class ReadingsImport:
    """What an import wrote: readings sent, and how many were new Observations."""

    readings: int
    created: int


@dataclass(frozen=True, slots=True)
class CgmSummary:
    """The metrics of a period and the readings they were computed from."""

    summary: PeriodSummary
    readings: list[Reading]


def parse_bound(text: str | None, name: str, zone: tzinfo) -> int:
    """A FHIR date or dateTime (`2024-01-01`, `2024-01-01T08:00:00+01:00`) → µs of its
    first instant; without a zone it is read in `zone` (the server's). 400 otherwise.
    The same reading of dates as search's (`search_common.date_range`)."""
    if text is None or text == "":
        raise FHIRError.of(400, "required", f"{name} is required (a FHIR date or dateTime)", name)
    pattern = definitions().primitive_patterns["dateTime"]  # the spec's own regex
    found = date_range(text, zone) if pattern.fullmatch(text) else None
    if found is None:
        raise FHIRError.of(
            400, "value", f"{name} must be a FHIR date or dateTime, not {text!r}", name
        )
    return found[0]


def _instant(time_us: int) -> str:
    moment = datetime.fromtimestamp(time_us // 1_000_000, UTC)
    micros = time_us % 1_000_000
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{micros:06d}" if micros else "") + "Z"


def patient_readings(
    records: RecordService, ctx: SecurityContext, patient: str, start_us: int, end_us: int
) -> list[Reading]:
    """The patient's CGM sensor readings with start ≤ time < end, sorted by time.

    One search (patient, both sensor-reading codes, the date range), paged with its
    cursor; readings outside the exact half-open interval are dropped here, since a
    dateTime's range (its precision) may overlap a bound the search cannot split.
    """
    params: list[tuple[str, str]] = [
        ("subject", f"Patient/{patient}"),
        ("code", ",".join(f"{LOINC}|{code}" for code in READING_CODES)),
        ("date", f"ge{_instant(start_us)}"),
        ("date", f"lt{_instant(end_us)}"),
        ("_count", str(_PAGE)),
    ]
    readings: list[Reading] = []
    cursor: str | None = None
    while True:
        page = records.search(
            ctx, "Observation", params if cursor is None else [*params, ("_cursor", cursor)]
        )
        for found in page.resources:
            if found.data is None:
                continue
            reading = observation_to_reading(orjson.loads(found.data))
            if reading is not None and start_us <= reading.time_us < end_us:
                readings.append(reading)
        cursor = page.next_cursor
        if cursor is None or not page.resources:
            break
    readings.sort(key=lambda r: r.time_us)
    # The same instant twice (two uploads under different ids): keep one.
    return [r for i, r in enumerate(readings) if i == 0 or readings[i - 1].time_us != r.time_us]


def cgm_summary(
    records: RecordService,
    ctx: SecurityContext,
    patient: str,
    start_us: int,
    end_us: int,
    *,
    interval_minutes: float = 5.0,
) -> CgmSummary:
    """The consensus metrics of the patient's readings in [start, end); 404 for an unknown
    patient, 400 when the period is empty."""
    if start_us >= end_us:
        raise FHIRError.of(400, "value", "start must be before end", "end")
    records.read(ctx, "Patient", patient)  # 404/410, and the caller may read the patient
    readings = patient_readings(records, ctx, patient, start_us, end_us)
    summary = summarize(readings, start_us, end_us, interval_minutes=interval_minutes)
    return CgmSummary(summary, readings)


def import_readings(
    records: RecordService,
    ctx: SecurityContext,
    patient: str,
    readings: Sequence[Reading],
    *,
    batch_size: int = 500,
    progress: Callable[[int], None] | None = None,
) -> ReadingsImport:
    """Write readings as sensor-reading Observations, in transactions of `batch_size`.

    Each Observation's id is derived from patient and instant, so importing the same
    readings again updates them in place (no new version when nothing changed) and an
    overlapping export adds no duplicates.
    """
    records.read(ctx, "Patient", patient)  # the readings need their patient
    bundles = BundleProcessor(records)
    created = 0
    for at in range(0, len(readings), batch_size):
        entries = []
        for reading in readings[at : at + batch_size]:
            id = reading_id(patient, reading.time_us)
            entries.append(
                {
                    "resource": reading_observation(reading, patient, id),
                    "request": {"method": "PUT", "url": f"Observation/{id}"},
                }
            )
        answer = bundles.process(
            ctx, {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        )
        created += sum(
            1
            for e in answer["entry"]
            if str(e.get("response", {}).get("status", "")).startswith("201")
        )
        if progress is not None:
            progress(len(entries))
    return ReadingsImport(len(readings), created)
