#!/usr/bin/env python3
"""Profile validation of typical US Core resources: median time per `validate_against` call.

The issue's target is ≤ 1 ms median for a typical US Core resource against its profile
(the profile's own rules; base R4 validation is timed beside it for scale). The last
case validates against US Core Patient rebuilt at run time from its differential, as a
loaded package's profile is (`fhir/profile_snapshots.py`; needs ../shared/data).

    python benchmarks/validate_profile.py [--runs 2000] [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from openrecord.fhir.definitions import definitions
from openrecord.fhir.profiles import register_profiles, validate_against
from openrecord.fhir.validation import validate_resource
from openrecord.service.packages import profiles_of

US = "http://hl7.org/fhir/us/core/StructureDefinition/"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def quantity(value: float, code: str) -> dict[str, Any]:
    return {"value": value, "unit": code, "system": UCUM, "code": code}


BLOOD_PRESSURE: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "bp",
    "status": "final",
    "category": [{"coding": [{"system": CATEGORY, "code": "vital-signs"}]}],
    "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2024-05-01",
    "component": [
        {
            "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
            "valueQuantity": quantity(120, "mm[Hg]"),
        },
        {
            "code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
            "valueQuantity": quantity(80, "mm[Hg]"),
        },
    ],
}
LAB: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "glucose",
    "status": "final",
    "category": [{"coding": [{"system": CATEGORY, "code": "laboratory"}]}],
    "code": {"coding": [{"system": LOINC, "code": "2339-0"}]},
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2024-05-01T08:30:00Z",
    "valueQuantity": quantity(95, "mg/dL"),
}
PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "identifier": [{"system": "http://hospital.example.org/mrn", "value": "12345"}],
    "name": [{"family": "Shaw", "given": ["Amy"]}],
    "telecom": [{"system": "phone", "value": "555-0100", "use": "home"}],
    "gender": "female",
    "birthDate": "1987-02-20",
}
CASES = [
    ("Patient / us-core-patient", PATIENT, US + "us-core-patient"),
    ("Observation / us-core-observation-lab", LAB, US + "us-core-observation-lab"),
    ("Observation / us-core-blood-pressure", BLOOD_PRESSURE, US + "us-core-blood-pressure"),
]


def median_us(fn: Any, runs: int) -> float:
    fn()  # warm caches (profile build, compiled FHIRPath)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument(
        "--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    args = parser.parse_args()
    cases = list(CASES)
    source = args.shared / "us-core" / "resources" / "structuredefinition-us-core-patient.json"
    if source.exists():
        sd = json.loads(source.read_text())
        sd["url"] = "http://example.org/runtime/us-core-patient"
        compacts, _ = profiles_of([sd], definitions())
        register_profiles(compacts)
        cases.append(("Patient / us-core-patient, run-time snapshot", PATIENT, sd["url"]))
    print(f"{'case':46} {'profile µs':>11} {'base R4 µs':>11}")
    for name, resource, url in cases:
        profile_us = median_us(lambda r=resource, u=url: validate_against(r, u), args.runs)
        base_us = median_us(lambda r=resource: validate_resource(r), args.runs)
        print(f"{name:46} {profile_us:11.1f} {base_us:11.1f}")


if __name__ == "__main__":
    main()
