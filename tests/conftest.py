"""Fixtures shared by every test package.

`store_url`: a URL to an empty, migrated-on-open store database, once per backend this
run covers (see `tests.databases`). SQLite gets a new file per test. PostgreSQL gets
one database per test session (per xdist worker), emptied before each test: creating
a database per test would cost more than most tests.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from openrecord.store import open_store
from openrecord.store.base import Store
from tests.databases import backends, drop_pending, fresh_database

# The data folder (the default SQLite database, the TOTP secret key file) of every
# server and command the tests start: never the developer's own.
os.environ["OPENRECORD_HOME"] = tempfile.mkdtemp(prefix="openrecord-test-home-")


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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Drop the test databases still queued (`tests.databases` drops in the background)
    and the data folder."""
    drop_pending()
    shutil.rmtree(os.environ["OPENRECORD_HOME"], ignore_errors=True)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An open store on `store_url` (each backend), closed after the test."""
    s = open_store(store_url)
    try:
        yield s
    finally:
        s.close()
