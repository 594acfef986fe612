"""Value normalizations shared by index extraction and query parsing.

A search matches only if the index side (`search_index`) and the query side
(`search_query`) turn values into the same shapes: the same string folding, the
same implicit date ranges (in microseconds since the epoch, UTC, inclusive) and
the same significant-figure ranges for numbers. Both sides call this module.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from functools import lru_cache
from typing import NamedTuple

__all__ = [
    "DATE_MAX",
    "DATE_MIN",
    "OF_TYPE",
    "ParsedReference",
    "date_range",
    "normalize_string",
    "number_range",
    "of_type_system",
    "parse_reference",
]

# Open ends of a Period (missing start or end), as the store's bigint columns hold them.
DATE_MIN = -(2**63)
DATE_MAX = 2**63 - 1

# `identifier:of-type=S|C|V` (an Identifier whose type has coding S|C and whose value is
# V) is indexed as one more token of the parameter: system OF_TYPE + "S|C", code V. The
# control character keeps these rows out of reach of every other token search form.
OF_TYPE = "\x1f"


def of_type_system(system: str | None, code: str) -> str:
    return f"{OF_TYPE}{system or ''}|{code}"


_EPOCH_ORDINAL = 719163  # date(1970, 1, 1).toordinal()
_US_PER_DAY = 86_400_000_000


def normalize_string(value: str) -> str:
    """Casefold, strip accents (NFKD without combining marks), collapse whitespace.

    This is the form `name=joe` and the indexed "Joé  Smith" are both compared in.
    """
    if value.isascii():
        folded = value.lower()
    else:
        decomposed = unicodedata.normalize("NFKD", value.casefold())
        folded = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(folded.split())


def _offset_micros(zone: str | None, tz: tzinfo, y: int, mo: int, d: int, h: int, mi: int) -> int:
    """The UTC offset of a local time: written in the value, or that of `tz` then."""
    if zone is not None:
        if zone == "Z":
            return 0
        sign = -1 if zone[0] == "-" else 1
        return sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60) * 1_000_000
    if tz is UTC:
        return 0
    try:
        off = datetime(y, mo, d, h, mi, tzinfo=tz).utcoffset()
    except (ValueError, OverflowError):
        return 0
    return 0 if off is None else (off.days * 86400 + off.seconds) * 1_000_000


@lru_cache(maxsize=16384)
def date_range(text: str, tz: tzinfo = UTC) -> tuple[int, int] | None:
    """The inclusive range a date, dateTime or instant covers, or None if it is not one.

    Precision gives the range: "2013" is all of 2013, "2013-01-14T10:00:00" that
    second, a fraction of 3 digits that millisecond. Values without a zone are
    local times in `tz`. This runs for every date of every write: hand-written
    checks rather than a regex (several times slower), and cached, since a
    record's resources share their timestamps (80% hits on Synthea records).
    """
    n = len(text)
    if not text.isascii():
        return None
    if n in (4, 7, 10):
        ys, mos, ds = text[0:4], text[5:7], text[8:10]
        if (
            ys.isdigit()
            and (n == 4 or (text[4] == "-" and mos.isdigit()))
            and (n != 10 or (text[7] == "-" and ds.isdigit()))
        ):
            return _date_only(
                int(ys), int(mos) if n > 4 else None, int(ds) if n == 10 else None, tz
            )
        return None
    if n < 16 or text[4] != "-" or text[7] != "-" or text[10] != "T" or text[13] != ":":
        return None
    if n == 16 or text[16] != ":":  # minutes only (allowed in search values)
        return _minutes(text, tz)
    span = 1_000_000
    i = 19
    if n > 19 and text[19] == ".":
        j = 20
        while j < n and text[j] in "0123456789":
            j += 1
        digits = j - 20
        if digits == 0:
            return None
        span = 10 ** (6 - digits) if digits < 6 else 1
        i = j
    zone = text[i:]
    if zone and zone != "Z" and (len(zone) != 6 or zone[0] not in "+-" or zone[3] != ":"):
        return None
    try:  # fromisoformat checks the digits; the layout is checked above
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    local = (
        (dt.toordinal() - _EPOCH_ORDINAL) * 86400 + dt.hour * 3600 + dt.minute * 60 + dt.second
    ) * 1_000_000 + dt.microsecond
    off = dt.utcoffset()
    if off is not None:
        low = local - ((off.days * 86400 + off.seconds) * 1_000_000 + off.microseconds)
    else:
        low = local - _offset_micros(None, tz, dt.year, dt.month, dt.day, dt.hour, dt.minute)
    return low, low + span - 1


def _minutes(text: str, tz: tzinfo) -> tuple[int, int] | None:
    zone = text[16:]
    if zone and zone != "Z" and (len(zone) != 6 or zone[0] not in "+-" or zone[3] != ":"):
        return None
    if not (text[0:4] + text[5:7] + text[8:10] + text[11:13] + text[14:16]).isdigit():
        return None
    y, mo, d = int(text[0:4]), int(text[5:7]), int(text[8:10])
    h, mi = int(text[11:13]), int(text[14:16])
    if h > 23 or mi > 59:
        return None
    try:
        ordinal = date(y, mo, d).toordinal()
    except ValueError:
        return None
    local = ((ordinal - _EPOCH_ORDINAL) * 86400 + h * 3600 + mi * 60) * 1_000_000
    low = local - _offset_micros(zone or None, tz, y, mo, d, h, mi)
    return low, low + 60_000_000 - 1


def _date_only(y: int, mo: int | None, d: int | None, tz: tzinfo) -> tuple[int, int] | None:
    try:
        start = date(y, 1 if mo is None else mo, 1 if d is None else d)
    except ValueError:
        return None
    ordinal = start.toordinal()
    if d is not None:
        end_ordinal = ordinal + 1
    elif mo is not None:
        end_ordinal = ordinal + _days_in_month(y, mo)
    else:
        end_ordinal = ordinal + (366 if _is_leap(y) else 365)
    low = (ordinal - _EPOCH_ORDINAL) * _US_PER_DAY
    high = (end_ordinal - _EPOCH_ORDINAL) * _US_PER_DAY - 1
    if tz is not UTC:
        low -= _offset_micros(None, tz, y, mo or 1, d or 1, 0, 0)
        end = date.fromordinal(min(end_ordinal, _MAX_ORDINAL))
        high -= _offset_micros(None, tz, end.year, end.month, end.day, 0, 0)
    return low, high


_MAX_ORDINAL = date.max.toordinal()
_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _is_leap(y: int) -> bool:
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def _days_in_month(y: int, mo: int) -> int:
    return 29 if mo == 2 and _is_leap(y) else _DAYS[mo]


_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def number_range(value: int | float | Decimal | str) -> tuple[float, float, float] | None:
    """(value, low, high): the value and the implicit range of its significant figures.

    "100" is 99.5 to 100.5, "100.00" 99.995 to 100.005, "1e2" 50 to 150 (one
    significant figure: half a unit of the last significant digit either side).
    A JSON number already parsed to float keeps only the digits its shortest
    repr shows (1.50 reads as 1.5). Returns None for text that is not a number.
    """
    kind = type(value)
    if kind is float:
        assert isinstance(value, float)
        text = repr(value)
        dot = text.find(".")
        if dot > 0 and "e" not in text:
            half = _HALVES[len(text) - dot - 1]
            return value, value - half, value + half
        if value != value or value in (_INF, -_INF):
            return None
        dec = Decimal(text)
    elif kind is int:
        assert isinstance(value, int)
        return float(value), value - 0.5, value + 0.5
    elif kind is bool:
        return None
    elif isinstance(value, Decimal):
        dec = value
        if not dec.is_finite():
            return None
    else:
        if not isinstance(value, str) or _NUMBER_RE.fullmatch(value) is None:
            return None
        dec = Decimal(value)
    exponent = dec.as_tuple().exponent
    assert isinstance(exponent, int)
    # the same float arithmetic as the fast paths, so equal inputs give equal ranges
    half = _HALVES[-exponent] if -19 <= exponent <= 0 else 0.5 * 10.0**exponent
    number = float(dec)
    return number, number - half, number + half


_HALVES = tuple(0.5 * 10.0**-i for i in range(20))
_INF = float("inf")


class ParsedReference(NamedTuple):
    """A reference string taken apart: local `Type/id` or absolute URL (with its `Type/id`)."""

    type: str | None
    id: str | None
    url: str | None
    version: str | None


def _is_id(s: str) -> bool:
    return 0 < len(s) <= 64 and s.isascii() and s.replace("-", "").replace(".", "").isalnum()


@lru_cache(maxsize=65536)
def parse_reference(text: str, resource_types: frozenset[str]) -> ParsedReference | None:
    """Split `Patient/1`, `Patient/1/_history/2`, `http://x/fhir/Patient/1` or `urn:uuid:…`.

    Relative references give type and id; absolute ones keep the URL (without
    `/_history/n`) and, when they end in a FHIR `Type/id`, the type and id too. Conditional references
    (`Patient?identifier=…`) and anything unparseable give None. Cached: the same
    patient and encounter references recur across a whole record.
    """
    if not text or "?" in text:
        return None
    absolute = ":" in text
    parts = text.split("/")
    version = None
    if len(parts) >= 4 and parts[-2] == "_history" and _is_id(parts[-1]):
        version = parts[-1]
        parts = parts[:-2]
    if len(parts) >= 2 and parts[-2] in resource_types and _is_id(parts[-1]):
        if not absolute and len(parts) != 2:
            return None  # "foo/Patient/1" is neither relative nor absolute
        url = ("/".join(parts) if version else text) if absolute else None
        return ParsedReference(parts[-2], parts[-1], url, version)
    if absolute:
        return ParsedReference(None, None, text, None)
    return None
