"""Glucose alerts: per-patient thresholds and snoozes, and the pure rules that decide
which conditions hold and which of them notify (episodes, hysteresis, snooze)."""

__all__: list[str] = []
