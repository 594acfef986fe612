"""The Store contract, run identically on every backend (`store` / `store_url` fixtures).

Search expectations are worked by hand from FHIR R4 search semantics as documented in
`openrecord.store.sql_search`.
"""

from __future__ import annotations

import itertools
import multiprocessing
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from openrecord.fhir.search_values import (
    CompositeValue,
    DateValue,
    IndexEntry,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    SearchValue,
    StringValue,
    TokenValue,
    UriValue,
)
from openrecord.store import (
    Condition,
    DateCriterion,
    NumberCriterion,
    QuantityCriterion,
    ReferenceCriterion,
    SearchQuery,
    SortKey,
    Store,
    StoredVersion,
    StringCriterion,
    TokenCriterion,
    UnsupportedSearch,
    UriCriterion,
    VersionConflict,
    open_store,
)
from openrecord.store.schema import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS
from tests.databases import backends, fresh_database

DAY = 86_400_000_000
_clock = itertools.count(1_600_000_000_000_000, 1_000_000)  # 2020-09-13, +1 s per write


def us(y: int, m: int, d: int, h: int = 0) -> int:
    return int(datetime(y, m, d, h, tzinfo=UTC).timestamp()) * 1_000_000


def day(y: int, m: int, d: int) -> DateValue:
    lo = us(y, m, d)
    return DateValue(lo, lo + DAY - 1)


def year(y: int) -> tuple[int, int]:
    return us(y, 1, 1), us(y + 1, 1, 1) - 1


def put(
    store: Store,
    type: str,
    id: str,
    *values: tuple[str, SearchValue],
    last_updated: int | None = None,
) -> StoredVersion:
    """Create or update `type/id` with index entries (param, value)."""
    with store.write() as tx:
        cur = tx.current(type, id)
        version = cur.version + 1 if cur is not None else 1
        data = orjson.dumps({"resourceType": type, "id": id, "meta": {"versionId": str(version)}})
        v = StoredVersion(
            type,
            id,
            version,
            last_updated if last_updated is not None else next(_clock),
            "PUT" if cur is not None else "POST",
            data,
        )
        tx.put(v, [IndexEntry(p, val) for p, val in values])
    return v


def delete(store: Store, type: str, id: str) -> None:
    with store.write() as tx:
        cur = tx.current(type, id)
        assert cur is not None
        tx.put(StoredVersion(type, id, cur.version + 1, next(_clock), "DELETE", None), [])


def C(param: str, kind: str, *values: object, modifier: str | None = None) -> Condition:
    return Condition(param, kind, tuple(values), modifier)  # type: ignore[arg-type]


def missing(param: str, kind: str, value: bool) -> Condition:
    return Condition(param, kind, (), "missing", value)  # type: ignore[arg-type]


def T(system: str | None = None, code: str | None = None) -> TokenCriterion:
    return TokenCriterion(system, code)


def find(store: Store, type: str | None, *conds: Condition, **kw: object) -> list[str]:
    """Ids in result order."""
    q = SearchQuery(type, list(conds), count=1000)
    for k, v in kw.items():
        setattr(q, k, v)
    return [r.id for r in store.search(q).resources]


def found(store: Store, type: str | None, *conds: Condition) -> set[str]:
    return set(find(store, type, *conds))


def ids(items: Iterable[StoredVersion]) -> list[str]:
    return [f"{v.type}/{v.id}/{v.version}" for v in items]


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
                tx.put(StoredVersion("Patient", "p1", 2, next(_clock), "PUT", b"{}"), [])
            tx.put(StoredVersion("Patient", "p1", version, next(_clock), "PUT", b"{}"), [])
            tx.put(StoredVersion("Patient", "other", 1, next(_clock), "POST", b"{}"), [])
    assert store.read("Patient", "p1") == before
    assert store.read("Patient", "other") is None
    assert found(store, "Patient", C("name", "string", StringCriterion("ann"))) == {"p1"}
    assert store.history().total == 1


def test_rollback_on_exception(store: Store) -> None:
    put(store, "Patient", "keep")
    with pytest.raises(RuntimeError, match="boom"), store.write() as tx:
        tx.put(
            StoredVersion("Patient", "p1", 1, next(_clock), "POST", b"{}"),
            [
                IndexEntry("name", StringValue("Ann", "ann")),
                IndexEntry("newparam", TokenValue("s", "c")),
            ],
        )
        page = tx.search(SearchQuery("Patient", [C("name", "string", StringCriterion("ann"))]))
        assert [r.id for r in page.resources] == ["p1"]  # flushed, visible inside
        tx.put(StoredVersion("Patient", "p2", 1, next(_clock), "POST", b"{}"), [])
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
            StoredVersion("Patient", "p1", 1, next(_clock), "POST", b"1"),
            [IndexEntry("name", StringValue("Ann", "ann"))],
        )
        cur = tx.current("Patient", "p1")
        assert cur is not None and cur.version == 1
        tx.put(
            StoredVersion("Patient", "p1", 2, next(_clock), "PUT", b"2"),
            [IndexEntry("name", StringValue("Bea", "bea"))],
        )
        assert found_in(tx, C("name", "string", StringCriterion("bea"))) == ["p1"]
        tx.put(
            StoredVersion("Patient", "p1", 3, next(_clock), "PUT", b"3"),
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
                StoredVersion(kind, f"r{i}", 1, next(_clock), "POST", b"{}"),
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


# -- search: one test per criterion kind ------------------------------------------------

LOINC = "http://loinc.org"


def test_token(store: Store) -> None:
    put(store, "Observation", "t1", ("code", TokenValue(LOINC, "1234", "Body Weight")))
    put(store, "Observation", "t2", ("code", TokenValue("http://snomed.info/sct", "1234")))
    put(store, "Observation", "t3", ("code", TokenValue(None, "1234")))
    put(store, "Observation", "t4", ("code", TokenValue(LOINC, "9999")))
    put(store, "Observation", "t5", ("status", TokenValue(None, "final")))
    put(store, "Observation", "t6", ("code", TokenValue(None, None, "Héart  rate")))
    obs = "Observation"
    assert found(store, obs, C("code", "token", T(None, "1234"))) == {"t1", "t2", "t3"}
    assert found(store, obs, C("code", "token", T(LOINC, "1234"))) == {"t1"}
    no_system = TokenCriterion(None, "1234", no_system=True)
    assert found(store, obs, C("code", "token", no_system)) == {"t3"}
    assert found(store, obs, C("code", "token", T(LOINC, None))) == {"t1", "t4"}
    assert found(store, obs, C("code", "token", T(LOINC, "1234"), modifier="not")) == {
        "t2",
        "t3",
        "t4",
        "t5",
        "t6",
    }
    text = "text"
    assert found(store, obs, C("code", "token", StringCriterion("body"), modifier=text)) == {"t1"}
    assert found(store, obs, C("code", "token", StringCriterion("heart r"), modifier=text)) == {
        "t6"
    }
    assert found(store, obs, C("code", "token", StringCriterion("weight"), modifier=text)) == set()
    assert found(store, obs, missing("code", "token", True)) == {"t5"}
    assert found(store, obs, missing("code", "token", False)) == {"t1", "t2", "t3", "t4", "t6"}
    assert found(store, obs, C("code", "token", T(LOINC, "9999"), no_system)) == {"t3", "t4"}
    assert found(store, obs, C("code", "token", T(None, "1234")), C("code", "token", T(LOINC))) == {
        "t1"
    }
    assert found(store, obs, C("code", "token", T("1234"))) == set()  # a system, no code
    assert found(store, obs, C("_id", "token", T(None, "t1"), T(None, "t3"))) == {"t1", "t3"}
    assert found(store, obs, C("_id", "token", T(None, "t1"), modifier="not")) == {
        "t2",
        "t3",
        "t4",
        "t5",
        "t6",
    }
    assert found(store, obs, missing("_id", "token", False)) == {f"t{i}" for i in range(1, 7)}
    assert found(store, obs, missing("_id", "token", True)) == set()
    with pytest.raises(UnsupportedSearch):
        find(store, obs, C("code", "token", T(LOINC, "1234"), modifier="below"))


def test_string(store: Store) -> None:
    names = {
        "s1": ["Müller"],
        "s2": ["Mueller"],
        "s3": ["Smith"],
        "s4": ["Anne Smith"],
        "s5": ["Zoë", "Mu"],
        "s6": ["50% off_x\\"],
        "s7": ["\U0001d518nicode"],
        "s8": ["Mv"],
    }
    norm = {"Müller": "muller", "Zoë": "zoe", "\U0001d518nicode": "\U0001d518nicode"}
    for rid, values in names.items():
        entries = [("name", StringValue(v, norm.get(v, v.lower()))) for v in values]
        put(store, "Patient", rid, *entries)

    def s(value: str, modifier: str | None = None, exact: str | None = None) -> set[str]:
        return found(
            store, "Patient", C("name", "string", StringCriterion(value, exact), modifier=modifier)
        )

    assert s("mu") == {"s1", "s2", "s5"}
    assert s("mul") == {"s1"}
    assert s("smi") == {"s3"}
    assert s("smi", "contains") == {"s3", "s4"}
    assert s("muller", "exact", "Müller") == {"s1"}
    assert s("muller", "exact", "müller") == set()
    assert s("\U0001d518") == {"s7"}
    assert s("50%") == {"s6"}
    assert s("%") == set() and s("_") == set()
    assert s("%", "contains") == {"s6"} and s("_x\\", "contains") == {"s6"}
    assert s("'; DROP TABLE resource; --") == set()
    assert s("\x00") == set() and s("a\x00", "contains") == set()
    assert s("") == set(names)
    assert found(
        store, "Patient", C("name", "string", StringCriterion("zoe"), StringCriterion("smith"))
    ) == {"s3", "s5"}
    assert store.read("Patient", "s1") is not None


DATES = {
    "d1": [day(2020, 1, 1)],
    "d2": [day(2020, 6, 15)],
    "d3": [day(2021, 1, 1)],
    "d4": [DateValue(us(2019, 12, 31, 12), us(2020, 1, 2, 12))],
    "d5": [day(2019, 5, 1)],
    "d6": [day(2018, 1, 1), day(2022, 1, 1)],
}


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("eq", "d1 d2"),
        ("ne", "d3 d4 d5 d6"),
        ("gt", "d3 d6"),
        ("lt", "d4 d5 d6"),
        ("ge", "d1 d2 d3 d6"),
        ("le", "d1 d2 d4 d5 d6"),
        ("sa", "d3 d6"),
        ("eb", "d5 d6"),
    ],
)
def test_date_prefixes(store: Store, prefix: str, expected: str) -> None:
    for rid, values in DATES.items():
        put(store, "Observation", rid, *[("date", v) for v in values])
    put(store, "Observation", "none")
    crit = DateCriterion(prefix, *year(2020))  # type: ignore[arg-type]
    assert found(store, "Observation", C("date", "date", crit)) == set(expected.split())


def test_date_day_and_approximately(store: Store) -> None:
    for rid, values in DATES.items():
        put(store, "Observation", rid, *[("date", v) for v in values])
    d = day(2020, 1, 1)
    assert found(store, "Observation", C("date", "date", DateCriterion("eq", d.low, d.high))) == {
        "d1"
    }
    # ap: the search range widened by 10% of its distance from now (about 10 days here)
    now = time.time_ns() // 1000
    p = (now - 100 * DAY) // DAY * DAY
    at = {"a1": 0, "a2": 5, "a3": 30, "a4": -15, "a5": -8}
    for rid, offset in at.items():
        put(
            store,
            "Encounter",
            rid,
            ("date", DateValue(p + offset * DAY, p + (offset + 1) * DAY - 1)),
        )
    ap = DateCriterion("ap", p, p + DAY - 1)
    assert found(store, "Encounter", C("date", "date", ap)) == {"a1", "a2", "a5"}


def test_last_updated(store: Store) -> None:
    put(store, "Patient", "l1", last_updated=us(2020, 1, 1, 10))
    put(store, "Patient", "l2", last_updated=us(2020, 6, 1))
    put(store, "Patient", "l3", last_updated=us(2021, 3, 1))
    june = day(2020, 6, 1)

    def lu(prefix: str, lo: int, hi: int) -> set[str]:
        return found(store, "Patient", C("_lastUpdated", "date", DateCriterion(prefix, lo, hi)))  # type: ignore[arg-type]

    assert lu("eq", *year(2020)) == {"l1", "l2"}
    assert lu("ne", *year(2020)) == {"l3"}
    assert lu("gt", *year(2020)) == {"l3"}
    assert lu("lt", june.low, june.high) == {"l1"}
    assert lu("ge", june.low, june.high) == {"l2", "l3"}
    assert lu("le", june.low, june.high) == {"l1", "l2"}
    assert lu("sa", *year(2020)) == {"l3"}
    assert lu("eb", june.low, june.high) == {"l1"}


NUMBERS = {
    "n1": (100, 99.5, 100.5),
    "n2": (100.4, 100.35, 100.45),
    "n3": (101, 100.5, 101.5),
    "n4": (99, 98.5, 99.5),
    "n5": (100, 50, 150),  # "1e2"
    "n6": (120, 119.5, 120.5),
    "n7": (50, 49.5, 50.5),
}


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("eq", "n1 n2 n5"),
        ("ne", "n3 n4 n6 n7"),
        ("gt", "n3 n6"),
        ("lt", "n4 n7"),
        ("ge", "n1 n2 n3 n5 n6"),
        ("le", "n1 n2 n4 n5 n7"),
        ("sa", "n6"),
        ("eb", "n7"),
        ("ap", "n1 n2 n3 n4 n5"),
    ],
)
def test_number_prefixes(store: Store, prefix: str, expected: str) -> None:
    for rid, (v, lo, hi) in NUMBERS.items():
        put(store, "RiskAssessment", rid, ("probability", NumberValue(v, lo, hi)))
    crit = NumberCriterion(prefix, 100, 99.5, 100.5)  # type: ignore[arg-type]
    assert found(store, "RiskAssessment", C("probability", "number", crit)) == set(expected.split())


def test_open_ranges(store: Store) -> None:
    """Range values with an open end are stored as infinities (JSON has none: PG path)."""
    inf = float("inf")
    put(store, "RiskAssessment", "open-hi", ("probability", NumberValue(200, 150, inf)))
    put(store, "RiskAssessment", "open-lo", ("probability", NumberValue(5, -inf, 10)))

    def n(prefix: str) -> set[str]:
        crit = NumberCriterion(prefix, 100, 99.5, 100.5)  # type: ignore[arg-type]
        return found(store, "RiskAssessment", C("probability", "number", crit))

    assert n("gt") == n("sa") == {"open-hi"}
    assert n("lt") == n("eb") == {"open-lo"}
    assert n("eq") == set()


def test_quantity(store: Store) -> None:
    ucum = "http://unitsofmeasure.org"
    put(
        store,
        "Observation",
        "q1",
        ("value-quantity", QuantityValue(5.4, 5.35, 5.45, ucum, "mg", "mg")),
    )
    put(
        store,
        "Observation",
        "q2",
        ("value-quantity", QuantityValue(5.4, 5.35, 5.45, ucum, "g", "g")),
    )
    put(
        store,
        "Observation",
        "q3",
        ("value-quantity", QuantityValue(5.4, 5.35, 5.45, None, None, "mg")),
    )
    put(
        store,
        "Observation",
        "q4",
        ("value-quantity", QuantityValue(6, 5.5, 6.5, ucum, "mg", "milligram")),
    )

    def q(
        prefix: str, value: float, low: float, high: float, system: str | None, code: str | None
    ) -> set[str]:
        crit = QuantityCriterion(prefix, value, low, high, system, code)  # type: ignore[arg-type]
        return found(store, "Observation", C("value-quantity", "quantity", crit))

    assert q("eq", 5.4, 5.35, 5.45, ucum, "mg") == {"q1"}
    assert q("eq", 5.4, 5.35, 5.45, None, "mg") == {"q1", "q3"}
    assert q("eq", 5.4, 5.35, 5.45, None, None) == {"q1", "q2", "q3"}
    assert q("eq", 5.4, 5.35, 5.45, ucum, None) == {"q1", "q2"}
    assert q("gt", 5.4, 5.35, 5.45, ucum, "mg") == {"q4"}
    assert q("le", 6, 5.5, 6.5, None, "mg") == {"q1", "q3", "q4"}
    assert q("ne", 5.4, 5.35, 5.45, None, None) == {"q4"}


def test_reference(store: Store) -> None:
    q_url = "http://ex.org/Questionnaire/q"
    put(store, "Observation", "r1", ("subject", ReferenceValue("Patient", "p1")))
    put(store, "Observation", "r2", ("subject", ReferenceValue("Group", "p1")))
    put(store, "Observation", "r3", ("subject", ReferenceValue("Patient", "p2")))
    abs_url = "http://ex.org/fhir/Patient/p9"
    put(store, "Observation", "r4", ("subject", ReferenceValue("Patient", "p9", abs_url)))
    put(store, "Observation", "r5", ("instantiates", ReferenceValue(None, None, q_url, "1.0")))
    put(store, "Observation", "r6", ("instantiates", ReferenceValue(None, None, q_url, "2.0")))
    put(store, "Observation", "r7", ("instantiates", ReferenceValue(None, None, q_url + "-other")))
    put(store, "Observation", "r8", ("subject", TokenValue("urn:mrn", "123")))

    def r(
        *crits: ReferenceCriterion, param: str = "subject", modifier: str | None = None
    ) -> set[str]:
        return found(store, "Observation", C(param, "reference", *crits, modifier=modifier))

    R = ReferenceCriterion
    assert r(R("Patient", "p1")) == {"r1"}
    assert r(R(None, "p1")) == {"r1", "r2"}
    assert r(R(None, "p1"), modifier="Patient") == {"r1"}
    assert r(R("Patient", "p1"), modifier="Group") == set()
    assert r(R("Patient", "p9")) == {"r4"}
    assert r(R("Patient", "p9", abs_url)) == {"r4"}
    assert r(R("Patient", "p9", "http://elsewhere/fhir/Patient/p9")) == set()
    assert r(R("Patient", "p1"), R("Patient", "p2")) == {"r1", "r3"}
    assert r(R("Questionnaire", "q", q_url), param="instantiates") == {"r5", "r6"}
    assert r(R("Questionnaire", "q", q_url, "1.0"), param="instantiates") == {"r5"}
    assert r(R(None, None, q_url), param="instantiates", modifier="below") == {"r5", "r6", "r7"}
    assert r(R(None, None, q_url), param="instantiates", modifier="above") == {"r5", "r6"}
    ident = C("subject", "reference", T("urn:mrn", "123"), modifier="identifier")
    assert found(store, "Observation", ident) == {"r8"}
    assert found(store, "Observation", missing("subject", "reference", True)) == {"r5", "r6", "r7"}


def test_uri(store: Store) -> None:
    base = "http://acme.org/fhir/ValueSet/123"
    put(store, "ValueSet", "u1", ("url", UriValue(base)))
    put(store, "ValueSet", "u2", ("url", UriValue(base + "/_history/5")))
    put(store, "ValueSet", "u3", ("url", UriValue("http://acme.org/other")))

    def u(value: str, modifier: str | None = None) -> set[str]:
        return found(store, "ValueSet", C("url", "uri", UriCriterion(value), modifier=modifier))

    assert u(base) == {"u1"}
    assert u("http://acme.org/fhir/", "below") == {"u1", "u2"}
    assert u(base + "/_history/5", "above") == {"u1", "u2"}
    assert u(base, "above") == {"u1"}
    assert u("http://acme.org/fhir/ValueSet/12") == set()


def test_missing_and_unknown_params(store: Store) -> None:
    put(store, "Patient", "a", ("birthdate", day(1980, 1, 1)), ("name", StringValue("A", "a")))
    put(store, "Patient", "b", ("general-practitioner", ReferenceValue("Practitioner", "x")))
    put(store, "Patient", "c")
    pat = "Patient"
    assert found(store, pat, missing("birthdate", "date", True)) == {"b", "c"}
    assert found(store, pat, missing("birthdate", "date", False)) == {"a"}
    assert found(store, pat, missing("name", "string", False)) == {"a"}
    assert found(store, pat, missing("general-practitioner", "reference", False)) == {"b"}
    # a parameter no resource of this type was ever indexed with
    assert found(store, pat, C("never", "token", T(None, "x"))) == set()
    assert found(store, pat, C("never", "token", T(None, "x"), modifier="not")) == {"a", "b", "c"}
    assert found(store, pat, missing("never", "token", True)) == {"a", "b", "c"}
    assert found(store, pat, missing("never", "token", False)) == set()
    assert found(store, "Observation", missing("name", "string", True)) == set()


def test_and_or_and_system_search(store: Store) -> None:
    put(
        store,
        "Patient",
        "p1",
        ("_tag", TokenValue("t", "a")),
        ("gender", TokenValue(None, "female")),
    )
    put(
        store, "Patient", "p2", ("_tag", TokenValue("t", "b")), ("gender", TokenValue(None, "male"))
    )
    put(store, "Observation", "o1", ("_tag", TokenValue("t", "a")))
    put(store, "Observation", "o2", ("_tag", TokenValue("t", "b")))
    put(store, "Observation", "o3", ("_tag", TokenValue("t", "a")))
    delete(store, "Observation", "o3")
    tag_a = C("_tag", "token", T("t", "a"))
    assert found(store, None, tag_a) == {"p1", "o1"}
    assert found(store, None, C("_tag", "token", T("t", "a"), T("t", "b"))) == {
        "p1",
        "p2",
        "o1",
        "o2",
    }
    assert found(store, "Patient", tag_a, C("gender", "token", T(None, "female"))) == {"p1"}
    assert found(store, "Patient", tag_a, C("gender", "token", T(None, "male"))) == set()
    assert found(store, None, C("gender", "token", T(None, "male"))) == {"p2"}
    assert found(store, None) == {"p1", "p2", "o1", "o2"}
    assert found(store, None, missing("gender", "token", True)) == {"o1", "o2"}


def test_sort(store: Store) -> None:
    put(store, "Observation", "a", ("date", day(2020, 5, 1)), ("date", day(2020, 9, 1)))
    put(store, "Observation", "b", ("date", day(2020, 7, 1)), ("code", TokenValue(None, "x")))
    put(store, "Observation", "c", ("date", day(2020, 1, 1)), ("date", day(2020, 8, 1)))
    put(store, "Observation", "d", ("code", TokenValue(None, "a")))
    obs = "Observation"
    assert find(store, obs, sort=[SortKey("date", "date")]) == ["c", "a", "b", "d"]
    assert find(store, obs, sort=[SortKey("date", "date", True)]) == ["a", "c", "b", "d"]
    assert find(store, obs, sort=[SortKey("_id", "token", True)]) == ["d", "c", "b", "a"]
    assert find(store, obs, sort=[SortKey("_lastUpdated", "date", True)]) == ["d", "c", "b", "a"]
    assert find(store, obs, sort=[SortKey("code", "token"), SortKey("_id", "token")]) == [
        "d",
        "b",
        "a",
        "c",
    ]
    assert find(store, obs, sort=[SortKey("never", "string")]) == ["a", "b", "c", "d"]
    # ties keep insertion order, whatever the direction
    for rid in ("t3", "t1", "t2"):
        put(store, "Patient", rid, ("name", StringValue("Same", "same")))
    assert find(store, "Patient", sort=[SortKey("name", "string")]) == ["t3", "t1", "t2"]
    assert find(store, "Patient", sort=[SortKey("name", "string", True)]) == ["t3", "t1", "t2"]
    assert find(store, "Patient") == ["t3", "t1", "t2"]  # default: insertion order


def test_paging_and_total(store: Store) -> None:
    for i in range(25):
        put(store, "Patient", f"p{i:02}", ("_tag", TokenValue("t", "x")))
    q = SearchQuery("Patient", [C("_tag", "token", T("t", "x"))], count=10, offset=20, total=True)
    page = store.search(q)
    assert [r.id for r in page.resources] == [f"p{i}" for i in range(20, 25)] and page.total == 25
    q.total = False
    assert store.search(q).total is None
    q.count, q.offset, q.total = 0, 0, True
    page = store.search(q)
    assert page.resources == [] and page.total == 25
    assert store.search(SearchQuery("Patient", count=3)).resources[0].data is not None


def test_unsupported_searches_raise(store: Store) -> None:
    for cond in (
        C("name", "string", StringCriterion("a"), modifier="text"),
        C("date", "date", DateCriterion("eq", 1, 2), modifier="not"),
        C("url", "uri", UriCriterion("x"), modifier="contains"),
        C("subject", "reference", ReferenceCriterion("Patient", "1"), modifier="below"),
        C("x", "composite", T("a")),
    ):
        with pytest.raises(UnsupportedSearch):
            store.search(SearchQuery("Patient", [cond]))


# -- concurrency ---------------------------------------------------------------------


def conditional_create(store: Store, ident: str, pause: float = 0.05) -> bool:
    """POST with If-None-Exist: search, then create only if nothing matched."""
    query = SearchQuery("Patient", [C("identifier", "token", T("urn:sys", ident))])
    with store.write() as tx:
        tx.lock(f"Patient?identifier=urn:sys|{ident}")
        if tx.search(query).resources:
            return False
        time.sleep(pause)  # widen the race window
        v = StoredVersion("Patient", uuid.uuid4().hex, 1, next(_clock), "POST", b"{}")
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
                tx.put(
                    StoredVersion("Patient", "same", 1, next(_clock), "PUT", str(n).encode()), []
                )
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
            tx.put(StoredVersion("Patient", "p1", 2, next(_clock), "PUT", b"new"), [])
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


def test_since_uses_last_updated_not_wall_clock(store: Store) -> None:
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

        def spy(c: sqlite3.Connection) -> None:
            calls.append(s._write_lock.locked())
            checkpoint(c)

        monkeypatch.setattr(s, "_checkpoint", spy)
        for i in range(8):
            put(s, "Patient", f"p{i}", ("name", StringValue("A", "a")))
        assert calls and not any(calls)  # ran, and never under the lock
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and frames == copied
        assert [v.id for v in s.iter_current("Patient")] == [f"p{i}" for i in range(8)]
    finally:
        s.close()
