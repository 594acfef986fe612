"""Start `openrecord serve` for a benchmark and wait until it answers."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

__all__ = ["free_port", "running_server", "wait_up"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited while starting ({url})")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    sys.exit(f"server did not start: {url}")


@contextmanager
def running_server(database: str, workers: int = 2) -> Iterator[str]:
    """`openrecord serve` on a free port; yields the root URL (no /fhir)."""
    port = free_port()
    # --open: these benchmarks measure the FHIR API itself (auth_overhead.py measures tokens)
    command = [sys.executable, "-m", "openrecord", "serve", "--database", database, "--open"]
    command += ["--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    proc = subprocess.Popen(command)
    root = f"http://127.0.0.1:{port}"
    try:
        wait_up(f"{root}/healthz", proc)
        yield root
    finally:
        proc.terminate()
        proc.wait()
