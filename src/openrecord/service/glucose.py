"""CGM readings through the record service: compact storage, FHIR reads and searches of
the stored readings, and the consensus metrics of a patient's period (`$cgm-summary`).

Readings are kept compactly (`care/glucose/storage.py`): a state table `cgm_day` holds
one row per patient and UTC day with the day's readings as packed arrays, and
`cgm_series` numbers the patients. They still answer FHIR as HL7 CGM IG sensor-reading
Observations (`service/glucose_fhir.py`, registered with the record service), and
every function here checks the caller's `SecurityContext` for the patient's
Observations (`_authorize`) before touching a row.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from functools import cached_property
from itertools import islice
from typing import Any
from urllib.parse import urlencode

import orjson

from openrecord.auth.scopes import Permission
from openrecord.care.glucose.fhir import (
    LOINC,
    READING_CODES,
    observation_to_reading,
)
from openrecord.care.glucose.metrics import PeriodSummary, summarize_days, summarize_series
from openrecord.care.glucose.readings import Reading
from openrecord.care.glucose.storage import (
    DAY_MS,
    DayBlock,
    Series,
    group_by_day,
    merge_day,
)
from openrecord.fhir.definitions import definitions
from openrecord.fhir.outcome import FHIRError
from openrecord.fhir.search_common import date_range
from openrecord.service import access, consent
from openrecord.service.clock import now_micros
from openrecord.service.context import SecurityContext
from openrecord.service.records import RecordService
from openrecord.service.searching import run_search
from openrecord.store.base import Store, WriteTx

__all__ = [
    "CgmSummary",
    "ReadingsImport",
    "authorize",
    "cgm_summary",
    "consent_hides",
    "day_blocks",
    "import_readings",
    "parse_bound",
    "patient_readings",
    "patient_series",
    "population_summaries",
    "series_of",
    "series_summary",
]

_PAGE = 1000
_DAY_US = DAY_MS * 1000
_DAYS_PER_STATEMENT = 100  # rows of one INSERT (7 parameters each)
_DAYS_PER_READ = 100  # day rows per statement (~230 KB)


@dataclass(frozen=True, slots=True)
class ReadingsImport:
    """What an import wrote: readings sent, how many instants were new, how many
    stored instants got another value or limit."""

    readings: int
    created: int
    changed: int = 0


@dataclass(frozen=True)
class CgmSummary:
    """The metrics of a period and the readings they were computed from."""

    summary: PeriodSummary
    series: Series = field(repr=False)

    @cached_property
    def readings(self) -> list[Reading]:
        """The period's readings in time order (built on first use: a year is 105,000)."""
        return self.series.readings()


def parse_bound(text: str | None, name: str, zone: tzinfo) -> int:
    """A FHIR date or dateTime (`2024-01-01`, `2024-01-01T08:00:00+01:00`) → µs of its
    first instant; without a zone it is read in `zone` (the server's). 400 otherwise.
    The same reading of dates as search's (`search_common.date_range`)."""
    if text is None or text == "":
        raise FHIRError.of(400, "required", f"{name} is required (a FHIR date or dateTime)", name)
    pattern = definitions().primitive_patterns["dateTime"]  # the spec's own regex
    found = date_range(text, zone) if pattern.fullmatch(text) else None
    if found is None:
        raise FHIRError.of(
            400, "value", f"{name} must be a FHIR date or dateTime, not {text!r}", name
        )
    return found[0]


# -- access --------------------------------------------------------------------------


def refuse_granular(ctx: SecurityContext, permission: Permission) -> None:
    """403 for granular Observation scopes (`…?category=…`): compact rows cannot be
    checked against their queries, so they refuse rather than widen."""
    if ctx.policy.constraints(permission, "Observation"):
        raise FHIRError.of(
            403,
            "forbidden",
            "granular Observation scopes cannot be enforced on compact CGM readings",
        )


def authorize(
    records: RecordService,
    ctx: SecurityContext,
    patient: str,
    interaction: access.Interaction,
) -> None:
    """May `ctx` perform `interaction` on `patient`'s Observations? The same decision
    `service/access.py` makes for stored Observations: 403 when the scopes do not grant
    it, 404 when the patient is outside a patient-level context's compartment (or does
    not exist), 403 for granular scopes (`…?category=…`), which cannot be checked on
    compact rows and so refuse rather than widen. The patient must exist (404/410)."""
    access.check(ctx, interaction, "Observation")
    if not ctx.unrestricted:
        permission = access.PERMISSION[interaction]
        refuse_granular(ctx, permission)
        own = access.patient_of(ctx, permission, "Observation")
        if own is not None and own != patient:
            raise FHIRError.of(404, "not-found", f"Patient/{patient} is not known")
        if consent_hides(records, ctx, patient):
            raise FHIRError.of(404, "not-found", f"Patient/{patient} has no readings to show")
    # The readings belong to an existing patient. A context that may read Patients
    # reads it with its own rights; for one granted only Observations (checked above
    # for this patient) the store is asked whether the Patient exists, nothing more.
    if access.allows(ctx, "read", "Patient"):
        records.read(ctx, "Patient", patient)
        return
    found = records.store.read("Patient", patient)
    if found is None or found.deleted:
        raise FHIRError.of(404, "not-found", f"Patient/{patient} is not known")


def _recorded(
    records: RecordService, ctx: SecurityContext, interaction: str, patient: str, what: str
) -> AbstractContextManager[object]:
    """One AuditEvent for the call (service/audit.py): compact readings are accessed
    outside `RecordService`'s audited methods, so the calls here record themselves
    (the Patient read inside joins the same event)."""
    query = f"Observation?{urlencode([('patient', patient), ('code', LOINC + '|99504-3')])}"
    return records.audit.recording(
        ctx, interaction, type="Observation", query=f"{query}&{what}", patients=[patient]
    )


def consent_hides(records: RecordService, ctx: SecurityContext, patient: str) -> bool:
    """Whether the patient's privacy consents withhold their Observations from `ctx`
    (service/consent.py, as `access.consent_conditions` applies them to searches):
    403 when a consent denies this app everything; True when one denies Observations
    without naming security labels (compact readings carry none, so a label-only
    denial leaves them visible)."""
    if ctx.unrestricted:
        return False
    access.check_consent(records, ctx, patient)
    return any(
        d.covers_type("Observation") and not d.labels
        for d in consent.denials_for(records.store, ctx, [patient])
    )


# -- rows ----------------------------------------------------------------------------


def series_of(store: Store, patient: str) -> int | None:
    """The patient's series number in `cgm_series` (None: no readings ever stored)."""
    rows = store.query("SELECT sid FROM cgm_series WHERE patient = ?", [patient])
    return int(rows[0][0]) if rows else None


def _blocks(rows: Sequence[tuple[Any, ...]]) -> list[tuple[DayBlock, int]]:
    """(block, row's last write µs) of `(day, updated, times, mg_dl, limits)` rows."""
    return [(DayBlock.unpack(int(r[0]), r[2], r[3], r[4]), int(r[1])) for r in rows]


def day_blocks(store: Store, sid: int, first_day: int, last_day: int) -> list[tuple[DayBlock, int]]:
    """The stored days first_day ≤ day ≤ last_day of a series, in order, each with the
    µs of its row's last write. No access check: callers authorize first."""
    rows = store.query(
        "SELECT day, updated, times, mg_dl, limits FROM cgm_day"
        " WHERE sid = ? AND day >= ? AND day <= ? ORDER BY day",
        [sid, first_day, last_day],
    )
    return _blocks(rows)


def iter_range(
    store: Store, series: int | str, start_us: int, end_us: int
) -> Iterator[tuple[DayBlock, int, int, int]]:
    """(block, updated µs, lo ms, hi ms) of each stored day overlapping [start, end),
    with the part of the day inside it. `series`: the series number, or the patient
    (joined in the same statement). Days are read `_DAYS_PER_READ` at a time by
    keyset, so a 14-day period is one statement and a long one stays bounded."""
    if start_us >= end_us:
        return
    day, last = start_us // _DAY_US, (end_us - 1) // _DAY_US
    sql = _ROWS_BY_PATIENT if isinstance(series, str) else _ROWS_BY_SERIES
    while True:
        rows = store.query(sql, [series, day, last, _DAYS_PER_READ])
        for block, updated in _blocks(rows):
            base = block.day * _DAY_US
            lo = max(0, -(-(start_us - base) // 1000))  # ceil: µs → ms
            hi = min(DAY_MS, -(-(end_us - base) // 1000))
            yield block, updated, lo, hi
        if len(rows) < _DAYS_PER_READ:
            return
        day = int(rows[-1][0]) + 1


_ROWS_BY_SERIES = (
    "SELECT day, updated, times, mg_dl, limits FROM cgm_day"
    " WHERE sid = ? AND day >= ? AND day <= ? ORDER BY day LIMIT ?"
)
_ROWS_BY_PATIENT = (
    "SELECT d.day, d.updated, d.times, d.mg_dl, d.limits"
    " FROM cgm_series s JOIN cgm_day d ON d.sid = s.sid"
    " WHERE s.patient = ? AND d.day >= ? AND d.day <= ? ORDER BY d.day LIMIT ?"
)


def patient_series(
    records: RecordService, ctx: SecurityContext, patient: str, start_us: int, end_us: int
) -> Series:
    """The patient's compact readings with start ≤ time < end as columns (search rights)."""
    with _recorded(records, ctx, "search", patient, _period(start_us, end_us)):
        authorize(records, ctx, patient, "search")
        return _series(records.store, patient, start_us, end_us)


def _period(start_us: int, end_us: int) -> str:
    return urlencode([("date", f"ge{_instant(start_us)}"), ("date", f"lt{_instant(end_us)}")])


def _series(store: Store, patient: str, start_us: int, end_us: int) -> Series:
    out = Series()
    for block, _, lo, hi in iter_range(store, patient, start_us, end_us):
        out.extend(block, lo, hi)
    return out


def _instant(time_us: int) -> str:
    moment = datetime.fromtimestamp(time_us // 1_000_000, UTC)
    micros = time_us % 1_000_000
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{micros:06d}" if micros else "") + "Z"


def _stored_observations(
    records: RecordService, ctx: SecurityContext, patient: str, start_us: int, end_us: int
) -> list[Reading]:
    """Sensor readings other clients wrote as ordinary Observations (and those imported
    before the compact storage): one paged search, compact readings left out. Empty
    when no Observation was ever stored (one indexed lookup instead of a search whose
    parameters the store has never seen, which it would look up on every call)."""
    if records.store.generation("Observation") == 0:
        return []
    params: list[tuple[str, str]] = [
        ("subject", f"Patient/{patient}"),
        ("code", ",".join(f"{LOINC}|{code}" for code in READING_CODES)),
        ("date", f"ge{_instant(start_us)}"),
        ("date", f"lt{_instant(end_us)}"),
        ("_count", str(_PAGE)),
    ]
    readings: list[Reading] = []
    cursor: str | None = None
    while True:
        page = run_search(
            records,
            ctx,
            "Observation",
            params if cursor is None else [*params, ("_cursor", cursor)],
            sources=False,
        )
        for found in page.resources:
            if found.data is None:
                continue
            reading = observation_to_reading(orjson.loads(found.data))
            if reading is not None and start_us <= reading.time_us < end_us:
                readings.append(reading)
        cursor = page.next_cursor
        if cursor is None or not page.resources:
            return readings


def patient_readings(
    records: RecordService, ctx: SecurityContext, patient: str, start_us: int, end_us: int
) -> list[Reading]:
    """The patient's CGM sensor readings with start ≤ time < end, sorted by time, one per
    instant: the compact ones, and sensor-reading Observations stored as resources
    (where both hold an instant, the compact reading wins)."""
    with _recorded(records, ctx, "search", patient, _period(start_us, end_us)):
        series = patient_series(records, ctx, patient, start_us, end_us)
        return _with_stored(records, ctx, patient, series, start_us, end_us).readings()


def _with_stored(
    records: RecordService,
    ctx: SecurityContext,
    patient: str,
    series: Series,
    start_us: int,
    end_us: int,
) -> Series:
    stored = _stored_observations(records, ctx, patient, start_us, end_us)
    if not stored:
        return series
    known = set(series.times_ms)
    extra = {r.time_us // 1000: r for r in stored if r.time_us // 1000 not in known}
    merged = sorted([*series.readings(), *extra.values()], key=lambda r: r.time_us)
    out = Series()
    for reading in merged:
        out.append(reading)
    return out


def cgm_summary(
    records: RecordService,
    ctx: SecurityContext,
    patient: str,
    start_us: int,
    end_us: int,
    *,
    interval_minutes: float = 5.0,
) -> CgmSummary:
    """The consensus metrics of the patient's readings in [start, end); 404 for an unknown
    patient, 400 when the period is empty."""
    if start_us >= end_us:
        raise FHIRError.of(400, "value", "start must be before end", "end")
    with _recorded(records, ctx, "search", patient, _period(start_us, end_us)):
        series = patient_series(records, ctx, patient, start_us, end_us)
        series = _with_stored(records, ctx, patient, series, start_us, end_us)
    summary = summarize_series(
        series.times_ms, series.milli, start_us, end_us, interval_minutes=interval_minutes
    )
    return CgmSummary(summary, series)


def series_summary(
    records: RecordService,
    ctx: SecurityContext,
    patient: str,
    start_us: int,
    end_us: int,
    *,
    interval_minutes: float = 5.0,
) -> PeriodSummary:
    """The metrics of the patient's *compact* readings in [start, end) only: the
    population pass (all patients), which skips the search for Observation-stored
    readings and reads the day rows straight into the metrics."""
    if start_us >= end_us:
        raise FHIRError.of(400, "value", "start must be before end", "end")
    with _recorded(records, ctx, "search", patient, _period(start_us, end_us)):
        authorize(records, ctx, patient, "search")
        days = _day_columns(records.store, patient, start_us, end_us)
        return summarize_days(days, start_us, end_us, interval_minutes=interval_minutes)


def population_summaries(
    records: RecordService,
    ctx: SecurityContext,
    patients: Sequence[str],
    start_us: int,
    end_us: int,
    *,
    interval_minutes: float = 5.0,
) -> dict[str, PeriodSummary]:
    """`series_summary` of each patient — the all-patients pass — recorded as one
    AuditEvent naming every patient, rather than one event (one commit) per patient.
    Each patient is authorized as in `series_summary`; any refusal fails the call."""
    query = urlencode([("patient", ",".join(patients)), ("code", f"{LOINC}|99504-3")])
    with records.audit.recording(
        ctx,
        "search",
        type="Observation",
        query=f"Observation?{query}&{_period(start_us, end_us)}",
        patients=patients,
    ):
        return {
            patient: series_summary(
                records, ctx, patient, start_us, end_us, interval_minutes=interval_minutes
            )
            for patient in patients
        }


def _day_columns(
    store: Store, patient: str, start_us: int, end_us: int
) -> Iterator[tuple[int, Sequence[int], Sequence[int]]]:
    for block, _, lo, hi in iter_range(store, patient, start_us, end_us):
        times, milli = block.times, block.milli
        if lo > 0 or hi < DAY_MS:
            a, b = bisect_left(times, lo), bisect_left(times, hi)
            times, milli = times[a:b], milli[a:b]
        yield block.day * DAY_MS, times, milli


# -- import --------------------------------------------------------------------------


def _ensure_series(tx: WriteTx, patient: str) -> int:
    tx.execute(
        "INSERT INTO cgm_series (patient) VALUES (?) ON CONFLICT (patient) DO NOTHING", [patient]
    )
    return int(tx.execute("SELECT sid FROM cgm_series WHERE patient = ?", [patient])[0][0])


_UPSERT_TAIL = (
    " ON CONFLICT (sid, day) DO UPDATE SET n = excluded.n, updated = excluded.updated,"
    " times = excluded.times, mg_dl = excluded.mg_dl, limits = excluded.limits"
)


def _write_days(tx: WriteTx, sid: int, blocks: Sequence[DayBlock], now: int) -> None:
    """Insert or replace the rows of `blocks`, `_DAYS_PER_STATEMENT` per statement."""
    it = iter(blocks)
    while chunk := list(islice(it, _DAYS_PER_STATEMENT)):
        params: list[Any] = []
        for block in chunk:
            times, mg_dl, limits = block.packed()
            params += [sid, block.day, len(block), now, times, mg_dl, limits]
        values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
        tx.execute(
            "INSERT INTO cgm_day (sid, day, n, updated, times, mg_dl, limits) VALUES "
            + values
            + _UPSERT_TAIL,
            params,
        )


def import_readings(
    records: RecordService,
    ctx: SecurityContext,
    patient: str,
    readings: Sequence[Reading],
    *,
    batch_size: int = 20_000,
    progress: Callable[[int], None] | None = None,
) -> ReadingsImport:
    """Store readings in the patient's compact rows, whole days per transaction of
    about `batch_size` readings.

    One reading per patient and instant (to the ms): importing the same readings again
    changes nothing, an overlapping export adds only its new instants, and a reading
    sent again with another value replaces the stored one (which needs update rights).
    Writers of one patient queue on a lock; a crash loses at most the batch in flight,
    and importing again completes it. 400 (nothing written) for an implausible value.
    """
    with _recorded(records, ctx, "create", patient, f"_count={len(readings)}"):
        return _import(records, ctx, patient, readings, batch_size, progress)


def _import(
    records: RecordService,
    ctx: SecurityContext,
    patient: str,
    readings: Sequence[Reading],
    batch_size: int,
    progress: Callable[[int], None] | None,
) -> ReadingsImport:
    authorize(records, ctx, patient, "create")
    try:
        days = group_by_day(readings)
    except ValueError as err:
        raise FHIRError.of(400, "value", str(err), "Observation.valueQuantity.value") from None
    batches: list[list[int]] = [[]]
    size = 0
    for day in sorted(days):
        if size >= batch_size:
            batches.append([])
            size = 0
        batches[-1].append(day)
        size += len(days[day])
    may_update = access.allows(ctx, "update", "Observation")
    created = changed = 0
    for batch in batches:
        if not batch:
            continue
        with records.store.write() as tx:
            tx.lock(f"cgm-readings|{patient}")  # one writer of this patient's days at a time
            sid = _ensure_series(tx, patient)
            stored = {
                block.day: block
                for block, _ in _blocks(
                    tx.execute(
                        "SELECT day, updated, times, mg_dl, limits FROM cgm_day"
                        " WHERE sid = ? AND day >= ? AND day <= ?",
                        [sid, batch[0], batch[-1]],
                    )
                )
            }
            blocks: list[DayBlock] = []
            batch_created = batch_changed = 0
            for day in batch:
                block, added, altered = merge_day(day, days[day], stored.get(day))
                batch_created += added
                batch_changed += altered
                if added or altered:
                    blocks.append(block)
            if batch_changed and not may_update:
                access.check(ctx, "update", "Observation")  # 403: rolls the batch back
            _write_days(tx, sid, blocks, now_micros())
        created += batch_created
        changed += batch_changed
        if progress is not None:
            progress(sum(len(days[d]) for d in batch))
    from openrecord.service.alerts import note_readings  # (imports this module)

    note_readings(records, patient, readings)  # glucose alerts, when the patient has them
    return ReadingsImport(len(readings), created, changed)
