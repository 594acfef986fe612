"""One CGM reading, held compactly, and the mg/dL ↔ mmol/L conversion.

A year of 5-minute readings is ~105,000 of these per patient, so a reading is a
named tuple of three fields: UTC time in integer microseconds since the
Unix epoch (the same unit as the store's `idx_date` columns), the value in mg/dL as
a float, and which sensor limit — if any — the device reported instead of a number.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from enum import Enum
from typing import NamedTuple

__all__ = [
    "MGDL_PER_MMOLL",
    "Limit",
    "Reading",
    "datetime_to_us",
    "mgdl_to_mmoll",
    "mmoll_to_mgdl",
    "us_to_datetime",
    "utc_offsets",
]

MGDL_PER_MMOLL = 18.0156
"""mg/dL per mmol/L of glucose (molar mass 180.156 g/mol), the factor issue 6 fixes."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Limit(Enum):
    """A device's "Low"/"High": the true value is beyond what the sensor can measure."""

    LOW = "low"
    HIGH = "high"


def mgdl_to_mmoll(mg_dl: float) -> float:
    """mg/dL → mmol/L."""
    return mg_dl / MGDL_PER_MMOLL


def mmoll_to_mgdl(mmol_l: float) -> float:
    """mmol/L → mg/dL."""
    return mmol_l * MGDL_PER_MMOLL


def datetime_to_us(moment: datetime) -> int:
    """An aware datetime → integer microseconds since the epoch (exact, no float)."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no defined instant; attach a time zone")
    return (moment - _EPOCH) // timedelta(microseconds=1)


def us_to_datetime(time_us: int) -> datetime:
    """Microseconds since the epoch → an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=time_us)


class Reading(NamedTuple):
    """A sensor glucose value at an instant.

    `mg_dl` of a reading with a `limit` is the device's limit (e.g. 40 for a Dexcom
    "Low"), so metrics count it in the right range while the flag keeps the fact that
    the real value lay beyond it. A named tuple: immutable, and built ~3x faster than
    a frozen dataclass, which counts at 26 million readings (benchmarks/cgm_scale.py).
    """

    time_us: int
    mg_dl: float
    limit: Limit | None = None

    @classmethod
    def at(cls, moment: datetime, mg_dl: float, limit: Limit | None = None) -> Reading:
        """A reading from an aware datetime."""
        return cls(datetime_to_us(moment), mg_dl, limit)

    @property
    def time(self) -> datetime:
        """The instant as an aware UTC datetime."""
        return us_to_datetime(self.time_us)

    @property
    def mmol_l(self) -> float:
        """The value in mmol/L."""
        return mgdl_to_mmoll(self.mg_dl)


_HOUR_US = 3_600_000_000


def utc_offsets(times_us: Sequence[int], zone: tzinfo) -> list[int]:
    """The zone's UTC offset (µs) at each instant: local time is `time_us + offset`.

    Months of readings are hundreds of thousands of instants: the zone is asked once
    per UTC hour, and per instant only in an hour where its offset changes (DST).
    """
    epoch = datetime.fromtimestamp(0, UTC)
    unit = timedelta(microseconds=1)

    def offset(time_us: int) -> int:
        local = (epoch + timedelta(microseconds=time_us)).astimezone(zone)
        return (local.utcoffset() or timedelta(0)) // unit

    per_hour: dict[int, int | None] = {}
    out: list[int] = []
    for time_us in times_us:
        hour = time_us // _HOUR_US
        if hour not in per_hour:
            first, last = offset(hour * _HOUR_US), offset((hour + 1) * _HOUR_US - 1)
            per_hour[hour] = first if first == last else None  # None: a change inside
        known = per_hour[hour]
        out.append(known if known is not None else offset(time_us))
    return out
