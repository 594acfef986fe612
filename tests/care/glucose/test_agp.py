"""AGP numbers against independent calculations written here.

- Percentiles: linear interpolation between closest ranks (Hyndman & Fan type 7) is what
  `statistics.quantiles(..., method="inclusive")` computes; the modal-day curves are
  checked against it, pooling by hand the readings whose local wall-clock time of day
  lies in each bin's ±30-minute window (found with `datetime.astimezone`, not the
  module's offset cache).
- Daily traces: local midnight to midnight (23 h on a spring-forward day), split at gaps
  of more than 30 minutes.
- The DiagnosticReport: the HL7 CGM IG's `cgm-summary-pdf` profile and its example
  (`DiagnosticReport-cgmSummaryPDFExample.json`): code 107931-8, category LAB, dates in
  effectivePeriod, one application/pdf presentedForm with base64 data.
"""

from __future__ import annotations

import base64
import json
import random
import statistics
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from openrecord.care.glucose.agp import (
    MIN_READINGS,
    daily_traces,
    diagnostic_report,
    percentile,
    time_of_day_profile,
)
from openrecord.care.glucose.importers import parse_export
from openrecord.care.glucose.metrics import summarize
from openrecord.care.glucose.readings import Reading, datetime_to_us
from tests.shared_data import require_shared

BERLIN = ZoneInfo("Europe/Berlin")


def simglucose(subject: str = "adolescent003") -> list[Reading]:
    path = require_shared("cgm", "simglucose", "simglucose_3patients_14d_cgm_long.csv")
    return parse_export(path.read_bytes()).series[subject]


def type7(values: list[float], p: int) -> float:
    """Independent: the inclusive method gives the 1st..99th percentiles (type 7)."""
    ordered = sorted(values)
    if p == 0:
        return ordered[0]
    if p == 100:
        return ordered[-1]
    return statistics.quantiles(ordered, n=100, method="inclusive")[p - 1]


def test_percentile_is_type_7() -> None:
    rng = random.Random(6)
    for size in (1, 2, 3, 7, 50, 301):
        values = sorted(rng.uniform(40, 400) for _ in range(size))
        for p in (0, 5, 25, 50, 75, 95, 100):
            expected = values[0] if size == 1 else type7(values, p)
            assert percentile(values, p) == pytest.approx(expected, abs=1e-9)
    # hand-worked: h = (n-1) p / 100 = 0.75 between 10 and 20
    assert percentile([10, 20, 30, 40], 25) == pytest.approx(17.5)
    with pytest.raises(ValueError):
        percentile([], 50)


def expected_curves(readings: list[Reading], zone: ZoneInfo, window: int) -> dict[int, list]:
    """Per 5-minute bin, the percentiles of the readings within ±window minutes of the bin
    (by bin index, wrapping round midnight)."""
    bins: list[list[float]] = [[] for _ in range(288)]
    for r in readings:
        local = r.time.astimezone(zone)
        bins[(local.hour * 60 + local.minute) // 5].append(r.mg_dl)
    reach = window // 5
    out: dict[int, list] = {p: [] for p in (5, 25, 50, 75, 95)}
    for b in range(288):
        pooled = [v for k in range(b - reach, b + reach + 1) for v in bins[k % 288]]
        for p in out:
            out[p].append(type7(pooled, p) if len(pooled) >= MIN_READINGS else None)
    return out


@pytest.mark.parametrize("window", [30, 0])
def test_profile_matches_independent_percentiles(window: int) -> None:
    readings = simglucose()
    profile = time_of_day_profile(readings, BERLIN, window_minutes=window)
    expected = expected_curves(readings, BERLIN, window)
    for p, values in expected.items():
        got = profile.curves[p]
        assert len(got) == 288
        for b, value in enumerate(values):
            if value is None:
                assert got[b] is None
            else:
                assert got[b] == pytest.approx(value, abs=1e-9), (p, b)
    # the curves are ordered at every bin
    for b in range(288):
        column = [profile.curves[p][b] for p in (5, 25, 50, 75, 95)]
        assert column == sorted(column)  # type: ignore[type-var]


def test_profile_uses_wall_clock_across_dst() -> None:
    # Every 5 minutes for 6 x 24 h from 28 March 2024 in Berlin (DST starts 31 March):
    # the value is the local hour x 10, so each local hour's bins hold only that value.
    start = datetime(2024, 3, 28, tzinfo=BERLIN).astimezone(UTC)
    readings = []
    for i in range(6 * 288):
        moment = start + timedelta(minutes=5 * i)
        readings.append(Reading.at(moment, moment.astimezone(BERLIN).hour * 10.0))
    profile = time_of_day_profile(readings, BERLIN, window_minutes=0)
    for hour in range(24):
        for b in range(hour * 12, hour * 12 + 12):
            value = profile.curves[50][b]
            if hour == 2:  # 02:00-02:59 does not exist on 31 March: 5 days of it
                assert profile.counts[b] == 5
            assert value == pytest.approx(hour * 10.0)


def test_sparse_bins_have_no_value() -> None:
    at = datetime(2024, 1, 1, 8, tzinfo=UTC)
    readings = [Reading.at(at + timedelta(minutes=5 * i), 100 + i) for i in range(4)]
    profile = time_of_day_profile(readings, UTC, window_minutes=0)
    assert all(v is None for v in profile.curves[50])
    assert sum(profile.counts) == 4


def test_daily_traces_local_days_and_gaps() -> None:
    start = datetime(2024, 3, 30, tzinfo=BERLIN)
    end = datetime(2024, 4, 1, tzinfo=BERLIN)
    readings = []
    moment = start.astimezone(UTC)
    while moment < end.astimezone(UTC):
        local = moment.astimezone(BERLIN)
        if not (local.day == 30 and 10 <= local.hour < 12):  # a 2-hour gap on the 30th
            readings.append(Reading.at(moment, 120.0))
        moment += timedelta(minutes=5)
    days = daily_traces(readings, datetime_to_us(start), datetime_to_us(end), BERLIN)
    assert [d.day.isoformat() for d in days] == ["2024-03-30", "2024-03-31"]
    assert (days[0].end_us - days[0].start_us) == 24 * 3_600_000_000
    assert (days[1].end_us - days[1].start_us) == 23 * 3_600_000_000  # spring forward
    assert len(days[0].runs) == 2 and len(days[1].runs) == 1
    assert sum(len(run) for d in days for run in d.runs) == len(readings)
    first_run_end = days[0].runs[0][-1][0]
    assert first_run_end == (10 * 60 - 5) * 60_000_000  # 09:55 local, µs since midnight


def test_diagnostic_report_follows_the_ig() -> None:
    example = require_shared(
        "cgm", "hl7-cgm-ig-examples", "DiagnosticReport-cgmSummaryPDFExample.json"
    )
    ig = json.loads(example.read_text())
    readings = simglucose()
    start = datetime_to_us(datetime(2024, 1, 1, tzinfo=UTC))
    end = datetime_to_us(datetime(2024, 1, 15, tzinfo=UTC))
    pdf = b"%PDF-1.4 test"
    report = diagnostic_report(
        "p1", summarize(readings, start, end), pdf, "Observation/s", UTC, "2024-01-15T10:00:00Z"
    )
    assert report["code"] == {
        "coding": [{"system": "http://loinc.org", "code": "107931-8", "display": "CGM summary"}]
    }
    assert report["code"]["coding"][0]["code"] == ig["code"]["coding"][0]["code"]
    assert report["category"] == ig["category"]
    assert report["status"] == "final"
    assert report["subject"] == {"reference": "Patient/p1"}
    # the profile wants dates; the example's 14-day period is 1-14 May
    assert report["effectivePeriod"] == {"start": "2024-01-01", "end": "2024-01-14"}
    (form,) = report["presentedForm"]
    assert form["contentType"] == "application/pdf"
    assert base64.b64decode(form["data"]) == pdf
    assert report["result"] == [{"reference": "Observation/s"}]
