"""End to end through the `digest` command, against a real SMTP server, on SQLite and PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from cli_fixtures import (
    CONFIRMED,
    MONDAY_0900,
    NEXT_DAY,
    POSTAL_ADDRESS,
    ROOT,
    SECRET,
    Cli,
    five_articles,
)
from db_fixtures import snapshot
from processes import run_entry_point
from samples import DIGEST_ONLY_HEADERS
from smtp_server import SmtpServer
from sqlalchemy import create_engine, select, update

from digest.models import DeliveryRow, SubscriberRow
from digest.store import Store
from digest.tokens import Tokens


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_send_mails_exactly_the_due_readers_once_with_both_parts_and_every_header(
    three_readers: Cli, smtp_server: SmtpServer
) -> None:
    result = three_readers("send", "--now", MONDAY_0900)
    assert result.code == 0, result.err
    assert result.last_line == "sent 2, skipped 0, retrying 0, failed 0"
    assert sorted(r for m in smtp_server.messages for r in m.recipients) == [
        "daily@example.org",
        "weekly@example.org",
    ]
    for received in smtp_server.messages:
        message = parsed(received.data)
        assert message.get_content_type() == "multipart/alternative"
        parts = [part.get_content_type() for part in message.iter_parts()]
        assert parts == ["text/plain", "text/html"]
        for header in DIGEST_ONLY_HEADERS:
            assert message[header], header
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["List-Unsubscribe"].startswith("<https://news.example/unsubscribe/")
        for part in message.iter_parts():
            assert isinstance(part, EmailMessage)
            body = part.get_content()
            assert "https://news.example/unsubscribe/" in body
            assert "https://news.example/preferences/" in body
            assert "Study 4: sleep and the heart" in body

    again = three_readers("send", "--now", MONDAY_0900)
    assert again.last_line == "sent 0, skipped 0, retrying 0, failed 0"
    assert len(smtp_server.messages) == 2


def test_each_reader_gets_the_edition_of_their_own_day_and_a_web_version_of_their_own(
    upgraded: Cli, smtp_server: SmtpServer, tmp_path: Path, environment: dict[str, str]
) -> None:
    # At 20:00 UTC on Monday 30 November it is already Tuesday in Auckland: the same articles
    # make two editions, each with its own subject, and each mail links its own web version.
    zones = {"kiwi@example.org": "Pacific/Auckland", "angeleno@example.org": "America/Los_Angeles"}
    for address, zone in zones.items():
        added = upgraded(
            "subscribers", "add", address, "--frequency", "daily", "--timezone", zone,
            "--confirmed", "--now", CONFIRMED,
        )  # fmt: skip
        assert added.code == 0, added.err
    assert (
        upgraded("articles", "import", str(five_articles(tmp_path)), "--now", CONFIRMED).code == 0
    )

    result = upgraded("send", "--now", "2026-11-30T20:00Z")

    assert result.last_line == "sent 2, skipped 0, retrying 0, failed 0"
    mails = {m.recipients[0]: parsed(m.data) for m in smtp_server.messages}
    assert mails["kiwi@example.org"]["Subject"] == "Your daily digest · Tuesday 1 December"
    assert mails["angeleno@example.org"]["Subject"] == "Your daily digest · Monday 30 November"
    tokens = Tokens([SECRET], timedelta(days=7))
    engine = create_engine(environment["DIGEST_DATABASE_URL"])
    for address, message in mails.items():
        with engine.connect() as conn:
            delivery, version = conn.execute(
                select(DeliveryRow.id, SubscriberRow.token_version)
                .join(SubscriberRow, SubscriberRow.id == DeliveryRow.subscriber_id)
                .where(SubscriberRow.email == address)
            ).one()
        for part in message.iter_parts():
            assert isinstance(part, EmailMessage)
            links = re.findall(r"https://news\.example/digests/([\w.-]+)", part.get_content())
            assert len(links) == 2  # at the top, and in the footer
            assert {tokens.read_digest(token) for token in links} == {(delivery, version)}
    engine.dispose()


def test_send_warns_once_on_stderr_while_no_postal_address_is_set(
    three_readers: Cli, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DIGEST_POSTAL_ADDRESS")
    unset = three_readers("send", "--now", MONDAY_0900)
    assert unset.code == 0
    assert unset.err.splitlines() == [
        "warning: postal_address (DIGEST_POSTAL_ADDRESS) is not set: the digests carry no "
        "postal address, which US law (CAN-SPAM) requires in commercial mail"
    ]
    assert len(smtp_server.messages) == 2  # once a run, however many digests
    assert all(POSTAL_ADDRESS not in m.data.decode() for m in smtp_server.messages)

    monkeypatch.setenv("DIGEST_POSTAL_ADDRESS", POSTAL_ADDRESS)
    assert three_readers("send", "--now", NEXT_DAY, "--dry-run").err == ""
    with_address = three_readers("send", "--now", NEXT_DAY)
    assert (with_address.code, with_address.err) == (0, "")
    assert len(smtp_server.messages) == 3  # the monthly reader's first, on the 1st
    for received in smtp_server.messages[2:]:
        for part in parsed(received.data).iter_parts():
            assert isinstance(part, EmailMessage)
            assert POSTAL_ADDRESS in part.get_content()  # in the footer of both parts


def test_an_article_added_after_a_send_appears_in_the_next_digest_and_no_earlier_one(
    three_readers: Cli, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    assert three_readers("send", "--now", MONDAY_0900).code == 0
    first = [parsed(m.data) for m in smtp_server.messages]
    assert (
        three_readers(
            "articles",
            "import",
            str(five_articles(tmp_path, start=10, count=1)),
            "--now",
            MONDAY_0900,
        ).code
        == 0
    )
    result = three_readers("send", "--now", NEXT_DAY)
    # The 1st of the month: the monthly reader's first digest goes out too.
    assert result.last_line == "sent 2, skipped 0, retrying 0, failed 0"
    latest = {m.recipients[0]: parsed(m.data) for m in smtp_server.messages[2:]}
    assert sorted(latest) == ["daily@example.org", "monthly@example.org"]
    daily = plain_text(latest["daily@example.org"])
    assert "Study 10" in daily
    assert "Study 4" not in daily
    assert "Study 10" in plain_text(latest["monthly@example.org"])
    assert all("Study 10" not in plain_text(message) for message in first)


def plain_text(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert isinstance(body, EmailMessage)
    text: str = body.get_content()
    return text


def test_dry_run_and_preview_change_nothing(
    three_readers: Cli, smtp_server: SmtpServer, environment: dict[str, str]
) -> None:
    before = snapshot(environment["DIGEST_DATABASE_URL"])
    dry = three_readers("send", "--now", MONDAY_0900, "--dry-run")
    assert dry.code == 0
    assert "would send 2" in dry.out
    preview = three_readers(
        "preview", "weekly@example.org", "--now", MONDAY_0900, "--format", "text"
    )
    assert preview.code == 0
    assert "Study 4: sleep and the heart" in preview.out
    assert "https://news.example/unsubscribe/" in preview.out
    # The edition the reader gets next; no web version, which is made for a sent digest only.
    assert preview.out.startswith("Mia's Feed\nYour weekly digest · 30 November – 6 December\n")
    assert "View in browser" not in preview.out
    html = three_readers("preview", "weekly@example.org", "--now", MONDAY_0900)
    assert "<html" in html.out.lower()
    assert "/digests/" not in html.out
    assert smtp_server.messages == []
    assert snapshot(environment["DIGEST_DATABASE_URL"]) == before


@pytest.mark.parametrize(
    ("status", "said"),
    [
        ("pending", "is pending confirmation: no digests until they confirm"),
        ("unsubscribed", "is unsubscribed: no digests"),
        ("bounced", "is bounced (mail to them kept failing): no digests"),
    ],
)
def test_preview_of_a_reader_who_gets_no_digests_says_so_and_renders_nothing(
    three_readers: Cli, environment: dict[str, str], status: str, said: str
) -> None:
    address = "weekly@example.org"
    if status == "pending":
        address = "new@example.org"
        assert three_readers("subscribers", "add", address, "--now", CONFIRMED).code == 0
    else:
        engine = create_engine(environment["DIGEST_DATABASE_URL"])
        with engine.begin() as conn:
            conn.execute(
                update(SubscriberRow).where(SubscriberRow.email == address).values(status=status)
            )
        engine.dispose()
    result = three_readers("preview", address, "--now", MONDAY_0900, "--format", "text")
    assert (result.code, result.out) == (0, "")
    assert result.err.strip() == f"{address} {said}"


def test_send_and_preview_at_an_instant_leave_out_articles_ingested_after_it(
    three_readers: Cli, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    later = five_articles(tmp_path, start=10, count=1)
    assert three_readers("articles", "import", str(later), "--now", NEXT_DAY).code == 0
    preview = three_readers(
        "preview", "daily@example.org", "--now", MONDAY_0900, "--format", "text"
    )
    assert "Study 4" in preview.out
    assert "Study 10" not in preview.out
    assert three_readers("send", "--now", MONDAY_0900).last_line.startswith("sent 2,")
    assert all("Study 10" not in plain_text(parsed(m.data)) for m in smtp_server.messages)
    # Not lost: the next digest, at an instant after it arrived, carries it.
    assert three_readers("send", "--now", NEXT_DAY).last_line.startswith("sent 2,")
    latest = {m.recipients[0]: plain_text(parsed(m.data)) for m in smtp_server.messages[2:]}
    assert "Study 10" in latest["daily@example.org"]
    assert "Study 4" not in latest["daily@example.org"]


def test_import_keeps_good_csv_rows_and_reports_bad_ones_by_line(
    upgraded: Cli, tmp_path: Path
) -> None:
    csv = tmp_path / "readers.csv"
    csv.write_text(
        "email,frequency,timezone\n"
        "good@example.org,weekly,Europe/Madrid\n"
        "not-an-address,weekly,UTC\n"
        "other@example.org,hourly,UTC\n"
        "third@Example.ORG,daily,\n"
    )
    result = upgraded("subscribers", "import", str(csv), "--confirmed")
    assert result.code == 1
    assert "line 3:" in result.err
    assert "line 4:" in result.err and "hourly" in result.err
    assert result.out.strip().endswith("imported 2, already subscribed 0, bad rows 2")
    listed = upgraded("subscribers", "list").out
    assert "good@example.org" in listed
    assert "third@example.org" in listed
    again = upgraded("subscribers", "import", str(csv), "--confirmed")
    assert "already subscribed 2" in again.out


def test_readers_added_and_imported_with_their_own_time_and_day_get_digests_then(
    upgraded: Cli, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    monday = "2026-11-30T00:00Z"  # Madrid is at UTC+1
    madrid = ("--frequency", "daily", "--timezone", "Europe/Madrid", "--confirmed", "--now", monday)
    early = upgraded("subscribers", "add", "early@example.org", *madrid, "--send-time", "06:00")
    assert (
        early.out.strip()
        == "added early@example.org: daily, Europe/Madrid, at 06:00, every topic, active"
    )
    assert upgraded("subscribers", "add", "site@example.org", *madrid).code == 0
    csv = tmp_path / "readers.csv"
    csv.write_text(
        "email,frequency,timezone,send_time,weekday\n"
        "late@example.org,daily,Europe/Madrid,21:00,\n"
        "sunday@example.org,weekly,UTC,07:00,Sunday\n"
        "typo@example.org,daily,UTC,25:00,\n"
    )
    imported = upgraded("subscribers", "import", str(csv), "--confirmed", "--now", monday)
    assert imported.code == 1
    assert imported.err.strip() == (
        "line 4: send time: '25:00' is not a time of day (HH:MM, 00:00 to 23:59)"
    )
    articles = str(five_articles(tmp_path))
    assert upgraded("articles", "import", articles, "--now", "2026-11-30T00:10Z").code == 0
    status = upgraded("status", "--now", "2026-11-30T00:20Z").out
    assert next_digests(status) == [
        "2026-11-30 05:00 UTC, 1 reader(s)",  # the earliest of the daily readers' own hours
        "2026-12-06 07:00 UTC, 1 reader(s)",  # Sunday's, not the site's Monday
        "no active readers",
    ]
    preview = upgraded("preview", "late@example.org", "--now", "2026-11-30T00:20Z")
    assert preview.err.splitlines()[0] == (
        "late@example.org (daily): next digest 2026-11-30 21:00 CET"
    )

    def sent_at(now: str) -> list[str]:
        before = len(smtp_server.messages)
        assert upgraded("send", "--now", now).code == 0
        return sorted(m.recipients[0] for m in smtp_server.messages[before:])

    assert sent_at("2026-11-30T04:59Z") == []
    assert sent_at("2026-11-30T05:00Z") == ["early@example.org"]  # 06:00 in Madrid
    assert sent_at("2026-11-30T07:00Z") == ["site@example.org"]  # the site's 08:00
    assert sent_at("2026-11-30T19:59Z") == []
    assert sent_at("2026-11-30T20:00Z") == ["late@example.org"]
    assert sent_at("2026-12-06T06:59Z") == []
    assert sent_at("2026-12-06T07:00Z") == ["sunday@example.org"]  # not the site's Monday


def test_import_reports_each_spelling_of_a_known_or_earlier_address_by_line_and_adds_it_once(
    three_readers: Cli, tmp_path: Path
) -> None:
    csv = tmp_path / "readers.csv"
    csv.write_text(
        "email,frequency\nMia@example.org,weekly\nMIA@example.org,daily\nDaily@Example.org,weekly\n"
    )
    result = three_readers("subscribers", "import", str(csv), "--confirmed")
    assert "line 3: duplicate of line 2" in result.err
    assert "line 4: Daily@example.org is already subscribed as daily@example.org" in result.err
    assert result.out.strip().endswith("imported 1, already subscribed 1, bad rows 1")
    listed = three_readers("subscribers", "list").out.splitlines()
    assert sorted(line.split("\t")[0] for line in listed) == [
        "Mia@example.org",
        "daily@example.org",
        "monthly@example.org",
        "weekly@example.org",
    ]


def test_every_command_that_takes_an_address_finds_the_reader_whatever_the_case(
    three_readers: Cli, smtp_server: SmtpServer, environment: dict[str, str]
) -> None:
    before = snapshot(environment["DIGEST_DATABASE_URL"])
    add = three_readers("subscribers", "add", "DAILY@example.org", "--confirmed")
    assert add.code == 2
    assert "DAILY@example.org is already subscribed as daily@example.org" in add.err
    assert snapshot(environment["DIGEST_DATABASE_URL"]) == before
    preview = three_readers("preview", "Daily@Example.ORG", "--now", MONDAY_0900)
    assert preview.code == 0, preview.err
    assert "Study 4: sleep and the heart" in preview.out
    send = three_readers("send", "--email", "DAILY@EXAMPLE.ORG", "--now", MONDAY_0900)
    assert send.last_line == "sent 1, skipped 0, retrying 0, failed 0"
    assert [m.recipients for m in smtp_server.messages] == [["daily@example.org"]]
    removed = three_readers("subscribers", "remove", "DAILY@EXAMPLE.ORG")
    assert removed.out.strip() == "removed daily@example.org and their delivery records"
    assert "daily@example.org" not in three_readers("subscribers", "list").out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("subscribers", "add", "not an address", "--frequency", "weekly"),
            "not a valid email address",
        ),
        (("subscribers", "add", "a@example.org", "--timezone", "Mars/Base"), "unknown timezone"),
        (
            ("subscribers", "add", "a@example.org", "--send-time", "24:00"),
            "send time: '24:00' is not a time of day (HH:MM, 00:00 to 23:59)",
        ),
        (("subscribers", "add", "a@example.org", "--weekday", "9"), "weekday: '9' is not a day"),
        (("subscribers", "remove", "nobody@example.org"), "no subscriber"),
        (("send", "--now", "yesterday"), "--now must be an ISO 8601 instant"),
        (("preview", "nobody@example.org"), "no subscriber"),
    ],
)
def test_bad_input_gets_one_line_exit_2_and_changes_nothing(
    three_readers: Cli, environment: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    before = snapshot(environment["DIGEST_DATABASE_URL"])
    result = three_readers(*args)
    assert result.code == 2
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert "Traceback" not in result.err
    assert snapshot(environment["DIGEST_DATABASE_URL"]) == before


def test_a_broken_feed_is_refused_by_name_and_changes_nothing(
    three_readers: Cli, environment: dict[str, str], tmp_path: Path
) -> None:
    feed = tmp_path / "broken.xml"
    feed.write_text("<?xml version='1.0'?><rss version='2.0'><channel><item><title>cut")
    before = snapshot(environment["DIGEST_DATABASE_URL"])
    result = three_readers("articles", "import", str(feed))
    assert result.code == 2
    assert "broken.xml" in result.err
    assert snapshot(environment["DIGEST_DATABASE_URL"]) == before


def test_a_bad_setting_stops_with_one_line_naming_the_key(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIGEST_SMTP_PORT", "not-a-port")
    result = cli("status")
    assert result.code == 2
    assert "DIGEST_SMTP_PORT" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_commands_on_a_database_without_schema_say_to_run_db_upgrade(cli: Cli) -> None:
    result = cli("status")
    assert result.code == 2
    assert "digest db upgrade" in result.err


def test_db_upgrade_twice_is_harmless(upgraded: Cli) -> None:
    assert upgraded("db", "upgrade").code == 0


def test_sending_without_a_secret_key_is_refused(
    upgraded: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DIGEST_SECRET_KEY")
    result = upgraded("send")
    assert result.code == 2
    assert "DIGEST_SECRET_KEY" in result.err


def test_a_dry_run_needs_no_sender_but_a_real_send_without_one_is_refused_in_one_line(
    three_readers: Cli,
    smtp_server: SmtpServer,
    environment: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DIGEST_SENDER")
    before = snapshot(environment["DIGEST_DATABASE_URL"])

    dry = three_readers("send", "--now", MONDAY_0900, "--dry-run")
    assert (dry.code, dry.err) == (0, "")
    assert "would send 2" in dry.last_line

    real = three_readers("send", "--now", MONDAY_0900)
    assert real.code == 2
    (line,) = real.err.strip().splitlines()
    assert "DIGEST_SENDER" in line
    assert smtp_server.messages == []
    assert snapshot(environment["DIGEST_DATABASE_URL"]) == before


def test_status_shows_readers_next_slots_and_the_last_run(three_readers: Cli) -> None:
    three_readers("send", "--now", MONDAY_0900)
    text = three_readers("status", "--now", MONDAY_0900).out
    assert "weekly" in text and "2026-12-07 08:00 UTC" in text
    assert "sent 2, skipped 0, retrying 0, failed 0" in text


def next_digests(status: str) -> list[str]:
    """The lines of `digest status` under "Next digests", one per frequency."""
    lines = status.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("Next")) + 1
    return [line.split(None, 1)[1] for line in lines[start : start + 3]]


def test_status_says_who_is_due_now_rather_than_their_next_slot(three_readers: Cli) -> None:
    status = three_readers("status", "--now", MONDAY_0900).out
    assert next_digests(status) == [
        "due now, 1 reader(s)",
        "due now, 1 reader(s)",
        "2026-12-01 08:00 UTC, 1 reader(s)",
    ]


def test_after_a_send_at_a_far_future_instant_status_and_preview_name_the_slot_after_it(
    three_readers: Cli,
) -> None:
    # The send anchors every reader at its slot: none gets a digest before the slot after it.
    assert three_readers("send", "--now", "2030-06-03T09:00Z").last_line.startswith("sent 3,")
    after = three_readers("status", "--now", MONDAY_0900).out
    assert next_digests(after) == [
        "2030-06-04 08:00 UTC, 1 reader(s)",
        "2030-06-10 08:00 UTC, 1 reader(s)",
        "2030-07-01 08:00 UTC, 1 reader(s)",
    ]
    preview = three_readers("preview", "daily@example.org", "--now", MONDAY_0900)
    assert preview.err.splitlines() == [
        "daily@example.org (daily): next digest 2030-06-04 08:00 UTC",
        "nothing new for daily@example.org since their last digest",
    ]


def test_remove_erases_the_reader(three_readers: Cli) -> None:
    three_readers("send", "--now", MONDAY_0900)
    assert three_readers("subscribers", "remove", "daily@example.org").code == 0
    assert "daily@example.org" not in three_readers("subscribers", "list").out


def test_the_console_script_runs_as_python_dash_m(environment: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "digest", "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0
    for command in ("send", "preview", "status", "subscribers", "articles", "db"):
        assert command in done.stdout


def test_a_refused_recipient_fails_only_that_digest_and_exits_1(
    three_readers: Cli, smtp_server: SmtpServer
) -> None:
    smtp_server.fail("rcpt", 550, to={"weekly@example.org"})
    result = three_readers("send", "--now", MONDAY_0900)
    assert result.code == 1
    assert result.last_line == "sent 1, skipped 0, retrying 0, failed 1"
    assert [m.recipients for m in smtp_server.messages] == [["daily@example.org"]]
    (line,) = result.err.strip().splitlines()
    assert "WARNING digest.dispatch: digest 2026-W49 to reader" in line
    assert "(w***@example.org), attempt 1, permanent failure: 550" in line


def test_log_format_json_writes_one_json_object_a_line_without_secrets(
    three_readers: Cli, smtp_server: SmtpServer
) -> None:
    smtp_server.fail("rcpt", 451, to={"weekly@example.org"})
    result = three_readers("--log-format", "json", "send", "--now", MONDAY_0900)
    (line,) = result.err.strip().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "warning"
    assert entry["logger"] == "digest.dispatch"
    assert "transient failure: 451" in entry["message"]
    assert "weekly@example.org" not in line
    assert SECRET not in result.err


def test_a_busy_server_leaves_digests_to_retry_and_a_later_run_sends_them(
    three_readers: Cli, smtp_server: SmtpServer
) -> None:
    smtp_server.fail("data", 451, times=2)
    first = three_readers("send", "--now", MONDAY_0900)
    assert first.code == 0
    assert first.last_line == "sent 0, skipped 0, retrying 2, failed 0"
    later = three_readers("send", "--now", "2026-11-30T09:05Z")
    assert later.last_line == "sent 2, skipped 0, retrying 0, failed 0"
    assert len({m.message_id for m in smtp_server.messages}) == 2


def test_a_refused_sender_stops_the_run_blames_no_reader_and_exits_2(
    three_readers: Cli, smtp_server: SmtpServer
) -> None:
    smtp_server.fail("mail", 553, times=2)
    result = three_readers("send", "--now", MONDAY_0900)
    assert result.code == 2
    assert "refused our settings" in result.err
    assert len(result.err.strip().splitlines()) == 1
    # Once the relay is fixed, every reader gets their digest: nobody was failed or bounced.
    fixed = three_readers("send", "--now", MONDAY_0900)
    assert fixed.last_line == "sent 2, skipped 0, retrying 0, failed 0"


def test_articles_add_then_the_same_url_again_updates_instead_of_duplicating(upgraded: Cli) -> None:
    url = "https://miasfeed.example/articles/walking"
    first = upgraded(
        "articles", "add", "--url", url, "--title", "Walk more", "--summary", "Ten minutes a day."
    )
    assert (first.code, first.out.strip()) == (0, f"added {url}")
    second = upgraded(
        "articles", "add", "--url", url, "--title", "Walk more, daily", "--summary", "Ten minutes.",
        "--category", "Fitness", "--reading-minutes", "3",
    )  # fmt: skip
    assert second.out.strip() == f"updated {url}"
    listed = upgraded("articles", "list").out.strip().splitlines()
    assert len(listed) == 1
    assert "\tFitness\t3 min\tWalk more, daily\t" in listed[0]


def test_an_editors_pick_from_articles_add_featured_stays_one_when_a_feed_brings_it_again(
    tmp_path: Path,
) -> None:
    database = f"sqlite:///{tmp_path / 'digest.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")} | {
        "DIGEST_DATABASE_URL": database,
        "DIGEST_FEATURED_TAGS": "Editor's pick, Breaking",
    }
    picked, tagged, plain = (f"https://miasfeed.example/articles/{n}" for n in "abc")
    assert run_entry_point("db", "upgrade", env=env).code == 0
    added = run_entry_point(
        *("articles", "add", "--url", picked, "--title", "A pick", "--summary", "Read this."),
        *("--featured", "--now", CONFIRMED),
        env=env,
    )
    assert added.code == 0, added.err
    feed = tmp_path / "feed.json"
    feed.write_text(
        json.dumps(
            [
                {"url": picked, "title": "A pick", "category": "Nutrition"},
                {"url": tagged, "title": "Tagged", "category": "  breaking "},
                {"url": plain, "title": "Plain", "category": "Nutrition"},
            ]
        )
    )
    imported = run_entry_point("articles", "import", str(feed), "--now", MONDAY_0900, env=env)
    assert imported.out.strip() == "added 2, updated 1, skipped 0", imported.err
    featured = {a.url: a.featured for a in Store(create_engine(database)).recent_articles(10)}
    assert featured == {picked: True, tagged: True, plain: False}


def test_articles_add_refuses_a_non_web_url_with_one_line(upgraded: Cli) -> None:
    result = upgraded(
        "articles", "add", "--url", "javascript:alert(1)", "--title", "x", "--summary", "y"
    )
    assert result.code == 2
    assert "url must be http or https" in result.err
    assert upgraded("articles", "list").out.strip() == ""


def test_a_paused_reader_gets_nothing_until_the_date_then_one_digest_with_what_they_missed(
    three_readers: Cli, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    paused = three_readers(
        "subscribers", "pause", "DAILY@example.org", "--until", "2026-12-03", "--now", MONDAY_0900
    )
    assert (paused.code, paused.out) == (
        0,
        "daily@example.org: paused until 2026-12-03 00:00 UTC\n",
    )
    listed = three_readers("subscribers", "list", "--now", MONDAY_0900).out.splitlines()
    assert [line.endswith("\tpaused until 2026-12-03 00:00 UTC") for line in listed] == [
        True,
        False,
        False,
    ]
    preview = three_readers("preview", "daily@example.org", "--now", MONDAY_0900)
    assert preview.err.splitlines()[0] == (
        "daily@example.org (daily, paused until 2026-12-03 00:00 UTC): "
        "next digest 2026-12-03 08:00 UTC"
    )
    status = three_readers("status", "--now", MONDAY_0900).out
    assert "  1 active reader(s) paused" in status
    assert next_digests(status)[0] == "none soon: every reader is paused"
    # Monday and Tuesday: the weekly and the monthly reader get theirs, the daily one nothing.
    assert three_readers("send", "--now", MONDAY_0900).last_line.startswith("sent 1, skipped 0")
    more = five_articles(tmp_path, start=5)
    assert three_readers("articles", "import", str(more), "--now", MONDAY_0900).code == 0
    assert three_readers("send", "--now", NEXT_DAY).last_line.startswith("sent 1, skipped 0")
    assert "daily@example.org" not in smtp_server.recipients
    # Thursday 3 December: one digest, with the ten articles of both imports.
    assert three_readers("send", "--now", "2026-12-03T09:00Z").last_line.startswith("sent 1,")
    assert three_readers("send", "--now", "2026-12-03T10:00Z").last_line.startswith("sent 0,")
    (catch_up,) = [m for m in smtp_server.messages if m.recipients == ["daily@example.org"]]
    text = parsed(catch_up.data).get_body(("plain",))
    assert text is not None
    assert all(f"Study {n}:" in text.get_content() for n in range(10))
    assert "paused" not in three_readers("status", "--now", "2026-12-03T10:00Z").out


def test_the_catch_up_after_a_pause_keeps_to_the_cap_and_counts_the_rest(
    three_readers: Cli, smtp_server: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIGEST_MAX_ARTICLES", "4")
    pause = ("subscribers", "pause", "daily@example.org", "--until", "2026-12-03")
    assert three_readers(*pause, "--now", MONDAY_0900).code == 0
    more = five_articles(tmp_path, start=5)
    assert three_readers("articles", "import", str(more), "--now", MONDAY_0900).code == 0
    assert three_readers("send", "--now", "2026-12-03T09:00Z").code == 0
    (catch_up,) = [m for m in smtp_server.messages if m.recipients == ["daily@example.org"]]
    text = parsed(catch_up.data).get_body(("plain",))
    assert text is not None
    assert sum(f"Study {n}:" in text.get_content() for n in range(10)) == 4
    assert "and 6 more on the site" in text.get_content()


def test_resume_ends_a_pause_at_once(three_readers: Cli) -> None:
    three_readers("subscribers", "pause", "daily@example.org", "--until", "2027-01-01T12:00Z")
    resumed = three_readers("subscribers", "resume", "daily@example.org", "--now", MONDAY_0900)
    assert (resumed.code, resumed.out) == (0, "daily@example.org: not paused\n")
    assert three_readers("send", "--now", MONDAY_0900).last_line.startswith("sent 2,")


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (
            ("daily@example.org", "--until", "2026-11-30"),
            "error: --until must be later than now, got 2026-11-30 00:00 UTC",
        ),
        (
            ("daily@example.org", "--until", "next week"),
            "error: --until must be an ISO 8601 date or instant like 2026-12-09, got 'next week'",
        ),
        (
            ("nobody@example.org", "--until", "2026-12-09"),
            "error: no subscriber with the address nobody@example.org",
        ),
    ],
)
def test_a_pause_in_the_past_or_of_an_unknown_reader_is_one_line_and_exit_2(
    three_readers: Cli, arguments: tuple[str, ...], error: str
) -> None:
    result = three_readers("subscribers", "pause", *arguments, "--now", MONDAY_0900)
    assert (result.code, result.out, result.err) == (2, "", error + "\n")
