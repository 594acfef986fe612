"""SMART App Launch 2.x scope parsing (scopes-and-launch-context.html): v2 `cruds`,
granular queries, v1 `read`/`write`/`*`, the identity and launch scopes."""

from __future__ import annotations

import pytest

from openrecord.auth.scopes import Grant, ScopeError, parse_scope, parse_scopes

VITALS = "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"


def test_v2_scope_names_level_type_and_permissions() -> None:
    grant = parse_scope("patient/Observation.rs")
    assert grant == Grant("patient", "Observation", frozenset("rs"), (), "patient/Observation.rs")
    wildcard = parse_scope("system/*.cruds")
    assert wildcard is not None
    assert (wildcard.level, wildcard.type, wildcard.permissions) == (
        "system",
        "*",
        frozenset("cruds"),
    )
    user = parse_scope("user/Encounter.cud")
    assert user is not None and user.permissions == frozenset("cud")


def test_granular_query_is_kept_as_name_value_pairs() -> None:
    grant = parse_scope(f"patient/Observation.rs?category={VITALS}")
    assert grant is not None
    assert grant.query == (("category", VITALS),)
    two = parse_scope("user/Condition.s?category=problem-list-item&clinical-status=active")
    assert two is not None
    assert two.query == (("category", "problem-list-item"), ("clinical-status", "active"))


@pytest.mark.parametrize(("v1", "letters"), [("read", "rs"), ("write", "cud"), ("*", "cruds")])
def test_v1_permissions_map_to_v2(v1: str, letters: str) -> None:
    old = parse_scope(f"patient/Observation.{v1}")
    new = parse_scope(f"patient/Observation.{letters}")
    assert old is not None and new is not None
    assert old.permissions == new.permissions == frozenset(letters)


@pytest.mark.parametrize(
    "scope",
    [
        "openid",
        "fhirUser",
        "profile",
        "launch",
        "launch/patient",
        "launch/encounter",
        "offline_access",
        "online_access",
    ],
)
def test_identity_and_launch_scopes_grant_no_data(scope: str) -> None:
    assert parse_scope(scope) is None
    policy = parse_scopes(scope)
    assert policy.grants == ()
    assert scope in policy.other
    assert not policy.allowed("r", "Patient")


@pytest.mark.parametrize(
    ("scope", "says"),
    [
        ("patient/Observation.sr", "order"),  # letters out of order
        ("patient/Observation.rrs", "order"),  # a letter twice
        ("patient/Observation.rx", "cruds"),  # not a permission
        ("patient/Observation.", "not a SMART scope"),
        ("patient/observation.rs", "not a SMART scope"),  # not a type name
        ("clinic/Observation.rs", "not a SMART scope"),  # no such level
        ("patient/Observation.read?category=x", "v2"),  # queries are v2 only
        ("patient/Observation.rs?category", "name=value"),
        ("patient/Observation.rs?", "name=value"),
        ("admin", "not a SMART scope"),
    ],
)
def test_invalid_scopes_are_refused_with_the_reason(scope: str, says: str) -> None:
    with pytest.raises(ScopeError, match=says) as err:
        parse_scope(scope)
    assert scope in str(err.value)


def test_policy_answers_which_interactions_on_which_types() -> None:
    policy = parse_scopes("openid fhirUser patient/Observation.rs patient/Condition.c")
    assert policy.allowed("r", "Observation") and policy.allowed("s", "Observation")
    assert not policy.allowed("c", "Observation")
    assert policy.allowed("c", "Condition") and not policy.allowed("r", "Condition")
    assert not policy.allowed("r", "Patient")
    assert policy.level("r", "Observation") == "patient"
    assert policy.level("r", "Patient") is None
    assert policy.patient_level


def test_wildcard_covers_every_type_and_the_widest_level_wins() -> None:
    policy = parse_scopes("patient/*.rs system/Observation.rs")
    assert policy.level("s", "Observation") == "system"
    assert policy.level("s", "Condition") == "patient"
    assert policy.allowed("s", "*")


def test_constraints_apply_only_when_every_grant_of_the_level_has_one() -> None:
    labs = "category=laboratory"
    policy = parse_scopes(f"patient/Observation.rs?category={VITALS} patient/Observation.rs?{labs}")
    assert policy.constraints("s", "Observation") == [
        (("category", VITALS),),
        (("category", "laboratory"),),
    ]
    widened = parse_scopes(f"patient/Observation.rs?category={VITALS} patient/*.rs")
    assert widened.constraints("s", "Observation") == []


def test_a_scope_string_with_one_bad_scope_is_refused() -> None:
    with pytest.raises(ScopeError, match=r"patient/Observation\.sr"):
        parse_scopes("openid patient/Patient.rs patient/Observation.sr")
