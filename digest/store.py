"""The catalogue: the `subscribers`, `articles` and `feeds` tables. Returns domain values, never ORM rows.

Readers as they sign up, confirm, choose and leave; articles as they are ingested; each feed's
last poll. The delivery ledger (ledger.py) reads readers and articles through this module and
advances a reader's cursor when their digest is sent; nothing here reads deliveries or runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Boolean,
    Case,
    ColumnElement,
    Connection,
    Engine,
    ScalarSelect,
    Select,
    String,
    Text,
    and_,
    bindparam,
    case,
    false,
    func,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.orm import InstrumentedAttribute

from digest.addresses import address_key
from digest.database import AnyRow, insert_ignoring_conflicts, reading, upsert, writing
from digest.domain import (
    EVERYONE,
    Article,
    ArticleDraft,
    Frequency,
    Only,
    ReaderGroup,
    Schedule,
    Slot,
    Subscriber,
    SubscriberDraft,
    SubscriberStatus,
    Validators,
    next_slot,
    sendable_slot,
    topic_key,
)
from digest.errors import DatabaseError, DuplicateSubscriber, NotFound
from digest.models import ArticleRow, FeedRow, SubscriberRow, UtcDateTime

A, S = ArticleRow, SubscriberRow
# The topic sets whose readers' news planning finds by one look-up a set (has_news); readers hold
# few, and the readers of any other are served by a look into their window.
COMMON_TOPIC_SETS = 64
ERROR_TEXT_LIMIT = 500  # the longest error text kept on a row
SelectT = TypeVar("SelectT", bound=Select[*tuple[Any, ...]])
# Readers who are subscribed or on their way: the others need a new sign-up to change anything.
SIGNED_UP = frozenset({SubscriberStatus.ACTIVE, SubscriberStatus.PENDING})
ARTICLE_COLUMNS = (
    A.id, A.url, A.title, A.summary, A.category, A.reading_minutes, A.published_at, A.image_url,
    A.featured,
)  # fmt: skip
SUBSCRIBER_COLUMNS = tuple(S.__table__.c)


@dataclass(frozen=True, slots=True)
class FeedState:
    source: str
    polled_at: datetime
    ok_at: datetime | None
    failing_since: datetime | None
    failures: int  # in a row
    errors_total: int
    last_error: str | None
    validators: Validators  # of the last answer imported


@dataclass(frozen=True, slots=True)
class Signup:
    subscriber_id: int
    token_version: int
    email: str  # as first typed: the confirmation goes there, whichever case this sign-up used
    confirm: bool  # False for a reader who is already active: no mail, and the same answer


@dataclass(frozen=True, slots=True)
class Activation:
    reader: Subscriber
    first: bool  # this confirmation made the reader active: the one a welcome mail follows


@dataclass(frozen=True, slots=True)
class Outlook:
    """When one group's active readers get their next digest."""

    due_now: int
    first: Slot | None  # the earliest slot one of the others gets it at; None if all are due now
    at_first: int


@dataclass(frozen=True, slots=True)
class Readership:
    """Active readers as planning and the outlook take them."""

    groups: dict[ReaderGroup, int]  # readers who share their slots, and how many
    topic_sets: tuple[str | None, ...]  # as stored_topics keeps them, most readers first


@dataclass(frozen=True, slots=True)
class Upserted:
    added: int
    updated: int


def _feed_state(row: AnyRow) -> FeedState:
    fields = dict(row._mapping)
    validators = Validators(fields.pop("etag"), fields.pop("last_modified"))
    return FeedState(**fields, validators=validators)


def _subscriber(row: AnyRow) -> Subscriber:
    return Subscriber(
        id=row.id,
        email=row.email,
        frequency=Frequency(row.frequency),
        status=SubscriberStatus(row.status),
        timezone=row.timezone,
        token_version=row.token_version,
        created_at=row.created_at,
        confirmed_at=row.confirmed_at,
        cursor=row.cursor,
        anchor=row.anchor,
        bounces=row.bounces,
        topics=read_topics(row.topics),
        paused_until=row.paused_until,
        send_time=None if row.send_time is None else time.fromisoformat(row.send_time),
        send_weekday=row.send_weekday,
    )


def _article(row: AnyRow) -> Article:
    return Article(
        seq=row.id,
        url=row.url,
        title=row.title,
        summary=row.summary,
        category=row.category,
        reading_minutes=row.reading_minutes,
        published_at=row.published_at,
        image_url=row.image_url,
        featured=row.featured,
    )


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def ping(self) -> bool:
        """Whether the database answers, for health checks."""
        try:
            with reading(self.engine) as conn:
                conn.execute(select(1))
        except DatabaseError:
            return False
        return True

    def newest_seq(self, at: datetime) -> int:
        """The newest article that existed at `at`: the upper end of every window taken then."""
        with reading(self.engine) as conn:
            return newest_article(conn, at)

    def readership(self, only: Only = EVERYONE) -> Readership:
        """Active readers counted by group (frequency, timezone, send time and, for weekly
        readers, weekday), and the topic sets they hold, in one pass over them."""
        weekday = _weekday_that_counts()
        query = (
            select(S.frequency, S.timezone, S.send_time, weekday, S.topics, func.count())
            .where(S.status == SubscriberStatus.ACTIVE.value)
            .group_by(S.frequency, S.timezone, S.send_time, weekday, S.topics)
        )
        groups: Counter[ReaderGroup] = Counter()
        topic_sets: Counter[str | None] = Counter()
        with reading(self.engine) as conn:
            for f, tz, at, day, topics, n in conn.execute(narrow(query, only)):
                at_time = None if at is None else time.fromisoformat(at)
                groups[ReaderGroup(Frequency(f), tz, at_time, day)] += n
                topic_sets[topics] += n
        return Readership(dict(groups), tuple(topics for topics, _ in topic_sets.most_common()))

    # -- articles -------------------------------------------------------------------------

    def upsert_articles(self, drafts: Sequence[ArticleDraft], now: datetime) -> Upserted:
        """Insert new URLs and update known ones in place, keeping their place in the sequence.

        A known article keeps its pick and its picture when a draft brings none: a feed poll
        never un-features what an editor marked (`articles add --featured`), nor drops a picture.
        """
        by_url = {draft.url: draft for draft in drafts}
        # Oldest first, so that within one import the ingest sequence follows publication.
        ordered = sorted(by_url.values(), key=lambda draft: draft.published_at)
        with writing(self.engine) as conn:
            known = set(conn.scalars(select(A.url).where(A.url.in_(by_url))))
            fresh = [
                _article_values(d, now) | {"ingested_at": now}
                for d in ordered
                if d.url not in known
            ]
            if fresh:
                # Another daemon polling the same feed may insert the same URL first; it wins.
                conn.execute(insert_ignoring_conflicts(self.engine, A), fresh)
            changed = [_known_article_values(d, now) for d in ordered if d.url in known]
            if changed:
                conn.execute(
                    update(A)
                    .where(A.url == bindparam("b_url"))
                    .values(
                        featured=or_(A.featured, bindparam("b_featured", type_=Boolean)),
                        image_url=func.coalesce(
                            bindparam("b_image_url", type_=String), A.image_url
                        ),
                    )
                    .execution_options(synchronize_session=False),
                    changed,
                )
        return Upserted(added=len(fresh), updated=len(changed))

    def articles(
        self, after: int, upto: int, topics: frozenset[str] | None = None
    ) -> list[Article]:
        """The window (after, upto], newest first; only those in topics, unless it is None."""
        query = select(*ARTICLE_COLUMNS).where(A.id > after, A.id <= upto).order_by(A.id.desc())
        if topics is not None:
            query = query.where(A.topic.in_(sorted(topics)))
        with reading(self.engine) as conn:
            return [_article(row) for row in conn.execute(query)]

    def topic_names(self, among: int, limit: int) -> dict[str, str]:
        """The topics of the `among` newest articles, the `limit` most recent of them, each named
        as its newest article's category and sorted by name: the topics the pages offer. Only
        the newest articles are read, so that a sign-up page costs the same however many exist."""
        recent = select(A.id, A.topic).order_by(A.id.desc()).limit(among).subquery()
        newest = func.max(recent.c.id)
        last_of_each = (
            select(newest.label("id"))
            .where(recent.c.topic != "")
            .group_by(recent.c.topic)
            .order_by(newest.desc())
            .limit(limit)
            .subquery()
        )
        query = select(A.topic, A.category).join(last_of_each, A.id == last_of_each.c.id)
        with reading(self.engine) as conn:
            named: list[tuple[str, str]] = [(key, name) for key, name in conn.execute(query)]
        return dict(sorted(named, key=lambda topic: topic[1].casefold()))

    def news_for(self, reader: Subscriber, at: datetime) -> tuple[int, bool]:
        """The newest article at `at`, and whether the reader's window up to it (after their
        cursor) holds one in their topics: whether their next digest has anything to send."""
        with reading(self.engine) as conn:
            newest = newest_article(conn, at)
            if reader.topics is None:
                return newest, reader.cursor < newest
            theirs = conn.scalar(select(_newest_in(reader.topics, newest))) or 0
            return newest, reader.cursor < theirs

    def recent_articles(self, limit: int) -> list[Article]:
        with reading(self.engine) as conn:
            rows = conn.execute(select(*ARTICLE_COLUMNS).order_by(A.id.desc()).limit(limit))
            return [_article(row) for row in rows]

    # -- subscribers ----------------------------------------------------------------------

    def add_subscribers(
        self, drafts: Sequence[SubscriberDraft], *, confirmed: bool, now: datetime
    ) -> dict[str, str]:
        """Add new readers and leave known ones alone, whatever their status (one who reported a
        digest as spam is never re-added by an import); returns how each known address is
        reported (already_subscribed). Known means the same address without regard to case, on
        file or earlier in drafts."""
        with writing(self.engine) as conn:
            keys = [address_key(draft.email) for draft in drafts]
            query = select(S.email_key, S.email, S.status).where(S.email_key.in_(keys))
            on_file: dict[str, str] = {}
            complained: set[str] = set()
            for key, email, status in conn.execute(query):
                on_file[key] = email
                if status == SubscriberStatus.COMPLAINED.value:
                    complained.add(key)
            cursor = newest_article(conn, now) if confirmed else 0
            status = SubscriberStatus.ACTIVE if confirmed else SubscriberStatus.PENDING
            known: dict[str, str] = {}
            rows = []
            for draft, key in zip(drafts, keys, strict=True):
                if key in on_file:
                    known[draft.email] = already_subscribed(
                        draft.email, on_file[key], complained=key in complained
                    )
                else:
                    on_file[key] = draft.email
                    rows.append(_new_subscriber(draft, status, cursor=cursor, now=now))
            if rows:
                # Another process may add the same person between the look-up and here (on
                # PostgreSQL; SQLite's write lock serialises them): the unique key keeps one.
                conn.execute(insert_ignoring_conflicts(self.engine, S), rows)
        return known

    def readd_complained(self, draft: SubscriberDraft, *, confirmed: bool, now: datetime) -> bool:
        """Take back a reader who reported a digest as spam, as an operator's explicit choice:
        with the draft's choices, a new token_version (their old links stay dead), and from
        now on, active or pending as a new reader would be. False if the address is not one."""
        values = _new_subscriber(draft, SubscriberStatus.PENDING, cursor=0, now=now)
        kept = ("email", "email_key", "token_version", "created_at")
        with writing(self.engine) as conn:
            cursor = newest_article(conn, now) if confirmed else 0
            status = SubscriberStatus.ACTIVE if confirmed else SubscriberStatus.PENDING
            changed = conn.execute(
                update(S)
                .where(is_address(draft.email), S.status == SubscriberStatus.COMPLAINED.value)
                .values(
                    {name: value for name, value in values.items() if name not in kept}
                    | {
                        "status": status.value,
                        "cursor": cursor,
                        "confirmed_at": now if confirmed else None,
                        "unsubscribed_at": None,
                        "paused_until": None,
                        "token_version": S.token_version + 1,
                    }
                )
            )
        return changed.rowcount == 1

    def add_subscriber(self, draft: SubscriberDraft, *, confirmed: bool, now: datetime) -> None:
        known = self.add_subscribers([draft], confirmed=confirmed, now=now)
        if draft.email in known:
            raise DuplicateSubscriber(known[draft.email])

    def find_subscriber(self, email: str) -> Subscriber:
        """The reader with this address, whatever its case."""
        query = select(*SUBSCRIBER_COLUMNS).where(is_address(email))
        with reading(self.engine) as conn:
            row = conn.execute(query).one_or_none()
        if row is None:
            raise NotFound(f"no subscriber with the address {email}")
        return _subscriber(row)

    def subscribers(
        self, status: SubscriberStatus | None = None, batch: int = 1000
    ) -> Iterator[Subscriber]:
        after = 0
        while True:
            query = select(*SUBSCRIBER_COLUMNS).where(S.id > after).order_by(S.id).limit(batch)
            if status is not None:
                query = query.where(S.status == status.value)
            with reading(self.engine) as conn:
                rows = [_subscriber(row) for row in conn.execute(query)]
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1].id

    # -- the reader's own choices, from the web pages --------------------------------------
    # Each takes the token_version the reader's link carries and changes the row only while it
    # still matches, so a link from before a re-subscription can never act on the new one.

    def subscriber(self, subscriber_id: int) -> Subscriber | None:
        with reading(self.engine) as conn:
            query = select(*SUBSCRIBER_COLUMNS).where(S.id == subscriber_id)
            row = conn.execute(query).one_or_none()
        return None if row is None else _subscriber(row)

    def sign_up(self, draft: SubscriberDraft, now: datetime) -> Signup:
        """Record a sign-up as pending; say whether a confirmation mail should go out.

        A new address is added; a pending one takes the latest choices; an unsubscribed or bounced
        one starts over with them, a new token_version and no pause; an active one is left exactly
        as it is. Known means without regard to case, and a known reader keeps the address as
        first typed.
        """
        with writing(self.engine) as conn:
            new_id = conn.scalar(
                insert_ignoring_conflicts(self.engine, S)
                .values(
                    _new_subscriber(draft, SubscriberStatus.PENDING, cursor=0, now=now),
                )
                .returning(S.id)
            )
            if new_id is not None:
                return Signup(new_id, 1, draft.email, confirm=True)
            row = conn.execute(
                select(S.id, S.email, S.status, S.token_version).where(is_address(draft.email))
            ).one()
            if row.status == SubscriberStatus.ACTIVE.value:
                return Signup(row.id, row.token_version, row.email, confirm=False)
            version = row.token_version + (row.status != SubscriberStatus.PENDING.value)
            conn.execute(
                update(S)
                .where(S.id == row.id)
                .values(
                    status=SubscriberStatus.PENDING.value,
                    frequency=draft.frequency.value,
                    timezone=draft.timezone,
                    topics=stored_topics(draft.topics),
                    paused_until=None,
                    token_version=version,
                )
            )
        return Signup(row.id, version, row.email, confirm=True)

    def activate(
        self,
        subscriber_id: int,
        token_version: int,
        now: datetime,
        check: Callable[[Subscriber], None] | None = None,
    ) -> Activation | None:
        """Pending → active, from now on and with nothing older than now; returns the reader, and
        whether this call activated them.

        One change that leaves any other reader as it is, so confirming twice returns the same
        active reader; None if the link's reader is gone. check sees the reader before the change
        is committed: whatever it raises undoes the change.
        """
        pending = S.status == SubscriberStatus.PENDING.value

        def once_pending(value: object, column: InstrumentedAttribute[Any]) -> Case[Any]:
            return case((pending, value), else_=column)

        newest = func.coalesce(_newest(now).scalar_subquery(), 0)
        with writing(self.engine) as conn:
            # Read under a row lock on PostgreSQL (on SQLite, BEGIN IMMEDIATE holds the whole
            # database): of two confirmations at once, only the first finds the reader pending.
            before = conn.scalar(
                select(S.status)
                .where(S.id == subscriber_id, S.token_version == token_version)
                .with_for_update()
            )
            reader = self._change(
                conn,
                subscriber_id,
                token_version,
                status=once_pending(SubscriberStatus.ACTIVE.value, S.status),
                confirmed_at=once_pending(now, S.confirmed_at),
                unsubscribed_at=once_pending(None, S.unsubscribed_at),
                cursor=once_pending(newest, S.cursor),
                anchor=once_pending(now, S.anchor),
                bounces=once_pending(0, S.bounces),
                paused_until=once_pending(None, S.paused_until),  # a pause from before they left
            )
            if reader is None:
                return None
            if check is not None:
                check(reader)
        return Activation(reader, first=before == SubscriberStatus.PENDING.value)

    def unsubscribe(
        self, subscriber_id: int, token_version: int, now: datetime
    ) -> Subscriber | None:
        """Stop every digest to this reader, planned ones included; returns the reader, or None
        if the link's reader is gone. Unsubscribing again keeps the first instant."""
        stopped = S.status == SubscriberStatus.UNSUBSCRIBED.value
        with writing(self.engine) as conn:
            return self._change(
                conn,
                subscriber_id,
                token_version,
                status=SubscriberStatus.UNSUBSCRIBED.value,
                unsubscribed_at=case((stopped, S.unsubscribed_at), else_=now),
            )

    def set_preferences(
        self,
        subscriber_id: int,
        token_version: int,
        frequency: Frequency,
        timezone: str,
        *,
        send_time: time | None,
        send_weekday: int | None,
        topics: frozenset[str] | None,
    ) -> Subscriber | None:
        """Change frequency, timezone, send time and weekday (None: the site's) and topics (topic
        keys; None: every topic, later ones too) of a reader who is signed up, and return the
        reader (a stopped one unchanged); None if gone. The cursor stays: no article is sent
        twice, and the next digest holds their new topics from where the last one ended."""
        signed_up = S.status.in_([s.value for s in SIGNED_UP])
        chosen_topics = literal(stored_topics(topics), Text())
        with writing(self.engine) as conn:
            return self._change(
                conn,
                subscriber_id,
                token_version,
                frequency=case((signed_up, frequency.value), else_=S.frequency),
                timezone=case((signed_up, timezone), else_=S.timezone),
                send_time=case((signed_up, _hh_mm(send_time)), else_=S.send_time),
                send_weekday=case((signed_up, send_weekday), else_=S.send_weekday),
                topics=case((signed_up, chosen_topics), else_=S.topics),
            )

    def pause(
        self, subscriber_id: int, token_version: int, until: datetime | None
    ) -> Subscriber | None:
        """Pause an active reader's digests until an instant, or end the pause (None); returns
        the reader (any other unchanged), None if gone. Anchor and cursor stay as they are, so
        the first slot after the pause brings one digest with all the reader missed."""
        active = S.status == SubscriberStatus.ACTIVE.value
        with writing(self.engine) as conn:
            return self._change(
                conn,
                subscriber_id,
                token_version,
                paused_until=case((active, literal(until, UtcDateTime())), else_=S.paused_until),
            )

    def paused_count(self, at: datetime) -> int:
        """Active readers whose pause is still on at `at`, for status."""
        query = select(func.count()).where(
            S.status == SubscriberStatus.ACTIVE.value, ~not_paused(at)
        )
        with reading(self.engine) as conn:
            return conn.scalar(query) or 0

    @staticmethod
    def _change(
        conn: Connection, subscriber_id: int, token_version: int, **values: object
    ) -> Subscriber | None:
        """Change the reader a link names and return them, in one UPDATE … RETURNING.

        A link from before a re-subscription carries an older token_version and matches nothing.
        """
        row = conn.execute(
            update(S)
            .where(S.id == subscriber_id, S.token_version == token_version)
            .values(**values)
            .returning(*SUBSCRIBER_COLUMNS)
        ).one_or_none()
        return None if row is None else _subscriber(row)

    def topic_mix(self) -> dict[frozenset[str] | None, int]:
        """Active readers counted by topic set (None: every topic), for `status`."""
        query = (
            select(S.topics, func.count())
            .where(S.status == SubscriberStatus.ACTIVE.value)
            .group_by(S.topics)
        )
        with reading(self.engine) as conn:
            return {read_topics(topics): n for topics, n in conn.execute(query)}

    def subscriber_counts(self) -> dict[tuple[Frequency, SubscriberStatus], int]:
        query = select(S.frequency, S.status, func.count()).group_by(S.frequency, S.status)
        with reading(self.engine) as conn:
            return {(Frequency(f), SubscriberStatus(s)): n for f, s, n in conn.execute(query)}

    # -- when the next digests go out----------------------------------------------------------------

    def outlook(
        self, now: datetime, schedule: Schedule, max_lateness: timedelta | None
    ) -> dict[ReaderGroup, Outlook]:
        """domain.next_digest of every active reader, counted per group rather than per reader.

        In a group, a reader is due now when their anchor is before the sendable slot and they
        have news; any other reader whose anchor is before the next slot gets it then; the rest
        wait for the slot after their anchor, which only a send at a later --now puts there.
        """
        newest = self.newest_seq(now)
        readership = self.readership()
        news = has_news(newest, readership.topic_sets)
        outlook = {}
        for key in readership.groups:
            frequency, zone, theirs = key.frequency, ZoneInfo(key.timezone), key.schedule(schedule)
            sendable = sendable_slot(frequency, theirs, zone, now, max_lateness)
            upcoming = next_slot(frequency, theirs, zone, now)
            due = (
                false()
                if sendable is None
                else and_(S.anchor < sendable.at, news, not_paused(sendable.at))
            )
            group = (
                select()
                .select_from(S)
                .where(S.status == SubscriberStatus.ACTIVE.value, *in_group(key))
            )
            counts = group.add_columns(
                func.count().filter(due),
                # A reader paused past the next slot does not get it (status counts them apart).
                func.count().filter(S.anchor < upcoming.at, not_paused(upcoming.at)),
                func.min(S.anchor).filter(S.anchor >= upcoming.at),
            )
            with reading(self.engine) as conn:
                due_now, before_upcoming, later = conn.execute(counts).one()
                first, at_first = upcoming, before_upcoming - due_now
                if not at_first and later is not None:
                    # Nobody is left for the next slot: the earliest anchor names the first one.
                    first = next_slot(frequency, theirs, zone, later)
                    then = group.add_columns(func.count()).where(S.anchor < first.at)
                    at_first = conn.scalar(then.where(S.anchor >= later)) or 0
            outlook[key] = Outlook(due_now, first if at_first else None, at_first)
        return outlook

    # -- feeds ----------------------------------------------------------------------------

    def record_feed_poll(
        self,
        source: str,
        now: datetime,
        error: str | None,
        validators: Validators | None = None,
    ) -> None:
        """Note one poll of a feed: a success clears its failure streak, a failure extends it.

        validators are those of an answer just imported; None keeps the stored ones (a failure
        or a 304), so a feed that could not be imported is asked for whole next time.
        """
        F = FeedRow
        error = None if error is None else error[:ERROR_TEXT_LIMIT]
        failed = int(error is not None)
        first = validators or Validators()
        insert_row = upsert(self.engine, F).values(
            source=source,
            polled_at=now,
            ok_at=None if failed else now,
            failing_since=now if failed else None,
            failures=failed,
            errors_total=failed,
            last_error=error,
            etag=first.etag,
            last_modified=first.last_modified,
        )
        on_conflict: dict[str, object] = {"polled_at": now, "last_error": error}
        if validators is not None:
            on_conflict |= {"etag": validators.etag, "last_modified": validators.last_modified}
        if failed:
            on_conflict |= {
                "failing_since": func.coalesce(F.failing_since, now),
                "failures": F.failures + 1,
                "errors_total": F.errors_total + 1,
            }
        else:
            on_conflict |= {"ok_at": now, "failing_since": None, "failures": 0}
        with writing(self.engine) as conn:
            conn.execute(
                insert_row.on_conflict_do_update(index_elements=[F.source], set_=on_conflict)
            )

    def feed_states(self, sources: Sequence[str]) -> dict[str, FeedState]:
        query = select(*FeedRow.__table__.c).where(FeedRow.source.in_(sources))
        with reading(self.engine) as conn:
            return {row.source: _feed_state(row) for row in conn.execute(query)}


def newest_article(conn: Connection, at: datetime) -> int:
    """The place in the ingest sequence of the newest article ingested by `at` (0 if none was)."""
    return conn.scalar(_newest(at)) or 0


def _newest(at: datetime) -> Select[int]:
    # Backwards along the primary key to the first article old enough: at the real now that is
    # one row read, where max(id) under the same filter would read every article.
    return select(A.id).where(A.ingested_at <= at).order_by(A.id.desc()).limit(1)


def articles_between(
    after: InstrumentedAttribute[int],
    upto: InstrumentedAttribute[int],
    topics: InstrumentedAttribute[str | None],
) -> ScalarSelect[int]:
    """How many articles the window (after, upto] holds in topics (as stored_topics keeps them;
    NULL: every topic), as a subquery: the ledger counts each digest's window in the query that
    lists them. Counted, not upto - after: on PostgreSQL an insert that is rolled back or loses a
    conflict still takes an id."""
    return (
        select(func.count())
        .where(A.id > after, A.id <= upto, or_(topics.is_(None), _listed_in(topics)))
        .scalar_subquery()
    )


def stored_topics(topics: frozenset[str] | None) -> str | None:
    """How subscribers.topics holds a topic set: its sorted keys joined by "," (keys hold no
    comma), so equal sets are equal text; NULL for every topic."""
    return None if topics is None else ",".join(sorted(topics))


def read_topics(stored: str | None) -> frozenset[str] | None:
    return None if stored is None else frozenset(stored.split(","))


def _newest_in(topics: frozenset[str], upto: int) -> ColumnElement[int]:
    """The newest article in topics up to upto (0 if none): the greatest of each topic's newest,
    each one seek on ix_articles_topic, however many articles there are."""
    each = union_all(
        *(
            select(func.max(A.id).label("id")).where(A.topic == t, A.id <= upto)
            for t in sorted(topics)
        )
    ).subquery()
    return func.coalesce(select(func.max(each.c.id)).scalar_subquery(), 0)


def has_news(upto: int, topic_sets: Sequence[str | None]) -> ColumnElement[bool]:
    """Whether a reader's window (cursor, upto] holds news for them: any article for a reader of
    every topic, one in their topics for the others. For a reader of one of the topic sets given
    (as stored, the COMMON_TOPIC_SETS first), the cursor is compared with the newest article in
    the set: one uncorrelated subquery a set, run once a statement, not a look into each
    reader's window, which is left for the readers of any other set."""
    known = [read_topics(stored) for stored in topic_sets[:COMMON_TOPIC_SETS]]
    newest_in = [
        (S.topics == stored_topics(topics), S.cursor < _newest_in(topics, upto))
        for topics in known
        if topics is not None
    ]
    window = select(A.id).where(A.id > S.cursor, A.id <= upto, _listed_in(S.topics)).exists()
    anything = S.cursor < upto
    return case((S.topics.is_(None), anything), *newest_in, else_=and_(anything, window))


def _listed_in(topics: InstrumentedAttribute[str | None]) -> ColumnElement[bool]:
    """Whether the article's topic is one of a topic set as stored_topics keeps it, read in SQL
    (a topic key holds no "," nor LIKE's wildcards)."""
    return ("," + topics + ",").contains("," + A.topic + ",")


def is_address(email: str) -> ColumnElement[bool]:
    """The reader with this address, whatever its case: every look-up by address goes here."""
    return S.email_key == address_key(email)


def count_bounce(conn: Connection, subscriber_id: int, limit: int) -> None:
    """One more permanent failure for the reader, in the caller's transaction: an active reader
    with `limit` of them in a row is marked bounced (a digest sent starts the count again)."""
    conn.execute(update(S).where(S.id == subscriber_id).values(bounces=S.bounces + 1))
    conn.execute(
        update(S)
        .where(
            S.id == subscriber_id,
            S.bounces >= limit,
            S.status == SubscriberStatus.ACTIVE.value,
        )
        .values(status=SubscriberStatus.BOUNCED.value)
    )


def not_paused(at: datetime) -> ColumnElement[bool]:
    """domain.is_paused's negation in SQL: no pause, or one over by the slot at `at`."""
    return or_(S.paused_until.is_(None), S.paused_until <= at)


def in_group(group: ReaderGroup) -> tuple[ColumnElement[bool], ...]:
    """The readers of a group: NULL send time and weekday are the site's, a group of their own."""
    at, day = _hh_mm(group.send_time), _weekday_that_counts()
    return (
        S.frequency == group.frequency.value,
        S.timezone == group.timezone,
        S.send_time.is_(None) if at is None else S.send_time == at,
        day.is_(None) if group.send_weekday is None else day == group.send_weekday,
    )


def _weekday_that_counts() -> ColumnElement[int | None]:
    """A reader's weekday where it decides their slots (weekly), else NULL: a daily reader who
    chose a day while weekly stays in the site's group, and keeps the day for coming back."""
    return case((S.frequency == Frequency.WEEKLY.value, S.send_weekday), else_=None)


def _hh_mm(at: time | None) -> str | None:
    """A send time as the subscribers table keeps it."""
    return None if at is None else at.strftime("%H:%M")


def narrow(query: SelectT, only: Only) -> SelectT:
    if only.frequency is not None:
        query = query.where(S.frequency == only.frequency.value)
    if only.email is not None:
        query = query.where(is_address(only.email))
    return query


def _new_subscriber(
    draft: SubscriberDraft, status: SubscriberStatus, *, cursor: int, now: datetime
) -> dict[str, object]:
    return {
        "email": draft.email,
        "email_key": address_key(draft.email),
        "frequency": draft.frequency.value,
        "timezone": draft.timezone,
        "send_time": _hh_mm(draft.send_time),
        "send_weekday": draft.send_weekday,
        "status": status.value,
        "token_version": 1,
        "created_at": now,
        "confirmed_at": now if status is SubscriberStatus.ACTIVE else None,
        "cursor": cursor,
        "anchor": now,
        "bounces": 0,
        "topics": stored_topics(draft.topics),
    }


def already_subscribed(email: str, on_file: str, *, complained: bool = False) -> str:
    """How a known address is reported: with the spelling on file when it differs in case, and
    for a reader who reported a digest as spam, that only their own sign-up brings them back."""
    spelled = "" if on_file == email else f" as {on_file}"
    if complained:
        return (
            f"{email}{spelled} reported a digest as spam: not added again (their own "
            "confirmed sign-up brings them back, or subscribers add --despite-complaint)"
        )
    return f"{email} is already subscribed{spelled}"


def _article_values(draft: ArticleDraft, now: datetime) -> dict[str, object]:
    return {
        "url": draft.url,
        "title": draft.title,
        "summary": draft.summary,
        "category": draft.category,
        "topic": topic_key(draft.category),
        "reading_minutes": draft.reading_minutes,
        "published_at": draft.published_at,
        "image_url": draft.image_url,
        "featured": draft.featured,
        "updated_at": now,
    }


def _known_article_values(draft: ArticleDraft, now: datetime) -> dict[str, object]:
    """The parameters of upsert_articles' UPDATE, whose SET merges the pick and the picture."""
    values = _article_values(draft, now)
    featured, image_url = values.pop("featured"), values.pop("image_url")
    return values | {"b_url": draft.url, "b_featured": featured, "b_image_url": image_url}
