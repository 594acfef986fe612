"""`Patient/[id]/$everything` over HTTP (R4 OperationDefinition Patient-everything),
and through the record service with patient-scoped contexts.

Patient `e1` has an Encounter (period 2020-05-01, at Location `l1`, by Organization
`org1`, with Practitioner `pr1`), Observations dated 2020-05-01 and 2022-03-01
(performer `pr1`), a Condition, and a MedicationRequest for Medication `m1`; patient
`e2` has one Observation. Per the R4 Patient CompartmentDefinition, e1's compartment
is its Patient, Encounter, two Observations, Condition and MedicationRequest; the
resources they refer to outside it are pr1, org1, l1 and m1.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from openrecord.fhir.outcome import FHIRError
from openrecord.server.ops_everything import everything, parse_query
from openrecord.service.context import SecurityContext
from openrecord.service.records import RecordService
from openrecord.store import open_store
from tests.server.conftest import Server

OPEN = SecurityContext.open()
COMPARTMENT = {
    "Patient/e1",
    "Encounter/enc1",
    "Observation/obs-2020",
    "Observation/obs-2022",
    "Condition/cond1",
    "MedicationRequest/mr1",
}
REFERENCED = {"Practitioner/pr1", "Organization/org1", "Location/l1", "Medication/m1"}
LOINC = "http://loinc.org"


def _observation(id: str, patient: str, when: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": when,
        "performer": [{"reference": "Practitioner/pr1"}],
    }


def _resources() -> list[dict[str, Any]]:
    return [
        {"resourceType": "Practitioner", "id": "pr1", "name": [{"family": "Doe"}]},
        {"resourceType": "Organization", "id": "org1", "name": "Clinic"},
        {"resourceType": "Location", "id": "l1", "name": "Room 1"},
        {
            "resourceType": "Medication",
            "id": "m1",
            "code": {
                "coding": [
                    {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1049221"}
                ]
            },
        },
        {"resourceType": "Patient", "id": "e1", "name": [{"family": "One"}]},
        {"resourceType": "Patient", "id": "e2", "name": [{"family": "Two"}]},
        {
            "resourceType": "Encounter",
            "id": "enc1",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": "Patient/e1"},
            "period": {"start": "2020-05-01T09:00:00Z", "end": "2020-05-01T10:00:00Z"},
            "location": [{"location": {"reference": "Location/l1"}}],
            "serviceProvider": {"reference": "Organization/org1"},
            "participant": [{"individual": {"reference": "Practitioner/pr1"}}],
        },
        _observation("obs-2020", "e1", "2020-05-01T09:30:00Z"),
        _observation("obs-2022", "e1", "2022-03-01T08:00:00Z"),
        _observation("obs-e2", "e2", "2022-03-01T08:00:00Z"),
        {
            "resourceType": "Condition",
            "id": "cond1",
            "subject": {"reference": "Patient/e1"},
            "code": {"text": "Asthma"},
        },
        {
            "resourceType": "MedicationRequest",
            "id": "mr1",
            "status": "active",
            "intent": "order",
            "subject": {"reference": "Patient/e1"},
            "medicationReference": {"reference": "Medication/m1"},
        },
    ]


@pytest.fixture(scope="module")
def loaded(server: Server) -> Server:
    with httpx.Client(base_url=server.base, timeout=60) as c:
        for r in _resources():
            assert c.put(f"/{r['resourceType']}/{r['id']}", json=r).status_code in (200, 201)
    return server


@pytest.fixture()
def http(loaded: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=loaded.base, timeout=60) as c:
        yield c


def _split(bundle: dict[str, Any]) -> tuple[list[str], set[str]]:
    matches = [
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == "match"
    ]
    included = {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == "include"
    }
    return matches, included


def test_everything_is_the_compartment_and_what_it_refers_to(http: httpx.Client) -> None:
    r = http.get("/Patient/e1/$everything")
    assert r.status_code == 200
    bundle = r.json()
    assert bundle["type"] == "searchset"
    matches, included = _split(bundle)
    assert sorted(matches) == sorted(COMPARTMENT)
    assert included == REFERENCED
    assert bundle["total"] == len(COMPARTMENT)


def test_type_filter_and_referenced_types(http: httpx.Client) -> None:
    matches, included = _split(http.get("/Patient/e1/$everything?_type=Observation").json())
    assert set(matches) == {"Observation/obs-2020", "Observation/obs-2022"}
    assert included == set()
    r = http.get("/Patient/e1/$everything", params={"_type": "Observation,Practitioner"})
    matches, included = _split(r.json())
    assert set(matches) == {"Observation/obs-2020", "Observation/obs-2022"}
    assert included == {"Practitioner/pr1"}


def test_start_and_end_keep_what_overlaps_and_what_is_undated(http: httpx.Client) -> None:
    matches, _ = _split(http.get("/Patient/e1/$everything?start=2021-01-01").json())
    assert set(matches) == COMPARTMENT - {"Encounter/enc1", "Observation/obs-2020"}
    matches, _ = _split(http.get("/Patient/e1/$everything?end=2020-12").json())
    assert set(matches) == COMPARTMENT - {"Observation/obs-2022"}


def test_since_and_paging(http: httpx.Client) -> None:
    matches, _ = _split(http.get("/Patient/e1/$everything?_since=2999-01-01T00:00:00Z").json())
    assert matches == []
    seen: list[str] = []
    url: str | None = "/Patient/e1/$everything?_count=2"
    pages = 0
    while url is not None:
        bundle = http.get(url).json()
        page, _ = _split(bundle)
        assert len(page) <= 2
        seen += page
        pages += 1
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    assert pages == 3
    assert sorted(seen) == sorted(COMPARTMENT)  # nothing repeated or skipped


def test_post_with_parameters(http: httpx.Client) -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "_type", "valueCode": "Condition"}],
    }
    r = http.post("/Patient/e1/$everything", json=body)
    assert r.status_code == 200
    assert _split(r.json())[0] == ["Condition/cond1"]


def test_errors(http: httpx.Client) -> None:
    assert http.get("/Patient/nobody/$everything").status_code == 404
    r = http.get("/Patient/e1/$everything?start=yesterday")
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["start"]
    assert http.get("/Patient/e1/$everything?_type=Nothing").status_code == 400
    assert http.get("/Patient/e1/$everything?color=red").status_code == 400


def test_audit_events_are_read_only_over_http(http: httpx.Client) -> None:
    r = http.get("/AuditEvent", params={"_count": "1"})
    event = r.json()["entry"][0]["resource"]
    for response in (
        http.put(f"/AuditEvent/{event['id']}", json=event),
        http.delete(f"/AuditEvent/{event['id']}"),
        http.post("/AuditEvent", json={k: v for k, v in event.items() if k != "id"}),
    ):
        assert response.status_code == 405
        assert response.json()["resourceType"] == "OperationOutcome"
    assert http.get(f"/AuditEvent/{event['id']}").json() == event


def test_everything_is_audited_once(http: httpx.Client) -> None:
    http.get("/Patient/e2/$everything?_type=Observation")
    r = http.get("/AuditEvent", params={"patient": "e2", "subtype": "operation", "_count": "100"})
    events = [e["resource"] for e in r.json().get("entry", [])]
    queries = [
        base64.b64decode(ent["query"]).decode()
        for ev in events
        for ent in ev.get("entity", [])
        if "query" in ent
    ]
    assert queries.count("Patient/e2/$everything?_type=Observation") == 1


# -- with patient-scoped contexts (service level) ---------------------------------------


@pytest.fixture
def records(store_url: str) -> Iterator[RecordService]:
    store = open_store(store_url)
    try:
        service = RecordService(store)
        for r in _resources():
            service.update(OPEN, r["resourceType"], r["id"], r)
        yield service
    finally:
        store.close()


def _everything(
    records: RecordService, ctx: SecurityContext, id: str, *pairs: tuple[str, str]
) -> Any:
    return everything(records, ctx, id, parse_query(records, list(pairs)))


def test_a_patient_token_gets_its_own_compartment_only(records: RecordService) -> None:
    e1 = SecurityContext.of("patient/*.rs", patient="e1")
    page = _everything(records, e1, "e1")
    assert {f"{r.type}/{r.id}" for r in page.resources} == COMPARTMENT
    assert page.included == []  # Practitioner, Organization…: outside patient-level grants
    with pytest.raises(FHIRError) as err:
        _everything(records, e1, "e2")
    assert err.value.status == 404  # another patient: not revealed
    system = SecurityContext.of("system/*.rs")
    page = _everything(records, system, "e1")
    assert {f"{r.type}/{r.id}" for r in page.included} == REFERENCED


def test_consent_applies_to_everything(records: RecordService) -> None:
    labelled = _observation("obs-psy", "e1", "2021-01-01T00:00:00Z")
    labelled["meta"] = {
        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]
    }
    records.update(OPEN, "Observation", "obs-psy", labelled)
    consent = {
        "resourceType": "Consent",
        "id": "c1",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": LOINC, "code": "59284-0"}]}],
        "patient": {"reference": "Patient/e1"},
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}
            ]
        },
        "provision": {"type": "deny", "securityLabel": [labelled["meta"]["security"][0]]},
    }
    records.update(OPEN, "Consent", "c1", consent)
    clinician = SecurityContext(user="Practitioner/pr1", scopes=frozenset({"user/*.rs"}))
    seen = {f"{r.type}/{r.id}" for r in _everything(records, clinician, "e1").resources}
    assert "Observation/obs-psy" not in seen and "Observation/obs-2022" in seen
    self_ctx = SecurityContext(user="Patient/e1", patient="e1", scopes=frozenset({"patient/*.rs"}))
    seen = {f"{r.type}/{r.id}" for r in _everything(records, self_ctx, "e1").resources}
    assert "Observation/obs-psy" in seen


# -- with a patient's bearer token (the authorization server on) ------------------------

from tests.auth.conftest import AuthServer, auth_server  # noqa: E402, F401  (fixture)
from tests.auth.oauth_helpers import bearer, patient_login, register_app  # noqa: E402


def test_a_patient_token_lists_its_audit_trail_and_only_its_record(
    auth_server: AuthServer,  # noqa: F811  (the fixture imported above)
) -> None:
    base = auth_server.base
    app = register_app(base, client_name="Audit reader")
    scope = "launch/patient openid fhirUser patient/*.rs"
    token = patient_login(base, auth_server.database, app["client_id"], "pa", scope)
    assert token["patient"] == "pa"
    headers = bearer(token["access_token"])
    with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
        assert c.get("/Observation/oa").status_code == 200
        assert c.get("/Observation/ob").status_code == 404  # Bravo's: not revealed
        assert c.get("/Patient/pb/$everything").status_code == 404
        assert c.get("/Observation", params={"subject:Patient.name": "Bravo"}).status_code == 403
        own = c.get("/Patient/pa/$everything").json()
        ids = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in own["entry"]}
        assert ids == {"Patient/pa", "Observation/oa"}
        r = c.get("/AuditEvent", params={"patient": "me", "_count": "200"})
        assert r.status_code == 200
        events = [e["resource"] for e in r.json()["entry"]]
    patients = [
        {
            ent["what"]["reference"]
            for ent in ev.get("entity", [])
            if ent.get("role", {}).get("code") == "1"
        }
        for ev in events
    ]
    assert all("Patient/pa" in p for p in patients)
    assert not any("Patient/pb" in p for p in patients)
    # the operator's seeding transaction, this app's reads, and the refused probe of Bravo
    # (recorded with Alpha as the requester's patient) are all there
    assert any(ev["subtype"][0]["code"] == "transaction" for ev in events)
    mine = [
        ev
        for ev in events
        if any(
            a.get("who", {}).get("identifier", {}).get("value") == app["client_id"]
            for a in ev["agent"]
        )
    ]
    assert {ev["outcome"] for ev in mine} >= {"0", "8"}
