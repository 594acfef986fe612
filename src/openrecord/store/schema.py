"""Applying the migrations of `store/migrations_sqlite.py` and
`store/migrations_postgres.py`, one ordered list per backend.

They are applied when a store opens, under a lock (SQLite `BEGIN IMMEDIATE`,
PostgreSQL advisory lock), so two processes opening the same database at once apply
each migration exactly once; by set, so a lower number that lands later still runs.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Any

from openrecord.store.migrations import (
    COMPOSITE_MIGRATION,
    CONTAINED_MIGRATION,
    TEXT_MIGRATION,
    Migration,
)
from openrecord.store.migrations_postgres import POSTGRES_MIGRATIONS
from openrecord.store.migrations_sqlite import SQLITE_MIGRATIONS

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "COMPOSITE_MIGRATION",
    "CONTAINED_MIGRATION",
    "POSTGRES_MIGRATIONS",
    "SQLITE_MIGRATIONS",
    "TEXT_MIGRATION",
    "Migration",
    "migrate_postgres",
    "migrate_sqlite",
]

# pg_advisory_xact_lock key for migrations: outside the int4 range of hashtext(),
# so it never collides with WriteTx.lock() keys.
_PG_MIGRATION_LOCK = 0x6F70656E7265636F  # "openreco"

_SQLITE_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at INTEGER NOT NULL
)"""
_PG_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version integer PRIMARY KEY, description text NOT NULL, applied_at bigint NOT NULL
)"""


def _latest(migrations: tuple[Migration, ...]) -> int:
    return migrations[-1].version if migrations else 0


def _pending(applied: set[int], migrations: tuple[Migration, ...]) -> list[Migration]:
    """The migrations not applied yet, in order. By set, not by the highest number: a
    migration numbered below one already applied (features land in any order during
    development) is still applied."""
    newest = max(applied, default=0)
    if newest > _latest(migrations):
        raise RuntimeError(
            f"database schema version {newest} is newer than this openrecord "
            f"({_latest(migrations)}): upgrade openrecord"
        )
    return [m for m in migrations if m.version not in applied]


def _sqlite_applied(conn: sqlite3.Connection) -> set[int]:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if row is None:
        return set()
    return {int(r[0]) for r in conn.execute("SELECT version FROM schema_version")}


def migrate_sqlite(conn: sqlite3.Connection) -> int:
    """Bring the database up to date; returns the schema version. `conn` is autocommit."""
    if not _pending(_sqlite_applied(conn), SQLITE_MIGRATIONS):
        return _latest(SQLITE_MIGRATIONS)  # fast path: no write lock on every open
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_SQLITE_VERSION_TABLE)
        # re-read under the lock: another process may have won
        for m in _pending(_sqlite_applied(conn), SQLITE_MIGRATIONS):
            for statement in m.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                (m.version, m.description, time.time_ns() // 1000),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return _latest(SQLITE_MIGRATIONS)


def _pg_applied(conn: psycopg.Connection[Any]) -> set[int]:
    row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return set()
    return {int(r[0]) for r in conn.execute("SELECT version FROM schema_version").fetchall()}


def migrate_postgres(conn: psycopg.Connection[Any]) -> int:
    """Bring the database up to date; returns the schema version. `conn` is autocommit."""
    if not _pending(_pg_applied(conn), POSTGRES_MIGRATIONS):
        return _latest(POSTGRES_MIGRATIONS)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_MIGRATION_LOCK,))
        conn.execute(_PG_VERSION_TABLE)
        for m in _pending(_pg_applied(conn), POSTGRES_MIGRATIONS):
            for statement in m.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (%s, %s, %s)",
                (m.version, m.description, time.time_ns() // 1000),
            )
    return _latest(POSTGRES_MIGRATIONS)
