"""openrecord — an open-source, self-hostable FHIR R4 health-data platform."""

__version__ = "0.1.0"
__all__ = ["__version__"]
