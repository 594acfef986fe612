"""The words of resources and queries for `_text`/`_content` (fhir/search_text.py)."""

from __future__ import annotations

from typing import Any

from openrecord.fhir.search_text import (
    CONTENT,
    MAX_CHARS,
    MAX_WORD,
    TEXT,
    content_text,
    narrative_text,
    split_text_entries,
    text_entries,
    words,
)
from openrecord.fhir.search_values import IndexEntry, StringValue, TokenValue

XHTML = 'xmlns="http://www.w3.org/1999/xhtml"'


def with_div(div: str, **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Basic",
        "text": {"status": "generated", "div": f"<div {XHTML}>{div}</div>"},
        **more,
    }


def test_narrative_strips_tags_and_decodes_references() -> None:
    r = with_div(
        "<p>Jos&eacute; has <b>Hyper</b>tension &amp; <i>type</i> 2 diabetes&#x2e;</p>"
        "<table><tr><td>A1</td><td>B2</td></tr></table><!-- hidden note --><br/>end"
    )
    assert narrative_text(r) == "jose has hypertension type 2 diabetes a1 b2 end"


def test_narrative_is_empty_without_a_div() -> None:
    assert narrative_text({"resourceType": "Basic"}) == ""
    assert narrative_text({"resourceType": "Basic", "text": {"status": "empty"}}) == ""


def test_content_takes_text_and_leaves_identifiers_out() -> None:
    r = with_div(
        "Story",
        id="abc123",
        meta={"versionId": "7", "tag": [{"code": "tagged"}]},
        code={
            "coding": [{"system": "http://sys.example/x", "code": "C42", "display": "Déjà Vu"}],
            "text": "Sneezing",
        },
        subject={"reference": "Patient/p9", "display": "Ann Lee"},
        created="2020-02-03",
        extension=[{"url": "http://ext.example/y", "valueString": "ext value"}],
        contained=[{"resourceType": "Patient", "id": "c1", "name": [{"family": "Inner"}]}],
    )
    assert content_text(r).split() == [
        "story", "c42", "deja", "vu", "sneezing", "ann", "lee", "ext", "value", "inner",
    ]  # fmt: skip


def test_words_fold_split_and_deduplicate() -> None:
    assert words("Zoë ZOE zoe") == ["zoe"]
    assert words('"diab*" OR NEAR(x -y) col:z \'q_r') == [
        "diab", "or", "near", "x", "y", "col", "z", "q", "r",
    ]  # fmt: skip
    assert words("") == [] and words("*()-\"'") == []
    assert words("日本語 テキスト") == ["日本語", "テキスト"]
    long = "a" * (MAX_WORD + 5)
    assert words(long) == ["a" * MAX_WORD, "aaaaa"]


def test_content_is_capped_at_a_word_boundary() -> None:
    many = " ".join(f"w{i:06d}" for i in range(20_000))  # 8 characters a word
    text = content_text({"resourceType": "Basic", "code": {"text": many}})
    assert len(text) <= MAX_CHARS
    assert text.split()[0] == "w000000"
    assert all(len(w) == 7 for w in text.split())  # no word cut in half
    assert len(text.split()) == (MAX_CHARS + 1) // 8


def test_entries_go_last_and_split_back_off() -> None:
    r = with_div("Story", code={"text": "Code text"})
    entries = text_entries(r)
    assert [e.param for e in entries] == [TEXT, CONTENT]
    token = IndexEntry("code", TokenValue("s", "c"))
    rest, text = split_text_entries([token, *entries])
    assert list(rest) == [token]
    assert text == ("story", "story code text")
    assert split_text_entries([token]) == ([token], None)
    # a string entry of another parameter is not taken for full text
    other = [IndexEntry("name", StringValue("a", "a")), IndexEntry("family", StringValue("b", "b"))]
    assert split_text_entries(other) == (other, None)


def test_choice_type_identifiers_and_escapes() -> None:
    r = {
        "resourceType": "Basic",
        "extension": [
            {"url": "http://e.example/a", "valueUri": "urn:skip:me"},
            {"url": "http://e.example/b", "valueBase64Binary": "QUJDRA=="},
            {"url": "http://e.example/c", "valueMarkdown": 'line one\nline "two"\ttab'},
        ],
        "code": {"coding": [{"code": "ok"}]},
    }
    assert content_text(r) == "line one two tab ok"


def test_ascii_and_unicode_text_split_alike() -> None:
    # the ASCII fast path and the Unicode path agree on the ASCII part of the text
    ascii_text = "Re: [x-ray] 12.5mg/dL, O'Brien_Smith #4 " + "q" * 450
    assert words(ascii_text) == words(ascii_text + " é")[:-1]
    assert words(ascii_text + " é")[-1] == "e"
