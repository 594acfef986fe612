"""The numbers behind the Ambulatory Glucose Profile (AGP) report: percentile curves by
time of day, the daily traces, and the report as a FHIR DiagnosticReport.

What is computed, and from where:

- **Modal day** (Bergenstal et al., "Recommendations for standardizing glucose reporting
  and analysis", Diabetes Technol Ther 2013;15:198; Johnson et al., Diabetes Technol
  Ther 2019;21:S2-17): every reading of the period is placed at its local wall-clock
  time of day, as if all days were one. The day is cut into 288 bins of 5 minutes (the
  CGM interval).
- **Percentiles** 5, 25, 50, 75, 95 per bin, by linear interpolation between closest
  ranks: for sorted x[0..n-1] and p in [0, 100], h = (n - 1) p / 100,
  q = x[⌊h⌋] + (h - ⌊h⌋)(x[⌊h⌋+1] - x[⌊h⌋]) — Hyndman & Fan's type 7, the default of R's
  `quantile` (used by iglu's AGP) and of NumPy.
- **Smoothing**: the AGP's curves are smoothed, but the International Diabetes Center
  does not publish its method (iglu loess-smooths the bin quantiles). Here each bin's
  percentiles are taken over the readings of a centred window of ±30 minutes (the bin
  and the 6 bins on either side, wrapping round midnight): a moving-window percentile,
  which stays a true percentile of real readings and needs no fitted model.
  `window_minutes=0` gives the raw per-bin percentiles. A bin whose window holds fewer
  than `MIN_READINGS` readings has no value (the curve is broken there).
- **Daily profiles**: one trace per local calendar day (midnight to midnight; a DST day
  is 23 or 25 hours), broken where readings are more than `GAP_MINUTES` apart.
- **DiagnosticReport** after the HL7 CGM IG 1.0.0 `cgm-summary-pdf` profile: LOINC
  107931-8, the period as `effectivePeriod` (dates), the PDF as `presentedForm`
  (application/pdf, base64) and the CGM summary Observation as `result`.

Pure: no I/O.
"""

from __future__ import annotations

import base64
import math
from bisect import bisect_left, insort
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from openrecord.care.glucose.fhir import LOINC, SUMMARY_CODES
from openrecord.care.glucose.metrics import PeriodSummary
from openrecord.care.glucose.readings import Reading, datetime_to_us, utc_offsets

__all__ = [
    "BIN_MINUTES",
    "GAP_MINUTES",
    "MIN_READINGS",
    "PERCENTILES",
    "AgpData",
    "DayTrace",
    "Profile",
    "agp_data",
    "daily_traces",
    "diagnostic_report",
    "percentile",
    "time_of_day_profile",
]

PERCENTILES = (5, 25, 50, 75, 95)
BIN_MINUTES = 5
GAP_MINUTES = 30
MIN_READINGS = 5
_MINUTE_US = 60_000_000
_HOUR_US = 3_600_000_000
_DAY_MINUTES = 1440


def percentile(ordered: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) of sorted, non-empty `ordered` (type 7, see above)."""
    if not ordered:
        raise ValueError("no values")
    h = (len(ordered) - 1) * p / 100.0
    low = math.floor(h)
    if low >= len(ordered) - 1:
        return float(ordered[-1])
    return ordered[low] + (h - low) * (ordered[low + 1] - ordered[low])


@dataclass(frozen=True, slots=True)
class Profile:
    """The modal day: for each percentile, one value (mg/dL) or None per 5-minute bin."""

    bin_minutes: int
    window_minutes: int
    curves: dict[int, list[float | None]]
    counts: list[int]  # readings in each bin's window


def time_of_day_profile(
    readings: Sequence[Reading],
    zone: tzinfo = UTC,
    *,
    window_minutes: int = 30,
    percentiles: Sequence[int] = PERCENTILES,
) -> Profile:
    """Percentiles of the readings by local time of day (5-minute bins, ±`window_minutes`)."""
    bins = _DAY_MINUTES // BIN_MINUTES
    by_bin: list[list[float]] = [[] for _ in range(bins)]
    offsets = utc_offsets([r.time_us for r in readings], zone)
    for reading, offset in zip(readings, offsets, strict=True):
        minute = (reading.time_us + offset) // _MINUTE_US % _DAY_MINUTES
        by_bin[minute // BIN_MINUTES].append(reading.mg_dl)
    for values in by_bin:
        values.sort()
    reach = min(window_minutes // BIN_MINUTES, (bins - 1) // 2)
    curves: dict[int, list[float | None]] = {p: [] for p in percentiles}
    counts: list[int] = []
    # The window slides one bin at a time: drop the bin that leaves, insert the one
    # that enters, keeping the pooled values sorted.
    pooled = sorted(v for k in range(-reach, reach + 1) for v in by_bin[k % bins])
    for b in range(bins):
        if b:
            for v in by_bin[(b - 1 - reach) % bins]:
                del pooled[bisect_left(pooled, v)]
            for v in by_bin[(b + reach) % bins]:
                insort(pooled, v)
        counts.append(len(pooled))
        for p in percentiles:
            curves[p].append(percentile(pooled, p) if len(pooled) >= MIN_READINGS else None)
    return Profile(BIN_MINUTES, window_minutes, curves, counts)


@dataclass(frozen=True, slots=True)
class DayTrace:
    """One local calendar day: its bounds (UTC µs) and its readings as runs without gaps,
    each point (µs since the day's start, mg/dL)."""

    day: date
    start_us: int
    end_us: int
    runs: list[list[tuple[int, float]]]


def daily_traces(
    readings: Sequence[Reading], start_us: int, end_us: int, zone: tzinfo = UTC
) -> list[DayTrace]:
    """One trace per local day that overlaps [start, end), readings in order."""
    epoch = datetime.fromtimestamp(0, UTC)
    current = (epoch + timedelta(microseconds=start_us)).astimezone(zone).date()
    out: list[DayTrace] = []
    at = 0
    gap_us = GAP_MINUTES * _MINUTE_US
    while True:
        lo = datetime_to_us(datetime(current.year, current.month, current.day, tzinfo=zone))
        following = current + timedelta(days=1)
        hi = datetime_to_us(datetime(following.year, following.month, following.day, tzinfo=zone))
        if lo >= end_us:
            return out
        runs: list[list[tuple[int, float]]] = []
        while at < len(readings) and readings[at].time_us < lo:
            at += 1
        previous: int | None = None
        while at < len(readings) and readings[at].time_us < hi:
            reading = readings[at]
            if previous is None or reading.time_us - previous > gap_us:
                runs.append([])
            runs[-1].append((reading.time_us - lo, reading.mg_dl))
            previous = reading.time_us
            at += 1
        out.append(DayTrace(current, lo, hi, runs))
        current = following


@dataclass(frozen=True, slots=True)
class AgpData:
    """Everything an AGP page shows."""

    patient: str
    patient_name: str | None
    zone: tzinfo
    summary: PeriodSummary
    wear_days: int
    profile: Profile
    days: list[DayTrace]


def agp_data(
    patient: str,
    patient_name: str | None,
    summary: PeriodSummary,
    readings: Sequence[Reading],
    wear_days: int,
    zone: tzinfo = UTC,
) -> AgpData:
    """The AGP of `readings` (sorted, within the summary's period)."""
    return AgpData(
        patient=patient,
        patient_name=patient_name,
        zone=zone,
        summary=summary,
        wear_days=wear_days,
        profile=time_of_day_profile(readings, zone),
        days=daily_traces(readings, summary.start_us, summary.end_us, zone),
    )


def _date(time_us: int, zone: tzinfo) -> str:
    epoch = datetime.fromtimestamp(0, UTC)
    return (epoch + timedelta(microseconds=time_us)).astimezone(zone).date().isoformat()


def diagnostic_report(
    patient: str,
    summary: PeriodSummary,
    pdf: bytes,
    summary_reference: str | None,
    zone: tzinfo,
    issued: str,
) -> dict[str, Any]:
    """The CGM IG's summary-PDF DiagnosticReport: the AGP as `presentedForm`.

    `effectivePeriod` holds dates (the profile's "YYYY-MM-DD"): the local dates of the
    period's first and last instant (the end is exclusive, so its day is the one before
    `end` when `end` is a midnight). `summary_reference` (e.g. "Observation/x" or
    "#summary") names the CGM summary Observation.
    """
    last = max(summary.start_us, summary.end_us - 1)
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}
        ],
        "code": {
            "coding": [
                {"system": LOINC, "code": SUMMARY_CODES["summary"], "display": "CGM summary"}
            ]
        },
        "subject": {"reference": f"Patient/{patient}"},
        "effectivePeriod": {"start": _date(summary.start_us, zone), "end": _date(last, zone)},
        "issued": issued,
        "presentedForm": [
            {
                "contentType": "application/pdf",
                "language": "en",
                "data": base64.b64encode(pdf).decode("ascii"),
                "title": "Ambulatory Glucose Profile (AGP) report",
            }
        ],
    }
    if summary_reference is not None:
        report["result"] = [{"reference": summary_reference}]
    return report
