"""Parsed search criteria, as the store's query builder receives them.

`openrecord.fhir.search_query` turns HTTP search parameters into these; the store
turns them into SQL. Values inside one `Condition` are OR-ed; conditions are AND-ed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "AnyCondition",
    "ChainCondition",
    "CompartmentFilter",
    "CompositeCriterion",
    "Condition",
    "DateCriterion",
    "HasCondition",
    "NumberCriterion",
    "Prefix",
    "QuantityCriterion",
    "ReferenceCriterion",
    "SearchCondition",
    "SearchQuery",
    "SortKey",
    "StringCriterion",
    "TextCriterion",
    "TokenCriterion",
    "UriCriterion",
]

Prefix = Literal["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]


@dataclass(frozen=True, slots=True)
class TokenCriterion:
    """`code`, `system|code`, `|code` (system is None, no_system True) or `system|`."""

    system: str | None
    code: str | None
    no_system: bool = False


@dataclass(frozen=True, slots=True)
class StringCriterion:
    normalized: str  # same normalization as StringValue.normalized
    exact: str | None = None  # the raw text, for :exact


@dataclass(frozen=True, slots=True)
class DateCriterion:
    prefix: Prefix
    low: int  # the implicit range of the searched value, microseconds UTC, inclusive
    high: int


@dataclass(frozen=True, slots=True)
class NumberCriterion:
    prefix: Prefix
    value: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class QuantityCriterion:
    prefix: Prefix
    value: float
    low: float
    high: float
    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class ReferenceCriterion:
    type: str | None  # None: any type with this id
    id: str | None
    url: str | None = None  # absolute or canonical reference
    version: str | None = None


@dataclass(frozen=True, slots=True)
class UriCriterion:
    value: str


@dataclass(frozen=True, slots=True)
class CompositeCriterion:
    """One value of a composite parameter: a criterion per component, in order (`a$b`).

    All of them must hold for the components of one composite instance (the same
    Observation.component, say), not for values taken from different instances.
    """

    components: tuple[Criterion, ...]


@dataclass(frozen=True, slots=True)
class TextCriterion:
    """One value of `_text`/`_content`: every word must start a word of the text
    (`fhir/search_text.py` makes the words; none: matches nothing)."""

    words: tuple[str, ...]


Criterion = (
    TokenCriterion
    | StringCriterion
    | DateCriterion
    | NumberCriterion
    | QuantityCriterion
    | ReferenceCriterion
    | UriCriterion
    | CompositeCriterion
    | TextCriterion
)


@dataclass(frozen=True, slots=True)
class Condition:
    """One search parameter occurrence: `param[:modifier]=v1,v2` (values OR-ed).

    `param` is the search parameter code ("subject", "_id", "_lastUpdated"); `kind` its type.
    `_id` is a token condition, `_lastUpdated` a date condition: the store answers both
    from its resource table. `modifier` is one of None, "missing", "exact", "contains",
    "not", "text", "above", "below", "identifier", or a resource type for references.
    For `:missing`, `missing` holds the boolean and `values` is empty.
    """

    param: str
    kind: Literal["token", "string", "date", "number", "quantity", "reference", "uri", "composite"]
    values: tuple[Criterion, ...]
    modifier: str | None = None
    missing: bool | None = None
    # composite: the kind of each component (its index table), e.g. ("token", "quantity")
    component_kinds: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SortKey:
    param: str  # "_id", "_lastUpdated", or a search parameter code
    kind: str
    descending: bool = False


@dataclass(frozen=True, slots=True)
class CompartmentFilter:
    """Only resources in the compartment of `type`/`id` (e.g. Patient/123).

    `links` are the (resource type, search parameter) pairs that put a resource in the
    compartment (from the official CompartmentDefinition): a resource is in it when one
    of its parameters references `type`/`id`, or when it is that resource.
    """

    type: str
    id: str
    links: tuple[tuple[str, str], ...]


@dataclass(slots=True)
class SearchQuery:
    type: str | None  # None: all types (system search)
    conditions: list[SearchCondition] = field(default_factory=list)
    sort: list[SortKey] = field(default_factory=list)
    count: int = 20
    offset: int = 0
    total: bool = False  # compute the accurate total
    total_estimate: bool = False  # `_total=estimate`: a cheap, bounded count (store decides)
    cursor: str | None = None  # `_cursor`: opaque keyset position from a previous page
    explain: bool = False  # return the page's SQL and plan (server debug setting only)
    compartment: CompartmentFilter | None = None
    types: tuple[str, ...] = ()  # with type None: only these types (`_type=A,B`)
    # `_contained`: "false" (top-level resources only), "true" (contained ones only),
    # "both"; `_containedType`: "container" (return the containers) or "contained"
    contained: Literal["false", "true", "both"] = "false"
    contained_type: Literal["container", "contained"] = "container"
    # the server's base URL as the client sees it: a local reference criterion then
    # matches relative references and absolute ones under it, not other servers'
    base: str | None = None


@dataclass(frozen=True, slots=True)
class ChainCondition:
    """`param[:Type].inner` (search.html#chaining): the resource's reference parameter
    `param` points at a current resource of one of `target_types` for which `inner` holds.

    An untyped chain names every target type that defines the inner parameter; the
    inner condition is evaluated on the target (its own chain, for multi-level ones).
    """

    param: str
    target_types: tuple[str, ...]
    inner: SearchCondition


@dataclass(frozen=True, slots=True)
class HasCondition:
    """`_has:type:param:inner` (search.html#has): some current `type` resource for which
    `inner` holds refers to the searched resource through its parameter `param`."""

    type: str
    param: str
    inner: SearchCondition


@dataclass(frozen=True, slots=True)
class AnyCondition:
    """At least one of `options` holds: an untyped chain whose target types read the
    inner parameter differently (another kind or other targets) gets one option each."""

    options: tuple[SearchCondition, ...]


SearchCondition = Condition | ChainCondition | HasCondition | AnyCondition
