"""The R4 definitions, loaded from the compiled data in `_generated/` (see scripts/).

Everything the server knows about resource types, elements, bindings, search
parameters and compartments comes from here; nothing is written per resource.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import orjson

__all__ = [
    "Child",
    "Definitions",
    "ElementDef",
    "SearchParamDef",
    "TypeDef",
    "ValueSetCodes",
    "definitions",
]

PRIMITIVE_JSON_NAMES = frozenset(
    [
        "base64Binary",
        "boolean",
        "canonical",
        "code",
        "date",
        "dateTime",
        "decimal",
        "id",
        "instant",
        "integer",
        "markdown",
        "oid",
        "positiveInt",
        "string",
        "time",
        "unsignedInt",
        "uri",
        "url",
        "uuid",
        "xhtml",
    ]
)


@dataclass(frozen=True, slots=True)
class Constraint:
    key: str
    severity: str
    expression: str | None
    human: str


@dataclass(slots=True)
class ElementDef:
    """One element of a type, e.g. Observation `component.code` or `value[x]`."""

    owner: str  # the type that declares it
    path: str  # relative to the owner; "" for the root
    min: int
    max: int  # -1 = unbounded
    types: tuple[str, ...]
    binding: str | None
    ref: str | None  # contentReference target path (relative to owner)
    targets: tuple[str, ...]
    summary: bool
    modifier: bool
    constraints: tuple[str, ...]
    system: bool = False  # a FHIRPath System type (Element.id, Extension.url): no `_name`

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @property
    def is_array(self) -> bool:
        return self.max != 1 and self.max != 0

    @property
    def is_choice(self) -> bool:
        return self.path.endswith("[x]")


@dataclass(frozen=True, slots=True)
class Child:
    """What a JSON property name means in its parent: the element and the concrete type."""

    element: ElementDef
    type: str  # concrete type code (for choices, the chosen one)
    node: tuple[str, str]  # (owner type, relative path) whose children this child has
    primitive_ext: bool = False  # a `_name` property: the id/extension part of a primitive


@dataclass(slots=True)
class TypeDef:
    name: str
    kind: str  # resource | complex-type | primitive-type
    abstract: bool
    base: str | None
    elements: dict[str, ElementDef]
    constraints: dict[str, Constraint]
    root_constraints: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SearchParamDef:
    code: str
    type: str  # number date string token reference composite quantity uri special
    url: str
    expression: str | None
    targets: tuple[str, ...] = ()
    components: tuple[tuple[str, str], ...] = ()  # (definition url, relative expression)


@dataclass(frozen=True, slots=True)
class ValueSetCodes:
    url: str
    open: bool  # not enumerable here (external terminology): any code is accepted
    codes: frozenset[tuple[str, str]]  # (system, code)
    bare_codes: frozenset[str]  # codes alone, for `code` elements which carry no system


@dataclass
class Definitions:
    fhir_version: str
    types: dict[str, TypeDef]
    primitive_patterns: dict[str, re.Pattern[str]]
    value_sets: dict[str, ValueSetCodes]
    search_params: dict[str, dict[str, SearchParamDef]]
    compartments: dict[str, dict[str, tuple[str, ...]]]
    resource_types: frozenset[str] = frozenset()
    _children: dict[tuple[str, str], dict[str, Child]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.resource_types = frozenset(
            n for n, t in self.types.items() if t.kind == "resource" and not t.abstract
        )

    def element(self, type_name: str, path: str) -> ElementDef | None:
        t = self.types.get(type_name)
        return t.elements.get(path) if t else None

    def children(self, node: tuple[str, str]) -> dict[str, Child]:
        """JSON property name -> Child, for the element at `node` = (owner type, path).

        `node` is ("Observation", "") for a resource root, ("Observation", "component")
        for a backbone element, ("Quantity", "") for a datatype.
        """
        found = self._children.get(node)
        if found is None:
            found = self._children[node] = self._build_children(node)
        return found

    def _build_children(self, node: tuple[str, str]) -> dict[str, Child]:
        owner, path = node
        tdef = self.types[owner]
        prefix = f"{path}." if path else ""
        out: dict[str, Child] = {}
        for rel, el in tdef.elements.items():
            if not rel.startswith(prefix) or "." in rel[len(prefix) :] or rel == path:
                continue
            if el.ref is not None:
                target = tdef.elements[el.ref]
                sub = (owner, el.ref)
                types = target.types
            else:
                sub = (owner, rel)
                types = el.types
            name = el.name
            if name.endswith("[x]"):
                stem = name[:-3]
                for t in types:
                    key = stem + t[0].upper() + t[1:]
                    out[key] = Child(el, t, self._node_for(owner, sub, t))
                    if t in PRIMITIVE_JSON_NAMES:
                        out["_" + key] = Child(el, t, ("Element", ""), primitive_ext=True)
                continue
            t = types[0] if types else "Element"
            out[name] = Child(el, t, self._node_for(owner, sub, t))
            if t in PRIMITIVE_JSON_NAMES and not el.system:
                out["_" + name] = Child(el, t, ("Element", ""), primitive_ext=True)
        return out

    def _node_for(self, owner: str, sub: tuple[str, str], type_code: str) -> tuple[str, str]:
        # Backbone elements keep their children inline in the owner's definition.
        if type_code in ("BackboneElement", "Element") and any(
            k.startswith(sub[1] + ".") for k in self.types[owner].elements
        ):
            return sub
        return (type_code, "")

    def search_param(self, resource_type: str, code: str) -> SearchParamDef | None:
        return self.search_params.get(resource_type, {}).get(code)


def _load_type(name: str, raw: dict[str, Any]) -> TypeDef:
    elements: dict[str, ElementDef] = {}
    root: tuple[str, ...] = ()
    for rel, e in raw["elements"].items():
        if rel == "":
            root = tuple(e.get("constraints", ()))
            continue
        elements[rel] = ElementDef(
            owner=name,
            path=rel,
            min=e["min"],
            max=e["max"],
            types=tuple(e.get("types", ())),
            binding=e.get("binding"),
            ref=e.get("ref"),
            targets=tuple(e.get("targets", ())),
            summary=bool(e.get("summary")),
            modifier=bool(e.get("modifier")),
            constraints=tuple(e.get("constraints", ())),
            system=bool(e.get("system")),
        )
    constraints = {
        k: Constraint(k, c["severity"], c.get("expression"), c.get("human", ""))
        for k, c in raw["constraints"].items()
    }
    return TypeDef(
        name,
        raw["kind"],
        raw["abstract"],
        raw["base"],
        elements,
        constraints,
        root_constraints=root,
    )


@cache
def definitions() -> Definitions:
    """The R4 core definitions (loaded once per process, ~0.1 s)."""
    blob = resources.files("openrecord.fhir").joinpath("_generated/r4.json.gz").read_bytes()
    raw = orjson.loads(gzip.decompress(blob))
    types = {n: _load_type(n, t) for n, t in raw["types"].items()}
    patterns = {n: re.compile(rx) for n, rx in raw["primitives"].items()}
    value_sets = {
        url: ValueSetCodes(
            url,
            bool(v.get("open")),
            frozenset((s, c) for s, c in v.get("codes", ())),
            frozenset(c for _, c in v.get("codes", ())),
        )
        for url, v in raw["valueSets"].items()
    }
    search = {
        t: {
            code: SearchParamDef(
                code,
                p["type"],
                p["url"],
                p.get("expression"),
                tuple(p.get("target", ())),
                tuple((d, e) for d, e in p.get("components", ())),
            )
            for code, p in params.items()
        }
        for t, params in raw["searchParams"].items()
    }
    compartments = {
        c: {t: tuple(ps) for t, ps in members.items()} for c, members in raw["compartments"].items()
    }
    return Definitions(raw["fhirVersion"], types, patterns, value_sets, search, compartments)
