"""SQL for `_text` and `_content` (full text), on both backends.

The words were made by `fhir/search_text.py`, for the stored text and the query alike,
so each backend only looks words up: SQLite in two FTS5 tables (`text_narrative`,
`text_content`; rowid = rid; the `ascii` tokenizer, which splits the stored words on
the spaces between them and changes nothing else), PostgreSQL in `search_text`
(tsvectors built with `array_to_tsvector`, no parser or dictionary). A value's words
are AND-ed prefix terms (`"w" *` in FTS5, `'w':*` in tsquery), values OR-ed.

The query text is bound as a parameter, and each word is quoted; words are letters
and digits only (checked again here), so no input can form FTS5 or tsquery syntax.
"""

from __future__ import annotations

import re
from typing import Any

from openrecord.store.base import UnsupportedSearch
from openrecord.store.query import Condition, TextCriterion

__all__ = ["TEXT_COLUMNS", "text_condition"]

# search parameter -> (SQLite FTS5 table, PostgreSQL search_text column)
TEXT_COLUMNS = {"_text": ("text_narrative", "narrative"), "_content": ("text_content", "content")}
_SAFE_WORD = re.compile(r"[^\W_]+")


def _alternatives(c: Condition) -> list[list[str]]:
    alts: list[list[str]] = []
    for v in c.values:
        if not isinstance(v, TextCriterion):
            raise UnsupportedSearch(f"{c.param} takes words, not {type(v).__name__}")
        words = [w for w in v.words if _SAFE_WORD.fullmatch(w)]
        if words:
            alts.append(words)
    return alts


def text_condition(c: Condition, dialect: str, rid: str = "r.rid") -> tuple[str, list[Any]]:
    """`rid IN (…matching rids…)` for a `_text`/`_content` condition; `dialect` is
    "sqlite" or "postgresql"."""
    if c.param not in TEXT_COLUMNS:
        raise UnsupportedSearch(f"{c.param} is not a full-text parameter")
    if c.modifier is not None or c.missing is not None:
        raise UnsupportedSearch(f"{c.param} takes no modifier")
    alts = _alternatives(c)
    if not alts:
        return "1 = 0", []
    table, column = TEXT_COLUMNS[c.param]
    if dialect == "sqlite":
        match = " OR ".join("(" + " AND ".join(f'"{w}" *' for w in ws) + ")" for ws in alts)
        return f"{rid} IN (SELECT rowid FROM {table} WHERE {table} MATCH ?)", [match]
    query = " | ".join("(" + " & ".join(f"'{w}':*" for w in ws) + ")" for ws in alts)
    return (
        f"{rid} IN (SELECT rid FROM search_text WHERE {column} @@ CAST(? AS tsquery))",
        [query],
    )
