"""Server time: the one source of `meta.lastUpdated`, and the conversions to and from it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime

__all__ = ["from_http_date", "http_date", "instant", "now_micros", "parse_instant"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
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
