#!/usr/bin/env python3
"""Compile the US Core and HL7 CGM IG profiles into the compact form profile validation reads.

Input: the R4 core package (its StructureDefinitions carry snapshots), US Core
(`us-core/resources`) and the HL7 CGM IG (`cgm/hl7-cgm-ig-examples`), which ship only
differentials. Output: `src/openrecord/fhir/_generated/profiles.json.gz`, read by
`openrecord.fhir.profiles`.

    python scripts/compile_profiles.py [--shared ../shared/data]

Snapshots are generated in dependency order (a profile may derive from another): each
differential element is merged onto the element of the same id in its base's snapshot,
or onto a copy of the unsliced element (slices), or onto the element of the datatype it
walks into (`Patient.identifier.system` from `Identifier.system`). Type slices of a
choice (`value[x]:valueQuantity`) become the concrete element (`valueQuantity`).

Only what validation needs is kept: per profile {url, type, kind, context?, elements: [...]}
(R4 core's own resource profiles, such as vitalsigns, under `bases`: the bases of
profiles in packages loaded at run time, see `fhir/profile_snapshots.py`),
plus valueSets[url] = [[system, code]…] for the IGs' value sets that expand over the
loaded R4 code systems (the others are "not loaded": bindings to them are not checked).
An element is kept when it constrains more than the R4 base definition does
(cardinality, fixed/pattern, types and their profiles, a different binding, new
invariants, must-support, slicing) or is an ancestor of one that does:
  {id, min, max, tp (FHIRPath type path of the base element), fixed?, pattern?,
   types?: [[code, [profile…], [targetProfile…]]…], binding?: [strength, valueSet],
   constraints?: [[key, severity, human, expression]…], ms?: 1,
   slicing?: {discriminator: [[type, path]…], rules, ordered?: 1}}
Run it again whenever the inputs change; the output is deterministic.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
from pathlib import Path
from typing import Any

from compile_definitions import read_package

from openrecord.fhir.terminology import CodeSystemData, Concept, compact_compose, terminology

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "openrecord" / "fhir" / "_generated" / "profiles.json.gz"
CORE_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"

Element = dict[str, Any]
Snapshot = dict[str, Element]  # id -> element, in snapshot order


def load_profiles(folder: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(folder.iterdir()):
        if not path.name.lower().startswith("structuredefinition-") or path.suffix != ".json":
            continue
        sd = json.loads(path.read_text())
        if sd.get("derivation") == "constraint" and "differential" in sd:
            out.append(sd)
    return out


def unsliced(eid: str) -> str:
    return ".".join(seg.split(":")[0] for seg in eid.split("."))


def type_code(t: dict[str, Any]) -> str:
    for ext in t.get("extension", []):
        if ext.get("url") == TYPE_EXT:
            return str(ext["valueUrl"])
    return str(t["code"])


class Compiler:
    def __init__(self, core: dict[str, dict[str, Any]]) -> None:
        self.core: dict[str, Snapshot] = {}  # type name -> snapshot
        for sd in core.values():
            if sd.get("resourceType") != "StructureDefinition" or "snapshot" not in sd:
                continue
            if sd.get("derivation") == "specialization" or sd.get("kind") == "logical":
                name = sd["type"] if sd.get("derivation") == "specialization" else sd["id"]
                self.core.setdefault(name, {e["id"]: e for e in sd["snapshot"]["element"]})
        self.snapshots: dict[str, Snapshot] = {}  # url -> generated snapshot
        for sd in core.values():
            if sd.get("resourceType") == "StructureDefinition" and "snapshot" in sd:
                self.snapshots[sd["url"]] = {e["id"]: e for e in sd["snapshot"]["element"]}

    def base_element(self, path: str) -> tuple[Element, str] | None:
        """The R4 element a (sliceless, concrete) path lands on, and its type path."""
        segs = path.split(".")
        snap = self.core.get(segs[0])
        if snap is None:
            return None
        cur = segs[0]
        elem = snap[cur]
        tp = cur
        for seg in segs[1:]:
            cand = f"{cur}.{seg}"
            if cand in snap:
                cur, elem, tp = cand, snap[cand], f"{tp}.{seg}"
                continue
            choice = next(
                (
                    (k, e)
                    for k, e in snap.items()
                    if k.startswith(cur + ".")
                    and k.endswith("[x]")
                    and k.count(".") == cur.count(".") + 1
                    and seg.startswith(k.rsplit(".", 1)[1][:-3])
                ),
                None,
            )
            if choice is not None:
                typ = seg[len(choice[0].rsplit(".", 1)[1]) - 3 :]
                codes = {type_code(t) for t in choice[1].get("type", [])}
                match = next((c for c in codes if c[:1].upper() + c[1:] == typ), None)
                if match is None:
                    return None
                elem = dict(choice[1], type=[{"code": match}])
                cur, tp = choice[0], f"{tp}.{seg}"
                snap_next = self.core.get(match)
                if snap_next is not None and match[:1].isupper():
                    snap, cur, tp = snap_next, match, match
                    elem = dict(
                        snap_next[match], type=[{"code": match}], min=elem["min"], max=elem["max"]
                    )
                continue
            types = [type_code(t) for t in elem.get("type", [])]
            if len(types) != 1 or types[0] not in self.core:
                return None
            snap = self.core[types[0]]
            cur, tp = types[0], types[0]
            if f"{cur}.{seg}" not in snap:
                return None
            cur = f"{cur}.{seg}"
            elem, tp = snap[cur], cur
        return elem, tp

    def snapshot(self, sd: dict[str, Any]) -> Snapshot:
        base = self.snapshots[sd["baseDefinition"]]
        snap: Snapshot = {k: copy.deepcopy(v) for k, v in base.items()}
        renames: dict[str, str] = {}
        for diff in sd["differential"]["element"]:
            eid = diff["id"]
            for old, new in renames.items():
                if eid == old or eid.startswith(old + "."):
                    eid = new + eid[len(old) :]
            head, _, last = eid.rpartition(".")
            name, _, slice_name = last.partition(":")
            if name.endswith("[x]") and slice_name and len(diff.get("type", [])) == 1:
                concrete = name[:-3] + type_code(diff["type"][0])[:1].upper()
                concrete += type_code(diff["type"][0])[1:]
                new_id = f"{head}.{concrete}" if head else concrete
                renames[eid] = new_id
                eid = new_id
                diff = {k: v for k, v in diff.items() if k != "sliceName"}
            elif name.endswith("[x]") and "slicing" in diff:
                diff = {k: v for k, v in diff.items() if k != "slicing"}
            if eid in snap:
                snap[eid].update(copy.deepcopy(diff))
                snap[eid]["id"] = eid
                continue
            if ":" in eid.rsplit(".", 1)[-1]:
                parent = snap.get(eid.rsplit(":", 1)[0])
                found = None if parent is None else (parent, "")
            else:
                parent = snap.get(unsliced(eid))
                found = None if parent is None else (parent, "")
            if found is None:
                resolved = self.base_element(unsliced(eid)) or self.via_ancestor(snap, eid)
                if resolved is None:
                    raise SystemExit(f"{sd['url']}: cannot place {diff['id']}")
                found = (resolved[0], resolved[1])
            elem = copy.deepcopy(found[0])
            for k in ("slicing", "sliceName", "fixed", "pattern", "constraint"):
                elem.pop(k, None)
            if ":" in eid.rsplit(".", 1)[-1]:
                elem["min"] = 0
            for k in [k for k in elem if k.startswith(("fixed", "pattern"))]:
                del elem[k]
            elem.update(copy.deepcopy(diff))
            elem["id"] = eid
            snap[eid] = elem
        self.snapshots[sd["url"]] = snap
        return snap

    def via_ancestor(self, snap: Snapshot, eid: str) -> tuple[Element, str] | None:
        """Place `eid` under the single type its nearest generated ancestor has."""
        parts = eid.split(".")
        for i in range(len(parts) - 1, 0, -1):
            anc = snap.get(".".join(parts[:i]))
            if anc is None:
                continue
            types = [type_code(t) for t in anc.get("type", [])]
            if len(types) != 1:
                return None
            return self.base_element(".".join([types[0], *(unsliced(p) for p in parts[i:])]))
        return None

    def compact(self, sd: dict[str, Any], snap: Snapshot) -> dict[str, Any]:
        kept: dict[str, dict[str, Any]] = {}
        for eid, e in snap.items():
            resolved = self.base_element(unsliced(eid)) or self.via_ancestor(snap, eid)
            base, tp = resolved if resolved is not None else ({}, unsliced(eid))
            out: dict[str, Any] = {"id": eid, "min": e.get("min", 0), "max": e.get("max", "*")}
            out["tp"] = tp
            interesting = ":" in eid.rsplit(".", 1)[-1] or "slicing" in e
            if e.get("min", 0) > base.get("min", 0) or (
                e.get("max") != base.get("max") and e.get("max") is not None
            ):
                interesting = True
            for k, v in e.items():
                if k.startswith("fixed"):
                    out["fixed"] = v
                    interesting = True
                elif k.startswith("pattern"):
                    out["pattern"] = v
                    interesting = True
            types = [
                [type_code(t), t.get("profile", []), t.get("targetProfile", [])]
                for t in e.get("type", [])
            ]
            base_types = [
                [type_code(t), t.get("profile", []), t.get("targetProfile", [])]
                for t in base.get("type", [])
            ]
            if types and base_types and types != base_types:
                out["types"] = types
                interesting = True
            b, bb = e.get("binding", {}), base.get("binding", {})
            if b.get("valueSet") and (
                b.get("valueSet") != bb.get("valueSet") or b.get("strength") != bb.get("strength")
            ):
                out["binding"] = [b["strength"], b["valueSet"]]
                interesting = True
            base_keys = {c["key"] for c in base.get("constraint", [])}
            new = [
                [c["key"], c.get("severity", "error"), c.get("human", ""), c["expression"]]
                for c in e.get("constraint", [])
                if c["key"] not in base_keys and c.get("expression")
            ]
            if new:
                out["constraints"] = new
                interesting = True
            if e.get("mustSupport"):
                out["ms"] = 1
                interesting = True
            if "slicing" in e:
                s = e["slicing"]
                out["slicing"] = {
                    "discriminator": [[d["type"], d["path"]] for d in s.get("discriminator", [])],
                    "rules": s.get("rules", "open"),
                }
                if s.get("ordered"):
                    out["slicing"]["ordered"] = 1
            if interesting or "." not in eid:
                kept[eid] = out
        # ancestors of kept elements
        for eid in list(kept):
            parts = eid.split(".")
            for i in range(1, len(parts)):
                anc = ".".join(parts[:i])
                if anc not in kept and anc in snap:
                    e = snap[anc]
                    resolved = self.base_element(unsliced(anc)) or self.via_ancestor(snap, anc)
                    kept[anc] = {
                        "id": anc,
                        "min": e.get("min", 0),
                        "max": e.get("max", "*"),
                        "tp": resolved[1] if resolved else unsliced(anc),
                    }
        order = {eid: i for i, eid in enumerate(snap)}
        elements = sorted(kept.values(), key=lambda x: order[x["id"]])
        out_sd: dict[str, Any] = {
            "url": sd["url"],
            "type": sd["type"],
            "kind": sd.get("kind", "resource"),
            "elements": elements,
        }
        context = [[c["type"], c["expression"]] for c in sd.get("context", [])]
        if context:
            out_sd["context"] = context
        return out_sd


def flatten_concepts(
    items: list[dict[str, Any]], parent: str | None, out: dict[str, Concept]
) -> None:
    for c in items:
        parents = (parent,) if parent else ()
        out[c["code"]] = Concept(c["code"], c.get("display", ""), parents, {})
        flatten_concepts(c.get("concept", []), c["code"], out)


def compile_value_sets(folders: list[Path]) -> dict[str, list[list[str]]]:
    """The IGs' own value sets that expand over loaded code systems: [[system, code]…]."""
    term = terminology()
    out: dict[str, list[list[str]]] = {}
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if not path.name.lower().startswith("codesystem-") or path.suffix != ".json":
                continue
            cs = json.loads(path.read_text())
            if cs.get("content") != "complete" or cs["url"] in term.code_systems:
                continue
            concepts: dict[str, Concept] = {}
            flatten_concepts(cs.get("concept", []), None, concepts)
            term.code_systems[cs["url"]] = CodeSystemData(
                cs["url"], cs.get("name", ""), cs.get("version", ""), True, True, concepts
            )
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if not path.name.lower().startswith("valueset-") or path.suffix != ".json":
                continue
            vs = json.loads(path.read_text())
            if "compose" not in vs or vs["url"] in term.value_sets:
                continue
            term.value_sets[vs["url"]] = {"compose": compact_compose(vs["compose"])}
            term._expanded.pop(vs["url"], None)
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if not path.name.lower().startswith("valueset-") or path.suffix != ".json":
                continue
            url = json.loads(path.read_text())["url"]
            entries = term.entries(url)
            if entries is not None and url not in out:
                out[url] = sorted([e.system, e.code] for e in entries)
    return dict(sorted(out.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    core = read_package(args.shared / "fhir-r4" / "hl7.fhir.r4.core-4.0.1.tgz")
    compiler = Compiler(core)
    pending = load_profiles(args.shared / "us-core" / "resources") + load_profiles(
        args.shared / "cgm" / "hl7-cgm-ig-examples"
    )
    out: dict[str, Any] = {}
    skipped: list[str] = []
    while pending:
        ready = [sd for sd in pending if sd["baseDefinition"] in compiler.snapshots]
        if not ready:
            skipped = [f"{sd['url']} (base {sd['baseDefinition']} not available)" for sd in pending]
            break
        for sd in ready:
            out[sd["url"]] = compiler.compact(sd, compiler.snapshot(sd))
            pending.remove(sd)
    for s in skipped:
        print("skipped", s)
    # R4 core's own resource profiles (vitalsigns, bp…): bases for loaded packages'
    # profiles, not validated against themselves unless a package is loaded
    bases = {
        sd["url"]: compiler.compact(sd, compiler.snapshots[sd["url"]])
        for sd in sorted(core.values(), key=lambda sd: str(sd.get("url")))
        if sd.get("resourceType") == "StructureDefinition"
        and sd.get("derivation") == "constraint"
        and sd.get("kind") == "resource"
        and "snapshot" in sd
    }
    value_sets = compile_value_sets(
        [args.shared / "us-core" / "resources", args.shared / "cgm" / "hl7-cgm-ig-examples"]
    )
    data = json.dumps(
        {"profiles": dict(sorted(out.items())), "bases": bases, "valueSets": value_sets},
        separators=(",", ":"),
    )
    OUT.write_bytes(gzip.compress(data.encode(), mtime=0))
    print(f"{len(value_sets)} value sets expanded")
    print(f"{len(bases)} R4 core resource profiles kept as bases")
    print(f"{len(out)} profiles -> {OUT} ({OUT.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
