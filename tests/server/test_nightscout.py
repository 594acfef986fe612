"""The Nightscout-compatible API v1 over HTTP, with real uploaders' request shapes.

Shapes come from the uploaders' and Nightscout's public sources (cgm-remote-monitor
`lib/api/entries`, `lib/server/entries.js`, `lib/server/query.js`,
`lib/authorization`): xDrip+ posts arrays of `sgv` entries with `date`, `dateString`,
`sysTime`, `direction`, `filtered`/`unfiltered`, `rssi`, `noise`, `device`; AndroidAPS
posts single objects; Loop posts arrays with `device: loop://…`; followers read
`/api/v1/entries/sgv.json?count=N&find[date][$gte]=ms`. `api-secret` is the secret's
SHA-1 in hex, computed here with hashlib. Expected instants and values are written
out by hand from the request bodies.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.server.conftest import Server
from tests.server.launcher import run_openrecord

T0 = 1_784_361_600_000  # 2026-07-18T08:00:00Z in epoch ms
MIN5 = 300_000
NEW_YORK = ZoneInfo("America/New_York")
PATIENTS = (
    "ns-a",
    "ns-b",
    "ns-x",
    "ns-dup",
    "ns-limits",
    "ns-window",
    "ns-d",
    "ns-e2e",
    "ns-hostile",
    "ns-race",
)


def xdrip_batch() -> list[dict[str, object]]:
    """Four readings as xDrip+ uploads them (Dexcom G6, 5 minutes apart)."""
    return [
        {
            "device": "xDrip-DexcomG6",
            "date": T0 + i * MIN5,
            "dateString": f"2026-07-18T10:{i * 5:02d}:00.000+0200",
            "sysTime": f"2026-07-18T10:{i * 5:02d}:00.000+0200",
            "sgv": sgv,
            "delta": 1.5,
            "direction": "Flat",
            "type": "sgv",
            "filtered": sgv * 1000,
            "unfiltered": sgv * 1000,
            "rssi": 100,
            "noise": 1,
            "utcOffset": 120,
        }
        for i, sgv in enumerate([100, 104, 115, 95])
    ]


FOLLOWED = [120, 121, 122, 123, 124, 125, 200, 150]  # ns-b at T0 + i * 5 min


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return run_openrecord(
        ["glucose", *args, "--database", server.database],
        timeout=120,
    )


def new_secret(server: Server, patient: str) -> str:
    done = cli(server, "nightscout-secret", "--patient", patient)
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.strip().startswith("API_SECRET"))
    return line.split()[1]


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def root(server: Server) -> Iterator[httpx.Client]:
    base = server.base.removesuffix("/fhir")
    with httpx.Client(base_url=base, timeout=60) as c:
        for patient in PATIENTS:
            put = c.put(f"/fhir/Patient/{patient}", json={"resourceType": "Patient", "id": patient})
            assert put.status_code in (200, 201), put.text
        yield c


@pytest.fixture(scope="module")
def secrets(server: Server, root: httpx.Client) -> Iterator[dict[str, str]]:
    """Secrets issued in-process (the CLI itself is exercised by the revoke test)."""
    from openrecord.server.nightscout import issue_secret
    from openrecord.store import open_store

    store = open_store(server.database)
    try:
        yield {p: issue_secret(store, p) for p in PATIENTS if p != "ns-d"}
    finally:
        store.close()


@pytest.fixture(scope="module")
def loaded(root: httpx.Client, secrets: dict[str, str]) -> None:
    """ns-a holds the xDrip+ batch, ns-b the FOLLOWED series (uploads are idempotent,
    so tests on any worker may share this)."""
    auth = {"api-secret": sha1(secrets["ns-a"])}
    assert root.post("/api/v1/entries", json=xdrip_batch(), headers=auth).status_code == 200
    b = [{"type": "sgv", "sgv": v, "date": T0 + i * MIN5} for i, v in enumerate(FOLLOWED)]
    auth = {"api-secret": sha1(secrets["ns-b"])}
    assert root.post("/api/v1/entries", json=b, headers=auth).status_code == 200


def entries(
    root: httpx.Client, secret: str, path: str = "/api/v1/entries.json", /, **params: Any
) -> list[dict[str, Any]]:
    got = root.get(path, params=params, headers={"api-secret": sha1(secret)})
    assert got.status_code == 200, got.text
    body = got.json()
    assert isinstance(body, list)
    return body


def test_xdrip_upload_is_stored_and_read_back_newest_first(
    root: httpx.Client, secrets: dict[str, str]
) -> None:
    xdrip = xdrip_batch()
    posted = root.post("/api/v1/entries", json=xdrip, headers={"api-secret": sha1(secrets["ns-x"])})
    assert posted.status_code == 200, posted.text
    assert posted.headers["X-Entries-New"] == "4"
    assert [e["sgv"] for e in posted.json()] == [95, 115, 104, 100]  # newest first
    got = entries(root, secrets["ns-x"], **{"find[date][$gte]": T0, "count": 10})
    assert [(e["date"], e["sgv"], e["type"]) for e in got] == [
        (T0 + 3 * MIN5, 95, "sgv"),
        (T0 + 2 * MIN5, 115, "sgv"),
        (T0 + MIN5, 104, "sgv"),
        (T0, 100, "sgv"),
    ]
    assert got[0]["dateString"] == "2026-07-18T08:15:00.000Z"
    # slopes -4, +2.2, +0.8 mg/dL/min → xDrip+'s arrows; the first has no predecessor
    assert [e["direction"] for e in got] == ["DoubleDown", "SingleUp", "Flat", "NONE"]
    assert len({e["_id"] for e in got}) == 4


def test_duplicates_retries_and_overlaps_are_recognised(
    root: httpx.Client, secrets: dict[str, str]
) -> None:
    auth = {"api-secret": sha1(secrets["ns-dup"])}
    batch = [{"type": "sgv", "sgv": 120 + i, "date": T0 + i * MIN5} for i in range(6)]
    first = root.post("/api/v1/entries", json=batch, headers=auth)
    assert first.status_code == 200 and first.headers["X-Entries-New"] == "6"
    retry = root.post("/api/v1/entries", json=batch, headers=auth)
    assert retry.headers["X-Entries-New"] == "0"
    overlap = [*batch[3:], {"type": "sgv", "sgv": 200, "date": T0 + 6 * MIN5}]
    again = root.post("/api/v1/entries.json", json=overlap, headers=auth)
    assert again.headers["X-Entries-New"] == "1"
    twice = [{"type": "sgv", "sgv": 150, "date": T0 + 7 * MIN5}] * 2
    same = root.post("/api/v1/entries", json=twice, headers=auth)
    assert same.headers["X-Entries-Duplicate"] == "1" and same.headers["X-Entries-New"] == "1"
    got = entries(root, secrets["ns-dup"], **{"find[date][$gte]": T0, "count": 100})
    assert [e["date"] for e in got] == [T0 + i * MIN5 for i in range(7, -1, -1)]


def test_single_object_low_high_units_and_other_types(
    root: httpx.Client, secrets: dict[str, str]
) -> None:
    auth = {"api-secret": sha1(secrets["ns-limits"])}
    day = T0 + 86_400_000
    # AndroidAPS posts one object at a time
    aaps = {"device": "AndroidAPS-DexcomG6", "date": day, "sgv": 39, "type": "sgv"}
    assert root.post("/api/v1/entries", json=aaps, headers=auth).status_code == 200
    rest = [
        {"type": "sgv", "sgv": 401, "date": day + MIN5, "device": "xDrip-DexcomG7"},
        {"type": "sgv", "sgv": "LOW", "date": day + 2 * MIN5},
        {"type": "sgv", "sgv": "HIGH", "date": day + 3 * MIN5},
        {"type": "sgv", "sgv": 5.5, "units": "mmol", "date": day + 4 * MIN5},
        {"type": "sgv", "sgv": 5, "date": day + 5 * MIN5},  # Dexcom status code
        {"type": "cal", "slope": 850, "intercept": 30000, "scale": 1, "date": day},
        {"type": "mbg", "mbg": 112, "date": day + 123_000, "device": "xDrip"},
    ]
    posted = root.post("/api/v1/entries", json=rest, headers=auth)
    assert posted.status_code == 200, posted.text
    assert posted.headers["X-Entries-Ignored"] == "2"
    warning = posted.headers["Warning"]
    assert "entry 5" in warning and "status code" in warning and "calibration" in warning
    got = entries(root, secrets["ns-limits"], **{"find[date][$gte]": day, "count": 50})
    # limits come back as Dexcom's 39/401; 5.5 mmol/L * 18.0156 = 99.09 mg/dL
    assert [(e["date"], e["sgv"]) for e in got] == [
        (day + 4 * MIN5, 99),
        (day + 3 * MIN5, 401),
        (day + 2 * MIN5, 39),
        (day + MIN5, 401),
        (day, 39),
    ]
    assert got[1]["direction"] == "NOT COMPUTABLE"
    meter = root.get(
        "/fhir/Observation",
        params={"subject": "Patient/ns-limits", "code": "http://loinc.org|41653-7"},
    ).json()
    values = [e["resource"]["valueQuantity"] for e in meter.get("entry", [])]
    assert [(v["value"], v["code"]) for v in values] == [(112, "mg/dL")]
    assert meter["entry"][0]["resource"]["effectiveDateTime"] == "2026-07-19T08:02:03.000Z"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([{"type": "sgv", "sgv": "abc", "date": T0}], "entry 0: sgv 'abc'"),
        ([{"type": "sgv", "sgv": 100, "date": T0 // 1000}], "entry 0: date"),  # seconds
        ([{"type": "sgv", "sgv": 100}], "entry 0: no date"),
        ([{"type": "sgv", "sgv": 100, "dateString": "2026-07-18T10:00:00"}], "no UTC offset"),
        ([{"type": "sgv", "sgv": 900, "date": T0}], "above any CGM's range"),
        ([{"type": "sgv", "sgv": 6, "units": "furlongs", "date": T0}], "units"),
        ([{"type": "sgv", "sgv": 100, "date": T0}, 7], "entry 1: not a JSON object"),
        ([{"type": 3, "sgv": 100, "date": T0}], "type must be a string"),
        ("just text", "JSON array"),
    ],
)
def test_malformed_entries_are_refused_whole(
    root: httpx.Client, secrets: dict[str, str], body: object, message: str
) -> None:
    auth = {"api-secret": sha1(secrets["ns-a"])}
    late = T0 + 10 * 86_400_000
    good = {"type": "sgv", "sgv": 111, "date": late}
    payload = [*body, good] if isinstance(body, list) else body
    got = root.post("/api/v1/entries", json=payload, headers=auth)
    assert got.status_code == 400, got.text
    answer = got.json()
    assert answer["status"] == 400 and message in answer["description"]
    assert entries(root, secrets["ns-a"], **{"find[date][$gte]": late}) == []  # nothing stored


def test_invalid_json_empty_and_oversized_bodies(
    root: httpx.Client, secrets: dict[str, str]
) -> None:
    auth = {"api-secret": sha1(secrets["ns-a"]), "content-type": "application/json"}
    bad = root.post("/api/v1/entries", content=b"[{", headers=auth)
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["description"]
    empty = root.post("/api/v1/entries", content=b"", headers=auth)
    assert empty.status_code == 400
    huge = b"[" + b" " * (8 * 1024 * 1024) + b"]"
    assert root.post("/api/v1/entries", content=huge, headers=auth).status_code == 413


def test_authentication_as_nightscout_answers(
    server: Server, root: httpx.Client, secrets: dict[str, str]
) -> None:
    body = [{"type": "sgv", "sgv": 100, "date": T0}]
    unauthorized = {"status": 401, "message": "Unauthorized", "description": "Invalid/Missing"}
    missing = root.post("/api/v1/entries", json=body)
    assert (missing.status_code, missing.json()) == (401, unauthorized)
    wrong = root.get("/api/v1/entries.json", headers={"api-secret": sha1("not the secret")})
    assert (wrong.status_code, wrong.json()) == (401, unauthorized)
    secret = secrets["ns-a"]
    # the SHA-1 as ?secret=, the secret itself as ?token= or in the header
    assert root.get("/api/v1/entries.json", params={"secret": sha1(secret)}).status_code == 200
    assert root.get("/api/v1/entries.json", params={"token": secret}).status_code == 200
    assert root.get("/api/v1/entries.json", headers={"api-secret": secret}).status_code == 200
    upper = root.get("/api/v1/entries.json", headers={"api-secret": sha1(secret).upper()})
    assert upper.status_code == 200
    ok = root.get("/api/v1/verifyauth", headers={"api-secret": sha1(secret)}).json()
    assert ok == {
        "status": 200,
        "message": {
            "canRead": True,
            "canWrite": True,
            "isAdmin": False,
            "message": "OK",
            "rolefound": "FOUND",
            "permissions": "ROLE",
        },
    }
    denied = root.get("/api/v1/verifyauth").json()["message"]
    assert denied["message"] == "UNAUTHORIZED" and denied["canWrite"] is False
    from openrecord.store import open_store

    store = open_store(server.database)
    try:
        rows = store.query(
            "SELECT lookup, patient FROM nightscout_secret WHERE patient = ?", ["ns-a"]
        )
    finally:
        store.close()
    # neither the secret nor the SHA-1 that authenticates is stored: SHA-256 of the SHA-1
    assert rows == [(hashlib.sha256(sha1(secret).encode()).hexdigest(), "ns-a")]


def test_a_secret_reaches_only_its_patient_and_can_be_revoked(
    server: Server, root: httpx.Client, secrets: dict[str, str], loaded: None
) -> None:
    window = {"find[date][$gte]": T0, "find[date][$lt]": T0 + 86_400_000, "count": 100}
    a = {e["date"] for e in entries(root, secrets["ns-a"], **window)}
    b = {e["date"] for e in entries(root, secrets["ns-b"], **window)}
    assert a == {T0 + i * MIN5 for i in range(4)}
    assert b == {T0 + i * MIN5 for i in range(8)}
    from openrecord.server.nightscout import issue_secret
    from openrecord.store import open_store

    extra = new_secret(server, "ns-d")  # through the CLI
    store = open_store(server.database)
    try:
        other = issue_secret(store, "ns-d")
    finally:
        store.close()
    assert entries(root, extra, **window) == []
    done = cli(server, "nightscout-secret", "--patient", "ns-d", "--revoke")
    assert done.returncode == 0 and "revoked 2" in done.stdout
    assert (
        root.get("/api/v1/verifyauth", params={"token": other}).json()["message"]["canRead"]
        is False
    )
    gone = root.get("/api/v1/entries.json", headers={"api-secret": sha1(extra)})
    assert gone.status_code == 401
    unknown = cli(server, "nightscout-secret", "--patient", "no-such-patient")
    assert unknown.returncode == 1 and "no-such-patient" in unknown.stderr


def test_follower_queries(root: httpx.Client, secrets: dict[str, str], loaded: None) -> None:
    secret = secrets["ns-b"]  # T0 + 0..7 * 5 min: 120..125, 200, 150
    sgv = entries(root, secret, "/api/v1/entries/sgv.json", **{"find[date][$gte]": T0})
    assert len(sgv) == 8
    assert [e["date"] for e in sgv[:3]] == [T0 + 7 * MIN5, T0 + 6 * MIN5, T0 + 5 * MIN5]
    default = entries(root, secret, "/api/v1/entries.json", **{"find[date][$gte]": T0})
    assert len(default) == 8  # count defaults to 10
    two = entries(root, secret, **{"find[date][$gt]": T0, "find[date][$lte]": T0 + 2 * MIN5})
    assert [e["date"] for e in two] == [T0 + 2 * MIN5, T0 + MIN5]
    iso = entries(root, secret, **{"find[dateString][$gte]": "2026-07-18T08:25:00Z"})
    assert [e["sgv"] for e in iso] == [150, 200, 125]
    high = entries(root, secret, **{"find[date][$gte]": T0, "find[sgv][$gte]": 124})
    assert [e["sgv"] for e in high] == [150, 200, 125, 124]
    current = entries(root, secret, "/api/v1/entries/current.json", **{"find[date][$gte]": T0})
    assert [e["sgv"] for e in current] == [150]
    auth = {"api-secret": sha1(secret)}
    fresh = root.get("/api/v1/entries/current.json", params={"find[date][$gte]": T0}, headers=auth)
    newest = "Sat, 18 Jul 2026 08:35:00 GMT"  # T0 + 35 min, the FOLLOWED series' last
    assert fresh.headers["Last-Modified"] == newest
    for since, status in ((newest, 304), ("Sat, 18 Jul 2026 08:34:59 GMT", 200)):
        again = root.get(
            "/api/v1/entries/current.json",
            params={"find[date][$gte]": T0},
            headers={**auth, "If-Modified-Since": since},
        )
        assert again.status_code == status
    assert entries(root, secret, "/api/v1/entries/mbg.json", **{"find[date][$gte]": T0}) == []
    bad = root.get(
        "/api/v1/entries.json",
        params={"find[date][$regex]": "x"},
        headers={"api-secret": sha1(secret)},
    )
    assert bad.status_code == 400 and "unsupported filter" in bad.json()["description"]
    count = root.get(
        "/api/v1/entries.json", params={"count": "-1"}, headers={"api-secret": sha1(secret)}
    )
    assert count.status_code == 400


def test_without_a_date_filter_the_window_is_four_days(
    root: httpx.Client, secrets: dict[str, str]
) -> None:
    now = int(time.time() * 1000) // MIN5 * MIN5
    auth = {"api-secret": sha1(secrets["ns-window"])}
    recent = [{"type": "sgv", "sgv": 140, "date": now - 3_600_000}]
    old = [{"type": "sgv", "sgv": 141, "date": now - 5 * 86_400_000}]
    assert root.post("/api/v1/entries", json=recent + old, headers=auth).status_code == 200
    got = entries(root, secrets["ns-window"])
    assert [(e["date"], e["sgv"]) for e in got] == [(now - 3_600_000, 140)]


def test_status_json_is_what_uploaders_probe(root: httpx.Client) -> None:
    status = root.get("/api/v1/status.json").json()
    assert status["status"] == "ok" and status["apiEnabled"] is True
    assert status["settings"]["units"] == "mg/dl"
    assert abs(status["serverTimeEpoch"] - time.time() * 1000) < 60_000


# -- CLI imports across daylight-saving changes, read back through the API --------------


def clarity_rows(start_utc: datetime, n: int) -> list[str]:
    """`n` Clarity EGV rows 5 minutes apart from `start_utc`, written in New York wall
    time as the receiver does: through the fall-back night the repeated hour appears
    twice, in recorded order. The value depends on the instant only, so overlapping
    exports agree."""
    rows = []
    for i in range(n):
        moment = start_utc + timedelta(minutes=5 * i)
        wall = moment.astimezone(NEW_YORK).replace(tzinfo=None).isoformat()
        value = 100 + int(moment.timestamp()) // 300 % 7
        rows.append(f'"{i + 1}","{wall}","EGV","","","","G7","{value}","","","","","",""')
    return rows


CLARITY_HEADER = (
    '"Index","Timestamp (YYYY-MM-DDThh:mm:ss)","Event Type","Event Subtype","Patient Info",'
    '"Device Info","Source Device ID","Glucose Value (mg/dL)","Insulin Value (u)",'
    '"Carb Value (grams)","Duration (hh:mm:ss)","Glucose Rate of Change (mg/dL/min)",'
    '"Transmitter Time (Long Integer)","Transmitter ID"'
)


def test_cli_imports_overlapping_exports_across_fall_back(
    server: Server, root: httpx.Client, secrets: dict[str, str], tmp_path: Path
) -> None:
    # 2026-11-01 America/New_York: 02:00 EDT → 01:00 EST. Export 1 covers 00:00-04:00
    # local (5 hours of instants, 60 readings), export 2 overlaps its last hour and goes
    # on; 00:00 EDT = 04:00Z, so the instants are exactly 04:00Z + 5 min steps.
    start_utc = datetime(2026, 11, 1, 4, tzinfo=UTC)  # 00:00 EDT
    one = clarity_rows(start_utc, 60)
    two = clarity_rows(datetime(2026, 11, 1, 8, tzinfo=UTC), 24)  # from 03:00 EST
    assert one[12].split(",")[1] == '"2026-11-01T01:00:00"'  # first 01:00 (EDT)
    assert one[24].split(",")[1] == '"2026-11-01T01:00:00"'  # again (EST)
    (tmp_path / "one.csv").write_text("\n".join([CLARITY_HEADER, *one]) + "\n")
    (tmp_path / "two.csv").write_text("\n".join([CLARITY_HEADER, *two]) + "\n")
    done = cli(
        server,
        "import",
        "--patient",
        "ns-e2e",
        "--timezone",
        "America/New_York",
        str(tmp_path / "one.csv"),
        str(tmp_path / "two.csv"),
    )
    assert done.returncode == 0, done.stderr
    start = int(start_utc.timestamp() * 1000)
    got = entries(root, secrets["ns-e2e"], **{"find[date][$gte]": start, "count": 1000})
    dates = sorted(e["date"] for e in got)
    # 00:00 EDT .. 03:55 EST is 5 hours = 60 readings; export 2 adds 03:00-04:55 EST,
    # whose first hour overlaps: 60 + 12 new readings, no hour lost or doubled
    assert dates == [start + i * MIN5 for i in range(72)]


def test_uploads_need_no_fhir_token_on_a_server_with_authorization(
    server: Server, tmp_path: Path
) -> None:
    """With the authorization server on, the FHIR API wants a token; the Nightscout API
    authenticates by its secret alone and still reaches only that patient's data."""
    from openrecord.server.nightscout import issue_secret
    from openrecord.service.context import SecurityContext
    from openrecord.service.records import RecordService
    from openrecord.store import open_store
    from tests.server.conftest import running_server

    with running_server(server.backend, tmp_path, authorized=True) as guarded:
        store = open_store(guarded.database)
        try:
            records = RecordService(store)
            operator = SecurityContext.open(purpose="test setup")
            records.update(
                operator, "Patient", "ns-auth", {"resourceType": "Patient", "id": "ns-auth"}
            )
            secret = issue_secret(store, "ns-auth")
        finally:
            store.close()
        root = guarded.base.removesuffix("/fhir")
        auth = {"api-secret": sha1(secret)}
        body = [
            {"type": "sgv", "sgv": 133, "date": T0},
            {"type": "sgv", "sgv": 39, "date": T0 + MIN5},
        ]
        with httpx.Client(base_url=root, timeout=60) as c:
            assert c.get("/fhir/Observation").status_code == 401
            posted = c.post("/api/v1/entries", json=body, headers=auth)
            assert posted.status_code == 200, posted.text
            got = c.get("/api/v1/entries.json", params={"find[date][$gte]": T0}, headers=auth)
            assert [(e["date"], e["sgv"]) for e in got.json()] == [(T0 + MIN5, 39), (T0, 133)]
            assert c.post("/api/v1/entries", json=body).status_code == 401


def test_hostile_types_and_sgv_filters_on_limits(
    root: httpx.Client, secrets: dict[str, str]
) -> None:
    auth = {"api-secret": sha1(secrets["ns-hostile"])}
    weird = [{"type": "\u00fc\u2603\n" + "x" * 10_000, "date": T0}]
    posted = root.post("/api/v1/entries", json=weird, headers=auth)
    assert posted.status_code == 200 and posted.json() == []
    assert posted.headers["X-Entries-Ignored"] == "1"
    assert len(posted.headers["Warning"]) < 600 and "\\xfc" in posted.headers["Warning"]
    day = T0 + 2 * 86_400_000
    body = [{"type": "sgv", "sgv": 39, "date": day}, {"type": "sgv", "sgv": 45, "date": day + MIN5}]
    assert root.post("/api/v1/entries", json=body, headers=auth).status_code == 200
    low = entries(root, secrets["ns-hostile"], **{"find[date][$gte]": day, "find[sgv][$lte]": 39})
    assert [(e["date"], e["sgv"]) for e in low] == [(day, 39)]  # the limit as answered


def test_cli_imports_a_libreview_spring_forward_day(
    server: Server, root: httpx.Client, secrets: dict[str, str], tmp_path: Path
) -> None:
    # 2026-03-08 America/New_York: 02:00 EST → 03:00 EDT. Historic readings every 15
    # minutes from 00:00 EST (05:00Z) for the 23 real hours of the local day.
    start_utc = datetime(2026, 3, 8, 5, tzinfo=UTC)
    lines = [
        "Glucose Data,Generated on,03-09-2026 10:00 AM UTC,Generated by,Test",
        "Device,Serial Number,Device Timestamp,Record Type,Historic Glucose mg/dL,"
        "Scan Glucose mg/dL,Non-numeric Rapid-Acting Insulin,Rapid-Acting Insulin (units),"
        "Non-numeric Food,Carbohydrates (grams),Carbohydrates (servings),"
        "Non-numeric Long-Acting Insulin,Long-Acting Insulin (units),Notes,"
        "Strip Glucose mg/dL,Ketone mmol/L,Meal Insulin (units),Correction Insulin (units),"
        "User Change Insulin (units)",
    ]
    for i in range(23 * 4):
        wall = (start_utc + timedelta(minutes=15 * i)).astimezone(NEW_YORK)
        stamp = wall.strftime("%m-%d-%Y %I:%M %p")
        lines.append(f"FreeStyle Libre 3,0A1B,{stamp},0,{100 + i % 9},,,,,,,,,,,,,,")
    assert not any(" 02:" in line and "AM" in line for line in lines[2:])  # the gap
    path = tmp_path / "libreview.csv"
    path.write_text("\n".join(lines) + "\n")
    done = cli(server, "import", "--patient", "ns-e2e", "--timezone", "America/New_York", str(path))
    assert done.returncode == 0, done.stderr
    first = int(start_utc.timestamp() * 1000)
    got = entries(
        root,
        secrets["ns-e2e"],
        **{"find[date][$gte]": first, "find[date][$lt]": first + 86_400_000, "count": 500},
    )
    assert sorted((e["date"], e["sgv"]) for e in got) == [
        (first + i * 900_000, 100 + i % 9) for i in range(92)
    ]


def test_concurrent_overlapping_uploads_store_each_instant_once(
    root: httpx.Client, secrets: dict[str, str]
) -> None:
    """Four uploaders at once (a phone retrying while a backfill runs), each batch
    overlapping the next by half: every instant once, the union of the batches."""
    from concurrent.futures import ThreadPoolExecutor

    auth = {"api-secret": sha1(secrets["ns-race"])}
    batches = [
        [{"type": "sgv", "sgv": 100 + (k + i) % 50, "date": T0 + (k + i) * MIN5} for i in range(48)]
        for k in range(0, 96, 24)
    ]

    def post(batch: list[dict[str, Any]]) -> int:
        with httpx.Client(base_url=str(root.base_url), timeout=120) as c:
            return c.post("/api/v1/entries", json=batch, headers=auth).status_code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(post, batches)) == [200] * 4
    got = entries(root, secrets["ns-race"], **{"find[date][$gte]": T0, "count": 1000})
    assert sorted((e["date"], e["sgv"]) for e in got) == [
        (T0 + j * MIN5, 100 + j % 50) for j in range(72 + 48)
    ]
