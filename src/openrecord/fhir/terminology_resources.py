"""CodeSystem, ValueSet and ConceptMap resources of loaded packages added to the terminology.

`openrecord packages add` stores a package's terminology resources as FHIR resources;
at start-up each worker adds them to its in-memory `Terminology` in the compact form
`scripts/compile_terminology.py` writes for R4 core. What ships (R4 core) is never
replaced. Only a CodeSystem whose `content` is `complete` makes its system "known":
a fragment, an example or a `not-present` stub would make codes it omits look
invalid, so those stay "not known" — the same rule as for the systems not loaded at
all. A licensed terminology (a LOINC or SNOMED CT release converted to a complete
CodeSystem resource) is loaded the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from openrecord.fhir.terminology import CodeSystemData, Concept, Terminology, compact_compose

__all__ = ["TerminologyAdded", "add_terminology", "code_system_data", "compact_concept_map"]

_KEPT_PROPERTIES = ("notSelectable", "status", "inactive", "abstract")


@dataclass(slots=True)
class TerminologyAdded:
    code_systems: list[str] = field(default_factory=list)
    value_sets: list[str] = field(default_factory=list)
    concept_maps: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # url and why


def code_system_data(cs: dict[str, Any]) -> CodeSystemData:
    """A complete CodeSystem resource as the terminology holds it (nesting, `parent`
    and `child` properties become parents; a polyhierarchy survives)."""
    concepts: dict[str, tuple[str, list[str], dict[str, Any]]] = {}

    def walk(items: Any, parent: str | None) -> None:
        for c in items if isinstance(items, list) else []:
            if not isinstance(c, dict) or not isinstance(c.get("code"), str):
                continue
            code = c["code"]
            _, parents, props = concepts.setdefault(code, (str(c.get("display") or ""), [], {}))
            if parent is not None and parent not in parents:
                parents.append(parent)
            for p in c.get("property") or []:
                if not isinstance(p, dict):
                    continue
                value = next((v for k, v in p.items() if k.startswith("value")), None)
                if p.get("code") in _KEPT_PROPERTIES and value is not None:
                    props[str(p["code"])] = value
                elif p.get("code") == "parent" and isinstance(value, str):
                    if value not in parents:
                        parents.append(value)
                elif p.get("code") == "child" and isinstance(value, str):
                    kids = concepts.setdefault(value, ("", [], {}))[1]
                    if code not in kids:
                        kids.append(code)
            walk(c.get("concept"), code)

    walk(cs.get("concept"), None)
    built = {
        code: Concept(code, display, tuple(p for p in parents if p in concepts), props)
        for code, (display, parents, props) in concepts.items()
    }
    hierarchical = cs.get("hierarchyMeaning") in (None, "is-a") and any(
        c.parents for c in built.values()
    )
    return CodeSystemData(
        str(cs["url"]),
        str(cs.get("name") or ""),
        str(cs.get("version") or ""),
        hierarchical,
        cs.get("caseSensitive") is not False,
        built,
    )


def compact_concept_map(cm: dict[str, Any]) -> dict[str, Any]:
    """A ConceptMap in the compiled form `fhir/concept_maps.py` reads."""
    out: dict[str, Any] = {"name": cm.get("name", ""), "version": cm.get("version", "")}
    for key in ("source", "target"):
        canonical = cm.get(f"{key}Canonical") or cm.get(f"{key}Uri")
        if isinstance(canonical, str):
            out[key] = canonical.split("|")[0]
    groups = []
    for g in cm.get("group") or []:
        if not isinstance(g, dict):
            continue
        group: dict[str, Any] = {k: g[k] for k in ("source", "target", "unmapped") if k in g}
        elements: dict[str, list[dict[str, Any]]] = {}
        for e in g.get("element") or []:
            if not isinstance(e, dict) or not isinstance(e.get("code"), str):
                continue
            targets = elements.setdefault(e["code"], [])
            for t in e.get("target") or []:
                if isinstance(t, dict) and isinstance(t.get("equivalence"), str):
                    kept = ("code", "equivalence", "display", "dependsOn", "product")
                    targets.append({k: t[k] for k in kept if k in t})
        group["element"] = elements
        groups.append(group)
    out["group"] = groups
    return out


def add_terminology(term: Terminology, resources: list[dict[str, Any]]) -> TerminologyAdded:
    """Add the CodeSystems, ValueSets and ConceptMaps among `resources` (shipped ones win)."""
    added = TerminologyAdded()
    for r in resources:
        url = r.get("url")
        if not isinstance(url, str) or not url:
            continue
        url = url.split("|")[0]
        kind = r.get("resourceType")
        if kind == "CodeSystem":
            if url in term.code_systems:
                added.skipped.append(f"{url} (already loaded)")
            elif r.get("content") != "complete":
                added.skipped.append(f"{url} (content {r.get('content')!r}: codes stay not known)")
            else:
                term.code_systems[url] = code_system_data(r)
                added.code_systems.append(url)
        elif kind == "ValueSet":
            if url in term.value_sets:
                added.skipped.append(f"{url} (already loaded)")
                continue
            vs: dict[str, Any] = {"name": str(r.get("name") or ""), "version": ""}
            vs["version"] = str(r.get("version") or "")
            if isinstance(r.get("compose"), dict):
                vs["compose"] = compact_compose(r["compose"])
            elif isinstance(r.get("expansion"), dict):
                vs["expansion"] = _flat_expansion(term, r["expansion"])
            else:
                added.skipped.append(f"{url} (neither compose nor expansion)")
                continue
            term.value_sets[url] = vs
            added.value_sets.append(url)
        elif kind == "ConceptMap":
            if url in term.concept_maps:
                added.skipped.append(f"{url} (already loaded)")
                continue
            term.concept_maps[url] = compact_concept_map(r)
            added.concept_maps.append(url)
    term._expanded.clear()  # value sets may now expand over the new code systems
    return added


def _flat_expansion(term: Terminology, expansion: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}

    def walk(items: Any) -> None:
        for c in items if isinstance(items, list) else []:
            if not isinstance(c, dict):
                continue
            system, code = c.get("system"), c.get("code")
            if isinstance(system, str) and isinstance(code, str) and not c.get("abstract"):
                out.setdefault(system, []).append(code)
                if c.get("display"):
                    term.displays.setdefault(system, {})[code] = str(c["display"])
            walk(c.get("contains"))

    walk(expansion.get("contains"))
    return out
