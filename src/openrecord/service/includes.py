"""`_include` and `_revinclude` (search.html#include): the resources a page refers to, or
that refer to it. They come back with `search.mode = include` and never count toward
`_count`. `:iterate` and `*` forms are not answered yet: they are reported, not ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from openrecord.fhir.definitions import Definitions
from openrecord.fhir.outcome import FHIRError
from openrecord.fhir.search_index import IndexExtractor
from openrecord.fhir.search_query import ParsedSearch
from openrecord.fhir.search_values import ReferenceValue
from openrecord.service import access
from openrecord.service.context import SecurityContext
from openrecord.store.base import Store, StoredVersion
from openrecord.store.query import Condition, ReferenceCriterion, SearchQuery

__all__ = ["MAX_INCLUDED", "Included", "find_included"]

MAX_INCLUDED = 1000  # a page's included resources, at most


@dataclass(slots=True)
class Included:
    resources: list[StoredVersion] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)  # e.g. "_include:iterate=…"


@dataclass(frozen=True, slots=True)
class _Spec:
    source: str
    param: str
    target: str | None


def _parse(value: str, name: str, defs: Definitions) -> _Spec | None:
    """`Source:param[:Target]`; None for the `*` form; 400 for anything malformed."""
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise FHIRError.of(400, "invalid", f"{name}={value!r}: expected Type:param[:Type]", name)
    source, param = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if param == "*":
        return None
    for t in (source, target):
        if t is not None and t not in defs.resource_types:
            raise FHIRError.of(400, "invalid", f"{name}={value!r}: unknown type {t!r}", name)
    sp = defs.search_param(source, param)
    if sp is None or sp.type != "reference":
        raise FHIRError.of(
            400, "invalid", f"{name}={value!r}: {source} has no reference parameter {param!r}", name
        )
    if target is not None and sp.targets and target not in sp.targets:
        raise FHIRError.of(
            400, "invalid", f"{name}={value!r}: {source}.{param} cannot refer to {target}", name
        )
    return _Spec(source, param, target)


def find_included(
    ctx: SecurityContext,
    page: list[StoredVersion],
    parsed: ParsedSearch,
    store: Store,
    defs: Definitions,
    indexer: IndexExtractor,
) -> Included:
    out = Included()
    out.unsupported += [f"_include:iterate={v}" for v in parsed.include_iterate]
    out.unsupported += [f"_revinclude:iterate={v}" for v in parsed.revinclude_iterate]
    seen = {(r.type, r.id) for r in page}
    wanted: list[tuple[str, str]] = []
    for value in parsed.include:
        spec = _parse(value, "_include", defs)
        if spec is None:
            out.unsupported.append(f"_include={value}")
            continue
        for r in page:
            if r.type != spec.source or r.data is None:
                continue
            for entry in indexer.extract(orjson.loads(r.data)):
                v = entry.value
                if entry.param != spec.param or not isinstance(v, ReferenceValue):
                    continue
                if v.type and v.id and v.url is None and spec.target in (None, v.type):
                    wanted.append((v.type, v.id))
    for type, id in dict.fromkeys(wanted):
        if (type, id) in seen or len(out.resources) >= MAX_INCLUDED:
            continue
        access.check(ctx, "read", type)
        found = store.read(type, id)
        if found is not None and found.data is not None:
            seen.add((type, id))
            out.resources.append(found)
    for value in parsed.revinclude:
        spec = _parse(value, "_revinclude", defs)
        if spec is None:
            out.unsupported.append(f"_revinclude={value}")
            continue
        targets = tuple(
            ReferenceCriterion(r.type, r.id) for r in page if spec.target in (None, r.type)
        )
        if not targets:
            continue
        access.check(ctx, "search", spec.source)
        query = SearchQuery(
            spec.source,
            [Condition(spec.param, "reference", targets)],
            count=MAX_INCLUDED,
        )
        for found in store.search(query).resources:
            if (found.type, found.id) not in seen and len(out.resources) < MAX_INCLUDED:
                seen.add((found.type, found.id))
                out.resources.append(found)
    return out
