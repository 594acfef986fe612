#!/usr/bin/env python3
"""Compile the official FHIR R4 definitions into the compact data openrecord ships.

Input: the HL7 `hl7.fhir.r4.core` 4.0.1 package (CC0), its expansions package, and the
SearchParameters of US Core that core lacks (`us-core/resources`).
Output: `src/openrecord/fhir/_generated/r4.json.gz`, read by `openrecord.fhir.definitions`.

    python scripts/compile_definitions.py [--shared ../shared/data]

The output holds, for every base type and resource (no profiles):
  types[name] = {kind, abstract, base, elements: {relative.path: element}, constraints: {key: …}}
  element = {min, max (-1 = *), types: [code…], binding?: ValueSet url (required only),
             ref?: relative path of a contentReference, targets?: [type…] for references,
             summary?: 1, modifier?: 1, system?: 1 (plain JSON value, no `_name`),
             constraints?: [key…]}
plus primitive regexes, the required ValueSets enumerated as [system, code] pairs,
search parameters split per resource type, and the compartment definitions.
Run it again whenever the input packages change; the output is deterministic.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import tarfile
from pathlib import Path
from typing import Any

from openrecord.fhir.fhirpath_fallback import top_level_union

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "openrecord" / "fhir" / "_generated" / "r4.json.gz"

FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
SYSTEM_TYPES = {
    "http://hl7.org/fhirpath/System.String": "string",
    "http://hl7.org/fhirpath/System.Boolean": "boolean",
    "http://hl7.org/fhirpath/System.Integer": "integer",
    "http://hl7.org/fhirpath/System.Decimal": "decimal",
    "http://hl7.org/fhirpath/System.Date": "date",
    "http://hl7.org/fhirpath/System.DateTime": "dateTime",
    "http://hl7.org/fhirpath/System.Time": "time",
}


def read_package(path: Path) -> dict[str, dict[str, Any]]:
    """Every JSON resource in an npm-style FHIR package, by file name."""
    out: dict[str, dict[str, Any]] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            name = member.name
            if not member.isfile() or not name.startswith("package/"):
                continue
            base = name.split("/")[-1]
            if base in ("package.json", ".index.json") or "/" in name[len("package/") :]:
                continue
            f = tar.extractfile(member)
            assert f is not None
            try:
                out[base] = json.loads(f.read())
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
    return out


def type_code(t: dict[str, Any]) -> str:
    code: str = t["code"]
    for ext in t.get("extension", []):
        if ext["url"] == FHIR_TYPE_EXT:
            return str(ext["valueUrl"])
    return SYSTEM_TYPES.get(code, code)


def compile_structure(sd: dict[str, Any]) -> dict[str, Any]:
    name = sd["type"]
    elements: dict[str, Any] = {}
    constraints: dict[str, Any] = {}
    for el in sd["snapshot"]["element"]:
        path: str = el["path"]
        for c in el.get("constraint", []):
            constraints[c["key"]] = {
                "severity": c["severity"],
                "expression": c.get("expression"),
                "human": c.get("human", ""),
            }
        rel = path[len(name) + 1 :] if path != name else ""
        keys = [c["key"] for c in el.get("constraint", [])]
        if rel == "":
            elements[""] = {"constraints": keys} if keys else {}
            continue
        info: dict[str, Any] = {"min": el.get("min", 0)}
        mx = el.get("max", "*")
        info["max"] = -1 if mx == "*" else int(mx)
        types = [type_code(t) for t in el.get("type", [])]
        # Resource.id is typed System.String in the snapshot, but the spec defines a
        # resource's logical id as the `id` datatype (regex [A-Za-z0-9\-\.]{1,64}).
        if rel == "id" and sd["kind"] == "resource":
            types = ["id"]
        if types:
            info["types"] = types
        if any(t["code"] in SYSTEM_TYPES for t in el.get("type", [])) and rel != "id":
            info["system"] = 1  # a FHIRPath System type (Element.id, Extension.url): no `_x`
        elif rel == "id" and sd["kind"] != "resource":
            info["system"] = 1
        if "contentReference" in el:
            ref = el["contentReference"].lstrip("#")
            info["ref"] = ref[len(name) + 1 :]
        targets = sorted(
            {
                p.rsplit("/", 1)[-1]
                for t in el.get("type", [])
                if t["code"] in ("Reference", "canonical")
                for p in t.get("targetProfile", [])
            }
        )
        if targets:
            info["targets"] = targets
        binding = el.get("binding")
        if binding and binding.get("strength") == "required" and binding.get("valueSet"):
            info["binding"] = binding["valueSet"].split("|")[0]
        if el.get("isSummary"):
            info["summary"] = 1
        if el.get("isModifier"):
            info["modifier"] = 1
        if keys:
            info["constraints"] = keys
        elements[rel] = info
    return {
        "kind": sd["kind"],
        "abstract": bool(sd.get("abstract")),
        "base": (sd.get("baseDefinition") or "").rsplit("/", 1)[-1] or None,
        "elements": elements,
        "constraints": constraints,
    }


def primitive_regex(sd: dict[str, Any]) -> str | None:
    for el in sd["snapshot"]["element"]:
        if el["path"].endswith(".value"):
            for t in el.get("type", []):
                for ext in t.get("extension", []):
                    if ext["url"] == REGEX_EXT:
                        return str(ext["valueString"])
    return None


def concepts(cs: dict[str, Any]) -> list[str]:
    out: list[str] = []

    def walk(items: list[dict[str, Any]]) -> None:
        for c in items:
            out.append(c["code"])
            walk(c.get("concept", []))

    walk(cs.get("concept", []))
    return out


def expand_value_set(
    url: str,
    value_sets: dict[str, dict[str, Any]],
    code_systems: dict[str, dict[str, Any]],
    expansions: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Enumerate a required ValueSet as [system, code] pairs, or mark it open.

    Preference: compose over CodeSystems in the core package (exact for FHIR-defined
    systems); otherwise the official pre-expansion; otherwise the set is open (an
    external terminology such as BCP-47 or MIME types that we cannot enumerate).
    """
    vs = value_sets.get(url)
    if vs is None:
        return {"open": True}
    codes: set[tuple[str, str]] = set()
    compose = vs.get("compose", {})
    enumerable = bool(compose.get("include"))
    for inc in compose.get("include", []):
        system = inc.get("system")
        if inc.get("valueSet"):
            for sub in inc["valueSet"]:
                res = expand_value_set(sub.split("|")[0], value_sets, code_systems, expansions)
                if res.get("open"):
                    enumerable = False
                else:
                    codes.update((s, c) for s, c in res["codes"])
            if not system:
                continue
        if "concept" in inc:
            codes.update((system, c["code"]) for c in inc["concept"])
        elif inc.get("filter"):
            enumerable = False
        elif system in code_systems and code_systems[system].get("content") == "complete":
            codes.update((system, c) for c in concepts(code_systems[system]))
        else:
            enumerable = False
    if compose.get("exclude"):
        for exc in compose["exclude"]:
            for c in exc.get("concept", []):
                codes.discard((exc.get("system"), c["code"]))
    if not enumerable:
        exp = expansions.get(url)
        if exp and "expansion" in exp:
            flat: set[tuple[str, str]] = set()

            def walk(items: list[dict[str, Any]]) -> None:
                for c in items:
                    if "code" in c:
                        flat.add((c.get("system", ""), c["code"]))
                    walk(c.get("contains", []))

            walk(exp["expansion"].get("contains", []))
            if flat:
                return {"codes": sorted(flat)}
        return {"open": True}
    return {"codes": sorted(codes)}


def split_expression(expression: str, type_name: str) -> str | None:
    """The part of a multi-base search expression that applies to `type_name`.

    R4 writes one expression for all bases ("Account.subject | Condition.subject…");
    we keep the union branches whose root is this type (or a parenthesised branch
    starting with it). Branches rooted at Resource/DomainResource apply to all.
    """
    parts = top_level_union(expression)
    keep = []
    for p in parts:
        root = re.match(r"\(*\s*([A-Za-z]+)", p)
        if root and root.group(1) in (type_name, "Resource", "DomainResource"):
            keep.append(p.strip())
    return " | ".join(keep) if keep else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = ap.parse_args()
    r4 = args.shared / "fhir-r4"
    core = read_package(r4 / "hl7.fhir.r4.core-4.0.1.tgz")
    exp_pkg = read_package(r4 / "hl7.fhir.r4.expansions-4.0.1.tgz")

    structures = [
        r
        for r in core.values()
        if r.get("resourceType") == "StructureDefinition"
        and r["kind"] in ("resource", "complex-type", "primitive-type")
        and r.get("derivation") != "constraint"
    ]
    types: dict[str, Any] = {}
    primitives: dict[str, str] = {}
    for sd in sorted(structures, key=lambda s: s["type"]):
        types[sd["type"]] = compile_structure(sd)
        if sd["kind"] == "primitive-type":
            rx = primitive_regex(sd)
            if rx:
                primitives[sd["type"]] = rx

    value_sets = {
        r["url"]: r for r in core.values() if r.get("resourceType") == "ValueSet" and "url" in r
    }
    code_systems = {
        r["url"]: r for r in core.values() if r.get("resourceType") == "CodeSystem" and "url" in r
    }
    # The expansions package holds two builds; the files without `.json` are the final one.
    expansions: dict[str, dict[str, Any]] = {}
    for _name, r in sorted(exp_pkg.items(), key=lambda kv: kv[0].endswith(".json")):
        if r.get("resourceType") == "ValueSet" and "url" in r:
            expansions.setdefault(r["url"], r)
    required = sorted(
        {el["binding"] for t in types.values() for el in t["elements"].values() if "binding" in el}
    )
    bound = {url: expand_value_set(url, value_sets, code_systems, expansions) for url in required}

    sp_bundle = json.loads((r4 / "search-parameters.json").read_text())
    resource_types = sorted(n for n, t in types.items() if t["kind"] == "resource")
    search: dict[str, dict[str, Any]] = {}
    for entry in sp_bundle["entry"]:
        sp = entry["resource"]
        for base in sp["base"]:
            targets = [base] if base not in ("Resource", "DomainResource") else resource_types
            for t in targets:
                if base == "DomainResource" and t in ("Bundle", "Binary", "Parameters"):
                    continue
                expr = sp.get("expression")
                rec: dict[str, Any] = {"type": sp["type"], "url": sp["url"]}
                if expr:
                    part = split_expression(expr, t)
                    if part is None:
                        continue
                    rec["expression"] = part
                if sp.get("target"):
                    rec["target"] = sorted(sp["target"])
                if sp.get("component"):
                    rec["components"] = [
                        [c["definition"], c["expression"]] for c in sp["component"]
                    ]
                if sp.get("multipleOr") is False:
                    rec["multipleOr"] = False
                search.setdefault(t, {})[sp["code"]] = rec

    # US Core's SearchParameters that R4 core lacks (race, ethnicity, CareTeam role,
    # Condition asserted-date…): the searches US Core servers SHALL support. The ones
    # core already has (same code on the same type) keep core's definition.
    us_core = args.shared / "us-core" / "resources"
    added = 0
    for f in sorted(us_core.glob("SearchParameter-*.json")):
        sp = json.loads(f.read_text())
        for t in sp["base"]:
            if sp["code"] in search.get(t, {}) or t not in types:
                continue
            rec = {"type": sp["type"], "url": sp["url"], "expression": sp["expression"]}
            if sp.get("target"):
                rec["target"] = sorted(sp["target"])
            search.setdefault(t, {})[sp["code"]] = rec
            added += 1
    print(f"{added} search parameters from US Core")

    compartments: dict[str, dict[str, list[str]]] = {}
    for f in sorted((r4 / "compartments").glob("CompartmentDefinition-*.json")):
        cd = json.loads(f.read_text())
        compartments[cd["code"]] = {
            r["code"]: r["param"] for r in cd.get("resource", []) if r.get("param")
        }

    out = {
        "fhirVersion": "4.0.1",
        "types": types,
        "primitives": primitives,
        "valueSets": bound,
        "searchParams": search,
        "compartments": compartments,
    }
    data = json.dumps(out, sort_keys=True, separators=(",", ":")).encode()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    n_open = sum(1 for v in bound.values() if v.get("open"))
    print(
        f"{len(types)} types, {len(primitives)} primitive regexes, {len(bound)} required value sets "
        f"({n_open} open), {sum(len(v) for v in search.values())} search parameters over "
        f"{len(search)} types, {len(compartments)} compartments -> {OUT.relative_to(ROOT)} "
        f"({OUT.stat().st_size // 1024} KiB, {len(data) // 1024} KiB raw)"
    )


if __name__ == "__main__":
    main()
