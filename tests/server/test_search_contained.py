"""Searching contained resources: `_contained` and `_containedType`, both backends.

The rules under test (http://hl7.org/fhir/R4/search.html#contained): by default a
search sees only resources that are not contained; `_contained=true` searches only
contained resources, `both` both kinds, `false` (the default) neither changes.
`_containedType=container` (the default) returns the container resources,
`contained` the contained resources themselves, each with the fullUrl of its
container plus `#` and its id. Every value carries a per-test random system, so the
tests share one server without seeing each other's resources.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx


def system() -> str:
    return f"urn:test:{uuid.uuid4().hex[:12]}"


def create(client: httpx.Client, resource: dict[str, Any]) -> str:
    r = client.post(f"/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def medication(cid: str, sys: str, code: str, **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Medication",
        "id": cid,
        "code": {"coding": [{"system": sys, "code": code}]},
        **more,
    }


def prescription(*meds: dict[str, Any]) -> dict[str, Any]:
    """A MedicationRequest containing `meds`: the first is its medication, the others
    are referenced from an extension (a contained resource must be referenced)."""
    body: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/example"},
        "contained": list(meds),
        "medicationReference": {"reference": f"#{meds[0]['id']}"},
    }
    if len(meds) > 1:
        body["extension"] = [
            {"url": "urn:test:also", "valueReference": {"reference": f"#{m['id']}"}}
            for m in meds[1:]
        ]
    return body


def search(client: httpx.Client, path: str, params: Any) -> dict[str, Any]:
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def matches(bundle: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (e["resource"]["resourceType"], e["resource"]["id"])
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == "match"
    }


def full_urls(bundle: dict[str, Any]) -> set[str]:
    return {e["fullUrl"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


def outcome(bundle: dict[str, Any]) -> str:
    return " ".join(
        str(e["resource"]) for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"
    )


def test_contained_true_false_both_and_contained_type(client: httpx.Client) -> None:
    s = system()
    mr1 = create(client, prescription(medication("m1", s, "A")))
    create(client, prescription(medication("m1", s, "B")))
    top = create(client, medication("x", s, "A"))  # a top-level Medication (its id replaced)
    code = {"code": f"{s}|A"}
    base = str(client.base_url).rstrip("/")

    assert matches(search(client, "/Medication", code)) == {("Medication", top)}
    default = search(client, "/Medication", {**code, "_contained": "false"})
    assert matches(default) == {("Medication", top)}
    assert "_contained" not in outcome(default)

    # true: only contained resources; the container is returned by default
    contained = search(client, "/Medication", {**code, "_contained": "true"})
    assert matches(contained) == {("MedicationRequest", mr1)}
    assert full_urls(contained) == {f"{base}/MedicationRequest/{mr1}"}
    assert outcome(contained) == ""
    explicit = {**code, "_contained": "true", "_containedType": "container"}
    assert matches(search(client, "/Medication", explicit)) == {("MedicationRequest", mr1)}

    # the contained resource itself, named by its container's URL + #id
    alone = search(
        client, "/Medication", {**code, "_contained": "true", "_containedType": "contained"}
    )
    assert matches(alone) == {("Medication", "m1")}
    assert full_urls(alone) == {f"{base}/MedicationRequest/{mr1}#m1"}
    (entry,) = alone["entry"]
    assert entry["resource"]["code"]["coding"][0] == {"system": s, "code": "A"}

    both = search(client, "/Medication", {**code, "_contained": "both"})
    assert matches(both) == {("Medication", top), ("MedicationRequest", mr1)}
    both_alone = search(
        client, "/Medication", {**code, "_contained": "both", "_containedType": "contained"}
    )
    assert full_urls(both_alone) == {
        f"{base}/Medication/{top}",
        f"{base}/MedicationRequest/{mr1}#m1",
    }

    # the other code and no code
    other = {"code": f"{s}|B", "_contained": "true", "_total": "accurate"}
    found = search(client, "/Medication", other)
    assert len(matches(found)) == 1 and found["total"] == 1
    assert matches(search(client, "/Medication", {"code": f"{s}|C", "_contained": "true"})) == set()
    counted = {"code": f"{s}|A", "_contained": "both", "_summary": "count"}
    assert search(client, "/Medication", counted)["total"] == 2  # Medication top, in mr1


def test_contained_patient_of_an_observation(client: httpx.Client) -> None:
    family = "Zq" + uuid.uuid4().hex[:10]
    obs = create(
        client,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "weight"},
            "contained": [{"resourceType": "Patient", "id": "p1", "name": [{"family": family}]}],
            "subject": {"reference": "#p1"},
        },
    )
    assert matches(search(client, "/Patient", {"name": family})) == set()
    found = search(client, "/Patient", {"name": family, "_contained": "true"})
    assert matches(found) == {("Observation", obs)}
    by_id = {"name": family, "_id": "p1", "_contained": "true", "_containedType": "contained"}
    assert matches(search(client, "/Patient", by_id)) == {("Patient", "p1")}
    other_id = {"name": family, "_id": "p2", "_contained": "true"}
    assert matches(search(client, "/Patient", other_id)) == set()
    # the Observation's own parameters are not the contained Patient's
    assert matches(search(client, "/Observation", {"code:text": "weight", "_id": obs})) == {
        ("Observation", obs)
    }
    assert matches(search(client, "/Patient", {"family": family, "_contained": "both"})) == {
        ("Observation", obs)
    }


def test_and_holds_on_one_contained_resource(client: httpx.Client) -> None:
    s = system()
    mr = create(
        client,
        prescription(
            medication("m1", s, "A", status="active"),
            medication("m2", s, "B", status="inactive"),
        ),
    )
    found = {("MedicationRequest", mr)}

    def contained(params: dict[str, str] | list[tuple[str, str]]) -> set[tuple[str, str]]:
        pairs = list(params.items()) if isinstance(params, dict) else params
        return matches(search(client, "/Medication", [*pairs, ("_contained", "true")]))

    assert contained({"code": f"{s}|A", "status": "active"}) == found
    assert contained({"code": f"{s}|B", "status": "inactive"}) == found
    # each condition holds for one of the two, never both for the same one
    assert contained({"code": f"{s}|A", "status": "inactive"}) == set()
    assert contained([("code", f"{s}|A"), ("code", f"{s}|B")]) == set()
    assert contained({"code": f"{s}|A,{s}|B"}) == found  # OR within one parameter
    # :not and :missing are judged per contained resource too
    assert contained({"code": f"{s}|A", "status:not": "active"}) == set()
    assert contained({"code": f"{s}|B", "status:not": "active"}) == found
    assert contained({"code": f"{s}|A", "form:missing": "true"}) == found
    assert contained({"code": f"{s}|A", "form:missing": "false"}) == set()
    alone = search(
        client,
        "/Medication",
        {"code": f"{s}|A,{s}|B", "_contained": "true", "_containedType": "contained"},
    )
    assert matches(alone) == {("Medication", "m1"), ("Medication", "m2")}


def test_update_and_delete_of_the_container(client: httpx.Client) -> None:
    s = system()
    body = prescription(medication("m1", s, "A"))
    mr = create(client, body)
    params = {"code": f"{s}|A", "_contained": "true"}
    assert matches(search(client, "/Medication", params)) == {("MedicationRequest", mr)}

    # another code in the contained Medication: the old one stops matching
    changed = {**prescription(medication("m1", s, "B")), "id": mr}
    assert client.put(f"/MedicationRequest/{mr}", json=changed).status_code == 200
    assert matches(search(client, "/Medication", params)) == set()
    moved = {"code": f"{s}|B", "_contained": "true"}
    assert matches(search(client, "/Medication", moved)) == {("MedicationRequest", mr)}

    # no contained resource any more
    plain = {**changed, "medicationCodeableConcept": {"text": "aspirin"}}
    del plain["contained"], plain["medicationReference"]
    assert client.put(f"/MedicationRequest/{mr}", json=plain).status_code == 200
    assert matches(search(client, "/Medication", moved)) == set()

    # contained again, then deleted
    assert client.put(f"/MedicationRequest/{mr}", json=changed).status_code == 200
    assert matches(search(client, "/Medication", moved)) == {("MedicationRequest", mr)}
    assert client.delete(f"/MedicationRequest/{mr}").status_code in (200, 204)
    assert matches(search(client, "/Medication", moved)) == set()
    both = search(client, "/Medication", {**moved, "_contained": "both"})
    assert matches(both) == set()


def test_top_level_searches_never_see_contained_values(client: httpx.Client) -> None:
    s = system()
    tagged = medication("m1", s, "A", meta={"tag": [{"system": s, "code": "t"}]})
    mr = create(client, prescription(tagged))
    tag = {"_tag": f"{s}|t"}
    assert matches(search(client, "/", tag)) == set()  # system level
    assert matches(search(client, "/", {**tag, "_type": "Medication,MedicationRequest"})) == set()
    assert matches(search(client, "/MedicationRequest", tag)) == set()
    assert matches(search(client, "/Medication", tag)) == set()
    assert matches(search(client, "/MedicationRequest", {"code": f"{s}|A"})) == set()
    assert matches(search(client, "/Medication", {**tag, "_contained": "true"})) == {
        ("MedicationRequest", mr)
    }
    # :missing on a top-level search counts the container's own values only
    missing = {"_id": mr, "medication:missing": "true"}
    assert matches(search(client, "/MedicationRequest", missing)) == set()


def test_paging_walks_every_match_once(client: httpx.Client) -> None:
    s = system()
    made = {create(client, prescription(medication(f"m{i}", s, "A"))) for i in range(3)}
    for kind in ("container", "contained"):
        seen: list[str] = []
        params: dict[str, str] | None = {
            "code": f"{s}|A",
            "_contained": "true",
            "_containedType": kind,
            "_count": "2",
        }
        url = "/Medication"
        pages = 0
        while url:
            r = client.get(url, params=params)
            assert r.status_code == 200, r.text
            bundle = r.json()
            seen += sorted(full_urls(bundle))
            nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
            url, params = (nxt[0], None) if nxt else ("", None)
            pages += 1
        assert pages == 2
        assert len(seen) == 3 and len(set(seen)) == 3
        assert {u.split("/MedicationRequest/")[1].split("#")[0] for u in seen} == made


def test_what_contained_searches_do_not_answer(client: httpx.Client) -> None:
    s = system()
    for params in (
        {"code": f"{s}|A", "_contained": "true", "_sort": "code"},
        {"_contained": "true", "_include": "Medication:manufacturer"},
        {"_contained": "true", "manufacturer.name": "acme"},
        {"_contained": "true", "_text": "aspirin"},
    ):
        r = client.get("/Medication", params=params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
    assert client.get("/", params={"_tag": f"{s}|t", "_contained": "true"}).status_code == 400
    r = client.get("/Medication", params={"_contained": "maybe"})
    assert r.status_code == 400 and "_contained" in r.text
    r = client.get("/Medication", params={"_containedType": "other"})
    assert r.status_code == 400 and "_containedType" in r.text


def test_reindex_rebuilds_contained_rows(client: httpx.Client) -> None:
    s = system()
    code = "x-strength-" + uuid.uuid4().hex[:8]
    mr = create(client, prescription(medication("m1", s, "A", status="entered-in-error")))
    param = {
        "resourceType": "SearchParameter",
        "url": f"http://example.org/fhir/SearchParameter/{code}",
        "name": code.replace("-", "_"),
        "status": "active",
        "description": "test parameter on Medication.status",
        "code": code,
        "base": ["Medication"],
        "type": "token",
        "expression": "Medication.status",
    }
    create(client, param)
    params = {code: "entered-in-error", "_contained": "true"}
    # written before the parameter existed: not indexed under it yet
    assert matches(search(client, "/Medication", params)) == set()
    r = client.post("/MedicationRequest/$reindex")
    assert r.status_code == 200, r.text
    assert matches(search(client, "/Medication", params)) == {("MedicationRequest", mr)}
    # the built-in parameters of the contained resource survive the reindex
    assert matches(search(client, "/Medication", {"code": f"{s}|A", "_contained": "true"})) == {
        ("MedicationRequest", mr)
    }


def test_contained_resources_without_search_values(client: httpx.Client) -> None:
    bare = [{"resourceType": "Medication", "id": f"b{i}"} for i in range(3)]
    mr = create(client, prescription(*bare))  # each is found by its id all the same
    params = {"_id": "b1", "_contained": "true", "_containedType": "contained"}
    found = search(client, "/Medication", params)
    assert (("Medication", "b1") in matches(found)) and all(
        u.endswith("#b1") for u in full_urls(found)
    )
    mine = {**params, "_id": "b0,b2", "_containedType": "container"}
    assert ("MedicationRequest", mr) in matches(search(client, "/Medication", mine))


def test_chains_look_inside_contained_resources(client: httpx.Client) -> None:
    """search.html#contained: `MedicationRequest?medication.code=…` finds a request
    whose medication is a contained one — a chain is evaluated inside it."""
    sys = system()
    inside = create(client, prescription(medication("m1", sys, "abc")))
    other = create(client, prescription(medication("m1", sys, "xyz")))
    top_level = medication("unused", sys, "abc")
    del top_level["id"]  # a stored Medication, not a contained one
    stored = create(client, top_level)
    by_reference = create(
        client,
        {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "subject": {"reference": "Patient/example"},
            "medicationReference": {"reference": f"Medication/{stored}"},
        },
    )

    def ids(value: str, name: str = "medication.code") -> set[str]:
        bundle = search(client, "/MedicationRequest", {name: value})
        return {e["resource"]["id"] for e in bundle.get("entry", [])}

    # both the stored Medication and the contained one count; xyz matches neither
    assert ids(f"{sys}|abc") == {inside, by_reference}
    assert ids(f"{sys}|xyz") == {other}
    assert ids(f"{sys}|abc", "medication:Medication.code") == {inside, by_reference}
    # AND with an ordinary parameter: the chain is a check on the other's candidates
    both = search(
        client,
        "/MedicationRequest",
        {"medication.code": f"{sys}|abc", "_id": inside},
    )
    assert [e["resource"]["id"] for e in both["entry"]] == [inside]
