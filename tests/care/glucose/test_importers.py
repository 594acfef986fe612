"""CGM export parsing: the fixtures in tests/care/data/ follow the vendors' published layouts.

Expected instants are worked out by hand from each fixture's local times and the
zone's offsets (America/Chicago CDT = UTC-5, CST = UTC-6 after 2026-11-01 02:00;
America/New_York EST = UTC-5, EDT = UTC-4 from 2026-03-08 02:00; Europe/Berlin
CEST = UTC+2, CET = UTC+1 after 2026-10-25 03:00).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from openrecord.care.glucose.importers import (
    CLARITY,
    LIBREVIEW,
    NIGHTSCOUT,
    RESEARCH,
    GlucoseImportError,
    detect_format,
    parse_export,
)
from openrecord.care.glucose.readings import Limit, Reading

DATA = Path(__file__).parents[1] / "data"


def _read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _triples(readings: list[Reading]) -> list[tuple[datetime, float, Limit | None]]:
    return [(r.time, round(r.mg_dl, 4), r.limit) for r in readings]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("clarity_mgdl.csv", CLARITY),
        ("clarity_mmol.csv", CLARITY),
        ("libreview_us.csv", LIBREVIEW),
        ("libreview_eu_mmol.csv", LIBREVIEW),
        ("nightscout_entries.json", NIGHTSCOUT),
        ("research_long.csv", RESEARCH),
    ],
)
def test_format_is_detected_from_the_content(name: str, kind: str) -> None:
    assert detect_format(_read(name).decode("utf-8-sig")) == kind


def test_unknown_content_is_refused() -> None:
    with pytest.raises(GlucoseImportError):
        parse_export(b"time,glucose\n2026-01-01 00:00,100\n")


def test_local_time_exports_require_a_zone() -> None:
    with pytest.raises(GlucoseImportError, match="time zone"):
        parse_export(_read("clarity_mgdl.csv"))
    with pytest.raises(GlucoseImportError, match="time zone"):
        parse_export(_read("libreview_us.csv"))


def test_clarity_low_high_duplicates_and_the_fall_back_hour() -> None:
    result = parse_export(_read("clarity_mgdl.csv"), zone="America/Chicago")
    assert result.format == CLARITY
    assert result.unit == "mg/dL"
    assert _triples(result.readings) == [
        (_utc("2026-10-31T13:00:00"), 100.0, None),
        (_utc("2026-10-31T13:05:00"), 40.0, Limit.LOW),  # "Low": Dexcom floor
        (_utc("2026-10-31T13:10:00"), 400.0, Limit.HIGH),  # "High": Dexcom ceiling
        (_utc("2026-10-31T13:15:00"), 180.0, None),
        (_utc("2026-11-01T05:57:00"), 101.0, None),  # 00:57 CDT
        (_utc("2026-11-01T06:27:00"), 102.0, None),  # 01:27 CDT (first 01:xx)
        (_utc("2026-11-01T06:57:00"), 103.0, None),  # 01:57 CDT
        (_utc("2026-11-01T07:02:00"), 104.0, None),  # 01:02 CST (repeated hour)
        (_utc("2026-11-01T07:32:00"), 105.0, None),  # 01:32 CST
        (_utc("2026-11-01T08:02:00"), 106.0, None),  # 02:02 CST
    ]
    assert result.duplicates == 1
    assert result.other_rows == 6  # FirstName, LastName, Device, 2 Alerts, 1 Calibration
    assert result.skipped == []


def test_clarity_mmol_export_is_converted_with_the_issue_factor() -> None:
    result = parse_export(_read("clarity_mmol.csv"), zone="Europe/London")
    assert result.unit == "mmol/L"
    assert _triples(result.readings) == [
        (_utc("2026-01-10T09:00:00"), round(5.5 * 18.0156, 4), None),
        (_utc("2026-01-10T09:05:00"), 40.0, Limit.LOW),
        (_utc("2026-01-10T09:10:00"), round(10.0 * 18.0156, 4), None),
    ]


def test_libreview_us_month_first_am_pm_and_the_spring_forward_gap() -> None:
    result = parse_export(_read("libreview_us.csv"), zone="America/New_York")
    assert result.format == LIBREVIEW
    assert _triples(result.readings) == [
        (_utc("2026-03-07T05:15:00"), 95.0, None),  # 12:15 AM EST
        (_utc("2026-03-07T17:30:00"), 40.0, Limit.LOW),  # 12:30 PM; 40 is the floor
        (_utc("2026-03-08T06:45:00"), 150.0, None),  # 01:45 AM EST
        (_utc("2026-03-08T07:00:00"), 152.0, None),  # 03:00 AM EDT
    ]
    assert [(s.line, "daylight-saving gap" in s.reason) for s in result.skipped] == [(6, True)]
    assert result.other_rows == 2  # one scan, one event row


def test_libreview_day_first_mmol_and_the_fall_back_hour() -> None:
    result = parse_export(_read("libreview_eu_mmol.csv"), zone="Europe/Berlin")
    assert result.unit == "mmol/L"
    k = 18.0156
    assert _triples(result.readings) == [
        (_utc("2026-10-24T23:50:00"), round(5.0 * k, 4), None),  # 01:50 CEST
        (_utc("2026-10-25T00:20:00"), round(2.2 * k, 4), Limit.LOW),  # 02:20 CEST, floor
        (_utc("2026-10-25T00:50:00"), round(10.0 * k, 4), None),  # 02:50 CEST
        (_utc("2026-10-25T01:05:00"), round(10.1 * k, 4), None),  # 02:05 CET
        (_utc("2026-10-25T01:35:00"), round(3.0 * k, 4), None),  # 02:35 CET
        (_utc("2026-10-25T02:05:00"), round(13.9 * k, 4), None),  # 03:05 CET
    ]


def test_nightscout_entries() -> None:
    result = parse_export(_read("nightscout_entries.json"))
    assert result.format == NIGHTSCOUT
    assert _triples(result.readings) == [
        (_utc("2026-07-18T08:00:00"), 118.0, None),
        (_utc("2026-07-18T08:05:00"), 40.0, Limit.LOW),  # sgv 39 = Dexcom LOW
        (_utc("2026-07-18T08:10:00"), 400.0, Limit.HIGH),  # sgv 401 = Dexcom HIGH
        (_utc("2026-07-18T08:20:00"), 130.0, None),  # dateString only
        (_utc("2026-07-18T08:25:00"), 142.0, None),  # no type: sgv by default
    ]
    assert result.duplicates == 1
    assert result.other_rows == 1  # the mbg entry
    assert [(s.line, "status code" in s.reason) for s in result.skipped] == [(3, True)]


def test_research_long_format_by_subject() -> None:
    result = parse_export(_read("research_long.csv"))
    assert result.format == RESEARCH
    assert {k: _triples(v) for k, v in result.series.items()} == {
        "subject1": [
            (_utc("2026-02-01T00:00:00"), 100.5, None),
            (_utc("2026-02-01T00:05:00"), 110.25, None),
        ],
        "subject2": [
            (_utc("2026-02-01T00:00:00"), 250.75, None),
            (_utc("2026-02-01T00:05:00"), 52.0, None),
        ],
    }
    assert result.duplicates == 1
    assert [s.line for s in result.skipped] == [5]  # the NA value
    with pytest.raises(GlucoseImportError):
        _ = result.readings  # two subjects: no single series


def test_research_naive_times_take_the_zone() -> None:
    text = "id,time,gl\na,2026-02-01 00:00:00,100\n"
    result = parse_export(text, zone="Asia/Tokyo")
    assert result.readings[0].time == _utc("2026-01-31T15:00:00")


def test_same_instant_different_value_keeps_the_first_row() -> None:
    text = "id,time,gl\na,2026-02-01 00:00:00,100\na,2026-02-01 00:00:00,90\n"
    result = parse_export(text)
    assert [r.mg_dl for r in result.readings] == [100.0]
    assert result.duplicates == 0
    assert [s.line for s in result.skipped] == [3]


def test_simglucose_long_file_imports_every_row() -> None:
    from tests.shared_data import require_shared

    path = require_shared("cgm", "simglucose", "simglucose_3patients_14d_cgm_long.csv")
    lines = path.read_text().splitlines()[1:]
    result = parse_export(path.read_bytes())
    assert sorted(result.series) == sorted({line.split(",")[0] for line in lines})
    assert sum(len(v) for v in result.series.values()) + result.duplicates == len(lines)
    assert result.skipped == []


# -- daylight-saving days, whole: no hour lost or doubled --------------------------------
# The rows are written the way the devices record them: every 5 (Clarity) or 15
# (LibreView historic) minutes of real time, stamped with the local wall clock. The
# expected instants are the real-time steps themselves, counted here from UTC.


def _walls(zone: str, start_utc: datetime, step_minutes: int, n: int) -> list[datetime]:
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(zone)
    return [
        (start_utc + timedelta(minutes=step_minutes * i)).astimezone(tz).replace(tzinfo=None)
        for i in range(n)
    ]


def test_clarity_fall_back_day_has_25_hours_of_readings() -> None:
    # 2026-11-01 America/Chicago: 00:00 CDT = 05:00Z; the local day lasts 25 hours.
    start = _utc("2026-11-01T05:00:00")
    walls = _walls("America/Chicago", start, 5, 25 * 12)
    assert len({w for w in walls}) == 24 * 12  # one hour of wall times occurs twice
    header = _read("clarity_mgdl.csv").decode("utf-8-sig").splitlines()[0]
    rows = [
        f'"{i}","{w.isoformat()}","EGV","","","","G7","{100 + i % 50}","","","","","",""'
        for i, w in enumerate(walls)
    ]
    result = parse_export("\n".join([header, *rows]), zone="America/Chicago")
    times = [r.time_us for r in result.readings]
    assert times == [int(start.timestamp() * 1e6) + i * 300_000_000 for i in range(300)]
    assert [r.mg_dl for r in result.readings] == [100 + i % 50 for i in range(300)]
    assert result.skipped == [] and result.duplicates == 0


def test_libreview_spring_forward_day_has_23_hours_of_readings() -> None:
    # 2026-03-08 America/New_York: 00:00 EST = 05:00Z; 02:00-02:59 does not exist.
    start = _utc("2026-03-08T05:00:00")
    walls = _walls("America/New_York", start, 15, 23 * 4)
    assert not any(w.hour == 2 for w in walls)
    head = _read("libreview_us.csv").decode().splitlines()[:2]
    rows = [
        f"FreeStyle Libre 3,0A1B,{w.strftime('%m-%d-%Y %I:%M %p')},0,{90 + i},,,,,,,,,,,,,,"
        for i, w in enumerate(walls)
    ]
    result = parse_export("\n".join([*head, *rows]), zone="America/New_York")
    times = [r.time_us for r in result.readings]
    assert times == [int(start.timestamp() * 1e6) + i * 900_000_000 for i in range(92)]
    assert result.skipped == []


def test_overlapping_exports_concatenate_without_duplicates() -> None:
    first = parse_export(_read("clarity_mgdl.csv"), zone="America/Chicago").readings
    again = parse_export(_read("clarity_mgdl.csv"), zone="America/Chicago").readings
    merged = {r.time_us: r for r in [*first, *again]}
    assert sorted(merged) == [r.time_us for r in first]


def test_nightscout_words_units_and_malformed_entries_in_a_file() -> None:
    text = (
        '[{"type": "sgv", "sgv": "LOW", "date": 1784361600000},'
        ' {"type": "sgv", "sgv": "High", "date": 1784361900000},'
        ' {"type": "sgv", "sgv": 7.2, "units": "mmol", "date": 1784362200000},'
        ' {"type": "sgv", "sgv": 100, "date": 1784362},'
        ' {"type": "cal", "slope": 1, "date": 1784362200000}]'
    )
    result = parse_export(text)
    assert _triples(result.readings) == [
        (_utc("2026-07-18T08:00:00"), 40.0, Limit.LOW),
        (_utc("2026-07-18T08:05:00"), 400.0, Limit.HIGH),
        (_utc("2026-07-18T08:10:00"), round(7.2 * 18.0156, 4), None),
    ]
    assert [(s.line, "date" in s.reason) for s in result.skipped] == [(3, True)]
    assert result.other_rows == 1


def test_libreview_hi_lo_words_are_the_sensor_limits() -> None:
    head = _read("libreview_us.csv").decode().splitlines()[:2]
    rows = [
        "FreeStyle Libre 2,0A1B,06-01-2026 08:00 AM,0,HI,,,,,,,,,,,,,,",
        "FreeStyle Libre 2,0A1B,06-01-2026 08:15 AM,0,LO,,,,,,,,,,,,,,",
        "FreeStyle Libre 2,0A1B,06-01-2026 08:30 AM,0,500,,,,,,,,,,,,,,",
    ]
    result = parse_export("\n".join([*head, *rows]), zone="America/New_York")
    assert _triples(result.readings) == [
        (_utc("2026-06-01T12:00:00"), 500.0, Limit.HIGH),  # EDT = UTC-4
        (_utc("2026-06-01T12:15:00"), 40.0, Limit.LOW),
        (_utc("2026-06-01T12:30:00"), 500.0, Limit.HIGH),  # the ceiling value itself
    ]
