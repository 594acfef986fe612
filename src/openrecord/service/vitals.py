"""Weight, height, BMI and blood pressure through the record service: writing them as US
Core vital-sign Observations, and the `$weight-summary` / `$bp-summary` of a period.

Every access goes through `RecordService` with the caller's `SecurityContext`: the
summaries read the Patient (404, and the caller's right to it), then search the
patient's Observations and Goals with the same context.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

import orjson

from openrecord.care.glucose.readings import us_to_datetime
from openrecord.care.vitals.blood_pressure import BpReading
from openrecord.care.vitals.fhir import (
    BP_PANEL_CODE,
    HEIGHT_CODE,
    LOINC,
    WEIGHT_CODE,
    HeightReading,
    WeightGoal,
    bmi_observation,
    bp_observation,
    bp_of,
    goal_of,
    height_observation,
    height_of,
    weight_observation,
    weight_of,
)
from openrecord.care.vitals.summaries import (
    BpSummary,
    WeightSummary,
    summarize_bp,
    summarize_weight,
)
from openrecord.care.vitals.weight import bmi
from openrecord.fhir.outcome import FHIRError
from openrecord.service.clock import instant
from openrecord.service.context import SecurityContext
from openrecord.service.records import RecordService, WriteResult

__all__ = [
    "bp_summary",
    "record_blood_pressure",
    "record_height",
    "record_weight",
    "weight_summary",
]

_PAGE = 1000
T = TypeVar("T")


def _resources(
    records: RecordService, ctx: SecurityContext, type: str, params: list[tuple[str, str]]
) -> Iterator[dict[str, Any]]:
    """Every resource a search finds, page by page (the search's cursor)."""
    cursor: str | None = None
    while True:
        page = records.search(
            ctx, type, params if cursor is None else [*params, ("_cursor", cursor)]
        )
        for found in page.resources:
            if found.data is not None:
                yield orjson.loads(found.data)
        cursor = page.next_cursor
        if cursor is None or not page.resources:
            return


def _observations(
    records: RecordService,
    ctx: SecurityContext,
    patient: str,
    code: str,
    start_us: int | None,
    end_us: int,
    read: Callable[[dict[str, Any]], T | None],
) -> list[T]:
    """The patient's Observations of one LOINC code dated in [start, end), read by `read`."""
    params = [
        ("subject", f"Patient/{patient}"),
        ("code", f"{LOINC}|{code}"),
        ("date", f"lt{instant(end_us)}"),
        ("_count", str(_PAGE)),
    ]
    if start_us is not None:
        params.append(("date", f"ge{instant(start_us)}"))
    start = us_to_datetime(start_us) if start_us is not None else None
    end = us_to_datetime(end_us)
    out: list[T] = []
    for observation in _resources(records, ctx, "Observation", params):
        value = read(observation)
        moment: datetime | None = getattr(value, "time", None)
        # a dateTime's range may straddle a bound the search cannot split
        if (
            value is not None
            and moment is not None
            and (start is None or moment >= start)
            and moment < end
        ):
            out.append(value)
    return out


def _active_weight_goal(
    records: RecordService, ctx: SecurityContext, patient: str
) -> WeightGoal | None:
    """The patient's active weight Goal; of several, the one updated last."""
    params = [
        ("subject", f"Patient/{patient}"),
        ("lifecycle-status", "active"),
        ("_count", str(_PAGE)),
    ]
    best: tuple[str, WeightGoal] | None = None
    for goal in _resources(records, ctx, "Goal", params):
        found = goal_of(goal)
        updated = str((goal.get("meta") or {}).get("lastUpdated", ""))
        if found is not None and (best is None or updated > best[0]):
            best = (updated, found)
    return best[1] if best else None


def _check_period(
    records: RecordService, ctx: SecurityContext, patient: str, start_us: int, end_us: int
) -> None:
    if start_us >= end_us:
        raise FHIRError.of(400, "value", "start must be before end", "end")
    records.read(ctx, "Patient", patient)  # 404/410, and the caller may read the patient


def weight_summary(
    records: RecordService, ctx: SecurityContext, patient: str, start_us: int, end_us: int
) -> WeightSummary:
    """Trend, % changes, BMI and goal progress of the patient's weights in [start, end)."""
    _check_period(records, ctx, patient, start_us, end_us)
    zone = records.tz
    weights = _observations(
        records, ctx, patient, WEIGHT_CODE, start_us, end_us, lambda o: weight_of(o, zone)
    )
    heights: list[HeightReading] = _observations(
        records, ctx, patient, HEIGHT_CODE, None, end_us, lambda o: height_of(o, zone)
    )
    height = max(heights, key=lambda h: h.time) if heights else None
    goal = _active_weight_goal(records, ctx, patient)
    return summarize_weight(weights, height, goal, zone)


def bp_summary(
    records: RecordService,
    ctx: SecurityContext,
    patient: str,
    start_us: int,
    end_us: int,
    *,
    drop_first_day: bool = False,
) -> BpSummary:
    """Home average, category and flag of the patient's blood pressures in [start, end)."""
    _check_period(records, ctx, patient, start_us, end_us)
    zone = records.tz
    readings: list[BpReading] = _observations(
        records, ctx, patient, BP_PANEL_CODE, start_us, end_us, lambda o: bp_of(o, zone)
    )
    return summarize_bp(readings, drop_first_day=drop_first_day)


# -- writing -------------------------------------------------------------------------------


def record_weight(
    records: RecordService,
    ctx: SecurityContext,
    patient: str,
    moment: datetime,
    kg: float,
    *,
    height_m: float | None = None,
) -> list[WriteResult]:
    """Create a body weight Observation; with a height, also the BMI derived from both."""
    if kg <= 0 or (height_m is not None and height_m <= 0):
        raise FHIRError.of(400, "value", "weight and height must be positive")
    records.read(ctx, "Patient", patient)
    written = [records.create(ctx, "Observation", weight_observation(patient, moment, kg))]
    if height_m is not None:
        height = records.create(
            ctx, "Observation", height_observation(patient, moment, height_m * 100.0)
        )
        body = bmi_observation(patient, moment, bmi(kg, height_m))
        written += [height, records.create(ctx, "Observation", body)]
    return written


def record_height(
    records: RecordService, ctx: SecurityContext, patient: str, moment: datetime, cm: float
) -> WriteResult:
    """Create a body height Observation (cm)."""
    if cm <= 0:
        raise FHIRError.of(400, "value", "height must be positive")
    records.read(ctx, "Patient", patient)
    return records.create(ctx, "Observation", height_observation(patient, moment, cm))


def record_blood_pressure(
    records: RecordService,
    ctx: SecurityContext,
    patient: str,
    readings: Sequence[BpReading],
) -> list[WriteResult]:
    """Create one blood pressure panel per reading."""
    records.read(ctx, "Patient", patient)
    return [
        records.create(ctx, "Observation", bp_observation(patient, r.time, r.systolic, r.diastolic))
        for r in readings
    ]
