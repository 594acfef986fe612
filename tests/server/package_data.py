"""A small hand-written implementation guide, and package builders for the package tests.

The clinic IG has what a real guide ships: a complete hierarchical CodeSystem, a
ValueSet composed over it with an `is-a` filter, an extension with a context and a
required binding, a profile on the US Core Patient profile (a profile on a profile,
differential only), a SearchParameter and a ConceptMap.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

CLINIC = "http://example.org/fhir/clinic"
PROGRAM_CS = f"{CLINIC}/CodeSystem/program"
DIABETES_VS = f"{CLINIC}/ValueSet/diabetes-programs"
PROGRAM_EXT = f"{CLINIC}/StructureDefinition/program"
CLINIC_PATIENT = f"{CLINIC}/StructureDefinition/clinic-patient"
PROGRAM_CM = f"{CLINIC}/ConceptMap/program-to-snomed"
US_PATIENT = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"
SCT = "http://snomed.info/sct"

CODE_SYSTEM: dict[str, Any] = {
    "resourceType": "CodeSystem",
    "id": "program",
    "url": PROGRAM_CS,
    "name": "ClinicProgram",
    "status": "active",
    "content": "complete",
    "hierarchyMeaning": "is-a",
    "concept": [
        {
            "code": "diabetes",
            "display": "Diabetes programmes",
            "concept": [
                {"code": "type1", "display": "Type 1 diabetes programme"},
                {"code": "type2", "display": "Type 2 diabetes programme"},
            ],
        },
        {"code": "cardio", "display": "Cardiac rehabilitation"},
    ],
}

VALUE_SET: dict[str, Any] = {
    "resourceType": "ValueSet",
    "id": "diabetes-programs",
    "url": DIABETES_VS,
    "name": "DiabetesPrograms",
    "status": "active",
    "compose": {
        "include": [
            {
                "system": PROGRAM_CS,
                "filter": [{"property": "concept", "op": "is-a", "value": "diabetes"}],
            }
        ]
    },
}

EXTENSION: dict[str, Any] = {
    "resourceType": "StructureDefinition",
    "id": "program",
    "url": PROGRAM_EXT,
    "name": "Program",
    "status": "active",
    "fhirVersion": "4.0.1",
    "kind": "complex-type",
    "abstract": False,
    "context": [{"type": "element", "expression": "Patient"}],
    "type": "Extension",
    "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Extension",
    "derivation": "constraint",
    "differential": {
        "element": [
            {"id": "Extension", "path": "Extension", "max": "1"},
            {"id": "Extension.extension", "path": "Extension.extension", "max": "0"},
            {"id": "Extension.url", "path": "Extension.url", "fixedUri": PROGRAM_EXT},
            {
                "id": "Extension.value[x]",
                "path": "Extension.value[x]",
                "min": 1,
                "type": [{"code": "Coding"}],
                "binding": {"strength": "required", "valueSet": DIABETES_VS},
            },
        ]
    },
}

PROFILE: dict[str, Any] = {
    "resourceType": "StructureDefinition",
    "id": "clinic-patient",
    "url": CLINIC_PATIENT,
    "name": "ClinicPatient",
    "status": "active",
    "fhirVersion": "4.0.1",
    "kind": "resource",
    "abstract": False,
    "type": "Patient",
    "baseDefinition": US_PATIENT,
    "derivation": "constraint",
    "differential": {
        "element": [
            {"id": "Patient", "path": "Patient"},
            {
                "id": "Patient.extension:program",
                "path": "Patient.extension",
                "sliceName": "program",
                "min": 1,
                "max": "1",
                "type": [{"code": "Extension", "profile": [PROGRAM_EXT]}],
            },
            {"id": "Patient.telecom", "path": "Patient.telecom", "min": 1},
            {"id": "Patient.birthDate", "path": "Patient.birthDate", "min": 1},
        ]
    },
}

SEARCH_PARAMETER: dict[str, Any] = {
    "resourceType": "SearchParameter",
    "id": "clinic-program",
    "url": f"{CLINIC}/SearchParameter/program",
    "name": "program",
    "status": "active",
    "description": "The programme a patient is enrolled in",
    "code": "program",
    "base": ["Patient"],
    "type": "token",
    "expression": f"Patient.extension.where(url = '{PROGRAM_EXT}').value",
}

CONCEPT_MAP: dict[str, Any] = {
    "resourceType": "ConceptMap",
    "id": "program-to-snomed",
    "url": PROGRAM_CM,
    "name": "ProgramToSnomed",
    "status": "active",
    "sourceCanonical": DIABETES_VS,
    "targetUri": "http://snomed.info/sct?fhir_vs",
    "group": [
        {
            "source": PROGRAM_CS,
            "target": SCT,
            "element": [
                {
                    "code": "type1",
                    "target": [{"code": "46635009", "equivalence": "equivalent"}],
                },
                {
                    "code": "type2",
                    "target": [{"code": "44054006", "equivalence": "equivalent"}],
                },
                {
                    "code": "diabetes",
                    "target": [{"code": "73211009", "equivalence": "wider"}],
                },
            ],
        }
    ],
}

CLINIC_RESOURCES = [CODE_SYSTEM, VALUE_SET, EXTENSION, PROFILE, SEARCH_PARAMETER, CONCEPT_MAP]

MANIFEST = {
    "name": "example.fhir.clinic",
    "version": "1.0.0",
    "canonical": CLINIC,
    "fhirVersions": ["4.0.1"],
}


def write_tgz(path: Path, manifest: dict[str, Any], files: dict[str, Any]) -> Path:
    """An npm-style FHIR package: `package/package.json` and `package/<name>` beside it."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in {"package.json": manifest, **files}.items():
            data = content if isinstance(content, bytes) else json.dumps(content).encode()
            info = tarfile.TarInfo(
                name if name.startswith(("/", ".", "package/")) else f"package/{name}"
            )
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def clinic_package(folder: Path) -> Path:
    files: dict[str, Any] = {f"{r['resourceType']}-{r['id']}.json": r for r in CLINIC_RESOURCES}
    # an example is not a conformance resource of the package: never loaded
    files["package/example/Patient-example.json"] = {"resourceType": "Patient", "id": "example"}
    return write_tgz(folder / "clinic.tgz", MANIFEST, files)


def us_core_package(resources: Path, folder: Path) -> Path:
    """US Core from the shared data's resource files, as a package."""
    files = {p.name: p.read_bytes() for p in sorted(resources.glob("*.json"))}
    manifest = {
        "name": "hl7.fhir.us.core",
        "version": "7.0.0",
        "canonical": "http://hl7.org/fhir/us/core",
        "fhirVersions": ["4.0.1"],
    }
    return write_tgz(folder / "us-core.tgz", manifest, files)
