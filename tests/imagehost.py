"""A local HTTP server standing in for a remote image host (outside the system under test)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextlib.contextmanager
def image_host(
    routes: dict[str, tuple[int, dict[str, str], bytes]], host: str = "127.0.0.1", served: list[str] | None = None
) -> Iterator[str]:
    """Serve ``routes`` (path -> status, headers, body) on ``host``; yields the base URL. Each requested
    path is appended to ``served`` when given, so tests can tell whether a fetch happened."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if served is not None:
                served.append(self.path)
            status, headers, body = routes.get(self.path, (404, {"Content-Type": "text/plain"}, b"missing"))
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer((host, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
