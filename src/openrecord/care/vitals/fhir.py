"""Weight, height, BMI and blood pressure as US Core vital-sign Observations, and back.

Profiles (US Core 9.0.0, over the R4 vital-signs profile): body weight LOINC 29463-7
in kg, g or [lb_av] (`ucum-bodyweight`); body height 8302-2 in cm or [in_i]
(`ucum-bodylength`); BMI 39156-5 in kg/m2; blood pressure panel 85354-9 with the
systolic (8480-6) and diastolic (8462-4) components in mm[Hg]. Every one carries the
`vital-signs` category and a subject. Reading them back converts to kg, metres and
mm Hg, keeps the offset an `effectiveDateTime` was written with (the patient's local
day for home blood pressure), and reads a value without a zone in the server's zone.

Weight goals are US Core Goals whose `target.measure` is 29463-7 with a
`target.detailQuantity` weight and an optional `target.dueDate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from typing import Any

from openrecord.care.vitals.blood_pressure import BpReading
from openrecord.care.vitals.weight import WeightReading

__all__ = [
    "BMI_CODE",
    "BP_PANEL_CODE",
    "DIASTOLIC_CODE",
    "HEIGHT_CODE",
    "LOINC",
    "SYSTOLIC_CODE",
    "UCUM",
    "US_CORE",
    "WEIGHT_CODE",
    "HeightReading",
    "WeightGoal",
    "bmi_observation",
    "bp_observation",
    "bp_of",
    "effective_time",
    "goal_of",
    "height_observation",
    "height_of",
    "weight_goal",
    "weight_observation",
    "weight_of",
]

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
WEIGHT_CODE = "29463-7"
HEIGHT_CODE = "8302-2"
BMI_CODE = "39156-5"
BP_PANEL_CODE = "85354-9"
SYSTOLIC_CODE = "8480-6"
DIASTOLIC_CODE = "8462-4"

_CATEGORY = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs",
            "display": "Vital Signs",
        }
    ],
    "text": "Vital Signs",
}
# UCUM codes of the value sets the profiles bind, and their factor to kg / m.
_TO_KG = {"kg": 1.0, "g": 0.001, "[lb_av]": 0.45359237}
_TO_M = {"m": 1.0, "cm": 0.01, "[in_i]": 0.0254, "[ft_i]": 0.3048}
_USABLE_STATUS = frozenset({"final", "amended", "corrected", "preliminary"})


@dataclass(frozen=True, slots=True)
class HeightReading:
    """One body height (LOINC 8302-2) in metres."""

    time: datetime
    m: float


@dataclass(frozen=True, slots=True)
class WeightGoal:
    """An active weight Goal: its target in kg and due date, and when it started."""

    id: str
    target_kg: float
    due: date | None
    start: date | None


def _concept(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display}


def _quantity(value: float, code: str, unit: str | None = None) -> dict[str, Any]:
    return {"value": value, "unit": unit or code, "system": UCUM, "code": code}


def _when(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no defined instant; attach a time zone")
    return moment.isoformat().replace("+00:00", "Z")


def _observation(
    profile: str, code: dict[str, Any], patient: str, moment: datetime, **value: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "meta": {"profile": [US_CORE + profile]},
        "status": "final",
        "category": [_CATEGORY],
        "code": code,
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": _when(moment),
        **value,
    }


def weight_observation(patient: str, moment: datetime, kg: float) -> dict[str, Any]:
    """A US Core body weight Observation in kg."""
    return _observation(
        "us-core-body-weight",
        _concept(WEIGHT_CODE, "Body weight"),
        patient,
        moment,
        valueQuantity=_quantity(round(kg, 3), "kg"),
    )


def height_observation(patient: str, moment: datetime, cm: float) -> dict[str, Any]:
    """A US Core body height Observation in cm."""
    return _observation(
        "us-core-body-height",
        _concept(HEIGHT_CODE, "Body height"),
        patient,
        moment,
        valueQuantity=_quantity(round(cm, 2), "cm"),
    )


def bmi_observation(patient: str, moment: datetime, value: float) -> dict[str, Any]:
    """A US Core BMI Observation in kg/m2."""
    return _observation(
        "us-core-bmi",
        _concept(BMI_CODE, "Body mass index (BMI) [Ratio]"),
        patient,
        moment,
        valueQuantity=_quantity(round(value, 2), "kg/m2"),
    )


def bp_observation(
    patient: str, moment: datetime, systolic: float, diastolic: float
) -> dict[str, Any]:
    """A US Core blood pressure panel with its systolic and diastolic components."""
    return _observation(
        "us-core-blood-pressure",
        _concept(BP_PANEL_CODE, "Blood pressure panel with all children optional"),
        patient,
        moment,
        component=[
            {
                "code": _concept(SYSTOLIC_CODE, "Systolic blood pressure"),
                "valueQuantity": _quantity(systolic, "mm[Hg]", "mmHg"),
            },
            {
                "code": _concept(DIASTOLIC_CODE, "Diastolic blood pressure"),
                "valueQuantity": _quantity(diastolic, "mm[Hg]", "mmHg"),
            },
        ],
    )


def weight_goal(
    patient: str, target_kg: float, due: date | None = None, start: date | None = None
) -> dict[str, Any]:
    """An active US Core Goal to reach `target_kg` (by `due`)."""
    target: dict[str, Any] = {
        "measure": _concept(WEIGHT_CODE, "Body weight"),
        "detailQuantity": _quantity(round(target_kg, 3), "kg"),
    }
    if due is not None:
        target["dueDate"] = due.isoformat()
    goal: dict[str, Any] = {
        "resourceType": "Goal",
        "meta": {"profile": [US_CORE + "us-core-goal"]},
        "lifecycleStatus": "active",
        "description": {"text": f"Reach a body weight of {target_kg:g} kg"},
        "subject": {"reference": f"Patient/{patient}"},
        "target": [target],
    }
    if start is not None:
        goal["startDate"] = start.isoformat()
    return goal


# -- reading back ------------------------------------------------------------------------


def effective_time(observation: dict[str, Any], zone: tzinfo = UTC) -> datetime | None:
    """The instant of `effectiveDateTime` (or `effectivePeriod.start`), with the offset it
    was written with; a date or a time without offset is read in `zone`."""
    text = observation.get("effectiveDateTime")
    if not isinstance(text, str):
        period = observation.get("effectivePeriod")
        text = period.get("start") if isinstance(period, dict) else None
    if not isinstance(text, str) or len(text) < 4:
        return None
    try:
        if len(text) <= 10:  # YYYY, YYYY-MM, YYYY-MM-DD: the first instant
            parts = [int(p) for p in text.split("-")] + [1, 1]
            return datetime(parts[0], parts[1], parts[2], tzinfo=zone)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def _codes(concept: Any) -> set[str]:
    if not isinstance(concept, dict):
        return set()
    return {
        str(c.get("code"))
        for c in concept.get("coding") or []
        if isinstance(c, dict) and c.get("system") == LOINC
    }


def _usable(observation: dict[str, Any], code: str) -> bool:
    return observation.get("status") in _USABLE_STATUS and code in _codes(observation.get("code"))


def _converted(quantity: Any, factors: dict[str, float]) -> float | None:
    if not isinstance(quantity, dict) or quantity.get("comparator") is not None:
        return None
    value, unit = quantity.get("value"), quantity.get("code")
    if quantity.get("system") != UCUM or unit not in factors:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        return None
    return float(value) * factors[str(unit)]


def weight_of(observation: dict[str, Any], zone: tzinfo = UTC) -> WeightReading | None:
    """The weight in kg of a body-weight Observation; None when it holds none usable."""
    if not _usable(observation, WEIGHT_CODE):
        return None
    kg = _converted(observation.get("valueQuantity"), _TO_KG)
    moment = effective_time(observation, zone)
    return None if kg is None or moment is None else WeightReading(moment, kg)


def height_of(observation: dict[str, Any], zone: tzinfo = UTC) -> HeightReading | None:
    """The height in metres of a body-height Observation; None when it holds none."""
    if not _usable(observation, HEIGHT_CODE):
        return None
    m = _converted(observation.get("valueQuantity"), _TO_M)
    moment = effective_time(observation, zone)
    return None if m is None or moment is None else HeightReading(moment, m)


def bp_of(observation: dict[str, Any], zone: tzinfo = UTC) -> BpReading | None:
    """Systolic and diastolic mm Hg of a blood pressure panel; None unless it has both."""
    if not _usable(observation, BP_PANEL_CODE):
        return None
    values: dict[str, float] = {}
    for component in observation.get("component") or []:
        if not isinstance(component, dict):
            continue
        for code in _codes(component.get("code")) & {SYSTOLIC_CODE, DIASTOLIC_CODE}:
            value = _converted(component.get("valueQuantity"), {"mm[Hg]": 1.0})
            if value is not None:
                values[code] = value
    moment = effective_time(observation, zone)
    if moment is None or len(values) != 2:
        return None
    return BpReading(moment, values[SYSTOLIC_CODE], values[DIASTOLIC_CODE])


def _date(text: Any) -> date | None:
    if not isinstance(text, str):
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def goal_of(goal: dict[str, Any]) -> WeightGoal | None:
    """The weight target of an active Goal (target.measure 29463-7, detailQuantity)."""
    if goal.get("lifecycleStatus") != "active":
        return None
    for target in goal.get("target") or []:
        if not isinstance(target, dict) or WEIGHT_CODE not in _codes(target.get("measure")):
            continue
        kg = _converted(target.get("detailQuantity"), _TO_KG)
        if kg is not None:
            return WeightGoal(
                str(goal.get("id", "")),
                kg,
                _date(target.get("dueDate")),
                _date(goal.get("startDate")),
            )
    return None
