"""SQLAlchemy tables, typed. No queries here: store.py owns them."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from digest.domain import DeliveryStatus

_PENDING = text(f"status = '{DeliveryStatus.PENDING.value}'")
_SENDING = text(f"status = '{DeliveryStatus.SENDING.value}'")


class UtcDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC on every database, returned timezone-aware.

    SQLite has no timezone type; keeping one format everywhere keeps its text comparisons right.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class ArticleRow(Base):
    __tablename__ = "articles"
    __table_args__ = (
        # Planning asks, per reader, whether their window holds an article in one of their topics.
        Index("ix_articles_topic", "topic", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(2000), unique=True)
    title: Mapped[str] = mapped_column(String(300))
    summary: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(80))
    # domain.topic_key(category), set on import: casefold() and "&" to " and " make it longer.
    topic: Mapped[str] = mapped_column(String(400), server_default="")
    reading_minutes: Mapped[int] = mapped_column(Integer)
    published_at: Mapped[datetime] = mapped_column(UtcDateTime)
    image_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    featured: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    ingested_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SubscriberRow(Base):
    __tablename__ = "subscribers"
    __table_args__ = (
        # The planner asks, per frequency and timezone, for readers whose anchor is before a slot.
        Index("ix_subscribers_due", "status", "frequency", "timezone", "anchor"),
        # One reader per person, even when two sign-ups of case-variants race each other.
        Index("ix_subscribers_email_key", "email_key", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # as typed, for sending
    # addresses.address_key(email), computed in Python. casefold() turns a character into at
    # most three, so a 254-character address has a key of at most 762.
    email_key: Mapped[str] = mapped_column(String(762))
    frequency: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(12))
    timezone: Mapped[str] = mapped_column(String(64))
    token_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    cursor: Mapped[int] = mapped_column(Integer, default=0)
    anchor: Mapped[datetime] = mapped_column(UtcDateTime)
    bounces: Mapped[int] = mapped_column(Integer, default=0)
    # The reader's choices (issue 15); NULL is the site's default for each.
    topics: Mapped[str | None] = mapped_column(Text, nullable=True)  # sorted topic keys, ","
    paused_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    send_time: Mapped[str | None] = mapped_column(String(5), nullable=True)  # HH:MM, local
    send_weekday: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 0 = Monday


class DeliveryRow(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "period_key", name="uq_deliveries_subscriber_period"),
        # The claim's two indexes (ledger._claim_queries), each in the order it claims in. Partial,
        # so each holds the rows of one status only: the work left, not the ledger's history.
        # Pending rows, the longest due first; the id breaks ties, as planning gives a whole run
        # one next_attempt_at (and so claims it in the order it was planned).
        Index(
            "ix_deliveries_due",
            "next_attempt_at",
            "id",
            sqlite_where=_PENDING,
            postgresql_where=_PENDING,
        ),
        # Leases that ran out: the few rows in flight, and those of a worker that died.
        Index(
            "ix_deliveries_leased",
            "lease_until",
            sqlite_where=_SENDING,
            postgresql_where=_SENDING,
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    period_key: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(10))
    slot_at: Mapped[datetime] = mapped_column(UtcDateTime)
    cursor_from: Mapped[int] = mapped_column(Integer)
    cursor_to: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # Indexed: a report that names its digest by Message-ID only finds it by this.
    message_id: Mapped[str] = mapped_column(String(255), index=True)
    planned_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # The reader's topics at planning, as subscribers.topics holds them: fixed with the window,
    # so a retry or the web version shows the articles the digest held.
    topics: Mapped[str | None] = mapped_column(Text, nullable=True)


class NoticeRow(Base):
    """Each bounce, delay, complaint and mailto unsubscribe received, once: status and /metrics
    count them by kind, and a notice told twice (a relay's retry, a provider's redelivery) has
    the same fingerprint, so it changes nothing the second time."""

    __tablename__ = "notices"
    __table_args__ = (Index("ix_notices_received_at", "received_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)  # sha256, hex
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    kind: Mapped[str] = mapped_column(String(12))
    source: Mapped[str] = mapped_column(String(12))
    # Kept when the reader is erased or the delivery pruned: the counts stay, the link goes.
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), nullable=True, index=True
    )
    delivery_id: Mapped[int | None] = mapped_column(
        ForeignKey("deliveries.id", ondelete="SET NULL"), nullable=True
    )
    detail: Mapped[str] = mapped_column(String(500), default="")


class RunRow(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    finished_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sent: Mapped[int] = mapped_column(Integer)
    skipped: Mapped[int] = mapped_column(Integer)
    retrying: Mapped[int] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(String(500), default="")


class FeedRow(Base):
    """One row per polled feed: enough to say which feed is failing and since when."""

    __tablename__ = "feeds"

    source: Mapped[str] = mapped_column(String(2000), primary_key=True)
    polled_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ok_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    failing_since: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # in a row
    errors_total: Mapped[int] = mapped_column(Integer, default=0)  # ever, for the metrics counter
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # The validators of the last answer imported, sent back so that an unchanged feed costs a 304.
    etag: Mapped[str | None] = mapped_column(String(255), nullable=True)
    last_modified: Mapped[str | None] = mapped_column(String(255), nullable=True)
