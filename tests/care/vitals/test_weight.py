"""Weight trend, % change, BMI and WHO categories against hand-worked expectations.

Restated from the sources rather than taken from the module:
- trend: EWMA with alpha = 1 - 0.5 ** (dt / half-life); the default half-life makes a
  daily weighing move the trend by exactly 10 % of the gap (Walker, The Hacker's Diet),
  i.e. alpha = 1 - 0.9 ** dt_days;
- BMI = kg / m² (WHO TRS 894, 2000; its worked example 70 kg, 1.75 m -> 22.9);
- WHO adult classes: < 18.50, 18.50-24.99, 25.00-29.99, 30.00-34.99, 35.00-39.99, ≥ 40.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from openrecord.care.vitals.weight import (
    BmiCategory,
    WeightReading,
    bmi,
    bmi_category,
    percent_change,
    percent_changes,
    trend_at,
    weight_trend,
)

T0 = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)


def _day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def test_bmi_matches_who_worked_example() -> None:
    assert bmi(70, 1.75) == pytest.approx(22.857, abs=1e-3)
    assert round(bmi(70, 1.75), 1) == 22.9


@pytest.mark.parametrize(("weight", "height"), [(0, 1.7), (-1, 1.7), (70, 0), (70, -1.7)])
def test_bmi_rejects_non_positive_input(weight: float, height: float) -> None:
    with pytest.raises(ValueError):
        bmi(weight, height)


@pytest.mark.parametrize(
    ("value", "category"),
    [
        (16.0, BmiCategory.UNDERWEIGHT),
        (18.49, BmiCategory.UNDERWEIGHT),
        (18.5, BmiCategory.NORMAL),
        (18.51, BmiCategory.NORMAL),
        (24.99, BmiCategory.NORMAL),
        (24.995, BmiCategory.NORMAL),
        (25.0, BmiCategory.OVERWEIGHT),
        (25.01, BmiCategory.OVERWEIGHT),
        (29.99, BmiCategory.OVERWEIGHT),
        (30.0, BmiCategory.OBESITY_CLASS_I),
        (30.01, BmiCategory.OBESITY_CLASS_I),
        (34.99, BmiCategory.OBESITY_CLASS_I),
        (35.0, BmiCategory.OBESITY_CLASS_II),
        (35.01, BmiCategory.OBESITY_CLASS_II),
        (39.99, BmiCategory.OBESITY_CLASS_II),
        (40.0, BmiCategory.OBESITY_CLASS_III),
        (40.01, BmiCategory.OBESITY_CLASS_III),
        (60.0, BmiCategory.OBESITY_CLASS_III),
    ],
)
def test_bmi_category_boundaries(value: float, category: BmiCategory) -> None:
    assert bmi_category(value) is category


@pytest.mark.parametrize(
    ("weight", "category"),
    # height 2 m: BMI = kg / 4, so these weights land exactly on each lower bound
    [
        (74.0, BmiCategory.NORMAL),
        (100.0, BmiCategory.OVERWEIGHT),
        (120.0, BmiCategory.OBESITY_CLASS_I),
        (140.0, BmiCategory.OBESITY_CLASS_II),
        (160.0, BmiCategory.OBESITY_CLASS_III),
        (73.96, BmiCategory.UNDERWEIGHT),  # 18.49
        (99.96, BmiCategory.NORMAL),  # 24.99
    ],
)
def test_bmi_from_weight_at_boundaries(weight: float, category: BmiCategory) -> None:
    assert bmi_category(bmi(weight, 2.0)) is category


def test_daily_trend_moves_ten_percent_of_the_gap() -> None:
    points = weight_trend([WeightReading(_day(n), kg) for n, kg in enumerate([100, 99, 98])])
    # 100; 100 + 0.1 * (99 - 100) = 99.9; 99.9 + 0.1 * (98 - 99.9) = 99.71
    assert [p.trend_kg for p in points] == pytest.approx([100.0, 99.9, 99.71])
    assert [p.kg for p in points] == [100, 99, 98]


def test_irregular_gap_weighs_the_reading_by_elapsed_time() -> None:
    points = weight_trend([WeightReading(_day(0), 100), WeightReading(_day(7), 90)])
    # alpha = 1 - 0.9 ** 7 = 1 - 0.4782969 = 0.5217031 -> 100 - 10 * 0.5217031
    assert points[-1].trend_kg == pytest.approx(94.782969)
    half_day = weight_trend([WeightReading(_day(0), 100), WeightReading(_day(0.5), 90)])
    # alpha = 1 - 0.9 ** 0.5 = 1 - 0.9486833 = 0.0513167
    assert half_day[-1].trend_kg == pytest.approx(99.486833)


def test_custom_half_life() -> None:
    readings = [WeightReading(_day(0), 80), WeightReading(_day(2), 70)]
    # one half-life elapsed: alpha = 0.5
    assert weight_trend(readings, half_life_days=2)[-1].trend_kg == pytest.approx(75.0)
    with pytest.raises(ValueError):
        weight_trend(readings, half_life_days=0)


def test_unsorted_input_and_same_instant_duplicate() -> None:
    points = weight_trend(
        [WeightReading(_day(1), 99), WeightReading(_day(0), 100), WeightReading(_day(1), 50)]
    )
    assert [p.time for p in points] == [_day(0), _day(1), _day(1)]
    assert points[1].trend_kg == pytest.approx(99.9)
    assert points[2].trend_kg == pytest.approx(99.9)  # dt = 0 does not move the trend


def test_no_readings() -> None:
    assert weight_trend([]) == []
    assert trend_at([], T0) is None
    assert percent_change([], 4) is None
    assert percent_changes([]) == {4: None, 12: None, 26: None}


def test_trend_at_holds_between_readings() -> None:
    points = weight_trend([WeightReading(_day(0), 100), WeightReading(_day(1), 90)])
    assert trend_at(points, _day(-0.01)) is None
    assert trend_at(points, _day(0)) == 100
    assert trend_at(points, _day(0.99)) == 100
    assert trend_at(points, _day(1)) == pytest.approx(99.0)
    assert trend_at(points, _day(30)) == pytest.approx(99.0)


def test_percent_change_on_a_step_series() -> None:
    # Daily weights: 100 kg on days 0-99, 90 kg on days 100-150. With alpha = 0.1 the
    # trend is 100 through day 99 and 90 + 10 * 0.9 ** (d - 99) on day d >= 100.
    readings = [WeightReading(_day(d), 100.0 if d < 100 else 90.0) for d in range(151)]
    points = weight_trend(readings)
    now = 90 + 10 * 0.9**51  # day 150
    four_weeks_ago = 90 + 10 * 0.9**23  # day 122
    twelve_weeks_ago = 100.0  # day 66
    changes = percent_changes(points)
    assert changes[4] == pytest.approx(100 * (now - four_weeks_ago) / four_weeks_ago)
    assert changes[12] == pytest.approx(100 * (now - twelve_weeks_ago) / twelve_weeks_ago)
    assert changes[12] == pytest.approx(-9.95, abs=0.01)
    assert changes[26] is None  # day -32: the data start on day 0
    assert percent_change(points, 12) == changes[12]


def test_percent_change_with_explicit_now_between_readings() -> None:
    readings = [WeightReading(_day(d), 100.0 if d < 100 else 90.0) for d in range(151)]
    points = weight_trend(readings)
    # now = day 130.5: trend as of day 130; 4 weeks earlier = day 102.5 -> trend of day 102
    expected_now = 90 + 10 * 0.9**31
    expected_start = 90 + 10 * 0.9**3
    assert percent_change(points, 4, now=_day(130.5)) == pytest.approx(
        100 * (expected_now - expected_start) / expected_start
    )


def test_window_must_reach_back_to_its_start() -> None:
    points = weight_trend([WeightReading(_day(0), 100), WeightReading(_day(28), 50)])
    # start of the 4-week window is exactly the first reading: included
    trend_now = 100 + (1 - 0.9**28) * (50 - 100)
    assert percent_change(points, 4) == pytest.approx(trend_now - 100)
    late = weight_trend(
        [WeightReading(_day(0) + timedelta(seconds=1), 100), WeightReading(_day(28), 50)]
    )
    assert percent_change(late, 4) is None
    assert percent_change(points, 4, now=_day(-1)) is None
