"""`digest serve`: the scheduler and the web endpoints in one process, on one event loop; and
inbound SMTP, when DIGEST_INBOUND_PORT is set, beside them (inbound_smtp.py)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from digest.app import Services
from digest.config import LogFormat
from digest.domain import Clock
from digest.feeds import FeedPoller
from digest.inbound_smtp import receiving
from digest.metrics import Metrics, Sources
from digest.scheduler import Dispatcher, Every, InProcess, Sending, build_scheduler
from digest.sending_process import SendingProcess
from digest.stopping import handling, leave_at_once
from digest.web import create_app
from digest.webhooks import Fetcher, fetch_https

log = logging.getLogger("digest.daemon")


class _Health:
    def __init__(self, services: Services, dispatcher: Dispatcher, clock: Clock) -> None:
        self._services = services
        self._dispatcher = dispatcher
        self._metrics = Metrics(
            Sources(
                services.ledger, services.store, clock, services.settings.feeds, services.feedback
            )
        )
        self.scheduler_running = False

    def metrics(self) -> bytes:
        return self._metrics.render()

    def database_ok(self) -> bool:
        return self._services.store.ping()

    def scheduler_state(self) -> dict[str, Any]:
        last = self._dispatcher.last
        return {
            "running": self.scheduler_running,
            "dispatching": self._dispatcher.running,
            "last_run": None
            if last is None
            else {
                "finished_at": last.finished_at.isoformat(),
                "summary": last.summary.line() if last.summary else None,
                "error": last.error or None,
            },
        }


def asgi_app(
    services: Services,
    clock: Clock,
    extra_routes: Sequence[BaseRoute] = (),
    extra_jobs: Sequence[Every] = (),
    sending: Sending | None = None,
    fetch: Fetcher = fetch_https,
) -> Starlette:
    """The daemon's web app, its scheduler started by its lifespan; it sends in this process
    unless told otherwise (tests drive it so, with a fake clock). fetch reads Amazon SNS's
    signing certificates for the SES webhook (tests serve their own)."""
    dispatcher = Dispatcher(sending or InProcess(services), clock)
    health = _Health(services, dispatcher, clock)
    settings = services.settings

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        jobs = [
            Every("dispatch", dispatcher.run, settings.dispatch_interval.total_seconds()),
            *extra_jobs,
        ]
        if settings.feeds:
            poller = FeedPoller(services.store, settings.feeds, clock, services.import_rules())
            jobs.append(
                Every("poll_feeds", poller.poll, settings.feed_poll_interval.total_seconds())
            )
        scheduler = build_scheduler(jobs, clock())
        scheduler.start()
        health.scheduler_running = True
        for warning in settings.warnings():
            log.warning(warning)
        log.info(
            "scheduler started: dispatch every %s, %d feed(s) polled every %s",
            settings.dispatch_interval,
            len(settings.feeds),
            settings.feed_poll_interval,
        )
        try:
            yield
        finally:
            # Wait for the run in flight first: APScheduler's shutdown cancels running jobs.
            finished = await dispatcher.stop(settings.shutdown_timeout.total_seconds())
            if not finished:
                log.warning("stopped with sends in flight; their leases hand them to the next run")
            scheduler.shutdown(wait=False)
            health.scheduler_running = False

    return create_app(services, health, clock, lifespan, extra_routes, fetch)


class _Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            leave_at_once(sig)
        super().handle_exit(sig, frame)


def _stopped_cleanly(sig: int, frame: FrameType | None) -> None:
    """uvicorn raises the stopping signal again after a clean shutdown; ours ends with exit 0."""


def serve(
    services: Services,
    clock: Clock,
    host: str,
    port: int,
    log_format: LogFormat,
    extra_routes: Sequence[BaseRoute] = (),
    extra_jobs: Sequence[Every] = (),
) -> None:
    """Run until SIGTERM or SIGINT; the first finishes in-flight sends, a second exits at once.

    The sends run in a process of their own, which logs as this one does, so that the pages
    never wait behind a run for the GIL. With DIGEST_INBOUND_PORT set, inbound SMTP listens on
    host too, from before the web starts until after it stops; a taken port is an InvalidInput.
    """
    with _inbound(services, clock, host):
        _serve_web(services, clock, host, port, log_format, extra_routes, extra_jobs)


@contextmanager
def _inbound(services: Services, clock: Clock, host: str) -> Iterator[None]:
    settings = services.settings
    if not settings.inbound_port:
        yield
        return
    with receiving(services, clock, host, settings.inbound_port):
        addresses = [settings.bounce_address, settings.unsubscribe_address]
        log.info(
            "inbound SMTP on %s:%d for %s",
            host,
            settings.inbound_port,
            ", ".join(a for a in addresses if a) or "no address (it refuses every recipient)",
        )
        yield


def _serve_web(
    services: Services,
    clock: Clock,
    host: str,
    port: int,
    log_format: LogFormat,
    extra_routes: Sequence[BaseRoute],
    extra_jobs: Sequence[Every],
) -> None:
    sending = SendingProcess(services.settings, log_format, logging.getLogger().level)
    config = uvicorn.Config(
        asgi_app(services, clock, extra_routes, extra_jobs, sending),
        host=host,
        port=port,
        lifespan="on",
        log_config=None,  # logging is ours (digest.logs): one format, secrets scrubbed
        timeout_graceful_shutdown=int(services.settings.shutdown_timeout.total_seconds()),
    )
    with handling(_stopped_cleanly):
        _Server(config).run()
