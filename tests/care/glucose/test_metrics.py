"""Consensus CGM metrics against hand-worked examples and an independent inline calculation.

Formulas, restated here from the papers rather than taken from the module:
- ranges (Battelino et al., Diabetes Care 2019;42:1593): <54, 54-69, 70-180, 181-250,
  >250 mg/dL, tight 70-140, on whole mg/dL;
- GMI (Bergenstal et al., Diabetes Care 2018): 3.31 + 0.02392 * mean mg/dL;
- LBGI/HBGI (Kovatchev et al., Diabetes Care 1997): f = 1.509 * (ln(BG)^1.084 - 5.381),
  r = 10 f^2, split by the sign of f, averaged over all readings; the paper's scale maps
  20 and 600 mg/dL to -sqrt(10) and +sqrt(10) (risk 100) and 112.5 mg/dL to 0;
- GRI (Klonoff et al., J Diabetes Sci Technol 2023): 3.0 VLow + 2.4 Low + 1.6 VHigh +
  0.8 High, capped at 100;
- MAGE (Service et al., Diabetes 1970): mean height of peak-to-nadir excursions > 1 SD.
"""

from __future__ import annotations

import itertools
import math
import statistics
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from openrecord.care.glucose.importers import parse_export
from openrecord.care.glucose.metrics import (
    daily,
    glucose_stats,
    hourly,
    mage,
    milli_stats,
    risk_index,
    summarize,
    summarize_days,
    summarize_series,
)
from openrecord.care.glucose.readings import Reading, mmoll_to_mgdl
from tests.shared_data import require_shared

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def _series(values: list[float], start: datetime = T0, minutes: int = 5) -> list[Reading]:
    return [Reading.at(start + timedelta(minutes=minutes * i), v) for i, v in enumerate(values)]


def test_range_boundaries_are_whole_mg_dl() -> None:
    # one reading per case; each lands in exactly one band
    cases = {
        53.4: "very_low",
        53.5: "low",
        54: "low",
        69: "low",
        69.4: "low",
        70: "in_range",
        180: "in_range",
        180.4: "in_range",
        180.5: "high",
        181: "high",
        250: "high",
        251: "very_high",
    }
    for value, band in cases.items():
        stats = glucose_stats([value])
        got = {
            "very_low": stats.time_very_low,
            "low": stats.time_low,
            "in_range": stats.time_in_range,
            "high": stats.time_high,
            "very_high": stats.time_very_high,
        }
        assert got == {k: (100.0 if k == band else 0.0) for k in got}, value


def test_mmol_l_consensus_bands_agree() -> None:
    # 3.9-10.0 mmol/L in range, 3.0-3.8 low, <3.0 very low, 10.1-13.9 high, >13.9 very high
    expected = {
        2.9: "vl",
        3.0: "l",
        3.8: "l",
        3.9: "r",
        10.0: "r",
        10.1: "h",
        13.9: "h",
        14.0: "vh",
    }
    for mmol, band in expected.items():
        s = glucose_stats([mmoll_to_mgdl(mmol)])
        got = {
            "vl": s.time_very_low,
            "l": s.time_low,
            "r": s.time_in_range,
            "h": s.time_high,
            "vh": s.time_very_high,
        }
        assert got[band] == 100.0, mmol


def test_hand_worked_small_period() -> None:
    # 10 readings: 50 (VLow), 60 (Low), 100, 120, 140, 150 (in range; 3 tight), 200, 240 (High),
    # 260, 300 (VHigh).  Mean 1620/10 = 162.
    values = [50.0, 60, 100, 120, 140, 150, 200, 240, 260, 300]
    s = glucose_stats(values)
    assert s.count == 10
    assert s.mean == pytest.approx(162.0)
    # sum of squared deviations: 112^2+102^2+62^2+42^2+22^2+12^2+38^2+78^2+98^2+138^2 = 65,360
    assert s.sd == pytest.approx(math.sqrt(65360 / 9))
    assert s.cv == pytest.approx(100 * math.sqrt(65360 / 9) / 162)
    assert s.gmi == pytest.approx(3.31 + 0.02392 * 162)  # 7.18504
    assert (s.time_very_low, s.time_low, s.time_in_range, s.time_high, s.time_very_high) == (
        pytest.approx(10.0),
        pytest.approx(10.0),
        pytest.approx(40.0),
        pytest.approx(20.0),
        pytest.approx(20.0),
    )
    assert s.time_tight_range == pytest.approx(30.0)  # 100, 120, 140
    # GRI: hypo = 10 + 0.8*10 = 18, hyper = 20 + 0.5*20 = 30, GRI = 54 + 48 = 102 -> cap 100
    assert s.gri_hypo == pytest.approx(18.0)
    assert s.gri_hyper == pytest.approx(30.0)
    assert s.gri == 100.0


def test_gri_worked_example_below_the_cap() -> None:
    # 100 readings: 2 VLow, 3 Low, 80 in range, 10 High, 5 VHigh
    values = [45.0] * 2 + [60.0] * 3 + [120.0] * 80 + [200.0] * 10 + [300.0] * 5
    s = glucose_stats(values)
    # 3.0*2 + 2.4*3 + 1.6*5 + 0.8*10 = 6 + 7.2 + 8 + 8 = 29.2
    assert s.gri == pytest.approx(29.2)
    assert s.gri_hypo == pytest.approx(2 + 0.8 * 3)
    assert s.gri_hyper == pytest.approx(5 + 0.5 * 10)


def test_kovatchev_scale_fixed_points() -> None:
    lbgi, hbgi = risk_index([20.0])
    assert (lbgi, hbgi) == (pytest.approx(100.0, rel=1e-3), 0.0)
    lbgi, hbgi = risk_index([600.0])
    assert (lbgi, hbgi) == (0.0, pytest.approx(100.0, rel=1e-3))
    lbgi, hbgi = risk_index([112.5])
    assert lbgi + hbgi < 1e-5
    # mean over readings: one at 20 and one at 600 -> each index is about 50
    lbgi, hbgi = risk_index([20.0, 600.0])
    assert (lbgi, hbgi) == (pytest.approx(50.0, rel=1e-3), pytest.approx(50.0, rel=1e-3))


def test_mage_hand_worked() -> None:
    # swings of 100 with 5 mg/dL wiggles (< SD) that must not split an excursion
    values = [100.0, 150, 145, 200, 120, 125, 100, 200, 100]
    sd = statistics.stdev(values)
    assert sd < 100  # every 100 swing counts, every wiggle (5) does not
    # excursions: 100->200 (100), 200->100 (100), 100->200 (100), 200->100 (100)
    assert mage(values, sd) == pytest.approx(100.0)
    # unequal excursions: 80->240 (160), 240->140 (100), 140->220 (80) with SD threshold 50
    assert mage([80.0, 160, 240, 190, 140, 180, 220], 50.0) == pytest.approx((160 + 100 + 80) / 3)
    # nothing exceeds the threshold
    assert mage([100.0, 110, 100, 110], 20.0) is None


def test_empty_period() -> None:
    s = summarize([], T0, T0 + timedelta(days=14))
    assert s.stats.count == 0
    assert s.stats.mean is None and s.stats.gri is None and s.stats.mage is None
    assert s.active_percent == 0.0
    assert s.days == 14.0
    assert not s.sufficient
    assert summarize([]).days == 0.0


def test_gaps_and_the_sufficiency_rule() -> None:
    slots = 14 * 288  # 4,032 expected 5-minute readings in 14 days
    end = T0 + timedelta(days=14)
    full = _series([120.0] * slots)
    assert summarize(full, T0, end).active_percent == pytest.approx(100.0)
    assert summarize(full, T0, end).sufficient
    # a gap: keep the first 70 % of the slots exactly -> sufficient; one fewer -> not
    keep = math.ceil(0.7 * slots)  # 2,823 of 4,032 = 70.01 %
    assert summarize(full[:keep], T0, end).active_percent == pytest.approx(100 * keep / slots)
    assert summarize(full[:keep], T0, end).sufficient
    assert not summarize(full[: keep - 1], T0, end).sufficient
    # 13 days fully covered is not enough
    assert not summarize(full, T0, T0 + timedelta(days=13)).sufficient


def test_duplicates_and_jitter_do_not_inflate_active_time() -> None:
    readings = _series([100.0, 101, 102, 103])
    extra = Reading(readings[1].time_us + 1_000_000, 101.0)  # 1 s later, same 5-min slot
    merged = sorted([*readings, extra], key=lambda r: r.time_us)
    s = summarize(merged, T0, T0 + timedelta(minutes=20))
    assert s.active_percent == pytest.approx(100.0)  # 4 slots of 4
    s = summarize(readings, T0, T0 + timedelta(minutes=40))
    assert s.active_percent == pytest.approx(50.0)  # 4 slots of 8


def test_low_and_high_limit_values_count_in_the_extreme_ranges() -> None:
    text = (
        "Index,Timestamp (YYYY-MM-DDThh:mm:ss),Event Type,Event Subtype,Glucose Value (mg/dL)\n"
        "1,2026-01-05T00:00:00,EGV,Low,Low\n"
        "2,2026-01-05T00:05:00,EGV,,100\n"
        "3,2026-01-05T00:10:00,EGV,High,High\n"
        "4,2026-01-05T00:15:00,EGV,,39\n"
    )
    readings = parse_export(text, zone="UTC").readings
    s = summarize(readings).stats
    assert s.mean == pytest.approx((40 + 100 + 400 + 39) / 4)
    assert (s.time_very_low, s.time_in_range, s.time_very_high) == (50.0, 25.0, 25.0)


def test_mmol_input_gives_the_same_metrics_as_mg_dl() -> None:
    mmol = [5.0, 7.2, 10.0, 12.5, 3.5, 2.8]
    mg = [mmoll_to_mgdl(v) for v in mmol]
    s = glucose_stats(mg)
    assert s.mean == pytest.approx(statistics.mean(mmol) * 18.0156)
    out = s.to_json("mmol/L")
    assert out["mean"] == pytest.approx(statistics.mean(mmol))
    assert out["sd"] == pytest.approx(statistics.stdev(mmol))
    # 5.0, 7.2, 10.0 in range; 12.5 high; 3.5 low; 2.8 very low
    assert (out["time-in-range"], out["time-high"], out["time-low"], out["time-very-low"]) == (
        pytest.approx(50.0),
        pytest.approx(100 / 6),
        pytest.approx(100 / 6),
        pytest.approx(100 / 6),
    )
    with pytest.raises(ValueError):
        s.to_json("mmol")


def test_dst_change_day_has_23_hours_and_its_own_expected_count() -> None:
    zone = ZoneInfo("America/New_York")
    start = datetime(2026, 3, 7, tzinfo=zone)  # Sat; Sun 2026-03-08 springs forward
    end = datetime(2026, 3, 10, tzinfo=zone)
    # aware datetimes of one zone subtract as wall clocks: compare in UTC (71 real hours)
    n = int((end.astimezone(UTC) - start.astimezone(UTC)).total_seconds() // 300)
    assert n == 71 * 12
    readings = _series([110.0] * n, start.astimezone(UTC))
    days = daily(readings, zone)
    assert [round(d.days * 24, 6) for d in days] == [24.0, 23.0, 24.0]
    assert [d.stats.count for d in days] == [288, 276, 288]
    assert all(d.active_percent == pytest.approx(100.0) for d in days)
    # the local hour 02:00 does not exist on the change day: hour 2 has 2 days of data
    by_hour = hourly(readings, zone)
    assert by_hour[2].count == 24 and by_hour[3].count == 36


def test_daily_breakdown_includes_empty_days() -> None:
    day1 = _series([100.0] * 288)
    day3 = _series([200.0] * 288, T0 + timedelta(days=2))
    days = daily(day1 + day3)
    assert [d.stats.count for d in days] == [288, 0, 288]
    assert [d.stats.mean for d in days] == [100.0, None, 200.0]
    assert [d.active_percent for d in days] == [100.0, 0.0, 100.0]


def _independent(values: list[float], times_us: list[int], start_us: int) -> dict[str, float]:
    """The consensus metrics computed again, directly from the published formulas."""
    n = len(values)
    whole = [math.floor(v + 0.5) for v in values]

    def pct(test: object) -> float:
        return 100.0 * sum(1 for w in whole if test(w)) / n  # type: ignore[operator]

    f = [1.509 * (math.log(v) ** 1.084 - 5.381) for v in values]
    vlow, low = pct(lambda w: w < 54), pct(lambda w: 54 <= w <= 69)
    high, vhigh = pct(lambda w: 181 <= w <= 250), pct(lambda w: w > 250)
    mean = statistics.fmean(values)
    return {
        "mean": mean,
        "sd": statistics.stdev(values),
        "cv": 100 * statistics.stdev(values) / mean,
        "gmi": 3.31 + 0.02392 * mean,
        "time_very_low": vlow,
        "time_low": low,
        "time_in_range": pct(lambda w: 70 <= w <= 180),
        "time_high": high,
        "time_very_high": vhigh,
        "time_tight_range": pct(lambda w: 70 <= w <= 140),
        "lbgi": sum(10 * x * x for x in f if x < 0) / n,
        "hbgi": sum(10 * x * x for x in f if x > 0) / n,
        "gri": min(100.0, 3.0 * vlow + 2.4 * low + 1.6 * vhigh + 0.8 * high),
        "active": 100.0 * len({(t - start_us) // 300_000_000 for t in times_us}) / (14 * 288),
    }


def _mage_by_elimination(values: list[float], sd: float) -> float:
    """MAGE the other way round: all turning points, then the smallest peak-nadir pair
    (or end leg) is removed while it is not larger than 1 SD; the excursions left are
    averaged. Removing the smallest interior pair keeps the outer, more extreme points,
    so what remains are the excursions Service et al. count."""
    flat = [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]
    points = [
        v
        for i, v in enumerate(flat)
        if i in (0, len(flat) - 1) or (v - flat[i - 1]) * (flat[i + 1] - v) < 0
    ]
    while len(points) >= 2:
        gaps = [abs(b - a) for a, b in itertools.pairwise(points)]
        i = min(range(len(gaps)), key=gaps.__getitem__)
        if gaps[i] > sd:
            break
        if i == 0:
            del points[0]
        elif i == len(gaps) - 1:
            del points[-1]
        else:
            del points[i : i + 2]
    gaps = [abs(b - a) for a, b in itertools.pairwise(points)]
    return statistics.fmean(gaps)


def test_simglucose_14_day_traces_match_an_independent_calculation() -> None:
    path = require_shared("cgm", "simglucose", "simglucose_3patients_14d_cgm_long.csv")
    series = parse_export(path.read_bytes()).series
    assert len(series) == 3
    for subject, readings in series.items():
        start = readings[0].time_us
        end = start + 14 * 86_400_000_000
        inside = [r for r in readings if start <= r.time_us < end]
        summary = summarize(readings, start, end)
        expected = _independent([r.mg_dl for r in inside], [r.time_us for r in inside], start)
        got = summary.stats
        for name, value in expected.items():
            actual = summary.active_percent if name == "active" else getattr(got, name)
            assert actual == pytest.approx(value, rel=1e-3, abs=1e-9), (subject, name)
        assert summary.days == 14.0
        assert summary.sufficient == (expected["active"] >= 70.0)
        values = [r.mg_dl for r in inside]
        assert got.mage == pytest.approx(_mage_by_elimination(values, expected["sd"]), rel=1e-3)


def test_compact_columns_and_days_match_the_independent_calculation() -> None:
    """The all-patients path (integer thousandths of mg/dL, instants in ms, by UTC day)
    against the same independent calculation, and a start that is not on a whole ms."""
    path = require_shared("cgm", "simglucose", "simglucose_3patients_14d_cgm_long.csv")
    for subject, readings in parse_export(path.read_bytes()).series.items():
        start = readings[0].time_us
        end = start + 14 * 86_400_000_000
        inside = [r for r in readings if start <= r.time_us < end]
        times_ms = [r.time_us // 1000 for r in inside]
        milli = [round(r.mg_dl * 1000) for r in inside]  # the CSV has 2 decimals: exact
        by_day: dict[int, tuple[list[int], list[int]]] = {}
        for t, v in zip(times_ms, milli, strict=True):
            offsets, values = by_day.setdefault(t // 86_400_000, ([], []))
            offsets.append(t % 86_400_000)
            values.append(v)
        days = [(d * 86_400_000, o, v) for d, (o, v) in sorted(by_day.items())]
        expected = _independent([r.mg_dl for r in inside], [r.time_us for r in inside], start)
        for summary in (
            summarize_series(times_ms, milli, start, end),
            summarize_days(days, start, end),
            summarize_days(days, start - 1, end),  # the general path: µs slots
        ):
            for name, value in expected.items():
                actual = (
                    summary.active_percent if name == "active" else getattr(summary.stats, name)
                )
                assert actual == pytest.approx(value, rel=1e-3, abs=1e-9), (subject, name)
        exact, floats = milli_stats(milli), glucose_stats([v / 1000 for v in milli])
        for name in ("mean", "sd", "lbgi", "hbgi", "gri", "mage", "time_in_range"):
            assert getattr(exact, name) == pytest.approx(getattr(floats, name), rel=1e-12)


def test_risk_index_matches_simglucose_per_reading_lbgi_hbgi() -> None:
    """simglucose (an independent implementation) logs LBGI/HBGI of each true BG value."""
    folder = require_shared("cgm", "simglucose")
    files = sorted(folder.glob("*_GuardianRT_raw.csv"))
    assert files
    for path in files:
        lines = path.read_text().splitlines()
        header = lines[0].split(",")
        bg, lbgi, hbgi = header.index("BG"), header.index("LBGI"), header.index("HBGI")
        for line in lines[1:]:
            cells = line.split(",")
            got = risk_index([float(cells[bg])])
            assert got == (
                pytest.approx(float(cells[lbgi]), rel=1e-9, abs=1e-12),
                pytest.approx(float(cells[hbgi]), rel=1e-9, abs=1e-12),
            ), (path.name, line)


def test_hourly_follows_half_hour_offsets_and_half_hour_dst() -> None:
    """Local hours checked against datetime.astimezone for zones whose changes are not on
    whole hours (Lord Howe shifts by 30 minutes on 2026-04-05; Kolkata is UTC+5:30)."""
    for name in ("Australia/Lord_Howe", "Asia/Kolkata", "Europe/Berlin"):
        zone = ZoneInfo(name)
        start = datetime(2026, 4, 3, tzinfo=UTC)
        readings = _series([100.0 + i % 7 for i in range(4 * 288)], start)
        expected: dict[int, int] = {}
        for r in readings:
            hour = r.time.astimezone(zone).hour
            expected[hour] = expected.get(hour, 0) + 1
        got = {h: s.count for h, s in hourly(readings, zone).items() if s.count}
        assert got == expected, name
