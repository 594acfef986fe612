"""batch and transaction Bundles (http.html#transaction), over HTTP."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx


def tx(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post(resource: dict[str, Any], full_url: str | None = None, **request: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def ident(value: str) -> list[dict[str, str]]:
    return [{"system": "urn:test:bundle", "value": value}]


def count(client: httpx.Client, type: str, query: str) -> int:
    bundle = client.get(f"/{type}?{query}&_count=100").json()
    return len(bundle.get("entry", []))


def test_transaction_resolves_urn_uuid_references(client: httpx.Client) -> None:
    p_url = f"urn:uuid:{uuid.uuid4()}"
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": p_url},
    }
    bundle = tx(post({"resourceType": "Patient", "identifier": ident("t1")}, p_url), post(obs))
    r = client.post("", json=bundle)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    patient_loc = body["entry"][0]["response"]["location"]
    assert (
        body["entry"][0]["fullUrl"]
        == f"{client.base_url}".rstrip("/") + "/" + patient_loc.split("/_history")[0]
    )
    obs_loc = body["entry"][1]["response"]["location"]
    pid = patient_loc.split("/")[1]
    stored = client.get("/" + obs_loc.split("/_history")[0]).json()
    assert stored["subject"]["reference"] == f"Patient/{pid}"


def test_transaction_is_all_or_nothing(client: httpx.Client) -> None:
    tag = uuid.uuid4().hex
    good = post({"resourceType": "Patient", "identifier": ident(tag)})
    bad = post({"resourceType": "Patient", "identifier": ident(tag), "gender": "robot"})
    r = client.post("", json=tx(good, good, bad))
    assert r.status_code in (400, 422)
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    expressions = [e for i in outcome["issue"] for e in i.get("expression", [])]
    assert "Bundle.entry[2].resource.gender" in expressions
    assert count(client, "Patient", f"identifier=urn:test:bundle|{tag}") == 0


def test_transaction_failing_write_rolls_back_earlier_writes(client: httpx.Client) -> None:
    tag = uuid.uuid4().hex
    pid = client.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    entries = [
        post({"resourceType": "Patient", "identifier": ident(tag)}),
        {
            "resource": {"resourceType": "Patient", "id": pid, "active": True},
            "request": {"method": "PUT", "url": f"Patient/{pid}", "ifMatch": 'W/"7"'},
        },
    ]
    r = client.post("", json=tx(*entries))
    assert r.status_code == 412
    assert count(client, "Patient", f"identifier=urn:test:bundle|{tag}") == 0
    assert client.get(f"/Patient/{pid}").json()["meta"]["versionId"] == "1"


def test_transaction_order_and_conditional_create(client: httpx.Client) -> None:
    tag = uuid.uuid4().hex
    existing = client.post("/Patient", json={"resourceType": "Patient", "identifier": ident(tag)})
    existing_id = existing.json()["id"]
    doomed = client.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    p_url = f"urn:uuid:{uuid.uuid4()}"
    entries = [
        {"request": {"method": "GET", "url": f"Patient?identifier=urn:test:bundle|{tag}"}},
        post(
            {"resourceType": "Patient", "identifier": ident(tag)},
            p_url,
            ifNoneExist=f"identifier=urn:test:bundle|{tag}",
        ),
        post(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": p_url},
            }
        ),
        {"request": {"method": "DELETE", "url": f"Patient/{doomed}"}},
    ]
    r = client.post("", json=tx(*entries))
    assert r.status_code == 200, r.text
    out = r.json()["entry"]
    # Responses keep the request order, whatever the processing order.
    assert out[0]["response"]["status"].startswith("200")
    assert out[0]["resource"]["resourceType"] == "Bundle"
    assert out[1]["response"]["status"] == "200 OK"  # matched, not created
    assert out[1]["response"]["location"].startswith(f"Patient/{existing_id}/")
    obs = client.get("/" + out[2]["response"]["location"].split("/_history")[0]).json()
    assert obs["subject"]["reference"] == f"Patient/{existing_id}"
    assert client.get(f"/Patient/{doomed}").status_code == 410


def test_conditional_reference(client: httpx.Client) -> None:
    tag = uuid.uuid4().hex
    pid = client.post(
        "/Patient", json={"resourceType": "Patient", "identifier": ident(tag)}
    ).json()["id"]
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": f"Patient?identifier=urn:test:bundle|{tag}"},
    }
    r = client.post("", json=tx(post(obs)))
    assert r.status_code == 200, r.text
    loc = r.json()["entry"][0]["response"]["location"]
    assert (
        client.get("/" + loc.split("/_history")[0]).json()["subject"]["reference"]
        == f"Patient/{pid}"
    )
    missing = dict(obs, subject={"reference": "Patient?identifier=urn:test:bundle|nobody"})
    assert client.post("", json=tx(post(missing))).status_code in (400, 404, 412)


def test_batch_reports_each_entry(client: httpx.Client) -> None:
    tag = uuid.uuid4().hex
    entries = [
        post({"resourceType": "Patient", "identifier": ident(tag)}),
        post({"resourceType": "Patient", "gender": "robot"}),
        {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
    ]
    r = client.post("", json=tx(*entries, kind="batch"))
    assert r.status_code == 200
    out = r.json()
    assert out["type"] == "batch-response"
    assert out["entry"][0]["response"]["status"] == "201 Created"
    assert out["entry"][1]["response"]["status"].startswith("422")
    assert out["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert out["entry"][2]["response"]["status"].startswith("404")
    assert count(client, "Patient", f"identifier=urn:test:bundle|{tag}") == 1


def test_bundle_shape_errors(client: httpx.Client) -> None:
    assert client.post("", json={"resourceType": "Bundle", "type": "collection"}).status_code == 400
    assert client.post("", json={"resourceType": "Patient"}).status_code == 400
    no_request = {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {}}]}
    r = client.post("", json=no_request)
    assert r.status_code == 400
    assert "Bundle.entry[0].request" in r.text


def test_patch_entries(client: httpx.Client) -> None:
    pid = client.post("/Patient", json={"resourceType": "Patient", "gender": "male"}).json()["id"]
    fhirpath_patch = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "replace"},
                    {"name": "path", "valueString": "Patient.gender"},
                    {"name": "value", "valueCode": "female"},
                ],
            }
        ],
    }
    json_patch = [{"op": "add", "path": "/birthDate", "value": "1990-01-02"}]
    binary = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(json.dumps(json_patch).encode()).decode(),
    }
    entries = [
        {"resource": fhirpath_patch, "request": {"method": "PATCH", "url": f"Patient/{pid}"}},
        {"resource": binary, "request": {"method": "PATCH", "url": f"Patient/{pid}"}},
    ]
    r = client.post("", json=tx(*entries))
    assert r.status_code == 200, r.text
    stored = client.get(f"/Patient/{pid}").json()
    assert (stored["gender"], stored["birthDate"]) == ("female", "1990-01-02")
    assert stored["meta"]["versionId"] == "3"
    changing_id = [{"op": "replace", "path": "/id", "value": "other"}]
    bad = dict(binary, data=base64.b64encode(json.dumps(changing_id).encode()).decode())
    entry = {"resource": bad, "request": {"method": "PATCH", "url": f"Patient/{pid}"}}
    assert client.post("", json=tx(entry)).status_code == 422
    assert client.get(f"/Patient/{pid}").json()["meta"]["versionId"] == "3"
