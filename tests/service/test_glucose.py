"""Compact CGM readings through the record service, on each backend: rows written,
duplicates and re-imports, Low/High, two writers of one patient-day, and access —
another patient's readings are never visible through a patient-level context."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from openrecord.care.glucose.readings import Limit, Reading
from openrecord.fhir.outcome import FHIRError
from openrecord.service.audit_chain import catch_up
from openrecord.service.context import SecurityContext
from openrecord.service.glucose import (
    cgm_summary,
    import_readings,
    patient_readings,
    population_summaries,
    series_summary,
)
from openrecord.service.records import RecordService
from openrecord.store import open_store
from tests.databases import backends, fresh_database

OPEN = SecurityContext.open()
T0 = int(datetime(2025, 6, 1, tzinfo=UTC).timestamp()) * 1_000_000
STEP = 300_000_000  # 5 minutes
DAY = 86_400_000_000


@pytest.fixture(params=backends())
def records(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordService]:
    with fresh_database(request.param, tmp_path) as database:
        store = open_store(database)
        try:
            service = RecordService(store)
            for patient in ("ann", "bob"):
                service.update(OPEN, "Patient", patient, {"resourceType": "Patient", "id": patient})
            yield service
        finally:
            store.close()


def trace(n: int, start: int = T0, base: float = 100.0) -> list[Reading]:
    return [Reading(start + i * STEP, base + (i * 7) % 90) for i in range(n)]


def rows(records: RecordService, patient: str) -> list[tuple[int, int]]:
    """(day, n) of the patient's stored day rows, read from the state table itself."""
    return [
        (int(day), int(n))
        for day, n in records.store.query(
            "SELECT d.day, d.n FROM cgm_day d JOIN cgm_series s ON s.sid = d.sid"
            " WHERE s.patient = ? ORDER BY d.day",
            [patient],
        )
    ]


def test_import_writes_one_row_per_patient_day(records: RecordService) -> None:
    readings = trace(288 * 2 + 10)  # two whole UTC days and 10 readings of a third
    done = import_readings(records, OPEN, "ann", readings)
    assert (done.readings, done.created, done.changed) == (586, 586, 0)
    first = T0 // DAY
    assert rows(records, "ann") == [(first, 288), (first + 1, 288), (first + 2, 10)]
    assert patient_readings(records, OPEN, "ann", T0, T0 + 3 * DAY) == readings
    # no FHIR resource per reading
    found = records.search(OPEN, "Observation", [("_summary", "count"), ("_total", "accurate")])
    assert found.total == 0


def test_reimports_and_overlaps_add_only_new_instants(records: RecordService) -> None:
    readings = trace(300)
    import_readings(records, OPEN, "ann", readings)
    again = import_readings(records, OPEN, "ann", readings, batch_size=50)
    assert (again.created, again.changed) == (0, 0)
    overlap = trace(20, start=T0 + 290 * STEP)  # 10 known instants (same values), 10 new
    overlap = [
        Reading(r.time_us, readings[290 + i].mg_dl) if i < 10 else r for i, r in enumerate(overlap)
    ]
    done = import_readings(records, OPEN, "ann", overlap)
    assert (done.created, done.changed) == (10, 0)
    twice = [Reading(T0, 55.0), Reading(T0, 66.0)]  # one instant twice in one upload
    done = import_readings(records, OPEN, "ann", twice)
    assert (done.created, done.changed) == (0, 1)
    got = patient_readings(records, OPEN, "ann", T0, T0 + DAY + 100 * STEP)
    assert len(got) == 310
    assert got[0] == Reading(T0, 66.0)  # the last reading of an instant wins
    assert sum(n for _, n in rows(records, "ann")) == 310


def test_low_and_high_are_kept(records: RecordService) -> None:
    readings = [
        Reading(T0, 40.0, Limit.LOW),
        Reading(T0 + STEP, 39.0, Limit.LOW),
        Reading(T0 + 2 * STEP, 150.0),
        Reading(T0 + 3 * STEP, 400.0, Limit.HIGH),
    ]
    import_readings(records, OPEN, "ann", readings)
    assert patient_readings(records, OPEN, "ann", T0, T0 + DAY) == readings
    page = records.search(
        OPEN,
        "Observation",
        [("patient", "ann"), ("code", "http://loinc.org|99504-3")],
    )
    quantities = [orjson.loads(r.data or b"{}")["valueQuantity"] for r in page.resources]
    assert [(q["value"], q.get("comparator")) for q in quantities] == [
        (40, "<"),
        (39, "<"),
        (150, None),
        (400, ">"),
    ]


def test_implausible_value_is_400_and_writes_nothing(records: RecordService) -> None:
    readings = [*trace(500), Reading(T0 + 600 * STEP, float("nan"))]
    with pytest.raises(FHIRError) as caught:
        import_readings(records, OPEN, "ann", readings, batch_size=100)
    assert caught.value.status == 400
    assert rows(records, "ann") == []


def test_two_writers_of_one_patient_day_lose_nothing(records: RecordService) -> None:
    evens = [Reading(T0 + i * STEP, 100.0 + i) for i in range(0, 288, 2)]
    odds = [Reading(T0 + i * STEP, 100.0 + i) for i in range(1, 288, 2)]
    errors: list[BaseException] = []

    def write(part: list[Reading]) -> None:
        try:
            for at in range(0, len(part), 12):  # many small transactions, interleaved
                import_readings(records, OPEN, "ann", part[at : at + 12])
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(p,)) for p in (evens, odds)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    got = patient_readings(records, OPEN, "ann", T0, T0 + DAY)
    assert got == sorted(evens + odds)
    assert rows(records, "ann") == [(T0 // DAY, 288)]


def test_a_patient_context_never_sees_another_patients_readings(records: RecordService) -> None:
    import_readings(records, OPEN, "ann", trace(50))
    import_readings(records, OPEN, "bob", trace(40, base=200.0))
    ann = SecurityContext.of("patient/Observation.rs", patient="ann")
    assert len(patient_readings(records, ann, "ann", T0, T0 + DAY)) == 50
    assert cgm_summary(records, ann, "ann", T0, T0 + DAY).summary.stats.count == 50
    for call in (patient_readings, cgm_summary, series_summary):
        with pytest.raises(FHIRError) as caught:
            call(records, ann, "bob", T0, T0 + DAY)
        assert caught.value.status == 404  # not 403: bob's existence is not revealed
    code = ("code", "http://loinc.org|99504-3")
    for query in (
        [("patient", "bob"), code],
        [("subject", "Patient/bob"), code],
        [("patient", "bob"), code, ("_summary", "count")],
    ):
        page = records.search(ann, "Observation", query)
        assert page.resources == [] and page.total in (None, 0), query
    own = records.search(ann, "Observation", [("patient", "ann"), code, ("_count", "100")])
    assert len(own.resources) == 50
    bob_page = records.search(OPEN, "Observation", [("patient", "bob"), code])
    bob_id = bob_page.resources[0].id
    assert records.read(OPEN, "Observation", bob_id).id == bob_id
    with pytest.raises(FHIRError) as caught:
        records.read(ann, "Observation", bob_id)
    assert caught.value.status == 404
    assert records.read(ann, "Observation", own.resources[0].id).data == own.resources[0].data


def test_scopes_are_checked_for_reading_and_writing(records: RecordService) -> None:
    import_readings(records, OPEN, "ann", trace(10))
    cases = [
        (SecurityContext.of("patient/Patient.rs", patient="ann"), 403),  # no Observation grant
        (SecurityContext.of("patient/Observation.rs?category=laboratory", patient="ann"), 403),
    ]
    for ctx, status in cases:
        with pytest.raises(FHIRError) as caught:
            patient_readings(records, ctx, "ann", T0, T0 + DAY)
        assert caught.value.status == status, ctx.scopes
    reader = SecurityContext.of("patient/Observation.rs", patient="ann")
    with pytest.raises(FHIRError) as caught:
        import_readings(records, reader, "ann", trace(5, start=T0 + DAY))
    assert caught.value.status == 403  # reading rights do not write
    writer = SecurityContext.of("patient/Observation.c", patient="ann")
    assert import_readings(records, writer, "ann", trace(5, start=T0 + DAY)).created == 5
    with pytest.raises(FHIRError) as caught:
        import_readings(records, writer, "bob", trace(5))
    assert caught.value.status == 404
    with pytest.raises(FHIRError) as caught:  # replacing a stored value needs update rights
        import_readings(records, writer, "ann", [Reading(T0, 333.0)])
    assert caught.value.status == 403
    assert patient_readings(records, OPEN, "ann", T0, T0 + 1)[0].mg_dl == 100.0
    with pytest.raises(FHIRError) as caught:
        import_readings(records, OPEN, "nobody", trace(5))
    assert caught.value.status == 404


def test_sensor_readings_stored_as_observations_are_merged(records: RecordService) -> None:
    import_readings(records, OPEN, "ann", trace(3))
    for i, (when, value) in enumerate(
        [("2025-06-01T00:05:00Z", 999), ("2025-06-01T01:00:00Z", 7.0)]
    ):
        records.update(
            OPEN,
            "Observation",
            f"other-{i}",
            {
                "resourceType": "Observation",
                "id": f"other-{i}",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "105272-9"}]},
                "subject": {"reference": "Patient/ann"},
                "effectiveDateTime": when,
                "valueQuantity": {
                    "value": value,
                    "unit": "mmol/L",
                    "system": "http://unitsofmeasure.org",
                    "code": "mmol/L",
                },
            },
        )
    got = patient_readings(records, OPEN, "ann", T0, T0 + DAY)
    # 00:05 is held compactly (it wins); 01:00 comes from the Observation (7 mmol/L)
    assert [r.time_us for r in got] == [T0, T0 + STEP, T0 + 2 * STEP, T0 + 12 * STEP]
    assert got[1].mg_dl == trace(3)[1].mg_dl
    assert got[3].mg_dl == pytest.approx(7.0 * 18.0156, abs=0.001)


def test_each_call_is_one_audit_event_naming_the_patient(records: RecordService) -> None:
    def events() -> list[dict[str, object]]:
        found = []
        catch_up(records.store)  # the chained events, stored as resources
        for version in records.store.iter_current("AuditEvent"):  # not itself audited
            event = orjson.loads(version.data or b"{}")
            for entity in event.get("entity", []):
                query = base64.b64decode(entity.get("query", "")).decode()
                if query.startswith("Observation?patient=ann"):
                    found.append({"subtype": event["subtype"][0]["code"], "query": query})
        return found

    import_readings(records, OPEN, "ann", trace(10))
    patient_readings(records, OPEN, "ann", T0, T0 + DAY)
    got = events()
    assert [e["subtype"] for e in got] == ["create", "search-type"]
    assert "date=ge2025-06-01T00%3A00%3A00Z" in str(got[1]["query"])


def _consent(deny: dict[str, object]) -> dict[str, object]:
    """An R4 patient-privacy Consent of ann (opt-out policy), with one deny provision."""
    return {
        "resourceType": "Consent",
        "id": "ann-privacy",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/ann"},
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}
            ]
        },
        "provision": deny,
    }


def _app(client: str) -> dict[str, object]:
    return {
        "role": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "IRCP",
                }
            ]
        },
        "reference": {"identifier": {"system": "urn:openrecord:client", "value": client}},
    }


def test_a_consent_denying_observations_hides_the_readings(records: RecordService) -> None:
    import_readings(records, OPEN, "ann", trace(10))
    nosy = SecurityContext(client="nosy-app", scopes=frozenset({"system/Observation.rs"}))
    fine = SecurityContext(client="other-app", scopes=frozenset({"system/Observation.rs"}))
    code = ("code", "http://loinc.org|99504-3")
    first = records.search(OPEN, "Observation", [("patient", "ann"), code]).resources[0]
    assert len(patient_readings(records, nosy, "ann", T0, T0 + DAY)) == 10  # no consent yet
    deny = {
        "type": "deny",
        "actor": [_app("nosy-app")],
        "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}],
    }
    records.update(OPEN, "Consent", "ann-privacy", _consent(deny))
    with pytest.raises(FHIRError) as caught:
        patient_readings(records, nosy, "ann", T0, T0 + DAY)
    assert caught.value.status == 404
    assert records.search(nosy, "Observation", [("patient", "ann"), code]).resources == []
    with pytest.raises(FHIRError) as caught:
        records.read(nosy, "Observation", first.id)
    assert caught.value.status == 404
    assert len(patient_readings(records, fine, "ann", T0, T0 + DAY)) == 10  # another app
    assert records.read(fine, "Observation", first.id).data == first.data


def test_population_summaries_authorize_each_patient(records: RecordService) -> None:
    import_readings(records, OPEN, "ann", trace(30))
    import_readings(records, OPEN, "bob", trace(20, base=250.0))
    system = SecurityContext.of("system/Observation.rs")
    found = population_summaries(records, system, ["ann", "bob"], T0, T0 + DAY)
    assert {p: s.stats.count for p, s in found.items()} == {"ann": 30, "bob": 20}
    assert found["bob"].stats.mean == pytest.approx(
        sum(r.mg_dl for r in trace(20, base=250.0)) / 20
    )
    ann = SecurityContext.of("patient/Observation.rs", patient="ann")
    with pytest.raises(FHIRError) as caught:
        population_summaries(records, ann, ["ann", "bob"], T0, T0 + DAY)
    assert caught.value.status == 404
