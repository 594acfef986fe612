"""Compartment search (search.html#compartments), per the official CompartmentDefinitions."""

from __future__ import annotations

import uuid
from typing import Any

import httpx


def create(client: httpx.Client, resource: dict[str, Any]) -> str:
    r = client.post(f"/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def observation(code: str, **refs: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
    }
    for name, ref in refs.items():
        body[name] = [{"reference": ref}] if name == "performer" else {"reference": ref}
    return body


def ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


def test_patient_compartment(client: httpx.Client) -> None:
    tag = uuid.uuid4().hex[:8]
    alice = create(client, {"resourceType": "Patient", "name": [{"family": f"A{tag}"}]})
    bob = create(client, {"resourceType": "Patient", "name": [{"family": f"B{tag}"}]})
    # Observation is in a patient's compartment through `subject` or `performer`.
    by_subject = create(client, observation("29463-7", subject=f"Patient/{alice}"))
    by_performer = create(client, observation("8867-4", performer=f"Patient/{alice}"))
    other = create(client, observation("29463-7", subject=f"Patient/{bob}"))
    # A Group subject with Alice's id is not Alice.
    create(client, observation("29463-7", subject=f"Group/{alice}"))

    found = client.get(f"/Patient/{alice}/Observation").json()
    assert ids(found) == {by_subject, by_performer}
    assert other not in ids(client.get(f"/Patient/{alice}/Observation").json())
    weights = client.get(f"/Patient/{alice}/Observation", params={"code": "29463-7"}).json()
    assert ids(weights) == {by_subject}
    assert found["link"][0]["url"].split("?")[0].endswith(f"/Patient/{alice}/Observation")
    # The patient is in its own compartment.
    assert ids(client.get(f"/Patient/{alice}/Patient").json()) == {alice}
    # Every type at once: the patient and both observations, nothing of Bob's.
    everything = client.get(f"/Patient/{alice}/*", params={"_count": "100"}).json()
    assert ids(everything) == {alice, by_subject, by_performer}


def test_encounter_compartment(client: httpx.Client) -> None:
    pid = create(client, {"resourceType": "Patient"})
    enc = create(
        client,
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{pid}"},
        },
    )
    inside = create(client, observation("29463-7", encounter=f"Encounter/{enc}"))
    create(client, observation("29463-7", subject=f"Patient/{pid}"))
    assert ids(client.get(f"/Encounter/{enc}/Observation").json()) == {inside}


def test_compartment_errors(client: httpx.Client) -> None:
    # Practitioner is not in the Patient compartment (CompartmentDefinition-patient).
    assert client.get("/Patient/x/Practitioner").status_code == 400
    assert client.get("/Observation/x/Patient").status_code == 404  # not a compartment
    assert client.get("/Patient/x/Nonsense").status_code == 404


def test_capability_lists_compartments(client: httpx.Client) -> None:
    rest = client.get("/metadata").json()["rest"][0]
    assert "http://hl7.org/fhir/CompartmentDefinition/patient" in rest["compartment"]
    assert "http://hl7.org/fhir/CompartmentDefinition/relatedPerson" in rest["compartment"]
