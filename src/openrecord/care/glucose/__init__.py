"""Continuous glucose monitoring: readings, vendor-export importers, consensus metrics."""

__all__: list[str] = []
