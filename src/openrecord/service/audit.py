"""The audit trail: an AuditEvent for every access, chained by hashes (tamper-evident).

Every interaction through `RecordService` — read, vread, search, history, each write,
transaction Bundles, operations — and every refusal (403, 404 by compartment or
consent, 401 by the authorization layer via `record_auth_event`) becomes one FHIR R4
`AuditEvent` (service/audit_events.py): who (the user and the client app as agents),
what (the resources touched, or the query as `entity.query`), the patients whose data
it was (entities with role Patient, so `AuditEvent?patient=…` finds it), the outcome
(0 success, 4 minor failure, 8 refused, 12 server error), the purpose of use and this
server as the source. Events are appended to a hash chain and stored as searchable
resources from it (service/audit_chain.py).

No unaudited access: a write's event is appended in the write's own transaction
(both commit or neither); a read's after the read, in its own transaction, and the
response fails (500, nothing returned) when that append fails. Auditing does not
audit itself: events are written with `WriteTx`, not through the record service.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from typing import Any, TypeVar, cast
from urllib.parse import urlencode

from openrecord.fhir.outcome import FHIRError, Issue
from openrecord.fhir.search_values import IndexEntry
from openrecord.service.audit_chain import (
    GENESIS,
    append_events,
    append_later,
    append_now,
    catch_up_if_behind,
    chain_hash,
)
from openrecord.service.audit_events import AUDIT_TYPE, AuditRecord, patients_of
from openrecord.service.consent import redacted_for
from openrecord.service.context import SecurityContext
from openrecord.store.base import SearchPage, Store, StoredVersion, WriteTx
from openrecord.store.query import SearchQuery

__all__ = [
    "AUDIT_TYPE",
    "GENESIS",
    "AuditRecord",
    "AuditTrail",
    "audited",
    "chain_hash",
    "current_record",
    "patients_of",
    "record_auth_event",
    "touch",
]

log = logging.getLogger("openrecord.audit")

F = TypeVar("F", bound=Callable[..., Any])

# where `AuditTrail.deferring` collects the records to append (None: append at once)
_deferred: ContextVar[list[AuditRecord] | None] = ContextVar(
    "openrecord_audit_deferred", default=None
)
_current: ContextVar[AuditRecord | None] = ContextVar("openrecord_audit_record", default=None)


def current_record() -> AuditRecord | None:
    """The record of the interaction running on this thread, if any."""
    return _current.get()


def touch(*versions: StoredVersion | None, entity: bool = True) -> None:
    """Note resources the running interaction reached (no-op outside one)."""
    record = _current.get()
    if record is not None:
        record.touch((v for v in versions if v is not None), entity=entity)


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

    def catch_up_for(self, *types: str | None) -> None:
        """Before reading or searching these types (None: every type): store the
        chained events not stored as AuditEvent resources yet."""
        if any(t is None or t == AUDIT_TYPE for t in types):
            catch_up_if_behind(self.store)

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

    @contextmanager
    def deferring(self, into: list[AuditRecord]) -> Iterator[None]:
        """Inside: interactions that would append their event after they end leave the
        record in `into` instead, for `appended` (the event loop, which must not wait
        for the writer). The caller answers only after `appended` returns."""
        token = _deferred.set(into)
        try:
            yield
        finally:
            _deferred.reset(token)

    async def appended(self, records: list[AuditRecord]) -> None:
        """Append deferred records on the store's writer thread, without blocking;
        raises (500) when one could not be recorded, like the synchronous append."""
        for record in records:
            if record.appended and not record.dirty:
                continue
            try:
                await asyncio.wrap_future(append_later(self.store, record))
            except Exception as exc:
                raise _audit_failed(exc) from None
            self.committed(record)

    def _append_after(self, record: AuditRecord) -> None:
        if record.appended and not record.dirty:
            return
        deferred = _deferred.get()
        if deferred is not None:
            deferred.append(record)
            return
        try:
            append_now(self.store, record)
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
    append_now(store, record)


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
