"""The test's web server for the app pages, on an origin of its own (another port):
as for any browser SMART app, the FHIR server, its discovery and its token endpoint
are other origins, reached through CORS."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript"}


@contextmanager
def app_server(files: dict[str, Path]) -> Iterator[str]:
    """Serve `files` (name → path) at /NAME; yields this server's origin."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = files.get(self.path.split("?", 1)[0].lstrip("/"))
            status, body = (200, path.read_bytes()) if path else (404, b"not found")
            self.send_response(status)
            self.send_header("Content-Type", _TYPES[path.suffix] if path else "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
