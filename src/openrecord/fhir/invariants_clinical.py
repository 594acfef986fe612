"""Native invariant checks for clinical, administrative and financial resources."""

from __future__ import annotations

from typing import Any

from openrecord.fhir.definitions import definitions
from openrecord.fhir.invariants_support import (
    UCUM,
    Json,
    NativeCheck,
    any_of,
    as_list,
    choice_keys,
    field_values,
    given,
    has_choice,
    has_coding,
    later_or_same,
    not_both,
    present,
    xor,
)

__all__ = ["CLINICAL_CHECKS"]


_OBS_VALUE = choice_keys("Observation", "value[x]")
_CON_ABATEMENT = choice_keys("Condition", "abatement[x]")
_GOAL_DETAIL = choice_keys("Goal", "target.detail[x]")
_MAD_RATE = choice_keys("MedicationAdministration", "dosage.rate[x]")


def _obs_3(r: Json, _: Json) -> bool:
    return "low" in r or "high" in r or present(r, "text")


def _obs_6(o: Json, _: Json) -> bool:
    return "dataAbsentReason" not in o or _OBS_VALUE.isdisjoint(o)


def _codings(concept: Any) -> list[tuple[Any, Any]]:
    if not isinstance(concept, dict):
        return []
    return [(c.get("system"), c.get("code")) for c in as_list(concept.get("coding")) if c]


def _obs_7(o: Json, _: Json) -> bool:
    if _OBS_VALUE.isdisjoint(o):
        return True
    own = set(_codings(o.get("code")))
    return not any(
        own.intersection(_codings(c.get("code"))) for c in as_list(o.get("component")) if c
    )


_CON_VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
_CON_CLIN = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_AIT_VER = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"


def _con_3(c: Json, _: Json) -> bool:
    # As written, `category.select($this='problem-list-item')` compares a
    # CodeableConcept with a string (an R4 defect); this checks what it means.
    problem = any(
        isinstance(cat, dict) and any(code == "problem-list-item" for _, code in _codings(cat))
        for cat in as_list(c.get("category"))
    )
    return (
        not problem
        or "clinicalStatus" in c
        or has_coding(c.get("verificationStatus"), _CON_VER, ("entered-in-error",))
    )


def _con_4(c: Json, _: Json) -> bool:
    return _CON_ABATEMENT.isdisjoint(c) or has_coding(
        c.get("clinicalStatus"), _CON_CLIN, ("resolved", "remission", "inactive")
    )


def _con_5(c: Json, _: Json) -> bool:
    return "clinicalStatus" not in c or not has_coding(
        c.get("verificationStatus"), _CON_VER, ("entered-in-error",)
    )


def _ait_1(a: Json, _: Json) -> bool:
    return "clinicalStatus" in a or has_coding(
        a.get("verificationStatus"), _AIT_VER, ("entered-in-error",)
    )


def _ait_2(a: Json, _: Json) -> bool:
    return "clinicalStatus" not in a or not has_coding(
        a.get("verificationStatus"), _AIT_VER, ("entered-in-error",)
    )


def _org_1(o: Json, _: Json) -> bool:
    return "identifier" in o or present(o, "name")


def _not_home(x: Json, _: Json) -> bool:
    return x.get("use") != "home"


def _reference_type(ref: Any, resource: Json) -> str | None:
    """The type a Reference points at, when its form tells (relative, absolute, #local)."""
    if not isinstance(ref, dict) or not isinstance(ref.get("reference"), str):
        return None
    target: str = ref["reference"]
    if target.startswith("#"):
        for c in as_list(resource.get("contained")):
            if isinstance(c, dict) and c.get("id") == target[1:]:
                return c.get("resourceType")
        return None
    parts = target.split("/_history/")[0].split("/")
    return parts[-2] if len(parts) >= 2 and parts[-2] in definitions().resource_types else None


def _ctm_1(p: Json, resource: Json) -> bool:
    """onBehalfOf only for a member that resolves to a Practitioner (when it resolves)."""
    if "onBehalfOf" not in p:
        return True
    return _reference_type(p.get("member"), resource) in (None, "Practitioner")


def _gol_1(t: Json, _: Json) -> bool:
    return _GOAL_DETAIL.isdisjoint(t) or "measure" in t


def _app_3(a: Json, _: Json) -> bool:
    both = present(a, "start") and present(a, "end")
    return both or a.get("status") in ("proposed", "cancelled", "waitlist")


def _app_4(a: Json, _: Json) -> bool:
    return "cancelationReason" not in a or a.get("status") in ("no-show", "cancelled")


def _lst(mode: str, field: str) -> NativeCheck:
    """lst-2/3: entry.<field> only in a list of the given mode."""

    def check(x: Json, _: Json) -> bool:
        return x.get("mode") == mode or not field_values(x.get("entry"), field)

    return check


def _msq_5(r: Json, _: Json) -> bool:
    return ("chromosome" in r) == ("genomeBuild" in r)


def _msq_6(r: Json, _: Json) -> bool:
    names = ("genomeBuild", "referenceSeqId", "referenceSeqPointer", "referenceSeqString")
    return sum(1 for n in names if present(r, n)) == 1


def _ppc_scope(code: str) -> NativeCheck:
    """ppc-2..5 as written (the R4 text uses the placeholder system 'something')."""

    def check(c: Json, _: Json) -> bool:
        return "patient" in c or not has_coding(c.get("scope"), "something", (code,))

    return check


def _ras_1(p: Any, _: Json) -> bool:
    if not isinstance(p, dict):
        return True
    for bound in (p.get("low"), p.get("high")):
        if isinstance(bound, dict) and (
            bound.get("code", "%") != "%" or bound.get("system", UCUM) != UCUM
        ):
            return False
    return True


def _ras_2(p: Json, _: Json) -> bool:
    v = p.get("probabilityDecimal")
    return not isinstance(v, int | float) or v <= 100


# Keyed by (declaring type, key).
CLINICAL_CHECKS: dict[tuple[str, str], NativeCheck] = {
    ("Observation", "obs-3"): _obs_3,
    ("Observation", "obs-6"): _obs_6,
    ("Observation", "obs-7"): _obs_7,
    ("Condition", "con-1"): any_of("summary", "assessment"),
    ("Condition", "con-2"): any_of("code", "detail"),
    ("Condition", "con-3"): _con_3,
    ("Condition", "con-4"): _con_4,
    ("Condition", "con-5"): _con_5,
    ("AllergyIntolerance", "ait-1"): _ait_1,
    ("AllergyIntolerance", "ait-2"): _ait_2,
    ("Organization", "org-1"): _org_1,
    ("Organization", "org-2"): _not_home,
    ("Organization", "org-3"): _not_home,
    ("Patient", "pat-1"): any_of("name", "telecom", "address", "organization"),
    ("Immunization", "imm-1"): any_of("documentType", "reference"),
    ("CarePlan", "cpl-3"): not_both("detail", "reference"),
    ("Goal", "gol-1"): _gol_1,
    ("CareTeam", "ctm-1"): _ctm_1,
    ("MedicationAdministration", "mad-1"): lambda d, _: "dose" in d or not _MAD_RATE.isdisjoint(d),
    ("Composition", "cmp-1"): any_of("text", "entry", "section"),
    ("Composition", "cmp-2"): not_both("emptyReason", "entry"),
    ("QuestionnaireResponse", "qrs-1"): not_both("answer", "item"),
    ("MedicationDispense", "mdd-1"): later_or_same("whenHandedOver", "whenPrepared"),
    ("Task", "inv-1"): later_or_same("lastModified", "authoredOn"),
    ("Appointment", "app-1"): any_of("type", "actor"),
    ("Appointment", "app-2"): lambda a, _: present(a, "start") == present(a, "end"),
    ("Appointment", "app-3"): given("status", _app_3),
    ("Appointment", "app-4"): _app_4,
    ("AppointmentResponse", "apr-1"): any_of("participantType", "actor"),
    ("AuditEvent", "sev-1"): not_both("name", "query"),
    ("CoverageEligibilityResponse", "ces-1"): xor("category", "productOrService"),
    ("FamilyMemberHistory", "fhs-1"): lambda f, _: (
        not (has_choice(f, "age") and has_choice(f, "born"))
    ),
    ("FamilyMemberHistory", "fhs-2"): lambda f, _: (
        has_choice(f, "age") or not present(f, "estimatedAge")
    ),
    ("Group", "grp-1"): lambda g, _: "member" not in g or g.get("actual") is True,
    ("ImmunizationRecommendation", "imr-1"): any_of("vaccineCode", "targetDisease"),
    ("InsurancePlan", "ipn-1"): any_of("identifier", "name"),
    ("Linkage", "lnk-1"): lambda r, _: len(as_list(r.get("item"))) > 1,
    ("List", "lst-1"): not_both("emptyReason", "entry"),
    ("List", "lst-2"): _lst("changes", "deleted"),
    ("List", "lst-3"): _lst("working", "date"),
    ("MolecularSequence", "msq-3"): lambda m, _: (
        m.get("coordinateSystem") in (0, 1) or "coordinateSystem" not in m
    ),
    ("MolecularSequence", "msq-5"): _msq_5,
    ("MolecularSequence", "msq-6"): _msq_6,
    ("NutritionOrder", "nor-1"): any_of("oralDiet", "supplement", "enteralFormula"),
    ("Consent", "ppc-1"): any_of("policy", "policyRule"),
    ("Consent", "ppc-2"): _ppc_scope("patient-privacy"),
    ("Consent", "ppc-3"): _ppc_scope("research"),
    ("Consent", "ppc-4"): _ppc_scope("adr"),
    ("Consent", "ppc-5"): _ppc_scope("treatment"),
    ("ServiceRequest", "prr-1"): lambda r, _: "orderDetail" not in r or "code" in r,
    ("RiskAssessment", "ras-1"): _ras_1,
    ("RiskAssessment", "ras-2"): _ras_2,
    ("RequestGroup", "rqg-1"): lambda a, _: ("resource" in a) != ("action" in a),
}
