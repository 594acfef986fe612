"""Weight trend, % change over 4/12/26 weeks, BMI and its WHO adult category.

Definitions and where they come from:

- **Trend**: an exponentially weighted moving average over irregular timestamps. The
  trend starts at the first weight; each later weight w, taken dt days after the
  previous one, moves it by alpha = 1 - 0.5 ** (dt / half_life) of the gap:
  trend += alpha * (w - trend). Between readings the trend holds its last value. The
  default half-life, ln 2 / -ln 0.9 ≈ 6.58 days, makes alpha exactly 0.1 for daily
  weighings: the 10 %-a-day smoothing of J. Walker's "The Hacker's Diet" (1991), which
  weight-trend apps (Libra, Happy Scale) follow. Irregular gaps weigh a reading by the
  time it stands for, so a missed week counts more than a missed day; a second weight
  at the same instant (dt = 0) does not move the trend.
- **% change over N weeks**: 100 * (trend now - trend at now - N weeks) / trend at the
  window's start, where "now" is the last weight (or a given instant) and the trend at
  an instant is the trend as of the last weight at or before it. None when no weight
  is that old: the data do not reach back to the window's start.
- **BMI** (WHO, "Obesity: preventing and managing the global epidemic", TRS 894, 2000,
  Table 2.1): weight in kg divided by the square of height in metres.
- **WHO adult categories** (same table; stated to two decimals): underweight < 18.50,
  normal range 18.50-24.99, pre-obese (overweight) 25.00-29.99, obese class I
  30.00-34.99, class II 35.00-39.99, class III ≥ 40.00. Implemented as half-open
  intervals [18.5, 25), [25, 30), ... so 24.995 is still normal. Age-independent, for
  adults only (children use BMI-for-age).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

__all__ = [
    "CHANGE_WINDOWS_WEEKS",
    "DEFAULT_HALF_LIFE_DAYS",
    "BmiCategory",
    "TrendPoint",
    "WeightReading",
    "bmi",
    "bmi_category",
    "percent_change",
    "percent_changes",
    "trend_at",
    "weight_trend",
]

DEFAULT_HALF_LIFE_DAYS = math.log(2) / -math.log(0.9)
CHANGE_WINDOWS_WEEKS = (4, 12, 26)
_DAY_SECONDS = 86_400.0


@dataclass(frozen=True, slots=True)
class WeightReading:
    """One body weight (LOINC 29463-7) at an instant."""

    time: datetime
    kg: float


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """A weight and the smoothed trend just after it was taken into account."""

    time: datetime
    kg: float
    trend_kg: float


def weight_trend(
    readings: Iterable[WeightReading], half_life_days: float = DEFAULT_HALF_LIFE_DAYS
) -> list[TrendPoint]:
    """The EWMA trend at every weight, in time order (see the module docstring)."""
    if half_life_days <= 0:
        raise ValueError("half-life must be positive")
    ordered = sorted(readings, key=lambda reading: reading.time)
    points: list[TrendPoint] = []
    trend = 0.0
    previous: datetime | None = None
    for reading in ordered:
        if previous is None:
            trend = reading.kg
        else:
            dt_days = (reading.time - previous).total_seconds() / _DAY_SECONDS
            alpha = 1.0 - 0.5 ** (dt_days / half_life_days)
            trend += alpha * (reading.kg - trend)
        points.append(TrendPoint(reading.time, reading.kg, trend))
        previous = reading.time
    return points


def trend_at(points: Sequence[TrendPoint], when: datetime) -> float | None:
    """The trend as of the last weight at or before `when`; None before the first."""
    index = bisect_right([point.time for point in points], when)
    return points[index - 1].trend_kg if index else None


def percent_change(
    points: Sequence[TrendPoint], weeks: float, now: datetime | None = None
) -> float | None:
    """% change of the trend over the `weeks` before `now` (default: the last weight).

    None when there are no weights or none at or before the window's start.
    """
    if not points:
        return None
    end = points[-1].time if now is None else now
    current = trend_at(points, end)
    start = trend_at(points, end - timedelta(weeks=weeks))
    if current is None or start is None:
        return None
    return 100.0 * (current - start) / start


def percent_changes(
    points: Sequence[TrendPoint], now: datetime | None = None
) -> dict[int, float | None]:
    """% change of the trend over 4, 12 and 26 weeks, keyed by weeks."""
    return {weeks: percent_change(points, weeks, now) for weeks in CHANGE_WINDOWS_WEEKS}


class BmiCategory(StrEnum):
    """WHO adult BMI classes (TRS 894, Table 2.1)."""

    UNDERWEIGHT = "underweight"
    NORMAL = "normal"
    OVERWEIGHT = "overweight"
    OBESITY_CLASS_I = "obesity-class-1"
    OBESITY_CLASS_II = "obesity-class-2"
    OBESITY_CLASS_III = "obesity-class-3"


def bmi(weight_kg: float, height_m: float) -> float:
    """Body mass index in kg/m² (LOINC 39156-5)."""
    if weight_kg <= 0 or height_m <= 0:
        raise ValueError("weight and height must be positive")
    return weight_kg / (height_m * height_m)


def bmi_category(value: float) -> BmiCategory:
    """The WHO adult class of a BMI in kg/m² (lower bounds inclusive)."""
    if value < 18.5:
        return BmiCategory.UNDERWEIGHT
    if value < 25.0:
        return BmiCategory.NORMAL
    if value < 30.0:
        return BmiCategory.OVERWEIGHT
    if value < 35.0:
        return BmiCategory.OBESITY_CLASS_I
    if value < 40.0:
        return BmiCategory.OBESITY_CLASS_II
    return BmiCategory.OBESITY_CLASS_III
