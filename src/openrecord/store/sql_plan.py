"""Which condition drives a search: the most selective first.

A search is a conjunction of conditions, each a set of rids from an index table.
SQLite plans without statistics, and left alone it materializes every `rid IN (…)`
subquery in full — for `code=X&value-quantity=gt150` that is every quantity above
150 of any observation, tens of thousands of rows, to keep the few hundred of one
code. So one condition, the one likely to match fewest resources, is written as
the `IN (…)` that drives the query, and every other positive condition as a
correlated `EXISTS` that checks a candidate's own index rows through the (rid, n)
primary key: the cost follows the smallest set, not the largest. PostgreSQL turns
both forms into semi-joins and chooses with its statistics; the form does not
hurt it.

The ranking is by shape, from what each kind of criterion can match: an id or an
exact code or reference names few resources, a prefix more, a range or a negation
possibly all of them. Between conditions of the same rank, a bounded count of the
index rows each matches (an index-only scan of at most 1,000 rows, then 20,000 if they all reach it) decides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from openrecord.store.query import Condition, SearchCondition, TokenCriterion

__all__ = ["NEVER_DRIVES", "PROBE_LIMITS", "driver", "rank"]

NEVER_DRIVES = 9
PROBE_LIMITS = (1000, 20_000)  # index rows a planner probe counts, then counts again


def rank(c: SearchCondition) -> int:
    """Lower is more selective: 0 names resources, 1 exact values, 2 prefixes and
    chains, 3 ranges, NEVER_DRIVES negations (their complement is large)."""
    if not isinstance(c, Condition):
        return 2  # chains, _has: selective in their inner condition, but a join away
    if c.missing is not None or c.modifier in ("missing", "not"):
        return NEVER_DRIVES
    if c.param in ("_id", "_list"):
        return 0
    if c.param in ("_text", "_content"):
        return 1
    if c.kind == "token":
        if c.modifier == "text" or any(
            isinstance(v, TokenCriterion) and v.code is None for v in c.values
        ):
            return 2  # text prefix, or a whole code system
        return 1
    if c.kind in ("reference", "composite"):
        return 1
    if c.kind == "uri":
        return 1 if c.modifier is None else 2
    if c.kind == "string":
        return {"exact": 1, "contains": 3}.get(c.modifier or "", 2)
    return 3  # date, number, quantity, _lastUpdated: ranges


def driver(
    conditions: Sequence[SearchCondition],
    estimate: Callable[[SearchCondition, int], int | None] | None = None,
) -> int | None:
    """The index of the condition to drive the query; None when none should.

    Among conditions of the best rank, `estimate(condition, limit)` (a count of the
    index rows each matches, up to `limit`) picks the smallest: `status=final&code=X`
    drives from the code. Counts that reach the first limit are counted again, further.
    """
    ranks = [rank(c) for c in conditions]
    if not ranks or min(ranks) == NEVER_DRIVES:
        return None
    best = [i for i, r in enumerate(ranks) if r == min(ranks)]
    if len(best) == 1 or estimate is None:
        return best[0]
    for limit in PROBE_LIMITS:
        counts = {i: n for i in best if (n := estimate(conditions[i], limit)) is not None}
        if not counts:
            return best[0]
        smallest = min(counts.values())
        if smallest < limit or len(counts) == 1:
            return min(counts, key=lambda i: (counts[i], i))
        best = list(counts)  # all at the limit: count those further
    return best[0]
