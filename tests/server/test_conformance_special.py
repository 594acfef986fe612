"""Search conformance: composites, `_text`/`_content`, `_type`, unknown parameters, errors.

R4 search.html §3.1.1.4.12 (composite), §3.1.1.5.6 (_text/_content), §3.1.1.1 (search
across types), §3.1.1.2 (handling errors: unknown parameters are ignored and reported,
or refused under `Prefer: handling=strict`; unreadable values are a 400).
Data and the reasoning tables: tests/server/conformance_data.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.server.conformance_data import bundle_ids, find, match_ids, search_ids

pytestmark = pytest.mark.usefixtures("conformance_dataset")


def outcomes(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"]


# -- composite ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("component-code-value-quantity=http://loinc.org|8480-6$gt140", {"bp-bob"}),
        ("component-code-value-quantity=8462-4$lt90", {"bp-anna"}),
        # both values must sit in the same component: 120 is bp-anna's systolic, not diastolic
        ("component-code-value-quantity=8462-4$120", set()),
        ("component-code-value-quantity=8480-6$120", {"bp-anna"}),
        ("component-code-value-quantity=8480-6$120|http://unitsofmeasure.org|mm[Hg]", {"bp-anna"}),
        ("component-code-value-quantity=8480-6$120||kg", set()),
        # OR of composite values
        ("component-code-value-quantity=8480-6$120,8480-6$150", {"bp-anna", "bp-bob"}),
        # AND: a panel with systolic over 140 and diastolic over 90
        (
            "component-code-value-quantity=8480-6$gt140&component-code-value-quantity=8462-4$gt90",
            {"bp-bob"},
        ),
        # code + value of the observation itself
        ("code-value-quantity=http://loinc.org|29463-7$gt120", {"wt-150"}),
        (
            "code-value-quantity=29463-7$100|http://unitsofmeasure.org|kg",
            {"wt-99-6", "wt-100-004", "wt-100-2"},
        ),
        # the panels' code has no value of its own
        ("code-value-quantity=85354-9$120", set()),
        # combo: the observation's own code and value, or a component's
        ("combo-code-value-quantity=8480-6$130", {"sys-carl"}),
        ("combo-code-value-quantity=8480-6$gt125", {"sys-carl", "bp-bob"}),
        # \$ and \, escape the separators inside a composite's token
        (r"code-value-string=urn:cf|x\$y\,z$dollar", {"obs-dollar"}),
        (r"code-value-string=urn:cf|x\$y\,z$other", set()),
    ],
)
def test_composite(client: httpx.Client, query: str, expected: set[str]) -> None:
    assert search_ids(client, "Observation", query) == expected


def test_escaped_separators_in_a_plain_token(client: httpx.Client) -> None:
    assert search_ids(client, "Observation", r"code=urn:cf|x\$y\,z") == {"obs-dollar"}
    # unescaped, the comma splits the value into two codes, neither of which exists
    assert search_ids(client, "Observation", r"code=urn:cf|x\$y,z") == set()


def test_bad_composite_value_is_400(client: httpx.Client) -> None:
    r = client.get("/Observation", params={"component-code-value-quantity": "8480-6$abc"})
    assert r.status_code == 400, r.text
    assert "component-code-value-quantity" in str(r.json()["issue"][0].get("expression"))


# -- _text and _content -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        # _text: the narrative only
        ("Patient", "_text=gardening", {"pat-anna"}),
        ("Patient", "_text=springfield", set()),
        # _content: all the resource's text, narrative included
        ("Patient", "_content=springfield", {"pat-bob", "pat-eve"}),
        ("Patient", "_content=SPRINGFIELD", {"pat-bob", "pat-eve"}),
        ("Patient", "_content=gardening", {"pat-anna"}),
        ("Patient", "_content=springfield&gender=female", {"pat-eve"}),
        ("Condition", "_content=hypertensive", {"cond-htn-bob", "cond-htn-anna"}),
        ("Organization", "_content=clinic", {"org-beta"}),
        ("Patient", "_content=nowhere", set()),
    ],
)
def test_text_and_content(client: httpx.Client, path: str, query: str, expected: set[str]) -> None:
    assert search_ids(client, path, query) == expected


# -- searching across types ---------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("_type=Patient,Observation&_tag=urn:tags|vip", {
            ("Patient", "pat-anna"), ("Patient", "pat-eve"), ("Observation", "obs-vip")}),
        ("_type=Patient&_tag=urn:tags|vip", {("Patient", "pat-anna"), ("Patient", "pat-eve")}),
        # one type: that type's own parameters apply
        ("_type=Patient&gender=male", {("Patient", "pat-bob"), ("Patient", "pat-carl")}),
        # no _type: every type
        ("_tag=urn:tags|vip", {
            ("Patient", "pat-anna"), ("Patient", "pat-eve"), ("Observation", "obs-vip")}),
        ("_id=pat-anna,org-acme,wt-60", {
            ("Patient", "pat-anna"), ("Organization", "org-acme"), ("Observation", "wt-60")}),
        ("_type=Organization,Practitioner&_id=pat-anna,org-acme,pr-house", {
            ("Organization", "org-acme"), ("Practitioner", "pr-house")}),
        # family is defined for both Patient and Practitioner (individual-family)
        ("_type=Patient,Practitioner&family=house,muller", {
            ("Practitioner", "pr-house"), ("Patient", "pat-anna")}),
        ("_type=ValueSet,CodeSystem&url:below=http://example.org/fhir/", {
            ("ValueSet", "vs-a"), ("ValueSet", "vs-a-extra"), ("CodeSystem", "cs-x")}),
    ],
)  # fmt: skip
def test_type_across_types(
    client: httpx.Client, query: str, expected: set[tuple[str, str]]
) -> None:
    assert bundle_ids(find(client, "", query), "match") == expected


def test_unknown_type_is_refused(client: httpx.Client) -> None:
    assert client.get("/", params={"_type": "Nonsense"}).status_code in (400, 404)


# -- unknown parameters and Prefer: handling ----------------------------------------


def test_unknown_parameter_is_reported_and_ignored(client: httpx.Client) -> None:
    bundle = find(client, "Patient", "foo=bar&gender=male")
    # ignored: gender alone decides
    assert match_ids(bundle) == {"pat-bob", "pat-carl"}
    [outcome] = outcomes(bundle)
    assert outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    assert issue["severity"] in ("warning", "information")
    assert "foo" in str(issue)
    lenient = find(client, "Patient", "foo=bar&gender=male", Prefer="handling=lenient")
    assert match_ids(lenient) == {"pat-bob", "pat-carl"}


@pytest.mark.parametrize(
    "query",
    ["foo=bar&gender=male", "gender=male&_sort=nonsense", "patient.nonsense=1"],
)
def test_unknown_parameter_under_strict_handling_is_400(client: httpx.Client, query: str) -> None:
    params: list[tuple[str, str | int | float | bool | None]] = [
        (k, v) for k, _, v in (p.partition("=") for p in query.split("&"))
    ]
    r = client.get("/Patient", params=params, headers={"Prefer": "handling=strict"})
    assert r.status_code == 400, r.text
    assert r.json()["resourceType"] == "OperationOutcome"


def test_type_specific_parameter_in_a_search_across_types_is_not_ignored(
    client: httpx.Client,
) -> None:
    # gender is a Patient parameter; across all types it is unknown: reported (or refused)
    r = client.get("/", params={"gender": "male", "_count": "1"})
    if r.status_code == 200:
        assert any("gender" in str(o) for o in outcomes(r.json())), r.text
    else:
        assert r.status_code == 400, r.text


def test_known_parameters_pass_under_strict_handling(client: httpx.Client) -> None:
    bundle = find(client, "Patient", "gender=male&_sort=_id&_count=5", Prefer="handling=strict")
    assert match_ids(bundle) == {"pat-bob", "pat-carl"}
    assert outcomes(bundle) == []


# -- unreadable values --------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name", "value"),
    [
        ("Patient", "birthdate", "notadate"),
        ("Patient", "birthdate", "1980-13"),
        ("Patient", "birthdate", "xx1980"),
        ("Patient", "birthdate", "ge"),
        ("Patient", "_lastUpdated", "yesterday"),
        ("RiskAssessment", "probability", "abc"),
        ("RiskAssessment", "probability", "gt"),
        ("Observation", "value-quantity", "heavy"),
        ("Observation", "value-quantity", "5|kg"),
        ("Patient", "_count", "-1"),
        ("Patient", "active:missing", "perhaps"),
    ],
)
def test_unreadable_values_are_400(client: httpx.Client, path: str, name: str, value: str) -> None:
    r = client.get(f"/{path}", params={name: value})
    assert r.status_code == 400, r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    assert issue["severity"] in ("error", "fatal")
    # the issue names the parameter
    assert name.split(":")[0] in str(issue.get("expression", [])), issue
