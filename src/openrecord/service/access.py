"""The one access-control decision point, called by the record service on every interaction.

A context is `unrestricted` (the REST API until the authorization server lands, the CLI)
or governed by its SMART scopes (`auth/scopes.py`). `check` answers whether the scopes
grant an interaction on a type at all (403 naming the missing scope). Patient-level
grants (`patient/…`, with `ctx.patient`) also limit *which* resources: the Patient
compartment of that patient. Searches get it as extra conditions (so paging, counts
and `_sort` stay right), single resources are checked against it, and what falls
outside answers 404, never 403, so that existence is not revealed. Granular scopes
(`patient/Observation.rs?category=…`) add their query as AND-ed conditions, parsed
by the same search parser as a request's.

Types outside the Patient compartment (Practitioner, Organization, Medication…) are
not reachable through patient-level grants: SMART 2.x leaves what such scopes cover
beyond the compartment to the server, and this one grants nothing it cannot tie to
the patient. Writes — single, conditional and Bundle entries alike — are decided
in `service/access_writes.py` with the same compartment, granular and consent rules;
operations need a user- or system-level grant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

import orjson

from openrecord.auth.scopes import Permission
from openrecord.fhir.outcome import FHIRError
from openrecord.fhir.search_chain import chained_types
from openrecord.fhir.search_query import parse_search
from openrecord.fhir.search_values import ReferenceValue
from openrecord.service import audit, consent
from openrecord.service.context import SecurityContext
from openrecord.store.base import StoredVersion
from openrecord.store.query import (
    AnyCondition,
    CompartmentFilter,
    Condition,
    HasCondition,
    ReferenceCriterion,
    SearchCondition,
    SearchQuery,
    TokenCriterion,
)

if TYPE_CHECKING:
    from openrecord.service.records import RecordService

__all__ = [
    "PERMISSION",
    "Interaction",
    "allows",
    "check",
    "check_chains",
    "check_consent",
    "compartment_member",
    "consent_conditions",
    "granular_conditions",
    "in_compartment",
    "leave_out_audit",
    "patient_of",
    "read_conditions",
    "reader",
    "resolve_me",
    "restrict_search",
    "visible",
    "visible_history",
]

Interaction = Literal[
    "read", "vread", "search", "history", "create", "update", "patch", "delete", "operation"
]

# The SMART permission each interaction needs. History lists versions, which reading
# covers; operations may change data ($reindex), so they need update rights.
PERMISSION: dict[str, Permission] = {
    "read": "r",
    "vread": "r",
    "history": "r",
    "search": "s",
    "create": "c",
    "update": "u",
    "patch": "u",
    "delete": "d",
    "operation": "u",
}

COMPARTMENT = "Patient"
READ_ONLY = "AuditEvent"  # written by service/audit.py only, never by a request
WRITES = frozenset({"create", "update", "patch", "delete"})


def _forbidden(message: str) -> FHIRError:
    return FHIRError.of(403, "forbidden", message)


def allows(ctx: SecurityContext, interaction: Interaction, resource_type: str | None) -> bool:
    """Whether the scopes grant `interaction` on `resource_type` (None: every type)."""
    if ctx.unrestricted:
        return True
    return ctx.policy.allowed(PERMISSION[interaction], resource_type or "*")


def check(ctx: SecurityContext, interaction: Interaction, resource_type: str | None) -> None:
    """Raise 403 unless `ctx` may perform `interaction` on `resource_type`."""
    if resource_type == READ_ONLY and interaction in WRITES:
        raise FHIRError.of(
            405,
            "not-supported",
            "AuditEvent is read-only: only the server writes its audit trail",
        )
    if ctx.unrestricted:
        return
    permission = PERMISSION[interaction]
    type = resource_type or "*"
    if not ctx.policy.allowed(permission, type):
        what = resource_type or "every type"
        raise _forbidden(
            f"{interaction} on {what} needs a scope granting {permission!r} on {type}"
            f" (e.g. patient/{type}.{permission} or system/{type}.{permission});"
            f" granted: {' '.join(sorted(ctx.scopes)) or 'none'}"
        )
    if interaction == "operation" and ctx.policy.level(permission, type) == "patient":
        raise _forbidden(
            f"operations on {resource_type or 'the server'} need a user or system scope"
        )
    if patient_of(ctx, permission, type) == "":
        raise _forbidden("patient-level scopes need a patient in the context")


def patient_of(ctx: SecurityContext, permission: Permission, type: str) -> str | None:
    """The patient whose compartment limits `permission` on `type`; None: no such
    limit; "" when the grant is patient-level but the context names no patient."""
    if ctx.unrestricted or ctx.policy.level(permission, type) != "patient":
        return None
    return ctx.patient or ""


def compartment_member(defs_compartments: dict[str, dict[str, tuple[str, ...]]], type: str) -> bool:
    return type == COMPARTMENT or type in defs_compartments.get(COMPARTMENT, {})


def _compartment_condition(records: RecordService, type: str, patient: str) -> SearchCondition:
    """`type`'s resources in the patient's compartment: referenced through one of the
    CompartmentDefinition's parameters, or the Patient itself."""
    links = records.defs.compartments.get(COMPARTMENT, {}).get(type, ())
    ref = (ReferenceCriterion(COMPARTMENT, patient),)
    options: list[SearchCondition] = [Condition(p, "reference", ref) for p in links]
    if type == COMPARTMENT:
        options.append(Condition("_id", "token", (TokenCriterion(None, patient),)))
    return options[0] if len(options) == 1 else AnyCondition(tuple(options))


def granular_conditions(
    records: RecordService, ctx: SecurityContext, permission: Permission, type: str
) -> list[SearchCondition]:
    """The granular scopes' queries as conditions: one query's are AND-ed; several
    queries (each of one parameter) become one OR. 403 when it cannot be enforced."""
    queries = ctx.policy.constraints(permission, type)
    if not queries:
        return []
    parsed = []
    for query in queries:
        try:
            result = parse_search(type, list(query), records.defs, records.tz)
        except FHIRError:
            result = None
        if result is None or result.unknown or not result.query.conditions:
            text = "&".join(f"{k}={v}" for k, v in query)
            raise _forbidden(f"the scope constraint ?{text} on {type} cannot be enforced")
        parsed.append(result.query.conditions)
    if len(parsed) == 1:
        return list(parsed[0])
    if any(len(conditions) != 1 for conditions in parsed):
        raise _forbidden(f"several granular scopes on {type} with multi-parameter queries")
    return [AnyCondition(tuple(conditions[0] for conditions in parsed))]


def read_conditions(
    records: RecordService, ctx: SecurityContext, permission: Permission, type: str
) -> list[SearchCondition] | None:
    """The conditions a `type` resource must meet for `permission`: [] for any
    resource, None for none (the type is out of the patient's reach)."""
    if ctx.unrestricted:
        return []
    if not ctx.policy.allowed(permission, type):
        return None
    patient = patient_of(ctx, permission, type)
    conditions = granular_conditions(records, ctx, permission, type)
    if patient is not None:
        if not patient or not compartment_member(records.defs.compartments, type):
            return None
        conditions.insert(0, _compartment_condition(records, type, patient))
    kept = consent_conditions(records, ctx, type, patient)
    if kept is None:
        return None
    return conditions + kept


# -- consent (service/consent.py) ----------------------------------------------------

MAX_CONSENT_EXCLUSIONS = 10_000  # ids one search leaves out for consents, at most


def _labels_not(labels: Iterable[tuple[str | None, str]]) -> Condition:
    """`_security:not=…`: none of these security labels."""
    values = tuple(TokenCriterion(system, code) for system, code in sorted(labels, key=str))
    return Condition("_security", "token", values, modifier="not")


def consent_conditions(
    records: RecordService, ctx: SecurityContext, type: str, patient: str | None
) -> list[SearchCondition] | None:
    """What the patients' consents add to a search of `type` by `ctx`: None when they
    deny it all (`patient`: the one patient a patient-level grant reaches). For
    contexts reaching every patient, the resources denied are left out by id."""
    if ctx.unrestricted or not compartment_member(records.defs.compartments, type):
        return []
    if patient is not None:
        denials = [
            d for d in consent.denials_for(records.store, ctx, [patient]) if d.covers_type(type)
        ]
        if any(not d.labels for d in denials):
            return None
        labels = {label for d in denials for label in d.labels}
        return [_labels_not(labels)] if labels else []
    excluded: list[str] = []
    for denial in consent.denials_for(records.store, ctx):
        if not denial.covers_type(type):
            continue
        wanted = [_compartment_condition(records, type, denial.patient)]
        if denial.labels:
            values = tuple(TokenCriterion(sys, code) for sys, code in denial.labels)
            wanted.append(Condition("_security", "token", values))
        query = SearchQuery(type, wanted, count=MAX_CONSENT_EXCLUSIONS + 1)
        excluded += [r.id for r in records.store.search(query).resources]
        if len(excluded) > MAX_CONSENT_EXCLUSIONS:
            raise _forbidden(f"too many {type} resources are withheld by consent here")
    if not excluded:
        return []
    ids = tuple(TokenCriterion(None, id) for id in dict.fromkeys(excluded))
    return [Condition("_id", "token", ids, modifier="not")]


def _consent_across_types(records: RecordService, ctx: SecurityContext, query: SearchQuery) -> None:
    """Consents in a search of several types by a context that reaches every patient:
    within one patient's compartment (`Patient/[id]/*`, `$everything`) their label
    denials become a `_security:not` condition; elsewhere the search is refused
    (per-type exclusions need one type at a time)."""
    denials = consent.denials_for(records.store, ctx)
    if not denials:
        return
    compartment = query.compartment
    if compartment is None or compartment.type != COMPARTMENT:
        raise _forbidden("while patients' consents apply, search one type at a time")
    check_consent(records, ctx, compartment.id)
    own = [d for d in denials if d.patient == compartment.id]
    if any(d.types for d in own):
        raise _forbidden("while the patient's consent applies, search one type at a time")
    if own:
        query.conditions.append(_labels_not({label for d in own for label in d.labels}))


def check_consent(records: RecordService, ctx: SecurityContext, patient: str) -> None:
    """403 when the patient's consent denies this app (or user) everything."""
    if ctx.unrestricted:
        return
    for denial in consent.denials_for(records.store, ctx, [patient]):
        if denial.everything:
            raise _forbidden(
                f"the consent of Patient/{patient} denies this app access to their record"
            )


def restrict_search(
    records: RecordService,
    ctx: SecurityContext,
    query: SearchQuery,
    types: tuple[str, ...],
) -> None:
    """Limit a search to what `ctx` may search (the types were checked already)."""
    if ctx.unrestricted:
        return
    if query.type is not None:
        patient = patient_of(ctx, "s", query.type)
        if patient:
            check_consent(records, ctx, patient)
        conditions = read_conditions(records, ctx, "s", query.type)
        if conditions is None:
            raise _forbidden(
                f"{query.type} is outside the Patient compartment:"
                " patient-level scopes do not reach it"
            )
        if conditions and query.contained != "false":
            # _contained tests conditions on contained resources, not on the container
            raise _forbidden("_contained searches need a user- or system-level scope")
        if patient and query.type == READ_ONLY:
            consent.check_patient_audit_search(query, patient)  # before ours are added
        query.conditions += conditions
        return
    searched = types or ("*",)
    if any(ctx.policy.constraints("s", t) for t in searched):
        raise _forbidden("granular scopes apply to searches of one type at a time")
    patients = {patient_of(ctx, "s", t) for t in searched}
    if patients == {None}:
        _consent_across_types(records, ctx, query)
        return
    if len(patients) > 1 or "" in patients:
        raise _forbidden("a search across types needs the same level of scope on each type")
    patient = patients.pop()
    assert patient is not None
    check_consent(records, ctx, patient)
    if READ_ONLY in types:
        consent.check_patient_audit_search(query, patient)
    denials = consent.denials_for(records.store, ctx, [patient])
    if any(d.types for d in denials):
        raise _forbidden("while the patient's consent applies, search one type at a time")
    if denials:
        query.conditions.append(_labels_not({label for d in denials for label in d.labels}))
    own = CompartmentFilter(COMPARTMENT, patient, ())
    if query.compartment is not None and (query.compartment.type, query.compartment.id) != (
        own.type,
        own.id,
    ):
        raise _forbidden("patient-level scopes reach only the patient's own compartment")
    members = records.defs.compartments.get(COMPARTMENT, {})
    if types:
        outside = [t for t in types if not compartment_member(records.defs.compartments, t)]
        if outside:
            raise _forbidden(f"{', '.join(outside)}: outside the Patient compartment")
        links = tuple((t, p) for t in types for p in members.get(t, ()))
    else:
        links = tuple((t, p) for t, params in members.items() for p in params)
    if query.compartment is None:
        query.compartment = CompartmentFilter(COMPARTMENT, patient, links)
        if not types:
            query.types = tuple(sorted({*members, COMPARTMENT}))


def resolve_me(ctx: SecurityContext, params: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """`patient=me` (and `patient=Patient/me`) name the context's patient — the launch
    patient, or the user when the user is a Patient — so that an app can ask for
    `AuditEvent?patient=me` without knowing the id. 400 when there is none."""
    out = []
    for key, value in params:
        if key.split(":", 1)[0] == "patient" and value in ("me", "Patient/me"):
            me = ctx.patient
            if me is None and ctx.user and ctx.user.startswith("Patient/"):
                me = ctx.user.removeprefix("Patient/")
            if not me:
                raise FHIRError.of(
                    400, "invalid", "patient=me needs a patient in the security context", key
                )
            value = f"Patient/{me}"
        out.append((key, value))
    return out


def check_chains(
    records: RecordService,
    ctx: SecurityContext,
    searched: tuple[str, ...],
    conditions: list[SearchCondition],
) -> None:
    """Chains and `_has` test conditions on other resources than those returned, and
    the store evaluates those inner conditions over every resource of their type
    (it has no way yet to AND the compartment into them). So a patient-level context
    could probe another patient's resources that its own refer to (or that refer to
    its own), and a context that consents restrict could probe what they hide. Such
    searches are refused (403), except the one form that cannot leave the record:
    `Patient?_has:Type:param:…` where `param` puts `Type` in the Patient compartment
    (every resource it finds refers to the patient through a compartment link)."""
    linked = chained_types(conditions)
    if ctx.unrestricted or not linked:
        return
    patient_level = any(patient_of(ctx, "s", t) is not None for t in (*searched, *linked) or ("*",))
    if patient_level and not all(_stays_home(records, searched, c) for c in conditions):
        raise _forbidden(
            "chained searches (and _has other than Patient?_has:Type:link:…) need a user-"
            " or system-level scope: their inner resources are not limited to the compartment"
        )
    members = [t for t in linked if compartment_member(records.defs.compartments, t)]
    if members and any(
        d.covers_type(t) for d in consent.denials_for(records.store, ctx) for t in members
    ):
        raise _forbidden("chained searches and _has are not available while consents apply")


def _stays_home(records: RecordService, searched: tuple[str, ...], c: SearchCondition) -> bool:
    """A condition whose inner resources are all in the searched patient's compartment."""
    if isinstance(c, Condition):
        return True
    if isinstance(c, AnyCondition):
        return all(_stays_home(records, searched, o) for o in c.options)
    if isinstance(c, HasCondition) and searched == (COMPARTMENT,):
        links = records.defs.compartments.get(COMPARTMENT, {}).get(c.type, ())
        return c.param in links and not chained_types([c.inner])
    return False


def leave_out_audit(records: RecordService, query: SearchQuery, named: tuple[str, ...]) -> None:
    """A search of every type (`GET [base]?…`, `Patient/[id]/*`) leaves AuditEvents out:
    the audit trail is about the record, not part of it (each such search would add
    to it). `_type=AuditEvent` or `AuditEvent?…` searches it."""
    if query.type is not None or READ_ONLY in named:
        return
    every = query.types or tuple(sorted(records.defs.resource_types))
    query.types = tuple(t for t in every if t != READ_ONLY)
    if query.compartment is not None:
        links = tuple(link for link in query.compartment.links if link[0] != READ_ONLY)
        query.compartment = replace(query.compartment, links=links)


def reader(
    records: RecordService, ctx: SecurityContext
) -> Callable[[str, str], StoredVersion | None]:
    """Read a current resource by type and id as `ctx` may (None otherwise): for the
    resources a search reads on the way (`_list`'s List)."""
    if ctx.unrestricted:
        return records.store.read

    def read(type: str, id: str) -> StoredVersion | None:
        found = records.store.read(type, id)
        return found if found is not None and visible(records, ctx, [found]) else None

    return read


def visible(
    records: RecordService, ctx: SecurityContext, versions: Iterable[StoredVersion]
) -> list[StoredVersion]:
    """The current `versions` that `ctx` may read, in their order (one store query
    per type: the same conditions a search would add)."""
    versions = list(versions)
    if ctx.unrestricted:
        return versions
    by_type: dict[str, list[str]] = {}
    for v in versions:  # deletions stay only where the type is open to the context
        by_type.setdefault(v.type, []).append(v.id)
    keep: set[tuple[str, str]] = set()
    for type, ids in by_type.items():
        conditions = read_conditions(records, ctx, "r", type)
        if conditions is None:
            continue
        if not conditions:
            keep.update((type, id) for id in ids)
            continue
        patient = patient_of(ctx, "r", type)
        if patient and len(conditions) == 1 and not ctx.policy.constraints("r", type):
            # The compartment alone: decided from the bodies at hand, by the same
            # parameters the index uses, without a query (most patient-app reads).
            keep.update(
                (v.type, v.id)
                for v in versions
                if v.type == type
                and v.data is not None
                and in_compartment(records, type, orjson.loads(v.data), patient)
            )
            continue
        wanted = Condition("_id", "token", tuple(TokenCriterion(None, id) for id in ids))
        query = SearchQuery(type, [wanted, *conditions], count=len(ids))
        keep.update((type, r.id) for r in records.store.search(query).resources)
    return [v for v in versions if (v.type, v.id) in keep]


def visible_history(
    records: RecordService, ctx: SecurityContext, entries: list[StoredVersion]
) -> list[StoredVersion]:
    """History entries `ctx` may read: each version in the compartment (when the
    grant is patient-level), and the resource itself readable now (granular scopes
    are checked on the current version)."""
    if ctx.unrestricted:
        return entries
    kept = []
    for v in entries:
        if not ctx.policy.allowed("r", v.type):
            continue
        patient = patient_of(ctx, "r", v.type)
        if patient is not None and (v.data is None or not _holds(records, v, patient)):
            continue
        kept.append(v)
    constrained = {v.type for v in kept if ctx.policy.constraints("r", v.type)}
    if constrained:
        current = [records.store.read(v.type, v.id) for v in kept if v.type in constrained]
        readable = {(c.type, c.id) for c in visible(records, ctx, (c for c in current if c))}
        kept = [v for v in kept if v.type not in constrained or (v.type, v.id) in readable]
    denials = consent.denials_for(records.store, ctx)
    if denials:
        kept = [v for v in kept if not _withheld(records, v, denials)]
    return kept


def _withheld(
    records: RecordService, version: StoredVersion, denials: list[consent.Denial]
) -> bool:
    """Whether consents withhold this version (its own labels, its patients)."""
    if version.data is None or not compartment_member(records.defs.compartments, version.type):
        return False
    patients = audit.patients_of(version)
    relevant = [d for d in denials if d.patient in patients]
    return bool(relevant) and consent.hidden_by(relevant, version.type, orjson.loads(version.data))


def _holds(records: RecordService, version: StoredVersion, patient: str) -> bool:
    assert version.data is not None
    return in_compartment(records, version.type, orjson.loads(version.data), patient)


def in_compartment(records: RecordService, type: str, body: dict[str, Any], patient: str) -> bool:
    """Whether a resource body (any version, not only the current one) is in the
    patient's compartment, by the same parameters the search index uses."""
    if type == COMPARTMENT and body.get("id") == patient:
        return True
    links = _links(records, type)
    if not links:
        return False
    return any(
        isinstance(e.value, ReferenceValue)
        and e.value.url is None
        and e.value.type == COMPARTMENT
        and e.value.id == patient
        for e in records.indexer.extract(body, only=links)
    )


def _links(records: RecordService, type: str) -> frozenset[str]:
    """The parameters that put a `type` resource in a patient's compartment."""
    return frozenset(records.defs.compartments.get(COMPARTMENT, {}).get(type, ()))
