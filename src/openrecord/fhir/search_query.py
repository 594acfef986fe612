"""HTTP search parameters to the store's `SearchQuery` (FHIR R4 search syntax).

`parse_search` reads `name[:modifier]=v1,v2` pairs: values in one pair are OR-ed,
repeated names AND-ed; `\\,` `\\$` `\\|` `\\\\` escape. Values are turned into
criteria with the same normalizations the index uses (`search_common`), so a
criterion compares directly with the stored `SearchValue`s. Parameters this
server does not understand go to `unknown` (the caller reports them, or rejects
them under `Prefer: handling=strict`); values that cannot be read raise a 400.
Result parameters (`_summary`, `_elements`, `_include`…) are kept for the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Literal, cast

from openrecord.fhir.definitions import Definitions, SearchParamDef
from openrecord.fhir.outcome import FHIRError
from openrecord.fhir.search_chain import Table, is_chained, parse_chained
from openrecord.fhir.search_common import (
    date_range,
    normalize_string,
    number_range,
    of_type_system,
    parse_reference,
)
from openrecord.fhir.search_composite import component_defs, parse_composite
from openrecord.fhir.search_terminology import TERMINOLOGY_MODIFIERS, terminology_codes
from openrecord.fhir.search_text import TEXT_PARAMS, words
from openrecord.store.query import (
    Condition,
    Criterion,
    DateCriterion,
    NumberCriterion,
    Prefix,
    QuantityCriterion,
    ReferenceCriterion,
    SearchCondition,
    SearchQuery,
    SortKey,
    StringCriterion,
    TextCriterion,
    TokenCriterion,
    UriCriterion,
)

__all__ = [
    "DEFAULT_COUNT",
    "MAX_COUNT",
    "ParsedSearch",
    "parse_search",
    "shared_params",
    "split_values",
]

DEFAULT_COUNT = 20
MAX_COUNT = 1000
MAX_VALUES = 1000  # OR-ed values in one parameter: each is a bound SQL parameter or two

Kind = Literal["token", "string", "date", "number", "quantity", "reference", "uri"]
_PREFIXES = frozenset(("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"))
_MODIFIERS: dict[str, frozenset[str]] = {
    "string": frozenset({"missing", "exact", "contains"}),
    "token": frozenset({"missing", "not", "text", "above", "below", "of-type"}),
    "reference": frozenset({"missing", "identifier", "above", "below"}),
    "uri": frozenset({"missing", "above", "below"}),
    "date": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
}
# Known to FHIR but not implemented here: rejected rather than silently ignored,
# since ignoring them would widen the result (`code:in=…` matching everything).
_UNSUPPORTED_MODIFIERS = frozenset({"in", "not-in", "iterate", "type"})
# Handled by the HTTP layer, not by search.
_TRANSPORT_PARAMS = frozenset({"_format", "_pretty"})
_SUMMARY = frozenset({"true", "false", "text", "data", "count"})
_TOTAL = frozenset({"accurate", "estimate", "none"})


@dataclass(slots=True)
class ParsedSearch:
    """The store query plus what the server itself applies to the results."""

    query: SearchQuery
    unknown: list[str] = field(default_factory=list)  # parameter names not understood
    summary: str | None = None  # _summary: true | false | text | data | count
    elements: list[str] = field(default_factory=list)  # _elements
    include: list[str] = field(default_factory=list)  # _include values, as given
    revinclude: list[str] = field(default_factory=list)  # _revinclude values
    include_iterate: list[str] = field(default_factory=list)  # _include:iterate values
    revinclude_iterate: list[str] = field(default_factory=list)
    contained: str | None = None  # _contained: true | false | both
    contained_type: str | None = None  # _containedType: container | contained
    types: list[str] = field(default_factory=list)  # _type, for a search across types


def _bad(param: str, message: str, code: str = "value") -> FHIRError:
    return FHIRError.of(400, code, f"Search parameter {param}: {message}", expression=param)


def split_values(text: str, sep: str = ",") -> list[str]:
    """Split on `sep` where it is not escaped by a backslash; escapes are kept."""
    parts: list[str] = []
    start, i, n = 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == sep:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _prefixed(value: str) -> tuple[Prefix, str]:
    if len(value) > 2 and value[:2] in _PREFIXES and not value[2].isalpha():
        return cast(Prefix, value[:2]), value[2:]
    return "eq", value


_COMMON: dict[int, dict[str, SearchParamDef]] = {}


def _common_params(defs: Definitions) -> dict[str, SearchParamDef]:
    """Parameters every resource type has (`_tag`, `_profile`…): for searches across types."""
    found = _COMMON.get(id(defs))
    if found is None:
        tables = list(defs.search_params.values())
        common = set(tables[0]) if tables else set()
        for t in tables[1:]:
            common &= set(t)
        found = _COMMON[id(defs)] = {c: tables[0][c] for c in sorted(common)}
    return found


def shared_params(defs: Definitions, types: tuple[str, ...]) -> dict[str, SearchParamDef]:
    """Parameters that every one of `types` defines with the same kind: the ones a search
    across those types can use (search.html#_type); `patient` for Observation and
    Condition, say. The first type's definition stands for all (kinds and targets agree
    where it matters)."""
    tables = [defs.search_params.get(t, {}) for t in types]
    first = tables[0] if tables else {}
    return {
        code: sp
        for code, sp in first.items()
        if all(code in t and t[code].type == sp.type for t in tables[1:])
    }


def parse_search(
    resource_type: str | None,
    params: list[tuple[str, str]],
    defs: Definitions,
    tz: tzinfo = UTC,
    *,
    default_count: int = DEFAULT_COUNT,
    max_count: int = MAX_COUNT,
    types: tuple[str, ...] = (),
) -> ParsedSearch:
    """Parse search parameters for `resource_type` (None: a search across all types, or
    across `types` when given: `_type=Observation,Condition`).

    Raises FHIRError 400 for values that cannot be read (`birthdate=notadate`,
    `_count=abc`) and for modifiers this server does not implement.
    """
    if resource_type is None:
        table = shared_params(defs, types) if types else _common_params(defs)
    else:
        table = defs.search_params.get(resource_type, {})
    out = ParsedSearch(SearchQuery(resource_type, count=min(default_count, max_count)))
    out.query.types = types
    for name, raw in params:
        if name in _TRANSPORT_PARAMS:
            continue
        if _result_param(out, name, raw, table, max_count):
            continue
        if raw == "":
            continue  # an empty value places no constraint
        found: SearchCondition | None
        if is_chained(name):
            searched = (resource_type,) if resource_type is not None else types or None

            def leaf(label: str, leaf_name: str, value: str, params: Table) -> Condition | None:
                return _leaf(label, leaf_name, value, params, defs, tz)

            found = parse_chained(name, raw, table, searched, defs, leaf)
        else:
            found = _leaf(name, name, raw, table, defs, tz)
        if found is None:
            out.unknown.append(name)  # unknown codes, kinds this server cannot search
        else:
            out.query.conditions.append(found)
    return out


def _leaf(
    label: str,
    name: str,
    raw: str,
    table: dict[str, SearchParamDef],
    defs: Definitions,
    tz: tzinfo,
) -> Condition | None:
    """The condition for the ordinary parameter `name` (`code[:modifier]`) of a type with
    parameters `table`; None: not understood. `label` names it in errors (for the last
    parameter of a chain, the whole chain)."""
    code, _, modifier = name.partition(":")
    if code in TEXT_PARAMS:  # every type (and all types) has both, narrative or not
        return _text_condition(label, code, modifier or None, raw)
    sp = table.get(code)
    if sp is None or not sp.expression:  # _query: nothing indexed
        return None
    if code == "_id":
        kind: str = "token"
    elif code == "_lastUpdated":
        kind = "date"
    else:
        kind = sp.type
    if kind == "composite":  # None: a component this server does not know
        return _composite(label, modifier or None, raw, sp, defs, tz)
    if kind not in _MODIFIERS:  # special
        return None
    return _condition(label, code, modifier or None, raw, kind, sp, defs, tz)


def _text_condition(label: str, code: str, modifier: str | None, raw: str) -> Condition:
    """`_text`/`_content`: each comma-separated value's words (search_text.py), OR-ed."""
    if modifier is not None:
        raise _bad(label, f"the :{modifier} modifier does not apply to {code}", "invalid")
    values = tuple(
        TextCriterion(tuple(words(_unescape(part)))) for part in split_values(raw) if part
    )
    if not values:
        raise _bad(label, "no value")
    return Condition(code, "string", values)


def _int(name: str, raw: str) -> int:
    if not raw.isdigit():
        raise _bad(name, f"{raw!r} is not a non-negative integer")
    return int(raw)


def _result_param(
    out: ParsedSearch, name: str, raw: str, table: dict[str, SearchParamDef], max_count: int
) -> bool:
    """Apply one result parameter; False if `name` is not one."""
    code, _, modifier = name.partition(":")
    q = out.query
    if code == "_count":
        q.count = min(_int(name, raw), max_count)
    elif code == "_offset":
        q.offset = _int(name, raw)
    elif code == "_cursor":  # opaque keyset position from a next/previous link
        q.cursor = raw or None
    elif code == "_total":
        if raw not in _TOTAL:
            raise _bad(name, f"{raw!r} is not one of accurate, estimate, none")
        q.total = raw == "accurate"
        q.total_estimate = raw == "estimate"
    elif code == "_sort":
        for key in (k.strip() for k in raw.split(",")):
            if not key:
                continue
            desc = key.startswith("-")
            pcode = key[1:] if desc else key
            sp = table.get(pcode)
            if pcode == "_id":
                q.sort.append(SortKey("_id", "token", desc))
            elif pcode == "_lastUpdated":
                q.sort.append(SortKey("_lastUpdated", "date", desc))
            elif sp is None or sp.type in ("composite", "special"):
                out.unknown.append(f"_sort={key}")
            else:
                q.sort.append(SortKey(pcode, sp.type, desc))
    elif code == "_summary":
        if raw not in _SUMMARY:
            raise _bad(name, f"{raw!r} is not one of {', '.join(sorted(_SUMMARY))}")
        out.summary = raw
    elif code == "_elements":
        out.elements.extend(e.strip() for e in raw.split(",") if e.strip())
    elif code in ("_include", "_revinclude"):
        iterate = modifier in ("iterate", "recurse")
        target = {
            ("_include", False): out.include,
            ("_include", True): out.include_iterate,
            ("_revinclude", False): out.revinclude,
            ("_revinclude", True): out.revinclude_iterate,
        }[(code, iterate)]
        target.append(raw)
    elif code == "_contained":
        if raw not in ("true", "false", "both"):
            raise _bad(name, f"{raw!r} is not one of true, false, both")
        out.contained = raw
        q.contained = cast(Literal["false", "true", "both"], raw)
    elif code == "_containedType":
        if raw not in ("container", "contained"):
            raise _bad(name, f"{raw!r} is not one of container, contained")
        out.contained_type = raw
        q.contained_type = cast(Literal["container", "contained"], raw)
    elif code == "_type" and q.type is None:
        out.types.extend(t.strip() for t in raw.split(",") if t.strip())
    else:
        return False
    return True


def _condition(
    name: str,
    code: str,
    modifier: str | None,
    raw: str,
    kind: str,
    sp: SearchParamDef,
    defs: Definitions,
    tz: tzinfo,
) -> Condition:
    k = cast(Kind, kind)
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise _bad(name, f":missing takes true or false, not {raw!r}")
        return Condition(code, k, (), "missing", raw == "true")
    if kind == "token" and modifier in TERMINOLOGY_MODIFIERS:
        given = [_unescape(p) for p in split_values(raw) if p]
        if not given:
            raise _bad(name, "no value")
        pairs = terminology_codes(name, modifier, given)
        negated = "not" if modifier == "not-in" else None
        return Condition(code, k, tuple(TokenCriterion(s, c) for s, c in pairs), negated)
    if modifier is not None and modifier not in _MODIFIERS[kind]:
        is_type = kind == "reference" and modifier in defs.resource_types
        if not is_type:
            if modifier in _UNSUPPORTED_MODIFIERS:
                raise _bad(name, f"the :{modifier} modifier is not supported", "not-supported")
            raise _bad(
                name, f"the :{modifier} modifier does not apply to {kind} parameters", "invalid"
            )
        if sp.targets and modifier not in sp.targets:
            raise _bad(name, f"{modifier} is not a target type of {code}")
    values: list[Criterion] = []
    parts = split_values(raw)
    if len(parts) > MAX_VALUES:
        raise _bad(name, f"{len(parts)} values; at most {MAX_VALUES} are supported", "too-costly")
    for part in parts:
        if part == "":
            continue
        values.append(_criterion(name, code, modifier, part, kind, sp, defs, tz))
    if not values:
        raise _bad(name, "no value")
    return Condition(code, k, tuple(values), modifier)


def _criterion(
    name: str,
    code: str,
    modifier: str | None,
    part: str,
    kind: str,
    sp: SearchParamDef,
    defs: Definitions,
    tz: tzinfo,
) -> Criterion:
    if kind == "token" or (kind == "reference" and modifier == "identifier"):
        if modifier == "text":
            return StringCriterion(normalize_string(_unescape(part)))
        if modifier == "of-type":
            pieces = split_values(part, "|")
            if len(pieces) != 3 or not all(pieces[1:]):
                raise _bad(name, f":of-type takes system|code|value, not {part!r}")
            system, code, value = (_unescape(x) for x in pieces)
            return TokenCriterion(of_type_system(system or None, code), value)
        return _token(part)
    if kind == "string":
        text = _unescape(part)
        return StringCriterion(normalize_string(text), text if modifier == "exact" else None)
    if kind == "date":
        prefix, value = _prefixed(part)
        r = date_range(_unescape(value), tz)
        if r is None:
            raise _bad(name, f"{part!r} is not a date, dateTime or instant")
        return DateCriterion(prefix, r[0], r[1])
    if kind == "number":
        prefix, value = _prefixed(part)
        n = number_range(_unescape(value))
        if n is None:
            raise _bad(name, f"{part!r} is not a number")
        return NumberCriterion(prefix, *n)
    if kind == "quantity":
        return _quantity(name, part)
    if kind == "reference":
        return _reference(name, modifier, part, sp, defs)
    return UriCriterion(_unescape(part))


def _token(part: str) -> TokenCriterion:
    pieces = split_values(part, "|")
    if len(pieces) == 1:
        return TokenCriterion(None, _unescape(part))
    system, code = _unescape(pieces[0]), _unescape("|".join(pieces[1:]))
    if system == "":
        return TokenCriterion(None, code or None, no_system=True)
    return TokenCriterion(system, code or None)


def _quantity(name: str, part: str) -> QuantityCriterion:
    pieces = split_values(part, "|")
    if len(pieces) not in (1, 3):
        raise _bad(name, f"{part!r} is not [prefix]number[|system|code]")
    prefix, value = _prefixed(pieces[0])
    n = number_range(_unescape(value))
    if n is None:
        raise _bad(name, f"{part!r} does not start with a number")
    system = _unescape(pieces[1]) or None if len(pieces) == 3 else None
    unit = _unescape(pieces[2]) or None if len(pieces) == 3 else None
    return QuantityCriterion(prefix, *n, system, unit)


def _reference(
    name: str, modifier: str | None, part: str, sp: SearchParamDef, defs: Definitions
) -> ReferenceCriterion:
    text = _unescape(part)
    type_hint = modifier if modifier in defs.resource_types else None
    if ":" in text:  # absolute, or a canonical with |version
        url, _, version = text.partition("|")
        parsed = parse_reference(url, defs.resource_types)
        if parsed is None:
            raise _bad(name, f"{text!r} is not a reference")
        return ReferenceCriterion(
            parsed.type, parsed.id, parsed.url or url, version or parsed.version
        )
    if "/" in text:
        parsed = parse_reference(text, defs.resource_types)
        if parsed is None:
            raise _bad(name, f"{text!r} is not a reference (Type/id)")
        if type_hint is not None and parsed.type != type_hint:
            raise _bad(name, f"{text!r} is not a {type_hint}")
        return ReferenceCriterion(parsed.type, parsed.id, None, parsed.version)
    if type_hint is None and len(sp.targets) == 1:
        type_hint = sp.targets[0]  # only one type can be meant
    return ReferenceCriterion(type_hint, text)


def _composite(
    name: str, modifier: str | None, raw: str, sp: SearchParamDef, defs: Definitions, tz: tzinfo
) -> Condition | None:
    """A composite condition (`search_composite`); None if a component is unknown."""
    components = component_defs(sp, defs)
    if components is None:
        return None
    pieces = [split_values(part, "$") for part in split_values(raw) if part != ""]

    def read(kind: str, csp: SearchParamDef, text: str) -> Criterion:
        return _criterion(name, csp.code, None, text, kind, csp, defs, tz)

    return parse_composite(name, modifier, raw, pieces, sp, components, read)
