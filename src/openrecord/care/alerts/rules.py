"""Glucose alert rules: which conditions hold, and which of them fire a notification.

Conditions, judged on the readings of the last hour up to `now`:

- **urgent-low** / **low** / **high**: the latest reading < urgent-low, < low, > high.
- **rising** / **rising-rapidly** / **falling** / **falling-rapidly**: the rate of change
  is the slope of the least-squares line through the readings of the 15 minutes up to
  the latest one (at least 3 readings spanning at least 10 minutes), in mg/dL per
  minute: ≥ rise-rate / ≥ rapid-rise-rate, ≤ -fall-rate / ≤ -rapid-fall-rate.
- **predicted-low**: the least-squares line through the readings of the last 20
  minutes (same minimum), evaluated `predicted-low-minutes` after the latest reading,
  is below low while the latest reading is not.
- **stale**: no reading for `stale-minutes` (signal loss, sensor off, uploader down).

A condition that needs the latest reading (all but stale) is left as it was while the
data are stale: nothing is known about it then.

Episodes: each kind has a state (active, when it fired, snoozed until). A condition
starts an episode; the episode ends only once the value is back past the threshold by
the hysteresis (5 mg/dL; 0.5 mg/dL/min for rates) — a reading hovering at 69-71 mg/dL
is one episode, not ten. An alert fires when an episode starts, and again only after
it has ended and a new one started, or when a snooze that fell inside the episode has
run out while the condition persists. While a kind is snoozed it does not fire. A more
severe kind of the same family (urgent-low over low over predicted-low, rapidly over
not) starting or active covers the milder one: the milder episode counts as notified.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from openrecord.care.alerts.settings import AlertKind, AlertSettings
from openrecord.care.glucose.readings import Reading

__all__ = [
    "PREDICTION_WINDOW_MINUTES",
    "RATE_WINDOW_MINUTES",
    "Alert",
    "Episode",
    "Evaluation",
    "evaluate",
    "slope",
]

RATE_WINDOW_MINUTES = 15.0
PREDICTION_WINDOW_MINUTES = 20.0
_MIN_READINGS = 3
_MIN_SPAN_MINUTES = 10.0
_MINUTE_US = 60_000_000

# kind → the kinds whose being active covers it (more severe, same family)
_COVERED_BY: dict[AlertKind, tuple[AlertKind, ...]] = {
    AlertKind.LOW: (AlertKind.URGENT_LOW,),
    AlertKind.PREDICTED_LOW: (AlertKind.LOW, AlertKind.URGENT_LOW),
    AlertKind.RISING: (AlertKind.RISING_RAPIDLY,),
    AlertKind.FALLING: (AlertKind.FALLING_RAPIDLY,),
}


@dataclass(frozen=True, slots=True)
class Episode:
    """The state of one alert kind for one patient."""

    active: bool = False
    started_us: int | None = None
    fired_us: int | None = None
    snoozed_until_us: int | None = None


@dataclass(frozen=True, slots=True)
class Alert:
    """A notification to send: what, when, and the numbers behind it."""

    kind: AlertKind
    time_us: int
    mg_dl: float | None  # the latest reading
    rate: float | None  # mg/dL per minute
    predicted: float | None  # mg/dL, predicted-low only
    minutes_without_data: float | None  # stale only

    @property
    def message(self) -> str:
        """The notification text (it goes to the patient's record, not to logs)."""
        value = f"{self.mg_dl:.0f} mg/dL" if self.mg_dl is not None else ""
        rate = f"{self.rate:+.1f} mg/dL/min" if self.rate is not None else ""
        texts = {
            AlertKind.URGENT_LOW: f"Urgent low glucose: {value}",
            AlertKind.LOW: f"Low glucose: {value}",
            AlertKind.HIGH: f"High glucose: {value}",
            AlertKind.RISING: f"Glucose rising: {value}, {rate}",
            AlertKind.RISING_RAPIDLY: f"Glucose rising rapidly: {value}, {rate}",
            AlertKind.FALLING: f"Glucose falling: {value}, {rate}",
            AlertKind.FALLING_RAPIDLY: f"Glucose falling rapidly: {value}, {rate}",
            AlertKind.PREDICTED_LOW: (
                f"Low glucose predicted soon: {value} now, {self.predicted or 0:.0f} mg/dL expected"
            ),
            AlertKind.STALE: (f"No glucose data for {self.minutes_without_data or 0:.0f} minutes"),
        }
        return texts[self.kind]


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The new state of every kind, and the alerts to send now."""

    episodes: dict[AlertKind, Episode]
    alerts: list[Alert]


def slope(readings: Sequence[Reading], window_minutes: float) -> tuple[float, float] | None:
    """(slope mg/dL/min, line value at the latest reading) of the least-squares line
    through the readings of the `window_minutes` up to the latest; None when fewer than
    3 readings or they span less than 10 minutes."""
    if not readings:
        return None
    last = readings[-1].time_us
    chosen = [r for r in readings if last - r.time_us <= window_minutes * _MINUTE_US]
    if len(chosen) < _MIN_READINGS:
        return None
    xs = [(r.time_us - last) / _MINUTE_US for r in chosen]  # minutes, ≤ 0
    if -xs[0] < _MIN_SPAN_MINUTES:
        return None
    ys = [r.mg_dl for r in chosen]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return b, my - b * mx  # the line at x = 0, the latest reading


def _conditions(
    readings: Sequence[Reading],
    now_us: int,
    settings: AlertSettings,
    previous: Mapping[AlertKind, Episode],
    last_reading_us: int | None,
) -> tuple[dict[AlertKind, bool], dict[str, float | None]]:
    """Whether each kind's condition holds now (absent: unknown), and the numbers."""
    held: dict[AlertKind, bool] = {}
    facts: dict[str, float | None] = {"mg_dl": None, "rate": None, "predicted": None}
    newest = max(
        [t for t in (last_reading_us, readings[-1].time_us if readings else None) if t is not None],
        default=None,
    )
    if newest is not None:
        gap = (now_us - newest) / _MINUTE_US
        facts["gap"] = gap
        held[AlertKind.STALE] = gap >= settings.stale_minutes
    if not readings or held.get(AlertKind.STALE, False):
        return held, facts

    def was(kind: AlertKind) -> bool:
        return previous.get(kind, Episode()).active

    h = settings.hysteresis
    value = readings[-1].mg_dl
    facts["mg_dl"] = value
    for kind, limit in ((AlertKind.URGENT_LOW, settings.urgent_low), (AlertKind.LOW, settings.low)):
        held[kind] = value < (limit + h if was(kind) else limit)
    held[AlertKind.HIGH] = value > (settings.high - h if was(AlertKind.HIGH) else settings.high)

    rate_line = slope(readings, RATE_WINDOW_MINUTES)
    if rate_line is not None:
        rate = facts["rate"] = rate_line[0]
        rh = settings.rate_hysteresis
        for kind, limit, sign in (
            (AlertKind.RISING, settings.rise_rate, 1.0),
            (AlertKind.RISING_RAPIDLY, settings.rapid_rise_rate, 1.0),
            (AlertKind.FALLING, settings.fall_rate, -1.0),
            (AlertKind.FALLING_RAPIDLY, settings.rapid_fall_rate, -1.0),
        ):
            held[kind] = sign * rate > limit - rh if was(kind) else sign * rate >= limit

    line = slope(readings, PREDICTION_WINDOW_MINUTES)
    if line is not None:
        predicted = facts["predicted"] = line[1] + line[0] * settings.predicted_low_minutes
        if was(AlertKind.PREDICTED_LOW):
            held[AlertKind.PREDICTED_LOW] = predicted < settings.low + h
        else:
            held[AlertKind.PREDICTED_LOW] = predicted < settings.low <= value
    return held, facts


def evaluate(
    readings: Sequence[Reading],
    now_us: int,
    settings: AlertSettings,
    previous: Mapping[AlertKind, Episode],
    *,
    last_reading_us: int | None = None,
) -> Evaluation:
    """Judge every condition at `now` and decide what fires (see the module docstring).

    `readings`: the recent readings in time order (the last hour is plenty);
    `last_reading_us`: the newest reading known at all, for stale data when `readings`
    is empty. Pure: the caller stores the new episodes and sends the alerts.
    """
    ordered = sorted((r for r in readings if r.time_us <= now_us), key=lambda r: r.time_us)
    held, facts = _conditions(ordered, now_us, settings, previous, last_reading_us)
    episodes: dict[AlertKind, Episode] = {}
    for kind in AlertKind:
        before = previous.get(kind, Episode())
        on = held.get(kind, before.active) and settings.enabled and kind not in settings.disabled
        if on and not before.active:
            episodes[kind] = replace(before, active=True, started_us=now_us, fired_us=None)
        elif not on and before.active:
            episodes[kind] = replace(before, active=False, started_us=None, fired_us=None)
        else:
            episodes[kind] = before

    alerts: list[Alert] = []
    for kind in AlertKind:
        episode = episodes[kind]
        if not episode.active:
            continue
        covered = any(episodes[k].active for k in _COVERED_BY.get(kind, ()))
        snoozed = episode.snoozed_until_us is not None and now_us < episode.snoozed_until_us
        due = episode.fired_us is None or (
            episode.snoozed_until_us is not None
            and episode.fired_us < episode.snoozed_until_us <= now_us
        )
        if not due or snoozed:
            continue
        episodes[kind] = replace(episode, fired_us=now_us)
        if covered:
            continue  # the more severe episode's notification stands for this one
        alerts.append(
            Alert(
                kind,
                now_us,
                facts.get("mg_dl"),
                facts.get("rate"),
                facts.get("predicted") if kind is AlertKind.PREDICTED_LOW else None,
                facts.get("gap") if kind is AlertKind.STALE else None,
            )
        )
    return Evaluation(episodes, alerts)
