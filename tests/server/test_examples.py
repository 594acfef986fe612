"""Every ordinary spec example is accepted by create; mutated copies are rejected precisely."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.spec_examples import INVALID_EXAMPLES, example, ordinary_examples

Json = dict[str, Any]


def test_every_ordinary_example_is_accepted_by_create(client: httpx.Client) -> None:
    examples = ordinary_examples()
    assert len(examples) >= 700
    refused = {}
    audit_events = [n for n, r in examples.items() if r["resourceType"] == "AuditEvent"]
    assert audit_events
    for name in audit_events:  # the audit trail is the server's own: no client writes it
        r = client.post("/AuditEvent", json=examples.pop(name))
        assert r.status_code == 405, r.text
    for name, resource in sorted(examples.items()):
        r = client.post(f"/{resource['resourceType']}", json=resource)
        if r.status_code != 201:
            refused[name] = (r.status_code, r.text[:300])
    # Only the examples the spec itself gets wrong (listed with reasons) are refused.
    assert set(refused) == set(INVALID_EXAMPLES), refused
    assert all(status == 422 for status, _ in refused.values())


def mutate(name: str, change: Callable[[Json], None]) -> Json:
    resource = copy.deepcopy(example(name))
    change(resource)
    return resource


MUTATIONS = [
    # (example, change, expression the OperationOutcome must point at)
    ("Patient-example.json", lambda r: r.update(nickname="Jim"), "Patient.nickname"),
    ("Patient-example.json", lambda r: r.update(active="true"), "Patient.active"),
    ("Patient-example.json", lambda r: r.update(birthDate="1974-12-32"), "Patient.birthDate"),
    ("Patient-example.json", lambda r: r.update(gender=["male"]), "Patient.gender"),
    ("Patient-example.json", lambda r: r.update(name=r["name"][0]), "Patient.name"),
    ("Patient-example.json", lambda r: r.update(gender="M"), "Patient.gender"),
    (
        "Observation-example.json",
        lambda r: r.update(valueString="heavy"),
        "Observation.valueString",
    ),
    ("Observation-example.json", lambda r: r.pop("status"), "Observation.status"),
    (
        "Observation-example.json",
        lambda r: r["valueQuantity"].update(value="185"),
        "Observation.valueQuantity.value",
    ),
    (
        "Observation-example.json",
        lambda r: r.update(effectiveDateTime="2016-03-28T09:30:00"),
        "Observation.effectiveDateTime",
    ),
    ("Observation-example.json", lambda r: r.update(issued="2013-04-03"), "Observation.issued"),
    ("Encounter-example.json", lambda r: r.update(status="finished-ish"), "Encounter.status"),
    ("Encounter-example.json", lambda r: r.update(period={}), "Encounter.period"),
    (
        "Condition-example.json",
        lambda r: r["subject"].update(reference="Patient/a b"),
        "Condition.subject.reference",
    ),
]


@pytest.mark.parametrize(("name", "change", "expression"), MUTATIONS)
def test_mutated_examples_are_rejected_with_expression(
    client: httpx.Client, name: str, change: Callable[[Json], None], expression: str
) -> None:
    resource = mutate(name, change)
    r = client.post(f"/{resource['resourceType']}", json=resource)
    assert r.status_code == 422, r.text
    outcome = r.json()
    expressions = [e for i in outcome["issue"] for e in i.get("expression", [])]
    assert expression in expressions, outcome
