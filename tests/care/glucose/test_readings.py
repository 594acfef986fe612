"""Readings: exact instants and the mg/dL <-> mmol/L factor of issue 6 (18.0156)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from openrecord.care.glucose.readings import (
    Limit,
    Reading,
    datetime_to_us,
    mgdl_to_mmoll,
    mmoll_to_mgdl,
    us_to_datetime,
)


def test_conversion_uses_18_0156() -> None:
    assert mmoll_to_mgdl(10.0) == pytest.approx(180.156)
    assert mgdl_to_mmoll(180.156) == pytest.approx(10.0)
    assert mgdl_to_mmoll(70.0) == pytest.approx(70 / 18.0156)
    assert mgdl_to_mmoll(mmoll_to_mgdl(5.5)) == pytest.approx(5.5)


def test_instants_are_exact_microseconds() -> None:
    moment = datetime(2026, 3, 8, 7, 0, 0, 123456, tzinfo=UTC)
    # 2026-03-08 is day 20,520 since 1970-01-01
    assert datetime_to_us(moment) == (20520 * 86400 + 7 * 3600) * 1_000_000 + 123456
    assert us_to_datetime(datetime_to_us(moment)) == moment
    plus_two = datetime(2026, 3, 8, 9, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert datetime_to_us(plus_two) == datetime_to_us(moment)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError):
        datetime_to_us(datetime(2026, 1, 1))


def test_reading_keeps_its_limit_flag() -> None:
    reading = Reading.at(datetime(2026, 1, 1, tzinfo=UTC), 40.0, Limit.LOW)
    assert reading.limit is Limit.LOW
    assert reading.mmol_l == pytest.approx(40 / 18.0156)
    assert reading.time == datetime(2026, 1, 1, tzinfo=UTC)
