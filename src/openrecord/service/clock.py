"""Server time: the one source of `meta.lastUpdated`, and the conversions to and from it."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta, tzinfo
from email.utils import format_datetime, parsedate_to_datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "configured_timezone",
    "from_http_date",
    "http_date",
    "instant",
    "now_micros",
    "parse_instant",
    "timezone_named",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timezone_named(name: str) -> tzinfo:
    """An IANA time zone ("Europe/Paris") or "UTC"; ValueError for an unknown name."""
    if name in ("", "UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name like Europe/Paris)"
        ) from None


def configured_timezone() -> tzinfo:
    """The server's time zone, `OPENRECORD_TIMEZONE` (default UTC).

    FHIR reads a date or time written without a zone as local to the server
    (search.html#date): the index stores such values, and searches read such criteria,
    in this zone. Every process (server workers, import, reindex) takes it from the
    same setting; changing it calls for a reindex of data written before.
    """
    return timezone_named(os.environ.get("OPENRECORD_TIMEZONE", ""))


_last = 0


def now_micros() -> int:
    """Microseconds since the epoch, strictly increasing within this process."""
    global _last
    t = time.time_ns() // 1000
    if t <= _last:
        t = _last + 1
    _last = t
    return t


def instant(micros: int) -> str:
    """A FHIR `instant` in UTC with microseconds, e.g. 2026-11-28T19:22:35.123456Z."""
    seconds, fraction = divmod(micros, 1_000_000)
    t = time.gmtime(seconds)  # several times faster than datetime.strftime, on every write
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{fraction:06d}Z"
    )


def parse_instant(text: str) -> int:
    """Microseconds since the epoch of a FHIR instant/dateTime with a zone."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def http_date(micros: int) -> str:
    """An HTTP-date (RFC 9110) for Last-Modified."""
    return format_datetime(_EPOCH + timedelta(microseconds=micros), usegmt=True)


def from_http_date(text: str) -> int | None:
    """Microseconds of an HTTP-date (If-Modified-Since), or None when unparsable."""
    try:
        dt = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
