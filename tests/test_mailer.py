"""The SMTP adapter against a real aiosmtpd server made to misbehave (RELIABILITY rules 6 and 7)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil
import pytest
import trustme
from fake_time import FakeTime
from smtp_server import REPLY_TEXT, SmtpServer

from digest.domain import ReplyClass
from digest.mailer import DryRunSender, Outcome, Outgoing, Sender, SmtpSender, SmtpSettings
from digest.mime import Prepared
from digest.ratelimit import Rate

pytest_plugins = ["smtp_server"]

TRANSIENT, PERMANENT, CONFIG = ReplyClass.TRANSIENT, ReplyClass.PERMANENT, ReplyClass.CONFIG
SENDER = "digest@example.org"


StartServer = Callable[..., SmtpServer]


@pytest.fixture
def smtp_server(relay: SmtpServer) -> SmtpServer:
    """Each test here runs against a relay that offers PIPELINING and one that does not."""
    return relay


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    """The server's side: a certificate for 127.0.0.1 and localhost, issued by `ca`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def trust_ca(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the client trust `ca`: aiosmtplib's ssl.create_default_context() reads SSL_CERT_FILE."""
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    monkeypatch.setenv("SSL_CERT_FILE", str(pem))


def settings(server: SmtpServer, **overrides: object) -> SmtpSettings:
    values: dict[str, object] = {"host": server.host, "port": server.port, "timeout": 5.0}
    values.update(overrides)
    return SmtpSettings(**values)  # type: ignore[arg-type]


def mail(key: int, to: str = "reader@example.org") -> Outgoing:
    message = (
        f"From: {SENDER}\r\nTo: {to}\r\nSubject: digest {key}\r\n"
        f"Message-ID: <{key}@digest.test>\r\n\r\nHello {key}\r\n"
    ).encode()
    return Outgoing(key=key, sender=SENDER, recipient=to, message=message)


async def _send(sender: Sender, mails: Sequence[Outgoing]) -> list[Outcome]:
    async with sender:
        return await sender.send_many(mails)


def send(config: SmtpSettings, *mails: Outgoing) -> list[Outcome]:
    return asyncio.run(_send(SmtpSender(config), mails))


async def send_one(sender: SmtpSender, outgoing: Outgoing) -> Outcome:
    """sender.send(outgoing), which is None only when a still_ours (none here) turns it down."""
    outcome = await sender.send(outgoing)
    assert outcome is not None
    return outcome


def test_fifty_messages_are_all_accepted_over_at_most_four_reused_connections(
    smtp_server: SmtpServer,
) -> None:
    mails = [mail(key, f"reader{key}@example.org") for key in range(1, 51)]

    outcomes = send(settings(smtp_server, connections=4), *mails)

    assert [o.key for o in outcomes] == list(range(1, 51))
    assert all(o.reply is None and o.code == 250 for o in outcomes), outcomes
    assert sorted(m.message_id or "" for m in smtp_server.messages) == sorted(
        f"<{key}@digest.test>" for key in range(1, 51)
    )
    assert 1 <= smtp_server.connections <= 4


def test_a_message_that_is_not_prepared_gets_crlf_line_ends_and_keeps_its_dots(
    smtp_server: SmtpServer,
) -> None:
    head = f"From: {SENDER}\r\nTo: reader@example.org\r\nSubject: dots\r\n\r\n".encode()
    body = b".starts with a dot\nbare LF\rlone CR\r\n.\r\n..two\nno line end at the end"
    outgoing = Outgoing(1, SENDER, "reader@example.org", head + body)

    [outcome] = send(settings(smtp_server), outgoing)

    assert outcome.reply is None
    [received] = smtp_server.messages
    assert received.data == head + (
        b".starts with a dot\r\nbare LF\r\nlone CR\r\n.\r\n..two\r\nno line end at the end\r\n"
    )


def test_a_prepared_message_is_written_as_it_is_without_a_second_scan(
    smtp_server: SmtpServer,
) -> None:
    # mime.py promises that no line of a Prepared message starts with a dot, and the sender takes
    # its word: one that broke the promise would show it, as the relay reads such a dot as stuffing.
    message = mail(1).message
    kept = Outgoing(1, SENDER, "reader@example.org", Prepared(message))
    broken = Outgoing(2, SENDER, "reader@example.org", Prepared(message + b"..stuffed\r\n"))

    outcomes = send(settings(smtp_server, connections=1), kept, broken)

    assert [o.reply for o in outcomes] == [None, None]
    assert [m.data for m in smtp_server.messages] == [message, message + b".stuffed\r\n"]


def test_concurrent_sends_share_the_pool(smtp_server: SmtpServer) -> None:
    async def scenario() -> list[Outcome]:
        async with SmtpSender(settings(smtp_server, connections=2)) as sender:
            return await asyncio.gather(*(send_one(sender, mail(key)) for key in range(10)))

    outcomes = asyncio.run(scenario())

    assert all(o.reply is None for o in outcomes)
    assert len(smtp_server.messages) == 10
    assert smtp_server.connections <= 2


@pytest.mark.parametrize(
    ("stage", "code", "expected"),
    [
        ("connect", 421, TRANSIENT),
        ("connect", 554, CONFIG),
        ("ehlo", 421, TRANSIENT),
        ("ehlo", 550, CONFIG),
        ("auth", 454, TRANSIENT),
        ("mail", 451, TRANSIENT),
        ("mail", 553, CONFIG),
        ("rcpt", 450, TRANSIENT),
        ("rcpt", 451, TRANSIENT),
        ("rcpt", 452, TRANSIENT),
        ("rcpt", 454, TRANSIENT),
        ("rcpt", 550, PERMANENT),
        ("rcpt", 552, TRANSIENT),  # "storage exceeded" is temporary (RFC 5321 §4.5.3.1.10)
        ("data", 451, TRANSIENT),
        ("data", 452, TRANSIENT),
        ("data", 552, TRANSIENT),
        ("data", 554, PERMANENT),
    ],
)
def test_a_refusal_is_classified_by_code_and_stage(
    smtp_server: SmtpServer, stage: str, code: int, expected: ReplyClass
) -> None:
    smtp_server.fail(stage, code)  # type: ignore[arg-type]
    config = settings(smtp_server, username="digest", password="secret")

    [outcome] = send(config, mail(1))

    assert (outcome.reply, outcome.code) == (expected, code)
    assert outcome.detail.startswith(f"{code} {REPLY_TEXT[code]}")
    assert smtp_server.messages == []


def test_wrong_password_is_our_config_error(smtp_server: SmtpServer) -> None:
    [outcome] = send(settings(smtp_server, username="digest", password="wrong"), mail(1))

    assert (outcome.reply, outcome.code) == (CONFIG, 535)
    assert smtp_server.messages == []


def test_right_password_authenticates_and_sends(smtp_server: SmtpServer) -> None:
    [outcome] = send(settings(smtp_server, username="digest", password="secret"), mail(1))

    assert outcome.reply is None


def test_required_starttls_on_a_server_without_it_is_our_config_error(
    smtp_server: SmtpServer,
) -> None:
    [outcome] = send(settings(smtp_server, security="starttls"), mail(1))

    assert outcome.reply is CONFIG
    assert "STARTTLS" in outcome.detail
    assert smtp_server.messages == []


@pytest.mark.usefixtures("trust_ca")
def test_starttls_upgrades_before_sending(
    start_smtp_server: StartServer, server_tls: ssl.SSLContext
) -> None:
    server = start_smtp_server(tls_context=server_tls)

    [outcome] = send(settings(server, security="starttls"), mail(1))

    assert outcome.reply is None, outcome
    assert [m.tls for m in server.messages] == [True]


@pytest.mark.usefixtures("trust_ca")
def test_security_none_sends_in_clear_even_when_the_server_offers_starttls(
    start_smtp_server: StartServer, server_tls: ssl.SSLContext
) -> None:
    server = start_smtp_server(tls_context=server_tls)

    [outcome] = send(settings(server, security="none"), mail(1))

    assert outcome.reply is None, outcome
    assert [m.tls for m in server.messages] == [False]  # no opportunistic upgrade


@pytest.mark.usefixtures("trust_ca")
def test_security_tls_sends_over_implicit_tls(
    start_smtp_server: StartServer, server_tls: ssl.SSLContext
) -> None:
    server = start_smtp_server(tls_context=server_tls, implicit_tls=True)

    [outcome] = send(settings(server, security="tls"), mail(1))

    assert outcome.reply is None, outcome
    assert [m.tls for m in server.messages] == [True]


def client_sockets(port: int) -> list[object]:
    """This process's sockets connected to port: the server runs in a thread of it, so its own
    ends of the connections (local port == port) are left out."""
    return [
        c
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.laddr.port != port
    ]


@pytest.mark.usefixtures("trust_ca")
@pytest.mark.parametrize("security", ["none", "starttls", "tls"])
def test_a_sender_that_is_done_has_closed_its_connections_tls_included(
    start_smtp_server: StartServer, server_tls: ssl.SSLContext, security: str
) -> None:
    server = start_smtp_server(tls_context=server_tls, implicit_tls=security == "tls")

    async def scenario() -> list[object]:
        # Still inside the loop: what is not closed now would be left to the garbage collector.
        await _send(SmtpSender(settings(server, security=security, connections=2)), [mail(1)])
        return client_sockets(server.port)

    assert asyncio.run(scenario()) == []
    assert len(server.messages) == 1


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_untrusted_server_certificate_is_refused_and_nothing_is_sent(
    start_smtp_server: StartServer,
    server_tls: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
    security: str,
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)  # only the system's CAs: not ours
    server = start_smtp_server(tls_context=server_tls, implicit_tls=security == "tls")

    [outcome] = send(settings(server, security=security), mail(1))

    # Our configuration: a retry per reader cannot fix the relay's certificate or our trust store.
    assert (outcome.reply, outcome.code) == (ReplyClass.CONFIG, None)
    assert "certificate" in outcome.detail
    assert server.messages == []


def test_refused_connection_is_transient(smtp_server: SmtpServer) -> None:
    smtp_server.stop()

    [outcome] = send(settings(smtp_server), mail(1))

    assert (outcome.reply, outcome.code) == (TRANSIENT, None)
    assert "(connect)" in outcome.detail


def test_connection_dropped_after_the_final_dot_is_transient(smtp_server: SmtpServer) -> None:
    smtp_server.drop("data")

    [outcome] = send(settings(smtp_server), mail(1))

    assert (outcome.reply, outcome.code) == (TRANSIENT, None)
    assert smtp_server.messages == []


def test_final_reply_slower_than_the_data_timeout_is_transient(smtp_server: SmtpServer) -> None:
    smtp_server.slow("data", 2.0)
    started = time.monotonic()

    [outcome] = send(settings(smtp_server, data_timeout=0.5), mail(1))

    assert (outcome.reply, outcome.code) == (TRANSIENT, None)
    assert time.monotonic() - started < 1.9  # gave up at the data timeout, not at the reply


def test_final_reply_within_the_data_timeout_is_awaited(smtp_server: SmtpServer) -> None:
    smtp_server.slow("data", 0.3)

    [outcome] = send(settings(smtp_server, timeout=0.1, data_timeout=2.0), mail(1))

    assert outcome.reply is None  # the command timeout does not cut the DATA reply short


def test_next_message_on_the_same_connection_goes_through_after_a_refused_recipient(
    smtp_server: SmtpServer,
) -> None:
    smtp_server.fail("rcpt", 550, to={"bad@example.org"})
    mails = [mail(1, "a@example.org"), mail(2, "bad@example.org"), mail(3, "b@example.org")]

    outcomes = send(settings(smtp_server, connections=1), *mails)

    assert [o.reply for o in outcomes] == [None, PERMANENT, None]
    assert smtp_server.recipients == ["a@example.org", "b@example.org"]
    assert smtp_server.connections == 1  # reused after RSET, not reconnected


@pytest.mark.parametrize(("stage", "code"), [("mail", 451), ("rcpt", 452), ("data", 451)])
def test_next_message_on_the_same_connection_goes_through_after_a_transient_refusal(
    smtp_server: SmtpServer, stage: str, code: int
) -> None:
    smtp_server.fail(stage, code, times=1)  # type: ignore[arg-type]

    outcomes = send(settings(smtp_server, connections=1), mail(1), mail(2))

    assert [o.reply for o in outcomes] == [TRANSIENT, None]
    assert [m.message_id for m in smtp_server.messages] == ["<2@digest.test>"]
    assert smtp_server.connections == 1


def test_connection_lost_mid_transaction_is_replaced_for_the_next_message(
    smtp_server: SmtpServer,
) -> None:
    smtp_server.drop("data", times=1)

    outcomes = send(settings(smtp_server, connections=1), mail(1), mail(2))

    assert [o.reply for o in outcomes] == [TRANSIENT, None]
    assert smtp_server.connections == 2


@pytest.mark.parametrize("pipelining", [True, False], ids=["offered", "not offered"])
def test_mail_rcpt_and_data_go_in_one_write_exactly_when_the_relay_offers_pipelining(
    start_smtp_server: StartServer, pipelining: bool
) -> None:
    server = start_smtp_server(pipelining=pipelining)

    outcomes = send(settings(server, connections=1), *(mail(key) for key in range(3)))

    assert [o.reply for o in outcomes] == [None] * 3
    assert [m.pipelined for m in server.messages] == [pipelining] * 3


def test_a_recipient_refused_inside_a_pipeline_fails_that_reader_alone_at_rcpt(
    start_smtp_server: StartServer,
) -> None:
    server = start_smtp_server(pipelining=True)
    server.fail("rcpt", 550, to={"bad@example.org"})
    mails = [mail(1, "a@example.org"), mail(2, "bad@example.org"), mail(3, "b@example.org")]

    outcomes = send(settings(server, connections=1), *mails)

    # DATA's reply in the same pipeline (503: no valid recipient) is read, and blamed on nobody.
    assert [(o.reply, o.code) for o in outcomes] == [(None, 250), (PERMANENT, 550), (None, 250)]
    assert outcomes[1].detail == f"550 {REPLY_TEXT[550]} (rcpt)"
    assert [m.recipients for m in server.messages] == [["a@example.org"], ["b@example.org"]]
    assert all(m.pipelined for m in server.messages)
    assert server.connections == 1  # RSET, then the next pipeline on the same connection


def test_a_relay_that_takes_data_after_refusing_the_recipient_is_hung_up_on_at_once(
    start_smtp_server: StartServer,
) -> None:
    server = start_smtp_server(pipelining=True)
    server.data_without_recipients = True  # it answers the pipelined DATA with 354 regardless
    server.fail("rcpt", 550, to={"bad@example.org"})
    started = time.monotonic()

    outcomes = send(
        settings(server, connections=1, timeout=30.0),
        mail(1, "bad@example.org"),
        mail(2, "b@example.org"),
    )

    assert [(o.reply, o.code) for o in outcomes] == [(PERMANENT, 550), (None, 250)]
    assert server.recipients == ["b@example.org"]  # no message went to the refused recipient
    assert server.connections == 2
    # Not sent RSET, which a relay waiting for a message would take as text and never answer.
    assert time.monotonic() - started < 10


def test_a_connection_dropped_between_pipelined_replies_is_transient_and_replaced(
    start_smtp_server: StartServer,
) -> None:
    server = start_smtp_server(pipelining=True)
    server.drop("rcpt", times=1)  # MAIL is answered, then the relay hangs up

    outcomes = send(settings(server, connections=1), mail(1), mail(2))

    assert [(o.reply, o.code) for o in outcomes] == [(TRANSIENT, None), (None, 250)]
    assert outcomes[0].detail.endswith("(rcpt)")
    assert [m.message_id for m in server.messages] == ["<2@digest.test>"]
    assert server.connections == 2  # the first one's state was unknown: not reused


def test_pooled_connection_closed_while_idle_is_replaced_without_failing_the_message(
    smtp_server: SmtpServer,
) -> None:
    async def scenario() -> list[Outcome]:
        async with SmtpSender(settings(smtp_server, connections=1)) as sender:
            first = await send_one(sender, mail(1))
            smtp_server.drop("mail", times=1)  # as a relay closing an idle connection does
            return [first, await send_one(sender, mail(2))]

    outcomes = asyncio.run(scenario())

    assert [o.reply for o in outcomes] == [None, None]
    assert len(smtp_server.messages) == 2
    assert smtp_server.connections == 2


def test_drop_on_a_fresh_connection_is_transient_and_not_retried(smtp_server: SmtpServer) -> None:
    smtp_server.drop("mail")

    [outcome] = send(settings(smtp_server), mail(1))

    assert (outcome.reply, outcome.code) == (TRANSIENT, None)
    assert smtp_server.connections == 1


def test_server_down_then_back_fails_transiently_then_sends(smtp_server: SmtpServer) -> None:
    async def scenario() -> list[Outcome]:
        async with SmtpSender(settings(smtp_server, connections=1)) as sender:
            before = await send_one(sender, mail(1))
            smtp_server.stop()
            during = await send_one(sender, mail(2))
            smtp_server.start()
            after = await send_one(sender, mail(3))
            return [before, during, after]

    outcomes = asyncio.run(scenario())

    assert [o.reply for o in outcomes] == [None, TRANSIENT, None]
    assert [m.message_id for m in smtp_server.messages] == ["<1@digest.test>", "<3@digest.test>"]


def test_utf8_address_on_a_server_without_smtputf8_fails_permanently_without_sending(
    smtp_server: SmtpServer,
) -> None:
    [outcome] = send(settings(smtp_server), mail(1, "josé@example.org"))

    assert outcome.reply is PERMANENT
    assert outcome.detail.startswith("the server does not support SMTPUTF8")
    assert "josé@example.org" in outcome.detail
    assert smtp_server.messages == []


def test_utf8_address_on_a_server_with_smtputf8_is_sent_with_the_smtputf8_option(
    smtp_server: SmtpServer,
) -> None:
    smtp_server.smtputf8 = True

    [outcome] = send(settings(smtp_server), mail(1, "josé@example.org"))

    assert outcome.reply is None
    [received] = smtp_server.messages
    assert received.recipients == ["josé@example.org"]
    assert "SMTPUTF8" in received.mail_options


def test_international_domain_alone_needs_no_smtputf8(smtp_server: SmtpServer) -> None:
    [outcome] = send(settings(smtp_server), mail(1, "reader@bücher.example"))

    assert outcome.reply is None
    assert smtp_server.recipients == ["reader@xn--bcher-kva.example"]


class PacingClock(FakeTime):
    """FakeTime that notes what the server had when each of the sender's sleeps began."""

    def __init__(self, server: SmtpServer) -> None:
        super().__init__()
        self.server = server
        self.received: list[int] = []

    async def sleep(self, seconds: float) -> None:
        self.received.append(len(self.server.messages))
        await super().sleep(seconds)


def send_paced(config: SmtpSettings, time: PacingClock, *mails: Outgoing) -> list[Outcome]:
    return asyncio.run(_send(SmtpSender(config, clock=time.clock, sleep=time.sleep), mails))


def test_a_rate_limit_paces_every_message_across_connections_and_all_arrive(
    smtp_server: SmtpServer,
) -> None:
    time = PacingClock(smtp_server)
    mails = [mail(key, f"reader{key}@example.org") for key in range(1, 13)]

    outcomes = send_paced(settings(smtp_server, connections=4, rate=Rate(10, 1.0)), time, *mails)

    assert all(o.reply is None for o in outcomes), outcomes
    assert len(smtp_server.messages) == 12
    assert time.sleeps == pytest.approx([0.1] * 11)  # one slot each, the first at once
    # The server never had more messages than slots handed out: no connection ran ahead.
    assert all(had <= n + 1 for n, had in enumerate(time.received)), time.received


def test_a_retry_on_a_stale_pooled_connection_keeps_the_messages_slot(
    smtp_server: SmtpServer,
) -> None:
    time = PacingClock(smtp_server)

    async def scenario() -> list[Outcome]:
        config = settings(smtp_server, connections=1, rate=Rate(10, 1.0))
        async with SmtpSender(config, clock=time.clock, sleep=time.sleep) as sender:
            first = await send_one(sender, mail(1))
            smtp_server.drop("mail", times=1)  # the relay closed the idle connection
            return [first, await send_one(sender, mail(2))]

    outcomes = asyncio.run(scenario())

    assert [o.reply for o in outcomes] == [None, None]
    assert smtp_server.connections == 2
    assert time.sleeps == pytest.approx([0.1])  # two messages, two slots: none for the retry


def test_without_a_rate_limit_the_sender_never_sleeps(smtp_server: SmtpServer) -> None:
    async def sleep(seconds: float) -> None:
        raise AssertionError(f"slept {seconds} s")

    sender = SmtpSender(settings(smtp_server, connections=2), sleep=sleep)

    outcomes = asyncio.run(_send(sender, [mail(key) for key in range(10)]))

    assert all(o.reply is None for o in outcomes)


def test_dry_run_accepts_everything_without_a_network() -> None:
    dry_run = DryRunSender()  # takes no settings: there is nowhere it could connect to

    outcomes = asyncio.run(_send(dry_run, [mail(key) for key in range(5)]))

    assert [(o.key, o.reply) for o in outcomes] == [(key, None) for key in range(5)]


def test_settings_reject_an_unknown_security_mode() -> None:
    with pytest.raises(ValueError, match="security"):
        SmtpSettings(host="localhost", port=25, security="ssl")
