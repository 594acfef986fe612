"""Search expressions compiled to plain Python closures over the resource JSON.

Index extraction evaluates every search parameter of a type on every write, so it
cannot afford a general FHIRPath engine (fhirpathpy takes 50-500 µs an
evaluation). The R4 expressions use a small subset: paths, unions, `as`/`ofType`
on choice elements, `where(resolve() is T)`, `where(field = 'x')`, `extension()`,
`first()`, `exists()`, indexers. `compile_path` turns those into closures, typed
statically from the definitions: each `Branch` yields values of one FHIR type
(`Observation.value` is one branch per `value[x]` choice), so converting them to
index values needs no run-time type guessing. Anything else raises `Unsupported`;
`fhirpath_fallback` then evaluates it with fhirpathpy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from openrecord.fhir.definitions import Child, Definitions
from openrecord.fhir.fhirpath_parse import (
    Binary,
    Call,
    Ident,
    Index,
    Literal,
    Member,
    Node,
    TypeOp,
    Union,
    Unsupported,
    Var,
    parse,
)
from openrecord.fhir.search_common import parse_reference

__all__ = ["Branch", "Fn", "Unsupported", "compile_path", "reference_target_type"]

# items (the input collection), root resource -> output collection
Fn = Callable[[list[Any], dict[str, Any]], list[Any]]

# FHIRPath System type names used in `as(...)` for FHIR primitives
_SYSTEM_TYPES = {
    "String": "string",
    "Boolean": "boolean",
    "Integer": "integer",
    "Decimal": "decimal",
    "Date": "date",
    "DateTime": "dateTime",
    "Time": "time",
}


@dataclass(frozen=True, slots=True)
class Branch:
    """One statically typed part of a compiled expression's result.

    `type` is the FHIR type code of every value `fn` yields ("Quantity",
    "dateTime", "boolean"; "Resource" for resources of any type), `node` where
    its children are defined. `first_key`, when set, is the property the path
    reads first on each input item (the resource, or a composite's base item):
    if the item lacks it, the branch yields nothing, and need not run.
    """

    type: str
    node: tuple[str, str] | None
    fn: Fn
    first_key: str | None = None
    binding: str | None = None  # the value set bound to the element the values came from
    keys: tuple[str, ...] | None = None  # a plain property path from the input: its identity


def _identity(items: list[Any], root: dict[str, Any]) -> list[Any]:
    return items


def _keys_step(keys: tuple[str, ...]) -> Fn:
    """Navigate one or more properties, flattening arrays (the hot path)."""
    if len(keys) == 1:
        key = keys[0]

        def one(items: list[Any], root: dict[str, Any]) -> list[Any]:
            out: list[Any] = []
            for it in items:
                if type(it) is dict:
                    v = it.get(key)
                    if v is not None:
                        if type(v) is list:
                            out += v
                        else:
                            out.append(v)
            return out

        return one

    def many(items: list[Any], root: dict[str, Any]) -> list[Any]:
        for key in keys:
            out: list[Any] = []
            for it in items:
                if type(it) is dict:
                    v = it.get(key)
                    if v is not None:
                        if type(v) is list:
                            out += v
                        else:
                            out.append(v)
            if not out:
                return out
            items = out
        return items

    return many


@dataclass(frozen=True, slots=True)
class _Path:
    """A branch under construction: keys still to be fused into one step."""

    type: str
    node: tuple[str, str] | None
    prefix: Fn | None  # steps before `keys`; None: the input itself
    keys: tuple[str, ...] = ()
    from_root: bool = False  # the input is the evaluation's input items (not %resource)
    lead: str | None = None  # the first property read on the input items, if known
    binding: str | None = None

    def down(self, key: str, child: Child) -> _Path:
        lead = self.lead
        if lead is None and self.from_root and self.prefix is None and not self.keys:
            lead = key
        return _Path(
            child.type,
            child.node,
            self.prefix,
            (*self.keys, key),
            self.from_root,
            lead,
            child.element.binding,
        )

    def fn(self) -> Fn:
        if not self.keys:
            return self.prefix or _identity
        step = _keys_step(self.keys)
        prefix = self.prefix
        if prefix is None:
            return step

        def chained(items: list[Any], root: dict[str, Any]) -> list[Any]:
            got = prefix(items, root)
            return step(got, root) if got else got

        return chained

    def then(self, step: Fn, type_: str, node: tuple[str, str] | None) -> _Path:
        inner = self.fn()

        def chained(items: list[Any], root: dict[str, Any]) -> list[Any]:
            got = inner(items, root)
            return step(got, root) if got else got

        return _Path(type_, node, chained, (), False, self.lead, self.binding)


def reference_target_type(ref: Any, root: dict[str, Any], types: frozenset[str]) -> str | None:
    """The resource type a Reference points at: by its URL, or its contained resource."""
    if type(ref) is not dict:
        return None
    text = ref.get("reference")
    if type(text) is not str:
        return None
    if text.startswith("#"):
        for c in root.get("contained") or ():
            if type(c) is dict and c.get("id") == text[1:]:
                t = c.get("resourceType")
                return t if isinstance(t, str) else None
        return None
    parsed = parse_reference(text, types)
    return parsed.type if parsed is not None else None


class _Compiler:
    def __init__(self, defs: Definitions, root_type: str) -> None:
        self.defs = defs
        self.root_type = root_type

    # -- types -----------------------------------------------------------------

    def is_subtype(self, type_code: str, target: str) -> bool:
        target = _SYSTEM_TYPES.get(target, target)
        t: str | None = type_code
        while t is not None:
            if t == target:
                return True
            td = self.defs.types.get(t)
            t = td.base if td is not None else None
        return False

    def is_type_name(self, name: str, focus: _Path) -> bool:
        """Does a leading identifier name the focus' type (`Observation.code`)?"""
        if name in ("Resource", "DomainResource"):
            td = self.defs.types.get(focus.type)
            return td is not None and td.kind == "resource"
        return name == focus.type

    # -- compilation ----------------------------------------------------------

    def compile(self, node: Node, focus: list[_Path]) -> list[_Path]:
        if isinstance(node, Ident):
            if node.name[:1].isupper() and all(self.is_type_name(node.name, f) for f in focus):
                return focus
            return self.member(focus, node.name)
        if isinstance(node, Member):
            return self.member(self.compile(node.target, focus), node.name)
        if isinstance(node, Union):
            return self.compile(node.left, focus) + self.compile(node.right, focus)
        if isinstance(node, TypeOp):
            return self.type_op(node, focus)
        if isinstance(node, Call):
            return self.call(node, focus)
        if isinstance(node, Index):
            return self.index(self.compile(node.target, focus), node.index)
        if isinstance(node, Var):
            if node.name == "resource":
                return [_Path(self.root_type, (self.root_type, ""), _root_fn)]
            if node.name == "this":
                return focus
            raise Unsupported(f"%{node.name}")
        if isinstance(node, Literal):
            return [_constant(node.value)]
        if isinstance(node, Binary):
            return [self.binary(node, focus)]
        raise Unsupported(type(node).__name__)  # pragma: no cover

    def member(self, paths: list[_Path], name: str) -> list[_Path]:
        out: list[_Path] = []
        for p in paths:
            if p.node is None:
                continue
            children = self.defs.children(p.node)
            child = children.get(name)
            if child is not None:
                out.append(p.down(name, child))
                continue
            if p.type == "Resource":
                raise Unsupported(f"member {name!r} of a resource of unknown type")
            el = self.defs.element(
                p.node[0], f"{p.node[1]}.{name}[x]" if p.node[1] else f"{name}[x]"
            )
            if el is None:
                continue
            for key, ch in children.items():
                if ch.element is el and not key.startswith("_"):
                    out.append(p.down(key, ch))
        return out

    def type_op(self, node: TypeOp, focus: list[_Path]) -> list[_Path]:
        if node.op == "is":
            if isinstance(node.target, Call) and node.target.name == "resolve":
                target = node.target.target
                refs = self.compile(target, focus) if target is not None else focus
                return [_resolve_is(refs, node.type, self.defs.resource_types)]
            raise Unsupported("'is' other than resolve() is T")
        paths = self.compile(node.target, focus)
        kept = [p for p in paths if self.is_subtype(p.type, node.type)]
        resources = [p for p in paths if p.type == "Resource"]
        for p in resources:  # resources of run-time type: filter on resourceType
            wanted = node.type

            def by_type(items: list[Any], root: dict[str, Any], wanted: str = wanted) -> list[Any]:
                return [i for i in items if type(i) is dict and i.get("resourceType") == wanted]

            kept.append(p.then(by_type, wanted, (wanted, "")))
        return kept

    def index(self, paths: list[_Path], n: int) -> list[_Path]:
        if len(paths) != 1:
            raise Unsupported("indexer on a multi-typed collection")
        return [paths[0].then(lambda items, root: items[n : n + 1], paths[0].type, paths[0].node)]

    def call(self, node: Call, focus: list[_Path]) -> list[_Path]:
        paths = self.compile(node.target, focus) if node.target is not None else focus
        name, args = node.name, node.args
        if name == "where" and len(args) == 1:
            return [self.where(p, args[0]) for p in paths]
        if name == "first" and not args:
            return self.index(paths, 0)
        if name in ("exists", "empty") and not args:
            return [_exists(paths, name == "exists")]
        if name == "extension" and len(args) == 1 and isinstance(args[0], Literal):
            url = args[0].value
            ext = self.member(paths, "extension")

            def by_url(items: list[Any], root: dict[str, Any]) -> list[Any]:
                return [i for i in items if type(i) is dict and i.get("url") == url]

            return [p.then(by_url, p.type, p.node) for p in ext]
        raise Unsupported(f"function {name}()")

    def where(self, path: _Path, pred: Node) -> _Path:
        if (
            isinstance(pred, TypeOp)
            and pred.op == "is"
            and isinstance(pred.target, Call)
            and pred.target.name == "resolve"
            and pred.target.target is None
        ):
            wanted, types = pred.type, self.defs.resource_types

            def resolves_to(items: list[Any], root: dict[str, Any]) -> list[Any]:
                return [i for i in items if reference_target_type(i, root, types) == wanted]

            return path.then(resolves_to, path.type, path.node)
        if (
            isinstance(pred, Binary)
            and pred.op == "="
            and isinstance(pred.left, Ident)
            and isinstance(pred.right, Literal)
            and path.node is not None
            and pred.left.name in self.defs.children(path.node)
            and not self.defs.children(path.node)[pred.left.name].element.is_array
        ):
            key, value = pred.left.name, pred.right.value

            def equals(items: list[Any], root: dict[str, Any]) -> list[Any]:
                return [i for i in items if type(i) is dict and i.get(key) == value]

            return path.then(equals, path.type, path.node)
        inner = self.compile(pred, [_Path(path.type, path.node, None)])
        fns = [p.fn() for p in inner]

        def general(items: list[Any], root: dict[str, Any]) -> list[Any]:
            out = []
            for it in items:
                got: list[Any] = []
                for f in fns:
                    got += f([it], root)
                if got == [True]:
                    out.append(it)
            return out

        return path.then(general, path.type, path.node)

    def binary(self, node: Binary, focus: list[_Path]) -> _Path:
        left = [p.fn() for p in self.compile(node.left, focus)]
        right = [p.fn() for p in self.compile(node.right, focus)]
        op = node.op

        def run(items: list[Any], root: dict[str, Any]) -> list[Any]:
            a: list[Any] = []
            for f in left:
                a += f(items, root)
            b: list[Any] = []
            for f in right:
                b += f(items, root)
            if op in ("=", "!="):
                if not a or not b:
                    return []
                equal = len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
                return [equal == (op == "=")]
            return _logic(op, _truth(a), _truth(b))

        return _Path("boolean", None, run)


def _equal(x: Any, y: Any) -> bool:
    # JSON booleans compare only with booleans (True == 1 in Python, not in FHIRPath)
    if isinstance(x, bool) or isinstance(y, bool):
        return isinstance(x, bool) and isinstance(y, bool) and x == y
    return bool(x == y)


def _truth(values: list[Any]) -> bool | None:
    if not values:
        return None
    if len(values) == 1 and isinstance(values[0], bool):
        return values[0]
    return True  # a non-empty, non-boolean singleton counts as true


def _logic(op: str, a: bool | None, b: bool | None) -> list[Any]:
    if op == "and":
        if a is False or b is False:
            return [False]
        return [True] if a and b else []
    if op == "or":
        if a is True or b is True:
            return [True]
        return [False] if a is False and b is False else []
    raise Unsupported(op)  # pragma: no cover


def _root_fn(items: list[Any], root: dict[str, Any]) -> list[Any]:
    return [root]


def _constant(value: Any) -> _Path:
    type_ = {bool: "boolean", int: "integer", float: "decimal"}.get(type(value), "string")
    return _Path(type_, None, lambda items, root: [value])


def _exists(paths: list[_Path], exists: bool) -> _Path:
    fns = [p.fn() for p in paths]

    def run(items: list[Any], root: dict[str, Any]) -> list[Any]:
        found = any(f(items, root) for f in fns)
        return [found if exists else not found]

    return _Path("boolean", None, run)


def _resolve_is(refs: list[_Path], wanted: str, types: frozenset[str]) -> _Path:
    fns = [p.fn() for p in refs]

    def run(items: list[Any], root: dict[str, Any]) -> list[Any]:
        got: list[Any] = []
        for f in fns:
            got += f(items, root)
        return [reference_target_type(r, root, types) == wanted for r in got]

    return _Path("boolean", None, run)


def compile_path(
    expression: str, defs: Definitions, root_type: str, focus: tuple[str, str] | None = None
) -> list[Branch]:
    """Compile `expression` for resources of `root_type` (or, with `focus`, for items
    of that (owner, path) node, e.g. a composite's component expression).

    Raises `Unsupported` outside the natively compiled subset.
    """
    compiler = _Compiler(defs, root_type)
    start = focus or (root_type, "")
    start_type = start[0] if not start[1] else "BackboneElement"
    paths = compiler.compile(parse(expression), [_Path(start_type, start, None, (), True)])
    return [
        Branch(
            p.type,
            p.node,
            p.fn(),
            p.lead,
            p.binding,
            p.keys if p.prefix is None and p.from_root else None,
        )
        for p in paths
    ]
