"""Patient-level SMART tokens writing through transaction and batch Bundles and
conditional requests, over HTTP against the real server (service/access_writes.py).

The seed (tests/auth/conftest.py): Alpha (`pa`) with Observation `oa`; Bravo (`pb`)
with `ob` (LOINC 8867-4) and `ob2` (LOINC 2339-0). A token for Alpha with
`patient/*.cruds` may write Alpha's record entry by entry; every entry that would
touch or create Bravo's data fails the whole transaction (404 when it touches
Bravo's existing resource, 403 when the new content would be outside Alpha's
compartment), and conditional criteria never match Bravo's resources. What is
stored is checked with the operator's `system/*.cruds` token.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.auth.conftest import AuthServer
from tests.auth.oauth_helpers import bearer, patient_login, register_app

WRITER_SCOPE = "launch/patient openid fhirUser patient/*.cruds"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
VITALS = f"{CATEGORY}|vital-signs"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
TAG = "urn:test:patient-bundles"


@pytest.fixture(scope="module")
def app(auth_server: AuthServer) -> str:
    return str(register_app(auth_server.base)["client_id"])


@pytest.fixture(scope="module")
def alpha(auth_server: AuthServer, app: str) -> dict[str, str]:
    """Authorization headers of Alpha's token with `patient/*.cruds`."""
    tokens = patient_login(auth_server.base, auth_server.database, app, "pa", WRITER_SCOPE)
    assert tokens["patient"] == "pa"
    return bearer(tokens["access_token"])


def _admin(auth_server: AuthServer) -> dict[str, str]:
    return bearer(auth_server.admin_token)


def _marker() -> str:
    return f"m-{uuid.uuid4().hex[:12]}"


def _observation(patient: str, code: str, marker: str, **extra: Any) -> dict[str, Any]:
    """An Observation identified by `marker` (searched for with the system token)."""
    return {
        "resourceType": "Observation",
        "identifier": [{"system": TAG, "value": marker}],
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": patient},
        **extra,
    }


def _post(resource: dict[str, Any], full_url: str | None = None, **request: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def _bundle(kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def _send(
    auth_server: AuthServer, headers: dict[str, str], bundle: dict[str, Any]
) -> httpx.Response:
    return httpx.post(auth_server.base, json=bundle, headers=headers, timeout=60)


def _stored(auth_server: AuthServer, marker: str) -> list[dict[str, Any]]:
    """Observations carrying `marker`, as the operator sees them."""
    found = httpx.get(
        f"{auth_server.base}/Observation",
        params={"identifier": f"{TAG}|{marker}"},
        headers=_admin(auth_server),
    )
    assert found.status_code == 200, found.text
    return [e["resource"] for e in found.json().get("entry", [])]


def _version(auth_server: AuthServer, ref: str) -> dict[str, Any]:
    response = httpx.get(f"{auth_server.base}/{ref}", headers=_admin(auth_server))
    assert response.status_code == 200, response.text
    return dict(response.json())


def _refused_transactions(auth_server: AuthServer) -> set[str]:
    """Ids of AuditEvents of transactions refused (outcome 8)."""
    response = httpx.get(
        f"{auth_server.base}/AuditEvent",
        params={"outcome": "8", "subtype": f"{RESTFUL}|transaction", "_count": "500"},
        headers=_admin(auth_server),
    )
    assert response.status_code == 200, response.text
    return {e["resource"]["id"] for e in response.json().get("entry", [])}


def _status(entry: dict[str, Any]) -> int:
    return int(entry["response"]["status"].split()[0])


def _location(entry: dict[str, Any]) -> str:
    """`Type/id` of an entry's `Type/id/_history/n` location."""
    return "/".join(entry["response"]["location"].split("/")[-4:-2])


# -- transactions of the patient's own record ----------------------------------------


def test_own_blood_pressure_panel_and_questionnaire_response(
    auth_server: AuthServer, alpha: dict[str, str]
) -> None:
    marker = _marker()
    systolic, diastolic, panel, answers = (f"urn:uuid:{uuid.uuid4()}" for _ in range(4))
    bundle = _bundle(
        "transaction",
        [
            _post(
                _observation(
                    "Patient/pa",
                    "85354-9",
                    marker,
                    hasMember=[{"reference": systolic}, {"reference": diastolic}],
                    derivedFrom=[{"reference": answers}],
                ),
                panel,
            ),
            _post(_observation("Patient/pa", "8480-6", marker), systolic),
            _post(_observation("Patient/pa", "8462-4", marker), diastolic),
            _post(
                {
                    "resourceType": "QuestionnaireResponse",
                    "status": "completed",
                    "subject": {"reference": "Patient/pa"},
                    "author": {"reference": "Patient/pa"},
                },
                answers,
            ),
        ],
    )
    response = _send(auth_server, alpha, bundle)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert [_status(e) for e in entries] == [201, 201, 201, 201]
    refs = [_location(e) for e in entries]
    assert [r.split("/")[0] for r in refs] == ["Observation"] * 3 + ["QuestionnaireResponse"]
    assert len(set(refs)) == 4 and not any("urn:uuid" in r for r in refs)
    stored = _version(auth_server, refs[0])
    assert [m["reference"] for m in stored["hasMember"]] == [refs[1], refs[2]]
    assert stored["derivedFrom"] == [{"reference": refs[3]}]
    assert len(_stored(auth_server, marker)) == 3
    for ref in refs:  # the app reads back what it wrote
        own = httpx.get(f"{auth_server.base}/{ref}", headers=alpha)
        assert own.status_code == 200, own.text


def test_own_updates_and_deletes_in_a_transaction(
    auth_server: AuthServer, alpha: dict[str, str]
) -> None:
    oa = _version(auth_server, "Observation/oa")
    marker = _marker()
    created = _send(
        auth_server, alpha, _bundle("transaction", [_post(_observation("Patient/pa", "1", marker))])
    )
    assert created.status_code == 200, created.text
    doomed = _location(created.json()["entry"][0])
    bundle = _bundle(
        "transaction",
        [
            {
                "resource": {**oa, "status": "amended"},
                "request": {"method": "PUT", "url": "Observation/oa"},
            },
            {"request": {"method": "DELETE", "url": doomed}},
        ],
    )
    response = _send(auth_server, alpha, bundle)
    assert response.status_code == 200, response.text
    assert [_status(e) for e in response.json()["entry"]] == [200, 200]
    after = _version(auth_server, "Observation/oa")
    assert after["status"] == "amended"
    assert int(after["meta"]["versionId"]) == int(oa["meta"]["versionId"]) + 1
    gone = httpx.get(f"{auth_server.base}/{doomed}", headers=_admin(auth_server))
    assert gone.status_code == 410


# -- transactions reaching Bravo: refused as a whole, nothing written, audited --------


def test_entry_updating_another_patients_resource_fails_the_transaction(
    auth_server: AuthServer, alpha: dict[str, str]
) -> None:
    ob = _version(auth_server, "Observation/ob")
    marker = _marker()
    refused_before = _refused_transactions(auth_server)
    taken = {**ob, "subject": {"reference": "Patient/pa"}}  # Bravo's, made Alpha's
    bundle = _bundle(
        "transaction",
        [
            _post(_observation("Patient/pa", "8867-4", marker)),
            {"resource": taken, "request": {"method": "PUT", "url": "Observation/ob"}},
        ],
    )
    response = _send(auth_server, alpha, bundle)
    assert response.status_code == 404, response.text  # its existence is not revealed
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[1]"]
    assert _stored(auth_server, marker) == []  # the first entry rolled back
    assert _version(auth_server, "Observation/ob") == ob
    new = _refused_transactions(auth_server) - refused_before
    assert len(new) == 1
    event = _version(auth_server, f"AuditEvent/{new.pop()}")
    assert event["outcome"] == "8"


def test_entry_writing_for_another_patient_fails_the_transaction(
    auth_server: AuthServer, alpha: dict[str, str]
) -> None:
    marker = _marker()
    bundle = _bundle(
        "transaction",
        [
            _post(_observation("Patient/pa", "8867-4", marker)),
            _post(_observation("Patient/pb", "8867-4", marker)),
        ],
    )
    response = _send(auth_server, alpha, bundle)
    assert response.status_code == 403, response.text
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[1]"]
    assert _stored(auth_server, marker) == []


def test_moving_own_resource_to_another_patient_fails_the_transaction(
    auth_server: AuthServer, alpha: dict[str, str]
) -> None:
    oa = _version(auth_server, "Observation/oa")
    moved = {**oa, "subject": {"reference": "Patient/pb"}}
    bundle = _bundle(
        "transaction", [{"resource": moved, "request": {"method": "PUT", "url": "Observation/oa"}}]
    )
    response = _send(auth_server, alpha, bundle)
    assert response.status_code == 403, response.text
    assert _version(auth_server, "Observation/oa") == oa


def test_deleting_another_patients_resource_fails_the_transaction(
    auth_server: AuthServer, alpha: dict[str, str]
) -> None:
    ob2 = _version(auth_server, "Observation/ob2")
    bundle = _bundle("transaction", [{"request": {"method": "DELETE", "url": "Observation/ob2"}}])
    response = _send(auth_server, alpha, bundle)
    assert response.status_code == 404, response.text
    assert _version(auth_server, "Observation/ob2") == ob2


def test_reference_to_a_patient_created_in_the_bundle_is_not_the_own_patient(
    auth_server: AuthServer, alpha: dict[str, str]
) -> None:
    marker = _marker()
    stranger = f"urn:uuid:{uuid.uuid4()}"
    bundle = _bundle(
        "transaction",
        [
            # entry 0 runs first (POSTs in Bundle order) and fails on its own account
            _post(_observation(stranger, "8867-4", marker)),
            _post({"resourceType": "Patient", "name": [{"family": marker}]}, stranger),
        ],
    )
    response = _send(auth_server, alpha, bundle)
    assert response.status_code == 403, response.text
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[0]"]
    assert _stored(auth_server, marker) == []
    patients = httpx.get(
        f"{auth_server.base}/Patient", params={"family": marker}, headers=_admin(auth_server)
    )
    assert patients.json().get("entry", []) == []


# -- conditional writes match only within the compartment ----------------------------


def test_conditional_create_does_not_match_another_patients_resource(
    auth_server: AuthServer, alpha: dict[str, str]
) -> None:
    # `_id=ob2` names Bravo's Observation: the match is limited to Alpha's record
    marker = _marker()
    entry = _post(_observation("Patient/pa", "2339-0", marker), ifNoneExist="_id=ob2")
    response = _send(auth_server, alpha, _bundle("transaction", [entry]))
    assert response.status_code == 200, response.text
    first = response.json()["entry"][0]
    assert _status(first) == 201 and _location(first) != "Observation/ob2"
    # the same request without a Bundle (If-None-Exist header)
    single = httpx.post(
        f"{auth_server.base}/Observation",
        json=_observation("Patient/pa", "2339-0", marker),
        headers={**alpha, "If-None-Exist": "_id=ob2"},
    )
    assert single.status_code == 201, single.text
    assert "ob2" not in single.headers["location"]
    assert len(_stored(auth_server, marker)) == 2
    # within the compartment the criteria still work: no third copy
    again = httpx.post(
        f"{auth_server.base}/Observation",
        json=_observation("Patient/pa", "2339-0", marker),
        headers={**alpha, "If-None-Exist": "_id=oa"},
    )
    assert again.status_code == 200, again.text
    assert len(_stored(auth_server, marker)) == 2


def test_conditional_update_and_delete_do_not_touch_another_patient(
    auth_server: AuthServer, alpha: dict[str, str]
) -> None:
    ob2 = _version(auth_server, "Observation/ob2")
    marker = _marker()
    put = httpx.put(
        f"{auth_server.base}/Observation",
        params={"_id": "ob2"},
        json=_observation("Patient/pa", "2339-0", marker),
        headers=alpha,
    )
    assert put.status_code == 201, put.text  # no match in Alpha's record: a new one
    assert "ob2" not in put.headers["location"]
    deleted = httpx.delete(f"{auth_server.base}/Observation", params={"_id": "ob2"}, headers=alpha)
    assert deleted.status_code in (200, 204), deleted.text
    bundle = _bundle(
        "transaction",
        [
            {"request": {"method": "DELETE", "url": "Observation?_id=ob2"}},
            {
                "resource": _observation("Patient/pa", "2339-0", marker),
                "request": {"method": "PUT", "url": "Observation?_id=ob2"},
            },
        ],
    )
    response = _send(auth_server, alpha, bundle)
    assert response.status_code == 200, response.text
    statuses = [_status(e) for e in response.json()["entry"]]
    assert statuses == [204, 201]
    assert _version(auth_server, "Observation/ob2") == ob2
    assert len(_stored(auth_server, marker)) == 2
    # an id in the body does not let a non-matching conditional update reach Bravo's
    hijack = {**_observation("Patient/pa", "2339-0", marker), "id": "ob2"}
    put = httpx.put(
        f"{auth_server.base}/Observation",
        params={"identifier": f"{TAG}|{_marker()}"},
        json=hijack,
        headers=alpha,
    )
    assert put.status_code == 404, put.text
    assert _version(auth_server, "Observation/ob2") == ob2


def test_conditional_reference_resolves_only_within_the_compartment(
    auth_server: AuthServer, alpha: dict[str, str]
) -> None:
    marker = _marker()
    theirs = _bundle("transaction", [_post(_observation("Patient?name=Bravo", "1", marker))])
    response = _send(auth_server, alpha, theirs)
    assert response.status_code == 412, response.text  # as if Bravo did not exist
    own = _bundle("transaction", [_post(_observation("Patient?name=Alpha", "1", marker))])
    response = _send(auth_server, alpha, own)
    assert response.status_code == 200, response.text
    (stored,) = _stored(auth_server, marker)
    assert stored["subject"] == {"reference": "Patient/pa"}


# -- granular scopes -----------------------------------------------------------------


def test_granular_scope_writes_only_matching_resources(auth_server: AuthServer, app: str) -> None:
    scope = f"launch/patient patient/Observation.crus?category={VITALS}"
    tokens = patient_login(auth_server.base, auth_server.database, app, "pa", scope)
    vitals = bearer(tokens["access_token"])
    marker = _marker()
    vital = {"category": [{"coding": [{"system": CATEGORY, "code": "vital-signs"}]}]}
    lab = {"category": [{"coding": [{"system": CATEGORY, "code": "laboratory"}]}]}
    ok = _bundle("transaction", [_post(_observation("Patient/pa", "8867-4", marker, **vital))])
    response = _send(auth_server, vitals, ok)
    assert response.status_code == 200, response.text
    written = _location(response.json()["entry"][0])
    bad = _bundle(
        "transaction",
        [
            _post(_observation("Patient/pa", "8867-4", marker, **vital)),
            _post(_observation("Patient/pa", "2339-0", marker, **lab)),
        ],
    )
    response = _send(auth_server, vitals, bad)
    assert response.status_code == 403, response.text
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[1]"]
    assert len(_stored(auth_server, marker)) == 1
    # turning the vital sign into a laboratory result is refused too
    current = _version(auth_server, written)
    relabelled = {**current, **lab}
    single = httpx.put(f"{auth_server.base}/{written}", json=relabelled, headers=vitals)
    assert single.status_code == 403, single.text
    assert _version(auth_server, written) == current


# -- batch: each entry on its own ----------------------------------------------------


def test_batch_with_bad_entries_runs_the_others(
    auth_server: AuthServer, alpha: dict[str, str]
) -> None:
    ob = _version(auth_server, "Observation/ob")
    marker = _marker()
    bundle = _bundle(
        "batch",
        [
            _post(_observation("Patient/pa", "8867-4", marker)),
            {"resource": ob, "request": {"method": "PUT", "url": "Observation/ob"}},
            _post(_observation("Patient/pb", "8867-4", marker)),
            {"request": {"method": "DELETE", "url": "Observation/ob"}},
            _post(_observation("Patient/pa", "2339-0", marker)),
        ],
    )
    response = _send(auth_server, alpha, bundle)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert [_status(e) for e in entries] == [201, 403, 403, 404, 201]
    for refused in (entries[1], entries[2], entries[3]):
        assert refused["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert len(_stored(auth_server, marker)) == 2
    assert _version(auth_server, "Observation/ob") == ob
