"""A real HTTP server for feed tests: a good feed, oversized and endless bodies, errors, redirects.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import threading
import time
from base64 import b64encode
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"


FEED = DATA / "feed_rss.xml"
READER_AUTH = f"Basic {b64encode(b'reader:hunter2').decode()}"


class _FeedServer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        routes = {
            "/feed.xml": self._feed_xml,
            "/big": self._big,
            "/endless": self._endless,
            "/claims-huge": self._claims_huge,
            "/to-ftp": self._to_ftp,
            "/slow": self._slow,
            "/private": self._private,
            "/broken": self._broken,
        }
        routes.get(self.path.partition("?")[0], self._missing)()

    def _missing(self) -> None:
        self._send(404, b"not here")

    def _feed_xml(self) -> None:
        self._send(200, FEED.read_bytes())

    def _big(self) -> None:
        self._send(200, b"x" * 5_000)

    def _endless(self) -> None:
        self.send_response(200)
        self.end_headers()  # no Content-Length: the body ends when the server closes
        try:
            for _ in range(1_000):
                self.wfile.write(b"x" * 1_000)
        except OSError:
            pass  # the client stopped reading, as it should

    def _claims_huge(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(10**9))
        self.end_headers()
        self.wfile.write(b"x" * 10)  # the declared length alone must be refused

    def _to_ftp(self) -> None:
        self.send_response(302)
        self.send_header("Location", "ftp://example.org/feed.xml")
        self.end_headers()

    def _slow(self) -> None:
        time.sleep(1)
        self._send(200, b"late")

    def _private(self) -> None:
        if self.headers.get("Authorization") == READER_AUTH:
            self._send(200, FEED.read_bytes())
        else:
            self._send(401, b"who are you?")

    def _broken(self) -> None:
        self._send(500, b"upstream down")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FeedServer)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
