"""Blood pressure categories, home averages and the high-home-average flag, worked by hand.

Restated from the sources rather than taken from the module:
- ACC/AHA 2017 (Whelton et al., Hypertension 2018, Table 6): normal < 120 and < 80;
  elevated 120-129 and < 80; stage 1 130-139 or 80-89; stage 2 ≥ 140 or ≥ 90; the
  higher category wins; hypertensive crisis > 180 and/or > 120 (AHA chart);
- home BP (Muntner et al., AHA statement, Hypertension 2019): mean of all readings,
  2 morning + 2 evening a day, at least 3 days / 12 readings;
- home 135/85 corresponds to office 140/90, home 130/80 to office 130/80 (2017 Table 11).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from openrecord.care.vitals.blood_pressure import (
    HOME_STAGE_1_THRESHOLD,
    BpCategory,
    BpReading,
    HomeAverage,
    bp_category,
    home_average,
    home_average_high,
)

T0 = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("systolic", "diastolic", "category"),
    [
        # systolic boundaries with a normal diastolic
        (119, 79, BpCategory.NORMAL),
        (120, 79, BpCategory.ELEVATED),
        (121, 79, BpCategory.ELEVATED),
        (129, 79, BpCategory.ELEVATED),
        (130, 79, BpCategory.STAGE_1),
        (131, 79, BpCategory.STAGE_1),
        (139, 79, BpCategory.STAGE_1),
        (140, 79, BpCategory.STAGE_2),
        (141, 79, BpCategory.STAGE_2),
        (180, 79, BpCategory.STAGE_2),
        (181, 79, BpCategory.CRISIS),
        # diastolic boundaries with a normal systolic: no "elevated" by diastolic
        (119, 80, BpCategory.STAGE_1),
        (119, 81, BpCategory.STAGE_1),
        (119, 89, BpCategory.STAGE_1),
        (119, 90, BpCategory.STAGE_2),
        (119, 91, BpCategory.STAGE_2),
        (119, 120, BpCategory.STAGE_2),
        (119, 121, BpCategory.CRISIS),
        # the higher of the two categories wins
        (125, 85, BpCategory.STAGE_1),
        (125, 95, BpCategory.STAGE_2),
        (145, 70, BpCategory.STAGE_2),
        (135, 125, BpCategory.CRISIS),
        (200, 110, BpCategory.CRISIS),
        # averages between whole mm Hg
        (119.9, 79.9, BpCategory.NORMAL),
        (129.5, 79.5, BpCategory.ELEVATED),
        (129.9, 80.0, BpCategory.STAGE_1),
        (180.5, 100, BpCategory.CRISIS),
    ],
)
def test_acc_aha_category(systolic: float, diastolic: float, category: BpCategory) -> None:
    assert bp_category(systolic, diastolic) is category


def _week(
    morning: tuple[float, float], evening: tuple[float, float], days: int = 7
) -> list[BpReading]:
    """Two readings a minute apart each morning (07:00) and evening (19:00)."""
    readings = []
    for day in range(days):
        for hour, (sbp, dbp) in ((7, morning), (19, evening)):
            for minute in (0, 1):
                when = T0 + timedelta(days=day, hours=hour, minutes=minute)
                readings.append(BpReading(when, sbp, dbp))
    return readings


def test_week_protocol_average() -> None:
    average = home_average(_week((140, 90), (130, 80)))
    # 14 readings of 140/90 and 14 of 130/80 -> 135/85
    assert average == HomeAverage(135.0, 85.0, readings=28, days=7, meets_minimum=True)
    assert home_average_high(average)


def test_varied_readings_mean() -> None:
    readings = [
        BpReading(T0, 120, 70),
        BpReading(T0 + timedelta(minutes=1), 124, 76),
        BpReading(T0 + timedelta(hours=12), 131, 83),
    ]
    average = home_average(readings)
    assert average is not None
    assert average.systolic == pytest.approx(125.0)  # (120 + 124 + 131) / 3
    assert average.diastolic == pytest.approx(76.333333)  # (70 + 76 + 83) / 3
    assert (average.readings, average.days, average.meets_minimum) == (3, 1, False)


@pytest.mark.parametrize(
    ("systolic", "diastolic", "high"),
    [
        (134.9, 84.9, False),
        (135.0, 70.0, True),
        (135.1, 70.0, True),
        (120.0, 85.0, True),
        (120.0, 85.1, True),
        (134.0, 84.0, False),
    ],
)
def test_home_high_flag_at_135_85(systolic: float, diastolic: float, high: bool) -> None:
    average = HomeAverage(systolic, diastolic, readings=28, days=7, meets_minimum=True)
    assert home_average_high(average) is high


def test_home_flag_just_below_from_readings() -> None:
    # morning 139/89, evening 130/80 -> 134.5/84.5: below 135/85
    average = home_average(_week((139, 89), (130, 80)))
    assert average is not None
    assert (average.systolic, average.diastolic) == (134.5, 84.5)
    assert not home_average_high(average)
    assert bp_category(average.systolic, average.diastolic) is BpCategory.STAGE_1


def test_home_flag_with_the_2017_home_stage_1_threshold() -> None:
    below = HomeAverage(129.9, 79.9, readings=12, days=3, meets_minimum=True)
    assert not home_average_high(below, HOME_STAGE_1_THRESHOLD)
    assert home_average_high(HomeAverage(130, 70, 12, 3, True), HOME_STAGE_1_THRESHOLD)
    assert home_average_high(HomeAverage(110, 80, 12, 3, True), HOME_STAGE_1_THRESHOLD)


def test_minimum_data() -> None:
    three_days = _week((120, 70), (120, 70), days=3)
    assert len(three_days) == 12
    enough = home_average(three_days)
    assert enough is not None and enough.meets_minimum
    eleven = home_average(three_days[1:])
    assert eleven is not None and (eleven.readings, eleven.meets_minimum) == (11, False)
    # 12 readings on 2 days: enough readings, too few days
    two_days = _week((120, 70), (120, 70), days=2) + [
        BpReading(T0 + timedelta(days=1, hours=21, minutes=m), 120, 70) for m in range(4)
    ]
    crowded = home_average(two_days)
    assert crowded is not None and (crowded.readings, crowded.days) == (12, 2)
    assert not crowded.meets_minimum


def test_period_is_half_open() -> None:
    readings = [
        BpReading(T0, 150, 95),
        BpReading(T0 + timedelta(days=1), 120, 70),
        BpReading(T0 + timedelta(days=2), 110, 60),
    ]
    average = home_average(readings, start=T0 + timedelta(days=1), end=T0 + timedelta(days=2))
    assert average is not None
    assert (average.systolic, average.diastolic, average.readings) == (120, 70, 1)
    assert home_average(readings, start=T0 + timedelta(days=3)) is None
    assert home_average(readings, end=T0) is None


def test_drop_first_day() -> None:
    readings = _week((130, 80), (130, 80))
    first_day = [BpReading(T0 + timedelta(hours=8), 170, 100)]
    average = home_average(readings + first_day, drop_first_day=True)
    assert average == HomeAverage(130.0, 80.0, readings=24, days=6, meets_minimum=True)
    with_first = home_average(readings + first_day)
    # (28 * 130 + 170) / 29 and (28 * 80 + 100) / 29
    assert with_first is not None
    assert with_first.systolic == pytest.approx(3810 / 29)
    assert with_first.diastolic == pytest.approx(2340 / 29)
    assert home_average(readings[:4], drop_first_day=True) is None


def test_no_readings() -> None:
    assert home_average([]) is None
    assert home_average([], drop_first_day=True) is None


def test_days_are_local_calendar_days() -> None:
    new_york = ZoneInfo("America/New_York")
    # 23:30 and 00:30 New York time: the same UTC date, two local days
    late = datetime(2026, 3, 2, 23, 30, tzinfo=new_york)
    early = datetime(2026, 3, 3, 0, 30, tzinfo=new_york)
    assert late.astimezone(UTC).date() == early.astimezone(UTC).date()
    average = home_average([BpReading(late, 120, 80), BpReading(early, 130, 90)])
    assert average is not None and average.days == 2
