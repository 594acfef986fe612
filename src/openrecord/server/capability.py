"""The CapabilityStatement at /metadata, built from what this server actually runs."""

from __future__ import annotations

from functools import cache
from typing import Any

from openrecord import __version__
from openrecord.fhir.definitions import Definitions
from openrecord.fhir.profiles import known_profiles, profile
from openrecord.fhir.search_composite import component_defs
from openrecord.fhir.search_text import TEXT_PARAMS, TEXT_RULE
from openrecord.server.operations import Operation, registered
from openrecord.server.terminology import OPERATION_BASE, TERMINOLOGY_OPERATIONS

__all__ = ["SEARCHABLE_KINDS", "US_CORE_SERVER", "capability_statement", "supported_profiles"]

US_CORE_SERVER = "http://hl7.org/fhir/us/core/CapabilityStatement/us-core-server"

# Parameter types the store's search answers today (special ones come later); a
# composite only when all its components are known.
SEARCHABLE_KINDS = frozenset(
    {"token", "string", "date", "number", "quantity", "reference", "uri", "composite"}
)
_TYPE_INTERACTIONS = [
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
]
_DOCS = {
    "Resource-id": "Logical id of the resource",
    "Resource-lastUpdated": "When the resource version last changed",
}


@cache
def supported_profiles() -> dict[str, list[str]]:
    """The compiled profiles (US Core, HL7 CGM IG) by the resource type they constrain:
    `$validate?profile=` and the write-time profile policy check resources against them."""
    by_type: dict[str, list[str]] = {}
    for url in known_profiles():
        prof = profile(url)
        if prof is not None:
            by_type.setdefault(prof.type, []).append(url)
    return by_type


OPEN_SECURITY = {
    "description": "OPEN MODE (development only): no authorization, every request has full"
    " access to every record. Never expose this server beyond this machine."
}


def capability_statement(
    defs: Definitions,
    base_url: str,
    software_date: str,
    security: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`security`: the rest.security block (SMART on FHIR, auth/oauth_endpoints.py);
    None when the server runs open."""
    profiles = supported_profiles()
    # _include: a type's own reference parameters; _revinclude: others' that may target it.
    includes: dict[str, list[str]] = {}
    revincludes: dict[str, list[str]] = {}
    for source in sorted(defs.resource_types):
        for code, sp in sorted(defs.search_params.get(source, {}).items()):
            if sp.type != "reference" or not sp.expression:
                continue
            includes.setdefault(source, [f"{source}:*"]).append(f"{source}:{code}")
            for target in sp.targets:
                rev = revincludes.setdefault(target, [])
                if f"{source}:*" not in rev:
                    rev.append(f"{source}:*")
                rev.append(f"{source}:{code}")
    resources = []
    per_type: list[list[dict[str, str]]] = []  # each type's searchParam list
    for type_name in sorted(defs.resource_types):
        params = []
        for code, sp in sorted(defs.search_params.get(type_name, {}).items()):
            if code in TEXT_PARAMS:  # no expression: answered from the full-text tables
                doc = {"documentation": TEXT_RULE}
                params.append({"name": code, "definition": sp.url, "type": sp.type, **doc})
                continue
            if sp.type not in SEARCHABLE_KINDS or not sp.expression:
                continue
            if sp.type == "composite" and component_defs(sp, defs) is None:
                continue
            params.append({"name": code, "definition": sp.url, "type": sp.type})
        per_type.append(params)
        resources.append(
            {
                "type": type_name,
                "profile": f"http://hl7.org/fhir/StructureDefinition/{type_name}",
                **({"supportedProfile": profiles[type_name]} if type_name in profiles else {}),
                "interaction": [{"code": c} for c in _TYPE_INTERACTIONS],
                "versioning": "versioned-update",
                "readHistory": True,
                "updateCreate": True,
                "conditionalCreate": True,
                "conditionalRead": "full-support",
                "conditionalUpdate": True,
                "conditionalDelete": "single",
                # FHIR JSON has no empty arrays: a list with nothing in it is left out
                **({"searchInclude": includes[type_name]} if type_name in includes else {}),
                **(
                    {"searchRevInclude": revincludes[type_name]} if type_name in revincludes else {}
                ),
                **({"searchParam": params} if params else {}),
                "operation": [
                    {
                        "name": "validate",
                        "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
                    }
                ]
                + [
                    {"name": op.lstrip("$"), "definition": OPERATION_BASE + definition}
                    for (on_type, op), definition in TERMINOLOGY_OPERATIONS.items()
                    if on_type == type_name
                ]
                + [_operation_entry(op) for op in registered() if type_name in op.types],
            }
        )
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": software_date,
        "publisher": "openrecord",
        "kind": "instance",
        "instantiates": [US_CORE_SERVER],
        "software": {"name": "openrecord", "version": __version__},
        "implementation": {"description": "openrecord FHIR R4 server", "url": base_url},
        "fhirVersion": defs.fhir_version,
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json", "application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "security": security or OPEN_SECURITY,
                "resource": resources,
                # Compartment search: [Compartment]/[id]/[type]?… and [Compartment]/[id]/*.
                "compartment": [
                    f"http://hl7.org/fhir/CompartmentDefinition/{c[0].lower()}{c[1:]}"
                    for c in sorted(defs.compartments)
                ],
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "search-system"},
                    {"code": "history-system"},
                ],
                **(
                    {"operation": [_operation_entry(op) for op in system_ops]}
                    if (system_ops := [op for op in registered() if op.level == "system"])
                    else {}
                ),
                # [base]?… across every type (or `_type=A,B`): the parameters all types have
                "searchParam": [p for p in per_type[0] if all(p in q for q in per_type[1:])]
                if per_type
                else [],
            }
        ],
    }


def _operation_entry(op: Operation) -> dict[str, str]:
    """A CapabilityStatement operation; ours without a published definition point at
    an OperationDefinition id on this server's own documentation."""
    definition = op.definition or f"http://openrecord.invalid/OperationDefinition/{op.name}"
    return {"name": op.name, "definition": definition}
