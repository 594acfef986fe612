"""Resources of the US Core types the bundled demo patients lack, for the US Core
search tests: each carries a value for every parameter the US Core server
CapabilityStatement asks servers to search that type by."""

from __future__ import annotations

from typing import Any

__all__ = ["us_core_extras"]

SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"


def _cc(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def us_core_extras(patient: str, practitioner: str, organization: str) -> list[dict[str, Any]]:
    """`patient` etc. are ids of resources already on the server."""
    subject = {"reference": f"Patient/{patient}"}
    return [
        {
            "resourceType": "Patient",
            "id": "uscore-deceased",
            "name": [{"family": "Oldham", "given": ["Ida"]}],
            "identifier": [{"system": "urn:test:us-core", "value": "deceased-1"}],
            "birthDate": "1931-04-02",
            "deceasedDateTime": "2020-02-11T08:30:00+00:00",
            "extension": [
                {
                    "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
                    "extension": [
                        {
                            "url": "ombCategory",
                            "valueCoding": {
                                "system": "urn:oid:2.16.840.1.113883.6.238",
                                "code": "2106-3",
                                "display": "White",
                            },
                        },
                        {"url": "text", "valueString": "White"},
                    ],
                }
            ],
        },
        {
            "resourceType": "AllergyIntolerance",
            "id": "uscore-allergy",
            "clinicalStatus": _cc(
                "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active"
            ),
            "code": _cc(SCT, "91936005", "Allergy to penicillin"),
            "patient": subject,
        },
        {
            "resourceType": "CareTeam",
            "id": "uscore-careteam",
            "status": "active",
            "subject": subject,
            "participant": [
                {
                    "role": [_cc(SCT, "17561000", "Cardiologist")],
                    "member": {"reference": f"Practitioner/{practitioner}"},
                }
            ],
        },
        {
            "resourceType": "Coverage",
            "id": "uscore-coverage",
            "status": "active",
            "beneficiary": subject,
            "payor": [{"reference": f"Organization/{organization}"}],
        },
        {
            "resourceType": "Device",
            "id": "uscore-device",
            "status": "active",
            "type": _cc(SCT, "468063009", "Coated femoral stem prosthesis"),
            "patient": subject,
        },
        {
            "resourceType": "DocumentReference",
            "id": "uscore-docref",
            "status": "current",
            "type": _cc(LOINC, "34133-9", "Summary of episode note"),
            "category": [
                _cc(
                    "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                    "clinical-note",
                )
            ],
            "subject": subject,
            "date": "2021-03-04T10:15:00+00:00",
            "content": [{"attachment": {"contentType": "text/plain", "data": "SGVsbG8="}}],
            "context": {
                "period": {"start": "2021-03-01T09:00:00+00:00", "end": "2021-03-04T10:00:00+00:00"}
            },
        },
        {
            "resourceType": "Encounter",
            "id": "uscore-encounter",
            "status": "finished",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "IMP",
            },
            "type": [_cc(SCT, "183452005", "Emergency hospital admission")],
            "identifier": [{"system": "urn:test:us-core", "value": "enc-1"}],
            "subject": subject,
            "period": {"start": "2021-05-01T08:00:00+00:00", "end": "2021-05-03T12:00:00+00:00"},
            "hospitalization": {
                "dischargeDisposition": _cc(
                    "http://terminology.hl7.org/CodeSystem/discharge-disposition", "home"
                )
            },
            "location": [{"location": {"reference": "Location/uscore-location"}}],
        },
        {
            "resourceType": "Condition",
            "id": "uscore-condition",
            "extension": [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/condition-assertedDate",
                    "valueDateTime": "2019-07-01",
                }
            ],
            "clinicalStatus": _cc(
                "http://terminology.hl7.org/CodeSystem/condition-clinical", "resolved"
            ),
            "verificationStatus": _cc(
                "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed"
            ),
            "category": [
                _cc("http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item")
            ],
            "code": _cc(SCT, "44054006", "Diabetes mellitus type 2"),
            "subject": subject,
            "encounter": {"reference": "Encounter/uscore-encounter"},
            "onsetDateTime": "2019-06-15",
            "abatementDateTime": "2020-06-15",
            "recordedDate": "2019-07-02",
        },
        {
            "resourceType": "FamilyMemberHistory",
            "id": "uscore-fmh",
            "status": "completed",
            "patient": subject,
            "relationship": _cc(
                "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "FTH", "father"
            ),
            "condition": [{"code": _cc(SCT, "22298006", "Myocardial infarction")}],
        },
        {
            "resourceType": "Goal",
            "id": "uscore-goal",
            "lifecycleStatus": "active",
            "description": _cc(SCT, "289169006", "Weight loss"),
            "subject": subject,
            "target": [{"dueDate": "2027-01-01"}],
        },
        {
            "resourceType": "Location",
            "id": "uscore-location",
            "name": "Riverside Clinic",
            "address": {
                "line": ["12 Water Street"],
                "city": "Springfield",
                "state": "MA",
                "postalCode": "01101",
            },
        },
        {
            "resourceType": "MedicationDispense",
            "id": "uscore-dispense",
            "status": "completed",
            "type": _cc("http://terminology.hl7.org/CodeSystem/v3-ActCode", "FF", "First Fill"),
            "medicationCodeableConcept": _cc(
                "http://www.nlm.nih.gov/research/umls/rxnorm", "197361"
            ),
            "subject": subject,
        },
        {
            "resourceType": "PractitionerRole",
            "id": "uscore-role",
            "practitioner": {"reference": f"Practitioner/{practitioner}"},
            "specialty": [_cc("http://nucc.org/provider-taxonomy", "207Q00000X")],
        },
        {
            "resourceType": "QuestionnaireResponse",
            "id": "uscore-qr",
            "questionnaire": "http://example.org/Questionnaire/phq-2",
            "status": "completed",
            "subject": subject,
            "authored": "2022-01-05T14:00:00+00:00",
        },
        {
            "resourceType": "RelatedPerson",
            "id": "uscore-related",
            "patient": subject,
            "name": [{"family": "Carer", "given": ["Pat"]}],
        },
        {
            "resourceType": "ServiceRequest",
            "id": "uscore-servicerequest",
            "status": "active",
            "intent": "order",
            "category": [_cc(SCT, "108252007", "Laboratory procedure")],
            "code": _cc(LOINC, "4548-4", "Hemoglobin A1c"),
            "subject": subject,
            "authoredOn": "2022-02-01T09:30:00+00:00",
        },
        {
            "resourceType": "Specimen",
            "id": "uscore-specimen",
            "subject": subject,
            "type": _cc(SCT, "119297000", "Blood specimen"),
        },
    ]
