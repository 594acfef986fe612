"""Each requested SMART scope in plain words, for the consent page.

The words come from the scope parser (`auth/scopes.py`): what the permissions allow,
on which kind of record, whose, and with which limit. A scope the parser refuses is
shown as such (the authorize endpoint should not have let it through).
"""

from __future__ import annotations

from dataclasses import dataclass

from openrecord.auth.scopes import ScopeError, parse_scope

__all__ = ["ScopeText", "describe_scope"]

_VERBS = {"c": "add", "r": "read", "u": "change", "d": "delete", "s": "search"}

# Common resource types in everyday words; others keep their FHIR name.
_TYPES = {
    "*": "all kinds of health records",
    "Patient": "demographics (name, birth date, contact details)",
    "Observation": "observations (measurements, vital signs and test results)",
    "Condition": "conditions and diagnoses",
    "MedicationRequest": "prescriptions",
    "MedicationStatement": "medicines taken",
    "AllergyIntolerance": "allergies and intolerances",
    "Immunization": "vaccinations",
    "Procedure": "procedures",
    "Encounter": "visits and stays",
    "DiagnosticReport": "diagnostic reports",
    "DocumentReference": "documents",
    "CarePlan": "care plans",
    "Goal": "goals",
    "Device": "devices",
    "Coverage": "insurance coverage",
    "Consent": "consents",
    "AuditEvent": "the access log",
    "Practitioner": "practitioners",
    "Organization": "organizations",
}

_OTHER = {
    "openid": "Confirm to the app that it is you who signed in.",
    "fhirUser": "Tell the app which record stands for you (your FHIR user).",
    "profile": "Share your name with the app.",
    "launch": "Let the app open from the context it was launched in.",
    "launch/patient": "Tell the app whose record you chose.",
    "launch/encounter": "Tell the app which visit it was opened for.",
    "offline_access": "Keep access when you are not using the app, until you disconnect it.",
    "online_access": "Keep access only while you are using the app.",
}


@dataclass(frozen=True, slots=True)
class ScopeText:
    scope: str
    text: str
    data: bool  # grants access to records (not only identity or launch context)


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def describe_scope(scope: str) -> ScopeText:
    try:
        grant = parse_scope(scope)
    except ScopeError:
        return ScopeText(scope, f"Something this server does not understand: {scope}", True)
    if grant is None:
        text = _OTHER.get(scope) or f"Launch context: {scope.partition('/')[2]}."
        return ScopeText(scope, text, False)
    verbs = [_VERBS[p] for p in "cruds" if p in grant.permissions]
    what = _TYPES.get(grant.type, f"{grant.type} records")
    whose = {
        "patient": "of the selected patient",
        "user": "that you can see",
        "system": "of everyone on this server",
    }[grant.level]
    text = f"{_join(verbs).capitalize()} {what} {whose}"
    if grant.query:
        limits = ", ".join(f"{k} = {v.rsplit('|', 1)[-1]}" for k, v in grant.query)
        text += f", only where {limits}"
    return ScopeText(scope, text + ".", True)
