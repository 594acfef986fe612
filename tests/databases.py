"""Fresh test databases on the backends this run covers.

`OPENRECORD_TEST_DATABASE=sqlite|postgresql` restricts the run to one backend (CI runs
the suite once per backend); unset, both run, and PostgreSQL is skipped when it is not
reachable — except under `CI=true`, where that is a failure.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["PG_ADMIN_URL", "backends", "drop_pending", "fresh_database"]

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


class _Dropper:
    """Drops finished test databases on a thread of its own.

    DROP DATABASE waits for a checkpoint (seconds on a busy machine); no test needs
    to wait for it, since every database has a new name. What is still queued when the
    test process ends is dropped then.
    """

    def __init__(self) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="drop-databases", daemon=True)
        self.thread.start()
        atexit.register(self.finish)

    def _run(self) -> None:
        import psycopg

        while (name := self.queue.get()) is not None:
            try:
                with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=10) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg.Error:
                pass  # left behind, as a crashed run would leave it: never a test failure
            finally:
                self.queue.task_done()

    def finish(self) -> None:
        self.queue.put(None)
        self.thread.join(600)


_dropper: _Dropper | None = None
_dropper_lock = threading.Lock()


def _drop_later(name: str) -> None:
    global _dropper
    with _dropper_lock:
        if _dropper is None:
            _dropper = _Dropper()
    _dropper.queue.put(name)


def drop_pending() -> None:
    """Wait until every finished test database is dropped (at the end of a session)."""
    if _dropper is not None:
        _dropper.queue.join()


@contextmanager
def fresh_database(backend: str, folder: Path) -> Iterator[str]:
    """A new, empty database URL on `backend`, dropped afterwards (PostgreSQL: in the
    background, see `_Dropper`; connections still open to it are closed by the drop)."""
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
        _drop_later(name)
