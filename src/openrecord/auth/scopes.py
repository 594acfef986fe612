"""SMART App Launch 2.x scopes, parsed into what they grant (scopes-and-launch-context).

Clinical scopes are `patient|user|system/(Type|*).<permissions>[?query]`, the
permissions a subset of `cruds` in that order (create, read, update, delete, search),
the query a granular constraint (`patient/Observation.rs?category=…|vital-signs`).
SMART v1 forms map to v2: `.read` → `rs`, `.write` → `cud`, `.*` → `cruds`. Identity
and launch scopes (`openid`, `fhirUser`, `launch/patient`, `offline_access`…) are
recognised and grant no data. Anything else is an error: a scope that is silently
dropped could widen or narrow access without anyone noticing. Pure: no FHIR
definitions are consulted here; the record service checks types and query parameters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl

__all__ = [
    "NON_DATA_SCOPES",
    "Grant",
    "Level",
    "Permission",
    "ScopeError",
    "ScopePolicy",
    "parse_scope",
    "parse_scopes",
]

Level = Literal["patient", "user", "system"]
Permission = Literal["c", "r", "u", "d", "s"]

_ORDER = "cruds"
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
# Recognised, granting no data access (identity, launch context, token lifetime).
NON_DATA_SCOPES = frozenset(
    {"openid", "fhirUser", "profile", "launch", "offline_access", "online_access"}
)
_LAUNCH_CONTEXT = re.compile(r"^launch/[A-Za-z]+$")  # launch/patient, launch/encounter
_CLINICAL = re.compile(
    r"^(?P<level>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]+)\.(?P<perm>[A-Za-z*]+)"
    r"(?:\?(?P<query>.*))?$",
    re.DOTALL,
)


class ScopeError(ValueError):
    """A scope string that is not a SMART scope this server understands."""


@dataclass(frozen=True, slots=True)
class Grant:
    """One clinical scope: `permissions` on `type` ("*": every type) at `level`,
    limited to resources matching `query` (search parameters, AND-ed) when it has any."""

    level: Level
    type: str
    permissions: frozenset[Permission]
    query: tuple[tuple[str, str], ...] = ()
    scope: str = ""  # as written, for messages

    def covers(self, permission: Permission, type: str) -> bool:
        return permission in self.permissions and self.type in ("*", type)


def parse_scope(scope: str) -> Grant | None:
    """The grant of one scope; None for a recognised scope that grants no data."""
    if scope in NON_DATA_SCOPES or _LAUNCH_CONTEXT.match(scope):
        return None
    m = _CLINICAL.match(scope)
    if m is None:
        raise ScopeError(
            f"scope {scope!r} is not a SMART scope"
            " (expected patient|user|system/Type.cruds, or openid, fhirUser, launch/patient…)"
        )
    level, type, perm, query = m["level"], m["type"], m["perm"], m["query"]
    letters = _V1.get(perm, perm)
    if not letters or any(ch not in _ORDER for ch in letters):
        raise ScopeError(
            f"scope {scope!r}: permissions must be letters of 'cruds' (or v1 read, write, *)"
        )
    if "".join(ch for ch in _ORDER if ch in letters) != letters:
        raise ScopeError(
            f"scope {scope!r}: permissions must appear once each, in the order c, r, u, d, s"
        )
    pairs: tuple[tuple[str, str], ...] = ()
    if query is not None:
        if perm in _V1:
            raise ScopeError(f"scope {scope!r}: a granular query needs v2 permissions (cruds)")
        pairs = tuple(parse_qsl(query, keep_blank_values=True))
        if not pairs or any(not k or not v for k, v in pairs):
            raise ScopeError(f"scope {scope!r}: the query must be name=value pairs")
    permissions: frozenset[Permission] = frozenset(letters)  # type: ignore[arg-type]
    return Grant(level, type, permissions, pairs, scope)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ScopePolicy:
    """What a set of scopes grants: `allowed` answers yes/no for an interaction,
    `grants_for` the grants that apply, with their levels and constraints."""

    grants: tuple[Grant, ...] = ()
    other: frozenset[str] = field(default_factory=frozenset)  # identity/launch scopes
    # grants_for answers, remembered: a token's policy lives as long as its cached
    # context, and each request asks the same few questions several times
    _chosen: dict[tuple[str, str], tuple[Grant, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def allowed(self, permission: Permission, type: str) -> bool:
        return bool(self.grants_for(permission, type))

    def grants_for(self, permission: Permission, type: str) -> tuple[Grant, ...]:
        """The grants covering `permission` on `type`, narrowed to the widest level
        present (system, then user, then patient): the layer applies one level's
        rules at a time and never widens a narrower grant by mixing them."""
        key = (permission, type)
        chosen = self._chosen.get(key)
        if chosen is None:
            chosen = self._chosen[key] = self._choose(permission, type)
        return chosen

    def _choose(self, permission: Permission, type: str) -> tuple[Grant, ...]:
        covering = [g for g in self.grants if g.covers(permission, type)]
        for level in ("system", "user", "patient"):
            chosen = tuple(g for g in covering if g.level == level)
            if chosen:
                return chosen
        return ()

    def constraints(self, permission: Permission, type: str) -> list[tuple[tuple[str, str], ...]]:
        """The granular queries limiting `permission` on `type`, any one of which a
        resource must match; empty when some grant of the chosen level has none."""
        chosen = self.grants_for(permission, type)
        if not chosen or any(not g.query for g in chosen):
            return []
        return [g.query for g in chosen]

    def level(self, permission: Permission, type: str) -> Level | None:
        chosen = self.grants_for(permission, type)
        return chosen[0].level if chosen else None

    @property
    def patient_level(self) -> bool:
        """Some grant is patient-level: the context needs a patient."""
        return any(g.level == "patient" for g in self.grants)


def parse_scopes(scopes: str | Iterable[str]) -> ScopePolicy:
    """The policy of a space-separated scope string (or of the scopes one by one);
    ScopeError names the first scope that is not understood."""
    items = scopes.split() if isinstance(scopes, str) else list(scopes)
    grants: list[Grant] = []
    other: set[str] = set()
    for scope in items:
        grant = parse_scope(scope)
        if grant is None:
            other.add(scope)
        else:
            grants.append(grant)
    return ScopePolicy(tuple(grants), frozenset(other))
