"""Snapshot generation at run time: a package profile's differential merged onto its base.

Packages loaded with `openrecord packages add` often ship only differentials. Profile
validation (`fhir/profiles.py`) reads a compact snapshot that keeps only what a
profile constrains beyond base R4 (see `scripts/compile_profiles.py`); this builds
that same form from a differential, on top of the base's own compact snapshot — R4
core (nothing beyond base R4) or another profile, shipped or loaded (profiles on
profiles). Each differential element is merged onto the element of the same id, or
onto a new element with the base R4 cardinality of its sliceless path; type slices
of a choice (`value[x]:valueQuantity`) become the concrete element (`valueQuantity`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from openrecord.fhir.definitions import Definitions

__all__ = ["CORE_PREFIX", "SnapshotError", "compact_from_differential", "type_code"]

CORE_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"

Compact = dict[str, Any]


class SnapshotError(ValueError):
    """The differential cannot be placed on its base (unknown base or element)."""


def type_code(t: dict[str, Any]) -> str:
    for ext in t.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == _TYPE_EXT:
            return str(ext.get("valueUrl"))
    return str(t.get("code"))


def _unsliced(eid: str) -> str:
    return ".".join(seg.split(":")[0] for seg in eid.split("."))


def _max(value: int) -> str:
    return "*" if value < 0 else str(value)


def _base_info(defs: Definitions, path: str) -> tuple[int, str, str, set[str], set[str]] | None:
    """min, max, type path, base type codes and base constraint keys of a sliceless path."""
    segs = path.split(".")
    tdef = defs.types.get(segs[0])
    if tdef is None:
        return None
    if len(segs) == 1:
        return 0, "*", segs[0], {segs[0]}, set(tdef.root_constraints)
    node: tuple[str, str] | None = (segs[0], "")
    info: tuple[int, str, str, set[str], set[str]] | None = None
    for seg in segs[1:]:
        if node is None:
            return None
        kids = defs.children(node)
        child = kids.get(seg)
        if child is None and seg.endswith("[x]"):
            generic = next((c for c in kids.values() if c.element.name == seg), None)
            if generic is None:
                return None
            el = generic.element
            info = (el.min, _max(el.max), f"{el.owner}.{el.path}", set(el.types), set())
            info[4].update(el.constraints)
            node = None
            continue
        if child is None or child.primitive_ext:
            return None
        el = child.element
        if el.is_choice:
            prefix = el.path[: -len(el.name)]
            tp = child.type if child.type[:1].isupper() else f"{el.owner}.{prefix}{seg}"
            codes = {child.type}
        else:
            tp, codes = f"{el.owner}.{el.path}", set(el.types)
        info = (el.min, _max(el.max), tp, codes, set(el.constraints))
        node = child.node
    return info


def compact_from_differential(
    sd: dict[str, Any],
    defs: Definitions,
    base_compact: Callable[[str], Compact | None],
) -> Compact:
    """The compact snapshot of StructureDefinition `sd` (constraint, with a differential).

    `base_compact(url)` gives the compact snapshot of a non-core base profile, or None.
    Raises SnapshotError naming what could not be placed.
    """
    url, rtype = sd.get("url"), sd.get("type")
    base_url = str(sd.get("baseDefinition") or "").split("|")[0]
    if not isinstance(url, str) or not isinstance(rtype, str) or rtype not in defs.types:
        raise SnapshotError(f"{url!r}: not a profile of a known R4 type")
    elements: dict[str, dict[str, Any]] = {}
    if base_url == CORE_PREFIX + rtype:
        elements[rtype] = {"id": rtype, "min": 0, "max": "*", "tp": rtype}
    else:
        base = base_compact(base_url)
        if base is None:
            raise SnapshotError(f"{url}: base profile {base_url!r} is not loaded")
        if base.get("type") != rtype:
            raise SnapshotError(f"{url}: base {base_url!r} is for {base.get('type')}, not {rtype}")
        for e in base["elements"]:
            elements[e["id"]] = copy.deepcopy(e)
    diff = sd.get("differential", {}).get("element") or []
    renames: dict[str, str] = {}
    for raw in diff:
        if not isinstance(raw, dict) or not isinstance(raw.get("id") or raw.get("path"), str):
            continue
        eid = str(raw.get("id") or raw.get("path"))
        if "id" not in raw and isinstance(raw.get("sliceName"), str):
            eid = f"{eid}:{raw['sliceName']}"  # element ids are optional in older packages
        for old, new in renames.items():
            if eid == old or eid.startswith(old + "."):
                eid = new + eid[len(old) :]
        head, _, last = eid.rpartition(".")
        name, _, slice_name = last.partition(":")
        types = raw.get("type") or []
        drop_slicing = False
        if name.endswith("[x]") and slice_name and len(types) == 1:
            code = type_code(types[0])
            concrete = name[:-3] + code[:1].upper() + code[1:]
            new_id = f"{head}.{concrete}" if head else concrete
            renames[eid] = new_id
            eid = new_id
        elif name.endswith("[x]") and "slicing" in raw:
            drop_slicing = True  # type slicing of a choice: its slices become concrete names
        target = _place(elements, eid, defs, url)
        _merge(target, raw, drop_slicing)
    out: Compact = {"url": url, "type": rtype, "kind": sd.get("kind", "resource")}
    for e in elements.values():
        e.pop("_codes", None)
        e.pop("_keys", None)
    out["elements"] = list(elements.values())
    context = [
        [str(c.get("type")), str(c.get("expression"))]
        for c in sd.get("context") or []
        if isinstance(c, dict) and c.get("expression")
    ]
    if context:
        out["context"] = context
    return out


def _place(
    elements: dict[str, dict[str, Any]], eid: str, defs: Definitions, url: str
) -> dict[str, Any]:
    """The element `eid`, created (with its ancestors) from the base definitions if new."""
    found = elements.get(eid)
    if found is not None:
        return found
    parts = eid.split(".")
    for i in range(1, len(parts)):
        anc = ".".join(parts[:i])
        if anc not in elements:
            elements[anc] = _new_element(anc, elements, defs, url)
    elements[eid] = _new_element(eid, elements, defs, url)
    return elements[eid]


def _new_element(
    eid: str, elements: dict[str, dict[str, Any]], defs: Definitions, url: str
) -> dict[str, Any]:
    info = _base_info(defs, _unsliced(eid))
    parts = eid.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if info is not None:
            break
        # under an element the profile narrowed to one type (`value[x]` as Period)
        types = elements.get(".".join(parts[:i]), {}).get("types") or []
        if len(types) == 1:
            info = _base_info(defs, _unsliced(".".join([types[0][0], *parts[i:]])))
    if info is None:
        raise SnapshotError(f"{url}: element {eid!r} is not in base R4")
    low, high, tp, codes, keys = info
    if ":" in eid.rsplit(".", 1)[-1]:
        low = 0  # a slice's own cardinality is what the differential says
    return {"id": eid, "min": low, "max": high, "tp": tp, "_codes": codes, "_keys": keys}


def _merge(e: dict[str, Any], diff: dict[str, Any], drop_slicing: bool) -> None:
    codes: set[str] = e.pop("_codes", set())
    keys: set[str] = e.pop("_keys", set())
    if isinstance(diff.get("min"), int):
        e["min"] = diff["min"]
    if isinstance(diff.get("max"), str):
        e["max"] = diff["max"]
    for k, v in diff.items():
        if k.startswith("fixed"):
            e["fixed"] = v
        elif k.startswith("pattern"):
            e["pattern"] = v
    types = [t for t in diff.get("type") or [] if isinstance(t, dict)]
    if types:
        rows = [
            [type_code(t), list(t.get("profile") or []), list(t.get("targetProfile") or [])]
            for t in types
        ]
        narrower = {r[0] for r in rows} != codes
        if narrower or any(r[1] or r[2] for r in rows) or "types" in e:
            e["types"] = rows
    binding = diff.get("binding")
    if isinstance(binding, dict) and binding.get("valueSet") and binding.get("strength"):
        e["binding"] = [str(binding["strength"]), str(binding["valueSet"])]
    constraints = list(e.get("constraints", []))
    have = {c[0] for c in constraints} | keys
    for c in diff.get("constraint") or []:
        if (
            isinstance(c, dict)
            and isinstance(c.get("expression"), str)
            and isinstance(c.get("key"), str)
            and c["key"] not in have
        ):
            constraints.append(
                [str(c["key"]), c.get("severity", "error"), c.get("human", ""), c["expression"]]
            )
    if constraints:
        e["constraints"] = constraints
    if diff.get("mustSupport"):
        e["ms"] = 1
    slicing = diff.get("slicing")
    if isinstance(slicing, dict) and not drop_slicing:
        e["slicing"] = {
            "discriminator": [
                [str(d.get("type")), str(d.get("path"))]
                for d in slicing.get("discriminator") or []
                if isinstance(d, dict)
            ],
            "rules": slicing.get("rules", "open"),
        }
