"""Chained, reverse-chained (`_has`) and any-of conditions to SQL.

Each is one uncorrelated `rid IN (subquery)` over `idx_reference` joined to the
`resource` table on (type, id), so both planners can start from whichever side is
selective — usually the inner condition, itself a `rid IN (…)` on an index table:

    chain  r.rid IN (SELECT x.rid FROM resource t JOIN idx_reference x
                     ON x.ref_id = t.id AND x.ref_type = t.type
                     WHERE x.pid = ? AND t.type IN (…) AND t.deleted = false
                     AND <inner on t>)
    _has   r.rid IN (SELECT t.rid FROM resource s JOIN idx_reference x ON x.rid = s.rid
                     JOIN resource t ON t.type = x.ref_type AND t.id = x.ref_id
                     WHERE x.pid = ? AND s.deleted = false AND <inner on s>)

Only current, non-deleted resources count on both ends: index rows exist only for
current versions, and the `deleted` tests exclude deleted targets and sources.
Aliases carry the nesting depth (t1, x2…), so nested subqueries never shadow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from openrecord.store.base import UnsupportedSearch
from openrecord.store.query import AnyCondition, ChainCondition, HasCondition, SearchCondition

__all__ = ["MAX_SQL_DEPTH", "ChainBuilder", "Scope", "chained_condition"]

Frag = tuple[str, list[Any]]

MAX_SQL_DEPTH = 8  # the parser allows 4 hops; this only guards hand-built queries

_FALSE: Frag = ("1 = 0", [])


@dataclass(frozen=True, slots=True)
class Scope:
    """The resources a condition tests: their types (None: any type) and the alias of
    their `resource` row (`r` for the searched resources)."""

    types: tuple[str, ...] | None
    alias: str = "r"
    depth: int = 0
    # `c`, a row of idx_contained: the contained resources' `#Type` rows (sql_contained.py)
    contained: bool = False

    def nested(self, types: tuple[str, ...], prefix: str) -> Scope:
        """The scope one hop further, its alias named by `prefix` and the new depth."""
        depth = self.depth + 1
        if depth > MAX_SQL_DEPTH:
            raise UnsupportedSearch(f"chains nest at most {MAX_SQL_DEPTH} levels")
        return Scope(types, f"{prefix}{depth}", depth)


class ChainBuilder(Protocol):
    """What this module needs from the search builder."""

    @property
    def false(self) -> str: ...

    def condition(self, c: SearchCondition, scope: Scope | None = None) -> Frag: ...

    def pid_filter(
        self, code: str, col: str = "pid", scope: Scope | None = None
    ) -> Frag | None: ...

    def local_only(self, alias: str = "") -> Frag: ...


def _in(col: str, values: tuple[str, ...]) -> Frag:
    if len(values) == 1:
        return f"{col} = ?", [values[0]]
    return f"{col} IN ({', '.join('?' for _ in values)})", list(values)


def chained_condition(
    b: ChainBuilder, c: SearchCondition, scope: Scope, *, check: bool = False
) -> Frag:
    """SQL for a ChainCondition, HasCondition or AnyCondition on `scope`'s resources.

    `check`: another condition drives the query (store/sql_plan.py), so test each
    candidate through its own reference rows rather than build the whole set."""
    if isinstance(c, ChainCondition):
        return _chain(b, c, scope, check)
    if isinstance(c, HasCondition):
        return _has(b, c, scope, check)
    if isinstance(c, AnyCondition):
        frags = [b.condition(o, scope) for o in c.options]
        if not frags:
            return _FALSE
        params: list[Any] = []
        for _, p in frags:
            params.extend(p)
        return "(" + " OR ".join(f"({s})" for s, _ in frags) + ")", params
    raise UnsupportedSearch(f"unsupported condition {type(c).__name__}")


def _chain(b: ChainBuilder, c: ChainCondition, scope: Scope, check: bool) -> Frag:
    """`scope`'s resources whose `c.param` refers to a live target matching `c.inner`,
    or to one of their own contained resources matching it (`_inside`)."""
    if not c.target_types:
        return _FALSE
    target = scope.nested(c.target_types, "t")
    x, t = f"x{target.depth}", target.alias
    pid = b.pid_filter(c.param, f"+{x}.pid" if check else f"{x}.pid", scope)
    inside = _inside(b, c, scope)
    inner = b.condition(c.inner, target) if pid is not None else _FALSE
    if inner[0] == _FALSE[0] or pid is None:  # no stored target can match
        if inside is None:
            return _FALSE
        return f"{scope.alias}.rid IN ({inside[0]})", inside[1]
    types = _in(f"{t}.type", c.target_types)
    local = b.local_only(x)  # not another server's resource with the same Type/id
    targets = (
        f"{local[0]} AND ({x}.ref_id, {x}.ref_type) IN (SELECT {t}.id, {t}.type FROM"
        f" resource {t} WHERE {types[0]} AND {t}.deleted = {b.false} AND {inner[0]})"
    )
    params = [*pid[1], *local[1], *types[1], *inner[1]]
    if check:  # the candidate's own reference rows, by its (rid, n) key
        sql = (
            f"EXISTS (SELECT 1 FROM idx_reference {x} WHERE {x}.rid = {scope.alias}.rid"
            f" AND {pid[0]} AND {targets})"
        )
        if inside is not None:
            sql = f"({sql} OR {scope.alias}.rid IN ({inside[0]}))"
            params += inside[1]
        return sql, params
    rows = f"SELECT {x}.rid FROM idx_reference {x} WHERE {pid[0]} AND {targets}"
    if inside is not None:
        rows = f"{rows} UNION {inside[0]}"
        params += inside[1]
    return f"{scope.alias}.rid IN ({rows})", params


def _inside(b: ChainBuilder, c: ChainCondition, scope: Scope) -> Frag | None:
    """Rids of resources whose `c.param` is a `#id` reference to one of their own
    contained resources of a target type for which `c.inner` holds: chained
    parameters are evaluated inside contained resources (search.html#contained).
    None when nothing contained can match, or when the inner condition is one a
    contained resource cannot answer (a further chain, `_has`)."""
    if scope.contained:
        return None
    depth = scope.depth + 1
    k, y = f"k{depth}", f"y{depth}"
    kinds = tuple("#" + t for t in c.target_types)
    pid = b.pid_filter(c.param, f"{y}.pid", scope)
    if pid is None:
        return None  # the reference was never indexed
    try:
        inner = b.condition(c.inner, Scope(kinds, k, depth, contained=True))
    except UnsupportedSearch:
        return None
    if inner[0] == _FALSE[0]:
        return None
    types = _in(f"{k}.type", c.target_types)
    sql = (
        f"SELECT {k}.rid FROM idx_contained {k} JOIN idx_reference {y} ON {y}.rid = {k}.rid"
        f" AND {y}.ref_type = {k}.type AND {y}.ref_id = '#' || {k}.cid"
        f" WHERE {types[0]} AND {pid[0]} AND {inner[0]}"
    )
    return sql, [*types[1], *pid[1], *inner[1]]


def _has(b: ChainBuilder, c: HasCondition, scope: Scope, check: bool) -> Frag:
    """`scope`'s resources that a live `c.type` matching `c.inner` refers to via `c.param`."""
    source = scope.nested((c.type,), "s")
    x, s = f"x{source.depth}", source.alias
    # `+`: reach the reference rows by rid, from the sources found, not by scanning
    # every reference the parameter has
    pid = b.pid_filter(c.param, f"+{x}.pid", source)
    if pid is None:
        return _FALSE
    inner = b.condition(c.inner, source)
    if inner[0] == _FALSE[0]:
        return _FALSE
    where = [pid]
    if scope.types is not None:
        where.append(_in(f"{x}.ref_type", scope.types))
    where.append(
        (
            f"{x}.rid IN (SELECT {s}.rid FROM resource {s} WHERE {s}.type = ?"
            f" AND {s}.deleted = {b.false} AND {inner[0]})",
            [c.type, *inner[1]],
        )
    )
    params: list[Any] = []
    for _, p in where:
        params.extend(p)
    a = scope.alias
    conditions = " AND ".join(w for w, _ in where)
    if check:  # references to the candidate, through the (pid, ref_id, ref_type) index
        pid_here = b.pid_filter(c.param, f"{x}.pid", source) or pid
        params = [*pid_here[1], *params[len(pid[1]) :]]
        rest = " AND ".join(w for w, _ in where[1:])
        sql = (
            f"EXISTS (SELECT 1 FROM idx_reference {x} WHERE {pid_here[0]}"
            f" AND {x}.ref_id = {a}.id AND {x}.ref_type = {a}.type AND {rest})"
        )
        return sql, params
    sql = (
        f"({a}.type, {a}.id) IN (SELECT {x}.ref_type, {x}.ref_id FROM idx_reference {x}"
        f" WHERE {conditions})"
    )
    return sql, params
