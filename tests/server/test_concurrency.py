"""Concurrent writers and crashes: conditional-create races, If-Match races, many writers
of one resource, SIGKILL mid-transaction."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.databases import backends, fresh_database
from tests.server.conftest import running_server, serving


@pytest.fixture(scope="module", params=backends())
def two_worker_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, Path]]:
    """A server with two worker processes, so races cross processes as in production."""
    folder = tmp_path_factory.mktemp("race")
    with running_server(request.param, folder, "--workers", "2") as server:
        yield server.base, server.database, folder


def run_together(n: int, fn: Any) -> list[Any]:
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def worker(i: int) -> None:
        barrier.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_twenty_concurrent_conditional_creates_make_one(
    two_worker_server: tuple[str, str, Path],
) -> None:
    base = two_worker_server[0]
    value = uuid.uuid4().hex
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:test:race", "value": value}]}
    criteria = f"identifier=urn:test:race|{value}"

    def create(_: int) -> int:
        with httpx.Client(timeout=60) as c:
            return c.post(
                f"{base}/Patient", json=body, headers={"If-None-Exist": criteria}
            ).status_code

    statuses = run_together(20, create)
    assert sorted(statuses) == [200] * 19 + [201]
    found = httpx.get(f"{base}/Patient?{criteria}").json()
    assert len(found.get("entry", [])) == 1


def test_two_concurrent_if_match_updates(two_worker_server: tuple[str, str, Path]) -> None:
    base = two_worker_server[0]
    for _ in range(5):
        pid = httpx.post(f"{base}/Patient", json={"resourceType": "Patient"}).json()["id"]

        def update(i: int, pid: str = pid) -> int:
            body = {"resourceType": "Patient", "id": pid, "gender": ["male", "female"][i]}
            with httpx.Client(timeout=60) as c:
                headers = {"If-Match": 'W/"1"'}
                return c.put(f"{base}/Patient/{pid}", json=body, headers=headers).status_code

        assert sorted(run_together(2, update)) == [200, 412]
        assert httpx.get(f"{base}/Patient/{pid}").json()["meta"]["versionId"] == "2"


def history_versions(base: str, type: str, id: str) -> list[int]:
    bundle = httpx.get(f"{base}/{type}/{id}/_history", params={"_count": 100}).json()
    return sorted(int(e["resource"]["meta"]["versionId"]) for e in bundle.get("entry", []))


def test_eight_concurrent_updates_of_one_resource_all_succeed(
    two_worker_server: tuple[str, str, Path],
) -> None:
    """Updates without If-Match are not version-aware (FHIR R4 http.html, "Managing
    Resource Contention": only If-Match asks for a version check, answered 412), so
    every writer succeeds and gets a version of its own, 2..9, none lost or repeated."""
    base = two_worker_server[0]
    writers = 8
    for _ in range(3):
        pid = httpx.post(f"{base}/Patient", json={"resourceType": "Patient"}).json()["id"]

        def update(i: int, pid: str = pid) -> tuple[int, str, str]:
            body = {"resourceType": "Patient", "id": pid, "birthDate": f"19{i:02d}"}
            with httpx.Client(timeout=120) as c:
                r = c.put(f"{base}/Patient/{pid}", json=body)
            return r.status_code, r.headers.get("etag", ""), r.text

        results = run_together(writers, update)
        assert [status for status, _, _ in results] == [200] * writers, results
        assert sorted(etag for _, etag, _ in results) == sorted(
            f'W/"{v}"' for v in range(2, writers + 2)
        )
        assert history_versions(base, "Patient", pid) == list(range(1, writers + 2))
        final = httpx.get(f"{base}/Patient/{pid}").json()
        assert final["meta"]["versionId"] == str(writers + 1)
        assert final["birthDate"] in {f"19{i:02d}" for i in range(writers)}


def test_eight_concurrent_patches_of_one_resource_all_apply(
    two_worker_server: tuple[str, str, Path],
) -> None:
    """Each JSON Patch applies to the version current when its turn comes: all 200, and
    every patch's line is in the final resource."""
    base = two_worker_server[0]
    writers = 8
    body = {"resourceType": "Patient", "name": [{"family": "First"}]}
    pid = httpx.post(f"{base}/Patient", json=body).json()["id"]

    def patch(i: int) -> int:
        document = [{"op": "add", "path": "/name/-", "value": {"family": f"Writer{i}"}}]
        headers = {"Content-Type": "application/json-patch+json"}
        with httpx.Client(timeout=120) as c:
            return c.patch(f"{base}/Patient/{pid}", json=document, headers=headers).status_code

    assert run_together(writers, patch) == [200] * writers
    final = httpx.get(f"{base}/Patient/{pid}").json()
    added = sorted(f"Writer{i}" for i in range(writers))
    assert sorted(n["family"] for n in final["name"]) == ["First", *added]
    assert history_versions(base, "Patient", pid) == list(range(1, writers + 2))


def test_eight_concurrent_updates_create_one_resource(
    two_worker_server: tuple[str, str, Path],
) -> None:
    """Update as create: the first PUT to a new id creates it (201), the others update it."""
    base = two_worker_server[0]
    writers = 8
    pid = f"race-{uuid.uuid4().hex[:12]}"

    def update(i: int) -> int:
        body = {"resourceType": "Patient", "id": pid, "birthDate": f"19{i:02d}"}
        with httpx.Client(timeout=120) as c:
            return c.put(f"{base}/Patient/{pid}", json=body).status_code

    assert sorted(run_together(writers, update)) == [200] * (writers - 1) + [201]
    assert history_versions(base, "Patient", pid) == list(range(1, writers + 1))


def large_transaction(tag: str, size: int) -> dict[str, Any]:
    entries = [
        {
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                "identifier": [{"system": "urn:test:kill", "value": f"{tag}-{i}"}],
                "valueQuantity": {"value": 70 + i / 100, "unit": "kg"},
            },
            "request": {"method": "POST", "url": "Observation"},
        }
        for i in range(size)
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


@pytest.mark.parametrize("backend", backends())
def test_sigkill_during_large_transaction_leaves_all_or_nothing(
    backend: str, tmp_path: Path
) -> None:
    """Kill -9 the server at several moments of a 15,000-entry transaction.

    The early kill lands while entries are validated, the later ones while rows are
    being written (the store flushes in batches inside the transaction): after each,
    a restarted server holds all of the transaction or none of it.
    """
    size = 15_000
    with fresh_database(backend, tmp_path) as database:
        interrupted = 0
        for n, delay in enumerate((0.8, 1.8, 2.8)):
            tag = uuid.uuid4().hex
            outcome: dict[str, Any] = {}
            bundle = large_transaction(tag, size)
            with serving(database, tmp_path / f"kill{n}.log") as (base, proc):

                def send(
                    base: str = base,
                    bundle: dict[str, Any] = bundle,
                    outcome: dict[str, Any] = outcome,
                ) -> None:
                    try:
                        outcome["status"] = httpx.post(base, json=bundle, timeout=120).status_code
                    except httpx.HTTPError as err:
                        outcome["error"] = err

                sender = threading.Thread(target=send)
                sender.start()
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                sender.join(30)
            interrupted += "error" in outcome

            with serving(database, tmp_path / f"after{n}.log") as (base, _):
                found = [
                    len(
                        httpx.get(
                            f"{base}/Observation", params={"identifier": f"urn:test:kill|{tag}-{i}"}
                        )
                        .json()
                        .get("entry", [])
                    )
                    for i in (0, size // 2, size - 1)
                ]
                assert found in ([0, 0, 0], [1, 1, 1]), found
        assert interrupted >= 2, "the kills came after the transaction finished; make it larger"
