#!/usr/bin/env python3
"""Compile the R4 core CodeSystems and ValueSets into the terminology openrecord ships.

Input: the HL7 `hl7.fhir.r4.core` 4.0.1 package and `hl7.fhir.r4.expansions` 4.0.1 (CC0).
Output: `src/openrecord/fhir/_generated/terminology.json.gz`, read by
`openrecord.fhir.terminology`.

    python scripts/compile_terminology.py [--shared ../shared/data]

The output keeps only what the terminology operations need:
  codeSystems[url] = {name, version, hierarchy?: "is-a", caseSensitive?: 0,
                      concepts: [[code, display, [parent code…], {property: value}?]…]}
    (complete code systems only; parents join the nesting and the `child`/`parent`
    properties, so a polyhierarchy such as v3-ActCode survives; kept properties are
    notSelectable, status, inactive and abstract)
  valueSets[url] = {name, version, compose?: {include: [...], exclude: [...], inactive?},
                    expansion?: {system: [code…]}}
  conceptMaps[url] = {name, version, source?, target?, group: [{source?, target?,
                      element: {code: [{code?, equivalence, display?, dependsOn?,
                      product?}…]}, unmapped?}]}  (every ConceptMap of the core package,
    comments and element displays left out), for `ConceptMap/$translate`
  displays[system] = {code: display} for the codes of every kept pre-expansion
    (`expansion` is the official pre-expansion, kept only where the compose cannot be
    evaluated from the loaded code systems — LOINC or SNOMED CT subsets, filters we
    do not run — and only when the official expansion is closed; the SNOMED CT
    subsets overlap, so each display is stored once.)
Definitions, designations and other properties are left out to keep the file small.
Run it again whenever the input packages change; the output is deterministic.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path
from typing import Any

from compile_definitions import read_package

from openrecord.fhir.terminology import compact_compose

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "openrecord" / "fhir" / "_generated" / "terminology.json.gz"

KEPT_PROPERTIES = ("notSelectable", "status", "inactive", "abstract")
# Compose filters the runtime evaluates on a loaded code system (terminology.py).
RUNNABLE_FILTERS = frozenset({"is-a", "descendent-of", "is-not-a", "=", "regex"})
UNCLOSED = (
    "http://hl7.org/fhir/StructureDefinition/valueset-unclosed",
    "http://hl7.org/fhir/StructureDefinition/valueset-toocostly",
)


def compile_code_system(cs: dict[str, Any]) -> dict[str, Any]:
    rows: dict[str, list[Any]] = {}
    parents: dict[str, list[str]] = {}

    def walk(items: list[dict[str, Any]], parent: str | None) -> None:
        for c in items:
            code = c["code"]
            props: dict[str, Any] = {}
            ps = parents.setdefault(code, [])
            if parent is not None and parent not in ps:
                ps.append(parent)
            for p in c.get("property", []):
                value = next((v for k, v in p.items() if k.startswith("value")), None)
                if p["code"] in KEPT_PROPERTIES and value is not None:
                    props[p["code"]] = value
                elif p["code"] == "parent" and isinstance(value, str) and value not in ps:
                    ps.append(value)
                elif p["code"] == "child" and isinstance(value, str):
                    kids = parents.setdefault(value, [])
                    if code not in kids:
                        kids.append(code)
            rows.setdefault(code, [code, c.get("display", ""), ps, props])
            walk(c.get("concept", []), code)

    walk(cs.get("concept", []), None)
    concepts = []
    for code, display, ps, props in rows.values():
        row: list[Any] = [code, display, sorted(p for p in ps if p in rows)]
        if props:
            row.append(props)
        concepts.append(row)
    out: dict[str, Any] = {
        "name": cs.get("name", ""),
        "version": cs.get("version", ""),
        "concepts": concepts,
    }
    if cs.get("hierarchyMeaning") == "is-a" or any(r[2] for r in concepts):
        out["hierarchy"] = "is-a"
    if cs.get("caseSensitive") is False:
        out["caseSensitive"] = 0
    return out


def runnable(
    url: str,
    value_sets: dict[str, dict[str, Any]],
    systems: dict[str, Any],
    seen: frozenset[str] = frozenset(),
) -> bool:
    """Whether the compose of `url` can be evaluated from the loaded code systems alone."""
    vs = value_sets.get(url)
    if vs is None or url in seen or not vs.get("compose", {}).get("include"):
        return False
    compose = vs["compose"]
    for inc in compose.get("include", []) + compose.get("exclude", []):
        system = inc.get("system")
        if system and system not in systems:
            return False
        if any(f["op"] not in RUNNABLE_FILTERS for f in inc.get("filter", [])):
            return False
        for f in inc.get("filter", []):
            if f["op"] == "=" and f["property"] not in ("concept", "code", *KEPT_PROPERTIES):
                return False
        for sub in inc.get("valueSet", []):
            if not runnable(sub.split("|")[0], value_sets, systems, seen | {url}):
                return False
    return True


def flat_expansion(exp: dict[str, Any]) -> list[list[str]] | None:
    expansion = exp.get("expansion") or {}
    if any(
        e.get("url") in UNCLOSED and e.get("valueBoolean") for e in expansion.get("extension", [])
    ):
        return None
    out: list[list[str]] = []
    seen: set[tuple[str, str]] = set()

    def walk(items: list[dict[str, Any]]) -> None:
        for c in items:
            key = (c.get("system", ""), c.get("code", ""))
            if "code" in c and key not in seen and not c.get("abstract"):
                seen.add(key)
                out.append([key[0], key[1], c.get("display", "")])
            walk(c.get("contains", []))

    walk(expansion.get("contains", []))
    return out


def compile_concept_map(cm: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": cm.get("name", ""), "version": cm.get("version", "")}
    for key in ("source", "target"):
        canonical = cm.get(f"{key}Canonical") or cm.get(f"{key}Uri")
        if canonical:
            out[key] = canonical
    groups = []
    for g in cm.get("group", []):
        group: dict[str, Any] = {k: g[k] for k in ("source", "target", "unmapped") if k in g}
        elements: dict[str, list[dict[str, Any]]] = {}
        for e in g.get("element", []):
            if "code" not in e:
                continue
            targets = elements.setdefault(e["code"], [])
            for t in e.get("target", []):
                kept = ("code", "equivalence", "display", "dependsOn", "product")
                targets.append({k: t[k] for k in kept if k in t})
        group["element"] = elements
        groups.append(group)
    out["group"] = groups
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = ap.parse_args()
    r4 = args.shared / "fhir-r4"
    core = read_package(r4 / "hl7.fhir.r4.core-4.0.1.tgz")
    exp_pkg = read_package(r4 / "hl7.fhir.r4.expansions-4.0.1.tgz")

    code_systems = {
        r["url"]: compile_code_system(r)
        for r in sorted(core.values(), key=lambda r: str(r.get("url")))
        if r.get("resourceType") == "CodeSystem" and r.get("content") == "complete"
    }
    raw_value_sets = {
        r["url"]: r for r in core.values() if r.get("resourceType") == "ValueSet" and "url" in r
    }
    # The expansions package holds two builds; the files without `.json` are the final one.
    expansions: dict[str, dict[str, Any]] = {}
    for _name, r in sorted(exp_pkg.items(), key=lambda kv: (kv[0].endswith(".json"), kv[0])):
        if r.get("resourceType") == "ValueSet" and "url" in r:
            expansions.setdefault(r["url"], r)

    value_sets: dict[str, Any] = {}
    displays: dict[str, dict[str, str]] = {}
    n_pre = 0
    for url in sorted(raw_value_sets):
        vs = raw_value_sets[url]
        entry: dict[str, Any] = {"name": vs.get("name", ""), "version": vs.get("version", "")}
        if runnable(url, raw_value_sets, code_systems):
            entry["compose"] = compact_compose(vs["compose"])
        else:
            flat = flat_expansion(expansions[url]) if url in expansions else None
            if flat is not None:
                by_system: dict[str, list[str]] = {}
                for system, code, display in flat:
                    by_system.setdefault(system, []).append(code)
                    displays.setdefault(system, {}).setdefault(code, display)
                entry["expansion"] = by_system
                n_pre += 1
        value_sets[url] = entry
    concept_maps = {
        r["url"]: compile_concept_map(r)
        for r in sorted(core.values(), key=lambda r: str(r.get("url")))
        if r.get("resourceType") == "ConceptMap" and "url" in r
    }

    out = {
        "fhirVersion": "4.0.1",
        "codeSystems": code_systems,
        "valueSets": value_sets,
        "displays": displays,
        "conceptMaps": concept_maps,
    }
    data = json.dumps(out, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    n_none = sum(1 for v in value_sets.values() if "compose" not in v and "expansion" not in v)
    print(
        f"{len(code_systems)} code systems "
        f"({sum(len(c['concepts']) for c in code_systems.values())} concepts), "
        f"{len(value_sets)} value sets ({n_pre} pre-expanded, {n_none} not expandable), "
        f"{len(concept_maps)} concept maps "
        f"-> {OUT.relative_to(ROOT)} ({OUT.stat().st_size // 1024} KiB, "
        f"{len(data) // 1024} KiB raw)"
    )


if __name__ == "__main__":
    main()
