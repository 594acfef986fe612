"""The feature operations: importing this module registers them all (see operations.py)."""

from __future__ import annotations

from openrecord.server import ops_glucose

__all__ = ["ops_glucose"]
