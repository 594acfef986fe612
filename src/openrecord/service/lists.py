"""`_list` (search.html#list): only resources that a List resource names in its entries.

`Observation?_list=42` reads List/42 and keeps the Observations its `entry.item`
references point at (entries flagged `deleted` do not count). Several lists in one
value are OR-ed, repeated `_list` parameters AND-ed, like any parameter. The
functional lists (`$current-problems`…) are not kept by this server: asking for one
is refused rather than ignored, since ignoring it would widen the result.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from openrecord.fhir.definitions import Definitions
from openrecord.fhir.outcome import FHIRError
from openrecord.fhir.search_common import parse_reference
from openrecord.fhir.search_query import split_values
from openrecord.store.base import StoredVersion
from openrecord.store.query import Condition, ReferenceCriterion

__all__ = ["MAX_LIST_ITEMS", "list_conditions"]

MAX_LIST_ITEMS = 10_000  # items a `_list` search considers, per list

Reader = Callable[[str, str], StoredVersion | None]


def list_conditions(
    values: list[str], read: Reader, defs: Definitions, types: tuple[str, ...] | None
) -> list[Condition]:
    """One condition per `_list` parameter: the (type, id) pairs its lists name.

    `read` reads a current List by id (through the caller's access checks); `types`
    narrows the pairs to the searched types (None: any type).
    """
    conditions = []
    for raw in values:
        pairs: dict[tuple[str, str], None] = {}
        for list_id in split_values(raw):
            list_id = list_id.strip()
            if not list_id:
                continue
            if list_id.startswith("$"):
                raise FHIRError.of(
                    400, "not-supported", f"_list={list_id}: functional lists are not kept", "_list"
                )
            found = read("List", list_id)
            if found is None or found.data is None:
                continue  # no such list: it names nothing
            for ref in _items(orjson.loads(found.data), defs):
                if types is None or ref[0] in types:
                    pairs[ref] = None
        criteria = tuple(ReferenceCriterion(t, i) for t, i in pairs)
        conditions.append(Condition("_list", "reference", criteria))
    return conditions


def _items(resource: dict[str, object], defs: Definitions) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    entries = resource.get("entry")
    if not isinstance(entries, list):
        return out
    for entry in entries[:MAX_LIST_ITEMS]:
        if not isinstance(entry, dict) or entry.get("deleted") is True:
            continue
        item = entry.get("item")
        ref = item.get("reference") if isinstance(item, dict) else None
        if not isinstance(ref, str):
            continue
        parsed = parse_reference(ref, defs.resource_types)
        if parsed is not None and parsed.url is None and parsed.type and parsed.id:
            out.append((parsed.type, parsed.id))
    return out
