"""Issue 16: what comes back after sending. Each digest's envelope sender names its delivery
(VERP), its List-Unsubscribe carries a mailto: form naming its reader, and it has Gmail's
Feedback-ID; checked on the wire, through the entry point, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import inbound_samples as samples
import pytest
from cli_fixtures import MONDAY_0900, SECRET, Cli, Result, five_articles
from db_fixtures import snapshot
from inbound_samples import Sent
from smtp_server import SmtpServer
from test_cli import parsed

from digest import database
from digest.addresses import tag_of
from digest.domain import Frequency, Subscriber, SubscriberStatus
from digest.inbound import Mailboxes
from digest.store import Store
from digest.tokens import Tokens

BOUNCES = "bounces@mail.miasfeed.example"
UNSUBSCRIBE = "unsubscribe@mail.miasfeed.example"
CONFIRM_AGE = timedelta(days=7)


@pytest.fixture
def returning(three_readers: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    """Three readers, five articles, and the bounce and unsubscribe addresses set."""
    monkeypatch.setenv("DIGEST_BOUNCE_ADDRESS", BOUNCES)
    monkeypatch.setenv("DIGEST_UNSUBSCRIBE_ADDRESS", UNSUBSCRIBE)
    assert three_readers("articles", "import", str(five_articles(tmp_path))).code == 0
    return three_readers


def test_each_digest_goes_out_from_a_return_path_that_names_its_delivery_and_no_other(
    returning: Cli, smtp_server: SmtpServer, database_url: str
) -> None:
    assert returning("send", "--now", MONDAY_0900).last_line.startswith("sent 2,")
    engine = database.connect(database_url)
    with engine.connect() as conn:
        deliveries = dict(
            (email, delivery)
            for email, delivery in conn.exec_driver_sql(
                "SELECT s.email, d.id FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id"
            )
        )
    engine.dispose()
    signed = Tokens([SECRET], CONFIRM_AGE)
    for received in smtp_server.messages:
        tag = tag_of(received.sender, BOUNCES)
        assert tag is not None, received.sender
        assert signed.read_return_path(tag) == deliveries[received.recipients[0]]
    assert len({m.sender for m in smtp_server.messages}) == 2  # one return path a digest


def test_each_digest_offers_a_mailto_unsubscribe_naming_its_reader_and_a_feedback_id(
    returning: Cli, smtp_server: SmtpServer, database_url: str
) -> None:
    assert returning("send", "--now", MONDAY_0900).code == 0
    engine = database.connect(database_url)
    store = Store(engine)
    signed = Tokens([SECRET], CONFIRM_AGE)
    for received in smtp_server.messages:
        message = parsed(received.data)
        reader = store.find_subscriber(received.recipients[0])
        https, mailto = (
            link.strip().strip("<>") for link in message["List-Unsubscribe"].split(",")
        )
        assert https.startswith("https://news.example/unsubscribe/")
        address, _, query = mailto.removeprefix("mailto:").partition("?")
        assert query == "subject=unsubscribe"
        tag = tag_of(address, UNSUBSCRIBE)
        assert tag is not None
        subject = signed.read_mailto(tag)
        assert (subject.subscriber_id, subject.token_version) == (reader.id, reader.token_version)
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        frequency = reader.frequency.value
        key = "2026-W49" if frequency == "weekly" else "2026-11-30"
        assert message["Feedback-ID"] == f"{key}:{frequency}:digest:digest.miasfeed.example"
    engine.dispose()


def test_without_the_addresses_a_digest_goes_out_from_the_from_address_with_the_https_link_only(
    three_readers: Cli, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    assert three_readers("articles", "import", str(five_articles(tmp_path))).code == 0
    assert three_readers("send", "--now", MONDAY_0900).code == 0
    for received in smtp_server.messages:
        assert received.sender == "digest@miasfeed.example"
        assert "mailto:" not in parsed(received.data)["List-Unsubscribe"]


@pytest.mark.parametrize("bad", ["bounces+x@mail.example.org", "not an address"])
def test_a_bounce_address_with_a_tag_of_its_own_or_no_address_is_one_line_and_exit_2(
    upgraded: Cli, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("DIGEST_BOUNCE_ADDRESS", bad)
    result = upgraded("send", "--now", MONDAY_0900)
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1
    assert "DIGEST_BOUNCE_ADDRESS" in result.err


# -- what comes back, read from files (digest inbound import) ---------------------------------


def sent_digests(cli: Cli, smtp_server: SmtpServer) -> dict[str, Sent]:
    """Send Monday's digests (the daily and the weekly reader's), and what each looked like."""
    assert cli("send", "--now", MONDAY_0900).last_line.startswith("sent 2,")
    return {
        received.recipients[0]: Sent(
            received.sender, received.recipients[0], parsed(received.data)["Message-ID"]
        )
        for received in smtp_server.messages
    }


def take(cli: Cli, tmp_path: Path, *mails: bytes, name: str = "inbound") -> Result:
    paths = []
    for n, mail in enumerate(mails):
        path = tmp_path / f"{name}-{n}.eml"
        path.write_bytes(mail)
        paths.append(str(path))
    return cli("inbound", "import", *paths, "--now", MONDAY_0900)


def reader(database_url: str, email: str) -> Subscriber:
    engine = database.connect(database_url)
    try:
        return Store(engine).find_subscriber(email)
    finally:
        engine.dispose()


@pytest.mark.parametrize("shape", [samples.rfc3464, samples.gmail, samples.outlook, samples.yahoo])
def test_a_bounce_in_each_shape_the_big_receivers_send_counts_one_bounce_for_its_reader(
    returning: Cli,
    smtp_server: SmtpServer,
    tmp_path: Path,
    database_url: str,
    shape: Callable[[Sent], bytes],
) -> None:
    sent = sent_digests(returning, smtp_server)["weekly@example.org"]
    result = take(returning, tmp_path, shape(sent))
    assert result.code == 0, result.err
    assert result.last_line == (
        "read 1 mail(s): bounce 1, delay 0, complaint 0, unsubscribe 0; repeated 0, unknown 0"
    )
    assert reader(database_url, "weekly@example.org").bounces == 1
    assert reader(database_url, "daily@example.org").bounces == 0  # the reader beside: untouched


def test_a_delay_is_recorded_and_changes_no_reader(
    returning: Cli, smtp_server: SmtpServer, tmp_path: Path, database_url: str
) -> None:
    sent = sent_digests(returning, smtp_server)["weekly@example.org"]
    before = snapshot(database_url)
    result = take(returning, tmp_path, samples.delay(sent))
    assert "delay 1" in result.last_line
    after = snapshot(database_url)
    assert after["subscribers"] == before["subscribers"]
    assert len(after["notices"]) == 1


def test_an_arf_complaint_unsubscribes_at_once_and_marks_the_reader_complained(
    returning: Cli, smtp_server: SmtpServer, tmp_path: Path, database_url: str
) -> None:
    sent = sent_digests(returning, smtp_server)["daily@example.org"]
    # A feedback loop reports to its own address, untagged: the quoted Return-Path names the digest.
    result = take(returning, tmp_path, samples.arf(sent, "fbl@miasfeed.example"))
    assert "complaint 1" in result.last_line, result.out + result.err
    complained = reader(database_url, "daily@example.org")
    assert complained.status is SubscriberStatus.COMPLAINED
    listed = returning("subscribers", "list", "--status", "complained").out.split()
    assert listed[:3] == ["daily@example.org", "daily", "complained"]
    # The next day's run sends them nothing.
    assert returning("send", "--now", "2026-12-01T09:00Z").code == 0
    assert [m.recipients for m in smtp_server.messages].count(["daily@example.org"]) == 1


def test_a_mail_to_the_mailto_address_unsubscribes_its_reader_and_no_other(
    returning: Cli, smtp_server: SmtpServer, tmp_path: Path, database_url: str
) -> None:
    sent_digests(returning, smtp_server)
    message = parsed(smtp_server.messages[0].data)
    mailto = message["List-Unsubscribe"].split(",")[1].strip().strip("<>")
    address = mailto.removeprefix("mailto:").partition("?")[0]
    recipient = smtp_server.messages[0].recipients[0]
    result = take(returning, tmp_path, samples.mailto_unsubscribe(recipient, address))
    assert "unsubscribe 1" in result.last_line
    assert reader(database_url, recipient).status is SubscriberStatus.UNSUBSCRIBED
    others = {"daily@example.org", "weekly@example.org", "monthly@example.org"} - {recipient}
    assert all(reader(database_url, other).status is SubscriberStatus.ACTIVE for other in others)


def test_an_auto_reply_a_broken_mail_and_forged_tags_change_nothing(
    returning: Cli, smtp_server: SmtpServer, tmp_path: Path, database_url: str
) -> None:
    sent = sent_digests(returning, smtp_server)["weekly@example.org"]
    forged_return_path = replace(sent, return_path=f"bounces+b1-{'0' * 20}@mail.miasfeed.example")
    another_reader = samples.mailto_unsubscribe(
        "weekly@example.org", f"unsubscribe+u1-1-{'f' * 20}@mail.miasfeed.example"
    )
    broken = b'Content-Type: multipart/report; boundary="x"\r\n\r\n--x\r\nContent-Type: message/delivery-status\r\n\r\n\xff\xfe--'
    before = snapshot(database_url)
    result = take(
        returning,
        tmp_path,
        samples.auto_reply(sent),
        broken,
        samples.rfc3464(
            replace(
                forged_return_path,
                message_id="<not-ours@example.org>",
                recipient="nobody@example.net",
            )
        ),
        another_reader,
    )
    assert result.code == 0, result.err
    assert result.last_line.startswith(
        "read 4 mail(s): bounce 0, delay 0, complaint 0, unsubscribe 0"
    )
    assert snapshot(database_url) == before


def test_a_mail_over_the_inbound_size_cap_is_reported_by_place_and_not_read(
    returning: Cli,
    smtp_server: SmtpServer,
    tmp_path: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = sent_digests(returning, smtp_server)["weekly@example.org"]
    monkeypatch.setenv("DIGEST_INBOUND_MAX_BYTES", "10000")
    big = samples.rfc3464(sent) + b"y" * 10_000  # a long epilogue
    result = take(returning, tmp_path, samples.rfc3464(sent), big)
    assert result.code == 1
    assert result.err.splitlines() == [f"{tmp_path / 'inbound-1.eml'}: over 10,000 bytes: not read"]
    assert "read 2 mail(s): bounce 1," in result.last_line
    assert reader(database_url, "weekly@example.org").bounces == 1


def test_a_notice_told_twice_counts_once(
    returning: Cli, smtp_server: SmtpServer, tmp_path: Path, database_url: str
) -> None:
    sent = sent_digests(returning, smtp_server)["weekly@example.org"]
    first = take(returning, tmp_path, samples.rfc3464(sent), samples.rfc3464(sent))
    assert "bounce 1" in first.last_line and "repeated 1" in first.last_line
    again = take(returning, tmp_path, samples.gmail(sent), name="again")
    assert "bounce 0" in again.last_line and "repeated 1" in again.last_line
    assert reader(database_url, "weekly@example.org").bounces == 1


def test_an_mbox_of_many_mails_is_read_mail_by_mail(
    returning: Cli, smtp_server: SmtpServer, tmp_path: Path, database_url: str
) -> None:
    digests = sent_digests(returning, smtp_server)
    box = tmp_path / "bounces.mbox"
    box.write_bytes(
        samples.mbox(
            samples.rfc3464(digests["weekly@example.org"]),
            samples.outlook(digests["daily@example.org"]),
        )
    )
    result = returning("inbound", "import", str(box), "--now", MONDAY_0900)
    assert result.last_line.startswith("read 2 mail(s): bounce 2,"), result.out + result.err
    assert reader(database_url, "daily@example.org").bounces == 1


def test_without_a_tag_a_bounce_finds_its_digest_by_the_quoted_message_id(
    returning: Cli, smtp_server: SmtpServer, tmp_path: Path, database_url: str
) -> None:
    sent = sent_digests(returning, smtp_server)["weekly@example.org"]
    untagged = replace(sent, return_path="digest@miasfeed.example")
    result = take(returning, tmp_path, samples.rfc3464(untagged))
    assert "bounce 1" in result.last_line
    assert reader(database_url, "weekly@example.org").bounces == 1


def test_a_file_that_cannot_be_read_is_one_line_and_exit_2(returning: Cli, tmp_path: Path) -> None:
    result = returning("inbound", "import", str(tmp_path / "missing.eml"))
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1
    assert "missing.eml" in result.err


def test_status_shows_what_came_back_by_kind_with_the_rates_and_warns_over_the_limits(
    returning: Cli, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    digests = sent_digests(returning, smtp_server)
    quiet = returning("status", "--now", MONDAY_0900).out
    assert "What came back (last 7 days, 2 digest(s) sent)" in quiet
    assert "bounce 0 (0.00%), delay 0, complaint 0 (0.00%), unsubscribe 0" in quiet
    assert "warning:" not in quiet
    take(
        returning,
        tmp_path,
        samples.rfc3464(digests["weekly@example.org"]),
        samples.arf(digests["daily@example.org"], "fbl@miasfeed.example"),
    )
    status = returning("status", "--now", MONDAY_0900).out
    assert "bounce 1 (50.00%), delay 0, complaint 1 (50.00%), unsubscribe 0" in status
    assert "warning: the complaint rate, 50.00%, is over 0.1%" in status
    assert "warning: the bounce rate, 50.00%, is over 2.0%" in status
    # A week later the window has moved past them.
    later = returning("status", "--now", "2026-12-08T09:00Z").out
    assert "bounce 0 (0.00%)" in later


def test_inbound_mail_is_ours_only_at_the_bounce_address_or_a_tag_of_either_address() -> None:
    mailboxes = Mailboxes(BOUNCES, UNSUBSCRIBE)
    assert mailboxes.ours("bounces+b1-abc@mail.miasfeed.example")
    assert mailboxes.ours("<Bounces@Mail.Miasfeed.Example>")  # a feedback loop's reports
    assert mailboxes.ours("unsubscribe+u1-1-abc@mail.miasfeed.example")
    assert not mailboxes.ours("unsubscribe@mail.miasfeed.example")  # names no reader
    assert not mailboxes.ours("postmaster@mail.miasfeed.example")
    assert not Mailboxes(None, None).ours("bounces@mail.miasfeed.example")


def test_a_reader_who_complained_is_not_re_added_by_an_import_and_is_told_why(
    returning: Cli, smtp_server: SmtpServer, tmp_path: Path, database_url: str
) -> None:
    sent = sent_digests(returning, smtp_server)["daily@example.org"]
    take(returning, tmp_path, samples.arf(sent, "fbl@miasfeed.example"))
    rows = tmp_path / "readers.csv"
    rows.write_text("email,frequency\nDAILY@example.org,daily\nnew@example.org,weekly\n")
    result = returning("subscribers", "import", str(rows), "--confirmed", "--now", MONDAY_0900)
    assert (
        "DAILY@example.org as daily@example.org reported a digest as spam: not added again (their "
        "own confirmed sign-up brings them back, or subscribers add --despite-complaint)"
    ) in result.out + result.err
    assert reader(database_url, "daily@example.org").status is SubscriberStatus.COMPLAINED
    assert reader(database_url, "new@example.org").status is SubscriberStatus.ACTIVE
    again = returning("subscribers", "add", "daily@example.org", "--confirmed")
    assert again.code == 2
    assert "reported a digest as spam" in again.err


def test_subscribers_add_despite_complaint_takes_back_a_complainer_with_new_links_on_purpose(
    returning: Cli, smtp_server: SmtpServer, tmp_path: Path, database_url: str
) -> None:
    sent = sent_digests(returning, smtp_server)["daily@example.org"]
    take(returning, tmp_path, samples.arf(sent, "fbl@miasfeed.example"))
    before = reader(database_url, "daily@example.org")
    back = returning(
        "subscribers", "add", "daily@example.org", "--frequency", "weekly", "--confirmed",
        "--despite-complaint", "--now", MONDAY_0900,
    )  # fmt: skip
    assert back.code == 0, back.err
    after = reader(database_url, "daily@example.org")
    assert (after.status, after.frequency) == (SubscriberStatus.ACTIVE, Frequency.WEEKLY)
    assert after.token_version == before.token_version + 1  # the old links stay dead
    # The flag takes back a complainer only: anyone else known is still refused.
    other = returning("subscribers", "add", "weekly@example.org", "--despite-complaint")
    assert other.code == 2
    assert "is already subscribed" in other.err


def test_a_notification_about_our_own_notification_changes_nothing(
    returning: Cli, smtp_server: SmtpServer, tmp_path: Path, database_url: str
) -> None:
    # A bounce of a bounce: sent to our bare bounce address from the null sender, quoting a
    # report that itself names none of our digests. We never answer mail, so no loop can start.
    sent_digests(returning, smtp_server)
    quoting_it = Sent("<>", BOUNCES, "<report.1@relay.example>")
    loop = samples.rfc3464(quoting_it).replace(
        b"Undelivered Mail Returned to Sender", b"Undelivered Mail Returned to Sender (again)"
    )
    before = snapshot(database_url)
    result = take(returning, tmp_path, loop)
    assert result.code == 0, result.err
    assert result.last_line.endswith(
        "bounce 0, delay 0, complaint 0, unsubscribe 0; repeated 0, unknown 1"
    )
    assert snapshot(database_url) == before
    assert len(smtp_server.messages) == 2  # the two digests: nothing was sent in answer
