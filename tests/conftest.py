"""Fixtures shared by every test package.

`store_url`: a URL to an empty, migrated-on-open store database, once per backend this
run covers (see `tests.databases`). SQLite gets a new file per test. PostgreSQL gets
one database per test session (per xdist worker), emptied before each test: creating
a database per test would cost more than most tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.databases import backends, fresh_database


@pytest.fixture(scope="session")
def _pg_session_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One PostgreSQL database for this session (skips, or fails under CI, if unreachable)."""
    with fresh_database("postgresql", tmp_path_factory.mktemp("pg")) as url:
        yield url


def _empty_postgres(url: str) -> None:
    """Delete every row (the schema stays: migrations ran once per session)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")
        rows: list[Any] = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename <> 'schema_version'"
        ).fetchall()
        if rows:  # DELETE, not TRUNCATE: ten times faster on a few rows
            conn.execute("; ".join(f'DELETE FROM "{r[0]}"' for r in rows))


@pytest.fixture(params=backends())
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty store database on each backend: `open_store(store_url)`."""
    if request.param == "sqlite":
        folder = tmp_path_factory.mktemp("store")
        return f"sqlite:///{folder / 'store.sqlite'}"
    url: str = request.getfixturevalue("_pg_session_database")
    _empty_postgres(url)
    return url
