"""Search conformance: result parameters (R4 search.html §3.1.1.5.x, §3.1.1.6, paging).

`_sort`, `_count` and paging links, `_total`, `_summary`, `_elements`. Paging follows the
`next`/`previous` URLs the server gives; nothing here builds a cursor.
Data and the reasoning tables: tests/server/conformance_data.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.server.conformance_data import ALL_PATIENTS, find, match_ids, ordered_ids

pytestmark = pytest.mark.usefixtures("conformance_dataset")

SUBSETTED = ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "SUBSETTED")


def link(bundle: dict[str, Any], relation: str) -> str | None:
    for entry in bundle.get("link", []):
        if entry["relation"] == relation:
            return str(entry["url"])
    return None


def follow(client: httpx.Client, url: str) -> dict[str, Any]:
    r = client.get(url)
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, dict)
    return body


def only(client: httpx.Client, path: str, query: str) -> dict[str, Any]:
    """The one resource a search finds."""
    bundle = find(client, path, query)
    matches = [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
    assert len(matches) == 1, bundle
    resource = matches[0]
    assert isinstance(resource, dict)
    return resource


def tags(resource: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (t.get("system", ""), t.get("code", "")) for t in resource.get("meta", {}).get("tag", [])
    }


# -- _sort --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        ("Patient", "_sort=_id", ["pat-anna", "pat-bob", "pat-carl", "pat-dana", "pat-eve"]),
        ("Patient", "_sort=-_id", ["pat-eve", "pat-dana", "pat-carl", "pat-bob", "pat-anna"]),
        (
            "Patient",
            "_id=pat-anna,pat-carl,pat-dana,pat-eve&_sort=birthdate",
            ["pat-carl", "pat-anna", "pat-dana", "pat-eve"],
        ),
        (
            "Patient",
            "_id=pat-anna,pat-carl,pat-dana,pat-eve&_sort=-birthdate",
            ["pat-eve", "pat-dana", "pat-anna", "pat-carl"],
        ),
        # Dupont, Müller (accents aside, between D and S), Smith x2 by birthdate, Smithson
        (
            "Patient",
            "_sort=family,-birthdate",
            ["pat-dana", "pat-anna", "pat-eve", "pat-bob", "pat-carl"],
        ),
        (
            "Patient",
            "_sort=family,birthdate",
            ["pat-dana", "pat-anna", "pat-bob", "pat-eve", "pat-carl"],
        ),
        # token: female before male, then _id
        (
            "Patient",
            "gender:missing=false&_sort=gender,_id",
            ["pat-anna", "pat-eve", "pat-bob", "pat-carl"],
        ),
        (
            "Patient",
            "gender:missing=false&_sort=-gender,-_id",
            ["pat-carl", "pat-bob", "pat-eve", "pat-anna"],
        ),
        (
            "Observation",
            "code=http://loinc.org|29463-7&_sort=value-quantity,_id",
            ["wt-60", "wt-99-6", "wt-100-004", "wt-100-2", "wt-lb", "wt-101", "wt-150"],
        ),
        (
            "Observation",
            "code=http://loinc.org|29463-7&_sort=-value-quantity,_id",
            ["wt-150", "wt-101", "wt-100-2", "wt-lb", "wt-100-004", "wt-99-6", "wt-60"],
        ),
        (
            "Observation",
            "_id=tz-est,tz-utc,tz-period&_sort=date",
            ["tz-period", "tz-utc", "tz-est"],
        ),
        (
            "Observation",
            "_id=tz-est,tz-utc,tz-period&_sort=-date",
            ["tz-est", "tz-utc", "tz-period"],
        ),
        (
            "RiskAssessment",
            "_sort=probability",
            ["ra-20", "ra-301", "ra-31", "ra-35", "ra-80"],
        ),
        (
            "ValueSet",
            "_sort=-url",
            ["vs-other", "vs-a-extra", "vs-a"],
        ),
    ],
)
def test_sort(client: httpx.Client, path: str, query: str, expected: list[str]) -> None:
    assert ordered_ids(find(client, path, query)) == expected


def test_sort_is_stable_across_pages(client: httpx.Client) -> None:
    # ties on gender are broken the same way on every page: the pages add up to the set
    seen: list[str] = []
    bundle = find(client, "Patient", "_sort=gender&_count=2")
    while True:
        seen += ordered_ids(bundle)
        nxt = link(bundle, "next")
        if nxt is None:
            break
        bundle = follow(client, nxt)
    assert sorted(seen) == sorted(ALL_PATIENTS)


# -- _count and paging --------------------------------------------------------------


def test_count_and_paging_links(client: httpx.Client) -> None:
    first = find(client, "Patient", "_sort=_id&_count=2")
    assert first["resourceType"] == "Bundle" and first["type"] == "searchset"
    assert ordered_ids(first) == ["pat-anna", "pat-bob"]
    assert link(first, "self") is not None
    assert link(first, "previous") is None
    second = follow(client, str(link(first, "next")))
    assert ordered_ids(second) == ["pat-carl", "pat-dana"]
    third = follow(client, str(link(second, "next")))
    assert ordered_ids(third) == ["pat-eve"]
    assert link(third, "next") is None
    back = follow(client, str(link(third, "previous")))
    assert ordered_ids(back) == ["pat-carl", "pat-dana"]
    back = follow(client, str(link(back, "previous")))
    assert ordered_ids(back) == ["pat-anna", "pat-bob"]


def test_paging_keeps_the_search_and_sort(client: httpx.Client) -> None:
    first = find(client, "Patient", "_id=pat-anna,pat-carl,pat-eve&_sort=-birthdate&_count=2")
    assert ordered_ids(first) == ["pat-eve", "pat-anna"]
    rest = follow(client, str(link(first, "next")))
    assert ordered_ids(rest) == ["pat-carl"]


def put(client: httpx.Client, resource: dict[str, Any]) -> None:
    r = client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
    assert r.status_code in (200, 201), r.text


def basic(id: str) -> dict[str, Any]:
    return {
        "resourceType": "Basic",
        "id": id,
        "code": {"coding": [{"system": "urn:cf", "code": "page"}]},
    }


def test_next_link_does_not_drift_when_others_write(client: httpx.Client) -> None:
    # Basic resources are this test's own: no other test searches them
    for n in (10, 20, 30, 40, 50):
        put(client, basic(f"b-{n}"))
    first = find(client, "Basic", "code=urn:cf|page&_sort=_id&_count=2")
    assert ordered_ids(first) == ["b-10", "b-20"]
    # a new match sorting before the page already read (an offset would now repeat b-20)
    put(client, basic("b-05"))
    second = follow(client, str(link(first, "next")))
    # the next page starts after b-20 whatever happened before it: no repeat, no gap
    assert ordered_ids(second) == ["b-30", "b-40"]
    third = follow(client, str(link(second, "next")))
    assert ordered_ids(third) == ["b-50"]


def test_includes_do_not_count_toward_count(client: httpx.Client) -> None:
    bundle = find(
        client,
        "Observation",
        "code=http://loinc.org|29463-7&_sort=_id&_count=2&_include=Observation:subject",
    )
    # wt-100-004 (bob) and wt-100-2 (eve) are the first two ids
    assert ordered_ids(bundle) == ["wt-100-004", "wt-100-2"]
    included = {e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "include"}
    assert included == {"pat-bob", "pat-eve"}
    # the next page includes what its own matches reference: wt-101 (anna), wt-150 (bob)
    second = follow(client, str(link(bundle, "next")))
    assert ordered_ids(second) == ["wt-101", "wt-150"]
    included = {e["resource"]["id"] for e in second["entry"] if e["search"]["mode"] == "include"}
    assert included == {"pat-anna", "pat-bob"}


def test_bad_count_is_400(client: httpx.Client) -> None:
    r = client.get("/Patient", params={"_count": "many"})
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"


# -- _total -------------------------------------------------------------------------


def test_total(client: httpx.Client) -> None:
    accurate = find(client, "Patient", "_total=accurate&_count=1")
    assert accurate["total"] == 5
    assert len(ordered_ids(accurate)) == 1
    assert find(client, "Patient", "gender=male&_total=accurate")["total"] == 2
    assert "total" not in find(client, "Patient", "_total=none")
    estimate = find(client, "Patient", "_total=estimate")
    assert isinstance(estimate.get("total", 0), int)
    assert client.get("/Patient", params={"_total": "lots"}).status_code == 400


# -- _summary and _elements ---------------------------------------------------------


def test_summary_count(client: httpx.Client) -> None:
    bundle = find(client, "Patient", "_summary=count")
    assert bundle["total"] == 5
    assert match_ids(bundle) == set()
    assert find(client, "Observation", "code=http://loinc.org|29463-7&_summary=count")["total"] == 7


def test_summary_true(client: httpx.Client) -> None:
    anna = only(client, "Patient", "_id=pat-anna&_summary=true")
    # summary elements stay, others (communication, the narrative) go
    for key in ("identifier", "name", "gender", "birthDate", "address", "managingOrganization"):
        assert key in anna, key
    assert "communication" not in anna
    assert "text" not in anna
    assert SUBSETTED in tags(anna)
    assert ("urn:tags", "vip") in tags(anna)


def test_summary_text(client: httpx.Client) -> None:
    anna = only(client, "Patient", "_id=pat-anna&_summary=text")
    # text, id, meta and the mandatory top-level elements (Patient has none)
    assert set(anna) <= {"resourceType", "id", "meta", "text"}
    assert "Anna likes gardening" in anna["text"]["div"]
    assert SUBSETTED in tags(anna)
    obs = only(client, "Observation", "_id=wt-60&_summary=text")
    # Observation.status and .code are mandatory (1..1)
    assert {"status", "code"} <= set(obs)
    assert "valueQuantity" not in obs


def test_summary_data_and_false(client: httpx.Client) -> None:
    data = only(client, "Patient", "_id=pat-anna&_summary=data")
    assert "text" not in data
    assert "communication" in data and "name" in data
    assert SUBSETTED in tags(data)
    full = only(client, "Patient", "_id=pat-anna&_summary=false")
    assert "text" in full and "communication" in full
    assert SUBSETTED not in tags(full)
    assert client.get("/Patient", params={"_summary": "some"}).status_code == 400


def test_elements(client: httpx.Client) -> None:
    anna = only(client, "Patient", "_id=pat-anna&_elements=gender,birthDate")
    assert anna["gender"] == "female" and anna["birthDate"] == "1980-06-15"
    assert anna["id"] == "pat-anna"
    for key in ("name", "address", "identifier", "text", "communication"):
        assert key not in anna, key
    assert SUBSETTED in tags(anna)
    obs = only(client, "Observation", "_id=wt-60&_elements=subject")
    assert obs["subject"] == {"reference": "Patient/pat-carl"}
    assert "valueQuantity" not in obs
