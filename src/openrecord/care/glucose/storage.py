"""The compact form of CGM readings: one patient-day as three packed arrays.

At 288 readings a day per patient, a FHIR Observation per reading costs ~1.5 KB of
JSON plus a dozen index rows; a day packed here costs ~2.3 KB in all. A day is:

- `times`: int32 little-endian, milliseconds since the UTC midnight that starts the
  day (0 ≤ t < 86,400,000), ascending, each instant once;
- `mg_dl`: int32 little-endian, the value in thousandths of a mg/dL (the precision
  the sensor-reading Observations always carried: `round(mg_dl, 3)`);
- `limits`: None when no reading of the day is a sensor "Low"/"High", else one byte
  per reading (0 none, 1 low, 2 high).

Instants are kept to the millisecond (every supported source has at most that
precision). Pure: no I/O; service/glucose.py reads and writes the rows.
"""

from __future__ import annotations

import math
import sys
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice, repeat
from operator import add, floordiv, lt, mul, sub

from openrecord.care.glucose.readings import Limit, Reading

__all__ = [
    "DAY_MS",
    "MAX_MG_DL",
    "DayBlock",
    "Series",
    "group_by_day",
    "merge_day",
    "parse_reading_id",
    "reading_id",
]

DAY_MS = 86_400_000
_DAY_US = DAY_MS * 1000
MAX_MG_DL = 2000.0
"""Values above this (or ≤ 0, or not finite) are refused: no sensor reports them."""
_LIMIT_CODE = {None: 0, Limit.LOW: 1, Limit.HIGH: 2}
_CODE_LIMIT: tuple[Limit | None, ...] = (None, Limit.LOW, Limit.HIGH)
_SWAP = sys.byteorder != "little"
_ID_PREFIX = "cgm-"


def _int32(data: bytes) -> array[int]:
    out = array("i")
    out.frombytes(data)
    if _SWAP:
        out.byteswap()
    return out


def _bytes(values: array[int]) -> bytes:
    if _SWAP:
        values = array("i", values)
        values.byteswap()
    return values.tobytes()


@dataclass(slots=True)
class DayBlock:
    """One patient-day of readings, packed as stored (see the module docstring)."""

    day: int  # days since 1970-01-01 (UTC)
    times: array[int]  # ms since the day's start, ascending, unique
    milli: array[int]  # thousandths of a mg/dL
    limits: bytes | None = None

    @classmethod
    def unpack(cls, day: int, times: bytes, mg_dl: bytes, limits: bytes | None) -> DayBlock:
        return cls(
            day, _int32(bytes(times)), _int32(bytes(mg_dl)), bytes(limits) if limits else None
        )

    def packed(self) -> tuple[bytes, bytes, bytes | None]:
        """(times, mg_dl, limits) as stored."""
        limits = self.limits if self.limits and any(self.limits) else None
        return _bytes(self.times), _bytes(self.milli), limits

    def __len__(self) -> int:
        return len(self.times)

    def time_us(self, i: int) -> int:
        return (self.day * DAY_MS + self.times[i]) * 1000

    def reading(self, i: int) -> Reading:
        limit = _CODE_LIMIT[self.limits[i]] if self.limits else None
        return Reading(self.time_us(i), self.milli[i] / 1000, limit)

    def readings(self) -> list[Reading]:
        return [self.reading(i) for i in range(len(self.times))]


@dataclass(slots=True)
class Series:
    """A patient's readings in time order, as columns (the metrics' fast input)."""

    times_ms: array[int] = field(default_factory=lambda: array("q"))  # since the epoch
    milli: array[int] = field(default_factory=lambda: array("i"))  # thousandths of mg/dL
    limits: bytearray = field(default_factory=bytearray)  # 0 none, 1 low, 2 high

    def extend(self, block: DayBlock, lo_ms: int = 0, hi_ms: int = DAY_MS) -> None:
        """Append the block's readings with lo_ms ≤ time (ms into the day) < hi_ms."""
        times = block.times
        a = 0 if lo_ms <= 0 else bisect_left(times, lo_ms)
        b = len(times) if hi_ms >= DAY_MS else bisect_left(times, hi_ms)
        if a >= b:
            return
        whole = a == 0 and b == len(times)
        part = times if whole else times[a:b]
        self.times_ms.extend(map(add, part, repeat(block.day * DAY_MS)))
        self.milli.extend(block.milli if whole else block.milli[a:b])
        self.limits.extend(block.limits[a:b] if block.limits else bytes(b - a))

    def append(self, reading: Reading) -> None:
        """Add one reading (after the last one; its instant to the ms)."""
        self.times_ms.append(reading.time_us // 1000)
        self.milli.append(math.floor(reading.mg_dl * 1000 + 0.5))
        self.limits.append(_LIMIT_CODE[reading.limit])

    def __len__(self) -> int:
        return len(self.times_ms)

    @property
    def times_us(self) -> list[int]:
        return [t * 1000 for t in self.times_ms]

    def readings(self) -> list[Reading]:
        codes = _CODE_LIMIT
        return [
            Reading(t * 1000, v / 1000, codes[c])
            for t, v, c in zip(self.times_ms, self.milli, self.limits, strict=True)
        ]


Entry = tuple[list[int], list[int], list[int]]  # ms into the day, milli mg/dL, limit codes


def group_by_day(readings: Sequence[Reading]) -> dict[int, Entry]:
    """Readings by UTC day as sorted columns, one per instant (to the ms; the last
    reading of an instant wins). Column work runs in C (`map`, `zip`): this is the
    import's per-reading cost.

    ValueError for a value that is not a glucose concentration (≤ 0, > 2000 mg/dL, NaN)."""
    if not readings:
        return {}
    times_us, values, limits = zip(*readings, strict=True)
    if any(map(math.isnan, values)) or min(values) <= 0 or max(values) > MAX_MG_DL:
        bad = next(v for v in values if not 0 < v <= MAX_MG_DL)
        raise ValueError(f"a glucose value of {bad!r} mg/dL is not plausible")
    ms: list[int] = list(map(floordiv, times_us, repeat(1000)))
    milli = list(map(math.floor, map(add, map(mul, values, repeat(1000.0)), repeat(0.5))))
    codes = list(map(_LIMIT_CODE.__getitem__, limits))
    if not all(map(lt, ms, islice(ms, 1, None))):  # unsorted or an instant twice
        last = dict(zip(ms, zip(milli, codes, strict=True), strict=True))
        ms = sorted(last)
        milli = [last[t][0] for t in ms]
        codes = [last[t][1] for t in ms]
    out: dict[int, Entry] = {}
    at, n = 0, len(ms)
    while at < n:
        day = ms[at] // DAY_MS
        base = day * DAY_MS
        end = bisect_left(ms, base + DAY_MS, at)
        out[day] = (
            list(map(sub, ms[at:end], repeat(base))),
            milli[at:end],
            codes[at:end],
        )
        at = end
    return out


def merge_day(day: int, incoming: Entry, stored: DayBlock | None) -> tuple[DayBlock, int, int]:
    """The day's block after adding `incoming` to `stored`: (block, new instants,
    instants whose value or limit changed). The incoming reading of an instant wins."""
    times, milli, codes = incoming
    if stored is None or not len(stored):
        flags = bytes(codes) if any(codes) else None
        return DayBlock(day, array("i", times), array("i", milli), flags), len(times), 0
    old_codes = stored.limits or bytes(len(stored))
    merged = dict(zip(stored.times, zip(stored.milli, old_codes, strict=True), strict=True))
    before = len(merged)
    new = dict(zip(times, zip(milli, codes, strict=True), strict=True))
    changed = sum(1 for t, e in new.items() if t in merged and merged[t] != e)
    if changed == 0 and len(merged.keys() | new.keys()) == before:
        return stored, 0, 0
    merged.update(new)
    order = sorted(merged)
    entries = [merged[t] for t in order]
    flags = bytes(e[1] for e in entries) if any(e[1] for e in entries) else None
    block = DayBlock(day, array("i", order), array("i", [e[0] for e in entries]), flags)
    return block, len(merged) - before, changed


def reading_id(series: int, time_us: int) -> str:
    """The Observation id of a stored reading: `cgm-<series>-<ms since the epoch>`
    (at most 4 + 19 + 1 + 20 characters, within FHIR's 64)."""
    return f"{_ID_PREFIX}{series}-{time_us // 1000}"


def parse_reading_id(id: str) -> tuple[int, int] | None:
    """(series, time µs) of a reading id, or None when `id` is not one."""
    if not id.startswith(_ID_PREFIX):
        return None
    series, sep, ms = id[len(_ID_PREFIX) :].partition("-")
    if (
        not sep
        or not series.isdigit()
        or not (ms.isdigit() or (ms[:1] == "-" and ms[1:].isdigit()))
    ):
        return None
    if len(series) > 18 or len(ms) > 19:
        return None
    return int(series), int(ms) * 1000
