"""The official R4 core and expansions packages, read straight from their .tgz files.

Terminology tests compare openrecord's answers against these, independently of the
compiled data in `src/openrecord/fhir/_generated/`.
"""

from __future__ import annotations

import json
import tarfile
from functools import cache
from typing import Any

from tests.shared_data import require_shared

__all__ = ["UNCLOSED", "code_system", "official_codes", "official_expansions"]

UNCLOSED = (
    "http://hl7.org/fhir/StructureDefinition/valueset-unclosed",
    "http://hl7.org/fhir/StructureDefinition/valueset-toocostly",
)


@cache
def _package(name: str) -> dict[str, dict[str, Any]]:
    path = require_shared("fhir-r4", name)
    out: dict[str, dict[str, Any]] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            rest = member.name.removeprefix("package/")
            if not member.isfile() or "/" in rest or rest in ("package.json", ".index.json"):
                continue
            f = tar.extractfile(member)
            assert f is not None
            try:
                out[rest] = json.loads(f.read())
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
    return out


def code_system(url: str) -> dict[str, Any]:
    """The CodeSystem resource with this canonical URL from the core package."""
    for r in _package("hl7.fhir.r4.core-4.0.1.tgz").values():
        if r.get("resourceType") == "CodeSystem" and r.get("url") == url:
            return r
    raise KeyError(url)


@cache
def official_expansions() -> dict[str, dict[str, Any]]:
    """url -> expanded ValueSet (the final build: files without `.json` win)."""
    found: dict[str, dict[str, Any]] = {}
    items = sorted(
        _package("hl7.fhir.r4.expansions-4.0.1.tgz").items(),
        key=lambda kv: (kv[0].endswith(".json"), kv[0]),
    )
    for _name, r in items:
        if r.get("resourceType") == "ValueSet" and "url" in r:
            found.setdefault(r["url"], r)
    return found


def official_codes(url: str) -> set[tuple[str, str]] | None:
    """The selectable (system, code) pairs of the official expansion; None if it is not closed."""
    vs = official_expansions().get(url)
    if vs is None:
        return None
    expansion = vs.get("expansion", {})
    if any(e.get("url") in UNCLOSED for e in expansion.get("extension", [])):
        return None
    out: set[tuple[str, str]] = set()

    def walk(items: list[dict[str, Any]]) -> None:
        for c in items:
            if "code" in c and not c.get("abstract"):
                out.add((c["system"], c["code"]))
            walk(c.get("contains", []))

    walk(expansion.get("contains", []))
    return out
