"""A real HTTP receiver for webhook tests: a local server thread that records every POST."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Receiver"]


class Receiver:
    """A local HTTP server recording every POST (header names in lower case); `/flaky…`
    answers 500 to its first request, `/hang…` holds requests until `release` is set,
    `/slow…` takes 0.3 s; all others answer 200 at once."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes, float]] = []
        self.release = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.requests.append(
                        (
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            time.monotonic(),
                        )
                    )
                    seen = sum(1 for r in receiver.requests if r[0] == self.path)
                if self.path.startswith("/hang"):
                    receiver.release.wait(30)
                if self.path.startswith("/slow"):
                    time.sleep(0.3)
                status = 500 if self.path.startswith("/flaky") and seen == 1 else 200
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender is gone (a killed worker)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def on(self, path: str) -> list[tuple[str, dict[str, str], bytes, float]]:
        with self.lock:
            return [r for r in self.requests if r[0] == path]
