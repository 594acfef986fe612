"""Validation of a resource against a profile (US Core, HL7 CGM IG): the profile's own rules.

Base R4 validation (`fhir/validation.py`) stays where it is and should run first; this
adds what a profile constrains beyond the base definition: cardinality, fixed and
pattern values, types and their profiles, reference target profiles, slicing,
extensions by URL (and by context, `profile_extensions`), bindings by strength,
FHIRPath invariants and must-support. References resolve to contained resources and
to the entries of a Bundle being validated.

The shipped profiles are compiled with generated snapshots by
`scripts/compile_profiles.py` into `_generated/profiles.json.gz`, which keeps only
elements that constrain more than the base (and their ancestors), so a walk visits
only what the profile says; profiles of loaded packages are built into the same form
at start-up (`profile_snapshots`, `register_profiles`). Discriminators, element lookup
and matching helpers live in `profile_slicing`.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import orjson

from openrecord.fhir.invariants import evaluate_invariant
from openrecord.fhir.outcome import Issue, Severity
from openrecord.fhir.terminology import terminology

__all__ = [
    "ABSENT",
    "Item",
    "Profile",
    "ProfileElement",
    "ProfileWalk",
    "base_profile",
    "codes_in_value_set",
    "codings_of",
    "known_profiles",
    "matches_pattern",
    "profile",
    "profile_type",
    "raw_profile",
    "register_profiles",
    "validate_against",
]

CORE_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
ABSENT = object()


@dataclass(frozen=True, slots=True)
class TypeRule:
    code: str
    profiles: tuple[str, ...]
    target_profiles: tuple[str, ...]


@dataclass(slots=True)
class ProfileElement:
    """One element of a profile's snapshot, with its children and slices."""

    id: str
    name: str  # the last path segment, without slice name (may end in [x])
    slice_name: str | None
    min: int
    max: int | None  # None for "*"
    type_path: str
    fixed: Any = ABSENT
    pattern: Any = ABSENT
    types: tuple[TypeRule, ...] = ()
    binding: tuple[str, str] | None = None
    constraints: tuple[tuple[str, Severity, str, str], ...] = ()
    must_support: bool = False
    discriminators: tuple[tuple[str, str], ...] = ()
    rules: str = "open"
    sliced: bool = False
    children: dict[str, ProfileElement] = field(default_factory=dict)
    slices: list[ProfileElement] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"slice {self.slice_name!r}" if self.slice_name else f"element {self.name!r}"


@dataclass(frozen=True, slots=True)
class Profile:
    url: str
    type: str
    kind: str
    root: ProfileElement


@cache
def _compiled_data() -> dict[str, Any]:
    blob = resources.files("openrecord.fhir").joinpath("_generated/profiles.json.gz")
    data: dict[str, Any] = orjson.loads(gzip.decompress(blob.read_bytes()))
    return data


# Profiles of packages loaded at run time (`openrecord packages add`), by URL. The
# compiled ones (US Core, HL7 CGM IG: shipped) win over a loaded copy of the same URL.
_loaded: dict[str, dict[str, Any]] = {}


def _raw_profiles() -> dict[str, dict[str, Any]]:
    profiles: dict[str, dict[str, Any]] = _compiled_data()["profiles"]
    return profiles


def raw_profile(url: str) -> dict[str, Any] | None:
    """The compact snapshot of profile `url` (shipped first, then loaded), or None."""
    bare = url.split("|")[0]
    return _raw_profiles().get(bare) or _loaded.get(bare)


def base_profile(url: str) -> dict[str, Any] | None:
    """A profile that other profiles may derive from: any profile, or R4 core's own
    resource profiles (vitalsigns, bp…), which are not validated against by themselves."""
    found = raw_profile(url)
    if found is None:
        bases: dict[str, dict[str, Any]] = _compiled_data().get("bases", {})
        found = bases.get(url.split("|")[0])
    return found


def register_profiles(compacts: list[dict[str, Any]]) -> list[str]:
    """Make loaded profiles validatable; returns the URLs added (shipped ones are kept)."""
    added = []
    for c in compacts:
        if c["url"] not in _raw_profiles():
            _loaded[c["url"]] = c
            added.append(c["url"])
    profile.cache_clear()
    return added


@cache
def _ig_value_set(url: str) -> frozenset[tuple[str, str]] | None:
    rows = _compiled_data()["valueSets"].get(url)
    return None if rows is None else frozenset((r[0], r[1]) for r in rows)


def codes_in_value_set(url: str, codings: list[tuple[str | None, str]]) -> bool | None:
    """Whether any of `codings` is in value set `url`; None when it cannot be expanded here."""
    url = url.split("|")[0]
    local = _ig_value_set(url)
    if local is not None:
        return any(
            (s, c) in local or (s is None and any(c == k for _, k in local)) for s, c in codings
        )
    term = terminology()
    if url not in term.value_sets or term.entries(url) is None:
        return None
    return any(term.validate_code(url, s, c).result for s, c in codings)


def known_profiles() -> list[str]:
    """The canonical URLs of every profile: compiled (shipped) and loaded."""
    return sorted({*_raw_profiles(), *_loaded})


@cache
def profile(url: str) -> Profile | None:
    """The compiled profile `url` (a `|version` suffix is ignored), or None."""
    raw = raw_profile(url)
    if raw is None:
        return None
    by_id: dict[str, ProfileElement] = {}
    root: ProfileElement | None = None
    for e in raw["elements"]:
        elem = _element(e)
        by_id[elem.id] = elem
        if "." not in elem.id:
            root = elem
            continue
        parent_id = elem.id.rpartition(".")[0]
        parent = by_id[parent_id]
        if elem.slice_name is None:
            parent.children.setdefault(elem.name, elem)
            existing = parent.children[elem.name]
            if existing is not elem:  # a placeholder made for slices seen first
                elem.slices, elem.sliced = existing.slices, existing.sliced or elem.sliced
                parent.children[elem.name] = elem
            continue
        owner = parent.children.get(elem.name)
        if owner is None:
            owner = ProfileElement(f"{parent_id}.{elem.name}", elem.name, None, 0, None, "")
            parent.children[elem.name] = owner
        owner.slices.append(elem)
    assert root is not None
    return Profile(raw["url"], raw["type"], raw["kind"], root)


def _element(e: dict[str, Any]) -> ProfileElement:
    last = e["id"].rpartition(".")[2]
    name, _, slice_name = last.partition(":")
    slicing = e.get("slicing")
    sev: Callable[[str], Severity] = lambda s: "warning" if s == "warning" else "error"  # noqa: E731
    return ProfileElement(
        id=e["id"],
        name=name,
        slice_name=slice_name or None,
        min=e["min"],
        max=None if e["max"] == "*" else int(e["max"]),
        type_path=e["tp"].replace("[x]", ""),
        fixed=e.get("fixed", ABSENT),
        pattern=e.get("pattern", ABSENT),
        types=tuple(TypeRule(t[0], tuple(t[1]), tuple(t[2])) for t in e.get("types", [])),
        binding=(e["binding"][0], e["binding"][1]) if "binding" in e else None,
        constraints=tuple((c[0], sev(c[1]), c[2], c[3]) for c in e.get("constraints", [])),
        must_support=bool(e.get("ms")),
        discriminators=tuple((d[0], d[1]) for d in slicing["discriminator"]) if slicing else (),
        rules=slicing["rules"] if slicing else "open",
        sliced=slicing is not None,
    )


def profile_type(url: str) -> str | None:
    """The resource or data type a profile URL constrains (core URLs name it)."""
    prof = profile(url)
    if prof is not None:
        return prof.type
    if url.startswith(CORE_PREFIX):
        return url[len(CORE_PREFIX) :]
    return None


def validate_against(resource: Any, profile_url: str) -> list[Issue]:
    """The issues of `resource` against the profile's own constraints (not base R4's)."""
    prof = profile(profile_url)
    if prof is None:
        return [Issue("not-supported", f"profile {profile_url!r} is not known here")]
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    if rtype != prof.type:
        return [
            Issue(
                "invalid", f"profile {prof.url!r} is for {prof.type}, not {rtype}", "error", rtype
            )
        ]
    walk = ProfileWalk(bundle_index(resource) if rtype == "Bundle" else None)
    walk.check(prof.root, [(resource, rtype)], rtype, resource)
    from openrecord.fhir.profile_extensions import extension_context_issues

    return walk.issues + extension_context_issues(resource)


def bundle_index(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The Bundle's entry resources by fullUrl and by `Type/id` (references resolve there)."""
    index: dict[str, dict[str, Any]] = {}
    for entry in bundle.get("entry") or []:
        res = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(res, dict):
            continue
        full = entry.get("fullUrl")
        if isinstance(full, str):
            index[full] = res
        rtype, rid = res.get("resourceType"), res.get("id")
        if isinstance(rtype, str) and isinstance(rid, str):
            index.setdefault(f"{rtype}/{rid}", res)
    return index


# ---------------------------------------------------------------------------------------
# the walk

Item = tuple[Any, str]  # a value and its FHIRPath location


class ProfileWalk:
    """One validation run: the issues found so far."""

    def __init__(
        self,
        bundle: dict[str, dict[str, Any]] | None = None,
        visiting: frozenset[int] = frozenset(),
    ) -> None:
        self.issues: list[Issue] = []
        self.bundle = bundle  # the Bundle being validated: where references resolve
        self.visiting = visiting  # resources being checked up the stack (reference cycles)

    def sub(self, also: Any = None) -> ProfileWalk:
        """A walk of its own issues that resolves references like this one."""
        visiting = self.visiting if also is None else self.visiting | {id(also)}
        return ProfileWalk(self.bundle, visiting)

    def resolve(self, reference: Any, res: Any) -> dict[str, Any] | None:
        """The resource a literal reference points to, if it is contained or in the Bundle."""
        if not isinstance(reference, str):
            return None
        if reference.startswith("#"):
            return _contained(res, reference[1:])
        if not self.bundle:
            return None
        found = self.bundle.get(reference)
        if found is None:
            parts = reference.split("/_history/")[0].split("/")
            if len(parts) >= 2:
                found = self.bundle.get(f"{parts[-2]}/{parts[-1]}")
        return found

    def add(self, code: str, message: str, severity: Severity, path: str) -> None:
        self.issues.append(Issue(code, message, severity, path))

    def check(self, elem: ProfileElement, items: list[Item], where: str, res: Any) -> None:
        """Cardinality of `elem` over its instances, then each instance's rules."""
        n = len(items)
        if n < elem.min:
            self.add(
                "required", f"{elem.label} requires at least {elem.min}, found {n}", "error", where
            )
        if elem.max is not None and n > elem.max:
            self.add(
                "structure", f"{elem.label} allows at most {elem.max}, found {n}", "error", where
            )
        if n == 0 and elem.must_support and elem.min == 0:
            self.add("informational", f"must-support {elem.label} is absent", "information", where)
        for value, path in items:
            if value is not None:
                self.item(elem, value, path, res)
        if elem.slices:
            self.slicing(elem, items, where, res)

    def item(self, elem: ProfileElement, value: Any, path: str, res: Any) -> None:
        if elem.fixed is not ABSENT and value != elem.fixed:
            self.add("value", f"value must be exactly {_show(elem.fixed)}", "error", path)
        if elem.pattern is not ABSENT and not matches_pattern(elem.pattern, value):
            self.add("value", f"value must match the pattern {_show(elem.pattern)}", "error", path)
        if elem.types:
            self.types(elem, value, path, res)
        if elem.binding is not None:
            self.binding(elem.binding, value, path)
        for key, severity, human, expression in elem.constraints:
            if not _holds(expression, value, elem.type_path, res):
                self.add("invariant", f"{key}: {human}", severity, path)
        if elem.children and isinstance(value, dict):
            inner = value if "resourceType" in value and value is not res else res
            for name, child in elem.children.items():
                key, items = child_items(value, name, path)
                if child.types and name.endswith("[x]") and items:
                    self.choice_type(child, key[len(name) - 3 :], items[0][1])
                self.check(child, items, f"{path}.{key}", inner)

    def choice_type(self, elem: ProfileElement, suffix: str, path: str) -> None:
        allowed = {t.code[:1].upper() + t.code[1:] for t in elem.types}
        if suffix not in allowed:
            shown = ", ".join(sorted(allowed))
            self.add("structure", f"type {suffix} is not allowed here ({shown})", "error", path)

    # -- types and references ------------------------------------------------------------

    def types(self, elem: ProfileElement, value: Any, path: str, res: Any) -> None:
        actual = value.get("resourceType") if isinstance(value, dict) else None
        codes = {t.code for t in elem.types}
        if actual is not None and "Resource" not in codes and actual not in codes:
            allowed = ", ".join(sorted(codes))
            self.add("structure", f"type {actual} is not allowed here ({allowed})", "error", path)
            return
        targets = [tp for t in elem.types if t.code == "Reference" for tp in t.target_profiles]
        if targets and isinstance(value, dict):
            self.reference(value, targets, path, res)
        profiles = [p for t in elem.types if t.code != "Reference" for p in t.profiles]
        known = [p for p in profiles if profile(p) is not None]
        if known:
            self.conforms(value, known, path, res)

    def conforms(self, value: Any, urls: list[str], path: str, res: Any) -> bool:
        """Validate `value` against the first of `urls` it meets; report the first's issues."""
        first: list[Issue] | None = None
        for url in urls:
            prof = profile(url)
            assert prof is not None
            sub = self.sub()
            is_resource = isinstance(value, dict) and "resourceType" in value
            if is_resource and value["resourceType"] != prof.type:
                sub.add("structure", f"{prof.url!r} is for {prof.type}", "error", path)
            else:
                sub.check(prof.root, [(value, path)], path, value if is_resource else res)
            if not any(i.severity == "error" for i in sub.issues):
                self.issues.extend(sub.issues)
                return True
            first = sub.issues if first is None else first
        if first is not None:
            self.issues.extend(first)
        return False

    def reference(self, ref: dict[str, Any], targets: list[str], path: str, res: Any) -> None:
        """The target's type, and when the reference resolves (contained, or an entry of
        the Bundle being validated) its conformance to the target profiles."""
        target = ref.get("reference")
        if not isinstance(target, str):
            return
        allowed = {profile_type(t) for t in targets}
        resolved = self.resolve(target, res)
        if resolved is None:
            if target.startswith("#"):
                return
            parts = target.split("/_history/")[0].split("/")
            rtype = parts[-2] if len(parts) >= 2 else None
            if rtype is None or "Resource" in allowed or rtype in allowed:
                return
            self.add("structure", _wrong_target(rtype, targets), "error", f"{path}.reference")
            return
        rtype = resolved.get("resourceType")
        if rtype not in allowed and "Resource" not in allowed:
            self.add("structure", _wrong_target(rtype, targets), "error", path)
            return
        known = [t for t in targets if profile(t) is not None and profile_type(t) == rtype]
        if not known or id(resolved) in self.visiting:
            return
        if not self.sub(resolved).conforms(resolved, known, f"{path}.resolve()", resolved):
            self.add("structure", _wrong_target(rtype, targets), "error", path)

    # -- bindings ------------------------------------------------------------------------

    def binding(self, binding: tuple[str, str], value: Any, path: str) -> None:
        strength, url = binding[0], binding[1].split("|")[0]
        if strength not in ("required", "extensible"):
            return
        codings = codings_of(value)
        if codings is None:
            return
        if not codings:
            if strength == "required":
                self.add(
                    "code-invalid", f"no code from the required value set {url!r}", "error", path
                )
            return
        found = codes_in_value_set(url, codings)
        if found is None:
            self.add(
                "informational",
                f"could not check the {strength} binding: value set {url!r} is not loaded",
                "information",
                path,
            )
            return
        if found:
            return
        shown = ", ".join(f"{s}#{c}" if s else c for s, c in codings)
        if strength == "required":
            self.add(
                "code-invalid", f"{shown} is not in the required value set {url!r}", "error", path
            )
        else:
            self.add(
                "code-invalid",
                f"{shown} is not in the extensible value set {url!r}",
                "warning",
                path,
            )

    # -- slicing -------------------------------------------------------------------------

    def slicing(self, elem: ProfileElement, items: list[Item], where: str, res: Any) -> None:
        from openrecord.fhir.profile_slicing import assign_slices

        assigned, unmatched, unsupported = assign_slices(elem, items, res, self)
        if unsupported:
            self.add(
                "informational",
                f"slicing of {elem.name!r} by {unsupported!r} is not checked",
                "information",
                where,
            )
            return
        first_unmatched = min(unmatched, default=len(items))
        for index, (_, path) in enumerate(items):
            if index in unmatched:
                if elem.rules == "closed":
                    self.add("structure", "matches no slice of a closed slicing", "error", path)
            elif elem.rules == "openAtEnd" and index > first_unmatched:
                self.add(
                    "structure", "open slicing allows other items only at the end", "error", path
                )
        for sl in elem.slices:
            self.check(sl, assigned.get(sl.id, []), where, res)


def child_items(obj: dict[str, Any], name: str, path: str) -> tuple[str, list[Item]]:
    """The JSON key of element `name` in `obj` and its instances with their locations."""
    key = name
    if name.endswith("[x]"):
        prefix = name[:-3]
        key = next(
            (k for k in obj if k.startswith(prefix) and k[len(prefix) : len(prefix) + 1].isupper()),
            prefix,
        )
    value = obj.get(key)
    if value is None:
        ext = obj.get("_" + key)
        if ext is None:
            return key, []
        value = [None] * len(ext) if isinstance(ext, list) else None
        if value is None:
            return key, [(None, f"{path}.{key}")]
    if isinstance(value, list):
        return key, [(v, f"{path}.{key}[{i}]") for i, v in enumerate(value)]
    return key, [(value, f"{path}.{key}")]


def matches_pattern(pattern: Any, value: Any) -> bool:
    """FHIR pattern[x]: every property the pattern has, the value has too (lists: subsets)."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            k in value and matches_pattern(v, value[k]) for k, v in pattern.items()
        )
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value]
        return all(any(matches_pattern(p, v) for v in items) for p in pattern)
    return bool(pattern == value)


def codings_of(value: Any) -> list[tuple[str | None, str]] | None:
    if isinstance(value, str):
        return [(None, value)]
    if not isinstance(value, dict):
        return None
    if "coding" in value or "text" in value:
        return [
            (c.get("system"), c["code"])
            for c in value.get("coding", [])
            if isinstance(c, dict) and isinstance(c.get("code"), str)
        ]
    if isinstance(value.get("code"), str):
        return [(value.get("system"), value["code"])]
    return None


def _contained(res: Any, local_id: str) -> dict[str, Any] | None:
    if not isinstance(res, dict):
        return None
    for c in res.get("contained", []):
        if isinstance(c, dict) and c.get("id") == local_id:
            return c
    return None


def _wrong_target(rtype: str | None, targets: list[str]) -> str:
    names = ", ".join(t.rsplit("/", 1)[-1] for t in targets)
    return f"reference to {rtype} does not meet the target profiles ({names})"


def _show(value: Any) -> str:
    return orjson.dumps(value).decode()


# ---------------------------------------------------------------------------------------
# FHIRPath invariants (fhirpathpy with the R4 model, as fhir/invariants.py does)


def _holds(expression: str, value: Any, type_path: str, res: Any) -> bool:
    """False only when the invariant evaluates to false (empty and failures pass)."""
    return evaluate_invariant(expression, value, type_path, res, res) is not False
