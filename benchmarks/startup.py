#!/usr/bin/env python3
"""Start-up time and memory: `openrecord serve` to the first answered /metadata, and RSS.

Also times loading the compiled R4 definitions alone, in a fresh interpreter.

    python benchmarks/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _server import free_port


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_run(folder: Path) -> tuple[float, float]:
    port = free_port()
    database = f"sqlite:///{folder / f'startup-{port}.sqlite'}"
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "openrecord",
            "serve",
            "--open",
            "--database",
            database,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
    )
    try:
        while True:
            try:
                if (
                    httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=2).status_code
                    == 200
                ):
                    break
            except httpx.HTTPError:
                time.sleep(0.01)
            if proc.poll() is not None:
                sys.exit("server exited")
        elapsed = time.perf_counter() - started
        # A few requests so the working set is realistic.
        for _ in range(20):
            httpx.post(f"http://127.0.0.1:{port}/fhir/Patient", json={"resourceType": "Patient"})
        return elapsed, rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    load = subprocess.run(
        [
            sys.executable,
            "-c",
            "import time; t=time.perf_counter(); from openrecord.fhir.definitions import definitions;"
            " definitions(); print(time.perf_counter()-t)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    print(f"definitions load (import + parse): {float(load.stdout) * 1000:.0f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        runs = [one_run(Path(tmp)) for _ in range(args.runs)]
    times = sorted(t for t, _ in runs)
    print(
        f"start-up to first /metadata: median {times[len(times) // 2]:.2f} s, max {times[-1]:.2f} s"
    )
    print(f"server RSS after start-up and 20 writes: max {max(r for _, r in runs):.0f} MiB")


if __name__ == "__main__":
    main()
