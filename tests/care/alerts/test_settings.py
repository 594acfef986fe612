"""Alert settings: defaults, the Parameters form, units, and refusals naming the path."""

from __future__ import annotations

from typing import Any

import pytest

from openrecord.care.alerts.settings import (
    AlertKind,
    AlertSettings,
    SettingsError,
    settings_from_json,
    settings_from_parameters,
    settings_parameters,
    settings_to_json,
)


def params(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(parts)}


def qty(name: str, value: float, code: str) -> dict[str, Any]:
    return {
        "name": name,
        "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": code},
    }


def test_defaults_are_the_documented_thresholds() -> None:
    s = AlertSettings()
    assert (s.urgent_low, s.low, s.high) == (54, 70, 250)
    assert (s.rise_rate, s.rapid_rise_rate, s.fall_rate, s.rapid_fall_rate) == (2, 3, 2, 3)
    assert (s.predicted_low_minutes, s.stale_minutes) == (20, 20)


def test_parameters_change_only_what_they_name() -> None:
    body = params(
        qty("high", 13.0, "mmol/L"),  # 13 * 18.0156 mg/dL
        qty("stale-minutes", 0.5, "h"),
        {"name": "rise-rate", "valueDecimal": 2.5},
        {"name": "disabled", "valueCode": "rising"},
        {
            "name": "snooze",
            "part": [
                {"name": "alert", "valueCode": "low"},
                {"name": "until", "valueInstant": "2024-06-01T12:00:00+02:00"},
            ],
        },
    )
    settings, snoozes = settings_from_parameters(AlertSettings(), body)
    assert settings.high == pytest.approx(13.0 * 18.0156)
    assert settings.stale_minutes == 30
    assert settings.rise_rate == 2.5 and settings.low == 70
    assert settings.disabled == {AlertKind.RISING}
    # 2024-06-01T10:00:00Z in µs since the epoch
    assert snoozes == {AlertKind.LOW: 1_717_236_000 * 1_000_000}
    clear = params({"name": "snooze", "part": [{"name": "alert", "valueCode": "low"}]})
    assert settings_from_parameters(settings, clear)[1] == {AlertKind.LOW: None}
    assert settings_from_parameters(settings, clear)[0].disabled == {AlertKind.RISING}
    none = params({"name": "disabled"})
    assert settings_from_parameters(settings, none)[0].disabled == frozenset()


def test_round_trip_through_json_and_parameters() -> None:
    settings = AlertSettings(high=220, disabled=frozenset({AlertKind.STALE}))
    assert settings_from_json(settings_to_json(settings)) == settings
    out = settings_parameters(settings, {AlertKind.HIGH: 1_717_236_000_000_000})
    by_name = {p["name"]: p for p in out["parameter"]}
    assert by_name["high"]["valueQuantity"] == {
        "value": 220,
        "unit": "mg/dL",
        "system": "http://unitsofmeasure.org",
        "code": "mg/dL",
    }
    assert by_name["disabled"]["valueCode"] == "stale"
    assert by_name["snooze"]["part"][1]["valueInstant"] == "2024-06-01T10:00:00Z"
    again, _ = settings_from_parameters(AlertSettings(), out)
    assert again == settings


@pytest.mark.parametrize(
    ("part", "path"),
    [
        (qty("low", 50, "mg/dL"), "low"),  # below urgent low
        (qty("low", 70, "mg"), "Parameters.parameter[0].valueQuantity.code"),
        ({"name": "low", "valueString": "70"}, "Parameters.parameter[0].valueDecimal"),
        ({"name": "enabled", "valueString": "yes"}, "Parameters.parameter[0].valueBoolean"),
        ({"name": "loud", "valueBoolean": True}, "Parameters.parameter[0].name"),
        ({"name": "disabled", "valueCode": "sad"}, "Parameters.parameter[0].valueCode"),
        (qty("rapid-rise-rate", 1, "mg/dL/min"), "rise-rate"),
        (qty("stale-minutes", 2, "min"), "stale-minutes"),
        (
            {"name": "snooze", "part": [{"name": "until", "valueInstant": "2024-06-01"}]},
            "Parameters.parameter[0].part[0].valueInstant",
        ),
        (
            {"name": "snooze", "part": [{"name": "alert", "valueCode": "x"}]},
            "Parameters.parameter[0].part[0].valueCode",
        ),
    ],
)
def test_bad_settings_name_their_path(part: dict[str, Any], path: str) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_parameters(AlertSettings(), params(part))
    assert caught.value.path == path


def test_the_body_must_be_parameters() -> None:
    with pytest.raises(SettingsError):
        settings_from_parameters(AlertSettings(), {"resourceType": "Patient"})
