"""Search index extraction: the native FHIRPath compiler, the value conversions, the extractor."""

from __future__ import annotations

import copy
import tarfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from openrecord.fhir.definitions import definitions
from openrecord.fhir.fhirpath import Unsupported, compile_path
from openrecord.fhir.fhirpath_fallback import FallbackPath, rewrite_for_fhirpathpy
from openrecord.fhir.search_common import (
    DATE_MAX,
    DATE_MIN,
    date_range,
    normalize_string,
    number_range,
    parse_reference,
)
from openrecord.fhir.search_index import IndexExtractor
from openrecord.fhir.search_values import (
    CompositeValue,
    DateValue,
    IndexEntry,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    SearchValue,
    StringValue,
    TokenValue,
    UriValue,
)
from tests.shared_data import require_shared

DEFS = definitions()
EXAMPLES = ("fhir-r4", "hl7.fhir.r4.examples-4.0.1.tgz")
# Definitional artifacts of the spec itself, not "ordinary" example resources.
CONFORMANCE = frozenset(
    [
        "SearchParameter",
        "ValueSet",
        "CodeSystem",
        "StructureDefinition",
        "ConceptMap",
        "OperationDefinition",
        "CapabilityStatement",
        "CompartmentDefinition",
        "ImplementationGuide",
        "NamingSystem",
        "StructureMap",
    ]
)


def us(dt: datetime) -> int:
    """Microseconds since the epoch, computed independently of the code under test."""
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


@cache
def _examples() -> tuple[dict[str, Any], ...]:
    path = require_shared(*EXAMPLES)
    out = []
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            if not m.isfile() or not m.name.endswith(".json") or m.name.count("/") != 1:
                continue
            if m.name.endswith(("package.json", ".index.json")):
                continue
            f = tar.extractfile(m)
            assert f is not None
            r = orjson.loads(f.read())
            if isinstance(r, dict) and "resourceType" in r:
                out.append(r)
    return tuple(out)


def example(resource_type: str, rid: str) -> dict[str, Any]:
    for r in _examples():
        if r["resourceType"] == resource_type and r.get("id") == rid:
            return copy.deepcopy(r)
    raise LookupError(f"{resource_type}/{rid}")


@pytest.fixture(scope="module")
def extractor() -> IndexExtractor:
    return IndexExtractor(DEFS)


def values(entries: list[IndexEntry], param: str) -> list[SearchValue]:
    return [e.value for e in entries if e.param == param]


def codes(entries: list[IndexEntry], param: str) -> set[str | None]:
    return {v.code for v in values(entries, param) if isinstance(v, TokenValue)}


# -- the expression survey ---------------------------------------------------------


def test_every_r4_expression_compiles_natively() -> None:
    for rtype, params in DEFS.search_params.items():
        for sp in params.values():
            if sp.expression:
                assert compile_path(sp.expression, DEFS, rtype), (rtype, sp.code)
    ex = IndexExtractor(DEFS)
    ex.compile_all()
    total = sum(len(p) for p in DEFS.search_params.values())
    with_expr = sum(1 for p in DEFS.search_params.values() for sp in p.values() if sp.expression)
    # R4 core's 3,025 per-type parameters (2,584 with an expression), plus the six US
    # Core adds (race, ethnicity, CareTeam role, Condition asserted-date, Encounter
    # discharge-disposition, Goal description)
    assert total == 3025 + 6
    assert with_expr == 2584 + 6
    # _id/_lastUpdated (2 x 148 types) live in the resource table; Location.near is special
    assert ex.native_expressions == with_expr - 2 * 148 - 1
    assert ex.fallback_expressions == []


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("Patient.name.select(given)", "function select()"),
        ("Patient.name.where(given.count() > 1)", "tokenize"),
        ("Observation.subject.resolve()", "function resolve()"),
    ],
)
def test_unsupported_shapes_raise(expression: str, reason: str) -> None:
    with pytest.raises(Unsupported, match=reason):
        compile_path(expression, DEFS, expression.split(".")[0])


# -- the native compiler ---------------------------------------------------------


def run(expression: str, resource: dict[str, Any]) -> list[tuple[str, Any]]:
    out = []
    for b in compile_path(expression, DEFS, resource["resourceType"]):
        out += [(b.type, v) for v in b.fn([resource], resource)]
    return out


OBS: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "o1",
    "contained": [{"resourceType": "Patient", "id": "p1"}, {"resourceType": "Group", "id": "g1"}],
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}], "text": "Weight"},
    "subject": {"reference": "Patient/123"},
    "performer": [
        {"reference": "#p1"},
        {"reference": "#g1"},
        {"reference": "http://example.org/fhir/Patient/9/_history/2"},
        {"reference": "Practitioner/7"},
        {"identifier": {"system": "urn:npi", "value": "555"}},
    ],
    "valueQuantity": {
        "value": 72.50,
        "unit": "kg",
        "system": "http://unitsofmeasure.org",
        "code": "kg",
    },
    "extension": [
        {"url": "http://x.org/a", "valueString": "A"},
        {"url": "http://x.org/b", "valueCode": "B"},
    ],
    "component": [
        {"code": {"text": "c1"}, "valueString": "s1"},
        {"code": {"text": "c2"}, "valueQuantity": {"value": 3}},
    ],
}


def test_paths_choices_and_unions() -> None:
    assert run("Observation.code.coding.code", OBS) == [("code", "29463-7")]
    assert run("Observation.value", OBS) == [("Quantity", OBS["valueQuantity"])]
    assert run("(Observation.value as Quantity).unit", OBS) == [("string", "kg")]
    assert run("Observation.value.as(CodeableConcept)", OBS) == []
    assert run("Observation.component.value.ofType(string)", OBS) == [("string", "s1")]
    assert run("Observation.status | Observation.code.text", OBS) == [
        ("code", "final"),
        ("string", "Weight"),
    ]
    assert run("Observation.component[1].code.text", OBS) == [("string", "c2")]
    assert run("Observation.component.code.text.first()", OBS) == [("string", "c1")]
    assert run("Resource.id", OBS) == [("id", "o1")]


def test_where_resolve_is_type() -> None:
    got = run("Observation.performer.where(resolve() is Patient)", OBS)
    assert [v["reference"] for _, v in got] == [
        "#p1",
        "http://example.org/fhir/Patient/9/_history/2",
    ]
    assert run("Observation.subject.where(resolve() is Group)", OBS) == []


def test_where_equality_extension_exists_and_logic() -> None:
    assert run("Observation.extension('http://x.org/b').value", OBS) == [("code", "B")]
    assert run("Observation.extension.where(url = 'http://x.org/a').value", OBS) == [
        ("string", "A")
    ]
    assert run("Observation.component.where(code.text = 'c2').value", OBS)[0][1] == {"value": 3}
    assert run("Observation.code.exists()", OBS) == [("boolean", True)]
    assert run("Observation.issued.exists()", OBS) == [("boolean", False)]
    assert run("Observation.issued.exists() and Observation.code.exists()", OBS) == [
        ("boolean", False)
    ]
    assert run("Observation.status = 'final' or Observation.issued.exists()", OBS) == [
        ("boolean", True)
    ]


def test_first_key_lets_absent_branches_be_skipped() -> None:
    branches = compile_path("Observation.value.as(Quantity) | %resource.code", DEFS, "Observation")
    assert [b.first_key for b in branches] == ["valueQuantity", None]


def test_fallback_rewrites() -> None:
    assert rewrite_for_fhirpathpy("(Observation.value as Quantity)", "Observation") == (
        "Observation.value.ofType(Quantity)"
    )
    assert rewrite_for_fhirpathpy("value.as(DateTime) | value.as(Period)", None) == (
        "value.ofType(dateTime) | value.ofType(Period)"
    )
    assert rewrite_for_fhirpathpy("Resource.meta.tag", "Patient") == "Patient.meta.tag"


def test_fallback_resolve_and_types() -> None:
    path = FallbackPath(
        "Observation.performer.where(resolve() is Patient)", "Observation", DEFS.resource_types
    )
    got = path.evaluate(OBS)
    assert [t for t, _ in got] == ["Reference", "Reference"]
    assert [v["reference"] for _, v in got] == [
        "#p1",
        "http://example.org/fhir/Patient/9/_history/2",
    ]


# -- conversions -------------------------------------------------------------------


def test_date_ranges_against_independent_arithmetic() -> None:
    assert date_range("2013") == (
        us(datetime(2013, 1, 1, tzinfo=UTC)),
        us(datetime(2014, 1, 1, tzinfo=UTC)) - 1,
    )
    assert date_range("2012-02") == (
        us(datetime(2012, 2, 1, tzinfo=UTC)),
        us(datetime(2012, 3, 1, tzinfo=UTC)) - 1,
    )
    assert date_range("1974-12-25") == (
        us(datetime(1974, 12, 25, tzinfo=UTC)),
        us(datetime(1974, 12, 26, tzinfo=UTC)) - 1,
    )
    plus10 = timezone(timedelta(hours=10))
    assert date_range("2015-01-17T16:00:00+10:00") == (
        us(datetime(2015, 1, 17, 16, tzinfo=plus10)),
        us(datetime(2015, 1, 17, 16, 0, 1, tzinfo=plus10)) - 1,
    )
    low = us(datetime(2015, 1, 17, 6, 0, 0, 123000, tzinfo=UTC))
    assert date_range("2015-01-17T06:00:00.123Z") == (low, low + 999)
    assert date_range("2015-01-17T06:00:00.1234567Z") == (low + 456, low + 456)
    minute = us(datetime(2015, 1, 17, 6, 30, tzinfo=UTC))
    assert date_range("2015-01-17T06:30") == (minute, minute + 60_000_000 - 1)
    assert date_range("1969-12-31T23:59:59Z") == (-1_000_000, -1)


def test_dates_without_zone_are_in_the_configured_tz() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # winter time: +01:00 all day
    assert date_range("2021-01-10", berlin) == (
        us(datetime(2021, 1, 10, tzinfo=berlin)),
        us(datetime(2021, 1, 11, tzinfo=berlin)) - 1,
    )
    # the day of the DST switch is 23 hours long
    day = date_range("2021-03-28", berlin)
    assert day is not None
    assert day[1] - day[0] + 1 == 23 * 3600 * 1_000_000
    assert date_range("2021-07-01T12:00:00", berlin) == (
        us(datetime(2021, 7, 1, 12, tzinfo=berlin)),
        us(datetime(2021, 7, 1, 12, 0, 1, tzinfo=berlin)) - 1,
    )
    # an explicit zone wins over the configured one
    assert date_range("2021-07-01T12:00:00Z", berlin) == date_range("2021-07-01T12:00:00Z")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "20",
        "2013-13",
        "2013-02-30",
        "2013-00",
        "0000",
        "2013-1-01",
        "2013-01-01T25:00:00Z",
        "2013-01-01T10:00:00.Z",
        "2013-01-01T10:00:00+0100",
        "2013-01-01 10:00:00",
        "notadate",
        "\uff12\uff10\uff11\uff13",  # full-width digits
    ],
)
def test_not_dates(text: str) -> None:
    assert date_range(text) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("100", (100.0, 99.5, 100.5)),  # the spec: 3 significant figures
        ("100.00", (100.0, 99.995, 100.005)),  # 5 significant figures
        ("1e2", (100.0, 50.0, 150.0)),  # 1 significant figure (R4's "[95 ... 105)" is an erratum)
        ("1.5", (1.5, 1.45, 1.55)),
        ("-2.25", (-2.25, -2.255, -2.245)),
        ("1.5e-3", (0.0015, 0.0015 - 0.00005, 0.0015 + 0.00005)),
        (100, (100.0, 99.5, 100.5)),  # JSON integers
        (Decimal("1.50"), (1.5, 1.495, 1.505)),  # JSON read with Decimal keeps the zero
        (72.5, (72.5, 72.45, 72.55)),  # JSON floats: the digits repr shows
    ],
)
def test_number_precision(value: Any, expected: tuple[float, float, float]) -> None:
    got = number_range(value)
    assert got is not None
    assert got == pytest.approx(expected, rel=1e-12)


def test_number_ranges_agree_between_text_and_float() -> None:
    # the index side (floats) and the query side (text) must produce identical bounds
    for text in ("0.1", "5.4", "72.5", "189.34136216482673", "3"):
        assert number_range(text) == number_range(float(text) if "." in text else int(text))
    assert number_range("abc") is None
    assert number_range(True) is None  # bool is an int subclass, but not a number here


def test_normalize_string() -> None:
    assert normalize_string("  Zoë   Smith\t") == "zoe smith"
    assert normalize_string("STRASSE") == normalize_string("Straße")
    assert normalize_string("Ångström") == "angstrom"


def test_parse_reference() -> None:
    types = DEFS.resource_types
    assert parse_reference("Patient/1/_history/2", types) == ("Patient", "1", None, "2")
    assert parse_reference("http://x.org/fhir/Patient/1/_history/2", types) == (
        "Patient",
        "1",
        "http://x.org/fhir/Patient/1",
        "2",
    )
    assert parse_reference("urn:uuid:1234", types) == (None, None, "urn:uuid:1234", None)
    assert parse_reference("Patient?identifier=x", types) is None
    assert parse_reference("NotAType/1", types) is None


# -- spec examples, worked by hand ---------------------------------------------------------


def test_blood_pressure_observation(extractor: IndexExtractor) -> None:
    entries = extractor.extract(example("Observation", "blood-pressure"))
    assert codes(entries, "code") == {"85354-9", None}  # None: the CodeableConcept.text row
    assert TokenValue(None, None, "Blood pressure systolic & diastolic") in values(entries, "code")
    assert codes(entries, "component-code") == {"8480-6", "271649006", "bp-s", "8462-4"}
    assert {"85354-9", "8480-6", "8462-4"} <= codes(entries, "combo-code")
    assert values(entries, "value-quantity") == []  # the panel itself has no value
    mmhg = ("http://unitsofmeasure.org", "mm[Hg]", "mmHg")
    systolic = QuantityValue(107.0, 106.5, 107.5, *mmhg)
    assert values(entries, "component-value-quantity") == [
        systolic,
        QuantityValue(60.0, 59.5, 60.5, *mmhg),
    ]
    loinc_systolic = TokenValue("http://loinc.org", "8480-6", "Systolic blood pressure")
    assert CompositeValue((loinc_systolic, systolic)) in values(
        entries, "component-code-value-quantity"
    )
    assert values(entries, "code-value-quantity") == []
    assert values(entries, "patient") == [ReferenceValue("Patient", "example")]
    assert values(entries, "subject") == [ReferenceValue("Patient", "example")]
    # effectiveDateTime 2012-09-17: the whole day
    assert values(entries, "date") == [
        DateValue(us(datetime(2012, 9, 17, tzinfo=UTC)), us(datetime(2012, 9, 18, tzinfo=UTC)) - 1)
    ]
    # basedOn carries only an identifier: a token for :identifier, no reference
    assert values(entries, "based-on") == [TokenValue("https://acme.org/identifiers", "1234")]
    assert values(entries, "status") == [
        TokenValue("http://hl7.org/fhir/observation-status", "final")
    ]
    assert values(entries, "_profile") == [
        UriValue("http://hl7.org/fhir/StructureDefinition/vitalsigns")
    ]


def test_patient_example(extractor: IndexExtractor) -> None:
    entries = extractor.extract(example("Patient", "example"))
    given = {v.value for v in values(entries, "given") if isinstance(v, StringValue)}
    assert given == {"Peter", "James", "Jim"}
    assert values(entries, "family") == [
        StringValue("Chalmers", "chalmers"),
        StringValue("Windsor", "windsor"),
    ]
    name = {v.normalized for v in values(entries, "name") if isinstance(v, StringValue)}
    assert name == {"peter", "james", "jim", "chalmers", "windsor"}
    assert values(entries, "birthdate") == [
        DateValue(
            us(datetime(1974, 12, 25, tzinfo=UTC)), us(datetime(1974, 12, 26, tzinfo=UTC)) - 1
        )
    ]
    # gender is a `code` bound to a required value set: its system is implicit
    assert values(entries, "gender") == [
        TokenValue("http://hl7.org/fhir/administrative-gender", "male")
    ]
    # the identifier's type (v2-0203 MR) also gives the row `identifier:of-type` reads
    assert values(entries, "identifier") == [
        TokenValue("urn:oid:1.2.36.146.595.217.0.1", "12345"),
        TokenValue("\x1fhttp://terminology.hl7.org/CodeSystem/v2-0203|MR", "12345"),
    ]
    assert values(entries, "active") == [TokenValue(None, "true")]
    assert values(entries, "deceased") == [TokenValue(None, "false")]
    assert TokenValue(None, "(03) 5555 6473") in values(entries, "phone")
    assert values(entries, "email") == []
    assert values(entries, "organization") == [ReferenceValue("Organization", "1")]
    assert StringValue("PleasantVille", "pleasantville") in values(entries, "address-city")
    # the 2nd and 3rd address parts and the text are in `address`
    address = {v.value for v in values(entries, "address") if isinstance(v, StringValue)}
    assert {"534 Erewhon St", "PleasantVille", "Rainbow", "Vic", "3999"} <= address


def test_encounter_periods(extractor: IndexExtractor) -> None:
    plus10 = timezone(timedelta(hours=10))
    home = extractor.extract(example("Encounter", "home"))
    assert values(home, "date") == [
        DateValue(
            us(datetime(2015, 1, 17, 16, tzinfo=plus10)),
            us(datetime(2015, 1, 17, 16, 30, 1, tzinfo=plus10)) - 1,
        )
    ]
    f203 = extractor.extract(example("Encounter", "f203"))
    assert values(f203, "date") == [
        DateValue(us(datetime(2013, 3, 11, tzinfo=UTC)), us(datetime(2013, 3, 21, tzinfo=UTC)) - 1)
    ]
    emerg = extractor.extract(example("Encounter", "emerg"))
    assert values(emerg, "date") == [
        DateValue(us(datetime(2017, 2, 1, 7, 15, tzinfo=plus10)), DATE_MAX)
    ]
    assert values(emerg, "patient") == [ReferenceValue("Patient", "example")]


def test_dates_use_the_extractors_tz() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    entries = IndexExtractor(DEFS, berlin).extract(
        {"resourceType": "Patient", "birthDate": "1974-12-25"}
    )
    assert values(entries, "birthdate") == [
        DateValue(
            us(datetime(1974, 12, 25, tzinfo=berlin)), us(datetime(1974, 12, 26, tzinfo=berlin)) - 1
        )
    ]


# -- conversions on crafted resources -------------------------------------------


def test_references_of_every_form(extractor: IndexExtractor) -> None:
    entries = extractor.extract(OBS)
    assert values(entries, "performer") == [
        ReferenceValue("Patient", "#p1"),
        ReferenceValue("Group", "#g1"),
        ReferenceValue("Patient", "9", "http://example.org/fhir/Patient/9", "2"),
        ReferenceValue("Practitioner", "7"),
        TokenValue("urn:npi", "555"),
    ]
    assert values(entries, "patient") == [ReferenceValue("Patient", "123")]
    assert values(entries, "value-quantity") == [
        QuantityValue(72.5, 72.45, 72.55, "http://unitsofmeasure.org", "kg", "kg")
    ]
    # the component with a quantity pairs with its own code only
    pairs = values(entries, "component-code-value-quantity")
    assert pairs == []  # "c2" is text only: no code to search by


def test_meta_params_and_canonicals(extractor: IndexExtractor) -> None:
    plan = {
        "resourceType": "PlanDefinition",
        "meta": {
            "tag": [{"system": "urn:t", "code": "a", "display": "A"}],
            "security": [{"system": "urn:s", "code": "R"}],
            "profile": ["http://p.org/StructureDefinition/x|2.0"],
            "source": "http://src.org/app",
        },
        "url": "http://q.org/PlanDefinition/1",
        "version": "3",
        "library": ["http://q.org/Library/lib|1.1"],
        "relatedArtifact": [
            {"type": "depends-on", "resource": "http://q.org/Library/other"},
            {"type": "derived-from", "resource": "http://q.org/PlanDefinition/0"},
        ],
        "useContext": [
            {
                "code": {"system": "urn:uc", "code": "age"},
                "valueRange": {"low": {"value": 12, "unit": "a"}},
            }
        ],
    }
    entries = extractor.extract(plan)
    assert values(entries, "_tag") == [TokenValue("urn:t", "a", "A")]
    assert values(entries, "_security") == [TokenValue("urn:s", "R")]
    assert values(entries, "_profile") == [UriValue("http://p.org/StructureDefinition/x|2.0")]
    assert values(entries, "_source") == [UriValue("http://src.org/app")]
    assert values(entries, "url") == [UriValue("http://q.org/PlanDefinition/1")]
    assert values(entries, "version") == [TokenValue(None, "3")]
    assert values(entries, "depends-on") == [
        ReferenceValue(None, None, "http://q.org/Library/other"),
        ReferenceValue(None, None, "http://q.org/Library/lib", "1.1"),
    ]
    assert values(entries, "derived-from") == [
        ReferenceValue(None, None, "http://q.org/PlanDefinition/0")
    ]
    age = QuantityValue(12.0, 12.0, float("inf"), None, None, "a")
    assert values(entries, "context-quantity") == [age]
    assert values(entries, "context-type-quantity") == [
        CompositeValue((TokenValue("urn:uc", "age"), age))
    ]


def test_money_ranges_and_timing(extractor: IndexExtractor) -> None:
    claim = {
        "resourceType": "ChargeItem",
        "priceOverride": {"value": 12.5, "currency": "EUR"},
        "occurrenceTiming": {"event": ["2020-01-03", "2020-01-01T10:00:00Z"]},
    }
    entries = extractor.extract(claim)
    assert values(entries, "price-override") == [
        QuantityValue(12.5, 12.45, 12.55, "urn:iso:std:iso:4217", "EUR", None)
    ]
    assert values(entries, "occurrence") == [
        DateValue(
            us(datetime(2020, 1, 1, 10, tzinfo=UTC)), us(datetime(2020, 1, 4, tzinfo=UTC)) - 1
        )
    ]
    cond = {
        "resourceType": "Condition",
        "onsetRange": {"low": {"value": 10, "unit": "a"}, "high": {"value": 20, "unit": "a"}},
        "abatementPeriod": {"end": "2020"},
    }
    entries = extractor.extract(cond)
    assert values(entries, "onset-age") == [QuantityValue(15.0, 10.0, 20.0, None, None, "a")]
    assert values(entries, "abatement-date") == [
        DateValue(DATE_MIN, us(datetime(2021, 1, 1, tzinfo=UTC)) - 1)
    ]
    risk = {"resourceType": "RiskAssessment", "prediction": [{"probabilityDecimal": 0.25}]}
    assert values(extractor.extract(risk), "probability") == [NumberValue(0.25, 0.245, 0.255)]


def test_composite_with_r4s_swapped_component_types(extractor: IndexExtractor) -> None:
    # R4 declares DocumentReference-relationship's components the wrong way round
    doc = {
        "resourceType": "DocumentReference",
        "relatesTo": [{"code": "replaces", "target": {"reference": "DocumentReference/1"}}],
    }
    assert values(extractor.extract(doc), "relationship") == [
        CompositeValue(
            (
                TokenValue("http://hl7.org/fhir/document-relationship-type", "replaces"),
                ReferenceValue("DocumentReference", "1"),
            )
        )
    ]


def test_deceased_and_booleans(extractor: IndexExtractor) -> None:
    def deceased(patient: dict[str, Any]) -> list[SearchValue]:
        return values(extractor.extract({"resourceType": "Patient", **patient}), "deceased")

    assert deceased({}) == [TokenValue(None, "false")]
    assert deceased({"deceasedBoolean": True}) == [TokenValue(None, "true")]
    assert deceased({"deceasedBoolean": False}) == [TokenValue(None, "false")]
    assert deceased({"deceasedDateTime": "2020-01-01"}) == [TokenValue(None, "true")]


def test_bad_values_are_skipped_not_fatal(extractor: IndexExtractor) -> None:
    weird = {
        "resourceType": "Patient",
        "birthDate": "not a date",
        "name": [{"given": ["A", None], "family": 5}, "junk"],
        "telecom": [{"system": "phone"}],
        "managingOrganization": {"reference": "Organization?name=x"},
        "generalPractitioner": [{"reference": 42}],
    }
    entries = extractor.extract(weird)
    assert values(entries, "birthdate") == []
    assert values(entries, "given") == [StringValue("A", "a")]
    assert values(entries, "organization") == []
    assert extractor.extract({"resourceType": "NotAType"}) == []
    assert extractor.extract({}) == []


def test_entries_are_distinct(extractor: IndexExtractor) -> None:
    p = {"resourceType": "Patient", "name": [{"given": ["Ann"]}, {"given": ["Ann"]}]}
    assert values(extractor.extract(p), "given") == [StringValue("Ann", "ann")]


def test_fallback_is_used_for_unsupported_expressions() -> None:
    defs = copy.copy(DEFS)
    patient = dict(DEFS.search_params["Patient"])
    patient["given"] = replace(patient["given"], expression="Patient.name.select(given)")
    defs.search_params = {**DEFS.search_params, "Patient": patient}
    ex = IndexExtractor(defs)
    entries = ex.extract(example("Patient", "example"))
    assert ex.fallback_count() == 1
    assert ex.fallback_expressions[0][:2] == ("Patient", "given")
    assert {v.value for v in values(entries, "given") if isinstance(v, StringValue)} == {
        "Peter",
        "James",
        "Jim",
    }


def test_expressions_nobody_can_read_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    defs = copy.copy(DEFS)
    patient = dict(DEFS.search_params["Patient"])
    patient["given"] = replace(patient["given"], expression="Patient.name.given @@@")
    patient["family"] = replace(patient["family"], expression="Patient.name.family + 1")
    defs.search_params = {**DEFS.search_params, "Patient": patient}
    ex = IndexExtractor(defs)
    entries = ex.extract(example("Patient", "example"))  # two families: `+` fails
    assert [u[:2] for u in ex.unindexed] == [("Patient", "given")]
    assert values(entries, "given") == values(entries, "family") == []
    assert values(entries, "gender")  # the other parameters are unaffected
    assert "fhirpathpy failed" in caplog.text


# -- over all the example resources ---------------------------------------------


def test_every_example_extracts(extractor: IndexExtractor) -> None:
    resources = _examples()
    assert len(resources) > 5000
    total = 0
    for r in resources:
        entries = extractor.extract(r)
        total += len(entries)
        assert all(isinstance(e, IndexEntry) for e in entries)
    assert total > 100_000


def _comparable(entries: list[IndexEntry]) -> set[tuple[str, Any]]:
    return {(e.param, e.value) for e in entries}


def _drop_system(v: SearchValue) -> SearchValue:
    if isinstance(v, TokenValue):
        return TokenValue(None, v.code, v.text)
    if isinstance(v, CompositeValue):
        return CompositeValue(tuple(_drop_system(c) for c in v.components))
    return v


def _ordinary() -> Iterator[dict[str, Any]]:
    return (r for r in _examples() if r["resourceType"] not in CONFORMANCE)


def _assert_agree(native: IndexExtractor, fallback: IndexExtractor, r: dict[str, Any]) -> None:
    a, b = _comparable(native.extract(r)), _comparable(fallback.extract(r))
    if a != b:
        a_loose = {(p, _drop_system(v)) for p, v in a}
        b_loose = {(p, _drop_system(v)) for p, v in b}
        assert a_loose == b_loose, (r["resourceType"], r.get("id"), a ^ b)


CRAFTED: list[dict[str, Any]] = [
    OBS,
    {
        "resourceType": "Patient",
        "deceasedDateTime": "2020-01-01",
        "telecom": [{"system": "email", "value": "a@b.c"}],
    },
    {
        "resourceType": "DocumentReference",
        "relatesTo": [{"code": "replaces", "target": {"reference": "DocumentReference/1"}}],
    },
    {
        "resourceType": "Condition",
        "onsetRange": {"low": {"value": 10, "unit": "a"}},
        "abatementAge": {"value": 3, "unit": "a"},
    },
]


def test_native_and_fhirpathpy_agree_on_crafted_resources() -> None:
    native, fallback = IndexExtractor(DEFS), IndexExtractor(DEFS, fallback_only=True)
    for r in CRAFTED:
        _assert_agree(native, fallback, r)


def test_native_and_fhirpathpy_agree_on_the_examples() -> None:
    """The native closures and fhirpathpy give the same index values, example by example.

    The one allowed difference: a `code` bound to a value set gets its implicit system
    natively; fhirpathpy's results do not say which element a value came from.
    """
    native, fallback = IndexExtractor(DEFS), IndexExtractor(DEFS, fallback_only=True)
    checked = 0
    for r in _ordinary():
        _assert_agree(native, fallback, r)
        checked += 1
    assert checked > 700
