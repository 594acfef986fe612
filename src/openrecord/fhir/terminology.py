"""Terminology services over the R4 core CodeSystems and ValueSets (terminology-service.html).

The data is compiled from the core and expansions packages by
`scripts/compile_terminology.py`. Value sets over code systems we hold are expanded
from their compose (include/exclude, concept lists, `is-a`/`descendent-of`/`is-not-a`/
`=`/`regex` filters, nested value sets); those over external terminologies (SNOMED CT,
LOINC subsets…) answer their official pre-expansion. Anything outside what is loaded
is "not known" — never silently valid.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import orjson

from openrecord.fhir.outcome import FHIRError

__all__ = [
    "CodeSystemData",
    "Concept",
    "Expansion",
    "ExpansionEntry",
    "Lookup",
    "Terminology",
    "ValidationResult",
    "compact_compose",
    "terminology",
]

SUBSUMPTION_OUTCOMES = ("equivalent", "subsumes", "subsumed-by", "not-subsumed")


@dataclass(frozen=True, slots=True)
class Concept:
    code: str
    display: str
    parents: tuple[str, ...]
    properties: dict[str, Any]

    @property
    def abstract(self) -> bool:
        return bool(self.properties.get("notSelectable") or self.properties.get("abstract"))

    @property
    def inactive(self) -> bool:
        return bool(self.properties.get("inactive")) or self.properties.get("status") == "retired"


@dataclass(slots=True)
class CodeSystemData:
    url: str
    name: str
    version: str
    hierarchical: bool
    case_sensitive: bool
    concepts: dict[str, Concept]
    _children: dict[str, list[str]] | None = None
    _folded: dict[str, str] | None = None

    def get(self, code: str) -> Concept | None:
        found = self.concepts.get(code)
        if found is None and not self.case_sensitive:
            if self._folded is None:
                self._folded = {c.lower(): c for c in self.concepts}
            real = self._folded.get(code.lower())
            found = self.concepts.get(real) if real else None
        return found

    def descendants(self, code: str) -> list[str]:
        """Every code below `code` (any depth, polyhierarchy followed), without `code`."""
        if self._children is None:
            kids: dict[str, list[str]] = {}
            for c in self.concepts.values():
                for p in c.parents:
                    kids.setdefault(p, []).append(c.code)
            self._children = kids
        out: list[str] = []
        seen = {code}
        stack = list(reversed(self._children.get(code, [])))
        while stack:
            below = stack.pop()
            if below in seen:
                continue
            seen.add(below)
            out.append(below)
            stack.extend(reversed(self._children.get(below, [])))
        return out

    def ancestors(self, code: str) -> set[str]:
        out: set[str] = set()
        stack = list(self.concepts[code].parents) if code in self.concepts else []
        while stack:
            c = stack.pop()
            if c in out or c not in self.concepts:
                continue
            out.add(c)
            stack.extend(self.concepts[c].parents)
        return out


@dataclass(frozen=True, slots=True)
class ExpansionEntry:
    system: str
    code: str
    display: str


@dataclass(frozen=True, slots=True)
class Expansion:
    url: str
    name: str
    version: str
    total: int  # matches before paging
    offset: int
    contains: tuple[ExpansionEntry, ...]
    source: str  # "compose" | "pre-expansion"


@dataclass(frozen=True, slots=True)
class Lookup:
    system: str
    name: str
    version: str
    code: str
    display: str
    abstract: bool
    parents: tuple[str, ...]
    children: tuple[str, ...]
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ValidationResult:
    result: bool
    message: str | None
    display: str | None  # the display the value set or code system gives the code


class Terminology:
    """The loaded code systems and value sets, with the operations over them."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.code_systems: dict[str, CodeSystemData] = {
            url: CodeSystemData(
                url,
                cs.get("name", ""),
                cs.get("version", ""),
                cs.get("hierarchy") == "is-a",
                cs.get("caseSensitive", 1) != 0,
                {
                    row[0]: Concept(row[0], row[1], tuple(row[2]), row[3] if len(row) > 3 else {})
                    for row in cs["concepts"]
                },
            )
            for url, cs in raw["codeSystems"].items()
        }
        self.value_sets: dict[str, dict[str, Any]] = raw["valueSets"]
        self.displays: dict[str, dict[str, str]] = raw["displays"]
        # ConceptMap/$translate (fhir/concept_maps.py); the compiled layout is in the script
        self.concept_maps: dict[str, dict[str, Any]] = raw.get("conceptMaps", {})
        self._expanded: dict[str, tuple[ExpansionEntry, ...] | None] = {}

    # -- CodeSystem ------------------------------------------------------------------------

    def code_system(self, system: str, version: str | None = None) -> CodeSystemData:
        cs = self.code_systems.get(system)
        if cs is None:
            raise FHIRError.of(404, "not-found", f"code system {system!r} is not known", "system")
        if version and cs.version and version != cs.version:
            raise FHIRError.of(
                404,
                "not-found",
                f"code system {system!r} version {version!r} is not known (have {cs.version})",
                "version",
            )
        return cs

    def lookup(self, system: str, code: str, version: str | None = None) -> Lookup:
        cs = self.code_system(system, version)
        concept = cs.get(code)
        if concept is None:
            raise FHIRError.of(
                404, "not-found", f"code {code!r} is not known in code system {system!r}", "code"
            )
        return Lookup(
            system,
            cs.name,
            cs.version,
            concept.code,
            concept.display,
            concept.abstract,
            concept.parents,
            tuple(c.code for c in cs.concepts.values() if concept.code in c.parents),
            dict(concept.properties),
        )

    def subsumes(self, system: str, code_a: str, code_b: str, version: str | None = None) -> str:
        """`equivalent`, `subsumes` (A is an ancestor of B), `subsumed-by` or `not-subsumed`."""
        cs = self.code_system(system, version)
        found = []
        for name, code in (("codeA", code_a), ("codeB", code_b)):
            concept = cs.get(code)
            if concept is None:
                raise FHIRError.of(
                    404, "not-found", f"code {code!r} is not known in code system {system!r}", name
                )
            found.append(concept.code)
        a, b = found
        if a == b:
            return "equivalent"
        if a in cs.ancestors(b):
            return "subsumes"
        if b in cs.ancestors(a):
            return "subsumed-by"
        return "not-subsumed"

    # -- ValueSet --------------------------------------------------------------------------

    def value_set(self, url: str) -> dict[str, Any]:
        vs = self.value_sets.get(url.split("|")[0])
        if vs is None:
            raise FHIRError.of(404, "not-found", f"value set {url!r} is not known", "url")
        return vs

    def expand(
        self, url: str, filter: str | None = None, count: int | None = None, offset: int = 0
    ) -> Expansion:
        """The value set's codes; `filter` keeps those whose code or display contains it."""
        url = url.split("|")[0]
        vs = self.value_set(url)
        return self._page(url, vs, self.entries(url), filter, count, offset)

    def expand_resource(
        self,
        resource: dict[str, Any],
        filter: str | None = None,
        count: int | None = None,
        offset: int = 0,
    ) -> Expansion:
        """Expand a ValueSet resource (e.g. a stored one) by its compose, else by its url."""
        url = str(resource.get("url") or "")
        compose = resource.get("compose")
        if not isinstance(compose, dict):
            if url.split("|")[0] in self.value_sets:
                return self.expand(url, filter, count, offset)
            raise FHIRError.of(
                422, "not-supported", "the value set has no compose to expand", "ValueSet.compose"
            )
        vs = {
            "name": str(resource.get("name") or ""),
            "version": str(resource.get("version") or ""),
            "compose": compact_compose(compose),
        }
        return self._page(url, vs, self._entries_of(vs, frozenset()), filter, count, offset)

    @staticmethod
    def _page(
        url: str,
        vs: dict[str, Any],
        entries: tuple[ExpansionEntry, ...] | None,
        filter: str | None,
        count: int | None,
        offset: int,
    ) -> Expansion:
        if entries is None:
            raise FHIRError.of(
                422,
                "too-costly",
                f"value set {url!r} draws on a terminology that is not loaded here; "
                "it cannot be expanded",
                "url",
            )
        if filter:
            needle = filter.lower()
            entries = tuple(
                e for e in entries if needle in e.code.lower() or needle in e.display.lower()
            )
        page = entries[offset:] if count is None else entries[offset : offset + count]
        source = "compose" if "compose" in vs else "pre-expansion"
        return Expansion(
            url, vs.get("name", ""), vs.get("version", ""), len(entries), offset, page, source
        )

    def validate_code(
        self, url: str, system: str | None, code: str, display: str | None = None
    ) -> ValidationResult:
        url = url.split("|")[0]
        self.value_set(url)
        entries = self.entries(url)
        if entries is None:
            return ValidationResult(
                False,
                f"value set {url!r} draws on a terminology that is not loaded here: "
                f"code {code!r} is not known",
                None,
            )
        matches = [e for e in entries if e.code == code and (system is None or e.system == system)]
        if (
            not matches
            and system in self.code_systems
            and not self.code_systems[system].case_sensitive
        ):
            matches = [e for e in entries if e.system == system and e.code.lower() == code.lower()]
        if len({e.system for e in matches}) > 1:
            return ValidationResult(
                False, f"code {code!r} is in several systems of {url!r}: give a system", None
            )
        if not matches:
            where = f"{system}#{code}" if system else repr(code)
            return ValidationResult(False, f"{where} is not in value set {url!r}", None)
        entry = matches[0]
        if display is not None and display.strip().lower() != entry.display.strip().lower():
            return ValidationResult(
                True,
                f"display {display!r} does not match {entry.display!r} for "
                f"{entry.system}#{entry.code}",
                entry.display,
            )
        return ValidationResult(True, None, entry.display)

    def entries(self, url: str) -> tuple[ExpansionEntry, ...] | None:
        """The whole expansion of `url` (cached), or None where it cannot be computed."""
        if url not in self._expanded:
            self._expanded[url] = self._compute(url, frozenset())
        return self._expanded[url]

    def _compute(self, url: str, seen: frozenset[str]) -> tuple[ExpansionEntry, ...] | None:
        vs = self.value_sets.get(url)
        if vs is None or url in seen:
            return None
        return self._entries_of(vs, seen | {url})

    def _entries_of(
        self, vs: dict[str, Any], seen: frozenset[str]
    ) -> tuple[ExpansionEntry, ...] | None:
        if "expansion" in vs:
            return tuple(
                ExpansionEntry(system, code, self.displays.get(system, {}).get(code, ""))
                for system, codes in vs["expansion"].items()
                for code in codes
            )
        compose = vs.get("compose")
        if not compose:
            return None
        keep_inactive = compose.get("inactive", 1) != 0
        included: dict[tuple[str, str], str] = {}
        for inc in compose.get("include", []):
            part = self._part(inc, seen, keep_inactive)
            if part is None:
                return None
            for key, display in part.items():
                included.setdefault(key, display)
        for exc in compose.get("exclude", []):
            part = self._part(exc, seen, True)
            if part is None:
                return None
            for key in part:
                included.pop(key, None)
        return tuple(ExpansionEntry(s, c, d) for (s, c), d in included.items())

    def _part(
        self, inc: dict[str, Any], seen: frozenset[str], keep_inactive: bool
    ) -> dict[tuple[str, str], str] | None:
        """One include/exclude: its system part intersected with its value sets."""
        out: dict[tuple[str, str], str] | None = None
        system = inc.get("system")
        if system:
            cs = self.code_systems.get(system)
            if cs is None:
                return None
            if "concept" in inc:
                out = {}
                for code, display in inc["concept"]:
                    concept = cs.get(code)
                    if concept is not None:
                        out[(system, concept.code)] = display or concept.display
            else:
                codes = self._filtered(cs, inc.get("filter", []))
                if codes is None:
                    return None
                # Like the official expansions, a whole system or a filter leaves out
                # abstract (notSelectable) codes; an explicit concept list keeps them.
                out = {
                    (system, c.code): c.display
                    for c in codes
                    if not c.abstract and (keep_inactive or not c.inactive)
                }
        for sub in inc.get("valueSet", []):
            entries = self._compute(sub, seen)
            if entries is None:
                return None
            theirs = {(e.system, e.code): e.display for e in entries}
            out = theirs if out is None else {k: v for k, v in out.items() if k in theirs}
        return out if out is not None else {}

    @staticmethod
    def _filtered(cs: CodeSystemData, filters: list[list[str]]) -> list[Concept] | None:
        selected: Iterable[Concept] = cs.concepts.values()
        for prop, op, value in filters:
            if op in ("is-a", "descendent-of", "is-not-a") and prop == "concept":
                root = cs.get(value)
                below = set(cs.descendants(root.code)) if root else set()
                if op == "is-a" and root:
                    below.add(root.code)
                if op == "is-not-a":
                    if root:
                        below.add(root.code)
                    selected = [c for c in selected if c.code not in below]
                else:
                    selected = [c for c in selected if c.code in below]
            elif op == "=" and prop in ("concept", "code"):
                selected = [c for c in selected if c.code == value]
            elif op == "=":
                selected = [
                    c for c in selected if str(c.properties.get(prop, "")).lower() == value.lower()
                ]
            elif op == "regex" and prop == "code":
                try:
                    pattern = re.compile(value)
                except re.error:
                    raise FHIRError.of(
                        400, "invalid", f"filter regex {value!r} is not a valid expression"
                    ) from None
                selected = [c for c in selected if pattern.fullmatch(c.code)]
            else:
                return None
        return list(selected)


def compact_compose(compose: dict[str, Any]) -> dict[str, Any]:
    """A ValueSet.compose in the compiled form: concepts as [code, display], filters as
    [property, op, value], value set canonicals without their version."""
    out: dict[str, Any] = {}
    for part in ("include", "exclude"):
        items = []
        for inc in compose.get(part) or []:
            if not isinstance(inc, dict):
                continue
            item: dict[str, Any] = {}
            if inc.get("system"):
                item["system"] = str(inc["system"])
            if inc.get("concept"):
                item["concept"] = [
                    [str(c.get("code")), str(c.get("display") or "")] for c in inc["concept"]
                ]
            if inc.get("filter"):
                item["filter"] = [
                    [str(f.get("property")), str(f.get("op")), str(f.get("value"))]
                    for f in inc["filter"]
                ]
            if inc.get("valueSet"):
                item["valueSet"] = [str(v).split("|")[0] for v in inc["valueSet"]]
            items.append(item)
        if items:
            out[part] = items
    if compose.get("inactive") is False:
        out["inactive"] = 0
    return out


@cache
def terminology() -> Terminology:
    """The R4 core terminology (loaded once per process)."""
    blob = resources.files("openrecord.fhir").joinpath("_generated/terminology.json.gz")
    return Terminology(orjson.loads(gzip.decompress(blob.read_bytes())))
