"""AuditEvents (R4) from what an interaction did: who, what, whose, outcome.

`AuditRecord` is filled in while an interaction runs (service/audit.py); `build_event`
turns it into the AuditEvent appended to the chain (service/audit_chain.py). Pure: no
I/O, so building an event costs microseconds and cannot fail halfway through a write.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from openrecord.service.clock import instant
from openrecord.service.consent import PATIENTS_DETAIL
from openrecord.service.context import SecurityContext
from openrecord.store.base import StoredVersion

__all__ = [
    "AUDIT_TYPE",
    "AUTH_SYSTEM",
    "CLIENT_SYSTEM",
    "USER_SYSTEM",
    "AuditRecord",
    "build_event",
    "patients_of",
]

AUDIT_TYPE = "AuditEvent"
CLIENT_SYSTEM = "urn:openrecord:client"
USER_SYSTEM = "urn:openrecord:user"
AUTH_SYSTEM = "urn:openrecord:audit-auth-event"
_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_RESTFUL = "http://hl7.org/fhir/restful-interaction"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_PURPOSE = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
# agent.who may refer to these types (R4 AuditEvent.agent.who)
_AGENT_TYPES = ("Patient", "Practitioner", "PractitionerRole", "RelatedPerson", "Organization")
_AGENT_REFERENCE = re.compile(rf"^(?:{'|'.join(_AGENT_TYPES)}|Device)/[A-Za-z0-9\-.]{{1,64}}$")
# A relative reference to a Patient anywhere in a resource's JSON (as stored)
_PATIENT_REF = re.compile(rb'"reference":"Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[^"]*)?"')
_MAX_DESC = 500

_ACTION = {
    "read": "R",
    "vread": "R",
    "history": "R",
    "search": "E",
    "create": "C",
    "update": "U",
    "patch": "U",
    "delete": "D",
    "operation": "E",
    "transaction": "E",
    "batch": "E",
    "write": "U",
}
_AUTH_SUBTYPE = {"login": ("110122", "Login"), "logout": ("110123", "Logout")}


@dataclass(slots=True)
class AuditRecord:
    """What one interaction did, filled in while it runs; becomes one AuditEvent."""

    ctx: SecurityContext | None  # None: the server itself
    interaction: str
    type: str | None = None
    id: str | None = None
    query: str | None = None  # the search/criteria/operation request, as sent
    # (type, id) → (version, the patients whose data that resource is)
    entities: dict[tuple[str, str], tuple[int | None, frozenset[str]]] = field(default_factory=dict)
    patients: set[str] = field(default_factory=set)
    status: int = 200
    detail: str | None = None
    refused: bool = False  # answered 404 (or filtered) by access control or consent
    appended: bool = False
    dirty: bool = False  # touched since it was appended (a later event then follows)
    # authentication events (record_auth_event)
    kind: str | None = None
    user: str | None = None
    client: str | None = None
    source_ip: str | None = None

    def touch(self, versions: Iterable[StoredVersion], *, entity: bool = True) -> None:
        """Resources the interaction reached: each as an entity (`entity`), and the
        patients whose data they are."""
        for v in versions:
            self.dirty = True
            found = patients_of(v)
            key = (v.type, v.id)
            if entity or key in self.entities:
                version, before = self.entities.get(key, (v.version, frozenset()))
                self.entities[key] = (v.version if entity else version, before | found)
            self.patients.update(found)

    def outcome(self) -> str:
        status = self.status
        if status < 400:
            return "0"
        if status >= 500:
            return "12"
        if status in (401, 403) or self.refused:
            return "8"
        return "4"


def patients_of(version: StoredVersion) -> set[str]:
    """The patients a resource is about: a Patient itself, or every Patient it refers
    to (relative references; a superset of its Patient compartments, found with one
    regex over the stored bytes rather than a parse)."""
    found: set[str] = set()
    if version.type == "Patient":
        found.add(version.id)
    if version.data is not None and b'"Patient/' in version.data:
        found.update(m.decode() for m in _PATIENT_REF.findall(version.data))
    return found


# -- events --------------------------------------------------------------------------


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def _who(user: str) -> dict[str, Any]:
    if _AGENT_REFERENCE.match(user):
        return {"reference": user}
    return {"identifier": {"system": USER_SYSTEM, "value": user}}


def _agents(record: AuditRecord) -> list[dict[str, Any]]:
    ctx = record.ctx
    user = record.user if record.kind else (ctx.user if ctx else None)
    client = record.client if record.kind else (ctx.client if ctx else None)
    purpose = ctx.purpose if ctx else None
    agents: list[dict[str, Any]] = []
    network = {"address": record.source_ip, "type": "2"} if record.source_ip else None
    if user:
        agent: dict[str, Any] = {
            "type": {"coding": [_coding(_PARTICIPATION, "IRCP", "information recipient")]},
            "who": _who(user),
            "requestor": True,
        }
        if purpose:
            agent["purposeOfUse"] = [{"coding": [_coding(_PURPOSE, purpose)]}]
        if network:
            agent["network"] = network
        agents.append(agent)
    if client:
        agent = {
            "type": {"coding": [_coding(_DCM, "110150", "Application")]},
            "who": {"identifier": {"system": CLIENT_SYSTEM, "value": client}},
            "requestor": not user,
        }
        if network and not user:
            agent["network"] = network
        agents.append(agent)
    if not agents:
        if ctx is not None and ctx.unrestricted:
            name = "operator (unrestricted context: CLI or a server run with --open)"
        elif ctx is None and not record.kind:
            name = "openrecord (the server itself)"
        else:
            name = "anonymous"
        agent = {"name": name, "requestor": True}
        if network:
            agent["network"] = network
        agents.append(agent)
    return agents


def _subtype(record: AuditRecord) -> dict[str, str]:
    kind = record.interaction
    if kind == "history":
        kind = "history-instance" if record.id else "history-type" if record.type else ""
        kind = kind or "history-system"
    elif kind == "search":
        kind = "search-type" if record.type else "search-system"
    elif kind == "write":
        kind = "update"
    return _coding(_RESTFUL, kind)


def build_event(record: AuditRecord, event_id: str, recorded: int) -> dict[str, Any]:
    """The AuditEvent (R4) of `record`, recorded at `recorded` (microseconds UTC)."""
    stamp = instant(recorded)
    event: dict[str, Any] = {
        "resourceType": AUDIT_TYPE,
        "id": event_id,
        "meta": {"versionId": "1", "lastUpdated": stamp},
    }
    if record.kind is not None:
        event["type"] = _coding(_DCM, "110114", "User Authentication")
        subtype = [_coding(AUTH_SYSTEM, record.kind)]
        if record.kind in _AUTH_SUBTYPE:
            subtype.insert(0, _coding(_DCM, *_AUTH_SUBTYPE[record.kind]))
        event["subtype"] = subtype
        event["action"] = "E"
    else:
        event["type"] = _coding(_EVENT_TYPE, "rest", "Restful Operation")
        event["subtype"] = [_subtype(record)]
        event["action"] = _ACTION.get(record.interaction, "E")
    event["recorded"] = stamp
    event["outcome"] = record.outcome()
    if record.detail:
        event["outcomeDesc"] = record.detail[:_MAX_DESC]
    ctx = record.ctx
    if ctx is not None and ctx.purpose:
        event["purposeOfEvent"] = [{"coding": [_coding(_PURPOSE, ctx.purpose)]}]
    event["agent"] = _agents(record)
    event["source"] = {
        "site": "openrecord",
        "observer": {"display": "openrecord FHIR server"},
        "type": [_coding(_SOURCE_TYPE, "4", "Application Server")],
    }
    entities: list[dict[str, Any]] = []
    several = len(record.patients) > 1
    for (type, id), (version, patients) in record.entities.items():
        if type == "Patient":
            continue  # listed below, once, as a patient
        what = f"{type}/{id}" if version is None else f"{type}/{id}/_history/{version}"
        entity: dict[str, Any] = {
            "what": {"reference": what},
            "type": _coding(_ENTITY_TYPE, "2", "System Object"),
            "role": _coding(_OBJECT_ROLE, "4", "Domain Resource"),
        }
        if several and patients:  # whose it is: each patient is shown only their own
            entity["detail"] = [
                {"type": PATIENTS_DETAIL, "valueString": " ".join(sorted(patients))}
            ]
        entities.append(entity)
    for patient in sorted(record.patients):
        entities.append(
            {
                "what": {"reference": f"Patient/{patient}"},
                "type": _coding(_ENTITY_TYPE, "1", "Person"),
                "role": _coding(_OBJECT_ROLE, "1", "Patient"),
            }
        )
    if record.query:
        entities.append(
            {
                "type": _coding(_ENTITY_TYPE, "2", "System Object"),
                "role": _coding(_OBJECT_ROLE, "24", "Query"),
                "query": base64.b64encode(record.query.encode()).decode(),
            }
        )
    if entities:
        event["entity"] = entities
    return event
