"""The FHIRPath invariants (constraints) of the base R4 spec, as checks on JSON values.

Validation runs on every write and fhirpathpy costs 50-500 µs per evaluation, so
the invariants met on ordinary clinical data are re-implemented natively (tables in
`invariants_datatypes` and `invariants_clinical`, helpers in `invariants_support`);
the rest are compiled once with fhirpathpy and evaluated only where the element
occurs. Invariants the validator enforces structurally (ele-1, ext-1, dom-2..5,
ref-1) never come through here; known-broken ones are skipped (see SKIPPED).

Semantics: an invariant is violated only when it evaluates to `false`; an empty
result (FHIRPath's "unknown", e.g. comparing dates of different precision) passes.
Native checks follow the expressions; where an element they test is itself missing
(a required element, already reported by cardinality) they may report what FHIRPath
would leave empty. Where the R4 expression is defective they check its evident intent
and say so (con-3, que-7, the *-0 name rules).

fhirpathpy gaps found and covered here: it lacks hasValue() (supplied as a user
function), compares dateTimes without normalising zones (per-1, mdd-1, Task inv-1
are native), evaluates `answer is Boolean` on a choice as false (que-7 is native),
and prints trace() output (silenced).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhirpathpy import compile as fhirpath_compile
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models

from openrecord.fhir.definitions import definitions
from openrecord.fhir.invariants_clinical import CLINICAL_CHECKS
from openrecord.fhir.invariants_datatypes import DATATYPE_CHECKS, DATATYPE_CHECKS_BY_EXPRESSION
from openrecord.fhir.invariants_support import Json, NativeCheck, choice_keys, compare_datetimes
from openrecord.fhir.outcome import Severity

__all__ = [
    "FAILED_INVARIANTS",
    "SKIPPED",
    "SKIPPED_PREFIX",
    "STRUCTURAL",
    "Invariant",
    "choice_keys",
    "compare_datetimes",
    "evaluate_invariant",
    "invariants_for",
]

# Native checks, keyed by (declaring type or "*", key); the two tables share no key.
NATIVE: dict[tuple[str, str], NativeCheck] = {**DATATYPE_CHECKS, **CLINICAL_CHECKS}
# Checks shared by many types, matched on the expression text.
NATIVE_BY_EXPRESSION: dict[str, NativeCheck] = DATATYPE_CHECKS_BY_EXPRESSION

# Enforced by the validator's own walk (cheaper, and with precise locations).
STRUCTURAL = frozenset({"ele-1", "ext-1", "dom-2", "dom-3", "dom-4", "dom-5", "ref-1"})

# Invariants not evaluated, and why.
SKIPPED: dict[str, str] = {
    "txt-1": "htmlChecks() is not a FHIRPath function; xhtml content rules need an XHTML parser",
    "txt-2": "htmlChecks() is not a FHIRPath function; xhtml content rules need an XHTML parser",
    "eld-11": "as written it cannot fail: type.select(<boolean>) is never empty when types exist",
}

# Keys whose expression fhirpathpy failed to compile or crashed on; they pass.
FAILED_INVARIANTS: set[str] = set()


@dataclass(frozen=True, slots=True)
class Invariant:
    """One constraint, ready to run on an element instance."""

    key: str
    severity: Severity  # "error" or "warning"
    human: str
    native: NativeCheck | None
    expression: str | None

    def holds(self, value: Any, type_path: str, resource: Json, root: Json) -> bool:
        """False only when the constraint evaluates to false on `value`."""
        if self.native is not None:
            return self.native(value, resource)
        assert self.expression is not None
        return _fhirpath_holds(self.key, self.expression, value, type_path, resource, root)


# StructureDefinition's own invariants (sdf-*) are skipped as a family: R4's are known
# to be unreliable (sdf-4 rejects the spec's logical models Definition, Event, FiveWs
# and Request), and through fhirpathpy they cost ~60 ms per StructureDefinition, ten
# times the rest of its validation. Profiles are not this server's clinical data.
SKIPPED_PREFIX = "sdf-"


def _skipped(key: str) -> bool:
    return key in SKIPPED or key.startswith(SKIPPED_PREFIX)


def invariants_for(owner: str, keys: Iterable[str]) -> tuple[Invariant, ...]:
    """The runnable invariants among `keys`, declared by the type `owner`."""
    return _invariants_for(owner, tuple(keys))


@cache
def _invariants_for(owner: str, keys: tuple[str, ...]) -> tuple[Invariant, ...]:
    tdef = definitions().types[owner]
    out: list[Invariant] = []
    for key in keys:
        if key in STRUCTURAL or _skipped(key):
            continue
        c = tdef.constraints.get(key)
        if c is None:
            continue
        native = (
            NATIVE.get((owner, key))
            or NATIVE.get(("*", key))
            or NATIVE_BY_EXPRESSION.get(c.expression or "")
        )
        if native is None and not c.expression:
            continue
        sev: Severity = "warning" if c.severity == "warning" else "error"
        out.append(Invariant(key, sev, c.human, native, None if native else c.expression))
    return tuple(out)


# ---------------------------------------------------------------------------------------
# fhirpathpy fallback


def _has_value(inputs: list[Any]) -> bool:
    """FHIRPath hasValue(), which fhirpathpy lacks: a single primitive with a value."""
    return len(inputs) == 1 and inputs[0] is not None and not isinstance(inputs[0], dict | list)


def _quiet_trace(*_: Any) -> None:
    """trace() must not print (fhirpathpy prints by default)."""


_OPTIONS = {
    "userInvocationTable": {"hasValue": {"fn": _has_value}},
    "traceFn": _quiet_trace,
}


# A JSON value with its FHIR type, so fhirpathpy can navigate choices and compare dates.
_typed_node: Callable[[Any, str], Any] = ResourceNode.create_node


@cache
def _compiled(expression: str) -> Callable[..., Any] | None:
    try:
        fn: Callable[..., Any] = fhirpath_compile(expression, models["r4"], _OPTIONS)
    except Exception:
        return None
    return fn


def evaluate_invariant(
    expression: str, value: Any, type_path: str, resource: Any, root: Any
) -> bool | None:
    """Whether the FHIRPath invariant holds on `value` (an element of FHIR type path
    `type_path`): False only when it evaluates to false, so empty passes. None when
    fhirpathpy cannot compile or evaluate it."""
    fn = _compiled(expression)
    if fn is None:
        return None
    node = _typed_node(value, type_path)
    try:
        result = fn(node, {"resource": resource, "rootResource": root, "context": value})
    except Exception:
        return None
    return bool(result != [False])


def _fhirpath_holds(
    key: str, expression: str, value: Any, type_path: str, resource: Json, root: Json
) -> bool:
    holds = evaluate_invariant(expression, value, type_path, resource, root)
    if holds is None:
        FAILED_INVARIANTS.add(key)
        return True
    return holds
