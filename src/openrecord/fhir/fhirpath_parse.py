"""A parser for the FHIRPath subset that search parameter expressions are written in.

Produces a small AST (tuples of dataclasses below) for `fhirpath.compile_path`.
It covers paths, `|`, `as`/`is`, `and`/`or`, `=`/`!=`, indexers, function
calls, literals and `%resource`/`$this`; anything else raises `Unsupported`,
and the caller falls back to fhirpathpy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "Binary",
    "Call",
    "Ident",
    "Index",
    "Literal",
    "Member",
    "Node",
    "TypeOp",
    "Union",
    "Unsupported",
    "Var",
    "parse",
]


class Unsupported(Exception):
    """The expression uses FHIRPath outside the natively compiled subset."""


@dataclass(frozen=True, slots=True)
class Ident:
    name: str  # first identifier of a path: a type name or a member of the focus


@dataclass(frozen=True, slots=True)
class Member:
    target: Node
    name: str


@dataclass(frozen=True, slots=True)
class Call:
    target: Node | None  # None: invoked on the focus (`resolve()`, `exists()`)
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Index:
    target: Node
    index: int


@dataclass(frozen=True, slots=True)
class Union:
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class TypeOp:
    op: str  # "as" | "is"
    target: Node
    type: str


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # "and" | "or" | "=" | "!="
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Literal:
    value: str | bool | int | float


@dataclass(frozen=True, slots=True)
class Var:
    name: str  # "resource", "this"


Node = Ident | Member | Call | Index | Union | TypeOp | Binary | Literal | Var

_TOKEN_RE = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>\d+(?:\.\d+)?)"
    r"|(?P<id>[A-Za-z_][A-Za-z0-9_]*|`[^`]+`)|(?P<var>%[A-Za-z_][A-Za-z0-9_]*|\$this)"
    r"|(?P<op>!=|[.()\[\],|=]))"
)
_ESCAPES = {"'": "'", "\\": "\\", "/": "/", "f": "\f", "n": "\n", "r": "\r", "t": "\t", '"': '"'}


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None or m.end() == pos:
            raise Unsupported(f"cannot tokenize {text[pos:]!r}")
        kind = m.lastgroup
        assert kind is not None
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self, value: str | None = None) -> bool:
        if self.pos >= len(self.tokens):
            return False
        return value is None or self.tokens[self.pos][1] == value

    def take(self, value: str | None = None) -> tuple[str, str]:
        if not self.peek(value):
            raise Unsupported(f"expected {value or 'a token'} at token {self.pos}")
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def expression(self) -> Node:
        node = self.equality()
        while self.peek("and") or self.peek("or"):
            op = self.take()[1]
            node = Binary(op, node, self.equality())
        return node

    def equality(self) -> Node:
        node = self.union()
        if self.peek("=") or self.peek("!="):
            op = self.take()[1]
            node = Binary(op, node, self.union())
        return node

    def union(self) -> Node:
        node = self.type_expr()
        while self.peek("|"):
            self.take()
            node = Union(node, self.type_expr())
        return node

    def type_expr(self) -> Node:
        node = self.postfix()
        while self.peek("as") or self.peek("is"):
            op = self.take()[1]
            node = TypeOp(op, node, self.type_name())
        return node

    def type_name(self) -> str:
        name = self.take()[1]
        while self.peek("."):  # FHIR.Quantity, System.String
            self.take()
            name = self.take()[1]
        return name.strip("`")

    def postfix(self) -> Node:
        node = self.primary()
        while True:
            if self.peek("."):
                self.take()
                kind, name = self.take()
                if kind != "id":
                    raise Unsupported(f"unexpected {name!r} after '.'")
                name = name.strip("`")
                node = self.call(node, name) if self.peek("(") else Member(node, name)
            elif self.peek("["):
                self.take()
                kind, num = self.take()
                if kind != "num" or not num.isdigit():
                    raise Unsupported("only integer indexers are supported")
                self.take("]")
                node = Index(node, int(num))
            else:
                return node

    def call(self, target: Node | None, name: str) -> Node:
        self.take("(")
        if name in ("as", "is", "ofType"):
            type_name = self.type_name()
            self.take(")")
            return TypeOp("as" if name == "ofType" else name, _require(target, name), type_name)
        args: list[Node] = []
        while not self.peek(")"):
            args.append(self.expression())
            if not self.peek(")"):
                self.take(",")
        self.take(")")
        return Call(target, name, tuple(args))

    def primary(self) -> Node:
        kind, value = self.take()
        if value == "(" and kind == "op":
            node = self.expression()
            self.take(")")
            return node
        if kind == "str":
            return Literal(
                re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), value[1:-1])
            )
        if kind == "num":
            return Literal(float(value) if "." in value else int(value))
        if kind == "var":
            return Var(value.lstrip("%$"))
        if kind == "id":
            if value in ("true", "false"):
                return Literal(value == "true")
            name = value.strip("`")
            return self.call(None, name) if self.peek("(") else Ident(name)
        raise Unsupported(f"unexpected {value!r}")


def _require(target: Node | None, name: str) -> Node:
    if target is None:
        raise Unsupported(f"{name}() without a target")
    return target


def parse(text: str) -> Node:
    """The AST of a FHIRPath expression, or `Unsupported` outside the subset."""
    p = _Parser(text)
    node = p.expression()
    if p.peek():
        raise Unsupported(f"unexpected {p.tokens[p.pos][1]!r}")
    return node
