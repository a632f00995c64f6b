"""The README's first command: sample digests sent through a local catcher, kept as files to open."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from datetime import timedelta
from importlib import resources
from pathlib import Path

from digest import app as composition
from digest import database, ingest
from digest.app import real_clock
from digest.catcher import Catcher
from digest.config import load
from digest.dispatch import run_once
from digest.domain import Frequency, SubscriberDraft
from digest.mailer import SmtpSender

SAMPLE_READERS = (
    SubscriberDraft("amara@example.org", Frequency.DAILY, "Europe/London"),
    SubscriberDraft("ben@example.org", Frequency.WEEKLY, "America/New_York"),
    SubscriberDraft("chen@example.org", Frequency.MONTHLY, "Asia/Singapore"),
    SubscriberDraft("dana@example.org", Frequency.WEEKLY, "Europe/Madrid"),
)
SAMPLE_ARTICLES = "articles.json"


def run(folder: Path) -> str:
    """Start afresh in folder, send what is due, and say where the caught mail is."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("digest.db*"):
        stale.unlink()
    shutil.rmtree(folder / "outbox", ignore_errors=True)
    with Catcher(folder / "outbox") as catcher:
        settings = load(
            None,
            {
                "DIGEST_DATABASE_URL": f"sqlite:///{folder / 'digest.db'}",
                "DIGEST_SMTP_HOST": catcher.host,
                "DIGEST_SMTP_PORT": str(catcher.port),
                # The demo is the one command that may sign without a configured key.
                "DIGEST_SECRET_KEY": secrets.token_urlsafe(32),
                "DIGEST_SENDER": "Mia's Feed <digest@miasfeed.example>",
                "DIGEST_SITE_URL": "https://miasfeed.example",
            },
        )
        services = composition.build(settings, check_schema=False)
        database.upgrade(services.store.engine)
        now = real_clock()
        # Readers who confirmed weeks ago, before the articles came in: every one of them is due.
        services.store.add_subscribers(SAMPLE_READERS, confirmed=True, now=now - timedelta(days=40))
        data = resources.files("digest.samples").joinpath(SAMPLE_ARTICLES).read_bytes()
        parsed = ingest.parse_articles(data, source=SAMPLE_ARTICLES, now=now)
        services.store.upsert_articles(parsed.items, now)

        async def send() -> str:
            async with SmtpSender(services.smtp()) as sender:
                summary = await run_once(
                    services.job(now), services.store, services.digest_mail(), sender, real_clock
                )
            return summary.line()

        line = asyncio.run(send())
        pages = sorted(p for p in (folder / "outbox").glob("*.html"))
    shown = "\n".join(f"  {page}" for page in pages)
    return (
        f"{line}\n"
        f"{len(SAMPLE_READERS)} sample readers, {len(parsed.items)} sample articles, "
        f"database {folder / 'digest.db'}\n"
        f"The local SMTP catcher kept each mail as .eml (the whole message) and .html; open one:\n"
        f"{shown}"
    )
