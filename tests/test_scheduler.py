"""The daemon's dispatcher with an injected clock: each reader at their own 08:00, DST included."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED
from processes import PATIENCE
from smtp_server import SmtpServer

from digest import app as composition
from digest import database, logs
from digest.app import Services
from digest.config import LogFormat, load
from digest.domain import ArticleDraft, Frequency, SubscriberDraft
from digest.scheduler import Dispatcher, Every, InProcess, build_scheduler


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def services(database_url: str, smtp_server: SmtpServer) -> Iterator[Services]:
    env = {
        "DIGEST_DATABASE_URL": database_url,
        "DIGEST_SMTP_HOST": smtp_server.host,
        "DIGEST_SMTP_PORT": str(smtp_server.port),
        "DIGEST_SECRET_KEY": "c" * 40,
        "DIGEST_SENDER": "Mia's Feed <digest@miasfeed.example>",
    }
    services = composition.build(load(None, env), check_schema=False)
    database.upgrade(services.store.engine)
    yield services
    services.close()


def test_readers_in_madrid_and_sydney_get_their_daily_digest_at_their_own_0800_across_dst(
    services: Services, smtp_server: SmtpServer
) -> None:
    readers = [
        SubscriberDraft("madrid@example.org", Frequency.DAILY, "Europe/Madrid"),
        SubscriberDraft("sydney@example.org", Frequency.DAILY, "Australia/Sydney"),
    ]
    services.store.add_subscribers(readers, confirmed=True, now=at("2026-10-23T12:00"))
    clock = Clock(at("2026-10-23T12:00"))
    dispatcher = Dispatcher(InProcess(services), clock)

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


@pytest.fixture
def info_log(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], list[str]]]:
    """The daemon's logging at INFO, as `digest serve` sets it up; call for the lines since."""
    logs.configure(LogFormat.TEXT, logging.INFO, [])
    capsys.readouterr()
    # The test's SMTP server (aiosmtpd's "mail.log") runs in this process; the daemon's does not.
    yield lambda: [
        line for line in capsys.readouterr().err.splitlines() if " mail.log: " not in line
    ]
    logging.getLogger().handlers.clear()


async def scheduled_once(job: Every) -> None:
    """Let APScheduler run job once, as the daemon's scheduler does, and wait until it has."""
    ran = asyncio.Event()
    scheduler = build_scheduler([job], datetime.now(UTC))
    scheduler.add_listener(lambda event: ran.set(), EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    scheduler.start()
    try:
        await asyncio.wait_for(ran.wait(), PATIENCE)
    finally:
        scheduler.shutdown(wait=False)


def test_a_scheduled_run_that_sent_logs_one_line_at_info_and_an_idle_one_logs_none(
    services: Services, smtp_server: SmtpServer, info_log: Callable[[], list[str]]
) -> None:
    now = at("2026-11-24T09:00")
    services.store.add_subscribers(
        [SubscriberDraft("amara@example.org", Frequency.DAILY, "Europe/London")],
        confirmed=True,
        now=now - timedelta(days=2),
    )
    services.store.upsert_articles(
        [ArticleDraft("https://miasfeed.example/a", "News", "", "General", 2, now)], now
    )
    dispatcher = Dispatcher(InProcess(services), Clock(now))
    job = Every("dispatch", dispatcher.run, 60)
    asyncio.run(scheduled_once(job))
    assert len(smtp_server.messages) == 1
    (line,) = info_log()
    assert line.endswith(" INFO digest.daemon: run: sent 1, skipped 0, retrying 0, failed 0")
    asyncio.run(scheduled_once(job))
    assert len(smtp_server.messages) == 1
    assert info_log() == []


def test_a_job_not_run_at_start_first_runs_one_interval_after_it() -> None:
    async def nothing() -> None:
        pass

    start = at("2026-11-25T17:30")
    scheduler = build_scheduler(
        [Every("dispatch", nothing, 10), Every("publish", nothing, 60, at_start=False)], start
    )
    assert {job.id: job.next_run_time for job in scheduler.get_jobs()} == {
        "dispatch": start,
        "publish": start + timedelta(seconds=60),
    }
