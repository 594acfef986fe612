"""Composite search parameters (search.html#composite), over HTTP, on each backend.

The records are crafted here and every expected result is worked out by hand from
the spec's rules: the components of one composite value come from one instance (one
Observation.component, one Group.characteristic, one MolecularSequence.variant), a
value is `component$component[$component]` with `\\$` escaping a dollar, each
component reads as its own parameter type (prefixes on quantity, number and date).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.server.conftest import Server

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
CHROMOSOME = "http://terminology.hl7.org/CodeSystem/chromosome-human"
USAGE = "http://terminology.hl7.org/CodeSystem/usage-context-type"
R4_PARAMS = "http://hl7.org/fhir/SearchParameter/"


def create(client: httpx.Client, resource: dict[str, Any]) -> str:
    r = client.post(f"/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def concept(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def qty(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def component(code: str, **value: Any) -> dict[str, Any]:
    return {"code": concept(LOINC, code), **value}


@pytest.fixture(scope="module")
def records(server: Server) -> dict[str, str]:
    """One patient's Observations and a few other resources with composite parameters."""
    with httpx.Client(base_url=server.base, timeout=60) as c:
        patient = create(c, {"resourceType": "Patient"})
        subject = {"reference": f"Patient/{patient}"}

        def obs(code: str, **extra: Any) -> dict[str, Any]:
            return {
                "resourceType": "Observation",
                "status": "final",
                "code": concept(LOINC, code),
                "subject": subject,
                **extra,
            }

        def bp(systolic: float, diastolic: float, unit: str = "mm[Hg]") -> dict[str, Any]:
            return obs(
                "85354-9",
                component=[
                    component("8480-6", valueQuantity=qty(systolic, unit)),
                    component("8462-4", valueQuantity=qty(diastolic, unit)),
                ],
            )

        ids = {
            "patient": patient,
            # BP panels: systolic and diastolic only as components
            "bp_high": create(c, bp(150, 90)),
            "bp_mixed": create(c, bp(120, 150)),  # the 150 is the diastolic
            "bp_kpa": create(c, bp(20, 12, "kPa")),
            # a systolic pressure on its own: Observation.code and value
            "systolic": create(c, obs("8480-6", valueQuantity=qty(130, "mm[Hg]"))),
            "lipids": create(
                c,
                obs(
                    "57698-3",
                    component=[
                        component("2093-3", valueQuantity=qty(200, "mg/dL")),
                        component("2085-9", valueQuantity=qty(50, "mg/dL")),
                    ],
                ),
            ),
            "smoker": create(c, obs("72166-2", valueCodeableConcept=concept(SNOMED, "449868002"))),
            "eye": create(
                c,
                obs(
                    "29271-4",
                    component=[
                        component("32451-7", valueCodeableConcept=concept(SNOMED, "301943006"))
                    ],
                ),
            ),
            "onset": create(c, obs("11368-8", valueDateTime="2020-05-01")),
            "note": create(c, obs("8251-1", valueString="Cost $5, paid")),
        }
        seq = {
            "resourceType": "MolecularSequence",
            "coordinateSystem": 0,
            "patient": subject,
            "referenceSeq": {
                "chromosome": concept(CHROMOSOME, "1"),
                "genomeBuild": "GRCh38",
                "windowStart": 10,
                "windowEnd": 20,
            },
            "variant": [{"start": 12, "end": 13}, {"start": 100, "end": 200}],
        }
        ids["sequence"] = create(c, seq)
        ids["sequence_by_id"] = create(
            c,
            {
                "resourceType": "MolecularSequence",
                "coordinateSystem": 1,
                "patient": subject,
                "referenceSeq": {
                    "referenceSeqId": concept("http://www.ncbi.nlm.nih.gov/nuccore", "NC_000001"),
                    "windowStart": 1,
                    "windowEnd": 30,
                },
            },
        )
        ids["group"] = create(
            c,
            {
                "resourceType": "Group",
                "type": "person",
                "actual": True,
                "characteristic": [
                    {
                        "code": concept("urn:test:chars", "sex"),
                        "valueCodeableConcept": concept(
                            "http://hl7.org/fhir/administrative-gender", "female"
                        ),
                        "exclude": False,
                    },
                    {
                        "code": concept("urn:test:chars", "smoker"),
                        "valueBoolean": True,
                        "exclude": False,
                    },
                ],
            },
        )
        document = {
            "resourceType": "DocumentReference",
            "status": "current",
            "content": [{"attachment": {"contentType": "text/plain", "data": "aGk="}}],
        }
        ids["doc_old"] = create(c, document)
        ids["doc_other"] = create(c, document)
        ids["doc_new"] = create(
            c,
            {
                **document,
                "relatesTo": [
                    {
                        "code": "replaces",
                        "target": {"reference": f"DocumentReference/{ids['doc_old']}"},
                    }
                ],
            },
        )
        ids["valueset"] = create(
            c,
            {
                "resourceType": "ValueSet",
                "status": "draft",
                "useContext": [
                    {
                        "code": {"system": USAGE, "code": "focus"},
                        "valueCodeableConcept": concept(SNOMED, "363346000"),
                    },
                    {"code": {"system": USAGE, "code": "age"}, "valueQuantity": qty(21, "a")},
                ],
            },
        )
    return ids


@pytest.fixture()
def find(client: httpx.Client, records: dict[str, str]) -> Iterator[Any]:
    """`find(type, **params)`: the names (keys of `records`) of the matches."""
    names = {v: k for k, v in records.items()}

    def run(type: str, *params: tuple[str, str]) -> set[str]:
        query = list(params)
        if type in ("Observation", "MolecularSequence"):
            query.append(("patient", f"Patient/{records['patient']}"))
        r = client.get(f"/{type}", params=[*query, ("_count", "100")])
        assert r.status_code == 200, r.text
        bundle = r.json()
        outcomes = [e for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"]
        assert outcomes == [], outcomes  # every parameter was understood
        return {names.get(e["resource"]["id"], "?") for e in bundle.get("entry", [])}

    yield run


def test_blood_pressure_trap(find: Any) -> None:
    # Observation.code is the panel's code: its components are not the Observation's code
    assert find("Observation", ("code", "8480-6")) == {"systolic"}
    assert find("Observation", ("component-code", "8480-6")) == {"bp_high", "bp_mixed", "bp_kpa"}
    assert find("Observation", ("combo-code", "8480-6")) == {
        "systolic",
        "bp_high",
        "bp_mixed",
        "bp_kpa",
    }
    # systolic above 140: bp_high (150); not bp_mixed, whose 150 is its diastolic
    ccvq = "component-code-value-quantity"
    assert find("Observation", (ccvq, f"{LOINC}|8480-6$gt140")) == {"bp_high"}
    assert find("Observation", (ccvq, f"{LOINC}|8462-4$gt140")) == {"bp_mixed"}
    # the standalone systolic (130) is no component
    assert find("Observation", (ccvq, "8480-6$gt125")) == {"bp_high"}
    assert find("Observation", ("combo-code-value-quantity", "8480-6$gt125")) == {
        "systolic",
        "bp_high",
    }
    assert find("Observation", ("code-value-quantity", "8480-6$gt125")) == {"systolic"}
    assert find("Observation", ("code-value-quantity", "8480-6$lt125")) == set()


def test_quantity_component_units_and_prefixes(find: Any) -> None:
    ccvq = "component-code-value-quantity"
    # 150 mm[Hg] is above 10, but only the kPa panel is in kPa
    assert find("Observation", (ccvq, f"8480-6$gt10|{UCUM}|kPa")) == {"bp_kpa"}
    assert find("Observation", (ccvq, "8480-6$gt10||kPa")) == {"bp_kpa"}
    assert find("Observation", (ccvq, f"8480-6$gt10|{UCUM}|mm[Hg]")) == {"bp_high", "bp_mixed"}
    # mg/dL components: total cholesterol 200, HDL 50
    assert find("Observation", (ccvq, f"{LOINC}|2093-3$ge200|{UCUM}|mg/dL")) == {"lipids"}
    assert find("Observation", (ccvq, "2093-3$gt200")) == set()  # 200 is not above 200
    assert find("Observation", (ccvq, "2093-3$200")) == {"lipids"}  # eq: 199.5 to 200.5
    assert find("Observation", (ccvq, "2085-9$le50")) == {"lipids"}
    assert find("Observation", (ccvq, "2085-9$eb50")) == set()
    assert find("Observation", (ccvq, f"2093-3$200|{UCUM}|mmol/L")) == set()


def test_token_component_forms(find: Any) -> None:
    ccvq = "component-code-value-quantity"
    # |code: a code without a system; every component code here has LOINC's
    assert find("Observation", (ccvq, "|8480-6$gt10")) == set()
    # system|: any LOINC component code; values under 99.5: diastolic 90, all of
    # bp_kpa (20, 12; no unit asked) and HDL 50
    assert find("Observation", (ccvq, f"{LOINC}|$lt100")) == {"bp_high", "bp_kpa", "lipids"}
    assert find("Observation", (ccvq, "http://snomed.info/sct|8480-6$gt10")) == set()


def test_or_and_and(find: Any) -> None:
    ccvq = "component-code-value-quantity"
    # a comma ORs whole composite values
    assert find("Observation", (ccvq, "8480-6$gt140,8462-4$gt140")) == {"bp_high", "bp_mixed"}
    # repeating the parameter ANDs them: systolic above 140 and diastolic below 100
    assert find("Observation", (ccvq, "8480-6$gt140"), (ccvq, "8462-4$lt100")) == {"bp_high"}
    assert find("Observation", (ccvq, "8480-6$gt140"), (ccvq, "8462-4$gt140")) == set()
    # with an ordinary parameter
    assert find("Observation", (ccvq, "8480-6$gt100"), ("code", "85354-9")) == {
        "bp_high",
        "bp_mixed",
    }


def test_concept_components(find: Any) -> None:
    assert find("Observation", ("code-value-concept", f"{LOINC}|72166-2${SNOMED}|449868002")) == {
        "smoker"
    }
    assert find("Observation", ("code-value-concept", "72166-2$449868002")) == {"smoker"}
    assert find("Observation", ("code-value-concept", "72166-2$8517006")) == set()
    assert find("Observation", ("code-value-concept", f"72166-2${LOINC}|449868002")) == set()
    assert find("Observation", ("combo-code-value-concept", "72166-2$449868002")) == {"smoker"}
    assert find("Observation", ("combo-code-value-concept", "32451-7$301943006")) == {"eye"}
    assert find("Observation", ("component-code-value-concept", "32451-7$301943006")) == {"eye"}
    assert find("Observation", ("component-code-value-concept", "72166-2$449868002")) == set()


def test_date_components(find: Any) -> None:
    cvd = "code-value-date"
    assert find("Observation", (cvd, "11368-8$ge2020-01-01")) == {"onset"}
    assert find("Observation", (cvd, "11368-8$2020-05")) == {"onset"}
    assert find("Observation", (cvd, "11368-8$lt2020")) == set()
    assert find("Observation", (cvd, "11368-8$eq2020-06")) == set()
    assert find("Observation", (cvd, "8480-6$ge2020")) == set()


def test_string_components_and_escapes(find: Any) -> None:
    cvs = "code-value-string"
    assert find("Observation", (cvs, "8251-1$cost")) == {"note"}  # starts with, any case
    assert find("Observation", (cvs, "8251-1$paid")) == set()
    # the value "Cost $5, paid": `\$` and `\,` are its own dollar and comma
    assert find("Observation", (cvs, r"8251-1$cost \$5\, paid")) == {"note"}
    assert find("Observation", (cvs, r"8251-1$cost \$6")) == set()


def test_three_components(find: Any) -> None:
    window = "chromosome-window-coordinate"
    assert find("MolecularSequence", (window, "1$ge10$le20")) == {"sequence"}
    assert find("MolecularSequence", (window, f"{CHROMOSOME}|1$10$20")) == {"sequence"}
    assert find("MolecularSequence", (window, "1$gt10$le20")) == set()  # 10 is not above 10
    assert find("MolecularSequence", (window, "2$ge10$le20")) == set()
    variant = "chromosome-variant-coordinate"
    # variants (12, 13) and (100, 200): a start of one and an end of the other is no match
    assert find("MolecularSequence", (variant, "1$ge100$le13")) == set()
    assert find("MolecularSequence", (variant, "1$ge100$le200")) == {"sequence"}
    assert find("MolecularSequence", (variant, "1$le12$le13")) == {"sequence"}
    assert find(
        "MolecularSequence", ("referenceseqid-window-coordinate", "NC_000001$ge1$le30")
    ) == {"sequence_by_id"}


def test_other_resources(find: Any, records: dict[str, str]) -> None:
    cv = "characteristic-value"
    assert find("Group", (cv, "sex$female")) == {"group"}
    assert find("Group", (cv, "urn:test:chars|smoker$true")) == {"group"}
    assert find("Group", (cv, "sex$male")) == set()
    assert find("Group", (cv, "sex$true")) == set()  # two characteristics, not one
    old, other = records["doc_old"], records["doc_other"]
    # R4 swaps the definitions of relationship's components; the code is the token
    rel = "relationship"
    assert find("DocumentReference", (rel, f"replaces$DocumentReference/{old}")) == {"doc_new"}
    assert find("DocumentReference", (rel, f"replaces${old}")) == {"doc_new"}
    assert find("DocumentReference", (rel, f"appends$DocumentReference/{old}")) == set()
    assert find("DocumentReference", (rel, f"replaces$DocumentReference/{other}")) == set()
    ctv = "context-type-value"
    assert find("ValueSet", (ctv, f"focus${SNOMED}|363346000")) == {"valueset"}
    assert find("ValueSet", (ctv, "age$363346000")) == set()
    ctq = "context-type-quantity"
    assert find("ValueSet", (ctq, f"{USAGE}|age$gt18")) == {"valueset"}
    assert find("ValueSet", (ctq, "age$lt18")) == set()
    assert find("ValueSet", (ctq, "focus$gt18")) == set()


def test_across_types(client: httpx.Client, records: dict[str, str]) -> None:
    # ValueSet and CodeSystem both define context-type-value
    params = {"_type": "ValueSet,CodeSystem", "context-type-value": f"focus${SNOMED}|363346000"}
    r = client.get("/", params=params)
    assert r.status_code == 200, r.text
    matches = [
        e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"
    ]
    assert matches == [records["valueset"]]


def test_reverse_chain_through_a_composite(client: httpx.Client) -> None:
    high = create(client, {"resourceType": "Patient"})
    low = create(client, {"resourceType": "Patient"})
    for patient, systolic, diastolic in ((high, 150, 90), (low, 120, 150)):
        create(
            client,
            {
                "resourceType": "Observation",
                "status": "final",
                "code": concept(LOINC, "85354-9"),
                "subject": {"reference": f"Patient/{patient}"},
                "component": [
                    component("8480-6", valueQuantity=qty(systolic, "mm[Hg]")),
                    component("8462-4", valueQuantity=qty(diastolic, "mm[Hg]")),
                ],
            },
        )
    has = "_has:Observation:patient:component-code-value-quantity"
    r = client.get("/Patient", params={has: "8480-6$gt140", "_id": f"{high},{low}"})
    assert r.status_code == 200, r.text
    assert [e["resource"]["id"] for e in r.json().get("entry", [])] == [high]


def test_missing(find: Any) -> None:
    ccvq = "component-code-value-quantity:missing"
    assert find("Observation", (ccvq, "false")) == {"bp_high", "bp_mixed", "bp_kpa", "lipids"}
    assert find("Observation", (ccvq, "true")) == {"systolic", "smoker", "eye", "onset", "note"}
    assert find("Observation", ("code-value-string:missing", "false")) == {"note"}


def test_update_and_delete_replace_component_rows(client: httpx.Client) -> None:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": concept(LOINC, "85354-9"),
        "component": [
            component("8480-6", valueQuantity=qty(160, "mm[Hg]")),
            component("8462-4", valueQuantity=qty(95, "mm[Hg]")),
        ],
    }
    oid = create(client, body)

    def found(value: str) -> bool:
        params = {"_id": oid, "component-code-value-quantity": value}
        bundle = client.get("/Observation", params=params).json()
        return [e["resource"]["id"] for e in bundle.get("entry", [])] == [oid]

    assert found("8480-6$gt150")
    body["id"] = oid
    body["component"][0]["valueQuantity"] = qty(130, "mm[Hg]")
    assert client.put(f"/Observation/{oid}", json=body).status_code == 200
    assert not found("8480-6$gt150")
    assert found("8480-6$130")
    assert found("8462-4$95")
    assert client.delete(f"/Observation/{oid}").status_code in (200, 204)
    assert not found("8480-6$130")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("code-value-quantity", "8480-6"),  # one component of two
        ("code-value-quantity", "8480-6$gt1$2"),  # three
        ("code-value-quantity", "8480-6$abc"),  # not a quantity
        ("code-value-quantity", "8480-6$"),  # an empty component
        ("code-value-quantity", "8480-6$gt1,8462-4"),  # the second value is short
        ("code-value-date", "11368-8$notadate"),
        ("chromosome-window-coordinate", "1$10"),
        ("code-value-quantity:exact", "8480-6$1"),
        ("component-code-value-quantity:missing", "maybe"),
    ],
)
def test_unreadable_values_are_400(client: httpx.Client, name: str, value: str) -> None:
    type = "MolecularSequence" if name.startswith("chromosome") else "Observation"
    r = client.get(f"/{type}", params={name: value})
    assert r.status_code == 400, r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    expressions = [e for i in outcome["issue"] for e in i.get("expression", [])]
    assert expressions == [name]


def test_capability_statement_lists_composites(client: httpx.Client) -> None:
    cs = client.get("/metadata").json()
    listed = {
        (r["type"], p["name"])
        for r in cs["rest"][0]["resource"]
        for p in r["searchParam"]
        if p["type"] == "composite" and p["definition"].startswith(R4_PARAMS)
    }
    assert ("Observation", "combo-code-value-quantity") in listed
    assert ("MolecularSequence", "chromosome-window-coordinate") in listed
    assert ("DocumentReference", "relationship") in listed
    assert len(listed) == 72  # every R4 composite
