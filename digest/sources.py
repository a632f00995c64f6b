"""Where input comes from: bounded reads of files and http(s) URLs.

The only module that imports httpx.
"""

from __future__ import annotations

import re
import ssl
from base64 import b64encode
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import overload
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from digest.domain import Validators
from digest.errors import InvalidInput
from digest.text import display_name, is_web_url, one_line

# The most a feed or a CSV file may hold; a larger one is refused whole, having been read no further.
MAX_SOURCE_BYTES = 10_000_000
# The longest ETag or Last-Modified kept to send back; a longer one is dropped, not cut.
MAX_VALIDATOR_CHARS = 255
MAX_REDIRECTS = 10
_PIECE_BYTES = 1 << 16


@dataclass(frozen=True, slots=True)
class Fetched:
    data: bytes
    base: str | None  # what relative links resolve against: the final URL, without credentials
    validators: Validators  # none for a file


@overload
def fetch(source: str, *, max_bytes: int = ..., timeout: float = ...) -> Fetched: ...
@overload
def fetch(
    source: str, *, since: Validators, max_bytes: int = ..., timeout: float = ...
) -> Fetched | None: ...
def fetch(
    source: str,
    *,
    since: Validators | None = None,
    max_bytes: int = MAX_SOURCE_BYTES,
    timeout: float = 20,
) -> Fetched | None:
    """A file or an http(s) URL, refusing anything larger than max_bytes.

    With `since`, a URL is asked for only if it changed: None means the server answered 304.
    """
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", source)
    name = display_name(source)
    if scheme and scheme.group(1).lower() not in ("http", "https"):
        raise _unreadable(name, "only files and http or https URLs are read")
    try:
        if not scheme:
            return Fetched(_read_file(source, name, max_bytes), None, Validators())
        return _read_url(source, name, since or Validators(), max_bytes, timeout)
    except (OSError, ValueError, httpx.HTTPError, httpx.InvalidURL) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _unreadable(name, one_line(reason) or repr(exc)) from exc


def read_source(source: str, *, max_bytes: int = MAX_SOURCE_BYTES, timeout: float = 20) -> bytes:
    """The bytes of a file or an http(s) URL, refusing anything larger than max_bytes."""
    return fetch(source, max_bytes=max_bytes, timeout=timeout).data


def _unreadable(name: str, reason: str) -> InvalidInput:
    return InvalidInput(f"cannot read {name}: {reason}")


def _too_large(name: str, max_bytes: int) -> InvalidInput:
    return _unreadable(name, f"larger than {max_bytes} bytes")


def _read_file(source: str, name: str, max_bytes: int) -> bytes:
    path = Path(source)
    if path.stat().st_size > max_bytes:
        raise _too_large(name, max_bytes)
    # Bounded even so: a device or a growing file can hold more than stat() says.
    with path.open("rb") as file:
        return _read_at_most(iter(partial(file.read, _PIECE_BYTES), b""), name, max_bytes)


def _read_url(
    url: str, name: str, since: Validators, max_bytes: int, timeout: float
) -> Fetched | None:
    # Redirects are followed here, not by httpx: it would repeat the credentials to the same host.
    headers = {
        "User-Agent": "digest feed import",
        # Uncompressed: one compressed piece could inflate a thousandfold before the cap counts it.
        "Accept-Encoding": "identity",
        **_conditional(since),
    }
    # The system's trust store, as urllib used, not httpx's bundled one: a site signed by a CA the
    # operator installed on the machine keeps working.
    trust = ssl.create_default_context()
    with httpx.Client(headers=headers, timeout=timeout, verify=trust) as client:
        request = _first_request(client, url)
        for _ in range(MAX_REDIRECTS + 1):
            with closing(client.send(request, stream=True)) as response:
                if not response.has_redirect_location:
                    return _answer(response, name, since, max_bytes)
                target = response.url.join(response.headers["Location"])
            if not is_web_url(str(target)):
                raise _unreadable(name, f"refused redirect to {display_name(str(target))}")
            request = client.build_request("GET", target)
    raise _unreadable(name, f"more than {MAX_REDIRECTS} redirects")


def _first_request(client: httpx.Client, url: str) -> httpx.Request:
    """A request for url; user:password in it become HTTP basic auth, sent to url alone."""
    parts = urlsplit(url)
    if parts.username is None:
        return client.build_request("GET", url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return client.build_request(
        "GET",
        urlunsplit(parts._replace(netloc=netloc)),
        headers={"Authorization": f"Basic {b64encode(pair.encode()).decode()}"},
    )


def _conditional(since: Validators) -> dict[str, str]:
    headers = {"If-None-Match": since.etag, "If-Modified-Since": since.last_modified}
    return {key: value for key, value in headers.items() if value}


def _answer(
    response: httpx.Response, name: str, since: Validators, max_bytes: int
) -> Fetched | None:
    if response.status_code == 304 and _conditional(since):
        return None
    if not response.is_success:  # a 304 nobody asked for too
        raise _unreadable(name, f"HTTP {response.status_code} {one_line(response.reason_phrase)}")
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise _too_large(name, max_bytes)
    data = _read_at_most(response.iter_raw(_PIECE_BYTES), name, max_bytes)
    validators = Validators(
        _validator(response.headers.get("ETag")), _validator(response.headers.get("Last-Modified"))
    )
    return Fetched(data, _base(str(response.url)), validators)


def _validator(value: str | None) -> str | None:
    # Anything else could not be stored whole, or sent back as a header.
    fits = value and len(value) <= MAX_VALIDATOR_CHARS and value.isascii() and value.isprintable()
    return value if fits else None


def _base(url: str) -> str:
    """url without credentials, query or fragment: a relative link must not carry a feed's token."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment=""))


def _read_at_most(pieces: Iterator[bytes], name: str, max_bytes: int) -> bytes:
    """All of pieces, refused as soon as they pass max_bytes: never more than that is held."""
    kept, size = [], 0
    for piece in pieces:
        kept.append(piece)
        size += len(piece)
        if size > max_bytes:
            raise _too_large(name, max_bytes)
    return b"".join(kept)
