"""The international-consensus CGM metrics over a period, with daily and hourly breakdowns.

Definitions and where they come from:

- **Ranges** (Battelino et al., "Clinical Targets for CGM Data Interpretation",
  Diabetes Care 2019;42:1593, Table 1/Fig. 1): very low < 54 mg/dL (< 3.0 mmol/L),
  low 54-69 (3.0-3.8), in range 70-180 (3.9-10.0), high 181-250 (10.1-13.9), very
  high > 250 (> 13.9); tight range 70-140. The bands are stated on whole mg/dL, so a
  value is classified by its nearest whole mg/dL (half up): that makes the mmol/L bands
  agree (10.0 mmol/L = 180.16 mg/dL is in range, 3.0 mmol/L = 54.05 is "low", not "very
  low"). Percentages are of readings, which is % of time for evenly spaced readings.
- **Mean, SD, CV**: SD is the sample SD (n - 1); CV = 100 * SD / mean (target ≤ 36 %).
- **GMI** (Bergenstal et al., Diabetes Care 2018;41:2275): 3.31 + 0.02392 * mean mg/dL, in %.
- **% CGM active** (Battelino 2019: "percentage of time CGM is active … 70 % of data
  from 14 days"): the share of device-interval slots of the period (5 min for Dexcom
  and Libre 3, 15 min for Libre 2) that hold at least one reading, so duplicates and
  timing jitter neither inflate nor deflate it. `sufficient` = period ≥ 14 days and
  active ≥ 70 %.
- **LBGI/HBGI** (Kovatchev et al., Diabetes Care 1997;20:1655 and Diabetes Care
  2006;29:2433): f(BG) = 1.509 * ((ln BG)^1.084 - 5.381) with BG in mg/dL,
  r = 10 f², rl = r where f < 0, rh = r where f > 0, LBGI = mean(rl), HBGI = mean(rh).
- **GRI** (Klonoff et al., J Diabetes Sci Technol 2023;17:1226): hypo component =
  VLow + 0.8 * Low, hyper component = VHigh + 0.5 * High (percentages in the ranges
  above), GRI = 3.0 * hypo + 1.6 * hyper = 3.0 VLow + 2.4 Low + 1.6 VHigh + 0.8 High,
  capped at 100.
- **MAGE** (Service et al., Diabetes 1970;19:644): the mean height of the excursions
  between successive peaks and nadirs that exceed one SD of the period. Implemented as
  a hysteresis (zig-zag) scan: a peak (nadir) is confirmed once glucose has fallen
  (risen) more than 1 SD from it, so a wiggle smaller than 1 SD never splits an
  excursion; the last, unconfirmed leg counts when it also exceeds 1 SD. Excursions of
  both directions are averaged (the "MAGEavg" of Fernandes et al., J Diabetes Sci
  Technol 2022), gaps are not treated specially.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from itertools import pairwise, repeat
from operator import add, floordiv, sub
from typing import Any

from openrecord.care.glucose.readings import (
    Reading,
    datetime_to_us,
    mgdl_to_mmoll,
    utc_offsets,
)

__all__ = [
    "DAY_US",
    "GlucoseStats",
    "PeriodSummary",
    "daily",
    "glucose_stats",
    "hourly",
    "mage",
    "milli_stats",
    "range_counts",
    "risk_index",
    "summarize",
    "summarize_days",
    "summarize_series",
]

DAY_US = 86_400_000_000
_MINUTE_US = 60_000_000
_HOUR_US = 3_600_000_000
_SUFFICIENT_DAYS = 14.0
_SUFFICIENT_ACTIVE = 70.0


def _band_counts(counts: Mapping[float, int]) -> tuple[list[int], int]:
    very_low = low = in_range = high = very_high = tight = 0
    for value, c in counts.items():
        whole = math.floor(value + 0.5)
        if whole < 54:
            very_low += c
        elif whole < 70:
            low += c
        elif whole <= 180:
            in_range += c
            if whole <= 140:
                tight += c
        elif whole <= 250:
            high += c
        else:
            very_high += c
    return [very_low, low, in_range, high, very_high], tight


def range_counts(values: Sequence[float]) -> tuple[list[int], int]:
    """Readings per consensus band (very low ... very high) and in the 70-140 tight range.

    Each value is taken to its nearest whole mg/dL (half up) before it is compared.
    """
    return _band_counts(Counter(values))


def _risk(value: float) -> float:
    """Kovatchev's f(BG), mg/dL."""
    return 1.509 * (float(math.log(max(value, 1.0)) ** 1.084) - 5.381)


def _risk_from_counts(counts: Mapping[float, int], n: int) -> tuple[float, float]:
    low: list[float] = []
    high: list[float] = []
    for value, c in counts.items():
        f = _risk(value)
        (low if f < 0 else high).append(10 * f * f * c)
    return math.fsum(low) / n, math.fsum(high) / n


def risk_index(values: Sequence[float]) -> tuple[float, float]:
    """(LBGI, HBGI) of mg/dL values (Kovatchev symmetrization)."""
    return _risk_from_counts(Counter(values), len(values))


def mage(values: Sequence[float], threshold: float) -> float | None:
    """Mean height of the excursions larger than `threshold` (1 SD), both directions.

    One pass; after the first excursion sets the direction, a rising and a falling
    loop take turns over one iterator (two comparisons a value, no arithmetic on
    the direction: this is the metrics' hottest loop)."""
    if len(values) < 2 or not threshold > 0:
        return None
    swings: list[float] = []
    it = iter(values)
    low = high = next(it)
    rising = False
    pivot = extreme = low
    for value in it:  # direction not yet known
        if value > high:
            high = value
        elif value < low:
            low = value
        if value - low > threshold:
            rising, pivot, extreme = True, low, value
            break
        if high - value > threshold:
            rising, pivot, extreme = False, high, value
            break
    else:
        return None
    while True:
        if rising:
            for value in it:
                if value > extreme:
                    extreme = value
                elif extreme - value > threshold:
                    swings.append(extreme - pivot)
                    pivot, extreme = extreme, value
                    break
            else:
                break
        else:
            for value in it:
                if value < extreme:
                    extreme = value
                elif value - extreme > threshold:
                    swings.append(pivot - extreme)
                    pivot, extreme = extreme, value
                    break
            else:
                break
        rising = not rising
    if abs(extreme - pivot) > threshold:
        swings.append(abs(extreme - pivot))
    return math.fsum(swings) / len(swings) if swings else None


@dataclass(frozen=True, slots=True)
class GlucoseStats:
    """Distribution metrics of a set of readings (mg/dL; percentages 0-100)."""

    count: int
    mean: float | None = None
    sd: float | None = None
    cv: float | None = None
    gmi: float | None = None
    time_very_low: float | None = None
    time_low: float | None = None
    time_in_range: float | None = None
    time_high: float | None = None
    time_very_high: float | None = None
    time_tight_range: float | None = None
    lbgi: float | None = None
    hbgi: float | None = None
    gri: float | None = None
    gri_hypo: float | None = None
    gri_hyper: float | None = None
    mage: float | None = None

    def to_json(self, unit: str = "mg/dL") -> dict[str, Any]:
        """Names as the issue's `$cgm-summary` parameters; glucose in `unit`."""
        if unit not in ("mg/dL", "mmol/L"):
            raise ValueError(f"unit must be mg/dL or mmol/L, not {unit!r}")

        def glucose(value: float | None) -> float | None:
            return mgdl_to_mmoll(value) if value is not None and unit == "mmol/L" else value

        return {
            "unit": unit,
            "count": self.count,
            "mean": glucose(self.mean),
            "sd": glucose(self.sd),
            "cv": self.cv,
            "gmi": self.gmi,
            "time-very-low": self.time_very_low,
            "time-low": self.time_low,
            "time-in-range": self.time_in_range,
            "time-high": self.time_high,
            "time-very-high": self.time_very_high,
            "time-tight-range": self.time_tight_range,
            "lbgi": self.lbgi,
            "hbgi": self.hbgi,
            "gri": self.gri,
            "gri-hypo": self.gri_hypo,
            "gri-hyper": self.gri_hyper,
            "mage": glucose(self.mage),
        }


def glucose_stats(values: Sequence[float]) -> GlucoseStats:
    """Every distribution metric of mg/dL `values` in time order (MAGE needs the order).

    All but MAGE come from the values' histogram (CGM values repeat: a few hundred
    distinct ones per patient), which gives the same sums as a pass over every value."""
    n = len(values)
    if n == 0:
        return GlucoseStats(0)
    counts = Counter(values)
    mean = math.fsum(v * c for v, c in counts.items()) / n
    sd = None
    if n > 1:
        sd = math.sqrt(math.fsum(c * (v - mean) ** 2 for v, c in counts.items()) / (n - 1))
    return _stats(counts, n, mean, sd, None if sd is None else mage(values, sd))


def milli_stats(milli: Sequence[int]) -> GlucoseStats:
    """`glucose_stats` of values held as integer thousandths of a mg/dL (the compact
    storage): the sums are exact integers, the histogram counted in C."""
    n = len(milli)
    if n == 0:
        return GlucoseStats(0)
    counts = Counter(milli)
    total = sum(k * c for k, c in counts.items())
    mean = total / (1000 * n)
    sd = None
    swings: float | None = None
    if n > 1:
        squares = sum(k * k * c for k, c in counts.items())
        sd = math.sqrt((n * squares - total * total) / (n * (n - 1))) / 1000
        height = mage(milli, sd * 1000)
        swings = None if height is None else height / 1000
    values = {k / 1000: c for k, c in counts.items()}
    return _stats(values, n, mean, sd, swings)


def _stats(
    counts: Mapping[float, int], n: int, mean: float, sd: float | None, swings: float | None
) -> GlucoseStats:
    bands, tight = _band_counts(counts)
    very_low, low, in_range, high, very_high = (100.0 * c / n for c in bands)
    lbgi, hbgi = _risk_from_counts(counts, n)
    hypo = very_low + 0.8 * low
    hyper = very_high + 0.5 * high
    return GlucoseStats(
        count=n,
        mean=mean,
        sd=sd,
        cv=None if sd is None else 100.0 * sd / mean,
        gmi=3.31 + 0.02392 * mean,
        time_very_low=very_low,
        time_low=low,
        time_in_range=in_range,
        time_high=high,
        time_very_high=very_high,
        time_tight_range=100.0 * tight / n,
        lbgi=lbgi,
        hbgi=hbgi,
        gri=min(100.0, 3.0 * hypo + 1.6 * hyper),
        gri_hypo=hypo,
        gri_hyper=hyper,
        mage=swings,
    )


@dataclass(frozen=True, slots=True)
class PeriodSummary:
    """The metrics of one period [start, end) and how well the sensor covered it."""

    start_us: int
    end_us: int
    interval_minutes: float
    stats: GlucoseStats
    active_percent: float

    @property
    def days(self) -> float:
        return (self.end_us - self.start_us) / DAY_US

    @property
    def sufficient(self) -> bool:
        """The consensus rule: at least 14 days with the CGM active ≥ 70 % of the time."""
        return self.days >= _SUFFICIENT_DAYS and self.active_percent >= _SUFFICIENT_ACTIVE

    def to_json(self, unit: str = "mg/dL") -> dict[str, Any]:
        utc = datetime.fromtimestamp(0, UTC)
        return {
            "start": (utc + timedelta(microseconds=self.start_us)).isoformat(),
            "end": (utc + timedelta(microseconds=self.end_us)).isoformat(),
            "days": self.days,
            "active-percent": self.active_percent,
            "sufficient": self.sufficient,
            **self.stats.to_json(unit),
        }


def _bounds(readings: Sequence[Reading], start: int | None, end: int | None) -> slice:
    times = [r.time_us for r in readings]
    lo = 0 if start is None else bisect_left(times, start)
    hi = len(times) if end is None else bisect_left(times, end)
    return slice(lo, hi)


def _us(moment: datetime | int | None) -> int | None:
    return datetime_to_us(moment) if isinstance(moment, datetime) else moment


def summarize(
    readings: Sequence[Reading],
    start: datetime | int | None = None,
    end: datetime | int | None = None,
    *,
    interval_minutes: float = 5.0,
) -> PeriodSummary:
    """The metrics of `readings` (sorted by time) in [start, end).

    Without bounds the period runs from the first reading to one interval after the last.
    """
    start_us, end_us = _us(start), _us(end)
    chosen = readings[_bounds(readings, start_us, end_us)]
    interval_us = round(interval_minutes * _MINUTE_US)
    if start_us is None:
        start_us = chosen[0].time_us if chosen else 0
    if end_us is None:
        end_us = chosen[-1].time_us + interval_us if chosen else start_us
    active = _active_percent([r.time_us for r in chosen], start_us, end_us, interval_us)
    stats = glucose_stats([r.mg_dl for r in chosen])
    return PeriodSummary(start_us, end_us, interval_minutes, stats, active)


def _active_percent(times: Sequence[int], start: int, end: float, interval: int) -> float:
    """% of the period's device-interval slots holding at least one of `times`
    (all inside the period; one unit for all four)."""
    expected = math.ceil((end - start) / interval) if end > start else 0
    if not expected:
        return 0.0
    # two maps in C: (t - start) // interval for every instant
    slots = set(map(floordiv, map(sub, times, repeat(start)), repeat(interval)))
    return 100.0 * min(len(slots), expected) / expected


def summarize_series(
    times_ms: Sequence[int],
    milli: Sequence[int],
    start_us: int,
    end_us: int,
    *,
    interval_minutes: float = 5.0,
) -> PeriodSummary:
    """`summarize` of readings held as columns: instants in ms since the epoch (sorted,
    all in [start, end)) and values in integer thousandths of a mg/dL (the compact
    storage). No reading objects are built: this is the all-patients path."""
    interval_us = round(interval_minutes * _MINUTE_US)
    if start_us % 1000 == 0 and interval_us % 1000 == 0:
        active = _active_percent(times_ms, start_us // 1000, end_us / 1000, interval_us // 1000)
    else:
        times_us = [t * 1000 for t in times_ms]
        active = _active_percent(times_us, start_us, end_us, interval_us)
    return PeriodSummary(start_us, end_us, interval_minutes, milli_stats(milli), active)


def summarize_days(
    days: Iterable[tuple[int, Sequence[int], Sequence[int]]],
    start_us: int,
    end_us: int,
    *,
    interval_minutes: float = 5.0,
) -> PeriodSummary:
    """`summarize_series` of readings held by day, as the compact storage holds them:
    (day's first instant in ms since the epoch, ms offsets into the day, thousandths
    of a mg/dL), days in order, every reading in [start, end). The slots of each day
    are counted from its offsets, so no instant is ever built."""
    interval_us = round(interval_minutes * _MINUTE_US)
    if start_us % 1000 or interval_us % 1000:  # not on whole ms: the general path
        times: list[int] = []
        values: list[int] = []
        for base, offsets, milli in days:
            times.extend(map(add, offsets, repeat(base)))
            values.extend(milli)
        return summarize_series(times, values, start_us, end_us, interval_minutes=interval_minutes)
    start, interval = start_us // 1000, interval_us // 1000
    expected = math.ceil((end_us - start_us) / interval_us) if end_us > start_us else 0
    slots: set[int] = set()
    values_all = array("i")
    for base, offsets, milli in days:
        shift = base - start
        slots.update(map(floordiv, map(add, offsets, repeat(shift)), repeat(interval)))
        values_all.extend(milli)
    active = 100.0 * min(len(slots), expected) / expected if expected else 0.0
    return PeriodSummary(start_us, end_us, interval_minutes, milli_stats(values_all), active)


def _local_midnights(first_us: int, last_us: int, zone: tzinfo) -> list[int]:
    """UTC µs of each local midnight from the day of `first_us` to after `last_us`."""
    day = (datetime.fromtimestamp(0, UTC) + timedelta(microseconds=first_us)).astimezone(zone)
    current = day.date()
    out: list[int] = []
    while True:
        midnight = datetime_to_us(datetime(current.year, current.month, current.day, tzinfo=zone))
        out.append(midnight)
        if midnight > last_us:
            return out
        current += timedelta(days=1)


def daily(
    readings: Sequence[Reading], zone: tzinfo = UTC, *, interval_minutes: float = 5.0
) -> list[PeriodSummary]:
    """One summary per local calendar day, gaps included (a DST day is 23 or 25 hours)."""
    if not readings:
        return []
    edges = _local_midnights(readings[0].time_us, readings[-1].time_us, zone)
    times = [r.time_us for r in readings]
    cuts = [bisect_left(times, edge) for edge in edges]
    return [
        summarize(readings[a:b], lo, hi, interval_minutes=interval_minutes)
        for (lo, hi), (a, b) in zip(pairwise(edges), pairwise(cuts), strict=True)
    ]


def _local_hours(times_us: Sequence[int], zone: tzinfo) -> list[int]:
    """Local hour of day of each instant."""
    offsets = utc_offsets(times_us, zone)
    return [(t + shift) // _HOUR_US % 24 for t, shift in zip(times_us, offsets, strict=True)]


def hourly(readings: Sequence[Reading], zone: tzinfo = UTC) -> dict[int, GlucoseStats]:
    """Metrics of the readings by local hour of day (0-23), over all days of `readings`."""
    by_hour: dict[int, list[float]] = {hour: [] for hour in range(24)}
    local_hours = _local_hours([r.time_us for r in readings], zone)
    for reading, hour in zip(readings, local_hours, strict=True):
        by_hour[hour].append(reading.mg_dl)
    return {hour: glucose_stats(values) for hour, values in by_hour.items()}
