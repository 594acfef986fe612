"""The SQLite schema's migrations, in order (shared SQL in store/migrations.py)."""

from __future__ import annotations

from openrecord.store.migrations import (
    ACCOUNTS_MIGRATION,
    AUDIT_EVENTS,
    AUDIT_EVENTS_MIGRATION,
    AUDIT_MIGRATION,
    AUTH_MIGRATION,
    CGM_MIGRATION,
    COMPOSITE_MIGRATION,
    CONTAINED_MIGRATION,
    SQLITE_AUDIT,
    TEXT_MIGRATION,
    Migration,
    account_tables,
    auth_tables,
)

__all__ = ["SQLITE_MIGRATIONS"]

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
    Migration(7, AUTH_MIGRATION, auth_tables("INTEGER")),
    # Accounts (auth/accounts.py): users linked to their fhirUser, passkeys, server-side
    # sessions, login throttling and lockout, one-time password-reset tokens.
    Migration(8, ACCOUNTS_MIGRATION, account_tables("INTEGER")),
    # The audit trail's hash chain (service/audit.py).
    Migration(9, AUDIT_MIGRATION, SQLITE_AUDIT),
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
        tuple(sql.format(blob="BLOB", big="INTEGER") for sql in AUDIT_EVENTS),
    ),
)
