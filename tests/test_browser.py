"""The reader's pages in headless Chromium, on a phone's width and a desktop's, with screenshots.

The app runs over real HTTP as in test_pages (uvicorn in a thread, a real SMTP server, the
injected clock), on SQLite only: what a browser adds does not depend on the database. The mails'
HTML is checked here too, as clients with fewer CSS features than Chromium would show it.
"""

from __future__ import annotations

import email
import email.policy
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from browser import ChromiumUnavailable, _launch_failure, chromium_path, unavailable_action
from samples import LINKS, PERIOD_KEYS, SITE
from smtp_server import SmtpServer
from sqlalchemy import create_engine
from starlette.requests import Request
from starlette.routing import Route
from test_demo import _mail
from test_pages import PAUSED, Web, _active, _confirm_path, _web
from test_render import ARTICLES, DATE, FOOTED, HEAD_FONT_RULE, RECIPIENT, WEEK, article
from test_topic_pages import publish
from test_web_version import record_sent
from test_welcome import welcome as welcome_to

from digest import database
from digest.config import PROJECT_TEMPLATES
from digest.demo import pages
from digest.demo.newsroom import Newsroom
from digest.domain import ArticleDraft, Frequency, SubscriberDraft, SubscriberStatus
from digest.render import Renderer, preview_html
from digest.store import Store
from digest.tokens import Purpose

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

BROWSER_TIMEZONE = "Europe/Madrid"  # not the app's default (UTC): the script must pick it
PATIENCE_MS = 10_000


@pytest.fixture
def sqlite_web(tmp_path: Path, smtp_server: SmtpServer) -> Iterator[Web]:
    engine = database.connect(f"sqlite:///{tmp_path / 'digest.db'}")
    database.upgrade(engine)
    yield from _web("http", Store(engine), smtp_server, {})
    engine.dispose()


def reader_page(
    chromium: Browser, base_url: str, width: int, height: int, zone: str = BROWSER_TIMEZONE
) -> tuple[BrowserContext, Page]:
    """A reader's browser on the daemon's pages: their screen, their timezone, British English."""
    context = chromium.new_context(
        base_url=base_url,
        viewport={"width": width, "height": height},
        timezone_id=zone,
        locale="en-GB",
    )
    context.set_default_timeout(PATIENCE_MS)
    return context, context.new_page()


class Steps:
    """Full-page screenshots named <width>-<nn>-<step>.png, and checks every step shares."""

    def __init__(self, page: Page, folder: Path, width: int) -> None:
        self.page = page
        self.folder = folder
        self.width = width
        self.taken = 0

    def shot(self, step: str) -> None:
        self.taken += 1
        path = self.folder / f"{self.width}-{self.taken:02d}-{step}.png"
        self.page.screenshot(path=path, full_page=True)
        sideways = self.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert sideways <= 0, f"{path.name}: {sideways}px of horizontal scroll"


@pytest.mark.parametrize(("width", "height"), [(375, 800), (1280, 900)], ids=["375px", "1280px"])
def test_a_reader_signs_up_confirms_goes_monthly_and_unsubscribes_in_chromium(
    chromium: Browser, screenshots: Path, sqlite_web: Web, width: int, height: int
) -> None:
    # Imported here: without playwright the chromium fixture has already skipped (or failed).
    from playwright.sync_api import expect

    web = sqlite_web
    context, page = reader_page(chromium, web.base_url, width, height)
    steps = Steps(page, screenshots, width)
    try:
        page.goto("/subscribe")
        expect(page.locator("h1")).to_have_text("Get the digest")
        expect(page.locator("#timezone")).to_have_value(BROWSER_TIMEZONE)  # from timezone.js
        steps.shot("subscribe")

        page.get_by_label("Weekly").check()
        page.get_by_label("Email address").fill("reader@example")
        with page.expect_navigation():
            page.get_by_role("button", name="Subscribe").click()
        expect(page.get_by_role("alert")).to_have_text(
            "That address looks incomplete — it needs an @ and a domain, like name@example.org."
        )
        expect(page.get_by_label("Weekly")).to_be_checked()  # the choices survive the mistake
        expect(page.locator("#timezone")).to_have_value(BROWSER_TIMEZONE)
        steps.shot("address-incomplete")

        page.get_by_label("Email address").fill("reader@example.org")
        page.locator("#timezone").focus()
        # From the timezone past the folded topics to the button, as a keyboard user would.
        page.keyboard.press("Tab")
        expect(page.locator("summary")).to_be_focused()
        page.keyboard.press("Tab")
        submit = page.get_by_role("button", name="Subscribe")
        expect(submit).to_be_focused()
        assert submit.evaluate("b => b.matches(':focus-visible')")
        assert submit.evaluate("b => getComputedStyle(b).outlineStyle") != "none"
        steps.shot("filled-focus-on-subscribe")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        expect(page.locator("h1")).to_have_text("Check your inbox")
        steps.shot("check-inbox")
        pending = web.reader("reader@example.org")
        assert (pending.status, pending.frequency, pending.timezone) == (
            SubscriberStatus.PENDING,
            Frequency.WEEKLY,
            BROWSER_TIMEZONE,
        )

        page.goto(_confirm_path(web.next_mail()))
        expect(page.locator("main")).to_contain_text("r***@example.org")
        steps.shot("confirm")
        page.get_by_role("button", name="Yes, confirm my subscription").click()
        expect(page.locator(".success")).to_have_text(
            "Your first weekly digest arrives Monday 30 November at 08:00."
        )
        steps.shot("confirmed")
        reader = web.reader("reader@example.org")
        assert reader.status is SubscriberStatus.ACTIVE

        unsubscribe = web.link(Purpose.UNSUBSCRIBE, reader)
        page.goto(unsubscribe)
        expect(page.locator("main")).to_contain_text("r***@example.org")
        less_often = page.get_by_role("button", name="Send me a monthly digest instead")
        expect(less_often).to_be_visible()
        steps.shot("unsubscribe")
        less_often.click()
        expect(page.locator("[role=status]")).to_contain_text("Saved. Monthly, on the 1st at 08:00")
        steps.shot("saved-monthly")
        monthly = web.reader("reader@example.org")
        assert (monthly.status, monthly.frequency) == (
            SubscriberStatus.ACTIVE,
            Frequency.MONTHLY,
        )

        page.goto(unsubscribe)
        expect(page.get_by_role("button", name="Send me a monthly digest instead")).to_have_count(0)
        page.get_by_role("button", name="Unsubscribe").click()
        expect(page.locator("h1")).to_have_text("You're unsubscribed")
        steps.shot("unsubscribed")
        assert web.reader("reader@example.org").status is SubscriberStatus.UNSUBSCRIBED

        page.goto(unsubscribe[: len(unsubscribe) // 2])  # a link cut short in copying
        expect(page.locator("h1")).to_have_text("This link is not valid")
        steps.shot("invalid-link")
    finally:
        context.close()


@pytest.mark.parametrize(("width", "height"), [(375, 800), (1280, 900)], ids=["375px", "1280px"])
def test_a_monthly_reader_pauses_from_the_unsubscribe_page_by_keyboard_and_resumes_in_chromium(
    chromium: Browser, screenshots: Path, sqlite_web: Web, width: int, height: int
) -> None:
    from playwright.sync_api import expect

    web = sqlite_web
    reader = _active(web, "monthly@example.org", Frequency.MONTHLY)
    context, page = reader_page(chromium, web.base_url, width, height)
    steps = Steps(page, screenshots, width)
    try:
        page.goto(web.link(Purpose.UNSUBSCRIBE, reader))
        pauses = page.get_by_role("group", name="Take a break instead")
        for words in ("2 weeks", "a month", "3 months"):
            expect(pauses.get_by_role("button", name=f"Pause for {words}")).to_be_visible()
        page.get_by_role("button", name="Unsubscribe").focus()
        page.keyboard.press("Tab")  # from Unsubscribe to the first pause, as a keyboard user would
        two_weeks = pauses.get_by_role("button", name="Pause for 2 weeks")
        expect(two_weeks).to_be_focused()
        assert two_weeks.evaluate("b => b.matches(':focus-visible')")
        assert two_weeks.evaluate("b => getComputedStyle(b).outlineStyle") != "none"
        steps.shot("unsubscribe-offers-a-pause")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        expect(page.get_by_role("status")).to_have_text(PAUSED)
        steps.shot("paused")
        assert web.reader("monthly@example.org").paused_until is not None

        page.get_by_role("link", name="Resume now, or change your digest").click()
        expect(page.get_by_role("heading", name="Paused until Tuesday 8 December")).to_be_visible()
        steps.shot("preferences-paused")
        page.get_by_role("button", name="Resume now").click()
        expect(page.get_by_role("status")).to_have_text("Your digests are back on.")
        expect(page.get_by_role("button", name="Pause for a month")).to_be_visible()
        steps.shot("resumed")
        assert web.reader("monthly@example.org").paused_until is None
    finally:
        context.close()


@pytest.mark.parametrize(
    ("zone", "label"),
    [("Asia/Tokyo", "Tokyo (Japan)"), ("Pacific/Chatham", "Pacific/Chatham")],
    ids=["on-the-list", "off-the-list"],
)
def test_the_sign_up_page_preselects_the_browsers_own_timezone_on_the_short_list_or_off_it(
    chromium: Browser, screenshots: Path, sqlite_web: Web, zone: str, label: str
) -> None:
    from playwright.sync_api import expect

    context, page = reader_page(chromium, sqlite_web.base_url, 375, 800, zone)
    try:
        page.goto("/subscribe")
        select = page.locator("#timezone")
        expect(select).to_have_value(zone)
        assert select.locator("option:checked").inner_text() == label
        assert select.locator("option").count() <= 60
        Steps(page, screenshots, 375).shot(f"subscribe-in-{zone.replace('/', '-')}")
        page.get_by_label("Email address").fill("faraway@example.org")
        with page.expect_navigation():
            page.get_by_role("button", name="Subscribe").click()
        expect(page.locator("h1")).to_have_text("Check your inbox")
        assert sqlite_web.reader("faraway@example.org").timezone == zone
    finally:
        context.close()


LONG_ADDRESS = "florence.nightingale.mary.seacole.volunteers@regional-health-trust.example.org"
UNBROKEN_ADDRESS = f"{'x' * 60}@{'y' * 60}.example.org"


@pytest.mark.parametrize(("width", "height"), [(375, 800), (1280, 900)], ids=["375px", "1280px"])
def test_the_preferences_history_and_a_digests_web_version_fit_the_screen_in_chromium(
    chromium: Browser, screenshots: Path, sqlite_web: Web, width: int, height: int
) -> None:
    from playwright.sync_api import expect

    web = sqlite_web
    draft = SubscriberDraft(LONG_ADDRESS, Frequency.WEEKLY, BROWSER_TIMEZONE)
    web.store.add_subscriber(draft, confirmed=True, now=datetime(2026, 11, 1, tzinfo=UTC))
    mondays = [datetime(2026, 11, 23, 13, 0, tzinfo=UTC) + timedelta(weeks=n) for n in range(3)]
    for number, monday in enumerate(mondays, start=2):
        article = ArticleDraft(
            url=f"https://miasfeed.example/articles/{'a-long-slug-' * 8}{number}",
            title=f"Week {number}: what a year of {'walking, ' * 6}sleeping and eating well does",
            summary="<p>A study of " + "very " * 40 + "many readers.</p>",
            category="Medical News & Research",
            reading_minutes=4,
            published_at=monday - timedelta(days=1),
        )
        web.store.upsert_articles([article], monday - timedelta(hours=1))
        assert len(record_sent(web.services, monday)) == 1
    context, page = reader_page(chromium, web.base_url, width, height)
    steps = Steps(page, screenshots, width)
    try:
        page.goto(web.link(Purpose.PREFERENCES, web.reader(LONG_ADDRESS)))
        expect(page.get_by_role("heading", name="Your last digests")).to_be_visible()
        history = page.locator(".history li")
        expect(history).to_have_count(3)
        expect(history.first).to_contain_text("Weekly · 7–13 December")
        steps.shot("preferences-with-history")

        history.nth(1).get_by_role("link").click()
        expect(page.get_by_role("link", name="Week 3:").first).to_be_visible()
        expect(page.get_by_role("link", name="Week 4:")).to_have_count(0)
        steps.shot("web-version")
    finally:
        context.close()


def outbox_page(folder: Path) -> str:
    """The demo's outbox page, rendered by its route without an event loop (Playwright has one)."""
    newsroom = Newsroom(Store(create_engine("sqlite://")), [], lambda: datetime.now(UTC))
    index = pages.routes(folder, "Mia's Feed", newsroom)[0]
    assert isinstance(index, Route) and index.path == "/"
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    body: bytes = index.endpoint(request).body
    return body.decode()


@pytest.mark.parametrize(("width", "height"), [(375, 800), (1280, 900)], ids=["375px", "1280px"])
def test_the_demo_outbox_wraps_long_addresses_and_subjects_instead_of_scrolling_sideways(
    chromium: Browser, screenshots: Path, tmp_path: Path, width: int, height: int
) -> None:
    folder = tmp_path / "a-folder-name-as-long-as-a-newcomers-home-directory-might-be" / "outbox"
    folder.mkdir(parents=True)
    mails = [
        _mail("amara@example.org", "Your daily digest from Mia's Feed: 12 new articles"),
        _mail(LONG_ADDRESS, "Your weekly digest from Mia's Feed: 5 new articles"),
        _mail(UNBROKEN_ADDRESS, f"Your monthly digest from Mia's Feed: {'9' * 80}"),
    ]
    for number, message in enumerate(mails, start=1):
        stem = f"{number:03d}-{message['To']}"
        (folder / f"{stem}.eml").write_bytes(message.as_bytes())
        (folder / f"{stem}.html").write_text("<p>A digest</p>")
    context = chromium.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    try:
        page.set_content(outbox_page(folder))
        assert page.evaluate(
            "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )
        Steps(page, screenshots, width).shot("demo-outbox")
        for address in (LONG_ADDRESS, UNBROKEN_ADDRESS):
            assert page.get_by_text(address).is_visible()
    finally:
        context.close()


def mails() -> dict[str, str]:
    renderer = Renderer(PROJECT_TEMPLATES, SITE)
    confirmation = renderer.confirmation_message(
        RECIPIENT, LINKS.unsubscribe, Frequency.WEEKLY, message_id="<c@example.org>", date=DATE
    )
    welcome = welcome_to(renderer)

    def html_of(message: bytes) -> str:
        html = email.message_from_bytes(message, policy=email.policy.default).get_body(("html",))
        assert html is not None
        content: str = html.get_content()
        return content

    return {
        "digest": preview_html(renderer.digest_body(Frequency.WEEKLY, ARTICLES, WEEK), LINKS),
        "confirmation": html_of(confirmation),
        "welcome": html_of(welcome),
    }


# Outlook for Windows carries no font into a nested table or a heading: Word's own defaults apply
# there unless a rule names the element itself.
WORD_DEFAULTS = "<style>table, h1, h2 { font-family: 'Times New Roman', serif; }</style>"
STYLE_BLOCK = re.compile(r"<style[^>]*>.*?</style>", re.S)
TEXT_FONTS = """() => [...document.body.querySelectorAll('*')]
    .filter(e => e.checkVisibility())
    .filter(e => [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()))
    .map(e => e.tagName + ': ' + getComputedStyle(e).fontFamily)"""


@pytest.mark.parametrize("mail", ["digest", "confirmation", "welcome"])
@pytest.mark.parametrize(
    "client",
    ["every style", "no <head> styles (Gmail app, other account)", "no font inheritance (Outlook)"],
)
def test_every_text_of_a_mail_is_set_in_the_font_stack_in_any_kind_of_client(
    chromium: Browser, mail: str, client: str
) -> None:
    html = mails()[mail]
    if client.startswith("no <head>"):
        html = STYLE_BLOCK.sub("", html)
    elif client.startswith("no font"):
        html = html.replace("<head>", f"<head>{WORD_DEFAULTS}", 1)
    context = chromium.new_context(viewport={"width": 375, "height": 800})
    page = context.new_page()
    try:
        page.set_content(html)
        fonts = page.evaluate(TEXT_FONTS)
        assert len(fonts) >= 5  # the texts were found
        assert [f for f in fonts if not f.endswith(f": {HEAD_FONT_RULE}")] == []
    finally:
        context.close()


# -- the digest itself ------------------------------------------------------------------------


def picture(width: int, height: int) -> bytes:
    """A PNG in the site's colours, from the accent at the top to the wash at the bottom."""
    top, bottom = (11, 110, 79), (238, 245, 242)
    rows = b"".join(
        b"\x00"
        + bytes(round(a + (b - a) * y / (height - 1)) for a, b in zip(top, bottom, strict=True))
        * width
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + png


PICTURES = "https://miasfeed.example/images/**"  # where ARTICLES' pictures are
# A month of news: more than DIGEST_MAX_ARTICLES, a pick among the older ones, long words.
MONTH = [
    *ARTICLES,
    *(
        article(
            -n,
            f"Older news {n}: what a decade of sleep research tells us about shift work",
            ("Medical News & Research", "Nutrition", "Wellness & Lifestyle")[n % 3],
            3,
            picture=f"https://miasfeed.example/images/older-{n}.jpg" if n % 4 else None,
            featured=n == 17,
        )
        for n in range(1, 30)
    ),
]
EDITIONS = {
    Frequency.DAILY: ARTICLES[:2],
    Frequency.WEEKLY: ARTICLES,
    Frequency.MONTHLY: MONTH,
}


def digest_html(frequency: Frequency, *, pictures: bool = True) -> str:
    articles = EDITIONS[frequency]
    if not pictures:
        articles = [replace(a, image_url=None) for a in articles]
    renderer = Renderer(PROJECT_TEMPLATES, FOOTED)
    return preview_html(renderer.digest_body(frequency, articles, PERIOD_KEYS[frequency]), LINKS)


@pytest.mark.parametrize("pictures", ["with-pictures", "without-pictures", "pictures-blocked"])
@pytest.mark.parametrize(("width", "height"), [(375, 800), (1280, 900)], ids=["375px", "1280px"])
def test_a_daily_weekly_and_monthly_digest_fit_the_screen_with_pictures_without_and_blocked(
    chromium: Browser, screenshots: Path, width: int, height: int, pictures: str
) -> None:
    # Blocked as Outlook and Gmail block them by default: never fetched, the alt text in the box.
    png = picture(1200, 676)
    context = chromium.new_context(viewport={"width": width, "height": height})
    if pictures == "pictures-blocked":
        context.route(PICTURES, lambda route: route.abort("blockedbyclient"))
    else:
        context.route(PICTURES, lambda route: route.fulfill(body=png, content_type="image/png"))
    page = context.new_page()
    steps = Steps(page, screenshots, width)
    try:
        for frequency in Frequency:
            page.set_content(digest_html(frequency, pictures=pictures != "without-pictures"))
            page.wait_for_load_state("networkidle")
            steps.shot(f"digest-{frequency}-{pictures}")  # and no sideways scroll
            images = page.evaluate(
                "[...document.images].map(i => [i.className, i.naturalWidth, i.alt,"
                " Math.round(i.getBoundingClientRect().width)])"
            )
            if pictures == "without-pictures":
                assert images == []  # no empty box where an article has no picture
                continue
            card = page.evaluate("document.querySelector('.card').getBoundingClientRect().width")
            lead, *thumbnails = images
            assert lead[0] == "lead-image" and lead[3] == round(card)  # the card's whole width
            assert {kind for kind, *_ in thumbnails} <= {"thumb"}
            assert all(shown in (120, 96) for *_, shown in thumbnails)
            loaded = [natural > 0 for _, natural, _, _ in images]
            assert loaded == [pictures == "with-pictures"] * len(images)
            shown = {a.title for a in EDITIONS[frequency]}
            assert all(alt in shown for _, _, alt, _ in images)  # alt text: the title
    finally:
        context.close()


def test_each_read_more_link_names_its_article_to_a_screen_reader_and_shows_two_words(
    chromium: Browser,
) -> None:
    from playwright.sync_api import expect

    context = chromium.new_context(viewport={"width": 375, "height": 800})
    page = context.new_page()
    try:
        page.set_content(digest_html(Frequency.WEEKLY, pictures=False))
        for shown in ARTICLES:
            link = page.get_by_role("link", name=f"Read more about {shown.title}", exact=True)
            expect(link).to_have_count(1)
            # Two words on the screen: the title in it takes a pixel, at most.
            shown_box, hidden = link.bounding_box(), link.locator(".sr").bounding_box()
            assert shown_box is not None and shown_box["width"] < 100
            assert hidden is not None and hidden["width"] <= 1 and hidden["height"] <= 1
            title = page.get_by_role("link", name=shown.title, exact=True)
            assert title.evaluate("a => getComputedStyle(a).textDecorationLine") == "underline"
        first = page.get_by_role("link").first
        assert first.inner_text() == "View in browser"
    finally:
        context.close()


# Each visible text against the background it is drawn on (the nearest ancestor that has one),
# as WCAG computes contrast.
CONTRASTS = """() => {
  const rgb = c => c.match(/[\\d.]+/g).map(Number);
  const luminance = c => {
    const [r, g, b] = rgb(c).slice(0, 3).map(v => v / 255)
      .map(v => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const background = e => {
    for (; e; e = e.parentElement) {
      const c = getComputedStyle(e).backgroundColor;
      if (rgb(c)[3] !== 0) return c;
    }
    return 'rgb(255, 255, 255)';
  };
  return [...document.body.querySelectorAll('*')]
    .filter(e => e.checkVisibility({opacityProperty: true}))
    .filter(e => [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()))
    .map(e => {
      const [a, b] = [luminance(getComputedStyle(e).color), luminance(background(e))];
      const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
      return [e.textContent.trim().slice(0, 30), Math.round(ratio * 100) / 100];
    });
}"""


@pytest.mark.parametrize(
    ("scheme", "color_scheme", "outlook_marks"),
    [
        ("light", "light", False),
        ("dark", "dark", False),  # Apple Mail and iOS Mail: prefers-color-scheme
        ("outlook-dark", "light", True),  # Outlook.com: it marks what it darkened
    ],
)
def test_every_text_of_the_digest_keeps_a_contrast_of_4_5_in_light_and_dark_mode(
    chromium: Browser, screenshots: Path, scheme: str, color_scheme: str, outlook_marks: bool
) -> None:
    html = digest_html(Frequency.MONTHLY)
    if outlook_marks:
        html = html.replace("<html", "<html data-ogsc data-ogsb", 1)
    context = chromium.new_context(
        viewport={"width": 375, "height": 800},
        color_scheme="dark" if color_scheme == "dark" else "light",
    )
    page = context.new_page()
    try:
        page.set_content(html)
        Steps(page, screenshots, 375).shot(f"digest-monthly-{scheme}")
        texts = page.evaluate(CONTRASTS)
        assert len(texts) > 40
        assert [(text, ratio) for text, ratio in texts if ratio < 4.5] == []
        card = page.evaluate("getComputedStyle(document.querySelector('.card')).backgroundColor")
        assert (card == "rgb(255, 255, 255)") == (scheme == "light")  # dark mode is dark
    finally:
        context.close()


# -- when there is no browser ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"), [({}, "skip"), ({"CI": "true"}, "fail"), ({"CI": "1"}, "skip")]
)
def test_a_missing_chromium_skips_except_under_ci_true(
    environ: dict[str, str], expected: str
) -> None:
    action, message = unavailable_action("/usr/bin/chromium not found", environ)
    assert action == expected
    assert message.endswith("/usr/bin/chromium not found")
    assert "\n" not in message


def test_a_wrong_chromium_bin_is_named_not_ignored(tmp_path: Path) -> None:
    missing = tmp_path / "chromium"
    with pytest.raises(ChromiumUnavailable, match=f"{missing} not found"):
        chromium_path({"CHROMIUM_BIN": str(missing)})


def test_a_failed_launch_is_told_by_chromiums_own_last_complaint() -> None:
    playwright_said = (
        "BrowserType.launch: Target page, context or browser has been closed\n"
        "Browser logs:\n\nCall log:\n"
        "  - <launching> /usr/bin/chromium --headless\n"
        "  - [pid=7][err] /usr/bin/chromium: 9: [: 25276510208: unexpected operator\n"
        "  - [pid=7][err] [7:7:1124/152341.379291:ERROR:content/browser/zygote_host/"
        "zygote_host_impl_linux.cc:103] Running as root without --no-sandbox is not supported.\n"
        "  - [pid=7] <process did exit: exitCode=1, signal=null>\n"
    )
    assert _launch_failure(playwright_said) == (
        "Running as root without --no-sandbox is not supported."
    )
    assert _launch_failure("BrowserType.launch: Timeout 30000ms exceeded.\nCall log:") == (
        "BrowserType.launch: Timeout 30000ms exceeded."
    )


@pytest.mark.parametrize(("width", "height"), [(375, 800), (1280, 900)], ids=["375px", "1280px"])
def test_a_weekly_reader_chooses_their_hour_and_day_on_preferences_by_keyboard_in_chromium(
    chromium: Browser, screenshots: Path, sqlite_web: Web, width: int, height: int
) -> None:
    from playwright.sync_api import expect

    web = sqlite_web
    draft = SubscriberDraft("hours@example.org", Frequency.WEEKLY, BROWSER_TIMEZONE)
    web.store.add_subscriber(draft, confirmed=True, now=web.clock() - timedelta(hours=1))
    context, page = reader_page(chromium, web.base_url, width, height)
    steps = Steps(page, screenshots, width)
    try:
        page.goto(web.link(Purpose.PREFERENCES, web.reader("hours@example.org")))
        hour, day = page.get_by_label("Time of day"), page.get_by_label("Day of your weekly digest")
        expect(hour).to_have_value("")
        assert hour.locator("option:checked").inner_text() == "Site default (08:00)"
        expect(day).to_have_value("")
        assert day.locator("option:checked").inner_text() == "Site default (Monday)"
        steps.shot("preferences-hour-and-day")

        hour.focus()
        hour.select_option("07:00")
        page.keyboard.press("Tab")  # from the hour to the day, as a keyboard user would
        expect(day).to_be_focused()
        assert day.evaluate("s => getComputedStyle(s).outlineStyle") != "none"
        day.select_option("sunday")
        page.keyboard.press("Tab")  # past the one topic on offer (Research) to Save
        expect(page.get_by_label("Research")).to_be_focused()
        page.keyboard.press("Tab")
        save = page.get_by_role("button", name="Save")
        expect(save).to_be_focused()
        with page.expect_navigation():
            page.keyboard.press("Enter")
        expect(page.locator("[role=status]")).to_have_text(
            "Saved. Weekly, on Sundays at 07:00, Madrid (Spain) time: all topics."
        )
        expect(page.get_by_label("Time of day")).to_have_value("07:00")
        expect(page.get_by_label("Day of your weekly digest")).to_have_value("sunday")
        steps.shot("preferences-saved-sunday-0700")
        reader = web.reader("hours@example.org")
        assert (reader.send_time, reader.send_weekday) == (time(7), 6)
    finally:
        context.close()


@pytest.mark.parametrize(("width", "height"), [(375, 800), (1280, 900)], ids=["375px", "1280px"])
def test_a_reader_chooses_topics_at_sign_up_by_keyboard_and_changes_them_on_preferences_in_chromium(
    chromium: Browser, screenshots: Path, sqlite_web: Web, width: int, height: int
) -> None:
    from playwright.sync_api import expect

    web = sqlite_web
    publish(web, "Nutrition", "Public Health", "Sleep", "Medical News & Research")
    context, page = reader_page(chromium, web.base_url, width, height)
    steps = Steps(page, screenshots, width)
    try:
        page.goto("/subscribe")
        nutrition = page.get_by_label("Nutrition", exact=True)
        expect(nutrition).to_be_hidden()  # folded away: the form stays short
        steps.shot("subscribe-topics-folded")
        page.get_by_label("Email address").fill("topics@example.org")
        page.get_by_label("Weekly").check()
        page.locator("#timezone").focus()
        page.keyboard.press("Tab")  # from the timezone to the topics, as a keyboard user would
        summary = page.locator("summary")
        expect(summary).to_be_focused()
        assert summary.evaluate("s => getComputedStyle(s).outlineStyle") != "none"
        page.keyboard.press("Enter")
        topics = page.get_by_role("group", name="Topics")
        expect(topics).to_be_visible()
        page.keyboard.press("Tab")
        expect(page.get_by_label("Medical News & Research")).to_be_focused()
        page.keyboard.press("Tab")
        expect(nutrition).to_be_focused()
        page.keyboard.press("Space")
        page.keyboard.press("Tab")
        page.keyboard.press("Space")  # Public Health
        expect(nutrition).to_be_checked()
        expect(page.get_by_label("Public Health")).to_be_checked()
        steps.shot("subscribe-topics-chosen")
        page.get_by_role("button", name="Subscribe").focus()
        with page.expect_navigation():
            page.keyboard.press("Enter")
        expect(page.locator("h1")).to_have_text("Check your inbox")
        pending = web.reader("topics@example.org")
        assert pending.topics == frozenset({"nutrition", "public health"})

        page.goto(_confirm_path(web.next_mail()))
        page.get_by_role("button", name="Yes, confirm my subscription").click()
        expect(page.locator(".success")).to_contain_text("Your first weekly digest arrives")
        page.get_by_role("link", name="choose its topics and when it comes").click()
        ticked = page.get_by_role("group", name="Topics").get_by_role("checkbox", checked=True)
        expect(ticked).to_have_count(2)
        steps.shot("preferences-topics")
        page.get_by_label("Public Health").uncheck()
        page.get_by_label("Sleep").check()
        with page.expect_navigation():
            page.get_by_role("button", name="Save").click()
        expect(page.get_by_role("status")).to_have_text(
            "Saved. Weekly, on Mondays at 08:00, Madrid (Spain) time: Nutrition and Sleep."
        )
        steps.shot("preferences-topics-saved")
        assert web.reader("topics@example.org").topics == frozenset({"nutrition", "sleep"})
    finally:
        context.close()
