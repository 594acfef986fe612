"""Search conformance: chaining, `_has`, `_include`/`_revinclude`, compartments.

R4 search.html §3.1.1.4.13 (chained parameters), §3.1.1.4.14 (reverse chaining),
§3.1.1.5.9 (including other resources), §3.1.1.1.1 / compartmentdefinition.html.
Data and the reasoning tables: tests/server/conformance_data.py.
"""

from __future__ import annotations

import httpx
import pytest

from tests.server.conformance_data import bundle_ids, find, match_ids, search_ids

pytestmark = pytest.mark.usefixtures("conformance_dataset")


ANNA_OBS = {"wt-99-6", "wt-101", "bp-anna", "tz-est", "tz-utc", "tz-day", "tz-period"}
BOB_OBS = {"wt-100-004", "wt-150", "bp-bob"}
EVE_OBS = {"wt-100-2", "obs-vip"}
CARL_OBS = {"wt-60", "sys-carl"}
DANA_OBS = {"wt-lb"}


# -- chaining -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        # patient has one target type (Patient), so no type is needed
        ("Observation", "patient.family=smith", BOB_OBS | CARL_OBS | EVE_OBS),
        ("Observation", "patient.family:exact=Smith", BOB_OBS | EVE_OBS),
        ("Observation", "patient.gender=female", ANNA_OBS | EVE_OBS),
        ("Observation", "patient.identifier=urn:mrn|B-2", BOB_OBS),
        ("Observation", "patient.birthdate=1980", ANNA_OBS | BOB_OBS),
        # subject may be several types: the :Patient modifier names the one chained into
        ("Observation", "subject:Patient.name=dupont", DANA_OBS),
        ("Observation", "subject:Patient.address-city=zurich", ANNA_OBS | CARL_OBS),
        # chained values OR-ed; repeated chains AND-ed
        ("Observation", "patient.family=dupont,smithson", DANA_OBS | CARL_OBS),
        ("Observation", "patient.family=smith&patient.gender=male", BOB_OBS | CARL_OBS),
        ("Observation", "patient.family=smith&code=http://loinc.org|29463-7", {
            "wt-100-004", "wt-150", "wt-60", "wt-100-2"}),
        # multi-level: observation -> patient -> managing organization
        ("Observation", "patient.organization.name=acme", ANNA_OBS | DANA_OBS),
        ("Encounter", "service-provider.partof.name=acme", {"enc-bob"}),
        ("Patient", "general-practitioner:Practitioner.family=house", {"pat-anna", "pat-eve"}),
        ("Patient", "organization.partof=Organization/org-acme", {"pat-bob", "pat-eve"}),
        ("DiagnosticReport", "result.code=http://loinc.org|85354-9", {"dr-final", "dr-prelim"}),
        ("DiagnosticReport", "result.patient.family=muller", {"dr-final"}),
        ("Condition", "encounter.service-provider.name=acme", {"cond-diab"}),
        ("Observation", "patient.family=nobody", set()),
    ],
)  # fmt: skip
def test_chaining(client: httpx.Client, path: str, query: str, expected: set[str]) -> None:
    assert search_ids(client, path, query) == expected


def test_untyped_chain_on_a_polymorphic_reference(client: httpx.Client) -> None:
    # subject targets Group, Device, Location and Patient: a server either finds the
    # patients' observations (only Patients here have a family) or refuses with 400
    r = client.get("/Observation", params={"subject.family": "dupont"})
    if r.status_code == 200:
        assert match_ids(r.json()) == DANA_OBS
    else:
        assert r.status_code == 400


def test_unknown_chained_parameter_is_an_error_or_reported(client: httpx.Client) -> None:
    r = client.get("/Observation", params={"patient.nonsense": "x"})
    assert r.status_code in (200, 400)
    if r.status_code == 200:
        assert any(e["search"]["mode"] == "outcome" for e in r.json().get("entry", []))
    strict = client.get(
        "/Observation", params={"patient.nonsense": "x"}, headers={"Prefer": "handling=strict"}
    )
    assert strict.status_code == 400


# -- _has ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        # patients some Observation points to (by patient) with a weight
        (
            "Patient",
            "_has:Observation:patient:code=http://loinc.org|29463-7",
            {"pat-anna", "pat-bob", "pat-carl", "pat-dana", "pat-eve"},
        ),
        ("Patient", "_has:Observation:patient:code=http://loinc.org|85354-9", {"pat-anna", "pat-bob"}),
        ("Patient", "_has:Observation:subject:code=urn:cf|tz", {"pat-anna"}),
        ("Patient", "_has:Condition:subject:code=http://snomed.info/sct|38341003", {
            "pat-anna", "pat-bob"}),
        # AND of two _has: a hypertensive patient with a diabetes record too
        ("Patient", "_has:Condition:subject:code=38341003&_has:Condition:subject:code=44054006", {
            "pat-anna"}),
        # OR inside one
        ("Patient", "_has:Condition:subject:code=44054006,38341003", {"pat-anna", "pat-bob"}),
        ("Practitioner", "_has:Encounter:participant:status=finished", {"pr-house"}),
        ("Organization", "_has:Patient:organization:gender=male", {"org-beta"}),
        ("Organization", "_has:Encounter:service-provider:status=in-progress", {"org-beta"}),
        # nested: patients with an Observation that a final DiagnosticReport reports
        ("Patient", "_has:Observation:patient:_has:DiagnosticReport:result:status=final", {
            "pat-anna"}),
        ("Patient", "_has:Observation:patient:_has:DiagnosticReport:result:status=preliminary", {
            "pat-bob"}),
        # _has combined with an ordinary parameter
        ("Patient", "_has:Observation:patient:code=http://loinc.org|29463-7&gender=male", {
            "pat-bob", "pat-carl"}),
        ("Patient", "_has:Observation:patient:code=urn:cf|nothing", set()),
    ],
)  # fmt: skip
def test_has(client: httpx.Client, path: str, query: str, expected: set[str]) -> None:
    assert search_ids(client, path, query) == expected


def test_has_with_modifiers(client: httpx.Client) -> None:
    # GPs of a patient named exactly "Smith": bob (cuddy) and eve (house)
    query = "_has:Patient:general-practitioner:family:exact=Smith"
    assert search_ids(client, "Practitioner", query) == {"pr-house", "pr-cuddy"}
    # GPs of a patient not female: bob (cuddy); carl and dana have no GP
    query = "_has:Patient:general-practitioner:gender:not=female"
    assert search_ids(client, "Practitioner", query) == {"pr-cuddy"}


@pytest.mark.parametrize(
    "name",
    ["_has:Nonsense:patient:code", "_has:Observation:nonsense:code", "_has:Observation"],
)
def test_bad_has_is_refused_or_reported(client: httpx.Client, name: str) -> None:
    # never silently ignored: a 400, or a warning in the outcome entry (400 when strict)
    r = client.get("/Patient", params={name: "x"})
    if r.status_code == 200:
        assert any(e["search"]["mode"] == "outcome" for e in r.json()["entry"]), r.text
        strict = client.get("/Patient", params={name: "x"}, headers={"Prefer": "handling=strict"})
        assert strict.status_code == 400
    else:
        assert r.status_code == 400, r.text


# -- _include / _revinclude ---------------------------------------------------------


def test_include(client: httpx.Client) -> None:
    b = find(client, "Observation", "code=http://loinc.org|85354-9&_include=Observation:subject")
    assert bundle_ids(b, "match") == {("Observation", "bp-anna"), ("Observation", "bp-bob")}
    assert bundle_ids(b, "include") == {("Patient", "pat-anna"), ("Patient", "pat-bob")}
    # :Type limits the targets included
    typed = find(client, "Observation", "_id=bp-anna&_include=Observation:subject:Group")
    assert bundle_ids(typed, "include") == set()
    several = find(
        client,
        "Encounter",
        "_id=enc-anna&_include=Encounter:subject&_include=Encounter:service-provider",
    )
    assert bundle_ids(several, "include") == {
        ("Patient", "pat-anna"),
        ("Organization", "org-acme"),
    }


def test_include_wildcard(client: httpx.Client) -> None:
    # Encounter:* includes the targets of every reference parameter of the Encounter
    b = find(client, "Encounter", "_id=enc-anna&_include=Encounter:*")
    assert bundle_ids(b, "include") == {
        ("Patient", "pat-anna"),
        ("Organization", "org-acme"),
        ("Practitioner", "pr-house"),
    }


def test_revinclude(client: httpx.Client) -> None:
    b = find(client, "Patient", "_id=pat-bob&_revinclude=Condition:subject")
    assert bundle_ids(b, "match") == {("Patient", "pat-bob")}
    assert bundle_ids(b, "include") == {("Condition", "cond-htn-bob")}
    b = find(
        client,
        "Organization",
        "_id=org-acme&_revinclude=Patient:organization&_revinclude=Organization:partof",
    )
    assert bundle_ids(b, "include") == {
        ("Patient", "pat-anna"),
        ("Patient", "pat-dana"),
        ("Organization", "org-beta"),
    }


def test_include_iterate(client: httpx.Client) -> None:
    # observation -> patient (include) -> organization (iterate) -> parent (iterate)
    query = (
        "_id=wt-100-2&_include=Observation:patient"
        "&_include:iterate=Patient:organization&_include:iterate=Organization:partof"
    )
    assert bundle_ids(find(client, "Observation", query), "include") == {
        ("Patient", "pat-eve"),
        ("Organization", "org-beta"),
        ("Organization", "org-acme"),
    }
    # report -> its results (include) -> the observations' patients (iterate)
    query = "_id=dr-final&_include=DiagnosticReport:result&_include:iterate=Observation:patient"
    assert bundle_ids(find(client, "DiagnosticReport", query), "include") == {
        ("Observation", "bp-anna"),
        ("Patient", "pat-anna"),
    }
    query = "_id=org-beta&_revinclude=Patient:organization&_revinclude:iterate=Condition:subject"
    assert bundle_ids(find(client, "Organization", query), "include") == {
        ("Patient", "pat-bob"),
        ("Patient", "pat-eve"),
        ("Condition", "cond-htn-bob"),
    }


def test_included_resources_are_not_repeated_as_matches(client: httpx.Client) -> None:
    b = find(client, "Organization", "_include=Organization:partof")
    assert bundle_ids(b, "match") == {("Organization", "org-acme"), ("Organization", "org-beta")}
    # org-acme is already a match: it is not added again as an include
    entries = [e["resource"]["id"] for e in b["entry"] if e["search"]["mode"] != "outcome"]
    assert sorted(entries) == ["org-acme", "org-beta"]


# -- compartments -------------------------------------------------------------------


def test_patient_compartment_of_one_type(client: httpx.Client) -> None:
    assert search_ids(client, "Patient/pat-bob/Observation", "") == BOB_OBS
    # with parameters, inside the compartment only
    assert search_ids(client, "Patient/pat-bob/Observation", "code=http://loinc.org|29463-7") == {
        "wt-100-004",
        "wt-150",
    }
    assert search_ids(client, "Patient/pat-anna/Condition", "") == {"cond-diab", "cond-htn-anna"}
    assert search_ids(client, "Patient/pat-anna/Encounter", "") == {"enc-anna"}
    assert search_ids(client, "Patient/pat-carl/RiskAssessment", "probability=gt0.5") == {"ra-80"}


def test_patient_compartment_of_every_type(client: httpx.Client) -> None:
    found = bundle_ids(find(client, "Patient/pat-bob/*", "_count=100"), "match")
    assert found == {
        ("Patient", "pat-bob"),
        *(("Observation", o) for o in BOB_OBS),
        ("Condition", "cond-htn-bob"),
        ("Encounter", "enc-bob"),
        ("DiagnosticReport", "dr-prelim"),
    }


def test_other_compartments(client: httpx.Client) -> None:
    assert search_ids(client, "Encounter/enc-anna/Condition", "") == {"cond-diab"}
    assert search_ids(client, "Practitioner/pr-house/Encounter", "") == {"enc-anna"}
