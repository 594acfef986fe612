"""`_include` and `_revinclude` (search.html#include): the resources a page refers to, or
that refer to it. They come back with `search.mode = include` and never count toward
`_count`. The `*` form is not answered yet: it is reported, not ignored.
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
MAX_ROUNDS = 4  # :iterate rounds after the first


@dataclass(slots=True)
class Included:
    resources: list[StoredVersion] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)  # e.g. "_include=Observation:*"


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
    """The page's `_include`/`_revinclude` resources; `:iterate` forms repeat on what
    was included, until nothing new comes (at most MAX_ROUNDS rounds)."""
    finder = _Finder(ctx, store, indexer, page)
    once = [_spec(v, "_include", defs, finder) for v in parsed.include]
    rev_once = [_spec(v, "_revinclude", defs, finder) for v in parsed.revinclude]
    again = [_spec(v, "_include:iterate", defs, finder) for v in parsed.include_iterate]
    rev_again = [_spec(v, "_revinclude:iterate", defs, finder) for v in parsed.revinclude_iterate]
    sources = list(page)
    fresh = finder.include([s for s in once + again if s], sources)
    fresh += finder.revinclude([s for s in rev_once + rev_again if s], sources)
    for _ in range(MAX_ROUNDS):
        if not fresh or not (again or rev_again):
            break
        sources = fresh
        fresh = finder.include([s for s in again if s], sources)
        fresh += finder.revinclude([s for s in rev_again if s], sources)
    return Included(finder.found, finder.unsupported)


def _spec(value: str, name: str, defs: Definitions, finder: _Finder) -> _Spec | None:
    spec = _parse(value, name.split(":")[0], defs)
    if spec is None:
        finder.unsupported.append(f"{name}={value}")
    return spec


class _Finder:
    def __init__(
        self, ctx: SecurityContext, store: Store, indexer: IndexExtractor, page: list[StoredVersion]
    ) -> None:
        self.ctx = ctx
        self.store = store
        self.indexer = indexer
        self.seen = {(r.type, r.id) for r in page}
        self.found: list[StoredVersion] = []
        self.unsupported: list[str] = []

    def add(self, version: StoredVersion) -> bool:
        key = (version.type, version.id)
        if key in self.seen or len(self.found) >= MAX_INCLUDED or version.data is None:
            return False
        self.seen.add(key)
        self.found.append(version)
        return True

    def include(self, specs: list[_Spec], sources: list[StoredVersion]) -> list[StoredVersion]:
        """Resources that `sources` reference through the specs' parameters."""
        wanted: list[tuple[str, str]] = []
        for spec in specs:
            for r in sources:
                if r.type != spec.source or r.data is None:
                    continue
                for entry in self.indexer.extract(orjson.loads(r.data)):
                    v = entry.value
                    if entry.param != spec.param or not isinstance(v, ReferenceValue):
                        continue
                    if v.type and v.id and v.url is None and spec.target in (None, v.type):
                        wanted.append((v.type, v.id))
        fresh = []
        for type, id in dict.fromkeys(wanted):
            if (type, id) in self.seen:
                continue
            access.check(self.ctx, "read", type)
            found = self.store.read(type, id)
            if found is not None and self.add(found):
                fresh.append(found)
        return fresh

    def revinclude(self, specs: list[_Spec], sources: list[StoredVersion]) -> list[StoredVersion]:
        """Resources whose specs' parameters reference any of `sources`."""
        fresh = []
        for spec in specs:
            targets = tuple(
                ReferenceCriterion(r.type, r.id) for r in sources if spec.target in (None, r.type)
            )
            if not targets:
                continue
            access.check(self.ctx, "search", spec.source)
            condition = Condition(spec.param, "reference", targets)
            query = SearchQuery(spec.source, [condition], count=MAX_INCLUDED)
            for found in self.store.search(query).resources:
                if self.add(found):
                    fresh.append(found)
        return fresh
