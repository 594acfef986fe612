"""Start `openrecord serve` without paying for its imports each time.

A test run starts a server for nearly every test module, and most of each start was
Python importing openrecord and loading the R4 definitions and terminology: the same
work every time. A launcher process (one per test process, started on first use) does
that work once, then forks a child per server that runs `openrecord.cli.main(argv)`:
the command's own code path (argument parsing, migrations, uvicorn), with its own
environment, working folder and log, so each server is as isolated as a fresh process.
The launcher reaps its children and reports their exit status.

`OPENRECORD_TEST_FORK=0` turns it off (every server is a plain `python -m openrecord`
process); so does anything going wrong with the launcher.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

__all__ = ["ForkedProcess", "launch", "run_openrecord"]


# -- the launcher process ------------------------------------------------------------


def _warm() -> None:
    """Load what every server start loads before it touches its database."""
    import gc

    import uvicorn  # noqa: F401

    import openrecord.auth.accounts_cli
    import openrecord.auth.admin_cli
    import openrecord.auth.rate_limit
    import openrecord.cli
    import openrecord.server.asgi
    import openrecord.store  # noqa: F401
    from openrecord.fhir.definitions import definitions
    from openrecord.fhir.terminology import terminology

    for optional in (
        "psycopg",
        "uvicorn.loops.auto",
        "uvicorn.protocols.http.auto",
        "uvicorn.protocols.websockets.auto",
        "uvicorn.lifespan.on",
    ):
        with contextlib.suppress(ImportError):
            __import__(optional)
    definitions()
    terminology()
    gc.collect()
    gc.freeze()  # the children collect only what they allocate (as settle_heap does)


def _child(request: dict[str, Any], channel: tuple[int, int]) -> None:
    """In the forked child: become `openrecord ARGV` and never return."""
    code = 1
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        out = os.open(request["log"], flags, 0o644)
        err = os.open(request["err"], flags, 0o644) if request.get("err") else out
        given = os.open(request.get("input") or os.devnull, os.O_RDONLY)
        os.dup2(given, 0)  # stdin and stdout were the pipes to the test process
        os.dup2(out, 1)
        os.dup2(err, 2)
        for fd in {out, err, given, *channel} - {0, 1, 2}:
            os.close(fd)
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        sys.argv = ["openrecord", *request["argv"]]
        from openrecord.cli import main

        try:
            code = main(request["argv"])
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _serve() -> None:
    """Read one JSON request a line on stdin, answer one JSON line on stdout."""
    _warm()
    if threading.active_count() != 1:  # forking a threaded process is unsafe
        raise SystemExit("launcher: threads are running after the imports")
    inbox, outbox = sys.stdin.buffer, sys.stdout.buffer
    channel = (inbox.fileno(), outbox.fileno())
    finished: dict[int, int] = {}
    running: set[int] = set()

    def reap() -> None:
        while running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            running.discard(pid)
            finished[pid] = os.waitstatus_to_exitcode(status)

    outbox.write(b'{"ready": true}\n')
    outbox.flush()
    try:
        for line in inbox:
            request = json.loads(line)
            reap()
            if request["op"] == "start":
                pid = os.fork()
                if pid == 0:
                    _child(request, channel)
                running.add(pid)
                answer: dict[str, Any] = {"pid": pid}
            else:
                pid = int(request["pid"])
                answer = {"returncode": finished.get(pid)}
            outbox.write(json.dumps(answer).encode() + b"\n")
            outbox.flush()
    finally:  # the test process is gone: stop whatever it left running
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# -- the test process's side -----------------------------------------------------------


class _Launcher:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.process = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ},
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.writer: IO[bytes] = self.process.stdin
        self.reader: IO[bytes] = self.process.stdout
        if not json.loads(self.reader.readline() or b"{}").get("ready"):
            self.process.kill()
            raise RuntimeError("the server launcher did not start")

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.writer.write(json.dumps(request).encode() + b"\n")
            self.writer.flush()
            answer = self.reader.readline()
        if not answer:
            raise RuntimeError("the server launcher exited")
        found: dict[str, Any] = json.loads(answer)
        return found

    def close(self) -> None:
        try:
            self.writer.close()
            self.process.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()


_launcher: _Launcher | None = None
_launcher_failed = False
_setup_lock = threading.Lock()


def _get_launcher() -> _Launcher | None:
    global _launcher, _launcher_failed
    if os.environ.get("OPENRECORD_TEST_FORK", "1") == "0" or sys.platform != "linux":
        return None
    with _setup_lock:
        if _launcher is None and not _launcher_failed:
            try:
                _launcher = _Launcher()
                atexit.register(_launcher.close)
            except (OSError, RuntimeError, ValueError):
                _launcher_failed = True
        return _launcher


class ForkedProcess(subprocess.Popen[bytes]):
    """A server the launcher forked: what tests use of `Popen` (poll, wait, signals)."""

    def __init__(self, launcher: _Launcher, pid: int, args: list[str]) -> None:
        # Popen.__init__ is not called: there is no pipe, and the launcher is the parent.
        self._launcher = launcher
        self._child_created = False  # Popen.__del__ has nothing to reap
        self.args = args
        self.pid = pid
        self.returncode: Any = None
        self.stdin = self.stdout = self.stderr = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._launcher.ask({"op": "status", "pid": self.pid})["returncode"]
        return self.returncode  # type: ignore[no-any-return]

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.005
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        return int(self.returncode)

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __repr__(self) -> str:
        return f"<ForkedProcess: returncode: {self.returncode} args: {self.args!r}>"


def run_openrecord(
    args: list[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`subprocess.run([python, -m, openrecord, *args], capture_output=True, text=True)`,
    forked from the launcher when it is available. Raises `TimeoutExpired` after `timeout`."""
    command = [sys.executable, "-m", "openrecord", *args]
    launcher = _get_launcher()
    if launcher is None:
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            input=input,
            check=False,
        )
    import tempfile

    with tempfile.TemporaryDirectory(prefix="openrecord-cli-") as folder:
        out, err, given = (Path(folder) / name for name in ("out", "err", "in"))
        if input is not None:
            given.write_text(input)
        request = {
            "op": "start",
            "argv": args,
            "env": {**(os.environ if env is None else env)},
            "cwd": os.getcwd(),
            "log": str(out),
            "err": str(err),
            "input": str(given) if input is not None else None,
        }
        process = ForkedProcess(launcher, int(launcher.ask(request)["pid"]), command)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        return subprocess.CompletedProcess(command, code, out.read_text(), err.read_text())


def launch(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """`openrecord ARGV`, output to `log`: forked from the launcher when it is available,
    else a new `python -m openrecord` process."""
    launcher = _get_launcher()
    if launcher is not None:
        request = {
            "op": "start",
            "argv": argv,
            "env": {**os.environ},
            "cwd": os.getcwd(),
            "log": str(log),
        }
        pid = int(launcher.ask(request)["pid"])
        return ForkedProcess(launcher, pid, [sys.executable, "-m", "openrecord", *argv])
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "openrecord", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ},
        )


if __name__ == "__main__":
    _serve()
