"""FHIR values to typed search-index values, by search parameter type and FHIR datatype.

`converter(param_type, fhir_type, …)` picks, once at compile time, the function
that turns one value found by a search expression (a Coding, a Period, a
Reference…) into `SearchValue`s, following the R4 search rules
(http://hl7.org/fhir/R4/search.html). A pair with no meaning for search (a
SampledData for a quantity parameter, an Age for a date) has no converter and
the branch is not indexed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import tzinfo
from decimal import Decimal
from typing import Any

from openrecord.fhir.definitions import Definitions
from openrecord.fhir.search_common import (
    DATE_MAX,
    DATE_MIN,
    date_range,
    normalize_string,
    number_range,
    of_type_system,
    parse_reference,
)
from openrecord.fhir.search_values import (
    DateValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    SearchValue,
    StringValue,
    TokenValue,
    UriValue,
)

__all__ = ["Converter", "converter"]

# (value, root resource, output list): appends the index values of one FHIR value
Converter = Callable[[Any, dict[str, Any], list[SearchValue]], None]

_PRIMITIVE_STRINGS = frozenset(
    ("string", "markdown", "code", "id", "uri", "url", "canonical", "oid", "uuid")
)
_QUANTITIES = frozenset(
    ("Quantity", "Age", "Duration", "Count", "Distance", "SimpleQuantity", "MoneyQuantity")
)
_NUMBERS = frozenset(("integer", "decimal", "positiveInt", "unsignedInt"))
_URIS = frozenset(("uri", "url", "canonical", "oid", "uuid"))
_CURRENCY_SYSTEM = "urn:iso:std:iso:4217"


# -- token -------------------------------------------------------------------


def _coding(v: Any, root: dict[str, Any], out: list[SearchValue]) -> None:
    if type(v) is dict:
        system, code, display = v.get("system"), v.get("code"), v.get("display")
        if system is not None or code is not None or display is not None:
            out.append(TokenValue(system, code, display))


def _codeable_concept(v: Any, root: dict[str, Any], out: list[SearchValue]) -> None:
    if type(v) is not dict:
        return
    for c in v.get("coding") or ():
        if type(c) is dict:
            system, code, display = c.get("system"), c.get("code"), c.get("display")
            if system is not None or code is not None or display is not None:
                out.append(TokenValue(system, code, display))
    text = v.get("text")
    if text is not None:
        out.append(TokenValue(None, None, text))


def _identifier(v: Any, root: dict[str, Any], out: list[SearchValue]) -> None:
    if type(v) is dict:
        system, value = v.get("system"), v.get("value")
        if system is not None or value is not None:
            t = v.get("type")
            if type(t) is not dict:
                out.append(TokenValue(system, value))
                return
            out.append(TokenValue(system, value, t.get("text")))
            if type(value) is str:  # for :of-type (see search_common.OF_TYPE)
                for c in t.get("coding") or ():
                    if type(c) is dict and type(c.get("code")) is str:
                        out.append(TokenValue(of_type_system(c.get("system"), c["code"]), value))


def _contact_point(v: Any, root: dict[str, Any], out: list[SearchValue]) -> None:
    if type(v) is dict:
        value = v.get("value")
        if value is not None:
            out.append(TokenValue(None, value))


def _boolean_token(v: Any, root: dict[str, Any], out: list[SearchValue]) -> None:
    if v is True:
        out.append(TokenValue(None, "true"))
    elif v is False:
        out.append(TokenValue(None, "false"))


def _primitive_token(v: Any, root: dict[str, Any], out: list[SearchValue]) -> None:
    if type(v) is str:
        out.append(TokenValue(None, v))


def _bound_code_token(systems: dict[str, str]) -> Converter:
    """A `code` bound to a value set: the system is implicit, taken from the value set."""

    def convert(v: Any, root: dict[str, Any], out: list[SearchValue]) -> None:
        if type(v) is str:
            out.append(TokenValue(systems.get(v), v))

    return convert


def _code_systems(defs: Definitions, binding: str | None) -> dict[str, str]:
    vs = defs.value_sets.get(binding.split("|")[0]) if binding else None
    if vs is None:
        return {}
    found: dict[str, set[str]] = {}
    for system, code in vs.codes:
        found.setdefault(code, set()).add(system)
    return {code: next(iter(s)) for code, s in found.items() if len(s) == 1}


# -- string ------------------------------------------------------------------


def _add_string(s: Any, out: list[SearchValue]) -> None:
    if type(s) is str and s:
        out.append(StringValue(s, normalize_string(s)))


def _string(v: Any, root: dict[str, Any], out: list[SearchValue]) -> None:
    _add_string(v, out)


def _parts(singles: tuple[str, ...], lists: tuple[str, ...]) -> Converter:
    def convert(v: Any, root: dict[str, Any], out: list[SearchValue]) -> None:
        if type(v) is not dict:
            return
        for key in lists:
            for s in v.get(key) or ():
                _add_string(s, out)
        for key in singles:
            _add_string(v.get(key), out)

    return convert


_human_name = _parts(("family", "text"), ("given", "prefix", "suffix"))
_address = _parts(("city", "district", "state", "postalCode", "country", "text"), ("line",))


# -- date --------------------------------------------------------------------


def _date_converters(tz: tzinfo) -> dict[str, Converter]:
    def instant(v: Any, root: dict[str, Any], out: list[SearchValue]) -> None:
        if type(v) is str:
            r = date_range(v, tz)
            if r is not None:
                out.append(DateValue(r[0], r[1]))

    def period(v: Any, root: dict[str, Any], out: list[SearchValue]) -> None:
        if type(v) is not dict:
            return
        start, end = v.get("start"), v.get("end")
        low = date_range(start, tz) if type(start) is str else None
        high = date_range(end, tz) if type(end) is str else None
        if low is not None or high is not None:
            out.append(
                DateValue(
                    low[0] if low is not None else DATE_MIN,
                    high[1] if high is not None else DATE_MAX,
                )
            )

    def timing(v: Any, root: dict[str, Any], out: list[SearchValue]) -> None:
        # Only the outer limits of a schedule matter: events and the repeat bounds.
        if type(v) is not dict:
            return
        found: list[DateValue] = []
        for e in v.get("event") or ():
            instant(e, root, found)  # type: ignore[arg-type]
        rep = v.get("repeat")
        if type(rep) is dict:
            period(rep.get("boundsPeriod"), root, found)  # type: ignore[arg-type]
        if found:
            out.append(DateValue(min(d.low for d in found), max(d.high for d in found)))

    return {
        "date": instant,
        "dateTime": instant,
        "instant": instant,
        "string": instant,  # dateTime-or-string choices: only values that read as dates
        "Period": period,
        "Timing": timing,
    }


# -- number and quantity ------------------------------------------------------


def _number(v: Any, root: dict[str, Any], out: list[SearchValue]) -> None:
    if isinstance(v, (int, float, Decimal)) and not isinstance(v, bool):
        r = number_range(v)
        if r is not None:
            out.append(NumberValue(*r))


def _bound(q: Any) -> float | None:
    v = q.get("value") if type(q) is dict else None
    if isinstance(v, (int, float, Decimal)) and not isinstance(v, bool):
        return float(v)
    return None


def _range_bounds(v: dict[str, Any]) -> tuple[float, float, float, Any] | None:
    """(middle, low, high, the bound carrying the unit) of a Range; open ends are ±inf."""
    lo, hi = v.get("low"), v.get("high")
    lo_v, hi_v = _bound(lo), _bound(hi)
    if lo_v is None and hi_v is None:
        return None
    low = lo_v if lo_v is not None else float("-inf")
    high = hi_v if hi_v is not None else float("inf")
    if lo_v is not None and hi_v is not None:
        return (low + high) / 2, low, high, lo
    if lo_v is not None:
        return lo_v, low, high, lo
    assert hi_v is not None
    return hi_v, low, high, hi


def _number_range(v: Any, root: dict[str, Any], out: list[SearchValue]) -> None:
    if type(v) is dict:
        b = _range_bounds(v)
        if b is not None:
            out.append(NumberValue(b[0], b[1], b[2]))


def _quantity(v: Any, root: dict[str, Any], out: list[SearchValue]) -> None:
    if type(v) is dict:
        value = v.get("value")
        if value is not None and not isinstance(value, (str, bool)):
            r = number_range(value)
            if r is not None:
                out.append(QuantityValue(*r, v.get("system"), v.get("code"), v.get("unit")))


def _money(v: Any, root: dict[str, Any], out: list[SearchValue]) -> None:
    if type(v) is dict:
        value = v.get("value")
        if value is not None and not isinstance(value, (str, bool)):
            r = number_range(value)
            if r is not None:
                currency = v.get("currency")
                system = _CURRENCY_SYSTEM if currency else None
                out.append(QuantityValue(*r, system, currency, None))


def _quantity_range(v: Any, root: dict[str, Any], out: list[SearchValue]) -> None:
    if type(v) is dict:
        b = _range_bounds(v)
        if b is not None:
            q: dict[str, Any] = b[3]
            out.append(
                QuantityValue(b[0], b[1], b[2], q.get("system"), q.get("code"), q.get("unit"))
            )


# -- reference and uri --------------------------------------------------------


def _reference_converter(types: frozenset[str]) -> Converter:
    def convert(v: Any, root: dict[str, Any], out: list[SearchValue]) -> None:
        if type(v) is not dict:
            return
        ref = v.get("reference")
        if type(ref) is str:
            if ref.startswith("#"):
                if len(ref) > 1:
                    out.append(ReferenceValue(_contained_type(root, ref[1:]), ref))
            else:
                p = parse_reference(ref, types)
                if p is not None:
                    out.append(ReferenceValue(p.type, p.id, p.url, p.version))
        ident = v.get("identifier")
        if ident is not None:
            _identifier(ident, root, out)  # for the :identifier modifier

    return convert


def _contained_type(root: dict[str, Any], cid: str) -> str | None:
    for c in root.get("contained") or ():
        if type(c) is dict and c.get("id") == cid:
            t = c.get("resourceType")
            return t if type(t) is str else None
    return None


def _canonical_reference(v: Any, root: dict[str, Any], out: list[SearchValue]) -> None:
    if type(v) is str and v:
        url, _, version = v.partition("|")
        out.append(ReferenceValue(None, None, url, version or None))


def _uri_reference(v: Any, root: dict[str, Any], out: list[SearchValue]) -> None:
    if type(v) is str and v:
        out.append(ReferenceValue(None, None, v))


def _resource_reference(v: Any, root: dict[str, Any], out: list[SearchValue]) -> None:
    if type(v) is dict and type(v.get("resourceType")) is str and type(v.get("id")) is str:
        out.append(ReferenceValue(v["resourceType"], v["id"]))


def _uri(v: Any, root: dict[str, Any], out: list[SearchValue]) -> None:
    if type(v) is str and v:
        out.append(UriValue(v))


# -- selection ----------------------------------------------------------------


def converter(
    param_type: str, fhir_type: str, defs: Definitions, tz: tzinfo, binding: str | None = None
) -> Converter | None:
    """The converter for values of `fhir_type` found by a `param_type` parameter, or None."""
    if param_type == "token":
        if fhir_type == "code":
            systems = _code_systems(defs, binding)
            return _bound_code_token(systems) if systems else _primitive_token
        return {
            "Coding": _coding,
            "CodeableConcept": _codeable_concept,
            "Identifier": _identifier,
            "ContactPoint": _contact_point,
            "boolean": _boolean_token,
        }.get(fhir_type, _primitive_token if fhir_type in _PRIMITIVE_STRINGS else None)
    if param_type == "string":
        if fhir_type in _PRIMITIVE_STRINGS:
            return _string
        return {"HumanName": _human_name, "Address": _address}.get(fhir_type)
    if param_type == "date":
        return _date_converters(tz).get(fhir_type)
    if param_type == "number":
        return _number if fhir_type in _NUMBERS else _number_range if fhir_type == "Range" else None
    if param_type == "quantity":
        if fhir_type in _QUANTITIES:
            return _quantity
        return {"Money": _money, "Range": _quantity_range}.get(fhir_type)
    if param_type == "reference":
        if fhir_type == "Reference":
            return _reference_converter(defs.resource_types)
        if fhir_type == "canonical":
            return _canonical_reference
        if fhir_type in ("uri", "url"):
            return _uri_reference
        return _resource_reference if fhir_type == "Resource" else None
    if param_type == "uri":
        return _uri if fhir_type in _URIS else None
    return None
