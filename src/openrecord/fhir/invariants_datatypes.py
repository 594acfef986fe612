"""Native invariant checks for datatypes, Bundle/Parameters and conformance resources."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from openrecord.fhir.invariants_support import (
    UCUM,
    Json,
    NativeCheck,
    any_of,
    as_list,
    compare_datetimes,
    field_values,
    given,
    has_choice,
    implies,
    not_both,
    present,
    xor,
)

__all__ = ["DATATYPE_CHECKS", "DATATYPE_CHECKS_BY_EXPRESSION"]


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


def _dom_6(r: Json, _: Json) -> bool:
    text = r.get("text")
    return isinstance(text, dict) and "div" in text


def _per_1(p: Json, _: Json) -> bool:
    start, end = p.get("start"), p.get("end")
    if start is None or end is None:
        return True
    return compare_datetimes(start, end) != 1


def _qty_3(q: Json, _: Json) -> bool:
    return "code" not in q or present(q, "system")


def _ucum_quantity(q: Json) -> bool:
    """Shared part of age-1 / dis-1 / cnt-3: a code if a value, and only UCUM."""
    return (present(q, "code") or "value" not in q) and q.get("system", UCUM) == UCUM


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
    return "code" not in q or (q.get("system") == UCUM and present(q, "value"))


def _cpt_2(c: Json, _: Json) -> bool:
    return "value" not in c or present(c, "system")


def _att_1(a: Json, _: Json) -> bool:
    return "data" not in a or present(a, "contentType")


def _rng_2(r: Json, _: Json) -> bool:
    return _quantity_le(r.get("low"), r.get("high"))


def _rat_1(r: Json, _: Json) -> bool:
    num, den = "numerator" in r, "denominator" in r
    return num == den and (num or "extension" in r)


def _tim(r: Json, _: Json, a: str, b: str) -> bool:
    return a not in r or present(r, b)


def _nonneg(r: Json, name: str) -> bool:
    v = r.get(name)
    return not isinstance(v, int | float) or v >= 0


def _tim_9(r: Json, _: Json) -> bool:
    when = r.get("when")
    return "offset" not in r or (
        "when" in r and not any(w in ("C", "CM", "CD", "CV") for w in as_list(when))
    )


def _bdl_1(b: Json, _: Json) -> bool:
    return "total" not in b or b.get("type") in ("searchset", "history")


def _bdl_2(b: Json, _: Json) -> bool:
    return b.get("type") == "searchset" or not any(
        isinstance(e, dict) and "search" in e for e in as_list(b.get("entry"))
    )


def _bdl_3(b: Json, _: Json) -> bool:
    want = b.get("type") in ("batch", "transaction", "history")
    return all(("request" in e) == want for e in as_list(b.get("entry")) if isinstance(e, dict))


def _bdl_4(b: Json, _: Json) -> bool:
    want = b.get("type") in ("batch-response", "transaction-response", "history")
    return all(("response" in e) == want for e in as_list(b.get("entry")) if isinstance(e, dict))


def _bdl_5(e: Json, _: Json) -> bool:
    return "resource" in e or "request" in e or "response" in e


def _bdl_7(b: Json, _: Json) -> bool:
    if b.get("type") == "history":
        return True
    seen: set[tuple[Any, Any]] = set()
    for e in as_list(b.get("entry")):
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
    entries = as_list(b.get("entry"))
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


def _distinct(values: Iterable[Any]) -> bool:
    seen: list[Any] = []
    for v in values:
        if v in seen:
            return False
        seen.append(v)
    return True


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
        any(n in e for n in _ELD_5_EMPTY) or any(has_choice(e, c) for c in _ELD_5_CHOICES)
    )


def _single_type_with(choice: str) -> NativeCheck:
    """eld-6/7: fixed[x] / pattern[x] only with at most one type."""

    def check(e: Json, _: Json) -> bool:
        return not has_choice(e, choice) or len(as_list(e.get("type"))) <= 1

    return check


def _eld_8(e: Json, _: Json) -> bool:
    return not (has_choice(e, "pattern") and has_choice(e, "fixed"))


def _eld_12(b: Json, _: Json) -> bool:
    vs = b.get("valueSet")
    return not isinstance(vs, str) or vs.startswith(("http:", "https", "urn:"))


def _eld_15(e: Json, _: Json) -> bool:
    return not (has_choice(e, "defaultValue") and present(e, "meaningWhenMissing"))


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
    return implies(kind == "group", "item" in i) and implies(kind == "display", "item" not in i)


def _que_2(q: Json, _: Json) -> bool:
    ids: list[Any] = []

    def walk(items: Any) -> None:
        for i in as_list(items):
            if isinstance(i, dict):
                if "linkId" in i:
                    ids.append(i["linkId"])
                walk(i.get("item"))

    walk(q.get("item"))
    return len(ids) == len(set(map(str, ids)))


def _csd_1(cs: Json, _: Json) -> bool:
    codes: list[Any] = []

    def walk(items: Any) -> None:
        for c in as_list(items):
            if isinstance(c, dict):
                if "code" in c:
                    codes.append(c["code"])
                walk(c.get("concept"))

    walk(cs.get("concept"))
    return len(codes) == len(set(map(str, codes)))


def _nsd_2(ns: Json, _: Json) -> bool:
    return _distinct(
        u.get("type")
        for u in as_list(ns.get("uniqueId"))
        if isinstance(u, dict) and u.get("preferred") is True
    )


def _trd_3(t: Json, _: Json) -> bool:
    kind = t.get("type")
    return (
        implies(kind == "named-event", present(t, "name"))
        and implies(kind == "periodic", has_choice(t, "timing"))
        and implies(isinstance(kind, str) and kind.startswith("data-"), "data" in t)
    )


def _parameters_inv_1(p: Json, _: Json) -> bool:
    has_value, has_resource = has_choice(p, "value"), "resource" in p
    if "part" in p:
        return not has_value and not has_resource
    return has_value != has_resource


# Keyed by (declaring type or "*", key).
DATATYPE_CHECKS: dict[tuple[str, str], NativeCheck] = {
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
    ("Timing", "tim-10"): not_both("timeOfDay", "when"),
    ("Bundle", "bdl-1"): given("type", _bdl_1),
    ("Bundle", "bdl-2"): given("type", _bdl_2),
    ("Bundle", "bdl-3"): _bdl_3,
    ("Bundle", "bdl-4"): _bdl_4,
    ("Bundle", "bdl-5"): _bdl_5,
    ("Bundle", "bdl-7"): _bdl_7,
    ("Bundle", "bdl-8"): _bdl_8,
    ("Bundle", "bdl-9"): _bdl_9,
    ("Bundle", "bdl-10"): _bdl_10,
    ("Bundle", "bdl-11"): _bdl_11,
    ("Bundle", "bdl-12"): _bdl_12,
    ("ElementDefinition", "eld-1"): any_of("discriminator", "description"),
    ("ElementDefinition", "eld-2"): _eld_2,
    ("ElementDefinition", "eld-3"): _eld_3,
    ("ElementDefinition", "eld-4"): lambda t, _: "aggregation" not in t or _reference_kind(t),
    ("ElementDefinition", "eld-5"): _eld_5,
    ("ElementDefinition", "eld-6"): _single_type_with("fixed"),
    ("ElementDefinition", "eld-7"): _single_type_with("pattern"),
    ("ElementDefinition", "eld-8"): _eld_8,
    ("ElementDefinition", "eld-12"): _eld_12,
    ("ElementDefinition", "eld-13"): lambda e, _: _distinct(field_values(e.get("type"), "code")),
    ("ElementDefinition", "eld-14"): lambda e, _: _distinct(
        field_values(e.get("constraint"), "key")
    ),
    ("ElementDefinition", "eld-15"): _eld_15,
    ("ElementDefinition", "eld-16"): _eld_16,
    ("ElementDefinition", "eld-17"): lambda t, _: _reference_kind(t) or "targetProfile" not in t,
    ("ElementDefinition", "eld-18"): lambda e, _: (
        e.get("isModifier") is not True or present(e, "isModifierReason")
    ),
    ("ElementDefinition", "eld-19"): _path_matches(_ELD_19_PATH),
    ("ElementDefinition", "eld-20"): _path_matches(_ELD_20_PATH),
    ("ElementDefinition", "eld-21"): lambda c, _: present(c, "expression"),
    ("ElementDefinition", "eld-22"): lambda e, _: (
        "sliceIsConstraining" not in e or present(e, "sliceName")
    ),
    ("ValueSet", "vsd-1"): any_of("valueSet", "system"),
    ("ValueSet", "vsd-2"): lambda i, _: not ("concept" in i or "filter" in i) or "system" in i,
    ("ValueSet", "vsd-3"): not_both("concept", "filter"),
    ("ValueSet", "vsd-6"): any_of("code", "display"),
    ("ValueSet", "vsd-9"): lambda c, _: present(c, "code") or c.get("abstract") is True,
    ("ValueSet", "vsd-10"): lambda c, _: "code" not in c or present(c, "system"),
    ("CodeSystem", "csd-1"): _csd_1,
    ("SearchParameter", "spd-1"): lambda p, _: "xpath" not in p or present(p, "xpathUsage"),
    ("SearchParameter", "spd-2"): lambda p, _: "chain" not in p or p.get("type") == "reference",
    ("NamingSystem", "nsd-1"): lambda ns, _: (
        ns.get("kind") != "root"
        or all(u.get("type") != "uuid" for u in as_list(ns.get("uniqueId")) if isinstance(u, dict))
    ),
    ("NamingSystem", "nsd-2"): _nsd_2,
    ("ConceptMap", "cmd-1"): lambda t, _: (
        present(t, "comment") or t.get("equivalence") not in ("narrower", "inexact")
    ),
    ("ConceptMap", "cmd-2"): lambda u, _: u.get("mode") != "fixed" or present(u, "code"),
    ("ConceptMap", "cmd-3"): lambda u, _: u.get("mode") != "other-map" or present(u, "url"),
    ("OperationDefinition", "opd-1"): any_of("type", "part"),
    ("OperationDefinition", "opd-2"): given(
        "type", lambda p, _: "searchType" not in p or p.get("type") == "string"
    ),
    ("OperationDefinition", "opd-3"): given(
        "type",
        lambda p, _: "targetProfile" not in p or p.get("type") in ("Reference", "canonical"),
    ),
    ("CapabilityStatement", "cpb-12"): lambda r, _: _distinct(
        field_values(r.get("searchParam"), "name")
    ),
    ("Questionnaire", "que-1"): _que_1,
    ("Questionnaire", "que-2"): _que_2,
    ("Questionnaire", "que-3"): lambda i, _: i.get("type") != "display" or "code" not in i,
    ("Questionnaire", "que-4"): not_both("answerOption", "answerValueSet"),
    ("Questionnaire", "que-5"): lambda i, _: (
        i.get("type") in _QUE_ANSWERABLE or not ("answerValueSet" in i or "answerOption" in i)
    ),
    ("Questionnaire", "que-6"): lambda i, _: (
        i.get("type") != "display" or not (present(i, "required") or present(i, "repeats"))
    ),
    # fhirpathpy evaluates `answer is Boolean` on a choice element as false.
    ("Questionnaire", "que-7"): lambda w, _: (
        w.get("operator") != "exists" or present(w, "answerBoolean")
    ),
    ("Questionnaire", "que-8"): lambda i, _: (
        i.get("type") not in ("group", "display") or "initial" not in i
    ),
    ("Questionnaire", "que-9"): lambda i, _: (
        i.get("type") != "display" or not present(i, "readOnly")
    ),
    ("Questionnaire", "que-10"): lambda i, _: (
        "type" not in i or i.get("type") in _QUE_TEXTUAL or not present(i, "maxLength")
    ),
    ("Questionnaire", "que-11"): not_both("answerOption", "initial"),
    ("Questionnaire", "que-12"): lambda i, _: (
        len(as_list(i.get("enableWhen"))) <= 2 or present(i, "enableBehavior")
    ),
    ("Questionnaire", "que-13"): lambda i, _: (
        i.get("repeats") is True or len(as_list(i.get("initial"))) <= 1
    ),
    ("Expression", "exp-1"): any_of("expression", "reference"),
    ("DataRequirement", "drq-1"): xor("path", "searchParam"),
    ("DataRequirement", "drq-2"): xor("path", "searchParam"),
    ("TriggerDefinition", "trd-1"): lambda t, _: not ("data" in t and has_choice(t, "timing")),
    ("TriggerDefinition", "trd-2"): lambda t, _: "condition" not in t or "data" in t,
    ("TriggerDefinition", "trd-3"): _trd_3,
    ("Parameters", "inv-1"): _parameters_inv_1,
}

# Checks shared by many types, matched on the expression text.
DATATYPE_CHECKS_BY_EXPRESSION: dict[str, NativeCheck] = {
    # the *-0 warnings of the conformance and knowledge resources
    "name.matches('[A-Z]([A-Za-z0-9_]){0,254}')": _name_identifier,
}
