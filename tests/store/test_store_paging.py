"""Keyset paging and `_total=estimate` at the Store level, on every backend."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from openrecord.fhir.search_values import NumberValue, StringValue, TokenValue
from openrecord.store import SearchQuery, SortKey, Store, sql_paging
from openrecord.store.base import InvalidCursor
from tests.store.helpers import C, T, put

TAG = ("_tag", TokenValue("urn:t", "page"))


def walk(store: Store, query: SearchQuery) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        query.cursor = cursor
        page = store.search(query)
        seen += [r.id for r in page.resources]
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


def tagged(count: int, sort: list[SortKey] | None = None) -> SearchQuery:
    return SearchQuery("Patient", [C("_tag", "token", T("urn:t", "page"))], sort or [], count)


def test_float_keys_survive_the_cursor(store: Store) -> None:
    # 0.1 + 0.2 != 0.3: the boundary value must come back bit for bit
    values = [0.30000000000000004, 0.3, 0.1, 0.3, 1e-300, 0.2]
    for i, v in enumerate(values):
        put(store, "RiskAssessment", f"r{i}", TAG, ("probability", NumberValue(v, v, v)))
    q = SearchQuery(
        "RiskAssessment",
        [C("_tag", "token", T("urn:t", "page"))],
        [SortKey("probability", "number")],
        1,
    )
    # ascending value, ties (0.3 twice) in creation order
    assert walk(store, q) == ["r4", "r2", "r5", "r1", "r3", "r0"]


def test_a_sort_key_nobody_had_keeps_cursors_valid(store: Store) -> None:
    for i in range(4):
        put(store, "Patient", f"p{i}", TAG)
    q = tagged(2, [SortKey("family", "string")])
    page = store.search(q)
    assert [r.id for r in page.resources] == ["p0", "p1"]
    # now one resource has a family name: it sorts first, before the boundary (not shown)
    put(store, "Patient", "p3", TAG, ("family", StringValue("zed", "zed")))
    q.cursor = page.next_cursor
    assert [r.id for r in store.search(q).resources] == ["p2"]


def test_estimate_is_exact_up_to_the_cap(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sql_paging, "ESTIMATE_CAP", 5)
    for i in range(8):
        put(store, "Patient", f"p{i}", TAG)
    q = tagged(2)
    q.total_estimate = True
    q.conditions.append(C("_id", "token", *(T(None, f"p{i}") for i in range(4))))
    assert store.search(q).total == 4
    q.conditions.pop()
    total = store.search(q).total
    if store.dialect.name == "sqlite":
        assert total is None  # beyond the cap SQLite has no estimate: no total
    else:
        assert total is not None and total > 5  # the planner's guess, never under the cap


def test_cursor_checks(store: Store) -> None:
    for i in range(3):
        put(store, "Patient", f"p{i}", TAG)
    cursor = store.search(tagged(1)).next_cursor
    assert cursor is not None
    other = SearchQuery("Patient", [C("_tag", "token", T("urn:t", "other"))], count=1)
    for q, bad in ((other, cursor), (tagged(1), cursor[:-2]), (tagged(1), "x.y")):
        q.cursor = bad
        with pytest.raises(InvalidCursor):
            store.search(q)


def test_fingerprint_is_the_same_in_every_process() -> None:
    """Workers run with different hash seeds; a cursor from one must work in another."""
    code = (
        "from openrecord.store import SearchQuery, SortKey;"
        "from openrecord.store.sql_paging import query_fingerprint;"
        "from tests.store.helpers import C, T;"
        "print(query_fingerprint(SearchQuery('Patient', [C('_tag', 'token', T('a', 'b'))],"
        " [SortKey('family', 'string', True)])))"
    )
    prints = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(prints) == 1
