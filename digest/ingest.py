"""Articles in: RSS 2.0, Atom, JSON Feed and JSON lists, as drafts with per-entry errors.

The only module that imports feedparser and defusedxml. Feeds are hostile input (RELIABILITY.md
rule 13): reads are bounded, entity declarations are refused before feedparser sees the bytes,
a broken document is one InvalidInput naming its source, and a bad entry is a RowError
while the others import.
"""

from __future__ import annotations

import calendar
import html
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as safe_xml
import feedparser
import nh3
from defusedxml import DefusedXmlException

from digest.config import origin_of
from digest.domain import ArticleDraft
from digest.errors import InvalidInput
from digest.rows import Collector, Parsed
from digest.text import CONTROLS, is_web_url, one_line, shown, tag_key

# Caps on what one article may bring in; longer values are cut and end with "…".
MAX_TITLE_CHARS = 300
MAX_SUMMARY_CHARS = 5_000  # of sanitised HTML, closing tags included
MAX_CATEGORY_CHARS = 80
# Longer URLs (of articles and pictures) are refused, not cut: a cut URL points elsewhere. The
# database's columns hold this many.
MAX_URL_CHARS = 2_000
MAX_READING_MINUTES = 999
WORDS_PER_MINUTE = 230
DEFAULT_CATEGORY = "General"
SUMMARY_TAGS = frozenset({"p", "br", "em", "strong", "a", "ul", "ol", "li", "b", "i"})


@dataclass(frozen=True, slots=True)
class ImportRules:
    """What the settings say about the articles coming in."""

    featured_tags: frozenset[str] = frozenset()  # as text.tag_key gives them
    # The site's own origin (DIGEST_SITE_URL's): its pictures are kept over plain http too, so
    # that the demo, which is the site on http://127.0.0.1, shows its sample pictures. Any other
    # picture must be https: a mail client loads it on open, and http leaks the reader's reading.
    own_origin: str | None = None


NO_RULES = ImportRules()


# --- text ---------------------------------------------------------------------------------------

_TAG = re.compile(r"<[^>]*>")
_HTML_SPACE = re.compile(r"[ \t\r\n\f]+")  # not \s: that would also fold U+00A0


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _keep_attribute(tag: str, attribute: str, value: str) -> str | None:
    # Only absolute web links survive: a relative href would resolve against the mail client.
    if tag == "a" and attribute == "href":
        return value if is_web_url(value) else None
    return value if (tag, attribute) == ("a", "rel") else None


def _sanitise(fragment: str) -> str:
    return nh3.clean(
        fragment,
        tags=set(SUMMARY_TAGS),
        attributes={"a": {"href"}},
        attribute_filter=_keep_attribute,
        url_schemes={"http", "https"},
        link_rel="noopener noreferrer",
    )


def _summary_html(fragment: str) -> str:
    cleaned = _HTML_SPACE.sub(" ", _sanitise(fragment)).strip()
    budget = MAX_SUMMARY_CHARS
    while len(cleaned) > MAX_SUMMARY_CHARS:
        # Cut outside any tag or entity, then sanitise again so open tags are closed; closing
        # tags count too, so shrink the budget until the result fits.
        head = cleaned[:budget]
        if head.rfind("<") > head.rfind(">"):
            head = head[: head.rfind("<")]
        if head.rfind("&") > head.rfind(";"):
            head = head[: head.rfind("&")]
        capped = _sanitise(head.rstrip() + "…")
        budget -= max(len(capped) - MAX_SUMMARY_CHARS, 0)
        cleaned = capped if len(capped) <= MAX_SUMMARY_CHARS else cleaned
    return cleaned


def _plain_text(fragment: str) -> str:
    return html.unescape(_TAG.sub(" ", _sanitise(fragment)))


def estimate_reading_minutes(text: str) -> int:
    words = len(text.split())
    return min(MAX_READING_MINUTES, max(1, math.ceil(words / WORDS_PER_MINUTE)))


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# --- articles -----------------------------------------------------------------------------------


def parse_articles(
    data: bytes,
    *,
    source: str,
    now: datetime,
    base: str | None = None,
    rules: ImportRules = NO_RULES,
) -> Parsed[ArticleDraft]:
    """Drafts from a JSON list (the first non-space byte is "["), a JSON Feed ("{"), or RSS or Atom.

    base is the address the document came from: relative article and picture links resolve
    against it (and against an xml:base); without one they are refused.
    """
    body = data.removeprefix(b"\xef\xbb\xbf")
    start = body.lstrip()[:1]
    convert: Callable[[Any, datetime], ArticleDraft]
    if start == b"[":
        entries = _json(body, source)
        convert = partial(article_from_fields, base=base, rules=rules)
    elif start == b"{":
        entries = _json_feed_items(_json(body, source), source)
        convert = partial(_json_feed_article, base=base, rules=rules)
    else:
        entries = _feed_entries(body, source, base)
        convert = partial(_feed_article, rules=rules)
    collector: Collector[ArticleDraft] = Collector("entry", key=lambda draft: draft.url)
    for number, entry in enumerate(entries, start=1):
        collector.add(number, partial(convert, entry, now))
    return collector.parsed


def _article(
    *,
    url: str,
    title: str,
    summary: str,
    body_text: str,
    category: str,
    minutes: int | None,
    published: datetime | None,
    now: datetime,
    pictures: Iterable[str],
    tags: Iterable[str] = (),
    featured: bool = False,
    rules: ImportRules,
) -> ArticleDraft:
    url = url.strip()
    if not url:
        raise InvalidInput("no url")
    problem = _link_problem(url)
    if problem:
        raise InvalidInput(f"url {problem}")
    title = _cut(one_line(title), MAX_TITLE_CHARS)
    if not title:
        raise InvalidInput("no title")
    if minutes is None:
        minutes = estimate_reading_minutes(f"{_plain_text(summary)} {body_text}")
    picks = rules.featured_tags
    return ArticleDraft(
        url=url,
        title=title,
        summary=_summary_html(summary),
        category=_cut(one_line(category), MAX_CATEGORY_CHARS) or DEFAULT_CATEGORY,
        reading_minutes=minutes,
        published_at=_as_utc(published or now),
        image_url=_picture(pictures, rules),
        featured=featured or any(tag_key(tag) in picks for tag in (category, *tags)),
    )


def _link_problem(url: str) -> str | None:
    """Why url cannot be a link in a digest, or None."""
    if len(url) > MAX_URL_CHARS:
        return f"longer than {MAX_URL_CHARS} characters"
    if CONTROLS.search(url) or " " in url:
        return f"contains a space or control character: {shown(url)}"
    if not is_web_url(url):
        return f"must be http or https: {shown(url)}"
    return None


def _picture(candidates: Iterable[str], rules: ImportRules) -> str | None:
    """The first candidate fit to show, as it is; a bad picture is no picture, never an error."""
    for candidate in candidates:
        url = candidate.strip()
        if _link_problem(url) is not None:
            continue
        parts = urlsplit(url)
        # Credentials would go to the reader's mail client, and from it to the picture's host.
        if parts.username is not None or parts.password is not None:
            continue
        if parts.scheme.lower() == "https" or origin_of(url) == rules.own_origin:
            return url
    return None


class _Images(HTMLParser):
    """The src of each <img> in a fragment, but a tracking pixel's (declared 0 or 1 px)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        src = values.get("src")
        sizes = (values.get("width"), values.get("height"))
        if tag == "img" and src and not any(_pixel(size) for size in sizes):
            self.found.append(src)


def _pixel(size: str | None) -> bool:
    return size is not None and size.strip().lower().removesuffix("px") in ("0", "1")


def _images_in(fragment: str, base: str | None = None) -> Iterator[str]:
    # From the HTML as given, not the summary, which has no <img>. nh3 first: it leaves HTML
    # that HTMLParser cannot choke on (it raises on a "<![" that is no marked section).
    images = nh3.clean(fragment, tags={"img"}, attributes={"img": {"src", "width", "height"}})
    parser = _Images()
    parser.feed(images)
    parser.close()
    return (_absolute(src, base) for src in parser.found)


def _json(body: bytes, source: str) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8, bad JSON, absurd nesting or digits
        raise InvalidInput(f"cannot import {source}: not valid JSON: {one_line(str(exc))}") from exc


def _absolute(url: str, base: str | None) -> str:
    if not base or not url.strip():
        return url
    try:
        return urljoin(base, url.strip())
    except ValueError:  # a broken IPv6 host: _article refuses it as it stands
        return url


def article_from_fields(
    entry: Any,
    now: datetime,
    base: str | None = None,
    rules: ImportRules = NO_RULES,
) -> ArticleDraft:
    """One article as a JSON object gives it, or `digest articles add` does."""
    if not isinstance(entry, dict):
        raise InvalidInput("not an object")
    minutes = entry.get("reading_minutes")
    if minutes is not None and (
        type(minutes) is not int or not 1 <= minutes <= MAX_READING_MINUTES
    ):
        raise InvalidInput(
            f"reading_minutes must be a whole number from 1 to {MAX_READING_MINUTES}"
        )
    published = entry.get("published_at")
    try:
        # In UTC here: an offset can push year 1 or 9999 out of range (OverflowError).
        published_at = None if published is None else _as_utc(datetime.fromisoformat(published))
    except (TypeError, ValueError, OverflowError) as exc:
        text = shown(str(published))
        raise InvalidInput(f"published_at is not an ISO 8601 date-time: {text}") from exc
    featured = entry.get("featured", False)
    if type(featured) is not bool:
        raise InvalidInput("featured must be true or false")
    summary = _json_text(entry, "summary")
    image = entry.get("image")
    return _article(
        url=_absolute(_json_text(entry, "url"), base),
        title=_json_text(entry, "title"),
        summary=summary,
        body_text="",
        category=_json_text(entry, "category"),
        minutes=minutes,
        published=published_at,
        now=now,
        pictures=_chain([_absolute(image, base)] if isinstance(image, str) else [], summary, base),
        featured=featured,
        rules=rules,
    )


def _json_text(entry: dict[str, Any], key: str) -> str:
    value = entry.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"{key} must be a string")
    return value or ""


# --- JSON Feed ----------------------------------------------------------------------------------

# JSON Feed 1.0 and 1.1 (https://jsonfeed.org/version/1.1): the version names the format.
JSON_FEED_VERSION = "https://jsonfeed.org/version/1"


def _json_feed_items(document: dict[str, Any], source: str) -> list[Any]:
    version = document.get("version")
    if not isinstance(version, str) or not version.startswith(JSON_FEED_VERSION):
        raise InvalidInput(
            f"cannot import {source}: a JSON object, but its version is not JSON Feed 1.0 or 1.1"
        )
    items = document.get("items")
    if not isinstance(items, list):
        raise InvalidInput(f"cannot import {source}: a JSON Feed without an items list")
    return items


def _json_feed_article(
    item: Any, now: datetime, base: str | None, rules: ImportRules
) -> ArticleDraft:
    if not isinstance(item, dict):
        raise InvalidInput("not an object")
    # url is the article; external_url what a link post points at; id is often the permalink.
    url = _str(item.get("url")).strip() or _str(item.get("external_url")).strip()
    if not url and is_web_url(_str(item.get("id"))):
        url = _str(item.get("id"))
    # summary and content_text are plain text, content_html is HTML.
    content = _str(item.get("content_html")) or html.escape(_str(item.get("content_text")))
    summary = html.escape(_str(item.get("summary"))) or content
    listed = item.get("tags")
    tags = [tag for tag in listed if isinstance(tag, str)] if isinstance(listed, list) else []
    published = item.get("date_published")
    # image is the article's main picture, banner_image one to show above it: a second choice.
    given = [_absolute(_str(item.get(key)), base) for key in ("image", "banner_image")]
    return _article(
        url=_absolute(url, base),
        title=_str(item.get("title")),
        summary=summary,
        body_text=_plain_text(content) if content != summary else "",
        category=next(iter(tags), ""),
        minutes=None,
        published=_json_feed_time(published) or _json_feed_time(item.get("date_modified")),
        now=now,
        pictures=_chain(given, content, base),
        tags=tags,
        rules=rules,
    )


def _json_feed_time(value: Any) -> datetime | None:
    # A date that cannot be read is no date, as in RSS and Atom: the article gets the import time.
    try:
        return _as_utc(datetime.fromisoformat(value)) if isinstance(value, str) else None
    except (ValueError, OverflowError):
        return None


# --- RSS and Atom -------------------------------------------------------------------------------


def _feed_entries(body: bytes, source: str, base: str | None) -> list[Any]:
    try:
        # Entity declarations are refused, never expanded: that stops billion-laughs bombs and
        # external entities (file:///etc/passwd) before feedparser's own parser sees the bytes.
        safe_xml.fromstring(body, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise InvalidInput(f"cannot import {source}: refused unsafe XML: {exc!s}") from exc
    except ParseError as exc:  # also bytes that are not in the declared encoding
        raise InvalidInput(f"cannot import {source}: malformed XML: {exc}") from exc
    except (ValueError, LookupError) as exc:  # an encoding expat cannot read
        raise InvalidInput(f"cannot import {source}: unreadable encoding: {exc}") from exc
    # A stream, never a str or bytes: feedparser would treat a str as a URL or a path. It resolves
    # relative links against xml:base and the Content-Location it is given; given headers without
    # a Content-Type, it would call every feed broken.
    headers = {"content-type": "application/xml"} | ({"content-location": base} if base else {})
    result: Mapping[str, Any] = feedparser.parse(io.BytesIO(body), response_headers=headers)
    entries: list[Any] = list(result.get("entries") or [])
    if result.get("bozo") and not entries:
        problem = one_line(str(result.get("bozo_exception", "")))
        raise InvalidInput(f"cannot import {source}: not a readable feed: {problem}")
    if not result.get("version"):
        raise InvalidInput(f"cannot import {source}: not an RSS or Atom feed")
    return entries


def _feed_article(entry: Mapping[str, Any], now: datetime, rules: ImportRules) -> ArticleDraft:
    contents = [
        _html_of(item, item.get("value"))
        for item in entry.get("content") or []
        if isinstance(item, Mapping)
    ]
    # feedparser copies an Atom entry's content into its summary when it has none.
    summary = _html_of(entry.get("summary_detail"), entry.get("summary")) or next(
        iter(contents), ""
    )
    title = _str(entry.get("title"))
    if _detail_type(entry.get("title_detail")) == "text/html":
        title = _plain_text(title)
    tags = _feed_tags(entry)
    return _article(
        url=_str(entry.get("link")),
        title=title,
        summary=summary,
        body_text=" ".join(_plain_text(item) for item in contents if item != summary),
        category=next(iter(tags), ""),
        minutes=None,
        published=_feed_time(entry),
        now=now,
        # feedparser has resolved the links in the content already, not the media ones.
        pictures=_chain(_feed_media(entry), " ".join([summary, *contents])),
        tags=tags,
        rules=rules,
    )


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _detail_type(detail: Any) -> str:
    return _str(detail.get("type")) if isinstance(detail, Mapping) else ""


def _html_of(detail: Any, value: Any) -> str:
    text = _str(value)
    return html.escape(text) if _detail_type(detail) == "text/plain" else text


def _feed_tags(entry: Mapping[str, Any]) -> list[str]:
    """Each category (RSS) or category term (Atom), in order."""
    tags = (tag for tag in entry.get("tags") or [] if isinstance(tag, Mapping))
    return [name for tag in tags if (name := _str(tag.get("term")) or _str(tag.get("label")))]


def _feed_media(entry: Mapping[str, Any]) -> Iterator[str]:
    """The pictures an RSS or Atom entry names, the largest kind first: Media RSS content, its
    thumbnail, then an image enclosure (RSS <enclosure>, Atom <link rel="enclosure">)."""
    # The base in effect at the entry (its xml:base, else the feed's URL), as its link used.
    detail = entry.get("title_detail")
    base = _str(detail.get("base")) if isinstance(detail, Mapping) else ""
    media = [item for item in entry.get("media_content") or [] if isinstance(item, Mapping)]
    for item in media:
        if _str(item.get("medium")) == "image" or _is_image(item):
            yield _absolute(_str(item.get("url")), base)
    for item in entry.get("media_thumbnail") or []:
        if isinstance(item, Mapping):
            yield _absolute(_str(item.get("url")), base)
    for link in entry.get("links") or []:
        if isinstance(link, Mapping) and link.get("rel") == "enclosure" and _is_image(link):
            yield _absolute(_str(link.get("href")), base)


def _is_image(item: Mapping[str, Any]) -> bool:
    return _str(item.get("type")).strip().lower().startswith("image/")


def _chain(given: Iterable[str], fragment: str, base: str | None = None) -> Iterator[str]:
    """The pictures an entry names, then, failing those, the ones in its HTML."""
    yield from given
    yield from _images_in(fragment, base)


def _feed_time(entry: Mapping[str, Any]) -> datetime | None:
    parsed = entry.get("published_parsed")
    # `in` first: reading an absent updated_parsed makes feedparser warn and fall back.
    if not parsed and "updated_parsed" in entry:
        parsed = entry.get("updated_parsed")
    try:
        return datetime.fromtimestamp(calendar.timegm(parsed), UTC) if parsed else None
    except (OverflowError, ValueError, OSError, TypeError):
        return None
