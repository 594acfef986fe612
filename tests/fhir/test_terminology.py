"""Terminology over the R4 core (fhir/terminology.py), against the official packages."""

from __future__ import annotations

from typing import Any

import pytest

from openrecord.fhir.definitions import definitions
from openrecord.fhir.outcome import FHIRError
from openrecord.fhir.search_query import parse_search
from openrecord.fhir.search_terminology import terminology_codes
from openrecord.fhir.terminology import Terminology, terminology
from openrecord.store.query import Condition
from tests.terminology_packages import code_system, official_codes

NULL_FLAVOR = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
S = "http://example.org/cs"


def required_value_sets() -> list[str]:
    return sorted(definitions().value_sets)


def test_every_required_value_set_expands_to_the_official_codes() -> None:
    term = terminology()
    compared = 0
    for url in required_value_sets():
        want = official_codes(url)
        entries = term.entries(url)
        if not want:
            # No closed official expansion (mimetypes, ucum-units, an external LOINC list):
            # the server must not pretend to know its codes.
            assert entries is None, url
            continue
        assert entries is not None, url
        assert {(e.system, e.code) for e in entries} == want, url
        compared += 1
    assert compared >= 200


def test_validate_code_agrees_with_the_official_expansions() -> None:
    term = terminology()
    urls = [u for u in required_value_sets() if official_codes(u)]
    every_code = {pair for u in urls for pair in official_codes(u) or ()}
    for url in urls:
        want = official_codes(url) or set()
        for system, code in want:
            assert term.validate_code(url, system, code).result, (url, system, code)
        outside = next(p for p in sorted(every_code) if p not in want)
        found = term.validate_code(url, *outside)
        assert not found.result and found.message, (url, outside)
        assert not term.validate_code(url, next(iter(want))[0], "no-such-code").result


def test_lookup_displays_come_from_the_code_system() -> None:
    term = terminology()
    for url, code in [
        ("http://hl7.org/fhir/administrative-gender", "female"),
        ("http://hl7.org/fhir/observation-status", "entered-in-error"),
        (NULL_FLAVOR, "NAVU"),
        ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "AMB"),
    ]:
        concepts: list[dict[str, Any]] = []
        stack = list(code_system(url)["concept"])
        while stack:
            c = stack.pop()
            concepts.append(c)
            stack.extend(c.get("concept", []))
        want = next(c["display"] for c in concepts if c["code"] == code)
        assert term.lookup(url, code).display == want


def test_lookup_of_unknown_codes_and_systems_is_not_found() -> None:
    term = terminology()
    with pytest.raises(FHIRError) as err:
        term.lookup("http://hl7.org/fhir/administrative-gender", "femal")
    assert err.value.status == 404
    with pytest.raises(FHIRError) as err:
        term.lookup("http://loinc.org", "8480-6")  # LOINC itself is not loaded
    assert err.value.status == 404


@pytest.mark.parametrize(
    ("a", "b", "outcome"),
    [
        # From CodeSystem-v3-NullFlavor.json: NI > INV > OTH > NINF by nesting;
        # NAV nests under UNK > ASKU and is also a `child` of NAVU.
        ("NI", "NINF", "subsumes"),
        ("NINF", "NI", "subsumed-by"),
        ("NAVU", "NAV", "subsumes"),
        ("NAV", "NAVU", "subsumed-by"),
        ("UNK", "NAV", "subsumes"),
        ("ASKU", "NAVU", "not-subsumed"),
        ("NP", "NI", "not-subsumed"),
        ("OTH", "OTH", "equivalent"),
    ],
)
def test_subsumes_follows_nesting_and_child_properties(a: str, b: str, outcome: str) -> None:
    assert terminology().subsumes(NULL_FLAVOR, a, b) == outcome


def test_subsumes_of_an_unknown_code_is_not_found() -> None:
    with pytest.raises(FHIRError) as err:
        terminology().subsumes(NULL_FLAVOR, "NI", "XYZ")
    assert err.value.status == 404
    assert err.value.issues[0].expression == "codeB"


def crafted() -> Terminology:
    """A tiny code system:  A > (B > D, C > D, E)  plus F (abstract) > G, H (inactive)."""
    concepts = [
        ["A", "Alpha", []],
        ["B", "Bravo", ["A"]],
        ["C", "Charlie", ["A"]],
        ["D", "Delta", ["B", "C"]],
        ["E", "Echo", ["A"]],
        ["F", "Foxtrot", [], {"notSelectable": True}],
        ["G", "Golf", ["F"]],
        ["H", "Hotel", [], {"inactive": True}],
    ]

    def vs(compose: dict[str, Any]) -> dict[str, Any]:
        return {"name": "x", "version": "1", "compose": compose}

    return Terminology(
        {
            "codeSystems": {S: {"name": "cs", "version": "1", "concepts": concepts}},
            "valueSets": {
                "all": vs({"include": [{"system": S}]}),
                "is-a-B": vs({"include": [{"system": S, "filter": [["concept", "is-a", "B"]]}]}),
                "below-A": vs(
                    {"include": [{"system": S, "filter": [["concept", "descendent-of", "A"]]}]}
                ),
                "not-A": vs({"include": [{"system": S, "filter": [["concept", "is-not-a", "A"]]}]}),
                "listed": vs(
                    {"include": [{"system": S, "concept": [["F", ""], ["E", "E!"], ["Z", ""]]}]}
                ),
                "minus": vs(
                    {
                        "include": [{"system": S, "filter": [["concept", "is-a", "A"]]}],
                        "exclude": [{"system": S, "filter": [["concept", "is-a", "C"]]}],
                    }
                ),
                "nested": vs(
                    {
                        "include": [{"system": S, "valueSet": ["below-A"]}],
                        "exclude": [{"system": S, "concept": [["E", ""]]}],
                    }
                ),
                "active": vs({"include": [{"system": S}], "inactive": 0}),
                "outside": vs({"include": [{"system": "http://loinc.org"}]}),
                "pre": {
                    "name": "p",
                    "version": "",
                    "expansion": {"http://loinc.org": ["1-8", "2-6"]},
                },
            },
            "displays": {"http://loinc.org": {"1-8": "One", "2-6": "Two"}},
        }
    )


def codes(term: Terminology, url: str) -> list[str]:
    entries = term.entries(url)
    assert entries is not None
    return [e.code for e in entries]


def test_compose_rules_on_a_crafted_code_system() -> None:
    term = crafted()
    assert codes(term, "all") == ["A", "B", "C", "D", "E", "G", "H"]  # F is notSelectable
    assert sorted(codes(term, "is-a-B")) == ["B", "D"]
    assert sorted(codes(term, "below-A")) == ["B", "C", "D", "E"]
    assert sorted(codes(term, "not-A")) == ["G", "H"]
    assert codes(term, "listed") == ["F", "E"]  # listed codes are kept; Z is not in the system
    assert sorted(codes(term, "minus")) == ["A", "B", "E"]  # D is below C: excluded
    assert sorted(codes(term, "nested")) == ["B", "C", "D"]
    assert "H" not in codes(term, "active")
    assert term.entries("outside") is None
    assert codes(term, "pre") == ["1-8", "2-6"]
    assert term.expand("listed").contains[1].display == "E!"


def test_expand_filter_count_offset() -> None:
    term = crafted()
    page = term.expand("all", count=2, offset=1)
    assert [e.code for e in page.contains] == ["B", "C"]
    assert page.total == 7 and page.offset == 1
    assert [e.code for e in term.expand("all", filter="ha").contains] == [
        "A",
        "C",
    ]  # Alpha, Charlie
    assert term.expand("all", filter="zzz").total == 0
    with pytest.raises(FHIRError) as err:
        term.expand("outside")
    assert err.value.status == 422
    with pytest.raises(FHIRError) as err:
        term.expand("nope")
    assert err.value.status == 404


def test_validate_code_display_and_unknown_terminology() -> None:
    term = crafted()
    ok = term.validate_code("all", S, "B", "bravo")
    assert ok.result and ok.message is None and ok.display == "Bravo"
    wrong = term.validate_code("all", S, "B", "Bravissimo")
    assert wrong.result and wrong.message and "Bravissimo" in wrong.message
    assert not term.validate_code("all", S, "F").result  # abstract: not in the expansion
    assert not term.validate_code("all", "http://other", "B").result
    assert term.validate_code("all", None, "B").result
    unknown = term.validate_code("outside", "http://loinc.org", "8480-6")
    assert not unknown.result and unknown.message and "not known" in unknown.message
    assert term.validate_code("pre", "http://loinc.org", "2-6").result


ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def test_search_modifiers_stand_for_hand_worked_code_sets() -> None:
    # CodeSystem-v3-ActCode.json: _ActCareProvisionCode > _ActEncounterCode > IMP > ACUTE, NONAC.
    assert set(terminology_codes("code:below", "below", [f"{ACT}|IMP"])) == {
        (ACT, "IMP"),
        (ACT, "ACUTE"),
        (ACT, "NONAC"),
    }
    assert set(terminology_codes("code:above", "above", [f"{ACT}|ACUTE"])) == {
        (ACT, "ACUTE"),
        (ACT, "IMP"),
        (ACT, "_ActEncounterCode"),
        (ACT, "_ActCareProvisionCode"),
    }
    gender = "http://hl7.org/fhir/ValueSet/administrative-gender"
    assert set(terminology_codes("gender:in", "in", [gender])) == {
        ("http://hl7.org/fhir/administrative-gender", c)
        for c in ("male", "female", "other", "unknown")
    }


def test_search_modifiers_refuse_huge_or_unknown_sets() -> None:
    with pytest.raises(FHIRError) as err:  # a 4,000-code SNOMED CT subset
        terminology_codes("code:in", "in", ["http://hl7.org/fhir/ValueSet/encounter-reason"])
    assert err.value.status == 400 and err.value.issues[0].code == "too-costly"
    with pytest.raises(FHIRError) as err:
        terminology_codes("code:in", "in", ["http://example.org/vs"])
    assert err.value.issues[0].expression == "code:in"
    parsed = parse_search(
        "Observation",
        [("code:not-in", "http://hl7.org/fhir/ValueSet/observation-status")],
        definitions(),
    )
    condition = parsed.query.conditions[0]
    assert isinstance(condition, Condition)
    assert condition.modifier == "not" and len(condition.values) == 8
