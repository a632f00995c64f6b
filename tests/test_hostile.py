"""Hostile input end to end (RELIABILITY rules 11-14): text and addresses through the real renderer,
hostile feeds through the import path the CLI and the daemon share, and the documented caps.

Finer cases live beside the code they test: test_render.py (escaping, header folding per boundary),
test_ingest.py (each hostile document parsed alone, caps on JSON), test_addresses.py.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import functools
import json
import logging
import re
import string
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cli_fixtures import Cli
from feed_server import HUGE_FEED_BYTES, huge_feed_pieces
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from samples import DIGEST_ONLY_HEADERS, LINE_BOUNDARIES, LINKS, PERIOD_KEYS, SITE

from digest import database, domain
from digest.addresses import MAX_ADDRESS_CHARS, normalise_address
from digest.config import PROJECT_TEMPLATES
from digest.domain import Article, Frequency
from digest.errors import InvalidInput
from digest.feeds import FeedPoller, import_articles
from digest.ingest import (
    MAX_CATEGORY_CHARS,
    MAX_SUMMARY_CHARS,
    MAX_TITLE_CHARS,
    MAX_URL_CHARS,
    parse_articles,
)
from digest.render import Renderer
from digest.sources import MAX_SOURCE_BYTES
from digest.store import Store
from digest.text import display_name

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
NOW = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)

# Every boundary str.splitlines() knows ("\r\n" is two of them).
ANY_LINE_BOUNDARY = re.compile(f"[{re.escape(LINE_BOUNDARIES)}]")


# --- rendering ----------------------------------------------------------------------------------

# Markup, template syntax, encoded words and line breaks that article text might smuggle in.
SNIPPETS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">click</a>',
    '<a href="https://ok.example/">fine</a>',
    "<x-evil>",
    "</td></tr></table><iframe src=//evil.example>",
    '"><svg onload=alert(1)>',
    "<p onclick=x() style=color:red>p</p>",
    "<style>body{display:none}</style>",
    "<div class=summary>",
    "</div>",
    "<em>",
    "<!--",
    "-->",
    "<![CDATA[",
    "]]>",
    "&lt;b&gt;",
    "&amp;",
    "{{ site.name }}",
    "{% raw %}",
    "=?utf-8?q?=0D=0ABcc:_x?=",
    "Bcc: victim@example.com",
    *LINE_BOUNDARIES,
    "\r\n",
]
hostile_text = st.lists(st.one_of(st.text(max_size=20), st.sampled_from(SNIPPETS)), max_size=6).map(
    "".join
)

# Addresses the validator accepts, international ones included; and a few that only look valid.
ATEXT = string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~"
INTERNATIONAL = "éñüßçøжΩ日本語"
ENCODED_WORDS = ["=?utf-8?q?=0D=0A?=", "=?utf-8?b?DQpCY2M6IHg=?=", "=?utf-8?q?=E2=80=A8?="]
local_parts = st.one_of(
    st.lists(st.text(ATEXT + INTERNATIONAL, min_size=1, max_size=10), min_size=1, max_size=3).map(
        ".".join
    ),
    st.sampled_from(ENCODED_WORDS),
)
labels = st.from_regex(r"[a-zA-Z0-9ü]([a-zA-Z0-9ü-]{0,10}[a-zA-Z0-9ü])?", fullmatch=True)
domains = st.builds(
    lambda names, tld: ".".join([*names, tld]),
    st.lists(labels, min_size=1, max_size=2),
    st.sampled_from(["org", "com", "example", "DE", "рф"]),
)
address_candidates = st.one_of(
    st.emails(), st.builds(lambda local, domain: f"{local}@{domain}", local_parts, domains)
)


def normalised_or_none(raw: str) -> str | None:
    try:
        return normalise_address(raw)
    except InvalidInput:
        return None


valid_addresses = address_candidates.map(normalised_or_none).filter(lambda a: a is not None)


class _Structure(HTMLParser):
    """The markup of a digest's HTML part: tags, comments and declarations, split into the
    template's own and those inside an article summary (sanitised HTML, the one place where
    data may bring elements)."""

    def __init__(self) -> None:
        super().__init__()
        self.template: list[tuple[str, ...]] = []
        self.summary_tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.summary_other: list[str] = []
        self._depth = 0  # of <div> inside <div class="summary">; 0 outside

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._depth:
            self._depth += tag == "div"
            self.summary_tags.append((tag, attrs))
            return
        self._depth = int(tag == "div" and ("class", "summary") in attrs)
        # A picture's address and its alt text (the title) are data: the same in any digest's
        # template, their values aside.
        shape = [(name, "DATA" if name in ("src", "alt") else value) for name, value in attrs]
        self.template.append(("start", tag, repr(shape)))

    def handle_endtag(self, tag: str) -> None:
        if self._depth:
            self._depth -= tag == "div"
            if self._depth:
                return
        self.template.append(("end", tag))

    def _other(self, kind: str, data: str) -> None:
        if self._depth:
            self.summary_other.append(f"{kind} {data}")
        else:
            self.template.append((kind, data))

    def handle_comment(self, data: str) -> None:
        self._other("comment", data)

    def handle_decl(self, decl: str) -> None:
        self._other("decl", decl)

    def unknown_decl(self, data: str) -> None:
        self._other("unknown_decl", data)

    def handle_pi(self, data: str) -> None:
        self._other("pi", data)


def structure(html: str) -> _Structure:
    parser = _Structure()
    parser.feed(html)
    parser.close()
    return parser


@functools.cache
def renderer() -> Renderer:
    return Renderer(PROJECT_TEMPLATES, SITE)  # once: hypothesis runs a test body many times


def render(
    articles: list[Article], recipient: str, frequency: Frequency, *, one_click: bool
) -> bytes:
    body = renderer().digest_body(frequency, articles, PERIOD_KEYS[frequency])
    return renderer().digest_message(
        body,
        recipient,
        LINKS,
        message_id="<20261123080000.42.weekly@digest.example.org>",
        date=datetime(2026, 11, 23, 8, 0, tzinfo=UTC),
        one_click=one_click,
    )


def make_article(
    index: int, title: str, summary: str, category: str, picture: str | None = None
) -> Article:
    return Article(
        seq=100 - index,
        url=f"https://miasfeed.example/articles/{index}",
        title=title,
        summary=summary,
        category=category,
        reading_minutes=3,
        published_at=datetime(2026, 11, 20, tzinfo=UTC),
        image_url=picture,
        featured=index % 2 == 1,
    )


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def html_part(raw: bytes) -> str:
    found = parse(raw).get_body(("html",))
    assert found is not None
    content = found.get_content()
    assert isinstance(content, str)
    return content


# What the template itself puts inside a summary when it is given every tag the sanitiser keeps.
EVERY_SUMMARY_TAG = (
    '<p>p <a href="https://ok.example/">link</a> <a>bare</a> <em>e</em> <strong>s</strong> '
    "<b>b</b> <i>i</i><br></p><ul><li>u</li></ul><ol><li>o</li></ol><blockquote>q</blockquote>"
)


@functools.cache
def summary_vocabulary() -> frozenset[tuple[str, str, str | None]]:
    """Each (tag, attribute, value) the template gives summary markup; "" names no attribute."""
    raw = render(
        [make_article(0, "Title", EVERY_SUMMARY_TAG, "News")],
        "reader@example.org",
        Frequency.WEEKLY,
        one_click=True,
    )
    found = structure(html_part(raw))
    assert {tag for tag, _ in found.summary_tags} >= {"p", "a", "em", "ul", "li", "blockquote"}
    return frozenset(
        (tag, name, "URL" if name == "href" else value)
        for tag, attrs in found.summary_tags
        for name, value in [*attrs, ("", None)]
    )


def assert_headers_are_exactly(raw: bytes, expected: list[str]) -> None:
    # Strict UTF-8: ASCII, or an SMTPUTF8 address as UTF-8; any boundary in a header line is a leak.
    lines = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8").split("\r\n")
    names = []
    for line in lines:
        assert not ANY_LINE_BOUNDARY.search(line), f"line boundary in a header line: {line!r}"
        if line[:1] in (" ", "\t"):
            assert line.strip(), "a folded line must carry text"
            continue
        match = re.match(r"([A-Za-z-]+): ", line)
        assert match, f"not a header line: {line!r}"
        names.append(match[1])
    assert Counter(names) == Counter(expected)
    message = parse(raw)
    assert Counter(message.keys()) == Counter(expected)
    for name, value in message.items():
        assert len(f"x{value}x".splitlines()) == 1, f"{name} carries a line break: {value!r}"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    entries=st.lists(
        st.tuples(hostile_text, hostile_text, st.integers(0, 2)), min_size=1, max_size=4
    ),
    categories=st.tuples(hostile_text, hostile_text, hostile_text),
    recipient=valid_addresses,
    frequency=st.sampled_from(Frequency),
    one_click=st.booleans(),
)
def test_hostile_titles_summaries_categories_and_addresses_render_only_the_templates_markup(
    entries: list[tuple[str, str, int]],
    categories: tuple[str, str, str],
    recipient: str,
    frequency: Frequency,
    one_click: bool,
) -> None:
    # Category k ends in " #k", so two articles share a category exactly when they share k.
    # Each has a picture, its address hostile after the scheme and host import checks.
    hostile = [
        make_article(i, title, summary, f"{categories[k]} #{k}", f"https://img.example/{title}")
        for i, (title, summary, k) in enumerate(entries)
    ]
    plain = [
        make_article(
            i, f"Title {i}", "<p>Plain words.</p>", f"Category {k}", "https://img.example/"
        )
        for i, (_, _, k) in enumerate(entries)
    ]
    raw = render(hostile, recipient, frequency, one_click=one_click)

    expected = [*DIGEST_ONLY_HEADERS] + ["List-Unsubscribe-Post"] * one_click
    assert_headers_are_exactly(raw, expected)
    message = parse(raw)
    assert message.defects == []
    assert message["To"] == recipient
    edition = domain.edition(frequency, PERIOD_KEYS[frequency])
    assert message["Subject"] == f"Your {frequency.value} digest · {edition}"

    # Outside the summaries, the markup is exactly what plain data gives, tag for tag and
    # attribute for attribute: no title, category or address added or changed an element.
    html = structure(html_part(raw))
    plain_raw = render(plain, recipient, frequency, one_click=one_click)
    assert html.template == structure(html_part(plain_raw)).template
    # Inside them, only the sanitiser's tags and attributes, as the template styles them.
    vocabulary = summary_vocabulary()
    assert html.summary_other == []
    for tag, attrs in html.summary_tags:
        for name, value in [*attrs, ("", None)]:
            if name == "href":
                assert value is not None
                assert urlsplit(value).scheme in ("http", "https"), value
            shown_value = "URL" if name == "href" else value
            assert (tag, name, shown_value) in vocabulary, f"<{tag} {name}={value!r}> from data"


# --- addresses ----------------------------------------------------------------------------------


@settings(max_examples=200)
@given(raw=address_candidates)
def test_an_address_is_refused_in_one_line_or_normalised_to_one_that_parses_back_as_itself(
    raw: str,
) -> None:
    try:
        address = normalise_address(raw)
    except InvalidInput as exc:
        assert str(exc).startswith("not a valid email address: ")
        assert str(exc).splitlines() == [str(exc)]
        return
    assert normalise_address(address) == address
    assert len(address) <= MAX_ADDRESS_CHARS
    assert not ANY_LINE_BOUNDARY.search(address)
    domain = address.rpartition("@")[2]
    assert domain.isascii()
    assert domain == domain.lower()
    # A mail reader parsing the To header (as text: SMTPUTF8 headers are UTF-8) finds this one
    # address and nothing else.
    header = email.message_from_string(f"To: {address}\r\n\r\n", policy=email.policy.default)["To"]
    assert str(header) == address
    assert [a.addr_spec for a in header.addresses] == [address]


@pytest.mark.parametrize("local_part", ENCODED_WORDS)
def test_an_address_shaped_like_an_encoded_word_is_refused(local_part: str) -> None:
    # The validator accepts it, but a reader's parser would decode it into a line break.
    with pytest.raises(InvalidInput, match="looks like an RFC 2047 encoded word"):
        normalise_address(f"{local_part}@example.org")


@settings(max_examples=100)
@given(
    raw=address_candidates.filter(lambda a: normalised_or_none(a) is not None),
    boundary=st.sampled_from([*LINE_BOUNDARIES, "\r\n", "\x00", "\x7f"]),
    where=st.floats(0, 1),
)
def test_a_line_boundary_anywhere_in_a_valid_address_is_refused(
    raw: str, boundary: str, where: float
) -> None:
    cut = round(len(raw) * where)
    with pytest.raises(InvalidInput, match=r"^not a valid email address: [^\n]*$"):
        normalise_address(raw[:cut] + boundary + raw[cut:])


# --- feeds --------------------------------------------------------------------------------------

HOSTILE_FILES = {
    "billion_laughs.xml": "cannot import {name}: refused unsafe XML",
    "external_entity.xml": "cannot import {name}: refused unsafe XML",
    "truncated.xml": "cannot import {name}: malformed XML",
}
# Bytes that are not in the encoding the feed declares, and an encoding nobody knows.
BAD_UTF8 = (
    b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
    b"<item><title>caf\xe9 \xff</title><link>https://miasfeed.example/bad</link></item>"
    b"</channel></rss>"
)
UNKNOWN_ENCODING = (
    b'<?xml version="1.0" encoding="klingon"?><rss version="2.0"><channel><title>t</title>'
    b"<item><title>Q'apla'</title><link>https://miasfeed.example/klingon</link></item>"
    b"</channel></rss>"
)
TOO_LARGE = f"cannot read {{name}}: larger than {MAX_SOURCE_BYTES} bytes"
HUGE_ROUTES = ["/huge-feed", "/huge-feed-unsized", "/huge-feed-chunked"]


@pytest.fixture
def huge_file(tmp_path: Path) -> Iterator[Path]:
    """The 50 MB feed as a file, removed afterwards (pytest keeps recent tmp_path folders)."""
    path = tmp_path / "huge.xml"
    with path.open("wb") as file:
        for piece in huge_feed_pieces(1 << 20):
            file.write(piece)
    assert path.stat().st_size == HUGE_FEED_BYTES
    yield path
    path.unlink()


def hostile_sources(folder: Path, huge_file: Path, http_base: str) -> dict[str, str]:
    """Each hostile feed, as a source, with the start of the one line that must refuse it."""
    sources = {str(DATA / name): reason for name, reason in HOSTILE_FILES.items()}
    for name, body, reason in [
        ("bad_utf8.xml", BAD_UTF8, "cannot import {name}: malformed XML"),
        ("klingon.xml", UNKNOWN_ENCODING, "cannot import {name}: unreadable encoding"),
    ]:
        (folder / name).write_bytes(body)
        sources[str(folder / name)] = reason
    sources[str(huge_file)] = TOO_LARGE
    for route in HUGE_ROUTES:
        sources[f"{http_base}{route}?token=s3cret"] = TOO_LARGE
    return {source: reason.format(name=display_name(source)) for source, reason in sources.items()}


def good_sources(http_base: str) -> dict[str, set[str]]:
    """Good feeds, one a file and one over HTTP, with the article URLs each brings."""
    files = {str(DATA / "feed_atom.xml"): DATA / "feed_atom.xml"}
    files[f"{http_base}/feed.xml"] = DATA / "feed_rss.xml"  # what the server sends
    return {
        source: {d.url for d in parse_articles(path.read_bytes(), source="", now=NOW).items}
        for source, path in files.items()
    }


def test_one_poll_refuses_each_hostile_feed_by_name_and_imports_the_good_ones(
    store: Store,
    tmp_path: Path,
    huge_file: Path,
    http_base: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hostile = hostile_sources(tmp_path, huge_file, http_base)
    good = good_sources(http_base)
    caplog.set_level(logging.INFO, logger="digest.feeds")

    tracemalloc.start()
    try:
        asyncio.run(FeedPoller(store, [*hostile, *good], lambda: NOW).poll())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    imported = {a.url for a in store.recent_articles(100)}
    assert imported == set().union(*good.values())
    states = store.feed_states([*hostile, *good])
    for source in good:
        assert (states[source].ok_at, states[source].last_error) == (NOW, None)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for source, reason in hostile.items():
        assert states[source].failing_since == NOW, source
        assert (states[source].last_error or "").startswith(reason), states[source].last_error
        assert any(w.startswith(f"feed {display_name(source)} failed") for w in warnings), source
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "root:" not in logged  # /etc/passwd was never read
    assert "s3cret" not in logged
    # Four 50 MB bodies were offered at once: the two without a length stream up to the cap each.
    assert peak < 2 * MAX_SOURCE_BYTES + 5_000_000, f"peak {peak / 1e6:.1f} MB"


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    engine = database.connect(f"sqlite:///{tmp_path / 'digest.db'}")
    database.upgrade(engine)
    yield Store(engine)
    engine.dispose()


@pytest.mark.parametrize("where", ["file", *HUGE_ROUTES])
def test_a_50_mb_feed_is_refused_having_held_no_more_than_the_byte_cap(
    where: str, sqlite_store: Store, http_base: str, request: pytest.FixtureRequest
) -> None:
    file = where == "file"  # written only when used: 50 MB
    source = str(request.getfixturevalue("huge_file")) if file else f"{http_base}{where}"
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInput) as refused:
            import_articles(sqlite_store, source, NOW)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(refused.value) == TOO_LARGE.format(name=display_name(source))
    assert peak < MAX_SOURCE_BYTES + 1_000_000, f"peak {peak / 1e6:.1f} MB"
    assert sqlite_store.recent_articles(1) == []


def test_articles_import_refuses_each_hostile_feed_in_one_line_naming_it(
    upgraded: Cli, tmp_path: Path, huge_file: Path, http_base: str
) -> None:
    for source, reason in hostile_sources(tmp_path, huge_file, http_base).items():
        result = upgraded("articles", "import", source, "--now", NOW.isoformat())
        assert result.code == 2, (source, result)
        assert result.err.splitlines() == [result.err.rstrip("\n")]
        assert result.err.startswith(f"error: {reason}"), result.err
        assert "s3cret" not in result.err
    assert upgraded("articles", "list").out == ""
    result = upgraded("articles", "import", str(DATA / "feed_atom.xml"), "--now", NOW.isoformat())
    assert "added 2, updated 0" in result.out


# --- caps ---------------------------------------------------------------------------------------


def rss_item(url: str, title: str, summary: str, category: str) -> bytes:
    def text(value: str) -> str:
        return value.replace("&", "&amp;").replace("<", "&lt;")

    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        f"<item><title>{text(title)}</title><link>{text(url)}</link>"
        f"<description>{text(summary)}</description><category>{text(category)}</category>"
        "</item></channel></rss>"
    ).encode()


def one_json(**entry: str) -> bytes:
    return json.dumps([{"url": "https://miasfeed.example/a", "title": "A", **entry}]).encode()


@pytest.mark.parametrize("kind", ["json", "rss"])
def test_title_summary_and_category_at_their_cap_are_kept_and_one_past_it_is_cut(
    kind: str,
) -> None:
    def draft(title: str, summary: str, category: str) -> tuple[str, str, str]:
        url = "https://miasfeed.example/a"
        data = (
            rss_item(url, title, summary, category)
            if kind == "rss"
            else one_json(title=title, summary=summary, category=category)
        )
        (item,) = parse_articles(data, source="caps", now=NOW).items
        return item.title, item.summary, item.category

    at = ("t" * MAX_TITLE_CHARS, "s" * MAX_SUMMARY_CHARS, "c" * MAX_CATEGORY_CHARS)
    assert draft(*at) == at
    title, summary, category = draft(*(value + "x" for value in at))
    assert (len(title), len(summary), len(category)) == (
        MAX_TITLE_CHARS,
        MAX_SUMMARY_CHARS,
        MAX_CATEGORY_CHARS,
    )
    assert title.endswith("t…")
    assert summary.endswith("s…")
    assert category.endswith("c…")


def test_a_url_at_the_cap_imports_and_one_character_longer_is_refused_not_cut() -> None:
    base = "https://miasfeed.example/"
    at = base + "a" * (MAX_URL_CHARS - len(base))
    entries = [{"url": at, "title": "At"}, {"url": at + "a", "title": "Past"}]
    parsed = parse_articles(json.dumps(entries).encode(), source="urls", now=NOW)
    assert [item.url for item in parsed.items] == [at]
    assert [(e.where, e.reason) for e in parsed.errors] == [
        ("entry 2", f"url longer than {MAX_URL_CHARS} characters")
    ]


def test_readme_states_the_caps_on_imported_articles_and_feeds() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.partition("### Limits on imported articles")[2].partition("\n#")[0]
    assert section, "README.md has no 'Limits on imported articles' section"
    for number in (
        MAX_TITLE_CHARS,
        MAX_SUMMARY_CHARS,
        MAX_CATEGORY_CHARS,
        MAX_URL_CHARS,
        MAX_SOURCE_BYTES,
    ):
        assert f"{number:,}" in section, f"{number:,} is not in the README's limits"
