"""Token modifiers answered by terminology: `:in`, `:not-in`, `:above`, `:below` (search.html).

Each becomes an ordinary token condition over the (system, code) pairs given here
(`search_query.py` builds it): `:in` the value set's expansion (OR-ed), `:not-in` the
same under `:not`, `:below` the code and every code it subsumes, `:above` the code and
every code that subsumes it. Value sets and code systems that are not loaded are a
400, never an empty or unfiltered search.
"""

from __future__ import annotations

from openrecord.fhir.outcome import FHIRError
from openrecord.fhir.terminology import terminology

__all__ = ["EMPTY_SET", "MAX_CODES", "TERMINOLOGY_MODIFIERS", "terminology_codes"]

TERMINOLOGY_MODIFIERS = frozenset({"in", "not-in", "above", "below"})
MAX_CODES = 2000  # codes one condition may expand to (two bound SQL values each)
# What an empty value set stands for: a pair no resource carries, so `:in` matches
# nothing and `:not-in` everything.
EMPTY_SET = ("urn:openrecord:empty-value-set", "-")


def _bad(name: str, message: str, code: str = "value") -> FHIRError:
    return FHIRError.of(400, code, f"Search parameter {name}: {message}", expression=name)


def terminology_codes(name: str, modifier: str, values: list[str]) -> list[tuple[str, str]]:
    """The (system, code) pairs `name:modifier=values` stands for (values unescaped)."""
    term = terminology()
    pairs: dict[tuple[str, str], None] = {}
    for value in values:
        if modifier in ("in", "not-in"):
            if value.split("|")[0] not in term.value_sets:
                raise _bad(name, f"value set {value!r} is not known here", "not-supported")
            entries = term.entries(value.split("|")[0])
            if entries is None:
                raise _bad(
                    name,
                    f"value set {value!r} draws on a terminology that is not loaded here",
                    "not-supported",
                )
            pairs.update(((e.system, e.code), None) for e in entries)
        else:
            system, sep, code = value.partition("|")
            if not sep or not system or not code:
                raise _bad(name, f":{modifier} takes system|code, not {value!r}")
            cs = term.code_systems.get(system)
            if cs is None:
                raise _bad(name, f"code system {system!r} is not known here", "not-supported")
            concept = cs.get(code)
            if concept is None:
                raise _bad(name, f"code {code!r} is not known in {system!r}", "not-found")
            related = (
                cs.descendants(concept.code)
                if modifier == "below"
                else sorted(cs.ancestors(concept.code))
            )
            pairs.update(((system, c), None) for c in [concept.code, *related])
        if len(pairs) > MAX_CODES:
            raise _bad(
                name, f"stands for more than {MAX_CODES} codes; narrow it down", "too-costly"
            )
    return list(pairs) or [EMPTY_SET]
