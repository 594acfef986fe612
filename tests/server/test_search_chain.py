"""Chained search and `_has` (search.html#chaining, #has) over HTTP, on each backend.

The records (built once per server):

    Organizations  orgA "Acme Health"; orgB "Beta Clinic", part of orgA;
                   orgX "Acme Deleted" (deleted)
    Practitioners  pr1 Anna Peterson (urn:npi|111); pr2 Bob Smith (urn:npi|222)
    Location       loc "Peter Ward"
    Patients       p1 Paul Peterson, male, 1950-01-01, org orgA, urn:mrn|A1, meta.source src1
                   p2 Peter Jones, female, 1990-06-15, org orgB, urn:mrn|B2
                   p3 Alice Smith, no gender, 2000-01-01, org orgX (deleted)
                   p4 Zed Peterkin (deleted)
    Observations   o1 p1 1234-5 by pr1, 70 kg     o2 p2 1234-5 by pr2, 80 kg
                   o3 p3 9999-9 by pr1            o4 loc 1234-5
                   o5 p4 1234-5 (its patient is deleted)
                   o7 p2 5555-5 by orgA           o8 p3 7777-7, members ms and o1
                   o9 p1 4444-4 (deleted)
    MolecularSeq.  ms variant start 100
    Encounters     e1 p1 at orgA with pr1; e2 p2 at orgB; e3 p3 at orgX
    Provenances    a1 target o1, agent pr2; a2 target o2, agent pr1

Every expected result below is worked out from that table.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.server.conftest import Server

Ids = dict[str, str]


def create(client: httpx.Client, resource: dict[str, Any]) -> dict[str, Any]:
    r = client.post(f"/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return dict(r.json())


def delete(client: httpx.Client, type: str, id: str) -> None:
    r = client.delete(f"/{type}/{id}")
    assert r.status_code in (200, 204), r.text


def ref(type: str, id: str) -> dict[str, str]:
    return {"reference": f"{type}/{id}"}


def loinc(code: str) -> dict[str, Any]:
    return {"coding": [{"system": "http://loinc.org", "code": code}]}


def observation(subject: dict[str, str], code: str, **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": loinc(code),
        "subject": subject,
        **more,
    }


def patient(family: str, given: str, **more: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": [given]}], **more}


def practitioner(family: str, given: str, npi: str) -> dict[str, Any]:
    return {
        "resourceType": "Practitioner",
        "name": [{"family": family, "given": [given]}],
        "identifier": [{"system": "urn:npi", "value": npi}],
    }


def encounter(patient: str, provider: str, **more: Any) -> dict[str, Any]:
    """A finished encounter of Patient/`patient` at Organization/`provider`."""
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"code": "AMB"},
        "subject": ref("Patient", patient),
        "serviceProvider": ref("Organization", provider),
        **more,
    }


def provenance(target: dict[str, str], agent: dict[str, str]) -> dict[str, Any]:
    # (AuditEvents are the server's own trail, written by no client: Provenance has the
    # same shape of references for these tests.)
    return {
        "resourceType": "Provenance",
        "target": [target],
        "recorded": "2024-01-01T00:00:00Z",
        "agent": [{"who": agent}],
    }


@pytest.fixture(scope="module")
def ids(server: Server) -> Ids:
    out: Ids = {}
    meta: dict[str, str] = {}
    with httpx.Client(base_url=server.base, timeout=60) as c:

        def add(key: str, resource: dict[str, Any]) -> None:
            made = create(c, resource)
            out[key] = made["id"]
            meta[key] = made["meta"]["lastUpdated"]

        add("orgA", {"resourceType": "Organization", "name": "Acme Health"})
        add(
            "orgB",
            {
                "resourceType": "Organization",
                "name": "Beta Clinic",
                "partOf": ref("Organization", out["orgA"]),
            },
        )
        add("orgX", {"resourceType": "Organization", "name": "Acme Deleted"})
        add("pr1", practitioner("Peterson", "Anna", "111"))
        add("pr2", practitioner("Smith", "Bob", "222"))
        add("loc", {"resourceType": "Location", "name": "Peter Ward"})
        add(
            "p1",
            patient(
                "Peterson",
                "Paul",
                gender="male",
                birthDate="1950-01-01",
                managingOrganization=ref("Organization", out["orgA"]),
                identifier=[{"system": "urn:mrn", "value": "A1"}],
                meta={"source": "http://example.org/src1"},
            ),
        )
        add(
            "p2",
            patient(
                "Jones",
                "Peter",
                gender="female",
                birthDate="1990-06-15",
                managingOrganization=ref("Organization", out["orgB"]),
                identifier=[{"system": "urn:mrn", "value": "B2"}],
            ),
        )
        add(
            "p3",
            patient(
                "Smith",
                "Alice",
                birthDate="2000-01-01",
                managingOrganization=ref("Organization", out["orgX"]),
            ),
        )
        add("p4", patient("Peterkin", "Zed"))
        kg = {"value": 70, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}
        add(
            "o1",
            observation(
                ref("Patient", out["p1"]),
                "1234-5",
                performer=[ref("Practitioner", out["pr1"])],
                valueQuantity=kg,
            ),
        )
        add(
            "o2",
            observation(
                ref("Patient", out["p2"]),
                "1234-5",
                performer=[ref("Practitioner", out["pr2"])],
                valueQuantity={**kg, "value": 80},
            ),
        )
        add(
            "o3",
            observation(
                ref("Patient", out["p3"]), "9999-9", performer=[ref("Practitioner", out["pr1"])]
            ),
        )
        add("o4", observation(ref("Location", out["loc"]), "1234-5"))
        add("o5", observation(ref("Patient", out["p4"]), "1234-5"))
        add(
            "o7",
            observation(
                ref("Patient", out["p2"]), "5555-5", performer=[ref("Organization", out["orgA"])]
            ),
        )
        add(
            "ms",
            {
                "resourceType": "MolecularSequence",
                "coordinateSystem": 0,
                "variant": [{"start": 100, "end": 101}],
            },
        )
        add(
            "o8",
            observation(
                ref("Patient", out["p3"]),
                "7777-7",
                hasMember=[ref("MolecularSequence", out["ms"]), ref("Observation", out["o1"])],
            ),
        )
        add("o9", observation(ref("Patient", out["p1"]), "4444-4"))
        add(
            "e1",
            encounter(
                out["p1"],
                out["orgA"],
                participant=[{"individual": ref("Practitioner", out["pr1"])}],
            ),
        )
        add("e2", encounter(out["p2"], out["orgB"]))
        add("e3", encounter(out["p3"], out["orgX"]))
        add("a1", provenance(ref("Observation", out["o1"]), ref("Practitioner", out["pr2"])))
        add("a2", provenance(ref("Observation", out["o2"]), ref("Practitioner", out["pr1"])))
        for key, type in (("p4", "Patient"), ("orgX", "Organization"), ("o9", "Observation")):
            delete(c, type, out[key])
    out["p2.lastUpdated"] = meta["p2"]
    return out


def search(
    client: httpx.Client, path: str, params: list[tuple[str, str]], **headers: str
) -> dict[str, Any]:
    r = client.get(path, params=[*params, ("_count", "100")], headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def matches(client: httpx.Client, path: str, *params: tuple[str, str]) -> set[str]:
    bundle = search(client, path, list(params))
    assert not [e for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"], bundle
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


def keys(ids: Ids, *names: str) -> set[str]:
    return {ids[n] for n in names}


# -- chains --------------------------------------------------------------------------


def test_typed_chain(client: httpx.Client, ids: Ids) -> None:
    # Peterson and Peter match "peter"; Peterkin is deleted, the Location is no Patient
    found = matches(client, "/Observation", ("subject:Patient.name", "peter"))
    assert found == keys(ids, "o1", "o2", "o7")
    assert matches(client, "/Observation", ("subject:Location.name", "peter")) == keys(ids, "o4")


def test_untyped_chain_covers_every_target_type(client: httpx.Client, ids: Ids) -> None:
    found = matches(client, "/Observation", ("subject.name", "peter"))
    assert found == keys(ids, "o1", "o2", "o7", "o4")
    # performer: Practitioner Peterson (o1, o3) and Patient? none perform; Organization
    # "Acme Health" performs o7
    assert matches(client, "/Observation", ("performer.name", "peterson")) == keys(ids, "o1", "o3")
    assert matches(client, "/Observation", ("performer.name", "acme")) == keys(ids, "o7")


def test_multi_level_chains(client: httpx.Client, ids: Ids) -> None:
    # orgX "Acme Deleted" is deleted, so only p1's encounter
    assert matches(client, "/Encounter", ("subject:Patient.organization.name", "acme")) == keys(
        ids, "e1"
    )
    assert matches(client, "/Encounter", ("subject.organization.name", "acme")) == keys(ids, "e1")
    # p2's organization orgB is part of orgA
    found = matches(client, "/Observation", ("subject:Patient.organization.partof.name", "acme"))
    assert found == keys(ids, "o2", "o7")
    found = matches(client, "/Observation", ("encounter.service-provider.name", "beta"))
    assert found == set()  # no Observation has an encounter
    found = matches(client, "/Encounter", ("service-provider.partof.name", "acme health"))
    assert found == keys(ids, "e2")


def test_final_modifiers(client: httpx.Client, ids: Ids) -> None:
    assert matches(client, "/Observation", ("subject:Patient.name:exact", "Peter")) == keys(
        ids, "o2", "o7"
    )
    assert matches(client, "/Observation", ("subject:Patient.name:exact", "peter")) == set()
    assert matches(client, "/Observation", ("subject:Patient.name:contains", "eters")) == keys(
        ids, "o1"
    )
    assert matches(client, "/Observation", ("subject.identifier", "urn:mrn|A1")) == keys(ids, "o1")
    assert matches(client, "/Observation", ("subject:Patient._id", ids["p3"])) == keys(
        ids, "o3", "o8"
    )
    assert matches(client, "/Observation", ("subject:Patient.gender:missing", "true")) == keys(
        ids, "o3", "o8"
    )
    # :not keeps patients without a gender (p3); deleted p4 never counts
    found = matches(client, "/Observation", ("subject:Patient.gender:not", "female"))
    assert found == keys(ids, "o1", "o3", "o8")


def test_every_final_kind(client: httpx.Client, ids: Ids) -> None:
    assert matches(client, "/Observation", ("subject:Patient.gender", "female")) == keys(
        ids, "o2", "o7"
    )
    assert matches(client, "/Observation", ("subject:Patient.birthdate", "lt1960")) == keys(
        ids, "o1"
    )
    found = matches(
        client, "/Observation", ("subject:Patient.organization", f"Organization/{ids['orgB']}")
    )
    assert found == keys(ids, "o2", "o7")
    found = matches(
        client,
        "/Observation",
        ("has-member:Observation.value-quantity", "70|http://unitsofmeasure.org|kg"),
    )
    assert found == keys(ids, "o8")
    found = matches(client, "/Observation", ("has-member:MolecularSequence.variant-start", "100"))
    assert found == keys(ids, "o8")
    assert (
        matches(client, "/Observation", ("has-member:MolecularSequence.variant-start", "gt100"))
        == set()
    )
    found = matches(client, "/Observation", ("subject:Patient._source", "http://example.org/src1"))
    assert found == keys(ids, "o1")
    # p3 was created after p2, p1 before it
    after = matches(
        client, "/Observation", ("subject:Patient._lastUpdated", f"ge{ids['p2.lastUpdated']}")
    )
    assert after == keys(ids, "o2", "o7", "o3", "o8")


def test_or_and_and(client: httpx.Client, ids: Ids) -> None:
    assert matches(client, "/Observation", ("subject:Patient.name", "paul,alice")) == keys(
        ids, "o1", "o3", "o8"
    )
    # each chained parameter is tested on its own (search.html#chaining)
    found = matches(client, "/Observation", ("subject.name", "peter"), ("subject.name", "jones"))
    assert found == keys(ids, "o2", "o7")
    found = matches(
        client,
        "/Observation",
        ("subject:Patient.name", "peter"),
        ("subject:Patient.gender", "male"),
    )
    assert found == keys(ids, "o1")
    found = matches(client, "/Observation", ("subject:Patient.name", "peter"), ("code", "1234-5"))
    assert found == keys(ids, "o1", "o2")


# -- _has ----------------------------------------------------------------------------


def test_has(client: httpx.Client, ids: Ids) -> None:
    # o1 (p1), o2 (p2); o4's subject is a Location, o5's patient is deleted
    assert matches(client, "/Patient", ("_has:Observation:patient:code", "1234-5")) == keys(
        ids, "p1", "p2"
    )
    assert matches(client, "/Patient", ("_has:Observation:subject:code", "9999-9")) == keys(
        ids, "p3"
    )
    # o9 (p1, 4444-4) is deleted
    assert matches(client, "/Patient", ("_has:Observation:patient:code", "4444-4")) == set()
    # the Location referred to by an Observation
    assert matches(client, "/Location", ("_has:Observation:subject:code", "1234-5")) == keys(
        ids, "loc"
    )
    assert matches(
        client, "/Practitioner", ("_has:Encounter:participant:status", "finished")
    ) == keys(ids, "pr1")


def test_has_with_modifiers_and_normal_parameters(client: httpx.Client, ids: Ids) -> None:
    found = matches(
        client, "/Patient", ("_has:Observation:patient:code", "1234-5"), ("gender", "female")
    )
    assert found == keys(ids, "p2")
    # codes other than 1234-5: o3 (p3), o7 (p2), o8 (p3)
    assert matches(client, "/Patient", ("_has:Observation:patient:code:not", "1234-5")) == keys(
        ids, "p2", "p3"
    )
    found = matches(client, "/Patient", ("_has:Observation:patient:code", "1234-5,9999-9"))
    assert found == keys(ids, "p1", "p2", "p3")
    found = matches(
        client,
        "/Patient",
        ("_has:Observation:patient:code", "1234-5"),
        ("_has:Observation:patient:code", "5555-5"),
    )
    assert found == keys(ids, "p2")


def test_nested_has_and_chains_inside(client: httpx.Client, ids: Ids) -> None:
    found = matches(
        client,
        "/Patient",
        ("_has:Observation:patient:_has:Provenance:target:agent", f"Practitioner/{ids['pr2']}"),
    )
    assert found == keys(ids, "p1")
    found = matches(
        client, "/Patient", ("_has:Observation:patient:performer:Practitioner.name", "smith")
    )
    assert found == keys(ids, "p2")
    found = matches(
        client,
        "/Observation",
        ("subject:Patient._has:Encounter:patient:service-provider", f"Organization/{ids['orgB']}"),
    )
    assert found == keys(ids, "o2", "o7")


# -- with includes and compartments --------------------------------------------------


def test_includes_and_compartments(client: httpx.Client, ids: Ids) -> None:
    bundle = search(
        client,
        "/Observation",
        [("subject:Patient.name", "peter"), ("_include", "Observation:subject")],
    )
    modes = {(e["search"]["mode"], e["resource"]["id"]) for e in bundle["entry"]}
    assert modes == {
        *(("match", ids[k]) for k in ("o1", "o2", "o7")),
        *(("include", ids[k]) for k in ("p1", "p2")),
    }
    bundle = search(
        client,
        "/Patient",
        [("_has:Observation:patient:code", "9999-9"), ("_revinclude", "Observation:subject")],
    )
    modes = {(e["search"]["mode"], e["resource"]["id"]) for e in bundle["entry"]}
    assert modes == {("match", ids["p3"]), ("include", ids["o3"]), ("include", ids["o8"])}
    found = matches(
        client, f"/Patient/{ids['p2']}/Observation", ("performer:Practitioner.name", "smith")
    )
    assert found == keys(ids, "o2")
    assert (
        matches(
            client, f"/Patient/{ids['p1']}/Observation", ("performer:Practitioner.name", "smith")
        )
        == set()
    )


# -- errors and hostile input --------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/Observation", "subject.nope"),
        ("/Observation", "subject:Nonsense.name"),
        ("/Patient", "_has:Nonsense:patient:code"),
        ("/Patient", "_has:Observation:nope:code"),
        ("/Patient", "_has:Observation:patient:nope"),
    ],
)
def test_unknown_forms_are_reported_or_rejected_when_strict(
    client: httpx.Client, ids: Ids, path: str, name: str
) -> None:
    bundle = search(client, path, [(name, "x")])
    outcomes = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert outcomes and name in outcomes[0]["resource"]["issue"][0]["diagnostics"]
    strict = client.get(path, params={name: "x"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert strict.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    ("path", "name", "value"),
    [
        ("/Patient", "_has:Observation:patient", "x"),
        ("/Patient", "_has:Observation", "x"),
        ("/Organization", "_has:Observation:subject:code", "x"),  # subject cannot be one
        ("/Observation", "subject..name", "x"),
        ("/Observation", "code.name", "x"),
        ("/Observation", "subject:Organization.name", "x"),
        ("/Observation", "subject:Patient.birthdate", "notadate"),
        ("/Observation", "subject" + ".name" * 50, "x"),
        ("/Observation", "subject:Patient.organization.partof.partof.partof.name", "x"),
        ("/Patient", "_has:Observation:patient:" * 6 + "code", "x"),
    ],
)
def test_malformed_forms_are_400(
    client: httpx.Client, ids: Ids, path: str, name: str, value: str
) -> None:
    r = client.get(path, params={name: value})
    assert r.status_code == 400, r.text
    issue = r.json()["issue"][0]
    assert issue["expression"][0].startswith(name[:50])


def test_huge_values_match_nothing(client: httpx.Client, ids: Ids) -> None:
    big = "peter" + "x" * 20_000
    assert matches(client, "/Observation", ("subject:Patient.name", big)) == set()
    many = ",".join(f"v{i}" for i in range(500))
    assert matches(client, "/Patient", ("_has:Observation:patient:code", many)) == set()
    too_many = ",".join(f"v{i}" for i in range(1001))
    r = client.get("/Patient", params={"_has:Observation:patient:code": too_many})
    assert r.status_code == 400, r.text
    sql = "'); DROP TABLE resource; --"
    assert matches(client, "/Observation", ("subject:Patient.name", sql)) == set()
    assert matches(client, "/Observation", ("subject:Patient.name", "peter")) == keys(
        ids, "o1", "o2", "o7"
    )


def test_paging_through_a_chained_search(client: httpx.Client, ids: Ids) -> None:
    seen: list[str] = []
    r = client.get("/Observation", params={"subject.name": "peter", "_count": "2"})
    for _ in range(5):
        assert r.status_code == 200, r.text
        bundle = r.json()
        seen += [
            e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"
        ]
        following = [link["url"] for link in bundle.get("link", []) if link["relation"] == "next"]
        if not following:
            break
        r = client.get(following[0])
    assert sorted(seen) == sorted(keys(ids, "o1", "o2", "o7", "o4"))
