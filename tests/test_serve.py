"""`digest serve` as a real process: sends what is due at once, answers /healthz and /metrics, stops on SIGTERM."""

from __future__ import annotations

import email
import email.policy
import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from db_fixtures import seed
from processes import (
    alive,
    deliveries,
    digest,
    digest_env,
    healthz,
    running_daemon,
    sending_process,
    stop_cleanly,
    wait_for,
)
from smtp_server import SmtpServer
from sqlalchemy import create_engine, select

from digest.domain import DeliveryStatus, Frequency
from digest.models import DeliveryRow
from digest.store import Store

DAILY, WEEKLY, MONTHLY = Frequency.DAILY, Frequency.WEEKLY, Frequency.MONTHLY


@pytest.fixture
def daemon_env(database_url: str, smtp_server: SmtpServer) -> dict[str, str]:
    """A daily, a weekly and a monthly reader, due now on the real clock as the daemon sees it:
    confirmed long ago, with news since."""
    now = datetime.now(UTC)
    readers = {"r0@example.org": DAILY, "r1@example.org": WEEKLY, "r2@example.org": MONTHLY}
    seed(database_url, readers, [0], confirmed_at=now - timedelta(days=40), imported_at=now)
    return digest_env(database_url, smtp_server, DIGEST_DISPATCH_INTERVAL_SECONDS="1")


@pytest.fixture
def daemon(daemon_env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], int]]:
    with running_daemon(daemon_env) as started:
        yield started


def last_run(port: int) -> object:
    return healthz(port)[1]["scheduler"]["last_run"]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text: str = response.read().decode()
        return text


def lease_holders(database_url: str) -> set[int]:
    """The processes holding the deliveries being sent now (a lease owner is host:pid:nonce)."""
    engine = create_engine(database_url)
    sending = select(DeliveryRow.lease_owner).where(
        DeliveryRow.status == DeliveryStatus.SENDING.value
    )
    try:
        with engine.connect() as conn:
            return {int(str(owner).split(":")[1]) for owner in conn.scalars(sending)}
    finally:
        engine.dispose()


def answers(port: int) -> bool:
    try:
        healthz(port)
    except OSError:
        return False
    return True


def test_the_daemon_sends_due_digests_at_once_reports_them_and_stops_cleanly_on_sigterm(
    daemon: tuple[subprocess.Popen[str], int], smtp_server: SmtpServer
) -> None:
    process, port = daemon
    wait_for(lambda: len(smtp_server.messages) >= 3, "three digests")
    wait_for(lambda: answers(port), "/healthz")
    status, body = healthz(port)
    assert status == 200
    assert body["database"] == "ok"
    scheduler = body["scheduler"]
    assert isinstance(scheduler, dict) and scheduler["running"] is True
    metrics = scrape(port)
    for frequency in ("daily", "weekly", "monthly"):
        assert f'digest_deliveries{{frequency="{frequency}",status="sent"}} 1.0' in metrics
    assert "digest_due_backlog 0.0" in metrics
    assert "digest_last_run_timestamp_seconds" in metrics
    stop_cleanly(process)
    # Several scheduled runs went by: still exactly one digest per reader.
    assert sorted(r for m in smtp_server.messages for r in m.recipients) == [
        "r0@example.org",
        "r1@example.org",
        "r2@example.org",
    ]


def test_sigterm_mid_batch_exits_0_and_a_restart_delivers_the_rest_once_each(
    daemon_env: dict[str, str], database_url: str, smtp_server: SmtpServer
) -> None:
    now = datetime.now(UTC)
    readers = [f"batch{n}@example.org" for n in range(12)]
    batch = dict.fromkeys(readers, WEEKLY)
    seed(database_url, batch, [1], confirmed_at=now - timedelta(days=40), imported_at=now)
    env = daemon_env | {"DIGEST_BATCH_SIZE": "4", "DIGEST_SMTP_CONNECTIONS": "1"}
    smtp_server.slow("data", 0.15)
    with running_daemon(env) as (process, _):
        wait_for(lambda: len(smtp_server.messages) >= 2, "the first digests")
        stop_cleanly(process)
    stopped_at = len(smtp_server.messages)
    assert stopped_at < len(readers) + 3  # it stopped claiming before the end
    with running_daemon(env) as (restarted, _):
        wait_for(lambda: len(smtp_server.messages) >= len(readers) + 3, "the rest")
        stop_cleanly(restarted)
    delivered = sorted(r for m in smtp_server.messages for r in m.recipients)
    assert delivered == sorted([*readers, "r0@example.org", "r1@example.org", "r2@example.org"])


def test_the_daemon_polls_its_feeds_and_logs_json_lines_without_secrets_and_one_warning(
    daemon_env: dict[str, str], smtp_server: SmtpServer, tmp_path: Path
) -> None:
    feed = tmp_path / "site-feed.json"
    # A pick by its category, with a picture on the site's own origin, kept though it is http.
    picture = "http://miasfeed.example/new.jpg"
    fresh = {"url": "https://miasfeed.example/new", "title": "Fresh", "summary": "."}
    feed.write_text(json.dumps([fresh | {"category": "Breaking", "image": picture}]))
    missing = tmp_path / "gone.xml"
    env = daemon_env | {
        "DIGEST_FEEDS": f"{feed},{missing}",
        "DIGEST_FEATURED_TAGS": "breaking",
        "DIGEST_SITE_URL": "http://miasfeed.example",
    }
    log = tmp_path / "daemon.log"
    with running_daemon(env, "--log-format", "json", log=log) as (process, port):
        wait_for(lambda: "Fresh" in digest(env, "articles", "list").stdout, "the feed's article")
        wait_for(lambda: answers(port), "/healthz")
        wait_for(
            lambda: f'digest_feed_failing{{feed="{missing}"}} 1.0' in scrape(port),
            "the failing feed in /metrics",
        )
        assert f'digest_feed_poll_errors_total{{feed="{feed}"}} 0.0' in scrape(port)
        wait_for(lambda: len(smtp_server.messages) >= 3, "the digests")
        stop_cleanly(process)
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    messages = [entry["message"] for entry in entries]
    assert any(m.startswith("run: sent 3, skipped 0") for m in messages)
    assert any(m.startswith(f"feed {feed}: added 1, updated 0") for m in messages)
    assert any(m.startswith(f"feed {missing} failed, trying again next poll") for m in messages)
    assert daemon_env["DIGEST_SECRET_KEY"] not in log.read_text()
    assert "feeds" in digest(env, "status").stdout.lower()
    store = Store(create_engine(env["DIGEST_DATABASE_URL"]))
    polled = {a.url: (a.image_url, a.featured) for a in store.recent_articles(10)}
    assert polled[fresh["url"]] == (picture, True)
    store.engine.dispose()
    # No DIGEST_POSTAL_ADDRESS: said once when the daemon starts, not once per run.
    warned = [e for e in entries if "(DIGEST_POSTAL_ADDRESS) is not set" in e["message"]]
    assert [(e["level"], e["logger"]) for e in warned] == [("warning", "digest.daemon")]


def test_a_second_signal_exits_at_once_without_waiting_for_the_batch(
    daemon_env: dict[str, str], smtp_server: SmtpServer, tmp_path: Path
) -> None:
    smtp_server.slow("data", 20)  # longer than this test waits
    log = tmp_path / "daemon.log"
    with running_daemon(daemon_env, log=log) as (process, port):
        wait_for(lambda: answers(port), "/healthz")

        def dispatching() -> bool:
            scheduler = healthz(port)[1]["scheduler"]
            return isinstance(scheduler, dict) and scheduler["dispatching"] is True

        wait_for(dispatching, "a batch in flight")
        sender = sending_process(process.pid)
        assert sender is not None
        process.send_signal(signal.SIGTERM)
        wait_for(lambda: "Waiting for application shutdown" in log.read_text(), "a graceful stop")
        assert process.poll() is None  # still waiting for the batch in flight
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 128 + signal.SIGINT
        wait_for(lambda: not alive(sender), "the sending process to leave with the daemon", 5)
    assert smtp_server.messages == []


def test_the_daemon_sends_from_a_process_of_its_own_and_keeps_it_from_run_to_run(
    daemon_env: dict[str, str], database_url: str, smtp_server: SmtpServer
) -> None:
    smtp_server.slow("data", 0.5)
    with running_daemon(daemon_env) as (process, port):
        wait_for(lambda: bool(lease_holders(database_url)), "a batch in flight")
        sender = sending_process(process.pid)
        assert sender is not None and sender != process.pid
        assert lease_holders(database_url) == {sender}  # the claims are the child's
        assert healthz(port)[0] == 200  # while the pages stay with the daemon
        wait_for(lambda: len(smtp_server.messages) == 3, "three digests")
        first = last_run(port)
        wait_for(lambda: last_run(port) != first, "another run")
        assert sending_process(process.pid) == sender  # one process for every run
        stop_cleanly(process)
    assert not alive(sender)


def test_a_sending_process_that_dies_mid_run_is_one_logged_line_and_the_next_run_starts_another(
    daemon_env: dict[str, str], database_url: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    readers = [f"batch{n}@example.org" for n in range(12)]
    seed(database_url, dict.fromkeys(readers, WEEKLY), [1], imported_at=now,
         confirmed_at=now - timedelta(days=40))  # fmt: skip
    env = daemon_env | {"DIGEST_BATCH_SIZE": "2", "DIGEST_SMTP_CONNECTIONS": "1"}
    smtp_server.slow("data", 0.2)
    log = tmp_path / "daemon.log"
    with running_daemon(env, log=log) as (process, port):
        wait_for(lambda: len(smtp_server.messages) >= 2, "the first digests")
        killed = sending_process(process.pid)
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: "the sending process ended in the middle of a run" in log.read_text(),
                 "the run's failure logged")  # fmt: skip
        wait_for(lambda: sending_process(process.pid) not in (None, killed), "another process")
        assert healthz(port)[0] == 200

        # What the dead process had claimed waits for its lease; everything else goes out.
        def only_the_dead_ones_claims_are_left() -> bool:
            left = {status for _, status in deliveries(database_url)} - {DeliveryStatus.SENT}
            return left <= {DeliveryStatus.SENDING} and lease_holders(database_url) <= {killed}

        wait_for(only_the_dead_ones_claims_are_left, "the others")
        stop_cleanly(process)
    failures = [line for line in log.read_text().splitlines() if "ended in the middle" in line]
    assert len(failures) == 1 and "Traceback" not in log.read_text()
    later = (now + timedelta(hours=1)).isoformat()
    assert digest(env, "send", "--now", later).returncode == 0  # the lease has run out
    delivered = {r for m in smtp_server.messages for r in m.recipients}
    assert delivered == {*readers, "r0@example.org", "r1@example.org", "r2@example.org"}


def test_the_unsubscribe_link_of_a_sent_digest_opens_a_page_and_one_click_unsubscribes(
    daemon: tuple[subprocess.Popen[str], int], smtp_server: SmtpServer, daemon_env: dict[str, str]
) -> None:
    process, port = daemon
    wait_for(lambda: len(smtp_server.messages) >= 3, "three digests")
    received = next(m for m in smtp_server.messages if m.recipients == ["r1@example.org"])
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    link = str(message["List-Unsubscribe"]).strip("<>")
    assert link.startswith(f"http://127.0.0.1:{port}/unsubscribe/")
    with urllib.request.urlopen(link, timeout=5) as page:
        assert page.status == 200
        assert "r***@example.org" in page.read().decode()
    listed = digest(daemon_env, "subscribers", "list", "--status", "active").stdout
    assert "r1@example.org" in listed  # the page changed nothing
    one_click = urllib.request.Request(link, data=b"List-Unsubscribe=One-Click", method="POST")
    with urllib.request.urlopen(one_click, timeout=5) as answer:
        assert answer.status == 200
    gone = digest(daemon_env, "subscribers", "list", "--status", "unsubscribed").stdout
    assert "r1@example.org" in gone
    stop_cleanly(process)
