"""The README's first command: the real daemon on sample data, its mail caught and shown as pages.

Each start is fresh: a new SQLite database and outbox in the folder, the sample readers and
articles, a local SMTP catcher on a free port and a new signing key. Then `digest serve`'s daemon
runs on it, on the demo's calendar (newsroom.py: a new sample article and a new day every minute),
with the demo's own pages (pages.py) beside its routes: `/` lists the caught mail, and
`/outbox/NAME` shows one as its reader would see it (`NAME.eml`, or `?raw=1`, the whole message).
The wing: catcher.py (the local SMTP catcher), outbox.py (reads what it caught), newsroom.py
(the demo's calendar) and pages.py.
"""

from __future__ import annotations

import errno
import logging
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

from digest import app as composition
from digest import daemon, ingest, logs
from digest.app import Services, real_clock
from digest.config import LogFormat, Settings, load
from digest.demo.catcher import Catcher
from digest.demo.newsroom import Newsroom
from digest.demo.pages import DISPATCH_SECONDS, routes
from digest.domain import ArticleDraft, Clock, Frequency, SubscriberDraft
from digest.errors import InvalidInput
from digest.scheduler import Every

SAMPLE_READERS = (
    SubscriberDraft("amara@example.org", Frequency.DAILY, "Europe/London"),
    SubscriberDraft("ben@example.org", Frequency.WEEKLY, "America/New_York"),
    SubscriberDraft("chen@example.org", Frequency.MONTHLY, "Asia/Singapore"),
    SubscriberDraft("dana@example.org", Frequency.DAILY, "Europe/Madrid"),
)
SAMPLE_ARTICLES = "articles.json"  # in the database from the start
MORE_ARTICLES = "more_articles.json"  # published one a minute while the demo runs
PUBLISH_SECONDS = 60


def run(
    folder: Path, host: str, port: int, log_format: LogFormat, say: Callable[[str], None]
) -> None:
    """Start afresh in folder and serve on host:port until SIGINT or SIGTERM."""
    url = local_url(host, port)
    check_port(host, port)  # before anything in the folder is replaced
    with started(folder, url, real_clock) as demo:
        settings, newsroom = demo.services.settings, demo.newsroom
        logs.configure(log_format, logging.INFO, logs.secrets_of(settings))
        # aiosmtpd logs every SMTP command at INFO: a dozen lines a mail would bury the daemon's.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        say(
            f"digest demo is running at {url}/\n"
            f"Open it to see the digests the {len(SAMPLE_READERS)} sample readers were sent; "
            f"every minute a new sample article comes out, and a digest with it. "
            f"Ctrl-C stops it.\n"
            f"Each caught mail is kept in {demo.mail}/ as .eml (the whole message) and .html."
        )
        daemon.serve(
            demo.services,
            newsroom.now,
            host,
            port,
            log_format,
            routes(demo.mail, settings.site_name, newsroom),
            [Every("publish", newsroom.publish, PUBLISH_SECONDS, at_start=False)],
        )
    say(f"digest demo stopped; the caught mail is still in {demo.mail}/")


@dataclass(frozen=True, slots=True)
class Demo:
    services: Services  # the daemon's, sending to the catcher
    newsroom: Newsroom  # the demo's calendar, and the sample articles still to publish
    mail: Path  # the catcher's folder


@contextmanager
def started(folder: Path, url: str, clock: Clock) -> Iterator[Demo]:
    """A fresh demo in folder, its catcher listening and its database seeded as of clock()."""
    mail = _fresh(folder)
    with Catcher(mail) as catcher:
        services = composition.build(_settings(folder, catcher, url), check_schema=False)
        try:
            yield Demo(services, _seed(services, clock), mail)
        finally:
            services.close()


def local_url(host: str, port: int) -> str:
    """The address a browser on this machine uses, which every link in the digests points at."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - naming the wildcard, not binding to it
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def check_port(host: str, port: int) -> None:
    """Fail in one line now rather than in uvicorn's log after the folder has been replaced."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        # As uvicorn binds: a port left in TIME_WAIT by the last demo is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InvalidInput(
                    f"port {port} on {host} is taken; try another, e.g. --port {port + 1}"
                ) from exc
            raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def _fresh(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("digest.db*"):
        stale.unlink()
    mail = folder / "outbox"
    shutil.rmtree(mail, ignore_errors=True)
    return mail


def _settings(folder: Path, catcher: Catcher, url: str) -> Settings:
    return load(
        None,
        {
            "DIGEST_DATABASE_URL": f"sqlite:///{folder / 'digest.db'}",
            "DIGEST_SMTP_HOST": catcher.host,
            "DIGEST_SMTP_PORT": str(catcher.port),
            # The demo is the one command that may sign without a configured key.
            "DIGEST_SECRET_KEY": secrets.token_urlsafe(32),
            "DIGEST_BASE_URL": url,
            "DIGEST_SENDER": "Mia's Feed <digest@miasfeed.example>",
            # The demo is the site: the sample articles' pictures are its own, served over http.
            "DIGEST_SITE_URL": url,
            "DIGEST_DISCLAIMER": "Mia's Feed shares news, not medical advice",
            "DIGEST_POSTAL_ADDRESS": "Mia's Feed · 20 Sample Street · Springfield, OR 97477 · USA",
            "DIGEST_DISPATCH_INTERVAL_SECONDS": str(DISPATCH_SECONDS),
        },
    )


def _seed(services: Services, clock: Clock) -> Newsroom:
    services.upgrade_schema()
    now = clock()
    # Readers who confirmed weeks ago, before the articles came in: the daemon's first run, at
    # start, finds every one of them due.
    services.store.add_subscribers(SAMPLE_READERS, confirmed=True, now=now - timedelta(days=40))
    services.store.upsert_articles(_samples(services, SAMPLE_ARTICLES, now), now)
    return Newsroom(services.store, _samples(services, MORE_ARTICLES, now), clock)


def _samples(services: Services, name: str, now: datetime) -> list[ArticleDraft]:
    """The sample articles, their pictures (`/pictures/NAME.png`) on the demo's own address."""
    data = resources.files("digest.samples").joinpath(name).read_bytes()
    site = services.settings.site_url
    return ingest.parse_articles(
        data, source=name, now=now, base=f"{site}/", rules=services.import_rules()
    ).items
