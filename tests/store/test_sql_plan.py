"""The planner's choice of the condition that drives a search (store/sql_plan.py)."""

from __future__ import annotations

from openrecord.store.query import (
    ChainCondition,
    Condition,
    DateCriterion,
    SearchCondition,
    StringCriterion,
    TokenCriterion,
)
from openrecord.store.sql_plan import NEVER_DRIVES, driver, rank

CODE = Condition("code", "token", (TokenCriterion("http://loinc.org", "8302-2"),))
STATUS = Condition("status", "token", (TokenCriterion(None, "final"),))
DATE = Condition("date", "date", (DateCriterion("ge", 0, 10),))
NAME = Condition("name", "string", (StringCriterion("pet"),))
NOT_CODE = Condition("code", "token", (TokenCriterion(None, "x"),), modifier="not")
MISSING = Condition("code", "token", (), modifier="missing", missing=True)
ID = Condition("_id", "token", (TokenCriterion(None, "1"),))
CHAIN = ChainCondition("subject", ("Patient",), NAME)


def test_ranks_follow_what_a_criterion_can_match() -> None:
    assert rank(ID) < rank(CODE) < rank(NAME) < rank(DATE) < rank(NOT_CODE)
    assert rank(CHAIN) == rank(NAME)
    assert rank(NOT_CODE) == rank(MISSING) == NEVER_DRIVES
    system_only = Condition("code", "token", (TokenCriterion("http://loinc.org", None),))
    assert rank(system_only) > rank(CODE)


def test_the_most_selective_shape_drives() -> None:
    assert driver([DATE, CODE]) == 1
    assert driver([NAME, DATE, ID]) == 2
    assert driver([NOT_CODE, DATE]) == 1
    assert driver([NOT_CODE, MISSING]) is None  # negations never drive
    assert driver([]) is None


def test_counts_break_ties_and_are_counted_further_at_the_limit() -> None:
    calls: list[tuple[str, int]] = []
    rows = {"status": 46_000, "code": 3_672, "category": 30_000}

    def estimate(c: SearchCondition, limit: int) -> int | None:
        assert isinstance(c, Condition)
        calls.append((c.param, limit))
        return min(rows[c.param], limit)

    category = Condition("category", "token", (TokenCriterion(None, "vital-signs"),))
    # all three reach the first limit (1,000): counted again up to 20,000, where
    # only code stays below it
    assert driver([STATUS, category, CODE], estimate) == 2
    assert [limit for _, limit in calls] == [1000, 1000, 1000, 20_000, 20_000, 20_000]
    calls.clear()
    rows["code"] = 12
    assert driver([STATUS, CODE], estimate) == 1
    assert calls == [("status", 1000), ("code", 1000)]  # settled at the first limit
    # conditions that cannot be counted: the first of the best rank
    assert driver([STATUS, CODE], lambda c, limit: None) == 0
