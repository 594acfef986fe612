"""Base-R4 validation of a resource's JSON, run on every write.

Checks what the core specification alone can decide (no profiles, no terminology
server): the JSON format rules, element names and JSON types, primitive formats
(see `validation_primitives`), cardinality, choice types, required bindings,
reference forms and targets, contained resources, and the FHIRPath invariants (see
`invariants`). It walks the instance once against per-node tables built lazily
from `definitions()`, so the cost is a few dict look-ups per property. Every issue's
`expression` is the FHIRPath location of the offending element, e.g.
`Patient.name[0].given[1]`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from openrecord.fhir.definitions import (
    PRIMITIVE_JSON_NAMES,
    Child,
    Definitions,
    ValueSetCodes,
    definitions,
)
from openrecord.fhir.invariants import Invariant, choice_keys, invariants_for
from openrecord.fhir.outcome import Issue
from openrecord.fhir.validation_primitives import (
    Finding,
    PrimitiveCheck,
    check_nothing,
    json_kind,
    primitive_check,
)

__all__ = ["validate_resource"]

Json = dict[str, Any]

_PRIM, _EXT, _COMPLEX, _RESOURCE, _CONTAINED = range(5)  # what a property holds
_ONE_PRIMITIVE, _ONE_COMPLEX, _ARRAY, _EXTENSION_PART, _ONE_RESOURCE = range(5)  # how
_PLAIN, _REFERENCE, _EXTENSION, _BOUND_CONCEPT = range(4)  # datatypes with extra rules
_ABSOLUTE_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S+")
_LOCAL_TARGET_TYPES = ("canonical", "uri", "url")
# Compiled as an enumeration (the spec's expansion of common units), but the value set
# is all of UCUM's grammar: any valid UCUM expression is in it.
_NOT_AN_ARRAY = "expected a single value, not an array (max cardinality 1)"
_GRAMMAR_VALUE_SETS = frozenset({"http://hl7.org/fhir/ValueSet/ucum-units"})


# ---------------------------------------------------------------------------------------
# per-node tables


@dataclass(slots=True, eq=False)
class _Slot:
    """What one JSON property name means in one parent, precomputed for the walk."""

    key: str  # the JSON name
    name: str  # the FHIRPath name (`_x` -> `x`)
    ext_key: str  # the `_name` sibling of a primitive
    kind: int
    mode: int
    array: bool
    max: int
    type: str
    node_key: tuple[str, str]
    type_path: str  # the FHIRPath type of the value, for fhirpathpy
    check: PrimitiveCheck  # the value's format (primitives only)
    codes: frozenset[str] | None  # required binding on a `code`
    binding: str | None  # that value set's url
    concept: ValueSetCodes | None  # required binding on a CodeableConcept
    targets: frozenset[str] | None  # allowed Reference target types (None: any)
    choice: str | None  # the choice element's path, e.g. "value[x]"
    invariants: tuple[Invariant, ...]
    local_refs: bool  # canonical/uri values "#id" count as references (dom-3)
    extra: bool  # a primitive with more to check than its format
    special: int  # _REFERENCE, _EXTENSION, _BOUND_CONCEPT or _PLAIN
    _node: _Node | None = None

    def node(self) -> _Node:
        if self._node is None:
            self._node = _node(self.node_key)
        return self._node


@dataclass(slots=True, eq=False)
class _Node:
    """The allowed properties, required elements and invariants of one element kind."""

    slots: dict[str, _Slot]
    required: tuple[tuple[str, tuple[str, ...]], ...]  # (element name, JSON names)
    invariants: tuple[Invariant, ...]  # a resource's root invariants
    contained_invariants: tuple[Invariant, ...]  # the same without dom-6 (narrative)
    type_path: str
    is_resource: bool


_NODES: dict[tuple[str, str], _Node] = {}
_EXTENSION_VALUES = choice_keys("Extension", "value[x]")


def _node(key: tuple[str, str]) -> _Node:
    found = _NODES.get(key)
    if found is None:
        found = _NODES[key] = _build_node(key)
    return found


def _build_node(key: tuple[str, str]) -> _Node:
    defs = definitions()
    children = defs.children(key)
    slots = {
        name: _build_slot(defs, name, child)
        for name, child in children.items()
        if not (child.primitive_ext and child.type == "xhtml")  # xhtml has no extensions
    }
    required: dict[str, list[str]] = {}
    for name, child in children.items():
        if child.element.min > 0:
            required.setdefault(child.element.name, []).append(name)
    owner, path = key
    is_resource = path == "" and owner in defs.resource_types
    root = invariants_for(owner, defs.types[owner].root_constraints) if is_resource else ()
    return _Node(
        slots,
        tuple((label, tuple(names)) for label, names in required.items()),
        root,
        # A contained resource is covered by its container's narrative.
        tuple(i for i in root if i.key != "dom-6"),
        owner if not path else f"{owner}.{path}",
        is_resource,
    )


def _build_slot(defs: Definitions, key: str, child: Child) -> _Slot:
    el, type_code = child.element, child.type
    if child.primitive_ext:
        kind = _EXT
    elif type_code in PRIMITIVE_JSON_NAMES:
        kind = _PRIM
    elif type_code in ("Resource", "DomainResource"):
        kind = _CONTAINED if key == "contained" else _RESOURCE
    else:
        kind = _COMPLEX
    vs = defs.value_sets.get(el.binding) if el.binding else None
    if vs is not None and (vs.open or not vs.codes or vs.url in _GRAMMAR_VALUE_SETS):
        vs = None
    keys = list(el.constraints)
    if el.ref is not None:
        keys += defs.types[el.owner].elements[el.ref].constraints
    invariants = invariants_for(el.owner, dict.fromkeys(keys))
    if kind == _COMPLEX and child.node[1] == "":
        invariants += invariants_for(type_code, defs.types[type_code].root_constraints)
    if kind == _EXT:
        mode = _EXTENSION_PART
    elif el.is_array:
        mode = _ARRAY
    else:
        mode = {_PRIM: _ONE_PRIMITIVE, _COMPLEX: _ONE_COMPLEX}.get(kind, _ONE_RESOURCE)
    codes = vs.bare_codes if vs is not None and type_code == "code" else None
    local_refs = type_code in _LOCAL_TARGET_TYPES
    node_owner, node_path = child.node
    targets = frozenset(el.targets) if type_code == "Reference" else frozenset()
    return _Slot(
        key=key,
        name=key[1:] if child.primitive_ext else key,
        ext_key="_" + key,
        kind=kind,
        mode=mode,
        array=el.is_array,
        max=el.max,
        type=type_code,
        node_key=child.node,
        type_path=node_owner if not node_path else f"{node_owner}.{node_path}",
        check=primitive_check(type_code) if kind == _PRIM else check_nothing,
        codes=codes,
        binding=vs.url if vs is not None else None,
        concept=vs if vs is not None and type_code == "CodeableConcept" else None,
        targets=targets if targets and "Resource" not in targets else None,
        choice=el.path if el.is_choice else None,
        invariants=invariants if kind != _EXT else (),
        local_refs=local_refs,
        extra=bool(codes is not None or local_refs or (kind == _PRIM and invariants)),
        special=(
            _REFERENCE
            if type_code == "Reference"
            else _EXTENSION
            if type_code == "Extension"
            else _BOUND_CONCEPT
            if vs is not None and type_code == "CodeableConcept"
            else _PLAIN
        ),
    )


_SYSTEMS: dict[str, frozenset[str]] = {}


def _systems(vs: ValueSetCodes) -> frozenset[str]:
    found = _SYSTEMS.get(vs.url)
    if found is None:
        found = _SYSTEMS[vs.url] = frozenset(s for s, _ in vs.codes)
    return found


# ---------------------------------------------------------------------------------------
# the walk


class _Walk:
    """One validation: the issues found and the current resource scope."""

    def __init__(self) -> None:
        self.issues: list[Issue] = []
        self.resource: Json = {}  # %resource
        self.root: Json = {}  # %rootResource: the resource holding `contained`
        self.contained: dict[str, str] = {}  # contained id -> resourceType
        self.local_refs: set[str] = set()  # "#id" values seen in this container
        self.refers_container: set[int] = set()  # contained indices that refer to "#"
        self.in_contained: int | None = None
        self.defs = definitions()

    def error(self, code: str, message: str, path: str | None) -> None:
        self.issues.append(Issue(code, message, expression=path))

    # -- resources --------------------------------------------------------------------

    def visit_resource(self, res: Any, path: str | None, contained: int | None = None) -> None:
        """A whole resource: at the root, in a Bundle/Parameters, or contained."""
        if type(res) is not dict:
            self.error("structure", f"expected a resource object, got {json_kind(res)}", path)
            return
        rt = res.get("resourceType")
        if rt is None:
            self.error("required", "resourceType is missing", _join(path, "resourceType"))
            return
        if not isinstance(rt, str) or rt not in self.defs.resource_types:
            message = f"{rt!r} is not a concrete R4 resource type"
            self.error("value", message, _join(path, "resourceType"))
            return
        path = path or rt
        node = _node((rt, ""))
        if contained is not None:
            self._contained(res, node, path, contained)
            return
        saved = self._scope()
        self.resource = self.root = res
        self.contained = _contained_ids(res.get("contained"))
        self.local_refs, self.refers_container, self.in_contained = set(), set(), None
        self.complex(res, node, path)
        self.invariants(node.invariants, res, node.type_path, path)
        self.contained_referenced(res, path)
        self._restore(saved)

    def _scope(self) -> tuple[Any, ...]:
        return (
            self.resource,
            self.root,
            self.contained,
            self.local_refs,
            self.refers_container,
            self.in_contained,
        )

    def _restore(self, scope: tuple[Any, ...]) -> None:
        (
            self.resource,
            self.root,
            self.contained,
            self.local_refs,
            self.refers_container,
            self.in_contained,
        ) = scope

    def _contained(self, res: Json, node: _Node, path: str, index: int) -> None:
        """dom-2/4/5: no nesting, no version metadata or security labels of their own."""
        if self.in_contained is not None:
            return  # nested contained: reported as dom-2 by the parent
        if "contained" in res:
            message = "dom-2: a contained resource SHALL NOT contain resources"
            self.error("invariant", message, f"{path}.contained")
        meta = res.get("meta")
        if isinstance(meta, dict):
            for name in ("versionId", "lastUpdated"):
                if name in meta:
                    message = f"dom-4: a contained resource SHALL NOT have meta.{name}"
                    self.error("invariant", message, f"{path}.meta.{name}")
            if "security" in meta:
                message = "dom-5: a contained resource SHALL NOT have a security label"
                self.error("invariant", message, f"{path}.meta.security")
        saved = self.resource
        self.resource, self.in_contained = res, index
        self.complex(res, node, path)
        self.invariants(node.contained_invariants, res, node.type_path, path)
        self.resource, self.in_contained = saved, None

    def contained_referenced(self, res: Json, path: str) -> None:
        """dom-3: every contained resource is referenced, or refers to its container."""
        items = res.get("contained")
        if type(items) is not list:
            return
        for i, c in enumerate(items):
            if type(c) is not dict or i in self.refers_container:
                continue
            cid = c.get("id")
            if isinstance(cid, str) and "#" + cid in self.local_refs:
                continue
            message = (
                "dom-3: contained resource is not referenced from the rest of the resource"
                if isinstance(cid, str)
                else "dom-3: contained resource has no id and does not refer to its container"
            )
            self.error("invariant", message, f"{path}.contained[{i}]")

    # -- elements ---------------------------------------------------------------------

    def complex(self, obj: Json, node: _Node, path: str) -> None:
        """An object: every property known and well-formed, required ones present."""
        if not obj:
            self.error("structure", "empty object (ele-1: an element needs content)", path)
            return
        slots = node.slots
        choices: dict[str, str] | None = None
        for key, value in obj.items():
            slot = slots.get(key)
            if slot is None:
                if key != "resourceType" or not node.is_resource:
                    self.error("structure", f"unknown element {key!r}", f"{path}.{key}")
                continue
            if slot.choice is not None:
                if choices is None:
                    choices = {}
                first = choices.setdefault(slot.choice, slot.name)
                if first != slot.name:
                    message = f"{slot.choice} has more than one type: {first} and {slot.name}"
                    self.error("structure", message, f"{path}.{slot.name}")
                    continue
            mode = slot.mode
            if mode == _ONE_PRIMITIVE:  # the hot case, kept inline
                if value is None or type(value) is list:
                    self.bad_primitive(value, f"{path}.{key}")
                    continue
                found = slot.check(value)
                if found is not None or slot.extra:
                    self.primitive_rest(slot, value, found, path, -1)
            elif mode == _ONE_COMPLEX:
                if type(value) is list:
                    self.error("structure", _NOT_AN_ARRAY, f"{path}.{key}")
                else:
                    self.datatype(slot, value, f"{path}.{key}")
            elif mode == _ARRAY:
                self.array(slot, value, obj, f"{path}.{key}")
            elif mode == _EXTENSION_PART:
                self.extension_part(slot, value, obj, f"{path}.{slot.name}")
            elif type(value) is list:
                self.error("structure", _NOT_AN_ARRAY, f"{path}.{key}")
            else:
                self.visit_resource(value, f"{path}.{key}")
        for label, names in node.required:
            for name in names:
                if name in obj:
                    break
            else:
                self.error("required", f"missing required element {label!r}", f"{path}.{label}")

    def bad_primitive(self, value: Any, path: str) -> None:
        """A single primitive that is null (only array placeholders may be) or an array."""
        if value is not None:
            self.error("structure", "expected a single value, not an array", path)
        else:
            self.error("structure", "null is not allowed (only as a placeholder in arrays)", path)

    def extension_part(self, slot: _Slot, value: Any, obj: Json, path: str) -> None:
        """`_name`: beside its value (paired by the array walk if repeating) or alone."""
        base = obj.get(slot.name)
        if base is None:
            self.extension_only(slot, value, path)
        elif not slot.array:
            self.primitive_extension(value, path, has_value=True)

    def array(self, slot: _Slot, value: Any, obj: Json, path: str) -> None:
        """A repeating element: a non-empty JSON array within its max cardinality."""
        if type(value) is not list:
            self.error("structure", "expected an array (max cardinality > 1)", path)
            return
        if not value:
            self.error("structure", "empty array", path)
            return
        if 0 < slot.max < len(value):
            self.error("structure", f"at most {slot.max} items allowed", path)
        kind = slot.kind
        if kind == _PRIM:
            self.primitive_array(slot, value, obj.get(slot.ext_key), path)
        elif kind == _COMPLEX:
            for i, item in enumerate(value):
                self.datatype(slot, item, f"{path}[{i}]")
        else:
            contained = kind == _CONTAINED
            for i, item in enumerate(value):
                self.visit_resource(item, f"{path}[{i}]", i if contained else None)

    def datatype(self, slot: _Slot, value: Any, path: str) -> None:
        """One object of a datatype or backbone element, with its own rules."""
        if type(value) is not dict:
            message = f"expected an object ({slot.type}), got {json_kind(value)}"
            self.error("structure", message, path)
            return
        if len(value) == 1 and "id" in value:
            self.error("invariant", "ele-1: an element needs a value or children", path)
        self.complex(value, slot._node or slot.node(), path)
        special = slot.special
        if special == _REFERENCE:
            self.reference(value, slot.targets, path)
        elif special == _EXTENSION:
            self.extension(value, path)
        elif special == _BOUND_CONCEPT:
            assert slot.concept is not None
            self.concept(value, slot.concept, path)
        if slot.invariants:
            self.invariants(slot.invariants, value, slot.type_path, path)

    def primitive_rest(
        self, slot: _Slot, value: Any, found: Finding | None, parent: str, index: int
    ) -> None:
        """A primitive's issue (if any), then its binding, local reference and invariants."""
        if found is not None:
            severity, code, message = found
            where = _location(parent, slot.key, index)
            self.issues.append(Issue(code, message, severity=severity, expression=where))
            if severity == "error":
                return
        if slot.codes is not None and value not in slot.codes:
            message = f"{value!r} is not in the required value set {slot.binding}"
            self.error("code-invalid", message, _location(parent, slot.key, index))
        if slot.local_refs and value[:1] == "#":
            self._local_reference(value)
        if slot.invariants:
            where = _location(parent, slot.key, index)
            self.invariants(slot.invariants, value, slot.type, where)

    def primitive_array(self, slot: _Slot, values: list[Any], exts: Any, path: str) -> None:
        """A primitive array, paired item by item with its `_name` array if present."""
        if exts is not None and (type(exts) is not list or len(exts) != len(values)):
            message = f"_{slot.key} must be an array as long as {slot.key}"
            self.error("structure", message, _sibling(path, slot.key))
            exts = None
        parent = path[: -len(slot.key) - 1]
        for i, value in enumerate(values):
            ext = exts[i] if exts is not None else None
            if value is not None:
                found = slot.check(value)
                if found is not None or slot.extra:
                    self.primitive_rest(slot, value, found, parent, i)
            elif ext is None:
                self.error("structure", "null is not allowed here", f"{path}[{i}]")
            if ext is not None:
                self.primitive_extension(ext, f"{path}[{i}]", has_value=value is not None)

    def extension_only(self, slot: _Slot, value: Any, path: str) -> None:
        """A `_name` without its value: extensions that stand for the value."""
        if not slot.array:
            if type(value) is list:
                self.error("structure", "expected a single object, not an array", path)
                return
            self.primitive_extension(value, path, has_value=False)
            return
        if type(value) is not list or not value:
            self.error("structure", "expected a non-empty array", path)
            return
        for i, item in enumerate(value):
            if item is None:
                self.error("structure", "null with no value to pair with", f"{path}[{i}]")
            else:
                self.primitive_extension(item, f"{path}[{i}]", has_value=False)

    def primitive_extension(self, ext: Any, path: str, *, has_value: bool) -> None:
        """The id/extension part of a primitive (`_name`)."""
        if type(ext) is not dict:
            self.error("structure", f"expected an object, got {json_kind(ext)}", path)
            return
        if not ext:
            self.error("structure", "empty object", path)
            return
        if not has_value and "extension" not in ext:
            self.error("invariant", "ele-1: a primitive needs a value or extensions", path)
        self.complex(ext, _node(("Element", "")), path)

    # -- special datatypes ------------------------------------------------------------

    def extension(self, ext: Json, path: str) -> None:
        """ext-1: an extension has either nested extensions or a value, not both."""
        if ("extension" in ext) != _EXTENSION_VALUES.isdisjoint(ext):
            message = "ext-1: an extension must have either extensions or a value[x], not both"
            self.error("invariant", message, path)

    def reference(self, ref: Json, targets: frozenset[str] | None, path: str) -> None:
        """Reference.reference: a valid form, resolvable if local, of an allowed type."""
        target = ref.get("reference")
        if type(target) is not str or not target:
            return
        where = f"{path}.reference"
        if target[0] == "#":
            self._local_reference(target)
            if len(target) == 1:
                return
            found = self.contained.get(target[1:])
            if found is None:
                message = f"ref-1: {target!r} does not resolve to a contained resource"
                self.error("invariant", message, where)
            elif targets is not None and found not in targets:
                self._wrong_target(found, targets, where)
            return
        kind, typ = _reference_form(target, self.defs)
        if kind is None:
            self.error("value", f"{target!r} is not a valid reference", where)
        elif typ is not None and targets is not None and typ not in targets:
            self._wrong_target(typ, targets, where)

    def _wrong_target(self, typ: str, targets: frozenset[str], where: str) -> None:
        allowed = ", ".join(sorted(targets))
        message = f"a reference to {typ} is not allowed here (allowed: {allowed})"
        self.error("invalid", message, where)

    def _local_reference(self, target: str) -> None:
        self.local_refs.add(target)
        if target == "#" and self.in_contained is not None:
            self.refers_container.add(self.in_contained)

    def concept(self, cc: Json, vs: ValueSetCodes, path: str) -> None:
        """A required binding on a CodeableConcept: codings from its systems must be in it."""
        codings = cc.get("coding")
        if type(codings) is not list or not codings:
            return
        systems = _systems(vs)
        matched = False
        for i, coding in enumerate(codings):
            if type(coding) is not dict or coding.get("system") not in systems:
                continue
            matched = True
            if (coding["system"], coding.get("code")) not in vs.codes:
                message = f"{coding.get('code')!r} is not in the required value set {vs.url}"
                self.error("code-invalid", message, f"{path}.coding[{i}].code")
        if not matched:
            message = f"no coding is from the required value set {vs.url}"
            self.error("code-invalid", message, f"{path}.coding")

    def invariants(self, invs: tuple[Invariant, ...], value: Any, tpath: str, path: str) -> None:
        for inv in invs:
            if not inv.holds(value, tpath, self.resource, self.root):
                self.issues.append(
                    Issue("invariant", f"{inv.key}: {inv.human}", inv.severity, path)
                )


def _join(path: str | None, name: str) -> str:
    return f"{path}.{name}" if path else name


def _location(parent: str, key: str, index: int) -> str:
    return f"{parent}.{key}" if index < 0 else f"{parent}.{key}[{index}]"


def _sibling(path: str, key: str) -> str:
    return path.rsplit(".", 1)[0] + "._" + key


def _contained_ids(items: Any) -> dict[str, str]:
    if type(items) is not list:
        return {}
    return {
        c["id"]: c.get("resourceType", "")
        for c in items
        if type(c) is dict and isinstance(c.get("id"), str)
    }


_RELATIVE = re.compile(
    r"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?"
)


def _reference_form(target: str, defs: Definitions) -> tuple[str | None, str | None]:
    """(form, resource type if relative) of a non-local reference; form None if invalid."""
    m = _RELATIVE.fullmatch(target)
    if m is not None:
        typ = m.group(1)
        return ("relative", typ) if typ in defs.resource_types else (None, None)
    if target.startswith("urn:uuid:"):
        ok = defs.primitive_patterns["uuid"].fullmatch(target) is not None
        return ("uuid" if ok else None), None
    if target.startswith("urn:oid:"):
        ok = defs.primitive_patterns["oid"].fullmatch(target) is not None
        return ("oid" if ok else None), None
    if _ABSOLUTE_URL.fullmatch(target):
        return "absolute", None
    return None, None


def validate_resource(resource: Any, *, expected_type: str | None = None) -> list[Issue]:
    """All issues (errors and warnings) of `resource` against the base R4 specification.

    `expected_type` is the type the request is about (e.g. the URL's `[type]`).
    """
    walk = _Walk()
    if type(resource) is not dict:
        message = f"a resource must be a JSON object, got {json_kind(resource)}"
        walk.error("structure", message, None)
        return walk.issues
    rt = resource.get("resourceType")
    if expected_type is not None and rt != expected_type:
        known = isinstance(rt, str) and rt in walk.defs.resource_types
        message = f"expected a {expected_type} resource, got {rt!r}"
        walk.error("invalid", message, f"{rt}.resourceType" if known else "resourceType")
    walk.visit_resource(resource, None)
    return walk.issues
