"""State tables (non-FHIR rows) through `WriteTx.execute` and `Store.query`, per backend."""

from __future__ import annotations

import threading
import time

import pytest

from openrecord.store import Store, open_store


def test_state_rows_commit_with_the_transaction_and_roll_back_with_it(store: Store) -> None:
    # schema_version is a state table every database has; its rows are ours to read.
    versions = store.query("SELECT version FROM schema_version ORDER BY version")
    assert versions and versions[0] == (1,)
    with store.write() as tx:
        assert tx.execute("CREATE TABLE probe_state (k TEXT PRIMARY KEY, v BIGINT)") == []
        tx.execute("INSERT INTO probe_state (k, v) VALUES (?, ?)", ["a", 1])
        assert tx.execute("SELECT v FROM probe_state WHERE k = ?", ["a"]) == [(1,)]
    with pytest.raises(RuntimeError), store.write() as tx:
        tx.execute("UPDATE probe_state SET v = ? WHERE k = ?", [2, "a"])
        raise RuntimeError("abort")
    assert store.query("SELECT k, v FROM probe_state") == [("a", 1)]
    assert store.backend in ("sqlite", "postgresql")


def test_a_migration_numbered_below_the_newest_applied_one_still_runs(store_url: str) -> None:
    # Features land in any order: a database may have 11 applied and not 10.
    store = open_store(store_url)
    try:
        with store.write() as tx:
            tx.execute("DROP TABLE fhir_package")
            tx.execute("DELETE FROM schema_version WHERE version = ?", [10])
    finally:
        store.close()
    store = open_store(store_url)
    try:
        assert store.query("SELECT count(*) FROM fhir_package") == [(0,)]
        versions = [v for (v,) in store.query("SELECT version FROM schema_version")]
        assert 10 in versions and max(versions) >= 11
    finally:
        store.close()


def test_a_committed_notify_reaches_every_watcher_and_a_rollback_none(store: Store) -> None:
    seen: list[str] = []
    event = threading.Event()

    def changed() -> None:
        seen.append("changed")
        event.set()

    live = store.watch("openrecord_test_channel", changed)
    if store.backend == "sqlite":
        assert not live()  # nothing to listen to: callers look things up every time
        return
    deadline = time.monotonic() + 10
    while not live() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert live()
    event.clear()
    seen.clear()
    with pytest.raises(RuntimeError), store.write() as tx:
        tx.notify("openrecord_test_channel")
        raise RuntimeError("rolled back: no notification")
    assert not event.wait(0.5)
    with store.write() as tx:
        tx.notify("openrecord_test_channel")
    assert seen  # this process's watchers are told before write() returns
    time.sleep(0.5)  # and LISTEN's delivery of the same commit (at most once more)
    assert seen in (["changed"], ["changed", "changed"])
