"""Chained parameters and `_has` (search.html#chaining, #has) to store conditions.

`subject:Patient.name=peter` follows a reference parameter to its target and tests a
parameter there; the untyped `subject.name=peter` tries every target type of
`subject` that defines `name`. `_has:Observation:patient:code=1234-5` reverses it:
some Observation whose `patient` refers to the searched resource has that code. Both
nest (`subject:Patient.organization.name`, `_has:Observation:patient:_has:…`), up
to MAX_CHAIN_DEPTH hops. The last parameter is an ordinary one, read by the caller's
`Leaf` (the same code as unchained parameters), with its modifier and OR-ed values.

Outcomes follow the rest of search: a parameter this server does not know (an unknown
type or code anywhere in the chain) gives None, which the caller reports as unknown;
malformed syntax, too deep or too broad chains, and impossible combinations (a type
that is not a target of the reference) raise a 400.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from openrecord.fhir.definitions import Definitions, SearchParamDef
from openrecord.fhir.outcome import FHIRError
from openrecord.store.query import (
    AnyCondition,
    ChainCondition,
    Condition,
    HasCondition,
    SearchCondition,
)

__all__ = [
    "MAX_CHAIN_DEPTH",
    "MAX_CHAIN_SIZE",
    "Leaf",
    "chained_types",
    "is_chained",
    "parse_chained",
]

MAX_CHAIN_DEPTH = 4  # hops (`.` or `_has:`) in one parameter
MAX_CHAIN_SIZE = 100  # conditions an untyped chain may expand to

Table = dict[str, SearchParamDef]
# (label for messages, `code[:modifier]`, raw value, the type's parameters) -> the
# condition, or None when the parameter is not understood
Leaf = Callable[[str, str, str, Table], Condition | None]

_Result = SearchCondition | None | FHIRError


def is_chained(name: str) -> bool:
    """A chained (`a.b`) or reverse-chained (`_has:…`) parameter name."""
    return "." in name or name.partition(":")[0] == "_has"


def chained_types(conditions: Iterable[SearchCondition]) -> set[str]:
    """The types that chains and `_has` in `conditions` look into: a search reveals
    something about them, so access to search them is checked too."""
    found: set[str] = set()
    for c in conditions:
        if isinstance(c, ChainCondition):
            found.update(c.target_types)
            found |= chained_types((c.inner,))
        elif isinstance(c, HasCondition):
            found.add(c.type)
            found |= chained_types((c.inner,))
        elif isinstance(c, AnyCondition):
            found |= chained_types(c.options)
    return found


def _bad(label: str, message: str, code: str = "invalid") -> FHIRError:
    return FHIRError.of(400, code, f"Search parameter {label}: {message}", expression=label)


def parse_chained(
    name: str,
    raw: str,
    table: Table,
    searched: tuple[str, ...] | None,
    defs: Definitions,
    leaf: Leaf,
) -> SearchCondition | None:
    """The condition for the chained or `_has` parameter `name=raw`; None: unknown.

    `table` holds the searched type's parameters, `searched` its types (None: any).
    """
    hops = name.count(".") + name.count("_has:")
    if hops > MAX_CHAIN_DEPTH:
        raise _bad(
            name[:200],
            f"{hops} levels of chaining; at most {MAX_CHAIN_DEPTH} are supported",
            "too-costly",
        )
    parser = _Parser(name, raw, defs, leaf)
    try:
        found = parser.parse(name, table, searched)
    except _TooBroad:
        raise _bad(
            name,
            "the chain reaches too many target types; name them (`param:Type.`)",
            "too-costly",
        ) from None
    if isinstance(found, FHIRError):
        raise found
    return found


class _TooBroad(Exception):
    """An untyped chain expanded past MAX_CHAIN_SIZE conditions (raised, not returned,
    so that no target type swallows it)."""


class _Parser:
    """One parameter's parse: untyped chains try a tail once per target type, so
    results are memoized by (tail, type)."""

    def __init__(self, label: str, raw: str, defs: Definitions, leaf: Leaf) -> None:
        self.label = label
        self.raw = raw
        self.defs = defs
        self.leaf = leaf
        self.memo: dict[tuple[str, str], _Result] = {}
        self.sizes: dict[int, int] = {}  # id of a condition built here -> its tree size

    def sized(self, c: SearchCondition, size: int) -> SearchCondition:
        """Record `c`'s size (conditions once expanded into SQL), bounded as it grows
        so that a broad chain stops early rather than after building a huge tree."""
        if size > MAX_CHAIN_SIZE:
            raise _TooBroad
        self.sizes[id(c)] = size
        return c

    def size(self, c: SearchCondition) -> int:
        return self.sizes.get(id(c), 1)  # 1: a leaf

    def parse(self, name: str, table: Table, searched: tuple[str, ...] | None) -> _Result:
        """Errors are returned, not raised, so an untyped chain can skip the target
        types a value does not fit as long as one fits."""
        try:
            if name == "_has" or name.startswith("_has:"):
                return self.has(name, searched)
            if "." in name:
                return self.chain(name, table)
            return self.leaf(self.label, name, self.raw, table)
        except FHIRError as err:
            return err

    def on_type(self, name: str, type: str) -> _Result:
        key = (name, type)
        if key not in self.memo:
            self.memo[key] = self.parse(name, self.defs.search_params.get(type, {}), (type,))
        return self.memo[key]

    def has(self, name: str, searched: tuple[str, ...] | None) -> _Result:
        parts = name.split(":", 3)
        if len(parts) < 4 or not all(parts):
            return _bad(self.label, "_has takes the form _has:Type:parameter:parameter")
        _, source, param, rest = parts
        if source not in self.defs.resource_types:
            return None
        sp = self.defs.search_param(source, param)
        if sp is None:
            return None
        if sp.type != "reference":
            return _bad(self.label, f"{source}.{param} is a {sp.type} parameter, not a reference")
        if searched is not None and sp.targets and not set(searched) & set(sp.targets):
            wanted = " or ".join(searched)
            return _bad(self.label, f"{source}.{param} cannot refer to {wanted}")
        inner = self.on_type(rest, source)
        if inner is None or isinstance(inner, FHIRError):
            return inner
        return self.sized(HasCondition(source, param, inner), 1 + self.size(inner))

    def chain(self, name: str, table: Table) -> _Result:
        head, _, tail = name.partition(".")
        code, _, type_name = head.partition(":")
        if not code or not tail or ":" in type_name or (":" in head and not type_name):
            return _bad(self.label, "a chain takes the form param[:Type].param")
        if type_name and type_name not in self.defs.resource_types:
            if type_name[:1].isupper():
                return None  # a type this server does not know
            return _bad(self.label, f"only a resource type can precede a chain, not :{type_name}")
        sp = table.get(code)
        if sp is None:
            return None
        if sp.type != "reference":
            return _bad(self.label, f"{code} is a {sp.type} parameter; only references chain")
        if type_name:
            if sp.targets and type_name not in sp.targets:
                return _bad(self.label, f"{type_name} is not a target type of {code}")
            inner = self.on_type(tail, type_name)
            if inner is None or isinstance(inner, FHIRError):
                return inner
            return self.sized(ChainCondition(code, (type_name,), inner), 1 + self.size(inner))
        return self.untyped(code, tail, sp.targets)

    def untyped(self, code: str, tail: str, targets: tuple[str, ...]) -> _Result:
        """Every target type that understands `tail`; types that read it alike share
        one ChainCondition."""
        groups: dict[SearchCondition, list[str]] = {}
        first_error: FHIRError | None = None
        for target in targets:
            inner = self.on_type(tail, target)
            if isinstance(inner, FHIRError):
                first_error = first_error or inner
            elif inner is not None:
                groups.setdefault(inner, []).append(target)
        if not groups:
            return first_error
        options = tuple(
            self.sized(ChainCondition(code, tuple(ts), inner), 1 + self.size(inner))
            for inner, ts in groups.items()
        )
        if len(options) == 1:
            return options[0]
        return self.sized(AnyCondition(options), sum(self.size(o) for o in options))
