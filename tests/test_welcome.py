"""The welcome mail a reader gets on confirming: its golden files and headers, and over HTTP on
SQLite and PostgreSQL: one welcome at the real SMTP server after the confirm click, none with
DIGEST_WELCOME off, and a relay that refuses it leaves the reader confirmed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import time as clock_time
from pathlib import Path

import pytest
from samples import DIGEST_HEADERS, LINKS, SITE
from smtp_server import SmtpServer
from test_pages import PATIENCE, Web, _confirm_path, _web
from test_render import DATE, RECIPIENT, assert_golden, assert_headers_are_single_lines, parse, part

from digest.config import PROJECT_TEMPLATES
from digest.domain import Frequency, Schedule, SubscriberStatus
from digest.readers import rhythm
from digest.render import Renderer
from digest.store import Store
from digest.tokens import Purpose


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(PROJECT_TEMPLATES, SITE)


def welcome(
    renderer: Renderer, *, one_click: bool = True, topics: str | None = "Nutrition and Sleep"
) -> bytes:
    return renderer.welcome_message(
        RECIPIENT,
        Frequency.WEEKLY,
        "every Monday at 08:00, Madrid (Spain) time",
        "arrives Monday 30 November at 08:00",
        topics=topics,
        unsubscribe_url=LINKS.unsubscribe,
        preferences_url=LINKS.preferences,
        message_id="<welcome.42@digest.example.org>",
        date=DATE,
        one_click=one_click,
    )


def test_the_welcome_parts_match_their_golden_files(renderer: Renderer) -> None:
    message = welcome(renderer)
    assert_golden("welcome.txt", part(message, "plain"))
    assert_golden("welcome.html", part(message, "html"))


def test_the_welcome_names_the_readers_topics_and_says_nothing_of_topics_for_every_topic(
    renderer: Renderer,
) -> None:
    for subtype in ("plain", "html"):
        chosen = " ".join(part(welcome(renderer), subtype).split())
        assert "You'll get the new articles on Nutrition and Sleep from Mia's Feed in" in chosen
        every = " ".join(part(welcome(renderer, topics=None), subtype).split())
        assert "You'll get the new articles from Mia's Feed in one mail" in every


def test_the_welcome_carries_a_digests_list_headers_each_on_one_line(
    renderer: Renderer,
) -> None:
    message = welcome(renderer)
    assert_headers_are_single_lines(message, {*DIGEST_HEADERS, "List-Unsubscribe-Post"})
    parsed = parse(message)
    assert parsed["List-Unsubscribe"] == f"<{LINKS.unsubscribe}>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["Subject"] == "Welcome to the weekly digest from Mia's Feed"
    for subtype in ("plain", "html"):
        assert LINKS.unsubscribe in part(message, subtype)
        assert LINKS.preferences in part(message, subtype)
    assert_headers_are_single_lines(welcome(renderer, one_click=False), set(DIGEST_HEADERS))


@pytest.mark.parametrize(
    ("frequency", "schedule", "words"),
    [
        (Frequency.DAILY, Schedule(), "every day at 08:00"),
        (Frequency.WEEKLY, Schedule(weekly_day=4), "every Friday at 08:00"),
        (Frequency.MONTHLY, Schedule(clock_time(7, 30)), "on the 1st of every month at 07:30"),
        (Frequency.MONTHLY, Schedule(monthly_day=2), "on the 2nd of every month at 08:00"),
        (Frequency.MONTHLY, Schedule(monthly_day=3), "on the 3rd of every month at 08:00"),
        (Frequency.MONTHLY, Schedule(monthly_day=11), "on the 11th of every month at 08:00"),
        (Frequency.MONTHLY, Schedule(monthly_day=12), "on the 12th of every month at 08:00"),
        (Frequency.MONTHLY, Schedule(monthly_day=13), "on the 13th of every month at 08:00"),
        (Frequency.MONTHLY, Schedule(monthly_day=22), "on the 22nd of every month at 08:00"),
        (Frequency.MONTHLY, Schedule(monthly_day=28), "on the 28th of every month at 08:00"),
        (
            Frequency.MONTHLY,
            Schedule(monthly_day=29),
            "on the 29th of every month (or the month's last day) at 08:00",
        ),
        (
            Frequency.MONTHLY,
            Schedule(monthly_day=31),
            "on the 31st of every month (or the month's last day) at 08:00",
        ),
    ],
)
def test_the_welcome_says_when_digests_come_as_the_schedule_has_it(
    frequency: Frequency, schedule: Schedule, words: str
) -> None:
    assert rhythm(frequency, schedule) == words


# -- after the confirm click, over HTTP ----------------------------------------------------------


@pytest.fixture(params=["in-process", "http"])
def web(request: pytest.FixtureRequest, store: Store, smtp_server: SmtpServer) -> Iterator[Web]:
    yield from _web(request.param, store, smtp_server, {})


@pytest.fixture(params=["in-process", "http"])
def web_without_welcome(
    request: pytest.FixtureRequest, store: Store, smtp_server: SmtpServer, tmp_path: Path
) -> Iterator[Web]:
    # Through the settings file, as an operator would keep it (DIGEST_WELCOME: test_config).
    settings = tmp_path / "digest.toml"
    settings.write_text('welcome = "off"\n')
    yield from _web(request.param, store, smtp_server, {"DIGEST_CONFIG": str(settings)})


def sign_up(web: Web, address: str, *topics: str) -> str:
    """Sign up a weekly reader in Madrid, of these topics (none: every topic); the path of the
    link in their confirmation mail."""
    form = {"email": address, "frequency": "weekly", "timezone": "Europe/Madrid"} | {
        "topics": ["", *topics]
    }
    assert web.post("/subscribe", form).status_code == 200
    return _confirm_path(web.next_mail())


def test_confirming_mails_one_welcome_that_says_what_comes_when_with_the_readers_links(
    web: Web,
) -> None:
    confirm = sign_up(web, "new@example.org")
    assert web.post(confirm).status_code == 200
    mail = web.next_mail()
    reader = web.reader("new@example.org")
    assert reader.status is SubscriberStatus.ACTIVE
    assert mail["To"] == "new@example.org"
    assert mail["Subject"] == "Welcome to the weekly digest from Mia's Feed"
    unsubscribe = f"{web.base_url}{web.link(Purpose.UNSUBSCRIBE, reader)}"
    assert mail["List-Unsubscribe"] == f"<{unsubscribe}>"
    assert mail["List-Unsubscribe-Post"] is None  # an http:// base URL: no one-click (RFC 8058)
    body = mail.get_body(("plain",))
    assert body is not None
    words = " ".join(body.get_content().split())
    assert "the new articles from Mia's Feed in one mail every Monday at 08:00, Madrid" in words
    # The same words as the page the click opened, from the same clock (Tuesday noon).
    assert "Your first weekly digest arrives Monday 30 November at 08:00." in words
    assert f"{web.base_url}{web.link(Purpose.PREFERENCES, reader)}" in words
    assert unsubscribe in words

    # A second click, or the link opened again, welcomes nobody twice: the next mail is another's.
    assert web.post(confirm).status_code == 200
    assert web.get(confirm).status_code == 200
    sign_up(web, "marker@example.org")
    assert [m.recipients for m in web.smtp.messages] == [
        ["new@example.org"],
        ["new@example.org"],
        ["marker@example.org"],
    ]
    assert web.post(unsubscribe.removeprefix(web.base_url)).status_code == 200  # its link works
    assert web.reader("new@example.org").status is SubscriberStatus.UNSUBSCRIBED


def test_a_reader_who_chose_topics_at_sign_up_is_welcomed_with_their_names(web: Web) -> None:
    # Research is the category of the article _web publishes; sleep is one no article has yet.
    confirm = sign_up(web, "choosy@example.org", "research", "sleep")
    assert web.post(confirm).status_code == 200
    body = web.next_mail().get_body(("plain",))
    assert body is not None
    words = " ".join(body.get_content().split())
    assert "You'll get the new articles on Research and Sleep from Mia's Feed in one mail" in words


def test_with_the_welcome_turned_off_confirming_mails_no_welcome(web_without_welcome: Web) -> None:
    web = web_without_welcome
    assert web.post(sign_up(web, "quiet@example.org")).status_code == 200
    assert web.reader("quiet@example.org").status is SubscriberStatus.ACTIVE
    sign_up(web, "marker@example.org")
    assert [m.recipients for m in web.smtp.messages] == [
        ["quiet@example.org"],
        ["marker@example.org"],
    ]


def test_a_welcome_the_relay_refuses_leaves_the_reader_confirmed_and_logs_one_line(
    web: Web, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="digest")
    confirm = sign_up(web, "refused@example.org")
    web.smtp.fail("rcpt", 550, to={"refused@example.org"})
    answer = web.post(confirm)
    assert answer.status_code == 200
    assert "Your first weekly digest arrives Monday 30 November at 08:00." in answer.text
    assert web.reader("refused@example.org").status is SubscriberStatus.ACTIVE

    def welcome_lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith("welcome mail")]

    deadline = time.monotonic() + PATIENCE  # over HTTP the mail goes after the answer
    while not welcome_lines() and time.monotonic() < deadline:
        time.sleep(0.02)
    (line,) = welcome_lines()
    assert line.levelname == "WARNING"
    assert line.getMessage().startswith("welcome mail to r***@example.org not sent: 550")
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert web.reader("refused@example.org").status is SubscriberStatus.ACTIVE
