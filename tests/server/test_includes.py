"""_include and _revinclude (search.html#include), over HTTP."""

from __future__ import annotations

import uuid
from typing import Any

import httpx


def create(client: httpx.Client, resource: dict[str, Any]) -> str:
    r = client.post(f"/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def by_mode(bundle: dict[str, Any], mode: str) -> list[tuple[str, str]]:
    return sorted(
        (e["resource"]["resourceType"], e["resource"]["id"])
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == mode
    )


def setup_records(client: httpx.Client) -> dict[str, str]:
    tag = uuid.uuid4().hex
    org = create(client, {"resourceType": "Organization", "name": f"Clinic {tag}"})
    pid = create(
        client,
        {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:test:inc", "value": tag}],
            "managingOrganization": {"reference": f"Organization/{org}"},
        },
    )
    obs = [
        create(
            client,
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "urn:test:inc", "code": tag}]},
                "subject": {"reference": f"Patient/{pid}"},
            },
        )
        for _ in range(3)
    ]
    return {"tag": tag, "org": org, "patient": pid, **{f"obs{i}": o for i, o in enumerate(obs)}}


def test_include_adds_referenced_resources_once(client: httpx.Client) -> None:
    ids = setup_records(client)
    r = client.get(
        "/Observation",
        params={
            "code": f"urn:test:inc|{ids['tag']}",
            "_include": "Observation:subject",
            "_count": 2,
        },
    )
    assert r.status_code == 200, r.text
    bundle = r.json()
    # Two matches (the page size); the patient they share is included once, uncounted.
    assert len(by_mode(bundle, "match")) == 2
    assert by_mode(bundle, "include") == [("Patient", ids["patient"])]
    assert any(link["relation"] == "next" for link in bundle["link"])
    typed = client.get(
        "/Observation",
        params={"code": f"urn:test:inc|{ids['tag']}", "_include": "Observation:subject:Group"},
    ).json()
    assert by_mode(typed, "include") == []


def test_revinclude_adds_referring_resources(client: httpx.Client) -> None:
    ids = setup_records(client)
    r = client.get(
        "/Patient",
        params={
            "identifier": f"urn:test:inc|{ids['tag']}",
            "_revinclude": "Observation:subject",
            "_include": "Patient:organization",
        },
    )
    bundle = r.json()
    assert by_mode(bundle, "match") == [("Patient", ids["patient"])]
    expected = sorted(
        [("Observation", ids[f"obs{i}"]) for i in range(3)] + [("Organization", ids["org"])]
    )
    assert by_mode(bundle, "include") == expected


def test_include_errors(client: httpx.Client) -> None:
    assert client.get("/Observation", params={"_include": "Observation:nope"}).status_code == 400
    assert client.get("/Observation", params={"_include": "Observation"}).status_code == 400
    assert client.get("/Observation", params={"_include": "Nope:*"}).status_code == 400


def test_include_wildcard_follows_every_reference_parameter(client: httpx.Client) -> None:
    ids = setup_records(client)
    enc = create(
        client,
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{ids['patient']}"},
            "serviceProvider": {"reference": f"Organization/{ids['org']}"},
        },
    )
    # Encounter:* follows subject and serviceProvider (both reference parameters)
    star = client.get("/Encounter", params={"_id": enc, "_include": "Encounter:*"}).json()
    assert by_mode(star, "include") == sorted(
        [("Patient", ids["patient"]), ("Organization", ids["org"])]
    )
    typed = client.get("/Encounter", params={"_id": enc, "_include": "Encounter:*:Patient"})
    assert by_mode(typed.json(), "include") == [("Patient", ids["patient"])]
    bare = client.get("/Encounter", params={"_id": enc, "_include": "*"}).json()
    assert by_mode(bare, "include") == by_mode(star, "include")
    # Observation:* in reverse: every Observation parameter that refers to the patient
    rev = client.get(
        "/Patient", params={"_id": ids["patient"], "_revinclude": "Observation:*"}
    ).json()
    assert by_mode(rev, "include") == sorted(("Observation", ids[f"obs{i}"]) for i in range(3))
    # _revinclude=*: everything that refers to the patient, of any type
    every = client.get("/Patient", params={"_id": ids["patient"], "_revinclude": "*"}).json()
    assert by_mode(every, "include") == sorted(
        [("Encounter", enc)] + [("Observation", ids[f"obs{i}"]) for i in range(3)]
    )
    assert not [e for e in every["entry"] if e["search"]["mode"] == "outcome"]


def test_include_iterate_follows_included_resources(client: httpx.Client) -> None:
    ids = setup_records(client)
    params = {
        "code": f"urn:test:inc|{ids['tag']}",
        "_include": "Observation:subject",
        "_include:iterate": "Patient:organization",
    }
    bundle = client.get("/Observation", params=params).json()
    assert by_mode(bundle, "include") == sorted(
        [("Patient", ids["patient"]), ("Organization", ids["org"])]
    )
    # Without :iterate, Patient:organization applies to the matches only (Observations).
    plain = dict(params)
    plain.pop("_include:iterate")
    plain["_include"] = "Patient:organization"
    assert by_mode(client.get("/Observation", params=plain).json(), "include") == []


def test_capability_lists_includes(client: httpx.Client) -> None:
    resources = {r["type"]: r for r in client.get("/metadata").json()["rest"][0]["resource"]}
    assert "Observation:subject" in resources["Observation"]["searchInclude"]
    assert "Observation:subject" in resources["Patient"]["searchRevInclude"]
    assert "Observation:*" in resources["Observation"]["searchInclude"]
    assert "Observation:*" in resources["Patient"]["searchRevInclude"]
