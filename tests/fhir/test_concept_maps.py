"""`$translate` rules on hand-made maps: unmapped modes, other-map chains, reverse with
products and dependencies. Each test uses its own `Terminology` (nothing shared)."""

from __future__ import annotations

from typing import Any

from openrecord.fhir.concept_maps import Dependency, translate
from openrecord.fhir.terminology import Terminology
from openrecord.fhir.terminology_resources import add_terminology

A = "http://example.org/a"
B = "http://example.org/b"
PROP = "http://example.org/property/site"


def term_with(*maps: dict[str, Any]) -> Terminology:
    term = Terminology({"codeSystems": {}, "valueSets": {}, "displays": {}})
    add_terminology(term, list(maps))
    return term


def concept_map(url: str, group: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "ConceptMap",
        "url": url,
        "group": [{"source": A, "target": B, **group}],
    }


def shown(result: Any) -> list[tuple[str, str | None, str | None]]:
    return [(m.equivalence, m.system, m.code) for m in result.matches]


def test_unmapped_provided_and_other_map_chain() -> None:
    first = concept_map(
        "http://example.org/cm/first",
        {
            "element": [{"code": "x", "target": [{"code": "X", "equivalence": "equivalent"}]}],
            "unmapped": {"mode": "other-map", "url": "http://example.org/cm/second"},
        },
    )
    second = concept_map(
        "http://example.org/cm/second",
        {
            "element": [{"code": "y", "target": [{"code": "Y", "equivalence": "wider"}]}],
            "unmapped": {"mode": "provided"},
        },
    )
    term = term_with(first, second)
    url = "http://example.org/cm/first"
    assert shown(translate(term, A, "x", url=url)) == [("equivalent", B, "X")]
    # y is not in the first map: its unmapped rule hands it to the second
    via = translate(term, A, "y", url=url)
    assert shown(via) == [("wider", B, "Y")]
    assert via.matches[0].source == "http://example.org/cm/second"
    # z is in neither: the second map's rule answers the code as provided
    assert shown(translate(term, A, "z", url=url)) == [("equal", B, "z")]


def test_other_map_loops_end() -> None:
    loop = concept_map(
        "http://example.org/cm/loop",
        {"element": [], "unmapped": {"mode": "other-map", "url": "http://example.org/cm/loop"}},
    )
    result = translate(term_with(loop), A, "q", url="http://example.org/cm/loop")
    assert result.matches == [] and result.result is False


def test_reverse_turns_products_into_conditions_and_dependencies_into_products() -> None:
    cm = concept_map(
        "http://example.org/cm/sites",
        {
            "element": [
                {
                    "code": "arm-bp",
                    "target": [
                        {
                            "code": "BP",
                            "equivalence": "narrower",
                            "product": [{"property": PROP, "system": A, "value": "arm"}],
                        }
                    ],
                },
                {
                    "code": "bp",
                    "target": [
                        {
                            "code": "BP-SITE",
                            "equivalence": "equivalent",
                            "dependsOn": [{"property": PROP, "system": A, "value": "leg"}],
                        }
                    ],
                },
            ]
        },
    )
    term = term_with(cm)
    url = "http://example.org/cm/sites"
    # BP <- arm-bp needs the product (site = arm) as a dependency when read backwards
    without = translate(term, B, "BP", url=url, reverse=True)
    assert without.matches == [] and "dependsOn" in (without.message or "")
    site = Dependency(PROP, ((A, "arm"),))
    back = translate(term, B, "BP", url=url, reverse=True, dependencies=(site,))
    assert shown(back) == [("wider", A, "arm-bp")]
    # BP-SITE <- bp: the forward condition (site = leg) comes back as a product
    leg = translate(term, B, "BP-SITE", url=url, reverse=True)
    assert shown(leg) == [("equivalent", A, "bp")]
    assert leg.matches[0].product == ({"property": PROP, "system": A, "value": "leg"},)
    # forward, the condition must hold
    assert translate(term, A, "bp", url=url).matches == []
    wrong = Dependency(PROP, ((A, "arm"),))
    assert translate(term, A, "bp", url=url, dependencies=(wrong,)).matches == []
    right = Dependency(PROP, ((A, "leg"),))
    assert shown(translate(term, A, "bp", url=url, dependencies=(right,))) == [
        ("equivalent", B, "BP-SITE")
    ]
