"""The alert rules on crafted sequences of 5-minute readings.

Each sequence is fed as it would arrive: after every new reading the rules run at that
reading's time with the episodes the previous run left, and the alerts are collected.
Expected values follow from the documented rules: thresholds 54/70/250 mg/dL with a
5 mg/dL hysteresis, rates from a least-squares line over 15 minutes (for exactly
linear data the slope is the data's own), a low predicted 20 minutes ahead by the line
over 20 minutes, stale after 20 minutes without data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from openrecord.care.alerts.rules import Alert, Episode, evaluate, slope
from openrecord.care.alerts.settings import AlertKind, AlertSettings
from openrecord.care.glucose.readings import Reading

MIN = 60_000_000
T0 = 1_717_200_000_000_000  # 2024-06-01T00:00:00Z
DEFAULTS = AlertSettings()
# the level alerts alone: a steady fall would also predict a low and trip rate alerts
LEVELS = AlertSettings(
    disabled=frozenset({AlertKind.PREDICTED_LOW, AlertKind.FALLING, AlertKind.FALLING_RAPIDLY})
)


def series(values: Sequence[float], start: int = T0, step_min: float = 5) -> list[Reading]:
    return [Reading(start + int(i * step_min * MIN), v) for i, v in enumerate(values)]


def feed(
    readings: Sequence[Reading],
    settings: AlertSettings = DEFAULTS,
    episodes: dict[AlertKind, Episode] | None = None,
) -> tuple[list[Alert], dict[AlertKind, Episode]]:
    """Run the rules after each reading arrives; all alerts, and the final episodes."""
    state = dict(episodes or {})
    fired: list[Alert] = []
    for i, reading in enumerate(readings):
        result = evaluate(readings[: i + 1], reading.time_us, settings, state)
        fired += result.alerts
        state = result.episodes
    return fired, state


def kinds(alerts: Sequence[Alert]) -> list[str]:
    return [a.kind.value for a in alerts]


def test_a_low_episode_fires_once() -> None:
    # 5-minute steps of at most 5 mg/dL: 1 mg/dL/min, no rate alert
    alerts, state = feed(series([90, 85, 80, 75, 72, 68, 66, 65, 67, 69, 71, 73]), LEVELS)
    assert kinds(alerts) == ["low"]
    assert alerts[0].time_us == T0 + 25 * MIN and alerts[0].mg_dl == 68
    assert state[AlertKind.LOW].active  # 73 < 70 + 5: still the same episode


def test_recovery_then_a_new_low_fires_again() -> None:
    values = [80, 75, 72, 68, 66, 70, 74, 76, 78, 74, 71, 69]
    alerts, _ = feed(series(values), LEVELS)
    low = [a for a in alerts if a.kind is AlertKind.LOW]
    # ends at 76 (≥ 75); the second episode starts at 69
    assert [a.mg_dl for a in low] == [68, 69]


def test_hovering_at_the_threshold_is_one_episode() -> None:
    alerts, _ = feed(series([72, 69, 71, 69, 72, 69, 71, 69]), LEVELS)
    assert kinds(alerts) == ["low"]


def test_urgent_low_covers_low() -> None:
    # two readings: no rate (needs 3 over 10 minutes)
    alerts, state = feed(series([80, 50]), LEVELS)
    assert kinds(alerts) == ["urgent-low"]
    assert state[AlertKind.LOW].active and state[AlertKind.LOW].fired_us is not None
    # urgent low ends at 59 (54 + 5); low persists and was covered: nothing new
    more, _ = feed(series([80, 50, 60], step_min=10), LEVELS)
    assert kinds(more) == ["urgent-low"]


def test_low_then_urgent_low_escalates() -> None:
    alerts, _ = feed(series([66, 62, 58, 52], step_min=10), LEVELS)
    assert kinds(alerts) == ["low", "urgent-low"]


def test_snooze_suppresses_until_it_runs_out() -> None:
    snoozed = {AlertKind.LOW: Episode(snoozed_until_us=T0 + 30 * MIN)}
    readings = series([75, 68, 66, 65, 64, 65, 66, 67, 68])
    alerts, state = feed(readings, LEVELS, snoozed)
    # low from 5 min on, snoozed until 30 min: fires at the first run at or after 30
    assert kinds(alerts) == ["low"]
    assert alerts[0].time_us == T0 + 30 * MIN
    assert state[AlertKind.LOW].fired_us == T0 + 30 * MIN


def test_snooze_during_a_notified_episode_fires_again_after_it() -> None:
    alerts, state = feed(series([68, 66]), LEVELS)
    assert kinds(alerts) == ["low"]
    state[AlertKind.LOW] = replace(state[AlertKind.LOW], snoozed_until_us=T0 + 20 * MIN)
    later = series([68, 66, 65, 64, 63, 64, 65])  # through 30 min
    fired: list[Alert] = []
    for i in range(2, len(later)):
        result = evaluate(later[: i + 1], later[i].time_us, LEVELS, state)
        fired += result.alerts
        state = result.episodes
    assert [(a.kind.value, a.time_us) for a in fired] == [("low", T0 + 20 * MIN)]


def test_snooze_of_another_kind_does_not_suppress() -> None:
    alerts, _ = feed(
        series([75, 66]), episodes={AlertKind.HIGH: Episode(snoozed_until_us=T0 + 99 * MIN)}
    )
    assert kinds(alerts) == ["low"]


def test_stale_data_fires_once_and_again_after_data_came_back() -> None:
    readings = series([120, 121, 122])
    _, state = feed(readings)
    last = readings[-1].time_us
    fired: list[Alert] = []
    for minutes in (10, 19, 20, 25, 40, 60):
        result = evaluate(readings, last + minutes * MIN, DEFAULTS, state)
        fired += result.alerts
        state = result.episodes
    assert [(a.kind.value, a.minutes_without_data) for a in fired] == [("stale", 20)]
    # a reading arrives: the episode ends; silence again fires again
    back = [*readings, Reading(last + 65 * MIN, 118)]
    result = evaluate(back, last + 65 * MIN, DEFAULTS, state)
    assert result.alerts == [] and not result.episodes[AlertKind.STALE].active
    again = evaluate(back, last + 90 * MIN, DEFAULTS, result.episodes)
    assert kinds(again.alerts) == ["stale"]


def test_stale_data_leaves_the_level_conditions_as_they_were() -> None:
    readings = series([75, 66])
    _, state = feed(readings)
    assert state[AlertKind.LOW].active
    result = evaluate(readings, readings[-1].time_us + 30 * MIN, DEFAULTS, state)
    assert kinds(result.alerts) == ["stale"]
    assert result.episodes[AlertKind.LOW] == state[AlertKind.LOW]


def test_stale_from_the_newest_known_reading_without_recent_ones() -> None:
    result = evaluate([], T0 + 21 * MIN, DEFAULTS, {}, last_reading_us=T0)
    assert kinds(result.alerts) == ["stale"]
    assert evaluate([], T0, DEFAULTS, {}).alerts == []  # never any data: nothing to miss


def test_rising_and_rapidly_rising() -> None:
    # +12.5 mg/dL per 5 min = 2.5 mg/dL/min; the first 3 readings span 10 minutes
    alerts, _ = feed(series([100, 112.5, 125, 137.5]))
    assert kinds(alerts) == ["rising"]
    assert abs((alerts[0].rate or 0) - 2.5) < 1e-9
    # 3.5 mg/dL/min: rapidly rising covers rising
    alerts, _ = feed(series([100, 117.5, 135, 152.5]))
    assert kinds(alerts) == ["rising-rapidly"]


def test_falling_rate_with_hysteresis() -> None:
    # -2.2 mg/dL/min, then flattening to -1.6 (still > 2 - 0.5 = 1.5: same episode),
    # then -1.0: over; -2.2 again: a new episode
    values = [200, 189, 178, 167, 159, 151, 146, 141, 136, 125, 114, 103]
    alerts, _ = feed(series(values))
    falling = [a for a in alerts if a.kind is AlertKind.FALLING]
    assert len(falling) == 2


def test_least_squares_slope_matches_a_hand_calculation() -> None:
    readings = series([100, 104, 101, 110])  # minutes 0, 5, 10, 15 → x = -15, -10, -5, 0
    found = slope(readings, 15)
    assert found is not None
    xs, ys = [-15, -10, -5, 0], [100, 104, 101, 110]
    mx, my = sum(xs) / 4, sum(ys) / 4
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    assert abs(found[0] - b) < 1e-12
    assert abs(found[1] - (my - b * mx)) < 1e-12
    assert slope(readings[:2], 15) is None  # two readings: no rate
    assert slope(series([100, 101, 102], step_min=4), 15) is None  # span 8 < 10 minutes


def test_predicted_low_within_20_minutes() -> None:
    # -1.2 mg/dL/min; at 98 (three readings over 10 minutes) the line predicts
    # 98 - 24 = 74: not yet; at 92 it predicts 68 < 70
    readings = series([110, 104, 98, 92, 86])
    alerts, state = feed(readings)
    assert kinds(alerts) == ["predicted-low"]
    assert alerts[0].time_us == readings[3].time_us
    assert abs((alerts[0].predicted or 0) - 68) < 1e-9
    assert state[AlertKind.PREDICTED_LOW].active  # 62 predicted at 86: the same episode


def test_predicted_low_comes_before_the_low() -> None:
    alerts, _ = feed(series([90, 84, 78, 72, 66]))
    assert kinds(alerts) == ["predicted-low", "low"]  # at 78 (54 predicted), then at 66


def test_no_predicted_low_when_already_low() -> None:
    assert kinds(feed(series([66, 64, 62]))[0]) == ["low"]


def test_disabled_kinds_and_alerts_off() -> None:
    off = AlertSettings(disabled=frozenset({AlertKind.LOW}))
    assert kinds(feed(series([80, 66]), off)[0]) == []
    assert kinds(feed(series([80, 50]), off)[0]) == ["urgent-low"]
    assert feed(series([80, 40]), AlertSettings(enabled=False))[0] == []


def test_high_threshold_is_configurable() -> None:
    assert kinds(feed(series([190, 205]), AlertSettings(high=200))[0]) == ["high"]
    assert kinds(feed(series([190, 205]))[0]) == []
    # ends below high - 5: 196 keeps it, 194 ends it, 201 starts a new one
    alerts, _ = feed(series([205, 196, 194, 201], step_min=10), AlertSettings(high=200))
    assert kinds(alerts) == ["high", "high"]


def test_readings_after_now_are_ignored() -> None:
    readings = series([80, 60])
    assert evaluate(readings, T0 + MIN, DEFAULTS, {}).alerts == []
