"""The reader's pages: sign up, confirm, unsubscribe (RFC 8058 one-click too), preferences, and the
web version of each digest sent.

Each route reads the request, makes one call on Readers and picks a page. GET and HEAD never change
anything (mail scanners open every link); every change is a POST. Bad links of any kind end in the
one "not valid" page, raised as InvalidToken and turned into a page by the app's error handlers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from digest.addresses import (
    address_key,
    check_timezone,
    mask_address,
    normalise_address,
    parse_frequency,
    parse_send_time,
    parse_topics,
    parse_weekday,
)
from digest.domain import (
    PAUSES,
    WEEKDAYS,
    Frequency,
    NextDigest,
    SentDigest,
    Site,
    Subscriber,
    SubscriberDraft,
    SubscriberStatus,
    edition,
    is_paused,
)
from digest.errors import AddressProblem, InvalidAddress, InvalidInput
from digest.ratelimit import RateLimiter
from digest.readers import OFFERED_TOPICS, ConfirmationMail, Readers, WelcomeMail
from digest.store import SIGNED_UP
from digest.timezones import COMMON, LABELS, label
from digest.tokens import Purpose

FREQUENCIES = tuple(f.value for f in Frequency)
# The pauses the pages offer: the buttons' (value, words), and each value's (months, weeks).
PAUSE_CHOICES = tuple((value, words) for value, words, _, _ in PAUSES)
PAUSE_LENGTHS = {value: (months, weeks) for value, _, months, weeks in PAUSES}
URLENCODED = "application/x-www-form-urlencoded"
HOURS = tuple(f"{hour:02d}:00" for hour in range(24))  # the send times the page offers
HOUR = timedelta(hours=1)
MAX_FORM_FIELDS = 10 + 2 * OFFERED_TOPICS  # the fields, and a reader's topics (theirs may be more)
STOPPED = {
    SubscriberStatus.UNSUBSCRIBED: "This address is unsubscribed and gets no digests.",
    SubscriberStatus.BOUNCED: "This address gets no digests: mail to it kept bouncing.",
    SubscriberStatus.COMPLAINED: "This address gets no digests: a digest to it was reported as spam.",
}
# What the sign-up form says to a reader; the CLI says what the validator found, precisely.
ADDRESS_PROBLEMS = {
    AddressProblem.INCOMPLETE: (
        "That address looks incomplete — it needs an @ and a domain, like name@example.org."
    ),
    AddressProblem.SPACE: "That address has a space in it. Email addresses have none.",
    AddressProblem.CHARACTER: "That address has a character we can't send to.",
    AddressProblem.TOO_LONG: "That address is longer than an email address can be.",
    AddressProblem.OTHER: "That address doesn't look quite right. Please check it for typos.",
}
# A digest's web version is the mail's own HTML: its styles are inline (the only kind mail clients
# keep), its pictures come from the publisher's site, and it runs no script and posts no form.
WEB_VERSION_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; "
        "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Robots-Tag": "noindex",  # a reader's own mail: no search engine is to keep it
}
HEAD = re.compile(r"<head\b[^>]*>", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One digest on the preferences page's list of the last ones sent."""

    edition: str
    date: str
    articles: str
    path: str


@dataclass(frozen=True, slots=True)
class PageSettings:
    site: Site
    allowed_origins: frozenset[str]
    default_frequency: Frequency
    default_timezone: str
    send_time: str
    weekly_day: str  # the site's weekly digest's day: "Monday"
    confirm_days: int
    dispatch_interval: timedelta  # how soon a digest that is due now goes out


class Pages:
    """Renders templates/pages/*.html.j2 into responses; autoescaped, strict about missing names."""

    def __init__(self, templates_dir: Path, settings: PageSettings) -> None:
        self._env = Environment(
            loader=FileSystemLoader(templates_dir / "pages"),
            autoescape=select_autoescape(enabled_extensions=("html", "html.j2")),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates_dir = templates_dir
        self.settings = settings

    def render(
        self,
        name: str,
        title: str,
        status: int = 200,
        *,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
        **context: Any,
    ) -> HTMLResponse:
        html = self._env.get_template(f"{name}.html.j2").render(
            site=self.settings.site, title=title, **context
        )
        return HTMLResponse(html, status, headers=headers, background=background)

    def problem(self, status: int, title: str, message: str, **headers: str) -> HTMLResponse:
        return self.render("problem", title, status, headers=headers, message=message)

    def invalid_link(self) -> HTMLResponse:
        return self.render("invalid_link", "This link is not valid", 400)

    def expired_link(self) -> HTMLResponse:
        return self.render(
            "expired_link",
            "This link has expired",
            400,
            expires_days=self.settings.confirm_days,
        )

    def choices(
        self, frequency: Frequency, timezone: str, *, guess_timezone: bool
    ) -> dict[str, Any]:
        """What the frequency and timezone fields need."""
        return {
            "frequencies": FREQUENCIES,
            "chosen_frequency": frequency.value,
            "timezones": COMMON,
            # A zone off the short list (chosen before, or the site's default) stays on offer.
            "other_timezone": "" if timezone in LABELS else timezone,
            "other_timezone_label": label(timezone),
            "chosen_timezone": timezone,
            "guess_timezone": guess_timezone,
            "send_time": self.settings.send_time,
        }


class ReaderPages:
    """The routes of DESIGN §2; limits are the (per address, per client) sign-up limiters."""

    def __init__(
        self,
        readers: Readers,
        pages: Pages,
        confirmations: ConfirmationMail,
        limits: tuple[RateLimiter, RateLimiter],
        welcome: WelcomeMail | None,
    ) -> None:
        """welcome is None when the welcome mail is turned off (DIGEST_WELCOME)."""
        self._readers = readers
        self._pages = pages
        self._settings = pages.settings
        self._confirmations = confirmations
        self._per_address, self._per_client = limits
        self._welcome = welcome

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/subscribe", self.subscribe_page, methods=["GET"]),
            Route("/subscribe", self.subscribe, methods=["POST"]),
            Route("/confirm/{token}", self.confirm_page, methods=["GET"]),
            Route("/confirm/{token}", self.confirm, methods=["POST"]),
            Route("/unsubscribe/{token}", self.unsubscribe_page, methods=["GET"]),
            Route("/unsubscribe/{token}", self.unsubscribe, methods=["POST"]),
            Route("/preferences/{token}", self.preferences_page, methods=["GET"]),
            Route("/preferences/{token}", self.preferences, methods=["POST"]),
            Route("/digests/{token}", self.web_version, methods=["GET"]),
        ]

    def _same_site(self, request: Request) -> bool:
        # Browsers send Origin on every cross-origin POST; without one, Sec-Fetch-Site tells.
        # Our pages' Referrer-Policy: no-referrer makes a browser send "Origin: null" even on
        # our own forms; Sec-Fetch-Site, which no script can set, then says they are ours.
        origin = request.headers.get("origin")
        fetch_site = request.headers.get("sec-fetch-site")
        if origin == "null":
            return fetch_site == "same-origin"
        if origin is not None:
            return origin.lower() in self._settings.allowed_origins
        return fetch_site != "cross-site"

    def _forbidden(self) -> Response:
        return self._pages.problem(
            403, "Not allowed", "This form can only be sent from the site's own pages."
        )

    def _too_many(self, wait: timedelta) -> Response:
        seconds = max(1, math.ceil(wait.total_seconds()))
        minutes = math.ceil(seconds / 60)
        return self._pages.problem(
            429,
            "Too many requests",
            f"Too many sign-ups at once. Please try again in {minutes} minute"
            f"{'' if minutes == 1 else 's'}.",
            **{"Retry-After": str(seconds)},
        )

    async def _subscribe_form(
        self,
        email: str = "",
        error: str = "",
        frequency: Frequency | None = None,
        timezone: str = "",
        topics: frozenset[str] | None = None,
    ) -> Response:
        offered = await run_in_threadpool(self._readers.topics)
        return self._pages.render(
            "subscribe",
            "Get the digest",
            400 if error else 200,
            email=email,
            error=error,
            **self._pages.choices(
                frequency or self._settings.default_frequency,
                timezone or self._settings.default_timezone,
                guess_timezone=not timezone,
            ),
            **_topic_choices(offered, topics),
        )

    async def subscribe_page(self, request: Request) -> Response:
        return await self._subscribe_form()

    async def subscribe(self, request: Request) -> Response:
        if not self._same_site(request):
            return self._forbidden()
        form = await _form(request)
        email, frequency, timezone = (
            _field(form, name) for name in ("email", "frequency", "timezone")
        )
        try:
            topics = _ticked_topics(form)
        except InvalidInput as exc:
            return await self._subscribe_form(email, _sentence(str(exc)))
        try:
            draft = SubscriberDraft(
                normalise_address(email),
                parse_frequency(frequency or self._settings.default_frequency),
                check_timezone(timezone or self._settings.default_timezone),
                topics=topics,
            )
        except InvalidInput as exc:
            error = (
                ADDRESS_PROBLEMS[exc.problem]
                if isinstance(exc, InvalidAddress)
                else _sentence(str(exc))
            )
            # The form again as the reader filled it in, but for a choice that was not valid.
            return await self._subscribe_form(
                email, error, *_still_valid(frequency, timezone), topics
            )
        client = request.client.host if request.client else "unknown"
        # Keyed without regard to case, as readers are: READER@ and reader@ share one inbox.
        wait = self._per_client.hit(client) or self._per_address.hit(address_key(draft.email))
        if wait is not None:
            return self._too_many(wait)
        return await self._sign_up(draft)

    async def _sign_up(self, draft: SubscriberDraft) -> Response:
        signup = await run_in_threadpool(self._readers.sign_up, draft)
        # Mailed after the answer is sent: the answer, and its timing, are the same for every address.
        task = (
            BackgroundTask(self._confirmations.send, signup, draft, self._readers.now())
            if signup.confirm
            else None
        )
        return self._pages.render(
            "check_inbox",
            "Check your inbox",
            background=task,
            expires_days=self._settings.confirm_days,
        )

    async def confirm_page(self, request: Request) -> Response:
        reader = await run_in_threadpool(self._readers.reader, Purpose.CONFIRM, _token(request))
        if reader.status is SubscriberStatus.ACTIVE:
            return await self._confirmed(reader)
        return self._pages.render(
            "confirm",
            "Confirm your subscription",
            frequency=reader.frequency.value,
            masked_email=mask_address(reader.email),
        )

    async def confirm(self, request: Request) -> Response:
        form = await _form(request)
        if _field(form, "action") == "resend":
            return await self._resend(_token(request))
        activation = await run_in_threadpool(self._readers.confirm, _token(request))
        return await self._confirmed(activation.reader, welcome=activation.first)

    async def _resend(self, token: str) -> Response:
        reader = await run_in_threadpool(
            self._readers.reader, Purpose.CONFIRM, token, expired_ok=True
        )
        if reader.status is SubscriberStatus.ACTIVE:
            return await self._confirmed(reader)
        wait = self._per_address.hit(address_key(reader.email))
        if wait is not None:
            return self._too_many(wait)
        return await self._sign_up(
            SubscriberDraft(reader.email, reader.frequency, reader.timezone, topics=reader.topics)
        )

    async def _confirmed(self, reader: Subscriber, *, welcome: bool = False) -> Response:
        """welcome: this click made the reader active, so the welcome mail follows (once)."""
        first_digest = await self._arrival(reader)
        task = None
        if welcome and self._welcome is not None:
            names = await run_in_threadpool(self._readers.topics)
            task = BackgroundTask(
                self._welcome.send, reader, first_digest, names, self._readers.now()
            )
        return self._pages.render(
            "confirmed",
            "You're subscribed",
            background=task,
            frequency=reader.frequency.value,
            first_digest=first_digest,
            preferences_path=self._readers.link(Purpose.PREFERENCES, reader),
        )

    async def _arrival(self, reader: Subscriber) -> str:
        """When the reader's next digest comes: the end of "Your next digest ...", as status says."""
        upcoming: NextDigest | None = await run_in_threadpool(self._readers.next_digest, reader)
        if upcoming is None:
            return "starts once you confirm your address: use the link in the mail we sent you"
        if upcoming.due_now:
            return f"is due now: it goes out {_within(self._settings.dispatch_interval)}"
        return f"arrives {_day_and_time(upcoming.slot.at.astimezone(ZoneInfo(reader.timezone)))}"

    async def unsubscribe_page(self, request: Request) -> Response:
        reader = await run_in_threadpool(self._readers.reader, Purpose.UNSUBSCRIBE, _token(request))
        order = list(Frequency)
        return self._pages.render(
            "unsubscribe",
            "Unsubscribe",
            unsubscribed=reader.status is not SubscriberStatus.ACTIVE,
            masked_email=mask_address(reader.email),
            frequency=reader.frequency.value,
            less_often=[f.value for f in order[order.index(reader.frequency) + 1 :]],
            preferences_path=self._readers.link(Purpose.PREFERENCES, reader),
            pauses=PAUSE_CHOICES,
        )

    async def unsubscribe(self, request: Request) -> Response:
        # The RFC 8058 one-click target: no cookies, no CSRF token, no Origin check, never a
        # redirect; the body (List-Unsubscribe=One-Click) is not needed to know what to do. Only
        # the page's own pause form (urlencoded, with a `pause` field) does something else: a
        # multipart or odd body is never parsed, so it unsubscribes as it always did.
        token = _token(request)
        if request.headers.get("content-type", "").startswith(URLENCODED):
            choice = _field(await _form(request), "pause")
            if choice:
                return await self._pause(request, Purpose.UNSUBSCRIBE, token, choice)
        reader = await run_in_threadpool(self._readers.unsubscribe, Purpose.UNSUBSCRIBE, token)
        return self._unsubscribed(reader)

    async def _pause(self, request: Request, purpose: Purpose, token: str, choice: str) -> Response:
        """One of the pauses the pages offer, from the unsubscribe or the preferences page."""
        if not self._same_site(request):
            return self._forbidden()
        length = PAUSE_LENGTHS.get(choice)
        if length is None:
            return self._pages.problem(
                400, "Not a pause we offer", "Please choose one of the pauses the page offers."
            )
        months, weeks = length
        reader = await run_in_threadpool(
            partial(self._readers.pause, purpose, token, months=months, weeks=weeks)
        )
        if reader.status is not SubscriberStatus.ACTIVE:  # left, or not confirmed: no pause
            if purpose is Purpose.PREFERENCES:
                return await self._preferences_form(reader)
            return self._unsubscribed(reader)
        paused = (
            f"Your digests pause until {_until(reader)}; then one digest brings what you missed."
        )
        if purpose is Purpose.PREFERENCES:
            return await self._preferences_form(reader, saved=paused)
        return self._pages.render(
            "paused",
            "Your digests are paused",
            paused=paused,
            preferences_path=self._readers.link(Purpose.PREFERENCES, reader),
        )

    def _unsubscribed(self, reader: Subscriber) -> Response:
        return self._pages.render(
            "unsubscribed", "You're unsubscribed", masked_email=mask_address(reader.email)
        )

    async def _preferences_form(
        self,
        reader: Subscriber,
        *,
        saved: str = "",
        error: str = "",
        offered: Mapping[str, str] | None = None,
    ) -> Response:
        """offered: the topics on offer, where the caller has read them already."""
        stopped = STOPPED.get(reader.status, "")
        paused = is_paused(reader.paused_until, self._readers.now())
        site = self._pages.settings
        own_time = "" if reader.send_time is None else f"{reader.send_time:%H:%M}"
        if offered is None:
            offered = await run_in_threadpool(self._readers.topics)
        return self._pages.render(
            "preferences",
            "Your digest",
            400 if error else 200,
            masked_email=mask_address(reader.email),
            stopped=stopped,
            paused_until=_until(reader) if paused else "",
            can_pause=reader.status is SubscriberStatus.ACTIVE,
            pauses=PAUSE_CHOICES,
            next_digest="" if stopped else await self._arrival(reader),
            saved=saved,
            error=error,
            history=[
                _history_row(sent, path, ZoneInfo(reader.timezone))
                for sent, path in await run_in_threadpool(self._readers.history, reader)
            ],
            **self._pages.choices(reader.frequency, reader.timezone, guess_timezone=False)
            | {
                "send_time": own_time or site.send_time,  # the hint: when theirs arrive
                "site_send_time": site.send_time,
                # A time set off the whole hours (digest subscribers add) stays on offer.
                "send_times": HOURS if own_time in ("", *HOURS) else (own_time, *HOURS),
                "chosen_send_time": own_time,
                "weekly": reader.frequency is Frequency.WEEKLY,
                "site_weekday": site.weekly_day,
                "weekdays": WEEKDAYS,
                "chosen_weekday": ""
                if reader.send_weekday is None
                else WEEKDAYS[reader.send_weekday],
            }
            | _topic_choices(offered, reader.topics),
        )

    async def preferences_page(self, request: Request) -> Response:
        token = _token(request)
        return await self._preferences_form(
            await run_in_threadpool(self._readers.reader, Purpose.PREFERENCES, token)
        )

    async def preferences(self, request: Request) -> Response:
        token = _token(request)
        reader = await run_in_threadpool(self._readers.reader, Purpose.PREFERENCES, token)
        if not self._same_site(request):
            return self._forbidden()
        if reader.status not in SIGNED_UP:
            return await self._preferences_form(reader)  # an old page's form: nothing to save
        form = await _form(request)
        if (acted := await self._act(request, token, form)) is not None:
            return acted
        try:
            frequency = parse_frequency(_field(form, "frequency") or reader.frequency)
            timezone = check_timezone(_field(form, "timezone") or reader.timezone)
            # A form without the field (an older page's) keeps the reader's; "" is the site's.
            send_time = (
                parse_send_time(_field(form, "send_time"))
                if "send_time" in form
                else reader.send_time
            )
            weekday = (
                parse_weekday(_field(form, "weekday")) if "weekday" in form else reader.send_weekday
            )
            topics = _ticked_topics(form) if "topics" in form else reader.topics
        except InvalidInput as exc:
            return await self._preferences_form(reader, error=_sentence(str(exc)))
        changed = await run_in_threadpool(
            self._readers.set_preferences, token, frequency, timezone, send_time, weekday, topics
        )
        if changed.status not in SIGNED_UP:  # unsubscribed meanwhile: nothing was saved
            return await self._preferences_form(changed)
        offered = await run_in_threadpool(self._readers.topics)
        return await self._preferences_form(
            changed, saved=f"Saved. {self._readers.when(changed, offered)}.", offered=offered
        )

    async def _act(self, request: Request, token: str, form: FormData) -> Response | None:
        """The preferences page's buttons other than Save: unsubscribe, a pause, resume."""
        if _field(form, "action") == "unsubscribe":
            return self._unsubscribed(
                await run_in_threadpool(self._readers.unsubscribe, Purpose.PREFERENCES, token)
            )
        if choice := _field(form, "pause"):
            return await self._pause(request, Purpose.PREFERENCES, token, choice)
        if _field(form, "action") == "resume":
            resumed = await run_in_threadpool(self._readers.resume, token)
            return await self._preferences_form(resumed, saved="Your digests are back on.")
        return None

    async def web_version(self, request: Request) -> Response:
        """The digest as it was mailed; GET only, and it changes nothing."""
        html = await run_in_threadpool(self._readers.web_version, _token(request))
        meta = '<meta name="robots" content="noindex">'
        page = HEAD.sub(lambda head: head[0] + meta, html, count=1)
        return HTMLResponse(page, headers=WEB_VERSION_HEADERS)


def _history_row(sent: SentDigest, path: str, zone: ZoneInfo) -> HistoryRow:
    day = sent.sent_at.astimezone(zone)
    # The edition in the words its mail's subject used.
    named = f"{sent.frequency.value.capitalize()} · {edition(sent.frequency, sent.period_key)}"
    articles = f"{sent.articles} article{'' if sent.articles == 1 else 's'}"
    return HistoryRow(named, f"{day:%A} {day.day} {day:%B %Y}", articles, path)


def _token(request: Request) -> str:
    token: str = request.path_params["token"]
    return token


async def _form(request: Request) -> FormData:
    return await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _ticked_topics(form: FormData) -> frozenset[str] | None:
    """The topics ticked, as topic keys; none is every topic (None). A value that is no topic (a
    form made by hand) is InvalidInput; one no article has now is kept, as the CLI keeps it."""
    ticked = [value for value in form.getlist("topics") if isinstance(value, str)]
    return parse_topics(",".join(value for value in ticked if value.strip()))


def _topic_choices(offered: Mapping[str, str], chosen: frozenset[str] | None) -> dict[str, Any]:
    """What the topics field needs: the topics offered (key, name) and any the reader chose that
    no new article has, sorted by name, and the ones ticked (none for every topic)."""
    theirs = {key: key.capitalize() for key in chosen or () if key not in offered}
    listed = sorted({**offered, **theirs}.items(), key=lambda topic: topic[1].casefold())
    return {"topics": listed, "chosen_topics": chosen or frozenset()}


def _still_valid(frequency: str, timezone: str) -> tuple[Frequency | None, str]:
    """The choices posted, each if valid, to fill the form in again; "" or None asks afresh."""
    try:
        chosen_frequency: Frequency | None = parse_frequency(frequency)
    except InvalidInput:
        chosen_frequency = None
    try:
        return chosen_frequency, check_timezone(timezone)
    except InvalidInput:
        return chosen_frequency, ""


def _until(reader: Subscriber) -> str:
    """The end of a reader's pause in their words: "Wednesday 9 December" (their midnight that
    starts it, as the pages set it), with the time for another instant (support staff's)."""
    if reader.paused_until is None:
        return ""
    end = reader.paused_until.astimezone(ZoneInfo(reader.timezone))
    day = f"{end:%A} {end.day} {end:%B}"
    return day if end.time() == time(0, 0) else f"{day} at {end:%H:%M}"


def _day_and_time(at: datetime) -> str:
    """Monday 30 November at 08:00, in the reader's own timezone."""
    return f"{at:%A} {at.day} {at:%B} at {at:%H:%M}"


def _within(interval: timedelta) -> str:
    """How soon the next dispatch run comes: "within a minute", "within 5 minutes"."""
    minutes = math.ceil(interval.total_seconds() / 60)
    return "within a minute" if minutes <= 1 else f"within {minutes} minutes"


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")
