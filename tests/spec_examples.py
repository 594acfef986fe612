"""The spec's own example resources (hl7.fhir.r4.examples 4.0.1), for tests."""

from __future__ import annotations

import copy
import tarfile
from functools import cache
from typing import Any

import orjson

from tests.shared_data import require_shared

__all__ = ["CONFORMANCE_TYPES", "INVALID_EXAMPLES", "example", "ordinary_examples"]

Json = dict[str, Any]

CONFORMANCE_TYPES = frozenset(
    {
        *("StructureDefinition", "ValueSet", "CodeSystem", "SearchParameter"),
        *("OperationDefinition", "CapabilityStatement", "CompartmentDefinition"),
        *("ImplementationGuide", "ConceptMap", "NamingSystem", "StructureMap"),
        *("GraphDefinition", "MessageDefinition", "TerminologyCapabilities", "ExampleScenario"),
    }
)

# Spec examples that are genuinely invalid against the R4 definitions (errors in the
# examples themselves, as published in 4.0.1), with the error each must still raise.
INVALID_EXAMPLES: dict[str, tuple[str, str, str]] = {
    # file: (issue code, expression, why the example is wrong)
    "Bundle-dataelements.json": (
        "invariant",
        "Bundle",
        "bdl-7: several entries share a fullUrl (e.g. .../de-Quantity.value) with no versionId",
    ),
    "DeviceMetric-example.json": (
        "invalid",
        "DeviceMetric.parent.reference",
        "DeviceMetric.parent may only reference a Device; the example points at DeviceDefinition",
    ),
    "DeviceUseStatement-example.json": (
        "invalid",
        "DeviceUseStatement.reasonReference[0].reference",
        "reasonReference allows Condition/Observation/DiagnosticReport/DocumentReference/Media, "
        "not the Procedure the example uses",
    ),
    "MedicationRequest-medrx0301.json": (
        "invalid",
        "MedicationRequest.dispenseRequest.performer.reference",
        "dispenseRequest.performer may only reference an Organization, not a Practitioner",
    ),
    "Observation-clinical-gender.json": (
        "invalid",
        "Observation.performer[0].reference",
        "Observation.performer cannot reference an Encounter",
    ),
    "Questionnaire-qs1.json": (
        "required",
        "Questionnaire.item[0].item[0].linkId",
        "nested display items omit Questionnaire.item.linkId, which is 1..1",
    ),
}


@cache
def _examples_package() -> dict[str, Json]:
    """The examples package's resources by file name, but for conformance resources.

    Files are named `<resourceType>-<id>.json`; the name skips most conformance
    resources unread and `ordinary_examples` checks the actual resourceType.
    """
    path = require_shared("fhir-r4", "hl7.fhir.r4.examples-4.0.1.tgz")
    out: dict[str, Json] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if not member.isfile() or name in ("package.json", ".index.json"):
                continue
            if name.split("-", 1)[0] in CONFORMANCE_TYPES:
                continue
            f = tar.extractfile(member)
            assert f is not None
            out[name] = orjson.loads(f.read())
    return out


def example(name: str) -> Json:
    """A fresh copy of one spec example, safe to mutate."""
    return copy.deepcopy(_examples_package()[name])


def ordinary_examples() -> dict[str, Json]:
    return {
        name: res
        for name, res in _examples_package().items()
        if res.get("resourceType") not in CONFORMANCE_TYPES
    }
