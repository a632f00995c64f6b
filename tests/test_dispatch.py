"""DigestMail: one body per window and edition, and only the links (a web version's among them) per
reader, on SQLite and PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from samples import SITE

from digest.config import PROJECT_TEMPLATES
from digest.dispatch import DigestMail
from digest.domain import Article, ArticleDraft, Claim, Frequency
from digest.render import DigestBody, Renderer
from digest.store import Store
from digest.tokens import Tokens

NOW = datetime(2026, 11, 30, 20, 0, tzinfo=UTC)
SECRET = "s" * 40


class CountingRenderer(Renderer):
    """The real renderer, counting the bodies it renders."""

    rendered: list[tuple[Frequency, str]]

    def digest_body(
        self,
        frequency: Frequency,
        articles: Sequence[Article],
        period_key: str,
        *,
        web_version: bool = True,
    ) -> DigestBody:
        self.rendered.append((frequency, period_key))
        return super().digest_body(frequency, articles, period_key, web_version=web_version)


@pytest.fixture
def mail(store: Store) -> tuple[DigestMail, CountingRenderer]:
    drafts = [
        ArticleDraft(
            url=f"https://miasfeed.example/articles/{n}",
            title=f"Study {n}",
            summary="<p>Findings.</p>",
            category="Research",
            reading_minutes=2,
            published_at=NOW - timedelta(days=1),
        )
        for n in range(3)
    ]
    store.upsert_articles(drafts, NOW - timedelta(hours=1))
    renderer = CountingRenderer(PROJECT_TEMPLATES, SITE)
    renderer.rendered = []
    tokens = Tokens([SECRET], timedelta(days=7))
    digest_mail = DigestMail(
        store,
        renderer,
        tokens,
        base_url="https://news.example",
        envelope_sender="digest@example.org",
        one_click=True,
    )
    return digest_mail, renderer


def claim(
    delivery_id: int, subscriber_id: int, period_key: str, topics: frozenset[str] | None = None
) -> Claim:
    return Claim(
        delivery_id=delivery_id,
        subscriber_id=subscriber_id,
        email=f"reader{subscriber_id}@example.org",
        frequency=Frequency.DAILY,
        token_version=2,
        period_key=period_key,
        cursor_from=0,
        cursor_to=3,
        message_id=f"<{delivery_id}@example.org>",
        planned_at=NOW,
        attempts=0,
        topics=topics,
    )


def parts(message: bytes) -> list[EmailMessage]:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    found = [part for part in parsed.iter_parts() if isinstance(part, EmailMessage)]
    assert len(found) == 2
    return found


def test_readers_of_one_window_and_edition_share_a_body_and_another_edition_gets_its_own(
    mail: tuple[DigestMail, CountingRenderer],
) -> None:
    digest_mail, renderer = mail
    # Monday evening in Los Angeles and New York, already Tuesday in Auckland.
    claims = [
        claim(11, 1, "2026-11-30"),
        claim(12, 2, "2026-11-30"),
        claim(13, 3, "2026-12-01"),
        claim(14, 4, "2026-11-30"),
    ]
    subjects = [
        email.message_from_bytes(digest_mail.outgoing(c).message, policy=email.policy.default)[
            "Subject"
        ]
        for c in claims
    ]
    assert renderer.rendered == [
        (Frequency.DAILY, "2026-11-30"),
        (Frequency.DAILY, "2026-12-01"),
    ]
    assert subjects == [
        "Your daily digest · Monday 30 November",
        "Your daily digest · Monday 30 November",
        "Your daily digest · Tuesday 1 December",
        "Your daily digest · Monday 30 November",
    ]


def test_bodies_rendered_grow_with_the_distinct_topic_sets_not_the_readers(
    mail: tuple[DigestMail, CountingRenderer],
) -> None:
    digest_mail, renderer = mail
    research, wider = frozenset({"research"}), frozenset({"research", "sleep"})
    sets = [None, research, None, wider, research, None, research, wider]
    for n, topics in enumerate(sets, start=1):
        digest_mail.outgoing(claim(10 + n, n, "2026-11-30", topics))
    assert len(renderer.rendered) == 3


def test_each_mail_links_the_web_version_of_its_own_delivery_and_a_preview_none(
    mail: tuple[DigestMail, CountingRenderer],
) -> None:
    digest_mail, _ = mail
    tokens = Tokens([SECRET], timedelta(days=7))
    for delivery_id in (11, 12):
        message = digest_mail.outgoing(claim(delivery_id, delivery_id - 10, "2026-11-30")).message
        for part in parts(message):
            content = part.get_content()
            found = re.findall(r"https://news\.example/digests/([\w.-]+)", content)
            assert len(found) == 2  # "View in browser" at the top and in the footer
            assert {tokens.read_digest(token) for token in found} == {(delivery_id, 2)}
    # A preview has no delivery, so no web version, and says nothing of one.
    links = digest_mail.links(1, 2)
    assert links.web_version is None
    body = digest_mail.body(Frequency.DAILY, 0, 3, "2026-11-30", web_version=False)
    assert "View in browser" not in body.text.fill(links.urls)
