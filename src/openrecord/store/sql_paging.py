"""Keyset (cursor) paging, bounded totals and EXPLAIN for searches, both backends.

Offset paging skips or repeats rows when others write between page fetches. Here a
page starts strictly after (or, walking back, before) the boundary row of the page
the client saw: its sort-key values and rid, carried in an opaque cursor. The order is
the search's own (`_sort` keys, each NULLS LAST, then rid ascending); comparing a row
with the boundary lexicographically in that order finds where the next page starts.

Rule for resources that change between pages: every page is read from the current
data. A resource that stays unchanged appears exactly once. A resource updated before
the walk reaches it appears once, in its current version, at its new sort position —
unless that position is already behind the walk (then it is not shown). Created
resources appear if their position is ahead; deleted ones vanish. Without `_sort` the
position is the rid, which never changes, so no resource is ever shown twice; with
`_sort`, a resource already shown whose key is later updated to a value ahead of the
walk is shown again, in its new version.

The cursor is base64url JSON (direction, key values, rid, query fingerprint) with a
checksum. The checksum is an integrity check, not a secret: a forged cursor still only
picks a starting point inside the same criteria, so it grants nothing.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any, Literal

import orjson

from openrecord.store.base import InvalidCursor, SearchPage, StoredVersion
from openrecord.store.query import SearchQuery

__all__ = [
    "ESTIMATE_CAP",
    "Boundary",
    "SortColumn",
    "decode_cursor",
    "encode_cursor",
    "estimated_total",
    "explain_text",
    "page_query",
    "query_fingerprint",
    "run_page",
]

Frag = tuple[str, list[Any]]
Fetch = Callable[[str, list[Any]], list[tuple[Any, ...]]]
Direction = Literal["next", "previous"]
KeyValue = str | int | float | None

# `_total=estimate` counts exactly up to this many matches; beyond it PostgreSQL gives
# its planner's estimate and SQLite (which has none) gives no total.
ESTIMATE_CAP = 10_000

_CHECK_KEY = b"openrecord search cursor v1"
_VERSION = 1
_BODY = "JOIN history h ON h.rid = r.rid AND h.version = r.version"
# SearchQuery fields that choose the page, not the list: a cursor outlives changes to them.
_PAGING_FIELDS = frozenset({"count", "offset", "total", "total_estimate", "cursor", "explain"})


@dataclass(frozen=True, slots=True)
class SortColumn:
    """One sort key: an SQL expression over `r` (NULL: no resource has the parameter)."""

    expr: str
    params: list[Any]
    descending: bool


@dataclass(frozen=True, slots=True)
class Boundary:
    """Where a page starts: after (`next`) or before (`previous`) this row."""

    direction: Direction
    keys: tuple[KeyValue, ...]
    rid: int


def _canonical(value: Any) -> Any:
    """A JSON-able form of the query that is the same in every process (no set order)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [type(value).__name__] + [
            [f.name, _canonical(getattr(value, f.name))] for f in dataclasses.fields(value)
        ]
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_canonical(v) for v in value), key=repr)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def query_fingerprint(query: SearchQuery) -> str:
    """Identifies the result list (criteria, types, sort), not the page of it."""
    parts = [
        [f.name, _canonical(getattr(query, f.name))]
        for f in dataclasses.fields(query)
        if f.name not in _PAGING_FIELDS
    ]
    raw = orjson.dumps(parts, option=orjson.OPT_NON_STR_KEYS)
    return blake2b(raw, digest_size=8).hexdigest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check(payload: bytes) -> bytes:
    return blake2b(payload, key=_CHECK_KEY, digest_size=12).digest()


def encode_cursor(boundary: Boundary, query: SearchQuery) -> str:
    payload = orjson.dumps(
        [
            _VERSION,
            boundary.direction[0],
            list(boundary.keys),
            boundary.rid,
            query_fingerprint(query),
        ]
    )
    return f"{_b64(payload)}.{_b64(_check(payload))}"


def decode_cursor(token: str, query: SearchQuery, key_count: int) -> Boundary:
    """The boundary in `token`; InvalidCursor if unreadable, altered or another query's."""
    body, _, check = token.partition(".")
    try:
        payload, mac = _unb64(body), _unb64(check)
        data = orjson.loads(payload)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise InvalidCursor("the _cursor value is not a cursor this server issued") from None
    if mac != _check(payload):
        raise InvalidCursor("the _cursor value was altered")
    ok = (
        isinstance(data, list)
        and len(data) == 5
        and data[0] == _VERSION
        and data[1] in ("n", "p")
        and isinstance(data[2], list)
        and all(v is None or type(v) in (str, int, float) for v in data[2])
        and type(data[3]) is int
    )
    if not ok:
        raise InvalidCursor("the _cursor value is not a cursor this server issued")
    if data[4] != query_fingerprint(query) or len(data[2]) != key_count:
        raise InvalidCursor("the _cursor value belongs to another search (criteria or _sort)")
    direction: Direction = "next" if data[1] == "n" else "previous"
    return Boundary(direction, tuple(data[2]), data[3])


def _order(names: Sequence[str], columns: Sequence[SortColumn], rid: str, back: bool) -> str:
    """ORDER BY for the search order, or its exact reverse when walking back."""
    keys = []
    for name, col in zip(names, columns, strict=True):
        desc = col.descending != back
        keys.append(f"{name} {'DESC' if desc else 'ASC'} NULLS {'FIRST' if back else 'LAST'}")
    keys.append(f"{rid} {'DESC' if back else 'ASC'}")
    return ", ".join(keys)


def _beyond(
    names: Sequence[str], columns: Sequence[SortColumn], rid: str, at: Boundary, back: bool
) -> Frag:
    """Rows strictly after `at` in the (possibly reversed) order: lexicographic compare."""
    terms: list[Frag] = []
    equal: list[Frag] = []  # the earlier keys equal to the boundary's

    def term(sql: str, params: list[Any]) -> None:
        eq_params = [p for _, ps in equal for p in ps]
        terms.append((" AND ".join([*(s for s, _ in equal), sql]), [*eq_params, *params]))

    for name, col, value in zip(names, columns, at.keys, strict=True):
        if value is None:
            if back:  # NULLS FIRST: every value comes after a null
                term(f"{name} IS NOT NULL", [])
            equal.append((f"{name} IS NULL", []))
            continue
        op = "<" if col.descending != back else ">"
        term(f"({name} {op} ? OR {name} IS NULL)" if not back else f"{name} {op} ?", [value])
        equal.append((f"{name} = ?", [value]))
    term(f"{rid} {'<' if back else '>'} ?", [at.rid])
    params: list[Any] = []
    for _, p in terms:
        params.extend(p)
    return "(" + " OR ".join(f"({s})" for s, _ in terms) + ")", params


def page_query(
    dialect: str,
    select: str,
    where: Frag,
    columns: Sequence[SortColumn],
    at: Boundary | None,
    limit: int,
    offset: int,
) -> Frag:
    """The SQL for one page: `select` columns (of resource r, history h), then rid and keys.

    Sort keys are computed once per matching row in a subquery (fenced, so the planner
    does not inline it and evaluate each key again per comparison); only the page's rids are
    joined back to resource and history, so sorting never carries the resource bodies.
    """
    back = at is not None and at.direction == "previous"
    tail = "LIMIT ?" + (" OFFSET ?" if at is None and offset > 0 else "")
    tail_params: list[Any] = [limit, offset] if at is None and offset > 0 else [limit]
    outer = [f"p.k{i}" for i in range(len(columns))]
    if columns:
        names = [f"s.k{i}" for i in range(len(columns))]
        keys = ", ".join(f"{c.expr} AS k{i}" for i, c in enumerate(columns))
        fence = "OFFSET 0" if dialect == "postgresql" else "LIMIT -1"  # keep it a subquery
        inner = f"SELECT r.rid AS rid, {keys} FROM resource r WHERE {where[0]} {fence}"
        cond, cparams = _beyond(names, columns, "s.rid", at, back) if at else ("1 = 1", [])
        pick = (
            f"SELECT s.rid, {', '.join(names)} FROM ({inner}) s WHERE {cond}"
            f" ORDER BY {_order(names, columns, 's.rid', back)} {tail}"
        )
        params = [*(p for c in columns for p in c.params), *where[1], *cparams]
    else:  # rid order: the keyset is a range of the primary key
        cond, cparams = _beyond([], [], "r.rid", at, back) if at else ("1 = 1", [])
        pick = (
            f"SELECT r.rid AS rid FROM resource r WHERE {where[0]} AND {cond}"
            f" ORDER BY {_order([], [], 'r.rid', back)} {tail}"
        )
        params = [*where[1], *cparams]
    sql = (
        f"SELECT {select}, {', '.join(['p.rid', *outer])} FROM ({pick}) p"
        f" JOIN resource r ON r.rid = p.rid {_BODY} ORDER BY {_order(outer, columns, 'p.rid', back)}"
    )
    return sql, [*params, *tail_params]


def estimated_total(fetch: Fetch, dialect: str, where: Frag) -> int | None:
    """`_total=estimate`: exact up to ESTIMATE_CAP matches, else PostgreSQL's planner
    estimate (at least the cap + 1) and, on SQLite, no total."""
    sql = f"SELECT 1 FROM resource r WHERE {where[0]}"
    n = int(fetch(f"SELECT count(*) FROM ({sql} LIMIT ?) c", [*where[1], ESTIMATE_CAP + 1])[0][0])
    if n <= ESTIMATE_CAP:
        return n
    if dialect != "postgresql":
        return None
    rows = fetch(f"EXPLAIN (FORMAT JSON) {sql}", list(where[1]))
    plan = rows[0][0]
    if isinstance(plan, (str, bytes)):
        plan = orjson.loads(plan)
    return max(ESTIMATE_CAP + 1, int(plan[0]["Plan"]["Plan Rows"]))


def explain_text(fetch: Fetch, dialect: str, sql: str, params: list[Any]) -> str:
    """The SQL of a page and the database's plan for it (EXPLAIN QUERY PLAN / EXPLAIN).

    Goes only to the requester (who sent the values): never log it, it may quote PHI.
    """
    if dialect == "postgresql":
        plan = "\n".join(str(r[0]) for r in fetch(f"EXPLAIN {sql}", params))
    else:
        rows = fetch(f"EXPLAIN QUERY PLAN {sql}", params)
        depth: dict[Any, int] = {}
        lines = []
        for node, parent, _, detail in rows:
            depth[node] = depth.get(parent, -1) + 1
            lines.append("  " * depth[node] + str(detail))
        plan = "\n".join(lines)
    shown = orjson.dumps(params, default=repr).decode()
    return f"SQL: {sql}\nParameters: {shown}\nPlan ({dialect}):\n{plan}"


def run_page(
    fetch: Fetch,
    query: SearchQuery,
    dialect: str,
    select: str,
    where: Frag,
    columns: Sequence[SortColumn],
    to_version: Callable[[tuple[Any, ...]], StoredVersion],
) -> SearchPage:
    """One page of `query` (at its `_cursor`, else its `_offset`), its total if asked, and
    the cursors of the pages around it. Reads one row more to know whether more follow."""
    at = decode_cursor(query.cursor, query, len(columns)) if query.cursor else None
    total = None
    if query.total:
        total = int(fetch(f"SELECT count(*) FROM resource r WHERE {where[0]}", where[1])[0][0])
    elif query.total_estimate:
        total = estimated_total(fetch, dialect, where)
    count = max(query.count, 0)
    sql, params = page_query(dialect, select, where, columns, at, count + 1, max(query.offset, 0))
    explain = explain_text(fetch, dialect, sql, params) if query.explain else None
    rows = fetch(sql, params) if count > 0 and total != 0 else []
    width = len(rows[0]) - 1 - len(columns) if rows else 0  # columns before rid and keys
    back = at is not None and at.direction == "previous"
    more = len(rows) > count
    rows = rows[:count]
    if back:
        rows.reverse()

    def cursor(row: tuple[Any, ...], direction: Direction) -> str:
        keys = tuple(row[width + 1 :])
        return encode_cursor(Boundary(direction, keys, int(row[width])), query)

    next_cursor = previous_cursor = None
    if rows:
        if back or more:
            next_cursor = cursor(rows[-1], "next")
        if more if back else at is not None or query.offset > 0:
            previous_cursor = cursor(rows[0], "previous")
    found = [to_version(r[:width]) for r in rows]
    return SearchPage(found, total, next_cursor, previous_cursor, explain)
