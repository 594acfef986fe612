"""`$submit-cgm-bundle` (HL7 CGM IG 1.0.0) over HTTP with the IG's own example Bundle.

The OperationDefinition (OperationDefinition-submit-cgm-bundle.json) says: input a
`transaction` Bundle conforming to the data-submission profile (which requires
`timestamp`), output a `transaction-response` Bundle in the submission's order with a
status and location per entry, or an OperationOutcome when the whole fails.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.server.conftest import Server
from tests.shared_data import require_shared

IG = ("cgm", "hl7-cgm-ig-examples")
OP = "/$submit-cgm-bundle"


def ig(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(require_shared(*IG, name).read_text())
    return data


@pytest.fixture(scope="module")
def fhir(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base, timeout=60) as c:
        patient = ig("Patient-patientExample.json")
        assert c.put("/Patient/patientExample", json=patient).status_code in (200, 201)
        yield c


def count(fhir: httpx.Client, type: str, **params: str) -> int:
    got = fhir.get(f"/{type}", params={**params, "_summary": "count"})
    assert got.status_code == 200, got.text
    total: int = got.json()["total"]
    return total


def test_the_ig_example_bundle_is_stored_and_answered_in_order(fhir: httpx.Client) -> None:
    submission = ig("Bundle-cgmDataSubmissionBundle.json")
    answer = fhir.post(OP, json=submission)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "transaction-response"
    assert len(body["entry"]) == len(submission["entry"])
    for sent, got in zip(submission["entry"], body["entry"], strict=True):
        assert got["response"]["status"] == "201 Created"
        assert got["response"]["location"].split("/")[0] == sent["resource"]["resourceType"]
    ids = [e["response"]["location"].split("/")[1] for e in body["entry"]]
    # The PDF report's result and the summary's members are the stored Observations:
    # relative references resolved against the entries' fullUrl base (https://example.org/)
    report = fhir.get(f"/DiagnosticReport/{ids[0]}").json()
    assert report["result"] == [{"reference": f"Observation/{ids[1]}"}]
    assert report["presentedForm"][0]["contentType"] == "application/pdf"
    summary = fhir.get(f"/Observation/{ids[1]}").json()
    assert summary["code"]["coding"][0]["code"] == "107931-8"
    assert [m["reference"] for m in summary["hasMember"]] == [f"Observation/{i}" for i in ids[2:8]]
    tir = fhir.get(f"/Observation/{ids[3]}").json()
    assert [c["valueQuantity"]["value"] for c in tir["component"]] == [3, 8, 65, 20, 4]
    # The sensor reading (120 mg/dL at 2024-05-02T10:15:00Z) is in the reading store:
    metrics = fhir.get(
        "/Patient/patientExample/$cgm-summary",
        params={"start": "2024-05-02T10:00:00Z", "end": "2024-05-02T10:30:00Z"},
    ).json()
    values = {p["name"]: p["valueQuantity"]["value"] for p in metrics["parameter"]}
    assert values["mean"] == pytest.approx(120.0)
    assert values["time-in-range"] == pytest.approx(100.0)
    stored = fhir.get("/" + body["entry"][8]["response"]["location"]).json()
    assert stored["resourceType"] == "Observation"
    assert stored["valueQuantity"]["value"] == 120
    assert stored["subject"] == {"reference": "Patient/patientExample"}


def test_resubmitting_answers_ok_for_readings_already_held(fhir: httpx.Client) -> None:
    submission = ig("Bundle-cgmDataSubmissionBundle.json")
    reading = submission["entry"][-1]["resource"]
    reading["effectiveDateTime"] = "2024-05-03T07:00:00Z"  # not sent by the other tests
    first = fhir.post(OP, json=submission).json()
    assert first["entry"][-1]["response"]["status"] == "201 Created"
    body = fhir.post(OP, json=submission).json()
    assert body["entry"][-1]["response"]["status"] == "200 OK"
    assert body["entry"][-1]["response"]["location"] == first["entry"][-1]["response"]["location"]
    assert body["entry"][-1]["response"]["location"].startswith("Observation/")


def test_parameters_form_mmol_readings_and_a_patient_in_the_bundle(fhir: httpx.Client) -> None:
    reading = ig("Observation-cgmSensorReadingMolesPerVolumeExample.json")
    reading.pop("id", None)
    reading["subject"] = {"reference": "urn:uuid:7f3c1a52-4c1e-4d43-9a55-0c2b1c0f9e11"}
    reading["effectiveDateTime"] = "2025-03-01T12:00:00Z"
    device = ig("Device-cgmDeviceExample.json")
    device.pop("id", None)
    submission = {
        "resourceType": "Bundle",
        "type": "transaction",
        "timestamp": "2025-03-01T12:30:00Z",
        "entry": [
            {
                "fullUrl": "urn:uuid:7f3c1a52-4c1e-4d43-9a55-0c2b1c0f9e11",
                "resource": {"resourceType": "Patient", "name": [{"family": "Submitted"}]},
                "request": {"method": "POST", "url": "Patient"},
            },
            {"resource": device, "request": {"method": "POST", "url": "Device"}},
            {"resource": reading, "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    wrapped = {
        "resourceType": "Parameters",
        "parameter": [{"name": "resource", "resource": submission}],
    }
    answer = fhir.post(OP, json=wrapped)
    assert answer.status_code == 200, answer.text
    entries = answer.json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["201 Created"] * 3
    patient = entries[0]["response"]["location"].split("/")[1]
    assert (
        fhir.get(f"/Device/{entries[1]['response']['location'].split('/')[1]}").json()[
            "serialNumber"
        ]
        == "ABC123"
    )
    mmol = reading["valueQuantity"]["value"]
    metrics = fhir.get(
        f"/Patient/{patient}/$cgm-summary",
        params={"start": "2025-03-01T11:00:00Z", "end": "2025-03-01T13:00:00Z"},
    ).json()
    mean = next(p for p in metrics["parameter"] if p["name"] == "mean")["valueQuantity"]
    assert mean["value"] == pytest.approx(mmol * 18.0156, rel=1e-3)


def _broken(change: Any) -> dict[str, Any]:
    submission = copy.deepcopy(ig("Bundle-cgmDataSubmissionBundle.json"))
    change(submission)
    return submission


@pytest.mark.parametrize(
    ("change", "status", "expression"),
    [
        (lambda b: b.update(type="batch"), 400, "Bundle.type"),
        (lambda b: b.pop("timestamp"), 400, "Bundle.timestamp"),
        (lambda b: b.update(entry=[]), 400, "Bundle.entry"),
        (
            lambda b: b["entry"][8]["resource"]["subject"].update(reference="Patient/nobody"),
            404,
            None,
        ),
        (
            lambda b: b["entry"][8]["resource"].pop("effectiveDateTime"),
            400,
            "Bundle.entry[8].resource",
        ),
        (
            lambda b: b["entry"][8]["resource"]["subject"].update(reference="Group/x"),
            400,
            "Bundle.entry[8].resource.subject",
        ),
        (
            lambda b: b["entry"][8]["resource"]["valueQuantity"].update(value=5000),
            400,
            "Bundle.entry[8].resource.valueQuantity.value",
        ),
        (
            lambda b: b["entry"][2]["resource"].update(status="not-a-status"),
            422,
            "Bundle.entry[2].resource.status",
        ),
        (
            lambda b: b["entry"][8]["resource"].update(status="not-a-status"),
            422,
            "Bundle.entry[8].resource.status",
        ),
    ],
)
def test_a_bad_submission_is_refused_whole(
    fhir: httpx.Client, change: Any, status: int, expression: str | None
) -> None:
    before = count(fhir, "DiagnosticReport"), count(fhir, "Observation", code="97507-8")
    answer = fhir.post(OP, json=_broken(change))
    assert answer.status_code == status, answer.text
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    if expression is not None:
        assert any(
            e.startswith(expression) for i in outcome["issue"] for e in i.get("expression", [])
        ), outcome
    after = count(fhir, "DiagnosticReport"), count(fhir, "Observation", code="97507-8")
    assert after == before  # nothing half-written


def test_the_capability_statement_lists_the_operation(fhir: httpx.Client) -> None:
    statement = fhir.get("/metadata").json()
    ops = [op for rest in statement["rest"] for op in rest.get("operation", [])]
    assert {
        "name": "submit-cgm-bundle",
        "definition": "http://hl7.org/fhir/uv/cgm/OperationDefinition/submit-cgm-bundle",
    }.items() <= next(op for op in ops if op["name"] == "submit-cgm-bundle").items()
    assert fhir.get(OP).status_code == 405
