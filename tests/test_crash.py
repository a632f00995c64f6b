"""SIGKILL at each step of a delivery, for real: `digest send` and `digest serve` as processes.

A killed sender leaves its claims `sending` under a lease nobody renews. Until the lease runs out
nobody may send them (that would duplicate what the dead process may have sent); after it, the
next run sends each of them. The only copies the relay may see twice are the messages it had
accepted before the kill (RELIABILITY rule 7), and each such copy is identical to the first:
same Message-ID, same Date, same body. The clock is injected with --now; nothing sleeps.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_fixtures import Cli, five_articles
from processes import deliveries, finish, running_daemon, start, wait_for
from smtp_server import Received, SmtpServer
from sqlalchemy import Connection

from digest import database
from digest.domain import DeliveryStatus, RunSummary

READERS = [f"reader{n}@example.org" for n in range(3)]
LEASE = timedelta(seconds=900)  # DIGEST_LEASE_SECONDS' default


class LedgerLock:
    """Another client holding the deliveries table, so a sender cannot record what it sent."""

    def __init__(self, url: str) -> None:
        self._engine = database.connect(url)
        self._conn: Connection | None = None

    def take(self) -> None:
        self._conn = self._engine.connect()
        self._conn.begin()  # BEGIN IMMEDIATE on SQLite: the write lock
        if self._engine.dialect.name == "postgresql":
            self._conn.exec_driver_sql("LOCK TABLE deliveries IN EXCLUSIVE MODE")

    def release(self) -> None:
        if self._conn is not None:
            self._conn.rollback()
            self._conn.close()
        self._engine.dispose()


def _after_claiming(server: SmtpServer, _: LedgerLock) -> Callable[[], bool]:
    # Claims are committed before any SMTP: a connection the relay sits on means they are made.
    held = server.hold("connect")
    return held.reached.is_set


def _while_the_server_holds_the_message(server: SmtpServer, _: LedgerLock) -> Callable[[], bool]:
    server.slow("data", 0, times=1)  # the first message goes through ...
    held = server.hold("data")  # ... the second is read to its final dot and never answered
    return held.reached.is_set


def _after_accepting_before_the_commit(server: SmtpServer, lock: LedgerLock) -> Callable[[], bool]:
    def lock_before_the_last(received: Received) -> None:
        if len(server.messages) == len(READERS) - 1:  # the last one is about to get its 250
            lock.take()

    server.on_accept = lock_before_the_last
    return lambda: len(server.messages) == len(READERS)


# Each step, and how many messages the relay has accepted when the sender dies there.
STEPS = {
    "after claiming": (_after_claiming, 0),
    "while the server holds the message before replying": (_while_the_server_holds_the_message, 1),
    "after the server accepted, before the ledger commit": (
        _after_accepting_before_the_commit,
        len(READERS),
    ),
}


@contextlib.contextmanager
def killable(command: str, now: datetime) -> Iterator[subprocess.Popen[str]]:
    """`digest send --now` or `digest serve` (whose clock is the real one) as a process."""
    env = dict(os.environ)  # the cli fixtures' DIGEST_* settings
    if command == "send":
        process = start(env, "send", "--now", now.isoformat())
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate()
    else:
        with running_daemon(env) as (process, _):
            yield process


def fingerprint(received: Received) -> tuple[str | None, str | None, list[str]]:
    """Message-ID, Date and every decoded part: what a receiver compares to drop a duplicate."""
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    parts = [part.get_content() for part in message.walk() if not part.is_multipart()]
    return message["Message-ID"], message["Date"], parts


@pytest.fixture
def due_readers(
    upgraded: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], datetime]:
    """Three daily readers due at the returned instant, all in one batch over one connection."""
    monkeypatch.setenv("DIGEST_SMTP_CONNECTIONS", "1")
    monkeypatch.setenv("DIGEST_BATCH_SIZE", "10")

    def seed(command: str) -> datetime:
        # serve plans at the real clock; send at an injected one.
        now = datetime.now(UTC) if command == "serve" else datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
        confirmed = (now - timedelta(days=3)).isoformat()
        for address in READERS:
            added = upgraded(
                "subscribers", "add", address, "--frequency", "daily", "--confirmed",
                "--now", confirmed,
            )  # fmt: skip
            assert added.code == 0, added.err
        articles = str(five_articles(tmp_path))
        assert upgraded("articles", "import", articles, "--now", confirmed).code == 0
        return now

    return seed


@pytest.mark.parametrize("command", ["send", "serve"])
@pytest.mark.parametrize("step", STEPS.values(), ids=STEPS.keys())
def test_sigkill_at_any_step_loses_nothing_and_repeats_only_what_the_relay_had_accepted(
    due_readers: Callable[[str], datetime],
    upgraded: Cli,
    smtp_server: SmtpServer,
    database_url: str,
    command: str,
    step: tuple[Callable[[SmtpServer, LedgerLock], Callable[[], bool]], int],
) -> None:
    arm, accepted = step
    now = due_readers(command)
    lock = LedgerLock(database_url)
    reached = arm(smtp_server, lock)
    try:
        with killable(command, now) as process:
            wait_for(lambda: reached() or process.poll() is not None, "the step to kill at")
            assert process.poll() is None, "the process ended before the step to kill at"
            process.send_signal(signal.SIGKILL)
            process.wait()
    finally:
        lock.release()
    accepted_before_the_kill = list(smtp_server.messages)
    assert len(accepted_before_the_kill) == accepted
    assert process.returncode == -signal.SIGKILL
    assert {status for _, status in deliveries(database_url)} == {DeliveryStatus.SENDING}

    # A restart within the lease sends nothing: the dead process may still have been sending.
    soon = upgraded("send", "--now", now.isoformat())
    assert soon.last_line == "sent 0, skipped 0, retrying 0, failed 0"
    assert smtp_server.messages == accepted_before_the_kill

    # serve claimed a moment after `now`: a minute's margin is past its lease too.
    later = upgraded("send", "--now", (now + LEASE + timedelta(minutes=1)).isoformat())

    assert later.code == 0, later.err
    assert deliveries(database_url) == [(reader, DeliveryStatus.SENT) for reader in READERS]
    copies: dict[str, list[Received]] = {reader: [] for reader in READERS}
    for message in smtp_server.messages:
        (reader,) = message.recipients
        copies[reader].append(message)
    twice = {reader for reader, got in copies.items() if len(got) > 1}
    assert all(copies.values()), "every reader got their digest"
    assert all(len(got) <= 2 for got in copies.values())
    assert twice == {r for m in accepted_before_the_kill for r in m.recipients}
    for reader in twice:
        first, again = copies[reader]
        assert fingerprint(again) == fingerprint(first)


def announced(process: subprocess.Popen[str], text: str) -> None:
    """Read the process's stderr until a line containing text (pytest's timeout bounds it)."""
    assert process.stderr is not None
    while text not in (line := process.stderr.readline()):
        assert line, f"stderr ended before {text!r}"


def test_sigterm_lets_digest_send_finish_its_batch_then_exit_0_leaving_the_rest_for_the_next_run(
    due_readers: Callable[[str], datetime],
    upgraded: Cli,
    smtp_server: SmtpServer,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = due_readers("send")
    monkeypatch.setenv("DIGEST_BATCH_SIZE", "2")  # two readers in the first batch, one after
    smtp_server.slow("data", 0, times=1)
    held = smtp_server.hold("data")  # the first batch's second message waits for its reply
    process = start(dict(os.environ), "send", "--now", now.isoformat())
    wait_for(lambda: held.reached.is_set() or process.poll() is not None, "the held message")
    process.send_signal(signal.SIGTERM)
    announced(process, "SIGTERM: finishing the batch in flight")
    held.release()
    stopped = finish(process)

    assert stopped.code == 0, stopped.err
    assert stopped.summary == RunSummary(sent=2)
    assert "stopped early: 1 due digest(s) left for the next run" in stopped.err
    assert "Traceback" not in stopped.err
    statuses = [status for _, status in deliveries(database_url)]
    assert sorted(statuses) == [DeliveryStatus.PENDING, DeliveryStatus.SENT, DeliveryStatus.SENT]

    rest = upgraded("send", "--now", now.isoformat())

    assert rest.last_line == "sent 1, skipped 0, retrying 0, failed 0"
    assert deliveries(database_url) == [(reader, DeliveryStatus.SENT) for reader in READERS]
    assert sorted(r for m in smtp_server.messages for r in m.recipients) == READERS


def test_a_second_sigterm_stops_digest_send_at_once_and_the_lease_keeps_its_claims(
    due_readers: Callable[[str], datetime], smtp_server: SmtpServer, database_url: str
) -> None:
    now = due_readers("send")
    held = smtp_server.hold("data")
    process = start(dict(os.environ), "send", "--now", now.isoformat())
    try:
        wait_for(lambda: held.reached.is_set() or process.poll() is not None, "the held message")
        process.send_signal(signal.SIGTERM)
        announced(process, "SIGTERM: finishing the batch in flight")
        process.send_signal(signal.SIGTERM)
        stopped = finish(process)
    finally:
        held.release()

    assert stopped.code == 128 + signal.SIGTERM
    assert "Traceback" not in stopped.err
    # Still claimed, under a lease: the next run after it sends them, as after a SIGKILL.
    assert {status for _, status in deliveries(database_url)} == {DeliveryStatus.SENDING}
