"""Where input comes from: bounded reads of files and http(s) URLs, and how bad rows are reported."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import IO, Any, Generic, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from digest.errors import InvalidInput

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RowError:
    where: str  # "line 4", "entry 3", or the feed's name
    reason: str  # one line


@dataclass(frozen=True, slots=True)
class Parsed(Generic[T]):
    items: list[T]
    errors: list[RowError]
    places: list[str]  # where each item stood ("line 4"), in step with items


class Collector(Generic[T]):
    """Gathers good items and reports each bad one by where it stood; the first of a key wins."""

    def __init__(self, unit: str, key: Callable[[T], str]) -> None:
        self._unit = unit  # "entry", "line"
        self._key = key
        self._first_seen: dict[str, int] = {}
        self.parsed: Parsed[T] = Parsed([], [], [])

    def add(self, number: int, make: Callable[[], T]) -> None:
        where = f"{self._unit} {number}"
        try:
            item = make()
        except InvalidInput as exc:
            self.parsed.errors.append(RowError(where, str(exc)))
            return
        key = self._key(item)
        if key in self._first_seen:
            first = self._first_seen[key]
            self.parsed.errors.append(RowError(where, f"duplicate of {self._unit} {first}"))
            return
        self._first_seen[key] = number
        self.parsed.items.append(item)
        self.parsed.places.append(where)


# Every line boundary str.splitlines() knows is a control character or U+2028/U+2029.
CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    return " ".join(CONTROLS.sub(" ", text).split())


def shown(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")


def display_name(source: str) -> str:
    """A source as logs and messages may show it: a URL loses its user, password and query.

    Feed URLs often carry an access token; it must not end up in a log shipper.
    """
    try:
        parts = urlsplit(source)
    except ValueError:
        return one_line(source)
    if not parts.scheme or not parts.netloc:
        return one_line(source)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    query = "?..." if parts.query else ""
    return one_line(f"{parts.scheme}://{host}{port}{parts.path}{query}")


def is_web_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


# --- reading ------------------------------------------------------------------------------------


class _WebOnlyRedirects(urllib.request.HTTPRedirectHandler):
    # urllib would follow a redirect to ftp://; a feed has no business there.
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if not is_web_url(newurl):
            raise urllib.error.URLError(f"refused redirect to {display_name(newurl)}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


# The most a feed or a CSV file may hold; a larger one is refused whole, having been read no further.
MAX_SOURCE_BYTES = 10_000_000


def read_source(source: str, *, max_bytes: int = MAX_SOURCE_BYTES, timeout: float = 20) -> bytes:
    """The bytes of a file or an http(s) URL, refusing anything larger than max_bytes."""
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", source)
    name = display_name(source)
    if scheme and scheme.group(1).lower() not in ("http", "https"):
        raise InvalidInput(f"cannot read {name}: only files and http or https URLs are read")
    try:
        data = (
            _read_url(source, name, max_bytes, timeout)
            if scheme
            else _read_file(source, name, max_bytes)
        )
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response open
        raise InvalidInput(f"cannot read {name}: HTTP {exc.code} {one_line(exc.reason)}") from exc
    except urllib.error.URLError as exc:
        raise InvalidInput(f"cannot read {name}: {one_line(str(exc.reason))}") from exc
    except (OSError, HTTPException, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidInput(f"cannot read {name}: {one_line(reason) or repr(exc)}") from exc
    if len(data) > max_bytes:
        raise _too_large(name, max_bytes)
    return data


def _too_large(source: str, max_bytes: int) -> InvalidInput:
    return InvalidInput(f"cannot read {source}: larger than {max_bytes} bytes")


def _request(url: str) -> urllib.request.Request:
    """A request for url; user:password in it become HTTP basic auth, never sent on a redirect."""
    parts = urlsplit(url)
    if parts.username is None:
        return urllib.request.Request(url)  # noqa: S310 - read_source let only http(s) through
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    request = urllib.request.Request(urlunsplit(parts._replace(netloc=netloc)))  # noqa: S310
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    request.add_unredirected_header("Authorization", f"Basic {b64encode(pair.encode()).decode()}")
    return request


def _read_file(source: str, name: str, max_bytes: int) -> bytes:
    path = Path(source)
    if path.stat().st_size > max_bytes:
        raise _too_large(name, max_bytes)
    # Bounded even so: a device or a growing file can hold more than stat() says.
    with path.open("rb") as file:
        return _read_at_most(file, name, max_bytes)


def _read_url(url: str, name: str, max_bytes: int, timeout: float) -> bytes:
    opener = urllib.request.build_opener(_WebOnlyRedirects)
    opener.addheaders = [("User-Agent", "digest feed import")]
    with opener.open(_request(url), timeout=timeout) as response:
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > max_bytes:
            raise _too_large(name, max_bytes)
        return _read_at_most(response, name, max_bytes)


_PIECE_BYTES = 1 << 16


def _read_at_most(stream: IO[bytes], name: str, max_bytes: int) -> bytes:
    """The rest of stream, in pieces, refused as soon as it passes max_bytes.

    Not stream.read(max_bytes + 1): on a chunked HTTP response that gathers the chunks in a list
    and joins them, holding twice the cap (a 50 MB feed: a 20 MB peak for a 10 MB cap).
    """
    pieces, size = [], 0
    while piece := stream.read(_PIECE_BYTES):
        pieces.append(piece)
        size += len(piece)
        if size > max_bytes:
            raise _too_large(name, max_bytes)
    return b"".join(pieces)
