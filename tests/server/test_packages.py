"""FHIR packages end to end: `openrecord packages add`, then a real server uses them.

A hand-written clinic IG (tests/server/package_data.py) is built into an npm-style
.tgz; US Core is packaged from the shared data (shipped already, its search parameters
built in: loading it again must be harmless); a folder holds a hand-made licensed
terminology stand-in. Expected values are worked out by hand from those resources.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.databases import backends, fresh_database
from tests.server.conftest import serving
from tests.server.launcher import run_openrecord
from tests.server.package_data import (
    CLINIC_PATIENT,
    DIABETES_VS,
    PROGRAM_CM,
    PROGRAM_CS,
    PROGRAM_EXT,
    SCT,
    US_PATIENT,
    clinic_package,
    us_core_package,
)
from tests.server.package_data import PROFILE as PROFILE_OF_CLINIC
from tests.shared_data import require_shared

LOINC = "http://loinc.org"
US_RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "text": {
        "status": "generated",
        "div": '<div xmlns="http://www.w3.org/1999/xhtml">Amy Shaw</div>',
    },
    "extension": [
        {
            "url": US_RACE,
            "extension": [
                {
                    "url": "ombCategory",
                    "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2106-3"},
                },
                {"url": "text", "valueString": "White"},
            ],
        },
        {"url": PROGRAM_EXT, "valueCoding": {"system": PROGRAM_CS, "code": "type1"}},
    ],
    "identifier": [{"system": "http://clinic.example.org/mrn", "value": "A-1"}],
    "name": [{"family": "Shaw", "given": ["Amy"]}],
    "telecom": [{"system": "phone", "value": "555-0100", "use": "home"}],
    "gender": "female",
    "birthDate": "1987-02-20",
}

# A licensed terminology stand-in: a complete CodeSystem of two LOINC codes.
LICENSED: dict[str, Any] = {
    "resourceType": "CodeSystem",
    "id": "loinc-subset",
    "url": LOINC,
    "version": "2.77",
    "name": "LOINC",
    "status": "active",
    "content": "complete",
    "concept": [
        {"code": "2339-0", "display": "Glucose [Mass/volume] in Blood"},
        {"code": "8480-6", "display": "Systolic blood pressure"},
    ],
}
FRAGMENT: dict[str, Any] = {
    "resourceType": "CodeSystem",
    "id": "partial",
    "url": "http://example.org/fhir/partial-codes",
    "name": "Partial",
    "status": "active",
    "content": "fragment",
    "concept": [{"code": "a", "display": "A"}],
}


@dataclass(frozen=True)
class Loaded:
    base: str
    database: str
    outputs: dict[str, str]


def packages(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_openrecord(
        ["packages", *args, "--database", database],
        env={**os.environ},
        timeout=120,
    )


@pytest.fixture(scope="module", params=backends())
def loaded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Loaded]:
    folder = tmp_path_factory.mktemp("packages")
    us_core = us_core_package(require_shared("us-core", "resources"), folder)
    licensed = folder / "licensed"
    licensed.mkdir()
    (licensed / "CodeSystem-loinc-subset.json").write_text(json.dumps(LICENSED))
    (licensed / "CodeSystem-partial.json").write_text(json.dumps(FRAGMENT))
    with fresh_database(request.param, folder) as database:
        outputs = {}
        for name, path in [
            ("clinic", clinic_package(folder)),
            ("us-core", us_core),
            ("us-core-again", us_core),
            ("licensed", licensed),
        ]:
            done = packages(database, "add", str(path))
            assert done.returncode == 0, done.stderr
            outputs[name] = done.stdout
        with serving(database, folder / "server.log") as (base, _):
            yield Loaded(base, database, outputs)


@pytest.fixture()
def client(loaded: Loaded) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=loaded.base, timeout=60) as c:
        yield c


def errors(outcome: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (i["severity"], (i.get("expression") or [""])[0])
        for i in outcome["issue"]
        if i["severity"] in ("error", "fatal", "warning")
    ]


def validate(client: httpx.Client, resource: dict[str, Any], profile: str) -> dict[str, Any]:
    r = client.post(
        f"/{resource['resourceType']}/$validate", params={"profile": profile}, json=resource
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def value(params: dict[str, Any], name: str) -> Any:
    part = next(p for p in params["parameter"] if p["name"] == name)
    return next(v for k, v in part.items() if k.startswith("value"))


def test_packages_list_and_reload(loaded: Loaded) -> None:
    # the second US Core load wrote nothing new
    assert "nothing new" in loaded.outputs["us-core-again"]
    listing = packages(loaded.database, "list")
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    names = [line.split("\t")[0] for line in lines]
    assert names == ["example.fhir.clinic#1.0.0", "hl7.fhir.us.core#7.0.0", "licensed#current"]
    # the clinic IG's six conformance resources, the example left out
    assert lines[0].split("\t")[2] == "6 resources"


def test_package_resources_are_the_record(client: httpx.Client) -> None:
    sd = client.get("/StructureDefinition", params={"url": CLINIC_PATIENT}).json()
    assert [e["resource"]["id"] for e in sd["entry"]] == ["clinic-patient"]
    assert client.get("/Patient/example").status_code == 404  # package/example/ not loaded


def test_capability_statement_lists_the_loaded_profile(client: httpx.Client) -> None:
    resources = {r["type"]: r for r in client.get("/metadata").json()["rest"][0]["resource"]}
    assert CLINIC_PATIENT in resources["Patient"]["supportedProfile"]
    assert US_PATIENT in resources["Patient"]["supportedProfile"]


def test_loaded_profile_validates_from_its_differential(client: httpx.Client) -> None:
    assert errors(validate(client, PATIENT, CLINIC_PATIENT)) == []
    # the profile's own rules
    no_program = copy.deepcopy(PATIENT)
    del no_program["extension"][1]
    assert errors(validate(client, no_program, CLINIC_PATIENT)) == [("error", "Patient.extension")]
    no_birth = {k: v for k, v in PATIENT.items() if k != "birthDate"}
    assert errors(validate(client, no_birth, CLINIC_PATIENT)) == [("error", "Patient.birthDate")]
    # the required binding of the extension (cardio is not a diabetes programme)
    cardio = copy.deepcopy(PATIENT)
    cardio["extension"][1]["valueCoding"]["code"] = "cardio"
    assert errors(validate(client, cardio, CLINIC_PATIENT)) == [
        ("error", "Patient.extension[1].valueCoding")
    ]
    # US Core's rules still hold under the profile on a profile
    no_name = {k: v for k, v in PATIENT.items() if k != "name"}
    assert errors(validate(client, no_name, CLINIC_PATIENT)) == [("error", "Patient.name")]
    # the extension used outside its context (Patient only)
    misplaced = copy.deepcopy(PATIENT)
    misplaced["name"][0]["extension"] = [misplaced["extension"][1]]
    assert ("error", "Patient.name[0].extension[0]") in errors(
        validate(client, misplaced, CLINIC_PATIENT)
    )


def test_meta_profile_write_policy_uses_the_loaded_profile(client: httpx.Client) -> None:
    declared = {k: v for k, v in PATIENT.items() if k != "birthDate"}
    declared["meta"] = {"profile": [CLINIC_PATIENT]}
    r = client.post("/Patient", json=declared, headers={"Prefer": "return=OperationOutcome"})
    assert r.status_code == 201  # the server's default policy is warn
    warned = [(i["severity"], i.get("expression")) for i in r.json()["issue"]]
    assert ("warning", ["Patient.birthDate"]) in warned


def test_loaded_search_parameter_searches(client: httpx.Client) -> None:
    ids = {}
    for code in ("type1", "type2", "cardio"):
        p = copy.deepcopy(PATIENT)
        p["extension"][1]["valueCoding"]["code"] = code
        p["identifier"][0]["value"] = f"search-{code}"
        r = client.post("/Patient", json=p)
        assert r.status_code == 201, r.text
        ids[code] = r.json()["id"]

    def found(**params: str) -> set[str]:
        bundle = client.get("/Patient", params={**params, "_count": "100"}).json()
        return {e["resource"]["id"] for e in bundle.get("entry", [])} & set(ids.values())

    assert found(program=f"{PROGRAM_CS}|type2") == {ids["type2"]}
    # the loaded value set drives the :in modifier: type1 and type2, not cardio
    assert found(**{"program:in": DIABETES_VS}) == {ids["type1"], ids["type2"]}
    # US Core's race parameter is built in: loading US Core again leaves it working
    assert found(race="2106-3") == set(ids.values())


def test_loaded_value_set_expands_and_validates(client: httpx.Client) -> None:
    expansion = client.get("/ValueSet/$expand", params={"url": DIABETES_VS}).json()["expansion"]
    assert {c["code"] for c in expansion["contains"]} == {"diabetes", "type1", "type2"}
    assert expansion["total"] == 3
    ok = client.get(
        "/ValueSet/$validate-code",
        params={"url": DIABETES_VS, "system": PROGRAM_CS, "code": "type2"},
    ).json()
    assert value(ok, "result") is True
    assert value(ok, "display") == "Type 2 diabetes programme"
    outside = client.get(
        "/ValueSet/$validate-code",
        params={"url": DIABETES_VS, "system": PROGRAM_CS, "code": "cardio"},
    ).json()
    assert value(outside, "result") is False
    lookup = client.get(
        "/CodeSystem/$lookup", params={"system": PROGRAM_CS, "code": "type1"}
    ).json()
    assert value(lookup, "display") == "Type 1 diabetes programme"
    subsumes = client.get(
        "/CodeSystem/$subsumes",
        params={"system": PROGRAM_CS, "codeA": "diabetes", "codeB": "type1"},
    ).json()
    assert value(subsumes, "outcome") == "subsumes"


def test_loaded_concept_map_translates_both_ways(client: httpx.Client) -> None:
    forward = client.get(
        "/ConceptMap/$translate", params={"url": PROGRAM_CM, "system": PROGRAM_CS, "code": "type1"}
    ).json()
    match = next(p for p in forward["parameter"] if p["name"] == "match")["part"]
    assert {"name": "equivalence", "valueCode": "equivalent"} in match
    concept = next(x["valueCoding"] for x in match if x["name"] == "concept")
    assert (concept["system"], concept["code"]) == (SCT, "46635009")
    back = client.get(
        "/ConceptMap/$translate",
        params={"url": PROGRAM_CM, "system": SCT, "code": "73211009", "reverse": "true"},
    ).json()
    match = next(p for p in back["parameter"] if p["name"] == "match")["part"]
    concept = next(x["valueCoding"] for x in match if x["name"] == "concept")
    assert (concept["system"], concept["code"]) == (PROGRAM_CS, "diabetes")
    # the forward map says SNOMED CT's concept is wider; read backwards it is narrower
    assert {"name": "equivalence", "valueCode": "narrower"} in match


def test_us_core_loaded_again_is_harmless(client: httpx.Client) -> None:
    us_patient = {k: v for k, v in PATIENT.items() if k != "extension"}
    us_patient["extension"] = [PATIENT["extension"][0]]
    assert errors(validate(client, us_patient, US_PATIENT)) == []
    no_identifier = {k: v for k, v in us_patient.items() if k != "identifier"}
    assert errors(validate(client, no_identifier, US_PATIENT)) == [("error", "Patient.identifier")]


def test_licensed_code_system_is_known_and_only_its_codes(client: httpx.Client) -> None:
    found = client.get("/CodeSystem/$lookup", params={"system": LOINC, "code": "2339-0"})
    assert found.status_code == 200
    assert value(found.json(), "display") == "Glucose [Mass/volume] in Blood"
    assert value(found.json(), "version") == "2.77"
    # a LOINC code the loaded release does not hold stays "not known"
    outside = client.get("/CodeSystem/$lookup", params={"system": LOINC, "code": "4548-4"})
    assert outside.status_code == 404
    # a fragment is not a complete release: its system stays not known altogether
    partial = client.get(
        "/CodeSystem/$lookup",
        params={"system": "http://example.org/fhir/partial-codes", "code": "a"},
    )
    assert partial.status_code == 404


def test_a_package_for_another_fhir_version_is_refused(loaded: Loaded, tmp_path: Path) -> None:
    from tests.server.package_data import write_tgz

    r5 = write_tgz(
        tmp_path / "r5.tgz",
        {"name": "example.r5", "version": "1.0.0", "fhirVersions": ["5.0.0"]},
        {"CodeSystem-x.json": dict(FRAGMENT, id="r5-only")},
    )
    refused = packages(loaded.database, "add", str(r5))
    assert refused.returncode == 2 and "R4" in refused.stderr
    names = [line.split("#")[0] for line in packages(loaded.database, "list").stdout.splitlines()]
    assert "example.r5" not in names


def test_a_package_added_while_serving(
    loaded: Loaded, client: httpx.Client, tmp_path: Path
) -> None:
    from tests.server.package_data import write_tgz

    nickname = {
        "resourceType": "SearchParameter",
        "id": "late-nickname",
        "url": "http://example.org/fhir/late/SearchParameter/nickname",
        "name": "nickname",
        "status": "active",
        "description": "A patient's nickname",
        "code": "nickname",
        "base": ["Patient"],
        "type": "string",
        "expression": "Patient.name.where(use = 'nickname').given",
    }
    late_profile = dict(
        copy.deepcopy(PROFILE_OF_CLINIC),
        id="late-patient",
        url="http://example.org/fhir/late/StructureDefinition/late-patient",
    )
    package = write_tgz(
        tmp_path / "late.tgz",
        {"name": "example.late", "version": "0.1.0", "fhirVersions": ["4.0.1"]},
        {
            "SearchParameter-late-nickname.json": nickname,
            "StructureDefinition-late.json": late_profile,
        },
    )
    done = packages(loaded.database, "add", str(package))
    assert done.returncode == 0, done.stderr
    # its SearchParameter works at once, in the running server
    patient = copy.deepcopy(PATIENT)
    patient["name"].append({"use": "nickname", "given": ["Zebedee"]})
    created = client.post("/Patient", json=patient).json()["id"]
    bundle = client.get("/Patient", params={"nickname": "zebedee"}).json()
    assert [e["resource"]["id"] for e in bundle.get("entry", [])] == [created]
    # its profile is used once the server restarts
    unknown = client.post(
        "/Patient/$validate", params={"profile": late_profile["url"]}, json=PATIENT
    )
    assert unknown.status_code == 400
