#!/usr/bin/env python3
"""Read-by-id benchmark over HTTP: openrecord vs a bare Starlette endpoint, same run.

Loads the bundled demo patients into a fresh SQLite file, starts `openrecord serve
--workers 2`, and drives GET [type]/[id] over random stored resources with `wrk`
(Debian package) for --seconds; then the same against benchmarks/bare_app.py served
by uvicorn with 2 workers on the same file. Prints req/s and p50/p99 latency.

    python benchmarks/read_by_id.py [--seconds 15] [--connections 32]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _server import free_port, running_server, wait_up

ROOT = Path(__file__).resolve().parents[1]


def wrk(
    url: str, paths: list[str], seconds: int, connections: int, folder: Path
) -> dict[str, float]:
    script = folder / "paths.lua"
    lua_paths = ",".join(f'"{p}"' for p in paths)
    script.write_text(
        f"local paths = {{{lua_paths}}}\n"
        "math.randomseed(42)\n"
        "request = function()\n"
        "  return wrk.format('GET', paths[math.random(#paths)])\n"
        "end\n"
    )
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return float(m.group(1)) * scale

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50": pct("50"),
        "p99": pct("99"),
        "non2xx": float(errors.group(1)) if errors else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        db_path = folder / "bench.sqlite"
        database = f"sqlite:///{db_path}"
        subprocess.run(
            [sys.executable, "-m", "openrecord", "demo", "--database", database],
            check=True,
            capture_output=True,
        )
        import sqlite3

        rows = (
            sqlite3.connect(db_path)
            .execute("SELECT type, id FROM resource WHERE NOT deleted")
            .fetchall()
        )
        random.seed(1)
        paths = [f"/fhir/{t}/{i}" for t, i in random.sample(rows, min(2000, len(rows)))]
        print(f"{len(rows):,} resources stored; {len(paths)} distinct ids requested at random")

        results = {}
        with running_server(database, workers=2) as root:
            results["openrecord"] = wrk(root, paths, args.seconds, args.connections, folder)

        port = free_port()
        env = {**os.environ, "BARE_SQLITE_PATH": str(db_path)}
        bare = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bare_app:app",
                "--port",
                str(port),
                "--workers",
                "2",
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=ROOT / "benchmarks",
            env=env,
        )
        try:
            wait_up(f"http://127.0.0.1:{port}/fhir/x/y", bare)
            results["bare Starlette"] = wrk(
                f"http://127.0.0.1:{port}", paths, args.seconds, args.connections, folder
            )
        finally:
            bare.terminate()
            bare.wait()

    for name, r in results.items():
        print(
            f"{name:<16} {r['rps']:>8,.0f} req/s   p50 {r['p50']:6.2f} ms   p99 {r['p99']:6.2f} ms"
            f"   non-2xx {r['non2xx']:.0f}"
        )
    ratio = results["openrecord"]["rps"] / results["bare Starlette"]["rps"]
    print(f"openrecord / bare: {ratio:.2f}")


if __name__ == "__main__":
    main()
