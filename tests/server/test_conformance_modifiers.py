"""Search conformance: modifiers (R4 search.html §3.1.1.5).

Data and the reasoning tables: tests/server/conformance_data.py.
"""

from __future__ import annotations

import httpx
import pytest

from tests.server.conformance_data import ALL_PATIENTS, EXAMPLE, search_ids

pytestmark = pytest.mark.usefixtures("conformance_dataset")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # :missing=true: no value at all for the parameter
        ("gender:missing=true", {"pat-dana"}),
        ("gender:missing=false", ALL_PATIENTS - {"pat-dana"}),
        ("active:missing=true", {"pat-dana"}),
        ("address-city:missing=true", {"pat-dana"}),
        ("birthdate:missing=false", ALL_PATIENTS),
        ("birthdate:missing=true", set()),
        ("organization:missing=true", {"pat-carl"}),
        ("general-practitioner:missing=true", {"pat-carl", "pat-dana"}),
        ("_profile:missing=true", {"pat-bob", "pat-carl", "pat-dana"}),
        ("_tag:missing=true", {"pat-carl", "pat-dana"}),
        ("_security:missing=false", {"pat-anna", "pat-bob"}),
        ("gender:missing=true&birthdate=1981", {"pat-dana"}),
    ],
)
def test_missing(client: httpx.Client, query: str, expected: set[str]) -> None:
    assert search_ids(client, "Patient", query) == expected


def test_missing_on_other_types(client: httpx.Client) -> None:
    # enc-bob has a period without an end, which is still a value
    assert search_ids(client, "Encounter", "date:missing=false") == {"enc-anna", "enc-bob"}
    # of the observations, only the weights carry a category
    weights = {"wt-60", "wt-99-6", "wt-100-004", "wt-100-2", "wt-101", "wt-150", "wt-lb"}
    assert search_ids(client, "Observation", "category:missing=false") == weights
    assert search_ids(client, "Observation", "value-quantity:missing=false") == weights | {
        "sys-carl"
    }
    # a reference given only by identifier is still a value of subject
    assert "obs-ident" not in search_ids(client, "Observation", "subject:missing=true")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # :exact is the whole string, case and accents included
        ("family:exact=Smith", {"pat-bob", "pat-eve"}),
        ("family:exact=smith", set()),
        ("family:exact=Smi", set()),
        ("family:exact=Müller", {"pat-anna"}),
        ("family:exact=Muller", set()),
        ("given:exact=Évelyne", {"pat-eve"}),
        ("address-city:exact=Zürich", {"pat-anna"}),
        ("family:exact=Smith,Dupont", {"pat-bob", "pat-eve", "pat-dana"}),
        # :contains: anywhere in the string, case- and accent-insensitive
        ("family:contains=mith", {"pat-bob", "pat-carl", "pat-eve"}),
        ("family:contains=LLER", {"pat-anna"}),
        ("family:contains=ül", {"pat-anna"}),
        ("given:contains=velyn", {"pat-eve"}),
        ("address-city:contains=rich", {"pat-anna", "pat-carl"}),
        ("family:contains=xyz", set()),
    ],
)
def test_string_modifiers(client: httpx.Client, query: str, expected: set[str]) -> None:
    assert search_ids(client, "Patient", query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # :not: resources without a matching value, including those with no value at all
        ("gender:not=male", {"pat-anna", "pat-dana", "pat-eve"}),
        ("gender:not=male,female", {"pat-dana"}),
        ("active:not=true", {"pat-carl", "pat-dana"}),
        ("identifier:not=urn:mrn|A-1", ALL_PATIENTS - {"pat-anna"}),
        # bob has urn:other|A-1 as well, so a bare A-1 excludes him too
        ("identifier:not=A-1", {"pat-carl", "pat-dana", "pat-eve"}),
        ("_tag:not=urn:tags|vip", {"pat-bob", "pat-carl", "pat-dana"}),
        ("gender:not=male&birthdate=1980", {"pat-anna"}),
    ],
)
def test_token_not(client: httpx.Client, query: str, expected: set[str]) -> None:
    assert search_ids(client, "Patient", query) == expected


def test_id_not(client: httpx.Client) -> None:
    assert search_ids(client, "Patient", "_id:not=pat-anna,pat-bob") == {
        "pat-carl",
        "pat-dana",
        "pat-eve",
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # :text matches Coding.display / CodeableConcept.text as a string search
        # (starts-with, case-insensitive): "Blood pressure panel..." but not "Systolic blood..."
        ("code:text=blood pressure", {"bp-anna", "bp-bob"}),
        ("code:text=BODY", {
            "wt-60", "wt-99-6", "wt-100-004", "wt-100-2", "wt-101", "wt-150", "wt-lb"}),
        ("code:text=systolic", {"sys-carl"}),
        ("combo-code:text=systolic", {"sys-carl", "bp-anna", "bp-bob"}),
    ],
)  # fmt: skip
def test_token_text(client: httpx.Client, query: str, expected: set[str]) -> None:
    assert search_ids(client, "Observation", query) == expected


def test_condition_code_text(client: httpx.Client) -> None:
    assert search_ids(client, "Condition", "code:text=hypertensive") == {
        "cond-htn-bob",
        "cond-htn-anna",
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # :below: the resource's URI starts with the value
        (f"url:below={EXAMPLE}/ValueSet/a", {"vs-a", "vs-a-extra"}),
        (f"url:below={EXAMPLE}/", {"vs-a", "vs-a-extra"}),
        ("url:below=http://other.org", {"vs-other"}),
        # :above: the value starts with the resource's URI
        (f"url:above={EXAMPLE}/ValueSet/a/extra/more", {"vs-a", "vs-a-extra"}),
        (f"url:above={EXAMPLE}/ValueSet/a/other", {"vs-a"}),
        (f"url:above={EXAMPLE}/ValueSet", set()),
    ],
)
def test_uri_above_below(client: httpx.Client, query: str, expected: set[str]) -> None:
    assert search_ids(client, "ValueSet", query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # :identifier: Reference.identifier, not the referenced resource's identifier
        ("subject:identifier=urn:mrn|A-1", {"obs-ident"}),
        ("subject:identifier=A-1", {"obs-ident"}),
        ("subject:identifier=urn:other|A-1", set()),
        # :[type] restricts the target type of a bare id
        ("subject:Patient=pat-carl", {"wt-60", "sys-carl"}),
        ("subject:Device=pat-carl", set()),
        ("subject:Patient=Patient/pat-carl", {"wt-60", "sys-carl"}),
    ],
)
def test_reference_modifiers(client: httpx.Client, query: str, expected: set[str]) -> None:
    assert search_ids(client, "Observation", query) == expected


def test_below_on_profile_and_source(client: httpx.Client) -> None:
    below = f"{EXAMPLE}/StructureDefinition/"
    assert search_ids(client, "Patient", f"_profile:below={below}") == {"pat-anna", "pat-eve"}
    assert search_ids(client, "Patient", f"_source:below={EXAMPLE}/feed") == {"pat-anna", "pat-bob"}


def test_type_modifier_on_other_references(client: httpx.Client) -> None:
    assert search_ids(client, "Patient", "general-practitioner:Practitioner=pr-house") == {
        "pat-anna",
        "pat-eve",
    }
    assert search_ids(client, "Patient", "general-practitioner:Organization=pr-house") == set()


@pytest.mark.parametrize(
    ("path", "query"),
    [
        # a modifier that does not apply to the parameter's type is an error, not ignored
        ("Patient", "birthdate:exact=1980"),
        ("Patient", "family:not=smith"),
        ("Patient", "gender:contains=male"),
        ("Patient", "family:nonsense=smith"),
        ("Patient", "gender:missing=maybe"),
        # :Type must be a target of the reference parameter
        ("Patient", "general-practitioner:Observation=x"),
    ],
)
def test_bad_modifiers_are_400(client: httpx.Client, path: str, query: str) -> None:
    name, _, value = query.partition("=")
    r = client.get(f"/{path}", params={name: value})
    assert r.status_code == 400, r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] in ("error", "fatal")
