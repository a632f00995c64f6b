"""Every SMTP fault of RELIABILITY rule 6, injected by a real server, through `digest send`.

Two daily readers are due; the victim's digest goes first over the one SMTP connection. Each case
checks what the rule promises: the exit code and summary, the ledger (status, attempts, backoff,
last error), the cursor and bounce count, what the server received, and that the bystander's
digest still goes through (on the same connection, when the server replied at all). Then the
clock moves to the end of the backoff, and the victim's digest arrives with its planned
Message-ID: nothing is lost.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_fixtures import CONFIRMED, Cli, five_articles
from smtp_server import SmtpServer
from sqlalchemy import select

from digest import database
from digest.demo.catcher import free_port
from digest.domain import DeliveryStatus, SubscriberStatus
from digest.models import ArticleRow, DeliveryRow, SubscriberRow

VICTIM = "victim@example.org"
BYSTANDER = "bystander@example.org"
AT = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # both readers' daily slot (08:00) is due
RETRY_BASE = timedelta(seconds=60)  # DIGEST_RETRY_BASE_SECONDS' default


def at(moment: datetime) -> str:
    return moment.isoformat()


@dataclass(frozen=True)
class Row:
    """One reader's delivery for the period, with the reader's cursor and bounce count."""

    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    message_id: str
    cursor: int
    bounces: int
    reader: SubscriberStatus


@pytest.fixture
def smtp_server(relay: SmtpServer) -> SmtpServer:
    """Each fault, at a relay that offers PIPELINING (RFC 2920) and at one that does not."""
    return relay


@pytest.fixture
def ledger(database_url: str) -> Iterator[Callable[[str], list[Row]]]:
    """A reader's deliveries, oldest first, read straight from the tables."""
    engine = database.connect(database_url)

    def rows(email: str) -> list[Row]:
        d, s = DeliveryRow, SubscriberRow
        query = (
            select(
                d.status, d.attempts, d.next_attempt_at, d.last_error, d.message_id,
                s.cursor, s.bounces, s.status,
            )
            .join(s, s.id == d.subscriber_id)
            .where(s.email == email)
            .order_by(d.id)
        )  # fmt: skip
        with engine.connect() as conn:
            found = conn.execute(query).all()
        return [Row(DeliveryStatus(r[0]), *r[1:7], reader=SubscriberStatus(r[7])) for r in found]

    yield rows
    engine.dispose()


@pytest.fixture
def newest_article(database_url: str) -> Callable[[], int]:
    def newest() -> int:
        engine = database.connect(database_url)
        try:
            with engine.connect() as conn:
                return max(conn.scalars(select(ArticleRow.id)))
        finally:
            engine.dispose()

    return newest


@pytest.fixture
def two_readers(upgraded: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("DIGEST_SMTP_CONNECTIONS", "1")  # one connection: order and reuse show
    for address in (VICTIM, BYSTANDER):  # planned in this order, so the victim's goes first
        added = upgraded(
            "subscribers", "add", address, "--frequency", "daily", "--confirmed",
            "--now", CONFIRMED,
        )  # fmt: skip
        assert added.code == 0, added.err
    assert (
        upgraded("articles", "import", str(five_articles(tmp_path)), "--now", CONFIRMED).code == 0
    )
    return upgraded


def message_ids(server: SmtpServer, reader: str) -> list[str | None]:
    return [m.message_id for m in server.messages if m.recipients == [reader]]


@dataclass(frozen=True)
class Fault:
    inject: Callable[[SmtpServer], None]
    error: str  # how the victim's last_error starts
    stage: str  # ... and the stage it ends with
    replied: bool  # the server answered, so the connection is reused for the bystander
    env: dict[str, str] = field(default_factory=dict)


def _refuse(stage: str, code: int) -> Fault:
    def inject(server: SmtpServer) -> None:
        server.fail(stage, code, to={VICTIM}, times=1)  # type: ignore[arg-type]

    return Fault(inject, f"{code} ", stage, replied=True)


TRANSIENT = {
    **{f"{code} after RCPT": _refuse("rcpt", code) for code in (450, 451, 452, 454)},
    **{f"{code} after DATA": _refuse("data", code) for code in (450, 451, 452, 454)},
    "552 on RCPT (mailbox full: retried)": _refuse("rcpt", 552),
    "connection dropped mid-DATA": Fault(
        lambda server: server.drop("data", to={VICTIM}, times=1), "", "data", replied=False
    ),
    "final reply after DATA later than the data timeout": Fault(
        lambda server: server.slow("data", 3.0, times=1),
        "",
        "data",
        replied=False,
        env={"DIGEST_SMTP_DATA_TIMEOUT": "1"},
    ),
    "no reply to RCPT within the timeout": Fault(
        lambda server: server.slow("rcpt", 3.0, times=1),
        "",
        "rcpt",
        replied=False,
        env={"DIGEST_SMTP_TIMEOUT": "1"},
    ),
}

PERMANENT = {
    "550 on RCPT": _refuse("rcpt", 550),
    "550 after DATA": _refuse("data", 550),
    "554 after DATA": _refuse("data", 554),
}


@pytest.mark.parametrize("fault", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_a_transient_failure_retries_that_reader_after_the_backoff_and_loses_nothing(
    two_readers: Cli,
    smtp_server: SmtpServer,
    ledger: Callable[[str], list[Row]],
    newest_article: Callable[[], int],
    monkeypatch: pytest.MonkeyPatch,
    fault: Fault,
) -> None:
    for name, value in fault.env.items():
        monkeypatch.setenv(name, value)
    fault.inject(smtp_server)

    first = two_readers("send", "--now", at(AT))

    assert first.code == 0, first.err
    assert first.last_line == "sent 1, skipped 0, retrying 1, failed 0"
    (row,) = ledger(VICTIM)
    assert (row.status, row.attempts, row.next_attempt_at) == (
        DeliveryStatus.PENDING,
        1,
        AT + RETRY_BASE,
    )
    assert row.last_error is not None
    assert row.last_error.startswith(fault.error)
    assert row.last_error.endswith(f"({fault.stage})")
    assert (row.cursor, row.bounces, row.reader) == (0, 0, SubscriberStatus.ACTIVE)
    assert [m.recipients for m in smtp_server.messages] == [[BYSTANDER]]
    assert smtp_server.connections == (1 if fault.replied else 2)
    assert "transient failure" in first.err and VICTIM not in first.err

    early = two_readers("send", "--now", at(AT + RETRY_BASE - timedelta(seconds=1)))
    assert early.last_line == "sent 0, skipped 0, retrying 0, failed 0"
    assert len(smtp_server.messages) == 1

    retry = two_readers("send", "--now", at(AT + RETRY_BASE))
    assert (retry.code, retry.last_line) == (0, "sent 1, skipped 0, retrying 0, failed 0")
    (row,) = ledger(VICTIM)
    assert (row.status, row.attempts, row.cursor) == (DeliveryStatus.SENT, 2, newest_article())
    assert message_ids(smtp_server, VICTIM) == [row.message_id]


@pytest.mark.parametrize("fault", PERMANENT.values(), ids=PERMANENT.keys())
def test_a_permanent_refusal_fails_that_reader_counts_a_bounce_and_exits_1(
    two_readers: Cli,
    smtp_server: SmtpServer,
    ledger: Callable[[str], list[Row]],
    fault: Fault,
) -> None:
    fault.inject(smtp_server)

    result = two_readers("send", "--now", at(AT))

    assert result.code == 1
    assert result.last_line == "sent 1, skipped 0, retrying 0, failed 1"
    (row,) = ledger(VICTIM)
    assert (row.status, row.attempts) == (DeliveryStatus.FAILED, 1)
    assert row.last_error is not None and row.last_error.startswith(fault.error)
    # The cursor stays, so these articles come in the reader's next digest if the address heals.
    assert (row.cursor, row.bounces, row.reader) == (0, 1, SubscriberStatus.ACTIVE)
    assert [m.recipients for m in smtp_server.messages] == [[BYSTANDER]]
    assert smtp_server.connections == 1  # RSET, and the bystander's digest used the same one
    later = two_readers("send", "--now", at(AT + RETRY_BASE))
    assert later.last_line == "sent 0, skipped 0, retrying 0, failed 0"


@dataclass(frozen=True)
class Down:
    turn_away: Callable[[SmtpServer, pytest.MonkeyPatch], None]
    reached: bool  # an SMTP reply came back, if only to turn us away


RELAY_DOWN = {
    "421 on connect": Down(lambda server, _: server.fail("connect", 421, times=2), reached=True),
    "connection refused": Down(lambda server, _: server.stop(), reached=False),
    "nothing ever listened on the port": Down(
        lambda _, env: env.setenv("DIGEST_SMTP_PORT", str(free_port())), reached=False
    ),
}


@pytest.mark.parametrize("down", RELAY_DOWN.values(), ids=RELAY_DOWN.keys())
def test_a_relay_that_turns_everyone_away_keeps_every_digest_to_retry_and_if_unreachable_exits_1(
    two_readers: Cli,
    smtp_server: SmtpServer,
    ledger: Callable[[str], list[Row]],
    monkeypatch: pytest.MonkeyPatch,
    down: Down,
) -> None:
    down.turn_away(smtp_server, monkeypatch)

    result = two_readers("send", "--now", at(AT))

    assert result.last_line == "sent 0, skipped 0, retrying 2, failed 0"
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    if down.reached:
        assert (result.code, errors) == (0, []), result.err
        reason = ""
    else:  # one line naming the relay and why, so that cron and monitoring notice
        relay = f"{smtp_server.host}:{os.environ['DIGEST_SMTP_PORT']}"
        named = f"error: cannot reach the SMTP relay {relay}: "
        assert (result.code, len(errors)) == (1, 1), result.err
        assert errors[0].startswith(named)
        reason = errors[0].removeprefix(named)  # the same as each digest's last error
    for reader in (VICTIM, BYSTANDER):
        (row,) = ledger(reader)
        assert (row.status, row.attempts, row.next_attempt_at, row.cursor) == (
            DeliveryStatus.PENDING,
            1,
            AT + RETRY_BASE,
            0,
        )
        assert row.last_error is not None and row.last_error.endswith(f"{reason} (connect)")
    assert smtp_server.messages == []

    if not smtp_server.running:
        smtp_server.start()  # back, on the same port
    monkeypatch.setenv("DIGEST_SMTP_PORT", str(smtp_server.port))
    back = two_readers("send", "--now", at(AT + RETRY_BASE))
    assert (back.code, back.last_line) == (0, "sent 2, skipped 0, retrying 0, failed 0")
    assert sorted(r for m in smtp_server.messages for r in m.recipients) == [BYSTANDER, VICTIM]


CONFIG_FAULTS: dict[str, tuple[Callable[[SmtpServer], None], dict[str, str], str]] = {
    "553 on MAIL FROM": (
        lambda server: server.fail("mail", 553, times=2),
        {},
        "553 5.1.8 sender address rejected (mail)",
    ),
    "535 on AUTH": (
        lambda server: None,
        {"DIGEST_SMTP_USER": "digest", "DIGEST_SMTP_PASSWORD": "wrong"},
        "535 5.7.8 Authentication credentials invalid (auth)",
    ),
}


@pytest.mark.parametrize("case", CONFIG_FAULTS.values(), ids=CONFIG_FAULTS.keys())
def test_a_refusal_of_our_own_settings_stops_the_run_in_one_line_and_blames_no_reader(
    two_readers: Cli,
    smtp_server: SmtpServer,
    ledger: Callable[[str], list[Row]],
    monkeypatch: pytest.MonkeyPatch,
    case: tuple[Callable[[SmtpServer], None], dict[str, str], str],
) -> None:
    inject, env, reply = case
    inject(smtp_server)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    result = two_readers("send", "--now", at(AT))

    assert result.code == 2
    assert result.err.strip() == f"error: the SMTP server refused our settings: {reply}"
    assert smtp_server.messages == []
    for reader in (VICTIM, BYSTANDER):
        (row,) = ledger(reader)
        assert (row.status, row.attempts, row.last_error, row.bounces) == (
            DeliveryStatus.PENDING,
            0,
            None,
            0,
        )
    assert f"refused our settings: {reply}" in two_readers("status", "--now", at(AT)).out

    monkeypatch.delenv("DIGEST_SMTP_USER", raising=False)  # the operator fixes the settings
    fixed = two_readers("send", "--now", at(AT))
    assert (fixed.code, fixed.last_line) == (0, "sent 2, skipped 0, retrying 0, failed 0")


def test_repeated_transient_failures_back_off_doubling_then_fail_without_a_bounce(
    two_readers: Cli,
    smtp_server: SmtpServer,
    ledger: Callable[[str], list[Row]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DIGEST_RETRY_LIMIT", "3")
    smtp_server.fail("data", 451, to={VICTIM})
    now = AT
    for attempt, delay in ((1, RETRY_BASE), (2, 2 * RETRY_BASE)):
        result = two_readers("send", "--now", at(now))
        assert (result.code, ledger(VICTIM)[0].attempts) == (0, attempt)
        assert ledger(VICTIM)[0].next_attempt_at == now + delay
        now += delay

    last = two_readers("send", "--now", at(now))

    assert (last.code, last.last_line) == (1, "sent 0, skipped 0, retrying 0, failed 1")
    (row,) = ledger(VICTIM)
    assert (row.status, row.attempts, row.cursor, row.bounces, row.reader) == (
        DeliveryStatus.FAILED,
        3,
        0,
        0,
        SubscriberStatus.ACTIVE,
    )
    assert message_ids(smtp_server, VICTIM) == []


def test_permanent_failures_in_a_row_mark_the_reader_bounced_and_a_success_resets_the_count(
    two_readers: Cli,
    smtp_server: SmtpServer,
    ledger: Callable[[str], list[Row]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("DIGEST_BOUNCE_LIMIT", "2")
    day = timedelta(days=1)
    # Day 1 refused, day 2 accepted (the count starts again), days 3 and 4 refused: bounced.
    refused_on = {0, 2, 3}
    for n in range(5):
        fresh = five_articles(tmp_path, start=10 * (n + 1), count=1)
        assert two_readers("articles", "import", str(fresh), "--now", at(AT + n * day)).code == 0
        if n in refused_on:
            smtp_server.fail("rcpt", 550, to={VICTIM}, times=1)
        two_readers("send", "--now", at(AT + n * day))
        assert ledger(VICTIM)[-1].bounces == {0: 1, 1: 0, 2: 1}.get(n, 2)

    assert [r.status for r in ledger(VICTIM)] == [
        DeliveryStatus.FAILED,
        DeliveryStatus.SENT,
        DeliveryStatus.FAILED,
        DeliveryStatus.FAILED,
    ]  # and no delivery planned on day 5: a bounced reader gets no more digests
    assert ledger(VICTIM)[-1].reader is SubscriberStatus.BOUNCED
    assert len(ledger(BYSTANDER)) == 5
    listed = two_readers("subscribers", "list", "--status", "bounced").out.strip().splitlines()
    assert [line.split("\t")[:3] for line in listed] == [[VICTIM, "daily", "bounced"]]
    status = two_readers("status", "--now", at(AT + 5 * day)).out
    assert "bounced" in status.splitlines()[1]
    daily_row = next(line for line in status.splitlines() if line.strip().startswith("daily"))
    # pending active unsubscribed bounced complained
    assert daily_row.split()[1:] == ["0", "1", "0", "1", "0"]
    assert "1 bounced reader(s) get no digests: digest subscribers list --status bounced" in status
