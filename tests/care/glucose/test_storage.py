"""The compact day form of CGM readings: grouping, one reading per instant, Low/High,
merging into a stored day, the packed bytes and the reading ids."""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime

import pytest

from openrecord.care.glucose.readings import Limit, Reading
from openrecord.care.glucose.storage import (
    DAY_MS,
    DayBlock,
    Series,
    group_by_day,
    merge_day,
    parse_reading_id,
    reading_id,
)

DAY0 = datetime(2025, 3, 30, tzinfo=UTC)
DAY0_MS = int(DAY0.timestamp()) * 1000
MIN_US = 60_000_000


def at(minutes: float) -> int:
    """µs of DAY0 + minutes."""
    return DAY0_MS * 1000 + round(minutes * MIN_US)


def test_readings_group_by_utc_day_as_offsets() -> None:
    readings = [
        Reading(at(0), 100.0),
        Reading(at(5), 101.5),
        Reading(at(1439), 180.0),
        Reading(at(1440), 181.0),  # the next UTC day's midnight
    ]
    days = group_by_day(readings)
    first = DAY0_MS // DAY_MS
    assert sorted(days) == [first, first + 1]
    times, milli, codes = days[first]
    assert times == [0, 300_000, 1439 * 60_000]
    assert milli == [100_000, 101_500, 180_000]
    assert codes == [0, 0, 0]
    assert days[first + 1] == ([0], [181_000], [0])


def test_one_reading_per_instant_the_last_wins_and_order_does_not_matter() -> None:
    readings = [
        Reading(at(10), 120.0),
        Reading(at(0), 100.0),
        Reading(at(10), 125.0),  # the same instant again: this one is kept
        Reading(at(5), 110.0),
    ]
    (times, milli, _), *_ = group_by_day(readings).values()
    assert times == [0, 300_000, 600_000]
    assert milli == [100_000, 110_000, 125_000]


def test_sub_millisecond_instants_share_their_millisecond() -> None:
    readings = [Reading(at(0) + 10, 100.0), Reading(at(0) + 900, 101.0)]
    ((times, milli, _),) = group_by_day(readings).values()
    assert times == [0] and milli == [101_000]


@pytest.mark.parametrize("value", [0.0, -5.0, 2000.5, math.nan, math.inf])
def test_implausible_values_are_refused(value: float) -> None:
    with pytest.raises(ValueError, match="not plausible"):
        group_by_day([Reading(at(0), 100.0), Reading(at(5), value)])


def test_low_and_high_are_kept_per_reading() -> None:
    readings = [
        Reading(at(0), 40.0, Limit.LOW),
        Reading(at(5), 120.0),
        Reading(at(10), 400.0, Limit.HIGH),
    ]
    day, entry = next(iter(group_by_day(readings).items()))
    block, added, changed = merge_day(day, entry, None)
    assert (added, changed) == (3, 0)
    assert block.limits == bytes([1, 0, 2])
    assert block.readings() == readings
    plain, _, _ = merge_day(day, ([0], [120_000], [0]), None)
    assert plain.limits is None  # a day without Low/High stores no flag bytes


def test_packed_bytes_are_little_endian_int32_and_round_trip() -> None:
    readings = [Reading(at(0), 99.086), Reading(at(7.5), 250.417, None)]
    day, entry = next(iter(group_by_day(readings).items()))
    block, _, _ = merge_day(day, entry, None)
    times, mg_dl, limits = block.packed()
    assert times == struct.pack("<2i", 0, 450_000)
    assert mg_dl == struct.pack("<2i", 99_086, 250_417)
    assert limits is None
    again = DayBlock.unpack(day, times, mg_dl, limits)
    assert again.readings() == readings


def test_merging_counts_new_and_changed_instants() -> None:
    day, first = next(iter(group_by_day([Reading(at(0), 100.0), Reading(at(5), 105.0)]).items()))
    stored, _, _ = merge_day(day, first, None)
    same, added, changed = merge_day(day, first, stored)
    assert (added, changed) == (0, 0) and same is stored  # nothing to write
    _, overlap = next(
        iter(group_by_day([Reading(at(5), 106.0), Reading(at(10), 110.0, Limit.HIGH)]).items())
    )
    merged, added, changed = merge_day(day, overlap, stored)
    assert (added, changed) == (1, 1)
    assert merged.readings() == [
        Reading(at(0), 100.0),
        Reading(at(5), 106.0),
        Reading(at(10), 110.0, Limit.HIGH),
    ]


def test_series_takes_the_part_of_a_day_inside_a_window() -> None:
    readings = [Reading(at(m), 100.0 + m) for m in range(0, 60, 5)]
    day, entry = next(iter(group_by_day(readings).items()))
    block, _, _ = merge_day(day, entry, None)
    series = Series()
    series.extend(block, 10 * 60_000, 20 * 60_000)  # [00:10, 00:20)
    assert series.readings() == readings[2:4]
    assert list(series.times_ms) == [DAY0_MS + 600_000, DAY0_MS + 900_000]


def test_reading_ids_name_series_and_millisecond() -> None:
    id = reading_id(17, at(5))
    assert id == f"cgm-17-{DAY0_MS + 300_000}"
    assert len(id) <= 64
    assert parse_reading_id(id) == (17, at(5))
    assert parse_reading_id("cgm-3--1000") == (3, -1_000_000)  # before 1970
    for other in ("cgm-", "cgm-x-1", "cgm-1", "cgm-1-", "abc", "cgm-1-2-3", "cgm--1-5"):
        assert parse_reading_id(other) is None, other
