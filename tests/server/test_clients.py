"""Real FHIR client libraries from PyPI against the running server: fhirpy and fhirclient."""

from __future__ import annotations

import uuid

import httpx
from fhirclient import client as fc_client
from fhirclient.models.humanname import HumanName
from fhirclient.models.identifier import Identifier
from fhirclient.models.patient import Patient
from fhirpy import SyncFHIRClient

from tests.server.conftest import Server


def test_fhirpy_crud_history_and_paging(server: Server) -> None:
    client = SyncFHIRClient(server.base)
    tag = uuid.uuid4().hex
    created = []
    for i in range(7):
        p = client.resource(
            "Patient",
            identifier=[{"system": "urn:test:fhirpy", "value": f"{tag}-{i}"}],
            name=[{"family": f"Fhirpy{i}", "given": ["Ann"]}],
            gender="female",
        )
        p.save()
        assert p.id
        created.append(p.id)
    first = client.reference("Patient", created[0]).to_resource()
    assert first["name"][0]["family"] == "Fhirpy0"
    first["gender"] = "other"
    first.save()
    assert client.reference("Patient", created[0]).to_resource()["gender"] == "other"

    # Paging: 7 matches, 3 per page; fetch_all follows the next links.
    found = client.resources("Patient").search(identifier=f"urn:test:fhirpy|{tag}-0").fetch_all()
    assert [r.id for r in found] == [created[0]]
    everyone = client.resources("Patient").search(gender="female").limit(3).fetch_all()
    assert set(created[1:]) <= {r.id for r in everyone}

    history = client.execute(f"Patient/{created[0]}/_history", method="get")
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]

    client.reference("Patient", created[1]).to_resource().delete()
    r = httpx.get(f"{server.base}/Patient/{created[1]}")
    assert r.status_code == 410


def test_fhirclient_crud_search_and_paging(server: Server) -> None:
    smart = fc_client.FHIRClient(settings={"app_id": "openrecord-tests", "api_base": server.base})
    fhir = smart.server
    tag = uuid.uuid4().hex
    ids = []
    for i in range(5):
        p = Patient()
        p.identifier = [Identifier({"system": "urn:test:fhirclient", "value": f"{tag}-{i}"})]
        p.name = [HumanName({"family": f"Client{i}", "given": ["Bo"]})]
        p.gender = "male"
        result = p.create(fhir)
        assert result is not None
        ids.append(result["id"])

    read = Patient.read(ids[0], fhir)
    assert read.name[0].family == "Client0"
    read.gender = "unknown"
    read.update(fhir)
    assert Patient.read(ids[0], fhir).gender == "unknown"
    history = fhir.request_json(f"Patient/{ids[0]}/_history")
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
    assert [e["resource"]["gender"] for e in history["entry"]] == ["unknown", "male"]

    search = Patient.where(struct={"identifier": f"urn:test:fhirclient|{tag}-3"})
    found = list(search.perform_resources_iter(fhir))
    assert [r.id for r in found] == [ids[3]]

    paged = Patient.where(struct={"gender": "male", "_count": "2"})
    every = list(paged.perform_resources_iter(fhir))
    assert set(ids[1:]) <= {r.id for r in every}

    Patient.read(ids[4], fhir).delete()
    assert httpx.get(f"{server.base}/Patient/{ids[4]}").status_code == 410
