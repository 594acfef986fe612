"""The access-control layer driven through RecordService on a real store, with real
SecurityContexts built from SMART scopes (service/access.py).

Two patients, Alpha (`pat-a`) and Bravo (`pat-b`), each with an Encounter, a vital-sign
and a laboratory Observation and a Condition; one Practitioner (`doc`) who performed
every Observation; and `obs-b-cross`, Bravo's Observation recorded in Alpha's
Encounter (it refers to `enc-a` but is in Bravo's compartment only). `obs-a-vital` was
updated once, so it has two versions. Expected results follow from this data and the
R4 Patient CompartmentDefinition (Observation: subject, performer; Condition:
patient, asserter; Encounter: patient; Practitioner is not a member).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from openrecord.auth.scopes import ScopeError
from openrecord.fhir.outcome import FHIRError
from openrecord.service.context import SecurityContext
from openrecord.service.records import RecordService, SearchResult
from openrecord.store import open_store

CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
VITALS = f"{CATEGORY}|vital-signs"
OPEN = SecurityContext.open()
ALPHA = SecurityContext.of("launch/patient openid patient/*.rs", patient="pat-a")

A_OWN = {
    "Patient/pat-a",
    "Encounter/enc-a",
    "Observation/obs-a-vital",
    "Observation/obs-a-lab",
    "Condition/cond-a",
}
B_OWN = {
    "Patient/pat-b",
    "Encounter/enc-b",
    "Observation/obs-b-vital",
    "Observation/obs-b-lab",
    "Observation/obs-b-cross",
    "Condition/cond-b",
}


def _observation(id: str, patient: str, category: str, encounter: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "encounter": {"reference": f"Encounter/{encounter}"},
        "performer": [{"reference": "Practitioner/doc"}],
    }


def _resources() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"resourceType": "Practitioner", "id": "doc", "name": [{"family": "Who"}]}
    ]
    for p, family in (("a", "Alpha"), ("b", "Bravo")):
        patient = f"pat-{p}"
        out += [
            {"resourceType": "Patient", "id": patient, "name": [{"family": family}]},
            {
                "resourceType": "Encounter",
                "id": f"enc-{p}",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": f"Patient/{patient}"},
                "participant": [{"individual": {"reference": "Practitioner/doc"}}],
            },
            _observation(f"obs-{p}-vital", patient, "vital-signs", f"enc-{p}"),
            _observation(f"obs-{p}-lab", patient, "laboratory", f"enc-{p}"),
            {
                "resourceType": "Condition",
                "id": f"cond-{p}",
                "subject": {"reference": f"Patient/{patient}"},
                "encounter": {"reference": f"Encounter/enc-{p}"},
            },
        ]
    out.append(_observation("obs-b-cross", "pat-b", "vital-signs", "enc-a"))
    return out


@pytest.fixture
def records(store_url: str) -> Iterator[RecordService]:
    store = open_store(store_url)
    try:
        service = RecordService(store)
        for resource in _resources():
            service.update(OPEN, resource["resourceType"], resource["id"], resource)
        changed = _observation("obs-a-vital", "pat-a", "vital-signs", "enc-a")
        changed["status"] = "amended"
        service.update(OPEN, "Observation", "obs-a-vital", changed)
        yield service
    finally:
        store.close()


def _keys(result: SearchResult) -> set[str]:
    return {f"{r.type}/{r.id}" for r in result.resources}


def _included(result: SearchResult) -> set[str]:
    return {f"{r.type}/{r.id}" for r in result.included}


def _search(
    records: RecordService, ctx: SecurityContext, type: str | None, query: str = "", **kw: Any
) -> SearchResult:
    params = [tuple(p.split("=", 1)) for p in query.split("&") if p]
    return records.search(ctx, type, [(k, v) for k, v in params], **kw)


def _data(entries: list[Any]) -> list[Any]:
    """History entries other than AuditEvents (every access adds one)."""
    return [e for e in entries if e.type != "AuditEvent"]


def _status(call: Any, *args: Any, **kwargs: Any) -> int:
    with pytest.raises(FHIRError) as err:
        call(*args, **kwargs)
    return err.value.status


# -- reads ---------------------------------------------------------------------------


def test_patient_context_reads_its_own_record(records: RecordService) -> None:
    for key in A_OWN:
        type, id = key.split("/")
        assert records.read(ALPHA, type, id).id == id


def test_other_patients_records_and_non_members_answer_404(records: RecordService) -> None:
    for key in [*B_OWN, "Practitioner/doc"]:
        type, id = key.split("/")
        assert _status(records.read, ALPHA, type, id) == 404, key
    assert _status(records.vread, ALPHA, "Observation", "obs-b-vital", "1") == 404
    assert _status(records.history, ALPHA, "Observation", "obs-b-vital") == 404


def test_a_missing_scope_is_403_naming_it(records: RecordService) -> None:
    only_obs = SecurityContext.of("patient/Observation.rs", patient="pat-a")
    with pytest.raises(FHIRError) as err:
        records.read(only_obs, "Condition", "cond-a")
    assert err.value.status == 403
    assert err.value.issues[0].code == "forbidden"
    assert "patient/Condition.r" in err.value.issues[0].diagnostics
    search_only = SecurityContext.of("patient/Observation.s", patient="pat-a")
    assert _status(records.read, search_only, "Observation", "obs-a-lab") == 403
    assert _keys(_search(records, search_only, "Observation")) == {
        "Observation/obs-a-vital",
        "Observation/obs-a-lab",
    }


def test_patient_scopes_without_a_patient_are_refused(records: RecordService) -> None:
    nobody = SecurityContext.of("patient/*.rs")
    assert _status(records.read, nobody, "Patient", "pat-a") == 403
    assert _status(_search, records, nobody, "Observation") == 403


def test_invalid_scope_cannot_make_a_context() -> None:
    with pytest.raises(ScopeError):
        SecurityContext.of("patient/Observation.sr", patient="pat-a")


# -- searches ------------------------------------------------------------------------


def test_searches_return_only_the_patients_compartment(records: RecordService) -> None:
    assert _keys(_search(records, ALPHA, "Observation")) == {
        "Observation/obs-a-vital",
        "Observation/obs-a-lab",
    }
    assert _keys(_search(records, ALPHA, "Condition")) == {"Condition/cond-a"}
    assert _keys(_search(records, ALPHA, "Encounter")) == {"Encounter/enc-a"}
    assert _keys(_search(records, ALPHA, "Patient")) == {"Patient/pat-a"}
    assert _keys(_search(records, ALPHA, "Observation", "subject=Patient/pat-b")) == set()
    assert _keys(_search(records, ALPHA, "Observation", "encounter=Encounter/enc-a")) == {
        "Observation/obs-a-vital",
        "Observation/obs-a-lab",
    }  # not obs-b-cross, which is Bravo's
    counted = _search(records, ALPHA, "Observation", "_summary=count")
    assert counted.total == 2


def test_types_outside_the_compartment_are_not_searchable(records: RecordService) -> None:
    with pytest.raises(FHIRError) as err:
        _search(records, ALPHA, "Practitioner")
    assert err.value.status == 403
    assert "Patient compartment" in err.value.issues[0].diagnostics
    # _contained checks conditions on contained resources, which the compartment is not
    assert _status(_search, records, ALPHA, "Observation", "_contained=true") == 403


def test_compartment_search_and_searches_across_types(records: RecordService) -> None:
    own = _search(records, ALPHA, "Observation", compartment=("Patient", "pat-a"))
    assert _keys(own) == {"Observation/obs-a-vital", "Observation/obs-a-lab"}
    other = _search(records, ALPHA, "Observation", compartment=("Patient", "pat-b"))
    assert _keys(other) == set()
    everything = _search(records, ALPHA, None, "_count=50", compartment=("Patient", "pat-a"))
    assert _keys(everything) == A_OWN
    assert _status(_search, records, ALPHA, None, compartment=("Patient", "pat-b")) == 403
    typed = _search(records, ALPHA, None, "_type=Observation,Condition")
    assert _keys(typed) == {"Observation/obs-a-vital", "Observation/obs-a-lab", "Condition/cond-a"}
    assert _keys(_search(records, ALPHA, None, "_count=50")) == A_OWN


def test_include_and_revinclude_only_add_what_the_context_may_read(
    records: RecordService,
) -> None:
    query = "_id=obs-a-lab&_include=Observation:subject&_include=Observation:performer"
    assert _included(_search(records, OPEN, "Observation", query)) == {
        "Patient/pat-a",
        "Practitioner/doc",
    }
    assert _included(_search(records, ALPHA, "Observation", query)) == {"Patient/pat-a"}
    rev = "_id=enc-a&_revinclude=Observation:encounter"
    assert _included(_search(records, OPEN, "Encounter", rev)) == {
        "Observation/obs-a-vital",
        "Observation/obs-a-lab",
        "Observation/obs-b-cross",
    }
    assert _included(_search(records, ALPHA, "Encounter", rev)) == {
        "Observation/obs-a-vital",
        "Observation/obs-a-lab",
    }
    only_obs = SecurityContext.of("patient/Observation.rs", patient="pat-a")
    assert _included(_search(records, only_obs, "Observation", query)) == set()


def test_chains_and_has_stay_in_the_compartment(records: RecordService) -> None:
    bravo_by_name = "subject:Patient.name=Bravo"
    assert _keys(_search(records, OPEN, "Observation", bravo_by_name)) == {
        "Observation/obs-b-vital",
        "Observation/obs-b-lab",
        "Observation/obs-b-cross",
    }
    # a chain's inner resources are not limited to the compartment: patient-level
    # contexts may not chain (obs-b-cross's Encounter is Alpha's, its subject Bravo)
    assert _status(_search, records, ALPHA, "Observation", bravo_by_name) == 403
    alpha_by_name = "subject:Patient.name=Alpha"
    assert _status(_search, records, ALPHA, "Observation", alpha_by_name) == 403
    probe = "encounter:Encounter.subject:Patient.name=Bravo"
    assert _status(_search, records, ALPHA, "Observation", probe) == 403
    assert _keys(_search(records, SecurityContext.of("user/*.rs"), "Observation", probe)) == {
        "Observation/obs-b-vital",
        "Observation/obs-b-lab",
    }
    has = "_has:Observation:subject:code=http://loinc.org|8867-4"
    assert _keys(_search(records, OPEN, "Patient", has)) == {"Patient/pat-a", "Patient/pat-b"}
    # Patient?_has through a compartment link finds only the patient's own resources
    assert _keys(_search(records, ALPHA, "Patient", has)) == {"Patient/pat-a"}
    # _has from another type could reach Bravo's obs-b-cross through Alpha's Encounter
    cross = "_has:Observation:encounter:code=http://loinc.org|8867-4"
    assert _status(_search, records, ALPHA, "Encounter", cross) == 403
    # the inner type of a chain or _has needs search rights of its own
    only_patient = SecurityContext.of("patient/Patient.rs", patient="pat-a")
    assert _status(_search, records, only_patient, "Patient", has) == 403


# -- history -------------------------------------------------------------------------


def test_history_stays_in_the_compartment(records: RecordService) -> None:
    own = records.history(ALPHA, "Observation", "obs-a-vital")
    assert [e.version for e in own.entries] == [2, 1]
    assert records.vread(ALPHA, "Observation", "obs-a-vital", "1").version == 1
    typed = records.history(ALPHA, "Observation")
    assert {f"{e.type}/{e.id}/{e.version}" for e in typed.entries} == {
        "Observation/obs-a-vital/1",
        "Observation/obs-a-vital/2",
        "Observation/obs-a-lab/1",
    }
    everything = records.history(ALPHA, None, count=100)
    # system history lists the audit trail's events too (service/audit.py)
    assert {f"{e.type}/{e.id}" for e in _data(everything.entries)} == A_OWN
    assert len(_data(records.history(OPEN, None, count=100).entries)) == 13


# -- writes --------------------------------------------------------------------------


def test_writes_need_their_permissions(records: RecordService) -> None:
    new = _observation("x", "pat-a", "vital-signs", "enc-a")
    del new["id"]
    assert _status(records.create, ALPHA, "Observation", new) == 403
    mine = records.read(ALPHA, "Observation", "obs-a-lab")
    assert mine.data is not None
    body = orjson.loads(mine.data)
    assert _status(records.update, ALPHA, "Observation", "obs-a-lab", body) == 403
    assert _status(records.delete, ALPHA, "Observation", "obs-a-lab") == 403


def test_patient_writes_stay_in_the_compartment(records: RecordService) -> None:
    writer = SecurityContext.of("patient/*.cruds", patient="pat-a")
    new = _observation("x", "pat-a", "vital-signs", "enc-a")
    del new["id"]
    created = records.create(writer, "Observation", new)
    assert created.status == 201
    assert records.read(ALPHA, "Observation", created.version.id).id == created.version.id
    for_bravo = _observation("x", "pat-b", "vital-signs", "enc-b")
    del for_bravo["id"]
    assert _status(records.create, writer, "Observation", for_bravo) == 403
    moved = _observation("obs-a-lab", "pat-b", "laboratory", "enc-a")
    assert _status(records.update, writer, "Observation", "obs-a-lab", moved) == 403
    patch = [{"op": "replace", "path": "/subject/reference", "value": "Patient/pat-b"}]
    assert _status(records.patch, writer, "Observation", "obs-a-lab", patch, fhirpath=False) == 403
    theirs = _observation("obs-b-lab", "pat-b", "laboratory", "enc-b")
    assert _status(records.update, writer, "Observation", "obs-b-lab", theirs) == 403
    # taking Bravo's Observation over: the stored version is outside, as if absent
    hijack = _observation("obs-b-lab", "pat-a", "laboratory", "enc-a")
    assert _status(records.update, writer, "Observation", "obs-b-lab", hijack) == 404
    assert _status(records.patch, writer, "Observation", "obs-b-lab", patch, fhirpath=False) == 404
    assert _status(records.delete, writer, "Observation", "obs-b-lab") == 404
    assert records.read(OPEN, "Observation", "obs-b-lab").version == 1
    assert records.read(OPEN, "Observation", "obs-a-lab").version == 1
    # criteria match only within the compartment: Bravo's records are neither revealed
    # (a new resource is created) nor touched
    criteria = "_id=obs-b-lab"
    made = records.create(writer, "Observation", new, if_none_exist=criteria)
    assert made.status == 201 and made.version.id != "obs-b-lab"
    assert records.conditional_delete(writer, "Observation", criteria) is None
    assert records.read(OPEN, "Observation", "obs-b-lab").version == 1
    assert records.delete(writer, "Observation", "obs-a-lab") is not None
    assert _status(records.read, OPEN, "Observation", "obs-a-lab") == 410


# -- granular, v1, system, unrestricted ----------------------------------------------


def test_granular_scope_hides_laboratory_observations(records: RecordService) -> None:
    vitals = SecurityContext.of(
        f"patient/Observation.rs?category={VITALS} patient/Patient.rs", patient="pat-a"
    )
    assert _keys(_search(records, vitals, "Observation")) == {"Observation/obs-a-vital"}
    assert records.read(vitals, "Observation", "obs-a-vital").id == "obs-a-vital"
    assert _status(records.read, vitals, "Observation", "obs-a-lab") == 404
    assert _status(records.read, vitals, "Observation", "obs-b-vital") == 404
    included = _search(records, vitals, "Patient", "_revinclude=Observation:subject")
    assert _included(included) == {"Observation/obs-a-vital"}
    history = records.history(vitals, "Observation")
    assert {e.id for e in history.entries} == {"obs-a-vital"}


def test_v1_read_equals_v2_rs(records: RecordService) -> None:
    v1 = SecurityContext.of("patient/*.read", patient="pat-a")
    queries = [
        ("Observation", ""),
        ("Observation", "_id=obs-a-lab&_include=Observation:performer"),
        ("Encounter", "_revinclude=Observation:encounter"),
        ("Patient", "_has:Observation:subject:code=http://loinc.org|8867-4"),
        (None, "_count=50"),
    ]
    for type, query in queries:
        old, new = _search(records, v1, type, query), _search(records, ALPHA, type, query)
        assert (_keys(old), _included(old)) == (_keys(new), _included(new)), query
    assert _status(records.read, v1, "Observation", "obs-b-lab") == 404


def test_system_scope_sees_everything(records: RecordService) -> None:
    system = SecurityContext.of("system/*.rs")
    assert _keys(_search(records, system, "Observation")) == {
        "Observation/obs-a-vital",
        "Observation/obs-a-lab",
        "Observation/obs-b-vital",
        "Observation/obs-b-lab",
        "Observation/obs-b-cross",
    }
    assert records.read(system, "Practitioner", "doc").id == "doc"
    assert records.read(system, "Observation", "obs-b-lab").id == "obs-b-lab"
    assert len(_data(records.history(system, None, count=100).entries)) == 13
    new = _observation("x", "pat-a", "vital-signs", "enc-a")
    del new["id"]
    assert _status(records.create, system, "Observation", new) == 403


def test_unrestricted_context_is_unchanged(records: RecordService) -> None:
    every = _search(records, OPEN, None, "_count=50")
    assert _keys(every) == A_OWN | B_OWN | {"Practitioner/doc"}
    assert records.read(OPEN, "Practitioner", "doc").id == "doc"
    history = records.history(OPEN, "Observation")
    assert history.total == 6


def test_a_list_of_another_patient_is_not_read_for_a_search(records: RecordService) -> None:
    bravo_list = {
        "resourceType": "List",
        "id": "list-b",
        "status": "current",
        "mode": "working",
        "subject": {"reference": "Patient/pat-b"},
        "entry": [{"item": {"reference": "Observation/obs-a-lab"}}],
    }
    records.update(OPEN, "List", "list-b", bravo_list)
    assert _keys(_search(records, OPEN, "Observation", "_list=list-b")) == {"Observation/obs-a-lab"}
    # Alpha may not learn what Bravo's List holds, not even about Alpha's own data
    assert _keys(_search(records, ALPHA, "Observation", "_list=list-b")) == set()
