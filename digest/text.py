"""Text helpers several modules share: one-line messages, values as shown, safe names for sources."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

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


def tag_key(tag: str) -> str:
    """A category or tag as DIGEST_FEATURED_TAGS matches it: without regard to case or spacing."""
    return one_line(tag).casefold()
