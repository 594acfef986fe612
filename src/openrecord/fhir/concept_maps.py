"""`ConceptMap/$translate` over the ConceptMaps of the R4 core package.

The maps are compiled into the terminology data by `scripts/compile_terminology.py`.
A code is looked up in every group whose source system is the code's system, in the
map named by `url` or in the maps between the `source` and `target` value sets. Map
targets that depend on other elements (`dependsOn`) are left out and said so: the
`dependency` input is not taken yet, and a mapping whose condition cannot be checked
must not be offered as if it held. `unmapped` rules and `reverse` are not run either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from openrecord.fhir.outcome import FHIRError
from openrecord.fhir.terminology import Terminology

__all__ = ["Match", "Translation", "translate"]

# equivalences that say the source concept is not represented by the target
_NO_MATCH = frozenset({"unmatched", "disjoint"})


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
) -> Translation:
    """The mappings of `system|code` in the chosen maps (404 for an unknown `url`)."""
    maps = _chosen_maps(term, url, source, target)
    matches: list[Match] = []
    conditional = 0
    for map_url, cm in maps:
        for group in cm.get("group", []):
            if group.get("source") != system:
                continue
            if target_system is not None and group.get("target") != target_system:
                continue
            for t in group.get("element", {}).get(code, []):
                if t.get("dependsOn"):
                    conditional += 1
                    continue
                target_code = t.get("code")
                target_sys = group.get("target") if target_code else None
                matches.append(
                    Match(
                        t["equivalence"],
                        target_sys,
                        target_code,
                        t.get("display") or _display(term, target_sys, target_code),
                        map_url,
                        tuple(t.get("product", ())),
                    )
                )
    result = any(m.equivalence not in _NO_MATCH for m in matches)
    notes = []
    if not matches:
        notes.append(f"no mapping for {system}|{code} in {_describe(maps, url)}")
    if conditional:
        notes.append(
            f"{conditional} mapping(s) depend on other elements (dependsOn) and were left out: "
            "the dependency parameter is not supported yet"
        )
    return Translation(result, "; ".join(notes) or None, matches)


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
