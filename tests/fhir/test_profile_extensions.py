"""Extensions against their context; references resolved inside a Bundle or to contained
resources for target profiles and `resolve()` slicing discriminators.

Contexts are read by hand from the definitions: us-core-race allows Patient,
RelatedPerson, Person, Practitioner and FamilyMemberHistory; the CGM IG's
data-submission-schedule allows ServiceRequest. The CGM summary slices
`hasMember` by `resolve().code`, one slice per summary profile.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from openrecord.fhir.definitions import definitions
from openrecord.fhir.profile_extensions import _allowed, _Place
from openrecord.fhir.profiles import ProfileWalk, profile, validate_against
from tests.fhir.test_profiles import BP, CGM, PATIENT, US, cgm_example, errors_at

RACE = PATIENT["extension"][0]
SCHEDULE = CGM + "data-submission-schedule"
SUMMARY_BUNDLE = CGM + "cgm-data-submission-bundle"


def context_errors(resource: dict[str, Any], profile: str) -> set[str | None]:
    return {
        i.expression
        for i in validate_against(resource, profile)
        if i.severity == "error" and "not allowed on" in i.diagnostics
    }


def test_extension_in_its_context_is_accepted() -> None:
    assert context_errors(PATIENT, US + "us-core-patient") == set()
    order = cgm_example("ServiceRequest-cgmDataSubmissionStandingOrderExample")
    assert any(e["url"] == SCHEDULE for e in order["extension"])
    assert context_errors(order, CGM + "cgm-data-submission-standing-order") == set()


def test_extension_on_an_element_outside_its_context() -> None:
    patient = copy.deepcopy(PATIENT)
    patient["name"][0]["extension"] = [RACE]
    assert context_errors(patient, US + "us-core-patient") == {"Patient.name[0].extension[0]"}


def test_extension_on_a_primitive_outside_its_context() -> None:
    patient = copy.deepcopy(PATIENT)
    patient["_birthDate"] = {"extension": [RACE]}
    assert context_errors(patient, US + "us-core-patient") == {"Patient._birthDate.extension[0]"}


def test_extension_on_another_resource_type() -> None:
    bp = copy.deepcopy(BP)
    bp["extension"] = [RACE]
    assert context_errors(bp, US + "us-core-blood-pressure") == {"Observation.extension[0]"}
    schedule = cgm_example("ServiceRequest-cgmDataSubmissionStandingOrderExample")["extension"][0]
    patient = copy.deepcopy(PATIENT)
    patient["extension"].append(schedule)
    assert context_errors(patient, US + "us-core-patient") == {"Patient.extension[1]"}


def test_extension_in_a_contained_resource_is_checked_in_its_own_context() -> None:
    bp = copy.deepcopy(BP)
    practitioner = {"resourceType": "Practitioner", "id": "dr", "extension": [RACE]}
    organization = {"resourceType": "Organization", "id": "org", "extension": [RACE]}
    bp["contained"] = [practitioner, organization]
    bp["performer"] = [{"reference": "#dr"}, {"reference": "#org"}]
    # race is allowed on a Practitioner, not on an Organization
    assert context_errors(bp, US + "us-core-blood-pressure") == {
        "Observation.contained[1].extension[0]"
    }


def summary_entry(bundle: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    index = next(
        i
        for i, e in enumerate(bundle["entry"])
        if e["resource"]["resourceType"] == "Observation" and e["resource"].get("hasMember")
    )
    return index, bundle["entry"][index]["resource"]


def test_resolve_slicing_inside_a_bundle() -> None:
    bundle = cgm_example("Bundle-cgmDataSubmissionBundle")
    issues = validate_against(bundle, SUMMARY_BUNDLE)
    assert not any("is not checked" in i.diagnostics for i in issues)
    assert errors_at(issues) == set()
    # the GMI member replaced by a sensor reading: the gmi slice (1..1) is now empty
    broken = copy.deepcopy(bundle)
    index, summary = summary_entry(broken)
    gmi = next(i for i, m in enumerate(summary["hasMember"]) if "GMI" in m["reference"])
    summary["hasMember"][gmi] = {"reference": "Observation/cgmSensorReadingMassPerVolumeExample"}
    assert errors_at(validate_against(broken, SUMMARY_BUNDLE)) == {
        f"Bundle.entry[{index}].resource.hasMember"
    }


def test_resolve_slicing_outside_a_bundle_is_reported_not_checked() -> None:
    summary = cgm_example("Observation-cgmSummaryExample")
    issues = validate_against(summary, CGM + "cgm-summary")
    notes = [i for i in issues if "is not checked" in i.diagnostics]
    assert [(i.severity, i.expression) for i in notes] == [("information", "Observation.hasMember")]


def test_reference_resolved_in_the_bundle_must_meet_its_target_profile() -> None:
    bundle = cgm_example("Bundle-cgmDataSubmissionBundle")
    index, summary = summary_entry(bundle)
    member = next(i for i, m in enumerate(summary["hasMember"]) if "DaysOfWear" in m["reference"])
    target = next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["id"] == summary["hasMember"][member]["reference"].split("/")[1]
    )
    # still a days-of-wear summary by its code (the slice), but no longer one by its profile
    del target["valueQuantity"]
    errors = errors_at(validate_against(bundle, SUMMARY_BUNDLE))
    assert f"Bundle.entry[{index}].resource.hasMember[{member}]" in errors


def bp_with_subject(subject: dict[str, Any]) -> list[Any]:
    """The issues of BP (subject Patient/p1, target profile us-core-patient) when
    `Patient/p1` resolves to `subject` in the Bundle being validated."""
    prof = profile(US + "us-core-blood-pressure")
    assert prof is not None
    walk = ProfileWalk({"Patient/p1": subject})
    walk.check(prof.root, [(BP, "Observation")], "Observation", BP)
    return walk.issues


def test_resolved_reference_checked_against_its_target_profile() -> None:
    assert [i for i in bp_with_subject(PATIENT) if i.severity == "error"] == []
    no_identifier = {k: v for k, v in PATIENT.items() if k != "identifier"}
    errors = [i for i in bp_with_subject(no_identifier) if i.severity == "error"]
    assert [i.expression for i in errors] == ["Observation.subject"]
    assert "us-core-patient" in errors[0].diagnostics
    wrong_type = {"resourceType": "Group", "id": "p1", "type": "person", "actual": True}
    errors = [i for i in bp_with_subject(wrong_type) if i.severity == "error"]
    assert [i.expression for i in errors] == ["Observation.subject"]


@pytest.mark.parametrize(
    ("expression", "place", "allowed"),
    [
        # valueQuantity is Observation.value[x] in its definition
        (
            "Observation.value[x]",
            _Place("Quantity", "Observation.valueQuantity", "Observation.value[x]"),
            True,
        ),
        (
            "Quantity",
            _Place("Age", "Observation.valueAge", "Observation.value[x]"),
            True,
        ),  # Age is a Quantity
        (
            "Observation.component",
            _Place("BackboneElement", "Observation.component", "Observation.component"),
            True,
        ),
        ("Resource", _Place("Patient", "Patient", "Patient"), True),
        (
            "DomainResource",
            _Place("Bundle", "Bundle", "Bundle"),
            False,
        ),  # a Bundle is a Resource only
        ("Patient", _Place("HumanName", "Patient.name", "Patient.name"), False),
        ("HumanName.given", _Place("string", "Patient.name.given", "HumanName.given"), True),
        ("Element", _Place("string", "Patient.name.given", "HumanName.given"), True),
    ],
)
def test_element_contexts(expression: str, place: _Place, allowed: bool) -> None:
    assert _allowed(definitions(), [["element", expression]], place) is allowed


def test_extension_contexts_name_the_extension_they_nest_in() -> None:
    context = [["extension", "http://example.org/outer"]]
    outer = _Place("Extension", "Extension", "Extension", "http://example.org/outer")
    other = _Place("Extension", "Extension", "Extension", "http://example.org/other")
    assert _allowed(definitions(), context, outer)
    assert not _allowed(definitions(), context, other)
    assert not _allowed(definitions(), context, _Place("Patient", "Patient", "Patient"))


def test_extension_on_a_given_name_by_its_datatype_path() -> None:
    # a made-up extension allowed on HumanName.given only, used on Patient.name[0]._given
    from openrecord.fhir import profiles as profiles_module

    url = "http://example.org/StructureDefinition/given-origin"
    ext_profile = {
        "url": url,
        "type": "Extension",
        "kind": "complex-type",
        "context": [["element", "HumanName.given"]],
        "elements": [{"id": "Extension", "min": 0, "max": "*", "tp": "Extension"}],
    }
    profiles_module.register_profiles([ext_profile])
    patient = copy.deepcopy(PATIENT)
    patient["name"][0]["_given"] = [{"extension": [{"url": url, "valueString": "Old Norse"}]}]
    assert context_errors(patient, US + "us-core-patient") == set()
    patient["name"][0]["_family"] = {"extension": [{"url": url, "valueString": "x"}]}
    assert context_errors(patient, US + "us-core-patient") == {
        "Patient.name[0]._family.extension[0]"
    }
