"""fhirpathpy for the search expressions the native compiler (`fhirpath`) does not cover.

Slow (50-500 µs an evaluation) but general. Values come back with their FHIR
type as fhirpathpy's R4 model knows it, so the index converters still apply.
Three rewrites make fhirpathpy read R4 search expressions as they are meant:
`X as T` / `X.as(T)` become `X.ofType(T)` (R4 uses `as` as a filter over
collections; fhirpathpy rejects `as` on more than one item), FHIRPath System
type names in `as()` become FHIR ones (`DateTime` → `dateTime`), and a leading
`Resource.`/`DomainResource.` names the actual type (fhirpathpy does not match
supertypes at the root). `resolve()` is supplied: it yields a stub of the
referenced type (or the contained resource), enough for `resolve() is Patient`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextvars import ContextVar
from decimal import Decimal
from typing import Any

import fhirpathpy
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.engine.util import get_data as _get_data
from fhirpathpy.models import models

from openrecord.fhir.search_common import parse_reference

__all__ = ["FallbackPath", "rewrite_for_fhirpathpy", "top_level_union"]

# fhirpathpy is untyped: give the two helpers used here a type.
create_node: Callable[..., Any] = ResourceNode.create_node
get_data: Callable[[Any], Any] = _get_data

_ROOT: ContextVar[dict[str, Any]] = ContextVar("fhirpath_fallback_root")
_TYPES: ContextVar[frozenset[str]] = ContextVar("fhirpath_fallback_types")

_SYSTEM_TYPES = {
    "String": "string",
    "Boolean": "boolean",
    "Integer": "integer",
    "Decimal": "decimal",
    "Date": "date",
    "DateTime": "dateTime",
    "Time": "time",
}
_AS_PAREN_RE = re.compile(r"\(\s*([A-Za-z0-9_.%]+)\s+as\s+([A-Za-z]+)\s*\)")
_AS_CALL_RE = re.compile(r"\.as\(\s*([A-Za-z]+)\s*\)")
_OFTYPE_RE = re.compile(r"\.ofType\(([A-Za-z]+)\)")


def rewrite_for_fhirpathpy(expression: str, resource_type: str | None) -> str:
    """The expression as fhirpathpy should evaluate it (see the module docstring)."""
    out = _AS_PAREN_RE.sub(r"\1.ofType(\2)", expression)
    out = _AS_CALL_RE.sub(r".ofType(\1)", out)
    out = _OFTYPE_RE.sub(lambda m: f".ofType({_SYSTEM_TYPES.get(m.group(1), m.group(1))})", out)
    if resource_type is not None:
        out = re.sub(r"(?<![A-Za-z.])(?:Resource|DomainResource)\.", f"{resource_type}.", out)
    return out


def _resolve(inputs: list[Any]) -> list[Any]:
    root, types = _ROOT.get(), _TYPES.get()
    out: list[Any] = []
    for ref in inputs:
        text = ref.get("reference") if isinstance(ref, dict) else None
        if not isinstance(text, str):
            continue
        if text.startswith("#"):
            for c in root.get("contained") or ():
                if isinstance(c, dict) and c.get("id") == text[1:] and "resourceType" in c:
                    out.append(create_node(c, c["resourceType"]))
            continue
        parsed = parse_reference(text, types)
        if parsed is not None and parsed.type is not None:
            stub = {"resourceType": parsed.type, "id": parsed.id}
            out.append(create_node(stub, parsed.type))
    return out


_OPTIONS = {
    "returnRawData": True,
    "userInvocationTable": {"resolve": {"fn": _resolve, "arity": {0: []}}},
}


def _typed(node: Any) -> tuple[str, Any]:
    """(FHIR type code, plain JSON value) of one fhirpathpy result item."""
    data = get_data(node)
    if isinstance(data, ResourceNode):  # pragma: no cover - get_data unwraps
        data = data.data
    path = node.path if isinstance(node, ResourceNode) else None
    if isinstance(data, dict) and isinstance(data.get("resourceType"), str):
        return "Resource", data
    if isinstance(path, str) and path and "." not in path:
        return path, data
    if isinstance(path, str) and path.startswith("System."):
        return _SYSTEM_TYPES.get(path[7:], path[7:]), data
    if isinstance(data, bool):
        return "boolean", data
    if isinstance(data, int):
        return "integer", data
    if isinstance(data, (float, Decimal)):
        return "decimal", data
    if isinstance(data, str):
        return "string", data
    return "BackboneElement", data


def top_level_union(expression: str) -> list[str]:
    """The branches of a top-level `a | b | c`."""
    parts, depth, start, quoted = [], 0, 0, False
    for i, ch in enumerate(expression):
        if ch == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i])
            start = i + 1
    parts.append(expression[start:])
    return [p.strip() for p in parts if p.strip()]


class FallbackPath:
    """One expression compiled by fhirpathpy (with the R4 model), evaluated on demand.

    Each branch of a top-level union is compiled on its own: fhirpathpy's `|`
    drops the type information of the items, which the converters need.
    """

    def __init__(self, expression: str, resource_type: str, resource_types: frozenset[str]):
        self.expression = rewrite_for_fhirpathpy(expression, resource_type)
        self.resource_types = resource_types
        self._fns = [
            fhirpathpy.compile(part, models["r4"], _OPTIONS)
            for part in top_level_union(self.expression)
        ]

    def _fn(self, target: Any, context: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        for fn in self._fns:
            out += fn(target, context)
        return out

    def evaluate(
        self, root: dict[str, Any], focus: Any = None, focus_path: str | None = None
    ) -> list[tuple[str, Any]]:
        """Typed values for `root`, or for `focus` (a value at element path `focus_path`)."""
        t1, t2 = _ROOT.set(root), _TYPES.set(self.resource_types)
        try:
            target = root if focus is None else create_node(focus, focus_path)
            result = self._fn(target, {"resource": root})
        finally:
            _ROOT.reset(t1)
            _TYPES.reset(t2)
        return [_typed(n) for n in result if get_data(n) is not None]

    def evaluate_nodes(self, root: dict[str, Any]) -> list[tuple[str | None, Any]]:
        """(element path or type, value) of each item: for a composite's base expression."""
        t1, t2 = _ROOT.set(root), _TYPES.set(self.resource_types)
        try:
            result = self._fn(root, {"resource": root})
        finally:
            _ROOT.reset(t1)
            _TYPES.reset(t2)
        return [(n.path if isinstance(n, ResourceNode) else None, get_data(n)) for n in result]
