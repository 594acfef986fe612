"""Which stored references a reference search matches (search.html#reference): a local
criterion finds relative references and absolute ones under this server's base, never
another server's resource that happens to share the type and id."""

from __future__ import annotations

import uuid

import httpx

OTHER = "https://other.example.org/fhir"


def observations(client: httpx.Client, pid: str, tag: str) -> tuple[str, str, str]:
    """Observations whose subject is Patient/`pid` written three ways: relative,
    absolute under this server's base, and absolute on another server."""
    base = str(client.base_url).rstrip("/")
    ids = []
    for reference in (f"Patient/{pid}", f"{base}/Patient/{pid}", f"{OTHER}/Patient/{pid}"):
        body = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "urn:test:refs", "code": tag}]},
            "subject": {"reference": reference},
        }
        r = client.post("/Observation", json=body)
        assert r.status_code == 201, r.text
        ids.append(str(r.json()["id"]))
    return ids[0], ids[1], ids[2]


def test_local_criteria_do_not_match_other_servers(client: httpx.Client) -> None:
    pid, tag = uuid.uuid4().hex, uuid.uuid4().hex
    base = str(client.base_url).rstrip("/")
    relative, own, other = observations(client, pid, tag)

    def found(value: str, name: str = "subject") -> list[str]:
        bundle = client.get(
            "/Observation", params={name: value, "code": f"urn:test:refs|{tag}"}
        ).json()
        return sorted(e["resource"]["id"] for e in bundle.get("entry", []))

    assert found(f"Patient/{pid}") == sorted([relative, own])
    assert found(pid, "subject:Patient") == sorted([relative, own])
    assert found(pid) == sorted([relative, own])  # any type: still only local ones
    assert found(f"{base}/Patient/{pid}") == sorted([relative, own])
    assert found(f"{OTHER}/Patient/{pid}") == [other]


def test_chains_follow_only_local_references(client: httpx.Client) -> None:
    family = f"Fam{uuid.uuid4().hex[:10]}"
    created = client.post(
        "/Patient", json={"resourceType": "Patient", "name": [{"family": family}]}
    )
    relative, own, _ = observations(client, created.json()["id"], uuid.uuid4().hex)
    for name in ("subject:Patient.name", "subject.name", "patient.name"):
        bundle = client.get("/Observation", params={name: family}).json()
        assert sorted(e["resource"]["id"] for e in bundle["entry"]) == sorted([relative, own])
