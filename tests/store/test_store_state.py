"""State tables (non-FHIR rows) through `WriteTx.execute` and `Store.query`, per backend."""

from __future__ import annotations

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
