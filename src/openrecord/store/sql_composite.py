"""Composite search parameters to SQL: the components of one instance, joined on n.

The index keeps each component of a composite instance as a row of its kind's table
under a parameter of its own (`code-value-quantity$0`, `code-value-quantity$1`), and
the rows of one instance get consecutive `n` (component i at base + i; `_common`
writes them). A criterion `a$b` matches when a row of component 0 matches `a` and the
row of component 1 at the same rid and n + 1 matches `b`: both values come from the
same instance (one Observation.component), never from two different ones.

Each component is matched by the per-kind fragment `sql_search` uses for ordinary
parameters, inside a one-table subquery, so its bare column names need no alias;
both planners flatten these subqueries into a join on the (rid, n) primary keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from openrecord.store.base import UnsupportedSearch
from openrecord.store.query import CompositeCriterion, Condition, Criterion

__all__ = ["component_code", "composite_condition"]

Frag = tuple[str, list[Any]]
PidFilter = Callable[[str], Frag | None]
Match = Callable[[Condition, Criterion], Frag | None]

_TRUE: Frag = ("1 = 1", [])
_FALSE: Frag = ("1 = 0", [])


def component_code(code: str, index: int) -> str:
    """The search_param code the index rows of component `index` of `code` are kept under."""
    return f"{code}${index}"


def _has_nul(v: Criterion) -> bool:
    """No stored text holds NUL (PostgreSQL cannot): such a value matches nothing."""
    return any(type(x) is str and "\x00" in x for x in (getattr(v, f) for f in v.__slots__))


def composite_condition(
    c: Condition,
    pid_filter: PidFilter,
    match: Match,
    tables: Mapping[str, str],
    rid_col: str = "r.rid",
) -> Frag:
    """`rid_col IN (...)` for a composite condition: its values OR-ed, or `:missing`.

    `pid_filter(code)` and `match(condition, criterion)` are the search builder's;
    `tables` maps a kind to its index table.
    """
    kinds = c.component_kinds
    if not kinds or any(k not in tables for k in kinds):
        raise UnsupportedSearch(f"{c.param}: unknown component kinds {kinds!r}")
    if c.missing is not None or c.modifier == "missing":
        if c.missing is None:
            raise UnsupportedSearch(f"{c.param}:missing needs true or false")
        # every instance has a row for each component, so component 0 stands for it
        pid = pid_filter(component_code(c.param, 0))
        if pid is None:
            return _TRUE if c.missing else _FALSE
        op = "NOT IN" if c.missing else "IN"
        return f"{rid_col} {op} (SELECT rid FROM {tables[kinds[0]]} WHERE {pid[0]})", pid[1]
    if c.modifier is not None:
        raise UnsupportedSearch(f"modifier :{c.modifier} is not supported on composite parameters")
    subs: list[Frag] = []
    for v in c.values:
        if not isinstance(v, CompositeCriterion):
            raise UnsupportedSearch(f"{type(v).__name__} does not fit a composite parameter")
        sub = _instance(c, v, pid_filter, match, tables)
        if sub is not None:
            subs.append(sub)
    if not subs:
        return _FALSE
    params: list[Any] = []
    for _, p in subs:
        params.extend(p)
    return f"{rid_col} IN ({' UNION ALL '.join(s for s, _ in subs)})", params


def _instance(
    c: Condition,
    v: CompositeCriterion,
    pid_filter: PidFilter,
    match: Match,
    tables: Mapping[str, str],
) -> Frag | None:
    """The rids with one instance whose components match `v`; None: none can."""
    kinds = c.component_kinds
    if len(v.components) != len(kinds):
        raise UnsupportedSearch(
            f"{c.param} has {len(kinds)} components, the value has {len(v.components)}"
        )
    sql: list[str] = []
    params: list[Any] = []
    for i, (kind, crit) in enumerate(zip(kinds, v.components, strict=True)):
        if isinstance(crit, CompositeCriterion):
            raise UnsupportedSearch(f"{c.param}: a component cannot be composite")
        if _has_nul(crit):
            return None
        code = component_code(c.param, i)
        pid = pid_filter(code)
        if pid is None:
            return None  # no resource has this component: nothing matches
        kind_literal = cast(Any, kind)
        found = match(Condition(code, kind_literal, (crit,)), crit)
        if found is None:
            return None
        sub = f"(SELECT rid, n FROM {tables[kind]} WHERE {pid[0]} AND ({found[0]})) c{i}"
        if i == 0:
            sql.append(f"SELECT c0.rid FROM {sub}")
        else:
            sql.append(f"JOIN {sub} ON c{i}.rid = c0.rid AND c{i}.n = c0.n + {i}")
        params += pid[1] + found[1]
    return " ".join(sql), params
