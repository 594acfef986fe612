"""Builders and search shorthands shared by the Store contract tests."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import UTC, datetime

import orjson

from openrecord.fhir.search_values import (
    DateValue,
    IndexEntry,
    SearchValue,
)
from openrecord.store import (
    Condition,
    SearchQuery,
    Store,
    StoredVersion,
    TokenCriterion,
)

__all__ = [
    "DAY",
    "C",
    "T",
    "clock",
    "day",
    "delete",
    "find",
    "found",
    "ids",
    "missing",
    "put",
    "us",
    "year",
]

DAY = 86_400_000_000
clock = itertools.count(1_600_000_000_000_000, 1_000_000)  # 2020-09-13, +1 s per write


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
            last_updated if last_updated is not None else next(clock),
            "PUT" if cur is not None else "POST",
            data,
        )
        tx.put(v, [IndexEntry(p, val) for p, val in values])
    return v


def delete(store: Store, type: str, id: str) -> None:
    with store.write() as tx:
        cur = tx.current(type, id)
        assert cur is not None
        tx.put(StoredVersion(type, id, cur.version + 1, next(clock), "DELETE", None), [])


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
