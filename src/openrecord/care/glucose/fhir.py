"""CGM readings and metrics as FHIR, per the HL7 CGM IG 1.0.0 (hl7.fhir.uv.cgm).

- A reading is a *sensor reading* Observation (profile
  `cgm-sensor-reading-mass-per-volume`: LOINC 99504-3, `valueQuantity` in UCUM `mg/dL`,
  `effectiveDateTime`, category `laboratory` as the IG's examples). The mmol/L profile
  (LOINC 105272-9, `mmol/L`) is read too. A device "Low"/"High" keeps the limit as the
  value with the quantity comparator `<` / `>` (the value lies beyond it).
- A period's metrics become the IG's *summary* Observations: mean glucose (97507-8),
  times in ranges (106793-3 with five components), GMI (97506-0), CV (104638-2), days of
  wear (104636-6), sensor active % (104637-4), and the CGM summary (107931-8) holding
  them as `hasMember`.
- The `$cgm-summary` operation answers a Parameters resource: one `valueQuantity` per
  metric, named as in issue 6.

Pure: no I/O; ids and references are the caller's.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from openrecord.care.glucose.metrics import DAY_US, PeriodSummary
from openrecord.care.glucose.readings import Limit, Reading, datetime_to_us, mmoll_to_mgdl
from openrecord.care.glucose.readings import us_to_datetime as _datetime

__all__ = [
    "CATEGORY",
    "LOINC",
    "MASS_READING_CODE",
    "MOLES_READING_CODE",
    "PROFILE_BASE",
    "READING_CODES",
    "SUMMARY_CODES",
    "UCUM",
    "days_of_wear",
    "observation_to_reading",
    "reading_id",
    "reading_observation",
    "summary_observations",
    "summary_parameters",
]

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
PROFILE_BASE = "http://hl7.org/fhir/uv/cgm/StructureDefinition/"
MASS_READING_CODE = "99504-3"
"""Glucose [Mass/volume] in Interstitial fluid (the IG's mg/dL sensor reading)."""
MOLES_READING_CODE = "105272-9"
"""Glucose [Moles/volume] in Interstitial fluid (the IG's mmol/L sensor reading)."""
READING_CODES = (MASS_READING_CODE, MOLES_READING_CODE)
CATEGORY = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "laboratory",
        }
    ]
}
SUMMARY_CODES = {
    "summary": "107931-8",
    "mean": "97507-8",
    "times-in-ranges": "106793-3",
    "gmi": "97506-0",
    "cv": "104638-2",
    "days-of-wear": "104636-6",
    "sensor-active": "104637-4",
    "time-very-low": "104642-4",
    "time-low": "104641-6",
    "time-in-range": "97510-2",
    "time-high": "104640-8",
    "time-very-high": "104639-0",
}
_COMPARATOR = {Limit.LOW: "<", Limit.HIGH: ">"}
_LIMIT = {"<": Limit.LOW, "<=": Limit.LOW, ">": Limit.HIGH, ">=": Limit.HIGH}
_ID_NAMESPACE = uuid.UUID("5d1b3c9e-6f0a-4c57-9a53-1f3b2d7c8e40")


def _instant(time_us: int) -> str:
    """A FHIR dateTime in UTC: whole seconds unless the instant has a fraction."""
    moment = _datetime(time_us)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def _quantity(value: float, code: str, unit: str | None = None) -> dict[str, Any]:
    return {"value": value, "unit": unit or code, "system": UCUM, "code": code}


def _concept(code: str) -> dict[str, Any]:
    return {"coding": [{"system": LOINC, "code": code}]}


def reading_id(patient: str, time_us: int) -> str:
    """A stable Observation id for a patient's reading at an instant (re-imports update it)."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{patient}|{time_us}"))


def reading_observation(reading: Reading, patient: str, id: str | None = None) -> dict[str, Any]:
    """A sensor-reading Observation (mg/dL profile) of `patient`'s `reading`."""
    quantity = _quantity(round(reading.mg_dl, 3), "mg/dL", "mg/dl")
    if reading.limit is not None:
        quantity["comparator"] = _COMPARATOR[reading.limit]
    out: dict[str, Any] = {"resourceType": "Observation"}
    if id is not None:
        out["id"] = id
    out |= {
        "meta": {"profile": [PROFILE_BASE + "cgm-sensor-reading-mass-per-volume"]},
        "status": "final",
        "category": [CATEGORY],
        "code": _concept(MASS_READING_CODE),
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": _instant(reading.time_us),
        "valueQuantity": quantity,
    }
    return out


def _effective_us(text: str) -> int | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return datetime_to_us(moment)


def observation_to_reading(observation: dict[str, Any]) -> Reading | None:
    """The reading of a sensor-reading Observation (either unit), or None when it is not one.

    Observations that are not final/amended/corrected, carry no value or no instant are
    not readings (a `dataAbsentReason` reading has no glucose to count).
    """
    codes = {
        c.get("code")
        for c in (observation.get("code") or {}).get("coding") or []
        if c.get("system") == LOINC
    }
    if not codes & set(READING_CODES):
        return None
    if observation.get("status") not in ("final", "amended", "corrected"):
        return None
    quantity = observation.get("valueQuantity")
    effective = observation.get("effectiveDateTime")
    if not isinstance(quantity, dict) or not isinstance(effective, str):
        return None
    value = quantity.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    code = quantity.get("code")
    if code == "mmol/L":
        mg_dl = mmoll_to_mgdl(float(value))
    elif code == "mg/dL":
        mg_dl = float(value)
    else:
        return None
    time_us = _effective_us(effective)
    if time_us is None:
        return None
    return Reading(time_us, mg_dl, _LIMIT.get(quantity.get("comparator", "")))


def days_of_wear(summary: PeriodSummary, times_us: Iterable[int]) -> int:
    """Days of the period (24-hour steps from its start) that hold at least one reading."""
    return len(
        {
            (t - summary.start_us) // DAY_US
            for t in times_us
            if summary.start_us <= t < summary.end_us
        }
    )


_PARAMETER_UNITS = {
    "mean": "mg/dL",
    "sd": "mg/dL",
    "cv": "%",
    "gmi": "%",
    "time-very-low": "%",
    "time-low": "%",
    "time-in-range": "%",
    "time-high": "%",
    "time-very-high": "%",
    "time-tight-range": "%",
    "active-percent": "%",
    "days": "d",
    "lbgi": "1",
    "hbgi": "1",
    "gri": "1",
    "mage": "mg/dL",
}


def summary_parameters(summary: PeriodSummary) -> dict[str, Any]:
    """`$cgm-summary`'s answer: one valueQuantity per metric (absent when undefined, e.g.
    no readings in the period, or SD and MAGE of a single reading)."""
    values = summary.to_json("mg/dL")
    out = []
    for name, code in _PARAMETER_UNITS.items():
        value = values.get(name)
        if value is None:
            continue
        out.append({"name": name, "valueQuantity": _quantity(float(value), code)})
    return {"resourceType": "Parameters", "parameter": out}


def _period(summary: PeriodSummary) -> dict[str, str]:
    return {"start": _instant(summary.start_us), "end": _instant(summary.end_us)}


def summary_observations(
    summary: PeriodSummary, patient: str, ids: dict[str, str], wear_days: int
) -> list[dict[str, Any]]:
    """The IG's summary Observations of `summary`, the CGM summary (107931-8) first.

    `ids` names each Observation's id by key: summary, mean, times-in-ranges, gmi, cv,
    days-of-wear, sensor-active. Metrics that are undefined (no readings) are left out,
    and so is the summary then (its profile requires every member but the mean).
    """
    stats = summary.stats
    subject = {"reference": f"Patient/{patient}"}

    def observation(key: str, profile: str, **value: Any) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "id": ids[key],
            "meta": {"profile": [PROFILE_BASE + profile]},
            "status": "final",
            "category": [CATEGORY],
            "code": _concept(SUMMARY_CODES[key]),
            "subject": subject,
            "effectivePeriod": _period(summary),
            **value,
        }

    members: list[dict[str, Any]] = []
    if stats.mean is not None:
        members.append(
            observation(
                "mean",
                "cgm-summary-mean-glucose-mass-per-volume",
                valueQuantity=_quantity(stats.mean, "mg/dL", "mg/dl"),
            )
        )
    bands = (
        ("time-very-low", stats.time_very_low),
        ("time-low", stats.time_low),
        ("time-in-range", stats.time_in_range),
        ("time-high", stats.time_high),
        ("time-very-high", stats.time_very_high),
    )
    if all(value is not None for _, value in bands):
        members.append(
            observation(
                "times-in-ranges",
                "cgm-summary-times-in-ranges",
                component=[
                    {"code": _concept(SUMMARY_CODES[key]), "valueQuantity": _quantity(value, "%")}
                    for key, value in bands
                    if value is not None
                ],
            )
        )
    if stats.gmi is not None:
        members.append(
            observation("gmi", "cgm-summary-gmi", valueQuantity=_quantity(stats.gmi, "%"))
        )
    if stats.cv is not None:
        members.append(
            observation(
                "cv", "cgm-summary-coefficient-of-variation", valueQuantity=_quantity(stats.cv, "%")
            )
        )
    members.append(
        observation(
            "days-of-wear",
            "cgm-summary-days-of-wear",
            valueQuantity=_quantity(wear_days, "d", "days"),
        )
    )
    members.append(
        observation(
            "sensor-active",
            "cgm-summary-sensor-active-percentage",
            valueQuantity=_quantity(summary.active_percent, "%"),
        )
    )
    if len(members) < 6:
        return members
    parent = observation(
        "summary",
        "cgm-summary",
        hasMember=[{"reference": f"Observation/{m['id']}"} for m in members],
    )
    return [parent, *members]
