"""The hand-made dataset of the search conformance suite (tests/server/test_conformance_*).

Every expected result in the suite is worked out by hand from this data and the R4
search spec (http://hl7.org/fhir/R4/search.html); the tables below are the facts the
tests reason from. Ids are fixed (a transaction of PUTs), so tests name them.

Patients            family     given           gender  birthDate   identifier        city         org   gp     active
  pat-anna          Müller     Anna            female  1980-06-15  urn:mrn|A-1       Zürich       acme  house  true
  pat-bob           Smith      Bob, Robert     male    1980        urn:mrn|B-2,      Springfield  beta  cuddy  true
                                                                   urn:other|A-1
  pat-carl          Smithson   Carl            male    1975-12-31  (no system) C-3   Zurich       -     -      false
  pat-dana          Dupont     Dana            -       1981-01-01  urn:mrn|D,4       -            acme  -      -
  pat-eve           Smith      Évelyne         female  2001-02-03  urn:mrn|E|5       Springfield  beta  house  true
meta: anna  tag urn:tags|vip, profile VIP_PROFILE, security Confidentiality|R, source #anna
      bob   tag urn:tags|test, security Confidentiality|N, source #bob
      eve   tags urn:tags|vip + urn:tags|test, profile VIP_PROFILE
anna has narrative "Anna likes gardening" and a communication (not a summary element).

Weights (Observation code loinc|29463-7, kg unless said), one per subject as listed:
  wt-60 60 (carl)   wt-99-6 99.6 (anna)   wt-100-004 100.004 (bob)   wt-100-2 100.2 (eve)
  wt-101 101 (anna) wt-150 150 (bob)      wt-lb 100.2 [lb_av] "lb" (dana)
Blood pressure (loinc|85354-9 panels, components 8480-6 systolic / 8462-4 diastolic, mm[Hg]):
  bp-anna 120/80 (2021-03-01)   bp-bob 150/95 (2021-03-02)   sys-carl: code 8480-6 itself, 130
Time zones (code urn:cf|tz, subject anna):
  tz-est    2020-01-15T23:30:00-05:00  (= 2020-01-16T04:30:00Z)
  tz-utc    2020-01-15T10:00:00Z
  tz-day    2020-01-15                 (no zone: the server's, UTC: the whole UTC day)
  tz-period 2020-01-14T20:00:00Z .. 2020-01-15T02:00:00Z
obs-ident: code urn:cf|ident, subject given by identifier only (urn:mrn|A-1).
obs-vip: code urn:cf|tagged, subject eve, tag urn:tags|vip.
obs-dollar: code urn:cf|x$y,z (to escape), valueString "dollar", no subject.
DiagnosticReports: dr-final (final, anna, result bp-anna), dr-prelim (preliminary, bob, bp-bob).
Encounters: enc-anna finished 2020-01-15T09:00Z..11:00Z, provider acme, participant house;
            enc-bob in-progress from 2021-05-01T08:00Z (no end), provider beta.
Conditions (subject, snomed code, onset): cond-diab anna 44054006 2010-03;
            cond-htn-bob bob 38341003 period 2015-01-01..2016-06-30;
            cond-htn-anna anna 38341003 2019-07-04.
RiskAssessments (probability): ra-80 0.8, ra-31 0.31, ra-301 0.301, ra-35 0.35, ra-20 0.2
            (subject carl).
Organizations: org-acme "Acme Health"; org-beta "Beta Clinic", partOf acme.
Practitioners: pr-house Gregory House; pr-cuddy Lisa Cuddy.
ValueSets (url): vs-a .../fhir/ValueSet/a, vs-a-extra .../fhir/ValueSet/a/extra,
            vs-other http://other.org/vs/c; CodeSystem cs-x .../fhir/CodeSystem/x.
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = [
    "ALL_PATIENTS",
    "EXAMPLE",
    "LOINC",
    "SNOMED",
    "UCUM",
    "VIP_PROFILE",
    "bundle_ids",
    "dataset",
    "find",
    "load",
    "match_ids",
    "ordered_ids",
    "search_ids",
]

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
EXAMPLE = "http://example.org/fhir"
VIP_PROFILE = f"{EXAMPLE}/StructureDefinition/vip-patient"
ALL_PATIENTS = {"pat-anna", "pat-bob", "pat-carl", "pat-dana", "pat-eve"}

Resource = dict[str, Any]


def _ref(target: str) -> dict[str, str]:
    return {"reference": target}


def _cc(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, str] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def _patients() -> list[Resource]:
    anna: Resource = {
        "resourceType": "Patient",
        "id": "pat-anna",
        "meta": {
            "tag": [{"system": "urn:tags", "code": "vip"}],
            "profile": [VIP_PROFILE],
            "security": [{"system": CONF, "code": "R"}],
            "source": f"{EXAMPLE}/feed#anna",
        },
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml">Anna likes gardening</div>',
        },
        "identifier": [{"system": "urn:mrn", "value": "A-1"}],
        "active": True,
        "name": [{"family": "Müller", "given": ["Anna"]}],
        "gender": "female",
        "birthDate": "1980-06-15",
        "address": [{"city": "Zürich"}],
        "communication": [{"language": _cc("urn:ietf:bcp:47", "de")}],
        "managingOrganization": _ref("Organization/org-acme"),
        "generalPractitioner": [_ref("Practitioner/pr-house")],
    }
    bob: Resource = {
        "resourceType": "Patient",
        "id": "pat-bob",
        "meta": {
            "tag": [{"system": "urn:tags", "code": "test"}],
            "security": [{"system": CONF, "code": "N"}],
            "source": f"{EXAMPLE}/feed#bob",
        },
        "identifier": [
            {"system": "urn:mrn", "value": "B-2"},
            {"system": "urn:other", "value": "A-1"},
        ],
        "active": True,
        "name": [{"family": "Smith", "given": ["Bob", "Robert"]}],
        "gender": "male",
        "birthDate": "1980",
        "address": [{"city": "Springfield"}],
        "managingOrganization": _ref("Organization/org-beta"),
        "generalPractitioner": [_ref("Practitioner/pr-cuddy")],
    }
    carl: Resource = {
        "resourceType": "Patient",
        "id": "pat-carl",
        "identifier": [{"value": "C-3"}],
        "active": False,
        "name": [{"family": "Smithson", "given": ["Carl"]}],
        "gender": "male",
        "birthDate": "1975-12-31",
        "address": [{"city": "Zurich"}],
    }
    dana: Resource = {
        "resourceType": "Patient",
        "id": "pat-dana",
        "identifier": [{"system": "urn:mrn", "value": "D,4"}],
        "name": [{"family": "Dupont", "given": ["Dana"]}],
        "birthDate": "1981-01-01",
        "managingOrganization": _ref("Organization/org-acme"),
    }
    eve: Resource = {
        "resourceType": "Patient",
        "id": "pat-eve",
        "meta": {
            "tag": [
                {"system": "urn:tags", "code": "vip"},
                {"system": "urn:tags", "code": "test"},
            ],
            "profile": [VIP_PROFILE],
        },
        "identifier": [{"system": "urn:mrn", "value": "E|5"}],
        "active": True,
        "name": [{"family": "Smith", "given": ["Évelyne"]}],
        "gender": "female",
        "birthDate": "2001-02-03",
        "address": [{"city": "Springfield"}],
        "managingOrganization": _ref("Organization/org-beta"),
        "generalPractitioner": [_ref("Practitioner/pr-house")],
    }
    return [anna, bob, carl, dana, eve]


def _observation(id: str, subject: str, code: dict[str, Any], **more: Any) -> Resource:
    obs: Resource = {
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "code": code,
        "subject": _ref(f"Patient/{subject}"),
    }
    obs.update(more)
    return obs


def _weights() -> list[Resource]:
    weight = _cc(LOINC, "29463-7", "Body weight")
    vital = [_cc("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs")]

    def kg(value: float) -> dict[str, Any]:
        return {"value": value, "unit": "kg", "system": UCUM, "code": "kg"}

    rows = [
        ("wt-60", "pat-carl", kg(60)),
        ("wt-99-6", "pat-anna", kg(99.6)),
        ("wt-100-004", "pat-bob", kg(100.004)),
        ("wt-100-2", "pat-eve", kg(100.2)),
        ("wt-101", "pat-anna", kg(101)),
        ("wt-150", "pat-bob", kg(150)),
        ("wt-lb", "pat-dana", {"value": 100.2, "unit": "lb", "system": UCUM, "code": "[lb_av]"}),
    ]
    return [
        _observation(
            id,
            subject,
            weight,
            category=vital,
            valueQuantity=value,
            effectiveDateTime="2019-05-05",
        )
        for id, subject, value in rows
    ]


def _blood_pressure() -> list[Resource]:
    def mmhg(value: int) -> dict[str, Any]:
        return {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}

    def panel(id: str, subject: str, systolic: int, diastolic: int, day: str) -> Resource:
        return _observation(
            id,
            subject,
            _cc(LOINC, "85354-9", "Blood pressure panel with all children optional"),
            effectiveDateTime=day,
            component=[
                {
                    "code": _cc(LOINC, "8480-6", "Systolic blood pressure"),
                    "valueQuantity": mmhg(systolic),
                },
                {
                    "code": _cc(LOINC, "8462-4", "Diastolic blood pressure"),
                    "valueQuantity": mmhg(diastolic),
                },
            ],
        )

    return [
        panel("bp-anna", "pat-anna", 120, 80, "2021-03-01"),
        panel("bp-bob", "pat-bob", 150, 95, "2021-03-02"),
        _observation(
            "sys-carl",
            "pat-carl",
            _cc(LOINC, "8480-6", "Systolic blood pressure"),
            valueQuantity=mmhg(130),
        ),
    ]


def _other_observations() -> list[Resource]:
    tz = _cc("urn:cf", "tz")
    return [
        _observation("tz-est", "pat-anna", tz, effectiveDateTime="2020-01-15T23:30:00-05:00"),
        _observation("tz-utc", "pat-anna", tz, effectiveDateTime="2020-01-15T10:00:00Z"),
        _observation("tz-day", "pat-anna", tz, effectiveDateTime="2020-01-15"),
        _observation(
            "tz-period",
            "pat-anna",
            tz,
            effectivePeriod={"start": "2020-01-14T20:00:00Z", "end": "2020-01-15T02:00:00Z"},
        ),
        {
            "resourceType": "Observation",
            "id": "obs-ident",
            "status": "final",
            "code": _cc("urn:cf", "ident"),
            "subject": {"identifier": {"system": "urn:mrn", "value": "A-1"}},
        },
        {
            "resourceType": "Observation",
            "id": "obs-dollar",
            "status": "final",
            "code": _cc("urn:cf", "x$y,z"),
            "valueString": "dollar",
        },
        _observation(
            "obs-vip",
            "pat-eve",
            _cc("urn:cf", "tagged"),
            meta={"tag": [{"system": "urn:tags", "code": "vip"}]},
        ),
    ]


def _clinical() -> list[Resource]:
    clinical = "http://terminology.hl7.org/CodeSystem/condition-clinical"
    return [
        {
            "resourceType": "DiagnosticReport",
            "id": "dr-final",
            "status": "final",
            "code": _cc(LOINC, "85354-9"),
            "subject": _ref("Patient/pat-anna"),
            "result": [_ref("Observation/bp-anna")],
        },
        {
            "resourceType": "DiagnosticReport",
            "id": "dr-prelim",
            "status": "preliminary",
            "code": _cc(LOINC, "85354-9"),
            "subject": _ref("Patient/pat-bob"),
            "result": [_ref("Observation/bp-bob")],
        },
        {
            "resourceType": "Encounter",
            "id": "enc-anna",
            "status": "finished",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "AMB",
            },
            "subject": _ref("Patient/pat-anna"),
            "participant": [{"individual": _ref("Practitioner/pr-house")}],
            "period": {"start": "2020-01-15T09:00:00Z", "end": "2020-01-15T11:00:00Z"},
            "serviceProvider": _ref("Organization/org-acme"),
        },
        {
            "resourceType": "Encounter",
            "id": "enc-bob",
            "status": "in-progress",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "IMP",
            },
            "subject": _ref("Patient/pat-bob"),
            "period": {"start": "2021-05-01T08:00:00Z"},
            "serviceProvider": _ref("Organization/org-beta"),
        },
        {
            "resourceType": "Condition",
            "id": "cond-diab",
            "clinicalStatus": _cc(clinical, "active"),
            "code": _cc(SNOMED, "44054006", "Diabetes mellitus type 2"),
            "subject": _ref("Patient/pat-anna"),
            "encounter": _ref("Encounter/enc-anna"),
            "onsetDateTime": "2010-03",
        },
        {
            "resourceType": "Condition",
            "id": "cond-htn-bob",
            "clinicalStatus": _cc(clinical, "resolved"),
            "code": _cc(SNOMED, "38341003", "Hypertensive disorder"),
            "subject": _ref("Patient/pat-bob"),
            "onsetPeriod": {"start": "2015-01-01", "end": "2016-06-30"},
        },
        {
            "resourceType": "Condition",
            "id": "cond-htn-anna",
            "clinicalStatus": _cc(clinical, "active"),
            "code": _cc(SNOMED, "38341003", "Hypertensive disorder"),
            "subject": _ref("Patient/pat-anna"),
            "onsetDateTime": "2019-07-04",
        },
        *(
            {
                "resourceType": "RiskAssessment",
                "id": id,
                "status": "final",
                "subject": _ref("Patient/pat-carl"),
                "prediction": [{"probabilityDecimal": p}],
            }
            for id, p in (
                ("ra-80", 0.8),
                ("ra-31", 0.31),
                ("ra-301", 0.301),
                ("ra-35", 0.35),
                ("ra-20", 0.2),
            )
        ),
    ]


def _directory() -> list[Resource]:
    return [
        {"resourceType": "Organization", "id": "org-acme", "name": "Acme Health"},
        {
            "resourceType": "Organization",
            "id": "org-beta",
            "name": "Beta Clinic",
            "partOf": _ref("Organization/org-acme"),
        },
        {
            "resourceType": "Practitioner",
            "id": "pr-house",
            "name": [{"family": "House", "given": ["Gregory"]}],
        },
        {
            "resourceType": "Practitioner",
            "id": "pr-cuddy",
            "name": [{"family": "Cuddy", "given": ["Lisa"]}],
        },
        {
            "resourceType": "ValueSet",
            "id": "vs-a",
            "url": f"{EXAMPLE}/ValueSet/a",
            "status": "draft",
        },
        {
            "resourceType": "ValueSet",
            "id": "vs-a-extra",
            "url": f"{EXAMPLE}/ValueSet/a/extra",
            "status": "draft",
        },
        {
            "resourceType": "ValueSet",
            "id": "vs-other",
            "url": "http://other.org/vs/c",
            "status": "draft",
        },
        {
            "resourceType": "CodeSystem",
            "id": "cs-x",
            "url": f"{EXAMPLE}/CodeSystem/x",
            "status": "draft",
            "content": "not-present",
        },
    ]


def dataset() -> list[Resource]:
    return [
        *_directory(),
        *_patients(),
        *_weights(),
        *_blood_pressure(),
        *_other_observations(),
        *_clinical(),
    ]


def load(base: str) -> None:
    """PUT the whole dataset in one transaction (ids are the table's)."""
    entries = [
        {
            "resource": r,
            "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
        }
        for r in dataset()
    ]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    r = httpx.post(base, json=bundle, timeout=120)
    assert r.status_code == 200, r.text


def find(client: httpx.Client, path: str, query: str = "", **headers: str) -> dict[str, Any]:
    """GET `path?query` (query as written: `a=1&b=2`, values sent percent-encoded); 200."""
    params: list[tuple[str, str | int | float | bool | None]] = [
        (k, v) for k, _, v in (p.partition("=") for p in query.split("&") if p)
    ]
    r = client.get(f"/{path}", params=params, headers=headers)
    assert r.status_code == 200, f"{path}?{query}: {r.status_code} {r.text}"
    body = r.json()
    assert isinstance(body, dict)
    return body


def match_ids(bundle: dict[str, Any]) -> set[str]:
    """Ids of the search.mode=match entries."""
    return {
        e["resource"]["id"]
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") == "match"
    }


def search_ids(client: httpx.Client, path: str, query: str) -> set[str]:
    """Ids of what `path?query` matches."""
    return match_ids(find(client, path, query))


def ordered_ids(bundle: dict[str, Any]) -> list[str]:
    return [
        e["resource"]["id"]
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") == "match"
    ]


def bundle_ids(bundle: dict[str, Any], mode: str) -> set[tuple[str, str]]:
    """(type, id) of the entries of one search mode."""
    return {
        (e["resource"]["resourceType"], e["resource"]["id"])
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") == mode
    }
