"""What both SQL backends share: index rows, the buffered write transaction, the reads.

Writes are buffered: `WriteTx.put` only records the version; `flush()` (before any
read inside the transaction, at commit, and every `FLUSH_EVERY` puts) resolves row ids
in one batch and hands each table's rows to the backend in one statement. This keeps
per-resource Python and round-trip overhead low during bulk ingest.
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from functools import lru_cache
from typing import Any

from openrecord.fhir.search_common import normalize_string
from openrecord.fhir.search_contained import CONTAINED, split_contained_entries
from openrecord.fhir.search_text import split_text_entries
from openrecord.fhir.search_values import (
    CompositeValue,
    DateValue,
    IndexEntry,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    SearchValue,
    StringValue,
    TokenValue,
    UriValue,
)
from openrecord.store.base import (
    ANNOUNCED_TYPES,
    HistoryPage,
    SearchPage,
    Store,
    StoredVersion,
    WriteTx,
    written_channel,
)
from openrecord.store.query import SearchQuery
from openrecord.store.sql_composite import component_code
from openrecord.store.sql_search import (
    MAX_KEY_CHARS,
    TOKEN_HASHES,
    Dialect,
    Fetch,
    run_search,
    to_version,
    token_hash,
)

__all__ = ["INDEX_TABLES", "BufferedTx", "HistoryRow", "IndexRows", "ResourceRow", "SqlStore"]

FLUSH_EVERY = 500  # puts buffered before an intermediate flush (bounds memory)
K = MAX_KEY_CHARS

# Column order of each index table's rows, as written by both backends.
INDEX_TABLES: dict[str, tuple[str, ...]] = {
    "idx_token": ("rid", "n", "pid", "system", "code", "text", "hash"),
    "idx_string": ("rid", "n", "pid", "norm", "value"),
    "idx_date": ("rid", "n", "pid", "lo", "hi"),
    "idx_number": ("rid", "n", "pid", "value", "lo", "hi"),
    "idx_quantity": ("rid", "n", "pid", "value", "lo", "hi", "system", "code", "unit"),
    "idx_reference": ("rid", "n", "pid", "ref_type", "ref_id", "url", "version"),
    "idx_uri": ("rid", "n", "pid", "value"),
    # one row per contained resource: its index rows are the container's n_lo..n_hi
    "idx_contained": ("rid", "cid", "type", "n_lo", "n_hi"),
}

KIND_OF: dict[type[Any], str] = {
    TokenValue: "token",
    StringValue: "string",
    DateValue: "date",
    NumberValue: "number",
    QuantityValue: "quantity",
    ReferenceValue: "reference",
    UriValue: "uri",
    CompositeValue: "composite",
}

# (rid, type, id, version, last_updated, deleted)
ResourceRow = tuple[int, str, str, int, int, bool]
# (rid, type, id, version, last_updated, method, data)
HistoryRow = tuple[int, str, str, int, int, str, bytes | None]
Row = tuple[Any, ...]


TEXTS: dict[str, str] = {}  # norm_text() memo: displays repeat across resources


def norm_text(text: str) -> str:
    """Token text (display, CodeableConcept.text) as :text compares it: normalized."""
    n = TEXTS.get(text)
    if n is None:
        if len(TEXTS) >= 1 << 16:
            TEXTS.clear()
        n = TEXTS[text] = normalize_string(text)
    return n


@lru_cache(maxsize=4096)
def component_codes(code: str, count: int) -> tuple[str, ...]:
    """The parameters a composite's components are indexed under: `code$0`, `code$1`…"""
    return tuple(component_code(code, i) for i in range(count))


class IndexRows:
    """Rows for each index table, in INDEX_TABLES column order."""

    __slots__ = (*(t[4:] for t in INDEX_TABLES), "text")

    def __init__(self) -> None:
        self.token: list[Row] = []
        self.string: list[Row] = []
        self.date: list[Row] = []
        self.number: list[Row] = []
        self.quantity: list[Row] = []
        self.reference: list[Row] = []
        self.uri: list[Row] = []
        self.contained: list[Row] = []
        # (rid, narrative words, content words) for the full-text tables, one per
        # resource whose index carried them (fhir/search_text.py); the backend writes them
        self.text: list[Row] = []

    def tables(self) -> Iterator[tuple[str, list[Row]]]:
        """(table, rows) for each table that has rows."""
        for table in INDEX_TABLES:
            rows: list[Row] = getattr(self, table[4:])
            if rows:
                yield table, rows


class SqlStore(Store):
    """Reads shared by both backends. Subclasses provide connections and `write()`."""

    dialect: Dialect

    def __init__(self) -> None:
        self.pids: dict[str, dict[str, int]] = {}  # type -> code -> pid, committed only
        self.pid_lock = threading.Lock()

    @abstractmethod
    def reader(self, snapshot: bool = False) -> AbstractContextManager[Fetch]:
        """A fetch function; `snapshot`: all its statements see one database state."""

    def resolve_pid(self, fetch: Fetch, type: str, code: str) -> int | None:
        """The pid of (type, code), from the cache or the database; None: never indexed."""
        pid = self.pids.get(type, {}).get(code)
        if pid is None:
            rows = fetch("SELECT pid FROM search_param WHERE type = ? AND code = ?", [type, code])
            if rows:
                pid = int(rows[0][0])
                with self.pid_lock:
                    self.pids.setdefault(type, {})[code] = pid
        return pid

    def read(self, type: str, id: str) -> StoredVersion | None:
        with self.reader() as fetch:
            rows = fetch(
                "SELECT r.type, r.id, r.version, r.last_updated, h.method, h.data, h.seq"
                " FROM resource r JOIN history h ON h.rid = r.rid AND h.version = r.version"
                " WHERE r.type = ? AND r.id = ?",
                [type, id],
            )
        return to_version(rows[0]) if rows else None

    def vread(self, type: str, id: str, version: int) -> StoredVersion | None:
        with self.reader() as fetch:
            rows = fetch(
                "SELECT type, id, version, last_updated, method, data, seq FROM history"
                " WHERE rid = (SELECT rid FROM resource WHERE type = ? AND id = ?)"
                " AND version = ?",
                [type, id, version],
            )
        return to_version(rows[0]) if rows else None

    def history(
        self,
        type: str | None = None,
        id: str | None = None,
        *,
        since: int | None = None,
        at: int | None = None,
        until: int | None = None,
        count: int = 20,
        offset: int = 0,
        total: bool = True,
    ) -> HistoryPage:
        if id is not None and type is None:
            raise ValueError("history of an id needs its type")
        where: list[str] = []
        params: list[Any] = []
        if id is not None:
            where.append("h.rid = (SELECT rid FROM resource WHERE type = ? AND id = ?)")
            params += [type, id]
        elif type is not None:
            where.append("h.type = ?")
            params.append(type)
        if since is not None:
            where.append("h.last_updated >= ?")
            params.append(since)
        with self.reader(snapshot=True) as fetch:
            snapshot = until
            if snapshot is None:
                snapshot = int(fetch("SELECT coalesce(max(seq), 0) FROM history", [])[0][0])
            where.append("h.seq <= ?")
            params.append(snapshot)
            if at is not None:
                # the latest version of each resource as of `at`
                where.append(
                    "h.last_updated <= ? AND NOT EXISTS (SELECT 1 FROM history h2"
                    " WHERE h2.rid = h.rid AND h2.version > h.version"
                    " AND h2.last_updated <= ? AND h2.seq <= ?)"
                )
                params += [at, at, snapshot]
            cond = " AND ".join(where)
            n = None
            if total:
                n = int(fetch(f"SELECT count(*) FROM history h WHERE {cond}", params)[0][0])
            rows: list[Row] = []
            if count > 0 and n != 0:
                rows = fetch(
                    "SELECT h.type, h.id, h.version, h.last_updated, h.method, h.data, h.seq"
                    f" FROM history h WHERE {cond} ORDER BY h.seq DESC LIMIT ? OFFSET ?",
                    [*params, count, max(offset, 0)],
                )
        return HistoryPage([to_version(r) for r in rows], n, snapshot)

    def search(self, query: SearchQuery) -> SearchPage:
        with self.reader(snapshot=query.total) as fetch:
            return run_search(
                fetch, query, self.dialect, lambda t, c: self.resolve_pid(fetch, t, c)
            )

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.reader() as fetch:
            return fetch(sql, list(params))

    @property
    def backend(self) -> str:
        return self.dialect.name

    def generation(self, type: str) -> int:
        # ORDER BY the (type, seq) index's own order: one index probe whatever plan a
        # prepared statement gets. `max(seq) … WHERE type = $1` under PostgreSQL's
        # generic plan walked the primary key backwards, through all history (19 ms at
        # 96k versions, on every search) when the type had no row.
        with self.reader() as fetch:
            rows = fetch(
                "SELECT seq FROM history WHERE type = ? ORDER BY type DESC, seq DESC LIMIT 1",
                [type],
            )
        return int(rows[0][0]) if rows else 0

    def iter_current(self, type: str | None = None) -> Iterator[StoredVersion]:
        """Pages by rid (keyset), so no cursor or transaction stays open between pages."""
        last = 0
        cond = "r.type = ? AND " if type is not None else ""
        while True:
            params: list[Any] = [type] if type is not None else []
            with self.reader() as fetch:
                rows = fetch(
                    "SELECT r.type, r.id, r.version, r.last_updated, h.method, h.data, h.seq,"
                    " r.rid FROM resource r"
                    " JOIN history h ON h.rid = r.rid AND h.version = r.version"
                    f" WHERE {cond}r.deleted = {self.dialect.false} AND r.rid > ?"
                    " ORDER BY r.rid LIMIT 500",
                    [*params, last],
                )
            for row in rows:
                yield to_version(row[:7])
            if len(rows) < 500:
                return
            last = rows[-1][7]


class BufferedTx(WriteTx):
    """The backend-independent part of a write transaction."""

    def __init__(self, store: SqlStore, fetch: Fetch) -> None:
        self.store = store
        self.fetch = fetch
        self.known: dict[tuple[str, str], int | None] = {}  # rid, None: known absent
        self.pending: list[tuple[StoredVersion, Sequence[IndexEntry]]] = []
        self.latest: dict[tuple[str, str], StoredVersion] = {}  # pending, by key
        self.new_pids: dict[tuple[str, str], int] = {}  # registered in this transaction
        self.announced: set[str] = set()  # ANNOUNCED_TYPES written (notified once each)

    # -- backend hooks -------------------------------------------------------------

    @abstractmethod
    def select_current(self, type: str, id: str) -> tuple[int, StoredVersion] | None:
        """(rid, version) of the current row, locked for this transaction."""

    @abstractmethod
    def resolve_rids(
        self, keys: list[tuple[str, str]], new: int
    ) -> tuple[dict[tuple[str, str], int], Callable[[], int]]:
        """Existing rids of `keys`, and an allocator good for at least `new` fresh rids."""

    @abstractmethod
    def register_pid(self, type: str, code: str, kind: str) -> int: ...

    @abstractmethod
    def current_rows(
        self, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[int, int, bool]]:
        """(rid, version, deleted) of the existing `keys`, locked for this transaction."""

    @abstractmethod
    def replace_index(self, rids: list[int], index: IndexRows) -> None:
        """Drop every index row of `rids` and insert `index` (reindex: no new version)."""

    @abstractmethod
    def write_rows(
        self,
        new: list[ResourceRow],
        updated: list[ResourceRow],
        history: list[HistoryRow],
        index: IndexRows,
    ) -> None:
        """Insert `new` resources, update `updated` ones (and drop their old index rows),
        append `history`, insert `index`. Raises VersionConflict on a unique violation."""

    # -- WriteTx -------------------------------------------------------------------

    def current(self, type: str, id: str) -> StoredVersion | None:
        pending = self.latest.get((type, id))
        if pending is not None:
            return pending
        found = self.select_current(type, id)
        if found is None:
            self.known[(type, id)] = None
            return None
        self.known[(type, id)] = found[0]
        return found[1]

    def put(self, version: StoredVersion, index: Sequence[IndexEntry]) -> None:
        if version.version == 1 and version.method == "POST":
            # A create: the record service assigned a fresh UUID, so there is no row to
            # look up (a clash would still fail the unique key, never overwrite).
            self.known.setdefault((version.type, version.id), None)
        self.pending.append((version, index))
        self.latest[(version.type, version.id)] = version
        if version.type in ANNOUNCED_TYPES and version.type not in self.announced:
            self.announced.add(version.type)
            self.notify(written_channel(version.type))
        if len(self.pending) >= FLUSH_EVERY:
            self.flush()

    def search(self, query: SearchQuery) -> SearchPage:
        self.flush()
        return run_search(self.fetch, query, self.store.dialect, self.pid_for_search)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.flush()  # FHIR rows first: a state row may refer to them
        return self.fetch(sql, list(params))

    def reindex(
        self, items: Sequence[tuple[StoredVersion, Sequence[IndexEntry]]]
    ) -> list[StoredVersion]:
        self.flush()
        current = self.current_rows([(v.type, v.id) for v, _ in items])  # locked
        rows = IndexRows()
        rids: list[int] = []
        done: list[StoredVersion] = []
        for v, index in items:
            found = current.get((v.type, v.id))
            if found is None or found[1] != v.version or found[2]:
                continue
            rids.append(found[0])
            done.append(v)
            if index:
                self.index_rows(rows, found[0], v.type, index)
        if rids:
            self.replace_index(rids, rows)
        return done

    def pid_for_search(self, type: str, code: str) -> int | None:
        pid = self.new_pids.get((type, code))
        return pid if pid is not None else self.store.resolve_pid(self.fetch, type, code)

    def committed(self) -> None:
        """Publish the pids registered here: they exist for everyone now."""
        if self.new_pids:
            with self.store.pid_lock:
                for (type, code), pid in self.new_pids.items():
                    self.store.pids.setdefault(type, {})[code] = pid

    def pid(self, type: str, code: str, value: SearchValue) -> int:
        key = (type, code)
        pid = self.new_pids.get(key)
        if pid is None:
            pid = self.store.resolve_pid(self.fetch, type, code)
            if pid is None:
                pid = self.register_pid(type, code, KIND_OF[value.__class__])
                self.new_pids[key] = pid
        return pid

    def flush(self) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        self.latest.clear()
        known = self.known
        unknown = [k for k in dict.fromkeys((v.type, v.id) for v, _ in pending) if k not in known]
        absent = sum(1 for r in known.values() if r is None)
        found, alloc = self.resolve_rids(unknown, len(unknown) + absent)
        for k in unknown:
            known[k] = found.get(k)
        new: dict[int, ResourceRow] = {}
        updated: dict[int, ResourceRow] = {}
        history: list[HistoryRow] = []
        final: dict[int, tuple[str, Sequence[IndexEntry]]] = {}
        fresh: set[int] = set()
        for v, index in pending:
            key = (v.type, v.id)
            rid = known[key]
            if rid is None:
                rid = alloc()
                known[key] = rid
                fresh.add(rid)
            row = (rid, v.type, v.id, v.version, v.last_updated, v.data is None)
            (new if rid in fresh else updated)[rid] = row
            history.append((rid, v.type, v.id, v.version, v.last_updated, v.method, v.data))
            final[rid] = (v.type, index if v.data is not None else ())
        rows = IndexRows()
        for rid, (rtype, index) in final.items():
            if index:
                self.index_rows(rows, rid, rtype, index)
        self.write_rows(list(new.values()), list(updated.values()), history, rows)

    def index_rows(
        self, rows: IndexRows, rid: int, rtype: str, index: Sequence[IndexEntry], base: int = 0
    ) -> int:
        """The hot loop of ingest: one tuple per index entry, no per-row calls if avoidable.

        A composite value is written as its components, each a row of its own kind's
        table under `code$i`, after the ordinary entries (from n = `base`) and with
        consecutive `n` per instance: a search finds component i at n + i.
        Each contained resource's entries follow as one block of consecutive `n` under
        `#Type` parameters (so no top-level search sees them), recorded in
        idx_contained. Returns the next free `n`.
        """
        index, text = split_text_entries(index)
        if text is not None:
            rows.text.append((rid, *text))
        blocks = None
        if index and index[-1].param == CONTAINED:
            index, blocks = split_contained_entries(index)
        pids = self.store.pids.get(rtype, {})
        hashes, texts = TOKEN_HASHES, TEXTS
        tok, string, date, ref = rows.token, rows.string, rows.date, rows.reference
        parts: list[IndexEntry] = []  # the components of the composites, in order
        for n, e in enumerate(index, base):
            v = e.value
            pid = pids.get(e.param) or self.pid(rtype, e.param, v)
            if isinstance(v, TokenValue):
                s, c, t = v.system, v.code, v.text
                h = hashes.get((s, c)) or token_hash(s, c)
                if t is not None:
                    t = texts.get(t) or norm_text(t)
                tok.append((rid, n, pid, s, c[:K] if c else c, t, h))
            elif isinstance(v, ReferenceValue):
                i, u = v.id, v.url
                ref.append((rid, n, pid, v.type, i[:K] if i else i, u[:K] if u else u, v.version))
            elif isinstance(v, StringValue):
                string.append((rid, n, pid, v.normalized[:K], v.value))
            elif isinstance(v, DateValue):
                date.append((rid, n, pid, v.low, v.high))
            elif isinstance(v, QuantityValue):
                rows.quantity.append(
                    (rid, n, pid, v.value, v.low, v.high, v.system, v.code, v.unit)
                )
            elif isinstance(v, NumberValue):
                rows.number.append((rid, n, pid, v.value, v.low, v.high))
            elif isinstance(v, UriValue):
                rows.uri.append((rid, n, pid, v.value[:K]))
            elif isinstance(v, CompositeValue):
                comps = v.components
                parts.extend(map(IndexEntry, component_codes(e.param, len(comps)), comps))
            else:
                raise TypeError(f"not a search value: {v!r}")
        end = base + len(index)
        if parts:
            end = self.index_rows(rows, rid, rtype, parts, end)
        if blocks:
            for b in blocks:
                # at least one n per block, even an empty one: n_lo stays unique
                after = max(self.index_rows(rows, rid, "#" + b.type, b.entries, end), end + 1)
                rows.contained.append((rid, b.id, b.type, end, after - 1))
                end = after
        return end
