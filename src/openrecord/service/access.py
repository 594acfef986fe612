"""The one access-control decision point, called by the record service on every interaction.

Today every context the server builds is unrestricted (`openrecord serve` has no
authorization yet); the SMART authorization issue implements scopes, patient
compartments and consent here, and nowhere else.
"""

from __future__ import annotations

from typing import Literal

from openrecord.fhir.outcome import FHIRError
from openrecord.service.context import SecurityContext

__all__ = ["Interaction", "check"]

Interaction = Literal[
    "read", "vread", "search", "history", "create", "update", "patch", "delete", "operation"
]


def check(ctx: SecurityContext, interaction: Interaction, resource_type: str | None) -> None:
    """Raise 403 unless `ctx` may perform `interaction` on `resource_type`."""
    if ctx.unrestricted:
        return
    raise FHIRError.of(
        403, "forbidden", f"{interaction} on {resource_type or 'the server'} is not permitted"
    )
