"""PostgreSQL write transactions racing each other on the same rows (the HTTP-level races
are in tests/server/test_concurrency.py). SQLite serializes its writers, so none of this
can happen there.

- A writer that locks a row another writer has just updated reads that new version
  (READ COMMITTED, whatever the database's default isolation).
- A deadlock between two writers ends one of them with `VersionConflict` — what the
  record service retries — not a database error.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest

from openrecord.store import StoredVersion, VersionConflict, open_store
from openrecord.store.base import Store
from tests.databases import backends, fresh_database
from tests.store.helpers import clock, put

pytestmark = pytest.mark.skipif(
    "postgresql" not in backends(), reason="PostgreSQL only: SQLite serializes writers"
)


def version(type: str, id: str, number: int) -> StoredVersion:
    data = orjson.dumps({"resourceType": type, "id": id, "meta": {"versionId": str(number)}})
    return StoredVersion(type, id, number, next(clock), "PUT", data)


@pytest.mark.parametrize("isolation", ["read committed", "repeatable read", "serializable"])
def test_locking_reads_the_version_committed_after_the_transaction_began(
    tmp_path: Path, isolation: str
) -> None:
    """T2 starts (its first statement runs), T1 updates the row and commits, then T2
    locks and reads the row: it must get version 2 — not miss the row, and not fail
    because its snapshot predates T1's commit."""
    with fresh_database("postgresql", tmp_path) as url:
        import psycopg

        with psycopg.connect(url, autocommit=True) as admin:
            name = url.rsplit("/", 1)[1]
            admin.execute(
                f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = '{isolation}'"
            )
        store = open_store(url)
        try:
            put(store, "Patient", "a")
            with store.write() as t2:
                t2.execute("SELECT count(*) FROM resource")  # T2's first statement
                with store.write() as t1:
                    current = t1.current("Patient", "a")
                    assert current is not None and current.version == 1
                    t1.put(version("Patient", "a", 2), [])
                current = t2.current("Patient", "a")
                assert current is not None and current.version == 2
                t2.put(version("Patient", "a", 3), [])
            stored = store.read("Patient", "a")
            assert stored is not None and stored.version == 3
        finally:
            store.close()


def waiting_for_a_lock(url: str) -> bool:
    """Whether a session of this database is blocked on a lock (pg_stat_activity)."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            (name,),
        ).fetchone()
    return row is not None and row[0] > 0


def test_a_writer_waiting_for_the_lock_reads_the_version_committed_meanwhile(
    tmp_path: Path,
) -> None:
    """T1 locks and updates the row; T2 asks for the row and waits for T1's lock; T1
    commits version 2. T2 must then see version 2 — not miss the row (which made it
    insert a duplicate and fail with a conflict: concurrent PUTs ending in 409)."""
    with fresh_database("postgresql", tmp_path) as url:
        store = open_store(url)
        try:
            put(store, "Patient", "a")
            seen: list[StoredVersion | None] = []
            with store.write() as t1:
                assert t1.current("Patient", "a") is not None  # T1 holds the lock

                def second() -> None:
                    with store.write() as t2:
                        current = t2.current("Patient", "a")
                        seen.append(current)
                        if current is not None:
                            t2.put(version("Patient", "a", current.version + 1), [])

                waiter = threading.Thread(target=second)
                waiter.start()
                deadline = time.monotonic() + 60
                while not waiting_for_a_lock(url):
                    assert time.monotonic() < deadline, "the second writer never waited"
                    time.sleep(0.01)
                t1.put(version("Patient", "a", 2), [])
            waiter.join(60)
            assert [v.version if v else None for v in seen] == [2]
            stored = store.read("Patient", "a")
            assert stored is not None and stored.version == 3
        finally:
            store.close()


def test_deadlock_between_two_writers_is_a_version_conflict(tmp_path: Path) -> None:
    with fresh_database("postgresql", tmp_path) as url:
        deadlock(open_store(url))


def deadlock(store: Store) -> None:
    """Two writers lock a and b in opposite orders; PostgreSQL aborts one of them."""
    try:
        a, b = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
        put(store, "Patient", a)
        put(store, "Patient", b)
        both_locked = threading.Barrier(2)
        outcome: dict[str, str] = {}

        def writer(name: str, first: str, second: str) -> None:
            try:
                with store.write() as tx:
                    tx.current("Patient", first)  # locks `first`
                    both_locked.wait(timeout=60)
                    current = tx.current("Patient", second)  # waits for the other: a cycle
                    assert current is not None
                    tx.put(version("Patient", second, current.version + 1), [])
                outcome[name] = "committed"
            except VersionConflict:
                outcome[name] = "conflict"
            except Exception as err:  # anything else is the failure this test looks for
                outcome[name] = type(err).__name__

        threads = [
            threading.Thread(target=writer, args=("one", a, b)),
            threading.Thread(target=writer, args=("two", b, a)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert sorted(outcome.values()) == ["committed", "conflict"], outcome
    finally:
        store.close()


def test_a_committed_notification_reaches_the_own_process_watchers_at_once(
    tmp_path: Path,
) -> None:
    """A Consent write notifies its channel; this process's watchers are called before
    `write()` returns (the LISTEN delivery comes later), so a cache relying on them is
    never stale for the next request here — and not for a rolled-back write."""
    from openrecord.store.base import written_channel

    with fresh_database("postgresql", tmp_path) as url:
        store = open_store(url)
        try:
            calls: list[float] = []
            live = store.watch(written_channel("Consent"), lambda: calls.append(1))
            deadline = time.monotonic() + 30
            while not live() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert live()
            calls.clear()  # going live may call it once
            with pytest.raises(RuntimeError), store.write() as tx:
                tx.put(version("Consent", "c", 1), [])
                raise RuntimeError("rolled back")
            assert calls == []
            with store.write() as tx:
                tx.put(version("Consent", "c", 1), [])
            assert calls, "the watcher was not told before write() returned"
            with store.write() as tx:
                tx.put(version("Patient", "p", 1), [])  # not an announced type
            seen = len(calls)
            time.sleep(0.2)
            assert len(calls) <= seen + 1  # the Consent's LISTEN delivery at most
        finally:
            store.close()
