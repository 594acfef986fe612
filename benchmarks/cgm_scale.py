#!/usr/bin/env python3
"""CGM at scale: 1,000 patients x 90 days of 5-minute readings (25.9 M readings).

Issue 6's targets: the readings load in ≤ 60 s, the metrics of every patient compute
in ≤ 10 s on this 2-core machine, one patient's 14-day `$cgm-summary` answers over
HTTP in ≤ 50 ms. Measured in one run, on a fresh database:

1. load: each patient's 90 days generated (deterministically, seed = patient number:
   meal peaks, noise, ~1 % gaps, sensor "Low"/"High" at 40/400 mg/dL) and written
   with `service.glucose.import_readings` — the real path, access checks included — by
   `--workers` processes. Generation is timed apart from the import calls;
2. the same packed rows again with one plain `executemany` into a bare table (the
   floor for these rows), and a narrow row per reading for `--narrow` patients (the
   storage not chosen), both in the same database;
3. metrics: `service.glucose.population_summaries` of the 90 days for every patient,
   by `--workers` processes (system-level scoped context: access checks and one audit
   event per process included);
4. `GET Patient/[id]/$cgm-summary` of 14 days on `openrecord serve --workers 2`.

    python benchmarks/cgm_scale.py [--backend sqlite|postgresql] [--patients 1000]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _server import free_port  # noqa: E402

from openrecord.care.glucose.readings import Limit, Reading  # noqa: E402

START_US = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000
STEP_US = 300_000_000
DAY_US = 86_400_000_000


def patient_id(n: int) -> str:
    return f"cgm-scale-{n:05d}"


def _profile() -> list[float]:
    """The day's meal-driven target, per 5-minute slot."""
    out = []
    for slot in range(288):
        minute = slot * 5
        meal = sum(70 * math.exp(-(((minute - m) / 60) ** 2)) for m in (480, 780, 1140))
        out.append(110 + meal)
    return out


PROFILE = _profile()


_TEMPLATES = 16
_templates: dict[tuple[int, int], list[int | None]] = {}


def _template(k: int, days: int) -> list[int | None]:
    """One of 16 base traces (integer mg/dL as sensors report, None in a sensor gap):
    meal peaks, noise, a ~2-hour gap now and then; deterministic from `k`."""
    key = (k, days)
    if key not in _templates:
        rng = random.Random(k)
        uniform = rng.random
        gain = 0.6 + 0.8 * uniform()  # patients differ in how high their peaks go
        level = 120.0
        out: list[int | None] = []
        gap = 0
        for i in range(days * 288):
            level += 0.1 * (gain * PROFILE[i % 288] - level) + (uniform() - 0.5) * 14
            if gap:
                gap -= 1
                out.append(None)
            elif uniform() < 0.0005:
                gap = 24
                out.append(None)
            else:
                out.append(round(level))
        _templates[key] = out
    return _templates[key]


def readings_of(n: int, days: int) -> list[Reading]:
    """Patient `n`'s readings: template n % 16, turned by n % days days and shifted by
    (n % 21) - 10 mg/dL; 40 and 400 mg/dL are the sensor's "Low"/"High"."""
    base = _template(n % _TEMPLATES, days)
    turn = (n % days) * 288
    values = base[turn:] + base[:turn]
    shift = n % 21 - 10
    low, high = Limit.LOW, Limit.HIGH
    return [
        Reading(START_US + i * STEP_US, 40.0, low)
        if v + shift <= 40
        else Reading(START_US + i * STEP_US, 400.0, high)
        if v + shift >= 400
        else Reading(START_US + i * STEP_US, float(v + shift))
        for i, v in enumerate(values)
        if v is not None
    ]


def _records(database: str) -> tuple[Any, Any]:
    from openrecord.service.records import RecordService
    from openrecord.store import open_store

    store = open_store(database)
    return store, RecordService(store)


def _load_part(job: tuple[str, list[int], int]) -> tuple[float, float, int, float, float]:
    """(s generating, s in import_readings, readings, CPU-s in import_readings,
    CPU-s generating) of some patients."""
    from openrecord.service.context import SecurityContext
    from openrecord.service.glucose import import_readings

    database, patients, days = job
    store, records = _records(database)
    ctx = SecurityContext.of("system/Observation.cu system/Patient.r")
    generating = importing = cpu = generating_cpu = 0.0
    total = 0
    for n in patients:
        began, began_cpu = time.perf_counter(), time.process_time()
        readings = readings_of(n, days)
        mid, mid_cpu = time.perf_counter(), time.process_time()
        import_readings(records, ctx, patient_id(n), readings)
        generating += mid - began
        generating_cpu += mid_cpu - began_cpu
        importing += time.perf_counter() - mid
        cpu += time.process_time() - mid_cpu
        total += len(readings)
    store.close()
    return generating, importing, total, cpu, generating_cpu


def _metrics_part(job: tuple[str, list[int], int, int]) -> tuple[int, float]:
    """(readings summarized, CPU-s) of some patients' whole period."""
    from openrecord.service.context import SecurityContext
    from openrecord.service.glucose import population_summaries

    database, patients, start, end = job
    store, records = _records(database)
    ctx = SecurityContext.of("system/Observation.rs system/Patient.r")
    began = time.process_time()
    found = population_summaries(records, ctx, [patient_id(n) for n in patients], start, end)
    count = sum(summary.stats.count for summary in found.values())
    cpu = time.process_time() - began
    store.close()
    return count, cpu


def split(patients: list[int], parts: int) -> list[list[int]]:
    return [patients[i::parts] for i in range(parts)]


def create_patients(database: str, patients: list[int]) -> None:
    from openrecord.service.bundles import BundleProcessor
    from openrecord.service.context import SecurityContext

    store, records = _records(database)
    bundles = BundleProcessor(records)
    for at in range(0, len(patients), 500):
        entries = [
            {
                "resource": {"resourceType": "Patient", "id": patient_id(n)},
                "request": {"method": "PUT", "url": f"Patient/{patient_id(n)}"},
            }
            for n in patients[at : at + 500]
        ]
        bundles.process(
            SecurityContext.open(),
            {"resourceType": "Bundle", "type": "transaction", "entry": entries},
        )
    store.close()


def plain_executemany(
    database: str, backend: str, narrow: int, days: int
) -> tuple[float, int, float, float]:
    """(s for the packed rows, rows, s for `narrow` patients' readings one row each,
    CPU-s of this process for the packed rows)."""
    store, _ = _records(database)
    rows = store.query("SELECT sid, day, n, updated, times, mg_dl, limits FROM cgm_day")
    store.close()
    narrow_rows = [
        (patient_id(n), r.time_us, round(r.mg_dl * 1000), 0 if r.limit is None else 1)
        for n in range(narrow)
        for r in readings_of(n, days)
    ]
    blob = "bytea" if backend == "postgresql" else "BLOB"
    packed_sql = (
        "INSERT INTO plain_day (sid, day, n, updated, times, mg_dl, limits)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)"
    )
    narrow_sql = "INSERT INTO plain_reading (patient, t, v, flag) VALUES (?, ?, ?, ?)"
    tables = (
        f"CREATE TABLE plain_day (sid bigint, day integer, n integer, updated bigint,"
        f" times {blob}, mg_dl {blob}, limits {blob}, PRIMARY KEY (sid, day))",
        "CREATE TABLE plain_reading (patient text, t bigint, v integer, flag integer,"
        " PRIMARY KEY (patient, t))",
    )
    if backend == "postgresql":
        import psycopg

        with psycopg.connect(database) as conn:
            for sql in tables:
                conn.execute(sql)
            conn.commit()
            began, began_cpu = time.perf_counter(), time.process_time()
            with conn.cursor() as cur:
                cur.executemany(packed_sql.replace("?", "%s"), rows)
            conn.commit()
            packed = time.perf_counter() - began
            packed_cpu = time.process_time() - began_cpu
            began = time.perf_counter()
            with conn.cursor() as cur:
                cur.executemany(narrow_sql.replace("?", "%s"), narrow_rows)
            conn.commit()
            narrow_s = time.perf_counter() - began
    else:
        import sqlite3

        conn = sqlite3.connect(database.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA synchronous=NORMAL")
        for sql in tables:
            conn.execute(sql)
        began, began_cpu = time.perf_counter(), time.process_time()
        conn.execute("BEGIN")
        conn.executemany(packed_sql, rows)
        conn.execute("COMMIT")
        packed = time.perf_counter() - began
        packed_cpu = time.process_time() - began_cpu
        began = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany(narrow_sql, narrow_rows)
        conn.execute("COMMIT")
        narrow_s = time.perf_counter() - began
        conn.close()
    return packed, len(rows), narrow_s, packed_cpu


@contextmanager
def open_server(database: str) -> Iterator[str]:
    """`openrecord serve --open --workers 2` (no authorization: loopback only)."""
    port = free_port()
    command = [sys.executable, "-m", "openrecord", "serve", "--database", database, "--open"]
    command += ["--port", str(port), "--workers", "2", "--log-level", "warning"]
    proc = subprocess.Popen(command)
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # a loaded machine starts workers slowly
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                sys.exit("server exited while starting")
            try:
                httpx.get(f"{root}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield root
    finally:
        proc.terminate()
        proc.wait()


def http_summary(database: str, repeat: int) -> list[float]:
    params = {"start": "2025-03-01", "end": "2025-03-15"}
    times = []
    with (
        open_server(database) as root,
        httpx.Client(base_url=f"{root}/fhir", timeout=60) as client,
    ):
        path = f"/Patient/{patient_id(0)}/$cgm-summary"
        for _ in range(5):
            answer = client.get(path, params=params)
            assert answer.status_code == 200, answer.text
        for _ in range(repeat):
            began = time.perf_counter()
            answer = client.get(path, params=params)
            times.append((time.perf_counter() - began) * 1000)
            assert answer.status_code == 200
    return times


def database_for(backend: str, folder: Path) -> AbstractContextManager[str]:
    from tests.databases import fresh_database

    return fresh_database(backend, folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--narrow", type=int, default=20, help="patients for the narrow-row test")
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args()
    patients = list(range(args.patients))
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp, database_for(args.backend, Path(tmp)) as database:
        create_patients(database, patients)
        pool = multiprocessing.get_context("fork").Pool(args.workers)
        began = time.perf_counter()
        parts = pool.map(
            _load_part, [(database, p, args.days) for p in split(patients, args.workers)]
        )
        load = time.perf_counter() - began
        generating = sum(p[0] for p in parts)
        importing = sum(p[1] for p in parts)
        readings = sum(p[2] for p in parts)
        load_cpu = sum(p[3] for p in parts)
        generating_cpu = sum(p[4] for p in parts)
        print(f"{args.backend}: {args.patients} patients x {args.days} days, {readings:,} readings")
        print(
            f"load, {args.workers} processes: {load:.1f} s wall; in the workers, summed:"
            f" generating {generating:.1f} s ({generating_cpu:.1f} CPU-s),"
            f" import_readings {importing:.1f} s ({load_cpu:.1f} CPU-s of this process)"
        )
        packed, rows, narrow_s, packed_cpu = plain_executemany(
            database, args.backend, args.narrow, args.days
        )
        narrow_n = sum(len(readings_of(n, args.days)) for n in range(args.narrow))
        print(
            f"plain executemany of the same {rows:,} packed rows, one process: {packed:.2f} s"
            f" ({packed_cpu:.2f} CPU-s); import_readings / executemany:"
            f" {importing / packed:.1f}x wall (summed), {load_cpu / packed_cpu:.1f}x CPU"
        )
        print(
            f"narrow row per reading, plain executemany: {narrow_n:,} readings in {narrow_s:.2f} s"
            f" = {narrow_n / narrow_s:,.0f}/s, {readings / (narrow_n / narrow_s):.0f} s for all;"
            f" packed rows: {readings / packed:,.0f} readings/s"
        )
        end = START_US + args.days * DAY_US
        began = time.perf_counter()
        done = pool.map(
            _metrics_part,
            [(database, p, START_US, end) for p in split(patients, args.workers)],
        )
        metrics = time.perf_counter() - began
        pool.close()
        pool.join()
        counted = sum(d[0] for d in done)
        metrics_cpu = sum(d[1] for d in done)
        print(
            f"metrics of every patient ({args.days} days each), {args.workers} processes:"
            f" {metrics:.2f} s wall ({counted:,} readings, {counted / metrics:,.0f}/s);"
            f" CPU-s {metrics_cpu:.1f} (÷{args.workers} = {metrics_cpu / args.workers:.1f} s)"
        )
        print(f"load average now: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        times = http_summary(database, args.repeat)
        p95 = statistics.quantiles(times, n=20)[-1]
        print(
            f"$cgm-summary 14 days over HTTP ({args.repeat} runs): median"
            f" {statistics.median(times):.1f} ms, p95 {p95:.1f} ms, best {min(times):.1f} ms"
        )


if __name__ == "__main__":
    main()
