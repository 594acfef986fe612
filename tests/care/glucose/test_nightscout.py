"""Nightscout entries ↔ readings, the pure rules (care/glucose/nightscout.py).

Expected values are written from Nightscout's documented behaviour (query.js: `find`
bounds in epoch ms, 4-day default window, count 10) and xDrip+'s arrow thresholds
(mg/dL per minute: -3.5, -2, -1, 1, 2, 3.5), not from the module's output.
"""

from __future__ import annotations

import hashlib
import re

import pytest

from openrecord.care.glucose.nightscout import (
    DEFAULT_WINDOW_US,
    NightscoutError,
    direction,
    entry_id,
    lookup_key,
    new_secret,
    parse_entries,
    parse_entries_query,
    secret_sha1,
)
from openrecord.care.glucose.readings import Limit, Reading

T0 = 1_784_361_600_000


def test_the_secret_hashes_clients_send_and_the_server_keeps() -> None:
    secret = new_secret()
    assert len(secret) >= 12 and secret != new_secret()
    assert secret_sha1(secret) == hashlib.sha1(secret.encode()).hexdigest()
    stored = hashlib.sha256(hashlib.sha1(secret.encode()).hexdigest().encode()).hexdigest()
    assert lookup_key(secret_sha1(secret).upper()) == stored


def test_upload_sorting_last_entry_of_an_instant_wins() -> None:
    parsed = parse_entries(
        [
            {"type": "sgv", "sgv": 100, "date": T0},
            {"sgv": 110, "date": T0 + 300_000},  # no type, but an sgv: a sensor reading
            {"type": "sgv", "sgv": 120, "date": T0},  # the same instant again
            {"type": "sgv", "sgv": "39", "date": T0 + 600_000},
            {"type": "mbg", "mbg": 95, "date": T0 + 1},
            {"type": "sgv", "sgv": 10, "date": T0 + 900_000},  # status code
            {"type": "treatment", "date": T0},
            {"type": "sgv", "sgv": 100, "dateString": "2026-07-18T10:20:00+02:00"},
        ]
    )
    assert [(r.time_us, r.mg_dl, r.limit) for r in parsed.sgv] == [
        (T0 * 1000, 120.0, None),
        ((T0 + 300_000) * 1000, 110.0, None),
        ((T0 + 600_000) * 1000, 40.0, Limit.LOW),
        ((T0 + 1_200_000) * 1000, 100.0, None),
    ]
    assert [(r.time_us, r.mg_dl) for r in parsed.mbg] == [((T0 + 1) * 1000, 95.0)]
    assert parsed.duplicates == 1
    assert [p.index for p in parsed.ignored] == [5, 6]
    assert parsed.invalid == []


def test_a_body_that_is_no_array_or_object_is_refused() -> None:
    with pytest.raises(NightscoutError):
        parse_entries(42)


def test_query_bounds_follow_the_mongo_operators() -> None:
    now = T0 * 1000
    q = parse_entries_query(
        [("find[date][$gt]", str(T0)), ("find[date][$lte]", str(T0 + 600_000)), ("count", "5")],
        now,
    )
    assert (q.start_us, q.end_us, q.count) == (T0 * 1000 + 1, (T0 + 600_000) * 1000 + 1, 5)
    exact = parse_entries_query([("find[date]", str(T0))], now)
    assert (exact.start_us, exact.end_us) == (T0 * 1000, T0 * 1000 + 1)
    iso = parse_entries_query([("find[dateString][$gte]", "2026-07-18T10:00:00 02:00")], now)
    assert iso.start_us == T0 * 1000  # an unescaped "+" arrives as a space
    default = parse_entries_query([], now)
    assert (default.start_us, default.count) == (now - DEFAULT_WINDOW_US, 10)
    assert DEFAULT_WINDOW_US == 4 * 24 * 3600 * 10**6
    assert parse_entries_query([("find[type]", "mbg")], now).type == "mbg"
    with pytest.raises(NightscoutError):
        parse_entries_query([("find[date][$gte]", "1784361600")], now)  # seconds
    with pytest.raises(NightscoutError):
        parse_entries_query([("find[device]", "xDrip")], now)


@pytest.mark.parametrize(
    ("delta", "arrow"),
    [
        (-17.5, "DoubleDown"),  # -3.5 mg/dL/min over 5 minutes
        (-17.4, "SingleDown"),
        (-10.0, "SingleDown"),
        (-9.9, "FortyFiveDown"),
        (-5.0, "FortyFiveDown"),
        (-4.9, "Flat"),
        (5.0, "Flat"),
        (5.1, "FortyFiveUp"),
        (10.0, "FortyFiveUp"),
        (10.1, "SingleUp"),
        (17.5, "SingleUp"),
        (17.6, "DoubleUp"),
    ],
)
def test_direction_uses_xdrip_thresholds(delta: float, arrow: str) -> None:
    previous = Reading(T0 * 1000, 150.0)
    assert direction(Reading((T0 + 300_000) * 1000, 150.0 + delta), previous) == arrow


def test_direction_needs_a_recent_numeric_predecessor() -> None:
    previous = Reading(T0 * 1000, 150.0)
    assert direction(Reading((T0 + 16 * 60_000) * 1000, 150.0), previous) == "NONE"
    assert direction(Reading((T0 + 300_000) * 1000, 150.0), None) == "NONE"
    low = Reading((T0 + 300_000) * 1000, 40.0, Limit.LOW)
    assert direction(low, previous) == "NOT COMPUTABLE"


def test_entry_ids_look_like_object_ids_and_differ_by_patient() -> None:
    a, b = entry_id("p1", T0 * 1000), entry_id("p2", T0 * 1000)
    assert re.fullmatch(r"[0-9a-f]{24}", a) and a != b and a == entry_id("p1", T0 * 1000)
