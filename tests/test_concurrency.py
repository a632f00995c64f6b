"""Several senders on one database at once: each due digest goes out once and is recorded once.

PostgreSQL for the processes that scale out (claims with FOR UPDATE SKIP LOCKED), SQLite for the
single-host case (BEGIN IMMEDIATE: the second process waits), and on both the fencing that keeps a
worker whose lease ran out from recording what another worker now holds.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections import Counter
from pathlib import Path

import pytest
from cli_fixtures import Cli
from db_fixtures import snapshot
from pg_cluster import PgCluster
from processes import (
    MONDAY_0900,
    digest_env,
    finish,
    seed_due_readers,
    sent_rows,
    start,
)
from smtp_server import SmtpServer

from digest import database


@pytest.fixture
def postgres_url(pg_cluster: PgCluster) -> str:
    return pg_cluster.create_database(f"t_{uuid.uuid4().hex[:16]}")


def test_three_senders_on_one_postgresql_database_send_3000_readers_one_digest_each(
    postgres_url: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    # Small batches, so that the three really take turns claiming from the same backlog.
    env = digest_env(postgres_url, smtp_server, DIGEST_BATCH_SIZE="50")
    readers = seed_due_readers(env, tmp_path, 3000)
    senders = [start(env, "send", "--now", MONDAY_0900) for _ in range(3)]
    results = [finish(process, patience=90) for process in senders]
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
    readers = seed_due_readers(env, tmp_path, 600)
    senders = [start(env, "send", "--now", MONDAY_0900) for _ in range(2)]
    results = [finish(process, patience=90) for process in senders]
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
