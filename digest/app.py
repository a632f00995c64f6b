"""Composition root and the verbs every edge calls: settings in, wired services and their verbs out.

The CLI, the daemon's scheduler and the web side reach the pipeline and the adapters through
Services, so that a send run, a preview or an import is assembled in one place. It is the only
module that knows every adapter; it knows no edge (no Starlette, no Typer).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from digest import database, inbound, ingest, logs
from digest.addresses import (
    check_timezone,
    normalise_address,
    parse_send_time,
    parse_topics,
    parse_weekday,
)
from digest.config import LogFormat, Settings, origin_of, sender_address
from digest.dispatch import DigestMail, Job, dry_run, run_once
from digest.domain import (
    EVERYONE,
    FEEDBACK_DAYS,
    Article,
    Clock,
    DeliveryStatus,
    Feedback,
    Frequency,
    Notice,
    Only,
    Progress,
    ReaderGroup,
    RowError,
    Run,
    RunSummary,
    SentDigest,
    Site,
    Subscriber,
    SubscriberDraft,
    SubscriberStatus,
    local_midnight,
)
from digest.errors import InvalidInput, NotFound
from digest.feeds import Imported, import_articles
from digest.ledger import FinishRules, Ledger, PlanRules
from digest.mailer import DryRunSender, SmtpSender, SmtpSettings
from digest.notices import Notices, Taken, notice_counts
from digest.render import Renderer, preview_html, preview_text
from digest.sources import read_source
from digest.store import FeedState, Outlook, Store
from digest.subscriber_csv import parse_subscribers_csv
from digest.tokens import Tokens

RETRY_CAP = timedelta(hours=1)
# A dry run mails nobody, so it needs no From address of ours: it renders with this stand-in.
DRY_RUN_SENDER = "digest <digest@dry-run.invalid>"


def real_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Sent:
    summary: RunSummary
    unreachable: str | None  # why no connection reached the relay, if none did


@dataclass(frozen=True, slots=True)
class Preview:
    subscriber: Subscriber
    news: bool  # articles in their topics after the reader's cursor exist at the instant
    text: str | None  # the digest as it would go out; None when none would


@dataclass(frozen=True, slots=True)
class Status:
    """What `digest status` shows, as of one instant."""

    readers: dict[tuple[Frequency, SubscriberStatus], int]
    topic_mix: dict[frozenset[str] | None, int]  # active readers per topic set; None: every topic
    outlook: dict[ReaderGroup, Outlook]
    paused: int  # active readers whose pause is on
    deliveries: dict[DeliveryStatus, int]
    retries: int  # deliveries pending a retry
    runs: list[Run]  # the last ones, newest first
    feeds: list[tuple[str, FeedState | None]]  # each configured feed; None if not polled yet
    feedback: Feedback  # what came back over the last FEEDBACK_DAYS days


@dataclass(frozen=True, slots=True)
class SubscriberImport:
    added: int
    known: list[tuple[str, str]]  # (where, how it is reported) of each address already on file
    errors: list[RowError]


@dataclass(frozen=True, slots=True)
class InboundImport:
    taken: Taken
    mails: int  # read
    skipped: list[RowError]  # mails too big to read, by file and place


class Services:
    """The wired adapters, each built once, and the verbs the edges call."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.ledger = Ledger(store)
        # Built on first use: a command that sends nothing needs no sender or signing key.
        self._renderer: Renderer | None = None
        self._tokens: Tokens | None = None

    def close(self) -> None:
        self.store.engine.dispose()

    # -- the parts, built once ----------------------------------------------------------------

    def renderer(self) -> Renderer:
        if self._renderer is None:
            s = self.settings
            self._renderer = Renderer(
                s.templates_dir, self.site(), subjects=s.subjects, max_articles=s.max_articles
            )
        return self._renderer

    def tokens(self) -> Tokens:
        if self._tokens is None:
            s = self.settings
            self._tokens = Tokens(s.require_secret_keys(), s.confirm_max_age)
        return self._tokens

    def site(self) -> Site:
        s = self.settings
        return Site(
            name=s.site_name,
            url=s.site_url,
            sender=s.require_sender(),
            list_id=f"{s.site_name} digest <digest.{self.sender_domain()}>",
            postal_address=s.postal_address,
            disclaimer=s.disclaimer,
        )

    def import_rules(self) -> ingest.ImportRules:
        s = self.settings
        return ingest.ImportRules(featured_tags=s.featured_tags, own_origin=origin_of(s.site_url))

    def sender_domain(self) -> str:
        """Names our List-Id and Message-IDs."""
        return sender_address(self.settings.require_sender()).rpartition("@")[2]

    def smtp(self) -> SmtpSettings:
        s = self.settings
        return SmtpSettings(
            host=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_user,
            password=s.smtp_password,
            security=s.smtp_security,
            connections=s.smtp_connections,
            timeout=s.smtp_timeout,
            data_timeout=s.smtp_data_timeout,
            rate=s.smtp_rate_limit,
        )

    def sender(self) -> SmtpSender:
        """A pool of connections to the relay, for one run or one mail: use it with `async with`."""
        return SmtpSender(self.smtp())

    def digest_mail(self) -> DigestMail:
        """Turns one run's claims into messages; its bodies are kept for that run only."""
        s = self.settings
        return DigestMail(
            self.store,
            self.renderer(),
            self.tokens(),
            base_url=s.base_url,
            envelope_sender=sender_address(s.require_sender()),
            one_click=s.one_click,
            bounce_address=s.bounce_address,
            unsubscribe_address=s.unsubscribe_address,
        )

    def job(self, now: datetime, only: Only = EVERYONE) -> Job:
        s = self.settings
        return Job(
            now=now,
            owner=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
            plan=PlanRules(s.schedule, s.max_lateness, s.batch_size, self.sender_domain()),
            finish=FinishRules(s.retry_limit, s.retry_base, RETRY_CAP, s.bounce_limit),
            lease=s.lease,
            batch_size=s.batch_size,
            only=only,
        )

    # -- sending ------------------------------------------------------------------------------

    def only(self, frequency: Frequency | None, email: str | None) -> Only:
        """A run narrowed to one frequency and/or one reader's address (checked here)."""
        return Only(frequency, normalise_address(email) if email else None)

    async def send(
        self,
        now: datetime,
        clock: Clock,
        only: Only = EVERYONE,
        progress: Progress | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Sent:
        """Send every digest due at now, as `digest send` and the daemon's dispatch job do."""
        async with self.sender() as sender:
            summary = await run_once(
                self.job(now, only),
                self.ledger,
                self.digest_mail(),
                sender,
                clock,
                progress,
                should_stop,
            )
            return Sent(summary, sender.unreachable)

    async def dry_run(self, now: datetime, only: Only = EVERYONE) -> RunSummary:
        """Render every digest due at now; send and change nothing. No DIGEST_SENDER needed."""
        services = self
        if self.settings.sender is None:
            services = Services(replace(self.settings, sender=DRY_RUN_SENDER), self.store)
        return await dry_run(
            services.job(now, only), self.ledger, services.digest_mail(), DryRunSender()
        )

    def count_claimable(self, now: datetime, only: Only = EVERYONE) -> int:
        return self.ledger.count_claimable(now, only)

    def preview(self, email: str, now: datetime, *, html: bool) -> Preview:
        """The digest this reader would get at now, in either part; changes nothing.

        Its edition is that of the reader's next digest; it has no web version yet (that is made
        for a delivery), so the preview leaves out the "View in browser" links.
        """
        s = self.settings
        subscriber = self.store.find_subscriber(normalise_address(email))
        newest, news = self.store.news_for(subscriber, now)
        next_one = subscriber.next_digest(now, s.schedule, s.max_lateness, news=news)
        if next_one is None or not news:
            return Preview(subscriber, news, None)
        mail = self.digest_mail()
        body = mail.body(
            subscriber.frequency,
            subscriber.cursor,
            newest,
            next_one.slot.key,
            topics=subscriber.topics,
            web_version=False,
        )
        links = mail.links(subscriber.id, subscriber.token_version)
        text = preview_html(body, links) if html else preview_text(body, links)
        return Preview(subscriber, news, text)

    def web_version(self, sent: SentDigest) -> str:
        """The HTML of a digest as it was mailed: its window's body in its edition again, from
        the articles as they are now, with its reader's own links (its own web version's
        included, as in the mail). Changes nothing."""
        mail = self.digest_mail()  # one a page: its bodies are not kept beyond it
        links = mail.links(sent.subscriber_id, sent.token_version, sent.delivery_id)
        return preview_html(mail.body(*sent.window, sent.period_key, topics=sent.topics), links)

    def status(self, now: datetime, runs: int) -> Status:
        s = self.settings
        states = self.store.feed_states(s.feeds)
        return Status(
            readers=self.store.subscriber_counts(),
            topic_mix=self.store.topic_mix(),
            outlook=self.store.outlook(now, s.schedule, s.max_lateness),
            paused=self.store.paused_count(now),
            deliveries=self.ledger.delivery_counts(),
            retries=self.ledger.retry_count(),
            runs=self.ledger.last_runs(runs),
            feeds=[(source, states.get(source)) for source in s.feeds],
            feedback=self.feedback(now),
        )

    def feedback(self, now: datetime) -> Feedback:
        """Bounces, delays, complaints and mailto unsubscribes of the last FEEDBACK_DAYS days,
        against the digests sent in them."""
        since = now - timedelta(days=FEEDBACK_DAYS)
        return Feedback(self.ledger.sent_since(since), notice_counts(self.store.engine, since))

    # -- readers and articles -----------------------------------------------------------------

    def add_subscriber(
        self,
        email: str,
        frequency: Frequency | None,
        timezone: str | None,
        send_time: str | None = None,
        weekday: str | None = None,
        *,
        confirmed: bool,
        now: datetime,
        topics: str = "",
        despite_complaint: bool = False,
    ) -> SubscriberDraft:
        """send_time (HH:MM) and weekday (a name) None: the site's. despite_complaint takes back
        a reader who reported a digest as spam (Store.readd_complained); else they stay out."""
        s = self.settings
        draft = SubscriberDraft(
            normalise_address(email),
            frequency or s.default_frequency,
            check_timezone(timezone or s.default_timezone),
            parse_send_time(send_time or ""),
            parse_weekday(weekday or ""),
            parse_topics(topics),
        )
        if despite_complaint and self.store.readd_complained(draft, confirmed=confirmed, now=now):
            return draft
        self.store.add_subscriber(draft, confirmed=confirmed, now=now)
        return draft

    def import_subscribers(self, path: Path, *, confirmed: bool, now: datetime) -> SubscriberImport:
        """Import the good rows of a CSV file; known addresses are left as they were."""
        parsed = parse_subscribers_csv(
            read_source(str(path)), default_timezone=self.settings.default_timezone
        )
        known = self.store.add_subscribers(parsed.items, confirmed=confirmed, now=now)
        reported = [
            (where, known[draft.email])
            for where, draft in zip(parsed.places, parsed.items, strict=True)
            if draft.email in known
        ]
        return SubscriberImport(len(parsed.items) - len(known), reported, parsed.errors)

    def subscribers(self, status: SubscriberStatus | None) -> Iterator[Subscriber]:
        return self.store.subscribers(status)

    def pause_subscriber(
        self, email: str, until: date | datetime | None, now: datetime
    ) -> Subscriber:
        """Pause a reader's digests until an instant, or until their own midnight that starts a
        day; None ends the pause. Returns the reader as changed."""
        reader = self.store.find_subscriber(normalise_address(email))
        if reader.status is not SubscriberStatus.ACTIVE:
            raise InvalidInput(
                f"{reader.email} is {reader.status.value}: there is nothing to pause"
            )
        end = (
            local_midnight(until, ZoneInfo(reader.timezone))
            if isinstance(until, date) and not isinstance(until, datetime)
            else until
        )
        if end is not None and end <= now:
            raise InvalidInput(f"--until must be later than now, got {end:%Y-%m-%d %H:%M} UTC")
        changed = self.store.pause(reader.id, reader.token_version, end)
        if changed is None:  # erased or signed up again between the two statements
            raise NotFound(f"no subscriber with the address {email}")
        return changed

    def remove_subscriber(self, email: str) -> str:
        """Erase a reader and every record of mail to them; returns the address as on file."""
        return self.ledger.remove_subscriber(normalise_address(email))

    def add_article(self, fields: Mapping[str, object], now: datetime) -> tuple[str, bool]:
        """Add one article, or update the one with its URL: (its URL, whether it was new)."""
        draft = ingest.article_from_fields(dict(fields), now, rules=self.import_rules())
        return draft.url, bool(self.store.upsert_articles([draft], now).added)

    def import_articles(self, source: str, now: datetime) -> Imported:
        return import_articles(self.store, source, now, self.import_rules())

    def recent_articles(self, limit: int) -> list[Article]:
        return self.store.recent_articles(limit)

    # -- what comes back after sending (issue 16) ----------------------------------------------

    def inbound_reader(self) -> inbound.Reader:
        s = self.settings
        return inbound.Reader(
            self.tokens(), inbound.Mailboxes(s.bounce_address, s.unsubscribe_address)
        )

    def take_notices(self, notices: Sequence[Notice], now: datetime) -> Taken:
        """Apply bounces, complaints and mailto unsubscribes to their readers, each once."""
        return Notices(self.store.engine, self.settings.bounce_limit).take(notices, now)

    def import_inbound(self, paths: Sequence[Path], now: datetime) -> InboundImport:
        """Read each mail of each file (.eml, or an mbox of many) as if it had come in over SMTP,
        and take what it says. OSError for a file that cannot be read."""
        reader, notices, mails, skipped = self.inbound_reader(), [], 0, []
        limit = self.settings.inbound_max_bytes
        for path in paths:
            for where, raw in inbound.mails_in(path):
                mails += 1
                if len(raw) > limit:
                    skipped.append(RowError(where, f"over {limit:,} bytes: not read"))
                    continue
                notices += reader.notices(raw, source="file")
        return InboundImport(self.take_notices(notices, now), mails, skipped)

    def upgrade_schema(self) -> list[str]:
        """Create or migrate the schema; returns what the migrations had to tell."""
        return database.upgrade(self.store.engine)


def build(settings: Settings, *, check_schema: bool = True) -> Services:
    engine = database.connect(settings.database_url)
    if check_schema:
        try:
            database.check_current(engine)
        except BaseException:
            engine.dispose()
            raise
    return Services(settings, Store(engine))


def start(
    settings: Settings, log_format: LogFormat, log_level: int, *, check_schema: bool = True
) -> Services:
    """Start logging (which must know the secrets to hide), then wire the services."""
    logs.configure(log_format, log_level, logs.secrets_of(settings))
    return build(settings, check_schema=check_schema)
