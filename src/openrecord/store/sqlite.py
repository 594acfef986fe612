"""The SQLite backend (stdlib sqlite3): a single file, for one host.

WAL journal, so readers never wait for the writer; one connection per thread (the
server calls the store from a thread pool). Write transactions start with
`BEGIN IMMEDIATE`: they take the database's single write lock up front, which
serializes writers across threads and processes, so a conditional create's
search-then-insert is atomic and `lock()` needs no work.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any

from openrecord.store._common import (
    INDEX_TABLES,
    BufferedTx,
    HistoryRow,
    IndexRows,
    ResourceRow,
    SqlStore,
)
from openrecord.store.base import StoredVersion, VersionConflict
from openrecord.store.schema import migrate_sqlite
from openrecord.store.sql_search import SQLITE, Fetch, to_version

if sys.platform != "win32":
    import fcntl

__all__ = ["SqliteStore"]

_DELETE = {t: f"DELETE FROM {t} WHERE rid = ?" for t in INDEX_TABLES}
_COLUMNS: dict[str, tuple[str, ...]] = {
    **INDEX_TABLES,
    "resource": ("rid", "type", "id", "version", "last_updated", "deleted"),
    "history": ("rid", "type", "id", "version", "last_updated", "method", "data"),
    "text_narrative": ("rowid", "words"),
    "text_content": ("rowid", "words"),
}
_TEXT_TABLES = ("text_narrative", "text_content")
_CHUNK = 64  # rows per INSERT statement; then 32, 16, ... for the remainder
# WAL frames written by this process's commits before it checkpoints (see
# SqliteStore._checkpoint): estimated as below, since sqlite3 exposes no WAL hook.
# Measured: a commit dirties ~25 pages plus ~4 per resource in a bundle.
_CHECKPOINT_FRAMES = 8000
_FRAMES_PER_COMMIT = 24
_FRAMES_PER_VERSION = 4


@lru_cache(maxsize=256)
def _insert_sql(table: str, rows: int) -> str:
    cols = _COLUMNS[table]
    one = "(" + ", ".join("?" * len(cols)) + ")"
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES " + ", ".join([one] * rows)


def _write_text(
    conn: sqlite3.Connection, text: list[tuple[Any, ...]], drop: list[tuple[int]]
) -> None:
    """Full-text rows (FTS5, rowid = rid): drop those of `drop`, insert the non-empty
    narrative and content words of `text` ((rid, narrative, content) rows)."""
    for table in _TEXT_TABLES:
        if drop:
            conn.executemany(f"DELETE FROM {table} WHERE rowid = ?", drop)
    for table, column in zip(_TEXT_TABLES, (1, 2), strict=True):
        rows = [(r[0], r[column]) for r in text if r[column]]
        if rows:
            _insert(conn, table, rows)


def _insert(conn: sqlite3.Connection, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Multi-row INSERTs: sqlite3's executemany costs about a microsecond per row in
    Python overhead alone; one statement per 64 rows amortizes it. Statement sizes are
    powers of two, so few distinct statements are prepared and cached."""
    i, n = 0, len(rows)
    size = _CHUNK
    while i < n:
        while size > n - i:
            size >>= 1
        if size == _CHUNK and n - i >= 2 * _CHUNK:
            sql = _insert_sql(table, size)
            end = i + (n - i) // size * size
            conn.executemany(
                sql, [list(chain.from_iterable(rows[j : j + size])) for j in range(i, end, size)]
            )
            i = end
            continue
        conn.execute(_insert_sql(table, size), list(chain.from_iterable(rows[i : i + size])))
        i += size


class _Holder:
    """Owns one thread's connection; weakly tracked so a dead thread's connection closes."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __del__(self) -> None:
        self.conn.close()


class SqliteStore(SqlStore):
    dialect = SQLITE
    inline_reads = True  # WAL: a read by key never waits for the writer

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0) -> None:
        super().__init__()
        self.path = str(path)
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._holders: weakref.WeakSet[_Holder] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        self._checkpointer: threading.Thread | None = None  # the latest checkpoint's
        self._wal_frames = 0  # estimated WAL frames written here since the last checkpoint
        self._closed = False
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._writer_fd: int | None = None
        if sys.platform != "win32":
            self._writer_fd = os.open(self.path + ".writer", os.O_RDWR | os.O_CREAT, 0o600)
        conn = self.connection()
        # Switching a new file to WAL needs an exclusive lock, and SQLite answers
        # "database is locked" at once rather than wait when two connections race
        # for it: stores opening together (worker processes, threads) take turns on
        # the writers' file lock for the switch and the migrations.
        if self._writer_fd is not None:
            fcntl.flock(self._writer_fd, fcntl.LOCK_EX)
        try:
            conn.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the file
            migrate_sqlite(conn)
        finally:
            if self._writer_fd is not None:
                fcntl.flock(self._writer_fd, fcntl.LOCK_UN)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit: transactions are explicit)."""
        holder: _Holder | None = getattr(self._local, "holder", None)
        if holder is not None:
            return holder.conn
        if self._closed:
            raise RuntimeError("the store is closed")
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,  # only so close() may close it from another thread
            cached_statements=512,
        )
        # WAL + NORMAL: no fsync per commit; a power loss may lose the last commits,
        # never corrupts the file
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA cache_size=-16384")  # 16 MiB per connection (one per thread)
        conn.execute("PRAGMA temp_store=MEMORY")
        # No automatic checkpoint: SQLite runs it inside the COMMIT that crosses the
        # threshold, while this process still holds the writer lock, so every waiting
        # writer stalls for its I/O and fsyncs (~200 ms every ~10,000 pages). write()
        # checkpoints after releasing the lock instead, every ~32 MB of WAL: pages
        # rewritten in between (the growing ends of indexes) are copied back once.
        # journal_size_limit trims the file back afterwards.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("PRAGMA journal_size_limit=67108864")
        holder = _Holder(conn)
        self._local.holder = holder
        with self._lock:
            self._holders.add(holder)
        return conn

    @contextmanager
    def reader(self, snapshot: bool = False) -> Iterator[Fetch]:
        conn = self.connection()

        def fetch(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
            return conn.execute(sql, params).fetchall()

        if not snapshot or conn.in_transaction:
            yield fetch
            return
        conn.execute("BEGIN")  # deferred: a read snapshot, never blocks the writer
        try:
            yield fetch
        finally:
            conn.execute("COMMIT")

    @contextmanager
    def write(self) -> Iterator[SqliteTx]:
        conn = self.connection()
        if conn.in_transaction:
            raise RuntimeError("a transaction is already open on this thread")
        with self._writer_turn():
            conn.execute("BEGIN IMMEDIATE")
            tx = SqliteTx(self, conn)
            try:
                yield tx
                tx.flush()
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        tx.committed()
        self._wal_frames += _FRAMES_PER_COMMIT + tx.versions * _FRAMES_PER_VERSION
        if self._wal_frames >= _CHECKPOINT_FRAMES and self._checkpoint_lock.acquire(False):
            # on a thread of its own: this writer (maybe writing for others, as the
            # audit trail's group commit does) returns at once
            self._wal_frames = 0
            self._checkpointer = threading.Thread(
                target=self._checkpoint, name="sqlite-checkpoint", daemon=True
            )
            self._checkpointer.start()

    def _checkpoint(self) -> None:
        """Copy the WAL back into the database, outside the write lock.

        PASSIVE: it neither waits for nor blocks writers (or readers), so other writers
        keep committing meanwhile; frames a reader still needs stay for the next one.
        One thread per process at a time (holding `_checkpoint_lock`).
        """
        try:
            self.connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except (sqlite3.Error, RuntimeError):
            pass  # busy (another process is checkpointing) or closing: the next one will
        finally:
            self._checkpoint_lock.release()

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """Queue writers on locks that wake the next one at once.

        SQLite's own busy handler polls with sleeps of up to 100 ms, which under
        concurrent writes from several workers wastes more time than the writes take.
        A thread lock orders this process's writers; an advisory lock on a side file
        (`<db>.writer`) orders the processes. Writers that do not take it (other
        tools) still meet BEGIN IMMEDIATE and the busy timeout.
        """
        with self._write_lock:
            fd = self._writer_fd
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            holders = list(self._holders)
            self._holders = weakref.WeakSet()
        for h in holders:
            h.conn.close()
        fd, self._writer_fd = self._writer_fd, None
        if fd is not None:
            os.close(fd)


class SqliteTx(BufferedTx):
    def __init__(self, store: SqliteStore, conn: sqlite3.Connection) -> None:
        def fetch(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
            return conn.execute(sql, params).fetchall()

        super().__init__(store, fetch)
        self.conn = conn
        self.next_rid = 0  # 0: not read yet
        self.versions = 0  # history rows written (for the checkpoint estimate)

    def select_current(self, type: str, id: str) -> tuple[int, StoredVersion] | None:
        row = self.conn.execute(
            "SELECT r.type, r.id, r.version, r.last_updated, h.method, h.data, h.seq, r.rid"
            " FROM resource r JOIN history h ON h.rid = r.rid AND h.version = r.version"
            " WHERE r.type = ? AND r.id = ?",
            (type, id),
        ).fetchone()
        return None if row is None else (row[7], to_version(row[:7]))

    def resolve_rids(
        self, keys: list[tuple[str, str]], new: int
    ) -> tuple[dict[tuple[str, str], int], Callable[[], int]]:
        found: dict[tuple[str, str], int] = {}
        execute = self.conn.execute
        for key in keys:
            row = execute("SELECT rid FROM resource WHERE type = ? AND id = ?", key).fetchone()
            if row is not None:
                found[key] = row[0]
        return found, self.alloc

    def alloc(self) -> int:
        """Next rid: safe without a sequence since BEGIN IMMEDIATE excludes other writers."""
        if self.next_rid == 0:
            self.next_rid = self.conn.execute(
                "SELECT coalesce(max(rid), 0) FROM resource"
            ).fetchone()[0]
        self.next_rid += 1
        return self.next_rid

    def register_pid(self, type: str, code: str, kind: str) -> int:
        self.conn.execute(
            "INSERT INTO search_param (type, code, kind) VALUES (?, ?, ?)"
            " ON CONFLICT (type, code) DO NOTHING",
            (type, code, kind),
        )
        row = self.conn.execute(
            "SELECT pid FROM search_param WHERE type = ? AND code = ?", (type, code)
        ).fetchone()
        return int(row[0])

    def lock(self, key: str) -> None:
        """Nothing to do: BEGIN IMMEDIATE already excludes every other writer."""

    def current_rows(
        self, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[int, int, bool]]:
        """BEGIN IMMEDIATE already excludes other writers: no row locks needed."""
        found: dict[tuple[str, str], tuple[int, int, bool]] = {}
        execute = self.conn.execute
        for key in keys:
            row = execute(
                "SELECT rid, version, deleted FROM resource WHERE type = ? AND id = ?", key
            ).fetchone()
            if row is not None:
                found[key] = (row[0], row[1], bool(row[2]))
        return found

    def replace_index(self, rids: list[int], index: IndexRows) -> None:
        keys = [(rid,) for rid in rids]
        for table in INDEX_TABLES:
            self.conn.executemany(_DELETE[table], keys)
        for table, rows in index.tables():
            _insert(self.conn, table, rows)
        # full text only for resources whose index carried it
        _write_text(self.conn, index.text, [(r[0],) for r in index.text])

    def write_rows(
        self,
        new: list[ResourceRow],
        updated: list[ResourceRow],
        history: list[HistoryRow],
        index: IndexRows,
    ) -> None:
        c = self.conn
        self.versions += len(history)
        try:
            if new:
                _insert(c, "resource", new)
            if updated:
                c.executemany(
                    "UPDATE resource SET version = ?4, last_updated = ?5, deleted = ?6"
                    " WHERE rid = ?1 AND type = ?2 AND id = ?3",
                    updated,
                )
                rids = [(r[0],) for r in updated]
                for table in INDEX_TABLES:
                    c.executemany(_DELETE[table], rids)
            _insert(c, "history", history)
            for table, rows in index.tables():
                _insert(c, table, rows)
            _write_text(c, index.text, [(r[0],) for r in updated])
        except sqlite3.IntegrityError as e:
            if "UNIQUE" in str(e):
                raise VersionConflict(str(e)) from e
            raise
