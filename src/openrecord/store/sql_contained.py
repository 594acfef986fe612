"""Searches inside contained resources (`_contained=true|both`, search.html#contained).

A contained resource's index rows are its container's rows `n_lo..n_hi` (under
`#Type` parameters, which no other search reads), named by a row of `idx_contained`
(`c`). `[type]?…&_contained=true` reads the `idx_contained` rows of that type and
checks each condition on the rows of that one block:

    EXISTS (SELECT 1 FROM idx_token x WHERE x.rid = c.rid
            AND x.n BETWEEN c.n_lo AND c.n_hi AND +x.pid = ? AND <values>)

so every AND-ed condition holds for the same contained resource. `both` adds the
top-level matches (the ordinary search). `_containedType=container` (the default)
returns each matching container once, `contained` each match with the id of the
contained resource that matched ("" for a top-level one).

Chains, `_has`, composites, `_text`/`_content`, `_list`, `_lastUpdated` (a
contained resource has none of its own), compartments, `_sort` and system-level
searches answer 400 (UnsupportedSearch). Pages are in (container rid, contained id)
order with `next` cursors only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from openrecord.store.base import SearchPage, StoredVersion, UnsupportedSearch
from openrecord.store.query import Condition, Criterion, SearchCondition, SearchQuery
from openrecord.store.sql_chain import Scope
from openrecord.store.sql_modifiers import presence
from openrecord.store.sql_paging import Boundary, decode_cursor, encode_cursor

__all__ = ["ContainedBuilder", "contained_condition", "run_contained"]

Frag = tuple[str, list[Any]]
Fetch = Callable[[str, list[Any]], list[tuple[Any, ...]]]

_TRUE: Frag = ("1 = 1", [])
_FALSE: Frag = ("1 = 0", [])
_BODY = "JOIN history h ON h.rid = r.rid AND h.version = r.version"
_NOT_HERE = frozenset({"_lastUpdated", "_list", "_text", "_content"})


class ContainedBuilder(Protocol):
    """What this module needs from the search builder (sql_search._Builder)."""

    @property
    def false(self) -> str: ...

    def where(self) -> Frag: ...

    def condition(
        self, c: SearchCondition, scope: Scope | None = None, *, check: bool = False
    ) -> Frag: ...

    def pid_filter(
        self, code: str, col: str = "pid", scope: Scope | None = None
    ) -> Frag | None: ...

    def table_of(self, c: Condition) -> str: ...

    def values_of(self, c: Condition) -> Frag | None: ...

    def special(self, c: Condition, col: str, param: str) -> Frag: ...

    def match(self, c: Condition, v: Criterion) -> Frag | None: ...


def contained_condition(b: ContainedBuilder, c: SearchCondition, scope: Scope) -> Frag:
    """`c` on the contained resource of the idx_contained row `scope.alias`."""
    if not isinstance(c, Condition):
        raise UnsupportedSearch("chains and _has are not supported with _contained")
    a = scope.alias
    if c.param == "_id":
        return b.special(c, f"{a}.cid", "_id")
    if c.param in _NOT_HERE or c.kind == "composite":
        raise UnsupportedSearch(f"{c.param} is not supported with _contained")
    table = b.table_of(c)
    pid = b.pid_filter(c.param, "+x.pid", scope=scope)
    block = f"x.rid = {a}.rid AND x.n BETWEEN {a}.n_lo AND {a}.n_hi"
    missing, negate = presence(c)
    if missing is not None:
        if pid is None:
            return _TRUE if missing else _FALSE
        sub = f"SELECT 1 FROM {table} x WHERE {block} AND {pid[0]}"
        params = pid[1]
        if c.kind == "reference":  # a Reference with only an identifier is present too
            sub += f" UNION ALL SELECT 1 FROM idx_token x WHERE {block} AND {pid[0]}"
            params = pid[1] * 2
        return f"{'NOT ' if missing else ''}EXISTS ({sub})", params
    values = b.values_of(c)
    if pid is None or values is None:
        return _TRUE if negate else _FALSE
    sub = f"SELECT 1 FROM {table} x WHERE {block} AND {pid[0]} AND {values[0]}"
    return f"{'NOT ' if negate else ''}EXISTS ({sub})", pid[1] + values[1]


def _matches(b: ContainedBuilder, query: SearchQuery, type: str, rid_only: bool) -> Frag:
    """(rid[, cid]) of every match: contained ones, and top-level ones for `both`."""
    scope = Scope(("#" + type,), "c", contained=True)
    frags = [("c.type = ?", [type]), *(b.condition(c, scope) for c in query.conditions)]
    params: list[Any] = []
    for _, p in frags:
        params.extend(p)
    cols = "c.rid" if rid_only else "c.rid AS rid, c.cid AS cid"
    sql = f"SELECT {cols} FROM idx_contained c WHERE {' AND '.join(s for s, _ in frags)}"
    if query.contained == "both":
        where, wparams = b.where()
        cols = "r.rid" if rid_only else "r.rid AS rid, '' AS cid"
        sql = f"SELECT {cols} FROM resource r WHERE {where} UNION ALL {sql}"
        params = [*wparams, *params]
    return sql, params


def run_contained(
    fetch: Fetch,
    query: SearchQuery,
    b: ContainedBuilder,
    select: str,
    to_version: Callable[[tuple[Any, ...]], StoredVersion],
) -> SearchPage:
    """One page of a `_contained=true|both` search on `query.type`; `select` names the
    columns `to_version` reads."""
    if query.type is None:
        raise UnsupportedSearch("_contained needs a resource type: [type]?_contained=true")
    if query.compartment is not None:
        raise UnsupportedSearch("_contained is not supported in a compartment search")
    if query.sort:
        raise UnsupportedSearch("_sort is not supported with _contained")
    by_cid = query.contained_type == "contained"
    sub, params = _matches(b, query, query.type, rid_only=not by_cid)
    live = f"r.deleted = {b.false}"
    if by_cid:
        source = f"({sub}) u JOIN resource r ON r.rid = u.rid {_BODY} WHERE {live}"
        order, keys = "u.rid, u.cid", "u.rid, u.cid"
    else:
        source = f"resource r {_BODY} WHERE {live} AND r.rid IN ({sub})"
        order, keys = "r.rid", "r.rid"
    total = None
    if query.total or query.total_estimate:
        total = int(fetch(f"SELECT count(*) FROM {source}", params)[0][0])
    count = max(query.count, 0)
    if count == 0 or total == 0:
        return SearchPage([], total)
    after: Frag = ("", [])
    if query.cursor:
        at = decode_cursor(query.cursor, query, 1 if by_cid else 0)
        if at.direction != "next":
            raise UnsupportedSearch("_contained searches page forward only")
        if by_cid:
            after = (" AND (u.rid > ? OR (u.rid = ? AND u.cid > ?))", [at.rid, at.rid, at.keys[0]])
        else:
            after = (" AND r.rid > ?", [at.rid])
    sql = f"SELECT {select}, {keys} FROM {source}{after[0]} ORDER BY {order} LIMIT ? OFFSET ?"
    offset = 0 if query.cursor else max(query.offset, 0)
    rows = fetch(sql, [*params, *after[1], count + 1, offset])
    more = len(rows) > count
    rows = rows[:count]
    width = len(rows[0]) - (2 if by_cid else 1) if rows else 0
    found: list[StoredVersion] = [to_version(r[:width]) for r in rows]
    next_cursor = None
    if more:
        last = rows[-1]
        boundary = Boundary("next", (str(last[width + 1]),) if by_cid else (), int(last[width]))
        next_cursor = encode_cursor(boundary, query)
    cids = tuple(str(r[width + 1]) for r in rows) if by_cid else ()
    return SearchPage(found, total, next_cursor, contained_ids=cids)
