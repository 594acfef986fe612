"""Snapshot generation at run time: US Core and the HL7 CGM IG built from their differentials.

The shipped profiles are compiled by scripts/compile_profiles.py; a package loaded at
run time goes through `fhir/profile_snapshots.py` instead. Here every US Core and CGM
profile is rebuilt that way (in dependency order, US Core vital signs on R4 core's
vitalsigns) and swapped in for the shipped ones, and the hand-worked profile tests of
tests/fhir/test_profiles.py run again against them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from openrecord.fhir import profiles as profiles_module
from openrecord.fhir.definitions import definitions
from openrecord.fhir.profile_snapshots import SnapshotError, compact_from_differential
from openrecord.fhir.profiles import validate_against
from openrecord.service.packages import profiles_of
from tests.fhir import test_profiles as hand
from tests.shared_data import require_shared

US = hand.US


def ig_profiles() -> list[dict[str, Any]]:
    files = [
        *require_shared("us-core", "resources").glob("*.json"),
        *require_shared("cgm", "hl7-cgm-ig-examples").glob("*.json"),
    ]
    out = []
    for path in sorted(files):
        if path.name.lower().startswith("structuredefinition-"):
            out.append(json.loads(path.read_text()))
    return out


@pytest.fixture(scope="module")
def runtime_table() -> dict[str, dict[str, Any]]:
    compacts, problems = profiles_of(ig_profiles(), definitions())
    # only the SDC questionnaire base is missing (not a package we have)
    assert [p for p in problems if "sdc-questionnaireresponse" not in p] == []
    return {c["url"]: c for c in compacts}


@pytest.fixture()
def runtime_profiles(
    runtime_table: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    data = profiles_module._compiled_data()
    monkeypatch.setitem(data, "profiles", runtime_table)
    profiles_module.profile.cache_clear()
    yield
    monkeypatch.undo()
    profiles_module.profile.cache_clear()


def test_every_shipped_profile_is_rebuilt(runtime_table: dict[str, dict[str, Any]]) -> None:
    shipped = set(profiles_module._compiled_data()["profiles"])
    assert shipped <= set(runtime_table)


HAND_TESTS: list[Callable[[], None]] = [
    hand.test_missing_one_to_one_element,
    hand.test_missing_required_child_of_a_repeating_element,
    hand.test_wrong_vital_signs_category_breaks_the_fixed_slice,
    hand.test_wrong_pattern_code,
    hand.test_blood_pressure_without_systolic_component,
    hand.test_wrong_unit_in_a_slice,
    hand.test_bad_required_code,
    hand.test_bad_required_category_of_a_condition,
    hand.test_reference_to_the_wrong_type,
    hand.test_contained_reference_to_the_wrong_profile,
    hand.test_extension_by_url_is_validated_against_its_profile,
    hand.test_extension_with_a_bad_fixed_url_value,
    hand.test_invariant_with_error_severity,
    hand.test_requester_invariant_on_orders,
    hand.test_must_support_absent_is_information,
    hand.test_extensible_binding_outside_the_value_set_is_a_warning,
    hand.test_cgm_times_in_ranges_without_a_range_fails,
    hand.test_cgm_bundle_entry_failing_its_slice_profile,
]


@pytest.mark.usefixtures("runtime_profiles")
@pytest.mark.parametrize("case", HAND_TESTS, ids=[t.__name__ for t in HAND_TESTS])
def test_hand_worked_profile_rules_hold_on_runtime_snapshots(case: Callable[[], None]) -> None:
    case()


@pytest.mark.usefixtures("runtime_profiles")
@pytest.mark.parametrize(("resource", "name"), hand.EXAMPLES, ids=[n for _, n in hand.EXAMPLES])
def test_valid_examples_are_clean_on_runtime_snapshots(resource: dict[str, Any], name: str) -> None:
    assert hand.problems(validate_against(resource, US + name)) == []


@pytest.mark.usefixtures("runtime_profiles")
@pytest.mark.parametrize("name", sorted(hand.CGM_EXAMPLES))
def test_cgm_examples_validate_on_runtime_snapshots(name: str) -> None:
    hand.test_cgm_examples_validate_against_their_profiles(name)


def patient_profile(
    differential: list[dict[str, Any]], base: str = US + "us-core-patient"
) -> dict[str, Any]:
    return {
        "resourceType": "StructureDefinition",
        "url": "http://example.org/StructureDefinition/strict-patient",
        "type": "Patient",
        "kind": "resource",
        "derivation": "constraint",
        "baseDefinition": base,
        "differential": {"element": differential},
    }


def test_profile_on_a_profile_adds_to_its_base() -> None:
    sd = patient_profile(
        [
            {"id": "Patient.birthDate", "path": "Patient.birthDate", "min": 1},
            {"id": "Patient.name.family", "path": "Patient.name.family", "min": 1},
            {"id": "Patient.deceased[x]", "path": "Patient.deceased[x]", "max": "0"},
        ]
    )
    compact = compact_from_differential(sd, definitions(), profiles_module.base_profile)
    by_id = {e["id"]: e for e in compact["elements"]}
    # the base's own constraints are kept (US Core: identifier 1..*, its slices)...
    assert by_id["Patient.identifier"]["min"] == 1
    assert "Patient.extension:race" in by_id
    # ...and the differential's added, with R4's cardinality where it says nothing
    assert (by_id["Patient.birthDate"]["min"], by_id["Patient.birthDate"]["max"]) == (1, "1")
    assert (by_id["Patient.name.family"]["min"], by_id["Patient.name.family"]["tp"]) == (
        1,
        "HumanName.family",
    )
    assert by_id["Patient.deceased[x]"]["max"] == "0"
    profiles_module.register_profiles([compact])
    assert hand.problems(validate_against(hand.PATIENT, sd["url"])) == []
    patient = copy.deepcopy(hand.PATIENT)
    del patient["birthDate"]
    assert hand.problems(validate_against(patient, sd["url"])) == [("error", "Patient.birthDate")]
    patient["deceasedBoolean"] = False
    del patient["name"][0]["family"]
    assert hand.errors_at(validate_against(patient, sd["url"])) == {
        "Patient.birthDate",
        "Patient.name[0].family",
        "Patient.deceasedBoolean",
    }


def test_type_slices_of_a_choice_become_the_concrete_element() -> None:
    sd = {
        "resourceType": "StructureDefinition",
        "url": "http://example.org/StructureDefinition/weight-in-kg",
        "type": "Observation",
        "kind": "resource",
        "derivation": "constraint",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Observation",
        "differential": {
            "element": [
                {
                    "id": "Observation.value[x]",
                    "path": "Observation.value[x]",
                    "slicing": {
                        "discriminator": [{"type": "type", "path": "$this"}],
                        "rules": "open",
                    },
                },
                {
                    "id": "Observation.value[x]:valueQuantity",
                    "path": "Observation.value[x]",
                    "sliceName": "valueQuantity",
                    "min": 1,
                    "type": [{"code": "Quantity"}],
                },
                {
                    "id": "Observation.value[x]:valueQuantity.code",
                    "path": "Observation.value[x].code",
                    "min": 1,
                    "fixedCode": "kg",
                },
            ]
        },
    }
    compact = compact_from_differential(sd, definitions(), profiles_module.base_profile)
    by_id = {e["id"]: e for e in compact["elements"]}
    assert by_id["Observation.valueQuantity"]["min"] == 1
    assert by_id["Observation.valueQuantity"]["tp"] == "Quantity"
    assert by_id["Observation.valueQuantity.code"]["fixed"] == "kg"
    assert "slicing" not in by_id["Observation.value[x]"]
    profiles_module.register_profiles([compact])
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "valueQuantity": {
            "value": 150,
            "unit": "lb",
            "system": "http://unitsofmeasure.org",
            "code": "[lb_av]",
        },
    }
    assert hand.errors_at(validate_against(obs, sd["url"])) == {"Observation.valueQuantity.code"}


def test_unplaceable_differentials_are_refused() -> None:
    unknown_base = patient_profile([], base="http://example.org/StructureDefinition/nowhere")
    with pytest.raises(SnapshotError, match="not loaded"):
        compact_from_differential(unknown_base, definitions(), profiles_module.base_profile)
    bad_element = patient_profile(
        [{"id": "Patient.shoeSize", "path": "Patient.shoeSize", "min": 1}]
    )
    with pytest.raises(SnapshotError, match="shoeSize"):
        compact_from_differential(bad_element, definitions(), profiles_module.base_profile)
    wrong_type = dict(patient_profile([]), type="Observation")
    with pytest.raises(SnapshotError, match="Patient"):
        compact_from_differential(wrong_type, definitions(), profiles_module.base_profile)


def test_malformed_differentials_never_crash_start_up() -> None:
    garbage: list[Any] = [
        7,
        {"id": 5},
        {"id": "Patient.name", "min": "one", "max": 2, "type": "HumanName"},
        {"id": "Patient.gender", "constraint": [{"expression": "true"}, "x", {"key": 1}]},
        {"id": "Patient.identifier", "slicing": {"discriminator": {"type": "value"}}},
        {"id": "Patient.telecom", "binding": {"strength": "required"}},
    ]
    sd = patient_profile(garbage, base="http://hl7.org/fhir/StructureDefinition/Patient")
    compacts, problems = profiles_of(
        [sd, dict(sd, url="http://example.org/x", type=None)], definitions()
    )
    assert [c["url"] for c in compacts] == [sd["url"]]
    assert len(problems) == 1
    by_id = {e["id"]: e for e in compacts[0]["elements"]}
    # nothing usable was taken from the garbage: R4's own cardinality stands
    assert (by_id["Patient.name"]["min"], by_id["Patient.name"]["max"]) == (0, "*")
    assert "constraints" not in by_id["Patient.gender"]


def test_a_profile_shipped_with_a_snapshot_only() -> None:
    # some packages carry snapshots and no differential: the snapshot is merged the same
    # way (each of its elements restates or narrows the base)
    snapshot = [
        {"id": "Patient", "path": "Patient", "min": 0, "max": "*"},
        {"id": "Patient.identifier", "path": "Patient.identifier", "min": 0, "max": "*"},
        {"id": "Patient.birthDate", "path": "Patient.birthDate", "min": 1, "max": "1"},
    ]
    sd = patient_profile([], base="http://hl7.org/fhir/StructureDefinition/Patient")
    sd["url"] = "http://example.org/StructureDefinition/snapshot-only"
    del sd["differential"]
    sd["snapshot"] = {"element": snapshot}
    compacts, problems = profiles_of([sd], definitions())
    assert problems == [] and "differential" not in sd  # the resource itself is untouched
    profiles_module.register_profiles(compacts)
    patient = {k: v for k, v in hand.PATIENT.items() if k != "birthDate"}
    assert hand.errors_at(validate_against(patient, sd["url"])) == {"Patient.birthDate"}
