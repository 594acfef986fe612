"""The FHIRPath invariants (constraints) of the base R4 spec, as checks on JSON values.

Validation runs on every write and fhirpathpy costs 50-500 µs per evaluation, so
the invariants met on ordinary clinical data are re-implemented natively here;
the rest are compiled once with fhirpathpy and evaluated only where the element
occurs. Invariants the validator enforces structurally (ele-1, ext-1, dom-2..5,
ref-1) never come through here; known-broken ones are skipped (see SKIPPED).

Semantics: an invariant is violated only when it evaluates to `false`; an empty
result (FHIRPath's "unknown", e.g. comparing dates of different precision) passes.
Native checks follow the expressions; where an element they test is itself missing
(a required element, already reported by cardinality) they may report what FHIRPath
would leave empty. Where the R4 expression is defective they check its evident intent
and say so (con-3, que-7, the *-0 name rules).

fhirpathpy gaps found and covered here: it lacks hasValue() (supplied as a user
function), compares dateTimes without normalising zones (per-1, mdd-1, Task inv-1
are native), evaluates `answer is Boolean` on a choice as false (que-7 is native),
and prints trace() output (silenced).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from fhirpathpy import compile as fhirpath_compile
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models

from openrecord.fhir.definitions import definitions
from openrecord.fhir.outcome import Severity

__all__ = [
    "FAILED_INVARIANTS",
    "SKIPPED",
    "SKIPPED_PREFIX",
    "STRUCTURAL",
    "Invariant",
    "choice_keys",
    "compare_datetimes",
    "invariants_for",
]

Json = dict[str, Any]
NativeCheck = Callable[[Json, Json], bool]  # (element value, %resource) -> holds

UCUM = "http://unitsofmeasure.org"

# Enforced by the validator's own walk (cheaper, and with precise locations).
STRUCTURAL = frozenset({"ele-1", "ext-1", "dom-2", "dom-3", "dom-4", "dom-5", "ref-1"})

# Invariants not evaluated, and why.
SKIPPED: dict[str, str] = {
    "txt-1": "htmlChecks() is not a FHIRPath function; xhtml content rules need an XHTML parser",
    "txt-2": "htmlChecks() is not a FHIRPath function; xhtml content rules need an XHTML parser",
    "eld-11": "as written it cannot fail: type.select(<boolean>) is never empty when types exist",
}

# Keys whose expression fhirpathpy failed to compile or crashed on; they pass.
FAILED_INVARIANTS: set[str] = set()


@dataclass(frozen=True, slots=True)
class Invariant:
    """One constraint, ready to run on an element instance."""

    key: str
    severity: Severity  # "error" or "warning"
    human: str
    native: NativeCheck | None
    expression: str | None

    def holds(self, value: Any, type_path: str, resource: Json, root: Json) -> bool:
        """False only when the constraint evaluates to false on `value`."""
        if self.native is not None:
            return self.native(value, resource)
        assert self.expression is not None
        return _fhirpath_holds(self.key, self.expression, value, type_path, resource, root)


# StructureDefinition's own invariants (sdf-*) are skipped as a family: R4's are known
# to be unreliable (sdf-4 rejects the spec's logical models Definition, Event, FiveWs
# and Request), and through fhirpathpy they cost ~60 ms per StructureDefinition, ten
# times the rest of its validation. Profiles are not this server's clinical data.
SKIPPED_PREFIX = "sdf-"


def _skipped(key: str) -> bool:
    return key in SKIPPED or key.startswith(SKIPPED_PREFIX)


def invariants_for(owner: str, keys: Iterable[str]) -> tuple[Invariant, ...]:
    """The runnable invariants among `keys`, declared by the type `owner`."""
    return _invariants_for(owner, tuple(keys))


@cache
def _invariants_for(owner: str, keys: tuple[str, ...]) -> tuple[Invariant, ...]:
    tdef = definitions().types[owner]
    out: list[Invariant] = []
    for key in keys:
        if key in STRUCTURAL or _skipped(key):
            continue
        c = tdef.constraints.get(key)
        if c is None:
            continue
        native = (
            NATIVE.get((owner, key))
            or NATIVE.get(("*", key))
            or NATIVE_BY_EXPRESSION.get(c.expression or "")
        )
        if native is None and not c.expression:
            continue
        sev: Severity = "warning" if c.severity == "warning" else "error"
        out.append(Invariant(key, sev, c.human, native, None if native else c.expression))
    return tuple(out)


# ---------------------------------------------------------------------------------------
# fhirpathpy fallback


def _has_value(inputs: list[Any]) -> bool:
    """FHIRPath hasValue(), which fhirpathpy lacks: a single primitive with a value."""
    return len(inputs) == 1 and inputs[0] is not None and not isinstance(inputs[0], dict | list)


def _quiet_trace(*_: Any) -> None:
    """trace() must not print (fhirpathpy prints by default)."""


_OPTIONS = {
    "userInvocationTable": {"hasValue": {"fn": _has_value}},
    "traceFn": _quiet_trace,
}


# A JSON value with its FHIR type, so fhirpathpy can navigate choices and compare dates.
_typed_node: Callable[[Any, str], Any] = ResourceNode.create_node


@cache
def _compiled(expression: str) -> Callable[..., Any] | None:
    try:
        fn: Callable[..., Any] = fhirpath_compile(expression, models["r4"], _OPTIONS)
    except Exception:
        return None
    return fn


def _fhirpath_holds(
    key: str, expression: str, value: Any, type_path: str, resource: Json, root: Json
) -> bool:
    fn = _compiled(expression)
    if fn is None:
        FAILED_INVARIANTS.add(key)
        return True
    node = _typed_node(value, type_path)
    try:
        result = fn(node, {"resource": resource, "rootResource": root, "context": value})
    except Exception:
        FAILED_INVARIANTS.add(key)
        return True
    return bool(result != [False])


# ---------------------------------------------------------------------------------------
# helpers for native checks


def _present(obj: Json, name: str) -> bool:
    """FHIRPath `name.exists()`: a primitive exists with a value or just extensions."""
    return name in obj or "_" + name in obj


def _items(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


def _has_coding(concept: Any, system: str, codes: Iterable[str]) -> bool:
    if not isinstance(concept, dict):
        return False
    wanted = set(codes)
    return any(
        isinstance(c, dict) and c.get("system") == system and c.get("code") in wanted
        for c in _items(concept.get("coding"))
    )


def _has_choice(obj: Json, stem: str) -> bool:
    """Whether any variant `stem[x]` (e.g. valueQuantity) is present."""
    n = len(stem)
    return any(k.startswith(stem) and k[n : n + 1].isupper() for k in obj) or any(
        k.startswith("_" + stem) and k[n + 1 : n + 2].isupper() for k in obj
    )


@cache
def choice_keys(owner: str, path: str) -> frozenset[str]:
    """The JSON names of a choice element's variants, e.g. valueQuantity, _valueString."""
    parent = path.rsplit(".", 1)[0] if "." in path else ""
    children = definitions().children((owner, parent))
    return frozenset(k for k, c in children.items() if c.element.path == path)


_OBS_VALUE = choice_keys("Observation", "value[x]")
_CON_ABATEMENT = choice_keys("Condition", "abatement[x]")
_GOAL_DETAIL = choice_keys("Goal", "target.detail[x]")
_MAD_RATE = choice_keys("MedicationAdministration", "dosage.rate[x]")

_DATE_PART = re.compile(r"\d{4}(-\d{2}(-\d{2})?)?")


def compare_datetimes(a: Any, b: Any) -> int | None:
    """FHIRPath comparison of two date/dateTime strings: -1, 0, 1, or None if unknown.

    Values with a time are compared as instants (zones normalised); otherwise
    compared to the shorter precision, and equal-but-differently-precise is None.
    """
    if not isinstance(a, str) or not isinstance(b, str):
        return None
    if "T" in a and "T" in b:
        try:
            x, y = datetime.fromisoformat(a), datetime.fromisoformat(b)
        except ValueError:
            return None
        if (x.tzinfo is None) != (y.tzinfo is None):
            return None
        return (x > y) - (x < y)
    da, db = a.split("T", 1)[0], b.split("T", 1)[0]
    if not _DATE_PART.fullmatch(da) or not _DATE_PART.fullmatch(db):
        return None
    n = min(len(da), len(db))
    if da[:n] != db[:n]:
        return -1 if da[:n] < db[:n] else 1
    return 0 if len(da) == len(db) and ("T" in a) == ("T" in b) else None


def _quantity_le(low: Any, high: Any) -> bool:
    """Range/Ratio `low <= high` where comparable (same unit); otherwise unknown → holds."""
    if not isinstance(low, dict) or not isinstance(high, dict):
        return True
    lv, hv = low.get("value"), high.get("value")
    if not isinstance(lv, int | float) or not isinstance(hv, int | float):
        return True
    same_unit = (low.get("system"), low.get("code"), low.get("unit")) == (
        high.get("system"),
        high.get("code"),
        high.get("unit"),
    )
    return not same_unit or bool(lv <= hv)


# ---------------------------------------------------------------------------------------
# native checks, keyed by (declaring type or "*", key)


def _dom_6(r: Json, _: Json) -> bool:
    text = r.get("text")
    return isinstance(text, dict) and "div" in text


def _per_1(p: Json, _: Json) -> bool:
    start, end = p.get("start"), p.get("end")
    if start is None or end is None:
        return True
    return compare_datetimes(start, end) != 1


def _qty_3(q: Json, _: Json) -> bool:
    return "code" not in q or _present(q, "system")


def _ucum_quantity(q: Json) -> bool:
    """Shared part of age-1 / dis-1 / cnt-3: a code if a value, and only UCUM."""
    return (_present(q, "code") or "value" not in q) and q.get("system", UCUM) == UCUM


def _age_1(q: Json, _: Json) -> bool:
    value = q.get("value")
    return _ucum_quantity(q) and (not isinstance(value, int | float) or value > 0)


def _dis_1(q: Json, _: Json) -> bool:
    return _ucum_quantity(q)


def _cnt_3(q: Json, _: Json) -> bool:
    value = q.get("value")
    return (
        _ucum_quantity(q)
        and q.get("code", "1") == "1"
        and not isinstance(value, float)  # a JSON number with a '.' or exponent
    )


def _drt_1(q: Json, _: Json) -> bool:
    return "code" not in q or (q.get("system") == UCUM and _present(q, "value"))


def _cpt_2(c: Json, _: Json) -> bool:
    return "value" not in c or _present(c, "system")


def _att_1(a: Json, _: Json) -> bool:
    return "data" not in a or _present(a, "contentType")


def _rng_2(r: Json, _: Json) -> bool:
    return _quantity_le(r.get("low"), r.get("high"))


def _rat_1(r: Json, _: Json) -> bool:
    num, den = "numerator" in r, "denominator" in r
    return num == den and (num or "extension" in r)


def _tim(r: Json, _: Json, a: str, b: str) -> bool:
    return a not in r or _present(r, b)


def _nonneg(r: Json, name: str) -> bool:
    v = r.get(name)
    return not isinstance(v, int | float) or v >= 0


def _tim_9(r: Json, _: Json) -> bool:
    when = r.get("when")
    return "offset" not in r or (
        "when" in r and not any(w in ("C", "CM", "CD", "CV") for w in _items(when))
    )


def _obs_3(r: Json, _: Json) -> bool:
    return "low" in r or "high" in r or _present(r, "text")


def _obs_6(o: Json, _: Json) -> bool:
    return "dataAbsentReason" not in o or _OBS_VALUE.isdisjoint(o)


def _codings(concept: Any) -> list[tuple[Any, Any]]:
    if not isinstance(concept, dict):
        return []
    return [(c.get("system"), c.get("code")) for c in _items(concept.get("coding")) if c]


def _obs_7(o: Json, _: Json) -> bool:
    if _OBS_VALUE.isdisjoint(o):
        return True
    own = set(_codings(o.get("code")))
    return not any(
        own.intersection(_codings(c.get("code"))) for c in _items(o.get("component")) if c
    )


_CON_VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
_CON_CLIN = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_AIT_VER = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"


def _con_3(c: Json, _: Json) -> bool:
    # As written, `category.select($this='problem-list-item')` compares a
    # CodeableConcept with a string (an R4 defect); this checks what it means.
    problem = any(
        isinstance(cat, dict) and any(code == "problem-list-item" for _, code in _codings(cat))
        for cat in _items(c.get("category"))
    )
    return (
        not problem
        or "clinicalStatus" in c
        or _has_coding(c.get("verificationStatus"), _CON_VER, ("entered-in-error",))
    )


def _con_4(c: Json, _: Json) -> bool:
    return _CON_ABATEMENT.isdisjoint(c) or _has_coding(
        c.get("clinicalStatus"), _CON_CLIN, ("resolved", "remission", "inactive")
    )


def _con_5(c: Json, _: Json) -> bool:
    return "clinicalStatus" not in c or not _has_coding(
        c.get("verificationStatus"), _CON_VER, ("entered-in-error",)
    )


def _ait_1(a: Json, _: Json) -> bool:
    return "clinicalStatus" in a or _has_coding(
        a.get("verificationStatus"), _AIT_VER, ("entered-in-error",)
    )


def _ait_2(a: Json, _: Json) -> bool:
    return "clinicalStatus" not in a or not _has_coding(
        a.get("verificationStatus"), _AIT_VER, ("entered-in-error",)
    )


def _org_1(o: Json, _: Json) -> bool:
    return "identifier" in o or _present(o, "name")


def _not_home(x: Json, _: Json) -> bool:
    return x.get("use") != "home"


def _any_of(*names: str) -> NativeCheck:
    """`a.exists() or b.exists() or …` on one element."""

    def check(x: Json, _: Json) -> bool:
        return any(n in x or "_" + n in x for n in names)

    return check


def _not_both(a: str, b: str) -> NativeCheck:
    """`a.empty() or b.empty()`."""

    def check(x: Json, _: Json) -> bool:
        return not (_present(x, a) and _present(x, b))

    return check


def _reference_type(ref: Any, resource: Json) -> str | None:
    """The type a Reference points at, when its form tells (relative, absolute, #local)."""
    if not isinstance(ref, dict) or not isinstance(ref.get("reference"), str):
        return None
    target: str = ref["reference"]
    if target.startswith("#"):
        for c in _items(resource.get("contained")):
            if isinstance(c, dict) and c.get("id") == target[1:]:
                return c.get("resourceType")
        return None
    parts = target.split("/_history/")[0].split("/")
    return parts[-2] if len(parts) >= 2 and parts[-2] in definitions().resource_types else None


def _ctm_1(p: Json, resource: Json) -> bool:
    """onBehalfOf only for a member that resolves to a Practitioner (when it resolves)."""
    if "onBehalfOf" not in p:
        return True
    return _reference_type(p.get("member"), resource) in (None, "Practitioner")


def _given(name: str, check: NativeCheck) -> NativeCheck:
    """Holds when `name` is absent, where the FHIRPath compares it and so yields empty."""

    def guarded(x: Json, resource: Json) -> bool:
        return name not in x or check(x, resource)

    return guarded


def _gol_1(t: Json, _: Json) -> bool:
    return _GOAL_DETAIL.isdisjoint(t) or "measure" in t


def _bdl_1(b: Json, _: Json) -> bool:
    return "total" not in b or b.get("type") in ("searchset", "history")


def _bdl_2(b: Json, _: Json) -> bool:
    return b.get("type") == "searchset" or not any(
        isinstance(e, dict) and "search" in e for e in _items(b.get("entry"))
    )


def _bdl_3(b: Json, _: Json) -> bool:
    want = b.get("type") in ("batch", "transaction", "history")
    return all(("request" in e) == want for e in _items(b.get("entry")) if isinstance(e, dict))


def _bdl_4(b: Json, _: Json) -> bool:
    want = b.get("type") in ("batch-response", "transaction-response", "history")
    return all(("response" in e) == want for e in _items(b.get("entry")) if isinstance(e, dict))


def _bdl_5(e: Json, _: Json) -> bool:
    return "resource" in e or "request" in e or "response" in e


def _bdl_7(b: Json, _: Json) -> bool:
    if b.get("type") == "history":
        return True
    seen: set[tuple[Any, Any]] = set()
    for e in _items(b.get("entry")):
        if not isinstance(e, dict) or "fullUrl" not in e:
            continue
        res = e.get("resource")
        meta = res.get("meta") if isinstance(res, dict) else None
        key = (e["fullUrl"], meta.get("versionId") if isinstance(meta, dict) else None)
        if key in seen:
            return False
        seen.add(key)
    return True


def _bdl_8(e: Json, _: Json) -> bool:
    full = e.get("fullUrl")
    return not isinstance(full, str) or "/_history/" not in full


def _bdl_9(b: Json, _: Json) -> bool:
    ident = b.get("identifier")
    return b.get("type") != "document" or (
        isinstance(ident, dict) and "system" in ident and "value" in ident
    )


def _bdl_10(b: Json, _: Json) -> bool:
    return b.get("type") != "document" or "timestamp" in b


def _first_entry_is(b: Json, bundle_type: str, resource_type: str) -> bool:
    if b.get("type") != bundle_type:
        return True
    entries = _items(b.get("entry"))
    first = entries[0] if entries and isinstance(entries[0], dict) else {}
    res = first.get("resource")
    return isinstance(res, dict) and res.get("resourceType") == resource_type


def _bdl_11(b: Json, _: Json) -> bool:
    return _first_entry_is(b, "document", "Composition")


def _bdl_12(b: Json, _: Json) -> bool:
    return _first_entry_is(b, "message", "MessageHeader")


# -- conformance resources: a StructureDefinition holds hundreds of ElementDefinitions
# and a ValueSet expansion thousands of `contains`, each with many invariants.

_IDENTIFIER_NAME = re.compile(r"[A-Z]([A-Za-z0-9_]){0,254}")
_SLICE_NAME = re.compile(r"[a-zA-Z0-9/\-_\[\]@]+")
# eld-19 / eld-20, unescaped from their FHIRPath string literals.
_ELD_19_PATH = re.compile(
    r"[^\s\.,:;\'\"\/|?!@#$%&*()\[\]{}]{1,64}"
    r"(\.[^\s\.,:;\'\"\/|?!@#$%&*()\[\]{}]{1,64}(\[x\])?(\:[^\s\.]+)?)*"
)
_ELD_20_PATH = re.compile(r"[A-Za-z][A-Za-z0-9]*(\.[a-z][A-Za-z0-9]*(\[x])?)*")


def _path_matches(rx: re.Pattern[str]) -> NativeCheck:
    """eld-19/20: ElementDefinition.path matches the regex (as a whole)."""

    def check(e: Json, _: Json) -> bool:
        path = e.get("path")
        return not isinstance(path, str) or rx.fullmatch(path) is not None

    return check


def _name_identifier(r: Json, _: Json) -> bool:
    """The *-0 warnings: `name.matches('[A-Z]([A-Za-z0-9_]){0,254}')` (a full match)."""
    name = r.get("name")
    return not isinstance(name, str) or _IDENTIFIER_NAME.fullmatch(name) is not None


def _implies(a: bool, b: bool) -> bool:
    return not a or b


def _distinct(values: Iterable[Any]) -> bool:
    seen: list[Any] = []
    for v in values:
        if v in seen:
            return False
        seen.append(v)
    return True


def _field(items: Any, name: str) -> list[Any]:
    """`items.name`: the values of `name` over a collection of objects."""
    out: list[Any] = []
    for x in _items(items):
        if isinstance(x, dict) and name in x:
            out.extend(_items(x[name]))
    return out


def _eld_2(e: Json, _: Json) -> bool:
    lo, hi = e.get("min"), e.get("max")
    if not isinstance(lo, int) or not isinstance(hi, str) or hi == "*":
        return True
    try:
        return lo <= int(hi)
    except ValueError:
        return True


def _eld_3(value: Any, _: Json) -> bool:
    try:
        return value == "*" or int(value) >= 0
    except (TypeError, ValueError):
        return True  # toInteger() is empty: unknown


_ELD_5_EMPTY = ("type", "example", "maxLength", "binding")
_ELD_5_CHOICES = ("defaultValue", "fixed", "pattern", "minValue", "maxValue")


def _eld_5(e: Json, _: Json) -> bool:
    return "contentReference" not in e or not (
        any(n in e for n in _ELD_5_EMPTY) or any(_has_choice(e, c) for c in _ELD_5_CHOICES)
    )


def _single_type_with(choice: str) -> NativeCheck:
    """eld-6/7: fixed[x] / pattern[x] only with at most one type."""

    def check(e: Json, _: Json) -> bool:
        return not _has_choice(e, choice) or len(_items(e.get("type"))) <= 1

    return check


def _eld_8(e: Json, _: Json) -> bool:
    return not (_has_choice(e, "pattern") and _has_choice(e, "fixed"))


def _eld_12(b: Json, _: Json) -> bool:
    vs = b.get("valueSet")
    return not isinstance(vs, str) or vs.startswith(("http:", "https", "urn:"))


def _eld_15(e: Json, _: Json) -> bool:
    return not (_has_choice(e, "defaultValue") and _present(e, "meaningWhenMissing"))


def _eld_16(e: Json, _: Json) -> bool:
    name = e.get("sliceName")
    return not isinstance(name, str) or _SLICE_NAME.fullmatch(name) is not None


def _reference_kind(t: Json) -> bool:
    return t.get("code") in ("Reference", "canonical")


_QUE_TEXTUAL = ("boolean", "decimal", "integer", "string", "text", "url", "open-choice")
_QUE_ANSWERABLE = (
    *("choice", "open-choice", "decimal", "integer", "date", "dateTime", "time", "string"),
    "quantity",
)


def _que_1(i: Json, _: Json) -> bool:
    kind = i.get("type")
    return _implies(kind == "group", "item" in i) and _implies(kind == "display", "item" not in i)


def _que_2(q: Json, _: Json) -> bool:
    ids: list[Any] = []

    def walk(items: Any) -> None:
        for i in _items(items):
            if isinstance(i, dict):
                if "linkId" in i:
                    ids.append(i["linkId"])
                walk(i.get("item"))

    walk(q.get("item"))
    return len(ids) == len(set(map(str, ids)))


def _csd_1(cs: Json, _: Json) -> bool:
    codes: list[Any] = []

    def walk(items: Any) -> None:
        for c in _items(items):
            if isinstance(c, dict):
                if "code" in c:
                    codes.append(c["code"])
                walk(c.get("concept"))

    walk(cs.get("concept"))
    return len(codes) == len(set(map(str, codes)))


def _nsd_2(ns: Json, _: Json) -> bool:
    return _distinct(
        u.get("type")
        for u in _items(ns.get("uniqueId"))
        if isinstance(u, dict) and u.get("preferred") is True
    )


def _later_or_same(later: str, earlier: str) -> NativeCheck:
    """mdd-1 / Task inv-1: `later >= earlier` as instants (fhirpathpy ignores zones)."""

    def check(r: Json, _: Json) -> bool:
        if later not in r or earlier not in r:
            return True
        return compare_datetimes(r[later], r[earlier]) != -1

    return check


# -- other clinical and administrative resources


def _xor(a: str, b: str) -> NativeCheck:
    """`a.exists() xor b.exists()`."""

    def check(x: Json, _: Json) -> bool:
        return _present(x, a) != _present(x, b)

    return check


def _app_3(a: Json, _: Json) -> bool:
    both = _present(a, "start") and _present(a, "end")
    return both or a.get("status") in ("proposed", "cancelled", "waitlist")


def _app_4(a: Json, _: Json) -> bool:
    return "cancelationReason" not in a or a.get("status") in ("no-show", "cancelled")


def _lst(mode: str, field: str) -> NativeCheck:
    """lst-2/3: entry.<field> only in a list of the given mode."""

    def check(x: Json, _: Json) -> bool:
        return x.get("mode") == mode or not _field(x.get("entry"), field)

    return check


def _msq_5(r: Json, _: Json) -> bool:
    return ("chromosome" in r) == ("genomeBuild" in r)


def _msq_6(r: Json, _: Json) -> bool:
    names = ("genomeBuild", "referenceSeqId", "referenceSeqPointer", "referenceSeqString")
    return sum(1 for n in names if _present(r, n)) == 1


def _ppc_scope(code: str) -> NativeCheck:
    """ppc-2..5 as written (the R4 text uses the placeholder system 'something')."""

    def check(c: Json, _: Json) -> bool:
        return "patient" in c or not _has_coding(c.get("scope"), "something", (code,))

    return check


def _ras_1(p: Any, _: Json) -> bool:
    if not isinstance(p, dict):
        return True
    for bound in (p.get("low"), p.get("high")):
        if isinstance(bound, dict) and (
            bound.get("code", "%") != "%" or bound.get("system", UCUM) != UCUM
        ):
            return False
    return True


def _ras_2(p: Json, _: Json) -> bool:
    v = p.get("probabilityDecimal")
    return not isinstance(v, int | float) or v <= 100


def _trd_3(t: Json, _: Json) -> bool:
    kind = t.get("type")
    return (
        _implies(kind == "named-event", _present(t, "name"))
        and _implies(kind == "periodic", _has_choice(t, "timing"))
        and _implies(isinstance(kind, str) and kind.startswith("data-"), "data" in t)
    )


def _parameters_inv_1(p: Json, _: Json) -> bool:
    has_value, has_resource = _has_choice(p, "value"), "resource" in p
    if "part" in p:
        return not has_value and not has_resource
    return has_value != has_resource


NATIVE: dict[tuple[str, str], NativeCheck] = {
    ("*", "dom-6"): _dom_6,
    ("Period", "per-1"): _per_1,
    ("Quantity", "qty-3"): _qty_3,
    ("Age", "qty-3"): _qty_3,
    ("Count", "qty-3"): _qty_3,
    ("Distance", "qty-3"): _qty_3,
    ("Duration", "qty-3"): _qty_3,
    ("Age", "age-1"): _age_1,
    ("Distance", "dis-1"): _dis_1,
    ("Count", "cnt-3"): _cnt_3,
    ("Duration", "drt-1"): _drt_1,
    ("ContactPoint", "cpt-2"): _cpt_2,
    ("Attachment", "att-1"): _att_1,
    ("Range", "rng-2"): _rng_2,
    ("Ratio", "rat-1"): _rat_1,
    ("Timing", "tim-1"): lambda r, x: _tim(r, x, "duration", "durationUnit"),
    ("Timing", "tim-2"): lambda r, x: _tim(r, x, "period", "periodUnit"),
    ("Timing", "tim-4"): lambda r, _: _nonneg(r, "duration"),
    ("Timing", "tim-5"): lambda r, _: _nonneg(r, "period"),
    ("Timing", "tim-6"): lambda r, x: _tim(r, x, "periodMax", "period"),
    ("Timing", "tim-7"): lambda r, x: _tim(r, x, "durationMax", "duration"),
    ("Timing", "tim-8"): lambda r, x: _tim(r, x, "countMax", "count"),
    ("Timing", "tim-9"): _tim_9,
    ("Timing", "tim-10"): _not_both("timeOfDay", "when"),
    ("Observation", "obs-3"): _obs_3,
    ("Observation", "obs-6"): _obs_6,
    ("Observation", "obs-7"): _obs_7,
    ("Condition", "con-1"): _any_of("summary", "assessment"),
    ("Condition", "con-2"): _any_of("code", "detail"),
    ("Condition", "con-3"): _con_3,
    ("Condition", "con-4"): _con_4,
    ("Condition", "con-5"): _con_5,
    ("AllergyIntolerance", "ait-1"): _ait_1,
    ("AllergyIntolerance", "ait-2"): _ait_2,
    ("Organization", "org-1"): _org_1,
    ("Organization", "org-2"): _not_home,
    ("Organization", "org-3"): _not_home,
    ("Patient", "pat-1"): _any_of("name", "telecom", "address", "organization"),
    ("Immunization", "imm-1"): _any_of("documentType", "reference"),
    ("CarePlan", "cpl-3"): _not_both("detail", "reference"),
    ("Goal", "gol-1"): _gol_1,
    ("CareTeam", "ctm-1"): _ctm_1,
    ("MedicationAdministration", "mad-1"): lambda d, _: "dose" in d or not _MAD_RATE.isdisjoint(d),
    ("Composition", "cmp-1"): _any_of("text", "entry", "section"),
    ("Composition", "cmp-2"): _not_both("emptyReason", "entry"),
    ("Bundle", "bdl-1"): _given("type", _bdl_1),
    ("Bundle", "bdl-2"): _given("type", _bdl_2),
    ("Bundle", "bdl-3"): _bdl_3,
    ("Bundle", "bdl-4"): _bdl_4,
    ("Bundle", "bdl-5"): _bdl_5,
    ("Bundle", "bdl-7"): _bdl_7,
    ("Bundle", "bdl-8"): _bdl_8,
    ("Bundle", "bdl-9"): _bdl_9,
    ("Bundle", "bdl-10"): _bdl_10,
    ("Bundle", "bdl-11"): _bdl_11,
    ("Bundle", "bdl-12"): _bdl_12,
    ("ElementDefinition", "eld-1"): _any_of("discriminator", "description"),
    ("ElementDefinition", "eld-2"): _eld_2,
    ("ElementDefinition", "eld-3"): _eld_3,
    ("ElementDefinition", "eld-4"): lambda t, _: "aggregation" not in t or _reference_kind(t),
    ("ElementDefinition", "eld-5"): _eld_5,
    ("ElementDefinition", "eld-6"): _single_type_with("fixed"),
    ("ElementDefinition", "eld-7"): _single_type_with("pattern"),
    ("ElementDefinition", "eld-8"): _eld_8,
    ("ElementDefinition", "eld-12"): _eld_12,
    ("ElementDefinition", "eld-13"): lambda e, _: _distinct(_field(e.get("type"), "code")),
    ("ElementDefinition", "eld-14"): lambda e, _: _distinct(_field(e.get("constraint"), "key")),
    ("ElementDefinition", "eld-15"): _eld_15,
    ("ElementDefinition", "eld-16"): _eld_16,
    ("ElementDefinition", "eld-17"): lambda t, _: _reference_kind(t) or "targetProfile" not in t,
    ("ElementDefinition", "eld-18"): lambda e, _: (
        e.get("isModifier") is not True or _present(e, "isModifierReason")
    ),
    ("ElementDefinition", "eld-19"): _path_matches(_ELD_19_PATH),
    ("ElementDefinition", "eld-20"): _path_matches(_ELD_20_PATH),
    ("ElementDefinition", "eld-21"): lambda c, _: _present(c, "expression"),
    ("ElementDefinition", "eld-22"): lambda e, _: (
        "sliceIsConstraining" not in e or _present(e, "sliceName")
    ),
    ("ValueSet", "vsd-1"): _any_of("valueSet", "system"),
    ("ValueSet", "vsd-2"): lambda i, _: not ("concept" in i or "filter" in i) or "system" in i,
    ("ValueSet", "vsd-3"): _not_both("concept", "filter"),
    ("ValueSet", "vsd-6"): _any_of("code", "display"),
    ("ValueSet", "vsd-9"): lambda c, _: _present(c, "code") or c.get("abstract") is True,
    ("ValueSet", "vsd-10"): lambda c, _: "code" not in c or _present(c, "system"),
    ("CodeSystem", "csd-1"): _csd_1,
    ("SearchParameter", "spd-1"): lambda p, _: "xpath" not in p or _present(p, "xpathUsage"),
    ("SearchParameter", "spd-2"): lambda p, _: "chain" not in p or p.get("type") == "reference",
    ("NamingSystem", "nsd-1"): lambda ns, _: (
        ns.get("kind") != "root"
        or all(u.get("type") != "uuid" for u in _items(ns.get("uniqueId")) if isinstance(u, dict))
    ),
    ("NamingSystem", "nsd-2"): _nsd_2,
    ("ConceptMap", "cmd-1"): lambda t, _: (
        _present(t, "comment") or t.get("equivalence") not in ("narrower", "inexact")
    ),
    ("ConceptMap", "cmd-2"): lambda u, _: u.get("mode") != "fixed" or _present(u, "code"),
    ("ConceptMap", "cmd-3"): lambda u, _: u.get("mode") != "other-map" or _present(u, "url"),
    ("OperationDefinition", "opd-1"): _any_of("type", "part"),
    ("OperationDefinition", "opd-2"): _given(
        "type", lambda p, _: "searchType" not in p or p.get("type") == "string"
    ),
    ("OperationDefinition", "opd-3"): _given(
        "type",
        lambda p, _: "targetProfile" not in p or p.get("type") in ("Reference", "canonical"),
    ),
    ("CapabilityStatement", "cpb-12"): lambda r, _: _distinct(_field(r.get("searchParam"), "name")),
    ("Questionnaire", "que-1"): _que_1,
    ("Questionnaire", "que-2"): _que_2,
    ("Questionnaire", "que-3"): lambda i, _: i.get("type") != "display" or "code" not in i,
    ("Questionnaire", "que-4"): _not_both("answerOption", "answerValueSet"),
    ("Questionnaire", "que-5"): lambda i, _: (
        i.get("type") in _QUE_ANSWERABLE or not ("answerValueSet" in i or "answerOption" in i)
    ),
    ("Questionnaire", "que-6"): lambda i, _: (
        i.get("type") != "display" or not (_present(i, "required") or _present(i, "repeats"))
    ),
    # fhirpathpy evaluates `answer is Boolean` on a choice element as false.
    ("Questionnaire", "que-7"): lambda w, _: (
        w.get("operator") != "exists" or _present(w, "answerBoolean")
    ),
    ("Questionnaire", "que-8"): lambda i, _: (
        i.get("type") not in ("group", "display") or "initial" not in i
    ),
    ("Questionnaire", "que-9"): lambda i, _: (
        i.get("type") != "display" or not _present(i, "readOnly")
    ),
    ("Questionnaire", "que-10"): lambda i, _: (
        "type" not in i or i.get("type") in _QUE_TEXTUAL or not _present(i, "maxLength")
    ),
    ("Questionnaire", "que-11"): _not_both("answerOption", "initial"),
    ("Questionnaire", "que-12"): lambda i, _: (
        len(_items(i.get("enableWhen"))) <= 2 or _present(i, "enableBehavior")
    ),
    ("Questionnaire", "que-13"): lambda i, _: (
        i.get("repeats") is True or len(_items(i.get("initial"))) <= 1
    ),
    ("QuestionnaireResponse", "qrs-1"): _not_both("answer", "item"),
    ("Expression", "exp-1"): _any_of("expression", "reference"),
    ("MedicationDispense", "mdd-1"): _later_or_same("whenHandedOver", "whenPrepared"),
    ("Task", "inv-1"): _later_or_same("lastModified", "authoredOn"),
    ("Appointment", "app-1"): _any_of("type", "actor"),
    ("Appointment", "app-2"): lambda a, _: _present(a, "start") == _present(a, "end"),
    ("Appointment", "app-3"): _given("status", _app_3),
    ("Appointment", "app-4"): _app_4,
    ("AppointmentResponse", "apr-1"): _any_of("participantType", "actor"),
    ("AuditEvent", "sev-1"): _not_both("name", "query"),
    ("CoverageEligibilityResponse", "ces-1"): _xor("category", "productOrService"),
    ("DataRequirement", "drq-1"): _xor("path", "searchParam"),
    ("DataRequirement", "drq-2"): _xor("path", "searchParam"),
    ("FamilyMemberHistory", "fhs-1"): lambda f, _: (
        not (_has_choice(f, "age") and _has_choice(f, "born"))
    ),
    ("FamilyMemberHistory", "fhs-2"): lambda f, _: (
        _has_choice(f, "age") or not _present(f, "estimatedAge")
    ),
    ("Group", "grp-1"): lambda g, _: "member" not in g or g.get("actual") is True,
    ("ImmunizationRecommendation", "imr-1"): _any_of("vaccineCode", "targetDisease"),
    ("InsurancePlan", "ipn-1"): _any_of("identifier", "name"),
    ("Linkage", "lnk-1"): lambda r, _: len(_items(r.get("item"))) > 1,
    ("List", "lst-1"): _not_both("emptyReason", "entry"),
    ("List", "lst-2"): _lst("changes", "deleted"),
    ("List", "lst-3"): _lst("working", "date"),
    ("MolecularSequence", "msq-3"): lambda m, _: (
        m.get("coordinateSystem") in (0, 1) or "coordinateSystem" not in m
    ),
    ("MolecularSequence", "msq-5"): _msq_5,
    ("MolecularSequence", "msq-6"): _msq_6,
    ("NutritionOrder", "nor-1"): _any_of("oralDiet", "supplement", "enteralFormula"),
    ("Consent", "ppc-1"): _any_of("policy", "policyRule"),
    ("Consent", "ppc-2"): _ppc_scope("patient-privacy"),
    ("Consent", "ppc-3"): _ppc_scope("research"),
    ("Consent", "ppc-4"): _ppc_scope("adr"),
    ("Consent", "ppc-5"): _ppc_scope("treatment"),
    ("ServiceRequest", "prr-1"): lambda r, _: "orderDetail" not in r or "code" in r,
    ("RiskAssessment", "ras-1"): _ras_1,
    ("RiskAssessment", "ras-2"): _ras_2,
    ("RequestGroup", "rqg-1"): lambda a, _: ("resource" in a) != ("action" in a),
    ("TriggerDefinition", "trd-1"): lambda t, _: not ("data" in t and _has_choice(t, "timing")),
    ("TriggerDefinition", "trd-2"): lambda t, _: "condition" not in t or "data" in t,
    ("TriggerDefinition", "trd-3"): _trd_3,
    ("Parameters", "inv-1"): _parameters_inv_1,
}

# Checks shared by many types, matched on the expression text.
NATIVE_BY_EXPRESSION: dict[str, NativeCheck] = {
    # the *-0 warnings of the conformance and knowledge resources
    "name.matches('[A-Z]([A-Za-z0-9_]){0,254}')": _name_identifier,
}
