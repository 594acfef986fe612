"""Compact CGM readings answer FHIR over HTTP, on each backend: `GET Observation/[id]`
and `GET Observation?patient=&code=99504-3&date=…` (paged) as HL7 CGM IG sensor-reading
Observations. Expected values come from the readings written here, not from the server.

The readings are imported through the service layer into the server's own database
(the path the CLI and the Nightscout API take); everything else goes over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from openrecord.care.glucose.readings import Limit, Reading
from openrecord.service.context import SecurityContext
from openrecord.service.glucose import import_readings
from openrecord.service.records import RecordService
from openrecord.store import open_store
from tests.server.conftest import Server

PATIENT, OTHER = "cgm-reader", "cgm-other"
START = datetime(2024, 3, 9, 22, 0, tzinfo=UTC)  # crosses a UTC midnight
CODE = "http://loinc.org|99504-3"
PROFILE = "http://hl7.org/fhir/uv/cgm/StructureDefinition/cgm-sensor-reading-mass-per-volume"


def the_readings() -> list[tuple[datetime, float, str | None]]:
    """(instant, mg/dL, comparator) of 300 five-minute readings: Low and High among them."""
    out: list[tuple[datetime, float, str | None]] = []
    for i in range(300):
        when = START + timedelta(minutes=5 * i)
        value = 60.0 + (i * 37) % 250 + (0.25 if i % 3 else 0.0)
        if i == 7:
            out.append((when, 40.0, "<"))
        elif i == 150:
            out.append((when, 400.0, ">"))
        else:
            out.append((when, value, None))
    return out


@pytest.fixture(scope="module")
def loaded(server: Server) -> Iterator[list[tuple[datetime, float, str | None]]]:
    with httpx.Client(base_url=server.base, timeout=60) as c:
        for patient in (PATIENT, OTHER):
            answer = c.put(f"/Patient/{patient}", json={"resourceType": "Patient", "id": patient})
            assert answer.status_code in (200, 201), answer.text
    expected = the_readings()
    limits = {"<": Limit.LOW, ">": Limit.HIGH, None: None}
    readings = [Reading(int(t.timestamp()) * 1_000_000, v, limits[c]) for t, v, c in expected]
    store = open_store(server.database)
    try:
        records = RecordService(store)
        ctx = SecurityContext.open()
        import_readings(records, ctx, PATIENT, readings)
        import_readings(records, ctx, OTHER, readings[:20])
    finally:
        store.close()
    yield expected


def all_pages(client: httpx.Client, params: dict[str, str]) -> list[dict[str, Any]]:
    answer = client.get("/Observation", params=params)
    resources: list[dict[str, Any]] = []
    while True:
        assert answer.status_code == 200, answer.text
        bundle = answer.json()
        assert bundle["type"] == "searchset"
        resources += [e["resource"] for e in bundle.get("entry", [])]
        links = {link["relation"]: link["url"] for link in bundle.get("link", [])}
        if "next" not in links:
            return resources
        answer = client.get(links["next"])


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_search_pages_through_the_readings(
    client: httpx.Client, loaded: list[tuple[datetime, float, str | None]]
) -> None:
    lo, hi = "2024-03-09T23:00:00Z", "2024-03-10T09:00:00Z"
    got = all_pages(
        client,
        {"patient": PATIENT, "code": CODE, "date": f"ge{lo}", "_count": "25"} | {"_sort": "date"},
    )
    got_lt = all_pages(
        client,
        {"subject": f"Patient/{PATIENT}", "code": CODE, "_count": "40"} | {"date": f"lt{hi}"},
    )
    window = [r for r in loaded if r[0] >= instant(lo)]
    assert len(got) == len(window) == 288
    for resource, (when, value, comparator) in zip(got, window, strict=True):
        assert resource["resourceType"] == "Observation"
        assert resource["meta"]["profile"] == [PROFILE]
        assert resource["status"] == "final"
        assert resource["code"]["coding"] == [{"system": "http://loinc.org", "code": "99504-3"}]
        assert resource["subject"] == {"reference": f"Patient/{PATIENT}"}
        assert instant(resource["effectiveDateTime"]) == when
        quantity = resource["valueQuantity"]
        assert quantity["value"] == value
        assert (quantity["system"], quantity["code"]) == ("http://unitsofmeasure.org", "mg/dL")
        assert quantity.get("comparator") == comparator
    assert [instant(r["effectiveDateTime"]) for r in got_lt] == [
        t for t, _, _ in loaded if t < instant(hi)
    ]
    ids = [r["id"] for r in got]
    assert len(set(ids)) == len(ids)


def test_count_and_total(client: httpx.Client, loaded: list[Any]) -> None:
    answer = client.get(
        "/Observation",
        params={"patient": PATIENT, "code": CODE, "date": "2024-03-10", "_summary": "count"},
    )
    assert answer.status_code == 200, answer.text
    day = [t for t, _, _ in loaded if t.date() == datetime(2024, 3, 10).date()]
    assert answer.json()["total"] == len(day) == 276
    page = client.get(
        "/Observation", params={"patient": PATIENT, "code": CODE, "_total": "accurate"}
    ).json()
    assert page["total"] == 300
    assert len(page["entry"]) == 20  # the default page size


def test_a_reading_is_read_by_its_id(client: httpx.Client, loaded: list[Any]) -> None:
    first = client.get(
        "/Observation", params={"patient": PATIENT, "code": CODE, "date": "2024-03-09T22:35:00Z"}
    ).json()["entry"]
    assert len(first) == 1
    resource = first[0]["resource"]
    answer = client.get(f"/Observation/{resource['id']}")
    assert answer.status_code == 200, answer.text
    assert answer.json() == resource
    assert answer.headers["etag"] == 'W/"1"'
    assert resource["valueQuantity"] == {
        "value": 40,
        "unit": "mg/dl",
        "system": "http://unitsofmeasure.org",
        "code": "mg/dL",
        "comparator": "<",
    }  # the 8th reading is the sensor's "Low"
    series, _, ms = resource["id"].removeprefix("cgm-").partition("-")
    for missing in (f"cgm-{series}-{int(ms) + 1}", "cgm-999999-0", "cgm-x-1"):
        answer = client.get(f"/Observation/{missing}")
        assert answer.status_code == 404, missing
        assert answer.json()["resourceType"] == "OperationOutcome"


def test_patients_do_not_mix(client: httpx.Client, loaded: list[Any]) -> None:
    other = all_pages(client, {"patient": OTHER, "code": CODE, "_count": "100"})
    assert len(other) == 20
    assert {r["subject"]["reference"] for r in other} == {f"Patient/{OTHER}"}
    compartment = client.get(f"/Patient/{OTHER}/Observation", params={"code": CODE})
    assert compartment.status_code == 200, compartment.text
    assert len(compartment.json()["entry"]) == 20
    both = client.get(
        "/Observation", params=[("patient", PATIENT), ("patient", OTHER), ("code", CODE)]
    )
    assert both.status_code == 200 and "entry" not in both.json()


def test_observations_stored_as_resources_follow_the_compact_ones(
    client: httpx.Client, loaded: list[Any]
) -> None:
    body = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "99504-3"}]},
        "subject": {"reference": f"Patient/{OTHER}"},
        "effectiveDateTime": "2024-03-11T12:00:00Z",
        "valueQuantity": {
            "value": 123,
            "unit": "mg/dl",
            "system": "http://unitsofmeasure.org",
            "code": "mg/dL",
        },
    }
    created = client.post("/Observation", json=body)
    assert created.status_code == 201, created.text
    got = all_pages(client, {"patient": OTHER, "code": CODE, "_count": "7"})
    assert len(got) == 21
    assert got[-1]["id"] == created.json()["id"]
    total = client.get(
        "/Observation", params={"patient": OTHER, "code": CODE, "_summary": "count"}
    ).json()["total"]
    assert total == 21


@pytest.mark.parametrize(
    ("params", "expression"),
    [
        ({"code": CODE}, "patient"),
        ({"patient": PATIENT, "code": CODE, "value-quantity": "gt100"}, "value-quantity"),
        ({"patient": PATIENT, "code": CODE, "date": "sa2024-03-10"}, "date"),
        ({"patient": f"{PATIENT},{OTHER}", "code": CODE}, "patient"),
        ({"patient": PATIENT, "code": CODE, "_sort": "-date"}, "_sort"),
        ({"patient": PATIENT, "code": CODE, "_cursor": "junk"}, "_cursor"),
    ],
)
def test_searches_the_compact_readings_cannot_answer_are_400(
    client: httpx.Client, loaded: list[Any], params: dict[str, str], expression: str
) -> None:
    answer = client.get("/Observation", params=params)
    assert answer.status_code == 400, answer.text
    issue = answer.json()["issue"][0]
    assert issue["expression"] == [expression]


def test_a_search_without_the_reading_code_is_the_ordinary_one(
    client: httpx.Client, loaded: list[Any]
) -> None:
    answer = client.get("/Observation", params={"patient": PATIENT})
    assert answer.status_code == 200, answer.text
    assert "entry" not in answer.json()  # compact readings answer only for their code
