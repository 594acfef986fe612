"""`openrecord glucose import` and `Patient/[id]/$cgm-summary` over HTTP, on each backend.

One simglucose patient's 14 days (id,time,gl CSV) is imported with the CLI into the
server's database; every `$cgm-summary` parameter is compared, to 0.1 %, with a
calculation written here from the published formulas over the CSV itself:
- ranges (Battelino et al., Diabetes Care 2019;42:1593): <54, 54-69, 70-180, 181-250,
  >250 mg/dL and 70-140, on whole mg/dL; % of readings;
- SD the sample SD, CV = 100 SD / mean; GMI (Bergenstal 2018) = 3.31 + 0.02392 mean;
- % active (Battelino 2019): 5-minute slots of the period holding a reading;
- LBGI/HBGI (Kovatchev 1997): f = 1.509 (ln(BG)^1.084 - 5.381), r = 10 f², by sign of f;
- GRI (Klonoff 2023): 3.0 VLow + 2.4 Low + 1.6 VHigh + 0.8 High, at most 100;
- MAGE (Service 1970): mean height of the excursions between turning points that
  exceed 1 SD; a turning point counts once glucose has moved more than 1 SD back from it.
"""

from __future__ import annotations

import csv
import itertools
import math
import statistics
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import Server
from tests.server.launcher import run_openrecord
from tests.shared_data import require_shared

PATIENT = "cgm-adolescent003"
SUBJECT = "adolescent003"
START, END = "2024-01-01", "2024-01-15"  # 14 days, [start, end) in UTC (the server's zone)


def simglucose_file(folder: Path) -> Path:
    """The one patient's rows of the shared long-format CSV, as a file of its own."""
    source = require_shared("cgm", "simglucose", "simglucose_3patients_14d_cgm_long.csv")
    with source.open() as f:
        rows = [row for row in csv.reader(f)]
    out = folder / "adolescent003.csv"
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(rows[0])
        writer.writerows(r for r in rows[1:] if r[0] == SUBJECT)
    return out


def glucose_import(
    server: Server, path: Path, patient: str = PATIENT
) -> subprocess.CompletedProcess[str]:
    return run_openrecord(
        [
            "glucose",
            "import",
            "--database",
            server.database,
            "--patient",
            patient,
            str(path),
        ],
        timeout=600,
    )


@pytest.fixture(scope="module")
def csv_file(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = simglucose_file(tmp_path_factory.mktemp("cgm"))
    with httpx.Client(base_url=server.base, timeout=60) as c:
        answer = c.put(f"/Patient/{PATIENT}", json={"resourceType": "Patient", "id": PATIENT})
        assert answer.status_code in (200, 201), answer.text
    done = glucose_import(server, path)
    assert done.returncode == 0, done.stderr
    assert "4,033 readings" in done.stdout and "(4,033 new)" in done.stdout, done.stdout
    yield path


def csv_values(path: Path) -> list[float]:
    """mg/dL values of the rows with START ≤ time < END, in time order."""
    lo, hi = datetime(2024, 1, 1), datetime(2024, 1, 15)
    with path.open() as f:
        rows = [(datetime.fromisoformat(r["time"]), float(r["gl"])) for r in csv.DictReader(f)]
    return [v for t, v in sorted(rows) if lo <= t < hi]


def expected_mage(values: list[float], sd: float) -> float:
    turning: list[float] = []  # confirmed turning points, then the last extreme
    lowest = highest = values[0]
    i = 1
    while i < len(values) and not turning:  # the first excursion > SD sets the direction
        v = values[i]
        lowest, highest = min(lowest, v), max(highest, v)
        if v - lowest > sd:
            turning, rising, extreme = [lowest], True, v
        elif highest - v > sd:
            turning, rising, extreme = [highest], False, v
        i += 1
    if not turning:
        return math.nan
    for v in values[i:]:
        if (v > extreme) == rising and v != extreme:
            extreme = v
        elif abs(extreme - v) > sd:
            turning.append(extreme)
            rising, extreme = not rising, v
    heights = [abs(b - a) for a, b in itertools.pairwise(turning)]
    if abs(extreme - turning[-1]) > sd:
        heights.append(abs(extreme - turning[-1]))
    return sum(heights) / len(heights)


def expected_parameters(path: Path) -> dict[str, float]:
    values = csv_values(path)
    n = len(values)
    mean = sum(values) / n
    sd = statistics.stdev(values)
    whole = [math.floor(v + 0.5) for v in values]
    pct = {
        "time-very-low": 100 * sum(w < 54 for w in whole) / n,
        "time-low": 100 * sum(54 <= w <= 69 for w in whole) / n,
        "time-in-range": 100 * sum(70 <= w <= 180 for w in whole) / n,
        "time-high": 100 * sum(181 <= w <= 250 for w in whole) / n,
        "time-very-high": 100 * sum(w > 250 for w in whole) / n,
        "time-tight-range": 100 * sum(70 <= w <= 140 for w in whole) / n,
    }
    f = [1.509 * (math.log(v) ** 1.084 - 5.381) for v in values]
    lbgi = sum(10 * x * x for x in f if x < 0) / n
    hbgi = sum(10 * x * x for x in f if x > 0) / n
    gri = min(
        100.0,
        3.0 * pct["time-very-low"]
        + 2.4 * pct["time-low"]
        + 1.6 * pct["time-very-high"]
        + 0.8 * pct["time-high"],
    )
    lo = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    with path.open() as fh:
        times = [datetime.fromisoformat(r["time"]).replace(tzinfo=UTC) for r in csv.DictReader(fh)]
    slots = {
        int((t.timestamp() - lo) // 300) for t in times if 0 <= t.timestamp() - lo < 14 * 86400
    }
    return {
        "mean": mean,
        "sd": sd,
        "cv": 100 * sd / mean,
        "gmi": 3.31 + 0.02392 * mean,
        **pct,
        "active-percent": 100 * len(slots) / (14 * 288),
        "days": 14.0,
        "lbgi": lbgi,
        "hbgi": hbgi,
        "gri": gri,
        "mage": expected_mage(values, sd),
    }


UNITS = {
    "mean": "mg/dL",
    "sd": "mg/dL",
    "mage": "mg/dL",
    "days": "d",
    "lbgi": "1",
    "hbgi": "1",
    "gri": "1",
}


def test_cgm_summary_matches_an_independent_calculation(
    client: httpx.Client, csv_file: Path
) -> None:
    answer = client.get(f"/Patient/{PATIENT}/$cgm-summary", params={"start": START, "end": END})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["resourceType"] == "Parameters"
    got = {p["name"]: p["valueQuantity"] for p in body["parameter"]}
    expected = expected_parameters(csv_file)
    assert set(got) == set(expected)
    for name, value in expected.items():
        quantity = got[name]
        assert quantity["system"] == "http://unitsofmeasure.org", name
        assert quantity["code"] == UNITS.get(name, "%"), name
        assert quantity["value"] == pytest.approx(value, rel=1e-3, abs=1e-9), name
    assert got["time-low"]["value"] > 0 and got["time-high"]["value"] > 0  # a real spread


def test_a_shorter_period_counts_only_its_readings(client: httpx.Client, csv_file: Path) -> None:
    answer = client.get(
        f"/Patient/{PATIENT}/$cgm-summary",
        params={"start": "2024-01-02T00:00:00Z", "end": "2024-01-02T12:00:00+00:00"},
    )
    assert answer.status_code == 200, answer.text
    got = {p["name"]: p["valueQuantity"]["value"] for p in answer.json()["parameter"]}
    assert got["days"] == pytest.approx(0.5)
    assert got["active-percent"] == pytest.approx(100.0)  # 144 readings in 144 slots
    values = [v for v in csv_values(csv_file)][288:432]
    assert got["mean"] == pytest.approx(sum(values) / len(values), rel=1e-3)


@pytest.mark.parametrize(
    ("query", "expression"),
    [
        ({"end": END}, "start"),
        ({"start": START}, "end"),
        ({"start": "2024-13-01", "end": END}, "start"),
        ({"start": START, "end": "yesterday"}, "end"),
        ({"start": "2024-01-01T10:00", "end": END}, "start"),  # a time needs its seconds
        ({"start": END, "end": START}, "end"),
        ({"start": START, "end": START}, "end"),
    ],
)
def test_bad_periods_are_400_naming_the_parameter(
    client: httpx.Client, csv_file: Path, query: dict[str, str], expression: str
) -> None:
    answer = client.get(f"/Patient/{PATIENT}/$cgm-summary", params=query)
    assert answer.status_code == 400, answer.text
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [expression]


def test_unknown_patient_is_404(client: httpx.Client, csv_file: Path) -> None:
    answer = client.get(
        "/Patient/no-such-patient/$cgm-summary", params={"start": START, "end": END}
    )
    assert answer.status_code == 404, answer.text
    assert answer.json()["resourceType"] == "OperationOutcome"


def test_import_needs_an_existing_patient(server: Server, csv_file: Path, tmp_path: Path) -> None:
    done = glucose_import(server, csv_file, "nobody")
    assert done.returncode != 0
    assert "Patient/nobody" in done.stderr


def test_reimport_creates_no_duplicates(
    server: Server, client: httpx.Client, csv_file: Path
) -> None:
    def count() -> int:
        answer = client.get(
            "/Observation",
            params={
                "subject": f"Patient/{PATIENT}",
                "code": "http://loinc.org|99504-3",
                "_summary": "count",
            },
        )
        assert answer.status_code == 200, answer.text
        return int(answer.json()["total"])

    before = client.get(f"/Patient/{PATIENT}/$cgm-summary", params={"start": START, "end": END})
    assert count() == 4033  # 14 days of 288 readings and the one at 2024-01-15T00:00
    done = glucose_import(server, csv_file)
    assert done.returncode == 0, done.stderr
    assert "(0 new)" in done.stdout, done.stdout
    assert count() == 4033
    after = client.get(f"/Patient/{PATIENT}/$cgm-summary", params={"start": START, "end": END})
    assert after.json() == before.json()
    one = client.get(
        "/Observation",
        params={
            "subject": f"Patient/{PATIENT}",
            "code": "http://loinc.org|99504-3",
            "date": "2024-01-01T00:00:00Z",
        },
    ).json()["entry"]
    assert len(one) == 1
    assert one[0]["resource"]["meta"]["versionId"] == "1"  # unchanged: no new version
    assert one[0]["resource"]["valueQuantity"]["value"] == 136.57  # the CSV's first row
