"""Search query parsing: HTTP parameters to store conditions, with the index's normalizations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from openrecord.fhir.definitions import definitions
from openrecord.fhir.outcome import FHIRError
from openrecord.fhir.search_common import date_range, number_range
from openrecord.fhir.search_index import IndexExtractor
from openrecord.fhir.search_query import ParsedSearch, parse_search, split_values
from openrecord.fhir.search_values import DateValue, NumberValue, QuantityValue, StringValue
from openrecord.store.query import (
    Condition,
    DateCriterion,
    NumberCriterion,
    QuantityCriterion,
    ReferenceCriterion,
    SortKey,
    StringCriterion,
    TokenCriterion,
    UriCriterion,
)

DEFS = definitions()


def us(dt: datetime) -> int:
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def parse(rtype: str | None, *params: tuple[str, str], **kw: object) -> ParsedSearch:
    return parse_search(rtype, list(params), DEFS, **kw)  # type: ignore[arg-type]


def one(rtype: str, name: str, value: str) -> Condition:
    conditions = parse(rtype, (name, value)).query.conditions
    assert len(conditions) == 1
    return conditions[0]


# -- escaping, OR and AND ----------------------------------------------------------


def test_split_values_respects_escapes() -> None:
    assert split_values("a,b\\,c,d") == ["a", "b\\,c", "d"]
    assert split_values("x\\|y|z", "|") == ["x\\|y", "z"]
    assert split_values("a\\\\,b") == ["a\\\\", "b"]  # an escaped backslash does not escape
    assert split_values("") == [""]


def test_values_or_and_repetition_and() -> None:
    q = parse("Patient", ("given", "ann,bob"), ("given", "cat")).query
    assert q.conditions == [
        Condition("given", "string", (StringCriterion("ann"), StringCriterion("bob"))),
        Condition("given", "string", (StringCriterion("cat"),)),
    ]
    c = one("Patient", "family", "O\\,Brien\\$\\|x")
    assert c.values == (StringCriterion("o,brien$|x"),)


# -- per type ---------------------------------------------------------------------------


def test_token_forms() -> None:
    c = one("Observation", "code", "http://loinc.org|8480-6,|abc,urn:sys|,plain")
    assert c.kind == "token"
    assert c.values == (
        TokenCriterion("http://loinc.org", "8480-6"),
        TokenCriterion(None, "abc", no_system=True),
        TokenCriterion("urn:sys", None),
        TokenCriterion(None, "plain"),
    )
    assert one("Observation", "code", "urn:a\\|b|c").values == (TokenCriterion("urn:a|b", "c"),)
    assert one("Observation", "code:not", "x").modifier == "not"
    text = one("Observation", "code:text", "Blood  Préssure")
    assert (text.modifier, text.values) == ("text", (StringCriterion("blood pressure"),))
    assert one("Patient", "_id", "a,b").values == (
        TokenCriterion(None, "a"),
        TokenCriterion(None, "b"),
    )


def test_string_normalized_like_the_index() -> None:
    entries = IndexExtractor(DEFS).extract(
        {"resourceType": "Patient", "name": [{"family": "  Zoë  Ångström "}]}
    )
    indexed = next(e.value for e in entries if e.param == "family")
    assert isinstance(indexed, StringValue)
    c = one("Patient", "family", "zoe angstrom")
    assert c.values == (StringCriterion(indexed.normalized),)
    exact = one("Patient", "family:exact", "Zoë")
    assert exact.values == (StringCriterion("zoe", exact="Zoë"),)
    assert one("Patient", "family:contains", "ÖM").values == (StringCriterion("om"),)


def test_date_prefixes_and_ranges() -> None:
    c = one("Patient", "birthdate", "ge2013-01")
    assert c.values == (
        DateCriterion(
            "ge", us(datetime(2013, 1, 1, tzinfo=UTC)), us(datetime(2013, 2, 1, tzinfo=UTC)) - 1
        ),
    )
    plus10 = timezone(timedelta(hours=10))
    c = one("Encounter", "date", "lt2015-01-17T16:00:00+10:00,sa2015")
    assert c.values == (
        DateCriterion(
            "lt",
            us(datetime(2015, 1, 17, 16, tzinfo=plus10)),
            us(datetime(2015, 1, 17, 16, 0, 1, tzinfo=plus10)) - 1,
        ),
        DateCriterion(
            "sa", us(datetime(2015, 1, 1, tzinfo=UTC)), us(datetime(2016, 1, 1, tzinfo=UTC)) - 1
        ),
    )
    minutes = one("Encounter", "date", "2015-01-17T16:00Z").values[0]
    assert isinstance(minutes, DateCriterion)
    assert minutes.high - minutes.low + 1 == 60_000_000
    assert one("Patient", "_lastUpdated", "gt2020").kind == "date"


def test_dates_without_zone_use_tz_and_match_the_index() -> None:
    ny = ZoneInfo("America/New_York")
    c = parse("Patient", ("birthdate", "1974-12-25"), tz=ny).query.conditions[0]
    assert c.values == (
        DateCriterion(
            "eq",
            us(datetime(1974, 12, 25, tzinfo=ny)),
            us(datetime(1974, 12, 26, tzinfo=ny)) - 1,
        ),
    )
    entries = IndexExtractor(DEFS, ny).extract(
        {"resourceType": "Patient", "birthDate": "1974-12-25"}
    )
    indexed = next(e.value for e in entries if e.param == "birthdate")
    assert isinstance(indexed, DateValue)
    crit = c.values[0]
    assert isinstance(crit, DateCriterion)
    assert (crit.low, crit.high) == (indexed.low, indexed.high)


def test_number_prefixes_and_precision() -> None:
    c = one("RiskAssessment", "probability", "100,gt1e2,le100.00,0.25")
    assert c.values == (
        NumberCriterion("eq", 100.0, 99.5, 100.5),
        NumberCriterion("gt", 100.0, 50.0, 150.0),
        NumberCriterion("le", 100.0, 99.995, 100.005),
        NumberCriterion("eq", 0.25, 0.245, 0.255),
    )
    # the same value in a resource gets the same range
    entries = IndexExtractor(DEFS).extract(
        {"resourceType": "RiskAssessment", "prediction": [{"probabilityDecimal": 0.25}]}
    )
    indexed = next(e.value for e in entries if e.param == "probability")
    assert indexed == NumberValue(0.25, 0.245, 0.255)


def test_quantity_forms() -> None:
    c = one("Observation", "value-quantity", "ge5.4|http://unitsofmeasure.org|mg,5.4||mg,5.4")
    n = number_range("5.4")
    assert n is not None
    assert c.values == (
        QuantityCriterion("ge", n[0], n[1], n[2], "http://unitsofmeasure.org", "mg"),
        QuantityCriterion("eq", n[0], n[1], n[2], None, "mg"),
        QuantityCriterion("eq", n[0], n[1], n[2], None, None),
    )
    entries = IndexExtractor(DEFS).extract(
        {"resourceType": "Observation", "valueQuantity": {"value": 5.4, "code": "mg"}}
    )
    indexed = next(e.value for e in entries if e.param == "value-quantity")
    assert isinstance(indexed, QuantityValue)
    crit = c.values[1]
    assert isinstance(crit, QuantityCriterion)
    assert (crit.low, crit.high) == (indexed.low, indexed.high)


def test_reference_forms() -> None:
    c = one("Observation", "subject", "Patient/123,123,Patient/1/_history/2")
    assert c.values == (
        ReferenceCriterion("Patient", "123"),
        ReferenceCriterion(None, "123"),  # subject has many target types
        ReferenceCriterion("Patient", "1", None, "2"),
    )
    # one target type: a bare id can only mean that type
    assert one("Patient", "organization", "9").values == (ReferenceCriterion("Organization", "9"),)
    typed = one("Observation", "subject:Patient", "123")
    assert (typed.modifier, typed.values) == ("Patient", (ReferenceCriterion("Patient", "123"),))
    absolute = one("Observation", "subject", "http://other.org/fhir/Patient/9")
    assert absolute.values == (
        ReferenceCriterion("Patient", "9", "http://other.org/fhir/Patient/9"),
    )
    canonical = one("PlanDefinition", "depends-on", "http://q.org/Library/lib|1.1")
    # an absolute URL also names its Type/id; the store matches canonicals by url (+ version)
    assert canonical.values == (
        ReferenceCriterion("Library", "lib", "http://q.org/Library/lib", "1.1"),
    )
    urn = one("Observation", "subject", "urn:uuid:0c3b")
    assert urn.values == (ReferenceCriterion(None, None, "urn:uuid:0c3b"),)
    ident = one("Observation", "subject:identifier", "urn:oid:1|42")
    assert (ident.kind, ident.modifier, ident.values) == (
        "reference",
        "identifier",
        (TokenCriterion("urn:oid:1", "42"),),
    )


def test_uri_and_meta_params() -> None:
    assert one("ValueSet", "url", "http://x.org/vs").values == (UriCriterion("http://x.org/vs"),)
    assert one("ValueSet", "url:below", "http://x.org/").modifier == "below"
    assert one("Patient", "_profile", "http://p.org/sd").values == (
        UriCriterion("http://p.org/sd"),
    )
    assert one("Patient", "_tag", "urn:t|a").values == (TokenCriterion("urn:t", "a"),)


def test_missing() -> None:
    c = one("Patient", "birthdate:missing", "true")
    assert c == Condition("birthdate", "date", (), "missing", True)
    assert one("Patient", "name:missing", "false").missing is False


# -- result parameters ----------------------------------------------------------


def test_result_parameters() -> None:
    ps = parse(
        "Patient",
        ("_count", "5"),
        ("_offset", "40"),
        ("_sort", "-birthdate,_id,family"),
        ("_total", "accurate"),
        ("_summary", "count"),
        ("_elements", "name,gender"),
        ("_include", "Patient:organization"),
        ("_include:iterate", "Organization:partof"),
        ("_revinclude", "Observation:subject"),
        ("_contained", "both"),
        ("_containedType", "contained"),
        ("_format", "json"),
        ("_pretty", "true"),
    )
    q = ps.query
    assert (q.count, q.offset, q.total) == (5, 40, True)
    assert q.sort == [
        SortKey("birthdate", "date", True),
        SortKey("_id", "token"),
        SortKey("family", "string"),
    ]
    assert q.conditions == []
    assert ps.summary == "count"
    assert ps.elements == ["name", "gender"]
    assert ps.include == ["Patient:organization"]
    assert ps.include_iterate == ["Organization:partof"]
    assert ps.revinclude == ["Observation:subject"]
    assert (ps.contained, ps.contained_type) == ("both", "contained")
    assert (q.contained, q.contained_type) == ("both", "contained")  # the store answers them
    assert ps.unknown == []
    assert parse("Patient", ("_contained", "false")).unknown == []
    # the defaults (search.html#contained): no contained resources; containers returned
    default = parse("Patient").query
    assert (default.contained, default.contained_type) == ("false", "container")


def test_count_defaults_and_cap() -> None:
    assert parse("Patient").query.count == 20
    assert parse("Patient", ("_count", "100000")).query.count == 1000
    assert parse("Patient", ("_count", "100000"), max_count=50).query.count == 50
    assert parse("Patient", default_count=10).query.count == 10
    assert parse("Patient", ("_count", "0")).query.count == 0
    assert parse("Patient", ("_total", "none")).query.total is False


def test_unknown_parameters_are_listed() -> None:
    ps = parse(
        "Observation",
        ("nonsense", "1"),
        ("subject.nonsense", "peter"),  # chains: tests/fhir/test_search_chain.py
        ("_has:Observation:nonsense:code", "1234"),
        ("_query", "cancer"),  # defined by R4, with nothing to index
        ("_sort", "nonsense"),
        ("code", "x"),
    )
    assert ps.unknown == [
        "nonsense",
        "subject.nonsense",
        "_has:Observation:nonsense:code",
        "_query",
        "_sort=nonsense",
    ]
    assert [c.param for c in ps.query.conditions] == ["code"]


def test_search_across_types() -> None:
    ps = parse(None, ("_type", "Patient,Observation"), ("_tag", "urn:t|a"), ("name", "x"))
    assert ps.query.type is None
    assert ps.types == ["Patient", "Observation"]
    assert [c.param for c in ps.query.conditions] == ["_tag"]
    assert ps.unknown == ["name"]


def test_search_across_named_types_uses_their_shared_parameters() -> None:
    defs = definitions()
    ps = parse_search(
        None,
        [("patient", "Patient/1"), ("code", "x"), ("onset-date", "2020"), ("name", "y")],
        defs,
        types=("Observation", "Condition"),
    )
    assert ps.query.types == ("Observation", "Condition")
    assert [c.param for c in ps.query.conditions] == ["patient", "code"]
    assert ps.unknown == ["onset-date", "name"]


def test_empty_values_are_ignored() -> None:
    assert parse("Patient", ("name", "")).query.conditions == []


# -- errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rtype", "name", "value", "code"),
    [
        ("Patient", "birthdate", "notadate", "value"),
        ("Patient", "birthdate", "ge2013-02-30", "value"),
        ("Patient", "_count", "abc", "value"),
        ("Patient", "_count", "-1", "value"),
        ("Patient", "_offset", "x", "value"),
        ("Patient", "_total", "maybe", "value"),
        ("Patient", "_summary", "yes", "value"),
        ("Patient", "_lastUpdated", "yesterday", "value"),
        ("RiskAssessment", "probability", "lots", "value"),
        ("Observation", "value-quantity", "5|mg", "value"),
        ("Observation", "value-quantity", "abc|x|y", "value"),
        ("Observation", "subject", "Patient/", "value"),
        ("Observation", "subject:Patient", "Group/1", "value"),
        ("Observation", "subject:Medication", "1", "value"),
        ("Patient", "gender:missing", "maybe", "value"),
        ("Patient", "gender:in", "http://vs", "not-supported"),
        ("Patient", "family:text", "x", "invalid"),
        ("Patient", "birthdate:exact", "2000", "invalid"),
    ],
)
def test_bad_values_are_400(rtype: str, name: str, value: str, code: str) -> None:
    with pytest.raises(FHIRError) as err:
        parse(rtype, (name, value))
    assert err.value.status == 400
    issue = err.value.issues[0]
    assert issue.code == code
    assert issue.expression == name


def test_date_helper_is_shared() -> None:
    # the query side uses exactly the index's range code
    c = one("Patient", "birthdate", "1974-12-25").values[0]
    assert isinstance(c, DateCriterion)
    assert (c.low, c.high) == date_range("1974-12-25")
