"""One CGM reading, held compactly, and the mg/dL ↔ mmol/L conversion.

A year of 5-minute readings is ~105,000 of these per patient, so a reading is a
slotted frozen dataclass of three fields: UTC time in integer microseconds since the
Unix epoch (the same unit as the store's `idx_date` columns), the value in mg/dL as
a float, and which sensor limit — if any — the device reported instead of a number.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

__all__ = [
    "MGDL_PER_MMOLL",
    "Limit",
    "Reading",
    "datetime_to_us",
    "mgdl_to_mmoll",
    "mmoll_to_mgdl",
    "us_to_datetime",
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


@dataclass(frozen=True, slots=True)
class Reading:
    """A sensor glucose value at an instant.

    `mg_dl` of a reading with a `limit` is the device's limit (e.g. 40 for a Dexcom
    "Low"), so metrics count it in the right range while the flag keeps the fact that
    the real value lay beyond it.
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
