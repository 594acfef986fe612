"""Glucose alerts end to end, on each backend: settings over HTTP (`$alert-settings`),
readings imported with the CLI, alerts as Communications, webhook delivery by the
server's background worker to a real HTTP receiver in this process (signature checked
here with HMAC-SHA256, a failing receiver retried with the same idempotency key), the
periodic stale-data check, snooze, and `$mark-read`.

The server runs with short intervals (poll 0.2 s, retry base 1 s, check 0.5 s) set in
its environment, with the signing secret.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from openrecord.cli import main
from tests.databases import backends
from tests.server.conftest import Server, running_server
from tests.server.launcher import run_openrecord
from tests.server.webhook_receiver import Receiver

SECRET = "test-signing-secret-4f1c"
ENV = {
    "OPENRECORD_ALERTS_POLL_SECONDS": "0.2",
    "OPENRECORD_ALERTS_RETRY_BASE_SECONDS": "1",
    "OPENRECORD_ALERTS_CHECK_SECONDS": "0.5",
    "OPENRECORD_TEST_WEBHOOK_SECRET": SECRET,
}
UCUM = "http://unitsofmeasure.org"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.release.set()
    found.http.shutdown()


@pytest.fixture(scope="module", params=backends())
def alert_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with pytest.MonkeyPatch.context() as env:
        for key, value in ENV.items():
            env.setenv(key, value)
        with running_server(request.param, tmp_path_factory.mktemp("alerts")) as running:
            yield running


@pytest.fixture()
def http(alert_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=alert_server.base, timeout=60) as c:
        yield c


def glucose_import(database: str, patient: str, path: Path) -> None:
    """`openrecord glucose import`, as a process of its own."""
    command = ["glucose", "import", "--database", database]
    done = run_openrecord([*command, "--patient", patient, str(path)], timeout=120)
    assert done.returncode == 0, done.stderr


def in_process(*args: str) -> str:
    """The `openrecord` CLI's own code run in this process (setup steps: a subprocess
    each would cost seconds); its standard output."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(args)) == 0
    return out.getvalue()


def add_webhook(database: str, patient: str, url: str, detail: str = "minimal") -> str:
    return in_process(
        "alerts",
        "webhook",
        "add",
        "--patient",
        patient,
        "--url",
        url,
        "--secret-env",
        "OPENRECORD_TEST_WEBHOOK_SECRET",
        "--detail",
        detail,
        "--database",
        database,
    ).strip()


def entries(points: Sequence[tuple[datetime, float]]) -> list[dict[str, Any]]:
    """Nightscout `entries` (API v1) of sensor glucose values."""
    return [
        {
            "type": "sgv",
            "sgv": value,
            "date": int(when.timestamp() * 1000),
            "dateString": when.isoformat(),
        }
        for when, value in points
    ]


def import_readings(
    database: str, folder: Path, patient: str, points: Sequence[tuple[datetime, float]]
) -> None:
    """Readings imported with `openrecord glucose import` (a Nightscout entries file)."""
    path = folder / f"{patient}-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(entries(points)))
    glucose_import(database, patient, path)


class Uploader:
    """A patient's Nightscout uploader: `POST /api/v1/entries` with its API secret."""

    def __init__(self, server: Server, patient: str) -> None:
        out = in_process(
            "glucose", "nightscout-secret", "--patient", patient, "--database", server.database
        )
        self.sha1 = out.split("api-secret hash")[1].split()[0]
        self.root = server.base.removesuffix("/fhir")

    def send(self, points: Sequence[tuple[datetime, float]]) -> None:
        r = httpx.post(
            f"{self.root}/api/v1/entries",
            json=entries(points),
            headers={"api-secret": self.sha1},
            timeout=60,
        )
        assert r.status_code == 200, r.text


def make_patient(http: httpx.Client, id: str) -> None:
    r = http.put(f"/Patient/{id}", json={"resourceType": "Patient", "id": id})
    assert r.status_code in (200, 201), r.text


def settings(http: httpx.Client, patient: str, *parts: dict[str, Any]) -> httpx.Response:
    return http.post(
        f"/Patient/{patient}/$alert-settings",
        json={"resourceType": "Parameters", "parameter": list(parts)},
    )


def qty(name: str, value: float, code: str) -> dict[str, Any]:
    return {"name": name, "valueQuantity": {"value": value, "system": UCUM, "code": code}}


def alerts_of(http: httpx.Client, patient: str) -> list[dict[str, Any]]:
    r = http.get("/Communication", params={"subject": f"Patient/{patient}", "_count": "100"})
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


def kind(communication: dict[str, Any]) -> str:
    return str(communication["topic"]["coding"][0]["code"])


def wait_for(check: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# -- settings ------------------------------------------------------------------------------


def test_alert_settings_over_http(http: httpx.Client) -> None:
    make_patient(http, "alert-settings")
    r = http.get("/Patient/alert-settings/$alert-settings")
    assert r.status_code == 200
    first = {p["name"]: p for p in r.json()["parameter"]}
    assert first["enabled"]["valueBoolean"] is False  # off until the patient sets them
    assert first["low"]["valueQuantity"]["value"] == 70
    until = (now() + timedelta(hours=1)).isoformat()
    r = settings(
        http,
        "alert-settings",
        qty("high", 200, "mg/dL"),
        qty("low", 4.0, "mmol/L"),
        {
            "name": "snooze",
            "part": [
                {"name": "alert", "valueCode": "high"},
                {"name": "until", "valueInstant": until},
            ],
        },
    )
    assert r.status_code == 200, r.text
    got = {
        p["name"]: p
        for p in http.get("/Patient/alert-settings/$alert-settings").json()["parameter"]
    }
    assert got["enabled"]["valueBoolean"] is True
    assert got["high"]["valueQuantity"]["value"] == 200
    assert got["low"]["valueQuantity"]["value"] == pytest.approx(4.0 * 18.0156, abs=1e-3)
    assert got["snooze"]["part"][0]["valueCode"] == "high"
    assert got["snooze"]["part"][1]["valueInstant"] == until.replace("+00:00", "Z")


@pytest.mark.parametrize(
    ("body", "status", "path"),
    [
        ({"resourceType": "Parameters", "parameter": [qty("high", 60, "mg/dL")]}, 400, "low"),
        (
            {"resourceType": "Parameters", "parameter": [{"name": "x", "valueBoolean": True}]},
            400,
            "Parameters.parameter[0].name",
        ),
        ({"resourceType": "Patient"}, 400, "resourceType"),
    ],
)
def test_bad_settings_are_refused(
    http: httpx.Client, body: dict[str, Any], status: int, path: str
) -> None:
    make_patient(http, "alert-settings-bad")
    r = http.post("/Patient/alert-settings-bad/$alert-settings", json=body)
    assert r.status_code == status
    assert r.json()["issue"][0]["expression"] == [path]
    # nothing written
    got = {
        p["name"]: p
        for p in http.get("/Patient/alert-settings-bad/$alert-settings").json()["parameter"]
    }
    assert got["enabled"]["valueBoolean"] is False


def test_settings_of_an_unknown_patient(http: httpx.Client) -> None:
    assert http.get("/Patient/nobody/$alert-settings").status_code == 404
    assert settings(http, "nobody", qty("high", 200, "mg/dL")).status_code == 404


# -- a low, its Communication and its webhooks ---------------------------------------------


def test_a_low_is_recorded_and_delivered_once(
    http: httpx.Client, alert_server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    patient = "alert-low"
    make_patient(http, patient)
    assert settings(http, patient, {"name": "enabled", "valueBoolean": True}).status_code == 200
    uploader = Uploader(alert_server, patient)
    add_webhook(alert_server.database, patient, f"{receiver.url}/ok/{alert_server.backend}")
    flaky = f"/flaky/{alert_server.backend}"
    add_webhook(alert_server.database, patient, receiver.url + flaky, "full")
    start = now() - timedelta(minutes=30)
    # -1 mg/dL per minute: no rate alert; at 65 the low is here already (no prediction)
    falling = [(start + timedelta(minutes=5 * i), 95 - 5 * i) for i in range(7)]
    uploader.send(falling)

    found = alerts_of(http, patient)
    assert [kind(c) for c in found] == ["low"]
    alert = found[0]
    assert alert["status"] == "completed"
    assert alert["category"][0]["coding"][0]["code"] == "alert"
    assert alert["recipient"] == [{"reference": f"Patient/{patient}"}]
    assert alert["payload"][0]["contentString"] == "Low glucose: 65 mg/dL"
    assert "received" not in alert

    ok_path = f"/ok/{alert_server.backend}"
    wait_for(lambda: len(receiver.on(ok_path)) == 1 and len(receiver.on(flaky)) >= 2)
    [(_, headers, body, _)] = receiver.on(ok_path)
    sent = json.loads(body)
    assert sent["alert"] == "low" and sent["communication"] == f"Communication/{alert['id']}"
    assert not {"glucose", "patient", "message"} & set(sent)  # minimal: no health data
    check_signature(headers, body)
    assert headers["idempotency-key"] == sent["id"]

    first, second = receiver.on(flaky)[:2]
    assert first[2] == second[2]  # the same bytes
    assert first[1]["idempotency-key"] == second[1]["idempotency-key"]
    assert (first[1]["x-openrecord-attempt"], second[1]["x-openrecord-attempt"]) == ("1", "2")
    assert second[3] - first[3] >= 0.9  # retried after the 1 s backoff
    full = json.loads(second[2])
    assert full["glucose"] == {"value": 65, "unit": "mg/dL"}
    assert full["patient"] == f"Patient/{patient}"
    check_signature(second[1], second[2])
    time.sleep(1.5)  # nothing more arrives: both delivered
    assert len(receiver.on(ok_path)) == 1 and len(receiver.on(flaky)) == 2

    # the same readings again, then one more low: the episode persists, nothing new
    uploader.send(falling)
    import_readings(alert_server.database, tmp_path, patient, [(now(), 64)])  # the CLI
    assert [kind(c) for c in alerts_of(http, patient)] == ["low"]

    # in-app: marking it read sets `received`, once
    r = http.post(f"/Communication/{alert['id']}/$mark-read")
    assert r.status_code == 200, r.text
    received = r.json()["received"]
    assert r.json()["meta"]["versionId"] == "2"
    again = http.post(f"/Communication/{alert['id']}/$mark-read")
    assert again.json()["received"] == received and again.json()["meta"]["versionId"] == "2"
    assert http.post("/Communication/nope/$mark-read").status_code == 404


def check_signature(headers: dict[str, str], body: bytes) -> None:
    header = headers["x-openrecord-signature"]
    parts = dict(p.split("=", 1) for p in header.split(","))
    assert abs(int(parts["t"]) - time.time()) < 120
    expected = hmac.new(SECRET.encode(), parts["t"].encode() + b"." + body, hashlib.sha256)
    assert hmac.compare_digest(parts["v1"], expected.hexdigest())


# -- stale data and snooze, from the periodic check -----------------------------------------


def test_stale_data_fires_once(http: httpx.Client, alert_server: Server, tmp_path: Path) -> None:
    patient = "alert-stale"
    make_patient(http, patient)
    uploader = Uploader(alert_server, patient)
    assert settings(http, patient, qty("stale-minutes", 5, "min")).status_code == 200
    last = now() - timedelta(minutes=6)
    uploader.send([(last - timedelta(minutes=5 * i), 120) for i in range(4)])
    wait_for(lambda: len(alerts_of(http, patient)) > 0)
    found = alerts_of(http, patient)
    assert [kind(c) for c in found] == ["stale"]
    assert found[0]["payload"][0]["contentString"].startswith("No glucose data for 6 minutes")
    time.sleep(1.5)  # three more checks
    assert len(alerts_of(http, patient)) == 1


def test_snooze_holds_a_low_back_until_it_runs_out(
    http: httpx.Client, alert_server: Server, tmp_path: Path
) -> None:
    patient = "alert-snooze"
    make_patient(http, patient)
    uploader = Uploader(alert_server, patient)
    until = datetime.now(UTC) + timedelta(seconds=3)
    r = settings(
        http,
        patient,
        {
            "name": "snooze",
            "part": [
                {"name": "alert", "valueCode": "low"},
                {"name": "until", "valueInstant": until.isoformat()},
            ],
        },
    )
    assert r.status_code == 200, r.text
    uploader.send([(now() - timedelta(minutes=1), 62)])
    assert alerts_of(http, patient) == []
    wait_for(lambda: len(alerts_of(http, patient)) > 0)
    assert datetime.now(UTC) >= until
    found = alerts_of(http, patient)
    assert [kind(c) for c in found] == ["low"]
    time.sleep(1.5)
    assert len(alerts_of(http, patient)) == 1


def test_historic_imports_raise_no_alerts(
    http: httpx.Client, alert_server: Server, tmp_path: Path
) -> None:
    patient = "alert-history"
    make_patient(http, patient)
    assert settings(http, patient, {"name": "enabled", "valueBoolean": True}).status_code == 200
    old = datetime(2024, 1, 1, tzinfo=UTC)
    import_readings(
        alert_server.database,
        tmp_path,
        patient,
        [(old + timedelta(minutes=5 * i), 45) for i in range(12)],
    )
    time.sleep(1.2)  # two periodic checks: a week-old series is not a lost signal either
    assert alerts_of(http, patient) == []
