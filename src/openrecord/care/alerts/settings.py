"""A patient's glucose alert thresholds and snoozes, and their `$alert-settings` form.

Defaults: urgent low < 54 mg/dL and low < 70 (the consensus level 2 and level 1
hypoglycaemia thresholds, Battelino et al., Diabetes Care 2019;42:1593), high > 250
(the consensus "very high" level), rising/falling at ≥ 2 mg/dL/min and rapidly at
≥ 3 (the thresholds of CGM single and double trend arrows), a predicted low within
20 minutes, stale data after 20 minutes without a reading (four missed 5-minute
readings), and a hysteresis of 5 mg/dL (0.5 mg/dL/min for rates) before a condition
counts as over.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from openrecord.care.glucose.readings import MGDL_PER_MMOLL

__all__ = [
    "AlertKind",
    "AlertSettings",
    "SettingsError",
    "settings_from_json",
    "settings_from_parameters",
    "settings_parameters",
    "settings_to_json",
]

UCUM = "http://unitsofmeasure.org"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class AlertKind(StrEnum):
    URGENT_LOW = "urgent-low"
    LOW = "low"
    HIGH = "high"
    RISING = "rising"
    RISING_RAPIDLY = "rising-rapidly"
    FALLING = "falling"
    FALLING_RAPIDLY = "falling-rapidly"
    PREDICTED_LOW = "predicted-low"
    STALE = "stale"


_KINDS = frozenset(k.value for k in AlertKind)


class SettingsError(ValueError):
    """An unusable setting; `path` names the parameter (for the OperationOutcome)."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True, slots=True)
class AlertSettings:
    enabled: bool = True
    urgent_low: float = 54.0  # mg/dL
    low: float = 70.0
    high: float = 250.0
    rise_rate: float = 2.0  # mg/dL per minute
    rapid_rise_rate: float = 3.0
    fall_rate: float = 2.0
    rapid_fall_rate: float = 3.0
    predicted_low_minutes: float = 20.0
    stale_minutes: float = 20.0
    hysteresis: float = 5.0  # mg/dL
    rate_hysteresis: float = 0.5  # mg/dL per minute
    disabled: frozenset[AlertKind] = field(default_factory=frozenset)

    def check(self) -> None:
        """Raise `SettingsError` unless the thresholds make sense together."""
        if not 20 <= self.urgent_low < self.low < self.high <= 600:
            raise SettingsError("thresholds must satisfy 20 ≤ urgent-low < low < high ≤ 600", "low")
        if not 0 < self.rise_rate <= self.rapid_rise_rate <= 20:
            raise SettingsError("need 0 < rise-rate ≤ rapid-rise-rate ≤ 20", "rise-rate")
        if not 0 < self.fall_rate <= self.rapid_fall_rate <= 20:
            raise SettingsError("need 0 < fall-rate ≤ rapid-fall-rate ≤ 20", "fall-rate")
        if not 5 <= self.predicted_low_minutes <= 60:
            raise SettingsError("predicted-low-minutes must be 5 to 60", "predicted-low-minutes")
        if not 5 <= self.stale_minutes <= 24 * 60:
            raise SettingsError("stale-minutes must be 5 to 1440", "stale-minutes")
        if not 0 <= self.hysteresis <= 50:
            raise SettingsError("hysteresis must be 0 to 50 mg/dL", "hysteresis")
        if not 0 <= self.rate_hysteresis < min(self.rise_rate, self.fall_rate):
            raise SettingsError("rate-hysteresis must be below the rates", "rate-hysteresis")


# parameter name → (field, kind of value)
_GLUCOSE = {"urgent-low": "urgent_low", "low": "low", "high": "high", "hysteresis": "hysteresis"}
_RATES = {
    "rise-rate": "rise_rate",
    "rapid-rise-rate": "rapid_rise_rate",
    "fall-rate": "fall_rate",
    "rapid-fall-rate": "rapid_fall_rate",
    "rate-hysteresis": "rate_hysteresis",
}
_MINUTES = {"predicted-low-minutes": "predicted_low_minutes", "stale-minutes": "stale_minutes"}


def settings_to_json(settings: AlertSettings) -> dict[str, Any]:
    out = asdict(settings)
    out["disabled"] = sorted(k.value for k in settings.disabled)
    return out


def settings_from_json(data: dict[str, Any]) -> AlertSettings:
    """Stored settings; fields added later take their defaults."""
    known = {f.name for f in fields(AlertSettings)}
    values = {k: v for k, v in data.items() if k in known and k != "disabled"}
    disabled = frozenset(AlertKind(k) for k in data.get("disabled", ()) if k in _KINDS)
    return AlertSettings(**values, disabled=disabled)


def _quantity(name: str, value: float, code: str) -> dict[str, Any]:
    return {
        "name": name,
        "valueQuantity": {"value": round(value, 3), "unit": code, "system": UCUM, "code": code},
    }


def settings_parameters(
    settings: AlertSettings, snoozes: dict[AlertKind, int] | None = None
) -> dict[str, Any]:
    """The settings (and active snoozes: kind → µs since the epoch) as a Parameters
    resource."""
    out: list[dict[str, Any]] = [{"name": "enabled", "valueBoolean": settings.enabled}]
    for name, attr in _GLUCOSE.items():
        out.append(_quantity(name, getattr(settings, attr), "mg/dL"))
    for name, attr in _RATES.items():
        out.append(_quantity(name, getattr(settings, attr), "mg/dL/min"))
    for name, attr in _MINUTES.items():
        out.append(_quantity(name, getattr(settings, attr), "min"))
    out += [{"name": "disabled", "valueCode": k.value} for k in sorted(settings.disabled)]
    for kind, until in sorted((snoozes or {}).items()):
        out.append(
            {
                "name": "snooze",
                "part": [
                    {"name": "alert", "valueCode": kind.value},
                    {"name": "until", "valueInstant": _instant(until)},
                ],
            }
        )
    return {"resourceType": "Parameters", "parameter": out}


def _number(part: dict[str, Any], path: str, units: dict[str, float]) -> float:
    quantity = part.get("valueQuantity")
    if isinstance(quantity, dict):
        value, code = quantity.get("value"), quantity.get("code")
        if code not in units:
            raise SettingsError(
                f"unit must be one of {', '.join(units)}", f"{path}.valueQuantity.code"
            )
        if quantity.get("system") not in (None, UCUM):
            raise SettingsError("unit system must be UCUM", f"{path}.valueQuantity.system")
        path = f"{path}.valueQuantity.value"
    else:
        value, code = part.get("valueDecimal", part.get("valueInteger")), next(iter(units))
        path = f"{path}.valueDecimal"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError("expected a number (valueQuantity or valueDecimal)", path)
    return float(value) * units[str(code)]


def settings_from_parameters(
    current: AlertSettings, body: Any
) -> tuple[AlertSettings, dict[AlertKind, int | None]]:
    """Apply a Parameters body to `current`: the new settings, and the snoozes it sets
    (kind → µs since the epoch, or None to clear). Parameters not given keep their value;
    `disabled` given at all replaces the whole list (one without a value: empty it).
    `SettingsError` names the path."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise SettingsError("the body must be a Parameters resource", "resourceType")
    changes: dict[str, Any] = {}
    disabled: set[AlertKind] | None = None
    snoozes: dict[AlertKind, int | None] = {}
    parts = body.get("parameter") or []
    if not isinstance(parts, list):
        raise SettingsError("parameter must be a list", "Parameters.parameter")
    glucose_units = {"mg/dL": 1.0, "mmol/L": MGDL_PER_MMOLL}
    for i, part in enumerate(parts):
        path = f"Parameters.parameter[{i}]"
        if not isinstance(part, dict):
            raise SettingsError("each parameter must be an object", path)
        name = part.get("name")
        if name == "enabled":
            if not isinstance(part.get("valueBoolean"), bool):
                raise SettingsError("enabled needs valueBoolean", f"{path}.valueBoolean")
            changes["enabled"] = part["valueBoolean"]
        elif name in _GLUCOSE:
            changes[_GLUCOSE[name]] = _number(part, path, glucose_units)
        elif name in _RATES:
            rate_units = {"mg/dL/min": 1.0, "mmol/L/min": MGDL_PER_MMOLL}
            changes[_RATES[name]] = _number(part, path, rate_units)
        elif name in _MINUTES:
            changes[_MINUTES[name]] = _number(part, path, {"min": 1.0, "h": 60.0})
        elif name == "disabled" and "valueCode" not in part:
            disabled = disabled or set()  # `disabled` without a value: none disabled
        elif name == "disabled":
            code = part.get("valueCode")
            if code not in _KINDS:
                raise SettingsError(f"unknown alert {code!r}", f"{path}.valueCode")
            disabled = (disabled or set()) | {AlertKind(code)}
        elif name == "snooze":
            kind, until = _snooze(part, path)
            snoozes[kind] = until
        else:
            raise SettingsError(f"unknown parameter {name!r}", f"{path}.name")
    if disabled is not None:
        changes["disabled"] = frozenset(disabled)
    settings = replace(current, **changes)
    settings.check()
    return settings, snoozes


def _instant(time_us: int) -> str:
    moment = _EPOCH + timedelta(microseconds=time_us)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_instant(value: str, path: str) -> int:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or "T" not in value:
        raise SettingsError("until must be an instant with a time zone", path)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _snooze(part: dict[str, Any], path: str) -> tuple[AlertKind, int | None]:
    """A `snooze` parameter: its alert, and until when (absent: clear the snooze)."""
    kind: AlertKind | None = None
    until: int | None = None
    for j, sub in enumerate(part.get("part") or []):
        sub_path = f"{path}.part[{j}]"
        if not isinstance(sub, dict):
            raise SettingsError("each part must be an object", sub_path)
        if sub.get("name") == "alert":
            code = sub.get("valueCode")
            if code not in _KINDS:
                raise SettingsError(f"unknown alert {code!r}", f"{sub_path}.valueCode")
            kind = AlertKind(code)
        elif sub.get("name") == "until":
            value = sub.get("valueInstant", sub.get("valueDateTime"))
            if not isinstance(value, str):
                raise SettingsError("until needs valueInstant", f"{sub_path}.valueInstant")
            until = _parse_instant(value, f"{sub_path}.valueInstant")
        else:
            raise SettingsError(f"unknown part {sub.get('name')!r}", f"{sub_path}.name")
    if kind is None:
        raise SettingsError("snooze needs an alert part", f"{path}.part")
    return kind, until
