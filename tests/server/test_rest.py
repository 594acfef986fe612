"""The REST interactions of FHIR R4 (http.html), driven over HTTP against a real server."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

FHIR_JSON = "application/fhir+json"


def patient(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
        "gender": "male",
        "birthDate": "1974-12-25",
    }
    body.update(extra)
    return body


def issue_expressions(response: httpx.Response) -> list[str]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return [e for i in body["issue"] for e in i.get("expression", [])]


def create(client: httpx.Client, resource: dict[str, Any], **headers: str) -> httpx.Response:
    return client.post(f"/{resource['resourceType']}", json=resource, headers=headers)


# -- create, read, vread ---------------------------------------------------------------


def test_create_assigns_id_version_and_headers(client: httpx.Client) -> None:
    r = create(client, patient())
    assert r.status_code == 201
    body = r.json()
    pid = body["id"]
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["location"].endswith(f"/Patient/{pid}/_history/1")
    assert r.headers["content-type"].startswith(FHIR_JSON)
    assert "last-modified" in r.headers

    read = client.get(f"/Patient/{pid}")
    assert read.status_code == 200
    assert read.json() == body
    assert read.headers["etag"] == 'W/"1"'
    vread = client.get(f"/Patient/{pid}/_history/1")
    assert vread.json() == body


def test_create_ignores_client_id(client: httpx.Client) -> None:
    r = create(client, patient(id="client-chosen"))
    assert r.status_code == 201
    assert r.json()["id"] != "client-chosen"


def test_read_unknown_is_404_with_outcome(client: httpx.Client) -> None:
    r = client.get("/Patient/does-not-exist")
    assert r.status_code == 404
    assert r.json()["resourceType"] == "OperationOutcome"
    assert client.get("/Patient/x/_history/9").status_code == 404


def test_unknown_type_is_404(client: httpx.Client) -> None:
    r = client.get("/Patientt/1")
    assert r.status_code == 404
    assert r.json()["resourceType"] == "OperationOutcome"


def test_prefer_return(client: httpx.Client) -> None:
    minimal = create(client, patient(), Prefer="return=minimal")
    assert minimal.status_code == 201 and minimal.content == b""
    assert minimal.headers["location"]
    oo = create(client, patient(), Prefer="return=OperationOutcome")
    assert oo.status_code == 201 and oo.json()["resourceType"] == "OperationOutcome"


# -- update, versions, If-Match --------------------------------------------------------


def test_update_versions_and_if_match(client: httpx.Client) -> None:
    pid = create(client, patient()).json()["id"]
    changed = patient(id=pid, gender="female")
    r = client.put(f"/Patient/{pid}", json=changed, headers={"If-Match": 'W/"1"'})
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "2"
    stale = client.put(f"/Patient/{pid}", json=patient(id=pid), headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert client.get(f"/Patient/{pid}").json()["gender"] == "female"
    assert client.get(f"/Patient/{pid}/_history/1").json()["gender"] == "male"


def test_unchanged_update_makes_no_new_version(client: httpx.Client) -> None:
    pid = create(client, patient()).json()["id"]
    r = client.put(f"/Patient/{pid}", json=patient(id=pid))
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "1"


def test_update_as_create(client: httpx.Client) -> None:
    r = client.put("/Patient/chosen-by-client-1", json=patient(id="chosen-by-client-1"))
    assert r.status_code == 201
    assert r.json()["meta"]["versionId"] == "1"
    assert client.get("/Patient/chosen-by-client-1").status_code == 200


def test_update_id_must_match_url(client: httpx.Client) -> None:
    assert client.put("/Patient/a1", json=patient(id="b2")).status_code == 400
    assert client.put("/Patient/a1", json=patient()).status_code == 400


# -- delete ----------------------------------------------------------------------------


def test_delete_then_read_is_410_and_history_keeps_it(client: httpx.Client) -> None:
    pid = create(client, patient()).json()["id"]
    assert client.delete(f"/Patient/{pid}").status_code == 204
    gone = client.get(f"/Patient/{pid}")
    assert gone.status_code == 410
    assert gone.json()["resourceType"] == "OperationOutcome"
    history = client.get(f"/Patient/{pid}/_history").json()
    assert history["type"] == "history"
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]
    # Deleting again, or deleting what never existed, is not an error.
    assert client.delete(f"/Patient/{pid}").status_code == 204
    # An update brings it back as a new version.
    back = client.put(f"/Patient/{pid}", json=patient(id=pid))
    assert back.status_code == 201
    assert back.json()["meta"]["versionId"] == "3"


# -- conditional interactions ----------------------------------------------------------


def test_conditional_create(client: httpx.Client) -> None:
    body = patient(identifier=[{"system": "urn:test:mrn", "value": "cc-1"}])
    first = create(client, body, **{"If-None-Exist": "identifier=urn:test:mrn|cc-1"})
    assert first.status_code == 201
    again = create(client, body, **{"If-None-Exist": "identifier=urn:test:mrn|cc-1"})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    unknown = create(client, body, **{"If-None-Exist": "no-such-param=1"})
    assert unknown.status_code == 400


def test_conditional_update_and_delete(client: httpx.Client) -> None:
    ident = [{"system": "urn:test:mrn", "value": "cu-1"}]
    created = client.put("/Patient?identifier=urn:test:mrn|cu-1", json=patient(identifier=ident))
    assert created.status_code == 201
    pid = created.json()["id"]
    updated = client.put(
        "/Patient?identifier=urn:test:mrn|cu-1", json=patient(identifier=ident, gender="other")
    )
    assert updated.status_code == 200
    assert updated.json()["id"] == pid and updated.json()["meta"]["versionId"] == "2"
    assert client.delete("/Patient?identifier=urn:test:mrn|cu-1").status_code == 204
    assert client.get(f"/Patient/{pid}").status_code == 410


def test_conditional_create_multiple_matches_is_412(client: httpx.Client) -> None:
    ident = [{"system": "urn:test:mrn", "value": "dup"}]
    create(client, patient(identifier=ident))
    create(client, patient(identifier=ident))
    r = create(
        client, patient(identifier=ident), **{"If-None-Exist": "identifier=urn:test:mrn|dup"}
    )
    assert r.status_code == 412


def test_conditional_read(client: httpx.Client) -> None:
    r = create(client, patient())
    pid = r.json()["id"]
    assert client.get(f"/Patient/{pid}", headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert client.get(f"/Patient/{pid}", headers={"If-None-Match": 'W/"2"'}).status_code == 200
    since = r.headers["last-modified"]
    assert client.get(f"/Patient/{pid}", headers={"If-Modified-Since": since}).status_code == 304
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert client.get(f"/Patient/{pid}", headers={"If-Modified-Since": old}).status_code == 200


# -- patch -----------------------------------------------------------------------------


def test_json_patch(client: httpx.Client) -> None:
    pid = create(client, patient()).json()["id"]
    ops = [
        {"op": "replace", "path": "/gender", "value": "female"},
        {"op": "add", "path": "/name/0/given/-", "value": "Jim"},
    ]
    r = client.patch(
        f"/Patient/{pid}", json=ops, headers={"Content-Type": "application/json-patch+json"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["gender"] == "female"
    assert body["name"][0]["given"] == ["Peter", "James", "Jim"]
    assert body["meta"]["versionId"] == "2"
    bad = client.patch(
        f"/Patient/{pid}",
        json=[{"op": "replace", "path": "/gender", "value": "robot"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert bad.status_code == 422  # the result violates the required binding
    assert client.get(f"/Patient/{pid}").json()["gender"] == "female"


def test_fhirpath_patch(client: httpx.Client) -> None:
    pid = create(client, patient()).json()["id"]
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "replace"},
                    {"name": "path", "valueString": "Patient.birthDate"},
                    {"name": "value", "valueDate": "1975-01-01"},
                ],
            }
        ],
    }
    r = client.patch(f"/Patient/{pid}", json=params, headers={"Content-Type": FHIR_JSON})
    assert r.status_code == 200, r.text
    assert r.json()["birthDate"] == "1975-01-01"


# -- history ---------------------------------------------------------------------------


def test_history_levels_and_paging(client: httpx.Client) -> None:
    pid = create(client, patient()).json()["id"]
    for g in ("female", "other", "unknown"):
        client.put(f"/Patient/{pid}", json=patient(id=pid, gender=g))
    inst = client.get(f"/Patient/{pid}/_history").json()
    assert [e["resource"]["meta"]["versionId"] for e in inst["entry"]] == ["4", "3", "2", "1"]
    assert inst["total"] == 4
    page = client.get(f"/Patient/{pid}/_history", params={"_count": 2}).json()
    assert len(page["entry"]) == 2
    nxt = next(link["url"] for link in page["link"] if link["relation"] == "next")
    # A write between pages must not shift the second page.
    client.put(f"/Patient/{pid}", json=patient(id=pid, gender="male"))
    second = httpx.get(nxt).json()
    assert [e["resource"]["meta"]["versionId"] for e in second["entry"]] == ["2", "1"]
    assert client.get("/Patient/_history", params={"_count": 1}).json()["entry"]
    assert client.get("/_history", params={"_count": 1}).json()["type"] == "history"


def test_history_since_and_at(client: httpx.Client) -> None:
    first = create(client, patient()).json()
    pid = first["id"]
    second = client.put(f"/Patient/{pid}", json=patient(id=pid, gender="female")).json()
    since = client.get(
        f"/Patient/{pid}/_history", params={"_since": second["meta"]["lastUpdated"]}
    ).json()
    assert [e["resource"]["meta"]["versionId"] for e in since["entry"]] == ["2"]
    at = client.get(f"/Patient/{pid}/_history", params={"_at": first["meta"]["lastUpdated"]}).json()
    assert [e["resource"]["meta"]["versionId"] for e in at["entry"]] == ["1"]
    assert client.get("/_history", params={"_since": "yesterday"}).status_code == 400


# -- _summary, _elements, _pretty, formats ---------------------------------------------


def test_summary_and_elements(client: httpx.Client) -> None:
    body = patient(
        text={
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml">Peter</div>',
        },
        maritalStatus={"text": "married"},
    )
    pid = create(client, body).json()["id"]
    summary = client.get(f"/Patient/{pid}", params={"_summary": "true"}).json()
    # Patient.name/gender/birthDate are summary elements; text and maritalStatus are not.
    assert {"name", "gender", "birthDate"} <= summary.keys()
    assert "text" not in summary and "maritalStatus" not in summary
    assert any(t["code"] == "SUBSETTED" for t in summary["meta"]["tag"])
    data = client.get(f"/Patient/{pid}", params={"_summary": "data"}).json()
    assert "text" not in data and "maritalStatus" in data
    text = client.get(f"/Patient/{pid}", params={"_summary": "text"}).json()
    assert "text" in text and "gender" not in text
    elements = client.get(f"/Patient/{pid}", params={"_elements": "gender"}).json()
    assert elements["gender"] == "male" and "name" not in elements and elements["id"] == pid
    pretty = client.get(f"/Patient/{pid}", params={"_pretty": "true"})
    assert b"\n  " in pretty.content


def test_formats(client: httpx.Client) -> None:
    pid = create(client, patient()).json()["id"]
    assert client.get(f"/Patient/{pid}", params={"_format": "json"}).status_code == 200
    assert client.get(f"/Patient/{pid}", headers={"Accept": "application/json"}).status_code == 200
    xml = client.get(f"/Patient/{pid}", headers={"Accept": "application/fhir+xml"})
    assert xml.status_code == 406 and xml.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/Patient/{pid}", params={"_format": "xml"}).status_code == 406
    r = client.post(
        "/Patient", content=b"<Patient/>", headers={"Content-Type": "application/fhir+xml"}
    )
    assert r.status_code == 415


# -- errors ----------------------------------------------------------------------------


def test_malformed_json_is_400(client: httpx.Client) -> None:
    r = client.post(
        "/Patient", content=b'{"resourceType": "Patient",', headers={"Content-Type": FHIR_JSON}
    )
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"


def test_wrong_resource_type_in_body_is_400(client: httpx.Client) -> None:
    r = client.post("/Patient", json={"resourceType": "Observation"})
    assert r.status_code == 400


@pytest.mark.parametrize(
    ("mutation", "expression"),
    [
        ({"foo": 1}, "Patient.foo"),
        ({"active": "yes"}, "Patient.active"),
        ({"birthDate": "1974-13-01"}, "Patient.birthDate"),
        ({"gender": "robot"}, "Patient.gender"),
        ({"name": {"family": "x"}}, "Patient.name"),
        ({"deceasedBoolean": True, "deceasedDateTime": "2020-01-01"}, "Patient.deceased"),
    ],
)
def test_invalid_content_is_422_with_expression(
    client: httpx.Client, mutation: dict[str, Any], expression: str
) -> None:
    r = create(client, patient(**mutation))
    assert r.status_code == 422
    assert any(e.startswith(expression) for e in issue_expressions(r)), r.text


def test_method_not_allowed(client: httpx.Client) -> None:
    assert client.request("PATCH", "/metadata").status_code == 405
    assert client.delete("/Patient/_history").status_code in (404, 405)


def test_body_limit_is_413(client: httpx.Client) -> None:
    big = patient(
        text={"status": "generated", "div": "<div>" + "x" * (65 * 1024 * 1024) + "</div>"}
    )
    r = create(client, big)
    assert r.status_code == 413
    assert r.json()["resourceType"] == "OperationOutcome"


def test_no_stack_traces(client: httpx.Client) -> None:
    r = client.post("/Patient", json=[1, 2, 3])
    assert r.status_code == 400
    assert "Traceback" not in r.text


# -- $validate, metadata ---------------------------------------------------------------


def test_validate_operation(client: httpx.Client) -> None:
    ok = client.post("/Patient/$validate", json=patient())
    assert ok.status_code == 200
    assert all(i["severity"] not in ("error", "fatal") for i in ok.json()["issue"])
    bad = client.post("/Patient/$validate", json=patient(gender="robot"))
    assert bad.status_code == 200
    assert "Patient.gender" in issue_expressions(bad)
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": patient(id="x1")},
            {"name": "mode", "valueCode": "update"},
        ],
    }
    upd = client.post("/Patient/x1/$validate", json=params)
    assert upd.status_code == 200
    assert all(i["severity"] != "error" for i in upd.json()["issue"])
    missing = client.post("/Patient/nope/$validate?mode=delete", json=patient())
    assert missing.status_code == 404


def test_capability_statement(client: httpx.Client) -> None:
    r = client.get("/metadata")
    assert r.status_code == 200
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    resources = {res["type"]: res for res in cs["rest"][0]["resource"]}
    assert len(resources) == 146  # every concrete R4 resource type
    obs = resources["Observation"]
    assert {i["code"] for i in obs["interaction"]} >= {
        "read",
        "vread",
        "create",
        "update",
        "delete",
    }
    params = {p["name"]: p["type"] for p in obs["searchParam"]}
    assert params["code"] == "token" and params["date"] == "date"
    assert params["combo-code-value-quantity"] == "composite"
    ops = {i["code"] for i in cs["rest"][0]["interaction"]}
    assert ops == {"transaction", "batch", "search-system", "history-system"}


def test_system_search_by_type(client: httpx.Client) -> None:
    value = "sys-" + create(client, patient()).json()["id"]
    create(client, patient(identifier=[{"system": "urn:test:sys", "value": value}]))
    found = client.get("", params={"_type": "Patient", "identifier": f"urn:test:sys|{value}"})
    assert found.status_code == 200, found.text
    entries = found.json().get("entry", [])
    assert [e["resource"]["resourceType"] for e in entries] == ["Patient"]
    assert client.get("", params={"_type": "Nonsense"}).status_code == 404
    assert client.get("", params={"_type": "Patient,Nonsense"}).status_code == 404


def test_system_search_across_several_types(client: httpx.Client) -> None:
    pid = create(client, patient()).json()["id"]
    subject = {"reference": f"Patient/{pid}"}
    code = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}
    obs = create(
        client, {"resourceType": "Observation", "status": "final", "code": code, "subject": subject}
    ).json()["id"]
    cond = create(client, {"resourceType": "Condition", "subject": subject}).json()["id"]
    create(
        client,
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": subject,
        },
    )
    # `patient` is defined for Observation and Condition: both match, the Encounter is
    # not among the types asked for
    found = client.get("", params={"_type": "Observation,Condition", "patient": f"Patient/{pid}"})
    assert found.status_code == 200, found.text
    got = sorted(
        (e["resource"]["resourceType"], e["resource"]["id"]) for e in found.json()["entry"]
    )
    assert got == [("Condition", cond), ("Observation", obs)]
    # `code` exists on both, `onset-date` only on Condition: reported, or 400 when strict
    mixed = {"_type": "Observation,Condition", "patient": f"Patient/{pid}", "onset-date": "2020"}
    lenient = client.get("", params=mixed).json()
    outcome = [e for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome and "onset-date" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    strict = client.get("", params=mixed, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    coded = client.get(
        "",
        params={
            "_type": "Observation,Condition",
            "code": "http://loinc.org|8867-4",
            "patient": f"Patient/{pid}",
        },
    ).json()
    matches = [e for e in coded["entry"] if e["search"]["mode"] == "match"]
    assert [(e["resource"]["resourceType"], e["resource"]["id"]) for e in matches] == [
        ("Observation", obs)
    ]


def test_search_reports_unknown_parameters(client: httpx.Client) -> None:
    lenient = client.get("/Patient", params={"no-such-param": "1", "_count": "1"})
    assert lenient.status_code == 200
    outcomes = [e for e in lenient.json().get("entry", []) if e["search"]["mode"] == "outcome"]
    assert outcomes and "no-such-param" in outcomes[0]["resource"]["issue"][0]["diagnostics"]
    strict = client.get(
        "/Patient", params={"no-such-param": "1"}, headers={"Prefer": "handling=strict"}
    )
    assert strict.status_code == 400
    assert client.get("/Patient", params={"birthdate": "not-a-date"}).status_code == 400
