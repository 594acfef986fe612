"""Readings and metrics as HL7 CGM IG Observations and `$cgm-summary` Parameters.

The expected codes, categories and units are read from the IG's own example
Observations (shared data), not restated from the module under test.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pytest

from openrecord.care.glucose.fhir import (
    days_of_wear,
    observation_to_reading,
    reading_id,
    reading_observation,
    summary_observations,
    summary_parameters,
)
from openrecord.care.glucose.metrics import summarize
from openrecord.care.glucose.readings import Limit, Reading
from openrecord.fhir.validation import validate_resource
from tests.shared_data import require_shared

T0 = datetime(2024, 5, 2, 10, 15, tzinfo=UTC)


@cache
def example(name: str) -> dict[str, Any]:
    folder = require_shared("cgm", "hl7-cgm-ig-examples")
    data: dict[str, Any] = json.loads((folder / f"Observation-{name}.json").read_text())
    return data


def errors(resource: dict[str, Any]) -> list[str]:
    return [i.diagnostics for i in validate_resource(resource) if i.severity in ("error", "fatal")]


def test_reading_matches_the_ig_mass_per_volume_example() -> None:
    ig = example("cgmSensorReadingMassPerVolumeExample")
    obs = reading_observation(Reading.at(T0, 120.0), "patientExample", "r1")
    assert obs["code"] == ig["code"]
    assert obs["category"] == ig["category"]
    assert obs["status"] == ig["status"]
    assert obs["subject"] == ig["subject"]
    assert obs["effectiveDateTime"] == ig["effectiveDateTime"]  # 2024-05-02T10:15:00Z
    assert obs["valueQuantity"] == ig["valueQuantity"]
    assert obs["meta"]["profile"] == [
        "http://hl7.org/fhir/uv/cgm/StructureDefinition/cgm-sensor-reading-mass-per-volume"
    ]
    assert errors(obs) == []


def test_ig_examples_read_back_as_readings_in_mg_dl() -> None:
    mass = observation_to_reading(example("cgmSensorReadingMassPerVolumeExample"))
    assert mass == Reading.at(T0, 120.0)
    moles = observation_to_reading(example("cgmSensorReadingMolesPerVolumeExample"))
    assert moles is not None
    assert moles.time == datetime(2024, 5, 2, 10, 30, tzinfo=UTC)
    assert moles.mg_dl == pytest.approx(6.7 * 18.0156)


def test_round_trip_keeps_time_value_and_device_limits() -> None:
    readings = [
        Reading.at(T0, 40.0, Limit.LOW),
        Reading.at(T0.replace(second=7, microsecond=250000), 123.456),
        Reading.at(T0.replace(minute=20), 400.0, Limit.HIGH),
    ]
    observations = [reading_observation(r, "p") for r in readings]
    assert observations[0]["valueQuantity"]["comparator"] == "<"
    assert observations[2]["valueQuantity"]["comparator"] == ">"
    assert "comparator" not in observations[1]["valueQuantity"]
    assert observations[1]["effectiveDateTime"] == "2024-05-02T10:15:07.25Z"
    assert [observation_to_reading(o) for o in observations] == readings
    for obs in observations:
        assert errors(obs) == []


def test_not_a_reading() -> None:
    obs = reading_observation(Reading.at(T0, 100.0), "p")
    assert observation_to_reading({**obs, "status": "entered-in-error"}) is None
    assert observation_to_reading({**obs, "code": {"coding": [{"code": "8480-6"}]}}) is None
    no_value = {k: v for k, v in obs.items() if k != "valueQuantity"}
    assert observation_to_reading(no_value) is None


def test_reading_ids_are_stable_per_patient_and_instant() -> None:
    t = Reading.at(T0, 1).time_us
    assert reading_id("a", t) == reading_id("a", t)
    assert reading_id("a", t) != reading_id("b", t)
    assert reading_id("a", t) != reading_id("a", t + 1)
    assert len(reading_id("a", t)) <= 64


def _day() -> list[Reading]:
    # One day, 288 slots; 144 readings filled every other slot: 36 each at 50, 60, 150, 200.
    values = [50.0] * 36 + [60.0] * 36 + [150.0] * 36 + [200.0] * 36
    step = 600_000_000  # 10 minutes
    start = Reading.at(T0, 0).time_us
    return [Reading(start + i * step, v) for i, v in enumerate(values)]


def test_days_of_wear_counts_days_with_a_reading() -> None:
    start = Reading.at(T0, 0).time_us
    summary = summarize([], start, start + 3 * 86_400_000_000)
    day = 86_400_000_000
    assert days_of_wear(summary, [start, start + 5, start + 2 * day + 1, start + 3 * day]) == 2


def test_summary_parameters_names_units_and_values() -> None:
    readings = _day()
    start = readings[0].time_us
    summary = summarize(readings, start, start + 86_400_000_000)
    params = {p["name"]: p["valueQuantity"] for p in summary_parameters(summary)["parameter"]}
    assert list(params) == [
        "mean",
        "sd",
        "cv",
        "gmi",
        "time-very-low",
        "time-low",
        "time-in-range",
        "time-high",
        "time-very-high",
        "time-tight-range",
        "active-percent",
        "days",
        "lbgi",
        "hbgi",
        "gri",
        "mage",
    ]
    units = {name: q["code"] for name, q in params.items()}
    assert units["mean"] == units["sd"] == units["mage"] == "mg/dL"
    assert {units[n] for n in ("cv", "gmi", "active-percent", "time-in-range")} == {"%"}
    assert units["days"] == "d"
    assert units["lbgi"] == units["hbgi"] == units["gri"] == "1"
    assert all(q["system"] == "http://unitsofmeasure.org" for q in params.values())
    # Worked by hand: mean (50+60+150+200)/4 = 115; 25 % each in very low, low, in range
    # (150 is also tight? no: > 140) and high; half the 5-minute slots hold a reading.
    assert params["mean"]["value"] == pytest.approx(115.0)
    assert params["gmi"]["value"] == pytest.approx(3.31 + 0.02392 * 115.0)
    assert params["time-very-low"]["value"] == pytest.approx(25.0)
    assert params["time-low"]["value"] == pytest.approx(25.0)
    assert params["time-in-range"]["value"] == pytest.approx(25.0)
    assert params["time-high"]["value"] == pytest.approx(25.0)
    assert params["time-very-high"]["value"] == pytest.approx(0.0)
    assert params["time-tight-range"]["value"] == pytest.approx(0.0)
    assert params["active-percent"]["value"] == pytest.approx(50.0)
    assert params["days"]["value"] == pytest.approx(1.0)
    # GRI 3.0*25 + 2.4*25 + 0.8*25 = 155, capped at 100 (Klonoff 2023)
    assert params["gri"]["value"] == pytest.approx(100.0)
    parameters = summary_parameters(summary)
    assert errors(parameters) == []


def test_empty_period_reports_only_what_is_defined() -> None:
    start = Reading.at(T0, 0).time_us
    summary = summarize([], start, start + 86_400_000_000)
    names = [p["name"] for p in summary_parameters(summary)["parameter"]]
    assert names == ["active-percent", "days"]


def test_summary_observations_follow_the_ig_examples() -> None:
    readings = _day()
    start = readings[0].time_us
    summary = summarize(readings, start, start + 86_400_000_000)
    keys = ("summary", "mean", "times-in-ranges", "gmi", "cv", "days-of-wear", "sensor-active")
    observations = summary_observations(summary, "patientExample", {k: k for k in keys}, 1)
    by_id = {o["id"]: o for o in observations}
    pairs = {
        "summary": "cgmSummaryExample",
        "mean": "cgmSummaryMeanGlucoseMassPerVolumeExample",
        "times-in-ranges": "cgmSummaryTimesInRangesExample",
        "gmi": "cgmSummaryGMIExample",
        "cv": "cgmSummaryCoefficientOfVariationExample",
        "days-of-wear": "cgmSummaryDaysOfWearExample",
        "sensor-active": "cgmSummarySensorActivePercentageExample",
    }
    for key, name in pairs.items():
        ig, ours = example(name), by_id[key]
        assert ours["code"] == ig["code"], key
        assert ours["category"] == ig["category"], key
        assert ours["subject"] == ig["subject"], key
        assert set(ours["effectivePeriod"]) == {"start", "end"}
        if "valueQuantity" in ig:
            unit = {k: v for k, v in ig["valueQuantity"].items() if k != "value"}
            assert {k: v for k, v in ours["valueQuantity"].items() if k != "value"} == unit, key
        assert errors(ours) == [], key
    ranges = by_id["times-in-ranges"]["component"]
    ig_ranges = example("cgmSummaryTimesInRangesExample")["component"]
    assert [c["code"] for c in ranges] == [c["code"] for c in ig_ranges]
    # IG order: very low, low, target, high, very high
    assert [c["valueQuantity"]["value"] for c in ranges] == pytest.approx([25, 25, 25, 25, 0])
    assert by_id["days-of-wear"]["valueQuantity"]["value"] == 1
    assert by_id["sensor-active"]["valueQuantity"]["value"] == pytest.approx(50.0)
    members = [m["reference"] for m in by_id["summary"]["hasMember"]]
    assert members == [f"Observation/{k}" for k in keys[1:]]
