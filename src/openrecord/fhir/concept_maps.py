"""`ConceptMap/$translate` over the ConceptMaps of the R4 core package and loaded packages.

The maps are compiled into the terminology data by `scripts/compile_terminology.py`
(packages' maps by `fhir/terminology_resources.py`). A code is looked up in every
group whose source system is the code's system, in the map named by `url` or in the
maps between the `source` and `target` value sets.

- `dependsOn`: a mapping that depends on other elements holds only when the request's
  `dependency` inputs (element + concept) satisfy each condition; without them it is
  left out and the message says so — a condition that cannot be checked must not be
  offered as if it held.
- `unmapped` (group rule for source codes the group does not list): `provided` answers
  the code itself (equivalence `equal`), `fixed` the given code (equivalence
  `inexact`: the map states no equivalence), `other-map` the answer of that map.
  A code listed as `unmatched` is not "unmapped".
- `reverse=true`: the codes that map *to* system|code: groups are read target to
  source, equivalences inverted (`wider` ↔ `narrower`, `subsumes` ↔ `specializes`);
  the forward mapping's `dependsOn` come back as products and its products become
  conditions on the `dependency` inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from openrecord.fhir.outcome import FHIRError
from openrecord.fhir.terminology import Terminology

__all__ = ["Dependency", "Match", "Translation", "translate"]

# equivalences that say the source concept is not represented by the target
_NO_MATCH = frozenset({"unmatched", "disjoint"})
_INVERSE = {
    "wider": "narrower",
    "narrower": "wider",
    "subsumes": "specializes",
    "specializes": "subsumes",
}
_MAX_OTHER_MAPS = 5  # `other-map` chains


@dataclass(frozen=True, slots=True)
class Dependency:
    """A `dependency` input: the element (a property URI) and a coded value."""

    element: str
    codings: tuple[tuple[str | None, str], ...]  # (system, code)


@dataclass(frozen=True, slots=True)
class Match:
    equivalence: str
    system: str | None
    code: str | None
    display: str | None
    source: str  # the canonical URL of the ConceptMap that gave it
    product: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Translation:
    result: bool  # at least one match that is neither unmatched nor disjoint
    message: str | None
    matches: list[Match] = field(default_factory=list)


def translate(
    term: Terminology,
    system: str,
    code: str,
    *,
    url: str | None = None,
    source: str | None = None,
    target: str | None = None,
    target_system: str | None = None,
    reverse: bool = False,
    dependencies: tuple[Dependency, ...] = (),
) -> Translation:
    """The mappings of `system|code` in the chosen maps (404 for an unknown `url`)."""
    if reverse:
        source, target = target, source
    maps = _chosen_maps(term, url, source, target)
    matches: list[Match] = []
    conditional = [0]
    for map_url, cm in maps:
        if reverse:
            matches += _reverse(
                term, map_url, cm, system, code, target_system, dependencies, conditional
            )
        else:
            matches += _forward(
                term, map_url, cm, system, code, target_system, dependencies, conditional, 0
            )
    result = any(m.equivalence not in _NO_MATCH for m in matches)
    notes = []
    if not matches:
        notes.append(f"no mapping for {system}|{code} in {_describe(maps, url)}")
    if conditional[0]:
        notes.append(
            f"{conditional[0]} mapping(s) depend on other elements (dependsOn) that the "
            "dependency parameters do not satisfy and were left out"
        )
    return Translation(result, "; ".join(notes) or None, matches)


def _holds(conditions: list[dict[str, Any]], dependencies: tuple[Dependency, ...]) -> bool:
    """Whether every condition {property, system?, value} is met by a dependency input."""
    for cond in conditions:
        if not any(
            d.element == cond.get("property")
            and any(
                c == cond.get("value") and (cond.get("system") is None or s == cond.get("system"))
                for s, c in d.codings
            )
            for d in dependencies
        ):
            return False
    return True


def _forward(
    term: Terminology,
    map_url: str,
    cm: dict[str, Any],
    system: str,
    code: str,
    target_system: str | None,
    dependencies: tuple[Dependency, ...],
    conditional: list[int],
    depth: int,
) -> list[Match]:
    out: list[Match] = []
    for group in cm.get("group", []):
        if group.get("source") != system:
            continue
        if target_system is not None and group.get("target") != target_system:
            continue
        targets = group.get("element", {}).get(code)
        if targets is None:
            out += _unmapped(term, map_url, group, system, code, dependencies, conditional, depth)
            continue
        for t in targets:
            if t.get("dependsOn") and not _holds(t["dependsOn"], dependencies):
                conditional[0] += 1
                continue
            target_code = t.get("code")
            target_sys = group.get("target") if target_code else None
            out.append(
                Match(
                    t["equivalence"],
                    target_sys,
                    target_code,
                    t.get("display") or _display(term, target_sys, target_code),
                    map_url,
                    tuple(t.get("product", ())),
                )
            )
    return out


def _unmapped(
    term: Terminology,
    map_url: str,
    group: dict[str, Any],
    system: str,
    code: str,
    dependencies: tuple[Dependency, ...],
    conditional: list[int],
    depth: int,
) -> list[Match]:
    rule = group.get("unmapped")
    if not isinstance(rule, dict):
        return []
    mode = rule.get("mode")
    target_sys = group.get("target")
    if mode == "provided":
        return [Match("equal", target_sys, code, _display(term, target_sys, code), map_url)]
    if mode == "fixed" and isinstance(rule.get("code"), str):
        fixed = rule["code"]
        display = rule.get("display") or _display(term, target_sys, fixed)
        return [Match("inexact", target_sys, fixed, display, map_url)]
    other = str(rule.get("url") or "").split("|")[0]
    if mode == "other-map" and depth < _MAX_OTHER_MAPS and other in term.concept_maps:
        return _forward(
            term,
            other,
            term.concept_maps[other],
            system,
            code,
            None,
            dependencies,
            conditional,
            depth + 1,
        )
    return []


def _reverse(
    term: Terminology,
    map_url: str,
    cm: dict[str, Any],
    system: str,
    code: str,
    source_system: str | None,
    dependencies: tuple[Dependency, ...],
    conditional: list[int],
) -> list[Match]:
    out: list[Match] = []
    for group in cm.get("group", []):
        if group.get("target") != system:
            continue
        if source_system is not None and group.get("source") != source_system:
            continue
        origin = group.get("source")
        for source_code, targets in group.get("element", {}).items():
            for t in targets:
                if t.get("code") != code or t["equivalence"] in _NO_MATCH:
                    continue
                if t.get("product") and not _holds(t["product"], dependencies):
                    conditional[0] += 1
                    continue
                out.append(
                    Match(
                        _INVERSE.get(t["equivalence"], t["equivalence"]),
                        origin,
                        source_code,
                        _display(term, origin, source_code),
                        map_url,
                        tuple(t.get("dependsOn", ())),
                    )
                )
    return out


def _chosen_maps(
    term: Terminology, url: str | None, source: str | None, target: str | None
) -> list[tuple[str, dict[str, Any]]]:
    if url is not None:
        bare = url.split("|")[0]
        cm = term.concept_maps.get(bare)
        if cm is None:
            raise FHIRError.of(404, "not-found", f"concept map {url!r} is not known", "url")
        return [(bare, cm)]
    source = source.split("|")[0] if source else None
    target = target.split("|")[0] if target else None
    return [
        (u, cm)
        for u, cm in sorted(term.concept_maps.items())
        if (source is None or cm.get("source") == source)
        and (target is None or cm.get("target") == target)
    ]


def _describe(maps: list[tuple[str, dict[str, Any]]], url: str | None) -> str:
    if url is not None:
        return f"concept map {url}"
    return f"{len(maps)} concept map(s)" if maps else "any concept map between these value sets"


def _display(term: Terminology, system: str | None, code: str | None) -> str | None:
    if system is None or code is None:
        return None
    cs = term.code_systems.get(system)
    concept = cs.get(code) if cs is not None else None
    return concept.display or None if concept is not None else None
