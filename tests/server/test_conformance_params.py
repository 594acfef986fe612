"""Search conformance: parameter types and prefixes (R4 search.html §3.1.1.4, §3.1.1.5).

Data and the reasoning tables: tests/server/conformance_data.py. Number and date
searches are ranges: a value's implicit range comes from its precision; `eq` means the
search range contains the target's range, `gt` the range above the search value
overlaps the target, `sa` the target starts after the search range ends, and so on.
"""

from __future__ import annotations

import httpx
import pytest

from tests.server.conformance_data import ALL_PATIENTS, EXAMPLE, VIP_PROFILE, match_ids, search_ids
from tests.server.conftest import Server

pytestmark = pytest.mark.usefixtures("conformance_dataset")


WEIGHT = "code=http://loinc.org|29463-7"


# -- number (RiskAssessment.probability: 0.8, 0.31, 0.301, 0.35, 0.2) -----------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # 0.3 has 1 significant decimal: [0.25, 0.35) holds 0.31 and 0.301, not 0.35
        ("probability=0.3", {"ra-31", "ra-301"}),
        # 0.30 is [0.295, 0.305): only 0.301
        ("probability=0.30", {"ra-301"}),
        ("probability=eq0.30", {"ra-301"}),
        ("probability=0.35", {"ra-35"}),
        ("probability=ne0.3", {"ra-80", "ra-35", "ra-20"}),
        ("probability=gt0.5", {"ra-80"}),
        ("probability=lt0.25", {"ra-20"}),
        ("probability=ge0.8", {"ra-80"}),
        # le0.31: below or equal to 0.31 ([0.305, 0.315))
        ("probability=le0.31", {"ra-20", "ra-31", "ra-301"}),
        # sa0.3: starting after the end of [0.25, 0.35); 0.35 is [0.345, 0.355)
        ("probability=sa0.3", {"ra-80"}),
        # sa0.2: 0.2 is [0.15, 0.25); 0.301 starts at 0.3005, 0.31 at 0.305...
        ("probability=sa0.2", {"ra-80", "ra-31", "ra-301", "ra-35"}),
        # eb0.35: ending before 0.345 (0.31 is [0.305, 0.315))
        ("probability=eb0.35", {"ra-20", "ra-31", "ra-301"}),
        # eb0.3: 0.2 is [0.15, 0.25), which ends where [0.25, 0.35) begins: before it
        ("probability=eb0.3", {"ra-20"}),
        # ap: about 10% of 0.31 either side, [0.279, 0.341] (the margin is the server's
        # choice, so no value sits near its edges)
        ("probability=ap0.31", {"ra-31", "ra-301"}),
        ("probability=0.8,0.2", {"ra-80", "ra-20"}),
    ],
)
def test_number(client: httpx.Client, query: str, expected: set[str]) -> None:
    assert search_ids(client, "RiskAssessment", query) == expected


# -- quantity (weights: 60, 99.6, 100.004, 100.2 kg, 101, 150 kg; 100.2 [lb_av]) -------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # 100 is [99.5, 100.5): 99.6, 100.004, 100.2 kg and 100.2 lb (no unit asked)
        ("value-quantity=100", {"wt-99-6", "wt-100-004", "wt-100-2", "wt-lb"}),
        # 100.00 is [99.995, 100.005): only 100.004
        ("value-quantity=100.00", {"wt-100-004"}),
        ("value-quantity=100|http://unitsofmeasure.org|kg", {"wt-99-6", "wt-100-004", "wt-100-2"}),
        # system|code: the lb value's code is [lb_av]
        ("value-quantity=100|http://unitsofmeasure.org|[lb_av]", {"wt-lb"}),
        # ||unit matches the code or the human unit ("lb")
        ("value-quantity=100||[lb_av]", {"wt-lb"}),
        ("value-quantity=100||lb", {"wt-lb"}),
        ("value-quantity=ne100", {"wt-60", "wt-101", "wt-150"}),
        ("value-quantity=gt120", {"wt-150"}),
        ("value-quantity=lt99", {"wt-60"}),
        ("value-quantity=ge101", {"wt-101", "wt-150"}),
        ("value-quantity=le100.2", {"wt-60", "wt-99-6", "wt-100-004", "wt-100-2", "wt-lb"}),
        # sa101: starting after 101.5; eb100: ending before 99.5
        ("value-quantity=sa101", {"wt-150"}),
        # 101 is [100.5, 101.5): it starts where [99.5, 100.5) ends, so after it
        ("value-quantity=sa100", {"wt-101", "wt-150"}),
        ("value-quantity=eb100", {"wt-60"}),
        # ap: about 10% of 100 either side, so [90, 110]
        ("value-quantity=ap100|http://unitsofmeasure.org|kg", {
            "wt-99-6", "wt-100-004", "wt-100-2", "wt-101"}),
        ("value-quantity=60,150", {"wt-60", "wt-150"}),
        # AND by repetition: above 99 and below 100.1
        ("value-quantity=gt99&value-quantity=lt100.1", {"wt-99-6", "wt-100-004"}),
    ],
)  # fmt: skip
def test_quantity(client: httpx.Client, query: str, expected: set[str]) -> None:
    assert search_ids(client, "Observation", f"{WEIGHT}&{query}") == expected


# -- date ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # birthdate=1980 is [1980-01-01, 1981-01-01): 1980-06-15 and the year 1980 inside
        ("birthdate=1980", {"pat-anna", "pat-bob"}),
        # the year 1980 (bob) is not contained in June 1980
        ("birthdate=1980-06", {"pat-anna"}),
        ("birthdate=1980-06-15", {"pat-anna"}),
        ("birthdate=eq1975-12-31", {"pat-carl"}),
        ("birthdate=ne1980-06", {"pat-bob", "pat-carl", "pat-dana", "pat-eve"}),
        # the range after 1980 overlaps 1981-01-01 and 2001
        ("birthdate=gt1980", {"pat-dana", "pat-eve"}),
        ("birthdate=ge1980", {"pat-anna", "pat-bob", "pat-dana", "pat-eve"}),
        # the range before 1980-06-15 overlaps bob's 1980 and carl's 1975
        ("birthdate=lt1980-06-15", {"pat-bob", "pat-carl"}),
        ("birthdate=le1980-06-15", {"pat-anna", "pat-bob", "pat-carl"}),
        # bob's 1980 starts on 1980-01-01, before 1980-06-15 ends
        ("birthdate=sa1980-06-15", {"pat-dana", "pat-eve"}),
        # bob's 1980 ends on 1980-12-31, after 1980-06-15
        ("birthdate=eb1980-06-15", {"pat-carl"}),
        # ap: 10% of the 25-odd years to now is about 2.5 years around 2001-02-03
        ("birthdate=ap2001-02-03", {"pat-eve"}),
        ("birthdate=1975-12-31,1981-01-01", {"pat-carl", "pat-dana"}),
        ("birthdate=ge1980&birthdate=lt1981", {"pat-anna", "pat-bob"}),
    ],
)
def test_date_precision_and_prefixes(client: httpx.Client, query: str, expected: set[str]) -> None:
    assert search_ids(client, "Patient", query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # 2020-01-15 is the UTC day: tz-est is 2020-01-16T04:30Z, tz-period starts the 14th
        ("date=2020-01-15", {"tz-utc", "tz-day"}),
        ("date=2020-01-16", {"tz-est"}),
        ("date=2020-01", {"tz-est", "tz-utc", "tz-day", "tz-period"}),
        ("date=2020-01-15T23:30:00-05:00", {"tz-est"}),
        ("date=2020-01-16T04:30:00Z", {"tz-est"}),
        # no zone: the server's time zone (UTC)
        ("date=2020-01-16T04:30:00", {"tz-est"}),
        # +02:00 converts: 12:00+02:00 is 10:00Z
        ("date=2020-01-15T12:00:00+02:00", {"tz-utc"}),
        ("date=2020-01-15T10:00:00Z", {"tz-utc"}),
        # the range after noon UTC overlaps tz-est and the rest of the day of tz-day
        ("date=gt2020-01-15T12:00:00Z", {"tz-est", "tz-day"}),
        # only the period starts before 2020-01-15T00:00Z
        ("date=lt2020-01-15", {"tz-period"}),
        ("date=sa2020-01-15", {"tz-est"}),
        ("date=eb2020-01-15", set()),
        ("date=eb2020-01-15T05:00:00Z", {"tz-period"}),
    ],
)
def test_date_time_zones_and_periods(client: httpx.Client, query: str, expected: set[str]) -> None:
    assert search_ids(client, "Observation", f"code=urn:cf|tz&{query}") == expected


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        # enc-bob has no end: it overlaps everything after 2021-05-01
        ("Encounter", "date=ge2022", {"enc-bob"}),
        ("Encounter", "date=lt2021", {"enc-anna"}),
        ("Encounter", "date=2020-01-15", {"enc-anna"}),
        # an open period is not contained in any finite range
        ("Encounter", "date=2021", set()),
        # the period (to 2016-06-30) ends before the range after 2016 begins
        ("Condition", "onset-date=ge2016", {"cond-htn-anna"}),
        # ...but overlaps the range after March 2016
        ("Condition", "onset-date=gt2016-03", {"cond-htn-bob", "cond-htn-anna"}),
        ("Condition", "onset-date=lt2012", {"cond-diab"}),
        # the 2015-2016 period is not inside 2015
        ("Condition", "onset-date=2015", set()),
        ("Condition", "onset-date=2010", {"cond-diab"}),
        ("Condition", "onset-date=sa2014", {"cond-htn-bob", "cond-htn-anna"}),
        # the period ends 2016-06-30, not before 2016
        ("Condition", "onset-date=eb2016", {"cond-diab"}),
    ],
)
def test_date_periods(client: httpx.Client, path: str, query: str, expected: set[str]) -> None:
    assert search_ids(client, path, query) == expected


# -- string -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # starts-with, case-insensitive, on any part of the name
        ("name=smith", {"pat-bob", "pat-carl", "pat-eve"}),
        ("family=SMITH", {"pat-bob", "pat-carl", "pat-eve"}),
        ("name=rob", {"pat-bob"}),
        # accent-insensitive both ways
        ("family=muller", {"pat-anna"}),
        ("family=MÜLLER", {"pat-anna"}),
        ("given=evelyne", {"pat-eve"}),
        ("address-city=zurich", {"pat-anna", "pat-carl"}),
        ("address=spring", {"pat-bob", "pat-eve"}),
        # starts-with, not contains
        ("family=mith", set()),
        ("family=dupont,muller", {"pat-dana", "pat-anna"}),
        ("name=smith&name=rob", {"pat-bob"}),
    ],
)
def test_string(client: httpx.Client, query: str, expected: set[str]) -> None:
    assert search_ids(client, "Patient", query) == expected


def test_string_on_other_types(client: httpx.Client) -> None:
    assert search_ids(client, "Organization", "name=acme") == {"org-acme"}
    assert search_ids(client, "Practitioner", "family=hou") == {"pr-house"}


# -- token --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("gender=male", {"pat-bob", "pat-carl"}),
        ("gender=female,male", {"pat-anna", "pat-bob", "pat-carl", "pat-eve"}),
        ("active=true", {"pat-anna", "pat-bob", "pat-eve"}),
        ("active=false", {"pat-carl"}),
        # system|code
        ("identifier=urn:mrn|A-1", {"pat-anna"}),
        # code alone: any system
        ("identifier=A-1", {"pat-anna", "pat-bob"}),
        # |code: no system
        ("identifier=|C-3", {"pat-carl"}),
        ("identifier=|A-1", set()),
        # system|: any code in that system
        ("identifier=urn:mrn|", {"pat-anna", "pat-bob", "pat-dana", "pat-eve"}),
        # escaped comma and bar inside a value
        (r"identifier=urn:mrn|D\,4", {"pat-dana"}),
        (r"identifier=urn:mrn|E\|5", {"pat-eve"}),
        (r"identifier=urn:mrn|D\,4,urn:mrn|B-2", {"pat-dana", "pat-bob"}),
        # token codes are case-sensitive here (AdministrativeGender codes are lower case)
        ("gender=MALE", set()),
    ],
)
def test_token(client: httpx.Client, query: str, expected: set[str]) -> None:
    assert search_ids(client, "Patient", query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # the blood-pressure trap: code= does not look into components
        ("code=8480-6", {"sys-carl"}),
        ("code=http://loinc.org|8480-6", {"sys-carl"}),
        ("component-code=8480-6", {"bp-anna", "bp-bob"}),
        ("combo-code=http://loinc.org|8480-6", {"sys-carl", "bp-anna", "bp-bob"}),
        ("code=http://loinc.org|85354-9&subject=Patient/pat-bob", {"bp-bob"}),
        ("code=urn:cf|ident,urn:cf|tagged", {"obs-ident", "obs-vip"}),
        # a code in another system does not match system|code
        ("code=http://snomed.info/sct|8480-6", set()),
    ],
)
def test_token_codeable_concepts(client: httpx.Client, query: str, expected: set[str]) -> None:
    assert search_ids(client, "Observation", query) == expected


# -- reference ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("subject=Patient/pat-carl", {"wt-60", "sys-carl"}),
        # a bare id: any type the parameter may target
        ("subject=pat-carl", {"wt-60", "sys-carl"}),
        ("patient=pat-carl", {"wt-60", "sys-carl"}),
        ("subject=Patient/pat-carl,Patient/pat-dana", {"wt-60", "sys-carl", "wt-lb"}),
        ("subject=Group/pat-carl", set()),
        ("subject=Patient/nobody", set()),
    ],
)
def test_reference(client: httpx.Client, query: str, expected: set[str]) -> None:
    assert search_ids(client, "Observation", query) == expected


def test_reference_absolute_url_on_this_server(client: httpx.Client, server: Server) -> None:
    # §3.1.1.4.10: a relative reference resolving to the same value as the absolute URL
    # searched for (this server's base + Patient/id) is a match
    found = search_ids(client, "Observation", f"subject={server.base}/Patient/pat-carl")
    assert found == {"wt-60", "sys-carl"}


def test_reference_other_types(client: httpx.Client) -> None:
    assert search_ids(client, "Patient", "organization=Organization/org-acme") == {
        "pat-anna",
        "pat-dana",
    }
    assert search_ids(client, "Patient", "general-practitioner=pr-house") == {"pat-anna", "pat-eve"}
    assert search_ids(client, "Organization", "partof=org-acme") == {"org-beta"}
    assert search_ids(client, "DiagnosticReport", "result=Observation/bp-bob") == {"dr-prelim"}
    assert search_ids(client, "Encounter", "participant=Practitioner/pr-house") == {"enc-anna"}


# -- uri ----------------------------------------------------------------------------


def test_uri_is_exact(client: httpx.Client) -> None:
    assert search_ids(client, "ValueSet", f"url={EXAMPLE}/ValueSet/a") == {"vs-a"}
    assert search_ids(client, "ValueSet", f"url={EXAMPLE}/ValueSet") == set()
    assert search_ids(client, "CodeSystem", f"url={EXAMPLE}/CodeSystem/x") == {"cs-x"}


# -- parameters of every resource ---------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("_id=pat-anna", {"pat-anna"}),
        ("_id=pat-anna,pat-eve,nobody", {"pat-anna", "pat-eve"}),
        ("_tag=urn:tags|vip", {"pat-anna", "pat-eve"}),
        ("_tag=urn:tags|test", {"pat-bob", "pat-eve"}),
        ("_tag=urn:tags|vip&_tag=urn:tags|test", {"pat-eve"}),
        ("_tag=vip", {"pat-anna", "pat-eve"}),
        (f"_profile={VIP_PROFILE}", {"pat-anna", "pat-eve"}),
        ("_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R", {"pat-anna"}),
        ("_security=N", {"pat-bob"}),
        (f"_source={EXAMPLE}/feed#anna", {"pat-anna"}),
        ("_lastUpdated=gt2000-01-01", ALL_PATIENTS),
        ("_lastUpdated=lt2000-01-01", set()),
    ],
)
def test_common_parameters(client: httpx.Client, query: str, expected: set[str]) -> None:
    assert search_ids(client, "Patient", query) == expected


def test_last_updated_against_the_stamped_time(client: httpx.Client) -> None:
    stamp = client.get("/Patient/pat-anna").json()["meta"]["lastUpdated"]
    # eq at the stamp's own precision contains the stamp; the range after it does not
    assert search_ids(client, "Patient", f"_id=pat-anna&_lastUpdated={stamp}") == {"pat-anna"}
    assert search_ids(client, "Patient", f"_id=pat-anna&_lastUpdated=ge{stamp}") == {"pat-anna"}
    assert search_ids(client, "Patient", f"_id=pat-anna&_lastUpdated=gt{stamp}") == set()
    assert search_ids(client, "Patient", f"_id=pat-anna&_lastUpdated=le{stamp}") == {"pat-anna"}
    assert search_ids(client, "Patient", f"_id=pat-anna&_lastUpdated=lt{stamp}") == set()


def test_empty_value_places_no_constraint(client: httpx.Client) -> None:
    assert search_ids(client, "Patient", "family=") == ALL_PATIENTS


def test_post_search_is_the_same_search(client: httpx.Client) -> None:
    r = client.post(
        "/Patient/_search",
        data={"birthdate": "ge1980", "gender": "female"},
    )
    assert r.status_code == 200, r.text
    assert match_ids(r.json()) == {"pat-anna", "pat-eve"}
    # query string and body combine (AND)
    r = client.post("/Patient/_search?gender=female", data={"family": "smith"})
    assert match_ids(r.json()) == {"pat-eve"}
