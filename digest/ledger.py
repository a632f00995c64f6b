"""The delivery ledger: the `deliveries` and `runs` tables, one state machine over them.

Three steps, each its own short transaction: plan (insert `pending` rows; the unique (subscriber,
period) key makes concurrent planners harmless), claim (take a lease, committed before any SMTP),
record (finish only rows whose lease is still ours, advancing the subscriber's cursor and anchor in
the same transaction). Every query of deliveries and runs lives here, the counts and a reader's
erasure included; the readers and articles themselves are store.py's, which the ledger reads
through (the newest article, the groups of active readers), never the reverse. Returns domain
values, never ORM rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Insert,
    Select,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
    update,
)

from digest.database import AnyRow, insert_ignoring_conflicts, random_hex, reading, writing
from digest.domain import (
    EVERYONE,
    Claim,
    DeliveryStatus,
    Frequency,
    Only,
    ReaderGroup,
    Run,
    RunSummary,
    Schedule,
    SentDigest,
    Slot,
    SubscriberStatus,
    retry_delay,
    sendable_slot,
)
from digest.errors import NotFound
from digest.models import DeliveryRow, RunRow, SubscriberRow, UtcDateTime
from digest.store import (
    ERROR_TEXT_LIMIT,
    Readership,
    SelectT,
    Store,
    articles_between,
    count_bounce,
    has_news,
    in_group,
    is_address,
    narrow,
    not_paused,
    read_topics,
)

S, D = SubscriberRow, DeliveryRow
OUTSTANDING = (DeliveryStatus.PENDING, DeliveryStatus.SENDING)
# Readers planned in one statement and transaction: large enough that a million readers take a
# few hundred statements, small enough that the write lock is held for milliseconds.
PLAN_CHUNK = 5000


@dataclass(frozen=True, slots=True)
class PlanRules:
    schedule: Schedule
    max_lateness: timedelta | None
    batch_size: int
    message_domain: str


@dataclass(frozen=True, slots=True)
class FinishRules:
    retry_limit: int
    retry_base: timedelta
    retry_cap: timedelta
    bounce_limit: int


@dataclass(frozen=True, slots=True)
class Planned:
    """One step of planning: deliveries it made pending, and readers it skipped (nothing new)."""

    pending: int
    skipped: int


@dataclass(frozen=True, slots=True)
class Failure:
    claim: Claim
    detail: str
    permanent: bool


class Ledger:
    def __init__(self, store: Store) -> None:
        self.engine = store.engine
        self._store = store

    # -- plan -----------------------------------------------------------------

    def plan(self, now: datetime, rules: PlanRules, only: Only = EVERYONE) -> RunSummary:
        """Insert a pending delivery for every due reader; record readers with nothing new as skipped.

        Returns the skipped count (nothing else is final yet).
        """
        return RunSummary(skipped=sum(step.skipped for step in self.planning(now, rules, only)))

    def planning(self, now: datetime, rules: PlanRules, only: Only = EVERYONE) -> Iterator[Planned]:
        """plan, one step at a time, so a run can send the first digests while it plans the rest.

        Each step plans a chunk of up to PLAN_CHUNK due readers of one group in one INSERT … SELECT
        and its own transaction (short enough for the web pages' writes to go between), and
        yields how many it planned to send and how many it skipped.
        """
        snapshot = self._store.newest_seq(now)
        readership = self._store.readership(only)
        news = has_news(snapshot, readership.topic_sets)
        for slot, group in _due_groups(readership, now, rules):
            yield from self._plan_group(
                slot, _due(group, slot.at, only), snapshot, now, rules, news
            )

    def count_due(self, now: datetime, rules: PlanRules, only: Only = EVERYONE) -> int:
        """What a run at now sends, before it has planned: the deliveries claimable now, and the
        due readers with news (the ones without are skipped)."""
        snapshot = self._store.newest_seq(now)
        readership = self._store.readership(only)
        news = has_news(snapshot, readership.topic_sets)
        waiting = 0
        for slot, group in _due_groups(readership, now, rules):
            due = _due(group, slot.at, only).where(news)
            with_news = select(func.count()).select_from(due.subquery())
            with reading(self.engine) as conn:
                waiting += conn.scalar(with_news) or 0
        return waiting + self.count_claimable(now, only)

    def preview_plan(
        self, now: datetime, rules: PlanRules, only: Only = EVERYONE
    ) -> Iterator[list[Claim]]:
        """What plan would do, as would-be claims (delivery_id 0), in batches; writes nothing."""
        snapshot = self._store.newest_seq(now)
        readership = self._store.readership(only)
        news = has_news(snapshot, readership.topic_sets).label("news")
        for slot, group in _due_groups(readership, now, rules):
            with_news = _due(group, slot.at, only).add_columns(news)
            for batch in self._batches(with_news, rules.batch_size):
                yield [
                    Claim(
                        delivery_id=0,
                        subscriber_id=row.id,
                        email=row.email,
                        frequency=slot.frequency,
                        token_version=row.token_version,
                        period_key=slot.key,
                        cursor_from=row.cursor,
                        # Nothing in their topics: an empty window, which dry_run counts skipped.
                        cursor_to=snapshot if row.news else row.cursor,
                        message_id=f"<{uuid.uuid4().hex}@{rules.message_domain}>",
                        planned_at=now,
                        attempts=0,
                        topics=read_topics(row.topics),
                    )
                    for row in batch
                ]

    def _batches(self, due: Select[*tuple[Any, ...]], size: int) -> Iterator[list[AnyRow]]:
        # Keyset on (anchor, id) rides ix_subscribers_due: a run with nobody due costs one index
        # probe, not a scan of every reader.
        base = due.order_by(S.anchor, S.id).limit(size)
        last: tuple[datetime, int] | None = None
        while True:
            query = base if last is None else base.where(tuple_(S.anchor, S.id) > tuple_(*last))
            with reading(self.engine) as conn:
                rows = list(conn.execute(query))
            if not rows:
                return
            yield rows
            last = (rows[-1].anchor, rows[-1].id)

    def _plan_group(
        self,
        slot: Slot,
        due: Select[*tuple[Any, ...]],
        snapshot: int,
        now: datetime,
        rules: PlanRules,
        news: ColumnElement[bool],
    ) -> Iterator[Planned]:
        """Plan one group's due readers, PLAN_CHUNK at a time."""
        key = tuple_(S.anchor, S.id)
        after = None
        while True:
            chunk = due if after is None else due.where(key > tuple_(*after))
            with writing(self.engine) as conn:
                # The chunk ends at its last reader in (anchor, id) order: the keyset moves on
                # even past a reader whose row conflicted (another planner's) and stays due.
                last = conn.execute(
                    chunk.with_only_columns(S.anchor, S.id)
                    .order_by(S.anchor, S.id)
                    .offset(PLAN_CHUNK - 1)
                    .limit(1)
                ).one_or_none()
                if last is not None:
                    chunk = chunk.where(key <= tuple_(last.anchor, last.id))
                made = conn.execute(
                    self._deliveries_of(chunk, slot, snapshot, now, rules, news).returning(
                        D.subscriber_id, D.status
                    )
                ).all()
                skipped = [sid for sid, status in made if status == DeliveryStatus.SKIPPED.value]
                if skipped:
                    # No mail for an empty window, but the slot is done: advance the anchor, and
                    # the cursor past a window with nothing in the reader's topics (they did not
                    # want those articles; with every topic, the cursor is there already).
                    caught_up = case((S.cursor < snapshot, snapshot), else_=S.cursor)
                    conn.execute(
                        update(S).where(S.id.in_(skipped)).values(anchor=slot.at, cursor=caught_up)
                    )
            if made:
                yield Planned(pending=len(made) - len(skipped), skipped=len(skipped))
            if last is None:
                return
            after = (last.anchor, last.id)

    def _deliveries_of(
        self,
        readers: Select[*tuple[Any, ...]],
        slot: Slot,
        snapshot: int,
        now: datetime,
        rules: PlanRules,
        news: ColumnElement[bool],
    ) -> Insert:
        """INSERT … SELECT: a pending delivery for each reader with news, a skipped one for the rest."""
        status = case(
            (news, DeliveryStatus.PENDING.value),
            else_=DeliveryStatus.SKIPPED.value,
        )
        message_id = "<" + random_hex(self.engine) + f"@{rules.message_domain}>"
        rows = readers.with_only_columns(
            S.id,
            literal(slot.key),
            status,
            literal(slot.at, UtcDateTime()),
            S.cursor,
            literal(snapshot),
            literal(0),
            literal(now, UtcDateTime()),
            message_id,
            literal(now, UtcDateTime()),
            S.topics,
        )
        columns = (
            "subscriber_id", "period_key", "status", "slot_at", "cursor_from", "cursor_to",
            "attempts", "next_attempt_at", "message_id", "planned_at", "topics",
        )  # fmt: skip
        return insert_ignoring_conflicts(self.engine, D).from_select(columns, rows)

    def count_claimable(self, now: datetime, only: Only = EVERYONE) -> int:
        # Once a run and once a /metrics scrape, not once a batch: it reads every claimable row
        # (0.1 to 0.2 s at 1M on either database).
        query = _of_readers(select(func.count()).select_from(D).where(_claimable(now)), only)
        with reading(self.engine) as conn:
            return conn.scalar(query) or 0

    # -- claim ----------------------------------------------------------------

    def claim(
        self, owner: str, now: datetime, lease: timedelta, limit: int, only: Only = EVERYONE
    ) -> list[Claim]:
        """Lease up to `limit` deliveries whose lease has expired, or that are pending and due."""
        with writing(self.engine) as conn:
            chosen: list[int] = []
            for query in _claim_queries(now, only):
                chosen += conn.scalars(query.limit(limit - len(chosen)))
                if len(chosen) == limit:
                    break
            if not chosen:
                return []
            # Compare-and-set (rule 8): a row another claimer took since the select is left alone,
            # even where neither row locks nor BEGIN IMMEDIATE are there to prevent it. The ids go
            # through Python: PostgreSQL may re-run an UPDATE's `IN (SELECT … LIMIT n)` for each
            # row it joins, and so take more than n (seen on a small table).
            ids = list(
                conn.scalars(
                    update(D)
                    .where(D.id.in_(_batch(chosen, conn)), _claimable(now))
                    .values(
                        status=DeliveryStatus.SENDING.value,
                        lease_owner=owner,
                        lease_until=now + lease,
                    )
                    .returning(D.id)
                )
            )
            rows = conn.execute(
                select(
                    D.id,
                    D.subscriber_id,
                    D.period_key,
                    D.cursor_from,
                    D.cursor_to,
                    D.message_id,
                    D.planned_at,
                    D.attempts,
                    S.email,
                    S.frequency,
                    S.token_version,
                    D.topics,
                    S.status.label("subscriber_status"),
                )
                .join(S, S.id == D.subscriber_id)
                .where(D.id.in_(_batch(ids, conn)))
                .order_by(D.id)
            ).all()
            # Checked again here, so an unsubscribe between planning and sending is honoured.
            active = SubscriberStatus.ACTIVE.value
            gone = [r.id for r in rows if r.subscriber_status != active]
            if gone:
                conn.execute(
                    update(D)
                    .where(D.id.in_(gone))
                    .values(
                        status=DeliveryStatus.SKIPPED.value,
                        lease_owner=None,
                        lease_until=None,
                        last_error="the reader is no longer subscribed",
                    )
                )
        return [
            Claim(
                delivery_id=r.id,
                subscriber_id=r.subscriber_id,
                email=r.email,
                frequency=Frequency(r.frequency),
                token_version=r.token_version,
                period_key=r.period_key,
                cursor_from=r.cursor_from,
                cursor_to=r.cursor_to,
                message_id=r.message_id,
                planned_at=r.planned_at,
                attempts=r.attempts,
                topics=read_topics(r.topics),
            )
            for r in rows
            if r.subscriber_status == active
        ]

    # -- record ---------------------------------------------------------------

    def record(
        self,
        owner: str,
        now: datetime,
        sent: Sequence[Claim],
        failures: Sequence[Failure],
        rules: FinishRules,
    ) -> RunSummary:
        """Finish a batch in one transaction. Rows whose lease is no longer ours are left alone."""
        summary = RunSummary()
        with writing(self.engine) as conn:
            if sent:
                done = conn.execute(
                    update(D)
                    .where(
                        D.id.in_([c.delivery_id for c in sent]),
                        D.lease_owner == owner,
                        D.status == DeliveryStatus.SENDING.value,
                    )
                    .values(
                        status=DeliveryStatus.SENT.value,
                        sent_at=now,
                        attempts=D.attempts + 1,
                        lease_owner=None,
                        lease_until=None,
                        last_error=None,
                    )
                    .returning(D.subscriber_id, D.cursor_to, D.slot_at)
                ).all()
                if done:
                    conn.execute(
                        update(S)
                        .where(S.id == bindparam("b_id"))
                        .values(
                            cursor=bindparam("b_cursor"), anchor=bindparam("b_anchor"), bounces=0
                        )
                        .execution_options(synchronize_session=False),
                        [{"b_id": r[0], "b_cursor": r[1], "b_anchor": r[2]} for r in done],
                    )
                summary += RunSummary(sent=len(done))
            for failure in failures:
                summary += self._record_failure(conn, owner, now, failure, rules)
        return summary

    def _record_failure(
        self, conn: Connection, owner: str, now: datetime, failure: Failure, rules: FinishRules
    ) -> RunSummary:
        attempts = failure.claim.attempts + 1
        give_up = failure.permanent or attempts >= rules.retry_limit
        values: dict[str, object] = {
            "attempts": attempts,
            "lease_owner": None,
            "lease_until": None,
            "last_error": failure.detail[:ERROR_TEXT_LIMIT],
        }
        if give_up:
            values["status"] = DeliveryStatus.FAILED.value
        else:
            values["status"] = DeliveryStatus.PENDING.value
            values["next_attempt_at"] = now + retry_delay(
                attempts, rules.retry_base, rules.retry_cap
            )
        row = conn.execute(
            update(D)
            .where(
                D.id == failure.claim.delivery_id,
                D.lease_owner == owner,
                D.status == DeliveryStatus.SENDING.value,
            )
            .values(**values)
            .returning(D.subscriber_id, D.slot_at)
        ).one_or_none()
        if row is None:
            return RunSummary()
        if not give_up:
            return RunSummary(retrying=1)
        # The slot is over either way; the cursor stays, so the articles come in the next digest.
        conn.execute(update(S).where(S.id == row.subscriber_id).values(anchor=row.slot_at))
        if failure.permanent:
            count_bounce(conn, row.subscriber_id, rules.bounce_limit)
        return RunSummary(failed=1)

    def extend_lease(self, owner: str, claims: Sequence[Claim], until: datetime) -> set[int]:
        """Keep claims ours while a slow relay still holds them; returns the ids that still were."""
        with writing(self.engine) as conn:
            held = conn.scalars(
                update(D)
                .where(
                    D.id.in_([c.delivery_id for c in claims]),
                    D.lease_owner == owner,
                    D.status == DeliveryStatus.SENDING.value,
                )
                .values(lease_until=until)
                .returning(D.id)
            )
            return set(held)

    def release(self, owner: str, claims: Sequence[Claim]) -> None:
        """Hand claims back untouched: the failure was ours (configuration), not the reader's."""
        with writing(self.engine) as conn:
            conn.execute(
                update(D)
                .where(
                    D.id.in_([c.delivery_id for c in claims]),
                    D.lease_owner == owner,
                    D.status == DeliveryStatus.SENDING.value,
                )
                .values(status=DeliveryStatus.PENDING.value, lease_owner=None, lease_until=None)
            )

    # -- runs -------------------------------------------------------------------------------

    def record_run(self, run: Run) -> None:
        with writing(self.engine) as conn:
            conn.execute(
                insert(RunRow),
                {
                    "started_at": run.started_at,
                    "finished_at": run.finished_at,
                    "sent": run.summary.sent,
                    "skipped": run.summary.skipped,
                    "retrying": run.summary.retrying,
                    "failed": run.summary.failed,
                    "note": run.note[:ERROR_TEXT_LIMIT],
                },
            )

    def sent_since(self, since: datetime) -> int:
        """Digests sent by the runs that started after since (runs.sent: no scan of deliveries)."""
        query = select(func.coalesce(func.sum(RunRow.sent), 0)).where(RunRow.started_at > since)
        with reading(self.engine) as conn:
            return int(conn.scalar(query) or 0)

    def last_runs(self, limit: int) -> list[Run]:
        with reading(self.engine) as conn:
            rows = conn.execute(
                select(*RunRow.__table__.c).order_by(RunRow.id.desc()).limit(limit)
            ).all()
        return [
            Run(
                r.started_at,
                r.finished_at,
                RunSummary(r.sent, r.skipped, r.retrying, r.failed),
                r.note,
            )
            for r in rows
        ]

    # -- counts and look-ups, for status, metrics and support ------------------------------

    def delivery_counts(self) -> dict[DeliveryStatus, int]:
        query = select(D.status, func.count()).group_by(D.status)
        with reading(self.engine) as conn:
            return {DeliveryStatus(s): n for s, n in conn.execute(query)}

    def delivery_counts_by_frequency(self) -> dict[tuple[DeliveryStatus, Frequency], int]:
        query = (
            select(D.status, S.frequency, func.count())
            .join(S, S.id == D.subscriber_id)
            .group_by(D.status, S.frequency)
        )
        with reading(self.engine) as conn:
            return {(DeliveryStatus(st), Frequency(f)): n for st, f, n in conn.execute(query)}

    def retry_count(self) -> int:
        query = select(func.count()).where(D.status == DeliveryStatus.PENDING.value, D.attempts > 0)
        with reading(self.engine) as conn:
            return conn.scalar(query) or 0

    # -- the digests a reader was sent, for their web versions -------------------------------

    def sent_digest(self, delivery_id: int) -> SentDigest | None:
        """The digest this delivery sent; None if it was not sent, or no longer exists."""
        with reading(self.engine) as conn:
            row = conn.execute(_sent_digests().where(D.id == delivery_id)).one_or_none()
        return None if row is None else _sent_digest(row)

    def history(self, subscriber_id: int, limit: int) -> list[SentDigest]:
        """The reader's last digests sent, newest first: one query, on their deliveries' index."""
        query = (
            _sent_digests()
            .where(D.subscriber_id == subscriber_id)
            .order_by(D.sent_at.desc(), D.id.desc())
            .limit(limit)
        )
        with reading(self.engine) as conn:
            return [_sent_digest(row) for row in conn.execute(query)]

    def remove_subscriber(self, email: str) -> str:
        """Erase the person, found whatever the case: the subscriber row and every delivery of
        theirs. Returns the address as it was on file."""
        with writing(self.engine) as conn:
            row = conn.execute(select(S.id, S.email).where(is_address(email))).one_or_none()
            if row is None:
                raise NotFound(f"no subscriber with the address {email}")
            conn.execute(delete(D).where(D.subscriber_id == row.id))
            conn.execute(delete(S).where(S.id == row.id))
        return str(row.email)


def _sent_digests() -> Select[*tuple[Any, ...]]:
    """Sent deliveries with what SentDigest holds: their reader's token_version now (a reader
    who is erased takes their deliveries along), and the count of their window in their topics."""
    return (
        select(
            D.id.label("delivery_id"),
            D.subscriber_id,
            S.token_version,
            D.period_key,
            D.cursor_from,
            D.cursor_to,
            D.sent_at,
            articles_between(D.cursor_from, D.cursor_to, D.topics).label("articles"),
            D.topics,
        )
        .join(S, S.id == D.subscriber_id)
        .where(D.status == DeliveryStatus.SENT.value)
    )


def _sent_digest(row: AnyRow) -> SentDigest:
    return SentDigest(**(dict(row._mapping) | {"topics": read_topics(row.topics)}))


def _claim_queries(now: datetime, only: Only = EVERYONE) -> tuple[Select[int], ...]:
    """What a claim takes, in turn until it has its batch: leases that ran out (rare: a worker
    died or stalled), oldest first; then pending deliveries, the longest due first, so a due
    delivery is never passed over for ones that fell due after it, however many arrive.

    Each query walks its own partial index (models.DeliveryRow) in its own order, so its LIMIT
    stops after that many entries: a claim of 500 costs about 8 ms on SQLite at 100k or 1M
    pending. One query over both kinds, by id, sorted every claimable row first: 0.1 s at 100k,
    0.8 s at 1M. Everyone's claim reads no other table (a narrowed one: _of_readers).
    """
    expired = (
        select(D.id)
        .where(_has(DeliveryStatus.SENDING), D.lease_until < now)
        .order_by(D.lease_until)
    )
    due = (
        select(D.id)
        .where(_has(DeliveryStatus.PENDING), D.next_attempt_at <= now)
        .order_by(D.next_attempt_at, D.id)
    )
    # FOR UPDATE SKIP LOCKED lets several senders claim disjoint rows on PostgreSQL; it
    # compiles to nothing on SQLite, where BEGIN IMMEDIATE already serialises claimers.
    return tuple(_of_readers(q, only).with_for_update(skip_locked=True) for q in (expired, due))


def _of_readers(query: SelectT, only: Only) -> SelectT:
    """Narrow a query of deliveries to some readers'; everyone's is left free of a join.

    One address: its reader's few deliveries, found by reader. A frequency: a good share of the
    due rows may be theirs, so the query keeps to its index's order and checks each row's reader
    (looking them all up by reader made a claim of 500 cost 0.12 s at 100k due on SQLite).
    """
    if only == EVERYONE:
        return query
    readers = narrow(select(S.id), only)
    if only.email is None:
        return query.where(readers.where(S.id == D.subscriber_id).exists())
    return query.where(D.subscriber_id.in_(readers))


def _claimable(now: datetime) -> ColumnElement[bool]:
    """Pending and due, or claimed by a worker whose lease has run out."""
    return or_(
        and_(_has(DeliveryStatus.PENDING), D.next_attempt_at <= now),
        and_(_has(DeliveryStatus.SENDING), D.lease_until < now),
    )


def _due_groups(
    readership: Readership, now: datetime, rules: PlanRules
) -> Iterator[tuple[Slot, ReaderGroup]]:
    """Each group (frequency, timezone, send time and weekday) with a sendable slot: planning
    takes one query a group, however many readers share it."""
    for group in readership.groups:
        schedule = group.schedule(rules.schedule)
        slot = sendable_slot(
            group.frequency, schedule, ZoneInfo(group.timezone), now, rules.max_lateness
        )
        if slot is not None:
            yield slot, group


def _due(group: ReaderGroup, slot_at: datetime, only: Only) -> Select[*tuple[Any, ...]]:
    """The group's readers due at the slot: active, not paused at it, anchored before it, and with
    no delivery still outstanding (they wait for it). A paused reader is left as they are, anchor
    and cursor, so the first slot after the pause brings one digest with all they missed."""
    outstanding = exists().where(
        D.subscriber_id == S.id, D.status.in_([s.value for s in OUTSTANDING])
    )
    due = select(S.id, S.email, S.token_version, S.cursor, S.anchor, S.topics).where(
        S.status == SubscriberStatus.ACTIVE.value,
        *in_group(group),
        S.anchor < slot_at,
        not_paused(slot_at),
        ~outstanding,
    )
    return narrow(due, only)


def _batch(ids: list[int], conn: Connection) -> BindParameter[list[int]]:
    # PostgreSQL: a batch's ids written into the SQL (integers the database gave us), as 500 bound
    # parameters cost psycopg about 3 ms of CPU a claim. SQLite: bound, as written ids are no
    # faster there and each such statement would take a place in its statement cache (11 MiB).
    return bindparam("ids", ids, expanding=True, literal_execute=conn.dialect.name == "postgresql")


def _has(status: DeliveryStatus) -> ColumnElement[bool]:
    # Written into the SQL, not bound: a partial index (WHERE status = 'pending') serves only a
    # query whose text implies that, which a PostgreSQL generic plan's `status = $1` does not.
    return D.status == literal(status.value, literal_execute=True)
