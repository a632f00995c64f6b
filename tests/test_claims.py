"""Claims in constant time: each claim reads its batch off an index, whatever the ledger's size.

The plans are read from the statements `Ledger.claim` itself sends, captured as they go to the
database, so a later change to the claim cannot bring back a sort of every claimable row.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, String, cast, event, insert, literal, select, update

from digest.ledger import Ledger
from digest.models import DeliveryRow, SubscriberRow, UtcDateTime
from digest.store import Store

D, S = DeliveryRow, SubscriberRow
PLANNED = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=15)
BATCH = 500


def seed_pending(engine: Engine, count: int) -> None:
    """`count` active readers with one pending delivery each, due at PLANNED: what planning
    leaves, written in two statements so that the ledger can be big enough to need its index."""
    numbers = select(literal(1).label("i")).cte("numbers", recursive=True)
    numbers = numbers.union_all(select(numbers.c.i + 1).where(numbers.c.i < count))
    i = numbers.c.i
    address = literal("reader") + cast(i, String) + literal("@example.org")
    at = literal(PLANNED, UtcDateTime())
    readers = {
        "id": i,
        "email": address,
        "email_key": address,
        "frequency": literal("weekly"),
        "status": literal("active"),
        "timezone": literal("UTC"),
        "token_version": literal(1),
        "created_at": at,
        "confirmed_at": at,
        "cursor": literal(0),
        "anchor": at,
        "bounces": literal(0),
    }
    deliveries = {
        "id": i,
        "subscriber_id": i,
        "period_key": literal("2026-W49"),
        "status": literal("pending"),
        "slot_at": at,
        "cursor_from": literal(0),
        "cursor_to": literal(1),
        "attempts": literal(0),
        "next_attempt_at": at,
        "message_id": literal("<") + cast(i, String) + literal("@example.org>"),
        "planned_at": at,
    }
    with engine.begin() as conn:
        for table, columns in ((S, readers), (D, deliveries)):
            conn.execute(insert(table).from_select(list(columns), select(*columns.values())))


@contextmanager
def statements_sent(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    sent: list[tuple[str, Any]] = []

    def note(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", note)


def plan_of(engine: Engine, statement: str, parameters: Any) -> str:
    """The plan of a statement as sent. PostgreSQL plans it with sequential scans off: on a test's
    few thousand rows reading the whole table is cheapest, on a real ledger it is not, and what
    matters here is that an index path exists that needs no sort."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        else:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            rows = conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)
        return "\n".join(str(row[-1]) for row in rows)


def test_a_claim_reads_its_batch_off_an_index_in_order_without_sorting_the_claimable_rows(
    store: Store, ledger: Ledger
) -> None:
    engine = store.engine
    sqlite = engine.dialect.name == "sqlite"
    seed_pending(engine, 5000)
    with engine.begin() as conn:
        # Three leases that ran out, so that both of the claim's statements take rows.
        conn.execute(
            update(D)
            .where(D.id <= 3)
            .values(status="sending", lease_owner="gone", lease_until=PLANNED)
        )
    if not sqlite:  # the statistics autovacuum would have gathered by now
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    with statements_sent(engine) as sent:
        claims = ledger.claim("w1", PLANNED + LEASE, LEASE, BATCH)
    assert len(claims) == BATCH
    assert {1, 2, 3} <= {c.delivery_id for c in claims}
    # The statements that choose rows are those with a LIMIT: the lease-holders', then the due.
    plans = [
        plan_of(engine, statement, parameters)
        for statement, parameters in sent
        if "LIMIT" in statement
    ]
    for plan in plans:
        # A range of an index on the claimable condition, read in its order: no sort, no scan of
        # the table, and (PostgreSQL) the limit right over the rows it locks.
        if sqlite:
            assert "TEMP B-TREE" not in plan and "SCAN deliveries" not in plan, plan
            assert re.search(r"USING INDEX \w+ \((next_attempt_at|lease_until)<\?\)", plan), plan
        else:
            assert "Sort" not in plan and "Seq Scan" not in plan, plan
            assert re.search(r"Index Cond: \((next_attempt_at|lease_until) <", plan), plan
            assert re.search(r"Limit .*\n.*LockRows .*\n.*Index Scan", plan), plan
    leased, due = plans
    assert "ix_deliveries_leased" in leased and "ix_deliveries_due" in due
