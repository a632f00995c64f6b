"""Composition root: settings in, wired services out. The only place that knows every adapter."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from starlette.routing import BaseRoute

from digest import database
from digest.config import Settings, sender_address
from digest.dispatch import DigestMail, Job
from digest.domain import EVERYONE, Clock, Only, Site
from digest.ledger import FinishRules, PlanRules
from digest.mailer import SmtpSettings
from digest.pages import Pages, PageSettings, ReaderPages
from digest.ratelimit import RateLimiter
from digest.readers import ConfirmationMail, Readers
from digest.render import Renderer
from digest.store import Store
from digest.tokens import Tokens

RETRY_CAP = timedelta(hours=1)
SIGNUP_WINDOW = timedelta(hours=1)
# A dry run mails nobody, so it needs no From address of ours: it renders with this stand-in.
DRY_RUN_SENDER = "digest <digest@dry-run.invalid>"


def real_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    store: Store

    def _sender_domain(self) -> str:
        """Names our List-Id and Message-IDs."""
        return sender_address(self.settings.require_sender()).rpartition("@")[2]

    def close(self) -> None:
        self.store.engine.dispose()

    def for_dry_run(self) -> Services:
        """These services, with a stand-in sender when DIGEST_SENDER is not set."""
        if self.settings.sender is not None:
            return self
        return replace(self, settings=replace(self.settings, sender=DRY_RUN_SENDER))

    def renderer(self) -> Renderer:
        return Renderer(
            self.settings.templates_dir, self._site(), max_articles=self.settings.max_articles
        )

    def _site(self) -> Site:
        s = self.settings
        return Site(
            name=s.site_name,
            url=s.site_url,
            sender=s.require_sender(),
            list_id=f"{s.site_name} digest <digest.{self._sender_domain()}>",
        )

    def pages(self) -> Pages:
        s = self.settings
        return Pages(
            s.templates_dir,
            PageSettings(
                site=self._site(),
                allowed_origins=s.allowed_origins,
                default_frequency=s.default_frequency,
                default_timezone=s.default_timezone,
                send_time=s.schedule.send_time.strftime("%H:%M"),
                confirm_days=s.confirm_max_age.days,
                dispatch_interval=s.dispatch_interval,
            ),
        )

    def reader_routes(self, clock: Clock, pages: Pages) -> list[BaseRoute]:
        s = self.settings
        tokens = self.tokens()
        confirmations = ConfirmationMail(
            self.renderer(),
            tokens,
            self.smtp(),
            base_url=s.base_url,
            envelope_sender=sender_address(s.require_sender()),
            message_domain=self._sender_domain(),
            expires_days=s.confirm_max_age.days,
        )
        limits = (
            RateLimiter(s.signup_limit_per_address, SIGNUP_WINDOW, clock),
            RateLimiter(s.signup_limit_per_client, SIGNUP_WINDOW, clock),
        )
        readers = Readers(self.store, tokens, s.schedule, s.max_lateness, clock)
        return ReaderPages(readers, pages, confirmations, limits).routes()

    def tokens(self) -> Tokens:
        return Tokens(self.settings.require_secret_keys(), self.settings.confirm_max_age)

    def digest_mail(self) -> DigestMail:
        s = self.settings
        return DigestMail(
            self.store,
            self.renderer(),
            self.tokens(),
            base_url=s.base_url,
            envelope_sender=sender_address(s.require_sender()),
            one_click=s.one_click,
        )

    def job(self, now: datetime, only: Only = EVERYONE) -> Job:
        s = self.settings
        domain = self._sender_domain()
        return Job(
            now=now,
            owner=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
            plan=PlanRules(s.schedule, s.max_lateness, s.batch_size, message_domain=domain),
            finish=FinishRules(s.retry_limit, s.retry_base, RETRY_CAP, s.bounce_limit),
            lease=s.lease,
            batch_size=s.batch_size,
            only=only,
        )

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


def build(settings: Settings, *, check_schema: bool = True) -> Services:
    engine = database.connect(settings.database_url)
    if check_schema:
        try:
            database.check_current(engine)
        except BaseException:
            engine.dispose()
            raise
    return Services(settings, Store(engine))
