"""Every search the US Core server CapabilityStatement names works (SHALL, SHOULD, MAY).

For each resource type, each search parameter and each search-parameter combination it
lists, the test takes a stored resource that has values for them, works the search
values out of that resource independently — evaluating the parameter's own FHIRPath
expression from the US Core / R4 SearchParameter with fhirpathpy, not with the
server's compiler — and checks the search finds it, with no parameter reported as
unknown. The data: the bundled demo patients plus one resource of each type they lack.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import fhirpathpy
import httpx
import pytest
from fhirpathpy.models import models

from tests.server.conftest import Server
from tests.server.launcher import run_openrecord
from tests.server.us_core_data import us_core_extras
from tests.shared_data import require_shared

EXPECTATION = "http://hl7.org/fhir/StructureDefinition/capabilitystatement-expectation"
COMBINATION = (
    "http://hl7.org/fhir/StructureDefinition/capabilitystatement-search-parameter-combination"
)


# values no test resource has, per parameter type
NO_MATCH = {
    "token": "urn:test:none|none",
    "reference": "Patient/no-such-patient",
    "date": "1800-01-01",
    "string": "zzzqqq",
}


@cache
def us_core_folder() -> Path:
    return require_shared("us-core", "resources")


@cache
def r4_expressions() -> dict[str, str]:
    bundle = json.loads(require_shared("fhir-r4", "search-parameters.json").read_text())
    return {e["resource"]["url"]: e["resource"].get("expression", "") for e in bundle["entry"]}


def searches() -> list[tuple[str, tuple[str, ...]]]:
    """(type, parameter names) for every single parameter and every combination."""
    cs = json.loads((us_core_folder() / "CapabilityStatement-us-core-server.json").read_text())
    out: list[tuple[str, tuple[str, ...]]] = []
    for r in cs["rest"][0]["resource"]:
        for sp in r.get("searchParam", []):
            out.append((r["type"], (sp["name"],)))
        for ext in r.get("extension", []):
            if ext["url"] == COMBINATION:
                names = tuple(e["valueString"] for e in ext["extension"] if e["url"] == "required")
                out.append((r["type"], names))
    return out


@cache
def definitions() -> dict[tuple[str, str], dict[str, Any]]:
    """(type, code) -> {type, expression} from the US Core CapabilityStatement's links."""
    cs = json.loads((us_core_folder() / "CapabilityStatement-us-core-server.json").read_text())
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for r in cs["rest"][0]["resource"]:
        for sp in r.get("searchParam", []):
            if sp["name"] in ("_id", "_lastUpdated"):
                continue  # read off the resource directly (query_for)
            url = sp["definition"].split("|")[0]
            name = url.rsplit("/", 1)[-1]
            path = us_core_folder() / f"SearchParameter-{name}.json"
            if path.exists():
                expression = json.loads(path.read_text())["expression"]
            else:
                expression = r4_expressions()[url]
            found[(r["type"], sp["name"])] = {"type": sp["type"], "expression": expression}
    return found


def _for_type(expression: str, type_name: str) -> str:
    """The `|`-separated parts of a multi-type expression that start with the type, with
    `resolve() is X` (which needs a server) read off the reference string instead."""
    parts = [p.strip() for p in expression.split("|")]
    mine = [p for p in parts if p.startswith(type_name + ".") or p.startswith("(" + type_name)]
    text = " | ".join(mine or parts)
    return re.sub(r"resolve\(\) is (\w+)", r"reference.startsWith('\1/')", text)


def search_value(kind: str, values: list[Any]) -> str | None:
    """A search value that must match the first usable one of `values`."""
    for v in values:
        if kind == "token":
            if isinstance(v, dict) and "coding" in v:
                v = next((c for c in v["coding"] if c.get("code")), None)
            if isinstance(v, dict) and v.get("code") and v.get("system"):
                return f"{v['system']}|{v['code']}"
            if isinstance(v, dict) and v.get("value") and v.get("system"):  # Identifier
                return f"{v['system']}|{v['value']}"
            if isinstance(v, str | bool):
                return str(v).lower() if isinstance(v, bool) else v
        elif kind == "reference":
            if isinstance(v, dict) and isinstance(v.get("reference"), str):
                return str(v["reference"])
            if isinstance(v, str):
                return v
        elif kind == "date":
            if isinstance(v, dict):  # Period: it starts on or after its own start
                if v.get("start"):
                    return f"ge{v['start']}"
                if v.get("end"):
                    return f"le{v['end']}"
            elif v is not None:
                return str(v)  # eq: the value's own range holds the value
        elif kind == "string":
            if isinstance(v, dict):
                for key in ("family", "city", "text", "postalCode", "state"):
                    if isinstance(v.get(key), str):
                        return str(v[key])
                if v.get("given"):
                    return str(v["given"][0])
            elif isinstance(v, str):
                return v
    return None


def query_for(resource: dict[str, Any], names: tuple[str, ...]) -> dict[str, str] | None:
    """The search parameters that must find `resource`, or None if it lacks a value."""
    rtype = resource["resourceType"]
    out: dict[str, str] = {}
    for name in names:
        if name == "_id":
            out[name] = resource["id"]
            continue
        if name == "_lastUpdated":
            out[name] = resource["meta"]["lastUpdated"]
            continue
        sp = definitions()[(rtype, name)]
        values = fhirpathpy.evaluate(resource, _for_type(sp["expression"], rtype), {}, models["r4"])
        value = search_value(sp["type"], values)
        if value is None:
            return None
        out[name] = value
    return out


@pytest.fixture(scope="module")
def loaded(server: Server) -> dict[str, list[dict[str, Any]]]:
    """The demo patients plus the extras, every resource by type."""
    done = run_openrecord(["demo", "--database", server.database], timeout=600)
    assert done.returncode == 0, done.stderr
    with httpx.Client(base_url=server.base, timeout=60) as client:

        def first(type_name: str) -> str:
            return str(
                client.get(f"/{type_name}", params={"_count": 1}).json()["entry"][0]["resource"][
                    "id"
                ]
            )

        extras = us_core_extras(first("Patient"), first("Practitioner"), first("Organization"))
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": r,
                    "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
                }
                for r in extras
            ],
        }
        answer = client.post("", json=bundle)
        assert answer.status_code == 200, answer.text
        types = {t for t, _ in searches()}
        found: dict[str, list[dict[str, Any]]] = {}
        for t in sorted(types):
            page = client.get(f"/{t}", params={"_count": 1000}).json()
            found[t] = [e["resource"] for e in page.get("entry", [])]
    return found


def test_capability_statement_lists_every_us_core_search_parameter(
    client: httpx.Client,
) -> None:
    ours = {
        r["type"]: {p["name"] for p in r.get("searchParam", [])}
        for r in client.get("/metadata").json()["rest"][0]["resource"]
    }
    wanted = {(t, n) for t, names in searches() for n in names}
    missing = sorted((t, n) for t, n in wanted if n not in ours.get(t, set()))
    assert missing == []


def test_every_us_core_search_finds_its_resource(
    client: httpx.Client, loaded: dict[str, list[dict[str, Any]]]
) -> None:
    failures = []
    for rtype, names in searches():
        sample = None
        for resource in loaded[rtype]:
            query = query_for(resource, names)
            if query is not None:
                sample = resource, query
                break
        if sample is None:
            failures.append(f"{rtype}?{'&'.join(names)}: no stored resource has values")
            continue
        resource, query = sample
        answer = client.get(f"/{rtype}", params={**query, "_count": 1000})
        if answer.status_code != 200:
            failures.append(f"{rtype}?{query}: {answer.status_code} {answer.text[:200]}")
            continue
        entries = answer.json().get("entry", [])
        outcome = [e for e in entries if e["search"]["mode"] == "outcome"]
        ids = {e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"}
        if outcome or resource["id"] not in ids:
            failures.append(f"{rtype}?{query}: {resource['id']} not found; outcome {outcome}")
        # and each parameter counts: a value the resource does not have loses it
        for name in names:
            kind = "token" if name == "_id" else "date" if name == "_lastUpdated" else None
            miss = {**query, name: NO_MATCH[kind or definitions()[(rtype, name)]["type"]]}
            answer = client.get(f"/{rtype}", params={**miss, "_count": 1000})
            ids = {e["resource"]["id"] for e in answer.json().get("entry", [])}
            if answer.status_code != 200 or resource["id"] in ids:
                failures.append(f"{rtype}?{miss}: {resource['id']} found, the value differs")
    assert failures == []
