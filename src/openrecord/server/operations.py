"""Named FHIR operations (`$name`) that features add without touching the REST router.

A feature registers its operation in its own module (`server/ops_*.py`):

    @operation("cgm-summary", types=("Patient",), level="instance", methods=("GET",))
    async def cgm_summary(call: OperationCall) -> Response: ...

and `server/ops.py` imports that module so the registration runs. The router
(`server/rest.py`) looks an operation up by level, type and name after its own
built-in interactions; the CapabilityStatement lists every registered operation
on its types (or at system level).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from openrecord.service.context import SecurityContext

if TYPE_CHECKING:
    from openrecord.server.rest import FHIRApi

__all__ = [
    "Operation",
    "OperationCall",
    "find_operation",
    "negotiates_itself",
    "operation",
    "registered",
]

Level = Literal["system", "type", "instance"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class OperationCall:
    """One invocation: the API (records, config, `blocking`), the request, the caller,
    the resource type (None at system level) and the id (instance level)."""

    api: FHIRApi
    request: Request
    ctx: SecurityContext
    type: str | None
    id: str | None

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run store-bound work off the event loop (as the REST interactions do)."""
        return await self.api.blocking(fn, *args)


Handler = Callable[[OperationCall], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Operation:
    name: str  # without the "$"
    level: Level
    types: tuple[str, ...]  # empty: any type (type/instance level) or system level
    methods: tuple[str, ...]
    handler: Handler
    definition: str | None  # canonical URL of the OperationDefinition, if any
    # Answers documents (SVG, PDF…) as well as FHIR JSON, so it reads `_format` and
    # `Accept` itself instead of the API's JSON-only negotiation.
    negotiates: bool = False


_REGISTRY: list[Operation] = []


def operation(
    name: str,
    *,
    level: Level,
    types: tuple[str, ...] = (),
    methods: tuple[str, ...] = ("GET", "POST"),
    definition: str | None = None,
    negotiates: bool = False,
) -> Callable[[Handler], Handler]:
    """Register `handler` as `$name` at `level` on `types`."""

    def register(handler: Handler) -> Handler:
        _REGISTRY.append(Operation(name, level, types, methods, handler, definition, negotiates))
        return handler

    return register


def find_operation(level: Level, type: str | None, name: str) -> list[Operation]:
    """The operations called `name` (no "$") at `level` that apply to `type`; the caller
    checks the method (405 when the operation exists but not for it)."""
    return [
        op
        for op in _REGISTRY
        if op.name == name
        and op.level == level
        and (level == "system" or not op.types or type in op.types)
    ]


def negotiates_itself(path: str) -> bool:
    """Whether the URL path ends in an operation that negotiates its own media type."""
    last = path.rsplit("/", 1)[-1]
    return last.startswith("$") and any(op.negotiates and op.name == last[1:] for op in _REGISTRY)


def registered() -> tuple[Operation, ...]:
    """Every registered operation (for the CapabilityStatement)."""
    return tuple(_REGISTRY)
