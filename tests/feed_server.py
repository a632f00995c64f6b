"""A real HTTP server for feed tests: a good feed, oversized and endless bodies, errors, redirects.

The /huge-feed routes serve a 50 MB feed (an RSS opening, then padding) generated on the fly:
with a Content-Length, without one (the body ends when the connection closes), and chunked.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import itertools
import threading
import time
from base64 import b64encode
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"


FEED = DATA / "feed_rss.xml"
READER_AUTH = f"Basic {b64encode(b'reader:hunter2').decode()}"
HUGE_FEED_BYTES = 50_000_000
_HUGE_OPENING = (
    b'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>Huge</title>'
    b"<item><title>Buried</title><link>https://huge.example/1</link></item>"
)


def huge_feed_pieces(piece_bytes: int = 1 << 16) -> Iterator[bytes]:
    """A feed of HUGE_FEED_BYTES in pieces: a valid RSS opening, then spaces."""
    yield _HUGE_OPENING
    left = HUGE_FEED_BYTES - len(_HUGE_OPENING)
    padding = b" " * piece_bytes
    while left > 0:
        yield padding[:left]
        left -= piece_bytes


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
            "/huge-feed": self._huge_feed,
            "/huge-feed-unsized": self._huge_feed_unsized,
            "/huge-feed-chunked": self._huge_feed_chunked,
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

    def _huge_feed(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(HUGE_FEED_BYTES))
        self.end_headers()
        self._write_all(huge_feed_pieces())

    def _huge_feed_unsized(self) -> None:
        self.send_response(200)
        self.end_headers()
        self._write_all(huge_feed_pieces())

    def _huge_feed_chunked(self) -> None:
        self.protocol_version = (
            "HTTP/1.1"  # chunks need 1.1; the client's Connection: close ends it
        )
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunks = (b"%x\r\n%s\r\n" % (len(piece), piece) for piece in huge_feed_pieces())
        self._write_all(itertools.chain(chunks, [b"0\r\n\r\n"]))

    def _write_all(self, pieces: Iterable[bytes]) -> None:
        try:
            for piece in pieces:
                self.wfile.write(piece)
        except OSError:
            pass  # the client stopped reading at its cap, as it should

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
