"""Which requested scopes a client's registered scopes cover (narrowing only)."""

from __future__ import annotations

import pytest

from openrecord.auth.clients import scopes_covered


@pytest.mark.parametrize(
    ("requested", "allowed", "missing"),
    [
        (["system/Patient.rs"], ["system/*.rs"], []),
        (["system/Patient.r"], ["system/*.rs"], []),
        (["system/*.cruds"], ["system/*.rs"], ["system/*.cruds"]),
        (["system/*.rs"], ["system/Patient.rs"], ["system/*.rs"]),
        (["patient/Observation.rs"], ["system/*.rs"], ["patient/Observation.rs"]),
        (["system/Observation.rs?category=laboratory"], ["system/Observation.rs"], []),
        (
            ["system/Observation.rs"],
            ["system/Observation.rs?category=laboratory"],
            ["system/Observation.rs"],
        ),
        (["openid", "offline_access"], [], []),
        (["system/Patient.read"], ["system/*.rs"], []),  # v1 read = rs
    ],
)
def test_scopes_covered(requested: list[str], allowed: list[str], missing: list[str]) -> None:
    assert scopes_covered(requested, allowed) == missing
