"""The Store contract for search, one test per criterion kind, on every backend.

Expectations are worked by hand from FHIR R4 search semantics as documented in
`openrecord.store.sql_search`.
"""

from __future__ import annotations

import time

import pytest

from openrecord.fhir.search_values import (
    DateValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)
from openrecord.store import (
    DateCriterion,
    NumberCriterion,
    QuantityCriterion,
    ReferenceCriterion,
    SearchQuery,
    SortKey,
    Store,
    StringCriterion,
    TokenCriterion,
    UnsupportedSearch,
    UriCriterion,
)
from tests.store.helpers import (
    DAY,
    C,
    T,
    day,
    delete,
    find,
    found,
    missing,
    put,
    us,
    year,
)

# -- search: one test per criterion kind ------------------------------------------------

LOINC = "http://loinc.org"


def test_token(store: Store) -> None:
    put(store, "Observation", "t1", ("code", TokenValue(LOINC, "1234", "Body Weight")))
    put(store, "Observation", "t2", ("code", TokenValue("http://snomed.info/sct", "1234")))
    put(store, "Observation", "t3", ("code", TokenValue(None, "1234")))
    put(store, "Observation", "t4", ("code", TokenValue(LOINC, "9999")))
    put(store, "Observation", "t5", ("status", TokenValue(None, "final")))
    put(store, "Observation", "t6", ("code", TokenValue(None, None, "Héart  rate")))
    obs = "Observation"
    assert found(store, obs, C("code", "token", T(None, "1234"))) == {"t1", "t2", "t3"}
    assert found(store, obs, C("code", "token", T(LOINC, "1234"))) == {"t1"}
    no_system = TokenCriterion(None, "1234", no_system=True)
    assert found(store, obs, C("code", "token", no_system)) == {"t3"}
    assert found(store, obs, C("code", "token", T(LOINC, None))) == {"t1", "t4"}
    assert found(store, obs, C("code", "token", T(LOINC, "1234"), modifier="not")) == {
        "t2",
        "t3",
        "t4",
        "t5",
        "t6",
    }
    text = "text"
    assert found(store, obs, C("code", "token", StringCriterion("body"), modifier=text)) == {"t1"}
    assert found(store, obs, C("code", "token", StringCriterion("heart r"), modifier=text)) == {
        "t6"
    }
    assert found(store, obs, C("code", "token", StringCriterion("weight"), modifier=text)) == set()
    assert found(store, obs, missing("code", "token", True)) == {"t5"}
    assert found(store, obs, missing("code", "token", False)) == {"t1", "t2", "t3", "t4", "t6"}
    assert found(store, obs, C("code", "token", T(LOINC, "9999"), no_system)) == {"t3", "t4"}
    assert found(store, obs, C("code", "token", T(None, "1234")), C("code", "token", T(LOINC))) == {
        "t1"
    }
    assert found(store, obs, C("code", "token", T("1234"))) == set()  # a system, no code
    assert found(store, obs, C("_id", "token", T(None, "t1"), T(None, "t3"))) == {"t1", "t3"}
    assert found(store, obs, C("_id", "token", T(None, "t1"), modifier="not")) == {
        "t2",
        "t3",
        "t4",
        "t5",
        "t6",
    }
    assert found(store, obs, missing("_id", "token", False)) == {f"t{i}" for i in range(1, 7)}
    assert found(store, obs, missing("_id", "token", True)) == set()
    with pytest.raises(UnsupportedSearch):
        find(store, obs, C("code", "token", T(LOINC, "1234"), modifier="below"))


def test_string(store: Store) -> None:
    names = {
        "s1": ["Müller"],
        "s2": ["Mueller"],
        "s3": ["Smith"],
        "s4": ["Anne Smith"],
        "s5": ["Zoë", "Mu"],
        "s6": ["50% off_x\\"],
        "s7": ["\U0001d518nicode"],
        "s8": ["Mv"],
    }
    norm = {"Müller": "muller", "Zoë": "zoe", "\U0001d518nicode": "\U0001d518nicode"}
    for rid, values in names.items():
        entries = [("name", StringValue(v, norm.get(v, v.lower()))) for v in values]
        put(store, "Patient", rid, *entries)

    def s(value: str, modifier: str | None = None, exact: str | None = None) -> set[str]:
        return found(
            store, "Patient", C("name", "string", StringCriterion(value, exact), modifier=modifier)
        )

    assert s("mu") == {"s1", "s2", "s5"}
    assert s("mul") == {"s1"}
    assert s("smi") == {"s3"}
    assert s("smi", "contains") == {"s3", "s4"}
    assert s("muller", "exact", "Müller") == {"s1"}
    assert s("muller", "exact", "müller") == set()
    assert s("\U0001d518") == {"s7"}
    assert s("50%") == {"s6"}
    assert s("%") == set() and s("_") == set()
    assert s("%", "contains") == {"s6"} and s("_x\\", "contains") == {"s6"}
    assert s("'; DROP TABLE resource; --") == set()
    assert s("\x00") == set() and s("a\x00", "contains") == set()
    assert s("") == set(names)
    assert found(
        store, "Patient", C("name", "string", StringCriterion("zoe"), StringCriterion("smith"))
    ) == {"s3", "s5"}
    assert store.read("Patient", "s1") is not None


DATES = {
    "d1": [day(2020, 1, 1)],
    "d2": [day(2020, 6, 15)],
    "d3": [day(2021, 1, 1)],
    "d4": [DateValue(us(2019, 12, 31, 12), us(2020, 1, 2, 12))],
    "d5": [day(2019, 5, 1)],
    "d6": [day(2018, 1, 1), day(2022, 1, 1)],
}


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("eq", "d1 d2"),
        ("ne", "d3 d4 d5 d6"),
        ("gt", "d3 d6"),
        ("lt", "d4 d5 d6"),
        ("ge", "d1 d2 d3 d6"),
        ("le", "d1 d2 d4 d5 d6"),
        ("sa", "d3 d6"),
        ("eb", "d5 d6"),
    ],
)
def test_date_prefixes(store: Store, prefix: str, expected: str) -> None:
    for rid, values in DATES.items():
        put(store, "Observation", rid, *[("date", v) for v in values])
    put(store, "Observation", "none")
    crit = DateCriterion(prefix, *year(2020))  # type: ignore[arg-type]
    assert found(store, "Observation", C("date", "date", crit)) == set(expected.split())


def test_date_day_and_approximately(store: Store) -> None:
    for rid, values in DATES.items():
        put(store, "Observation", rid, *[("date", v) for v in values])
    d = day(2020, 1, 1)
    assert found(store, "Observation", C("date", "date", DateCriterion("eq", d.low, d.high))) == {
        "d1"
    }
    # ap: the search range widened by 10% of its distance from now (about 10 days here)
    now = time.time_ns() // 1000
    p = (now - 100 * DAY) // DAY * DAY
    at = {"a1": 0, "a2": 5, "a3": 30, "a4": -15, "a5": -8}
    for rid, offset in at.items():
        put(
            store,
            "Encounter",
            rid,
            ("date", DateValue(p + offset * DAY, p + (offset + 1) * DAY - 1)),
        )
    ap = DateCriterion("ap", p, p + DAY - 1)
    assert found(store, "Encounter", C("date", "date", ap)) == {"a1", "a2", "a5"}


def test_last_updated(store: Store) -> None:
    put(store, "Patient", "l1", last_updated=us(2020, 1, 1, 10))
    put(store, "Patient", "l2", last_updated=us(2020, 6, 1))
    put(store, "Patient", "l3", last_updated=us(2021, 3, 1))
    june = day(2020, 6, 1)

    def lu(prefix: str, lo: int, hi: int) -> set[str]:
        return found(store, "Patient", C("_lastUpdated", "date", DateCriterion(prefix, lo, hi)))  # type: ignore[arg-type]

    assert lu("eq", *year(2020)) == {"l1", "l2"}
    assert lu("ne", *year(2020)) == {"l3"}
    assert lu("gt", *year(2020)) == {"l3"}
    assert lu("lt", june.low, june.high) == {"l1"}
    assert lu("ge", june.low, june.high) == {"l2", "l3"}
    assert lu("le", june.low, june.high) == {"l1", "l2"}
    assert lu("sa", *year(2020)) == {"l3"}
    assert lu("eb", june.low, june.high) == {"l1"}


NUMBERS = {
    "n1": (100, 99.5, 100.5),
    "n2": (100.4, 100.35, 100.45),
    "n3": (101, 100.5, 101.5),
    "n4": (99, 98.5, 99.5),
    "n5": (100, 50, 150),  # "1e2"
    "n6": (120, 119.5, 120.5),
    "n7": (50, 49.5, 50.5),
}


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("eq", "n1 n2 n5"),
        ("ne", "n3 n4 n6 n7"),
        ("gt", "n3 n6"),
        ("lt", "n4 n7"),
        ("ge", "n1 n2 n3 n5 n6"),
        ("le", "n1 n2 n4 n5 n7"),
        # implicit ranges are half-open: 101's [100.5, 101.5) starts where 100's
        # [99.5, 100.5) ends, so they do not overlap (same for 99 below)
        ("sa", "n3 n6"),
        ("eb", "n4 n7"),
        ("ap", "n1 n2 n3 n4 n5"),
    ],
)
def test_number_prefixes(store: Store, prefix: str, expected: str) -> None:
    for rid, (v, lo, hi) in NUMBERS.items():
        put(store, "RiskAssessment", rid, ("probability", NumberValue(v, lo, hi)))
    crit = NumberCriterion(prefix, 100, 99.5, 100.5)  # type: ignore[arg-type]
    assert found(store, "RiskAssessment", C("probability", "number", crit)) == set(expected.split())


def test_open_ranges(store: Store) -> None:
    """Range values with an open end are stored as infinities (JSON has none: PG path)."""
    inf = float("inf")
    put(store, "RiskAssessment", "open-hi", ("probability", NumberValue(200, 150, inf)))
    put(store, "RiskAssessment", "open-lo", ("probability", NumberValue(5, -inf, 10)))

    def n(prefix: str) -> set[str]:
        crit = NumberCriterion(prefix, 100, 99.5, 100.5)  # type: ignore[arg-type]
        return found(store, "RiskAssessment", C("probability", "number", crit))

    assert n("gt") == n("sa") == {"open-hi"}
    assert n("lt") == n("eb") == {"open-lo"}
    assert n("eq") == set()


def test_quantity(store: Store) -> None:
    ucum = "http://unitsofmeasure.org"
    put(
        store,
        "Observation",
        "q1",
        ("value-quantity", QuantityValue(5.4, 5.35, 5.45, ucum, "mg", "mg")),
    )
    put(
        store,
        "Observation",
        "q2",
        ("value-quantity", QuantityValue(5.4, 5.35, 5.45, ucum, "g", "g")),
    )
    put(
        store,
        "Observation",
        "q3",
        ("value-quantity", QuantityValue(5.4, 5.35, 5.45, None, None, "mg")),
    )
    put(
        store,
        "Observation",
        "q4",
        ("value-quantity", QuantityValue(6, 5.5, 6.5, ucum, "mg", "milligram")),
    )

    def q(
        prefix: str, value: float, low: float, high: float, system: str | None, code: str | None
    ) -> set[str]:
        crit = QuantityCriterion(prefix, value, low, high, system, code)  # type: ignore[arg-type]
        return found(store, "Observation", C("value-quantity", "quantity", crit))

    assert q("eq", 5.4, 5.35, 5.45, ucum, "mg") == {"q1"}
    assert q("eq", 5.4, 5.35, 5.45, None, "mg") == {"q1", "q3"}
    assert q("eq", 5.4, 5.35, 5.45, None, None) == {"q1", "q2", "q3"}
    assert q("eq", 5.4, 5.35, 5.45, ucum, None) == {"q1", "q2"}
    assert q("gt", 5.4, 5.35, 5.45, ucum, "mg") == {"q4"}
    assert q("le", 6, 5.5, 6.5, None, "mg") == {"q1", "q3", "q4"}
    assert q("ne", 5.4, 5.35, 5.45, None, None) == {"q4"}


def test_reference(store: Store) -> None:
    q_url = "http://ex.org/Questionnaire/q"
    put(store, "Observation", "r1", ("subject", ReferenceValue("Patient", "p1")))
    put(store, "Observation", "r2", ("subject", ReferenceValue("Group", "p1")))
    put(store, "Observation", "r3", ("subject", ReferenceValue("Patient", "p2")))
    abs_url = "http://ex.org/fhir/Patient/p9"
    put(store, "Observation", "r4", ("subject", ReferenceValue("Patient", "p9", abs_url)))
    put(store, "Observation", "r5", ("instantiates", ReferenceValue(None, None, q_url, "1.0")))
    put(store, "Observation", "r6", ("instantiates", ReferenceValue(None, None, q_url, "2.0")))
    put(store, "Observation", "r7", ("instantiates", ReferenceValue(None, None, q_url + "-other")))
    put(store, "Observation", "r8", ("subject", TokenValue("urn:mrn", "123")))

    def r(
        *crits: ReferenceCriterion, param: str = "subject", modifier: str | None = None
    ) -> set[str]:
        return found(store, "Observation", C(param, "reference", *crits, modifier=modifier))

    R = ReferenceCriterion
    assert r(R("Patient", "p1")) == {"r1"}
    assert r(R(None, "p1")) == {"r1", "r2"}
    assert r(R(None, "p1"), modifier="Patient") == {"r1"}
    assert r(R("Patient", "p1"), modifier="Group") == set()
    assert r(R("Patient", "p9")) == {"r4"}
    assert r(R("Patient", "p9", abs_url)) == {"r4"}
    assert r(R("Patient", "p9", "http://elsewhere/fhir/Patient/p9")) == set()
    assert r(R("Patient", "p1"), R("Patient", "p2")) == {"r1", "r3"}
    assert r(R("Questionnaire", "q", q_url), param="instantiates") == {"r5", "r6"}
    assert r(R("Questionnaire", "q", q_url, "1.0"), param="instantiates") == {"r5"}
    assert r(R(None, None, q_url), param="instantiates", modifier="below") == {"r5", "r6", "r7"}
    assert r(R(None, None, q_url), param="instantiates", modifier="above") == {"r5", "r6"}
    ident = C("subject", "reference", T("urn:mrn", "123"), modifier="identifier")
    assert found(store, "Observation", ident) == {"r8"}
    assert found(store, "Observation", missing("subject", "reference", True)) == {"r5", "r6", "r7"}


def test_uri(store: Store) -> None:
    base = "http://acme.org/fhir/ValueSet/123"
    put(store, "ValueSet", "u1", ("url", UriValue(base)))
    put(store, "ValueSet", "u2", ("url", UriValue(base + "/_history/5")))
    put(store, "ValueSet", "u3", ("url", UriValue("http://acme.org/other")))

    def u(value: str, modifier: str | None = None) -> set[str]:
        return found(store, "ValueSet", C("url", "uri", UriCriterion(value), modifier=modifier))

    assert u(base) == {"u1"}
    assert u("http://acme.org/fhir/", "below") == {"u1", "u2"}
    assert u(base + "/_history/5", "above") == {"u1", "u2"}
    assert u(base, "above") == {"u1"}
    assert u("http://acme.org/fhir/ValueSet/12") == set()


def test_missing_and_unknown_params(store: Store) -> None:
    put(store, "Patient", "a", ("birthdate", day(1980, 1, 1)), ("name", StringValue("A", "a")))
    put(store, "Patient", "b", ("general-practitioner", ReferenceValue("Practitioner", "x")))
    put(store, "Patient", "c")
    pat = "Patient"
    assert found(store, pat, missing("birthdate", "date", True)) == {"b", "c"}
    assert found(store, pat, missing("birthdate", "date", False)) == {"a"}
    assert found(store, pat, missing("name", "string", False)) == {"a"}
    assert found(store, pat, missing("general-practitioner", "reference", False)) == {"b"}
    # a parameter no resource of this type was ever indexed with
    assert found(store, pat, C("never", "token", T(None, "x"))) == set()
    assert found(store, pat, C("never", "token", T(None, "x"), modifier="not")) == {"a", "b", "c"}
    assert found(store, pat, missing("never", "token", True)) == {"a", "b", "c"}
    assert found(store, pat, missing("never", "token", False)) == set()
    assert found(store, "Observation", missing("name", "string", True)) == set()


def test_and_or_and_system_search(store: Store) -> None:
    put(
        store,
        "Patient",
        "p1",
        ("_tag", TokenValue("t", "a")),
        ("gender", TokenValue(None, "female")),
    )
    put(
        store, "Patient", "p2", ("_tag", TokenValue("t", "b")), ("gender", TokenValue(None, "male"))
    )
    put(store, "Observation", "o1", ("_tag", TokenValue("t", "a")))
    put(store, "Observation", "o2", ("_tag", TokenValue("t", "b")))
    put(store, "Observation", "o3", ("_tag", TokenValue("t", "a")))
    delete(store, "Observation", "o3")
    tag_a = C("_tag", "token", T("t", "a"))
    assert found(store, None, tag_a) == {"p1", "o1"}
    assert found(store, None, C("_tag", "token", T("t", "a"), T("t", "b"))) == {
        "p1",
        "p2",
        "o1",
        "o2",
    }
    assert found(store, "Patient", tag_a, C("gender", "token", T(None, "female"))) == {"p1"}
    assert found(store, "Patient", tag_a, C("gender", "token", T(None, "male"))) == set()
    assert found(store, None, C("gender", "token", T(None, "male"))) == {"p2"}
    assert found(store, None) == {"p1", "p2", "o1", "o2"}
    assert found(store, None, missing("gender", "token", True)) == {"o1", "o2"}


def test_sort(store: Store) -> None:
    put(store, "Observation", "a", ("date", day(2020, 5, 1)), ("date", day(2020, 9, 1)))
    put(store, "Observation", "b", ("date", day(2020, 7, 1)), ("code", TokenValue(None, "x")))
    put(store, "Observation", "c", ("date", day(2020, 1, 1)), ("date", day(2020, 8, 1)))
    put(store, "Observation", "d", ("code", TokenValue(None, "a")))
    obs = "Observation"
    assert find(store, obs, sort=[SortKey("date", "date")]) == ["c", "a", "b", "d"]
    assert find(store, obs, sort=[SortKey("date", "date", True)]) == ["a", "c", "b", "d"]
    assert find(store, obs, sort=[SortKey("_id", "token", True)]) == ["d", "c", "b", "a"]
    assert find(store, obs, sort=[SortKey("_lastUpdated", "date", True)]) == ["d", "c", "b", "a"]
    assert find(store, obs, sort=[SortKey("code", "token"), SortKey("_id", "token")]) == [
        "d",
        "b",
        "a",
        "c",
    ]
    assert find(store, obs, sort=[SortKey("never", "string")]) == ["a", "b", "c", "d"]
    # ties keep insertion order, whatever the direction
    for rid in ("t3", "t1", "t2"):
        put(store, "Patient", rid, ("name", StringValue("Same", "same")))
    assert find(store, "Patient", sort=[SortKey("name", "string")]) == ["t3", "t1", "t2"]
    assert find(store, "Patient", sort=[SortKey("name", "string", True)]) == ["t3", "t1", "t2"]
    assert find(store, "Patient") == ["t3", "t1", "t2"]  # default: insertion order


def test_paging_and_total(store: Store) -> None:
    for i in range(25):
        put(store, "Patient", f"p{i:02}", ("_tag", TokenValue("t", "x")))
    q = SearchQuery("Patient", [C("_tag", "token", T("t", "x"))], count=10, offset=20, total=True)
    page = store.search(q)
    assert [r.id for r in page.resources] == [f"p{i}" for i in range(20, 25)] and page.total == 25
    q.total = False
    assert store.search(q).total is None
    q.count, q.offset, q.total = 0, 0, True
    page = store.search(q)
    assert page.resources == [] and page.total == 25
    assert store.search(SearchQuery("Patient", count=3)).resources[0].data is not None


def test_unsupported_searches_raise(store: Store) -> None:
    for cond in (
        C("name", "string", StringCriterion("a"), modifier="text"),
        C("date", "date", DateCriterion("eq", 1, 2), modifier="not"),
        C("url", "uri", UriCriterion("x"), modifier="contains"),
        C("subject", "reference", ReferenceCriterion("Patient", "1"), modifier="below"),
        C("x", "composite", T("a")),
    ):
        with pytest.raises(UnsupportedSearch):
            store.search(SearchQuery("Patient", [cond]))
