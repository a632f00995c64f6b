"""The daemon's dispatcher with an injected clock: each reader at their own 08:00, DST included."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from smtp_server import SmtpServer

from digest import app as composition
from digest import database
from digest.config import load
from digest.domain import ArticleDraft, Frequency, SubscriberDraft
from digest.scheduler import Dispatcher


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_readers_in_madrid_and_sydney_get_their_daily_digest_at_their_own_0800_across_dst(
    database_url: str, smtp_server: SmtpServer
) -> None:
    env = {
        "DIGEST_DATABASE_URL": database_url,
        "DIGEST_SMTP_HOST": smtp_server.host,
        "DIGEST_SMTP_PORT": str(smtp_server.port),
        "DIGEST_SECRET_KEY": "c" * 40,
        "DIGEST_SENDER": "Mia's Feed <digest@miasfeed.example>",
    }
    services = composition.build(load(None, env), check_schema=False)
    database.upgrade(services.store.engine)
    readers = [
        SubscriberDraft("madrid@example.org", Frequency.DAILY, "Europe/Madrid"),
        SubscriberDraft("sydney@example.org", Frequency.DAILY, "Australia/Sydney"),
    ]
    services.store.add_subscribers(readers, confirmed=True, now=at("2026-10-23T12:00"))
    clock = Clock(at("2026-10-23T12:00"))
    dispatcher = Dispatcher(services, clock)

    def tick(instant: str) -> list[str]:
        """Publish an article, move the clock, run once; who got mail?"""
        before = len(smtp_server.messages)
        clock.now = at(instant)
        services.store.upsert_articles(
            [
                ArticleDraft(
                    f"https://miasfeed.example/{instant}", f"News at {instant}", "", "General", 2,
                    clock.now - timedelta(minutes=1),
                )
            ],
            clock.now - timedelta(minutes=1),
        )  # fmt: skip
        asyncio.run(dispatcher.run())
        return sorted(r for m in smtp_server.messages[before:] for r in m.recipients)

    # Madrid is UTC+2 (CEST) until 25 October, then UTC+1; Sydney is UTC+11 (AEDT) all along.
    assert tick("2026-10-23T20:59") == []
    assert tick("2026-10-23T21:00") == ["sydney@example.org"]  # 08:00 on the 24th in Sydney
    assert tick("2026-10-24T05:59") == []
    assert tick("2026-10-24T06:00") == ["madrid@example.org"]  # 08:00 CEST
    assert tick("2026-10-24T21:00") == ["sydney@example.org"]
    assert tick("2026-10-25T06:30") == []  # after the change 08:00 is 07:00 UTC
    assert tick("2026-10-25T07:00") == ["madrid@example.org"]  # 08:00 CET
    assert dispatcher.last is not None and dispatcher.last.summary is not None
    services.close()
