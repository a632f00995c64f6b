from __future__ import annotations

import html
import json
import re
import socket
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest.domain import ArticleDraft, Frequency, RowError
from digest.errors import InvalidInput
from digest.ingest import (
    MAX_CATEGORY_CHARS,
    MAX_SUMMARY_CHARS,
    MAX_TITLE_CHARS,
    MAX_URL_CHARS,
    NO_RULES,
    ImportRules,
    estimate_reading_minutes,
    parse_articles,
)
from digest.rows import Parsed
from digest.sources import read_source
from digest.subscriber_csv import CSV_HEADER, parse_subscribers_csv

DATA = Path(__file__).parent / "data"
SAMPLES = Path(__file__).parent.parent / "digest" / "samples" / "articles.json"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
EARLIEST = "0001-01-01T00:00:00+01:00"  # before datetime.min once in UTC


def parse_file(name: str) -> Parsed[ArticleDraft]:
    return parse_articles((DATA / name).read_bytes(), source=name, now=NOW)


def parse_json(entries: list[Any]) -> Parsed[ArticleDraft]:
    return parse_articles(json.dumps(entries).encode(), source="articles.json", now=NOW)


# --- feeds --------------------------------------------------------------------------------------


def test_rss_item_becomes_a_draft_with_link_title_category_and_utc_date() -> None:
    first = parse_file("feed_rss.xml").items[0]
    assert first.url == "https://miasfeed.example/articles/sleep-and-memory"
    assert first.title == "Sleep and memory in older adults"
    assert first.category == "Medical News & Research"
    assert first.published_at == datetime(2026, 11, 17, 8, 30, tzinfo=UTC)
    assert first.summary == "<p>Deep sleep helps <em>memory</em>.</p>"


def test_rss_entries_without_link_or_title_or_with_javascript_url_are_skipped_by_number() -> None:
    parsed = parse_file("feed_rss.xml")
    assert [item.url for item in parsed.items] == [
        "https://miasfeed.example/articles/sleep-and-memory",
        "https://miasfeed.example/articles/plain",
    ]
    assert parsed.errors == [
        RowError("entry 2", "no url"),
        RowError("entry 3", "no title"),
        RowError("entry 4", "url must be http or https: 'javascript:alert(document.cookie)'"),
    ]


def test_rss_entry_without_category_or_date_gets_general_and_now() -> None:
    plain = parse_file("feed_rss.xml").items[1]
    assert plain.category == "General"
    assert plain.published_at == NOW
    assert plain.reading_minutes == 1


def test_atom_entry_becomes_a_draft_with_plain_title_and_sanitised_content() -> None:
    walking = parse_file("feed_atom.xml").items[0]
    assert walking.url == "https://miasfeed.example/articles/walking-after-meals"
    assert walking.title == "Walking after meals"
    assert walking.category == "Fitness"
    assert walking.published_at == datetime(2026, 11, 19, 10, 0, tzinfo=UTC)
    assert "javascript" not in walking.summary
    assert '<a href="https://miasfeed.example/study" rel="noopener noreferrer">' in walking.summary


def test_atom_relative_link_is_refused_and_published_wins_over_updated() -> None:
    parsed = parse_file("feed_atom.xml")
    assert parsed.errors == [RowError("entry 2", "url must be http or https: '/articles/relative'")]
    hydration = parsed.items[1]
    assert hydration.title == "Hydration & headaches"
    assert hydration.published_at == datetime(2026, 11, 18, 6, 0, tzinfo=UTC)
    # A text/plain summary is text: its "<b>" must stay visible, not become markup.
    assert hydration.summary == "Plain text with a &lt;b&gt; that is not markup."


def test_feed_reading_time_counts_summary_and_content_words() -> None:
    summary, content = " ".join(["summary"] * 150), " ".join(["content"] * 150)
    feed = f"""<?xml version="1.0"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel>
<title>t</title><link>https://miasfeed.example/</link><description>d</description>
<item><title>Long read</title><link>https://miasfeed.example/long</link>
<description>{summary}</description><content:encoded>{content}</content:encoded></item>
</channel></rss>""".encode()
    (draft,) = parse_articles(feed, source="long.xml", now=NOW).items
    assert draft.reading_minutes == 2  # 300 words at 230 a minute; either alone would be 1


def test_billion_laughs_feed_is_refused_naming_the_source() -> None:
    with pytest.raises(
        InvalidInput, match=r"^cannot import billion_laughs\.xml: refused unsafe XML"
    ):
        parse_file("billion_laughs.xml")


def test_external_entity_feed_is_refused_without_reading_the_file() -> None:
    with pytest.raises(InvalidInput, match=r"^cannot import external_entity\.xml: ") as caught:
        parse_file("external_entity.xml")
    assert "root:" not in str(caught.value)


def test_truncated_xml_is_refused_in_one_line_naming_the_source() -> None:
    with pytest.raises(
        InvalidInput, match=r"^cannot import truncated\.xml: malformed XML"
    ) as caught:
        parse_file("truncated.xml")
    assert "\n" not in str(caught.value)


def test_invalid_utf8_in_a_feed_declared_utf8_is_refused() -> None:
    feed = (
        b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><item>'
        b"<title>caf\xe9 \xff</title><link>https://miasfeed.example/a</link></item></channel></rss>"
    )
    with pytest.raises(InvalidInput, match=r"^cannot import bad\.xml: malformed XML"):
        parse_articles(feed, source="bad.xml", now=NOW)


def test_windows_1252_feed_is_decoded_by_its_declaration() -> None:
    feed = (
        '<?xml version="1.0" encoding="windows-1252"?><rss version="2.0"><channel>'
        "<item><title>Café “quotes”</title><link>https://miasfeed.example/c</link></item>"
        "</channel></rss>"
    ).encode("cp1252")
    assert parse_articles(feed, source="cp.xml", now=NOW).items[0].title == "Café “quotes”"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "malformed XML"),
        (b"<html><body>Not a feed</body></html>", "not an RSS or Atom feed"),
    ],
)
def test_documents_that_are_not_feeds_are_refused(body: bytes, problem: str) -> None:
    with pytest.raises(InvalidInput, match=f"^cannot import page: {problem}"):
        parse_articles(body, source="page", now=NOW)


# --- JSON Feed ----------------------------------------------------------------------------------


def test_json_feed_1_1_items_become_drafts_and_bad_items_are_skipped_by_number() -> None:
    parsed = parse_file("feed_json_1_1.json")
    sleep, elsewhere, by_id = parsed.items
    assert sleep.url == "https://miasfeed.example/articles/sleep-and-the-heart"
    assert sleep.title == "Sleep and the heart"
    assert sleep.category == "Cardiology"  # the first tag
    assert sleep.published_at == datetime(2026, 11, 20, 8, 30, tzinfo=UTC)
    # summary is plain text in JSON Feed, and wins over content_html.
    assert sleep.summary == "Deep sleep &lt;b&gt;rests&lt;/b&gt; the heart."
    assert elsewhere.url == "https://journal.example/studies/walking"  # external_url
    assert elsewhere.summary == "Plain text with a &lt;b&gt; &amp; more."  # content_text
    assert (elsewhere.category, elsewhere.published_at) == ("General", NOW)
    assert by_id.url == "https://miasfeed.example/articles/known-by-its-id"
    assert by_id.summary == "<p>A <em>short</em> note.</p>"
    assert by_id.published_at == datetime(2026, 11, 21, 10, 0, tzinfo=UTC)  # date_modified
    assert parsed.errors == [
        RowError("entry 4", "url must be http or https: '/articles/relative'"),
        RowError("entry 5", "no title"),
        RowError("entry 6", "no url"),
        RowError("entry 7", "not an object"),
    ]


def test_json_feed_1_0_is_read_like_1_1() -> None:
    parsed = parse_file("feed_json_1_0.json")
    (hydration,) = parsed.items
    assert hydration.url == "https://miasfeed.example/articles/hydration"
    assert hydration.title == "Hydration & headaches"
    assert hydration.summary == "<p>Drink <strong>water</strong>.</p>"
    assert hydration.category == "Nutrition"
    assert hydration.published_at == datetime(2026, 11, 18, 6, 0, tzinfo=UTC)
    assert parsed.errors == [RowError("entry 2", "url must be http or https: 'articles/relative'")]


@pytest.mark.parametrize("date", ["last Tuesday", EARLIEST, "9999-12-31T23:00:00-05:00", 20261120])
def test_a_json_feed_date_that_cannot_be_read_gives_the_import_time(date: Any) -> None:
    item = {"url": "https://miasfeed.example/a", "title": "A", "date_published": date}
    feed = {"version": "https://jsonfeed.org/version/1", "items": [item]}
    (draft,) = parse_articles(json.dumps(feed).encode(), source="f.json", now=NOW).items
    assert draft.published_at == NOW


def test_json_feed_content_html_is_sanitised_and_counts_towards_reading_time() -> None:
    words = " ".join(["word"] * 300)
    feed = {
        "version": "https://jsonfeed.org/version/1.1",
        "items": [
            {
                "url": "https://miasfeed.example/long",
                "title": "Long read",
                "content_html": f'<p onclick="x()">{words}<script>alert(1)</script></p>',
            }
        ],
    }
    (draft,) = parse_articles(json.dumps(feed).encode(), source="f.json", now=NOW).items
    assert draft.summary == f"<p>{words}</p>"
    assert draft.reading_minutes == 2


NOT_A_JSON_FEED = "a JSON object, but its version is not JSON Feed 1.0 or 1.1"
NO_ITEMS = "a JSON Feed without an items list"


@pytest.mark.parametrize(
    ("feed", "problem"),
    [
        ({"items": []}, NOT_A_JSON_FEED),
        ({"version": "https://jsonfeed.org/version/2", "items": []}, NOT_A_JSON_FEED),
        ({"version": 1.1, "items": []}, NOT_A_JSON_FEED),
        ({"version": "https://jsonfeed.org/version/1.1"}, NO_ITEMS),
        ({"version": "https://jsonfeed.org/version/1", "items": {}}, NO_ITEMS),
    ],
)
def test_json_objects_that_are_not_json_feeds_are_refused_in_one_line(
    feed: dict[str, Any], problem: str
) -> None:
    with pytest.raises(InvalidInput, match=f"^cannot import f\\.json: {problem}$"):
        parse_articles(json.dumps(feed).encode(), source="f.json", now=NOW)


# --- relative links -----------------------------------------------------------------------------

BASE = "https://miasfeed.example/news/feed"


def test_relative_rss_links_resolve_against_the_feed_url_and_must_still_be_web_links() -> None:
    data = (DATA / "feed_relative.xml").read_bytes()
    parsed = parse_articles(data, source="relative.xml", now=NOW, base=BASE)
    assert [item.url for item in parsed.items] == [
        "https://miasfeed.example/news/sleep-and-the-heart",
        "https://miasfeed.example/articles/walking",
        "https://miasfeed.example/articles/hydration",
    ]
    assert "https://miasfeed.example/news/studies/42" in parsed.items[0].summary
    assert parsed.errors == [
        RowError("entry 4", "url must be http or https: 'javascript:alert(1)'")
    ]


def test_relative_links_in_a_file_are_reported_and_skipped_for_want_of_a_base() -> None:
    parsed = parse_file("feed_relative.xml")
    assert [item.url for item in parsed.items] == ["https://miasfeed.example/articles/hydration"]
    assert [error.reason for error in parsed.errors[:2]] == [
        "url must be http or https: 'sleep-and-the-heart'",
        "url must be http or https: '/articles/walking'",
    ]


@pytest.mark.parametrize("base", [None, BASE])
def test_atom_links_resolve_against_xml_base_before_the_feed_url(base: str | None) -> None:
    feed = b"""<?xml version="1.0"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:base="https://cdn.example/blog/"><title>t</title>
<entry><title>A</title><id>1</id><link href="posts/a"/></entry>
<entry xml:base="/elsewhere/"><title>B</title><id>2</id><link href="b"/></entry>
</feed>"""
    parsed = parse_articles(feed, source="atom.xml", now=NOW, base=base)
    assert [item.url for item in parsed.items] == [
        "https://cdn.example/blog/posts/a",
        "https://cdn.example/elsewhere/b",
    ]


def test_a_relative_xml_base_resolves_against_the_feed_url() -> None:
    feed = b"""<?xml version="1.0"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:base="/blog/"><title>t</title>
<entry><title>A</title><id>1</id><link href="posts/a"/></entry></feed>"""
    parsed = parse_articles(feed, source="atom.xml", now=NOW, base=BASE)
    assert [item.url for item in parsed.items] == ["https://miasfeed.example/blog/posts/a"]


@pytest.mark.parametrize("kind", ["json feed", "json list"])
def test_relative_json_links_resolve_against_the_feed_url(kind: str) -> None:
    entries = [
        {"url": "sleep", "title": "Beside the feed"},
        {"url": "//other.example/x", "title": "Another host"},
        {"url": "javascript:alert(1)", "title": "Still refused"},
    ]
    document: Any = entries
    if kind == "json feed":
        document = {"version": "https://jsonfeed.org/version/1.1", "items": entries}
    parsed = parse_articles(json.dumps(document).encode(), source="f.json", now=NOW, base=BASE)
    assert [item.url for item in parsed.items] == [
        "https://miasfeed.example/news/sleep",
        "https://other.example/x",
    ]
    assert parsed.errors == [
        RowError("entry 3", "url must be http or https: 'javascript:alert(1)'")
    ]


# --- JSON ---------------------------------------------------------------------------------------


def test_json_list_becomes_drafts_with_given_reading_minutes_and_utc_dates() -> None:
    parsed = parse_json(
        [
            {
                "url": "https://miasfeed.example/articles/a",
                "title": "A",
                "summary": "<p>Hello</p>",
                "category": "Nutrition",
                "reading_minutes": 4,
                "published_at": "2026-11-20T09:00:00+01:00",
            },
            {
                "url": "https://miasfeed.example/articles/b",
                "title": "B",
                "published_at": "2026-11-21T07:00:00",
            },
        ]
    )
    assert parsed.errors == []
    first, second = parsed.items
    assert (first.category, first.reading_minutes) == ("Nutrition", 4)
    assert first.published_at == datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    assert (second.summary, second.category, second.reading_minutes) == ("", "General", 1)
    assert second.published_at == datetime(2026, 11, 21, 7, 0, tzinfo=UTC)  # naive means UTC


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("just a string", "not an object"),
        ({"title": "No url"}, "no url"),
        ({"url": "https://miasfeed.example/x"}, "no title"),
        (
            {"url": "javascript:alert(1)", "title": "x"},
            "url must be http or https: 'javascript:alert(1)'",
        ),
        ({"url": "https://miasfeed.example/x", "title": 7}, "title must be a string"),
        (
            {"url": "https://miasfeed.example/x", "title": "x", "reading_minutes": 0},
            "reading_minutes must be",
        ),
        (
            {"url": "https://miasfeed.example/x", "title": "x", "reading_minutes": True},
            "reading_minutes must be",
        ),
        (
            {"url": "https://miasfeed.example/x", "title": "x", "published_at": "last Tuesday"},
            "published_at is not an ISO 8601 date-time",
        ),
        (
            {"url": "https://miasfeed.example/x", "title": "x", "published_at": EARLIEST},
            "published_at is not an ISO 8601 date-time",
        ),
    ],
)
def test_json_bad_entry_is_reported_by_number_and_the_others_import(
    entry: Any, reason: str
) -> None:
    good = {"url": "https://miasfeed.example/good", "title": "Good"}
    parsed = parse_json([good, entry])
    assert [item.url for item in parsed.items] == ["https://miasfeed.example/good"]
    (error,) = parsed.errors
    assert error.where == "entry 2"
    assert error.reason.startswith(reason)


@pytest.mark.parametrize(
    "url",
    ["https://miasfeed.example/a b", "https://miasfeed.example/a\nBcc: x", "https://x/a\u2028b"],
)
def test_url_with_a_space_or_line_break_is_refused(url: str) -> None:
    (error,) = parse_json([{"url": url, "title": "t"}]).errors
    assert error.reason.startswith("url contains a space or control character")


def test_repeated_url_in_one_document_is_reported_as_a_duplicate() -> None:
    entry = {"url": "https://miasfeed.example/same", "title": "Same"}
    parsed = parse_json([entry, entry])
    assert len(parsed.items) == 1
    assert parsed.errors == [RowError("entry 2", "duplicate of entry 1")]


@pytest.mark.parametrize(
    "body", [b"[{", b"[" * 100_000, b"[1e999999999999999999x]", b'{"version": ', b"{" * 100_000]
)
def test_broken_json_is_refused_in_one_line(body: bytes) -> None:
    with pytest.raises(InvalidInput, match=r"^cannot import a\.json: not valid JSON: [^\n]*$"):
        parse_articles(body, source="a.json", now=NOW)


def test_json_with_a_bom_is_read() -> None:
    body = (
        b"\xef\xbb\xbf" + json.dumps([{"url": "https://miasfeed.example/a", "title": "A"}]).encode()
    )
    assert len(parse_articles(body, source="bom.json", now=NOW).items) == 1


# --- sanitising, folding and caps ---------------------------------------------------------------


def summary_of(html: str) -> str:
    return (
        parse_json([{"url": "https://miasfeed.example/s", "title": "S", "summary": html}])
        .items[0]
        .summary
    )


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<p>Hi<script>alert(1)</script></p>", "<p>Hi</p>"),
        ('<a href="javascript:alert(1)">x</a>', '<a rel="noopener noreferrer">x</a>'),
        ('<a href="/relative">x</a>', '<a rel="noopener noreferrer">x</a>'),
        (
            '<a href="https://miasfeed.example/" onclick="x()" target="_blank">x</a>',
            '<a href="https://miasfeed.example/" rel="noopener noreferrer">x</a>',
        ),
        ('<img src="https://evil.example/pixel.gif">Seen', "Seen"),
        (
            '<p style="color:red" class="big">  <strong>B</strong>\n\n <i>i</i> </p>',
            "<p> <strong>B</strong> <i>i</i> </p>",
        ),
        ("<ul><li>one</li></ul><iframe src=x></iframe>", "<ul><li>one</li></ul>"),
    ],
)
def test_summary_keeps_only_safe_tags_and_web_links(html: str, expected: str) -> None:
    assert summary_of(html) == expected


def test_titles_and_categories_fold_every_line_break_to_one_space() -> None:
    (draft,) = parse_json(
        [
            {
                "url": "https://miasfeed.example/f",
                "title": "Line\r\nbreak\u2028and\x0bmore\x85end\tTab",
                "category": "Public\nHealth",
            }
        ]
    ).items
    assert draft.title == "Line break and more end Tab"
    assert draft.category == "Public Health"


def test_long_title_category_and_summary_are_capped() -> None:
    summary = "<p>" + "<em>word</em> " * 2_000 + "</p>"
    (draft,) = parse_json(
        [
            {
                "url": "https://miasfeed.example/l",
                "title": "t" * 1_000,
                "category": "c" * 500,
                "summary": summary,
            }
        ]
    ).items
    assert len(draft.title) == MAX_TITLE_CHARS
    assert draft.title.endswith("…")
    assert len(draft.category) == MAX_CATEGORY_CHARS
    assert len(draft.summary) <= MAX_SUMMARY_CHARS
    assert draft.summary.endswith("…</p>")
    assert_balanced(draft.summary)
    assert draft.reading_minutes == 9  # estimated from the whole text: 2,000 words


def test_capped_summary_never_ends_inside_an_entity() -> None:
    (draft,) = parse_json(
        [{"url": "https://miasfeed.example/e", "title": "e", "summary": "&amp; " * 2_000}]
    ).items
    assert len(draft.summary) <= MAX_SUMMARY_CHARS
    assert draft.summary.endswith("&amp;…")


class _TagBalance(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag != "br":
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open.pop() == tag


def assert_balanced(html: str) -> None:
    checker = _TagBalance()
    checker.feed(html)
    checker.close()
    assert checker.open == []


@given(title=st.text(max_size=400), summary=st.text(max_size=400), category=st.text(max_size=120))
def test_any_text_becomes_a_one_line_capped_draft_or_a_row_error(
    title: str, summary: str, category: str
) -> None:
    entry = {
        "url": "https://miasfeed.example/p",
        "title": title,
        "summary": summary,
        "category": category,
    }
    parsed = parse_json([entry])
    for draft in parsed.items:
        assert draft.title.splitlines() == [draft.title]
        assert draft.category.splitlines() == [draft.category]
        assert len(draft.title) <= MAX_TITLE_CHARS
        assert len(draft.category) <= MAX_CATEGORY_CHARS
        assert len(draft.summary) <= MAX_SUMMARY_CHARS
        assert "<script" not in draft.summary.lower()
    assert [error.reason for error in parsed.errors] in ([], ["no title"])


@pytest.mark.parametrize(
    ("words", "minutes"),
    [(0, 1), (1, 1), (230, 1), (231, 2), (460, 2), (461, 3), (2_300, 10), (1_000_000, 999)],
)
def test_reading_time_is_words_over_230_rounded_up_at_least_one(words: int, minutes: int) -> None:
    assert estimate_reading_minutes(" ".join(["word"] * words)) == minutes


def test_sample_articles_parse_cleanly() -> None:
    parsed = parse_articles(SAMPLES.read_bytes(), source=str(SAMPLES), now=NOW)
    assert parsed.errors == []
    assert len(parsed.items) == 12
    assert len({item.category for item in parsed.items}) == 5
    assert all(2 <= item.reading_minutes <= 6 for item in parsed.items)
    assert all(item.url.startswith("https://miasfeed.example/articles/") for item in parsed.items)


# --- pictures and picks -------------------------------------------------------------------------

PICTURE = "https://miasfeed.example/pictures/a.jpg"


def rss_with(item: str, channel: str = "") -> bytes:
    return f"""<?xml version="1.0"?>
<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel><title>t</title>
{channel}<item><title>A</title><link>https://miasfeed.example/a</link>{item}</item>
</channel></rss>""".encode()


def picture_of(data: bytes, base: str | None = None, rules: ImportRules = NO_RULES) -> str | None:
    (item,) = parse_articles(data, source="pictures", now=NOW, base=base, rules=rules).items
    return item.image_url


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ('<media:content url="big.jpg" medium="image"/><media:thumbnail url="t.jpg"/>', "big.jpg"),
        ('<media:content url="v.mp4" medium="video"/><media:thumbnail url="t.jpg"/>', "t.jpg"),
        ('<media:content url="c.png" type="image/png"/>', "c.png"),
        (
            '<enclosure url="pod.mp3" type="audio/mpeg"/><enclosure url="e.jpg" type="image/jpeg"/>',
            "e.jpg",
        ),
        ('<media:group><media:content url="g.jpg" medium="image"/></media:group>', "g.jpg"),
        (
            "<description>&lt;p&gt;Hi &lt;img src='in-text.jpg'&gt;&lt;/p&gt;</description>",
            "in-text.jpg",
        ),
        (
            '<enclosure url="e.jpg" type="image/jpeg"/><description>&lt;img src="x.jpg"&gt;</description>',
            "e.jpg",
        ),
    ],
)
def test_an_rss_items_picture_is_its_media_or_image_enclosure_else_the_first_img(
    item: str, expected: str
) -> None:
    feed = rss_with(item, channel="<link>https://miasfeed.example/</link>")
    assert picture_of(feed, base=BASE) == f"https://miasfeed.example/news/{expected}"


def test_rss_pictures_resolve_against_xml_base_before_the_feed_url() -> None:
    feed = rss_with('<media:thumbnail url="t.jpg"/>').replace(
        b"<channel>", b'<channel xml:base="https://cdn.example/img/">'
    )
    assert picture_of(feed, base=BASE) == "https://cdn.example/img/t.jpg"


def test_an_atom_entrys_picture_is_its_image_enclosure_link_else_the_first_img() -> None:
    feed = b"""<?xml version="1.0"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:base="https://cdn.example/blog/"><title>t</title>
<entry><title>A</title><id>1</id><link href="a"/><link rel="enclosure" type="audio/mpeg" href="a.mp3"/>
<link rel="enclosure" type="image/webp" href="a.webp"/><content type="html">&lt;img src="c.jpg"&gt;</content></entry>
<entry><title>B</title><id>2</id><link href="b"/><content type="html">&lt;img src="c.jpg"&gt;</content></entry>
</feed>"""
    parsed = parse_articles(feed, source="atom.xml", now=NOW, base=BASE)
    assert [item.image_url for item in parsed.items] == [
        "https://cdn.example/blog/a.webp",
        "https://cdn.example/blog/c.jpg",
    ]


def test_a_json_feed_items_picture_is_its_image_else_its_banner_else_the_first_img() -> None:
    def item(n: int, **fields: str) -> dict[str, str]:
        return {"id": str(n), "url": f"https://miasfeed.example/{n}", "title": "T", **fields}

    document = {
        "version": "https://jsonfeed.org/version/1.1",
        "items": [
            item(1, image="i.jpg", banner_image="b.jpg"),
            item(2, image="http://tracker.example/i.jpg", banner_image="b.jpg"),
            item(3, content_html='<p><img src="c.png"></p>'),
            item(4, content_text="<img src='c.png'>"),  # plain text, not a picture
        ],
    }
    parsed = parse_articles(json.dumps(document).encode(), source="f.json", now=NOW, base=BASE)
    assert [item.image_url for item in parsed.items] == [
        "https://miasfeed.example/news/i.jpg",
        "https://miasfeed.example/news/b.jpg",
        "https://miasfeed.example/news/c.png",
        None,
    ]


def test_a_json_list_entry_may_give_its_picture_else_its_summarys_first_img() -> None:
    parsed = parse_json(
        [
            {"url": "https://miasfeed.example/a", "title": "A", "image": PICTURE},
            {
                "url": "https://miasfeed.example/b",
                "title": "B",
                "summary": f'<img src="{PICTURE}">',
            },
            {"url": "https://miasfeed.example/c", "title": "C", "image": 7},
        ]
    )
    assert [item.image_url for item in parsed.items] == [PICTURE, PICTURE, None]
    assert parsed.errors == []


@pytest.mark.parametrize(
    "picture",
    [
        "http://miasfeed.example/a.jpg",
        "javascript:alert(1)",
        "data:image/png;base64,iVBORw0KGgo=",
        "https://user:secret@miasfeed.example/a.jpg",
        "https://user@miasfeed.example/a.jpg",
        "https://miasfeed.example/a picture.jpg",
        "https://miasfeed.example/a\u2028.jpg",
        "https://miasfeed.example/" + "a" * MAX_URL_CHARS,
        "/pictures/a.jpg",  # relative, in a file: nothing to resolve it against
        "//cdn.example/a.jpg",
        "ftp://miasfeed.example/a.jpg",
        "https:///a.jpg",
    ],
)
def test_a_picture_that_is_not_a_plain_https_link_is_dropped_and_the_article_imports(
    picture: str,
) -> None:
    bad = {"url": "https://miasfeed.example/a", "title": "A", "image": picture}
    good = {"url": "https://miasfeed.example/b", "title": "B", "image": PICTURE}
    parsed = parse_json([bad, good])
    assert parsed.errors == []
    assert [(item.url, item.image_url) for item in parsed.items] == [
        (bad["url"], None),
        (good["url"], PICTURE),
    ]
    thumbnails = (
        f'<media:thumbnail url="{html.escape(picture)}"/><media:thumbnail url="{PICTURE}"/>'
    )
    assert picture_of(rss_with(thumbnails)) == PICTURE


def test_a_bad_picture_gives_way_to_the_next_one_and_tracking_pixels_are_no_pictures() -> None:
    content = (
        "<![!x[ a marked section that is none ]]>"  # Python's HTMLParser raises on it
        '<img src="https://feeds.example/pixel.gif" width="1" height="1">'
        '<img src="data:image/gif;base64,R0lGOD">'
        f'<img src="{PICTURE}" width="600">'
    )
    item = f'<media:thumbnail url="http://miasfeed.example/t.jpg"/><description>{html.escape(content)}</description>'
    assert picture_of(rss_with(item)) == PICTURE


def test_the_sites_own_origin_may_serve_pictures_over_http_and_no_other_may() -> None:
    rules = ImportRules(own_origin="http://127.0.0.1:8000")
    own, other = "http://127.0.0.1:8000/pictures/a.png", "http://127.0.0.1:8001/pictures/a.png"
    assert picture_of(rss_with(f'<media:thumbnail url="{own}"/>'), rules=rules) == own
    assert picture_of(rss_with(f'<media:thumbnail url="{other}"/>'), rules=rules) is None
    assert picture_of(rss_with(f'<media:thumbnail url="{own}"/>')) is None


def test_a_picture_url_is_kept_exactly_as_given() -> None:
    url = "https://cdn.example/a.jpg?w=600&crop=16:9#top"
    assert picture_of(rss_with(f'<media:thumbnail url="{html.escape(url)}"/>')) == url


FEATURED = ImportRules(featured_tags=frozenset({"editor's pick", "breaking"}))


def test_a_feed_entry_with_a_category_or_tag_the_settings_name_is_featured() -> None:
    rss = rss_with("<category>Nutrition</category><category>  EDITOR'S   Pick </category>")
    (rss_item,) = parse_articles(rss, source="rss", now=NOW, rules=FEATURED).items
    assert (rss_item.category, rss_item.featured) == ("Nutrition", True)
    (plain,) = parse_articles(rss, source="rss", now=NOW).items
    assert not plain.featured
    document = {
        "version": "https://jsonfeed.org/version/1.1",
        "items": [
            {
                "id": "1",
                "url": "https://miasfeed.example/1",
                "title": "T",
                "tags": ["x", "Breaking"],
            },
            {
                "id": "2",
                "url": "https://miasfeed.example/2",
                "title": "T",
                "tags": ["Breaking news"],
            },
        ],
    }
    parsed = parse_articles(json.dumps(document).encode(), source="f", now=NOW, rules=FEATURED)
    assert [item.featured for item in parsed.items] == [True, False]


def test_a_json_list_entry_is_featured_by_its_field_or_its_category() -> None:
    entries = [
        {"url": "https://miasfeed.example/a", "title": "A", "featured": True},
        {"url": "https://miasfeed.example/b", "title": "B", "category": "breaking"},
        {"url": "https://miasfeed.example/c", "title": "C", "featured": False},
        {"url": "https://miasfeed.example/d", "title": "D", "featured": "yes"},
    ]
    data = json.dumps(entries).encode()
    parsed = parse_articles(data, source="a.json", now=NOW, rules=FEATURED)
    assert [item.featured for item in parsed.items] == [True, True, False]
    assert parsed.errors == [RowError("entry 4", "featured must be true or false")]


# --- reading sources ----------------------------------------------------------------------------


def test_read_source_reads_a_local_file(tmp_path: Path) -> None:
    path = tmp_path / "feed.xml"
    path.write_bytes(b"<rss/>")
    assert read_source(str(path)) == b"<rss/>"


def test_read_source_refuses_a_file_over_max_bytes(tmp_path: Path) -> None:
    path = tmp_path / "big.xml"
    path.write_bytes(b"x" * 101)
    with pytest.raises(InvalidInput, match=r"larger than 100 bytes"):
        read_source(str(path), max_bytes=100)
    assert read_source(str(path), max_bytes=101) == b"x" * 101


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_read_source_stops_reading_an_endless_file_at_max_bytes() -> None:
    with pytest.raises(InvalidInput, match=r"^cannot read /dev/zero: larger than 1000 bytes$"):
        read_source("/dev/zero", max_bytes=1_000)


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("ftp://example.org/feed.xml", "only files and http or https URLs are read"),
        ("file:///etc/passwd", "only files and http or https URLs are read"),
        ("/no/such/feed.xml", "No such file or directory"),
    ],
)
def test_read_source_refuses_other_schemes_and_missing_files_in_one_line(
    source: str, reason: str
) -> None:
    with pytest.raises(InvalidInput, match=f"^cannot read {source}: {reason}$"):
        read_source(source)


def test_read_source_reads_a_feed_from_a_real_http_server(http_base: str) -> None:
    data = read_source(f"{http_base}/feed.xml")
    assert parse_articles(data, source="feed.xml", now=NOW).items[0].title.startswith("Sleep")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/big", "larger than 1000 bytes"),
        ("/endless", "larger than 1000 bytes"),
        ("/claims-huge", "larger than 1000 bytes"),
        ("/missing", "HTTP 404 Not Found"),
        ("/to-ftp", "refused redirect to ftp://example.org/feed.xml"),
        ("/loop", "more than 10 redirects"),
        ("/unasked-304", "HTTP 304 Not Modified"),  # a 304 answers only a conditional GET
    ],
)
def test_read_source_refuses_bad_http_answers_in_one_line(
    http_base: str, path: str, reason: str
) -> None:
    with pytest.raises(InvalidInput, match=f"^cannot read {http_base}{path}: {reason}$"):
        read_source(f"{http_base}{path}", max_bytes=1_000)


def test_credentials_in_a_url_are_sent_to_it_and_not_repeated_after_a_redirect(
    http_base: str,
) -> None:
    with_credentials = http_base.replace("http://", "http://reader:hunter2@")
    assert read_source(f"{with_credentials}/private") == (DATA / "feed_rss.xml").read_bytes()
    with pytest.raises(InvalidInput, match=f"^cannot read {http_base}/to-private: HTTP 401 "):
        read_source(f"{with_credentials}/to-private")


def test_read_source_gives_up_after_the_timeout(http_base: str) -> None:
    with pytest.raises(InvalidInput, match=r"timed out"):
        read_source(f"{http_base}/slow", timeout=0.2)


def test_read_source_reports_a_refused_connection() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(InvalidInput, match=f"^cannot read http://127.0.0.1:{port}/: .*[Rr]efused"):
        read_source(f"http://127.0.0.1:{port}/")


# --- subscribers CSV ----------------------------------------------------------------------------


def test_csv_good_rows_import_with_the_default_timezone_when_none_is_given() -> None:
    parsed = parse_subscribers_csv(
        "email,frequency,timezone\nMia@Example.ORG,Weekly,Europe/Madrid\nbo@example.org,daily,\n",
        default_timezone="Europe/London",
    )
    assert parsed.errors == []
    assert [(s.email, s.frequency, s.timezone) for s in parsed.items] == [
        ("Mia@example.org", Frequency.WEEKLY, "Europe/Madrid"),
        ("bo@example.org", Frequency.DAILY, "Europe/London"),
    ]


def test_csv_bad_rows_are_reported_by_physical_line_and_good_rows_import() -> None:
    text = (
        "email,frequency,timezone\r\n"  # line 1
        "mia@example.org,weekly,Europe/Madrid\r\n"  # 2
        '"broken\naddress",daily,UTC\n'  # 3 and 4: a quoted field holds a line break
        "\n"  # 5
        "bo@example.org,fortnightly,UTC\n"  # 6
        "cy@example.org,daily,Mars/Base\n"  # 7
        "mia@EXAMPLE.org,monthly\n"  # 8
        "di@example.org,daily,UTC,extra\n"  # 9
        "ed@example.org,monthly\n"  # 10
    )
    parsed = parse_subscribers_csv(text)
    assert [s.email for s in parsed.items] == ["mia@example.org", "ed@example.org"]
    assert [(e.where, e.reason.split(":")[0]) for e in parsed.errors] == [
        ("line 3", "not a valid email address"),
        ("line 6", "unknown frequency"),
        ("line 7", "unknown timezone"),
        ("line 8", "duplicate of line 2"),
        ("line 9", "expected 3 fields, found 4"),
    ]


@pytest.mark.parametrize(
    "text",
    ["", "\n\n", "mia@example.org,weekly\n", "mail,freq\nmia@example.org,weekly\n", "email\n"],
)
def test_csv_without_the_expected_header_is_refused_naming_it(text: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(CSV_HEADER)):
        parse_subscribers_csv(text)


def test_csv_header_is_case_and_whitespace_tolerant() -> None:
    parsed = parse_subscribers_csv(" Email , FREQUENCY \nmia@example.org,daily\n")
    assert [s.email for s in parsed.items] == ["mia@example.org"]


@pytest.mark.parametrize(
    "data",
    [
        b"\xef\xbb\xbfemail,frequency\nmia@example.org,daily\n",
        "\ufeffemail,frequency\nmia@example.org,daily\n",
    ],
)
def test_csv_with_a_byte_order_mark_is_read(data: bytes | str) -> None:
    assert len(parse_subscribers_csv(data).items) == 1


def test_csv_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"^CSV is not UTF-8: byte 0xe9"):
        parse_subscribers_csv("email,frequency\nrené@example.org,daily\n".encode("latin-1"))


def test_csv_refuses_an_unknown_default_timezone() -> None:
    with pytest.raises(InvalidInput, match="unknown timezone"):
        parse_subscribers_csv("email,frequency\n", default_timezone="Mars/Base")
