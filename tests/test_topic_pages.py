"""Topics on the reader's pages (issue 15, item 4): the sign-up page and preferences offer the
topics of the newest articles, a reader ticks theirs (none: every topic), and the page says in
their words what they get. In process and over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from db_fixtures import snapshot
from smtp_server import SmtpServer
from test_pages import (
    MONDAY_NOON,
    TUESDAY_NOON,
    Web,
    _active,
    _pending,
    _visible_text,
    _web,
)

from digest.domain import ArticleDraft, Frequency
from digest.readers import topics_in_words
from digest.store import Store
from digest.tokens import Purpose

SIGN_UP = {"email": "reader@example.org", "frequency": "weekly", "timezone": "Europe/Madrid"}


@pytest.fixture(params=["in-process", "http"])
def web(request: pytest.FixtureRequest, store: Store, smtp_server: SmtpServer) -> Iterator[Web]:
    yield from _web(request.param, store, smtp_server, {})


def publish(web: Web, *categories: str) -> None:
    """One article a category, in this order (so the last is the newest), before Tuesday noon."""
    drafts = [
        ArticleDraft(
            url=f"https://miasfeed.example/topics/{n}",
            title=f"On {category}",
            summary="Findings.",
            category=category,
            reading_minutes=2,
            published_at=MONDAY_NOON + timedelta(minutes=n),
        )
        for n, category in enumerate(categories)
    ]
    for draft in drafts:  # one import each: the ingest order is the order given
        web.store.upsert_articles([draft], MONDAY_NOON + timedelta(hours=1))


def topic_boxes(page: str) -> list[tuple[str, bool, str]]:
    """The topic checkboxes: (value, ticked, label)."""
    return [
        (html.unescape(value), bool(ticked), html.unescape(label))
        for value, ticked, label in re.findall(
            r'<input type="checkbox" name="topics" value="([^"]*)"( checked)?>\s*'
            r"<span>([^<]*)</span>",
            page,
        )
    ]


def test_the_sign_up_page_offers_the_newest_articles_topics_by_name_none_ticked_and_folded(
    web: Web,
) -> None:
    publish(web, "public health", "NUTRITION", "Medical News & Research", "Public Health")
    page = web.get("/subscribe").text
    # Sorted by name, each named as its newest article spells it; "Research" came from _web.
    assert topic_boxes(page) == [
        ("medical news and research", False, "Medical News & Research"),
        ("nutrition", False, "NUTRITION"),
        ("public health", False, "Public Health"),
        ("research", False, "Research"),
    ]
    assert re.search(r'<details class="more">\s*<summary>Choose topics', page)  # folded away
    assert "Tick none to get every topic, new ones included." in page


def test_signing_up_keeps_the_topics_ticked_and_none_ticked_is_every_topic(web: Web) -> None:
    publish(web, "Nutrition", "Public Health")
    ticked = web.post("/subscribe", SIGN_UP | {"topics": ["", "nutrition", "public health"]})
    assert ticked.status_code == 200, ticked.text
    assert web.reader("reader@example.org").topics == frozenset({"nutrition", "public health"})
    # Signing up again while pending takes the latest choice.
    again = web.post("/subscribe", SIGN_UP | {"topics": [""]})
    assert again.status_code == 200
    assert web.reader("reader@example.org").topics is None
    plain = web.post("/subscribe", SIGN_UP | {"email": "plain@example.org"})  # no topics field
    assert plain.status_code == 200
    assert web.reader("plain@example.org").topics is None


def test_a_bad_topic_at_sign_up_gets_the_form_again_naming_it_and_nothing_stored(
    web: Web,
) -> None:
    publish(web, "Nutrition")
    before = snapshot(web.store.engine)
    answer = web.post("/subscribe", SIGN_UP | {"topics": ["", "nutrition", "<!!>"]})
    assert answer.status_code == 400
    assert "Bad topic: '<!!>'" in html.unescape(answer.text)
    assert "<!!>" not in answer.text
    assert 'value="reader@example.org"' in answer.text  # the form as it was filled in
    assert snapshot(web.store.engine) == before


def test_a_bad_choice_at_sign_up_keeps_the_topics_ticked_and_the_list_open(web: Web) -> None:
    publish(web, "Nutrition", "Sleep")
    answer = web.post("/subscribe", SIGN_UP | {"email": "not an address", "topics": ["", "sleep"]})
    assert answer.status_code == 400
    assert ("sleep", True, "Sleep") in topic_boxes(answer.text)
    assert re.search(r'<details class="more" open>', answer.text)


def test_preferences_tick_the_readers_topics_and_saving_says_them_in_their_words(
    web: Web,
) -> None:
    publish(web, "Nutrition", "Public Health", "Sleep")
    reader = _active(web, "choosy@example.org", Frequency.WEEKLY)
    link = web.link(Purpose.PREFERENCES, reader)
    assert not any(ticked for _, ticked, _ in topic_boxes(web.get(link).text))
    saved = web.post(link, {"frequency": "weekly", "topics": ["", "nutrition", "public health"]})
    assert saved.status_code == 200
    assert (
        "Saved. Weekly, on Mondays at 08:00, Madrid (Spain) time: Nutrition and Public Health."
    ) in _visible_text(html.unescape(saved.text))
    assert [name for _, ticked, name in topic_boxes(saved.text) if ticked] == [
        "Nutrition",
        "Public Health",
    ]
    assert web.reader("choosy@example.org").topics == frozenset({"nutrition", "public health"})
    # A form from an older page, without the topics, keeps them.
    web.post(link, {"frequency": "daily"})
    assert web.reader("choosy@example.org").topics == frozenset({"nutrition", "public health"})
    # None ticked: every topic again, later ones too.
    everything = web.post(link, {"frequency": "daily", "topics": [""]})
    assert "Saved. Daily, at 08:00, Madrid (Spain) time: all topics." in _visible_text(
        everything.text
    )
    assert web.reader("choosy@example.org").topics is None


def test_a_topic_no_new_article_has_stays_on_offer_ticked_for_the_reader_who_chose_it(
    web: Web,
) -> None:
    reader = _active(web, "sleepy@example.org")
    choice = web.post(web.link(Purpose.PREFERENCES, reader), {"topics": ["", "sleep"]})
    assert choice.status_code == 200
    assert topic_boxes(choice.text) == [("research", False, "Research"), ("sleep", True, "Sleep")]
    assert "time: Sleep." in _visible_text(choice.text)


def test_preferences_say_the_next_digest_waits_when_the_news_is_outside_the_readers_topics(
    web: Web,
) -> None:
    # Confirmed a month ago, a daily reader has Monday's Research article: due now, unless
    # Research is not one of their topics.
    reader = _active(web, "focused@example.org")
    link = web.link(Purpose.PREFERENCES, reader)
    assert "Your next digest is due now" in _visible_text(web.get(link).text)
    narrowed = web.post(link, {"topics": ["", "nutrition"]})
    assert "Your next digest is due now" not in _visible_text(narrowed.text)
    assert "Your next digest arrives Wednesday 25 November at 08:00." in _visible_text(
        narrowed.text
    )


def test_signing_up_again_after_leaving_starts_with_the_new_topics_and_no_old_pause(
    web: Web,
) -> None:
    reader = _active(web, "back@example.org", Frequency.WEEKLY)
    web.post(web.link(Purpose.PREFERENCES, reader), {"pause": "3-months"})
    web.post(web.link(Purpose.UNSUBSCRIBE, reader))
    assert web.reader("back@example.org").paused_until is not None
    again = web.post("/subscribe", SIGN_UP | {"email": "back@example.org", "topics": ["", "sleep"]})
    assert again.status_code == 200
    back = web.reader("back@example.org")
    assert (back.paused_until, back.topics) == (None, frozenset({"sleep"}))


def test_a_pending_reader_keeps_their_topics_when_they_ask_for_a_fresh_confirm_link(
    web: Web,
) -> None:
    publish(web, "Sleep")
    web.post("/subscribe", SIGN_UP | {"topics": ["", "sleep"]})
    pending = _pending(web, "other@example.org")  # a second reader, to be sure of the row
    assert pending.topics is None
    web.clock.now = TUESDAY_NOON + timedelta(days=30)  # the confirm link has expired
    reader = web.reader("reader@example.org")
    resent = web.post(web.link(Purpose.CONFIRM, reader), {"action": "resend"})
    assert resent.status_code == 200
    assert web.reader("reader@example.org").topics == frozenset({"sleep"})


def test_the_unsubscribe_page_offers_fewer_topics_as_another_way_to_stay(web: Web) -> None:
    reader = _active(web, "toomuch@example.org", Frequency.MONTHLY)
    page = web.get(web.link(Purpose.UNSUBSCRIBE, reader)).text
    preferences = web.link(Purpose.PREFERENCES, reader)
    assert f'Or <a href="{preferences}">choose only the topics you want</a>.' in page


@pytest.mark.parametrize(
    ("topics", "words"),
    [
        (None, "all topics"),
        (frozenset({"sleep"}), "Sleep"),
        (frozenset({"public health", "nutrition"}), "Nutrition and Public Health"),
        (frozenset({"sleep", "nutrition", "research"}), "Nutrition, Research and Sleep"),
    ],
)
def test_topics_in_words_name_each_topic_as_the_site_spells_it(
    topics: frozenset[str] | None, words: str
) -> None:
    names = {"public health": "Public Health", "nutrition": "Nutrition", "research": "Research"}
    assert topics_in_words(topics, names) == words
