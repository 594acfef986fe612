"""`_include` and `_revinclude` (search.html#include): the resources a page refers to, or
that refer to it. They come back with `search.mode = include` and never count toward
`_count`. `Type:*` (and `Type:*:Target`) stands for every reference parameter of
`Type`; a bare `*` for every reference parameter of every type: of the page's types
for `_include=*`, of every type that can refer to them for `_revinclude=*`.
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


@dataclass(frozen=True, slots=True)
class _Spec:
    source: str  # a resource type, or "*": any
    param: str  # a reference parameter code, or "*": every reference parameter
    target: str | None


def _parse(value: str, name: str, defs: Definitions) -> _Spec:
    """`Source:param[:Target]`, `Source:*[:Target]` or `*`; 400 for anything malformed."""
    if value == "*":
        return _Spec("*", "*", None)
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise FHIRError.of(400, "invalid", f"{name}={value!r}: expected Type:param[:Type]", name)
    source, param = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    for t in (source, target):
        if t is not None and t not in defs.resource_types:
            raise FHIRError.of(400, "invalid", f"{name}={value!r}: unknown type {t!r}", name)
    if param == "*":
        return _Spec(source, "*", target)
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
    finder = _Finder(ctx, store, indexer, defs, page)
    once = [_parse(v, "_include", defs) for v in parsed.include]
    rev_once = [_parse(v, "_revinclude", defs) for v in parsed.revinclude]
    again = [_parse(v, "_include", defs) for v in parsed.include_iterate]
    rev_again = [_parse(v, "_revinclude", defs) for v in parsed.revinclude_iterate]
    sources = list(page)
    fresh = finder.include(once + again, sources)
    fresh += finder.revinclude(rev_once + rev_again, sources)
    for _ in range(MAX_ROUNDS):
        if not fresh or not (again or rev_again):
            break
        sources = fresh
        fresh = finder.include(again, sources)
        fresh += finder.revinclude(rev_again, sources)
    return Included(finder.found)


class _Finder:
    def __init__(
        self,
        ctx: SecurityContext,
        store: Store,
        indexer: IndexExtractor,
        defs: Definitions,
        page: list[StoredVersion],
    ) -> None:
        self.ctx = ctx
        self.store = store
        self.indexer = indexer
        self.defs = defs
        self.seen = {(r.type, r.id) for r in page}
        self.found: list[StoredVersion] = []

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
                if spec.source not in ("*", r.type) or r.data is None:
                    continue
                for entry in self.indexer.extract(orjson.loads(r.data)):
                    v = entry.value
                    if spec.param not in ("*", entry.param) or not isinstance(v, ReferenceValue):
                        continue
                    if v.type and v.id and v.url is None and spec.target in (None, v.type):
                        wanted.append((v.type, v.id))
        fresh = []
        for type, id in dict.fromkeys(wanted):
            if (type, id) in self.seen:
                continue
            if not access.allows(self.ctx, "read", type):
                continue  # left out, as what the context may not read is (searching.py)
            found = self.store.read(type, id)
            if found is not None and self.add(found):
                fresh.append(found)
        return fresh

    def revinclude(self, specs: list[_Spec], sources: list[StoredVersion]) -> list[StoredVersion]:
        """Resources whose specs' parameters reference any of `sources`."""
        fresh = []
        for spec in self.expand(specs, {r.type for r in sources}):
            targets = [r for r in sources if spec.target in (None, r.type)]
            if not targets:
                continue
            if not access.allows(self.ctx, "search", spec.source):
                continue
            for param in self.reference_params(spec, {r.type for r in targets}):
                values = tuple(ReferenceCriterion(r.type, r.id) for r in targets)
                condition = Condition(param, "reference", values)
                query = SearchQuery(spec.source, [condition], count=MAX_INCLUDED)
                for found in self.store.search(query).resources:
                    if self.add(found):
                        fresh.append(found)
        return fresh

    def expand(self, specs: list[_Spec], types: set[str]) -> list[_Spec]:
        """`_revinclude=*`: every type with a reference parameter that can point at one
        of `types`, each as `Type:*` (one query per parameter, all index lookups)."""
        out: list[_Spec] = []
        for spec in specs:
            if spec.source != "*":
                out.append(spec)
                continue
            for source, table in sorted(self.defs.search_params.items()):
                if source == "AuditEvent":
                    continue  # the audit trail is not part of "every type" (access.py)
                if any(
                    sp.type == "reference" and (not sp.targets or types & set(sp.targets))
                    for sp in table.values()
                ):
                    out.append(_Spec(source, "*", None))
        return out

    def reference_params(self, spec: _Spec, types: set[str]) -> list[str]:
        """The parameter itself, or for `*` every reference parameter of the source type
        that can point at one of `types`."""
        if spec.param != "*":
            return [spec.param]
        table = self.defs.search_params.get(spec.source, {})
        return [
            code
            for code, sp in table.items()
            if sp.type == "reference" and (not sp.targets or types & set(sp.targets))
        ]
