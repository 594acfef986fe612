"""State tables (non-FHIR rows) through `WriteTx.execute` and `Store.query`, per backend."""

from __future__ import annotations

import pytest

from openrecord.store import Store


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
