"""Whose records a user may act for: the patient picker's list and its server-side check.

- `Patient/p`: p itself.
- `RelatedPerson/r`: r's `patient` (a parent for a child, a carer for the person they
  care for), while r is active and within its `period`.
- `Person/x`: each `Person.link.target` — a Patient is the person's own record, a
  RelatedPerson stands for a patient as above.
- A `Patient` or `RelatedPerson` user also reaches what any `Person` linking to it
  links to (one human, several roles).
- `Practitioner/d`: the patients naming d as `generalPractitioner`.

The lookups run as the signing-in user (user-level read scopes on the four linking
types, purpose of use PATADMIN), so the audit trail names them, not an operator, and a
patient's consent denying that user applies here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from openrecord.fhir.outcome import FHIRError
from openrecord.service.context import SecurityContext
from openrecord.service.records import RecordService

__all__ = ["PatientChoice", "may_act_for", "patients_for"]

_MAX = 200  # a picker longer than this is no picker
_SCOPES = frozenset(
    {"user/Patient.rs", "user/RelatedPerson.rs", "user/Person.rs", "user/Practitioner.rs"}
)


def _context(fhir_user: str) -> SecurityContext:
    return SecurityContext(user=fhir_user, scopes=_SCOPES, purpose="PATADMIN")


@dataclass(frozen=True, slots=True)
class PatientChoice:
    id: str
    name: str
    birth_date: str | None
    relation: str  # "you", "you act for them", "your patient"


def _read(
    records: RecordService, ctx: SecurityContext, type: str, id: str
) -> dict[str, Any] | None:
    try:
        found = records.read(ctx, type, id)
    except FHIRError:
        return None
    return orjson.loads(found.data) if found.data else None


def _search(
    records: RecordService, ctx: SecurityContext, type: str, params: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    result = records.search(ctx, type, [*params, ("_count", str(_MAX))])
    return [orjson.loads(r.data) for r in result.resources if r.data]


def _ref_id(reference: Any, type: str) -> str | None:
    if not isinstance(reference, dict):
        return None
    ref = reference.get("reference")
    if isinstance(ref, str) and ref.startswith(f"{type}/") and "/" not in ref[len(type) + 1 :]:
        return ref[len(type) + 1 :]
    return None


def _in_period(resource: dict[str, Any]) -> bool:
    if resource.get("active") is False:
        return False
    period = resource.get("period") or {}
    today = datetime.now(UTC).date().isoformat()
    start, end = str(period.get("start") or ""), str(period.get("end") or "")
    return not (start and start[:10] > today) and not (end and end[:10] < today)


def _name(patient: dict[str, Any]) -> str:
    for name in patient.get("name") or ():
        if name.get("text"):
            return str(name["text"])
        parts = [*(name.get("given") or ()), name.get("family") or ""]
        text = " ".join(p for p in parts if p)
        if text:
            return text
    return f"Patient {patient.get('id')}"


def _related_patient(records: RecordService, ctx: SecurityContext, related_id: str) -> str | None:
    related = _read(records, ctx, "RelatedPerson", related_id)
    if related is None or not _in_period(related):
        return None
    return _ref_id(related.get("patient"), "Patient")


def _person_links(
    records: RecordService, ctx: SecurityContext, person: dict[str, Any]
) -> list[tuple[str, str]]:
    """(patient id, relation) for each link of an active Person."""
    if person.get("active") is False:
        return []
    found = []
    for link in person.get("link") or ():
        target = link.get("target")
        if (pid := _ref_id(target, "Patient")) is not None:
            found.append((pid, "you"))
        elif (rid := _ref_id(target, "RelatedPerson")) is not None and (
            pid := _related_patient(records, ctx, rid)
        ) is not None:
            found.append((pid, "you act for them"))
    return found


def _candidates(
    records: RecordService, ctx: SecurityContext, fhir_user: str
) -> list[tuple[str, str]]:
    type, _, id = fhir_user.partition("/")
    found: list[tuple[str, str]] = []
    if type == "Patient":
        found.append((id, "you"))
    elif type == "RelatedPerson":
        pid = _related_patient(records, ctx, id)
        if pid is None:
            return []  # an ended or inactive role opens nothing, not even via a Person
        found.append((pid, "you act for them"))
    elif type == "Person":
        person = _read(records, ctx, "Person", id)
        if person is not None:
            found += _person_links(records, ctx, person)
    elif type == "Practitioner":
        for patient in _search(records, ctx, "Patient", [("general-practitioner", fhir_user)]):
            found.append((str(patient["id"]), "your patient"))
    if type in ("Patient", "RelatedPerson"):
        for person in _search(records, ctx, "Person", [("link", fhir_user)]):
            found += _person_links(records, ctx, person)
    return found


def patients_for(records: RecordService, fhir_user: str) -> list[PatientChoice]:
    """The patients `fhir_user` may act for, each once, existing and active."""
    seen: dict[str, PatientChoice] = {}
    ctx = _context(fhir_user)
    for pid, relation in _candidates(records, ctx, fhir_user):
        if pid in seen or len(seen) >= _MAX:
            continue
        patient = _read(records, ctx, "Patient", pid)
        if patient is None or patient.get("active") is False:
            continue
        seen[pid] = PatientChoice(pid, _name(patient), patient.get("birthDate"), relation)
    return list(seen.values())


def may_act_for(records: RecordService, fhir_user: str, patient_id: str) -> bool:
    """The server-side check of a picked patient (never trust the form)."""
    return any(c.id == patient_id for c in patients_for(records, fhir_user))
