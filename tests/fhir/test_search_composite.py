"""Reading composite search values: `$`-joined components, each read by its own kind."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from openrecord.fhir.definitions import definitions
from openrecord.fhir.outcome import FHIRError
from openrecord.fhir.search_composite import component_defs
from openrecord.fhir.search_query import parse_search
from openrecord.store.query import (
    CompositeCriterion,
    Condition,
    DateCriterion,
    NumberCriterion,
    QuantityCriterion,
    ReferenceCriterion,
    StringCriterion,
    TokenCriterion,
)

DEFS = definitions()
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def one(rtype: str, name: str, value: str) -> Condition:
    ps = parse_search(rtype, [(name, value)], DEFS)
    assert ps.unknown == []
    [cond] = ps.query.conditions
    assert isinstance(cond, Condition)
    return cond


def us(y: int, m: int, d: int) -> int:
    return int(datetime(y, m, d, tzinfo=UTC).timestamp()) * 1_000_000


def test_quantity_composite() -> None:
    cond = one("Observation", "code-value-quantity", f"{LOINC}|8480-6$gt100")
    assert cond == Condition(
        "code-value-quantity",
        "composite",
        (
            CompositeCriterion(
                (
                    TokenCriterion(LOINC, "8480-6"),
                    QuantityCriterion("gt", 100.0, 99.5, 100.5, None, None),
                )
            ),
        ),
        component_kinds=("token", "quantity"),
    )
    # the spec's example: a unit on the quantity component
    cond = one("Observation", "code-value-quantity", f"{LOINC}|2823-3$gt5|{UCUM}|mmol/L")
    assert cond.values[0] == CompositeCriterion(
        (TokenCriterion(LOINC, "2823-3"), QuantityCriterion("gt", 5.0, 4.5, 5.5, UCUM, "mmol/L"))
    )


def test_token_forms_or_and_escapes() -> None:
    cond = one("Observation", "code-value-concept", "|a$b|,x|$y")
    assert cond.values == (
        CompositeCriterion((TokenCriterion(None, "a", no_system=True), TokenCriterion("b", None))),
        CompositeCriterion((TokenCriterion("x", None), TokenCriterion(None, "y"))),
    )
    cond = one("Observation", "code-value-string", r"c$Cost \$5\, Paid")
    assert cond.values == (
        CompositeCriterion((TokenCriterion(None, "c"), StringCriterion("cost $5, paid"))),
    )


def test_date_number_and_reference_components() -> None:
    cond = one("Observation", "code-value-date", "c$ge2020-05")
    assert cond.values[0] == CompositeCriterion(
        (TokenCriterion(None, "c"), DateCriterion("ge", us(2020, 5, 1), us(2020, 6, 1) - 1))
    )
    cond = one("MolecularSequence", "chromosome-window-coordinate", "1$ge10$le20")
    assert cond.component_kinds == ("token", "number", "number")
    assert cond.values[0] == CompositeCriterion(
        (
            TokenCriterion(None, "1"),
            NumberCriterion("ge", 10.0, 9.5, 10.5),
            NumberCriterion("le", 20.0, 19.5, 20.5),
        )
    )
    # R4 swaps the component definitions of relationship; the code comes first
    cond = one("DocumentReference", "relationship", "replaces$7")
    assert cond.component_kinds == ("token", "reference")
    assert cond.values[0] == CompositeCriterion(
        (TokenCriterion(None, "replaces"), ReferenceCriterion("DocumentReference", "7"))
    )


def test_missing() -> None:
    cond = one("Observation", "combo-code-value-quantity:missing", "true")
    assert cond == Condition(
        "combo-code-value-quantity", "composite", (), "missing", True, ("token", "quantity")
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("code-value-quantity", "8480-6"),
        ("code-value-quantity", "8480-6$1$2"),
        ("code-value-quantity", "8480-6$"),
        ("code-value-quantity", "$1"),
        ("code-value-quantity", "8480-6$ab"),
        ("code-value-quantity", "8480-6$1|u"),  # a unit needs system|code
        ("code-value-date", "c$2020-13"),
        ("code-value-quantity:not", "a$1"),
        ("code-value-quantity:missing", "yes"),
    ],
)
def test_unreadable_values_name_the_parameter(name: str, value: str) -> None:
    with pytest.raises(FHIRError) as err:
        parse_search("Observation", [(name, value)], DEFS)
    assert err.value.status == 400
    assert [i.expression for i in err.value.issues] == [name]


def test_every_r4_composite_has_known_components() -> None:
    composites = [
        sp
        for params in DEFS.search_params.values()
        for sp in params.values()
        if sp.type == "composite" and sp.url.startswith("http://hl7.org/fhir/SearchParameter/")
    ]
    assert len(composites) == 72
    shapes = {}
    for sp in composites:
        found = component_defs(sp, DEFS)
        assert found is not None, sp.url
        shapes[sp.url.rsplit("/", 1)[1]] = tuple(kind for kind, _ in found)
    assert shapes["Observation-code-value-quantity"] == ("token", "quantity")
    assert shapes["Observation-code-value-string"] == ("token", "string")
    assert shapes["Observation-code-value-date"] == ("token", "date")
    assert shapes["Group-characteristic-value"] == ("token", "token")
    assert shapes["MolecularSequence-chromosome-variant-coordinate"] == (
        "token",
        "number",
        "number",
    )
    assert shapes["DocumentReference-relationship"] == ("token", "reference")
    assert sum(len(s) == 3 for s in shapes.values()) == 4
