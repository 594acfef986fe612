"""Package terminology joining the in-memory terminology: what becomes known, and what not.

Each test builds its own `Terminology` holding only R4's administrative-gender code
system, so nothing leaks into the process-wide one. Expected codes are read from
the hand-made resources below.
"""

from __future__ import annotations

from typing import Any

import pytest

from openrecord.fhir.outcome import FHIRError
from openrecord.fhir.terminology import Terminology
from openrecord.fhir.terminology_resources import add_terminology

GENDER = "http://hl7.org/fhir/administrative-gender"
SHAPES = "http://example.org/shapes"


def fresh() -> Terminology:
    return Terminology(
        {
            "codeSystems": {
                GENDER: {
                    "name": "AdministrativeGender",
                    "version": "4.0.1",
                    "concepts": [["male", "Male", []]],
                }
            },
            "valueSets": {},
            "displays": {},
        }
    )


SHAPES_CS: dict[str, Any] = {
    "resourceType": "CodeSystem",
    "url": SHAPES,
    "version": "1",
    "content": "complete",
    "caseSensitive": False,
    "concept": [
        {
            "code": "polygon",
            "display": "Polygon",
            "concept": [
                {"code": "triangle", "display": "Triangle"},
                {
                    "code": "square",
                    "display": "Square",
                    "property": [{"code": "notSelectable", "valueBoolean": False}],
                },
            ],
        },
        {"code": "circle", "display": "Circle"},
        # a second parent through the `parent` property: a polyhierarchy
        {
            "code": "rounded-square",
            "display": "Rounded square",
            "property": [
                {"code": "parent", "valueCode": "square"},
                {"code": "parent", "valueCode": "circle"},
            ],
        },
        {
            "code": "old",
            "display": "Old shape",
            "property": [{"code": "status", "valueCode": "retired"}],
        },
    ],
}


def test_complete_code_system_with_hierarchy() -> None:
    term = fresh()
    added = add_terminology(term, [SHAPES_CS])
    assert added.code_systems == [SHAPES]
    assert term.lookup(SHAPES, "TRIANGLE").code == "triangle"  # caseSensitive false
    assert term.subsumes(SHAPES, "polygon", "rounded-square") == "subsumes"
    assert term.subsumes(SHAPES, "rounded-square", "circle") == "subsumed-by"
    assert term.subsumes(SHAPES, "triangle", "circle") == "not-subsumed"
    with pytest.raises(FHIRError) as err:
        term.lookup(SHAPES, "hexagon")
    assert err.value.status == 404


def test_value_sets_by_compose_and_by_expansion() -> None:
    term = fresh()
    vs_compose = {
        "resourceType": "ValueSet",
        "url": "http://example.org/vs/polygons",
        "compose": {
            "include": [
                {
                    "system": SHAPES,
                    "filter": [{"property": "concept", "op": "descendent-of", "value": "polygon"}],
                }
            ],
            "exclude": [{"system": SHAPES, "concept": [{"code": "square"}]}],
        },
    }
    vs_expansion = {
        "resourceType": "ValueSet",
        "url": "http://example.org/vs/pre",
        "expansion": {
            "contains": [{"system": "http://loinc.org", "code": "2339-0", "display": "Glucose"}]
        },
    }
    add_terminology(term, [vs_compose, SHAPES_CS, vs_expansion])
    # descendants of polygon: triangle, square, rounded-square; square excluded
    assert {e.code for e in term.expand("http://example.org/vs/polygons").contains} == {
        "triangle",
        "rounded-square",
    }
    assert term.validate_code("http://example.org/vs/pre", "http://loinc.org", "2339-0").result
    assert not term.validate_code("http://example.org/vs/pre", "http://loinc.org", "8480-6").result


def test_incomplete_code_systems_stay_not_known_and_shipped_ones_win() -> None:
    term = fresh()
    fragment = dict(SHAPES_CS, url="http://example.org/fragment", content="fragment")
    stub = dict(SHAPES_CS, url="http://example.org/stub", content="not-present", concept=[])
    replacing = {
        "resourceType": "CodeSystem",
        "url": GENDER,
        "content": "complete",
        "concept": [{"code": "robot"}],
    }
    added = add_terminology(term, [fragment, stub, replacing])
    assert added.code_systems == []
    assert len(added.skipped) == 3
    for system in ("http://example.org/fragment", "http://example.org/stub"):
        with pytest.raises(FHIRError):
            term.lookup(system, "circle")
    with pytest.raises(FHIRError):
        term.lookup(GENDER, "robot")
    assert term.lookup(GENDER, "male").display == "Male"


def test_hostile_resources_are_ignored_not_fatal() -> None:
    term = fresh()
    junk: list[dict[str, Any]] = [
        {"resourceType": "CodeSystem", "url": 5, "content": "complete"},
        {
            "resourceType": "CodeSystem",
            "url": "http://example.org/junk",
            "content": "complete",
            "concept": [1, {"code": None}, {"code": "ok", "concept": "x", "property": [7]}],
        },
        {"resourceType": "ValueSet", "url": "http://example.org/empty"},
        {
            "resourceType": "ConceptMap",
            "url": "http://example.org/cm",
            "group": [3, {"element": [{"code": "a", "target": [{"code": "b"}]}]}],
        },
    ]
    added = add_terminology(term, junk)
    assert added.code_systems == ["http://example.org/junk"]
    assert list(term.code_systems["http://example.org/junk"].concepts) == ["ok"]
    assert "http://example.org/empty" not in term.value_sets
    # the target without an equivalence is not a mapping
    assert term.concept_maps["http://example.org/cm"]["group"][0]["element"] == {"a": []}
