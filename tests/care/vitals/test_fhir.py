"""Vital-sign Observations and weight Goals: valid against base R4 and their US Core
profiles (the profiles' own StructureDefinitions, compiled), and read back in kg, m and
mm Hg whatever UCUM unit of the profiles' value sets they were written in."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from openrecord.care.vitals.fhir import (
    bmi_observation,
    bp_observation,
    bp_of,
    effective_time,
    goal_of,
    height_observation,
    height_of,
    weight_goal,
    weight_observation,
    weight_of,
)
from openrecord.fhir.profiles import validate_against
from openrecord.fhir.validation import validate_resource

US = "http://hl7.org/fhir/us/core/StructureDefinition/"
WHEN = datetime(2024, 6, 1, 7, 30, tzinfo=timezone(timedelta(hours=2)))


def errors(resource: dict[str, Any], profile: str) -> list[str]:
    issues = validate_resource(resource) + validate_against(resource, US + profile)
    return [f"{i.expression}: {i.diagnostics}" for i in issues if i.severity in ("error", "fatal")]


@pytest.mark.parametrize(
    ("resource", "profile"),
    [
        (weight_observation("p1", WHEN, 82.5), "us-core-body-weight"),
        (height_observation("p1", WHEN, 178), "us-core-body-height"),
        (bmi_observation("p1", WHEN, 26.04), "us-core-bmi"),
        (bp_observation("p1", WHEN, 128, 84), "us-core-blood-pressure"),
        (bp_observation("p1", WHEN, 128, 84), "us-core-vital-signs"),
        (weight_goal("p1", 75, date(2024, 12, 31), date(2024, 6, 1)), "us-core-goal"),
    ],
)
def test_built_resources_conform(resource: dict[str, Any], profile: str) -> None:
    assert errors(resource, profile) == []
    assert resource["meta"]["profile"][0].startswith(US)


def test_the_profile_check_catches_what_is_missing() -> None:
    wrong = weight_observation("p1", WHEN, 82.5)
    del wrong["category"]  # the vital-signs category slice is required
    assert errors(wrong, "us-core-body-weight")
    no_unit = weight_observation("p1", WHEN, 82.5)
    del no_unit["valueQuantity"]["code"]
    assert errors(no_unit, "us-core-body-weight")


def observation(code: str, quantity: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "effectiveDateTime": "2024-06-01T07:30:00+02:00",
        "valueQuantity": {"system": "http://unitsofmeasure.org", **quantity},
        **extra,
    }


def test_weights_in_every_unit_of_the_value_set() -> None:
    assert weight_of(observation("29463-7", {"value": 82.5, "code": "kg"})).kg == 82.5  # type: ignore[union-attr]
    pounds = weight_of(observation("29463-7", {"value": 180, "code": "[lb_av]"}))
    assert pounds is not None and pounds.kg == pytest.approx(180 * 0.45359237)
    grams = weight_of(observation("29463-7", {"value": 82500, "code": "g"}))
    assert grams is not None and grams.kg == pytest.approx(82.5)
    assert pounds.time == WHEN and pounds.time.utcoffset() == timedelta(hours=2)


def test_unusable_weights_are_skipped() -> None:
    assert (
        weight_of(observation("29463-7", {"value": 82.5, "code": "kg"}, status="entered-in-error"))
        is None
    )
    assert weight_of(observation("29463-7", {"value": 82.5, "code": "[stone_av]"})) is None
    assert weight_of(observation("29463-7", {"value": -1, "code": "kg"})) is None
    assert weight_of(observation("8302-2", {"value": 82.5, "code": "kg"})) is None
    assert (
        weight_of(observation("29463-7", {"value": 82.5, "code": "kg", "comparator": ">"})) is None
    )


def test_heights_in_cm_and_inches() -> None:
    cm = height_of(observation("8302-2", {"value": 178, "code": "cm"}))
    inches = height_of(observation("8302-2", {"value": 70, "code": "[in_i]"}))
    assert cm is not None and cm.m == pytest.approx(1.78)
    assert inches is not None and inches.m == pytest.approx(70 * 0.0254)


def test_blood_pressure_needs_both_components() -> None:
    panel = bp_observation("p1", WHEN, 128, 84)
    found = bp_of(panel)
    assert found is not None and (found.systolic, found.diastolic) == (128, 84)
    del panel["component"][1]
    assert bp_of(panel) is None


def test_effective_time_without_a_zone_is_read_in_the_given_zone() -> None:
    zone = timezone(timedelta(hours=-5))
    assert effective_time({"effectiveDateTime": "2024-06-01T07:30:00"}, zone) == datetime(
        2024, 6, 1, 7, 30, tzinfo=zone
    )
    assert effective_time({"effectiveDateTime": "2024-06-01"}, UTC) == datetime(
        2024, 6, 1, tzinfo=UTC
    )
    assert effective_time({"effectivePeriod": {"start": "2024-06-01T07:30:00Z"}}) == datetime(
        2024, 6, 1, 7, 30, tzinfo=UTC
    )
    assert effective_time({"effectiveDateTime": "garbage"}) is None


def test_weight_goals() -> None:
    goal = {**weight_goal("p1", 165, date(2024, 12, 31)), "id": "g1"}
    goal["target"][0]["detailQuantity"] = {
        "value": 165,
        "system": "http://unitsofmeasure.org",
        "code": "[lb_av]",
    }
    found = goal_of(goal)
    assert found is not None
    assert found.id == "g1" and found.target_kg == pytest.approx(165 * 0.45359237)
    assert found.due == date(2024, 12, 31) and found.start is None
    assert goal_of({**goal, "lifecycleStatus": "completed"}) is None
    other = {
        **goal,
        "target": [{"measure": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]}}],
    }
    assert goal_of(other) is None
