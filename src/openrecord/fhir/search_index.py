"""Search index extraction: every search parameter of a resource's type, on every write.

`IndexExtractor.extract` returns the typed `IndexEntry` rows the store writes for
a resource. Expressions are compiled once per (type, parameter), lazily on the
first resource of a type, by the native FHIRPath compiler (`fhirpath`); only
what it does not cover goes to fhirpathpy (`fhirpath_fallback`), and
`fallback_count()` says how many. `_id` and `_lastUpdated` are not extracted
(the store keeps them in its resource table), nor `special` parameters and
those without an expression (`_text`, `_content`, `_query`).
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import UTC, tzinfo
from typing import Any

from openrecord.fhir.definitions import Definitions, SearchParamDef
from openrecord.fhir.fhirpath import Branch, Fn, Unsupported, compile_path
from openrecord.fhir.fhirpath_fallback import FallbackPath, top_level_union
from openrecord.fhir.search_convert import Converter, converter
from openrecord.fhir.search_values import CompositeValue, IndexEntry, SearchValue, TokenValue

__all__ = ["SKIPPED_PARAMS", "IndexExtractor"]

_log = logging.getLogger(__name__)

SKIPPED_PARAMS = frozenset({"_id", "_lastUpdated"})
_INDEXED_TYPES = frozenset(
    {"number", "date", "string", "token", "reference", "composite", "quantity", "uri"}
)

# The parameter type a composite component's values call for, when its declared type
# does not fit them.
_NATURAL_TYPES = {
    "code": "token",
    "Coding": "token",
    "CodeableConcept": "token",
    "Identifier": "token",
    "Reference": "reference",
}

# One branch ready to run: (first key, path, converter, memo key). The memo key is
# set when the same path and conversion recur in the type's plan (`code` and
# `combo-code` and the `code-value-*` composites all convert Observation.code):
# its values are then computed once per resource.
_Part = tuple[str | None, Fn, Converter, Hashable | None]


@dataclass(frozen=True, slots=True)
class _Param:
    """A natively compiled parameter: the branches of its expression."""

    code: str
    parts: tuple[_Part, ...]


@dataclass(frozen=True, slots=True)
class _Component:
    parts: tuple[_Part, ...]
    leads: tuple[str, ...] | None  # an item lacking all of these has no value here


@dataclass(frozen=True, slots=True)
class _Composite:
    """Components evaluated per item of the base, combined into every combination.

    `bases` holds (base path, base is the resource itself, components).
    """

    code: str
    bases: tuple[tuple[Fn, bool, tuple[_Component, ...]], ...]


@dataclass(frozen=True, slots=True)
class _Fallback:
    """A parameter evaluated by fhirpathpy; converters chosen per value type at run time."""

    code: str
    param_type: str
    path: FallbackPath


@dataclass(frozen=True, slots=True)
class _FallbackComposite:
    code: str
    bases: tuple[tuple[str, FallbackPath], ...]  # (element path of the items, base part)
    components: tuple[tuple[str, FallbackPath], ...]  # (param type, component expression)


_Step = _Param | _Composite | _Fallback | _FallbackComposite


class IndexExtractor:
    """Compiles and runs the search parameters of every resource type.

    `tz` is the zone of dates and times written without one. `fallback_only`
    evaluates everything with fhirpathpy: only for testing the native compiler
    against it.
    """

    def __init__(self, defs: Definitions, tz: tzinfo = UTC, *, fallback_only: bool = False) -> None:
        self.defs = defs
        self.tz = tz
        self.fallback_only = fallback_only
        self._plans: dict[str, tuple[_Step, ...]] = {}
        self._subplans: dict[tuple[str, frozenset[str]], tuple[_Step, ...]] = {}
        self._converters: dict[tuple[str, str, str | None], Converter | None] = {}
        self._by_url = {p.url: p for params in defs.search_params.values() for p in params.values()}
        self.native_expressions = 0
        self.fallback_expressions: list[tuple[str, str, str]] = []  # (type, code, reason)
        self.unindexed: list[tuple[str, str, str]] = []  # neither compiler reads these

    def compile_all(self) -> None:
        """Compile every resource type now rather than on its first write."""
        for t in sorted(self.defs.search_params):
            self._plan(t)

    def fallback_count(self) -> int:
        return len(self.fallback_expressions)

    def check_param(self, rtype: str, sp: SearchParamDef) -> None:
        """Compile `sp` for `rtype` as a write would; ValueError if it would index nothing.

        For parameters defined at run time (SearchParameter resources): a failure
        here is the client's, reported before the definition is stored.
        """
        if sp.type not in _INDEXED_TYPES or not sp.expression:
            raise ValueError(f"parameters of type {sp.type!r} are not indexed")
        try:
            step = self._compile_native(rtype, sp)
        except Unsupported:
            try:
                self._compile_fallback(rtype, sp)
            except Exception as err:  # fhirpathpy's parser raises many kinds
                raise ValueError(f"the expression cannot be compiled: {err}") from None
            return
        if step is None:
            raise ValueError(f"the expression yields no values a {sp.type} parameter can index")

    def extract(
        self, resource: dict[str, Any], only: frozenset[str] | None = None
    ) -> list[IndexEntry]:
        """The index entries of `resource`, each distinct (param, value) once; `only`:
        of these parameters alone (an access check needs a few, not all)."""
        rtype = resource.get("resourceType")
        if type(rtype) is not str:
            return []
        plan = self._plans.get(rtype) if only is None else self._subplans.get((rtype, only))
        if plan is None:
            if rtype not in self.defs.search_params:
                return []
            plan = self._plan(rtype)
            if only is not None:
                plan = tuple(step for step in plan if step.code in only)
                self._subplans[(rtype, only)] = plan
        items = [resource]
        memo: dict[Hashable, list[SearchValue]] = {}
        entries: list[IndexEntry] = []
        for step in plan:
            if type(step) is _Param:
                values: list[SearchValue] = []
                for first_key, fn, convert, mkey in step.parts:
                    if first_key is not None and first_key not in resource:
                        continue
                    if mkey is None:
                        for v in fn(items, resource):
                            if v is not None:
                                convert(v, resource, values)
                    else:
                        values += _memoized(memo, mkey, fn, convert, items, resource)
                if not values:
                    continue
            elif type(step) is _Composite:
                values = _composite(step, resource, memo)
            elif type(step) is _Fallback:
                values = self._fallback(step, resource)
            else:
                assert isinstance(step, _FallbackComposite)
                values = self._fallback_composite(step, resource)
            code = step.code
            if len(values) == 1:
                entries.append(IndexEntry(code, values[0]))
            elif values:
                entries.extend(IndexEntry(code, v) for v in dict.fromkeys(values))
        return entries

    # -- compilation ----------------------------------------------------------

    def _plan(self, rtype: str) -> tuple[_Step, ...]:
        found = self._plans.get(rtype)
        if found is None:
            found = self._plans[rtype] = self._compile_type(rtype)
        return found

    def _converter(
        self, param_type: str, fhir_type: str, binding: str | None, component: bool = False
    ) -> Converter | None:
        key = (param_type, fhir_type, binding if fhir_type == "code" else None)
        if key not in self._converters:
            self._converters[key] = converter(param_type, fhir_type, self.defs, self.tz, key[2])
        found = self._converters[key]
        if found is None and component and fhir_type in _NATURAL_TYPES:
            # R4 swaps the component types of DocumentReference-relationship
            # (token for the Reference, reference for the code): go by the data.
            return self._converter(_NATURAL_TYPES[fhir_type], fhir_type, binding)
        return found

    def _compile_type(self, rtype: str) -> tuple[_Step, ...]:
        steps: list[_Step] = []
        for code, sp in sorted(self.defs.search_params[rtype].items()):
            if code in SKIPPED_PARAMS or sp.type not in _INDEXED_TYPES or not sp.expression:
                continue
            step: _Step | None
            try:
                if self.fallback_only:
                    raise Unsupported("fallback_only")
                step = self._compile_native(rtype, sp)
                self.native_expressions += 1
            except Unsupported as e:
                if not self.fallback_only:
                    self.fallback_expressions.append((rtype, code, str(e)))
                try:
                    step = self._compile_fallback(rtype, sp)
                except Exception as err:  # fhirpathpy cannot read it either
                    self.unindexed.append((rtype, code, repr(err)))
                    _log.error("search parameter %s.%s not indexed: %r", rtype, code, err)
                    step = None
            if step is not None:
                steps.append(step)
        return _with_memo_keys(steps)

    def _parts(
        self, branches: list[Branch], param_type: str, base: Hashable, component: bool = False
    ) -> list[_Part]:
        parts: list[_Part] = []
        for b in branches:
            conv = self._converter(param_type, b.type, b.binding, component)
            if conv is not None:
                sig = None if b.keys is None else (base, b.keys, conv)
                parts.append((b.first_key, b.fn, conv, sig))
        return parts

    def _compile_native(self, rtype: str, sp: SearchParamDef) -> _Param | _Composite | None:
        assert sp.expression is not None
        branches = compile_path(sp.expression, self.defs, rtype)
        if sp.type != "composite":
            parts = self._parts(branches, sp.type, ())
            return _Param(sp.code, tuple(parts)) if parts else None
        bases = []
        for base in branches:
            if base.node is None:
                raise Unsupported("composite over values without children")
            at_root = base.keys == ()
            comps = []
            for url, expr in sp.components:
                cdef = self._by_url.get(url)
                if cdef is None:
                    raise Unsupported(f"unknown component {url}")
                sub = compile_path(expr, self.defs, rtype, focus=base.node)
                parts = self._parts(sub, cdef.type, () if at_root else (base.keys, rtype), True)
                comps.append(_Component(tuple(parts), _leads(parts)))
            bases.append((base.fn, at_root, tuple(comps)))
        return _Composite(sp.code, tuple(bases))

    def _compile_fallback(self, rtype: str, sp: SearchParamDef) -> _Fallback | _FallbackComposite:
        assert sp.expression is not None
        types = self.defs.resource_types
        if sp.type != "composite":
            return _Fallback(sp.code, sp.type, FallbackPath(sp.expression, rtype, types))
        bases = tuple(
            (part, FallbackPath(part, rtype, types)) for part in top_level_union(sp.expression)
        )
        comps = []
        for url, expr in sp.components:
            cdef = self._by_url.get(url)
            comps.append((cdef.type if cdef else "special", FallbackPath(expr, rtype, types)))
        return _FallbackComposite(sp.code, bases, tuple(comps))

    # -- the fhirpathpy fallback -------------------------------------------------

    def _fallback_values(
        self,
        param_type: str,
        typed: list[tuple[str, Any]],
        resource: dict[str, Any],
        component: bool = False,
    ) -> list[SearchValue]:
        out: list[SearchValue] = []
        for fhir_type, value in typed:
            conv = self._converter(param_type, fhir_type, None, component)
            if conv is not None:
                conv(value, resource, out)
        return out

    def _fallback(self, step: _Fallback, resource: dict[str, Any]) -> list[SearchValue]:
        try:
            typed = step.path.evaluate(resource)
        except Exception as err:  # a write must not fail on one parameter's expression
            _log.warning("search parameter %s: fhirpathpy failed: %r", step.code, err)
            return []
        return self._fallback_values(step.param_type, typed, resource)

    def _fallback_composite(
        self, step: _FallbackComposite, resource: dict[str, Any]
    ) -> list[SearchValue]:
        try:
            return self._fallback_composite_values(step, resource)
        except Exception as err:  # a write must not fail on one parameter's expression
            _log.warning("search parameter %s: fhirpathpy failed: %r", step.code, err)
            return []

    def _fallback_composite_values(
        self, step: _FallbackComposite, resource: dict[str, Any]
    ) -> list[SearchValue]:
        out: list[SearchValue] = []
        for base_path, base in step.bases:
            for path, item in base.evaluate_nodes(resource):
                focus_path = path if path and "." not in path and path[0].isupper() else base_path
                per_component: list[list[SearchValue]] = []
                for param_type, comp in step.components:
                    typed = comp.evaluate(resource, item, focus_path)
                    vals = _usable(self._fallback_values(param_type, typed, resource, True))
                    if not vals:
                        break
                    per_component.append(vals)
                else:
                    out.extend(CompositeValue(c) for c in itertools.product(*per_component))
        return out


def _with_memo_keys(steps: list[_Step]) -> tuple[_Step, ...]:
    """Keep memo keys only where the same (path, conversion) occurs more than once."""
    counts: Counter[Hashable] = Counter()
    for step in steps:
        for part in _all_parts(step):
            if part[3] is not None:
                counts[part[3]] += 1

    def keep(parts: tuple[_Part, ...]) -> tuple[_Part, ...]:
        return tuple((p[0], p[1], p[2], p[3] if counts[p[3]] > 1 else None) for p in parts)

    out: list[_Step] = []
    for step in steps:
        if isinstance(step, _Param):
            out.append(_Param(step.code, keep(step.parts)))
        elif isinstance(step, _Composite):
            bases = tuple(
                (fn, at_root, tuple(_Component(keep(c.parts), c.leads) for c in comps))
                for fn, at_root, comps in step.bases
            )
            out.append(_Composite(step.code, bases))
        else:
            out.append(step)
    return tuple(out)


def _leads(parts: list[_Part]) -> tuple[str, ...] | None:
    """The first keys of all the parts, if every part has one."""
    keys = [p[0] for p in parts]
    if not keys or any(k is None for k in keys):
        return None
    return tuple(dict.fromkeys(k for k in keys if k is not None))


def _absent(comps: tuple[_Component, ...], item: dict[str, Any]) -> bool:
    """Is some component certainly without values for this item?"""
    for c in comps:
        if c.leads is not None:
            for k in c.leads:
                if k in item:
                    break
            else:
                return True
    return False


def _all_parts(step: _Step) -> list[_Part]:
    if isinstance(step, _Param):
        return list(step.parts)
    if isinstance(step, _Composite):
        return [p for _, _, comps in step.bases for c in comps for p in c.parts]
    return []


def _memoized(
    memo: dict[Hashable, list[SearchValue]],
    key: Hashable,
    fn: Fn,
    convert: Converter,
    items: list[Any],
    resource: dict[str, Any],
) -> list[SearchValue]:
    got = memo.get(key)
    if got is None:
        got = memo[key] = []
        for v in fn(items, resource):
            if v is not None:
                convert(v, resource, got)
    return got


def _composite(
    step: _Composite, resource: dict[str, Any], memo: dict[Hashable, list[SearchValue]]
) -> list[SearchValue]:
    out: list[SearchValue] = []
    for base_fn, at_root, comps in step.bases:
        for item in base_fn([resource], resource):
            if type(item) is not dict or _absent(comps, item):
                continue  # some component is certainly absent: no combination
            per_component: list[list[SearchValue]] = []
            items = [item]
            for comp in comps:
                vals: list[SearchValue] = []
                for first_key, fn, convert, mkey in comp.parts:
                    if first_key is not None and first_key not in item:
                        continue
                    if mkey is None:
                        for v in fn(items, resource):
                            if v is not None:
                                convert(v, resource, vals)
                    else:
                        key = mkey if at_root else (id(item), mkey)
                        vals += _memoized(memo, key, fn, convert, items, resource)
                vals = _usable(vals)
                if not vals:
                    break
                per_component.append(vals)
            else:
                out.extend(CompositeValue(c) for c in itertools.product(*per_component))
    return out


def _usable(vals: list[SearchValue]) -> list[SearchValue]:
    """A component's distinct values; text-only tokens cannot match a composite search."""
    vals = [v for v in vals if type(v) is not TokenValue or v.code is not None]
    return list(dict.fromkeys(vals)) if len(vals) > 1 else vals
