"""OperationOutcome issues and the one exception type every layer raises for FHIR errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["FHIRError", "Issue", "operation_outcome"]

Severity = Literal["fatal", "error", "warning", "information"]


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue: what went wrong and where (a FHIRPath `expression`)."""

    code: str  # IssueType code: invalid, structure, required, value, invariant, not-found, ...
    diagnostics: str
    severity: Severity = "error"
    expression: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "code": self.code}
        if self.diagnostics:
            out["diagnostics"] = self.diagnostics
        if self.expression:
            out["expression"] = [self.expression]
        return out


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    if not issues:
        issues = [Issue("informational", "All OK", severity="information")]
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


@dataclass(slots=True)
class FHIRError(Exception):
    """A failure that becomes an HTTP status and an OperationOutcome."""

    status: int
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls, status: int, code: str, diagnostics: str, expression: str | None = None
    ) -> FHIRError:
        return cls(status, [Issue(code, diagnostics, expression=expression)])

    def __str__(self) -> str:
        return f"{self.status}: " + "; ".join(
            f"{i.diagnostics} (at {i.expression})" if i.expression else i.diagnostics
            for i in self.issues
        )

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)
