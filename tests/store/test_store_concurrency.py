"""The Store contract under concurrency (races, locks) and for schema migrations and opening."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from openrecord.fhir.search_values import (
    IndexEntry,
    StringValue,
    TokenValue,
)
from openrecord.store import (
    SearchQuery,
    Store,
    StoredVersion,
    StringCriterion,
    VersionConflict,
    open_store,
)
from openrecord.store.schema import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS
from tests.databases import backends, fresh_database
from tests.store.helpers import (
    DAY,
    C,
    T,
    clock,
    found,
    ids,
    put,
)

# -- concurrency ---------------------------------------------------------------------


def conditional_create(store: Store, ident: str, pause: float = 0.05) -> bool:
    """POST with If-None-Exist: search, then create only if nothing matched."""
    query = SearchQuery("Patient", [C("identifier", "token", T("urn:sys", ident))])
    with store.write() as tx:
        tx.lock(f"Patient?identifier=urn:sys|{ident}")
        if tx.search(query).resources:
            return False
        time.sleep(pause)  # widen the race window
        v = StoredVersion("Patient", uuid.uuid4().hex, 1, next(clock), "POST", b"{}")
        tx.put(v, [IndexEntry("identifier", TokenValue("urn:sys", ident))])
    return True


def _count(store: Store, ident: str) -> int | None:
    q = SearchQuery("Patient", [C("identifier", "token", T("urn:sys", ident))], total=True)
    return store.search(q).total


def test_conditional_create_race_threads(store: Store) -> None:
    barrier = threading.Barrier(4)
    results: list[bool] = []

    def worker() -> None:
        barrier.wait()
        results.append(conditional_create(store, "42"))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [False, False, False, True]
    assert _count(store, "42") == 1


def _process_create(url: str, barrier: threading.Barrier, ident: str) -> None:
    store = open_store(url)
    try:
        barrier.wait(60)
        created = conditional_create(store, ident, pause=0.2)
    finally:
        store.close()
    raise SystemExit(0 if created else 3)


def test_conditional_create_race_processes(store: Store, store_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_process_create, args=(store_url, barrier, "7")) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert sorted(-1 if p.exitcode is None else p.exitcode for p in procs) == [0, 3, 3]
    assert _count(store, "7") == 1


def test_concurrent_create_of_one_id_conflicts(store: Store) -> None:
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def worker(n: int) -> None:
        barrier.wait()
        try:
            with store.write() as tx:
                tx.put(StoredVersion("Patient", "same", 1, next(clock), "PUT", str(n).encode()), [])
                time.sleep(0.1)
            outcomes.append("ok")
        except VersionConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["conflict", "ok"]
    assert store.history("Patient", "same").total == 1


def test_readers_do_not_wait_for_writers(store: Store) -> None:
    put(store, "Patient", "p1", ("name", StringValue("Old", "old")))
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with store.write() as tx:
            cur = tx.current("Patient", "p1")
            assert cur is not None
            tx.put(StoredVersion("Patient", "p1", 2, next(clock), "PUT", b"new"), [])
            tx.search(SearchQuery("Patient"))  # flushed: rows written and locked
            holding.set()
            release.wait(30)

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert holding.wait(30)
        started = time.monotonic()
        cur = store.read("Patient", "p1")
        assert cur is not None and cur.version == 1
        assert found(store, "Patient", C("name", "string", StringCriterion("old"))) == {"p1"}
        assert time.monotonic() - started < 2
    finally:
        release.set()
        t.join(30)
    cur = store.read("Patient", "p1")
    assert cur is not None and cur.version == 2


# -- schema ----------------------------------------------------------------------------


def _schema_versions(url: str) -> list[int]:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///") :]) as conn:
            return [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY 1")]
    import psycopg

    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY 1")]


def _latest(url: str) -> list[int]:
    migrations = SQLITE_MIGRATIONS if url.startswith("sqlite") else POSTGRES_MIGRATIONS
    return [m.version for m in migrations]


def test_reopen_is_idempotent(store_url: str) -> None:
    for _ in range(3):
        s = open_store(store_url)
        put(s, "Patient", "p1")
        s.close()
    assert _schema_versions(store_url) == _latest(store_url)
    s = open_store(store_url)
    try:
        assert ids(s.history("Patient", "p1").entries) == [f"Patient/p1/{n}" for n in (3, 2, 1)]
    finally:
        s.close()


@pytest.mark.parametrize("backend", backends())
def test_concurrent_first_open(backend: str, tmp_path: Path) -> None:
    with fresh_database(backend, tmp_path) as url:
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def opener() -> None:
            barrier.wait()
            try:
                open_store(url).close()
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=opener) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert _schema_versions(url) == _latest(url)


def test_open_store_urls(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        open_store("mysql://x")
    with pytest.raises(ValueError):
        open_store("sqlite:///")
    s = open_store(f"sqlite:///{tmp_path}/sub/dir/x.db")  # parents are created
    s.close()
    assert (tmp_path / "sub" / "dir" / "x.db").exists()


def test_since_uses_last_updated_not_wallclock(store: Store) -> None:
    now = datetime.now(UTC)
    old = int((now - timedelta(days=3)).timestamp() * 1e6)
    put(store, "Patient", "old", last_updated=old)
    put(store, "Patient", "new", last_updated=old + DAY * 2)
    assert ids(store.history(since=old + DAY).entries) == ["Patient/new/1"]


def test_sqlite_checkpoints_outside_the_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No checkpoint inside COMMIT (it would stall every waiting writer): write()
    copies the WAL back itself, after releasing the lock."""
    from openrecord.store import sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store, "_CHECKPOINT_FRAMES", 100)
    s = open_store(f"sqlite:///{tmp_path}/x.db")
    try:
        assert isinstance(s, sqlite_store.SqliteStore)
        conn = s.connection()
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        calls: list[bool] = []
        checkpoint = s._checkpoint

        def spy() -> None:
            calls.append(s._write_lock.locked())
            checkpoint()

        monkeypatch.setattr(s, "_checkpoint", spy)
        for i in range(8):
            put(s, "Patient", f"p{i}", ("name", StringValue("A", "a")))
            if s._checkpointer is not None:  # on a thread of its own: let it finish
                s._checkpointer.join(10)
        assert calls and not any(calls)  # ran, and never under the lock
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and frames == copied
        assert [v.id for v in s.iter_current("Patient")] == [f"p{i}" for i in range(8)]
    finally:
        s.close()
