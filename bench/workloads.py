"""What the benchmark runs in processes of its own: seeding, a `digest send`, and a naive loop.

Each measured process builds what it needs, says it is ready, waits for the word to go (so two
processes start together), and reports a Measured: the work's CPU and end, and the process's peak
RSS, all taken in the process itself.
"""

from __future__ import annotations

import asyncio
import itertools
import resource
import sys
import time
from collections.abc import MutableSequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event, Semaphore
from zoneinfo import ZoneInfo

import aiosmtplib

from digest import app as composition
from digest import database
from digest.config import load
from digest.domain import ArticleDraft, Frequency, SubscriberDraft, SubscriberStatus, period_key
from digest.render import preview_html, preview_text

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # a Monday 09:00 UTC: weekly readers are due
ZONES = ("UTC", "Europe/London", "Europe/Madrid", "America/New_York", "Asia/Kolkata")
FREQUENCIES = tuple(Frequency)
SEED_BATCH = 5000
# What readers choose with --topics (issue 15): a quarter every topic, the rest one of six sets
# of the seeded categories, and one a category no article has (their windows are skipped).
TOPIC_MIX: tuple[frozenset[str] | None, ...] = (
    None,
    None,
    frozenset({"nutrition"}),
    frozenset({"fitness", "nutrition"}),
    frozenset({"mental health"}),
    frozenset({"medical news and research"}),
    frozenset({"medical news and research", "mental health"}),
    frozenset({"public health"}),
)
SUMMARY = (
    "Researchers followed 4,000 adults for a decade and found that a regular sleep schedule "
    "matters as much as its length. <em>Small, steady habits</em> made the largest difference. "
)
SENDER = "Mia's Feed <digest@miasfeed.example>"
# With --return-paths: each digest's own signed envelope sender and mailto: unsubscribe.
RETURN_PATHS = {
    "DIGEST_BOUNCE_ADDRESS": "bounces@mail.miasfeed.example",
    "DIGEST_UNSUBSCRIBE_ADDRESS": "unsubscribe@mail.miasfeed.example",
}
ENVELOPE_SENDER = "digest@miasfeed.example"
PROGRESS_EVERY = 60.0  # seconds between the notes a long run prints


def environment(database_url: str, port: int, connections: int) -> dict[str, str]:
    return {
        "DIGEST_DATABASE_URL": database_url,
        "DIGEST_SMTP_HOST": "127.0.0.1",
        "DIGEST_SMTP_PORT": str(port),
        "DIGEST_SMTP_CONNECTIONS": str(connections),
        "DIGEST_SECRET_KEY": "b" * 40,
        "DIGEST_SENDER": SENDER,
        "DIGEST_BASE_URL": "https://news.example",
    }


def seed(
    env: dict[str, str], readers: int, articles: int, now: datetime = NOW, *, topics: bool = False
) -> None:
    """N confirmed readers over the three frequencies and a few timezones, all due at now, and M
    articles, through the store's bulk path (5,000 readers a statement). With topics, readers
    hold TOPIC_MIX's topic sets in turn; else every reader gets every topic."""
    services = composition.build(load(None, env), check_schema=False)
    database.upgrade(services.store.engine)
    confirmed = now - timedelta(days=40)  # everyone confirmed long ago: every reader is due
    for start in range(0, readers, SEED_BATCH):
        batch = [
            SubscriberDraft(
                f"reader{n}@example.org",
                FREQUENCIES[n % 3],
                ZONES[n % len(ZONES)],
                # By n // 15, so that each (frequency, timezone) group holds every topic set.
                topics=TOPIC_MIX[n // 15 % len(TOPIC_MIX)] if topics else None,
            )
            for n in range(start, min(start + SEED_BATCH, readers))
        ]
        services.store.add_subscribers(batch, confirmed=True, now=confirmed)
    drafts = [
        ArticleDraft(
            url=f"https://miasfeed.example/articles/{n}",
            title=f"Sleep study {n}: regular bedtimes protect the heart",
            summary=SUMMARY * 3,
            category=("Medical News & Research", "Nutrition", "Mental Health", "Fitness")[n % 4],
            reading_minutes=2 + n % 5,
            published_at=confirmed + timedelta(hours=n),
            image_url=f"https://miasfeed.example/images/{n}.jpg" if n % 2 else None,
            featured=n % 10 == 0,  # editor's picks: the lead story and a few before the rest
        )
        for n in range(articles)
    ]
    services.store.upsert_articles(drafts, confirmed + timedelta(days=1))
    services.close()


def send_one(env: dict[str, str], articles: int) -> None:
    """Seed one reader and send them their digest, in this process: the message as digest sends it."""
    seed(env, 1, articles)
    services = composition.build(load(None, env))
    try:
        asyncio.run(services.send(NOW, lambda: NOW))
    finally:
        services.close()


@dataclass(frozen=True, slots=True)
class Measured:
    sent: int
    ended: float  # time.monotonic() when the work ended (the same clock in every process)
    cpu: float  # user + system seconds of the work, every thread
    peak_rss: float  # MiB, the process's high-water mark


# What a measured process marks as it goes, in memory its parent reads even after stopping it:
# time.monotonic() when the run had counted what it will send (its progress total: the run plans
# as it goes, so this is not the end of planning; bench/planning.py times planning alone) and when
# the first batch was recorded (0: not yet), and the deliveries recorded so far.
COUNTED, FIRST_BATCH, RECORDED = range(3)
Marks = MutableSequence[float]


class Timeline:
    """A send run's Progress, marked: when its total was counted, when batches were recorded."""

    def __init__(self, label: str, marks: Marks) -> None:
        self._label = label
        self._marks = marks
        self._total = 0
        self._noted = time.monotonic()

    def start(self, total: int) -> None:
        self._marks[COUNTED] = time.monotonic()
        self._total = total

    def advance(self, count: int) -> None:
        now = time.monotonic()
        if not self._marks[FIRST_BATCH]:
            self._marks[FIRST_BATCH] = now
        self._marks[RECORDED] += count
        if now - self._noted >= PROGRESS_EVERY:  # a long run shows that it is moving
            done = int(self._marks[RECORDED])
            print(f"    … {self._label}: {done:,} of {self._total:,}", file=sys.stderr)
            self._noted = now


def send(
    env: dict[str, str],
    label: str,
    marks: Marks,
    ready: Semaphore,
    go: Event,
    results: Queue[Measured],
) -> None:
    """One `digest send` through Services.send: plan, claim, render, send, record."""
    services = composition.build(load(None, env))
    timeline = Timeline(label, marks)
    ready.release()
    go.wait()
    started, cpu = time.monotonic(), _cpu()

    def clock() -> datetime:  # NOW, moving on in real time: leases and records see time pass
        return NOW + timedelta(seconds=time.monotonic() - started)

    sent = asyncio.run(services.send(NOW, clock, progress=timeline))
    results.put(Measured(sent.summary.sent, time.monotonic(), _cpu() - cpu, _peak_rss()))


def naive(
    env: dict[str, str],
    readers: int,
    marks: Marks,
    ready: Semaphore,
    go: Event,
    results: Queue[Measured],
) -> None:
    """What a short script would do: per reader, render the templates, build an EmailMessage and
    hand it to aiosmtplib.send, which opens a connection for it."""
    services = composition.build(load(None, env))
    renderer, mail = services.renderer(), services.digest_mail()
    port = int(env["DIGEST_SMTP_PORT"])
    ready.release()
    go.wait()
    cpu = _cpu()

    async def loop() -> int:
        articles = services.store.articles(0, services.store.newest_seq(NOW))
        due = services.store.subscribers(SubscriberStatus.ACTIVE)
        sent = 0
        for reader in itertools.islice(due, readers):
            edition = period_key(reader.frequency, NOW.astimezone(ZoneInfo(reader.timezone)).date())
            body = renderer.digest_body(reader.frequency, articles, edition)  # Jinja, every time
            links = mail.links(reader.id, reader.token_version, reader.id)  # a web version too
            message = EmailMessage()
            message["From"] = SENDER
            message["To"] = reader.email
            message["Subject"] = body.subject
            message["Date"] = format_datetime(NOW)
            message["Message-ID"] = make_msgid(domain="miasfeed.example")
            message["List-Unsubscribe"] = f"<{links.unsubscribe}>"
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            message.set_content(preview_text(body, links))
            message.add_alternative(preview_html(body, links), subtype="html")
            await aiosmtplib.send(
                message,
                sender=ENVELOPE_SENDER,
                recipients=[reader.email],
                hostname="127.0.0.1",
                port=port,
            )
            sent += 1
            marks[RECORDED] = sent
        return sent

    sent = asyncio.run(loop())
    results.put(Measured(sent, time.monotonic(), _cpu() - cpu, _peak_rss()))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux counts KiB
