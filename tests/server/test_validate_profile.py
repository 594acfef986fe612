"""`$validate` with `profile=`: the profile's rules over HTTP, beside base R4 validation."""

from __future__ import annotations

import copy
from typing import Any

import httpx

from tests.fhir.test_profiles import BP, CGM, US

BP_PROFILE = US + "us-core-blood-pressure"


def errors(r: httpx.Response) -> list[str]:
    return [
        e for i in r.json()["issue"] if i["severity"] == "error" for e in i.get("expression", [])
    ]


def test_validate_against_a_profile_by_query_parameter(client: httpx.Client) -> None:
    ok = client.post("/Observation/$validate", params={"profile": BP_PROFILE}, json=BP)
    assert ok.status_code == 200
    assert errors(ok) == []
    broken = copy.deepcopy(BP)
    del broken["component"][0]  # no systolic component
    bad = client.post("/Observation/$validate", params={"profile": BP_PROFILE}, json=broken)
    assert bad.status_code == 200
    assert errors(bad) == ["Observation.component", "Observation.component"]
    # without a profile only base R4 applies, and the panel is valid R4
    plain = client.post("/Observation/$validate", json=broken)
    assert errors(plain) == []


def test_validate_against_a_profile_in_parameters(client: httpx.Client) -> None:
    wrong: dict[str, Any] = copy.deepcopy(BP)
    wrong["code"]["coding"][0]["code"] = "8867-4"
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": wrong},
            {"name": "profile", "valueCanonical": BP_PROFILE},
        ],
    }
    r = client.post("/Observation/$validate", json=params)
    assert r.status_code == 200
    assert errors(r) == ["Observation.code"]


def test_unknown_profile_is_a_bad_request(client: httpx.Client) -> None:
    r = client.post(
        "/Observation/$validate", params={"profile": "http://example.org/nope"}, json=BP
    )
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["profile"]


def test_capability_statement_lists_the_profiles_it_validates(client: httpx.Client) -> None:
    statement = client.get("/metadata").json()
    assert statement["instantiates"] == [
        "http://hl7.org/fhir/us/core/CapabilityStatement/us-core-server"
    ]
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert resources["Patient"]["supportedProfile"] == [US + "us-core-patient"]
    observation = resources["Observation"]["supportedProfile"]
    assert {BP_PROFILE, US + "us-core-observation-lab", CGM + "cgm-summary"} <= set(observation)
    assert "supportedProfile" not in resources["Basic"]  # neither guide profiles Basic
    # every listed profile is one $validate?profile= accepts, for that type
    for type_name, resource in resources.items():
        for url in resource.get("supportedProfile", []):
            r = client.post(f"/{type_name}/$validate", params={"profile": url}, json=BP)
            assert r.status_code == 200, url
    check = client.post("/CapabilityStatement/$validate", json=statement)
    assert errors(check) == []
