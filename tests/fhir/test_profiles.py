"""Profile validation (US Core, HL7 CGM IG): valid examples pass, mutated copies fail precisely.

The examples are written by hand from the US Core 7 profiles; each mutation breaks one
rule the profile states, and the expected path is worked out from the example.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from openrecord.fhir.outcome import Issue
from openrecord.fhir.profiles import (
    ProfileElement,
    ProfileWalk,
    known_profiles,
    matches_pattern,
    validate_against,
)
from openrecord.fhir.validation import validate_resource
from tests.shared_data import require_shared

US = "http://hl7.org/fhir/us/core/StructureDefinition/"
CGM = "http://hl7.org/fhir/uv/cgm/StructureDefinition/"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "extension": [
        {
            "url": US + "us-core-race",
            "extension": [
                {
                    "url": "ombCategory",
                    "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2106-3"},
                },
                {"url": "text", "valueString": "White"},
            ],
        }
    ],
    "identifier": [{"system": "http://hospital.example.org/mrn", "value": "12345"}],
    "name": [{"family": "Shaw", "given": ["Amy"]}],
    "telecom": [{"system": "phone", "value": "555-0100", "use": "home"}],
    "gender": "female",
    "birthDate": "1987-02-20",
}

LAB: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "glucose",
    "status": "final",
    "category": [{"coding": [{"system": OBS_CAT, "code": "laboratory"}]}],
    "code": {
        "coding": [{"system": LOINC, "code": "2339-0", "display": "Glucose [Mass/volume] in Blood"}]
    },
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2024-05-01T08:30:00Z",
    "valueQuantity": {"value": 95, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"},
}

BP: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "bp",
    "status": "final",
    "category": [{"coding": [{"system": OBS_CAT, "code": "vital-signs"}]}],
    "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2024-05-01",
    "component": [
        {
            "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
            "valueQuantity": {"value": 120, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
        },
        {
            "code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
            "valueQuantity": {"value": 80, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
        },
    ],
}

CONDITION: dict[str, Any] = {
    "resourceType": "Condition",
    "id": "c1",
    "clinicalStatus": {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
        ]
    },
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                    "code": "problem-list-item",
                }
            ]
        }
    ],
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
    "subject": {"reference": "Patient/p1"},
}

ENCOUNTER: dict[str, Any] = {
    "resourceType": "Encounter",
    "id": "e1",
    "status": "finished",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
    "type": [{"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "99213"}]}],
    "subject": {"reference": "Patient/p1"},
    "period": {"start": "2024-05-01T08:00:00Z", "end": "2024-05-01T08:40:00Z"},
}

MEDICATION_REQUEST: dict[str, Any] = {
    "resourceType": "MedicationRequest",
    "id": "m1",
    "status": "active",
    "intent": "order",
    "medicationCodeableConcept": {
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "860975"}]
    },
    "subject": {"reference": "Patient/p1"},
    "authoredOn": "2024-05-01",
    "requester": {"reference": "Practitioner/dr1"},
}

EXAMPLES = [
    (PATIENT, "us-core-patient"),
    (LAB, "us-core-observation-lab"),
    (BP, "us-core-blood-pressure"),
    (CONDITION, "us-core-condition-problems-health-concerns"),
    (ENCOUNTER, "us-core-encounter"),
    (MEDICATION_REQUEST, "us-core-medicationrequest"),
]


def problems(issues: list[Issue]) -> list[tuple[str, str | None]]:
    return [(i.severity, i.expression) for i in issues if i.severity in ("error", "warning")]


def errors_at(issues: list[Issue]) -> set[str | None]:
    return {i.expression for i in issues if i.severity == "error"}


@pytest.mark.parametrize(("resource", "name"), EXAMPLES, ids=[n for _, n in EXAMPLES])
def test_valid_examples_are_clean(resource: dict[str, Any], name: str) -> None:
    assert [i for i in validate_resource(resource) if i.severity == "error"] == []
    assert problems(validate_against(resource, US + name)) == []


def test_missing_one_to_one_element() -> None:
    obs = copy.deepcopy(LAB)
    del obs["subject"]
    issues = validate_against(obs, US + "us-core-observation-lab")
    assert errors_at(issues) == {"Observation.subject"}


def test_missing_required_child_of_a_repeating_element() -> None:
    patient = copy.deepcopy(PATIENT)
    del patient["identifier"][0]["system"]
    issues = validate_against(patient, US + "us-core-patient")
    assert errors_at(issues) == {"Patient.identifier[0].system"}


def test_wrong_vital_signs_category_breaks_the_fixed_slice() -> None:
    bp = copy.deepcopy(BP)
    bp["category"][0]["coding"][0]["code"] = "laboratory"
    issues = validate_against(bp, US + "us-core-blood-pressure")
    # the VSCat slice (1..1) is now empty
    assert errors_at(issues) == {"Observation.category"}
    assert any("VSCat" in i.diagnostics for i in issues if i.severity == "error")


def test_wrong_pattern_code() -> None:
    bp = copy.deepcopy(BP)
    bp["code"]["coding"][0]["code"] = "8867-4"  # heart rate, not the BP panel
    issues = validate_against(bp, US + "us-core-blood-pressure")
    assert errors_at(issues) == {"Observation.code"}


def test_blood_pressure_without_systolic_component() -> None:
    bp = copy.deepcopy(BP)
    del bp["component"][0]
    issues = validate_against(bp, US + "us-core-blood-pressure")
    errors = [i for i in issues if i.severity == "error"]
    # component is 2..*, and the systolic slice is 1..1
    assert {i.expression for i in errors} == {"Observation.component"}
    assert any("systolic" in i.diagnostics for i in errors)
    assert len(errors) == 2


def test_wrong_unit_in_a_slice() -> None:
    bp = copy.deepcopy(BP)
    bp["component"][1]["valueQuantity"]["code"] = "mmHg"
    issues = validate_against(bp, US + "us-core-blood-pressure")
    assert errors_at(issues) == {"Observation.component[1].valueQuantity.code"}


def test_bad_required_code() -> None:
    patient = copy.deepcopy(PATIENT)
    patient["telecom"][0]["system"] = "telepathy"
    issues = validate_against(patient, US + "us-core-patient")
    assert errors_at(issues) == {"Patient.telecom[0].system"}
    assert [i.code for i in issues if i.severity == "error"] == ["code-invalid"]


def test_bad_required_category_of_a_condition() -> None:
    cond = copy.deepcopy(CONDITION)
    cond["category"][0]["coding"][0]["code"] = "encounter-diagnosis"
    issues = validate_against(cond, US + "us-core-condition-problems-health-concerns")
    # no category is in us-core-problem-or-health-concern: the 1..* slice is empty
    assert errors_at(issues) == {"Condition.category"}


def test_reference_to_the_wrong_type() -> None:
    obs = copy.deepcopy(LAB)
    obs["subject"] = {"reference": "Practitioner/dr1"}
    issues = validate_against(obs, US + "us-core-observation-lab")
    assert errors_at(issues) == {"Observation.subject.reference"}


def test_contained_reference_to_the_wrong_profile() -> None:
    obs = copy.deepcopy(LAB)
    obs["contained"] = [{"resourceType": "Patient", "id": "pt", "name": [{"family": "X"}]}]
    obs["subject"] = {"reference": "#pt"}
    issues = validate_against(obs, US + "us-core-observation-lab")
    # the contained Patient has no identifier (1..* in us-core-patient)
    assert "Observation.subject" in errors_at(issues)


def test_extension_by_url_is_validated_against_its_profile() -> None:
    patient = copy.deepcopy(PATIENT)
    del patient["extension"][0]["extension"][1]  # the race "text" sub-extension is 1..1
    issues = validate_against(patient, US + "us-core-patient")
    assert errors_at(issues) == {"Patient.extension[0].extension"}


def test_extension_with_a_bad_fixed_url_value() -> None:
    patient = copy.deepcopy(PATIENT)
    patient["extension"][0]["extension"][0]["valueString"] = "White"
    del patient["extension"][0]["extension"][0]["valueCoding"]
    issues = validate_against(patient, US + "us-core-patient")
    assert "Patient.extension[0].extension[0].valueString" in errors_at(issues)


def test_invariant_with_error_severity() -> None:
    patient = copy.deepcopy(PATIENT)
    patient["name"] = [{"text": "Amy Shaw"}]  # us-core-6: family or given (or data absent)
    issues = validate_against(patient, US + "us-core-patient")
    failing = [i for i in issues if i.code == "invariant"]
    assert [(i.expression, i.severity) for i in failing] == [("Patient.name[0]", "error")]
    assert failing[0].diagnostics.startswith("us-core-6")


def test_requester_invariant_on_orders() -> None:
    req = copy.deepcopy(MEDICATION_REQUEST)
    del req["requester"]
    issues = validate_against(req, US + "us-core-medicationrequest")
    assert [(i.expression, i.diagnostics[:10]) for i in issues if i.code == "invariant"] == [
        ("MedicationRequest", "us-core-21")
    ]


def test_must_support_absent_is_information() -> None:
    issues = validate_against(LAB, US + "us-core-observation-lab")
    infos = {i.expression for i in issues if i.severity == "information"}
    assert "Observation.specimen" not in errors_at(issues)
    assert "Observation.dataAbsentReason" in infos


def test_extensible_binding_outside_the_value_set_is_a_warning() -> None:
    act = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
    dispense = {
        "resourceType": "MedicationDispense",
        "status": "completed",
        "medicationCodeableConcept": MEDICATION_REQUEST["medicationCodeableConcept"],
        "subject": {"reference": "Patient/p1"},
        "type": {"coding": [{"system": act, "code": "FF"}]},
    }
    url = US + "us-core-medicationdispense"
    assert "MedicationDispense.type" not in {i.expression for i in validate_against(dispense, url)}
    dispense["type"] = {"coding": [{"system": act, "code": "AMB"}]}  # an ActCode, not a supply type
    issues = validate_against(dispense, url)
    assert [(i.severity, i.code) for i in issues if i.expression == "MedicationDispense.type"] == [
        ("warning", "code-invalid")
    ]


def test_binding_to_a_value_set_not_loaded_is_information_only() -> None:
    bp = copy.deepcopy(BP)
    bp["component"][0]["valueQuantity"]["code"] = "kPa"  # ucum-vitals-common: UCUM is not loaded
    issues = validate_against(bp, US + "us-core-blood-pressure")
    at = [i for i in issues if i.expression == "Observation.component[0].valueQuantity"]
    assert [i.severity for i in at] == ["information"]
    assert "could not check" in at[0].diagnostics


def test_unknown_profile_and_wrong_type() -> None:
    assert [i.code for i in validate_against(PATIENT, "http://example.org/nope")] == [
        "not-supported"
    ]
    assert errors_at(validate_against(PATIENT, US + "us-core-encounter")) == {"Patient"}


def test_pattern_is_a_subset_match() -> None:
    pattern = {"coding": [{"system": LOINC, "code": "85354-9"}]}
    assert matches_pattern(
        pattern,
        {
            "coding": [
                {"system": "x", "code": "y"},
                {"system": LOINC, "code": "85354-9", "display": "BP"},
            ]
        },
    )
    assert not matches_pattern(pattern, {"coding": [{"system": LOINC, "code": "8480-6"}]})


def test_all_us_core_profiles_compiled() -> None:
    urls = set(known_profiles())
    for name in ("us-core-patient", "us-core-blood-pressure", "us-core-race", "us-core-encounter"):
        assert US + name in urls


CGM_EXAMPLES = {
    "Observation-cgmSensorReadingMassPerVolumeExample": "cgm-sensor-reading-mass-per-volume",
    "Observation-cgmSensorReadingMolesPerVolumeExample": "cgm-sensor-reading-moles-per-volume",
    "Observation-cgmSummaryCoefficientOfVariationExample": "cgm-summary-coefficient-of-variation",
    "Observation-cgmSummaryDaysOfWearExample": "cgm-summary-days-of-wear",
    "Observation-cgmSummaryExample": "cgm-summary",
    "Observation-cgmSummaryGMIExample": "cgm-summary-gmi",
    "Observation-cgmSummaryMeanGlucoseMassPerVolumeExample": "cgm-summary-mean-glucose-mass-per-volume",
    "Observation-cgmSummaryMeanGlucoseMolesPerVolumeExample": "cgm-summary-mean-glucose-moles-per-volume",
    "Observation-cgmSummarySensorActivePercentageExample": "cgm-summary-sensor-active-percentage",
    "Observation-cgmSummaryTimesInRangesExample": "cgm-summary-times-in-ranges",
    "Device-cgmDeviceExample": "cgm-device",
    "DiagnosticReport-cgmSummaryPDFExample": "cgm-summary-pdf",
    "Bundle-cgmDataSubmissionBundle": "cgm-data-submission-bundle",
    "ServiceRequest-cgmDataSubmissionOneTimeOrderExample": "cgm-data-submission-one-time-order",
    "ServiceRequest-cgmDataSubmissionOneTimeOrder30DayExample": "cgm-data-submission-one-time-order",
    "ServiceRequest-cgmDataSubmissionStandingOrderExample": "cgm-data-submission-standing-order",
}


def cgm_example(name: str) -> dict[str, Any]:
    folder = require_shared("cgm", "hl7-cgm-ig-examples")
    data: dict[str, Any] = json.loads((folder / f"{name}.json").read_text())
    return data


@pytest.mark.parametrize("name", sorted(CGM_EXAMPLES))
def test_cgm_examples_validate_against_their_profiles(name: str) -> None:
    # The examples declare no meta.profile: the IG pairs each with its profile by name.
    resource = cgm_example(name)
    assert problems(validate_against(resource, CGM + CGM_EXAMPLES[name])) == []


def test_cgm_times_in_ranges_without_a_range_fails() -> None:
    obs = cgm_example("Observation-cgmSummaryTimesInRangesExample")
    obs["component"] = [c for c in obs["component"] if c["code"]["coding"][0]["code"] != "97510-2"]
    issues = validate_against(obs, CGM + "cgm-summary-times-in-ranges")
    errors = [i for i in issues if i.severity == "error"]
    assert {i.expression for i in errors} == {"Observation.component"}
    assert any("timeInTarget" in i.diagnostics for i in errors)


def test_cgm_bundle_entry_failing_its_slice_profile() -> None:
    bundle = cgm_example("Bundle-cgmDataSubmissionBundle")
    index = next(
        i
        for i, e in enumerate(bundle["entry"])
        if e["resource"]["resourceType"] == "Observation"
        and e["resource"]["code"]["coding"][0]["code"] == "97507-8"
    )
    del bundle["entry"][index]["resource"]["effectivePeriod"]
    issues = validate_against(bundle, CGM + "cgm-data-submission-bundle")
    assert f"Bundle.entry[{index}].resource.effectivePeriod" in errors_at(issues)


def category_slicing(rules: str) -> ProfileElement:
    """Observation.category sliced by coding.code, with one slice fixed to vital-signs."""
    root = ProfileElement("Observation", "Observation", None, 0, None, "Observation")
    category = ProfileElement(
        "Observation.category",
        "category",
        None,
        0,
        None,
        "Observation.category",
        discriminators=(("value", "coding.code"),),
        rules=rules,
        sliced=True,
    )
    vs = ProfileElement("Observation.category:VS", "category", "VS", 1, 1, "Observation.category")
    coding = ProfileElement(
        "Observation.category:VS.coding", "coding", None, 0, None, "CodeableConcept.coding"
    )
    code = ProfileElement(
        "Observation.category:VS.coding.code",
        "code",
        None,
        0,
        None,
        "Coding.code",
        fixed="vital-signs",
    )
    root.children["category"] = category
    category.slices.append(vs)
    vs.children["coding"] = coding
    coding.children["code"] = code
    return root


def slicing_errors(rules: str, codes: list[str]) -> list[str | None]:
    obs = {
        "resourceType": "Observation",
        "category": [{"coding": [{"system": OBS_CAT, "code": c}]} for c in codes],
    }
    walk = ProfileWalk()
    walk.check(category_slicing(rules), [(obs, "Observation")], "Observation", obs)
    return [i.expression for i in walk.issues if i.severity == "error"]


def test_slicing_rules_closed_open_and_open_at_end() -> None:
    assert slicing_errors("open", ["vital-signs", "laboratory"]) == []
    assert slicing_errors("closed", ["vital-signs", "laboratory"]) == ["Observation.category[1]"]
    assert slicing_errors("openAtEnd", ["vital-signs", "laboratory"]) == []
    assert slicing_errors("openAtEnd", ["laboratory", "vital-signs"]) == ["Observation.category[1]"]
    assert slicing_errors("open", ["laboratory"]) == ["Observation.category"]  # VS is 1..1
    assert slicing_errors("open", ["vital-signs", "vital-signs"]) == ["Observation.category"]
