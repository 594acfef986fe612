"""What glucose alerts cost an upload, and how fast the vital-sign summaries answer,
through the service layer on SQLite and (with --postgres) PostgreSQL.

- one live reading imported for a patient with alerts on and one without, interleaved
  (on, off, on, off…) so both see the same cache state: the difference is the
  evaluation (a query of the last hour's readings and the episodes; no write unless
  something changed);
- `weight_summary` over a year of daily weights (+ height, goal), `bp_summary` over 4
  weeks of 4 readings a day;
- one `deliver_once` pass over an idle outbox (what the server's worker costs every
  poll).

    .venv/bin/python benchmarks/alerts_vitals.py [--rounds 200] [--postgres URL]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from openrecord.care.glucose.readings import Reading
from openrecord.care.vitals.blood_pressure import BpReading
from openrecord.care.vitals.fhir import height_observation, weight_goal, weight_observation
from openrecord.service.alerts import update_alert_settings
from openrecord.service.bundles import BundleProcessor
from openrecord.service.clock import now_micros
from openrecord.service.context import SecurityContext
from openrecord.service.glucose import import_readings
from openrecord.service.notifications import DeliveryConfig, deliver_once
from openrecord.service.records import RecordService
from openrecord.service.vitals import bp_summary, record_blood_pressure, weight_summary
from openrecord.store import open_store

CTX = SecurityContext.open()
US = 1_000_000


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def setup(records: RecordService) -> None:
    for id in ("on", "off", "vitals"):
        records.update(CTX, "Patient", id, {"resourceType": "Patient", "id": id})
    update_alert_settings(records, CTX, "on", {"resourceType": "Parameters"})
    start = datetime(2024, 1, 1, 7, tzinfo=UTC)
    entries = [
        weight_observation("vitals", start + timedelta(days=d), 90 - d * 0.02) for d in range(365)
    ]
    entries.append(height_observation("vitals", start, 178))
    entries.append(weight_goal("vitals", 80, date(2025, 6, 1), date(2024, 1, 1)))
    BundleProcessor(records).process(
        CTX,
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"resource": r, "request": {"method": "POST", "url": r["resourceType"]}}
                for r in entries
            ],
        },
    )
    bp = [
        BpReading(start + timedelta(days=d, hours=h), 125 + h % 7, 80 + d % 5)
        for d in range(28)
        for h in (0, 1, 12, 13)
    ]
    record_blood_pressure(records, CTX, "vitals", bp)


def run(database: str, rounds: int) -> dict[str, float]:
    store = open_store(database)
    try:
        records = RecordService(store)
        records.warm_up()
        setup(records)
        on: list[float] = []
        off: list[float] = []
        for _ in range(rounds):
            for patient, out in (("on", on), ("off", off)):
                reading = [Reading(now_micros() - US, 120.0)]
                t = time.perf_counter()
                import_readings(records, CTX, patient, reading)
                out.append((time.perf_counter() - t) * 1000)
        start_us = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * US)
        end_us = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * US)
        config = DeliveryConfig()
        return {
            "import 1 reading, alerts on": statistics.median(on),
            "import 1 reading, alerts off": statistics.median(off),
            "weight_summary, 365 weights": median_ms(
                lambda: weight_summary(records, CTX, "vitals", start_us, end_us), 20
            ),
            "bp_summary, 112 readings": median_ms(
                lambda: bp_summary(records, CTX, "vitals", start_us, end_us), 20
            ),
            "deliver_once, idle outbox": median_ms(lambda: deliver_once(store, config), 50),
        }
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--postgres", metavar="URL", help="an empty PostgreSQL database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        databases = {"sqlite": f"sqlite:///{Path(folder) / 'bench.sqlite'}"}
        if args.postgres:
            databases["postgresql"] = args.postgres
        for name, url in databases.items():
            for what, ms in run(url, args.rounds).items():
                print(f"{name:10} {what:32} {ms:8.2f} ms")


if __name__ == "__main__":
    main()
