"""Alerts and vital-sign summaries through the service with scoped contexts (the HTTP
test servers run open), the periodic check's horizon, and the webhook CLI — on each
backend."""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from openrecord.care.glucose.readings import Reading
from openrecord.cli import main
from openrecord.fhir.outcome import FHIRError
from openrecord.service.alerts import (
    alert_settings,
    check_due,
    evaluate_patient,
    mark_read,
    update_alert_settings,
)
from openrecord.service.clock import now_micros
from openrecord.service.context import SecurityContext
from openrecord.service.glucose import import_readings
from openrecord.service.records import RecordService
from openrecord.service.vitals import weight_summary
from openrecord.store import open_store
from tests.databases import backends, fresh_database

OPEN = SecurityContext.open()
PARAMS = {"resourceType": "Parameters"}
MIN = 60_000_000


@pytest.fixture(params=backends())
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture()
def records(database: str) -> Iterator[RecordService]:
    store = open_store(database)
    try:
        service = RecordService(store)
        for id in ("a", "b"):
            service.update(OPEN, "Patient", id, {"resourceType": "Patient", "id": id})
        yield service
    finally:
        store.close()


def patient_ctx(patient: str, scopes: str) -> SecurityContext:
    return SecurityContext.of(scopes, patient=patient, user=f"Patient/{patient}")


def status(fn: object, *args: object) -> int:
    try:
        fn(*args)  # type: ignore[operator]
    except FHIRError as err:
        return err.status
    return 200


def test_a_patient_reaches_only_their_own_settings_and_summaries(records: RecordService) -> None:
    own = patient_ctx("a", "patient/Patient.rs patient/Observation.rs patient/Goal.rs")
    assert status(alert_settings, records, own, "a") == 200
    assert status(alert_settings, records, own, "b") == 404  # not 403: existence hidden
    assert status(update_alert_settings, records, own, "a", PARAMS) == 403  # no update right
    writer = patient_ctx("a", "patient/Patient.ru")
    assert status(update_alert_settings, records, writer, "a", PARAMS) == 200
    assert status(update_alert_settings, records, writer, "b", PARAMS) == 404
    assert status(weight_summary, records, own, "a", 0, 10**15) == 200
    assert status(weight_summary, records, own, "b", 0, 10**15) == 404


def test_marking_read_needs_the_patients_own_communication(records: RecordService) -> None:
    update_alert_settings(records, OPEN, "a", PARAMS)
    import_readings(records, OPEN, "a", [Reading(now_micros() - MIN, 50.0)])
    found = records.search(OPEN, "Communication", [("subject", "Patient/a")])
    [communication] = found.resources
    other = patient_ctx("b", "patient/Communication.rus")
    assert status(mark_read, records, other, communication.id) == 404
    reader = patient_ctx("a", "patient/Communication.rs")
    assert status(mark_read, records, reader, communication.id) == 403  # no update right
    owner = patient_ctx("a", "patient/Communication.rus")
    assert mark_read(records, owner, communication.id).version.version == 2
    rows = records.store.query(
        "SELECT channel, delivered_us IS NOT NULL FROM notification_outbox WHERE communication = ?",
        (communication.id,),
    )
    assert [(c, bool(d)) for c, d in rows] == [("in-app", True)]


def test_no_settings_no_alerts(records: RecordService) -> None:
    import_readings(records, OPEN, "b", [Reading(now_micros() - MIN, 40.0)])
    assert evaluate_patient(records, "b") == []
    assert records.search(OPEN, "Communication", []).resources == []
    settings, _ = alert_settings(records, OPEN, "b")
    assert settings.enabled is False


def test_the_periodic_check_skips_data_older_than_a_day(records: RecordService) -> None:
    update_alert_settings(records, OPEN, "a", PARAMS)
    update_alert_settings(records, OPEN, "b", PARAMS)
    now = now_micros()
    import_readings(records, OPEN, "a", [Reading(now - 30 * MIN, 120.0)])
    import_readings(records, OPEN, "b", [Reading(now - 25 * 60 * MIN, 120.0)])
    fired = check_due(records, now)
    assert len(fired) == 1
    found = records.read(OPEN, "Communication", fired[0])
    assert b'"Patient/a"' in (found.data or b"") and b'"stale"' in (found.data or b"")
    assert check_due(records, now + MIN) == []  # already in a stale episode


def test_disabling_alerts_stops_them(records: RecordService) -> None:
    update_alert_settings(
        records, OPEN, "a", {**PARAMS, "parameter": [{"name": "enabled", "valueBoolean": False}]}
    )
    import_readings(records, OPEN, "a", [Reading(now_micros() - MIN, 40.0)])
    assert records.search(OPEN, "Communication", []).resources == []


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(list(args))
    return code, out.getvalue()


def test_webhook_cli(database: str, records: RecordService) -> None:
    add = ["alerts", "webhook", "add", "--patient", "a", "--database", database]
    code, out = cli(*add, "--url", "https://example.org/hook", "--secret-env", "HOOK_SECRET")
    assert code == 0
    id = out.strip()
    code, listing = cli("alerts", "webhook", "list", "--patient", "a", "--database", database)
    assert listing.split("\t")[:5] == [
        id,
        "a",
        "https://example.org/hook",
        "HOOK_SECRET",
        "minimal\n",
    ]
    assert cli(*add, "--url", "ftp://example.org/x", "--secret-env", "S")[0] == 2
    assert cli(*add, "--url", "https://example.org/x", "--secret-env", "lower-case")[0] == 2
    assert cli(*add[:4], "nobody", *add[5:], "--url", "https://x.org", "--secret-env", "S")[0] == 1
    assert cli("alerts", "webhook", "remove", id, "--database", database)[0] == 0
    assert cli("alerts", "webhook", "remove", id, "--database", database)[0] == 1
    assert cli("alerts", "webhook", "list", "--database", database)[1] == ""


def test_cli_check_and_deliver(database: str, records: RecordService) -> None:
    update_alert_settings(records, OPEN, "a", PARAMS)
    old = datetime.now(UTC) - timedelta(minutes=40)
    import_readings(records, OPEN, "a", [Reading.at(old, 100.0)])
    assert cli("alerts", "check", "--database", database) == (0, "1 alert(s) raised\n")
    assert cli("alerts", "check", "--database", database) == (0, "0 alert(s) raised\n")
    code, out = cli("alerts", "deliver", "--once", "--database", database)
    assert (code, out) == (0, "delivered 0, retrying 0, failed 0\n")  # no webhooks: in-app only


def test_concurrent_evaluations_fire_once(records: RecordService) -> None:
    """Four threads evaluate one patient's low at once: one Communication, one outbox
    row per channel (the episode rows are re-read under the patient's lock)."""
    now = now_micros()
    import_readings(records, OPEN, "a", [Reading(now - MIN, 60.0)])  # no settings yet
    update_alert_settings(records, OPEN, "a", PARAMS)
    barrier = threading.Barrier(4)
    fired: list[str] = []

    def evaluate() -> None:
        barrier.wait()
        fired.extend(evaluate_patient(records, "a", now))

    threads = [threading.Thread(target=evaluate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(fired) == 1
    assert len(records.search(OPEN, "Communication", []).resources) == 1
    rows = records.store.query("SELECT channel FROM notification_outbox")
    assert rows == [("in-app",)]
