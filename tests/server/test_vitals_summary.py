"""Weight, height, BMI, blood pressure and weight Goals over HTTP: the resources conform to
US Core (`$validate?profile=`), and `$weight-summary` / `$bp-summary` agree with
calculations written here:

- trend: exponentially weighted, alpha = 1 - 0.9^(days since the previous weight), so
  0.1 for daily weights (J. Walker, "The Hacker's Diet"); % change over N weeks =
  100 (trend now - trend N weeks before) / trend then;
- BMI = kg / m² of the last weight and latest height, WHO classes (TRS 894);
- goal progress = 100 (trend at the goal's start - trend now) / (that - target);
- home BP: mean of every reading; ACC/AHA 2017 category of the mean; flag at ≥ 135/85;
  at least 12 readings on 3 days (AHA 2019 statement), days in the patient's local time.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
US = "http://hl7.org/fhir/us/core/StructureDefinition/"
PATIENT = "vitals-1"
VITALS = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs",
        }
    ]
}
START = datetime(2024, 1, 1, 7, 0, tzinfo=UTC)
SKIPPED = set(range(50, 57))  # a week without weighing
DAYS = 200
LOCAL = timezone(timedelta(hours=2))


def vital(code: str, when: str, patient: str = PATIENT, **value: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [VITALS],
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": when,
        **value,
    }


def qty(value: float, code: str) -> dict[str, Any]:
    return {"value": value, "unit": code, "system": UCUM, "code": code}


def weight_kg(day: int) -> float:
    return round(95 - 0.05 * day + 0.6 * math.sin(day), 2)


def weights() -> list[tuple[datetime, float, dict[str, Any]]]:
    """(time, kg, Observation): every 7th in pounds."""
    out = []
    for day in range(DAYS):
        if day in SKIPPED:
            continue
        when = START + timedelta(days=day)
        kg = weight_kg(day)
        if day % 7 == 3:
            pounds = round(kg / 0.45359237, 3)
            kg = pounds * 0.45359237
            value = qty(pounds, "[lb_av]")
        else:
            value = qty(kg, "kg")
        out.append((when, kg, vital("29463-7", when.isoformat(), valueQuantity=value)))
    return out


def bp_readings() -> list[tuple[datetime, float, float]]:
    """4 a day for 7 days, local time +02:00; mornings at 00:30 local (22:30 UTC the day
    before), evenings at 21:00."""
    out: list[tuple[datetime, float, float]] = []
    for day in range(7):
        base = datetime(2024, 3, 4 + day, tzinfo=LOCAL)
        for i, (hour, minute) in enumerate(((0, 30), (0, 31), (21, 0), (21, 1))):
            out.append((base.replace(hour=hour, minute=minute), 130 + day + i, 82 + (day % 3)))
    return out


def bp(when: datetime, sbp: float, dbp: float) -> dict[str, Any]:
    def component(code: str, value: float) -> dict[str, Any]:
        return {
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "valueQuantity": qty(value, "mm[Hg]"),
        }

    panel = vital("85354-9", when.isoformat())
    panel["component"] = [component("8480-6", sbp), component("8462-4", dbp)]
    return panel


GOAL: dict[str, Any] = {
    "resourceType": "Goal",
    "lifecycleStatus": "active",
    "description": {"text": "Reach 85 kg"},
    "subject": {"reference": f"Patient/{PATIENT}"},
    "startDate": "2024-01-15",
    "target": [
        {
            "measure": {"coding": [{"system": LOINC, "code": "29463-7"}]},
            "detailQuantity": qty(85, "kg"),
            "dueDate": "2024-12-31",
        }
    ],
}


def transaction(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "POST", "url": r["resourceType"]}}
            for r in resources
        ],
    }


@pytest.fixture(scope="module")
def loaded(server: Any) -> None:
    with httpx.Client(base_url=server.base, timeout=120) as c:
        for id in (PATIENT, "vitals-other"):
            r = c.put(f"/Patient/{id}", json={"resourceType": "Patient", "id": id})
            assert r.status_code in (200, 201), r.text
        noise = [
            # not usable: entered in error, another patient's, another code
            {
                **vital("29463-7", "2024-07-18T07:00:00Z", valueQuantity=qty(300, "kg")),
                "status": "entered-in-error",
            },
            vital("29463-7", "2024-07-18T08:00:00Z", "vitals-other", valueQuantity=qty(50, "kg")),
            vital("8302-2", "2023-12-01T09:00:00Z", valueQuantity=qty(178, "cm")),
            vital("8302-2", "2024-03-01T09:00:00Z", valueQuantity=qty(177, "cm")),
            vital("8302-2", "2024-08-01T09:00:00Z", valueQuantity=qty(150, "cm")),  # after end
        ]
        bundle = transaction([w[2] for w in weights()] + noise)
        bundle["entry"] += [
            {"resource": bp(*r), "request": {"method": "POST", "url": "Observation"}}
            for r in bp_readings()
        ]
        bundle["entry"].append({"resource": GOAL, "request": {"method": "POST", "url": "Goal"}})
        old_goal = {**GOAL, "lifecycleStatus": "cancelled"}
        old_goal["target"] = [{**GOAL["target"][0], "detailQuantity": qty(60, "kg")}]
        bundle["entry"].append({"resource": old_goal, "request": {"method": "POST", "url": "Goal"}})
        r = c.post("", json=bundle)
        assert r.status_code == 200, r.text


def values(parameters: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in parameters["parameter"]:
        value = next(v for k, v in p.items() if k.startswith("value"))
        out[p["name"]] = value["value"] if isinstance(value, dict) and "value" in value else value
    return out


# -- the resources conform -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "profile"),
    [
        (weights()[0][2], "us-core-body-weight"),
        (weights()[3][2], "us-core-body-weight"),  # in pounds
        (
            vital("8302-2", "2024-03-01T09:00:00Z", valueQuantity=qty(177, "cm")),
            "us-core-body-height",
        ),
        (vital("39156-5", "2024-03-01T09:00:00Z", valueQuantity=qty(27.5, "kg/m2")), "us-core-bmi"),
        (bp(*bp_readings()[0]), "us-core-blood-pressure"),
        (GOAL, "us-core-goal"),
    ],
)
def test_vitals_conform_to_us_core(
    client: httpx.Client, resource: dict[str, Any], profile: str
) -> None:
    r = client.post(
        f"/{resource['resourceType']}/$validate", params={"profile": US + profile}, json=resource
    )
    assert r.status_code == 200
    assert [i for i in r.json()["issue"] if i["severity"] == "error"] == []


# -- $weight-summary -----------------------------------------------------------------------


def trend(points: list[tuple[datetime, float]]) -> list[tuple[datetime, float]]:
    out: list[tuple[datetime, float]] = []
    for when, kg in points:
        if not out:
            out.append((when, kg))
            continue
        days = (when - out[-1][0]).total_seconds() / 86400
        previous = out[-1][1]
        out.append((when, previous + (1 - 0.9**days) * (kg - previous)))
    return out


def as_of(points: list[tuple[datetime, float]], when: datetime) -> float | None:
    before = [kg for t, kg in points if t <= when]
    return before[-1] if before else None


def test_weight_summary(client: httpx.Client, loaded: None) -> None:
    r = client.get(
        f"/Patient/{PATIENT}/$weight-summary", params={"start": "2024-01-01", "end": "2024-07-19"}
    )
    assert r.status_code == 200, r.text
    got = values(r.json())
    points = trend([(t, kg) for t, kg, _ in weights()])
    last_time, last_trend = points[-1]
    last_kg = weights()[-1][1]
    assert got["readings"] == DAYS - len(SKIPPED)
    assert got["weight"] == pytest.approx(last_kg, abs=1e-3)
    assert got["weight-time"] == "2024-07-18T07:00:00Z"
    assert got["trend"] == pytest.approx(last_trend, abs=1e-3)
    for weeks in (4, 12, 26):
        then = as_of(points, last_time - timedelta(weeks=weeks))
        if then is None:
            assert f"change-{weeks}-weeks" not in got
            continue
        assert got[f"change-{weeks}-weeks"] == pytest.approx(
            100 * (last_trend - then) / then, abs=2e-3
        )
    assert got["height"] == pytest.approx(177)
    bmi = last_kg / 1.77**2
    assert got["bmi"] == pytest.approx(bmi, abs=6e-3)
    assert got["bmi-category"] == ("overweight" if 25 <= bmi < 30 else "obesity-class-1")
    start = as_of(points, datetime(2024, 1, 15, 23, 59, 59, tzinfo=UTC))
    assert start is not None
    assert got["goal-target"] == 85 and got["goal-due"] == "2024-12-31"
    assert got["goal"]["reference"].startswith("Goal/")
    assert got["goal-start-weight"] == pytest.approx(start, abs=1e-3)
    assert got["goal-remaining"] == pytest.approx(last_trend - 85, abs=1e-3)
    assert got["goal-progress"] == pytest.approx(
        100 * (start - last_trend) / (start - 85), abs=1e-2
    )


def test_weight_summary_of_a_short_period(client: httpx.Client, loaded: None) -> None:
    """The trend restarts at the period's first weight; 4 weeks back is out of reach."""
    r = client.get(
        f"/Patient/{PATIENT}/$weight-summary",
        params={"start": "2024-07-01", "end": "2024-07-19T00:00:00Z"},
    )
    got = values(r.json())
    chosen = [(t, kg) for t, kg, _ in weights() if t >= START.replace(month=7)]
    points = trend(chosen)
    assert got["readings"] == 18
    assert got["trend"] == pytest.approx(points[-1][1], abs=1e-3)
    assert "change-4-weeks" not in got


def test_weight_summary_without_weights(client: httpx.Client, loaded: None) -> None:
    r = client.get(
        "/Patient/vitals-other/$weight-summary", params={"start": "2023-01-01", "end": "2023-02-01"}
    )
    assert r.status_code == 200
    assert r.json()["parameter"] == [{"name": "readings", "valueInteger": 0}]


# -- $bp-summary -------------------------------------------------------------------------


def category(sbp: float, dbp: float) -> str:
    if sbp > 180 or dbp > 120:
        return "hypertensive-crisis"
    if sbp >= 140 or dbp >= 90:
        return "stage-2-hypertension"
    if sbp >= 130 or dbp >= 80:
        return "stage-1-hypertension"
    return "elevated" if sbp >= 120 else "normal"


@pytest.mark.parametrize("drop", [False, True])
def test_bp_summary(client: httpx.Client, loaded: None, drop: bool) -> None:
    r = client.get(
        f"/Patient/{PATIENT}/$bp-summary",
        params={"start": "2024-03-01", "end": "2024-03-15", "drop-first-day": str(drop).lower()},
    )
    assert r.status_code == 200, r.text
    got = values(r.json())
    readings = bp_readings()
    if drop:
        readings = [x for x in readings if x[0].date() != date(2024, 3, 4)]
    sbp = sum(x[1] for x in readings) / len(readings)
    dbp = sum(x[2] for x in readings) / len(readings)
    assert got["readings"] == len(readings) == (24 if drop else 28)
    assert got["days"] == (6 if drop else 7)  # local days; by UTC date there would be 8
    assert got["systolic"] == pytest.approx(sbp, abs=0.051)
    assert got["diastolic"] == pytest.approx(dbp, abs=0.051)
    assert got["category"] == category(sbp, dbp)
    assert got["home-average-high"] is (sbp >= 135 or dbp >= 85)
    assert got["meets-minimum"] is True
    last = max(bp_readings())
    assert got["last-systolic"] == last[1] and got["last-diastolic"] == last[2]
    assert got["last-category"] == category(last[1], last[2])
    assert got["last-time"] == last[0].isoformat()


def test_bp_flag_below_threshold_and_the_minimum(client: httpx.Client, loaded: None) -> None:
    """The first two local days only: 8 readings (< 12), mean below 135/85."""
    r = client.get(
        f"/Patient/{PATIENT}/$bp-summary",
        params={"start": "2024-03-03T22:00:00Z", "end": "2024-03-05T22:00:00Z"},
    )
    got = values(r.json())
    chosen = [x for x in bp_readings() if x[0].date() in (date(2024, 3, 4), date(2024, 3, 5))]
    assert got["readings"] == len(chosen) == 8
    assert got["meets-minimum"] is False
    assert got["home-average-high"] is False
    assert got["systolic"] == pytest.approx(sum(x[1] for x in chosen) / 8, abs=0.051)


# -- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["$weight-summary", "$bp-summary"])
def test_bad_requests(client: httpx.Client, loaded: None, op: str) -> None:
    r = client.get(f"/Patient/{PATIENT}/{op}", params={"end": "2024-02-01"})
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["start"]
    r = client.get(f"/Patient/{PATIENT}/{op}", params={"start": "2024-02-01", "end": "2024-01-01"})
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["end"]
    r = client.get(f"/Patient/{PATIENT}/{op}", params={"start": "yesterday", "end": "2024-01-01"})
    assert r.status_code == 400
    r = client.get(f"/Patient/nobody/{op}", params={"start": "2024-01-01", "end": "2024-02-01"})
    assert r.status_code == 404
    r = client.post(f"/Patient/{PATIENT}/{op}", json={"resourceType": "Parameters"})
    assert r.status_code == 405


def test_bp_drop_first_day_must_be_boolean(client: httpx.Client, loaded: None) -> None:
    r = client.get(
        f"/Patient/{PATIENT}/$bp-summary",
        params={"start": "2024-03-01", "end": "2024-03-15", "drop-first-day": "maybe"},
    )
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["drop-first-day"]


def test_operations_are_in_the_capability_statement(client: httpx.Client) -> None:
    ops = {
        o["name"]
        for rest in client.get("/metadata").json()["rest"]
        for res in rest["resource"]
        if res["type"] == "Patient"
        for o in res.get("operation", [])
    }
    assert {"weight-summary", "bp-summary", "alert-settings"} <= ops
