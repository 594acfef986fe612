"""Absolute references to this server's own base are local references.

`Observation?subject=https://host/fhir/Patient/1` must find Observations whose subject
is `Patient/1` (search.html#reference: a relative reference matches when it resolves
to the same URL). The base depends on the request (host, proxy), so the parsed query is
rewritten once the base is known, chains and `_has` included.
"""

from __future__ import annotations

from dataclasses import replace

from openrecord.store.query import (
    AnyCondition,
    ChainCondition,
    Condition,
    Criterion,
    HasCondition,
    ReferenceCriterion,
    SearchCondition,
)

__all__ = ["localize"]


def localize(conditions: list[SearchCondition], base: str) -> list[SearchCondition]:
    """`conditions` with every reference criterion under `base` made local."""
    prefix = base.rstrip("/") + "/"
    return [_condition(c, prefix) for c in conditions]


def _condition(c: SearchCondition, prefix: str) -> SearchCondition:
    if isinstance(c, Condition):
        if c.kind != "reference" or c.modifier in ("above", "below", "identifier"):
            return c
        values = tuple(_criterion(v, prefix) for v in c.values)
        return c if values == c.values else replace(c, values=values)
    if isinstance(c, ChainCondition | HasCondition):
        return replace(c, inner=_condition(c.inner, prefix))
    if isinstance(c, AnyCondition):
        return replace(c, options=tuple(_condition(o, prefix) for o in c.options))
    return c


def _criterion(v: Criterion, prefix: str) -> Criterion:
    if not isinstance(v, ReferenceCriterion) or v.url is None or not v.url.startswith(prefix):
        return v
    if v.type is None or v.id is None or v.url[len(prefix) :].split("/")[:2] != [v.type, v.id]:
        return v  # not Type/id right under the base: some other URL
    return ReferenceCriterion(v.type, v.id, None, v.version)
