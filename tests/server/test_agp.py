"""`Patient/[id]/$agp` and `openrecord glucose report` against a real server, each backend.

One simglucose patient's 14 days are imported with the CLI (and one day into an
authorizing server, to check the caller's scopes apply); the SVG and PDF the server
answers are rasterised and checked by colour against percentiles computed in the test
(tests/care/glucose/test_agp_render.py), the DiagnosticReport against the HL7 CGM IG's
`cgm-summary-pdf` profile (code 107931-8, presentedForm application/pdf in base64, the
CGM summary Observation as result) and the time in range written here.
"""

from __future__ import annotations

import base64
import csv
import json
import math
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pypdfium2
import pytest

from openrecord.care.glucose.readings import Reading
from tests.auth.conftest import AuthServer, auth_server  # noqa: F401  (the fixture)
from tests.auth.oauth_helpers import backend_token, bearer
from tests.care.glucose.test_agp_render import SCALE, check_page, raster_pdf, raster_svg
from tests.server.conftest import Server
from tests.server.launcher import run_openrecord
from tests.shared_data import require_shared

PATIENT = "agp-adolescent003"
SUBJECT = "adolescent003"
PERIOD = {"start": "2024-01-01", "end": "2024-01-15"}
IG = "http://hl7.org/fhir/uv/cgm/StructureDefinition/"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_openrecord(
        ["glucose", *args],
        timeout=600,
    )


@pytest.fixture(scope="module")
def readings(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Reading]]:
    """The subject's rows imported for PATIENT; the readings of the period, from the CSV."""
    source = require_shared("cgm", "simglucose", "simglucose_3patients_14d_cgm_long.csv")
    with source.open() as f:
        rows = [row for row in csv.reader(f)]
    path = tmp_path_factory.mktemp("agp") / "one.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(rows[0])
        writer.writerows(r for r in rows[1:] if r[0] == SUBJECT)
    patient = {
        "resourceType": "Patient",
        "id": PATIENT,
        "name": [{"given": ["Ada"], "family": "Lovelace"}],
    }
    answer = httpx.put(f"{server.base}/Patient/{PATIENT}", json=patient, timeout=60)
    assert answer.status_code in (200, 201), answer.text
    done = cli("import", "--database", server.database, "--patient", PATIENT, str(path))
    assert done.returncode == 0, done.stderr
    lo, hi = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 15, tzinfo=UTC)
    out = []
    for row in rows[1:]:
        if row[0] == SUBJECT:
            moment = datetime.fromisoformat(row[1]).replace(tzinfo=UTC)
            if lo <= moment < hi:
                out.append(Reading.at(moment, float(row[2])))
    yield sorted(out, key=lambda r: r.time_us)


def agp(
    server: Server, method: str = "GET", headers: dict[str, str] | None = None, **params: str
) -> httpx.Response:
    return httpx.request(
        method,
        f"{server.base}/Patient/{PATIENT}/$agp",
        params={**PERIOD, **params},
        headers=headers,
        timeout=60,
    )


def tir(readings: list[Reading]) -> float:
    whole = [math.floor(r.mg_dl + 0.5) for r in readings]
    return 100.0 * sum(70 <= w <= 180 for w in whole) / len(whole)


def test_svg_shows_the_agp(server: Server, readings: list[Reading]) -> None:
    answer = agp(server, _format="svg")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("image/svg+xml")
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["content-security-policy"].startswith("default-src 'none'")
    assert b"<script" not in answer.content
    root = ET.fromstring(answer.content)
    title = root.find("{http://www.w3.org/2000/svg}title")
    assert title is not None and "Ada Lovelace" in (title.text or "")
    check_page(raster_svg(answer.content), readings, UTC)


def test_pdf_shows_the_agp(server: Server, readings: list[Reading]) -> None:
    answer = agp(server, _format="pdf")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/pdf"
    image = raster_pdf(answer.content)
    assert image.size == (842 * SCALE, 595 * SCALE)  # A4 landscape
    check_page(image, readings, UTC)
    by_accept = agp(server, headers={"Accept": "application/pdf"}, page="letter")
    assert by_accept.headers["content-type"] == "application/pdf"
    assert raster_pdf(by_accept.content).size == (792 * SCALE, 612 * SCALE)


def test_diagnostic_report_carries_the_pdf(server: Server, readings: list[Reading]) -> None:
    answer = agp(server, _format="json")
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["resourceType"] == "DiagnosticReport"
    assert report["meta"]["profile"] == [IG + "cgm-summary-pdf"]
    assert report["code"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "107931-8",
        "display": "CGM summary",
    }
    assert report["subject"] == {"reference": f"Patient/{PATIENT}"}
    assert report["effectivePeriod"] == {"start": "2024-01-01", "end": "2024-01-14"}
    (form,) = report["presentedForm"]
    assert form["contentType"] == "application/pdf"
    pdf = base64.b64decode(form["data"], validate=True)
    assert pdf == agp(server, _format="pdf").content  # the report drawn for the same data
    contained = {r["id"]: r for r in report["contained"]}
    assert report["result"] == [{"reference": "#summary"}]
    summary = contained["summary"]
    assert summary["code"]["coding"][0]["code"] == "107931-8"
    for member in summary["hasMember"]:
        assert member["reference"].removeprefix("#") in contained
    ranges = contained["times-in-ranges"]
    by_code = {
        c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"] for c in ranges["component"]
    }
    assert by_code["97510-2"] == pytest.approx(tir(readings), rel=1e-3)
    # No _format and a FHIR Accept: the DiagnosticReport too
    plain = agp(server, headers={"Accept": "application/fhir+json"})
    assert plain.json()["resourceType"] == "DiagnosticReport"


def test_store_writes_report_and_observations(server: Server, readings: list[Reading]) -> None:
    refused = agp(server, store="true")
    assert refused.status_code == 400
    assert refused.json()["issue"][0]["expression"] == ["store"]
    answer = agp(server, "POST", store="true")
    assert answer.status_code == 201, answer.text
    report = answer.json()
    assert "contained" not in report
    with httpx.Client(base_url=server.base, timeout=60) as c:
        read = c.get(f"/DiagnosticReport/{report['id']}")
        assert read.status_code == 200
        (result,) = read.json()["result"]
        summary = c.get(f"/{result['reference']}")
        assert summary.status_code == 200
        assert summary.json()["code"]["coding"][0]["code"] == "107931-8"
        members = [c.get(f"/{m['reference']}").json() for m in summary.json()["hasMember"]]
        assert len(members) == 6
        assert all(m["subject"] == {"reference": f"Patient/{PATIENT}"} for m in members)
        found = c.get("/DiagnosticReport", params={"subject": f"Patient/{PATIENT}"}).json()
        assert len(found.get("entry", [])) == 1


@pytest.mark.parametrize(
    ("params", "status", "expression"),
    [
        ({"start": "2024-13-01"}, 400, "start"),
        ({"end": ""}, 400, "end"),
        ({"start": "2024-01-15", "end": "2024-01-01"}, 400, "end"),
        ({"_format": "xml"}, 400, "_format"),
        ({"unit": "mmol"}, 400, "unit"),
        ({"page": "a3"}, 400, "page"),
        ({"store": "yes"}, 400, "store"),
    ],
)
def test_bad_parameters(
    server: Server, readings: list[Reading], params: dict[str, str], status: int, expression: str
) -> None:
    answer = agp(server, **params)
    assert answer.status_code == status, answer.text
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [expression]


def test_no_data_unknown_patient_and_accept(server: Server, readings: list[Reading]) -> None:
    empty = agp(server, start="2023-01-01", end="2023-01-15", _format="svg")
    assert empty.status_code == 404
    assert "no CGM readings" in empty.json()["issue"][0]["diagnostics"]
    unknown = httpx.get(
        f"{server.base}/Patient/nobody/$agp", params={**PERIOD, "_format": "pdf"}, timeout=60
    )
    assert unknown.status_code == 404
    assert unknown.json()["resourceType"] == "OperationOutcome"
    html = agp(server, headers={"Accept": "text/html"})
    assert html.status_code == 406
    svg = agp(server, headers={"Accept": "image/svg+xml"}, unit="mmol/L")
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert b"3.9-10.0 mmol/L" in svg.content


def test_cli_report(server: Server, readings: list[Reading], tmp_path: Path) -> None:
    base = [
        "report",
        "--database",
        server.database,
        "--patient",
        PATIENT,
        *[f"--{k}={v}" for k, v in PERIOD.items()],
    ]
    pdf = tmp_path / "agp.pdf"
    done = cli(*base, "--output", str(pdf))
    assert done.returncode == 0, done.stderr
    document = pypdfium2.PdfDocument(pdf.read_bytes())
    text = document[0].get_textpage().get_text_range()
    document.close()
    assert "Ada Lovelace" in text and f"{round(tir(readings))}%" in text
    fhir = tmp_path / "agp.json"
    assert cli(*base, "--format", "fhir", "--output", str(fhir)).returncode == 0
    report = json.loads(fhir.read_text())
    assert report["resourceType"] == "DiagnosticReport"
    assert base64.b64decode(report["presentedForm"][0]["data"]).startswith(b"%PDF-")
    unknown = cli(
        "report",
        "--database",
        server.database,
        "--patient",
        "nobody",
        "--output",
        str(tmp_path / "x.pdf"),
    )
    assert unknown.returncode == 1 and "not known" in unknown.stderr
    assert not (tmp_path / "x.pdf").exists()


def test_capability_statement_lists_agp(server: Server) -> None:
    statement = httpx.get(f"{server.base}/metadata", timeout=60).json()
    (patient,) = [r for r in statement["rest"][0]["resource"] if r["type"] == "Patient"]
    assert "agp" in {op["name"] for op in patient.get("operation", [])}


# -- through authorization: an authorizing server (tests/auth/conftest.py) -------------


def test_agp_follows_the_callers_scopes(auth_server: AuthServer, tmp_path: Path) -> None:  # noqa: F811
    """The operator client's token narrowed by scope: reading the report needs read/search
    of Patient and Observation; `store=true` needs create; nothing is half-written."""
    source = require_shared("cgm", "simglucose", "simglucose_3patients_14d_cgm_long.csv")
    with source.open() as f:
        rows = [row for row in csv.reader(f)]
    path = tmp_path / "day.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([rows[0], *[r for r in rows[1:] if r[0] == SUBJECT][:288]])
    done = cli("import", "--database", auth_server.database, "--patient", "pa", str(path))
    assert done.returncode == 0, done.stderr
    url = f"{auth_server.base}/Patient/pa/$agp"
    day = {"start": "2024-01-01", "end": "2024-01-02"}

    def token(scope: str) -> dict[str, str]:
        answer = backend_token(
            auth_server.base, auth_server.admin_client, auth_server.admin_key, "ES384", scope
        )
        assert answer.status_code == 200, answer.text
        return bearer(answer.json()["access_token"])

    assert httpx.get(url, params={**day, "_format": "svg"}, timeout=60).status_code == 401
    full = bearer(auth_server.admin_token)
    ok = httpx.get(url, params={**day, "_format": "svg"}, headers=full, timeout=60)
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("image/svg+xml")
    patient_only = token("system/Patient.rs")
    refused = httpx.get(url, params={**day, "_format": "pdf"}, headers=patient_only, timeout=60)
    assert refused.status_code == 403, refused.text
    assert refused.json()["resourceType"] == "OperationOutcome"
    read_only = token("system/Patient.rs system/Observation.rs")
    read = httpx.get(url, params={**day, "_format": "pdf"}, headers=read_only, timeout=60)
    assert read.status_code == 200 and read.content.startswith(b"%PDF-")
    store = httpx.post(url, params={**day, "store": "true"}, headers=read_only, timeout=60)
    assert store.status_code == 403, store.text
    reports = httpx.get(
        f"{auth_server.base}/DiagnosticReport", params={"subject": "Patient/pa"}, headers=full
    ).json()
    assert not reports.get("entry")
    summaries = httpx.get(
        f"{auth_server.base}/Observation",
        params={"subject": "Patient/pa", "code": "http://loinc.org|107931-8"},
        headers=full,
    ).json()
    assert not summaries.get("entry")  # the transaction wrote nothing
    stored = httpx.post(url, params={**day, "store": "true"}, headers=full, timeout=60)
    assert stored.status_code == 201, stored.text
