"""The schema: every table, index and trigger, as frozen migrations per backend.

Both backends have the same tables and columns. A migration's SQL is never edited once
released: a change is a new migration, appended. `store/schema.py` applies them.

Index tables hold only the current version of each resource, keyed by `rid`.
Their primary key is `(rid, n)`, `n` being the entry's position in the resource's
index list: on SQLite the tables are `WITHOUT ROWID`, clustered by rid, so a
resource's rows are contiguous (cheap delete on update, cheap sort-value lookup) and
no separate rid index is needed. Every secondary index ends with `rid` so that a
planner can intersect rid-ordered lists.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ACCOUNTS_MIGRATION",
    "AUDIT_EVENTS",
    "AUDIT_EVENTS_MIGRATION",
    "AUDIT_MIGRATION",
    "AUTH_MIGRATION",
    "CGM_MIGRATION",
    "COMPOSITE_MIGRATION",
    "CONTAINED_MIGRATION",
    "POSTGRES_AUDIT",
    "SQLITE_AUDIT",
    "TEXT_MIGRATION",
    "Migration",
    "account_tables",
    "auth_tables",
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


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


AUTH_MIGRATION = "authorization server: keys, clients, requests, grants, tokens"


def auth_tables(big: str) -> tuple[str, ...]:
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


def account_tables(big: str) -> tuple[str, ...]:
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
SQLITE_AUDIT = (
    _AUDIT_CHAIN.format(big="INTEGER"),
    "CREATE TRIGGER audit_chain_no_update BEFORE UPDATE ON audit_chain"
    " BEGIN SELECT RAISE(ABORT, 'audit_chain is append-only'); END",
    "CREATE TRIGGER audit_chain_no_delete BEFORE DELETE ON audit_chain"
    " BEGIN SELECT RAISE(ABORT, 'audit_chain is append-only'); END",
)
# PostgreSQL: UPDATE refused; a DELETE must empty the table (resetting a whole
# database, as the test fixtures do; the owner could DROP or TRUNCATE it anyway).
POSTGRES_AUDIT = (
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
AUDIT_EVENTS = (
    "ALTER TABLE audit_chain ADD COLUMN event {blob}",
    "CREATE TABLE audit_materialized (id INTEGER PRIMARY KEY CHECK (id = 1), seq {big} NOT NULL)",
    "INSERT INTO audit_materialized (id, seq) SELECT 1, coalesce(max(seq), 0) FROM audit_chain",
)
