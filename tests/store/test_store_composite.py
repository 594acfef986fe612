"""Composite conditions in the Store: component rows of one instance, joined on n.

Index entries are written directly (no extractor), so these pin the store's own part:
each composite instance's components are rows of their kinds' tables whose `n` follow
each other, and a composite condition matches only components of one instance.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from openrecord.fhir.search_values import (
    CompositeValue,
    DateValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
)
from openrecord.store import Store, UnsupportedSearch, open_store
from openrecord.store.query import (
    CompositeCriterion,
    Condition,
    Criterion,
    DateCriterion,
    NumberCriterion,
    QuantityCriterion,
    ReferenceCriterion,
    StringCriterion,
    TokenCriterion,
)
from openrecord.store.schema import SQLITE_MIGRATIONS
from tests.store.helpers import delete, found, put, us

TQ = ("token", "quantity")


def bp(code: str, value: float, unit: str = "mm[Hg]") -> CompositeValue:
    return CompositeValue(
        (
            TokenValue("http://loinc.org", code),
            QuantityValue(value, value - 0.5, value + 0.5, None, unit, unit),
        )
    )


def comp(param: str, kinds: tuple[str, ...], *values: tuple[Criterion, ...]) -> Condition:
    return Condition(
        param, "composite", tuple(CompositeCriterion(v) for v in values), component_kinds=kinds
    )


def gt(value: float) -> QuantityCriterion:
    return QuantityCriterion("gt", value, value - 0.5, value + 0.5, None, None)


def code(c: str, system: str | None = None) -> TokenCriterion:
    return TokenCriterion(system, c)


def test_components_of_one_instance(store: Store) -> None:
    # ordinary entries before, between and after the composites: n must still pair up
    put(
        store,
        "Observation",
        "high",
        ("code", TokenValue("http://loinc.org", "85354-9")),
        ("ccvq", bp("8480-6", 150)),
        ("status", TokenValue(None, "final")),
        ("ccvq", bp("8462-4", 90)),
        ("combo", bp("8480-6", 150)),
        ("value", QuantityValue(1, 0.5, 1.5, None, None, None)),
    )
    put(store, "Observation", "mixed", ("ccvq", bp("8480-6", 120)), ("ccvq", bp("8462-4", 150)))
    q = "ccvq"
    assert found(store, "Observation", comp(q, TQ, (code("8480-6"), gt(140)))) == {"high"}
    assert found(store, "Observation", comp(q, TQ, (code("8462-4"), gt(140)))) == {"mixed"}
    assert found(
        store, "Observation", comp(q, TQ, (code("8480-6", "http://loinc.org"), gt(100)))
    ) == {
        "high",
        "mixed",
    }
    # OR of values, AND of conditions
    either = comp(q, TQ, (code("8480-6"), gt(140)), (code("8462-4"), gt(140)))
    assert found(store, "Observation", either) == {"high", "mixed"}
    both = (comp(q, TQ, (code("8480-6"), gt(140))), comp(q, TQ, (code("8462-4"), gt(140))))
    assert found(store, "Observation", *both) == set()
    # another parameter's components are its own
    assert found(store, "Observation", comp("combo", TQ, (code("8462-4"), gt(10)))) == set()
    assert found(store, "Observation", comp("nowhere", TQ, (code("8480-6"), gt(10)))) == set()


def test_three_components_and_other_kinds(store: Store) -> None:
    seq = "coordinate"
    kinds = ("token", "number", "number")

    def window(chromosome: str, start: int, end: int) -> CompositeValue:
        return CompositeValue(
            (
                TokenValue(None, chromosome),
                NumberValue(start, start - 0.5, start + 0.5),
                NumberValue(end, end - 0.5, end + 0.5),
            )
        )

    put(store, "MolecularSequence", "s", (seq, window("1", 12, 13)), (seq, window("1", 100, 200)))

    def n(prefix: str, v: int) -> NumberCriterion:
        return NumberCriterion(prefix, v, v - 0.5, v + 0.5)  # type: ignore[arg-type]

    ms = "MolecularSequence"
    assert found(store, ms, comp(seq, kinds, (code("1"), n("ge", 100), n("le", 200)))) == {"s"}
    assert found(store, ms, comp(seq, kinds, (code("1"), n("ge", 100), n("le", 13)))) == set()
    assert found(store, ms, comp(seq, kinds, (code("2"), n("ge", 1), n("le", 300)))) == set()

    day = 86_400_000_000
    put(
        store,
        "Observation",
        "o",
        (
            "cvd",
            CompositeValue(
                (TokenValue(None, "x"), DateValue(us(2020, 5, 1), us(2020, 5, 1) + day - 1))
            ),
        ),
        ("cvs", CompositeValue((TokenValue(None, "x"), StringValue("Hello World", "hello world")))),
        (
            "rel",
            CompositeValue(
                (TokenValue(None, "replaces"), ReferenceValue("DocumentReference", "d1"))
            ),
        ),
    )
    td, ts, tr = ("token", "date"), ("token", "string"), ("token", "reference")
    may = DateCriterion("eq", us(2020, 5, 1), us(2020, 6, 1) - 1)
    assert found(store, "Observation", comp("cvd", td, (code("x"), may))) == {"o"}
    assert found(store, "Observation", comp("cvd", td, (code("y"), may))) == set()
    assert found(store, "Observation", comp("cvs", ts, (code("x"), StringCriterion("hello")))) == {
        "o"
    }
    assert (
        found(store, "Observation", comp("cvs", ts, (code("x"), StringCriterion("world")))) == set()
    )
    ref = ReferenceCriterion("DocumentReference", "d1")
    assert found(store, "Observation", comp("rel", tr, (code("replaces"), ref))) == {"o"}
    # a NUL cannot be stored, so it matches nothing (and never reaches the driver)
    assert (
        found(store, "Observation", comp("cvs", ts, (code("x\x00"), StringCriterion("h")))) == set()
    )


def test_missing_and_rewrites(store: Store) -> None:
    put(store, "Observation", "a", ("ccvq", bp("8480-6", 150)))
    put(store, "Observation", "b", ("code", TokenValue(None, "x")))
    missing_true = Condition("ccvq", "composite", (), "missing", True, TQ)
    missing_false = Condition("ccvq", "composite", (), "missing", False, TQ)
    assert found(store, "Observation", missing_true) == {"b"}
    assert found(store, "Observation", missing_false) == {"a"}
    # an update replaces the component rows, a delete drops them
    put(store, "Observation", "a", ("ccvq", bp("8480-6", 120)))
    assert found(store, "Observation", comp("ccvq", TQ, (code("8480-6"), gt(140)))) == set()
    assert found(store, "Observation", comp("ccvq", TQ, (code("8480-6"), gt(110)))) == {"a"}
    delete(store, "Observation", "a")
    assert found(store, "Observation", comp("ccvq", TQ, (code("8480-6"), gt(110)))) == set()
    assert found(store, "Observation", missing_false) == set()


def test_malformed_composite_conditions_raise(store: Store) -> None:
    put(store, "Observation", "a", ("ccvq", bp("8480-6", 150)))
    bad = (
        comp("ccvq", TQ, (code("8480-6"),)),  # one component of two
        comp("ccvq", (), (code("8480-6"), gt(1))),  # no component kinds
        Condition("ccvq", "composite", (code("8480-6"),), component_kinds=TQ),  # not composite
        Condition("ccvq", "composite", (), "exact", None, TQ),
    )
    for cond in bad:
        with pytest.raises(UnsupportedSearch):
            found(store, "Observation", cond)


def test_migration_2_drops_idx_composite_and_records_the_reindex(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY,"
        " description TEXT NOT NULL, applied_at INTEGER NOT NULL)"
    )
    for statement in SQLITE_MIGRATIONS[0].statements:  # a database of schema 1
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1, 'initial schema', 0)")
    conn.close()
    open_store(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "idx_composite" not in tables and "idx_token" in tables
    (description,) = conn.execute(
        "SELECT description FROM schema_version WHERE version = 2"
    ).fetchone()
    assert "reindex" in description
    conn.close()
