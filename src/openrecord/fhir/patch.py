"""PATCH bodies applied to a resource: JSON Patch (RFC 6902) and FHIRPath Patch (FHIR R4).

Pure functions over JSON trees: they never mutate their input and do no I/O. A malformed
patch document is a 400 and a patch that cannot apply is a 422, both as FHIRError; every
operation applies or none does (the work happens on a private copy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fhirpathpy import evaluate
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models

from openrecord.fhir.definitions import PRIMITIVE_JSON_NAMES, Child, definitions
from openrecord.fhir.outcome import FHIRError

__all__ = ["apply_fhirpath_patch", "apply_json_patch"]

Step = str | int
Loc = tuple[Step, ...]  # keys and list indexes from the resource root
Node = tuple[str, str]  # (owner type, element path), as in Definitions.children

_JSON_OPS = ("add", "remove", "replace", "move", "copy", "test")
_FHIR_REQUIRED = {
    "add": ("path", "name", "value"),
    "insert": ("path", "value", "index"),
    "delete": ("path",),
    "replace": ("path", "value"),
    "move": ("path", "source", "destination"),
}
# `div` is FHIRPath's division keyword, yet paths like `Patient.text.div` are common (and in the
# official tests): as a member access (after a '.') it is quoted, string literals left alone.
_DIV_MEMBER = re.compile(r"('(?:[^'\\]|\\.)*'|`[^`]*`)|\.div\b")
_FHIR_PARTS: dict[str, type] = {"type": str, "path": str, "name": str, "value": dict, "index": int}
_FHIR_PARTS |= {"source": int, "destination": int}


def _bad(message: str, expression: str | None = None) -> FHIRError:
    return FHIRError.of(400, "invalid", message, expression)


def _cannot(message: str, expression: str | None = None) -> FHIRError:
    return FHIRError.of(422, "processing", message, expression)


def _clone(value: Any) -> Any:
    """Copy a JSON tree without shared nodes, so object identity locates a node uniquely."""
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clone(v) for v in value]
    return value


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: numbers compare by value, but booleans are not numbers (unlike ==)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(v, b[k]) for k, v in a.items())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


# --- JSON Patch -------------------------------------------------------------------------


def apply_json_patch(resource: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply an RFC 6902 JSON Patch; the whole document is validated before anything applies."""
    if not isinstance(patch, list):
        raise FHIRError.of(400, "structure", "JSON Patch body must be a JSON array of operations")
    ops = [_parse_json_op(i, op) for i, op in enumerate(patch)]
    doc: Any = _clone(resource)
    for i, (name, path, tokens, source, value) in enumerate(ops):
        where = f"JSON Patch operation {i} ({name} '{path}')"
        if name == "test":
            if not _json_equal(_ptr_get(doc, tokens, where), value):
                raise _cannot(f"{where}: test failed, the value differs")
            continue
        if source is not None:  # move, copy
            if name == "move" and tokens[: len(source)] == source and tokens != source:
                raise _cannot(f"{where}: cannot move a value into its own child")
            value = _ptr_get(doc, source, where)
            if name == "move":
                parent, key = _ptr_slot(doc, source, where)
                del parent[key]
        if name in ("remove", "replace"):
            parent, key = _ptr_slot(doc, tokens, where)
            if parent is None and name == "remove":
                raise _cannot(f"{where}: cannot remove the whole resource")
            if parent is None:
                doc = _clone(value)
            elif name == "remove":
                del parent[key]
            else:
                parent[key] = _clone(value)
        elif not tokens:
            doc = _clone(value)
        else:
            parent = _ptr_get(doc, tokens[:-1], where)
            if isinstance(parent, dict):
                parent[tokens[-1]] = _clone(value)
            elif isinstance(parent, list):
                parent.insert(_index(parent, tokens[-1], where, end=True), _clone(value))
            else:
                raise _cannot(f"{where}: the parent is not an object or array")
    if not isinstance(doc, dict):
        raise _cannot("JSON Patch result is not a JSON object")
    return doc


def _parse_json_op(i: int, op: Any) -> tuple[str, str, list[str], list[str] | None, Any]:
    where = f"JSON Patch operation {i}"
    if not isinstance(op, dict):
        raise FHIRError.of(400, "structure", f"{where}: must be a JSON object")
    name, path = op.get("op"), op.get("path")
    if name not in _JSON_OPS:
        raise _bad(f"{where}: 'op' must be one of {', '.join(_JSON_OPS)}")
    if not isinstance(path, str):
        raise _bad(f"{where} ({name}): 'path' must be a string")
    source = None
    if name in ("move", "copy"):
        if not isinstance(op.get("from"), str):
            raise _bad(f"{where} ({name} '{path}'): 'from' must be a string")
        source = _pointer(op["from"], where)
    if name in ("add", "replace", "test") and "value" not in op:
        raise _bad(f"{where} ({name} '{path}'): 'value' is required")
    return name, path, _pointer(path, where), source, op.get("value")


def _pointer(text: str, where: str) -> list[str]:
    """RFC 6901 reference tokens; '~1' is unescaped before '~0' so '~01' means '~1'."""
    if text == "":
        return []
    if not text.startswith("/") or re.search(r"~(?![01])", text):
        raise _bad(f"{where}: '{text}' is not a valid JSON Pointer")
    return [t.replace("~1", "/").replace("~0", "~") for t in text[1:].split("/")]


def _index(array: list[Any], token: str, where: str, *, end: bool) -> int:
    """An array index token; `end` allows '-' and len(array), the add position past the end."""
    if end and token == "-":
        return len(array)
    if not re.fullmatch(r"0|[1-9][0-9]*", token):
        raise _cannot(f"{where}: '{token}' is not an array index")
    if int(token) > len(array) - (0 if end else 1):
        raise _cannot(f"{where}: array index {token} is out of range")
    return int(token)


def _ptr_get(doc: Any, tokens: list[str], where: str) -> Any:
    for depth, token in enumerate(tokens):
        if isinstance(doc, dict) and token in doc:
            doc = doc[token]
        elif isinstance(doc, list):
            doc = doc[_index(doc, token, where, end=False)]
        else:
            missing = "".join(
                "/" + t.replace("~", "~0").replace("/", "~1") for t in tokens[: depth + 1]
            )
            raise _cannot(f"{where}: '{missing}' does not exist")
    return doc


def _ptr_slot(doc: Any, tokens: list[str], where: str) -> tuple[Any, Any]:
    """(container, key) of an existing target; (None, None) for the whole document."""
    _ptr_get(doc, tokens, where)
    if not tokens:
        return None, None
    parent = _ptr_get(doc, tokens[:-1], where)
    return parent, tokens[-1] if isinstance(parent, dict) else int(tokens[-1])


# --- FHIRPath Patch ---------------------------------------------------------------------


@dataclass(slots=True)
class _Op:
    index: int
    type: str
    args: dict[str, Any]  # part name -> value; `value` is kept as its part (built when applied)

    def fail(self, message: str, status: int = 422) -> FHIRError:
        text = f"FHIRPath Patch operation {self.index} ({self.type} at '{self.path}'): {message}"
        return (_cannot if status == 422 else _bad)(text, f"Parameters.parameter[{self.index}]")

    @property
    def path(self) -> str:
        return str(self.args["path"])


def apply_fhirpath_patch(resource: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """Apply a FHIRPath Patch (a Parameters resource of `operation`s), all or nothing."""
    ops = _parse_fhir_ops(parameters)
    doc: dict[str, Any] = _clone(resource)
    for op in ops:
        _apply_fhir_op(doc, op)
    return doc


def _typed_value(part: dict[str, Any]) -> tuple[str | None, Any]:
    """The (type suffix, value) of a part's single value[x], or (None, None)."""
    keys = [k for k in part if k.startswith("value") and k[5:6].isupper()]
    return (keys[0][5:], part[keys[0]]) if len(keys) == 1 else (None, None)


def _well_formed(part: Any, nested: bool = False) -> bool:
    """A part with exactly one of value[x], resource or (well-formed, named) nested parts."""
    if not isinstance(part, dict) or (nested and not isinstance(part.get("name"), str)):
        return False
    subs = part.get("part", [])
    forms = (_typed_value(part)[0] is not None) + ("part" in part) + ("resource" in part)
    if forms != 1 or not isinstance(subs, list) or ("part" in part and not subs):
        return False
    return all(_well_formed(p, True) for p in subs)


def _parse_fhir_ops(parameters: Any) -> list[_Op]:
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise FHIRError.of(400, "structure", "FHIRPath Patch body must be a Parameters resource")
    params = parameters.get("parameter", [])
    if not isinstance(params, list):
        raise FHIRError.of(400, "structure", "Parameters.parameter must be an array")
    ops = []
    for i, param in enumerate(params):
        where, expr = f"FHIRPath Patch operation {i}", f"Parameters.parameter[{i}]"
        if not isinstance(param, dict) or param.get("name") != "operation":
            raise _bad(f"{where}: the parameter name must be 'operation'", expr)
        args: dict[str, Any] = {}
        parts: list[Any] = param["part"] if isinstance(param.get("part"), list) else [None]
        for part in parts:
            name = part.get("name") if isinstance(part, dict) else None
            if name not in _FHIR_PARTS or name in args or not _well_formed(part):
                raise _bad(f"{where}: unknown, repeated or valueless part {name!r}", expr)
            got = part if name == "value" else _typed_value(part)[1]
            if not isinstance(got, _FHIR_PARTS[name]) or isinstance(got, bool):
                raise _bad(f"{where}: part {name!r} must be a {_FHIR_PARTS[name].__name__}", expr)
            args[name] = got
        kind = args.get("type")
        if kind not in _FHIR_REQUIRED:
            raise _bad(f"{where}: 'type' must be one of {', '.join(_FHIR_REQUIRED)}", expr)
        missing = [p for p in _FHIR_REQUIRED[kind] if p not in args]
        if missing:
            raise _bad(f"{where} ({kind}): the {missing[0]!r} part is required", expr)
        ops.append(_Op(i, kind, args))
    return ops


def _apply_fhir_op(doc: dict[str, Any], op: _Op) -> None:
    locs = _evaluate(doc, op)
    if not locs and op.type != "delete":
        raise op.fail("no content found at that path")
    if op.type in ("insert", "move"):
        if any(not loc or not isinstance(loc[-1], int) or loc[:-1] != locs[0][:-1] for loc in locs):
            raise op.fail("the path must select the items of a single list")
        _list_op(doc, locs[0][:-1], op)
    elif len(locs) > 1:
        raise op.fail(f"the path matches {len(locs)} elements; at most one is allowed")
    elif locs and not locs[0] and op.type != "add":
        raise op.fail(f"cannot {op.type} the resource itself")
    elif locs and op.type == "delete":
        *at, last = locs[0]
        if isinstance(last, int):
            _splice(_get(doc, at[:-1]), str(at[-1]), last)
            _prune(doc, tuple(at[:-1]))
        else:
            _put(_get(doc, at), last, None, None)
            _prune(doc, tuple(at))
    elif op.type == "replace":
        _replace(doc, locs[0], op)
    elif op.type == "add":
        _add(doc, locs[0], op)


def _evaluate(doc: dict[str, Any], op: _Op) -> list[Loc]:
    """Where each selected node sits in `doc`: complex nodes by object identity, primitives
    (which fhirpathpy returns as bare values) by the element path it records."""
    try:
        path = _DIV_MEMBER.sub(lambda m: m[1] or ".`div`", op.path)
        found = evaluate(doc, path, model=models["r4"], options={"returnRawData": True})
    except Exception as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise op.fail(f"invalid FHIRPath expression ({detail})", 400) from None
    index: dict[int, Loc] = {}
    _index_tree(doc, (), index)
    locs = []
    for node in found:
        if not isinstance(node, ResourceNode):
            raise op.fail("the path selects a computed value, not an element of the resource")
        if node.data is None:
            continue  # fhirpathpy's stand-in for a null in a `_name` array
        if isinstance(node.data, dict):
            loc = index.get(id(node.data))
            keys = [step for step in loc or () if isinstance(step, str)]
            if keys and keys[-1].startswith("_"):
                continue  # a primitive's `_name` part, which fhirpathpy also returns
        else:
            loc = _resolve_prop(doc, node.propName, node.data)
        if loc is None:
            raise op.fail("the path selects something that is not an element of the resource")
        locs.append(loc)
    return locs


def _index_tree(value: Any, loc: Loc, index: dict[int, Loc]) -> None:
    index[id(value)] = loc
    for step, child in value.items() if isinstance(value, dict) else enumerate(value):
        if isinstance(child, dict | list):
            _index_tree(child, (*loc, step), index)


def _resolve_prop(doc: dict[str, Any], prop: str | None, expected: Any) -> Loc | None:
    """Follow a fhirpathpy element path such as `Patient.name[0].given[1]` to a primitive;
    steps below a primitive (its id or extension) continue in its `_name` sibling."""
    loc: list[Step] = []
    value: Any = doc
    for segment in (prop or "").split(".")[1:]:
        match = re.fullmatch(r"([A-Za-z][A-Za-z0-9]*)(?:\[(\d+)\])?", segment)
        if loc and not isinstance(value, dict):
            at = -2 if isinstance(loc[-1], int) else -1
            loc[at] = f"_{loc[at]}"
            try:
                value = _get(doc, tuple(loc))
            except (KeyError, IndexError, TypeError):
                return None
        key = _actual_key(value, match[1]) if match and isinstance(value, dict) else None
        if match is None or key is None:
            return None
        loc.append(key)
        value = value[key]
        if match[2] is not None:
            if not isinstance(value, list) or int(match[2]) >= len(value):
                return None
            loc.append(int(match[2]))
            value = value[int(match[2])]
    return tuple(loc) if type(value) is type(expected) and value == expected else None


def _actual_key(container: dict[str, Any], name: str) -> str | None:
    """The JSON key for an element name: itself, or the one concrete choice `name[Type]`."""
    if name in container:
        return name
    keys = [k for k in container if k.startswith(name) and k[len(name) : len(name) + 1].isupper()]
    return keys[0] if len(keys) == 1 else None


def _get(doc: Any, loc: Loc | list[Step]) -> Any:
    for step in loc:
        doc = doc[step]
    return doc


def _node_at(doc: dict[str, Any], loc: Loc) -> Node | None:
    """The definition node of the element at `loc`, or None when it is not a known element."""
    types = definitions().types
    node: Node | None = (str(doc.get("resourceType")), "")
    value: Any = doc
    for step in loc:
        if isinstance(step, str):
            child = _child(node, step)
            node = child.node if child else None
        value = value[step]
        kind = types[node[0]].kind if node and node[0] in types else None
        if kind == "resource" and isinstance(value, dict) and "resourceType" in value:
            node = (str(value["resourceType"]), "")
    return node if node and node[0] in types else None


def _child(node: Node | None, key: str) -> Child | None:
    if node is None or node[0] not in definitions().types:
        return None
    return definitions().children(node).get(key)


def _choice_key(node: Node | None, name: str, suffix: str | None, op: _Op) -> str:
    """The JSON key for element `name`: a choice (value[x]) takes the value's type suffix."""
    if node is None or node[0] not in definitions().types or _child(node, name) is not None:
        return name
    choice = _child(node, name + (suffix or ""))
    if suffix and choice and choice.element.is_choice and choice.element.name == name + "[x]":
        return name + suffix
    if any(c.element.name == name + "[x]" for c in definitions().children(node).values()):
        raise op.fail(f"{suffix or 'an untyped value'} is not a valid type for '{name}[x]'")
    raise op.fail(f"'{name}' is not a known element here")


def _build(part: dict[str, Any], node: Node | None, op: _Op) -> tuple[Any, str | None, Any]:
    """A value part as JSON: (value, value[x] type suffix, its `_value[x]` id/extensions).
    Nested parts make an anonymous complex value, one part per child element."""
    if "resource" in part:
        value, suffix, ext = _clone(part["resource"]), None, None
    elif "part" not in part:
        suffix, value = _typed_value(part)
        value, ext = _clone(value), _clone(part.get(f"_value{suffix}"))
    else:
        value, suffix, ext = {}, None, None
        for sub in part["part"]:
            named = _child(node, sub["name"])
            item, sub_suffix, item_ext = _build(sub, named.node if named else None, op)
            key = _choice_key(node, sub["name"], sub_suffix, op)
            child = _child(node, key)
            _check_type(child, item, op)
            if child.element.is_array if child else key in value:
                if key in value and not isinstance(value[key], list):
                    value[key] = [value[key]]
                _splice(value, key, None, len(value.get(key, [])), (item, item_ext))
            else:
                _put(value, key, item, item_ext)
    return value, suffix, ext


def _check_type(child: Child | None, value: Any, op: _Op) -> None:
    """Reject a primitive where a complex type belongs, and vice versa."""
    if child is not None and not child.primitive_ext:
        primitive = child.type in PRIMITIVE_JSON_NAMES or child.element.system
        if primitive == isinstance(value, dict | list):
            raise op.fail(f"that value is not valid for an element of type {child.type}")


def _put(owner: dict[str, Any], key: str, value: Any, ext: Any) -> None:
    """Set (or with None, remove) a single element and its `_name` id/extensions."""
    for k, v in ((key, value), (f"_{key}", ext)):
        if v is None:
            owner.pop(k, None)
        else:
            owner[k] = v


def _splice(
    owner: dict[str, Any], key: str, remove: int | None, at: int | None = None, item: Any = None
) -> tuple[Any, Any]:
    """Edit array `key`, keeping its `_key` array (primitive id/extensions) aligned: remove the
    entry at `remove`, then insert `item` = (value, `_value`), or else the removed entry, at
    `at`. Returns the removed entry."""
    values, exts = owner.get(key, []), owner.get(f"_{key}") or []
    exts.extend([None] * (len(values) - len(exts)))
    removed = (values.pop(remove), exts.pop(remove)) if remove is not None else (None, None)
    if at is not None:
        values.insert(at, (item or removed)[0])
        exts.insert(at, (item or removed)[1])
    _put(owner, key, values or None, exts if any(e is not None for e in exts) else None)
    return removed


def _prune(doc: dict[str, Any], loc: Loc) -> None:
    """Drop the elements a delete left empty: FHIR has no empty elements or arrays."""
    while loc and all(v is None for v in _get(doc, loc)):  # {} or [] or [None, ...]
        *at, last = loc
        if isinstance(last, int) and str(at[-1]).startswith("_"):
            _get(doc, at)[last] = None  # keep the `_name` array aligned with its values
            loc = tuple(at)
        elif isinstance(last, int):
            _splice(_get(doc, at[:-1]), str(at[-1]), last)
            loc = tuple(at[:-1])
        else:
            _get(doc, at).pop(last)
            loc = tuple(at)


def _replace(doc: dict[str, Any], loc: Loc, op: _Op) -> None:
    """Replace the whole element (so its old extensions go, unless `_value[x]` brings some)."""
    *at, last = loc
    owner_loc, key = (tuple(at[:-1]), str(at[-1])) if isinstance(last, int) else (tuple(at), last)
    node = _node_at(doc, owner_loc)
    old = _child(node, key)
    value, suffix, ext = _build(op.args["value"], old.node if old else None, op)
    new_key = key
    if old is not None and old.element.is_choice and suffix is not None:
        new_key = _choice_key(node, old.element.name[:-3], suffix, op)
    _check_type(_child(node, new_key), value, op)
    owner = _get(doc, owner_loc)
    if isinstance(last, int):
        _splice(owner, key, last, last, (value, ext))
        return
    if new_key != key:  # a choice element changing type
        _put(owner, key, None, None)
    _put(owner, new_key, value, ext)


def _add(doc: dict[str, Any], loc: Loc, op: _Op) -> None:
    container, node, name = _get(doc, loc), _node_at(doc, loc), op.args["name"]
    if not isinstance(container, dict):
        if not loc or name not in ("id", "extension"):
            raise op.fail("can only add to a complex element (or id/extension to a primitive)")
        *at, last = loc  # a primitive's id and extensions live in its `_name` sibling
        if isinstance(last, int):
            owner, key = _get(doc, at[:-1]), str(at[-1])
            value, ext = _splice(owner, key, last)
            _splice(owner, key, None, last, (value, ext or {}))
            loc = (*at[:-1], f"_{key}", last)
        else:
            _get(doc, at).setdefault(f"_{last}", {})
            loc = (*at, f"_{last}")
        container, node = _get(doc, loc), ("Element", "")
    named = _child(node, name)
    value, suffix, ext = _build(op.args["value"], named.node if named else None, op)
    key = _choice_key(node, name, suffix, op)
    child = _child(node, key)
    _check_type(child, value, op)
    if (child is not None and child.element.is_array) or isinstance(container.get(key), list):
        _splice(container, key, None, len(container.get(key, [])), (value, ext))
        return
    for k in container:
        other = _child(node, k)
        if k == key or (
            other and child and not other.primitive_ext and other.element is child.element
        ):
            raise op.fail(f"'{name}' already has a value (use replace)")
    _put(container, key, value, container.get(f"_{key}") if ext is None else ext)


def _list_op(doc: dict[str, Any], loc: Loc, op: _Op) -> None:
    """insert and move: both address one array by index."""
    *at, key = loc
    owner, size = _get(doc, at), len(_get(doc, loc))
    last = size if op.type == "insert" else size - 1
    for label in ("index", "source", "destination"):
        position = op.args.get(label)
        if position is not None and not 0 <= position <= last:
            raise op.fail(f"{label} {position} is outside 0..{last}")
    if op.type == "move":
        _splice(owner, str(key), op.args["source"], op.args["destination"])
        return
    child = _child(_node_at(doc, tuple(at)), str(key))
    value, _suffix, ext = _build(op.args["value"], child.node if child else None, op)
    _check_type(child, value, op)
    _splice(owner, str(key), None, op.args["index"], (value, ext))
