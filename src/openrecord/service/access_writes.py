"""Access control for writes: the same rules for single writes, conditional writes and
every entry of a batch or transaction Bundle (service/access.py decides reads).

A write by a patient-level grant must leave the resource in the patient's compartment
(403 otherwise), and may only touch a resource that is in it now (404 otherwise, as
for reads: existence is not revealed). Granular scopes (`patient/Observation.cu?
category=vital-signs`) must match the written resource, evaluated in memory by the
same search parameters the index uses. Conditional criteria (`If-None-Exist`,
`PUT/DELETE Type?criteria`, conditional references in a transaction) are searched
with the conditions a search by the same grant would get, so that they never reveal
or touch another patient's resources.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import orjson

from openrecord.fhir.outcome import FHIRError
from openrecord.fhir.search_values import (
    IndexEntry,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)
from openrecord.service import access, audit
from openrecord.service.access import PERMISSION, Interaction
from openrecord.service.context import SecurityContext
from openrecord.store.base import StoredVersion
from openrecord.store.query import (
    AnyCondition,
    Condition,
    Criterion,
    ReferenceCriterion,
    SearchCondition,
    StringCriterion,
    TokenCriterion,
    UriCriterion,
)

if TYPE_CHECKING:
    from openrecord.service.records import RecordService

__all__ = ["check_write", "match_conditions", "matches", "reference_conditions"]


def _forbidden(message: str) -> FHIRError:
    return FHIRError.of(403, "forbidden", message)


def _limited(ctx: SecurityContext, interaction: Interaction, type: str) -> bool:
    """Whether a compartment or a granular query limits `interaction` on `type`."""
    permission = PERMISSION[interaction]
    return access.patient_of(ctx, permission, type) is not None or bool(
        ctx.policy.constraints(permission, type)
    )


def _patient_consenting(
    records: RecordService, ctx: SecurityContext, interaction: Interaction, type: str
) -> str | None:
    """The patient whose compartment limits the write (None: no compartment), after
    checking their consents do not deny `ctx` everything; 403 without a patient."""
    patient = access.patient_of(ctx, PERMISSION[interaction], type)
    if patient == "":
        raise _forbidden("patient-level scopes need a patient in the context")
    if patient:
        access.check_consent(records, ctx, patient)
    return patient


def check_write(
    records: RecordService,
    ctx: SecurityContext,
    interaction: Interaction,
    type: str,
    before: StoredVersion | None,
    after: dict[str, Any] | None,
) -> None:
    """Whether `ctx` may change `before` (the current version, 404 when outside its
    reach) into `after` (the new content, 403 when outside); either may be None."""
    if ctx.unrestricted or not _limited(ctx, interaction, type):
        return
    permission = PERMISSION[interaction]
    patient = _patient_consenting(records, ctx, interaction, type)
    granular = access.granular_conditions(records, ctx, permission, type)
    if before is not None and before.data is not None:
        body = orjson.loads(before.data)
        outside = bool(patient) and not access.in_compartment(records, type, body, patient or "")
        if outside or (granular and not records.may_read(ctx, before)):
            audit.touch(before)  # audited as a refusal, with whose record it was
            raise FHIRError.of(404, "not-found", f"{type}/{before.id} is not known")
        if granular and not matches(records, type, body, granular):
            audit.touch(before)
            raise _forbidden(
                f"{type}/{before.id} does not match the scope's query for {interaction}"
            )
    if after is None:
        return
    if patient and not access.in_compartment(records, type, after, patient):
        raise _forbidden(
            f"the {type} would not be in the compartment of Patient/{patient}:"
            " patient-level scopes may only write the patient's own record"
        )
    if granular and not matches(records, type, after, granular):
        queries = " or ".join(
            "?" + "&".join(f"{k}={v}" for k, v in q)
            for q in ctx.policy.constraints(permission, type)
        )
        raise _forbidden(f"the {type} does not match the scope's query {queries}")


def match_conditions(
    records: RecordService, ctx: SecurityContext, interaction: Interaction, type: str
) -> list[SearchCondition]:
    """The conditions a conditional write's criteria (`If-None-Exist`, `Type?criteria`)
    are AND-ed with: those a search by the write's grant would get (compartment,
    granular query, consent), so that no match can be another patient's resource."""
    if ctx.unrestricted or not _limited(ctx, interaction, type):
        return []
    permission = PERMISSION[interaction]
    _patient_consenting(records, ctx, interaction, type)
    conditions = access.read_conditions(records, ctx, permission, type)
    if conditions is None:
        raise _forbidden(
            f"{type} is outside the Patient compartment: patient-level scopes do not reach it"
        )
    return conditions


def reference_conditions(
    records: RecordService, ctx: SecurityContext, type: str
) -> list[SearchCondition]:
    """The conditions a conditional reference (`Type?criteria` inside a transaction) is
    searched with: a search of `type` by `ctx`. A context without a user- or
    system-level search grant on `type` sees only what it may search (403 when none)."""
    if ctx.unrestricted:
        return []
    open_search = ctx.policy.allowed("s", type) and not _limited(ctx, "search", type)
    if open_search:
        return []
    patient = access.patient_of(ctx, "s", type)
    if patient:
        access.check_consent(records, ctx, patient)
    conditions = access.read_conditions(records, ctx, "s", type)
    if conditions is None:
        raise _forbidden(
            f"a conditional reference to {type} needs a scope that may search it there"
        )
    return conditions


# -- granular queries, evaluated on a resource in memory -----------------------------


def matches(
    records: RecordService, type: str, body: dict[str, Any], conditions: list[SearchCondition]
) -> bool:
    """Whether `body` meets every condition (a granular scope's query), by the search
    index's own extraction. 403 for a condition this cannot evaluate."""
    params = frozenset(_params(conditions))
    entries = records.indexer.extract({**body, "resourceType": type}, only=params)
    by_param: dict[str, list[IndexEntry]] = {}
    for e in entries:
        by_param.setdefault(e.param, []).append(e)
    return all(_meets(c, body, by_param) for c in conditions)


def _params(conditions: Iterable[SearchCondition]) -> Iterator[str]:
    for c in conditions:
        if isinstance(c, Condition):
            yield c.param
        elif isinstance(c, AnyCondition):
            yield from _params(c.options)
        else:
            raise _forbidden("a granular scope with chains or _has cannot be checked on a write")


def _meets(c: SearchCondition, body: dict[str, Any], by_param: dict[str, list[IndexEntry]]) -> bool:
    if isinstance(c, AnyCondition):
        return any(_meets(o, body, by_param) for o in c.options)
    assert isinstance(c, Condition)
    values: list[object]
    if c.param == "_id":
        values = [TokenValue(None, body.get("id"))] if body.get("id") else []
    else:
        values = [e.value for e in by_param.get(c.param, ())]
    if c.missing is not None:
        return not values if c.missing else bool(values)
    if c.modifier == "not" and c.kind == "token":
        return not any(_value_meets(c, None, v, x) for v in c.values for x in values)
    return any(_value_meets(c, c.modifier, v, x) for v in c.values for x in values)


def _value_meets(c: Condition, modifier: str | None, v: Criterion, x: object) -> bool:
    """One criterion against one indexed value, as the store's SQL would decide it."""
    if c.kind == "token" and modifier is None and isinstance(v, TokenCriterion):
        if not isinstance(x, TokenValue):
            return False
        if v.code is not None and x.code != v.code:
            return False
        if v.no_system:
            return x.system is None
        return v.system is None or x.system == v.system
    if c.kind == "string" and isinstance(v, StringCriterion) and isinstance(x, StringValue):
        if modifier is None:
            return x.normalized.startswith(v.normalized)
        if modifier == "exact":
            exact = v.exact if v.exact is not None else v.normalized
            return x.normalized == v.normalized and x.value == exact
    if c.kind == "uri" and modifier is None and isinstance(v, UriCriterion):
        return isinstance(x, UriValue) and x.value == v.value
    if c.kind == "reference" and isinstance(v, ReferenceCriterion):
        if not isinstance(x, ReferenceValue):
            return False
        rtype = v.type
        if modifier is not None and modifier[:1].isupper():
            rtype = modifier
        elif modifier is not None:
            raise _unenforceable(c)
        if v.url is not None:
            return x.url == v.url and (v.version is None or x.version == v.version)
        return x.url is None and x.id == v.id and (rtype is None or x.type == rtype)
    raise _unenforceable(c)


def _unenforceable(c: Condition) -> FHIRError:
    what = f"{c.param}:{c.modifier}" if c.modifier else c.param
    return _forbidden(f"the granular scope condition on {what} cannot be checked on a write")
