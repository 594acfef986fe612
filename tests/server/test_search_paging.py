"""Searchset paging with keyset cursors, `_total`, and `_explain`, over HTTP on both backends.

Expected orders are computed here from the data each test writes: `_sort` keys in turn,
resources without a value after all others (for ascending and descending keys alike),
ties broken by creation order (the server's rid order, which the spec leaves to us).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.databases import backends
from tests.server.conftest import Server, running_server

Row = dict[str, Any]


def tag() -> str:
    return uuid.uuid4().hex[:12]


def patient(code: str, family: str | None = None, birth: str | None = None) -> Row:
    body: Row = {
        "resourceType": "Patient",
        "meta": {"tag": [{"system": "urn:paging", "code": code}]},
    }
    if family is not None:
        body["name"] = [{"family": family}]
    if birth is not None:
        body["birthDate"] = birth
    return body


def create(client: httpx.Client, body: Row) -> str:
    r = client.post(f"/{body['resourceType']}", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def link(bundle: Row, relation: str) -> str | None:
    return next((x["url"] for x in bundle.get("link", []) if x["relation"] == relation), None)


def matches(bundle: Row) -> list[Row]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def ids(bundle: Row) -> list[str]:
    return [r["id"] for r in matches(bundle)]


def get(url: str) -> Row:
    r = httpx.get(url, timeout=60)
    assert r.status_code == 200, r.text
    body: Row = r.json()
    return body


def walk(client: httpx.Client, params: dict[str, Any]) -> list[Row]:
    """Every page, following `next` from the first."""
    r = client.get("/Patient", params=params)
    assert r.status_code == 200, r.text
    pages = [r.json()]
    while (url := link(pages[-1], "next")) is not None:
        pages.append(get(url))
        assert len(pages) < 200
    return pages


def expected_order(rows: list[Row], keys: list[tuple[str, bool]]) -> list[str]:
    """Stable sorts from the last key to the first; missing values last on every key."""
    order = list(rows)  # creation order = the server's tie-breaker
    for field, descending in reversed(keys):
        present = [r for r in order if r[field] is not None]
        missing = [r for r in order if r[field] is None]
        order = sorted(present, key=lambda r: r[field], reverse=descending) + missing
    return [r["id"] for r in order]


# -- walking forward while others write --------------------------------------------------


def test_next_links_skip_nothing_while_others_write(client: httpx.Client) -> None:
    code = tag()
    before = [create(client, patient(code, f"fam{i:02}")) for i in range(40)]
    deleted: set[str] = set()
    updated: set[str] = set()
    created: list[str] = []
    seen: list[str] = []
    page = client.get("/Patient", params={"_tag": f"urn:paging|{code}", "_count": 6}).json()
    with httpx.Client(base_url=str(client.base_url), timeout=60) as other:
        n = 0
        while True:
            seen += ids(page)
            for r in matches(page):
                if r["id"] in updated:
                    assert r["meta"]["versionId"] == "2"  # the current version
            # the other client writes before the next page is fetched
            created.append(create(other, patient(code, "new")))
            upcoming = [p for p in before if p not in seen and p not in deleted | updated]
            if len(upcoming) > 4:
                victim, changed = upcoming[1], upcoming[3]
                assert other.delete(f"/Patient/{victim}").status_code == 204
                deleted.add(victim)
                r = other.put(f"/Patient/{changed}", json={**patient(code, "moved"), "id": changed})
                assert r.status_code == 200, r.text
                updated.add(changed)
            if n % 2 == 0 and seen:  # also touch resources already shown
                other.put(f"/Patient/{seen[0]}", json={**patient(code, "again"), "id": seen[0]})
                other.delete(f"/Patient/{seen[-1]}")
            url = link(page, "next")
            if url is None:
                break
            page = get(url)
            n += 1
    assert len(seen) == len(set(seen)), "a resource was shown twice"
    unchanged = [p for p in before if p not in deleted and p not in updated]
    assert [p for p in seen if p in unchanged] == unchanged  # each once, in rid order
    assert not deleted & set(seen)
    assert updated <= set(seen)  # updated before the walk reached them: shown once
    # Without _sort the order is creation order, so resources created during the walk come
    # after the boundary: all but the last one (created after the last page) were shown.
    assert [p for p in seen if p in created] == created[:-1]


def test_sorted_walk_with_writes_follows_the_stated_rule(client: httpx.Client) -> None:
    code = tag()
    rng = random.Random(7)
    rows = []
    for _ in range(30):
        family = rng.choice(["baker", "cole", "dunn", "ellis"])
        rows.append({"id": create(client, patient(code, family)), "family": family})
    query = {"_tag": f"urn:paging|{code}", "_sort": "family", "_count": 5}
    first = client.get("/Patient", params=query).json()
    shown = ids(first)
    upcoming = [r["id"] for r in rows if r["id"] not in shown]
    ahead, behind = upcoming[2], upcoming[4]
    with httpx.Client(base_url=str(client.base_url), timeout=60) as other:
        # moved to the end of the order: shown once, in its new version and position
        other.put(f"/Patient/{ahead}", json={**patient(code, "zzz"), "id": ahead})
        # moved before the page boundary: the walk has passed its new position
        other.put(f"/Patient/{behind}", json={**patient(code, "aaa"), "id": behind})
    rest: list[str] = []
    page = first
    last: list[Row] = []
    while (url := link(page, "next")) is not None:
        page = get(url)
        rest += ids(page)
        last = matches(page) or last
    seen = shown + rest
    assert len(seen) == len(set(seen))
    unchanged = [r for r in rows if r["id"] not in (ahead, behind)]
    assert [p for p in seen if p not in (ahead, behind)] == expected_order(
        unchanged, [("family", False)]
    )
    assert behind not in seen
    assert seen[-1] == ahead and last[-1]["meta"]["versionId"] == "2"


# -- order, previous, self and first --------------------------------------------------------


@pytest.fixture(scope="module")
def sort_data(server: Server) -> tuple[str, list[Row]]:
    """34 patients with tied and missing family names and birth dates."""
    rng = random.Random(11)
    code = tag()
    rows = []
    with httpx.Client(base_url=server.base, timeout=60) as c:
        for _ in range(34):
            family = rng.choice(["adams", "baker", "baker", "cole", None])
            birth = rng.choice(["1975-06-30", "1980-01-01", "1980-01-01", "1990-12-31", None])
            rows.append(
                {
                    "id": create(c, patient(code, family, birth)),
                    "family": family,
                    "birthdate": birth,
                }
            )
    return code, rows


@pytest.mark.parametrize(
    "sort",
    ["", "family", "-family", "family,-birthdate", "-birthdate,family", "birthdate,-family"],
)
def test_sort_order_across_pages_and_back(
    client: httpx.Client, sort_data: tuple[str, list[Row]], sort: str
) -> None:
    code, rows = sort_data
    keys = [(k.lstrip("-"), k.startswith("-")) for k in sort.split(",") if k]
    params: dict[str, Any] = {"_tag": f"urn:paging|{code}", "_count": 4}
    if sort:
        params["_sort"] = sort
    pages = walk(client, params)
    assert [len(ids(p)) for p in pages] == [4] * 8 + [2]
    assert [i for p in pages for i in ids(p)] == expected_order(rows, keys)
    assert link(pages[0], "previous") is None and link(pages[-1], "next") is None
    for p in pages:  # self is the page served, first the first page
        assert ids(get(str(link(p, "self")))) == ids(p)
        assert ids(get(str(link(p, "first")))) == ids(pages[0])
    # previous walks back exactly, to the first page
    back = [pages[-1]]
    while (url := link(back[-1], "previous")) is not None:
        back.append(get(url))
    assert [ids(p) for p in reversed(back)] == [ids(p) for p in pages]
    # and next from a page reached backwards goes forward again
    assert ids(get(str(link(back[2], "next")))) == ids(back[1])


def test_offset_is_accepted_but_links_use_cursors(
    client: httpx.Client, sort_data: tuple[str, list[Row]]
) -> None:
    code, rows = sort_data
    order = expected_order(rows, [("family", False)])
    params = {"_tag": f"urn:paging|{code}", "_sort": "family", "_count": 5, "_offset": 5}
    page = client.get("/Patient", params=params).json()
    assert ids(page) == order[5:10]
    nxt, prev = str(link(page, "next")), str(link(page, "previous"))
    assert "_cursor=" in nxt and "_offset" not in nxt and "_offset" not in prev
    assert ids(get(nxt)) == order[10:15]
    assert ids(get(prev)) == order[:5]


def test_count_zero_and_includes_per_page(client: httpx.Client) -> None:
    code = tag()
    owners = [create(client, patient(code, f"owner{i}")) for i in range(2)]
    for i in range(5):
        obs = {
            "resourceType": "Observation",
            "meta": {"tag": [{"system": "urn:paging", "code": code}]},
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": f"Patient/{owners[i % 2]}"},
        }
        create(client, obs)
    params = {"_tag": f"urn:paging|{code}", "_count": 2, "_include": "Observation:subject"}
    page = client.get("/Observation", params=params).json()
    pages = [page]
    while (url := link(pages[-1], "next")) is not None:
        pages.append(get(url))
    assert [len(matches(p)) for p in pages] == [2, 2, 1]
    for p in pages:  # each page includes the patients of its own matches, uncounted
        wanted = {r["subject"]["reference"].split("/")[1] for r in matches(p)}
        included = [e["resource"]["id"] for e in p["entry"] if e["search"]["mode"] == "include"]
        assert sorted(included) == sorted(wanted)
    zero = client.get("/Observation", params={"_tag": f"urn:paging|{code}", "_count": 0}).json()
    assert "entry" not in zero and "total" not in zero and link(zero, "next") is None


# -- _total --------------------------------------------------------------------------------


def test_total_variants(client: httpx.Client) -> None:
    code = tag()
    for i in range(12):
        create(client, patient(code, f"t{i}"))

    def search(**extra: Any) -> Row:
        r = client.get("/Patient", params={"_tag": f"urn:paging|{code}", "_count": 5, **extra})
        assert r.status_code == 200, r.text
        body: Row = r.json()
        return body

    assert "total" not in search()  # never a count nobody asked for
    assert "total" not in search(_total="none")
    assert search(_total="accurate")["total"] == 12
    assert search(_total="estimate")["total"] == 12  # small sets are counted exactly
    counted = search(_summary="count")
    assert counted["total"] == 12 and "entry" not in counted and link(counted, "next") is None
    assert search(_count=0, _total="accurate")["total"] == 12
    # the total is the list's, on every page
    second = get(str(link(search(_total="accurate"), "next")))
    assert second["total"] == 12 and len(ids(second)) == 5
    bad = client.get("/Patient", params={"_total": "roughly"})
    assert bad.status_code == 400


# -- cursors that are not ours -------------------------------------------------------------


def cursor_of(url: str) -> str:
    return str(httpx.URL(url).params["_cursor"])


def test_tampered_or_replayed_cursor_is_400(client: httpx.Client) -> None:
    code, other = tag(), tag()
    for i in range(6):
        create(client, patient(code, f"c{i}"))
    base = {"_tag": f"urn:paging|{code}", "_count": 2, "_sort": "family"}
    cursor = cursor_of(str(link(client.get("/Patient", params=base).json(), "next")))
    body, _, check = cursor.partition(".")
    flipped = body[:-3] + ("A" if body[-3] != "A" else "B") + body[-2:]
    attempts = {
        "altered": f"{flipped}.{check}",
        "garbage": "not-a-cursor",
        "truncated": body,
    }
    for name, bad in attempts.items():
        r = client.get("/Patient", params={**base, "_cursor": bad})
        assert r.status_code == 400, name
        assert r.json()["issue"][0]["expression"] == ["_cursor"], name
    # replayed on another search: other criteria, or another sort
    for changed in ({"_tag": f"urn:paging|{other}"}, {"_sort": "-family"}, {"_sort": ""}):
        r = client.get("/Patient", params={**base, **changed, "_cursor": cursor})
        assert r.status_code == 400, changed
        assert r.json()["issue"][0]["expression"] == ["_cursor"]
    r = client.get("/Observation", params={"_cursor": cursor})
    assert r.status_code == 400
    # the page size is not part of the list: a cursor keeps working with another _count
    r = client.get("/Patient", params={**base, "_count": 3, "_cursor": cursor})
    assert r.status_code == 200 and len(ids(r.json())) == 3


# -- _explain --------------------------------------------------------------------------------


def test_explain_is_unknown_without_the_setting(client: httpx.Client) -> None:
    r = client.get("/Patient", params={"_explain": "true", "_count": 1})
    assert r.status_code == 200
    outcome = [e["resource"] for e in r.json()["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome and any("_explain" in i["diagnostics"] for i in outcome[0]["issue"])
    assert not any("SQL" in i["diagnostics"] for i in outcome[0]["issue"])
    strict = client.get(
        "/Patient", params={"_explain": "true"}, headers={"Prefer": "handling=strict"}
    )
    assert strict.status_code == 400


@pytest.fixture(scope="module", params=backends())
def debug_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("debug")
    with running_server(request.param, folder, "--debug-search", "--log-level", "debug") as server:
        yield server.base, folder / "server.log"


def test_explain_with_the_setting(debug_server: tuple[str, Path]) -> None:
    base, log = debug_server
    secret = f"zq{tag()}"
    with httpx.Client(base_url=base, timeout=60) as c:
        create(c, patient("x", secret))
        params = {"family": secret, "_sort": "-birthdate", "_explain": "true"}
        r = c.get("/Patient", params=params)
        assert r.status_code == 200, r.text
        bundle = r.json()
        assert len(ids(bundle)) == 1
        outcome = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
        info = [i for i in outcome[0]["issue"] if i["severity"] == "information"]
        text = info[0]["diagnostics"]
        assert "SELECT" in text and "idx_string" in text
        plan = text.split("Plan", 1)[1]
        assert any(word in plan for word in ("SCAN", "SEARCH", "Scan", "cost="))
        assert secret in text  # the requester sent the value: it may see it
        assert c.get("/Patient", params={"_explain": "maybe"}).status_code == 400
        quiet = c.get("/Patient", params={"family": secret, "_explain": "false"}).json()
        assert not [e for e in quiet["entry"] if e["search"]["mode"] == "outcome"]
    assert secret not in log.read_text(errors="replace")  # never in the server's log
