"""Patient privacy consents (FHIR R4 `Consent`, scope `patient-privacy`) as access rules.

A patient (or the operator, for them) records who may not see what:

- **deny an app**: a `deny` provision whose `actor.reference` identifies the client,
  `{"identifier": {"system": "urn:openrecord:client", "value": "<client_id>"}}` —
  that app reaches nothing of this patient (403 for its patient-level searches, 404
  for reads, and the patient's resources are left out of its wider searches);
- **deny categories**: a `deny` provision with `securityLabel`s (e.g. v3-ActCode `PSY`,
  `ETH`, `HIV`, `SUD`, or v3-Confidentiality `R`/`V`) — resources whose `meta.security`
  carries one of them are hidden from everyone but the patient themself (a context
  whose user is `Patient/<id>`) and the operator; with an actor too, from that actor
  only. `provision.class` (resource types, http://hl7.org/fhir/resource-types) narrows
  a denial to those types.

Actors are apps (`urn:openrecord:client` identifiers), users (`urn:openrecord:user`
identifiers, or a reference equal to the user, e.g. `Practitioner/7`). A nested
provision is an exception to its parent: a `permit` with an actor inside a `deny`
lets that actor through. Elements this server does not evaluate (`purpose`, `action`,
`code`, `data`, `dataPeriod`) are ignored, which makes a denial wider, never narrower.
Only `active` consents count, and a provision only within its `period`.

The rules of every patient are loaded once per change of the Consent type's
generation (one indexed lookup per interaction, as service/search_params.py does), so
a Consent written by any worker applies to the next request everywhere.

The same privacy rule governs what a patient sees of the audit trail: an AuditEvent
about several patients is shown to one of them redacted to their own part, and what
was redacted cannot be searched for (`redacted_for`, `check_patient_audit_search`).
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import orjson

from openrecord.fhir.outcome import FHIRError
from openrecord.service.clock import now_micros, parse_instant
from openrecord.service.context import SecurityContext
from openrecord.store.base import Store, StoredVersion, written_channel
from openrecord.store.query import Condition, ReferenceCriterion, SearchQuery

__all__ = [
    "CLIENT_SYSTEM",
    "PATIENTS_DETAIL",
    "ConsentRules",
    "Denial",
    "Rule",
    "check_patient_audit_search",
    "denials_for",
    "hidden_by",
    "redacted_for",
    "rules_of",
    "watching",
]

T = TypeVar("T")

CLIENT_SYSTEM = "urn:openrecord:client"
USER_SYSTEM = "urn:openrecord:user"
_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
_RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"

Label = tuple[str | None, str]  # (system, code) of a meta.security coding


@dataclass(frozen=True, slots=True)
class Actor:
    client: str | None = None
    user: str | None = None  # a user id or a reference such as Practitioner/7

    def matches(self, ctx: SecurityContext) -> bool:
        if self.client is not None:
            return ctx.client == self.client
        return self.user is not None and ctx.user == self.user


@dataclass(frozen=True, slots=True)
class Rule:
    """One denial: `actors` (none: everyone but the patient) may not see the patient's
    resources of `types` (none: every type) labelled with one of `labels` (none: all),
    between `start` and `end` (microseconds), unless an exception's actor matches."""

    actors: tuple[Actor, ...]
    labels: frozenset[Label]
    types: frozenset[str]
    exceptions: tuple[Actor, ...] = ()
    start: int | None = None
    end: int | None = None

    def applies(self, ctx: SecurityContext, patient: str, now: int) -> bool:
        if ctx.unrestricted:
            return False
        if (self.start is not None and now < self.start) or (
            self.end is not None and now > self.end
        ):
            return False
        if any(a.matches(ctx) for a in self.exceptions):
            return False
        if self.actors:
            return any(a.matches(ctx) for a in self.actors)
        return ctx.user != f"Patient/{patient}"  # everyone but the patient themself


@dataclass(frozen=True, slots=True)
class Denial:
    """What one patient's consents deny one context: everything (`labels` empty and
    `types` empty), or resources with these labels and/or of these types."""

    patient: str
    labels: frozenset[Label]
    types: frozenset[str]

    @property
    def everything(self) -> bool:
        return not self.labels and not self.types

    def covers_type(self, type: str) -> bool:
        return not self.types or type in self.types


@dataclass(frozen=True, slots=True)
class ConsentRules:
    generation: int
    by_patient: dict[str, tuple[Rule, ...]]


class _Cache:
    """One store's rules, and whether they are known current without a lookup: while
    the store's watch on Consent writes is live (PostgreSQL LISTEN), rules confirmed
    after the last notification stay current; otherwise (SQLite, a lost connection)
    each call compares the Consent generation (one index probe)."""

    def __init__(self, store: Store) -> None:
        self.lock = threading.Lock()
        self.rules: ConsentRules | None = None
        self.changes = 0  # notifications received
        self.confirmed = -1  # `changes` when the rules were last known current
        self.live = store.watch(written_channel("Consent"), self.changed)

    def changed(self) -> None:
        with self.lock:
            self.changes += 1


_caches: weakref.WeakKeyDictionary[Store, _Cache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def rules_of(store: Store) -> ConsentRules:
    """Every patient's rules, reloaded when a Consent was written since last time."""
    cache = _caches.get(store)
    if cache is None:
        with _caches_lock:
            cache = _caches.get(store) or _caches.setdefault(store, _Cache(store))
    changes, rules = cache.changes, cache.rules
    if rules is not None and cache.confirmed == changes and cache.live():
        return rules
    generation = store.generation("Consent")
    with cache.lock:
        if cache.rules is None or cache.rules.generation != generation:
            cache.rules = ConsentRules(generation, _load(store))
        cache.confirmed = changes  # current as of the notifications counted before
        return cache.rules


def watching(store: Store) -> bool:
    """Whether `store`'s rules are kept current by notifications (no lookup per call)."""
    cache = _caches.get(store)
    return cache is not None and cache.live()


def _load(store: Store) -> dict[str, tuple[Rule, ...]]:
    rules: dict[str, list[Rule]] = {}
    for version in store.iter_current("Consent"):
        if version.data is None:
            continue
        consent = orjson.loads(version.data)
        patient = _patient_of(consent)
        if patient is None or consent.get("status") != "active" or not _privacy(consent):
            continue
        provision = consent.get("provision")
        if isinstance(provision, dict):
            rules.setdefault(patient, []).extend(_walk(provision, (), "permit"))
    return {p: tuple(r) for p, r in rules.items()}


def _patient_of(consent: dict[str, Any]) -> str | None:
    ref = (consent.get("patient") or {}).get("reference")
    if isinstance(ref, str) and ref.startswith("Patient/") and ref.count("/") == 1:
        return ref.removeprefix("Patient/")
    return None


def _privacy(consent: dict[str, Any]) -> bool:
    codings = (consent.get("scope") or {}).get("coding") or []
    return any(c.get("system") == _SCOPE and c.get("code") == "patient-privacy" for c in codings)


def _walk(node: dict[str, Any], inherited: tuple[Actor, ...], default: str) -> Iterator[Rule]:
    """The denials of a provision tree: each `deny` node is a rule (its actors, or its
    parent's), its `permit` children are exceptions; a `permit` node's children are
    denials within it. A node without `type` is the opposite of its parent."""
    kind = node.get("type") or default
    actors = _actors(node) or inherited
    children = [c for c in node.get("provision") or [] if isinstance(c, dict)]
    start, end = _period(node)
    if kind == "deny":
        exceptions = tuple(
            a for c in children if (c.get("type") or "permit") == "permit" for a in _actors(c)
        )
        yield Rule(actors, _labels(node), _types(node), exceptions, start, end)
        for child in children:
            if (child.get("type") or "permit") == "deny":
                yield from _walk(child, actors, "deny")
    else:
        for child in children:
            yield from _walk(child, actors, "deny")


def _actors(node: dict[str, Any]) -> tuple[Actor, ...]:
    out = []
    for actor in node.get("actor") or []:
        ref = (actor or {}).get("reference") or {}
        ident = ref.get("identifier") or {}
        if ident.get("system") == CLIENT_SYSTEM and ident.get("value"):
            out.append(Actor(client=str(ident["value"])))
        elif ident.get("system") == USER_SYSTEM and ident.get("value"):
            out.append(Actor(user=str(ident["value"])))
        elif isinstance(ref.get("reference"), str):
            out.append(Actor(user=ref["reference"]))
    return tuple(out)


def _labels(node: dict[str, Any]) -> frozenset[Label]:
    return frozenset(
        (c.get("system"), str(c["code"]))
        for c in node.get("securityLabel") or []
        if isinstance(c, dict) and c.get("code")
    )


def _types(node: dict[str, Any]) -> frozenset[str]:
    return frozenset(
        str(c["code"])
        for c in node.get("class") or []
        if isinstance(c, dict) and c.get("system") == _RESOURCE_TYPES and c.get("code")
    )


def _period(node: dict[str, Any]) -> tuple[int | None, int | None]:
    period = node.get("period") or {}
    return _instant(period.get("start")), _instant(period.get("end"))


def _instant(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_instant(value if "T" in value else f"{value}T00:00:00Z")
    except ValueError:
        return None


def denials_for(
    store: Store, ctx: SecurityContext, patients: Iterable[str] | None = None
) -> list[Denial]:
    """What the active consents deny `ctx`: one Denial per (patient, rule) that
    applies, for `patients` (None: every patient with a consent)."""
    if ctx.unrestricted:
        return []
    rules = rules_of(store).by_patient
    if not rules:
        return []
    now = now_micros()
    wanted = rules.keys() if patients is None else [p for p in patients if p in rules]
    return [
        Denial(patient, rule.labels, rule.types)
        for patient in wanted
        for rule in rules[patient]
        if rule.applies(ctx, patient, now)
    ]


def hidden_by(denials: Iterable[Denial], type: str, body: dict[str, Any]) -> bool:
    """Whether a resource body (of the denials' patients) is hidden by one of them."""
    labels = {
        (c.get("system"), c.get("code"))
        for c in (body.get("meta") or {}).get("security") or []
        if isinstance(c, dict)
    }
    codes = {code for _, code in labels}
    for denial in denials:
        if not denial.covers_type(type):
            continue
        if not denial.labels or any(
            (system, code) in labels if system is not None else code in codes
            for system, code in denial.labels
        ):
            return True
    return False


# -- what a patient sees of the audit trail (service/audit.py) -------------------------

_AUDIT = "AuditEvent"
PATIENTS_DETAIL = "patients"  # AuditEvent entity.detail naming whose data an entity is
_REDACTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "REDACTED",
}

# What a patient-level context may search AuditEvents by: what it is shown unredacted.
# `entity`, `_text`… could probe the other patients' parts of an event it sees
# redacted (is Observation/x in it?), so they are refused.
_PATIENT_AUDIT_PARAMS = frozenset(
    {
        "_id", "_lastUpdated", "date", "patient", "agent", "agent-name", "agent-role",
        "altid", "address", "action", "outcome", "subtype", "type", "source", "site",
        "policy",
    }
)  # fmt: skip


def check_patient_audit_search(query: SearchQuery, patient: str) -> None:
    """403 for an AuditEvent search by a patient-level context that names another
    patient or a parameter of the redacted parts."""
    for c in query.conditions:
        name = getattr(c, "param", None)
        if not isinstance(c, Condition) or name not in _PATIENT_AUDIT_PARAMS:
            raise FHIRError.of(
                403,
                "forbidden",
                f"AuditEvent searches with patient-level scopes take only"
                f" {', '.join(sorted(_PATIENT_AUDIT_PARAMS))}",
            )
        if name == "patient" and any(
            not isinstance(v, ReferenceCriterion)
            or v.id != patient
            or v.type not in (None, "Patient")
            for v in c.values
        ):
            raise FHIRError.of(
                403, "forbidden", "patient-level scopes list only their own patient's events", name
            )
    for key in query.sort:
        if key.param not in ("_id", "_lastUpdated", "date"):
            raise FHIRError.of(403, "forbidden", f"AuditEvents may not be sorted by {key.param}")


def redacted_for(ctx: SecurityContext, result: T) -> T:
    """What a patient-level context is shown of the AuditEvents in `result` (a
    StoredVersion, SearchResult or HistoryPage): an event that names other patients
    too keeps only this patient's entities (no query), labelled REDACTED."""
    if ctx.unrestricted or not ctx.patient or ctx.policy.level("r", _AUDIT) != "patient":
        return result
    patient = ctx.patient
    if isinstance(result, StoredVersion):
        return cast(T, _redacted(result, patient))
    changes: dict[str, list[StoredVersion]] = {}
    for name in ("resources", "included", "entries"):
        versions = getattr(result, name, None)
        if isinstance(versions, list) and any(v.type == _AUDIT for v in versions):
            changes[name] = [_redacted(v, patient) for v in versions]
    if not changes:
        return result
    return dataclasses.replace(result, **changes)  # type: ignore[type-var]


def _redacted(version: StoredVersion, patient: str) -> StoredVersion:
    if version.type != _AUDIT or version.data is None:
        return version
    event = orjson.loads(version.data)
    entities = event.get("entity") or []
    others = [
        e
        for e in entities
        if e.get("role", {}).get("code") == "1"
        and e.get("what", {}).get("reference") != f"Patient/{patient}"
    ]
    if not others:
        return version
    kept = []
    for e in entities:
        role = e.get("role", {}).get("code")
        if role == "1":
            if e.get("what", {}).get("reference") == f"Patient/{patient}":
                kept.append(e)
        elif role == "4":
            owners = " ".join(d.get("valueString", "") for d in e.get("detail", [])).split()
            if patient in owners:
                kept.append(e)
    event["entity"] = kept
    meta = event.setdefault("meta", {})
    meta["security"] = [*meta.get("security", []), _REDACTED]
    return dataclasses.replace(version, data=orjson.dumps(event))
