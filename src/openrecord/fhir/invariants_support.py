"""Shared helpers for the native invariant checks, kept apart so each check table can use them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import cache
from typing import Any

from openrecord.fhir.definitions import definitions

__all__ = [
    "UCUM",
    "Json",
    "NativeCheck",
    "any_of",
    "as_list",
    "choice_keys",
    "compare_datetimes",
    "field_values",
    "given",
    "has_choice",
    "has_coding",
    "implies",
    "later_or_same",
    "not_both",
    "present",
    "xor",
]

Json = dict[str, Any]
NativeCheck = Callable[[Json, Json], bool]  # (element value, %resource) -> holds

UCUM = "http://unitsofmeasure.org"


def present(obj: Json, name: str) -> bool:
    """FHIRPath `name.exists()`: a primitive exists with a value or just extensions."""
    return name in obj or "_" + name in obj


def as_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


def has_coding(concept: Any, system: str, codes: Iterable[str]) -> bool:
    if not isinstance(concept, dict):
        return False
    wanted = set(codes)
    return any(
        isinstance(c, dict) and c.get("system") == system and c.get("code") in wanted
        for c in as_list(concept.get("coding"))
    )


def has_choice(obj: Json, stem: str) -> bool:
    """Whether any variant `stem[x]` (e.g. valueQuantity) is present."""
    n = len(stem)
    return any(k.startswith(stem) and k[n : n + 1].isupper() for k in obj) or any(
        k.startswith("_" + stem) and k[n + 1 : n + 2].isupper() for k in obj
    )


@cache
def choice_keys(owner: str, path: str) -> frozenset[str]:
    """The JSON names of a choice element's variants, e.g. valueQuantity, _valueString."""
    parent = path.rsplit(".", 1)[0] if "." in path else ""
    children = definitions().children((owner, parent))
    return frozenset(k for k, c in children.items() if c.element.path == path)


_DATE_PART = re.compile(r"\d{4}(-\d{2}(-\d{2})?)?")


def compare_datetimes(a: Any, b: Any) -> int | None:
    """FHIRPath comparison of two date/dateTime strings: -1, 0, 1, or None if unknown.

    Values with a time are compared as instants (zones normalised); otherwise
    compared to the shorter precision, and equal-but-differently-precise is None.
    """
    if not isinstance(a, str) or not isinstance(b, str):
        return None
    if "T" in a and "T" in b:
        try:
            x, y = datetime.fromisoformat(a), datetime.fromisoformat(b)
        except ValueError:
            return None
        if (x.tzinfo is None) != (y.tzinfo is None):
            return None
        return (x > y) - (x < y)
    da, db = a.split("T", 1)[0], b.split("T", 1)[0]
    if not _DATE_PART.fullmatch(da) or not _DATE_PART.fullmatch(db):
        return None
    n = min(len(da), len(db))
    if da[:n] != db[:n]:
        return -1 if da[:n] < db[:n] else 1
    return 0 if len(da) == len(db) and ("T" in a) == ("T" in b) else None


def any_of(*names: str) -> NativeCheck:
    """`a.exists() or b.exists() or …` on one element."""

    def check(x: Json, _: Json) -> bool:
        return any(n in x or "_" + n in x for n in names)

    return check


def not_both(a: str, b: str) -> NativeCheck:
    """`a.empty() or b.empty()`."""

    def check(x: Json, _: Json) -> bool:
        return not (present(x, a) and present(x, b))

    return check


def given(name: str, check: NativeCheck) -> NativeCheck:
    """Holds when `name` is absent, where the FHIRPath compares it and so yields empty."""

    def guarded(x: Json, resource: Json) -> bool:
        return name not in x or check(x, resource)

    return guarded


def implies(a: bool, b: bool) -> bool:
    return not a or b


def field_values(items: Any, name: str) -> list[Any]:
    """`items.name`: the values of `name` over a collection of objects."""
    out: list[Any] = []
    for x in as_list(items):
        if isinstance(x, dict) and name in x:
            out.extend(as_list(x[name]))
    return out


def later_or_same(later: str, earlier: str) -> NativeCheck:
    """mdd-1 / Task inv-1: `later >= earlier` as instants (fhirpathpy ignores zones)."""

    def check(r: Json, _: Json) -> bool:
        if later not in r or earlier not in r:
            return True
        return compare_datetimes(r[later], r[earlier]) != -1

    return check


def xor(a: str, b: str) -> NativeCheck:
    """`a.exists() xor b.exists()`."""

    def check(x: Json, _: Json) -> bool:
        return present(x, a) != present(x, b)

    return check
