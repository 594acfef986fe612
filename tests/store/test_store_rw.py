"""The Store contract for reads, writes, transactions and history, on every backend."""

from __future__ import annotations

import pytest

from openrecord.fhir.search_values import (
    CompositeValue,
    IndexEntry,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)
from openrecord.store import (
    Condition,
    NumberCriterion,
    SearchQuery,
    Store,
    StoredVersion,
    StringCriterion,
    VersionConflict,
)
from tests.store.helpers import (
    C,
    T,
    clock,
    delete,
    found,
    ids,
    missing,
    put,
    us,
)

# -- reads, writes, history ----------------------------------------------------------


def test_put_read_vread(store: Store) -> None:
    assert store.read("Patient", "p1") is None
    v1 = put(store, "Patient", "p1", ("name", StringValue("Ann", "ann")))
    got = store.read("Patient", "p1")
    assert got is not None
    assert (got.version, got.method, got.data, got.last_updated) == (
        1,
        "POST",
        v1.data,
        v1.last_updated,
    )
    assert got.seq > 0 and not got.deleted
    v2 = put(store, "Patient", "p1", ("name", StringValue("Bea", "bea")))
    cur = store.read("Patient", "p1")
    assert cur is not None and (cur.version, cur.data, cur.method) == (2, v2.data, "PUT")
    assert cur.seq > got.seq
    old = store.vread("Patient", "p1", 1)
    assert old is not None and old.data == v1.data and old.seq == got.seq
    assert store.vread("Patient", "p1", 3) is None
    assert store.vread("Patient", "nope", 1) is None
    assert store.read("Observation", "p1") is None
    # only the current version is indexed
    assert found(store, "Patient", C("name", "string", StringCriterion("bea"))) == {"p1"}
    assert found(store, "Patient", C("name", "string", StringCriterion("ann"))) == set()


def test_delete_and_recreate(store: Store) -> None:
    put(store, "Patient", "p1", ("name", StringValue("Ann", "ann")))
    put(store, "Patient", "p2", ("name", StringValue("Ann", "ann")))
    delete(store, "Patient", "p1")
    gone = store.read("Patient", "p1")
    assert gone is not None and gone.deleted and gone.method == "DELETE" and gone.version == 2
    assert store.vread("Patient", "p1", 1) is not None
    assert found(store, "Patient", C("name", "string", StringCriterion("ann"))) == {"p2"}
    assert found(store, "Patient") == {"p2"}
    assert found(store, "Patient", missing("name", "string", True)) == set()
    assert [v.id for v in store.iter_current()] == ["p2"]
    put(store, "Patient", "p1", ("name", StringValue("Ann", "ann")))
    assert found(store, "Patient", C("name", "string", StringCriterion("ann"))) == {"p1", "p2"}
    assert ids(store.history("Patient", "p1").entries) == [f"Patient/p1/{n}" for n in (3, 2, 1)]


def test_history_levels(store: Store) -> None:
    put(store, "Patient", "a")
    put(store, "Observation", "c")
    put(store, "Patient", "a")
    put(store, "Patient", "b")
    put(store, "Observation", "c")
    delete(store, "Patient", "a")
    inst = store.history("Patient", "a")
    assert ids(inst.entries) == ["Patient/a/3", "Patient/a/2", "Patient/a/1"]
    assert inst.total == 3 and inst.entries[0].deleted and inst.entries[0].method == "DELETE"
    typ = store.history("Patient")
    assert ids(typ.entries) == ["Patient/a/3", "Patient/b/1", "Patient/a/2", "Patient/a/1"]
    system = store.history()
    assert ids(system.entries) == [
        "Patient/a/3",
        "Observation/c/2",
        "Patient/b/1",
        "Patient/a/2",
        "Observation/c/1",
        "Patient/a/1",
    ]
    seqs = [v.seq for v in system.entries]
    assert seqs == sorted(seqs, reverse=True) and system.snapshot == seqs[0]
    assert system.total == 6
    assert store.history("Patient", "zzz").entries == []
    assert store.history("Patient", total=False).total is None
    with pytest.raises(ValueError):
        store.history(None, "a")


def test_history_since_at_until_paging(store: Store) -> None:
    t = [us(2021, 1, d) for d in range(1, 8)]
    put(store, "Patient", "a", last_updated=t[0])
    put(store, "Patient", "b", last_updated=t[1])
    put(store, "Patient", "a", last_updated=t[2])
    put(store, "Patient", "b", last_updated=t[3])
    put(store, "Patient", "a", last_updated=t[4])
    since = store.history(since=t[2])
    assert ids(since.entries) == ["Patient/a/3", "Patient/b/2", "Patient/a/2"]
    assert since.total == 3
    assert ids(store.history("Patient", "a", since=t[3]).entries) == ["Patient/a/3"]
    # at: the version of each resource that was current at that instant
    assert ids(store.history(at=t[2]).entries) == ["Patient/a/2", "Patient/b/1"]
    assert ids(store.history(at=t[2] - 1).entries) == ["Patient/b/1", "Patient/a/1"]
    assert ids(store.history("Patient", "b", at=t[4]).entries) == ["Patient/b/2"]
    assert store.history(at=t[0] - 1).entries == []
    # paging: a snapshot keeps offsets stable while others write
    page1 = store.history(count=2)
    assert ids(page1.entries) == ["Patient/a/3", "Patient/b/2"] and page1.total == 5
    put(store, "Patient", "c")
    put(store, "Patient", "a")
    page2 = store.history(count=2, offset=2, until=page1.snapshot)
    assert ids(page2.entries) == ["Patient/a/2", "Patient/b/1"]
    assert page2.total == 5 and page2.snapshot == page1.snapshot
    page3 = store.history(count=2, offset=4, until=page1.snapshot)
    assert ids(page3.entries) == ["Patient/a/1"]
    assert store.history(count=0).entries == [] and store.history(count=0).total == 7


def test_version_conflict_leaves_nothing(store: Store) -> None:
    put(store, "Patient", "p1", ("name", StringValue("Ann", "ann")))
    before = store.read("Patient", "p1")
    for version in (1, 2):
        with pytest.raises(VersionConflict), store.write() as tx:
            # no current(): the writer believes it is creating version 1, then 2 twice
            if version == 2:
                tx.put(StoredVersion("Patient", "p1", 2, next(clock), "PUT", b"{}"), [])
            tx.put(StoredVersion("Patient", "p1", version, next(clock), "PUT", b"{}"), [])
            tx.put(StoredVersion("Patient", "other", 1, next(clock), "POST", b"{}"), [])
    assert store.read("Patient", "p1") == before
    assert store.read("Patient", "other") is None
    assert found(store, "Patient", C("name", "string", StringCriterion("ann"))) == {"p1"}
    assert store.history().total == 1


def test_rollback_on_exception(store: Store) -> None:
    put(store, "Patient", "keep")
    with pytest.raises(RuntimeError, match="boom"), store.write() as tx:
        tx.put(
            StoredVersion("Patient", "p1", 1, next(clock), "POST", b"{}"),
            [
                IndexEntry("name", StringValue("Ann", "ann")),
                IndexEntry("newparam", TokenValue("s", "c")),
            ],
        )
        page = tx.search(SearchQuery("Patient", [C("name", "string", StringCriterion("ann"))]))
        assert [r.id for r in page.resources] == ["p1"]  # flushed, visible inside
        tx.put(StoredVersion("Patient", "p2", 1, next(clock), "POST", b"{}"), [])
        raise RuntimeError("boom")
    assert store.read("Patient", "p1") is None and store.read("Patient", "p2") is None
    assert ids(store.history().entries) == ["Patient/keep/1"]
    assert found(store, "Patient", C("name", "string", StringCriterion("ann"))) == set()
    assert found(store, "Patient", C("newparam", "token", T("s", "c"))) == set()
    put(store, "Patient", "p3", ("newparam", TokenValue("s", "c")))
    assert found(store, "Patient", C("newparam", "token", T("s", "c"))) == {"p3"}


def test_several_versions_in_one_transaction(store: Store) -> None:
    with store.write() as tx:
        assert tx.current("Patient", "p1") is None
        tx.put(
            StoredVersion("Patient", "p1", 1, next(clock), "POST", b"1"),
            [IndexEntry("name", StringValue("Ann", "ann"))],
        )
        cur = tx.current("Patient", "p1")
        assert cur is not None and cur.version == 1
        tx.put(
            StoredVersion("Patient", "p1", 2, next(clock), "PUT", b"2"),
            [IndexEntry("name", StringValue("Bea", "bea"))],
        )
        assert found_in(tx, C("name", "string", StringCriterion("bea"))) == ["p1"]
        tx.put(
            StoredVersion("Patient", "p1", 3, next(clock), "PUT", b"3"),
            [IndexEntry("name", StringValue("Cid", "cid"))],
        )
        cur = tx.current("Patient", "p1")
        assert cur is not None and cur.version == 3
    got = store.read("Patient", "p1")
    assert got is not None and got.data == b"3"
    assert ids(store.history("Patient", "p1").entries) == [f"Patient/p1/{n}" for n in (3, 2, 1)]
    assert found(store, "Patient", C("name", "string", StringCriterion("cid"))) == {"p1"}
    assert found(store, "Patient", C("name", "string", StringCriterion("bea"))) == set()


def found_in(tx: object, *conds: Condition) -> list[str]:
    from openrecord.store import WriteTx

    assert isinstance(tx, WriteTx)
    return [r.id for r in tx.search(SearchQuery("Patient", list(conds))).resources]


def test_bulk_transaction_and_iter_current(store: Store) -> None:
    n = 1234  # more than one flush and more than two iter_current pages
    with store.write() as tx:
        for i in range(n):
            kind = "Patient" if i % 2 else "Observation"
            tx.put(
                StoredVersion(kind, f"r{i}", 1, next(clock), "POST", b"{}"),
                [
                    IndexEntry("_tag", TokenValue("t", "bulk")),
                    IndexEntry("identifier", TokenValue("s", str(i))),
                ],
            )
    page = store.search(SearchQuery(None, [C("_tag", "token", T("t", "bulk"))], total=True))
    assert page.total == n
    assert found(store, "Observation", C("identifier", "token", T("s", "1000"))) == {"r1000"}
    every = list(store.iter_current())
    assert len(every) == n and len({(v.type, v.id) for v in every}) == n
    assert len(list(store.iter_current("Patient"))) == n // 2


def test_index_value_kinds_round_trip(store: Store) -> None:
    """Every SearchValue kind is accepted, including composites and long values."""
    long = "x" * 3000
    put(
        store,
        "Observation",
        "o1",
        (
            "combo",
            CompositeValue((TokenValue("s", "c"), QuantityValue(1, 0.5, 1.5, "u", "mg", "mg"))),
        ),
        ("note", StringValue(long, long)),
        ("code", TokenValue("s", long, long)),
        ("url", UriValue("http://x/" + long)),
        ("subject", ReferenceValue("Patient", "p1", "http://x/" + long, "1")),
        ("n", NumberValue(3, 2.5, 3.5)),
    )
    assert found(store, "Observation", C("note", "string", StringCriterion(long))) == {"o1"}
    assert found(store, "Observation", C("code", "token", T(None, long))) == {"o1"}
    assert found(store, "Observation", C("n", "number", NumberCriterion("eq", 3, 2.5, 3.5))) == {
        "o1"
    }
