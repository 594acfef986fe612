"""Composite search values (`code-value-quantity=http://loinc.org|8480-6$gt100`).

A value is its components joined by `$` (`\\$` escapes one), each read as its
component parameter reads values: token forms `code`, `system|code`, `|code` and
`system|`; prefixes on number, date and quantity components. Commas OR whole values.
The only modifier is `:missing`. The syntax (splitting on `,` and `$`, reading one
component value) is `search_query`'s: it passes the pieces and `read_component` in,
so this module stays below it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from openrecord.fhir.definitions import Definitions, SearchParamDef
from openrecord.fhir.outcome import FHIRError
from openrecord.store.query import CompositeCriterion, Condition, Criterion

__all__ = ["ComponentReader", "component_defs", "parse_composite"]

# (component kind, component definition, the text of one component value) -> criterion
ComponentReader = Callable[[str, SearchParamDef, str], Criterion]

# R4 gives DocumentReference-relationship's components each other's definitions
# (relatesto, a reference, for relatesTo.code; relation, a token, for relatesTo.target).
# The index extractor goes by the data (a token for the code, a reference for the
# target), so the search swaps them back: component i reads as definition ORDER[i].
_ORDER_FIXES: dict[str, tuple[int, ...]] = {
    "http://hl7.org/fhir/SearchParameter/DocumentReference-relationship": (1, 0),
}

# Per Definitions object (custom search parameters make new ones): held weakly, so a
# dead one's entry goes with it and a new object reusing its id() is never served it.
_BY_URL: dict[int, tuple[weakref.ref[Definitions], dict[str, SearchParamDef]]] = {}


def _by_url(defs: Definitions) -> dict[str, SearchParamDef]:
    key = id(defs)
    found = _BY_URL.get(key)
    if found is None or found[0]() is not defs:
        table = {p.url: p for params in defs.search_params.values() for p in params.values()}
        found = _BY_URL[key] = (weakref.ref(defs, lambda _: _BY_URL.pop(key, None)), table)
    return found[1]


def component_defs(
    sp: SearchParamDef, defs: Definitions
) -> tuple[tuple[str, SearchParamDef], ...] | None:
    """(kind, definition) of each component of composite `sp`; None if one is unknown."""
    table = _by_url(defs)
    found = [table.get(url) for url, _ in sp.components]
    known = [d for d in found if d is not None]
    if not known or len(known) != len(found):
        return None
    order = _ORDER_FIXES.get(sp.url)
    if order is not None and sorted(order) == list(range(len(known))):
        known = [known[i] for i in order]
    if any(d.type in ("composite", "special") for d in known):
        return None
    return tuple((d.type, d) for d in known)


def _bad(name: str, message: str, code: str = "value") -> FHIRError:
    return FHIRError.of(400, code, f"Search parameter {name}: {message}", expression=name)


def parse_composite(
    name: str,
    modifier: str | None,
    raw: str,
    values_pieces: list[list[str]],
    sp: SearchParamDef,
    components: tuple[tuple[str, SearchParamDef], ...],
    read_component: ComponentReader,
) -> Condition:
    """The condition for `name=raw` on composite `sp`; FHIRError 400 if unreadable.

    `values_pieces`: each comma-separated value of `raw`, split on unescaped `$`.
    """
    kinds = tuple(k for k, _ in components)
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise _bad(name, f":missing takes true or false, not {raw!r}")
        return Condition(sp.code, "composite", (), "missing", raw == "true", kinds)
    if modifier is not None:
        raise _bad(name, f"the :{modifier} modifier does not apply to composite parameters")
    values: list[Criterion] = []
    for pieces in values_pieces:
        part = "$".join(pieces)
        if len(pieces) != len(components):
            raise _bad(
                name,
                f"{part!r} has {len(pieces)} component(s); {sp.code} takes {len(components)}"
                " separated by $",
            )
        if any(p == "" for p in pieces):
            raise _bad(name, f"{part!r} has an empty component")
        values.append(
            CompositeCriterion(
                tuple(read_component(k, d, p) for (k, d), p in zip(components, pieces, strict=True))
            )
        )
    if not values:
        raise _bad(name, "no value")
    return Condition(sp.code, "composite", tuple(values), component_kinds=kinds)
