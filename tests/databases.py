"""Fresh test databases on the backends this run covers.

`OPENRECORD_TEST_DATABASE=sqlite|postgresql` restricts the run to one backend (CI runs
the suite once per backend); unset, both run, and PostgreSQL is skipped when it is not
reachable — except under `CI=true`, where that is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["PG_ADMIN_URL", "backends", "fresh_database"]

PG_ADMIN_URL = os.environ.get(
    "OPENRECORD_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def backends() -> list[str]:
    chosen = os.environ.get("OPENRECORD_TEST_DATABASE")
    if chosen:
        if chosen not in ("sqlite", "postgresql"):
            raise ValueError(f"OPENRECORD_TEST_DATABASE={chosen!r}: use sqlite or postgresql")
        return [chosen]
    return ["sqlite", "postgresql"]


def _pg_admin() -> object:
    import psycopg

    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as err:
        message = f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {err}"
        if os.environ.get("CI") == "true" or os.environ.get("OPENRECORD_TEST_DATABASE"):
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def fresh_database(backend: str, folder: Path) -> Iterator[str]:
    """A new, empty database URL on `backend`, dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / f'test-{uuid.uuid4().hex[:8]}.sqlite'}"
        return
    import psycopg

    admin = _pg_admin()
    assert isinstance(admin, psycopg.Connection)
    name = f"openrecord_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
