"""A real openrecord server per test module, on each backend this run covers."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.databases import backends, fresh_database
from tests.server.conformance_data import load
from tests.server.launcher import launch


@dataclass(frozen=True)
class Server:
    base: str  # the FHIR base, e.g. http://127.0.0.1:PORT/fhir
    database: str
    backend: str
    process: subprocess.Popen[bytes]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    database: str, log: Path, *extra: str, authorized: bool = False
) -> tuple[str, subprocess.Popen[bytes]]:
    """`openrecord serve` on a free port. Test servers run `--open` (they test the FHIR
    API, not authorization) unless `authorized`: then every request needs a token."""
    port = free_port()
    argv = ["serve", "--database", database, "--port", str(port), "--log-level", "warning"]
    proc = launch([*argv, *(() if authorized else ("--open",)), *extra], log)
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90  # a loaded machine (shared CI, -n 2) starts slowly
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()}")
        try:
            if httpx.get(f"{root}/healthz", timeout=1).status_code == 200:
                return f"{root}/fhir", proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server did not start: {log.read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server; kill it if it has not exited within 10 seconds."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@contextmanager
def serving(
    database: str, log: Path, *extra: str, authorized: bool = False
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """(FHIR base, process) of a server on `database`, always stopped afterwards."""
    base, proc = start_server(database, log, *extra, authorized=authorized)
    try:
        yield base, proc
    finally:
        stop(proc)


@contextmanager
def running_server(
    backend: str, folder: Path, *extra: str, authorized: bool = False
) -> Iterator[Server]:
    """A server (`serve` options `extra`) on a fresh `backend` database in `folder`;
    `authorized`: with the authorization server on (no `--open`).

    The server logs to `folder`/server.log; it is stopped and the database dropped afterwards.
    """
    with (
        fresh_database(backend, folder) as database,
        serving(database, folder / "server.log", *extra, authorized=authorized) as (base, proc),
    ):
        yield Server(base, database, backend, proc)


@pytest.fixture(scope="module", params=backends())
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with running_server(request.param, tmp_path_factory.mktemp("server")) as running:
        yield running


@pytest.fixture(scope="module")
def conformance_dataset(server: Server) -> None:
    """The search conformance suite's data (tests/server/conformance_data.py), once a module."""
    load(server.base)


@pytest.fixture()
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base, timeout=60) as c:
        yield c
