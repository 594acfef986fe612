#!/usr/bin/env python3
"""Search benchmark: typical searches over many Synthea patients, ms per request.

Builds a database of `--copies` copies of the shared Synthea patients (every id a
patient's Bundle owns — its `urn:uuid:` entries, wherever they occur — renamed per
copy, so copies are distinct patients sharing the same organizations and
practitioners), serves it with `openrecord serve --workers 2`, and
times each search sequentially from one client (median and p95 of `--repeat` runs).
Side by side, in the same run: a read by id, the floor every search is measured
against (same server, same HTTP stack, one indexed row).

    python benchmarks/search.py [--backend sqlite|postgresql] [--copies 12] [--repeat 20]

PostgreSQL: a fresh database on 127.0.0.1:5432 (as the tests make), dropped after.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from _server import running_server

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ROOT.parent / "shared" / "data" / "synthea" / "transaction-bundles"
UUID = re.compile(rb"urn:uuid:([0-9a-f-]{36})")
LOINC = "http://loinc.org"


def build_folder(folder: Path, copies: int) -> int:
    """Write `copies` renamed copies of each patient Bundle (plus the shared ones)."""
    paths = sorted(p for p in BUNDLES.glob("*.json") if p.name != "MANIFEST.json")
    if not paths:
        sys.exit(f"no Synthea bundles in {BUNDLES}")
    written = 0
    for p in paths:
        data = p.read_bytes()
        if not p.name[0].isupper():  # hospital / practitioner information: once
            (folder / p.name).write_bytes(data)
            written += 1
            continue
        owned = set(UUID.findall(data))  # the uuids of this patient's own resources
        pattern = re.compile(b"|".join(re.escape(u) for u in owned))
        for k in range(copies):

            def rename(m: re.Match[bytes], k: int = k) -> bytes:
                return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{k}:{m.group(0).decode()}")).encode()

            (folder / f"{k:03d}-{p.name}").write_bytes(pattern.sub(rename, data))
            written += 1
    return written


def timed(client: httpx.Client, path: str, params: dict[str, str], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        r = client.get(path, params=params)
        out.append((time.perf_counter() - started) * 1000)
        if r.status_code != 200:
            sys.exit(f"{path} {params}: {r.status_code} {r.text[:300]}")
    return out


def pick(client: httpx.Client) -> dict[str, str]:
    """Values from the data: a patient with observations, and that patient's family name."""
    obs = client.get("/Observation", params={"code": f"{LOINC}|8302-2", "_count": "1"}).json()
    subject = obs["entry"][0]["resource"]["subject"]["reference"]
    patient = client.get(f"/{subject}").json()
    return {"patient": subject, "family": patient["name"][0]["family"]}


def searches(v: dict[str, str]) -> list[tuple[str, str, dict[str, str]]]:
    height = f"{LOINC}|8302-2"
    return [
        ("read by id (floor)", f"/{v['patient']}", {}),
        ("patient's heights", "/Observation", {"patient": v["patient"], "code": height}),
        ("all heights, first page", "/Observation", {"code": height}),
        ("all heights, accurate total", "/Observation", {"code": height, "_total": "accurate"}),
        ("count only", "/Observation", {"code": height, "_summary": "count"}),
        ("heights > 150 cm", "/Observation", {"code": height, "value-quantity": "gt150"}),
        ("date range, sorted", "/Observation", {"date": "ge2019-01-01", "_sort": "-date"}),
        ("patient by family name", "/Patient", {"name": v["family"]}),
        ("patient's everything by compartment", f"/{v['patient']}/Observation", {}),
        ("chain: subject:Patient.name", "/Observation", {"subject:Patient.name": v["family"]}),
        ("reverse chain: _has", "/Patient", {"_has:Observation:patient:code": height}),
        (
            "composite code-value-quantity",
            "/Observation",
            {"code-value-quantity": f"{height}$gt150"},
        ),
        ("full text _content", "/Condition", {"_content": "diabetes"}),
        ("_include subject", "/Observation", {"code": height, "_include": "Observation:subject"}),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--copies", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sys.path.insert(0, str(ROOT))
        from tests.databases import fresh_database

        with fresh_database(args.backend, folder) as database:
            data = folder / "data"
            data.mkdir()
            files = build_folder(data, args.copies)
            started = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "openrecord",
                    "import",
                    "--quiet",
                    "--database",
                    database,
                    str(data),
                ],
                check=True,
            )
            print(f"imported {files} files in {time.perf_counter() - started:.0f} s")
            with (
                running_server(database) as root,
                httpx.Client(base_url=f"{root}/fhir", timeout=120) as client,
            ):
                total = client.get("", params={"_summary": "count"}).json().get("total")
                print(f"{total} resources; {args.repeat} runs each, one client\n")
                print(f"{'search':40} {'median ms':>10} {'p95 ms':>8} {'matches':>8}")
                for name, path, params in searches(pick(client)):
                    times = timed(client, path, params, args.repeat)
                    body = client.get(path, params=params).json()
                    n = body.get("total", len(body.get("entry", [])))
                    p95 = statistics.quantiles(times, n=20)[-1]
                    print(f"{name:40} {statistics.median(times):10.1f} {p95:8.1f} {n:>8}")


if __name__ == "__main__":
    main()
