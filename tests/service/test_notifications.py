"""The notification outbox across processes, on each backend: a delivery worker killed
mid-request leaves its claim, which holds until the lease runs out; the next worker (a
restart: `openrecord alerts deliver --once`) sends the row again with the same
idempotency key and body, and nothing is sent a third time. Two workers running at once
send each row once. Also the stored rows: one in-app and one per webhook per alert.

The readings are imported in this process through the service (`import_readings`,
which evaluates the alerts); delivery runs in `openrecord` subprocesses to a real HTTP
receiver thread.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from openrecord.care.glucose.readings import Reading
from openrecord.cli import main
from openrecord.service.alerts import update_alert_settings
from openrecord.service.context import SecurityContext
from openrecord.service.glucose import import_readings
from openrecord.service.notifications import DeliveryConfig, deliver_once
from openrecord.service.records import RecordService
from openrecord.store import open_store
from tests.databases import backends, fresh_database
from tests.server.launcher import run_openrecord
from tests.server.webhook_receiver import Receiver

SECRET_ENV = "OPENRECORD_TEST_OUTBOX_SECRET"
CTX = SecurityContext.open()


@pytest.fixture(params=backends())
def records(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordService]:
    with fresh_database(request.param, tmp_path) as database:
        store = open_store(database)
        try:
            service = RecordService(store)
            service.database = database  # type: ignore[attr-defined]
            yield service
        finally:
            store.close()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.release.set()
    found.http.shutdown()


def openrecord(database: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "openrecord", *args, "--database", database]


def run(database: str, *args: str) -> str:
    done = run_openrecord(
        [*args, "--database", database], timeout=120, env={**os.environ, SECRET_ENV: "s3cret"}
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def low_alert(records: RecordService, patient: str, urls: list[str]) -> None:
    """A patient with alerts on, webhooks at `urls`, and a low just now."""
    records.update(CTX, "Patient", patient, {"resourceType": "Patient", "id": patient})
    update_alert_settings(records, CTX, patient, {"resourceType": "Parameters"})
    database = records.database  # type: ignore[attr-defined]
    for url in urls:  # the CLI's code, in this process (a subprocess each is slow)
        args = ["alerts", "webhook", "add", "--patient", patient, "--url", url]
        assert main([*args, "--secret-env", SECRET_ENV, "--database", database]) == 0
    now = datetime.now(UTC)
    import_readings(records, CTX, patient, [Reading.at(now - timedelta(minutes=1), 60)])


def outbox(records: RecordService, patient: str) -> list[tuple[object, ...]]:
    return records.store.query(
        "SELECT channel, attempts, delivered_us IS NOT NULL, failed_us IS NOT NULL"
        " FROM notification_outbox WHERE patient = ? ORDER BY channel",
        (patient,),
    )


def test_a_killed_worker_leaves_a_claim_the_next_one_delivers(
    records: RecordService, receiver: Receiver
) -> None:
    database = records.database  # type: ignore[attr-defined]
    low_alert(records, "outbox-kill", [f"{receiver.url}/hang"])
    assert outbox(records, "outbox-kill") == [
        ("in-app", 0, False, False),
        ("webhook", 0, False, False),
    ]

    worker = subprocess.Popen(
        openrecord(database, "alerts", "deliver", "--once", "--lease-seconds", "6"),
        env={**os.environ, SECRET_ENV: "s3cret"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not receiver.on("/hang") and time.monotonic() < deadline:
        time.sleep(0.05)
    claimed_by_then = time.monotonic()
    assert receiver.on("/hang"), "the worker never sent"
    worker.kill()  # mid-request: the receiver has the body, the worker never saw the answer
    worker.wait(10)
    receiver.release.set()

    # the claim holds: another worker at once finds nothing due
    quick = DeliveryConfig(lease_seconds=6)
    assert deliver_once(records.store, quick).delivered == 0
    assert outbox(records, "outbox-kill")[1] == ("webhook", 0, False, False)

    time.sleep(max(0.0, claimed_by_then + 6.5 - time.monotonic()))
    assert run(database, "alerts", "deliver", "--once").startswith("delivered 1,")
    assert run(database, "alerts", "deliver", "--once").startswith("delivered 0,")
    first, second = receiver.on("/hang")
    assert first[2] == second[2]
    assert first[1]["idempotency-key"] == second[1]["idempotency-key"]
    assert outbox(records, "outbox-kill")[1] == ("webhook", 1, True, False)


def test_two_workers_send_each_row_once(records: RecordService, receiver: Receiver) -> None:
    database = records.database  # type: ignore[attr-defined]
    urls = [f"{receiver.url}/slow/{i}" for i in range(4)]
    low_alert(records, "outbox-two", urls)
    workers = [
        subprocess.Popen(
            openrecord(database, "alerts", "deliver", "--once"),
            env={**os.environ, SECRET_ENV: "s3cret"},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=60)[0] for w in workers]
    delivered = sorted(int(o.split()[1].rstrip(",")) for o in outputs)
    assert sum(delivered) == 4, outputs
    keys = [r[1]["idempotency-key"] for r in receiver.requests]
    assert len(keys) == 4 and len(set(keys)) == 4
    assert sorted(r[0] for r in receiver.requests) == sorted(
        u.removeprefix(receiver.url) for u in urls
    )


def test_a_missing_secret_is_retried_and_a_dead_endpoint_gives_up(
    records: RecordService, receiver: Receiver
) -> None:
    low_alert(records, "outbox-fail", [f"{receiver.url}/ok"])
    os.environ.pop(SECRET_ENV, None)
    config = DeliveryConfig(retry_base_seconds=0.2, max_attempts=2)
    report = deliver_once(records.store, config)  # no secret in this process's environment
    assert (report.delivered, report.retrying) == (0, 1)
    assert receiver.requests == []  # nothing unsigned leaves
    time.sleep(0.3)
    assert deliver_once(records.store, config).failed == 1  # the second and last attempt
    assert outbox(records, "outbox-fail")[1] == ("webhook", 2, False, True)
