"""Full-text search: `_text` (the narrative) and `_content` (all text), both backends.

The matching rule under test (fhir/search_text.py, documented in the
CapabilityStatement): words are runs of letters and digits, case and accents ignored;
a value matches when each of its words starts a word of the text; commas OR values,
repeated parameters AND them. Every word here carries a per-test random tag, so the
tests share one server without seeing each other's resources.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

XHTML = 'xmlns="http://www.w3.org/1999/xhtml"'


def tag() -> str:
    return "t" + uuid.uuid4().hex[:10]


def create(client: httpx.Client, resource: dict[str, Any]) -> str:
    r = client.post(f"/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def basic(text: str, div: str | None = None, **more: Any) -> dict[str, Any]:
    """A Basic whose only text is `code.text` (and the narrative `div`, if given)."""
    body: dict[str, Any] = {"resourceType": "Basic", "code": {"text": text}, **more}
    if div is not None:
        body["text"] = {"status": "generated", "div": f"<div {XHTML}>{div}</div>"}
    return body


def found(client: httpx.Client, path: str, params: Any) -> set[str]:
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["resourceType"] == "Bundle"
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


def unsupported(bundle: dict[str, Any]) -> str:
    """The text of the searchset's OperationOutcome entry (parameters not answered)."""
    return " ".join(
        str(e["resource"]) for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"
    )


def test_narrative_words_against_data_words(client: httpx.Client) -> None:
    t = tag()
    div = (
        f"<p>Seen for <b>hyper</b>{t}tension; caf&eacute;{t} &amp; more</p>"
        f"<table><tr><td>left{t}</td><td>right{t}</td></tr></table>"
    )
    pid = create(
        client,
        {
            "resourceType": "Patient",
            "text": {"status": "generated", "div": f"<div {XHTML}>{div} narr{t}</div>"},
            "name": [{"family": f"data{t}", "given": [f"Zoë{t}"]}],
            "birthDate": "1970-01-01",
        },
    )
    # words of the narrative: both parameters find them
    assert found(client, "/Patient", {"_text": f"narr{t}"}) == {pid}
    assert found(client, "/Patient", {"_content": f"narr{t}"}) == {pid}
    # words only in the data: _content only
    assert found(client, "/Patient", {"_text": f"data{t}"}) == set()
    assert found(client, "/Patient", {"_content": f"data{t}"}) == {pid}
    # inline tags join words, block tags separate them, entities are decoded
    assert found(client, "/Patient", {"_text": f"hyper{t}tension"}) == {pid}
    assert found(client, "/Patient", {"_text": f"left{t}right{t}"}) == set()
    assert found(client, "/Patient", {"_text": f"right{t}"}) == {pid}
    assert found(client, "/Patient", {"_text": f"CAFE{t}"}) == {pid}
    assert found(client, "/Patient", {"_text": f"Café{t}"}) == {pid}
    # the markup itself is not text
    assert found(client, "/Patient", {"_text": f"table narr{t}"}) == set()
    # case and accents do not matter, in the data either
    assert found(client, "/Patient", {"_content": f"ZOE{t}"}) == {pid}
    assert found(client, "/Patient", {"_content": f"zoë{t}"}) == {pid}
    # another type's search does not see the Patient
    assert found(client, "/Basic", {"_content": f"data{t}"}) == set()


def test_words_and_prefixes_and_or(client: httpx.Client) -> None:
    t = tag()
    one = create(client, basic(f"{t}alpha {t}beta near"))
    two = create(client, basic(f"{t}alpha, {t}gamma!"))
    assert found(client, "/Basic", {"_content": f"{t}alpha"}) == {one, two}
    # every word of a value must occur, in any order
    assert found(client, "/Basic", {"_content": f"{t}beta {t}alpha"}) == {one}
    assert found(client, "/Basic", {"_content": f"{t}beta {t}gamma"}) == set()
    # commas OR values; repeated parameters AND them
    assert found(client, "/Basic", {"_content": f"{t}beta,{t}gamma"}) == {one, two}
    assert found(client, "/Basic", [("_content", f"{t}alpha"), ("_content", f"{t}gamma")]) == {two}
    # a word matches words it starts, not words it is inside of
    assert found(client, "/Basic", {"_content": f"{t}al"}) == {one, two}
    assert found(client, "/Basic", {"_content": f"{t}ga"}) == {two}
    assert found(client, "/Basic", {"_content": f"{t[1:]}alpha"}) == set()
    assert found(client, "/Basic", {"_content": f"{t}alphabet"}) == set()


def test_updates_replace_and_deletes_remove_the_text(client: httpx.Client) -> None:
    t = tag()
    bid = create(client, basic(f"{t}old", div=f"{t}oldstory"))
    assert found(client, "/Basic", {"_content": f"{t}old"}) == {bid}
    assert found(client, "/Basic", {"_text": f"{t}oldstory"}) == {bid}
    r = client.put(f"/Basic/{bid}", json={**basic(f"{t}new", div=f"{t}newstory"), "id": bid})
    assert r.status_code == 200, r.text
    assert found(client, "/Basic", {"_content": f"{t}old"}) == set()
    assert found(client, "/Basic", {"_text": f"{t}oldstory"}) == set()
    assert found(client, "/Basic", {"_content": f"{t}new"}) == {bid}
    assert found(client, "/Basic", {"_text": f"{t}newstory"}) == {bid}
    # an update without a narrative leaves no narrative words
    r = client.put(f"/Basic/{bid}", json={**basic(f"{t}new"), "id": bid})
    assert r.status_code == 200, r.text
    assert found(client, "/Basic", {"_text": f"{t}newstory"}) == set()
    assert found(client, "/Basic", {"_content": f"{t}newstory"}) == set()
    assert client.delete(f"/Basic/{bid}").status_code in (200, 204)
    assert found(client, "/Basic", {"_content": f"{t}new"}) == set()
    # a transaction's PATCH re-indexes the text as well
    pid = create(client, basic(f"{t}before"))
    patch = [{"op": "replace", "path": "/code/text", "value": f"{t}after"}]
    r = client.patch(
        f"/Basic/{pid}", json=patch, headers={"Content-Type": "application/json-patch+json"}
    )
    assert r.status_code == 200, r.text
    assert found(client, "/Basic", {"_content": f"{t}before"}) == set()
    assert found(client, "/Basic", {"_content": f"{t}after"}) == {pid}


def test_what_content_covers(client: httpx.Client) -> None:
    t = tag()
    oid = create(
        client,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {
                "coding": [
                    {"system": f"http://{t}sys.example", "code": f"{t}code", "display": f"{t}disp"}
                ],
            },
            "subject": {"reference": f"Patient/{t}ref", "display": f"{t}who"},
            "note": [{"text": f"**{t}markdown** note"}],
            "effectiveDateTime": "2031-05-06",
            "valueString": f"{t}value",
        },
    )
    for word in ("code", "disp", "who", "markdown", "value"):
        assert found(client, "/Observation", {"_content": f"{t}{word}"}) == {oid}, word
    # identifiers and machinery are not text: references, systems, urls, dates
    for word in ("ref", "sys"):
        assert found(client, "/Observation", {"_content": f"{t}{word}"}) == set(), word
    assert found(client, "/Observation", {"_content": f"2031 {t}value"}) == set()


def test_query_syntax_is_never_interpreted(client: httpx.Client) -> None:
    t = tag()
    one = create(client, basic(f"{t}alpha {t}beta near"))
    two = create(client, basic(f"{t}alpha {t}gamma"))
    both = {one, two}
    cases: dict[str, set[str]] = {
        # quotes, stars, minus, parentheses, colons separate words
        f'"{t}alpha': both,
        f'{t}alpha"': both,
        f"'{t}alpha": both,
        f"{t}al*": both,
        f"-{t}beta": {one},
        f"({t}beta": {one},
        f"words:{t}alpha": set(),  # "words" is a word the text lacks (not a column)
        f"{t}alpha NEAR({t}beta": {one},  # "near" is a word, in `one` only
        f"{t}alpha OR {t}gamma": set(),  # "or" is a word, in neither
        f"{t}alpha AND {t}gamma": set(),
        f"{t}alpha NOT {t}gamma": set(),
        f"{t}alpha & {t}gamma": {two},
        f"{t}alpha | {t}beta": {one},
        f"{t}alpha !{t}beta": {one},
        f"{t}alpha:* | x": set(),
        f"{t}alpha \\ {t}gamma": {two},  # an escaped space is a space
        f"{t}alpha^{t}gamma": {two},
        f"{t}alpha_{t}gamma": {two},
        # nothing but syntax: no words, no match
        "*": set(),
        '"': set(),
        "(*)": set(),
        '"")*(-:': set(),
    }
    for value, expected in cases.items():
        assert found(client, "/Basic", {"_content": value}) == expected, value
    # values far longer than any word: no error, no match
    assert found(client, "/Basic", {"_content": f"{t}alpha " + "x" * 10_000}) == set()
    many = " ".join(f"{t}w{i}" for i in range(600))  # ~9 KB of distinct words
    assert found(client, "/Basic", {"_content": many}) == set()
    assert found(client, "/Basic", {"_content": f"{t}alpha " + "a" * 250}) == set()


def test_long_words_still_match(client: httpx.Client) -> None:
    t = tag()
    word = t + "z" * 500  # longer than the longest stored word
    bid = create(client, basic(word))
    assert found(client, "/Basic", {"_content": word}) == {bid}
    assert found(client, "/Basic", {"_content": t + "z" * 100}) == {bid}


def test_modifiers_are_rejected(client: httpx.Client) -> None:
    for name in ("_content:missing", "_text:missing", "_content:exact", "_text:contains"):
        r = client.get("/Basic", params={name: "true"})
        assert r.status_code == 400, (name, r.text)
        outcome = r.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert any(name in e for i in outcome["issue"] for e in i.get("expression", [])), name


def test_parameters_are_understood(client: httpx.Client) -> None:
    t = tag()
    bid = create(client, basic(f"{t}strict", div=f"{t}strict"))
    for name in ("_text", "_content"):
        r = client.get("/Basic", params={name: f"{t}strict"}, headers={"Prefer": "handling=strict"})
        assert r.status_code == 200, r.text
        r = client.get("/Basic", params={name: f"{t}strict"})
        assert name not in unsupported(r.json())
        assert {
            e["resource"]["id"] for e in r.json()["entry"] if e["search"]["mode"] == "match"
        } == {bid}


def test_system_and_compartment_search(client: httpx.Client) -> None:
    t = tag()
    pid = create(client, {"resourceType": "Patient", "name": [{"family": f"{t}shared"}]})
    other = create(client, {"resourceType": "Patient", "name": [{"family": f"{t}other"}]})

    def observation(patient_id: str) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": f"{t}shared"},
            "subject": {"reference": f"Patient/{patient_id}"},
        }

    obs = create(client, observation(pid))
    elsewhere = create(client, observation(other))
    bid = create(client, basic(f"{t}shared"))
    assert found(client, "", {"_content": f"{t}shared"}) == {pid, obs, elsewhere, bid}
    assert found(client, "", {"_content": f"{t}shared", "_type": "Observation,Basic"}) == {
        obs,
        elsewhere,
        bid,
    }
    assert found(client, f"/Patient/{pid}/Observation", {"_content": f"{t}shared"}) == {obs}
    assert found(client, f"/Patient/{pid}/*", {"_content": f"{t}shared"}) == {pid, obs}
    # in chains and _has, on the resources at the other end
    chained = {"subject:Patient._content": f"{t}shared"}
    assert found(client, "/Observation", chained) == {obs}
    has = {"_has:Observation:subject:_content": f"{t}shared", "_content": f"{t}other"}
    assert found(client, "/Patient", has) == {other}


def test_capability_statement_lists_them(client: httpx.Client) -> None:
    cs = client.get("/metadata").json()
    by_type = {r["type"]: r for r in cs["rest"][0]["resource"]}
    for type_name in ("Patient", "Observation", "Basic"):
        params = {p["name"]: p for p in by_type[type_name]["searchParam"]}
        assert params["_text"]["type"] == "string"
        assert params["_content"]["type"] == "string"
        assert (
            params["_content"]["definition"]
            == "http://hl7.org/fhir/SearchParameter/Resource-content"
        )
    # _text is defined on DomainResource: a Bundle has _content only
    bundle_params = {p["name"] for p in by_type["Bundle"]["searchParam"]}
    assert "_content" in bundle_params and "_text" not in bundle_params
