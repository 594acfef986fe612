"""Custom search parameters: SearchParameter resources the server indexes and searches.

The registry holds the effective parameter table — R4's built-in parameters plus
every `active` SearchParameter in the store — as one `Definitions` overlay (only
`search_params` differs from the built-in definitions) with the `IndexExtractor`
compiled for it. Query parsing, index extraction, `_include` and the
CapabilityStatement all read that overlay, so a custom parameter is used wherever
a built-in one is.

Several worker processes share one database, each with its own registry. The
registry's generation is the highest history seq of type SearchParameter: any
create, update or delete of one changes it. `sync()` compares it with the store's
(one indexed lookup) and reloads when it moved, so every search and write that
starts after a SearchParameter's commit sees it, whichever worker wrote it.
Resources written before that keep their index until `$reindex`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, tzinfo
from typing import Any

import orjson
from antlr4 import CommonTokenStream, InputStream  # type: ignore[import-untyped]
from antlr4.error.ErrorListener import ErrorListener  # type: ignore[import-untyped]
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from openrecord.fhir.definitions import Definitions, SearchParamDef
from openrecord.fhir.outcome import FHIRError, Issue
from openrecord.fhir.search_index import SKIPPED_PARAMS, IndexExtractor
from openrecord.store.base import Store

__all__ = ["MAX_EXPRESSION_CHARS", "CustomParam", "ParamTable", "SearchParamRegistry"]

_log = logging.getLogger(__name__)

MAX_EXPRESSION_CHARS = 4000  # hostile input: the compilers are recursive descent
_MAX_NESTING = 32  # parentheses and brackets
_MAX_DEPTH = 100  # of the parse tree
_REFUSED_FUNCTIONS = frozenset({"descendants", "repeat", "aggregate", "trace"})
_MAX_BASES = 200
_INDEXED = ("number", "date", "string", "token", "reference", "composite", "quantity", "uri")
# `:` starts a modifier, `.` a chain, `_` is reserved for parameters of all resources
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]{0,63}")


@dataclass(frozen=True, slots=True)
class CustomParam:
    """An active SearchParameter resource, as the index and the parser use it."""

    id: str
    bases: tuple[str, ...]
    param: SearchParamDef


@dataclass(frozen=True, slots=True)
class ParamTable:
    """One consistent state of the registry: swap the whole object, never its parts."""

    generation: int
    defs: Definitions
    indexer: IndexExtractor
    custom: tuple[CustomParam, ...]


class SearchParamRegistry:
    """The effective search parameters of one process, kept in step with the store."""

    def __init__(self, store: Store, base: Definitions, tz: tzinfo = UTC) -> None:
        self.store = store
        self.base = base
        self.tz = tz
        self._lock = threading.Lock()
        self._checked = 0.0  # monotonic time of the last generation check
        self._table = ParamTable(-1, base, IndexExtractor(base, tz), ())
        # overlays stay referenced: caches elsewhere key on id(defs)
        self._overlays: list[Definitions] = []

    @property
    def table(self) -> ParamTable:
        return self._table

    def sync(self, max_age: float = 0.0) -> ParamTable:
        """The current table, reloaded if a SearchParameter changed since the last check.

        `max_age` > 0 skips the check when one ran less than that many seconds ago
        (per-entry calls inside a Bundle that was checked at its start).
        """
        now = time.monotonic()
        table = self._table
        if max_age > 0 and now - self._checked < max_age:
            return table
        generation = self.store.generation("SearchParameter")
        self._checked = now
        if generation == table.generation:
            return table
        with self._lock:
            if self._table.generation != generation:
                self._table = self._load(generation)
            return self._table

    def _load(self, generation: int) -> ParamTable:
        custom: list[CustomParam] = []
        for stored in self.store.iter_current("SearchParameter"):
            assert stored.data is not None
            resource = orjson.loads(stored.data)
            if resource.get("status") != "active":
                continue
            try:
                custom.append(self.check(resource))
            except FHIRError as err:  # valid when written; the rules may have changed
                _log.error("SearchParameter/%s not used: %s", stored.id, err.issues[0].diagnostics)
        return self._build(generation, custom)

    def _build(self, generation: int, custom: Iterable[CustomParam]) -> ParamTable:
        custom = tuple(sorted(custom, key=lambda c: c.id))
        if not custom:
            defs = self.base
            previous = self._table
            indexer = previous.indexer if previous.defs is self.base else None
            return ParamTable(generation, defs, indexer or IndexExtractor(defs, self.tz), ())
        params = dict(self.base.search_params)
        for c in custom:
            for base in c.bases:
                table = params[base] = dict(params.get(base, {}))
                if c.param.code in table:
                    continue  # a duplicate (another worker raced the check): first id wins
                table[c.param.code] = c.param
        defs = dataclasses.replace(
            self.base,
            search_params=params,
            _children=self.base._children,  # element maps do not change: share them
        )
        self._overlays.append(defs)
        return ParamTable(generation, defs, IndexExtractor(defs, self.tz), custom)

    # -- validation ------------------------------------------------------------------

    def validate(self, resource: dict[str, Any]) -> None:
        """422 when an active SearchParameter cannot be used as written.

        Drafts and retired ones are stored as they are: they are never used.
        """
        if resource.get("status") != "active":
            return
        candidate = self.check(resource)
        table = self.sync()
        others = [c for c in table.custom if c.id != resource.get("id")]
        for c in others:
            shared = set(c.bases) & set(candidate.bases)
            if c.param.code == candidate.param.code and shared:
                raise _invalid(
                    f"code {candidate.param.code!r} is already defined for"
                    f" {', '.join(sorted(shared))} by SearchParameter/{c.id}",
                    "SearchParameter.code",
                )
        trial = self._build(-2, [*others, candidate])
        _check_compiles(trial, candidate)

    def check(self, resource: dict[str, Any]) -> CustomParam:
        """The parameter an active SearchParameter defines; 422 naming the bad element."""
        code = resource.get("code")
        if not isinstance(code, str) or not _CODE.fullmatch(code):
            raise _invalid(
                "code must be letters, digits and '-' (at most 64, not starting with '-')",
                "SearchParameter.code",
            )
        bases = resource.get("base")
        if not isinstance(bases, list) or not bases or len(bases) > _MAX_BASES:
            raise _invalid("base must name at least one resource type", "SearchParameter.base")
        for i, base in enumerate(bases):
            if base not in self.base.resource_types:
                raise _invalid(
                    f"{base!r} is not a FHIR R4 resource type", f"SearchParameter.base[{i}]"
                )
            if code in SKIPPED_PARAMS or code in self.base.search_params.get(base, {}):
                raise _invalid(
                    f"{base} already has a built-in search parameter {code!r}",
                    "SearchParameter.code",
                )
        kind = resource.get("type")
        if kind not in _INDEXED:
            raise _invalid(
                f"type {kind!r} cannot be indexed (one of {', '.join(_INDEXED)})",
                "SearchParameter.type",
            )
        expression = resource.get("expression")
        if not isinstance(expression, str) or not expression.strip():
            raise _invalid("an expression is required", "SearchParameter.expression")
        _check_size(expression, "SearchParameter.expression")
        targets = resource.get("target") or []
        for i, target in enumerate(targets):
            if target not in self.base.resource_types:
                raise _invalid(
                    f"{target!r} is not a FHIR R4 resource type", f"SearchParameter.target[{i}]"
                )
        components: list[tuple[str, str]] = []
        raw_components = resource.get("component") or []
        if kind == "composite" and not raw_components:
            raise _invalid("a composite parameter needs components", "SearchParameter.component")
        for i, comp in enumerate(raw_components if kind == "composite" else []):
            where = f"SearchParameter.component[{i}]"
            definition, expr = comp.get("definition"), comp.get("expression")
            if not isinstance(definition, str) or not isinstance(expr, str) or not expr.strip():
                raise _invalid("a component needs a definition and an expression", where)
            _check_size(expr, f"{where}.expression")
            components.append((definition, expr))
        url = resource.get("url")
        if not isinstance(url, str) or not url:
            raise _invalid(
                "a url is required (the CapabilityStatement's definition)", "SearchParameter.url"
            )
        param = SearchParamDef(
            code, kind, url, expression, tuple(dict.fromkeys(targets)), tuple(components)
        )
        return CustomParam(str(resource.get("id", "")), tuple(dict.fromkeys(bases)), param)


def _check_compiles(table: ParamTable, candidate: CustomParam) -> None:
    param = candidate.param
    if param.type == "composite":
        by_url = {p.url: p for params in table.defs.search_params.values() for p in params.values()}
        for i, (url, _) in enumerate(param.components):
            found = by_url.get(url)
            if found is None or found.type in ("composite", "special"):
                raise _invalid(
                    f"component definition {url!r} is not a known non-composite search parameter",
                    f"SearchParameter.component[{i}].definition",
                )
    for where, text in [
        ("SearchParameter.expression", param.expression or ""),
        *(
            (f"SearchParameter.component[{i}].expression", expr)
            for i, (_, expr) in enumerate(param.components)
        ),
    ]:
        problem = fhirpath_syntax_error(text)
        if problem is not None:
            raise _invalid(f"the expression is refused: {problem}", where)
    for base in candidate.bases:
        try:
            table.indexer.check_param(base, param)
        except ValueError as err:
            raise _invalid(f"for {base}: {err}", "SearchParameter.expression") from None
        except RecursionError:
            raise _invalid(
                f"for {base}: the expression nests too deeply", "SearchParameter.expression"
            ) from None
        except Exception as err:  # a compiler bug must not become a 500 nor a stored definition
            raise _invalid(
                f"for {base}: the expression cannot be compiled ({type(err).__name__})",
                "SearchParameter.expression",
            ) from None


class _Raising(ErrorListener):  # type: ignore[misc]
    def syntaxError(
        self, recognizer: Any, symbol: Any, line: int, column: int, msg: str, e: Any
    ) -> None:
        raise ValueError(f"at character {column + 1}: {msg}")


def fhirpath_syntax_error(expression: str) -> str | None:
    """Why `expression` is not FHIRPath we accept, or None.

    fhirpathpy's own `parse` recovers from syntax errors silently (`Patient.((`
    compiles, to the resource itself); this reads the whole text with the same
    grammar and fails on the first error. Parse trees deeper than `_MAX_DEPTH`
    (R4's own expressions reach 14) and functions whose cost grows with the
    resource's size squared are refused: every write would run them.
    """
    try:
        lexer = FHIRPathLexer(InputStream(expression))
        lexer.removeErrorListeners()
        lexer.addErrorListener(_Raising())
        tokens = CommonTokenStream(lexer)
        parser = FHIRPathParser(tokens)
        parser.removeErrorListeners()
        parser.addErrorListener(_Raising())
        tree = parser.entireExpression()  # type: ignore[no-untyped-call]
    except RecursionError:
        return "it nests too deeply"
    except Exception as err:  # ValueError from the listener, LexerNoViableAlt…
        return str(err) or type(err).__name__
    stack: list[tuple[Any, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_DEPTH:
            return f"it nests more than {_MAX_DEPTH} levels"
        stack.extend((node.getChild(i), depth + 1) for i in range(node.getChildCount()))
    texts = [t.text for t in tokens.tokens]
    for name, after in itertools.pairwise(texts):
        if after == "(" and name in _REFUSED_FUNCTIONS:
            return f"{name}() is not allowed in a search parameter"
    return None


def _check_size(expression: str, where: str) -> None:
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise _invalid(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters", where)
    depth = deepest = 0
    for ch in expression:
        if ch in "([":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]":
            depth -= 1
    if deepest > _MAX_NESTING:
        raise _invalid(f"the expression nests more than {_MAX_NESTING} levels", where)


def _invalid(message: str, expression: str) -> FHIRError:
    return FHIRError(422, [Issue("invalid", message, expression=expression)])
