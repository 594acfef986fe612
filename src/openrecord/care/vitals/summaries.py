"""The `$weight-summary` and `$bp-summary` answers: pure, from readings already found.

Weight: the trend (weight.py) over the period's weights, its % change over 4, 12 and
26 weeks ending at the last weight, the BMI of the last weight with the latest height
at or before the period's end, and progress towards the active weight Goal:
100 * (trend at goal start - trend now) / (trend at goal start - target), where the
goal's start is its `startDate` (the trend as of the last weight before the end of
that day) or, without one or without a weight by then, the period's first weight.
Blood pressure: the home average of the period (blood_pressure.py), its ACC/AHA 2017
category and the ≥ 135/85 flag, and the last reading with its own category.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta, tzinfo
from typing import Any

from openrecord.care.vitals.blood_pressure import (
    HOME_HIGH_THRESHOLD,
    BpReading,
    HomeAverage,
    bp_category,
    home_average,
    home_average_high,
)
from openrecord.care.vitals.fhir import UCUM, HeightReading, WeightGoal
from openrecord.care.vitals.weight import (
    TrendPoint,
    WeightReading,
    bmi,
    bmi_category,
    percent_changes,
    trend_at,
    weight_trend,
)

__all__ = [
    "BpSummary",
    "WeightSummary",
    "bp_parameters",
    "summarize_bp",
    "summarize_weight",
    "weight_parameters",
]


@dataclass(frozen=True, slots=True)
class WeightSummary:
    readings: int
    last: TrendPoint | None
    changes: dict[int, float | None]
    height: HeightReading | None
    bmi: float | None
    goal: WeightGoal | None
    goal_start_kg: float | None
    goal_progress: float | None  # %
    goal_remaining_kg: float | None


@dataclass(frozen=True, slots=True)
class BpSummary:
    average: HomeAverage | None
    last: BpReading | None
    drop_first_day: bool


def summarize_weight(
    weights: Sequence[WeightReading],
    height: HeightReading | None,
    goal: WeightGoal | None,
    zone: tzinfo,
) -> WeightSummary:
    """The weight summary of a period's weights (see the module docstring)."""
    points = weight_trend(weights)
    last = points[-1] if points else None
    changes = percent_changes(points) if points else {}
    value = bmi(last.kg, height.m) if last is not None and height is not None else None
    start_kg = progress = remaining = None
    if goal is not None and last is not None:
        start_kg = None
        if goal.start is not None:
            day_end = datetime.combine(goal.start + timedelta(days=1), time(), zone)
            start_kg = trend_at(points, day_end - timedelta(microseconds=1))
        if start_kg is None:
            start_kg = points[0].trend_kg
        remaining = last.trend_kg - goal.target_kg
        if start_kg != goal.target_kg:
            progress = 100.0 * (start_kg - last.trend_kg) / (start_kg - goal.target_kg)
    return WeightSummary(
        len(points), last, changes, height, value, goal, start_kg, progress, remaining
    )


def summarize_bp(readings: Sequence[BpReading], *, drop_first_day: bool = False) -> BpSummary:
    """The home blood pressure summary of a period's readings."""
    average = home_average(readings, drop_first_day=drop_first_day)
    last = max(readings, key=lambda r: r.time) if readings else None
    return BpSummary(average, last, drop_first_day)


def _quantity(name: str, value: float, code: str, digits: int = 2) -> dict[str, Any]:
    return {
        "name": name,
        "valueQuantity": {
            "value": round(value, digits),
            "unit": code,
            "system": UCUM,
            "code": code,
        },
    }


def _when(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def weight_parameters(summary: WeightSummary) -> dict[str, Any]:
    """`$weight-summary`'s Parameters; undefined values are left out (docs/glucose.md)."""
    out: list[dict[str, Any]] = [{"name": "readings", "valueInteger": summary.readings}]
    last = summary.last
    if last is not None:
        out.append(_quantity("weight", last.kg, "kg", 3))
        out.append({"name": "weight-time", "valueDateTime": _when(last.time)})
        out.append(_quantity("trend", last.trend_kg, "kg", 3))
    for weeks, change in sorted(summary.changes.items()):
        if change is not None:
            out.append(_quantity(f"change-{weeks}-weeks", change, "%", 3))
    if summary.height is not None:
        out.append(_quantity("height", summary.height.m * 100.0, "cm", 2))
    if summary.bmi is not None:
        out.append(_quantity("bmi", summary.bmi, "kg/m2", 2))
        out.append({"name": "bmi-category", "valueCode": bmi_category(summary.bmi).value})
    goal = summary.goal
    if goal is not None:
        out.append({"name": "goal", "valueReference": {"reference": f"Goal/{goal.id}"}})
        out.append(_quantity("goal-target", goal.target_kg, "kg", 3))
        if goal.due is not None:
            out.append({"name": "goal-due", "valueDate": goal.due.isoformat()})
        if summary.goal_start_kg is not None:
            out.append(_quantity("goal-start-weight", summary.goal_start_kg, "kg", 3))
        if summary.goal_remaining_kg is not None:
            out.append(_quantity("goal-remaining", summary.goal_remaining_kg, "kg", 3))
        if summary.goal_progress is not None:
            out.append(_quantity("goal-progress", summary.goal_progress, "%", 2))
    return {"resourceType": "Parameters", "parameter": out}


def bp_parameters(summary: BpSummary) -> dict[str, Any]:
    """`$bp-summary`'s Parameters; undefined values are left out (docs/glucose.md)."""
    average = summary.average
    out: list[dict[str, Any]] = [
        {"name": "readings", "valueInteger": average.readings if average else 0}
    ]
    if average is not None:
        out += [
            {"name": "days", "valueInteger": average.days},
            _quantity("systolic", average.systolic, "mm[Hg]", 1),
            _quantity("diastolic", average.diastolic, "mm[Hg]", 1),
            {
                "name": "category",
                "valueCode": bp_category(average.systolic, average.diastolic).value,
            },
            {"name": "meets-minimum", "valueBoolean": average.meets_minimum},
            {"name": "home-average-high", "valueBoolean": home_average_high(average)},
            _quantity("home-high-systolic", HOME_HIGH_THRESHOLD[0], "mm[Hg]", 1),
            _quantity("home-high-diastolic", HOME_HIGH_THRESHOLD[1], "mm[Hg]", 1),
        ]
    last = summary.last
    if last is not None:
        out += [
            {"name": "last-time", "valueDateTime": _when(last.time)},
            _quantity("last-systolic", last.systolic, "mm[Hg]", 1),
            _quantity("last-diastolic", last.diastolic, "mm[Hg]", 1),
            {
                "name": "last-category",
                "valueCode": bp_category(last.systolic, last.diastolic).value,
            },
        ]
    out.append({"name": "drop-first-day", "valueBoolean": summary.drop_first_day})
    return {"resourceType": "Parameters", "parameter": out}
