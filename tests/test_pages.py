"""The reader's pages, in process and over real HTTP, on SQLite and PostgreSQL.

Sign-up mails go to a real SMTP server; the clock is injected, so "your first digest arrives"
and expiring links are exact.
"""

from __future__ import annotations

import email
import email.policy
import html
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from datetime import time as time_of_day
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from db_fixtures import snapshot
from smtp_server import Received, SmtpServer
from sqlalchemy import Engine, event, update
from web_client import in_process_client, served

from digest import database
from digest.app import Services
from digest.config import PROJECT_TEMPLATES, load
from digest.daemon import asgi_app
from digest.demo.catcher import free_port
from digest.domain import ArticleDraft, Frequency, Subscriber, SubscriberDraft, SubscriberStatus
from digest.ledger import PlanRules
from digest.models import SubscriberRow
from digest.store import Store
from digest.tokens import Purpose
from digest.webhooks import Fetcher, fetch_https

TUESDAY_NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
MONDAY_NOON = TUESDAY_NOON - timedelta(days=1)  # when the first article arrives
WEDNESDAY_5PM = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)
SECRET = "p" * 40
PATIENCE = 20.0


class Clock:
    def __init__(self) -> None:
        self.now = TUESDAY_NOON

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Web:
    """One running app and what a test needs around it."""

    client: httpx.Client
    services: Services
    clock: Clock
    smtp: SmtpServer
    base_url: str
    seen_mails: int = field(default=0)

    @property
    def store(self) -> Store:
        return self.services.store

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path)

    def post(
        self, path: str, data: Mapping[str, str | list[str]] | None = None, **headers: str
    ) -> httpx.Response:
        headers = {"Origin": self.base_url} | headers
        return self.client.post(path, data=data, headers=headers)

    def next_mail(self) -> EmailMessage:
        """The next message the SMTP server receives (background sends finish after the answer)."""
        deadline = time.monotonic() + PATIENCE
        while len(self.smtp.messages) <= self.seen_mails:
            if time.monotonic() > deadline:
                raise AssertionError("no mail arrived")
            time.sleep(0.02)
        received: Received = self.smtp.messages[self.seen_mails]
        self.seen_mails += 1
        message = email.message_from_bytes(received.data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return message

    def link(self, purpose: Purpose, reader: Subscriber) -> str:
        tokens = self.services.tokens()
        if purpose is Purpose.CONFIRM:
            token = tokens.confirm_token(
                reader.id, reader.token_version, reader.email, self.clock()
            )
        else:
            token = tokens.link_token(purpose, reader.id, reader.token_version)
        return f"/{purpose.value}/{token}"

    def reader(self, address: str) -> Subscriber:
        return self.store.find_subscriber(address)


def _settings_env(smtp: SmtpServer, base_url: str, **extra: str) -> dict[str, str]:
    return {
        "DIGEST_SECRET_KEY": SECRET,
        "DIGEST_SENDER": "Mia's Feed <digest@miasfeed.example>",
        "DIGEST_SITE_URL": "https://miasfeed.example",
        "DIGEST_BASE_URL": base_url,
        "DIGEST_SMTP_HOST": smtp.host,
        "DIGEST_SMTP_PORT": str(smtp.port),
        "DIGEST_ALLOWED_ORIGINS": "https://miasfeed.example",
        "DIGEST_SIGNUP_LIMIT_PER_ADDRESS": "3",
        "DIGEST_SIGNUP_LIMIT_PER_CLIENT": "6",
    } | extra


@pytest.fixture(params=["in-process", "http"])
def web(request: pytest.FixtureRequest, store: Store, smtp_server: SmtpServer) -> Iterator[Web]:
    yield from _web(request.param, store, smtp_server, {})


def _web(
    mode: str,
    store: Store,
    smtp: SmtpServer,
    extra: dict[str, str],
    fetch: Fetcher = fetch_https,
) -> Iterator[Web]:
    clock = Clock()
    store.upsert_articles([_article(1)], MONDAY_NOON)
    if mode == "in-process":
        base_url = "http://testserver"
        services = Services(load(None, _settings_env(smtp, base_url, **extra)), store)
        with in_process_client(asgi_app(services, clock, fetch=fetch)) as client:
            yield Web(client, services, clock, smtp, base_url)
        return
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    services = Services(load(None, _settings_env(smtp, base_url, **extra)), store)
    with (
        served(asgi_app(services, clock, fetch=fetch), port),
        httpx.Client(base_url=base_url, follow_redirects=False) as client,
    ):
        yield Web(client, services, clock, smtp, base_url)


def _article(n: int) -> ArticleDraft:
    return ArticleDraft(
        url=f"https://miasfeed.example/articles/{n}",
        title=f"Article {n}",
        summary="A study.",
        category="Research",
        reading_minutes=2,
        published_at=TUESDAY_NOON - timedelta(days=1),
    )


def _active(
    web: Web,
    address: str,
    frequency: Frequency = Frequency.DAILY,
    *,
    confirmed: datetime = TUESDAY_NOON - timedelta(days=30),
) -> Subscriber:
    """A reader in Madrid; confirmed before Monday noon, when the first article came, they have news."""
    draft = SubscriberDraft(address, frequency, "Europe/Madrid")
    web.store.add_subscriber(draft, confirmed=True, now=confirmed)
    return web.reader(address)


def _pending(web: Web, address: str) -> Subscriber:
    """A daily reader in Madrid who signed up on Monday and has not confirmed."""
    draft = SubscriberDraft(address, Frequency.DAILY, "Europe/Madrid")
    web.store.add_subscriber(draft, confirmed=False, now=TUESDAY_NOON - timedelta(days=1))
    return web.reader(address)


def _confirm_path(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    found = re.search(r"https?://\S+(/confirm/\S+)", body.get_content())
    assert found is not None
    return found.group(1)


def _visible_text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.actions: list[str] = []
        self.assets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "form" and found.get("action"):
            self.actions.append(found["action"] or "")
        if tag in ("link", "script", "img", "iframe") and (found.get("src") or found.get("href")):
            self.assets.append(found.get("src") or found.get("href") or "")


def _parse(html: str) -> _Forms:
    forms = _Forms()
    forms.feed(html)
    return forms


# -- sign up and confirm ---------------------------------------------------------------------


def test_sign_up_mails_a_confirmation_and_confirming_activates_with_the_first_digest_date(
    web: Web,
) -> None:
    page = web.get("/subscribe")
    assert page.status_code == 200
    assert "How often would you like updates?" in page.text
    assert 'name="timezone"' in page.text  # works without scripts: a select
    answer = web.post(
        "/subscribe",
        {"email": "Reader@Example.ORG", "frequency": "weekly", "timezone": "Europe/Madrid"},
    )
    assert answer.status_code == 200
    assert "Check your inbox" in answer.text
    reader = web.reader("Reader@example.org")
    assert (reader.status, reader.frequency, reader.timezone) == (
        SubscriberStatus.PENDING,
        Frequency.WEEKLY,
        "Europe/Madrid",
    )

    mail = web.next_mail()
    assert mail["To"] == "Reader@example.org"
    assert mail["List-Unsubscribe"] is None
    assert mail["List-Unsubscribe-Post"] is None
    assert {part.get_content_type() for part in mail.walk()} >= {"text/plain", "text/html"}
    confirm = _confirm_path(mail)

    shown = web.get(confirm)
    assert shown.status_code == 200
    assert "R***@example.org" in shown.text
    assert (
        web.reader("Reader@example.org").status is SubscriberStatus.PENDING
    )  # GET changes nothing

    done = web.post(confirm)
    assert done.status_code == 200
    assert "Your first weekly digest arrives Monday 30 November at 08:00." in _visible_text(
        done.text
    )
    active = web.reader("Reader@example.org")
    assert active.status is SubscriberStatus.ACTIVE
    assert active.cursor == web.store.newest_seq(web.clock())  # new from now on, nothing older
    assert web.post(confirm).status_code == 200  # a second click is harmless


def test_the_sign_up_answer_is_the_same_for_new_pending_and_active_addresses(web: Web) -> None:
    _active(web, "known@example.org")
    form = {"frequency": "daily", "timezone": "UTC"}
    new = web.post("/subscribe", form | {"email": "new@example.org"})
    pending = web.post("/subscribe", form | {"email": "new@example.org"})
    active = web.post("/subscribe", form | {"email": "known@example.org"})
    assert new.status_code == pending.status_code == active.status_code == 200
    assert new.text == pending.text == active.text
    # A later sign-up's mail marks the end: a wrong mail to the active reader would come before it.
    web.post("/subscribe", form | {"email": "marker@example.org"})
    recipients = [web.next_mail()["To"] for _ in range(3)]
    assert recipients == ["new@example.org", "new@example.org", "marker@example.org"]
    assert len(web.smtp.messages) == 3  # the active reader was not mailed again
    assert web.reader("known@example.org").status is SubscriberStatus.ACTIVE


def test_a_sign_up_in_another_case_adds_nobody_and_mails_the_reader_as_first_typed(
    web: Web,
) -> None:
    _active(web, "Known@example.org")
    form = {"frequency": "daily", "timezone": "UTC"}
    first = web.post("/subscribe", form | {"email": "Mia@example.org"})
    again = web.post("/subscribe", form | {"email": "MIA@EXAMPLE.ORG"})
    known = web.post("/subscribe", form | {"email": "known@example.org"})
    assert first.status_code == again.status_code == known.status_code == 200
    assert first.text == again.text == known.text
    web.post("/subscribe", form | {"email": "marker@example.org"})
    mails = [web.next_mail() for _ in range(3)]
    assert [m["To"] for m in mails] == ["Mia@example.org", "Mia@example.org", "marker@example.org"]
    assert len(web.smtp.messages) == 3  # the active reader was not mailed, in any case
    assert web.post(_confirm_path(mails[1])).status_code == 200
    assert web.reader("mia@example.org").status is SubscriberStatus.ACTIVE
    emails = sorted(s.email for s in web.store.subscribers())
    assert emails == ["Known@example.org", "Mia@example.org", "marker@example.org"]


def test_a_bad_address_gets_the_form_again_with_the_problem_and_nothing_stored(web: Web) -> None:
    before = snapshot(web.store.engine)
    answer = web.post(
        "/subscribe", {"email": "not an address", "frequency": "monthly", "timezone": "Asia/Tokyo"}
    )
    assert answer.status_code == 400
    assert "That address looks incomplete" in answer.text
    assert 'value="not an address"' in answer.text
    # What the reader chose stays chosen.
    assert re.search(r'value="monthly"[^>]*checked', answer.text)
    assert re.search(r'value="Asia/Tokyo"[^>]*selected', answer.text)
    bad_zone = web.post("/subscribe", {"email": "a@example.org", "timezone": "Mars/Base"})
    assert bad_zone.status_code == 400
    assert "Mars/Base" in bad_zone.text
    assert snapshot(web.store.engine) == before


@pytest.mark.parametrize(
    ("typed", "said"),
    [
        ("reader.example.org", "That address looks incomplete — it needs an @ and a domain"),
        ("reader@", "That address looks incomplete — it needs an @ and a domain"),
        ("reader@example", "That address looks incomplete — it needs an @ and a domain"),
        ("read er@example.org", "That address has a space in it."),
        ("reader@exa mple.org", "That address has a space in it."),
        ("reader,@example.org", "That address has a character we can't send to."),
        ("reader@example..org", "That address doesn't look quite right."),
        (f"{'r' * 250}@example.org", "That address is longer than an email address can be."),
    ],
)
def test_a_mistyped_address_is_told_in_a_readers_words_not_the_validators(
    web: Web, typed: str, said: str
) -> None:
    answer = web.post("/subscribe", {"email": typed, "frequency": "weekly"})
    assert answer.status_code == 400
    error = re.search(r'<p class="error" role="alert" id="error">(.*?)</p>', answer.text)
    assert error is not None
    assert html.unescape(error[1]).startswith(said)
    for validator_speak in ("not a valid email address", "@-sign", "SPACE", "characters"):
        assert validator_speak not in html.unescape(answer.text)


def test_an_expired_confirm_link_says_so_and_sends_a_fresh_one_on_request(web: Web) -> None:
    web.post("/subscribe", {"email": "late@example.org", "frequency": "monthly"})
    old = _confirm_path(web.next_mail())
    web.clock.now = TUESDAY_NOON + timedelta(days=8)
    expired = web.get(old)
    assert expired.status_code == 400
    assert "expired" in expired.text
    assert web.post(old).status_code == 400  # pressing an old confirm button does nothing
    assert web.reader("late@example.org").status is SubscriberStatus.PENDING

    fresh = web.post(old, {"action": "resend"})
    assert fresh.status_code == 200
    assert "Check your inbox" in fresh.text
    assert web.post(_confirm_path(web.next_mail())).status_code == 200
    assert web.reader("late@example.org").status is SubscriberStatus.ACTIVE


# -- unsubscribe and preferences -------------------------------------------------------------


def test_the_unsubscribe_page_shows_the_masked_address_and_changes_nothing_until_posted(
    web: Web,
) -> None:
    reader = _active(web, "daily@example.org")
    link = web.link(Purpose.UNSUBSCRIBE, reader)
    before = snapshot(web.store.engine)
    page = web.get(link)
    assert page.status_code == 200
    assert "d***@example.org" in page.text
    assert "daily@example.org" not in page.text
    assert "Send me a weekly digest instead" in page.text
    assert "Send me a monthly digest instead" in page.text
    assert snapshot(web.store.engine) == before

    done = web.post(link)
    assert done.status_code == 200
    assert web.reader("daily@example.org").status is SubscriberStatus.UNSUBSCRIBED
    again = web.post(link)
    assert again.status_code == 200
    assert again.text == done.text


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements the engine runs meanwhile (queries and changes, not BEGIN or COMMIT)."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        statement = " ".join(str(args[2]).split())
        if statement.split(" ", 1)[0].upper() in ("SELECT", "UPDATE", "INSERT", "DELETE"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _one_change_that_returns_the_reader(statements: list[str]) -> None:
    changes = [s for s in statements if not s.startswith("SELECT")]
    assert len(changes) == 1, changes
    assert changes[0].startswith("UPDATE subscribers") and " RETURNING " in changes[0]
    after = statements[statements.index(changes[0]) + 1 :]
    assert not [s for s in after if "FROM subscribers" in s], after  # nothing read again


def test_a_one_click_unsubscribe_is_one_statement_that_changes_and_returns_the_reader_twice_over(
    web: Web,
) -> None:
    reader = _active(web, "once@example.org")
    link = web.link(Purpose.UNSUBSCRIBE, reader)
    for _click in range(2):
        with _statements(web.store.engine) as statements:
            answer = web.client.post(link, content=b"List-Unsubscribe=One-Click")
        assert answer.status_code == 200
        assert len(statements) == 1, statements
        _one_change_that_returns_the_reader(statements)
    assert web.reader("once@example.org").status is SubscriberStatus.UNSUBSCRIBED


def test_confirming_and_saving_preferences_each_change_the_reader_in_one_statement(
    web: Web,
) -> None:
    pending = _pending(web, "choosy@example.org")
    for _click in range(2):  # confirming again changes nothing and answers the same
        with _statements(web.store.engine) as statements:
            answer = web.post(web.link(Purpose.CONFIRM, pending))
        assert answer.status_code == 200
        _one_change_that_returns_the_reader(statements)
    assert web.reader("choosy@example.org").status is SubscriberStatus.ACTIVE
    with _statements(web.store.engine) as statements:
        saved = web.post(
            web.link(Purpose.PREFERENCES, pending),
            {"frequency": "weekly", "timezone": "Europe/Madrid"},
        )
    assert saved.status_code == 200
    _one_change_that_returns_the_reader(statements)
    assert web.reader("choosy@example.org").frequency is Frequency.WEEKLY


def test_a_confirm_link_for_another_address_under_the_same_id_is_not_valid_and_changes_nothing(
    web: Web,
) -> None:
    # As when a removed reader's id comes round again: the link names the id and version of the
    # reader on file now, but the address of the one it was mailed to.
    pending = _pending(web, "new@example.org")
    token = web.services.tokens().confirm_token(
        pending.id, pending.token_version, "removed@example.org", web.clock()
    )
    answer = web.post(f"/confirm/{token}")
    assert answer.status_code == 400
    assert "This link is not valid" in answer.text
    assert web.reader("new@example.org") == pending  # still pending, nothing moved


def test_an_unsubscribed_readers_old_confirm_link_does_not_bring_them_back(web: Web) -> None:
    reader = _active(web, "gone@example.org")
    confirm = web.link(Purpose.CONFIRM, reader)
    assert web.post(web.link(Purpose.UNSUBSCRIBE, reader)).status_code == 200
    gone = web.reader("gone@example.org")
    answer = web.post(confirm)
    assert answer.status_code == 400
    assert "This link is not valid" in answer.text
    assert web.reader("gone@example.org") == gone


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_the_one_click_post_as_gmail_sends_it_unsubscribes_and_stops_a_planned_digest(
    web: Web, encoding: str
) -> None:
    reader = _active(web, "oneclick@example.org", Frequency.WEEKLY)
    web.store.upsert_articles([_article(2)], TUESDAY_NOON)
    rules = PlanRules(web.services.settings.schedule, None, 100, "miasfeed.example")
    web.services.ledger.plan(
        datetime(2026, 11, 30, 9, 0, tzinfo=UTC), rules
    )  # the digest is planned
    link = web.link(Purpose.UNSUBSCRIBE, reader)
    # Gmail posts from its own servers: no cookies, no Origin of ours, no CSRF token.
    if encoding == "urlencoded":
        answer = web.client.post(
            link,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    else:
        answer = web.client.post(link, files={"List-Unsubscribe": (None, "One-Click")})
    assert answer.status_code == 200  # never a redirect
    assert web.reader("oneclick@example.org").status is SubscriberStatus.UNSUBSCRIBED
    claimed = web.services.ledger.claim(
        "test", datetime(2026, 11, 30, 9, 1, tzinfo=UTC), timedelta(minutes=5), 100
    )
    assert [c.email for c in claimed] == []


def test_less_often_moves_the_reader_to_a_lower_frequency_and_keeps_them(web: Web) -> None:
    reader = _active(web, "busy@example.org")
    page = web.get(web.link(Purpose.UNSUBSCRIBE, reader))
    (target,) = {a for a in _parse(page.text).actions if a.startswith("/preferences/")}
    answer = web.post(target, {"frequency": "monthly"})
    assert answer.status_code == 200
    assert "Saved. Monthly, on the 1st at 08:00" in answer.text
    after = web.reader("busy@example.org")
    assert (after.status, after.frequency) == (SubscriberStatus.ACTIVE, Frequency.MONTHLY)
    assert (after.cursor, after.anchor) == (
        reader.cursor,
        reader.anchor,
    )  # nothing lost or repeated


def test_preferences_change_frequency_and_timezone_and_refuse_a_bad_timezone(web: Web) -> None:
    reader = _active(web, "prefs@example.org", Frequency.WEEKLY, confirmed=MONDAY_NOON)
    link = web.link(Purpose.PREFERENCES, reader)
    page = web.get(link)
    assert page.status_code == 200
    assert "p***@example.org" in page.text
    assert "Your next digest arrives Monday 30 November at 08:00." in _visible_text(page.text)
    saved = web.post(link, {"frequency": "daily", "timezone": "Australia/Sydney"})
    assert saved.status_code == 200
    assert "Saved. Daily, at 08:00, Sydney (Australia Eastern) time: all topics." in saved.text
    assert "Your next digest arrives Wednesday 25 November at 08:00." in saved.text
    after = web.reader("prefs@example.org")
    assert (after.frequency, after.timezone, after.cursor) == (
        Frequency.DAILY,
        "Australia/Sydney",
        reader.cursor,
    )
    refused = web.post(link, {"frequency": "daily", "timezone": "Nowhere/Else"})
    assert refused.status_code == 400
    assert web.reader("prefs@example.org").timezone == "Australia/Sydney"


@pytest.mark.parametrize(
    ("confirmed", "next_digest"),
    [
        # Confirmed before Monday's article: it is news, and the daily slot is due at once.
        (MONDAY_NOON - timedelta(hours=3), "is due now: it goes out within a minute"),
        # Confirmed after it: nothing new, so today's slot is skipped and tomorrow's is next.
        (MONDAY_NOON + timedelta(hours=1), "arrives Thursday 26 November at 08:00"),
    ],
)
def test_switching_weekly_to_daily_on_a_wednesday_tells_when_the_next_digest_really_comes(
    web: Web, confirmed: datetime, next_digest: str
) -> None:
    web.clock.now = WEDNESDAY_5PM
    reader = _active(web, "switch@example.org", Frequency.WEEKLY, confirmed=confirmed)
    link = web.link(Purpose.PREFERENCES, reader)
    saved = _visible_text(web.post(link, {"frequency": "daily"}).text)
    assert "Saved. Daily, at 08:00, Madrid (Spain) time: all topics." in saved
    assert f"Your next digest {next_digest}." in saved
    assert f"Your next digest {next_digest}." in _visible_text(web.get(link).text)


def test_preferences_offer_the_send_hour_and_a_weekly_readers_day_and_say_what_comes_when(
    web: Web,
) -> None:
    reader = _active(web, "sunday@example.org", Frequency.WEEKLY, confirmed=MONDAY_NOON)
    link = web.link(Purpose.PREFERENCES, reader)
    page = web.get(link).text
    hours = select_options(page, "send_time")
    assert hours[0] == ("", True, "Site default (08:00)")
    assert [value for value, _, _ in hours[1:]] == [f"{h:02d}:00" for h in range(24)]
    days = select_options(page, "weekday")
    assert days[0] == ("", True, "Site default (Monday)")
    assert [label for _, _, label in days[1:]][-1] == "Sunday"
    with _statements(web.store.engine) as statements:
        saved = web.post(link, {"frequency": "weekly", "send_time": "07:00", "weekday": "sunday"})
    assert saved.status_code == 200
    _one_change_that_returns_the_reader(statements)
    text = _visible_text(saved.text)
    assert "Saved. Weekly, on Sundays at 07:00, Madrid (Spain) time: all topics." in text
    assert "Your next digest arrives Sunday 29 November at 07:00." in text
    after = web.reader("sunday@example.org")
    assert (after.send_time, after.send_weekday) == (time_of_day(7), 6)
    again = web.get(link).text
    assert ("07:00", True, "07:00") in select_options(again, "send_time")
    assert ("sunday", True, "Sunday") in select_options(again, "weekday")
    # Back to the site's hour; a daily reader is not asked for a day.
    daily = web.post(link, {"frequency": "daily", "send_time": ""})
    assert "Saved. Daily, at 08:00, Madrid (Spain) time: all topics." in _visible_text(daily.text)
    assert 'id="weekday"' not in daily.text
    assert web.reader("sunday@example.org").send_time is None


@pytest.mark.parametrize(
    ("form", "named"),
    [
        ({"send_time": "24:00"}, "Send time: '24:00' is not a time of day"),
        ({"send_time": "7"}, "Send time: '7' is not a time of day"),
        ({"weekday": "9"}, "Weekday: '9' is not a day"),
        ({"send_time": "07:00", "weekday": "<b>funday</b>"}, "Weekday: '<b>funday</b>' is not"),
    ],
)
def test_a_bad_send_hour_or_weekday_gets_a_400_naming_the_field_and_changes_nothing(
    web: Web, form: dict[str, str], named: str
) -> None:
    reader = _active(web, "typo@example.org", Frequency.WEEKLY)
    before = snapshot(web.store.engine)
    answer = web.post(web.link(Purpose.PREFERENCES, reader), {"frequency": "daily", **form})
    assert answer.status_code == 400
    assert named in html.unescape(answer.text)
    assert "<b>" not in answer.text
    assert snapshot(web.store.engine) == before


@pytest.mark.parametrize(
    ("status", "told"),
    [
        (SubscriberStatus.UNSUBSCRIBED, "This address is unsubscribed and gets no digests."),
        (SubscriberStatus.BOUNCED, "This address gets no digests: mail to it kept bouncing."),
    ],
)
def test_an_old_preferences_link_of_a_reader_who_left_says_so_and_saves_nothing(
    web: Web, status: SubscriberStatus, told: str
) -> None:
    reader = _active(web, "left@example.org")
    with web.store.engine.begin() as conn:
        conn.execute(
            update(SubscriberRow).where(SubscriberRow.id == reader.id).values(status=status.value)
        )
    link = web.link(Purpose.PREFERENCES, reader)
    before = snapshot(web.store.engine)
    page = web.get(link)
    assert page.status_code == 200
    assert told in _visible_text(page.text)
    assert 'href="/subscribe"' in page.text
    assert "<form" not in page.text
    for form in ({"frequency": "monthly", "timezone": "UTC"}, {"action": "unsubscribe"}):
        answer = web.post(link, form)
        assert answer.status_code == 200
        assert "Saved" not in answer.text
        assert told in _visible_text(answer.text)
    assert snapshot(web.store.engine) == before


def test_a_pending_reader_may_change_preferences_and_is_told_digests_start_on_confirming(
    web: Web,
) -> None:
    web.post("/subscribe", {"email": "new@example.org", "frequency": "weekly"})
    link = web.link(Purpose.PREFERENCES, web.reader("new@example.org"))
    page = _visible_text(web.get(link).text)
    assert "Your next digest starts once you confirm your address" in page
    saved = _visible_text(web.post(link, {"frequency": "daily"}).text)
    assert "Saved. Daily, at 08:00" in saved
    assert "Your next digest starts once you confirm your address" in saved
    after = web.reader("new@example.org")
    assert (after.status, after.frequency) == (SubscriberStatus.PENDING, Frequency.DAILY)


def timezone_options(page: str) -> list[tuple[str, bool, str]]:
    """The timezone select's options: (value, selected, label)."""
    return select_options(page, "timezone")


def select_options(page: str, select_id: str) -> list[tuple[str, bool, str]]:
    """A select's options: (value, selected, label)."""
    select = re.search(rf'<select id="{select_id}".*?</select>', page, re.DOTALL)
    assert select is not None
    return [
        (value, bool(selected), html.unescape(label))
        for value, selected, label in re.findall(
            r'<option value="([^"]*)"( selected)?>([^<]*)</option>', select[0]
        )
    ]


def test_the_sign_up_page_offers_a_short_list_of_timezones_people_recognise(web: Web) -> None:
    options = timezone_options(web.get("/subscribe").text)
    assert 30 <= len(options) <= 60
    labels = {value: label for value, _, label in options}
    assert labels["Europe/London"] == "London (UK)"
    assert labels["America/New_York"] == "New York (US Eastern)"
    assert [value for value, selected, _ in options if selected] == ["UTC"]  # the site's default
    assert len(set(labels)) == len(options)


def test_a_reader_in_a_zone_off_the_list_keeps_it_on_preferences_and_at_sign_up(web: Web) -> None:
    draft = SubscriberDraft("chatham@example.org", Frequency.WEEKLY, "Pacific/Chatham")
    web.store.add_subscriber(draft, confirmed=True, now=TUESDAY_NOON - timedelta(days=3))
    link = web.link(Purpose.PREFERENCES, web.reader("chatham@example.org"))
    options = timezone_options(web.get(link).text)
    assert [(value, label) for value, selected, label in options if selected] == [
        ("Pacific/Chatham", "Pacific/Chatham")
    ]
    assert 30 <= len(options) <= 61
    saved = web.post(link, {"frequency": "daily", "timezone": "Pacific/Chatham"})
    assert "Saved. Daily, at 08:00, Pacific/Chatham time: all topics." in saved.text
    assert web.reader("chatham@example.org").timezone == "Pacific/Chatham"
    # Any zone the database knows is taken at sign-up too, list or no list.
    web.post(
        "/subscribe", {"email": "cordoba@example.org", "timezone": "America/Argentina/Cordoba"}
    )
    assert web.reader("cordoba@example.org").timezone == "America/Argentina/Cordoba"


def test_preferences_can_unsubscribe(web: Web) -> None:
    reader = _active(web, "leaving@example.org")
    answer = web.post(web.link(Purpose.PREFERENCES, reader), {"action": "unsubscribe"})
    assert answer.status_code == 200
    assert web.reader("leaving@example.org").status is SubscriberStatus.UNSUBSCRIBED


def test_re_subscribing_kills_the_old_unsubscribe_link(web: Web) -> None:
    reader = _active(web, "again@example.org")
    old_link = web.link(Purpose.UNSUBSCRIBE, reader)
    assert web.post(old_link).status_code == 200
    web.post("/subscribe", {"email": "again@example.org", "frequency": "weekly"})
    web.post(_confirm_path(web.next_mail()))
    renewed = web.reader("again@example.org")
    assert renewed.status is SubscriberStatus.ACTIVE
    assert renewed.token_version == reader.token_version + 1
    assert web.post(old_link).status_code == 400
    assert web.reader("again@example.org").status is SubscriberStatus.ACTIVE


# -- bad links, floods and foreign origins ---------------------------------------------------


def test_every_bad_link_gets_the_same_400_page_and_changes_nothing(web: Web) -> None:
    reader = _active(web, "victim@example.org")
    unsubscribe = web.link(Purpose.UNSUBSCRIBE, reader).rsplit("/", 1)[1]
    confirm = web.link(Purpose.CONFIRM, reader).rsplit("/", 1)[1]
    tokens = web.services.tokens()
    bad = {
        "tampered": unsubscribe[:-3] + ("AAA" if not unsubscribe.endswith("AAA") else "BBB"),
        "truncated": unsubscribe[: len(unsubscribe) // 2],
        "stale version": tokens.link_token(Purpose.UNSUBSCRIBE, reader.id, 99),
        "unknown reader": tokens.link_token(Purpose.UNSUBSCRIBE, 424242, 1),
        "garbage": "%00%0d%0a..",
    }
    before = snapshot(web.store.engine)
    reference = web.get(f"/unsubscribe/{bad['garbage']}")
    assert reference.status_code == 400
    assert "This link is not valid" in reference.text
    assert 'href="/subscribe"' in reference.text
    other_purpose = {"unsubscribe": confirm, "preferences": unsubscribe, "confirm": unsubscribe}
    for purpose, foreign in other_purpose.items():
        for name, token in [*bad.items(), ("another purpose's token", foreign)]:
            for method in ("GET", "POST"):
                answer = web.client.request(method, f"/{purpose}/{token}")
                assert (answer.status_code, answer.text) == (400, reference.text), (name, purpose)
    assert snapshot(web.store.engine) == before
    assert "Traceback" not in reference.text


def test_the_invalid_link_page_says_so_once_and_what_to_do_next(web: Web) -> None:
    page = web.get("/preferences/garbage")
    assert page.status_code == 400
    main = re.search(r"<main[^>]*>(.*)</main>", page.text, re.DOTALL)
    assert main is not None
    assert _visible_text(main[1]) == (
        "This link is not valid "
        "It may have been cut short when it was copied, or replaced by a newer one. "
        "Open it straight from the email, or copy all of it. "
        "To unsubscribe or change your digest, use the links at the foot of your latest digest. "
        "To sign up again, go to the sign-up page ."
    )


def test_a_storm_of_gets_and_heads_on_every_token_link_changes_nothing(web: Web) -> None:
    reader = _active(web, "scanned@example.org")
    web.store.add_subscriber(
        SubscriberDraft("pending@example.org", Frequency.WEEKLY, "UTC"),
        confirmed=False,
        now=TUESDAY_NOON,
    )
    links = [
        web.link(Purpose.UNSUBSCRIBE, reader),
        web.link(Purpose.PREFERENCES, reader),
        web.link(Purpose.CONFIRM, web.reader("pending@example.org")),
    ]
    before = snapshot(web.store.engine)
    for _ in range(10):
        for link in links:
            assert web.client.get(link).status_code == 200
            assert web.client.head(link).status_code == 200
    assert snapshot(web.store.engine) == before


def test_sign_up_floods_get_429_with_retry_after(web: Web) -> None:
    form = {"email": "target@example.org", "frequency": "daily"}
    answers = [web.post("/subscribe", form) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert int(answers[-1].headers["Retry-After"]) == 3600
    for _ in range(3):
        web.next_mail()
    # Per client: six tries an hour, whatever the addresses; the refused fourth one counted too.
    others = [web.post("/subscribe", {"email": f"x{n}@example.org"}) for n in range(3)]
    assert [a.status_code for a in others] == [200, 200, 429]
    web.clock.now += timedelta(hours=1)
    assert web.post("/subscribe", {"email": "target@example.org"}).status_code == 200


def test_every_spelling_of_an_address_counts_towards_its_one_sign_up_limit(web: Web) -> None:
    spellings = [
        "target@example.org",
        "Target@example.org",
        "TARGET@example.org",
        "tarGet@example.org",
    ]
    answers = [web.post("/subscribe", {"email": e, "frequency": "daily"}) for e in spellings]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [web.next_mail()["To"] for _ in range(3)] == ["target@example.org"] * 3


def test_cross_origin_posts_are_refused_but_allowed_origins_and_one_click_pass(web: Web) -> None:
    reader = _active(web, "origin@example.org")
    form = {"email": "someone@example.org", "frequency": "weekly"}
    assert web.post("/subscribe", form, Origin="https://evil.example").status_code == 403
    assert web.post("/subscribe", form, Origin="null").status_code == 403
    null_cross = web.post("/subscribe", form, Origin="null", **{"Sec-Fetch-Site": "cross-site"})
    assert null_cross.status_code == 403
    no_origin = web.client.post("/subscribe", data=form, headers={"Sec-Fetch-Site": "cross-site"})
    assert no_origin.status_code == 403
    preferences = web.link(Purpose.PREFERENCES, reader)
    refused = web.post(preferences, {"frequency": "monthly"}, Origin="https://evil.example")
    assert refused.status_code == 403
    assert web.reader("origin@example.org").frequency is Frequency.DAILY
    assert web.post("/subscribe", form, Origin="https://miasfeed.example").status_code == 200
    # What a browser sends from our own page, whose Referrer-Policy is no-referrer:
    ours = web.post("/subscribe", form, Origin="null", **{"Sec-Fetch-Site": "same-origin"})
    assert ours.status_code == 200
    one_click = web.post(web.link(Purpose.UNSUBSCRIBE, reader), Origin="https://mail.example")
    assert one_click.status_code == 200


# -- how pages are served --------------------------------------------------------------------


def test_pages_carry_security_headers_and_load_nothing_from_other_hosts(web: Web) -> None:
    reader = _active(web, "headers@example.org")
    for path in (
        "/subscribe",
        web.link(Purpose.UNSUBSCRIBE, reader),
        web.link(Purpose.PREFERENCES, reader),
        "/unsubscribe/not-a-token",
    ):
        answer = web.get(path)
        assert answer.headers["Referrer-Policy"] == "no-referrer"
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        csp = answer.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp
        assert "frame-ancestors 'none'" in csp
        assets = _parse(answer.text).assets
        assert assets
        assert all(asset.startswith("/static/") for asset in assets), assets
        for asset in assets:
            assert web.get(asset).status_code == 200


def test_a_missing_page_is_a_404_page(web: Web) -> None:
    answer = web.get("/nothing-here")
    assert answer.status_code == 404
    assert "There is no page at this address." in answer.text


@pytest.fixture
def broken_web(store: Store, smtp_server: SmtpServer, tmp_path: Path) -> Iterator[Web]:
    """The app with a template that fails as it renders: a bug, as far as the app can tell."""
    copy = tmp_path / "templates"
    shutil.copytree(PROJECT_TEMPLATES, copy)
    page = copy / "pages" / "unsubscribe.html.j2"
    page.write_text(page.read_text().replace("{{ masked_email }}", "{{ masked_email.oops() }}"))
    yield from _web("in-process", store, smtp_server, {"DIGEST_TEMPLATES_DIR": str(copy)})


def test_an_unexpected_error_gets_a_plain_500_page_and_a_log_line(
    broken_web: Web, caplog: pytest.LogCaptureFixture
) -> None:
    web = broken_web
    reader = _active(web, "bug@example.org")
    answer = web.get(web.link(Purpose.UNSUBSCRIBE, reader))
    assert answer.status_code == 500
    assert "Something went wrong on our side" in answer.text
    assert "Traceback" not in answer.text
    assert "oops" not in answer.text
    assert answer.headers["Content-Security-Policy"].startswith("default-src 'none'")
    logged = [r for r in caplog.records if r.name == "digest.web" and r.levelname == "ERROR"]
    assert [r.getMessage().split()[0] for r in logged] == ["GET"]
    assert logged[0].exc_info is not None  # the operator's log keeps the cause


def test_a_database_outage_gets_a_503_page(smtp_server: SmtpServer) -> None:
    unreachable = "postgresql+psycopg://digest@127.0.0.1:1/digest"
    engine = database.connect(unreachable)
    services = Services(load(None, _settings_env(smtp_server, "http://testserver")), Store(engine))
    token = services.tokens().link_token(Purpose.UNSUBSCRIBE, 1, 1)
    with in_process_client(asgi_app(services, Clock())) as client:
        answer = client.get(f"/unsubscribe/{token}")
    engine.dispose()
    assert answer.status_code == 503
    assert "Please try again" in answer.text


# -- a pause instead of leaving --------------------------------------------------------------

PAUSED = "Your digests pause until Tuesday 8 December; then one digest brings what you missed."
# Two weeks from Tuesday 24 November: the reader's (Madrid's) midnight that starts 8 December.
TWO_WEEKS = datetime(2026, 12, 7, 23, 0, tzinfo=UTC)


def test_the_unsubscribe_page_offers_a_pause_that_is_one_change_and_says_until_when(
    web: Web,
) -> None:
    reader = _active(web, "tired@example.org")
    link = web.link(Purpose.UNSUBSCRIBE, reader)
    before = snapshot(web.store.engine)
    page = web.get(link)
    assert snapshot(web.store.engine) == before  # a GET changes nothing
    for words, value in (("2 weeks", "2-weeks"), ("a month", "1-month"), ("3 months", "3-months")):
        assert (
            f'<button type="submit" name="pause" value="{value}" class="secondary">'
            f"Pause for {words}</button>"
        ) in page.text
    assert "<legend>Take a break instead</legend>" in page.text
    with _statements(web.store.engine) as statements:
        paused = web.post(link, {"pause": "2-weeks"})
    assert paused.status_code == 200
    _one_change_that_returns_the_reader(statements)
    assert PAUSED in html.unescape(paused.text)
    assert web.reader("tired@example.org") == replace(reader, paused_until=TWO_WEEKS)
    # While paused, the one-click POST from the mail client still unsubscribes at once.
    assert web.client.post(link, content=b"List-Unsubscribe=One-Click").status_code == 200
    assert web.reader("tired@example.org").status is SubscriberStatus.UNSUBSCRIBED


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_a_one_click_post_naming_no_pause_unsubscribes_as_before(web: Web, encoding: str) -> None:
    reader = _active(web, "leave@example.org")
    link = web.link(Purpose.UNSUBSCRIBE, reader)
    if encoding == "urlencoded":
        answer = web.post(link, {"List-Unsubscribe": "One-Click"})
    else:  # a multipart body is never read, whatever it holds
        answer = web.client.post(link, files={"pause": (None, "2-weeks")})
    assert answer.status_code == 200
    assert web.reader("leave@example.org").status is SubscriberStatus.UNSUBSCRIBED
    assert web.reader("leave@example.org").paused_until is None


def test_a_pause_from_a_tampered_link_another_site_or_of_another_length_changes_nothing(
    web: Web,
) -> None:
    reader = _active(web, "victim@example.org")
    link = web.link(Purpose.UNSUBSCRIBE, reader)
    before = snapshot(web.store.engine)
    tampered = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    assert web.post(tampered, {"pause": "2-weeks"}).status_code == 400
    foreign = web.post(link, {"pause": "2-weeks"}, Origin="https://evil.example")
    assert foreign.status_code == 403
    assert web.post(link, {"pause": "10-years"}).status_code == 400
    assert snapshot(web.store.engine) == before


def test_preferences_pause_show_until_when_and_resume_now(web: Web) -> None:
    reader = _active(web, "break@example.org")
    link = web.link(Purpose.PREFERENCES, reader)
    assert "Pause for a month" in web.get(link).text
    with _statements(web.store.engine) as statements:
        paused = web.post(link, {"pause": "1-month"})
    _one_change_that_returns_the_reader(statements)
    text = _visible_text(html.unescape(paused.text))
    assert (
        "Your digests pause until Thursday 24 December; then one digest brings what you missed."
    ) in text
    assert "Paused until Thursday 24 December" in text
    assert "Your next digest arrives Thursday 24 December at 08:00." in text
    assert 'name="action" value="resume">Resume now</button>' in paused.text
    assert "Pause for a month" not in paused.text
    resumed = web.post(link, {"action": "resume"})
    assert "Your digests are back on." in resumed.text
    assert web.reader("break@example.org").paused_until is None
    assert "Pause for a month" in resumed.text


def test_a_pending_reader_is_offered_no_pause_and_a_posted_one_changes_nothing(web: Web) -> None:
    pending = _pending(web, "early@example.org")
    link = web.link(Purpose.PREFERENCES, pending)
    assert "Pause for" not in web.get(link).text
    before = snapshot(web.store.engine)
    answer = web.post(link, {"pause": "2-weeks"})
    assert answer.status_code == 200
    assert "Your digests pause" not in answer.text
    assert snapshot(web.store.engine) == before
