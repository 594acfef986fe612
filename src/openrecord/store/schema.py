"""Database schema and its migrations, one ordered list per backend.

Both backends have the same tables and columns. Migrations are frozen SQL text:
never edit a released one, append a new one. They are applied when a store opens,
under a lock (SQLite `BEGIN IMMEDIATE`, PostgreSQL advisory lock), so two processes
opening the same database at once apply each migration exactly once.

Index tables hold only the current version of each resource, keyed by `rid`.
Their primary key is `(rid, n)`, `n` being the entry's position in the resource's
index list: on SQLite the tables are `WITHOUT ROWID`, clustered by rid, so a
resource's rows are contiguous (cheap delete on update, cheap sort-value lookup) and
no separate rid index is needed. Every secondary index ends with `rid` so that a
planner can intersect rid-ordered lists.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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

# Recorded in schema_version: the description says what an upgraded database lacks.
COMPOSITE_MIGRATION = (
    "composite parameters indexed per component; resources written before need a reindex"
)

TEXT_MIGRATION = "full-text search (_text, _content); resources written before need a reindex"

CONTAINED_MIGRATION = (
    "contained resources indexed (_contained); resources written before need a reindex"
)

# pg_advisory_xact_lock key for migrations: outside the int4 range of hashtext(),
# so it never collides with WriteTx.lock() keys.
_PG_MIGRATION_LOCK = 0x6F70656E7265636F  # "openreco"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


SQLITE_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "initial schema",
        (
            # The current version's body is read from its history row (rid, version):
            # each version is stored once.
            """CREATE TABLE resource (
                rid INTEGER PRIMARY KEY,
                type TEXT NOT NULL,
                id TEXT NOT NULL,
                version INTEGER NOT NULL,
                last_updated INTEGER NOT NULL,
                deleted INTEGER NOT NULL
            )""",
            # read/vread/current by logical id; concurrent creates of one id conflict here
            "CREATE UNIQUE INDEX resource_type_id ON resource (type, id)",
            # type-scoped searches in default (rid) order; SQLite appends rid implicitly
            "CREATE INDEX resource_type_rid ON resource (type)",
            # _lastUpdated search and sort within a type
            "CREATE INDEX resource_type_lu ON resource (type, last_updated)",
            """CREATE TABLE history (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                rid INTEGER NOT NULL,
                type TEXT NOT NULL,
                id TEXT NOT NULL,
                version INTEGER NOT NULL,
                last_updated INTEGER NOT NULL,
                method TEXT NOT NULL,
                data BLOB
            )""",
            # vread, instance history (version order = seq order), version conflicts, _at
            "CREATE UNIQUE INDEX history_rid_version ON history (rid, version)",
            # type-level history, newest first (system level uses the primary key)
            "CREATE INDEX history_type_seq ON history (type, seq)",
            # _since/_at filters and counts (at type level too: one index less to write)
            "CREATE INDEX history_lu ON history (last_updated)",
            """CREATE TABLE search_param (
                pid INTEGER PRIMARY KEY,
                type TEXT NOT NULL,
                code TEXT NOT NULL,
                kind TEXT NOT NULL,
                UNIQUE (type, code)
            )""",
            # system-level searches resolve one code across all types
            "CREATE INDEX search_param_code ON search_param (code)",
            """CREATE TABLE idx_token (
                rid INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL,
                system TEXT, code TEXT, text TEXT,
                hash INTEGER NOT NULL, -- 64-bit hash of system|code
                PRIMARY KEY (rid, n)
            ) WITHOUT ROWID""",
            # code, system|code, |code: index-only (the hash stands for the system). One
            # index for all three, code first so rows of one code cluster and ingest
            # appends rather than inserting at random (a (pid, hash) index doubled the
            # cost of token rows)
            "CREATE INDEX idx_token_code ON idx_token (pid, code, hash, rid)",
            """CREATE TABLE idx_string (
                rid INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL,
                norm TEXT NOT NULL, value TEXT NOT NULL,
                PRIMARY KEY (rid, n)
            ) WITHOUT ROWID""",
            # starts-with as a range scan, :exact (norm equality first)
            "CREATE INDEX idx_string_norm ON idx_string (pid, norm, rid)",
            """CREATE TABLE idx_date (
                rid INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL,
                lo INTEGER NOT NULL, hi INTEGER NOT NULL,
                PRIMARY KEY (rid, n)
            ) WITHOUT ROWID""",
            # eq/lt/le/eb/ap bound the low end; gt/ge/sa bound the high end
            "CREATE INDEX idx_date_lo ON idx_date (pid, lo, hi, rid)",
            "CREATE INDEX idx_date_hi ON idx_date (pid, hi, rid)",
            """CREATE TABLE idx_number (
                rid INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL,
                value REAL NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL,
                PRIMARY KEY (rid, n)
            ) WITHOUT ROWID""",
            # range comparisons on the implicit range
            "CREATE INDEX idx_number_lo ON idx_number (pid, lo, hi, rid)",
            """CREATE TABLE idx_quantity (
                rid INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL,
                value REAL NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL,
                system TEXT, code TEXT, unit TEXT,
                PRIMARY KEY (rid, n)
            ) WITHOUT ROWID""",
            # range comparisons; the unit is checked on the few rows found
            "CREATE INDEX idx_quantity_lo ON idx_quantity (pid, lo, hi, rid)",
            """CREATE TABLE idx_reference (
                rid INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL,
                ref_type TEXT, ref_id TEXT, url TEXT, version TEXT,
                PRIMARY KEY (rid, n)
            ) WITHOUT ROWID""",
            # id first: serves both "Type/id" and a bare id (any type)
            "CREATE INDEX idx_reference_id ON idx_reference (pid, ref_id, ref_type, rid)",
            # absolute and canonical references. Partial: most references are relative
            # (url NULL) and need no entry here; every url criterion (=, range, <>)
            # implies url IS NOT NULL, so the planner still uses it. :missing scans by
            # pid use idx_reference_id, which stays complete.
            "CREATE INDEX idx_reference_url ON idx_reference (pid, url, rid) WHERE url IS NOT NULL",
            """CREATE TABLE idx_uri (
                rid INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL,
                value TEXT NOT NULL,
                PRIMARY KEY (rid, n)
            ) WITHOUT ROWID""",
            # equality and :below (a range scan)
            "CREATE INDEX idx_uri_value ON idx_uri (pid, value, rid)",
            """CREATE TABLE idx_composite (
                rid INTEGER NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL,
                value TEXT NOT NULL,
                PRIMARY KEY (rid, n)
            ) WITHOUT ROWID""",
            # equality on the canonical JSON of the components
            "CREATE INDEX idx_composite_value ON idx_composite (pid, value, rid)",
        ),
    ),
    # Composite parameters are indexed per component (a row of each component's kind
    # under `code$i`, consecutive n per instance), which answers prefixes and tokens
    # without a system. Resources written before this migration have no component
    # rows: composite search misses them until they are reindexed ($reindex).
    Migration(2, COMPOSITE_MIGRATION, ("DROP TABLE idx_composite",)),
    # Full text (_text, _content): the words fhir/search_text.py made, one row per
    # resource (rowid = rid) in each table; `ascii` only splits them on spaces.
    # detail=none: no positions (no phrase queries), a far smaller index. Resources
    # written before this migration have no rows until they are reindexed.
    Migration(
        3,
        TEXT_MIGRATION,
        (
            "CREATE VIRTUAL TABLE text_narrative USING fts5("
            "words, tokenize = 'ascii', detail = none, columnsize = 0)",
            "CREATE VIRTUAL TABLE text_content USING fts5("
            "words, tokenize = 'ascii', detail = none, columnsize = 0)",
        ),
    ),
    # Contained resources (_contained): each one's index rows are the container's
    # rows n_lo..n_hi, under `#Type` parameters; a row here names the block. Resources
    # written before this migration have no such rows until they are reindexed.
    Migration(
        4,
        CONTAINED_MIGRATION,
        (
            """CREATE TABLE idx_contained (
                rid INTEGER NOT NULL, cid TEXT NOT NULL, type TEXT NOT NULL,
                n_lo INTEGER NOT NULL, n_hi INTEGER NOT NULL,
                PRIMARY KEY (rid, n_lo)
            ) WITHOUT ROWID""",
            "CREATE INDEX idx_contained_type ON idx_contained (type, rid)",
        ),
    ),
)

# Text columns that are compared or indexed use the "C" collation: byte order equals
# code point order (prefix searches become range scans) and comparisons are cheap.
POSTGRES_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "initial schema",
        (
            # rids are allocated in blocks by the writer (see postgres.py)
            "CREATE SEQUENCE resource_rid_seq AS bigint",
            # The current version's body is read from its history row (rid, version).
            """CREATE TABLE resource (
                rid bigint PRIMARY KEY,
                type text COLLATE "C" NOT NULL,
                id text COLLATE "C" NOT NULL,
                version integer NOT NULL,
                last_updated bigint NOT NULL,
                deleted boolean NOT NULL
            )""",
            # read/vread/current by logical id; concurrent creates of one id conflict here
            "CREATE UNIQUE INDEX resource_type_id ON resource (type, id)",
            # type-scoped searches in default (rid) order
            "CREATE INDEX resource_type_rid ON resource (type, rid)",
            # _lastUpdated search and sort within a type
            "CREATE INDEX resource_type_lu ON resource (type, last_updated)",
            """CREATE TABLE history (
                seq bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                rid bigint NOT NULL,
                type text COLLATE "C" NOT NULL,
                id text COLLATE "C" NOT NULL,
                version integer NOT NULL,
                last_updated bigint NOT NULL,
                method text NOT NULL,
                data bytea
            )""",
            # vread, instance history (version order = seq order), version conflicts, _at
            "CREATE UNIQUE INDEX history_rid_version ON history (rid, version)",
            # type-level history, newest first (system level uses the primary key)
            "CREATE INDEX history_type_seq ON history (type, seq)",
            # _since/_at filters and counts (at type level too: one index less to write)
            "CREATE INDEX history_lu ON history (last_updated)",
            """CREATE TABLE search_param (
                pid integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                type text COLLATE "C" NOT NULL,
                code text COLLATE "C" NOT NULL,
                kind text NOT NULL,
                UNIQUE (type, code)
            )""",
            # system-level searches resolve one code across all types
            "CREATE INDEX search_param_code ON search_param (code)",
            # the primary key (rid, n) serves deletes and per-resource sort values
            """CREATE TABLE idx_token (
                rid bigint NOT NULL, n integer NOT NULL, pid integer NOT NULL,
                system text COLLATE "C", code text COLLATE "C", text text,
                hash bigint NOT NULL, -- 64-bit hash of system|code
                PRIMARY KEY (rid, n)
            )""",
            # code, system|code, |code: index-only (the hash stands for the system). One
            # index for all three, code first so rows of one code cluster and ingest
            # appends rather than inserting at random (a (pid, hash) index doubled the
            # cost of token rows)
            "CREATE INDEX idx_token_code ON idx_token (pid, code, hash, rid)",
            """CREATE TABLE idx_string (
                rid bigint NOT NULL, n integer NOT NULL, pid integer NOT NULL,
                norm text COLLATE "C" NOT NULL, value text NOT NULL,
                PRIMARY KEY (rid, n)
            )""",
            # starts-with as a range scan, :exact (norm equality first)
            "CREATE INDEX idx_string_norm ON idx_string (pid, norm, rid)",
            """CREATE TABLE idx_date (
                rid bigint NOT NULL, n integer NOT NULL, pid integer NOT NULL,
                lo bigint NOT NULL, hi bigint NOT NULL,
                PRIMARY KEY (rid, n)
            )""",
            # eq/lt/le/eb/ap bound the low end; gt/ge/sa bound the high end
            "CREATE INDEX idx_date_lo ON idx_date (pid, lo, hi, rid)",
            "CREATE INDEX idx_date_hi ON idx_date (pid, hi, rid)",
            """CREATE TABLE idx_number (
                rid bigint NOT NULL, n integer NOT NULL, pid integer NOT NULL,
                value double precision NOT NULL, lo double precision NOT NULL,
                hi double precision NOT NULL,
                PRIMARY KEY (rid, n)
            )""",
            # range comparisons on the implicit range
            "CREATE INDEX idx_number_lo ON idx_number (pid, lo, hi, rid)",
            """CREATE TABLE idx_quantity (
                rid bigint NOT NULL, n integer NOT NULL, pid integer NOT NULL,
                value double precision NOT NULL, lo double precision NOT NULL,
                hi double precision NOT NULL,
                system text COLLATE "C", code text COLLATE "C", unit text COLLATE "C",
                PRIMARY KEY (rid, n)
            )""",
            # range comparisons; the unit is checked on the few rows found
            "CREATE INDEX idx_quantity_lo ON idx_quantity (pid, lo, hi, rid)",
            """CREATE TABLE idx_reference (
                rid bigint NOT NULL, n integer NOT NULL, pid integer NOT NULL,
                ref_type text COLLATE "C", ref_id text COLLATE "C", url text COLLATE "C",
                version text COLLATE "C",
                PRIMARY KEY (rid, n)
            )""",
            # id first: serves both "Type/id" and a bare id (any type)
            "CREATE INDEX idx_reference_id ON idx_reference (pid, ref_id, ref_type, rid)",
            # absolute and canonical references. Partial: most references are relative
            # (url NULL) and need no entry here; every url criterion (=, range, <>)
            # implies url IS NOT NULL, so the planner still uses it. :missing scans by
            # pid use idx_reference_id, which stays complete.
            "CREATE INDEX idx_reference_url ON idx_reference (pid, url, rid) WHERE url IS NOT NULL",
            """CREATE TABLE idx_uri (
                rid bigint NOT NULL, n integer NOT NULL, pid integer NOT NULL,
                value text COLLATE "C" NOT NULL,
                PRIMARY KEY (rid, n)
            )""",
            # equality and :below (a range scan)
            "CREATE INDEX idx_uri_value ON idx_uri (pid, value, rid)",
            """CREATE TABLE idx_composite (
                rid bigint NOT NULL, n integer NOT NULL, pid integer NOT NULL,
                value text COLLATE "C" NOT NULL,
                PRIMARY KEY (rid, n)
            )""",
            # equality on the canonical JSON of the components
            "CREATE INDEX idx_composite_value ON idx_composite (pid, value, rid)",
        ),
    ),
    # Composite parameters are indexed per component (a row of each component's kind
    # under `code$i`, consecutive n per instance), which answers prefixes and tokens
    # without a system. Resources written before this migration have no component
    # rows: composite search misses them until they are reindexed ($reindex).
    Migration(2, COMPOSITE_MIGRATION, ("DROP TABLE idx_composite",)),
    # Full text (_text, _content): tsvectors of the words fhir/search_text.py made
    # (array_to_tsvector: no parser, no dictionary), a row per resource with any text.
    # Resources written before this migration have no rows until they are reindexed.
    Migration(
        3,
        TEXT_MIGRATION,
        (
            """CREATE TABLE search_text (
                rid bigint PRIMARY KEY,
                narrative tsvector NOT NULL,
                content tsvector NOT NULL
            )""",
            "CREATE INDEX search_text_narrative ON search_text USING gin (narrative)",
            "CREATE INDEX search_text_content ON search_text USING gin (content)",
        ),
    ),
    # Contained resources (_contained): see the SQLite migration 4.
    Migration(
        4,
        CONTAINED_MIGRATION,
        (
            """CREATE TABLE idx_contained (
                rid bigint NOT NULL, cid text COLLATE "C" NOT NULL,
                type text COLLATE "C" NOT NULL,
                n_lo integer NOT NULL, n_hi integer NOT NULL,
                PRIMARY KEY (rid, n_lo)
            )""",
            "CREATE INDEX idx_contained_type ON idx_contained (type, rid)",
        ),
    ),
)

_SQLITE_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at INTEGER NOT NULL
)"""
_PG_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version integer PRIMARY KEY, description text NOT NULL, applied_at bigint NOT NULL
)"""


def _latest(migrations: tuple[Migration, ...]) -> int:
    return migrations[-1].version if migrations else 0


def _check_not_newer(found: int, migrations: tuple[Migration, ...]) -> None:
    if found > _latest(migrations):
        raise RuntimeError(
            f"database schema version {found} is newer than this openrecord "
            f"({_latest(migrations)}): upgrade openrecord"
        )


def _sqlite_version(conn: sqlite3.Connection) -> int:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if row is None:
        return 0
    return int(conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0])


def migrate_sqlite(conn: sqlite3.Connection) -> int:
    """Bring the database up to date; returns the schema version. `conn` is autocommit."""
    if _sqlite_version(conn) == _latest(SQLITE_MIGRATIONS):
        return _latest(SQLITE_MIGRATIONS)  # fast path: no write lock on every open
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_SQLITE_VERSION_TABLE)
        found = _sqlite_version(conn)  # re-read under the lock: another process may have won
        _check_not_newer(found, SQLITE_MIGRATIONS)
        for m in SQLITE_MIGRATIONS:
            if m.version <= found:
                continue
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


def _pg_version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row is not None else 0


def migrate_postgres(conn: psycopg.Connection[Any]) -> int:
    """Bring the database up to date; returns the schema version. `conn` is autocommit."""
    if _pg_version(conn) == _latest(POSTGRES_MIGRATIONS):
        return _latest(POSTGRES_MIGRATIONS)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_MIGRATION_LOCK,))
        conn.execute(_PG_VERSION_TABLE)
        found = _pg_version(conn)
        _check_not_newer(found, POSTGRES_MIGRATIONS)
        for m in POSTGRES_MIGRATIONS:
            if m.version <= found:
                continue
            for statement in m.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (%s, %s, %s)",
                (m.version, m.description, time.time_ns() // 1000),
            )
    return _latest(POSTGRES_MIGRATIONS)
