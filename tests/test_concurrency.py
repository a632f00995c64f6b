"""Several senders on one database at once: each due digest goes out once and is recorded once.

PostgreSQL for the processes that scale out (claims with FOR UPDATE SKIP LOCKED), SQLite for the
single-host case (BEGIN IMMEDIATE: the second process waits), and on both the fencing that keeps a
worker whose lease ran out from recording what another worker now holds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import pytest
from cli_fixtures import Cli
from db_fixtures import deliveries_of, seed, snapshot
from pg_cluster import PgCluster
from processes import (
    CONFIRMED,
    MONDAY_0900,
    PATIENCE,
    digest_env,
    finish_all,
    last_run_finished,
    logged_runs,
    running_daemon,
    sent_rows,
    start,
    stop_cleanly,
    wait_for,
)
from smtp_server import SmtpServer
from sqlalchemy import Engine, select

from digest import app as composition
from digest import database
from digest import ledger as ledger_module
from digest.app import Services
from digest.config import load
from digest.dispatch import run_once
from digest.domain import (
    ArticleDraft,
    Claim,
    DeliveryStatus,
    Frequency,
    RunSummary,
    SubscriberDraft,
)
from digest.mailer import Outcome, Outgoing, Sender, SmtpSender
from digest.models import DeliveryRow

NEWS = ArticleDraft(
    url="https://miasfeed.example/articles/sleep",
    title="Sleep and the heart",
    summary="A study.",
    category="Medical News & Research",
    reading_minutes=2,
    published_at=datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
)


def seed_due_readers(database_url: str, count: int) -> list[str]:
    """count weekly readers confirmed at CONFIRMED, and three articles as new: all due at
    MONDAY_0900. Returns their addresses."""
    readers = [f"reader{n:05d}@example.org" for n in range(count)]
    at = datetime.fromisoformat(CONFIRMED)
    seed(
        database_url,
        dict.fromkeys(readers, Frequency.WEEKLY),
        range(3),
        confirmed_at=at,
        imported_at=at,
    )
    return readers


@pytest.fixture
def postgres_url(pg_cluster: PgCluster) -> str:
    return pg_cluster.create_database(f"t_{uuid.uuid4().hex[:16]}")


def test_three_senders_on_one_postgresql_database_send_3000_readers_one_digest_each(
    postgres_url: str, smtp_server: SmtpServer
) -> None:
    # Small batches, so that the three really take turns claiming from the same backlog.
    env = digest_env(postgres_url, smtp_server, DIGEST_BATCH_SIZE="50")
    readers = seed_due_readers(postgres_url, 3000)
    senders = [start(env, "send", "--now", MONDAY_0900) for _ in range(3)]
    results = finish_all(senders, patience=90)
    assert [r.code for r in results] == [0, 0, 0], [r.err for r in results]
    sent = [r.summary.sent for r in results]
    assert sum(sent) == len(readers)
    assert sum(n > 0 for n in sent) >= 2, f"the senders did not overlap: {sent}"
    assert len(smtp_server.messages) == len(readers)
    assert len({m.message_id for m in smtp_server.messages}) == len(readers)
    assert sorted(smtp_server.recipients) == readers
    assert sent_rows(postgres_url) == Counter(readers)


def test_two_senders_on_one_sqlite_file_wait_for_each_other_and_send_each_reader_once(
    smtp_server: SmtpServer, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'digest.db'}"
    env = digest_env(database_url, smtp_server, DIGEST_BATCH_SIZE="20")
    readers = seed_due_readers(database_url, 600)
    senders = [start(env, "send", "--now", MONDAY_0900) for _ in range(2)]
    results = finish_all(senders, patience=90)
    # The second waits for the first's write lock (busy_timeout) instead of failing.
    assert [r.code for r in results] == [0, 0], [r.err for r in results]
    assert not [r.err for r in results if "Traceback" in r.err or "locked" in r.err]
    sent = [r.summary.sent for r in results]
    assert sum(sent) == len(readers)
    assert all(sent), f"the senders did not overlap: {sent}"
    assert len({m.message_id for m in smtp_server.messages}) == len(readers)
    assert sorted(smtp_server.recipients) == readers
    assert sent_rows(database_url) == Counter(readers)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_sqlite_file_locked_past_the_busy_timeout_is_one_plain_line_and_nothing_sent(
    three_readers: Cli,
    database_url: str,
    smtp_server: SmtpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_MS", 200)
    before = snapshot(database_url)
    other = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # e.g. a backup or a sqlite3 shell holding the write lock
        result = three_readers("send", "--now", MONDAY_0900)
    finally:
        other.close()
    assert result.code == 2
    assert result.err.count("\n") == 1
    assert result.err.startswith("error: the database is busy")
    assert smtp_server.messages == []
    assert snapshot(database_url) == before


def test_two_daemons_on_one_postgresql_database_send_one_digest_per_reader_per_period(
    postgres_url: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    env = digest_env(
        postgres_url, smtp_server, DIGEST_BATCH_SIZE="20", DIGEST_DISPATCH_INTERVAL_SECONDS="1"
    )
    # Due now on the real clock, as a daemon sees it: confirmed long ago, with news since.
    long_ago = datetime.now(UTC) - timedelta(days=40)
    by_reader = {f"{f}{n:03d}@example.org": f for f in Frequency for n in range(150)}
    seed(postgres_url, by_reader, range(3), confirmed_at=long_ago, imported_at=long_ago)
    readers = list(by_reader)
    # A relay slower than two daemons' startup is apart, so that both take part.
    smtp_server.slow("data", 0.05)
    logs = [tmp_path / "daemon-a.log", tmp_path / "daemon-b.log"]
    with (
        running_daemon(env, log=logs[0]) as (a, port_a),
        running_daemon(env, log=logs[1]) as (b, port_b),
    ):
        wait_for(lambda: len(smtp_server.messages) >= len(readers), "every reader's digest")
        # Two runs of each that ended since: the later began after every digest was out, so
        # neither daemon has a batch in flight, and neither found more to send.
        since = datetime.now(UTC)
        ended: dict[int, set[datetime]] = {port_a: set(), port_b: set()}

        def both_ran_twice_more() -> bool:
            for port, runs in ended.items():
                finished = last_run_finished(port)
                if finished is not None and finished > since:
                    runs.add(finished)
            return all(len(runs) >= 2 for runs in ended.values())

        wait_for(both_ran_twice_more, "two more scheduled runs of each daemon")
        stop_cleanly(a)
        stop_cleanly(b)
    sent = [sum(run.sent for run in logged_runs(log)) for log in logs]
    assert all(sent), f"the daemons did not overlap: {sent}"
    assert sum(sent) == len(readers)
    assert len(smtp_server.messages) == len(readers)
    assert len({m.message_id for m in smtp_server.messages}) == len(readers)
    assert sorted(smtp_server.recipients) == sorted(readers)
    assert sent_rows(postgres_url) == Counter(readers)


class Around:
    """A sender around the relay's, for a test to step in as batches go out."""

    def __init__(self, relay: Sender) -> None:
        self._relay = relay

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class Stalled(Around):
    """A sender whose relay accepts each batch, then stalls before the worker hears back.

    `delivered` is set once the relay has the messages; nothing is returned until `resume` is set:
    the worker is still sending, as far as its ledger knows, for as long as the test wants.
    """

    def __init__(self, relay: Sender) -> None:
        super().__init__(relay)
        self.delivered = asyncio.Event()
        self.resume = asyncio.Event()

    async def send_many(
        self, mails: Sequence[Outgoing], still_ours: Callable[[int], bool] = lambda _key: True
    ) -> list[Outcome]:
        outcomes = await self._relay.send_many(mails, still_ours)
        self.delivered.set()
        await self.resume.wait()
        return outcomes


async def reached(event: asyncio.Event, run: asyncio.Task[RunSummary]) -> None:
    """Wait for a stalled sender's event; fail at once if its run ended (or failed) first."""
    waiting = asyncio.create_task(event.wait())
    await asyncio.wait({waiting, run}, timeout=PATIENCE, return_when=asyncio.FIRST_COMPLETED)
    if not event.is_set():
        waiting.cancel()
        ended = f"ended first: {run.result()!r}" if run.done() else "timed out"
        raise AssertionError(f"the run never reached its send: it {ended}")


def ledger(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    """Deliveries and readers: what recording a send may change (the runs table grows anyway)."""
    tables = snapshot(engine)
    return {name: tables[name] for name in ("deliveries", "subscribers")}


@pytest.fixture
def services(database_url: str, smtp_server: SmtpServer, tmp_path: Path) -> Iterator[Services]:
    """digest's services in this process, with one weekly reader due at MONDAY_0900."""
    (tmp_path / "empty.toml").write_text("")
    env = digest_env(database_url, smtp_server, DIGEST_CONFIG=str(tmp_path / "empty.toml"))
    services = composition.build(load(None, env), check_schema=False)
    database.upgrade(services.store.engine)
    confirmed = datetime.fromisoformat(CONFIRMED)
    services.store.add_subscribers(
        [SubscriberDraft("reader@example.org", Frequency.WEEKLY, "UTC")],
        confirmed=True,
        now=confirmed,
    )
    services.store.upsert_articles([NEWS], confirmed + timedelta(hours=1))
    yield services
    services.close()


@pytest.mark.parametrize("late", ["while_the_other_holds_it", "after_the_other_recorded_it"])
def test_a_worker_whose_lease_ran_out_mid_send_records_nothing_and_the_reader_has_one_sent_row(
    late: str, services: Services, database_url: str, smtp_server: SmtpServer
) -> None:
    store = services.store
    monday = datetime.fromisoformat(MONDAY_0900)
    # A's clock stands still (a paused or skewed worker): its renewals only ever reach
    # monday + lease, and B, a minute later by its own clock, finds the lease run out.
    lease = timedelta(seconds=0.3)  # short, so that A's renewal really runs meanwhile
    job_a = dataclasses.replace(services.job(monday), lease=lease)
    job_b = dataclasses.replace(services.job(monday + timedelta(minutes=1)), lease=lease)

    async def race() -> tuple[RunSummary, RunSummary, list[dict[str, list[tuple[object, ...]]]]]:
        mail = services.digest_mail()
        async with SmtpSender(services.smtp()) as relay_a, SmtpSender(services.smtp()) as relay_b:
            a, b = Stalled(relay_a), Stalled(relay_b)
            run_a = asyncio.create_task(
                run_once(job_a, services.ledger, mail, a, lambda: job_a.now)
            )
            await reached(a.delivered, run_a)  # the relay has A's copy; A has not recorded it
            run_b = asyncio.create_task(
                run_once(job_b, services.ledger, mail, b, lambda: job_b.now)
            )
            await reached(b.delivered, run_b)  # B reclaimed the expired lease and sent again
            if late == "after_the_other_recorded_it":
                b.resume.set()
                await run_b
            before = ledger(store.engine)
            a.resume.set()
            summary_a = await run_a  # the late finisher records
            after = ledger(store.engine)
            b.resume.set()
            summary_b = await run_b
            return summary_a, summary_b, [before, after]

    summary_a, summary_b, (before, after) = asyncio.run(race())
    assert after == before  # A's record changed nothing
    assert (summary_a.sent, summary_b.sent) == (0, 1)
    assert deliveries_of(services.ledger.engine, "reader@example.org") == [
        ("2026-W49", DeliveryStatus.SENT, 1, None)
    ]
    assert sent_rows(database_url) == Counter(["reader@example.org"])
    # The relay got two copies (RELIABILITY rule 7): identical, so the receiver can drop one.
    first, second = smtp_server.messages
    assert first.data == second.data


@pytest.mark.parametrize("meanwhile", ["another_worker_sent_it", "nobody_took_it"])
def test_a_worker_that_stalls_past_its_lease_before_sending_sends_only_what_it_still_holds(
    meanwhile: str, services: Services, database_url: str, smtp_server: SmtpServer
) -> None:
    monday = datetime.fromisoformat(MONDAY_0900)
    a_now = [monday]
    job_a = services.job(monday)  # the default lease: no renewal comes round during the test
    job_b = services.job(monday + job_a.lease + timedelta(minutes=1))
    stalled = smtp_server.hold("connect")  # A's connection waits for its greeting

    async def race() -> tuple[RunSummary, RunSummary]:
        mail = services.digest_mail()
        async with SmtpSender(services.smtp()) as relay_a:
            run_a = asyncio.create_task(
                run_once(job_a, services.ledger, mail, relay_a, lambda: a_now[0])
            )
            assert await asyncio.to_thread(stalled.reached.wait, PATIENCE), "A never connected"
            summary_b = RunSummary()
            if meanwhile == "another_worker_sent_it":
                async with SmtpSender(services.smtp()) as relay_b:
                    summary_b = await run_once(
                        job_b, services.ledger, mail, relay_b, lambda: job_b.now
                    )
            a_now[0] = job_b.now  # A wakes up past its lease, with its message not yet begun
            stalled.release()
            return await run_a, summary_b

    summary_a, summary_b = asyncio.run(race())
    # Whoever holds the claim sends it, once: B if it took it, else A after claiming it again.
    expected = (0, 1) if meanwhile == "another_worker_sent_it" else (1, 0)
    assert (summary_a.sent, summary_b.sent) == expected
    assert [m.recipients for m in smtp_server.messages] == [["reader@example.org"]]
    assert sent_rows(database_url) == Counter(["reader@example.org"])


def test_a_worker_whose_renewal_finds_its_claim_taken_does_not_send_it(
    services: Services, database_url: str, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monday = datetime.fromisoformat(MONDAY_0900)
    # A's clock stands still (a skewed worker): by its own clock its lease never runs out, and
    # only its renewal can tell it that B, a minute later, has taken the claim.
    lease = timedelta(seconds=0.3)  # renewed every 0.1 s
    job_a = dataclasses.replace(services.job(monday), lease=lease)
    job_b = dataclasses.replace(services.job(monday + timedelta(minutes=1)), lease=lease)
    stalled = smtp_server.hold("connect")  # A's connection waits for its greeting
    lost = threading.Event()
    extend_lease = services.ledger.extend_lease

    def watched(owner: str, claims: Sequence[Claim], until: datetime) -> set[int]:
        held = extend_lease(owner, claims, until)
        if owner == job_a.owner and not held:
            lost.set()
        return held

    monkeypatch.setattr(services.ledger, "extend_lease", watched)

    async def race() -> tuple[RunSummary, RunSummary]:
        mail = services.digest_mail()
        async with SmtpSender(services.smtp()) as relay_a, SmtpSender(services.smtp()) as relay_b:
            run_a = asyncio.create_task(
                run_once(job_a, services.ledger, mail, relay_a, lambda: job_a.now)
            )
            assert await asyncio.to_thread(stalled.reached.wait, PATIENCE), "A never connected"
            summary_b = await run_once(job_b, services.ledger, mail, relay_b, lambda: job_b.now)
            assert await asyncio.to_thread(lost.wait, PATIENCE), "A never renewed its lease"
            stalled.release()
            return await run_a, summary_b

    summary_a, summary_b = asyncio.run(race())
    assert (summary_a.sent, summary_b.sent) == (0, 1)
    assert [m.recipients for m in smtp_server.messages] == [["reader@example.org"]]
    assert sent_rows(database_url) == Counter(["reader@example.org"])


def test_a_batch_still_sending_keeps_its_lease_so_no_other_worker_reclaims_it(
    services: Services, database_url: str, smtp_server: SmtpServer
) -> None:
    store = services.store
    monday = datetime.fromisoformat(MONDAY_0900)
    lease = timedelta(seconds=0.3)  # renewed every 0.1 s while A's relay is slow
    a_now = [monday]
    job_a = dataclasses.replace(services.job(monday), lease=lease)
    job_b = dataclasses.replace(services.job(monday + timedelta(minutes=1)), lease=lease)

    def lease_until() -> datetime | None:
        with store.engine.connect() as conn:
            return conn.scalar(select(DeliveryRow.lease_until))

    async def race() -> tuple[RunSummary, RunSummary]:
        mail = services.digest_mail()
        async with SmtpSender(services.smtp()) as relay_a, SmtpSender(services.smtp()) as relay_b:
            a = Stalled(relay_a)
            run_a = asyncio.create_task(run_once(job_a, services.ledger, mail, a, lambda: a_now[0]))
            await reached(a.delivered, run_a)
            # Ten minutes pass on A's clock while its relay is slow; its renewals follow them.
            a_now[0] = monday + timedelta(minutes=10)
            deadline = asyncio.get_running_loop().time() + PATIENCE
            while (until := lease_until()) is None or until < a_now[0]:
                assert asyncio.get_running_loop().time() < deadline, "the lease was never renewed"
                await asyncio.sleep(0.05)
            # B, a minute after A claimed, is past the first lease but not the renewed one.
            summary_b = await run_once(job_b, services.ledger, mail, relay_b, lambda: job_b.now)
            a.resume.set()
            return await run_a, summary_b

    summary_a, summary_b = asyncio.run(race())
    assert (summary_a.sent, summary_b) == (1, RunSummary())
    assert [m.recipients for m in smtp_server.messages] == [["reader@example.org"]]
    assert sent_rows(database_url) == Counter(["reader@example.org"])


class Watched(Around):
    """A sender that, on its first batch, waits until the worker has the next batch claimed and
    rendered, and notes how many deliveries were claimed each time a batch went on the wire."""

    def __init__(self, relay: Sender, claimed: Callable[[], int], rendered: Callable[[], int]):
        super().__init__(relay)
        self._claimed = claimed
        self._rendered = rendered
        self.claimed_at_each_send: list[int] = []

    async def send_many(
        self, mails: Sequence[Outgoing], still_ours: Callable[[int], bool] = lambda _key: True
    ) -> list[Outcome]:
        claimed = await asyncio.to_thread(self._claimed)
        if not self.claimed_at_each_send:  # the first batch: the second comes meanwhile
            async with asyncio.timeout(PATIENCE):
                while claimed < 2 * len(mails) or self._rendered() < 2 * len(mails):
                    await asyncio.sleep(0.01)
                    claimed = await asyncio.to_thread(self._claimed)
        self.claimed_at_each_send.append(claimed)
        return await self._relay.send_many(mails, still_ours)


def test_the_next_batch_is_claimed_and_rendered_while_one_is_on_the_wire_and_no_further_one(
    database_url: str, smtp_server: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readers = seed_due_readers(database_url, 5)
    (tmp_path / "empty.toml").write_text("")
    env = digest_env(
        database_url, smtp_server, DIGEST_CONFIG=str(tmp_path / "empty.toml"), DIGEST_BATCH_SIZE="2"
    )
    services = composition.build(load(None, env))
    mail = services.digest_mail()
    rendered: list[Claim] = []
    outgoing = mail.outgoing

    def rendering(claim: Claim) -> Outgoing:
        rendered.append(claim)
        return outgoing(claim)

    monkeypatch.setattr(mail, "outgoing", rendering)
    query = select(DeliveryRow.id).where(DeliveryRow.status == DeliveryStatus.SENDING.value)

    def claimed() -> int:
        with services.store.engine.connect() as conn:
            return len(conn.execute(query).all())

    monday = datetime.fromisoformat(MONDAY_0900)

    async def go() -> tuple[RunSummary, list[int]]:
        async with services.sender() as relay:
            watched = Watched(relay, claimed, lambda: len(rendered))
            summary = await run_once(
                services.job(monday), services.ledger, mail, watched, lambda: monday
            )
            return summary, watched.claimed_at_each_send

    try:
        summary, claimed_at_each_send = asyncio.run(go())
    finally:
        services.close()
    assert summary.sent == 5
    assert sorted(m.recipients[0] for m in smtp_server.messages) == readers
    # Batches of 2, 2 and 1: while the first was on the wire the second was claimed and rendered;
    # no batch went out with more than those two claimed.
    assert len(claimed_at_each_send) == 3
    assert claimed_at_each_send[0] == 4
    assert max(claimed_at_each_send) == 4


def test_a_run_told_to_stop_sends_the_batch_in_flight_and_hands_the_prepared_one_back(
    database_url: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    seed_due_readers(database_url, 5)
    (tmp_path / "empty.toml").write_text("")
    env = digest_env(
        database_url, smtp_server, DIGEST_CONFIG=str(tmp_path / "empty.toml"), DIGEST_BATCH_SIZE="2"
    )
    services = composition.build(load(None, env))
    monday = datetime.fromisoformat(MONDAY_0900)
    stop = threading.Event()

    async def go() -> RunSummary:
        async with services.sender() as relay:
            stalled = Stalled(relay)
            stalled.resume.set()
            job = services.job(monday)
            run = asyncio.create_task(
                run_once(
                    job,
                    services.ledger,
                    services.digest_mail(),
                    stalled,
                    lambda: monday,
                    None,
                    stop.is_set,
                )
            )
            await reached(stalled.delivered, run)  # the first batch is on the wire
            stop.set()
            return await run

    try:
        summary = asyncio.run(go())
        left = services.ledger.count_claimable(monday)
    finally:
        services.close()
    assert summary.sent == 2
    assert len(smtp_server.messages) == 2
    assert left == 3  # the batch prepared meanwhile is claimable again at once, not leased away


class Counting:
    """Progress as the CLI's bar takes it: the total once known, and each batch done."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.done = 0

    def start(self, total: int) -> None:
        self.total = total

    def advance(self, count: int) -> None:
        self.done += count


def test_the_first_digests_go_out_while_later_readers_are_still_being_planned(
    database_url: str, smtp_server: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_module, "PLAN_CHUNK", 2)
    readers = seed_due_readers(database_url, 7)
    (tmp_path / "empty.toml").write_text("")
    env = digest_env(
        database_url, smtp_server, DIGEST_CONFIG=str(tmp_path / "empty.toml"), DIGEST_BATCH_SIZE="2"
    )
    services = composition.build(load(None, env))
    monday = datetime.fromisoformat(MONDAY_0900)

    def planned() -> int:
        with services.store.engine.connect() as conn:
            return len(conn.execute(select(DeliveryRow.id)).all())

    planned_at_each_claim: list[int] = []
    claim = services.ledger.claim

    def noting(*args: Any) -> list[Claim]:  # in the run's worker thread, between its planning steps
        planned_at_each_claim.append(planned())
        return claim(*args)

    monkeypatch.setattr(services.ledger, "claim", noting)
    progress = Counting()

    async def go() -> RunSummary:
        async with services.sender() as relay:
            job = services.job(monday)
            return await run_once(
                job, services.ledger, services.digest_mail(), relay, lambda: monday, progress
            )

    try:
        summary = asyncio.run(go())
    finally:
        services.close()
    assert summary.sent == 7
    assert sorted(m.recipients[0] for m in smtp_server.messages) == readers
    assert planned_at_each_claim[0] == 2  # the first batch was claimed after one chunk was planned
    assert (progress.total, progress.done) == (7, 7)
