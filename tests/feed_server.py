"""A real HTTP server for feed tests: a good feed, oversized and endless bodies, errors, redirects.

/changing serves the `changing_feed` a test edits, and answers a conditional GET with 304 while its
ETag (or, when it has none, its Last-Modified) matches. The /huge-feed routes serve a 50 MB feed (an RSS opening, then padding) generated on the fly:
with a Content-Length, without one (the body ends when the connection closes), and chunked.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import itertools
import threading
import time
from base64 import b64encode
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"


FEED = DATA / "feed_rss.xml"
RELATIVE_FEED = DATA / "feed_relative.xml"
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


@dataclass
class ChangingFeed:
    body: bytes
    etag: str | None = '"v1"'
    last_modified: str | None = "Tue, 24 Nov 2026 05:00:00 GMT"
    status: int = 200  # anything else is answered with no body, validators or not
    asked: list[dict[str, str]] = field(default_factory=list)  # each GET's conditional headers

    def unchanged_for(self, if_none_match: str | None, if_modified_since: str | None) -> bool:
        if if_none_match is not None:  # RFC 9110: If-None-Match wins over If-Modified-Since
            return if_none_match == self.etag
        return if_modified_since is not None and if_modified_since == self.last_modified


class _Server(ThreadingHTTPServer):
    changing: ChangingFeed


class _FeedServer(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        routes = {
            "/feed.xml": self._feed_xml,
            "/changing": self._changing,
            "/news/relative.xml": self._relative,
            "/old/feed": self._to_relative,
            "/to-private": self._to_private,
            "/loop": self._loop,
            "/unasked-304": self._unasked_304,
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

    def _changing(self) -> None:
        feed = self.server.changing
        if_none_match = self.headers.get("If-None-Match")
        if_modified_since = self.headers.get("If-Modified-Since")
        asked = {"If-None-Match": if_none_match, "If-Modified-Since": if_modified_since}
        feed.asked.append({key: value for key, value in asked.items() if value is not None})
        if feed.status != 200:
            self._send(feed.status, b"")
            return
        validators = {"ETag": feed.etag, "Last-Modified": feed.last_modified}
        unchanged = feed.unchanged_for(if_none_match, if_modified_since)
        self.send_response(304 if unchanged else 200)
        for name, value in validators.items():
            if value is not None:
                self.send_header(name, value)
        self.send_header("Content-Length", "0" if unchanged else str(len(feed.body)))
        self.end_headers()
        if not unchanged:
            self.wfile.write(feed.body)

    def _relative(self) -> None:
        self._send(200, RELATIVE_FEED.read_bytes())

    def _to_relative(self) -> None:
        self._redirect(301, "/news/relative.xml")

    def _to_private(self) -> None:
        self._redirect(302, "/private")

    def _loop(self) -> None:
        self._redirect(302, "/loop")

    def _unasked_304(self) -> None:
        self._send(304, b"")

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
        self._redirect(302, "ftp://example.org/feed.xml")

    def _redirect(self, status: int, location: str) -> None:
        self.send_response(status)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
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
def changing_feed() -> ChangingFeed:
    """What /changing serves; a test edits it between polls."""
    return ChangingFeed(FEED.read_bytes())


@pytest.fixture
def http_base(changing_feed: ChangingFeed) -> Iterator[str]:
    server = _Server(("127.0.0.1", 0), _FeedServer)
    server.changing = changing_feed
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
