#!/usr/bin/env python3
"""Ingest benchmark: all shared Synthea transaction Bundles, resources/s.

Runs, side by side in one process and one run (this machine is noisy):
  1. openrecord: every Bundle through the record service as a transaction —
     validation, reference resolution, index extraction of every search parameter,
     history and index tables — into a fresh database: in-process on one core, or
     with --http POSTed by --clients threads to `openrecord serve --workers 2`;
  2. the floor: the same resources' JSON written with one plain `executemany` into
     a one-table SQLite database with the same pragmas;
  3. where the time goes: validation, extraction and JSON work timed alone.

    python benchmarks/ingest.py [--database postgresql://…] [--repeat 3] [--http]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ROOT.parent / "shared" / "data" / "synthea" / "transaction-bundles"


def load_bundles() -> list[dict[str, Any]]:
    paths = sorted(p for p in BUNDLES.glob("*.json") if p.name != "MANIFEST.json")
    if not paths:
        sys.exit(f"no Synthea bundles in {BUNDLES}")
    return [orjson.loads(p.read_bytes()) for p in paths]


def copy(bundles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [orjson.loads(orjson.dumps(b)) for b in bundles]


def openrecord_ingest(bundles: list[dict[str, Any]], database: str) -> float:
    from openrecord.runtime import settle_heap
    from openrecord.service import BundleProcessor, RecordService, SecurityContext
    from openrecord.store import open_store

    store = open_store(database)
    records = RecordService(store)
    records.warm_up()
    settle_heap()  # as `openrecord serve` and `openrecord import` do; also freezes the input
    processor = BundleProcessor(records)
    ctx = SecurityContext.open()
    started = time.perf_counter()
    for bundle in bundles:
        processor.process(ctx, bundle)
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed


def http_ingest(bundles: list[dict[str, Any]], database: str, clients: int, folder: Path) -> float:
    """POST every Bundle to `openrecord serve --workers 2` from `clients` threads."""
    import threading

    import httpx
    from _server import running_server

    with running_server(database, workers=2) as root:
        base = f"{root}/fhir"
        bodies = [orjson.dumps(b) for b in bundles]
        bodies.sort(key=len, reverse=True)  # largest first: the threads finish together
        lock = threading.Lock()
        failures: list[str] = []

        def work() -> None:
            with httpx.Client(timeout=300) as client:
                while True:
                    with lock:
                        if not bodies:
                            return
                        body = bodies.pop(0)
                    r = client.post(
                        base, content=body, headers={"Content-Type": "application/fhir+json"}
                    )
                    if r.status_code != 200:
                        failures.append(r.text[:200])

        started = time.perf_counter()
        threads = [threading.Thread(target=work) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        if failures:
            sys.exit(f"{len(failures)} bundles failed: {failures[0]}")
        return elapsed


def executemany_floor(bundles: list[dict[str, Any]], folder: Path) -> float:
    rows = [
        (e["resource"]["resourceType"], str(uuid.uuid4()), orjson.dumps(e["resource"]))
        for b in bundles
        for e in b["entry"]
    ]
    db = sqlite3.connect(folder / "floor.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE resource (type TEXT, id TEXT, data BLOB, PRIMARY KEY (type, id))")
    started = time.perf_counter()
    db.execute("BEGIN")
    db.executemany("INSERT INTO resource VALUES (?, ?, ?)", rows)
    db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed


def breakdown(bundles: list[dict[str, Any]]) -> dict[str, float]:
    from openrecord.fhir.definitions import definitions
    from openrecord.fhir.search_index import IndexExtractor
    from openrecord.fhir.validation import validate_resource

    resources = [e["resource"] for b in bundles for e in b["entry"]]
    extractor = IndexExtractor(definitions())
    out: dict[str, float] = {}
    t = time.perf_counter()
    for r in resources:
        validate_resource(r)
    out["validation"] = time.perf_counter() - t
    t = time.perf_counter()
    rows = 0
    for r in resources:
        rows += len(extractor.extract(r))
    out["index extraction"] = time.perf_counter() - t
    out["index rows"] = rows
    t = time.perf_counter()
    for r in resources:
        orjson.dumps(orjson.loads(orjson.dumps(r)))
    out["JSON (dumps+loads+dumps)"] = time.perf_counter() - t
    return out


def phases(bundles: list[dict[str, Any]], folder: Path) -> dict[str, float]:
    """Seconds spent in each stage of an in-process ingest (wall clock, timers included)."""
    import collections
    import functools

    from openrecord.fhir.search_index import IndexExtractor
    from openrecord.service import bundles as bundle_module
    from openrecord.service import records as records_module
    from openrecord.store import _common, sqlite

    spent: collections.Counter[str] = collections.Counter()

    def timed(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - t

        setattr(owner, name, wrapper)

    timed(bundle_module, "rewrite_references", "resolve urn:uuid references (outside lock)")
    timed(records_module, "validate_resource", "validation (outside lock)")
    timed(IndexExtractor, "extract", "index extraction (outside lock)")
    timed(bundle_module.BundleProcessor, "execute", "stamp id/meta + serialize (in lock)")
    timed(sqlite.SqliteTx, "write_rows", "SQLite inserts (in lock)")
    timed(_common.BufferedTx, "index_rows", "index rows built (in lock)")
    timed(
        records_module.RecordService, "in_transaction", "whole write transaction, commit included"
    )
    openrecord_ingest(copy(bundles), f"sqlite:///{folder / 'phases.sqlite'}")
    return dict(spent)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--database", help="PostgreSQL URL (default: a fresh SQLite file)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--http",
        action="store_true",
        help="POST the Bundles to `openrecord serve --workers 2` instead of in-process",
    )
    ap.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients (--http)")
    args = ap.parse_args()
    bundles = load_bundles()
    n = sum(len(b["entry"]) for b in bundles)
    print(f"{len(bundles)} bundles, {n:,} resources")
    best: dict[str, float] = {}
    for run in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            if args.database:
                import psycopg

                name = f"bench_{uuid.uuid4().hex[:8]}"
                admin_url = args.database
                with psycopg.connect(admin_url, autocommit=True) as admin:
                    admin.execute(f'CREATE DATABASE "{name}"')
                database = admin_url.rsplit("/", 1)[0] + "/" + name
            else:
                database = f"sqlite:///{folder / 'openrecord.sqlite'}"
            if args.http:
                ours = http_ingest(bundles, database, args.clients, folder)
            else:
                ours = openrecord_ingest(copy(bundles), database)
            floor = executemany_floor(bundles, folder)
            if args.database:
                with psycopg.connect(admin_url, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        print(
            f"run {run + 1}: openrecord {n / ours:>7,.0f} res/s ({ours:.2f} s)   "
            f"plain executemany {n / floor:>9,.0f} res/s ({floor:.3f} s)   "
            f"ratio {ours / floor:.1f}x"
        )
        best["openrecord"] = min(best.get("openrecord", 1e9), ours)
        best["floor"] = min(best.get("floor", 1e9), floor)
    parts = breakdown(bundles)
    with tempfile.TemporaryDirectory() as tmp:
        stages = phases(bundles, Path(tmp))
    print(
        f"best: openrecord {n / best['openrecord']:,.0f} res/s; floor {n / best['floor']:,.0f} res/s"
    )
    print("where the time goes (per resource, alone):")
    for name, seconds in parts.items():
        if name == "index rows":
            print(f"  index rows per resource: {seconds / n:.1f}")
        else:
            print(f"  {name:<26} {seconds / n * 1e6:7.1f} µs")
    print(f"  total per resource (ours)  {best['openrecord'] / n * 1e6:7.1f} µs")
    print("stages of one in-process ingest (per resource, timers included):")
    for name, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<44} {seconds / n * 1e6:7.1f} µs")


if __name__ == "__main__":
    main()
