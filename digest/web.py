"""The Starlette app: health and metrics for operators, the reader's pages, and what guards them all.

The web side builds itself from the Services: the pages, the readers' verbs, the sign-up limits,
the confirmation and welcome mails. Routes live beside their callers (pages.py for readers); here
are the pieces every response shares: security headers, and error handlers that turn a bad link, a
database outage or a bug into a page with no traceback on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from digest.app import Services
from digest.config import sender_address
from digest.domain import WEEKDAYS, Clock, Notice
from digest.errors import DatabaseError, ExpiredToken, InvalidToken
from digest.pages import Pages, PageSettings, ReaderPages
from digest.ratelimit import RateLimiter
from digest.readers import ConfirmationMail, Readers, WelcomeMail
from digest.webhooks import Fetcher, Webhooks, fetch_https

log = logging.getLogger("digest.web")
SIGNUP_WINDOW = timedelta(hours=1)
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SECURITY_HEADERS = {
    # Nothing from other hosts, no inline script or style, and no framing by anyone.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Token pages must not leak their URL to the next site, nor be kept by a shared cache.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Health(Protocol):
    def database_ok(self) -> bool: ...
    def scheduler_state(self) -> dict[str, Any]: ...
    def metrics(self) -> bytes: ...


class _SecurityHeaders:
    """Adds SECURITY_HEADERS to every response that has not set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self._app(scope, receive, send_with_headers)


def _pages(services: Services) -> Pages:
    s = services.settings
    return Pages(
        s.templates_dir,
        PageSettings(
            site=services.site(),
            allowed_origins=s.allowed_origins,
            default_frequency=s.default_frequency,
            default_timezone=s.default_timezone,
            send_time=s.schedule.send_time.strftime("%H:%M"),
            weekly_day=WEEKDAYS[s.schedule.weekly_day].capitalize(),
            confirm_days=s.confirm_max_age.days,
            dispatch_interval=s.dispatch_interval,
        ),
    )


def _reader_routes(services: Services, clock: Clock, pages: Pages) -> list[BaseRoute]:
    s = services.settings
    confirmations = ConfirmationMail(
        services.renderer(),
        services.tokens(),
        services.sender,
        base_url=s.base_url,
        envelope_sender=sender_address(s.require_sender()),
        message_domain=services.sender_domain(),
        expires_days=s.confirm_max_age.days,
    )
    limits = (
        RateLimiter(s.signup_limit_per_address, SIGNUP_WINDOW, clock),
        RateLimiter(s.signup_limit_per_client, SIGNUP_WINDOW, clock),
    )
    welcome = WelcomeMail(
        services.renderer(),
        services.tokens(),
        services.sender,
        base_url=s.base_url,
        envelope_sender=sender_address(s.require_sender()),
        message_domain=services.sender_domain(),
        schedule=s.schedule,
        one_click=s.one_click,
    )
    readers = Readers(
        services.store,
        services.ledger,
        services.tokens(),
        s.schedule,
        s.max_lateness,
        clock,
        services.web_version,
    )
    return ReaderPages(
        readers, pages, confirmations, limits, welcome if s.welcome else None
    ).routes()


def create_app(
    services: Services,
    health: Health,
    clock: Clock,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    fetch: Fetcher = fetch_https,
) -> Starlette:
    """The reader's pages, the providers' webhooks and the operator's endpoints, with extra_routes
    (the demo's) beside them."""
    pages = _pages(services)

    def take(notices: Sequence[Notice]) -> None:
        services.take_notices(notices, clock())

    webhooks = Webhooks(services.settings, take, clock, fetch).routes()
    routes = [*_reader_routes(services, clock, pages), *webhooks, *extra_routes]

    # Plain functions: Starlette runs them in its thread pool, so a slow database cannot stall
    # the event loop that also drives the scheduler and the SMTP connections.
    def healthz(request: Request) -> JSONResponse:
        database = health.database_ok()
        body = {
            "database": "ok" if database else "unreachable",
            "scheduler": health.scheduler_state(),
        }
        return JSONResponse(body, status_code=200 if database else 503)

    def metrics(request: Request) -> Response:
        return Response(health.metrics(), media_type=METRICS_CONTENT_TYPE)

    def bad_link(request: Request, exc: Exception) -> Response:
        return pages.expired_link() if isinstance(exc, ExpiredToken) else pages.invalid_link()

    def database_down(request: Request, exc: Exception) -> Response:
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return pages.problem(
            503, "Please try again soon", "The service is busy for a moment. Please try again."
        )

    def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        return pages.problem(status, "Not here", "There is no page at this address.")

    def bug(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        response = pages.problem(
            500, "Something went wrong", "Something went wrong on our side. Please try again."
        )
        response.headers.update(SECURITY_HEADERS)  # this one is answered outside the middleware
        return response

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            Mount(
                "/static",
                StaticFiles(directory=pages.templates_dir / "static"),
                name="static",
            ),
            *routes,
        ],
        middleware=[Middleware(_SecurityHeaders)],
        exception_handlers={
            InvalidToken: bad_link,
            DatabaseError: database_down,
            404: not_found,
            405: not_found,
            Exception: bug,
        },
        lifespan=lifespan,
    )
