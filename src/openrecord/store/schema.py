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

CGM_MIGRATION = "compact CGM readings: one row per patient and UTC day (cgm_series, cgm_day)"

# pg_advisory_xact_lock key for migrations: outside the int4 range of hashtext(),
# so it never collides with WriteTx.lock() keys.
_PG_MIGRATION_LOCK = 0x6F70656E7265636F  # "openreco"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


AUTH_MIGRATION = "authorization server: keys, clients, requests, grants, tokens"


def _auth_tables(big: str) -> tuple[str, ...]:
    """Migration 7's tables (same SQL on both backends but for the integer type).
    Times are epoch seconds; secrets (codes, refresh tokens, client secrets) are
    stored as SHA-256 hashes only."""
    return (
        f"""CREATE TABLE auth_key (
            kid TEXT PRIMARY KEY, alg TEXT NOT NULL, private_jwk TEXT NOT NULL,
            created_at {big} NOT NULL, retired_at {big}
        )""",
        f"""CREATE TABLE auth_client (
            client_id TEXT PRIMARY KEY, metadata TEXT NOT NULL, secret_hash TEXT,
            source TEXT NOT NULL, created_at {big} NOT NULL
        )""",
        f"""CREATE TABLE auth_launch (
            id TEXT PRIMARY KEY, context TEXT NOT NULL, expires_at {big} NOT NULL
        )""",
        f"""CREATE TABLE auth_request (
            id TEXT PRIMARY KEY, client_id TEXT NOT NULL, params TEXT NOT NULL,
            status TEXT NOT NULL, code_hash TEXT, result TEXT, grant_id TEXT,
            expires_at {big} NOT NULL
        )""",
        "CREATE UNIQUE INDEX auth_request_code ON auth_request (code_hash)",
        f"""CREATE TABLE auth_grant (
            id TEXT PRIMARY KEY, client_id TEXT NOT NULL, user_id TEXT, patient TEXT,
            fhir_user TEXT, scope TEXT NOT NULL, context TEXT NOT NULL,
            created_at {big} NOT NULL, revoked_at {big}
        )""",
        "CREATE INDEX auth_grant_user ON auth_grant (user_id, client_id)",
        f"""CREATE TABLE auth_refresh (
            token_hash TEXT PRIMARY KEY, grant_id TEXT NOT NULL, scope TEXT NOT NULL,
            expires_at {big} NOT NULL, used_at {big}
        )""",
        "CREATE INDEX auth_refresh_grant ON auth_refresh (grant_id)",
        f"""CREATE TABLE auth_access (
            jti TEXT PRIMARY KEY, grant_id TEXT, client_id TEXT NOT NULL,
            expires_at {big} NOT NULL, revoked INTEGER NOT NULL
        )""",
        "CREATE INDEX auth_access_grant ON auth_access (grant_id)",
        "CREATE INDEX auth_access_client ON auth_access (client_id)",
        f"""CREATE TABLE auth_jti (
            client_id TEXT NOT NULL, jti TEXT NOT NULL, expires_at {big} NOT NULL,
            PRIMARY KEY (client_id, jti)
        )""",
    )


ACCOUNTS_MIGRATION = "accounts: users, passkeys, sessions, login throttling, reset tokens"


def _account_tables(big: str) -> tuple[str, ...]:
    """Migration 8's tables (auth/accounts.py, auth/sessions.py): the same SQL on both
    backends but for the integer type. Times are epoch seconds (`*_ms`: milliseconds);
    session ids and reset tokens are stored as SHA-256 hashes only."""
    return (
        f"""CREATE TABLE account_user (
            id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
            fhir_user TEXT NOT NULL, totp_secret TEXT, totp_last_step {big},
            disabled INTEGER NOT NULL, created_at {big} NOT NULL,
            password_changed_at {big} NOT NULL
        )""",
        f"""CREATE TABLE account_passkey (
            credential_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, public_key TEXT NOT NULL,
            sign_count {big} NOT NULL, name TEXT NOT NULL, created_at {big} NOT NULL,
            last_used_at {big}
        )""",
        "CREATE INDEX account_passkey_user ON account_passkey (user_id)",
        f"""CREATE TABLE account_session (
            id_hash TEXT PRIMARY KEY, csrf TEXT NOT NULL, user_id TEXT, stage TEXT NOT NULL,
            data TEXT NOT NULL, created_at {big} NOT NULL, expires_at {big} NOT NULL
        )""",
        "CREATE INDEX account_session_user ON account_session (user_id)",
        f"""CREATE TABLE account_throttle (
            key TEXT PRIMARY KEY, failures INTEGER NOT NULL, next_attempt_ms {big} NOT NULL,
            locked_until_ms {big} NOT NULL, updated_ms {big} NOT NULL
        )""",
        f"""CREATE TABLE account_reset (
            token_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL, expires_at {big} NOT NULL,
            used_at {big}
        )""",
    )


AUDIT_MIGRATION = "audit trail: hash chain over the AuditEvent resources"

# The hash chain of service/audit.py: one row per AuditEvent, seq 1, 2, 3… without gaps,
# hash = SHA-256(previous hash ‖ the AuditEvent's stored JSON). Append-only: the code
# has no UPDATE or DELETE, and triggers refuse them (guards against accidents; the
# chain itself is what detects a database owner's tampering: `openrecord audit verify`).
_AUDIT_CHAIN = """CREATE TABLE audit_chain (
    seq {big} PRIMARY KEY, event_id TEXT NOT NULL UNIQUE,
    recorded {big} NOT NULL, hash TEXT NOT NULL
)"""
_SQLITE_AUDIT = (
    _AUDIT_CHAIN.format(big="INTEGER"),
    "CREATE TRIGGER audit_chain_no_update BEFORE UPDATE ON audit_chain"
    " BEGIN SELECT RAISE(ABORT, 'audit_chain is append-only'); END",
    "CREATE TRIGGER audit_chain_no_delete BEFORE DELETE ON audit_chain"
    " BEGIN SELECT RAISE(ABORT, 'audit_chain is append-only'); END",
)
# PostgreSQL: UPDATE refused; a DELETE must empty the table (resetting a whole
# database, as the test fixtures do; the owner could DROP or TRUNCATE it anyway).
_POSTGRES_AUDIT = (
    _AUDIT_CHAIN.format(big="bigint"),
    """CREATE FUNCTION audit_chain_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' OR EXISTS (SELECT 1 FROM audit_chain) THEN
            RAISE EXCEPTION 'audit_chain is append-only';
        END IF;
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER audit_chain_no_update BEFORE UPDATE ON audit_chain"
    " FOR EACH STATEMENT EXECUTE FUNCTION audit_chain_append_only()",
    "CREATE TRIGGER audit_chain_no_delete AFTER DELETE ON audit_chain"
    " FOR EACH STATEMENT EXECUTE FUNCTION audit_chain_append_only()",
)

AUDIT_EVENTS_MIGRATION = "audit trail: events kept in the chain, stored as resources in batches"

# service/audit_chain.py: a request appends one chain row holding its event; the
# AuditEvent resources are stored from the rows after the watermark, in batches. Rows
# chained before this migration were stored as resources then (watermark = their head).
_AUDIT_EVENTS = (
    "ALTER TABLE audit_chain ADD COLUMN event {blob}",
    "CREATE TABLE audit_materialized (id INTEGER PRIMARY KEY CHECK (id = 1), seq {big} NOT NULL)",
    "INSERT INTO audit_materialized (id, seq) SELECT 1, coalesce(max(seq), 0) FROM audit_chain",
)


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
    # Compact CGM readings (service/glucose.py, care/glucose/storage.py): a patient's
    # series number, and one row per series and UTC day holding the day's readings as
    # packed arrays. Rowid table: the blobs (~2.3 KB a day) would bloat a clustered key.
    Migration(
        5,
        CGM_MIGRATION,
        (
            "CREATE TABLE cgm_series (sid INTEGER PRIMARY KEY, patient TEXT NOT NULL UNIQUE)",
            """CREATE TABLE cgm_day (
                sid INTEGER NOT NULL, day INTEGER NOT NULL, n INTEGER NOT NULL,
                updated INTEGER NOT NULL, times BLOB NOT NULL, mg_dl BLOB NOT NULL,
                limits BLOB, PRIMARY KEY (sid, day)
            )""",
        ),
    ),
    # Glucose alerts and the notification outbox (service/alerts.py, notifications.py):
    # per-patient settings and newest reading, the episode state of each alert kind,
    # webhook endpoints (the secret stays in the environment: only its variable's name),
    # and one outbox row per alert and channel, claimed by a lease (claimed_until_us).
    Migration(
        6,
        "glucose alerts and notification outbox",
        (
            """CREATE TABLE alert_patient (
                patient TEXT PRIMARY KEY, settings TEXT NOT NULL, enabled INTEGER NOT NULL,
                last_reading_us INTEGER, updated_us INTEGER NOT NULL
            )""",
            """CREATE TABLE alert_episode (
                patient TEXT NOT NULL, kind TEXT NOT NULL, active INTEGER NOT NULL,
                started_us INTEGER, fired_us INTEGER, snoozed_until_us INTEGER,
                PRIMARY KEY (patient, kind)
            )""",
            """CREATE TABLE alert_webhook (
                id TEXT PRIMARY KEY, patient TEXT NOT NULL, url TEXT NOT NULL,
                secret_env TEXT NOT NULL, detail TEXT NOT NULL, created_us INTEGER NOT NULL
            )""",
            "CREATE INDEX alert_webhook_patient ON alert_webhook (patient)",
            """CREATE TABLE notification_outbox (
                id TEXT PRIMARY KEY, communication TEXT NOT NULL, patient TEXT NOT NULL,
                channel TEXT NOT NULL, webhook TEXT, body TEXT NOT NULL,
                attempts INTEGER NOT NULL, next_attempt_us INTEGER NOT NULL,
                claimed_until_us INTEGER NOT NULL, claimed_by TEXT,
                delivered_us INTEGER, failed_us INTEGER, last_error TEXT,
                created_us INTEGER NOT NULL
            )""",
            """CREATE INDEX notification_outbox_due ON notification_outbox
                (channel, next_attempt_us) WHERE delivered_us IS NULL AND failed_us IS NULL""",
            """CREATE INDEX notification_outbox_communication ON notification_outbox
                (communication)""",
        ),
    ),
    # OAuth 2.0 / SMART authorization server state (auth/): signing keys, clients, EHR
    # launches, authorization requests and codes, grants, refresh-token families,
    # issued access tokens (revocation by jti) and client-assertion jtis (replay).
    Migration(7, AUTH_MIGRATION, _auth_tables("INTEGER")),
    # Accounts (auth/accounts.py): users linked to their fhirUser, passkeys, server-side
    # sessions, login throttling and lockout, one-time password-reset tokens.
    Migration(8, ACCOUNTS_MIGRATION, _account_tables("INTEGER")),
    # The audit trail's hash chain (service/audit.py).
    Migration(9, AUDIT_MIGRATION, _SQLITE_AUDIT),
    # FHIR packages loaded with `openrecord packages add` (service/packages.py): the
    # [type, id] of each conformance resource written, as JSON.
    Migration(
        10,
        "FHIR packages",
        (
            """CREATE TABLE fhir_package (
                name TEXT PRIMARY KEY, version TEXT NOT NULL, canonical TEXT NOT NULL,
                fhir_versions TEXT NOT NULL, loaded_at INTEGER NOT NULL, resources TEXT NOT NULL
            )""",
        ),
    ),
    # Nightscout API secrets (server/nightscout.py): SHA-256 of the secret's SHA-1 → patient.
    Migration(
        11,
        "Nightscout API secrets",
        (
            """CREATE TABLE nightscout_secret (
                lookup TEXT PRIMARY KEY, patient TEXT NOT NULL, created INTEGER NOT NULL
            )""",
            "CREATE INDEX nightscout_secret_patient ON nightscout_secret (patient)",
        ),
    ),
    # Rate limits of the OAuth endpoints (auth/rate_limit.py): one token bucket per key,
    # kept as its GCRA theoretical arrival time in microseconds.
    Migration(
        12,
        "OAuth endpoint rate limits",
        ("CREATE TABLE auth_rate (key TEXT PRIMARY KEY, tat_us INTEGER NOT NULL)",),
    ),
    Migration(
        13,
        AUDIT_EVENTS_MIGRATION,
        tuple(sql.format(blob="BLOB", big="INTEGER") for sql in _AUDIT_EVENTS),
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
    # Compact CGM readings: see the SQLite migration 5. toast_tuple_target: a day's
    # row (~2.3 KB) stays inline and uncompressed, read and written in one piece.
    Migration(
        5,
        CGM_MIGRATION,
        (
            """CREATE TABLE cgm_series (
                sid bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                patient text COLLATE "C" NOT NULL UNIQUE
            )""",
            """CREATE TABLE cgm_day (
                sid bigint NOT NULL, day integer NOT NULL, n integer NOT NULL,
                updated bigint NOT NULL, times bytea NOT NULL, mg_dl bytea NOT NULL,
                limits bytea, PRIMARY KEY (sid, day)
            ) WITH (toast_tuple_target = 8160)""",
        ),
    ),
    # Glucose alerts and the notification outbox: see the SQLite migration 6.
    Migration(
        6,
        "glucose alerts and notification outbox",
        (
            """CREATE TABLE alert_patient (
                patient text COLLATE "C" PRIMARY KEY, settings text NOT NULL,
                enabled integer NOT NULL, last_reading_us bigint, updated_us bigint NOT NULL
            )""",
            """CREATE TABLE alert_episode (
                patient text COLLATE "C" NOT NULL, kind text COLLATE "C" NOT NULL,
                active integer NOT NULL, started_us bigint, fired_us bigint,
                snoozed_until_us bigint, PRIMARY KEY (patient, kind)
            )""",
            """CREATE TABLE alert_webhook (
                id text COLLATE "C" PRIMARY KEY, patient text COLLATE "C" NOT NULL,
                url text NOT NULL, secret_env text NOT NULL, detail text NOT NULL,
                created_us bigint NOT NULL
            )""",
            "CREATE INDEX alert_webhook_patient ON alert_webhook (patient)",
            """CREATE TABLE notification_outbox (
                id text COLLATE "C" PRIMARY KEY, communication text COLLATE "C" NOT NULL,
                patient text COLLATE "C" NOT NULL, channel text COLLATE "C" NOT NULL,
                webhook text COLLATE "C", body text NOT NULL,
                attempts integer NOT NULL, next_attempt_us bigint NOT NULL,
                claimed_until_us bigint NOT NULL, claimed_by text,
                delivered_us bigint, failed_us bigint, last_error text,
                created_us bigint NOT NULL
            )""",
            """CREATE INDEX notification_outbox_due ON notification_outbox
                (channel, next_attempt_us) WHERE delivered_us IS NULL AND failed_us IS NULL""",
            """CREATE INDEX notification_outbox_communication ON notification_outbox
                (communication)""",
        ),
    ),
    # Authorization server state: see the SQLite migration 7.
    Migration(7, AUTH_MIGRATION, _auth_tables("bigint")),
    # Accounts: see the SQLite migration 8.
    Migration(8, ACCOUNTS_MIGRATION, _account_tables("bigint")),
    # The audit trail's hash chain: see the SQLite migration 9.
    Migration(9, AUDIT_MIGRATION, _POSTGRES_AUDIT),
    # FHIR packages: see the SQLite migration 10.
    Migration(
        10,
        "FHIR packages",
        (
            """CREATE TABLE fhir_package (
                name text PRIMARY KEY, version text NOT NULL, canonical text NOT NULL,
                fhir_versions text NOT NULL, loaded_at bigint NOT NULL, resources text NOT NULL
            )""",
        ),
    ),
    # Nightscout API secrets: see the SQLite migration 11.
    Migration(
        11,
        "Nightscout API secrets",
        (
            """CREATE TABLE nightscout_secret (
                lookup text COLLATE "C" PRIMARY KEY, patient text COLLATE "C" NOT NULL,
                created bigint NOT NULL
            )""",
            "CREATE INDEX nightscout_secret_patient ON nightscout_secret (patient)",
        ),
    ),
    # OAuth endpoint rate limits: see the SQLite migration 12. UNLOGGED: no WAL, so a
    # request's bucket update never waits for a flush (a crash just refills the buckets).
    Migration(
        12,
        "OAuth endpoint rate limits",
        (
            'CREATE UNLOGGED TABLE auth_rate (key text COLLATE "C" PRIMARY KEY,'
            " tat_us bigint NOT NULL)",
        ),
    ),
    Migration(
        13,
        AUDIT_EVENTS_MIGRATION,
        tuple(sql.format(blob="bytea", big="bigint") for sql in _AUDIT_EVENTS),
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
