"""Typed search-index values, as extracted from a resource for one search parameter.

These are the rows the store writes into its typed index tables and the search
planner queries. Dates are ranges in microseconds since the Unix epoch (UTC),
inclusive at both ends; numbers and quantities carry the implicit range of their
significant figures.

The classes are slotted with a field hash but not `frozen`: a frozen dataclass sets
each field through `object.__setattr__`, which made extraction (a dozen values per
resource, on every write) about 10% slower. Treat them as immutable all the same.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CompositeValue",
    "ContainedValue",
    "DateValue",
    "IndexEntry",
    "NumberValue",
    "QuantityValue",
    "ReferenceValue",
    "SearchValue",
    "StringValue",
    "TokenValue",
    "UriValue",
]


@dataclass(slots=True, unsafe_hash=True)
class TokenValue:
    system: str | None
    code: str | None
    text: str | None = None  # display / CodeableConcept.text, for :text


@dataclass(slots=True, unsafe_hash=True)
class StringValue:
    value: str  # as written
    normalized: str  # casefolded, accents removed, whitespace collapsed


@dataclass(slots=True, unsafe_hash=True)
class DateValue:
    low: int  # microseconds since epoch, UTC, inclusive
    high: int  # inclusive


@dataclass(slots=True, unsafe_hash=True)
class NumberValue:
    value: float
    low: float
    high: float


@dataclass(slots=True, unsafe_hash=True)
class QuantityValue:
    value: float
    low: float
    high: float
    system: str | None
    code: str | None
    unit: str | None


@dataclass(slots=True, unsafe_hash=True)
class ReferenceValue:
    """A reference: local (`type`/`id`), absolute or canonical (`url`, with `version`)."""

    type: str | None
    id: str | None
    url: str | None = None
    version: str | None = None


@dataclass(slots=True, unsafe_hash=True)
class UriValue:
    value: str


@dataclass(slots=True, unsafe_hash=True)
class CompositeValue:
    components: tuple[SearchValue, ...]


@dataclass(slots=True, unsafe_hash=True)
class ContainedValue:
    """The index of one contained resource (`fhir/search_contained.py`): its type, its id
    within the container, and its own entries. Never a value of a search parameter."""

    type: str
    id: str
    entries: tuple[IndexEntry, ...]


SearchValue = (
    TokenValue
    | StringValue
    | DateValue
    | NumberValue
    | QuantityValue
    | ReferenceValue
    | UriValue
    | CompositeValue
    | ContainedValue
)


@dataclass(slots=True, unsafe_hash=True)
class IndexEntry:
    """One value of one search parameter (by its `code`, e.g. "subject") for one resource."""

    param: str
    value: SearchValue
