"""Full-text search (`_text`, `_content`): the words of a resource and of a query.

Both sides reduce text to the same words here, in Python, so that SQLite (FTS5) and
PostgreSQL (tsvector) see identical tokens and give identical results; the databases
only split on spaces and look words up. A word is a run of letters and digits
(Unicode), casefolded with accents removed (as string search folds), at most
`MAX_WORD` characters (a longer run continues as the next word, on both sides).

- `_text`: the narrative, `text.div` with its XHTML tags removed (inline tags such as
  `<b>` join, block tags separate) and character references decoded.
- `_content`: the narrative's words plus every JSON string value of the resource
  (contained resources included), except values that are identifiers or machinery
  rather than text: `id`, the resource's `meta` (a contained resource's `versionId`,
  `lastUpdated`, `source`, `profile`), `reference`, `system`, `url`, `fullUrl`,
  `resourceType`, base64 `data`, the raw `div`, choice values that are ids, URIs or
  base64 (`valueUri`, `valueBase64Binary`…), and date/time-shaped strings. Codes and
  displays are text. Numbers and booleans are not.

Each side is stored as its distinct words, in order of first appearance, up to
`MAX_CHARS` characters (64 KiB for ASCII): words past that are not searchable.

Matching (store/sql_text.py): a query value is split into words the same way;
a resource matches when every word of the value starts a word of its text (prefix,
case- and accent-insensitive, any order). Comma-separated values are OR-ed; repeated
parameters AND-ed. Everything that is not a letter or digit — quotes, `*`, `-`,
`:`, parentheses — separates words, and `OR`, `AND`, `NEAR` are ordinary words, so
no user input can form full-text query syntax. A value with no words matches nothing.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from html import unescape
from typing import Any

from openrecord.fhir.search_values import IndexEntry, StringValue

__all__ = [
    "CONTENT",
    "MAX_CHARS",
    "MAX_WORD",
    "TEXT",
    "TEXT_PARAMS",
    "TEXT_RULE",
    "content_text",
    "narrative_text",
    "split_text_entries",
    "text_entries",
    "words",
]

TEXT = "_text"
CONTENT = "_content"
TEXT_PARAMS = frozenset((TEXT, CONTENT))
# The matching rule, as the CapabilityStatement documents it.
TEXT_RULE = (
    "Words (letters and digits; case and accents ignored): a value matches when each of"
    " its words starts a word of the text; comma-separated values are OR-ed."
)
MAX_CHARS = 65536  # per side, of space-separated distinct words
MAX_WORD = 200  # characters; PostgreSQL refuses lexemes over 2,046 bytes

_WORD = re.compile(rf"[^\W_]{{1,{MAX_WORD}}}")
# ASCII text: every character but a letter or digit becomes a space, letters lower
# case; then str.split. Same words as _WORD, several times faster than the regex.
_ASCII_WORDS = str.maketrans({i: (chr(i).lower() if chr(i).isalnum() else " ") for i in range(128)})
# Inline elements of XHTML run into their neighbours' words ("<b>Hyper</b>tension");
# any other tag separates words.
_INLINE = re.compile(
    r"</?(?:a|abbr|acronym|b|big|cite|code|dfn|em|font|i|kbd|q|s|samp|small|span|strike"
    r"|strong|sub|sup|tt|u|var)\b[^>]*>",
    re.IGNORECASE,
)
_TAG = re.compile(r"<!--.*?-->|<[^>]*>", re.DOTALL)
_DATE = re.compile(r"\d{4}(?:-\d\d(?:-\d\d(?:T[\d:.]+(?:Z|[+-]\d\d:\d\d)?)?)?)?\Z")
# Keys whose values are identifiers or machinery, not text (see the module docstring),
# the same for choice types ("valueUri"), and meta's keys (for contained resources).
_SKIP = frozenset(
    {"id", "reference", "system", "url", "fullUrl", "resourceType", "data", "div"}
    | {"versionId", "lastUpdated", "source", "profile"}
)
_SKIP_SUFFIXES = ("Uri", "Url", "Canonical", "Oid", "Uuid", "Id", "Base64Binary")
_TOP_SKIP = frozenset(("resourceType", "id", "meta", "text"))
_DIGITS = frozenset("0123456789")
_SKIPPED: dict[str, bool] = {}  # key -> skipped (memo; keys come from the definitions)


def _fold(text: str) -> str:
    """As `normalize_string` folds (casefold, no accents), without collapsing spaces."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _split(text: str) -> list[str]:
    """The distinct words of `text`, folded, in order of first appearance."""
    if text.isascii():
        found = list(dict.fromkeys(text.translate(_ASCII_WORDS).split()))
        if max(map(len, found), default=0) <= MAX_WORD:
            return found
        found = [w[i : i + MAX_WORD] for w in found for i in range(0, len(w), MAX_WORD)]
    else:
        found = _WORD.findall(_fold(text))
    return list(dict.fromkeys(found))


def words(text: str) -> list[str]:
    """The distinct words of a query value (or any text), folded."""
    return _split(text)


def _joined(found: list[str]) -> str:
    """Space-separated words, cut at MAX_CHARS at a word boundary."""
    text = " ".join(found)
    if len(text) > MAX_CHARS:
        cut = text.rfind(" ", 0, MAX_CHARS + 1)
        text = text[: max(cut, 0)]
    return text


def _narrative_source(resource: dict[str, Any]) -> str:
    narrative = resource.get("text")
    div = narrative.get("div") if isinstance(narrative, dict) else None
    if not isinstance(div, str) or not div:
        return ""
    return unescape(_TAG.sub(" ", _INLINE.sub("", div)))


def narrative_text(resource: dict[str, Any]) -> str:
    """The narrative's words (what `_text` searches), space-separated."""
    return _joined(_split(_narrative_source(resource)))


def _skipped(key: str) -> bool:
    skip = _SKIPPED.get(key)
    if skip is None:
        if len(_SKIPPED) > 4096:
            _SKIPPED.clear()
        skip = _SKIPPED[key] = key in _SKIP or key.endswith(_SKIP_SUFFIXES)
    return skip


def _strings(node: dict[str, Any], out: list[str]) -> None:
    """Append the text values under `node` to `out`.

    Hot (every write): exact type tests and the checks inlined. A list holds either
    objects or primitives (FHIR JSON never mixes them).
    """
    skipped, digits, date = _SKIPPED, _DIGITS, _DATE.match
    for key, value in node.items():
        kind = type(value)
        if kind is str:
            skip = skipped.get(key)
            if skip is None:
                skip = _skipped(key)
            if not skip and not (value[:1] in digits and date(value)):
                out.append(value)
        elif kind is dict:
            _strings(value, out)
        elif kind is list and value:
            if type(value[0]) is dict:
                for item in value:
                    if type(item) is dict:
                        _strings(item, out)
            elif not _skipped(key):
                out.extend(v for v in value if type(v) is str and not (v[:1] in digits and date(v)))


def content_text(resource: dict[str, Any], narrative: str | None = None) -> str:
    """Every text value's words (what `_content` searches), space-separated.

    `narrative`: the resource's `narrative_text`, if already computed.
    """
    out: list[str] = [narrative if narrative is not None else narrative_text(resource)]
    _strings({k: v for k, v in resource.items() if k not in _TOP_SKIP}, out)
    return _joined(_split("\n".join(out)))


def text_entries(resource: dict[str, Any]) -> list[IndexEntry]:
    """The two entries the store writes to its full-text tables: (`_text`, `_content`),
    always both and always last in a resource's index list (see split_text_entries)."""
    narrative = narrative_text(resource)
    content = content_text(resource, narrative)
    return [
        IndexEntry(TEXT, StringValue(narrative, narrative)),
        IndexEntry(CONTENT, StringValue(content, content)),
    ]


def split_text_entries(
    index: Sequence[IndexEntry],
) -> tuple[Sequence[IndexEntry], tuple[str, str] | None]:
    """The index without its trailing full-text entries, and their (narrative, content)
    words; None when the index has none (an index extracted without them)."""
    if len(index) < 2:
        return index, None
    text, content = index[-2], index[-1]
    if text.param != TEXT or content.param != CONTENT:
        return index, None
    tv, cv = text.value, content.value
    if not isinstance(tv, StringValue) or not isinstance(cv, StringValue):
        return index, None
    return index[:-2], (tv.value, cv.value)
