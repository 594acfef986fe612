#!/usr/bin/env python3
"""Nightscout API v1 over HTTP: backfill uploads, real-time single uploads, follower reads.

Makes a fresh SQLite file with one Patient and one Nightscout secret (in-process), starts
`openrecord serve --workers 2` and times, with httpx from one client:
- backfill: --days requests of one day each (288 xDrip+-shaped `sgv` entries);
- real time: --single requests of one entry each (what an uploader sends every 5 min);
- follower: --reads `GET /api/v1/entries/sgv.json?count=24`;
- retry: the first backfill day sent again (all duplicates).
Prints the median (and p90) per request and readings per second.

    python benchmarks/nightscout_upload.py [--days 30] [--single 100] [--reads 100]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time

import httpx
from _server import running_server

MIN5 = 300_000


def day_entries(t0: int, day: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i in range(288):
        date = t0 + day * 86_400_000 + i * MIN5
        sgv = 110 + (i * 7 + day * 13) % 120
        out.append(
            {
                "device": "xDrip-DexcomG6",
                "date": date,
                "dateString": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(date / 1000)),
                "sgv": sgv,
                "delta": 1.0,
                "direction": "Flat",
                "type": "sgv",
                "filtered": sgv * 1000,
                "unfiltered": sgv * 1000,
                "rssi": 100,
                "noise": 1,
            }
        )
    return out


def timed(fn: object) -> float:
    start = time.perf_counter()
    response = fn()  # type: ignore[operator]
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        sys.exit(f"unexpected {response.status_code}: {response.text[:200]}")
    return elapsed


def summary(name: str, seconds: list[float], readings_per_request: int = 0) -> None:
    ms = sorted(s * 1000 for s in seconds)
    p90 = ms[int(0.9 * (len(ms) - 1))]
    rate = (
        f", {readings_per_request * len(ms) / sum(seconds):,.0f} readings/s"
        if readings_per_request
        else ""
    )
    print(f"{name}: n={len(ms)} median {statistics.median(ms):.1f} ms, p90 {p90:.1f} ms{rate}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--single", type=int, default=100)
    parser.add_argument("--reads", type=int, default=100)
    args = parser.parse_args()

    from openrecord.server.nightscout import issue_secret
    from openrecord.service.context import SecurityContext
    from openrecord.service.records import RecordService
    from openrecord.store import open_store

    with tempfile.TemporaryDirectory() as folder:
        database = f"sqlite:///{folder}/bench.sqlite"
        store = open_store(database)
        records = RecordService(store)
        records.update(
            SecurityContext.open(), "Patient", "bench", {"resourceType": "Patient", "id": "bench"}
        )
        secret = issue_secret(store, "bench")
        store.close()
        auth = {"api-secret": hashlib.sha1(secret.encode()).hexdigest()}
        with running_server(database) as root, httpx.Client(base_url=root, timeout=120) as c:
            # the backfill ends a day ago, so followers' default 4-day window holds data
            t0 = int(time.time() * 1000) // MIN5 * MIN5 - (args.days + 1) * 86_400_000
            days = [day_entries(t0, d) for d in range(args.days)]
            backfill = [
                timed(lambda d=d: c.post("/api/v1/entries", json=d, headers=auth)) for d in days
            ]
            summary("backfill, 288 entries per request", backfill, 288)
            retry = [
                timed(lambda: c.post("/api/v1/entries", json=days[0], headers=auth))
                for _ in range(5)
            ]
            summary("retry of a stored day (all duplicates)", retry, 288)
            single = []
            for i in range(args.single):
                entry = {**days[-1][0], "date": t0 + args.days * 86_400_000 + i * MIN5}
                single.append(
                    timed(lambda e=entry: c.post("/api/v1/entries", json=e, headers=auth))
                )
            summary("real time, 1 entry per request", single)
            reads = [
                timed(lambda: c.get("/api/v1/entries/sgv.json", params={"count": 24}, headers=auth))
                for _ in range(args.reads)
            ]
            summary("follower GET sgv.json?count=24", reads)


if __name__ == "__main__":
    main()
