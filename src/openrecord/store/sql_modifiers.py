"""Checks shared by the builders of top-level and contained conditions."""

from __future__ import annotations

from openrecord.store.base import UnsupportedSearch
from openrecord.store.query import Condition

__all__ = ["presence"]


def presence(c: Condition) -> tuple[bool | None, bool]:
    """(`:missing` true/false or None, whether `:not` negates) — checked: `:missing`
    needs a boolean, `:not` applies to tokens only."""
    if c.missing is not None or c.modifier == "missing":
        if c.missing is None:
            raise UnsupportedSearch(f"{c.param}:missing needs true or false")
        return c.missing, False
    negate = c.modifier == "not"
    if negate and c.kind != "token":
        raise UnsupportedSearch(f"modifier :not is not supported on {c.kind} parameters")
    return None, negate
