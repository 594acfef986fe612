"""Search criteria (`query.py`) to SQL, shared by both backends.

A basic, correct builder: every condition becomes `r.rid [NOT] IN (SELECT rid FROM
idx_<kind> WHERE pid = ? AND (<value 1> OR <value 2> ...))` against the typed index
tables, AND-ed together. It leaves join order to the database; a cost-based planner
can replace it later without changing the schema.

SQL is written with `?` placeholders; the PostgreSQL backend rewrites them. Every
criterion value is a bound parameter: criteria are hostile input.

Semantics (FHIR R4 search), with the resource's range [lo, hi] and the search range
[low, high] (both inclusive):
- date, `_lastUpdated`: eq lo >= low and hi <= high; ne: not eq; gt hi > high;
  lt lo < low; ge gt or eq; le lt or eq; sa lo > high; eb hi < low; ap: ranges
  overlap once the search range is widened by 10% of its distance to now.
- number, quantity: the search range is half-open, [low, high); the resource `value`
  is a point: eq low <= value < high, gt value >= high, lt value < low, ge value >=
  low, le value < high, ne not eq; sa lo >= high, eb hi <= low (the resource's own
  implicit range [lo, hi)); ap: eq widened by 10% of the value.
  Quantities also match the unit: system and code, or a bare code against code or unit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

from openrecord.fhir.search_common import normalize_string
from openrecord.store.base import SearchPage, StoredVersion, UnsupportedSearch
from openrecord.store.query import (
    CompartmentFilter,
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
    TokenCriterion,
    UriCriterion,
)
from openrecord.store.sql_chain import Scope, chained_condition
from openrecord.store.sql_composite import composite_condition
from openrecord.store.sql_contained import contained_condition, run_contained
from openrecord.store.sql_modifiers import presence
from openrecord.store.sql_paging import SortColumn, run_page
from openrecord.store.sql_plan import driver
from openrecord.store.sql_text import TEXT_COLUMNS, text_condition

__all__ = [
    "MAX_KEY_CHARS",
    "POSTGRES",
    "SQLITE",
    "TOKEN_HASHES",
    "Dialect",
    "build_search",
    "prefix_upper_bound",
    "run_search",
    "token_hash",
]

# Indexed text is cut to this many characters (PostgreSQL b-tree entries are limited
# to ~2.7 kB). Searches cut their values the same way, so longer values can only
# produce false positives on the cut part, never misses (except for :contains).
MAX_KEY_CHARS = 512

Frag = tuple[str, list[Any]]
Probe = Callable[[str, list[Any]], int]  # runs `SELECT count(*) …`, returns the count
Fetch = Callable[[str, list[Any]], list[tuple[Any, ...]]]
PidResolver = Callable[[str, str], int | None]

TRUE: Frag = ("1 = 1", [])
FALSE: Frag = ("1 = 0", [])

TABLE_OF_KIND = {
    "token": "idx_token",
    "string": "idx_string",
    "date": "idx_date",
    "number": "idx_number",
    "quantity": "idx_quantity",
    "reference": "idx_reference",
    "uri": "idx_uri",
}

# Sort value per kind: (ascending column, descending column).
_SORT_COLUMNS = {
    "token": ("code", "code"),
    "string": ("norm", "norm"),
    "date": ("lo", "hi"),
    "number": ("value", "value"),
    "quantity": ("value", "value"),
    "reference": ("ref_id", "ref_id"),
    "uri": ("value", "value"),
}

SELECT_COLUMNS = "r.type, r.id, r.version, r.last_updated, h.method, h.data, h.seq"

TOKEN_HASHES: dict[tuple[str | None, str | None], int] = {}  # token_hash() memo


@dataclass(frozen=True, slots=True)
class Dialect:
    """The few SQL differences between the backends."""

    name: str
    false: str  # boolean literal for resource.deleted
    contains: str  # substring test, `{col}` and one parameter
    text_param: str  # a parameter used as a function argument


SQLITE = Dialect("sqlite", "0", "instr({col}, ?) > 0", "?")
POSTGRES = Dialect("postgresql", "false", "strpos({col}, ?) > 0", "CAST(? AS text)")


def token_hash(system: str | None, code: str | None) -> int:
    """Signed 64-bit hash of `system|code`: a compact, selective key for token lookups."""
    key = (system, code)
    h = TOKEN_HASHES.get(key)
    if h is None:
        if len(TOKEN_HASHES) >= 1 << 18:
            TOKEN_HASHES.clear()
        raw = f"{system or ''}|{code or ''}".encode("utf-8", "surrogatepass")
        h = int.from_bytes(blake2b(raw, digest_size=8).digest(), "big", signed=True)
        TOKEN_HASHES[key] = h
    return h


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string above every string starting with `prefix` (None: no bound).

    Turns starts-with into a range scan: s.startswith(p) <=> p <= s < bound, in code
    point order (SQLite's binary collation, PostgreSQL's "C").
    """
    while prefix:
        c = ord(prefix[-1]) + 1
        if c <= 0x10FFFF:
            if 0xD800 <= c <= 0xDFFF:
                c = 0xE000
            return prefix[:-1] + chr(c)
        prefix = prefix[:-1]
    return None


def _has_nul(v: Criterion) -> bool:
    """PostgreSQL text cannot hold NUL, so no stored value has one: such a value
    matches nothing (and must not reach the driver, which would raise)."""
    return any(type(x) is str and "\x00" in x for x in (getattr(v, f) for f in v.__slots__))


def _join(frags: list[Frag], op: str) -> Frag:
    if len(frags) == 1:
        return frags[0]
    if len(frags) > 32:  # nest halves: SQLite refuses expression trees deeper than 1000
        mid = len(frags) // 2
        return _join([_join(frags[:mid], op), _join(frags[mid:], op)], op)
    params: list[Any] = []
    for _, p in frags:
        params.extend(p)
    return "(" + f" {op} ".join(f"({s})" for s, _ in frags) + ")", params


def _starts_with(col: str, prefix: str) -> Frag:
    if len(prefix) >= MAX_KEY_CHARS:
        return f"{col} = ?", [prefix[:MAX_KEY_CHARS]]
    upper = prefix_upper_bound(prefix)
    if upper is None:
        return f"{col} >= ?", [prefix]
    return f"{col} >= ? AND {col} < ?", [prefix, upper]


def _range(prefix: Prefix, lo: str, hi: str, low: Any, high: Any, margin: Any) -> Frag:
    """Compare a resource range [lo, hi] (columns) with the search range [low, high]."""
    if prefix == "eq":
        return f"{lo} >= ? AND {hi} <= ?", [low, high]
    if prefix == "ne":
        return f"({lo} < ? OR {hi} > ?)", [low, high]
    if prefix == "gt":
        return f"{hi} > ?", [high]
    if prefix == "lt":
        return f"{lo} < ?", [low]
    if prefix == "ge":
        return f"({hi} > ? OR ({lo} >= ? AND {hi} <= ?))", [high, low, high]
    if prefix == "le":
        return f"({lo} < ? OR ({lo} >= ? AND {hi} <= ?))", [low, low, high]
    if prefix == "sa":
        return f"{lo} > ?", [high]
    if prefix == "eb":
        return f"{hi} < ?", [low]
    if prefix == "ap":
        return f"{lo} <= ? AND {hi} >= ?", [high + margin, low - margin]
    raise UnsupportedSearch(f"unknown prefix {prefix!r}")


def _date(c: DateCriterion, lo: str, hi: str) -> Frag:
    margin = 0
    if c.prefix == "ap":
        now = time.time_ns() // 1000
        margin = abs(now - (c.low + c.high) // 2) // 10
    return _range(c.prefix, lo, hi, c.low, c.high, margin)


def _number(c: NumberCriterion | QuantityCriterion) -> Frag:
    """A number or quantity against the search value's implicit range [low, high):
    half-open, as the spec writes it ("100" is 99.5 <= v < 100.5), so the ranges of
    neighbouring values (0.2 and 0.3) touch without overlapping."""
    p = c.prefix
    if p == "sa":  # the resource's own range starts at or after the search range's end
        return "lo >= ?", [c.high]
    if p == "eb":
        return "hi <= ?", [c.low]
    if p == "eq":
        return "value >= ? AND value < ?", [c.low, c.high]
    if p == "ne":
        return "(value < ? OR value >= ?)", [c.low, c.high]
    if p == "gt":
        return "value >= ?", [c.high]
    if p == "lt":
        return "value < ?", [c.low]
    if p == "ge":
        return "value >= ?", [c.low]
    if p == "le":
        return "value < ?", [c.high]
    if p == "ap":
        margin = abs(c.value) / 10
        return "value >= ? AND value < ?", [
            min(c.low, c.value - margin),
            max(c.high, c.value + margin),
        ]
    raise UnsupportedSearch(f"unknown prefix {p!r}")


def listed(c: Condition, alias: str = "r") -> Frag:
    """`_list`: the resource is one of the (type, id) pairs the lists named."""
    frags: list[Frag] = [
        (f"{alias}.type = ? AND {alias}.id = ?", [v.type, v.id])
        for v in c.values
        if isinstance(v, ReferenceCriterion) and not _has_nul(v)
    ]
    return _join(frags, "OR") if frags else FALSE


class _Builder:
    def __init__(
        self,
        query: SearchQuery,
        dialect: Dialect,
        resolve_pid: PidResolver,
        probe: Probe | None = None,
    ) -> None:
        self.query = query
        self.dialect = dialect
        self.resolve_pid = resolve_pid
        self.probe = probe
        types = (query.type,) if query.type is not None else query.types or None
        self.root = Scope(types)  # the searched resources, `r`

    @property
    def false(self) -> str:
        return self.dialect.false

    def pid_filter(self, code: str, col: str = "pid", scope: Scope | None = None) -> Frag | None:
        """`pid = ?` (or `IN`) for the types of `scope` (default: the searched ones), all
        types' pids when they are any type; None: no such parameter was ever indexed."""
        types = (scope or self.root).types
        if types is None:
            # `#Type` rows index contained resources: only _contained searches see them
            sub = "SELECT pid FROM search_param WHERE code = ? AND substr(type, 1, 1) <> '#'"
            return f"{col} IN ({sub})", [code]
        pids = [pid for t in types if (pid := self.resolve_pid(t, code)) is not None]
        if not pids:
            return None
        if len(pids) == 1:
            return f"{col} = ?", pids
        return f"{col} IN ({', '.join('?' for _ in pids)})", pids

    def where(self) -> Frag:
        frags: list[Frag] = [(f"r.deleted = {self.dialect.false}", [])]
        if self.query.type is not None:
            frags.append(("r.type = ?", [self.query.type]))
        elif self.query.types:
            marks = ", ".join("?" for _ in self.query.types)
            frags.append((f"r.type IN ({marks})", list(self.query.types)))
        if self.query.compartment is not None:
            frags.append(self.compartment(self.query.compartment))
        # one condition drives, the others check its candidates (sql_plan.py)
        drives = driver(self.query.conditions, self.estimate)
        frags.extend(
            self.condition(c, check=i != drives) for i, c in enumerate(self.query.conditions)
        )
        params: list[Any] = []
        for _, p in frags:
            params.extend(p)
        return " AND ".join(s for s, _ in frags), params

    def compartment(self, comp: CompartmentFilter) -> Frag:
        """In the compartment: referenced through one of its links, or the resource itself."""
        pids = [pid for t, code in comp.links if (pid := self.resolve_pid(t, code)) is not None]
        own = "(r.type = ? AND r.id = ?)"
        if not pids:
            return own, [comp.type, comp.id]
        # A pid names one (type, parameter) pair, so a match is of a member type.
        marks = ", ".join("?" for _ in pids)
        sub = (
            f"SELECT rid FROM idx_reference WHERE pid IN ({marks}) AND ref_id = ? AND ref_type = ?"
        )
        return f"(r.rid IN ({sub}) OR {own})", [*pids, comp.id, comp.type, comp.type, comp.id]

    def condition(
        self, c: SearchCondition, scope: Scope | None = None, *, check: bool = False
    ) -> Frag:
        """`c` on the resources of `scope` (default: the searched ones, `r`). `check`: as
        a correlated EXISTS on the candidate's own rows, not a set to drive from."""
        scope = scope or self.root
        if scope.contained:
            return contained_condition(self, c, scope)  # _contained (sql_contained.py)
        if not isinstance(c, Condition):
            return chained_condition(self, c, scope, check=check)  # chains, _has (sql_chain.py)
        a = scope.alias
        if c.param == "_id":
            return self.special(c, f"{a}.id", "_id")
        if c.param == "_lastUpdated":
            return self.special(c, f"{a}.last_updated", "_lastUpdated")
        if c.param == "_list":
            return listed(c, a)
        if c.param in TEXT_COLUMNS:  # _text, _content (sql_text.py)
            return text_condition(c, self.dialect.name, f"{a}.rid")
        if c.kind == "composite":

            def scoped_pid(code: str) -> Frag | None:
                return self.pid_filter(code, scope=scope)

            return composite_condition(c, scoped_pid, self.match, TABLE_OF_KIND, f"{a}.rid")
        table = self.table_of(c)
        pid = self.pid_filter(c.param, scope=scope)
        missing, negate = presence(c)
        if missing is not None:
            if pid is None:
                return TRUE if missing else FALSE
            op = "NOT IN" if missing else "IN"
            sub = f"SELECT rid FROM {table} WHERE {pid[0]}"
            if c.kind == "reference":  # a Reference with only an identifier is present too
                sub += f" UNION ALL SELECT rid FROM idx_token WHERE {pid[0]}"
                return f"{a}.rid {op} ({sub})", pid[1] * 2
            return f"{a}.rid {op} ({sub})", pid[1]
        values = self.values_of(c)
        if pid is None or values is None:
            return TRUE if negate else FALSE
        if check and not negate:
            # `+x.pid`: reach the candidate's rows by the (rid, n) key, never by scanning
            # a (pid, value…) index once per candidate
            own = self.pid_filter(c.param, "+x.pid", scope=scope) or pid
            sub = f"SELECT 1 FROM {table} x WHERE x.rid = {a}.rid AND {own[0]} AND {values[0]}"
            return f"EXISTS ({sub})", own[1] + values[1]
        op = "NOT IN" if negate else "IN"
        sql = f"{a}.rid {op} (SELECT rid FROM {table} WHERE {pid[0]} AND {values[0]})"
        return sql, pid[1] + values[1]

    def table_of(self, c: Condition) -> str:
        if c.kind == "reference" and c.modifier == "identifier":
            return "idx_token"  # the extractor indexes Reference.identifier as tokens
        table = TABLE_OF_KIND.get(c.kind)
        if table is None:
            raise UnsupportedSearch(f"unsupported parameter kind {c.kind!r}")
        return table

    def values_of(self, c: Condition) -> Frag | None:
        """The condition's values OR-ed, as a match on its index table; None: no value
        can match."""
        matches = [m for m in (self.match(c, v) for v in c.values if not _has_nul(v)) if m]
        return _join(matches, "OR") if matches else None

    def estimate(self, c: SearchCondition, limit: int) -> int | None:
        """How many index rows `c` matches, counted up to `limit` (an index-only scan);
        None when it is not a plain indexed condition."""
        if self.probe is None or not isinstance(c, Condition) or c.kind not in TABLE_OF_KIND:
            return None
        if c.param.startswith("_") and c.param not in ("_tag", "_profile", "_security", "_source"):
            return None
        pid = self.pid_filter(c.param)
        values = self.values_of(c)
        if pid is None or values is None:
            return 0
        sub = f"SELECT 1 FROM {self.table_of(c)} WHERE {pid[0]} AND {values[0]} LIMIT ?"
        return self.probe(f"SELECT count(*) FROM ({sub}) t", [*pid[1], *values[1], limit])

    def special(self, c: Condition, col: str, param: str) -> Frag:
        """`_id` and `_lastUpdated` (`param`), answered from the resource table's `col`."""
        if c.missing is not None:
            return FALSE if c.missing else TRUE
        frags: list[Frag] = []
        for v in c.values:
            if _has_nul(v):
                continue
            if isinstance(v, TokenCriterion) and param == "_id":
                if c.modifier not in (None, "not"):
                    raise UnsupportedSearch(f"modifier :{c.modifier} is not supported on _id")
                if v.code is not None and v.system is None:
                    frags.append((f"{col} = ?", [v.code]))
            elif isinstance(v, DateCriterion) and param == "_lastUpdated":
                if c.modifier is not None:
                    raise UnsupportedSearch(f"modifier :{c.modifier} on _lastUpdated")
                frags.append(_date(v, col, col))
            else:
                raise UnsupportedSearch(f"{c.param} does not take {type(v).__name__}")
        if c.modifier == "not":
            if not frags:
                return TRUE
            s, p = _join(frags, "OR")
            return f"NOT ({s})", p
        return _join(frags, "OR") if frags else FALSE

    def match(self, c: Condition, v: Criterion) -> Frag | None:
        """One value of a condition against the rows of its index table; None: no match."""
        m = c.modifier
        if c.kind == "token" or (c.kind == "reference" and m == "identifier"):
            if isinstance(v, TokenCriterion):
                return self.token(v, None if m in ("identifier", "of-type") else m)
            if isinstance(v, StringCriterion) and m == "text":
                return _starts_with("text", v.normalized)
        if isinstance(v, StringCriterion) and c.kind == "string":
            return self.string(v, m)
        if m not in (None, "not") and c.kind not in ("reference", "uri"):
            raise UnsupportedSearch(f"modifier :{m} is not supported on {c.kind} parameters")
        if isinstance(v, DateCriterion) and c.kind == "date":
            return _date(v, "lo", "hi")
        if isinstance(v, NumberCriterion) and c.kind == "number":
            return _number(v)
        if isinstance(v, QuantityCriterion) and c.kind == "quantity":
            return self.quantity(v)
        if isinstance(v, ReferenceCriterion) and c.kind == "reference":
            return self.reference(v, m)
        if isinstance(v, UriCriterion) and c.kind == "uri":
            return self.uri(v, m)
        raise UnsupportedSearch(f"{type(v).__name__} does not fit a {c.kind} parameter")

    def token(self, v: TokenCriterion, modifier: str | None) -> Frag | None:
        if modifier == "text":  # normally a StringCriterion; accept the raw token too
            return _starts_with("text", normalize_string(v.code or v.system or ""))
        if modifier not in (None, "not"):
            raise UnsupportedSearch(f"modifier :{modifier} is not supported on token parameters")
        code = v.code[:MAX_KEY_CHARS] if v.code is not None else None
        if code is not None and (v.system is not None or v.no_system):
            # system|code and |code: the 64-bit hash stands for the system, so the index
            # (pid, code, hash, rid) answers alone (a collision between two systems that
            # share a code has odds of 2^-64)
            return "code = ? AND hash = ?", [code, token_hash(v.system, v.code)]
        if code is not None:
            return "code = ?", [code]
        if v.system is not None:
            return "system = ?", [v.system]
        return None

    def string(self, v: StringCriterion, modifier: str | None) -> Frag:
        if modifier == "exact":
            exact = v.exact if v.exact is not None else v.normalized
            return "norm = ? AND value = ?", [v.normalized[:MAX_KEY_CHARS], exact]
        if modifier == "contains":
            return self.dialect.contains.format(col="norm"), [v.normalized]
        if modifier is not None:
            raise UnsupportedSearch(f"modifier :{modifier} is not supported on string parameters")
        return _starts_with("norm", v.normalized)

    def quantity(self, v: QuantityCriterion) -> Frag:
        s, p = _number(v)
        if v.system is not None and v.code is not None:
            return f"{s} AND system = ? AND code = ?", [*p, v.system, v.code]
        if v.code is not None:
            return f"{s} AND (code = ? OR unit = ?)", [*p, v.code, v.code]
        if v.system is not None:
            return f"{s} AND system = ?", [*p, v.system]
        return s, p

    def reference(self, v: ReferenceCriterion, modifier: str | None) -> Frag | None:
        """An absolute or canonical criterion matches on its URL (and version, if given);
        a local one on id, and type when known (a `:Type` modifier supplies it)."""
        rtype = v.type
        if modifier in ("above", "below"):
            if v.url is None:
                raise UnsupportedSearch(f":{modifier} on a reference needs a URL")
            return self.uri(UriCriterion(v.url), modifier, "url")
        if modifier is not None and modifier[:1].isupper():
            if rtype is not None and rtype != modifier:
                return None
            rtype = modifier
        elif modifier is not None:
            raise UnsupportedSearch(f"modifier :{modifier} is not supported on references")
        if v.url is not None:
            url = v.url[:MAX_KEY_CHARS]
            if v.version is not None:
                return "url = ? AND version = ?", [url, v.version]
            return "url = ?", [url]
        if v.id is None:
            return None
        rid = v.id[:MAX_KEY_CHARS]
        base = self.query.base
        if base is None:  # no base known (internal searches): any reference to Type/id
            if rtype is not None:
                return "ref_id = ? AND ref_type = ?", [rid, rtype]
            return "ref_id = ?", [rid]
        # local: a relative reference, or an absolute one to this server's own base;
        # `https://other.org/fhir/Patient/1` is another server's patient
        if rtype is not None:
            own = f"{base.rstrip('/')}/{rtype}/{v.id}"
            return "ref_id = ? AND ref_type = ? AND (url IS NULL OR url = ?)", [rid, rtype, own]
        local = self.local_only()
        return f"ref_id = ? AND {local[0]}", [rid, *local[1]]

    def local_only(self, alias: str = "") -> Frag:
        """Rows of idx_reference (as `alias`, or unqualified) that refer to this server:
        relative, or absolute under its base (when the base is known; otherwise any)."""
        if self.query.base is None:
            return TRUE
        a = f"{alias}." if alias else ""
        own = f"{self.dialect.text_param} || {a}ref_type || '/' || {a}ref_id"
        return f"({a}url IS NULL OR {a}url = {own})", [self.query.base.rstrip("/") + "/"]

    def uri(self, v: UriCriterion, modifier: str | None, col: str = "value") -> Frag:
        if modifier is None:
            return f"{col} = ?", [v.value[:MAX_KEY_CHARS]]
        if modifier == "below":  # the resource's value starts with the criterion
            return _starts_with(col, v.value)
        if modifier == "above":  # the criterion starts with the resource's value
            fn = f"substr({self.dialect.text_param}, 1, length({col}))"
            return f"{col} <> '' AND {fn} = {col}", [v.value]
        raise UnsupportedSearch(f"modifier :{modifier} is not supported on uri parameters")

    def sort_columns(self) -> list[SortColumn]:
        """The `_sort` keys. A parameter no resource has yet sorts as NULL, so the key
        count (and a cursor over it) stays the same once one appears."""
        columns = []
        for k in self.query.sort:
            s, p = self.sort_key(k)
            columns.append(SortColumn(s or "NULL", p if s else [], k.descending))
        return columns

    def sort_key(self, k: SortKey) -> Frag:
        if k.param == "_id":
            return "r.id", []
        if k.param == "_lastUpdated":
            return "r.last_updated", []
        table = TABLE_OF_KIND.get(k.kind)
        if table is None:
            raise UnsupportedSearch(f"cannot sort on a {k.kind} parameter")
        # `+x.pid`: keep the planner on the (rid, n) primary key, a seek per resource,
        # rather than scanning a (pid, ...) index for every row it sorts
        pid = self.pid_filter(k.param, "+x.pid")
        if pid is None:
            return "", []  # no resource has a value: the key orders nothing
        col = _SORT_COLUMNS[k.kind][1 if k.descending else 0]
        agg = "max" if k.descending else "min"
        return f"(SELECT {agg}(x.{col}) FROM {table} x WHERE x.rid = r.rid AND {pid[0]})", pid[1]


@dataclass(frozen=True, slots=True)
class BuiltSearch:
    where: Frag
    columns: list[SortColumn]  # the `_sort` keys; rid breaks ties


def build_search(
    query: SearchQuery, dialect: Dialect, resolve_pid: PidResolver, probe: Probe | None = None
) -> BuiltSearch:
    """The criteria and sort keys of `query` in SQL; `sql_paging` makes pages of them.
    `probe` runs a count query: with it, the planner compares equally ranked conditions."""
    b = _Builder(query, dialect, resolve_pid, probe)
    return BuiltSearch(b.where(), b.sort_columns())


def to_version(row: tuple[Any, ...]) -> StoredVersion:
    """A row of SELECT_COLUMNS (or the same columns from history) as a StoredVersion."""
    t, i, version, last_updated, method, data, seq = row
    return StoredVersion(
        t, i, version, last_updated, method, None if data is None else bytes(data), seq
    )


def run_search(
    fetch: Fetch, query: SearchQuery, dialect: Dialect, resolve_pid: PidResolver
) -> SearchPage:
    if query.contained != "false":  # _contained=true|both (sql_contained.py)
        builder = _Builder(query, dialect, resolve_pid)
        return run_contained(fetch, query, builder, SELECT_COLUMNS, to_version)

    def probe(sql: str, params: list[Any]) -> int:
        return int(fetch(sql, params)[0][0])

    built = build_search(query, dialect, resolve_pid, probe)
    return run_page(
        fetch, query, dialect.name, SELECT_COLUMNS, built.where, built.columns, to_version
    )
