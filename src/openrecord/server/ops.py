"""The feature operations: importing this module registers them all (see operations.py)."""

from __future__ import annotations

from openrecord.server import (
    ops_agp,
    ops_alerts,
    ops_cgm_submit,
    ops_everything,
    ops_glucose,
    ops_vitals,
)

__all__ = [
    "ops_agp",
    "ops_alerts",
    "ops_cgm_submit",
    "ops_everything",
    "ops_glucose",
    "ops_vitals",
]
