"""The PostgreSQL backend (psycopg 3, synchronous), for shared or larger deployments.

Round trips dominate the cost of a write, so a flush sends everything in one
pipeline, one statement per table: index rows as one JSON array expanded by
`jsonb_array_elements` (as fast as COPY on the server, far cheaper than psycopg's
array dumpers on the client, and pipelinable), resource and history rows (bytea) as
binary `unnest` arrays or, for a few rows, plain VALUES. Row ids come from a
sequence, fetched in blocks in the same round trip as the rid lookups.

Concurrency: `current()` locks the row (`SELECT ... FOR UPDATE`), then reads the version
it locked; `lock(key)` takes a transaction-scoped advisory lock (conditional creates).
Unique indexes on (type, id) and (rid, version) turn any remaining race into
`VersionConflict`, as do deadlocks and serialization failures: the caller runs it again.
Write transactions are READ COMMITTED.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from itertools import chain
from typing import Any

import orjson
import psycopg
import psycopg.sql
from psycopg import errors
from psycopg.pq import TransactionStatus

from openrecord.store._common import BufferedTx, HistoryRow, IndexRows, ResourceRow, SqlStore
from openrecord.store.base import StoredVersion, VersionConflict
from openrecord.store.schema import migrate_postgres
from openrecord.store.sql_search import POSTGRES, Fetch, to_version

__all__ = ["PostgresStore"]

Conn = psycopg.Connection[tuple[Any, ...]]

# unnest() element types per table, in the column order of _common.INDEX_TABLES
_TYPES: dict[str, tuple[tuple[str, str], ...]] = {
    "resource": (
        ("rid", "bigint"),
        ("type", "text"),
        ("id", "text"),
        ("version", "int"),
        ("last_updated", "bigint"),
        ("deleted", "bool"),
    ),
    "history": (
        ("rid", "bigint"),
        ("type", "text"),
        ("id", "text"),
        ("version", "int"),
        ("last_updated", "bigint"),
        ("method", "text"),
        ("data", "bytea"),
    ),
}
_K = (("rid", "bigint"), ("n", "int"), ("pid", "int"))
_TYPES.update(
    {
        "idx_token": (
            *_K,
            ("system", "text"),
            ("code", "text"),
            ("text", "text"),
            ("hash", "bigint"),
        ),
        "idx_string": (*_K, ("norm", "text"), ("value", "text")),
        "idx_date": (*_K, ("lo", "bigint"), ("hi", "bigint")),
        "idx_number": (*_K, ("value", "float8"), ("lo", "float8"), ("hi", "float8")),
        "idx_quantity": (
            *_K,
            ("value", "float8"),
            ("lo", "float8"),
            ("hi", "float8"),
            ("system", "text"),
            ("code", "text"),
            ("unit", "text"),
        ),
        "idx_reference": (
            *_K,
            ("ref_type", "text"),
            ("ref_id", "text"),
            ("url", "text"),
            ("version", "text"),
        ),
        "idx_uri": (*_K, ("value", "text")),
        "idx_contained": (
            ("rid", "bigint"),
            ("cid", "text"),
            ("type", "text"),
            ("n_lo", "int"),
            ("n_hi", "int"),
        ),
    }
)
_FLOAT_COLUMNS = {"idx_number": (3, 4, 5), "idx_quantity": (3, 4, 5)}
_INDEX_TABLES = [t for t in _TYPES if t.startswith("idx_")]
_INF = float("inf")


def _names(table: str) -> str:
    return ", ".join(c for c, _ in _TYPES[table])


# Index rows travel as one JSON array of arrays per table: orjson writes it in
# microseconds where psycopg's array dumpers take ~20 µs per array in Python, and the
# statement has one parameter, so psycopg caches its parsing (not so past 50).
_JSON_INSERT = {
    t: f"INSERT INTO {t} ({_names(t)}) SELECT "
    + ", ".join(f"(r->>{i})::{typ}" for i, (_, typ) in enumerate(_TYPES[t]))
    + " FROM jsonb_array_elements(%s::jsonb) AS r"
    for t in _INDEX_TABLES
}
# Resource and history rows carry bytea: binary arrays for many rows, VALUES for a few.
_UNNEST_INSERT = {
    t: f"INSERT INTO {t} ({_names(t)}) SELECT * FROM unnest("
    + ", ".join(f"%b::{typ}[]" for _, typ in _TYPES[t])
    + ")"
    for t in ("resource", "history")
}
_VALUES_ROWS = 7  # 7 columns x 7 rows: within psycopg's 50-parameter parse cache


@lru_cache(maxsize=32)
def _values_insert(table: str, rows: int) -> str:
    one = "(" + ", ".join(["%b"] * len(_TYPES[table])) + ")"
    return f"INSERT INTO {table} ({_names(table)}) VALUES " + ", ".join([one] * rows)


def _json_rows(table: str, rows: list[tuple[Any, ...]]) -> str:
    floats = _FLOAT_COLUMNS.get(table)
    if floats:  # JSON has no infinity (open-ended ranges); float8 parses the words
        rows = [
            tuple(
                ("Infinity" if x > 0 else "-Infinity") if k in floats and abs(x) == _INF else x
                for k, x in enumerate(r)
            )
            for r in rows
        ]
    return orjson.dumps(rows).decode()


# Full text: (rid, narrative words, content words) rows as one JSON array; the words
# (fhir/search_text.py) become lexemes as they are, without a parser or dictionary.
_TEXT_INSERT = (
    "INSERT INTO search_text (rid, narrative, content) SELECT (r->>0)::bigint,"
    " array_to_tsvector(string_to_array(r->>1, ' ')),"
    " array_to_tsvector(string_to_array(r->>2, ' '))"
    " FROM jsonb_array_elements(%s::jsonb) AS r"
)


def _write_text(cur: psycopg.Cursor[Any], text: list[tuple[Any, ...]], drop: str | None) -> None:
    """Drop the full-text rows of the rids in `drop` (an array literal), insert `text`'s
    rows that have any words."""
    if drop is not None:
        cur.execute("DELETE FROM search_text WHERE rid = ANY(%s::bigint[])", (drop,))
    rows = [r for r in text if r[2]]
    if rows:
        cur.execute(_TEXT_INSERT, (orjson.dumps(rows).decode(),))


def _insert(cur: psycopg.Cursor[Any], table: str, rows: list[tuple[Any, ...]]) -> None:
    if table in _JSON_INSERT:
        cur.execute(_JSON_INSERT[table], (_json_rows(table, rows),))
    elif len(rows) > _VALUES_ROWS:
        cur.execute(_UNNEST_INSERT[table], [list(c) for c in zip(*rows, strict=True)])
    else:
        cur.execute(_values_insert(table, len(rows)), list(chain.from_iterable(rows)))


_UPDATE = (
    "UPDATE resource r SET version = u.version, last_updated = u.last_updated,"
    " deleted = u.deleted"
    " FROM unnest(%b::bigint[], %b::int[], %b::bigint[], %b::bool[])"
    " AS u(rid, version, last_updated, deleted) WHERE r.rid = u.rid"
)
_UPDATE_ONE = "UPDATE resource SET version = %b, last_updated = %b, deleted = %b WHERE rid = %b"


@lru_cache(maxsize=1024)
def _pg(sql: str) -> str:
    """The shared SQL uses `?` placeholders; psycopg wants `%s`."""
    return sql.replace("?", "%s")


class _Pool:
    """A small thread-safe pool of autocommit connections (psycopg_pool is not installed).

    A connection returned in a failed or unknown state is discarded, not reused.
    """

    def __init__(self, url: str, size: int, timeout: float) -> None:
        self.url = url
        self.size = size
        self.timeout = timeout
        self._idle: list[Conn] = []
        self._open = 0
        self._cond = threading.Condition()
        self._closed = False

    def _get(self) -> Conn:
        deadline = time.monotonic() + self.timeout
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the store is closed")
                if self._idle:
                    return self._idle.pop()
                if self._open < self.size:
                    self._open += 1
                    break
                if not self._cond.wait(deadline - time.monotonic()):
                    raise TimeoutError(f"no database connection free within {self.timeout}s")
        try:
            # Plans for the values at hand, never a generic plan for the statement:
            # index data is skewed (`status=final` is most rows, a code a few), and a
            # generic plan chosen after a few runs of a statement can be off by a factor of 100
            # for the next values (seen: 55 ms instead of 0.1 ms). Planning costs
            # tens of microseconds.
            conn = psycopg.connect(
                self.url, autocommit=True, options="-c plan_cache_mode=force_custom_plan"
            )
            # Write transactions are READ COMMITTED whatever the server's default: each
            # statement sees what committed before it, which `select_current` relies on
            # to read the version it has just locked.
            conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
            return conn
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise

    def _put(self, conn: Conn) -> None:
        status = conn.info.transaction_status
        if not conn.closed and status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            try:
                conn.rollback()
                status = conn.info.transaction_status
            except psycopg.Error:
                status = TransactionStatus.UNKNOWN
        reuse = not conn.closed and status == TransactionStatus.IDLE
        with self._cond:
            if reuse and not self._closed:
                self._idle.append(conn)
            else:
                self._open -= 1
                conn.close()
            self._cond.notify()

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        conn = self._get()
        try:
            yield conn
        finally:
            self._put(conn)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            conn.close()


class PostgresStore(SqlStore):
    dialect = POSTGRES

    def __init__(self, url: str, *, pool_size: int = 8, pool_timeout: float = 30.0) -> None:
        super().__init__()
        self.pool = _Pool(url, pool_size, pool_timeout)
        self._watches: list[_Watch] = []
        self._pid_conn: Conn | None = None
        with self.pool.connection() as conn:
            migrate_postgres(conn)

    @contextmanager
    def reader(self, snapshot: bool = False) -> Iterator[Fetch]:
        with self.pool.connection() as conn:

            def fetch(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
                cur = conn.execute(_pg(sql), params)
                return cur.fetchall() if cur.description is not None else []

            if not snapshot:
                yield fetch
                return
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                yield fetch
            finally:
                conn.execute("COMMIT")

    @contextmanager
    def write(self) -> Iterator[PostgresTx]:
        with self.pool.connection() as conn:
            try:
                with conn.transaction():
                    tx = PostgresTx(self, conn)
                    yield tx
                    tx.flush()
            except (errors.DeadlockDetected, errors.SerializationFailure) as e:
                # The database rolled this transaction back as the loser of a race with
                # another writer: like a unique violation, it is worth running again.
                raise VersionConflict(str(e)) from e
            tx.committed()
            # This process's own watchers learn at once (LISTEN delivers a moment later):
            # a revocation or a Consent takes effect for the very next request here.
            for watch in self._watches:
                if watch.channel in tx.notified:
                    watch.changed()

    def register_pid(self, type: str, code: str, kind: str) -> int:
        """Registered on a separate autocommit connection: never rolled back with a
        transaction, never blocking on one (an unused pid costs nothing)."""
        with self.pid_lock:
            if self._pid_conn is None or self._pid_conn.closed:
                self._pid_conn = psycopg.connect(self.pool.url, autocommit=True)
            conn = self._pid_conn
            conn.execute(
                "INSERT INTO search_param (type, code, kind) VALUES (%s, %s, %s)"
                " ON CONFLICT (type, code) DO NOTHING",
                (type, code, kind),
            )
            row = conn.execute(
                "SELECT pid FROM search_param WHERE type = %s AND code = %s", (type, code)
            ).fetchone()
            assert row is not None
            pid = int(row[0])
            self.pids.setdefault(type, {})[code] = pid
            return pid

    def watch(self, channel: str, changed: Callable[[], None]) -> Callable[[], bool]:
        watch = _Watch(self.pool.url, channel, changed)
        self._watches.append(watch)
        return watch.is_live

    def close(self) -> None:
        for watch in self._watches:
            watch.stop()
        self.pool.close()
        with self.pid_lock:
            if self._pid_conn is not None:
                self._pid_conn.close()


class _Watch:
    """LISTEN on a channel from a thread of its own, on a connection of its own.

    `changed` runs for every notification, and whenever the connection is lost or
    (re)established — notifications may have been missed then; `is_live()` is False
    until the LISTEN is in place again (retried every second).
    """

    def __init__(self, url: str, channel: str, changed: Callable[[], None]) -> None:
        self.url = url
        self.channel = channel
        self.changed = changed
        self._live = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{channel}", daemon=True)
        self._thread.start()

    def is_live(self) -> bool:
        return self._live

    def stop(self) -> None:
        self._stopping.set()

    def _run(self) -> None:
        listen = psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(self.channel))
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(listen)
                    self._live = True
                    self.changed()
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self.changed()
            except psycopg.Error:
                pass
            finally:
                self._live = False
                self.changed()
            self._stopping.wait(1.0)


class PostgresTx(BufferedTx):
    def __init__(self, store: PostgresStore, conn: Conn) -> None:
        def fetch(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
            cur = conn.execute(_pg(sql), params)
            return cur.fetchall() if cur.description is not None else []

        super().__init__(store, fetch)
        self.pg_store = store
        self.conn = conn
        self.notified: set[str] = set()  # the channels this transaction notifies

    def notify(self, channel: str) -> None:
        self.conn.execute("SELECT pg_notify(%s, '')", (channel,))
        self.notified.add(channel)

    def select_current(self, type: str, id: str) -> tuple[int, StoredVersion] | None:
        """Lock the resource row, then read its current version — two statements.

        One `SELECT … JOIN history … FOR UPDATE OF r` loses concurrent updates: when it
        waits for another writer's lock, PostgreSQL re-checks only the locked row once
        that writer commits (the new `version`), against the history row of its own,
        older snapshot, so the join fails and the resource looks absent; the write then
        inserts a duplicate (type, id) and retries, and with several writers the last
        ones ran out of retries (409). The second statement here starts after the lock is
        held, so under READ COMMITTED its snapshot sees the committed version. Pipelined:
        one round trip.
        """
        conn = self.conn
        with conn.pipeline():
            conn.execute(
                "SELECT 1 FROM resource WHERE type = %s AND id = %s FOR UPDATE", (type, id)
            )
            cur = conn.execute(
                "SELECT r.type, r.id, r.version, r.last_updated, h.method, h.data, h.seq, r.rid"
                " FROM resource r JOIN history h ON h.rid = r.rid AND h.version = r.version"
                " WHERE r.type = %s AND r.id = %s",
                (type, id),
            )
        row = cur.fetchone()
        return None if row is None else (row[7], to_version(row[:7]))

    def resolve_rids(
        self, keys: list[tuple[str, str]], new: int
    ) -> tuple[dict[tuple[str, str], int], Callable[[], int]]:
        """One round trip: look the keys up and take `new` values from the sequence."""
        conn = self.conn
        with conn.pipeline():
            found_cur = conn.cursor()
            if len(keys) == 1:
                found_cur.execute(
                    "SELECT type, id, rid FROM resource WHERE type = %b AND id = %b", keys[0]
                )
            elif keys:
                found_cur.execute(
                    "SELECT r.type, r.id, r.rid FROM resource r"
                    " JOIN unnest(%b::text[], %b::text[]) AS k(type, id)"
                    " ON r.type = k.type AND r.id = k.id",
                    [[k[0] for k in keys], [k[1] for k in keys]],
                )
            alloc_cur = conn.cursor()
            if new:
                alloc_cur.execute(
                    "SELECT nextval('resource_rid_seq') FROM generate_series(1, %s)", (new,)
                )
        found = {(t, i): rid for t, i, rid in found_cur.fetchall()} if keys else {}
        rids = [r[0] for r in alloc_cur.fetchall()] if new else []
        return found, iter(rids).__next__

    def register_pid(self, type: str, code: str, kind: str) -> int:
        return self.pg_store.register_pid(type, code, kind)

    def lock(self, key: str) -> None:
        self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))

    def current_rows(
        self, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[int, int, bool]]:
        if not keys:
            return {}
        rows = self.conn.execute(
            "SELECT r.type, r.id, r.rid, r.version, r.deleted FROM resource r"
            " JOIN unnest(%b::text[], %b::text[]) AS k(type, id)"
            " ON r.type = k.type AND r.id = k.id ORDER BY r.rid FOR UPDATE OF r",
            [[k[0] for k in keys], [k[1] for k in keys]],
        ).fetchall()
        return {(t, i): (rid, version, deleted) for t, i, rid, version, deleted in rows}

    def replace_index(self, rids: list[int], index: IndexRows) -> None:
        with self.conn.pipeline():
            cur = self.conn.cursor()
            keys = "{" + ",".join(map(str, rids)) + "}"
            for table in _INDEX_TABLES:
                cur.execute(f"DELETE FROM {table} WHERE rid = ANY(%s::bigint[])", (keys,))
            for table, rows in index.tables():
                _insert(cur, table, rows)
            if index.text:  # full text only for resources whose index carried it
                drop = "{" + ",".join(str(r[0]) for r in index.text) + "}"
                _write_text(cur, index.text, drop)

    def write_rows(
        self,
        new: list[ResourceRow],
        updated: list[ResourceRow],
        history: list[HistoryRow],
        index: IndexRows,
    ) -> None:
        conn = self.conn
        try:
            with conn.pipeline():
                cur = conn.cursor()
                if new:
                    _insert(cur, "resource", new)
                if len(updated) == 1:
                    r = updated[0]
                    cur.execute(_UPDATE_ONE, (r[3], r[4], r[5], r[0]))
                    for table in _INDEX_TABLES:
                        cur.execute(f"DELETE FROM {table} WHERE rid = %b", (r[0],))
                elif updated:
                    cols = [list(c) for c in zip(*updated, strict=True)]
                    cur.execute(_UPDATE, [cols[0], cols[3], cols[4], cols[5]])
                    # an array literal: cheap to build, and `= ANY` plans as an index scan
                    rids = "{" + ",".join(map(str, cols[0])) + "}"
                    for table in _INDEX_TABLES:
                        cur.execute(f"DELETE FROM {table} WHERE rid = ANY(%s::bigint[])", (rids,))
                _insert(cur, "history", history)
                for table, rows in index.tables():
                    _insert(cur, table, rows)
                drop = "{" + ",".join(str(r[0]) for r in updated) + "}" if updated else None
                _write_text(cur, index.text, drop)
        except errors.UniqueViolation as e:
            raise VersionConflict(str(e)) from e
