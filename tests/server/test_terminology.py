"""Terminology operations over HTTP ($lookup, $expand, $validate-code, $subsumes)."""

from __future__ import annotations

import httpx
import pytest

from openrecord.fhir.definitions import definitions
from tests.server.conftest import Server
from tests.terminology_packages import official_codes

NULL_FLAVOR = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"
GENDER = "http://hl7.org/fhir/administrative-gender"


def params(body: dict[str, object]) -> dict[str, object]:
    """Parameters by name (first value of each), for simple assertions."""
    assert body["resourceType"] == "Parameters", body
    out: dict[str, object] = {}
    for p in body["parameter"]:  # type: ignore[attr-defined]
        value = next((v for k, v in p.items() if k.startswith("value")), p.get("part"))
        out.setdefault(p["name"], value)
    return out


def expanded(client: httpx.Client, url: str, **extra: object) -> list[tuple[str, str]]:
    r = client.get("/ValueSet/$expand", params={"url": url, **extra})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resourceType"] == "ValueSet" and body["url"] == url
    return [(c["system"], c["code"]) for c in body["expansion"].get("contains", [])]


def test_expand_required_value_sets_match_official(client: httpx.Client) -> None:
    compared = 0
    for url in sorted(definitions().value_sets):
        want = official_codes(url)
        if not want:
            r = client.get("/ValueSet/$expand", params={"url": url})
            assert r.status_code in (404, 422), (url, r.text)
            assert r.json()["resourceType"] == "OperationOutcome"
            continue
        got = expanded(client, url)
        assert len(got) == len(set(got)) and set(got) == want, url
        compared += 1
    assert compared >= 200


def test_validate_code_agrees_with_official(client: httpx.Client) -> None:
    urls = [u for u in sorted(definitions().value_sets) if official_codes(u)]
    every = {pair for u in urls for pair in official_codes(u) or ()}
    for url in urls:
        want = official_codes(url) or set()
        for system, code in sorted(want):
            r = client.get(
                "/ValueSet/$validate-code", params={"url": url, "system": system, "code": code}
            )
            assert r.status_code == 200, r.text
            assert params(r.json())["result"] is True, (url, system, code)
        system, code = next(p for p in sorted(every) if p not in want)
        r = client.get(
            "/ValueSet/$validate-code", params={"url": url, "system": system, "code": code}
        )
        found = params(r.json())
        assert found["result"] is False and found["message"], (url, system, code)


def test_validate_code_by_post_with_coding_and_display(client: httpx.Client) -> None:
    def post(*parts: dict[str, object]) -> dict[str, object]:
        body = {
            "resourceType": "Parameters",
            "parameter": [{"name": "url", "valueUri": GENDER_VS}, *parts],
        }
        r = client.post("/ValueSet/$validate-code", json=body)
        assert r.status_code == 200, r.text
        return params(r.json())

    good = post(
        {"name": "coding", "valueCoding": {"system": GENDER, "code": "male", "display": "Male"}}
    )
    assert good["result"] is True and "message" not in good and good["display"] == "Male"
    # A wrong display is a warning: the code is still valid.
    odd = post(
        {"name": "coding", "valueCoding": {"system": GENDER, "code": "male", "display": "Man"}}
    )
    assert odd["result"] is True and "Man" in str(odd["message"])
    bad = post({"name": "code", "valueCode": "M"}, {"name": "system", "valueUri": GENDER})
    assert bad["result"] is False
    cc = post(
        {
            "name": "codeableConcept",
            "valueCodeableConcept": {
                "coding": [{"system": "http://x", "code": "1"}, {"system": GENDER, "code": "other"}]
            },
        }
    )
    assert cc["result"] is True


def test_external_codes_are_not_known(client: httpx.Client) -> None:
    # ucum-units' official expansion is not closed: no code is known to be in it.
    r = client.get(
        "/ValueSet/$validate-code",
        params={
            "url": "http://hl7.org/fhir/ValueSet/ucum-units",
            "system": "http://unitsofmeasure.org",
            "code": "mg",
        },
    )
    found = params(r.json())
    assert found["result"] is False and "not known" in str(found["message"])
    r = client.get("/ValueSet/$expand", params={"url": "http://hl7.org/fhir/ValueSet/ucum-units"})
    assert r.status_code == 422 and r.json()["resourceType"] == "OperationOutcome"
    r = client.get("/CodeSystem/$lookup", params={"system": "http://loinc.org", "code": "8480-6"})
    assert r.status_code == 404 and r.json()["issue"][0]["code"] == "not-found"


def test_a_snomed_subset_answers_its_official_expansion(client: httpx.Client) -> None:
    url = "http://hl7.org/fhir/ValueSet/condition-code"
    want = official_codes(url)
    assert want and {s for s, _ in want} == {"http://snomed.info/sct"}
    assert set(expanded(client, url)) == want
    inside = sorted(want)[0]
    outside = sorted(
        (official_codes("http://hl7.org/fhir/ValueSet/medication-codes") or set()) - want
    )[0]
    for (system, code), result in ((inside, True), (outside, False)):
        r = client.get(
            "/ValueSet/$validate-code", params={"url": url, "system": system, "code": code}
        )
        assert params(r.json())["result"] is result, code


def test_expand_paging_and_filter(client: httpx.Client) -> None:
    url = "http://hl7.org/fhir/ValueSet/observation-status"
    # From the R4 ObservationStatus code system: registered, preliminary, final, amended,
    # corrected, cancelled, entered-in-error, unknown.
    whole = expanded(client, url)
    assert [c for _, c in whole] == [
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    ]
    r = client.get("/ValueSet/$expand", params={"url": url, "count": 3, "offset": 2})
    exp = r.json()["expansion"]
    assert exp["total"] == 8 and exp["offset"] == 2
    assert [c["code"] for c in exp["contains"]] == ["final", "amended", "corrected"]
    # "re" is in the display of preliminary, corrected, entered-in-error and in "registered".
    filtered = [c for _, c in expanded(client, url, filter="re")]
    assert filtered == ["registered", "preliminary", "corrected", "entered-in-error"]
    r = client.get("/ValueSet/$expand", params={"url": url, "filter": "zzz"})
    assert r.json()["expansion"]["total"] == 0
    r = client.post(
        "/ValueSet/$expand",
        json={
            "resourceType": "Parameters",
            "parameter": [{"name": "url", "valueUri": url}, {"name": "count", "valueInteger": 1}],
        },
    )
    assert [c["code"] for c in r.json()["expansion"]["contains"]] == ["registered"]


@pytest.mark.parametrize(
    ("query", "status", "expression"),
    [
        ({"url": "http://example.org/no-such-vs"}, 404, "url"),
        ({}, 400, "url"),
        ({"url": "http://hl7.org/fhir/ValueSet/observation-status", "count": "x"}, 400, "count"),
        ({"url": "http://hl7.org/fhir/ValueSet/observation-status", "offset": "-1"}, 400, "offset"),
    ],
)
def test_expand_errors(
    client: httpx.Client, query: dict[str, str], status: int, expression: str
) -> None:
    r = client.get("/ValueSet/$expand", params=query)
    assert r.status_code == status, r.text
    issue = r.json()["issue"][0]
    assert issue["expression"] == [expression]


def test_lookup(client: httpx.Client) -> None:
    # CodeSystem-v3-NullFlavor.json: name v3.NullFlavor; NAVU "Not available", nested
    # under UNK, with a `child` property naming NAV.
    r = client.get("/CodeSystem/$lookup", params={"system": NULL_FLAVOR, "code": "NAVU"})
    assert r.status_code == 200, r.text
    body = r.json()
    found = params(body)
    assert found["display"] == "Not available" and found["name"] == "v3.NullFlavor"
    props = {
        (p["part"][0]["valueCode"], p["part"][1].get("valueCode"))
        for p in body["parameter"]
        if p["name"] == "property"
    }
    assert {("parent", "UNK"), ("child", "NAV")} <= props
    r = client.post(
        "/CodeSystem/$lookup",
        json={
            "resourceType": "Parameters",
            "parameter": [{"name": "coding", "valueCoding": {"system": GENDER, "code": "unknown"}}],
        },
    )
    assert params(r.json())["display"] == "Unknown"
    r = client.get("/CodeSystem/$lookup", params={"system": GENDER, "code": "nope"})
    assert r.status_code == 404
    r = client.get("/CodeSystem/$lookup", params={"code": "male"})
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["system"]


def test_subsumes(client: httpx.Client) -> None:
    def outcome(a: str, b: str) -> object:
        r = client.get(
            "/CodeSystem/$subsumes", params={"system": NULL_FLAVOR, "codeA": a, "codeB": b}
        )
        assert r.status_code == 200, r.text
        return params(r.json())["outcome"]

    # Worked out from CodeSystem-v3-NullFlavor.json (see tests/fhir/test_terminology.py).
    assert outcome("NI", "NINF") == "subsumes"
    assert outcome("NAV", "NAVU") == "subsumed-by"
    assert outcome("ASKU", "NAVU") == "not-subsumed"
    assert outcome("MSK", "MSK") == "equivalent"
    r = client.post(
        "/CodeSystem/$subsumes",
        json={
            "resourceType": "Parameters",
            "parameter": [
                {"name": "codingA", "valueCoding": {"system": NULL_FLAVOR, "code": "UNK"}},
                {"name": "codingB", "valueCoding": {"system": NULL_FLAVOR, "code": "NAV"}},
            ],
        },
    )
    assert params(r.json())["outcome"] == "subsumes"
    r = client.get(
        "/CodeSystem/$subsumes", params={"system": NULL_FLAVOR, "codeA": "NI", "codeB": "??"}
    )
    assert r.status_code == 404 and r.json()["issue"][0]["expression"] == ["codeB"]
    r = client.get("/CodeSystem/$subsumes", params={"system": NULL_FLAVOR, "codeA": "NI"})
    assert r.status_code == 400


def test_capability_statement_lists_the_operations(client: httpx.Client) -> None:
    statement = client.get("/metadata").json()
    by_type = {r["type"]: r for r in statement["rest"][0]["resource"]}
    ops = {o["name"]: o["definition"] for o in by_type["ValueSet"]["operation"]}
    assert ops["expand"] == "http://hl7.org/fhir/OperationDefinition/ValueSet-expand"
    assert ops["validate-code"] == "http://hl7.org/fhir/OperationDefinition/ValueSet-validate-code"
    ops = {o["name"] for o in by_type["CodeSystem"]["operation"]}
    assert {"lookup", "subsumes", "validate"} <= ops
    assert "expand" not in {o["name"] for o in by_type["Patient"]["operation"]}


def test_expand_a_stored_value_set(client: httpx.Client) -> None:
    stored = {
        "resourceType": "ValueSet",
        "id": "unknown-reasons",
        "url": "http://example.org/ValueSet/unknown-reasons",
        "status": "active",
        "compose": {
            "include": [
                {
                    "system": NULL_FLAVOR,
                    "filter": [{"property": "concept", "op": "is-a", "value": "UNK"}],
                },
                {"system": GENDER, "concept": [{"code": "unknown"}]},
            ],
            "exclude": [{"system": NULL_FLAVOR, "concept": [{"code": "NAV"}]}],
        },
    }
    assert client.put("/ValueSet/unknown-reasons", json=stored).status_code in (200, 201)
    r = client.get("/ValueSet/unknown-reasons/$expand")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["url"] == stored["url"]
    got = {(c["system"], c["code"]) for c in body["expansion"]["contains"]}
    # UNK and everything below it in CodeSystem-v3-NullFlavor.json, less NAV.
    below_unk = {"UNK", "ASKU", "NASK", "NAVU", "QS", "TRC"}
    assert got == {(NULL_FLAVOR, c) for c in below_unk} | {(GENDER, "unknown")}
    r = client.get("/ValueSet/unknown-reasons/$expand", params={"count": 2})
    assert r.json()["expansion"]["total"] == 7 and len(r.json()["expansion"]["contains"]) == 2

    loinc = {
        "resourceType": "ValueSet",
        "id": "vitals",
        "status": "active",
        "compose": {"include": [{"system": "http://loinc.org", "concept": [{"code": "8480-6"}]}]},
    }
    assert client.put("/ValueSet/vitals", json=loinc).status_code in (200, 201)
    r = client.get("/ValueSet/vitals/$expand")
    assert r.status_code == 422 and r.json()["resourceType"] == "OperationOutcome"
    assert client.get("/ValueSet/no-such-id/$expand").status_code == 404


ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ENCOUNTER_VS = "http://terminology.hl7.org/ValueSet/v3-ActEncounterCode"
OBSERVATIONS = {
    "obs-amb": (ACT, "AMB"),
    "obs-imp": (ACT, "IMP"),
    "obs-acute": (ACT, "ACUTE"),
    "obs-cc": (ACT, "CC"),
    "obs-ae": (ACT, "AE"),
    "obs-loinc": ("http://loinc.org", "8480-6"),
    "obs-other": ("http://example.org/codes", "AMB"),  # AMB in another system
}


@pytest.fixture(scope="module")
def coded_observations(server: Server) -> None:
    with httpx.Client(base_url=server.base, timeout=60) as c:
        for id, (system, code) in OBSERVATIONS.items():
            body = {
                "resourceType": "Observation",
                "id": id,
                "status": "final",
                "code": {"coding": [{"system": system, "code": code}]},
            }
            assert c.put(f"/Observation/{id}", json=body).status_code in (200, 201)


def observation_ids(client: httpx.Client, query: dict[str, str]) -> set[str]:
    r = client.get("/Observation", params={**query, "_count": "100"})
    assert r.status_code == 200, r.text
    return {
        e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # The official v3-ActEncounterCode expansion: AMB, EMER, FLD, HH, IMP, ACUTE, NONAC,
        # OBSENC, PRENC, SS, VR (all v3-ActCode).
        ({"code:in": ENCOUNTER_VS}, {"obs-amb", "obs-imp", "obs-acute"}),
        ({"code:not-in": ENCOUNTER_VS}, {"obs-cc", "obs-ae", "obs-loinc", "obs-other"}),
        ({"code:in": ENCOUNTER_VS, "_id": "obs-amb,obs-cc"}, {"obs-amb"}),
        # CodeSystem-v3-ActCode.json: _ActCareProvisionCode > _ActEncounterCode > IMP >
        # ACUTE, NONAC; _ActAccountCode > CC > AE, DN, DV, MC, V.
        ({"code:below": f"{ACT}|IMP"}, {"obs-imp", "obs-acute"}),
        ({"code:below": f"{ACT}|_ActAccountCode"}, {"obs-cc", "obs-ae"}),
        ({"code:above": f"{ACT}|ACUTE"}, {"obs-imp", "obs-acute"}),
        ({"code:above": f"{ACT}|AE"}, {"obs-cc", "obs-ae"}),
        ({"code:above": f"{ACT}|AMB"}, {"obs-amb"}),
    ],
)
def test_token_terminology_modifiers(
    client: httpx.Client, coded_observations: None, query: dict[str, str], expected: set[str]
) -> None:
    assert observation_ids(client, query) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("code:in", "http://example.org/no-such-vs"),
        ("code:in", "http://hl7.org/fhir/ValueSet/ucum-units"),  # not closed: not known
        ("code:below", "http://loinc.org|8480-6"),  # LOINC is not loaded
        ("code:below", f"{ACT}|NO-SUCH-CODE"),
        ("code:above", "IMP"),  # needs system|code
    ],
)
def test_token_terminology_modifiers_refuse_what_is_not_known(
    client: httpx.Client, name: str, value: str
) -> None:
    r = client.get("/Observation", params={name: value})
    assert r.status_code == 400, r.text
    assert r.json()["issue"][0]["expression"] == [name]
