"""Search through the record service: parameters to a store query, a page, and the
resources it includes (search.html). `RecordService.search` is the way in."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from openrecord.fhir.definitions import Definitions
from openrecord.fhir.outcome import FHIRError
from openrecord.fhir.search_chain import chained_types
from openrecord.fhir.search_local import localize
from openrecord.fhir.search_query import ParsedSearch, parse_search
from openrecord.service import access
from openrecord.service.context import SecurityContext
from openrecord.service.includes import find_included
from openrecord.service.lists import list_conditions
from openrecord.store.base import InvalidCursor, StoredVersion, UnsupportedSearch
from openrecord.store.query import CompartmentFilter, SearchQuery

if TYPE_CHECKING:
    from openrecord.service.records import RecordService

__all__ = [
    "ResourceSource",
    "SearchResult",
    "compartment_filter",
    "register_source",
    "run_search",
    "source_for",
]


@dataclass(frozen=True, slots=True)
class SearchResult:
    resources: list[StoredVersion]
    total: int | None
    has_more: bool  # another page follows
    parsed: ParsedSearch
    included: list[StoredVersion] = field(default_factory=list)  # _include/_revinclude
    next_cursor: str | None = None  # `_cursor` of the next page (None: this is the last)
    previous_cursor: str | None = None
    explain: str | None = None  # SQL and plan (debug setting; for the requester only)
    # `_containedType=contained`: per resource, the contained id that matched ("": the
    # resource itself); empty for other searches (search_contained.contained_body)
    contained_ids: tuple[str, ...] = ()


class ResourceSource(Protocol):
    """Resources of one type kept outside the FHIR tables that still answer reads and
    searches: the compact CGM readings (service/glucose_fhir.py), as Observations.

    The one hook for such storage. `read` answers an id it owns (None: not one of its
    ids, the store is asked); `search` answers the searches it owns (None: not one of
    them, the ordinary search runs). Both check the caller's access themselves, with
    `service/access.py`, after `RecordService` checked the interaction on the type."""

    def read(
        self, records: RecordService, ctx: SecurityContext, id: str
    ) -> StoredVersion | None: ...

    def search(
        self,
        records: RecordService,
        ctx: SecurityContext,
        params: Sequence[tuple[str, str]],
        compartment: tuple[str, str] | None,
    ) -> SearchResult | None: ...


_SOURCES: dict[str, ResourceSource] = {}
# Modules that register sources, imported on first use (they import this module).
_SOURCE_MODULES = ("openrecord.service.glucose_fhir",)
_loaded = False


def register_source(type: str, source: ResourceSource) -> None:
    """Make `source` answer reads and searches of `type` first (one per type)."""
    _SOURCES[type] = source


def source_for(type: str) -> ResourceSource | None:
    """The source registered for `type`, if any."""
    global _loaded
    if not _loaded:
        for name in _SOURCE_MODULES:
            importlib.import_module(name)
        _loaded = True
    return _SOURCES.get(type)


def run_search(
    records: RecordService,
    ctx: SecurityContext,
    type: str | None,
    params: Sequence[tuple[str, str]],
    *,
    compartment: tuple[str, str] | None = None,
    explain: bool = False,
    base: str | None = None,
    sources: bool = True,
) -> SearchResult:
    """Search `type` (None: all types); `compartment` = (type, id), e.g. Patient/123.

    `explain`: also return the page's SQL and query plan (a server debug setting).
    `base`: the server's base URL as the client sees it; absolute references under
    it match local ones. `sources`: let a registered `ResourceSource` answer first
    (False: the FHIR tables only — what a source itself asks for)."""
    if type is not None:
        access.check(ctx, "search", type)
        records.require_type(type)
        source = source_for(type) if sources else None
        if source is not None:
            answered = source.search(records, ctx, params, compartment)
            if answered is not None:
                return answered
    records.params.sync()
    params = access.resolve_me(ctx, params)  # `patient=me`: the context's patient
    if type is None:
        named = [t.strip() for k, v in params if k == "_type" for t in v.split(",") if t.strip()]
        for name in named:
            records.require_type(name)
            access.check(ctx, "search", name)
        if not named:
            access.check(ctx, "search", None)
        types = tuple(dict.fromkeys(named))
        if len(types) == 1:
            # One type: the search is that type's, with all its parameters.
            type = types[0]
        if types:
            params = [(k, v) for k, v in params if k != "_type"]
    else:
        types = ()
    lists = [v for k, v in params if k == "_list" and v]
    if lists:
        params = [(k, v) for k, v in params if k != "_list"]
    parsed = parse_search(
        type, params, records.defs, records.tz, types=types if type is None else ()
    )
    query = parsed.query
    if base:
        query.conditions = localize(query.conditions, base)
        query.base = base
    linked_types = sorted(chained_types(query.conditions))
    for linked in linked_types:
        access.check(ctx, "search", linked)  # chains and _has read these types too
    access.check_chains(records, ctx, (type,) if type else types, query.conditions)
    if lists:
        access.check(ctx, "read", "List")
        narrow = (type,) if type is not None else types or None
        query.conditions += list_conditions(
            lists, access.reader(records, ctx), records.defs, narrow
        )
    if compartment is not None:
        query.compartment = compartment_filter(records.defs, compartment, type)
    access.restrict_search(records, ctx, query, types)
    access.leave_out_audit(records, query, types)
    records.audit.catch_up_for(*_types_reached(query, parsed, linked_types))
    query.explain = explain
    if query.contained != "false" and (
        parsed.include or parsed.revinclude or parsed.include_iterate or parsed.revinclude_iterate
    ):
        raise FHIRError.of(
            400, "not-supported", "_include and _revinclude are not supported with _contained"
        )
    if parsed.summary == "count":  # the count was asked for, and no page
        query.count = 0
        query.total = not query.total_estimate
    try:
        page = records.store.search(query)
    except InvalidCursor as err:
        raise FHIRError.of(400, "invalid", str(err), "_cursor") from None
    except UnsupportedSearch as err:
        raise FHIRError.of(400, "not-supported", str(err)) from None
    resources = page.resources
    result = SearchResult(
        resources,
        page.total,
        page.next_cursor is not None,
        parsed,
        next_cursor=page.next_cursor,
        previous_cursor=page.previous_cursor,
        explain=page.explain,
        contained_ids=page.contained_ids,
    )
    if parsed.summary == "count":
        return result
    included = find_included(ctx, resources, parsed, records.store, records.defs, records.indexer)
    shown = access.visible(records, ctx, included.resources)  # only what ctx may read
    return replace(result, included=shown)


def _types_reached(
    query: SearchQuery, parsed: ParsedSearch, linked: Sequence[str]
) -> tuple[str | None, ...]:
    """The types a search reads (results, chains and `_has`; None for includes, which
    may reach any type, e.g. through `Provenance:target`), so that AuditEvents are
    stored from the chain before one reaches them."""
    reached = (query.type,) if query.type is not None else query.types
    if parsed.include or parsed.revinclude or parsed.include_iterate or parsed.revinclude_iterate:
        return (*reached, *linked, None)
    return (*reached, *linked)


def compartment_filter(
    defs: Definitions, compartment: tuple[str, str], type: str | None
) -> CompartmentFilter:
    """The official CompartmentDefinition's link parameters for `type`."""
    kind, id = compartment
    members = defs.compartments.get(kind)
    if members is None:
        raise FHIRError.of(
            404,
            "not-supported",
            f"{kind} is not a compartment (R4 has {', '.join(sorted(defs.compartments))})",
        )
    if type is None:  # [compartment]/[id]/*: every member type
        links = tuple((t, p) for t, params in members.items() for p in params)
        return CompartmentFilter(kind, id, links)
    params = members.get(type)
    if params is None:
        raise FHIRError.of(400, "invalid", f"{type} is not in the {kind} compartment")
    return CompartmentFilter(kind, id, tuple((type, p) for p in params))
