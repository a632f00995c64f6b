"""Issue 16: what comes back after sending. Each digest's envelope sender names its delivery
(VERP), its List-Unsubscribe carries a mailto: form naming its reader, and it has Gmail's
Feedback-ID; checked on the wire, through the entry point, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cli_fixtures import MONDAY_0900, SECRET, Cli, five_articles
from smtp_server import SmtpServer
from test_cli import parsed

from digest import database
from digest.addresses import tag_of
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
