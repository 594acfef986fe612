"""Format checks of FHIR primitive JSON values, split from `validation` as its own concern."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from openrecord.fhir.definitions import definitions
from openrecord.fhir.outcome import Severity

__all__ = ["Finding", "PrimitiveCheck", "check_nothing", "json_kind", "primitive_check"]

# A primitive check returns None when the JSON value is fine, else (severity, code, message).
Finding = tuple[Severity, str, str]
PrimitiveCheck = Callable[[Any], Finding | None]

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_INT_FLOOR = {"integer": _INT_MIN, "positiveInt": 1, "unsignedInt": 0}
_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# The spec's string/markdown regex `[ \r\n\t\S]+` together with the datatypes rule
# "no characters below U+0020 except tab, CR, LF" is exactly this exclusion.
_FORBIDDEN_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_NON_CAPTURING = re.compile(r"(?<!\\)\((?!\?)")
_BASE64 = re.compile(r"[0-9a-zA-Z+/=]*")


def check_nothing(v: Any) -> Finding | None:
    return None


def _check_boolean(v: Any) -> Finding | None:
    if v is True or v is False:
        return None
    return "error", "structure", f"expected a JSON boolean, got {json_kind(v)}"


def _check_decimal(v: Any) -> Finding | None:
    if type(v) is int or type(v) is float:
        return None
    return "error", "structure", f"expected a JSON number, got {json_kind(v)}"


def _integer_check(type_code: str) -> PrimitiveCheck:
    floor = _INT_FLOOR[type_code]

    def check(v: Any) -> Finding | None:
        if type(v) is not int:
            return "error", "structure", f"expected a JSON integer, got {json_kind(v)}"
        if not floor <= v <= _INT_MAX:
            return "error", "value", f"{v} is out of range for {type_code}"
        return None

    return check


def _not_a_string(v: Any) -> Finding:
    """What is wrong with a value that should be a non-empty JSON string."""
    if type(v) is not str:
        return "error", "structure", f"expected a JSON string, got {json_kind(v)}"
    return "error", "structure", "empty string (strings SHALL NOT be empty)"


def _check_xhtml(v: Any) -> Finding | None:
    if type(v) is not str or not v:
        return _not_a_string(v)
    if not v.startswith("<div"):
        return "error", "value", "xhtml must be a <div> element"
    return None


def _check_text(v: Any) -> Finding | None:
    """string: any characters but most control characters; no surrounding whitespace."""
    found = _check_markdown(v)
    if found is None and (v[0].isspace() or v[-1].isspace()):
        return "warning", "value", "string has leading or trailing whitespace"
    return found


def _check_markdown(v: Any) -> Finding | None:
    """markdown (and string): not empty, not only whitespace, no control characters."""
    if type(v) is not str or not v:
        return _not_a_string(v)
    if _FORBIDDEN_CONTROL.search(v):
        return "error", "value", "string contains control characters"
    if v.isspace():
        return "warning", "value", "string is only whitespace"
    return None


def _check_base64(v: Any) -> Finding | None:
    # Native form of the spec regex `(\s*([0-9a-zA-Z\+/=]){4}\s*)+`: the regex
    # backtracks badly on large attachments.
    if type(v) is not str or not v:
        return _not_a_string(v)
    compact = "".join(v.split())
    if len(compact) % 4 or not _BASE64.fullmatch(compact):
        return "error", "value", "invalid base64Binary"
    return None


_MONTH_DAYS = frozenset(
    f"{m:02d}-{d:02d}" for m, n in enumerate(_DAYS, start=1) for d in range(1, n + 1)
)


def _valid_day(v: str) -> bool:
    """The regexes allow 2021-02-31; a real calendar date is required."""
    if v[5:10] == "02-29":
        year = int(v[:4])
        return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return v[5:10] in _MONTH_DAYS


def _pattern_check(type_code: str, pattern: str) -> PrimitiveCheck:
    # Java-style regexes: `\s`/`\S` are ASCII classes there. Non-capturing groups
    # match the same strings and run about a third faster.
    rx = re.compile(_NON_CAPTURING.sub("(?:", pattern), re.ASCII)
    calendar = type_code in ("date", "dateTime", "instant")

    def check(v: Any) -> Finding | None:
        if type(v) is not str or not v:
            return _not_a_string(v)
        if rx.fullmatch(v) is None or (calendar and len(v) >= 10 and not _valid_day(v)):
            return "error", "value", f"{v!r} is not a valid {type_code}"
        return None

    return check


_CHECKS: dict[str, PrimitiveCheck] = {}


def primitive_check(type_code: str) -> PrimitiveCheck:
    found = _CHECKS.get(type_code)
    if found is None:
        found = _CHECKS[type_code] = _make_primitive_check(type_code)
    return found


def _make_primitive_check(type_code: str) -> PrimitiveCheck:
    if type_code == "boolean":
        return _check_boolean
    if type_code == "decimal":
        return _check_decimal
    if type_code in _INT_FLOOR:
        return _integer_check(type_code)
    if type_code == "xhtml":
        return _check_xhtml
    if type_code == "string":
        return _check_text
    if type_code == "markdown":
        return _check_markdown
    if type_code == "base64Binary":
        return _check_base64
    return _pattern_check(type_code, definitions().primitive_patterns[type_code].pattern)


def json_kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    return "an array" if isinstance(v, list) else "an object"
