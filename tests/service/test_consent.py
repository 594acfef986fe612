"""Patient privacy consents (service/consent.py) enforced by the access layer, through
RecordService on a real store with real SecurityContexts.

The data is test_access.py's (Alpha `pat-a`, Bravo `pat-b`, Practitioner `doc`) plus
`obs-a-psy`: Alpha's Observation labelled v3-ActCode PSY in `meta.security`. The
Consents are R4 `patient-privacy` consents written as the R4 Consent resource
defines them; what each must hide follows from its provisions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from openrecord.fhir.outcome import FHIRError
from openrecord.service.bundles import BundleProcessor
from openrecord.service.consent import rules_of, watching
from openrecord.service.context import SecurityContext
from openrecord.service.records import RecordService, SearchResult
from openrecord.store import open_store
from tests.service.test_access import _observation, _resources

OPEN = SecurityContext.open()
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PSY = {"system": ACT_CODE, "code": "PSY"}
CLIENT = "urn:openrecord:client"
ALPHA_SELF = SecurityContext(
    user="Patient/pat-a", client="alpha-app", patient="pat-a", scopes=frozenset({"patient/*.rs"})
)
CAREGIVER = SecurityContext(
    user="RelatedPerson/mum",
    client="family-app",
    patient="pat-a",
    scopes=frozenset({"patient/*.rs"}),
)
NOSY_FOR_ALPHA = SecurityContext(
    user="Patient/pat-a", client="nosy-app", patient="pat-a", scopes=frozenset({"patient/*.rs"})
)
CLINICIAN = SecurityContext(
    user="Practitioner/doc", client="clinic-app", scopes=frozenset({"user/*.rs"})
)
PSYCHIATRIST = SecurityContext(
    user="Practitioner/doc", client="psy-app", scopes=frozenset({"user/*.rs"})
)
NOSY_CLINIC = SecurityContext(
    user="Practitioner/doc", client="nosy-app", scopes=frozenset({"user/*.rs"})
)


@pytest.fixture
def records(store_url: str) -> Iterator[RecordService]:
    store = open_store(store_url)
    try:
        service = RecordService(store)
        for resource in _resources():
            service.update(OPEN, resource["resourceType"], resource["id"], resource)
        psy = _observation("obs-a-psy", "pat-a", "survey", "enc-a")
        psy["meta"] = {"security": [PSY]}
        service.update(OPEN, "Observation", "obs-a-psy", psy)
        yield service
    finally:
        store.close()


def _consent(id: str, provision: dict[str, Any], status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "id": id,
        "status": status,
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/pat-a"},
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}
            ]
        },
        "provision": provision,
    }


def _app(client: str) -> dict[str, Any]:
    return {
        "role": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "IRCP",
                }
            ]
        },
        "reference": {"identifier": {"system": CLIENT, "value": client}},
    }


DENY_NOSY = {"type": "deny", "actor": [_app("nosy-app")]}
DENY_PSY = {
    "type": "deny",
    "securityLabel": [PSY],
    "provision": [{"type": "permit", "actor": [_app("psy-app")]}],
}


def _write(records: RecordService, consent: dict[str, Any]) -> None:
    records.update(ALPHA_SELF_WRITER, "Consent", consent["id"], consent)


ALPHA_SELF_WRITER = SecurityContext(
    user="Patient/pat-a",
    client="alpha-app",
    patient="pat-a",
    scopes=frozenset({"patient/Consent.cu"}),
)


def _ids(result: SearchResult) -> set[str]:
    return {f"{r.type}/{r.id}" for r in result.resources}


def _search(
    records: RecordService, ctx: SecurityContext, type: str | None, *params: str
) -> SearchResult:
    pairs = [tuple(p.split("=", 1)) for p in params]
    return records.search(ctx, type, [(k, v) for k, v in pairs])


def _status(call: Any, *args: Any, **kwargs: Any) -> int:
    with pytest.raises(FHIRError) as err:
        call(*args, **kwargs)
    return err.value.status


ALPHA_OBS = {"Observation/obs-a-vital", "Observation/obs-a-lab", "Observation/obs-a-psy"}
BRAVO_OBS = {"Observation/obs-b-vital", "Observation/obs-b-lab", "Observation/obs-b-cross"}


# -- deny an app -----------------------------------------------------------------------


def test_a_denied_app_reaches_nothing_of_the_patient(records: RecordService) -> None:
    assert _ids(_search(records, NOSY_FOR_ALPHA, "Observation")) == ALPHA_OBS
    _write(records, _consent("no-nosy", DENY_NOSY))
    assert _status(records.search, NOSY_FOR_ALPHA, "Observation", []) == 403
    assert _status(records.search, NOSY_FOR_ALPHA, None, []) == 403
    assert _status(records.read, NOSY_FOR_ALPHA, "Observation", "obs-a-lab") == 404
    assert _status(records.read, NOSY_FOR_ALPHA, "Patient", "pat-a") == 404
    assert _status(records.history, NOSY_FOR_ALPHA, "Observation", "obs-a-lab") == 404
    # other apps of the same user are not affected
    assert _ids(_search(records, ALPHA_SELF, "Observation")) == ALPHA_OBS


def test_a_denied_app_with_wider_scopes_sees_only_other_patients(records: RecordService) -> None:
    _write(records, _consent("no-nosy", DENY_NOSY))
    found = _search(records, NOSY_CLINIC, "Observation", "_total=accurate")
    assert _ids(found) == BRAVO_OBS
    assert found.total == 3  # the count agrees with what is returned
    assert _ids(_search(records, NOSY_CLINIC, "Patient")) == {"Patient/pat-b"}
    assert _status(records.read, NOSY_CLINIC, "Condition", "cond-a") == 404
    assert records.read(NOSY_CLINIC, "Condition", "cond-b").id == "cond-b"
    assert _status(records.search, NOSY_CLINIC, None, ["_type", "Observation"][:0]) == 403
    history = records.history(NOSY_CLINIC, "Observation", count=100)
    assert {f"{e.type}/{e.id}" for e in history.entries} == BRAVO_OBS
    revinclude = _search(records, NOSY_CLINIC, "Practitioner", "_revinclude=Observation:performer")
    assert {f"{r.type}/{r.id}" for r in revinclude.included} == BRAVO_OBS


def test_inactive_or_expired_consents_do_not_apply(records: RecordService) -> None:
    _write(records, _consent("draft", DENY_NOSY, status="draft"))
    expired = {**DENY_NOSY, "period": {"start": "2001-01-01", "end": "2002-01-01T00:00:00Z"}}
    _write(records, _consent("old", expired))
    assert _ids(_search(records, NOSY_FOR_ALPHA, "Observation")) == ALPHA_OBS


def test_a_consent_applies_at_once_and_stops_when_withdrawn(records: RecordService) -> None:
    consent = _consent("no-nosy", DENY_NOSY)
    _write(records, consent)
    assert _status(records.search, NOSY_FOR_ALPHA, "Observation", []) == 403
    _write(records, {**consent, "status": "inactive"})
    assert _ids(_search(records, NOSY_FOR_ALPHA, "Observation")) == ALPHA_OBS


def test_a_consent_applies_at_once_while_the_rules_are_cached(records: RecordService) -> None:
    """With a live watch (PostgreSQL LISTEN) the rules are trusted without a lookup: the
    process that commits a Consent must not serve the next request from the old ones."""
    store = records.store
    rules_of(store)
    if store.backend == "postgresql":  # wait for the watch to listen (SQLite: never)
        deadline = time.monotonic() + 30
        while not watching(store) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert watching(store)
    for _ in range(3):  # consent, withdrawal, consent: each at once, every time
        assert _ids(_search(records, NOSY_FOR_ALPHA, "Observation")) == ALPHA_OBS
        _write(records, _consent("no-nosy", DENY_NOSY))
        assert _status(records.read, NOSY_FOR_ALPHA, "Observation", "obs-a-lab") == 404
        _write(records, {**_consent("no-nosy", DENY_NOSY), "status": "inactive"})


def test_a_denied_app_cannot_write_for_the_patient(records: RecordService) -> None:
    _write(records, _consent("no-nosy", DENY_NOSY))
    writer = SecurityContext(
        client="nosy-app", patient="pat-a", scopes=frozenset({"patient/*.cruds"})
    )
    new = _observation("n", "pat-a", "vital-signs", "enc-a")
    del new["id"]
    assert _status(records.create, writer, "Observation", new) == 403


# -- deny categories -----------------------------------------------------------------


def test_labelled_data_is_hidden_from_everyone_but_the_patient(records: RecordService) -> None:
    _write(records, _consent("no-psy", DENY_PSY))
    assert _ids(_search(records, ALPHA_SELF, "Observation")) == ALPHA_OBS
    assert records.read(ALPHA_SELF, "Observation", "obs-a-psy").id == "obs-a-psy"
    assert records.read(OPEN, "Observation", "obs-a-psy").id == "obs-a-psy"  # operator
    for ctx in (CAREGIVER, CLINICIAN):
        found = _search(records, ctx, "Observation", "subject=Patient/pat-a", "_total=accurate")
        assert _ids(found) == ALPHA_OBS - {"Observation/obs-a-psy"}
        assert found.total == 2
        assert _status(records.read, ctx, "Observation", "obs-a-psy") == 404
        assert _status(records.vread, ctx, "Observation", "obs-a-psy", "1") == 404
        assert _status(records.history, ctx, "Observation", "obs-a-psy") == 404
        typed = records.history(ctx, "Observation", count=100)
        assert "Observation/obs-a-psy" not in {f"{e.type}/{e.id}" for e in typed.entries}
        rev = _search(records, ctx, "Encounter", "_id=enc-a", "_revinclude=Observation:encounter")
        assert "Observation/obs-a-psy" not in {f"{r.type}/{r.id}" for r in rev.included}
    across = _search(records, CAREGIVER, None, "_type=Observation,Condition")
    assert "Observation/obs-a-psy" not in _ids(across)
    assert "Condition/cond-a" in _ids(across)
    compartment = records.search(CAREGIVER, None, [], compartment=("Patient", "pat-a"))
    assert "Observation/obs-a-psy" not in _ids(compartment)


def test_a_permit_exception_lets_one_app_see_labelled_data(records: RecordService) -> None:
    _write(records, _consent("no-psy", DENY_PSY))
    assert "Observation/obs-a-psy" in _ids(_search(records, PSYCHIATRIST, "Observation"))
    assert "Observation/obs-a-psy" not in _ids(_search(records, CLINICIAN, "Observation"))


def test_a_label_denial_limited_to_types(records: RecordService) -> None:
    labelled = {
        "type": "deny",
        "securityLabel": [PSY],
        "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Condition"}],
    }
    condition = {
        "resourceType": "Condition",
        "id": "cond-a-psy",
        "meta": {"security": [PSY]},
        "subject": {"reference": "Patient/pat-a"},
        "code": {"text": "anxiety"},
    }
    records.update(OPEN, "Condition", "cond-a-psy", condition)
    _write(records, _consent("psy-conditions", labelled))
    # the labelled Condition is hidden; the Observation is not a Condition
    assert _ids(_search(records, CLINICIAN, "Condition", "subject=Patient/pat-a")) == {
        "Condition/cond-a"
    }
    assert _status(records.read, CLINICIAN, "Condition", "cond-a-psy") == 404
    assert "Observation/obs-a-psy" in _ids(_search(records, CLINICIAN, "Observation"))


def test_bundles_apply_consent_to_each_entry(records: RecordService) -> None:
    _write(records, _consent("no-psy", DENY_PSY))
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Observation/obs-a-psy"}},
            {"request": {"method": "GET", "url": "Observation/obs-a-lab"}},
        ],
    }

    def read(ctx: SecurityContext, url: str, entry: Any) -> tuple[int, Any]:
        found = records.read(ctx, entry.type, entry.id)
        return 200, orjson.loads(found.data or b"{}")

    out = BundleProcessor(records, read).process(CLINICIAN, bundle)
    assert [e["response"]["status"][:3] for e in out["entry"]] == ["404", "200"]


def test_a_nested_denial_inside_a_permit_names_a_user(records: RecordService) -> None:
    provision = {
        "type": "permit",
        "provision": [
            {
                "type": "deny",
                "actor": [
                    {
                        "role": {"coding": [{"code": "IRCP"}]},
                        "reference": {"reference": "Practitioner/doc"},
                    }
                ],
            }
        ],
    }
    _write(records, _consent("not-doc", provision))
    # the user Practitioner/doc is denied Alpha's record, whichever app it uses
    for ctx in (CLINICIAN, PSYCHIATRIST):
        assert _ids(_search(records, ctx, "Observation")) == BRAVO_OBS
    other = SecurityContext(
        user="Practitioner/other", client="clinic-app", scopes=frozenset({"user/*.rs"})
    )
    assert _ids(_search(records, other, "Observation")) == ALPHA_OBS | BRAVO_OBS


def test_a_consent_of_another_scope_or_patient_does_not_apply(records: RecordService) -> None:
    research = _consent("research", DENY_NOSY)
    research["scope"]["coding"][0]["code"] = "research"
    _write(records, research)
    assert _ids(_search(records, NOSY_FOR_ALPHA, "Observation")) == ALPHA_OBS
    bravo = {**_consent("bravo", DENY_NOSY), "patient": {"reference": "Patient/pat-b"}}
    records.update(OPEN, "Consent", "bravo", bravo)
    assert _ids(_search(records, NOSY_FOR_ALPHA, "Observation")) == ALPHA_OBS
    assert _ids(_search(records, NOSY_CLINIC, "Observation")) == ALPHA_OBS
