"""Custom SearchParameter resources and `$reindex`, over HTTP, on each backend.

Expected values follow the R4 search spec (http://hl7.org/fhir/R4/search.html) and
SearchParameter (http://hl7.org/fhir/R4/searchparameter.html): an `active`
SearchParameter's `code` becomes a search parameter of each `base` type, its
`expression` says which values are indexed.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from openrecord.service.context import SecurityContext
from openrecord.service.records import RecordService
from openrecord.store import open_store
from tests.databases import backends, fresh_database
from tests.server.conftest import Server, running_server, serving
from tests.server.launcher import run_openrecord

MMN = "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName"
BIRTH_TIME = "http://hl7.org/fhir/StructureDefinition/patient-birthTime"
BIRTH_SEX = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex"


def search_param(code: str, type: str, expression: str, **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "SearchParameter",
        "url": f"http://example.org/fhir/SearchParameter/{code}",
        "name": code.replace("-", "_"),
        "status": "active",
        "description": f"test parameter {code}",
        "code": code,
        "base": ["Patient"],
        "type": type,
        "expression": expression,
        **more,
    }


def extension_param(code: str, type: str, url: str) -> dict[str, Any]:
    """A parameter of `type` on the value of the Patient extension `url`."""
    return search_param(code, type, f"Patient.extension('{url}').value")


def mmn_param(code: str) -> dict[str, Any]:
    return extension_param(code, "string", MMN)


def patient(tag: str, *extensions: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Patient",
        "meta": {"tag": [{"system": "urn:test", "code": tag}]},
    }
    if extensions:
        out["extension"] = list(extensions)
    return out


def born_patient(tag: str, sex: str, born: str) -> dict[str, Any]:
    """A patient of `tag` with a birth sex (code `sex`) and a birth time (dateTime `born`)."""
    return patient(
        tag, {"url": BIRTH_SEX, "valueCode": sex}, {"url": BIRTH_TIME, "valueDateTime": born}
    )


def create(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(f"/{body['resourceType']}", json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def ids(bundle: dict[str, Any]) -> set[str]:
    return {
        e["resource"]["id"]
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") == "match"
    }


def warnings(bundle: dict[str, Any]) -> list[str]:
    return [
        issue.get("diagnostics", "")
        for e in bundle.get("entry", [])
        if e["resource"]["resourceType"] == "OperationOutcome"
        for issue in e["resource"]["issue"]
    ]


def find(client: httpx.Client, query: str) -> dict[str, Any]:
    r = client.get(f"/Patient?{query}")
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def patient_search_params(client: httpx.Client) -> dict[str, dict[str, Any]]:
    """The CapabilityStatement's Patient search parameters, by name."""
    statement = client.get("/metadata").json()
    listed = next(
        r["searchParam"] for r in statement["rest"][0]["resource"] if r["type"] == "Patient"
    )
    return {s["name"]: s for s in listed}


def test_active_parameter_indexes_later_writes_and_reindex_the_earlier_ones(
    client: httpx.Client,
) -> None:
    tag = uuid.uuid4().hex
    code = f"mmn-{tag[:8]}"
    before = create(client, patient(tag, {"url": MMN, "valueString": "Beforeson"}))
    create(client, mmn_param(code))
    after = create(client, patient(tag, {"url": MMN, "valueString": "Aftermann"}))
    other = create(client, patient(tag, {"url": MMN, "valueString": "Otherby"}))

    # Written after the SearchParameter: indexed with it (string: starts-with, any case).
    found = find(client, f"{code}=aftermann&_tag=urn:test|{tag}")
    assert ids(found) == {after["id"]}
    assert warnings(found) == []
    assert ids(find(client, f"{code}=Aft,Oth&_tag=urn:test|{tag}")) == {after["id"], other["id"]}
    assert ids(find(client, f"{code}:exact=Aftermann&_tag=urn:test|{tag}")) == {after["id"]}
    # Written before it: not indexed until $reindex.
    assert ids(find(client, f"{code}=Beforeson&_tag=urn:test|{tag}")) == set()

    r = client.post("/Patient/$reindex")
    assert r.status_code == 200, r.text
    params = {p["name"]: p for p in r.json()["parameter"]}
    assert r.json()["resourceType"] == "Parameters"
    assert params["reindexed"]["valueInteger"] >= 3
    assert ids(find(client, f"{code}=Beforeson&_tag=urn:test|{tag}")) == {before["id"]}
    # No new version: the resource and its history are as they were.
    read = client.get(f"/Patient/{before['id']}").json()
    assert read["meta"]["versionId"] == "1"
    assert client.get(f"/Patient/{before['id']}/_history").json()["total"] == 1
    # Built-in parameters still answer after the reindex.
    assert len(ids(find(client, f"_tag=urn:test|{tag}"))) == 3


def test_token_and_date_parameters(client: httpx.Client) -> None:
    tag = uuid.uuid4().hex
    sex, born = f"sex-{tag[:8]}", f"born-{tag[:8]}"
    create(client, extension_param(sex, "token", BIRTH_SEX))
    create(client, extension_param(born, "date", BIRTH_TIME))
    f = create(client, born_patient(tag, "F", "2021-03-04T10:30:00Z"))
    m = create(client, born_patient(tag, "M", "1999-12-31T23:00:00Z"))
    within = f"&_tag=urn:test|{tag}"
    assert ids(find(client, f"{sex}=F{within}")) == {f["id"]}
    assert ids(find(client, f"{sex}:not=F{within}")) == {m["id"]}
    assert ids(find(client, f"{born}=2021-03-04{within}")) == {f["id"]}
    assert ids(find(client, f"{born}=ge2000-01-01{within}")) == {f["id"]}
    assert ids(find(client, f"{born}=lt2000{within}")) == {m["id"]}
    # Unreadable values of a custom parameter are a 400 naming it, like built-in ones.
    bad = client.get(f"/Patient?{born}=yesterday")
    assert bad.status_code == 400
    assert bad.json()["issue"][0]["expression"] == [born]


def test_retired_or_deleted_parameter_stops_being_used(client: httpx.Client) -> None:
    tag = uuid.uuid4().hex
    code = f"gone-{tag[:8]}"
    sp = create(client, mmn_param(code))
    p = create(client, patient(tag, {"url": MMN, "valueString": "Retiree"}))
    query = f"{code}=Retiree&_tag=urn:test|{tag}"
    assert ids(find(client, query)) == {p["id"]}
    listed = patient_search_params(client)
    assert listed[code]["definition"] == f"http://example.org/fhir/SearchParameter/{code}"
    assert listed[code]["type"] == "string"

    retired = {**sp, "status": "retired"}
    r = client.put(f"/SearchParameter/{sp['id']}", json=retired)
    assert r.status_code == 200, r.text
    # Unknown now: reported in the searchset, not applied (all of the tag's patients).
    found = find(client, query)
    assert ids(found) == {p["id"]}
    assert any(code in w for w in warnings(found))
    strict = client.get(f"/Patient?{query}", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert code not in patient_search_params(client)

    # Active again, then deleted: unknown again.
    r = client.put(f"/SearchParameter/{sp['id']}", json={**sp, "status": "active"})
    assert r.status_code == 200, r.text
    assert warnings(find(client, query)) == []
    assert client.delete(f"/SearchParameter/{sp['id']}").status_code in (200, 204)
    assert any(code in w for w in warnings(find(client, query)))


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"code": "name"}, "SearchParameter.code"),  # clashes with Patient's built-in `name`
        ({"code": "_text-x"}, "SearchParameter.code"),
        ({"base": ["Patient", "NotAType"]}, "SearchParameter.base[1]"),
        ({"type": "special"}, "SearchParameter.type"),
        ({"expression": "Patient.extension(("}, "SearchParameter.expression"),
        ({"expression": "Patient.nosuchelement"}, "SearchParameter.expression"),
        ({"type": "date", "expression": "Patient.active"}, "SearchParameter.expression"),
        ({"expression": "Patient.name.descendants()"}, "SearchParameter.expression"),
        ({"expression": "(" * 200 + "Patient.name" + ")" * 200}, "SearchParameter.expression"),
        ({"expression": "Patient.name" + ".where(true)" * 300}, "SearchParameter.expression"),
        ({"expression": " | ".join(["Patient.name"] * 2000)}, "SearchParameter.expression"),
        ({"target": ["Nope"], "type": "reference"}, "SearchParameter.target[0]"),
        (
            {
                "type": "composite",
                "expression": "Patient",
                "component": [{"definition": "http://example.org/none", "expression": "name"}],
            },
            "SearchParameter.component[0].definition",
        ),
    ],
)
def test_invalid_parameter_is_refused_with_its_path(
    client: httpx.Client, change: dict[str, Any], where: str
) -> None:
    body = {**mmn_param(f"bad-{uuid.uuid4().hex[:8]}"), **change}
    started = time.monotonic()
    r = client.post("/SearchParameter", json=body)
    assert time.monotonic() - started < 10  # hostile expressions do not hang the server
    assert r.status_code == 422, r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert where in [e for i in outcome["issue"] for e in i.get("expression", [])]
    # Nothing was stored.
    assert ids(client.get(f"/SearchParameter?code={body['code']}").json()) == set()


def test_second_parameter_with_the_same_code_is_refused(client: httpx.Client) -> None:
    code = f"twice-{uuid.uuid4().hex[:8]}"
    first = create(client, mmn_param(code))
    again = {**mmn_param(code), "url": "http://example.org/fhir/SearchParameter/other"}
    r = client.post("/SearchParameter", json=again)
    assert r.status_code == 422
    assert r.json()["issue"][0]["expression"] == ["SearchParameter.code"]
    # Updating the first one itself is not a clash; a draft is never used, so may repeat it.
    assert client.put(f"/SearchParameter/{first['id']}", json={**first}).status_code == 200
    assert client.post("/SearchParameter", json={**again, "status": "draft"}).status_code == 201


def test_composite_of_custom_components(client: httpx.Client) -> None:
    tag = uuid.uuid4().hex
    sex, born, both = f"csex-{tag[:8]}", f"cborn-{tag[:8]}", f"sexborn-{tag[:8]}"
    sex_sp = create(client, extension_param(sex, "token", BIRTH_SEX))
    born_sp = create(client, extension_param(born, "date", BIRTH_TIME))
    create(
        client,
        search_param(
            both,
            "composite",
            "Patient",
            component=[
                {
                    "definition": sex_sp["url"],
                    "expression": f"extension('{BIRTH_SEX}').value",
                },
                {
                    "definition": born_sp["url"],
                    "expression": f"extension('{BIRTH_TIME}').value",
                },
            ],
        ),
    )
    f = create(client, born_patient(tag, "F", "2021-03-04"))
    create(client, born_patient(tag, "M", "2021-03-04"))
    within = f"&_tag=urn:test|{tag}"
    assert ids(find(client, f"{both}=F$2021-03-04{within}")) == {f["id"]}


# -- several worker processes ---------------------------------------------------------


@pytest.fixture(scope="module", params=backends())
def two_workers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("workers")
    with running_server(request.param, folder, "--workers", "2") as running:
        yield running


def fresh(server: Server) -> httpx.Client:
    """A client on a new connection: the kernel hands it to either worker."""
    return httpx.Client(base_url=server.base, timeout=60, headers={"Connection": "close"})


def test_every_worker_uses_a_parameter_at_once(two_workers: Server) -> None:
    tag = uuid.uuid4().hex
    code = f"w-{tag[:8]}"
    # Both workers have loaded their parameter table before the SearchParameter exists.
    for _ in range(10):
        with fresh(two_workers) as c:
            assert any(code in w for w in warnings(find(c, f"{code}=x&_tag=urn:test|{tag}")))
    with fresh(two_workers) as c:
        create(c, mmn_param(code))
    # Each round writes and searches on new connections, whichever worker takes them.
    for i in range(12):
        with fresh(two_workers) as c:
            p = create(c, patient(tag, {"url": MMN, "valueString": f"Round{i}x"}))
        with fresh(two_workers) as c:
            found = find(c, f"{code}=Round{i}x&_tag=urn:test|{tag}")
        assert warnings(found) == [], i
        assert ids(found) == {p["id"]}, i
    with fresh(two_workers) as c:
        r = c.post("/Patient/$reindex")  # (every type would count the AuditEvents too)
        assert r.status_code == 200
        reindexed = r.json()["parameter"][0]
        assert reindexed == {"name": "reindexed", "valueInteger": 12}


# -- the command line -------------------------------------------------------------------


def openrecord(*args: str) -> subprocess.CompletedProcess[str]:
    return run_openrecord([*args], timeout=600)


@pytest.fixture(params=backends())
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path) as url:
        yield url


def chained_count(database: str) -> int:
    store = open_store(database)
    try:
        return int(store.query("SELECT count(*) FROM audit_chain")[0][0])
    finally:
        store.close()


def test_cli_reindex(database: str, tmp_path: Path) -> None:
    with (
        serving(database, tmp_path / "server.log") as (base, _),
        httpx.Client(base_url=base, timeout=60) as c,
    ):
        tag = uuid.uuid4().hex
        early = [
            create(c, patient(tag, {"url": MMN, "valueString": f"Early{i}"})) for i in range(3)
        ]
        create(c, {"resourceType": "Observation", "status": "final", "code": {"text": "x"}})
        create(c, mmn_param("maiden"))
        assert ids(find(c, "maiden=Early")) == set()

        only = openrecord("reindex", "--quiet", "--database", database, "Observation")
        assert only.returncode == 0, only.stderr
        assert "reindexed 1 resources" in only.stdout
        assert ids(find(c, "maiden=Early")) == set()

        done = openrecord("reindex", "--quiet", "--database", database, "Patient")
        assert done.returncode == 0, done.stderr
        assert "reindexed 3 resources" in done.stdout
        assert ids(find(c, "maiden=Early")) == {p["id"] for p in early}

        audit_events = chained_count(database)  # one per request above (reindex stores
        # the chained events as AuditEvent resources first, then reindexes them too)
        everything = openrecord("reindex", "--quiet", "--database", database)
        assert everything.returncode == 0, everything.stderr
        # 3 + 1 + the parameter, and the audit trail's events
        assert f"reindexed {5 + audit_events:,} resources" in everything.stdout

        bad = openrecord("reindex", "--quiet", "--database", database, "Nope")
        assert bad.returncode == 2
        assert "Nope" in bad.stderr


# -- the store's reindex primitive ------------------------------------------------------


def test_store_reindex_replaces_rows_of_the_current_version_only(database: str) -> None:
    store = open_store(database)
    try:
        records = RecordService(store)
        ctx = SecurityContext.open()
        first = records.create(ctx, "Patient", {"resourceType": "Patient", "active": True})
        v1 = first.version
        assert v1.data is not None
        body = {**orjson.loads(v1.data), "active": False}
        v2 = records.update(ctx, "Patient", v1.id, body).version
        assert v2.data is not None

        def active(value: str) -> list[str]:
            found = records.search(ctx, "Patient", [("active", value)])
            return [r.id for r in found.resources]

        stale = records.indexer.extract(orjson.loads(v1.data))
        with store.write() as tx:
            assert tx.reindex([(v1, stale)]) == []  # version 1 is no longer current
        assert active("true") == [] and active("false") == [v1.id]

        # The current version's rows, replaced by what is given, without a new version.
        wrong = records.indexer.extract({**orjson.loads(v2.data), "active": True})
        with store.write() as tx:
            assert tx.reindex([(v2, wrong)]) == [v2]
        assert active("true") == [v1.id] and active("false") == []
        current = store.read("Patient", v1.id)
        assert current is not None and current.version == 2
        assert store.history("Patient", v1.id).total == 2

        records.delete(ctx, "Patient", v1.id)
        with store.write() as tx:
            assert tx.reindex([(v2, wrong)]) == []  # deleted: nothing to index
        assert active("true") == []
    finally:
        store.close()


def test_validate_operation_reports_what_a_write_would_refuse(client: httpx.Client) -> None:
    body = {**mmn_param(f"v-{uuid.uuid4().hex[:8]}"), "expression": "Patient.nosuchelement"}
    r = client.post("/SearchParameter/$validate", json=body)
    assert r.status_code == 200
    issues = [i for i in r.json()["issue"] if i["severity"] == "error"]
    assert [i["expression"] for i in issues] == [["SearchParameter.expression"]]
    good = client.post("/SearchParameter/$validate", json=mmn_param("v-ok"))
    assert [i for i in good.json()["issue"] if i["severity"] == "error"] == []


def test_reference_parameter_searches_and_includes(client: httpx.Client) -> None:
    tag = uuid.uuid4().hex
    code = f"doc-{tag[:8]}"
    create(
        client,
        search_param(code, "reference", "Patient.generalPractitioner", target=["Practitioner"]),
    )
    doctor = create(client, {"resourceType": "Practitioner", "name": [{"family": "Who"}]})
    p = create(
        client,
        {**patient(tag), "generalPractitioner": [{"reference": f"Practitioner/{doctor['id']}"}]},
    )
    without = create(client, patient(tag))
    found = find(client, f"{code}=Practitioner/{doctor['id']}&_include=Patient:{code}")
    assert ids(found) == {p["id"]}
    included = [e["resource"]["id"] for e in found["entry"] if e["search"]["mode"] == "include"]
    assert included == [doctor["id"]]
    assert ids(find(client, f"{code}:missing=true&_tag=urn:test|{tag}")) == {without["id"]}
