"""`ConceptMap/$translate` over the R4 core ConceptMaps.

Expected mappings were read by hand from the ConceptMap JSON in the R4 core package
(hl7.fhir.r4.core 4.0.1): cm-administrative-gender-v2, cm-name-use-v2/-v3,
sc-observation-status, 101 (address use, an `unmapped` fixed code), 102 (v2 specimen
type to SNOMED CT, with products and `unmatched` entries) and example2 (a mapping that
depends on another element).
"""

from __future__ import annotations

from typing import Any

import httpx

CM = "http://hl7.org/fhir/ConceptMap/"
GENDER = "http://hl7.org/fhir/administrative-gender"
V2_SEX = "http://terminology.hl7.org/CodeSystem/v2-0001"
NAME_USE = "http://hl7.org/fhir/name-use"
SCT = "http://snomed.info/sct"


def value(params: dict[str, Any], name: str) -> Any:
    found = [p for p in params["parameter"] if p["name"] == name]
    assert len(found) == 1, name
    return next(v for k, v in found[0].items() if k.startswith("value"))


def matches(params: dict[str, Any]) -> list[dict[str, Any]]:
    """Each match as {equivalence, concept: (system, code) or None, source, products}."""
    out = []
    for p in params["parameter"]:
        if p["name"] != "match":
            continue
        parts = p["part"]
        concept = next((x["valueCoding"] for x in parts if x["name"] == "concept"), None)
        out.append(
            {
                "equivalence": next(x["valueCode"] for x in parts if x["name"] == "equivalence"),
                "concept": (concept["system"], concept["code"]) if concept else None,
                "source": next(x["valueUri"] for x in parts if x["name"] == "source"),
                "products": [
                    (
                        q["part"][0]["valueUri"],
                        q["part"][1]["valueCoding"]["system"],
                        q["part"][1]["valueCoding"]["code"],
                    )
                    for q in parts
                    if q["name"] == "product"
                ],
            }
        )
    return out


def translate(client: httpx.Client, **params: str) -> httpx.Response:
    return client.get("/ConceptMap/$translate", params=params)


def test_translate_by_map_url_one_to_many(client: httpx.Client) -> None:
    r = translate(client, url=CM + "cm-administrative-gender-v2", system=GENDER, code="other")
    assert r.status_code == 200
    body = r.json()
    assert value(body, "result") is True
    assert [(m["equivalence"], m["concept"]) for m in matches(body)] == [
        ("wider", (V2_SEX, "A")),
        ("wider", (V2_SEX, "O")),
    ]
    assert {m["source"] for m in matches(body)} == {CM + "cm-administrative-gender-v2"}


def test_translate_by_source_and_target_value_sets(client: httpx.Client) -> None:
    r = translate(
        client,
        source="http://hl7.org/fhir/ValueSet/observation-status",
        target="http://hl7.org/fhir/ValueSet/resource-status",
        system="http://hl7.org/fhir/observation-status",
        code="final",
    )
    body = r.json()
    assert value(body, "result") is True
    assert matches(body) == [
        {
            "equivalence": "equivalent",
            "concept": ("http://hl7.org/fhir/resource-status", "complete"),
            "source": CM + "sc-observation-status",
            "products": [],
        }
    ]


def test_translate_across_maps_and_by_target_system(client: httpx.Client) -> None:
    everywhere = matches(translate(client, system=NAME_USE, code="old").json())
    assert {m["source"] for m in everywhere} == {CM + "cm-name-use-v2", CM + "cm-name-use-v3"}
    v2 = "http://terminology.hl7.org/CodeSystem/v2-0200"
    only_v2 = matches(translate(client, system=NAME_USE, code="old", targetsystem=v2).json())
    assert [(m["equivalence"], m["concept"]) for m in only_v2] == [
        ("wider", (v2, "NOUSE")),
        ("wider", (v2, "BAD")),
    ]


def test_translate_products_and_unmatched(client: httpx.Client) -> None:
    system = "http://terminology.hl7.org/CodeSystem/v2-0487"
    amp = translate(client, url=CM + "102", system=system, code="AMP").json()
    assert value(amp, "result") is True
    assert matches(amp) == [
        {
            "equivalence": "equivalent",
            "concept": (SCT, "408654003"),
            "source": CM + "102",
            "products": [("http://snomed.info/id/246380002", SCT, "81723002")],
        }
    ]
    orl = translate(client, url=CM + "102", system=system, code="ORL").json()
    assert value(orl, "result") is False  # only an `unmatched` entry
    assert [(m["equivalence"], m["concept"]) for m in matches(orl)] == [("unmatched", None)]


def test_translate_reverse_inverts_the_equivalence(client: httpx.Client) -> None:
    # cm-administrative-gender-v2 maps other -> A and other -> O, both "wider"
    body = translate(
        client,
        url=CM + "cm-administrative-gender-v2",
        system=V2_SEX,
        code="A",
        reverse="true",
    ).json()
    assert value(body, "result") is True
    assert matches(body) == [
        {
            "equivalence": "narrower",
            "concept": (GENDER, "other"),
            "source": CM + "cm-administrative-gender-v2",
            "products": [],
        }
    ]
    # by value sets: reverse reads source and target the other way round
    by_sets = translate(
        client,
        source="http://terminology.hl7.org/ValueSet/v2-0001",
        target="http://hl7.org/fhir/ValueSet/administrative-gender",
        system=V2_SEX,
        code="M",
        reverse="true",
    ).json()
    assert [(m["equivalence"], m["concept"]) for m in matches(by_sets)] == [
        ("equal", (GENDER, "male"))
    ]


def test_translate_with_a_dependency_that_holds(client: httpx.Client) -> None:
    # example2: code -> code2 (equivalent) when property-value/example is example3#some-code
    def posted(dependency_code: str) -> dict[str, Any]:
        r = client.post(
            "/ConceptMap/$translate",
            json={
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "url", "valueUri": CM + "example2"},
                    {"name": "system", "valueUri": "http://example.org/fhir/example1"},
                    {"name": "code", "valueCode": "code"},
                    {
                        "name": "dependency",
                        "part": [
                            {
                                "name": "element",
                                "valueUri": "http://example.org/fhir/property-value/example",
                            },
                            {
                                "name": "concept",
                                "valueCodeableConcept": {
                                    "coding": [
                                        {
                                            "system": "http://example.org/fhir/example3",
                                            "code": dependency_code,
                                        }
                                    ]
                                },
                            },
                        ],
                    },
                ],
            },
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    held = posted("some-code")
    assert value(held, "result") is True
    assert [(m["equivalence"], m["concept"]) for m in matches(held)] == [
        ("equivalent", ("http://example.org/fhir/example2", "code2"))
    ]
    other = posted("another-code")
    assert value(other, "result") is False and matches(other) == []
    assert "dependsOn" in value(other, "message")


def test_translate_unmapped_fixed_code(client: httpx.Client) -> None:
    # ConceptMap 101 (address-use -> v3 AddressUse) lists home, work, temp and old;
    # its group's unmapped rule is mode=fixed, code temp
    body = translate(
        client, url=CM + "101", system="http://hl7.org/fhir/address-use", code="billing"
    ).json()
    assert value(body, "result") is True
    assert [(m["equivalence"], m["concept"]) for m in matches(body)] == [
        ("inexact", ("http://terminology.hl7.org/CodeSystem/v3-AddressUse", "temp"))
    ]
    # a listed code is not unmapped, even when its only target is disjoint
    old = translate(
        client, url=CM + "101", system="http://hl7.org/fhir/address-use", code="old"
    ).json()
    assert [(m["equivalence"], m["concept"]) for m in matches(old)] == [
        ("disjoint", ("http://terminology.hl7.org/CodeSystem/v3-AddressUse", "BAD"))
    ]
    assert value(old, "result") is False


def test_translate_unmapped_to_a_map_not_loaded(client: httpx.Client) -> None:
    # example2's unmapped rule points to map2, which the core package does not hold
    body = translate(
        client, url=CM + "example2", system="http://example.org/fhir/example1", code="other"
    ).json()
    assert value(body, "result") is False and matches(body) == []


def test_translate_leaves_out_mappings_with_dependencies(client: httpx.Client) -> None:
    body = translate(
        client, url=CM + "example2", system="http://example.org/fhir/example1", code="code"
    ).json()
    assert value(body, "result") is False
    assert matches(body) == []
    assert "dependsOn" in value(body, "message")


def test_translate_no_mapping_and_post(client: httpx.Client) -> None:
    none = translate(client, url=CM + "cm-administrative-gender-v2", system=GENDER, code="robot")
    assert value(none.json(), "result") is False and matches(none.json()) == []
    posted = client.post(
        "/ConceptMap/$translate",
        json={
            "resourceType": "Parameters",
            "parameter": [
                {"name": "url", "valueUri": CM + "cm-administrative-gender-v2"},
                {"name": "coding", "valueCoding": {"system": GENDER, "code": "male"}},
            ],
        },
    )
    assert posted.status_code == 200
    assert [(m["equivalence"], m["concept"]) for m in matches(posted.json())] == [
        ("equal", (V2_SEX, "M"))
    ]


def test_translate_errors(client: httpx.Client) -> None:
    unknown = translate(client, url=CM + "no-such-map", system=GENDER, code="male")
    assert unknown.status_code == 404
    assert unknown.json()["issue"][0]["expression"] == ["url"]
    no_system = translate(client, url=CM + "cm-administrative-gender-v2", code="male")
    assert no_system.status_code == 400
    no_code = translate(client, url=CM + "cm-administrative-gender-v2", system=GENDER)
    assert no_code.status_code == 400
    reverse = translate(client, system=GENDER, code="male", reverse="maybe")
    assert reverse.status_code == 400
    assert reverse.json()["issue"][0]["expression"] == ["reverse"]


def test_capability_statement_lists_translate(client: httpx.Client) -> None:
    resources = {r["type"]: r for r in client.get("/metadata").json()["rest"][0]["resource"]}
    ops = {o["name"]: o["definition"] for o in resources["ConceptMap"]["operation"]}
    assert ops["translate"] == "http://hl7.org/fhir/OperationDefinition/ConceptMap-translate"
