"""Chained parameters and `_has` (search.html#chaining, #has): parsing to conditions.

Expected conditions come from the R4 search parameter definitions: Observation.subject
targets Device, Group, Location and Patient, of which Location and Patient define
`name`; Observation.part-of targets ImagingStudy (`series` a token) and Immunization
(`series` a string); Encounter.subject targets Group and Patient, and only Patient
defines `organization`.
"""

from __future__ import annotations

import pytest

from openrecord.fhir import search_chain
from openrecord.fhir.definitions import definitions
from openrecord.fhir.outcome import FHIRError
from openrecord.fhir.search_common import date_range
from openrecord.fhir.search_query import ParsedSearch, parse_search
from openrecord.store.query import (
    AnyCondition,
    ChainCondition,
    Condition,
    DateCriterion,
    HasCondition,
    ReferenceCriterion,
    StringCriterion,
    TokenCriterion,
)

DEFS = definitions()


def parse(rtype: str | None, *params: tuple[str, str]) -> ParsedSearch:
    return parse_search(rtype, list(params), DEFS)


def one(rtype: str | None, name: str, value: str) -> object:
    parsed = parse(rtype, (name, value))
    assert parsed.unknown == []
    assert len(parsed.query.conditions) == 1
    return parsed.query.conditions[0]


def bad(rtype: str | None, name: str, value: str = "x") -> FHIRError:
    with pytest.raises(FHIRError) as info:
        parse(rtype, (name, value))
    assert info.value.status == 400
    return info.value


def name_is(*values: str) -> Condition:
    return Condition("name", "string", tuple(StringCriterion(v) for v in values))


# -- chains --------------------------------------------------------------------------


def test_typed_chain() -> None:
    assert one("Observation", "subject:Patient.name", "peter") == ChainCondition(
        "subject", ("Patient",), name_is("peter")
    )


def test_untyped_chain_takes_every_target_type_that_defines_the_parameter() -> None:
    assert one("Observation", "subject.name", "peter") == ChainCondition(
        "subject", ("Location", "Patient"), name_is("peter")
    )


def test_untyped_chain_with_differing_kinds_gives_one_option_per_reading() -> None:
    c = one("Observation", "part-of.series", "abc")
    assert isinstance(c, AnyCondition)
    assert set(c.options) == {
        ChainCondition(
            "part-of",
            ("ImagingStudy",),
            Condition("series", "token", (TokenCriterion(None, "abc"),)),
        ),
        ChainCondition(
            "part-of", ("Immunization",), Condition("series", "string", (StringCriterion("abc"),))
        ),
    }


def test_multi_level_chains_typed_and_untyped() -> None:
    expected = ChainCondition(
        "subject", ("Patient",), ChainCondition("organization", ("Organization",), name_is("acme"))
    )
    assert one("Encounter", "subject:Patient.organization.name", "acme") == expected
    assert one("Encounter", "subject.organization.name", "acme") == expected


def test_final_modifiers_and_special_parameters() -> None:
    assert one("Observation", "subject:Patient.name:exact", "Peter") == ChainCondition(
        "subject",
        ("Patient",),
        Condition("name", "string", (StringCriterion("peter", "Peter"),), "exact"),
    )
    assert one("Observation", "subject.identifier", "urn:sys|v1") == ChainCondition(
        "subject",
        ("Device", "Group", "Location", "Patient"),
        Condition("identifier", "token", (TokenCriterion("urn:sys", "v1"),)),
    )
    assert one("Observation", "subject:Patient._id", "123") == ChainCondition(
        "subject", ("Patient",), Condition("_id", "token", (TokenCriterion(None, "123"),))
    )
    day = date_range("2024-01-01")
    assert day is not None
    low, high = day
    assert one("Observation", "subject:Patient._lastUpdated", "ge2024-01-01") == ChainCondition(
        "subject",
        ("Patient",),
        Condition("_lastUpdated", "date", (DateCriterion("ge", low, high),)),
    )
    assert one("Observation", "subject:Patient.gender:missing", "true") == ChainCondition(
        "subject", ("Patient",), Condition("gender", "token", (), "missing", True)
    )


def test_or_inside_and_by_repetition() -> None:
    q = parse("Observation", ("subject:Patient.name", "a,b"), ("subject:Patient.name", "c")).query
    assert q.conditions == [
        ChainCondition("subject", ("Patient",), name_is("a", "b")),
        ChainCondition("subject", ("Patient",), name_is("c")),
    ]


def test_chain_mixed_with_ordinary_parameters() -> None:
    q = parse("Observation", ("code", "1234-5"), ("subject:Patient.name", "peter")).query
    assert q.conditions == [
        Condition("code", "token", (TokenCriterion(None, "1234-5"),)),
        ChainCondition("subject", ("Patient",), name_is("peter")),
    ]


def test_unknown_parts_of_a_chain_are_reported() -> None:
    for name in (
        "nope.name",  # no such reference parameter
        "subject.nope",  # no target type defines it
        "subject:Patient.nope",
        "subject:Nonsense.name",  # no such type
        "subject:Patient.organization.nope",
    ):
        parsed = parse("Observation", (name, "x"), ("code", "1"))
        assert parsed.unknown == [name], name
        assert len(parsed.query.conditions) == 1  # the code condition only


def test_chains_on_a_search_across_all_types_are_unknown() -> None:
    assert parse(None, ("subject.name", "x")).unknown == ["subject.name"]


def test_malformed_chains_are_rejected() -> None:
    for name in (
        "subject..name",
        "subject.",
        ".name",
        "subject:.name",
        "subject:Patient:x.name",
        "subject:exact.name",  # only a type may precede the dot
        "subject:Organization.name",  # not a target of Observation.subject
        "code.name",  # a token does not chain
    ):
        err = bad("Observation", name)
        assert err.issues[0].expression == name, name


def test_value_errors_name_the_whole_chain() -> None:
    err = bad("Observation", "subject:Patient.birthdate", "notadate")
    assert err.issues[0].expression == "subject:Patient.birthdate"
    err = bad("Observation", "subject:Patient.name:below", "x")  # no :below on strings
    assert err.issues[0].expression == "subject:Patient.name:below"


def test_depth_is_limited_to_four_hops() -> None:
    ok = one("Observation", "subject:Patient.organization.partof.partof.name", "x")
    assert isinstance(ok, ChainCondition)
    err = bad("Observation", "subject:Patient.organization.partof.partof.partof.name")
    assert "at most 4" in err.issues[0].diagnostics
    err = bad("Observation", "subject" + ".name" * 50)
    assert "50 levels" in err.issues[0].diagnostics
    bad("Patient", "_has:Observation:patient:" * 5 + "code")


def test_too_broad_an_untyped_chain_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_chain, "MAX_CHAIN_SIZE", 3)  # part-of.series is 4 conditions
    err = bad("Observation", "part-of.series")
    assert "name them" in err.issues[0].diagnostics


def test_huge_values_parse() -> None:
    c = one("Observation", "subject:Patient.name", "z" * 100_000)
    assert c == ChainCondition("subject", ("Patient",), name_is("z" * 100_000))


# -- _has ----------------------------------------------------------------------------


def code_is(code: str, modifier: str | None = None) -> Condition:
    return Condition("code", "token", (TokenCriterion(None, code),), modifier)


def test_has() -> None:
    assert one("Patient", "_has:Observation:patient:code", "1234-5") == HasCondition(
        "Observation", "patient", code_is("1234-5")
    )
    assert one("Patient", "_has:Observation:subject:code:not", "1234-5") == HasCondition(
        "Observation", "subject", code_is("1234-5", "not")
    )


def test_nested_has() -> None:
    c = one("Patient", "_has:Observation:patient:_has:AuditEvent:entity:agent", "MyUserId")
    assert c == HasCondition(
        "Observation",
        "patient",
        HasCondition(
            "AuditEvent",
            "entity",
            Condition("agent", "reference", (ReferenceCriterion(None, "MyUserId"),)),
        ),
    )


def test_has_with_a_chain_inside() -> None:
    c = one("Patient", "_has:Observation:patient:performer:Practitioner.name", "bob")
    assert c == HasCondition(
        "Observation", "patient", ChainCondition("performer", ("Practitioner",), name_is("bob"))
    )


def test_has_on_a_search_across_all_types() -> None:
    assert one(None, "_has:Observation:patient:code", "1") == HasCondition(
        "Observation", "patient", code_is("1")
    )


def test_unknown_parts_of_has_are_reported() -> None:
    for name in (
        "_has:Nonsense:patient:code",
        "_has:Observation:nope:code",
        "_has:Observation:patient:nope",
    ):
        assert parse("Patient", (name, "x")).unknown == [name], name


def test_malformed_or_impossible_has_is_rejected() -> None:
    for name in ("_has", "_has:Observation", "_has:Observation:patient", "_has::patient:code"):
        bad("Patient", name)
    err = bad("Organization", "_has:Observation:subject:code")
    assert "cannot refer to Organization" in err.issues[0].diagnostics
    err = bad("Patient", "_has:Observation:code:status")
    assert "not a reference" in err.issues[0].diagnostics


def test_chained_types_names_every_type_a_search_looks_into() -> None:
    q = parse(
        "Patient",
        ("_has:Observation:patient:performer:Practitioner.name", "bob"),
        ("general-practitioner.organization.name", "acme"),
        ("gender", "male"),
    ).query
    # general-practitioner targets Organization, Practitioner and PractitionerRole; of
    # those only PractitionerRole defines `organization`
    assert search_chain.chained_types(q.conditions) == {
        "Observation",
        "Practitioner",
        "PractitionerRole",
        "Organization",
    }
