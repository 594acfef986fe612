"""Persistence: resources, their history and search index, in SQLite or PostgreSQL.

`open_store(url)` picks the backend from the URL scheme:
`sqlite:///relative.db`, `sqlite:////absolute/path.db`, `postgresql://...` (or `postgres://`).
"""

from __future__ import annotations

from openrecord.store.base import (
    HistoryPage,
    SearchPage,
    Store,
    StoredVersion,
    UnsupportedSearch,
    VersionConflict,
    WriteTx,
)
from openrecord.store.query import (
    Condition,
    DateCriterion,
    NumberCriterion,
    Prefix,
    QuantityCriterion,
    ReferenceCriterion,
    SearchQuery,
    SortKey,
    StringCriterion,
    TokenCriterion,
    UriCriterion,
)

__all__ = [
    "Condition",
    "DateCriterion",
    "HistoryPage",
    "NumberCriterion",
    "Prefix",
    "QuantityCriterion",
    "ReferenceCriterion",
    "SearchPage",
    "SearchQuery",
    "SortKey",
    "Store",
    "StoredVersion",
    "StringCriterion",
    "TokenCriterion",
    "UnsupportedSearch",
    "UriCriterion",
    "VersionConflict",
    "WriteTx",
    "open_store",
]


def open_store(url: str) -> Store:
    """Open (creating and migrating as needed) the store at `url`."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path or path == ":memory:":
            raise ValueError(f"a SQLite store needs a file path: {url!r}")
        from openrecord.store.sqlite import SqliteStore

        return SqliteStore(path)
    if url.startswith(("postgresql://", "postgres://")):
        from openrecord.store.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"unsupported store URL {url!r}: use sqlite:///PATH or postgresql://...")
