"""Issue 16: what comes back after sending, over SMTP to `digest serve`'s inbound port. Digests go
out to the test relay; the notifications about them come back over real SMTP, as a receiving
server's relay sends them, and the readers' state is checked on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import smtplib
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import NoReturn

import inbound_samples as samples
import pytest
from db_fixtures import seed, snapshot
from inbound_samples import Sent
from processes import digest_env, finish, running_daemon, start, stop_cleanly, wait_for
from smtp_server import SmtpServer
from sqlalchemy import Engine, event
from sqlalchemy.engine import Dialect
from test_cli import parsed

from digest import database
from digest.app import Services
from digest.config import load
from digest.demo.catcher import free_port
from digest.domain import Frequency, Subscriber, SubscriberStatus
from digest.inbound_smtp import receiving
from digest.store import Store

BOUNCES = "bounces@mail.miasfeed.example"
UNSUBSCRIBE = "unsubscribe@mail.miasfeed.example"
MONDAY_0900 = datetime.fromisoformat("2026-11-30T09:00Z")
MAX_BYTES = 10_000  # the least DIGEST_INBOUND_MAX_BYTES allows; every sample is smaller
MAX_CONNECTIONS = 2
RELAY = "relay.example.net"  # the name the test client greets with, as a receiving relay would


@dataclass
class Inbound:
    """Monday's digests sent (the daily and the weekly reader's), and inbound SMTP listening."""

    services: Services
    port: int
    sent: dict[str, Sent]  # by recipient

    @property
    def store(self) -> Store:
        return self.services.store

    def reader(self, address: str) -> Subscriber:
        return self.store.find_subscriber(address)

    def connect(self) -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.port, local_hostname=RELAY, timeout=10)
        client.ehlo()
        return client

    def deliver(self, mail: bytes, to: str) -> None:
        """One notification, from the null sender as RFC 3464 has it; raises on a refusal."""
        with self.connect() as client:
            client.sendmail("<>", [to], mail)


@pytest.fixture
def inbound(database_url: str, smtp_server: SmtpServer) -> Iterator[Inbound]:
    readers = {"daily@example.org": Frequency.DAILY, "weekly@example.org": Frequency.WEEKLY}
    week_ago = MONDAY_0900 - timedelta(days=7)
    seed(database_url, readers, [1, 2], confirmed_at=week_ago, imported_at=MONDAY_0900)
    env = digest_env(
        database_url,
        smtp_server,
        DIGEST_BASE_URL="https://news.example",
        DIGEST_BOUNCE_ADDRESS=BOUNCES,
        DIGEST_UNSUBSCRIBE_ADDRESS=UNSUBSCRIBE,
        DIGEST_INBOUND_MAX_BYTES=str(MAX_BYTES),
        DIGEST_INBOUND_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
    )
    services = Services(load(None, env), Store(database.connect(database_url)))

    def clock() -> datetime:
        return MONDAY_0900 + timedelta(hours=1)

    assert asyncio.run(services.send(MONDAY_0900, clock)).summary.sent == 2
    sent = {
        received.recipients[0]: Sent(
            received.sender, received.recipients[0], parsed(received.data)["Message-ID"]
        )
        for received in smtp_server.messages
    }
    port = free_port()
    try:
        with receiving(services, clock, "127.0.0.1", port):
            yield Inbound(services, port, sent)
    finally:
        services.close()


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "digest.inbound_smtp"]


@pytest.mark.parametrize("shape", [samples.rfc3464, samples.gmail, samples.outlook, samples.yahoo])
def test_a_bounce_over_smtp_to_the_digests_return_path_counts_one_bounce_for_its_reader(
    inbound: Inbound, shape: Callable[[Sent], bytes]
) -> None:
    sent = inbound.sent["weekly@example.org"]
    inbound.deliver(shape(sent), to=sent.return_path)
    assert inbound.reader("weekly@example.org").bounces == 1
    assert inbound.reader("daily@example.org").bounces == 0  # the reader beside: untouched


def test_an_arf_complaint_over_smtp_unsubscribes_the_reader_and_marks_them_complained(
    inbound: Inbound,
) -> None:
    sent = inbound.sent["daily@example.org"]
    inbound.deliver(samples.arf(sent, sent.return_path), to=sent.return_path)
    assert inbound.reader("daily@example.org").status is SubscriberStatus.COMPLAINED
    assert inbound.reader("weekly@example.org").status is SubscriberStatus.ACTIVE


def test_a_mail_over_smtp_to_a_digests_mailto_address_unsubscribes_its_reader(
    inbound: Inbound, smtp_server: SmtpServer
) -> None:
    (digest,) = [m for m in smtp_server.messages if m.recipients == ["weekly@example.org"]]
    mailto = parsed(digest.data)["List-Unsubscribe"].split(",")[1].strip().strip("<>")
    address = mailto.removeprefix("mailto:").partition("?")[0]
    with inbound.connect() as client:
        # A mail client sends it from the reader's own address, not the null sender.
        client.sendmail(
            "weekly@example.org",
            [address],
            samples.mailto_unsubscribe("weekly@example.org", address),
        )
    assert inbound.reader("weekly@example.org").status is SubscriberStatus.UNSUBSCRIBED
    assert inbound.reader("daily@example.org").status is SubscriberStatus.ACTIVE


def test_a_delay_and_an_auto_reply_over_smtp_get_250_and_change_no_reader(
    inbound: Inbound,
) -> None:
    sent = inbound.sent["weekly@example.org"]
    readers = snapshot(inbound.store.engine)["subscribers"]
    inbound.deliver(samples.delay(sent), to=sent.return_path)  # 250, or it would raise
    inbound.deliver(samples.auto_reply(sent), to=sent.return_path)
    after = snapshot(inbound.store.engine)
    assert after["subscribers"] == readers
    assert [row[3:5] for row in after["notices"]] == [("delay", "smtp")]  # kept, and only that


def test_a_recipient_not_ours_gets_550_at_rcpt_changes_nothing_and_is_one_log_line(
    inbound: Inbound, caplog: pytest.LogCaptureFixture
) -> None:
    sent = inbound.sent["weekly@example.org"]
    before = snapshot(inbound.store.engine)
    # UNSUBSCRIBE untagged names no reader.
    strangers = ["postmaster@mail.miasfeed.example", UNSUBSCRIBE, "weekly@example.org"]
    with inbound.connect() as client:
        assert client.mail("<>")[0] == 250
        for stranger in strangers:
            assert client.rcpt(stranger) == (550, b"5.1.1 no such mailbox here")
        assert client.rcpt(sent.return_path)[0] == 250  # ours, tagged, in the same mail
        assert client.rcpt(BOUNCES)[0] == 250  # as it is too: a feedback loop's reports
    assert snapshot(inbound.store.engine) == before
    assert refusals(caplog) == [
        f"inbound SMTP from 127.0.0.1 refused (550): a mail to {stranger}" for stranger in strangers
    ]


def test_a_mail_over_the_size_cap_gets_552_whether_announced_by_size_or_not(
    inbound: Inbound, caplog: pytest.LogCaptureFixture
) -> None:
    sent = inbound.sent["weekly@example.org"]
    big = samples.rfc3464(sent) + (b"y" * 70 + b"\r\n") * 200  # a long epilogue
    assert len(big) > MAX_BYTES
    before = snapshot(inbound.store.engine)
    with inbound.connect() as client:
        assert client.has_extn("size") and client.esmtp_features["size"] == str(MAX_BYTES)
        with pytest.raises(smtplib.SMTPSenderRefused) as announced:  # MAIL FROM:<> SIZE=...
            client.sendmail("<>", [sent.return_path], big)
        assert announced.value.smtp_code == 552
    with inbound.connect() as client:
        assert client.mail("<>")[0] == 250  # no SIZE: the cap meets it in DATA
        assert client.rcpt(sent.return_path)[0] == 250
        assert client.data(big)[0] == 552
    assert snapshot(inbound.store.engine) == before
    assert (
        refusals(caplog)
        == [f"inbound SMTP from 127.0.0.1 refused (552): a mail over {MAX_BYTES:,} bytes"] * 2
    )


def test_a_connection_past_the_limit_gets_421_and_is_closed_and_a_freed_slot_is_taken_again(
    inbound: Inbound, caplog: pytest.LogCaptureFixture
) -> None:
    with ExitStack() as open_ones:
        first = open_ones.enter_context(inbound.connect())
        for _ in range(MAX_CONNECTIONS - 1):
            open_ones.enter_context(inbound.connect())
        with socket.create_connection(("127.0.0.1", inbound.port), timeout=10) as extra:
            assert _read_all(extra) == b"421 4.7.0 too many connections, try later\r\n"
        first.quit()

        def a_slot_is_free() -> bool:
            with socket.create_connection(("127.0.0.1", inbound.port), timeout=10) as probe:
                greeting = probe.recv(100)
                probe.sendall(b"QUIT\r\n")
                _read_all(probe)
            return greeting.startswith(b"220 mail.miasfeed.example digest")

        wait_for(a_slot_is_free, "the first connection's slot to be freed")
    assert refusals(caplog)[0] == (
        f"inbound SMTP from 127.0.0.1 refused (421): {MAX_CONNECTIONS} connections open"
    )


def _read_all(connection: socket.socket) -> bytes:
    """What the server writes before it closes the connection."""
    chunks = []
    while chunk := connection.recv(1000):
        chunks.append(chunk)
    return b"".join(chunks)


@contextmanager
def database_down(engine: Engine) -> Iterator[None]:
    """The database gone: each new connection refused by the driver, the pooled ones dropped."""

    def refuse(dialect: Dialect, *_: object) -> NoReturn:
        raise dialect.loaded_dbapi.OperationalError("connection refused: the database is down")

    engine.dispose()
    event.listen(engine, "do_connect", refuse)
    try:
        yield
    finally:
        event.remove(engine, "do_connect", refuse)


def test_the_database_down_while_taking_gets_451_and_the_relays_retry_is_taken_once(
    inbound: Inbound, caplog: pytest.LogCaptureFixture
) -> None:
    sent = inbound.sent["weekly@example.org"]
    bounce = samples.rfc3464(sent)
    with database_down(inbound.store.engine), pytest.raises(smtplib.SMTPDataError) as refused:
        inbound.deliver(bounce, to=sent.return_path)
    assert (refused.value.smtp_code, refused.value.smtp_error) == (451, b"4.3.0 try again later")
    [line] = refusals(caplog)
    assert line.startswith(
        f"inbound SMTP from 127.0.0.1 refused (451): a mail to {sent.return_path} not taken: "
        "the database failed: "
    )
    assert inbound.reader("weekly@example.org").bounces == 0
    for _retry in range(2):  # the relay's retry once it is back, and a second copy of it
        inbound.deliver(bounce, to=sent.return_path)
    assert inbound.reader("weekly@example.org").bounces == 1


# -- `digest serve` with DIGEST_INBOUND_PORT --------------------------------------------------


def test_digest_serve_takes_inbound_smtp_on_its_port_and_logs_where_and_for_whom(
    database_url: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    seed(database_url, {}, [], confirmed_at=MONDAY_0900, imported_at=MONDAY_0900)
    port = free_port()
    env = digest_env(
        database_url,
        smtp_server,
        DIGEST_INBOUND_PORT=str(port),
        DIGEST_BOUNCE_ADDRESS=BOUNCES,
        DIGEST_UNSUBSCRIBE_ADDRESS=UNSUBSCRIBE,
    )
    log = tmp_path / "daemon.log"
    with running_daemon(env, log=log) as (process, _):

        def answers() -> bool:
            try:
                client = smtplib.SMTP("127.0.0.1", port, local_hostname=RELAY, timeout=10)
            except OSError:
                return False
            with client:
                client.ehlo()
                assert client.mail("<>")[0] == 250
                assert client.rcpt("someone@example.org")[0] == 550
            return True

        wait_for(answers, "inbound SMTP")
        stop_cleanly(process)
    logged = log.read_text()
    assert f"inbound SMTP on 127.0.0.1:{port} for {BOUNCES}, {UNSUBSCRIBE}" in logged
    assert "refused (550): a mail to someone@example.org" in logged
    assert "mail.log" not in logged  # aiosmtpd's line a command is not the daemon's log
    with pytest.raises(ConnectionRefusedError):  # stopped with the daemon
        socket.create_connection(("127.0.0.1", port), timeout=10).close()


def test_digest_serve_on_a_taken_inbound_port_says_so_in_one_line_and_exits_2(
    database_url: str, smtp_server: SmtpServer
) -> None:
    seed(database_url, {}, [], confirmed_at=MONDAY_0900, imported_at=MONDAY_0900)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = digest_env(database_url, smtp_server, DIGEST_INBOUND_PORT=str(port))
        result = finish(start(env, "serve", "--port", str(free_port())))
    assert result.code == 2
    # Beside the log lines of the start (the schema check), one line says it; no traceback.
    said = [line for line in result.err.splitlines() if not line.startswith("20")]
    assert said == [
        f"error: inbound SMTP port {port} on 127.0.0.1 is taken; set another DIGEST_INBOUND_PORT"
    ]
