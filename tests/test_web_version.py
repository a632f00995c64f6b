"""A reader's digests on the web: the web version of each one sent, and the list of the last ones on
the preferences page; in process and over real HTTP, on SQLite and PostgreSQL.

Digests are sent by the real pipeline to a real SMTP server, so the web version can be held to the
mail as it arrived; where only the ledger's record matters, record_sent plans, claims and records
them without SMTP.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import httpx
import pytest
from db_fixtures import snapshot
from smtp_server import SmtpServer
from sqlalchemy import select
from test_pages import (
    TUESDAY_NOON,
    Web,
    _active,
    _article,
    _statements,
    _visible_text,
    _web,
)

from digest.app import Services
from digest.domain import Claim, DeliveryStatus, Frequency, SubscriberDraft
from digest.models import DeliveryRow
from digest.store import Store
from digest.tokens import Purpose, Tokens

NOINDEX = '<meta name="robots" content="noindex">'


@pytest.fixture(params=["in-process", "http"])
def web(request: pytest.FixtureRequest, store: Store, smtp_server: SmtpServer) -> Iterator[Web]:
    yield from _web(request.param, store, smtp_server, {})


def send(web: Web, at: datetime) -> None:
    """A send run at `at`, through the relay, as `digest send --now` makes one."""
    web.clock.now = at
    asyncio.run(web.services.send(at, web.clock))


def record_sent(services: Services, at: datetime) -> list[Claim]:
    """What a send run at `at` leaves in the ledger, without the SMTP: every due digest sent."""
    job = services.job(at)
    services.ledger.plan(at, job.plan)
    claims = services.ledger.claim(job.owner, at, job.lease, 1000)
    services.ledger.record(job.owner, at, claims, [], job.finish)
    return claims


def web_version_path(web: Web, address: str) -> str:
    """The web version of the reader's last digest."""
    reader = web.reader(address)
    (last, *_) = web.services.ledger.history(reader.id, 1)
    return f"/digests/{web.services.tokens().digest_token(last.delivery_id, reader.token_version)}"


def html_part(message: EmailMessage) -> str:
    """The HTML part as the reader's mail client shows it."""
    body = message.get_body(("html",))
    assert body is not None
    content: str = body.get_content()
    return content.replace("\r\n", "\n")  # lines end as on the wire, CRLF


def test_the_web_version_is_the_html_as_mailed_with_the_readers_own_links_and_changes_nothing(
    web: Web,
) -> None:
    reader = _active(web, "reader@example.org")
    send(web, TUESDAY_NOON)
    mailed = html_part(web.next_mail())
    path = web_version_path(web, "reader@example.org")

    before = snapshot(web.store.engine)
    for _ in range(3):  # a scanner's GETs and HEADs
        assert web.client.head(path).status_code == 200
        page = web.get(path)
    assert snapshot(web.store.engine) == before

    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.text.count(NOINDEX) == 1
    assert page.text.replace(NOINDEX, "", 1) == mailed
    for purpose in (Purpose.UNSUBSCRIBE, Purpose.PREFERENCES):
        assert f'href="{web.base_url}{web.link(purpose, reader)}"' in page.text
    assert "Article 1" in page.text


def test_the_web_version_is_noindex_no_referrer_and_carries_every_security_header(
    web: Web,
) -> None:
    _active(web, "reader@example.org")
    record_sent(web.services, TUESDAY_NOON)
    page = web.get(web_version_path(web, "reader@example.org"))
    assert page.status_code == 200
    assert page.headers["X-Robots-Tag"] == "noindex"
    assert re.search(r"<head>\s*" + re.escape(NOINDEX), page.text)
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["X-Frame-Options"] == "DENY"
    csp = dict(
        part.strip().split(" ", 1) for part in page.headers["Content-Security-Policy"].split(";")
    )
    # The mail's inline styles and the publisher's pictures; no script, no form, no framing.
    assert csp == {
        "default-src": "'none'",
        "style-src": "'unsafe-inline'",
        "img-src": "'self' https: data:",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
        "base-uri": "'none'",
    }


def test_the_web_version_renders_its_window_again_after_an_edit_and_newer_articles(
    web: Web,
) -> None:
    _active(web, "reader@example.org")
    web.store.upsert_articles([_article(2)], TUESDAY_NOON - timedelta(hours=1))
    send(web, TUESDAY_NOON)
    mailed = html_part(web.next_mail())
    assert "2 new articles" in mailed
    path = web_version_path(web, "reader@example.org")

    edited = replace(_article(2), title="Article 2, corrected")
    later = TUESDAY_NOON + timedelta(hours=1)
    web.store.upsert_articles([edited, _article(3)], later)
    web.clock.now = later
    page = web.get(path)
    assert page.status_code == 200
    assert "2 new articles" in page.text
    assert "Article 1" in page.text
    assert "Article 2, corrected" in page.text
    assert "Article 3" not in page.text


def test_every_bad_digest_link_gets_the_same_400_page_and_changes_nothing(web: Web) -> None:
    sent = _active(web, "sent@example.org")
    erased = _active(web, "erased@example.org")
    send(web, TUESDAY_NOON)
    planned = _active(web, "planned@example.org")
    # Wednesday's run, planned only: nothing new for those sent Tuesday's, so theirs is skipped.
    wednesday = TUESDAY_NOON + timedelta(days=1)
    web.services.ledger.plan(wednesday, web.services.job(wednesday).plan)
    tokens = web.services.tokens()
    sent_id = web.services.ledger.history(sent.id, 1)[0].delivery_id
    erased_id = web.services.ledger.history(erased.id, 1)[0].delivery_id
    good = tokens.digest_token(sent_id, sent.token_version)
    with web.store.engine.connect() as conn:
        (pending, skipped) = (
            conn.scalars(
                select(DeliveryRow.id).where(
                    DeliveryRow.subscriber_id == reader.id, DeliveryRow.status == status.value
                )
            ).one()
            for reader, status in (
                (planned, DeliveryStatus.PENDING),
                (sent, DeliveryStatus.SKIPPED),
            )
        )
    web.services.remove_subscriber("erased@example.org")
    other_key = Tokens(["o" * 40], timedelta(days=7))
    bad = {
        "tampered": good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB"),
        "truncated": good[: len(good) // 2],
        "an older token version": tokens.digest_token(sent_id, sent.token_version - 1),
        "a newer token version": tokens.digest_token(sent_id, sent.token_version + 1),
        "unknown delivery": tokens.digest_token(424242, 1),
        "a digest planned, not sent yet": tokens.digest_token(pending, planned.token_version),
        "a digest skipped": tokens.digest_token(skipped, sent.token_version),
        "an erased reader's": tokens.digest_token(erased_id, erased.token_version),
        "another purpose's": tokens.link_token(Purpose.PREFERENCES, sent.id, sent.token_version),
        "another site's key": other_key.digest_token(sent_id, sent.token_version),
        "garbage": "%00%0d%0a..",
    }
    before = snapshot(web.store.engine)
    reference = web.get("/unsubscribe/garbage")
    assert reference.status_code == 400
    for name, token in bad.items():
        for method in ("GET", "HEAD"):
            answer = web.client.request(method, f"/digests/{token}")
            assert answer.status_code == 400, name
            assert "X-Robots-Tag" not in answer.headers, name  # the one page, as for any link
            if method == "GET":
                assert answer.text == reference.text, name
    assert snapshot(web.store.engine) == before
    assert web.get(f"/digests/{good}").status_code == 200


def test_a_re_subscription_ends_the_old_web_versions_with_the_readers_other_links(
    web: Web,
) -> None:
    _active(web, "again@example.org")
    record_sent(web.services, TUESDAY_NOON)
    old = web_version_path(web, "again@example.org")
    reader = web.reader("again@example.org")
    assert web.post(web.link(Purpose.UNSUBSCRIBE, reader)).status_code == 200
    assert web.get(old).status_code == 200  # unsubscribed, their links still open their pages
    web.post("/subscribe", {"email": "again@example.org", "frequency": "daily"})
    web.next_mail()
    assert web.post(web.link(Purpose.CONFIRM, web.reader("again@example.org"))).status_code == 200
    assert web.get(old).status_code == 400
    assert web.get(web_version_path(web, "again@example.org")).status_code == 200


# -- the reader's history on the preferences page ----------------------------------------------


def history_rows(page: httpx.Response) -> list[tuple[str, str]]:
    """(link, visible text) of each row of the preferences page's list of digests."""
    listed = re.search(r'<ul class="history"[^>]*>(.*?)</ul>', page.text, re.DOTALL)
    if listed is None:
        return []
    return [
        (href, _visible_text(row))
        for href, row in re.findall(r'<li><a href="([^"]+)">(.*?)</li>', listed[1], re.DOTALL)
    ]


def test_the_preferences_page_lists_the_last_ten_digests_sent_with_their_web_versions(
    web: Web,
) -> None:
    # In Auckland (UTC+13 in December) 08:00 is 19:00 UTC the day before: each digest's date is
    # the reader's own.
    draft = SubscriberDraft("kiwi@example.org", Frequency.DAILY, "Pacific/Auckland")
    web.store.add_subscriber(draft, confirmed=True, now=TUESDAY_NOON - timedelta(days=30))
    reader = web.reader("kiwi@example.org")
    preferences = web.link(Purpose.PREFERENCES, reader)
    assert history_rows(web.get(preferences)) == []
    assert "Your last digests" not in web.get(preferences).text

    first_slot = datetime(2026, 11, 30, 19, 0, tzinfo=UTC)  # Tuesday 1 December, 08:00 there
    for day in range(12):
        at = first_slot + timedelta(days=day, minutes=5)
        news = [_article(10 + 2 * day)] + ([_article(11 + 2 * day)] if day % 3 == 0 else [])
        web.store.upsert_articles(news, at - timedelta(hours=1))
        assert len(record_sent(web.services, at)) == 1
    web.clock.now = first_slot + timedelta(days=12)

    with _statements(web.store.engine) as statements:
        page = web.get(preferences)
    assert page.status_code == 200
    assert len([s for s in statements if "FROM deliveries" in s]) == 1, statements  # no N+1
    rows = history_rows(page)
    assert [text for _, text in rows] == [
        "Daily · Saturday 12 December Saturday 12 December 2026 · 1 article",
        "Daily · Friday 11 December Friday 11 December 2026 · 1 article",
        "Daily · Thursday 10 December Thursday 10 December 2026 · 2 articles",
        "Daily · Wednesday 9 December Wednesday 9 December 2026 · 1 article",
        "Daily · Tuesday 8 December Tuesday 8 December 2026 · 1 article",
        "Daily · Monday 7 December Monday 7 December 2026 · 2 articles",
        "Daily · Sunday 6 December Sunday 6 December 2026 · 1 article",
        "Daily · Saturday 5 December Saturday 5 December 2026 · 1 article",
        "Daily · Friday 4 December Friday 4 December 2026 · 2 articles",
        "Daily · Thursday 3 December Thursday 3 December 2026 · 1 article",
    ]
    newest = web.get(rows[0][0])
    assert newest.status_code == 200
    assert "Article 32" in newest.text
    assert "Article 30" not in newest.text  # the day before's
    tenth = web.get(rows[2][0]).text  # 28 and 29 came the same day
    assert "Article 28" in tenth and "Article 29" in tenth


def test_the_history_names_the_edition_each_digest_went_out_as_after_a_change_of_frequency(
    web: Web,
) -> None:
    reader = _active(web, "switch@example.org", Frequency.WEEKLY)
    record_sent(web.services, datetime(2026, 11, 23, 13, 0, tzinfo=UTC))  # Monday, week 48
    preferences = web.link(Purpose.PREFERENCES, reader)
    assert web.post(preferences, {"frequency": "monthly"}).status_code == 200
    (row,) = history_rows(web.get(preferences))
    assert row[1] == "Weekly · 23–29 November Monday 23 November 2026 · 1 article"
