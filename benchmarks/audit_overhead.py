"""What the audit trail costs per request: a read and a search through RecordService,
with auditing on and off, side by side in one run, on SQLite and (when reachable)
PostgreSQL.

Each request with auditing on appends one hash-chain row holding its AuditEvent in a
transaction of its own (the AuditEvent resources are stored from the chain in batches,
not per request); the figures are medians of interleaved rounds (on, off, on, off…) so
both see the same cache and disk state. Then the throughput of audited reads from 8
threads of one process (group commit: several appends share one transaction), against
unaudited reads the same way, and the time to store the chained events as resources.

    .venv/bin/python benchmarks/audit_overhead.py [--rounds 2000] [--postgres URL]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openrecord.service.audit_chain import catch_up
from openrecord.service.context import SecurityContext
from openrecord.service.records import RecordService
from openrecord.store import open_store

PATIENTS = 50
OBSERVATIONS = 20  # per patient
CTX = SecurityContext(
    user="Patient/p0", client="bench-app", patient="p0", scopes=frozenset({"patient/*.rs"})
)


def load(records: RecordService) -> None:
    """PATIENTS patients with OBSERVATIONS Observations each, unaudited."""
    records.audit.enabled = False
    open_ctx = SecurityContext.open()
    for p in range(PATIENTS):
        records.update(open_ctx, "Patient", f"p{p}", {"resourceType": "Patient", "id": f"p{p}"})
        entries = [
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": f"o{p}-{i}",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    "subject": {"reference": f"Patient/p{p}"},
                    "effectiveDateTime": f"2024-01-{1 + i % 28:02d}T08:00:00Z",
                    "valueQuantity": {"value": 60 + i, "unit": "/min"},
                },
                "request": {"method": "PUT", "url": f"Observation/o{p}-{i}"},
            }
            for i in range(OBSERVATIONS)
        ]
        from openrecord.service.bundles import BundleProcessor

        BundleProcessor(records).process(
            open_ctx, {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        )


def timed(
    call: Callable[[], Any], rounds: int, records: RecordService
) -> tuple[list[float], list[float]]:
    """Milliseconds of each call with auditing on and off, interleaved."""
    on: list[float] = []
    off: list[float] = []
    for _ in range(rounds):
        for enabled, into in ((True, on), (False, off)):
            records.audit.enabled = enabled
            start = time.perf_counter()
            call()
            into.append((time.perf_counter() - start) * 1000)
    return on, off


def p10(values: list[float]) -> float:
    """The 10th percentile: less disturbed than the median on a busy machine."""
    return statistics.quantiles(values, n=10)[0]


def run(label: str, url: str, rounds: int) -> None:
    store = open_store(url)
    try:
        records = RecordService(store)
        records.warm_up()
        load(records)

        def read() -> None:
            records.read(CTX, "Observation", "o0-3")

        def search() -> None:
            records.search(CTX, "Observation", [("code", "http://loinc.org|8867-4")])

        for name, call in (("read", read), ("search (20 results)", search)):
            timed(call, 50, records)  # warm both paths
            on, off = timed(call, rounds, records)
            for stat, f in (("median", statistics.median), ("p10", p10)):
                a, u = f(on), f(off)
                print(
                    f"{label:10} {name:20} {stat:6} audited {a:7.3f} ms   unaudited {u:7.3f} ms"
                    f"   overhead {a - u:+.3f} ms"
                )
        concurrent(label, records)
        started = time.perf_counter()
        stored = catch_up(store)
        took = time.perf_counter() - started
        print(
            f"{label:10} catch-up: {stored:,} chained events stored as resources in"
            f" {took:.2f} s ({took / max(stored, 1) * 1e6:.0f} µs each)"
        )
    finally:
        store.close()


def concurrent(label: str, records: RecordService, threads: int = 8, seconds: float = 5.0) -> None:
    """Reads per second from `threads` threads, audited and not, one after the other."""
    for enabled in (False, True):
        records.audit.enabled = enabled
        done = [0] * threads
        stop = time.perf_counter() + seconds

        def work(k: int, done: list[int], stop: float) -> None:
            while time.perf_counter() < stop:
                records.read(CTX, "Observation", "o0-3")
                done[k] += 1

        pool = [threading.Thread(target=work, args=(k, done, stop)) for k in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        state = "audited" if enabled else "unaudited"
        print(f"{label:10} {threads} threads, {state:9}: {sum(done) / seconds:8,.0f} reads/s")
    records.audit.enabled = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        run("SQLite", f"sqlite:///{Path(folder) / 'bench.sqlite'}", args.rounds)
    try:
        import psycopg

        name = f"openrecord_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.postgres, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            run("PostgreSQL", args.postgres.rsplit("/", 1)[0] + "/" + name, args.rounds)
        finally:
            with psycopg.connect(args.postgres, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception as err:  # PostgreSQL is optional here
        print(f"PostgreSQL skipped: {type(err).__name__}: {err}")


if __name__ == "__main__":
    main()
