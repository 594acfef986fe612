"""Slice assignment for profile validation: which slice each repeated item belongs to.

Discriminators of type value, pattern, type, profile and exists are evaluated on a
small FHIRPath subset (element names, `ofType(T)`, `extension('url')`, `$this`,
`resolve()`). `resolve()` follows references to contained resources and to entries
of the Bundle being validated; a slicing whose references lead elsewhere (to the
store) is reported as not checked. Extension slices without a declared slicing are sliced by URL, the URL being
the extension's profile.
"""

from __future__ import annotations

import re
from typing import Any

from openrecord.fhir.profiles import (
    ABSENT,
    Item,
    ProfileElement,
    ProfileWalk,
    codes_in_value_set,
    codings_of,
    matches_pattern,
    profile,
)

__all__ = ["assign_slices"]

_TOKEN = re.compile(r"([A-Za-z_$][\w\[\]$]*)(?:\(([^)]*)\))?")
_URL_SLICING = (("value", "url"),)


def assign_slices(
    elem: ProfileElement, items: list[Item], res: Any, walk: ProfileWalk
) -> tuple[dict[str, list[Item]], set[int], str | None]:
    """Items per slice id, indexes matching no slice, or the discriminator we cannot run."""
    discriminators = elem.discriminators
    if not discriminators and elem.name in ("extension", "modifierExtension"):
        discriminators = _URL_SLICING
    for _, path in discriminators:
        if "resolve()" in path and any(
            walk.resolve(_reference_of(value), res) is None for value, _ in items
        ):
            return {}, set(), path
    assigned: dict[str, list[Item]] = {}
    unmatched: set[int] = set()
    for index, (value, path) in enumerate(items):
        candidates = [
            sl
            for sl in elem.slices
            if all(_matches(sl, d, value, res, walk) for d in discriminators)
        ]
        if not candidates:
            unmatched.add(index)
            continue
        chosen = candidates[0]
        if len(candidates) > 1:
            chosen = next((sl for sl in candidates if _conforms(sl, value, res, walk)), chosen)
        assigned.setdefault(chosen.id, []).append((value, path))
    return assigned, unmatched, None


def _tokens(path: str) -> list[tuple[str, str | None]]:
    if path == "$this":
        return []
    return [(m.group(1), m.group(2)) for m in _TOKEN.finditer(path)]


def _reference_of(value: Any) -> Any:
    return value.get("reference") if isinstance(value, dict) else None


def _descend(start: ProfileElement, path: str) -> list[ProfileElement]:
    """The element(s) a discriminator path lands on within a slice, through type profiles
    (and through the target profiles of a reference, for `resolve()`)."""
    current = [start]
    for name, arg in _tokens(path):
        if name == "ofType":
            continue
        if name == "resolve":
            roots = [
                prof.root
                for el in current
                for t in el.types
                for url in t.target_profiles
                if (prof := profile(url)) is not None
            ]
            current = roots
            continue
        nxt: list[ProfileElement] = []
        for el in current:
            child = el.children.get(name)
            if child is None:
                for t in el.types:
                    for url in t.profiles:
                        prof = profile(url)
                        if prof is not None and name in prof.root.children:
                            child = prof.root.children[name]
            if child is None:
                continue
            if name == "extension" and arg is not None:
                url = arg.strip("'\"")
                nxt.extend(sl for sl in child.slices if url in _extension_urls(sl))
            else:
                nxt.append(child)
        current = nxt
    return current


def _navigate(value: Any, path: str, res: Any, walk: ProfileWalk) -> list[Any]:
    values = [value]
    for name, arg in _tokens(path):
        out: list[Any] = []
        for v in values:
            if name == "resolve":
                found = walk.resolve(_reference_of(v), res)
                if found is not None:
                    out.append(found)
                continue
            if name == "ofType":
                if isinstance(v, dict) and v.get("resourceType") == (arg or "").strip():
                    out.append(v)
                continue
            if not isinstance(v, dict):
                continue
            got = v.get(name)
            items = got if isinstance(got, list) else [] if got is None else [got]
            if name == "extension" and arg is not None:
                url = arg.strip("'\"")
                items = [e for e in items if isinstance(e, dict) and e.get("url") == url]
            out.extend(items)
        values = out
    return values


def _extension_urls(sl: ProfileElement) -> set[str]:
    urls = {p for t in sl.types for p in t.profiles}
    url_elem = sl.children.get("url")
    if url_elem is not None and isinstance(url_elem.fixed, str):
        urls.add(url_elem.fixed)
    return urls


def _matches(
    sl: ProfileElement, disc: tuple[str, str], value: Any, res: Any, walk: ProfileWalk
) -> bool:
    kind, path = disc
    targets = _descend(sl, path)
    found = _navigate(value, path, res, walk)
    if kind in ("value", "pattern"):
        if path == "url" and sl.name in ("extension", "modifierExtension"):
            urls = _extension_urls(sl)
            return not urls or any(v in urls for v in found)
        expected = [t for t in targets if t.fixed is not ABSENT or t.pattern is not ABSENT]
        if not expected:
            return _in_required_binding(targets, found)
        return any(
            (t.fixed is not ABSENT and v == t.fixed)
            or (t.pattern is not ABSENT and matches_pattern(t.pattern, v))
            for t in expected
            for v in found
        )
    if kind == "type":
        codes = {t.code for el in targets for t in el.types}
        if not codes:
            return True
        kinds = {v.get("resourceType") for v in found if isinstance(v, dict)}
        return bool(kinds & codes) or "Resource" in codes
    if kind == "profile":
        wanted = [p for el in targets for t in el.types for p in t.profiles if profile(p)]
        return not wanted or any(walk.sub().conforms(v, wanted, "", res) for v in found)
    if kind == "exists":
        if not targets:
            return True
        t = targets[0]
        return bool(found) if t.min >= 1 else not found if t.max == 0 else True
    return False


def _in_required_binding(targets: list[ProfileElement], found: list[Any]) -> bool:
    """A value discriminator met by a required binding (the spec allows that for codes)."""
    bound = [t.binding[1] for t in targets if t.binding and t.binding[0] == "required"]
    if not bound:
        return True
    for url in bound:
        for v in found:
            codings = codings_of(v)
            if codings and codes_in_value_set(url, codings) is not False:
                return True
    return False


def _conforms(sl: ProfileElement, value: Any, res: Any, walk: ProfileWalk) -> bool:
    """Whether `value` meets the slice's own rules (to choose between matching slices)."""
    sub = walk.sub()
    sub.check(sl, [(value, "")], "", res)
    return not any(i.severity == "error" for i in sub.issues)
