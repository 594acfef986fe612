"""`$reindex`: re-extract the search index of current resources with today's parameters.

Needed after a custom SearchParameter is activated (resources written before it
have no rows for it) or retired, and after a change of the built-in extraction.
No new versions are written: only the index rows of each current version are
replaced. Work goes in batches — read a page of current resources, extract their
index outside any transaction, then replace their rows in one short write
transaction — so neither the write lock nor memory grows with the database.
A resource updated between the read and the write is skipped: its writer
indexed it with the same parameters.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from openrecord.fhir.search_contained import contained_entries
from openrecord.fhir.search_text import text_entries
from openrecord.fhir.search_values import IndexEntry
from openrecord.service import access
from openrecord.service.context import SecurityContext
from openrecord.service.records import RecordService
from openrecord.store.base import StoredVersion

__all__ = ["BATCH", "ReindexReport", "reindex", "report_parameters"]

BATCH = 500  # resources per write transaction


@dataclass(slots=True)
class ReindexReport:
    reindexed: Counter[str] = field(default_factory=Counter)  # per resource type
    skipped: int = 0  # changed by a concurrent write meanwhile
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.reindexed.values())


def reindex(
    records: RecordService,
    ctx: SecurityContext,
    types: Sequence[str] = (),
    *,
    batch: int = BATCH,
    progress: Callable[[int], None] | None = None,
) -> ReindexReport:
    """Reindex every current resource of `types` (all types when empty)."""
    for type in types:
        access.check(ctx, "operation", type)
        records.require_type(type)
    if not types:
        access.check(ctx, "operation", None)
    reached: Sequence[str | None] = types or [None]
    records.audit.catch_up_for(*reached)  # chained audit events: resources first
    started = time.perf_counter()
    report = ReindexReport()
    sources: Iterable[Iterable[StoredVersion]] = (
        [records.store.iter_current(t) for t in dict.fromkeys(types)]
        if types
        else [records.store.iter_current(None)]
    )
    for source in sources:
        pending: list[StoredVersion] = []
        for version in source:
            pending.append(version)
            if len(pending) >= batch:
                _flush(records, pending, report, progress)
                pending = []
        if pending:
            _flush(records, pending, report, progress)
    report.seconds = time.perf_counter() - started
    return report


def _flush(
    records: RecordService,
    versions: list[StoredVersion],
    report: ReindexReport,
    progress: Callable[[int], None] | None,
) -> None:
    indexer = records.params.sync().indexer
    items: list[tuple[StoredVersion, Sequence[IndexEntry]]] = []
    for v in versions:
        assert v.data is not None
        resource: dict[str, Any] = orjson.loads(v.data)
        index = indexer.extract(resource)
        index += contained_entries(resource, indexer)  # _contained (search_contained.py)
        items.append((v, [*index, *text_entries(resource)]))
    with records.store.write() as tx:
        done = tx.reindex(items)
    report.reindexed.update(v.type for v in done)
    report.skipped += len(items) - len(done)
    if progress is not None:
        progress(len(items))


def report_parameters(report: ReindexReport) -> dict[str, Any]:
    """The `$reindex` answer: totals, then one part per resource type."""
    params: list[dict[str, Any]] = [
        {"name": "reindexed", "valueInteger": report.total},
        {"name": "skipped", "valueInteger": report.skipped},
    ]
    for type, n in sorted(report.reindexed.items()):
        params.append(
            {
                "name": "type",
                "part": [
                    {"name": "type", "valueCode": type},
                    {"name": "reindexed", "valueInteger": n},
                ],
            }
        )
    return {"resourceType": "Parameters", "parameter": params}
