"""Write-time profile policy (`serve --profiles warn|strict|off`) over HTTP.

A resource declaring a profile in `meta.profile` is checked against it on create,
update, patch and in Bundles. The broken blood pressure below lacks its systolic
component, which US Core's blood pressure profile requires (slice `systolic` 1..1
of `Observation.component`), so that profile reports an error at
`Observation.component`; plain R4 accepts it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.databases import backends
from tests.fhir.test_profiles import BP, US
from tests.server.conftest import running_server

BP_PROFILE = US + "us-core-blood-pressure"
UNKNOWN_PROFILE = "http://example.org/fhir/StructureDefinition/not-loaded-here"
OO = {"Prefer": "return=OperationOutcome"}


def declaring(resource: dict[str, Any], *profiles: str) -> dict[str, Any]:
    out = copy.deepcopy(resource)
    out.pop("id", None)
    out["meta"] = {"profile": list(profiles)}
    return out


def without_systolic(resource: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(resource)
    del out["component"][0]
    return out


GOOD = declaring(BP, BP_PROFILE)
BROKEN = without_systolic(GOOD)


def issues(r: httpx.Response, *severities: str) -> list[dict[str, Any]]:
    """The issues of these severities that name a profile (base R4 ones, like dom-6, don't)."""
    return [
        i
        for i in r.json()["issue"]
        if i["severity"] in severities and "profile" in i.get("diagnostics", "")
    ]


def expressions(r: httpx.Response, *severities: str) -> list[str]:
    return [e for i in issues(r, *severities) for e in i.get("expression", [])]


def policy_server(
    request: pytest.FixtureRequest, factory: pytest.TempPathFactory, *extra: str
) -> Iterator[httpx.Client]:
    with (
        running_server(request.param, factory.mktemp("profiles"), *extra) as server,
        httpx.Client(base_url=server.base, timeout=60) as client,
    ):
        yield client


@pytest.fixture(scope="module", params=backends())
def warn(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """A server started without `--profiles`: the default policy, warn."""
    yield from policy_server(request, tmp_path_factory)


@pytest.fixture(scope="module", params=backends())
def strict(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    yield from policy_server(request, tmp_path_factory, "--profiles", "strict")


@pytest.fixture(scope="module", params=backends())
def off(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    yield from policy_server(request, tmp_path_factory, "--profiles", "off")


def stored(client: httpx.Client, r: httpx.Response) -> dict[str, Any]:
    location = r.headers["location"].split("/fhir/", 1)[1].split("/_history")[0]
    found = client.get(f"/{location}")
    assert found.status_code == 200
    return dict(found.json())


# -- warn ---------------------------------------------------------------------------------


def test_warn_writes_and_reports_profile_errors_as_warnings(warn: httpx.Client) -> None:
    r = warn.post("/Observation", json=BROKEN, headers=OO)
    assert r.status_code == 201
    assert r.json()["resourceType"] == "OperationOutcome"
    assert "Observation.component" in expressions(r, "warning")
    assert issues(r, "error", "fatal") == []
    assert any(BP_PROFILE in i["diagnostics"] for i in issues(r, "warning"))
    assert len(stored(warn, r)["component"]) == 1  # written as sent


def test_warn_conformant_resource_has_no_profile_warnings(warn: httpx.Client) -> None:
    r = warn.post("/Observation", json=GOOD, headers=OO)
    assert r.status_code == 201
    assert issues(r, "error", "fatal", "warning") == []


def test_warn_on_update_and_patch(warn: httpx.Client) -> None:
    created = warn.post("/Observation", json=GOOD)
    assert created.status_code == 201
    body = created.json()
    broken = without_systolic(body)
    updated = warn.put(f"/Observation/{body['id']}", json=broken, headers=OO)
    assert updated.status_code == 200
    assert "Observation.component" in expressions(updated, "warning")

    again = warn.post("/Observation", json=GOOD).json()
    patch = [{"op": "remove", "path": "/component/0"}]
    patched = warn.patch(
        f"/Observation/{again['id']}",
        content=json.dumps(patch),
        headers={**OO, "Content-Type": "application/json-patch+json"},
    )
    assert patched.status_code == 200
    assert "Observation.component" in expressions(patched, "warning")
    assert len(stored_by_id(warn, again["id"])["component"]) == 1


def stored_by_id(client: httpx.Client, id: str) -> dict[str, Any]:
    return dict(client.get(f"/Observation/{id}").json())


def test_warn_in_a_transaction_entry_outcome(warn: httpx.Client) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": GOOD, "request": {"method": "POST", "url": "Observation"}},
            {"resource": BROKEN, "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    r = warn.post("", json=bundle, headers=OO)
    assert r.status_code == 200
    entries = r.json()["entry"]
    assert [e["response"]["status"][:3] for e in entries] == ["201", "201"]
    outcome = entries[1]["response"]["outcome"]
    warned = [i for i in outcome["issue"] if i["severity"] == "warning"]
    assert any("Observation.component" in i.get("expression", []) for i in warned)


def test_unknown_profile_is_information_only(warn: httpx.Client, strict: httpx.Client) -> None:
    for client in (warn, strict):
        r = client.post("/Observation", json=declaring(BP, UNKNOWN_PROFILE), headers=OO)
        assert r.status_code == 201
        info = issues(r, "information")
        assert [i["expression"] for i in info if UNKNOWN_PROFILE in i["diagnostics"]] == [
            ["Observation.meta.profile"]
        ]
        assert issues(r, "error", "fatal", "warning") == []


# -- strict -------------------------------------------------------------------------------


def test_strict_refuses_and_writes_nothing(strict: httpx.Client) -> None:
    marked = copy.deepcopy(BROKEN)
    marked["identifier"] = [{"system": "urn:test", "value": "strict-refused"}]
    r = strict.post("/Observation", json=marked)
    assert r.status_code == 422
    assert "Observation.component" in expressions(r, "error")
    found = strict.get("/Observation", params={"identifier": "urn:test|strict-refused"})
    assert found.json().get("total", 0) == 0 and "entry" not in found.json()

    put = strict.put("/Observation/strict-put", json={**marked, "id": "strict-put"})
    assert put.status_code == 422
    assert strict.get("/Observation/strict-put").status_code == 404


def test_strict_accepts_conformant_and_refuses_breaking_patch(strict: httpx.Client) -> None:
    created = strict.post("/Observation", json=GOOD)
    assert created.status_code == 201
    id = created.json()["id"]
    patch = [{"op": "remove", "path": "/component/0"}]
    r = strict.patch(
        f"/Observation/{id}",
        content=json.dumps(patch),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert r.status_code == 422
    assert "Observation.component" in expressions(r, "error")
    current = strict.get(f"/Observation/{id}")
    assert current.headers["etag"] == 'W/"1"' and len(current.json()["component"]) == 2


def test_strict_transaction_rolls_back(strict: httpx.Client) -> None:
    good = copy.deepcopy(GOOD)
    good["identifier"] = [{"system": "urn:test", "value": "strict-tx"}]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": good, "request": {"method": "POST", "url": "Observation"}},
            {"resource": BROKEN, "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    r = strict.post("", json=bundle)
    assert r.status_code == 422
    assert "Bundle.entry[1].resource.component" in expressions(r, "error")
    found = strict.get("/Observation", params={"identifier": "urn:test|strict-tx"})
    assert "entry" not in found.json()


# -- off ----------------------------------------------------------------------------------


def test_off_does_not_check_profiles(off: httpx.Client) -> None:
    r = off.post("/Observation", json=BROKEN, headers=OO)
    assert r.status_code == 201
    assert issues(r, "error", "fatal", "warning") == []
    assert not any("profile" in i["diagnostics"] for i in r.json()["issue"])
    unknown = off.post("/Observation", json=declaring(BP, UNKNOWN_PROFILE), headers=OO)
    assert not any(UNKNOWN_PROFILE in i["diagnostics"] for i in unknown.json()["issue"])
