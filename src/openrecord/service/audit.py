"""The audit trail: an AuditEvent for every access, chained by hashes (tamper-evident).

Every interaction through `RecordService` — read, vread, search, history, each write,
transaction Bundles, operations — and every refusal (403, 404 by compartment or
consent, 401 by the authorization layer via `record_auth_event`) becomes one FHIR R4
`AuditEvent`: who (the user and the client app as agents), what (the resources
touched, or the query as `entity.query`), the patients whose data it was (entities
with role Patient, so `AuditEvent?patient=…` finds it), the outcome (0 success,
4 minor failure, 8 refused, 12 server error), the purpose of use and this server as
the source. AuditEvents are stored as resources (searchable, readable by the patient
through their compartment) and chained in the `audit_chain` state table: row `seq`
holds SHA-256(hash of `seq - 1` ‖ canonical JSON of the event), the rows numbered
1, 2, 3… without gaps. Appends serialize on one lock (`WriteTx.lock`, a no-op under
SQLite's single writer), so two writers never fork the chain. `verify_chain` walks it.

No unaudited access: a write's event is appended in the write's own transaction
(both commit or neither); a read's after the read, in its own transaction, and the
response fails (500, nothing returned) when that append fails. Auditing does not
audit itself: events are written with `WriteTx.put`, not through the record service.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache, wraps
from typing import Any, TypeVar, cast
from urllib.parse import urlencode

import orjson

from openrecord.fhir.definitions import definitions
from openrecord.fhir.outcome import FHIRError, Issue
from openrecord.fhir.search_index import IndexExtractor
from openrecord.fhir.search_values import IndexEntry
from openrecord.service.clock import instant, now_micros
from openrecord.service.consent import PATIENTS_DETAIL, redacted_for
from openrecord.service.context import SecurityContext
from openrecord.store.base import SearchPage, Store, StoredVersion, WriteTx
from openrecord.store.query import SearchQuery

__all__ = [
    "AUDIT_TYPE",
    "AuditRecord",
    "AuditTrail",
    "audited",
    "chain_hash",
    "current_record",
    "record_auth_event",
    "touch",
]

log = logging.getLogger("openrecord.audit")

AUDIT_TYPE = "AuditEvent"
GENESIS = "0" * 64  # the "previous hash" of seq 1
CHAIN_LOCK = "openrecord:audit-chain"
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

F = TypeVar("F", bound=Callable[..., Any])


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


_current: ContextVar[AuditRecord | None] = ContextVar("openrecord_audit_record", default=None)


def current_record() -> AuditRecord | None:
    """The record of the interaction running on this thread, if any."""
    return _current.get()


def touch(*versions: StoredVersion | None, entity: bool = True) -> None:
    """Note resources the running interaction reached (no-op outside one)."""
    record = _current.get()
    if record is not None:
        record.touch((v for v in versions if v is not None), entity=entity)


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


def canonical(event: dict[str, Any]) -> bytes:
    """The bytes the chain hashes: the event's JSON with sorted keys, no whitespace."""
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


def chain_hash(previous: str, event: dict[str, Any]) -> str:
    return hashlib.sha256(previous.encode("ascii") + canonical(event)).hexdigest()


@lru_cache(maxsize=1)
def _indexer() -> IndexExtractor:
    """AuditEvents are indexed with the built-in parameters (custom SearchParameters
    on AuditEvent apply after a `$reindex`)."""
    return IndexExtractor(definitions())


def append_events(tx: WriteTx, records: Sequence[AuditRecord]) -> None:
    """Store the records' AuditEvents and chain them, inside `tx` (which commits them
    with whatever else it writes). Holds the chain lock until that commit."""
    if not records:
        return
    tx.lock(CHAIN_LOCK)
    rows = tx.execute("SELECT seq, hash FROM audit_chain ORDER BY seq DESC LIMIT 1")
    seq, previous = (int(rows[0][0]), str(rows[0][1])) if rows else (0, GENESIS)
    indexer = _indexer()
    for record in records:
        recorded = now_micros()
        event_id = str(uuid.uuid4())
        event = build_event(record, event_id, recorded)
        index: list[IndexEntry] = indexer.extract(event)
        tx.put(StoredVersion(AUDIT_TYPE, event_id, 1, recorded, "POST", orjson.dumps(event)), index)
        seq += 1
        previous = chain_hash(previous, event)
        tx.execute(
            "INSERT INTO audit_chain (seq, event_id, recorded, hash) VALUES (?, ?, ?, ?)",
            (seq, event_id, recorded, previous),
        )


def _audit_failed(exc: BaseException) -> FHIRError:
    log.error("audit append failed: %s", type(exc).__name__)  # no PHI: only the type
    return FHIRError(
        500,
        [
            Issue(
                "exception",
                "the access could not be recorded in the audit trail, so it was not performed"
                " or its result is withheld",
                severity="fatal",
            )
        ],
    )


class _WatchedTx(WriteTx):
    """A write transaction that remembers what was put (the writes to audit)."""

    def __init__(self, inner: WriteTx) -> None:
        self.inner = inner
        self.written: list[StoredVersion] = []
        self.removed: list[StoredVersion] = []  # the versions deletions replaced

    def current(self, type: str, id: str) -> StoredVersion | None:
        return self.inner.current(type, id)

    def put(self, version: StoredVersion, index: Sequence[IndexEntry]) -> None:
        if version.data is None:
            before = self.inner.current(version.type, version.id)
            if before is not None:
                self.removed.append(before)
        self.inner.put(version, index)
        self.written.append(version)

    def search(self, query: SearchQuery) -> SearchPage:
        return self.inner.search(query)

    def lock(self, key: str) -> None:
        self.inner.lock(key)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.inner.execute(sql, params)

    def reindex(
        self, items: Sequence[tuple[StoredVersion, Sequence[IndexEntry]]]
    ) -> list[StoredVersion]:
        return self.inner.reindex(items)


class AuditTrail:
    """The audit trail of one store, as the record service uses it.

    `enabled` is False only in benchmarks that measure what auditing costs."""

    def __init__(self, store: Store, *, enabled: bool = True) -> None:
        self.store = store
        self.enabled = enabled

    @contextmanager
    def recording(
        self,
        ctx: SecurityContext | None,
        interaction: str,
        *,
        type: str | None = None,
        id: str | None = None,
        query: str | None = None,
        patients: Iterable[str] = (),
    ) -> Iterator[AuditRecord]:
        """Record the interaction run inside: its outcome (FHIRError status, or 500 for
        anything else) is appended when it ends, unless a write transaction appended
        it already. Inside another recording it adds to that one instead."""
        outer = _current.get()
        if outer is not None or not self.enabled:
            yield outer or AuditRecord(ctx, interaction)
            return
        record = AuditRecord(ctx, interaction, type, id, query)
        record.patients.update(patients)
        if ctx is not None and ctx.patient and not ctx.unrestricted:
            record.patients.add(ctx.patient)  # acting for this patient: theirs to see
        token = _current.set(record)
        try:
            yield record
        except FHIRError as err:
            record.status = err.status
            # a 404 about a resource that exists: hidden by access control or consent
            record.refused = record.refused or (err.status == 404 and bool(record.entities))
            record.detail = "; ".join(i.diagnostics for i in err.issues)
            raise
        except BaseException as exc:
            record.status = 500
            record.detail = f"internal error ({type_name(exc)})"
            raise
        finally:
            _current.reset(token)
            self._append_after(record)  # a failure here replaces the outcome: 500

    def _append_after(self, record: AuditRecord) -> None:
        if record.appended and not record.dirty:
            return
        try:
            with self.store.write() as tx:
                append_events(tx, [record])
        except Exception as exc:
            raise _audit_failed(exc) from None
        self.committed(record)

    def committed(self, record: AuditRecord) -> None:
        """`record`'s event is stored: what it holds now is audited."""
        record.appended = True
        record.dirty = False

    def watch(self, tx: WriteTx) -> _WatchedTx:
        return _WatchedTx(tx)

    def seal(self, tx: _WatchedTx, result: object) -> AuditRecord | None:
        """Before a write transaction commits: append the running interaction's event
        with what it wrote (so both commit or neither). Returns the record to mark
        `appended` once the commit succeeded."""
        if not self.enabled:
            return None
        record = _current.get()
        if record is None:
            if not tx.written:
                return None
            record = AuditRecord(None, "write")  # a write outside any recorded call
        elif record.appended and not tx.written:
            return None
        # a second transaction of one interaction gets an event of its own writes
        earlier = not record.appended
        sealed = AuditRecord(
            record.ctx,
            record.interaction,
            record.type,
            record.id,
            record.query,
            dict(record.entities) if earlier else {},
            set(record.patients),
            detail=record.detail,
        )
        sealed.touch(tx.written)
        sealed.touch(tx.removed, entity=False)
        version = getattr(result, "version", None)
        if isinstance(version, StoredVersion):
            sealed.touch([version])
        sealed.status = getattr(result, "status", 200) or 200
        append_events(tx.inner, [sealed])
        return record


def type_name(exc: BaseException) -> str:
    return type(exc).__name__


def audited(
    interaction: str, describe: Callable[..., dict[str, Any]] | None = None
) -> Callable[[F], F]:
    """Decorate a `RecordService` method `(self, ctx, *args)`: the call is recorded
    (`describe(*args, **kwargs)` gives its type, id and query), and what it returns
    is noted: the resource read, the patients of a search page or history."""

    def decorate(fn: F) -> F:
        @wraps(fn)
        def method(self: Any, ctx: SecurityContext, *args: Any, **kwargs: Any) -> Any:
            trail: AuditTrail = self.audit
            what = describe(*args, **kwargs) if describe is not None else {}
            with trail.recording(ctx, interaction, **what) as record:
                result = fn(self, ctx, *args, **kwargs)
                _note_result(record, result)
                return redacted_for(ctx, result)

        return cast(F, method)

    return decorate


def _note_result(record: AuditRecord, result: object) -> None:
    if isinstance(result, StoredVersion):
        record.touch([result])
        return
    resources = getattr(result, "resources", None)  # a SearchResult
    if isinstance(resources, list):
        record.touch(resources, entity=False)
        record.touch(getattr(result, "included", []), entity=False)
        return
    entries = getattr(result, "entries", None)  # a HistoryPage
    if isinstance(entries, list):
        record.touch(entries, entity=record.id is not None)


def search_query(type: str | None, params: Sequence[tuple[str, str]], prefix: str = "") -> str:
    """`Type?params` as the request named it (for `entity.query`)."""
    path = "/".join(p for p in (prefix, type or "") if p)
    return f"{path}?{urlencode(list(params))}" if params else path


# -- authentication events -----------------------------------------------------------


def record_auth_event(
    store: Store,
    *,
    kind: str,
    user: str | None,
    client: str | None,
    patient: str | None,
    outcome: int,
    detail: str | None,
    source_ip: str | None,
) -> None:
    """Audit an authentication or authorization event (`kind`: login, login-failed,
    lockout, logout, token, token-refused, revoke…). `outcome` is the AuditEvent
    outcome (0, 4, 8, 12). Raises when it cannot be recorded: the caller must then
    refuse what it was about to allow."""
    if outcome not in (0, 4, 8, 12):
        raise ValueError(f"outcome must be 0, 4, 8 or 12, not {outcome}")
    record = AuditRecord(
        None,
        kind,
        kind=kind,
        user=user,
        client=client,
        source_ip=source_ip,
        detail=detail,
        status={0: 200, 4: 400, 8: 403, 12: 500}[outcome],
    )
    if patient:
        record.patients.add(patient.removeprefix("Patient/"))
    with store.write() as tx:
        append_events(tx, [record])


# -- how each RecordService method names what it touches (for `audited`) -------------


def by_type_id(type: str, id: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"type": type, "id": id}


def by_type(type: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"type": type}


def by_criteria(type: str, criteria: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"type": type, "query": f"{type}?{criteria.lstrip('?')}"}


def by_history(type: str | None = None, id: str | None = None, **kwargs: Any) -> dict[str, Any]:
    return {"type": type, "id": id}


def by_search(
    type: str | None,
    params: Sequence[tuple[str, str]],
    *,
    compartment: tuple[str, str] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    prefix = "/".join(compartment) if compartment else ""
    patients = [compartment[1]] if compartment and compartment[0] == "Patient" else []
    return {"type": type, "query": search_query(type, params, prefix), "patients": patients}
