"""`digest demo` as a real process: the daemon on sample data, its caught mail browsable, Ctrl-C exits 0."""

from __future__ import annotations

import asyncio
import email
import email.policy
import html
import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage, Message
from importlib import resources
from pathlib import Path

import httpx
import pytest
from processes import PATIENCE, ROOT, wait_for
from sqlalchemy import create_engine
from starlette.applications import Starlette

from digest import demo
from digest.demo import outbox, pages
from digest.demo.catcher import Catcher, free_port
from digest.demo.newsroom import Newsroom
from digest.domain import Frequency
from digest.scheduler import Dispatcher, InProcess
from digest.store import Store

READERS = ["amara@example.org", "ben@example.org", "chen@example.org", "dana@example.org"]
MAIL_LINK = re.compile(r'href="(/outbox/[^"]+)"')


def fetch(url: str) -> tuple[int, Message, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def listing(port: int) -> str:
    try:
        return fetch(f"http://127.0.0.1:{port}/")[2].decode()
    except OSError:
        return ""  # not listening yet


def mail_links(page: str) -> list[str]:
    return [link for link in MAIL_LINK.findall(page) if not link.endswith(".eml")]


def demo_command(folder: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "digest", "demo", "--folder", str(folder), "--port", str(port)]


@pytest.fixture
def running_demo(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    with (tmp_path / "stdout").open("w") as out, (tmp_path / "stderr").open("w") as err:
        process = subprocess.Popen(
            demo_command(tmp_path / "demo", port),
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=err,
            text=True,
            start_new_session=True,  # its own process group, so SIGINT to it is a terminal's Ctrl-C
        )
    yield process, port, tmp_path
    if process.poll() is None:
        process.kill()
    process.wait()


def test_the_demo_serves_the_sample_digests_it_sent_and_stops_on_ctrl_c_with_exit_0(
    running_demo: tuple[subprocess.Popen[str], int, Path],
) -> None:
    process, port, tmp_path = running_demo
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: len(mail_links(listing(port))) == len(READERS), "four caught digests")
    page = listing(port)
    for reader in READERS:
        assert reader in page
    stdout = (tmp_path / "stdout").read_text()
    assert f"digest demo is running at {base}/" in stdout
    assert str(tmp_path / "demo" / "outbox") in stdout

    link = next(link for link in mail_links(page) if "amara" in link)
    status, headers, body = fetch(base + link)
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"].startswith("default-src 'none';")
    assert headers["X-Content-Type-Options"] == "nosniff"
    digest_html = body.decode()
    assert "Mia's Feed" in html.unescape(digest_html)
    assert "Mia's Feed shares news, not medical advice" in html.unescape(digest_html)
    assert f'href="{base}/unsubscribe/' in digest_html
    assert f'href="{base}/preferences/' in digest_html

    status, headers, raw = fetch(f"{base}{link}.eml")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["To"] == "amara@example.org"
    assert message["Subject"].startswith("Your daily digest · ")
    assert message["List-Unsubscribe"].startswith(f"<{base}/unsubscribe/")
    assert message["Message-ID"]
    assert fetch(f"{base}{link}?raw=1")[2] == raw
    status, headers, picture = fetch(f"{base}/pictures/sleep.png")  # a sample article's picture
    assert (status, headers["Content-Type"], picture[:4]) == (200, "image/png", b"\x89PNG")

    for outside in (
        "/outbox/..%2fdigest.db",
        "/outbox/%2e%2e%2fdigest.db",
        "/outbox/%2e%2e",
        "/outbox/..%2f..%2fpyproject.toml",
        "/outbox/nope",
        "/outbox/nope.eml",
        f"{link}.html",  # the .html file is reached by the mail's name only
    ):
        assert fetch(base + outside)[0] == 404, outside

    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=PATIENCE) == 0
    stderr = (tmp_path / "stderr").read_text()
    assert "Traceback" not in stderr
    assert "digest demo stopped" in (tmp_path / "stdout").read_text()


def test_the_demo_on_a_taken_port_says_so_in_one_line_exits_2_and_keeps_the_folder(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "digest.db").write_text("the last demo's database")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            demo_command(folder, port),
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=PATIENCE,
            check=False,
        )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: port {port} on 127.0.0.1 is taken; try another, e.g. --port {port + 1}"
    ]
    assert (folder / "digest.db").read_text() == "the last demo's database"


def asgi_get(app: Starlette, path: str) -> httpx.Response:
    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
            return await client.get(path)

    return asyncio.run(get())


def _mail(to: str, subject: str, *, with_html: bool = True) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Mia's Feed <digest@miasfeed.example>"
    message["To"] = to
    message["Subject"] = subject
    message.set_content("plain text\n")
    if with_html:
        message.add_alternative(f"<p>For {to}</p>\n", subtype="html")
    return message


def test_the_outbox_lists_caught_mail_newest_first_with_recipient_subject_and_frequency(
    tmp_path: Path,
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    with Catcher(tmp_path) as catcher, smtplib.SMTP(catcher.host, catcher.port) as client:
        client.send_message(_mail("amara@example.org", "Your daily digest from Mia's Feed: 3"))
        client.send_message(_mail("ben@example.org", "Your weekly digest from Mia's Feed: 5"))
        client.send_message(_mail("chen@example.org", "Confirm your subscription", with_html=False))
    caught = outbox.read(tmp_path)
    assert [(c.number, c.recipient, c.frequency) for c in caught] == [
        (3, "chen@example.org", None),
        (2, "ben@example.org", Frequency.WEEKLY),
        (1, "amara@example.org", Frequency.DAILY),
    ]
    assert [c.name for c in caught] == [
        "003-chen@example.org",
        "002-ben@example.org",
        "001-amara@example.org",
    ]
    assert caught[1].subject == "Your weekly digest from Mia's Feed: 5"
    assert caught[1].html is not None
    assert caught[1].html.read_text() == "<p>For ben@example.org</p>\n"
    assert caught[0].html is None
    assert all(before <= c.caught_at <= datetime.now(UTC) for c in caught)
    assert not list(tmp_path.glob("*.part"))


def test_the_outbox_finds_only_the_names_of_mail_files_it_holds(tmp_path: Path) -> None:
    folder = tmp_path / "outbox"
    folder.mkdir()
    (folder / "001-amara@example.org.eml").write_bytes(
        _mail("amara@example.org", "Your monthly digest from Mia's Feed: 1").as_bytes()
    )
    (folder / "001-amara@example.org.html").write_text("<p>hi</p>")
    (tmp_path / "digest.eml").write_text("Subject: outside the outbox\n\n")
    found = outbox.find(folder, "001-amara@example.org")
    assert found is not None and found.frequency is Frequency.MONTHLY
    for name in (
        "../digest",
        "..",
        "%2e%2e",
        "001-amara@example.org.html",
        "001-amara@example.org.eml",
        "/001-amara@example.org",
        "",
    ):
        assert outbox.find(folder, name) is None, name


def test_the_outbox_page_escapes_what_a_mail_says_and_links_mail_without_html_raw_only(
    tmp_path: Path,
) -> None:
    (tmp_path / "001-x@example.org.eml").write_bytes(
        _mail("x@example.org", "<script>alert(1)</script>", with_html=False).as_bytes()
    )
    newsroom = Newsroom(Store(create_engine("sqlite://")), [], lambda: datetime.now(UTC))
    app = Starlette(routes=pages.routes(tmp_path, "Mia's Feed <b>", newsroom))
    page = asgi_get(app, "/")
    assert page.status_code == 200
    assert "<script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "Mia&#39;s Feed &lt;b&gt;" in page.text
    assert 'href="/outbox/001-x%40example.org.eml"' in page.text
    assert asgi_get(app, "/outbox/001-x%40example.org").status_code == 404  # no HTML part
    assert asgi_get(app, "/outbox/001-x%40example.org.eml").status_code == 200


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def pool_titles() -> list[str]:
    data = resources.files("digest.samples").joinpath(demo.MORE_ARTICLES).read_bytes()
    return [entry["title"] for entry in json.loads(data)]


def test_each_minute_the_demo_publishes_an_article_and_each_digest_holds_only_what_is_new(
    tmp_path: Path,
) -> None:
    clock = Clock(datetime(2026, 11, 25, 17, 30, tzinfo=UTC))  # a Wednesday
    titles = pool_titles()
    with demo.started(tmp_path, "http://127.0.0.1:8000", clock) as started:
        dispatcher = Dispatcher(InProcess(started.services), started.newsroom.now)
        seen = 0

        def minute() -> dict[str, list[str]]:
            """Publish, then a dispatch run: which sample articles did each reader get?"""
            nonlocal seen
            clock.now += timedelta(seconds=demo.PUBLISH_SECONDS)
            asyncio.run(started.newsroom.publish())
            asyncio.run(dispatcher.run())
            caught = sorted(outbox.read(started.mail), key=lambda c: c.number)[seen:]
            seen += len(caught)
            return {
                c.recipient: [t for t in titles if t in html.unescape(c.html.read_text())]
                for c in caught
                if c.html is not None
            }

        asyncio.run(dispatcher.run())  # at start, every reader gets the dozen seeded articles
        first = outbox.read(started.mail)
        assert sorted(c.recipient for c in first) == READERS
        assert all("12 new articles · " in c.html.read_text() for c in first if c.html)
        # Each opens with its edition and a lead story with its picture, served by the demo.
        for caught in first:
            assert caught.html is not None
            shown = caught.html.read_text()
            assert re.search(r"Your (daily|weekly|monthly) digest · \w", shown)
            assert "Top story" in shown
            assert re.search(r'<img [^>]*src="http://127\.0\.0\.1:8000/pictures/\w+\.png"', shown)
        seen = len(first)

        assert minute() == {"amara@example.org": titles[:1], "dana@example.org": titles[:1]}
        for n in (2, 3, 4):
            assert minute() == {
                "amara@example.org": [titles[n - 1]],
                "dana@example.org": [titles[n - 1]],
            }
        # Five days on it is Monday 30 November: the weekly reader gets the week's five.
        assert minute() == {
            "amara@example.org": [titles[4]],
            "ben@example.org": titles[:5],
            "dana@example.org": [titles[4]],
        }
        # 1 December in Singapore: the monthly reader gets all six since the first digest.
        assert minute() == {
            "amara@example.org": [titles[5]],
            "chen@example.org": titles[:6],
            "dana@example.org": [titles[5]],
        }
        assert started.newsroom.now().date().isoformat() == "2026-12-01"
        assert started.newsroom.left == len(titles) - 6


def test_the_demo_serves_its_sample_articles_pictures_itself_and_features_a_few(
    tmp_path: Path,
) -> None:
    clock = Clock(datetime(2026, 11, 25, 17, 30, tzinfo=UTC))
    url = "http://127.0.0.1:8000"
    with demo.started(tmp_path, url, clock) as started:
        newsroom = started.newsroom
        for _ in range(newsroom.left):
            asyncio.run(newsroom.publish())
        articles = started.services.store.recent_articles(100)
        app = Starlette(routes=pages.routes(started.mail, "Mia's Feed", newsroom))
    assert len(articles) == 12 + len(pool_titles())
    pictures = {article.image_url for article in articles if article.image_url}
    # Most have a picture on the demo's own address; a few have none, and a few are picks.
    assert 5 < len([a for a in articles if a.image_url]) < len(articles)
    assert all(picture.startswith(f"{url}/pictures/") for picture in pictures)
    assert 2 < len([a for a in articles if a.featured]) < len(articles) / 4
    sizes = []
    for picture in pictures:
        answer = asgi_get(app, picture.removeprefix(url))
        assert answer.status_code == 200, picture
        assert answer.headers["content-type"] == "image/png"
        assert answer.content[12:24] == b"IHDR" + (600).to_bytes(4) + (338).to_bytes(4)
        sizes.append(len(answer.content))
    assert sum(sizes) < 200_000
    assert asgi_get(app, "/pictures/%2e%2e/articles.json").status_code == 404
    # The caught mail may show them: its pages let images load from the demo itself.
    assert "img-src 'self' data:" in pages.MAIL_HEADERS["Content-Security-Policy"]


def test_when_the_sample_articles_run_out_the_demo_publishes_no_more_and_its_calendar_stops(
    tmp_path: Path,
) -> None:
    clock = Clock(datetime(2026, 11, 25, 17, 30, tzinfo=UTC))
    with demo.started(tmp_path, "http://127.0.0.1:8000", clock) as started:
        newsroom = started.newsroom
        for _ in range(newsroom.left + 2):
            asyncio.run(newsroom.publish())
        assert newsroom.left == 0
        assert newsroom.days == len(pool_titles())
        listed = {a.title for a in started.services.store.recent_articles(100)}
        assert set(pool_titles()) <= listed
