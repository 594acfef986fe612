"""The base-R4 validator against the specification's own examples and broken copies of them.

Expected outcomes come from the specification (json.html, datatypes.html,
references.html and the invariants in the core StructureDefinitions), never from
the validator's output.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from openrecord.fhir import invariants
from openrecord.fhir.outcome import Issue
from openrecord.fhir.validation import validate_resource
from tests.shared_data import require_shared
from tests.spec_examples import INVALID_EXAMPLES, example, ordinary_examples

Json = dict[str, Any]


def synthea_bundles() -> list[Path]:
    folder = require_shared("synthea", "transaction-bundles")
    return sorted(p for p in folder.glob("*.json") if p.name != "MANIFEST.json")


def errors(issues: list[Issue]) -> list[Issue]:
    return [i for i in issues if i.severity in ("error", "fatal")]


def error_at(resource: Json, code: str, expression: str, **kwargs: Any) -> Issue:
    """The one error with this code at this location (the test fails if there is none)."""
    issues = validate_resource(resource, **kwargs)
    found = [i for i in errors(issues) if i.code == code and i.expression == expression]
    assert found, f"no {code} error at {expression}; got {issues}"
    return found[0]


def assert_clean(resource: Json) -> None:
    assert errors(validate_resource(resource)) == []


# ---------------------------------------------------------------------------------------
# real data validates


def test_spec_examples_validate_without_errors() -> None:
    examples = ordinary_examples()
    assert 700 <= len(examples) <= 760  # 719 in hl7.fhir.r4.examples 4.0.1
    failures = {
        name: errors(validate_resource(res))
        for name, res in examples.items()
        if name not in INVALID_EXAMPLES
    }
    assert {name: issues for name, issues in failures.items() if issues} == {}
    assert not invariants.FAILED_INVARIANTS  # fhirpathpy compiled and ran every one it met


@pytest.mark.parametrize("name", sorted(INVALID_EXAMPLES))
def test_known_invalid_spec_examples_still_fail(name: str) -> None:
    code, expression, _why = INVALID_EXAMPLES[name]
    error_at(example(name), code, expression)


def test_synthea_resources_validate_without_errors() -> None:
    count = 0
    for path in synthea_bundles():
        bundle = orjson.loads(path.read_bytes())
        assert errors(validate_resource(bundle, expected_type="Bundle")) == []
        for entry in bundle["entry"]:
            assert errors(validate_resource(entry["resource"])) == [], entry["fullUrl"]
            count += 1
    assert count > 1000


# ---------------------------------------------------------------------------------------
# resourceType


def test_resource_type_rules() -> None:
    error_at({"id": "x"}, "required", "resourceType")
    error_at({"resourceType": "Foo"}, "value", "resourceType")
    error_at({"resourceType": "DomainResource"}, "value", "resourceType")  # abstract
    error_at(example("Patient-example.json"), "invalid", "Patient.resourceType",
             expected_type="Observation")  # fmt: skip
    assert errors(validate_resource([])) != []
    assert_clean(example("Patient-example.json"))


# ---------------------------------------------------------------------------------------
# JSON structure: unknown elements, JSON types, arrays, empties, nulls


def _set(path: list[Any], value: Any) -> Callable[[Json], None]:
    def mutate(res: Json) -> None:
        target = res
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return mutate


STRUCTURE_CASES = [
    # (example, mutation, issue code, expression)
    ("Patient-example.json", _set(["foo"], "bar"), "structure", "Patient.foo"),
    ("Patient-example.json", _set(["name", 0, "nickname"], "Jim"), "structure",
     "Patient.name[0].nickname"),
    ("Patient-example.json", _set(["fhir_comments"], ["x"]), "structure", "Patient.fhir_comments"),
    ("Patient-example.json", _set(["_name"], {"id": "a"}), "structure", "Patient._name"),
    ("Patient-example.json", _set(["active"], "true"), "structure", "Patient.active"),
    ("Patient-example.json", _set(["active"], 1), "structure", "Patient.active"),
    ("Observation-example.json", _set(["valueQuantity", "value"], "185"), "structure",
     "Observation.valueQuantity.value"),
    ("Observation-example.json", _set(["valueQuantity", "value"], True), "structure",
     "Observation.valueQuantity.value"),
    ("Patient-example.json", _set(["multipleBirthInteger"], 1.5), "structure",
     "Patient.multipleBirthInteger"),
    ("Patient-example.json", _set(["gender"], ["male"]), "structure", "Patient.gender"),
    ("Observation-example.json", lambda o: o.update(code=[o["code"]]), "structure",
     "Observation.code"),
    ("Patient-example.json", lambda p: p.update(name=p["name"][0]), "structure", "Patient.name"),
    ("Patient-example.json", _set(["name"], []), "structure", "Patient.name"),
    ("Observation-example.json", _set(["code"], {}), "structure", "Observation.code"),
    ("Patient-example.json", _set(["name", 1], {}), "structure", "Patient.name[1]"),
    ("Patient-example.json", _set(["name", 0, "family"], ""), "structure",
     "Patient.name[0].family"),
    ("Patient-example.json", _set(["gender"], None), "structure", "Patient.gender"),
    ("Patient-example.json", _set(["name", 0, "given", 1], None), "structure",
     "Patient.name[0].given[1]"),
    ("Patient-example.json", _set(["name", 0], None), "structure", "Patient.name[0]"),
    ("Observation-example.json", _set(["subject"], "Patient/example"), "structure",
     "Observation.subject"),
    ("Observation-example.json", _set(["valueQuantity"], {"id": "q1"}), "invariant",
     "Observation.valueQuantity"),  # ele-1: an id alone is not content
]  # fmt: skip


@pytest.mark.parametrize(("name", "mutate", "code", "expression"), STRUCTURE_CASES)
def test_structure_errors(
    name: str, mutate: Callable[[Json], None], code: str, expression: str
) -> None:
    res = example(name)
    assert_clean(res)
    mutate(res)
    error_at(res, code, expression)


def test_primitive_extension_siblings() -> None:
    # json.html#primitive: `_given` aligns with `given`; null is a placeholder in either.
    patient = example("Patient-example.json")
    ext = {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}
    patient["name"][0]["given"] = ["Peter", None]
    patient["name"][0]["_given"] = [None, ext]
    assert_clean(patient)
    patient["name"][0]["_given"] = [ext]  # wrong length
    error_at(patient, "structure", "Patient.name[0]._given")
    patient["name"][0]["_given"] = [ext, None]  # the null value has no extension
    error_at(patient, "structure", "Patient.name[0].given[1]")
    # an extension alone stands for the value, even of a required element
    obs = example("Observation-example.json")
    del obs["status"]
    obs["_status"] = {"extension": [{"url": "http://example.org/x", "valueCode": "unknown"}]}
    assert_clean(obs)
    obs["_status"] = {"id": "s1"}  # neither value nor extension (ele-1)
    error_at(obs, "invariant", "Observation.status")
    obs["_status"] = []
    error_at(obs, "structure", "Observation.status")


def test_whitespace_only_string_is_a_warning() -> None:
    patient = example("Patient-example.json")
    patient["name"][0]["family"] = "   "
    issues = validate_resource(patient)
    assert errors(issues) == []
    assert [(i.severity, i.expression) for i in issues] == [("warning", "Patient.name[0].family")]


# ---------------------------------------------------------------------------------------
# primitive formats


FORMAT_CASES = [
    ("Patient-example.json", ["birthDate"], "2020-13-01", "Patient.birthDate"),
    ("Patient-example.json", ["birthDate"], "2021-02-29", "Patient.birthDate"),
    ("Patient-example.json", ["birthDate"], "2020-1-1", "Patient.birthDate"),
    ("Observation-example.json", ["effectiveDateTime"], "2016-03-28T10:00:00",
     "Observation.effectiveDateTime"),  # a time needs a zone
    ("Observation-example.json", ["effectiveDateTime"], "2016-03-28T24:00:00Z",
     "Observation.effectiveDateTime"),
    ("Observation-example.json", ["issued"], "2016-03-28", "Observation.issued"),  # instant
    ("Observation-example.json", ["issued"], "2016-03-28T10:00:00", "Observation.issued"),
    ("Patient-example.json", ["id"], "bad id!", "Patient.id"),
    ("Patient-example.json", ["id"], "x" * 65, "Patient.id"),
    ("Patient-example.json", ["gender"], "male ", "Patient.gender"),  # code: no trailing space
    ("Patient-example.json", ["multipleBirthInteger"], 2**31, "Patient.multipleBirthInteger"),
    ("Patient-example.json", ["text", "div"], "plain text", "Patient.text.div"),
    ("Patient-example.json", ["name", 0, "family"], "Chal\x00mers", "Patient.name[0].family"),
    ("Patient-example.json", ["photo"], [{"contentType": "image/png", "data": "abc"}],
     "Patient.photo[0].data"),  # base64 comes in groups of 4
    ("Patient-example.json", ["telecom", 0, "system"], "fax  machine",
     "Patient.telecom[0].system"),  # code: single inner spaces only
]  # fmt: skip


@pytest.mark.parametrize(("name", "path", "value", "expression"), FORMAT_CASES)
def test_primitive_format_errors(name: str, path: list[Any], value: Any, expression: str) -> None:
    res = example(name)
    _set(path, value)(res)
    error_at(res, "value", expression)


def test_valid_primitive_forms() -> None:
    obs = example("Observation-example.json")
    for when in ("2016", "2016-03", "2016-03-28", "2016-03-28T10:00:00.123+14:00"):
        obs["effectiveDateTime"] = when
        assert_clean(obs)
    obs["issued"] = "2016-03-28T10:00:00Z"
    obs["valueQuantity"]["value"] = 1.5e3
    assert_clean(obs)
    patient = example("Patient-example.json")
    patient["birthDate"] = "2020-02-29"  # a leap day
    patient["multipleBirthInteger"] = 0
    assert_clean(patient)


def test_positive_int_range() -> None:
    claim = example("Claim-100150.json")
    claim["item"][0]["sequence"] = 0  # positiveInt starts at 1
    error_at(claim, "value", "Claim.item[0].sequence")


# ---------------------------------------------------------------------------------------
# cardinality and choice types


def test_missing_required_elements() -> None:
    obs = example("Observation-example.json")
    del obs["status"], obs["code"]
    error_at(obs, "required", "Observation.status")
    error_at(obs, "required", "Observation.code")
    patient = example("Patient-example.json")
    patient["link"] = [{"type": "seealso"}]  # Patient.link.other is 1..1
    error_at(patient, "required", "Patient.link[0].other")
    ext = {"url": "http://example.org/x"}  # Extension: needs a value or extensions (ext-1)
    patient["extension"] = [ext, {"valueString": "no url"}]
    error_at(patient, "invariant", "Patient.extension[0]")
    error_at(patient, "required", "Patient.extension[1].url")


def test_two_choice_variants() -> None:
    obs = example("Observation-example.json")
    obs["valueString"] = "185 lbs"
    issue = error_at(obs, "structure", "Observation.valueString")
    assert "valueQuantity" in issue.diagnostics and "valueString" in issue.diagnostics


def test_extension_with_value_and_extensions() -> None:
    patient = example("Patient-example.json")
    patient["extension"] = [
        {
            "url": "http://example.org/x",
            "valueString": "a",
            "extension": [{"url": "y", "valueString": "b"}],
        }
    ]
    error_at(patient, "invariant", "Patient.extension[0]")


# ---------------------------------------------------------------------------------------
# required bindings


def test_code_outside_required_value_set() -> None:
    obs = example("Observation-example.json")
    obs["status"] = "done"
    error_at(obs, "code-invalid", "Observation.status")
    patient = example("Patient-example.json")
    patient["gender"] = "m"
    error_at(patient, "code-invalid", "Patient.gender")


def test_codeable_concept_with_required_binding() -> None:
    allergy = example("AllergyIntolerance-example.json")
    allergy["clinicalStatus"]["coding"][0]["code"] = "bogus"
    error_at(allergy, "code-invalid", "AllergyIntolerance.clinicalStatus.coding[0].code")
    allergy = example("AllergyIntolerance-example.json")
    allergy["clinicalStatus"]["coding"][0]["system"] = "http://example.org/other"
    error_at(allergy, "code-invalid", "AllergyIntolerance.clinicalStatus.coding")
    allergy["clinicalStatus"] = {"text": "active"}  # text alone: nothing to check
    assert_clean(allergy)


# ---------------------------------------------------------------------------------------
# references


REFERENCE_CASES = [
    ("Patient/", "value"),
    ("not a reference", "value"),
    ("patient/example", "value"),
    ("Patient/bad id", "value"),
    ("Unknown/123", "value"),
    ("urn:uuid:not-a-uuid", "value"),
    ("Medication/123", "invalid"),  # subject: Patient | Group | Device | Location
    ("#missing", "invariant"),  # ref-1: must resolve to a contained resource
]


@pytest.mark.parametrize(("reference", "code"), REFERENCE_CASES)
def test_bad_references(reference: str, code: str) -> None:
    obs = example("Observation-example.json")
    obs["subject"]["reference"] = reference
    error_at(obs, code, "Observation.subject.reference")


@pytest.mark.parametrize(
    "reference",
    [
        "Patient/example",
        "Group/g1/_history/2",
        "http://example.org/fhir/Patient/123",
        "urn:uuid:829bb06a-42b9-433d-a8f6-560727c63da9",
        "urn:oid:1.2.3.4",
    ],
)
def test_good_references(reference: str) -> None:
    obs = example("Observation-example.json")
    obs["subject"]["reference"] = reference
    assert_clean(obs)


def test_reference_target_in_backbone_and_array() -> None:
    obs = example("Observation-example.json")
    obs["performer"] = [{"reference": "Practitioner/p1"}, {"reference": "Encounter/e1"}]
    error_at(obs, "invalid", "Observation.performer[1].reference")


# ---------------------------------------------------------------------------------------
# contained resources (dom-2..5, ref-1)


def _with_contained(reference: str | None) -> Json:
    obs = example("Observation-example.json")
    obs["contained"] = [{"resourceType": "Practitioner", "id": "p1", "name": [{"family": "X"}]}]
    if reference is not None:
        obs["performer"] = [{"reference": reference}]
    return obs


def test_contained_resources() -> None:
    assert_clean(_with_contained("#p1"))
    error_at(_with_contained(None), "invariant", "Observation.contained[0]")  # dom-3
    obs = _with_contained("#p1")
    obs["contained"][0]["contained"] = [{"resourceType": "Patient", "id": "x"}]
    error_at(obs, "invariant", "Observation.contained[0].contained")  # dom-2
    obs = _with_contained("#p1")
    obs["contained"][0]["meta"] = {"versionId": "1", "security": [{"code": "R"}]}
    error_at(obs, "invariant", "Observation.contained[0].meta.versionId")  # dom-4
    error_at(obs, "invariant", "Observation.contained[0].meta.security")  # dom-5
    obs = _with_contained("#p1")
    obs["contained"][0]["name"][0]["foo"] = 1
    error_at(obs, "structure", "Observation.contained[0].name[0].foo")
    obs = _with_contained(None)
    obs["subject"] = {"reference": "#p1"}  # a Practitioner is not a valid subject
    error_at(obs, "invalid", "Observation.subject.reference")


def test_contained_resource_referring_to_its_container() -> None:
    obs = _with_contained(None)
    obs["contained"][0]["identifier"] = [{"assigner": {"reference": "#"}}]
    assert_clean(obs)


# ---------------------------------------------------------------------------------------
# invariants


def test_period_end_before_start() -> None:
    patient = example("Patient-example.json")
    patient["name"][0]["period"] = {"start": "2020-01-02", "end": "2020-01-01"}
    issue = error_at(patient, "invariant", "Patient.name[0].period")
    assert "per-1" in issue.diagnostics
    # instants compare across zones: 10:00+01:00 is 09:00Z, before 09:30Z
    patient["name"][0]["period"] = {
        "start": "2020-01-01T10:00:00+01:00",
        "end": "2020-01-01T09:30:00Z",
    }
    assert_clean(patient)
    # different precisions that agree are not comparable: no error
    patient["name"][0]["period"] = {"start": "2020-01-01", "end": "2020"}
    assert_clean(patient)


def test_observation_invariants() -> None:
    obs = example("Observation-example.json")
    obs["dataAbsentReason"] = {"text": "not asked"}
    assert "obs-6" in error_at(obs, "invariant", "Observation").diagnostics
    obs = example("Observation-example.json")
    obs["referenceRange"] = [{"appliesTo": [{"text": "adults"}]}]
    assert "obs-3" in error_at(obs, "invariant", "Observation.referenceRange[0]").diagnostics
    obs = example("Observation-example.json")
    obs["component"] = [{"code": obs["code"], "valueString": "x"}]
    assert "obs-7" in error_at(obs, "invariant", "Observation").diagnostics


def test_datatype_invariants() -> None:
    patient = example("Patient-example.json")
    patient["telecom"][0] = {"value": "555-1234"}  # cpt-2: a value needs a system
    assert "cpt-2" in error_at(patient, "invariant", "Patient.telecom[0]").diagnostics
    obs = example("Observation-example.json")
    del obs["valueQuantity"]["system"]  # qty-3: a code needs a system
    assert "qty-3" in error_at(obs, "invariant", "Observation.valueQuantity").diagnostics


def test_invariant_evaluated_with_fhirpath() -> None:
    # mrp-1 is evaluated by fhirpathpy: a data-collection report has no groups.
    report = example("MeasureReport-measurereport-cms146-cat1-example.json")
    report["type"] = "data-collection"
    assert report.get("group")
    assert "mrp-1" in error_at(report, "invariant", "MeasureReport").diagnostics


def test_missing_narrative_is_only_a_warning() -> None:
    obs = example("Observation-example.json")
    del obs["text"]
    issues = validate_resource(obs)
    assert [(i.severity, i.expression) for i in issues] == [("warning", "Observation")]
    assert "dom-6" in issues[0].diagnostics


# ---------------------------------------------------------------------------------------
# Bundles


def test_errors_inside_bundle_entries() -> None:
    bundle = orjson.loads(synthea_bundles()[0].read_bytes())
    index = next(
        i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "Observation"
    )
    bundle["entry"][index]["resource"]["status"] = "done"
    error_at(bundle, "code-invalid", f"Bundle.entry[{index}].resource.status")
    del bundle["entry"][index]["resource"]["resourceType"]
    error_at(bundle, "required", f"Bundle.entry[{index}].resource.resourceType")


def test_bundle_invariants() -> None:
    bundle = orjson.loads(synthea_bundles()[0].read_bytes())
    bundle["total"] = 3  # bdl-1: only for searchset and history
    assert "bdl-1" in error_at(bundle, "invariant", "Bundle").diagnostics
    bundle = orjson.loads(synthea_bundles()[0].read_bytes())
    del bundle["entry"][2]["request"]  # bdl-3: every transaction entry has a request
    assert "bdl-3" in error_at(bundle, "invariant", "Bundle").diagnostics
    bundle = orjson.loads(synthea_bundles()[0].read_bytes())
    bundle["entry"][1]["fullUrl"] = "http://example.org/Patient/1/_history/1"
    assert "bdl-8" in error_at(bundle, "invariant", "Bundle.entry[1]").diagnostics
