"""Terminology operations over HTTP: CodeSystem/$lookup, CodeSystem/$subsumes,
ValueSet/$expand, ValueSet/$validate-code and ConceptMap/$translate
(terminology-service.html).

Inputs come from the query string (GET) or a Parameters body (POST); answers follow
the R4 OperationDefinitions (Parameters, or a ValueSet with its `expansion`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from starlette.requests import Request

from openrecord.fhir.concept_maps import Dependency, Translation
from openrecord.fhir.concept_maps import translate as translate_code
from openrecord.fhir.outcome import FHIRError
from openrecord.fhir.terminology import Expansion, Terminology, terminology
from openrecord.server.http import parse_int, read_json_body
from openrecord.service.clock import instant, now_micros

__all__ = ["TERMINOLOGY_OPERATIONS", "expand_stored", "operation_input", "run_operation"]

OPERATION_BASE = "http://hl7.org/fhir/OperationDefinition/"
# (resource type, operation) -> OperationDefinition id, for routing and the CapabilityStatement.
TERMINOLOGY_OPERATIONS = {
    ("CodeSystem", "$lookup"): "CodeSystem-lookup",
    ("CodeSystem", "$subsumes"): "CodeSystem-subsumes",
    ("ValueSet", "$expand"): "ValueSet-expand",
    ("ValueSet", "$validate-code"): "ValueSet-validate-code",
    ("ConceptMap", "$translate"): "ConceptMap-translate",
}
_MAX_COUNT = 10_000

Inputs = dict[str, Any]  # parameter name -> str or a Coding dict (first value wins)


async def operation_input(request: Request, max_body_bytes: int) -> Inputs:
    """The operation's parameters: query string, then (POST) a Parameters resource."""
    found: Inputs = {}
    for name, value in request.query_params.multi_items():
        found.setdefault(name, value)
    if request.method == "POST":
        body = await read_json_body(request, max_body_bytes)
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise FHIRError.of(400, "invalid", "the body must be a Parameters resource")
        for part in body.get("parameter") or []:
            if not isinstance(part, dict):
                raise FHIRError.of(400, "invalid", "each parameter must be an object", "parameter")
            part_name = part.get("name")
            given = next((v for k, v in part.items() if k.startswith("value")), None)
            if isinstance(part_name, str) and given is not None:
                found.setdefault(part_name, given)
            elif isinstance(part_name, str) and isinstance(part.get("part"), list):
                # a parameter of parts (`dependency`): every occurrence, as {name: value}
                parts = {
                    str(p.get("name")): next(
                        (v for k, v in p.items() if k.startswith("value")), None
                    )
                    for p in part["part"]
                    if isinstance(p, dict)
                }
                found.setdefault(f"{part_name}[]", []).append(parts)
    return found


def run_operation(type: str, operation: str, inputs: Inputs) -> dict[str, Any]:
    """The answer to `[base]/{type}/{operation}` (blocking: expansions may take a while)."""
    handler: Callable[[Terminology, Inputs], dict[str, Any]] = _HANDLERS[(type, operation)]
    return handler(terminology(), inputs)


def _text(inputs: Inputs, name: str, required: bool = False) -> str | None:
    value = inputs.get(name)
    if value is None or value == "":
        if required:
            raise FHIRError.of(400, "required", f"parameter {name!r} is required", name)
        return None
    if not isinstance(value, str | int | bool):
        raise FHIRError.of(400, "invalid", f"parameter {name!r} must be a simple value", name)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _coding(inputs: Inputs, name: str) -> tuple[str | None, str | None, str | None]:
    """(system, code, display) of a Coding parameter, if given."""
    value = inputs.get(name)
    if value is None:
        return None, None, None
    if not isinstance(value, dict):
        raise FHIRError.of(400, "invalid", f"parameter {name!r} must be a Coding", name)
    return value.get("system"), value.get("code"), value.get("display")


def _natural(inputs: Inputs, name: str) -> int | None:
    raw = _text(inputs, name)
    if raw is None:
        return None
    value = parse_int(raw, name)
    if value < 0:
        raise FHIRError.of(400, "invalid", f"{name} must not be negative", name)
    return value


def _parameters(*parts: tuple[str, str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": n, k: v} for n, k, v in parts if v is not None],
    }


def lookup(term: Terminology, inputs: Inputs) -> dict[str, Any]:
    system, code, _ = _coding(inputs, "coding")
    system = _text(inputs, "system") or system
    code = _text(inputs, "code") or code
    if not code:
        raise FHIRError.of(400, "required", "give code and system, or coding", "code")
    if not system:
        raise FHIRError.of(400, "required", "parameter 'system' is required", "system")
    found = term.lookup(system, code, _text(inputs, "version"))
    out = _parameters(
        ("name", "valueString", found.name),
        ("version", "valueString", found.version or None),
        ("display", "valueString", found.display),
        ("abstract", "valueBoolean", found.abstract),
    )
    props: list[tuple[str, str, Any]] = [("parent", "valueCode", p) for p in found.parents]
    props += [("child", "valueCode", c) for c in found.children]
    for key, value in sorted(found.properties.items()):
        kind = "valueBoolean" if isinstance(value, bool) else "valueCode"
        props.append((key, kind, value))
    for key, kind, value in props:
        out["parameter"].append(
            {
                "name": "property",
                "part": [{"name": "code", "valueCode": key}, {"name": "value", kind: value}],
            }
        )
    return out


def subsumes(term: Terminology, inputs: Inputs) -> dict[str, Any]:
    system_a, code_a, _ = _coding(inputs, "codingA")
    system_b, code_b, _ = _coding(inputs, "codingB")
    system = _text(inputs, "system") or system_a or system_b
    if system_a and system_b and system_a != system_b:
        raise FHIRError.of(
            400, "invalid", "codingA and codingB are in different systems", "codingB"
        )
    code_a = _text(inputs, "codeA") or code_a
    code_b = _text(inputs, "codeB") or code_b
    if not system:
        raise FHIRError.of(400, "required", "parameter 'system' is required", "system")
    if not code_a:
        raise FHIRError.of(400, "required", "give codeA or codingA", "codeA")
    if not code_b:
        raise FHIRError.of(400, "required", "give codeB or codingB", "codeB")
    outcome = term.subsumes(system, code_a, code_b, _text(inputs, "version"))
    return _parameters(("outcome", "valueCode", outcome))


def expand(term: Terminology, inputs: Inputs) -> dict[str, Any]:
    url = _text(inputs, "url", required=True)
    assert url is not None
    return _expansion_answer(
        inputs, lambda text, count, offset: term.expand(url, text, count, offset)
    )


def expand_stored(resource: dict[str, Any], inputs: Inputs) -> dict[str, Any]:
    """`ValueSet/[id]/$expand`: a stored ValueSet by its compose (or its known url)."""
    term = terminology()
    return _expansion_answer(
        inputs, lambda text, count, offset: term.expand_resource(resource, text, count, offset)
    )


def _expansion_answer(
    inputs: Inputs, run: Callable[[str | None, int | None, int], Expansion]
) -> dict[str, Any]:
    text = _text(inputs, "filter")
    count = _natural(inputs, "count")
    offset = _natural(inputs, "offset") or 0
    if count is not None:
        count = min(count, _MAX_COUNT)
    found = run(text, count, offset)
    params: list[dict[str, Any]] = []
    if text:
        params.append({"name": "filter", "valueString": text})
    if count is not None:
        params.append({"name": "count", "valueInteger": count})
    params.append({"name": "offset", "valueInteger": offset})
    expansion: dict[str, Any] = {
        "identifier": f"urn:uuid:{uuid.uuid4()}",
        "timestamp": instant(now_micros()),
        "total": found.total,
        "offset": found.offset,
        "parameter": params,
        "contains": [
            {"system": e.system, "code": e.code, **({"display": e.display} if e.display else {})}
            for e in found.contains
        ],
    }
    if not expansion["contains"]:
        del expansion["contains"]
    vs: dict[str, Any] = {"resourceType": "ValueSet"}
    if found.url:
        vs["url"] = found.url
    if found.version:
        vs["version"] = found.version
    if found.name:
        vs["name"] = found.name
    vs["status"] = "active"
    vs["expansion"] = expansion
    return vs


def validate_code(term: Terminology, inputs: Inputs) -> dict[str, Any]:
    url = _text(inputs, "url", required=True)
    assert url is not None
    system, code, display = _coding(inputs, "coding")
    concept = inputs.get("codeableConcept")
    if isinstance(concept, dict) and code is None:
        codings = [c for c in concept.get("coding") or [] if isinstance(c, dict)]
        results = [
            term.validate_code(url, c.get("system"), str(c.get("code")), c.get("display"))
            for c in codings
        ]
        good = next((r for r in results if r.result), results[0] if results else None)
        if good is None:
            raise FHIRError.of(400, "required", "codeableConcept has no coding", "codeableConcept")
        return _parameters(
            ("result", "valueBoolean", good.result),
            ("message", "valueString", good.message),
            ("display", "valueString", good.display),
        )
    code = _text(inputs, "code") or code
    system = _text(inputs, "system") or system
    display = _text(inputs, "display") or display
    if not code:
        raise FHIRError.of(
            400, "required", "give code (with system), coding or codeableConcept", "code"
        )
    found = term.validate_code(url, system, code, display)
    return _parameters(
        ("result", "valueBoolean", found.result),
        ("message", "valueString", found.message),
        ("display", "valueString", found.display),
    )


def translate(term: Terminology, inputs: Inputs) -> dict[str, Any]:
    """`$translate` of code+system, a coding, or each coding of a codeableConcept."""
    reverse = _text(inputs, "reverse")
    if reverse not in (None, "true", "false"):
        raise FHIRError.of(400, "invalid", "reverse must be true or false", "reverse")
    system, code, _ = _coding(inputs, "coding")
    codings = [(_text(inputs, "system") or system, _text(inputs, "code") or code)]
    concept = inputs.get("codeableConcept")
    if codings[0][1] is None and isinstance(concept, dict):
        codings = [
            (c.get("system"), c.get("code"))
            for c in concept.get("coding") or []
            if isinstance(c, dict)
        ]
    if not codings or any(c is None for _, c in codings):
        raise FHIRError.of(
            400, "required", "give code (with system), coding or codeableConcept", "code"
        )
    if any(not s for s, _ in codings):
        raise FHIRError.of(400, "required", "the code's system is required", "system")
    found: list[Translation] = [
        translate_code(
            term,
            str(s),
            str(c),
            url=_text(inputs, "url"),
            source=_text(inputs, "source"),
            target=_text(inputs, "target"),
            target_system=_text(inputs, "targetsystem"),
            reverse=reverse == "true",
            dependencies=_dependencies(inputs),
        )
        for s, c in codings
    ]
    messages = [t.message for t in found if t.message]
    out = _parameters(
        ("result", "valueBoolean", any(t.result for t in found)),
        ("message", "valueString", "; ".join(messages) or None),
    )
    for match in (m for t in found for m in t.matches):
        parts: list[dict[str, Any]] = [{"name": "equivalence", "valueCode": match.equivalence}]
        if match.code is not None:
            coding = {"system": match.system, "code": match.code}
            if match.display:
                coding["display"] = match.display
            parts.append({"name": "concept", "valueCoding": coding})
        for product in match.product:
            element = product.get("property")
            value = {"system": product.get("system"), "code": product.get("value")}
            parts.append(
                {
                    "name": "product",
                    "part": [
                        {"name": "element", "valueUri": element},
                        {"name": "concept", "valueCoding": {k: v for k, v in value.items() if v}},
                    ],
                }
            )
        parts.append({"name": "source", "valueUri": match.source})
        out["parameter"].append({"name": "match", "part": parts})
    return out


def _dependencies(inputs: Inputs) -> tuple[Dependency, ...]:
    """The `dependency` parameters (element + concept as a Coding or CodeableConcept)."""
    out = []
    for i, parts in enumerate(inputs.get("dependency[]") or []):
        element, concept = parts.get("element"), parts.get("concept")
        where = f"Parameters.parameter[dependency][{i}]"
        if not isinstance(element, str) or not isinstance(concept, dict):
            raise FHIRError.of(400, "invalid", "a dependency needs an element and a concept", where)
        codings = concept.get("coding") if "coding" in concept else [concept]
        out.append(
            Dependency(
                element,
                tuple(
                    (c.get("system"), str(c["code"]))
                    for c in codings or []
                    if isinstance(c, dict) and isinstance(c.get("code"), str)
                ),
            )
        )
    return tuple(out)


_HANDLERS: dict[tuple[str, str], Callable[[Terminology, Inputs], dict[str, Any]]] = {
    ("ConceptMap", "$translate"): translate,
    ("CodeSystem", "$lookup"): lookup,
    ("CodeSystem", "$subsumes"): subsumes,
    ("ValueSet", "$expand"): expand,
    ("ValueSet", "$validate-code"): validate_code,
}
