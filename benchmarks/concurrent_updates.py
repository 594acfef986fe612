#!/usr/bin/env python3
"""Concurrent PUTs of one resource: do N writers all succeed, with consecutive versions?

Starts `openrecord serve --workers 2` on a fresh PostgreSQL database (and, for
comparison, SQLite), creates one Patient per round, then releases `--writers` threads
at once (a barrier), each PUTting its own body (no If-Match) to that Patient. Reports
per backend the status counts over all rounds, how many rounds ended with every writer
answered 200 and the versions 1..N+1 in the history without gaps or repeats, and the
slowest round.

    python benchmarks/concurrent_updates.py [--writers 8] [--rounds 10]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres] [--no-sqlite]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from _server import running_server


def one_round(base: str, writers: int) -> tuple[list[int], list[str], bool, float]:
    """One Patient, `writers` concurrent PUTs: (statuses, returned versions, history ok, s)."""
    pid = httpx.post(f"{base}/Patient", json={"resourceType": "Patient"}).json()["id"]
    barrier = threading.Barrier(writers)
    statuses: list[int] = [0] * writers
    versions: list[str] = [""] * writers

    def put(i: int) -> None:
        body: dict[str, Any] = {"resourceType": "Patient", "id": pid, "birthDate": f"19{i:02d}"}
        with httpx.Client(timeout=120) as client:
            barrier.wait()
            r = client.put(f"{base}/Patient/{pid}", json=body)
        statuses[i] = r.status_code
        versions[i] = r.headers.get("etag", "")

    started = time.perf_counter()
    threads = [threading.Thread(target=put, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    history = httpx.get(f"{base}/Patient/{pid}/_history", params={"_count": 1000}).json()
    found = sorted(int(e["resource"]["meta"]["versionId"]) for e in history.get("entry", []))
    ok = found == list(range(1, writers + 2)) and sorted(versions) == sorted(
        f'W/"{v}"' for v in range(2, writers + 2)
    )
    return statuses, versions, ok, seconds


def run(label: str, database: str, writers: int, rounds: int) -> None:
    with running_server(database, workers=2) as root:
        base = f"{root}/fhir"
        counts: Counter[int] = Counter()
        good = 0
        slowest = 0.0
        for _ in range(rounds):
            statuses, _versions, ok, seconds = one_round(base, writers)
            counts.update(statuses)
            good += ok
            slowest = max(slowest, seconds)
    shown = ", ".join(f"{n}x{status}" for status, n in sorted(counts.items()))
    print(
        f"{label:10} {writers} writers x {rounds} rounds: {shown}; "
        f"{good}/{rounds} rounds all 200 with versions 1..{writers + 1}; "
        f"slowest round {slowest:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory() as folder:
            database = f"sqlite:///{Path(folder) / 'bench.sqlite'}"
            run("SQLite", database, args.writers, args.rounds)
    import psycopg

    name = f"openrecord_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.postgres, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        run("PostgreSQL", args.postgres.rsplit("/", 1)[0] + "/" + name, args.writers, args.rounds)
    finally:
        with psycopg.connect(args.postgres, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
