"""`_summary` and `_elements`: the subsets of a resource the spec lets a client ask for."""

from __future__ import annotations

from typing import Any

from openrecord.fhir.definitions import Definitions
from openrecord.fhir.outcome import FHIRError

__all__ = ["SUMMARY_MODES", "select_elements", "summarize"]

SUMMARY_MODES = ("true", "text", "data", "count", "false")
_SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "subsetted",
}
_ALWAYS = ("resourceType", "id", "meta")


def summarize(resource: dict[str, Any], mode: str, defs: Definitions) -> dict[str, Any]:
    """The resource as `_summary=mode` asks; marked SUBSETTED unless complete."""
    if mode == "false":
        return resource
    type_name = resource.get("resourceType", "")
    if type_name not in defs.types:
        return resource
    if mode == "true":
        out = _summary_node(resource, (type_name, ""), defs)
    elif mode == "text":
        keep = {
            k for k in resource if k in _ALWAYS or k == "text" or _mandatory(defs, type_name, k)
        }
        out = {k: v for k, v in resource.items() if k in keep}
    elif mode == "data":
        out = {k: v for k, v in resource.items() if k != "text"}
    else:
        raise FHIRError.of(400, "invalid", f"_summary={mode!r} is not allowed here", "_summary")
    for k in _ALWAYS:
        if k in resource:
            out[k] = resource[k]
    return _mark_subsetted(out)


def select_elements(
    resource: dict[str, Any], elements: list[str], defs: Definitions
) -> dict[str, Any]:
    """Only the named top-level elements, plus id, meta and mandatory elements."""
    type_name = resource.get("resourceType", "")
    wanted = {e.split(".")[0].strip() for e in elements if e.strip()}
    # A choice element may be asked for by its base name (value → valueQuantity).
    out = {
        k: v
        for k, v in resource.items()
        if k in _ALWAYS
        or k.lstrip("_") in wanted
        or _base_name(defs, type_name, k) in wanted
        or _mandatory(defs, type_name, k)
    }
    return _mark_subsetted(out)


def _summary_node(
    node: dict[str, Any], where: tuple[str, str], defs: Definitions
) -> dict[str, Any]:
    children = defs.children(where)
    out: dict[str, Any] = {}
    for key, value in node.items():
        child = children.get(key)
        if child is None or not (child.element.summary or child.element.modifier):
            continue
        # Backbone elements are summarized recursively; datatypes are kept whole.
        if child.node[0] == where[0] and child.node[1] and isinstance(value, (dict, list)):
            if isinstance(value, list):
                out[key] = [
                    _summary_node(v, child.node, defs) for v in value if isinstance(v, dict)
                ]
            else:
                out[key] = _summary_node(value, child.node, defs)
        else:
            out[key] = value
    return out


def _mandatory(defs: Definitions, type_name: str, key: str) -> bool:
    child = defs.children((type_name, "")).get(key) if type_name in defs.types else None
    return child is not None and child.element.min > 0


def _base_name(defs: Definitions, type_name: str, key: str) -> str | None:
    if type_name not in defs.types:
        return None
    child = defs.children((type_name, "")).get(key)
    if child is None:
        return None
    name = child.element.name
    return name[:-3] if name.endswith("[x]") else name


def _mark_subsetted(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"]
    tags.append(dict(_SUBSETTED))
    meta["tag"] = tags
    out = dict(resource)
    out["meta"] = meta
    # Keep resourceType/id/meta first, as servers conventionally serialize them.
    return {k: out[k] for k in (*_ALWAYS, *[k for k in out if k not in _ALWAYS]) if k in out}
