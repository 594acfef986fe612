"""Glucose alerts: per-patient settings, evaluation when readings arrive and on a
periodic check, and each alert written as a FHIR Communication plus its outbox rows.

Settings and episode state live in state tables (migration 6), not in a FHIR
resource: no R4 resource holds alarm thresholds without inventing extensions, the
evaluator reads them on every upload, and snoozes and episodes are machine state
that changes every few minutes and would only bloat a resource's history. The FHIR
face of the settings is the `$alert-settings` operation (a Parameters resource).

The alert engine acts as the system (`SecurityContext.open(purpose="alerts")`): an
uploader's token that may write Observations needs no right to create Communications.
Reading and changing a patient's settings goes through the caller's context (read of
the Patient; update rights on Patient to change them).

One evaluation is one store transaction: the episodes (locked per patient), the new
Communications and their outbox rows commit together, so an alert is neither lost nor
sent twice by a crash between them. Validation and indexing of the Communications run
before the transaction (as `RecordService` does); if the episodes changed meanwhile, the
evaluation runs again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from openrecord.care.alerts.rules import Alert, Episode, evaluate
from openrecord.care.alerts.settings import (
    AlertKind,
    AlertSettings,
    SettingsError,
    settings_from_json,
    settings_from_parameters,
    settings_to_json,
)
from openrecord.care.glucose.readings import Reading
from openrecord.fhir.outcome import FHIRError
from openrecord.service import access
from openrecord.service.clock import instant, now_micros
from openrecord.service.context import SecurityContext
from openrecord.service.glucose import patient_readings
from openrecord.service.notifications import enqueue
from openrecord.service.records import Prepared, RecordService, WriteResult
from openrecord.store.base import WriteTx

__all__ = [
    "ALERT_SYSTEM",
    "SYSTEM_CONTEXT",
    "alert_settings",
    "check_due",
    "communication",
    "evaluate_patient",
    "mark_read",
    "note_readings",
    "update_alert_settings",
]

log = logging.getLogger("openrecord.alerts")
SYSTEM_CONTEXT = SecurityContext.open(purpose="alerts")
ALERT_SYSTEM = "http://openrecord.invalid/CodeSystem/glucose-alert"
_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/communication-category"
_MINUTE_US = 60_000_000
_WINDOW_US = 60 * _MINUTE_US  # readings the rules look at
_FUTURE_US = 5 * _MINUTE_US  # a device clock slightly ahead
_STALE_HORIZON_US = 24 * 60 * _MINUTE_US  # data older than this is history, not signal loss
_PRIORITY = {
    AlertKind.URGENT_LOW: "stat",
    AlertKind.LOW: "urgent",
    AlertKind.PREDICTED_LOW: "urgent",
    AlertKind.FALLING_RAPIDLY: "urgent",
}
_ATTEMPTS = 3


# -- settings ------------------------------------------------------------------------------


def _stored_settings(
    records: RecordService, patient: str
) -> tuple[AlertSettings, bool, int | None]:
    """(settings, configured at all, newest reading known) of a patient."""
    rows = records.store.query(
        "SELECT settings, last_reading_us FROM alert_patient WHERE patient = ?", (patient,)
    )
    if not rows:
        return AlertSettings(enabled=False), False, None
    return settings_from_json(orjson.loads(rows[0][0])), True, rows[0][1]


def _snoozes(records: RecordService, patient: str, now_us: int) -> dict[AlertKind, int]:
    rows = records.store.query(
        "SELECT kind, snoozed_until_us FROM alert_episode"
        " WHERE patient = ? AND snoozed_until_us IS NOT NULL AND snoozed_until_us > ?",
        (patient, now_us),
    )
    return {AlertKind(kind): int(until) for kind, until in rows}


def alert_settings(
    records: RecordService, ctx: SecurityContext, patient: str
) -> tuple[AlertSettings, dict[AlertKind, int]]:
    """The patient's settings (alerts are off until set) and the snoozes still running."""
    records.read(ctx, "Patient", patient)
    settings, _, _ = _stored_settings(records, patient)
    return settings, _snoozes(records, patient, now_micros())


def update_alert_settings(
    records: RecordService, ctx: SecurityContext, patient: str, body: Any
) -> tuple[AlertSettings, dict[AlertKind, int]]:
    """Apply a Parameters body (see `settings_from_parameters`); 400 naming the path.
    Posting settings the first time turns alerts on (unless `enabled` says otherwise)."""
    records.read(ctx, "Patient", patient)
    access.check(ctx, "update", "Patient")
    current, configured, _ = _stored_settings(records, patient)
    try:
        base = current if configured else AlertSettings()
        settings, snoozes = settings_from_parameters(base, body)
    except SettingsError as err:
        raise FHIRError.of(400, "value", str(err), err.path) from None
    now = now_micros()
    with records.store.write() as tx:
        tx.execute(
            "INSERT INTO alert_patient (patient, settings, enabled, last_reading_us, updated_us)"
            " VALUES (?, ?, ?, NULL, ?) ON CONFLICT (patient) DO UPDATE SET"
            " settings = excluded.settings, enabled = excluded.enabled,"
            " updated_us = excluded.updated_us",
            (
                patient,
                orjson.dumps(settings_to_json(settings)).decode(),
                int(settings.enabled),
                now,
            ),
        )
        for kind, until in snoozes.items():
            tx.execute(
                "INSERT INTO alert_episode (patient, kind, active, snoozed_until_us)"
                " VALUES (?, ?, 0, ?) ON CONFLICT (patient, kind) DO UPDATE SET"
                " snoozed_until_us = excluded.snoozed_until_us",
                (patient, kind.value, until),
            )
    return settings, _snoozes(records, patient, now)


# -- evaluation ----------------------------------------------------------------------------


def note_readings(records: RecordService, patient: str, readings: Sequence[Reading]) -> list[str]:
    """After an import: remember the newest reading and, when it is recent (within the
    stale limit of now: a live upload, not a backfill of history), evaluate the rules.
    Nothing happens for a patient without alert settings. Returns new Communication ids.
    The readings are stored already: a failure here is logged (its type), not raised,
    and the periodic check or the next upload evaluates again."""
    if not readings:
        return []
    try:
        return _note_readings(records, patient, readings)
    except Exception as exc:
        log.error("alert evaluation after an import failed: %s", type(exc).__name__)
        return []


def _note_readings(records: RecordService, patient: str, readings: Sequence[Reading]) -> list[str]:
    settings, configured, _ = _stored_settings(records, patient)
    if not configured:
        return []
    newest = max(r.time_us for r in readings)
    now = now_micros()
    with records.store.write() as tx:
        tx.execute(
            "UPDATE alert_patient SET last_reading_us = ? WHERE patient = ?"
            " AND (last_reading_us IS NULL OR last_reading_us < ?) AND ? <= ?",
            (newest, patient, newest, newest, now + _FUTURE_US),
        )
    if not settings.enabled or now - newest >= settings.stale_minutes * _MINUTE_US:
        return []
    return evaluate_patient(records, patient, now)


def communication(patient: str, alert: Alert) -> dict[str, Any]:
    """The Communication that records an alert sent to the patient."""
    return {
        "resourceType": "Communication",
        "status": "completed",
        "category": [
            {"coding": [{"system": _CATEGORY_SYSTEM, "code": "alert", "display": "Alert"}]}
        ],
        "priority": _PRIORITY.get(alert.kind, "routine"),
        "subject": {"reference": f"Patient/{patient}"},
        "topic": {
            "coding": [{"system": ALERT_SYSTEM, "code": alert.kind.value}],
            "text": f"glucose alert: {alert.kind.value}",
        },
        "recipient": [{"reference": f"Patient/{patient}"}],
        "sent": instant(alert.time_us),
        "payload": [{"contentString": alert.message}],
    }


def _episodes(rows: Sequence[tuple[Any, ...]]) -> dict[AlertKind, Episode]:
    return {
        AlertKind(kind): Episode(bool(active), started, fired, snoozed)
        for kind, active, started, fired, snoozed in rows
    }


_EPISODES_SQL = (
    "SELECT kind, active, started_us, fired_us, snoozed_until_us FROM alert_episode"
    " WHERE patient = ?"
)


def _save(
    tx: WriteTx, patient: str, before: dict[AlertKind, Episode], after: dict[AlertKind, Episode]
) -> None:
    for kind, episode in after.items():
        if before.get(kind, Episode()) == episode:
            continue
        tx.execute(
            "INSERT INTO alert_episode (patient, kind, active, started_us, fired_us,"
            " snoozed_until_us) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (patient, kind) DO UPDATE"
            " SET active = excluded.active, started_us = excluded.started_us,"
            " fired_us = excluded.fired_us, snoozed_until_us = excluded.snoozed_until_us",
            (
                patient,
                kind.value,
                int(episode.active),
                episode.started_us,
                episode.fired_us,
                episode.snoozed_until_us,
            ),
        )


def evaluate_patient(records: RecordService, patient: str, now_us: int | None = None) -> list[str]:
    """Evaluate the rules for one patient at `now` (default: the current time), store the
    episodes, and write each alert as a Communication with its outbox rows. Returns the
    new Communications' ids."""
    now = now_micros() if now_us is None else now_us
    settings, configured, _ = _stored_settings(records, patient)
    if not configured:
        return []
    access.check(SYSTEM_CONTEXT, "create", "Communication")
    for _ in range(_ATTEMPTS):
        # (again on a retry: the evaluation that ran meanwhile may have seen newer data)
        readings = patient_readings(
            records, SYSTEM_CONTEXT, patient, now - _WINDOW_US, now + _FUTURE_US
        )
        seen = _episodes(records.store.query(_EPISODES_SQL, (patient,)))
        last = _stored_settings(records, patient)[2]
        planned = evaluate(readings, now, settings, seen, last_reading_us=last)
        if not planned.alerts and all(
            seen.get(kind, Episode()) == episode for kind, episode in planned.episodes.items()
        ):
            return []  # nothing changed: no write
        prepared = {
            alert.kind: (alert, records.checked(communication(patient, alert), "Communication"))
            for alert in planned.alerts
        }
        with records.store.write() as tx:
            tx.lock(f"alerts/{patient}")
            current = _episodes(tx.execute(_EPISODES_SQL, (patient,)))
            if current != seen:
                continue  # another evaluation ran meanwhile: judge again from its state
            _save(tx, patient, current, planned.episodes)
            return [_record(records, tx, patient, *prepared[a.kind], now) for a in planned.alerts]
    return []


def _record(
    records: RecordService, tx: WriteTx, patient: str, alert: Alert, prepared: Prepared, now: int
) -> str:
    id = str(uuid.uuid4())
    records.write(tx, "Communication", id, prepared, None, "POST")
    enqueue(tx, patient, id, alert, now)
    return id


def check_due(records: RecordService, now_us: int | None = None) -> list[str]:
    """The periodic check: evaluate every patient whose data may have gone stale (no
    reading for 5 minutes but one within the last day — older data are history, not a
    lost signal —, not already in a stale episode) or whose snooze ran out during an
    episode that persists. Returns the new Communications' ids."""
    now = now_micros() if now_us is None else now_us
    rows = records.store.query(
        "SELECT p.patient FROM alert_patient p WHERE p.enabled = 1"
        " AND p.last_reading_us IS NOT NULL AND p.last_reading_us < ?"
        " AND p.last_reading_us >= ?"
        " AND NOT EXISTS (SELECT 1 FROM alert_episode e WHERE e.patient = p.patient"
        " AND e.kind = 'stale' AND e.active = 1)"
        " UNION SELECT e.patient FROM alert_episode e JOIN alert_patient p"
        " ON p.patient = e.patient WHERE p.enabled = 1 AND e.active = 1"
        " AND e.snoozed_until_us IS NOT NULL AND e.snoozed_until_us <= ?"
        " AND (e.fired_us IS NULL OR e.fired_us < e.snoozed_until_us)",
        (now - 5 * _MINUTE_US, now - _STALE_HORIZON_US, now),
    )
    fired: list[str] = []
    for (patient,) in rows:
        fired += evaluate_patient(records, str(patient), now)
    return fired


# -- in-app: marking read -----------------------------------------------------------------


def mark_read(records: RecordService, ctx: SecurityContext, id: str) -> WriteResult:
    """Set the Communication's `received` (the patient has seen it) and its in-app outbox
    row delivered. A second call changes nothing."""
    found = records.read(ctx, "Communication", id)
    assert found.data is not None
    body = orjson.loads(found.data)
    if "received" in body:
        return WriteResult(found, 200)
    now = now_micros()
    result = records.patch(
        ctx,
        "Communication",
        id,
        [{"op": "add", "path": "/received", "value": instant(now)}],
        fhirpath=False,
        if_match=f'W/"{found.version}"',
    )
    with records.store.write() as tx:
        tx.execute(
            "UPDATE notification_outbox SET delivered_us = ? WHERE communication = ?"
            " AND channel = 'in-app' AND delivered_us IS NULL",
            (now, id),
        )
    return result
