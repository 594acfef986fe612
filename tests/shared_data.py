"""Where the shared reference data lives, and how tests that need it behave without it.

Tests may read `../shared/data` beside the repository. In a contributor's clone it
may be absent: such tests skip with a clear reason — except under `CI=true`, where
missing data is a failure, never a silent skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["SHARED", "require_shared"]

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def require_shared(*parts: str) -> Path:
    """The path under shared/data, or skip (fail under CI=true) when it is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"shared reference data not found at {path}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (required under CI=true)")
        pytest.skip(message)
    return path
