"""`_list` and `identifier:of-type` (search.html#list, search.html#token), over HTTP."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def create(client: httpx.Client, resource: dict[str, Any]) -> str:
    r = client.post(f"/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def current_list(mode: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "List", "status": "current", "mode": mode, "entry": list(entries)}


def item(reference: str, **more: Any) -> dict[str, Any]:
    """A List entry referring to `reference`."""
    return {"item": {"reference": reference}, **more}


def ids(bundle: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted(
        (e["resource"]["resourceType"], e["resource"]["id"])
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == "match"
    )


def test_list_keeps_only_the_resources_a_list_names(client: httpx.Client) -> None:
    tag = uuid.uuid4().hex
    code = {"coding": [{"system": "urn:test:list", "code": tag}]}
    obs = [
        create(client, {"resourceType": "Observation", "status": "final", "code": code})
        for _ in range(4)
    ]
    cond = create(client, {"resourceType": "Condition", "subject": {"reference": "Patient/x"}})
    first = create(
        client,
        current_list(
            "changes",
            item(f"Observation/{obs[0]}"),
            item(f"Observation/{obs[1]}"),
            item(f"Observation/{obs[2]}", deleted=True),
            item(f"Condition/{cond}"),
        ),
    )
    second = create(
        client,
        current_list("working", item(f"Observation/{obs[1]}"), item(f"Observation/{obs[3]}")),
    )
    # entry 3 is flagged deleted (lst-2: only in a list of changes): not in the list
    got = client.get("/Observation", params={"_list": first}).json()
    assert ids(got) == sorted([("Observation", obs[0]), ("Observation", obs[1])])
    # lists OR-ed by commas, AND-ed by repetition; other parameters still apply
    either = client.get("/Observation", params={"_list": f"{first},{second}"}).json()
    assert ids(either) == sorted(("Observation", o) for o in (obs[0], obs[1], obs[3]))
    both = client.get("/Observation", params=[("_list", first), ("_list", second)]).json()
    assert ids(both) == [("Observation", obs[1])]
    coded = client.get(
        "/Observation", params={"_list": first, "code": f"urn:test:list|{tag}", "_id": obs[0]}
    ).json()
    assert ids(coded) == [("Observation", obs[0])]
    # across types: the Condition too, matched by type and id
    everything = client.get("", params={"_list": first}).json()
    assert ids(everything) == sorted(
        [("Observation", obs[0]), ("Observation", obs[1]), ("Condition", cond)]
    )
    assert ids(client.get("/Observation", params={"_list": "no-such-list"}).json()) == []
    functional = client.get("/Condition", params={"_list": "$current-problems"})
    assert functional.status_code == 400


def test_identifier_of_type(client: httpx.Client) -> None:
    mrn, ssn = uuid.uuid4().hex[:12], uuid.uuid4().hex[:9]

    def typed(code: str, value: str) -> dict[str, Any]:
        return {
            "type": {"coding": [{"system": V2, "code": code}]},
            "system": f"urn:test:{code}",
            "value": value,
        }

    a = create(client, {"resourceType": "Patient", "identifier": [typed("MR", mrn)]})
    b = create(client, {"resourceType": "Patient", "identifier": [typed("SS", mrn)]})
    c = create(client, {"resourceType": "Patient", "identifier": [typed("SS", ssn)]})
    # type MR with value mrn: only a (b has the same value under another type)
    got = client.get("/Patient", params={"identifier:of-type": f"{V2}|MR|{mrn}"}).json()
    assert ids(got) == [("Patient", a)]
    got = client.get("/Patient", params={"identifier:of-type": f"{V2}|SS|{mrn},{V2}|SS|{ssn}"})
    assert ids(got.json()) == sorted([("Patient", b), ("Patient", c)])
    # the of-type rows never answer the other token forms
    plain = client.get("/Patient", params={"identifier": f"{V2}|MR"}).json()
    assert ids(plain) == []
    by_value = client.get("/Patient", params={"identifier": mrn}).json()
    assert ids(by_value) == sorted([("Patient", a), ("Patient", b)])
    bad = client.get("/Patient", params={"identifier:of-type": f"{V2}|MR"})
    assert bad.status_code == 400
    assert bad.json()["issue"][0]["expression"] == ["identifier:of-type"]
